//! TLS between clients and pgfleet: each `client_tls_sslmode`, SCRAM channel binding
//! with psql, PostgreSQL 17's direct TLS, and certificates renewed by a reload.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::certs::{Issued, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::config::{SslMode, SslNegotiation};

/// `[general]` lines for client TLS in `mode` with `cert`.
fn general(mode: &str, cert: &Issued) -> String {
    format!(
        "client_tls_sslmode = \"{mode}\"\nclient_tls_cert_file = \"{}\"\nclient_tls_key_file = \"{}\"",
        cert.cert_file.display(),
        cert.key_file.display()
    )
}

/// psql as `app` with libpq's TLS settings in `env` (PGSSLMODE and so on).
fn psql(addr: SocketAddr, env: &[(&str, &str)], sql: &str) -> (bool, String) {
    let mut cmd = std::process::Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", "app", "-d", "app", "-c", sql])
        .env("PGPASSWORD", "app")
        .env("PGCONNECT_TIMEOUT", "20");
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::run(&mut cmd)
}

fn rustls_config(pki: &Pki, alpn: bool) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.ca_file()).unwrap();
    let ca = rustls::pki_types::pem::PemObject::from_pem_slice(&ca).unwrap();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if alpn {
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    config
}

/// tokio-postgres settings for `app` over TLS to `addr`, checking the name `localhost`.
fn tls_client(addr: SocketAddr) -> tokio_postgres::Config {
    let mut pg = tokio_postgres::Config::new();
    pg.host("localhost")
        .hostaddr(addr.ip())
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("app")
        .ssl_mode(SslMode::Require);
    pg
}

/// The certificate pgfleet shows after an SSLRequest on `addr`.
async fn presented_certificate(addr: SocketAddr, pki: &Pki) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let connector = tokio_rustls::TlsConnector::from(Arc::new(rustls_config(pki, false)));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let certs = tls.get_ref().1.peer_certificates().unwrap();
    certs[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_plaintext_and_binds_scram_to_the_channel() {
    let pki = Pki::new();
    let cert = pki.issue("pgfleet", &["localhost", "127.0.0.1"]);
    let s = common::setup(1, &general("require", &cert), "", "").await;
    let addr = s.addr("reader");
    let ca = pki.ca_file().display().to_string();

    let (ok, out) = common::blocking(|| psql(addr, &[("PGSSLMODE", "disable")], "select 1"));
    assert!(!ok && out.contains("SSL required"), "{out}");

    let env = [
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.as_str()),
        ("PGCHANNELBINDING", "require"),
    ];
    let (ok, out) = common::blocking(|| psql(addr, &env, "select 'bound'"));
    assert!(ok && out.trim() == "bound", "{out}");

    let client = common::connect(addr, "app", "app").await;
    assert!(
        client.is_err(),
        "a plaintext tokio-postgres login must be refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_and_allow_serve_tls_and_plaintext_and_disable_declines_tls() {
    let pki = Pki::new();
    let cert = pki.issue("pgfleet", &["localhost", "127.0.0.1"]);
    // allow is the same as prefer: the client decides.
    for tls_mode in ["prefer", "allow"] {
        let s = common::setup(1, &general(tls_mode, &cert), "", "").await;
        let addr = s.addr("reader");
        for env in [
            &[("PGSSLMODE", "disable")][..],
            &[("PGSSLMODE", "require")],
            &[("PGSSLMODE", "require"), ("PGCHANNELBINDING", "require")],
        ] {
            let (ok, out) = common::blocking(|| psql(addr, env, "select 1"));
            assert!(ok, "{tls_mode}, {env:?}: {out}");
        }
    }

    // Without client TLS configured, pgfleet declines TLS like a server without it.
    let plain = common::setup(1, "", "", "").await;
    let env = [("PGSSLMODE", "require")];
    let (ok, out) = common::blocking(|| psql(plain.addr("reader"), &env, "select 1"));
    assert!(!ok && out.contains("does not support SSL"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_alpn_postgresql() {
    let pki = Pki::new();
    let cert = pki.issue("pgfleet", &["localhost", "127.0.0.1"]);
    let s = common::setup(1, &general("require", &cert), "", "").await;
    let addr = s.addr("reader");
    let direct = |alpn: bool| {
        let mut pg = tls_client(addr);
        pg.ssl_negotiation(SslNegotiation::Direct);
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(rustls_config(&pki, alpn));
        async move { pg.connect(tls).await }
    };
    let (client, conn) = direct(true).await.expect("direct TLS with ALPN");
    tokio::spawn(conn);
    let row = client.query_one("select 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    // SHOW CLIENTS' `tls` column.
    let clients = s.fleet.state.clients.all();
    assert_eq!(clients.len(), 1);
    assert!(clients[0].tls.starts_with("TLSv1.3/"), "{}", clients[0].tls);
    assert!(direct(false).await.is_err(), "direct TLS without ALPN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_a_renewed_certificate_and_keeps_sessions() {
    let pki = Pki::new();
    let first = pki.issue("pgfleet", &["localhost", "127.0.0.1"]);
    let s = common::setup(1, &general("require", &first), "", "").await;
    let addr = s.addr("reader");
    assert_eq!(presented_certificate(addr, &pki).await, first.der);

    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(rustls_config(&pki, false));
    let (client, conn) = tls_client(addr).connect(tls).await.expect("TLS session");
    tokio::spawn(conn);
    client.simple_query("select 1").await.unwrap();

    // The files are replaced where they are, as a certificate renewal does.
    let second = pki.issue("renewed", &["localhost", "127.0.0.1"]);
    second.write_to(&first.cert_file, &first.key_file);
    pgfleet::fleet::reload(&s.fleet.state)
        .await
        .expect("reload");
    assert_eq!(presented_certificate(addr, &pki).await, second.der);
    client
        .simple_query("select 1")
        .await
        .expect("the session goes on");

    // A broken key file refuses the reload and keeps serving the last good one.
    std::fs::write(&first.key_file, "not a key").unwrap();
    assert!(pgfleet::fleet::reload(&s.fleet.state).await.is_err());
    assert_eq!(presented_certificate(addr, &pki).await, second.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_bytes_after_an_ssl_request_are_refused() {
    let pki = Pki::new();
    let cert = pki.issue("pgfleet", &["localhost"]);
    let s = common::setup(1, &general("prefer", &cert), "", "").await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr("reader"))
        .await
        .unwrap();
    let mut bytes = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    bytes.extend(common::startup(&[("user", "app"), ("database", "app")]));
    tcp.write_all(&bytes).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut answer),
    );
    read.await.expect("pgfleet closes").unwrap();
    assert_eq!(answer.first(), Some(&b'S'));
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("08P01") && text.contains("unencrypted data"),
        "{text}"
    );
}

/// `verify-ca`: a client must present a certificate that chains to
/// `client_tls_ca_file`; with `require` and a CA file, a certificate is optional.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_requires_a_client_certificate() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let cert = pki.issue("pgfleet", &["localhost", "127.0.0.1"]);
    let client = pki.issue("client", &["app"]);
    // libpq refuses a key file others can read.
    std::fs::set_permissions(&client.key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca = pki.ca_file().display().to_string();
    let (client_cert, client_key) = (
        client.cert_file.display().to_string(),
        client.key_file.display().to_string(),
    );
    let with_cert = [
        ("PGSSLMODE", "require"),
        ("PGSSLCERT", client_cert.as_str()),
        ("PGSSLKEY", client_key.as_str()),
    ];
    let without = [("PGSSLMODE", "require"), ("PGSSLCERT", "/nonexistent")];
    for (mode, needed) in [("verify-ca", true), ("require", false)] {
        let general = format!("{}\nclient_tls_ca_file = \"{ca}\"", general(mode, &cert));
        let s = common::setup(1, &general, "", "").await;
        let addr = s.addr("reader");
        let (ok, out) = common::blocking(|| psql(addr, &with_cert, "select 'in'"));
        assert!(ok && out.trim() == "in", "{mode}: {out}");
        let (ok, out) = common::blocking(|| psql(addr, &without, "select 'in'"));
        assert_eq!(ok, !needed, "{mode}: {out}");
        if needed {
            assert!(out.contains("certificate"), "{mode}: {out}");
        }
    }
}
