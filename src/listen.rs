//! The process's listening sockets, by the address the configuration gives: each is
//! bound once and a duplicate of it is kept here, so that a reload can stop one
//! endpoint's socket without touching the others, and a successor process can be
//! handed every socket still open.
//!
//! An address may have a group of sockets (`SO_REUSEPORT`), one per worker thread, so
//! that the kernel hands each new connection to one worker instead of waking them all.
//! The group is bound and handed over whole.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

use anyhow::Context;
use tokio::net::TcpListener;

/// Listening sockets by configured address.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Per address its sockets, the first bound first.
    open: Mutex<BTreeMap<SocketAddr, Vec<OwnedFd>>>,
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
            open.entry(addr).or_insert_with(Vec::new).push(fd);
        }
        Ok(Listeners {
            open: Mutex::new(open),
        })
    }

    /// A listener on `addr`: bound now (with `SO_REUSEADDR` and `SO_REUSEPORT`, backlog
    /// 1024), or the first one already open on it. Port 0 always binds a new socket,
    /// kept under the address it got. An address another socket listens on is refused,
    /// even one with `SO_REUSEPORT` (another pgfleet): `SO_REUSEPORT` is only for the
    /// group this process binds.
    pub fn bind(&self, addr: SocketAddr) -> anyhow::Result<TcpListener> {
        let mut open = self.lock();
        if let Some(fds) = open.get(&addr).filter(|_| addr.port() != 0) {
            return listener_from(&fds[0])
                .with_context(|| format!("cannot reuse the socket on {addr}"));
        }
        if addr.port() != 0 {
            // Without SO_REUSEPORT, binding fails where anything listens already.
            let probe = new_socket(addr, false)?;
            probe
                .bind(addr)
                .with_context(|| format!("cannot bind {addr}"))?;
            drop(probe);
        }
        let listener = listen_shared(addr).with_context(|| format!("cannot bind {addr}"))?;
        let kept = listener.as_fd().try_clone_to_owned()?;
        open.insert(listener.local_addr()?, vec![kept]);
        Ok(listener)
    }

    /// Duplicates of the sockets of `addr`'s group, which is first made `n` strong
    /// where its sockets have `SO_REUSEPORT` (sockets handed over by a process with
    /// more workers stay: every socket of a group must be accepted on, or the
    /// connections the kernel queues on it wait forever). A group without
    /// `SO_REUSEPORT` stays one socket. Empty when nothing is open on `addr`.
    pub fn group(&self, addr: SocketAddr, n: usize) -> std::io::Result<Vec<OwnedFd>> {
        let mut open = self.lock();
        let Some(fds) = open.get_mut(&addr) else {
            return Ok(Vec::new());
        };
        let shared = socket2::SockRef::from(&fds[0])
            .reuse_port()
            .unwrap_or(false);
        while shared && fds.len() < n {
            fds.push(listen_shared(addr)?.as_fd().try_clone_to_owned()?);
        }
        fds.iter().map(|fd| fd.try_clone()).collect()
    }

    /// Forgets the sockets bound to `addr`: each closes once its accept loop has ended
    /// too.
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
        for (addr, fds) in open.iter() {
            for fd in fds {
                out.push((*addr, fd.try_clone()?));
            }
        }
        Ok(out)
    }

    /// The addresses with a socket open.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, Vec<OwnedFd>>> {
        crate::sync::lock(&self.open)
    }
}

/// A TCP socket for `addr`'s family with `SO_REUSEADDR`, and `SO_REUSEPORT` if `shared`.
fn new_socket(addr: SocketAddr, shared: bool) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    Ok(socket)
}

/// A listener on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`, backlog 1024.
fn listen_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = new_socket(addr, true)?;
    socket.bind(addr)?;
    socket.listen(1024)
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

    #[tokio::test]
    async fn a_group_spreads_connections_and_is_handed_over_whole() {
        let first = Listeners::default();
        let listener = first.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let group = first.group(addr, 3).unwrap();
        assert_eq!(group.len(), 3);
        // Another process's bind of the address is refused, SO_REUSEPORT or not.
        assert!(Listeners::default().bind(addr).is_err());
        // The kernel spreads connections over the group's sockets.
        let clients: Vec<_> = (0..30)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut served = 0;
        for fd in &group {
            let socket = std::net::TcpListener::from(fd.try_clone().unwrap());
            socket.set_nonblocking(true).unwrap();
            let mut accepted = 0;
            while socket.accept().is_ok() {
                accepted += 1;
            }
            served += usize::from(accepted > 0);
        }
        assert!(served >= 2, "every connection went to one socket of three");
        drop(clients);
        // A successor gets every socket of the group, and keeps them all.
        let fds: Vec<_> = first
            .duplicates()
            .unwrap()
            .into_iter()
            .map(|(_, fd)| fd)
            .collect();
        assert_eq!(fds.len(), 3);
        let second = Listeners::inherited(fds).unwrap();
        assert_eq!(second.addrs(), vec![addr]);
        assert_eq!(second.group(addr, 2).unwrap().len(), 3);
    }
}
