//! Error type with Linux errno values.

use core::fmt;

/// Result alias used throughout the crate.
pub type Result<T, E = VfsError> = core::result::Result<T, E>;

macro_rules! errors {
    ($( $(#[$doc:meta])* $name:ident = $val:expr, $text:expr; )*) => {
        /// A VFS error; each variant carries the Linux errno it maps to.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum VfsError {
            $( $(#[$doc])* $name, )*
        }

        impl VfsError {
            /// The positive Linux errno value (x86_64 numbering).
            pub const fn errno(self) -> i32 {
                match self { $( VfsError::$name => $val, )* }
            }

            /// Maps a positive errno value back to an error, if known.
            pub const fn from_errno(errno: i32) -> Option<Self> {
                match errno { $( $val => Some(VfsError::$name), )* _ => None }
            }

            /// The symbolic name, for example `"ENOENT"`.
            pub const fn name(self) -> &'static str {
                match self { $( VfsError::$name => stringify!($name), )* }
            }

            /// A short human-readable description (as `strerror`).
            pub const fn description(self) -> &'static str {
                match self { $( VfsError::$name => $text, )* }
            }
        }
    };
}

errors! {
    /// Operation not permitted.
    EPERM = 1, "operation not permitted";
    /// No such file or directory.
    ENOENT = 2, "no such file or directory";
    /// Input/output error.
    EIO = 5, "input/output error";
    /// Bad file descriptor.
    EBADF = 9, "bad file descriptor";
    /// Resource temporarily unavailable (would block).
    EAGAIN = 11, "resource temporarily unavailable";
    /// Out of memory.
    ENOMEM = 12, "cannot allocate memory";
    /// Permission denied.
    EACCES = 13, "permission denied";
    /// Bad address.
    EFAULT = 14, "bad address";
    /// Device or resource busy (e.g. a mount point).
    EBUSY = 16, "device or resource busy";
    /// File exists.
    EEXIST = 17, "file exists";
    /// Cross-device link.
    EXDEV = 18, "invalid cross-device link";
    /// Not a directory.
    ENOTDIR = 20, "not a directory";
    /// Is a directory.
    EISDIR = 21, "is a directory";
    /// Invalid argument.
    EINVAL = 22, "invalid argument";
    /// Too many open files in the system.
    ENFILE = 23, "too many open files in system";
    /// Too many open files (fd table limit).
    EMFILE = 24, "too many open files";
    /// Inappropriate ioctl for device.
    ENOTTY = 25, "inappropriate ioctl for device";
    /// File too large.
    EFBIG = 27, "file too large";
    /// No space left on device.
    ENOSPC = 28, "no space left on device";
    /// Illegal seek.
    ESPIPE = 29, "illegal seek";
    /// Read-only file system.
    EROFS = 30, "read-only file system";
    /// Too many links.
    EMLINK = 31, "too many links";
    /// Broken pipe.
    EPIPE = 32, "broken pipe";
    /// Numerical result out of range.
    ERANGE = 34, "numerical result out of range";
    /// File name too long.
    ENAMETOOLONG = 36, "file name too long";
    /// Function not implemented.
    ENOSYS = 38, "function not implemented";
    /// Directory not empty.
    ENOTEMPTY = 39, "directory not empty";
    /// Too many levels of symbolic links.
    ELOOP = 40, "too many levels of symbolic links";
    /// Value too large for defined data type.
    EOVERFLOW = 75, "value too large for defined data type";
    /// Socket operation on non-socket.
    ENOTSOCK = 88, "socket operation on non-socket";
    /// Operation not supported.
    ENOTSUP = 95, "operation not supported";
    /// Address already in use.
    EADDRINUSE = 98, "address already in use";
    /// Cannot assign requested address.
    EADDRNOTAVAIL = 99, "cannot assign requested address";
    /// Connection reset by peer.
    ECONNRESET = 104, "connection reset by peer";
    /// No buffer space available.
    ENOBUFS = 105, "no buffer space available";
    /// Transport endpoint is already connected.
    EISCONN = 106, "transport endpoint is already connected";
    /// Transport endpoint is not connected.
    ENOTCONN = 107, "transport endpoint is not connected";
    /// Connection timed out.
    ETIMEDOUT = 110, "connection timed out";
    /// Connection refused.
    ECONNREFUSED = 111, "connection refused";
    /// Operation already in progress.
    EALREADY = 114, "operation already in progress";
}

impl VfsError {
    /// The negative errno, as a Linux system call returns it.
    pub const fn to_syscall_ret(self) -> isize {
        -(self.errno() as isize)
    }
}

impl fmt::Display for VfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.name(),
            self.errno(),
            self.description()
        )
    }
}

impl core::error::Error for VfsError {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn errno_values_match_linux() {
        let table = [
            (VfsError::ENOENT, 2),
            (VfsError::EIO, 5),
            (VfsError::EBADF, 9),
            (VfsError::EAGAIN, 11),
            (VfsError::ENOMEM, 12),
            (VfsError::EACCES, 13),
            (VfsError::EEXIST, 17),
            (VfsError::ENOTDIR, 20),
            (VfsError::EISDIR, 21),
            (VfsError::EINVAL, 22),
            (VfsError::EMFILE, 24),
            (VfsError::ENOSPC, 28),
            (VfsError::ESPIPE, 29),
            (VfsError::EROFS, 30),
            (VfsError::ENAMETOOLONG, 36),
            (VfsError::ENOSYS, 38),
            (VfsError::ENOTSUP, 95),
        ];
        for (e, n) in table {
            assert_eq!(e.errno(), n);
            assert_eq!(VfsError::from_errno(n), Some(e));
        }
        assert_eq!(VfsError::from_errno(9999), None);
        assert_eq!(VfsError::ENOENT.to_syscall_ret(), -2);
    }

    #[test]
    fn display_mentions_name_and_number() {
        let s = VfsError::ENAMETOOLONG.to_string();
        assert!(s.contains("ENAMETOOLONG"));
        assert!(s.contains("36"));
    }
}
