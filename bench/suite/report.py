"""Medians over rounds, the markdown report and the JSON file."""

import json
import statistics

METRICS = ("tps", "avg_ms", "p99_ms", "cpu_s_per_1k_xacts", "peak_rss_kib",
           "client_cpu_s_per_1k_xacts", "machine_cpu_s_per_1k_xacts", "busy_cores")
# Ratios: pgfleet in each pool mode against the same mode of each peer.
COMPARISONS = [("pgfleet-session", "pgbouncer-session"), ("pgfleet-txn", "pgbouncer-txn"),
               ("pgfleet-session", "blog-session"), ("pgfleet-txn", "blog-txn"),
               ("pgfleet-txn-replica1", "pgbouncer-txn"),
               ("pgfleet-txn-replica1-baseline", "pgbouncer-txn"),
               ("pgfleet-txn-replica1", "pgfleet-txn-replica1-baseline"),
               ("pgfleet-session", "pgfleet-session-baseline")]


def summarize(cells, targets, workloads):
    """{workload: {target: summary}}; a summary holds the medians over the rounds that
    ran clean, how many rounds there were, and the errors of the others."""
    out = {}
    for w in workloads:
        out[w.name] = {}
        for t in targets:
            runs = [c for c in cells if c["workload"] == w.name and c["target"] == t.name]
            clean = [c for c in runs if not c["errors"] and c.get("tps")]
            s = {"rounds": len(runs), "clean_rounds": len(clean),
                 "errors": [{"round": c["round"], "error": e}
                            for c in runs for e in c["errors"]]}
            for m in METRICS:
                values = [c[m] for c in clean if c.get(m) is not None]
                if values:
                    s[m] = statistics.median(values)
            s["by_round"] = {c["round"]: {m: c[m] for m in METRICS if c.get(m) is not None}
                             for c in clean}
            for key in ("login_s", "login_cpu_s", "ok"):
                values = [c["idle"][key] for c in runs if key in c.get("idle", {})]
                if values:
                    s.setdefault("idle", {})[key] = statistics.median(values)
            conns = [c["server_conns_max"] for c in clean if c.get("server_conns_max")]
            if conns:
                s["server_conns_max"] = {n: statistics.median(x[n] for x in conns)
                                         for n in conns[0]}
            out[w.name][t.name] = s
    return out


def fmt(value, digits):
    return "—" if value is None else f"{value:,.{digits}f}"


def short(error, limit=70):
    error = error.replace("|", "/")
    return error if len(error) <= limit else error[:limit - 1] + "…"


def cell_rows(s, direct):
    """The five table lines of one (workload, target) summary."""
    if not s["rounds"]:
        return ["not run"] + ["—"] * 4
    if not s["clean_rounds"]:
        first = s["errors"][0]["error"] if s["errors"] else "no result"
        return [f"**error**: {short(first)}", "—", "—", "—", "—"]
    note = (f" ({s['rounds'] - s['clean_rounds']}/{s['rounds']} rounds failed)"
            if s["clean_rounds"] < s["rounds"] else "")
    conns = s.get("server_conns_max", {})
    rss = s.get("peak_rss_kib")
    return [
        fmt(s.get("tps"), 0) + note,
        f"{fmt(s.get('avg_ms'), 2)} / {fmt(s.get('p99_ms'), 2)}",
        "—" if direct else fmt(s.get("cpu_s_per_1k_xacts"), 3),
        "—" if direct else fmt(rss / 1024 if rss else None, 1),
        " / ".join(f"{conns[n]:.0f}" for n in ("primary", "replica1", "replica2"))
        if conns else "—",
    ]


ROW_NAMES = ["tps", "latency avg / p99 ms", "proxy CPU s per 1k xacts",
             "proxy peak RSS MiB", "server conns max p / r1 / r2"]


def ratio(a, b, key):
    """The median over the rounds both ran clean of a's value / b's in that round.
    Targets alternate within a round, so each pair was measured minutes apart; a
    machine whose speed drifts between rounds moves both sides of a pair alike, while
    a ratio of medians could take them from rounds of different speeds."""
    ra, rb = a.get("by_round", {}), b.get("by_round", {})
    pairs = [ra[r][key] / rb[r][key] for r in ra
             if r in rb and ra[r].get(key) and rb[r].get(key)]
    return statistics.median(pairs) if pairs else None


def markdown(machine, settings, summary, targets, workloads):
    lines = ["## pgfleet benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += [f"- settings: {settings}", ""]
    lines.append("| workload | measure | " + " | ".join(t.label for t in targets) + " |")
    lines.append("|---|---|" + "---:|" * len(targets))
    for w in workloads:
        columns = [cell_rows(summary[w.name][t.name], t.proxy is None) for t in targets]
        for i, row in enumerate(ROW_NAMES):
            label = w.label if i == 0 else ""
            lines.append(f"| {label} | {row} | " + " | ".join(c[i] for c in columns) + " |")
    present = {t.name: t for t in targets}
    comparisons = [(a, b) for a, b in COMPARISONS if a in present and b in present]
    if comparisons:
        lines += ["", "Ratios (pgfleet / the peer in the same round, median over the "
                      "rounds; tps above 1 and p99, CPU, RSS below 1 favour pgfleet):",
                  ""]
        lines.append("| workload | " + " | ".join(
            f"{present[a].label} / {present[b].label}" for a, b in comparisons) + " |")
        lines.append("|---|" + "---|" * len(comparisons))
        for w in workloads:
            cells = []
            for a, b in comparisons:
                sa, sb = summary[w.name][a], summary[w.name][b]
                if not sa["clean_rounds"] or not sb["clean_rounds"]:
                    failed = [present[x].label for x, s in ((a, sa), (b, sb))
                              if not s["clean_rounds"]]
                    cells.append(f"— ({', '.join(failed)}: error)")
                    continue
                parts = []
                for key, name in (("tps", "tps"), ("p99_ms", "p99"),
                                  ("cpu_s_per_1k_xacts", "CPU"), ("peak_rss_kib", "RSS")):
                    r = ratio(sa, sb, key)
                    parts.append(f"{name} {r:.2f}" if r is not None else f"{name} —")
                cells.append(" · ".join(parts))
            lines.append(f"| {w.label} | " + " | ".join(cells) + " |")
    lines += split_lines(summary, present, workloads)
    lines += cpu_lines(summary, targets, workloads)
    lines += idle_lines(summary, targets, workloads)
    errors = []
    for w in workloads:
        for t in targets:
            rounds_of = {}
            for e in summary[w.name][t.name]["errors"]:
                rounds_of.setdefault(e["error"], []).append(str(e["round"]))
            errors += [f"- {t.label}, {w.label} (round{'s' * (len(r) > 1)} "
                       f"{', '.join(r)}): {e}"
                       for e, r in rounds_of.items()]
    if errors:
        lines += ["", "Errors:", ""] + errors
    return "\n".join(lines) + "\n"


def split_lines(summary, present, workloads):
    """What the servers give when the load is spread over both replicas on this one
    machine, against one replica: the baseline of the targets that balance."""
    if "direct" not in present or "direct-both" not in present:
        return []
    lines = []
    for w in workloads:
        r = ratio(summary[w.name]["direct-both"], summary[w.name]["direct"], "tps")
        if r is not None:
            lines.append(f"| {w.label} | {r:.2f} |")
    if not lines:
        return []
    return ["", "Both replicas against one, straight to the servers (tps, median of the "
                "rounds' ratios):", "", "| workload | direct (both replicas) / direct "
                "(replica1) |", "|---|---:|"] + lines


def cpu_split(s):
    """(proxy, pgbench, the rest, whole machine) in µs per transaction and the cores
    busy, from the round whose whole-machine CPU per transaction is the median (the
    lower one of an even count), so that the parts add up; None if no round has it."""
    rounds = [r for r in s.get("by_round", {}).values()
              if r.get("machine_cpu_s_per_1k_xacts") and "client_cpu_s_per_1k_xacts" in r]
    if not rounds:
        return None
    total = statistics.median_low(r["machine_cpu_s_per_1k_xacts"] for r in rounds)
    r = next(r for r in rounds if r["machine_cpu_s_per_1k_xacts"] == total)
    proxy = r.get("cpu_s_per_1k_xacts", 0) * 1000
    client = r["client_cpu_s_per_1k_xacts"] * 1000
    return proxy, client, total * 1000 - proxy - client, total * 1000, r.get("busy_cores")


def cpu_lines(summary, targets, workloads):
    """Where the machine's CPU goes per transaction: the proxy, the clients, and the
    rest (the servers, and whatever else ran on the machine meanwhile)."""
    rows = []
    for w in workloads:
        cells = []
        for t in targets:
            split = cpu_split(summary[w.name][t.name])
            if split is None:
                cells.append("—")
                continue
            proxy, client, rest, total, busy = split
            cells.append(("—" if t.proxy is None else f"{proxy:.0f}")
                         + f" + {client:.0f} + {rest:.0f} = {total:.0f}"
                         + (f" · {busy:.2f}" if busy is not None else ""))
        if any(c != "—" for c in cells):
            rows.append(f"| {w.label} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["", "Where the machine's CPU goes, µs per transaction: proxy + pgbench + the "
                "rest (the servers, and anything else running) = the whole machine · "
                "cores busy on average (the round with the median whole-machine "
                "figure):", "",
            "| workload | " + " | ".join(t.label for t in targets) + " |",
            "|---|" + "---:|" * len(targets)] + rows


def idle_lines(summary, targets, workloads):
    """How long the idle clients took to log in, and what that cost the proxy."""
    idle = [w for w in workloads if w.idle]
    if not idle:
        return []
    w = idle[0]
    lines = ["", f"Idle clients ({w.idle:,} logins before the 16 active clients start; "
                 "median over rounds):", "",
             "| | " + " | ".join(t.label for t in targets) + " |",
             "|---|" + "---:|" * len(targets)]
    rows = (("logged in", "ok", 0), ("seconds for all logins", "login_s", 1),
            ("proxy CPU s for the logins", "login_cpu_s", 2))
    for name, key, digits in rows:
        cells = []
        for t in targets:
            v = summary[w.name][t.name].get("idle", {}).get(key)
            cells.append("—" if v is None or (key == "login_cpu_s" and t.proxy is None)
                         else fmt(v, digits))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_json(path, machine, settings, cells, summary):
    with open(path, "w") as f:
        json.dump({"machine": machine, "settings": settings, "cells": cells,
                   "summary": summary}, f, indent=1)
