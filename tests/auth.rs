//! Client authentication from auth_file and server login as the client's user.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_logins_and_failures() {
    let s = setup(1, "auth_type = \"scram-sha-256\"", "", "").await;
    let reader = s.addr("reader");
    // SCRAM secret in auth_file: pgfleet logs into PostgreSQL with the client's keys.
    let c = app(reader).await;
    assert!(whereami(&c).await.0);
    let e = connect(reader, "app", "wrong").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    // An unknown user gets the same error as a wrong password.
    let e = connect(reader, "nobody", "x").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert_eq!(
        message,
        "password authentication failed for user \"nobody\""
    );
    // An md5 secret cannot serve SCRAM: refused the same way.
    let e = connect(reader, "app_md5", "app_md5").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    // psql (libpq) too.
    let (ok, out) = blocking(|| psql(reader, "app", "app", "select current_user"));
    assert!(ok && out.trim() == "app", "{out}");
    let (ok, out) = blocking(|| psql(reader, "app", "bad", "select 1"));
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_logins_and_failures() {
    let s = setup(1, "auth_type = \"md5\"", "", "").await;
    let writer = s.addr("writer");
    let c = connect(writer, "app_md5", "app_md5")
        .await
        .expect("md5 login");
    let row = c.query_one("select current_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "app_md5");
    let e = connect(writer, "app_md5", "wrong").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    // With auth_type md5, a user whose entry is a SCRAM secret still logs in, with SCRAM.
    let c = connect(writer, "app", "app")
        .await
        .expect("scram under md5");
    whereami(&c).await;
    let e = connect(writer, "app", "wrong").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    let (ok, out) = blocking(|| psql(writer, "app_md5", "nope", "select 1"));
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_and_trust() {
    let s = setup(1, "auth_type = \"trust\"", "", "").await;
    let reader = s.addr("reader");
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(reader.port())
        .user("trustuser")
        .dbname("nosuchdb");
    let Err(e) = cfg.connect(tokio_postgres::NoTls).await else {
        panic!("unknown database accepted")
    };
    assert_eq!(sqlstate(&e), "3D000", "{e}");
    // trust towards the client; the server still wants app's password: pgfleet has only
    // a SCRAM secret and no client keys, so it cannot log in and says so.
    let e = connect(reader, "app", "").await.unwrap_err();
    assert_eq!(sqlstate(&e), "08006", "{e}");
    // A user the server trusts works end to end.
    let c = connect(reader, "trustuser", "").await.expect("trust login");
    assert!(whereami(&c).await.0);
}

/// The salt of the mock SCRAM exchange an unknown user gets from the pgfleet at `addr`.
async fn mock_salt(addr: std::net::SocketAddr) -> String {
    use common::raw::*;
    use tokio::io::AsyncWriteExt;
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(&startup(&[("user", "nobody_here"), ("database", "app")]))
        .await
        .unwrap();
    let mut buf = bytes::BytesMut::new();
    assert_eq!(auth_code(&read_message(&mut sock, &mut buf).await), 10);
    sock.write_all(&sasl_initial(b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"))
        .await
        .unwrap();
    let first = read_message(&mut sock, &mut buf).await;
    assert_eq!(auth_code(&first), 11);
    let text = String::from_utf8_lossy(&first[9..]).into_owned();
    let salt = text.split(',').find_map(|f| f.strip_prefix("s="));
    salt.expect("a salt").to_owned()
}

/// Two instances with the same `auth_mock_secret` answer an unknown user with the same
/// salt, as they do a known one: which users exist does not show across instances.
/// Without it, each process has its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_auth_mock_secret_answer_unknown_users_alike() {
    let cluster = common::blocking(|| pgfleet::harness::TestCluster::start(0)).unwrap();
    let shared = "auth_mock_secret = \"fleet-wide\"";
    let (a, _da) = common::start_fleet(&cluster, shared, "", "").await;
    let (b, _db) = common::start_fleet(&cluster, shared, "", "").await;
    let (c, _dc) = common::start_fleet(&cluster, "", "", "").await;
    let salt = |f: &pgfleet::Fleet| mock_salt(f.endpoints["main.writer"]);
    let (sa, sb, sc) = (salt(&a).await, salt(&b).await, salt(&c).await);
    assert_eq!(sa, sb);
    assert_ne!(sa, sc);
    assert_eq!(sa, salt(&a).await, "the same on every try");
}
