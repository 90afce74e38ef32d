//! Transaction pooling: binding per transaction, balancing per transaction, errors,
//! disconnects, COPY, settings that follow the client, timeouts and cancels.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;

const TXN: &str = "pool_mode = \"transaction\"";

async fn pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_over_four_connections_per_replica() {
    let s = setup(2, "", "", &format!("{TXN}\ndefault_pool_size = 4")).await;
    blocking(|| s.cluster.pgbench_init(1)).unwrap();
    let reader = s.addr("reader");
    for mode in ["simple", "extended"] {
        let args = ["-S", "-M", mode, "-c", "64", "-j", "2", "-t", "100"];
        let out = blocking(|| pgbench_finish(pgbench_spawn(reader, &args)));
        assert!(out.contains("actually processed: 6400/6400"), "{out}");
    }
    let sql = "select count(*) from pg_stat_activity where usename = 'app'";
    for node in [1, 2] {
        let n: usize = blocking(|| s.cluster.psql(node, sql))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            n <= 4,
            "node {node} has {n} server connections for a pool of 4"
        );
    }
    let main = s.main();
    let xacts: Vec<u64> = main
        .pools
        .all()
        .iter()
        .map(|p| p.stats.snapshot().xacts)
        .collect();
    println!("transactions per pool: {xacts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_s_transactions_spread_over_the_replicas() {
    let s = setup(2, "", "", TXN).await;
    let c = app(s.addr("reader")).await;
    let mut ports = HashMap::new();
    for _ in 0..20 {
        // One round trip, one transaction (query_one would be two: prepare, execute).
        let rows = c
            .simple_query("select pg_is_in_recovery()::text, inet_server_port()::text")
            .await
            .unwrap();
        let Some(row) = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        }) else {
            panic!("no row")
        };
        assert_eq!(row.get(0), Some("true"));
        *ports.entry(row.get(1).unwrap().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert!(ports.values().all(|&n| n >= 8), "{ports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_keeps_its_connection_through_errors() {
    let s = setup(1, "", "", &format!("{TXN}\ndefault_pool_size = 2")).await;
    let c = app(s.addr("writer")).await;
    c.batch_execute("create table t(i int)").await.unwrap();
    c.batch_execute("begin").await.unwrap();
    let first = pid(&c).await;
    c.batch_execute("create temp table tt(i int) on commit drop; insert into t values (1)")
        .await
        .unwrap();
    assert_eq!(pid(&c).await, first);
    let e = c.batch_execute("select 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&e), "22012");
    // Status 'E': still bound; the server refuses until ROLLBACK.
    let e = c.batch_execute("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    c.batch_execute("rollback").await.unwrap();
    let n: i64 = c
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // A transaction block with the extended protocol, and a pipelined batch.
    let tx = {
        let mut c = c;
        let tx = c.transaction().await.unwrap();
        let a: i32 = tx
            .query_one("select pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        tx.execute("insert into t values ($1)", &[&5i32])
            .await
            .unwrap();
        let b: i32 = tx
            .query_one("select pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(a, b);
        tx.commit().await.unwrap();
        c
    };
    let (a, b, c3) = tokio::join!(
        tx.query_one("select count(*) from t", &[]),
        tx.query_one("select 2", &[]),
        tx.query_one("select 3", &[])
    );
    assert_eq!(a.unwrap().get::<_, i64>(0), 1);
    assert_eq!(b.unwrap().get::<_, i32>(0), 2);
    assert_eq!(c3.unwrap().get::<_, i32>(0), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_transaction_is_rolled_back() {
    let s = setup(1, "", "", &format!("{TXN}\ndefault_pool_size = 1")).await;
    let addr = s.addr("writer");
    let c = app(addr).await;
    c.batch_execute("create table left_open(i int)")
        .await
        .unwrap();
    c.batch_execute("begin; insert into left_open values (1)")
        .await
        .unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = app(addr).await;
    let n: i64 = c
        .query_one("select count(*) from left_open", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let status: String = c
        .query_one("select coalesce(max(state), 'none') from pg_stat_activity where usename = 'app' and state like 'idle in%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    use futures_util::{SinkExt, StreamExt};
    let s = setup(1, "", "", &format!("{TXN}\ndefault_pool_size = 1")).await;
    let c = app(s.addr("writer")).await;
    c.batch_execute("create table c(i int, t text)")
        .await
        .unwrap();
    let sink = c.copy_in("copy c from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    for i in 0..1000 {
        sink.feed(bytes::Bytes::from(format!("{i}\trow {i}\n")))
            .await
            .unwrap();
    }
    assert_eq!(sink.as_mut().finish().await.unwrap(), 1000);
    let stream = c
        .copy_out("copy (select * from c order by i) to stdout")
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(text).unwrap();
    assert_eq!(text.lines().count(), 1000);
    assert!(text.starts_with("0\trow 0\n"));
    // A COPY that fails in the middle leaves the connection usable for the next one.
    let bad = c.copy_in("copy c from stdin").await.unwrap();
    futures_util::pin_mut!(bad);
    bad.send(bytes::Bytes::from_static(b"not a number\tx\n"))
        .await
        .unwrap();
    assert!(bad.as_mut().finish().await.is_err());
    let n: i64 = c
        .query_one("select count(*) from c", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_the_client_and_stay_with_it() {
    let s = setup(1, "", "", &format!("{TXN}\ndefault_pool_size = 2")).await;
    let addr = s.addr("reader");
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("app")
        .application_name("mine")
        .options("-c statement_timeout=4321");
    let (a, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let b = app(addr).await;
    a.batch_execute("SET search_path TO pg_catalog, public")
        .await
        .unwrap();
    a.batch_execute("SET DateStyle = 'German'").await.unwrap();
    let show = "select current_setting('application_name'), current_setting('statement_timeout'), current_setting('search_path'), current_setting('DateStyle')";
    let mut a_pids = HashSet::new();
    let mut b_pids = HashSet::new();
    for _ in 0..6 {
        // Interleave the two clients so their transactions swap server connections.
        let row = a.query_one(show, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "mine");
        assert_eq!(row.get::<_, String>(1), "4321ms");
        assert_eq!(row.get::<_, String>(2), "pg_catalog, public");
        assert_eq!(row.get::<_, String>(3), "German, DMY");
        a_pids.insert(pid(&a).await);
        let row = b.query_one(show, &[]).await.unwrap();
        assert_ne!(row.get::<_, String>(0), "mine");
        assert_eq!(row.get::<_, String>(1), "0");
        assert_eq!(row.get::<_, String>(2), "\"$user\", public");
        assert_eq!(row.get::<_, String>(3), "ISO, MDY");
        b_pids.insert(pid(&b).await);
    }
    assert!(
        a_pids.intersection(&b_pids).count() > 0,
        "the clients did share connections: {a_pids:?} {b_pids:?}"
    );
    a.batch_execute("RESET search_path").await.unwrap();
    let row = a.query_one(show, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(2), "\"$user\", public");
}

/// Sends `sql` as a simple query on a raw session and returns everything up to the
/// connection's end, within 5 s.
async fn until_closed(sock: &mut tokio::net::TcpStream, sql: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if let Some(sql) = sql {
        let mut out = bytes::BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut out).unwrap();
        sock.write_all(&out).await.unwrap();
    }
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut got))
        .await
        .expect("closed within 5 s")
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_have_their_own_errors() {
    timeouts_in(TXN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_in_session_mode_too() {
    timeouts_in("pool_mode = \"session\"").await;
}

async fn timeouts_in(mode: &str) {
    let pool = format!("{mode}\nclient_idle_timeout = \"700ms\"\nidle_transaction_timeout = \"700ms\"\nquery_timeout = \"1s\"");
    let s = setup(1, "auth_type = \"trust\"", "", &pool).await;
    let addr = s.addr("reader");
    // query_timeout: 57014, and the connection ends.
    let mut sock = raw_session(addr).await;
    let started = Instant::now();
    let got = until_closed(&mut sock, Some("select pg_sleep(5)")).await;
    assert!(
        got.contains("57014") && got.contains("query_timeout"),
        "{got}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // idle_transaction_timeout: 25P03.
    let mut sock = raw_session(addr).await;
    let started = Instant::now();
    read_until_sent(&mut sock, "begin").await;
    let got = until_closed(&mut sock, None).await;
    assert!(
        got.contains("25P03") && got.contains("idle_transaction_timeout"),
        "{got}"
    );
    assert!(started.elapsed() >= Duration::from_millis(700));
    // client_idle_timeout: 57P05.
    let mut sock = raw_session(addr).await;
    read_until_sent(&mut sock, "select 1").await;
    let got = until_closed(&mut sock, None).await;
    assert!(
        got.contains("57P05") && got.contains("client_idle_timeout"),
        "{got}"
    );
    // A busy client is not idle: queries every 300 ms keep it connected past 700 ms.
    let c = connect(addr, "trustuser", "").await.unwrap();
    for _ in 0..5 {
        c.batch_execute("select 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs one simple query on a raw session and waits for its ReadyForQuery.
async fn read_until_sent(sock: &mut tokio::net::TcpStream, sql: &str) {
    use tokio::io::AsyncWriteExt;
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query(sql, &mut out).unwrap();
    sock.write_all(&out).await.unwrap();
    read_until(sock, &[b'Z', 0, 0, 0, 5]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_in_transaction_mode() {
    let pool = format!("{TXN}\ndefault_pool_size = 1\nquery_wait_timeout = \"1s\"");
    let s = setup(1, "", "", &pool).await;
    let addr = s.addr("writer");
    let holder = app(addr).await;
    holder.batch_execute("begin").await.unwrap();
    // Connecting works (no server connection is held between transactions)...
    let waiter = app(addr).await;
    // ...but a transaction waits for the only server connection, then fails clearly.
    let e = waiter.batch_execute("select 1").await.unwrap_err();
    assert!(e.is_closed() || sqlstate(&e) == "57P03", "{e}");
    holder.batch_execute("commit").await.unwrap();
    let again = app(addr).await;
    again.batch_execute("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_reach_the_running_transaction_only() {
    let s = setup(1, "", "", &format!("{TXN}\ndefault_pool_size = 1")).await;
    let addr = s.addr("reader");
    let a = app(addr).await;
    let token = a.cancel_token();
    let started = Instant::now();
    let running = tokio::spawn(async move {
        let r = a.batch_execute("select pg_sleep(30)").await;
        (r, a)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (r, a) = running.await.unwrap();
    assert_eq!(sqlstate(&r.unwrap_err()), "57014");
    assert!(started.elapsed() < Duration::from_millis(1300));
    // A's transaction is over: its cancel key no longer points at the connection that
    // B now uses (the only one, pool size 1).
    let b = app(addr).await;
    let b_query = tokio::spawn(async move { b.batch_execute("select pg_sleep(1)").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    b_query
        .await
        .unwrap()
        .expect("B's query is not cancelled by A's key");
    a.batch_execute("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_never_stops_the_next_client() {
    // A runs short transactions and cancels them in a loop, so its cancels keep
    // arriving as its transactions end; B shares the one server connection and must
    // never see 57014.
    let s = setup(1, "", "", &format!("{TXN}\ndefault_pool_size = 1")).await;
    let addr = s.addr("reader");
    let a = app(addr).await;
    let b = app(addr).await;
    let token = a.cancel_token();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = |flag: &std::sync::Arc<std::sync::atomic::AtomicBool>| {
        let flag = flag.clone();
        move || !flag.load(std::sync::atomic::Ordering::Relaxed)
    };
    let a_loop = tokio::spawn({
        let go = running(&stop);
        async move {
            let mut n = 0u32;
            while go() && n < 100_000 {
                let _ = a.batch_execute("select 1").await;
                n += 1;
            }
        }
    });
    let cancels = tokio::spawn({
        let go = running(&stop);
        async move {
            let mut sent = 0u32;
            while go() && sent < 100_000 {
                let _ = token.cancel_query(tokio_postgres::NoTls).await;
                sent += 1;
            }
            sent
        }
    });
    let started = Instant::now();
    let (mut b_ok, mut b_cancelled) = (0, 0);
    while started.elapsed() < Duration::from_secs(5) {
        match b.batch_execute("select pg_sleep(0.02)").await {
            Ok(()) => b_ok += 1,
            Err(e) if sqlstate(&e) == "57014" => b_cancelled += 1,
            Err(e) => panic!("B: {e}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    a_loop.await.unwrap();
    let sent = cancels.await.unwrap();
    assert!(sent > 100, "only {sent} cancels were sent");
    assert!(b_ok > 10, "B ran only {b_ok} queries");
    assert_eq!(
        b_cancelled, 0,
        "B's queries cancelled by A's key ({b_ok} ran)"
    );
    // The connection is still in the pool for everyone.
    app(addr).await.batch_execute("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_messages_after_an_aborted_copy_take_no_connection() {
    use bytes::BytesMut;
    use postgres_protocol::message::frontend as fe;
    use tokio::io::AsyncWriteExt;
    let pool = format!("{TXN}\ndefault_pool_size = 1\nquery_wait_timeout = \"2s\"");
    let s = setup(1, "auth_type = \"trust\"", "", &pool).await;
    let addr = s.addr("writer");
    let trust = || connect(addr, "trustuser", "");
    let c = trust().await.unwrap();
    c.batch_execute("create table cp_stray(i int)")
        .await
        .unwrap();
    drop(c);
    let mut sock = raw_session(addr).await;
    let mut out = BytesMut::new();
    fe::query("copy cp_stray from stdin", &mut out).unwrap();
    sock.write_all(&out).await.unwrap();
    out.clear();
    read_until(&mut sock, b"G").await;
    // The server aborts the COPY on this row (ErrorResponse, ReadyForQuery 'I'); libpq
    // sends its CopyDone afterwards, which PostgreSQL ignores.
    fe::CopyData::new(&b"bad\n"[..]).unwrap().write(&mut out);
    fe::flush(&mut out);
    sock.write_all(&out).await.unwrap();
    out.clear();
    let got = read_until(&mut sock, &[b'Z', 0, 0, 0, 5, b'I']).await;
    assert!(String::from_utf8_lossy(&got).contains("22P02"));
    fe::copy_done(&mut out);
    sock.write_all(&out).await.unwrap();
    out.clear();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another client gets the only server connection while A sits idle.
    let b = trust().await.unwrap();
    b.batch_execute("select 1")
        .await
        .expect("B runs while A is idle");
    // And A goes on as normal.
    fe::query("select 42", &mut out).unwrap();
    sock.write_all(&out).await.unwrap();
    let got = read_until(&mut sock, &[b'Z', 0, 0, 0, 5, b'I']).await;
    assert!(String::from_utf8_lossy(&got).contains("42"));
}

/// Statements that set DateStyle in the servers' logs so far.
fn datestyle_sets(s: &Setup) -> usize {
    let mut n = 0;
    let mut dirs = vec![s.cluster.dir().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.file_name().is_some_and(|f| f == "postgres.log") {
                let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                n += text
                    .lines()
                    .filter(|l| l.contains("statement:") && l.contains("set_config('DateStyle'"))
                    .count();
            }
        }
    }
    n
}

/// A pgjdbc-like client: startup settings, one query, Terminate; returns the greeting.
async fn one_query_client(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let params = [
        ("user", "trustuser"),
        ("database", "app"),
        ("DateStyle", "ISO"),
        ("extra_float_digits", "2"),
    ];
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(&startup(&params)).await.unwrap();
    let greeting = read_until(&mut sock, &[b'Z', 0, 0, 0, 5, b'I']).await;
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("select 1", &mut out).unwrap();
    sock.write_all(&out).await.unwrap();
    read_until(&mut sock, &[b'Z', 0, 0, 0, 5, b'I']).await;
    out.clear();
    postgres_protocol::message::frontend::terminate(&mut out);
    sock.write_all(&out).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut rest)).await;
    String::from_utf8_lossy(&greeting).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_in_the_servers_spelling_cost_no_round_trip() {
    // pgjdbc starts with DateStyle=ISO; PostgreSQL spells it "ISO, MDY". Once pgfleet
    // has seen that, later clients are greeted as PostgreSQL greets them and their
    // transactions need no statement to set it.
    let pool = format!("{TXN}\ndefault_pool_size = 1");
    let s = setup(1, "auth_type = \"trust\"", "", &pool).await;
    let addr = s.addr("reader");
    let sql = "alter role trustuser set log_statement = 'all'";
    blocking(|| s.cluster.psql(s.cluster.primary(), sql)).unwrap();
    blocking(|| s.cluster.wait_caught_up()).unwrap();
    one_query_client(addr).await;
    let before = datestyle_sets(&s);
    for _ in 0..20 {
        let greeting = one_query_client(addr).await;
        assert!(greeting.contains("DateStyle\0ISO, MDY\0"), "{greeting:?}");
    }
    // The server log is written as the statements run; the last client has left.
    let after = datestyle_sets(&s);
    assert_eq!(after - before, 0, "DateStyle statements for 20 clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_replica_takes_its_share_within_seconds() {
    let s = setup(3, "", "", TXN).await;
    blocking(|| s.cluster.pgbench_init(1)).unwrap();
    let main = s.main();
    blocking(|| s.cluster.stop(3)).unwrap();
    wait_for("node 3 is down", Duration::from_secs(5), || {
        main.nodes()[3].health() != pgfleet::cluster::Health::Up
    })
    .await;
    let reader = s.addr("reader");
    let load = pgbench_spawn(reader, &["-S", "-c", "16", "-j", "2", "-T", "14"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    blocking(|| s.cluster.start_node(3)).unwrap();
    wait_for("node 3 passes its checks", Duration::from_secs(10), || {
        main.fits(&main.nodes()[3], pgfleet::config::Role::Replica)
    })
    .await;
    let up = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let wait = Duration::from_secs(5).saturating_sub(up.elapsed());
    let delta = commits_during(&s.cluster, wait).await;
    let delta = &delta[1..];
    let total: i64 = delta.iter().sum();
    let share = delta[2] as f64 / total as f64;
    println!(
        "transactions per replica in the 4 s after node 3 joined: {delta:?} (share {share:.2})"
    );
    assert!(
        share >= 0.25,
        "the joining replica took {share:.2} of {delta:?}"
    );
    blocking(|| pgbench_finish(load));
}

/// RESET ALL / DISCARD ALL bring the client's startup settings back, as on PostgreSQL
/// (asyncpg's pool runs RESET ALL each time a connection goes back to it).
async fn reset_keeps_startup_settings(mode: &str) {
    let s = setup(
        1,
        "",
        "",
        &format!("pool_mode = \"{mode}\"\ndefault_pool_size = 2"),
    )
    .await;
    let addr = s.addr("reader");
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("app")
        .application_name("myapp")
        .options("-c search_path=foo -c statement_timeout=4321");
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let show = "select current_setting('application_name') || '|' || current_setting('search_path') || '|' || current_setting('statement_timeout')";
    let first = |rows: Vec<tokio_postgres::SimpleQueryMessage>| {
        rows.into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(
        first(c.simple_query(show).await.unwrap()),
        "myapp|foo|4321ms"
    );
    for reset in [
        "SET search_path TO bar; SET application_name = 'x'",
        "RESET ALL",
        "DISCARD ALL",
        "RESET search_path",
    ] {
        c.batch_execute(reset).await.unwrap();
        if reset.starts_with("SET") {
            continue;
        }
        assert_eq!(
            first(c.simple_query(show).await.unwrap()),
            "myapp|foo|4321ms",
            "{mode} after {reset}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_all_keeps_startup_settings_in_transaction_mode() {
    reset_keeps_startup_settings("transaction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_all_keeps_startup_settings_in_session_mode() {
    reset_keeps_startup_settings("session").await;
}
