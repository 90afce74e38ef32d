"""Server connections per node during a measurement: one long-lived superuser psql per
node (over its unix socket, so it is not counted itself) runs a count every 0.5 s, as
the lab's bench.sh does. Samples miss connections shorter than the interval."""

import subprocess
import threading

from . import procs
from .cluster import MD5_USER, SCRAM_USER

QUERY = ("select count(*) from pg_stat_activity "
         f"where usename in ('{SCRAM_USER}', '{MD5_USER}');\n")


class Sampler:
    def __init__(self, cluster, interval=0.5):
        self.cluster = cluster
        self.interval = interval
        self.max = {n: 0 for n in cluster.NODES}
        self.stopping = threading.Event()
        self.threads = []
        self.procs = []

    def start(self):
        for node in self.cluster.NODES:
            popen = subprocess.Popen(
                [self.cluster.bin("psql"), "-X", "-Atq", "-h", self.cluster.sockets,
                 "-p", str(self.cluster.ports[node]), "-U", "postgres", "-d", "postgres"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True, bufsize=1, start_new_session=True)
            proc = procs.track(f"sampler:{node}", popen)
            self.procs.append(proc)
            t = threading.Thread(target=self.loop, args=(node, popen), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def loop(self, node, popen):
        try:
            while not self.stopping.is_set():
                popen.stdin.write(QUERY)
                line = popen.stdout.readline()
                if not line:
                    return
                self.max[node] = max(self.max[node], int(line))
                self.stopping.wait(self.interval)
        except (OSError, ValueError):
            return

    def stop(self):
        """Ends the samplers; returns the highest count seen per node."""
        self.stopping.set()
        for proc in self.procs:
            try:
                proc.popen.stdin.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(5)
        for proc in self.procs:
            procs.stop(proc, timeout=5)
        return dict(self.max)
