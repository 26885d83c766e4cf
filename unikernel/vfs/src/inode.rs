//! The object model: superblock ([`FileSystem`]) and [`Inode`] traits.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::error::{Result, VfsError};

/// Size of a page-cache page in bytes.
pub const PAGE_SIZE: usize = 4096;

/// A shared reference to an inode.
pub type InodeRef = Arc<dyn Inode>;
/// A shared reference to a mounted file system (its superblock).
pub type FsRef = Arc<dyn FileSystem>;

/// The type of a file, as the `S_IFMT` bits of `st_mode`.
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
}

impl FileKind {
    /// The `S_IFMT` bits of this kind.
    pub const fn mode_bits(self) -> u32 {
        match self {
            FileKind::Fifo => 0o010000,
            FileKind::CharDevice => 0o020000,
            FileKind::Directory => 0o040000,
            FileKind::BlockDevice => 0o060000,
            FileKind::Regular => 0o100000,
            FileKind::Symlink => 0o120000,
            FileKind::Socket => 0o140000,
        }
    }

    /// The kind encoded in the `S_IFMT` bits of `mode`, if valid.
    pub const fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & 0o170000 {
            0o010000 => FileKind::Fifo,
            0o020000 => FileKind::CharDevice,
            0o040000 => FileKind::Directory,
            0o060000 => FileKind::BlockDevice,
            0o100000 => FileKind::Regular,
            0o120000 => FileKind::Symlink,
            0o140000 => FileKind::Socket,
            _ => return None,
        })
    }

    /// The `d_type` value for `getdents64` (`DT_REG` = 8 etc.).
    pub const fn dirent_type(self) -> u8 {
        match self {
            FileKind::Fifo => 1,
            FileKind::CharDevice => 2,
            FileKind::Directory => 4,
            FileKind::BlockDevice => 6,
            FileKind::Regular => 8,
            FileKind::Symlink => 10,
            FileKind::Socket => 12,
        }
    }
}

/// A point in time, seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timespec {
    /// Whole seconds.
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: u32,
}

/// File metadata, the fields of `struct stat` this kernel needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Device number of the containing file system (filled in by [`crate::Vfs`]).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// File type.
    pub kind: FileKind,
    /// Permission bits (`0o7777` part of `st_mode`).
    pub perm: u32,
    /// Number of hard links.
    pub nlink: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Preferred I/O block size.
    pub blksize: u32,
    /// Number of 512-byte blocks allocated.
    pub blocks: u64,
    /// Last access time.
    pub atime: Timespec,
    /// Last modification time.
    pub mtime: Timespec,
    /// Last status change time.
    pub ctime: Timespec,
}

impl Stat {
    /// A stat with the given identity, kind and size and defaults elsewhere
    /// (`perm` 0o644 or 0o755 for directories, one link, 4 KiB blocks).
    pub fn new(ino: u64, kind: FileKind, size: u64) -> Self {
        Self {
            dev: 0,
            ino,
            kind,
            perm: if kind == FileKind::Directory {
                0o755
            } else {
                0o644
            },
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            size,
            blksize: PAGE_SIZE as u32,
            blocks: size.div_ceil(512),
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
        }
    }

    /// The full `st_mode` (type bits | permission bits).
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | (self.perm & 0o7777)
    }
}

/// File-system statistics (`struct statfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatFs {
    /// File-system type magic (`TMPFS_MAGIC`, `EXT4_SUPER_MAGIC`, ...).
    pub fs_type: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub blocks_free: u64,
    /// Free blocks available to unprivileged users.
    pub blocks_avail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub files_free: u64,
    /// Maximum file-name length.
    pub name_max: u64,
    /// Whether the file system is mounted read-only (`ST_RDONLY`).
    pub read_only: bool,
}

/// One directory entry produced by [`Inode::readdir`].
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    /// Inode number of the entry.
    pub ino: u64,
    /// Type of the entry.
    pub kind: FileKind,
    /// Entry name.
    pub name: &'a str,
    /// Offset (cookie) to pass to `readdir` to continue *after* this entry.
    pub next_offset: u64,
}

/// Callback receiving directory entries; returns `false` to stop (buffer full).
pub type DirSink<'a> = dyn FnMut(DirEntry<'_>) -> bool + 'a;

/// Emits the `.` (offset 0, inode `ino`) and `..` (offset 1, inode
/// `parent`) entries a directory listing starts with, those `offset` has
/// not passed yet. `None` when `sink` asked to stop, else the offset the
/// listing goes on from (at least 2).
pub fn dot_entries(ino: u64, parent: u64, offset: u64, sink: &mut DirSink<'_>) -> Option<u64> {
    for (at, name, ino) in [(0, ".", ino), (1, "..", parent)] {
        if offset <= at
            && !sink(DirEntry {
                ino,
                kind: FileKind::Directory,
                name,
                next_offset: at + 1,
            })
        {
            return None;
        }
    }
    Some(offset.max(2))
}

/// A mounted file system instance (Linux's `struct super_block`).
pub trait FileSystem: Send + Sync {
    /// The root directory inode.
    fn root(&self) -> InodeRef;
    /// File-system statistics.
    fn statfs(&self) -> StatFs;
    /// The file-system type name, e.g. `"tmpfs"` or `"ext4"`.
    fn name(&self) -> &str;
    /// Whether the file system rejects all modifications.
    fn read_only(&self) -> bool {
        self.statfs().read_only
    }
}

/// An inode (Linux's `struct inode` plus its `inode_operations` and the
/// `address_space_operations` the page cache needs).
///
/// Mutating operations default to `EROFS`, so a read-only file system such as
/// the ext4 root only implements the read side. Directory operations on
/// non-directories default to `ENOTDIR`.
pub trait Inode: Send + Sync {
    /// Inode number, unique within the file system.
    fn ino(&self) -> u64;

    /// File type. Must be cheap: path walks call it for every component.
    fn kind(&self) -> FileKind;

    /// Current metadata.
    fn stat(&self) -> Result<Stat>;

    /// Looks up `name` in this directory. `ENOENT` if absent (the dentry
    /// cache then records a negative entry).
    fn lookup(&self, name: &str) -> Result<InodeRef> {
        let _ = name;
        Err(VfsError::ENOTDIR)
    }

    /// Lists directory entries starting at the opaque cookie `offset`
    /// (0 = beginning, including `.` and `..`), passing each to `sink` until it
    /// returns `false` or the directory ends.
    fn readdir(&self, offset: u64, sink: &mut DirSink<'_>) -> Result<()> {
        let _ = (offset, sink);
        Err(VfsError::ENOTDIR)
    }

    /// Fills `buf` with page number `index` of the file contents (bytes
    /// `index * PAGE_SIZE ..`), returning how many bytes are valid (less than
    /// `PAGE_SIZE` only for the last page; the page cache zeroes the rest).
    ///
    /// `buf` is the page cache's own page (in the kernel: a physical frame
    /// reachable through the direct map), so a block driver can DMA straight
    /// into it. No lock of this crate is held during the call.
    fn read_page(&self, index: u64, buf: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let _ = (index, buf);
        Err(if self.kind() == FileKind::Directory {
            VfsError::EISDIR
        } else {
            VfsError::EINVAL
        })
    }

    /// Fills consecutive pages from `index` (`bufs[i]` is page `index + i`)
    /// and returns the valid bytes of each, as [`read_page`](Self::read_page)
    /// does for one. The page cache uses it for readahead windows, so a
    /// block device can have all their requests in flight at once. The
    /// default reads the pages one by one.
    fn read_pages(&self, index: u64, bufs: &mut [&mut [u8; PAGE_SIZE]]) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        out.try_reserve_exact(bufs.len())
            .map_err(|_| VfsError::ENOMEM)?;
        for (i, buf) in bufs.iter_mut().enumerate() {
            out.push(self.read_page(index + i as u64, buf)?);
        }
        Ok(out)
    }

    /// Writes `data` at byte `offset`, extending the file as needed.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<usize> {
        let _ = (offset, data);
        Err(VfsError::EROFS)
    }

    /// Sets the file size, zero-filling on extension.
    fn truncate(&self, size: u64) -> Result<()> {
        let _ = size;
        Err(VfsError::EROFS)
    }

    /// Creates a regular file `name` in this directory.
    fn create(&self, name: &str, perm: u32) -> Result<InodeRef> {
        let _ = (name, perm);
        Err(VfsError::EROFS)
    }

    /// Creates a directory `name` in this directory.
    fn mkdir(&self, name: &str, perm: u32) -> Result<InodeRef> {
        let _ = (name, perm);
        Err(VfsError::EROFS)
    }

    /// Creates a symbolic link `name` pointing at `target`.
    fn symlink(&self, name: &str, target: &str) -> Result<InodeRef> {
        let _ = (name, target);
        Err(VfsError::EROFS)
    }

    /// Removes the non-directory entry `name`.
    fn unlink(&self, name: &str) -> Result<()> {
        let _ = name;
        Err(VfsError::EROFS)
    }

    /// Removes the empty directory `name`.
    fn rmdir(&self, name: &str) -> Result<()> {
        let _ = name;
        Err(VfsError::EROFS)
    }

    /// The target of a symbolic link.
    fn readlink(&self) -> Result<String> {
        Err(VfsError::EINVAL)
    }
}
