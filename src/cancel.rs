//! Cancel keys: each client gets a (pid, key) pair from pgfleet; a CancelRequest with
//! that pair is forwarded to the server connection running the client's query.
//!
//! The registry's lock is taken when a client connects or leaves and for each cancel
//! request; pointing a client at the server connection of its next transaction only
//! touches that client's own slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::cluster::Node;

/// Where a client's queries currently run.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub node: Arc<Node>,
    pub pid: u32,
    pub key: u32,
}

/// One client's key and current server connection.
#[derive(Debug)]
pub struct CancelSlot {
    key: u32,
    target: Mutex<Option<CancelTarget>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CancelSlot {
    /// Sets (or clears) the server connection the client's queries run on.
    pub fn set(&self, target: Option<CancelTarget>) {
        *lock(&self.target) = target;
    }
}

/// Every connected client's cancel slot, by pid.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    clients: Mutex<HashMap<u32, Arc<CancelSlot>>>,
}

impl CancelRegistry {
    /// Registers a client under its pid with its key.
    pub fn register(&self, pid: u32, key: u32) -> Arc<CancelSlot> {
        let slot = Arc::new(CancelSlot {
            key,
            target: Mutex::new(None),
        });
        lock(&self.clients).insert(pid, slot.clone());
        slot
    }

    pub fn unregister(&self, pid: u32) {
        lock(&self.clients).remove(&pid);
    }

    /// The server to cancel for (pid, key), if the key matches and a query can run.
    pub fn lookup(&self, pid: u32, key: u32) -> Option<CancelTarget> {
        let slot = lock(&self.clients).get(&pid).cloned()?;
        // Compare without an early exit on the first differing bit.
        if (slot.key ^ key) != 0 {
            return None;
        }
        let target = lock(&slot.target).clone();
        target
    }
}

/// Sends a CancelRequest for `target` on a new connection, as PostgreSQL expects.
pub async fn send_cancel(target: &CancelTarget) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(
        target.pid as i32,
        target.key as i32,
        &mut out,
    );
    let mut stream = TcpStream::connect(&target.node.addr).await?;
    stream.write_all(&out).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_needs_the_right_key_and_a_target() {
        let r = CancelRegistry::default();
        let slot = r.register(7, 42);
        assert!(r.lookup(7, 42).is_none());
        slot.set(Some(CancelTarget {
            node: Arc::new(Node::new(0, "127.0.0.1:5432".into(), 1)),
            pid: 100,
            key: 5,
        }));
        assert_eq!(r.lookup(7, 42).map(|t| t.pid), Some(100));
        assert!(r.lookup(7, 43).is_none());
        assert!(r.lookup(8, 42).is_none());
        slot.set(None);
        assert!(r.lookup(7, 42).is_none());
        r.unregister(7);
        assert!(r.lookup(7, 42).is_none());
    }
}
