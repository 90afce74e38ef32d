//! The limits a client meets before it is authenticated, and after: each is shown at
//! its edge, and a normal client is served afterwards.

mod common;

use std::time::Duration;

use common::raw::*;
use common::*;
use pgfleet::protocol::startup::{MAX_STARTUP_PACKET, MAX_STARTUP_PARAMS};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A StartupMessage of exactly `len` bytes: user `app`, database `app`, and an
/// `application_name` padded to fill it.
fn startup_of_len(len: usize) -> Vec<u8> {
    let base = startup(&[
        ("user", "app"),
        ("database", "app"),
        ("application_name", ""),
    ]);
    let pad = "x".repeat(len - base.len());
    let packet = startup(&[
        ("user", "app"),
        ("database", "app"),
        ("application_name", &pad),
    ]);
    assert_eq!(packet.len(), len);
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stall_during_login_are_dropped_after_client_login_timeout() {
    let s = setup(1, "client_login_timeout = \"1s\"", "", "").await;
    let addr = s.addr("reader");
    let timed_out = |got: &[u8]| {
        let e = error_fields(got);
        assert_eq!(e.code, "08P01", "{e:?}");
        assert!(e.message.contains("client_login_timeout"), "{e:?}");
    };
    // Connects and sends nothing.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Half a startup packet.
    let mut half = TcpStream::connect(addr).await.unwrap();
    let packet = startup(&[("user", "app"), ("database", "app")]);
    half.write_all(&packet[..packet.len() / 2]).await.unwrap();
    // Stops in the middle of SCRAM, after the server-first-message.
    let mut scram = TcpStream::connect(addr).await.unwrap();
    scram.write_all(&packet).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    assert_eq!(auth_code(&read_message(&mut scram, &mut buf).await), 10);
    scram
        .write_all(&sasl_initial(b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"))
        .await
        .unwrap();
    assert_eq!(auth_code(&read_message(&mut scram, &mut buf).await), 11);

    for sock in [&mut silent, &mut half, &mut scram] {
        timed_out(&read_to_close(sock).await);
    }
    // Nobody is left logging in, and a normal client is served.
    let state = s.fleet.state.clone();
    wait_for("no login pending", Duration::from_secs(5), || {
        state.pending_logins.in_use() == 0
    })
    .await;
    assert!(whereami(&app(addr).await).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_packet_size_and_parameter_count_are_bounded() {
    let s = setup(1, "", "", "").await;
    let addr = s.addr("reader");
    // At the size limit the packet is read, and authentication starts.
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(&startup_of_len(MAX_STARTUP_PACKET))
        .await
        .unwrap();
    let mut buf = bytes::BytesMut::new();
    assert_eq!(auth_code(&read_message(&mut sock, &mut buf).await), 10);
    drop(sock);
    // One byte more is refused.
    let got = send_and_read(addr, &startup_of_len(MAX_STARTUP_PACKET + 1)).await;
    let e = error_fields(&got);
    assert_eq!(e.code, "08P01", "{e:?}");
    assert!(e.message.contains("10001"), "{e:?}");

    // As many parameters as allowed, then one more.
    let names: Vec<String> = (0..MAX_STARTUP_PARAMS).map(|i| format!("p{i}")).collect();
    let mut params: Vec<(&str, &str)> = vec![("user", "app"), ("database", "app")];
    params.extend(names[2..].iter().map(|n| (n.as_str(), "v")));
    assert_eq!(params.len(), MAX_STARTUP_PARAMS);
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(&startup(&params)).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    assert_eq!(auth_code(&read_message(&mut sock, &mut buf).await), 10);
    drop(sock);
    params.push(("one_more", "v"));
    let e = error_fields(&send_and_read(addr, &startup(&params)).await);
    assert_eq!(e.code, "08P01", "{e:?}");
    assert_eq!(e.message, "startup packet has more than 64 parameters");
    // Settings in `options` count too.
    let options: String = (0..MAX_STARTUP_PARAMS)
        .map(|i| format!("-c s{i}=1 "))
        .collect();
    let packet = startup(&[
        ("user", "app"),
        ("application_name", "x"),
        ("options", &options),
    ]);
    let e = error_fields(&send_and_read(addr, &packet).await);
    assert_eq!(e.code, "08P01", "{e:?}");
    assert!(e.message.contains("too many startup parameters"), "{e:?}");

    assert!(whereami(&app(addr).await).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_bounded_before_and_after_login() {
    // max_message_size well above the login limit: the login limit holds on its own.
    let s = setup(1, "max_message_size = 1048576", "", "").await;
    let addr = s.addr("reader");
    let login = startup(&[("user", "app"), ("database", "app")]);
    // A SASLInitialResponse of 65,535 bytes (the length field's value) is read whole,
    // and refused for its content.
    let mut at_limit = login.clone();
    at_limit.extend_from_slice(&[b'p', 0, 0, 0xff, 0xff]);
    at_limit.resize(login.len() + 1 + 65_535, b'x');
    let e = error_fields(&send_and_read(addr, &at_limit).await);
    assert_eq!(e.code, "08P01", "{e:?}");
    assert_eq!(e.message, "malformed SASLInitialResponse message");
    // One byte more is refused from its header.
    let mut over = login.clone();
    over.extend_from_slice(&[b'p', 0, 1, 0, 0]);
    let e = error_fields(&send_and_read(addr, &over).await);
    assert_eq!(e.code, "08P01", "{e:?}");
    assert_eq!(
        e.message,
        "message of 65536 bytes exceeds the maximum of 65535 bytes"
    );
    assert!(whereami(&app(addr).await).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_message_size_holds_after_login() {
    let s = setup(1, "auth_type = \"trust\"\nmax_message_size = 4096", "", "").await;
    let addr = s.addr("reader");
    // A Query whose length field says exactly 4096 runs.
    let mut sock = raw_session(addr).await;
    let sql = |len: usize| {
        let mut sql = "select 'fits' -- ".to_owned();
        sql.push_str(&"x".repeat(len - 4 - 1 - sql.len()));
        query(&sql)
    };
    let q = sql(4096);
    assert_eq!(&q[1..5], &4096u32.to_be_bytes());
    sock.write_all(&q).await.unwrap();
    read_until(&mut sock, &[b'Z', 0, 0, 0, 5, b'I']).await;
    // 4097 ends the session.
    sock.write_all(&sql(4097)).await.unwrap();
    let e = error_fields(&read_to_close(&mut sock).await);
    assert_eq!(e.code, "08P01", "{e:?}");
    assert_eq!(
        e.message,
        "message of 4097 bytes exceeds the maximum of 4096 bytes"
    );
    let c = connect(addr, "trustuser", "").await.unwrap();
    assert!(whereami(&c).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_logins_bounds_unauthenticated_connections() {
    let general = "max_pending_logins = 3\nadmin_listen = \"127.0.0.1:0\"\nadmin_users = [\"app\"]";
    let s = setup(1, general, "", "").await;
    let addr = s.addr("reader");
    let admin = s.fleet.admin.expect("admin_listen is served");
    let state = s.fleet.state.clone();
    // Authenticated clients hold no permit.
    let logged_in = app(addr).await;
    wait_for("no login pending", Duration::from_secs(5), || {
        state.pending_logins.in_use() == 0
    })
    .await;
    // Three connections that say nothing hold every permit of the endpoints.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(TcpStream::connect(addr).await.unwrap());
    }
    wait_for("three logins pending", Duration::from_secs(5), || {
        state.pending_logins.in_use() == 3
    })
    .await;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("app");
    let Err(e) = cfg.connect(tokio_postgres::NoTls).await else {
        panic!("a fourth login was let in");
    };
    assert_eq!(sqlstate(&e), "53300", "{e}");
    let message = e.as_db_error().map(|d| d.message().to_owned());
    assert_eq!(
        message.as_deref(),
        Some("too many connections waiting to log in (max_pending_logins)")
    );
    // The console has a budget of its own, and the client already in is not disturbed.
    let (ok, out) = blocking(|| console(admin, "app", "app", "SHOW VERSION"));
    assert!(ok, "{out}");
    assert!(whereami(&logged_in).await.0);
    // Once they leave, logins are let in again.
    drop(stalled);
    wait_for("no login pending", Duration::from_secs(5), || {
        state.pending_logins.in_use() == 0
    })
    .await;
    assert!(whereami(&app(addr).await).await.0);
}

/// A connection from `source` (a loopback address) to `addr`.
async fn connect_from(source: &str, addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(format!("{source}:0").parse().unwrap())?;
    sock.connect(addr).await
}

/// A flood of connections that never send a startup packet, from one address: it
/// holds no more than `max_pending_logins_per_address` of the pending logins, each for
/// no longer than `client_startup_timeout`, and neither a client from another address
/// nor the console is locked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_locks_out_no_one_else() {
    let general = "max_pending_logins = 50\nmax_pending_logins_per_address = 20\n\
        client_startup_timeout = \"2s\"\n\
        admin_listen = \"127.0.0.1:0\"\nadmin_users = [\"app\"]";
    let s = setup(1, general, "", "").await;
    let addr = s.addr("reader");
    let admin = s.fleet.admin.expect("admin_listen is served");
    let state = s.fleet.state.clone();
    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(connect_from("127.0.0.2", addr).await.unwrap());
    }
    for _ in 0..70 {
        if let Ok(c) = connect_from("127.0.0.2", admin).await {
            flood.push(c);
        }
    }
    let source: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    wait_for("the flood's logins pending", Duration::from_secs(5), || {
        state.pending_by_address.in_progress(source) == 20
    })
    .await;
    // Another address logs in, and so does the console.
    let started = std::time::Instant::now();
    assert!(whereami(&app(addr).await).await.0);
    let (ok, out) = blocking(|| console(admin, "app", "app", "SHOW VERSION"));
    assert!(ok, "{out}");
    // The flood's connections are each refused (53300) or dropped (08P01) in time.
    for sock in &mut flood[..60] {
        let e = error_fields(&read_to_close(sock).await);
        assert!(
            (e.code == "53300" && e.message.contains("max_pending_logins_per_address"))
                || (e.code == "08P01" && e.message.contains("client_startup_timeout")),
            "{e:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_for("no login pending", Duration::from_secs(5), || {
        state.pending_logins.in_use() == 0 && state.pending_by_address.in_progress(source) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_users_outside_its_lists_with_42501() {
    let general = "admin_listen = \"127.0.0.1:0\"\nadmin_users = [\"app\"]\nauth_type = \"md5\"";
    let s = setup(1, general, "", "").await;
    let admin = s.fleet.admin.expect("admin_listen is served");
    let console_as = |user: &str, password: &str| {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(admin.port())
            .user(user)
            .password(password)
            .dbname("pgfleet");
        cfg
    };
    // app_md5 authenticates (its password is right) but is in neither list.
    let Err(e) = console_as("app_md5", "app_md5")
        .connect(tokio_postgres::NoTls)
        .await
    else {
        panic!("a user outside admin_users and stats_users got the console");
    };
    assert_eq!(sqlstate(&e), "42501", "{e}");
    // An admin is served.
    let (ok, out) = blocking(|| console(admin, "app", "app", "SHOW VERSION"));
    assert!(ok && out.contains("pgfleet"), "{out}");
}
