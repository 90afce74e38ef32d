//! The pump's traffic counters, added to the pool's statistics in batches.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::pool::PoolStats;

/// Traffic of this pump, added to the pool's shared counters every `FLUSH_EVERY`
/// batches and at the end: no shared cache line written per round trip.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) received: AtomicU64,
    sent: AtomicU64,
    queries: AtomicU64,
    xacts: AtomicU64,
    batches: AtomicU64,
}

const FLUSH_EVERY: u64 = 64;

impl Counts {
    pub(super) fn sent(&self, bytes: usize, queries: u64, xacts: u64, stats: &[&PoolStats]) {
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
        self.queries.fetch_add(queries, Ordering::Relaxed);
        self.xacts.fetch_add(xacts, Ordering::Relaxed);
        if self.batches.fetch_add(1, Ordering::Relaxed) + 1 >= FLUSH_EVERY {
            self.flush(stats);
        }
    }

    /// Adds the traffic counted since the last flush to each of `stats`.
    pub(super) fn flush(&self, stats: &[&PoolStats]) {
        self.batches.store(0, Ordering::Relaxed);
        let received = self.received.swap(0, Ordering::Relaxed) as usize;
        let sent = self.sent.swap(0, Ordering::Relaxed) as usize;
        let queries = self.queries.swap(0, Ordering::Relaxed);
        let xacts = self.xacts.swap(0, Ordering::Relaxed);
        for s in stats {
            s.add_received(received);
            s.add_sent(sent, queries, xacts);
        }
    }
}
