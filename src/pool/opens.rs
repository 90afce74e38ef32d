//! How many server connections a pool has open, in all and per home: the worker list
//! (`workers::list`) whose event loop each connection's socket is registered with.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::capacity::Permit;
use crate::workers::LISTS;

/// A pool's open connections per home, counted by their `OpenGuard`s.
#[derive(Debug, Default)]
pub(super) struct Opens {
    by_home: [AtomicUsize; LISTS],
}

impl Opens {
    /// Server connections open (idle, in use, or being reset): the sum over the
    /// homes, read by the janitor and the statistics, never per transaction.
    pub(super) fn total(&self) -> usize {
        self.by_home.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    /// Those of them at home on worker list `home`.
    pub(super) fn at(&self, home: usize) -> usize {
        self.by_home[home % LISTS].load(Ordering::Relaxed)
    }
}

/// One open server connection, counted in its pool's `Opens` from before it connects
/// until it is dropped; it also holds its `max_db_connections` slot, if any.
#[derive(Debug)]
pub struct OpenGuard {
    opens: Arc<Opens>,
    home: usize,
    _db_slot: Option<Permit>,
}

impl OpenGuard {
    /// Counts a connection about to be opened on worker list `home`.
    pub(super) fn new(opens: &Arc<Opens>, home: usize, db_slot: Option<Permit>) -> OpenGuard {
        let home = home % LISTS;
        opens.by_home[home].fetch_add(1, Ordering::Relaxed);
        OpenGuard {
            opens: opens.clone(),
            home,
            _db_slot: db_slot,
        }
    }

    /// The worker list whose event loop the connection is registered with.
    pub(super) fn home(&self) -> usize {
        self.home
    }

    /// Counts the connection at home on `home` from now on.
    pub(super) fn move_to(&mut self, home: usize) {
        let home = home % LISTS;
        self.opens.by_home[self.home].fetch_sub(1, Ordering::Relaxed);
        self.opens.by_home[home].fetch_add(1, Ordering::Relaxed);
        self.home = home;
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.opens.by_home[self.home].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_each_connection_home_until_dropped() {
        let opens = Arc::new(Opens::default());
        let mut a = OpenGuard::new(&opens, 1, None);
        let b = OpenGuard::new(&opens, 1, None);
        let c = OpenGuard::new(&opens, 0, None);
        assert_eq!((opens.total(), opens.at(0), opens.at(1)), (3, 1, 2));
        a.move_to(2);
        assert_eq!((opens.total(), opens.at(1), opens.at(2)), (3, 1, 1));
        assert_eq!(a.home(), 2);
        drop(a);
        drop(c);
        assert_eq!(
            (opens.total(), opens.at(0), opens.at(1), opens.at(2)),
            (1, 0, 1, 0)
        );
        drop(b);
        assert_eq!(opens.total(), 0);
    }
}
