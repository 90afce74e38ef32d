//! The predecessor's side: the control socket every running pgfleet serves, handing its
//! listening sockets to a successor and then stopping accepting.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::wire::{self, Conn};
use super::HELLO;
use crate::state::State;

/// How long a successor may take to answer (the greeting, then `GO` once it serves).
const SUCCESSOR_GREETING: Duration = Duration::from_secs(10);
const SUCCESSOR_START: Duration = Duration::from_secs(120);

/// The control socket, bound at its path.
pub struct ControlSocket {
    path: PathBuf,
    /// The socket file's inode: on exit the path is removed only while it is still ours,
    /// not a successor's that replaced it.
    inode: u64,
    listener: wire::Listener,
}

impl ControlSocket {
    /// Listens at `path`: binds a temporary name beside it, then renames it onto `path`,
    /// replacing a predecessor's (which no longer answers) or a stale file.
    pub fn bind(path: &Path) -> anyhow::Result<ControlSocket> {
        let mut temp = path.as_os_str().to_owned();
        temp.push(format!(".{}.new", std::process::id()));
        let temp = PathBuf::from(temp);
        let _ = std::fs::remove_file(&temp);
        let listener = wire::Listener::bind(&temp)
            .with_context(|| format!("cannot listen on the control socket {}", temp.display()))?;
        let inode = std::fs::metadata(&temp)
            .with_context(|| format!("cannot read {}", temp.display()))?
            .ino();
        if let Err(e) = std::fs::rename(&temp, path) {
            let _ = std::fs::remove_file(&temp);
            return Err(e)
                .with_context(|| format!("cannot move the control socket to {}", path.display()));
        }
        Ok(ControlSocket {
            path: path.to_owned(),
            inode,
            listener,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers successors until pgfleet stops, stops accepting, or has handed its
    /// sockets over; then removes the path unless a successor owns it now.
    pub async fn serve(self, state: Arc<State>) {
        let mut stop = state.stop.subscribe();
        let mut closing = state.closing.subscribe();
        let done = |s: &State| *s.stop.borrow() || *s.closing.borrow();
        let mut failures = crate::limits::Throttle::new(Duration::from_secs(1));
        while !done(&state) {
            let conn = tokio::select! {
                c = self.listener.accept() => c,
                _ = stop.changed() => continue,
                _ = closing.changed() => continue,
            };
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    if let Some(held_back) = failures.allow() {
                        tracing::warn!(error = %e, held_back, "control socket: accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Not cut short by `closing`: the hand-over sets it itself, and a successor
            // may take over a pgfleet that is draining.
            let handed = tokio::select! {
                r = hand_over(&state, &conn) => r,
                _ = stop.wait_for(|s| *s) => Ok(false),
            };
            match handed {
                Ok(true) => return, // the path is the successor's now
                Ok(false) => {
                    tracing::warn!("a starting pgfleet went away before taking over; still serving")
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "hand-over failed; still serving")
                }
            }
        }
        self.remove_if_ours();
    }

    fn remove_if_ours(&self) {
        // A successor that replaced the file since is left alone.
        let ours = std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One successor's conversation. `Ok(true)` once it has said `GO` and pgfleet stopped
/// accepting; `Ok(false)` when it left before.
async fn hand_over(state: &State, conn: &Conn) -> anyhow::Result<bool> {
    conn.check_peer()?;
    let Some((hello, _)) = conn.recv(SUCCESSOR_GREETING).await? else {
        return Ok(false);
    };
    let successor = hello
        .strip_prefix(HELLO)
        .map(str::trim)
        .with_context(|| format!("unexpected greeting {hello:?}"))?;
    let sockets = state
        .listeners
        .duplicates()
        .context("cannot duplicate the listening sockets")?;
    tracing::info!(
        successor,
        sockets = sockets.len(),
        "a starting pgfleet asks for the listening sockets"
    );
    for (addr, fd) in &sockets {
        conn.send(&format!("LISTEN {addr}"), &[fd])
            .await
            .context("cannot send a socket")?;
    }
    conn.send::<std::os::fd::OwnedFd>(&format!("END {}", std::process::id()), &[])
        .await?;
    match conn.recv(SUCCESSOR_START).await? {
        Some((go, _)) if go == "GO" => {}
        Some((other, _)) => anyhow::bail!("unexpected answer {other:?}"),
        None => return Ok(false),
    }
    tracing::info!(
        successor,
        "handed the listening sockets over: no longer accepting, draining"
    );
    state.closing.send_replace(true);
    if let Err(e) = conn.send::<std::os::fd::OwnedFd>("BYE", &[]).await {
        // The successor serves either way; it only learns later that we stopped.
        tracing::warn!(error = %e, "cannot confirm the hand-over to the successor");
    }
    Ok(true)
}
