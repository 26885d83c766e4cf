//! The event loop, connections and the response writer.

use alloc::borrow::Cow;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::SocketAddrV4;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};

use uk_http::config::{Config, DataPath, fs_path};
use uk_http::{
    BodyPart, FileInfo, FileMeta, ListingEntry, NoMemory, OVERLOADED, ParseOutcome, Request,
    Resource, ResponsePlan, SafePath, ServerInfo, StatusError, combined_log_line, error_response,
    mime_for, parse_request, plan_error, plan_error_page, plan_listing, plan_redirect,
    plan_response, resolve_target,
};
use unikernel::fs::{self, Errno, FileKind, Flags, Stat};
use unikernel::io::{
    self, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD, EPOLLIN, EPOLLOUT, EpollEvent, O_NONBLOCK,
};
use unikernel::println;
use unikernel::sync::{IrqMutex, Once};
use unikernel::time::{Instant, SystemTime};

/// epoll token of the listener.
const LISTENER: u64 = u64::MAX;
/// epoll token of the shutdown-request eventfd.
const SHUTDOWN: u64 = u64::MAX - 1;
/// epoll token of the HTTPS listener.
const TLS_LISTENER: u64 = u64::MAX - 2;
/// epoll token of the ACME thread's eventfd (a new certificate; TLS build).
const ACME_WAKE: u64 = u64::MAX - 3;
/// epoll token of a loop's inbox eventfd (handed connections, the stop).
const WAKE: u64 = u64::MAX - 4;
/// Reads a lingering connection may do per turn before others run.
const LINGER_READS: usize = 16;
/// Bytes per `pread`/`write` step of the read and mmap data paths.
const CHUNK: usize = 64 * 1024;
/// Responses one connection may complete before others get their turn.
const TURN_BUDGET: usize = 32;
/// Value of the `Server` header.
const SERVER: &str = "uk-httpd";
/// Page size, for file mappings.
const PAGE: u64 = 4096;

fn now_ms() -> u64 {
    Instant::now().as_nanos() / 1_000_000
}

fn unix_now() -> u64 {
    SystemTime::now().unix_secs()
}

/// What the access log needs about a request.
struct LogInfo {
    request_line: String,
    referer: Option<String>,
    user_agent: Option<String>,
}

/// One piece of the response still to write.
enum Seg {
    /// Literal bytes (the header block, error bodies, multipart boundaries);
    /// `body` is false for the header block.
    Bytes {
        data: Cow<'static, [u8]>,
        pos: usize,
        body: bool,
    },
    /// `left` bytes of the open file from `off`.
    File { off: u64, left: u64 },
}

/// The open file behind a response's `Seg::File` parts.
struct BodyFile {
    fd: i32,
    /// Read path: bytes read but not yet sent.
    chunk: Vec<u8>,
    chunk_pos: usize,
    /// Mmap path: (address, file offset of the address, length).
    map: Option<(*const u8, u64, usize)>,
}

impl BodyFile {
    fn unmap(&mut self) {
        if let Some((addr, _, _)) = self.map.take() {
            let _ = fs::munmap_file(addr);
        }
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        self.unmap();
        let _ = fs::close(self.fd);
    }
}

/// A response being written.
struct Response {
    segs: VecDeque<Seg>,
    file: Option<BodyFile>,
    status: u16,
    keep_alive: bool,
    body_sent: u64,
    log: LogInfo,
}

impl Response {
    /// The response to send; an error when memory ran out (the caller then
    /// sends [`OVERLOADED`] and closes).
    fn new(plan: ResponsePlan, file: Option<BodyFile>, log: LogInfo) -> Result<Response, NoMemory> {
        let mut segs = VecDeque::new();
        segs.try_reserve_exact(plan.body.len() + 1)
            .map_err(|_| NoMemory)?;
        segs.push_back(Seg::Bytes {
            data: plan.head,
            pos: 0,
            body: false,
        });
        for part in plan.body {
            segs.push_back(match part {
                BodyPart::Bytes(data) => Seg::Bytes {
                    data: Cow::Owned(data),
                    pos: 0,
                    body: true,
                },
                BodyPart::File { offset, len } => Seg::File {
                    off: offset,
                    left: len,
                },
            });
        }
        Ok(Response {
            segs,
            file,
            status: plan.status,
            keep_alive: plan.keep_alive,
            body_sent: 0,
            log,
        })
    }

    /// Writes until everything is sent (`Ok(true)`) or the socket is full
    /// (`Ok(false)`).
    fn pump(&mut self, sock: &mut Sink<'_>, path: DataPath) -> Result<bool, Errno> {
        let path = sock.path(path);
        let Response {
            segs,
            file,
            body_sent,
            ..
        } = self;
        loop {
            let Some(seg) = segs.front_mut() else {
                return sock.flushed();
            };
            match seg {
                Seg::Bytes { data, pos, body } => {
                    if *pos == data.len() {
                        segs.pop_front();
                        continue;
                    }
                    match sock.write(&data[*pos..]) {
                        Ok(n) => {
                            *pos += n;
                            if *body {
                                *body_sent += n as u64;
                            }
                        }
                        Err(Errno::EAGAIN) => return Ok(false),
                        Err(e) => return Err(e),
                    }
                }
                Seg::File { off, left } => {
                    let f = file.as_mut().ok_or(Errno::EBADF)?;
                    if *left == 0 && f.chunk_pos == f.chunk.len() {
                        f.unmap();
                        segs.pop_front();
                        continue;
                    }
                    let sent = match path {
                        DataPath::Sendfile => {
                            let count = usize::try_from(*left).unwrap_or(usize::MAX);
                            match io::sendfile(sock.fd, f.fd, off, count) {
                                // The file shrank under us.
                                Ok(0) => return Err(Errno::EIO),
                                Ok(n) => {
                                    *left -= n as u64;
                                    Ok(n)
                                }
                                Err(e) => Err(e),
                            }
                        }
                        DataPath::Read => {
                            if f.chunk_pos == f.chunk.len() {
                                let want = (*left).min(CHUNK as u64) as usize;
                                f.chunk.clear();
                                f.chunk.try_reserve_exact(want).map_err(|_| Errno::ENOMEM)?;
                                f.chunk.resize(want, 0);
                                let n = fs::pread(f.fd, &mut f.chunk, *off)?;
                                if n == 0 {
                                    return Err(Errno::EIO);
                                }
                                f.chunk.truncate(n);
                                f.chunk_pos = 0;
                                *off += n as u64;
                                *left -= n as u64;
                            }
                            let r = sock.write(&f.chunk[f.chunk_pos..]);
                            if let Ok(n) = r {
                                f.chunk_pos += n;
                            }
                            r
                        }
                        DataPath::Mmap => {
                            let (addr, base, len) = match f.map {
                                Some(m) => m,
                                None => {
                                    let base = *off - *off % PAGE;
                                    let len = usize::try_from(*off + *left - base)
                                        .map_err(|_| Errno::EFBIG)?;
                                    let addr = fs::mmap_file(f.fd, len, base)?;
                                    f.map = Some((addr, base, len));
                                    (addr, base, len)
                                }
                            };
                            let start = (*off - base) as usize;
                            let n = (*left).min(CHUNK as u64) as usize;
                            if start + n > len {
                                return Err(Errno::EINVAL);
                            }
                            // SAFETY: `addr` is a live read-only mapping of
                            // `len` bytes made by `mmap_file` above; it is
                            // unmapped only by `BodyFile::unmap`, after this
                            // slice is gone, and `start + n <= len`.
                            let bytes = unsafe { core::slice::from_raw_parts(addr.add(start), n) };
                            let r = sock.write(bytes);
                            if let Ok(k) = r {
                                *off += k as u64;
                                *left -= k as u64;
                            }
                            r
                        }
                    };
                    match sent {
                        Ok(n) => *body_sent += n as u64,
                        Err(Errno::EAGAIN) => return Ok(false),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

/// Where a response's bytes go: the socket, or (HTTPS) the connection's
/// TLS record layer in front of it.
struct Sink<'a> {
    fd: i32,
    #[cfg(feature = "tls")]
    tls: Option<&'a mut crate::tls::TlsConn>,
    #[cfg(not(feature = "tls"))]
    _tls: core::marker::PhantomData<&'a ()>,
}

impl Sink<'_> {
    fn write(&mut self, data: &[u8]) -> Result<usize, Errno> {
        #[cfg(feature = "tls")]
        if let Some(t) = self.tls.as_deref_mut() {
            return t.write(self.fd, data);
        }
        fs::write(self.fd, data)
    }

    /// Whether everything written has left for the socket (TLS keeps the
    /// last records until the socket takes them: a response is complete,
    /// and its connection may close, only then).
    fn flushed(&mut self) -> Result<bool, Errno> {
        #[cfg(feature = "tls")]
        if let Some(t) = self.tls.as_deref_mut() {
            return t.flush(self.fd);
        }
        Ok(true)
    }

    /// The data path to use: TLS cannot send from the page cache (the
    /// record layer encrypts), so `sendfile` becomes the mmap path there:
    /// file pages are read once, by the encryption.
    fn path(&self, path: DataPath) -> DataPath {
        #[cfg(feature = "tls")]
        if self.tls.is_some() && path == DataPath::Sendfile {
            return DataPath::Mmap;
        }
        path
    }
}

/// Reads from a connection: the socket, or decrypted bytes under TLS.
fn conn_read(
    fd: i32,
    #[cfg(feature = "tls")] tls: Option<&mut crate::tls::TlsConn>,
    buf: &mut [u8],
) -> Result<usize, Errno> {
    #[cfg(feature = "tls")]
    if let Some(t) = tls {
        return t.read(fd, buf);
    }
    fs::read(fd, buf)
}

/// What a connection waits for after a turn.
enum Next {
    /// Readiness bits to wait for.
    Wait(u32),
    /// Budget used up with work left: run again without waiting.
    Again,
    /// Close the connection.
    Close,
}

struct Conn {
    fd: i32,
    generation: u32,
    peer: SocketAddrV4,
    rbuf: Vec<u8>,
    /// Request body bytes still to read and drop.
    discard: u64,
    read_eof: bool,
    /// Responses completed on this connection.
    served: u64,
    out: Option<Response>,
    interest: u32,
    /// When the current request head began to arrive (ms since boot).
    head_started: Option<u64>,
    /// Last time the connection made progress (ms since boot).
    last_activity: u64,
    deadline: u64,
    /// Shutting down: our FIN is sent after the last response; waiting for
    /// the client's, so the response is known to have arrived.
    lingering: bool,
    /// HTTPS: the TLS record layer.
    #[cfg(feature = "tls")]
    tls: Option<alloc::boxed::Box<crate::tls::TlsConn>>,
}

/// A file found for a request.
#[derive(Clone)]
struct Found {
    path: String,
    meta: FileMeta,
    gzip: Option<FileMeta>,
    brotli: Option<FileMeta>,
}

/// Lookups that found a file on a read-only file system, by request path.
/// What a path names there cannot change while the system runs, so a hit
/// skips the walk: an `lstat` per component, a `stat`, and two more for
/// the precompressed siblings. Bounded (the oldest entry goes first); a
/// request for a file elsewhere (a writable tmpfs) always walks.
struct LookupCache {
    /// (request path, what it found), oldest first.
    entries: Vec<(String, Found)>,
}

/// Entries in the [`LookupCache`].
const LOOKUP_CACHE_ENTRIES: usize = 64;

impl LookupCache {
    /// A copy of the entry for `path` (`None` without one, or without the
    /// memory for the copy).
    fn get(&self, path: &str) -> Option<Found> {
        let (_, f) = self.entries.iter().rev().find(|(p, _)| p == path)?;
        Some(Found {
            path: try_copy(&f.path)?,
            ..*f
        })
    }

    /// Remembers `found` for `path` if memory allows.
    fn put(&mut self, path: &str, found: &Found) {
        let (Some(key), Some(copy)) = (try_copy(path), try_copy(&found.path)) else {
            return;
        };
        if self.entries.try_reserve(1).is_err() {
            return;
        }
        if self.entries.len() >= LOOKUP_CACHE_ENTRIES {
            self.entries.remove(0);
        }
        self.entries.push((
            key,
            Found {
                path: copy,
                ..*found
            },
        ));
    }
}

/// A copy of `s`, or `None` without the memory for it.
fn try_copy(s: &str) -> Option<String> {
    let mut c = String::new();
    c.try_reserve_exact(s.len()).ok()?;
    c.push_str(s);
    Some(c)
}

enum Lookup {
    File(Found),
    Directory,
    NotFound,
    Forbidden,
    Failed(Errno),
}

fn meta_of(st: &Stat) -> FileMeta {
    FileMeta {
        len: st.size,
        mtime_unix: u64::try_from(st.mtime.sec).unwrap_or(0),
        seed: st.ino,
    }
}

/// A connection loop 0 accepted, for the loop that serves it.
pub struct Handed {
    fd: i32,
    peer: SocketAddrV4,
    #[cfg(feature = "tls")]
    tls: Option<alloc::boxed::Box<crate::tls::TlsConn>>,
}

/// What one event loop shares with the others: the connections handed to
/// it and its counters (its own cache line: the counters are written by
/// their loop only, the `live` count by the acceptor too).
#[repr(align(64))]
pub struct Loop {
    /// Handed connections not yet taken (in any order: the loop takes
    /// them all at once).
    inbox: IrqMutex<Vec<Handed>>,
    /// eventfd the loop watches, written when its inbox stops being empty
    /// and at the stop (loop 0: when another loop ended).
    wake: i32,
    /// Connections the loop serves or was handed: the acceptor gives a new
    /// one to the loop with the fewest.
    live: AtomicUsize,
    /// Responses completed and connections taken.
    requests: AtomicU64,
    conns: AtomicU64,
    /// The CPU the loop runs on.
    cpu: AtomicUsize,
}

/// Every loop's shared part, loop 0 (the acceptor, on the boot CPU) first.
static LOOPS: Once<Vec<Loop>> = Once::new();
/// Loop 0 stopped accepting (a shutdown): the others begin theirs.
static STOP: AtomicBool = AtomicBool::new(false);
/// The other loops' results: how many ended (each then wakes loop 0), the
/// worst exit status, connections finished and cut in the shutdown.
static ENDED: AtomicUsize = AtomicUsize::new(0);
static STATUS: AtomicUsize = AtomicUsize::new(0);
static FINISHED: AtomicUsize = AtomicUsize::new(0);
static CUT: AtomicUsize = AtomicUsize::new(0);
/// HTTPS is served (a certificate, possibly from ACME, and its listener).
#[cfg(feature = "tls")]
static HTTPS: AtomicBool = AtomicBool::new(false);

/// Sets up `n` loops' shared parts (an eventfd each) and
/// starts loops 1.. on CPUs 1.., each with a new [`Server`] for `cfg`.
#[inline(never)]
pub fn start_loops(cfg: &'static Config, n: usize) -> Result<(), Errno> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Loop {
            inbox: IrqMutex::new(Vec::new()),
            wake: io::eventfd(0, O_NONBLOCK)?,
            live: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            conns: AtomicU64::new(0),
            cpu: AtomicUsize::new(0),
        });
    }
    // Set once (never fails here, and never dropped).
    let _ = LOOPS.set(v).map_err(core::mem::forget);
    unikernel::console::set_app_dump_line(stats_line);
    for i in 1..n {
        let placement = unikernel::thread::Placement::Cpu(i as u32);
        let prio = unikernel::thread::Priority::Normal;
        unikernel::thread::spawn_on(placement, 1 << 20, prio, move || worker(cfg, i))
            .map_err(|_| Errno::ENOMEM)?;
    }
    Ok(())
}

/// Loop 0 ended with `status` (after the others): the worst status and
/// the shutdown's (finished, cut) counts of all loops.
pub fn join_loops(srv: &Server, status: i32) -> (i32, usize, usize) {
    (
        status | STATUS.load(Acquire) as i32,
        srv.finished() + FINISHED.load(Acquire),
        srv.cut() + CUT.load(Acquire),
    )
}

fn loops() -> &'static [Loop] {
    LOOPS.get().map_or(&[], Vec::as_slice)
}

/// Wakes loop `l` (its inbox or the stop).
#[inline(never)]
fn wake(l: &Loop) {
    let _ = fs::write(l.wake, &1u64.to_ne_bytes());
}

/// Counts one more (the counter's loop is its only writer).
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

/// The loops' counters for the diagnostic dump: `httpd loops=N
/// requests=TOTAL cpuC_requests=R cpuC_conns=K ...`.
pub fn stats_line() -> String {
    use core::fmt::Write;
    let mut s = String::new();
    let l = loops();
    let total: u64 = l.iter().map(|l| l.requests.load(Relaxed)).sum();
    let _ = write!(s, "httpd loops={} requests={total}", l.len());
    for l in l {
        let c = l.cpu.load(Relaxed);
        let _ = write!(
            s,
            " cpu{c}_requests={} cpu{c}_conns={}",
            l.requests.load(Relaxed),
            l.conns.load(Relaxed)
        );
    }
    s
}

/// Runs event loop `me` (not 0) on the CPU it was placed on: it serves
/// the connections loop 0 hands it until the stop, then reports to
/// [`join_loops`].
#[inline(never)]
fn worker(cfg: &'static Config, me: usize) {
    let status = match Server::new(cfg, -1, me) {
        Ok(mut srv) => {
            let status = srv.run();
            FINISHED.fetch_add(srv.finished(), AcqRel);
            CUT.fetch_add(srv.cut(), AcqRel);
            status
        }
        // Loop 0 would hand this loop connections nobody serves: the
        // server does not run at all (out of memory or descriptors at the
        // start).
        Err(e) => {
            println!("httpd: loop {me}: {e}");
            unikernel::process::exit(1)
        }
    };
    STATUS.fetch_or(status as usize, AcqRel);
    ENDED.fetch_add(1, AcqRel);
    if let Some(l) = loops().first() {
        wake(l);
    }
}

/// The most one read takes into a connection's buffer.
const READ_ROOM: usize = 4 * 1024;

/// The server: configuration, listener, epoll instance, connections.
pub struct Server {
    cfg: &'static Config,
    listener: i32,
    ep: i32,
    /// This loop's index in [`LOOPS`] (0: the acceptor), and its entry.
    me: usize,
    lp: &'static Loop,
    /// Where the search for the least loaded loop starts (ties rotate).
    next_loop: usize,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    next_gen: u32,
    /// Connections to run again without an event (budget used up).
    again: Vec<usize>,
    /// No deadline is earlier than this (ms since boot; u64::MAX: none).
    next_check: u64,
    /// Size at which a read buffer without a complete head is refused.
    rbuf_cap: usize,
    /// Where reads land first ([`READ_ROOM`] bytes, zeroed once): only
    /// what arrived is kept in the connection's buffer, so no read zero-fills
    /// room first, and a read that finds nothing allocates nothing.
    scratch: alloc::boxed::Box<[u8; READ_ROOM]>,
    /// Becomes readable when the machine asks us to stop.
    shutdown_fd: Option<i32>,
    /// Set once a shutdown was requested.
    stopping: Option<Stopping>,
    /// Files found on read-only file systems.
    lookups: core::cell::RefCell<LookupCache>,
    /// HTTPS: the listener and the TLS configuration.
    #[cfg(feature = "tls")]
    tls: Option<(i32, alloc::sync::Arc<rustls::ServerConfig>)>,
    /// HTTPS responses' extra fields: the site's, and
    /// `Strict-Transport-Security` with `--hsts`.
    #[cfg(feature = "tls")]
    tls_headers: Vec<(String, String)>,
}

/// Whether the connection is HTTPS.
#[cfg(feature = "tls")]
fn is_tls(conn: &Conn) -> bool {
    conn.tls.is_some()
}

#[cfg(not(feature = "tls"))]
fn is_tls(_conn: &Conn) -> bool {
    false
}

/// Progress of a graceful shutdown.
#[derive(Clone, Copy)]
struct Stopping {
    /// When the remaining connections are cut (ms since boot).
    deadline: u64,
    /// Connections that ended on their own since the request.
    finished: usize,
    /// Connections cut at the deadline.
    cut: usize,
}

impl Server {
    /// Sets up epoll for loop `me`: over the listening descriptor (loop 0)
    /// or the loop's inbox (the others).
    pub fn new(cfg: &'static Config, listener: i32, me: usize) -> Result<Server, Errno> {
        let lp = loops().get(me).ok_or(Errno::EINVAL)?;
        let ep = io::epoll_create()?;
        // Loop 0: the listener, and its eventfd, which the others write
        // when they end.
        if me == 0 {
            io::epoll_ctl(
                ep,
                EPOLL_CTL_ADD,
                listener,
                EpollEvent {
                    events: EPOLLIN,
                    data: LISTENER,
                },
            )?;
        }
        io::epoll_ctl(
            ep,
            EPOLL_CTL_ADD,
            lp.wake,
            EpollEvent {
                events: EPOLLIN,
                data: WAKE,
            },
        )?;
        lp.cpu.store(unikernel::thread::cpu_index(), Relaxed);
        let rbuf_cap = cfg.limits.max_request_line + cfg.limits.max_header_bytes + 1024;
        // The power button or Ctrl-Alt-Del makes this readable (loop 0;
        // it stops the others).
        let shutdown_fd = if me > 0 {
            None
        } else {
            match unikernel::power::shutdown_eventfd() {
                Ok(fd) => {
                    let ev = EpollEvent {
                        events: EPOLLIN,
                        data: SHUTDOWN,
                    };
                    match io::epoll_ctl(ep, EPOLL_CTL_ADD, fd, ev) {
                        Ok(()) => Some(fd),
                        Err(e) => {
                            log::error!("httpd: cannot watch shutdown requests: {e}");
                            let _ = fs::close(fd);
                            None
                        }
                    }
                }
                Err(e) => {
                    log::error!("httpd: no shutdown requests: {e}");
                    None
                }
            }
        };
        #[cfg(feature = "tls")]
        let mut tls_headers = cfg.headers.clone();
        #[cfg(feature = "tls")]
        if let Some(max_age) = cfg.hsts {
            tls_headers.push((
                String::from("Strict-Transport-Security"),
                uk_http::https::hsts_value(max_age),
            ));
        }
        Ok(Server {
            cfg,
            listener,
            ep,
            me,
            lp,
            next_loop: 0,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            next_gen: 1,
            again: Vec::new(),
            next_check: u64::MAX,
            rbuf_cap,
            scratch: alloc::boxed::Box::new([0; READ_ROOM]),
            shutdown_fd,
            stopping: None,
            lookups: core::cell::RefCell::new(LookupCache {
                entries: Vec::new(),
            }),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_headers,
        })
    }

    /// Serves HTTPS on `listener` with `config` beside HTTP.
    #[cfg(feature = "tls")]
    pub fn add_tls_listener(
        &mut self,
        listener: i32,
        config: alloc::sync::Arc<rustls::ServerConfig>,
    ) -> Result<(), Errno> {
        io::epoll_ctl(
            self.ep,
            EPOLL_CTL_ADD,
            listener,
            EpollEvent {
                events: EPOLLIN,
                data: TLS_LISTENER,
            },
        )?;
        self.tls = Some((listener, config));
        HTTPS.store(true, Release);
        Ok(())
    }

    /// ACME: watches the eventfd that says a new certificate is ready
    /// ([`crate::acme::take_config`]).
    #[cfg(feature = "tls")]
    pub fn watch_acme(&mut self, fd: i32) -> Result<(), Errno> {
        let ev = EpollEvent {
            events: EPOLLIN,
            data: ACME_WAKE,
        };
        io::epoll_ctl(self.ep, EPOLL_CTL_ADD, fd, ev)
    }

    /// ACME: serves the new certificate: opens the HTTPS port the first
    /// time, then swaps the configuration (open connections keep theirs).
    #[cfg(feature = "tls")]
    fn acme_certificate(&mut self) {
        // Taking it drains the eventfd (level-triggered), also when the
        // certificate comes too late to be used.
        let Some((config, what)) = crate::acme::take_config() else {
            return;
        };
        if self.stopping.is_some() {
            return;
        }
        if let Some((_, c)) = self.tls.as_mut() {
            *c = config;
            println!("httpd: HTTPS now with {what}");
            return;
        }
        let port = self.cfg.tls_port;
        let r = io::tcp_listen(port, self.cfg.backlog, O_NONBLOCK).and_then(|fd| {
            self.add_tls_listener(fd, config).inspect_err(|_| {
                let _ = fs::close(fd);
            })
        });
        match r {
            Ok(()) => println!("httpd: HTTPS on port {port} with {what}"),
            Err(e) => log::error!("httpd: ACME: cannot listen on port {port}: {e}"),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.cfg
    }

    /// What responses carry; `tls`: on an HTTPS connection.
    fn info(&self, tls: bool) -> ServerInfo<'_> {
        #[cfg(feature = "tls")]
        let headers = if tls {
            &self.tls_headers
        } else {
            &self.cfg.headers
        };
        #[cfg(not(feature = "tls"))]
        let headers = {
            let _ = tls;
            &self.cfg.headers
        };
        ServerInfo {
            server: SERVER,
            max_ranges: self.cfg.max_ranges,
            cache_control: self.cfg.cache_control.as_deref(),
            headers,
        }
    }

    /// Runs the event loop: returns 0 after a graceful shutdown, 1 if epoll
    /// fails.
    pub fn run(&mut self) -> i32 {
        let mut events = [EpollEvent::default(); 64];
        loop {
            if let Some(st) = self.stopping {
                if now_ms() >= st.deadline {
                    self.cut_all();
                }
                // Loop 0 ends last: the VM ends with it.
                if self.live == 0 && (self.me > 0 || ENDED.load(Acquire) + 1 >= loops().len()) {
                    return 0;
                }
            }
            let next_check = self
                .next_check
                .min(self.stopping.map_or(u64::MAX, |s| s.deadline));
            let timeout = if !self.again.is_empty() {
                0
            } else if next_check == u64::MAX {
                -1
            } else {
                let wait = next_check.saturating_sub(now_ms());
                // Round up so a deadline is never checked early.
                i32::try_from(wait + 1).unwrap_or(i32::MAX)
            };
            let n = match io::epoll_wait(self.ep, &mut events, timeout) {
                Ok(n) => n,
                Err(e) => {
                    log::error!("httpd: epoll_wait: {e}");
                    return 1;
                }
            };
            for ev in &events[..n] {
                if ev.data == SHUTDOWN {
                    self.begin_shutdown();
                } else if ev.data == WAKE {
                    self.take_handed();
                } else if ev.data == ACME_WAKE {
                    #[cfg(feature = "tls")]
                    self.acme_certificate();
                } else if ev.data == LISTENER || ev.data == TLS_LISTENER {
                    if self.stopping.is_none() {
                        self.accept_all(ev.data == TLS_LISTENER);
                    }
                } else {
                    let slot = (ev.data & 0xffff_ffff) as usize;
                    let generation = (ev.data >> 32) as u32;
                    if self
                        .conns
                        .get(slot)
                        .and_then(Option::as_ref)
                        .is_some_and(|c| c.generation == generation)
                    {
                        self.drive(slot);
                    }
                }
            }
            for slot in core::mem::take(&mut self.again) {
                if self.conns.get(slot).is_some_and(Option::is_some) {
                    self.drive(slot);
                }
            }
            if now_ms() >= self.next_check {
                self.expire();
            }
        }
    }

    /// Connections finished since the shutdown request.
    pub fn finished(&self) -> usize {
        self.stopping.map_or(0, |s| s.finished)
    }

    /// Connections cut at the shutdown deadline.
    pub fn cut(&self) -> usize {
        self.stopping.map_or(0, |s| s.cut)
    }

    /// Serves what was handed to this loop, then stops if loop 0 did (it
    /// hands nothing more after that); on loop 0, a wake-up only makes it
    /// look again whether the others ended.
    fn take_handed(&mut self) {
        let l = self.lp;
        // Drained before the inbox: a connection handed after this
        // read writes the eventfd again.
        let mut b = [0u8; 8];
        let _ = fs::read(l.wake, &mut b);
        loop {
            let h = l.inbox.lock().pop();
            match h {
                Some(h) => self.add(h),
                None => break,
            }
        }
        if STOP.load(Acquire) {
            self.begin_shutdown();
        }
    }

    /// The machine asked us to stop: take what is already established from
    /// the backlog, close the listener (new connections are refused with a
    /// RST), let in-flight responses finish, end idle connections, and cut
    /// whatever is left at `--shutdown-timeout`.
    fn begin_shutdown(&mut self) {
        if let Some(fd) = self.shutdown_fd.take() {
            let _ = io::epoll_ctl(self.ep, EPOLL_CTL_DEL, fd, EpollEvent::default());
            let _ = fs::close(fd);
        }
        if self.stopping.is_some() {
            return;
        }
        let timeout = self.cfg.shutdown_timeout_ms;
        if self.me == 0 {
            let source = unikernel::power::shutdown_source().map_or("unknown", |s| s.name());
            self.accept_all(false);
            let _ = io::epoll_ctl(self.ep, EPOLL_CTL_DEL, self.listener, EpollEvent::default());
            let _ = fs::close(self.listener);
            #[cfg(feature = "tls")]
            if self.tls.is_some() {
                self.accept_all(true);
                let fd = self.tls_listener();
                let _ = io::epoll_ctl(self.ep, EPOLL_CTL_DEL, fd, EpollEvent::default());
                let _ = fs::close(fd);
            }
            // Nothing is handed out from here on: the other loops stop.
            STOP.store(true, Release);
            for l in loops().iter().skip(1) {
                wake(l);
            }
            println!(
                "httpd: shutdown requested ({source}): no new connections, finishing {} within {timeout} ms",
                self.total_live()
            );
        }
        self.stopping = Some(Stopping {
            deadline: now_ms() + timeout,
            finished: 0,
            cut: 0,
        });
        // Every connection takes a turn under the shutdown rules.
        for slot in 0..self.conns.len() {
            if self.conns[slot].is_some() && !self.again.contains(&slot) {
                self.again.push(slot);
            }
        }
    }

    /// The shutdown deadline passed: closes every connection left.
    fn cut_all(&mut self) {
        for slot in 0..self.conns.len() {
            if let Some(conn) = self.conns[slot].take() {
                log::info!(
                    "httpd: {}: cut at the shutdown deadline{}",
                    conn.peer,
                    if conn.out.is_some() {
                        " with a response unfinished"
                    } else {
                        ""
                    }
                );
                if let Some(resp) = conn.out.as_ref() {
                    self.log_response(&conn, resp);
                }
                if let Some(st) = self.stopping.as_mut() {
                    st.cut += 1;
                }
                self.release(slot, conn);
            }
        }
        self.again.clear();
    }

    #[inline(never)]
    fn accept_all(&mut self, tls: bool) {
        let listener = if tls {
            self.tls_listener()
        } else {
            self.listener
        };
        loop {
            match io::accept4(listener, O_NONBLOCK) {
                Ok((fd, peer)) => {
                    let live = self.total_live();
                    if tls && live >= self.cfg.max_conns {
                        // No plain-text 503 into a TLS stream.
                        let _ = fs::close(fd);
                    } else if live >= self.cfg.max_conns {
                        self.refuse(fd, peer);
                    } else {
                        self.place(fd, peer, tls);
                    }
                }
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    log::error!("httpd: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Connections of all loops (handed ones included).
    fn total_live(&self) -> usize {
        loops().iter().map(|l| l.live.load(Relaxed)).sum()
    }

    /// A new connection goes to the loop with the fewest (the first of
    /// them from `next_loop` on, so ties rotate); only that loop is woken.
    fn place(&mut self, fd: i32, peer: SocketAddrV4, tls: bool) {
        #[cfg(feature = "tls")]
        let tls = match (&self.tls, tls) {
            (Some((_, config)), true) => match crate::tls::TlsConn::new(config) {
                Ok(t) => Some(alloc::boxed::Box::new(t)),
                Err(_) => {
                    let _ = fs::close(fd);
                    return;
                }
            },
            _ => None,
        };
        #[cfg(not(feature = "tls"))]
        let _ = tls;
        let h = Handed {
            fd,
            peer,
            #[cfg(feature = "tls")]
            tls,
        };
        let all = loops();
        // With a sharded network stack, the loop on the CPU whose shard
        // holds the connection serves it (all its work stays on that CPU);
        // otherwise the least loaded one.
        let home = io::socket_cpu(fd).ok().flatten();
        let t = match home.and_then(|c| all.iter().position(|l| l.cpu.load(Relaxed) == c)) {
            Some(t) => t,
            None => uk_http::balance::least_loaded(all.len(), self.next_loop, |i| {
                all.get(i).map_or(usize::MAX, |l| l.live.load(Relaxed))
            }),
        };
        let Some(l) = all.get(t) else {
            return self.add(h);
        };
        self.next_loop = t + 1;
        l.live.fetch_add(1, Relaxed);
        if t == self.me {
            return self.add(h);
        }
        let was_empty = {
            let mut q = l.inbox.lock();
            if q.try_reserve(1).is_err() {
                None
            } else {
                let e = q.is_empty();
                q.push(h);
                Some(e)
            }
        };
        match was_empty {
            Some(true) => wake(l),
            Some(false) => {}
            None => {
                l.live.fetch_sub(1, Relaxed);
                self.overloaded(fd, &peer);
                let _ = fs::close(fd);
            }
        }
    }

    fn tls_listener(&self) -> i32 {
        #[cfg(feature = "tls")]
        if let Some((fd, _)) = &self.tls {
            return *fd;
        }
        self.listener
    }

    /// Out of memory for a connection or a response: the static 503 (no
    /// allocation), logged; the caller closes.
    fn overloaded(&self, fd: i32, peer: &SocketAddrV4) {
        let _ = fs::write(fd, OVERLOADED);
        log::warn!("httpd: {peer}: out of memory, answered 503 and closed");
        self.access_log(peer, "", 503, 0, None, None);
    }

    /// Over the connection limit: a small 503 and close (the FIN follows it).
    fn refuse(&mut self, fd: i32, peer: SocketAddrV4) {
        let plan = error_response(
            503,
            false,
            unix_now(),
            &self.info(false),
            &[("Retry-After", "1")],
        );
        let _ = fs::write(fd, &plan.head);
        if let Some(BodyPart::Bytes(b)) = plan.body.first() {
            let _ = fs::write(fd, b);
        }
        let _ = fs::close(fd);
        log::warn!(
            "httpd: connection limit ({}) reached, refused {peer}",
            self.cfg.max_conns
        );
        self.access_log(&peer, "", 503, plan.body_len(), None, None);
    }

    /// Takes a connection [`Server::place`] gave this loop (its `live`
    /// count already includes it).
    fn add(&mut self, h: Handed) {
        let Handed {
            fd,
            peer,
            #[cfg(feature = "tls")]
            tls,
        } = h;
        let me = self.lp;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                // Room for the slot, and for it in the free and run-again
                // lists (so that releasing or requeueing never allocates).
                let n = self.conns.len() + 1;
                let grown = self.conns.try_reserve(1).is_ok()
                    && self.free.try_reserve(n - self.free.len()).is_ok()
                    && self.again.try_reserve(n - self.again.len()).is_ok();
                if !grown {
                    self.overloaded(fd, &peer);
                    let _ = fs::close(fd);
                    me.live.fetch_sub(1, Relaxed);
                    return;
                }
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let generation = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let token = (u64::from(generation) << 32) | slot as u64;
        if let Err(e) = io::epoll_ctl(
            self.ep,
            EPOLL_CTL_ADD,
            fd,
            EpollEvent {
                events: EPOLLIN,
                data: token,
            },
        ) {
            log::error!("httpd: epoll_ctl add {peer}: {e}");
            let _ = fs::close(fd);
            self.free.push(slot);
            me.live.fetch_sub(1, Relaxed);
            return;
        }
        bump(&me.conns);
        let now = now_ms();
        let deadline = now + self.cfg.header_timeout_ms;
        self.conns[slot] = Some(Conn {
            fd,
            generation,
            peer,
            rbuf: Vec::new(),
            discard: 0,
            read_eof: false,
            served: 0,
            out: None,
            interest: EPOLLIN,
            head_started: None,
            last_activity: now,
            deadline,
            lingering: false,
            #[cfg(feature = "tls")]
            tls,
        });
        self.live += 1;
        self.next_check = self.next_check.min(deadline);
    }

    /// A connection ended (on its own, or by our rules).
    fn close(&mut self, slot: usize, conn: Conn) {
        self.release(slot, conn);
        if let Some(st) = self.stopping.as_mut() {
            st.finished += 1;
        }
    }

    fn release(&mut self, slot: usize, conn: Conn) {
        // HTTPS: tell the client the stream ends here.
        #[cfg(feature = "tls")]
        let mut conn = conn;
        #[cfg(feature = "tls")]
        if let Some(t) = conn.tls.as_deref_mut() {
            t.close_notify(conn.fd);
        }
        let _ = io::epoll_ctl(self.ep, EPOLL_CTL_DEL, conn.fd, EpollEvent::default());
        let _ = fs::close(conn.fd);
        drop(conn);
        self.free.push(slot);
        self.live -= 1;
        self.lp.live.fetch_sub(1, Relaxed);
    }

    /// Runs one connection as far as it goes without blocking.
    fn drive(&mut self, slot: usize) {
        let Some(mut conn) = self.conns[slot].take() else {
            return;
        };
        let next = self.turn(&mut conn);
        let now = now_ms();
        match next {
            Next::Close => self.close(slot, conn),
            Next::Again => {
                self.again.push(slot);
                self.conns[slot] = Some(conn);
            }
            Next::Wait(want) => {
                #[cfg(feature = "tls")]
                let want = if conn.tls.as_ref().is_some_and(|t| t.wants_write()) {
                    want | EPOLLOUT
                } else {
                    want
                };
                conn.deadline = if let (true, Some(st)) = (conn.lingering, self.stopping) {
                    st.deadline
                } else if conn.out.is_some() {
                    conn.last_activity + self.cfg.idle_timeout_ms
                } else if let Some(t) = conn.head_started {
                    t + self.cfg.header_timeout_ms
                } else if conn.served == 0 {
                    conn.last_activity + self.cfg.header_timeout_ms
                } else {
                    conn.last_activity + self.cfg.idle_timeout_ms
                };
                self.next_check = self.next_check.min(conn.deadline.max(now));
                if want != conn.interest {
                    let ev = EpollEvent {
                        events: want,
                        data: (u64::from(conn.generation) << 32) | slot as u64,
                    };
                    match io::epoll_ctl(self.ep, EPOLL_CTL_MOD, conn.fd, ev) {
                        Ok(()) => conn.interest = want,
                        Err(e) => {
                            log::error!("httpd: epoll_ctl mod {}: {e}", conn.peer);
                            self.close(slot, conn);
                            return;
                        }
                    }
                }
                self.conns[slot] = Some(conn);
            }
        }
    }

    /// Shutting down, a connection with nothing more to send: our FIN now,
    /// then wait for the client's.
    fn start_linger(&self, conn: &mut Conn) -> Next {
        conn.lingering = true;
        conn.rbuf.clear();
        conn.discard = 0;
        if io::shutdown_write(conn.fd).is_err() {
            return Next::Close;
        }
        self.linger(conn)
    }

    /// Reads and drops whatever still arrives until the client closes.
    fn linger(&self, conn: &mut Conn) -> Next {
        let mut scratch = [0u8; 512];
        for _ in 0..LINGER_READS {
            match fs::read(conn.fd, &mut scratch) {
                Ok(0) => return Next::Close,
                Ok(_) => {}
                Err(Errno::EAGAIN) => return Next::Wait(EPOLLIN),
                Err(_) => return Next::Close,
            }
        }
        Next::Again
    }

    fn turn(&mut self, conn: &mut Conn) -> Next {
        let mut budget = TURN_BUDGET;
        loop {
            if conn.lingering {
                return self.linger(conn);
            }
            if let Some(resp) = conn.out.as_mut() {
                let before = resp.body_sent;
                let mut sink = Sink {
                    fd: conn.fd,
                    #[cfg(feature = "tls")]
                    tls: conn.tls.as_deref_mut(),
                    #[cfg(not(feature = "tls"))]
                    _tls: core::marker::PhantomData,
                };
                let r = resp.pump(&mut sink, self.cfg.data_path);
                if resp.body_sent != before {
                    conn.last_activity = now_ms();
                }
                match r {
                    Ok(true) => {
                        let resp = conn.out.take().expect("a response");
                        self.log_response(conn, &resp);
                        conn.served += 1;
                        bump(&self.lp.requests);
                        conn.last_activity = now_ms();
                        if self.stopping.is_some() {
                            return self.start_linger(conn);
                        }
                        if !resp.keep_alive {
                            return Next::Close;
                        }
                        budget -= 1;
                        if budget == 0 {
                            return Next::Again;
                        }
                    }
                    Ok(false) => return Next::Wait(EPOLLOUT),
                    Err(e) => {
                        if let Some(resp) = conn.out.take() {
                            log::debug!(
                                "httpd: {}: write failed after {} body bytes: {e}",
                                conn.peer,
                                resp.body_sent
                            );
                            if !matches!(e, Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) {
                                log::error!(
                                    "httpd: {} \"{}\": sending failed: {e}",
                                    conn.peer,
                                    resp.log.request_line
                                );
                            }
                            self.log_response(conn, &resp);
                        }
                        return Next::Close;
                    }
                }
                continue;
            }

            // Between responses: drop request body bytes, then parse.
            if conn.discard > 0 && !conn.rbuf.is_empty() {
                let k = conn.discard.min(conn.rbuf.len() as u64) as usize;
                conn.rbuf.drain(..k);
                conn.discard -= k as u64;
            }
            if conn.discard == 0 && !conn.rbuf.is_empty() {
                if conn.head_started.is_none() {
                    conn.head_started = Some(now_ms());
                }
                match parse_request(&conn.rbuf, &self.cfg.limits) {
                    ParseOutcome::Complete {
                        mut request,
                        consumed,
                    } => {
                        // Shutting down: the last response on this connection.
                        request.keep_alive &= self.stopping.is_none();
                        conn.rbuf.drain(..consumed);
                        conn.discard = request.body_len;
                        conn.head_started = None;
                        let Ok(resp) = self.respond(&mut request, is_tls(conn)) else {
                            self.overloaded(conn.fd, &conn.peer);
                            return Next::Close;
                        };
                        conn.out = Some(resp);
                        continue;
                    }
                    ParseOutcome::Error(mut e) => {
                        conn.head_started = None;
                        let Ok(resp) = self.reject(conn, &mut e) else {
                            self.overloaded(conn.fd, &conn.peer);
                            return Next::Close;
                        };
                        conn.out = Some(resp);
                        continue;
                    }
                    ParseOutcome::Partial if conn.rbuf.len() >= self.rbuf_cap => {
                        let mut e = StatusError {
                            close: true,
                            ..StatusError::new(431)
                        };
                        let Ok(resp) = self.reject(conn, &mut e) else {
                            self.overloaded(conn.fd, &conn.peer);
                            return Next::Close;
                        };
                        conn.out = Some(resp);
                        continue;
                    }
                    ParseOutcome::Partial => {}
                }
            }
            if conn.read_eof {
                return Next::Close;
            }
            let old = conn.rbuf.len();
            // 4 KiB holds a typical request head many times over, and a
            // longer one takes another turn.
            let room = (self.rbuf_cap - old.min(self.rbuf_cap)).clamp(1, READ_ROOM);
            let r = conn_read(
                conn.fd,
                #[cfg(feature = "tls")]
                conn.tls.as_deref_mut(),
                &mut self.scratch[..room],
            );
            if let Ok(n @ 1..) = r
                && let Some(got) = self.scratch.get(..n)
            {
                if conn.rbuf.try_reserve(n).is_err() {
                    self.overloaded(conn.fd, &conn.peer);
                    return Next::Close;
                }
                conn.rbuf.extend_from_slice(got);
            }
            match r {
                Ok(0) => conn.read_eof = true,
                Ok(_) => {
                    if conn.rbuf.capacity() > 64 * 1024 && conn.rbuf.len() < 4096 {
                        conn.rbuf.shrink_to(4096);
                    }
                }
                Err(Errno::EAGAIN) => {
                    if conn.rbuf.is_empty() {
                        conn.rbuf = Vec::new();
                        // Shutting down, no request under way: done.
                        if self.stopping.is_some() && conn.discard == 0 {
                            return self.start_linger(conn);
                        }
                    }
                    return Next::Wait(EPOLLIN);
                }
                Err(e) => {
                    log::debug!("httpd: {}: read: {e}", conn.peer);
                    return Next::Close;
                }
            }
        }
    }

    /// The response to a request head that cannot be served.
    fn reject(&self, conn: &mut Conn, e: &mut StatusError) -> Result<Response, NoMemory> {
        let plan = e.response(unix_now(), &self.info(is_tls(conn)));
        if e.close {
            // The byte stream is out of step: read nothing more.
            conn.read_eof = true;
            conn.rbuf.clear();
        } else {
            let k = e.consumed.min(conn.rbuf.len());
            conn.rbuf.drain(..k);
            conn.discard = e.body_len;
        }
        let log = LogInfo {
            request_line: e.request_line.take().unwrap_or_default(),
            referer: None,
            user_agent: None,
        };
        Response::new(plan, None, log)
    }

    /// Plans and prepares the response to an accepted request (the log's
    /// fields are moved out of `req`); an error when memory ran out.
    fn respond(&self, req: &mut Request, tls: bool) -> Result<Response, NoMemory> {
        let now = unix_now();
        let info = self.info(tls);
        let log = LogInfo {
            // Only the log line loses it when memory is short.
            request_line: req.request_line().unwrap_or_default(),
            referer: req.referer.take(),
            user_agent: req.user_agent.take(),
        };
        let req = &*req;
        // ACME HTTP-01 (before the redirect: the CA asks over plain HTTP):
        // the key authorization of a challenge under way.
        #[cfg(feature = "tls")]
        if self.cfg.acme.is_some()
            && let Ok(p) = resolve_target(&req.target)
            && let Some(ka) =
                uk_http::acme::challenge_token(p.as_str()).and_then(crate::acme::key_authorization)
        {
            let plan = uk_http::acme::plan_challenge(req, &ka, now, &info);
            return Response::new(plan, None, log);
        }
        // --redirect-https: every plain HTTP request goes to HTTPS, once it
        // is served (with ACME, from the first certificate on).
        #[cfg(feature = "tls")]
        if !tls
            && let Some(status) = self.cfg.redirect_https
            && HTTPS.load(Acquire)
        {
            let plan =
                uk_http::https::plan_https_redirect(req, status, self.cfg.tls_port, now, &info);
            return Response::new(plan, None, log);
        }
        let path = match resolve_target(&req.target) {
            Ok(p) => p,
            Err(e) => return Response::new(plan_error(req, e.status, now, &info), None, log),
        };
        // The ACME state (private keys) is never served.
        #[cfg(feature = "tls")]
        if let Some(a) = &self.cfg.acme
            && uk_http::acme::is_private(&fs_path(&self.cfg.root, &path)?, &a.state)
        {
            return Response::new(plan_error(req, 404, now, &info), None, log);
        }
        // The site's rules (uk.toml): redirects, Cache-Control per path.
        if let Some(r) = self.cfg.redirect_for(path.as_str()) {
            return Response::new(plan_redirect(req, r.status, &r.to, now, &info), None, log);
        }
        let info = ServerInfo {
            cache_control: self.cfg.cache_control_for(path.as_str()),
            ..info
        };
        let mut found = self.lookup(&path)?;
        let resource = match &found {
            Lookup::File(f) => Resource::File(FileInfo {
                meta: f.meta,
                content_type: mime_for(&f.path),
                gzip: f.gzip,
                brotli: f.brotli,
            }),
            Lookup::Directory => Resource::Directory,
            Lookup::NotFound => Resource::NotFound,
            Lookup::Forbidden => Resource::Forbidden,
            Lookup::Failed(e) => {
                let root = self.cfg.root.trim_end_matches('/');
                log::error!("httpd: {root}{}: {e}", path.as_str());
                let status = if *e == Errno::ENOMEM { 503 } else { 500 };
                return Response::new(plan_error(req, status, now, &info), None, log);
            }
        };
        // A directory without an index, asked for with its slash: a listing
        // when the site turned them on (plan_response would say 403).
        if self.cfg.listing
            && matches!(found, Lookup::Directory)
            && path.as_str().ends_with('/')
            && let Ok(mut names) = fs::read_dir(&fs_path(&self.cfg.root, &path)?)
        {
            // Names in a directory are unique: an unstable sort is exact.
            uk_http::sort::heapsort_by(&mut names, |a, b| a.0.cmp(&b.0));
            let mut entries: Vec<ListingEntry> = Vec::new();
            entries
                .try_reserve_exact(names.len())
                .map_err(|_| NoMemory)?;
            entries.extend(names.into_iter().map(|(name, kind)| ListingEntry {
                name,
                dir: kind == FileKind::Directory,
            }));
            let plan = plan_listing(req, path.as_str(), &entries, now, &info);
            return Response::new(plan, None, log);
        }
        let mut plan = plan_response(req, &path, &resource, now, &info);
        // A custom page for an error status (uk.toml's error_pages).
        if let Some(page) = self.cfg.error_page(plan.status)
            && let Ok(p) = resolve_target(page)
            && let Lookup::File(f) = self.lookup(&p)?
        {
            let page_info = FileInfo {
                meta: f.meta,
                content_type: mime_for(&f.path),
                gzip: None,
                brotli: None,
            };
            plan = plan_error_page(req, plan.status, &page_info, now, &info);
            // The plan's identity encoding opens the page itself.
            found = Lookup::File(f);
        }
        let needs_file = plan.body.iter().any(|p| matches!(p, BodyPart::File { .. }));
        let Lookup::File(f) = found else {
            return Response::new(plan, None, log);
        };
        if !needs_file {
            return Response::new(plan, None, log);
        }
        let mut file_path = f.path;
        let suffix = plan.encoding.file_suffix();
        file_path
            .try_reserve_exact(suffix.len())
            .map_err(|_| NoMemory)?;
        file_path.push_str(suffix);
        match fs::open(&file_path, Flags::O_RDONLY, 0) {
            Ok(fd) => {
                let file = BodyFile {
                    fd,
                    chunk: Vec::new(),
                    chunk_pos: 0,
                    map: None,
                };
                Response::new(plan, Some(file), log)
            }
            Err(e) => {
                log::error!("httpd: open {file_path}: {e}");
                Response::new(plan_error(req, 500, now, &info), None, log)
            }
        }
    }

    /// Finds what `path` names under the document root. Symbolic links and
    /// dotfiles are refused (403): nothing outside the root is ever served.
    /// An error when memory ran out.
    fn lookup(&self, path: &SafePath) -> Result<Lookup, NoMemory> {
        if path.has_hidden_segment() {
            return Ok(Lookup::Forbidden);
        }
        if let Some(found) = self.lookups.borrow().get(path.as_str()) {
            return Ok(Lookup::File(found));
        }
        let r = self.walk(path)?;
        if let Lookup::File(found) = &r
            && fs::read_only(&found.path) == Ok(true)
        {
            self.lookups.borrow_mut().put(path.as_str(), found);
        }
        Ok(r)
    }

    /// [`Server::lookup`] without the cache: walks the document root.
    fn walk(&self, path: &SafePath) -> Result<Lookup, NoMemory> {
        let mut full = fs_path(&self.cfg.root, path)?;
        // Room for the longest name made from it below (no reallocation).
        let extra = self.cfg.index.len() + 4;
        full.try_reserve_exact(extra).map_err(|_| NoMemory)?;
        // Every component below the root must be a real directory or file.
        let root_len = self.cfg.root.trim_end_matches('/').len();
        let mut end = root_len;
        while end < full.len() {
            let next = full[end + 1..]
                .find('/')
                .map_or(full.len(), |i| end + 1 + i);
            match fs::lstat(&full[..next]) {
                Ok(st) if st.kind == FileKind::Symlink => return Ok(Lookup::Forbidden),
                Ok(_) => {}
                Err(e) => return Ok(not_found_or(e)),
            }
            end = next;
        }
        let mut st = match fs::stat(&full) {
            Ok(st) => st,
            Err(e) => return Ok(not_found_or(e)),
        };
        match st.kind {
            FileKind::Regular if path.trailing_slash() && !path.is_root() => {
                return Ok(Lookup::NotFound);
            }
            FileKind::Regular => {}
            FileKind::Directory => {
                if !path.trailing_slash() {
                    return Ok(Lookup::Directory);
                }
                if !full.ends_with('/') {
                    full.push('/');
                }
                full.push_str(&self.cfg.index);
                match fs::lstat(&full) {
                    Ok(s) if s.kind == FileKind::Regular => st = s,
                    Ok(s) if s.kind == FileKind::Symlink => return Ok(Lookup::Forbidden),
                    _ => return Ok(Lookup::Directory),
                }
            }
            _ => return Ok(Lookup::Forbidden),
        }
        let mut sibling = |suffix: &str| {
            let len = full.len();
            full.push_str(suffix);
            let st = fs::lstat(&full);
            full.truncate(len);
            st.ok()
                .filter(|s| s.kind == FileKind::Regular)
                .map(|s| meta_of(&s))
        };
        let gzip = sibling(".gz");
        let brotli = sibling(".br");
        Ok(Lookup::File(Found {
            meta: meta_of(&st),
            path: full,
            gzip,
            brotli,
        }))
    }

    /// Closes connections whose deadline passed: a partial request head gets
    /// 408 first; an idle keep-alive connection or a stalled response is
    /// just closed.
    fn expire(&mut self) {
        let now = now_ms();
        let mut next = u64::MAX;
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_ref() else {
                continue;
            };
            // A lingering connection's deadline is the shutdown's: cut_all
            // ends (and counts) it.
            if conn.deadline > now || conn.lingering {
                next = next.min(conn.deadline);
                continue;
            }
            let conn = self.conns[slot].take().expect("a connection");
            if conn.out.is_some() {
                log::debug!("httpd: {}: send timeout", conn.peer);
            } else if is_tls(&conn) {
                // No plain-text 408 into a TLS stream.
                log::debug!("httpd: {}: TLS connection timed out", conn.peer);
            } else if conn.head_started.is_some() || !conn.rbuf.is_empty() || conn.discard > 0 {
                let plan = error_response(408, false, unix_now(), &self.info(false), &[]);
                let _ = fs::write(conn.fd, &plan.head);
                if let Some(BodyPart::Bytes(b)) = plan.body.first() {
                    let _ = fs::write(conn.fd, b);
                }
                self.access_log(&conn.peer, "", 408, plan.body_len(), None, None);
            } else if conn.served == 0 {
                // A connection that never sent a byte: worth knowing about
                // (a port scanner, a preconnecting browser, or a lost wake-up).
                log::info!(
                    "httpd: {}: closed, no request within {} ms",
                    conn.peer,
                    self.cfg.header_timeout_ms
                );
            } else {
                log::debug!("httpd: {}: idle timeout", conn.peer);
            }
            self.close(slot, conn);
        }
        self.next_check = next;
    }

    fn log_response(&self, conn: &Conn, resp: &Response) {
        self.access_log(
            &conn.peer,
            &resp.log.request_line,
            resp.status,
            resp.body_sent,
            resp.log.referer.as_deref(),
            resp.log.user_agent.as_deref(),
        );
    }

    fn access_log(
        &self,
        peer: &SocketAddrV4,
        request_line: &str,
        status: u16,
        bytes: u64,
        referer: Option<&str>,
        user_agent: Option<&str>,
    ) {
        if self.cfg.access_log {
            let line = combined_log_line(
                peer.ip(),
                request_line,
                status,
                bytes,
                referer,
                user_agent,
                unix_now(),
            );
            println!("{line}");
        }
    }
}

fn not_found_or(e: Errno) -> Lookup {
    match e {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG | Errno::ELOOP => Lookup::NotFound,
        Errno::EACCES | Errno::EPERM => Lookup::Forbidden,
        e => Lookup::Failed(e),
    }
}
