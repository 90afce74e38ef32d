"""Connections opened with idle_clients.py: the idle clients of the idle workload, and
the pre-warming of a pooler before each measurement."""

import json
import os
import selectors
import subprocess
import sys
import time

from . import procs
from .cluster import DATABASE

SCRIPT = os.path.join(os.path.dirname(__file__), "idle_clients.py")


def argv(port, user, count, login_timeout, *extra):
    return [sys.executable, SCRIPT, "--port", str(port), "--user", user, "--password", user,
            "--database", DATABASE, "--count", str(count),
            "--login-timeout", str(login_timeout), *extra]


class IdleClients:
    """Idle connections held open (no query) while a measurement runs."""

    def __init__(self, celldir, port, user, count, login_timeout):
        with open(os.path.join(celldir, "idle.err"), "wb") as err:
            popen = subprocess.Popen(argv(port, user, count, login_timeout, "--hold", "900"),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=err, text=True, start_new_session=True)
        self.proc = procs.track("idle_clients", popen)
        self.login_timeout = login_timeout

    def ready(self):
        """Waits (bounded) until every login succeeded or failed; returns the counts."""
        line = self._line(self.login_timeout + 30)
        if not line:
            raise RuntimeError("idle_clients.py ended without a report")
        return json.loads(line)

    def close(self):
        """Closes the idle connections; returns how many were still open then."""
        try:
            self.proc.popen.stdin.close()
            line = self._line(30)
            return json.loads(line).get("still_open") if line else None
        finally:
            procs.stop(self.proc, timeout=10)

    def _line(self, timeout):
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.popen.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError(f"idle_clients.py: no report within {timeout:.0f} s")
        return self.proc.popen.stdout.readline()


def prewarm(port, user, clients, timeout=120):
    """Opens `clients` connections at once, runs one query on each, and closes them: a
    pooler then holds the server connections of its steady state (PgBouncer opens them
    one after another, which would otherwise take seconds of a measurement with 256
    clients). Returns how long that took."""
    t0 = time.monotonic()
    r = subprocess.run(argv(port, user, clients, timeout, "--query", "--hold", "0"),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout + 30)
    ready = json.loads(r.stdout.splitlines()[0]) if r.stdout else {}
    if r.returncode != 0 or ready.get("failed", 1):
        raise RuntimeError(f"pre-warming {clients} clients: "
                           f"{ready.get('errors') or r.stderr.strip()[-300:]}")
    return round(time.monotonic() - t0, 3)
