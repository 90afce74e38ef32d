//! Real-cluster test harness: a PostgreSQL primary plus N streaming replicas
//! started on this machine from the PostgreSQL server binaries.
//!
//! Used by the integration tests and by `pgfleet demo`. Every cluster lives
//! in its own temporary directory (`/tmp/pgfleet-test-*`) with its own
//! loopback ports, so clusters in parallel tests never interfere. All methods
//! are synchronous and blocking; they may be called from inside tokio tests.
//!
//! When the process runs as root, every server-side program (`initdb`,
//! `pg_ctl`, `pg_basebackup`, and through `pg_ctl` the `postgres` server) is
//! run as the `postgres` system user via `runuser -u postgres --`.
//!
//! Roles created on the primary at start:
//!
//! | role        | password    | stored as     | notes                         |
//! |-------------|-------------|---------------|-------------------------------|
//! | `postgres`  | none        | -             | superuser, unix socket only   |
//! | `app`       | `app`       | SCRAM-SHA-256 | owns database `app`           |
//! | `app_md5`   | `app_md5`   | md5           |                               |
//! | `pgcheck`   | `pgcheck`   | SCRAM-SHA-256 | health checks, `pg_monitor`   |
//! | `trustuser` | none        | -             | `trust` over TCP              |
//!
//! Layout of the temporary directory: `sockets/` (the unix-socket directory
//! shared by all nodes) and `node<i>/` per node, holding `data/` (the data
//! directory) and `postgres.log` (the server log).
//!
//! Each node's `cluster_name` is `node<i>`, which is also the
//! `application_name` its walreceiver shows in the upstream's
//! `pg_stat_replication`. Settings favour speed over durability (`fsync`,
//! `full_page_writes` and `synchronous_commit` off, 1 MB WAL segments).

mod bins;
mod command;
mod conf;
mod lifecycle;
mod node;
mod ports;

/// A port free on 127.0.0.1 now that this process has not handed out before (for
/// the addresses pgfleet listens on in tests).
pub fn free_port() -> anyhow::Result<u16> {
    ports::reserve()
}
mod process;
mod replication;
mod sql;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use bins::PgBins;
use command::Runner;
use node::Node;

/// How a password is stored in `pg_authid` by [`TestCluster::create_user`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordEncryption {
    /// `SCRAM-SHA-256$...` (PostgreSQL's default).
    Scram,
    /// `md5...` (legacy md5 hash of password and user name).
    Md5,
}

impl PasswordEncryption {
    /// The value for the `password_encryption` setting.
    fn setting(self) -> &'static str {
        match self {
            PasswordEncryption::Scram => "scram-sha-256",
            PasswordEncryption::Md5 => "md5",
        }
    }
}

/// Mutable per-node facts tracked by the harness.
#[derive(Debug, Clone, Copy, Default)]
struct NodeState {
    /// The harness started the server and has not stopped or killed it since.
    running: bool,
    /// The postmaster and its children are SIGSTOPped.
    paused: bool,
}

/// State that `&self` methods update.
#[derive(Debug)]
struct State {
    /// Index of the node currently not in recovery.
    primary: usize,
    /// One entry per node, same indexes as `TestCluster::nodes`.
    nodes: Vec<NodeState>,
}

/// A running PostgreSQL primary plus streaming replicas in a temporary
/// directory. Node 0 starts as the primary, nodes `1..=N` as its replicas.
///
/// Dropping it stops every server (immediate shutdown, then SIGKILL for any
/// survivor) and removes the temporary directory, also during a panic.
pub struct TestCluster {
    /// Where the PostgreSQL programs live.
    bins: PgBins,
    /// Runs server-side programs as the right user.
    runner: Runner,
    /// Root of the cluster's files; `None` only once dropped.
    tmp: Option<tempfile::TempDir>,
    /// Copy of the temporary directory's path.
    root: PathBuf,
    /// The unix-socket directory of every node.
    socket_dir: PathBuf,
    /// Static facts of each node (directory and port).
    nodes: Vec<Node>,
    /// Current primary and per-node running/paused flags.
    state: Mutex<State>,
}

#[allow(clippy::len_without_is_empty)] // a cluster always has a primary
impl TestCluster {
    /// Number of nodes (primary plus replicas, including stopped ones).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// TCP port of `node` on 127.0.0.1. Panics if `node` is out of range.
    pub fn port(&self, node: usize) -> u16 {
        self.nodes[node].port
    }

    /// `127.0.0.1:port` of `node`. Panics if `node` is out of range.
    pub fn addr(&self, node: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port(node))
    }

    /// `"127.0.0.1:port"` for every node, in node order.
    pub fn hosts(&self) -> Vec<String> {
        (0..self.len()).map(|n| self.addr(n).to_string()).collect()
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The unix-socket directory shared by all nodes (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Index of the node the harness considers the primary: node 0 at start,
    /// then the last node passed to [`TestCluster::promote`].
    pub fn primary(&self) -> usize {
        self.lock().primary
    }

    /// Locks the mutable state, ignoring poisoning (a panicking test thread
    /// must not make the cluster unusable or its drop panic).
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Returns `node`'s static facts, or an error if it does not exist.
    fn node(&self, node: usize) -> anyhow::Result<&Node> {
        self.nodes.get(node).ok_or_else(|| {
            anyhow::anyhow!("node {node} does not exist (cluster has {})", self.len())
        })
    }

    /// Updates `node`'s tracked flags.
    fn set_state(&self, node: usize, f: impl FnOnce(&mut NodeState)) {
        if let Some(s) = self.lock().nodes.get_mut(node) {
            f(s);
        }
    }

    /// Returns `node`'s tracked flags.
    fn node_state(&self, node: usize) -> NodeState {
        self.lock().nodes.get(node).copied().unwrap_or_default()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node::teardown(&self.bins, &self.runner, node);
        }
        if let Some(tmp) = self.tmp.take() {
            let path = tmp.path().to_path_buf();
            match tmp.close() {
                Ok(()) => tracing::debug!(dir = %path.display(), "removed test cluster dir"),
                Err(e) => tracing::debug!(dir = %path.display(), error = %e,
                    "could not remove test cluster dir"),
            }
        }
    }
}
