"""The ways in to the replicas that the suite compares. Each proxy is started fresh
for every measurement (so its peak RSS and CPU belong to that measurement alone) and
stopped by pid right after it."""

import os
import shutil
import socket
import subprocess

from . import configs, procs
from .cluster import DATABASE, SCRAM_USER


class Target:
    """One column of the report. `start` returns the processes whose CPU and memory
    count as the proxy's; `stop` ends them."""

    name = ""
    label = ""
    proxy = None  # "pgbouncer", "blog" or "pgfleet": what ratios compare against
    mode = None   # "session" or "transaction"

    def __init__(self, env):
        self.env = env
        self.dir = os.path.join(env.workdir, self.name)
        self.running = []

    @property
    def ports(self):
        """Where pgbench connects: one pgbench per port, the clients shared out."""
        return [self.port]

    def supports(self, workload):
        return True

    def prepare(self):
        os.makedirs(self.dir, exist_ok=True)

    def start(self):
        return []

    def stop(self):
        for proc in reversed(self.running):
            procs.stop(proc)
        self.running = []

    def write(self, filename, text, mode=0o600):
        path = os.path.join(self.dir, filename)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        if procs.DAEMON_USER:
            shutil.chown(path, procs.DAEMON_USER, procs.DAEMON_USER)
        return path

    def wait_serving(self, proc):
        """Until a client can log in through the target and run a query."""
        env = dict(os.environ, PGPASSWORD=SCRAM_USER, PGCONNECT_TIMEOUT="3")
        argv = [os.path.join(self.env.bindir, "psql"), "-X", "-Atq", "-h", "127.0.0.1",
                "-p", str(self.port), "-U", SCRAM_USER, "-d", DATABASE, "-c", "select 1"]

        def serving():
            r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=10)
            if r.returncode != 0:
                raise RuntimeError(r.stderr.strip())
            return r.stdout.strip() == "1"
        procs.wait_until(f"{self.name} on port {self.port}", serving, 60, proc=proc)


class Direct(Target):
    name, label = "direct", "direct (replica1)"

    @property
    def port(self):
        return self.env.ports["replica1"]


class DirectBoth(Direct):
    """Straight to both replicas: two pgbench runs side by side, half of the clients
    each. Against `direct` it shows what spreading the load over two servers that share
    this machine's cores costs the servers themselves, the baseline of every target
    that balances over both replicas. Only the workloads with a steady set of clients:
    a -C login or an idle connection costs a server a process wherever it goes."""
    name, label = "direct-both", "direct (both replicas)"

    @property
    def ports(self):
        return [self.env.ports["replica1"], self.env.ports["replica2"]]

    def supports(self, workload):
        return not workload.idle and "-C" not in workload.extra


class PgBouncer(Target):
    """PgBouncer in front of replica1 alone."""
    proxy = "pgbouncer"

    @property
    def port(self):
        return self.env.ports["pgbouncer"]

    def upstream_port(self):
        return self.env.ports["replica1"]

    def prepare(self):
        super().prepare()
        if procs.DAEMON_USER:
            shutil.chown(self.dir, procs.DAEMON_USER, procs.DAEMON_USER)
        self.write("userlist.txt", self.env.userlist)
        size = self.env.session_pool if self.mode == "session" else self.env.txn_pool
        self.ini = self.write("pgbouncer.ini", configs.pgbouncer_ini(
            self.dir, self.port, self.upstream_port(), self.mode, size,
            self.env.max_clients))

    def start_pgbouncer(self):
        proc = procs.spawn(self.name + ":pgbouncer", ["pgbouncer", self.ini],
                           os.path.join(self.dir, "pgbouncer.stderr"), as_daemon_user=True)
        self.running.append(proc)
        self.wait_serving(proc)
        return proc

    def start(self):
        return [self.start_pgbouncer()]


class PgBouncerSession(PgBouncer):
    name, label, mode = "pgbouncer-session", "PgBouncer session", "session"


class PgBouncerTxn(PgBouncer):
    name, label, mode = "pgbouncer-txn", "PgBouncer transaction", "transaction"


class Blog(PgBouncer):
    """client -> PgBouncer -> HAProxy leastconn (external pg_is_in_recovery check) ->
    replicas, as the lab builds it."""
    proxy = "blog"

    def upstream_port(self):
        return self.env.ports["haproxy"]

    def prepare(self):
        super().prepare()
        self.write("pgcheck.sh", configs.pgcheck_sh(self.env.bindir), mode=0o755)
        self.cfg = self.write("haproxy.cfg", configs.haproxy_cfg(
            self.dir, self.env.ports["haproxy"], self.env.ports))
        r = subprocess.run(["haproxy", "-c", "-q", "-f", self.cfg], capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"haproxy -c {self.cfg}: {r.stderr.strip()}")

    def server_states(self):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(os.path.join(self.dir, "haproxy.sock"))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        states = {}
        for line in data.decode().splitlines():
            f = line.split(",")
            if len(f) > 17 and f[0] == "readers" and f[1] not in ("FRONTEND", "BACKEND"):
                states[f[1]] = f[17]
        return states

    def start(self):
        # -db: foreground, one process, so the pid is HAProxy itself.
        haproxy = procs.spawn(self.name + ":haproxy", ["haproxy", "-db", "-f", self.cfg],
                              os.path.join(self.dir, "haproxy.log"), as_daemon_user=True)
        self.running.append(haproxy)
        # A fresh HAProxy counts every server UP until its checks say otherwise: wait
        # for the external check to take the primary out (fall 2 x inter 2s).
        want = {"replica1": "UP", "replica2": "UP", "primary": "DOWN"}
        procs.wait_until("HAProxy servers replica1 UP, replica2 UP, primary DOWN",
                         lambda: self.server_states() == want, 30, proc=haproxy)
        return [self.start_pgbouncer(), haproxy]


class BlogSession(Blog):
    name, label, mode = "blog-session", "PgBouncer+HAProxy session", "session"


class BlogTxn(Blog):
    name, label, mode = "blog-txn", "PgBouncer+HAProxy transaction", "transaction"


class Pgfleet(Target):
    """pgfleet's reader endpoint (role = "replica") over all three nodes."""
    proxy = "pgfleet"
    nodes = ("primary", "replica1", "replica2")

    @property
    def port(self):
        return self.env.ports["pgfleet"]

    def prepare(self):
        super().prepare()
        self.write("userlist.txt", self.env.userlist)
        self.toml = self.write("pgfleet.toml", configs.pgfleet_toml(
            self.port, self.env.ports, self.mode, self.pool_size(), nodes=self.nodes,
            extra=f"workers = {self.env.pgfleet_workers}\n"))

    def pool_size(self):
        """Per node: in transaction mode PgBouncer's pool shared by the replicas, so
        both poolers hold the same number of server connections."""
        if self.mode == "session":
            return self.env.session_pool
        return self.env.txn_pool // sum(n.startswith("replica") for n in self.nodes)

    def binary(self):
        return self.env.pgfleet

    def start(self):
        proc = procs.spawn(self.name, [self.binary(), "run", "--config", self.toml],
                           os.path.join(self.dir, "pgfleet.log"),
                           env=dict(os.environ, RUST_LOG="warn"))
        self.running.append(proc)
        self.wait_serving(proc)
        return [proc]


class PgfleetSession(Pgfleet):
    name, label, mode = "pgfleet-session", "pgfleet session", "session"


class PgfleetTxn(Pgfleet):
    name, label, mode = "pgfleet-txn", "pgfleet transaction", "transaction"


class PgfleetTxnReplica1(Pgfleet):
    """pgfleet in transaction mode over the primary and replica1 only, with PgBouncer's
    pool on that one replica: the same servers and server connections as the
    PgBouncer target, so the two compare the proxies alone. The reader endpoint of
    the other pgfleet targets spreads the load over both replicas, which on one
    machine share the cores with everything else."""
    name, label, mode = "pgfleet-txn-replica1", "pgfleet transaction (replica1)", "transaction"
    nodes = ("primary", "replica1")


class PgfleetTxnReplica1Baseline(PgfleetTxnReplica1):
    """pgfleet-txn-replica1 with the binary given by --baseline (an earlier build):
    the same servers, configuration and rounds, to measure a change before and after."""
    name, label = "pgfleet-txn-replica1-baseline", "pgfleet baseline transaction (replica1)"

    def binary(self):
        return self.env.baseline


class PgfleetSessionBaseline(PgfleetSession):
    """pgfleet-session with the binary given by --baseline (an earlier build)."""
    name, label = "pgfleet-session-baseline", "pgfleet baseline session"

    def binary(self):
        return self.env.baseline


class TokioForward(Target):
    """examples/forward.rs in front of replica1: a bare tokio forwarder on one thread
    (a server connection per client, bytes copied both ways, nothing else). Not a
    pooler: it shows the least CPU per transaction a tokio proxy spends here."""
    name, label = "tokio-forward", "tokio forwarder (replica1)"
    proxy = "forward"

    @property
    def port(self):
        return self.env.ports["pgfleet"]

    def start(self):
        addr = lambda port: f"127.0.0.1:{port}"
        argv = [self.env.forward, addr(self.port), addr(self.env.ports["replica1"])]
        proc = procs.spawn(self.name, argv, os.path.join(self.dir, "forward.log"))
        self.running.append(proc)
        self.wait_serving(proc)
        return [proc]


ALL = [Direct, DirectBoth, PgBouncerSession, PgBouncerTxn, BlogSession, BlogTxn,
       PgfleetSession, PgfleetTxn, PgfleetTxnReplica1, PgfleetTxnReplica1Baseline,
       PgfleetSessionBaseline, TokioForward]
BASELINES = (PgfleetTxnReplica1Baseline, PgfleetSessionBaseline)
BY_NAME = {t.name: t for t in ALL}
