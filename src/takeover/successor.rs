//! The successor's side: finding the pgfleet running on the control socket, taking its
//! listening sockets, and telling it to go once this process serves.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::wire::Conn;
use super::HELLO;
use crate::listen::Listeners;

/// How long the predecessor may take to answer each message.
const ANSWER: Duration = Duration::from_secs(10);

/// A running pgfleet that has handed its listening sockets over and waits for `GO`.
/// Dropping it without `hand_over` (this process failed to start) leaves it serving.
pub struct Predecessor {
    conn: Conn,
    /// Its process id.
    pub pid: u32,
    sockets: Vec<(SocketAddr, OwnedFd)>,
}

impl Predecessor {
    /// Asks the pgfleet listening on `path` for its sockets. `None` when none answers
    /// there (no file, or a stale one); an error when one answers but the exchange fails.
    ///
    /// A socket another user owns, or whose peer runs as another user, is not a
    /// predecessor (anyone may have made it to stop pgfleet from starting): a warning,
    /// and pgfleet starts as if there were none.
    pub async fn find(path: &Path) -> anyhow::Result<Option<Predecessor>> {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.uid() != me => {
                tracing::warn!(
                    path = %path.display(),
                    owner = m.uid(),
                    "the control socket belongs to another user: no predecessor taken over"
                );
                return Ok(None);
            }
            _ => {}
        }
        let conn = match Conn::connect(path) {
            Ok(c) => c,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                return Ok(None)
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot connect to {}", path.display()))
            }
        };
        let what = || {
            format!(
                "taking the listening sockets over through {}",
                path.display()
            )
        };
        if let Err(e) = conn.check_peer() {
            tracing::warn!(path = %path.display(), error = %e, "the control socket's peer runs as another user: no predecessor taken over");
            return Ok(None);
        }
        conn.send::<OwnedFd>(&format!("{HELLO} {}", std::process::id()), &[])
            .await
            .with_context(what)?;
        let mut sockets = Vec::new();
        loop {
            let (text, mut fds) = match conn.recv(ANSWER).await.with_context(what)? {
                Some(m) => m,
                // It stopped serving the control socket meanwhile (it is stopping).
                None => return Ok(None),
            };
            if let Some(pid) = text.strip_prefix("END ") {
                let pid = pid
                    .parse()
                    .with_context(|| format!("{}: bad pid in {text:?}", what()))?;
                return Ok(Some(Predecessor { conn, pid, sockets }));
            }
            let addr: SocketAddr = text
                .strip_prefix("LISTEN ")
                .and_then(|a| a.parse().ok())
                .with_context(|| format!("{}: unexpected message {text:?}", what()))?;
            let fd = fds
                .pop()
                .filter(|_| fds.is_empty())
                .with_context(|| format!("{}: {addr} came without exactly one socket", what()))?;
            sockets.push((addr, fd));
        }
    }

    /// The handed-over sockets, for `Fleet::start_with`. Fails when one is not the
    /// TCP socket bound to the address it came with.
    pub fn take_listeners(&mut self) -> anyhow::Result<Listeners> {
        let sockets = std::mem::take(&mut self.sockets);
        let mut fds = Vec::with_capacity(sockets.len());
        for (addr, fd) in sockets {
            let bound = std::net::TcpListener::from(fd.try_clone()?).local_addr()?;
            anyhow::ensure!(
                bound == addr,
                "the socket sent for {addr} is bound to {bound}"
            );
            fds.push(fd);
        }
        Listeners::inherited(fds)
    }

    /// Tells the predecessor this process serves now; it stops accepting and drains.
    /// An error means it did not get the word and goes on serving. `Ok(false)`: it got
    /// `GO` but did not confirm (it may have stopped accepting all the same).
    pub async fn hand_over(self) -> anyhow::Result<bool> {
        self.conn
            .send::<OwnedFd>("GO", &[])
            .await
            .with_context(|| format!("cannot tell pid {} to stop accepting", self.pid))?;
        match self.conn.recv(ANSWER).await {
            Ok(Some((bye, _))) if bye == "BYE" => Ok(true),
            Ok(_) | Err(_) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Someone else's socket at the path (made here, then given to another user, as
    /// root; skipped otherwise) is no predecessor: `find` neither fails nor waits.
    #[tokio::test]
    async fn another_users_socket_is_no_predecessor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".s.PGFLEET.1");
        let _listener = super::super::wire::Listener::bind(&path).unwrap();
        if std::os::unix::fs::chown(&path, Some(65534), Some(65534)).is_err() {
            eprintln!("skipped: not root, cannot give the socket to another user");
            return;
        }
        let found = tokio::time::timeout(Duration::from_secs(5), Predecessor::find(&path))
            .await
            .expect("find does not wait on it");
        assert!(found.expect("not an error").is_none());
    }
}
