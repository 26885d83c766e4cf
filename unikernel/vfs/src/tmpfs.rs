//! tmpfs: a complete in-memory file system.
//!
//! File data lives in a sparse list of 4 KiB pages (holes read as zeros), so
//! large files grow without reallocating one big buffer. Space is accounted in
//! pages against an optional limit (`ENOSPC`). Each inode has its own lock;
//! no operation holds two inode locks at once except parent→child in
//! `rmdir`/`unlink`, always in that order.
//!
//! Note that the page cache caches tmpfs data like any other file system's
//! (tmpfs here is a *backing store*, unlike Linux where the page cache is the
//! tmpfs storage); writes through [`crate::FileDescription`] keep both coherent.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, VfsError};
use crate::inode::{
    DirEntry, DirSink, FileKind, FileSystem, Inode, InodeRef, PAGE_SIZE, Stat, StatFs, Timespec,
};
use crate::path::validate_name;
use crate::sync::{Locking, Mutex};

/// `TMPFS_MAGIC` from Linux `<linux/magic.h>`.
pub const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Largest file size tmpfs accepts (keeps page indices well inside `usize`).
pub const TMPFS_MAX_FILE_SIZE: u64 = 1 << 40;

type PageBuf = Box<[u8; PAGE_SIZE]>;

struct Shared {
    next_ino: AtomicU64,
    used_pages: AtomicU64,
    max_pages: u64,
    inodes: AtomicU64,
    clock: fn() -> Timespec,
}

impl Shared {
    fn reserve_pages(&self, n: u64) -> Result<()> {
        let mut cur = self.used_pages.load(Ordering::Relaxed);
        loop {
            let new = cur.checked_add(n).ok_or(VfsError::ENOSPC)?;
            if new > self.max_pages {
                return Err(VfsError::ENOSPC);
            }
            match self.used_pages.compare_exchange_weak(
                cur,
                new,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }

    fn release_pages(&self, n: u64) {
        self.used_pages.fetch_sub(n, Ordering::Relaxed);
    }
}

fn zero_clock() -> Timespec {
    Timespec::default()
}

/// An in-memory file system instance.
pub struct TmpFs<L: Locking> {
    shared: Arc<Shared>,
    root: Arc<TmpInode<L>>,
}

impl<L: Locking> Default for TmpFs<L> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: Locking> TmpFs<L> {
    /// An unlimited tmpfs whose timestamps are all zero.
    pub fn new() -> Self {
        Self::with_options(u64::MAX, zero_clock)
    }

    /// A tmpfs holding at most `max_bytes` of file data (rounded down to whole
    /// pages), with timestamps taken from `clock`.
    pub fn with_options(max_bytes: u64, clock: fn() -> Timespec) -> Self {
        let shared = Arc::new(Shared {
            next_ino: AtomicU64::new(2),
            used_pages: AtomicU64::new(0),
            max_pages: max_bytes / PAGE_SIZE as u64,
            inodes: AtomicU64::new(0),
            clock,
        });
        let root = TmpInode::with_ino(&shared, 1, 1, FileKind::Directory, 0o1777, 2, None);
        Self { shared, root }
    }

    /// The root directory as its concrete type.
    pub fn root_node(&self) -> Arc<TmpInode<L>> {
        self.root.clone()
    }

    /// Bytes of file data currently stored.
    pub fn used_bytes(&self) -> u64 {
        self.shared.used_pages.load(Ordering::Relaxed) * PAGE_SIZE as u64
    }

    /// Number of live inodes (including the root).
    pub fn inode_count(&self) -> u64 {
        self.shared.inodes.load(Ordering::Relaxed)
    }
}

impl<L: Locking> FileSystem for TmpFs<L> {
    fn root(&self) -> InodeRef {
        self.root.clone()
    }

    fn statfs(&self) -> StatFs {
        let used = self.shared.used_pages.load(Ordering::Relaxed);
        let (blocks, free) = if self.shared.max_pages == u64::MAX / PAGE_SIZE as u64 {
            (0, 0)
        } else {
            (
                self.shared.max_pages,
                self.shared.max_pages.saturating_sub(used),
            )
        };
        StatFs {
            fs_type: TMPFS_MAGIC,
            block_size: PAGE_SIZE as u64,
            blocks,
            blocks_free: free,
            blocks_avail: free,
            files: 0,
            files_free: 0,
            name_max: crate::path::NAME_MAX as u64,
            read_only: false,
        }
    }

    fn name(&self) -> &str {
        "tmpfs"
    }
}

/// A directory's entries, sorted by name: a sorted `Vec` rather than a
/// `BTreeMap<String, _>`, about 5 KiB less code in the image. Lookups are a
/// binary search; adding or removing a name moves the entries after it.
struct Names<V>(Vec<(String, V)>);

impl<V> Names<V> {
    const fn new() -> Self {
        Self(Vec::new())
    }

    fn find(&self, name: &str) -> core::result::Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    fn get(&self, name: &str) -> Option<&V> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Adds or replaces `name`.
    fn insert(&mut self, name: String, value: V) {
        match self.find(&name) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    fn remove(&mut self, name: &str) -> Option<V> {
        let i = self.find(name).ok()?;
        Some(self.0.remove(i).1)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in name order.
    fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.0.iter().map(|(n, v)| (n, v))
    }
}

enum NodeData<L: Locking> {
    File {
        size: u64,
        pages: Vec<Option<PageBuf>>,
    },
    Dir {
        parent_ino: u64,
        entries: Names<Arc<TmpInode<L>>>,
    },
    Symlink(String),
}

struct NodeState<L: Locking> {
    perm: u32,
    nlink: u32,
    atime: Timespec,
    mtime: Timespec,
    ctime: Timespec,
    data: NodeData<L>,
}

/// A tmpfs inode.
pub struct TmpInode<L: Locking> {
    ino: u64,
    kind: FileKind,
    shared: Arc<Shared>,
    state: Mutex<L, NodeState<L>>,
}

impl<L: Locking> Drop for TmpInode<L> {
    fn drop(&mut self) {
        let pages = self.state.with(|s| match &s.data {
            NodeData::File { pages, .. } => pages.iter().filter(|p| p.is_some()).count() as u64,
            _ => 0,
        });
        self.shared.release_pages(pages);
        self.shared.inodes.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<L: Locking> TmpInode<L> {
    fn with_ino(
        shared: &Arc<Shared>,
        ino: u64,
        parent_ino: u64,
        kind: FileKind,
        perm: u32,
        nlink: u32,
        target: Option<&str>,
    ) -> Arc<Self> {
        let now = (shared.clock)();
        let data = match kind {
            FileKind::Directory => NodeData::Dir {
                parent_ino,
                entries: Names::new(),
            },
            FileKind::Symlink => NodeData::Symlink(target.unwrap_or("").to_string()),
            _ => NodeData::File {
                size: 0,
                pages: Vec::new(),
            },
        };
        shared.inodes.fetch_add(1, Ordering::Relaxed);
        Arc::new(Self {
            ino,
            kind,
            shared: shared.clone(),
            state: Mutex::new(NodeState {
                perm: perm & 0o7777,
                nlink,
                atime: now,
                mtime: now,
                ctime: now,
                data,
            }),
        })
    }

    fn now(&self) -> Timespec {
        (self.shared.clock)()
    }

    /// Adds a new child of `kind` under `name`.
    fn add_child(
        &self,
        name: &str,
        kind: FileKind,
        perm: u32,
        target: Option<&str>,
    ) -> Result<InodeRef> {
        validate_name(name)?;
        let now = self.now();
        let shared = &self.shared;
        let my_ino = self.ino;
        self.state.with(|s| {
            if s.nlink == 0 {
                return Err(VfsError::ENOENT);
            }
            let NodeData::Dir { entries, .. } = &mut s.data else {
                return Err(VfsError::ENOTDIR);
            };
            if entries.contains_key(name) {
                return Err(VfsError::EEXIST);
            }
            let ino = shared.next_ino.fetch_add(1, Ordering::Relaxed);
            let nlink = if kind == FileKind::Directory { 2 } else { 1 };
            let child = Self::with_ino(shared, ino, my_ino, kind, perm, nlink, target);
            entries.insert(name.to_string(), child.clone());
            if kind == FileKind::Directory {
                s.nlink += 1;
            }
            s.mtime = now;
            s.ctime = now;
            Ok(child as InodeRef)
        })
    }

    fn remove_child(&self, name: &str, dir: bool) -> Result<()> {
        validate_name(name)?;
        let now = self.now();
        self.state.with(|s| {
            let NodeData::Dir { entries, .. } = &mut s.data else {
                return Err(VfsError::ENOTDIR);
            };
            let child = entries.get(name).ok_or(VfsError::ENOENT)?.clone();
            match (dir, child.kind == FileKind::Directory) {
                (false, true) => return Err(VfsError::EISDIR),
                (true, false) => return Err(VfsError::ENOTDIR),
                _ => {}
            }
            // Lock order: parent, then child.
            child.state.with(|c| {
                if let NodeData::Dir { entries, .. } = &c.data
                    && !entries.is_empty()
                {
                    return Err(VfsError::ENOTEMPTY);
                }
                c.nlink = 0;
                c.ctime = now;
                Ok(())
            })?;
            entries.remove(name);
            if dir {
                s.nlink -= 1;
            }
            s.mtime = now;
            s.ctime = now;
            Ok(())
        })
    }
}

impl<L: Locking> Inode for TmpInode<L> {
    fn ino(&self) -> u64 {
        self.ino
    }

    fn kind(&self) -> FileKind {
        self.kind
    }

    fn stat(&self) -> Result<Stat> {
        Ok(self.state.with(|s| {
            let (size, blocks) = match &s.data {
                NodeData::File { size, pages } => (
                    *size,
                    pages.iter().filter(|p| p.is_some()).count() as u64 * (PAGE_SIZE as u64 / 512),
                ),
                NodeData::Dir { entries, .. } => ((entries.len() as u64 + 2) * 20, 0),
                NodeData::Symlink(t) => (t.len() as u64, 0),
            };
            let mut st = Stat::new(self.ino, self.kind, size);
            st.perm = s.perm;
            st.nlink = s.nlink;
            st.blocks = blocks;
            st.atime = s.atime;
            st.mtime = s.mtime;
            st.ctime = s.ctime;
            st
        }))
    }

    fn lookup(&self, name: &str) -> Result<InodeRef> {
        self.state.with(|s| match &s.data {
            NodeData::Dir { entries, .. } => entries
                .get(name)
                .map(|c| c.clone() as InodeRef)
                .ok_or(VfsError::ENOENT),
            _ => Err(VfsError::ENOTDIR),
        })
    }

    fn readdir(&self, offset: u64, sink: &mut DirSink<'_>) -> Result<()> {
        // Snapshot the entries so the sink runs without the lock held.
        let (parent, list): (u64, Vec<(u64, FileKind, String)>) =
            self.state.with(|s| match &s.data {
                NodeData::Dir {
                    parent_ino,
                    entries,
                } => {
                    let skip = offset.saturating_sub(2) as usize;
                    Ok((
                        *parent_ino,
                        entries
                            .iter()
                            .skip(skip)
                            .map(|(n, c)| (c.ino, c.kind, n.clone()))
                            .collect(),
                    ))
                }
                _ => Err(VfsError::ENOTDIR),
            })?;
        let Some(mut off) = crate::inode::dot_entries(self.ino, parent, offset, sink) else {
            return Ok(());
        };
        for (ino, kind, name) in &list {
            off += 1;
            if !sink(DirEntry {
                ino: *ino,
                kind: *kind,
                name,
                next_offset: off,
            }) {
                break;
            }
        }
        Ok(())
    }

    fn read_page(&self, index: u64, buf: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        self.state.with(|s| match &s.data {
            NodeData::File { size, pages } => {
                let start = index
                    .checked_mul(PAGE_SIZE as u64)
                    .ok_or(VfsError::EINVAL)?;
                if start >= *size {
                    return Ok(0);
                }
                let n = (*size - start).min(PAGE_SIZE as u64) as usize;
                match pages.get(index as usize).and_then(|p| p.as_ref()) {
                    Some(p) => buf[..n].copy_from_slice(&p[..n]),
                    None => buf[..n].fill(0),
                }
                Ok(n)
            }
            NodeData::Dir { .. } => Err(VfsError::EISDIR),
            NodeData::Symlink(_) => Err(VfsError::EINVAL),
        })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<usize> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(VfsError::EFBIG)?;
        if end > TMPFS_MAX_FILE_SIZE {
            return Err(VfsError::EFBIG);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let now = self.now();
        let shared = &self.shared;
        self.state.with(|s| {
            let NodeData::File { size, pages } = &mut s.data else {
                return Err(match self.kind {
                    FileKind::Directory => VfsError::EISDIR,
                    _ => VfsError::EINVAL,
                });
            };
            let first = (offset / PAGE_SIZE as u64) as usize;
            let last = ((end - 1) / PAGE_SIZE as u64) as usize;
            if pages.len() <= last {
                pages.resize_with(last + 1, || None);
            }
            let missing = pages[first..=last].iter().filter(|p| p.is_none()).count() as u64;
            shared.reserve_pages(missing)?;
            let mut pos = offset;
            let mut src = data;
            while !src.is_empty() {
                let idx = (pos / PAGE_SIZE as u64) as usize;
                let in_page = (pos % PAGE_SIZE as u64) as usize;
                let n = src.len().min(PAGE_SIZE - in_page);
                let page = pages[idx].get_or_insert_with(|| Box::new([0u8; PAGE_SIZE]));
                page[in_page..in_page + n].copy_from_slice(&src[..n]);
                src = &src[n..];
                pos += n as u64;
            }
            *size = (*size).max(end);
            s.mtime = now;
            s.ctime = now;
            Ok(data.len())
        })
    }

    fn truncate(&self, new_size: u64) -> Result<()> {
        if new_size > TMPFS_MAX_FILE_SIZE {
            return Err(VfsError::EFBIG);
        }
        let now = self.now();
        let shared = &self.shared;
        self.state.with(|s| {
            let NodeData::File { size, pages } = &mut s.data else {
                return Err(match self.kind {
                    FileKind::Directory => VfsError::EISDIR,
                    _ => VfsError::EINVAL,
                });
            };
            if new_size < *size {
                let keep = new_size.div_ceil(PAGE_SIZE as u64) as usize;
                if pages.len() > keep {
                    let freed = pages[keep..].iter().filter(|p| p.is_some()).count() as u64;
                    pages.truncate(keep);
                    shared.release_pages(freed);
                }
                let tail = (new_size % PAGE_SIZE as u64) as usize;
                if tail != 0
                    && let Some(Some(p)) = pages.get_mut(keep - 1)
                {
                    p[tail..].fill(0);
                }
            }
            *size = new_size;
            s.mtime = now;
            s.ctime = now;
            Ok(())
        })
    }

    fn create(&self, name: &str, perm: u32) -> Result<InodeRef> {
        self.add_child(name, FileKind::Regular, perm, None)
    }

    fn mkdir(&self, name: &str, perm: u32) -> Result<InodeRef> {
        self.add_child(name, FileKind::Directory, perm, None)
    }

    fn symlink(&self, name: &str, target: &str) -> Result<InodeRef> {
        if target.is_empty() {
            return Err(VfsError::ENOENT);
        }
        if target.len() >= crate::path::PATH_MAX {
            return Err(VfsError::ENAMETOOLONG);
        }
        self.add_child(name, FileKind::Symlink, 0o777, Some(target))
    }

    fn unlink(&self, name: &str) -> Result<()> {
        self.remove_child(name, false)
    }

    fn rmdir(&self, name: &str) -> Result<()> {
        self.remove_child(name, true)
    }

    fn readlink(&self) -> Result<String> {
        self.state.with(|s| match &s.data {
            NodeData::Symlink(t) => Ok(t.clone()),
            _ => Err(VfsError::EINVAL),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::StdLocking;
    use alloc::vec;

    type Fs = TmpFs<StdLocking>;

    fn names(dir: &InodeRef) -> Vec<String> {
        let mut out = Vec::new();
        dir.readdir(0, &mut |e| {
            out.push(e.name.to_string());
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn create_write_read_truncate() {
        let fs = Fs::new();
        let root = fs.root();
        assert_eq!(root.ino(), 1);
        let f = root.create("a.txt", 0o600).unwrap();
        assert_eq!(root.create("a.txt", 0o600).err(), Some(VfsError::EEXIST));
        assert_eq!(f.write_at(5000, b"hello").unwrap(), 5);
        let st = f.stat().unwrap();
        assert_eq!(st.size, 5005);
        assert_eq!(st.perm, 0o600);
        assert_eq!(st.mode(), 0o100600);
        // Page 0 is a hole.
        let mut buf = [0xffu8; PAGE_SIZE];
        assert_eq!(f.read_page(0, &mut buf).unwrap(), PAGE_SIZE);
        assert!(buf.iter().all(|&b| b == 0));
        assert_eq!(f.read_page(1, &mut buf).unwrap(), 5005 - 4096);
        assert_eq!(&buf[5000 - 4096..5005 - 4096], b"hello");
        assert_eq!(f.read_page(2, &mut buf).unwrap(), 0);
        assert_eq!(fs.used_bytes(), PAGE_SIZE as u64);
        f.truncate(5002).unwrap();
        f.truncate(6000).unwrap();
        assert_eq!(f.read_page(1, &mut buf).unwrap(), 6000 - 4096);
        assert_eq!(&buf[5000 - 4096..5005 - 4096], b"he\0\0\0");
        f.truncate(0).unwrap();
        assert_eq!(fs.used_bytes(), 0);
        assert_eq!(root.lookup("a.txt").unwrap().ino(), f.ino());
        assert_eq!(root.lookup("nope").err(), Some(VfsError::ENOENT));
        assert_eq!(f.lookup("x").err(), Some(VfsError::ENOTDIR));
    }

    #[test]
    fn directories_and_unlink() {
        let fs = Fs::new();
        let root = fs.root();
        let d = root.mkdir("d", 0o755).unwrap();
        assert_eq!(root.stat().unwrap().nlink, 3);
        d.create("x", 0o644).unwrap();
        d.symlink("l", "/target").unwrap();
        assert_eq!(names(&d), [".", "..", "l", "x"]);
        assert_eq!(d.lookup("l").unwrap().readlink().unwrap(), "/target");
        assert_eq!(root.rmdir("d").err(), Some(VfsError::ENOTEMPTY));
        assert_eq!(root.unlink("d").err(), Some(VfsError::EISDIR));
        assert_eq!(d.rmdir("x").err(), Some(VfsError::ENOTDIR));
        d.unlink("x").unwrap();
        d.unlink("l").unwrap();
        assert_eq!(d.unlink("x").err(), Some(VfsError::ENOENT));
        root.rmdir("d").unwrap();
        assert_eq!(root.stat().unwrap().nlink, 2);
        assert_eq!(d.stat().unwrap().nlink, 0);
        assert_eq!(d.create("y", 0o644).err(), Some(VfsError::ENOENT));
        assert_eq!(fs.inode_count(), 2); // root + `d` still referenced here
        drop(d);
        assert_eq!(fs.inode_count(), 1);
        assert_eq!(root.create("bad/name", 0).err(), Some(VfsError::EINVAL));
    }

    #[test]
    fn readdir_resumes_at_offset() {
        let fs = Fs::new();
        let root = fs.root();
        for n in ["c", "a", "b"] {
            root.create(n, 0o644).unwrap();
        }
        let mut got = Vec::new();
        let mut next = 0;
        loop {
            let mut batch = 0;
            root.readdir(next, &mut |e| {
                if batch == 2 {
                    return false;
                }
                batch += 1;
                got.push(e.name.to_string());
                next = e.next_offset;
                true
            })
            .unwrap();
            if batch == 0 {
                break;
            }
        }
        assert_eq!(got, [".", "..", "a", "b", "c"]);
    }

    #[test]
    fn space_limit_gives_enospc_and_unlink_frees() {
        let fs: Fs = TmpFs::with_options(4 * PAGE_SIZE as u64, zero_clock);
        let root = fs.root();
        let f = root.create("f", 0o644).unwrap();
        f.write_at(0, &vec![1u8; 4 * PAGE_SIZE]).unwrap();
        assert_eq!(
            f.write_at(4 * PAGE_SIZE as u64, b"x").err(),
            Some(VfsError::ENOSPC)
        );
        let sfs = fs.statfs();
        assert_eq!((sfs.blocks, sfs.blocks_free), (4, 0));
        root.unlink("f").unwrap();
        assert_eq!(fs.used_bytes(), 4 * PAGE_SIZE as u64); // still open via `f`
        drop(f);
        assert_eq!(fs.used_bytes(), 0);
    }
}
