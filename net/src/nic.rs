//! The device boundary: the [`Nic`] trait a driver implements, the counters kept
//! at the boundary, and the smoltcp `phy::Device` adapters built on it.

use alloc::vec::Vec;
use core::ops::Deref;

use uk_tcp::Fragment;

use crate::payload::TcpPayload;
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Length of an Ethernet II header (no VLAN tag).
pub const ETH_HEADER_LEN: usize = 14;

/// A network interface card as seen by the stack (implemented by the kernel's
/// virtio-net driver, and by [`crate::testing::WireEnd`] in tests).
///
/// Receive buffers are owned tokens ([`Nic::Rx`]) that deref to the frame
/// bytes, so a driver can hand out its DMA buffers without copying; the stack
/// gives each back with [`Nic::release`] and calls [`Nic::refill`] once per
/// batch, so the driver can re-post buffers and notify the device once.
pub trait Nic {
    /// A received frame (Ethernet header included). Dropping it without
    /// [`Nic::release`] must also be safe (the buffer is then simply lost or
    /// reclaimed by the driver's own means).
    type Rx: Deref<Target = [u8]>;

    /// The station MAC address (unicast).
    fn mac(&self) -> [u8; 6];

    /// The IP MTU (1500 for plain Ethernet); frames may be up to `mtu + 14` bytes.
    fn mtu(&self) -> usize;

    /// Takes the next received frame, if any.
    fn receive(&mut self) -> Option<Self::Rx>;

    /// Gives a receive buffer back to the driver once the stack is done with it.
    fn release(&mut self, rx: Self::Rx) {
        drop(rx);
    }

    /// Called once after a batch of [`Nic::receive`]/[`Nic::release`] calls:
    /// re-post the released buffers and notify the device once.
    fn refill(&mut self) {}

    /// Whether at least one frame can be queued for transmission now. The
    /// stack asks before building a frame, so a full ring holds data back in
    /// the socket instead of dropping it. A device with TSO answers for a
    /// frame of any size up to [`Nic::tso_max_frame`].
    fn can_transmit(&mut self) -> bool {
        true
    }

    /// Queues one frame of exactly `len` bytes, filled in place by `f`.
    /// Returns `false` (without calling `f`) when the ring is full.
    fn transmit(&mut self, len: usize, f: impl FnOnce(&mut [u8])) -> bool;

    /// Called once at the end of every poll: notify the device once for the
    /// frames queued since the last call (if any), and take back transmit
    /// buffers the device has finished with. Called even when nothing was
    /// queued, since a full ring is exactly when nothing could be.
    fn flush_tx(&mut self);

    /// True when the device completes TCP and UDP checksums of transmitted
    /// frames itself (virtio-net `VIRTIO_NET_F_CSUM`): the stack then leaves
    /// them to the driver, which fills in the pseudo-header sum.
    fn tx_checksum_offload(&self) -> bool {
        false
    }

    /// TCP segmentation offload (virtio-net `VIRTIO_NET_F_HOST_TSO4`): the
    /// largest TCP/IPv4 frame (Ethernet header included) the device accepts
    /// and cuts into segments itself, or `None`. Only honoured together with
    /// [`Nic::tx_checksum_offload`].
    fn tso_max_frame(&self) -> Option<usize> {
        None
    }

    /// Queues one TCP/IPv4 frame of `len` bytes (more than `mtu + 14`, at
    /// most [`Nic::tso_max_frame`]), filled in place by `f`, that the device
    /// cuts into segments carrying `mss` payload bytes each (headers
    /// replicated). Returns `false` (without calling `f`) when it cannot be
    /// queued now.
    fn transmit_tso(&mut self, len: usize, mss: u16, f: impl FnOnce(&mut [u8])) -> bool {
        let _ = (len, mss, f);
        false
    }

    /// True when the device takes TCP frames as scatter-gather lists
    /// ([`Nic::transmit_sg`]): the payload is then never copied by the CPU.
    fn tx_scatter_gather(&self) -> bool {
        false
    }

    /// Queues one TCP/IPv4 frame as a scatter-gather list: `header` holds the
    /// Ethernet, IPv4 and TCP headers (the TCP checksum field holds the
    /// pseudo-header sum when [`Nic::tx_checksum_offload`], else the full
    /// checksum), `payload` the payload fragments in order (non-empty). The
    /// device reads the fragments' memory in place: the NIC keeps clones of
    /// them until the device has finished with the frame, then drops them
    /// (which is what lets acknowledged page-cache pages go). With `gso_mss`
    /// (only on a device with [`Nic::tso_max_frame`], and a frame no longer
    /// than that) the device cuts the frame into segments of that many
    /// payload bytes. Returns `false` when it cannot be queued now (no free
    /// descriptors for the chain): the stack keeps the segment for later.
    fn transmit_sg(
        &mut self,
        header: &[u8],
        payload: &[Fragment<TcpPayload>],
        gso_mss: Option<u16>,
    ) -> bool {
        let _ = (header, payload, gso_mss);
        false
    }
}

/// Why a received frame was dropped before it reached a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Header fields are inconsistent (bad version, header length, martian source, bad ARP).
    Malformed,
    /// Shorter than its headers claim.
    Truncated,
    /// Longer than `mtu + 14`.
    Oversize,
    /// IPv4 header or TCP/UDP/ICMP checksum mismatch.
    BadChecksum,
    /// Neither IPv4 nor ARP.
    UnknownEthertype,
    /// Destination MAC or IP is not ours (nor broadcast).
    NotForUs,
    /// Valid but unsupported (IP fragments).
    Unsupported,
}

/// Receive drops by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxDrops {
    /// See [`DropReason::Malformed`].
    pub malformed: u64,
    /// See [`DropReason::Truncated`].
    pub truncated: u64,
    /// See [`DropReason::Oversize`].
    pub oversize: u64,
    /// See [`DropReason::BadChecksum`].
    pub bad_checksum: u64,
    /// See [`DropReason::UnknownEthertype`].
    pub unknown_ethertype: u64,
    /// See [`DropReason::NotForUs`].
    pub not_for_us: u64,
    /// See [`DropReason::Unsupported`].
    pub unsupported: u64,
}

impl RxDrops {
    /// Total frames dropped on receive.
    pub fn total(&self) -> u64 {
        self.malformed
            + self.truncated
            + self.oversize
            + self.bad_checksum
            + self.unknown_ethertype
            + self.not_for_us
            + self.unsupported
    }

    pub(crate) fn count(&mut self, r: DropReason) {
        let c = match r {
            DropReason::Malformed => &mut self.malformed,
            DropReason::Truncated => &mut self.truncated,
            DropReason::Oversize => &mut self.oversize,
            DropReason::BadChecksum => &mut self.bad_checksum,
            DropReason::UnknownEthertype => &mut self.unknown_ethertype,
            DropReason::NotForUs => &mut self.not_for_us,
            DropReason::Unsupported => &mut self.unsupported,
        };
        *c += 1;
    }
}

/// Counters kept at the device boundary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NicCounters {
    /// Frames taken from the device.
    pub rx_frames: u64,
    /// Bytes taken from the device.
    pub rx_bytes: u64,
    /// Frames dropped before reaching a socket, by reason.
    pub rx_dropped: RxDrops,
    /// Frames handed to the device.
    pub tx_frames: u64,
    /// Bytes handed to the device.
    pub tx_bytes: u64,
    /// Frames dropped because the transmit ring was full.
    pub tx_dropped: u64,
    /// Frames (included in `tx_frames`) handed to the device for TCP
    /// segmentation ([`Nic::transmit_tso`]).
    pub tx_tso_frames: u64,
}

/// What a transmit pass produced (used by the stack, not public).
#[derive(Default)]
pub(crate) struct TxInfo {
    pub frames: u64,
    pub arp_sent: bool,
}

/// Device capabilities for a NIC with the given IP MTU. Checksums are
/// verified by the stack's own classifier before smoltcp sees a frame, so
/// smoltcp only computes them on transmit. smoltcp sends no TCP (uk-tcp's
/// segments go to the device directly), so it is never told about
/// segmentation offload.
pub(crate) fn capabilities(mtu: usize, tx_offload: bool) -> DeviceCapabilities {
    let mut checksum = ChecksumCapabilities::default();
    let l4 = if tx_offload {
        Checksum::None
    } else {
        Checksum::Tx
    };
    checksum.ipv4 = Checksum::Tx;
    checksum.tcp = l4;
    checksum.udp = l4;
    checksum.icmpv4 = Checksum::Tx;
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = mtu + ETH_HEADER_LEN;
    caps.max_burst_size = None;
    caps.checksum = checksum;
    caps
}

/// A smoltcp device that yields at most one (already classified) frame and
/// transmits through the NIC.
pub(crate) struct FrameDevice<'a, N: Nic> {
    pub frame: Option<&'a [u8]>,
    pub nic: &'a mut N,
    pub counters: &'a mut NicCounters,
    pub info: &'a mut TxInfo,
    pub scratch: &'a mut Vec<u8>,
    pub mtu: usize,
}

pub(crate) struct RxTok<'a>(&'a [u8]);

impl phy::RxToken for RxTok<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0)
    }
}

pub(crate) struct TxTok<'a, N: Nic> {
    nic: &'a mut N,
    counters: &'a mut NicCounters,
    info: &'a mut TxInfo,
    scratch: &'a mut Vec<u8>,
}

impl<N: Nic> phy::TxToken for TxTok<'_, N> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut f = Some(f);
        let mut result = None;
        let mut is_arp = false;
        let fill = |buf: &mut [u8]| {
            let n = len.min(buf.len());
            let buf = &mut buf[..n];
            if let Some(f) = f.take() {
                result = Some(f(buf));
            }
            is_arp = buf.len() >= ETH_HEADER_LEN && buf[12..14] == [0x08, 0x06];
        };
        let ok = self.nic.transmit(len, fill);
        match (ok, result) {
            (true, Some(r)) => {
                self.counters.tx_frames += 1;
                self.counters.tx_bytes += len as u64;
                self.info.frames += 1;
                self.info.arp_sent |= is_arp;
                r
            }
            (_, result) => {
                self.counters.tx_dropped += 1;
                match (result, f.take()) {
                    (Some(r), _) => r,
                    (None, Some(f)) => {
                        self.scratch.clear();
                        self.scratch.resize(len, 0);
                        f(self.scratch)
                    }
                    // `f` is consumed exactly once above; this arm cannot be reached.
                    (None, None) => unreachable!("transmit closure consumed without a result"),
                }
            }
        }
    }
}

impl<N: Nic> phy::Device for FrameDevice<'_, N> {
    type RxToken<'b>
        = RxTok<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxTok<'b, N>
    where
        Self: 'b;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.frame.take()?;
        Some((
            RxTok(frame),
            TxTok {
                nic: self.nic,
                counters: self.counters,
                info: self.info,
                scratch: self.scratch,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if !self.nic.can_transmit() {
            return None;
        }
        Some(TxTok {
            nic: self.nic,
            counters: self.counters,
            info: self.info,
            scratch: self.scratch,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.mtu, self.nic.tx_checksum_offload())
    }
}
