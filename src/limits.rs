//! Process limits pgfleet sets for itself, and logs that cannot flood.

use std::time::{Duration, Instant};

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the soft limit on open files to the hard one (each client and each server
/// connection is one descriptor; the default soft limit, often 1,024, is soon reached)
/// and logs the result.
pub fn raise_open_files() {
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (limit.current, limit.maximum);
    if soft == hard {
        tracing::info!(limit = ?soft, "open files: at the hard limit");
        return;
    }
    let raised = Rlimit {
        current: hard,
        maximum: hard,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!(from = ?soft, to = ?hard, "open files: limit raised to the hard limit")
        }
        Err(e) => {
            tracing::warn!(limit = ?soft, hard = ?hard, error = %e, "open files: cannot raise the limit")
        }
    }
}

/// Lets a repeated warning through at most once per `period`, counting the ones held
/// back: a loop that fails fast (`accept` out of descriptors) logs once a second, not
/// thousands of times.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub const fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(n)` when this occurrence may be logged, `n` the ones held back since the
    /// last that was; `None` when it is held back.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.period)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_one() {
        let limit = getrlimit(Resource::Nofile);
        let Some(hard) = limit.maximum.filter(|h| *h > 1) else {
            return; // unlimited: nothing to raise to
        };
        // A little lower, so that the other tests of this process are not short.
        let lowered = Rlimit {
            current: Some(hard - 1),
            maximum: Some(hard),
        };
        setrlimit(Resource::Nofile, lowered).unwrap();
        raise_open_files();
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
    }

    #[test]
    fn one_per_period_with_the_count_held_back() {
        let mut t = Throttle::new(Duration::from_millis(200));
        assert_eq!(t.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.allow(), Some(5));
        assert_eq!(t.allow(), None);
    }
}
