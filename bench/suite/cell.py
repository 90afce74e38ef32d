"""One measurement (a cell): one workload through one target in one round, on a proxy
started for it alone."""

import os
import time

from . import pgbench, procs
from .clients import IdleClients, prewarm
from .cluster import DATABASE, SCRAM_USER
from .sampler import Sampler
from .window import CpuSeries, steady


def run_cell(env, target, workload, round_no, duration):
    """Starts the target's proxy, pre-warms it, opens the idle clients if any, runs
    pgbench, stops everything it started. Returns the cell's raw numbers; failures are
    recorded in `errors`, not raised, so one failed cell does not end the run."""
    celldir = os.path.join(env.workdir, "cells", f"r{round_no}-{target.name}-{workload.name}")
    os.makedirs(celldir, exist_ok=True)
    cell = {"round": round_no, "target": target.name, "workload": workload.name,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "errors": []}
    sampler = idle = None
    try:
        running = target.start()
        pids = [p.pid for p in running]
        cell["proxy_pids"] = pids
        if pids:
            cell["prewarm_s"] = prewarm(target.port, workload.user, workload.clients)
        sampler = Sampler(env.cluster).start()
        if workload.idle:
            idle = IdleClients(celldir, target.port, SCRAM_USER, workload.idle,
                               env.idle_login_timeout)
            open_idle(cell, idle, pids, workload.idle)
        measure(env, cell, celldir, target.ports, workload, pids, duration)
        for p in running:
            if not p.alive():
                cell["errors"].append(f"{p.name} exited during the run: {p.log_tail(2)}")
    except Exception as e:
        cell["errors"].append(f"{type(e).__name__}: {e}")
    finally:
        if idle:
            close_idle(cell, idle)
        if sampler:
            cell["server_conns_max"] = sampler.stop()
        target.stop()
    return cell


def open_idle(cell, idle, pids, count):
    cpu = procs.cpu_seconds(pids)
    ready = idle.ready()
    cell["idle"] = {"ok": ready["ok"], "failed": ready["failed"], "errors": ready["errors"],
                    "login_s": ready["seconds"],
                    "login_cpu_s": round(procs.cpu_seconds(pids) - cpu, 3)}
    if ready["failed"]:
        worst = max(ready["errors"].items(), key=lambda kv: kv[1])[0]
        cell["errors"].append(f"{ready['failed']} of {count} idle logins failed: {worst}")


def close_idle(cell, idle):
    try:
        still_open = idle.close()
    except Exception as e:
        cell["errors"].append(f"closing idle clients: {e}")
        return
    if "idle" in cell and still_open is not None:
        cell["idle"]["still_open_at_end"] = still_open
        if still_open < cell["idle"]["ok"]:
            cell["errors"].append(f"{cell['idle']['ok'] - still_open} idle clients were "
                                  "disconnected during the run")


def measure(env, cell, celldir, ports, workload, pids, duration):
    """pgbench, with the CPU of the proxy, of pgbench and of the whole machine sampled
    alongside; the numbers of its steady part."""
    seconds = duration + env.warmup + pgbench.connect_allowance(workload.clients,
                                                                workload.extra)
    series = CpuSeries(pids).start()
    try:
        t0 = time.monotonic()
        result = pgbench.run(env.bindir, celldir, ports, workload.user, DATABASE,
                             workload.clients, env.threads, seconds, workload.extra,
                             started=series.client_started)
        cell["wall_s"] = round(time.monotonic() - t0, 3)
    finally:
        samples = series.stop()
    if pids and samples:
        cell["cpu_s_whole_run"] = round(samples[-1][1] - samples[0][1], 3)
        # Each proxy process was started for this cell: its peak is this cell's.
        cell["peak_rss_kib"] = sum(procs.status_kib(p, "VmHWM") for p in pids)
        cell["rss_end_kib"] = sum(procs.status_kib(p, "VmRSS") for p in pids)
    done_at, latency_us = result.pop("done_at"), result.pop("latency_us")
    first_done = result.pop("first_done")
    cell["errors"] += result.pop("errors")
    cell.update(result)
    numbers = steady(done_at, latency_us, first_done, samples, env.warmup)
    if numbers:
        cell.update(numbers)
        per_1k = 1000 / numbers["xacts"]
        if pids:
            cell["cpu_s_per_1k_xacts"] = round(numbers["cpu_s"] * per_1k, 5)
        cell["client_cpu_s_per_1k_xacts"] = round(numbers["client_cpu_s"] * per_1k, 5)
        cell["machine_cpu_s_per_1k_xacts"] = round(numbers["machine_cpu_s"] * per_1k, 5)
        cell["busy_cores"] = round(numbers["machine_cpu_s"] / numbers["window_s"], 3)
    elif not cell["errors"]:
        cell["errors"].append(f"no steady window: {len(done_at)} transactions in {seconds} s")
