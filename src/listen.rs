//! The process's listening sockets, by the address the configuration gives: each is
//! bound once and a duplicate of it is kept here, so that a reload can stop one
//! endpoint's socket without touching the others, and a successor process can be
//! handed every socket still open.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

use anyhow::Context;
use tokio::net::TcpListener;

/// Listening sockets by configured address.
#[derive(Debug, Default)]
pub struct Listeners {
    open: Mutex<BTreeMap<SocketAddr, OwnedFd>>,
}

impl Listeners {
    /// Listeners holding sockets handed over by a predecessor process, each under the
    /// address it is bound to. Fails when a descriptor is not a bound TCP socket.
    pub fn inherited(fds: Vec<OwnedFd>) -> anyhow::Result<Listeners> {
        let mut open = BTreeMap::new();
        for fd in fds {
            let addr = std::net::TcpListener::from(fd.try_clone()?)
                .local_addr()
                .context("a handed-over descriptor is not a TCP socket")?;
            open.insert(addr, fd);
        }
        Ok(Listeners {
            open: Mutex::new(open),
        })
    }

    /// A listener on `addr`: bound now (with `SO_REUSEADDR`, backlog 1024), or the one
    /// already open on it. Port 0 always binds a new socket, kept under the address it
    /// got.
    pub fn bind(&self, addr: SocketAddr) -> anyhow::Result<TcpListener> {
        let mut open = self.lock();
        if let Some(fd) = open.get(&addr).filter(|_| addr.port() != 0) {
            return listener_from(fd).with_context(|| format!("cannot reuse the socket on {addr}"));
        }
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket
            .bind(addr)
            .with_context(|| format!("cannot bind {addr}"))?;
        let listener = socket.listen(1024)?;
        let kept = listener.as_fd().try_clone_to_owned()?;
        open.insert(listener.local_addr()?, kept);
        Ok(listener)
    }

    /// Forgets the socket bound to `addr`: it closes once its accept loop has ended too.
    pub fn release(&self, addr: SocketAddr) {
        self.lock().remove(&addr);
    }

    /// Forgets every socket: each closes once its accept loop has ended too, and
    /// clients are then refused instead of queued.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// A duplicate of every socket open, with its address, to hand to a successor.
    pub fn duplicates(&self) -> std::io::Result<Vec<(SocketAddr, OwnedFd)>> {
        let open = self.lock();
        let mut out = Vec::with_capacity(open.len());
        for (addr, fd) in open.iter() {
            out.push((*addr, fd.try_clone()?));
        }
        Ok(out)
    }

    /// The addresses with a socket open.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, OwnedFd>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A tokio listener on a duplicate of `fd`.
fn listener_from(fd: &OwnedFd) -> std::io::Result<TcpListener> {
    let std = std::net::TcpListener::from(fd.try_clone()?);
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inherited_sockets_are_reused_by_address() {
        let first = Listeners::default();
        let listener = first.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let fds = first
            .duplicates()
            .unwrap()
            .into_iter()
            .map(|(_, fd)| fd)
            .collect();
        let second = Listeners::inherited(fds).unwrap();
        assert_eq!(second.addrs(), vec![addr]);
        // The same socket: a connection queued on it is accepted through the successor.
        let reused = second.bind(addr).unwrap();
        drop(listener);
        first.clear();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_, peer) = reused.accept().await.unwrap();
        assert!(peer.ip().is_loopback());
    }
}
