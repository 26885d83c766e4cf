//! The VFS proper: mount table, path walk through the dentry cache, and
//! the path-based operations (`open`, `mkdir`, `unlink`, ...).
//!
//! # Mounts
//!
//! The mount table maps normalized mount-point paths to file systems; a path
//! is resolved in the mount with the longest matching prefix (component-wise),
//! then walked component by component from that file system's root. Each
//! mount gets a device number (the root file system is device 1), which keys
//! the dentry cache and the page cache.
//!
//! # Path semantics
//!
//! Paths are normalized lexically first (`..` removes the previous component
//! before any lookup, as Plan 9 does; POSIX would resolve a symlink before
//! `..`). Symbolic links are followed in intermediate components and, unless
//! asked not to, in the final one, with at most [`MAX_SYMLINKS`] expansions
//! (`ELOOP`). Permissions are not checked: the unikernel runs one program as
//! root.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::dcache::{DcacheLookup, DcacheStats, DentryCache};
use crate::error::{Result, VfsError};
use crate::file::{FileDescription, OpenFlags};
use crate::inode::{FileKind, FsRef, InodeRef, Stat, StatFs};
use crate::page_cache::{FileId, PageCache, PageFrames};
use crate::path::{has_trailing_slash, is_within, normalize_at, split_parent, validate_name};
use crate::sync::{Locking, Mutex};

/// Maximum symbolic-link expansions in one walk (Linux `MAXSYMLINKS`).
pub const MAX_SYMLINKS: u32 = 40;

/// Device number of the root file system.
pub const ROOT_DEV: u64 = 1;

struct Mount {
    path: String,
    dev: u64,
    fs: FsRef,
    root: InodeRef,
}

/// Public description of a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount-point path.
    pub path: String,
    /// Device number.
    pub dev: u64,
    /// File-system type name.
    pub fs_type: String,
}

/// The result of a path walk: where a path leads.
#[derive(Clone)]
pub struct Located {
    /// Device number of the file system holding the inode.
    pub dev: u64,
    /// The inode.
    pub inode: InodeRef,
    /// The normalized path after symbolic-link expansion.
    pub path: String,
    /// Whether that file system is read-only.
    pub read_only: bool,
}

impl Located {
    /// The inode's page-cache identity.
    pub fn file_id(&self) -> FileId {
        FileId {
            dev: self.dev,
            ino: self.inode.ino(),
        }
    }
}

/// The virtual file system: mounts plus dentry cache.
pub struct Vfs<L: Locking> {
    mounts: Mutex<L, Vec<Arc<Mount>>>,
    dcache: Mutex<L, DentryCache>,
    next_dev: AtomicU64,
}

impl<L: Locking> Vfs<L> {
    /// A VFS with `root` mounted at `/` and a dentry cache of
    /// `dcache_capacity` entries.
    pub fn new(root: FsRef, dcache_capacity: usize) -> Self {
        let mount = Arc::new(Mount {
            path: String::from("/"),
            dev: ROOT_DEV,
            root: root.root(),
            fs: root,
        });
        Self {
            mounts: Mutex::new(alloc::vec![mount]),
            dcache: Mutex::new(DentryCache::new(dcache_capacity)),
            next_dev: AtomicU64::new(ROOT_DEV + 1),
        }
    }

    /// Mounts `fs` on the existing directory `path`, returning its device
    /// number. `EBUSY` if something is already mounted there.
    pub fn mount(&self, path: &str, fs: FsRef) -> Result<u64> {
        let target = self.resolve("/", path, true)?;
        if target.inode.kind() != FileKind::Directory {
            return Err(VfsError::ENOTDIR);
        }
        self.add_mount(target.path, fs)
    }

    /// Mounts `fs` at `path` like [`mount`](Self::mount), or, when `path`
    /// does not exist, on a mount point of its own under the existing
    /// directory that would hold it (a read-only root that has no such
    /// directory): paths below it reach `fs`, but the parent's listing does
    /// not show it.
    pub fn mount_new(&self, path: &str, fs: FsRef) -> Result<u64> {
        match self.resolve("/", path, true) {
            Err(VfsError::ENOENT) => {
                let (_, _, full) = self.parent_of("/", path)?;
                self.add_mount(full, fs)
            }
            _ => self.mount(path, fs),
        }
    }

    fn add_mount(&self, path: String, fs: FsRef) -> Result<u64> {
        let dev = self.next_dev.fetch_add(1, Ordering::Relaxed);
        let mount = Arc::new(Mount {
            path,
            dev,
            root: fs.root(),
            fs,
        });
        self.mounts.with(|m| {
            if m.iter().any(|x| x.path == mount.path) {
                return Err(VfsError::EBUSY);
            }
            // Longest mount point first, so the first prefix match wins
            // (kept sorted by inserting in place: no sort code in the image).
            let at = m.partition_point(|x| x.path.len() >= mount.path.len());
            m.insert(at, mount);
            Ok(dev)
        })
    }

    /// Unmounts the file system mounted at `path`, returning it. `EINVAL` if
    /// `path` is not a mount point, `EBUSY` for `/` or when other mounts lie
    /// below it. Callers should also drop the device's pages from the page
    /// cache ([`PageCache::invalidate_dev`]).
    pub fn umount(&self, path: &str) -> Result<FsRef> {
        let path = normalize_at("/", path)?;
        let mount = self.mounts.with(|m| {
            let pos = m
                .iter()
                .position(|x| x.path == path)
                .ok_or(VfsError::EINVAL)?;
            if path == "/"
                || m.iter()
                    .any(|x| x.path != path && is_within(&x.path, &path))
            {
                return Err(VfsError::EBUSY);
            }
            Ok(m.remove(pos))
        })?;
        self.dcache.with(|d| d.invalidate_dev(mount.dev));
        Ok(mount.fs.clone())
    }

    /// The current mounts, longest mount point first.
    pub fn mounts(&self) -> Vec<MountInfo> {
        self.mounts.with(|m| {
            m.iter()
                .map(|x| MountInfo {
                    path: x.path.clone(),
                    dev: x.dev,
                    fs_type: String::from(x.fs.name()),
                })
                .collect()
        })
    }

    fn mount_for(&self, path: &str) -> Arc<Mount> {
        self.mounts.with(|m| {
            m.iter()
                .find(|x| is_within(path, &x.path))
                .cloned()
                .expect("root mount always matches")
        })
    }

    /// Dentry-cache counters.
    pub fn dcache_stats(&self) -> DcacheStats {
        self.dcache.with(|d| d.stats())
    }

    /// Resizes the dentry cache.
    pub fn set_dcache_capacity(&self, capacity: usize) {
        self.dcache.with(|d| d.set_capacity(capacity));
    }

    /// Looks `name` up in directory `dir` of device `dev`, through the
    /// dentry cache.
    fn lookup_child(&self, dev: u64, dir: &InodeRef, name: &str) -> Result<InodeRef> {
        let parent = dir.ino();
        let (probe, generation) = self
            .dcache
            .with(|d| (d.lookup(dev, parent, name), d.generation()));
        match probe {
            DcacheLookup::Hit(inode) => Ok(inode),
            DcacheLookup::Negative => Err(VfsError::ENOENT),
            DcacheLookup::Miss => {
                let res = dir.lookup(name);
                let entry = match &res {
                    Ok(inode) => Some(Some(inode.clone())),
                    Err(VfsError::ENOENT) => Some(None),
                    Err(_) => None,
                };
                if let Some(entry) = entry {
                    self.dcache.with(|d| {
                        if d.generation() == generation {
                            d.insert(dev, parent, name, entry);
                        }
                    });
                }
                res
            }
        }
    }

    /// Walks `path` (relative to `cwd`), following a final symbolic link if
    /// `follow` is set. A trailing slash requires a directory.
    pub fn resolve(&self, cwd: &str, path: &str, follow: bool) -> Result<Located> {
        let trailing = has_trailing_slash(path);
        let mut full = normalize_at(cwd, path)?;
        let mut links = 0;
        'restart: loop {
            let mount = self.mount_for(&full);
            // `full` is normalized ("/a/b", no empty or dot components), so
            // the directory reached so far is always its prefix `full[..at]`
            // ("/" while `at` is 0): no per-component allocation.
            let mut at = if mount.path == "/" {
                0
            } else {
                mount.path.len()
            };
            let mut cur = mount.root.clone();
            loop {
                let rest = &full[at..];
                let Some(tail) = rest.strip_prefix('/').filter(|t| !t.is_empty()) else {
                    break;
                };
                let (name, after) = tail.split_at(tail.find('/').unwrap_or(tail.len()));
                if cur.kind() != FileKind::Directory {
                    return Err(VfsError::ENOTDIR);
                }
                let child = self.lookup_child(mount.dev, &cur, name)?;
                let last = after.is_empty();
                if child.kind() == FileKind::Symlink && (!last || follow || trailing) {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(VfsError::ELOOP);
                    }
                    let mut target = child.readlink()?;
                    target
                        .try_reserve_exact(after.len())
                        .map_err(|_| VfsError::ENOMEM)?;
                    target.push_str(after);
                    let dir = if at == 0 { "/" } else { &full[..at] };
                    full = normalize_at(dir, &target)?;
                    continue 'restart;
                }
                cur = child;
                at += 1 + name.len();
            }
            if trailing && cur.kind() != FileKind::Directory {
                return Err(VfsError::ENOTDIR);
            }
            return Ok(Located {
                dev: mount.dev,
                inode: cur,
                read_only: mount.fs.read_only(),
                path: full,
            });
        }
    }

    /// Resolves an absolute (or `/`-relative) path, following symbolic links.
    pub fn lookup(&self, path: &str) -> Result<InodeRef> {
        self.lookup_at("/", path)
    }

    /// Resolves `path` relative to `cwd`, following symbolic links.
    pub fn lookup_at(&self, cwd: &str, path: &str) -> Result<InodeRef> {
        Ok(self.resolve(cwd, path, true)?.inode)
    }

    /// `stat` (follow = true) or `lstat` (follow = false), with `dev` filled in.
    pub fn stat(&self, cwd: &str, path: &str, follow: bool) -> Result<Stat> {
        let loc = self.resolve(cwd, path, follow)?;
        let mut st = loc.inode.stat()?;
        st.dev = loc.dev;
        Ok(st)
    }

    /// `statfs` of the file system holding `path`.
    pub fn statfs(&self, cwd: &str, path: &str) -> Result<StatFs> {
        let loc = self.resolve(cwd, path, true)?;
        Ok(self.mount_for(&loc.path).fs.statfs())
    }

    /// The target of the symbolic link at `path`.
    pub fn readlink(&self, cwd: &str, path: &str) -> Result<String> {
        self.resolve(cwd, path, false)?.inode.readlink()
    }

    /// Resolves the parent directory of `path`, returning it with the final
    /// name and the full normalized path.
    fn parent_of(&self, cwd: &str, path: &str) -> Result<(Located, String, String)> {
        let full = normalize_at(cwd, path)?;
        let (parent, name) = split_parent(&full).ok_or(VfsError::EEXIST)?;
        validate_name(name)?;
        let dir = self.resolve("/", parent, true)?;
        if dir.inode.kind() != FileKind::Directory {
            return Err(VfsError::ENOTDIR);
        }
        let name = String::from(name);
        Ok((dir, name, full))
    }

    fn is_mount_point(&self, path: &str) -> bool {
        self.mounts.with(|m| m.iter().any(|x| x.path == path))
    }

    /// Runs a directory-modifying operation and updates the dentry cache.
    fn modify(
        &self,
        cwd: &str,
        path: &str,
        creating: bool,
        op: impl FnOnce(&InodeRef, &str) -> Result<Option<InodeRef>>,
    ) -> Result<Located> {
        let (dir, name, full) = self.parent_of(cwd, path)?;
        // A mount point (which may not exist below: `mount_new`) is a
        // directory of its own, whatever the parent holds.
        if self.is_mount_point(&full) {
            return Err(if creating {
                VfsError::EEXIST
            } else {
                VfsError::EISDIR
            });
        }
        if dir.read_only {
            return Err(VfsError::EROFS);
        }
        let parent = dir.inode.ino();
        let res = op(&dir.inode, &name);
        self.dcache.with(|d| {
            d.invalidate(dir.dev, parent, &name);
            if let Ok(entry) = &res {
                d.insert(dir.dev, parent, &name, entry.clone());
            }
        });
        let entry = res?;
        Ok(Located {
            dev: dir.dev,
            inode: entry.unwrap_or(dir.inode),
            read_only: false,
            path: full,
        })
    }

    /// Creates a regular file; `EEXIST` if the name exists.
    pub fn create(&self, cwd: &str, path: &str, perm: u32) -> Result<Located> {
        if has_trailing_slash(path) {
            return Err(VfsError::EISDIR);
        }
        self.modify(cwd, path, true, |dir, name| {
            dir.create(name, perm).map(Some)
        })
    }

    /// Creates a directory.
    pub fn mkdir(&self, cwd: &str, path: &str, perm: u32) -> Result<Located> {
        self.modify(cwd, path, true, |dir, name| dir.mkdir(name, perm).map(Some))
    }

    /// Creates a symbolic link at `path` pointing at `target`.
    pub fn symlink(&self, cwd: &str, target: &str, path: &str) -> Result<Located> {
        self.modify(cwd, path, true, |dir, name| {
            dir.symlink(name, target).map(Some)
        })
    }

    /// Removes a non-directory.
    pub fn unlink(&self, cwd: &str, path: &str) -> Result<()> {
        if has_trailing_slash(path) {
            // `unlink("dir/")`: a directory (or ENOTDIR if it is not one).
            return Err(match self.resolve(cwd, path, false) {
                Ok(_) => VfsError::EISDIR,
                Err(e) => e,
            });
        }
        self.modify(cwd, path, false, |dir, name| {
            dir.unlink(name).map(|()| None)
        })
        .map(drop)
    }

    /// Removes an empty directory. `EBUSY` for a mount point or `/`.
    pub fn rmdir(&self, cwd: &str, path: &str) -> Result<()> {
        let full = normalize_at(cwd, path)?;
        if full == "/" || self.is_mount_point(&full) {
            return Err(VfsError::EBUSY);
        }
        self.modify(cwd, &full, false, |dir, name| {
            dir.rmdir(name).map(|()| None)
        })
        .map(drop)
    }

    /// Opens `path` with `flags` (creating it with `perm` under `O_CREAT`)
    /// as a [`FileDescription`] reading through `cache`.
    pub fn open<F: PageFrames>(
        &self,
        cwd: &str,
        path: &str,
        flags: OpenFlags,
        perm: u32,
        cache: &Arc<PageCache<L, F>>,
    ) -> Result<Arc<FileDescription<L, F>>> {
        self.open_description(cwd, path, flags, perm, cache)
            .map(Arc::new)
    }

    /// [`open`](Self::open) without the `Arc` (whose allocation cannot fail
    /// softly on stable Rust: the kernel makes it with `uk_frame::try_arc`).
    pub fn open_description<F: PageFrames>(
        &self,
        cwd: &str,
        path: &str,
        flags: OpenFlags,
        perm: u32,
        cache: &Arc<PageCache<L, F>>,
    ) -> Result<FileDescription<L, F>> {
        let follow = !flags.contains(OpenFlags::O_NOFOLLOW);
        let creat = flags.contains(OpenFlags::O_CREAT);
        let loc = match self.resolve(cwd, path, follow) {
            Ok(loc) => {
                if creat && flags.contains(OpenFlags::O_EXCL) {
                    return Err(VfsError::EEXIST);
                }
                loc
            }
            Err(VfsError::ENOENT) if creat => match self.create(cwd, path, perm) {
                Ok(loc) => loc,
                // Lost a race with another creator: open what is there.
                Err(VfsError::EEXIST) if !flags.contains(OpenFlags::O_EXCL) => {
                    self.resolve(cwd, path, follow)?
                }
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let kind = loc.inode.kind();
        match kind {
            FileKind::Symlink => return Err(VfsError::ELOOP),
            FileKind::Directory => {
                if flags.writable() || creat {
                    return Err(VfsError::EISDIR);
                }
            }
            _ => {
                if flags.contains(OpenFlags::O_DIRECTORY) {
                    return Err(VfsError::ENOTDIR);
                }
            }
        }
        if flags.writable() && loc.read_only {
            return Err(VfsError::EROFS);
        }
        let id = loc.file_id();
        if kind == FileKind::Regular && flags.writable() && flags.contains(OpenFlags::O_TRUNC) {
            loc.inode.truncate(0)?;
            cache.truncate(id, 0);
        }
        Ok(FileDescription::new(id, loc.inode, cache.clone(), flags))
    }
}
