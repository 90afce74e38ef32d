//! Named prepared statements in transaction mode: available on whichever server
//! connection runs the client's next transaction.

mod common;

use common::*;
use tokio_postgres::types::Type;

const TXN: &str = "pool_mode = \"transaction\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_protocols_over_100k_transactions_without_statement_errors() {
    let s = setup(2, "", "", &format!("{TXN}\ndefault_pool_size = 4")).await;
    blocking(|| s.cluster.pgbench_init(1)).unwrap();
    let reader = s.addr("reader");
    let runs: Vec<_> = ["simple", "extended", "prepared"]
        .iter()
        .map(|mode| {
            pgbench_spawn(
                reader,
                &["-S", "-M", mode, "-c", "8", "-j", "1", "-t", "4200"],
            )
        })
        .collect();
    let outputs: Vec<String> = blocking(|| runs.into_iter().map(pgbench_finish).collect());
    for out in &outputs {
        assert!(out.contains("actually processed: 33600/33600"), "{out}");
        assert!(
            !out.contains("does not exist") && !out.contains("already exists"),
            "{out}"
        );
    }
    // 64 prepared clients over 4 connections per replica.
    let out = blocking(|| {
        pgbench_finish(pgbench_spawn(
            reader,
            &["-S", "-M", "prepared", "-c", "64", "-j", "2", "-t", "100"],
        ))
    });
    assert!(out.contains("actually processed: 6400/6400"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_follow_the_client_across_connections() {
    let s = setup(
        2,
        "",
        "",
        &format!("{TXN}\ndefault_pool_size = 2\nmax_prepared_statements = 3"),
    )
    .await;
    let c = app(s.addr("reader")).await;
    let st = c
        .prepare_typed("select $1::int4 + 1, inet_server_port()", &[])
        .await
        .unwrap();
    assert_eq!(st.params(), &[Type::INT4]);
    assert_eq!(st.columns()[0].type_(), &Type::INT4);
    let mut ports = std::collections::HashSet::new();
    for i in 0..12i32 {
        let row = c.query_one(&st, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
        ports.insert(row.get::<_, i32>(1));
    }
    assert_eq!(ports.len(), 2, "the statement ran on both replicas");
    // More statements than a connection keeps: the oldest are closed and re-prepared.
    let texts: Vec<String> = (0..6).map(|i| format!("select {i}")).collect();
    let mut many = Vec::new();
    for t in &texts {
        many.push(c.prepare(t).await.unwrap());
    }
    for _ in 0..3 {
        for (i, st) in many.iter().enumerate() {
            let row = c.query_one(st, &[]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), i as i32);
        }
    }
    // Close (drop) and prepare again, and two clients with the same text.
    drop(many);
    let other = app(s.addr("reader")).await;
    let a = c.prepare("select 42").await.unwrap();
    let b = other.prepare("select 42").await.unwrap();
    for _ in 0..4 {
        assert_eq!(c.query_one(&a, &[]).await.unwrap().get::<_, i32>(0), 42);
        assert_eq!(other.query_one(&b, &[]).await.unwrap().get::<_, i32>(0), 42);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_and_errors_inside_batches() {
    use bytes::BytesMut;
    use postgres_protocol::message::frontend as fe;
    use tokio::io::AsyncWriteExt;
    let s = setup(
        1,
        "auth_type = \"trust\"",
        "",
        &format!("{TXN}\ndefault_pool_size = 2"),
    )
    .await;
    let addr = s.addr("writer");
    let mut sock = raw_session(addr).await;
    let mut out = BytesMut::new();
    let bind_exec = |out: &mut BytesMut, name: &str| {
        fe::bind(
            "",
            name,
            [],
            [] as [Option<&[u8]>; 0],
            |_, _| unreachable!(),
            [],
            out,
        )
        .map_err(|_| "bind")
        .unwrap();
        fe::execute("", 0, out).unwrap();
        fe::sync(out);
    };
    fe::parse("mine", "select 7", [], &mut out).unwrap();
    fe::sync(&mut out);
    bind_exec(&mut out, "mine");
    sock.write_all(&out).await.unwrap();
    out.clear();
    let got = read_until(&mut sock, b"SELECT 1\0").await;
    assert!(
        got.windows(2).any(|w| w == b"\x017"),
        "the row holds 7: {got:?}"
    );
    // DEALLOCATE by the client's name, then the statement is gone.
    fe::query("DEALLOCATE mine", &mut out).unwrap();
    bind_exec(&mut out, "mine");
    sock.write_all(&out).await.unwrap();
    out.clear();
    let got = read_until(&mut sock, b"26000").await;
    assert!(
        String::from_utf8_lossy(&got).contains("DEALLOCATE"),
        "{got:?}"
    );
    fe::query("select 'still in step'", &mut out).unwrap();
    sock.write_all(&out).await.unwrap();
    out.clear();
    read_until(&mut sock, b"still in step").await;

    // Through tokio-postgres: an error in the middle of a pipeline; the server skips
    // to the next Sync and pgfleet's bookkeeping stays in step.
    let c = connect(addr, "trustuser", "").await.unwrap();
    let good = c.prepare("select 1").await.unwrap();
    let bad = c.prepare("select 1/$1::int").await.unwrap();
    let (x, y, z) = tokio::join!(
        c.query_one(&good, &[]),
        c.query_one(&bad, &[&0i32]),
        c.query_one(&good, &[])
    );
    assert_eq!(x.unwrap().get::<_, i32>(0), 1);
    assert_eq!(sqlstate(&y.unwrap_err()), "22012");
    assert_eq!(z.unwrap().get::<_, i32>(0), 1);
    for _ in 0..5 {
        assert_eq!(c.query_one(&good, &[]).await.unwrap().get::<_, i32>(0), 1);
    }
    c.batch_execute("DEALLOCATE ALL").await.unwrap();
    assert_eq!(
        sqlstate(&c.query_one(&good, &[]).await.unwrap_err()),
        "26000"
    );
    let again = c.prepare("select 2").await.unwrap();
    c.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(
        sqlstate(&c.query_one(&again, &[]).await.unwrap_err()),
        "26000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parse_that_failed_in_an_aborted_block_is_prepared_again() {
    use bytes::BytesMut;
    use postgres_protocol::message::frontend as fe;
    use tokio::io::AsyncWriteExt;
    let s = setup(
        0,
        "auth_type = \"trust\"",
        "",
        &format!("{TXN}\ndefault_pool_size = 1"),
    )
    .await;
    let mut sock = raw_session(s.addr("writer")).await;
    let mut out = BytesMut::new();
    // In an aborted block the Parse fails (25P02): the server holds no statement.
    fe::query("begin; select 1/0", &mut out).unwrap();
    fe::parse("mine", "select 7", [], &mut out).unwrap();
    fe::sync(&mut out);
    sock.write_all(&out).await.unwrap();
    out.clear();
    let got = read_until(&mut sock, b"25P02").await;
    if !got.ends_with(&[b'Z', 0, 0, 0, 5, b'E']) {
        read_until(&mut sock, &[b'Z', 0, 0, 0, 5, b'E']).await;
    }
    // Still on the same connection: roll back, prepare it again and run it.
    fe::query("rollback", &mut out).unwrap();
    fe::parse("mine", "select 7", [], &mut out).unwrap();
    fe::bind(
        "",
        "mine",
        [],
        [] as [Option<&[u8]>; 0],
        |_, _| unreachable!(),
        [],
        &mut out,
    )
    .map_err(|_| "bind")
    .unwrap();
    fe::execute("", 0, &mut out).unwrap();
    fe::sync(&mut out);
    sock.write_all(&out).await.unwrap();
    out.clear();
    let got = read_until(&mut sock, b"SELECT 1\0").await;
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("26000") && !text.contains("42P05"), "{text}");
    assert!(
        got.windows(2).any(|w| w == b"\x017"),
        "the row holds 7: {got:?}"
    );
}
