#!/usr/bin/env node
// node-postgres checks for pgfleet, against one endpoint:
//
//   node check.js --dsn postgresql://app:app@127.0.0.1:6433/app --mode write
//   node check.js --dsn ... --mode read --pool-mode transaction
//
// Named queries ({name, text, values}: Parse once per connection, then Bind/Execute)
// run many times across transactions, plain queries, a transaction with an error and
// a rollback, SET outside transactions, and concurrent clients through pg.Pool.
// `--mode write` (the writer endpoint) creates the schema drv_node; `--mode read` only
// reads. `--pool-mode transaction` also checks that one connection's transactions ran
// on several server connections; `session` that they ran on one.
//
// Prints what failed (marking prepared-statement errors), then one summary line;
// exits 1 if a check failed, 3 if the run took longer than --timeout seconds.
'use strict';

let pg;
try {
  pg = require('pg');
} catch (e) {
  console.error(
    `missing node-postgres (${e.message.split('\n')[0]}); run .ci/run or ` +
      '`(cd tests/drivers/node && npm ci)`'
  );
  process.exit(2);
}

const CONCURRENT = 20;
const QUERIES_PER_WORKER = 200;
const SCHEMA = 'drv_node';
// Transactions per sequential check (each on a different server connection in turn).
const SETTINGS_ROUNDS = 16;
const PREPARED_ROUNDS = 40;
const AFTER_ERROR_ROUNDS = 24;

function parseArgs(argv) {
  const args = {
    dsn: process.env.PGFLEET_DSN,
    mode: 'write',
    poolMode: null,
    timeout: 540,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--dsn') args.dsn = value;
    else if (flag === '--mode') args.mode = value;
    else if (flag === '--pool-mode') args.poolMode = value;
    else if (flag === '--timeout') args.timeout = Number(value);
    else throw new Error(`unknown option ${flag}`);
  }
  if (!args.dsn) throw new Error('--dsn or PGFLEET_DSN is required');
  if (!['write', 'read'].includes(args.mode)) throw new Error('--mode is write or read');
  return args;
}

class CheckFailed extends Error {}

function expect(cond, what) {
  if (!cond) throw new CheckFailed(what);
}

async function expectError(code, what, fn) {
  try {
    await fn();
  } catch (e) {
    if (e.code === code) return;
    throw e;
  }
  throw new CheckFailed(`${what} did not fail with ${code}`);
}

function statementError(text) {
  const t = text.toLowerCase();
  return t.includes('prepared statement') && (t.includes('does not exist') || t.includes('already exists'));
}

const args = parseArgs(process.argv.slice(2));
const write = args.mode === 'write';
const started = Date.now();
const passed = [];
const failed = [];
const backends = new Set();
let queries = 0;
let current = 'start-up';

const watchdog = setTimeout(() => {
  console.error(`TIMEOUT: the run took longer than ${args.timeout}s; stuck in ${current}`);
  process.exit(3);
}, args.timeout * 1000);
watchdog.unref();

function record(name, e) {
  let text = `${e.constructor.name}: ${String(e.message).split('\n')[0]}`;
  if (e.code) text += ` [SQLSTATE ${e.code}]`;
  const frame = String(e.stack || '')
    .split('\n')
    .find((l) => l.includes('check.js'));
  if (frame) text += ` (${frame.trim()})`;
  const mark = statementError(text) ? 'PREPARED STATEMENT ERROR: ' : '';
  failed.push(name);
  console.error(
    `FAIL node-postgres [${args.mode}, ${args.poolMode || 'any'} mode] ${name}: ${mark}${text}`
  );
}

// After a failed check: leave no transaction open for the next one.
let cleanup = async () => {};

async function check(name, fn) {
  current = name;
  const t0 = Date.now();
  try {
    await fn();
    passed.push(name);
    console.log(`  ok    ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  } catch (e) {
    record(name, e);
    await cleanup().catch(() => {});
    console.log(`  FAIL  ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  }
}

function checkBackends(pids, what) {
  for (const p of pids) backends.add(p);
  if (args.poolMode === 'transaction') {
    expect(pids.size >= 2, `${what}: every transaction ran on server backend(s) ${[...pids]}; expected several`);
  } else if (args.poolMode === 'session') {
    expect(pids.size === 1, `${what}: session mode used backends ${[...pids]}`);
  }
}

const clientConfig = {
  connectionString: args.dsn,
  connectionTimeoutMillis: 30000,
  query_timeout: 60000,
};

async function connect() {
  const c = new pg.Client(clientConfig);
  // A broken connection is reported by the query that meets it.
  c.on('error', () => {});
  await c.connect();
  return c;
}

async function main() {
  let client;
  const holders = [];
  try {
    client = await connect();
    for (let i = 0; i < 3; i++) holders.push(await connect());
  } catch (e) {
    record('connect', e);
    return;
  }
  cleanup = () => client.query('ROLLBACK');
  const q = async (config, values) => {
    queries += 1;
    return client.query(config, values);
  };
  let turn = 0;
  // Holds 0..3 other server connections in open transactions while `fn` runs, so that
  // (in transaction mode) the client's transactions land on different connections.
  const rotate = async (fn) => {
    const k = turn++ % (holders.length + 1);
    const held = holders.slice(0, k);
    for (const h of held) await h.query('BEGIN');
    try {
      return await fn();
    } finally {
      for (const h of held) await h.query('COMMIT');
    }
  };
  const txn = async (fn) => {
    await q('BEGIN');
    try {
      const r = await fn();
      await q('COMMIT');
      return r;
    } catch (e) {
      await q('ROLLBACK');
      throw e;
    }
  };

  const DOUBLE = 'select $1::int * 2 as v, pg_backend_pid() as pid';

  await check('simple queries', async () => {
    const res = await q("select 1 as one; select 'two' as two");
    expect(Array.isArray(res) && res.length === 2, 'two results of a multi-statement query');
    expect(res[0].rows[0].one === 1 && res[1].rows[0].two === 'two', 'multi-statement results');
    const r = await q('select $1::int + 1 as v', [41]);
    expect(r.rows[0].v === 42, 'unnamed parameterised query');
    const rec = (await q('select pg_is_in_recovery() as r')).rows[0].r;
    expect(rec === !write, `pg_is_in_recovery() = ${rec} on the ${args.mode} endpoint`);
    const who = (await q('select current_user as u, current_database() as d')).rows[0];
    expect(who.u === 'app' && who.d === 'app', 'user and database');
  });

  if (write) {
    await check('schema setup', async () => {
      await q(`drop schema if exists ${SCHEMA} cascade`);
      await q(`create schema ${SCHEMA}`);
      await q(`create table ${SCHEMA}.items (id int primary key, name text not null, qty int not null)`);
    });
  }

  await check('SET outside transactions sticks', async () => {
    await q(`SET search_path TO ${SCHEMA}, public`);
    await q("SET application_name TO 'drv-node'");
    const pids = new Set();
    const settings = {
      name: 'settings',
      text: "select current_setting('search_path') as sp, current_setting('application_name') as app, pg_backend_pid() as pid",
    };
    for (let i = 0; i < SETTINGS_ROUNDS; i++) {
      const row = await rotate(() => txn(async () => (await q(settings)).rows[0]));
      expect(row.sp === `${SCHEMA}, public`, `transaction ${i}: search_path = ${row.sp}`);
      expect(row.app === 'drv-node', `transaction ${i}: application_name = ${row.app}`);
      pids.add(row.pid);
      const sp = (await q({ name: 'sp', text: "select current_setting('search_path') as sp" })).rows[0].sp;
      expect(sp === `${SCHEMA}, public`, `autocommit ${i}: search_path = ${sp}`);
    }
    checkBackends(pids, 'SET search_path/application_name');
  });

  await check('named queries across transactions', async () => {
    const pids = new Set();
    for (let i = 0; i < PREPARED_ROUNDS; i++) {
      await rotate(() =>
        txn(async () => {
          const row = (await q({ name: 'double', text: DOUBLE, values: [i] })).rows[0];
          expect(row.v === 2 * i, `double ${i} = ${row.v}`);
          pids.add(row.pid);
          if (write) {
            await q({
              name: 'insert',
              text: `insert into ${SCHEMA}.items (id, name, qty) values ($1, $2, $3)`,
              values: [i, `item${i}`, i],
            });
            const got = await q({ name: 'get', text: `select name from ${SCHEMA}.items where id = $1`, values: [i] });
            expect(got.rows[0].name === `item${i}`, `read back item ${i}`);
          } else {
            const got = await q({ name: 'pgclass', text: 'select count(*)::int as n from pg_class where oid = $1::oid', values: [1259] });
            expect(got.rows[0].n === 1, 'pg_class lookup');
          }
        })
      );
      // Outside transaction blocks too.
      const r = await q({ name: 'concat', text: "select $1::text || 'x' as v", values: [String(i)] });
      expect(r.rows[0].v === `${i}x`, 'named query in autocommit');
    }
    if (write) {
      const n = (await q(`select count(*)::int as n from ${SCHEMA}.items`)).rows[0].n;
      expect(n === PREPARED_ROUNDS, `${n} items after ${PREPARED_ROUNDS} committed inserts`);
    }
    checkBackends(pids, 'named queries across transactions');
  });

  await check('transaction with an error, rollback, continue', async () => {
    await q('BEGIN');
    await q({ name: 'double', text: DOUBLE, values: [1] });
    if (write) {
      await expectError('23505', 'duplicate insert', () =>
        q({ name: 'insert', text: `insert into ${SCHEMA}.items (id, name, qty) values ($1, $2, $3)`, values: [1, 'dup', 1] })
      );
    } else {
      await expectError('22012', 'division by zero', () =>
        q({ name: 'divide', text: 'select 1 / $1::int as v', values: [0] })
      );
    }
    // In the aborted transaction: a statement this connection prepared before, and a new one.
    await expectError('25P02', 'a prepared query in an aborted transaction', () =>
      q({ name: 'double', text: DOUBLE, values: [2] })
    );
    await expectError('25P02', 'a new named query in an aborted transaction', () =>
      q({ name: 'fresh', text: 'select $1::int + 100 as v', values: [2] })
    );
    await q('ROLLBACK');
    await expectError('22012', 'division by zero outside a transaction', () =>
      q({ name: 'divide', text: 'select 1 / $1::int as v', values: [0] })
    );
    const pids = new Set();
    for (let i = 0; i < AFTER_ERROR_ROUNDS; i++) {
      await rotate(() =>
        txn(async () => {
          const row = (await q({ name: 'double', text: DOUBLE, values: [i] })).rows[0];
          expect(row.v === 2 * i, `after the error: ${row.v}`);
          pids.add(row.pid);
          const f = (await q({ name: 'fresh', text: 'select $1::int + 100 as v', values: [i] })).rows[0];
          expect(f.v === i + 100, `after the error: ${f.v}`);
        })
      );
      const d = (await q({ name: 'divide', text: 'select 1 / $1::int as v', values: [1] })).rows[0];
      expect(d.v === 1, `1 / 1 = ${d.v}`);
    }
    checkBackends(pids, 'named queries after an error');
  });

  if (write) {
    await check('table created after a failed prepare', async () => {
      const late = { name: 'late', text: `select count(*)::int as n from ${SCHEMA}.late` };
      await expectError('42P01', 'select from a missing table', () => q(late));
      await q(`create table ${SCHEMA}.late (i int)`);
      for (let i = 0; i < 12; i++) {
        const n = await rotate(() => txn(async () => (await q(late)).rows[0].n));
        expect(n === 0, `count ${n}`);
      }
    });
  }

  await check('prepared statements on the server', async () => {
    const r = await q(
      "select count(*)::int as n from pg_prepared_statements where name in ('double', 'settings') or name like 'pgfleet\\_%'"
    );
    expect(r.rows[0].n >= 1, 'no named statement on the server: nothing was prepared');
  });

  await check(`pg.Pool with ${CONCURRENT} concurrent clients`, async () => {
    const pool = new pg.Pool({ ...clientConfig, max: CONCURRENT, idleTimeoutMillis: 5000 });
    pool.on('error', () => {});
    const sum = 'select $1::int + $2::int as v';
    const worker = async (t) => {
      for (let j = 0; j < QUERIES_PER_WORKER; j++) {
        if (j % 10 === 0) {
          const c = await pool.connect();
          try {
            await c.query('BEGIN');
            const a = await c.query({ name: 'sum', text: sum, values: [t, j] });
            const b = await c.query({ name: 'text', text: 'select $1::text as v', values: [`t${t}`] });
            await c.query('COMMIT');
            expect(a.rows[0].v === t + j && b.rows[0].v === `t${t}`, `worker ${t} transaction ${j}`);
            c.release();
          } catch (e) {
            c.release(e);
            throw e;
          }
        } else {
          const r = await pool.query({ name: 'sum', text: sum, values: [t, j] });
          expect(r.rows[0].v === t + j, `worker ${t} query ${j}: ${r.rows[0].v}`);
        }
        queries += 1;
      }
    };
    try {
      await Promise.all(Array.from({ length: CONCURRENT }, (_, t) => worker(t)));
    } finally {
      await pool.end();
    }
  });

  for (const c of [client, ...holders]) await c.end();
}

main()
  .catch((e) => record('unexpected', e))
  .finally(() => {
    clearTimeout(watchdog);
    const took = ((Date.now() - started) / 1000).toFixed(1);
    const total = passed.length + failed.length;
    const status = failed.length ? `FAILED ${failed.length}/${total}` : 'ok';
    const extra = failed.length ? `; failed: ${failed.join(', ')}` : '';
    console.log(
      `node-postgres: ${status} - ${total} checks, ${queries} queries, ${backends.size} server backends seen, ` +
        `${took}s (${args.mode} endpoint)${extra}`
    );
    process.exitCode = failed.length ? 1 : 0;
  });
