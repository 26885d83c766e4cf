//! SYN cookies (RFC 4987 section 3.6): when a listener's half-open queue is
//! full, the SYN-ACK's sequence number carries the connection's state and no
//! memory is kept. The ACK that completes the handshake proves, through the
//! keyed hash, that the SYN-ACK reached the client.
//!
//! Layout of the 32-bit ISN: `tttttmmm hhhhhhhh hhhhhhhh hhhhhhhh`: 5 bits
//! of a 64-second counter, a 3-bit index into [`MSS_TABLE`], and 24 bits of
//! SipHash over (4-tuple, client ISN, counter, MSS index). A cookie is valid
//! for two counter periods. When the client sent timestamps, the window
//! scale and SACK-permitted flag go into the low 6 bits of our TSval, as
//! Linux does, and come back in the ACK's TSecr; without timestamps a
//! cookie connection runs without window scaling and SACK.

use core::hash::Hasher;

use crate::hash::{Key, SipHasher};
use crate::seq::Seq;
use crate::wire::FourTuple;

/// The MSS values a cookie can encode.
pub const MSS_TABLE: [u16; 8] = [536, 1200, 1220, 1360, 1400, 1440, 1460, 8960];

/// Counter period: 64 s.
const PERIOD_US: u64 = 64_000_000;

/// How long a cookie stays valid (at most two counter periods).
pub const VALIDITY_US: u64 = 2 * PERIOD_US;

fn period(now_us: u64) -> u32 {
    (now_us / PERIOD_US) as u32
}

fn mac(key: &Key, tuple: &FourTuple, client_isn: Seq, t: u32, mss_idx: u32) -> u32 {
    let mut h = SipHasher::new(key);
    h.write(b"cookie");
    h.write(&tuple.hash_bytes());
    h.write(&client_isn.0.to_be_bytes());
    h.write(&t.to_be_bytes());
    h.write(&[mss_idx as u8]);
    h.finish() as u32 & 0x00ff_ffff
}

/// The cookie ISN for a SYN, and the MSS it encodes (the largest table
/// entry not above the client's `mss`).
pub fn encode(key: &Key, tuple: &FourTuple, client_isn: Seq, mss: u16, now_us: u64) -> (Seq, u16) {
    let idx = MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0);
    let t = period(now_us);
    let isn =
        ((t & 0x1f) << 27) | ((idx as u32) << 24) | mac(key, tuple, client_isn, t, idx as u32);
    (Seq(isn), MSS_TABLE[idx])
}

/// Checks the cookie echoed in an ACK (`ack - 1`) for the client ISN
/// `seq - 1`; returns the encoded MSS.
pub fn decode(
    key: &Key,
    tuple: &FourTuple,
    client_isn: Seq,
    cookie: Seq,
    now_us: u64,
) -> Option<u16> {
    let now = period(now_us);
    let tbits = cookie.0 >> 27;
    let idx = (cookie.0 >> 24) & 7;
    // The counter value with these low 5 bits that is at most `now` and
    // at most one period older.
    let age = now.wrapping_sub(tbits) & 0x1f;
    if age > 1 {
        return None;
    }
    let t = now.wrapping_sub(age);
    (mac(key, tuple, client_isn, t, idx) == cookie.0 & 0x00ff_ffff).then(|| MSS_TABLE[idx as usize])
}

/// Low 6 bits of the SYN-ACK's TSval: window scale (0xf: none) and SACK.
pub fn encode_ts_options(tsval: u32, wscale: Option<u8>, sack: bool) -> u32 {
    (tsval & !0x3f) | (u32::from(sack) << 4) | u32::from(wscale.unwrap_or(0xf).min(0xf))
}

/// Inverse of [`encode_ts_options`], applied to the ACK's TSecr.
pub fn decode_ts_options(tsecr: u32) -> (Option<u8>, bool) {
    let ws = (tsecr & 0xf) as u8;
    ((ws <= 14).then_some(ws), tsecr & 0x10 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr};

    #[test]
    fn round_trip_and_expiry() {
        let key = [7; 16];
        let t = FourTuple {
            local_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            remote_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            local_port: 80,
            remote_port: 40000,
        };
        let now = 1_000_000_000;
        let (c, mss) = encode(&key, &t, Seq(5), 1460, now);
        assert_eq!(mss, 1460);
        assert_eq!(decode(&key, &t, Seq(5), c, now + 1), Some(1460));
        assert_eq!(decode(&key, &t, Seq(5), c, now + PERIOD_US), Some(1460));
        assert_eq!(
            decode(&key, &t, Seq(5), c, now + 3 * PERIOD_US),
            None,
            "expired"
        );
        assert_eq!(decode(&key, &t, Seq(6), c, now), None, "other client ISN");
        assert_eq!(decode(&[8; 16], &t, Seq(5), c, now), None, "other key");
        assert_eq!(decode(&key, &t, Seq(5), c + 1, now), None, "forged");
        assert_eq!(
            decode_ts_options(encode_ts_options(0xffff_ffff, Some(7), true)),
            (Some(7), true)
        );
        assert_eq!(
            decode_ts_options(encode_ts_options(0, None, false)),
            (None, false)
        );
    }
}
