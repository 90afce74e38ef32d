//! Transaction pooling: binding per transaction, balancing per transaction, errors,
//! disconnects and COPY. Settings and timeouts have files of their own.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;

const TXN: &str = "pool_mode = \"transaction\"";

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
    let first = backend_pid(&c).await;
    c.batch_execute("create temp table tt(i int) on commit drop; insert into t values (1)")
        .await
        .unwrap();
    assert_eq!(backend_pid(&c).await, first);
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
    let before = routed(&main);
    tokio::time::sleep(wait).await;
    let after = routed(&main);
    // Counted by pgfleet as each transaction ends on its server connection: exact,
    // where the servers' `xact_commit` lags by up to a second per backend.
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let delta = &delta[1..];
    let total: u64 = delta.iter().sum();
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
