//! A bounded set of recently seen keys: remembers the last `capacity` insertions, forgets the
//! oldest first. Used to recognise copies of broadcasts that have no natural version.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

pub struct RecentSet<K> {
    order: VecDeque<K>,
    members: HashSet<K>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> RecentSet<K> {
    pub fn new(capacity: usize) -> Self {
        RecentSet {
            order: VecDeque::with_capacity(capacity.min(1024)),
            members: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn contains(&self, key: &K) -> bool {
        self.members.contains(key)
    }

    /// Records `key`; returns `true` if it was not already remembered.
    pub fn insert(&mut self, key: K) -> bool {
        if self.members.contains(&key) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.members.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.members.insert(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_most_recent_keys_only() {
        let mut s = RecentSet::new(2);
        assert!(s.insert(1));
        assert!(!s.insert(1));
        assert!(s.insert(2));
        assert!(s.insert(3)); // forgets 1
        assert!(s.insert(1));
        assert!(!s.insert(3));
    }
}
