//! [`IdMap`]: a map from `u64` keys to values of any type that shares its
//! ordered index among all value types.
//!
//! A `BTreeMap<u64, V>` compiles the whole B-tree (insert, split, merge,
//! steal, search) once for every `V`: about 4.5 KiB of code each. The
//! kernel keeps many small maps keyed by ids and addresses; an `IdMap<V>`
//! keeps its keys in one `BTreeSet<(u64, u64)>` of (key, slot) pairs (the
//! same instance for every `V`, and the one the timer queues use) and its
//! values in a slab `Vec`, whose code is small. Lookups by key (one descent
//! to the first pair at or above `(key, 0)`), ordered iteration and
//! "greatest key at or below" cost the same as the B-tree's plus one slab
//! index.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

/// A map from `u64` keys to `V`, ordered by key (see the module docs).
#[derive(Clone)]
pub struct IdMap<V> {
    /// (key, slot index in `slots`), one pair per key.
    index: BTreeSet<(u64, u64)>,
    /// The values with their keys; `None` slots are free (listed in `free`).
    slots: Vec<Option<(u64, V)>>,
    /// Free slot indices, reused before the slab grows.
    free: Vec<u64>,
}

impl<V: core::fmt::Debug> core::fmt::Debug for IdMap<V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> IdMap<V> {
    /// An empty map; allocates nothing.
    pub const fn new() -> Self {
        Self {
            index: BTreeSet::new(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when the map holds no entry.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn slot(&self, key: u64) -> Option<usize> {
        match self.index.range((key, 0)..).next() {
            Some(&(k, s)) if k == key => Some(s as usize),
            _ => None,
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: u64) -> Option<&V> {
        let s = self.slot(key)?;
        self.slots[s].as_ref().map(|(_, v)| v)
    }

    /// The value of `key`, mutably.
    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        let s = self.slot(key)?;
        self.slots[s].as_mut().map(|(_, v)| v)
    }

    /// True when `key` has a value.
    pub fn contains_key(&self, key: u64) -> bool {
        self.slot(key).is_some()
    }

    /// Sets the value of `key`, returning the one it replaced.
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        match self.slot(key) {
            Some(s) => self.slots[s].replace((key, value)).map(|(_, v)| v),
            None => {
                self.put(key, value);
                None
            }
        }
    }

    /// Stores `value` under `key`, which has none; returns its slot.
    fn put(&mut self, key: u64, value: V) -> usize {
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some((key, value));
                s as usize
            }
            None => {
                self.slots.push(Some((key, value)));
                self.slots.len() - 1
            }
        };
        self.index.insert((key, s as u64));
        s
    }

    /// The value of `key`, inserting `f()` first if there is none.
    pub fn get_or_insert_with(&mut self, key: u64, f: impl FnOnce() -> V) -> &mut V {
        let s = match self.slot(key) {
            Some(s) => s,
            None => self.put(key, f()),
        };
        &mut self.slots[s]
            .as_mut()
            .expect("IdMap: an indexed slot is free")
            .1
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: u64) -> Option<V> {
        let s = self.slot(key)? as u64;
        self.index.remove(&(key, s));
        let taken = self.slots[s as usize].take().map(|(_, v)| v);
        if s as usize + 1 == self.slots.len() {
            self.slots.pop();
        } else {
            self.free.push(s);
        }
        if self.index.is_empty() {
            self.slots.clear();
            self.free.clear();
        }
        taken
    }

    /// The entry with the greatest key at or below `key`.
    pub fn last_at_or_below(&self, key: u64) -> Option<(u64, &V)> {
        let &(_, s) = self.index.range(..=(key, u64::MAX)).next_back()?;
        self.slots[s as usize].as_ref().map(|(k, v)| (*k, v))
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &V)> + '_ {
        self.index
            .iter()
            .filter_map(|&(_, s)| self.slots[s as usize].as_ref().map(|(k, v)| (*k, v)))
    }

    /// The entries, mutably, in no particular order (slab order).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut V)> + '_ {
        self.slots
            .iter_mut()
            .filter_map(|e| e.as_mut().map(|(k, v)| (*k, v)))
    }

    /// The values, mutably, in no particular order (slab order).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> + '_ {
        self.iter_mut().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap as Model;

    #[test]
    fn matches_a_btreemap_under_mixed_operations() {
        let mut m = IdMap::new();
        let mut model = Model::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 97;
            match x % 5 {
                0 | 1 => assert_eq!(m.insert(key, i), model.insert(key, i)),
                2 => assert_eq!(m.remove(key), model.remove(&key)),
                3 => {
                    *m.get_or_insert_with(key, || i) += 1;
                    *model.entry(key).or_insert(i) += 1;
                }
                _ => {
                    if let Some(v) = m.get_mut(key) {
                        *v += 3;
                    }
                    if let Some(v) = model.get_mut(&key) {
                        *v += 3;
                    }
                }
            }
            assert_eq!(m.len(), model.len());
            assert_eq!(m.get(key), model.get(&key));
            assert_eq!(m.contains_key(key), model.contains_key(&key));
            assert_eq!(
                m.last_at_or_below(key),
                model.range(..=key).next_back().map(|(k, v)| (*k, v))
            );
        }
        let ours: Vec<_> = m.iter().map(|(k, v)| (k, *v)).collect();
        let theirs: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(ours, theirs);
        let mut muts: Vec<_> = m.iter_mut().map(|(k, v)| (k, *v)).collect();
        muts.sort_unstable();
        assert_eq!(muts, theirs);
        for k in 0..97 {
            m.remove(k);
        }
        assert!(m.is_empty());
        assert!(m.slots.is_empty() && m.free.is_empty());
    }

    #[test]
    fn slots_are_reused() {
        let mut m = IdMap::new();
        for k in 0..8 {
            m.insert(k, k);
        }
        m.remove(3);
        m.remove(5);
        m.insert(100, 100);
        m.insert(101, 101);
        assert_eq!(m.slots.len(), 8);
        assert_eq!(m.get(100), Some(&100));
        assert_eq!(m.last_at_or_below(99), Some((7, &7)));
        assert_eq!(m.last_at_or_below(4), Some((4, &4)));
        assert_eq!(m.last_at_or_below(3), Some((2, &2)));
    }
}
