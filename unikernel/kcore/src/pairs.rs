//! [`PairSet`]: an ordered set of `(u64, u64)` pairs in one sorted `Vec`.
//!
//! The kernel's ordered indexes (deadline queues, [`IdMap`](crate::idmap)'s
//! keys) hold `u64` pairs, and few of them: a handful of timers, at most a
//! few thousand keys. A sorted vector answers them with a binary search and
//! a short `memmove`, grows with `try_reserve` (so an insert can fail
//! cleanly when memory runs out), and is one small, non-generic piece of
//! code for all of them, where a B-tree costs several KiB of image.

use alloc::collections::TryReserveError;
use alloc::vec::Vec;

/// An ordered set of `(u64, u64)` pairs (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairSet {
    items: Vec<(u64, u64)>,
}

impl PairSet {
    /// An empty set; allocates nothing.
    #[must_use]
    pub const fn new() -> Self {
        Self { items: Vec::new() }
    }

    /// Number of pairs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The pairs in order.
    #[must_use]
    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.items
    }

    /// The smallest pair.
    #[must_use]
    pub fn first(&self) -> Option<(u64, u64)> {
        self.items.first().copied()
    }

    /// Removes and returns the smallest pair.
    pub fn pop_first(&mut self) -> Option<(u64, u64)> {
        (!self.items.is_empty()).then(|| self.items.remove(0))
    }

    /// Index of the first pair whose first element is `>= key`.
    #[must_use]
    pub fn lower_bound(&self, key: u64) -> usize {
        self.items.partition_point(|&(k, _)| k < key)
    }

    /// Adds `pair`; `Ok(false)` if it was already there, an error (the set
    /// unchanged) when memory for it cannot be had.
    pub fn try_insert(&mut self, pair: (u64, u64)) -> Result<bool, TryReserveError> {
        match self.items.binary_search(&pair) {
            Ok(_) => Ok(false),
            Err(i) => {
                self.insert_at(i, pair)?;
                Ok(true)
            }
        }
    }

    /// Adds `pair`; false if it was already there.
    ///
    /// # Panics
    ///
    /// When memory for it cannot be had (as `BTreeSet::insert` would).
    pub fn insert(&mut self, pair: (u64, u64)) -> bool {
        match self.try_insert(pair) {
            Ok(new) => new,
            Err(_) => panic!("PairSet: out of memory"),
        }
    }

    /// Puts `pair` at index `i`, which must keep the order; fails (the set
    /// unchanged) when memory for it cannot be had.
    pub fn insert_at(&mut self, i: usize, pair: (u64, u64)) -> Result<(), TryReserveError> {
        debug_assert!(i == 0 || self.items[i - 1] < pair);
        debug_assert!(i == self.items.len() || pair < self.items[i]);
        self.items.try_reserve(1)?;
        self.items.insert(i, pair);
        Ok(())
    }

    /// Removes `pair`; false if it was not there.
    pub fn remove(&mut self, pair: &(u64, u64)) -> bool {
        match self.items.binary_search(pair) {
            Ok(i) => {
                self.remove_at(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Removes and returns the pair at index `i`. The memory goes back once
    /// the set is empty.
    pub fn remove_at(&mut self, i: usize) -> (u64, u64) {
        let p = self.items.remove(i);
        if self.items.is_empty() {
            self.items = Vec::new();
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn matches_a_btreeset() {
        let mut s = PairSet::new();
        let mut model = BTreeSet::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pair = (x % 31, (x >> 8) % 7);
            match x % 4 {
                0 | 1 => assert_eq!(s.insert(pair), model.insert(pair)),
                2 => assert_eq!(s.remove(&pair), model.remove(&pair)),
                _ => assert_eq!(s.pop_first(), model.pop_first()),
            }
            assert_eq!(s.first(), model.first().copied());
            assert_eq!(s.len(), model.len());
            let k = x % 33;
            assert_eq!(
                s.lower_bound(k),
                model
                    .range((k, 0)..)
                    .next()
                    .map_or(model.len(), |p| model.range(..p).count())
            );
        }
        assert!(s.as_slice().iter().copied().eq(model.iter().copied()));
    }

    #[test]
    fn a_failed_insert_changes_nothing() {
        use uk_failalloc::{Plan, inject};
        let mut s = PairSet::new();
        for i in 0..100u64 {
            let before = s.clone();
            let (r, rep) = inject(Plan::From(0), || s.try_insert((i * 37 % 101, 0)));
            if rep.failed > 0 {
                assert!(r.is_err());
                assert_eq!(s, before);
                assert_eq!(s.try_insert((i * 37 % 101, 0)), Ok(true));
            } else {
                assert_eq!(r, Ok(true));
            }
        }
        assert_eq!(s.len(), 100);
    }
}
