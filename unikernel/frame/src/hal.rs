//! The `virtio-drivers` HAL: DMA memory from the kernel's frame allocator
//! (identity mapped, so physical = virtual; none left is `DmaError` for the
//! queue being set up), MMIO through the identity map, and buffer sharing
//! that hands the device the buffer's own frames when they are physically
//! contiguous (page-cache frames, statics) and a bounce buffer otherwise
//! (heap buffers in the mmap window may span scattered frames; the kernel's
//! queues bounce those themselves, fallibly, before posting: see
//! `virtio::lend`).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::mm::{self, PAGE};

/// The kernel's [`Hal`].
pub struct KernelHal;

/// Bytes that went through bounce buffers (copied by the CPU for DMA).
pub static BOUNCED_BYTES: AtomicU64 = AtomicU64::new(0);

pub(crate) fn pages_for(len: usize) -> u64 {
    (len as u64).div_ceil(PAGE).max(1)
}

/// Whether `[va, va+len)` lies below the mmap window, where memory is
/// identity mapped (RAM, the kernel image, MMIO): its physical address is
/// `va`, with no page-table walk (page-cache frames, DMA and transmit
/// buffers live there; a walk per descriptor and completion cost about 200
/// instructions per page sent).
pub fn is_identity(va: u64, len: u64) -> bool {
    va >= PAGE && va.checked_add(len).is_some_and(|end| end <= mm::MMAP_BASE)
}

/// The physical address of `[va, va+len)` if it is backed by one contiguous
/// run of frames.
pub(crate) fn contiguous_phys(va: u64, len: u64) -> Option<u64> {
    if is_identity(va, len) {
        return Some(va);
    }
    let pa0 = mm::virt_to_phys(va)?;
    let mut page = (va & !(PAGE - 1)) + PAGE;
    while page < va + len {
        if mm::virt_to_phys(page)? != pa0 + (page - va) {
            return None;
        }
        page += PAGE;
    }
    Some(pa0)
}

/// DMA frames, asking the page cache for memory back when there are none
/// free.
pub(crate) fn alloc_dma_reclaiming(pages: u64) -> Result<u64, mm::MemError> {
    for _ in 0..4 {
        match mm::alloc_dma(pages) {
            Ok(pa) => return Ok(pa),
            Err(_) if mm::reclaim(pages + 64) > 0 => {}
            Err(e) => return Err(e),
        }
    }
    mm::alloc_dma(pages)
}

// SAFETY: dma_alloc returns zeroed, page-aligned, identity-mapped frames owned
// by the caller until dma_dealloc; mmio_phys_to_virt maps the region uncached
// and returns its identity address; share returns the physical address of
// memory that holds the buffer's contents (the buffer itself or a bounce copy)
// for as long as the sharing lasts.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _dir: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // virtio-drivers' `Dma::new` takes physical address 0 as failure
        // (`Error::DmaError`, which queue setup returns); frame 0 is never
        // allocated, so 0 cannot be a real answer.
        match alloc_dma_reclaiming(pages as u64) {
            Ok(pa) => match NonNull::new(pa as *mut u8) {
                Some(va) => (pa, va),
                None => (0, NonNull::dangling()),
            },
            Err(_) => {
                log::error!("virtio: no memory for {pages} DMA pages");
                (0, NonNull::dangling())
            }
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        mm::free_dma(paddr, pages as u64);
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        mm::map_mmio(paddr, size as u64).expect("map device MMIO");
        NonNull::new(paddr as *mut u8).expect("MMIO at address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let va = buffer.as_ptr() as *mut u8 as u64;
        let len = buffer.len() as u64;
        // Identity-mapped RAM is mapped at boot and never paged: nothing to
        // prepare, and the address is the physical one.
        if is_identity(va, len) {
            return va;
        }
        let device_writes = direction != BufferDirection::DriverToDevice;
        mm::prepare_for_dma(va, len, device_writes);
        if let Some(pa) = contiguous_phys(va, len) {
            return pa;
        }
        // Not reached from this kernel's queues: `Queue` posts only
        // physically contiguous memory (`Stable`: DMA buffers, page-cache
        // frames, payload pieces in the identity map or cut at page
        // boundaries) and `lend` bounces
        // other buffers itself, fallibly, before posting. `share` cannot
        // report failure, so a caller that did reach this with no memory
        // left would stop here.
        let pages = pages_for(buffer.len());
        let bounce = alloc_dma_reclaiming(pages)
            .unwrap_or_else(|_| panic!("out of memory for a {len}-byte bounce buffer"));
        if direction != BufferDirection::DeviceToDriver {
            // SAFETY: the caller guarantees `buffer` is valid for reads; the
            // bounce frames are fresh, identity mapped and at least `len` long.
            unsafe {
                core::ptr::copy_nonoverlapping(va as *const u8, bounce as *mut u8, buffer.len())
            };
            BOUNCED_BYTES.fetch_add(len, Ordering::Relaxed);
        }
        bounce
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let va = buffer.as_ptr() as *mut u8 as u64;
        let len = buffer.len() as u64;
        if (is_identity(va, len) && paddr == va) || mm::virt_to_phys(va) == Some(paddr) {
            return; // shared in place
        }
        if direction != BufferDirection::DriverToDevice {
            // SAFETY: `paddr` is the bounce buffer made by `share` for this
            // buffer (identity mapped, `len` bytes); the caller guarantees
            // `buffer` is valid for writes.
            unsafe {
                core::ptr::copy_nonoverlapping(paddr as *const u8, va as *mut u8, buffer.len())
            };
            BOUNCED_BYTES.fetch_add(len, Ordering::Relaxed);
        }
        mm::free_dma(paddr, pages_for(buffer.len()));
    }
}
