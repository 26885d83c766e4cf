//! An outgoing segment: header bytes plus a scatter-gather payload list.

use alloc::vec::Vec;
use core::net::IpAddr;

use crate::payload::{Fragment, Payload};
use crate::wire::{Flags, Header, HeaderBuf, pseudo_header_sum, tcp_checksum};

/// A segment to transmit. The payload is a list of fragments referencing the
/// send queue's buffers; nothing was copied to build it.
#[derive(Clone, Debug)]
pub struct Segment<P> {
    /// IP source address.
    pub local_ip: IpAddr,
    /// IP destination address.
    pub remote_ip: IpAddr,
    /// The TCP header with options; checksum field 0 until
    /// [`Segment::fill_checksum`] or [`Segment::fill_partial_checksum`].
    pub header: HeaderBuf,
    /// Payload fragments, in order.
    pub payload: Vec<Fragment<P>>,
    /// Total payload bytes.
    pub payload_len: usize,
    /// The MSS at which a device doing segmentation offload (TSO/GSO) cuts
    /// the payload when `payload_len` exceeds it.
    pub mss: u16,
}

impl<P: Payload> Segment<P> {
    /// TCP source port (ours).
    pub fn src_port(&self) -> u16 {
        let b = self.header.as_bytes();
        u16::from_be_bytes([b[0], b[1]])
    }

    /// TCP destination port (the peer's).
    pub fn dst_port(&self) -> u16 {
        let b = self.header.as_bytes();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// TCP length (header and payload): the IP payload length.
    pub fn tcp_len(&self) -> usize {
        self.header.as_bytes().len() + self.payload_len
    }

    /// Whether the payload exceeds one MSS (needs TSO or [`Segment::split`]).
    pub fn needs_segmentation(&self) -> bool {
        self.payload_len > usize::from(self.mss)
    }

    /// Software checksum over the pseudo-header, header and every fragment.
    pub fn fill_checksum(&mut self) {
        self.header.set_checksum(0);
        let pieces = core::iter::once(self.header.as_bytes())
            .chain(self.payload.iter().map(Fragment::bytes));
        let c = tcp_checksum(self.local_ip, self.remote_ip, pieces.collect::<Vec<_>>());
        self.header.set_checksum(c);
    }

    /// Checksum offload: stores the pseudo-header sum (folded, not
    /// complemented) in the checksum field, as virtio's
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM` expects: the device adds the sum of
    /// the TCP header and payload from `csum_start` (the TCP header) and
    /// stores it at `csum_offset` ([`HeaderBuf::CHECKSUM_OFFSET`]). For a
    /// TSO segment the sum covers the whole length, which the segmenter
    /// adjusts per segment (as Linux's `tcp_gso_segment` does).
    pub fn fill_partial_checksum(&mut self) {
        let sum = pseudo_header_sum(self.local_ip, self.remote_ip, self.tcp_len());
        self.header.set_checksum(sum);
    }

    /// Header and payload in one buffer, checksummed: what a device without
    /// scatter-gather would need (one copy; tests use it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = self.clone();
        s.fill_checksum();
        let mut v = Vec::with_capacity(s.tcp_len());
        v.extend_from_slice(s.header.as_bytes());
        for f in &s.payload {
            v.extend_from_slice(f.bytes());
        }
        v
    }

    /// Software segmentation (GSO): cuts a segment longer than its MSS into
    /// MSS-sized segments with the same options; FIN and PSH stay on the
    /// last one. Fragments are sliced, not copied. `None` when the memory
    /// for the lists cannot be had (the caller drops the segment, as if lost).
    pub fn try_split(&self) -> Option<Vec<Segment<P>>> {
        let Ok((h, _)) = Header::parse(self.header.as_bytes()) else {
            return one(self.clone());
        };
        if !self.needs_segmentation() {
            return one(self.clone());
        }
        let mss = usize::from(self.mss.max(1));
        let mut out = Vec::new();
        out.try_reserve_exact(self.payload_len.div_ceil(mss)).ok()?;
        let mut frags = self.payload.iter();
        let mut cur: Option<Fragment<P>> = None;
        let mut done = 0;
        while done < self.payload_len {
            let take = mss.min(self.payload_len - done);
            let mut payload: Vec<Fragment<P>> = Vec::new();
            let mut need = take;
            while need > 0 {
                let f = match cur.take() {
                    Some(f) => f,
                    None => match frags.next() {
                        Some(f) => f.clone(),
                        None => break,
                    },
                };
                if f.len <= need {
                    need -= f.len;
                    payload.try_reserve(1).ok()?;
                    payload.push(f);
                } else {
                    payload.try_reserve(1).ok()?;
                    payload.push(Fragment {
                        data: f.data.clone(),
                        offset: f.offset,
                        len: need,
                    });
                    cur = Some(Fragment {
                        data: f.data,
                        offset: f.offset + need,
                        len: f.len - need,
                    });
                    need = 0;
                }
            }
            let last = done + take == self.payload_len;
            let mut hh = h;
            hh.seq = h.seq + done as u32;
            if !last {
                hh.flags = Flags(h.flags.0 & !(Flags::FIN.0 | Flags::PSH.0));
            }
            let mut header = HeaderBuf::default();
            hh.emit(&mut header);
            out.push(Segment {
                local_ip: self.local_ip,
                remote_ip: self.remote_ip,
                header,
                payload,
                payload_len: take,
                mss: self.mss,
            });
            done += take;
        }
        Some(out)
    }

    /// [`Segment::try_split`] for tests and tools.
    ///
    /// # Panics
    /// When memory is short.
    pub fn split(&self) -> Vec<Segment<P>> {
        self.try_split().expect("memory for the split segments")
    }
}

/// A one-element vector, allocated fallibly.
fn one<T>(x: T) -> Option<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(1).ok()?;
    v.push(x);
    Some(v)
}
