//! Secrets `auth_query` found, and users it did not find, kept for a while and bounded
//! in number. Pure: the caller passes the clock.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::Secret;

/// A user `auth_query` did not find is looked up again after at most this long, so a
/// role created after a failed login can log in soon.
pub const MISSING_TTL: Duration = Duration::from_secs(5);
/// Users with a secret kept per cluster at most.
pub const MAX_FOUND: usize = 10_000;
/// Users not found kept per cluster at most, apart from the found ones: a flood of
/// made-up names cannot push real users out.
pub const MAX_MISSING: usize = 1_000;

/// What `auth_query` answered, per user, and when.
#[derive(Debug, Default)]
pub struct Cache {
    found: HashMap<String, (Instant, Secret)>,
    missing: HashMap<String, Instant>,
}

impl Cache {
    /// What is known of `user` at `now` with `auth_cache_ttl` = `ttl`: `Some(Some(_))`
    /// its secret, `Some(None)` not found, `None` unknown (to be looked up). The TTL is
    /// applied when reading, so a reload that shortens it applies to what is kept.
    pub fn get(&self, user: &str, now: Instant, ttl: Duration) -> Option<Option<Secret>> {
        if let Some((at, secret)) = self.found.get(user) {
            if now.duration_since(*at) < ttl {
                return Some(Some(secret.clone()));
            }
        }
        match self.missing.get(user) {
            Some(at) if now.duration_since(*at) < ttl.min(MISSING_TTL) => Some(None),
            _ => None,
        }
    }

    /// Records what `auth_query` answered for `user` at `now` (nothing with a zero
    /// TTL). When full, expired entries go first, then an arbitrary one.
    pub fn insert(&mut self, user: &str, secret: Option<Secret>, now: Instant, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        match secret {
            Some(secret) => {
                self.missing.remove(user);
                make_room(&mut self.found, MAX_FOUND, user, |(at, _)| {
                    now.duration_since(*at) < ttl
                });
                self.found.insert(user.to_owned(), (now, secret));
            }
            None => {
                self.found.remove(user);
                let ttl = ttl.min(MISSING_TTL);
                make_room(&mut self.missing, MAX_MISSING, user, |at| {
                    now.duration_since(*at) < ttl
                });
                self.missing.insert(user.to_owned(), now);
            }
        }
    }

    /// Forgets everything (the lookup's settings changed).
    pub fn clear(&mut self) {
        self.found.clear();
        self.missing.clear();
    }

    /// Entries kept, found and not found.
    pub fn len(&self) -> usize {
        self.found.len() + self.missing.len()
    }
}

/// Makes room for `user` in a map of at most `max` entries: drops the entries that are
/// no longer `fresh`, then, if still full, one more.
fn make_room<V>(map: &mut HashMap<String, V>, max: usize, user: &str, fresh: impl Fn(&V) -> bool) {
    if map.len() < max || map.contains_key(user) {
        return;
    }
    map.retain(|_, v| fresh(v));
    if map.len() >= max {
        if let Some(k) = map.keys().next().cloned() {
            map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5() -> Secret {
        Secret::parse("md53175bce1d3201d16594cebf9d7eb3f9d")
    }

    #[test]
    fn found_for_the_ttl_missing_briefly() {
        let mut c = Cache::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        c.insert("u", Some(md5()), t0, ttl);
        c.insert("ghost", None, t0, ttl);
        assert_eq!(
            c.get("u", t0 + Duration::from_secs(59), ttl),
            Some(Some(md5()))
        );
        assert_eq!(c.get("u", t0 + ttl, ttl), None);
        assert_eq!(c.get("ghost", t0 + Duration::from_secs(4), ttl), Some(None));
        assert_eq!(c.get("ghost", t0 + MISSING_TTL, ttl), None);
        // A shorter TTL (a reload) applies to what is kept; a missing user never
        // outlives the TTL either.
        let short = Duration::from_secs(1);
        assert_eq!(c.get("u", t0 + short, short), None);
        assert_eq!(c.get("ghost", t0 + short, short), None);
        assert_eq!(c.get("nobody", t0, ttl), None);
    }

    #[test]
    fn zero_ttl_keeps_nothing_and_answers_replace() {
        let mut c = Cache::default();
        let t0 = Instant::now();
        c.insert("u", Some(md5()), t0, Duration::ZERO);
        assert_eq!(c.len(), 0);
        let ttl = Duration::from_secs(60);
        c.insert("u", None, t0, ttl);
        c.insert("u", Some(md5()), t0, ttl);
        assert_eq!((c.len(), c.get("u", t0, ttl)), (1, Some(Some(md5()))));
        c.insert("u", None, t0, ttl);
        assert_eq!((c.len(), c.get("u", t0, ttl)), (1, Some(None)));
        c.clear();
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn bounded_and_made_up_names_do_not_push_users_out() {
        let mut c = Cache::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        for i in 0..MAX_FOUND {
            c.insert(&format!("user{i}"), Some(md5()), t0, ttl);
        }
        for i in 0..3 * MAX_MISSING {
            c.insert(&format!("ghost{i}"), None, t0, ttl);
        }
        assert_eq!(c.len(), MAX_FOUND + MAX_MISSING);
        assert!((0..MAX_FOUND).all(|i| c.get(&format!("user{i}"), t0, ttl).is_some()));
        // Full of fresh entries: one goes for the new one.
        c.insert("late", Some(md5()), t0, ttl);
        assert_eq!(c.len(), MAX_FOUND + MAX_MISSING);
        assert!(c.get("late", t0, ttl).is_some());
        // Expired entries go first, all at once.
        let later = t0 + ttl;
        c.insert("later", Some(md5()), later, ttl);
        assert_eq!(c.get("later", later, ttl), Some(Some(md5())));
        assert_eq!(c.found.len(), 1);
    }
}
