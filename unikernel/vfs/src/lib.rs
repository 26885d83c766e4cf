//! Hardware-independent VFS logic: paths, dentry cache, page cache, readahead.
//!
//! The kernel mounts file systems ([`FileSystem`], [`Inode`]) into a [`Vfs`],
//! opens files into [`FileDescription`]s that read through a shared
//! [`PageCache`] with per-file [`Readahead`], and keeps them, together with
//! sockets and epoll instances (anything implementing [`FileOps`]), in an
//! [`FdTable`]. Hardware enters only through traits: [`PageFrames`] supplies
//! page frames, [`Inode::read_page`] fills them (DMA), and [`Locking`]
//! supplies the lock.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

mod dcache;
mod error;
mod fdtable;
mod file;
mod inode;
mod lru;
mod page_cache;
pub mod path;
mod readahead;
mod sync;
mod tmpfs;
mod vfs;

#[cfg(test)]
mod tests;

// Host tests make allocations fail on demand (`uk_failalloc::inject`).
#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: uk_failalloc::FailAlloc = uk_failalloc::FailAlloc;

pub use dcache::{DcacheLookup, DcacheStats, DentryCache};
pub use error::{Result, VfsError};
pub use fdtable::{DEFAULT_FD_LIMIT, FdTable};
pub use file::{FileDescription, FileOps, OpenFlags, PollEvents, Whence};
pub use inode::{
    DirEntry, DirSink, FileKind, FileSystem, FsRef, Inode, InodeRef, PAGE_SIZE, Stat, StatFs,
    Timespec, dot_entries,
};
pub use page_cache::{
    FileId, HeapFrames, PIN_RUN_MAX, Page, PageCache, PageCacheStats, PageFrames, PageKey,
    PinnedPage, PinnedRun, READAHEAD_BATCH,
};
pub use path::{NAME_MAX, PATH_MAX, normalize, normalize_at};
pub use readahead::{DEFAULT_INIT_PAGES, DEFAULT_MAX_PAGES, Readahead};
#[cfg(any(test, feature = "std"))]
pub use sync::StdLocking;
pub use sync::{Locking, Mutex};
pub use tmpfs::{TMPFS_MAGIC, TmpFs, TmpInode};
pub use vfs::{Located, MAX_SYMLINKS, MountInfo, ROOT_DEV, Vfs};
