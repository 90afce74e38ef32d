//! A statistics counter that threads add to without sharing a cache line: each worker
//! thread adds to its own shard, a reader sums them. On the transaction path every
//! counter is written once per transaction from whichever worker runs the client;
//! with one shared atomic the line would move between the cores each time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards per counter; threads beyond that share them round-robin.
const SHARDS: usize = 8;

/// A `u64` total, added to per thread. `load` and `fetch_add` read as on `AtomicU64`.
#[derive(Debug, Default)]
pub struct Counter {
    shards: [Shard; SHARDS],
}

/// One cache line per shard.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard(AtomicU64);

fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

impl Counter {
    /// Adds `n` to this thread's shard.
    pub fn fetch_add(&self, n: u64, order: Ordering) {
        self.shards[shard()].0.fetch_add(n, order);
    }

    /// The total over all shards.
    pub fn load(&self, order: Ordering) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(order)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn totals_over_threads() {
        let c = Arc::new(Counter::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.fetch_add(2, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.load(Ordering::Relaxed), 24_000);
    }
}
