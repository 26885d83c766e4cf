//! The global allocator: `talc` over arenas that grow through `mmap`, and
//! allocations of [`LARGE_ALLOC`] bytes or more straight from `mmap` (glibc's
//! M_MMAP_THRESHOLD), so that big buffers give their memory back on free.
//!
//! Small blocks (up to [`CACHED_MAX`] bytes, alignment up to 8) go through a
//! per-CPU cache in front of talc: one free list per 16-byte size class,
//! refilled from talc and drained back to it [`BATCH`] blocks at a time (the
//! talc lock taken per block), so the common allocation and free take only
//! the CPU's own cache lock (free on another CPU, it takes that CPU's: the
//! lock makes a thread that moved between reading its CPU index and locking
//! harmless). Out of memory, the allocator drains every CPU's cache back
//! into talc before it reclaims. The caches are kept small on purpose: a
//! cached block is free memory talc cannot coalesce, scattered over arenas
//! that are never given back (with 256-byte classes and 16 blocks a class,
//! the 8M read-path load test fragmented the heap to 6.7 MB of 7 and failed).

use alloc::sync::Arc;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

use talc::base::Talc;
use talc::base::binning::Binning;
use talc::source::Source;
use talc::{DefaultBinning, min_first_heap_size};
use uk_core::stats::MemStats;
use uk_core::vma::{Prot, VmaKind};

use crate::mm::{self, PAGE};
use crate::sync::IrqMutex;

/// Allocations at least this big bypass the heap and use their own mapping.
pub const LARGE_ALLOC: usize = 128 * 1024;
const FIRST_ARENA: u64 = 64 * 1024;
const MAX_ARENA: u64 = 4 * 1024 * 1024;

/// Where talc gets memory: fresh arenas from the mmap window (demand paged),
/// extending the previous arena in place when the new one lands right after it.
#[derive(Debug)]
struct ArenaSource {
    arenas: u64,
    arena_bytes: u64,
    next_size: u64,
    /// End of the last arena as talc knows it, and where its mapping ends.
    last: Option<(NonNull<u8>, u64)>,
}

// SAFETY: `ArenaSource` only holds addresses of arenas owned by the talc
// instance it belongs to; it never touches the global allocator.
unsafe impl Send for ArenaSource {}

// SAFETY: `acquire` only maps memory and hands it to the `talc` it is given;
// it never allocates through the global allocator (mm uses fixed-size tables).
unsafe impl Source for ArenaSource {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        let overhead = min_first_heap_size::<B>() as u64 + 256;
        let need = (layout.size() + layout.align()) as u64 + overhead;
        // No overcommit for the heap: the frames are taken now, so that a
        // later touch of the arena can never fault for want of a frame.
        // Nothing is reclaimed here: this runs under the heap lock, and
        // reclaim may allocate. `KernelAllocator::alloc` reclaims outside
        // the lock and retries.
        let size =
            uk_core::reclaim::arena_size(talc.source.next_size, need, mm::free_bytes(), PAGE)
                .ok_or(())?;
        let base = mm::mmap_kind(size, Prot::READ | Prot::WRITE, VmaKind::Heap).map_err(|_| ())?;
        if mm::populate(base, size).is_err() {
            let _ = mm::munmap(base, size);
            return Err(());
        }
        let end = base + size;
        let src = &mut talc.source;
        src.arenas += 1;
        src.arena_bytes += size;
        src.next_size = (src.next_size * 2).min(MAX_ARENA);
        let last = src.last;
        let new_end = match last {
            // SAFETY: [heap_end, end) is a fresh mapping owned by this heap,
            // right after the arena that `heap_end` ends.
            Some((heap_end, mapped_end)) if mapped_end == base => unsafe {
                talc.extend(heap_end, end as *mut u8)
            },
            // SAFETY: [base, end) is a fresh mapping owned by this heap.
            _ => unsafe { talc.claim(base as *mut u8, size as usize) }.ok_or(())?,
        };
        talc.source.last = Some((new_end, end));
        Ok(())
    }
}

static TALC: IrqMutex<Talc<ArenaSource, DefaultBinning>> = IrqMutex::with_level(
    crate::sync::level::HEAP,
    Talc::new(ArenaSource {
        arenas: 0,
        arena_bytes: 0,
        next_size: FIRST_ARENA,
        last: None,
    }),
);

static LARGE: IrqMutex<(u64, u64)> = IrqMutex::with_level(crate::sync::level::HEAP, (0, 0));

/// The kernel's global allocator.
pub struct KernelAllocator;

#[global_allocator]
static ALLOCATOR: KernelAllocator = KernelAllocator;

fn out_of_memory(layout: Layout) {
    crate::console::emergency(|w| {
        let _ = writeln!(
            w,
            "out of memory: allocation of {} bytes (align {}) failed\nmemstats: {}",
            layout.size(),
            layout.align(),
            mm::stats()
        );
    });
}

/// Largest size the per-CPU caches serve.
const CACHED_MAX: usize = 128;
/// Size-class step; class `k` holds blocks of `(k + 1) * CLASS_STEP` bytes.
const CLASS_STEP: usize = 16;
const CLASSES: usize = CACHED_MAX / CLASS_STEP;
/// Blocks moved between a cache and talc at a time; a class holds at most
/// twice that.
const BATCH: u8 = 4;

/// One CPU's small-block cache: per class, a list linked through the free
/// blocks' first word, and its length.
struct SmallCache {
    heads: [usize; CLASSES],
    counts: [u8; CLASSES],
}

// SAFETY: the lists link free heap blocks that only this cache owns.
unsafe impl Send for SmallCache {}

static CACHES: [IrqMutex<SmallCache>; crate::arch::smp::MAX_CPUS] = [const {
    IrqMutex::with_level(
        crate::sync::level::HEAP_CACHE,
        SmallCache {
            heads: [0; CLASSES],
            counts: [0; CLASSES],
        },
    )
}; crate::arch::smp::MAX_CPUS];

/// The size class serving `layout`, if a cache serves it. The same answer
/// for an allocation and its free (and realloc's two layouts).
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    (layout.size() <= CACHED_MAX && layout.align() <= 8)
        .then(|| layout.size().saturating_sub(1) / CLASS_STEP)
}

/// The talc layout of class `k`'s blocks.
fn class_layout(k: usize) -> Layout {
    // SAFETY: a non-zero multiple of 8 no bigger than CACHED_MAX, align 8.
    unsafe { Layout::from_size_align_unchecked((k + 1) * CLASS_STEP, 8) }
}

impl SmallCache {
    fn pop(&mut self, k: usize) -> Option<*mut u8> {
        let p = self.heads[k];
        if p == 0 {
            return None;
        }
        // SAFETY: `p` is a free block of this list; its first word links
        // the next one.
        self.heads[k] = unsafe { (p as *const usize).read() };
        self.counts[k] -= 1;
        Some(p as *mut u8)
    }

    fn push(&mut self, k: usize, p: *mut u8) {
        // SAFETY: `p` is a free block of class `k` (at least 16 bytes,
        // 8-aligned) that now belongs to this list.
        unsafe { (p as *mut usize).write(self.heads[k]) };
        self.heads[k] = p as usize;
        self.counts[k] += 1;
    }

    /// Gives up to `n` blocks of class `k` back to talc; returns how many.
    fn drain(&mut self, k: usize, n: u8) -> u64 {
        let mut done = 0;
        while done < n as u64
            && let Some(p) = self.pop(k)
        {
            // SAFETY: talc handed this block out with class `k`'s layout.
            unsafe { talc_free(p, class_layout(k)) };
            done += 1;
        }
        done
    }
}

/// The calling CPU's cache.
fn my_cache() -> &'static IrqMutex<SmallCache> {
    &CACHES[crate::arch::smp::this_cpu().index as usize % crate::arch::smp::MAX_CPUS]
}

/// A block of class `k` from this CPU's cache, refilled from talc
/// ([`BATCH`] blocks) when empty; null when talc has none. A busy cache (a
/// drain from another CPU, or this CPU inside it: a stack fault whose
/// reclaim allocates) is bypassed: talc serves the block.
fn alloc_cached(k: usize) -> *mut u8 {
    let Some(mut c) = my_cache().try_lock() else {
        return talc_alloc(class_layout(k));
    };
    if let Some(p) = c.pop(k) {
        return p;
    }
    for _ in 0..BATCH {
        let p = talc_alloc(class_layout(k));
        if p.is_null() {
            break;
        }
        c.push(k, p);
    }
    c.pop(k).unwrap_or(ptr::null_mut())
}

/// Frees a block of class `k` into this CPU's cache, giving [`BATCH`] back
/// to talc when the class is full (or the block itself, when the cache is
/// busy).
fn free_cached(k: usize, p: *mut u8) {
    let Some(mut c) = my_cache().try_lock() else {
        // SAFETY: a block of class `k` comes from talc with its layout.
        return unsafe { talc_free(p, class_layout(k)) };
    };
    c.push(k, p);
    if c.counts[k] > 2 * BATCH {
        c.drain(k, BATCH);
    }
}

/// A block from talc, or null; its lock is held only for the call.
#[inline(never)]
fn talc_alloc(layout: Layout) -> *mut u8 {
    // SAFETY: layout.size() is non-zero (GlobalAlloc's contract; class
    // layouts are not empty).
    unsafe { TALC.lock().allocate(layout) }.map_or(ptr::null_mut(), |p| p.as_ptr())
}

/// Gives a block back to talc.
///
/// # Safety
/// `p` came from [`talc_alloc`] with `layout` and is not used any more.
#[inline(never)]
unsafe fn talc_free(p: *mut u8, layout: Layout) {
    // SAFETY: the caller's contract.
    unsafe { TALC.lock().deallocate(p, layout) }
}

/// Empties every CPU's cache into talc (out of memory); returns the blocks
/// given back. A cache whose lock is busy is left alone.
pub fn drain_caches() -> u64 {
    let mut n = 0;
    for cache in CACHES.iter().take(crate::arch::smp::online() as usize) {
        if let Some(mut c) = cache.try_lock() {
            for k in 0..CLASSES {
                n += c.drain(k, u8::MAX);
            }
        }
    }
    n
}

/// Rounds of "reclaim, then try again" before an allocation fails.
const RECLAIM_ROUNDS: u32 = 4;

/// Allocates a large block: its own mapping, populated now (no overcommit),
/// or null.
fn alloc_large(layout: Layout) -> *mut u8 {
    let size = layout.size() as u64;
    if mm::free_bytes() < size.div_ceil(PAGE) * PAGE {
        return ptr::null_mut();
    }
    let Ok(a) = mm::mmap_aligned(
        size,
        layout.align() as u64,
        Prot::READ | Prot::WRITE,
        VmaKind::Anon,
    ) else {
        return ptr::null_mut();
    };
    if mm::populate(a, size).is_err() {
        let _ = mm::munmap(a, size);
        return ptr::null_mut();
    }
    let mut l = LARGE.lock();
    l.0 += 1;
    l.1 += size;
    a as *mut u8
}

/// Allocates from this CPU's cache or talc, or null. The lock is held only
/// for the call.
fn alloc_small(layout: Layout) -> *mut u8 {
    match class_of(layout) {
        Some(k) => alloc_cached(k),
        None => talc_alloc(layout),
    }
}

/// Frames worth asking the caches for before retrying `layout`: the block
/// and the next arena talc may want for it.
fn reclaim_target(layout: Layout) -> u64 {
    let arena = TALC.try_lock().map_or(MAX_ARENA, |t| t.source.next_size);
    let bytes = if layout.size() >= LARGE_ALLOC {
        layout.size() as u64
    } else {
        arena.max(layout.size() as u64 + layout.align() as u64)
    };
    bytes.div_ceil(PAGE) + 16
}

// SAFETY: small blocks come from talc under a lock; large ones are whole
// mappings of at least `size` bytes aligned to `align`, released only by
// `dealloc` with the same layout.
unsafe impl GlobalAlloc for KernelAllocator {
    /// Out of memory, the allocator asks the page cache for frames back
    /// (`mm::reclaim`) with no heap lock held, and tries again while that
    /// frees something. Reclaim itself may allocate (it runs the page
    /// cache's code); `mm::reclaim` refuses to recurse, so such an
    /// allocation just fails instead of re-entering the heap or reclaim.
    /// Failure returns null: `try_reserve`-style callers get an error,
    /// infallible ones end in the alloc error handler (a panic).
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(p) = take_reserved(layout) {
            return p;
        }
        let large = layout.size() >= LARGE_ALLOC;
        let attempt = || {
            NonNull::new(if large {
                alloc_large(layout)
            } else {
                alloc_small(layout)
            })
        };
        // The caches first: the blocks they hold may be what talc lacks.
        let reclaim = || drain_caches() + mm::reclaim(reclaim_target(layout));
        match uk_core::reclaim::alloc_or_reclaim(RECLAIM_ROUNDS, attempt, reclaim) {
            Ok(p) => p.as_ptr(),
            Err(_) => {
                out_of_memory(layout);
                ptr::null_mut()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= LARGE_ALLOC {
            if mm::munmap(ptr as u64, layout.size() as u64).is_ok() {
                let mut l = LARGE.lock();
                l.0 -= 1;
                l.1 -= layout.size() as u64;
            }
        } else if let Some(k) = class_of(layout) {
            free_cached(k, ptr);
        } else {
            // SAFETY: `ptr` came from this talc with this layout (caller's contract).
            unsafe { talc_free(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_class = class_of(layout);
        if old_class.is_some() || new_size <= CACHED_MAX {
            // A cached block is a whole class block: it stays put within its
            // class. talc must not resize a block in place into or out of
            // the classes (its size would not be the class size).
            if layout.align() <= 8
                && new_size <= CACHED_MAX
                && old_class == Some(new_size.saturating_sub(1) / CLASS_STEP)
            {
                return ptr;
            }
        } else if layout.size() < LARGE_ALLOC && new_size < LARGE_ALLOC {
            // SAFETY: the caller's contract: `ptr` is live with `layout`.
            let grown = unsafe { TALC.lock().try_realloc_in_place(ptr, layout, new_size) };
            if grown {
                return ptr;
            }
        }
        // SAFETY: a valid layout: the caller guarantees new_size rounded to
        // align does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarded GlobalAlloc contract.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least min(old, new) long.
            unsafe { ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: `ptr` is live with `layout`.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

/// Reservations `Arc::new` did not take (its block is not laid out as
/// [`try_arc`] assumes); 0 unless the standard library changed.
static RESERVE_MISSES: AtomicUsize = AtomicUsize::new(0);

/// The block [`try_arc`] set aside on this CPU (address, 0: none; size;
/// alignment), in the CPU's `PerCpu`: only this CPU, with interrupts off,
/// can take it.
fn reservation() -> &'static [AtomicUsize; 3] {
    &crate::arch::smp::this_cpu().reserved
}

/// The reserved block, if one is set aside for exactly `layout`.
fn take_reserved(layout: Layout) -> Option<*mut u8> {
    let r = reservation();
    let at = r[0].load(Ordering::Relaxed);
    if at == 0
        || r[1].load(Ordering::Relaxed) != layout.size()
        || r[2].load(Ordering::Relaxed) != layout.align()
    {
        return None;
    }
    r[0].store(0, Ordering::Relaxed);
    Some(at as *mut u8)
}

/// `Arc::new(value)`, or `value` back when memory is short (stable Rust has
/// no `Arc::try_new`). The block is allocated first, fallibly, with the
/// layout of `Arc`'s `#[repr(C)]` inner struct (two counters, then `T`),
/// and set aside for `Arc::new`'s one allocation, which the allocator
/// serves from it. Interrupts are off in between and the reservation is
/// per CPU, so no other allocation (on this CPU or another) can take it.
pub fn try_arc<T>(value: T) -> Result<Arc<T>, T> {
    let Ok((layout, _)) = Layout::new::<[AtomicUsize; 2]>().extend(Layout::new::<T>()) else {
        return Err(value);
    };
    let layout = layout.pad_to_align();
    let Some(irq_was_enabled) = reserve(layout) else {
        return Err(value);
    };
    let arc = Arc::new(value);
    unreserve(layout, irq_was_enabled);
    Ok(arc)
}

/// Allocates a block of `layout` and sets it aside for the next allocation
/// of that layout, with interrupts off; returns whether they were on, or
/// `None` (nothing changed) when memory is short.
#[inline(never)]
fn reserve(layout: Layout) -> Option<bool> {
    // SAFETY: `layout` has a non-zero size (the two counters).
    let block = unsafe { ALLOCATOR.alloc(layout) };
    if block.is_null() {
        return None;
    }
    let irq_was_enabled = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::disable();
    let r = reservation();
    r[1].store(layout.size(), Ordering::Relaxed);
    r[2].store(layout.align(), Ordering::Relaxed);
    r[0].store(block as usize, Ordering::Relaxed);
    Some(irq_was_enabled)
}

/// Ends a [`reserve`]: interrupts back as they were, the block freed if the
/// allocation it was meant for did not take it.
#[inline(never)]
fn unreserve(layout: Layout, irq_was_enabled: bool) {
    let left = reservation()[0].swap(0, Ordering::Relaxed);
    if irq_was_enabled {
        x86_64::instructions::interrupts::enable();
    }
    if left != 0 {
        RESERVE_MISSES.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `left` is the block `reserve` allocated with `layout`, not
        // handed out (the reservation was still set).
        unsafe { ALLOCATOR.dealloc(left as *mut u8, layout) };
    }
}

/// How many [`try_arc`] reservations `Arc::new` did not use (each then
/// allocated the usual, infallible way).
pub fn reserve_misses() -> usize {
    RESERVE_MISSES.load(Ordering::Relaxed)
}

/// Adds the heap's figures to `s`.
pub fn fill_stats(s: &mut MemStats) {
    if let Some(t) = TALC.try_lock() {
        s.heap_arenas = t.source.arenas;
        s.heap_arena_bytes = t.source.arena_bytes;
        // Blocks in the per-CPU caches count as in use (4.6 KiB a CPU at
        // most).
        s.heap_in_use = t.counters().allocated_bytes as u64;
    }
    if let Some(l) = LARGE.try_lock() {
        s.large_allocs = l.0;
        s.large_alloc_bytes = l.1;
    }
}
