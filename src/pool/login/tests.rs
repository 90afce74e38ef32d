//! The login against a fake server on a loopback socket: what pgfleet sends, and when
//! it gives up.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A fake server's one connection: reads the startup message, then runs `script`.
async fn fake<F, Fut>(script: F) -> (Stream, tokio::task::JoinHandle<Vec<u8>>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<u8>> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let len = s.read_u32().await.unwrap() as usize;
        let mut startup = vec![0; len - 4];
        s.read_exact(&mut startup).await.unwrap();
        script(s).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    (Stream::Plain(tcp), server)
}

/// An authentication request with `code` and `rest`.
fn auth(code: u32, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![b'R'];
    m.extend_from_slice(&(8 + rest.len() as u32).to_be_bytes());
    m.extend_from_slice(&code.to_be_bytes());
    m.extend_from_slice(rest);
    m
}

/// AuthenticationOk, BackendKeyData and ReadyForQuery: a session.
fn welcome() -> Vec<u8> {
    let mut m = auth(0, b"");
    m.extend_from_slice(&[b'K', 0, 0, 0, 12, 0, 0, 0, 7, 0, 0, 0, 9]);
    m.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    m
}

/// Everything the client sends until it closes.
async fn rest(mut s: TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    got
}

fn cred() -> Credentials {
    Credentials {
        user: "app".into(),
        secret: Some(Secret::Plain("secret pw".into())),
        scram_keys: None,
    }
}

const UNTRUSTED: Channel = Channel {
    verified: false,
    plain_loopback: false,
};

async fn log_in(stream: &mut Stream, channel: Channel) -> Result<Session, ServerError> {
    login(
        stream,
        &mut BytesMut::new(),
        "db",
        &cred(),
        channel,
        1 << 20,
    )
    .await
}

#[tokio::test]
async fn authentication_ok_without_the_scram_proof_is_refused() {
    let (mut stream, server) = fake(|mut s| async move {
        s.write_all(&auth(10, b"SCRAM-SHA-256\0\0")).await.unwrap();
        let mut first = [0; 5];
        s.read_exact(&mut first).await.unwrap();
        assert_eq!(first[0], b'p', "SASLInitialResponse");
        let mut rest_of_it =
            vec![0; u32::from_be_bytes([0, first[2], first[3], first[4]]) as usize - 4];
        s.read_exact(&mut rest_of_it).await.unwrap();
        // What a server that does not know the password can say: "fine".
        s.write_all(&welcome()).await.unwrap();
        rest(s).await
    })
    .await;
    let channel = Channel::of(&stream, ServerTlsMode::Disable);
    let e = log_in(&mut stream, channel)
        .await
        .expect_err("a server that proved nothing");
    assert!(matches!(e, ServerError::Login(LoginError::Unproven)), "{e}");
    drop(stream);
    server.await.unwrap();
}

#[tokio::test]
async fn cleartext_password_only_over_a_channel_that_takes_it() {
    let asks_cleartext = |mut s: TcpStream| async move {
        s.write_all(&auth(3, b"")).await.unwrap();
        let mut tag = [0; 1];
        if s.read_exact(&mut tag).await.is_ok() && tag[0] == b'p' {
            let len = s.read_u32().await.unwrap() as usize;
            let mut pw = vec![0; len - 4];
            s.read_exact(&mut pw).await.unwrap();
            s.write_all(&welcome()).await.unwrap();
            let _ = rest(s).await;
            return pw;
        }
        Vec::new()
    };
    // Neither verified TLS nor a plain loopback connection: nothing is sent.
    let (mut stream, server) = fake(asks_cleartext).await;
    let e = log_in(&mut stream, UNTRUSTED).await.expect_err("refused");
    assert!(
        matches!(e, ServerError::Login(LoginError::CleartextRefused)),
        "{e}"
    );
    drop(stream);
    assert_eq!(server.await.unwrap(), b"", "no password reached the server");

    // Without TLS to a loopback address: sent.
    let (mut stream, server) = fake(asks_cleartext).await;
    let channel = Channel::of(&stream, ServerTlsMode::Disable);
    assert!(channel.plain_loopback && !channel.verified);
    let session = log_in(&mut stream, channel).await.expect("logged in");
    assert_eq!((session.pid, session.key), (7, 9));
    drop(stream);
    assert_eq!(server.await.unwrap(), b"secret pw\0");
}
