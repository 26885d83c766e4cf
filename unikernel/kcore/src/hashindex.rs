//! [`HashIndex`]: a hash table of `u32` slot numbers whose keys live with
//! the caller (in a slab), for hash maps built as "index + slab".
//!
//! Each entry is the slot number and 32 bits of the key's hash (computed
//! by the caller, with whatever hasher it wants); a lookup compares those
//! bits, then asks the caller whether the slot's key is the one wanted.
//! Growing the table rehashes from the stored bits, never from the keys,
//! so hashbrown's growth code (over 1 KiB per element type) is one piece
//! of code for every map that uses this index, whatever its key type,
//! where a `HashMap<K, u32>` has one copy per `K`. Entries are 8 bytes.

use hashbrown::{HashTable, TryReserveError};

/// One entry: 32 bits of the key's hash and the caller's slot number.
#[derive(Clone, Copy, Debug)]
struct Entry {
    hash: u32,
    slot: u32,
}

/// The 32 bits kept of a 64-bit hash.
fn fold(hash: u64) -> u32 {
    (hash ^ (hash >> 32)) as u32
}

/// The 64-bit hash hashbrown sees for 32 stored bits: hashbrown takes the
/// bucket from the low bits and a 7-bit tag from the top ones, so the
/// bits appear in both halves.
fn widen(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

/// The rehash function for growth: one function (not a closure per
/// caller), so that every index shares hashbrown's resize code.
fn rehash(e: &Entry) -> u64 {
    widen(e.hash)
}

/// A hash index of slot numbers (see the module docs). The caller hashes
/// its keys (the same key must always give the same hash) and answers
/// "does slot `s` hold the key?" in lookups.
#[derive(Clone, Debug, Default)]
pub struct HashIndex {
    table: HashTable<Entry>,
}

impl HashIndex {
    /// An empty index; allocates nothing.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            table: HashTable::new(),
        }
    }

    /// Number of slots in the index.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the index is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// How many slots the index holds without growing.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Heap bytes per unit of [`HashIndex::capacity`] (an entry and its
    /// control byte), for memory accounting.
    pub const BYTES_PER_ENTRY: usize = size_of::<Entry>() + 1;

    /// The slot of the key whose hash is `hash` and for which `is_key`
    /// answers true.
    pub fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let h = fold(hash);
        self.table
            .find(widen(h), |e| e.hash == h && is_key(e.slot))
            .map(|e| e.slot)
    }

    /// Makes room for `additional` more slots, so that as many
    /// [`HashIndex::insert`]s do not allocate; `Err` when the memory
    /// cannot be had (nothing changes then).
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), TryReserveError> {
        self.table.try_reserve(additional, rehash)
    }

    /// Adds `slot` under `hash`. The caller makes sure its key is not in
    /// the index already. Allocates (aborting when memory runs out) unless
    /// room was reserved with [`HashIndex::try_reserve`].
    pub fn insert(&mut self, hash: u64, slot: u32) {
        let h = fold(hash);
        self.table
            .insert_unique(widen(h), Entry { hash: h, slot }, rehash);
    }

    /// Removes and returns the slot of the key whose hash is `hash` and
    /// for which `is_key` answers true. Never allocates.
    pub fn remove(&mut self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let h = fold(hash);
        match self
            .table
            .find_entry(widen(h), |e| e.hash == h && is_key(e.slot))
        {
            Ok(e) => Some(e.remove().0.slot),
            Err(_) => None,
        }
    }

    /// Removes `slot` (stored under `hash`); false when it is not there.
    /// Never allocates.
    pub fn remove_slot(&mut self, hash: u64, slot: u32) -> bool {
        self.remove(hash, |s| s == slot).is_some()
    }

    /// Shrinks the table as far as `min_capacity` and its length allow.
    pub fn shrink_to(&mut self, min_capacity: usize) {
        self.table.shrink_to(min_capacity, rehash);
    }

    /// Removes every slot, keeping the memory.
    pub fn clear(&mut self) {
        self.table.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// A tiny "slab" map over the index, with a hash that collides a lot
    /// (so that the key check is what tells keys apart).
    struct Map {
        index: HashIndex,
        keys: Vec<Option<u64>>,
    }

    fn h(k: u64) -> u64 {
        k % 7
    }

    impl Map {
        fn get(&self, k: u64) -> Option<u32> {
            self.index.find(h(k), |s| self.keys[s as usize] == Some(k))
        }
        fn insert(&mut self, k: u64) -> u32 {
            let s = self.keys.len() as u32;
            self.keys.push(Some(k));
            self.index.insert(h(k), s);
            s
        }
        fn remove(&mut self, k: u64) -> Option<u32> {
            let keys = &self.keys;
            let s = self.index.remove(h(k), |s| keys[s as usize] == Some(k))?;
            self.keys[s as usize] = None;
            Some(s)
        }
    }

    #[test]
    fn find_insert_remove_through_collisions_and_growth() {
        let mut m = Map {
            index: HashIndex::new(),
            keys: Vec::new(),
        };
        assert!(m.index.is_empty());
        for k in 0..1000 {
            assert_eq!(m.insert(k * 3), k as u32);
        }
        assert_eq!(m.index.len(), 1000);
        for k in 0..1000 {
            assert_eq!(m.get(k * 3), Some(k as u32));
            assert_eq!(m.get(k * 3 + 1), None);
        }
        for k in (0..1000).step_by(2) {
            assert_eq!(m.remove(k * 3), Some(k as u32));
            assert_eq!(m.remove(k * 3), None);
        }
        assert_eq!(m.index.len(), 500);
        for k in 0..1000 {
            let want = (k % 2 == 1).then_some(k as u32);
            assert_eq!(m.get(k * 3), want);
        }
        assert!(m.index.remove_slot(h(3), 1));
        assert!(!m.index.remove_slot(h(3), 1));
        m.index.shrink_to(0);
        assert!(m.index.capacity() >= 499);
        for k in (1..1000).step_by(2).skip(1) {
            assert_eq!(m.get(k * 3), Some(k as u32));
        }
        m.index.clear();
        assert_eq!(m.index.len(), 0);
        assert_eq!(m.get(9), None);
    }

    #[test]
    fn reserved_inserts_do_not_allocate_and_failure_changes_nothing() {
        use uk_failalloc::{Plan, count, inject};
        let mut ix = HashIndex::new();
        let (r, _) = inject(Plan::From(0), || ix.try_reserve(10));
        assert!(r.is_err());
        assert_eq!(ix.capacity(), 0);
        ix.try_reserve(10).unwrap();
        let (_, n) = count(|| {
            for s in 0..10 {
                ix.insert(u64::from(s) << 40, s);
            }
        });
        assert_eq!(n, 0);
        let (_, n) = count(|| {
            for s in 0..10 {
                assert_eq!(ix.remove(u64::from(s) << 40, |t| t == s), Some(s));
            }
        });
        assert_eq!(n, 0);
    }
}
