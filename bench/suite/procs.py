"""Processes started by the suite: each one is tracked by pid and stopped by that pid.

Every daemon runs in the foreground as a direct child (no pg_ctl, no -d), so the pid
Popen returns is the daemon itself: its CPU and memory are read from /proc/PID and
`stop_all` can end exactly what was started, nothing else.
"""

import os
import signal
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
IS_ROOT = os.geteuid() == 0
# PostgreSQL and PgBouncer refuse to run as root.
DAEMON_USER = "postgres" if IS_ROOT else None


class Proc:
    """One started process: its Popen, a name for messages and how it is stopped."""

    def __init__(self, name, popen, stop_signal, log_path):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.stop_signal = stop_signal
        self.log_path = log_path

    def alive(self):
        return self.popen.poll() is None

    def log_tail(self, lines=5):
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:]).strip()
        except OSError:
            return ""


_started = []


def spawn(name, argv, log_path, stop_signal=signal.SIGTERM, as_daemon_user=False,
          env=None, cwd=None, stdin=subprocess.DEVNULL):
    """Starts argv with stdout and stderr appended to log_path and tracks its pid."""
    log = open(log_path, "ab")
    try:
        popen = subprocess.Popen(
            argv, stdin=stdin, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            user=DAEMON_USER if as_daemon_user else None,
            group=DAEMON_USER if as_daemon_user else None,
            extra_groups=[] if (as_daemon_user and DAEMON_USER) else None,
            start_new_session=True)
    finally:
        log.close()
    return track(name, popen, stop_signal, log_path)


def track(name, popen, stop_signal=signal.SIGTERM, log_path=None):
    """Tracks a process started elsewhere (with pipes) so `stop_all` ends it too."""
    proc = Proc(name, popen, stop_signal, log_path)
    _started.append(proc)
    return proc


def stop(proc, timeout=30.0):
    """Signals proc by its pid and waits for it; SIGKILL if it outlives the timeout."""
    if proc in _started:
        _started.remove(proc)
    if not proc.alive():
        return
    try:
        os.kill(proc.pid, proc.stop_signal)
    except ProcessLookupError:
        return
    try:
        proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait(10)


def stop_all():
    """Stops every tracked process, newest first (proxies before the servers)."""
    for proc in reversed(list(_started)):
        try:
            stop(proc)
        except Exception as e:  # keep stopping the others
            print(f"bench: stopping {proc.name} (pid {proc.pid}): {e}", flush=True)


def cpu_ticks(pid):
    """utime + stime + cutime + cstime of pid, in clock ticks. The children's part
    counts HAProxy's external health checks (a shell and psql per check)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in rest[11:15])


def cpu_seconds(pids):
    return sum(cpu_ticks(p) for p in pids) / CLK_TCK


def machine_busy_seconds():
    """CPU seconds all the machine's cores together have run anything since boot: the
    first line of /proc/stat, user, nice, system, irq and softirq (guest time is
    already in user and nice; idle, iowait and time stolen by a hypervisor are not
    work done here)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (
            int(x) for x in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


def status_kib(pid, field):
    """A kB field of /proc/PID/status (VmHWM: peak resident set, VmRSS: current)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def wait_until(what, check, timeout, interval=0.2, proc=None):
    """Polls check() until it is true; raises naming `what` after timeout seconds or
    when proc exits first."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited (code {proc.popen.returncode}): "
                               f"{proc.log_tail()}")
        try:
            if check():
                return
        except Exception as e:  # not ready yet; keep the reason for the message
            last_error = e
        time.sleep(interval)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f} s"
                       + (f" ({last_error})" if last_error else ""))
