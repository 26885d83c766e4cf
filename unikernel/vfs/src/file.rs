//! Open files: the generic [`FileOps`] interface that every fd-table entry
//! implements (regular files, directories, later sockets and epoll
//! instances), and [`FileDescription`], the open regular file or directory
//! that reads through the page cache.

use alloc::sync::Arc;
use core::any::Any;
use core::ops::BitOr;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Result, VfsError};
use crate::inode::{DirSink, FileKind, InodeRef, Stat};
use crate::page_cache::{FileId, PageCache, PageFrames};
use crate::readahead::Readahead;
use crate::sync::{Locking, Mutex};

/// `open(2)` flags, Linux x86_64 values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct OpenFlags(pub u32);

impl OpenFlags {
    /// Open for reading only.
    pub const O_RDONLY: Self = Self(0);
    /// Open for writing only.
    pub const O_WRONLY: Self = Self(0o1);
    /// Open for reading and writing.
    pub const O_RDWR: Self = Self(0o2);
    /// Mask of the access mode.
    pub const O_ACCMODE: Self = Self(0o3);
    /// Create the file if missing.
    pub const O_CREAT: Self = Self(0o100);
    /// With `O_CREAT`: fail if the file exists.
    pub const O_EXCL: Self = Self(0o200);
    /// Do not become the controlling terminal.
    pub const O_NOCTTY: Self = Self(0o400);
    /// Truncate a writable regular file to zero length.
    pub const O_TRUNC: Self = Self(0o1000);
    /// Every write appends.
    pub const O_APPEND: Self = Self(0o2000);
    /// Non-blocking I/O.
    pub const O_NONBLOCK: Self = Self(0o4000);
    /// Fail unless the path is a directory.
    pub const O_DIRECTORY: Self = Self(0o200000);
    /// Do not follow a final symbolic link.
    pub const O_NOFOLLOW: Self = Self(0o400000);
    /// Close on exec (an fd-table flag, not a file-status flag).
    pub const O_CLOEXEC: Self = Self(0o2000000);
    /// Flags that `fcntl(F_SETFL)` may change.
    pub const SETFL_MASK: Self = Self(Self::O_APPEND.0 | Self::O_NONBLOCK.0);

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set (use [`OpenFlags::readable`] /
    /// [`OpenFlags::writable`] for the access mode).
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The access-mode bits.
    pub const fn access_mode(self) -> u32 {
        self.0 & Self::O_ACCMODE.0
    }

    /// Whether the access mode permits reading.
    pub const fn readable(self) -> bool {
        matches!(self.access_mode(), 0 | 2)
    }

    /// Whether the access mode permits writing.
    pub const fn writable(self) -> bool {
        matches!(self.access_mode(), 1 | 2)
    }

    /// These flags without the bits of `other`.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl BitOr for OpenFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// `lseek` origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whence {
    /// `SEEK_SET`: from the start.
    Set,
    /// `SEEK_CUR`: from the current offset.
    Cur,
    /// `SEEK_END`: from the end of the file.
    End,
}

impl Whence {
    /// Decodes `SEEK_SET` (0), `SEEK_CUR` (1), `SEEK_END` (2); anything else
    /// (including `SEEK_DATA`/`SEEK_HOLE`) is `EINVAL`.
    pub fn from_raw(whence: i32) -> Result<Self> {
        match whence {
            0 => Ok(Whence::Set),
            1 => Ok(Whence::Cur),
            2 => Ok(Whence::End),
            _ => Err(VfsError::EINVAL),
        }
    }
}

/// Readiness bits, as `poll(2)`/`epoll` report them (`POLLIN` = `EPOLLIN` = 1, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PollEvents(pub u32);

impl PollEvents {
    /// No events.
    pub const NONE: Self = Self(0);
    /// Readable.
    pub const IN: Self = Self(0x001);
    /// Urgent data.
    pub const PRI: Self = Self(0x002);
    /// Writable.
    pub const OUT: Self = Self(0x004);
    /// Error condition.
    pub const ERR: Self = Self(0x008);
    /// Hang-up.
    pub const HUP: Self = Self(0x010);
    /// Invalid fd.
    pub const NVAL: Self = Self(0x020);
    /// Normal data readable.
    pub const RDNORM: Self = Self(0x040);
    /// Normal data writable.
    pub const WRNORM: Self = Self(0x100);
    /// Peer closed its writing half.
    pub const RDHUP: Self = Self(0x2000);

    /// Whether any bit of `other` is set.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for PollEvents {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Operations on an open file description (Linux's `file_operations`).
///
/// Everything in an fd table implements this: regular files and
/// directories ([`FileDescription`]), and later sockets, pipes and epoll
/// instances. Unsupported operations keep their defaults, which return the
/// errno Linux returns for such objects (`ESPIPE` for seeking a stream,
/// `ENOTTY` for an unknown ioctl, ...). The kernel can downcast an
/// `&dyn FileOps` to its concrete type through trait upcasting to `dyn Any`.
pub trait FileOps: Any + Send + Sync {
    /// Reads at the current offset (streams: from the stream).
    fn read(&self, buf: &mut [u8]) -> Result<usize> {
        let _ = buf;
        Err(VfsError::EINVAL)
    }

    /// Writes at the current offset (streams: to the stream).
    fn write(&self, buf: &[u8]) -> Result<usize> {
        let _ = buf;
        Err(VfsError::EINVAL)
    }

    /// Reads at `offset` without moving the file offset.
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let _ = (buf, offset);
        Err(VfsError::ESPIPE)
    }

    /// Writes at `offset` without moving the file offset.
    fn pwrite(&self, buf: &[u8], offset: u64) -> Result<usize> {
        let _ = (buf, offset);
        Err(VfsError::ESPIPE)
    }

    /// Repositions the file offset, returning the new offset.
    fn lseek(&self, offset: i64, whence: Whence) -> Result<u64> {
        let _ = (offset, whence);
        Err(VfsError::ESPIPE)
    }

    /// Metadata of the open object.
    fn fstat(&self) -> Result<Stat> {
        Err(VfsError::ENOTSUP)
    }

    /// Current readiness. Regular files are always readable and writable.
    fn poll(&self) -> PollEvents {
        PollEvents::IN | PollEvents::OUT | PollEvents::RDNORM | PollEvents::WRNORM
    }

    /// Device-specific control (`FIONREAD`, `FIONBIO`, ...).
    fn ioctl(&self, cmd: u32, arg: usize) -> Result<usize> {
        let _ = (cmd, arg);
        Err(VfsError::ENOTTY)
    }

    /// Lists directory entries from the current position, advancing it;
    /// returns the number of entries delivered.
    fn getdents(&self, sink: &mut DirSink<'_>) -> Result<usize> {
        let _ = sink;
        Err(VfsError::ENOTDIR)
    }

    /// Sets the size of the file (`ftruncate`).
    fn truncate(&self, size: u64) -> Result<()> {
        let _ = size;
        Err(VfsError::EINVAL)
    }

    /// File-status flags (`fcntl(F_GETFL)`).
    fn status_flags(&self) -> OpenFlags {
        OpenFlags::O_RDWR
    }

    /// Changes the `F_SETFL`-settable flags (`O_APPEND`, `O_NONBLOCK`).
    fn set_status_flags(&self, flags: OpenFlags) -> Result<()> {
        let _ = flags;
        Err(VfsError::EINVAL)
    }
}

struct Position {
    offset: u64,
    ra: Readahead,
}

/// An open regular file or directory (Linux's `struct file` for them):
/// offset, status flags and readahead state, reading through the shared
/// page cache.
///
/// The offset is read and stored under a short lock, not held across I/O:
/// concurrent `read`s on the *same* description may overlap (as on Linux
/// for non-regular files); separate descriptions are independent.
pub struct FileDescription<L: Locking, F: PageFrames> {
    id: FileId,
    inode: InodeRef,
    kind: FileKind,
    cache: Arc<PageCache<L, F>>,
    flags: AtomicU32,
    pos: Mutex<L, Position>,
}

impl<L: Locking, F: PageFrames> FileDescription<L, F> {
    /// Opens `inode` (identified in the cache by `id`) with `flags`.
    /// `O_CREAT`, `O_EXCL`, `O_TRUNC` and `O_CLOEXEC` are the opener's
    /// business and are not stored.
    pub fn new(id: FileId, inode: InodeRef, cache: Arc<PageCache<L, F>>, flags: OpenFlags) -> Self {
        let kind = inode.kind();
        let stored = flags.without(
            OpenFlags::O_CREAT
                | OpenFlags::O_EXCL
                | OpenFlags::O_TRUNC
                | OpenFlags::O_CLOEXEC
                | OpenFlags::O_NOCTTY,
        );
        Self {
            id,
            inode,
            kind,
            cache,
            flags: AtomicU32::new(stored.bits()),
            pos: Mutex::new(Position {
                offset: 0,
                ra: Readahead::default(),
            }),
        }
    }

    /// The file's cache identity.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// The underlying inode.
    pub fn inode(&self) -> &InodeRef {
        &self.inode
    }

    /// The current offset.
    pub fn offset(&self) -> u64 {
        self.pos.with(|p| p.offset)
    }

    /// Replaces the readahead configuration (maximum window in pages; 0
    /// disables readahead, like `POSIX_FADV_RANDOM`).
    pub fn set_readahead_max(&self, max_pages: u64) {
        self.pos.with(|p| p.ra = Readahead::new(max_pages));
    }

    /// A snapshot of the readahead state.
    pub fn readahead_state(&self) -> Readahead {
        self.pos.with(|p| p.ra.clone())
    }

    /// Runs `f` on the file's readahead state (for reads that bypass
    /// [`FileOps::read`], such as `sendfile`).
    pub fn with_readahead<R>(&self, f: impl FnOnce(&mut Readahead) -> R) -> R {
        self.pos.with(|p| f(&mut p.ra))
    }

    fn flags(&self) -> OpenFlags {
        OpenFlags(self.flags.load(Ordering::Relaxed))
    }

    fn check_read(&self) -> Result<()> {
        if !self.flags().readable() {
            return Err(VfsError::EBADF);
        }
        match self.kind {
            FileKind::Directory => Err(VfsError::EISDIR),
            FileKind::Regular => Ok(()),
            _ => Err(VfsError::EINVAL),
        }
    }

    fn check_write(&self) -> Result<()> {
        if !self.flags().writable() {
            return Err(VfsError::EBADF);
        }
        match self.kind {
            FileKind::Directory => Err(VfsError::EISDIR),
            FileKind::Regular => Ok(()),
            _ => Err(VfsError::EINVAL),
        }
    }

    fn read_with(&self, buf: &mut [u8], offset: u64, ra: &mut Readahead) -> Result<usize> {
        self.cache.read(ra, self.id, &*self.inode, offset, buf)
    }

    fn write_inner(&self, buf: &[u8], offset: u64) -> Result<usize> {
        let n = self.inode.write_at(offset, buf)?;
        self.cache.write_through(self.id, offset, &buf[..n]);
        Ok(n)
    }
}

impl<L: Locking, F: PageFrames> FileOps for FileDescription<L, F> {
    fn read(&self, buf: &mut [u8]) -> Result<usize> {
        self.check_read()?;
        let (offset, mut ra) = self.pos.with(|p| (p.offset, p.ra.clone()));
        let n = self.read_with(buf, offset, &mut ra)?;
        self.pos.with(|p| {
            p.offset = offset + n as u64;
            p.ra = ra;
        });
        Ok(n)
    }

    fn write(&self, buf: &[u8]) -> Result<usize> {
        self.check_write()?;
        let offset = if self.flags().contains(OpenFlags::O_APPEND) {
            self.inode.stat()?.size
        } else {
            self.offset()
        };
        let n = self.write_inner(buf, offset)?;
        self.pos.with(|p| p.offset = offset + n as u64);
        Ok(n)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.check_read()?;
        let mut ra = self.pos.with(|p| p.ra.clone());
        let n = self.read_with(buf, offset, &mut ra)?;
        self.pos.with(|p| p.ra = ra);
        Ok(n)
    }

    fn pwrite(&self, buf: &[u8], offset: u64) -> Result<usize> {
        self.check_write()?;
        // Linux quirk kept: with O_APPEND, pwrite appends.
        let offset = if self.flags().contains(OpenFlags::O_APPEND) {
            self.inode.stat()?.size
        } else {
            offset
        };
        self.write_inner(buf, offset)
    }

    fn lseek(&self, offset: i64, whence: Whence) -> Result<u64> {
        let size = match whence {
            Whence::End => self.inode.stat()?.size,
            _ => 0,
        };
        self.pos.with(|p| {
            let base = match whence {
                Whence::Set => 0,
                Whence::Cur => p.offset,
                Whence::End => size,
            };
            let new = i128::from(base) + i128::from(offset);
            if new < 0 {
                return Err(VfsError::EINVAL);
            }
            let new = u64::try_from(new)
                .ok()
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or(VfsError::EOVERFLOW)?;
            p.offset = new;
            Ok(new)
        })
    }

    fn fstat(&self) -> Result<Stat> {
        let mut st = self.inode.stat()?;
        st.dev = self.id.dev;
        Ok(st)
    }

    fn getdents(&self, sink: &mut DirSink<'_>) -> Result<usize> {
        if self.kind != FileKind::Directory {
            return Err(VfsError::ENOTDIR);
        }
        let start = self.offset();
        let mut next = start;
        let mut count = 0;
        self.inode.readdir(start, &mut |e| {
            let more = sink(e);
            if more {
                next = e.next_offset;
                count += 1;
            }
            more
        })?;
        self.pos.with(|p| p.offset = next);
        Ok(count)
    }

    fn truncate(&self, size: u64) -> Result<()> {
        if !self.flags().writable() {
            return Err(VfsError::EINVAL);
        }
        if self.kind == FileKind::Directory {
            return Err(VfsError::EISDIR);
        }
        self.inode.truncate(size)?;
        self.cache.truncate(self.id, size);
        Ok(())
    }

    fn status_flags(&self) -> OpenFlags {
        self.flags()
    }

    fn set_status_flags(&self, flags: OpenFlags) -> Result<()> {
        let mask = OpenFlags::SETFL_MASK.bits();
        let _ = self
            .flags
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some((old & !mask) | (flags.bits() & mask))
            });
        Ok(())
    }
}
