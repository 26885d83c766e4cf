//! virtio-blk over virtio-mmio or virtio-pci, interrupt driven, with several
//! requests in flight.
//!
//! A caller's request is one descriptor chain: the 16-byte header (device
//! reads), the caller's data buffer (device writes for a read, reads for a
//! write) and the status byte (device writes). The chain lends the caller's
//! buffer to the device through the framework's
//! `lend`, which posts it under the device lock,
//! sleeps on the device's [`WaitQueue`] and returns only once the device
//! has given the buffer back, so the driver needs no `unsafe`. The
//! interrupt handler only acknowledges the device and wakes the waiters; a
//! woken waiter *reaps*: under the lock it pops every completed request from
//! the used ring in order and files each result under the request's id (a
//! descriptor is reused as soon as its request is reaped), and then looks
//! for its own. So the interrupt handler never touches buffers or memory,
//! and requests of different threads complete independently; a batch
//! (readahead) has all its requests in flight at once.
//!
//! Buffers are shared with the device through the framework's `KernelHal`:
//! a physically contiguous buffer (a page-cache frame) is handed over as
//! is, so page-cache fills are DMAed straight into the frame; anything else
//! goes through a bounce buffer. Device errors come back as `EIO`, a full
//! queue makes the submitter wait for a free slot.
//!
//! Before interrupts are connected (or if connecting fails) waiting falls
//! back to polling the used ring.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use uk_frame::virtio::{Lend, LendingDevice, LendingQueue, lend};
use uk_vfs::VfsError;
use virtio_drivers::transport::{DeviceType, SomeTransport, Transport};

use super::{Found, NoEventIdx};
use crate::arch::idt::TrapFrame;
use crate::sync::{IrqMutex, WaitQueue};

/// Sector size in bytes.
pub const SECTOR: usize = 512;
/// Most disks the driver handles (one interrupt handler each).
pub const MAX_DISKS: usize = 4;
/// Slots for requests in flight (the virtqueue's size; with indirect
/// descriptors one request takes one slot). The same size as virtio-scsi's
/// request queue, so that both share one copy of the lending queue's code.
const SLOTS: usize = 64;
/// The request queue.
const QUEUE: u16 = 0;

bitflags::bitflags! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Features: u64 {
        const RO = 1 << 5;
        const FLUSH = 1 << 9;
        const RING_INDIRECT_DESC = 1 << 28;
        const VERSION_1 = 1 << 32;
    }
}

/// Request types (`virtio_blk_req.type`).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
/// Status byte: success.
const S_OK: u8 = 0;

/// A request's header (`virtio_blk_req`: type, reserved, sector) and status
/// byte, aligned so that neither straddles a page: the HAL then shares them
/// in place instead of bouncing them.
#[repr(C, align(32))]
struct ReqMem {
    header: [u8; 16],
    status: [u8; 1],
}

impl ReqMem {
    fn new(kind: u32, sector: u64) -> ReqMem {
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        // Anything but OK until the device writes it.
        ReqMem {
            header,
            status: [0xff],
        }
    }
}

struct Inner {
    transport: NoEventIdx<SomeTransport<'static>>,
    queue: LendingQueue<SLOTS>,
    /// Highest number of requests in flight at once.
    max_inflight: usize,
}

impl LendingDevice<SLOTS> for Inner {
    fn queue(&mut self) -> &mut LendingQueue<SLOTS> {
        &mut self.queue
    }
    fn notify(&mut self) {
        self.transport.notify(QUEUE);
    }
    fn posted(&mut self, in_flight: usize) {
        self.max_inflight = self.max_inflight.max(in_flight);
    }
}

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
    flush: bool,
    location: alloc::string::String,
    irq_on: AtomicBool,
    reads: AtomicU64,
    writes: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    errors: AtomicU64,
    interrupts: AtomicU64,
}

static DISKS: IrqMutex<Vec<&'static Disk>> = IrqMutex::new(Vec::new());

/// Why a request could not be posted, as an errno.
fn posted_err(e: virtio_drivers::Error) -> VfsError {
    match e {
        virtio_drivers::Error::InvalidParam => VfsError::EINVAL,
        _ => VfsError::EIO,
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
            max_inflight: self.inner.lock().max_inflight as u64,
        }
    }

    fn check(&self, sector: u64, len: usize) -> Result<(), VfsError> {
        super::block::check_range(self.sectors, sector, len)
    }

    /// Waits until `cond` holds: sleeping on the wait queue when the
    /// interrupt is connected, polling otherwise.
    fn wait(&self, cond: &mut dyn FnMut() -> bool) {
        if self.irq_on.load(Ordering::Acquire) {
            self.wq.wait_until(|| cond().then_some(()))
        } else {
            while !cond() {
                core::hint::spin_loop();
            }
        }
    }

    /// Runs `reqs` (with all of them in flight at once, as many as the
    /// queue holds); each result says whether the request was posted (its
    /// status byte says how it went).
    /// Each request's result; `Err` (nothing posted) without memory for
    /// the bookkeeping.
    fn run(
        &self,
        reqs: &mut [Lend<'_>],
    ) -> Result<Vec<Result<u32, virtio_drivers::Error>>, VfsError> {
        let res = lend(&self.inner, reqs, &mut |c| self.wait(c)).map_err(|_| VfsError::ENOMEM);
        // Others may be waiting for a free slot.
        self.wq.wake_all();
        res
    }

    /// Accounts for one finished request of `len` bytes with status
    /// `status` (after the device gave it back) and turns it into a result.
    fn account(
        &self,
        posted: Result<u32, virtio_drivers::Error>,
        status: u8,
        len: usize,
        write: bool,
    ) -> Result<(), VfsError> {
        let res = posted.map_err(posted_err).and_then(|_| {
            if status == S_OK {
                Ok(())
            } else {
                log::warn!(
                    "virtio-blk {}: request failed (status {status})",
                    self.location
                );
                Err(VfsError::EIO)
            }
        });
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

    /// Reads several `(sector, buffer)` requests with all of them in flight
    /// at once (as many as the queue holds), then waits for every one.
    /// Page-cache readahead uses it: each buffer is one page-cache frame,
    /// which the device fills in place.
    pub fn read_batch(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), VfsError> {
        for (sector, buf) in reqs.iter() {
            self.check(*sector, buf.len())?;
        }
        let mut mems: Vec<ReqMem> = Vec::new();
        let mut lends: Vec<Lend<'_>> = Vec::new();
        if mems.try_reserve_exact(reqs.len()).is_err()
            || lends.try_reserve_exact(reqs.len()).is_err()
        {
            return Err(VfsError::ENOMEM);
        }
        mems.extend(reqs.iter().map(|(s, _)| ReqMem::new(T_IN, *s)));
        lends.extend(mems.iter_mut().zip(reqs.iter_mut()).map(|(m, (_, buf))| {
            Lend::new()
                .reads(&m.header)
                .writes(buf)
                .writes(&mut m.status)
        }));
        let posted = self.run(&mut lends);
        drop(lends);
        let posted = posted?;
        let mut res = Ok(());
        for ((m, (_, buf)), p) in mems.iter().zip(reqs.iter()).zip(posted) {
            let r = self.account(p, m.status[0], buf.len(), false);
            if res.is_ok() {
                res = r;
            }
        }
        res
    }

    /// Reads `buf.len()` bytes (a multiple of 512) starting at `sector`.
    /// Several threads may have reads in flight at once.
    pub fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), VfsError> {
        self.read_batch(&mut [(sector, buf)])
    }

    /// Writes `buf` (a multiple of 512 bytes) starting at `sector`.
    pub fn write(&self, sector: u64, buf: &[u8]) -> Result<(), VfsError> {
        self.check(sector, buf.len())?;
        if self.readonly {
            return Err(VfsError::EROFS);
        }
        let mut m = ReqMem::new(T_OUT, sector);
        let mut lends = [Lend::new()
            .reads(&m.header)
            .reads(buf)
            .writes(&mut m.status)];
        let posted = self
            .run(&mut lends)?
            .pop()
            .unwrap_or(Err(virtio_drivers::Error::IoError));
        self.account(posted, m.status[0], buf.len(), true)
    }

    /// Flushes the device's write cache (the writes completed before it).
    pub fn flush(&self) -> Result<(), VfsError> {
        if !self.flush {
            return Ok(());
        }
        let mut m = ReqMem::new(T_FLUSH, 0);
        let mut lends = [Lend::new().reads(&m.header).writes(&mut m.status)];
        let posted = self
            .run(&mut lends)?
            .pop()
            .unwrap_or(Err(virtio_drivers::Error::IoError));
        posted.map_err(posted_err).and_then(|_| {
            if m.status[0] == S_OK {
                Ok(())
            } else {
                Err(VfsError::EIO)
            }
        })
    }

    fn on_interrupt(&self) {
        // Reading the interrupt status acknowledges it (virtio-mmio:
        // InterruptStatus -> InterruptACK; virtio-pci: the ISR register).
        if let Some(mut g) = self.inner.try_lock() {
            g.transport.ack_interrupt();
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
    let mut transport = NoEventIdx(transport);
    let features = transport.begin_init(
        Features::RO | Features::FLUSH | Features::RING_INDIRECT_DESC | Features::VERSION_1,
    );
    let capacity = (|| {
        let lo = transport.read_config_space::<u32>(0)?;
        let hi = transport.read_config_space::<u32>(4)?;
        Ok::<_, virtio_drivers::Error>(u64::from(lo) | u64::from(hi) << 32)
    })();
    let queue = capacity.and_then(|c| {
        let q = LendingQueue::new(
            &mut transport,
            QUEUE,
            features.contains(Features::RING_INDIRECT_DESC),
            false,
        )?;
        Ok((c, q))
    });
    let (sectors, queue) = match queue {
        Ok(v) => v,
        Err(e) => {
            log::warn!(
                "virtio-blk at {location}: {}",
                uk_frame::virtio::error_str(&e)
            );
            return None;
        }
    };
    transport.finish_init();
    let disk: &'static Disk = Box::leak(Box::new(Disk {
        sectors,
        readonly: features.contains(Features::RO),
        flush: features.contains(Features::FLUSH),
        inner: IrqMutex::new(Inner {
            transport,
            queue,
            max_inflight: 0,
        }),
        wq: WaitQueue::new(),
        location,
        irq_on: AtomicBool::new(false),
        reads: AtomicU64::new(0),
        writes: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        bytes_written: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        interrupts: AtomicU64::new(0),
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
