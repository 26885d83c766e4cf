//! The state disk (feature `statefs`): a virtio-blk disk that starts with
//! the `uk-state` header ([`uk_core::statefs`]) is mounted writable at
//! [`MOUNT_POINT`]. The whole tree lives in memory; every change is written
//! through as a new record in the other slot and flushed before the call
//! returns, so a power cut leaves the old state or the new one. The kernel
//! never formats a disk: `cargo uk` makes state disks (`--state-disk`).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;

use uk_core::statefs::{self, Error, Kind, StateFs};
use uk_vfs::{
    DirEntry, DirSink, FileKind, FileSystem, Inode, InodeRef, PAGE_SIZE, Stat, StatFs, Timespec,
    VfsError,
};

use crate::drivers::virtio_blk;
use crate::sync::Mutex;

/// Where the state disk is mounted.
pub const MOUNT_POINT: &str = "/state";
/// `statfs` type of the state disk ("ukst").
const STATE_MAGIC: u64 = 0x756b_7374;

/// A virtio-blk disk under the file system.
struct Blk(&'static virtio_blk::Disk);

fn io(e: VfsError) -> Error {
    log::warn!("state disk: {e}");
    Error::Io
}

impl statefs::Disk for Blk {
    fn sectors(&self) -> u64 {
        self.0.sectors()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.0.read(lba, buf).map_err(io)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Error> {
        self.0.write(lba, buf).map_err(io)
    }
    fn flush(&mut self) -> Result<(), Error> {
        self.0.flush().map_err(io)
    }
}

fn errno(e: Error) -> VfsError {
    match e {
        Error::NoSpace => VfsError::ENOSPC,
        Error::NotFound => VfsError::ENOENT,
        Error::Exists => VfsError::EEXIST,
        Error::NotDir => VfsError::ENOTDIR,
        Error::IsDir => VfsError::EISDIR,
        Error::NotEmpty => VfsError::ENOTEMPTY,
        Error::BadName => VfsError::EINVAL,
        _ => VfsError::EIO,
    }
}

fn now() -> i64 {
    super::clock().sec
}

struct Shared {
    fs: Mutex<StateFs<Blk>>,
    read_only: bool,
}

/// The mounted state disk.
struct StateDisk(Arc<Shared>);

/// One entry of the state disk.
struct Node {
    shared: Arc<Shared>,
    ino: u64,
    kind: FileKind,
}

fn kind(k: Kind) -> FileKind {
    match k {
        Kind::Dir => FileKind::Directory,
        Kind::File => FileKind::Regular,
    }
}

impl Node {
    fn node(&self, ino: u64, k: Kind) -> Result<InodeRef, VfsError> {
        uk_frame::try_arc(Node {
            shared: self.shared.clone(),
            ino,
            kind: kind(k),
        })
        .map(|a| a as InodeRef)
        .map_err(|_| VfsError::ENOMEM)
    }

    fn writable(&self) -> Result<(), VfsError> {
        if self.shared.read_only {
            Err(VfsError::EROFS)
        } else {
            Ok(())
        }
    }
}

impl FileSystem for StateDisk {
    fn root(&self) -> InodeRef {
        alloc::sync::Arc::new(Node {
            shared: self.0.clone(),
            ino: statefs::ROOT,
            kind: FileKind::Directory,
        })
    }

    fn statfs(&self) -> StatFs {
        let fs = self.0.fs.lock();
        let block = statefs::SECTOR as u64;
        let blocks = fs.capacity() as u64 / block;
        let free = (fs.capacity().saturating_sub(fs.used())) as u64 / block;
        StatFs {
            fs_type: STATE_MAGIC,
            block_size: block,
            blocks,
            blocks_free: free,
            blocks_avail: free,
            files: statefs::MAX_ENTRIES as u64,
            files_free: 0,
            name_max: statefs::MAX_NAME as u64,
            read_only: self.0.read_only,
        }
    }

    fn name(&self) -> &str {
        "uk-state"
    }
}

impl Inode for Node {
    fn ino(&self) -> u64 {
        self.ino
    }

    fn kind(&self) -> FileKind {
        self.kind
    }

    fn stat(&self) -> Result<Stat, VfsError> {
        let m = self.shared.fs.lock().meta(self.ino).map_err(errno)?;
        let mut st = Stat::new(self.ino, kind(m.kind), m.size);
        st.perm = m.perm;
        let t = Timespec {
            sec: m.mtime,
            nsec: 0,
        };
        (st.atime, st.mtime, st.ctime) = (t, t, t);
        Ok(st)
    }

    fn lookup(&self, name: &str) -> Result<InodeRef, VfsError> {
        let (ino, k) = {
            let fs = self.shared.fs.lock();
            let ino = fs.lookup(self.ino, name).map_err(errno)?;
            (ino, fs.meta(ino).map_err(errno)?.kind)
        };
        self.node(ino, k)
    }

    fn readdir(&self, offset: u64, sink: &mut DirSink<'_>) -> Result<(), VfsError> {
        let Some(mut off) = uk_vfs::dot_entries(self.ino, self.ino, offset, sink) else {
            return Ok(());
        };
        loop {
            let e: Option<(String, u64, Kind)> = self
                .shared
                .fs
                .lock()
                .entry(self.ino, (off - 2) as usize)
                .map_err(errno)?;
            let Some((name, ino, k)) = e else {
                return Ok(());
            };
            if !sink(DirEntry {
                ino,
                kind: kind(k),
                name: &name,
                next_offset: off + 1,
            }) {
                return Ok(());
            }
            off += 1;
        }
    }

    fn read_page(&self, index: u64, buf: &mut [u8; PAGE_SIZE]) -> Result<usize, VfsError> {
        self.shared
            .fs
            .lock()
            .read(self.ino, index * PAGE_SIZE as u64, buf)
            .map_err(errno)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<usize, VfsError> {
        self.writable()?;
        self.shared
            .fs
            .lock()
            .write_at(self.ino, offset, data, now())
            .map_err(errno)
    }

    fn truncate(&self, size: u64) -> Result<(), VfsError> {
        self.writable()?;
        self.shared
            .fs
            .lock()
            .truncate(self.ino, size, now())
            .map_err(errno)
    }

    fn create(&self, name: &str, perm: u32) -> Result<InodeRef, VfsError> {
        self.writable()?;
        let ino = self
            .shared
            .fs
            .lock()
            .create(self.ino, name, perm, now())
            .map_err(errno)?;
        self.node(ino, Kind::File)
    }

    fn mkdir(&self, name: &str, perm: u32) -> Result<InodeRef, VfsError> {
        self.writable()?;
        let ino = self
            .shared
            .fs
            .lock()
            .mkdir(self.ino, name, perm, now())
            .map_err(errno)?;
        self.node(ino, Kind::Dir)
    }

    fn unlink(&self, name: &str) -> Result<(), VfsError> {
        self.writable()?;
        self.shared
            .fs
            .lock()
            .remove(self.ino, name, false, now())
            .map_err(errno)
    }

    fn rmdir(&self, name: &str) -> Result<(), VfsError> {
        self.writable()?;
        self.shared
            .fs
            .lock()
            .remove(self.ino, name, true, now())
            .map_err(errno)
    }
}

/// Mounts the first virtio-blk disk with a state-disk header at
/// [`MOUNT_POINT`], saying so (or why not) on the console.
pub(super) fn mount(vfs: &uk_vfs::Vfs<super::KernelLocking>) {
    for i in 0..virtio_blk::count() {
        let Some(disk) = virtio_blk::disk(i) else {
            continue;
        };
        let mut s0 = [0u8; statefs::SECTOR];
        if disk.sectors() == 0 || disk.read(0, &mut s0).is_err() || !statefs::is_state_disk(&s0) {
            continue;
        }
        let (fs, report) = match StateFs::mount(Blk(disk)) {
            Ok(m) => m,
            Err(e) => {
                crate::println!("uk: fs: state disk on {} not mounted: {e}", disk.location());
                continue;
            }
        };
        let read_only = disk.readonly();
        let shared = Arc::new(Shared {
            fs: Mutex::new(fs),
            read_only,
        });
        match vfs.mount_new(MOUNT_POINT, Arc::new(StateDisk(shared))) {
            Ok(_) => {
                let damaged = if report.damaged > 0 {
                    format!(
                        "; {} slot(s) held a torn or damaged record, the other was used",
                        report.damaged
                    )
                } else {
                    String::new()
                };
                crate::println!(
                    "uk: fs: state disk on {} at {MOUNT_POINT}{} (generation {}, {} of {} bytes used{damaged})",
                    disk.location(),
                    if read_only { ", read-only" } else { "" },
                    report.generation,
                    report.used,
                    report.capacity
                );
            }
            Err(e) => crate::println!("uk: fs: cannot mount the state disk at {MOUNT_POINT}: {e}"),
        }
        return;
    }
}

/// Where the state disk is mounted, if one is.
pub fn mounted() -> Option<&'static str> {
    let f = super::fs().ok()?;
    f.vfs
        .mounts()
        .iter()
        .any(|m| m.path == MOUNT_POINT && m.fs_type == "uk-state")
        .then_some(MOUNT_POINT)
}
