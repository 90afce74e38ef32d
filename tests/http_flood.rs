//! HTTP clients that open many connections, pipeline requests and never read: they get
//! at most `http_max_connections` connections, each for `http_connection_timeout`, and
//! cannot take the file descriptors the client endpoints need. In a file of its own: it
//! lowers the process's file descriptor limit.

mod common;

use std::time::Duration;

use common::*;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_http_connections_that_never_read_starves_no_client() {
    let general = "http_listen = \"127.0.0.1:0\"\nhttp_max_connections = 50\n\
        http_connection_timeout = \"3s\"";
    let s = setup(1, general, "", "").await;
    let http = s.fleet.http.expect("http_listen is served");
    let reader = s.addr("reader");
    // pgfleet and this test share the process: 1,024 descriptors, as many hosts give a
    // process by default, for both ends of every connection.
    let limit = getrlimit(Resource::Nofile);
    let lowered = Rlimit {
        current: Some(1024),
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, lowered).expect("lower RLIMIT_NOFILE");

    let request = "GET /metrics HTTP/1.1\r\nHost: pgfleet\r\n\r\n".repeat(200);
    let mut flood = Vec::new();
    for _ in 0..500 {
        let Ok(mut c) = TcpStream::connect(http).await else {
            continue;
        };
        let _ =
            tokio::time::timeout(Duration::from_millis(100), c.write_all(request.as_bytes())).await;
        flood.push(c);
    }
    assert!(
        flood.len() >= 450,
        "only {} connections opened",
        flood.len()
    );
    // A PostgreSQL client still logs in and is served.
    let client = app(reader).await;
    assert!(whereami(&client).await.0);
    // Every flood connection is closed by pgfleet: at once beyond the cap, the others
    // after http_connection_timeout (and the grace of the answer being written).
    let started = std::time::Instant::now();
    let closing = flood.into_iter().map(|mut c| {
        tokio::spawn(async move {
            let mut sink = vec![0; 1 << 16];
            let read = async {
                loop {
                    match c.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            };
            let closed = tokio::time::timeout(Duration::from_secs(10), read).await;
            closed.map(|_| started.elapsed())
        })
    });
    let closed: Vec<_> = futures_util::future::join_all(closing).await;
    let closed: Vec<Duration> = closed
        .into_iter()
        .map(|c| {
            c.unwrap()
                .expect("a flood connection still open after 10 s")
        })
        .collect();
    let at_once = closed
        .iter()
        .filter(|t| **t < Duration::from_secs(2))
        .count();
    assert!(
        at_once >= closed.len() - 50,
        "{at_once} of {} closed at once",
        closed.len()
    );
    setrlimit(Resource::Nofile, limit).expect("restore RLIMIT_NOFILE");
}
