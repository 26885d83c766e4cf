//! The page cache: 4 KiB pages of file data keyed by `(device, inode, page
//! index)` in an LRU map (slab plus hash index), with O(1) eviction.
//!
//! # Design
//!
//! * **Storage is the embedder's.** Pages come from a [`PageFrames`]
//!   allocator; the kernel hands out physical frames (reachable through its
//!   direct map), tests use [`HeapFrames`] (`Box<[u8; 4096]>`).
//! * **No bounce buffer.** On a miss the cache allocates a frame and passes
//!   *that frame* to [`Inode::read_page`], so a block driver can DMA straight
//!   into it. The lock is not held during the fill; frames being filled count
//!   against the capacity ("in flight"). If two readers race on the same page,
//!   the loser's frame is freed.
//! * **LRU** is an intrusive doubly-linked list through a slab (indices, not
//!   pointers), so hit, insert and evict are O(1).
//! * **Pinning.** A pinned page (pin count > 0: in-flight `sendfile`, a
//!   mapping, ...) is taken off the LRU list, so eviction never sees it;
//!   unpinning puts it back as most recently used.
//! * **Capacity** (pages) is set at run time; inserting beyond it evicts the
//!   least recently used unpinned page, and so does a failed frame allocation.
//!   Only when every resident page is pinned does a demand read fail with
//!   `ENOMEM`. [`PageCache::evict`] is the memory-pressure hook.
//! * **Coherence.** Writes go to the file system first, then
//!   [`PageCache::write_through`] patches resident pages;
//!   [`PageCache::truncate`] drops pages past the new end. A generation
//!   counter keeps a fill that raced with a write from inserting stale data.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ops::Range;

use uk_core::copy::{CopyCounters, CopyStats, Stage};

use crate::error::{Result, VfsError};
use crate::inode::{Inode, PAGE_SIZE};
use crate::lru::LruMap;
use crate::readahead::Readahead;
use crate::sync::{Locking, Mutex};

/// Most pages one readahead fill asks [`Inode::read_pages`] for.
pub const READAHEAD_BATCH: u64 = 32;

/// One page of memory that the cache can read and fill.
pub trait Page: Send + 'static {
    /// The page contents.
    fn bytes(&self) -> &[u8; PAGE_SIZE];
    /// The page contents, writable (the fill target).
    fn bytes_mut(&mut self) -> &mut [u8; PAGE_SIZE];
}

impl Page for Box<[u8; PAGE_SIZE]> {
    fn bytes(&self) -> &[u8; PAGE_SIZE] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8; PAGE_SIZE] {
        self
    }
}

/// Source of page frames for the cache.
pub trait PageFrames: Send + 'static {
    /// The page type handed out.
    type Page: Page;
    /// Allocates a frame (contents need not be zeroed), or `None` if memory
    /// is exhausted; the cache then evicts and retries.
    fn alloc(&mut self) -> Option<Self::Page>;
    /// Returns a frame to the allocator.
    fn free(&mut self, page: Self::Page);
}

/// Heap-backed frames (`Box<[u8; 4096]>`) with an optional limit.
#[derive(Debug)]
pub struct HeapFrames {
    max: usize,
    live: usize,
}

impl HeapFrames {
    /// At most `max` frames alive at once.
    pub const fn with_limit(max: usize) -> Self {
        Self { max, live: 0 }
    }

    /// No limit beyond the heap itself.
    pub const fn unlimited() -> Self {
        Self::with_limit(usize::MAX)
    }

    /// Frames currently allocated.
    pub const fn live(&self) -> usize {
        self.live
    }
}

impl PageFrames for HeapFrames {
    type Page = Box<[u8; PAGE_SIZE]>;

    fn alloc(&mut self) -> Option<Self::Page> {
        if self.live >= self.max {
            return None;
        }
        // Fallible, like the kernel's frames: a full heap is `None`.
        let mut v = Vec::new();
        v.try_reserve_exact(PAGE_SIZE).ok()?;
        v.resize(PAGE_SIZE, 0u8);
        let page: Box<[u8; PAGE_SIZE]> = v.into_boxed_slice().try_into().ok()?;
        self.live += 1;
        Some(page)
    }

    fn free(&mut self, page: Self::Page) {
        drop(page);
        self.live -= 1;
    }
}

/// Identity of a file in the cache: device (assigned by [`crate::Vfs`] at
/// mount time) and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

/// Key of one cached page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageKey {
    /// The file.
    pub file: FileId,
    /// Page index within the file (byte offset / 4096).
    pub index: u64,
}

/// Page-cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageCacheStats {
    /// Demand accesses that found the page resident.
    pub hits: u64,
    /// Demand accesses that had to read the page.
    pub misses: u64,
    /// Pages brought in by readahead (not demanded at the time).
    pub pages_read_ahead: u64,
    /// Pages evicted (capacity, allocation failure or [`PageCache::evict`]).
    pub evictions: u64,
    /// Pages resident now.
    pub resident: usize,
    /// Resident pages that are pinned.
    pub pinned: usize,
    /// Capacity in pages.
    pub capacity: usize,
    /// Filled pages served without being cached because the cache's own
    /// bookkeeping could not get memory.
    pub insert_failures: u64,
}

/// A pin on a resident page; release it with [`PageCache::unpin`].
#[must_use = "a pinned page is never evicted until unpinned"]
#[derive(Debug, PartialEq, Eq)]
pub struct PinnedPage {
    key: PageKey,
}

impl PinnedPage {
    /// The pinned page's key.
    pub fn key(&self) -> PageKey {
        self.key
    }
}

/// The most pages one [`PageCache::pin_resident_run`] pins.
pub const PIN_RUN_MAX: usize = 16;

/// Pins on `n` consecutive resident pages of a file, from `first`; release
/// them with [`PageCache::unpin_run`].
#[must_use = "pinned pages are never evicted until unpinned"]
#[derive(Debug, PartialEq, Eq)]
pub struct PinnedRun {
    file: FileId,
    first: u64,
    n: u32,
    /// Where each page's entry sits in the cache's map: the unpin needs no
    /// lookup (a pinned entry stays in its slot; checked anyway).
    slots: [u32; PIN_RUN_MAX],
}

impl PinnedRun {
    /// How many pages the run pins.
    pub fn len(&self) -> usize {
        self.n as usize
    }

    /// Whether the run pins nothing.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

struct Entry<P> {
    page: P,
    pins: u32,
    /// Invalidated while pinned: freed on the last unpin.
    stale: bool,
}

impl<P> Entry<P> {
    /// A freshly filled page: unpinned, current.
    fn filled(page: P) -> Self {
        Entry {
            page,
            pins: 0,
            stale: false,
        }
    }
}

struct Inner<F: PageFrames> {
    frames: F,
    map: LruMap<PageKey, Entry<F::Page>>,
    /// Entries with at least one pin.
    pinned: usize,
    capacity: usize,
    inflight: usize,
    generation: u64,
    stats: PageCacheStats,
}

impl<F: PageFrames> Inner<F> {
    /// Pins the resident page `key` (one more pin; marked used, so that it
    /// gets a second chance at eviction once unpinned) and returns its slot
    /// in the map and the page; `None` if it is not resident. A pinned page
    /// stays on the recency list: eviction detaches it when it reaches it
    /// (see [`Inner::evict_one`]), which costs nothing here.
    fn pin_resident(&mut self, key: &PageKey) -> Option<(u32, &F::Page)> {
        let at = self.map.index_of(key)?;
        self.map.mark_referenced_at(at);
        let e = self.map.value_at_mut(at);
        e.pins += 1;
        if e.pins == 1 {
            self.pinned += 1;
        }
        Some((at, &e.page))
    }

    fn unpin(&mut self, pin: PinnedPage) {
        if let Some(at) = self.map.index_of(&pin.key) {
            self.unpin_at(at);
        }
    }

    /// Drops a pin of the entry in slot `at`. On the last one the page is
    /// freed if it was invalidated meanwhile, or goes back on the recency
    /// list if eviction took it off.
    fn unpin_at(&mut self, at: u32) {
        let e = self.map.value_at_mut(at);
        e.pins -= 1;
        if e.pins == 0 {
            self.pinned -= 1;
            if e.stale {
                let e = self.map.remove_at(at);
                self.frames.free(e.page);
            } else {
                self.map.attach_at(at);
            }
        }
    }

    /// Evicts the least recently used page that is not pinned (a pinned one
    /// met on the way leaves the recency list until its last unpin; one
    /// marked used since it was last looked at gets a second chance).
    fn evict_one(&mut self) -> bool {
        match self.map.pop_lru_where(|e| e.pins > 0) {
            Some((_, e)) => {
                self.frames.free(e.page);
                self.stats.evictions += 1;
                true
            }
            None => false,
        }
    }

    /// Gets a frame for a fill, evicting as needed to respect the capacity.
    fn alloc_frame(&mut self) -> Result<F::Page> {
        loop {
            if self.map.len() + self.inflight >= self.capacity {
                if !self.evict_one() {
                    return Err(VfsError::ENOMEM);
                }
                continue;
            }
            match self.frames.alloc() {
                Some(p) => {
                    self.inflight += 1;
                    return Ok(p);
                }
                None => {
                    if !self.evict_one() {
                        return Err(VfsError::ENOMEM);
                    }
                }
            }
        }
    }

    fn entry(&self, key: &PageKey) -> &Entry<F::Page> {
        self.map.peek(key).expect("page resident")
    }
}

/// The page cache. `L` is the lock family, `F` the frame source.
pub struct PageCache<L: Locking, F: PageFrames> {
    inner: Mutex<L, Inner<F>>,
    /// Bytes [`PageCache::read`] copied out to callers (page cache → app).
    copies: CopyCounters,
}

impl<L: Locking, F: PageFrames> PageCache<L, F> {
    /// A cache of at most `capacity` pages (at least 1) drawing frames from `frames`.
    pub fn new(frames: F, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                frames,
                map: LruMap::new(),
                pinned: 0,
                capacity: capacity.max(1),
                inflight: 0,
                generation: 0,
                stats: PageCacheStats::default(),
            }),
            copies: CopyCounters::new(),
        }
    }

    /// Bytes copied out of the cache by [`PageCache::read`] (page cache →
    /// application), counted by the copy itself.
    pub fn copy_stats(&self) -> CopyStats {
        self.copies.snapshot()
    }

    /// Counters (see [`PageCacheStats`]).
    pub fn stats(&self) -> PageCacheStats {
        self.inner.with(|i| PageCacheStats {
            resident: i.map.len(),
            pinned: i.pinned,
            capacity: i.capacity,
            ..i.stats
        })
    }

    /// Changes the capacity (at least 1 page), evicting down to it if needed.
    /// Returns the number of pages evicted.
    pub fn set_capacity(&self, capacity: usize) -> usize {
        self.inner.with(|i| {
            i.capacity = capacity.max(1);
            let mut n = 0;
            while i.map.len() > i.capacity && i.evict_one() {
                n += 1;
            }
            n
        })
    }

    /// Memory-pressure hook: evicts up to `n` unpinned pages, least recently
    /// used first, and returns how many were freed.
    pub fn evict(&self, n: usize) -> usize {
        self.inner.with(|i| {
            let mut done = 0;
            while done < n && i.evict_one() {
                done += 1;
            }
            done
        })
    }

    /// Whether the page is resident (does not count as an access).
    pub fn contains(&self, key: PageKey) -> bool {
        self.inner.with(|i| i.map.contains(&key))
    }

    /// Access to the frame allocator (for statistics).
    pub fn with_frames<R>(&self, f: impl FnOnce(&F) -> R) -> R {
        self.inner.with(|i| f(&i.frames))
    }

    /// Makes `key` resident (reading it through `inode` on a miss) and runs
    /// `then` under the lock. `then` gets `None` when the page is in the map
    /// under `key`, or `Some(page)` for a freshly read page that is *not*
    /// cached because a write or truncate raced with the fill.
    fn fetch<R>(
        &self,
        key: PageKey,
        inode: &dyn Inode,
        demand: bool,
        then: impl FnOnce(&mut Inner<F>, Option<&F::Page>) -> R,
    ) -> Result<R> {
        let mut then = Some(then);
        let probe = self.inner.with(|i| -> Result<Probe<R, F::Page>> {
            if i.map.get_mut(&key).is_some() {
                if demand {
                    i.stats.hits += 1;
                }
                let f = then.take().expect("called once");
                return Ok(Probe::Hit(f(i, None)));
            }
            if demand {
                i.stats.misses += 1;
            }
            let page = i.alloc_frame()?;
            Ok(Probe::Fill(page, i.generation))
        })?;
        let (mut page, generation) = match probe {
            Probe::Hit(r) => return Ok(r),
            Probe::Fill(page, generation) => (page, generation),
        };
        // No lock held: the fill may block on device I/O.
        let res = inode.read_page(key.index, page.bytes_mut());
        self.inner.with(|i| {
            i.inflight -= 1;
            let n = match res {
                Ok(n) => n.min(PAGE_SIZE),
                Err(e) => {
                    i.frames.free(page);
                    return Err(e);
                }
            };
            page.bytes_mut()[n..].fill(0);
            let f = then.take().expect("called once");
            if i.map.get_mut(&key).is_some() {
                // Another reader won the race.
                i.frames.free(page);
                return Ok(f(i, None));
            }
            if i.generation != generation {
                let r = f(i, Some(&page));
                i.frames.free(page);
                return Ok(r);
            }
            if let Err(entry) = i.map.try_insert(key, Entry::filled(page)) {
                // No memory for the cache's own bookkeeping: serve this read
                // from the filled frame without caching it.
                i.stats.insert_failures += 1;
                let r = f(i, Some(&entry.page));
                i.frames.free(entry.page);
                return Ok(r);
            }
            if !demand {
                i.stats.pages_read_ahead += 1;
            }
            Ok(f(i, None))
        })
    }

    /// Runs `f` on the contents of page `index` of `file`, reading it through
    /// `inode` on a miss. Counts as a demand access (hit or miss).
    pub fn with_page<R>(
        &self,
        file: FileId,
        inode: &dyn Inode,
        index: u64,
        f: impl FnOnce(&[u8; PAGE_SIZE]) -> R,
    ) -> Result<R> {
        let key = PageKey { file, index };
        self.fetch(key, inode, true, |i, fresh| match fresh {
            Some(p) => f(p.bytes()),
            None => f(i.entry(&key).page.bytes()),
        })
    }

    /// Reads pages of `range` that are not resident, as readahead (best
    /// effort: stops at the first error). Pages in `skip` are left to the
    /// caller. Returns the number of pages read. Also usable for
    /// `POSIX_FADV_WILLNEED`.
    ///
    /// Consecutive missing pages (up to [`READAHEAD_BATCH`]) are filled with
    /// one [`Inode::read_pages`] call, without the lock.
    pub fn readahead(
        &self,
        file: FileId,
        inode: &dyn Inode,
        range: Range<u64>,
        skip: Range<u64>,
    ) -> u64 {
        let mut n = 0;
        let mut index = range.start;
        let wanted = |i: &Inner<F>, index: u64| {
            !skip.contains(&index) && !i.map.contains(&PageKey { file, index })
        };
        while index < range.end {
            // The next run of missing pages, found under one lock (a sequential
            // reader asks for a window that is mostly resident already).
            let run = self.inner.with(|i| {
                let start = (index..range.end).find(|&x| wanted(i, x))?;
                let mut end = start + 1;
                while end < range.end && end - start < READAHEAD_BATCH && wanted(i, end) {
                    end += 1;
                }
                Some((start, end))
            });
            let Some((start, end)) = run else {
                break;
            };
            // Readahead is optional: without memory for its bookkeeping it
            // stops, and the demand read goes on page by page.
            let mut pages = Vec::new();
            let mut bufs: Vec<&mut [u8; PAGE_SIZE]> = Vec::new();
            if pages.try_reserve_exact((end - start) as usize).is_err()
                || bufs.try_reserve_exact((end - start) as usize).is_err()
            {
                break;
            }
            let generation = self.inner.with(|i| {
                for _ in start..end {
                    match i.alloc_frame() {
                        Ok(p) => pages.push(p),
                        Err(_) => break,
                    }
                }
                i.generation
            });
            if pages.is_empty() {
                break;
            }
            let count = pages.len();
            // No lock held: the fill may block on device I/O.
            let res = {
                bufs.extend(pages.iter_mut().map(|p| p.bytes_mut()));
                inode.read_pages(start, &mut bufs)
            };
            let ok = self.inner.with(|i| {
                i.inflight -= count;
                let lens = match res {
                    Ok(lens) if lens.len() == count => lens,
                    _ => {
                        for p in pages {
                            i.frames.free(p);
                        }
                        return false;
                    }
                };
                for (k, (mut page, len)) in pages.into_iter().zip(lens).enumerate() {
                    let key = PageKey {
                        file,
                        index: start + k as u64,
                    };
                    page.bytes_mut()[len.min(PAGE_SIZE)..].fill(0);
                    if i.generation != generation || i.map.contains(&key) {
                        i.frames.free(page);
                        continue;
                    }
                    if let Err(entry) = i.map.try_insert(key, Entry::filled(page)) {
                        i.stats.insert_failures += 1;
                        i.frames.free(entry.page);
                        continue;
                    }
                    i.stats.pages_read_ahead += 1;
                    n += 1;
                }
                true
            });
            if !ok {
                break;
            }
            index = start + count as u64;
        }
        n
    }

    /// Reads from `file` at byte `offset` into `buf` through the cache,
    /// driving readahead with the per-open-file state `ra`. Returns the
    /// number of bytes read (0 at or past end of file; short at end of
    /// file, or if an error hits after some bytes were copied).
    pub fn read(
        &self,
        ra: &mut Readahead,
        file: FileId,
        inode: &dyn Inode,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let size = inode.stat()?.size;
        if offset >= size {
            return Ok(0);
        }
        let end = size.min(offset.saturating_add(buf.len() as u64));
        let ps = PAGE_SIZE as u64;
        let first = offset / ps;
        let last = (end - 1) / ps;
        let file_pages = size.div_ceil(ps);
        if let Some(window) = ra.on_access(first, last - first + 1, file_pages) {
            self.readahead(file, inode, window, first..last + 1);
        }
        let mut done = 0usize;
        let mut pos = offset;
        while pos < end {
            let index = pos / ps;
            let in_page = (pos % ps) as usize;
            let n = (PAGE_SIZE - in_page).min((end - pos) as usize);
            let dst = &mut buf[done..done + n];
            let res = self.with_page(file, inode, index, |bytes| {
                self.copies
                    .copy(Stage::CacheToApp, dst, &bytes[in_page..in_page + n]);
            });
            if let Err(e) = res {
                return if done > 0 { Ok(done) } else { Err(e) };
            }
            done += n;
            pos += n as u64;
        }
        Ok(done)
    }

    /// Pins page `index` of `file` (reading it if needed): it will not be
    /// evicted until [`PageCache::unpin`].
    pub fn pin(&self, file: FileId, inode: &dyn Inode, index: u64) -> Result<PinnedPage> {
        self.pin_with(file, inode, index, |_| ())
            .map(|(pin, ())| pin)
    }

    /// As [`PageCache::pin`], and runs `f` on the pinned page under the same
    /// lock (the kernel takes the frame's address here). A resident page
    /// costs one lock and one lookup.
    pub fn pin_with<R>(
        &self,
        file: FileId,
        inode: &dyn Inode,
        index: u64,
        f: impl FnOnce(&F::Page) -> R,
    ) -> Result<(PinnedPage, R)> {
        let key = PageKey { file, index };
        let mut f = Some(f);
        let mut pin = |i: &mut Inner<F>| {
            let (_, page) = i.pin_resident(&key)?;
            Some((f.take().expect("called once"))(page))
        };
        let hit = self.inner.with(|i| {
            let r = pin(i)?;
            i.stats.hits += 1;
            Some(r)
        });
        if let Some(r) = hit {
            return Ok((PinnedPage { key }, r));
        }
        // Retry if a concurrent write kept the fill out of the cache.
        for _ in 0..8 {
            let pinned = self.fetch(key, inode, true, |i, fresh| {
                if fresh.is_some() {
                    return None;
                }
                pin(i)
            })?;
            if let Some(r) = pinned {
                return Ok((PinnedPage { key }, r));
            }
        }
        Err(VfsError::EAGAIN)
    }

    /// Pins the resident pages `index, index + 1, ...` of `file`, at most
    /// `max`, under one lock, stopping at the first page that is not
    /// resident; runs `f` on each (pin and page) and returns how many it
    /// pinned. Use [`PageCache::pin_with`] for a page that must be read.
    /// `f` runs under the cache's lock: it must not allocate (the heap's
    /// memory-pressure hook evicts from this cache) or use the cache.
    pub fn pin_resident(
        &self,
        file: FileId,
        index: u64,
        max: u64,
        mut f: impl FnMut(PinnedPage, &F::Page),
    ) -> u64 {
        self.inner.with(|i| {
            let mut n = 0;
            while n < max {
                let key = PageKey {
                    file,
                    index: index + n,
                };
                let Some((_, page)) = i.pin_resident(&key) else {
                    break;
                };
                f(PinnedPage { key }, page);
                n += 1;
            }
            i.stats.hits += n;
            n
        })
    }

    /// Runs `f` on a pinned page (the kernel can take the frame's physical
    /// address from its own page type here).
    pub fn with_pinned<R>(&self, pin: &PinnedPage, f: impl FnOnce(&F::Page) -> R) -> R {
        self.inner.with(|i| f(&i.entry(&pin.key).page))
    }

    /// Releases a pin; the page becomes evictable (most recently used) when
    /// its last pin goes, or is freed if it was invalidated meanwhile.
    pub fn unpin(&self, pin: PinnedPage) {
        self.inner.with(|i| i.unpin(pin));
    }

    /// Pins the resident pages `index, index + 1, ...` of `file` (at most
    /// `max` and at most [`PIN_RUN_MAX`]) under one lock, as
    /// [`PageCache::pin_resident`] does, as one run; `f` sees each page with
    /// its place in the run. Stops at the first page that is not resident.
    pub fn pin_resident_run(
        &self,
        file: FileId,
        index: u64,
        max: u32,
        mut f: impl FnMut(usize, &F::Page),
    ) -> PinnedRun {
        let mut run = PinnedRun {
            file,
            first: index,
            n: 0,
            slots: [0; PIN_RUN_MAX],
        };
        let max = (max as usize).min(PIN_RUN_MAX);
        self.inner.with(|i| {
            for (k, slot) in run.slots[..max].iter_mut().enumerate() {
                let key = PageKey {
                    file,
                    index: index + k as u64,
                };
                let Some((at, page)) = i.pin_resident(&key) else {
                    break;
                };
                f(k, page);
                *slot = at;
                run.n += 1;
            }
            i.stats.hits += u64::from(run.n);
        });
        run
    }

    /// Releases a run's pins under one lock, as [`PageCache::unpin`] does
    /// each (through the slots the run remembered: no lookup).
    pub fn unpin_run(&self, run: PinnedRun) {
        self.inner.with(|i| {
            for (k, &at) in run.slots[..run.len()].iter().enumerate() {
                let key = PageKey {
                    file: run.file,
                    index: run.first + k as u64,
                };
                if i.map.holds_at(at, &key) {
                    i.unpin_at(at);
                } else {
                    debug_assert!(false, "a pinned page left its slot");
                    i.unpin(PinnedPage { key });
                }
            }
        });
    }

    /// Copies `data`, just written to `file` at `offset` by the file system,
    /// into the resident pages it overlaps (write-through coherence).
    pub fn write_through(&self, file: FileId, offset: u64, data: &[u8]) {
        self.inner.with(|i| {
            i.generation += 1;
            let ps = PAGE_SIZE as u64;
            let mut pos = offset;
            let mut src = data;
            while !src.is_empty() {
                let index = pos / ps;
                let in_page = (pos % ps) as usize;
                let n = src.len().min(PAGE_SIZE - in_page);
                if let Some(e) = i.map.peek_mut(&PageKey { file, index }) {
                    e.page.bytes_mut()[in_page..in_page + n].copy_from_slice(&src[..n]);
                }
                src = &src[n..];
                pos += n as u64;
            }
        });
    }

    /// Adjusts cached pages of `file` to a new size: pages wholly past the
    /// end are dropped (pinned ones zeroed instead), the tail of the last
    /// partial page is zeroed. O(resident pages).
    pub fn truncate(&self, file: FileId, new_size: u64) {
        let ps = PAGE_SIZE as u64;
        let keep = new_size.div_ceil(ps);
        self.inner.with(|i| {
            i.generation += 1;
            let dropped = i.map.extract_if(|k, e| {
                if k.file != file || k.index < keep {
                    return false;
                }
                if e.pins > 0 {
                    e.page.bytes_mut().fill(0);
                    return false;
                }
                true
            });
            for (_, e) in dropped {
                i.frames.free(e.page);
            }
            let tail = (new_size % ps) as usize;
            if tail != 0
                && let Some(e) = i.map.peek_mut(&PageKey {
                    file,
                    index: keep - 1,
                })
            {
                e.page.bytes_mut()[tail..].fill(0);
            }
        });
    }

    /// Drops every cached page of files matching `pred` (pinned pages are
    /// freed on their last unpin). Returns the number of pages dropped now.
    fn invalidate_where(&self, pred: impl Fn(&FileId) -> bool) -> usize {
        self.inner.with(|i| {
            i.generation += 1;
            let dropped = i.map.extract_if(|k, e| {
                if !pred(&k.file) {
                    return false;
                }
                if e.pins > 0 {
                    e.stale = true;
                    return false;
                }
                true
            });
            let n = dropped.len();
            for (_, e) in dropped {
                i.frames.free(e.page);
            }
            n
        })
    }

    /// Drops every cached page of `file`.
    pub fn invalidate_file(&self, file: FileId) -> usize {
        self.invalidate_where(|f| *f == file)
    }

    /// Drops every cached page of device `dev` (on unmount).
    pub fn invalidate_dev(&self, dev: u64) -> usize {
        self.invalidate_where(|f| f.dev == dev)
    }

    /// Resident page keys from least to most recently used (unpinned only).
    #[cfg(test)]
    pub(crate) fn lru_keys(&self) -> Vec<PageKey> {
        self.inner.with(|i| i.map.keys_lru_order())
    }
}

enum Probe<R, P> {
    Hit(R),
    Fill(P, u64),
}
