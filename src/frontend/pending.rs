//! Logins in progress per source address: one address cannot hold every pending login
//! (`max_pending_logins_per_address`), so a flood of connections that never log in
//! from one place does not lock everybody else out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The logins in progress, counted by source (an IPv4 address, or an IPv6 /64: one
/// host's addresses).
#[derive(Debug, Default)]
pub struct PendingByAddress {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One login in progress from a source, counted until dropped.
#[derive(Debug)]
#[must_use = "the login is counted until the permit is dropped"]
pub struct AddressPermit<'a> {
    pending: &'a PendingByAddress,
    source: Option<IpAddr>,
}

impl PendingByAddress {
    /// Counts a login from `peer`, unless its source has `max` in progress already
    /// (`max` 0: no limit, nothing counted).
    pub fn try_acquire(&self, peer: IpAddr, max: usize) -> Option<AddressPermit<'_>> {
        if max == 0 {
            return Some(AddressPermit {
                pending: self,
                source: None,
            });
        }
        let source = source(peer);
        let mut counts = crate::sync::lock(&self.counts);
        let n = counts.entry(source).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressPermit {
            pending: self,
            source: Some(source),
        })
    }

    /// Logins in progress from `peer`'s source.
    pub fn in_progress(&self, peer: IpAddr) -> usize {
        let counts = crate::sync::lock(&self.counts);
        counts.get(&source(peer)).copied().unwrap_or(0)
    }
}

impl Drop for AddressPermit<'_> {
    fn drop(&mut self) {
        let Some(source) = self.source else {
            return;
        };
        let mut counts = crate::sync::lock(&self.pending.counts);
        if let Some(n) = counts.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&source);
            }
        }
    }
}

/// What logins are counted by: the IPv4 address (also when mapped into IPv6), or the
/// IPv6 address's /64.
fn source(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_per_source_up_to_the_limit() {
        let p = PendingByAddress::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.3".parse().unwrap();
        let first = p.try_acquire(a, 2).unwrap();
        let _second = p.try_acquire(a, 2).unwrap();
        assert!(p.try_acquire(a, 2).is_none());
        assert!(p.try_acquire(b, 2).is_some(), "another source");
        drop(first);
        assert!(p.try_acquire(a, 2).is_some());
        // One IPv6 /64 is one source.
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _x = p.try_acquire(x, 1).unwrap();
        assert!(p.try_acquire(y, 1).is_none());
        assert_eq!(p.in_progress(y), 1);
        // No limit: nothing counted.
        let _free: Vec<_> = (0..10).map(|_| p.try_acquire(a, 0).unwrap()).collect();
    }
}
