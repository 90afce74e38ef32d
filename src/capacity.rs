//! A counted limit that can be resized while permits are held: pool sizes,
//! `max_db_connections` and `max_client_conn` change on reload without waiting for
//! anyone.
//!
//! Growing adds permits. Shrinking removes the free permits at once and records the
//! rest as debt, paid by the next permits handed back: each acquirer that gets a permit
//! while there is debt forgets it instead of keeping it, and asks again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A resizable semaphore.
#[derive(Debug)]
pub struct Capacity {
    sem: Arc<Semaphore>,
    size: AtomicUsize,
    /// Permits still to be removed from circulation after a shrink.
    debt: AtomicUsize,
    resizing: Mutex<()>,
}

impl Capacity {
    pub fn new(size: usize) -> Capacity {
        let size = size.min(Semaphore::MAX_PERMITS);
        Capacity {
            sem: Arc::new(Semaphore::new(size)),
            size: AtomicUsize::new(size),
            debt: AtomicUsize::new(0),
            resizing: Mutex::new(()),
        }
    }

    /// The current limit.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    /// Permits held now (may exceed `size` just after a shrink).
    pub fn in_use(&self) -> usize {
        let _r = self.lock();
        let circulating = self.size() + self.debt.load(Ordering::Acquire);
        circulating.saturating_sub(self.sem.available_permits())
    }

    /// A permit if one is free now.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            let permit = self.sem.clone().try_acquire_owned().ok()?;
            if let Some(permit) = self.keep_unless_owed(permit) {
                return Some(permit);
            }
        }
    }

    /// A permit, waiting until `deadline`; `None` when none became free in time.
    pub async fn acquire_until(
        &self,
        deadline: tokio::time::Instant,
    ) -> Option<OwnedSemaphorePermit> {
        loop {
            let permit = tokio::time::timeout_at(deadline, self.sem.clone().acquire_owned())
                .await
                .ok()?
                .ok()?;
            if let Some(permit) = self.keep_unless_owed(permit) {
                return Some(permit);
            }
        }
    }

    /// Sets the limit. Holders keep their permits; a shrink takes effect as they hand
    /// them back.
    pub fn resize(&self, size: usize) {
        let size = size.min(Semaphore::MAX_PERMITS);
        let _r = self.lock();
        let old = self.size();
        if size > old {
            let mut grow = size - old;
            let debt = self.debt.load(Ordering::Acquire);
            let cancelled = debt.min(grow);
            self.debt.fetch_sub(cancelled, Ordering::AcqRel);
            grow -= cancelled;
            self.sem.add_permits(grow);
        } else if size < old {
            let shrink = old - size;
            let removed = self.sem.forget_permits(shrink);
            self.debt.fetch_add(shrink - removed, Ordering::AcqRel);
        }
        self.size.store(size, Ordering::Release);
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

    /// Returns `permit` to the caller, or forgets it to pay one unit of debt.
    fn keep_unless_owed(&self, permit: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        let paid = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if paid {
            permit.forget();
            None
        } else {
            Some(permit)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.resizing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_below_the_permits_held_takes_effect_as_they_come_back() {
        let c = Capacity::new(3);
        let a = c.try_acquire().unwrap();
        let b = c.try_acquire().unwrap();
        c.resize(1);
        assert_eq!(c.in_use(), 2);
        assert!(c.try_acquire().is_none());
        drop(a);
        // The permit handed back paid the debt: still none free.
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
}
