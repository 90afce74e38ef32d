"""What the numbers were measured on: CPU, memory, kernel and every program's version."""

import os
import platform
import subprocess


def first_line(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def read(path, key, sep=":"):
    """The value of the first `key<sep>value` line of a file."""
    try:
        with open(path) as f:
            for line in f:
                name, found, value = line.partition(sep)
                if found and name.strip() == key:
                    return value.strip().strip('"')
    except OSError:
        pass
    return "unknown"


def describe(bindir, pgfleet, repo):
    commit = first_line(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    mem_kib = int(read("/proc/meminfo", "MemTotal").split()[0])
    return {
        "cpu": read("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": read("/etc/os-release", "PRETTY_NAME", "="),
        "postgresql": first_line([os.path.join(bindir, "postgres"), "--version"]),
        "pgbench": first_line([os.path.join(bindir, "pgbench"), "--version"]),
        "pgbouncer": first_line(["pgbouncer", "--version"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "pgfleet": f"{first_line([pgfleet, '--version'])} (commit {commit}"
                   f"{', with uncommitted changes' if dirty else ''})",
        "python": platform.python_version(),
    }
