//! Talking to pgfleet over a raw socket, for hostile-input tests: send exact bytes, read
//! what comes back until pgfleet closes, pick the ErrorResponse out of it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use pgfleet::protocol::backend::{parse_error_fields, ErrorFields};
use pgfleet::protocol::frame::body;
use pgfleet::protocol::next_message;
use postgres_protocol::message::frontend as fe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long pgfleet may take to answer or close before a test calls it a hang.
pub const HANG: Duration = Duration::from_secs(10);

/// Reads until pgfleet closes the connection; panics if it neither does within `HANG`.
pub async fn read_to_close(sock: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(HANG, sock.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "pgfleet neither answered nor closed: {got:?}");
    got
}

/// Connects, sends `bytes`, and reads until pgfleet closes.
pub async fn send_and_read(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let _ = sock.write_all(bytes).await;
    read_to_close(&mut sock).await
}

/// The whole messages in `bytes`, in order.
pub fn messages(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Ok(Some(h)) = next_message(rest, 1 << 20) {
        out.push(&rest[..h.total]);
        rest = &rest[h.total..];
    }
    out
}

/// The first ErrorResponse in `bytes`, as sent.
pub fn error_message(bytes: &[u8]) -> &[u8] {
    match messages(bytes).into_iter().find(|m| m[0] == b'E') {
        Some(m) => m,
        None => panic!("no ErrorResponse in {bytes:?}"),
    }
}

/// The fields of the first ErrorResponse in `bytes`.
pub fn error_fields(bytes: &[u8]) -> ErrorFields {
    parse_error_fields(body(error_message(bytes))).expect("a well-formed ErrorResponse")
}

/// Reads until a whole message has come and returns it (with what followed it).
pub async fn read_message(sock: &mut TcpStream, buf: &mut BytesMut) -> BytesMut {
    loop {
        if let Ok(Some(h)) = next_message(buf, 1 << 20) {
            return buf.split_to(h.total);
        }
        let read = tokio::time::timeout(HANG, sock.read_buf(buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {}
            other => panic!("no whole message: {other:?}, got {buf:?}"),
        }
    }
}

/// An authentication request's code (`R` message): 5 md5, 10 SASL, 11 SASLContinue...
pub fn auth_code(m: &[u8]) -> u32 {
    assert_eq!(m[0], b'R', "not an authentication request: {m:?}");
    let b = body(m);
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A SASLInitialResponse for SCRAM-SHA-256 carrying `first`.
pub fn sasl_initial(first: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    fe::sasl_initial_response("SCRAM-SHA-256", first, &mut out).unwrap();
    out.to_vec()
}

/// A SASLResponse carrying `data`.
pub fn sasl_response(data: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    fe::sasl_response(data, &mut out).unwrap();
    out.to_vec()
}

/// A PasswordMessage carrying `password`.
pub fn password_message(password: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    fe::password_message(password, &mut out).unwrap();
    out.to_vec()
}

/// A simple Query.
pub fn query(sql: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    fe::query(sql, &mut out).unwrap();
    out.to_vec()
}
