//! Choosing free loopback ports that parallel tests will not also choose.
//!
//! Ports are picked at random in 20000..32000 (below Linux's ephemeral range,
//! so outgoing client connections never take them), checked with a bind on
//! 127.0.0.1, and remembered for the life of the process so two clusters in
//! one process never get the same port. Other processes may still race for a
//! port between the check and the server's bind; the caller retries with a
//! new port when the server reports the address in use.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Result};
use rand::Rng;

/// Lowest port handed out.
const LOW: u16 = 20000;
/// One past the highest port handed out.
const HIGH: u16 = 32000;

/// Ports handed out by this process (never reused).
fn taken() -> &'static Mutex<HashSet<u16>> {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    TAKEN.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Returns a port that is free on 127.0.0.1 right now and that this process
/// has not handed out before.
pub(super) fn reserve() -> Result<u16> {
    let mut rng = rand::thread_rng();
    let mut taken = crate::sync::lock(taken());
    for _ in 0..2000 {
        let port = rng.gen_range(LOW..HIGH);
        if taken.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            taken.insert(port);
            return Ok(port);
        }
    }
    bail!("no free port found in {LOW}..{HIGH}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_in_range() {
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let p = reserve().unwrap();
            assert!((LOW..HIGH).contains(&p));
            assert!(seen.insert(p));
        }
    }
}
