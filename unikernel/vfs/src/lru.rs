//! An O(1) LRU map: a slab of entries, a [`HashIndex`] from key hash to
//! slab index (the keys live only in the slab; the index's growth code is
//! shared with the kernel's other maps) and an intrusive doubly-linked list
//! threaded through the slab by indices.
//!
//! Entries can be *detached* from the recency list while staying in the map;
//! a detached entry is invisible to [`LruMap::pop_lru`]. The page cache's
//! pinned pages (never to be chosen for eviction) stay on the list while
//! pinned: [`LruMap::pop_lru_where`] detaches the busy entries it meets,
//! and the cache attaches them again on their last unpin.
//!
//! An entry can also be marked *referenced* ([`LruMap::mark_referenced_at`])
//! instead of moved to the front: [`LruMap::pop_lru_where`] gives a
//! referenced entry at the tail a second chance (moves it to the front,
//! clears the mark), as a CLOCK does. Marking is a store; moving is six.

use alloc::vec::Vec;
use core::hash::{BuildHasher, Hash};

use hashbrown::{DefaultHashBuilder, Equivalent};
use uk_core::hashindex::HashIndex;

const NIL: u32 = u32::MAX;

struct Node<K, V> {
    key: K,
    value: V,
    prev: u32,
    next: u32,
    linked: bool,
    referenced: bool,
}

/// A hash map that remembers the recency of its entries.
pub(crate) struct LruMap<K, V> {
    map: HashIndex,
    hasher: DefaultHashBuilder,
    slab: Vec<Option<Node<K, V>>>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
}

impl<K: Hash + Eq + Clone, V> LruMap<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            map: HashIndex::new(),
            hasher: DefaultHashBuilder::default(),
            slab: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    /// Number of entries (linked or detached).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Number of entries on the recency list (evictable).
    #[cfg(test)]
    pub(crate) fn linked_len(&self) -> usize {
        self.keys_lru_order().len()
    }

    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The slab index of `key`.
    fn find<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<u32> {
        let slab = &self.slab;
        self.map.find(self.hash(key), |i| {
            slab[i as usize]
                .as_ref()
                .is_some_and(|n| key.equivalent(&n.key))
        })
    }

    fn node(&self, i: u32) -> &Node<K, V> {
        self.slab[i as usize].as_ref().expect("live slab index")
    }

    fn node_mut(&mut self, i: u32) -> &mut Node<K, V> {
        self.slab[i as usize].as_mut().expect("live slab index")
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next, linked) = {
            let n = self.node(i);
            (n.prev, n.next, n.linked)
        };
        if !linked {
            return;
        }
        if prev == NIL {
            self.head = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
        let n = self.node_mut(i);
        n.prev = NIL;
        n.next = NIL;
        n.linked = false;
    }

    fn push_front(&mut self, i: u32) {
        let old_head = self.head;
        {
            let n = self.node_mut(i);
            debug_assert!(!n.linked);
            n.prev = NIL;
            n.next = old_head;
            n.linked = true;
        }
        if old_head == NIL {
            self.tail = i;
        } else {
            self.node_mut(old_head).prev = i;
        }
        self.head = i;
    }

    /// The slab index of `key`, for the `*_at` operations: one hash lookup
    /// for several operations on the same entry (valid until it is removed).
    pub(crate) fn index_of<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<u32> {
        self.find(key)
    }

    /// The value at slab index `i` (from [`LruMap::index_of`]).
    pub(crate) fn value_at_mut(&mut self, i: u32) -> &mut V {
        &mut self.node_mut(i).value
    }

    /// Takes the entry at `i` off the recency list (no-op if it is off).
    #[cfg(test)]
    pub(crate) fn detach_at(&mut self, i: u32) {
        self.unlink(i);
    }

    /// Puts the entry at `i` back on the recency list as most recently used
    /// (no-op if it is on).
    pub(crate) fn attach_at(&mut self, i: u32) {
        if !self.node(i).linked {
            self.push_front(i);
        }
    }

    /// Whether the entry at `i` is on the recency list.
    #[cfg(test)]
    pub(crate) fn is_linked_at(&self, i: u32) -> bool {
        self.node(i).linked
    }

    /// Whether slot `i` holds `key` (a slot remembered from
    /// [`LruMap::index_of`] is checked with this before use).
    pub(crate) fn holds_at(&self, i: u32, key: &K) -> bool {
        self.slab
            .get(i as usize)
            .and_then(Option::as_ref)
            .is_some_and(|n| n.key == *key)
    }

    /// Marks the entry at `i` used, without moving it: it gets a second
    /// chance when [`LruMap::pop_lru_where`] reaches it.
    pub(crate) fn mark_referenced_at(&mut self, i: u32) {
        self.node_mut(i).referenced = true;
    }

    /// Removes slot `i`, returning its value.
    pub(crate) fn remove_at(&mut self, i: u32) -> V {
        self.take(i).1
    }

    /// Whether `key` is present.
    pub(crate) fn contains<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> bool {
        self.find(key).is_some()
    }

    /// Looks up `key` without changing its recency.
    pub(crate) fn peek<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<&V> {
        let i = self.find(key)?;
        Some(&self.node(i).value)
    }

    /// Looks up `key` mutably without changing its recency.
    pub(crate) fn peek_mut<Q: Hash + Equivalent<K> + ?Sized>(&mut self, key: &Q) -> Option<&mut V> {
        let i = self.find(key)?;
        Some(&mut self.node_mut(i).value)
    }

    /// Looks up `key` and, if it is on the recency list, marks it most recently used.
    pub(crate) fn get_mut<Q: Hash + Equivalent<K> + ?Sized>(&mut self, key: &Q) -> Option<&mut V> {
        let i = self.find(key)?;
        if self.node(i).linked {
            self.unlink(i);
            self.push_front(i);
        }
        Some(&mut self.node_mut(i).value)
    }

    /// Inserts or replaces `key`, making it most recently used (and linked).
    /// Returns the previous value, if any. Panics when memory runs out; the
    /// page cache uses [`LruMap::try_insert`].
    #[cfg(test)]
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.try_insert(key, value) {
            Ok(old) => old,
            Err(_) => panic!("LRU map: out of memory"),
        }
    }

    /// Inserts or replaces `key`, making it most recently used (and linked),
    /// and returns the previous value, if any. When the memory for a new
    /// entry cannot be had, nothing changes and `value` comes back as the
    /// error: a full heap costs the caller its insert, never a panic.
    pub(crate) fn try_insert(&mut self, key: K, value: V) -> Result<Option<V>, V> {
        let hash = self.hash(&key);
        let slab = &self.slab;
        if let Some(i) = self.map.find(hash, |i| {
            slab[i as usize].as_ref().is_some_and(|n| n.key == key)
        }) {
            let old = core::mem::replace(&mut self.node_mut(i).value, value);
            self.unlink(i);
            self.push_front(i);
            return Ok(Some(old));
        }
        if self.map.try_reserve(1).is_err() {
            return Err(value);
        }
        if self.free.is_empty() {
            // The free list gets room for every slot now, so that removing an
            // entry (eviction, called when memory is short) never allocates.
            let slots = self.slab.len() + 1;
            if u32::try_from(slots).map_or(true, |n| n == NIL)
                || self.slab.try_reserve(1).is_err()
                || self.free.try_reserve(slots - self.free.len()).is_err()
            {
                return Err(value);
            }
        }
        let node = Node {
            key,
            value,
            prev: NIL,
            next: NIL,
            linked: false,
            referenced: false,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(node);
                i
            }
            None => {
                let i = self.slab.len() as u32;
                self.slab.push(Some(node));
                i
            }
        };
        self.map.insert(hash, i);
        self.push_front(i);
        Ok(None)
    }

    /// Removes slot `i`. Never allocates: the free list has room for every
    /// slot (see [`LruMap::try_insert`]) and the index's removal does not grow.
    fn take(&mut self, i: u32) -> (K, V) {
        self.unlink(i);
        debug_assert!(self.free.len() < self.free.capacity());
        let node = self.slab[i as usize].take().expect("live slab index");
        self.free.push(i);
        self.map.remove_slot(self.hash(&node.key), i);
        (node.key, node.value)
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove<Q: Hash + Equivalent<K> + ?Sized>(&mut self, key: &Q) -> Option<V> {
        let i = self.find(key)?;
        Some(self.take(i).1)
    }

    /// Removes and returns the least recently used *linked* entry.
    pub(crate) fn pop_lru(&mut self) -> Option<(K, V)> {
        if self.tail == NIL {
            return None;
        }
        let i = self.tail;
        Some(self.take(i))
    }

    /// Removes and returns the least recently used linked entry that is
    /// neither referenced nor `busy`: on the way, a busy entry is detached
    /// (its owner attaches it again when it is no longer busy, so it is
    /// looked at once, not on every eviction) and a referenced one moves to
    /// the front with its mark cleared. Each step detaches an entry, clears
    /// a mark or returns, so the walk ends.
    pub(crate) fn pop_lru_where(&mut self, mut busy: impl FnMut(&V) -> bool) -> Option<(K, V)> {
        loop {
            let i = self.tail;
            if i == NIL {
                return None;
            }
            let n = self.node_mut(i);
            if busy(&n.value) {
                self.unlink(i);
            } else if n.referenced {
                n.referenced = false;
                self.unlink(i);
                self.push_front(i);
            } else {
                return Some(self.take(i));
            }
        }
    }

    /// Keys from least to most recently used (linked entries only).
    #[cfg(test)]
    pub(crate) fn keys_lru_order(&self) -> Vec<K> {
        let mut out = Vec::new();
        let mut i = self.tail;
        while i != NIL {
            let n = self.node(i);
            out.push(n.key.clone());
            i = n.prev;
        }
        out
    }

    /// Removes every entry for which `keep` returns false, returning them.
    /// O(n) in the slab size.
    pub(crate) fn extract_if(&mut self, mut remove: impl FnMut(&K, &mut V) -> bool) -> Vec<(K, V)> {
        let mut doomed = Vec::new();
        for (i, slot) in self.slab.iter_mut().enumerate() {
            if let Some(n) = slot
                && remove(&n.key, &mut n.value)
            {
                doomed.push(i as u32);
            }
        }
        doomed.into_iter().map(|i| self.take(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_order_and_detach() {
        let mut m: LruMap<u32, u32> = LruMap::new();
        for k in 0..5 {
            m.insert(k, k * 10);
        }
        assert_eq!(m.keys_lru_order(), [0, 1, 2, 3, 4]);
        assert_eq!(m.get_mut(&1).copied(), Some(10));
        assert_eq!(m.keys_lru_order(), [0, 2, 3, 4, 1]);
        let at = m.index_of(&0).unwrap();
        m.detach_at(at);
        m.detach_at(at); // twice is harmless
        assert_eq!(m.linked_len(), 4);
        assert_eq!(m.len(), 5);
        assert_eq!(m.pop_lru(), Some((2, 20)));
        // Detached entries are still found but not evicted or reordered.
        assert_eq!(m.get_mut(&0).copied(), Some(0));
        assert_eq!(m.keys_lru_order(), [3, 4, 1]);
        m.attach_at(at);
        m.attach_at(at);
        assert_eq!(m.keys_lru_order(), [3, 4, 1, 0]);
        *m.value_at_mut(at) = 5;
        assert_eq!(m.peek(&0), Some(&5));
        assert_eq!(m.index_of(&9), None);
        assert_eq!(m.remove(&4), Some(40));
        m.insert(7, 70); // reuses a free slot
        assert_eq!(m.keys_lru_order(), [3, 1, 0, 7]);
        let gone = m.extract_if(|k, _| *k < 2);
        assert_eq!(gone.len(), 2);
        assert_eq!(m.keys_lru_order(), [3, 7]);
        assert_eq!(m.insert(3, 33), Some(30));
        assert_eq!(m.keys_lru_order(), [7, 3]);
        while m.pop_lru().is_some() {}
        assert_eq!(m.len(), 0);
        assert_eq!(m.linked_len(), 0);
    }

    /// Eviction runs when memory is short (the memory-pressure hook), so
    /// removing entries must never allocate: the free list always has room.
    #[test]
    fn pop_lru_where_skips_busy_entries_and_gives_referenced_ones_a_second_chance() {
        let mut m: LruMap<u32, u32> = LruMap::new();
        for k in 0..5 {
            m.insert(k, k);
        }
        // 0 is busy (pinned), 1 was used since (marked, not moved).
        let one = m.index_of(&1).unwrap();
        m.mark_referenced_at(one);
        assert_eq!(m.keys_lru_order(), [0, 1, 2, 3, 4]);
        assert_eq!(m.pop_lru_where(|v| *v == 0), Some((2, 2)));
        // 0 left the list (looked at once), 1 moved to the front unmarked.
        assert_eq!(m.keys_lru_order(), [3, 4, 1]);
        assert!(!m.is_linked_at(m.index_of(&0).unwrap()));
        assert_eq!(m.pop_lru_where(|v| *v == 0), Some((3, 3)));
        assert_eq!(m.pop_lru_where(|v| *v == 0), Some((4, 4)));
        assert_eq!(m.pop_lru_where(|v| *v == 0), Some((1, 1)));
        // Only the busy entry is left, off the list: nothing to evict, and
        // it comes back as most recently used when its owner attaches it.
        assert_eq!(m.pop_lru_where(|_| true), None);
        let zero = m.index_of(&0).unwrap();
        assert!(m.holds_at(zero, &0) && !m.holds_at(zero, &1));
        m.attach_at(zero);
        assert_eq!(m.keys_lru_order(), [0]);
        // Every entry busy: each is detached once, then the walk is empty.
        for k in 1..4 {
            m.insert(k, k);
        }
        assert_eq!(m.pop_lru_where(|_| true), None);
        assert_eq!(m.linked_len(), 0);
        assert_eq!(m.len(), 4);
        assert_eq!(m.remove_at(zero), 0);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn removal_never_grows_the_free_list() {
        let mut m: LruMap<u32, u32> = LruMap::new();
        for k in 0..1000 {
            assert_eq!(m.try_insert(k, k), Ok(None));
        }
        let cap = m.free.capacity();
        assert!(cap >= 1000);
        while m.pop_lru().is_some() {}
        assert_eq!(m.free.capacity(), cap, "pop_lru grew the free list");
        // Re-inserting reuses the slots without growing anything either.
        for k in 0..1000 {
            assert_eq!(m.try_insert(k, k), Ok(None));
        }
        assert_eq!(m.free.capacity(), cap);
        assert_eq!(m.try_insert(5, 50), Ok(Some(5)));
    }

    /// With the free list exhausted, a new key needs memory (map, slab and
    /// free-list growth). Failing each of those allocations in turn leaves
    /// the map exactly as it was and hands the value back; the insert works
    /// once memory is back, and removal never allocates.
    #[test]
    fn try_insert_failure_at_every_allocation_changes_nothing() {
        use uk_failalloc::{Plan, count, inject};
        let mut m: LruMap<u32, alloc::string::String> = LruMap::new();
        let mut k = 0u32;
        let mut seen_failure = 0;
        // Grow through several reallocations of every part.
        while k < 300 {
            assert!(m.free.is_empty(), "every slot is in use");
            let order = m.keys_lru_order();
            let mut n = 0;
            loop {
                let v = alloc::format!("v{k}");
                let (r, rep) = inject(Plan::Nth(n), || m.try_insert(k, v));
                if rep.failed == 0 {
                    assert_eq!(r, Ok(None));
                    break;
                }
                seen_failure += 1;
                assert_eq!(r, Err(alloc::format!("v{k}")), "value handed back");
                assert_eq!(m.keys_lru_order(), order, "a failed insert changed the map");
                assert_eq!(m.len(), order.len());
                assert!(!m.contains(&k));
                n += 1;
            }
            k += 1;
        }
        assert!(
            seen_failure > 20,
            "the growth allocations were not exercised"
        );
        // Everything fails: replacing an existing key and reusing a free
        // slot need no memory; a brand new key is refused.
        let (seven, new, empty) = ("seven".into(), "new".into(), alloc::string::String::new());
        let (r, rep) = inject(Plan::From(0), || {
            let replaced = m.try_insert(7, seven);
            let popped = m.pop_lru();
            let reused = m.try_insert(1000, new);
            (replaced, popped, reused)
        });
        assert_eq!(rep.attempts, 0, "replacing and reusing a slot allocated");
        assert_eq!(r.0, Ok(Some("v7".into())));
        assert_eq!(r.1, Some((0, "v0".into())));
        assert_eq!(r.2, Ok(None));
        let (r, rep) = inject(Plan::From(0), || m.try_insert(1001, empty));
        // It succeeds exactly when the spare capacity covers it.
        assert_eq!(r.is_ok(), rep.attempts == 0, "{rep:?}");
        // Removal never allocates.
        let (_, n) = count(|| while m.pop_lru().is_some() {});
        assert_eq!(n, 0);
        assert_eq!(m.len(), 0);
    }
}
