//! Exercises every method of the real-cluster harness against real
//! PostgreSQL servers. Run as root to cover the `runuser -u postgres` path.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use pgfleet::harness::{PasswordEncryption, TestCluster};

/// Sends harness logs to the test output when RUST_LOG is set.
fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

/// Runs `select`-style `sql` with psql from PATH over TCP to `port` as
/// `user` (with `password` in PGPASSWORD if given). Returns trimmed stdout,
/// or stderr as the error.
fn psql_tcp(
    port: u16,
    user: &str,
    password: Option<&str>,
    db: &str,
    sql: &str,
) -> Result<String, String> {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1"])
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            db,
        ])
        .args(["-c", sql])
        .env("PGCONNECT_TIMEOUT", "2")
        .env_remove("PGPASSWORD");
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// True if a TCP connect to `port` on 127.0.0.1 is refused.
fn refused(port: u16) -> bool {
    matches!(
        TcpStream::connect(("127.0.0.1", port)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Live (non-zombie) processes whose working directory is under `dir`:
/// every postgres server process chdirs into its data directory.
fn processes_under(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, r)| r.starts_with('Z') || r.starts_with('X'))
            })
            .unwrap_or(true);
        if cwd.starts_with(dir) && !zombie {
            pids.push(pid);
        }
    }
    pids
}

/// The `/dev/shm/PostgreSQL.*` files that the processes `pids` (space-separated)
/// have mapped.
fn shm_mapped(pids: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for pid in pids.split_whitespace() {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
            let path = std::path::PathBuf::from(path);
            if path.starts_with("/dev/shm") && !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

/// Asserts `TestCluster`'s drop left no process and no directory behind.
fn assert_cleaned(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_under(dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_under(dir), Vec::<i32>::new(), "processes left");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn start_replication_and_authentication() {
    init_tracing();
    let t0 = Instant::now();
    let c = TestCluster::start(2).unwrap();
    eprintln!("TestCluster::start(2) took {:?}", t0.elapsed());

    assert_eq!(c.len(), 3);
    assert_eq!(c.primary(), 0);
    assert!(c.dir().starts_with("/tmp"));
    let name = c.dir().file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("pgfleet-test-"), "{name}");
    assert!(c.socket_dir().starts_with(c.dir()));
    let hosts = c.hosts();
    assert_eq!(hosts.len(), 3);
    for (n, host) in hosts.iter().enumerate() {
        let port = c.port(n);
        assert!((20000..32000).contains(&port));
        assert_eq!(c.addr(n).to_string(), format!("127.0.0.1:{port}"));
        assert_eq!(host, &format!("127.0.0.1:{port}"));
        assert!(c.socket_dir().join(format!(".s.PGSQL.{port}")).exists());
    }
    assert!(c.port(0) != c.port(1) && c.port(1) != c.port(2) && c.port(0) != c.port(2));

    assert!(!c.is_in_recovery(0).unwrap());
    assert!(c.is_in_recovery(1).unwrap());
    assert!(c.is_in_recovery(2).unwrap());
    // Every server runs as the postgres system user.
    assert_eq!(c.psql(0, "select current_user").unwrap(), "postgres");

    // Replication.
    c.psql(
        0,
        "create table t(i int); insert into t select generate_series(1, 10);",
    )
    .unwrap();
    c.wait_caught_up().unwrap();
    for n in [1, 2] {
        assert_eq!(c.psql(n, "select sum(i) from t").unwrap(), "55");
    }
    assert_eq!(
        c.psql_db(1, "app", "select current_database()").unwrap(),
        "app"
    );
    // Multi-line output is returned trimmed, errors carry psql's stderr.
    assert_eq!(
        c.psql(0, "select 1 union all select 2 order by 1").unwrap(),
        "1\n2"
    );
    let err = format!(
        "{:#}",
        c.psql(0, "select * from no_such_table").unwrap_err()
    );
    assert!(err.contains("no_such_table"), "{err}");

    // Built-in roles and stored secrets.
    assert!(c
        .stored_secret("app")
        .unwrap()
        .starts_with("SCRAM-SHA-256$"));
    assert!(c
        .stored_secret("pgcheck")
        .unwrap()
        .starts_with("SCRAM-SHA-256$"));
    assert!(c.stored_secret("app_md5").unwrap().starts_with("md5"));
    assert!(c.stored_secret("trustuser").is_err());
    assert!(c.stored_secret("nobody").is_err());

    // Logins over TCP, on the primary and a replica.
    for port in [c.port(0), c.port(2)] {
        assert_eq!(
            psql_tcp(port, "app", Some("app"), "app", "select 1").unwrap(),
            "1"
        );
        assert_eq!(
            psql_tcp(port, "app_md5", Some("app_md5"), "app", "select 1").unwrap(),
            "1"
        );
        let err = psql_tcp(port, "app", Some("wrong"), "app", "select 1").unwrap_err();
        assert!(err.contains("password authentication failed"), "{err}");
        let err = psql_tcp(port, "app_md5", Some("wrong"), "app", "select 1").unwrap_err();
        assert!(err.contains("password authentication failed"), "{err}");
        assert_eq!(
            psql_tcp(port, "trustuser", None, "app", "select 1").unwrap(),
            "1"
        );
        let monitor = "select pg_has_role('pgcheck', 'pg_monitor', 'member')";
        assert_eq!(
            psql_tcp(port, "pgcheck", Some("pgcheck"), "postgres", monitor).unwrap(),
            "t"
        );
        // The superuser has no password and may not log in over TCP.
        assert!(psql_tcp(port, "postgres", Some("x"), "postgres", "select 1").is_err());
    }

    // create_user with both encodings; the new roles can use database app.
    c.create_user("u_scram", "pw'1", PasswordEncryption::Scram)
        .unwrap();
    c.create_user("u_md5", "pw2", PasswordEncryption::Md5)
        .unwrap();
    assert!(c
        .stored_secret("u_scram")
        .unwrap()
        .starts_with("SCRAM-SHA-256$"));
    assert!(c.stored_secret("u_md5").unwrap().starts_with("md5"));
    let create = "create table u_t(i int); insert into u_t values (1); select count(*) from u_t";
    assert_eq!(
        psql_tcp(c.port(0), "u_scram", Some("pw'1"), "app", create).unwrap(),
        "1"
    );
    assert_eq!(
        psql_tcp(
            c.port(0),
            "u_md5",
            Some("pw2"),
            "app",
            "select current_user"
        )
        .unwrap(),
        "u_md5"
    );
    assert!(psql_tcp(c.port(0), "u_md5", Some("pw'1"), "app", "select 1").is_err());

    // pgbench tables exist on the replicas and every role may read them.
    c.pgbench_init(1).unwrap();
    let count = "select count(*) from pgbench_accounts";
    assert_eq!(
        psql_tcp(c.port(1), "app_md5", Some("app_md5"), "app", count).unwrap(),
        "100000"
    );
    assert_eq!(
        psql_tcp(c.port(2), "trustuser", None, "app", count).unwrap(),
        "100000"
    );
}

#[test]
fn failover_kill_restart_and_rebuild() {
    init_tracing();
    let c = TestCluster::start(2).unwrap();
    c.psql(
        0,
        "create table before(i int); insert into before values (1);",
    )
    .unwrap();
    c.wait_caught_up().unwrap();

    // Kill and restart a replica: the dynamic shared memory its processes had
    // mapped goes with it.
    let pids = c
        .psql(2, "select string_agg(pid::text, ' ') from pg_stat_activity")
        .unwrap();
    let segments = shm_mapped(&pids);
    assert!(!segments.is_empty(), "node 2 maps no /dev/shm segment");
    c.kill(2).unwrap();
    let left: Vec<_> = segments.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "segments left by the kill: {left:?}");
    assert!(refused(c.port(2)));
    assert!(c.psql(2, "select 1").is_err());
    assert!(c.kill(2).is_err(), "not running");
    c.start_node(2).unwrap();
    assert!(!refused(c.port(2)));
    assert!(c.is_in_recovery(2).unwrap());
    assert!(c.start_node(2).is_err(), "already running");

    // Clean stop and restart of a replica.
    c.stop(2).unwrap();
    assert!(refused(c.port(2)));
    c.start_node(2).unwrap();
    c.psql(0, "insert into before values (2);").unwrap();
    c.wait_caught_up().unwrap();
    assert_eq!(c.psql(2, "select sum(i) from before").unwrap(), "3");

    // Promotion.
    c.promote(1).unwrap();
    assert_eq!(c.primary(), 1);
    assert!(!c.is_in_recovery(1).unwrap());
    c.psql(
        1,
        "create table after(i int); insert into after values (2);",
    )
    .unwrap();
    // Node 2 still follows node 0 (not re-pointed), so it is not waited for.
    c.wait_caught_up().unwrap();
    assert!(c.is_in_recovery(2).unwrap());
    assert!(
        c.rebuild_as_replica(1).is_err(),
        "cannot rebuild the primary"
    );

    // The old primary (still running) comes back as a replica of node 1, on
    // the same port.
    let port0 = c.port(0);
    c.rebuild_as_replica(0).unwrap();
    assert_eq!(c.port(0), port0);
    assert!(c.is_in_recovery(0).unwrap());
    assert_eq!(
        c.psql(0, "select sender_port from pg_stat_wal_receiver")
            .unwrap(),
        c.port(1).to_string()
    );
    c.psql(1, "insert into after values (3);").unwrap();
    c.wait_caught_up().unwrap();
    assert_eq!(c.psql(0, "select sum(i) from after").unwrap(), "5");
    assert_eq!(c.psql(0, "select sum(i) from before").unwrap(), "3");

    // A stopped replica can be rebuilt too.
    c.stop(2).unwrap();
    c.rebuild_as_replica(2).unwrap();

    // Crash and restart the primary; its replicas reconnect.
    c.kill(1).unwrap();
    assert!(refused(c.port(1)));
    c.start_node(1).unwrap();
    assert!(!c.is_in_recovery(1).unwrap());
    c.psql(1, "insert into after values (4);").unwrap();
    c.wait_caught_up().unwrap();
    for node in [0, 2] {
        assert_eq!(c.psql(node, "select sum(i) from after").unwrap(), "9");
    }
}

#[tokio::test]
async fn pause_resume_and_add_replica() {
    init_tracing();
    let mut c = TestCluster::start(1).unwrap();
    let port = c.port(1);
    let ping = || psql_tcp(port, "trustuser", None, "postgres", "select 1");
    assert_eq!(ping().unwrap(), "1");

    c.pause(1).unwrap();
    let t = Instant::now();
    assert!(ping().is_err(), "a paused node must not answer");
    assert!(t.elapsed() >= Duration::from_secs(1), "failed by timeout");
    assert!(
        !refused(port),
        "a paused node still accepts TCP connections"
    );
    c.resume(1).unwrap();
    assert_eq!(ping().unwrap(), "1");

    // A paused primary: replicas cannot catch up, then can.
    c.pause(0).unwrap();
    assert!(c.psql(1, "select 1").is_ok(), "replica still answers");
    c.resume(0).unwrap();
    c.psql(0, "create table p(i int); insert into p values (7);")
        .unwrap();
    c.wait_caught_up().unwrap();
    assert_eq!(c.psql(1, "select i from p").unwrap(), "7");

    // Stopping a paused node resumes it first.
    c.pause(1).unwrap();
    c.stop(1).unwrap();
    assert!(refused(port));
    c.start_node(1).unwrap();
    assert_eq!(ping().unwrap(), "1");

    // add_replica.
    let n = c.add_replica().unwrap();
    assert_eq!(n, 2);
    assert_eq!(c.len(), 3);
    assert_eq!(c.hosts().len(), 3);
    assert!(c.is_in_recovery(2).unwrap());
    c.psql(0, "insert into p values (8);").unwrap();
    c.wait_caught_up().unwrap();
    for node in [1, 2] {
        assert_eq!(c.psql(node, "select sum(i) from p").unwrap(), "15");
    }
    let streaming = "select count(*) from pg_stat_replication where state = 'streaming'";
    assert_eq!(c.psql(0, streaming).unwrap(), "2");
}

#[test]
fn drop_stops_everything_and_removes_the_dir() {
    init_tracing();
    let c = TestCluster::start(2).unwrap();
    let dir: PathBuf = c.dir().to_path_buf();
    // Leave the cluster in awkward states: one node paused, one killed.
    c.pause(1).unwrap();
    c.kill(2).unwrap();
    let before = processes_under(&dir);
    assert!(before.len() >= 6, "found only {before:?}");
    // As root the servers run as the postgres system user, else as us.
    let expected_uid = if unsafe { libc::geteuid() } == 0 {
        let out = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    } else {
        unsafe { libc::geteuid() }.to_string()
    };
    for pid in &before {
        // Node 2's processes (just killed) and short-lived workers may be gone by now.
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let uid = uid_line.split_whitespace().nth(1).unwrap();
        assert_eq!(uid, expected_uid, "process {pid} runs as uid {uid}");
    }
    drop(c);
    assert_cleaned(&dir);
}

#[test]
fn drop_during_panic_unwind() {
    init_tracing();
    let seen: Mutex<Option<PathBuf>> = Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = TestCluster::start(1).unwrap();
        *seen.lock().unwrap() = Some(c.dir().to_path_buf());
        assert!(!processes_under(c.dir()).is_empty());
        panic!("test failure while a cluster is up");
    }));
    assert!(result.is_err());
    let dir = seen.lock().unwrap().clone().unwrap();
    assert_cleaned(&dir);
}
