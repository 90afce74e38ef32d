//! The admin console: who may use it, and SHOW BACKENDS.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

const ADMIN: &str =
    "admin_listen = \"127.0.0.1:0\"\nadmin_users = [\"app\"]\nstats_users = [\"pgcheck\"]";

/// psql against the console: (ok, output with `|` between columns).
fn console(addr: SocketAddr, user: &str, password: &str, sql: &str) -> (bool, String) {
    run(std::process::Command::new("psql")
        .args(["-X", "-A", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", user, "-d", "pgfleet", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "20"))
}

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
