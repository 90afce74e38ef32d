//! Session pooling: limits, lifetimes, warm-up, checks, resets, client settings.

mod common;

use std::time::Duration;

use common::*;

async fn app_backends(s: &Setup, node: usize) -> usize {
    let sql = "select count(*) from pg_stat_activity where usename = 'app'";
    blocking(|| s.cluster.psql(node, sql))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_plus_one_gets_53300() {
    let s = setup(1, "max_client_conn = 3", "", "").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(app(s.addr("reader")).await);
    }
    let e = connect(s.addr("writer"), "app", "app").await.unwrap_err();
    assert_eq!(sqlstate(&e), "53300", "{e}");
    held.pop();
    // The slot is free again once a client leaves.
    wait_for("a client slot frees up", Duration::from_secs(5), || {
        s.fleet.state.client_slots.in_use() == 2
    })
    .await;
    app(s.addr("writer")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_reuse_server_connections_until_server_lifetime() {
    let s = setup(
        1,
        "",
        "",
        "server_lifetime = \"3s\"\nserver_check_delay = \"0s\"",
    )
    .await;
    let main = s.main();
    let idle = || main.pools.all().iter().map(|p| p.idle()).sum::<usize>();
    let first = backend_pid(&app(s.addr("reader")).await).await;
    // Released, reset, reused by the next session.
    wait_for(
        "the connection is back in the pool",
        Duration::from_secs(5),
        || idle() == 1,
    )
    .await;
    let second = backend_pid(&app(s.addr("reader")).await).await;
    assert_eq!(first, second, "the pooled server connection is reused");
    wait_for(
        "the connection is back in the pool",
        Duration::from_secs(5),
        || idle() == 1,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let third = backend_pid(&app(s.addr("reader")).await).await;
    assert_ne!(
        second, third,
        "a server connection older than server_lifetime is not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_when_the_pool_is_full() {
    let s = setup(
        1,
        "",
        "",
        "default_pool_size = 1\nquery_wait_timeout = \"1s\"",
    )
    .await;
    let held = app(s.addr("reader")).await;
    held.simple_query("select 1").await.unwrap();
    // As in PgBouncer, a session-mode client takes its server connection with its
    // first query, not at login: the login succeeds, the query waits and fails.
    let second = app(s.addr("reader")).await;
    let started = std::time::Instant::now();
    let e = second.simple_query("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57P03", "{e}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(started.elapsed() < Duration::from_secs(5));
    // A waiting client gets the connection as soon as the holder leaves.
    let third = app(s.addr("reader")).await;
    let waiter = tokio::spawn(async move {
        let r = third.simple_query("select 1").await.map(|_| ());
        (r, s)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    let (r, _s) = waiter.await.unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_warms_every_replica() {
    let s = setup(2, "", "", "min_pool_size = 3").await;
    // The pools exist once a client of (app, app) has come.
    drop(app(s.addr("reader")).await);
    for node in [1, 2] {
        let mut n = 0;
        for _ in 0..100 {
            n = app_backends(&s, node).await;
            if n >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(n, 3, "node {node} keeps min_pool_size connections");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_check_query_drops_dead_connections() {
    let s = setup(1, "", "", "server_check_delay = \"0s\"").await;
    let pid = backend_pid(&app(s.addr("writer")).await).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sql = format!("select pg_terminate_backend({pid})");
    blocking(|| s.cluster.psql(0, &sql)).unwrap();
    let c = app(s.addr("writer")).await;
    let next = backend_pid(&c).await;
    assert_ne!(pid, next, "a dead pooled connection is never handed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_apply_per_client_and_reset_between_sessions() {
    let s = setup(1, "", "", "default_pool_size = 1").await;
    let mut cfg = tokio_postgres::Config::new();
    let addr = s.addr("reader");
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("app")
        .application_name("first-app")
        .options("-c search_path=custom,public -c statement_timeout=1234");
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = c
        .query_one("select current_setting('application_name'), current_setting('search_path'), current_setting('statement_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "first-app");
    assert_eq!(row.get::<_, String>(1), "custom,public");
    assert_eq!(row.get::<_, String>(2), "1234ms");
    c.batch_execute("set work_mem = '7MB'; prepare p as select 1")
        .await
        .unwrap();
    let pid = backend_pid(&c).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Same server connection (pool size 1), nothing of the first session left.
    let c = app(addr).await;
    assert_eq!(backend_pid(&c).await, pid);
    let row = c
        .query_one("select current_setting('application_name'), current_setting('work_mem'), (select count(*) from pg_prepared_statements where name = 'p')", &[])
        .await
        .unwrap();
    assert_ne!(row.get::<_, String>(0), "first-app");
    assert_eq!(row.get::<_, String>(1), "4MB");
    assert_eq!(row.get::<_, i64>(2), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_brings_back_only_the_startup_settings_it_names() {
    let s = setup(0, "", "", "default_pool_size = 1").await;
    let addr = s.addr("writer");
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("app")
        .options("-c IntervalStyle=postgres_verbose -c DateStyle=Postgres,MDY");
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let show = "select current_setting('IntervalStyle'), current_setting('DateStyle')";
    let row = c.query_one(show, &[]).await.unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "postgres_verbose",
        "startup options reach the server"
    );
    assert_eq!(row.get::<_, String>(1), "Postgres, MDY");
    // As pg_regress does: a setting changed, then an unrelated one reset.
    c.batch_execute("set IntervalStyle = iso_8601; set enable_seqscan = off")
        .await
        .unwrap();
    c.batch_execute("reset enable_seqscan").await.unwrap();
    let row = c.query_one(show, &[]).await.unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "iso_8601",
        "an unrelated RESET keeps it"
    );
    c.batch_execute("reset IntervalStyle").await.unwrap();
    let row = c.query_one(show, &[]).await.unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "postgres_verbose",
        "RESET brings the startup value back"
    );
    c.batch_execute("set DateStyle = ISO; set IntervalStyle = sql_standard; reset all")
        .await
        .unwrap();
    let row = c.query_one(show, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "postgres_verbose");
    assert_eq!(row.get::<_, String>(1), "Postgres, MDY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_inside_a_transaction_is_rolled_back() {
    let s = setup(1, "", "", "default_pool_size = 1").await;
    let addr = s.addr("writer");
    let c = app(addr).await;
    c.batch_execute("create table t_rb(i int)").await.unwrap();
    c.batch_execute("begin; insert into t_rb values (1)")
        .await
        .unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = app(addr).await;
    let n: i64 = c
        .query_one("select count(*) from t_rb", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // And a client that dies while its query runs: the server connection is closed.
    let pid = backend_pid(&c).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut victim = std::process::Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "-U",
            "app",
            "-d",
            "app",
        ])
        .args(["-c", "select pg_backend_pid(), pg_sleep(5)"])
        .env("PGPASSWORD", "app")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it only once its query runs on the server.
    let running = "select count(*) from pg_stat_activity where query like '%pg_sleep(5)%' and state = 'active' and usename = 'app'";
    for _ in 0..100 {
        if blocking(|| s.cluster.psql(0, running)).unwrap() == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    let c = app(addr).await;
    assert_ne!(
        backend_pid(&c).await,
        pid,
        "the connection left mid-query is not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_idle_timeout_closes_idle_connections() {
    let s = setup(1, "", "", "server_idle_timeout = \"1s\"").await;
    drop(app(s.addr("writer")).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app_backends(&s, 0).await,
        1,
        "the released connection stays pooled"
    );
    let mut n = 1;
    for _ in 0..40 {
        n = app_backends(&s, 0).await;
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n, 0, "closed after server_idle_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_is_shared_by_the_users_of_a_database() {
    let pool = "max_db_connections = 1\nquery_wait_timeout = \"1s\"";
    let s = setup(1, "auth_type = \"md5\"", "", pool).await;
    let writer = s.addr("writer");
    let held = app(writer).await;
    let e = connect(writer, "app_md5", "app_md5").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57P03", "{e}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // app's idle connection is closed to make room for app_md5's.
    let c = connect(writer, "app_md5", "app_md5")
        .await
        .expect("room after eviction");
    whereami(&c).await;
    assert_eq!(app_backends(&s, 0).await, 0);
}
