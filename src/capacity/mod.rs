//! A counted limit that can be resized while permits are held: pool sizes,
//! `max_db_connections` and `max_client_conn` change on reload without waiting for
//! anyone.
//!
//! Taking and giving back a permit while nobody waits is one compare-and-swap on one
//! word, with no lock: a pool's slot is taken and given back on every transaction.
//! Those who wait queue in order (a lock around the queue, taken only while someone
//! waits); a permit given back while anyone waits goes to the first of them, so a
//! newcomer never overtakes the queue.
//!
//! Growing adds permits. Shrinking removes the free permits at once and records the
//! rest as debt, paid by the next permits given back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

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
    /// Those waiting, in order. `WAITING` is set and cleared only under this lock.
    queue: Mutex<VecDeque<oneshot::Sender<()>>>,
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
        self.inner.give();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Capacity {
    pub fn new(size: usize) -> Capacity {
        let size = size.min(MAX_PERMITS);
        Capacity {
            inner: Arc::new(Inner {
                state: AtomicUsize::new(size * ONE),
                queue: Mutex::new(VecDeque::new()),
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
        self.inner.give();
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
                inner.add_one();
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
            self.inner.give();
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
        queue.push_back(tx);
        Some(rx)
    }

    /// Gives a permit back: pays debt, or goes to the first waiter, or becomes free.
    fn give(&self) {
        let paid = self.debt.load(Ordering::Acquire) > 0
            && self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
                .is_ok();
        if !paid {
            self.add_one();
        }
    }

    /// One more permit: to the first waiter still waiting, else free.
    fn add_one(&self) {
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
                let first = queue.pop_front();
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
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn soon(ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn shrinking_below_the_permits_held_takes_effect_as_they_come_back() {
        let c = Capacity::new(3);
        let a = c.try_acquire().unwrap();
        let b = c.try_acquire().unwrap();
        c.resize(1);
        assert_eq!(c.in_use(), 2);
        assert!(c.try_acquire().is_none());
        drop(a);
        // The permit given back paid the debt: still none free.
        assert!(c.try_acquire().is_none());
        assert_eq!(c.in_use(), 1);
        drop(b);
        let only = c.try_acquire().unwrap();
        assert!(c.try_acquire().is_none());
        drop(only);
        assert_eq!(c.in_use(), 0);
    }

    #[test]
    fn growing_cancels_debt_first() {
        let c = Capacity::new(2);
        let a = c.try_acquire().unwrap();
        let b = c.try_acquire().unwrap();
        c.resize(0);
        c.resize(3);
        assert_eq!(c.size(), 3);
        assert_eq!(c.in_use(), 2);
        let third = c.try_acquire().unwrap();
        assert!(c.try_acquire().is_none());
        drop((a, b, third));
        assert_eq!(c.in_use(), 0);
        let all: Vec<_> = (0..3).map(|_| c.try_acquire().unwrap()).collect();
        assert!(c.try_acquire().is_none());
        drop(all);
    }

    #[tokio::test]
    async fn a_permit_given_back_goes_to_the_first_waiter_not_to_a_newcomer() {
        let c = Capacity::new(1);
        let held = c.try_acquire().unwrap();
        let (c1, c2) = (c.clone(), c.clone());
        let first = tokio::spawn(async move { c1.acquire_until(soon(5_000)).await });
        tokio::task::yield_now().await;
        let second = tokio::spawn(async move { c2.acquire_until(soon(5_000)).await });
        tokio::task::yield_now().await;
        drop(held);
        // The freed permit is the first waiter's: a newcomer finds none.
        assert!(c.try_acquire().is_none());
        let p1 = first.await.unwrap().expect("first waiter served");
        assert!(!second.is_finished());
        drop(p1);
        let p2 = second.await.unwrap().expect("second waiter served");
        assert_eq!(c.in_use(), 1);
        drop(p2);
        assert_eq!(c.in_use(), 0);
        assert!(c.try_acquire().is_some());
    }

    #[tokio::test]
    async fn a_waiter_that_times_out_leaves_the_queue_and_loses_no_permit() {
        let c = Capacity::new(1);
        let held = c.try_acquire().unwrap();
        assert!(c.acquire_until(soon(20)).await.is_none());
        // Its place in the queue is skipped: the permit given back becomes free.
        drop(held);
        assert_eq!(c.in_use(), 0);
        let again = c.try_acquire().expect("free after the waiter left");
        drop(again);
        // Raw takes and gives count the same permits.
        assert!(c.try_take());
        assert!(!c.try_take());
        assert!(!c.take_until(soon(10)).await);
        c.give();
        assert!(c.take_until(soon(10)).await);
        c.give();
        assert_eq!(c.in_use(), 0);
    }

    #[tokio::test]
    async fn growing_serves_waiters() {
        let c = Capacity::new(0);
        let c1 = c.clone();
        let waiter = tokio::spawn(async move { c1.acquire_until(soon(5_000)).await });
        tokio::task::yield_now().await;
        c.resize(1);
        let p = waiter.await.unwrap().expect("served by the grown limit");
        assert_eq!(c.in_use(), 1);
        drop(p);
        assert_eq!(c.in_use(), 0);
    }

    /// Threads taking, waiting and timing out at once never hold more permits than the
    /// limit, and every permit is back at the end.
    #[test]
    fn permits_are_never_exceeded_nor_lost_under_contention() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_time()
            .build()
            .unwrap();
        let c = Capacity::new(3);
        let held = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..16 {
                let (c, held, most) = (c.clone(), held.clone(), most.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..2_000u64 {
                        let permit = match (t + i) % 3 {
                            0 => c.try_acquire(),
                            1 => c.acquire_until(soon(1)).await,
                            _ => c.acquire_until(soon(1_000)).await,
                        };
                        let Some(permit) = permit else { continue };
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        if i % 7 == 0 {
                            tokio::task::yield_now().await;
                        }
                        held.fetch_sub(1, Ordering::SeqCst);
                        drop(permit);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert_eq!(c.in_use(), 0);
        let all: Vec<_> = (0..3).map(|_| c.try_acquire().unwrap()).collect();
        assert!(c.try_acquire().is_none());
        drop(all);
    }
}
