//! Session settings in transaction mode: reported parameters, SET/RESET, startup
//! settings and their server spelling, on whichever server connection a client gets.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

const TXN: &str = "pool_mode = \"transaction\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_the_client_and_stay_with_it() {
    // One server connection: the two clients take turns on it (with more, clients on
    // different workers would each keep their own).
    let s = setup(1, "", "", &format!("{TXN}\ndefault_pool_size = 1")).await;
    let addr = s.addr("reader");
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("app")
        .application_name("mine")
        .options("-c statement_timeout=4321");
    let (a, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let b = app(addr).await;
    a.batch_execute("SET search_path TO pg_catalog, public")
        .await
        .unwrap();
    a.batch_execute("SET DateStyle = 'German'").await.unwrap();
    let show = "select current_setting('application_name'), current_setting('statement_timeout'), current_setting('search_path'), current_setting('DateStyle')";
    let mut a_pids = HashSet::new();
    let mut b_pids = HashSet::new();
    for _ in 0..6 {
        // Interleave the two clients so their transactions swap server connections.
        let row = a.query_one(show, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "mine");
        assert_eq!(row.get::<_, String>(1), "4321ms");
        assert_eq!(row.get::<_, String>(2), "pg_catalog, public");
        assert_eq!(row.get::<_, String>(3), "German, DMY");
        a_pids.insert(backend_pid(&a).await);
        let row = b.query_one(show, &[]).await.unwrap();
        assert_ne!(row.get::<_, String>(0), "mine");
        assert_eq!(row.get::<_, String>(1), "0");
        assert_eq!(row.get::<_, String>(2), "\"$user\", public");
        assert_eq!(row.get::<_, String>(3), "ISO, MDY");
        b_pids.insert(backend_pid(&b).await);
    }
    assert!(
        a_pids.intersection(&b_pids).count() > 0,
        "the clients did share connections: {a_pids:?} {b_pids:?}"
    );
    a.batch_execute("RESET search_path").await.unwrap();
    let row = a.query_one(show, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(2), "\"$user\", public");
}

/// Statements that set DateStyle in the servers' logs so far.
fn datestyle_sets(s: &Setup) -> usize {
    let mut n = 0;
    let mut dirs = vec![s.cluster.dir().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.file_name().is_some_and(|f| f == "postgres.log") {
                let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                n += text
                    .lines()
                    .filter(|l| l.contains("statement:") && l.contains("set_config('DateStyle'"))
                    .count();
            }
        }
    }
    n
}

/// A pgjdbc-like client: startup settings, one query, Terminate; returns the greeting.
async fn one_query_client(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let params = [
        ("user", "trustuser"),
        ("database", "app"),
        ("DateStyle", "ISO"),
        ("extra_float_digits", "2"),
    ];
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(&startup(&params)).await.unwrap();
    let greeting = read_until(&mut sock, &[b'Z', 0, 0, 0, 5, b'I']).await;
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("select 1", &mut out).unwrap();
    sock.write_all(&out).await.unwrap();
    read_until(&mut sock, &[b'Z', 0, 0, 0, 5, b'I']).await;
    out.clear();
    postgres_protocol::message::frontend::terminate(&mut out);
    sock.write_all(&out).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut rest)).await;
    String::from_utf8_lossy(&greeting).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_in_the_servers_spelling_cost_no_round_trip() {
    // pgjdbc starts with DateStyle=ISO; PostgreSQL spells it "ISO, MDY". Once pgfleet
    // has seen that, later clients are greeted as PostgreSQL greets them and their
    // transactions need no statement to set it.
    let pool = format!("{TXN}\ndefault_pool_size = 1");
    let s = setup(1, "auth_type = \"trust\"", "", &pool).await;
    let addr = s.addr("reader");
    let sql = "alter role trustuser set log_statement = 'all'";
    blocking(|| s.cluster.psql(s.cluster.primary(), sql)).unwrap();
    blocking(|| s.cluster.wait_caught_up()).unwrap();
    one_query_client(addr).await;
    let before = datestyle_sets(&s);
    for _ in 0..20 {
        let greeting = one_query_client(addr).await;
        assert!(greeting.contains("DateStyle\0ISO, MDY\0"), "{greeting:?}");
    }
    // The server log is written as the statements run; the last client has left.
    let after = datestyle_sets(&s);
    assert_eq!(after - before, 0, "DateStyle statements for 20 clients");
}

/// RESET ALL / DISCARD ALL bring the client's startup settings back, as on PostgreSQL
/// (asyncpg's pool runs RESET ALL each time a connection goes back to it).
async fn reset_keeps_startup_settings(mode: &str) {
    let s = setup(
        1,
        "",
        "",
        &format!("pool_mode = \"{mode}\"\ndefault_pool_size = 2"),
    )
    .await;
    let addr = s.addr("reader");
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("app")
        .application_name("myapp")
        .options("-c search_path=foo -c statement_timeout=4321");
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let show = "select current_setting('application_name') || '|' || current_setting('search_path') || '|' || current_setting('statement_timeout')";
    let first = |rows: Vec<tokio_postgres::SimpleQueryMessage>| {
        rows.into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(
        first(c.simple_query(show).await.unwrap()),
        "myapp|foo|4321ms"
    );
    for reset in [
        "SET search_path TO bar; SET application_name = 'x'",
        "RESET ALL",
        "DISCARD ALL",
        "RESET search_path",
    ] {
        c.batch_execute(reset).await.unwrap();
        if reset.starts_with("SET") {
            continue;
        }
        assert_eq!(
            first(c.simple_query(show).await.unwrap()),
            "myapp|foo|4321ms",
            "{mode} after {reset}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_all_keeps_startup_settings_in_transaction_mode() {
    reset_keeps_startup_settings("transaction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_all_keeps_startup_settings_in_session_mode() {
    reset_keeps_startup_settings("session").await;
}
