//! An unknown user and a known user with a wrong password cannot be told apart: the
//! same exchange and, byte for byte, the same ErrorResponse, with md5 and with SCRAM.
//! The same user name is tried before and after it is added to `auth_file`.

mod common;

use bytes::BytesMut;
use common::raw::*;
use common::*;
use pgfleet::auth::{ScramClient, ScramCredential};
use pgfleet::protocol::frame::body;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// What a client sees of a failed login: every message pgfleet sent, in order, with
/// SCRAM's server-first-message reduced to its shape (nonce and salt are random).
#[derive(Debug, PartialEq, Eq)]
struct Transcript {
    messages: Vec<Vec<u8>>,
}

/// A SCRAM login as `user` with `password`, to its end.
async fn scram_login(addr: std::net::SocketAddr, user: &str, password: &str) -> Transcript {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(&startup(&[("user", user), ("database", "app")]))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let sasl = read_message(&mut sock, &mut buf).await;
    assert_eq!(auth_code(&sasl), 10);
    let mut client = ScramClient::new(ScramCredential::Password(password.to_owned()));
    sock.write_all(&sasl_initial(&client.client_first()))
        .await
        .unwrap();
    let cont = read_message(&mut sock, &mut buf).await;
    assert_eq!(auth_code(&cont), 11);
    let server_first = &body(&cont)[4..];
    let client_final = client.handle_server_first(server_first).expect("valid");
    sock.write_all(&sasl_response(&client_final)).await.unwrap();
    let mut rest = buf.to_vec();
    rest.extend_from_slice(&read_to_close(&mut sock).await);
    let mut messages = vec![sasl.to_vec(), scram_shape(&cont)];
    messages.extend(common::raw::messages(&rest).into_iter().map(<[u8]>::to_vec));
    Transcript { messages }
}

/// An AuthenticationSASLContinue with its nonce and salt masked: their lengths, the
/// iteration count and every other byte stay.
fn scram_shape(cont: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(body(cont)[4..].to_vec()).expect("server-first is text");
    let masked: Vec<String> = text
        .split(',')
        .map(|attr| match attr.split_at(2) {
            (name @ ("r=" | "s="), value) => format!("{name}{}", "*".repeat(value.len())),
            _ => attr.to_owned(),
        })
        .collect();
    let mut out = cont[..9].to_vec();
    out.extend_from_slice(masked.join(",").as_bytes());
    out
}

/// An md5 login as `user` with `password`, to its end; the salt is masked.
async fn md5_login(addr: std::net::SocketAddr, user: &str, password: &str) -> Transcript {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(&startup(&[("user", user), ("database", "app")]))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let request = read_message(&mut sock, &mut buf).await;
    assert_eq!(auth_code(&request), 5);
    let salt: [u8; 4] = body(&request)[4..8].try_into().unwrap();
    let hash =
        postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt);
    sock.write_all(&password_message(hash.as_bytes()))
        .await
        .unwrap();
    let mut rest = buf.to_vec();
    rest.extend_from_slice(&read_to_close(&mut sock).await);
    let mut masked = request.to_vec();
    masked[9..13].copy_from_slice(b"****");
    let mut messages = vec![masked];
    messages.extend(common::raw::messages(&rest).into_iter().map(<[u8]>::to_vec));
    Transcript { messages }
}

/// Writes pgfleet's configuration and user list (with `ghost` when `with_ghost`), then
/// reloads them.
async fn configure(s: &Setup, general: &str, with_ghost: bool) {
    let mut users = blocking(|| userlist(&s.cluster));
    if with_ghost {
        users.push_str("\"ghost\" \"ghost-password\"\n");
    }
    std::fs::write(s.dir.path().join("userlist.txt"), users).unwrap();
    let text = config_text(&s.cluster, general, "", "");
    std::fs::write(s.dir.path().join("pgfleet.toml"), text).unwrap();
    pgfleet::fleet::reload(&s.fleet.state)
        .await
        .expect("the reload applies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_and_wrong_password_get_the_same_bytes() {
    let s = setup(1, "", "", "").await;
    let addr = s.addr("writer");
    let role = "create role ghost login password 'ghost-password'";
    blocking(|| s.cluster.psql(0, role)).expect("create role ghost");
    for general in ["auth_type = \"scram-sha-256\"", "auth_type = \"md5\""] {
        let s = &s;
        let login = |with_ghost| async move {
            configure(s, general, with_ghost).await;
            match general.contains("md5") {
                true => md5_login(addr, "ghost", "a guess").await,
                false => scram_login(addr, "ghost", "a guess").await,
            }
        };
        let unknown = login(false).await;
        let wrong_password = login(true).await;
        let last = unknown.messages.last().expect("an answer");
        let e = error_fields(last);
        assert_eq!(e.code, "28P01", "{general}: {e:?}");
        assert_eq!(
            e.message, "password authentication failed for user \"ghost\"",
            "{general}"
        );
        assert_eq!(unknown, wrong_password, "{general}");
        // The right password works: the user really was known the second time.
        let c = connect(addr, "ghost", "ghost-password")
            .await
            .expect(general);
        let row = c.query_one("select current_user::text", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "ghost");
    }
    // A normal client is served.
    configure(&s, "auth_type = \"scram-sha-256\"", false).await;
    let (in_recovery, _) = whereami(&app(addr).await).await;
    assert!(!in_recovery);
}
