//! In-memory devices for host tests (and for kernel self-tests): a [`Wire`]
//! joins two [`WireEnd`]s like a crossover cable.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

use uk_tcp::Fragment;

use crate::nic::{ETH_HEADER_LEN, Nic};
use crate::payload::TcpPayload;

#[derive(Default)]
struct Queues {
    /// Frames travelling towards end 0 and end 1.
    to: [VecDeque<Vec<u8>>; 2],
}

/// A point-to-point link between two [`WireEnd`]s.
pub struct Wire;

impl Wire {
    /// Two connected ends with the given MACs and IP MTU; each direction
    /// holds at most `capacity` frames (a full queue is a full TX ring).
    pub fn pair(mac_a: [u8; 6], mac_b: [u8; 6], mtu: usize, capacity: usize) -> (WireEnd, WireEnd) {
        let q = Rc::new(RefCell::new(Queues::default()));
        let a = WireEnd {
            q: q.clone(),
            side: 0,
            mac: mac_a,
            mtu,
            capacity,
            flushes: 0,
            released: 0,
            tso: None,
            tso_frames: 0,
            sg: None,
        };
        let b = WireEnd {
            q,
            side: 1,
            mac: mac_b,
            mtu,
            capacity,
            flushes: 0,
            released: 0,
            tso: None,
            tso_frames: 0,
            sg: None,
        };
        (a, b)
    }
}

/// One end of a [`Wire`]; implements [`Nic`].
pub struct WireEnd {
    q: Rc<RefCell<Queues>>,
    side: usize,
    mac: [u8; 6],
    mtu: usize,
    capacity: usize,
    /// Number of `flush_tx` calls (device notifications).
    pub flushes: u64,
    /// Number of receive buffers given back.
    pub released: u64,
    /// Checksum and segmentation offload: the largest frame accepted by
    /// [`Nic::transmit_tso`] (see [`WireEnd::enable_tso`]).
    tso: Option<usize>,
    /// Frames given to [`Nic::transmit_tso`] (each sent as several segments).
    pub tso_frames: u64,
    /// Scatter-gather mode (see [`WireEnd::enable_sg`]).
    sg: Option<SgRing>,
}

/// A simulated scatter-gather transmit ring: each frame takes one
/// descriptor for its header and one per payload fragment; the fragments
/// are held (as a device reading them would) until the "device" completes
/// the chain, at the next `flush_tx` unless completions are held back.
struct SgRing {
    descriptors: usize,
    in_use: usize,
    chains: Vec<(usize, Vec<Fragment<TcpPayload>>)>,
    hold: bool,
    frames: u64,
    refused: u64,
}

impl WireEnd {
    /// Scatter-gather transmit ([`Nic::transmit_sg`]) through a ring of
    /// `descriptors` descriptors.
    pub fn enable_sg(&mut self, descriptors: usize) {
        self.sg = Some(SgRing {
            descriptors,
            in_use: 0,
            chains: Vec::new(),
            hold: false,
            frames: 0,
            refused: 0,
        });
    }

    /// While `hold` is true, `flush_tx` does not complete transmitted
    /// chains: their fragments stay referenced and their descriptors used.
    pub fn hold_sg_completions(&mut self, hold: bool) {
        if let Some(r) = self.sg.as_mut() {
            r.hold = hold;
        }
    }

    /// Chains the simulated device has not completed yet.
    pub fn sg_in_flight(&self) -> usize {
        self.sg.as_ref().map_or(0, |r| r.chains.len())
    }

    /// Frames sent as scatter-gather lists, and frames refused for want of
    /// descriptors.
    pub fn sg_counts(&self) -> (u64, u64) {
        self.sg.as_ref().map_or((0, 0), |r| (r.frames, r.refused))
    }

    /// Frames waiting to be received by this end.
    pub fn pending_rx(&self) -> usize {
        self.q.borrow().to[self.side].len()
    }

    /// Whether the peer's receive queue has room.
    fn has_room(&self) -> bool {
        self.q.borrow().to[1 - self.side].len() < self.capacity
    }

    /// Frames in flight in either direction.
    pub fn in_flight(&self) -> usize {
        let q = self.q.borrow();
        q.to[0].len() + q.to[1].len()
    }

    /// Puts a frame in this end's receive queue (as if the peer had sent it).
    pub fn inject(&self, frame: &[u8]) {
        self.q.borrow_mut().to[self.side].push_back(frame.to_vec());
    }

    /// Makes this end behave like a virtio-net device with
    /// `VIRTIO_NET_F_CSUM` and `VIRTIO_NET_F_HOST_TSO4`: it completes the
    /// TCP/UDP checksums the stack leaves out, and cuts TCP/IPv4 frames of up
    /// to `max_frame` bytes into MSS-sized segments, as QEMU's tap backend does.
    pub fn enable_tso(&mut self, max_frame: usize) {
        self.tso = Some(max_frame);
    }

    fn push(&self, frame: Vec<u8>) {
        self.q.borrow_mut().to[1 - self.side].push_back(frame);
    }

    /// Takes the frames this end sent that the peer has not received yet.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.q.borrow_mut().to[1 - self.side].drain(..).collect()
    }
}

impl Nic for WireEnd {
    type Rx = Vec<u8>;

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn receive(&mut self) -> Option<Vec<u8>> {
        self.q.borrow_mut().to[self.side].pop_front()
    }

    fn release(&mut self, rx: Vec<u8>) {
        drop(rx);
        self.released += 1;
    }

    fn can_transmit(&mut self) -> bool {
        self.has_room()
    }

    fn transmit(&mut self, len: usize, f: impl FnOnce(&mut [u8])) -> bool {
        if !self.can_transmit() {
            return false;
        }
        let mut frame = vec![0u8; len];
        f(&mut frame);
        if self.tso.is_some() {
            complete_l4_checksum(&mut frame);
        }
        self.push(frame);
        true
    }

    fn tx_checksum_offload(&self) -> bool {
        self.tso.is_some()
    }

    fn tso_max_frame(&self) -> Option<usize> {
        self.tso
    }

    fn transmit_tso(&mut self, len: usize, mss: u16, f: impl FnOnce(&mut [u8])) -> bool {
        if !self.can_transmit() || self.tso.is_none_or(|max| len > max) {
            return false;
        }
        let mut frame = vec![0u8; len];
        f(&mut frame);
        self.tso_frames += 1;
        for seg in segment_tcp(&frame, usize::from(mss)) {
            self.push(seg);
        }
        true
    }

    fn flush_tx(&mut self) {
        self.flushes += 1;
        if let Some(r) = self.sg.as_mut()
            && !r.hold
        {
            r.chains.clear();
            r.in_use = 0;
        }
    }

    fn tx_scatter_gather(&self) -> bool {
        self.sg.is_some()
    }

    fn transmit_sg(
        &mut self,
        header: &[u8],
        payload: &[Fragment<TcpPayload>],
        gso_mss: Option<u16>,
    ) -> bool {
        let room = self.has_room();
        let len = header.len() + payload.iter().map(|f| f.len).sum::<usize>();
        let tso = self.tso;
        let Some(r) = self.sg.as_mut() else {
            return false;
        };
        let need = 1 + payload.len();
        if !room || r.in_use + need > r.descriptors {
            r.refused += 1;
            return false;
        }
        if gso_mss.is_some() && tso.is_none_or(|max| len > max) {
            return false;
        }
        // What the device reads: the header buffer, then each fragment in place.
        let mut frame = Vec::with_capacity(len);
        frame.extend_from_slice(header);
        for f in payload {
            frame.extend_from_slice(f.bytes());
        }
        r.in_use += need;
        r.chains.push((need, payload.to_vec()));
        r.frames += 1;
        match gso_mss {
            Some(mss) => {
                self.tso_frames += 1;
                for seg in segment_tcp(&frame, usize::from(mss)) {
                    self.push(seg);
                }
            }
            None => {
                if tso.is_some() {
                    complete_l4_checksum(&mut frame);
                }
                self.push(frame);
            }
        }
        true
    }
}

/// Fills in the TCP or UDP checksum of an IPv4 frame (what a device with
/// checksum offload does).
fn complete_l4_checksum(frame: &mut [u8]) {
    if frame.len() < ETH_HEADER_LEN + 20 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let ip = Ipv4Packet::new_unchecked(&mut frame[ETH_HEADER_LEN..]);
    let (src, dst) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    let proto = ip.next_header();
    let total = usize::from(ip.total_len());
    let ihl = usize::from(ip.header_len());
    let l4 = &mut ip.into_inner()[ihl..total];
    match proto {
        IpProtocol::Tcp => TcpPacket::new_unchecked(l4).fill_checksum(&src, &dst),
        IpProtocol::Udp => UdpPacket::new_unchecked(l4).fill_checksum(&src, &dst),
        _ => {}
    }
}

/// Cuts a TCP/IPv4 frame into segments of `mss` payload bytes, as a device
/// doing TSO does: headers copied, IP length, identification and checksum
/// and TCP sequence number adjusted, FIN and PSH kept on the last segment
/// only, checksums completed.
fn segment_tcp(frame: &[u8], mss: usize) -> Vec<Vec<u8>> {
    let ip = Ipv4Packet::new_unchecked(&frame[ETH_HEADER_LEN..]);
    let ihl = usize::from(ip.header_len());
    let ident = ip.ident();
    let tcp = TcpPacket::new_unchecked(&frame[ETH_HEADER_LEN + ihl..]);
    let thl = usize::from(tcp.header_len());
    let seq = tcp.seq_number();
    let (fin, psh) = (tcp.fin(), tcp.psh());
    let hdr = ETH_HEADER_LEN + ihl + thl;
    let payload = &frame[hdr..];
    let n = payload.len().div_ceil(mss.max(1));
    payload
        .chunks(mss.max(1))
        .enumerate()
        .map(|(i, chunk)| {
            let mut seg = Vec::with_capacity(hdr + chunk.len());
            seg.extend_from_slice(&frame[..hdr]);
            seg.extend_from_slice(chunk);
            let mut ip = Ipv4Packet::new_unchecked(&mut seg[ETH_HEADER_LEN..]);
            ip.set_total_len((ihl + thl + chunk.len()) as u16);
            ip.set_ident(ident.wrapping_add(i as u16));
            ip.fill_checksum();
            let mut tcp = TcpPacket::new_unchecked(&mut seg[ETH_HEADER_LEN + ihl..]);
            tcp.set_seq_number(seq + i * mss);
            let last = i + 1 == n;
            tcp.set_fin(fin && last);
            tcp.set_psh(psh && last);
            complete_l4_checksum(&mut seg);
            seg
        })
        .collect()
}
