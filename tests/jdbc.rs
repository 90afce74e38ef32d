//! pgjdbc (Debian's libpostgresql-jdbc-java) through both pool modes, with server-side
//! prepared statements from the first execution on (prepareThreshold=1).

mod common;

use common::*;

const JAR: &str = "/usr/share/java/postgresql.jar";

fn java_check(addr: std::net::SocketAddr) -> (bool, String) {
    let url = format!(
        "jdbc:postgresql://{}:{}/app?user=app&password=app&prepareThreshold=1&sslmode=disable",
        addr.ip(),
        addr.port()
    );
    run(std::process::Command::new("java")
        .args(["-cp", JAR, "tests/jdbc/Check.java"])
        .arg(url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_in_both_pool_modes() {
    if !std::path::Path::new(JAR).exists() {
        if std::env::var_os("PGFLEET_SKIP_DRIVERS").is_some() {
            println!("skipped: {JAR} is missing and PGFLEET_SKIP_DRIVERS is set");
            return;
        }
        panic!("{JAR} is missing: run .ci/run or apt-get install libpostgresql-jdbc-java");
    }
    for mode in ["session", "transaction"] {
        let pool = format!("pool_mode = \"{mode}\"\ndefault_pool_size = 3");
        let s = setup(1, "", "", &pool).await;
        let (ok, out) = blocking(|| java_check(s.addr("writer")));
        assert!(ok && out.contains("pgjdbc: ok"), "{mode} mode: {out}");
    }
}
