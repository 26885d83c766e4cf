//! The read-only ext4 root: `uk-ext4` adapted to uk-vfs's
//! `FileSystem`/`Inode` traits, reading a `BlockDevice` (virtio-blk,
//! virtio-scsi or NVMe; or one partition of it).
//!
//! Inode numbers are the file system's own, so hard links are one inode
//! (one set of page-cache pages). Metadata (directories, the inode table,
//! extent-tree blocks) goes through uk-ext4's small block cache; its lock is
//! only held around cache lookups and inserts, never across disk I/O, so
//! there is no global lock: lookups and page fills of any number of threads
//! proceed concurrently, with the virtio-blk driver's requests in flight.
//!
//! Data path of `Inode::read_page` (a page-cache miss): uk-ext4 maps the
//! page's file blocks to disk blocks (the inode's last extent is cached, so
//! a sequential read walks the extent tree once per extent), and each
//! contiguous run of disk blocks is read by one virtio-blk request *into
//! the page-cache frame itself*: the frame is identity mapped and physically
//! contiguous, so the HAL shares it with the device without a bounce
//! buffer (`drivers::hal::BOUNCED_BYTES` does not move) and the CPU copies
//! nothing (there is no copy in this path to count). Holes and the tail
//! past the end of the file are zero-filled.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use uk_ext4::{BlockRead, Ext4, Ext4Error, InodeInfo, InodeNum, IoError};
use uk_vfs::{
    DirSink, FileKind, FileSystem, InodeRef, PAGE_SIZE, Result, Stat, StatFs, Timespec, VfsError,
};

use super::KernelLocking;
use crate::drivers::block::{BlockDevice, SECTOR};

/// The disk the file system lives on (any block driver).
type Disk = dyn BlockDevice;

/// `EXT4_SUPER_MAGIC`.
pub const EXT4_MAGIC: u64 = 0xef53;

/// Reads the file system's bytes: `len` bytes of `disk` from byte `base`
/// (a partition, or the whole disk).
struct DiskReader {
    disk: &'static Disk,
    base: u64,
    len: u64,
}

impl BlockRead for DiskReader {
    fn read(&self, byte_offset: u64, buf: &mut [u8]) -> core::result::Result<(), IoError> {
        if byte_offset.saturating_add(buf.len() as u64) > self.len {
            return Err(IoError);
        }
        self.disk
            .read_bytes(self.base + byte_offset, buf)
            .map_err(|_| IoError)
    }

    fn size(&self) -> u64 {
        self.len
    }
}

type Fs = Ext4<DiskReader, KernelLocking>;

/// A mounted ext4 file system.
pub struct Ext4Fs {
    fs: Arc<Fs>,
    root: InodeRef,
}

fn errno(e: Ext4Error) -> VfsError {
    match e {
        Ext4Error::NotADirectory => VfsError::ENOTDIR,
        Ext4Error::NotASymlink => VfsError::EINVAL,
        Ext4Error::BadName => VfsError::ENAMETOOLONG,
        _ => VfsError::EIO,
    }
}

fn kind_of(k: uk_ext4::FileKind) -> FileKind {
    use uk_ext4::FileKind as K;
    match k {
        K::Directory => FileKind::Directory,
        K::Symlink => FileKind::Symlink,
        K::CharDevice => FileKind::CharDevice,
        K::BlockDevice => FileKind::BlockDevice,
        K::Fifo => FileKind::Fifo,
        K::Socket => FileKind::Socket,
        K::Regular | K::Unknown => FileKind::Regular,
    }
}

fn ts(t: uk_ext4::Timestamp) -> Timespec {
    Timespec {
        sec: t.sec,
        nsec: t.nsec,
    }
}

fn stat_of(info: &InodeInfo, block_size: u32) -> Stat {
    let mut st = Stat::new(info.ino.get(), kind_of(info.kind), info.size);
    st.perm = u32::from(info.perm());
    st.nlink = u32::from(info.nlink);
    st.uid = info.uid;
    st.gid = info.gid;
    st.blksize = block_size.max(PAGE_SIZE as u32);
    st.blocks = info.blocks;
    st.atime = ts(info.atime);
    st.mtime = ts(info.mtime);
    st.ctime = ts(info.ctime);
    st
}

fn inode_ref(fs: &Arc<Fs>, ino: InodeNum) -> Result<InodeRef> {
    let info = fs.inode(ino).map_err(errno)?;
    let stat = stat_of(&info, fs.block_size());
    let inode = Ext4Inode {
        fs: fs.clone(),
        info,
        stat,
    };
    let inode: InodeRef = uk_frame::try_arc(inode).map_err(|_| VfsError::ENOMEM)?;
    Ok(inode)
}

impl Ext4Fs {
    /// Loads the file system from `disk`; a corrupt or truncated image gives
    /// the reader's error.
    pub fn mount(disk: &'static Disk) -> core::result::Result<Arc<Self>, String> {
        Self::mount_range(disk, 0, disk.size())
    }

    /// Loads the file system from the `len` bytes of `disk` at byte `base`
    /// (a partition; sector aligned).
    pub fn mount_range(
        disk: &'static Disk,
        base: u64,
        len: u64,
    ) -> core::result::Result<Arc<Self>, String> {
        if base.checked_add(len).is_none_or(|end| end > disk.size()) {
            return Err("partition extends past the end of the disk".into());
        }
        if !base.is_multiple_of(SECTOR as u64) {
            return Err("partition does not start on a sector boundary".into());
        }
        let reader = DiskReader { disk, base, len };
        let fs = Arc::new(Fs::mount(reader).map_err(|e| alloc::format!("{e}"))?);
        let root = inode_ref(&fs, fs.root()).map_err(|e| alloc::format!("root directory: {e}"))?;
        Ok(Arc::new(Self { fs, root }))
    }

    /// uk-ext4's metadata cache counters.
    pub fn cache_stats(&self) -> uk_ext4::CacheStats {
        self.fs.cache_stats()
    }
}

impl FileSystem for Ext4Fs {
    fn root(&self) -> InodeRef {
        self.root.clone()
    }

    fn statfs(&self) -> StatFs {
        let sb = self.fs.superblock();
        StatFs {
            fs_type: EXT4_MAGIC,
            block_size: u64::from(sb.block_size),
            blocks: sb.blocks_count,
            blocks_free: sb.free_blocks,
            blocks_avail: sb.free_blocks,
            files: u64::from(sb.inodes_count),
            files_free: u64::from(sb.free_inodes),
            name_max: 255,
            read_only: true,
        }
    }

    fn name(&self) -> &str {
        "ext4"
    }
}

/// A file, directory or symlink of an [`Ext4Fs`].
pub struct Ext4Inode {
    fs: Arc<Fs>,
    info: InodeInfo,
    stat: Stat,
}

impl uk_vfs::Inode for Ext4Inode {
    fn ino(&self) -> u64 {
        self.stat.ino
    }

    fn kind(&self) -> FileKind {
        self.stat.kind
    }

    fn stat(&self) -> Result<Stat> {
        Ok(self.stat)
    }

    fn lookup(&self, name: &str) -> Result<InodeRef> {
        if self.stat.kind != FileKind::Directory {
            return Err(VfsError::ENOTDIR);
        }
        if name.len() > 255 {
            return Err(VfsError::ENAMETOOLONG);
        }
        match self
            .fs
            .lookup(self.info.ino, name.as_bytes())
            .map_err(errno)?
        {
            Some(ino) => inode_ref(&self.fs, ino),
            None => Err(VfsError::ENOENT),
        }
    }

    fn readdir(&self, offset: u64, sink: &mut DirSink<'_>) -> Result<()> {
        if self.stat.kind != FileKind::Directory {
            return Err(VfsError::ENOTDIR);
        }
        // The cookie is the byte position in the directory (uk-ext4's
        // `next_pos`), so a listing resumes where it stopped.
        let mut err = None;
        self.fs
            .read_dir_from(self.info.ino, offset, |e| {
                let Ok(name) = core::str::from_utf8(e.name) else {
                    return true; // not UTF-8: not reachable through this VFS
                };
                let kind = match e.kind {
                    uk_ext4::FileKind::Unknown => match self.fs.inode(e.ino) {
                        Ok(i) => kind_of(i.kind),
                        Err(x) => {
                            err = Some(errno(x));
                            return false;
                        }
                    },
                    k => kind_of(k),
                };
                sink(uk_vfs::DirEntry {
                    ino: e.ino.get(),
                    kind,
                    name,
                    next_offset: e.next_pos,
                })
            })
            .map_err(errno)?;
        err.map_or(Ok(()), Err)
    }

    fn read_page(&self, index: u64, buf: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        self.read_pages(index, &mut [buf]).map(|v| v[0])
    }

    fn read_pages(&self, index: u64, bufs: &mut [&mut [u8; PAGE_SIZE]]) -> Result<Vec<usize>> {
        match self.stat.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(VfsError::EISDIR),
            _ => return Err(VfsError::EINVAL),
        }
        let r = self.fs.reader();
        let page = PAGE_SIZE as u64;
        let bs = u64::from(self.fs.block_size());
        let mut lens = Vec::with_capacity(bufs.len());
        // One request per run of disk blocks inside one frame; all of them
        // in flight together.
        let mut reqs: Vec<(u64, &mut [u8])> = Vec::with_capacity(bufs.len());
        for (k, buf) in bufs.iter_mut().enumerate() {
            let pos = (index + k as u64) * page;
            let valid = self.info.size.saturating_sub(pos).min(page) as usize;
            lens.push(valid);
            // Whole blocks (or, for blocks over 4 KiB, the page's part of
            // one) covering the valid bytes: always whole sectors, inside
            // the frame.
            let span = (valid as u64).div_ceil(bs.min(page)) * bs.min(page);
            let mut rest: &mut [u8] = &mut buf[..span as usize];
            let mut off = 0u64;
            while off < span {
                let fpos = pos + off;
                let fb = fpos / bs;
                let in_block = fpos % bs;
                let want = (in_block + span - off).div_ceil(bs);
                let ext = self.fs.map_blocks_of(&self.info, fb, want).map_err(errno)?;
                let run = (ext.len * bs - in_block).min(span - off);
                let (dst, more) = core::mem::take(&mut rest).split_at_mut(run as usize);
                rest = more;
                match ext.phys_block {
                    None => dst.fill(0),
                    Some(phys) => {
                        let at = phys * bs + in_block;
                        if at + run > r.len {
                            return Err(VfsError::EIO);
                        }
                        reqs.push(((r.base + at) / SECTOR as u64, dst));
                    }
                }
                off += run;
            }
        }
        match reqs.as_mut_slice() {
            [] => {}
            [(sector, dst)] => r.disk.read(*sector, dst)?,
            many => r.disk.read_batch(many)?,
        }
        // The tail past the end of the file (the last block's slack on disk
        // need not be zero).
        for (buf, &valid) in bufs.iter_mut().zip(&lens) {
            buf[valid..].fill(0);
        }
        Ok(lens)
    }

    fn readlink(&self) -> Result<String> {
        if self.stat.kind != FileKind::Symlink {
            return Err(VfsError::EINVAL);
        }
        let target = self.fs.readlink(self.info.ino).map_err(errno)?;
        String::from_utf8(target).map_err(|_| VfsError::EINVAL)
    }
}
