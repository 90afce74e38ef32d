//! The admin console: who may use it, and SHOW BACKENDS.

mod common;

use std::time::Duration;

use common::*;

const ADMIN: &str =
    "admin_listen = \"127.0.0.1:0\"\nadmin_users = [\"app\"]\nstats_users = [\"pgcheck\"]";

/// psql against the console: (ok, output with `|` between columns).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_backends_lists_each_member_with_role_health_and_load() {
    let s = setup(2, ADMIN, "max_lag = \"1s\"", "").await;
    let admin = s.fleet.admin.expect("admin_listen is served");
    // A reader session in use on one replica.
    let reader = app(s.addr("reader")).await;
    let port = whereami(&reader).await.1;
    let (ok, out) = blocking(|| console(admin, "app", "app", "SHOW BACKENDS"));
    assert!(ok, "{out}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("cluster|member|source|role|health|state|lag_ms|lag_bytes|source_writer|zone|in_use|server_conns")
    );
    let rows: Vec<Vec<&str>> = lines
        .filter(|l| l.starts_with("main|"))
        .map(|l| l.split('|').collect())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row[1], s.cluster.addr(n).to_string());
        assert_eq!(row[2], "static");
        assert_eq!(row[3], if n == 0 { "primary" } else { "replica" });
        assert_eq!(&row[4..6], ["up", "serving"]);
        let in_use = if s.cluster.port(n) == port { "1" } else { "0" };
        assert_eq!(row[10], in_use, "{out}");
    }
    // A replica down shows as such.
    blocking(|| s.cluster.stop(2)).unwrap();
    let main = s.main();
    wait_for("node 2 is down", Duration::from_secs(3), || {
        main.nodes()[2].health() == pgfleet::cluster::Health::Down
    })
    .await;
    let (_, out) = blocking(|| console(admin, "pgcheck", "pgcheck", "show backends;"));
    let row = out
        .lines()
        .find(|l| l.contains(&s.cluster.addr(2).to_string()));
    let row = row.unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("|replica|down|out|"), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_admits_only_its_users_and_database() {
    let s = setup(1, &format!("{ADMIN}\nauth_type = \"md5\""), "", "").await;
    let admin = s.fleet.admin.expect("admin_listen is served");
    // stats_users run SHOW commands only.
    let (ok, out) = blocking(|| console(admin, "pgcheck", "pgcheck", "SHOW VERSION; RELOAD"));
    assert!(
        !ok && out.contains("pgfleet") && out.contains("only run SHOW"),
        "{out}"
    );
    let (ok, out) = blocking(|| console(admin, "app", "app", "SHOW VERSION"));
    assert!(ok && out.contains("pgfleet"), "{out}");
    // A user of neither list is refused after authenticating; so is a wrong password.
    let (ok, out) = blocking(|| console(admin, "app_md5", "app_md5", "SHOW VERSION"));
    assert!(
        !ok && out.contains("not in admin_users or stats_users"),
        "{out}"
    );
    let (ok, out) = blocking(|| console(admin, "app", "wrong", "SHOW VERSION"));
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );
    // Another database is not the console.
    let (ok, out) = blocking(|| {
        run(std::process::Command::new("psql")
            .args(["-X", "-h", "127.0.0.1", "-p"])
            .arg(admin.port().to_string())
            .args(["-U", "app", "-d", "app", "-c", "SHOW VERSION"])
            .env("PGPASSWORD", "app"))
    });
    assert!(!ok && out.contains("\"pgfleet\""), "{out}");
    // Unknown commands are errors, and the connection goes on.
    let (ok, out) = blocking(|| console(admin, "app", "app", "SHOW NOTHING"));
    assert!(!ok && out.contains("unknown command"), "{out}");
}

/// Rows of a console answer as columns, header first.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| l.contains('|'))
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// The value of `column` in the row whose columns include every one of `keys`.
fn cell(out: &str, keys: &[&str], column: &str) -> String {
    let rows = rows(out);
    let at = rows[0]
        .iter()
        .position(|c| c == column)
        .unwrap_or_else(|| panic!("no {column}: {out}"));
    let row = rows[1..]
        .iter()
        .find(|r| keys.iter().all(|k| r.iter().any(|c| c == k)))
        .unwrap_or_else(|| panic!("no row with {keys:?}: {out}"));
    row[at].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_report_pools_stats_databases_lists_and_config() {
    let pool = "pool_mode = \"transaction\"\ndefault_pool_size = 4";
    // The test configuration's stats_period is 1s.
    let s = setup(1, ADMIN, "", pool).await;
    let admin = s.fleet.admin.expect("admin_listen is served");
    let c = app(s.addr("reader")).await;
    for _ in 0..10 {
        c.batch_execute("select 1").await.unwrap();
    }
    let replica = s.cluster.addr(1).to_string();
    let show = |what: &str| {
        let (ok, out) = blocking(|| console(admin, "app", "app", &format!("SHOW {what}")));
        assert!(ok, "{out}");
        out
    };
    let out = show("POOLS");
    assert_eq!(cell(&out, &[&replica, "app"], "pool_size"), "4");
    assert_eq!(cell(&out, &[&replica, "app"], "pool_mode"), "transaction");
    assert_eq!(cell(&out, &[&replica, "app"], "sv_idle"), "1", "{out}");
    assert_eq!(cell(&out, &[&replica, "app"], "cl_waiting"), "0");
    let out = show("STATS");
    let xacts: u64 = cell(&out, &[&replica, "app"], "total_xact_count")
        .parse()
        .unwrap();
    assert!(xacts >= 10, "{out}");
    let out = show("DATABASES");
    assert_eq!(cell(&out, &["main.reader"], "members"), "1");
    assert_eq!(cell(&out, &["main.reader"], "role"), "replica");
    assert_eq!(cell(&out, &["main.writer"], "members"), "1");
    let out = show("LISTS");
    assert_eq!(cell(&out, &["users"], "items"), "4");
    assert_eq!(cell(&out, &["databases"], "items"), "3");
    assert_eq!(cell(&out, &["used_clients"], "items"), "1");
    let out = show("CONFIG");
    assert_eq!(
        cell(&out, &["clusters.main.pool.pool_mode"], "value"),
        "transaction"
    );
    assert_eq!(
        cell(&out, &["clusters.main.pool.default_pool_size"], "value"),
        "4"
    );
    // Averages cover the last stats_period: traffic that runs across two periods.
    let traffic = tokio::spawn(async move {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(3000) {
            c.batch_execute("select 1").await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = show("STATS");
    let avg: u64 = cell(&out, &[&replica, "app"], "avg_xact_count")
        .parse()
        .unwrap();
    assert!(avg > 0, "{out}");
    traffic.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_drains_a_member_and_enable_brings_it_back() {
    let s = setup(2, ADMIN, "", "").await;
    let admin = s.fleet.admin.expect("admin_listen is served");
    let reader = s.addr("reader");
    let one = s.cluster.addr(1).to_string();
    // A session on node 1 before it is disabled.
    let mut held = Vec::new();
    let mut on_one = None;
    for _ in 0..2 {
        let c = app(reader).await;
        if whereami(&c).await.1 == s.cluster.port(1) {
            on_one = Some(c);
        } else {
            held.push(c);
        }
    }
    let on_one = on_one.expect("a session on node 1");
    let (ok, out) = blocking(|| console(admin, "app", "app", &format!("DISABLE {one}")));
    assert!(ok, "{out}");
    let (_, out) = blocking(|| console(admin, "app", "app", "SHOW BACKENDS"));
    assert_eq!(cell(&out, &[&one], "state"), "disabled");
    for _ in 0..4 {
        let c = app(reader).await;
        assert_eq!(
            whereami(&c).await.1,
            s.cluster.port(2),
            "a disabled member takes no session"
        );
        held.push(c);
    }
    on_one
        .batch_execute("select 1")
        .await
        .expect("its running session goes on");
    let (ok, _) = blocking(|| console(admin, "app", "app", &format!("ENABLE {one}")));
    assert!(ok);
    // Node 2 holds five sessions, node 1 one: the next goes to node 1.
    let c = app(reader).await;
    assert_eq!(
        whereami(&c).await.1,
        s.cluster.port(1),
        "enabled: the least loaded again"
    );
    drop(held);
    let (ok, out) = blocking(|| console(admin, "app", "app", "DISABLE 127.0.0.1:1"));
    assert!(!ok && out.contains("no member"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_and_servers_then_kill_a_client() {
    let pool = "pool_mode = \"transaction\"";
    let s = setup(1, ADMIN, "", pool).await;
    let admin = s.fleet.admin.expect("admin_listen is served");
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(s.addr("reader").port())
        .user("app")
        .password("app")
        .dbname("app")
        .application_name("victim");
    let (victim, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let busy = app(s.addr("writer")).await;
    let running = tokio::spawn(async move {
        busy.batch_execute("select pg_sleep(1)").await.unwrap();
        busy
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, out) = blocking(|| console(admin, "app", "app", "SHOW CLIENTS"));
    assert!(ok, "{out}");
    let id = cell(&out, &["victim"], "id");
    assert_eq!(
        cell(&out, &["victim"], "state"),
        "idle",
        "transaction mode, between transactions"
    );
    assert_eq!(cell(&out, &["main", "writer"], "state"), "active", "{out}");
    assert_eq!(
        cell(&out, &["main", "writer"], "member"),
        s.cluster.addr(0).to_string()
    );
    let (ok, out) = blocking(|| console(admin, "app", "app", "SHOW SERVERS"));
    assert!(ok, "{out}");
    let primary = s.cluster.addr(0).to_string();
    assert_eq!(cell(&out, &[&primary], "state"), "active", "{out}");
    let busy = running.await.unwrap();
    let (_, out) = blocking(|| console(admin, "app", "app", "SHOW SERVERS"));
    assert_eq!(cell(&out, &[&primary], "state"), "idle", "{out}");
    // KILL_CLIENT ends that client only.
    let (ok, out) = blocking(|| console(admin, "app", "app", &format!("KILL_CLIENT {id}")));
    assert!(ok, "{out}");
    let e = victim.batch_execute("select 1").await.unwrap_err();
    assert!(e.is_closed() || e.to_string().contains("closed"), "{e:?}");
    busy.batch_execute("select 1").await.unwrap();
    let (ok, out) = blocking(|| console(admin, "app", "app", &format!("KILL_CLIENT {id}")));
    assert!(!ok && out.contains("no client"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_from_the_console_ends_every_session() {
    let s = setup(1, ADMIN, "", "").await;
    let admin = s.fleet.admin.expect("admin_listen is served");
    let c = app(s.addr("reader")).await;
    let (ok, out) = blocking(|| console(admin, "app", "app", "SHUTDOWN"));
    assert!(ok, "{out}");
    let e = c.batch_execute("select 1").await.unwrap_err();
    assert!(e.is_closed() || sqlstate(&e) == "57P01", "{e:?}");
    assert!(connect(s.addr("reader"), "app", "app").await.is_err());
    // A stats user may not stop pgfleet (checked on a fresh one below).
    let s2 = setup(1, ADMIN, "", "").await;
    let admin2 = s2.fleet.admin.expect("admin_listen is served");
    let (ok, out) = blocking(|| console(admin2, "pgcheck", "pgcheck", "SHUTDOWN"));
    assert!(!ok && out.contains("only run SHOW"), "{out}");
    app(s2.addr("reader"))
        .await
        .batch_execute("select 1")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_running_transactions_and_holds_new_ones_until_resume() {
    let s = setup(1, ADMIN, "", "pool_mode = \"transaction\"").await;
    let admin = s.fleet.admin.expect("admin_listen is served");
    let writer = s.addr("writer");
    let a = app(writer).await;
    let b = app(writer).await;
    let running = tokio::spawn(async move { a.batch_execute("select pg_sleep(1)").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // PAUSE answers once A's transaction is over.
    let started = std::time::Instant::now();
    let (ok, out) = blocking(|| console(admin, "app", "app", "PAUSE main"));
    assert!(ok, "{out}");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    running
        .await
        .unwrap()
        .expect("the running transaction finishes");
    let (_, out) = blocking(|| console(admin, "app", "app", "SHOW DATABASES"));
    assert_eq!(cell(&out, &["main.writer"], "paused"), "1");
    // B's next transaction waits for RESUME.
    let waiting = tokio::spawn(async move { b.batch_execute("select 1").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a transaction waits while paused");
    let (ok, out) = blocking(|| console(admin, "app", "app", "RESUME main"));
    assert!(ok, "{out}");
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("resumed")
        .unwrap()
        .expect("B's transaction runs after RESUME");
    let (ok, out) = blocking(|| console(admin, "app", "app", "PAUSE nosuch"));
    assert!(!ok && out.contains("no cluster"), "{out}");
}

/// A console session's rights are those of the configuration in force: a reload that
/// takes its user out of admin_users and stats_users ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_a_console_user_ends_its_session() {
    let s = setup(1, ADMIN, "", "").await;
    let admin = s.fleet.admin.expect("admin_listen is served");
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(admin.port())
        .user("app")
        .password("app")
        .dbname("pgfleet");
    let (client, connection) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    client.simple_query("SHOW VERSION").await.expect("an admin");

    let path = s.dir.path().join("pgfleet.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("admin_users = [\"app\"]", "admin_users = []");
    std::fs::write(&path, text).unwrap();
    pgfleet::fleet::reload(&s.fleet.state).await.unwrap();

    let e = client.simple_query("SHOW VERSION").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    let message = e.as_db_error().map(|d| d.message().to_owned());
    assert!(
        message.is_some_and(|m| m.contains("no longer in admin_users")),
        "{e:?}"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(ended.is_ok(), "the session is closed");
}

/// `auth_type = "trust"` opens the client endpoints, not the console: it keeps asking
/// for passwords unless `admin_auth = "trust"` says otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_for_clients_does_not_open_the_console() {
    let s = setup(1, &format!("{ADMIN}\nauth_type = \"trust\""), "", "").await;
    let admin = s.fleet.admin.expect("admin_listen is served");
    let (ok, out) = blocking(|| console(admin, "app", "wrong", "SHOW VERSION"));
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );
    let (ok, out) = blocking(|| console(admin, "app", "app", "SHOW VERSION"));
    assert!(ok && out.contains("pgfleet"), "{out}");

    let general = format!("{ADMIN}\nauth_type = \"trust\"\nadmin_auth = \"trust\"");
    let s = setup(1, &general, "", "").await;
    let admin = s.fleet.admin.expect("admin_listen is served");
    let (ok, out) = blocking(|| console(admin, "app", "wrong", "SHOW VERSION"));
    assert!(ok && out.contains("pgfleet"), "{out}");
}
