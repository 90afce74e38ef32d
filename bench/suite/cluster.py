"""A PostgreSQL primary and two streaming replicas on 127.0.0.1, under the run's
temporary directory, set up the way /work/shared/lab/cluster.sh does it (initdb, roles,
pgbench -i, pg_basebackup -R), but with every server a tracked foreground process."""

import os
import shutil
import signal
import subprocess

from . import procs

# Passwords are the user names: this is a throwaway loopback cluster.
SCRAM_USER = "app"      # stored as SCRAM-SHA-256; the main pgbench user
MD5_USER = "app_md5"    # stored as md5; the md5 variant of the -C workload
CHECK_USER = "pgcheck"  # health checks of HAProxy and pgfleet
DATABASE = "app"


def find_bindir():
    """The PostgreSQL server binaries: PG_BINDIR, else the newest /usr/lib/postgresql/*/bin."""
    if os.environ.get("PG_BINDIR"):
        return os.environ["PG_BINDIR"]
    root = "/usr/lib/postgresql"
    versions = sorted((d for d in os.listdir(root) if d.isdigit()), key=int) if os.path.isdir(root) else []
    for v in reversed(versions):
        if os.path.exists(f"{root}/{v}/bin/postgres"):
            return f"{root}/{v}/bin"
    found = shutil.which("pg_config")
    if found:
        return subprocess.run([found, "--bindir"], capture_output=True, text=True).stdout.strip()
    raise RuntimeError("no PostgreSQL server binaries (set PG_BINDIR)")


class Cluster:
    """Primary + replica1 + replica2. `ports` maps node name to port."""

    NODES = ("primary", "replica1", "replica2")

    def __init__(self, workdir, bindir, ports, scale, max_connections):
        self.dir = os.path.join(workdir, "pg")
        self.sockets = os.path.join(workdir, "run")
        self.logs = os.path.join(workdir, "log")
        self.bindir = bindir
        self.ports = ports
        self.scale = scale
        self.max_connections = max_connections
        self.servers = {}

    def bin(self, name):
        return os.path.join(self.bindir, name)

    def run_as_daemon_user(self, argv, what, timeout=600):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           user=procs.DAEMON_USER, group=procs.DAEMON_USER,
                           extra_groups=[] if procs.DAEMON_USER else None)
        if r.returncode != 0:
            raise RuntimeError(f"{what} failed ({r.returncode}): {r.stderr.strip()[-500:]}")

    def psql(self, node, sql, database="postgres", timeout=60):
        """Superuser query over the node's unix socket (trust); returns the output."""
        r = subprocess.run(
            [self.bin("psql"), "-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-h", self.sockets,
             "-p", str(self.ports[node]), "-U", "postgres", "-d", database, "-c", sql],
            capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"psql on {node} (port {self.ports[node]}): {r.stderr.strip()}")
        return r.stdout.strip()

    def start(self):
        for d in (self.dir, self.sockets, self.logs):
            os.makedirs(d, exist_ok=True)
            if procs.DAEMON_USER:
                shutil.chown(d, procs.DAEMON_USER, procs.DAEMON_USER)
        self.init_primary()
        self.start_node("primary")
        self.setup_primary()
        for name in ("replica1", "replica2"):
            self.make_replica(name)
            self.start_node(name)
        self.wait_replicas()

    def init_primary(self):
        d = os.path.join(self.dir, "primary")
        self.run_as_daemon_user([self.bin("initdb"), "-D", d, "-U", "postgres", "-A", "trust"],
                                "initdb")
        # A standby needs max_connections >= its primary's, so all nodes share one value,
        # big enough for the idle-client workload straight to a replica.
        with open(os.path.join(d, "postgresql.conf"), "a") as f:
            f.write(f"""
# --- pgfleet benchmark settings (not production settings) ---
listen_addresses = '127.0.0.1'
port = {self.ports['primary']}
unix_socket_directories = '{self.sockets}'
cluster_name = 'primary'
max_connections = {self.max_connections}
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_keep_size = 64MB
min_wal_size = 32MB
max_wal_size = 512MB
logging_collector = off
""")
        # "md5" also accepts SCRAM-stored passwords (and then runs SCRAM), so one rule
        # serves both users.
        with open(os.path.join(d, "pg_hba.conf"), "w") as f:
            f.write("local all         all                      trust\n"
                    "host  replication replicator 127.0.0.1/32  trust\n"
                    "host  all         all        127.0.0.1/32  md5\n")

    def start_node(self, name):
        proc = procs.spawn(name, [self.bin("postgres"), "-D", os.path.join(self.dir, name)],
                           os.path.join(self.logs, f"{name}.log"), stop_signal=signal.SIGINT,
                           as_daemon_user=True)
        self.servers[name] = proc
        procs.wait_until(f"{name} on port {self.ports[name]}",
                         lambda: self.psql(name, "select 1", timeout=5) == "1", 120, proc=proc)

    def setup_primary(self):
        self.psql("primary", f"""
SET password_encryption = 'scram-sha-256';
CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{SCRAM_USER}';
CREATE ROLE {CHECK_USER} LOGIN PASSWORD '{CHECK_USER}' IN ROLE pg_monitor;
CREATE ROLE replicator LOGIN REPLICATION;
SET password_encryption = 'md5';
CREATE ROLE {MD5_USER} LOGIN PASSWORD '{MD5_USER}';
""")
        self.psql("primary", f"CREATE DATABASE {DATABASE} OWNER {SCRAM_USER}")
        env = dict(os.environ, PGPASSWORD=SCRAM_USER)
        r = subprocess.run([self.bin("pgbench"), "-i", "-s", str(self.scale), "-q",
                            "-h", "127.0.0.1", "-p", str(self.ports["primary"]),
                            "-U", SCRAM_USER, DATABASE],
                           capture_output=True, text=True, env=env, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"pgbench -i: {r.stderr.strip()[-500:]}")
        self.psql("primary", f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {MD5_USER}",
                  database=DATABASE)
        self.psql("primary", "CHECKPOINT")

    def make_replica(self, name):
        d = os.path.join(self.dir, name)
        self.run_as_daemon_user(
            [self.bin("pg_basebackup"), "-D", d, "-h", "127.0.0.1",
             "-p", str(self.ports["primary"]), "-U", "replicator", "-R", "-X", "stream",
             "-c", "fast"], f"pg_basebackup for {name}")
        with open(os.path.join(d, "postgresql.conf"), "a") as f:
            f.write(f"port = {self.ports[name]}\ncluster_name = '{name}'\n")

    def wait_replicas(self):
        """Until both replicas stream and have replayed everything the primary wrote."""
        lsn = self.psql("primary", "select pg_current_wal_lsn()")

        def caught_up():
            streaming = self.psql("primary", "select count(*) from pg_stat_replication "
                                             "where state = 'streaming'")
            if streaming != "2":
                return False
            return all(self.psql(n, f"select pg_last_wal_replay_lsn() >= '{lsn}'") == "t"
                       for n in ("replica1", "replica2"))
        procs.wait_until("replicas streaming", caught_up, 120, interval=0.5)

    def secret(self, user):
        """The password secret PostgreSQL stores for user (SCRAM-SHA-256$... or md5...)."""
        return self.psql("primary", f"select rolpassword from pg_authid where rolname = '{user}'")

    def stop(self):
        for name in reversed(self.NODES):
            if name in self.servers:
                procs.stop(self.servers.pop(name), timeout=60)
