//! MMIO register windows: the safe way for the crates above the framework to
//! reach device registers.
//!
//! [`Mmio::map`] maps a physical range uncached (identity) after checking that
//! it is not RAM the kernel owns, so volatile accesses through the window
//! cannot alias Rust memory. Accesses are bounds and alignment checked.

use crate::mm::{self, MemError};

/// A mapped window of device registers, `len` bytes from physical `base`.
#[derive(Debug)]
pub struct Mmio {
    base: u64,
    len: u64,
}

impl Mmio {
    /// Maps `len` bytes of device memory at physical address `base`.
    #[inline(never)]
    pub fn map(base: u64, len: u64) -> Result<Mmio, MemError> {
        if len == 0 || base.checked_add(len).is_none() || mm::overlaps_ram(base, len) {
            return Err(MemError::InvalidArgument);
        }
        mm::map_mmio(base, len)?;
        Ok(Mmio { base, len })
    }

    /// Keeps the window for the rest of the VM's life (for interrupt paths
    /// that need it from a `Copy` value).
    pub fn leak(self) -> &'static Mmio {
        alloc::boxed::Box::leak(alloc::boxed::Box::new(self))
    }

    /// The window's physical (and virtual: identity mapped) address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The window's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the window is empty (never: `map` refuses that).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn addr(&self, off: u64, size: u64) -> u64 {
        assert!(
            off.is_multiple_of(size) && off.checked_add(size).is_some_and(|e| e <= self.len),
            "MMIO offset outside its window or misaligned"
        );
        self.base + off
    }

    /// Reads the 16-bit register at `off`.
    #[inline(never)]
    pub fn read16(&self, off: u64) -> u16 {
        let a = self.addr(off, 2);
        // SAFETY: inside this window, aligned, identity mapped uncached by
        // `map`, and device memory (not RAM), so no Rust object lives there.
        unsafe { (a as *const u16).read_volatile() }
    }

    /// Writes the 16-bit register at `off`.
    #[inline(never)]
    pub fn write16(&self, off: u64, v: u16) {
        let a = self.addr(off, 2);
        // SAFETY: as in `read16`.
        unsafe { (a as *mut u16).write_volatile(v) }
    }

    /// Reads the 32-bit register at `off`.
    #[inline(never)]
    pub fn read32(&self, off: u64) -> u32 {
        let a = self.addr(off, 4);
        // SAFETY: as in `read16`.
        unsafe { (a as *const u32).read_volatile() }
    }

    /// Writes the 32-bit register at `off`.
    #[inline(never)]
    pub fn write32(&self, off: u64, v: u32) {
        let a = self.addr(off, 4);
        // SAFETY: as in `read16`.
        unsafe { (a as *mut u32).write_volatile(v) }
    }
}
