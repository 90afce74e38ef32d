//! Cancel keys: each client gets a (pid, key) pair from pgfleet; a CancelRequest with
//! that pair is forwarded to the server connection running the client's query.
//!
//! The registry's lock is taken when a client connects or leaves and for each cancel
//! request. Pointing a client at the server connection of its next transaction takes no
//! lock: the client's slot holds the connection's id in an atomic (each connection's
//! target is listed by id once, when it logs in, in its cluster's [`Targets`]), and
//! clearing it waits only for the cancel requests reading it at that instant, if any.
//!
//! A cancel that arrives while a client's transaction runs but reaches the server just
//! after it ended must not stop the next client's query on that connection. PostgreSQL
//! ignores a cancel signalled while the backend waits for a command, and signals the
//! backend before it closes the cancel connection; so each server connection has a
//! [`CancelGate`], and a connection with cancels in flight is not lent to anyone until
//! the server has closed every one of them. A cancel whose delivery is unknown (the
//! node did not answer) closes the connection instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::cluster::Node;
use crate::sync::lock;

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

/// The cancel targets of one cluster's server connections that are logged in, by id.
/// Each cluster's pools have one (`PoolSet::cancel_targets`); its clients' slots look
/// their target up in it.
#[derive(Debug, Default)]
pub struct Targets {
    listed: Mutex<BTreeMap<u64, Arc<CancelTarget>>>,
    /// The last id given out; ids start at 1 (0 is "no target").
    last_id: AtomicU64,
}

/// A server connection's cancel target, findable by its id while this lives.
#[derive(Debug)]
pub struct Listed {
    /// 0: not listed (a connection still logging in).
    id: u64,
    target: Arc<CancelTarget>,
    /// Where it is listed (none while not listed).
    targets: Option<Arc<Targets>>,
}

impl Listed {
    /// Lists `target` in `targets` under a new id.
    pub fn new(targets: &Arc<Targets>, target: CancelTarget) -> Listed {
        let id = targets.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        let target = Arc::new(target);
        lock(&targets.listed).insert(id, target.clone());
        Listed {
            id,
            target,
            targets: Some(targets.clone()),
        }
    }

    /// A target no cancel request can find.
    pub fn unlisted(target: CancelTarget) -> Listed {
        Listed {
            id: 0,
            target: Arc::new(target),
            targets: None,
        }
    }

    pub fn target(&self) -> &Arc<CancelTarget> {
        &self.target
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        if let Some(targets) = &self.targets {
            lock(&targets.listed).remove(&self.id);
        }
    }
}

/// One client's key and current server connection.
#[derive(Debug)]
pub struct CancelSlot {
    key: u32,
    /// The [`Listed`] id of the server connection the client's queries run on; 0 when
    /// none.
    target: AtomicU64,
    /// Cancel requests reading `target` at this instant.
    readers: AtomicUsize,
    /// Where `target` is looked up: the client's cluster's.
    targets: Arc<Targets>,
}

impl CancelSlot {
    fn new(key: u32, targets: Arc<Targets>) -> CancelSlot {
        CancelSlot {
            key,
            target: AtomicU64::new(0),
            readers: AtomicUsize::new(0),
            targets,
        }
    }

    /// Points the client's cancel key at `target`.
    fn set(&self, target: &Listed) {
        self.target.store(target.id, Ordering::SeqCst);
    }

    /// Clears the target. When this returns, every cancel request that found the
    /// target is counted on its gate.
    fn clear(&self) {
        self.target.store(0, Ordering::SeqCst);
        // A reader is between its two counter updates for a few instructions, with no
        // await: if one is there now (on another thread), it is done in a moment.
        let mut spins = 0u32;
        while self.readers.load(Ordering::SeqCst) != 0 {
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// The current target, entered on its gate.
    fn read(&self) -> Option<(CancelTarget, GatePass)> {
        self.readers.fetch_add(1, Ordering::SeqCst);
        let id = self.target.load(Ordering::SeqCst);
        let found = match id {
            0 => None,
            id => lock(&self.targets.listed)
                .get(&id)
                .map(|t| ((**t).clone(), t.gate.enter())),
        };
        self.readers.fetch_sub(1, Ordering::SeqCst);
        found
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
    pub fn new(slot: &'a CancelSlot, target: &Listed) -> Self {
        slot.set(target);
        TargetScope(slot)
    }
}

impl Drop for TargetScope<'_> {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// Every connected client's cancel slot, by pid.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    clients: Mutex<HashMap<u32, Arc<CancelSlot>>>,
}

impl CancelRegistry {
    /// Registers a client under its pid with its key; its targets are listed in
    /// `targets` (its cluster's).
    pub fn register(&self, pid: u32, key: u32, targets: Arc<Targets>) -> Arc<CancelSlot> {
        let slot = Arc::new(CancelSlot::new(key, targets));
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
        slot.read()
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

    fn target(pid: u32, gate: &Arc<CancelGate>) -> CancelTarget {
        CancelTarget {
            node: Arc::new(Node::new(0, "127.0.0.1:5432".into())),
            pid,
            key: 5,
            gate: gate.clone(),
        }
    }

    #[test]
    fn lookup_needs_the_right_key_and_a_target() {
        let r = CancelRegistry::default();
        let targets = Arc::new(Targets::default());
        let slot = r.register(7, 42, targets.clone());
        assert!(r.lookup(7, 42).is_none());
        let gate = Arc::new(CancelGate::default());
        let listed = Listed::new(&targets, target(100, &gate));
        let scope = TargetScope::new(&slot, &listed);
        let (found, pass) = r.lookup(7, 42).expect("a target");
        assert_eq!(found.pid, 100);
        assert!(gate.busy());
        drop(pass);
        assert!(!gate.busy());
        assert!(gate.unsure(), "a cancel never sent may still be on its way");
        assert!(r.lookup(7, 43).is_none());
        assert!(r.lookup(8, 42).is_none());
        drop(scope);
        assert!(r.lookup(7, 42).is_none());
        // A connection still logging in cannot be found, nor one that has closed.
        let unlisted = Listed::unlisted(target(101, &gate));
        let scope = TargetScope::new(&slot, &unlisted);
        assert!(r.lookup(7, 42).is_none());
        drop(scope);
        let scope = TargetScope::new(&slot, &listed);
        drop(listed);
        assert!(r.lookup(7, 42).is_none());
        drop(scope);
        r.unregister(7);
        assert!(r.lookup(7, 42).is_none());
    }

    /// Cancel requests racing a client that moves from connection to connection: once
    /// the client's target is cleared, no further cancel enters that connection's gate.
    #[test]
    fn a_cleared_target_takes_no_more_cancels() {
        let r = Arc::new(CancelRegistry::default());
        let targets = Arc::new(Targets::default());
        let slot = r.register(9, 1, targets.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let reader = std::thread::spawn({
            let (r, stop) = (r.clone(), stop.clone());
            move || {
                // Kept until the end, so each gate counts every cancel that entered it.
                let mut passes = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    if let Some((_, mut pass)) = r.lookup(9, 1) {
                        pass.delivered = true;
                        passes.push(pass);
                    }
                }
                passes
            }
        });
        let mut seen = Vec::new();
        for pid in 0..20_000 {
            let gate = Arc::new(CancelGate::default());
            let listed = Listed::new(&targets, target(pid, &gate));
            let scope = TargetScope::new(&slot, &listed);
            // Half the rounds clear once a cancel found the target; the others at
            // varied moments, some while a cancel is reading the slot.
            if pid % 2 == 0 {
                let give_up = std::time::Instant::now() + Duration::from_millis(100);
                while !gate.busy() && std::time::Instant::now() < give_up {
                    std::hint::spin_loop();
                }
            } else {
                for _ in 0..pid % 97 {
                    std::hint::spin_loop();
                }
            }
            drop(scope);
            let at_clear = gate.in_flight.load(Ordering::SeqCst);
            seen.push((gate, at_clear));
        }
        stop.store(true, Ordering::SeqCst);
        let passes = reader.join().expect("reader");
        let mut total = 0;
        for (gate, at_clear) in &seen {
            let now = gate.in_flight.load(Ordering::SeqCst);
            assert_eq!(now, *at_clear, "a cancel entered a cleared target's gate");
            total += now;
        }
        assert_eq!(total, passes.len());
        assert!(
            total > 100,
            "the cancels raced the client only {total} times"
        );
    }
}
