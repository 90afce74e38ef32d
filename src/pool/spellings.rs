//! How the servers spell the values clients send in their startup packets.
//!
//! PostgreSQL reports a setting in its own spelling: a client that starts with
//! `DateStyle=ISO` (pgjdbc does) is told `ISO, MDY`, and `TimeZone=UTC` may come back as
//! `Etc/UTC`. pgfleet applies startup settings itself in transaction mode; it learns
//! each spelling the first time it applies a value on a connection in its fresh state,
//! then greets later clients with the server's spelling and finds connections already
//! in that state, with no statement to send.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;

/// Distinct values remembered; startup values come from clients, so the map is bounded.
const MAX_SPELLINGS: usize = 1024;

/// (parameter, value as sent, the fresh connection's value) → the server's spelling.
#[derive(Debug, Default)]
pub struct Spellings {
    known: Mutex<HashMap<(String, String, String), String>>,
}

impl Spellings {
    /// The server's spelling of `name = sent` set on a fresh connection where it was
    /// `fresh`, if learnt.
    pub fn get(&self, name: &str, sent: &str, fresh: &str) -> Option<String> {
        let key = (name.to_owned(), sent.to_owned(), fresh.to_owned());
        lock(&self.known).get(&key).cloned()
    }

    /// Records that setting `name = sent` where it was `fresh` made it `reported`.
    pub fn learn(&self, name: &str, sent: &str, fresh: &str, reported: &str) {
        let mut known = lock(&self.known);
        if known.len() >= MAX_SPELLINGS {
            return;
        }
        let key = (name.to_owned(), sent.to_owned(), fresh.to_owned());
        known.insert(key, reported.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_within_its_bound() {
        let s = Spellings::default();
        assert_eq!(s.get("DateStyle", "ISO", "ISO, MDY"), None);
        s.learn("DateStyle", "ISO", "ISO, MDY", "ISO, MDY");
        assert_eq!(
            s.get("DateStyle", "ISO", "ISO, MDY").as_deref(),
            Some("ISO, MDY")
        );
        assert_eq!(s.get("DateStyle", "ISO", "German, DMY"), None);
        for i in 0..MAX_SPELLINGS + 10 {
            s.learn("TimeZone", &format!("z{i}"), "UTC", "UTC");
        }
        assert_eq!(lock(&s.known).len(), MAX_SPELLINGS);
    }
}
