#!/usr/bin/env python3
"""Opens N client connections to a PostgreSQL server or pooler, logs each one in
(startup message, then trust, cleartext, md5 or SCRAM-SHA-256 as the server asks) and
holds them idle, without a query (or after one `select 1` with --query), until stdin
closes.

    idle_clients.py --port 6432 --user app --password app --database app --count 2000

Prints one JSON line when every login has succeeded or failed ({"event": "ready",
"ok", "failed", "errors", "seconds"}), then, after stdin closes (or --hold seconds), one
more ({"event": "closed", "still_open"}) and exits. Every wait is bounded.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import resource
import struct
import sys
import time

_salted = {}  # (salt, iterations) -> SaltedPassword: one PBKDF2 per run, not per login


class LoginError(Exception):
    pass


def message(kind, body):
    return kind + struct.pack("!I", len(body) + 4) + body


async def read_message(reader):
    head = await reader.readexactly(5)
    (length,) = struct.unpack("!I", head[1:])
    return head[:1], await reader.readexactly(length - 4)


def error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1]] = part[1:].decode(errors="replace")
    return f"{fields.get(b'C', '?')} {fields.get(b'M', '')}"


class Scram:
    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = f"n=,r={self.nonce}"

    def first(self):
        data = ("n,," + self.client_first_bare).encode()
        return b"SCRAM-SHA-256\0" + struct.pack("!i", len(data)) + data

    def final(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise LoginError("SCRAM: server nonce does not extend ours")
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        key = (salt, iterations)
        if key not in _salted:
            _salted[key] = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
        salted = _salted[key]
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.client_first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


async def run_query(reader, writer, sql):
    writer.write(message(b"Q", sql.encode() + b"\0"))
    failed = None
    while True:
        kind, body = await read_message(reader)
        if kind == b"E":
            failed = error_text(body)
        elif kind == b"Z":
            if failed:
                raise LoginError(failed)
            return


async def login(args):
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        params = (f"user\0{args.user}\0database\0{args.database}\0"
                  "application_name\0bench-idle\0\0").encode()
        body = struct.pack("!I", 196608) + params
        writer.write(struct.pack("!I", len(body) + 4) + body)
        scram = None
        while True:
            kind, body = await read_message(reader)
            if kind == b"E":
                raise LoginError(error_text(body))
            if kind == b"Z":
                if args.query:
                    await run_query(reader, writer, "select 1")
                return reader, writer
            if kind != b"R":
                continue  # ParameterStatus, BackendKeyData, NoticeResponse
            (code,) = struct.unpack("!I", body[:4])
            if code == 3:
                writer.write(message(b"p", args.password.encode() + b"\0"))
            elif code == 5:
                inner = hashlib.md5((args.password + args.user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                writer.write(message(b"p", b"md5" + outer.encode() + b"\0"))
            elif code == 10:
                scram = Scram(args.password)
                writer.write(message(b"p", scram.first()))
            elif code == 11:
                writer.write(message(b"p", scram.final(body[4:].decode())))
            elif code not in (0, 12):
                raise LoginError(f"unsupported authentication request {code}")
    except BaseException:
        writer.close()
        raise


async def main(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.monotonic()
    deadline = started + args.login_timeout
    gate = asyncio.Semaphore(args.parallel)
    conns, errors = [], {}

    async def one():
        async with gate:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError()
                conns.append(await asyncio.wait_for(login(args), left))
            except asyncio.TimeoutError:
                errors["login timed out"] = errors.get("login timed out", 0) + 1
            except (OSError, asyncio.IncompleteReadError, LoginError) as e:
                text = str(e) or type(e).__name__
                errors[text] = errors.get(text, 0) + 1

    await asyncio.gather(*(one() for _ in range(args.count)))
    print(json.dumps({"event": "ready", "ok": len(conns), "failed": args.count - len(conns),
                      "errors": errors, "seconds": round(time.monotonic() - started, 3)}),
          flush=True)

    # Hold until stdin is readable (the parent closed it or wrote a line) or --hold.
    stdin_ready = asyncio.Event()
    try:
        asyncio.get_running_loop().add_reader(sys.stdin.fileno(), stdin_ready.set)
    except OSError:  # not a pipe (/dev/null, a file): nothing to wait for
        stdin_ready.set()
    try:
        await asyncio.wait_for(stdin_ready.wait(), args.hold)
    except asyncio.TimeoutError:
        pass
    still_open = sum(1 for r, _ in conns if not r.at_eof())
    for _, w in conns:
        try:
            w.write(message(b"X", b""))
            w.close()
        except OSError:
            pass
    await asyncio.sleep(0.5)  # let the Terminate messages go out
    print(json.dumps({"event": "closed", "still_open": still_open}), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--parallel", type=int, default=64, help="logins in flight at once")
    p.add_argument("--login-timeout", type=float, default=120,
                   help="seconds for all logins together")
    p.add_argument("--hold", type=float, default=600, help="longest idle hold, seconds")
    p.add_argument("--query", action="store_true",
                   help="run `select 1` on each connection once it is logged in")
    args = p.parse_args()
    if not args.host.startswith("127.") and args.host not in ("::1", "localhost"):
        sys.exit("idle_clients.py: loopback addresses only")
    asyncio.run(main(args))
