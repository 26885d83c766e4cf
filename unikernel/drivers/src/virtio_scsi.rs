//! virtio-scsi (virtio device type 8) over virtio-pci or virtio-mmio: the
//! boot disk of Google Compute Engine's machine types.
//!
//! `virtio-drivers` 0.13 has no SCSI device, so this driver builds on its
//! [`VirtQueue`] and transport (hiding RING_EVENT_IDX: see
//! [`NoEventIdx`]). Queues: control (0) and event (1) are set up but not
//! used (no task management, no hot-plug events: the event queue gets no
//! buffers, so the device drops events, which the spec allows), request
//! queue 2 carries every command.
//!
//! A command is three descriptors: the `virtio_scsi_cmd_req` (device
//! reads), then the `virtio_scsi_cmd_resp` and the data-in buffer (device
//! writes, in that order: the spec puts the response before data-in). The
//! request and response live in a small aligned block of the caller's (so
//! that neither straddles a page), the data buffer is the caller's own,
//! shared in place by the framework's `KernelHal` when it is physically
//! contiguous (page-cache frames), bounced otherwise. The chain lends these
//! buffers to the device through the framework's
//! `lend`, which returns only once the device has
//! given them back, so the driver needs no `unsafe`.
//!
//! Like virtio-blk, several commands are in flight (as many as the queue's
//! descriptors hold): a caller submits under the host's lock and sleeps on
//! the host's wait queue; the interrupt handler only acknowledges the device
//! and wakes the waiters; a woken waiter reaps every completion in
//! used-ring order and files each result under its command's id. A non-GOOD
//! status or a transport failure is `EIO`, with the sense key logged; UNIT
//! ATTENTION (which a reset leaves behind) is retried.
//!
//! At start the driver scans targets `0..=min(max_target, 7)`, LUN 0, with
//! INQUIRY (peripheral type 0 = direct-access disk), clears unit attentions
//! with TEST UNIT READY and sizes the disk with READ CAPACITY(10), or (16)
//! past 2 TiB. Reads use READ(10), or READ(16) past 2 TiB. Disks with a
//! logical block size other than 512 bytes are not supported yet.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use uk_frame::virtio::{Lend, LendingDevice, LendingQueue, lend};
use uk_vfs::VfsError;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceType, SomeTransport, Transport};

use super::block::{self, BlockDevice, SECTOR};
use super::{Found, KernelHal, NoEventIdx};
use crate::arch::idt::TrapFrame;
use crate::sync::{IrqMutex, WaitQueue};

/// Descriptors in the request queue.
const QUEUE_SIZE: usize = 64;
/// Descriptors in the (unused) control and event queues.
const AUX_QUEUE_SIZE: usize = 16;
const QUEUE_CONTROL: u16 = 0;
const QUEUE_EVENT: u16 = 1;
const QUEUE_REQUEST: u16 = 2;
/// Most hosts the driver handles (one interrupt handler each).
pub const MAX_HOSTS: usize = 2;
/// Highest target scanned.
const MAX_TARGET: u16 = 7;

/// `virtio_scsi_cmd_req` with a 32-byte CDB: lun[8], id u64, task_attr,
/// prio, crn, cdb[32].
const REQ_LEN: usize = 51;
/// `virtio_scsi_cmd_resp` with 96 sense bytes: sense_len u32, resid u32,
/// status_qualifier u16, status u8, response u8, sense[96].
const RESP_LEN: usize = 108;

bitflags::bitflags! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Features: u64 {
        const VERSION_1 = 1 << 32;
    }
}

/// The SCSI sense key UNIT ATTENTION.
const UNIT_ATTENTION: u8 = 6;
/// virtio-scsi response: no such target.
const BAD_TARGET: u8 = 3;

/// Why a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    /// The transport's response code (not VIRTIO_SCSI_S_OK).
    Response(u8),
    /// A non-GOOD SCSI status with the sense key, ASC and ASCQ.
    Status {
        status: u8,
        key: u8,
        asc: u8,
        ascq: u8,
    },
    /// The device moved fewer bytes than asked.
    Short(u32),
    /// The queue refused the command.
    Queue,
}

impl core::fmt::Display for Fail {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Fail::Response(r) => write!(f, "virtio-scsi response {r}"),
            Fail::Status {
                status,
                key,
                asc,
                ascq,
            } => write!(
                f,
                "status {status:#x}, sense key {key:#x} ({}), asc/ascq {asc:#04x}/{ascq:#04x}",
                sense_key_name(key)
            ),
            Fail::Short(resid) => write!(f, "{resid} bytes short"),
            Fail::Queue => write!(f, "queue error"),
        }
    }
}

fn sense_key_name(key: u8) -> &'static str {
    match key {
        0 => "NO SENSE",
        1 => "RECOVERED ERROR",
        2 => "NOT READY",
        3 => "MEDIUM ERROR",
        4 => "HARDWARE ERROR",
        5 => "ILLEGAL REQUEST",
        6 => "UNIT ATTENTION",
        7 => "DATA PROTECT",
        0xb => "ABORTED COMMAND",
        _ => "other",
    }
}

/// A command's request and response, aligned so that neither straddles a
/// page (the HAL then shares them in place).
#[repr(C, align(256))]
struct CmdMem {
    req: [u8; 64],
    resp: [u8; RESP_LEN],
}

struct Inner {
    transport: NoEventIdx<SomeTransport<'static>>,
    _control: VirtQueue<KernelHal, AUX_QUEUE_SIZE>,
    _event: VirtQueue<KernelHal, AUX_QUEUE_SIZE>,
    req: LendingQueue<QUEUE_SIZE>,
}

impl LendingDevice<QUEUE_SIZE> for Inner {
    fn queue(&mut self) -> &mut LendingQueue<QUEUE_SIZE> {
        &mut self.req
    }
    fn notify(&mut self) {
        self.transport.notify(QUEUE_REQUEST);
    }
}

/// One virtio-scsi host adapter.
struct Host {
    inner: IrqMutex<Inner>,
    wq: WaitQueue,
    irq_on: AtomicBool,
    /// Largest transfer in sectors (the device's max_sectors, capped).
    max_sectors: u32,
    location: String,
    interrupts: AtomicU64,
    /// The next command's tag.
    next_tag: AtomicU64,
}

/// A disk (target, LUN) behind a virtio-scsi host.
pub struct ScsiDisk {
    host: &'static Host,
    target: u16,
    lun: u16,
    sectors: u64,
    location: String,
}

fn parse_resp(resp: &[u8]) -> Result<(), Fail> {
    let resid = u32::from_le_bytes([resp[4], resp[5], resp[6], resp[7]]);
    let status = resp[10];
    let response = resp[11];
    if response != 0 {
        return Err(Fail::Response(response));
    }
    if status != 0 {
        let sense = &resp[12..];
        let (key, asc, ascq) = match sense[0] & 0x7f {
            0x70 | 0x71 => (sense[2] & 0xf, sense[12], sense[13]),
            0x72 | 0x73 => (sense[1] & 0xf, sense[2], sense[3]),
            _ => (0, 0, 0),
        };
        return Err(Fail::Status {
            status,
            key,
            asc,
            ascq,
        });
    }
    if resid != 0 {
        return Err(Fail::Short(resid));
    }
    Ok(())
}

impl Host {
    /// Waits until `cond` holds: sleeping when the interrupt is connected,
    /// polling otherwise.
    fn wait(&self, cond: &mut dyn FnMut() -> bool) {
        if self.irq_on.load(Ordering::Acquire) {
            self.wq.wait_until(|| cond().then_some(()))
        } else {
            while !cond() {
                core::hint::spin_loop();
            }
        }
    }

    /// Runs `cmds` (each a CDB with its data-in buffer, possibly empty) on
    /// `target`/`lun`, all in flight at once (as many as the queue holds),
    /// and returns each one's result.
    fn run(&self, target: u16, lun: u16, cmds: &mut [(&[u8], &mut [u8])]) -> Vec<Result<(), Fail>> {
        let mut mems: Vec<CmdMem> = cmds
            .iter()
            .map(|(cdb, _)| {
                let mut m = CmdMem {
                    req: [0; 64],
                    resp: [0; RESP_LEN],
                };
                let req = &mut m.req;
                req[0] = 1;
                req[1] = target as u8;
                req[2] = ((lun >> 8) as u8 & 0x3f) | 0x40;
                req[3] = lun as u8;
                let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
                req[8..16].copy_from_slice(&tag.to_le_bytes());
                // task_attr 0 = SIMPLE, prio 0, crn 0.
                req[19..19 + cdb.len()].copy_from_slice(cdb);
                m
            })
            .collect();
        let mut lends: Vec<Lend<'_>> = mems
            .iter_mut()
            .zip(cmds.iter_mut())
            .map(|(m, (_, data))| {
                Lend::new()
                    .reads(&m.req[..REQ_LEN])
                    .writes(&mut m.resp)
                    .writes(data)
            })
            .collect();
        let posted = lend(&self.inner, &mut lends, &mut |c| self.wait(c));
        drop(lends);
        // Others may be waiting for room in the queue.
        self.wq.wake_all();
        // Without memory for lend's bookkeeping nothing was posted: every
        // command fails as one the queue refused.
        let posted = posted.unwrap_or_default();
        mems.iter()
            .enumerate()
            .map(|(i, m)| {
                match posted
                    .get(i)
                    .copied()
                    .unwrap_or(Err(virtio_drivers::Error::DmaError))
                {
                    Ok(_) => parse_resp(&m.resp),
                    Err(e) => {
                        log::warn!(
                            "virtio-scsi {}: cannot queue a command: {}",
                            self.location,
                            uk_frame::virtio::error_str(&e)
                        );
                        Err(Fail::Queue)
                    }
                }
            })
            .collect()
    }

    /// Runs one command to completion, retrying a UNIT ATTENTION twice.
    fn exec(&self, target: u16, lun: u16, cdb: &[u8], data: &mut [u8]) -> Result<(), Fail> {
        let mut tries = 0;
        loop {
            let res = self
                .run(target, lun, &mut [(cdb, &mut *data)])
                .pop()
                .unwrap_or(Err(Fail::Queue));
            match res {
                Err(Fail::Status {
                    key: UNIT_ATTENTION,
                    ..
                }) if tries < 2 => tries += 1,
                r => return r,
            }
        }
    }

    fn on_interrupt(&self) {
        // Reading the ISR status acknowledges the interrupt (virtio-mmio:
        // InterruptStatus -> InterruptACK).
        if let Some(mut g) = self.inner.try_lock() {
            g.transport.ack_interrupt();
        }
        self.interrupts.fetch_add(1, Ordering::Relaxed);
        self.wq.wake_all();
    }
}

/// The CDB of a read of `count` sectors at `lba`: READ(10) when it fits,
/// READ(16) otherwise.
fn read_cdb(lba: u64, count: u32) -> ([u8; 16], usize) {
    let mut cdb = [0u8; 16];
    if lba + u64::from(count) <= u64::from(u32::MAX) && count <= u32::from(u16::MAX) {
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
        cdb[7..9].copy_from_slice(&(count as u16).to_be_bytes());
        (cdb, 10)
    } else {
        cdb[0] = 0x88;
        cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb[10..14].copy_from_slice(&count.to_be_bytes());
        (cdb, 16)
    }
}

impl ScsiDisk {
    /// Reads `reqs`, each split at the host's transfer limit, with every
    /// command in flight at once; the first failure is the result.
    fn read_cmds(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), Fail> {
        let chunk = self.host.max_sectors as usize * SECTOR;
        let mut cdbs = Vec::new();
        for (lba, buf) in reqs.iter() {
            let mut lba = *lba;
            for part in buf.chunks(chunk) {
                let count = (part.len() / SECTOR) as u32;
                cdbs.push(read_cdb(lba, count));
                lba += u64::from(count);
            }
        }
        let mut cmds: Vec<(&[u8], &mut [u8])> = cdbs
            .iter()
            .map(|(cdb, n)| &cdb[..*n])
            .zip(reqs.iter_mut().flat_map(|(_, buf)| buf.chunks_mut(chunk)))
            .collect();
        let mut res = Ok(());
        for r in self.host.run(self.target, self.lun, &mut cmds) {
            if res.is_ok() {
                res = r;
            }
        }
        res
    }

    fn read_all(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), VfsError> {
        for (lba, buf) in reqs.iter() {
            block::check_range(self.sectors, *lba, buf.len())?;
        }
        let fail = |e: Fail| {
            log::warn!("{}: read failed: {e}", self.location);
            VfsError::EIO
        };
        match self.read_cmds(reqs) {
            Ok(()) => Ok(()),
            Err(e) => {
                fail(e);
                // One more try, request by request: a unit attention (a
                // capacity change, a reset) fails every command in flight.
                for r in reqs.iter_mut() {
                    self.read_cmds(core::slice::from_mut(r)).map_err(fail)?;
                }
                Ok(())
            }
        }
    }
}

impl BlockDevice for ScsiDisk {
    fn capacity_blocks(&self) -> u64 {
        self.sectors
    }

    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), VfsError> {
        self.read_all(&mut [(lba, buf)])
    }

    fn read_batch(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), VfsError> {
        self.read_all(reqs)
    }

    fn location(&self) -> &str {
        &self.location
    }
}

static HOSTS: IrqMutex<Vec<&'static Host>> = IrqMutex::new(Vec::new());

fn irq_handler<const N: usize>(_frame: &mut TrapFrame) {
    let host = HOSTS.lock().get(N).copied();
    if let Some(h) = host {
        h.on_interrupt();
    }
}

const HANDLERS: [crate::trap::IrqHandler; MAX_HOSTS] = [irq_handler::<0>, irq_handler::<1>];

/// Scans one target (LUN 0): `Some(sectors)` for a direct-access disk with
/// 512-byte blocks.
fn probe(host: &Host, target: u16) -> Option<u64> {
    let lun = 0;
    let mut scratch = [0u8; 36];
    let inquiry = [0x12, 0, 0, 0, 36, 0];
    match host.exec(target, lun, &inquiry, &mut scratch[..36]) {
        Ok(()) => {}
        Err(Fail::Short(resid)) if resid <= 36 - 5 => {}
        Err(Fail::Response(BAD_TARGET)) => return None,
        Err(e) => {
            log::debug!(
                "virtio-scsi {} target {target}: INQUIRY: {e}",
                host.location
            );
            return None;
        }
    }
    let id = &scratch[..36];
    let (qualifier, kind) = (id[0] >> 5, id[0] & 0x1f);
    let vendor = core::str::from_utf8(&id[8..16]).unwrap_or("?").trim();
    let product = core::str::from_utf8(&id[16..32]).unwrap_or("?").trim();
    log::debug!(
        "virtio-scsi {} target {target}: type {kind} qualifier {qualifier} '{vendor}' '{product}'",
        host.location
    );
    if qualifier != 0 || kind != 0 {
        return None;
    }
    // Clear the unit attention a reset leaves (exec retries it).
    let _ = host.exec(target, lun, &[0u8; 6], &mut []);
    let rc10 = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut cap = [0u8; 32];
    if let Err(e) = host.exec(target, lun, &rc10, &mut cap[..8]) {
        log::warn!(
            "virtio-scsi {} target {target}: READ CAPACITY(10): {e}",
            host.location
        );
        return None;
    }
    let d = &cap[..8];
    let mut last = u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
    let mut bs = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    if last == u64::from(u32::MAX) {
        let mut rc16 = [0u8; 16];
        rc16[0] = 0x9e;
        rc16[1] = 0x10;
        rc16[13] = 32;
        if let Err(e) = host.exec(target, lun, &rc16, &mut cap) {
            log::warn!(
                "virtio-scsi {} target {target}: READ CAPACITY(16): {e}",
                host.location
            );
            return None;
        }
        let d = &cap[..12];
        last = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        bs = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    }
    if bs as usize != SECTOR {
        log::warn!(
            "virtio-scsi {} target {target}: {bs}-byte blocks are not supported",
            host.location
        );
        return None;
    }
    Some(last + 1)
}

fn init_one(found: Found) {
    let Found {
        transport,
        irq,
        location,
    } = found;
    let index = HOSTS.lock().len();
    if index >= MAX_HOSTS {
        log::warn!("virtio-scsi at {location}: more than {MAX_HOSTS} hosts");
        return;
    }
    let mut transport = NoEventIdx(transport);
    let features = transport.begin_init(Features::VERSION_1);
    log::debug!("virtio-scsi {location}: features {:#x}", features.bits());
    let max_sectors = transport.read_config_space::<u32>(8).unwrap_or(0);
    let max_target = transport.read_config_space::<u16>(30).unwrap_or(0);
    let queues = (|| {
        let control = VirtQueue::new(&mut transport, QUEUE_CONTROL, false, false)?;
        let event = VirtQueue::new(&mut transport, QUEUE_EVENT, false, false)?;
        let req = LendingQueue::new(&mut transport, QUEUE_REQUEST, false, false)?;
        Ok::<_, virtio_drivers::Error>((control, event, req))
    })();
    let (control, event, req) = match queues {
        Ok(q) => q,
        Err(e) => {
            log::warn!(
                "virtio-scsi at {location}: cannot set up the queues: {}",
                uk_frame::virtio::error_str(&e)
            );
            return;
        }
    };
    transport.finish_init();
    let host: &'static Host = Box::leak(Box::new(Host {
        inner: IrqMutex::new(Inner {
            transport,
            _control: control,
            _event: event,
            req,
        }),
        wq: WaitQueue::new(),
        irq_on: AtomicBool::new(false),
        // 0 means no limit; stay well inside what every host takes.
        max_sectors: if max_sectors == 0 {
            1024
        } else {
            max_sectors.min(1024)
        },
        location,
        interrupts: AtomicU64::new(0),
        next_tag: AtomicU64::new(0),
    }));
    HOSTS.lock().push(host);
    match super::connect_irq(irq, HANDLERS[index]) {
        Ok(v) => {
            host.irq_on.store(true, Ordering::Release);
            log::debug!("virtio-scsi {}: vector {v}", host.location);
        }
        Err(e) => log::warn!(
            "virtio-scsi {}: no interrupt ({e:?}), polling",
            host.location
        ),
    }
    for target in 0..=max_target.min(MAX_TARGET) {
        let Some(sectors) = probe(host, target) else {
            continue;
        };
        let disk: &'static ScsiDisk = Box::leak(Box::new(ScsiDisk {
            host,
            target,
            lun: 0,
            sectors,
            location: alloc::format!("virtio-scsi {} target {target} lun 0", host.location),
        }));
        log::info!("virtio-scsi: {} KiB at {}", sectors / 2, disk.location);
        block::register(disk);
    }
}

/// Claims every virtio-scsi host and registers its disks.
pub fn init() {
    while let Some(found) = super::take(DeviceType::ScsiHost) {
        init_one(found);
    }
}
