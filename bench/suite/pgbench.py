"""One pgbench run: started as a tracked process, bounded in time, its summary and its
per-transaction log (--log) turned into numbers."""

import glob
import math
import os
import re
import signal
import subprocess
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


def run(bindir, celldir, port, user, database, clients, threads, duration, extra,
        slack=90):
    """Runs `pgbench -n -S -T duration` with extra options; returns pgbench's summary,
    errors and the per-transaction log. The run is killed if it lasts slack seconds
    longer than its duration."""
    out_path = os.path.join(celldir, "pgbench.out")
    argv = [os.path.join(bindir, "pgbench"), "-n", "-S", "-c", str(clients),
            "-j", str(min(threads, clients)), "-T", str(duration), *extra,
            "--log", "--log-prefix", os.path.join(celldir, "xact"),
            "-h", "127.0.0.1", "-p", str(port), "-U", user, database]
    proc = procs.spawn("pgbench", argv, out_path, stop_signal=signal.SIGINT,
                       env=dict(os.environ, PGPASSWORD=user))
    timed_out = False
    try:
        proc.popen.wait(duration + slack)
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
    result["errors"] = errors(output, proc.popen.returncode, timed_out, duration + slack)
    if not result["errors"] and not result.get("pgbench_xacts"):
        result["errors"].append(f"no transaction completed in {duration} s")
    result["done_at"], result["latency_us"], result["first_done"] = \
        transactions(celldir, "-C" in extra)
    return result


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


def transactions(celldir, with_connect):
    """(completion times in s, latencies in us) from the per-transaction logs. A log
    line is `client xact_no latency_us script epoch_s epoch_us`; a failed or skipped
    transaction has a word instead of the latency and is left out.

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
    for path in glob.glob(os.path.join(celldir, "xact.*")):
        rows = []
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[2].isdigit():
                    rows.append((int(fields[0]), int(fields[4]) + int(fields[5]) / 1e6,
                                 int(fields[2])))
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
