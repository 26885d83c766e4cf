//! virtio-net, as a `uk_net::Nic`.
//!
//! Built on `virtio-drivers`' transports and `VirtQueue`, with the buffer
//! management done here: receive and transmit buffers are slots of 2 KiB in
//! DMA frames (identity mapped and physically contiguous, so the device reads
//! and writes them in place; nothing is bounced). Received frames are handed
//! to the stack as tokens pointing into the ring's own buffer; released
//! buffers are re-posted in one batch with one notification ([`Nic::refill`]);
//! transmitted frames are built in place in a ring buffer and the device is
//! notified once per batch ([`Nic::flush_tx`]).
//!
//! TCP segmentation offload: when the device offers `HOST_TSO4` with `CSUM`
//! and the guest has the memory for it, a pool of large transmit buffers
//! takes TCP frames of up to 64 KiB that the uk-tcp engine builds ([`Nic::transmit_tso`]);
//! the virtio-net header asks the device (QEMU's tap backend) to cut them
//! into MSS-sized segments.

use alloc::vec::Vec;
use core::ops::Deref;

use bitflags::bitflags;
use uk_net::Nic;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{SomeTransport, Transport};

use super::{KernelHal, NoEventIdx};
use crate::mm::{self, PAGE};

/// Descriptors per queue. 64 receive + 64 transmit buffers of 2 KiB: 256 KiB.
const QUEUE_SIZE: usize = 64;
const BUF_SIZE: usize = 2048;
const QUEUE_RX: u16 = 0;
const QUEUE_TX: u16 = 1;
/// `virtio_net_hdr` with `num_buffers` (VIRTIO_F_VERSION_1); legacy
/// devices (QEMU's virtio-mmio by default) use the 10-byte header.
const HDR_MODERN: usize = 12;
const HDR_LEGACY: usize = 10;
/// The largest TCP/IPv4 frame handed to the device for segmentation: an IP
/// packet of 64 KiB - 1 and its Ethernet header.
const TSO_MAX_FRAME: usize = 14 + 65535;
/// Large transmit buffers (17 pages: `TSO_MAX_FRAME` and the virtio-net header).
const TSO_BUFS: usize = 16;
const TSO_BUF_PAGES: u64 = 17;
/// TSO is negotiated only with at least this much RAM (a 64 MiB guest):
/// the large buffers take 1.1 MiB, and small guests keep their memory.
const TSO_MIN_RAM: u64 = 56 << 20;
/// Transmit slots at or above this index are large (TSO) buffers.
const LARGE: u16 = QUEUE_SIZE as u16;

bitflags! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Features: u64 {
        const CSUM = 1 << 0;
        const MAC = 1 << 5;
        const HOST_TSO4 = 1 << 11;
        const STATUS = 1 << 16;
        const RING_EVENT_IDX = 1 << 29;
        const VERSION_1 = 1 << 32;
    }
}

/// A region of DMA buffers, `BUF_SIZE` each.
struct Buffers {
    base: u64,
    count: usize,
}

impl Buffers {
    fn new(count: usize) -> Option<Buffers> {
        let pages = (count * BUF_SIZE) as u64 / PAGE;
        let base = mm::alloc_dma(pages).ok()?;
        Some(Buffers { base, count })
    }

    fn slot(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.count);
        (self.base + (i * BUF_SIZE) as u64) as *mut u8
    }

    #[allow(clippy::mut_from_ref)]
    fn buf(&self, i: usize) -> &mut [u8] {
        // SAFETY: slot `i` is a BUF_SIZE region of DMA memory owned by this
        // driver; the driver hands each slot to at most one user at a time
        // (the device, the stack's Rx token, or a transmit in progress).
        unsafe { core::slice::from_raw_parts_mut(self.slot(i), BUF_SIZE) }
    }
}

/// Large transmit buffers for TSO, each physically contiguous.
struct LargeBuffers {
    bases: Vec<u64>,
}

impl LargeBuffers {
    fn new(count: usize) -> Option<LargeBuffers> {
        let mut bases = Vec::with_capacity(count);
        for _ in 0..count {
            match mm::alloc_dma(TSO_BUF_PAGES) {
                Ok(b) => bases.push(b),
                Err(_) => {
                    for b in bases {
                        mm::free_dma(b, TSO_BUF_PAGES);
                    }
                    return None;
                }
            }
        }
        Some(LargeBuffers { bases })
    }

    #[allow(clippy::mut_from_ref)]
    fn buf(&self, i: usize) -> &mut [u8] {
        // SAFETY: buffer `i` is TSO_BUF_PAGES of DMA memory owned by this
        // driver; each is handed to at most one user at a time (the device
        // or a transmit in progress).
        unsafe {
            core::slice::from_raw_parts_mut(
                self.bases[i] as *mut u8,
                (TSO_BUF_PAGES * PAGE) as usize,
            )
        }
    }
}

/// The transmit buffer of a slot (`LARGE + i` for large buffer `i`).
fn tx_buf<'a>(small: &'a Buffers, large: Option<&'a LargeBuffers>, slot: u16) -> &'a mut [u8] {
    match (slot.checked_sub(LARGE), large) {
        (Some(i), Some(large)) => large.buf(i as usize),
        _ => small.buf(slot as usize),
    }
}

/// A received frame: a view into a receive buffer until released.
pub struct RxFrame {
    slot: usize,
    ptr: *const u8,
    len: usize,
}

impl Deref for RxFrame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` lies in the receive slot that the device
        // filled and that stays with this token until it is released.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

// SAFETY: the frame points into DMA memory owned by the driver, not shared
// with other threads while the token exists.
unsafe impl Send for RxFrame {}

/// The virtio-net device.
pub struct VirtioNet {
    transport: NoEventIdx<SomeTransport<'static>>,
    rx: VirtQueue<KernelHal, QUEUE_SIZE>,
    tx: VirtQueue<KernelHal, QUEUE_SIZE>,
    rx_bufs: Buffers,
    tx_bufs: Buffers,
    /// Large transmit buffers, present when TSO is in use.
    tso_bufs: Option<LargeBuffers>,
    /// Receive slot of each descriptor token in flight.
    rx_token_slot: [u16; QUEUE_SIZE],
    /// Transmit slot (`LARGE + i` for large buffer `i`) and length of each
    /// token in flight.
    tx_token_slot: [(u16, u32); QUEUE_SIZE],
    rx_free: Vec<u16>,
    tx_free: Vec<u16>,
    /// Free large transmit buffers (indices into `tso_bufs`).
    tso_free: Vec<u16>,
    tx_pending_notify: bool,
    hdr: usize,
    /// The device completes TCP/UDP checksums (VIRTIO_NET_F_CSUM).
    csum_offload: bool,
    mac: [u8; 6],
    /// Frames dropped because the transmit ring was full.
    pub tx_ring_full: u64,
    /// Frames handed to the device for TCP segmentation (GSO type TCPV4).
    pub tx_tso_frames: u64,
}

// SAFETY: the device is owned by one lock in the network layer; its raw
// pointers refer to DMA memory and MMIO that only this value touches.
unsafe impl Send for VirtioNet {}

impl VirtioNet {
    /// Initialises the device and posts every receive buffer.
    pub fn new(transport: SomeTransport<'static>) -> Result<VirtioNet, &'static str> {
        let mut transport = NoEventIdx(transport);
        // The transport hides RING_EVENT_IDX: see `NoEventIdx`.
        // TSO only where its buffers are affordable (not in a 4 MiB demo guest).
        let tso_mem = mm::stats().frames_total * PAGE >= TSO_MIN_RAM;
        let mut wanted = Features::CSUM
            | Features::MAC
            | Features::STATUS
            | Features::RING_EVENT_IDX
            | Features::VERSION_1;
        if tso_mem {
            wanted |= Features::HOST_TSO4;
        }
        let features = transport.begin_init(wanted);
        let hdr = if features.contains(Features::VERSION_1) {
            HDR_MODERN
        } else {
            HDR_LEGACY
        };
        let mut mac = [0u8; 6];
        if features.contains(Features::MAC) {
            for (i, b) in mac.iter_mut().enumerate() {
                *b = transport
                    .read_config_space::<u8>(i)
                    .map_err(|_| "cannot read the MAC")?;
            }
        } else {
            mac = [0x02, 0x75, 0x6b, 0x00, 0x00, 0x01]; // locally administered
        }
        let event_idx = features.contains(Features::RING_EVENT_IDX);
        let rx = VirtQueue::new(&mut transport, QUEUE_RX, false, event_idx)
            .map_err(|_| "cannot set up the receive queue")?;
        let tx = VirtQueue::new(&mut transport, QUEUE_TX, false, event_idx)
            .map_err(|_| "cannot set up the transmit queue")?;
        transport.finish_init();
        let rx_bufs = Buffers::new(QUEUE_SIZE).ok_or("no memory for receive buffers")?;
        let tx_bufs = Buffers::new(QUEUE_SIZE).ok_or("no memory for transmit buffers")?;
        // TSO needs the device to complete checksums too; without memory for
        // the large buffers it is simply not used.
        let tso_bufs = if features.contains(Features::HOST_TSO4 | Features::CSUM) {
            LargeBuffers::new(TSO_BUFS)
        } else {
            None
        };
        let tso_free = match tso_bufs {
            Some(_) => (0..TSO_BUFS as u16).rev().collect(),
            None => Vec::new(),
        };
        let mut dev = VirtioNet {
            transport,
            rx,
            tx,
            rx_bufs,
            tx_bufs,
            tso_bufs,
            rx_token_slot: [0; QUEUE_SIZE],
            tx_token_slot: [(0, 0); QUEUE_SIZE],
            rx_free: (0..QUEUE_SIZE as u16).collect(),
            tx_free: (0..QUEUE_SIZE as u16).rev().collect(),
            tso_free,
            tx_pending_notify: false,
            hdr,
            csum_offload: features.contains(Features::CSUM),
            mac,
            tx_ring_full: 0,
            tx_tso_frames: 0,
        };
        dev.refill();
        Ok(dev)
    }

    /// Acknowledges the device's interrupt (reads its ISR status).
    pub fn ack_interrupt(&mut self) {
        let _ = self.transport.ack_interrupt();
    }

    /// The queues' state, for the diagnostic dump.
    pub fn debug_line(&mut self) -> alloc::string::String {
        alloc::format!(
            "rx_free_slots={} rx_free_desc={} rx_used_pending={} tx_free_slots={} tso_free_slots={} tx_free_desc={} tx_used_pending={} tx_pending_notify={}",
            self.rx_free.len(),
            self.rx.available_desc(),
            self.rx.peek_used().is_some(),
            self.tx_free.len(),
            self.tso_free.len(),
            self.tx.available_desc(),
            self.tx.peek_used().is_some(),
            self.tx_pending_notify,
        )
    }

    /// Whether TCP segmentation offload is in use.
    pub fn tso(&self) -> bool {
        self.tso_bufs.is_some()
    }

    /// Reclaims transmit buffers the device has finished with.
    fn reclaim_tx(&mut self) {
        while let Some(token) = self.tx.peek_used() {
            let (slot, len) = self.tx_token_slot[token as usize];
            let buf = &tx_buf(&self.tx_bufs, self.tso_bufs.as_ref(), slot)[..len as usize];
            // SAFETY: `buf` is exactly the buffer added with this token.
            if unsafe { self.tx.pop_used(token, &[buf], &mut []) }.is_err() {
                break;
            }
            match slot.checked_sub(LARGE) {
                Some(i) => self.tso_free.push(i),
                None => self.tx_free.push(slot),
            }
        }
    }

    /// Queues a frame of `len` bytes built in place by `f` in transmit slot
    /// `slot` (already taken from its free list), with checksum offload and,
    /// with `gso_size`, TCP segmentation by the device.
    fn queue_tx(
        &mut self,
        slot: u16,
        len: usize,
        gso_size: Option<u16>,
        f: impl FnOnce(&mut [u8]),
    ) -> bool {
        if self.tx.available_desc() == 0 {
            self.free_tx_slot(slot);
            self.tx_ring_full += 1;
            return false;
        }
        let hdr = self.hdr;
        let buf = tx_buf(&self.tx_bufs, self.tso_bufs.as_ref(), slot);
        buf[..hdr].fill(0);
        // The stack writes the frame (headers and payload) into the device
        // buffer: the socket → device copy, checksummed on the way.
        f(&mut buf[hdr..hdr + len]);
        crate::io::COPIES.add(&crate::io::COPIES.socket_to_device, len);
        let (head, frame) = buf.split_at_mut(hdr);
        let frame = &mut frame[..len];
        let offloaded = self.csum_offload && request_l4_checksum(head, frame);
        if !offloaded {
            crate::io::COPIES.add(&crate::io::COPIES.checksummed, len);
        }
        if let Some(mss) = gso_size {
            // Only TCP/IPv4 frames come here (uk-net asks for segmentation
            // of TCP segments only); anything else is not queued.
            if !(offloaded && request_tso(head, frame, mss)) {
                self.free_tx_slot(slot);
                return false;
            }
            self.tx_tso_frames += 1;
        }
        let frame = &buf[..hdr + len];
        // SAFETY: the slot was free; the device reads it until the token
        // comes back through the used ring (reclaim_tx).
        match unsafe { self.tx.add(&[frame], &mut []) } {
            Ok(token) => {
                self.tx_token_slot[token as usize] = (slot, (hdr + len) as u32);
                self.tx_pending_notify = true;
                true
            }
            Err(_) => {
                self.free_tx_slot(slot);
                self.tx_ring_full += 1;
                false
            }
        }
    }

    /// True when the next frame may find no room: no free descriptor in the
    /// transmit queue (the small and large slot pools together outnumber its
    /// descriptors), or, with TSO, no free slot in either pool (the next
    /// frame may be a large one).
    fn tx_full(&self) -> bool {
        self.tx.available_desc() == 0
            || self.tx_free.is_empty()
            || (self.tso_bufs.is_some() && self.tso_free.is_empty())
    }

    fn free_tx_slot(&mut self, slot: u16) {
        match slot.checked_sub(LARGE) {
            Some(i) => self.tso_free.push(i),
            None => self.tx_free.push(slot),
        }
    }
}

impl Nic for VirtioNet {
    type Rx = RxFrame;

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        1500
    }

    fn receive(&mut self) -> Option<RxFrame> {
        let token = self.rx.peek_used()?;
        let slot = self.rx_token_slot[token as usize] as usize;
        let buf = self.rx_bufs.buf(slot);
        // SAFETY: `buf` is the buffer posted with this token.
        let len = match unsafe { self.rx.pop_used(token, &[], &mut [buf]) } {
            Ok(l) => l as usize,
            Err(_) => return None,
        };
        let hdr = self.hdr;
        if len < hdr || len > BUF_SIZE {
            self.rx_free.push(slot as u16);
            return self.receive();
        }
        Some(RxFrame {
            slot,
            ptr: self.rx_bufs.slot(slot).wrapping_add(hdr),
            len: len - hdr,
        })
    }

    fn release(&mut self, rx: RxFrame) {
        self.rx_free.push(rx.slot as u16);
    }

    fn refill(&mut self) {
        let mut posted = false;
        while let Some(slot) = self.rx_free.pop() {
            let buf = self.rx_bufs.buf(slot as usize);
            // SAFETY: the slot is free (not held by the device or a token);
            // the device owns it until it comes back through the used ring.
            match unsafe { self.rx.add(&[], &mut [buf]) } {
                Ok(token) => {
                    self.rx_token_slot[token as usize] = slot;
                    posted = true;
                }
                Err(_) => {
                    self.rx_free.push(slot);
                    break;
                }
            }
        }
        if posted && self.rx.should_notify() {
            self.transport.notify(QUEUE_RX);
        }
    }

    fn can_transmit(&mut self) -> bool {
        if self.tx_full() {
            self.reclaim_tx();
        }
        !self.tx_full()
    }

    fn transmit(&mut self, len: usize, f: impl FnOnce(&mut [u8])) -> bool {
        if self.tx_free.is_empty() || self.tx.available_desc() == 0 {
            self.reclaim_tx();
        }
        if len + self.hdr > BUF_SIZE {
            return false;
        }
        let Some(slot) = self.tx_free.pop() else {
            self.tx_ring_full += 1;
            return false;
        };
        self.queue_tx(slot, len, None, f)
    }

    fn tso_max_frame(&self) -> Option<usize> {
        self.tso_bufs.as_ref().map(|_| TSO_MAX_FRAME)
    }

    fn transmit_tso(&mut self, len: usize, mss: u16, f: impl FnOnce(&mut [u8])) -> bool {
        if self.tso_bufs.is_none() || len > TSO_MAX_FRAME {
            return false;
        }
        if self.tso_free.is_empty() || self.tx.available_desc() == 0 {
            self.reclaim_tx();
        }
        let Some(i) = self.tso_free.pop() else {
            self.tx_ring_full += 1;
            return false;
        };
        self.queue_tx(LARGE + i, len, Some(mss), f)
    }

    fn tx_checksum_offload(&self) -> bool {
        self.csum_offload
    }

    fn flush_tx(&mut self) {
        if self.tx_pending_notify {
            self.tx_pending_notify = false;
            if self.tx.should_notify() {
                self.transport.notify(QUEUE_TX);
            }
        }
        self.reclaim_tx();
    }
}

/// Asks the device (through the virtio-net header `head`, whose checksum
/// fields [`request_l4_checksum`] filled) to cut the TCP/IPv4 `frame` into
/// segments of `mss` payload bytes. False if `frame` is not TCP/IPv4.
fn request_tso(head: &mut [u8], frame: &[u8], mss: u16) -> bool {
    const GSO_TCPV4: u8 = 1;
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
        return false;
    }
    let ihl = ((frame[14] & 0x0f) as usize) * 4;
    let Some(&off) = frame.get(14 + ihl + 12) else {
        return false;
    };
    let hdr_len = 14 + ihl + ((off >> 4) as usize) * 4;
    if hdr_len > frame.len() || mss == 0 {
        return false;
    }
    head[1] = GSO_TCPV4;
    head[2..4].copy_from_slice(&(hdr_len as u16).to_le_bytes());
    head[4..6].copy_from_slice(&mss.to_le_bytes());
    true
}

/// For an IPv4 TCP or UDP frame whose L4 checksum the stack left out,
/// stores the pseudo-header sum in the checksum field and asks the device
/// (through the virtio-net header `head`) to complete it. Returns false for
/// frames the device need not touch (ARP, ICMP, the IP header's own sum,
/// which the stack computed).
fn request_l4_checksum(head: &mut [u8], frame: &mut [u8]) -> bool {
    const NEEDS_CSUM: u8 = 1;
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return false;
    }
    let ip = &frame[14..];
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || 14 + total > frame.len() {
        return false;
    }
    let proto = ip[9];
    let csum_offset = match proto {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    let l4_len = total - ihl;
    if l4_len < csum_offset + 2 {
        return false;
    }
    // Pseudo header: source, destination, protocol, L4 length (not inverted).
    let mut sum: u32 = 0;
    for w in ip[12..20].chunks_exact(2) {
        sum += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    sum += proto as u32 + l4_len as u32;
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let at = 14 + ihl + csum_offset;
    frame[at..at + 2].copy_from_slice(&(sum as u16).to_be_bytes());
    head[0] = NEEDS_CSUM;
    head[6..8].copy_from_slice(&((14 + ihl) as u16).to_le_bytes());
    head[8..10].copy_from_slice(&(csum_offset as u16).to_le_bytes());
    true
}
