//! Files for applications: the VFS and page cache from `uk-vfs` wired to the
//! kernel, the read-only ext4 root from the first disk that carries one
//! (virtio-blk, virtio-scsi or NVMe: `drivers::block`), tmpfs at
//! `/tmp`, one global descriptor table, and a small POSIX-like API with
//! errno-style errors ([`open`], [`read`], [`close`], [`mmap_file`], ...).
//!
//! # Locks
//!
//! uk-vfs takes its locks ([`KernelLocking`]) only around short,
//! non-blocking critical sections and never across `Inode::read_page` or
//! `Inode::lookup`, so they are [`IrqMutex`]es: cheap, usable from the page
//! fault path, and an interrupt can never find one held by its own CPU. The
//! ext4 reader uses the same family for its metadata cache and holds it only
//! around cache lookups, never across disk I/O, so reads of the root file
//! system run concurrently (see [`ext4`]).
//!
//! # Page cache memory
//!
//! Page-cache pages are physical frames ([`KernelFrames`], identity mapped,
//! so a virtio-blk request can target the frame itself). The capacity is
//! sized at mount from free memory, the allocator refuses frames when free
//! memory drops under a reserve (the cache then evicts and reuses its own
//! pages), and [`reclaim`] is registered with `mm` as the memory-pressure
//! hook: heap growth and page faults that find no free frame ask the cache
//! to give pages back before failing.

pub mod ext4;
#[cfg(feature = "statefs")]
pub mod state;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use uk_core::idmap::IdMap;

use uk_core::vma::{Prot, VmaKind};
use uk_vfs::{
    FdTable, FileDescription, FileOps, FsRef, Locking, OpenFlags, PageCache, PageFrames,
    PinnedPage, TmpFs, Vfs,
};

pub use uk_vfs::{
    DirEntry, FileKind, OpenFlags as Flags, PAGE_SIZE, PageCacheStats, Stat, VfsError as Errno,
    Whence,
};

use crate::mm::{self, PAGE};
use crate::sync::{IrqMutex, Once};
use uk_frame::pagecache::{CachePin, PinRun};

/// Result of the file API: an errno on failure.
pub type Result<T> = core::result::Result<T, Errno>;

/// Number of vfs critical sections running (at most one per CPU: they run
/// with interrupts off). [`reclaim`] backs off while one runs on this CPU.
static VFS_LOCKS_HELD: AtomicUsize = AtomicUsize::new(0);

/// uk-vfs's lock family: [`IrqMutex`].
pub struct KernelLocking;

impl Locking for KernelLocking {
    type Mutex<T: Send> = IrqMutex<T>;

    fn new_mutex<T: Send>(value: T) -> IrqMutex<T> {
        IrqMutex::new(value)
    }

    fn lock<T: Send, R>(mutex: &IrqMutex<T>, f: impl FnOnce(&mut T) -> R) -> R {
        let mut g = mutex.lock();
        VFS_LOCKS_HELD.fetch_add(1, Ordering::Relaxed);
        let r = f(&mut g);
        VFS_LOCKS_HELD.fetch_sub(1, Ordering::Relaxed);
        r
    }
}

/// A page-cache page: one physical frame, identity mapped (the framework's
/// [`mm::PageFrame`]).
pub type FramePage = mm::PageFrame;

/// Pages the page cache may always hold, whatever the reserve (as long as
/// the frame allocator has them).
const CACHE_MIN_PAGES: u64 = 32;

/// Frames for the page cache from the kernel's frame allocator.
pub struct KernelFrames {
    live: u64,
    /// Refuse frames when free memory would drop below this.
    reserve_bytes: u64,
}

impl PageFrames for KernelFrames {
    type Page = FramePage;

    fn alloc(&mut self) -> Option<FramePage> {
        // Below the reserve the cache lives on its own pages (it evicts and
        // reuses them), but always gets a few: after a load grew the heap
        // (whose arenas are kept), free memory may stay under the reserve
        // for good, and a cache with no page at all could not serve a read.
        if mm::free_bytes() < self.reserve_bytes + PAGE && self.live >= CACHE_MIN_PAGES {
            return None;
        }
        let page = FramePage::alloc()?;
        self.live += 1;
        Some(page)
    }

    fn free(&mut self, page: FramePage) {
        page.free();
        self.live -= 1;
    }
}

type Cache = PageCache<KernelLocking, KernelFrames>;
type KFile = FileDescription<KernelLocking, KernelFrames>;

struct Fs {
    vfs: Vfs<KernelLocking>,
    cache: Arc<Cache>,
    root_kind: &'static str,
}

static FS: Once<Fs> = Once::new();
static FDS: IrqMutex<Option<FdTable>> = IrqMutex::new(None);

fn fs() -> Result<&'static Fs> {
    FS.get().ok_or(Errno::ENOENT)
}

fn clock() -> uk_vfs::Timespec {
    let ns = crate::time::SystemTime::now()
        .duration_since(crate::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    uk_vfs::Timespec {
        sec: ns.as_secs() as i64,
        nsec: ns.subsec_nanos(),
    }
}

/// Mounts the root file system and `/tmp`. Called once, in thread context,
/// before the application's `main`.
pub(crate) fn init() {
    uk_frame::arch::upcall::set_file_fault_hook(resolve_file_fault);
    crate::drivers::block::init();
    let free = mm::free_bytes();
    // Keep an eighth of memory (at least 2 MiB) for everything else; the
    // cache may grow to three quarters of what is free now.
    let reserve = (free / 8).max(2 << 20);
    let capacity = ((free.saturating_sub(reserve)) * 3 / 4 / PAGE).max(16) as usize;
    let cache = Arc::new(PageCache::new(
        KernelFrames {
            live: 0,
            reserve_bytes: reserve,
        },
        capacity,
    ));
    let (root, root_kind): (FsRef, &'static str) = match mount_root() {
        Some(fs) => (fs, "ext4"),
        None => (
            Arc::new(TmpFs::<KernelLocking>::with_options(u64::MAX, clock)),
            "tmpfs",
        ),
    };
    let vfs = Vfs::new(root, 4096);
    if root_kind == "tmpfs" {
        let _ = vfs.mkdir("/", "/tmp", 0o1777);
    }
    let tmp: FsRef = Arc::new(TmpFs::<KernelLocking>::with_options(u64::MAX, clock));
    match vfs.mount("/tmp", tmp) {
        Ok(_) => log::debug!("fs: tmpfs on /tmp"),
        Err(e) => log::warn!("fs: no tmpfs on /tmp: {e}"),
    }
    #[cfg(feature = "statefs")]
    state::mount(&vfs);
    // A unikernel serves many connections: 65,536 descriptors.
    *FDS.lock() = Some(FdTable::new(65_536));
    if FS
        .set(Fs {
            vfs,
            cache,
            root_kind,
        })
        .is_err()
    {
        log::warn!("fs: initialised twice");
    }
    mm::set_reclaim_hook(reclaim);
}

/// Mounts the root file system from the first disk (of any driver, in
/// registration order) that carries one: a `uk-root` (or Linux) partition,
/// or an ext4 image filling a disk without a partition table. `None` (and
/// the reason for each disk on the console) when no disk does.
fn mount_root() -> Option<FsRef> {
    let n = crate::drivers::block::count();
    if n == 0 {
        log::debug!("fs: no disk; / is an empty tmpfs");
        return None;
    }
    let mut errors = Vec::new();
    for i in 0..n {
        let Some(disk) = crate::drivers::block::disk(i) else {
            continue;
        };
        match root_range(disk).and_then(|(base, len, part)| {
            ext4::Ext4Fs::mount_range(disk, base, len).map(|fs| (fs, part))
        }) {
            Ok((fs, part)) => {
                log::info!("fs: / is ext4 (read-only) on {}{part}", disk.location());
                return Some(fs);
            }
            Err(e) => errors.push((disk.location(), e)),
        }
    }
    for (location, e) in errors {
        crate::println!("uk: fs: cannot mount root from {location}: {e}");
    }
    None
}

/// Where the root file system lies on `disk`: `(byte offset, length,
/// description)`. A disk with a GPT or MBR partition table (a bootable
/// image) gives the partition named `uk-root`, else the first Linux one;
/// a disk without a table (an image for `-kernel` boots) is used whole.
fn root_range(
    disk: &'static dyn crate::drivers::block::BlockDevice,
) -> core::result::Result<(u64, u64, String), String> {
    use uk_core::partition::{self, GPT_SPAN_SECTORS, SECTOR, Table};
    let span = (GPT_SPAN_SECTORS * SECTOR).min(disk.size() as usize / SECTOR * SECTOR);
    if span < SECTOR {
        return Ok((0, disk.size(), String::new()));
    }
    let mut head = alloc::vec![0u8; span];
    disk.read(0, &mut head)
        .map_err(|e| alloc::format!("reading the partition table: {e}"))?;
    let table = partition::parse(&head, disk.capacity_blocks())
        .map_err(|e| alloc::format!("bad partition table: {e:?}"))?;
    if table == Table::None {
        return Ok((0, disk.size(), String::new()));
    }
    let kind = if matches!(table, Table::Gpt(_)) {
        "GPT"
    } else {
        "MBR"
    };
    let p = partition::find_root(&table).ok_or_else(|| {
        alloc::format!(
            "no '{}' or Linux partition in the {kind}",
            partition::ROOT_LABEL
        )
    })?;
    Ok((
        p.offset(),
        p.len(),
        alloc::format!(", {kind} partition '{}' at sector {}", p.name, p.first_lba),
    ))
}

/// Memory-pressure hook: evicts up to `pages` unpinned page-cache pages and
/// returns how many frames went back. Does nothing when called from inside
/// a vfs critical section (an allocation made under a vfs lock).
pub fn reclaim(pages: u64) -> u64 {
    if VFS_LOCKS_HELD.load(Ordering::Relaxed) > 0 {
        return 0;
    }
    match fs() {
        Ok(f) => f.cache.evict(pages as usize) as u64,
        Err(_) => 0,
    }
}

/// What `/` is: `"ext4"`, or `"tmpfs"` when no disk could be mounted.
pub fn root_kind() -> &'static str {
    fs().map(|f| f.root_kind).unwrap_or("none")
}

/// Page-cache pages `sendfile` pinned and the references (spans of
/// consecutive frames) it queued for them: their ratio is the pages per
/// descriptor the device reads.
static SEND_PAGES: AtomicU64 = AtomicU64::new(0);
static SEND_SPANS: AtomicU64 = AtomicU64::new(0);

/// `(pages, spans)`: the page-cache pages `sendfile` pinned and the
/// references it queued for them (one per span of consecutive frames).
pub fn sendfile_spans() -> (u64, u64) {
    (
        SEND_PAGES.load(Ordering::Relaxed),
        SEND_SPANS.load(Ordering::Relaxed),
    )
}

/// Page-cache counters (hits, misses, pages read ahead, evictions, ...).
pub fn cache_stats() -> PageCacheStats {
    fs().map(|f| f.cache.stats()).unwrap_or_default()
}

/// Drops every unpinned page from the page cache (for cold-cache
/// measurements); returns the number of pages dropped.
pub fn drop_caches() -> usize {
    fs().map(|f| f.cache.evict(usize::MAX)).unwrap_or(0)
}

/// Bytes copied out of the page cache into application buffers (`read`),
/// counted by the page cache's copy.
pub fn copy_stats() -> uk_net::CopyStats {
    fs().map(|f| f.cache.copy_stats()).unwrap_or_default()
}

/// Bytes the virtio HAL copied through bounce buffers since boot (disk and
/// network DMA into memory that is not physically contiguous). Page-cache
/// fills never bounce: the frames are shared with the device in place.
pub fn bounced_bytes() -> u64 {
    crate::drivers::hal::BOUNCED_BYTES.load(Ordering::Relaxed)
}

fn get(fd: i32) -> Result<Arc<dyn FileOps>> {
    FDS.lock().as_ref().ok_or(Errno::EBADF)?.get(fd)
}

/// Installs any open object (a socket, later) in the descriptor table.
pub fn install(file: Arc<dyn FileOps>) -> Result<i32> {
    FDS.lock().as_mut().ok_or(Errno::EMFILE)?.insert(file)
}

/// The open object behind `fd`.
pub fn file_ops(fd: i32) -> Result<Arc<dyn FileOps>> {
    get(fd)
}

/// Opens `path` (absolute, or relative to `/`) with `flags`, creating it
/// with `perm` under `O_CREAT`.
pub fn open(path: &str, flags: OpenFlags, perm: u32) -> Result<i32> {
    let f = fs()?;
    let file = f.vfs.open_description("/", path, flags, perm, &f.cache)?;
    install(uk_frame::try_arc(file).map_err(|_| Errno::ENOMEM)?)
}

/// Reads at the file offset.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize> {
    get(fd)?.read(buf)
}

/// Reads at `offset` without moving the file offset.
pub fn pread(fd: i32, buf: &mut [u8], offset: u64) -> Result<usize> {
    get(fd)?.pread(buf, offset)
}

fn regular_file(fd: i32) -> Result<Arc<KFile>> {
    let any: Arc<dyn Any + Send + Sync> = get(fd)?;
    let file = any.downcast::<KFile>().map_err(|_| Errno::EINVAL)?;
    if file.inode().kind() != FileKind::Regular {
        return Err(Errno::EINVAL);
    }
    Ok(file)
}

/// A regular file opened for `sendfile`: resolved once per call, so the
/// per-chunk work is only the page-cache lookups.
pub(crate) struct SendSource {
    file: Arc<KFile>,
    size: u64,
}

impl SendSource {
    /// The regular file behind `fd` (EINVAL for anything else).
    pub(crate) fn new(fd: i32) -> Result<SendSource> {
        let file = regular_file(fd)?;
        let size = file.inode().stat()?.size;
        Ok(SendSource { file, size })
    }

    /// The file's size.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Brings the pages of `[offset, offset+len)` into the page cache,
    /// driving the file's readahead as a sequential read would. Blocks on
    /// the disk; call without other locks held.
    pub(crate) fn prefetch(&self, offset: u64, len: u64) -> Result<()> {
        let f = fs()?;
        let end = self.size.min(offset.saturating_add(len));
        if offset >= end {
            return Ok(());
        }
        let first = offset / PAGE;
        let last = (end - 1) / PAGE;
        let size = self.size;
        let window = self
            .file
            .with_readahead(|ra| ra.on_access(first, last - first + 1, size.div_ceil(PAGE)));
        if let Some(window) = window {
            f.cache
                .readahead(self.file.id(), &**self.file.inode(), window, 0..0);
        }
        // The demanded pages, batched into few disk reads. A resident last
        // page means the reader's readahead already brought the range in:
        // then skip the scan (a page evicted meanwhile is read on its own
        // when it is pinned).
        let last_key = uk_vfs::PageKey {
            file: self.file.id(),
            index: last,
        };
        if !f.cache.contains(last_key) {
            f.cache
                .readahead(self.file.id(), &**self.file.inode(), first..last + 1, 0..0);
        }
        Ok(())
    }

    /// Appends to `out` references to the file's bytes `[offset, offset +
    /// len)` (at most to the end of the file): one per span of page-cache
    /// pages in consecutive frames, the pages pinned in runs of up to
    /// `PIN_BATCH` (one allocation, one lock to pin and one to unpin per
    /// run), each run until its last reference is dropped (the network
    /// stack drops a reference once its bytes are acknowledged and the
    /// device has read them). Nothing is copied. Reads pages evicted since
    /// [`prefetch`](Self::prefetch) again (blocks on the disk: call without
    /// the network lock). Returns the bytes referenced; when memory runs
    /// out, a short count (`ENOMEM` if nothing was referenced).
    pub(crate) fn pin_pages(
        &self,
        offset: u64,
        len: u64,
        out: &mut VecDeque<uk_net::TcpPayload>,
    ) -> Result<u64> {
        let fsys = fs()?;
        let end = self.size.min(offset.saturating_add(len));
        let mut pos = offset;
        // Appends the parts of `obj` (its pages, from `index` on, in spans
        // of consecutive frames) that `[pos, end)` covers, one reference
        // each (ENOMEM when there is no memory for them; the pins are dropped
        // then). Only the first part starts inside a page.
        let mut queue = |pos: &mut u64, obj: Arc<dyn uk_net::SharedBytes>, parts: usize| {
            out.try_reserve(parts).map_err(|_| Errno::ENOMEM)?;
            let mut in_part = (*pos % PAGE) as usize;
            for part in 0..parts {
                let n = (obj.part(part).len().saturating_sub(in_part)).min((end - *pos) as usize);
                if n == 0 {
                    break;
                }
                let p = uk_net::TcpPayload::shared_part(obj.clone(), part, in_part, n)
                    .ok_or(Errno::EINVAL)?;
                out.push_back(p);
                *pos += n as u64;
                in_part = 0;
            }
            Ok(())
        };
        while pos < end {
            let index = pos / PAGE;
            let pages = (end - 1) / PAGE + 1 - index;
            // The resident pages in one go (one lock, one allocation), then
            // a missing one read on its own.
            let r = match PinRun::pin_resident(&fsys.cache, self.file.id(), index, pages) {
                Some(run) => {
                    let n = run.spans();
                    SEND_PAGES.fetch_add(run.len() as u64, Ordering::Relaxed);
                    SEND_SPANS.fetch_add(n as u64, Ordering::Relaxed);
                    uk_frame::try_arc(run)
                        .map_err(|_| Errno::ENOMEM)
                        .and_then(|obj| queue(&mut pos, obj, n))
                }
                None => CachePin::pin(&fsys.cache, self.file.id(), &**self.file.inode(), index)
                    .and_then(|page| {
                        let obj = uk_frame::try_arc(page).map_err(|_| Errno::ENOMEM)?;
                        queue(&mut pos, obj, 1)
                    }),
            };
            match r {
                Ok(()) => {}
                Err(e) if pos == offset => return Err(e),
                Err(_) => break,
            }
        }
        Ok(pos - offset)
    }
}

/// Writes at the file offset.
pub fn write(fd: i32, buf: &[u8]) -> Result<usize> {
    get(fd)?.write(buf)
}

/// Repositions the file offset.
pub fn lseek(fd: i32, offset: i64, whence: Whence) -> Result<u64> {
    get(fd)?.lseek(offset, whence)
}

/// Metadata of an open file.
pub fn fstat(fd: i32) -> Result<Stat> {
    get(fd)?.fstat()
}

/// Metadata of `path` (following symbolic links).
pub fn stat(path: &str) -> Result<Stat> {
    fs()?.vfs.stat("/", path, true)
}

/// Metadata of `path` itself: a final symbolic link is not followed.
pub fn lstat(path: &str) -> Result<Stat> {
    fs()?.vfs.stat("/", path, false)
}

/// Whether `path` lies on a read-only file system (and what it names, or
/// anything below it, can never change while the system runs).
pub fn read_only(path: &str) -> Result<bool> {
    Ok(fs()?.vfs.resolve("/", path, true)?.read_only)
}

/// Creates a directory.
pub fn mkdir(path: &str, perm: u32) -> Result<()> {
    fs()?.vfs.mkdir("/", path, perm).map(drop)
}

/// Removes a file.
pub fn unlink(path: &str) -> Result<()> {
    fs()?.vfs.unlink("/", path)
}

/// Duplicates `fd` onto the lowest free descriptor.
pub fn dup(fd: i32) -> Result<i32> {
    FDS.lock().as_mut().ok_or(Errno::EBADF)?.dup(fd)
}

/// Closes `fd`.
pub fn close(fd: i32) -> Result<()> {
    let file = FDS.lock().as_mut().ok_or(Errno::EBADF)?.close(fd)?;
    drop(file); // outside the table's lock
    Ok(())
}

/// Turns off readahead for `fd` (`POSIX_FADV_RANDOM`), or restores the
/// default window.
pub fn set_random_access(fd: i32, random: bool) -> Result<()> {
    let f = get(fd)?;
    let any: Arc<dyn Any + Send + Sync> = f;
    let file = any.downcast::<KFile>().map_err(|_| Errno::EINVAL)?;
    file.set_readahead_max(if random { 0 } else { uk_vfs::DEFAULT_MAX_PAGES });
    Ok(())
}

/// Lists the directory at `path`: (name, kind) pairs without `.` and `..`;
/// `ENOMEM` when memory runs out.
pub fn read_dir(path: &str) -> Result<Vec<(String, FileKind)>> {
    let fd = open(path, OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY, 0)?;
    let file = get(fd);
    let mut out = Vec::new();
    let res = file.and_then(|f| {
        loop {
            let mut short = false;
            let mut sink = |e: DirEntry<'_>| {
                if e.name != "." && e.name != ".." {
                    let mut name = String::new();
                    if out.try_reserve(1).is_err() || name.try_reserve_exact(e.name.len()).is_err()
                    {
                        short = true;
                        return false;
                    }
                    name.push_str(e.name);
                    out.push((name, e.kind));
                }
                true
            };
            let n = f.getdents(&mut sink)?;
            if short {
                break Err(Errno::ENOMEM);
            }
            if n == 0 {
                break Ok(());
            }
        }
    });
    let _ = close(fd);
    res.map(|()| out)
}

struct Mapping {
    len: u64,
    file: Arc<KFile>,
    /// File page index of the mapping's first page.
    first_page: u64,
    /// Pages faulted in and mapped now (address, pin), oldest first; each is
    /// pinned in the cache until the unmap or until memory pressure takes it
    /// back ([`release_mapped_pages`]).
    pins: VecDeque<(u64, PinnedPage)>,
}

static MAPPINGS: IrqMutex<IdMap<Mapping>> = IrqMutex::new(IdMap::new());
static NEXT_MAP_ID: AtomicU64 = AtomicU64::new(1);

/// Maps `len` bytes of the file behind `fd` from byte `offset` (page
/// aligned) read-only and shared. Nothing is read here: each page is
/// faulted in on first access, mapping the page-cache frame itself (pinned
/// while mapped), so a mapping costs no copy and no memory of its own. Bytes
/// past the end of the file read as zero. Undo with [`munmap_file`].
pub fn mmap_file(fd: i32, len: usize, offset: u64) -> Result<*const u8> {
    if len == 0 || !offset.is_multiple_of(PAGE) {
        return Err(Errno::EINVAL);
    }
    let any: Arc<dyn Any + Send + Sync> = get(fd)?;
    let file = any.downcast::<KFile>().map_err(|_| Errno::EINVAL)?;
    if file.inode().kind() != FileKind::Regular {
        return Err(Errno::EACCES);
    }
    let pages = (len as u64).div_ceil(PAGE);
    let id = NEXT_MAP_ID.fetch_add(1, Ordering::Relaxed);
    let kind = VmaKind::File { file: id, offset };
    let va = mm::mmap_kind(pages * PAGE, Prot::READ, kind).map_err(|_| Errno::ENOMEM)?;
    let m = Mapping {
        len: pages * PAGE,
        file,
        first_page: offset / PAGE,
        pins: VecDeque::new(),
    };
    if MAPPINGS.lock().try_insert(va, m).is_err() {
        // Nothing was mapped yet (pages fault in later): the range goes back.
        let _ = mm::unmap_keep_frames(va, pages * PAGE);
        return Err(Errno::ENOMEM);
    }
    Ok(va as *const u8)
}

/// Resolves a page fault at `addr` in a file mapping, in the faulting
/// thread's context (the page-fault handler redirects the thread here, see
/// `arch::upcall`): reads the page into the cache if needed (this may block
/// on the disk), pins it and maps its frame read-only. A page that cannot be
/// read ends the VM, as SIGBUS would end a process.
fn resolve_file_fault(addr: u64) {
    let page = addr & !(PAGE - 1);
    let mut result = map_file_page(page);
    // Out of frames: every resident page may be pinned by mappings (a 64 MiB
    // file mapped in a 64M guest). Give back the oldest mapped pages (they
    // fault in again when touched) and ask for reclaim, then try again.
    let mut round = 0;
    while result == Err(Errno::ENOMEM) && round < 8 {
        let released = release_mapped_pages(RELEASE_BATCH);
        let reclaimed = mm::reclaim(RELEASE_BATCH as u64);
        if released == 0 && reclaimed == 0 && round > 0 {
            break;
        }
        result = map_file_page(page);
        round += 1;
    }
    if let Err(e) = result {
        crate::println!("bus error: page {page:#x} of a mapped file could not be read: {e}");
        crate::process::exit(crate::trap::EXIT_EXCEPTION as i32);
    }
}

/// Mapped file pages given back at a time under memory pressure.
const RELEASE_BATCH: usize = 64;

/// Faults in the file page mapped at `page`: pins it in the cache and maps
/// its frame read-only.
fn map_file_page(page: u64) -> Result<()> {
    let found = {
        let maps = MAPPINGS.lock();
        maps.last_at_or_below(page)
            .filter(|(va, m)| page < *va + m.len)
            .map(|(va, m)| (va, m.file.clone(), m.first_page + (page - va) / PAGE))
    };
    let (Some((va, file, index)), Ok(f)) = (found, fs()) else {
        return Err(Errno::EFAULT);
    };
    let pin = f.cache.pin(file.id(), &**file.inode(), index)?;
    let pa = f.cache.with_pinned(&pin, |p| p.phys());
    if mm::map_frames(page, &[pa], Prot::READ).is_err() {
        f.cache.unpin(pin);
        return Err(Errno::ENOMEM);
    }
    let mut maps = MAPPINGS.lock();
    let stored = match maps.get_mut(va) {
        Some(m) => match m.pins.try_reserve(1) {
            Ok(()) => {
                m.pins.push_back((page, pin));
                None
            }
            Err(_) => Some(pin),
        },
        None => Some(pin),
    };
    drop(maps);
    match stored {
        None => Ok(()),
        Some(pin) => {
            // Unmapped meanwhile, or no memory to remember the pin.
            mm::unmap_page_keep_vma(page);
            f.cache.unpin(pin);
            Err(Errno::ENOMEM)
        }
    }
}

/// Unmaps and unpins up to `max` mapped file pages, the oldest faulted-in
/// page of the mapping holding the most first, so the page cache may evict
/// them; a later touch faults them in again. Returns how many were
/// released. Allocates nothing (it runs when memory is short): one page is
/// taken off the mappings' lists at a time.
fn release_mapped_pages(max: usize) -> usize {
    let Ok(f) = fs() else { return 0 };
    let mut n = 0;
    while n < max {
        let taken = MAPPINGS
            .lock()
            .values_mut()
            .max_by_key(|m| m.pins.len())
            .and_then(|m| m.pins.pop_front());
        let Some((va, pin)) = taken else { break };
        mm::unmap_page_keep_vma(va);
        f.cache.unpin(pin);
        n += 1;
    }
    n
}

/// Removes a mapping made by [`mmap_file`] (the whole mapping: `addr` is
/// what `mmap_file` returned) and unpins its pages.
pub fn munmap_file(addr: *const u8) -> Result<()> {
    let va = addr as u64;
    let m = MAPPINGS.lock().remove(va).ok_or(Errno::EINVAL)?;
    let _ = mm::unmap_keep_frames(va, m.len);
    let f = fs()?;
    for (_, p) in m.pins {
        f.cache.unpin(p);
    }
    Ok(())
}

/// An open file, closed on drop.
#[derive(Debug)]
pub struct File {
    fd: i32,
}

impl File {
    /// Opens `path` read-only.
    pub fn open(path: &str) -> Result<File> {
        open(path, OpenFlags::O_RDONLY, 0).map(|fd| File { fd })
    }

    /// Opens (creating or truncating) `path` for writing.
    pub fn create(path: &str) -> Result<File> {
        open(
            path,
            OpenFlags::O_RDWR | OpenFlags::O_CREAT | OpenFlags::O_TRUNC,
            0o644,
        )
        .map(|fd| File { fd })
    }

    /// The descriptor.
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// Reads some bytes; 0 at end of file.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        read(self.fd, buf)
    }

    /// Reads until `buf` is full or the file ends; returns the bytes read.
    pub fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match read(self.fd, &mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }

    /// Reads the rest of the file.
    pub fn read_to_end(&mut self, out: &mut Vec<u8>) -> Result<usize> {
        let start = out.len();
        let mut chunk = Box::new([0u8; 16384]);
        loop {
            match read(self.fd, &mut chunk[..])? {
                0 => return Ok(out.len() - start),
                n => out.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        pread(self.fd, buf, offset)
    }

    /// Writes some bytes.
    pub fn write(&mut self, buf: &[u8]) -> Result<usize> {
        write(self.fd, buf)
    }

    /// Moves the offset.
    pub fn seek(&mut self, offset: i64, whence: Whence) -> Result<u64> {
        lseek(self.fd, offset, whence)
    }

    /// Metadata.
    pub fn stat(&self) -> Result<Stat> {
        fstat(self.fd)
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = close(self.fd);
    }
}
