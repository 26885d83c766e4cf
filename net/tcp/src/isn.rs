//! Initial sequence numbers (RFC 6528) and ephemeral ports (RFC 6056).

use core::hash::Hasher;
use core::net::IpAddr;

use crate::hash::{Key, SipHasher, siphash};
use crate::seq::Seq;
use crate::wire::{FourTuple, ipv6_bytes};

/// RFC 6528: `ISN = M + F(localip, localport, remoteip, remoteport, key)`,
/// with `M` a clock ticking every 4 microseconds and `F` keyed SipHash-2-4.
/// Different keys or tuples give unrelated ISNs; for one tuple the ISN
/// advances with the clock, so a new incarnation starts above the old one.
pub fn initial_seq(key: &Key, tuple: &FourTuple, now_us: u64) -> Seq {
    let m = (now_us / 4) as u32;
    let f = siphash(key, &tuple.hash_bytes()) as u32;
    Seq(m.wrapping_add(f))
}

/// A per-connection offset for the timestamp clock (RFC 7323 section 5.4),
/// so that TSval does not reveal the host's uptime.
pub fn ts_offset(key: &Key, tuple: &FourTuple) -> u32 {
    let mut h = SipHasher::new(key);
    h.write(b"ts");
    h.write(&tuple.hash_bytes());
    h.finish() as u32
}

/// Ephemeral port selection, RFC 6056 algorithm 3 ("simple hash-based"):
/// the search for a free port starts at a keyed hash of (local address,
/// remote address, remote port) plus a counter, so ports are unpredictable
/// to third parties yet successive connections to one peer do not collide.
#[derive(Clone, Debug)]
pub struct EphemeralPorts {
    key: Key,
    next: u16,
    first: u16,
    count: u16,
}

impl EphemeralPorts {
    /// Ports `first..=last` (the IANA range is 49152..=65535).
    pub fn new(key: Key, first: u16, last: u16) -> Self {
        let (first, last) = (first.max(1), last.max(first.max(1)));
        EphemeralPorts {
            next: siphash(&key, b"next") as u16,
            key,
            first,
            count: last - first + 1,
        }
    }

    /// A port for a connection from `local` to `remote:remote_port` for
    /// which `in_use` is false; `None` when every port is taken.
    pub fn pick(
        &mut self,
        local: IpAddr,
        remote: IpAddr,
        remote_port: u16,
        mut in_use: impl FnMut(u16) -> bool,
    ) -> Option<u16> {
        let mut h = SipHasher::new(&self.key);
        h.write(&ipv6_bytes(local));
        h.write(&ipv6_bytes(remote));
        h.write(&remote_port.to_be_bytes());
        let offset = h.finish() as u32;
        let n = u32::from(self.count);
        for _ in 0..n {
            let port = self.first + (offset.wrapping_add(u32::from(self.next)) % n) as u16;
            self.next = self.next.wrapping_add(1);
            if !in_use(port) {
                return Some(port);
            }
        }
        None
    }
}
