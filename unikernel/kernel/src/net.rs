//! Networking for apps: the `uk-net` stack over the virtio-net driver, with
//! blocking, `std::net`-shaped sockets on top.
//!
//! One sleeping lock guards the stack and the device. The device interrupt
//! only acknowledges and wakes the network thread, which polls the stack;
//! application threads also poll inline after their own socket calls, so a
//! `write` goes out without waiting for that thread. Every socket has a wait
//! queue and an event counter: the poller bumps the counter and wakes the
//! queue of each socket whose readiness changed, and a blocked call sleeps
//! until the counter moves (so an event between its attempt and its sleep is
//! never lost).

use alloc::sync::Arc;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;

use alloc::vec::Vec;

use crate::drivers::DeviceType;
use uk_net::{NetConfig, NetStack, SocketId, StackOptions};

use crate::drivers::{self, IrqSource, virtio_net::VirtioNet};
use crate::sync::{IrqMutex, Mutex, WaitQueue};
use crate::time;

pub use uk_net::{EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, ErrorKind, IpInfo, NetError};

/// Result of socket calls.
pub type Result<T> = core::result::Result<T, NetError>;

struct Net {
    stack: NetStack,
    nic: VirtioNet,
}

/// Boxed so the static is all zeros (.bss, not part of the image).
static NET: Mutex<Option<alloc::boxed::Box<Net>>> = Mutex::new(None);
/// Set by the interrupt handler, cleared by the network thread.
static IRQ_PENDING: AtomicBool = AtomicBool::new(false);
static NET_THREAD_WQ: WaitQueue = WaitQueue::new();
/// The stack's next deadline (ms since boot), u64::MAX for none.
static NEXT_POLL_MS: AtomicU64 = AtomicU64::new(u64::MAX);
/// Woken when the IP configuration or readiness changes.
static CONFIG_WQ: WaitQueue = WaitQueue::new();
static CONFIG_SEQ: AtomicU64 = AtomicU64::new(0);
static IRQ_SOURCE: IrqMutex<Option<IrqSource>> = IrqMutex::new(None);

/// Per-socket wake-up state.
struct SockWait {
    wq: WaitQueue,
    seq: AtomicU64,
}

/// Wait state of the sockets a blocking call waited on, by socket slot (the
/// stack reuses slots, so the table stays as long as the most sockets open
/// at once).
static WAITERS: IrqMutex<Vec<Option<Arc<SockWait>>>> = IrqMutex::new(Vec::new());

/// The wait state of socket `id`, made if there is none; `None` when there
/// is no memory for it.
fn waiter(id: SocketId) -> Option<Arc<SockWait>> {
    let i = id.as_u32() as usize;
    let mut w = WAITERS.lock();
    if let Some(Some(s)) = w.get(i) {
        return Some(s.clone());
    }
    if i >= w.len() {
        let more = i + 1 - w.len();
        w.try_reserve(more).ok()?;
        w.resize_with(i + 1, || None);
    }
    let s = uk_frame::try_arc(SockWait {
        wq: WaitQueue::new(),
        seq: AtomicU64::new(0),
    })
    .ok()?;
    w[i] = Some(s.clone());
    Some(s)
}

fn now_ms() -> u64 {
    time::since_boot_ns() / 1_000_000
}

fn on_irq(_frame: &mut crate::arch::idt::TrapFrame) {
    if let Some(src) = *IRQ_SOURCE.lock() {
        src.ack();
    }
    IRQ_PENDING.store(true, Ordering::Release);
    NET_THREAD_WQ.wake_one();
}

/// Wakes a blocked caller of socket `id` and reports its readiness to epoll.
fn notify_changed(net: &mut Net, id: SocketId) {
    let w = WAITERS.lock().get(id.as_u32() as usize).cloned().flatten();
    if let Some(w) = w {
        w.seq.fetch_add(1, Ordering::AcqRel);
        w.wq.wake_all();
    }
    crate::io::notify_socket(id, net.stack.readiness(id), net.stack.rx_generation(id));
}

/// Polls the stack and wakes whoever its events concern. Call with the lock
/// held. True when a socket's readiness changed (someone may have work).
fn poll_locked(net: &mut Net) -> bool {
    let r = net.stack.poll(now_ms(), &mut net.nic);
    let busy = !r.readiness_changed.is_empty();
    NEXT_POLL_MS.store(r.next_poll_ms.unwrap_or(u64::MAX), Ordering::Release);
    for &id in &r.readiness_changed {
        notify_changed(net, id);
    }
    net.stack.recycle(r.readiness_changed);
    if r.config_changed {
        CONFIG_SEQ.fetch_add(1, Ordering::AcqRel);
        CONFIG_WQ.wake_all();
    }
    if NEXT_POLL_MS.load(Ordering::Acquire) <= now_ms() {
        IRQ_PENDING.store(true, Ordering::Release);
        NET_THREAD_WQ.wake_one();
    }
    busy
}

/// Polls for an application thread: the frames it queues wait for the
/// doorbell, rung when the thread next waits for events or blocks
/// ([`kick_held`]), or by the network thread when the CPU goes idle.
#[inline(never)]
fn app_poll(net: &mut Net) {
    net.nic.hold_tx_notify(true);
    poll_locked(net);
    net.nic.hold_tx_notify(false);
    if net.nic.tx_notify_held() {
        TX_HELD.store(true, Ordering::Release);
    }
}

/// Set while transmitted frames wait for the device's doorbell.
static TX_HELD: AtomicBool = AtomicBool::new(false);

/// Rings the transmit doorbell held by [`app_poll`]s of this thread or
/// others; call with the lock held.
fn kick_locked(net: &mut Net) {
    if TX_HELD.swap(false, Ordering::AcqRel) {
        net.nic.kick_tx();
    }
}

/// Rings the held transmit doorbell before the caller blocks.
fn kick_held() {
    if TX_HELD.load(Ordering::Acquire)
        && let Some(net) = NET.lock().as_mut()
    {
        kick_locked(net);
    }
}

/// Set while receive interrupts are off because the CPU is busy with what
/// the last poll woke; the idle hook (or `RX_DEFER_NS`) brings the network
/// thread back to poll before they go on again.
static RX_DEFERRED: AtomicBool = AtomicBool::new(false);

/// The longest a busy CPU goes without polling for received frames while
/// their interrupts are off.
const RX_DEFER_NS: u64 = 2_000_000;

/// Runs when the CPU is about to halt: if receive interrupts were left off,
/// the network thread polls once more (and turns them on if it finds
/// nothing) instead.
fn on_idle() -> bool {
    if RX_DEFERRED.swap(false, Ordering::AcqRel) | TX_HELD.load(Ordering::Acquire) {
        IRQ_PENDING.store(true, Ordering::Release);
        NET_THREAD_WQ.wake_one();
        return true;
    }
    false
}

fn net_thread() {
    loop {
        let mut deadline = match NEXT_POLL_MS.load(Ordering::Acquire) {
            u64::MAX => None,
            ms => Some(ms.saturating_mul(1_000_000)),
        };
        if RX_DEFERRED.load(Ordering::Acquire) {
            let bound = time::since_boot_ns() + RX_DEFER_NS;
            deadline = Some(deadline.map_or(bound, |d| d.min(bound)));
        }
        let cond = || IRQ_PENDING.swap(false, Ordering::AcqRel).then_some(());
        match deadline {
            None => NET_THREAD_WQ.wait_until(cond),
            Some(ns) => {
                let _ = NET_THREAD_WQ.wait_until_deadline(cond, ns);
            }
        }
        let mut g = NET.lock();
        if let Some(net) = g.as_mut() {
            // Poll while busy, take interrupts while idle: receive
            // interrupts stay off while the threads this poll woke run (and
            // poll inline); the CPU's idle hook brings this thread back for
            // a last poll, and only a poll that finds nothing to do turns
            // them on again before the CPU halts.
            net.nic.set_rx_interrupts(false);
            TX_HELD.store(false, Ordering::Release);
            if poll_locked(net) {
                RX_DEFERRED.store(true, Ordering::Release);
            } else {
                RX_DEFERRED.store(false, Ordering::Release);
                net.nic.set_rx_interrupts(true);
                if net.nic.rx_pending() {
                    IRQ_PENDING.store(true, Ordering::Release);
                }
            }
        }
    }
}

/// Finds the network device, starts the stack (DHCP unless `ip=` is given)
/// and the network thread. Without a device this does nothing.
pub fn init() {
    let Some(found) = drivers::take(DeviceType::Network) else {
        return;
    };
    let mut nic = match VirtioNet::new(found.transport) {
        Ok(n) => n,
        Err(e) => {
            log::error!("virtio-net at {}: {e}", found.location);
            return;
        }
    };
    if nic.tso() {
        log::info!("virtio-net: TCP segmentation offload in use");
    }
    let cfg = crate::env::config();
    let ipcfg = match cfg.ip {
        Some(c) => NetConfig::Static {
            addr: uk_net::Ipv4Cidr::new(Ipv4Addr::from(c.addr), c.prefix),
            gateway: cfg.gw.map(Ipv4Addr::from),
        },
        None => NetConfig::Dhcp,
    };
    let mut opts = StackOptions {
        random_seed: crate::arch::cpu::rdtsc(),
        ..StackOptions::default()
    };
    opts.tcp.rx_buffer = 32 * 1024;
    // The send queue bounds the bytes in flight (64 KiB per round trip).
    // Guests with memory to spare queue 256 KiB, and up to 1 MiB as a
    // connection's window grows past half of that (a 1 MiB file over a new
    // connection then needs a round trip less): `sendfile` references
    // page-cache pages (pinned, not copied),
    // `write` copies into the heap (admission control below bounds the
    // total). Small guests keep 64 KiB, without growth.
    (opts.tcp.tx_buffer, opts.tcp.tx_buffer_max) = if crate::mm::free_bytes() >= BIG_SEND_QUEUE_RAM
    {
        (256 * 1024, 1024 * 1024)
    } else {
        (64 * 1024, 64 * 1024)
    };
    // A server writes a response head and then its body: with Nagle's
    // algorithm the body would wait for the client's delayed ACK (~40 ms).
    opts.tcp.nodelay = true;
    // Admission control: socket buffers may take half of the memory that is
    // free now; past that, new connections are refused (SYNs dropped) and
    // established ones keep going, instead of the heap running dry.
    opts.buffer_budget = (crate::mm::free_bytes() / 2) as usize;
    let stack = NetStack::new(&mut nic, ipcfg, opts, now_ms());
    let mac = uk_net::Nic::mac(&nic);
    *NET.lock() = Some(alloc::boxed::Box::new(Net { stack, nic }));
    *IRQ_SOURCE.lock() = Some(found.irq);
    match drivers::connect_irq(found.irq, on_irq) {
        Ok(v) => log::debug!(
            "net: {} mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, vector {v:#x}, {}",
            found.location,
            mac[0],
            mac[1],
            mac[2],
            mac[3],
            mac[4],
            mac[5],
            match ipcfg {
                NetConfig::Dhcp => "DHCP",
                NetConfig::Static { .. } => "static address",
            }
        ),
        Err(e) => log::error!(
            "net: cannot connect the interrupt of {}: {e:?}",
            found.location
        ),
    }
    crate::sched::set_idle_hook(on_idle);
    // On the boot CPU for good: device interrupts and the idle hook that
    // wakes it are there (an idle CPU would otherwise steal it).
    let _ = crate::sched::spawn_on(
        crate::sched::Placement::Cpu(0),
        32 * 1024,
        crate::sched::ThreadPriority::High,
        net_thread,
    );
    // Kick the first poll (DHCP discover / gateway ARP).
    IRQ_PENDING.store(true, Ordering::Release);
    NET_THREAD_WQ.wake_one();
}

/// True when a network device is up.
pub fn available() -> bool {
    NET.lock().is_some()
}

/// Runs `f` on the stack, then polls it if the call left work (frames to
/// send). Fails with `NotConnected` when there is no network device.
fn with_stack<T>(f: impl FnOnce(&mut NetStack) -> Result<T>) -> Result<T> {
    let mut g = NET.lock();
    let net = g.as_mut().ok_or(NetError::NotConnected)?;
    let r = f(&mut net.stack);
    if net.stack.needs_output() {
        app_poll(net);
    } else if net.stack.needs_poll() {
        // Only readiness to report (a read that sent nothing): no full poll
        // (received frames wait for the next one, the network thread's or
        // the reply's).
        let touched = net.stack.take_touched();
        for &id in &touched {
            notify_changed(net, id);
        }
        net.stack.recycle(touched);
    }
    r
}

/// Repeats `op` until it stops saying "would block", sleeping between tries
/// until the socket's readiness changes or `deadline_ns` passes.
fn blocking<T>(
    id: SocketId,
    nonblocking: bool,
    timeout: Option<Duration>,
    mut op: impl FnMut(&mut NetStack) -> Result<T>,
) -> Result<T> {
    // A non-blocking call never waits: no wait state is made for it (so
    // serving a non-blocking socket allocates nothing here).
    if nonblocking {
        return with_stack(&mut op);
    }
    let Some(w) = waiter(id) else {
        return Err(NetError::NoBufs);
    };
    let deadline = timeout
        .map(|t| time::since_boot_ns().saturating_add(t.as_nanos().min(u64::MAX as u128) as u64));
    loop {
        let seen = w.seq.load(Ordering::Acquire);
        match with_stack(&mut op) {
            Err(NetError::WouldBlock) => {}
            r => return r,
        }
        kick_held();
        let moved = || (w.seq.load(Ordering::Acquire) != seen).then_some(());
        match deadline {
            None => w.wq.wait_until(moved),
            Some(d) => {
                if w.wq.wait_until_deadline(moved, d).is_none() {
                    return Err(NetError::TimedOut);
                }
            }
        }
    }
}

fn forget(id: SocketId) {
    if let Some(w) = WAITERS.lock().get_mut(id.as_u32() as usize) {
        *w = None;
    }
}

/// The current IPv4 configuration, once there is one.
pub fn ip_info() -> Option<IpInfo> {
    NET.lock().as_ref().and_then(|n| n.stack.ip_info())
}

/// Waits until the interface has an address (and its gateway answers ARP).
pub fn wait_ready(timeout: Duration) -> bool {
    let deadline = time::since_boot_ns().saturating_add(timeout.as_nanos() as u64);
    loop {
        let seen = CONFIG_SEQ.load(Ordering::Acquire);
        if NET.lock().as_ref().is_some_and(|n| n.stack.is_ready()) {
            return true;
        }
        let moved = || (CONFIG_SEQ.load(Ordering::Acquire) != seen).then_some(());
        if CONFIG_WQ.wait_until_deadline(moved, deadline).is_none() {
            return NET.lock().as_ref().is_some_and(|n| n.stack.is_ready());
        }
    }
}

/// Frames handed to the device for TCP segmentation (0 without TSO).
pub fn tso_frames() -> u64 {
    NET.lock().as_ref().map_or(0, |n| n.nic.tx_tso_frames)
}

/// Payload bytes the network stack, the TCP engine and the NIC driver
/// copied, per stage (see [`crate::io::copy_stats`]).
pub fn copy_stats() -> uk_net::CopyStats {
    let drv = crate::drivers::virtio_net::DEVICE_COPIES.snapshot();
    NET.lock()
        .as_ref()
        .map_or(drv, |n| n.stack.copy_stats().plus(&drv))
}

/// Interface and socket-table counters, as one line of `key=value` pairs.
pub fn stats_line() -> alloc::string::String {
    let g = NET.lock();
    match g.as_ref() {
        Some(n) => format_stats(n),
        None => "no network".into(),
    }
}

/// The counters of [`stats_line`], from a stack the caller holds.
fn format_stats(n: &Net) -> alloc::string::String {
    let c = n.stack.counters();
    let s = n.stack.stats();
    let cp = n.stack.copy_stats();
    alloc::format!(
        "rx_frames={} tx_frames={} rx_dropped={} tx_ring_full={} tx_tso_frames={} sockets={} socket_visits={} frames_dispatched={} accepted={} listen_overflows={} app_to_socket={} socket_to_app={} tcp_connections={} tcp_connection_bytes={} bytes_per_connection={} tcp_send_queued={} tcp_recv_queued={} buffer_bytes={} buffer_budget={} budget_refusals={} time_wait={} time_wait_bytes={} time_wait_bytes_per_entry={} time_wait_record_bytes={} time_wait_recycled={} time_wait_reopened={} syn_cookies_sent={} syn_cookies_accepted={} syn_cookies_rejected={} tcp_resets_sent={} tcp_failed={} tcp_segments_out={} tcp_segments_dropped={}",
        c.rx_frames,
        c.tx_frames,
        c.rx_dropped.total(),
        n.nic.tx_ring_full,
        n.nic.tx_tso_frames,
        n.stack.socket_count(),
        s.socket_visits,
        s.frames_dispatched,
        s.accepted,
        s.listen_overflows,
        cp.get(uk_net::CopyStage::AppToSocket),
        cp.get(uk_net::CopyStage::SocketToApp),
        s.tcp_connections,
        s.tcp_connection_bytes,
        s.bytes_per_connection(),
        s.tcp_send_queued,
        s.tcp_recv_queued,
        s.buffer_bytes,
        s.buffer_budget,
        s.budget_refusals,
        s.time_wait,
        s.time_wait_bytes,
        s.time_wait_bytes_per_record(),
        uk_net::TIME_WAIT_RECORD_BYTES,
        s.time_wait_recycled,
        s.time_wait_reopened,
        s.syn_cookies_sent,
        s.syn_cookies_accepted,
        s.syn_cookies_rejected,
        s.tcp_resets_sent,
        s.tcp_failed,
        s.tcp_segments_out,
        s.tcp_segments_dropped,
    )
}

/// One line about the network for the diagnostic dump: whether the stack's
/// lock is free, the poll state, the device's queues and the stack's counters.
pub fn debug_line() -> alloc::string::String {
    let pend = IRQ_PENDING.load(Ordering::Relaxed);
    let next = NEXT_POLL_MS.load(Ordering::Relaxed);
    let now = now_ms();
    let Some(mut g) = NET.try_lock() else {
        return alloc::format!(
            "stack lock held; irq_pending={pend} next_poll_ms={next} now_ms={now}"
        );
    };
    let Some(n) = g.as_mut() else {
        return "no network".into();
    };
    alloc::format!(
        "irq_pending={pend} next_poll_ms={next} now_ms={now} nic: {} stack: {}",
        n.nic.debug_line(),
        format_stats(n)
    )
}

/// A listening TCP socket.
pub struct TcpListener {
    id: SocketId,
    nonblocking: bool,
}

impl TcpListener {
    /// Listens on `port` (all addresses) with a backlog of 511 (nginx's default).
    pub fn bind(port: u16) -> Result<TcpListener> {
        Self::bind_with_backlog(port, 511)
    }

    /// Listens on `port` with a backlog of `backlog` pending connections.
    pub fn bind_with_backlog(port: u16, backlog: usize) -> Result<TcpListener> {
        let id = with_stack(|s| s.tcp_listen(port, backlog))?;
        Ok(TcpListener {
            id,
            nonblocking: false,
        })
    }

    /// Waits for a connection.
    pub fn accept(&self) -> Result<(TcpStream, SocketAddrV4)> {
        let (id, peer) = blocking(self.id, self.nonblocking, None, |s| s.tcp_accept(self.id))?;
        Ok((TcpStream::from_id(id), peer))
    }

    /// In non-blocking mode `accept` fails with `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&mut self, on: bool) {
        self.nonblocking = on;
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddrV4> {
        with_stack(|s| s.local_addr(self.id))
    }

    /// The socket id (for readiness).
    pub fn id(&self) -> SocketId {
        self.id
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        close_socket(self.id);
    }
}

/// A TCP connection.
pub struct TcpStream {
    id: SocketId,
    nonblocking: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl TcpStream {
    fn from_id(id: SocketId) -> TcpStream {
        TcpStream {
            id,
            nonblocking: false,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// Connects to `addr`, waiting for the handshake.
    pub fn connect(addr: SocketAddrV4) -> Result<TcpStream> {
        connect(addr, false).map(TcpStream::from_id)
    }

    /// Reads into `buf`; 0 means the peer closed its side.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let id = self.id;
        blocking(id, self.nonblocking, self.read_timeout, |s| {
            s.tcp_recv(id, buf)
        })
    }

    /// Writes some of `buf` (at least one byte unless it is empty).
    pub fn write(&mut self, buf: &[u8]) -> Result<usize> {
        let id = self.id;
        blocking(id, self.nonblocking, self.write_timeout, |s| {
            s.tcp_send(id, buf)
        })
    }

    /// Writes all of `buf`.
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            let n = self.write(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Closes the sending side (FIN after queued data).
    pub fn shutdown_write(&self) -> Result<()> {
        with_stack(|s| s.tcp_shutdown_write(self.id))
    }

    /// Non-blocking mode: calls fail with `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&mut self, on: bool) {
        self.nonblocking = on;
    }

    /// Timeout for `read` (`None` waits forever); expiry gives `TimedOut`.
    pub fn set_read_timeout(&mut self, t: Option<Duration>) {
        self.read_timeout = t;
    }

    /// Timeout for `write`.
    pub fn set_write_timeout(&mut self, t: Option<Duration>) {
        self.write_timeout = t;
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddrV4> {
        with_stack(|s| s.peer_addr(self.id))
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddrV4> {
        with_stack(|s| s.local_addr(self.id))
    }

    /// Epoll-style readiness bits right now.
    pub fn readiness(&self) -> u32 {
        NET.lock()
            .as_ref()
            .map_or(EPOLLERR | EPOLLHUP, |n| n.stack.readiness(self.id))
    }

    /// The socket id.
    pub fn id(&self) -> SocketId {
        self.id
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        close_socket(self.id);
    }
}

/// A UDP socket.
pub struct UdpSocket {
    id: SocketId,
    nonblocking: bool,
    read_timeout: Option<Duration>,
}

impl UdpSocket {
    /// Binds `port` (0 picks an ephemeral one).
    pub fn bind(port: u16) -> Result<UdpSocket> {
        let id = with_stack(|s| s.udp_bind(port))?;
        Ok(UdpSocket {
            id,
            nonblocking: false,
            read_timeout: None,
        })
    }

    /// Sends one datagram.
    pub fn send_to(&self, data: &[u8], dst: SocketAddrV4) -> Result<usize> {
        let id = self.id;
        blocking(id, self.nonblocking, None, |s| s.udp_send_to(id, data, dst))
    }

    /// Receives one datagram.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddrV4)> {
        let id = self.id;
        blocking(id, self.nonblocking, self.read_timeout, |s| {
            s.udp_recv_from(id, buf)
        })
    }

    /// Non-blocking mode.
    pub fn set_nonblocking(&mut self, on: bool) {
        self.nonblocking = on;
    }

    /// Timeout for `recv_from`.
    pub fn set_read_timeout(&mut self, t: Option<Duration>) {
        self.read_timeout = t;
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddrV4> {
        with_stack(|s| s.local_addr(self.id))
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        close_socket(self.id);
    }
}

// ---------------------------------------------------------------------------
// Socket calls by id, for the descriptor layer (`crate::io`).

pub(crate) fn listen(port: u16, backlog: usize, bufs: Option<(usize, usize)>) -> Result<SocketId> {
    with_stack(|s| match bufs {
        None => s.tcp_listen(port, backlog),
        Some((rx, tx)) => s.tcp_listen_with(
            port,
            backlog,
            uk_net::SocketOptions {
                rx_buffer: rx,
                tx_buffer: tx,
                // A size the application chose is kept (as `SO_SNDBUF`).
                tx_buffer_max: tx,
                nodelay: true,
            },
        ),
    })
}

pub(crate) fn accept(id: SocketId, nonblocking: bool) -> Result<(SocketId, SocketAddrV4)> {
    blocking(id, nonblocking, None, |s| s.tcp_accept(id))
}

pub(crate) fn connect(addr: SocketAddrV4, nonblocking: bool) -> Result<SocketId> {
    let id = with_stack(|s| s.tcp_connect(addr, None))?;
    if !nonblocking {
        blocking(id, false, None, |st| {
            let r = st.readiness(id);
            if r & EPOLLERR != 0 {
                st.tcp_send(id, &[]).map(|_| ())
            } else if r & EPOLLOUT != 0 {
                Ok(())
            } else {
                Err(NetError::WouldBlock)
            }
        })?;
    }
    Ok(id)
}

pub(crate) fn recv(id: SocketId, buf: &mut [u8], nonblocking: bool) -> Result<usize> {
    blocking(id, nonblocking, None, |s| s.tcp_recv(id, buf))
}

/// Touches one byte of every page of `buf`, so that a not-yet-resident page
/// of a file mapping is faulted in (which may wait for the disk) here, with
/// no lock held, rather than inside the copy under the network lock.
fn prefault(buf: &[u8]) {
    let page = crate::mm::PAGE as usize;
    let mut i = 0;
    while i < buf.len() {
        // black_box keeps the read (the touch) from being optimised away.
        let _ = core::hint::black_box(buf[i]);
        i = (i / page + 1) * page;
    }
}

/// The most a socket write copies at once (the send buffer's size, at most).
const SEND_PREFAULT: usize = 256 * 1024;

/// Free memory at boot from which sockets get a 256 KiB send queue.
const BIG_SEND_QUEUE_RAM: u64 = 160 << 20;

pub(crate) fn send(id: SocketId, buf: &[u8], nonblocking: bool) -> Result<usize> {
    prefault(&buf[..buf.len().min(SEND_PREFAULT)]);
    blocking(id, nonblocking, None, |s| s.tcp_send(id, buf))
}

pub(crate) fn shutdown_write(id: SocketId) -> Result<()> {
    with_stack(|s| s.tcp_shutdown_write(id))
}

pub(crate) fn peer_addr(id: SocketId) -> Result<SocketAddrV4> {
    with_stack(|s| s.peer_addr(id))
}

pub(crate) fn close_socket(id: SocketId) {
    let _ = with_stack(|s| s.close(id));
    forget(id);
}

pub(crate) fn readiness(id: SocketId) -> u32 {
    NET.lock()
        .as_ref()
        .map_or(EPOLLERR | EPOLLHUP, |n| n.stack.readiness(id))
}

/// Runs `f` with a function giving sockets' readiness, under the stack lock
/// (epoll re-checks its ready list with it).
/// Also rings the transmit doorbell held since the caller's last wait: an
/// event loop's pass ends here.
pub(crate) fn with_readiness<R>(f: impl FnOnce(&dyn Fn(SocketId) -> u32) -> R) -> R {
    let mut g = NET.lock();
    match g.as_mut() {
        Some(n) => {
            kick_locked(n);
            f(&|id| n.stack.readiness(id))
        }
        None => f(&|_| EPOLLERR | EPOLLHUP),
    }
}

/// Runs `f` on the stack for socket `id`, then polls so what it queued goes
/// out. For `sendfile`, which fills the send buffer in place.
pub(crate) fn send_with<T>(
    id: SocketId,
    f: impl FnOnce(&mut NetStack, SocketId) -> core::result::Result<T, crate::fs::Errno>,
) -> core::result::Result<T, crate::fs::Errno> {
    let mut g = NET.lock();
    let net = g.as_mut().ok_or(crate::fs::Errno::ENOTCONN)?;
    let r = f(&mut net.stack, id);
    if net.stack.needs_poll() {
        app_poll(net);
    }
    r
}

/// How many bytes socket `id`'s send queue takes now.
pub(crate) fn send_room(id: SocketId) -> Result<usize> {
    let mut g = NET.lock();
    let net = g.as_mut().ok_or(NetError::NotConnected)?;
    net.stack.tcp_send_room(id)
}

/// Blocks until socket `id` can take more data (or has failed). False,
/// at once, when there is no memory for the wait.
pub(crate) fn wait_writable(id: SocketId) -> bool {
    let Some(w) = waiter(id) else {
        return false;
    };
    loop {
        let seen = w.seq.load(Ordering::Acquire);
        if readiness(id) & (EPOLLOUT | EPOLLERR | EPOLLHUP) != 0 {
            return true;
        }
        kick_held();
        w.wq.wait_until(|| (w.seq.load(Ordering::Acquire) != seen).then_some(()));
    }
}
