//! The metadata cache: whole blocks (inode table, extent tree, directory
//! and indirect blocks) keyed by physical block number, bounded, least
//! recently used evicted first; plus the per-inode "last extent" cache.
//!
//! Entries are `Arc`s: a reader clones one out under the lock and parses it
//! after the lock is released. Misses are read by the caller without the
//! lock and inserted afterwards (two racing readers may both read a block;
//! the second insert keeps the first copy).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use uk_core::idmap::IdMap;

/// One page, page aligned: a block of up to 4 KiB read into it never
/// straddles a page, so a DMA-capable reader can target it in place.
#[repr(C, align(4096))]
pub(crate) struct Page([u8; 4096]);

/// A buffer of one file-system block.
pub(crate) enum BlockBuf {
    /// Blocks of at most 4 KiB, in a page-aligned page.
    Small(Box<Page>, usize),
    /// Larger blocks (8 KiB .. 64 KiB).
    Large(Vec<u8>),
}

impl BlockBuf {
    pub(crate) fn new(len: usize) -> Self {
        if len <= 4096 {
            BlockBuf::Small(Box::new(Page([0; 4096])), len)
        } else {
            BlockBuf::Large(vec![0; len])
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            BlockBuf::Small(p, n) => &p.0[..*n],
            BlockBuf::Large(v) => v,
        }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            BlockBuf::Small(p, n) => &mut p.0[..*n],
            BlockBuf::Large(v) => v,
        }
    }
}

/// Metadata cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Block reads served from the cache.
    pub hits: u64,
    /// Block reads that went to the device.
    pub misses: u64,
    /// Blocks evicted.
    pub evictions: u64,
    /// Blocks resident.
    pub resident: usize,
    /// Capacity in blocks.
    pub capacity: usize,
    /// Extent lookups answered by the per-inode last-extent cache.
    pub extent_hits: u64,
    /// Extent lookups that walked the extent tree (or block map).
    pub extent_misses: u64,
}

pub(crate) struct BlockCache {
    map: IdMap<(Arc<BlockBuf>, u64)>,
    tick: u64,
    capacity: usize,
    pub(crate) stats: CacheStats,
}

impl BlockCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: IdMap::new(),
            tick: 0,
            capacity: capacity.max(1),
            stats: CacheStats::default(),
        }
    }

    pub(crate) fn get(&mut self, block: u64) -> Option<Arc<BlockBuf>> {
        self.tick += 1;
        let tick = self.tick;
        match self.map.get_mut(block) {
            Some((buf, stamp)) => {
                *stamp = tick;
                self.stats.hits += 1;
                Some(buf.clone())
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Inserts a block read by the caller; returns the cached copy (the
    /// first one if another reader got there first).
    pub(crate) fn insert(&mut self, block: u64, buf: Arc<BlockBuf>) -> Arc<BlockBuf> {
        self.tick += 1;
        let tick = self.tick;
        if let Some((old, stamp)) = self.map.get_mut(block) {
            *stamp = tick;
            return old.clone();
        }
        while self.map.len() >= self.capacity {
            // O(capacity), on misses only: the cache is small.
            let Some((victim, _)) = self.map.iter().min_by_key(|(_, (_, s))| *s) else {
                break;
            };
            self.map.remove(victim);
            self.stats.evictions += 1;
        }
        // Without memory for the entry the block is simply not cached: the
        // caller has its copy, and the next reader reads it again.
        let _ = self.map.try_insert(block, (buf.clone(), tick));
        buf
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            resident: self.map.len(),
            capacity: self.capacity,
            ..self.stats
        }
    }
}

/// A cached mapping: file blocks `logical..logical+len` map to
/// `phys..phys+len` (`None`: a hole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CachedExtent {
    pub(crate) ino: u32,
    pub(crate) logical: u64,
    pub(crate) len: u64,
    pub(crate) phys: Option<u64>,
}

/// The last extent looked up, for a few recently used inodes.
pub(crate) struct ExtentCache {
    entries: Vec<CachedExtent>,
    next: usize,
    capacity: usize,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

impl ExtentCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Vec::with_capacity(capacity),
            next: 0,
            capacity: capacity.max(1),
            hits: 0,
            misses: 0,
        }
    }

    pub(crate) fn stats_hit(&mut self) {
        self.hits += 1;
    }

    pub(crate) fn stats_miss(&mut self) {
        self.misses += 1;
    }

    pub(crate) fn find(&self, ino: u32, block: u64) -> Option<CachedExtent> {
        self.entries
            .iter()
            .find(|e| e.ino == ino && block >= e.logical && block - e.logical < e.len)
            .copied()
    }

    pub(crate) fn put(&mut self, e: CachedExtent) {
        if let Some(slot) = self.entries.iter_mut().find(|x| x.ino == e.ino) {
            *slot = e;
        } else if self.entries.len() < self.capacity {
            self.entries.push(e);
        } else {
            self.entries[self.next] = e;
            self.next = (self.next + 1) % self.capacity;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf() -> Arc<BlockBuf> {
        Arc::new(BlockBuf::new(1024))
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut c = BlockCache::new(2);
        c.insert(1, buf());
        c.insert(2, buf());
        assert!(c.get(1).is_some()); // 2 is now the oldest
        c.insert(3, buf());
        assert!(c.get(2).is_none());
        assert!(c.get(1).is_some() && c.get(3).is_some());
        assert_eq!(c.stats().evictions, 1);
        assert_eq!(c.stats().resident, 2);
    }

    #[test]
    fn small_blocks_are_page_aligned() {
        let b = BlockBuf::new(4096);
        assert_eq!(b.bytes().as_ptr() as usize % 4096, 0);
        assert_eq!(BlockBuf::new(1024).bytes().len(), 1024);
        assert_eq!(BlockBuf::new(65536).bytes().len(), 65536);
    }

    #[test]
    fn extent_cache_keeps_one_per_inode() {
        let mut c = ExtentCache::new(2);
        let e = |ino, logical| CachedExtent {
            ino,
            logical,
            len: 10,
            phys: Some(100),
        };
        c.put(e(1, 0));
        c.put(e(1, 10));
        assert!(c.find(1, 5).is_none());
        assert!(c.find(1, 15).is_some());
        c.put(e(2, 0));
        c.put(e(3, 0)); // replaces the oldest slot
        assert_eq!(c.entries.len(), 2);
    }
}
