//! Cross-module tests: VFS walks, mounts, fd table, page cache and
//! readahead working together on tmpfs.

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::*;
use std::sync::Mutex as StdMutex;

type L = StdLocking;
type Cache = PageCache<L, HeapFrames>;

fn setup() -> (Arc<TmpFs<L>>, Vfs<L>) {
    let fs = Arc::new(TmpFs::<L>::new());
    let vfs = Vfs::new(fs.clone(), 1024);
    (fs, vfs)
}

fn cache(capacity: usize) -> Arc<Cache> {
    Arc::new(PageCache::new(HeapFrames::unlimited(), capacity))
}

fn pat(i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (i >> 12) as u8
}

const RW_CREAT: OpenFlags = OpenFlags(OpenFlags::O_RDWR.0 | OpenFlags::O_CREAT.0);

/// An inode wrapper that records every `read_page` call.
struct Counting {
    inner: InodeRef,
    reads: StdMutex<Vec<u64>>,
    /// `read_pages` calls: (first page, pages).
    batches: StdMutex<Vec<(u64, usize)>>,
    fail_at: AtomicU64,
}

impl Counting {
    fn new(inner: InodeRef) -> Arc<Self> {
        Arc::new(Self {
            inner,
            reads: StdMutex::new(Vec::new()),
            batches: StdMutex::new(Vec::new()),
            fail_at: AtomicU64::new(u64::MAX),
        })
    }
    fn reads(&self) -> Vec<u64> {
        self.reads.lock().unwrap().clone()
    }
}

impl Inode for Counting {
    fn ino(&self) -> u64 {
        self.inner.ino()
    }
    fn kind(&self) -> FileKind {
        self.inner.kind()
    }
    fn stat(&self) -> Result<Stat> {
        self.inner.stat()
    }
    fn read_page(&self, index: u64, buf: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        if index == self.fail_at.load(Ordering::Relaxed) {
            return Err(VfsError::EIO);
        }
        self.reads.lock().unwrap().push(index);
        self.inner.read_page(index, buf)
    }
    fn read_pages(&self, index: u64, bufs: &mut [&mut [u8; PAGE_SIZE]]) -> Result<Vec<usize>> {
        self.batches.lock().unwrap().push((index, bufs.len()));
        let mut out = Vec::new();
        for (i, buf) in bufs.iter_mut().enumerate() {
            out.push(self.read_page(index + i as u64, buf)?);
        }
        Ok(out)
    }
}

fn file_with_pages(pages: u64) -> (Arc<TmpFs<L>>, Arc<Counting>, FileId) {
    let fs = Arc::new(TmpFs::<L>::new());
    let f = fs.root().create("data", 0o644).unwrap();
    let data: Vec<u8> = (0..pages * PAGE_SIZE as u64).map(pat).collect();
    f.write_at(0, &data).unwrap();
    let id = FileId {
        dev: 9,
        ino: f.ino(),
    };
    (fs, Counting::new(f), id)
}

// ---------------------------------------------------------------- dcache

#[test]
fn dcache_hits_and_negative_entries() {
    let (_fs, vfs) = setup();
    vfs.mkdir("/", "/a", 0o755).unwrap();
    vfs.mkdir("/", "/a/b", 0o755).unwrap();
    vfs.create("/", "/a/b/c", 0o644).unwrap();
    let before = vfs.dcache_stats();
    let c1 = vfs.lookup("/a/b/c").unwrap();
    let mid = vfs.dcache_stats();
    // Creation through the VFS already populated the cache: 3 hits.
    assert_eq!(mid.hits - before.hits, 3);
    assert_eq!(mid.misses, before.misses);
    let c2 = vfs.lookup("/a/./b/../b//c").unwrap();
    assert_eq!(c1.ino(), c2.ino());
    assert_eq!(vfs.dcache_stats().hits - mid.hits, 3);

    // Negative entries.
    assert_eq!(vfs.lookup("/a/nope").err(), Some(VfsError::ENOENT));
    let s1 = vfs.dcache_stats();
    assert_eq!(vfs.lookup("/a/nope").err(), Some(VfsError::ENOENT));
    let s2 = vfs.dcache_stats();
    assert_eq!(s2.negative_hits, s1.negative_hits + 1);
    assert_eq!(s2.misses, s1.misses);
    // Walking *through* a file is ENOTDIR.
    assert_eq!(vfs.lookup("/a/b/c/d").err(), Some(VfsError::ENOTDIR));
    assert_eq!(vfs.lookup("/a/b/c/").err(), Some(VfsError::ENOTDIR));
    assert!(vfs.lookup("/a/b/").is_ok());
}

#[test]
fn dcache_invalidation_on_create_and_unlink() {
    let (fs, vfs) = setup();
    assert_eq!(vfs.lookup("/f").err(), Some(VfsError::ENOENT)); // negative entry now
    vfs.create("/", "/f", 0o644).unwrap();
    let f = vfs.lookup("/f").unwrap();
    assert_eq!(f.kind(), FileKind::Regular);
    vfs.unlink("/", "/f").unwrap();
    assert_eq!(vfs.lookup("/f").err(), Some(VfsError::ENOENT));
    assert_eq!(fs.root().lookup("f").err(), Some(VfsError::ENOENT));
    vfs.mkdir("/", "/f", 0o700).unwrap();
    assert_eq!(vfs.lookup("/f").unwrap().kind(), FileKind::Directory);
    assert_eq!(vfs.unlink("/", "/f").err(), Some(VfsError::EISDIR));
    vfs.rmdir("/", "/f").unwrap();
    assert_eq!(vfs.lookup("/f").err(), Some(VfsError::ENOENT));
    assert_eq!(vfs.rmdir("/", "/").err(), Some(VfsError::EBUSY));
    assert_eq!(vfs.create("/", "/", 0).err(), Some(VfsError::EEXIST));
    assert_eq!(vfs.create("/", "/x/", 0).err(), Some(VfsError::EISDIR));
    assert_eq!(
        vfs.create("/", "/missing/x", 0).err(),
        Some(VfsError::ENOENT)
    );
}

#[test]
fn dcache_eviction_keeps_results_correct() {
    let fs = Arc::new(TmpFs::<L>::new());
    let vfs = Vfs::<L>::new(fs.clone(), 4);
    for i in 0..20 {
        vfs.create("/", &alloc::format!("/f{i}"), 0o644).unwrap();
    }
    for round in 0..2 {
        for i in 0..20 {
            let ino = vfs.lookup(&alloc::format!("/f{i}")).unwrap().ino();
            assert_eq!(
                ino,
                fs.root().lookup(&alloc::format!("f{i}")).unwrap().ino(),
                "round {round}"
            );
        }
    }
    let s = vfs.dcache_stats();
    assert!(s.entries <= 4);
    assert!(s.evictions >= 16);
    assert!(s.misses >= 20);
}

// ---------------------------------------------------------------- mounts

#[test]
fn mount_crossing_and_umount() {
    let (rootfs, vfs) = setup();
    vfs.mkdir("/", "/tmp", 0o1777).unwrap();
    vfs.create("/", "/tmp/under", 0o644).unwrap();
    let tmp = Arc::new(TmpFs::<L>::new());
    let dev = vfs.mount("/tmp", tmp.clone()).unwrap();
    assert_ne!(dev, ROOT_DEV);
    // The mount hides what was below.
    assert_eq!(vfs.lookup("/tmp/under").err(), Some(VfsError::ENOENT));
    vfs.create("/", "/tmp/x", 0o644).unwrap();
    assert!(tmp.root().lookup("x").is_ok());
    assert_eq!(
        rootfs.root().lookup("tmp").unwrap().lookup("x").err(),
        Some(VfsError::ENOENT)
    );
    assert_eq!(vfs.stat("/", "/tmp/x", true).unwrap().dev, dev);
    assert_eq!(vfs.stat("/", "/tmp", true).unwrap().ino, tmp.root().ino());
    assert_eq!(vfs.stat("/", "/", true).unwrap().dev, ROOT_DEV);
    assert_eq!(vfs.statfs("/", "/tmp/x").unwrap().fs_type, TMPFS_MAGIC);
    // `..` out of the mount goes back to the root fs (lexically).
    assert_eq!(vfs.stat("/tmp", "../tmp/../tmp/x", true).unwrap().dev, dev);
    // Relative lookups with a cwd inside the mount.
    assert_eq!(
        vfs.lookup_at("/tmp", "x").unwrap().ino(),
        tmp.root().lookup("x").unwrap().ino()
    );

    // Nested mount.
    vfs.mkdir("/", "/tmp/sub", 0o755).unwrap();
    let inner = Arc::new(TmpFs::<L>::new());
    let dev2 = vfs.mount("/tmp/sub/", inner.clone()).unwrap();
    vfs.create("/", "/tmp/sub/deep", 0o644).unwrap();
    assert!(inner.root().lookup("deep").is_ok());
    assert_eq!(vfs.stat("/", "/tmp/sub/deep", true).unwrap().dev, dev2);
    assert_eq!(vfs.mounts().len(), 3);
    assert_eq!(vfs.mounts()[0].path, "/tmp/sub");

    // Errors.
    assert_eq!(
        vfs.mount("/tmp", Arc::new(TmpFs::<L>::new())).err(),
        Some(VfsError::EBUSY)
    );
    assert_eq!(
        vfs.mount("/nowhere", Arc::new(TmpFs::<L>::new())).err(),
        Some(VfsError::ENOENT)
    );
    assert_eq!(
        vfs.mount("/tmp/x", Arc::new(TmpFs::<L>::new())).err(),
        Some(VfsError::ENOTDIR)
    );
    assert_eq!(vfs.rmdir("/", "/tmp/sub").err(), Some(VfsError::EBUSY));
    assert_eq!(vfs.umount("/tmp").err(), Some(VfsError::EBUSY));
    assert_eq!(vfs.umount("/").err(), Some(VfsError::EBUSY));
    assert_eq!(vfs.umount("/tmp/x").err(), Some(VfsError::EINVAL));

    vfs.umount("/tmp/sub").unwrap();
    assert_eq!(vfs.lookup("/tmp/sub/deep").err(), Some(VfsError::ENOENT));
    vfs.umount("/tmp").unwrap();
    assert!(vfs.lookup("/tmp/under").is_ok());
    assert_eq!(vfs.lookup("/tmp/x").err(), Some(VfsError::ENOENT));
}

#[test]
fn mount_new_on_a_missing_directory() {
    let (rootfs, vfs) = setup();
    let state = Arc::new(TmpFs::<L>::new());
    // No /state below: a mount point of its own.
    let dev = vfs.mount_new("/state", state.clone()).unwrap();
    assert_eq!(rootfs.root().lookup("state").err(), Some(VfsError::ENOENT));
    let st = vfs.stat("/", "/state", true).unwrap();
    assert_eq!((st.dev, st.kind), (dev, FileKind::Directory));
    vfs.mkdir("/", "/state/acme", 0o700).unwrap();
    vfs.create("/", "/state/acme/k", 0o600).unwrap();
    assert!(state.root().lookup("acme").unwrap().lookup("k").is_ok());
    assert_eq!(
        vfs.mkdir("/", "/state", 0o700).err(),
        Some(VfsError::EEXIST)
    );
    assert_eq!(
        vfs.create("/", "/state", 0o600).err(),
        Some(VfsError::EEXIST)
    );
    assert_eq!(vfs.unlink("/", "/state").err(), Some(VfsError::EISDIR));
    // Its parent must exist; an existing directory is mounted over as usual.
    assert_eq!(
        vfs.mount_new("/no/such", Arc::new(TmpFs::<L>::new())).err(),
        Some(VfsError::ENOENT)
    );
    assert_eq!(
        vfs.mount_new("/state", Arc::new(TmpFs::<L>::new())).err(),
        Some(VfsError::EBUSY)
    );
    vfs.mkdir("/", "/d", 0o755).unwrap();
    vfs.create("/", "/d/under", 0o644).unwrap();
    vfs.mount_new("/d", Arc::new(TmpFs::<L>::new())).unwrap();
    assert_eq!(vfs.lookup("/d/under").err(), Some(VfsError::ENOENT));
    vfs.umount("/state").unwrap();
    assert_eq!(vfs.lookup("/state").err(), Some(VfsError::ENOENT));
}

#[test]
fn symlinks_are_followed() {
    let (_fs, vfs) = setup();
    vfs.mkdir("/", "/a", 0o755).unwrap();
    vfs.mkdir("/", "/a/b", 0o755).unwrap();
    vfs.create("/", "/a/b/c", 0o644).unwrap();
    vfs.symlink("/", "/a/b", "/abs").unwrap();
    vfs.symlink("/", "b/c", "/a/rel").unwrap();
    vfs.symlink("/", "/loop2", "/loop1").unwrap();
    vfs.symlink("/", "/loop1", "/loop2").unwrap();
    let c = vfs.lookup("/a/b/c").unwrap().ino();
    assert_eq!(vfs.lookup("/abs/c").unwrap().ino(), c);
    assert_eq!(vfs.lookup("/a/rel").unwrap().ino(), c);
    assert_eq!(vfs.readlink("/", "/a/rel").unwrap(), "b/c");
    assert_eq!(
        vfs.stat("/", "/a/rel", false).unwrap().kind,
        FileKind::Symlink
    );
    assert_eq!(
        vfs.stat("/", "/a/rel", true).unwrap().kind,
        FileKind::Regular
    );
    assert_eq!(vfs.lookup("/loop1").err(), Some(VfsError::ELOOP));
    assert_eq!(
        vfs.stat("/", "/loop1", false).unwrap().kind,
        FileKind::Symlink
    );
    let cache = cache(16);
    let nofollow = OpenFlags::O_RDONLY | OpenFlags::O_NOFOLLOW;
    assert_eq!(
        vfs.open("/", "/a/rel", nofollow, 0, &cache).err(),
        Some(VfsError::ELOOP)
    );
    assert!(
        vfs.open("/", "/a/rel", OpenFlags::O_RDONLY, 0, &cache)
            .is_ok()
    );
    // A symlink into a mount crosses it.
    vfs.mkdir("/", "/mnt", 0o755).unwrap();
    let m = Arc::new(TmpFs::<L>::new());
    let dev = vfs.mount("/mnt", m.clone()).unwrap();
    m.root().create("inside", 0o644).unwrap();
    vfs.symlink("/", "/mnt", "/to_mnt").unwrap();
    assert_eq!(vfs.stat("/", "/to_mnt/inside", true).unwrap().dev, dev);
    // Relative links resolve against their own directory, in a middle
    // component (the rest of the path follows the target) and in a mount.
    vfs.symlink("/", "b", "/a/rb").unwrap();
    assert_eq!(vfs.lookup("/a/rb/c").unwrap().ino(), c);
    assert_eq!(vfs.lookup("/a/rb/../rb/c").unwrap().ino(), c);
    m.root().mkdir("d", 0o755).unwrap();
    vfs.symlink("/", "../inside", "/mnt/d/up").unwrap();
    let inside = vfs.lookup("/mnt/inside").unwrap().ino();
    assert_eq!(vfs.lookup("/mnt/d/up").unwrap().ino(), inside);
    assert_eq!(vfs.stat("/", "/to_mnt/d/up", true).unwrap().dev, dev);
    assert_eq!(vfs.lookup("/a/rb/c/x").err(), Some(VfsError::ENOTDIR));
}

// ---------------------------------------------------------------- fd table

struct FakeSocket;
impl FileOps for FakeSocket {
    fn poll(&self) -> PollEvents {
        PollEvents::OUT
    }
}

#[test]
fn fd_table_posix_semantics() {
    let mut t = FdTable::new(5);
    let sock: Arc<dyn FileOps> = Arc::new(FakeSocket);
    assert_eq!(t.insert(sock.clone()).unwrap(), 0);
    assert_eq!(t.insert(sock.clone()).unwrap(), 1);
    assert_eq!(t.insert(sock.clone()).unwrap(), 2);
    t.close(1).unwrap();
    assert_eq!(t.insert(sock.clone()).unwrap(), 1); // lowest free
    assert_eq!(t.dup(0).unwrap(), 3);
    assert!(Arc::ptr_eq(&t.get(3).unwrap(), &t.get(0).unwrap()));
    assert_eq!(t.insert(sock.clone()).unwrap(), 4);
    assert_eq!(t.insert(sock.clone()).err(), Some(VfsError::EMFILE));
    assert_eq!(t.dup(0).err(), Some(VfsError::EMFILE));
    assert_eq!(t.len(), 5);
    // EBADF cases.
    assert_eq!(t.get(-1).err(), Some(VfsError::EBADF));
    assert_eq!(t.get(5).err(), Some(VfsError::EBADF));
    t.close(2).unwrap();
    assert_eq!(t.close(2).err(), Some(VfsError::EBADF));
    assert_eq!(t.get(2).err(), Some(VfsError::EBADF));
    assert_eq!(t.dup(2).err(), Some(VfsError::EBADF));
    // dup2 onto a free and onto an open descriptor.
    let other: Arc<dyn FileOps> = Arc::new(FakeSocket);
    t.close(4).unwrap();
    let fd = t.insert(other.clone()).unwrap();
    assert_eq!(fd, 2);
    let (n, replaced) = t.dup2(2, 0).unwrap();
    assert_eq!(n, 0);
    assert!(replaced.is_some());
    assert!(Arc::ptr_eq(&t.get(0).unwrap(), &other));
    assert_eq!(t.dup2(2, 2).unwrap().0, 2);
    assert_eq!(t.dup2(4, 4).err(), Some(VfsError::EBADF));
    assert_eq!(t.dup2(2, 5).err(), Some(VfsError::EBADF));
    assert_eq!(t.dup2(2, -3).err(), Some(VfsError::EBADF));
    assert_eq!(t.dup3(2, 2, true).err(), Some(VfsError::EINVAL));
    let (n, _) = t.dup3(2, 4, true).unwrap();
    assert!(t.cloexec(n).unwrap());
    t.set_cloexec(n, false).unwrap();
    assert!(!t.cloexec(n).unwrap());
    assert_eq!(
        t.insert_from(3, other.clone(), false).err(),
        Some(VfsError::EMFILE)
    );
    t.close(3).unwrap();
    assert_eq!(t.insert_from(1, other.clone(), true).unwrap(), 3);
    assert_eq!(t.insert_from(9, other, false).err(), Some(VfsError::EINVAL));
    assert_eq!(t.fds().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);

    // Generic operations on a socket-like object.
    let s = t.get(1).unwrap();
    assert_eq!(s.lseek(0, Whence::Set).err(), Some(VfsError::ESPIPE));
    assert_eq!(s.pread(&mut [0; 4], 0).err(), Some(VfsError::ESPIPE));
    assert_eq!(s.read(&mut [0; 4]).err(), Some(VfsError::EINVAL));
    assert_eq!(s.ioctl(0x541B, 0).err(), Some(VfsError::ENOTTY));
    assert_eq!(s.getdents(&mut |_| true).err(), Some(VfsError::ENOTDIR));
    assert_eq!(s.poll(), PollEvents::OUT);
    // The kernel can get its concrete type back.
    let any: Arc<dyn Any + Send + Sync> = s;
    assert!(any.downcast::<FakeSocket>().is_ok());
    assert_eq!(Whence::from_raw(3).err(), Some(VfsError::EINVAL));
}

// ---------------------------------------------------------------- open files

#[test]
fn open_flags_and_file_operations() {
    let (_fs, vfs) = setup();
    let cache = cache(64);
    let f = vfs.open("/", "/f", RW_CREAT, 0o600, &cache).unwrap();
    assert_eq!(f.write(b"hello world").unwrap(), 11);
    assert_eq!(f.lseek(0, Whence::Cur).unwrap(), 11);
    assert_eq!(f.lseek(0, Whence::Set).unwrap(), 0);
    let mut buf = [0u8; 32];
    assert_eq!(f.read(&mut buf).unwrap(), 11);
    assert_eq!(&buf[..11], b"hello world");
    assert_eq!(f.read(&mut buf).unwrap(), 0); // EOF
    assert_eq!(f.lseek(-5, Whence::End).unwrap(), 6);
    assert_eq!(f.read(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"world");
    assert_eq!(f.lseek(-100, Whence::Cur).err(), Some(VfsError::EINVAL));
    assert_eq!(f.pread(&mut buf[..5], 0).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(f.pwrite(b"HELLO", 0).unwrap(), 5);
    assert_eq!(f.pread(&mut buf[..11], 0).unwrap(), 11);
    assert_eq!(&buf[..11], b"HELLO world");
    let st = f.fstat().unwrap();
    assert_eq!(
        (st.size, st.kind, st.perm, st.dev),
        (11, FileKind::Regular, 0o600, ROOT_DEV)
    );
    assert!(f.poll().contains(PollEvents::IN | PollEvents::OUT));

    // O_EXCL, O_TRUNC, O_APPEND, access modes.
    let excl = RW_CREAT | OpenFlags::O_EXCL;
    assert_eq!(
        vfs.open("/", "/f", excl, 0o600, &cache).err(),
        Some(VfsError::EEXIST)
    );
    let ro = vfs.open("/", "/f", OpenFlags::O_RDONLY, 0, &cache).unwrap();
    assert_eq!(ro.write(b"x").err(), Some(VfsError::EBADF));
    assert_eq!(ro.truncate(0).err(), Some(VfsError::EINVAL));
    let wo = vfs
        .open(
            "/",
            "/f",
            OpenFlags::O_WRONLY | OpenFlags::O_APPEND,
            0,
            &cache,
        )
        .unwrap();
    assert_eq!(wo.read(&mut buf).err(), Some(VfsError::EBADF));
    wo.write(b"!").unwrap();
    assert_eq!(ro.pread(&mut buf, 0).unwrap(), 12);
    assert_eq!(&buf[..12], b"HELLO world!");
    assert!(wo.status_flags().contains(OpenFlags::O_APPEND));
    wo.set_status_flags(OpenFlags::O_NONBLOCK).unwrap();
    assert!(!wo.status_flags().contains(OpenFlags::O_APPEND));
    assert!(wo.status_flags().contains(OpenFlags::O_NONBLOCK));
    assert!(wo.status_flags().writable());
    let tr = vfs
        .open("/", "/f", OpenFlags::O_RDWR | OpenFlags::O_TRUNC, 0, &cache)
        .unwrap();
    assert_eq!(tr.fstat().unwrap().size, 0);
    assert_eq!(ro.pread(&mut buf, 0).unwrap(), 0);

    // Directories.
    vfs.mkdir("/", "/d", 0o755).unwrap();
    vfs.create("/", "/d/one", 0o644).unwrap();
    vfs.create("/", "/d/two", 0o644).unwrap();
    assert_eq!(
        vfs.open("/", "/d", OpenFlags::O_RDWR, 0, &cache).err(),
        Some(VfsError::EISDIR)
    );
    assert_eq!(
        vfs.open(
            "/",
            "/f",
            OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY,
            0,
            &cache
        )
        .err(),
        Some(VfsError::ENOTDIR)
    );
    let d = vfs
        .open(
            "/",
            "/d",
            OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY,
            0,
            &cache,
        )
        .unwrap();
    assert_eq!(d.read(&mut buf).err(), Some(VfsError::EISDIR));
    let mut names = Vec::new();
    // Two entries per call, as a small getdents buffer would.
    loop {
        let mut batch = 0;
        let n = d
            .getdents(&mut |e| {
                if batch == 2 {
                    return false;
                }
                batch += 1;
                names.push(e.name.to_string());
                true
            })
            .unwrap();
        if n == 0 {
            break;
        }
    }
    assert_eq!(names, [".", "..", "one", "two"]);
    d.lseek(0, Whence::Set).unwrap();
    assert_eq!(d.getdents(&mut |_| true).unwrap(), 4);
    assert_eq!(f.getdents(&mut |_| true).err(), Some(VfsError::ENOTDIR));
    assert_eq!(
        vfs.open("/", "/nope", OpenFlags::O_RDONLY, 0, &cache).err(),
        Some(VfsError::ENOENT)
    );
}

#[test]
fn read_only_file_system_rejects_writes() {
    struct RoFs(Arc<TmpFs<L>>);
    impl FileSystem for RoFs {
        fn root(&self) -> InodeRef {
            self.0.root()
        }
        fn statfs(&self) -> StatFs {
            StatFs {
                read_only: true,
                ..self.0.statfs()
            }
        }
        fn name(&self) -> &str {
            "rofs"
        }
    }
    let inner = Arc::new(TmpFs::<L>::new());
    inner
        .root()
        .create("file", 0o644)
        .unwrap()
        .write_at(0, b"data")
        .unwrap();
    let vfs = Vfs::<L>::new(Arc::new(RoFs(inner)), 64);
    let cache = cache(8);
    assert_eq!(vfs.create("/", "/new", 0o644).err(), Some(VfsError::EROFS));
    assert_eq!(vfs.mkdir("/", "/dir", 0o755).err(), Some(VfsError::EROFS));
    assert_eq!(vfs.unlink("/", "/file").err(), Some(VfsError::EROFS));
    assert_eq!(
        vfs.open("/", "/file", OpenFlags::O_RDWR, 0, &cache).err(),
        Some(VfsError::EROFS)
    );
    assert_eq!(
        vfs.open("/", "/new", RW_CREAT, 0, &cache).err(),
        Some(VfsError::EROFS)
    );
    let f = vfs
        .open("/", "/file", OpenFlags::O_RDONLY, 0, &cache)
        .unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(f.read(&mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"data");
}

// ---------------------------------------------------------------- page cache

#[test]
fn page_cache_hit_and_miss() {
    let (_fs, inode, id) = file_with_pages(8);
    let pc = cache(16);
    let mut ra = Readahead::new(0); // no readahead: pure demand paging
    let mut buf = vec![0u8; 100];
    pc.read(&mut ra, id, &*inode, 5000, &mut buf).unwrap();
    assert_eq!(buf, (5000..5100).map(pat).collect::<Vec<_>>());
    pc.read(&mut ra, id, &*inode, 4096, &mut buf).unwrap();
    let s = pc.stats();
    assert_eq!(
        (s.hits, s.misses, s.resident, s.pages_read_ahead),
        (1, 1, 1, 0)
    );
    assert_eq!(inode.reads(), [1]);
    // A read spanning two pages: one hit, one miss.
    let mut buf = vec![0u8; 4096];
    assert_eq!(pc.read(&mut ra, id, &*inode, 6000, &mut buf).unwrap(), 4096);
    assert_eq!(buf, (6000..6000 + 4096).map(pat).collect::<Vec<_>>());
    let s = pc.stats();
    assert_eq!((s.hits, s.misses, s.resident), (2, 2, 2));
    assert_eq!(inode.reads(), [1, 2]);
    // Past EOF and an empty buffer.
    assert_eq!(
        pc.read(&mut ra, id, &*inode, 8 * 4096, &mut buf).unwrap(),
        0
    );
    assert_eq!(pc.read(&mut ra, id, &*inode, 0, &mut []).unwrap(), 0);
    // Short read at EOF.
    assert_eq!(
        pc.read(&mut ra, id, &*inode, 8 * 4096 - 10, &mut buf)
            .unwrap(),
        10
    );
    // An I/O error propagates and nothing is cached.
    inode.fail_at.store(0, Ordering::Relaxed);
    assert_eq!(
        pc.read(&mut ra, id, &*inode, 0, &mut buf).err(),
        Some(VfsError::EIO)
    );
    assert!(!pc.contains(PageKey { file: id, index: 0 }));
    // ... and an error after some bytes were copied gives a short read.
    inode.fail_at.store(4, Ordering::Relaxed);
    let mut big = vec![0u8; 8192];
    assert_eq!(
        pc.read(&mut ra, id, &*inode, 3 * 4096, &mut big).unwrap(),
        4096
    );
    assert_eq!(pc.with_frames(|f| f.live()), pc.stats().resident);
}

#[test]
fn page_cache_lru_eviction_order() {
    let (_fs, inode, id) = file_with_pages(8);
    let pc = cache(3);
    let key = |index| PageKey { file: id, index };
    let touch = |i: u64| pc.with_page(id, &*inode, i, |b| b[0]).unwrap();
    assert_eq!(touch(0), pat(0));
    touch(1);
    touch(2);
    assert_eq!(pc.lru_keys(), [key(0), key(1), key(2)]);
    touch(0); // 0 becomes most recently used
    assert_eq!(pc.lru_keys(), [key(1), key(2), key(0)]);
    touch(3); // evicts 1, the least recently used
    assert_eq!(pc.lru_keys(), [key(2), key(0), key(3)]);
    assert!(!pc.contains(key(1)));
    let s = pc.stats();
    assert_eq!((s.evictions, s.resident, s.hits, s.misses), (1, 3, 1, 4));
    touch(1);
    assert_eq!(pc.lru_keys(), [key(0), key(3), key(1)]);
    assert_eq!(inode.reads(), [0, 1, 2, 3, 1]);
    // Memory-pressure hook and runtime capacity.
    assert_eq!(pc.evict(2), 2);
    assert_eq!(pc.lru_keys(), [key(1)]);
    assert_eq!(pc.evict(5), 1);
    assert_eq!(pc.stats().resident, 0);
    pc.set_capacity(8);
    for i in 0..8 {
        touch(i);
    }
    assert_eq!(pc.set_capacity(2), 6);
    assert_eq!(pc.lru_keys(), [key(6), key(7)]);
    assert_eq!(pc.stats().capacity, 2);
}

#[test]
fn pinned_pages_are_never_evicted() {
    let (_fs, inode, id) = file_with_pages(8);
    let pc = cache(2);
    let pin0 = pc.pin(id, &*inode, 0).unwrap();
    assert_eq!(pc.stats().pinned, 1);
    for i in 1..8 {
        pc.with_page(id, &*inode, i, |_| ()).unwrap();
    }
    assert!(pc.contains(pin0.key()));
    assert_eq!(pc.with_pinned(&pin0, |p| p.bytes()[1]), pat(1));
    // Pin the only other slot: now nothing can be evicted.
    let pin7 = pc.pin(id, &*inode, 7).unwrap();
    assert_eq!(pc.stats().pinned, 2);
    assert_eq!(
        pc.with_page(id, &*inode, 3, |_| ()).err(),
        Some(VfsError::ENOMEM)
    );
    assert_eq!(pc.evict(10), 0);
    // A second pin on the same page needs two unpins.
    let pin0b = pc.pin(id, &*inode, 0).unwrap();
    pc.unpin(pin0);
    assert_eq!(pc.stats().pinned, 2);
    pc.unpin(pin0b);
    assert_eq!(pc.stats().pinned, 1);
    // Page 0 is evictable again.
    pc.with_page(id, &*inode, 3, |_| ()).unwrap();
    assert!(!pc.contains(PageKey { file: id, index: 0 }));
    // Truncation zeroes, invalidation defers, a pinned page.
    pc.truncate(id, 4096);
    assert!(pc.with_pinned(&pin7, |p| p.bytes().iter().all(|&b| b == 0)));
    assert_eq!(pc.stats().resident, 1); // page 3 dropped, pinned page 7 kept
    pc.with_page(id, &*inode, 0, |_| ()).unwrap();
    assert_eq!(pc.invalidate_file(id), 1); // page 0 dropped; page 7 stays until unpinned
    assert_eq!(pc.stats().resident, 1);
    pc.unpin(pin7);
    assert_eq!(pc.stats().resident, 0);
    assert_eq!(pc.with_frames(|f| f.live()), 0);
}

#[test]
fn pin_resident_pins_a_run_of_resident_pages_under_one_lock() {
    let (_fs, inode, id) = file_with_pages(8);
    let pc = cache(8);
    for i in [0, 1, 2, 4] {
        pc.with_page(id, &*inode, i, |_| ()).unwrap();
    }
    let mut pins = Vec::new();
    // Stops at page 3, which is not resident.
    let n = pc.pin_resident(id, 0, 8, |pin, page| pins.push((pin, page.bytes()[1])));
    assert_eq!(n, 3);
    assert_eq!(
        pins.iter().map(|(_, b)| *b).collect::<Vec<_>>(),
        [pat(1), pat(4096 + 1), pat(2 * 4096 + 1)]
    );
    assert_eq!(pc.stats().pinned, 3);
    // `max` bounds the run; nothing resident at the start pins nothing.
    let mut more = Vec::new();
    assert_eq!(pc.pin_resident(id, 4, 1, |pin, _| more.push(pin)), 1);
    assert_eq!(pc.pin_resident(id, 5, 3, |pin, _| more.push(pin)), 0);
    // Pinned pages stay when the cache must make room; unpinning frees them.
    pc.set_capacity(4);
    assert_eq!(pc.evict(10), 0);
    for (pin, _) in pins {
        pc.unpin(pin);
    }
    for pin in more {
        pc.unpin(pin);
    }
    assert_eq!(pc.stats().pinned, 0);
    assert_eq!(pc.evict(10), 4);
}

#[test]
fn a_pinned_run_holds_its_pages_until_released_under_one_lock() {
    let (_fs, inode, id) = file_with_pages(8);
    let pc = cache(8);
    for i in [0, 1, 2, 4, 5] {
        pc.with_page(id, &*inode, i, |_| ()).unwrap();
    }
    let mut seen = Vec::new();
    // Stops at page 3, which is not resident.
    let run = pc.pin_resident_run(id, 0, 8, |k, page| seen.push((k, page.bytes()[1])));
    assert_eq!(run.len(), 3);
    assert_eq!(
        seen,
        [(0, pat(1)), (1, pat(4096 + 1)), (2, pat(2 * 4096 + 1))]
    );
    // `max` bounds it; nothing resident at the start makes an empty run.
    let short = pc.pin_resident_run(id, 4, 1, |_, _| ());
    assert_eq!(short.len(), 1);
    let none = pc.pin_resident_run(id, 6, 2, |_, _| ());
    assert!(none.is_empty());
    pc.unpin_run(none);
    assert_eq!(pc.stats().pinned, 4);
    // A second pin on page 0 outlives the run's.
    let again = pc.pin(id, &*inode, 0).unwrap();
    assert_eq!(pc.evict(10), 1); // page 5, the only one not pinned
    pc.unpin_run(run);
    assert_eq!(pc.stats().pinned, 2);
    assert_eq!(pc.evict(10), 2); // pages 1 and 2
    pc.unpin_run(short);
    pc.unpin(again);
    assert_eq!(pc.stats().pinned, 0);
    assert_eq!(pc.evict(10), 2);
    assert_eq!(pc.with_frames(|f| f.live()), 0);
}

#[test]
fn a_page_sent_while_pinned_outlives_an_untouched_older_one() {
    let (_fs, inode, id) = file_with_pages(8);
    let pc = cache(4);
    for i in 0..4 {
        pc.with_page(id, &*inode, i, |_| ()).unwrap();
    }
    // Page 0, the least recently used, is pinned (sent) and released: it
    // counts as used, so page 1 goes first, then page 0 after its second
    // chance has put it behind pages 2 and 3.
    let run = pc.pin_resident_run(id, 0, 1, |_, _| ());
    pc.unpin_run(run);
    pc.with_page(id, &*inode, 4, |_| ()).unwrap();
    let resident = |i| pc.contains(PageKey { file: id, index: i });
    assert!(resident(0) && !resident(1));
    pc.with_page(id, &*inode, 5, |_| ()).unwrap();
    pc.with_page(id, &*inode, 6, |_| ()).unwrap();
    assert!(resident(0) && !resident(2) && !resident(3));
    pc.with_page(id, &*inode, 7, |_| ()).unwrap();
    assert!(!resident(0));
    // A run pinned while eviction walks past it keeps its pages, and its
    // slots still name them after other entries came and went.
    let run = pc.pin_resident_run(id, 4, 4, |_, _| ());
    assert_eq!(run.len(), 4);
    assert_eq!(
        pc.with_page(id, &*inode, 0, |_| ()).err(),
        Some(VfsError::ENOMEM)
    );
    assert_eq!(pc.stats().pinned, 4);
    pc.unpin_run(run);
    assert_eq!(pc.stats().pinned, 0);
    pc.with_page(id, &*inode, 0, |_| ()).unwrap();
    assert_eq!(pc.stats().resident, 4);
    assert_eq!(pc.evict(10), 4);
    assert_eq!(pc.with_frames(|f| f.live()), 0);
}

#[test]
fn frame_allocation_failure_evicts_instead_of_failing() {
    let (_fs, inode, id) = file_with_pages(16);
    // Capacity says 100 pages but the allocator only has 4 frames.
    let pc: PageCache<L, HeapFrames> = PageCache::new(HeapFrames::with_limit(4), 100);
    let mut ra = Readahead::default();
    let mut buf = vec![0u8; 16 * PAGE_SIZE];
    assert_eq!(
        pc.read(&mut ra, id, &*inode, 0, &mut buf).unwrap(),
        buf.len()
    );
    assert_eq!(buf, (0..buf.len() as u64).map(pat).collect::<Vec<_>>());
    let s = pc.stats();
    assert_eq!(s.resident, 4);
    assert!(s.evictions >= 12);
}

#[test]
fn writes_and_truncates_keep_cache_coherent() {
    let (_fs, vfs) = setup();
    let pc = cache(64);
    let f = vfs.open("/", "/f", RW_CREAT, 0o644, &pc).unwrap();
    f.write(&[b'a'; 10000]).unwrap();
    let mut buf = vec![0u8; 10000];
    assert_eq!(f.pread(&mut buf, 0).unwrap(), 10000);
    assert!(pc.stats().resident >= 3);
    f.pwrite(b"XYZ", 4095).unwrap();
    f.pread(&mut buf, 0).unwrap();
    assert_eq!(&buf[4094..4099], b"aXYZa");
    f.truncate(4096).unwrap();
    assert_eq!(f.pread(&mut buf, 0).unwrap(), 4096);
    f.truncate(9000).unwrap();
    assert_eq!(f.pread(&mut buf, 0).unwrap(), 9000);
    assert_eq!(buf[4095], b'X');
    assert!(buf[4096..9000].iter().all(|&b| b == 0));
    f.truncate(100).unwrap();
    f.truncate(5000).unwrap();
    assert_eq!(f.pread(&mut buf, 0).unwrap(), 5000);
    assert!(buf[..100].iter().all(|&b| b == b'a'));
    assert!(buf[100..5000].iter().all(|&b| b == 0));
}

// ---------------------------------------------------------------- readahead

#[test]
fn sixteen_mib_sequential_read_matches_with_readahead() {
    const SIZE: usize = 16 << 20;
    let (_fs, vfs) = setup();
    vfs.mkdir("/", "/tmp", 0o1777).unwrap();
    vfs.mount("/tmp", Arc::new(TmpFs::<L>::new())).unwrap();
    let pc = cache(SIZE / PAGE_SIZE + 16);
    let data: Vec<u8> = (0..SIZE as u64).map(pat).collect();
    let w = vfs.open("/", "/tmp/big", RW_CREAT, 0o644, &pc).unwrap();
    for chunk in data.chunks(100_000) {
        assert_eq!(w.write(chunk).unwrap(), chunk.len());
    }
    assert_eq!(vfs.stat("/", "/tmp/big", true).unwrap().size, SIZE as u64);
    assert_eq!(pc.stats().resident, 0); // writes went to tmpfs, nothing was cached

    let r = vfs
        .open("/", "/tmp/big", OpenFlags::O_RDONLY, 0, &pc)
        .unwrap();
    let mut out = Vec::with_capacity(SIZE);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out.len(), SIZE);
    assert!(out == data, "contents differ");
    let s = pc.stats();
    let pages = (SIZE / PAGE_SIZE) as u64;
    assert_eq!(s.hits + s.misses, pages);
    assert!(s.pages_read_ahead > pages * 9 / 10, "{s:?}");
    assert!(
        s.misses <= 2,
        "sequential reads should be served by readahead: {s:?}"
    );
    assert_eq!(s.resident as u64, pages);
    assert_eq!(s.evictions, 0);
    let ra = r.readahead_state();
    assert_eq!(ra.size, DEFAULT_MAX_PAGES);

    // Reading again (odd-sized reads, fresh description) is all hits.
    let r2 = vfs
        .open("/", "/tmp/big", OpenFlags::O_RDONLY, 0, &pc)
        .unwrap();
    let mut buf = vec![0u8; 10_007];
    let mut pos = 0usize;
    loop {
        let n = r2.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert_eq!(&buf[..n], &data[pos..pos + n]);
        pos += n;
    }
    assert_eq!(pos, SIZE);
    let s2 = pc.stats();
    assert_eq!(s2.misses, s.misses);
    assert_eq!(s2.pages_read_ahead, s.pages_read_ahead);
}

#[test]
fn random_reads_do_not_read_ahead() {
    let (_fs, inode, id) = file_with_pages(1024);
    let pc = cache(2048);
    let mut ra = Readahead::default();
    let mut seed = 12345u64;
    let mut buf = vec![0u8; 4096];
    for _ in 0..300 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let page = (seed >> 33) % 1024;
        let offset = page * 4096 + (seed >> 20) % 64;
        let n = pc
            .read(&mut ra, id, &*inode, offset, &mut buf[..1000])
            .unwrap();
        assert_eq!(
            &buf[..n],
            &(offset..offset + n as u64).map(pat).collect::<Vec<_>>()[..]
        );
    }
    let s = pc.stats();
    assert_eq!(s.pages_read_ahead, 0, "{s:?}");
    assert_eq!(s.misses as usize, inode.reads().len());
    // For contrast: a sequential scan of the same file reads ahead.
    let mut ra = Readahead::default();
    for page in 0..64u64 {
        pc.read(&mut ra, id, &*inode, page * 4096, &mut buf)
            .unwrap();
    }
    assert!(pc.stats().pages_read_ahead > 0);
}

#[test]
fn readahead_reads_ahead_of_the_reader() {
    let (_fs, inode, id) = file_with_pages(100);
    let pc = cache(200);
    let mut ra = Readahead::default();
    let mut buf = vec![0u8; 4096];
    pc.read(&mut ra, id, &*inode, 0, &mut buf).unwrap();
    assert_eq!(inode.reads(), [1, 2, 3, 0]); // readahead first, demanded page last
    pc.read(&mut ra, id, &*inode, 4096, &mut buf).unwrap();
    // Hitting the marker (page 1) started the next window, 4..12, early.
    assert_eq!(inode.reads(), [1, 2, 3, 0, 4, 5, 6, 7, 8, 9, 10, 11]);
    let s = pc.stats();
    assert_eq!((s.misses, s.hits, s.pages_read_ahead), (1, 1, 11));
}

#[test]
fn readahead_fills_a_window_with_one_batch() {
    let (_fs, inode, id) = file_with_pages(100);
    let pc = cache(200);
    let mut ra = Readahead::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < 100 * PAGE_SIZE as u64 {
        let n = pc.read(&mut ra, id, &*inode, off, &mut buf).unwrap();
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, pat(off + i as u64));
        }
        off += n as u64;
    }
    let batches = inode.batches.lock().unwrap().clone();
    assert_eq!(batches[0], (16, 16), "the window past the demanded pages");
    assert!(batches.iter().all(|&(_, n)| n as u64 <= READAHEAD_BATCH));
    assert!(batches.iter().any(|&(_, n)| n > 16), "{batches:?}");
    // A failed batch stops readahead; the demanded read still works.
    let (_fs, inode, id) = file_with_pages(100);
    inode.fail_at.store(5, Ordering::Relaxed);
    let pc = cache(200);
    let mut ra = Readahead::default();
    let n = pc.read(&mut ra, id, &*inode, 0, &mut buf).unwrap();
    assert_eq!(n, 5 * PAGE_SIZE, "short read before the bad page");
}

#[test]
fn capacity_pressure_sequential_read_evicts_instead_of_failing() {
    let (_fs, inode, id) = file_with_pages(2048); // 8 MiB
    let pc = cache(48);
    let mut ra = Readahead::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut pos = 0u64;
    loop {
        let n = pc.read(&mut ra, id, &*inode, pos, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(
            buf[..n]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pat(pos + i as u64))
        );
        pos += n as u64;
    }
    assert_eq!(pos, 2048 * 4096);
    let s = pc.stats();
    assert!(s.resident <= 48);
    assert!(s.evictions >= 2048 - 48, "{s:?}");
    assert!(s.pages_read_ahead > 1000, "{s:?}");
}

#[test]
fn concurrent_readers_share_the_cache() {
    let (_fs, inode, id) = file_with_pages(256);
    // Room for all 256 pages plus every thread's readahead batch in flight
    // (frames being filled count against the capacity): with less, a late
    // fill evicts a page and `resident` ends below 256 now and then.
    let pc = cache(256 + 4 * (READAHEAD_BATCH as usize + 1));
    let inode: InodeRef = inode;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let pc = &pc;
            let inode = &inode;
            s.spawn(move || {
                let mut ra = Readahead::default();
                let mut buf = vec![0u8; 8192];
                let mut pos = t * 4096 * 16;
                while pos < 256 * 4096 {
                    let n = pc.read(&mut ra, id, &**inode, pos, &mut buf).unwrap();
                    assert!(
                        buf[..n]
                            .iter()
                            .enumerate()
                            .all(|(i, &b)| b == pat(pos + i as u64))
                    );
                    pos += n as u64;
                }
            });
        }
    });
    let s = pc.stats();
    assert_eq!(s.resident, 256);
    assert_eq!(pc.with_frames(|f| f.live()), 256);
}

#[test]
fn vfs_open_uses_dev_and_ino_as_cache_key() {
    let (_fs, vfs) = setup();
    vfs.mkdir("/", "/m1", 0o755).unwrap();
    vfs.mkdir("/", "/m2", 0o755).unwrap();
    vfs.mount("/m1", Arc::new(TmpFs::<L>::new())).unwrap();
    let dev = vfs.mount("/m2", Arc::new(TmpFs::<L>::new())).unwrap();
    let pc = cache(16);
    // Same inode number on two file systems must not alias in the cache.
    let a = vfs.open("/", "/m1/a", RW_CREAT, 0o644, &pc).unwrap();
    let b = vfs.open("/", "/m2/a", RW_CREAT, 0o644, &pc).unwrap();
    assert_eq!(a.id().ino, b.id().ino);
    assert_ne!(a.id().dev, b.id().dev);
    assert_eq!(b.id().dev, dev);
    a.write(b"root").unwrap();
    b.write(b"mnt!").unwrap();
    let mut buf = [0u8; 4];
    a.pread(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"root");
    b.pread(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"mnt!");
    assert_eq!(String::from_utf8_lossy(&buf), "mnt!");
}

// ------------------------------------------------- allocation failure injected
//
// The test binary's allocator is `uk_failalloc::FailAlloc`: inside
// `inject(plan, ..)` this thread's allocations fail as the plan says. A path
// that allocates infallibly would abort the test binary here, as it would
// panic the kernel.

use uk_failalloc::{Plan, count, inject};

/// A tmpfs file of `pages` pages of `pat` (tmpfs reads never allocate).
fn plain_file(pages: u64) -> (Arc<TmpFs<L>>, InodeRef, FileId) {
    let fs = Arc::new(TmpFs::<L>::new());
    let f = fs.root().create("data", 0o644).unwrap();
    let data: Vec<u8> = (0..pages * PAGE_SIZE as u64).map(pat).collect();
    f.write_at(0, &data).unwrap();
    let id = FileId {
        dev: 9,
        ino: f.ino(),
    };
    (fs, f, id)
}

/// Fails each allocation of a cold 8-page read with readahead in turn (then
/// all allocations from each point on): the read returns the right bytes or
/// an error, never panics; a failed map insert is counted, serves the read
/// uncached and loses no frame; afterwards the cache works normally.
#[test]
fn page_cache_reads_survive_every_failed_allocation() {
    const PAGES: u64 = 8;
    let (_fs, inode, id) = plain_file(PAGES);
    let want: Vec<u8> = (0..PAGES * PAGE_SIZE as u64).map(pat).collect();
    let (mut saw_insert_failure, mut saw_enomem, mut saw_short) = (false, false, false);
    for exhausted in [false, true] {
        for n in 0.. {
            let pc: Cache = PageCache::new(HeapFrames::unlimited(), 64);
            let mut ra = Readahead::default();
            let mut buf = vec![0u8; want.len()];
            let plan = if exhausted {
                Plan::From(n)
            } else {
                Plan::Nth(n)
            };
            let (res, rep) = inject(plan, || pc.read(&mut ra, id, &*inode, 0, &mut buf));
            let s = pc.stats();
            match res {
                Ok(done) => {
                    assert_eq!(&buf[..done], &want[..done], "plan {plan:?}");
                    saw_short |= done < want.len();
                }
                Err(e) => {
                    assert_eq!(e, VfsError::ENOMEM, "plan {plan:?}");
                    saw_enomem = true;
                }
            }
            saw_insert_failure |= s.insert_failures > 0;
            // Nothing lost: every live frame is a resident page.
            assert_eq!(pc.with_frames(|f| f.live()), s.resident, "plan {plan:?}");
            // The cache still works once memory is back.
            assert_eq!(pc.read(&mut ra, id, &*inode, 0, &mut buf), Ok(want.len()));
            assert_eq!(buf, want);
            assert_eq!(pc.with_frames(|f| f.live()), pc.stats().resident);
            if rep.failed == 0 {
                assert!(n > 8, "a cold read makes allocations ({n})");
                break;
            }
        }
    }
    assert!(saw_insert_failure, "no plan made the map insert fail");
    assert!(saw_enomem, "no plan made the first frame allocation fail");
    assert!(saw_short, "no plan failed a later page of the read");
}

/// The insert failure on its own: a demand read (no readahead) whose frame
/// is had but whose map entry is not is served, counted, and not cached.
#[test]
fn page_cache_insert_failure_serves_uncached() {
    let (_fs, inode, id) = plain_file(1);
    let pc: Cache = PageCache::new(HeapFrames::unlimited(), 64);
    let mut ra = Readahead::new(0);
    let mut buf = vec![0u8; 100];
    // Allocation 0 is the frame; the map's growth comes after it.
    let (res, rep) = inject(Plan::From(1), || {
        pc.read(&mut ra, id, &*inode, 10, &mut buf)
    });
    assert_eq!(res, Ok(100));
    assert!(rep.failed >= 1);
    assert_eq!(buf, (10..110).map(pat).collect::<Vec<_>>());
    let s = pc.stats();
    assert_eq!((s.insert_failures, s.resident, s.misses), (1, 0, 1));
    assert_eq!(
        pc.with_frames(|f| f.live()),
        0,
        "the uncached frame was freed"
    );
    assert!(!pc.contains(PageKey { file: id, index: 0 }));
    // With memory back the page is cached.
    assert_eq!(pc.read(&mut ra, id, &*inode, 10, &mut buf), Ok(100));
    let s = pc.stats();
    assert_eq!((s.insert_failures, s.resident), (1, 1));
}

/// Eviction (what the kernel's memory-pressure hook calls, when memory is
/// gone) makes no allocation at all, and works with every allocation failing.
#[test]
fn page_cache_eviction_never_allocates() {
    let (_fs, inode, id) = plain_file(32);
    let pc: Cache = PageCache::new(HeapFrames::unlimited(), 64);
    let mut ra = Readahead::default();
    let mut buf = vec![0u8; 32 * PAGE_SIZE];
    assert_eq!(pc.read(&mut ra, id, &*inode, 0, &mut buf), Ok(buf.len()));
    assert_eq!(pc.stats().resident, 32);
    let (freed, n) = count(|| pc.evict(10));
    assert_eq!((freed, n), (10, 0));
    let (freed, rep) = inject(Plan::From(0), || pc.evict(usize::MAX));
    assert_eq!(freed, 22);
    assert_eq!(rep.attempts, 0);
    assert_eq!(pc.stats().resident, 0);
    assert_eq!(pc.with_frames(|f| f.live()), 0);
    let ((), n) = count(|| {
        pc.set_capacity(1);
    });
    assert_eq!(n, 0);
}

/// A frame allocator that runs dry makes the cache evict and go on; an
/// empty cache with no frames is ENOMEM, and the next read after frames come
/// back succeeds.
#[test]
fn page_cache_frame_exhaustion_and_recovery() {
    let (_fs, inode, id) = plain_file(4);
    let pc: Cache = PageCache::new(HeapFrames::unlimited(), 64);
    let mut ra = Readahead::new(0);
    let mut buf = vec![0u8; PAGE_SIZE];
    let (res, _) = inject(Plan::From(0), || pc.read(&mut ra, id, &*inode, 0, &mut buf));
    assert_eq!(res, Err(VfsError::ENOMEM));
    assert_eq!(pc.with_frames(|f| f.live()), 0);
    assert_eq!(pc.read(&mut ra, id, &*inode, 0, &mut buf), Ok(PAGE_SIZE));
    assert_eq!(buf, (0..PAGE_SIZE as u64).map(pat).collect::<Vec<_>>());
}

/// A dentry the heap cannot hold (its name, or the map's growth) is not
/// cached, nothing panics, and the cache works again once memory is back.
#[test]
fn dcache_insert_failure_is_not_cached() {
    let (fs, _vfs) = setup();
    let f = fs.root().create("f", 0o644).unwrap();
    let mut d = DentryCache::new(16);
    d.insert(1, 2, "warm", None); // the map has its first table
    for n in 0.. {
        let ((), rep) = inject(Plan::Nth(n), || d.insert(1, 2, "f", Some(f.clone())));
        match d.lookup(1, 2, "f") {
            DcacheLookup::Hit(i) => {
                assert_eq!(i.ino(), f.ino());
                assert_eq!(rep.failed, 0, "cached although allocation {n} failed");
                break;
            }
            DcacheLookup::Miss => assert_eq!(rep.failed, 1),
            DcacheLookup::Negative => panic!("wrong entry"),
        }
    }
    assert!(matches!(d.lookup(1, 2, "warm"), DcacheLookup::Negative));
    assert_eq!(d.stats().entries, 2);
}

/// A descriptor table that cannot grow refuses the file with `ENOMEM` (the
/// caller keeps it, to drop), changes nothing, and grows once memory is
/// back; `dup2` past the end likewise.
#[test]
fn fd_table_growth_failure_is_enomem() {
    let mut t = FdTable::new(1024);
    let sock: Arc<dyn FileOps> = Arc::new(FakeSocket);
    let (r, rep) = inject(Plan::From(0), || t.insert(sock.clone()));
    assert_eq!(r, Err(VfsError::ENOMEM));
    assert_eq!(rep.failed, 1);
    assert_eq!(t.len(), 0);
    assert_eq!(Arc::strong_count(&sock), 1, "the refused file was dropped");
    assert_eq!(t.insert(sock.clone()), Ok(0));
    let (r, _) = inject(Plan::From(0), || t.dup2(0, 900).map(|(fd, _)| fd));
    assert_eq!(r.err(), Some(VfsError::ENOMEM));
    assert_eq!(t.len(), 1);
    assert_eq!(t.dup2(0, 900).map(|(fd, _)| fd), Ok(900));
    assert_eq!(t.len(), 2);
}

/// Resolving a path (`stat`) and opening a file as a description (the
/// kernel wraps it in an `Arc` with `uk_frame::try_arc`) fail with `ENOMEM`
/// or succeed, for every allocation failing in turn: none aborts.
#[test]
fn open_description_survives_every_failed_allocation() {
    let (fs, vfs) = setup();
    fs.root().create("f", 0o644).unwrap();
    fs.root().mkdir("d", 0o755).unwrap();
    let cache: Arc<Cache> = Arc::new(PageCache::new(HeapFrames::unlimited(), 64));
    for n in 0.. {
        let (r, rep) = inject(Plan::Nth(n), || {
            vfs.stat("/", "/d/../f", false)?;
            vfs.open_description("/", "/f", OpenFlags::O_RDONLY, 0, &cache)
                .map(|_| ())
        });
        if rep.failed == 0 {
            assert_eq!(r, Ok(()));
            break;
        }
        assert!(matches!(r, Ok(()) | Err(VfsError::ENOMEM)), "{n}: {r:?}");
    }
}
