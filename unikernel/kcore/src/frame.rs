//! Physical frame allocation and memory-map helpers.
//!
//! [`FrameAllocator`] is a bitmap over 4 KiB frames (bit set = free) covering
//! physical addresses `[0, nframes * FRAME_SIZE)`. It is generic over its
//! storage so the kernel can hand it a `&'static mut [u64]` carved out of RAM
//! while tests use a `Vec<u64>`.
//!
//! Typical boot sequence:
//!
//! 1. size the bitmap with [`max_ram_address`] and [`bitmap_words`];
//! 2. place it with [`find_free_run`] (avoiding the kernel image etc.);
//! 3. [`FrameAllocator::new`] (everything starts used), then
//!    [`FrameAllocator::add_memory_map`] (or [`FrameAllocator::add_free`] per
//!    RAM region) and [`FrameAllocator::reserve`] for the kernel image, the
//!    bitmap itself and anything else in use.

use core::ops::Range;

/// Size of a physical frame in bytes.
pub const FRAME_SIZE: u64 = 4096;

const BITS: u64 = 64;

/// Errors from [`FrameAllocator::free`] and
/// [`FrameAllocator::free_contiguous`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The address (or the end of the range) lies outside the covered range.
    OutOfRange,
    /// The address is not a multiple of [`FRAME_SIZE`].
    Unaligned,
    /// A frame in question is already free.
    DoubleFree,
    /// No (suitable) free frame.
    NoMemory,
}

/// Number of `u64` bitmap words needed to track `nframes` frames.
pub const fn bitmap_words(nframes: u64) -> usize {
    nframes.div_ceil(BITS) as usize
}

/// A bitmap frame allocator over physical addresses `[0, nframes * 4096)`.
///
/// Counters:
/// * [`free_frames`](Self::free_frames): frames whose bit is set;
/// * [`used_frames`](Self::used_frames): frames handed out by
///   [`alloc`](Self::alloc) / [`alloc_contiguous`](Self::alloc_contiguous)
///   and not freed yet;
/// * [`total_frames`](Self::total_frames): `free + used`, i.e. the managed
///   RAM. Reserved frames (never added, or removed by
///   [`reserve`](Self::reserve)) are not counted.
///
/// The bitmap cannot tell an allocated frame from a reserved one, so
/// freeing a reserved frame (or calling [`add_free`](Self::add_free) over an
/// allocated one) is a caller bug that the allocator does not detect; it
/// simply makes the frame free (and `used` saturates at zero).
pub struct FrameAllocator<S: AsRef<[u64]> + AsMut<[u64]>> {
    bits: S,
    nframes: u64,
    free: u64,
    used: u64,
    cursor: usize,
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> FrameAllocator<S> {
    /// Number of `u64` storage words needed for `nframes` frames (same as
    /// [`bitmap_words`]).
    pub const fn words_needed(nframes: u64) -> usize {
        bitmap_words(nframes)
    }

    /// Creates an allocator covering `[0, nframes * FRAME_SIZE)` in which all
    /// frames are used (reserved). Only the first
    /// [`words_needed(nframes)`](Self::words_needed) words of `storage` are
    /// used (and cleared).
    ///
    /// # Panics
    ///
    /// Panics if `storage` holds fewer than `words_needed(nframes)` words.
    /// Nothing else in this type panics.
    pub fn new(mut storage: S, nframes: u64) -> Self {
        let words = Self::words_needed(nframes);
        let slice = storage.as_mut();
        assert!(
            slice.len() >= words,
            "frame bitmap storage too small: {} words, need {}",
            slice.len(),
            words
        );
        slice[..words].fill(0);
        FrameAllocator {
            bits: storage,
            nframes,
            free: 0,
            used: 0,
            cursor: 0,
        }
    }

    /// Number of frames covered (managed or not).
    pub fn covered_frames(&self) -> u64 {
        self.nframes
    }

    /// End of the covered physical range in bytes (saturating).
    pub fn covered_end(&self) -> u64 {
        self.nframes.saturating_mul(FRAME_SIZE)
    }

    /// Marks the whole frames inside `[start, end)` (byte addresses) free:
    /// `start` is rounded up and `end` down to frame boundaries, and the range
    /// is clipped to the covered range. Frames already free stay free
    /// (idempotent).
    pub fn add_free(&mut self, start: u64, end: u64) {
        let s = start.div_ceil(FRAME_SIZE);
        let e = (end / FRAME_SIZE).min(self.nframes);
        if s < e {
            self.free += self.set_range(s, e, true);
        }
    }

    /// Marks every frame touching `[start, end)` (byte addresses) used:
    /// `start` is rounded down and `end` up, clipped to the covered range.
    /// Frames that were free stop being managed: they leave
    /// [`free_frames`](Self::free_frames) and [`total_frames`](Self::total_frames).
    pub fn reserve(&mut self, start: u64, end: u64) {
        let s = start / FRAME_SIZE;
        let e = end.div_ceil(FRAME_SIZE).min(self.nframes);
        if s < e {
            self.free -= self.set_range(s, e, false);
        }
    }

    /// Adds every [`RegionKind::Ram`] region of `map` as free, then reserves
    /// every other region (so that a reserved region overlapping RAM wins,
    /// whatever the order of the entries).
    pub fn add_memory_map(&mut self, map: &[MemRegion]) {
        for r in map.iter().filter(|r| r.kind == RegionKind::Ram) {
            self.add_free(r.start, r.end());
        }
        for r in map.iter().filter(|r| r.kind != RegionKind::Ram) {
            self.reserve(r.start, r.end());
        }
    }

    /// Allocates one frame and returns its physical address. Next-fit over
    /// bitmap words, so O(1) amortized. Returns `None` when no frame is
    /// free. (Frame 0, address 0, is handed out if it was added as free.)
    pub fn alloc(&mut self) -> Option<u64> {
        if self.free == 0 {
            return None;
        }
        let words = Self::words_needed(self.nframes);
        let bits = self.bits.as_mut();
        for i in 0..words {
            let w = (self.cursor + i) % words;
            let word = bits[w];
            if word != 0 {
                let b = word.trailing_zeros();
                bits[w] = word & !(1u64 << b);
                self.cursor = w;
                self.free -= 1;
                self.used += 1;
                return Some((w as u64 * BITS + u64::from(b)) * FRAME_SIZE);
            }
        }
        None
    }

    /// Allocates `count` physically contiguous frames whose first frame
    /// number is a multiple of `align_frames` (a power of two; 0 is taken
    /// as 1). Returns the physical address of the first frame, or `None` if
    /// `count` is 0, `align_frames` is not a power of two, or no suitable
    /// run exists. Lowest-address first fit.
    pub fn alloc_contiguous(&mut self, count: u64, align_frames: u64) -> Option<u64> {
        let align = align_frames.max(1);
        if count == 0 || count > self.free || !align.is_power_of_two() {
            return None;
        }
        let mut s = self.first_free_from(0)?.checked_next_multiple_of(align)?;
        loop {
            let e = s.checked_add(count)?;
            if e > self.nframes {
                return None;
            }
            match self.first_used_in(s, e) {
                None => {
                    self.set_range(s, e, false);
                    self.free -= count;
                    self.used += count;
                    return Some(s * FRAME_SIZE);
                }
                Some(p) => {
                    s = self
                        .first_free_from(p + 1)?
                        .checked_next_multiple_of(align)?;
                }
            }
        }
    }

    /// Frees the frame at `addr`.
    ///
    /// Errors: [`FrameError::Unaligned`] if `addr` is not frame-aligned
    /// (checked first), [`FrameError::OutOfRange`] if it is not covered,
    /// [`FrameError::DoubleFree`] if the frame is already free.
    pub fn free(&mut self, addr: u64) -> Result<(), FrameError> {
        self.free_contiguous(addr, 1)
    }

    /// Frees `count` contiguous frames starting at `addr`, all or nothing:
    /// every frame is checked before any is freed. `count == 0` is a no-op
    /// (after the alignment check). Errors as for [`free`](Self::free).
    pub fn free_contiguous(&mut self, addr: u64, count: u64) -> Result<(), FrameError> {
        if !addr.is_multiple_of(FRAME_SIZE) {
            return Err(FrameError::Unaligned);
        }
        let s = addr / FRAME_SIZE;
        let e = s.checked_add(count).ok_or(FrameError::OutOfRange)?;
        if s >= self.nframes || e > self.nframes {
            return Err(FrameError::OutOfRange);
        }
        if count == 0 {
            return Ok(());
        }
        if self.first_free_in(s, e).is_some() {
            return Err(FrameError::DoubleFree);
        }
        self.set_range(s, e, true);
        self.free += count;
        self.used = self.used.saturating_sub(count);
        Ok(())
    }

    /// Whether the frame containing `addr` is free (`false` outside the
    /// covered range).
    pub fn is_free(&self, addr: u64) -> bool {
        let f = addr / FRAME_SIZE;
        f < self.nframes && self.bit(f)
    }

    /// Frames managed by the allocator: [`free_frames`](Self::free_frames) +
    /// [`used_frames`](Self::used_frames). Reserved frames are not counted.
    pub fn total_frames(&self) -> u64 {
        self.free + self.used
    }

    /// Frames currently free. O(1).
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// Frames handed out by [`alloc`](Self::alloc) /
    /// [`alloc_contiguous`](Self::alloc_contiguous) and not freed yet. O(1).
    pub fn used_frames(&self) -> u64 {
        self.used
    }

    /// Gives the storage back.
    pub fn into_storage(self) -> S {
        self.bits
    }

    fn bit(&self, f: u64) -> bool {
        self.bits.as_ref()[(f / BITS) as usize] & (1u64 << (f % BITS)) != 0
    }

    /// Mask of bits `[lo, hi)` within one word (`lo < hi <= 64`).
    fn mask(lo: u64, hi: u64) -> u64 {
        let n = hi - lo;
        if n == BITS {
            !0
        } else {
            ((1u64 << n) - 1) << lo
        }
    }

    /// Calls `f(word_index, mask)` for each word touched by frames `[s, e)`.
    fn for_words(s: u64, e: u64, mut f: impl FnMut(usize, u64) -> bool) {
        if s >= e {
            return;
        }
        let (first, last) = (s / BITS, (e - 1) / BITS);
        for w in first..=last {
            let lo = if w == first { s % BITS } else { 0 };
            let hi = if w == last { (e - 1) % BITS + 1 } else { BITS };
            if !f(w as usize, Self::mask(lo, hi)) {
                return;
            }
        }
    }

    /// Sets frames `[s, e)` free (`true`) or used; returns how many changed.
    fn set_range(&mut self, s: u64, e: u64, value: bool) -> u64 {
        let bits = self.bits.as_mut();
        let mut changed = 0u64;
        Self::for_words(s, e, |w, m| {
            if value {
                changed += u64::from((m & !bits[w]).count_ones());
                bits[w] |= m;
            } else {
                changed += u64::from((m & bits[w]).count_ones());
                bits[w] &= !m;
            }
            true
        });
        changed
    }

    /// First frame in `[s, e)` whose bit equals `free`.
    fn first_in(&self, s: u64, e: u64, free: bool) -> Option<u64> {
        let bits = self.bits.as_ref();
        let mut found = None;
        Self::for_words(s, e, |w, m| {
            let word = if free { bits[w] } else { !bits[w] };
            let hit = word & m;
            if hit != 0 {
                found = Some(w as u64 * BITS + u64::from(hit.trailing_zeros()));
                false
            } else {
                true
            }
        });
        found
    }

    fn first_used_in(&self, s: u64, e: u64) -> Option<u64> {
        self.first_in(s, e, false)
    }

    fn first_free_in(&self, s: u64, e: u64) -> Option<u64> {
        self.first_in(s, e, true)
    }

    fn first_free_from(&self, s: u64) -> Option<u64> {
        self.first_free_in(s, self.nframes)
    }
}

/// The type of a firmware memory-map region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Usable RAM (e820 type 1).
    Ram,
    /// Reserved (e820 type 2).
    Reserved,
    /// ACPI reclaimable (e820 type 3).
    Acpi,
    /// ACPI non-volatile storage (e820 type 4).
    Nvs,
    /// Bad memory (e820 type 5).
    Unusable,
    /// Any other type code.
    Other(u32),
}

impl RegionKind {
    /// Converts an e820 / PVH memory-map type code.
    pub fn from_e820(t: u32) -> Self {
        match t {
            1 => RegionKind::Ram,
            2 => RegionKind::Reserved,
            3 => RegionKind::Acpi,
            4 => RegionKind::Nvs,
            5 => RegionKind::Unusable,
            other => RegionKind::Other(other),
        }
    }

    /// The e820 type code (inverse of [`from_e820`](Self::from_e820)).
    pub fn to_e820(self) -> u32 {
        match self {
            RegionKind::Ram => 1,
            RegionKind::Reserved => 2,
            RegionKind::Acpi => 3,
            RegionKind::Nvs => 4,
            RegionKind::Unusable => 5,
            RegionKind::Other(t) => t,
        }
    }
}

/// One entry of the firmware memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    /// Physical start address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Region type.
    pub kind: RegionKind,
}

impl MemRegion {
    /// End address (exclusive), saturating at `u64::MAX`.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// End of the highest RAM region (`start + len`, saturating); 0 if there is
/// no non-empty RAM region.
pub fn max_ram_address(map: &[MemRegion]) -> u64 {
    map.iter()
        .filter(|r| r.kind == RegionKind::Ram && r.len > 0)
        .map(MemRegion::end)
        .max()
        .unwrap_or(0)
}

/// First address >= `min` of a Ram-only, page-aligned run of `bytes` that overlaps no range in `avoid` and no non-Ram region; None if none.
///
/// The map may be unsorted and its entries may overlap: a point is usable
/// only if some RAM region covers it and no non-RAM region does (reserved
/// wins). Several adjacent or overlapping RAM entries together form a run.
/// `bytes == 0` gives `None`. Empty regions and ranges are ignored.
pub fn find_free_run(map: &[MemRegion], avoid: &[Range<u64>], min: u64, bytes: u64) -> Option<u64> {
    if bytes == 0 {
        return None;
    }
    let mut cur = min.checked_next_multiple_of(FRAME_SIZE)?;
    loop {
        let end = cur.checked_add(bytes)?;
        // Blockers overlapping [cur, end): the candidate must move past all.
        let blockers = map
            .iter()
            .filter(|r| r.kind != RegionKind::Ram && r.len > 0)
            .map(|r| r.start..r.end())
            .chain(avoid.iter().cloned())
            .filter(|b| b.start < b.end && b.start < end && b.end > cur);
        if let Some(past) = blockers.map(|b| b.end).max() {
            cur = past.checked_next_multiple_of(FRAME_SIZE)?;
            continue;
        }
        // Coverage of [cur, end) by RAM.
        let ram = || {
            map.iter()
                .filter(|r| r.kind == RegionKind::Ram && r.len > 0)
        };
        let mut p = cur;
        while p < end {
            match ram()
                .filter(|r| r.start <= p && p < r.end())
                .map(MemRegion::end)
                .max()
            {
                Some(e) => p = e,
                None => break,
            }
        }
        if p >= end {
            return Some(cur);
        }
        // `p` is not RAM: restart at the next RAM region after it.
        let next = ram().map(|r| r.start).filter(|&s| s > p).min()?;
        cur = next.checked_next_multiple_of(FRAME_SIZE)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const F: u64 = FRAME_SIZE;

    fn alloc_with(nframes: u64) -> FrameAllocator<Vec<u64>> {
        FrameAllocator::new(vec![!0u64; bitmap_words(nframes)], nframes)
    }

    fn ram(start: u64, len: u64) -> MemRegion {
        MemRegion {
            start,
            len,
            kind: RegionKind::Ram,
        }
    }

    fn res(start: u64, len: u64) -> MemRegion {
        MemRegion {
            start,
            len,
            kind: RegionKind::Reserved,
        }
    }

    #[test]
    fn words_needed() {
        assert_eq!(FrameAllocator::<Vec<u64>>::words_needed(0), 0);
        assert_eq!(FrameAllocator::<Vec<u64>>::words_needed(1), 1);
        assert_eq!(FrameAllocator::<Vec<u64>>::words_needed(64), 1);
        assert_eq!(FrameAllocator::<Vec<u64>>::words_needed(65), 2);
        assert_eq!(bitmap_words(1 << 20), 1 << 14);
    }

    #[test]
    fn starts_all_used() {
        let mut a = alloc_with(100);
        assert_eq!(a.free_frames(), 0);
        assert_eq!(a.used_frames(), 0);
        assert_eq!(a.total_frames(), 0);
        assert_eq!(a.alloc(), None);
        assert!(!a.is_free(0));
        assert_eq!(a.covered_frames(), 100);
        assert_eq!(a.covered_end(), 100 * F);
    }

    #[test]
    #[should_panic(expected = "too small")]
    fn storage_too_small_panics() {
        let _ = FrameAllocator::new(vec![0u64; 1], 65);
    }

    #[test]
    fn larger_storage_and_slice_storage_work() {
        let mut storage = [!0u64; 4];
        let mut a = FrameAllocator::new(&mut storage[..], 10);
        a.add_free(0, 100 * F);
        assert_eq!(a.free_frames(), 10);
        assert!(!a.is_free(10 * F));
        let mut seen = Vec::new();
        while let Some(x) = a.alloc() {
            seen.push(x);
        }
        seen.sort();
        assert_eq!(seen, (0..10).map(|i| i * F).collect::<Vec<_>>());
        let _ = a.into_storage();
        assert_eq!(storage[1], !0, "words beyond the bitmap untouched");
    }

    #[test]
    fn zero_frames() {
        let mut a = alloc_with(0);
        a.add_free(0, u64::MAX);
        a.reserve(0, u64::MAX);
        assert_eq!(a.alloc(), None);
        assert_eq!(a.alloc_contiguous(1, 1), None);
        assert_eq!(a.free(0), Err(FrameError::OutOfRange));
        assert!(!a.is_free(0));
    }

    #[test]
    fn add_free_rounds_inward_and_clips() {
        let mut a = alloc_with(16);
        a.add_free(F + 1, 4 * F - 1); // frames 2 only
        assert_eq!(a.free_frames(), 1);
        assert!(a.is_free(2 * F) && a.is_free(3 * F - 1));
        assert!(!a.is_free(F) && !a.is_free(3 * F));
        a.add_free(F + 1, 2 * F); // nothing whole
        a.add_free(5 * F, 5 * F); // empty
        a.add_free(9 * F, 5 * F); // reversed
        assert_eq!(a.free_frames(), 1);
        a.add_free(14 * F, u64::MAX); // clipped
        assert_eq!(a.free_frames(), 3);
        a.add_free(0, u64::MAX); // idempotent over existing
        assert_eq!(a.free_frames(), 16);
        a.add_free(0, u64::MAX);
        assert_eq!(a.free_frames(), 16);
        assert_eq!(a.total_frames(), 16);
        a.add_free(u64::MAX, u64::MAX);
        assert_eq!(a.free_frames(), 16);
    }

    #[test]
    fn reserve_rounds_outward_and_clips() {
        let mut a = alloc_with(16);
        a.add_free(0, 16 * F);
        a.reserve(F + 1, 3 * F + 1); // frames 1,2,3
        assert_eq!(a.free_frames(), 13);
        assert!(a.is_free(0) && !a.is_free(F) && !a.is_free(3 * F) && a.is_free(4 * F));
        a.reserve(F, 2 * F); // already reserved: no change
        assert_eq!(a.free_frames(), 13);
        a.reserve(10 * F, 10 * F); // empty
        a.reserve(12 * F, 11 * F); // reversed
        assert_eq!(a.free_frames(), 13);
        a.reserve(15 * F + 5, u64::MAX);
        assert_eq!(a.free_frames(), 12);
        assert_eq!(a.total_frames(), 12);
        a.reserve(0, u64::MAX);
        assert_eq!(a.free_frames(), 0);
    }

    #[test]
    fn alloc_free_cycle() {
        let mut a = alloc_with(130);
        a.add_free(0, 130 * F);
        let mut got = Vec::new();
        while let Some(x) = a.alloc() {
            assert_eq!(x % F, 0);
            assert!(!a.is_free(x));
            got.push(x);
        }
        assert_eq!(got.len(), 130);
        assert_eq!(a.used_frames(), 130);
        assert_eq!(a.free_frames(), 0);
        assert_eq!(a.total_frames(), 130);
        for &x in &got {
            assert_eq!(a.free(x), Ok(()));
            assert_eq!(a.free(x), Err(FrameError::DoubleFree));
        }
        assert_eq!(a.used_frames(), 0);
        assert_eq!(a.free_frames(), 130);
    }

    /// Memory runs out with a cache holding most frames: the allocation
    /// policy (`reclaim::alloc_or_reclaim`) gets frames back from the cache
    /// and succeeds; with the cache empty it fails as an error and the
    /// allocator is unchanged; freed frames serve the next allocation; no
    /// frame is lost or handed out twice on the way.
    #[test]
    fn exhaustion_reclaim_and_recovery() {
        use crate::reclaim::{Exhausted, alloc_or_reclaim};
        use core::cell::RefCell;
        let a = RefCell::new(alloc_with(256));
        a.borrow_mut().add_free(0, 256 * F);
        // The "page cache" takes every frame, one at a time.
        let cache = RefCell::new(Vec::new());
        while let Some(x) = a.borrow_mut().alloc() {
            cache.borrow_mut().push(x);
        }
        assert_eq!(cache.borrow().len(), 256);
        assert_eq!(a.borrow_mut().alloc(), None);
        assert_eq!(a.borrow_mut().alloc_contiguous(1, 1), None);
        // Reclaim gives back up to 8 frames a round, oldest first.
        let reclaim = || {
            let mut c = cache.borrow_mut();
            let n = c.len().min(8);
            for x in c.drain(..n) {
                a.borrow_mut().free(x).unwrap();
            }
            n as u64
        };
        // 16 contiguous frames: two rounds of reclaim.
        let run = alloc_or_reclaim(4, || a.borrow_mut().alloc_contiguous(16, 1), reclaim);
        assert_eq!(run, Ok(0));
        assert_eq!(a.borrow().free_frames(), 0);
        // Everything else goes to the cache's owner for good: the cache is
        // emptied, and then an allocation fails as an error.
        let mut kept: Vec<u64> = Vec::new();
        let got = alloc_or_reclaim(
            1000,
            || {
                // Takes whatever is free and is never satisfied: drains
                // memory and then the cache.
                while let Some(x) = a.borrow_mut().alloc() {
                    kept.push(x);
                }
                None::<u64>
            },
            reclaim,
        );
        assert_eq!(got.map_err(|e| e.reclaimed), Err(240));
        assert!(cache.borrow().is_empty());
        assert_eq!(a.borrow().free_frames(), 0);
        assert_eq!(a.borrow_mut().alloc(), None, "exhausted, not broken");
        assert_eq!(
            alloc_or_reclaim(4, || a.borrow_mut().alloc(), reclaim),
            Err(Exhausted {
                rounds: 0,
                reclaimed: 0
            })
        );
        // Every frame accounted for exactly once.
        let mut all: Vec<u64> = kept.clone();
        all.extend((0..16).map(|i| i * F));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 256);
        // Recovery: frees make room again, contiguous runs included.
        for &x in &kept[..64] {
            a.borrow_mut().free(x).unwrap();
        }
        a.borrow_mut().free_contiguous(0, 16).unwrap();
        assert_eq!(a.borrow().free_frames(), 80);
        assert!(a.borrow_mut().alloc_contiguous(16, 16).is_some());
        assert!(a.borrow_mut().alloc().is_some());
        assert_eq!(a.borrow().free_frames(), 63);
    }

    #[test]
    fn free_errors() {
        let mut a = alloc_with(64);
        a.add_free(0, 64 * F);
        let x = a.alloc().unwrap();
        assert_eq!(a.free(x + 1), Err(FrameError::Unaligned));
        assert_eq!(a.free(64 * F), Err(FrameError::OutOfRange));
        assert_eq!(a.free(!(F - 1)), Err(FrameError::OutOfRange));
        assert_eq!(a.free(u64::MAX), Err(FrameError::Unaligned));
        assert_eq!(a.free(x + F), Err(FrameError::DoubleFree));
        assert_eq!(a.used_frames(), 1);
        assert_eq!(a.free(x), Ok(()));
    }

    #[test]
    fn next_fit_cursor_moves_on() {
        let mut a = alloc_with(256);
        a.add_free(0, 256 * F);
        let first = a.alloc().unwrap();
        assert_eq!(first, 0);
        // Exhaust word 0, then free a frame in it: next-fit continues in
        // word 1 instead of going back.
        for _ in 1..64 {
            a.alloc().unwrap();
        }
        let x = a.alloc().unwrap();
        assert_eq!(x, 64 * F);
        a.free(5 * F).unwrap();
        assert_eq!(a.alloc().unwrap(), 65 * F);
        // Wrap-around finds the freed one when the rest is gone.
        while a.free_frames() > 1 {
            a.alloc().unwrap();
        }
        assert_eq!(a.alloc(), Some(5 * F));
        assert_eq!(a.alloc(), None);
    }

    #[test]
    fn contiguous_alloc_alignment_and_gaps() {
        let mut a = alloc_with(300);
        a.add_free(0, 300 * F);
        a.reserve(0, F); // frame 0 used
        let x = a.alloc_contiguous(4, 4).unwrap();
        assert_eq!(x, 4 * F);
        for i in 0..4 {
            assert!(!a.is_free(x + i * F));
        }
        assert_eq!(a.used_frames(), 4);
        let y = a.alloc_contiguous(3, 1).unwrap();
        assert_eq!(y, F);
        let z = a.alloc_contiguous(100, 64).unwrap();
        assert_eq!(z, 64 * F);
        let big = a.alloc_contiguous(70, 0).unwrap(); // 0 means 1
        // Frames 8..64 are too few (56), so first fit is right after z.
        assert_eq!(big, 164 * F);
        assert_eq!(a.alloc_contiguous(56, 8), Some(8 * F));
        assert_eq!(a.used_frames(), 4 + 3 + 100 + 70 + 56);
        assert_eq!(a.alloc_contiguous(67, 1), None);
        assert_eq!(a.alloc_contiguous(66, 2), Some(234 * F));
        assert_eq!(a.free_frames(), 0);
    }

    #[test]
    fn contiguous_alloc_errors() {
        let mut a = alloc_with(128);
        a.add_free(0, 128 * F);
        assert_eq!(a.alloc_contiguous(0, 1), None);
        assert_eq!(a.alloc_contiguous(1, 3), None);
        assert_eq!(a.alloc_contiguous(129, 1), None);
        assert_eq!(a.alloc_contiguous(u64::MAX, 1), None);
        assert_eq!(a.alloc_contiguous(1, 1 << 63), Some(0));
        assert_eq!(a.alloc_contiguous(1, 1 << 63), None);
        assert_eq!(a.alloc_contiguous(128, 1), None);
        assert_eq!(a.alloc_contiguous(127, 1), Some(F));
        assert_eq!(a.free_frames(), 0);
        assert_eq!(a.used_frames(), 128);
    }

    #[test]
    fn free_contiguous_all_or_nothing() {
        let mut a = alloc_with(64);
        a.add_free(0, 64 * F);
        let x = a.alloc_contiguous(8, 8).unwrap();
        assert_eq!(x, 0);
        assert_eq!(a.free_contiguous(x, 9), Err(FrameError::DoubleFree));
        assert_eq!(a.free_contiguous(x + 1, 2), Err(FrameError::Unaligned));
        assert_eq!(a.free_contiguous(x, u64::MAX), Err(FrameError::OutOfRange));
        assert_eq!(a.free_contiguous(60 * F, 5), Err(FrameError::OutOfRange));
        assert_eq!(a.free_contiguous(64 * F, 0), Err(FrameError::OutOfRange));
        assert_eq!(a.used_frames(), 8);
        for i in 0..8 {
            assert!(!a.is_free(x + i * F), "nothing freed on error");
        }
        assert_eq!(a.free_contiguous(x, 0), Ok(()));
        a.free(x + 3 * F).unwrap();
        assert_eq!(a.free_contiguous(x, 8), Err(FrameError::DoubleFree));
        assert_eq!(a.free_frames(), 57);
        assert_eq!(a.free_contiguous(x, 3), Ok(()));
        assert_eq!(a.free_contiguous(x + 4 * F, 4), Ok(()));
        assert_eq!(a.free_frames(), 64);
        assert_eq!(a.used_frames(), 0);
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Random operations against a `Vec<State>` model.
    #[test]
    fn randomized_against_model() {
        #[derive(Clone, Copy, PartialEq, Debug)]
        enum St {
            Reserved,
            Free,
            Used,
        }
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for nframes in [1u64, 63, 64, 65, 200] {
            let mut a = alloc_with(nframes);
            let mut m = vec![St::Reserved; nframes as usize];
            let span = (nframes + 4) * F;
            for _ in 0..3000 {
                match rng.below(8) {
                    0 => {
                        let s = rng.below(span);
                        let e = rng.below(span);
                        // add_free over allocated frames is a caller bug.
                        if (s.div_ceil(F)..(e / F).min(nframes)).any(|f| m[f as usize] == St::Used)
                        {
                            continue;
                        }
                        a.add_free(s, e);
                        for f in s.div_ceil(F)..(e / F).min(nframes) {
                            if m[f as usize] == St::Reserved {
                                m[f as usize] = St::Free;
                            }
                        }
                    }
                    1 => {
                        let s = rng.below(span);
                        let e = s + rng.below(8 * F);
                        a.reserve(s, e);
                        for f in s / F..e.div_ceil(F).min(nframes) {
                            if m[f as usize] == St::Free {
                                m[f as usize] = St::Reserved;
                            }
                        }
                    }
                    2 | 3 => match a.alloc() {
                        Some(x) => {
                            assert_eq!(m[(x / F) as usize], St::Free);
                            m[(x / F) as usize] = St::Used;
                        }
                        None => assert!(!m.contains(&St::Free)),
                    },
                    4 => {
                        let count = rng.below(6);
                        let align = 1u64 << rng.below(4);
                        let want = (0..nframes).step_by(align as usize).find(|&s| {
                            count > 0
                                && s + count <= nframes
                                && (s..s + count).all(|f| m[f as usize] == St::Free)
                        });
                        let got = a.alloc_contiguous(count, align);
                        assert_eq!(got, want.map(|s| s * F));
                        if let Some(s) = want {
                            for f in s..s + count {
                                m[f as usize] = St::Used;
                            }
                        }
                    }
                    5 | 6 => {
                        let addr = if rng.below(10) == 0 {
                            rng.below(span)
                        } else {
                            rng.below(nframes + 2) * F
                        };
                        let count = rng.below(4);
                        let s = addr / F;
                        let want = if !addr.is_multiple_of(F) {
                            Err(FrameError::Unaligned)
                        } else if s >= nframes || s + count > nframes {
                            Err(FrameError::OutOfRange)
                        } else if (s..s + count).any(|f| m[f as usize] == St::Free) {
                            Err(FrameError::DoubleFree)
                        } else {
                            Ok(())
                        };
                        // Only free frames we allocated, to keep counters exact.
                        let ours =
                            (s..(s + count).min(nframes)).all(|f| m[f as usize] != St::Reserved);
                        if want.is_ok() && !ours {
                            continue;
                        }
                        assert_eq!(a.free_contiguous(addr, count), want);
                        if want.is_ok() {
                            for f in s..s + count {
                                m[f as usize] = St::Free;
                            }
                        }
                    }
                    _ => {
                        let addr = rng.below(span);
                        let f = addr / F;
                        assert_eq!(a.is_free(addr), f < nframes && m[f as usize] == St::Free);
                    }
                }
                let free = m.iter().filter(|&&s| s == St::Free).count() as u64;
                let used = m.iter().filter(|&&s| s == St::Used).count() as u64;
                assert_eq!(a.free_frames(), free);
                assert_eq!(a.used_frames(), used);
                assert_eq!(a.total_frames(), free + used);
            }
        }
    }

    #[test]
    fn region_kinds() {
        assert_eq!(RegionKind::from_e820(1), RegionKind::Ram);
        assert_eq!(RegionKind::from_e820(2), RegionKind::Reserved);
        assert_eq!(RegionKind::from_e820(3), RegionKind::Acpi);
        assert_eq!(RegionKind::from_e820(4), RegionKind::Nvs);
        assert_eq!(RegionKind::from_e820(5), RegionKind::Unusable);
        assert_eq!(RegionKind::from_e820(0), RegionKind::Other(0));
        assert_eq!(RegionKind::from_e820(12), RegionKind::Other(12));
        for t in 0..20 {
            assert_eq!(RegionKind::from_e820(t).to_e820(), t);
        }
    }

    #[test]
    fn max_ram() {
        assert_eq!(max_ram_address(&[]), 0);
        assert_eq!(max_ram_address(&[res(0, 1 << 40)]), 0);
        let map = [
            ram(0x10_0000, 0x100_0000),
            res(0xfee0_0000, 0x1000),
            ram(0, 0x9_f000),
            ram(1 << 40, 0), // empty ignored
        ];
        assert_eq!(max_ram_address(&map), 0x110_0000);
        assert_eq!(max_ram_address(&[ram(u64::MAX - 5, 100)]), u64::MAX);
    }

    #[test]
    fn add_memory_map_reserved_wins() {
        let map = [
            res(0x3000, 0x1800),           // frames 3,4 (rounded out)
            ram(0, 0x10000),               // frames 0..16
            ram(0x1_0000 + 0x800, 0x2000), // frame 17 only
            MemRegion {
                start: 0x8000,
                len: 1,
                kind: RegionKind::Acpi,
            },
        ];
        let mut a = alloc_with(32);
        a.add_memory_map(&map);
        let free: Vec<u64> = (0..32).filter(|&f| a.is_free(f * F)).collect();
        assert_eq!(free, vec![0, 1, 2, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 17]);
        assert_eq!(a.free_frames(), 14);
    }

    #[test]
    fn free_run_basic() {
        let map = [ram(0, 0x9_f000), ram(0x10_0000, 0x10_0000)];
        assert_eq!(find_free_run(&map, &[], 0, 0x1000), Some(0));
        assert_eq!(find_free_run(&map, &[], 1, 0x1000), Some(0x1000));
        assert_eq!(find_free_run(&map, &[], 0, 0x9_f000), Some(0));
        assert_eq!(find_free_run(&map, &[], 0, 0xa_0000), Some(0x10_0000));
        assert_eq!(find_free_run(&map, &[], 0, 0x10_0000), Some(0x10_0000));
        assert_eq!(find_free_run(&map, &[], 0, 0x10_0001), None);
        assert_eq!(find_free_run(&map, &[], 0x10_0001, 0x1000), Some(0x10_1000));
        assert_eq!(find_free_run(&map, &[], 0x20_0000, 1), None);
        assert_eq!(find_free_run(&map, &[], 0, 0), None);
        assert_eq!(find_free_run(&[], &[], 0, 1), None);
        // Unaligned byte counts still need the whole span.
        assert_eq!(find_free_run(&map, &[], 0x9_e000, 0x1001), Some(0x10_0000));
    }

    #[test]
    fn free_run_avoid_and_reserved() {
        let map = [
            ram(0x10_0000, 0x100_0000),
            res(0x20_0000, 0x1000),
            ram(0, 0x9_f000),
        ];
        let kernel = [0x10_0000..0x18_0000, 0x50_0000..0x50_0001, 5..5];
        assert_eq!(
            find_free_run(&map, &kernel, 0x10_0000, 0x1000),
            Some(0x18_0000)
        );
        assert_eq!(
            find_free_run(&map, &kernel, 0x10_0000, 0x8_0000),
            Some(0x18_0000)
        );
        assert_eq!(
            find_free_run(&map, &kernel, 0x10_0000, 0x8_0001),
            Some(0x20_1000)
        );
        assert_eq!(
            find_free_run(&map, &kernel, 0x10_0000, 0x30_0000),
            Some(0x50_1000)
        );
        assert_eq!(
            find_free_run(&map, &kernel, 0x20_0000, 0x1000),
            Some(0x20_1000)
        );
        // Low memory is fine.
        assert_eq!(find_free_run(&map, &kernel, 0, 0x1000), Some(0));
    }

    #[test]
    fn free_run_overlapping_and_unsorted() {
        // Overlapping RAM entries join up; a reserved hole inside splits.
        let map = [
            ram(0x5000, 0x5000),
            ram(0x1000, 0x6000),
            res(0x9800, 0x10),
            ram(0x9000, 0x4000),
        ];
        assert_eq!(find_free_run(&map, &[], 0, 0x8000), Some(0x1000));
        assert_eq!(find_free_run(&map, &[], 0, 0x9000), None);
        assert_eq!(find_free_run(&map, &[], 0x2000, 0x3000), Some(0x2000));
        assert_eq!(find_free_run(&map, &[], 0x7000, 0x3000), Some(0xa000));
        // Reserved covering everything wins.
        let map = [ram(0, 1 << 30), res(0, 1 << 30)];
        assert_eq!(find_free_run(&map, &[], 0, 0x1000), None);
    }

    #[test]
    fn free_run_near_top_of_address_space() {
        let top = !0xfff;
        let map = [ram(top - 0x2000, 0x3000)];
        assert_eq!(find_free_run(&map, &[], 0, 0x2000), Some(top - 0x2000));
        assert_eq!(find_free_run(&map, &[], 0, 0x3000), None);
        assert_eq!(find_free_run(&map, &[], u64::MAX, 1), None);
        let map = [ram(0, u64::MAX)];
        assert_eq!(
            find_free_run(&map, core::slice::from_ref(&(0..u64::MAX)), 0, 1),
            None
        );
        assert_eq!(
            find_free_run(&map, core::slice::from_ref(&(0..top)), 0, 0x1000),
            None
        );
    }

    #[test]
    fn free_run_randomized_against_brute_force() {
        let mut rng = XorShift(42);
        for _ in 0..500 {
            let mut map = Vec::new();
            for _ in 0..rng.below(6) {
                let kind = if rng.below(3) == 0 {
                    RegionKind::from_e820(2 + rng.below(5) as u32)
                } else {
                    RegionKind::Ram
                };
                map.push(MemRegion {
                    start: rng.below(64) * 0x800,
                    len: rng.below(24) * 0x800,
                    kind,
                });
            }
            let avoid: Vec<Range<u64>> = (0..rng.below(3))
                .map(|_| {
                    let s = rng.below(0x20000);
                    s..s + rng.below(0x4000)
                })
                .collect();
            let min = rng.below(0x10000);
            let bytes = rng.below(0x6000);
            let usable = |a: u64| {
                map.iter()
                    .any(|r| r.kind == RegionKind::Ram && r.start <= a && a < r.end())
                    && !map
                        .iter()
                        .any(|r| r.kind != RegionKind::Ram && r.start <= a && a < r.end())
                    && !avoid.iter().any(|r| r.contains(&a))
            };
            // Brute force at 0x800 granularity (all boundaries are multiples
            // of 0x800 except avoid ranges, checked at byte level below).
            let want = if bytes == 0 {
                None
            } else {
                (min.div_ceil(F)..0x40).map(|p| p * F).find(|&s| {
                    (s..s + bytes).step_by(0x100).all(usable)
                        && usable(s + bytes - 1)
                        && !avoid
                            .iter()
                            .any(|r| r.start < r.end && r.start < s + bytes && r.end > s)
                })
            };
            assert_eq!(
                find_free_run(&map, &avoid, min, bytes),
                want,
                "{map:?} {avoid:?} {min:#x} {bytes:#x}"
            );
        }
    }
}
