//! NVMe (PCI class 01:08:02): the boot disk of GCE's newer machine types
//! and of EC2's Nitro instances.
//!
//! One admin queue pair (IDENTIFY controller and namespaces, creating the
//! I/O queues) and one I/O queue pair. Reads only (the block layer is
//! read-only). Each command's data is described by PRP entries built from
//! the buffer's own frames (`mm::virt_to_phys` page by page: the buffer
//! need not be physically contiguous, nothing is bounced): PRP1, PRP2 for a
//! second page, a per-slot PRP list page for more.
//!
//! Up to `SLOTS` commands are in flight, with the command id as the slot;
//! a slot is freed when its completion is reaped (the result waits under
//! the request's own id), so a batch larger than the slots cannot deadlock.
//! The I/O completion queue interrupts through MSI-X entry 0; the handler
//! only wakes the waiters, and a woken waiter reaps every new completion
//! (phase bit) under the controller's lock, files each result under its
//! slot and rings the completion doorbell. Without MSI-X, waiting polls.
//! Admin commands (boot only) poll, with a time limit. A non-zero status is
//! `EIO`, logged with its status code type and code.
//!
//! Namespaces with a logical block size other than 512 bytes are not
//! supported yet.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use uk_frame::dma::DmaBuffer;
use uk_frame::mmio::Mmio;
use uk_vfs::VfsError;
use virtio_drivers::transport::pci::bus::{DeviceFunction, PciRoot};

use super::block::{self, BlockDevice, SECTOR};
use super::pci;
use crate::arch::idt::TrapFrame;
use crate::mm::{self, PAGE};
use crate::sync::{IrqMutex, WaitQueue};

/// Entries of each queue (submission and completion).
const QUEUE_ENTRIES: u16 = 32;
/// Commands in flight on the I/O queue (fewer than the entries, so the
/// submission queue is never full).
const SLOTS: usize = 16;
/// Largest transfer per command (32 pages: a PRP list of one page).
const MAX_TRANSFER: usize = 128 * 1024;
/// Most controllers the driver handles (one interrupt handler each).
pub const MAX_CONTROLLERS: usize = 2;
/// Most namespaces registered per controller.
const MAX_NAMESPACES: u32 = 8;

const REG_CAP: u64 = 0x00;
const REG_CC: u64 = 0x14;
const REG_CSTS: u64 = 0x1c;
const REG_AQA: u64 = 0x24;
const REG_ASQ: u64 = 0x28;
const REG_ACQ: u64 = 0x30;

const OP_ADMIN_CREATE_SQ: u8 = 0x01;
const OP_ADMIN_CREATE_CQ: u8 = 0x05;
const OP_ADMIN_IDENTIFY: u8 = 0x06;
const OP_READ: u8 = 0x02;

/// A submission and completion queue pair in DMA memory.
struct QueuePair {
    qid: u16,
    sq: DmaBuffer,
    cq: DmaBuffer,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
}

impl QueuePair {
    fn new(qid: u16) -> Option<QueuePair> {
        let sq = DmaBuffer::alloc(1)?;
        let cq = DmaBuffer::alloc(1)?;
        Some(QueuePair {
            qid,
            sq,
            cq,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
        })
    }
}

/// The controller's registers.
#[derive(Clone, Copy)]
struct Regs {
    mmio: &'static Mmio,
    dstrd: u32,
}

impl Regs {
    fn read32(&self, off: u64) -> u32 {
        self.mmio.read32(off)
    }
    fn read64(&self, off: u64) -> u64 {
        u64::from(self.read32(off)) | u64::from(self.read32(off + 4)) << 32
    }
    fn write32(&self, off: u64, v: u32) {
        self.mmio.write32(off, v)
    }
    fn write64(&self, off: u64, v: u64) {
        self.write32(off, v as u32);
        self.write32(off + 4, (v >> 32) as u32);
    }
    fn doorbell(&self, qid: u16, completion: bool) -> u64 {
        0x1000 + (2 * u64::from(qid) + u64::from(completion)) * (4 << self.dstrd)
    }
}

/// A completion: (command id, status field without the phase bit).
type Completion = (u16, u16);

impl QueuePair {
    /// Writes `cmd` at the tail and rings the doorbell.
    fn submit(&mut self, regs: &Regs, cmd: &[u32; 16]) {
        // Slot `sq_tail` of this queue's submission page (64-byte entries,
        // QUEUE_ENTRIES of them in one DMA page); the controller only reads
        // entries between its head and our tail.
        let at = usize::from(self.sq_tail) * 64;
        let entry = &mut self.sq.as_mut_slice()[at..at + 64];
        for (dst, w) in entry.chunks_exact_mut(4).zip(cmd) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
        self.sq_tail = (self.sq_tail + 1) % QUEUE_ENTRIES;
        core::sync::atomic::fence(Ordering::SeqCst);
        regs.write32(regs.doorbell(self.qid, false), u32::from(self.sq_tail));
    }

    /// Takes the next completion, if the controller has posted one.
    fn next_completion(&mut self) -> Option<Completion> {
        // Entry `cq_head` of this queue's completion page (16-byte entries);
        // the controller writes it before flipping its phase bit.
        let dw3 = self
            .cq
            .read_u32_volatile(usize::from(self.cq_head) * 16 + 12);
        let status = (dw3 >> 16) as u16;
        if (status & 1 == 1) != self.phase {
            return None;
        }
        core::sync::atomic::fence(Ordering::Acquire);
        let cid = dw3 as u16;
        self.cq_head += 1;
        if self.cq_head == QUEUE_ENTRIES {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        Some((cid, status >> 1))
    }

    fn ring_cq(&self, regs: &Regs) {
        regs.write32(regs.doorbell(self.qid, true), u32::from(self.cq_head));
    }
}

struct Inner {
    io: QueuePair,
    /// Per-slot: in use, the request's id, and the PRP list page.
    busy: [bool; SLOTS],
    ids: [u64; SLOTS],
    prp_lists: Vec<DmaBuffer>,
    /// Results reaped but not yet collected: (id, status). A slot is free
    /// as soon as its completion is reaped, so one thread may have more
    /// requests in flight than there are slots (a readahead batch).
    completed: Vec<(u64, u16)>,
    next_id: u64,
}

/// One NVMe controller.
struct Controller {
    regs: Regs,
    inner: IrqMutex<Inner>,
    wq: WaitQueue,
    irq_on: AtomicBool,
    location: String,
    interrupts: AtomicU64,
    /// Largest transfer in bytes.
    max_transfer: usize,
}

/// One namespace, as a disk.
pub struct Namespace {
    ctrl: &'static Controller,
    nsid: u32,
    sectors: u64,
    location: String,
}

fn status_text(status: u16) -> String {
    alloc::format!(
        "status code type {:#x}, status code {:#04x}",
        (status >> 8) & 7,
        status & 0xff
    )
}

impl Controller {
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

    /// Files every new completion under its slot.
    fn reap(&self, inner: &mut Inner) {
        let mut any = false;
        while let Some((cid, status)) = inner.io.next_completion() {
            any = true;
            match inner.busy.get_mut(cid as usize) {
                Some(b) if *b => {
                    *b = false;
                    inner.completed.push((inner.ids[cid as usize], status));
                }
                _ => log::error!(
                    "nvme {}: completion for unknown command {cid}",
                    self.location
                ),
            }
        }
        if any {
            inner.io.ring_cq(&self.regs);
        }
    }

    /// Submits a read of `buf` (at most `max_transfer` bytes, whole
    /// sectors) at `lba` of namespace `nsid`; returns the request's id.
    fn submit_read(&self, nsid: u32, lba: u64, buf: &mut [u8]) -> Result<u64, VfsError> {
        let va = buf.as_ptr() as u64;
        let len = buf.len() as u64;
        if !va.is_multiple_of(4) {
            return Err(VfsError::EINVAL);
        }
        mm::prepare_for_dma(va, len, true);
        // The physical address of every page the buffer touches.
        let mut pages = Vec::with_capacity(len.div_ceil(PAGE) as usize + 1);
        let mut page = va & !(PAGE - 1);
        while page < va + len {
            let pa = mm::virt_to_phys(page).ok_or(VfsError::EFAULT)?;
            pages.push(pa);
            page += PAGE;
        }
        let prp1 = pages[0] + (va & (PAGE - 1));
        self.wait(&mut || {
            let mut g = self.inner.lock();
            let inner = &mut *g;
            self.reap(inner);
            let slot = inner.busy.iter().position(|b| !b)?;
            let prp2 = match pages.len() {
                1 => 0,
                2 => pages[1],
                _ => {
                    // The slot's own PRP list page; the slot is free, so the
                    // controller is not reading it. At most
                    // MAX_TRANSFER/PAGE + 1 entries.
                    let list = &mut inner.prp_lists[slot];
                    for (dst, pa) in list.as_mut_slice().chunks_exact_mut(8).zip(&pages[1..]) {
                        dst.copy_from_slice(&pa.to_le_bytes());
                    }
                    list.phys()
                }
            };
            let mut cmd = [0u32; 16];
            cmd[0] = u32::from(OP_READ) | (slot as u32) << 16;
            cmd[1] = nsid;
            cmd[6] = prp1 as u32;
            cmd[7] = (prp1 >> 32) as u32;
            cmd[8] = prp2 as u32;
            cmd[9] = (prp2 >> 32) as u32;
            cmd[10] = lba as u32;
            cmd[11] = (lba >> 32) as u32;
            cmd[12] = (len / SECTOR as u64 - 1) as u32;
            let id = inner.next_id;
            inner.next_id += 1;
            inner.busy[slot] = true;
            inner.ids[slot] = id;
            inner.io.submit(&self.regs, &cmd);
            Some(Ok(id))
        })
    }

    /// Waits for request `id`.
    fn complete(&self, id: u64) -> Result<(), VfsError> {
        let status = self.wait(&mut || {
            let mut g = self.inner.lock();
            self.reap(&mut g);
            let i = g.completed.iter().position(|(x, _)| *x == id)?;
            Some(g.completed.swap_remove(i).1)
        });
        self.wq.wake_all();
        if status == 0 {
            Ok(())
        } else {
            log::warn!(
                "nvme {}: read failed: {}",
                self.location,
                status_text(status)
            );
            Err(VfsError::EIO)
        }
    }

    fn on_interrupt(&self) {
        self.interrupts.fetch_add(1, Ordering::Relaxed);
        self.wq.wake_all();
    }
}

impl Namespace {
    fn read_all(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), VfsError> {
        for (lba, buf) in reqs.iter() {
            block::check_range(self.sectors, *lba, buf.len())?;
        }
        let mut slots = Vec::new();
        let mut res = Ok(());
        'outer: for (lba, buf) in reqs.iter_mut() {
            let mut lba = *lba;
            for part in buf.chunks_mut(self.ctrl.max_transfer) {
                match self.ctrl.submit_read(self.nsid, lba, part) {
                    Ok(s) => slots.push(s),
                    Err(e) => {
                        res = Err(e);
                        break 'outer;
                    }
                }
                lba += (part.len() / SECTOR) as u64;
            }
        }
        for s in slots {
            let r = self.ctrl.complete(s);
            if res.is_ok() {
                res = r;
            }
        }
        res
    }
}

impl BlockDevice for Namespace {
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

static CONTROLLERS: IrqMutex<Vec<&'static Controller>> = IrqMutex::new(Vec::new());

fn irq_handler<const N: usize>(_frame: &mut TrapFrame) {
    let c = CONTROLLERS.lock().get(N).copied();
    if let Some(c) = c {
        c.on_interrupt();
    }
}

const HANDLERS: [crate::trap::IrqHandler; MAX_CONTROLLERS] = [irq_handler::<0>, irq_handler::<1>];

/// Polls until `f` holds or `ms` milliseconds pass.
fn poll_until(ms: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = crate::time::since_boot_ns() + ms * 1_000_000;
    loop {
        if f() {
            return true;
        }
        if crate::time::since_boot_ns() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// Runs an admin command, polling for its completion (boot only).
fn admin(regs: &Regs, aq: &mut QueuePair, mut cmd: [u32; 16]) -> Result<(), String> {
    cmd[0] |= 0xa5 << 16; // command id
    aq.submit(regs, &cmd);
    let mut got = None;
    if !poll_until(5_000, || {
        got = aq.next_completion();
        got.is_some()
    }) {
        return Err("admin command timed out".into());
    }
    aq.ring_cq(regs);
    match got {
        Some((_, 0)) => Ok(()),
        Some((_, s)) => Err(status_text(s)),
        None => Err("no completion".into()),
    }
}

fn init_one(root: &mut PciRoot<pci::PortCam>, df: DeviceFunction) -> Result<(), String> {
    let location = alloc::format!("nvme {df}");
    let index = CONTROLLERS.lock().len();
    if index >= MAX_CONTROLLERS {
        return Err(alloc::format!("more than {MAX_CONTROLLERS} controllers"));
    }
    pci::assign_bars(root, df);
    let bar = pci::bar_address(df, 0).ok_or("no BAR0")?;
    let bar0 = Mmio::map(bar, 0x2000).map_err(|_| "cannot map BAR0")?;
    let mut regs = Regs {
        mmio: bar0.leak(),
        dstrd: 0,
    };
    let cap = regs.read64(REG_CAP);
    regs.dstrd = ((cap >> 32) & 0xf) as u32;
    let timeout_ms = ((cap >> 24) & 0xff).max(1) * 500;
    let mqes = (cap & 0xffff) as u16 + 1;
    if mqes < QUEUE_ENTRIES {
        return Err(alloc::format!("queues of {mqes} entries are too small"));
    }
    if (cap >> 48) & 0xf != 0 {
        return Err("4 KiB pages are not supported by the controller".into());
    }
    // Reset: disable, wait for not ready.
    regs.write32(REG_CC, 0);
    if !poll_until(timeout_ms, || regs.read32(REG_CSTS) & 1 == 0) {
        return Err("controller does not reset".into());
    }
    let mut aq = QueuePair::new(0).ok_or("no memory")?;
    let n = u32::from(QUEUE_ENTRIES - 1);
    regs.write32(REG_AQA, n << 16 | n);
    regs.write64(REG_ASQ, aq.sq.phys());
    regs.write64(REG_ACQ, aq.cq.phys());
    // Enable: 4 KiB pages, NVM command set, 64-byte SQ and 16-byte CQ entries.
    regs.write32(REG_CC, 1 | 6 << 16 | 4 << 20);
    if !poll_until(timeout_ms, || regs.read32(REG_CSTS) & 3 != 0) || regs.read32(REG_CSTS) & 2 != 0
    {
        return Err("controller does not become ready".into());
    }
    let ident = DmaBuffer::alloc(1).ok_or("no memory")?;
    // IDENTIFY controller (CNS 1).
    let mut cmd = [0u32; 16];
    cmd[0] = u32::from(OP_ADMIN_IDENTIFY);
    cmd[6] = ident.phys() as u32;
    cmd[7] = (ident.phys() >> 32) as u32;
    cmd[10] = 1;
    admin(&regs, &mut aq, cmd).map_err(|e| alloc::format!("IDENTIFY controller: {e}"))?;
    // The command that filled the identify page has completed.
    let id = ident.as_slice();
    let model = String::from(core::str::from_utf8(&id[24..64]).unwrap_or("?").trim());
    let mdts = id[77];
    let nn = u32::from_le_bytes([id[516], id[517], id[518], id[519]]);
    let max_transfer = if mdts == 0 {
        MAX_TRANSFER
    } else {
        MAX_TRANSFER.min((PAGE as usize) << mdts)
    };
    // MSI-X before the I/O queues: QEMU (and the spec's model) binds a
    // completion queue's vector when the queue is created, so a vector
    // enabled later would never fire. The handler finds nothing until the
    // controller is registered below.
    let vector = match crate::irq::claim_vector(HANDLERS[index]) {
        Ok(v) if pci::enable_msix(df, 0, v) => Some(v),
        _ => None,
    };
    // The I/O queue pair 1, interrupting through MSI-X entry 0.
    let io = QueuePair::new(1).ok_or("no memory")?;
    let mut cmd = [0u32; 16];
    cmd[0] = u32::from(OP_ADMIN_CREATE_CQ);
    cmd[6] = io.cq.phys() as u32;
    cmd[7] = (io.cq.phys() >> 32) as u32;
    cmd[10] = n << 16 | 1;
    cmd[11] = 1 << 1 | 1; // vector 0, interrupts enabled, physically contiguous
    admin(&regs, &mut aq, cmd).map_err(|e| alloc::format!("CREATE I/O CQ: {e}"))?;
    let mut cmd = [0u32; 16];
    cmd[0] = u32::from(OP_ADMIN_CREATE_SQ);
    cmd[6] = io.sq.phys() as u32;
    cmd[7] = (io.sq.phys() >> 32) as u32;
    cmd[10] = n << 16 | 1;
    cmd[11] = 1 << 16 | 1; // CQ 1, physically contiguous
    admin(&regs, &mut aq, cmd).map_err(|e| alloc::format!("CREATE I/O SQ: {e}"))?;
    let mut prp_lists = Vec::with_capacity(SLOTS);
    for _ in 0..SLOTS {
        prp_lists.push(DmaBuffer::alloc(1).ok_or("no memory")?);
    }
    let ctrl: &'static Controller = Box::leak(Box::new(Controller {
        regs,
        inner: IrqMutex::new(Inner {
            io,
            busy: [false; SLOTS],
            ids: [0; SLOTS],
            prp_lists,
            completed: Vec::with_capacity(SLOTS),
            next_id: 0,
        }),
        wq: WaitQueue::new(),
        irq_on: AtomicBool::new(false),
        location,
        interrupts: AtomicU64::new(0),
        max_transfer,
    }));
    CONTROLLERS.lock().push(ctrl);
    if let Some(v) = vector {
        ctrl.irq_on.store(true, Ordering::Release);
        log::debug!("{}: vector {v}", ctrl.location);
    } else {
        log::warn!("{}: no MSI-X interrupt, polling", ctrl.location);
    }
    log::debug!(
        "{}: '{model}', {nn} namespace(s), max transfer {max_transfer}",
        ctrl.location
    );
    // IDENTIFY each namespace (CNS 0).
    for nsid in 1..=nn.min(MAX_NAMESPACES) {
        let mut cmd = [0u32; 16];
        cmd[0] = u32::from(OP_ADMIN_IDENTIFY);
        cmd[1] = nsid;
        cmd[6] = ident.phys() as u32;
        cmd[7] = (ident.phys() >> 32) as u32;
        if let Err(e) = admin(&regs, &mut aq, cmd) {
            log::warn!("{}: IDENTIFY namespace {nsid}: {e}", ctrl.location);
            continue;
        }
        // Refilled by the completed command.
        let ns = ident.as_slice();
        let nsze = u64::from_le_bytes(ns[0..8].try_into().unwrap_or([0; 8]));
        if nsze == 0 {
            continue;
        }
        let format = (ns[26] & 0xf) as usize;
        let lbads = ns[128 + 4 * format + 2];
        if lbads != 9 {
            log::warn!(
                "{} namespace {nsid}: {}-byte blocks are not supported",
                ctrl.location,
                1u64 << lbads.min(63)
            );
            continue;
        }
        let disk: &'static Namespace = Box::leak(Box::new(Namespace {
            ctrl,
            nsid,
            sectors: nsze,
            location: alloc::format!("{} namespace {nsid}", ctrl.location),
        }));
        log::info!("nvme: {} KiB at {}", nsze / 2, disk.location);
        block::register(disk);
    }
    ident.free();
    Ok(())
}

/// Claims every NVMe controller on PCI and registers its namespaces.
pub fn init() {
    if !pci::present() {
        return;
    }
    let mut root = PciRoot::new(pci::PortCam);
    for f in pci::enumerate(&root) {
        if (f.info.class, f.info.subclass, f.info.prog_if) != (0x01, 0x08, 0x02) {
            continue;
        }
        if let Err(e) = init_one(&mut root, f.df) {
            log::warn!("nvme {}: {e}", f.df);
        }
    }
}
