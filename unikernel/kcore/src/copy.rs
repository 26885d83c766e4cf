//! The one copy primitive: every CPU copy of payload bytes on the data
//! paths goes through [`copy_into`] or [`append_into`], which copy and add
//! the bytes they moved to a counter, or through their per-stage forms
//! [`CopyCounters::copy`] and [`CopyCounters::append`]. Counters are never
//! computed from what a caller reports afterwards; a copy that is not made
//! (a page referenced instead) is not counted.
//!
//! Each component that copies owns its counters (the page cache, the
//! network stack, the NIC driver: a `CopyCounters` each; the TCP engine's
//! receive queues: plain per-queue counts, summed per connection); the
//! kernel sums them per stage.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// Where a copy moves payload from and to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Page cache → application buffer (`read` of a file).
    CacheToApp = 0,
    /// Application buffer → socket send buffer (`write` to a socket).
    AppToSocket = 1,
    /// Page cache → socket send buffer (a `sendfile` that copies).
    CacheToSocket = 2,
    /// Socket send buffer → device transmit buffer (no scatter-gather).
    SocketToDevice = 3,
    /// Device receive buffer → socket receive buffer.
    DeviceToSocket = 4,
    /// Socket receive buffer → application buffer.
    SocketToApp = 5,
    /// Application bytes → a TLS record (the record layer's encryption
    /// writes them into the record buffer; file bytes included).
    AppToTls = 6,
    /// A decrypted TLS record → the application's buffer.
    TlsToApp = 7,
}

/// Copies `src` into `dst` (equal lengths) and adds the bytes to `count`.
///
/// # Panics
/// If the lengths differ (as `copy_from_slice`).
#[inline]
pub fn copy_into(count: &mut u64, dst: &mut [u8], src: &[u8]) {
    dst.copy_from_slice(src);
    *count += src.len() as u64;
}

/// Appends `src` to `dst` and adds the bytes to `count`.
#[inline]
pub fn append_into(count: &mut u64, dst: &mut Vec<u8>, src: &[u8]) {
    dst.extend_from_slice(src);
    *count += src.len() as u64;
}

/// Drops the first `n` bytes of `v`, moving the rest to the front (no
/// allocation), and adds the bytes moved to `count`.
#[inline]
pub fn drain_front(count: &mut u64, v: &mut Vec<u8>, n: usize) {
    let n = n.min(v.len());
    v.drain(..n);
    *count += v.len() as u64;
}

/// Number of stages.
pub const STAGES: usize = 8;

impl Stage {
    /// Every stage, in counter order.
    pub const ALL: [Stage; STAGES] = [
        Stage::CacheToApp,
        Stage::AppToSocket,
        Stage::CacheToSocket,
        Stage::SocketToDevice,
        Stage::DeviceToSocket,
        Stage::SocketToApp,
        Stage::AppToTls,
        Stage::TlsToApp,
    ];

    /// The counter's name in stats lines.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::CacheToApp => "cache_to_app",
            Stage::AppToSocket => "app_to_socket",
            Stage::CacheToSocket => "cache_to_socket",
            Stage::SocketToDevice => "socket_to_device",
            Stage::DeviceToSocket => "device_to_socket",
            Stage::SocketToApp => "socket_to_app",
            Stage::AppToTls => "app_to_tls",
            Stage::TlsToApp => "tls_to_app",
        }
    }
}

/// Bytes copied per stage (atomic: shared by reference).
#[derive(Debug, Default)]
pub struct CopyCounters([AtomicU64; STAGES]);

impl CopyCounters {
    /// All zero.
    pub const fn new() -> Self {
        CopyCounters([const { AtomicU64::new(0) }; STAGES])
    }

    /// Copies `src` into `dst` (equal lengths) and counts the bytes under `stage`.
    ///
    /// # Panics
    /// If the lengths differ (as `copy_from_slice`).
    #[inline]
    pub fn copy(&self, stage: Stage, dst: &mut [u8], src: &[u8]) {
        let mut n = 0;
        copy_into(&mut n, dst, src);
        self.0[stage as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Appends `src` to `dst` and counts the bytes under `stage`.
    #[inline]
    pub fn append(&self, stage: Stage, dst: &mut Vec<u8>, src: &[u8]) {
        let mut n = 0;
        append_into(&mut n, dst, src);
        self.0[stage as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` bytes that a library copied itself under `stage`, where
    /// the copy cannot go through [`copy`](Self::copy): rustls' record
    /// encryption writes the plaintext into the record buffer. `n` is the
    /// exact length the library reported taking for that copy.
    pub fn count(&self, stage: Stage, n: usize) {
        self.0[stage as usize].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> CopyStats {
        CopyStats(core::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
    }
}

/// A snapshot of [`CopyCounters`], or a sum of several.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats(pub [u64; STAGES]);

impl CopyStats {
    /// Bytes copied at `stage`.
    pub fn get(&self, stage: Stage) -> u64 {
        self.0[stage as usize]
    }

    /// The per-stage sum of two snapshots.
    pub fn plus(&self, other: &CopyStats) -> CopyStats {
        CopyStats(core::array::from_fn(|i| self.0[i] + other.0[i]))
    }

    /// The per-stage difference `self - earlier` (saturating).
    pub fn since(&self, earlier: &CopyStats) -> CopyStats {
        CopyStats(core::array::from_fn(|i| {
            self.0[i].saturating_sub(earlier.0[i])
        }))
    }

    /// Payload copies on the transmit path above the device (what the data
    /// path chooses: read, write, a copying sendfile).
    pub fn path_copies(&self) -> u64 {
        self.get(Stage::CacheToApp)
            + self.get(Stage::AppToSocket)
            + self.get(Stage::CacheToSocket)
            + self.get(Stage::AppToTls)
    }

    /// Transmit-path copies, the device stage included.
    pub fn transmit_copies(&self) -> u64 {
        self.path_copies() + self.get(Stage::SocketToDevice)
    }
}

impl fmt::Display for CopyStats {
    /// `cache_to_app=N app_to_socket=N ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in Stage::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", s.name(), self.get(*s))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_it_copies() {
        let c = CopyCounters::new();
        let mut dst = [0u8; 5];
        c.copy(Stage::AppToSocket, &mut dst, b"hello");
        assert_eq!(&dst, b"hello");
        let mut v = Vec::new();
        c.append(Stage::DeviceToSocket, &mut v, b"abc");
        c.append(Stage::DeviceToSocket, &mut v, b"d");
        assert_eq!(v, b"abcd");
        let s = c.snapshot();
        assert_eq!(s.get(Stage::AppToSocket), 5);
        assert_eq!(s.get(Stage::DeviceToSocket), 4);
        assert_eq!(s.get(Stage::CacheToApp), 0);
        assert_eq!(s.path_copies(), 5);
        let t = s.plus(&s);
        assert_eq!(t.get(Stage::DeviceToSocket), 8);
        assert_eq!(t.since(&s), s);
        assert_eq!(
            alloc::format!("{s}"),
            "cache_to_app=0 app_to_socket=5 cache_to_socket=0 socket_to_device=0 device_to_socket=4 socket_to_app=0 app_to_tls=0 tls_to_app=0"
        );
        c.count(Stage::AppToTls, 7);
        assert_eq!(c.snapshot().get(Stage::AppToTls), 7);
        assert_eq!(c.snapshot().path_copies(), 12);
    }
}
