//! The one shared state every task gets: configuration and topology behind one
//! `ArcSwap`, plus process-wide registries.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::auth::{DerivedSecrets, Userlist};
use crate::cancel::CancelRegistry;
use crate::capacity::Capacity;
use crate::clients::ClientRegistry;
use crate::cluster::ClusterState;
use crate::config::Config;
use crate::frontend::{PendingByAddress, SharedStatements};
use crate::listen::Listeners;
use crate::workers::Workers;

/// Connections to the admin console accepted and not yet authenticated.
pub const CONSOLE_PENDING_LOGINS: usize = 64;

/// Configuration and topology as one consistent snapshot.
#[derive(Debug)]
pub struct Topology {
    pub config: Arc<Config>,
    pub users: Arc<Userlist>,
    pub clusters: Vec<Arc<ClusterState>>,
    /// TLS towards clients (`None`: `client_tls_sslmode = disable`), read from its
    /// files on start and on every reload.
    pub client_tls: Option<Arc<crate::tls::ClientTls>>,
}

/// Shared by every task of the process.
#[derive(Debug)]
pub struct State {
    /// Read once per session start; replaced whole.
    pub current: ArcSwap<Topology>,
    pub cancels: CancelRegistry,
    /// Every logged-in client, for the admin console.
    pub clients: ClientRegistry,
    /// `max_client_conn` permits, one per connected client.
    pub client_slots: Capacity,
    /// `max_pending_logins` permits, one per client connection from accept until it is
    /// authenticated.
    pub pending_logins: Capacity,
    /// The admin console's own (`CONSOLE_PENDING_LOGINS`): a flood of the client
    /// endpoints does not lock operators out.
    pub console_logins: Capacity,
    /// Logins in progress per source address (`max_pending_logins_per_address`).
    pub pending_by_address: PendingByAddress,
    /// Transaction mode's named statements, each text kept once for every client.
    pub statements: SharedStatements,
    /// Reloads of the configuration, serialized, and their counts.
    pub reloads: Reloads,
    next_client_id: AtomicU32,
    /// Salt for the mock SCRAM exchange given to unknown users.
    pub mock_key: [u8; 32],
    /// SCRAM secrets derived from plaintext passwords.
    pub derived: DerivedSecrets,
    /// Set to true to stop every listener and background task.
    pub stop: watch::Sender<bool>,
    /// Set to true to stop accepting clients while the connected ones go on.
    pub closing: watch::Sender<bool>,
    /// Every listening socket.
    pub listeners: Listeners,
    /// Where the configuration was loaded from (a file or a directory).
    pub config_path: PathBuf,
    /// The threads clients run on.
    pub workers: Workers,
}

impl State {
    pub fn new(
        topology: Topology,
        config_path: PathBuf,
        listeners: Listeners,
        workers: Workers,
    ) -> State {
        let max = topology.config.general.max_client_conn;
        let max_pending = topology.config.general.max_pending_logins;
        let topology_mock_secret = topology.config.general.auth_mock_secret.clone();
        State {
            current: ArcSwap::from_pointee(topology),
            cancels: CancelRegistry::default(),
            clients: ClientRegistry::default(),
            client_slots: Capacity::new(max),
            pending_logins: Capacity::new(max_pending),
            console_logins: Capacity::new(CONSOLE_PENDING_LOGINS),
            pending_by_address: PendingByAddress::default(),
            statements: SharedStatements::default(),
            reloads: Reloads::default(),
            next_client_id: AtomicU32::new(1),
            mock_key: mock_key(topology_mock_secret.as_deref()),
            derived: DerivedSecrets::default(),
            stop: watch::channel(false).0,
            closing: watch::channel(false).0,
            listeners,
            config_path,
            workers,
        }
    }

    /// A fresh client id, also the pid the client sees in BackendKeyData.
    pub fn next_client_id(&self) -> u32 {
        loop {
            let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }
}

/// Reloads of the configuration: one at a time, counted for `/metrics`.
#[derive(Debug, Default)]
pub struct Reloads {
    /// Held while a reload runs.
    pub running: tokio::sync::Mutex<()>,
    /// Reloads applied.
    pub applied: std::sync::atomic::AtomicU64,
    /// Reloads refused (the configuration or auth file was invalid).
    pub refused: std::sync::atomic::AtomicU64,
}

/// The key unknown users' mock secrets come from: derived from `auth_mock_secret`, so
/// that instances sharing it answer alike, else random.
fn mock_key(secret: Option<&str>) -> [u8; 32] {
    use sha2::Digest;
    match secret {
        Some(s) => sha2::Sha256::new()
            .chain_update(b"pgfleet mock key\0")
            .chain_update(s.as_bytes())
            .finalize()
            .into(),
        None => rand::random(),
    }
}
