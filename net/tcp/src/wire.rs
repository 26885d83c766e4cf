//! The TCP header on the wire (RFC 9293 section 3.1) and its checksum.

use core::net::IpAddr;

use crate::options::Options;
use crate::seq::Seq;

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;
/// Longest TCP header (with 40 bytes of options).
pub const MAX_HEADER_LEN: usize = 60;

/// The connection identifier, seen from this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FourTuple {
    /// Our address.
    pub local_ip: IpAddr,
    /// The peer's address.
    pub remote_ip: IpAddr,
    /// Our port.
    pub local_port: u16,
    /// The peer's port.
    pub remote_port: u16,
}

impl FourTuple {
    /// Bytes fed to the keyed hash: addresses as IPv6 (IPv4-mapped), ports.
    pub fn hash_bytes(&self) -> [u8; 36] {
        let mut b = [0; 36];
        b[..16].copy_from_slice(&ipv6_bytes(self.local_ip));
        b[16..32].copy_from_slice(&ipv6_bytes(self.remote_ip));
        b[32..34].copy_from_slice(&self.local_port.to_be_bytes());
        b[34..].copy_from_slice(&self.remote_port.to_be_bytes());
        b
    }
}

pub(crate) fn ipv6_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// TCP flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(pub u8);

impl Flags {
    /// No more data from sender.
    pub const FIN: Flags = Flags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: Flags = Flags(0x02);
    /// Reset the connection.
    pub const RST: Flags = Flags(0x04);
    /// Push function.
    pub const PSH: Flags = Flags(0x08);
    /// Acknowledgment field significant.
    pub const ACK: Flags = Flags(0x10);
    /// Urgent pointer significant (ignored by this engine).
    pub const URG: Flags = Flags(0x20);

    /// Whether every flag of `f` is set.
    pub const fn has(self, f: Flags) -> bool {
        self.0 & f.0 == f.0
    }
}

impl core::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, o: Flags) -> Flags {
        Flags(self.0 | o.0)
    }
}

/// A parsed TCP header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: Seq,
    /// Acknowledgment number.
    pub ack: Seq,
    /// Flags.
    pub flags: Flags,
    /// Window field (not scaled).
    pub window: u16,
    /// Options.
    pub options: Options,
}

/// Why a segment was not parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than its header.
    Truncated,
    /// The checksum does not match.
    Checksum,
    /// Port 0, or SYN with RST/FIN, or no flag at all that means anything.
    Invalid,
}

impl Header {
    /// Parses a TCP segment (header and payload); returns the header and the
    /// offset of the payload.
    pub fn parse(b: &[u8]) -> Result<(Header, usize), ParseError> {
        if b.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let off = usize::from(b[12] >> 4) * 4;
        if off < HEADER_LEN || off > b.len() {
            return Err(ParseError::Truncated);
        }
        let be32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let h = Header {
            src_port: u16::from_be_bytes([b[0], b[1]]),
            dst_port: u16::from_be_bytes([b[2], b[3]]),
            seq: Seq(be32(4)),
            ack: Seq(be32(8)),
            flags: Flags(b[13] & 0x3f),
            window: u16::from_be_bytes([b[14], b[15]]),
            options: Options::parse(&b[HEADER_LEN..off]),
        };
        let f = h.flags;
        if h.src_port == 0
            || h.dst_port == 0
            || (f.has(Flags::SYN) && (f.has(Flags::RST) || f.has(Flags::FIN)))
        {
            return Err(ParseError::Invalid);
        }
        Ok((h, off))
    }

    /// Writes the header (checksum 0) into `out`.
    pub fn emit(&self, out: &mut HeaderBuf) {
        let mut opts = [0; 40];
        let olen = self.options.emit(&mut opts);
        let len = HEADER_LEN + olen;
        let b = &mut out.bytes;
        b[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        b[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        b[4..8].copy_from_slice(&self.seq.0.to_be_bytes());
        b[8..12].copy_from_slice(&self.ack.0.to_be_bytes());
        b[12] = ((len / 4) as u8) << 4;
        b[13] = self.flags.0;
        b[14..16].copy_from_slice(&self.window.to_be_bytes());
        b[16..20].fill(0);
        b[HEADER_LEN..len].copy_from_slice(&opts[..olen]);
        out.len = len as u8;
    }
}

/// An emitted TCP header: up to 60 bytes inline, no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderBuf {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl Default for HeaderBuf {
    fn default() -> Self {
        HeaderBuf {
            bytes: [0; MAX_HEADER_LEN],
            len: 0,
        }
    }
}

impl HeaderBuf {
    /// The header bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Stores `csum` in the checksum field.
    pub fn set_checksum(&mut self, csum: u16) {
        self.bytes[16..18].copy_from_slice(&csum.to_be_bytes());
    }

    /// Offset of the checksum field inside the header (for checksum offload).
    pub const CHECKSUM_OFFSET: usize = 16;
}

/// One's-complement sum accumulator (RFC 1071) that accepts byte slices of
/// any length and alignment, in any number of pieces.
#[derive(Clone, Copy, Debug, Default)]
pub struct Checksum {
    sum: u64,
    odd: bool,
}

impl Checksum {
    /// Adds bytes to the sum.
    pub fn add(&mut self, mut b: &[u8]) {
        if self.odd && !b.is_empty() {
            self.sum += u64::from(b[0]);
            b = &b[1..];
            self.odd = false;
        }
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.sum += (w >> 32) + (w & 0xffff_ffff);
        }
        let mut rest = chunks.remainder();
        while rest.len() >= 2 {
            self.sum += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
            rest = &rest[2..];
        }
        if let [last] = rest {
            self.sum += u64::from(*last) << 8;
            self.odd = true;
        }
    }

    /// The folded 16-bit sum (not complemented).
    pub fn fold(&self) -> u16 {
        let mut s = self.sum;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }
}

/// The one's-complement sum of the TCP pseudo-header for a segment of
/// `tcp_len` bytes (header and payload), folded and not complemented: what a
/// device doing checksum offload expects in the checksum field.
pub fn pseudo_header_sum(src: IpAddr, dst: IpAddr, tcp_len: usize) -> u16 {
    let mut c = Checksum::default();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            c.add(&s.octets());
            c.add(&d.octets());
            c.add(&[0, 6]);
            c.add(&(tcp_len as u16).to_be_bytes());
        }
        _ => {
            c.add(&ipv6_bytes(src));
            c.add(&ipv6_bytes(dst));
            c.add(&(tcp_len as u32).to_be_bytes());
            c.add(&[0, 0, 0, 6]);
        }
    }
    c.fold()
}

/// The TCP checksum over the pseudo-header and `pieces` (header with its
/// checksum field zero, then the payload), complemented: the value for the
/// header's checksum field.
pub fn tcp_checksum<'a>(
    src: IpAddr,
    dst: IpAddr,
    pieces: impl IntoIterator<Item = &'a [u8]> + Clone,
) -> u16 {
    let len: usize = pieces.clone().into_iter().map(<[u8]>::len).sum();
    let mut c = Checksum::default();
    c.add(&pseudo_header_sum(src, dst, len).to_be_bytes());
    for p in pieces {
        c.add(p);
    }
    !c.fold()
}

/// Whether a received segment's checksum is right.
pub fn verify_checksum(src: IpAddr, dst: IpAddr, segment: &[u8]) -> bool {
    let mut c = Checksum::default();
    c.add(&pseudo_header_sum(src, dst, segment.len()).to_be_bytes());
    c.add(segment);
    c.fold() == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    #[test]
    fn header_round_trip() {
        let h = Header {
            src_port: 80,
            dst_port: 5000,
            seq: Seq(7),
            ack: Seq(9),
            flags: Flags::SYN | Flags::ACK,
            window: 1000,
            options: Options {
                mss: Some(1460),
                ..Options::default()
            },
        };
        let mut buf = HeaderBuf::default();
        h.emit(&mut buf);
        assert_eq!(buf.as_bytes().len(), 24);
        let (p, off) = Header::parse(buf.as_bytes()).unwrap();
        assert_eq!((p, off), (h, 24));
    }

    #[test]
    fn checksum_in_pieces_matches_whole() {
        let src = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let dst = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let data: alloc::vec::Vec<u8> = (0..101u8).collect();
        let whole = tcp_checksum(src, dst, [&data[..]]);
        let parts = tcp_checksum(src, dst, [&data[..3], &data[3..50], &data[50..]]);
        assert_eq!(whole, parts);
        let mut seg = data.clone();
        seg[16..18].fill(0);
        let c = tcp_checksum(src, dst, [&seg[..]]);
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        assert!(verify_checksum(src, dst, &seg));
        seg[40] ^= 1;
        assert!(!verify_checksum(src, dst, &seg));
    }
}
