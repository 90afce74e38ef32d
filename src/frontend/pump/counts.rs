//! The pump's traffic counters, added to the pool's statistics in batches.

use crate::pool::PoolStats;

/// Traffic of this pump, added to the pool's shared counters every `FLUSH_EVERY`
/// batches and at the end: no shared cache line written per round trip.
#[derive(Debug, Default)]
pub(in crate::frontend) struct Counts {
    received: u64,
    sent: u64,
    queries: u64,
    xacts: u64,
    batches: u64,
}

const FLUSH_EVERY: u64 = 64;

impl Counts {
    /// Bytes written to the server.
    pub(super) fn received(&mut self, bytes: usize) {
        self.received += bytes as u64;
    }

    /// Bytes written to the client, and the requests and transactions they ended.
    pub(super) fn sent(&mut self, bytes: usize, stats: &[&PoolStats]) {
        self.sent += bytes as u64;
        self.batches += 1;
        if self.batches >= FLUSH_EVERY {
            self.flush(stats);
        }
    }

    /// A ReadyForQuery passed: one request answered, a transaction ended if `idle`.
    pub(super) fn answered(&mut self, idle: bool) {
        self.queries += 1;
        self.xacts += u64::from(idle);
    }

    /// Adds the traffic counted since the last flush to each of `stats`.
    pub(super) fn flush(&mut self, stats: &[&PoolStats]) {
        let this = std::mem::take(self);
        for s in stats {
            s.add_received(this.received as usize);
            s.add_sent(this.sent as usize, this.queries, this.xacts);
        }
    }
}
