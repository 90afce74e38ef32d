//! A counted limit that can be resized while permits are held: pool sizes,
//! `max_db_connections` and `max_client_conn` change on reload without waiting for
//! anyone.
//!
//! Taking and giving back a permit while nobody waits is one compare-and-swap on one
//! word, with no lock: a pool's slot is taken and given back on every transaction.
//! Those who wait queue in order (a lock around the queue, taken only while someone
//! waits); a permit given back while anyone waits goes to a waiter, so a newcomer never
//! overtakes the queue. Which waiter: the first of the worker thread the permit comes
//! back on, within a bound on overtaking across workers (`queue`).
//!
//! Growing adds permits. Shrinking removes the free permits at once and records the
//! rest as debt, paid by the next permits given back.

mod queue;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::sync::lock;
use crate::workers;

/// The largest limit; larger sizes are cut to it.
const MAX_PERMITS: usize = usize::MAX >> 3;

/// Set in `state` while someone waits in the queue; free permits count in steps of two.
const WAITING: usize = 1;
const ONE: usize = 2;

/// A resizable semaphore. Cloning it gives another handle on the same permits.
#[derive(Debug, Clone)]
pub struct Capacity {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Free permits times two, plus `WAITING`. While `WAITING` is set there is no free
    /// permit: each one given back goes to the queue's first waiter.
    state: AtomicUsize,
    /// Those waiting. `WAITING` is set and cleared only under this lock.
    queue: Mutex<queue::Queue>,
    size: AtomicUsize,
    /// Permits still to be removed from circulation after a shrink.
    debt: AtomicUsize,
    resizing: Mutex<()>,
}

/// One permit, given back when dropped.
#[derive(Debug)]
#[must_use = "the permit is given back when dropped"]
pub struct Permit {
    inner: Arc<Inner>,
}

impl Permit {
    /// Keeps the permit out of circulation for good.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.give(workers::list());
    }
}

impl Capacity {
    pub fn new(size: usize) -> Capacity {
        let size = size.min(MAX_PERMITS);
        Capacity {
            inner: Arc::new(Inner {
                state: AtomicUsize::new(size * ONE),
                queue: Mutex::new(queue::Queue::default()),
                size: AtomicUsize::new(size),
                debt: AtomicUsize::new(0),
                resizing: Mutex::new(()),
            }),
        }
    }

    /// The current limit.
    pub fn size(&self) -> usize {
        self.inner.size.load(Ordering::Acquire)
    }

    /// Permits held now (may exceed `size` just after a shrink).
    pub fn in_use(&self) -> usize {
        let _r = lock(&self.inner.resizing);
        let circulating = self.size() + self.inner.debt.load(Ordering::Acquire);
        circulating.saturating_sub(self.inner.free())
    }

    /// A permit if one is free now and nobody waits for one.
    pub fn try_acquire(&self) -> Option<Permit> {
        self.try_take().then(|| self.permit())
    }

    /// A permit, waiting in turn until `deadline`; `None` when none came in time.
    pub async fn acquire_until(&self, deadline: tokio::time::Instant) -> Option<Permit> {
        self.take_until(deadline).await.then(|| self.permit())
    }

    /// Takes a permit if one is free now and nobody waits for one; the caller gives it
    /// back with [`Capacity::give`]. For holders that keep their own handle on the
    /// capacity (a pool's checkout), so that a permit costs no reference count.
    pub fn try_take(&self) -> bool {
        let state = &self.inner.state;
        let mut s = state.load(Ordering::Acquire);
        while s & WAITING == 0 && s >= ONE {
            match state.compare_exchange_weak(s, s - ONE, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
        false
    }

    /// Takes a permit, waiting in turn until `deadline`; false when none came in time.
    /// The caller gives it back with [`Capacity::give`].
    pub async fn take_until(&self, deadline: tokio::time::Instant) -> bool {
        let Some(rx) = self.inner.enqueue() else {
            return true;
        };
        let mut turn = Turn {
            rx,
            inner: &self.inner,
            granted: false,
        };
        // A sender is dropped only after `send`: a receive error cannot happen.
        turn.granted = matches!(
            tokio::time::timeout_at(deadline, &mut turn.rx).await,
            Ok(Ok(()))
        );
        turn.granted
    }

    /// Gives back a permit taken with `try_take` or `take_until`.
    pub fn give(&self) {
        self.inner.give(workers::list());
    }

    /// Gives back a permit taken with `try_take` or `take_until`, to a waiter of worker
    /// list `list` first (`workers::list`): the worker whose event loop the resource
    /// that comes with the permit is registered with.
    pub fn give_to(&self, list: usize) {
        self.inner.give(list);
    }

    fn permit(&self) -> Permit {
        Permit {
            inner: self.inner.clone(),
        }
    }

    /// Sets the limit. Holders keep their permits; a shrink takes effect as they give
    /// them back.
    pub fn resize(&self, size: usize) {
        let size = size.min(MAX_PERMITS);
        let inner = &self.inner;
        let _r = lock(&inner.resizing);
        let old = self.size();
        if size > old {
            let grow = size - old;
            let debt = inner.debt.load(Ordering::Acquire);
            let cancelled = debt.min(grow);
            inner.debt.fetch_sub(cancelled, Ordering::AcqRel);
            for _ in cancelled..grow {
                inner.add_one(workers::list());
            }
        } else if size < old {
            let shrink = old - size;
            let removed = inner.remove_free(shrink);
            inner.debt.fetch_add(shrink - removed, Ordering::AcqRel);
        }
        inner.size.store(size, Ordering::Release);
    }

    /// Waits until no permit is held, at most `grace`; returns whether that happened.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if self.in_use() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A place in the queue. Dropped before its permit came (timeout, or the waiter went
/// away), it leaves the queue; a permit sent in the meantime is given back.
struct Turn<'a> {
    rx: oneshot::Receiver<()>,
    inner: &'a Inner,
    /// The permit came and is the waiter's.
    granted: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        self.rx.close();
        if self.rx.try_recv().is_ok() {
            self.inner.give(workers::list());
        }
    }
}

impl Inner {
    fn free(&self) -> usize {
        self.state.load(Ordering::Acquire) / ONE
    }

    /// Takes a free permit (`None`), or joins the queue (its receiver).
    fn enqueue(&self) -> Option<oneshot::Receiver<()>> {
        let mut queue = lock(&self.queue);
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let next = match s {
                _ if s & WAITING != 0 => break,
                0 => WAITING,
                _ => s - ONE,
            };
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == WAITING => break,
                Ok(_) => return None,
                Err(now) => s = now,
            }
        }
        let (tx, rx) = oneshot::channel();
        queue.push(tx);
        Some(rx)
    }

    /// Gives a permit back: pays debt, or goes to a waiter (of `list` first), or becomes
    /// free.
    fn give(&self, list: usize) {
        let paid = self.debt.load(Ordering::Acquire) > 0
            && self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
                .is_ok();
        if !paid {
            self.add_one(list);
        }
    }

    /// One more permit: to the next waiter still waiting (`Queue::pop_for(list)`), else
    /// free.
    fn add_one(&self, list: usize) {
        let mut s = self.state.load(Ordering::Acquire);
        while s & WAITING == 0 {
            match self
                .state
                .compare_exchange_weak(s, s + ONE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(now) => s = now,
            }
        }
        loop {
            let first = {
                let mut queue = lock(&self.queue);
                let first = queue.pop_for(list);
                if queue.is_empty() {
                    // The flag changes only under this lock; free permits may be
                    // counted concurrently once it is clear, so update, not store.
                    let freed = if first.is_none() { ONE } else { 0 };
                    let _ = self
                        .state
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                            Some((s & !WAITING) + freed)
                        });
                }
                first
            };
            // A waiter that has gone (timed out) is skipped; the permit goes on.
            let sent = first.map_or(Ok(()), |tx| tx.send(()));
            if sent.is_ok() {
                return;
            }
        }
    }

    /// Removes up to `n` free permits; returns how many.
    fn remove_free(&self, n: usize) -> usize {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let take = (s / ONE).min(n);
            match self.state.compare_exchange_weak(
                s,
                s - take * ONE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return take,
                Err(now) => s = now,
            }
        }
    }
}

#[cfg(test)]
mod tests;
