//! Networking for apps: the `uk-net` stack over the virtio-net driver, with
//! blocking, `std::net`-shaped sockets on top.
//!
//! The stack is sharded: one [`NetStack`] per device queue pair, as many as
//! the device offers (virtio-net multiqueue), CPUs there are and
//! [`MAX_SHARDS`]: one on a single CPU or a single-queue device. Shard `k`
//! has its own sleeping lock, its queue pair's interrupt (an MSI-X vector
//! aimed at CPU `k`) and a network thread pinned to CPU `k`. A TCP
//! connection lives in one shard for its whole life, chosen by a keyed hash
//! of the peer's address and port ([`uk_net::steer`]); a frame that arrives
//! on another shard's queue is copied into that shard's inbox (the device
//! learns a flow's queue from the queue our replies leave on, so this is
//! mostly a connection's first segment). Connections we open, UDP, ICMP and
//! DHCP are shard 0's; ARP goes to every shard; the other shards take the
//! address shard 0's DHCP lease gives. A listener has a socket in every
//! shard, one descriptor for all of them: `accept` takes from the caller's
//! CPU's shard first. Lock order: shards in ascending order.
//!
//! The device interrupt only acknowledges and wakes the shard's network
//! thread, which polls the stack; application threads also poll inline
//! after their own socket calls, so a `write` goes out without waiting for
//! that thread. Every socket has a wait queue and an event counter: the
//! poller bumps the counter and wakes the queue of each socket whose
//! readiness changed, and a blocked call sleeps until the counter moves (so
//! an event between its attempt and its sleep is never lost).
//!
//! The socket ids handed out ([`SocketId`]) interleave the shards' own ids:
//! `local * shards + shard`, so with one shard they are the stack's ids.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;

use crate::drivers::DeviceType;
use uk_net::{NetConfig, NetStack, SocketId, StackOptions, Steer};

use crate::drivers::{self, IrqSource, virtio_net::RxFrame, virtio_net::VirtioNet};
use crate::sync::{IrqMutex, Mutex, MutexGuard, Once, WaitQueue};
use crate::time;

pub use uk_net::{EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, ErrorKind, IpInfo, NetError};

/// Result of socket calls.
pub type Result<T> = core::result::Result<T, NetError>;

/// The most stack shards (device queue pairs used).
pub const MAX_SHARDS: usize = 8;

struct Net {
    stack: NetStack,
    nic: VirtioNet,
}

/// One stack shard and its network thread's state.
struct Shard {
    net: Mutex<Net>,
    /// Set by the interrupt handler (or a frame put in the inbox), cleared
    /// by the network thread.
    irq_pending: AtomicBool,
    wq: WaitQueue,
    /// The stack's next deadline, as ms since boot + 1 (0: none).
    next_poll: AtomicU64,
    /// Set while transmitted frames wait for the device's doorbell.
    tx_held: AtomicBool,
    /// Set while receive interrupts are off because the CPU is busy with
    /// what the last poll woke; the idle hook (or `RX_DEFER_NS`) brings the
    /// network thread back to poll before they go on again.
    rx_deferred: AtomicBool,
    /// Frames another shard's queue received for this one.
    inbox: IrqMutex<Vec<alloc::boxed::Box<[u8]>>>,
    /// Frames this shard's queue received for others (copied to theirs).
    steered: AtomicU64,
}

impl Shard {
    fn new(net: Net) -> Shard {
        Shard {
            net: Mutex::new(net),
            irq_pending: AtomicBool::new(false),
            wq: WaitQueue::new(),
            next_poll: AtomicU64::new(0),
            tx_held: AtomicBool::new(false),
            rx_deferred: AtomicBool::new(false),
            inbox: IrqMutex::new(Vec::new()),
            steered: AtomicU64::new(0),
        }
    }

    /// Brings the network thread to poll.
    fn kick(&self) {
        self.irq_pending.store(true, Ordering::Release);
        self.wq.wake_one();
    }

    fn next_poll_ms(&self) -> Option<u64> {
        self.next_poll.load(Ordering::Acquire).checked_sub(1)
    }
}

/// The shards, made by [`init`] (allocated, so the image holds none).
static SHARD_TABLE: Once<alloc::boxed::Box<[Shard]>> = Once::new();
/// Shards in use (set once by [`init`]; 1 without a device).
static SHARD_COUNT: AtomicUsize = AtomicUsize::new(1);

/// The shards (none without a network device).
fn all() -> &'static [Shard] {
    SHARD_TABLE.get().map_or(&[], |t| t)
}
/// The flow-steering hash key (random per boot).
static STEER_KEY: AtomicU64 = AtomicU64::new(0);
/// Frames a shard's inbox holds at most (more are dropped, as a full
/// receive ring would).
const INBOX_MAX: usize = 256;
/// The interrupt vector of each shard's queue pair (multiqueue only).
static SHARD_VECTORS: IrqMutex<[u8; MAX_SHARDS]> = IrqMutex::new([0; MAX_SHARDS]);
/// Woken when the IP configuration or readiness changes.
static CONFIG_WQ: WaitQueue = WaitQueue::new();
static CONFIG_SEQ: AtomicU64 = AtomicU64::new(0);
static IRQ_SOURCE: IrqMutex<Option<IrqSource>> = IrqMutex::new(None);

/// The number of stack shards.
pub fn shards() -> usize {
    SHARD_COUNT.load(Ordering::Relaxed)
}

/// The shard of socket `id` and the shard's own id for it.
fn split(id: SocketId) -> (usize, SocketId) {
    let n = shards();
    let raw = id.as_u32() as usize;
    (raw % n, SocketId::from_u32((raw / n) as u32))
}

/// The id handed out for shard `k`'s socket `local`.
fn join(k: usize, local: SocketId) -> SocketId {
    SocketId::from_u32(local.as_u32() * shards() as u32 + k as u32)
}

/// The shard (and CPU) of socket `id` when there are several, else `None`.
pub(crate) fn shard_of(id: SocketId) -> Option<usize> {
    (shards() > 1).then(|| split(id).0)
}

/// A listener of more than one shard: one socket in each.
struct Group {
    /// The id handed out (shard 0's socket's).
    id: SocketId,
    /// Each shard's own id of its socket.
    locals: [SocketId; MAX_SHARDS],
}

static GROUPS: IrqMutex<Vec<Group>> = IrqMutex::new(Vec::new());
/// Arrival counter of listeners with several shards (for epoll's edges).
static GROUP_GEN: AtomicU64 = AtomicU64::new(0);

/// Each shard's socket of listener `id`, if it is one with several shards.
fn group_locals(id: SocketId) -> Option<[SocketId; MAX_SHARDS]> {
    if shards() == 1 {
        return None;
    }
    GROUPS.lock().iter().find(|g| g.id == id).map(|g| g.locals)
}

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

/// The interrupt of a single-queue device.
fn on_irq(_frame: &mut crate::arch::idt::TrapFrame) {
    if let Some(src) = *IRQ_SOURCE.lock() {
        src.ack();
    }
    if let Some(s) = all().first() {
        s.kick();
    }
}

/// The interrupt of one queue pair of a multiqueue device (MSI-X).
fn on_queue_irq(frame: &mut crate::arch::idt::TrapFrame) {
    let vectors = *SHARD_VECTORS.lock();
    if let Some(k) = vectors[..shards()]
        .iter()
        .position(|&v| u64::from(v) == frame.vector)
    {
        all()[k].kick();
    }
}

/// Wakes a blocked caller of shard `k`'s socket `local` and reports its
/// readiness to epoll.
fn notify_changed(k: usize, net: &mut Net, local: SocketId) {
    let mut id = join(k, local);
    let mut rx_gen = net.stack.rx_generation(local);
    let events = net.stack.readiness(local);
    if shards() > 1
        && net.stack.is_listener(local)
        && let Some(g) = GROUPS.lock().iter().find(|g| g.locals[k] == local)
    {
        // One of a listener's sockets: the listener's waiters and epoll
        // entry (the readiness reported is this shard's; epoll re-checks
        // all of them before it reports one ready).
        id = g.id;
        rx_gen = GROUP_GEN.fetch_add(1, Ordering::Relaxed);
    }
    let w = WAITERS.lock().get(id.as_u32() as usize).cloned().flatten();
    if let Some(w) = w {
        w.seq.fetch_add(1, Ordering::AcqRel);
        w.wq.wake_all();
    }
    crate::io::notify_socket(id, events, rx_gen);
}

/// A shard's view of its queue pair: frames for other shards are copied
/// into their inboxes on the way in, and this shard's inbox is read first.
struct ShardNic<'a> {
    nic: &'a mut VirtioNet,
    me: usize,
    shards: usize,
    key: u64,
    /// Frames from the inbox, last first.
    moved: Vec<alloc::boxed::Box<[u8]>>,
}

/// A received frame: in the device's ring, or copied from another shard's.
enum ShardRx {
    Ring(RxFrame),
    Moved(alloc::boxed::Box<[u8]>),
}

impl core::ops::Deref for ShardRx {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ShardRx::Ring(f) => f,
            ShardRx::Moved(b) => b,
        }
    }
}

/// Copies `frame` into shard `k`'s inbox and brings its thread (dropped
/// when the inbox is full or there is no memory).
fn forward(k: usize, frame: &[u8]) {
    let shard = &all()[k];
    let mut copy = Vec::new();
    if copy.try_reserve_exact(frame.len()).is_err() {
        return;
    }
    copy.extend_from_slice(frame);
    {
        let mut q = shard.inbox.lock();
        if q.len() >= INBOX_MAX || q.try_reserve(1).is_err() {
            return;
        }
        q.push(copy.into_boxed_slice());
    }
    shard.kick();
}

impl uk_net::Nic for ShardNic<'_> {
    type Rx = ShardRx;

    fn mac(&self) -> [u8; 6] {
        self.nic.mac()
    }
    fn mtu(&self) -> usize {
        self.nic.mtu()
    }
    fn receive(&mut self) -> Option<ShardRx> {
        if let Some(f) = self.moved.pop() {
            return Some(ShardRx::Moved(f));
        }
        loop {
            let f = self.nic.receive()?;
            match uk_net::steer(&f, self.shards, self.key) {
                Steer::Shard(k) if k != self.me => {
                    all()[self.me].steered.fetch_add(1, Ordering::Relaxed);
                    forward(k, &f);
                    self.nic.release(f);
                }
                Steer::All => {
                    for k in (0..self.shards).filter(|&k| k != self.me) {
                        forward(k, &f);
                    }
                    return Some(ShardRx::Ring(f));
                }
                Steer::Shard(_) => return Some(ShardRx::Ring(f)),
            }
        }
    }
    fn release(&mut self, rx: ShardRx) {
        if let ShardRx::Ring(f) = rx {
            self.nic.release(f);
        }
    }
    fn refill(&mut self) {
        self.nic.refill();
    }
    fn can_transmit(&mut self) -> bool {
        self.nic.can_transmit()
    }
    fn transmit(&mut self, len: usize, f: impl FnOnce(&mut [u8])) -> bool {
        self.nic.transmit(len, f)
    }
    fn flush_tx(&mut self) {
        self.nic.flush_tx();
    }
    fn tx_checksum_offload(&self) -> bool {
        self.nic.tx_checksum_offload()
    }
    fn tso_max_frame(&self) -> Option<usize> {
        self.nic.tso_max_frame()
    }
    fn transmit_tso(&mut self, len: usize, mss: u16, f: impl FnOnce(&mut [u8])) -> bool {
        self.nic.transmit_tso(len, mss, f)
    }
    fn tx_scatter_gather(&self) -> bool {
        self.nic.tx_scatter_gather()
    }
    fn transmit_sg(
        &mut self,
        header: &[u8],
        payload: &[uk_net::Fragment<uk_net::TcpPayload>],
        gso_mss: Option<u16>,
    ) -> bool {
        self.nic.transmit_sg(header, payload, gso_mss)
    }
}

/// Polls shard `k`'s stack and wakes whoever its events concern. Call with
/// the shard's lock held. True when a socket's readiness changed (someone
/// may have work).
fn poll_locked(k: usize, net: &mut Net) -> bool {
    let shard = &all()[k];
    let n = shards();
    let mut moved = Vec::new();
    if n > 1 {
        core::mem::swap(&mut moved, &mut shard.inbox.lock());
        moved.reverse();
    }
    let mut nic = ShardNic {
        nic: &mut net.nic,
        me: k,
        shards: n,
        key: STEER_KEY.load(Ordering::Relaxed),
        moved,
    };
    let r = net.stack.poll(now_ms(), &mut nic);
    if !nic.moved.is_empty() {
        // More than one poll takes: back to the inbox (order within a
        // connection is kept by its shard's queue; rare enough).
        nic.moved.reverse();
        let mut q = shard.inbox.lock();
        nic.moved.append(&mut q);
        core::mem::swap(&mut nic.moved, &mut q);
        shard.irq_pending.store(true, Ordering::Release);
    }
    let busy = !r.readiness_changed.is_empty();
    shard
        .next_poll
        .store(r.next_poll_ms.map_or(0, |ms| ms + 1), Ordering::Release);
    for &id in &r.readiness_changed {
        notify_changed(k, net, id);
    }
    net.stack.recycle(r.readiness_changed);
    if r.config_changed {
        if k == 0 && n > 1 {
            // The other shards follow shard 0's lease (ascending lock order).
            let info = net.stack.ip_info();
            for s in &all()[1..] {
                s.net.lock().stack.set_config(info.as_ref());
                s.kick();
            }
        }
        CONFIG_SEQ.fetch_add(1, Ordering::AcqRel);
        CONFIG_WQ.wake_all();
    }
    if shard.next_poll_ms().is_some_and(|ms| ms <= now_ms()) {
        shard.kick();
    }
    busy
}

/// Polls for an application thread: the frames it queues wait for the
/// doorbell, rung when the thread next waits for events or blocks
/// ([`kick_held`]), or by the network thread when the CPU goes idle.
#[inline(never)]
fn app_poll(k: usize, net: &mut Net) {
    net.nic.hold_tx_notify(true);
    poll_locked(k, net);
    net.nic.hold_tx_notify(false);
    if net.nic.tx_notify_held() {
        all()[k].tx_held.store(true, Ordering::Release);
    }
}

/// Rings the transmit doorbell held by [`app_poll`]s of this thread or
/// others; call with shard `k`'s lock held.
fn kick_locked(k: usize, net: &mut Net) {
    if all()[k].tx_held.swap(false, Ordering::AcqRel) {
        net.nic.kick_tx();
    }
}

/// Rings the held transmit doorbells before the caller blocks.
fn kick_held() {
    for (k, s) in all().iter().enumerate() {
        if s.tx_held.load(Ordering::Acquire) {
            kick_locked(k, &mut s.net.lock());
        }
    }
}

/// The longest a busy CPU goes without polling for received frames while
/// their interrupts are off.
const RX_DEFER_NS: u64 = 2_000_000;

/// Runs when a CPU is about to halt (the boot CPU: the hook runs there): a
/// shard that left receive interrupts off (or a doorbell held) has its
/// network thread poll once more (and turn them on if it finds nothing)
/// instead. True only when that thread is this CPU's (the CPU then runs it
/// rather than halt): another CPU's thread is woken, and this CPU halts
/// with interrupts on. Returning true for it would keep this CPU in its
/// idle loop with interrupts off until that thread ran, and the other CPU
/// may be waiting for this one (a TLB shootdown): a deadlock.
fn on_idle() -> bool {
    let me = crate::sched::cpu_index();
    let mut here = false;
    for (k, s) in all().iter().enumerate() {
        if s.rx_deferred.swap(false, Ordering::AcqRel) | s.tx_held.load(Ordering::Acquire) {
            s.kick();
            here |= k == me;
        }
    }
    here
}

fn net_thread(k: usize) {
    let shard = &all()[k];
    loop {
        let mut deadline = shard.next_poll_ms().map(|ms| ms.saturating_mul(1_000_000));
        if shard.rx_deferred.load(Ordering::Acquire) {
            let bound = time::since_boot_ns() + RX_DEFER_NS;
            deadline = Some(deadline.map_or(bound, |d| d.min(bound)));
        }
        let cond = || {
            shard
                .irq_pending
                .swap(false, Ordering::AcqRel)
                .then_some(())
        };
        match deadline {
            None => shard.wq.wait_until(cond),
            Some(ns) => {
                let _ = shard.wq.wait_until_deadline(cond, ns);
            }
        }
        {
            let net = &mut *shard.net.lock();
            // Poll while busy, take interrupts while idle: receive
            // interrupts stay off while the threads this poll woke run (and
            // poll inline); the CPU's idle hook brings this thread back for
            // a last poll, and only a poll that finds nothing to do turns
            // them on again before the CPU halts.
            net.nic.set_rx_interrupts(false);
            shard.tx_held.store(false, Ordering::Release);
            if poll_locked(k, net) {
                shard.rx_deferred.store(true, Ordering::Release);
            } else {
                shard.rx_deferred.store(false, Ordering::Release);
                net.nic.set_rx_interrupts(true);
                if net.nic.rx_pending() {
                    shard.irq_pending.store(true, Ordering::Release);
                }
            }
        }
    }
}

/// Finds the network device, starts the stack (DHCP unless `ip=` is given),
/// one shard per queue pair, and their network threads. Without a device
/// this does nothing.
pub fn init() {
    let Some(found) = drivers::take(DeviceType::Network) else {
        return;
    };
    let want = crate::sched::cpu_count().min(MAX_SHARDS);
    let drivers::Found {
        transport,
        irq: irq_source,
        location,
    } = found;
    // One pair per CPU, where the device and its MSI-X table have them.
    let want = drivers::queue_pairs_for(irq_source, want);
    let mut nics = match VirtioNet::new_multi(transport, want) {
        Ok(n) => n,
        Err(e) => {
            log::error!("virtio-net at {location}: {e}");
            return;
        }
    };
    let Some(first) = nics.first() else {
        return core::mem::forget(nics);
    };
    if first.tso() {
        log::info!("virtio-net: TCP segmentation offload in use");
    }
    let n = nics.len();
    SHARD_COUNT.store(n, Ordering::Relaxed);
    STEER_KEY.store(crate::arch::cpu::rdtsc().rotate_left(17), Ordering::Relaxed);
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
    // free now (shared by the shards); past that, new connections are
    // refused (SYNs dropped) and established ones keep going, instead of
    // the heap running dry.
    opts.buffer_budget = (crate::mm::free_bytes() / 2) as usize / n;
    let mac = uk_net::Nic::mac(&nics[0]);
    let mut table = Vec::with_capacity(n);
    for (k, mut nic) in nics.drain(..).enumerate() {
        let cfg = if k == 0 || ipcfg != NetConfig::Dhcp {
            ipcfg
        } else {
            NetConfig::Unconfigured
        };
        opts.random_seed = opts.random_seed.wrapping_add(k as u64);
        let stack = NetStack::new(&mut nic, cfg, opts, now_ms());
        table.push(Shard::new(Net { stack, nic }));
    }
    // Emptied, and never dropped (its buffer, a few hundred bytes, stays
    // allocated), so the image holds no code to drop a NIC.
    core::mem::forget(nics);
    if let Err(t) = SHARD_TABLE.set(table.into_boxed_slice()) {
        // `init` runs once: not reached (nor is the code to drop stacks).
        return core::mem::forget(t);
    }
    let irq = if n > 1 {
        let IrqSource::Msix(df) = irq_source else {
            unreachable!("multiqueue without MSI-X")
        };
        let cpu = |k| crate::irq::cpu_apic_id(k).unwrap_or(0);
        drivers::connect_queue_irqs(df, n, cpu, on_queue_irq).map(|v| {
            let mut t = SHARD_VECTORS.lock();
            t[..n].copy_from_slice(&v);
            v[0]
        })
    } else {
        *IRQ_SOURCE.lock() = Some(irq_source);
        drivers::connect_irq(irq_source, on_irq)
    };
    match irq {
        Ok(v) => log::debug!(
            "net: {} mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, vector {v:#x}, {n} shard(s), {}",
            location,
            mac[0],
            mac[1],
            mac[2],
            mac[3],
            mac[4],
            mac[5],
            match ipcfg {
                NetConfig::Dhcp => "DHCP",
                _ => "static address",
            }
        ),
        Err(e) => log::error!("net: cannot connect the interrupt of {location}: {e:?}"),
    }
    crate::sched::set_idle_hook(on_idle);
    for k in 0..n {
        // On its CPU for good: its queue's interrupts and the idle hook
        // that wakes it are there (an idle CPU would otherwise steal it).
        let _ = crate::sched::spawn_on(
            crate::sched::Placement::Cpu(k as u32),
            32 * 1024,
            crate::sched::ThreadPriority::High,
            move || net_thread(k),
        );
        // Kick the first poll (DHCP discover / gateway ARP).
        all()[k].kick();
    }
}

/// True when a network device is up.
pub fn available() -> bool {
    !all().is_empty()
}

/// Runs `f` on shard `k`'s stack, then polls it if the call left work
/// (frames to send). Fails with `NotConnected` when there is no network
/// device.
fn with_shard<T>(k: usize, f: impl FnOnce(&mut NetStack) -> Result<T>) -> Result<T> {
    let mut g = all().get(k).ok_or(NetError::NotConnected)?.net.lock();
    let net = &mut *g;
    let r = f(&mut net.stack);
    if net.stack.needs_output() {
        app_poll(k, net);
    } else if net.stack.needs_poll() {
        // Only readiness to report (a read that sent nothing): no full poll
        // (received frames wait for the next one, the network thread's or
        // the reply's).
        let touched = net.stack.take_touched();
        for &id in &touched {
            notify_changed(k, net, id);
        }
        net.stack.recycle(touched);
    }
    r
}

/// [`with_shard`] on socket `id`'s shard, with the shard's id for it.
fn with_socket<T>(id: SocketId, f: impl FnOnce(&mut NetStack, SocketId) -> Result<T>) -> Result<T> {
    let (k, local) = split(id);
    with_shard(k, |s| f(s, local))
}

/// Repeats `op` until it stops saying "would block", sleeping between tries
/// until socket `id`'s readiness changes or the timeout passes.
fn blocking<T>(
    id: SocketId,
    nonblocking: bool,
    timeout: Option<Duration>,
    mut op: impl FnMut() -> Result<T>,
) -> Result<T> {
    // A non-blocking call never waits: no wait state is made for it (so
    // serving a non-blocking socket allocates nothing here).
    if nonblocking {
        return op();
    }
    let Some(w) = waiter(id) else {
        return Err(NetError::NoBufs);
    };
    let deadline = timeout
        .map(|t| time::since_boot_ns().saturating_add(t.as_nanos().min(u64::MAX as u128) as u64));
    loop {
        let seen = w.seq.load(Ordering::Acquire);
        match op() {
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

/// [`blocking`] for a call on socket `id`'s stack.
fn blocking_on<T>(
    id: SocketId,
    nonblocking: bool,
    timeout: Option<Duration>,
    mut op: impl FnMut(&mut NetStack, SocketId) -> Result<T>,
) -> Result<T> {
    blocking(id, nonblocking, timeout, || with_socket(id, &mut op))
}

fn forget(id: SocketId) {
    if let Some(w) = WAITERS.lock().get_mut(id.as_u32() as usize) {
        *w = None;
    }
}

/// The current IPv4 configuration, once there is one.
pub fn ip_info() -> Option<IpInfo> {
    all().first().and_then(|s| s.net.lock().stack.ip_info())
}

/// Waits until the interface has an address (and its gateway answers ARP).
pub fn wait_ready(timeout: Duration) -> bool {
    let deadline = time::since_boot_ns().saturating_add(timeout.as_nanos() as u64);
    let ready = || all().first().is_some_and(|s| s.net.lock().stack.is_ready());
    loop {
        let seen = CONFIG_SEQ.load(Ordering::Acquire);
        if ready() {
            return true;
        }
        let moved = || (CONFIG_SEQ.load(Ordering::Acquire) != seen).then_some(());
        if CONFIG_WQ.wait_until_deadline(moved, deadline).is_none() {
            return ready();
        }
    }
}

/// Sums `f` over the shards' stacks and NICs.
fn sum(f: impl Fn(&Net) -> u64) -> u64 {
    all().iter().map(|s| f(&s.net.lock())).sum()
}

/// Frames handed to the device for TCP segmentation (0 without TSO).
pub fn tso_frames() -> u64 {
    sum(|n| n.nic.tx_tso_frames)
}

/// Payload bytes the network stack, the TCP engine and the NIC driver
/// copied, per stage (see [`crate::io::copy_stats`]).
pub fn copy_stats() -> uk_net::CopyStats {
    let mut total = crate::drivers::virtio_net::DEVICE_COPIES.snapshot();
    for s in all() {
        total = s.net.lock().stack.copy_stats().plus(&total);
    }
    total
}

/// The names of [`counters`], in order.
const COUNTER_NAMES: [&str; 33] = [
    "rx_frames",
    "tx_frames",
    "rx_dropped",
    "tx_ring_full",
    "tx_tso_frames",
    "sockets",
    "socket_visits",
    "frames_dispatched",
    "accepted",
    "listen_overflows",
    "app_to_socket",
    "socket_to_app",
    "tcp_connections",
    "tcp_connection_bytes",
    "bytes_per_connection",
    "tcp_send_queued",
    "tcp_recv_queued",
    "buffer_bytes",
    "buffer_budget",
    "budget_refusals",
    "time_wait",
    "time_wait_bytes",
    "time_wait_bytes_per_entry",
    "time_wait_record_bytes",
    "time_wait_recycled",
    "time_wait_reopened",
    "syn_cookies_sent",
    "syn_cookies_accepted",
    "syn_cookies_rejected",
    "tcp_resets_sent",
    "tcp_failed",
    "tcp_segments_out",
    "tcp_segments_dropped",
];

/// A shard's interface and socket-table counters, named by [`COUNTER_NAMES`].
fn counters(n: &Net) -> [u64; 33] {
    let c = n.stack.counters();
    let s = n.stack.stats();
    let cp = n.stack.copy_stats();
    [
        c.rx_frames,
        c.tx_frames,
        c.rx_dropped.total(),
        n.nic.tx_ring_full,
        n.nic.tx_tso_frames,
        n.stack.socket_count() as u64,
        s.socket_visits,
        s.frames_dispatched,
        s.accepted,
        s.listen_overflows,
        cp.get(uk_net::CopyStage::AppToSocket),
        cp.get(uk_net::CopyStage::SocketToApp),
        s.tcp_connections as u64,
        s.tcp_connection_bytes as u64,
        s.bytes_per_connection() as u64,
        s.tcp_send_queued as u64,
        s.tcp_recv_queued as u64,
        s.buffer_bytes as u64,
        s.buffer_budget as u64,
        s.budget_refusals,
        s.time_wait as u64,
        s.time_wait_bytes as u64,
        s.time_wait_bytes_per_record() as u64,
        uk_net::TIME_WAIT_RECORD_BYTES as u64,
        s.time_wait_recycled,
        s.time_wait_reopened,
        s.syn_cookies_sent,
        s.syn_cookies_accepted,
        s.syn_cookies_rejected,
        s.tcp_resets_sent,
        s.tcp_failed,
        s.tcp_segments_out,
        s.tcp_segments_dropped,
    ]
}

/// Appends `name=value` pairs of `values` to `out`.
fn push_counters(out: &mut alloc::string::String, prefix: &str, values: &[u64; 33]) {
    use core::fmt::Write;
    for (name, v) in COUNTER_NAMES.iter().zip(values) {
        let sep = if out.is_empty() { "" } else { " " };
        let _ = write!(out, "{sep}{prefix}{name}={v}");
    }
}

/// Interface and socket-table counters, as one line of `key=value` pairs:
/// the shards' sums (per connection and per record: their means), then,
/// with several shards, `shard_summary`.
pub fn stats_line() -> alloc::string::String {
    if all().is_empty() {
        return "no network".into();
    }
    let n = shards();
    let mut total = [0u64; 33];
    for s in all() {
        for (t, v) in total.iter_mut().zip(counters(&s.net.lock())) {
            *t += v;
        }
    }
    for i in [14, 22, 23] {
        total[i] /= n as u64;
    }
    let mut out = alloc::string::String::new();
    push_counters(&mut out, "", &total);
    shard_summary(&mut out, true);
    out
}

/// With several shards, appends ` net_shards=N frames_steered=S` (frames
/// a shard's queue received for another) and each shard's
/// `shardK_accepted` and `shardK_rx_frames` (without `wait`, of the
/// shards whose lock is free: for the diagnostic dump).
fn shard_summary(out: &mut alloc::string::String, wait: bool) {
    use core::fmt::Write;
    let n = shards();
    if n == 1 {
        return;
    }
    let steered: u64 = all()
        .iter()
        .map(|s| s.steered.load(Ordering::Relaxed))
        .sum();
    let _ = write!(out, " net_shards={n} frames_steered={steered}");
    for (k, s) in all().iter().enumerate() {
        let Some(net) = (if wait {
            Some(s.net.lock())
        } else {
            s.net.try_lock()
        }) else {
            continue;
        };
        let (accepted, rx) = (net.stack.stats().accepted, net.stack.counters().rx_frames);
        drop(net);
        let _ = write!(out, " shard{k}_accepted={accepted} shard{k}_rx_frames={rx}");
    }
}

/// One line about the network for the diagnostic dump, per shard: whether
/// its lock is free, the poll state, the device's queues and the stack's
/// counters.
pub fn debug_line() -> alloc::string::String {
    use core::fmt::Write;
    let now = now_ms();
    if all().is_empty() {
        return "no network".into();
    }
    let mut out = alloc::string::String::new();
    for (k, s) in all().iter().enumerate() {
        let pend = s.irq_pending.load(Ordering::Relaxed);
        let next = s.next_poll_ms().unwrap_or(u64::MAX);
        if k > 0 {
            let _ = write!(out, " | shard {k}: ");
        }
        let Some(mut g) = s.net.try_lock() else {
            let _ = write!(
                out,
                "stack lock held; irq_pending={pend} next_poll_ms={next} now_ms={now}"
            );
            continue;
        };
        let n = &mut *g;
        let _ = write!(
            out,
            "irq_pending={pend} next_poll_ms={next} now_ms={now} nic: {} stack: ",
            n.nic.debug_line()
        );
        let mut c = alloc::string::String::new();
        push_counters(&mut c, "", &counters(n));
        out.push_str(&c);
    }
    if shards() > 1 {
        out.push_str(" |");
        shard_summary(&mut out, false);
    }
    out
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
        let id = listen(port, backlog, None)?;
        Ok(TcpListener {
            id,
            nonblocking: false,
        })
    }

    /// Waits for a connection.
    pub fn accept(&self) -> Result<(TcpStream, SocketAddrV4)> {
        let (id, peer) = accept(self.id, self.nonblocking)?;
        Ok((TcpStream::from_id(id), peer))
    }

    /// In non-blocking mode `accept` fails with `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&mut self, on: bool) {
        self.nonblocking = on;
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddrV4> {
        with_socket(self.id, |s, id| s.local_addr(id))
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
        blocking_on(self.id, self.nonblocking, self.read_timeout, |s, id| {
            s.tcp_recv(id, buf)
        })
    }

    /// Writes some of `buf` (at least one byte unless it is empty).
    pub fn write(&mut self, buf: &[u8]) -> Result<usize> {
        blocking_on(self.id, self.nonblocking, self.write_timeout, |s, id| {
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
        shutdown_write(self.id)
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
        peer_addr(self.id)
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddrV4> {
        with_socket(self.id, |s, id| s.local_addr(id))
    }

    /// Epoll-style readiness bits right now.
    pub fn readiness(&self) -> u32 {
        readiness(self.id)
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

/// A UDP socket (shard 0's, like all UDP).
pub struct UdpSocket {
    id: SocketId,
    nonblocking: bool,
    read_timeout: Option<Duration>,
}

impl UdpSocket {
    /// Binds `port` (0 picks an ephemeral one).
    pub fn bind(port: u16) -> Result<UdpSocket> {
        let id = with_shard(0, |s| s.udp_bind(port)).map(|l| join(0, l))?;
        Ok(UdpSocket {
            id,
            nonblocking: false,
            read_timeout: None,
        })
    }

    /// Sends one datagram.
    pub fn send_to(&self, data: &[u8], dst: SocketAddrV4) -> Result<usize> {
        blocking_on(self.id, self.nonblocking, None, |s, id| {
            s.udp_send_to(id, data, dst)
        })
    }

    /// Receives one datagram.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddrV4)> {
        blocking_on(self.id, self.nonblocking, self.read_timeout, |s, id| {
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
        with_socket(self.id, |s, id| s.local_addr(id))
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        close_socket(self.id);
    }
}

// ---------------------------------------------------------------------------
// Socket calls by id, for the descriptor layer (`crate::io`).

/// Listens on `port` in every shard (shard 0 picks the port when it is 0).
pub(crate) fn listen(port: u16, backlog: usize, bufs: Option<(usize, usize)>) -> Result<SocketId> {
    let listen_on = |s: &mut NetStack, port| match bufs {
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
    };
    let first = with_shard(0, |s| listen_on(s, port))?;
    let id = join(0, first);
    let n = shards();
    if n == 1 {
        return Ok(id);
    }
    let port = with_shard(0, |s| s.local_addr(first))?.port();
    let mut locals = [first; MAX_SHARDS];
    let mut made = 1;
    let mut r = Ok(());
    while made < n && r.is_ok() {
        r = with_shard(made, |s| listen_on(s, port)).map(|l| locals[made] = l);
        made += r.is_ok() as usize;
    }
    if r.is_ok() {
        let mut groups = GROUPS.lock();
        r = groups.try_reserve(1).map_err(|_| NetError::NoBufs);
        if r.is_ok() {
            groups.push(Group { id, locals });
            return Ok(id);
        }
    }
    close_each(&locals, 0..made);
    r.map(|_| id)
}

/// Takes a connection from listener `id`: from the caller's CPU's shard
/// first, then from the others.
pub(crate) fn accept(id: SocketId, nonblocking: bool) -> Result<(SocketId, SocketAddrV4)> {
    // Shard k's socket is locals[k], for k = first, first + 1, ... (mod n).
    let (first, n, locals) = match group_locals(id) {
        Some(locals) => (crate::sched::cpu_index(), shards(), locals),
        None => {
            let (k, local) = split(id);
            (k, 1, [local; MAX_SHARDS])
        }
    };
    blocking(id, nonblocking, None, || {
        for j in 0..n {
            let k = (first + j) % shards();
            match with_shard(k, |s| s.tcp_accept(locals[k])) {
                Ok((c, peer)) => return Ok((join(k, c), peer)),
                Err(NetError::WouldBlock) => {}
                Err(e) => return Err(e),
            }
        }
        Err(NetError::WouldBlock)
    })
}

/// Connects to `addr` (from shard 0: an ephemeral local port steers the
/// replies there).
pub(crate) fn connect(addr: SocketAddrV4, nonblocking: bool) -> Result<SocketId> {
    let id = join(0, with_shard(0, |s| s.tcp_connect(addr, None))?);
    if !nonblocking {
        blocking_on(id, false, None, |st, id| {
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
    blocking_on(id, nonblocking, None, |s, id| s.tcp_recv(id, buf))
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
    blocking_on(id, nonblocking, None, |s, id| s.tcp_send(id, buf))
}

pub(crate) fn shutdown_write(id: SocketId) -> Result<()> {
    with_socket(id, |s, id| s.tcp_shutdown_write(id))
}

pub(crate) fn peer_addr(id: SocketId) -> Result<SocketAddrV4> {
    with_socket(id, |s, id| s.peer_addr(id))
}

pub(crate) fn close_socket(id: SocketId) {
    match group_locals(id) {
        Some(locals) => {
            GROUPS.lock().retain(|g| g.id != id);
            close_each(&locals, 0..shards());
        }
        None => {
            let (k, local) = split(id);
            close_each(&[local; MAX_SHARDS], k..k + 1);
        }
    }
    forget(id);
}

/// Closes socket `locals[k]` of shard `k`, for each `k` of `shards`.
fn close_each(locals: &[SocketId; MAX_SHARDS], shards: core::ops::Range<usize>) {
    for k in shards {
        let _ = with_shard(k, |s| s.close(locals[k]));
    }
}

/// Socket `id`'s readiness in `stacks` (the shards' stacks this caller
/// holds; `None`: not held): for a listener, the union over its shards'
/// sockets. `None` when a shard it needs is not held.
fn readiness_in(stacks: &[Option<&NetStack>], id: SocketId) -> Option<u32> {
    let (k, local) = split(id);
    let first = stacks.get(k).copied().flatten()?;
    // Only a listener (shard 0's socket of it) needs the group table.
    if k == 0
        && stacks.len() > 1
        && first.is_listener(local)
        && let Some(locals) = group_locals(id)
    {
        let mut r = 0;
        for (s, l) in stacks.iter().zip(locals) {
            r |= s.as_ref()?.readiness(l);
        }
        return Some(r);
    }
    Some(first.readiness(local))
}

/// Socket `id`'s readiness now (waiting for its shards' locks).
pub(crate) fn readiness(id: SocketId) -> u32 {
    with_readiness_all(|r| r(id).unwrap_or(EPOLLERR | EPOLLHUP))
}

/// Runs `f` with a function giving sockets' readiness, for epoll's
/// re-check of its ready list. With one shard, under its lock. With several,
/// under the caller's CPU's shard's lock and those of the other shards that
/// are free now: a socket of a busy shard gives `None`, and epoll then uses
/// the readiness last reported for it (every change is reported, so this is
/// at worst a change about to be reported: no event is lost), so an event
/// loop does not wait for another CPU's network work.
/// Also rings the transmit doorbells held since the caller's last wait: an
/// event loop's pass ends here.
pub(crate) fn with_readiness<R>(f: impl FnOnce(&dyn Fn(SocketId) -> Option<u32>) -> R) -> R {
    with_shards(false, f)
}

/// [`with_readiness`] waiting for every shard's lock (ascending order): no
/// `None` for a socket, and the readiness given is what was last reported
/// for it (for a new epoll interest, which records it).
pub(crate) fn with_readiness_all<R>(f: impl FnOnce(&dyn Fn(SocketId) -> Option<u32>) -> R) -> R {
    with_shards(true, f)
}

fn with_shards<R>(wait_all: bool, f: impl FnOnce(&dyn Fn(SocketId) -> Option<u32>) -> R) -> R {
    let n = shards();
    let mine = crate::sched::cpu_index();
    let mut guards: [Option<MutexGuard<'_, Net>>; MAX_SHARDS] = Default::default();
    for (k, (g, s)) in guards.iter_mut().zip(all()).enumerate() {
        *g = if wait_all || n == 1 || k == mine {
            Some(s.net.lock())
        } else {
            s.net.try_lock()
        };
        match g.as_mut() {
            Some(net) => kick_locked(k, net),
            // Its network thread rings it.
            None if s.tx_held.load(Ordering::Acquire) => s.kick(),
            None => {}
        }
    }
    let mut stacks: [Option<&NetStack>; MAX_SHARDS] = [None; MAX_SHARDS];
    for (s, g) in stacks.iter_mut().zip(&guards) {
        *s = g.as_deref().map(|n| &n.stack);
    }
    let stacks = &stacks[..n];
    f(&|id| readiness_in(stacks, id))
}

/// Runs `f` on the stack for socket `id`, then polls so what it queued goes
/// out. For `sendfile`, which fills the send buffer in place.
pub(crate) fn send_with<T>(
    id: SocketId,
    f: impl FnOnce(&mut NetStack, SocketId) -> core::result::Result<T, crate::fs::Errno>,
) -> core::result::Result<T, crate::fs::Errno> {
    let (k, local) = split(id);
    let mut g = all().get(k).ok_or(crate::fs::Errno::ENOTCONN)?.net.lock();
    let net = &mut *g;
    let r = f(&mut net.stack, local);
    if net.stack.needs_poll() {
        app_poll(k, net);
    }
    r
}

/// How many bytes socket `id`'s send queue takes now.
pub(crate) fn send_room(id: SocketId) -> Result<usize> {
    let (k, local) = split(id);
    let mut g = all().get(k).ok_or(NetError::NotConnected)?.net.lock();
    g.stack.tcp_send_room(local)
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
