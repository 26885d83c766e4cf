//! [`IdMap`]: a map from `u64` keys to values of any type, ordered by key,
//! whose inserts can fail cleanly when memory runs out.
//!
//! The keys live in one [`PairSet`] of (key, slot) pairs (a sorted `Vec`)
//! and the values in a slab `Vec`. A lookup is a binary search plus one
//! slab index; an insert or remove shifts the pairs above it (16 bytes
//! each), which for the kernel's maps (a few thousand entries at most:
//! mappings, epoll instances, cached blocks) is a short `memmove`. Unlike a
//! `BTreeMap`, every allocation an insert makes is a `try_reserve`:
//! [`IdMap::try_insert`] hands the value back instead of aborting, so the
//! paths that network input drives (an `mmap` per response, a block read
//! per lookup) fail one request with `ENOMEM`. Only the slab's code is
//! generic; the index is one piece of code for every map.

use alloc::vec::Vec;

use crate::pairs::PairSet;

/// A map from `u64` keys to `V`, ordered by key (see the module docs).
#[derive(Clone)]
pub struct IdMap<V> {
    /// (key, slot index in `slots`), one pair per key.
    index: PairSet,
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

/// Position of `key` in the index: `Ok(i)` where it is, `Err(i)` where it
/// would go.
fn search(index: &PairSet, key: u64) -> Result<usize, usize> {
    let i = index.lower_bound(key);
    match index.as_slice().get(i) {
        Some(&(k, _)) if k == key => Ok(i),
        _ => Err(i),
    }
}

/// The index half of an insert (no generic code: one copy for every map,
/// out of line, where each value type had its own): puts `(key, slot)` at
/// position `at` of `index`, the slot the last of `free` (taken off it) or
/// else `slots_len` (the slab's end, for which the caller has reserved
/// room); `None`, and nothing changed, without memory for the pair.
#[inline(never)]
fn link(
    index: &mut PairSet,
    free: &mut Vec<u64>,
    at: usize,
    key: u64,
    slots_len: usize,
) -> Option<usize> {
    let s = free.last().map_or(slots_len, |&s| s as usize);
    index.insert_at(at, (key, s as u64)).ok()?;
    if s != slots_len {
        free.pop();
    }
    Some(s)
}

/// The index half of a remove (see [`link`]): takes `key` out of `index`
/// and returns its slot, listed in `free` for reuse unless it is the slab's
/// last (`slots_len`), which the caller pops. Without room in `free` the
/// slot is simply not reused: it stays `None`, which iteration skips.
#[inline(never)]
fn unlink(index: &mut PairSet, free: &mut Vec<u64>, key: u64, slots_len: usize) -> Option<usize> {
    let i = search(index, key).ok()?;
    let (_, s) = index.remove_at(i);
    if s as usize + 1 != slots_len && free.try_reserve(1).is_ok() {
        free.push(s);
    }
    Some(s as usize)
}

impl<V> IdMap<V> {
    /// An empty map; allocates nothing.
    pub const fn new() -> Self {
        Self {
            index: PairSet::new(),
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
        let i = search(&self.index, key).ok()?;
        Some(self.index.as_slice()[i].1 as usize)
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
    ///
    /// # Panics
    ///
    /// When memory for a new entry cannot be had (as `BTreeMap::insert`
    /// would); paths that must survive that use [`IdMap::try_insert`].
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        match self.try_insert(key, value) {
            Ok(old) => old,
            Err(_) => panic!("IdMap: out of memory"),
        }
    }

    /// Sets the value of `key`, returning the one it replaced; gives `value`
    /// back, and changes nothing, when memory for a new entry cannot be had.
    pub fn try_insert(&mut self, key: u64, value: V) -> Result<Option<V>, V> {
        match search(&self.index, key) {
            Ok(i) => {
                let s = self.index.as_slice()[i].1 as usize;
                Ok(self.slots[s].replace((key, value)).map(|(_, v)| v))
            }
            Err(at) => self.put(at, key, value).map(|_| None),
        }
    }

    /// Stores `value` under `key`, which has none and belongs at index
    /// position `at`; returns its slot, or `value` back (nothing changed)
    /// without memory for it.
    fn put(&mut self, at: usize, key: u64, value: V) -> Result<usize, V> {
        if self.free.is_empty() && self.slots.try_reserve(1).is_err() {
            return Err(value);
        }
        let Some(s) = link(&mut self.index, &mut self.free, at, key, self.slots.len()) else {
            return Err(value);
        };
        if s == self.slots.len() {
            self.slots.push(Some((key, value)));
        } else {
            self.slots[s] = Some((key, value));
        }
        Ok(s)
    }

    /// The value of `key`, inserting `f()` first if there is none.
    ///
    /// # Panics
    ///
    /// As [`IdMap::insert`], when memory for a new entry cannot be had.
    pub fn get_or_insert_with(&mut self, key: u64, f: impl FnOnce() -> V) -> &mut V {
        match self.try_get_or_insert_with(key, f) {
            Some(v) => v,
            None => panic!("IdMap: out of memory"),
        }
    }

    /// The value of `key`, inserting `f()` first if there is none; `None`
    /// when memory for a new entry cannot be had.
    pub fn try_get_or_insert_with(&mut self, key: u64, f: impl FnOnce() -> V) -> Option<&mut V> {
        let s = match search(&self.index, key) {
            Ok(i) => self.index.as_slice()[i].1 as usize,
            Err(at) => self.put(at, key, f()).ok()?,
        };
        self.slots[s].as_mut().map(|(_, v)| v)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: u64) -> Option<V> {
        let s = unlink(&mut self.index, &mut self.free, key, self.slots.len())?;
        let taken = self.slots[s].take().map(|(_, v)| v);
        if s + 1 == self.slots.len() {
            self.slots.pop();
        }
        if self.index.is_empty() {
            self.slots = Vec::new();
            self.free = Vec::new();
        }
        taken
    }

    /// The entry with the greatest key at or below `key`.
    pub fn last_at_or_below(&self, key: u64) -> Option<(u64, &V)> {
        let i = match search(&self.index, key) {
            Ok(i) => i,
            Err(0) => return None,
            Err(i) => i - 1,
        };
        let (_, s) = self.index.as_slice()[i];
        self.slots[s as usize].as_ref().map(|(k, v)| (*k, v))
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &V)> + '_ {
        self.index
            .as_slice()
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

    /// Failing each allocation an insert makes, in turn, leaves the map as
    /// it was and hands the value back; the insert works once memory is
    /// back. Replacing a key's value and removing never allocate.
    #[test]
    fn try_insert_failure_changes_nothing() {
        use uk_failalloc::{Plan, inject};
        let mut m: IdMap<std::string::String> = IdMap::new();
        let mut failures = 0;
        for k in 0..200u64 {
            // Keys out of order, so inserts land in the middle.
            let key = (k * 7919) % 1009;
            let before: Vec<_> = m.iter().map(|(k, v)| (k, v.clone())).collect();
            let mut n = 0;
            loop {
                let v = std::format!("v{key}");
                let (r, rep) = inject(Plan::Nth(n), || m.try_insert(key, v));
                if rep.failed == 0 {
                    assert_eq!(r, Ok(None));
                    break;
                }
                failures += 1;
                assert_eq!(r, Err(std::format!("v{key}")), "value handed back");
                let now: Vec<_> = m.iter().map(|(k, v)| (k, v.clone())).collect();
                assert_eq!(now, before, "a failed insert changed the map");
                n += 1;
            }
            assert_eq!(
                m.get(key).map(|s| s.as_str()),
                Some(std::format!("v{key}").as_str())
            );
        }
        assert!(failures > 10, "the growth allocations were not exercised");
        let zero = std::string::String::from("zero");
        let (r, rep) = inject(Plan::From(0), || m.try_insert(0, zero));
        assert_eq!(rep.attempts, 0, "replacing allocated: {rep:?}");
        assert_eq!(r, Ok(Some("v0".into())));
        // Removal works with no memory at all (a slot it cannot list as
        // free is left unused), and the map stays consistent.
        let gone = 7919 % 1009;
        let (r, _) = inject(Plan::From(0), || m.remove(gone));
        assert_eq!(r, Some(std::format!("v{gone}")));
        assert!(!m.contains_key(gone));
        assert_eq!(m.len(), 199);
        assert_eq!(m.try_insert(gone, "back".into()), Ok(None));
        assert_eq!(m.iter().count(), 200);
    }
}
