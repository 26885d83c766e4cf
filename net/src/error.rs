//! Socket errors with Linux errno values.

use core::fmt;

/// A `std::io::ErrorKind`-like classification of [`NetError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The operation would block (try again once the socket is ready).
    WouldBlock,
    /// The address or port is already in use.
    AddrInUse,
    /// The requested address is not available on this host.
    AddrNotAvailable,
    /// The remote refused the connection.
    ConnectionRefused,
    /// The remote reset the connection.
    ConnectionReset,
    /// The socket is not connected.
    NotConnected,
    /// The socket is already connected.
    AlreadyConnected,
    /// The write half is closed.
    BrokenPipe,
    /// An argument was invalid.
    InvalidInput,
    /// Out of buffer space or socket slots.
    OutOfMemory,
    /// The operation timed out.
    TimedOut,
    /// The socket id does not name a socket of the right kind.
    BadDescriptor,
    /// An operation is already in progress.
    InProgress,
}

/// A socket error. [`NetError::errno`] gives the Linux errno value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// EAGAIN (11).
    WouldBlock,
    /// EADDRINUSE (98).
    AddrInUse,
    /// EADDRNOTAVAIL (99).
    AddrNotAvailable,
    /// ECONNREFUSED (111).
    ConnRefused,
    /// ECONNRESET (104).
    ConnReset,
    /// ENOTCONN (107).
    NotConnected,
    /// EISCONN (106).
    IsConnected,
    /// EPIPE (32).
    BrokenPipe,
    /// EINVAL (22).
    InvalidInput,
    /// ENOBUFS (105).
    NoBufs,
    /// ETIMEDOUT (110).
    TimedOut,
    /// EBADF (9).
    BadFd,
    /// EALREADY (114).
    Already,
}

impl NetError {
    /// The Linux errno value (positive).
    pub const fn errno(self) -> i32 {
        match self {
            NetError::WouldBlock => 11,
            NetError::AddrInUse => 98,
            NetError::AddrNotAvailable => 99,
            NetError::ConnRefused => 111,
            NetError::ConnReset => 104,
            NetError::NotConnected => 107,
            NetError::IsConnected => 106,
            NetError::BrokenPipe => 32,
            NetError::InvalidInput => 22,
            NetError::NoBufs => 105,
            NetError::TimedOut => 110,
            NetError::BadFd => 9,
            NetError::Already => 114,
        }
    }

    /// The `io::ErrorKind`-like classification.
    pub const fn kind(self) -> ErrorKind {
        match self {
            NetError::WouldBlock => ErrorKind::WouldBlock,
            NetError::AddrInUse => ErrorKind::AddrInUse,
            NetError::AddrNotAvailable => ErrorKind::AddrNotAvailable,
            NetError::ConnRefused => ErrorKind::ConnectionRefused,
            NetError::ConnReset => ErrorKind::ConnectionReset,
            NetError::NotConnected => ErrorKind::NotConnected,
            NetError::IsConnected => ErrorKind::AlreadyConnected,
            NetError::BrokenPipe => ErrorKind::BrokenPipe,
            NetError::InvalidInput => ErrorKind::InvalidInput,
            NetError::NoBufs => ErrorKind::OutOfMemory,
            NetError::TimedOut => ErrorKind::TimedOut,
            NetError::BadFd => ErrorKind::BadDescriptor,
            NetError::Already => ErrorKind::InProgress,
        }
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            NetError::WouldBlock => "operation would block",
            NetError::AddrInUse => "address in use",
            NetError::AddrNotAvailable => "address not available",
            NetError::ConnRefused => "connection refused",
            NetError::ConnReset => "connection reset by peer",
            NetError::NotConnected => "not connected",
            NetError::IsConnected => "already connected",
            NetError::BrokenPipe => "broken pipe",
            NetError::InvalidInput => "invalid argument",
            NetError::NoBufs => "no buffer space",
            NetError::TimedOut => "timed out",
            NetError::BadFd => "bad socket id",
            NetError::Already => "operation already in progress",
        };
        write!(f, "{s} (errno {})", self.errno())
    }
}

impl core::error::Error for NetError {}

/// Result alias for socket operations.
pub type Result<T> = core::result::Result<T, NetError>;
