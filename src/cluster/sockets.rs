//! The server sockets open to one node, so that a member removed from its cluster can
//! have its last sessions ended after `drain_timeout`: each socket is shut down, the
//! pump sees the server go, and the client gets a clean error.
//!
//! Each entry is a duplicate of the socket's descriptor, so shutting it down never
//! touches a descriptor number the system has given to something else since.

use crate::sync::lock;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What `SHOW SERVERS` tells of a server connection.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The backend's pid.
    pub pid: u32,
    pub database: String,
    pub user: String,
    pub connected_at: SystemTime,
    /// TLS version and cipher suite; empty in plaintext.
    pub tls: String,
}

/// The open server sockets of a node.
#[derive(Debug, Default)]
pub struct Sockets {
    next: AtomicU64,
    open: Mutex<HashMap<u64, (OwnedFd, ServerInfo)>>,
}

impl Sockets {
    /// Registers `socket` until the returned entry is dropped. `None` if the descriptor
    /// could not be duplicated (out of descriptors): the connection then only ends when
    /// its client or server ends it.
    pub fn register(self: &Arc<Self>, socket: &impl AsFd, info: ServerInfo) -> Option<SocketEntry> {
        let fd = socket.as_fd().try_clone_to_owned().ok()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.open).insert(id, (fd, info));
        Some(SocketEntry {
            sockets: self.clone(),
            id,
        })
    }

    /// The server connections open now.
    pub fn list(&self) -> Vec<ServerInfo> {
        lock(&self.open)
            .values()
            .map(|(_, info)| info.clone())
            .collect()
    }

    /// Sockets open now.
    pub fn len(&self) -> usize {
        lock(&self.open).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shuts every socket down both ways; returns how many.
    pub fn shutdown_all(&self) -> usize {
        let open = lock(&self.open);
        for (fd, _) in open.values() {
            let _ = socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Both);
        }
        open.len()
    }
}

/// One registered socket; unregisters (and closes the duplicate) when dropped.
#[derive(Debug)]
pub struct SocketEntry {
    sockets: Arc<Sockets>,
    id: u64,
}

impl Drop for SocketEntry {
    fn drop(&mut self) {
        lock(&self.sockets.open).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn shutdown_ends_the_connection_and_entries_unregister() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let (mut server_side, _) = listener.accept().expect("accept");
        let sockets = Arc::new(Sockets::default());
        let info = ServerInfo {
            pid: 1,
            database: "d".into(),
            user: "u".into(),
            connected_at: SystemTime::now(),
            tls: String::new(),
        };
        let entry = sockets.register(&client, info).expect("registered");
        assert_eq!(sockets.list()[0].pid, 1);
        assert_eq!(sockets.len(), 1);
        assert_eq!(sockets.shutdown_all(), 1);
        let mut buf = [0u8; 1];
        assert_eq!(server_side.read(&mut buf).expect("read"), 0, "EOF");
        drop(entry);
        assert!(sockets.is_empty());
    }
}
