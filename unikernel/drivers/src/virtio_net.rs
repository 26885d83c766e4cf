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
//! and the guest has the memory for it, TCP frames of up to 64 KiB go to
//! the device, and the virtio-net header asks it (QEMU's tap backend) to cut
//! them into MSS-sized segments. A pool of large transmit buffers takes such
//! frames when they are built by copying ([`Nic::transmit_tso`]).
//!
//! Scatter-gather transmit ([`Nic::transmit_sg`]): a TCP segment is posted
//! as one descriptor chain: a small transmit slot with the virtio-net header
//! and the Ethernet/IPv4/TCP headers, then the payload fragments in place
//! (page-cache pages for `sendfile`, the socket's own buffers for `write`),
//! one descriptor per physically contiguous piece (fragments are cut at
//! 4 KiB page boundaries: heap buffers are only virtually contiguous). The
//! chain keeps clones of its fragments until the device returns it through
//! the used ring (`VirtioNet::reclaim_tx`, on every `Nic::flush_tx`),
//! so memory is released only once acknowledged *and* read by the device.
//! The chain owns its pieces ([`uk_frame::virtio::PayloadPiece`]) while the
//! device holds it: the framework's queue gives them back from `pop_used`.
//!
//! Multiqueue ([`VirtioNet::new_multi`]): on virtio-pci, with
//! `VIRTIO_NET_F_MQ`, the device has up to `max_virtqueue_pairs` receive/
//! transmit queue pairs (receive `2i`, transmit `2i + 1`, the control queue
//! after the last pair); the driver sets the number in use with one
//! control-queue command and gives each pair its own `VirtioNet`, which
//! owns the pair's queues and buffers (usable from its own CPU). The pairs
//! share the transport only to ring doorbells, under a lock.

use alloc::vec::Vec;
use core::ops::Deref;

use bitflags::bitflags;
use uk_frame::dma::DmaBuffer;
use uk_frame::sync::IrqMutex;
use uk_frame::virtio::{Chain, MAX_FRAGMENTS, PayloadPiece, Queue, Request};
use uk_net::{CopyCounters, CopyStage, Fragment, Nic, TcpPayload};
use virtio_drivers::transport::{SomeTransport, Transport};

use super::NoEventIdx;
use crate::mm::{self, PAGE};

/// Descriptors per queue. 64 receive + 64 transmit buffers of 2 KiB: 256 KiB.
const QUEUE_SIZE: usize = 64;
const BUF_SIZE: usize = 2048;
/// `virtio_net_hdr` with `num_buffers` (VIRTIO_F_VERSION_1); legacy
/// devices (QEMU's virtio-mmio by default) use the 10-byte header.
const HDR_MODERN: usize = 12;
const HDR_LEGACY: usize = 10;
/// The largest TCP/IPv4 frame handed to the device for segmentation: an IP
/// packet of 64 KiB - 1 and its Ethernet header.
const TSO_MAX_FRAME: usize = 14 + 65535;
/// Large transmit buffers (17 pages: `TSO_MAX_FRAME` and the virtio-net
/// header): 16 on pair 0, 4 on each other pair.
const TSO_BUFS: usize = 16;
const TSO_BUFS_EXTRA: usize = 4;
const TSO_BUF_PAGES: u64 = 17;
/// TSO is negotiated only with at least this much RAM (a 64 MiB guest):
/// the large buffers take 1.1 MiB, and small guests keep their memory.
const TSO_MIN_RAM: u64 = 56 << 20;
/// Fragments outside the identity map are cut where a 4 KiB page ends (each
/// piece is then physically contiguous: mapped buffers are only virtually
/// contiguous).
const PIECE_ALIGN: usize = 4096;

/// Payload the driver copies itself: a scatter-gather list too long for
/// one chain, built into a transmit buffer (socket → device).
pub static DEVICE_COPIES: CopyCounters = CopyCounters::new();

bitflags! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Features: u64 {
        const CSUM = 1 << 0;
        const MAC = 1 << 5;
        const HOST_TSO4 = 1 << 11;
        const STATUS = 1 << 16;
        const CTRL_VQ = 1 << 17;
        const MQ = 1 << 22;
        const RING_EVENT_IDX = 1 << 29;
        const VERSION_1 = 1 << 32;
    }
}

/// `count` DMA buffers of `BUF_SIZE` bytes, cut from one allocation, in
/// the order the free lists hand them out.
fn small_buffers(count: usize) -> Option<Vec<DmaBuffer>> {
    let pages = (count * BUF_SIZE) as u64 / PAGE;
    let mut bufs = DmaBuffer::alloc(pages)?.split(BUF_SIZE);
    bufs.reverse();
    Some(bufs)
}

/// Large transmit buffers for TSO, each physically contiguous.
fn large_buffers(count: usize) -> Option<Vec<DmaBuffer>> {
    let mut bufs = Vec::with_capacity(count);
    for _ in 0..count {
        bufs.push(DmaBuffer::alloc(TSO_BUF_PAGES)?);
    }
    Some(bufs)
}

/// A transmit descriptor chain: the virtio-net header and the frame (or,
/// for a scatter-gather transmit, its headers) in one buffer, then the
/// payload pieces.
type TxChain = Chain<DmaBuffer, PayloadPiece>;

/// A received frame: the receive buffer the device filled, until released.
pub struct RxFrame {
    buf: DmaBuffer,
    start: u16,
    len: u16,
}

impl Deref for RxFrame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let start = usize::from(self.start);
        &self.buf.as_slice()[start..start + usize::from(self.len)]
    }
}

/// The transport, shared by a device's queue pairs for doorbells (it lives
/// as long as the VM).
type SharedTransport = &'static IrqMutex<NoEventIdx<SomeTransport<'static>>>;

/// One queue pair of the virtio-net device (the device, with one pair).
pub struct VirtioNet {
    transport: SharedTransport,
    /// Which pair: its receive queue is `2 * pair`, its transmit queue the next.
    pair: usize,
    /// The queues own the buffers the device holds.
    /// (A receive buffer is a `Request` the device only writes: the same
    /// type as a control-queue command, one queue type less in the image.)
    rx: Queue<Request<DmaBuffer>, QUEUE_SIZE>,
    tx: Queue<TxChain, QUEUE_SIZE>,
    /// Whether TSO is in use (large transmit buffers exist).
    tso: bool,
    rx_free: Vec<DmaBuffer>,
    tx_free: Vec<DmaBuffer>,
    /// Free large transmit buffers.
    tso_free: Vec<DmaBuffer>,
    tx_pending_notify: bool,
    /// Whether the device interrupts when it finishes with a transmit
    /// chain: only while the ring is full (someone must poll again when it
    /// drains); otherwise finished chains are taken back at the next flush.
    tx_interrupts: bool,
    /// While set, `flush_tx` leaves the device's doorbell for [`VirtioNet::kick_tx`].
    hold_notify: bool,
    hdr: usize,
    /// The device completes TCP/UDP checksums (VIRTIO_NET_F_CSUM).
    csum_offload: bool,
    mac: [u8; 6],
    /// Frames dropped because the transmit ring was full.
    pub tx_ring_full: u64,
    /// Frames handed to the device for TCP segmentation (GSO type TCPV4).
    pub tx_tso_frames: u64,
}

impl VirtioNet {
    /// Initialises the device with one queue pair and posts every receive
    /// buffer.
    pub fn new(transport: SomeTransport<'static>) -> Result<VirtioNet, &'static str> {
        Self::new_multi(transport, 1)?.pop().ok_or("no queue pair")
    }

    /// Initialises the device with up to `max_pairs` queue pairs (fewer if
    /// the device offers fewer; one on virtio-mmio, or when the device
    /// refuses the count) and posts every receive buffer: one `VirtioNet`
    /// per pair, pair 0 first. With more than one, connect the interrupts
    /// with `connect_queue_irqs` (pair `i` on MSI-X entry `i`); size
    /// `max_pairs` with `queue_pairs_for`.
    pub fn new_multi(
        transport: SomeTransport<'static>,
        max_pairs: usize,
    ) -> Result<Vec<VirtioNet>, &'static str> {
        let pci = matches!(transport, SomeTransport::Pci(_));
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
        if max_pairs > 1 && pci {
            wanted |= Features::MQ | Features::CTRL_VQ;
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
        // max_virtqueue_pairs: config offset 8, little-endian (read by
        // bytes, as the MAC: one reader less in the image).
        let device_pairs = if features.contains(Features::MQ | Features::CTRL_VQ) {
            let byte = |i| usize::from(transport.read_config_space::<u8>(i).unwrap_or(0));
            byte(8) | byte(9) << 8
        } else {
            1
        };
        let pairs = max_pairs.min(device_pairs).max(1);
        let event_idx = features.contains(Features::RING_EVENT_IDX);
        let transport: SharedTransport =
            alloc::boxed::Box::leak(alloc::boxed::Box::new(IrqMutex::new(transport)));
        let tso = features.contains(Features::HOST_TSO4 | Features::CSUM);
        let mut devs = Vec::with_capacity(pairs);
        for pair in 0..pairs {
            let tso_bufs = match (tso, pair) {
                (false, _) => 0,
                (true, 0) => TSO_BUFS,
                (true, _) => TSO_BUFS_EXTRA,
            };
            match Self::one_pair(transport, pair, event_idx, tso_bufs) {
                Ok(mut dev) => {
                    dev.hdr = hdr;
                    dev.csum_offload = features.contains(Features::CSUM);
                    dev.mac = mac;
                    devs.push(dev);
                }
                Err(e) => {
                    // The device knows the rings set up so far: never free them.
                    core::mem::forget(devs);
                    return Err(e);
                }
            }
        }
        let mut t = transport.lock();
        let ctrl = if pairs > 1 {
            Queue::new(&mut *t, 2 * device_pairs as u16, false, false).ok()
        } else {
            None
        };
        t.finish_init();
        if pairs > 1 && !ctrl.is_some_and(|c| set_queue_pairs(&mut t, c, device_pairs, pairs)) {
            log::warn!("virtio-net: the device refused the queue pairs; using one");
            while devs.len() > 1 {
                // The device knows their rings: never free them.
                core::mem::forget(devs.pop());
            }
        }
        drop(t);
        if devs.len() > 1 {
            log::info!("virtio-net: {} queue pairs", devs.len());
        }
        for dev in &mut devs {
            dev.refill();
            dev.update_tx_interrupts();
        }
        Ok(devs)
    }

    /// Sets up queue pair `pair` and its buffers (`tso_bufs` large ones,
    /// if that many can be had). The caller fills in the header size, the
    /// checksum offload and the MAC.
    #[inline(never)]
    fn one_pair(
        transport: SharedTransport,
        pair: usize,
        event_idx: bool,
        tso_bufs: usize,
    ) -> Result<VirtioNet, &'static str> {
        let q = 2 * pair as u16;
        let rx = Queue::new(&mut *transport.lock(), q, false, event_idx)
            .map_err(|_| "cannot set up a receive queue")?;
        let tx = Queue::new(&mut *transport.lock(), q + 1, false, event_idx)
            .map_err(|_| "cannot set up a transmit queue")?;
        let mut rx_free = small_buffers(QUEUE_SIZE).ok_or("no memory for receive buffers")?;
        rx_free.reverse();
        let tx_free = small_buffers(QUEUE_SIZE).ok_or("no memory for transmit buffers")?;
        // TSO needs the device to complete checksums too; without memory
        // for the large buffers it is simply not used.
        let tso_free = if tso_bufs > 0 {
            large_buffers(tso_bufs)
        } else {
            None
        };
        Ok(VirtioNet {
            transport,
            pair,
            rx,
            tx,
            tso: tso_free.is_some(),
            rx_free,
            tx_free,
            tso_free: tso_free.unwrap_or_default(),
            tx_pending_notify: false,
            tx_interrupts: true,
            hold_notify: false,
            hdr: HDR_MODERN,
            csum_offload: false,
            mac: [0; 6],
            tx_ring_full: 0,
            tx_tso_frames: 0,
        })
    }

    /// Which queue pair this is (0 for the first).
    pub fn pair(&self) -> usize {
        self.pair
    }

    /// Rings the doorbell of this pair's receive (`tx` false) or transmit queue.
    fn notify(&self, tx: bool) {
        let queue = 2 * self.pair as u16 + u16::from(tx);
        self.transport.lock().notify(queue);
    }

    /// Turns receive interrupts off while the caller polls (they would only
    /// repeat what the poll finds) and back on before it sleeps. After
    /// turning them on, check [`VirtioNet::rx_pending`]: a frame that came
    /// in between raised no interrupt.
    pub fn set_rx_interrupts(&mut self, on: bool) {
        self.rx.set_interrupts(on);
    }

    /// Holds (or stops holding) the transmit doorbell: while held, frames
    /// queued by a poll wait in the ring until [`VirtioNet::kick_tx`], so
    /// that the responses of one pass of an event loop cost the device one
    /// notification (each is an exit to the hypervisor).
    pub fn hold_tx_notify(&mut self, on: bool) {
        self.hold_notify = on;
    }

    /// Whether queued frames wait for the doorbell.
    pub fn tx_notify_held(&self) -> bool {
        self.tx_pending_notify
    }

    /// Rings the transmit doorbell for frames queued while it was held.
    pub fn kick_tx(&mut self) {
        if self.tx_pending_notify {
            self.tx_pending_notify = false;
            if self.tx.should_notify() {
                self.notify(true);
            }
        }
    }

    /// Whether a received frame waits in the ring.
    pub fn rx_pending(&self) -> bool {
        self.rx.has_used()
    }

    /// Transmit-completion interrupts on exactly while the ring is full:
    /// then the interrupt is what makes the stack poll (and send what it
    /// held back) once the device drains the ring.
    fn update_tx_interrupts(&mut self) {
        let full = self.tx_full();
        if full != self.tx_interrupts {
            self.tx_interrupts = full;
            self.tx.set_interrupts(full);
            if full {
                // A chain finished before the device saw the flag raised no
                // interrupt: take it back now.
                self.reclaim_tx();
                if !self.tx_full() {
                    self.tx_interrupts = false;
                    self.tx.set_interrupts(false);
                }
            }
        }
    }

    /// Acknowledges the device's interrupt (reads its ISR status).
    pub fn ack_interrupt(&mut self) {
        let _ = self.transport.lock().ack_interrupt();
    }

    /// The queues' state, for the diagnostic dump.
    pub fn debug_line(&mut self) -> alloc::string::String {
        alloc::format!(
            "rx_free_slots={} rx_free_desc={} rx_used_pending={} tx_free_slots={} tso_free_slots={} tx_free_desc={} tx_used_pending={} tx_pending_notify={}",
            self.rx_free.len(),
            self.rx.available_desc(),
            self.rx.has_used(),
            self.tx_free.len(),
            self.tso_free.len(),
            self.tx.available_desc(),
            self.tx.has_used(),
            self.tx_pending_notify,
        )
    }

    /// Whether TCP segmentation offload is in use.
    pub fn tso(&self) -> bool {
        self.tso
    }

    /// Reclaims transmit buffers the device has finished with.
    fn reclaim_tx(&mut self) {
        while let Some((chain, _)) = self.tx.pop_used() {
            let (buf, fragments) = chain.into_parts();
            self.free_tx_slot(buf);
            drop(fragments);
        }
    }

    /// Queues a frame of `len` bytes built in place by `f` in transmit buffer
    /// `slot` (already taken from its free list), with checksum offload and,
    /// with `gso_size`, TCP segmentation by the device.
    fn queue_tx(
        &mut self,
        mut slot: DmaBuffer,
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
        let buf = slot.as_mut_slice();
        buf[..hdr].fill(0);
        // The stack writes the frame (headers and payload) into the device
        // buffer (the socket → device copy, counted where it copies).
        f(&mut buf[hdr..hdr + len]);
        let (head, frame) = buf.split_at_mut(hdr);
        let frame = &mut frame[..len];
        let offloaded = self.csum_offload && request_l4_checksum(head, frame);
        if let Some(mss) = gso_size {
            // Only TCP/IPv4 frames come here (uk-net asks for segmentation
            // of TCP segments only); anything else is not queued.
            if !(offloaded && request_tso(head, frame, mss)) {
                self.free_tx_slot(slot);
                return false;
            }
            self.tx_tso_frames += 1;
        }
        // The queue owns the buffer until the device has read it (reclaim_tx).
        match self.tx.add(Chain::new(slot, hdr + len)) {
            Ok(_) => {
                self.tx_pending_notify = true;
                true
            }
            Err(chain) => {
                self.free_tx_slot(chain.into_parts().0);
                self.tx_ring_full += 1;
                false
            }
        }
    }

    /// Posts the header in transmit buffer `slot` (its first `head_len`
    /// bytes) and the payload `frags` cut into physically contiguous pieces
    /// as one descriptor chain; the queue owns the pieces (clones of the
    /// references) until the device returns the chain. False (nothing
    /// posted, the slot freed) when the ring has too few free descriptors.
    fn post_chain(
        &mut self,
        slot: DmaBuffer,
        head_len: usize,
        frags: &[Fragment<TcpPayload>],
        pieces_total: usize,
    ) -> bool {
        let mut chain = match Chain::try_with_capacity(slot, head_len, pieces_total) {
            Ok(c) => c,
            Err(slot) => {
                self.free_tx_slot(slot);
                return false;
            }
        };
        for f in frags {
            for (start, n) in pieces(f) {
                let Some(piece) = PayloadPiece::new(&f.data, start, n) else {
                    self.free_tx_slot(chain.into_parts().0);
                    return false;
                };
                if chain.push_joining(piece, 0, n).is_err() {
                    self.free_tx_slot(chain.into_parts().0);
                    return false;
                }
            }
        }
        match self.tx.add(chain) {
            Ok(_) => {
                self.tx_pending_notify = true;
                true
            }
            Err(chain) => {
                self.free_tx_slot(chain.into_parts().0);
                self.tx_ring_full += 1;
                false
            }
        }
    }

    /// A scatter-gather list too long for one chain: copied into a
    /// transmit buffer (counted as socket → device).
    fn transmit_copied(
        &mut self,
        header: &[u8],
        payload: &[Fragment<TcpPayload>],
        gso_mss: Option<u16>,
    ) -> bool {
        let len = header.len() + payload.iter().map(|f| f.len).sum::<usize>();
        let fill = |buf: &mut [u8]| {
            buf[..header.len()].copy_from_slice(header);
            let mut at = header.len();
            for f in payload {
                let b = f.bytes();
                DEVICE_COPIES.copy(CopyStage::SocketToDevice, &mut buf[at..at + b.len()], b);
                at += b.len();
            }
        };
        match gso_mss {
            Some(mss) => self.transmit_tso(len, mss, fill),
            None => self.transmit(len, fill),
        }
    }

    /// True when the next frame may find no room: no free descriptor in the
    /// transmit queue (the small and large slot pools together outnumber its
    /// descriptors), or, with TSO, no free slot in either pool (the next
    /// frame may be a large one).
    fn tx_full(&self) -> bool {
        self.tx.available_desc() == 0
            || self.tx_free.is_empty()
            || (self.tso && self.tso_free.is_empty())
    }

    fn free_tx_slot(&mut self, slot: DmaBuffer) {
        if slot.len() > BUF_SIZE {
            self.tso_free.push(slot);
        } else {
            self.tx_free.push(slot);
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
        let (Request { buf, .. }, len) = self.rx.pop_used()?;
        let len = len as usize;
        let hdr = self.hdr;
        if len < hdr || len > BUF_SIZE {
            self.rx_free.push(buf);
            return self.receive();
        }
        // Both fit: `len` is at most BUF_SIZE (checked above).
        Some(RxFrame {
            buf,
            start: hdr as u16,
            len: (len - hdr) as u16,
        })
    }

    fn release(&mut self, rx: RxFrame) {
        self.rx_free.push(rx.buf);
    }

    fn refill(&mut self) {
        let mut posted = false;
        while let Some(buf) = self.rx_free.pop() {
            // The queue owns the buffer until it comes back through the used
            // ring.
            match self.rx.add(Request { buf, out_len: 0 }) {
                Ok(_) => posted = true,
                Err(Request { buf, .. }) => {
                    self.rx_free.push(buf);
                    break;
                }
            }
        }
        if posted && self.rx.should_notify() {
            self.notify(false);
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
        self.tso.then_some(TSO_MAX_FRAME)
    }

    fn transmit_tso(&mut self, len: usize, mss: u16, f: impl FnOnce(&mut [u8])) -> bool {
        if !self.tso || len > TSO_MAX_FRAME {
            return false;
        }
        if self.tso_free.is_empty() || self.tx.available_desc() == 0 {
            self.reclaim_tx();
        }
        let Some(buf) = self.tso_free.pop() else {
            self.tx_ring_full += 1;
            return false;
        };
        self.queue_tx(buf, len, Some(mss), f)
    }

    fn tx_checksum_offload(&self) -> bool {
        self.csum_offload
    }

    fn tx_scatter_gather(&self) -> bool {
        true
    }

    fn transmit_sg(
        &mut self,
        header: &[u8],
        payload: &[Fragment<TcpPayload>],
        gso_mss: Option<u16>,
    ) -> bool {
        let hdr = self.hdr;
        if header.len() < 34 || hdr + header.len() > BUF_SIZE || payload.is_empty() {
            return false;
        }
        let Some(needed) = chain_descriptors(payload) else {
            return self.transmit_copied(header, payload, gso_mss);
        };
        if gso_mss.is_some() && !self.tso {
            return false;
        }
        if self.tx_free.is_empty() || self.tx.available_desc() < needed {
            self.reclaim_tx();
        }
        if self.tx.available_desc() < needed {
            self.tx_ring_full += 1;
            return false;
        }
        let Some(mut slot) = self.tx_free.pop() else {
            self.tx_ring_full += 1;
            return false;
        };
        let buf = slot.as_mut_slice();
        let (head, frame) = buf.split_at_mut(hdr);
        head.fill(0);
        frame[..header.len()].copy_from_slice(header);
        let ihl = usize::from(header[14] & 0x0f) * 4;
        if self.csum_offload {
            // The stack stored the pseudo-header sum in the TCP checksum
            // field; the device adds the header and payload.
            needs_csum(head, 14 + ihl, 16);
        }
        if let Some(mss) = gso_mss {
            if !(self.csum_offload && request_tso(head, &frame[..header.len()], mss)) {
                self.free_tx_slot(slot);
                return false;
            }
            self.tx_tso_frames += 1;
        }
        self.post_chain(slot, hdr + header.len(), payload, needed - 1)
    }

    fn flush_tx(&mut self) {
        if !self.hold_notify {
            self.kick_tx();
        }
        self.reclaim_tx();
        self.update_tx_interrupts();
    }
}

/// Sets the number of queue pairs in use to `pairs` with the control-queue
/// command VIRTIO_NET_CTRL_MQ / VQ_PAIRS_SET on `ctrl` (queue number
/// `2 * device_pairs`), waiting a bounded time for the device's answer.
/// True if the device acknowledged it.
fn set_queue_pairs(
    transport: &mut NoEventIdx<SomeTransport<'static>>,
    mut ctrl: Queue<Request<DmaBuffer>, QUEUE_SIZE>,
    device_pairs: usize,
    pairs: usize,
) -> bool {
    const CTRL_MQ: u8 = 4;
    const VQ_PAIRS_SET: u8 = 0;
    let Some(mut buf) = DmaBuffer::alloc(1) else {
        return false;
    };
    // class, command, the u16 count, then the device's status byte.
    let b = buf.as_mut_slice();
    b[..2].copy_from_slice(&[CTRL_MQ, VQ_PAIRS_SET]);
    b[2..4].copy_from_slice(&(pairs as u16).to_le_bytes());
    b[4] = 0xff;
    if ctrl.add(Request { buf, out_len: 4 }).is_err() {
        return false;
    }
    transport.notify(2 * device_pairs as u16);
    // QEMU answers while handling the doorbell; a slower device gets a
    // bounded number of polls.
    let mut ok = false;
    for _ in 0..1 << 24 {
        if let Some((req, _)) = ctrl.pop_used() {
            ok = req.buf.as_slice()[4] == 0;
            break;
        }
        core::hint::spin_loop();
    }
    // The device keeps the queue (virtio-pci cannot disable one): its
    // rings stay allocated.
    core::mem::forget(ctrl);
    ok
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
    needs_csum(head, 14 + ihl, csum_offset);
    true
}

/// Asks the device (through the virtio-net header `head`) to complete the
/// L4 checksum that starts at `start` in the frame and is stored `offset`
/// bytes further (the field holds the pseudo-header sum).
fn needs_csum(head: &mut [u8], start: usize, offset: usize) {
    const NEEDS_CSUM: u8 = 1;
    head[0] = NEEDS_CSUM;
    head[6..8].copy_from_slice(&(start as u16).to_le_bytes());
    head[8..10].copy_from_slice(&(offset as u16).to_le_bytes());
}

/// Descriptors a chain of `frags` takes after its header (each fragment cut
/// where a 4 KiB page ends), or `None` when more than a chain holds.
fn chain_descriptors(frags: &[Fragment<TcpPayload>]) -> Option<usize> {
    let mut n = 0;
    for f in frags {
        if f.len == 0 {
            return None;
        }
        n += pieces(f).count();
        if n > MAX_FRAGMENTS {
            return None;
        }
    }
    Some(n + 1)
}

/// A fragment as physically contiguous pieces, in order: `(start in
/// f.data, length)` of each. In identity-mapped memory (page-cache spans,
/// DMA buffers) it is one piece; elsewhere (the heap, mappings) it is cut
/// where a 4 KiB page ends.
fn pieces(f: &Fragment<TcpPayload>) -> impl Iterator<Item = (usize, usize)> {
    // The address of the fragment's first byte.
    let base = f.bytes().as_ptr() as usize;
    let (offset, len) = (f.offset, f.len);
    let whole = uk_frame::hal::is_identity(base as u64, len as u64);
    let mut done = 0;
    core::iter::from_fn(move || {
        (done < len).then(|| {
            let n = if whole {
                len - done
            } else {
                (PIECE_ALIGN - (base + done) % PIECE_ALIGN).min(len - done)
            };
            let piece = (offset + done, n);
            done += n;
            piece
        })
    })
}
