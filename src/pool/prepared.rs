//! The prepared statements a server connection holds (transaction mode).

use std::collections::HashMap;

/// The statements one server connection holds, with a use counter for LRU eviction.
#[derive(Debug, Default)]
pub struct PreparedSet {
    names: HashMap<String, u64>,
    clock: u64,
}

impl PreparedSet {
    /// Marks `name` used; false if the connection does not hold it.
    pub fn touch(&mut self, name: &str) -> bool {
        self.clock += 1;
        match self.names.get_mut(name) {
            Some(t) => {
                *t = self.clock;
                true
            }
            None => false,
        }
    }

    /// Adds `name`; returns the statement to close first if the set is full.
    pub fn insert(&mut self, name: &str, max: usize) -> Option<String> {
        let evicted = if max > 0 && self.names.len() >= max {
            let oldest = self
                .names
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(n, _)| n.clone());
            if let Some(n) = &oldest {
                self.names.remove(n);
            }
            oldest
        } else {
            None
        };
        self.clock += 1;
        self.names.insert(name.to_owned(), self.clock);
        evicted
    }

    pub fn remove(&mut self, name: &str) {
        self.names.remove(name);
    }

    pub fn clear(&mut self) {
        self.names.clear();
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut s = PreparedSet::default();
        assert_eq!(s.insert("a", 2), None);
        assert_eq!(s.insert("b", 2), None);
        assert!(s.touch("a"));
        assert_eq!(s.insert("c", 2), Some("b".into()));
        assert!(!s.touch("b"));
        assert_eq!(s.len(), 2);
    }
}
