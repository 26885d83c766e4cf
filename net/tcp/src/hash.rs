//! SipHash-2-4 (Aumasson and Bernstein), keyed: the pseudo-random function
//! behind initial sequence numbers (RFC 6528), ephemeral ports (RFC 6056),
//! SYN cookies and the hash tables' hasher (so that a peer cannot pick
//! 4-tuples that all land in one bucket).

use core::hash::{BuildHasher, Hasher};

/// A 128-bit secret key.
pub type Key = [u8; 16];

/// Streaming SipHash-2-4.
#[derive(Clone, Debug)]
pub struct SipHasher {
    v: [u64; 4],
    tail: u64,
    ntail: usize,
    length: usize,
}

#[inline]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

impl SipHasher {
    /// A hasher with the given key.
    pub fn new(key: &Key) -> Self {
        let mut k0 = [0; 8];
        let mut k1 = [0; 8];
        k0.copy_from_slice(&key[..8]);
        k1.copy_from_slice(&key[8..]);
        let (k0, k1) = (u64::from_le_bytes(k0), u64::from_le_bytes(k1));
        SipHasher {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        round(&mut self.v);
        round(&mut self.v);
        self.v[0] ^= m;
    }
}

impl SipHasher {
    /// Appends the `n` (1 to 8) low bytes of `v`, little-endian: the bytes
    /// of an integer in one step instead of one at a time (the hash tables
    /// hash 4-tuples field by field on every segment).
    #[inline]
    fn push(&mut self, v: u64, n: usize) {
        debug_assert!((1..=8).contains(&n) && (n == 8 || v >> (8 * n) == 0));
        self.length += n;
        let used = self.ntail;
        self.tail |= v << (8 * used);
        if used + n >= 8 {
            let m = self.tail;
            self.compress(m);
            let taken = 8 - used;
            self.tail = if taken == 8 { 0 } else { v >> (8 * taken) };
            self.ntail = used + n - 8;
        } else {
            self.ntail = used + n;
        }
    }
}

impl Hasher for SipHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0; 8];
            b.copy_from_slice(w);
            self.push(u64::from_le_bytes(b), 8);
        }
        for &b in words.remainder() {
            self.push(u64::from(b), 1);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.push(u64::from(i), 1);
    }

    fn write_u16(&mut self, i: u16) {
        self.push(u64::from(i), 2);
    }

    fn write_u32(&mut self, i: u32) {
        self.push(u64::from(i), 4);
    }

    fn write_u64(&mut self, i: u64) {
        self.push(i, 8);
    }

    fn write_usize(&mut self, i: usize) {
        self.push(i as u64, 8);
    }

    fn finish(&self) -> u64 {
        let mut s = self.clone();
        let b = ((s.length as u64 & 0xff) << 56) | s.tail;
        s.compress(b);
        s.v[2] ^= 0xff;
        for _ in 0..4 {
            round(&mut s.v);
        }
        s.v[0] ^ s.v[1] ^ s.v[2] ^ s.v[3]
    }
}

/// SipHash-2-4 of `data` under `key`.
pub fn siphash(key: &Key, data: &[u8]) -> u64 {
    let mut h = SipHasher::new(key);
    h.write(data);
    h.finish()
}

/// Derives an independent key for one purpose from the endpoint's secret.
pub fn derive_key(secret: &Key, purpose: &[u8]) -> Key {
    let a = siphash(secret, purpose);
    let mut h = SipHasher::new(secret);
    h.write(purpose);
    h.write(&[0xff]);
    let b = h.finish();
    let mut k = [0; 16];
    k[..8].copy_from_slice(&a.to_le_bytes());
    k[8..].copy_from_slice(&b.to_le_bytes());
    k
}

/// A [`BuildHasher`] for hash tables, keyed so that the bucket of a 4-tuple
/// cannot be predicted from outside.
#[derive(Clone, Debug)]
pub struct KeyedState(Key);

impl KeyedState {
    /// A builder with the given key.
    pub fn new(key: Key) -> Self {
        KeyedState(key)
    }
}

impl BuildHasher for KeyedState {
    type Hasher = SipHasher;
    fn build_hasher(&self) -> SipHasher {
        SipHasher::new(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// The reference vectors of the SipHash paper (key 00..0f, message
    /// 00..len-1).
    #[test]
    fn reference_vectors() {
        let key: Key = core::array::from_fn(|i| i as u8);
        let msg: [u8; 15] = core::array::from_fn(|i| i as u8);
        assert_eq!(siphash(&key, &[]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash(&key, &msg[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash(&key, &msg[..8]), 0x93f5_f579_9a93_2462);
        assert_eq!(siphash(&key, &msg), 0xa129_ca61_49be_45e5);
    }

    /// Integers and slices written in any split hash as their little-endian
    /// bytes written one at a time would.
    #[test]
    fn streaming_writes_match_bytewise() {
        let key: Key = core::array::from_fn(|i| (i * 7) as u8);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let mut h = SipHasher::new(&key);
            let mut bytes = Vec::new();
            for _ in 0..(next() % 12) {
                let v = next();
                match next() % 6 {
                    0 => {
                        h.write_u8(v as u8);
                        bytes.extend_from_slice(&(v as u8).to_le_bytes());
                    }
                    1 => {
                        h.write_u16(v as u16);
                        bytes.extend_from_slice(&(v as u16).to_le_bytes());
                    }
                    2 => {
                        h.write_u32(v as u32);
                        bytes.extend_from_slice(&(v as u32).to_le_bytes());
                    }
                    3 => {
                        h.write_u64(v);
                        bytes.extend_from_slice(&v.to_le_bytes());
                    }
                    4 => {
                        h.write_usize(v as usize);
                        bytes.extend_from_slice(&v.to_le_bytes());
                    }
                    _ => {
                        let s: Vec<u8> = (0..(v % 20)).map(|i| (v >> (i % 8)) as u8).collect();
                        h.write(&s);
                        bytes.extend_from_slice(&s);
                    }
                }
            }
            let mut one = SipHasher::new(&key);
            for b in &bytes {
                one.write(core::slice::from_ref(b));
            }
            assert_eq!(h.finish(), one.finish(), "{bytes:?}");
            assert_eq!(h.finish(), siphash(&key, &bytes));
        }
    }
}
