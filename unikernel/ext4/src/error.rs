//! Errors of the reader.

use core::fmt;

/// The caller's [`BlockRead`](crate::BlockRead) failed (device error, or a
/// read past the end of the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoError;

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("I/O error")
    }
}

/// Everything that can go wrong mounting or reading an ext4 file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ext4Error {
    /// Reading the device failed.
    Io(IoError),
    /// The superblock's magic number is not `0xef53`.
    BadMagic(u16),
    /// The device is smaller than the file system says it is.
    Truncated {
        /// Bytes the file system needs.
        needed: u64,
        /// Bytes the device has.
        size: u64,
    },
    /// Incompatible feature bits this reader does not know.
    UnknownIncompat(u32),
    /// A known feature this reader does not support (its name).
    Unsupported(&'static str),
    /// A superblock field is out of range (which one).
    BadSuperblock(&'static str),
    /// The superblock checksum does not match (`metadata_csum`).
    SuperblockChecksum,
    /// A group descriptor checksum does not match (`metadata_csum`).
    GroupDescriptorChecksum(u32),
    /// On-disk metadata is inconsistent (what was being read).
    Corrupt(&'static str),
    /// An inode number outside `1..=inodes_count`.
    BadInode(u64),
    /// The inode is not a directory.
    NotADirectory,
    /// The inode is not a symbolic link.
    NotASymlink,
    /// A name longer than 255 bytes, or empty.
    BadName,
}

/// Result of this crate.
pub type Result<T> = core::result::Result<T, Ext4Error>;

impl From<IoError> for Ext4Error {
    fn from(e: IoError) -> Self {
        Ext4Error::Io(e)
    }
}

impl fmt::Display for Ext4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ext4Error::Io(e) => write!(f, "{e}"),
            Ext4Error::BadMagic(m) => {
                write!(
                    f,
                    "not an ext2/3/4 file system (magic {m:#06x}, want 0xef53)"
                )
            }
            Ext4Error::Truncated { needed, size } => write!(
                f,
                "image truncated: the file system needs {needed} bytes, the device has {size}"
            ),
            Ext4Error::UnknownIncompat(bits) => {
                write!(f, "unknown incompatible features {bits:#x}")
            }
            Ext4Error::Unsupported(name) => write!(f, "unsupported feature: {name}"),
            Ext4Error::BadSuperblock(what) => write!(f, "bad superblock: {what}"),
            Ext4Error::SuperblockChecksum => f.write_str("superblock checksum mismatch"),
            Ext4Error::GroupDescriptorChecksum(g) => {
                write!(f, "group descriptor {g} checksum mismatch")
            }
            Ext4Error::Corrupt(what) => write!(f, "corrupt file system: {what}"),
            Ext4Error::BadInode(i) => write!(f, "inode number {i} out of range"),
            Ext4Error::NotADirectory => f.write_str("not a directory"),
            Ext4Error::NotASymlink => f.write_str("not a symbolic link"),
            Ext4Error::BadName => f.write_str("bad file name"),
        }
    }
}

impl core::error::Error for Ext4Error {}
