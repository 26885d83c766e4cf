//! TCP options: MSS, window scale and timestamps (RFC 7323), SACK-permitted
//! and SACK blocks (RFC 2018). Parsing is total: malformed options end the
//! parse (what was read so far is kept) and never panic.

use crate::seq::Seq;

/// At most 4 SACK blocks fit in the option space (3 beside timestamps).
pub const MAX_SACK_BLOCKS: usize = 4;

/// The largest window-scale shift (RFC 7323 section 2.3).
pub const MAX_WSCALE: u8 = 14;

/// The options of one segment that this engine understands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Maximum segment size (SYN only).
    pub mss: Option<u16>,
    /// Window-scale shift (SYN only), clamped to [`MAX_WSCALE`].
    pub wscale: Option<u8>,
    /// SACK permitted (SYN only).
    pub sack_permitted: bool,
    /// Timestamps: (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
    /// SACK blocks, `[left, right)`.
    pub sack: [(Seq, Seq); MAX_SACK_BLOCKS],
    /// How many of `sack` are valid.
    pub sack_len: u8,
}

impl Options {
    /// The valid SACK blocks.
    pub fn sack_blocks(&self) -> &[(Seq, Seq)] {
        &self.sack[..usize::from(self.sack_len).min(MAX_SACK_BLOCKS)]
    }

    /// Parses the option bytes of a TCP header.
    pub fn parse(mut b: &[u8]) -> Options {
        let mut o = Options::default();
        while let Some(&kind) = b.first() {
            match kind {
                0 => break,
                1 => {
                    b = &b[1..];
                    continue;
                }
                _ => {}
            }
            let Some(&len) = b.get(1) else { break };
            let len = usize::from(len);
            if len < 2 || len > b.len() {
                break;
            }
            let body = &b[2..len];
            match (kind, body.len()) {
                (2, 2) => o.mss = Some(u16::from_be_bytes([body[0], body[1]])),
                (3, 1) => o.wscale = Some(body[0].min(MAX_WSCALE)),
                (4, 0) => o.sack_permitted = true,
                (5, n) if n % 8 == 0 && n > 0 => {
                    for (i, blk) in body.chunks_exact(8).take(MAX_SACK_BLOCKS).enumerate() {
                        let l = u32::from_be_bytes([blk[0], blk[1], blk[2], blk[3]]);
                        let r = u32::from_be_bytes([blk[4], blk[5], blk[6], blk[7]]);
                        o.sack[i] = (Seq(l), Seq(r));
                        o.sack_len = i as u8 + 1;
                    }
                }
                (8, 8) => {
                    let v = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let e = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    o.timestamps = Some((v, e));
                }
                _ => {}
            }
            b = &b[len..];
        }
        o
    }

    /// Writes the options into `out` (at most 40 bytes), padded with NOPs to
    /// a multiple of 4; returns the length. SACK blocks that do not fit are
    /// left out.
    pub fn emit(&self, out: &mut [u8; 40]) -> usize {
        let mut n = 0;
        let mut put = |bytes: &[u8], n: &mut usize| {
            out[*n..*n + bytes.len()].copy_from_slice(bytes);
            *n += bytes.len();
        };
        if let Some(mss) = self.mss {
            let m = mss.to_be_bytes();
            put(&[2, 4, m[0], m[1]], &mut n);
        }
        if let Some(ws) = self.wscale {
            put(&[1, 3, 3, ws], &mut n);
        }
        if self.sack_permitted {
            put(&[1, 1, 4, 2], &mut n);
        }
        if let Some((v, e)) = self.timestamps {
            put(&[1, 1, 8, 10], &mut n);
            put(&v.to_be_bytes(), &mut n);
            put(&e.to_be_bytes(), &mut n);
        }
        let room = (40 - n).saturating_sub(4) / 8;
        let blocks = self.sack_blocks();
        let k = blocks.len().min(room);
        if k > 0 {
            put(&[1, 1, 5, 2 + 8 * k as u8], &mut n);
            for &(l, r) in &blocks[..k] {
                put(&l.0.to_be_bytes(), &mut n);
                put(&r.0.to_be_bytes(), &mut n);
            }
        }
        while n % 4 != 0 {
            put(&[1], &mut n);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_sack_room() {
        let mut o = Options {
            mss: Some(1460),
            wscale: Some(7),
            sack_permitted: true,
            timestamps: Some((1, 2)),
            ..Options::default()
        };
        let mut buf = [0; 40];
        let n = o.emit(&mut buf);
        assert_eq!(Options::parse(&buf[..n]), o);

        o = Options {
            timestamps: Some((5, 6)),
            ..Options::default()
        };
        for i in 0..4 {
            o.sack[i] = (Seq(i as u32 * 10), Seq(i as u32 * 10 + 5));
        }
        o.sack_len = 4;
        let n = o.emit(&mut buf);
        let p = Options::parse(&buf[..n]);
        assert_eq!(
            p.sack_blocks().len(),
            3,
            "timestamps leave room for 3 blocks"
        );
        assert_eq!(p.timestamps, Some((5, 6)));
    }

    #[test]
    fn malformed_is_harmless() {
        for bad in [
            &[2u8][..],
            &[2, 0],
            &[2, 1, 0],
            &[5, 9, 0, 0, 0, 0, 0, 0, 0],
            &[8, 40],
        ] {
            let _ = Options::parse(bad);
        }
        assert_eq!(Options::parse(&[3, 3, 200]).wscale, Some(MAX_WSCALE));
    }
}
