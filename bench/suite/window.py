"""The steady part of a run: transactions and proxy CPU from `warmup` seconds after
every client has completed its first transaction to the last transaction, so neither
the clients' logins nor the pools' first server connections are in the numbers."""

import math
import threading
import time

from . import procs


class CpuSeries:
    """Samples (wall time, proxy CPU seconds) every `interval` while a run goes on."""

    def __init__(self, pids, interval=0.2):
        self.pids, self.interval = pids, interval
        self.samples = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def loop(self):
        while True:
            try:
                self.samples.append((time.time(), procs.cpu_seconds(self.pids)))
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
    (t0, cpu0), (t1, cpu1) = inside[0], inside[-1]
    lat = sorted(latency_us[i] for i, t in enumerate(done_at) if t0 < t <= t1)
    if not lat:
        return None
    n = len(lat)
    return {"window_s": round(t1 - t0, 3), "xacts": n,
            "ramp_s": round(first_done[1] - first_done[0], 3),
            "tps": round(n / (t1 - t0), 2),
            "avg_ms": round(sum(lat) / n / 1000, 4),
            "p99_ms": round(lat[max(0, math.ceil(0.99 * n) - 1)] / 1000, 4),
            "cpu_s": round(cpu1 - cpu0, 3)}
