//! 4-level page tables through the `x86_64` crate's types. All RAM is identity
//! mapped (physical = virtual), so a table's physical address is also where the
//! kernel reads it; the mmap window above it is mapped page by page.

use x86_64::PhysAddr;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{PageTable, PageTableFlags as F, PhysFrame};

/// Flags of an intermediate table entry: permissions are decided at the leaf.
const TABLE_FLAGS: F = F::PRESENT.union(F::WRITABLE);

/// Marks a leaf whose access was removed by `mprotect(PROT_NONE)`: not present,
/// but the frame address is kept so the page comes back with its contents.
pub const PROT_NONE_MARK: F = F::BIT_9;

/// Errors of `map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// No frame for an intermediate table.
    NoFrame,
    /// A huge page already covers the address.
    HugePage,
}

/// Result of looking up a 4 KiB leaf.
pub enum Lookup {
    /// The leaf entry (possibly unused).
    Entry(&'static mut PageTableEntry),
    /// No table at some level; nothing is mapped below `skip_to`.
    Missing { skip_to: u64 },
    /// A huge page maps the address.
    Huge,
}

fn table(phys: u64) -> &'static mut PageTable {
    // SAFETY: page tables live in frames the kernel owns and never frees while
    // the address space exists; RAM is identity mapped, so the physical
    // address is a valid pointer to a PageTable. Callers hold the mm lock (or
    // run at boot before any other code), so there is no aliasing &mut.
    unsafe { &mut *(phys as *mut PageTable) }
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Finds the leaf for `va` at `leaf_level` (1 = 4 KiB, 2 = 2 MiB), creating
/// missing tables with frames from `alloc` (zeroed by this function).
fn walk_create(
    pml4: u64,
    va: u64,
    leaf_level: u32,
    alloc: &mut dyn FnMut() -> Option<u64>,
) -> Result<&'static mut PageTableEntry, MapError> {
    let mut t = table(pml4);
    let mut level = 4;
    while level > leaf_level {
        let e = &mut t[index(va, level)];
        if e.is_unused() {
            let f = alloc().ok_or(MapError::NoFrame)?;
            table(f).zero();
            e.set_addr(PhysAddr::new(f), TABLE_FLAGS);
        } else if e.flags().contains(F::HUGE_PAGE) {
            return Err(MapError::HugePage);
        }
        t = table(e.addr().as_u64());
        level -= 1;
    }
    Ok(&mut t[index(va, leaf_level)])
}

/// Maps the 4 KiB page at `va` to `pa`.
pub fn map_4k(
    pml4: u64,
    va: u64,
    pa: u64,
    flags: F,
    alloc: &mut dyn FnMut() -> Option<u64>,
) -> Result<(), MapError> {
    let e = walk_create(pml4, va, 1, alloc)?;
    e.set_addr(PhysAddr::new(pa), flags);
    Ok(())
}

/// Maps the 2 MiB page at `va` to `pa`.
pub fn map_2m(
    pml4: u64,
    va: u64,
    pa: u64,
    flags: F,
    alloc: &mut dyn FnMut() -> Option<u64>,
) -> Result<(), MapError> {
    let e = walk_create(pml4, va, 2, alloc)?;
    e.set_addr(PhysAddr::new(pa), flags | F::HUGE_PAGE);
    Ok(())
}

/// Looks up the 4 KiB leaf of `va` without creating anything.
pub fn lookup(pml4: u64, va: u64) -> Lookup {
    let mut t = table(pml4);
    for level in (2..=4).rev() {
        let e = &t[index(va, level)];
        if e.is_unused() || !e.flags().contains(F::PRESENT) {
            let span = 1u64 << (12 + 9 * (level - 1));
            return Lookup::Missing {
                skip_to: (va & !(span - 1)).saturating_add(span),
            };
        }
        if e.flags().contains(F::HUGE_PAGE) {
            return Lookup::Huge;
        }
        t = table(e.addr().as_u64());
    }
    Lookup::Entry(&mut t[index(va, 1)])
}

/// Calls `f` with every used 4 KiB leaf entry in [start, end), skipping
/// ranges whose tables are missing and pages under huge mappings.
pub fn for_each_leaf(pml4: u64, start: u64, end: u64, mut f: impl FnMut(u64, &mut PageTableEntry)) {
    let mut va = start;
    while va < end {
        match lookup(pml4, va) {
            Lookup::Missing { skip_to } => {
                va = skip_to.max(va + 4096);
                continue;
            }
            Lookup::Huge => {}
            Lookup::Entry(e) => {
                if !e.is_unused() {
                    f(va, e);
                }
            }
        }
        va += 4096;
    }
}

/// The physical address and flags `va` translates to, if it is present.
pub fn translate(pml4: u64, va: u64) -> Option<(u64, F)> {
    let mut t = table(pml4);
    for level in (1..=4).rev() {
        let e = &t[index(va, level)];
        let flags = e.flags();
        if !flags.contains(F::PRESENT) {
            return None;
        }
        if level == 1 || flags.contains(F::HUGE_PAGE) {
            let span = 1u64 << (12 + 9 * (level - 1));
            return Some((e.addr().as_u64() + (va & (span - 1)), flags));
        }
        t = table(e.addr().as_u64());
    }
    None
}

/// Drops the TLB entry for `va`.
pub fn flush(va: u64) {
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(va));
}

/// The active top-level table.
pub fn active_pml4() -> u64 {
    Cr3::read().0.start_address().as_u64()
}

/// Switches to the address space whose top-level table is at `pml4`.
///
/// # Safety
/// The tables must map the running code, its stack and every static the
/// kernel uses, with permissions that allow that use.
pub unsafe fn activate(pml4: u64) {
    let frame = PhysFrame::containing_address(PhysAddr::new(pml4));
    // SAFETY: guaranteed by the caller.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
}

/// Zeroes a 4 KiB frame through the identity map.
pub fn zero_frame(pa: u64) {
    // SAFETY: `pa` is a RAM frame owned by the caller (just allocated), identity
    // mapped writable, and 4096 bytes long.
    unsafe { core::ptr::write_bytes(pa as *mut u8, 0, 4096) };
}

/// Copies one 4 KiB frame to another through the identity map.
pub fn copy_frame(dst: u64, src: u64) {
    // SAFETY: both are distinct RAM frames, identity mapped; `dst` is owned by
    // the caller and `src` is only read.
    unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, 4096) };
}
