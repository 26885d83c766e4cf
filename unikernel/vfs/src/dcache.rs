//! The dentry cache: `(device, parent inode, name) -> inode`, with negative
//! entries, bounded size and O(1) LRU eviction.
//!
//! Entries hold strong [`InodeRef`]s, so cached inodes stay alive until
//! evicted. The cache does not observe file systems by itself: mutations done
//! through [`crate::Vfs`] update it; code that changes a directory behind the
//! VFS's back must call [`DentryCache::invalidate`].

use alloc::string::String;
use core::hash::Hash;

use hashbrown::Equivalent;

use crate::inode::InodeRef;
use crate::lru::LruMap;

#[derive(Clone, PartialEq, Eq, Hash)]
struct DKey {
    dev: u64,
    parent: u64,
    name: String,
}

/// Borrowed form of [`DKey`]; its derived `Hash` matches `DKey`'s because
/// `String` and `&str` hash identically.
#[derive(Hash)]
struct DKeyRef<'a> {
    dev: u64,
    parent: u64,
    name: &'a str,
}

impl Equivalent<DKey> for DKeyRef<'_> {
    fn equivalent(&self, key: &DKey) -> bool {
        self.dev == key.dev && self.parent == key.parent && self.name == key.name
    }
}

/// Result of a dentry-cache probe.
pub enum DcacheLookup {
    /// A positive entry: the name resolves to this inode.
    Hit(InodeRef),
    /// A negative entry: the name is known not to exist.
    Negative,
    /// Nothing cached; ask the file system.
    Miss,
}

/// Dentry-cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DcacheStats {
    /// Lookups answered by a positive entry.
    pub hits: u64,
    /// Lookups answered by a negative entry.
    pub negative_hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Entries dropped to stay within capacity.
    pub evictions: u64,
    /// Entries currently cached (positive and negative).
    pub entries: usize,
    /// Maximum number of entries.
    pub capacity: usize,
}

/// The dentry cache.
pub struct DentryCache {
    map: LruMap<DKey, Option<InodeRef>>,
    capacity: usize,
    generation: u64,
    stats: DcacheStats,
}

impl DentryCache {
    /// A cache holding at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            map: LruMap::new(),
            capacity: capacity.max(1),
            generation: 0,
            stats: DcacheStats::default(),
        }
    }

    /// Probes for `name` in directory `parent` of device `dev`, counting a
    /// hit, negative hit or miss, and refreshing the entry's recency.
    pub fn lookup(&mut self, dev: u64, parent: u64, name: &str) -> DcacheLookup {
        let key = DKeyRef { dev, parent, name };
        match self.map.get_mut(&key) {
            Some(Some(inode)) => {
                self.stats.hits += 1;
                DcacheLookup::Hit(inode.clone())
            }
            Some(None) => {
                self.stats.negative_hits += 1;
                DcacheLookup::Negative
            }
            None => {
                self.stats.misses += 1;
                DcacheLookup::Miss
            }
        }
    }

    /// Records that `name` in `parent` resolves to `inode` (`None`: a
    /// negative entry), evicting the least recently used entry if full.
    pub fn insert(&mut self, dev: u64, parent: u64, name: &str, inode: Option<InodeRef>) {
        let key = DKeyRef { dev, parent, name };
        if let Some(slot) = self.map.get_mut(&key) {
            *slot = inode;
            return;
        }
        while self.map.len() >= self.capacity {
            if self.map.pop_lru().is_none() {
                break;
            }
            self.stats.evictions += 1;
        }
        // A dentry the heap has no room for is simply not cached.
        let mut owned = String::new();
        if owned.try_reserve_exact(name.len()).is_err() {
            return;
        }
        owned.push_str(name);
        let _ = self.map.try_insert(
            DKey {
                dev,
                parent,
                name: owned,
            },
            inode,
        );
    }

    /// Drops any entry for `name` in `parent` and bumps the generation.
    pub fn invalidate(&mut self, dev: u64, parent: u64, name: &str) {
        self.generation += 1;
        self.map.remove(&DKeyRef { dev, parent, name });
    }

    /// A counter bumped by every invalidation. A lookup that consulted the
    /// file system without the cache lock compares it before inserting its
    /// result, so it cannot resurrect an entry a concurrent mutation changed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Drops every entry of device `dev` (on unmount). O(entries).
    pub fn invalidate_dev(&mut self, dev: u64) {
        self.generation += 1;
        self.map.extract_if(|k, _| k.dev == dev);
    }

    /// Changes the capacity, evicting as needed.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.map.len() > self.capacity && self.map.pop_lru().is_some() {
            self.stats.evictions += 1;
        }
    }

    /// Current counters.
    pub fn stats(&self) -> DcacheStats {
        DcacheStats {
            entries: self.map.len(),
            capacity: self.capacity,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileSystem;
    use crate::sync::StdLocking;
    use crate::tmpfs::TmpFs;

    #[test]
    fn positive_negative_and_lru_eviction() {
        let fs = TmpFs::<StdLocking>::new();
        let root = fs.root();
        let a = root.create("a", 0o644).unwrap();
        let mut dc = DentryCache::new(2);
        assert!(matches!(dc.lookup(1, 1, "a"), DcacheLookup::Miss));
        dc.insert(1, 1, "a", Some(a.clone()));
        dc.insert(1, 1, "missing", None);
        assert!(matches!(dc.lookup(1, 1, "a"), DcacheLookup::Hit(i) if i.ino() == a.ino()));
        assert!(matches!(dc.lookup(1, 1, "missing"), DcacheLookup::Negative));
        // Same name on another device or parent is a different entry.
        assert!(matches!(dc.lookup(2, 1, "a"), DcacheLookup::Miss));
        // "a" is now least recently used ("missing" was probed after it).
        dc.insert(1, 1, "b", None);
        assert!(matches!(dc.lookup(1, 1, "a"), DcacheLookup::Miss));
        assert!(matches!(dc.lookup(1, 1, "missing"), DcacheLookup::Negative));
        let s = dc.stats();
        assert_eq!(
            (s.hits, s.negative_hits, s.misses, s.evictions, s.entries),
            (1, 2, 3, 1, 2)
        );
        dc.invalidate(1, 1, "missing");
        assert!(matches!(dc.lookup(1, 1, "missing"), DcacheLookup::Miss));
        dc.insert(3, 1, "x", None);
        dc.invalidate_dev(3);
        assert!(matches!(dc.lookup(3, 1, "x"), DcacheLookup::Miss));
        dc.set_capacity(1);
        assert_eq!(dc.stats().entries, 1);
    }
}
