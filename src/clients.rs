//! Every connected client, for the admin console: `SHOW CLIENTS` lists them and
//! `KILL_CLIENT` ends one. Registered once logged in, unregistered when gone; a
//! client's state and member are two atomics updated per transaction.

use crate::sync::lock;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU16, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What a client is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Between transactions (transaction mode), holding no server connection.
    Idle = 0,
    /// Waiting for a member and a server connection.
    Waiting = 1,
    /// Holding a server connection.
    Active = 2,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }
}

/// One client as the console shows it.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u32,
    pub user: String,
    pub database: String,
    pub cluster: String,
    pub endpoint: String,
    pub peer: SocketAddr,
    pub application_name: String,
    /// TLS version and cipher suite; empty in plaintext.
    pub tls: String,
    pub connected_at: SystemTime,
    state: AtomicU8,
    /// `Node::index + 1` of the member it runs on; 0 for none.
    node: AtomicUsize,
    /// Why it is pinned to its server connection (transaction mode), as a `PinSet`.
    pins: AtomicU16,
    /// A duplicate of the client's socket descriptor, to end it from the console.
    socket: Option<OwnedFd>,
}

impl ClientInfo {
    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Waiting,
            2 => ClientState::Active,
            _ => ClientState::Idle,
        }
    }

    /// Why the client is pinned to its server connection (empty: it is not).
    pub fn pins(&self) -> crate::sql::PinSet {
        crate::sql::PinSet::from_bits(self.pins.load(Ordering::Relaxed))
    }

    pub fn set_pins(&self, pins: crate::sql::PinSet) {
        self.pins.store(pins.bits(), Ordering::Relaxed);
    }

    /// The member's `Node::index`, while the client holds a server connection.
    pub fn node(&self) -> Option<usize> {
        self.node.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Records what the client does now, on which member.
    pub fn set(&self, state: ClientState, node: Option<usize>) {
        self.state.store(state as u8, Ordering::Relaxed);
        self.node
            .store(node.map_or(0, |n| n + 1), Ordering::Relaxed);
    }
}

/// The connected clients by id.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: Mutex<BTreeMap<u32, Arc<ClientInfo>>>,
}

/// A client's place in the registry; removes it when dropped.
#[derive(Debug)]
pub struct Registered<'a> {
    registry: &'a ClientRegistry,
    pub info: Arc<ClientInfo>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(&self.registry.clients).remove(&self.info.id);
    }
}

/// Who a client is, for `ClientRegistry::register`.
#[derive(Debug)]
pub struct NewClient<'a> {
    pub id: u32,
    pub user: &'a str,
    pub database: &'a str,
    pub cluster: &'a str,
    pub endpoint: &'a str,
    pub peer: SocketAddr,
    pub application_name: &'a str,
    pub tls: String,
}

impl ClientRegistry {
    /// Registers a logged-in client until the returned value is dropped.
    pub fn register<'a>(
        &'a self,
        c: NewClient<'_>,
        socket: Option<BorrowedFd<'_>>,
    ) -> Registered<'a> {
        let info = Arc::new(ClientInfo {
            id: c.id,
            user: c.user.to_owned(),
            database: c.database.to_owned(),
            cluster: c.cluster.to_owned(),
            endpoint: c.endpoint.to_owned(),
            peer: c.peer,
            application_name: c.application_name.to_owned(),
            tls: c.tls,
            connected_at: SystemTime::now(),
            state: AtomicU8::new(ClientState::Idle as u8),
            node: AtomicUsize::new(0),
            pins: AtomicU16::new(0),
            socket: socket.and_then(|s| s.try_clone_to_owned().ok()),
        });
        lock(&self.clients).insert(c.id, info.clone());
        Registered {
            registry: self,
            info,
        }
    }

    /// Every client, by id.
    pub fn all(&self) -> Vec<Arc<ClientInfo>> {
        lock(&self.clients).values().cloned().collect()
    }

    /// Ends client `id`'s connection (its socket is shut down both ways: the session
    /// ends as if the client had gone). False if there is no such client.
    pub fn kill(&self, id: u32) -> bool {
        let Some(info) = lock(&self.clients).get(&id).cloned() else {
            return false;
        };
        if let Some(fd) = &info.socket {
            let _ = socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Both);
        }
        true
    }
}
