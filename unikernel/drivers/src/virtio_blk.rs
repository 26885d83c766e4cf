//! virtio-blk over virtio-mmio or virtio-pci, interrupt driven, with several
//! requests in flight.
//!
//! A caller submits a request (`read_blocks_nb`/`write_blocks_nb`) under the
//! device lock and gets the descriptor chain's token; it then sleeps on the
//! device's [`WaitQueue`] until that token's result is recorded. The
//! interrupt handler only acknowledges the device and wakes the waiters; a
//! woken waiter *reaps*: under the lock it pops every completed request from
//! the used ring in order (virtio-drivers insists on that order), frees each
//! slot and files the result under the request's id (a token is reused as
//! soon as its request is reaped), and then looks for its own. So the interrupt handler
//! never touches buffers or memory, and requests of different threads
//! complete independently.
//!
//! Buffers are shared with the device through [`KernelHal`]: a physically
//! contiguous buffer (a page-cache frame) is handed over as is, anything else
//! goes through a bounce buffer. Device errors come back as `EIO`, a full
//! queue makes the submitter wait for a free slot.
//!
//! Before interrupts are connected (or if connecting fails) waiting falls
//! back to polling the used ring.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use uk_vfs::VfsError;
use virtio_drivers::device::blk::{BlkReq, BlkResp, SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::{DeviceType, SomeTransport};

use super::{Found, KernelHal};
use crate::arch::idt::TrapFrame;
use crate::sync::{IrqMutex, WaitQueue};

/// Sector size in bytes.
pub const SECTOR: usize = SECTOR_SIZE;
/// Most disks the driver handles (one interrupt handler each).
pub const MAX_DISKS: usize = 4;
/// Slots for requests in flight (the virtqueue's size).
const SLOTS: usize = 16;

/// The transport hides RING_EVENT_IDX (see `drivers::NoEventIdx`).
type Blk = VirtIOBlk<KernelHal, super::NoEventIdx<SomeTransport<'static>>>;

/// A request header aligned to its size (16 bytes), so it never straddles a
/// page boundary: the HAL then shares it in place instead of bouncing it
/// (the heap only guarantees 8-byte alignment).
#[repr(C, align(16))]
struct AlignedReq(BlkReq);

/// A request in flight: its header, status byte and the caller's buffer,
/// kept at stable addresses until the device is done with them.
struct Pending {
    req: Box<AlignedReq>,
    resp: Box<BlkResp>,
    buf: *mut u8,
    len: usize,
    write: bool,
    /// The request's identity (tokens are reused as soon as a request is reaped).
    id: u64,
}

struct Inner {
    blk: Blk,
    /// Requests in flight, indexed by token.
    slots: [Option<Pending>; SLOTS],
    /// Results reaped but not yet collected by their submitter: (id, result).
    completed: Vec<(u64, Result<(), VfsError>)>,
    next_id: u64,
}

// SAFETY: the raw buffer pointers in `Pending` belong to threads blocked in
// `Disk::io` until their slot is released; nothing else dereferences them.
unsafe impl Send for Inner {}

/// I/O counters of one disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiskStats {
    /// Read requests completed.
    pub reads: u64,
    /// Write requests completed.
    pub writes: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Requests that failed (EIO).
    pub errors: u64,
    /// Interrupts taken.
    pub interrupts: u64,
    /// Highest number of requests in flight at once.
    pub max_inflight: u64,
}

/// One virtio block device.
pub struct Disk {
    inner: IrqMutex<Inner>,
    wq: WaitQueue,
    sectors: u64,
    readonly: bool,
    location: alloc::string::String,
    irq_on: AtomicBool,
    inflight: AtomicUsize,
    reads: AtomicU64,
    writes: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    errors: AtomicU64,
    interrupts: AtomicU64,
    max_inflight: AtomicU64,
}

static DISKS: IrqMutex<Vec<&'static Disk>> = IrqMutex::new(Vec::new());

fn map_err(e: virtio_drivers::Error) -> VfsError {
    match e {
        virtio_drivers::Error::QueueFull => VfsError::EAGAIN,
        virtio_drivers::Error::InvalidParam => VfsError::EINVAL,
        _ => VfsError::EIO,
    }
}

impl Inner {
    /// Pops every completed request in used-ring order and records its result.
    fn reap(&mut self) -> usize {
        let mut n = 0;
        while let Some(token) = self.blk.peek_used() {
            let Some(mut p) = self.slots.get_mut(token as usize).and_then(Option::take) else {
                log::error!("virtio-blk: completion for unknown token {token}");
                return n;
            };
            // SAFETY: `buf`/`len` describe the buffer passed with this token to
            // `*_blocks_nb`; its owner is blocked in `Disk::io` until the slot
            // is released, so it is alive and not otherwise accessed. `req`
            // and `resp` are the same boxes as at submission.
            let res = unsafe {
                if p.write {
                    let buf = core::slice::from_raw_parts(p.buf, p.len);
                    self.blk
                        .complete_write_blocks(token, &p.req.0, buf, &mut p.resp)
                } else {
                    let buf = core::slice::from_raw_parts_mut(p.buf, p.len);
                    self.blk
                        .complete_read_blocks(token, &p.req.0, buf, &mut p.resp)
                }
            };
            let res = res.map_err(|e| {
                log::warn!("virtio-blk: request failed: {e}");
                VfsError::EIO
            });
            // The slot (and the token) are free from here on; the result
            // waits for its submitter under the request's id.
            self.completed.push((p.id, res));
            n += 1;
        }
        n
    }
}

impl Disk {
    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Capacity in bytes.
    pub fn size(&self) -> u64 {
        self.sectors * SECTOR as u64
    }

    /// Whether the device refuses writes.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// Where the device was found.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Counters.
    pub fn stats(&self) -> DiskStats {
        DiskStats {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            interrupts: self.interrupts.load(Ordering::Relaxed),
            max_inflight: self.max_inflight.load(Ordering::Relaxed),
        }
    }

    fn check(&self, sector: u64, len: usize) -> Result<(), VfsError> {
        if len == 0 || !len.is_multiple_of(SECTOR) {
            return Err(VfsError::EINVAL);
        }
        let n = (len / SECTOR) as u64;
        if sector.checked_add(n).is_none_or(|end| end > self.sectors) {
            return Err(VfsError::EIO);
        }
        Ok(())
    }

    /// Submits a request and returns its id, waiting for a free slot if the
    /// queue is full.
    fn submit(&self, sector: u64, buf: *mut u8, len: usize, write: bool) -> Result<u64, VfsError> {
        let mut try_submit = || -> Option<Result<u64, VfsError>> {
            let mut g = self.inner.lock();
            let inner = &mut *g;
            inner.reap();
            let mut req = Box::new(AlignedReq(BlkReq::default()));
            let mut resp = Box::new(BlkResp::default());
            // SAFETY: `buf`/`len` is the caller's buffer, which stays alive
            // and untouched until `io` has collected the result (the caller
            // is blocked there); `req` and `resp` are boxed and moved into
            // the slot table, so their addresses stay valid until reaped.
            let r = unsafe {
                if write {
                    let data = core::slice::from_raw_parts(buf, len);
                    inner
                        .blk
                        .write_blocks_nb(sector as usize, &mut req.0, data, &mut resp)
                } else {
                    let data = core::slice::from_raw_parts_mut(buf, len);
                    inner
                        .blk
                        .read_blocks_nb(sector as usize, &mut req.0, data, &mut resp)
                }
            };
            match r {
                Ok(token) => {
                    let id = inner.next_id;
                    inner.next_id += 1;
                    let Some(slot) = inner.slots.get_mut(token as usize) else {
                        return Some(Err(VfsError::EIO));
                    };
                    *slot = Some(Pending {
                        req,
                        resp,
                        buf,
                        len,
                        write,
                        id,
                    });
                    let n = self.inflight.fetch_add(1, Ordering::Relaxed) + 1;
                    self.max_inflight.fetch_max(n as u64, Ordering::Relaxed);
                    Some(Ok(id))
                }
                Err(virtio_drivers::Error::QueueFull) => None,
                Err(e) => Some(Err(map_err(e))),
            }
        };
        self.wait(&mut try_submit)
    }

    /// Waits until `cond` yields: sleeping on the wait queue when the
    /// interrupt is connected, polling otherwise.
    fn wait<T>(&self, cond: &mut impl FnMut() -> Option<T>) -> T {
        if self.irq_on.load(Ordering::Acquire) {
            self.wq.wait_until(cond)
        } else {
            loop {
                if let Some(v) = cond() {
                    return v;
                }
                core::hint::spin_loop();
            }
        }
    }

    /// Runs one request to completion.
    fn io(&self, sector: u64, buf: *mut u8, len: usize, write: bool) -> Result<(), VfsError> {
        self.check(sector, len)?;
        if write && self.readonly {
            return Err(VfsError::EROFS);
        }
        let id = self.submit(sector, buf, len, write)?;
        self.complete(id, len, write)
    }

    /// Reads several `(sector, buffer)` requests with all of them in flight
    /// at once (as many as the queue holds), then waits for every one.
    /// Page-cache readahead uses it: each buffer is one page-cache frame.
    pub fn read_batch(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), VfsError> {
        for (sector, buf) in reqs.iter() {
            self.check(*sector, buf.len())?;
        }
        let mut ids = Vec::with_capacity(reqs.len());
        let mut res = Ok(());
        for (sector, buf) in reqs.iter_mut() {
            match self.submit(*sector, buf.as_mut_ptr(), buf.len(), false) {
                Ok(id) => ids.push((id, buf.len())),
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
        }
        // Every submitted buffer must stay borrowed until its request is done.
        for (id, len) in ids {
            let r = self.complete(id, len, false);
            if res.is_ok() {
                res = r;
            }
        }
        res
    }

    /// Waits for request `id` (of `len` bytes) and accounts for it.
    fn complete(&self, id: u64, len: usize, write: bool) -> Result<(), VfsError> {
        let res = self.wait(&mut || {
            let mut g = self.inner.lock();
            g.reap();
            let i = g.completed.iter().position(|(x, _)| *x == id)?;
            Some(g.completed.swap_remove(i).1)
        });
        self.inflight.fetch_sub(1, Ordering::Relaxed);
        // Others may be waiting for a free slot.
        self.wq.wake_all();
        match res {
            Ok(()) => {
                let (ops, bytes) = if write {
                    (&self.writes, &self.bytes_written)
                } else {
                    (&self.reads, &self.bytes_read)
                };
                ops.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(len as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        res
    }

    /// Reads `buf.len()` bytes (a multiple of 512) starting at `sector`.
    /// Several threads may have reads in flight at once.
    pub fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), VfsError> {
        self.io(sector, buf.as_mut_ptr(), buf.len(), false)
    }

    /// Writes `buf` (a multiple of 512 bytes) starting at `sector`.
    pub fn write(&self, sector: u64, buf: &[u8]) -> Result<(), VfsError> {
        // The device only reads the buffer; the pointer is never written through.
        self.io(sector, buf.as_ptr().cast_mut(), buf.len(), true)
    }

    /// Flushes the device's write cache (waits for requests in flight).
    pub fn flush(&self) -> Result<(), VfsError> {
        self.wait(&mut || {
            let mut g = self.inner.lock();
            g.reap();
            if g.slots.iter().any(Option::is_some) {
                return None;
            }
            // Nothing in flight: the synchronous request cannot pop a
            // completion that belongs to somebody else.
            Some(g.blk.flush().map_err(map_err))
        })
    }

    fn on_interrupt(&self) {
        // Reading the interrupt status acknowledges it (virtio-mmio:
        // InterruptStatus -> InterruptACK; virtio-pci: the ISR register).
        if let Some(mut g) = self.inner.try_lock() {
            g.blk.ack_interrupt();
        }
        self.interrupts.fetch_add(1, Ordering::Relaxed);
        self.wq.wake_all();
    }
}

impl super::block::BlockDevice for Disk {
    fn capacity_blocks(&self) -> u64 {
        self.sectors
    }

    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), VfsError> {
        Disk::read(self, lba, buf)
    }

    fn read_batch(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), VfsError> {
        Disk::read_batch(self, reqs)
    }

    fn location(&self) -> &str {
        &self.location
    }
}

fn irq_handler<const N: usize>(_frame: &mut TrapFrame) {
    let disk = DISKS.lock().get(N).copied();
    if let Some(d) = disk {
        d.on_interrupt();
    }
}

const HANDLERS: [crate::trap::IrqHandler; MAX_DISKS] = [
    irq_handler::<0>,
    irq_handler::<1>,
    irq_handler::<2>,
    irq_handler::<3>,
];

fn init_one(found: Found) -> Option<&'static Disk> {
    let Found {
        transport,
        irq,
        location,
    } = found;
    let blk = match Blk::new(super::NoEventIdx(transport)) {
        Ok(b) => b,
        Err(e) => {
            log::warn!("virtio-blk at {location}: {e}");
            return None;
        }
    };
    let disk: &'static Disk = Box::leak(Box::new(Disk {
        sectors: blk.capacity(),
        readonly: blk.readonly(),
        inner: IrqMutex::new(Inner {
            blk,
            slots: [const { None }; SLOTS],
            completed: Vec::with_capacity(SLOTS),
            next_id: 0,
        }),
        wq: WaitQueue::new(),
        location,
        irq_on: AtomicBool::new(false),
        inflight: AtomicUsize::new(0),
        reads: AtomicU64::new(0),
        writes: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        bytes_written: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        interrupts: AtomicU64::new(0),
        max_inflight: AtomicU64::new(0),
    }));
    let index = {
        let mut disks = DISKS.lock();
        if disks.len() >= MAX_DISKS {
            log::warn!(
                "virtio-blk at {}: more than {MAX_DISKS} disks",
                disk.location
            );
            return None;
        }
        disks.push(disk);
        disks.len() - 1
    };
    super::block::register(disk);
    disk.inner.lock().blk.enable_interrupts();
    match super::connect_irq(irq, HANDLERS[index]) {
        Ok(v) => {
            disk.irq_on.store(true, Ordering::Release);
            log::debug!("virtio-blk {}: vector {v}", disk.location);
        }
        Err(e) => log::warn!(
            "virtio-blk {}: no interrupt ({e:?}), polling",
            disk.location
        ),
    }
    log::info!(
        "virtio-blk: {} KiB{} at {}",
        disk.size() / 1024,
        if disk.readonly { " read-only" } else { "" },
        disk.location
    );
    Some(disk)
}

static PROBED: AtomicBool = AtomicBool::new(false);

/// Claims and initialises every virtio block device (once).
pub fn init() {
    if PROBED.swap(true, Ordering::AcqRel) {
        return;
    }
    while let Some(found) = super::take(DeviceType::Block) {
        init_one(found);
    }
}

/// Disk number `n` (in discovery order), after [`init`].
pub fn disk(n: usize) -> Option<&'static Disk> {
    DISKS.lock().get(n).copied()
}

/// Number of disks.
pub fn count() -> usize {
    DISKS.lock().len()
}
