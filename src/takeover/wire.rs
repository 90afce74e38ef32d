//! The control socket's transport: a Unix `SOCK_SEQPACKET` socket, so that every
//! message arrives whole and the descriptors sent with it arrive with it.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The longest message either side sends.
const MAX_MESSAGE: usize = 1024;
/// Descriptors sent with one message at most (the kernel allows 253).
pub const MAX_FDS: usize = 64;

/// A listening control socket.
pub struct Listener {
    fd: AsyncFd<OwnedFd>,
}

/// One end of a control connection.
pub struct Conn {
    fd: AsyncFd<OwnedFd>,
}

/// A non-blocking, close-on-exec `SOCK_SEQPACKET` Unix socket.
fn socket() -> io::Result<OwnedFd> {
    let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        flags,
        None,
    )?)
}

/// `fd` registered with the runtime's reactor.
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns the `OwnedFd` and never hands it out, so the descriptor
    // stays open and the same until the `AsyncFd` is dropped.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(io::Error::from)
}

impl Listener {
    /// Listens on `path`, which must not exist.
    pub fn bind(path: &Path) -> io::Result<Listener> {
        let fd = socket()?;
        rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
        rustix::net::listen(&fd, 8)?;
        Ok(Listener {
            fd: register(fd, Interest::READABLE)?,
        })
    }

    /// The next connection.
    pub async fn accept(&self) -> io::Result<Conn> {
        loop {
            let mut ready = self.fd.readable().await?;
            let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
            match ready.try_io(|fd| Ok(rustix::net::accept_with(fd, flags)?)) {
                Ok(fd) => return Conn::new(fd?),
                Err(_would_block) => continue,
            }
        }
    }
}

impl Conn {
    fn new(fd: OwnedFd) -> io::Result<Conn> {
        Ok(Conn {
            fd: register(fd, Interest::READABLE | Interest::WRITABLE)?,
        })
    }

    /// Connects to the control socket at `path`.
    pub fn connect(path: &Path) -> io::Result<Conn> {
        let fd = socket()?;
        // A Unix socket connects at once or fails (EAGAIN: the listener's queue is full).
        rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
        Conn::new(fd)
    }

    /// Fails unless the peer process runs as this process's user (or as root): the
    /// listening sockets go only to, and come only from, pgfleet's own user.
    pub fn check_peer(&self) -> io::Result<()> {
        let peer = rustix::net::sockopt::socket_peercred(&self.fd)?;
        let me = rustix::process::geteuid();
        if peer.uid == me || peer.uid.is_root() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the peer (pid {}) runs as uid {}, not {}",
                peer.pid,
                peer.uid.as_raw(),
                me.as_raw()
            ),
        ))
    }

    /// Sends `text` as one message, with `fds` (at most `MAX_FDS`) attached.
    pub async fn send<Fd: AsFd>(&self, text: &str, fds: &[Fd]) -> io::Result<()> {
        if fds.len() > MAX_FDS || text.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "message too large",
            ));
        }
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        loop {
            let mut ready = self.fd.writable().await?;
            let sent = ready.try_io(|fd| {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed))
                {
                    return Err(io::Error::other("descriptors do not fit the message"));
                }
                let iov = [IoSlice::new(text.as_bytes())];
                Ok(rustix::net::sendmsg(
                    fd,
                    &iov,
                    &mut control,
                    SendFlags::NOSIGNAL,
                )?)
            });
            match sent {
                Ok(r) => return r.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    /// The next message and the descriptors sent with it; `None` when the peer has
    /// closed the connection; an error after `limit` without one.
    pub async fn recv(&self, limit: Duration) -> io::Result<Option<(String, Vec<OwnedFd>)>> {
        match tokio::time::timeout(limit, self.recv_now()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            )),
        }
    }

    async fn recv_now(&self) -> io::Result<Option<(String, Vec<OwnedFd>)>> {
        loop {
            let mut ready = self.fd.readable().await?;
            let got = ready.try_io(|fd| {
                let mut buf = [0u8; MAX_MESSAGE];
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg =
                    rustix::net::recvmsg(fd, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
                // Take the descriptors first: they close on drop whatever follows.
                let mut fds = Vec::new();
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = m {
                        fds.extend(received);
                    }
                }
                let truncated = msg
                    .flags
                    .intersects(rustix::net::ReturnFlags::TRUNC | rustix::net::ReturnFlags::CTRUNC);
                if truncated {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "message truncated",
                    ));
                }
                if msg.bytes == 0 && fds.is_empty() {
                    return Ok(None);
                }
                let text = String::from_utf8(buf[..msg.bytes].to_vec()).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "message is not UTF-8")
                })?;
                Ok(Some((text, fds)))
            });
            match got {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[tokio::test]
    async fn messages_carry_their_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        let listener = Listener::bind(&path).unwrap();
        let client = Conn::connect(&path).unwrap();
        let server = listener.accept().await.unwrap();
        // Both ends run as this test's user.
        client.check_peer().unwrap();
        server.check_peer().unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        client.send("LISTEN x", &[&tcp]).await.unwrap();
        client.send::<OwnedFd>("END", &[]).await.unwrap();
        let (text, fds) = server.recv(Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(text, "LISTEN x");
        assert_eq!(fds.len(), 1);
        assert_ne!(fds[0].as_raw_fd(), tcp.as_raw_fd());
        let got = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(got.local_addr().unwrap(), addr);
        let (text, fds) = server.recv(Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!((text.as_str(), fds.len()), ("END", 0));
        drop(client);
        assert!(server.recv(Duration::from_secs(5)).await.unwrap().is_none());
        let silent = Conn::connect(&path).unwrap();
        let _peer = listener.accept().await.unwrap();
        assert!(silent.recv(Duration::from_millis(50)).await.is_err());
    }
}
