//! `pgfleet demo` stops the servers it started when it is told to stop by SIGTERM
//! (`kill`, `timeout`), not only by Ctrl-C, however early the signal comes.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The next line of the demo's output, waiting at most until `deadline`.
fn next_line(lines: &mpsc::Receiver<String>, deadline: Instant) -> String {
    let left = deadline.saturating_duration_since(Instant::now());
    lines
        .recv_timeout(left)
        .expect("the demo printed nothing more in time")
}

/// When the test sends SIGTERM.
#[derive(PartialEq)]
enum When {
    /// As soon as the demo has started: while it starts its servers and pgfleet.
    Starting,
    /// Once it prints its figures, after checking that its servers serve.
    Running,
}

/// Starts the demo, sends SIGTERM `when` says, and checks that the demo ends well and
/// its servers with it.
fn sigterm_stops_the_demo(when: When) {
    let errors = tempfile::NamedTempFile::new().expect("a file for the demo's stderr");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_pgfleet"))
        .args(["demo", "--replicas", "1", "--scale", "1"])
        .args(["--reader", "127.0.0.1:0", "--writer", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(errors.reopen().expect("the stderr file"))
        .spawn()
        .expect("pgfleet demo starts");
    let stdout = demo.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let sigterm = || {
        let rc = unsafe { libc::kill(demo.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0);
    };
    if when == When::Starting {
        next_line(&lines, deadline);
        sigterm();
    }
    let nodes: Vec<SocketAddr> = loop {
        let line = next_line(&lines, deadline);
        if let Some(list) = line.trim().strip_prefix("nodes:") {
            break list
                .split_whitespace()
                .map(|a| a.parse().unwrap())
                .collect();
        }
    };
    assert_eq!(nodes.len(), 2, "a primary and one replica");
    if when == When::Running {
        while !next_line(&lines, deadline).starts_with("Per node") {}
        for node in &nodes {
            assert!(
                TcpStream::connect(node).is_ok(),
                "{node} serves while the demo runs"
            );
        }
        sigterm();
    }

    let stop_deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= stop_deadline {
            let _ = demo.kill();
            let _ = demo.wait();
            let stderr = std::fs::read_to_string(errors.path()).unwrap_or_default();
            let out: Vec<String> = lines.try_iter().collect();
            panic!(
                "the demo did not stop within 60 s of SIGTERM; stdout {out:?}; stderr:\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the demo ended with {status}");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("Stopping the demo cluster")),
        "no word of stopping in {rest:?}"
    );
    for node in &nodes {
        assert!(
            TcpStream::connect(node).is_err(),
            "{node} still accepts connections after the demo stopped"
        );
    }
}

#[test]
fn sigterm_stops_the_running_demo_and_its_servers() {
    sigterm_stops_the_demo(When::Running);
}

#[test]
fn sigterm_while_the_demo_starts_stops_it_and_its_servers() {
    sigterm_stops_the_demo(When::Starting);
}
