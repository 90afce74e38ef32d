//! Cancel requests reach the server connection running the client's query, only it.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_long_query_within_a_second() {
    let s = setup(1, "", "", "").await;
    let c = app(s.addr("reader")).await;
    let bystander = app(s.addr("reader")).await;
    let token = c.cancel_token();
    let started = Instant::now();
    let query = tokio::spawn(async move { c.batch_execute("select pg_sleep(30)").await });
    let other = tokio::spawn(async move { bystander.batch_execute("select pg_sleep(1.5)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel sent");
    let e = query.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "took {:?}",
        started.elapsed()
    );
    other
        .await
        .unwrap()
        .expect("another client's query is not cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_cancels_nothing() {
    let s = setup(1, "", "", "").await;
    let c = app(s.addr("reader")).await;
    let pid = s.fleet.state.cancels.lookup(1, 0);
    assert!(pid.is_none());
    let addr = s.addr("reader");
    let query = tokio::spawn(async move { c.batch_execute("select pg_sleep(1)").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Forge cancel requests for every plausible client id with a wrong key.
    for id in 1..20u32 {
        let mut packet = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
        packet.extend_from_slice(&id.to_be_bytes());
        packet.extend_from_slice(&0u32.to_be_bytes());
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut sock, &packet)
            .await
            .unwrap();
    }
    query.await.unwrap().expect("the query runs to its end");
}
