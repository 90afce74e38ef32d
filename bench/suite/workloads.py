"""What runs against each target: pgbench -S in several shapes, and idle clients."""

from .cluster import MD5_USER, SCRAM_USER


class Workload:
    """pgbench -n -S with `clients` clients and `extra` options, as `user`; with `idle`,
    that many idle connections (as the SCRAM user) are opened first and held during
    the run."""

    def __init__(self, name, label, clients, extra=(), user=SCRAM_USER, idle=0):
        self.name, self.label = name, label
        self.clients, self.extra, self.user, self.idle = clients, list(extra), user, idle


def all_workloads(idle_clients):
    """Logins are what the -C workloads measure; the others log in as the md5 user, as
    a SCRAM login costs libpq a 4096-round PBKDF2, and on a busy 2-core machine 256 such
    logins took longer than the measurement itself. The idle clients use SCRAM."""
    w = []
    for mode, extra in (("simple", []), ("prepared", ["-M", "prepared"])):
        for c in (16, 64, 256):
            w.append(Workload(f"S-{mode}-c{c}", f"-S {mode}, {c} clients", c, extra,
                              user=MD5_USER))
    w.append(Workload("S-C-md5-c16", "-S -C md5, 16 clients", 16, ["-C"], user=MD5_USER))
    w.append(Workload("S-C-scram-c16", "-S -C SCRAM, 16 clients", 16, ["-C"]))
    w.append(Workload(f"idle{idle_clients}-S-c16",
                      f"{idle_clients:,} idle + -S 16 clients", 16, user=MD5_USER,
                      idle=idle_clients))
    return w
