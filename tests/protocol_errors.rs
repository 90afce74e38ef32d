//! Bad and hostile input gets a clear ErrorResponse and a closed connection: never a
//! panic, never a hang, and other clients carry on.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use pgfleet::protocol::backend::parse_error_fields;
use pgfleet::protocol::frame::body;
use pgfleet::protocol::next_message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes`, reads until the server closes (at most 5 s), returns what came back.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    exchange_then(addr, bytes, false).await
}

/// As `exchange`; with `leave`, the client closes its sending side after `bytes`.
async fn exchange_then(addr: SocketAddr, bytes: &[u8], leave: bool) -> Vec<u8> {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let _ = sock.write_all(bytes).await;
    if leave {
        let _ = sock.shutdown().await;
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "pgfleet neither answered nor closed: got {got:?}"
    );
    got
}

/// The SQLSTATE of the first ErrorResponse in `bytes`.
fn error_code(bytes: &[u8]) -> String {
    let mut rest = bytes;
    while let Ok(Some(h)) = next_message(rest, 1 << 20) {
        if h.tag == b'E' {
            return parse_error_fields(body(&rest[..h.total])).unwrap().code;
        }
        rest = &rest[h.total..];
    }
    panic!("no ErrorResponse in {bytes:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_startups_get_errors() {
    let s = setup(1, "auth_type = \"trust\"\nmax_message_size = 4096", "", "").await;
    let addr = s.addr("reader");
    // TLS and GSS encryption are declined with 'N'; the client may go on in the clear.
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut n = [0u8; 1];
    sock.read_exact(&mut n).await.unwrap();
    assert_eq!(&n, b"N");
    sock.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])
        .await
        .unwrap();
    sock.read_exact(&mut n).await.unwrap();
    assert_eq!(&n, b"N");
    drop(sock);

    // Protocol 2.0.
    let v2 = [0, 0, 0, 9, 0, 2, 0, 0, 0];
    assert_eq!(error_code(&exchange(addr, &v2).await), "0A000");
    // A length no startup packet can have.
    assert_eq!(
        error_code(&exchange(addr, &[0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0]).await),
        "08P01"
    );
    // Parameters without their terminator.
    let mut bad = startup(&[("user", "trustuser")]);
    let len = bad.len();
    bad[len - 1] = b'x';
    assert_eq!(error_code(&exchange(addr, &bad).await), "08P01");
    // No user name.
    assert_eq!(
        error_code(&exchange(addr, &startup(&[("database", "app")])).await),
        "28000"
    );
    // Replication connections.
    let repl = startup(&[("user", "trustuser"), ("replication", "true")]);
    assert_eq!(error_code(&exchange(addr, &repl).await), "0A000");
    // A truncated packet, then the client leaves: nothing to answer, no hang.
    exchange_then(addr, &[0, 0, 0, 40, 0, 3], true).await;
    // A cancel request of the wrong size.
    assert_eq!(
        error_code(&exchange(addr, &[0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 1, 2, 3, 4]).await),
        "08P01"
    );

    // The process is fine: a normal client works.
    let c = connect(addr, "trustuser", "").await.expect("trust login");
    assert!(whereami(&c).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_messages_after_login() {
    let s = setup(1, "max_message_size = 4096", "", "").await;
    let addr = s.addr("reader");
    let bystander = app(addr).await;
    // Answer AuthenticationSASL with a message of the wrong shape.
    let mut bytes = startup(&[("user", "app"), ("database", "app")]);
    bytes.extend_from_slice(&[b'p', 0, 0, 0, 6, b'x', 0]);
    assert_eq!(error_code(&exchange(addr, &bytes).await), "08P01");
    // A message larger than max_message_size during login.
    let mut bytes = startup(&[("user", "app"), ("database", "app")]);
    bytes.extend_from_slice(&[b'p', 0, 1, 0, 0]);
    assert_eq!(error_code(&exchange(addr, &bytes).await), "08P01");
    // The other client was never disturbed.
    assert!(whereami(&bystander).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_query_in_a_session_ends_only_that_session() {
    let s = setup(1, "auth_type = \"trust\"\nmax_message_size = 4096", "", "").await;
    let addr = s.addr("reader");
    let bystander = connect(addr, "trustuser", "").await.unwrap();
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(&startup(&[("user", "trustuser"), ("database", "app")]))
        .await
        .unwrap();
    // Read up to ReadyForQuery.
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before ReadyForQuery");
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(6).any(|w| w == [b'Z', 0, 0, 0, 5, b'I']) {
            break;
        }
    }
    // A Query announcing 100,000 bytes.
    let mut q = vec![b'Q'];
    q.extend_from_slice(&100_000u32.to_be_bytes());
    sock.write_all(&q).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(error_code(&got), "08P01");
    assert!(whereami(&bystander).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_an_unsynced_batch_never_dirties_the_next_one() {
    use postgres_protocol::message::frontend as fe;
    // No reset query: only the pump's own tracking keeps the next client safe.
    let pool = "default_pool_size = 1\nserver_reset_query = \"\"";
    let s = setup(1, "auth_type = \"trust\"", "", pool).await;
    let addr = s.addr("writer");
    let c = connect(addr, "trustuser", "").await.unwrap();
    c.batch_execute("create table unsynced(v text)")
        .await
        .unwrap();
    let pid: i32 = c
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Parse/Bind/Execute + Flush, no Sync: the insert runs in an implicit transaction.
    let mut sock = raw_session(addr).await;
    let mut out = BytesMut::new();
    fe::parse(
        "",
        "insert into unsynced values ('secret of A') returning v",
        [],
        &mut out,
    )
    .unwrap();
    fe::bind(
        "",
        "",
        [],
        [] as [Option<&[u8]>; 0],
        |_, _| unreachable!(),
        [],
        &mut out,
    )
    .map_err(|_| "bind")
    .unwrap();
    fe::execute("", 0, &mut out).unwrap();
    fe::flush(&mut out);
    sock.write_all(&out).await.unwrap();
    read_until(&mut sock, b"INSERT 0 1").await;
    drop(sock);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let c = connect(addr, "trustuser", "").await.unwrap();
    let rows = c.query("select v from unsynced", &[]).await.unwrap();
    assert!(
        rows.is_empty(),
        "A's unsynced insert was committed or leaked"
    );
    let next: i32 = c
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(next, pid, "the unsynced connection was closed, not reused");
}
