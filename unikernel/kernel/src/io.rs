//! File-descriptor I/O beyond regular files: sockets as files, epoll,
//! eventfd, `poll`, `sendfile`, and the accounting of bytes the CPU copies.
//!
//! Everything is a file: sockets, epoll instances and eventfds live in the
//! same descriptor table as regular files (`crate::fs`), so `read`, `write`,
//! `close` and `fstat` work on all of them.
//!
//! Readiness is pushed, never scanned (the contract in `uk_readiness`): a
//! source (a socket, an eventfd) that gains an event looks up the epoll
//! instances observing it and calls `notify`; `epoll_wait` then walks only
//! the ready list and re-checks each entry's current state, so its cost
//! follows the number of ready descriptors, not the number registered. The
//! network stack reports the sockets whose state may have changed after
//! every poll (`net::poll_locked` → `notify_socket`); an eventfd notifies
//! on every write that makes it readable and every read that makes it
//! writable.

use alloc::collections::VecDeque;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::any::Any;
use core::net::SocketAddrV4;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use uk_core::idmap::IdMap;
use uk_net::SocketId;
use uk_readiness::{EpollInstance, Events, SourceState};
use uk_vfs::{FileKind, FileOps, OpenFlags, PollEvents, Stat};

use crate::fs::{self, Errno};
use crate::net;
use crate::sync::{IrqMutex, WaitQueue};
use crate::time;

use uk_readiness::Observer;
pub use uk_readiness::{
    EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD, EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN,
    EPOLLONESHOT, EPOLLOUT, EPOLLPRI, EPOLLRDHUP,
};

/// One event of [`epoll_wait`] / interest of [`epoll_ctl`], as in Linux.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpollEvent {
    /// `EPOLLIN | EPOLLOUT | ...` (and `EPOLLET`, `EPOLLONESHOT` for ctl).
    pub events: u32,
    /// Returned unchanged with the events (usually the fd or a token).
    pub data: u64,
}

/// Result with an errno.
pub type Result<T> = core::result::Result<T, Errno>;

/// `accept4`/`eventfd` flag: the new descriptor is non-blocking.
pub const O_NONBLOCK: u32 = 0o4000;
/// `eventfd` flag: reads take 1 instead of the whole counter.
pub const EFD_SEMAPHORE: u32 = 1;

fn errno_of(e: uk_net::NetError) -> Errno {
    Errno::from_errno(e.errno()).unwrap_or(Errno::EIO)
}

// ---------------------------------------------------------------------------
// Copy accounting

/// Payload bytes the CPU copied, per stage, since boot: the sum of the
/// counters of every component that copies (the page cache's reads, the
/// network stack's sends and frame building, the TCP engine's receive
/// queues), each counted by the copy itself ([`uk_core::copy`]). A
/// `sendfile` over a scatter-gather NIC adds nothing: the device reads the
/// page-cache pages.
pub fn copy_stats() -> CopyStats {
    crate::fs::copy_stats()
        .plus(&net::copy_stats())
        .plus(&APP_COPIES.snapshot())
}

/// Copies made in the application's own libraries (httpd's TLS record
/// layer: `app_to_tls`, `tls_to_app`), counted there and summed into
/// [`copy_stats`].
pub static APP_COPIES: uk_core::copy::CopyCounters = uk_core::copy::CopyCounters::new();

pub use uk_core::copy::{CopyStats, Stage as CopyStage};

// ---------------------------------------------------------------------------
// Readiness sources and their observers

const KIND_SOCKET: u64 = 1 << 56;
const KIND_EVENTFD: u64 = 2 << 56;
const KIND_EPOLL: u64 = 3 << 56;
const KIND_MASK: u64 = 0xff << 56;

/// Observers of each source, by source key.
static SOURCES: IrqMutex<Sources> = IrqMutex::new(Sources {
    sockets: Vec::new(),
    others: IdMap::new(),
});

/// The source table. Sockets (the sources a server adds and drops with
/// every connection) are kept by their slot number, which the stack
/// reuses: a lookup is an index, and adding one grows the table fallibly
/// (`ENOMEM` from `epoll_ctl`, not the end of the VM). Eventfds and epoll
/// instances are kept by key.
struct Sources {
    /// By socket slot: the state and the arrival counter last seen (see
    /// [`notify_socket`]).
    sockets: Vec<Option<(SourceState, u64)>>,
    others: IdMap<SourceState>,
}

impl Sources {
    fn slot(key: u64) -> Option<usize> {
        (key & KIND_MASK == KIND_SOCKET).then_some((key & 0xffff_ffff) as usize)
    }

    fn get(&self, key: u64) -> Option<&SourceState> {
        match Self::slot(key) {
            Some(i) => self.sockets.get(i)?.as_ref().map(|(s, _)| s),
            None => self.others.get(key),
        }
    }

    fn get_mut(&mut self, key: u64) -> Option<&mut SourceState> {
        match Self::slot(key) {
            Some(i) => self.sockets.get_mut(i)?.as_mut().map(|(s, _)| s),
            None => self.others.get_mut(key),
        }
    }

    /// The state of `key`, made if there is none; `None` without memory.
    fn get_or_insert(&mut self, key: u64) -> Option<&mut SourceState> {
        let Some(i) = Self::slot(key) else {
            return Some(
                self.others
                    .get_or_insert_with(key, || SourceState::new(Events::NONE)),
            );
        };
        if i >= self.sockets.len() {
            let more = i + 1 - self.sockets.len();
            self.sockets.try_reserve(more).ok()?;
            self.sockets.resize_with(i + 1, || None);
        }
        let e = self.sockets[i].get_or_insert_with(|| (SourceState::new(Events::NONE), 0));
        Some(&mut e.0)
    }

    fn remove(&mut self, key: u64) -> Option<SourceState> {
        match Self::slot(key) {
            Some(i) => self.sockets.get_mut(i)?.take().map(|(s, _)| s),
            None => self.others.remove(key),
        }
    }
}
/// Live epoll instances, by id.
static INSTANCES: IrqMutex<IdMap<Weak<EpollFile>>> = IrqMutex::new(IdMap::new());
/// Live eventfds, by key.
static EVENTFDS: IrqMutex<IdMap<Weak<EventFd>>> = IrqMutex::new(IdMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn socket_key(id: SocketId) -> u64 {
    KIND_SOCKET | id.as_u32() as u64
}

/// Delivers `events` of source `key` to every epoll instance watching it.
fn notify(key: u64, events: u32) {
    let observers: Vec<_> = match SOURCES.lock().get(key) {
        Some(s) => s.observers().to_vec(),
        None => return,
    };
    for o in observers {
        let inst = INSTANCES.lock().get(o.instance).and_then(Weak::upgrade);
        if let Some(ep) = inst {
            let queued = ep.inner.lock().notify(o.key, o.fd, Events(events));
            if queued {
                ep.seq.fetch_add(1, Ordering::AcqRel);
                ep.wq.wake_all();
            }
        }
    }
}

/// Called by the network layer for each socket whose readiness may have
/// changed, with its current readiness and arrival counter. New events are
/// the bits that became set, plus the readable bits whenever something new
/// arrived (more data on a readable socket is a new edge, as in Linux); a
/// change caused only by our own sending or acknowledging is not.
pub(crate) fn notify_socket(id: SocketId, events: u32, rx_gen: u64) {
    let key = socket_key(id);
    let new = {
        let mut sources = SOURCES.lock();
        let Some(Some((state, seen))) = sources.sockets.get_mut(id.as_u32() as usize) else {
            return;
        };
        let mut new = state.set(Events(events)).events.0;
        let last = core::mem::replace(seen, rx_gen);
        if rx_gen != last {
            new |= events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
        }
        new
    };
    if new != 0 {
        notify(key, new);
    }
}

/// A source is gone (its last descriptor closed): like Linux, it leaves
/// every epoll set that watched it.
fn forget_source(key: u64) {
    let state = SOURCES.lock().remove(key);
    let Some(state) = state else { return };
    for o in state.observers() {
        let inst = INSTANCES.lock().get(o.instance).and_then(Weak::upgrade);
        if let Some(ep) = inst {
            let _ = ep.inner.lock().ctl_del(o.key, o.fd);
            ep.watched.lock().retain(|w| *w != (o.key, o.fd));
        }
    }
}

// ---------------------------------------------------------------------------
// Sockets as files

/// A TCP or UDP socket in the descriptor table.
pub struct SocketFile {
    id: SocketId,
    listener: bool,
    nonblocking: AtomicBool,
}

impl SocketFile {
    fn new(id: SocketId, listener: bool, nonblocking: bool) -> SocketFile {
        SocketFile {
            id,
            listener,
            nonblocking: AtomicBool::new(nonblocking),
        }
    }

    fn nb(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        net::close_socket(self.id);
        forget_source(socket_key(self.id));
    }
}

impl FileOps for SocketFile {
    fn read(&self, buf: &mut [u8]) -> uk_vfs::Result<usize> {
        if self.listener {
            return Err(Errno::EINVAL);
        }
        net::recv(self.id, buf, self.nb()).map_err(errno_of)
    }

    fn write(&self, buf: &[u8]) -> uk_vfs::Result<usize> {
        if self.listener {
            return Err(Errno::EINVAL);
        }
        net::send(self.id, buf, self.nb()).map_err(errno_of)
    }

    fn lseek(&self, _offset: i64, _whence: uk_vfs::Whence) -> uk_vfs::Result<u64> {
        Err(Errno::ESPIPE)
    }

    fn fstat(&self) -> uk_vfs::Result<Stat> {
        Ok(Stat::new(0, FileKind::Socket, 0))
    }

    fn poll(&self) -> PollEvents {
        PollEvents(net::readiness(self.id))
    }

    fn status_flags(&self) -> OpenFlags {
        if self.nb() {
            OpenFlags::O_RDWR | OpenFlags::O_NONBLOCK
        } else {
            OpenFlags::O_RDWR
        }
    }

    fn set_status_flags(&self, flags: OpenFlags) -> uk_vfs::Result<()> {
        self.nonblocking
            .store(flags.contains(OpenFlags::O_NONBLOCK), Ordering::Relaxed);
        Ok(())
    }
}

fn socket_file(fd: i32) -> Result<Arc<SocketFile>> {
    let any: Arc<dyn Any + Send + Sync> = fs::file_ops(fd)?;
    any.downcast::<SocketFile>().map_err(|_| Errno::ENOTSOCK)
}

/// Opens a listening TCP socket on `port` (backlog 0 = 511). `flags` may hold
/// [`O_NONBLOCK`].
pub fn tcp_listen(port: u16, backlog: usize, flags: u32) -> Result<i32> {
    listen(port, backlog, flags, None)
}

/// Like [`tcp_listen`], with the receive and send buffer sizes of accepted
/// connections (small buffers let one guest hold many idle connections).
pub fn tcp_listen_with_buffers(
    port: u16,
    backlog: usize,
    flags: u32,
    rx: usize,
    tx: usize,
) -> Result<i32> {
    listen(port, backlog, flags, Some((rx, tx)))
}

fn listen(port: u16, backlog: usize, flags: u32, bufs: Option<(usize, usize)>) -> Result<i32> {
    let backlog = if backlog == 0 { 511 } else { backlog };
    let id = net::listen(port, backlog, bufs).map_err(errno_of)?;
    install_socket(SocketFile::new(id, true, flags & O_NONBLOCK != 0))
}

/// Gives the socket a descriptor; `ENOMEM` (the socket closed as the file
/// is dropped) when memory is short.
fn install_socket(file: SocketFile) -> Result<i32> {
    fs::install(uk_frame::try_arc(file).map_err(|_| Errno::ENOMEM)?)
}

/// Accepts a connection; the new descriptor is non-blocking if `flags` holds
/// [`O_NONBLOCK`] (`accept4`). A non-blocking listener gives `EAGAIN` when
/// no connection is pending.
pub fn accept4(fd: i32, flags: u32) -> Result<(i32, SocketAddrV4)> {
    let l = socket_file(fd)?;
    if !l.listener {
        return Err(Errno::EINVAL);
    }
    let (id, peer) = net::accept(l.id, l.nb()).map_err(errno_of)?;
    // Out of memory: the connection is closed and the error returned.
    let nfd = install_socket(SocketFile::new(id, false, flags & O_NONBLOCK != 0))?;
    Ok((nfd, peer))
}

/// The CPU whose network shard holds socket `fd` (its stack work runs
/// there), or `None` when the stack is not sharded (one shard serves every
/// CPU).
pub fn socket_cpu(fd: i32) -> Result<Option<usize>> {
    Ok(net::shard_of(socket_file(fd)?.id))
}

/// Connects a new TCP socket to `addr` (blocking until the handshake ends).
pub fn tcp_connect(addr: SocketAddrV4, flags: u32) -> Result<i32> {
    let id = net::connect(addr, flags & O_NONBLOCK != 0).map_err(errno_of)?;
    install_socket(SocketFile::new(id, false, flags & O_NONBLOCK != 0))
}

/// Closes the sending side of a connected socket (FIN after queued data).
pub fn shutdown_write(fd: i32) -> Result<()> {
    net::shutdown_write(socket_file(fd)?.id).map_err(errno_of)
}

/// Sets or clears `O_NONBLOCK` on any descriptor.
pub fn set_nonblocking(fd: i32, on: bool) -> Result<()> {
    let f = fs::file_ops(fd)?;
    let flags = f.status_flags();
    let flags = if on {
        flags | OpenFlags::O_NONBLOCK
    } else {
        flags.without(OpenFlags::O_NONBLOCK)
    };
    f.set_status_flags(flags)
}

/// The peer of a connected socket.
pub fn peer_addr(fd: i32) -> Result<SocketAddrV4> {
    net::peer_addr(socket_file(fd)?.id).map_err(errno_of)
}

// ---------------------------------------------------------------------------
// eventfd

/// A counter that threads use to wake each other through epoll.
pub struct EventFd {
    key: u64,
    count: IrqMutex<u64>,
    semaphore: bool,
    nonblocking: AtomicBool,
    wq: WaitQueue,
}

impl EventFd {
    fn readiness(&self) -> u32 {
        let c = *self.count.lock();
        let mut r = 0;
        if c > 0 {
            r |= EPOLLIN;
        }
        if c < u64::MAX - 1 {
            r |= EPOLLOUT;
        }
        r
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        EVENTFDS.lock().remove(self.key);
        forget_source(self.key);
    }
}

impl FileOps for EventFd {
    fn read(&self, buf: &mut [u8]) -> uk_vfs::Result<usize> {
        if buf.len() < 8 {
            return Err(Errno::EINVAL);
        }
        let take = || {
            let mut c = self.count.lock();
            if *c == 0 {
                return None;
            }
            let v = if self.semaphore { 1 } else { *c };
            *c -= v;
            Some(v)
        };
        let v = if self.nonblocking.load(Ordering::Relaxed) {
            take().ok_or(Errno::EAGAIN)?
        } else {
            self.wq.wait_until(take)
        };
        buf[..8].copy_from_slice(&v.to_ne_bytes());
        self.wq.wake_all();
        notify(self.key, self.readiness());
        Ok(8)
    }

    fn write(&self, buf: &[u8]) -> uk_vfs::Result<usize> {
        if buf.len() < 8 {
            return Err(Errno::EINVAL);
        }
        let add = u64::from_ne_bytes(buf[..8].try_into().expect("8 bytes"));
        if add == u64::MAX {
            return Err(Errno::EINVAL);
        }
        let put = || {
            let mut c = self.count.lock();
            if u64::MAX - 1 - *c < add {
                return None;
            }
            *c += add;
            Some(())
        };
        if self.nonblocking.load(Ordering::Relaxed) {
            put().ok_or(Errno::EAGAIN)?;
        } else {
            self.wq.wait_until(put);
        }
        self.wq.wake_all();
        notify(self.key, self.readiness());
        Ok(8)
    }

    fn lseek(&self, _offset: i64, _whence: uk_vfs::Whence) -> uk_vfs::Result<u64> {
        Err(Errno::ESPIPE)
    }

    fn poll(&self) -> PollEvents {
        PollEvents(self.readiness())
    }

    fn status_flags(&self) -> OpenFlags {
        if self.nonblocking.load(Ordering::Relaxed) {
            OpenFlags::O_RDWR | OpenFlags::O_NONBLOCK
        } else {
            OpenFlags::O_RDWR
        }
    }

    fn set_status_flags(&self, flags: OpenFlags) -> uk_vfs::Result<()> {
        self.nonblocking
            .store(flags.contains(OpenFlags::O_NONBLOCK), Ordering::Relaxed);
        Ok(())
    }
}

/// Creates an eventfd with counter `init`; `flags`: [`O_NONBLOCK`], [`EFD_SEMAPHORE`].
pub fn eventfd(init: u64, flags: u32) -> Result<i32> {
    let key = KIND_EVENTFD | NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let e = Arc::new(EventFd {
        key,
        count: IrqMutex::new(init),
        semaphore: flags & EFD_SEMAPHORE != 0,
        nonblocking: AtomicBool::new(flags & O_NONBLOCK != 0),
        wq: WaitQueue::new(),
    });
    EVENTFDS.lock().insert(key, Arc::downgrade(&e));
    fs::install(e)
}

// ---------------------------------------------------------------------------
// epoll

/// An epoll instance in the descriptor table.
pub struct EpollFile {
    id: u64,
    inner: IrqMutex<EpollInstance>,
    wq: WaitQueue,
    /// Bumped whenever an entry becomes ready, so a waiter cannot miss it.
    seq: AtomicU64,
    /// Pause loops to spin before blocking (several CPUs only), adapted as
    /// guest halt-polling does: doubled when a spin or a short block saw
    /// the next event, halved when a spin did not.
    spin: AtomicU32,
    /// The sources this instance observes (to detach on close).
    watched: IrqMutex<Vec<(u64, i32)>>,
}

impl Drop for EpollFile {
    fn drop(&mut self) {
        INSTANCES.lock().remove(self.id);
        let watched = core::mem::take(&mut *self.watched.lock());
        let mut sources = SOURCES.lock();
        for (key, fd) in watched {
            if let Some(s) = sources.get_mut(key) {
                s.remove_observer(&Observer {
                    instance: self.id,
                    key,
                    fd,
                });
            }
        }
    }
}

impl FileOps for EpollFile {
    fn lseek(&self, _offset: i64, _whence: uk_vfs::Whence) -> uk_vfs::Result<u64> {
        Err(Errno::ESPIPE)
    }

    fn poll(&self) -> PollEvents {
        if self.inner.lock().is_ready() {
            PollEvents(EPOLLIN)
        } else {
            PollEvents::NONE
        }
    }
}

/// Creates an epoll instance.
pub fn epoll_create() -> Result<i32> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let ep = Arc::new(EpollFile {
        id,
        inner: IrqMutex::new(EpollInstance::new()),
        wq: WaitQueue::new(),
        seq: AtomicU64::new(0),
        spin: AtomicU32::new(0),
        watched: IrqMutex::new(Vec::new()),
    });
    INSTANCES.lock().insert(id, Arc::downgrade(&ep));
    fs::install(ep)
}

fn epoll_file(fd: i32) -> Result<Arc<EpollFile>> {
    let any: Arc<dyn Any + Send + Sync> = fs::file_ops(fd)?;
    any.downcast::<EpollFile>().map_err(|_| Errno::EINVAL)
}

/// The readiness key of the object behind `fd`, or EPERM for objects epoll
/// cannot watch (regular files and directories, as on Linux).
fn source_key(fd: i32) -> Result<u64> {
    let f = fs::file_ops(fd)?;
    let any: &dyn Any = &*f;
    if let Some(s) = any.downcast_ref::<SocketFile>() {
        Ok(socket_key(s.id))
    } else if let Some(e) = any.downcast_ref::<EventFd>() {
        Ok(e.key)
    } else if let Some(e) = any.downcast_ref::<EpollFile>() {
        Ok(KIND_EPOLL | e.id)
    } else {
        Err(Errno::EPERM)
    }
}

/// Current readiness of source `key`: a socket's from its stack (`socket`),
/// or, when that gives `None` (its shard is busy on another CPU), the
/// readiness last reported for it (every change is reported under the
/// shard's lock, so at worst one about to be: nothing is lost, and a stale
/// bit is a spurious event that a non-blocking call answers with EAGAIN).
fn readiness_of(key: u64, socket: &dyn Fn(SocketId) -> Option<u32>) -> u32 {
    match key & KIND_MASK {
        KIND_SOCKET => socket(SocketId::from_u32(key as u32))
            .unwrap_or_else(|| SOURCES.lock().get(key).map_or(0, |s| s.events().0)),
        KIND_EVENTFD => EVENTFDS
            .lock()
            .get(key)
            .and_then(Weak::upgrade)
            .map_or(EPOLLHUP, |e| e.readiness()),
        KIND_EPOLL => {
            let id = key & !KIND_MASK;
            let ep = INSTANCES.lock().get(id).and_then(Weak::upgrade);
            ep.map_or(EPOLLHUP, |e| {
                if e.inner.lock().is_ready() {
                    EPOLLIN
                } else {
                    0
                }
            })
        }
        _ => 0,
    }
}

/// `epoll_ctl`: ADD, MOD or DEL interest in `fd` with `events` and `data`.
pub fn epoll_ctl(epfd: i32, op: i32, fd: i32, event: EpollEvent) -> Result<()> {
    let ep = epoll_file(epfd)?;
    if fd == epfd {
        return Err(Errno::EINVAL);
    }
    let key = source_key(fd)?;
    if key == KIND_EPOLL | ep.id {
        return Err(Errno::EINVAL);
    }
    let ctl_err =
        |e: uk_readiness::EpollError| Errno::from_errno(e.errno()).unwrap_or(Errno::EINVAL);
    match op {
        EPOLL_CTL_ADD => {
            // Order matters: the source's observer and the instance's interest
            // both exist *before* the current readiness is sampled. A
            // notification that comes in between (the network thread may run
            // between any two steps) then finds the interest and queues it;
            // one that came earlier is seen by the sample. Sampling before the
            // interest existed lost the event of data that arrived meanwhile
            // (a freshly accepted connection whose request then sat unread).
            // Room in both lists first: out of memory is ENOMEM, not a panic.
            if ep.watched.lock().try_reserve(1).is_err() {
                return Err(Errno::ENOMEM);
            }
            {
                let mut sources = SOURCES.lock();
                let Some(s) = sources.get_or_insert(key) else {
                    return Err(Errno::ENOMEM);
                };
                if !s.reserve_observer() {
                    return Err(Errno::ENOMEM);
                }
                s.add_observer(Observer {
                    instance: ep.id,
                    key,
                    fd,
                });
            }
            let r =
                ep.inner
                    .lock()
                    .ctl_add(key, fd, Events(event.events), event.data, Events::NONE);
            match r {
                Ok(()) => {
                    ep.watched.lock().push((key, fd));
                    sample_into(&ep, key, fd);
                    Ok(())
                }
                Err(e) => {
                    if e != uk_readiness::EpollError::Exists
                        && let Some(s) = SOURCES.lock().get_mut(key)
                    {
                        s.remove_observer(&Observer {
                            instance: ep.id,
                            key,
                            fd,
                        });
                    }
                    Err(ctl_err(e))
                }
            }
        }
        EPOLL_CTL_MOD => {
            // The new interest first, then the sample (see ADD).
            ep.inner
                .lock()
                .ctl_mod(key, fd, Events(event.events), event.data, Events::NONE)
                .map_err(ctl_err)?;
            sample_into(&ep, key, fd);
            Ok(())
        }
        EPOLL_CTL_DEL => {
            ep.inner.lock().ctl_del(key, fd).map_err(ctl_err)?;
            if let Some(s) = SOURCES.lock().get_mut(key) {
                s.remove_observer(&Observer {
                    instance: ep.id,
                    key,
                    fd,
                });
            }
            ep.watched.lock().retain(|w| *w != (key, fd));
            Ok(())
        }
        _ => Err(Errno::EINVAL),
    }
}

/// Samples the readiness of source `key` now and queues the interest
/// `(key, fd)` of `ep` if it is ready, waking the instance's waiters.
fn sample_into(ep: &EpollFile, key: u64, fd: i32) {
    // Under every shard's lock: a socket's readiness is recorded as the
    // last reported (epoll falls back to it while its shard is busy).
    let current = net::with_readiness_all(|sock| {
        let current = readiness_of(key, sock);
        if key & KIND_MASK == KIND_SOCKET
            && let Some(s) = SOURCES.lock().get_mut(key)
        {
            let _ = s.set(Events(current));
        }
        current
    });
    let queued = ep.inner.lock().notify(key, fd, Events(current));
    if queued || ep.inner.lock().is_ready() {
        ep.seq.fetch_add(1, Ordering::AcqRel);
        ep.wq.wake_all();
    }
}

/// `epoll_wait`: fills `out` with ready events; `timeout_ms` < 0 waits
/// forever, 0 returns at once. Returns how many were filled.
pub fn epoll_wait(epfd: i32, out: &mut [EpollEvent], timeout_ms: i32) -> Result<usize> {
    if out.is_empty() {
        return Err(Errno::EINVAL);
    }
    let ep = epoll_file(epfd)?;
    let deadline = (timeout_ms > 0).then(|| time::since_boot_ns() + timeout_ms as u64 * 1_000_000);
    // On the stack: waiting allocates nothing (with the heap exhausted,
    // the event loop must still learn which connections can go on).
    let mut ready = [uk_readiness::EpollEvent::default(); 64];
    let max = out.len().min(ready.len());
    loop {
        let seen = ep.seq.load(Ordering::Acquire);
        let n = net::with_readiness(|sock| {
            ep.inner
                .lock()
                .wait(max, &mut ready, |key, _fd| Events(readiness_of(key, sock)))
        });
        if n > 0 {
            for (o, r) in out.iter_mut().zip(&ready[..n]) {
                *o = EpollEvent {
                    events: r.events.0,
                    data: r.data,
                };
            }
            return Ok(n);
        }
        if timeout_ms == 0 {
            return Ok(0);
        }
        let moved = || (ep.seq.load(Ordering::Acquire) != seen).then_some(());
        // With other CPUs the next event may be on its way from one of
        // them (a network thread): a spin that sees it saves the block,
        // the wake-up's IPI and two switches.
        let multi = crate::arch::smp::multi();
        if multi && spin_for(&ep.spin, || moved().is_some()) {
            continue;
        }
        let blocked_at = multi.then(time::since_boot_ns);
        match deadline {
            None => ep.wq.wait_until(moved),
            Some(d) => {
                if ep.wq.wait_until_deadline(moved, d).is_none() {
                    return Ok(0);
                }
            }
        }
        if blocked_at.is_some_and(|t| time::since_boot_ns() - t < SPIN_WORTH_NS) {
            // Woken soon after blocking: spinning would have paid.
            grow_spin(&ep.spin);
        }
    }
}

/// Bounds of an epoll instance's spin before blocking, in pause loops.
const SPIN_MIN: u32 = 256;
const SPIN_MAX: u32 = 4096;
/// A block shorter than this would have been covered by a spin.
const SPIN_WORTH_NS: u64 = 200_000;

/// Spins up to `window` pause loops until `done`: true if it is; the
/// window doubles on success and halves (to 0 below [`SPIN_MIN`]) on
/// failure.
fn spin_for(window: &AtomicU32, done: impl Fn() -> bool) -> bool {
    let w = window.load(Ordering::Relaxed);
    if w == 0 {
        return false;
    }
    if crate::sync::spin_until(w, done) {
        grow_spin(window);
        return true;
    }
    let half = w / 2;
    window.store(if half < SPIN_MIN { 0 } else { half }, Ordering::Relaxed);
    false
}

/// Doubles a spin window, within [`SPIN_MIN`] and [`SPIN_MAX`].
fn grow_spin(window: &AtomicU32) {
    let w = window.load(Ordering::Relaxed);
    window.store((w * 2).clamp(SPIN_MIN, SPIN_MAX), Ordering::Relaxed);
}

/// One entry of [`poll`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PollFd {
    /// The descriptor (negative: ignored).
    pub fd: i32,
    /// Requested events.
    pub events: u32,
    /// Returned events.
    pub revents: u32,
}

/// POSIX `poll`: waits until one of `fds` has a requested event (ERR and
/// HUP always count), or `timeout_ms` passes. Returns the number of entries
/// with events. Built on a temporary epoll instance.
pub fn poll(fds: &mut [PollFd], timeout_ms: i32) -> Result<usize> {
    let ep = epoll_create()?;
    let result = (|| {
        let mut watched = 0;
        for (i, p) in fds.iter_mut().enumerate() {
            p.revents = 0;
            if p.fd < 0 {
                continue;
            }
            match epoll_ctl(
                ep,
                EPOLL_CTL_ADD,
                p.fd,
                EpollEvent {
                    events: p.events,
                    data: i as u64,
                },
            ) {
                Ok(()) => watched += 1,
                // Regular files are always ready.
                Err(Errno::EPERM) => p.revents = p.events & (EPOLLIN | EPOLLOUT),
                Err(Errno::EBADF) => p.revents = 0x20, // POLLNVAL
                Err(e) => return Err(e),
            }
        }
        let immediate = fds.iter().filter(|p| p.revents != 0).count();
        if immediate > 0 || watched == 0 {
            return Ok(immediate);
        }
        let mut evs = alloc::vec![EpollEvent::default(); fds.len()];
        let n = epoll_wait(ep, &mut evs, timeout_ms)?;
        for e in &evs[..n] {
            fds[e.data as usize].revents = e.events;
        }
        Ok(n)
    })();
    let _ = fs::close(ep);
    result
}

// ---------------------------------------------------------------------------
// sendfile

/// Sends up to `count` bytes of the regular file `in_fd`, from `*offset`
/// (advanced by what was sent), to the socket `out_fd` without copying: the
/// socket's send queue takes references to the page-cache pages (pinned
/// until acknowledged), and the NIC reads them in place (scatter-gather).
/// Like Linux: a blocking socket sends everything (or fails); a
/// non-blocking one returns what fit, or EAGAIN if nothing did. Returns the
/// bytes sent (0 at end of file).
pub fn sendfile(out_fd: i32, in_fd: i32, offset: &mut u64, count: usize) -> Result<usize> {
    const CHUNK: u64 = 256 * 1024;
    let sock = socket_file(out_fd)?;
    if sock.listener {
        return Err(Errno::EINVAL);
    }
    let src = fs::SendSource::new(in_fd)?;
    let end = src.size().min(offset.saturating_add(count as u64));
    let start = *offset;
    // References to the pages from `*offset` on, pinned but not queued yet.
    let mut refs = VecDeque::new();
    while *offset < end {
        let step = if refs.is_empty() {
            // Pin no more than the send queue takes now: pages pinned past
            // its room would only be unpinned again, unsent.
            match net::send_room(sock.id) {
                Ok(room) => {
                    let chunk = CHUNK.min(end - *offset).min(room as u64);
                    // Disk reads (and readahead) happen here, outside the
                    // network lock.
                    let pinned = src
                        .prefetch(*offset, chunk)
                        .and_then(|()| src.pin_pages(*offset, chunk, &mut refs));
                    match pinned {
                        Ok(n) if n > 0 => continue,
                        Ok(_) => break,
                        Err(_) if *offset > start => break,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => Err(errno_of(e)),
            }
        } else {
            net::send_with(sock.id, |stack, id| {
                match stack.tcp_send_refs(id, &mut refs) {
                    Ok(n) if n > 0 => Ok(n),
                    Ok(_) | Err(uk_net::NetError::WouldBlock) => {
                        if stack.readiness(id) & (EPOLLERR | EPOLLHUP) != 0 {
                            Err(Errno::EPIPE)
                        } else {
                            Err(Errno::EAGAIN)
                        }
                    }
                    Err(e) => Err(errno_of(e)),
                }
            })
            .map(|n| *offset += n as u64)
        };
        // No room, or nothing taken: a blocking socket waits; anything else
        // ends the call (with what was sent so far, if anything).
        match step {
            Ok(()) => {}
            Err(Errno::EAGAIN) if !sock.nb() => {
                if net::wait_writable(sock.id) {
                    continue;
                }
                if *offset > start {
                    break;
                }
                return Err(Errno::ENOMEM);
            }
            Err(_) if *offset > start => break,
            Err(e) => return Err(e),
        }
    }
    Ok((*offset - start) as usize)
}
