//! Per-pool counters, like PgBouncer's SHOW STATS totals.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use super::counter::Counter;

/// Totals since the pool was created. Updated once per batch of messages.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Transactions completed (ReadyForQuery back to idle).
    pub xacts: Counter,
    /// Queries completed (ReadyForQuery).
    pub queries: Counter,
    /// Bytes from clients to servers.
    pub bytes_received: Counter,
    /// Bytes from servers to clients.
    pub bytes_sent: Counter,
    /// Time clients waited for a server connection, in microseconds.
    pub wait_us: Counter,
    /// Checkouts (sessions started on this pool).
    pub checkouts: Counter,
    /// Checkouts by wait, one count per `WAIT_BUCKETS` bound (not cumulative).
    wait_buckets: [Counter; WAIT_BUCKETS.len()],
    /// The change over the last `stats_period` and its length, for averages.
    last_period: Mutex<Option<(StatsSnapshot, Duration)>>,
}

/// Upper bounds, in seconds, of the wait-time histogram's buckets (`+Inf` is the
/// checkout count).
pub const WAIT_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
];

/// A copy of the counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub xacts: u64,
    pub queries: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub wait_us: u64,
    pub checkouts: u64,
}

impl PoolStats {
    /// Bytes forwarded from a client.
    pub fn add_received(&self, bytes: usize) {
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes forwarded to a client, with the queries and transactions they completed.
    pub fn add_sent(&self, bytes: usize, queries: u64, xacts: u64) {
        if bytes > 0 {
            self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        if queries > 0 {
            self.queries.fetch_add(queries, Ordering::Relaxed);
        }
        if xacts > 0 {
            self.xacts.fetch_add(xacts, Ordering::Relaxed);
        }
    }

    /// The wait-time histogram: (upper bound in seconds, checkouts that waited more
    /// than the bound before it and at most this one), ending with `+Inf`.
    pub fn wait_histogram(&self) -> Vec<(f64, u64)> {
        let mut buckets: Vec<(f64, u64)> = WAIT_BUCKETS
            .iter()
            .zip(&self.wait_buckets)
            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
            .collect();
        let counted: u64 = buckets.iter().map(|(_, n)| n).sum();
        let all = self.checkouts.load(Ordering::Relaxed);
        buckets.push((f64::INFINITY, all.saturating_sub(counted)));
        buckets
    }

    pub(super) fn record_wait(&self, waited: Duration) {
        let us = waited.as_micros().min(u64::MAX as u128) as u64;
        self.wait_us.fetch_add(us, Ordering::Relaxed);
        self.checkouts.fetch_add(1, Ordering::Relaxed);
        let secs = waited.as_secs_f64();
        if let Some(i) = WAIT_BUCKETS.iter().position(|b| secs <= *b) {
            self.wait_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records the change over the last statistics period.
    pub fn set_last_period(&self, change: StatsSnapshot, period: Duration) {
        *crate::sync::lock(&self.last_period) = Some((change, period));
    }

    /// The change over the last statistics period and its length, if one has passed.
    pub fn last_period(&self) -> Option<(StatsSnapshot, Duration)> {
        *crate::sync::lock(&self.last_period)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            xacts: self.xacts.load(Ordering::Relaxed),
            queries: self.queries.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            wait_us: self.wait_us.load(Ordering::Relaxed),
            checkouts: self.checkouts.load(Ordering::Relaxed),
        }
    }
}

impl StatsSnapshot {
    /// The change from `earlier` to `self`.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            xacts: self.xacts.saturating_sub(earlier.xacts),
            queries: self.queries.saturating_sub(earlier.queries),
            bytes_received: self.bytes_received.saturating_sub(earlier.bytes_received),
            bytes_sent: self.bytes_sent.saturating_sub(earlier.bytes_sent),
            wait_us: self.wait_us.saturating_sub(earlier.wait_us),
            checkouts: self.checkouts.saturating_sub(earlier.checkouts),
        }
    }
}
