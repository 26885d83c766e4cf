//! A read-only ext4 reader, `no_std` + `alloc`, with no `unsafe`: what the
//! kernel needs to serve files from a disk image made by `mkfs.ext4 -d`.
//!
//! The caller supplies the device as a [`BlockRead`] and a lock family
//! ([`uk_vfs::Locking`]). [`Ext4::mount`] reads and checks the superblock
//! and group descriptors (checksums too under `metadata_csum`); from then on
//! the file system is a set of inodes:
//!
//! - [`Ext4::lookup`], [`Ext4::read_dir`]: directory entries with their real
//!   inode numbers (hard links share one);
//! - [`Ext4::inode`]: size, mode, times, link count;
//! - [`Ext4::map_blocks`]: where a run of file blocks lives on disk (or that
//!   it is a hole), so the caller can read file data *itself*, straight into
//!   its own buffers (the kernel DMAs into page-cache frames);
//! - [`Ext4::readlink`], and [`Ext4::read_at`] for callers that just want
//!   bytes (tests, tools).
//!
//! Metadata (inode table, extent tree, directory and indirect blocks) is
//! read through a small bounded cache of whole blocks with LRU eviction;
//! each inode's last looked-up extent is cached too, so a sequential read
//! walks the extent tree once per extent. No lock is held while reading the
//! device: the cache's lock covers only lookups and inserts, so readers of
//! different files (or the same one) run concurrently.
//!
//! Supported: 1 KiB .. 64 KiB blocks, `64bit`, `extents` (any depth) and
//! old-style block maps, `flex_bg`, `sparse_super`/`sparse_super2` (only
//! backup locations, which a reader never needs), `metadata_csum`
//! (superblock and group descriptors are verified), `dir_index` (htree
//! directories are read as the linear directories they also are),
//! `huge_file`, `dir_nlink`, `extra_isize`, `large_dir`, uninitialized
//! extents (read as zeros). Refused with [`Ext4Error::Unsupported`]:
//! `inline_data`, `meta_bg`, `encrypt`, `casefold`, a journal that needs
//! recovery; unknown incompatible bits give [`Ext4Error::UnknownIncompat`].
//! Malformed metadata gives [`Ext4Error::Corrupt`], never a panic.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod cache;
mod crc32c;
mod dir;
mod error;
mod inode;
mod map;
mod superblock;

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use uk_vfs::{Locking, Mutex};

pub use cache::CacheStats;
pub use error::{Ext4Error, IoError, Result};
pub use inode::{FileKind, InodeInfo, InodeNum, Timestamp, flags};
pub use superblock::{EXT4_MAGIC, Superblock, incompat, ro_compat};

use cache::{BlockBuf, BlockCache, ExtentCache};

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The device under the file system, implemented by the caller.
pub trait BlockRead {
    /// Fills `buf` with the bytes at `byte_offset`. The reader only asks
    /// for ranges inside `0..size()`.
    fn read(&self, byte_offset: u64, buf: &mut [u8]) -> core::result::Result<(), IoError>;

    /// Size of the device in bytes.
    fn size(&self) -> u64;
}

impl BlockRead for [u8] {
    fn read(&self, byte_offset: u64, buf: &mut [u8]) -> core::result::Result<(), IoError> {
        let start = usize::try_from(byte_offset).map_err(|_| IoError)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(IoError)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl BlockRead for Vec<u8> {
    fn read(&self, byte_offset: u64, buf: &mut [u8]) -> core::result::Result<(), IoError> {
        self.as_slice().read(byte_offset, buf)
    }

    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl<T: BlockRead + ?Sized> BlockRead for &T {
    fn read(&self, byte_offset: u64, buf: &mut [u8]) -> core::result::Result<(), IoError> {
        (**self).read(byte_offset, buf)
    }

    fn size(&self) -> u64 {
        (**self).size()
    }
}

/// Mount options.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Metadata blocks kept in the cache.
    pub cache_blocks: usize,
    /// Inodes whose last extent is remembered.
    pub extent_cache: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_blocks: 256,
            extent_cache: 64,
        }
    }
}

/// A run of file blocks: `len` blocks from the requested one, at disk block
/// `phys_block` onwards, or a hole (`None`: reads as zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First disk block of the run, `None` for a hole.
    pub phys_block: Option<u64>,
    /// Blocks in the run (at least 1 when at least 1 was asked for).
    pub len: u64,
}

/// One directory entry.
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    /// The inode the entry names.
    pub ino: InodeNum,
    /// The name (bytes; ext4 does not require UTF-8).
    pub name: &'a [u8],
    /// The type recorded in the entry ([`FileKind::Unknown`] without the
    /// `filetype` feature).
    pub kind: FileKind,
    /// Position just after this entry, to resume with [`Ext4::read_dir_from`].
    pub next_pos: u64,
}

/// A mounted, read-only ext4 file system over `R`, with locks of family `L`.
pub struct Ext4<R, L: Locking> {
    reader: R,
    sb: Superblock,
    /// Each group's first inode-table block.
    inode_tables: Vec<u64>,
    cache: Mutex<L, BlockCache>,
    extents: Mutex<L, ExtentCache>,
}

/// Longest symbolic link target read (`PATH_MAX`).
pub const MAX_LINK: u64 = 4096;

impl<R: BlockRead, L: Locking> Ext4<R, L> {
    /// Mounts the file system on `reader` with default [`Options`].
    pub fn mount(reader: R) -> Result<Self> {
        Self::mount_with(reader, Options::default())
    }

    /// Mounts the file system on `reader`: checks the superblock, features
    /// and group descriptors, and that the root inode is a directory.
    pub fn mount_with(reader: R, opts: Options) -> Result<Self> {
        let size = reader.size();
        if size < 2048 {
            return Err(Ext4Error::Truncated { needed: 2048, size });
        }
        let mut raw = [0u8; 1024];
        reader.read(1024, &mut raw)?;
        let sb = Superblock::parse(&raw, size)?;
        let gdt_len = u64::from(sb.group_count) * u64::from(sb.desc_size);
        let gdt_end = sb.gdt_offset() + gdt_len;
        if gdt_end > size {
            return Err(Ext4Error::Truncated {
                needed: gdt_end,
                size,
            });
        }
        let mut gdt = vec![0u8; gdt_len as usize];
        reader.read(sb.gdt_offset(), &mut gdt)?;
        let inode_tables = sb.parse_groups(&gdt)?;
        let fs = Self {
            reader,
            sb,
            inode_tables,
            cache: Mutex::new(BlockCache::new(opts.cache_blocks)),
            extents: Mutex::new(ExtentCache::new(opts.extent_cache)),
        };
        if fs.inode(InodeNum::ROOT)?.kind != FileKind::Directory {
            return Err(Ext4Error::Corrupt("the root inode is not a directory"));
        }
        Ok(fs)
    }

    /// The superblock's fields.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    /// The root directory (inode 2).
    pub fn root(&self) -> InodeNum {
        InodeNum::ROOT
    }

    /// The device.
    pub fn reader(&self) -> &R {
        &self.reader
    }

    /// Metadata cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        let (extent_hits, extent_misses) = self.extents.with(|c| (c.hits, c.misses));
        CacheStats {
            extent_hits,
            extent_misses,
            ..self.cache.with(|c| c.stats())
        }
    }

    /// Reads disk block `block` through the metadata cache (the device is
    /// read without the lock held).
    pub(crate) fn read_block(&self, block: u64) -> Result<Arc<BlockBuf>> {
        if block >= self.sb.blocks_count {
            return Err(Ext4Error::Corrupt("block number past the end"));
        }
        if let Some(b) = self.cache.with(|c| c.get(block)) {
            return Ok(b);
        }
        let bs = u64::from(self.sb.block_size);
        let mut buf = BlockBuf::new(bs as usize);
        self.reader.read(block * bs, buf.bytes_mut())?;
        let buf = Arc::new(buf);
        Ok(self.cache.with(|c| c.insert(block, buf)))
    }

    /// The inode `ino`.
    pub fn inode(&self, ino: InodeNum) -> Result<InodeInfo> {
        if ino.0 == 0 || ino.0 > self.sb.inodes_count {
            return Err(Ext4Error::BadInode(ino.get()));
        }
        let index = u64::from(ino.0 - 1);
        let ipg = u64::from(self.sb.inodes_per_group);
        let table = *self
            .inode_tables
            .get((index / ipg) as usize)
            .ok_or(Ext4Error::BadInode(ino.get()))?;
        let isz = u64::from(self.sb.inode_size);
        let bs = u64::from(self.sb.block_size);
        let byte = (index % ipg) * isz;
        let block = self.read_block(table + byte / bs)?;
        let at = (byte % bs) as usize;
        let raw = block
            .bytes()
            .get(at..at + isz as usize)
            .ok_or(Ext4Error::Corrupt("inode table"))?;
        InodeInfo::parse(&self.sb, ino, raw)
    }

    /// Looks `name` up in directory `dir`.
    pub fn lookup(&self, dir: InodeNum, name: &[u8]) -> Result<Option<InodeNum>> {
        if name.is_empty() || name.len() > 255 {
            return Err(Ext4Error::BadName);
        }
        let info = self.inode(dir)?;
        if info.kind != FileKind::Directory {
            return Err(Ext4Error::NotADirectory);
        }
        let mut found = None;
        self.walk_dir(&info, 0, &mut |e| {
            if e.name == name {
                found = Some(e.ino);
                false
            } else {
                true
            }
        })?;
        Ok(found)
    }

    /// Passes every entry of directory `dir` (`.` and `..` included, in
    /// on-disk order) to `f` until it returns `false`.
    pub fn read_dir(&self, dir: InodeNum, f: impl FnMut(DirEntry<'_>) -> bool) -> Result<()> {
        self.read_dir_from(dir, 0, f)
    }

    /// Like [`read_dir`](Self::read_dir), starting at position `pos` (0, or
    /// a [`DirEntry::next_pos`]).
    pub fn read_dir_from(
        &self,
        dir: InodeNum,
        pos: u64,
        mut f: impl FnMut(DirEntry<'_>) -> bool,
    ) -> Result<()> {
        let info = self.inode(dir)?;
        if info.kind != FileKind::Directory {
            return Err(Ext4Error::NotADirectory);
        }
        self.walk_dir(&info, pos, &mut f)
    }

    /// The target of symbolic link `ino`.
    pub fn readlink(&self, ino: InodeNum) -> Result<Vec<u8>> {
        let info = self.inode(ino)?;
        if info.kind != FileKind::Symlink {
            return Err(Ext4Error::NotASymlink);
        }
        if info.size > MAX_LINK {
            return Err(Ext4Error::Corrupt("symbolic link too long"));
        }
        if info.is_fast_symlink(self.sb.block_size) {
            return Ok(info.i_block[..info.size as usize].to_vec());
        }
        let mut out = vec![0u8; info.size as usize];
        let n = self.read_at(&info, 0, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Where `count` file blocks of inode `ino` from `file_block` live: the
    /// first run (mapped or hole), at most `count` blocks long.
    pub fn map_blocks(&self, ino: InodeNum, file_block: u64, count: u64) -> Result<Extent> {
        if let Some(e) = self.cached_extent(ino, file_block, count) {
            return Ok(e);
        }
        let info = self.inode(ino)?;
        self.map_blocks_of(&info, file_block, count)
    }

    /// [`map_blocks`](Self::map_blocks) for an inode already read (saves
    /// reading the inode again on an extent-cache miss).
    pub fn map_blocks_of(&self, info: &InodeInfo, file_block: u64, count: u64) -> Result<Extent> {
        if let Some(e) = self.cached_extent(info.ino, file_block, count) {
            return Ok(e);
        }
        if count == 0 {
            return Ok(Extent {
                phys_block: None,
                len: 0,
            });
        }
        let e = self.map_uncached(info, file_block)?;
        self.extents.with(|c| {
            c.put(e);
            c.stats_miss();
        });
        Ok(clip(e, file_block, count))
    }

    fn cached_extent(&self, ino: InodeNum, file_block: u64, count: u64) -> Option<Extent> {
        if count == 0 {
            return None;
        }
        let e = self.extents.with(|c| {
            let e = c.find(ino.0, file_block);
            if e.is_some() {
                c.stats_hit();
            }
            e
        })?;
        Some(clip(e, file_block, count))
    }

    /// Reads file bytes at `offset` into `buf` (holes read as zeros);
    /// returns the bytes read, short at the end of the file. Data is read
    /// from the device into `buf` directly, not through the cache.
    pub fn read_at(&self, info: &InodeInfo, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= info.size {
            return Ok(0);
        }
        let n = (info.size - offset).min(buf.len() as u64) as usize;
        let bs = u64::from(self.sb.block_size);
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            let fb = pos / bs;
            let in_block = pos % bs;
            let left = (n - done) as u64;
            let want = (in_block + left).div_ceil(bs);
            let ext = self.map_blocks_of(info, fb, want)?;
            let run = (ext.len * bs - in_block).min(left) as usize;
            let dst = &mut buf[done..done + run];
            match ext.phys_block {
                None => dst.fill(0),
                Some(p) => self.reader.read(p * bs + in_block, dst)?,
            }
            done += run;
        }
        Ok(n)
    }

    /// [`read_at`](Self::read_at) by inode number.
    pub fn read(&self, ino: InodeNum, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let info = self.inode(ino)?;
        self.read_at(&info, offset, buf)
    }
}

fn clip(e: cache::CachedExtent, file_block: u64, count: u64) -> Extent {
    let off = file_block - e.logical;
    Extent {
        phys_block: e.phys.map(|p| p + off),
        len: (e.len - off).min(count),
    }
}
