"""One pgbench run: started as a tracked process, bounded in time, its summary and its
per-transaction log (--log) turned into numbers."""

import glob
import math
import os
import re
import signal
import subprocess
import time
from array import array

from . import procs

SUMMARY = {
    "pgbench_tps": r"^tps = ([0-9.]+)",
    "pgbench_xacts": r"^number of transactions actually processed: (\d+)",
    "failed_xacts": r"^number of failed transactions: (\d+)",
    "pgbench_latency_avg_ms": r"^latency average = ([0-9.]+) ms",
    "connection_ms": r"^(?:average|initial) connection time = ([0-9.]+) ms",
}
ABORT = re.compile(r"client \d+ (?:script \d+ )?aborted in command \d+(?: query \d+)?: (.*)")


def connect_allowance(clients, extra):
    """pgbench -T counts from before its clients connect: this many seconds more keep
    the measured part near the wanted duration (5 ms per md5 login, about what one
    takes straight to PostgreSQL on a busy 2-core machine; none with -C, which
    connects inside the run)."""
    return 0 if "-C" in extra else math.ceil(clients * 0.005)


def split(total, parts):
    """`total` as `parts` near-equal shares, the larger ones first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def run(bindir, celldir, ports, user, database, clients, threads, duration, extra,
        started=lambda pid: None, slack=90):
    """Runs `pgbench -n -S -T duration` with extra options against `ports`: one pgbench
    per port, all at once, the clients and threads shared out between them. Returns
    the pgbench summary (tps and counts summed, the latency average weighted by
    transactions), errors and the per-transaction logs of all of them. `started` is
    told each pgbench's pid. A run is killed if it lasts slack seconds longer than its
    duration."""
    runs = []
    deadline = time.monotonic() + duration + slack
    for i, (port, n, j) in enumerate(zip(ports, split(clients, len(ports)),
                                         split(min(threads, clients), len(ports)))):
        out_path = os.path.join(celldir, f"pgbench{i}.out")
        argv = [os.path.join(bindir, "pgbench"), "-n", "-S", "-c", str(n),
                "-j", str(max(1, j)), "-T", str(duration), *extra,
                "--log", "--log-prefix", os.path.join(celldir, f"xact{i}"),
                "-h", "127.0.0.1", "-p", str(port), "-U", user, database]
        proc = procs.spawn("pgbench", argv, out_path, stop_signal=signal.SIGINT,
                           env=dict(os.environ, PGPASSWORD=user))
        started(proc.pid)
        runs.append((argv, out_path, proc))
    results = [finish(argv, out_path, proc, duration, (deadline, duration + slack))
               for argv, out_path, proc in runs]
    result = merge(results)
    result["done_at"], result["latency_us"], result["first_done"] = transactions(
        [os.path.join(celldir, f"xact{i}") for i in range(len(runs))], "-C" in extra)
    return result


def finish(argv, out_path, proc, duration, stop_at):
    """Waits for one pgbench; its summary and errors. `stop_at` is (a `time.monotonic()`
    deadline shared by the runs side by side, the seconds it stands for): a pgbench still
    running then is stopped."""
    (deadline, limit), timed_out = stop_at, False
    try:
        proc.popen.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        timed_out = True
    procs.stop(proc, timeout=10)
    with open(out_path, errors="replace") as f:
        output = f.read()
    result = {"argv": " ".join(argv[1:]), "exit_code": proc.popen.returncode}
    for key, pattern in SUMMARY.items():
        m = re.search(pattern, output, re.M)
        if m:
            result[key] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    result["errors"] = errors(output, proc.popen.returncode, timed_out, limit)
    if not result["errors"] and not result.get("pgbench_xacts"):
        result["errors"].append(f"no transaction completed in {duration} s")
    return result


def merge(results):
    """One summary for pgbench runs that ran side by side."""
    if len(results) == 1:
        return results[0]
    merged = {"argv": " & ".join(r["argv"] for r in results),
              "exit_code": next((r["exit_code"] for r in results if r["exit_code"]),
                                results[0]["exit_code"]),
              "errors": [e for r in results for e in r["errors"]]}
    for key in ("pgbench_tps", "pgbench_xacts", "failed_xacts"):
        if all(key in r for r in results):
            merged[key] = sum(r[key] for r in results)
    xacts = [r.get("pgbench_xacts", 0) for r in results]
    if all("pgbench_latency_avg_ms" in r for r in results) and sum(xacts):
        merged["pgbench_latency_avg_ms"] = round(sum(
            r["pgbench_latency_avg_ms"] * x for r, x in zip(results, xacts)) / sum(xacts), 3)
    if all("connection_ms" in r for r in results):
        merged["connection_ms"] = round(
            sum(r["connection_ms"] for r in results) / len(results), 3)
    return merged


def errors(output, exit_code, timed_out, limit):
    """Aborted clients and other failures, as short messages (empty: a clean run)."""
    found = []
    aborts = ABORT.findall(output)
    if aborts:
        first = re.sub(r"\s+", " ", aborts[0]).strip()
        found.append(f"{len(aborts)} client(s) aborted: {first}")
    if timed_out:
        found.append(f"pgbench still running after {limit} s, stopped")
    if exit_code not in (0, None) and not aborts:
        lines = [l for l in output.splitlines() if "error" in l.lower()]
        found.append(f"pgbench exited {exit_code}: " + (lines[0] if lines else output[-200:]))
    return found


def transactions(prefixes, with_connect):
    """(completion times in s, latencies in us) from the per-transaction logs of the
    pgbench runs that wrote them with these log prefixes. A log line is `client
    xact_no latency_us script epoch_s epoch_us`; a failed or skipped transaction has a
    word instead of the latency and is left out.

    pgbench's logged latency leaves out the connection that -C opens for each
    transaction. With with_connect, a transaction's latency is instead the time since
    the same client's previous transaction completed: the whole connect, query and
    disconnect cycle (a client's first transaction, having no previous one, is left
    out).

    Also returns when the first and the last client completed their first transaction:
    a pooler that opens its server connections one at a time keeps some clients waiting
    in between."""
    done_at, latency_us = array("d"), array("q")
    last_done, first_done = {}, {}
    for run, prefix in enumerate(prefixes):
        for path in glob.glob(prefix + ".*"):
            rows = []
            with open(path) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) > 5 and fields[2].isdigit():
                        rows.append(((run, int(fields[0])),
                                     int(fields[4]) + int(fields[5]) / 1e6, int(fields[2])))
            os.remove(path)  # large, and fully summarised by the caller
            # One log per pgbench thread; a client's lines are in order within it.
            for client, t, latency in rows:
                first_done.setdefault(client, t)
                if with_connect:
                    previous = last_done.get(client)
                    last_done[client] = t
                    if previous is None:
                        continue
                    latency = round((t - previous) * 1e6)
                done_at.append(t)
                latency_us.append(latency)
    firsts = first_done.values()
    return done_at, latency_us, (min(firsts, default=None), max(firsts, default=None))
