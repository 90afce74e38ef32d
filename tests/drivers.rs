//! Real client drivers against pgfleet, in session and in transaction mode: psycopg 3
//! and asyncpg (`tests/drivers/python/check.py`) and node-postgres
//! (`tests/drivers/node/check.js`), on the writer endpoint (COPY and writes included)
//! and then on the reader endpoint (reads, and the rows the writer runs left).
//!
//! The drivers are installed by `.ci/run`. Without them these tests fail; with
//! `PGFLEET_SKIP_DRIVERS=1` they are skipped with a notice.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// The most one script run may take (each script also stops itself earlier).
const SCRIPT_LIMIT: Duration = Duration::from_secs(600);

const INSTALL: &str = "run `.ci/run`, or install them by hand: \
     `pip install -r tests/drivers/python/requirements.txt` and \
     `(cd tests/drivers/node && npm ci)`";

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// False (with a notice) when `PGFLEET_SKIP_DRIVERS=1`; panics when a driver is missing.
fn drivers_wanted(test: &str) -> bool {
    if std::env::var("PGFLEET_SKIP_DRIVERS").as_deref() == Ok("1") {
        // Straight to stderr, past the test harness's capture: shown in every run.
        let _ = writeln!(
            std::io::stderr(),
            "NOTICE: {test} skipped (PGFLEET_SKIP_DRIVERS=1): Python and Node drivers not run"
        );
        return false;
    }
    let mut missing = Vec::new();
    let (ok, out) =
        try_run(std::process::Command::new(python()).args(["-c", "import psycopg, asyncpg"]));
    if !ok {
        missing.push(format!(
            "the Python drivers psycopg and asyncpg ({}): {}",
            python(),
            gist(&out)
        ));
    }
    let (ok, out) = try_run(
        std::process::Command::new("node")
            .args(["-e", "require('pg')"])
            .current_dir(drivers_dir().join("node")),
    );
    if !ok {
        missing.push(format!(
            "node-postgres (`pg` in tests/drivers/node): {}",
            gist(&out)
        ));
    }
    assert!(
        missing.is_empty(),
        "{test}: the driver tests need {}.\nTo install them, {INSTALL}. \
         To skip these tests, set PGFLEET_SKIP_DRIVERS=1.",
        missing.join("; and ")
    );
    true
}

/// The line of a failed import that says what is missing.
fn gist(out: &str) -> &str {
    let out = out.trim();
    out.lines()
        .find(|l| l.contains("Error"))
        .or_else(|| out.lines().last())
        .unwrap_or(out)
        .trim()
}

/// Like `common::run`, but a program that cannot start is a failure, not a panic.
fn try_run(cmd: &mut std::process::Command) -> (bool, String) {
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("cannot run {:?}: {e}", cmd.get_program())),
    }
}

fn dsn(addr: SocketAddr) -> String {
    format!("postgresql://app:app@{}:{}/app", addr.ip(), addr.port())
}

/// Runs one driver script to its end (killed after `SCRIPT_LIMIT`) and prints its
/// output. Returns None if it passed and printed each `summary`, else why not.
async fn script(
    label: &str,
    program: &str,
    args: &[&str],
    cwd: &Path,
    summaries: &[&str],
) -> Option<String> {
    let start = Instant::now();
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{label}: cannot start {program}: {e}"));
    let out = match tokio::time::timeout(SCRIPT_LIMIT, child.wait_with_output()).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("{label}: {e}")),
        Err(_) => {
            return Some(format!(
                "{label}: still running after {SCRIPT_LIMIT:?}; killed"
            ))
        }
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!(
        "--- {label} ({:.1}s)\n{}\n{}",
        start.elapsed().as_secs_f64(),
        stdout.trim_end(),
        stderr.trim_end()
    );
    let missing: Vec<&str> = summaries
        .iter()
        .copied()
        .filter(|s| !stdout.contains(s))
        .collect();
    if out.status.success() && missing.is_empty() {
        return None;
    }
    // The failures and the summary lines; the rest is in the output printed above.
    let lines: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| !l.starts_with("  "))
        .collect();
    Some(format!(
        "{label}: {} (missing summary: {missing:?})\n{}",
        out.status,
        lines.join("\n")
    ))
}

async fn python_checks(addr: SocketAddr, mode: &str, pool_mode: &str) -> Option<String> {
    let url = dsn(addr);
    let args = [
        "check.py",
        "--dsn",
        &url,
        "--mode",
        mode,
        "--pool-mode",
        pool_mode,
    ];
    let label = format!("{pool_mode} mode: python {mode}");
    let dir = drivers_dir().join("python");
    let summaries = ["psycopg: ok", "asyncpg: ok"];
    script(&label, &python(), &args, &dir, &summaries).await
}

async fn node_checks(addr: SocketAddr, mode: &str, pool_mode: &str) -> Option<String> {
    let url = dsn(addr);
    let args = [
        "check.js",
        "--dsn",
        &url,
        "--mode",
        mode,
        "--pool-mode",
        pool_mode,
    ];
    let label = format!("{pool_mode} mode: node {mode}");
    let dir = drivers_dir().join("node");
    script(&label, "node", &args, &dir, &["node-postgres: ok"]).await
}

/// A 1-primary, 2-replica cluster with pgfleet in `pool_mode`; every driver on the
/// writer, then on the reader (one script at a time: each holds up to 3 server
/// connections to steer its own transactions). Fails with every script's failures.
async fn all_drivers(pool_mode: &str, pool_size: usize) {
    let pool = format!(
        "pool_mode = \"{pool_mode}\"\ndefault_pool_size = {pool_size}\nquery_wait_timeout = \"30s\""
    );
    // One worker: the scripts steer a client's transactions onto other server
    // connections by holding connections with other clients, which works when all of
    // them take from one idle list (each worker keeps its own).
    let s = setup(2, "workers = 1", "", &pool).await;
    let (writer, reader) = (s.addr("writer"), s.addr("reader"));
    let mut failures = Vec::new();
    failures.extend(python_checks(writer, "write", pool_mode).await);
    failures.extend(node_checks(writer, "write", pool_mode).await);
    blocking(|| s.cluster.wait_caught_up()).expect("replicas catch up");
    failures.extend(python_checks(reader, "read", pool_mode).await);
    failures.extend(node_checks(reader, "read", pool_mode).await);
    // What the drivers wrote through the writer is on the replicas, read through pgfleet.
    let c = app(reader).await;
    match c
        .query_one(
            "select pg_is_in_recovery(), \
             (select count(*) from drv_psycopg.items), \
             (select count(*) from drv_asyncpg.items), \
             (select count(*) from drv_node.items)",
            &[],
        )
        .await
    {
        Ok(row) => {
            let counts: Vec<i64> = (1..4).map(|i| row.get(i)).collect();
            if !row.get::<_, bool>(0) || counts.contains(&0) {
                failures.push(format!(
                    "reader: in recovery {}, items per driver {counts:?}",
                    row.get::<_, bool>(0)
                ));
            }
        }
        Err(e) => failures.push(format!("reader: the drivers' tables: {e}")),
    }
    assert!(
        failures.is_empty(),
        "{} driver run(s) failed in {pool_mode} mode:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_in_session_mode() {
    if !drivers_wanted("drivers_in_session_mode") {
        return;
    }
    // Room for every connection a script opens at once (20 concurrent + 4).
    all_drivers("session", 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_in_transaction_mode() {
    if !drivers_wanted("drivers_in_transaction_mode") {
        return;
    }
    // Four server connections per pool: a script's 24 connections share them.
    all_drivers("transaction", 4).await;
}
