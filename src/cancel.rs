//! Cancel keys: each client gets a (pid, key) pair from pgfleet; a CancelRequest with
//! that pair is forwarded to the server connection running the client's query.
//!
//! The registry's lock is taken when a client connects or leaves and for each cancel
//! request; pointing a client at the server connection of its next transaction only
//! touches that client's own slot (an uncontended lock around one pointer; the target
//! is built once per server connection). An `ArcSwap` there would cost more: its
//! stores, two per transaction, walk every thread's debt list.
//!
//! A cancel that arrives while a client's transaction runs but reaches the server just
//! after it ended must not stop the next client's query on that connection. PostgreSQL
//! ignores a cancel signalled while the backend waits for a command, and signals the
//! backend before it closes the cancel connection; so each server connection has a
//! [`CancelGate`], and a connection with cancels in flight is not lent to anyone until
//! the server has closed every one of them. A cancel whose delivery is unknown (the
//! node did not answer) closes the connection instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::cluster::Node;

/// How long a cancel may take before its server connection is given up.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a client's queries currently run.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub node: Arc<Node>,
    pub pid: u32,
    pub key: u32,
    /// The server connection's gate.
    pub gate: Arc<CancelGate>,
}

/// Cancel requests in flight towards one server connection.
#[derive(Debug, Default)]
pub struct CancelGate {
    in_flight: AtomicUsize,
    /// A cancel was sent and its delivery is unknown: the connection must be closed.
    unsure: AtomicBool,
    done: Notify,
}

impl CancelGate {
    /// Counts one cancel in flight until the returned pass is dropped.
    pub fn enter(self: &Arc<Self>) -> GatePass {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        GatePass {
            gate: self.clone(),
            delivered: false,
        }
    }

    /// Whether a cancel is still on its way.
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    /// Whether a cancel may still reach the connection later: it must not be reused.
    pub fn unsure(&self) -> bool {
        self.unsure.load(Ordering::SeqCst)
    }

    /// Waits until no cancel is in flight; false if that took longer than the cancel
    /// timeout or a cancel's delivery is unknown.
    pub async fn settle(&self) -> bool {
        let wait = async {
            loop {
                let done = self.done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if !self.busy() {
                    return;
                }
                done.await;
            }
        };
        tokio::time::timeout(CANCEL_TIMEOUT, wait).await.is_ok() && !self.unsure()
    }
}

/// One cancel in flight; see [`CancelGate::enter`].
#[derive(Debug)]
pub struct GatePass {
    gate: Arc<CancelGate>,
    delivered: bool,
}

impl Drop for GatePass {
    fn drop(&mut self) {
        if !self.delivered {
            self.gate.unsure.store(true, Ordering::SeqCst);
        }
        self.gate.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.gate.done.notify_waiters();
    }
}

/// One client's key and current server connection.
#[derive(Debug)]
pub struct CancelSlot {
    key: u32,
    target: Mutex<Option<Arc<CancelTarget>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CancelSlot {
    /// Sets (or clears) the server connection the client's queries run on.
    pub fn set(&self, target: Option<Arc<CancelTarget>>) {
        // The old target is dropped after the lock is released.
        let _old = std::mem::replace(&mut *lock(&self.target), target);
    }
}

/// Keeps a client's cancel target set; clears it when dropped. Dropped before the
/// server connection it points at is released, so no cancel can find a connection
/// that another client may already use.
#[must_use = "the target is cleared when this is dropped"]
#[derive(Debug)]
pub struct TargetScope<'a>(&'a CancelSlot);

impl<'a> TargetScope<'a> {
    /// Points the client's cancel key at `target`.
    pub fn new(slot: &'a CancelSlot, target: Arc<CancelTarget>) -> Self {
        slot.set(Some(target));
        TargetScope(slot)
    }
}

impl Drop for TargetScope<'_> {
    fn drop(&mut self) {
        self.0.set(None);
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

    /// The server to cancel for (pid, key), if the key matches and a query can run,
    /// with the connection held back from other clients until the cancel is sent.
    pub fn lookup(&self, pid: u32, key: u32) -> Option<(CancelTarget, GatePass)> {
        let slot = lock(&self.clients).get(&pid).cloned()?;
        // Compare without an early exit on the first differing bit.
        if (slot.key ^ key) != 0 {
            return None;
        }
        // Entered under the slot's lock: once a client's target is cleared, every
        // cancel that saw it is counted on the gate.
        let target = lock(&slot.target);
        let target = target.as_ref()?;
        Some(((**target).clone(), target.gate.enter()))
    }
}

/// Sends a CancelRequest for `target` on a new connection, as PostgreSQL expects, and
/// waits for the server to close it (it has signalled the backend by then).
pub async fn send_cancel(target: &CancelTarget, mut pass: GatePass) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(
        target.pid as i32,
        target.key as i32,
        &mut out,
    );
    let exchange = async {
        let mut stream = TcpStream::connect(&target.node.addr).await?;
        stream.write_all(&out).await?;
        let mut rest = [0u8; 64];
        while stream.read(&mut rest).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(CANCEL_TIMEOUT, exchange).await {
        Ok(Ok(())) => {
            pass.delivered = true;
            Ok(())
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            // Nothing listens: nothing will be cancelled later either.
            pass.delivered = true;
            Err(e)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the server did not close the cancel connection",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settle_waits_for_the_cancels_in_flight() {
        let gate = Arc::new(CancelGate::default());
        let mut pass = gate.enter();
        pass.delivered = true;
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.settle().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(pass);
        assert!(waiting.await.expect("settle"), "delivered: reusable");
        assert!(!gate.busy() && !gate.unsure());
    }

    #[test]
    fn lookup_needs_the_right_key_and_a_target() {
        let r = CancelRegistry::default();
        let slot = r.register(7, 42);
        assert!(r.lookup(7, 42).is_none());
        let gate = Arc::new(CancelGate::default());
        slot.set(Some(Arc::new(CancelTarget {
            node: Arc::new(Node::new(0, "127.0.0.1:5432".into())),
            pid: 100,
            key: 5,
            gate: gate.clone(),
        })));
        let (target, pass) = r.lookup(7, 42).expect("a target");
        assert_eq!(target.pid, 100);
        assert!(gate.busy());
        drop(pass);
        assert!(!gate.busy());
        assert!(gate.unsure(), "a cancel never sent may still be on its way");
        assert!(r.lookup(7, 43).is_none());
        assert!(r.lookup(8, 42).is_none());
        slot.set(None);
        assert!(r.lookup(7, 42).is_none());
        r.unregister(7);
        assert!(r.lookup(7, 42).is_none());
    }
}
