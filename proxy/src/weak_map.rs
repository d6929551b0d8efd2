//! One shared value per key for as long as anything holds it: the registries of
//! backend states, connection pools and probers all hand values out this way, and
//! forget a key once its value is dropped.
//!
//! Dead entries are swept when the map has doubled since the last sweep, so building
//! n new entries costs O(n) in total. (Sweeping on every insert, as each registry did
//! before, made a first configuration of 15,000 replicas cost O(n²).)

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Weak};

/// Smallest size at which dead entries are swept.
const MIN_SWEEP: usize = 64;

/// A map of weak references; see the module documentation.
#[derive(Debug)]
pub struct WeakMap<K, V> {
    entries: HashMap<K, Weak<V>>,
    /// Size after the last sweep.
    swept: usize,
}

impl<K, V> Default for WeakMap<K, V> {
    fn default() -> Self {
        WeakMap {
            entries: HashMap::new(),
            swept: 0,
        }
    }
}

impl<K: Eq + Hash, V> WeakMap<K, V> {
    /// The live value of `key`, if anything still holds it.
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        self.entries.get(key).and_then(Weak::upgrade)
    }

    /// Remember `value` for `key` (replacing a dead or live one).
    pub fn insert(&mut self, key: K, value: &Arc<V>) {
        if self.entries.len() >= (self.swept * 2).max(MIN_SWEEP) {
            self.entries.retain(|_, weak| weak.strong_count() > 0);
            self.swept = self.entries.len();
        }
        self.entries.insert(key, Arc::downgrade(value));
    }

    /// Every live value.
    pub fn live(&self) -> impl Iterator<Item = Arc<V>> + '_ {
        self.entries.values().filter_map(Weak::upgrade)
    }

    /// Entries kept, dead ones not yet swept included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shared_while_held_and_dead_entries_are_swept() {
        let mut map: WeakMap<String, usize> = WeakMap::default();
        let one = Arc::new(1);
        map.insert("one".into(), &one);
        assert!(Arc::ptr_eq(&map.get(&"one".into()).unwrap(), &one));
        drop(one);
        assert!(map.get(&"one".into()).is_none(), "a dropped value is gone");

        // Many values come and go: the map stays within twice the live ones (plus the
        // minimum) instead of growing with every value ever inserted.
        let kept: Vec<Arc<usize>> = (0..100).map(Arc::new).collect();
        for (i, value) in kept.iter().enumerate() {
            map.insert(format!("kept{}", i % 2), value);
        }
        let mut held = Vec::new();
        for i in 0..10_000usize {
            let value = Arc::new(i);
            map.insert(format!("k{i}"), &value);
            if i % 100 == 0 {
                held.push(value);
            }
        }
        let live = map.live().count();
        assert_eq!(live, held.len() + 2);
        assert!(
            map.len() <= 2 * live.max(MIN_SWEEP) + 1,
            "{} entries for {live} live",
            map.len()
        );
    }
}
