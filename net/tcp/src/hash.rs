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

impl Hasher for SipHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.length += bytes.len();
        for &b in bytes {
            self.tail |= u64::from(b) << (8 * self.ntail);
            self.ntail += 1;
            if self.ntail == 8 {
                let m = self.tail;
                self.compress(m);
                self.tail = 0;
                self.ntail = 0;
            }
        }
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
}
