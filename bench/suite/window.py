"""The steady part of a run: transactions and CPU (the proxy's, the clients', the whole
machine's) from `warmup` seconds after every client has completed its first
transaction to the last transaction, so neither the clients' logins nor the pools'
first server connections are in the numbers."""

import math
import threading
import time

from . import procs


class CpuSeries:
    """Samples, every `interval` while a run goes on, (wall time, the proxy's CPU
    seconds, the clients' CPU seconds, the whole machine's busy CPU seconds). The
    clients (pgbench) are added as they start; one that has ended keeps the last
    figure read."""

    def __init__(self, pids, interval=0.2):
        self.pids, self.interval = pids, interval
        self.clients = {}
        self.samples = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def client_started(self, pid):
        self.clients[pid] = 0.0

    def loop(self):
        while True:
            for pid in list(self.clients):
                try:
                    self.clients[pid] = procs.cpu_seconds([pid])
                except OSError:  # ended and reaped: its last figure stands
                    pass
            try:
                self.samples.append((time.time(), procs.cpu_seconds(self.pids),
                                     sum(self.clients.values()),
                                     procs.machine_busy_seconds()))
            except OSError:  # a proxy that exited; the cell reports it
                pass
            if self.stopping.wait(self.interval):
                return

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        return self.samples


def steady(done_at, latency_us, first_done, samples, warmup):
    """Numbers over the window between two CPU samples: the first one `warmup` s after
    every client completed a transaction (the later of `first_done`), the last one
    before the last completed transaction. `done_at` (completion times, s) and
    `latency_us` come from pgbench's per-transaction log, whose times are wall-clock like
    the samples'. None if the run was too short for such a window."""
    if not done_at:
        return None
    begin = first_done[1] + warmup
    end = max(done_at)
    inside = [s for s in samples if begin <= s[0] <= end]
    if len(inside) < 2:
        return None
    (t0, *cpu0), (t1, *cpu1) = inside[0], inside[-1]
    proxy, clients, machine = (round(b - a, 3) for a, b in zip(cpu0, cpu1))
    lat = sorted(latency_us[i] for i, t in enumerate(done_at) if t0 < t <= t1)
    if not lat:
        return None
    n = len(lat)
    return {"window_s": round(t1 - t0, 3), "xacts": n,
            "ramp_s": round(first_done[1] - first_done[0], 3),
            "tps": round(n / (t1 - t0), 2),
            "avg_ms": round(sum(lat) / n / 1000, 4),
            "p99_ms": round(lat[max(0, math.ceil(0.99 * n) - 1)] / 1000, 4),
            "cpu_s": proxy, "client_cpu_s": clients, "machine_cpu_s": machine}
