//! One node's files and the server-side programs run on it (`initdb`,
//! `pg_ctl`, `pg_basebackup`), plus the teardown used when dropping.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::bins::PgBins;
use super::command::{run, Runner};
use super::process;

/// Timeout for `pg_ctl` waits (start, stop, promote), in seconds.
const PG_CTL_WAIT_SECS: u64 = 60;

/// Static facts of one node.
#[derive(Debug, Clone)]
pub(super) struct Node {
    /// Position in the cluster (also used in `cluster_name`).
    pub index: usize,
    /// `<tmp>/node<index>`: holds the data directory and the log.
    pub dir: PathBuf,
    /// TCP port on 127.0.0.1 (also names the unix socket).
    pub port: u16,
    /// The unix-socket directory shared by the cluster's nodes.
    pub socket_dir: PathBuf,
}

impl Node {
    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server log file written by `pg_ctl -l`.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Current length of the log (to read only what a later start wrote).
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(self.log_file()).map_or(0, |m| m.len())
    }

    /// The log text written after byte `offset`, at most the last 4 KiB.
    pub fn log_since(&self, offset: u64) -> String {
        let bytes = std::fs::read(self.log_file()).unwrap_or_default();
        let start = (offset as usize).min(bytes.len());
        let start = start.max(bytes.len().saturating_sub(4096));
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// Removes lock files left by a killed postmaster (see
    /// [`process::clear_stale_locks`]).
    pub fn clear_stale_locks(&self) -> Result<()> {
        let lock = self.socket_dir.join(format!(".s.PGSQL.{}.lock", self.port));
        process::clear_stale_locks(&self.data_dir(), &lock)
    }

    /// The live postmaster's pid, if the server is running.
    pub fn postmaster(&self) -> Option<i32> {
        process::postmaster(&self.data_dir())
    }
}

/// `initdb` a fresh data directory for `node` (superuser `postgres`, trust,
/// C locale, no fsync, 1 MB WAL segments: halves the time of `initdb` and of
/// every base backup, which otherwise write a zero-filled 16 MB segment).
pub(super) fn initdb(bins: &PgBins, runner: &Runner, node: &Node) -> Result<()> {
    let mut cmd = runner.server(&bins.server("initdb"));
    cmd.arg("-D")
        .arg(node.data_dir())
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
        .args(["--no-sync", "--no-instructions", "--wal-segsize=1"]);
    run(cmd, None, Duration::from_secs(120)).map(|_| ())
}

/// `pg_basebackup -R -X stream -c fast` of the server on `from_port` into
/// `node`'s (absent) data directory.
pub(super) fn basebackup(
    bins: &PgBins,
    runner: &Runner,
    from_port: u16,
    node: &Node,
) -> Result<()> {
    let mut cmd = runner.server(&bins.server("pg_basebackup"));
    cmd.arg("-D")
        .arg(node.data_dir())
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &from_port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-w"]);
    run(cmd, None, Duration::from_secs(300)).map(|_| ())
}

/// `pg_ctl start -w`. On failure the error includes the new log lines.
pub(super) fn start(bins: &PgBins, runner: &Runner, node: &Node) -> Result<()> {
    tracing::debug!(node = node.index, port = node.port, dir = %node.dir.display(),
        "starting postgres");
    let offset = node.log_len();
    let mut cmd = runner.server(&bins.server("pg_ctl"));
    cmd.arg("start")
        .arg("-D")
        .arg(node.data_dir())
        .arg("-l")
        .arg(node.log_file())
        .args(["-w", "-t", &PG_CTL_WAIT_SECS.to_string()]);
    let timeout = Duration::from_secs(PG_CTL_WAIT_SECS + 30);
    run(cmd, None, timeout).map(|_| ()).with_context(|| {
        format!(
            "starting node {} on port {}; server log:\n{}",
            node.index,
            node.port,
            node.log_since(offset)
        )
    })
}

/// True if the log lines written after `offset` say the port was taken.
pub(super) fn port_conflict_since(node: &Node, offset: u64) -> bool {
    let log = node.log_since(offset);
    log.contains("Address already in use") || log.contains("could not create any TCP/IP sockets")
}

/// `pg_ctl stop -m <mode> -w`.
pub(super) fn stop(
    bins: &PgBins,
    runner: &Runner,
    node: &Node,
    mode: &str,
    wait: u64,
) -> Result<()> {
    tracing::debug!(
        node = node.index,
        port = node.port,
        mode,
        "stopping postgres"
    );
    let mut cmd = runner.server(&bins.server("pg_ctl"));
    cmd.arg("stop").arg("-D").arg(node.data_dir()).args([
        "-m",
        mode,
        "-w",
        "-t",
        &wait.to_string(),
    ]);
    run(cmd, None, Duration::from_secs(wait + 30)).map(|_| ())
}

/// `pg_ctl promote -w`.
pub(super) fn promote(bins: &PgBins, runner: &Runner, node: &Node) -> Result<()> {
    tracing::debug!(node = node.index, port = node.port, "promoting");
    let mut cmd = runner.server(&bins.server("pg_ctl"));
    cmd.arg("promote").arg("-D").arg(node.data_dir()).args([
        "-w",
        "-t",
        &PG_CTL_WAIT_SECS.to_string(),
    ]);
    run(cmd, None, Duration::from_secs(PG_CTL_WAIT_SECS + 30)).map(|_| ())
}

/// SIGKILLs the postmaster and all its descendants (stopping the postmaster
/// first so it cannot fork new children meanwhile), then waits until they are
/// gone, removes the shared memory segments they had mapped (a killed
/// postmaster cannot), and waits until the port refuses connections.
pub(super) fn kill(node: &Node) -> Result<()> {
    let Some(pm) = node.postmaster() else {
        bail!("node {} is not running", node.index);
    };
    tracing::debug!(
        node = node.index,
        port = node.port,
        pid = pm,
        "killing postgres"
    );
    process::signal(pm, libc::SIGSTOP)?;
    let mut pids = process::descendants(pm);
    pids.push(pm);
    let segments = process::shm_segments(&pids);
    process::signal_all(&pids, libc::SIGKILL);
    if !process::wait_gone(&pids, Duration::from_secs(10)) {
        bail!("node {}: processes {pids:?} survived SIGKILL", node.index);
    }
    process::remove_shm_segments(&segments);
    wait_port_refuses(node.port, Duration::from_secs(10))
}

/// Waits until a TCP connection to `127.0.0.1:port` is refused.
pub(super) fn wait_port_refuses(port: u16, timeout: Duration) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(()),
            _ if Instant::now() >= deadline => bail!("port {port} still accepts connections"),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Best-effort shutdown for drop: continue paused processes, `pg_ctl stop -m
/// immediate`, SIGKILL any survivor, free an orphaned shared memory segment.
/// Never fails or panics.
pub(super) fn teardown(bins: &PgBins, runner: &Runner, node: &Node) {
    let Some(pm) = node.postmaster() else {
        let _ = node.clear_stale_locks();
        return;
    };
    let mut pids = process::descendants(pm);
    pids.push(pm);
    // A paused server cannot act on the shutdown signal.
    process::signal_all(&pids, libc::SIGCONT);
    if let Err(e) = stop(bins, runner, node, "immediate", 10) {
        tracing::debug!(node = node.index, error = %e, "immediate stop failed");
    }
    // Children forked during the stop are found again.
    if process::is_live_postgres(pm) {
        pids.extend(process::descendants(pm));
    }
    if !process::wait_gone(&pids, Duration::from_secs(2)) {
        tracing::debug!(node = node.index, "killing surviving postgres processes");
        process::signal_all(&pids, libc::SIGKILL);
        let _ = process::wait_gone(&pids, Duration::from_secs(5));
    }
    let _ = node.clear_stale_locks();
}

/// Removes `node`'s data directory (which must not be in use).
pub(super) fn wipe_data_dir(node: &Node) -> Result<()> {
    let dir = node.data_dir();
    if node.postmaster().is_some() {
        bail!("node {} is still running", node.index);
    }
    node.clear_stale_locks()?;
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

/// Creates `<root>/node<index>` owned by the server user.
pub(super) fn create_node_dir(
    runner: &Runner,
    root: &Path,
    socket_dir: &Path,
    index: usize,
    port: u16,
) -> Result<Node> {
    let dir = root.join(format!("node{index}"));
    runner.mkdir(&dir)?;
    Ok(Node {
        index,
        dir,
        port,
        socket_dir: socket_dir.to_path_buf(),
    })
}
