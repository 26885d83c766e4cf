//! Memory management: the physical frame allocator, the kernel's page tables,
//! and anonymous `mmap`/`munmap`/`mprotect` with demand paging.
//!
//! Layout of the single address space:
//! - `0 .. max RAM`: every RAM page identity mapped (RW, NX), except page 0
//!   (unmapped, so null dereferences fault), the kernel image (text RX,
//!   rodata R, data+bss RW NX) and the boot stack's guard page (unmapped);
//! - device MMIO identity mapped uncached on request ([`map_mmio`]);
//! - `[MMAP_BASE, MMAP_END)`: the mmap window, described by VMAs and filled on
//!   demand by the page-fault handler.
//!
//! Demand paging follows Linux: a write fault maps a zeroed frame; a read fault
//! maps the shared zero page read-only and the first write copies it.

use uk_core::frame::{FrameAllocator, MemRegion, RegionKind, find_free_run, max_ram_address};
use uk_core::stats::MemStats;
use uk_core::vma::{Prot, VmError, Vma, VmaKind, VmaSet};
use x86_64::structures::paging::PageTableFlags as F;

use crate::arch::boot::ImageLayout;
use crate::arch::paging::{self, Lookup, PROT_NONE_MARK};
use crate::sync::IrqMutex;

/// Page size.
pub const PAGE: u64 = 4096;
/// Start of the mmap window.
pub const MMAP_BASE: u64 = 0x0000_1000_0000_0000;
/// End of the mmap window.
pub const MMAP_END: u64 = 0x0000_7fff_ffff_f000;
/// Most VMAs the kernel tracks (adjacent compatible areas merge).
pub const MAX_VMAS: usize = 2304;

/// Errors of the memory API, with their errno values.
pub use uk_core::vma::VmError as MemError;

struct Mm {
    frames: FrameAllocator<&'static mut [u64]>,
    pml4: u64,
    vmas: &'static mut VmaSet<MAX_VMAS>,
    zero_page: u64,
    image: ImageLayout,
    page_faults: u64,
    zero_page_maps: u64,
    cow_copies: u64,
    /// Frames taken for page tables after boot (the mmap window's tables).
    pt_frames: u64,
}

static MM: IrqMutex<Option<Mm>> = IrqMutex::with_level(crate::sync::level::MM, None);
/// The VMA table, zero-initialised so it lives in .bss (not in the image);
/// its window is set at boot.
static VMAS: crate::sync::BootCell<VmaSet<MAX_VMAS>> =
    crate::sync::BootCell::new(VmaSet::new(0, 0));
/// The top-level table, readable without the lock (for backtraces in faults).
static PML4: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The RAM regions of the memory map, `[start, end)`, and how many are used.
static RAM: IrqMutex<([(u64, u64); 32], usize)> = IrqMutex::new(([(0, 0); 32], 0));

/// Whether `[phys, phys + len)` overlaps RAM (or the kernel image): device
/// windows ([`crate::mmio::Mmio`]) must not.
pub fn overlaps_ram(phys: u64, len: u64) -> bool {
    let end = phys.saturating_add(len);
    let ram = RAM.lock();
    ram.0[..ram.1].iter().any(|&(s, e)| s < end && phys < e)
}

fn record_ram(map: &[MemRegion], max: u64) {
    let mut guard = RAM.lock();
    let (slots, used) = &mut *guard;
    for r in map {
        if r.kind != RegionKind::Ram {
            continue;
        }
        if *used < slots.len() {
            slots[*used] = (r.start, r.start.saturating_add(r.len));
            *used += 1;
        } else {
            // More regions than slots: count the rest as RAM up to the top.
            slots[*used - 1].1 = max;
        }
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Sets up the frame allocator over the memory map and switches to the
/// kernel's own page tables. Called once at boot, on the boot stack.
pub fn init(map: &[MemRegion], image: ImageLayout) {
    let max = max_ram_address(map);
    let nframes = max / PAGE;
    let words = FrameAllocator::<&mut [u64]>::words_needed(nframes);
    let bytes = align_up(words as u64 * 8, PAGE);
    let avoid = [0..0x10_0000, image.start..image.end];
    let Some(bitmap_at) = find_free_run(map, &avoid, 0x10_0000, bytes) else {
        crate::fatal_early("no RAM for the frame bitmap");
    };
    // SAFETY: `find_free_run` returned RAM outside the image and low memory
    // that nothing else uses; it is identity mapped by the boot tables and is
    // reserved in the allocator below, so this slice is its only user.
    let storage = unsafe { core::slice::from_raw_parts_mut(bitmap_at as *mut u64, words) };
    storage.fill(0);
    let mut frames = FrameAllocator::new(storage, nframes);
    for r in map.iter().filter(|r| r.kind == RegionKind::Ram) {
        frames.add_free(r.start, r.start.saturating_add(r.len));
    }
    record_ram(map, max);
    for r in map.iter().filter(|r| r.kind != RegionKind::Ram) {
        frames.reserve(r.start, r.start.saturating_add(r.len));
    }
    frames.reserve(0, PAGE);
    frames.reserve(image.start, image.end);
    frames.reserve(bitmap_at, bitmap_at + bytes);

    let mut alloc = || frames.alloc();
    let Some(pml4) = alloc() else {
        crate::fatal_early("no frame for the page tables")
    };
    paging::zero_frame(pml4);
    let mut alloc_zeroed = || {
        let f = frames.alloc()?;
        Some(f)
    };
    build_identity_map(pml4, map, &image, &mut alloc_zeroed);
    let Some(zero_page) = frames.alloc() else {
        crate::fatal_early("no frame for the zero page")
    };
    paging::zero_frame(zero_page);
    // SAFETY: the new tables identity map all RAM, including the running code
    // (text RX), the boot stack and all statics (data/bss RW), and the frame
    // bitmap; the only pages left out are page 0 and the boot stack guard.
    unsafe { paging::activate(pml4) };
    PML4.store(pml4, core::sync::atomic::Ordering::Relaxed);
    *MM.lock() = Some(Mm {
        frames,
        pml4,
        vmas: {
            // SAFETY: VMAS is taken exactly once, here at boot, and is only
            // reached through `Mm` afterwards (under the MM lock).
            let vmas = unsafe { &mut *VMAS.get() };
            vmas.set_window(MMAP_BASE, MMAP_END);
            vmas
        },
        zero_page,
        image,
        page_faults: 0,
        zero_page_maps: 0,
        cow_copies: 0,
        pt_frames: 0,
    });
}

fn build_identity_map(
    pml4: u64,
    map: &[MemRegion],
    image: &ImageLayout,
    alloc: &mut dyn FnMut() -> Option<u64>,
) {
    const HUGE: u64 = 2 * 1024 * 1024;
    let ram = F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::GLOBAL;
    // Below `small_end` everything is mapped with 4 KiB pages, so that page 0,
    // the image's sections and the boot stack guard get their own permissions.
    let small_end = align_up(image.end, HUGE);
    let leaf_flags = |pa: u64| -> Option<F> {
        if pa < PAGE || pa == image.boot_stack_guard {
            None
        } else if pa >= image.text.0 && pa < image.text.1 {
            Some(F::PRESENT | F::GLOBAL)
        } else if pa >= image.rodata.0 && pa < image.rodata.1 {
            Some(F::PRESENT | F::GLOBAL | F::NO_EXECUTE)
        } else {
            Some(ram)
        }
    };
    let fail = |_| -> () { crate::fatal_early("out of frames while building the page tables") };
    // The image itself is not in a Ram region of some maps (it is loaded
    // there, though); map it explicitly.
    let mut pa = image.start;
    while pa < image.end {
        if let Some(f) = leaf_flags(pa) {
            paging::map_4k(pml4, pa, pa, f, alloc).unwrap_or_else(fail);
        }
        pa += PAGE;
    }
    for r in map.iter().filter(|r| r.kind == RegionKind::Ram) {
        let start = align_up(r.start, PAGE);
        let end = r.start.saturating_add(r.len) & !(PAGE - 1);
        let mut pa = start;
        while pa < end {
            if pa >= image.start && pa < image.end {
                pa += PAGE;
                continue;
            }
            if pa >= small_end && pa.is_multiple_of(HUGE) && pa + HUGE <= end {
                paging::map_2m(pml4, pa, pa, ram, alloc).unwrap_or_else(fail);
                pa += HUGE;
                continue;
            }
            if let Some(f) = leaf_flags(pa) {
                paging::map_4k(pml4, pa, pa, f, alloc).unwrap_or_else(fail);
            }
            pa += PAGE;
        }
    }
}

/// Identity maps device memory uncached (for MMIO registers).
pub fn map_mmio(phys: u64, len: u64) -> Result<(), MemError> {
    map_identity(
        phys,
        len,
        F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::NO_CACHE | F::WRITE_THROUGH,
    )
}

/// Identity maps firmware memory (ACPI tables) read-only, where it is not
/// already mapped.
pub fn map_firmware(phys: u64, len: u64) -> Result<(), MemError> {
    map_identity(phys, len, F::PRESENT | F::NO_EXECUTE)
}

fn map_identity(phys: u64, len: u64, flags: F) -> Result<(), MemError> {
    if phys < PAGE || phys.checked_add(len).is_none_or(|e| e > MMAP_BASE) {
        return Err(VmError::InvalidArgument);
    }
    let mut g = lock_mm();
    let mm = g.as_mut().ok_or(VmError::NoMemory)?;
    let mut pa = phys & !(PAGE - 1);
    let end = align_up(phys + len, PAGE);
    while pa < end {
        let Mm {
            frames,
            pml4,
            pt_frames,
            ..
        } = mm;
        let mut alloc = || {
            *pt_frames += 1;
            frames.alloc()
        };
        match paging::lookup(*pml4, pa) {
            Lookup::Huge => {}
            Lookup::Entry(e) if !e.is_unused() && !flags.contains(F::WRITABLE) => {}
            _ => {
                paging::map_4k(*pml4, pa, pa, flags, &mut alloc).map_err(|_| VmError::NoMemory)?;
                paging::flush(pa);
            }
        }
        pa += PAGE;
    }
    Ok(())
}

impl Mm {
    fn alloc_zeroed_frame(&mut self) -> Option<u64> {
        let f = self.frames.alloc()?;
        paging::zero_frame(f);
        Some(f)
    }

    fn leaf_flags(prot: Prot) -> F {
        let mut f = F::PRESENT;
        if prot.writable() {
            f |= F::WRITABLE;
        }
        if !prot.executable() {
            f |= F::NO_EXECUTE;
        }
        f
    }

    /// Removes the pages of [start, end) from the page tables, freeing their frames.
    fn unmap_pages(&mut self, start: u64, end: u64) {
        let (zero, frames) = (self.zero_page, &mut self.frames);
        paging::for_each_leaf(self.pml4, start, end, |va, e| {
            let pa = e.addr().as_u64();
            e.set_unused();
            paging::flush(va);
            mark_stale();
            if pa != zero {
                let _ = frames.free(pa);
            }
        });
    }

    /// Applies `prot` to the pages of [start, end) that are already mapped.
    fn reprotect_pages(&mut self, start: u64, end: u64, prot: Prot) {
        let zero = self.zero_page;
        paging::for_each_leaf(self.pml4, start, end, |va, e| {
            let pa = e.addr();
            let flags = if prot == Prot::NONE {
                PROT_NONE_MARK
            } else if pa.as_u64() == zero {
                Self::leaf_flags(prot) & !F::WRITABLE
            } else {
                Self::leaf_flags(prot)
            };
            e.set_addr(pa, flags);
            paging::flush(va);
            mark_stale();
        });
    }

    fn populate(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), VmError> {
        let mut va = start;
        while va < end {
            let f = self.alloc_zeroed_frame().ok_or(VmError::NoMemory)?;
            let Mm {
                frames,
                pml4,
                pt_frames,
                ..
            } = self;
            let mut alloc = || {
                *pt_frames += 1;
                frames.alloc()
            };
            if paging::map_4k(*pml4, va, f, Self::leaf_flags(prot), &mut alloc).is_err() {
                let _ = self.frames.free(f);
                return Err(VmError::NoMemory);
            }
            va += PAGE;
        }
        Ok(())
    }

    fn fault(&mut self, addr: u64, err: u64) -> Result<(), &'static str> {
        self.page_faults += 1;
        let (present, write, fetch) = (err & 1 != 0, err & 2 != 0, err & 16 != 0);
        if err & 8 != 0 {
            return Err("reserved bit set in a page-table entry");
        }
        let Some(vma) = self.vmas.find(addr).copied() else {
            return Err(self.explain_unmapped(addr, write));
        };
        match vma.kind {
            VmaKind::Guard => return Err("stack overflow: the stack ran into its guard page"),
            // File mappings are filled on demand from the page cache, which
            // may have to wait for the disk: that happens in the faulting
            // thread (see `arch::upcall`), not here.
            VmaKind::File { .. } if write => return Err("write to a read-only file mapping"),
            VmaKind::File { .. } if !present => return Err(FILE_PAGE_FAULT),
            VmaKind::File { .. } => return Err("protection fault in a file mapping"),
            _ => {}
        }
        if fetch && !vma.prot.executable() {
            return Err("instruction fetch from non-executable memory");
        }
        if write && !vma.prot.writable() {
            return Err("write to read-only memory");
        }
        if !write && !fetch && !vma.prot.readable() {
            return Err("access to memory mapped with PROT_NONE");
        }
        let page = addr & !(PAGE - 1);
        let flags = Self::leaf_flags(vma.prot);
        let zero = self.zero_page;
        let Mm {
            frames,
            pml4,
            pt_frames,
            ..
        } = self;
        let mut alloc = || {
            *pt_frames += 1;
            frames.alloc()
        };
        let entry = match paging::lookup(*pml4, page) {
            Lookup::Entry(e) => e,
            Lookup::Huge => return Err("fault on a huge page"),
            Lookup::Missing { .. } => {
                // Create the tables with an empty leaf, then look again.
                paging::map_4k(*pml4, page, 0, F::empty(), &mut alloc)
                    .map_err(|_| "out of memory: no frame for a page table")?;
                match paging::lookup(*pml4, page) {
                    Lookup::Entry(e) => e,
                    _ => return Err("page table walk failed"),
                }
            }
        };
        let old = entry.addr().as_u64();
        let old_flags = entry.flags();
        if !old_flags.contains(F::PRESENT) && old_flags.contains(PROT_NONE_MARK) {
            // Access restored by mprotect: bring the page back.
            let f = if old == zero {
                flags & !F::WRITABLE
            } else {
                flags
            };
            entry.set_addr(x86_64::PhysAddr::new(old), f);
        } else if !present || !old_flags.contains(F::PRESENT) {
            if write {
                let f = self
                    .frames
                    .alloc()
                    .ok_or("out of memory: no frame for a page")?;
                paging::zero_frame(f);
                entry.set_addr(x86_64::PhysAddr::new(f), flags);
            } else {
                self.zero_page_maps += 1;
                entry.set_addr(x86_64::PhysAddr::new(zero), flags & !F::WRITABLE);
            }
        } else if write && old == zero {
            // Copy-on-write of the shared zero page.
            let f = self
                .frames
                .alloc()
                .ok_or("out of memory: no frame for a page")?;
            paging::zero_frame(f);
            self.cow_copies += 1;
            entry.set_addr(x86_64::PhysAddr::new(f), flags);
        } else if write && !old_flags.contains(F::WRITABLE) {
            // A private anonymous page that is present but read-only here
            // only happens after mprotect; the VMA allows the write now.
            entry.set_addr(x86_64::PhysAddr::new(old), flags);
        }
        if old_flags.contains(F::PRESENT) {
            // Another CPU may hold the old entry (the zero page, read-only).
            mark_stale();
        }
        paging::flush(page);
        Ok(())
    }

    fn explain_unmapped(&self, addr: u64, write: bool) -> &'static str {
        let img = &self.image;
        if addr < PAGE {
            "null pointer dereference"
        } else if addr >= img.boot_stack_guard && addr < img.boot_stack_guard + PAGE {
            "stack overflow: the boot stack ran into its guard page"
        } else if write && addr >= img.text.0 && addr < img.text.1 {
            "write to read-only kernel text"
        } else if write && addr >= img.rodata.0 && addr < img.rodata.1 {
            "write to read-only kernel data"
        } else {
            "access to unmapped memory"
        }
    }
}

/// The fault is a not-present page of a file mapping: it must be resolved in
/// the faulting thread, which may block on I/O (`fs::resolve_file_fault`).
pub const FILE_PAGE_FAULT: &str = "file page not resident";

/// True when `addr` is mapped writable right now.
pub fn is_writable(addr: u64) -> bool {
    let pml4 = PML4.load(core::sync::atomic::Ordering::Relaxed);
    pml4 != 0 && paging::translate(pml4, addr).is_some_and(|(_, f)| f.contains(F::WRITABLE))
}

/// Resolves a page fault at `addr` with the CPU's error code, or explains why
/// it cannot be resolved.
pub fn handle_page_fault(addr: u64, err: u64) -> Result<(), &'static str> {
    let mut retried = false;
    loop {
        let Some(mut g) = lock_mm_unless_held() else {
            return Err("page fault inside the memory manager");
        };
        let res = match g.as_mut() {
            Some(mm) => mm.fault(addr, err),
            None => Err("page fault before the memory manager was ready"),
        };
        drop(g);
        match res {
            // Out of frames: ask the page cache for some back, once.
            Err(e) if !retried && e.starts_with("out of memory") && reclaim(RECLAIM_BATCH) > 0 => {
                retried = true;
            }
            r => return r,
        }
    }
}

/// Pages asked back from reclaimable caches at a time under memory pressure.
const RECLAIM_BATCH: u64 = 64;

static RECLAIM_HOOK: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Registers the memory-pressure hook: `hook(pages)` frees up to `pages`
/// frames held by a cache (the page cache) and returns how many it freed.
/// It is called without the memory manager's lock, from thread context or
/// the page-fault handler, so it must not block.
pub fn set_reclaim_hook(hook: fn(u64) -> u64) {
    RECLAIM_HOOK.store(hook as usize, core::sync::atomic::Ordering::Release);
}

/// Set while a reclaim runs (Linux's `PF_MEMALLOC`): allocations and page
/// faults made by the reclaim itself must not start another one.
static RECLAIMING: uk_core::reclaim::Reclaimer = uk_core::reclaim::Reclaimer::new();

/// Asks the registered cache to give back up to `pages` frames; returns how
/// many it freed (0 without a hook, or when called from inside a reclaim:
/// the hook's own allocations never recurse into it). Runs with interrupts
/// off, so a reclaim is never preempted halfway and one CPU runs at most one.
/// Callers must not hold the heap's or the memory manager's lock.
///
/// Then (hook or not) every CPU's frame cache goes back to the bitmap,
/// where the caller's retry looks (the frames the hook freed went to this
/// CPU's cache): the answer is the larger of the two counts.
pub fn reclaim(pages: u64) -> u64 {
    let h = RECLAIM_HOOK.load(core::sync::atomic::Ordering::Acquire);
    let freed = if h == 0 {
        0
    } else {
        // SAFETY: only `set_reclaim_hook` stores non-zero values, and it
        // stores `fn(u64) -> u64` pointers.
        let hook: fn(u64) -> u64 = unsafe { core::mem::transmute::<usize, fn(u64) -> u64>(h) };
        x86_64::instructions::interrupts::without_interrupts(|| RECLAIMING.run(pages, hook))
    };
    freed.max(drain_frame_caches())
}

/// True when `addr` lies in a stack guard page.
pub fn is_guard_address(addr: u64) -> bool {
    let Some(g) = MM.try_lock() else { return false };
    let Some(mm) = g.as_ref() else { return false };
    let boot_guard = mm.image.boot_stack_guard;
    (addr >= boot_guard && addr < boot_guard + PAGE)
        || mm.vmas.find(addr).is_some_and(|v| v.kind == VmaKind::Guard)
}

/// True when `len` bytes at `addr` are mapped and readable right now.
/// Reads the page tables without the lock: only for diagnostics.
pub fn is_readable(addr: u64, len: u64) -> bool {
    let pml4 = PML4.load(core::sync::atomic::Ordering::Relaxed);
    let pml4 = if pml4 == 0 {
        paging::active_pml4()
    } else {
        pml4
    };
    let mut va = addr & !(PAGE - 1);
    let end = addr.saturating_add(len);
    if (0x0000_8000_0000_0000..0xffff_8000_0000_0000).contains(&addr) {
        return false;
    }
    while va < end {
        if paging::translate(pml4, va).is_none() {
            return false;
        }
        va += PAGE;
    }
    true
}

/// Stack that a section holding [`MM`] may use below the frame that took the
/// lock. Its deepest path (mapping a page: `populate` → `map_4k` →
/// `walk_create` → the frame allocator) needs a few hundred bytes.
const LOCKED_STACK: u64 = 2 * PAGE;

/// Makes the [`LOCKED_STACK`] bytes below the caller's frame resident.
///
/// Thread stacks are filled on first touch, and a stack page first touched
/// while [`MM`] is held cannot be filled: the fault handler needs the lock
/// ("page fault inside the memory manager"). So every locked section first
/// writes to each stack page it may reach, down to the stack's bottom at
/// most. Nothing to do on the boot stack (mapped in full) or on an IST stack
/// (statically allocated).
fn touch_stack() {
    let Some((bottom, top)) = crate::sched::current_stack() else {
        return;
    };
    // All in one asm block: the stack pointer is read and the pages below it
    // written with no compiler-made stack use in between (a register saved
    // by a prologue placed after a Rust-level read of `rsp` sat exactly
    // where the first write went, and the caller's frame pointer was lost).
    // SAFETY: writes one byte per page to [lowest, rsp), where lowest is
    // max(rsp - LOCKED_STACK, bottom) rounded down to a page, and only when
    // rsp lies in the running thread's own stack (bottom, top]: these pages
    // belong to that stack, not to its guard page, and hold nothing live
    // (the kernel target has no red zone, and an interrupt frame there is
    // gone once its handler returned, which it has whenever this runs).
    unsafe {
        core::arch::asm!(
            "mov {p}, rsp",
            "cmp {p}, {bottom}",
            "jbe 3f",
            "cmp {p}, {top}",
            "ja 3f",
            "mov {lo}, {p}",
            "sub {lo}, {reserve}",
            "cmp {lo}, {bottom}",
            "cmovb {lo}, {bottom}",
            "and {lo}, -4096",
            "dec {p}",
            "and {p}, -4096",
            "2:",
            "cmp {p}, {lo}",
            "jb 3f",
            "mov byte ptr [{p}], 0",
            "sub {p}, 4096",
            "jmp 2b",
            "3:",
            bottom = in(reg) bottom,
            top = in(reg) top,
            reserve = const LOCKED_STACK,
            p = out(reg) _,
            lo = out(reg) _,
        );
    }
}

/// The CPU (index + 1) holding the MM lock, 0 when free.
static MM_OWNER: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
/// Set (under the MM lock) when a present mapping was removed, narrowed or
/// pointed elsewhere: other CPUs may cache it, so the lock's release first
/// makes them flush (`smp::shootdown`, nothing with one CPU).
static STALE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn mark_stale() {
    STALE.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// The MM lock, held.
struct MmGuard(crate::sync::IrqGuard<'static, Option<Mm>>);

impl MmGuard {
    fn new(g: crate::sync::IrqGuard<'static, Option<Mm>>) -> MmGuard {
        let me = crate::arch::smp::this_cpu().index + 1;
        MM_OWNER.store(me, core::sync::atomic::Ordering::Relaxed);
        MmGuard(g)
    }
}

impl core::ops::Deref for MmGuard {
    type Target = Option<Mm>;
    fn deref(&self) -> &Option<Mm> {
        &self.0
    }
}

impl core::ops::DerefMut for MmGuard {
    fn deref_mut(&mut self) -> &mut Option<Mm> {
        &mut self.0
    }
}

impl Drop for MmGuard {
    fn drop(&mut self) {
        use core::sync::atomic::Ordering::Relaxed;
        // Before the lock goes (with it, the frames just freed could be
        // handed out again): no CPU may still reach them through its TLB.
        if STALE.load(Relaxed) {
            shoot_stale();
        }
        MM_OWNER.store(0, Relaxed);
    }
}

#[cold]
#[inline(never)]
fn shoot_stale() {
    STALE.store(false, core::sync::atomic::Ordering::Relaxed);
    crate::arch::smp::shootdown();
}

fn lock_mm() -> MmGuard {
    touch_stack();
    MmGuard::new(MM.lock())
}

/// The MM lock, or `None` when this CPU holds it already (a fault or an
/// allocation from inside the memory manager). Another CPU holding it is
/// waited for.
fn lock_mm_unless_held() -> Option<MmGuard> {
    let me = crate::arch::smp::this_cpu().index + 1;
    loop {
        if let Some(g) = MM.try_lock() {
            return Some(MmGuard::new(g));
        }
        if MM_OWNER.load(core::sync::atomic::Ordering::Relaxed) == me {
            return None;
        }
        crate::arch::smp::service_tlb();
        core::hint::spin_loop();
    }
}

fn with_mm<R>(f: impl FnOnce(&mut Mm) -> Result<R, VmError>) -> Result<R, VmError> {
    let mut g = lock_mm();
    let mm = g.as_mut().ok_or(VmError::NoMemory)?;
    f(mm)
}

/// Maps `len` bytes of anonymous memory (rounded up to pages) anywhere in the
/// mmap window. Pages are filled on first touch.
pub fn mmap(len: u64, prot: Prot) -> Result<u64, MemError> {
    mmap_kind(len, prot, VmaKind::Anon)
}

/// Like [`mmap`] with a VMA kind (heap arenas, stacks).
pub fn mmap_kind(len: u64, prot: Prot, kind: VmaKind) -> Result<u64, MemError> {
    with_mm(|mm| mm.vmas.map(len, prot, kind))
}

/// Maps `len` bytes aligned to `align` (a power of two, at least a page).
pub fn mmap_aligned(len: u64, align: u64, prot: Prot, kind: VmaKind) -> Result<u64, MemError> {
    if align <= PAGE {
        return mmap_kind(len, prot, kind);
    }
    if !align.is_power_of_two() {
        return Err(VmError::InvalidArgument);
    }
    let len = align_up(len, PAGE);
    with_mm(|mm| {
        let total = len.checked_add(align).ok_or(VmError::NoMemory)?;
        let base = mm.vmas.map(total, prot, kind)?;
        let start = align_up(base, align);
        if start > base {
            unmap_vmas(mm.vmas, base, start - base)?;
        }
        let tail = base + total - (start + len);
        if tail > 0 {
            unmap_vmas(mm.vmas, start + len, tail)?;
        }
        Ok(start)
    })
}

/// [`VmaSet::unmap`] with nothing to do for the areas removed, out of line:
/// inlined at its six callers it cost about 3.5 KiB of the image.
#[inline(never)]
fn unmap_vmas(vmas: &mut VmaSet<MAX_VMAS>, start: u64, len: u64) -> Result<(), VmError> {
    vmas.unmap(start, len, |_| {})
}

/// Unmaps [addr, addr+len), freeing the frames behind it. Holes are fine.
pub fn munmap(addr: u64, len: u64) -> Result<(), MemError> {
    with_mm(|mm| {
        let len = align_up(len, PAGE);
        // File mappings map page-cache frames: only `fs::munmap_file` may
        // remove them (freeing those frames here would corrupt the cache).
        let end = addr.saturating_add(len);
        if mm
            .vmas
            .iter()
            .any(|v| v.start < end && addr < v.end && matches!(v.kind, VmaKind::File { .. }))
        {
            return Err(VmError::InvalidArgument);
        }
        unmap_vmas(mm.vmas, addr, len)?;
        mm.unmap_pages(addr, addr + len);
        Ok(())
    })
}

/// Changes the protection of [addr, addr+len), which must be fully mapped.
pub fn mprotect(addr: u64, len: u64, prot: Prot) -> Result<(), MemError> {
    with_mm(|mm| {
        let len = align_up(len, PAGE);
        mm.vmas.protect(addr, len, prot, |_| {})?;
        mm.reprotect_pages(addr, addr + len, prot);
        Ok(())
    })
}

/// A stack of `size` bytes (demand paged) with an unmapped guard page below.
/// Returns (lowest usable address, top).
pub fn map_stack(size: u64) -> Result<(u64, u64), MemError> {
    let size = align_up(size, PAGE);
    with_mm(|mm| {
        let guard = mm.vmas.map(PAGE + size, Prot::NONE, VmaKind::Guard)?;
        unmap_vmas(mm.vmas, guard + PAGE, size)?;
        if let Err(e) =
            mm.vmas
                .map_fixed(guard + PAGE, size, Prot::READ | Prot::WRITE, VmaKind::Stack)
        {
            let _ = unmap_vmas(mm.vmas, guard, PAGE);
            return Err(e);
        }
        Ok((guard + PAGE, guard + PAGE + size))
    })
}

/// Frees a stack from [`map_stack`], guard page included.
pub fn unmap_stack(bottom: u64, top: u64) -> Result<(), MemError> {
    munmap(bottom - PAGE, top - bottom + PAGE)
}

/// Populates [addr, addr+len) now instead of on first touch.
pub fn populate(addr: u64, len: u64) -> Result<(), MemError> {
    with_mm(|mm| {
        let vma: Vma = *mm.vmas.find(addr).ok_or(VmError::NotMapped)?;
        let end = align_up(addr + len, PAGE).min(vma.end);
        mm.populate(addr & !(PAGE - 1), end, vma.prot)
    })
}

/// Free RAM in bytes.
pub fn free_bytes() -> u64 {
    touch_stack();
    let bitmap = lock_mm_unless_held()
        .and_then(|g| g.as_ref().map(|m| m.frames.free_frames()))
        .unwrap_or(0);
    (bitmap + cached_frames()) * PAGE
}

/// A snapshot of the memory statistics. Parts whose lock is busy (a fault
/// inside the allocator) read as zero.
pub fn stats() -> MemStats {
    let mut s = MemStats::default();
    touch_stack();
    if let Some(g) = MM.try_lock()
        && let Some(mm) = g.as_ref()
    {
        s.frames_total = mm.frames.total_frames();
        s.frames_free = mm.frames.free_frames();
        s.frames_used = mm.frames.used_frames();
        s.page_table_frames = mm.pt_frames;
        s.page_faults = mm.page_faults;
        s.zero_page_maps = mm.zero_page_maps;
        s.cow_copies = mm.cow_copies;
        s.vmas = mm.vmas.len() as u64;
        s.mapped_bytes = mm.vmas.mapped_bytes();
    }
    // Frames in the per-CPU caches are free.
    let cached = cached_frames().min(s.frames_used);
    s.frames_free += cached;
    s.frames_used -= cached;
    crate::heap::fill_stats(&mut s);
    s
}

/// Frames a CPU's frame cache holds at most; a refill or a drain moves
/// half of that.
const FRAME_CACHE: usize = 32;

/// One CPU's frame cache: single frames taken from the bitmap in batches,
/// handed out and taken back without the memory manager's lock. Lock order:
/// a frame cache is taken before [`MM`] (a refill or a drain), never after.
struct FrameCache {
    frames: [u64; FRAME_CACHE],
    n: usize,
}

static FRAME_CACHES: [IrqMutex<FrameCache>; crate::arch::smp::MAX_CPUS] = [const {
    IrqMutex::with_level(
        crate::sync::level::FRAME_CACHE,
        FrameCache {
            frames: [0; FRAME_CACHE],
            n: 0,
        },
    )
};
    crate::arch::smp::MAX_CPUS];

fn my_frame_cache() -> &'static IrqMutex<FrameCache> {
    &FRAME_CACHES[crate::arch::smp::this_cpu().index as usize % crate::arch::smp::MAX_CPUS]
}

/// One frame from this CPU's cache, refilled from the bitmap (one MM lock
/// for half a cache) when empty.
fn cached_frame() -> Option<u64> {
    let mut c = my_frame_cache().lock();
    if c.n == 0 {
        let mut g = lock_mm();
        let mm = g.as_mut()?;
        let FrameCache { frames, n } = &mut *c;
        for slot in &mut frames[..FRAME_CACHE / 2] {
            let Some(f) = mm.frames.alloc() else { break };
            *slot = f;
            *n += 1;
        }
        // Handed out from the end: reversed, the batch leaves in the
        // bitmap's (ascending) order, so consecutive allocations (a
        // readahead's pages) get consecutive frames, which `sendfile` sends
        // as one piece (descending, every page was a span of its own: 1.6x
        // the guest instructions per byte).
        frames[..*n].reverse();
    }
    c.n = c.n.checked_sub(1)?;
    c.frames.get(c.n).copied()
}

/// Gives one frame back through this CPU's cache; a full cache first
/// returns half of its frames to the bitmap. A busy cache (a drain from
/// another CPU, or this CPU inside it: a stack fault whose reclaim frees
/// page-cache frames) is bypassed: the frame goes to the bitmap.
fn free_cached_frame(pa: u64) {
    let Some(mut c) = my_frame_cache().try_lock() else {
        to_bitmap(&[pa]);
        return;
    };
    if c.n == FRAME_CACHE {
        c.n = FRAME_CACHE / 2 + to_bitmap(&c.frames[FRAME_CACHE / 2..]);
    }
    let n = c.n;
    if let Some(slot) = c.frames.get_mut(n) {
        *slot = pa;
        c.n += 1;
    }
}

/// Returns every CPU's cached frames to the bitmap (memory pressure, from
/// [`reclaim`]); a cache whose lock is busy is left alone. Returns how many.
fn drain_frame_caches() -> u64 {
    let mut total = 0;
    for cache in FRAME_CACHES
        .iter()
        .take(crate::arch::smp::online() as usize)
    {
        let Some(mut c) = cache.try_lock() else {
            continue;
        };
        let n = c.n;
        c.n = to_bitmap(c.frames.get(..n).unwrap_or(&[]));
        total += (n - c.n) as u64;
    }
    total
}

/// Frees `frames` to the bitmap; returns how many stayed out (all of them
/// before the memory manager exists, else none).
#[inline(never)]
fn to_bitmap(frames: &[u64]) -> usize {
    let mut g = lock_mm();
    let Some(mm) = g.as_mut() else {
        return frames.len();
    };
    for &f in frames {
        let _ = mm.frames.free(f);
    }
    0
}

/// Frames in the per-CPU caches (free, but not in the bitmap); a cache
/// whose lock is busy counts as empty.
fn cached_frames() -> u64 {
    let mut n = 0;
    for c in FRAME_CACHES
        .iter()
        .take(crate::arch::smp::online() as usize)
    {
        if let Some(c) = c.try_lock() {
            n += c.n as u64;
        }
    }
    n
}

/// Allocates `pages` physically contiguous, zeroed frames for DMA. They are
/// identity mapped, so the returned physical address is also their address.
/// A single frame (the page cache's pages, most DMA buffers) comes from
/// this CPU's frame cache.
pub fn alloc_dma(pages: u64) -> Result<u64, MemError> {
    let pa = if pages == 1 {
        cached_frame().ok_or(VmError::NoMemory)?
    } else {
        with_mm(|mm| {
            mm.frames
                .alloc_contiguous(pages, 1)
                .ok_or(VmError::NoMemory)
        })?
    };
    for i in 0..pages {
        paging::zero_frame(pa + i * PAGE);
    }
    Ok(pa)
}

/// Takes a free RAM page below 1 MiB out of the frame allocator for good
/// (the APs' real-mode start page, `arch::smp`), highest first; like all
/// RAM it is identity mapped.
pub fn take_low_page() -> Option<u64> {
    with_mm(|mm| {
        let pa = (1..0x9f)
            .rev()
            .map(|f| f * PAGE)
            .find(|&pa| mm.frames.is_free(pa))
            .ok_or(VmError::NoMemory)?;
        mm.frames.reserve(pa, pa + PAGE);
        Ok(pa)
    })
    .ok()
}

/// Frees frames from [`alloc_dma`].
pub fn free_dma(pa: u64, pages: u64) {
    if pages == 1 {
        return free_cached_frame(pa);
    }
    let _ = with_mm(|mm| {
        mm.frames
            .free_contiguous(pa, pages)
            .map_err(|_| VmError::InvalidArgument)
    });
}

/// The physical address behind virtual address `va`, if it is mapped.
pub fn virt_to_phys(va: u64) -> Option<u64> {
    let pml4 = PML4.load(core::sync::atomic::Ordering::Relaxed);
    paging::translate(pml4, va).map(|(pa, _)| pa)
}

/// Makes every page of [va, va+len) present, and privately writable when
/// `writable` (so a device never writes into the shared zero page).
pub fn prepare_for_dma(va: u64, len: u64, writable: bool) {
    let mut page = va & !(PAGE - 1);
    let end = va.saturating_add(len);
    while page < end {
        let p = page.max(va) as *mut u8;
        // SAFETY: the caller owns [va, va+len) (a buffer it hands to a
        // device); reading a byte and writing the same value back changes
        // nothing but makes the page present and private.
        unsafe {
            let b = p.read_volatile();
            if writable {
                p.write_volatile(b);
            }
        }
        page += PAGE;
    }
}

/// Maps the frames `frames` (physical addresses, identity mapped RAM that
/// the caller keeps alive) at `va`, one page each, inside an existing VMA,
/// with `prot`. Used for file mappings of page-cache frames.
pub fn map_frames(va: u64, frames: &[u64], prot: Prot) -> Result<(), MemError> {
    with_mm(|mm| {
        let flags = Mm::leaf_flags(prot);
        for (i, &pa) in frames.iter().enumerate() {
            let page = va + i as u64 * PAGE;
            if mm.vmas.find(page).is_none() {
                return Err(VmError::NotMapped);
            }
            let Mm {
                frames: fa,
                pml4,
                pt_frames,
                ..
            } = mm;
            let mut alloc = || {
                *pt_frames += 1;
                fa.alloc()
            };
            paging::map_4k(*pml4, page, pa, flags, &mut alloc).map_err(|_| VmError::NoMemory)?;
            paging::flush(page);
        }
        Ok(())
    })
}

/// Clears the page-table entry of the page at `va` (page aligned) and
/// flushes it, keeping the VMA and the frame: the next touch faults again.
/// For file mappings giving a page back to the page cache under pressure.
pub fn unmap_page_keep_vma(va: u64) {
    let _ = with_mm(|mm| {
        paging::for_each_leaf(mm.pml4, va, va + PAGE, |v, e| {
            e.set_unused();
            paging::flush(v);
            mark_stale();
        });
        Ok(())
    });
}

/// Removes [addr, addr+len) (VMAs and page-table entries) *without* freeing
/// the frames behind it: they belong to someone else (the page cache).
pub fn unmap_keep_frames(addr: u64, len: u64) -> Result<(), MemError> {
    with_mm(|mm| {
        let len = align_up(len, PAGE);
        unmap_vmas(mm.vmas, addr, len)?;
        paging::for_each_leaf(mm.pml4, addr, addr + len, |va, e| {
            e.set_unused();
            paging::flush(va);
            mark_stale();
        });
        Ok(())
    })
}

/// One physical frame owned by a cache (the page cache's pages), identity
/// mapped; [`PageFrame::free`] gives it back (dropping it keeps the frame
/// allocated, which is safe).
#[derive(Debug)]
pub struct PageFrame {
    pa: u64,
}

impl PageFrame {
    /// A fresh frame, or `None` when memory is exhausted.
    pub fn alloc() -> Option<PageFrame> {
        let pa = alloc_dma(1).ok()?;
        Some(PageFrame { pa })
    }

    /// The frame's physical (= virtual) address.
    pub fn phys(&self) -> u64 {
        self.pa
    }

    /// Gives the frame back to the allocator.
    pub fn free(self) {
        free_dma(self.pa, 1);
    }
}

impl uk_vfs::Page for PageFrame {
    fn bytes(&self) -> &[u8; PAGE as usize] {
        // SAFETY: `pa` is a frame from `alloc_dma` owned by this value until
        // it is dropped; RAM is identity mapped, so the address is a valid,
        // aligned 4 KiB array. Shared access follows `&self`.
        unsafe { &*(self.pa as *const [u8; PAGE as usize]) }
    }

    fn bytes_mut(&mut self) -> &mut [u8; PAGE as usize] {
        // SAFETY: as above; `&mut self` gives exclusive access to the frame
        // (read-only file mappings of it are only read).
        unsafe { &mut *(self.pa as *mut [u8; PAGE as usize]) }
    }
}
