#!/usr/bin/env python3
"""Driver checks for pgfleet: psycopg 3 (server-side prepared statements) and asyncpg
(which prepares every query) against one pgfleet endpoint.

    python3 check.py --dsn postgresql://app:app@127.0.0.1:6433/app --mode write
    python3 check.py --dsn ... --mode read --pool-mode transaction --driver asyncpg

`--mode write` (the writer endpoint) creates the schemas drv_psycopg and drv_asyncpg and
runs everything, COPY FROM STDIN included; `--mode read` (a reader endpoint, after a
write run) only reads, and checks that it is on a replica and that the write run's rows
have arrived. `--pool-mode transaction` additionally checks that a connection's
transactions really ran on several server connections (so the prepared statements were
re-prepared on demand); `session` checks they all ran on one.

Prints what failed (marking prepared-statement errors), then one summary line per
driver; exits 1 if any check failed, 3 if the whole run took longer than --timeout.
"""

import argparse
import asyncio
import contextlib
import io
import os
import sys
import time
import traceback

# Rows the write run leaves in <schema>.copy_in, which the read run waits for.
COPY_ROWS = 15000
CONCURRENT_TASKS = 20
QUERIES_PER_TASK = 200
# More distinct statements than either driver caches (100 by default): the drivers
# DEALLOCATE (psycopg) or Close (asyncpg) the ones they evict.
DISTINCT_STATEMENTS = 120
# Transactions per sequential check (each on a different server connection in turn).
SETTINGS_ROUNDS = 16
PREPARED_ROUNDS = 40
AFTER_ERROR_ROUNDS = 24

CURRENT = {"check": "start-up"}


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def statement_error(text):
    t = text.lower()
    return "prepared statement" in t and ("does not exist" in t or "already exists" in t)


class Report:
    def __init__(self, driver, args):
        self.driver = driver
        self.args = args
        self.passed = []
        self.failed = []
        self.queries = 0
        self.backends = set()
        self.started = time.monotonic()
        self.finished = None

    def record(self, name, exc):
        # The first line: asyncpg appends a long pgbouncer hint to statement errors.
        first = (str(exc).strip().splitlines() or [""])[0]
        text = f"{type(exc).__name__}: {first}"
        sqlstate = getattr(exc, "sqlstate", None) or getattr(
            getattr(exc, "diag", None), "sqlstate", None
        )
        if sqlstate:
            text += f" [SQLSTATE {sqlstate}]"
        where = ""
        frames = [
            f for f in traceback.extract_tb(exc.__traceback__) if f.filename == __file__
        ]
        if frames:
            where = f" (check.py line {frames[-1].lineno}: {frames[-1].line})"
        mark = "PREPARED STATEMENT ERROR: " if statement_error(text) else ""
        self.failed.append(name)
        print(
            f"FAIL {self.driver} [{self.args.mode}, {self.args.pool_mode or 'any'} mode] "
            f"{name}: {mark}{text}{where}",
            file=sys.stderr,
            flush=True,
        )

    def summary(self):
        took = (self.finished or time.monotonic()) - self.started
        total = len(self.passed) + len(self.failed)
        status = "ok" if not self.failed else f"FAILED {len(self.failed)}/{total}"
        extra = f"; failed: {', '.join(self.failed)}" if self.failed else ""
        return (
            f"{self.driver}: {status} - {total} checks, {self.queries} queries, "
            f"{len(self.backends)} server backends seen, {took:.1f}s "
            f"({self.args.mode} endpoint){extra}"
        )


def run_check(rep, name, fn, cleanup):
    """Runs one check; after a failure, `cleanup` leaves no transaction open."""
    CURRENT["check"] = f"{rep.driver}: {name}"
    started = time.monotonic()
    try:
        fn()
        rep.passed.append(name)
        print(f"  ok    {rep.driver}: {name} ({time.monotonic() - started:.1f}s)", flush=True)
    except Exception as exc:  # noqa: BLE001 - every failure is reported
        rep.record(name, exc)
        print(f"  FAIL  {rep.driver}: {name} ({time.monotonic() - started:.1f}s)", flush=True)
        with contextlib.suppress(Exception):
            cleanup()


async def run_check_async(rep, name, fn, cleanup, limit=240):
    CURRENT["check"] = f"{rep.driver}: {name}"
    started = time.monotonic()
    try:
        await asyncio.wait_for(fn(), limit)
        rep.passed.append(name)
        print(f"  ok    {rep.driver}: {name} ({time.monotonic() - started:.1f}s)", flush=True)
        return
    except asyncio.TimeoutError as exc:
        rep.record(name, CheckFailed(f"did not finish within {limit}s ({exc!r})"))
    except Exception as exc:  # noqa: BLE001
        rep.record(name, exc)
    print(f"  FAIL  {rep.driver}: {name} ({time.monotonic() - started:.1f}s)", flush=True)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(cleanup(), 10)


async def gather_all(coros):
    """Runs every coroutine to its end, then raises the first failure (so that no task
    is left talking on a connection being closed)."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


def check_backends(rep, pids, what):
    """In transaction mode one client's transactions must have used several server
    connections (that is what the rotation is for); in session mode exactly one."""
    rep.backends |= pids
    if rep.args.pool_mode == "transaction":
        expect(
            len(pids) >= 2,
            f"{what}: all transactions ran on server backend(s) {sorted(pids)}; "
            "expected several in transaction mode",
        )
    elif rep.args.pool_mode == "session":
        expect(len(pids) == 1, f"{what}: session mode used backends {sorted(pids)}")


# --------------------------------------------------------------------------- psycopg


def psycopg_checks(args, rep):
    import psycopg
    from psycopg import errors as E

    write = args.mode == "write"
    schema = "drv_psycopg"

    def connect():
        return psycopg.connect(
            args.dsn, autocommit=True, prepare_threshold=0, connect_timeout=20
        )

    def q(conn, sql, params=None, **kw):
        rep.queries += 1
        return conn.execute(sql, params, **kw)

    started = time.monotonic()
    conn = connect()
    holders = [connect() for _ in range(3)]
    print(f"  ok    psycopg: 4 connections ({time.monotonic() - started:.1f}s)", flush=True)
    turn = [0]

    @contextlib.contextmanager
    def rotate():
        """Holds 0..3 other server connections in open transactions while `conn` runs a
        transaction, so that (in transaction mode) its transactions land on different
        server connections."""
        k = turn[0] % (len(holders) + 1)
        turn[0] += 1
        for h in holders[:k]:
            h.execute("BEGIN", prepare=False)
        try:
            yield
        finally:
            for h in holders[:k]:
                h.execute("COMMIT", prepare=False)

    def simple():
        cur = q(conn, "select 1; select 'two'", prepare=False)
        expect(cur.fetchone() == (1,), "first result of a multi-statement query")
        expect(cur.nextset() and cur.fetchone() == ("two",), "second result")
        expect(q(conn, "select %s::int + 1", [41]).fetchone() == (42,), "parameterised")
        rec = q(conn, "select pg_is_in_recovery()").fetchone()[0]
        expect(rec == (not write), f"pg_is_in_recovery() = {rec} on the {args.mode} endpoint")
        expect(
            q(conn, "select current_user, current_database()").fetchone() == ("app", "app"),
            "user and database",
        )

    def schema_setup():
        q(conn, f"drop schema if exists {schema} cascade", prepare=False)
        q(conn, f"create schema {schema}", prepare=False)
        q(
            conn,
            f"create table {schema}.items (id int primary key, name text not null, qty int not null)",
            prepare=False,
        )
        q(
            conn,
            f"create table {schema}.copy_in (id int primary key, name text, amount numeric, at timestamptz)",
            prepare=False,
        )

    def settings_stick():
        # prepare=False: the simple query protocol, as a SET is usually sent (with
        # prepare_threshold=0 psycopg would otherwise prepare it like any statement).
        q(conn, f"SET search_path TO {schema}, public", prepare=False)
        q(conn, "SET application_name TO 'drv-psycopg'", prepare=False)
        pids = set()
        for i in range(SETTINGS_ROUNDS):
            with rotate():
                with conn.transaction():
                    row = q(
                        conn,
                        "select current_setting('search_path'), current_setting('application_name'), pg_backend_pid()",
                    ).fetchone()
            expect(row[0] == f"{schema}, public", f"transaction {i}: search_path = {row[0]!r}")
            expect(row[1] == "drv-psycopg", f"transaction {i}: application_name = {row[1]!r}")
            pids.add(row[2])
            # Outside a transaction block too.
            row = q(conn, "select current_setting('search_path')").fetchone()
            expect(row[0] == f"{schema}, public", f"autocommit {i}: search_path = {row[0]!r}")
        got = conn.info.parameter_status("application_name")
        expect(got == "drv-psycopg", f"ParameterStatus application_name = {got!r}")
        check_backends(rep, pids, "SET search_path/application_name")

    def prepared_across_transactions():
        pids = set()
        for i in range(PREPARED_ROUNDS):
            with rotate():
                with conn.transaction():
                    v, pid = q(conn, "select %s::int * 2, pg_backend_pid()", [i]).fetchone()
                    expect(v == 2 * i, f"select {i} * 2 = {v}")
                    pids.add(pid)
                    if write:
                        q(
                            conn,
                            f"insert into {schema}.items (id, name, qty) values (%s, %s, %s)",
                            [i, f"item{i}", i],
                        )
                        got = q(conn, f"select name from {schema}.items where id = %s", [i]).fetchone()
                        expect(got == (f"item{i}",), f"read back item {i}: {got}")
                    else:
                        got = q(conn, "select count(*) from pg_class where oid = %s::oid", [1259]).fetchone()
                        expect(got == (1,), f"pg_class lookup: {got}")
            # And outside transaction blocks, explicitly prepared.
            v = q(conn, "select %s::text || 'x'", [str(i)], prepare=True).fetchone()[0]
            expect(v == f"{i}x", f"prepare=True result {v!r}")
        if write:
            n = q(conn, f"select count(*) from {schema}.items").fetchone()[0]
            expect(n == PREPARED_ROUNDS, f"{n} items after {PREPARED_ROUNDS} committed inserts")
        check_backends(rep, pids, "prepared statements across transactions")

    def commit_and_rollback():
        if write:
            with conn.transaction():
                q(conn, f"insert into {schema}.items values (%s, %s, %s)", [1000, "committed", 1])
            with rotate():
                with conn.transaction():
                    q(conn, f"insert into {schema}.items values (%s, %s, %s)", [1001, "rolled back", 1])
                    raise psycopg.Rollback()
            with conn.transaction():
                q(conn, f"insert into {schema}.items values (%s, %s, %s)", [1002, "outer", 1])
                with conn.transaction():  # a savepoint
                    q(conn, f"insert into {schema}.items values (%s, %s, %s)", [1003, "inner", 1])
                    raise psycopg.Rollback()
            ids = [r[0] for r in q(conn, f"select id from {schema}.items where id >= 1000 order by id").fetchall()]
            expect(ids == [1000, 1002], f"ids after commit/rollback/savepoint: {ids}")
        else:
            with conn.transaction():
                expect(q(conn, "select %s::int", [7]).fetchone() == (7,), "read in transaction")
                raise psycopg.Rollback()
            with conn.transaction():
                q(conn, "select %s::int", [8])
                with conn.transaction():
                    q(conn, "select %s::int", [9])
                    raise psycopg.Rollback()
        status = conn.info.transaction_status
        expect(status == psycopg.pq.TransactionStatus.IDLE, f"transaction status {status!r}")

    def error_then_continue():
        # An error inside a transaction block: the context manager rolls back.
        try:
            with conn.transaction():
                q(conn, "select %s::int", [1])
                q(conn, "select 1 / %s::int", [0])
            raise CheckFailed("division by zero did not fail")
        except E.DivisionByZero:
            pass
        # By hand: after the error, statements (prepared before, and new ones) fail with
        # 25P02 until ROLLBACK.
        q(conn, "BEGIN", prepare=False)
        q(conn, "select %s::int * 2, pg_backend_pid()", [1])
        try:
            if write:
                q(conn, f"insert into {schema}.items values (%s, %s, %s)", [1000, "duplicate", 1])
            else:
                q(conn, "select 1 / %s::int", [0])
            raise CheckFailed("the failing statement did not fail")
        except (E.UniqueViolation, E.DivisionByZero):
            pass
        for sql in ["select %s::int * 2, pg_backend_pid()", "select %s::int + 100 as aborted"]:
            try:
                q(conn, sql, [1])
                raise CheckFailed(f"{sql!r} ran in an aborted transaction")
            except E.InFailedSqlTransaction:
                pass
        q(conn, "ROLLBACK", prepare=False)
        # An error outside a transaction block.
        try:
            q(conn, "select 1 / %s::int", [0])
            raise CheckFailed("division by zero did not fail")
        except E.DivisionByZero:
            pass
        # And carry on: the same statements, on whichever server connection.
        pids = set()
        for i in range(AFTER_ERROR_ROUNDS):
            with rotate():
                with conn.transaction():
                    v, pid = q(conn, "select %s::int * 2, pg_backend_pid()", [i]).fetchone()
                    expect(v == 2 * i, f"after the error: {v}")
                    pids.add(pid)
                    v = q(conn, "select %s::int + 100 as aborted", [i]).fetchone()[0]
                    expect(v == i + 100, f"after the error: {v}")
            v = q(conn, "select 1 / %s::int", [1]).fetchone()[0]
            expect(v == 1, f"1 / 1 = {v}")
        check_backends(rep, pids, "statements after an error")

    def table_created_after_failed_prepare():
        # The first Parse of this text fails (no such table yet); once the table exists
        # the same text must work on every server connection.
        sql = f"select count(*) from {schema}.late"
        try:
            q(conn, sql)
            raise CheckFailed("select from a missing table did not fail")
        except E.UndefinedTable:
            pass
        q(conn, f"create table {schema}.late (i int)", prepare=False)
        for i in range(12):
            with rotate():
                with conn.transaction():
                    n = q(conn, sql).fetchone()[0]
            expect(n == 0, f"count {n}")

    def executemany_and_pipeline():
        if write:
            cur = conn.cursor()
            rows = [(2000 + i, f"many{i}", i) for i in range(500)]
            rep.queries += len(rows)
            cur.executemany(f"insert into {schema}.items values (%s, %s, %s)", rows)
            with rotate():
                with conn.transaction():
                    rows = [(3000 + i, f"tx{i}", i) for i in range(500)]
                    rep.queries += len(rows)
                    cur.executemany(f"insert into {schema}.items values (%s, %s, %s)", rows)
            rows = [(4000 + i, f"ret{i}", i) for i in range(50)]
            rep.queries += len(rows)
            cur.executemany(
                f"insert into {schema}.items values (%s, %s, %s) returning id", rows, returning=True
            )
            got = []
            while True:
                got.append(cur.fetchone()[0])
                if not cur.nextset():
                    break
            expect(got == [r[0] for r in rows], "executemany returning ids")
            # A failing batch inside a transaction leaves nothing behind.
            try:
                with conn.transaction():
                    rows = [(5000 + i, "dup", i) for i in range(10)] + [(5000, "dup", 0)]
                    cur.executemany(f"insert into {schema}.items values (%s, %s, %s)", rows)
                raise CheckFailed("a duplicate key in executemany did not fail")
            except E.UniqueViolation:
                pass
            n = q(conn, f"select count(*) from {schema}.items where id >= 2000").fetchone()[0]
            expect(n == 1050, f"{n} rows after executemany")
        # Pipeline mode: many statements before the first result is read.
        with conn.pipeline():
            curs = [q(conn, "select %s::int * 3", [i]) for i in range(100)]
        vals = [c.fetchone()[0] for c in curs]
        expect(vals == [3 * i for i in range(100)], "pipeline results")
        with conn.pipeline():
            with conn.transaction():
                curs = [q(conn, "select %s::int * 3", [i]) for i in range(20)]
        expect([c.fetchone()[0] for c in curs] == [3 * i for i in range(20)], "pipelined transaction")

    def copy_in_and_out():
        cur = conn.cursor()
        if write:
            rep.queries += 2
            with conn.transaction():
                with cur.copy(f"COPY {schema}.copy_in (id, name, amount, at) FROM STDIN") as cp:
                    for i in range(10000):
                        cp.write_row((i, f"row {i}\ttab", f"{i}.25", "2024-01-01 00:00:00+00"))
            with cur.copy(f"COPY {schema}.copy_in (id, name) FROM STDIN") as cp:
                cp.write("".join(f"{i}\tplain {i}\n" for i in range(10000, COPY_ROWS)))
            # A bad row: the COPY fails, the session goes on.
            try:
                with cur.copy(f"COPY {schema}.copy_in (id) FROM STDIN") as cp:
                    cp.write_row(("not a number",))
                raise CheckFailed("COPY of a bad row did not fail")
            except E.InvalidTextRepresentation:
                pass
            n = q(conn, f"select count(*) from {schema}.copy_in").fetchone()[0]
            expect(n == COPY_ROWS, f"{n} rows after COPY FROM STDIN")
        else:
            deadline = time.monotonic() + 20
            while True:
                try:
                    n = q(conn, f"select count(*) from {schema}.copy_in").fetchone()[0]
                except E.UndefinedTable:
                    n = None
                if n == COPY_ROWS:
                    break
                expect(time.monotonic() < deadline, f"replica has {n} of {COPY_ROWS} copied rows")
                time.sleep(0.2)
        rows, total = 0, 0
        rep.queries += 1
        with cur.copy(f"COPY (select id, name from {schema}.copy_in order by id) TO STDOUT") as cp:
            for row in cp.rows():
                rows += 1
                total += int(row[0])
                if int(row[0]) == 1:
                    expect(row[1] == "row 1\ttab", f"row 1 came out as {row!r}")
        expect(rows == COPY_ROWS, f"COPY TO STDOUT gave {rows} rows")
        expect(total == sum(range(COPY_ROWS)), "COPY TO STDOUT id sum")
        with rotate():
            with conn.transaction():
                buf = io.BytesIO()
                with cur.copy("COPY (select generate_series(1, 20000)) TO STDOUT") as cp:
                    for data in cp:
                        buf.write(data)
        expect(buf.getvalue().count(b"\n") == 20000, "COPY of generate_series")
        expect(q(conn, "select %s::int", [5]).fetchone() == (5,), "query after COPY")

    def statement_cache_eviction():
        for rnd in range(2):
            for k in range(0, DISTINCT_STATEMENTS, 20):
                with rotate():
                    for j in range(k, k + 20):
                        v = q(conn, f"select %s::int + {j}", [rnd]).fetchone()[0]
                        expect(v == rnd + j, f"statement {j}: {v}")

    def prepared_on_server():
        n = q(
            conn,
            "select count(*) from pg_prepared_statements "
            "where name like '\\_pg3\\_%%' or name like 'pgfleet\\_%%'",
        ).fetchone()[0]
        expect(n >= 1, "no driver-prepared statement on the server: nothing was prepared")

    async def concurrent():
        async def task(t):
            aconn = await psycopg.AsyncConnection.connect(
                args.dsn, autocommit=True, prepare_threshold=0, connect_timeout=30
            )
            try:
                for j in range(QUERIES_PER_TASK // 2):
                    if j % 10 == 0:
                        async with aconn.transaction():
                            cur = await aconn.execute("select %s::int + %s::int", [t, j])
                            expect((await cur.fetchone())[0] == t + j, "sum in transaction")
                            cur = await aconn.execute("select %s::text", [f"t{t}"])
                            expect((await cur.fetchone())[0] == f"t{t}", "text in transaction")
                    else:
                        cur = await aconn.execute("select %s::int + %s::int", [t, j])
                        expect((await cur.fetchone())[0] == t + j, f"task {t} query {j}")
                    rep.queries += 1
            finally:
                await aconn.close()

        await gather_all(task(t) for t in range(CONCURRENT_TASKS))

    def cleanup():
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK", prepare=False)

    run_check(rep, "simple queries", simple, cleanup)
    if write:
        run_check(rep, "schema setup", schema_setup, cleanup)
    run_check(rep, "SET outside transactions sticks", settings_stick, cleanup)
    run_check(rep, "prepared statements across transactions", prepared_across_transactions, cleanup)
    run_check(rep, "commit and rollback", commit_and_rollback, cleanup)
    run_check(rep, "error in transaction, rollback, continue", error_then_continue, cleanup)
    if write:
        run_check(rep, "table created after a failed prepare", table_created_after_failed_prepare, cleanup)
    run_check(rep, "executemany and pipeline", executemany_and_pipeline, cleanup)
    run_check(rep, "COPY in and out", copy_in_and_out, cleanup)
    run_check(rep, "statement cache eviction (DEALLOCATE)", statement_cache_eviction, cleanup)
    run_check(rep, "prepared statements on the server", prepared_on_server, cleanup)
    run_check(
        rep,
        f"{CONCURRENT_TASKS} concurrent connections",
        lambda: asyncio.run(asyncio.wait_for(concurrent(), 300)),
        cleanup,
    )
    for c in [conn, *holders]:
        c.close()


# --------------------------------------------------------------------------- asyncpg


async def asyncpg_checks(args, rep):
    import asyncpg
    from asyncpg import exceptions as E

    write = args.mode == "write"
    schema = "drv_asyncpg"

    async def connect(**kw):
        return await asyncpg.connect(args.dsn, timeout=30, command_timeout=60, **kw)

    started = time.monotonic()
    conn = await connect()
    holders = [await connect() for _ in range(3)]
    print(f"  ok    asyncpg: 4 connections ({time.monotonic() - started:.1f}s)", flush=True)
    turn = [0]

    @contextlib.asynccontextmanager
    async def rotate():
        k = turn[0] % (len(holders) + 1)
        turn[0] += 1
        for h in holders[:k]:
            await h.execute("BEGIN")
        try:
            yield
        finally:
            for h in holders[:k]:
                await h.execute("COMMIT")

    async def fetchval(sql, *a):
        rep.queries += 1
        return await conn.fetchval(sql, *a)

    async def fetchrow(sql, *a):
        rep.queries += 1
        return await conn.fetchrow(sql, *a)

    async def execute(sql, *a):
        rep.queries += 1
        return await conn.execute(sql, *a)

    async def simple():
        await execute("select 1; select 2")  # simple protocol
        expect(await fetchval("select 1") == 1, "select 1")
        expect(await fetchval("select $1::int + 1", 41) == 42, "parameterised")
        rec = await fetchval("select pg_is_in_recovery()")
        expect(rec == (not write), f"pg_is_in_recovery() = {rec} on the {args.mode} endpoint")
        row = await fetchrow("select current_user, current_database()")
        expect(tuple(row) == ("app", "app"), f"user and database: {row}")

    async def schema_setup():
        await execute(f"drop schema if exists {schema} cascade")
        await execute(f"create schema {schema}")
        await execute(
            f"create table {schema}.items (id int primary key, name text not null, qty int not null)"
        )
        await execute(
            f"create table {schema}.copy_in (id int primary key, name text, amount numeric, at timestamptz)"
        )

    async def settings_stick():
        await execute(f"SET search_path TO {schema}, public")
        await execute("SET application_name TO 'drv-asyncpg'")
        pids = set()
        for i in range(SETTINGS_ROUNDS):
            async with rotate():
                async with conn.transaction():
                    row = await fetchrow(
                        "select current_setting('search_path'), current_setting('application_name'), pg_backend_pid()"
                    )
            expect(row[0] == f"{schema}, public", f"transaction {i}: search_path = {row[0]!r}")
            expect(row[1] == "drv-asyncpg", f"transaction {i}: application_name = {row[1]!r}")
            pids.add(row[2])
            sp = await fetchval("select current_setting('search_path')")
            expect(sp == f"{schema}, public", f"autocommit {i}: search_path = {sp!r}")
        check_backends(rep, pids, "SET search_path/application_name")

    async def prepared_across_transactions():
        stmt = await conn.prepare("select $1::int * 3")
        pids = set()
        for i in range(PREPARED_ROUNDS):
            async with rotate():
                async with conn.transaction():
                    row = await fetchrow("select $1::int * 2, pg_backend_pid()", i)
                    expect(row[0] == 2 * i, f"select {i} * 2 = {row[0]}")
                    pids.add(row[1])
                    rep.queries += 1
                    expect(await stmt.fetchval(i) == 3 * i, "explicitly prepared statement")
                    if write:
                        await execute(
                            f"insert into {schema}.items (id, name, qty) values ($1, $2, $3)",
                            i,
                            f"item{i}",
                            i,
                        )
                        got = await fetchval(f"select name from {schema}.items where id = $1", i)
                        expect(got == f"item{i}", f"read back item {i}: {got}")
            rep.queries += 1
            expect(await stmt.fetchval(i + 1) == 3 * (i + 1), "explicitly prepared, autocommit")
        if write:
            n = await fetchval(f"select count(*) from {schema}.items")
            expect(n == PREPARED_ROUNDS, f"{n} items after {PREPARED_ROUNDS} committed inserts")
        check_backends(rep, pids, "prepared statements across transactions")

    class Rollback(Exception):
        pass

    async def commit_and_rollback():
        if write:
            async with conn.transaction():
                await execute(f"insert into {schema}.items values ($1, $2, $3)", 1000, "committed", 1)
            try:
                async with rotate():
                    async with conn.transaction():
                        await execute(f"insert into {schema}.items values ($1, $2, $3)", 1001, "rb", 1)
                        raise Rollback()
            except Rollback:
                pass
            async with conn.transaction():
                await execute(f"insert into {schema}.items values ($1, $2, $3)", 1002, "outer", 1)
                try:
                    async with conn.transaction():  # a savepoint
                        await execute(f"insert into {schema}.items values ($1, $2, $3)", 1003, "in", 1)
                        raise Rollback()
                except Rollback:
                    pass
            ids = [r[0] for r in await conn.fetch(f"select id from {schema}.items where id >= 1000 order by id")]
            expect(ids == [1000, 1002], f"ids after commit/rollback/savepoint: {ids}")
        else:
            try:
                async with conn.transaction(readonly=True):
                    expect(await fetchval("select $1::int", 7) == 7, "read in transaction")
                    raise Rollback()
            except Rollback:
                pass
        expect(not conn.is_in_transaction(), "still in a transaction")

    async def error_then_continue():
        try:
            async with conn.transaction():
                await fetchval("select $1::int", 1)
                await fetchval("select 1 / $1::int", 0)
            raise CheckFailed("division by zero did not fail")
        except E.DivisionByZeroError:
            pass
        stmt = await conn.prepare("select $1::int * 5")
        await execute("BEGIN")
        await fetchrow("select $1::int * 2, pg_backend_pid()", 1)
        try:
            if write:
                await execute(f"insert into {schema}.items values ($1, $2, $3)", 1000, "dup", 1)
            else:
                await fetchval("select 1 / $1::int", 0)
            raise CheckFailed("the failing statement did not fail")
        except (E.UniqueViolationError, E.DivisionByZeroError):
            pass
        for what, call in [
            ("cached statement", lambda: fetchrow("select $1::int * 2, pg_backend_pid()", 1)),
            ("explicitly prepared statement", lambda: stmt.fetchval(1)),
            ("new statement", lambda: fetchval("select $1::int + 100 as aborted", 1)),
        ]:
            try:
                await call()
                raise CheckFailed(f"{what} ran in an aborted transaction")
            except E.InFailedSQLTransactionError:
                pass
        await execute("ROLLBACK")
        try:
            await fetchval("select 1 / $1::int", 0)
            raise CheckFailed("division by zero did not fail")
        except E.DivisionByZeroError:
            pass
        pids = set()
        for i in range(AFTER_ERROR_ROUNDS):
            async with rotate():
                async with conn.transaction():
                    row = await fetchrow("select $1::int * 2, pg_backend_pid()", i)
                    expect(row[0] == 2 * i, f"after the error: {row[0]}")
                    pids.add(row[1])
                    v = await fetchval("select $1::int + 100 as aborted", i)
                    expect(v == i + 100, f"after the error: {v}")
                    rep.queries += 1
                    expect(await stmt.fetchval(i) == 5 * i, "explicitly prepared after the error")
        check_backends(rep, pids, "statements after an error")

    async def table_created_after_failed_prepare():
        sql = f"select count(*) from {schema}.late"
        try:
            await fetchval(sql)
            raise CheckFailed("select from a missing table did not fail")
        except E.UndefinedTableError:
            pass
        await execute(f"create table {schema}.late (i int)")
        for i in range(12):
            async with rotate():
                async with conn.transaction():
                    n = await fetchval(sql)
            expect(n == 0, f"count {n}")

    async def executemany():
        if write:
            rows = [(2000 + i, f"many{i}", i) for i in range(500)]
            rep.queries += len(rows)
            await conn.executemany(f"insert into {schema}.items values ($1, $2, $3)", rows)
            async with rotate():
                async with conn.transaction():
                    rows = [(3000 + i, f"tx{i}", i) for i in range(500)]
                    rep.queries += len(rows)
                    await conn.executemany(f"insert into {schema}.items values ($1, $2, $3)", rows)
            try:
                rows = [(5000 + i, "dup", i) for i in range(10)] + [(5000, "dup", 0)]
                await conn.executemany(f"insert into {schema}.items values ($1, $2, $3)", rows)
                raise CheckFailed("a duplicate key in executemany did not fail")
            except E.UniqueViolationError:
                pass
            n = await fetchval(f"select count(*) from {schema}.items where id >= 2000")
            expect(n == 1000, f"{n} rows after executemany (the failed batch must leave none)")
        else:
            # executemany of a read: each set of arguments runs the statement once.
            await conn.executemany("select $1::int", [(i,) for i in range(200)])
            rep.queries += 200
        rows = await conn.fetch("select generate_series(1, $1::int) as n", 1000)
        expect(len(rows) == 1000, "fetch of 1000 rows")

    async def copy_in_and_out():
        if write:
            import datetime

            at = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
            async with rotate():
                async with conn.transaction():
                    rep.queries += 1
                    await conn.copy_records_to_table(
                        "copy_in",
                        schema_name=schema,
                        columns=["id", "name", "amount", "at"],
                        records=((i, f"row {i}\ttab", i + 0.25, at) for i in range(10000)),
                    )
            rep.queries += 1
            await conn.copy_records_to_table(
                "copy_in",
                schema_name=schema,
                columns=["id", "name"],
                records=[(i, f"plain {i}") for i in range(10000, COPY_ROWS)],
            )
            src = io.BytesIO("".join(f"{i}\tfrom file\n" for i in range(COPY_ROWS, COPY_ROWS + 10)).encode())
            rep.queries += 1
            await conn.copy_to_table("copy_in", schema_name=schema, columns=["id", "name"], source=src)
            try:
                await conn.copy_to_table(
                    "copy_in", schema_name=schema, columns=["id"], source=io.BytesIO(b"not a number\n")
                )
                raise CheckFailed("COPY of a bad row did not fail")
            except E.InvalidTextRepresentationError:
                pass
            await execute(f"delete from {schema}.copy_in where id >= $1", COPY_ROWS)
            n = await fetchval(f"select count(*) from {schema}.copy_in")
            expect(n == COPY_ROWS, f"{n} rows after COPY FROM STDIN")
        else:
            deadline = time.monotonic() + 20
            while True:
                try:
                    n = await fetchval(f"select count(*) from {schema}.copy_in")
                except E.UndefinedTableError:
                    n = None
                if n == COPY_ROWS:
                    break
                expect(time.monotonic() < deadline, f"replica has {n} of {COPY_ROWS} copied rows")
                await asyncio.sleep(0.2)
        out = io.BytesIO()
        rep.queries += 1
        await conn.copy_from_query(
            f"select id, name from {schema}.copy_in where id >= $1 order by id", 0, output=out, format="csv"
        )
        lines = out.getvalue().decode().splitlines()
        expect(len(lines) == COPY_ROWS, f"copy_from_query gave {len(lines)} lines")
        expect(lines[1] == "1,row 1\ttab", f"line 1 came out as {lines[1]!r}")
        out = io.BytesIO()
        async with rotate():
            async with conn.transaction():
                rep.queries += 1
                await conn.copy_from_table("copy_in", schema_name=schema, columns=["id"], output=out)
        expect(out.getvalue().count(b"\n") == COPY_ROWS, "copy_from_table rows")
        expect(await fetchval("select $1::int", 5) == 5, "query after COPY")

    async def statement_cache_eviction():
        for rnd in range(2):
            for k in range(0, DISTINCT_STATEMENTS, 20):
                async with rotate():
                    for j in range(k, k + 20):
                        v = await fetchval(f"select $1::int + {j}", rnd)
                        expect(v == rnd + j, f"statement {j}: {v}")

    async def prepared_on_server():
        n = await fetchval(
            "select count(*) from pg_prepared_statements "
            "where name like '\\_\\_asyncpg\\_stmt%' or name like 'pgfleet\\_%'"
        )
        expect(n >= 1, "no driver-prepared statement on the server: nothing was prepared")

    async def concurrent():
        async def task(t):
            c = await connect()
            try:
                for j in range(QUERIES_PER_TASK):
                    if j % 10 == 0:
                        async with c.transaction():
                            expect(await c.fetchval("select $1::int + $2::int", t, j) == t + j, "sum")
                            expect(await c.fetchval("select $1::text", f"t{t}") == f"t{t}", "text")
                    else:
                        v = await c.fetchval("select $1::int + $2::int", t, j)
                        expect(v == t + j, f"task {t} query {j}: {v}")
                    rep.queries += 1
            finally:
                await c.close()

        await gather_all(task(t) for t in range(CONCURRENT_TASKS))

    async def pool():
        # asyncpg's own pool: startup settings, and the reset query (RESET ALL, ...) it
        # runs on every release.
        async with asyncpg.create_pool(
            args.dsn,
            min_size=2,
            max_size=10,
            timeout=30,
            command_timeout=60,
            server_settings={"application_name": "drv-asyncpg-pool", "search_path": f"{schema}, public"},
        ) as p:

            async def task(t):
                for j in range(20):
                    async with p.acquire() as c:
                        async with c.transaction():
                            row = await c.fetchrow(
                                "select $1::int + $2::int, current_setting('application_name'), "
                                "current_setting('search_path')",
                                t,
                                j,
                            )
                        rep.queries += 1
                        expect(row[0] == t + j, f"pool task {t} query {j}: {row[0]}")
                        expect(row[1] == "drv-asyncpg-pool", f"pool: application_name = {row[1]!r}")
                        expect(row[2] == f"{schema}, public", f"pool: search_path = {row[2]!r}")

            await gather_all(task(t) for t in range(CONCURRENT_TASKS))

    async def cleanup():
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")

    await run_check_async(rep, "simple queries", simple, cleanup)
    if write:
        await run_check_async(rep, "schema setup", schema_setup, cleanup)
    await run_check_async(rep, "SET outside transactions sticks", settings_stick, cleanup)
    await run_check_async(rep, "prepared statements across transactions", prepared_across_transactions, cleanup)
    await run_check_async(rep, "commit and rollback", commit_and_rollback, cleanup)
    await run_check_async(rep, "error in transaction, rollback, continue", error_then_continue, cleanup)
    if write:
        await run_check_async(rep, "table created after a failed prepare", table_created_after_failed_prepare, cleanup)
    await run_check_async(rep, "executemany", executemany, cleanup)
    await run_check_async(rep, "COPY in and out", copy_in_and_out, cleanup)
    await run_check_async(rep, "statement cache eviction (Close)", statement_cache_eviction, cleanup)
    await run_check_async(rep, "prepared statements on the server", prepared_on_server, cleanup)
    await run_check_async(rep, f"{CONCURRENT_TASKS} concurrent connections", concurrent, cleanup, limit=300)
    await run_check_async(rep, "asyncpg pool with server_settings", pool, cleanup, limit=300)
    for c in [conn, *holders]:
        await c.close(timeout=10)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default=os.environ.get("PGFLEET_DSN"), help="libpq URL (or $PGFLEET_DSN)")
    ap.add_argument("--mode", choices=["write", "read"], default="write")
    ap.add_argument("--pool-mode", choices=["session", "transaction"], default=None)
    ap.add_argument("--driver", choices=["psycopg", "asyncpg", "all"], default="all")
    ap.add_argument("--timeout", type=float, default=540, help="seconds for the whole run")
    args = ap.parse_args()
    if not args.dsn:
        ap.error("--dsn or PGFLEET_DSN is required")

    missing = []
    for module in ["psycopg", "asyncpg"]:
        if args.driver in (module, "all"):
            try:
                __import__(module)
            except ImportError as e:
                missing.append(f"{module} ({e})")
    if missing:
        print(
            "missing Python packages: " + ", ".join(missing) + "; run .ci/run or "
            "`pip install -r tests/drivers/python/requirements.txt`",
            file=sys.stderr,
        )
        sys.exit(2)

    import threading

    def watchdog():
        print(
            f"TIMEOUT: the run took longer than {args.timeout:.0f}s; stuck in {CURRENT['check']}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(3)

    timer = threading.Timer(args.timeout, watchdog)
    timer.daemon = True
    timer.start()

    reports = []
    if args.driver in ("psycopg", "all"):
        rep = Report("psycopg", args)
        reports.append(rep)
        try:
            psycopg_checks(args, rep)
        except Exception as exc:  # noqa: BLE001 - connecting failed
            rep.record("connect", exc)
        rep.finished = time.monotonic()
    if args.driver in ("asyncpg", "all"):
        rep = Report("asyncpg", args)
        reports.append(rep)
        try:
            asyncio.run(asyncpg_checks(args, rep))
        except Exception as exc:  # noqa: BLE001
            rep.record("connect", exc)
        rep.finished = time.monotonic()
    timer.cancel()
    for rep in reports:
        print(rep.summary(), flush=True)
    sys.exit(1 if any(r.failed for r in reports) else 0)


if __name__ == "__main__":
    main()
