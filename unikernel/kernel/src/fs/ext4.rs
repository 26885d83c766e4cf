//! The read-only ext4 root: `ext4-view` adapted to uk-vfs's
//! [`FileSystem`]/[`Inode`] traits, reading through a virtio-blk [`Disk`].
//!
//! `ext4-view` is path based and single threaded (`Rc`/`RefCell` inside), so
//! the whole `Ext4` instance lives behind one sleeping mutex: a lookup or a
//! page fill may block on disk I/O while holding it. Inodes remember their
//! path; inode numbers are assigned per path on first sight (ext4-view does
//! not expose them), stable for the life of the mount.
//!
//! Data path of [`Inode::read_page`]: ext4-view maps the file block and reads
//! a run of blocks through its own block cache (one virtio-blk request into
//! that cache's buffer), then copies the page into the page-cache frame.
//! ext4-view has no API to map a file block to a disk block for the caller,
//! so the DMA cannot land in the page-cache frame directly; the copy is
//! counted in [`COPIED_BYTES`]. An open `File` per recently used inode is
//! kept, so sequential page fills never re-walk the extent tree.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use ext4_view::{Ext4, Ext4Error, Ext4Read, Metadata};
use uk_vfs::{
    DirSink, FileKind, FileSystem, InodeRef, PAGE_SIZE, Result, Stat, StatFs, Timespec, VfsError,
};

use crate::drivers::virtio_blk::Disk;
use crate::sync::Mutex;

/// `EXT4_SUPER_MAGIC`.
pub const EXT4_MAGIC: u64 = 0xef53;
/// Bytes copied from ext4-view's block cache into page-cache frames.
pub static COPIED_BYTES: AtomicU64 = AtomicU64::new(0);
/// Open files kept for sequential page fills.
const OPEN_FILES: usize = 8;

struct DiskReader(&'static Disk);

#[derive(Debug)]
struct IoError;

impl core::fmt::Display for IoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("virtio-blk I/O error")
    }
}

impl core::error::Error for IoError {}

impl Ext4Read for DiskReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> core::result::Result<(), Box<dyn core::error::Error + Send + Sync + 'static>> {
        if start_byte.saturating_add(dst.len() as u64) > self.0.size() {
            return Err(Box::new(IoError));
        }
        self.0
            .read_bytes(start_byte, dst)
            .map_err(|_| Box::new(IoError).into())
    }
}

struct State {
    fs: Ext4,
    /// Recently used open files, most recent last.
    open: Vec<(String, ext4_view::File)>,
    inos: BTreeMap<String, u64>,
    next_ino: u64,
}

// SAFETY: `Ext4` and `ext4_view::File` hold `Rc`s that never leave `State`:
// every clone lives inside this struct or on the stack of a function that
// holds the mutex around it, so the reference counts are only touched by
// one thread at a time, under that mutex.
unsafe impl Send for State {}

struct Shared {
    state: Mutex<State>,
    blocks: u64,
}

/// A mounted ext4 file system.
pub struct Ext4Fs {
    shared: Arc<Shared>,
    root: InodeRef,
}

fn errno(e: &Ext4Error) -> VfsError {
    match e {
        Ext4Error::NotFound => VfsError::ENOENT,
        Ext4Error::NotADirectory => VfsError::ENOTDIR,
        Ext4Error::IsADirectory => VfsError::EISDIR,
        Ext4Error::NotASymlink | Ext4Error::NotAbsolute | Ext4Error::MalformedPath => {
            VfsError::EINVAL
        }
        Ext4Error::PathTooLong => VfsError::ENAMETOOLONG,
        Ext4Error::TooManySymlinks => VfsError::ELOOP,
        Ext4Error::FileTooLarge => VfsError::EFBIG,
        _ => VfsError::EIO,
    }
}

fn kind_of(m: &Metadata) -> FileKind {
    let t = m.file_type();
    if t.is_dir() {
        FileKind::Directory
    } else if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_block_dev() {
        FileKind::BlockDevice
    } else if t.is_char_dev() {
        FileKind::CharDevice
    } else if t.is_fifo() {
        FileKind::Fifo
    } else if t.is_socket() {
        FileKind::Socket
    } else {
        FileKind::Regular
    }
}

fn ts(t: ext4_view::Timestamp) -> Timespec {
    Timespec {
        sec: t.seconds(),
        nsec: t.nanoseconds(),
    }
}

impl State {
    fn ino(&mut self, path: &str) -> u64 {
        if path == "/" {
            return 2;
        }
        if let Some(&i) = self.inos.get(path) {
            return i;
        }
        let i = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(path.to_string(), i);
        i
    }

    fn stat(&mut self, path: &str) -> Result<Stat> {
        let m = self.fs.symlink_metadata(path).map_err(|e| errno(&e))?;
        let kind = kind_of(&m);
        let mut st = Stat::new(self.ino(path), kind, m.len());
        st.perm = u32::from(m.mode()) & 0o7777;
        st.uid = m.uid();
        st.gid = m.gid();
        st.atime = ts(m.accessed());
        st.mtime = ts(m.modified());
        st.ctime = st.mtime;
        Ok(st)
    }
}

impl Ext4Fs {
    /// Loads the file system from `disk`; a corrupt or truncated image gives
    /// the loader's error.
    pub fn mount(disk: &'static Disk) -> core::result::Result<Arc<Self>, String> {
        let fs = Ext4::load(Box::new(DiskReader(disk))).map_err(|e| alloc::format!("{e}"))?;
        let mut state = State {
            fs,
            open: Vec::new(),
            inos: BTreeMap::new(),
            next_ino: 1_000,
        };
        let root_stat = state
            .stat("/")
            .map_err(|e| alloc::format!("root directory: {e}"))?;
        if root_stat.kind != FileKind::Directory {
            return Err("root is not a directory".into());
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            blocks: disk.size() / 4096,
        });
        let root: InodeRef = Arc::new(Ext4Inode {
            shared: shared.clone(),
            path: "/".into(),
            stat: root_stat,
        });
        Ok(Arc::new(Self { shared, root }))
    }
}

impl FileSystem for Ext4Fs {
    fn root(&self) -> InodeRef {
        self.root.clone()
    }

    fn statfs(&self) -> StatFs {
        StatFs {
            fs_type: EXT4_MAGIC,
            block_size: 4096,
            blocks: self.shared.blocks,
            blocks_free: 0,
            blocks_avail: 0,
            files: 0,
            files_free: 0,
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
    shared: Arc<Shared>,
    path: String,
    stat: Stat,
}

impl Ext4Inode {
    fn child(&self, name: &str) -> String {
        if self.path == "/" {
            alloc::format!("/{name}")
        } else {
            alloc::format!("{}/{name}", self.path)
        }
    }
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
        let path = self.child(name);
        let stat = self.shared.state.lock().stat(&path)?;
        Ok(Arc::new(Ext4Inode {
            shared: self.shared.clone(),
            path,
            stat,
        }))
    }

    fn readdir(&self, offset: u64, sink: &mut DirSink<'_>) -> Result<()> {
        if self.stat.kind != FileKind::Directory {
            return Err(VfsError::ENOTDIR);
        }
        let entries = {
            let mut st = self.shared.state.lock();
            let iter = st.fs.read_dir(self.path.as_str()).map_err(|e| errno(&e))?;
            let mut names = Vec::new();
            for e in iter {
                let e = e.map_err(|e| errno(&e))?;
                let Ok(name) = e.file_name().as_str() else {
                    continue; // not UTF-8: not reachable through this VFS
                };
                let kind = e
                    .file_type()
                    .map(|t| {
                        if t.is_dir() {
                            FileKind::Directory
                        } else if t.is_symlink() {
                            FileKind::Symlink
                        } else {
                            FileKind::Regular
                        }
                    })
                    .unwrap_or(FileKind::Regular);
                names.push((name.to_string(), kind));
            }
            names.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Vec::with_capacity(names.len());
            for (name, kind) in names {
                let ino = match name.as_str() {
                    "." => self.stat.ino,
                    ".." => 2,
                    n => st.ino(&self.child(n)),
                };
                out.push((name, kind, ino));
            }
            out
        };
        for (i, (name, kind, ino)) in entries.iter().enumerate().skip(offset as usize) {
            let more = sink(uk_vfs::DirEntry {
                ino: *ino,
                kind: *kind,
                name,
                next_offset: i as u64 + 1,
            });
            if !more {
                break;
            }
        }
        Ok(())
    }

    fn read_page(&self, index: u64, buf: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        match self.stat.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(VfsError::EISDIR),
            _ => return Err(VfsError::EINVAL),
        }
        let pos = index * PAGE_SIZE as u64;
        if pos >= self.stat.size {
            return Ok(0);
        }
        let mut st = self.shared.state.lock();
        let st = &mut *st;
        let slot = match st.open.iter().position(|(p, _)| *p == self.path) {
            Some(i) => {
                let e = st.open.remove(i);
                st.open.push(e);
                st.open.len() - 1
            }
            None => {
                let f = st.fs.open(self.path.as_str()).map_err(|e| errno(&e))?;
                if st.open.len() >= OPEN_FILES {
                    st.open.remove(0);
                }
                st.open.push((self.path.clone(), f));
                st.open.len() - 1
            }
        };
        let file = &mut st.open[slot].1;
        if file.position() != pos {
            file.seek_to(pos).map_err(|e| errno(&e))?;
        }
        let mut n = 0;
        while n < PAGE_SIZE {
            match file.read_bytes(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => {
                    // The open file's position is unknown now: drop it.
                    st.open.pop();
                    return Err(errno(&e));
                }
            }
        }
        COPIED_BYTES.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn readlink(&self) -> Result<String> {
        if self.stat.kind != FileKind::Symlink {
            return Err(VfsError::EINVAL);
        }
        let st = self.shared.state.lock();
        let target = st.fs.read_link(self.path.as_str()).map_err(|e| errno(&e))?;
        target
            .to_str()
            .map(|s| s.to_string())
            .map_err(|_| VfsError::EINVAL)
    }
}
