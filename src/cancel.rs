//! Cancel keys: each client gets a (pid, key) pair from pgfleet; a CancelRequest with
//! that pair is forwarded to the server connection running the client's query.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Where a client's queries currently run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: String,
    pub pid: u32,
    pub key: u32,
}

#[derive(Debug)]
struct Entry {
    key: u32,
    target: Option<CancelTarget>,
}

/// Every connected client's cancel key and current server.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    clients: Mutex<HashMap<u32, Entry>>,
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a client under its pid with its key.
    pub fn register(&self, pid: u32, key: u32) {
        self.lock().insert(pid, Entry { key, target: None });
    }

    /// Sets (or clears) the server connection the client's queries run on.
    pub fn set_target(&self, pid: u32, target: Option<CancelTarget>) {
        if let Some(e) = self.lock().get_mut(&pid) {
            e.target = target;
        }
    }

    pub fn unregister(&self, pid: u32) {
        self.lock().remove(&pid);
    }

    /// The server to cancel for (pid, key), if the key matches and a query can run.
    pub fn lookup(&self, pid: u32, key: u32) -> Option<CancelTarget> {
        let clients = self.lock();
        let e = clients.get(&pid)?;
        // Compare without an early exit on the first differing bit.
        if (e.key ^ key) != 0 {
            return None;
        }
        e.target.clone()
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
    let mut stream = TcpStream::connect(&target.addr).await?;
    stream.write_all(&out).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_needs_the_right_key_and_a_target() {
        let r = CancelRegistry::default();
        r.register(7, 42);
        assert_eq!(r.lookup(7, 42), None);
        let t = CancelTarget {
            addr: "127.0.0.1:5432".into(),
            pid: 100,
            key: 5,
        };
        r.set_target(7, Some(t.clone()));
        assert_eq!(r.lookup(7, 42), Some(t));
        assert_eq!(r.lookup(7, 43), None);
        assert_eq!(r.lookup(8, 42), None);
        r.unregister(7);
        assert_eq!(r.lookup(7, 42), None);
    }
}
