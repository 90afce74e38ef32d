//! Timeouts and cancel requests, in transaction mode (and the timeouts in session mode
//! too): each timeout's own SQLSTATE, and cancels that reach the running transaction
//! and nothing else.

mod common;

use std::time::{Duration, Instant};

use common::*;

const TXN: &str = "pool_mode = \"transaction\"";

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

/// Runs one simple query on a raw session and waits for its ReadyForQuery.
async fn read_until_sent(sock: &mut tokio::net::TcpStream, sql: &str) {
    use tokio::io::AsyncWriteExt;
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query(sql, &mut out).unwrap();
    sock.write_all(&out).await.unwrap();
    read_until(sock, &[b'Z', 0, 0, 0, 5]).await;
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
