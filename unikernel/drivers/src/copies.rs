//! Copy accounting: bytes the CPU copied at each stage of the data paths.
//! Counted where the copies happen (the file system, the socket layer, the
//! network driver); it lives in the lowest crate that counts, the drivers, and
//! `unikernel::io` re-exports it.

use core::sync::atomic::{AtomicU64, Ordering};

/// Bytes the CPU copied at each stage of the data paths.
pub struct CopyCounters {
    /// Page cache → application buffer (`read` of a file).
    pub cache_to_app: AtomicU64,
    /// Application buffer → socket buffer (`write`/`send` to a socket).
    pub app_to_socket: AtomicU64,
    /// Page cache → socket buffer (`sendfile`).
    pub cache_to_socket: AtomicU64,
    /// Socket buffer → device buffer (the stack building frames).
    pub socket_to_device: AtomicU64,
    /// Bytes covered by software checksums (transmit and receive).
    pub checksummed: AtomicU64,
}

/// The global copy counters.
pub static COPIES: CopyCounters = CopyCounters {
    cache_to_app: AtomicU64::new(0),
    app_to_socket: AtomicU64::new(0),
    cache_to_socket: AtomicU64::new(0),
    socket_to_device: AtomicU64::new(0),
    checksummed: AtomicU64::new(0),
};

impl CopyCounters {
    /// Adds `n` bytes to counter `c`.
    pub fn add(&self, c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> CopyStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CopyStats {
            cache_to_app: l(&self.cache_to_app),
            app_to_socket: l(&self.app_to_socket),
            cache_to_socket: l(&self.cache_to_socket),
            socket_to_device: l(&self.socket_to_device),
            checksummed: l(&self.checksummed),
        }
    }
}

/// A snapshot of [`CopyCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Page cache → application buffer.
    pub cache_to_app: u64,
    /// Application buffer → socket buffer.
    pub app_to_socket: u64,
    /// Page cache → socket buffer.
    pub cache_to_socket: u64,
    /// Socket buffer → device buffer.
    pub socket_to_device: u64,
    /// Bytes checksummed in software.
    pub checksummed: u64,
}

impl CopyStats {
    /// Payload copies above the device (what the data path chooses).
    pub fn path_copies(&self) -> u64 {
        self.cache_to_app + self.app_to_socket + self.cache_to_socket
    }

    /// Every copy, the device stage included.
    pub fn total(&self) -> u64 {
        self.path_copies() + self.socket_to_device
    }

    /// The difference `self - earlier`.
    pub fn since(&self, earlier: &CopyStats) -> CopyStats {
        CopyStats {
            cache_to_app: self.cache_to_app - earlier.cache_to_app,
            app_to_socket: self.app_to_socket - earlier.app_to_socket,
            cache_to_socket: self.cache_to_socket - earlier.cache_to_socket,
            socket_to_device: self.socket_to_device - earlier.socket_to_device,
            checksummed: self.checksummed - earlier.checksummed,
        }
    }
}

impl core::fmt::Display for CopyStats {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "cache_to_app={} app_to_socket={} cache_to_socket={} socket_to_device={} checksummed={}",
            self.cache_to_app,
            self.app_to_socket,
            self.cache_to_socket,
            self.socket_to_device,
            self.checksummed
        )
    }
}
