//! The command line: `check` validates and prints, `run` serves until SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_pgfleet");

#[test]
fn check_prints_the_effective_config_or_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("userlist.txt"), "\"app\" \"app\"\n").unwrap();
    let good = "[clusters.main]\nhosts = [\"127.0.0.1:5432\"]\n[clusters.main.endpoints.reader]\nlisten = \"127.0.0.1:6432\"\nrole = \"replica\"\n";
    let path = dir.path().join("main.toml");
    std::fs::write(&path, good).unwrap();
    let (ok, out) = run(Command::new(BIN).arg("check").arg("--config").arg(&path));
    assert!(ok, "{out}");
    assert!(
        out.contains("default_pool_size = 20") && out.contains("server_lifetime = \"1h\""),
        "{out}"
    );
    // A directory of files works the same.
    let (ok, out) = run(Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(dir.path()));
    assert!(ok, "{out}");

    std::fs::write(&path, format!("{good}pool_size = 3\n")).unwrap();
    let (ok, out) = run(Command::new(BIN).arg("check").arg("--config").arg(&path));
    assert!(!ok);
    assert!(
        out.contains("main.toml") && out.contains("pool_size"),
        "{out}"
    );

    std::fs::write(&path, good.replace("replica", "reader")).unwrap();
    let (ok, out) = run(Command::new(BIN).arg("check").arg("--config").arg(&path));
    assert!(
        !ok && out.contains("main.toml") && out.contains("reader"),
        "{out}"
    );

    std::fs::write(&path, good).unwrap();
    std::fs::write(dir.path().join("userlist.txt"), "\"app\" \"app\n").unwrap();
    let (ok, out) = run(Command::new(BIN).arg("check").arg("--config").arg(&path));
    assert!(
        !ok && out.contains("userlist.txt") && out.contains("line 1"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_and_stops_on_sigterm() {
    let cluster = blocking(|| pgfleet::harness::TestCluster::start(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("userlist.txt"),
        blocking(|| userlist(&cluster)),
    )
    .unwrap();
    let (reader, writer) = (free_port(), free_port());
    let text = config_text(&cluster, "", "", "")
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{reader}"), 1)
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{writer}"), 1)
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()), 1);
    let path = dir.path().join("pgfleet.toml");
    std::fs::write(&path, text).unwrap();
    // systemd's side of sd_notify.
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let notified = || {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(blocking(notified), "READY=1");
    let addr = format!("127.0.0.1:{reader}").parse().unwrap();
    let start = Instant::now();
    let (ok, out) = loop {
        let (ok, out) = blocking(|| psql(addr, "app", "app", "select pg_is_in_recovery()"));
        if ok || start.elapsed() > Duration::from_secs(15) {
            break (ok, out);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ok && out.trim() == "t", "{out}");
    // Let one stats_period (1s) pass after the traffic.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGHUP reloads the configuration, and systemd is told so.
    // SAFETY: kill(2) with the pid of the child this test started.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    assert_eq!(rc, 0);
    assert!(blocking(notified).starts_with("RELOADING=1"));
    assert_eq!(blocking(notified), "READY=1");
    let (ok, out) = blocking(|| psql(addr, "app", "app", "select 1"));
    assert!(ok, "still serving after SIGHUP: {out}");
    // SAFETY: as above.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    assert_eq!(blocking(notified), "STOPPING=1");
    let status = blocking(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert!(
        status.is_some_and(|s| s.success()),
        "pgfleet did not exit cleanly on SIGTERM"
    );
    let mut logs = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut logs).unwrap();
    assert!(
        logs.lines().any(|l| l.contains("\"client connected\"")),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("\"client disconnected\"") && l.contains("duration_ms")),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("\"stats\"") && l.contains("xact_per_s")),
        "{logs}"
    );
}
