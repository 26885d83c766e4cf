//! DMA memory owned by safe handles.
//!
//! A [`DmaBuffer`] is physically contiguous, identity mapped (its physical
//! address is its address) memory that only its handle reaches: the handle
//! gives out `&[u8]`/`&mut [u8]` by the usual borrow rules, and hands the
//! memory to a device only by moving into a [`crate::virtio::Queue`], which
//! keeps it until the device gives it back. Buffers cut from one allocation
//! ([`DmaBuffer::split`]) cover disjoint ranges. DMA buffers are meant to
//! live as long as their device: dropping one does not give its frames back
//! (leaking is safe, and it keeps the handle a plain address and length
//! without drop glue on the data path); [`DmaBuffer::free`] does, for a whole
//! allocation.

use alloc::vec::Vec;

use crate::mm::{self, PAGE};

/// `len` bytes of DMA memory at physical (= virtual) address `pa`, owned by
/// this handle.
#[derive(Debug)]
pub struct DmaBuffer {
    pa: u64,
    len: u32,
    /// Frames [`DmaBuffer::free`] gives back: the whole allocation, 0 for a
    /// split part.
    pages: u32,
}

impl DmaBuffer {
    /// `pages` zeroed, physically contiguous pages, or `None` when memory is
    /// short.
    pub fn alloc(pages: u64) -> Option<DmaBuffer> {
        // Handles keep lengths in 32 bits: at most 4 GiB - 1 page at once.
        let len = u32::try_from(pages * PAGE).ok()?;
        let pa = mm::alloc_dma(pages).ok()?;
        // SAFETY: fresh frames from the allocator, identity mapped and owned
        // by nobody else yet; zeroing makes every byte initialised before a
        // slice is formed over them.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, len as usize) };
        Some(DmaBuffer {
            pa,
            len,
            pages: pages as u32,
        })
    }

    /// As [`DmaBuffer::alloc`], asking the page cache for memory back when
    /// there is none free (for short-lived buffers on a request's path).
    pub fn alloc_reclaiming(pages: u64) -> Option<DmaBuffer> {
        let len = u32::try_from(pages * PAGE).ok()?;
        let pa = crate::hal::alloc_dma_reclaiming(pages).ok()?;
        // SAFETY: as in `alloc`.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, len as usize) };
        Some(DmaBuffer {
            pa,
            len,
            pages: pages as u32,
        })
    }

    /// Cuts the buffer into buffers of `size` bytes each (a trailing part
    /// shorter than `size` is not handed out). The parts never free their
    /// frames.
    pub fn split(self, size: usize) -> Vec<DmaBuffer> {
        assert!(size > 0, "DMA buffers of zero bytes");
        let whole = self;
        (0..whole.len as usize / size)
            .map(|i| DmaBuffer {
                pa: whole.pa + (i * size) as u64,
                len: size as u32,
                pages: 0,
            })
            .collect()
    }

    /// Gives the frames back (a whole allocation; a split part keeps them).
    pub fn free(self) {
        if self.pages != 0 {
            mm::free_dma(self.pa, u64::from(self.pages));
        }
    }

    /// The buffer's physical address (also its virtual address).
    pub fn phys(&self) -> u64 {
        self.pa
    }

    /// The buffer's length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the buffer has no bytes (never for one from `alloc`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the little-endian 32-bit word at byte offset `off` with a
    /// volatile load: for memory the device writes while the driver polls it
    /// (a completion queue).
    pub fn read_u32_volatile(&self, off: usize) -> u32 {
        assert!(
            off.is_multiple_of(4) && off.checked_add(4).is_some_and(|e| e <= self.len()),
            "DMA word outside its buffer"
        );
        // SAFETY: inside this buffer (checked), aligned, identity mapped; a
        // volatile load of plain data that the device may be writing.
        u32::from_le(unsafe { ((self.pa as usize + off) as *const u32).read_volatile() })
    }

    /// The buffer's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `pa..pa + len` is DMA memory from `alloc` (identity mapped,
        // initialised there) that is freed only by `free`, which consumes the
        // handle of the whole allocation (split parts are never freed); no other
        // handle covers it, and a device sees it only while a queue owns the
        // handle.
        unsafe { core::slice::from_raw_parts(self.pa as *const u8, self.len()) }
    }

    /// The buffer's bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes the access exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.pa as *mut u8, self.len()) }
    }
}
