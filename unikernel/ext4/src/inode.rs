//! On-disk inodes.

use crate::error::{Ext4Error, Result};
use crate::superblock::{Superblock, incompat, ro_compat};
use crate::{le16, le32};

/// An inode number (the root directory is 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InodeNum(pub u32);

impl InodeNum {
    /// The root directory.
    pub const ROOT: InodeNum = InodeNum(2);

    /// The number as a `u64` (as `st_ino`).
    pub const fn get(self) -> u64 {
        self.0 as u64
    }
}

/// Inode flags this reader looks at.
pub mod flags {
    /// `i_blocks` counts file-system blocks, not 512-byte sectors.
    pub const HUGE_FILE: u32 = 0x4_0000;
    /// `i_block` holds an extent tree.
    pub const EXTENTS: u32 = 0x8_0000;
    /// Hashed-tree directory.
    pub const INDEX: u32 = 0x1000;
    /// Data lives inside the inode.
    pub const INLINE_DATA: u32 = 0x1000_0000;
    /// Encrypted contents.
    pub const ENCRYPT: u32 = 0x800;
}

/// The type of a file (the `S_IFMT` bits of its mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Regular file.
    Regular,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    Fifo,
    /// Unix-domain socket.
    Socket,
    /// Anything else (or, in a directory entry, not recorded).
    Unknown,
}

impl FileKind {
    /// The kind of the `S_IFMT` bits of `mode`.
    pub const fn from_mode(mode: u16) -> Self {
        match mode & 0xf000 {
            0x1000 => FileKind::Fifo,
            0x2000 => FileKind::CharDevice,
            0x4000 => FileKind::Directory,
            0x6000 => FileKind::BlockDevice,
            0x8000 => FileKind::Regular,
            0xa000 => FileKind::Symlink,
            0xc000 => FileKind::Socket,
            _ => FileKind::Unknown,
        }
    }

    /// The kind of a directory entry's `file_type` byte.
    pub const fn from_dirent(t: u8) -> Self {
        match t {
            1 => FileKind::Regular,
            2 => FileKind::Directory,
            3 => FileKind::CharDevice,
            4 => FileKind::BlockDevice,
            5 => FileKind::Fifo,
            6 => FileKind::Socket,
            7 => FileKind::Symlink,
            _ => FileKind::Unknown,
        }
    }
}

/// A point in time: seconds since the Unix epoch and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Seconds (may be negative).
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: u32,
}

/// What a reader needs to know about an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeInfo {
    /// Its number.
    pub ino: InodeNum,
    /// Full mode (type and permission bits).
    pub mode: u16,
    /// File type.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard links.
    pub nlink: u16,
    /// Allocated space in 512-byte units.
    pub blocks: u64,
    /// Inode flags (`EXT4_*_FL`).
    pub flags: u32,
    /// Last access.
    pub atime: Timestamp,
    /// Last modification.
    pub mtime: Timestamp,
    /// Last status change.
    pub ctime: Timestamp,
    /// Creation (zero if not recorded).
    pub crtime: Timestamp,
    /// Extended-attribute block (0 if none).
    pub(crate) file_acl: u64,
    /// `i_block`: an extent tree root, a block map, or a fast symlink.
    pub(crate) i_block: [u8; 60],
}

impl InodeInfo {
    /// Parses the on-disk inode `raw` (`inode_size` bytes).
    pub(crate) fn parse(sb: &Superblock, ino: InodeNum, raw: &[u8]) -> Result<Self> {
        if raw.len() < 128 {
            return Err(Ext4Error::Corrupt("inode"));
        }
        let mode = le16(raw, 0x00);
        let kind = FileKind::from_mode(mode);
        let flags = le32(raw, 0x20);
        let mut size = u64::from(le32(raw, 0x04));
        if kind == FileKind::Regular || sb.feature_incompat & incompat::LARGEDIR != 0 {
            size |= u64::from(le32(raw, 0x6c)) << 32;
        }
        let mut blocks = u64::from(le32(raw, 0x1c));
        if sb.feature_ro_compat & ro_compat::HUGE_FILE != 0 {
            blocks |= u64::from(le16(raw, 0x74)) << 32;
            if flags & flags::HUGE_FILE != 0 {
                blocks = blocks.saturating_mul(u64::from(sb.block_size / 512));
            }
        }
        let extra = if raw.len() > 128 {
            let e = usize::from(le16(raw, 0x80));
            if 128 + e <= raw.len() { e } else { 0 }
        } else {
            0
        };
        // An `_extra` field exists if the inode's extra part covers it.
        let extra_at = |at: usize| (at + 4 <= 128 + extra).then(|| le32(raw, at));
        let time = |at: usize, extra_field: usize| {
            let base = le32(raw, at) as i32 as i64;
            match extra_at(extra_field) {
                Some(x) => Timestamp {
                    sec: base + (i64::from(x & 3) << 32),
                    nsec: (x >> 2).min(999_999_999),
                },
                None => Timestamp { sec: base, nsec: 0 },
            }
        };
        let crtime = match extra_at(0x90) {
            Some(_) => time(0x90, 0x94),
            None => Timestamp::default(),
        };
        let mut i_block = [0u8; 60];
        i_block.copy_from_slice(&raw[0x28..0x64]);
        Ok(Self {
            ino,
            mode,
            kind,
            size,
            uid: u32::from(le16(raw, 0x02)) | (u32::from(le16(raw, 0x78)) << 16),
            gid: u32::from(le16(raw, 0x18)) | (u32::from(le16(raw, 0x7a)) << 16),
            nlink: le16(raw, 0x1a),
            blocks,
            flags,
            atime: time(0x08, 0x8c),
            ctime: time(0x0c, 0x84),
            mtime: time(0x10, 0x88),
            crtime,
            file_acl: u64::from(le32(raw, 0x68)) | (u64::from(le16(raw, 0x76)) << 32),
            i_block,
        })
    }

    /// Permission bits (`mode & 0o7777`).
    pub fn perm(&self) -> u16 {
        self.mode & 0o7777
    }

    /// Whether a symlink's target is stored in the inode itself.
    pub(crate) fn is_fast_symlink(&self, block_size: u32) -> bool {
        let ea_blocks = if self.file_acl != 0 {
            u64::from(block_size / 512)
        } else {
            0
        };
        // Linux's rule (`ext4_inode_is_fast_symlink`): no data blocks.
        self.kind == FileKind::Symlink
            && self.size < 60
            && self.blocks.saturating_sub(ea_blocks) == 0
    }
}
