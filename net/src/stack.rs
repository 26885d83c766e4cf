//! [`NetStack`]: one smoltcp `Interface`, many one-socket `SocketSet`s, and
//! the table that routes each frame to the set it belongs to.
//!
//! # Why many sets
//! `Interface::poll` walks the whole `SocketSet` for every frame and for
//! every egress pass. Here every socket lives in its own `SocketSet` (the
//! DHCP client and the ping socket share a small "control" set). A received
//! frame is classified once ([`crate::classify`]), its 4-tuple looked up in a
//! hash table, and fed with `Interface::poll_ingress_single` against that one
//! set. Egress only visits sockets that are *dirty* (touched by the app, hit
//! by a frame, or whose smoltcp deadline expired; deadlines sit in a
//! `BTreeSet` timer queue). Per-frame work is therefore independent of the
//! number of open sockets; [`StackStats::socket_visits`] counts it.
//!
//! # Listen backlog
//! A listener owns one armed smoltcp listening socket. When a SYN arrives
//! for its port and no connection matches the 4-tuple, the SYN is fed to that
//! socket alone; as soon as it leaves `LISTEN` it is moved out into its own
//! entry (keyed by its 4-tuple) and appended to the listener's accept queue,
//! and a fresh socket is armed in its place -- before the next frame is
//! looked at. So a burst of SYNs is served one after the other without
//! refusals, up to `backlog` connections that are half-open or established
//! but not yet accepted. Beyond that no socket is armed and further SYNs are
//! dropped, as Linux does (counted in [`StackStats::listen_overflows`]): the
//! client retransmits its SYN and gets in once the application accepts.
//! Arming lazily (one socket rather than `backlog` pre-built ones) gives the
//! same behaviour, since the frame loop re-arms between two frames, without
//! allocating `backlog` pairs of buffers per listening port.

use alloc::collections::{BTreeSet, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::mem;
use core::net::{Ipv4Addr, SocketAddrV4};

use hashbrown::HashMap;
use smoltcp::iface::{Config, Interface, PollResult as SmolPoll, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{dhcpv4, icmp, tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpEndpoint,
    IpListenEndpoint, IpProtocol, Ipv4Cidr, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr,
};

use crate::classify::{Class, FourTuple, Us, classify};
use crate::error::{NetError, Result};
use crate::nic::{DropReason, ETH_HEADER_LEN, FrameDevice, Nic, NicCounters, TxInfo};

/// Readable (or a pending connection can be accepted).
pub const EPOLLIN: u32 = 0x1;
/// Writable.
pub const EPOLLOUT: u32 = 0x4;
/// An error is pending (reset, refused, timed out).
pub const EPOLLERR: u32 = 0x8;
/// Both directions are closed.
pub const EPOLLHUP: u32 = 0x10;
/// The peer closed its write half (FIN received).
pub const EPOLLRDHUP: u32 = 0x2000;

const DHCP_CLIENT_PORT: u16 = 68;
const PING_IDENT: u16 = 0x756b;
const EPHEMERAL_FIRST: u16 = 49152;
/// Bound on egress passes per socket visit (each pass emits at most one frame).
const MAX_EGRESS_PASSES: usize = 4096;

/// A socket id: a small integer, reused after the socket is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(u32);

impl SocketId {
    /// The raw index.
    pub const fn as_u32(self) -> u32 {
        self.0
    }

    /// Rebuilds an id from [`SocketId::as_u32`].
    pub const fn from_u32(raw: u32) -> Self {
        SocketId(raw)
    }
}

/// How the interface gets its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetConfig {
    /// Run a DHCPv4 client; the lease sets address, router and DNS servers.
    Dhcp,
    /// A fixed address and optional default gateway.
    Static {
        /// Address and prefix.
        addr: Ipv4Cidr,
        /// Default gateway.
        gateway: Option<Ipv4Addr>,
    },
}

/// Per-socket TCP options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// Receive buffer size in bytes (also the largest advertised window).
    pub rx_buffer: usize,
    /// Transmit buffer size in bytes.
    pub tx_buffer: usize,
    /// Disable Nagle's algorithm (`TCP_NODELAY`).
    pub nodelay: bool,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            rx_buffer: 64 * 1024,
            tx_buffer: 64 * 1024,
            nodelay: false,
        }
    }
}

/// Stack-wide tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackOptions {
    /// Seed for smoltcp's PRNG (TCP initial sequence numbers, DHCP xids).
    pub random_seed: u64,
    /// Default TCP socket options.
    pub tcp: SocketOptions,
    /// UDP receive payload buffer (bytes).
    pub udp_rx_buffer: usize,
    /// UDP transmit payload buffer (bytes).
    pub udp_tx_buffer: usize,
    /// UDP datagrams queued per direction.
    pub udp_packets: usize,
    /// Backlog used when `tcp_listen` is given 0.
    pub default_backlog: usize,
    /// Frames taken from the NIC per `poll` before yielding (`next_poll_ms` is then "now").
    pub max_rx_per_poll: usize,
    /// A connection attempt (or a half-open accepted one) is abandoned after this long.
    pub connect_timeout_ms: u64,
    /// An established connection with unacknowledged data is reset after the
    /// peer is silent this long.
    pub user_timeout_ms: Option<u64>,
    /// A closed (orphaned) socket left in FIN-WAIT-2 is dropped after this long.
    pub fin_wait2_timeout_ms: u64,
    /// Interval between ARP requests for the gateway until it answers.
    pub arp_retry_ms: u64,
    /// Bytes of TCP socket buffers (send + receive, all sockets) the stack
    /// may hold. When a new connection would pass it, no listening socket
    /// is armed and SYNs are dropped (counted in
    /// [`StackStats::budget_refusals`]); established connections keep going.
    pub buffer_budget: usize,
    /// How long a compact TIME-WAIT record outlives a connection that we
    /// closed first.
    pub time_wait_ms: u64,
    /// At most this many TIME-WAIT records; the oldest is recycled early
    /// when a new one needs the room.
    pub max_time_wait: usize,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            random_seed: 0x5eed_0f5e_ed00,
            tcp: SocketOptions::default(),
            udp_rx_buffer: 64 * 1024,
            udp_tx_buffer: 64 * 1024,
            udp_packets: 64,
            default_backlog: 128,
            max_rx_per_poll: 256,
            connect_timeout_ms: 75_000,
            user_timeout_ms: Some(300_000),
            fin_wait2_timeout_ms: 60_000,
            arp_retry_ms: 1_000,
            buffer_budget: usize::MAX,
            time_wait_ms: 10_000,
            max_time_wait: 16_384,
        }
    }
}

/// What one [`NetStack::poll`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollResult {
    /// Sockets whose readiness may have changed (re-check with [`NetStack::readiness`]).
    pub readiness_changed: Vec<SocketId>,
    /// Call `poll` again at this time (ms) even without an interrupt. A value
    /// not after `now_ms` means "as soon as possible" (more frames pending, or
    /// the transmit ring was full: also poll on TX completion).
    pub next_poll_ms: Option<u64>,
    /// The IP configuration or [`NetStack::is_ready`] changed.
    pub config_changed: bool,
}

/// Work counters of the socket table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackStats {
    /// smoltcp sockets handed to smoltcp (ingress, egress and deadline
    /// queries), summed. With smoltcp's own `poll` this grows by the number
    /// of open sockets per frame; here by a small constant.
    pub socket_visits: u64,
    /// Frames given to smoltcp (after classification).
    pub frames_dispatched: u64,
    /// SYNs refused because the listener's backlog was full.
    pub listen_overflows: u64,
    /// Connections handed out by `tcp_accept`.
    pub accepted: u64,
    /// SYNs dropped because the buffer budget (or the heap) had no room for
    /// a new connection's buffers.
    pub budget_refusals: u64,
    /// Bytes of TCP socket buffers held now (send + receive).
    pub buffer_bytes: usize,
    /// The budget for [`StackStats::buffer_bytes`].
    pub buffer_budget: usize,
    /// TCP connections with buffers (not listeners).
    pub tcp_connections: usize,
    /// Compact TIME-WAIT records held now.
    pub time_wait: usize,
    /// Connections that entered TIME-WAIT after we closed first (their
    /// socket and buffers were freed, a record kept).
    pub time_wait_entered: u64,
    /// TIME-WAIT records recycled before their time (table full).
    pub time_wait_recycled: u64,
    /// Segments that hit a TIME-WAIT record (a FIN is answered with an ACK).
    pub time_wait_hits: u64,
}

/// Bytes one TIME-WAIT record costs: its key and expiry in the lookup table
/// and in the expiry queue (hash-table overhead not counted).
pub const TIME_WAIT_RECORD_BYTES: usize = 2 * (mem::size_of::<FourTuple>() + mem::size_of::<u64>());

/// Bytes copied between applications and socket buffers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes copied from application buffers into socket transmit buffers.
    pub app_to_socket: u64,
    /// Bytes written straight into transmit buffers by `tcp_send_with` closures.
    pub filled_in_place: u64,
    /// Bytes copied from socket receive buffers into application buffers.
    pub socket_to_app: u64,
}

/// The current IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpInfo {
    /// Address and prefix.
    pub addr: Ipv4Cidr,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers (from the DHCP lease; empty for static configuration).
    pub dns: Vec<Ipv4Addr>,
}

struct Conn {
    /// Registered in `tcp_conns` while `Some`.
    key: Option<FourTuple>,
    /// The listener whose accept queue holds this connection.
    parent: Option<SocketId>,
    /// Closed by the application; freed once smoltcp reaches CLOSED.
    orphan: bool,
    last_state: tcp::State,
    established: bool,
    fin_seen: bool,
    error: Option<NetError>,
    /// Ended by reset or timeout (sticky, unlike `error`).
    broken: bool,
    shut_wr: bool,
    started_ms: u64,
    last_rx_ms: u64,
    /// Our own deadline (orphan FIN-WAIT-2 timeout).
    deadline: Option<u64>,
}

impl Conn {
    /// A connection in its first state, registered under `key`.
    fn new(key: FourTuple, parent: Option<SocketId>, state: tcp::State, now_ms: u64) -> Conn {
        Conn {
            key: Some(key),
            parent,
            orphan: false,
            last_state: state,
            established: false,
            fin_seen: false,
            error: None,
            broken: false,
            shut_wr: false,
            started_ms: now_ms,
            last_rx_ms: now_ms,
            deadline: None,
        }
    }
}

struct Listener {
    port: u16,
    backlog: usize,
    pending: VecDeque<SocketId>,
    opts: SocketOptions,
}

enum Kind {
    Tcp(Conn),
    Listener(Listener),
    Udp { port: u16 },
}

struct Entry {
    set: SocketSet<'static>,
    /// The socket in `set` (`None` for a listener whose backlog is full).
    handle: Option<SocketHandle>,
    kind: Kind,
    /// Scheduled deadline in `timers`.
    poll_at: Option<u64>,
    dirty: bool,
    /// Bumped whenever a frame is delivered to this socket (or, for a
    /// listener, to one of its not yet accepted connections): lets the
    /// epoll layer tell a new arrival from an unrelated state change.
    rx_gen: u64,
    /// Bytes of socket buffers this entry holds (counted in the budget).
    buf_bytes: usize,
}

/// The network stack: interface, socket table and non-blocking socket API.
pub struct NetStack {
    iface: Interface,
    mac: EthernetAddress,
    mtu: usize,
    opts: StackOptions,
    now_ms: u64,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    tcp_conns: HashMap<FourTuple, SocketId>,
    tcp_listeners: HashMap<u16, SocketId>,
    udp_ports: HashMap<u16, SocketId>,
    next_tcp_port: u16,
    next_udp_port: u16,
    timers: BTreeSet<(u64, u32)>,
    dirty: Vec<SocketId>,
    arp_waiters: Vec<SocketId>,
    control: SocketSet<'static>,
    control_dirty: bool,
    control_poll_at: Option<u64>,
    dhcp: Option<SocketHandle>,
    icmp: SocketHandle,
    empty: SocketSet<'static>,
    gateway: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    gateway_resolved: bool,
    arp_probe_at: Option<u64>,
    config_changed: bool,
    counters: NicCounters,
    stats: StackStats,
    copy: CopyStats,
    scratch: Vec<u8>,
    /// TIME-WAIT records: 4-tuple → expiry (ms), and the same in expiry order.
    time_wait: HashMap<FourTuple, u64>,
    time_wait_fifo: VecDeque<(u64, FourTuple)>,
}

fn instant(ms: u64) -> Instant {
    Instant::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn to_ms(i: Instant) -> u64 {
    u64::try_from(i.total_millis()).unwrap_or(0)
}

fn v4(ep: IpEndpoint) -> SocketAddrV4 {
    // smoltcp is built with `proto-ipv6` only because its segmentation
    // offload needs it; no IPv6 address is ever configured.
    let a = match ep.addr {
        IpAddress::Ipv4(a) => a,
        IpAddress::Ipv6(_) => Ipv4Addr::UNSPECIFIED,
    };
    SocketAddrV4::new(a, ep.port)
}

/// A received TCP/IPv4 frame's IP packet and TCP segment views.
type TcpView<'a> = (Ipv4Packet<&'a [u8]>, TcpPacket<&'a [u8]>);

/// The IPv4 and TCP headers of a frame the classifier accepted as TCP.
fn parse_tcp(frame: &[u8]) -> Option<TcpView<'_>> {
    EthernetFrame::new_checked(frame).ok()?;
    let eth_len = ETH_HEADER_LEN;
    let ip = Ipv4Packet::new_checked(frame.get(eth_len..)?).ok()?;
    let ip_start = eth_len + usize::from(ip.header_len());
    let ip_end = eth_len + usize::from(ip.total_len());
    let tcp = TcpPacket::new_checked(frame.get(ip_start..ip_end)?).ok()?;
    Some((ip, tcp))
}

/// A zeroed buffer of `n` bytes, or `None` when the heap has no room.
fn try_buffer(n: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, 0);
    Some(v)
}

/// Bytes of buffers a TCP socket with options `o` holds.
fn tcp_buffer_bytes(o: &SocketOptions) -> usize {
    o.rx_buffer.max(1) + o.tx_buffer.max(1)
}

/// A TCP socket with its buffers, or `None` when the heap cannot hold them
/// (the caller refuses the connection: memory pressure never panics).
fn new_tcp_socket(o: &SocketOptions) -> Option<tcp::Socket<'static>> {
    let rx = tcp::SocketBuffer::new(try_buffer(o.rx_buffer.max(1))?);
    let tx = tcp::SocketBuffer::new(try_buffer(o.tx_buffer.max(1))?);
    let mut s = tcp::Socket::new(rx, tx);
    s.set_nagle_enabled(!o.nodelay);
    Some(s)
}

fn one_set() -> SocketSet<'static> {
    SocketSet::new(Vec::with_capacity(1))
}

impl NetStack {
    /// Creates the stack for `nic` with the given IP configuration.
    pub fn new<N: Nic>(nic: &mut N, ip: NetConfig, opts: StackOptions, now_ms: u64) -> Self {
        let mac = EthernetAddress(nic.mac());
        let mtu = nic.mtu();
        let mut cfg = Config::new(HardwareAddress::Ethernet(mac));
        cfg.random_seed = opts.random_seed;
        let mut counters = NicCounters::default();
        let mut info = TxInfo::default();
        let mut scratch = Vec::new();
        let iface = {
            let mut dev = FrameDevice {
                frame: None,
                nic: &mut *nic,
                counters: &mut counters,
                info: &mut info,
                scratch: &mut scratch,
                mtu,
            };
            Interface::new(cfg, &mut dev, instant(now_ms))
        };
        let mut control = SocketSet::new(Vec::with_capacity(2));
        let mut ping = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 4096]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 4096]),
        );
        // Binding a fresh socket to a non-zero ident cannot fail.
        let _ = ping.bind(icmp::Endpoint::Ident(PING_IDENT));
        let icmp = control.add(ping);
        let mut stack = NetStack {
            iface,
            mac,
            mtu,
            opts,
            now_ms,
            slots: Vec::new(),
            free: Vec::new(),
            tcp_conns: HashMap::new(),
            tcp_listeners: HashMap::new(),
            udp_ports: HashMap::new(),
            next_tcp_port: EPHEMERAL_FIRST,
            next_udp_port: EPHEMERAL_FIRST,
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            arp_waiters: Vec::new(),
            control,
            control_dirty: true,
            control_poll_at: None,
            dhcp: None,
            icmp,
            empty: SocketSet::new(Vec::new()),
            gateway: None,
            dns: Vec::new(),
            gateway_resolved: false,
            arp_probe_at: None,
            config_changed: false,
            counters,
            stats: StackStats::default(),
            copy: CopyStats::default(),
            scratch,
            time_wait: HashMap::new(),
            time_wait_fifo: VecDeque::new(),
        };
        match ip {
            NetConfig::Dhcp => {
                stack.dhcp = Some(stack.control.add(dhcpv4::Socket::new()));
            }
            NetConfig::Static { addr, gateway } => stack.set_ip(addr, gateway, Vec::new()),
        }
        stack
    }

    // ----- configuration --------------------------------------------------

    fn set_ip(&mut self, addr: Ipv4Cidr, gateway: Option<Ipv4Addr>, dns: Vec<Ipv4Addr>) {
        self.iface.update_ip_addrs(|a| {
            a.clear();
            // Capacity is at least one address.
            let _ = a.push(IpCidr::Ipv4(addr));
        });
        match gateway {
            Some(gw) => {
                // The route table always has room for the default route.
                let _ = self.iface.routes_mut().add_default_ipv4_route(gw);
            }
            None => {
                self.iface.routes_mut().remove_default_ipv4_route();
            }
        }
        self.gateway = gateway;
        self.dns = dns;
        self.gateway_resolved = false;
        self.arp_probe_at = gateway.map(|_| self.now_ms);
        self.config_changed = true;
    }

    fn clear_ip(&mut self) {
        self.iface.update_ip_addrs(|a| a.clear());
        self.iface.routes_mut().remove_default_ipv4_route();
        self.gateway = None;
        self.dns.clear();
        self.gateway_resolved = false;
        self.arp_probe_at = None;
        self.config_changed = true;
    }

    fn cidr(&self) -> Option<Ipv4Cidr> {
        self.iface.ip_addrs().iter().find_map(|c| match c {
            IpCidr::Ipv4(c) => Some(*c),
            IpCidr::Ipv6(_) => None,
        })
    }

    /// The current IPv4 configuration, if an address is configured.
    pub fn ip_info(&self) -> Option<IpInfo> {
        Some(IpInfo {
            addr: self.cidr()?,
            gateway: self.gateway,
            dns: self.dns.clone(),
        })
    }

    /// True once an address is configured and the gateway's MAC is known
    /// (or there is no gateway), so a first connection is not delayed by ARP.
    pub fn is_ready(&self) -> bool {
        self.cidr().is_some() && (self.gateway.is_none() || self.gateway_resolved)
    }

    /// Device-boundary counters.
    pub fn counters(&self) -> NicCounters {
        self.counters
    }

    /// Socket-table work counters.
    pub fn stats(&self) -> StackStats {
        let mut s = self.stats;
        s.buffer_budget = self.opts.buffer_budget;
        s.time_wait = self.time_wait.len();
        s.tcp_connections = self.tcp_conns.len();
        s
    }

    /// Bytes of socket buffers one TCP connection with the default options
    /// holds (send + receive); a TIME-WAIT record holds
    /// [`TIME_WAIT_RECORD_BYTES`] instead.
    pub fn tcp_bytes_per_connection(&self) -> usize {
        tcp_buffer_bytes(&self.opts.tcp)
    }

    /// Copy accounting.
    pub fn copy_stats(&self) -> CopyStats {
        self.copy
    }

    /// Number of live sockets, including closed ones still in TIME-WAIT or draining.
    pub fn socket_count(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// True when socket calls queued work that only `poll` performs (send
    /// data, window updates, FIN): the kernel should call `poll` soon.
    pub fn needs_poll(&self) -> bool {
        !self.dirty.is_empty() || self.control_dirty
    }

    // ----- slab -------------------------------------------------------------

    fn alloc(&mut self, e: Entry) -> SocketId {
        if let Some(i) = self.free.pop() {
            self.slots[i as usize] = Some(e);
            SocketId(i)
        } else {
            self.slots.push(Some(e));
            SocketId((self.slots.len() - 1) as u32)
        }
    }

    fn entry(&self, id: SocketId) -> Result<&Entry> {
        self.slots
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .ok_or(NetError::BadFd)
    }

    fn entry_mut(&mut self, id: SocketId) -> Result<&mut Entry> {
        self.slots
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
            .ok_or(NetError::BadFd)
    }

    fn free_slot(&mut self, id: SocketId) {
        let Some(e) = self.slots.get_mut(id.0 as usize).and_then(Option::take) else {
            return;
        };
        if let Some(t) = e.poll_at {
            self.timers.remove(&(t, id.0));
        }
        self.release_buffers(e.buf_bytes);
        match e.kind {
            Kind::Tcp(c) => {
                if let Some(k) = c.key {
                    self.tcp_conns.remove(&k);
                }
            }
            Kind::Listener(l) => {
                self.tcp_listeners.remove(&l.port);
            }
            Kind::Udp { port } => {
                self.udp_ports.remove(&port);
            }
        }
        self.free.push(id.0);
    }

    fn release_buffers(&mut self, bytes: usize) {
        self.stats.buffer_bytes = self.stats.buffer_bytes.saturating_sub(bytes);
        if bytes > 0 && !self.tcp_listeners.is_empty() {
            // Room again: listeners the budget left unarmed may arm.
            let unarmed: Vec<SocketId> = self
                .tcp_listeners
                .values()
                .copied()
                .filter(|&l| self.entry(l).is_ok_and(|e| e.handle.is_none()))
                .collect();
            for l in unarmed {
                self.arm(l);
            }
        }
    }

    /// A new TCP socket whose buffers fit the budget, counted in it; `None`
    /// (counted as a refusal) when the budget or the heap has no room.
    fn budgeted_tcp_socket(&mut self, o: &SocketOptions) -> Option<(tcp::Socket<'static>, usize)> {
        let bytes = tcp_buffer_bytes(o);
        if self.stats.buffer_bytes.saturating_add(bytes) > self.opts.buffer_budget {
            self.stats.budget_refusals += 1;
            return None;
        }
        let Some(s) = new_tcp_socket(o) else {
            self.stats.budget_refusals += 1;
            return None;
        };
        self.stats.buffer_bytes += bytes;
        Some((s, bytes))
    }

    fn mark_dirty(&mut self, id: SocketId) {
        if let Some(Some(e)) = self.slots.get_mut(id.0 as usize)
            && !e.dirty
        {
            e.dirty = true;
            self.dirty.push(id);
        }
    }

    fn reschedule(&mut self, id: SocketId, at: Option<u64>) {
        let Some(Some(e)) = self.slots.get_mut(id.0 as usize) else {
            return;
        };
        if e.poll_at == at {
            return;
        }
        if let Some(t) = e.poll_at {
            self.timers.remove(&(t, id.0));
        }
        e.poll_at = at;
        if let Some(t) = at {
            self.timers.insert((t, id.0));
        }
    }

    // ----- smoltcp calls ----------------------------------------------------

    fn feed<N: Nic>(
        &mut self,
        nic: &mut N,
        set: &mut SocketSet<'static>,
        frame: &[u8],
        now: Instant,
    ) -> TxInfo {
        let mut info = TxInfo::default();
        self.stats.socket_visits += set.iter().count() as u64;
        self.stats.frames_dispatched += 1;
        let mut dev = FrameDevice {
            frame: Some(frame),
            nic,
            counters: &mut self.counters,
            info: &mut info,
            scratch: &mut self.scratch,
            mtu: self.mtu,
        };
        let _ = self.iface.poll_ingress_single(now, &mut dev, set);
        info
    }

    fn drain<N: Nic>(&mut self, nic: &mut N, set: &mut SocketSet<'static>, now: Instant) -> TxInfo {
        let mut info = TxInfo::default();
        let n = set.iter().count() as u64;
        let mut dev = FrameDevice {
            frame: None,
            nic,
            counters: &mut self.counters,
            info: &mut info,
            scratch: &mut self.scratch,
            mtu: self.mtu,
        };
        for _ in 0..MAX_EGRESS_PASSES {
            self.stats.socket_visits += n;
            if self.iface.poll_egress(now, &mut dev, set) == SmolPoll::None {
                break;
            }
        }
        info
    }

    fn deadline_of(&mut self, set: &SocketSet<'static>, now: Instant) -> Option<u64> {
        self.stats.socket_visits += set.iter().count() as u64;
        self.iface.poll_at(now, set).map(to_ms)
    }

    fn take_set(&mut self, id: SocketId) -> Option<SocketSet<'static>> {
        let e = self.slots.get_mut(id.0 as usize)?.as_mut()?;
        Some(mem::replace(&mut e.set, SocketSet::new(Vec::new())))
    }

    fn put_set(&mut self, id: SocketId, set: SocketSet<'static>) {
        if let Some(Some(e)) = self.slots.get_mut(id.0 as usize) {
            e.set = set;
        }
    }

    // ----- poll -------------------------------------------------------------

    /// Processes received frames, timers and queued output. Call on every RX
    /// (and TX-completion) interrupt, after socket calls when
    /// [`NetStack::needs_poll`] is true, and when `next_poll_ms` expires.
    pub fn poll<N: Nic>(&mut self, now_ms: u64, nic: &mut N) -> PollResult {
        self.now_ms = now_ms;
        let now = instant(now_ms);
        self.iface.poll_maintenance(now);
        self.expire_time_wait();

        let mut n = 0;
        while n < self.opts.max_rx_per_poll {
            let Some(rx) = nic.receive() else { break };
            n += 1;
            self.ingress_frame(nic, &rx, now);
            nic.release(rx);
        }
        if n > 0 {
            nic.refill();
        }
        let more_rx = n >= self.opts.max_rx_per_poll;

        while let Some(&(t, raw)) = self.timers.first() {
            if t > now_ms {
                break;
            }
            self.timers.pop_first();
            if let Some(Some(e)) = self.slots.get_mut(raw as usize) {
                e.poll_at = None;
            }
            self.mark_dirty(SocketId(raw));
        }

        let mut changed = Vec::new();
        let dirty = mem::take(&mut self.dirty);
        for id in dirty {
            self.service(nic, id, now, &mut changed);
        }

        let control_due = self.control_poll_at.is_some_and(|t| t <= now_ms);
        if self.control_dirty || control_due {
            self.service_control(nic, now);
        }
        self.probe_gateway(nic);

        // Every poll, not only those that transmitted: besides notifying the
        // device of new frames, this is where the driver takes back transmit
        // buffers the device has finished with. A poll whose every transmit
        // was refused (ring full) is exactly the one that must reclaim, or the
        // ring stays full for good.
        nic.flush_tx();

        changed.sort_unstable();
        changed.dedup();
        let mut next = self.timers.first().map(|&(t, _)| t);
        let tw = self.time_wait_fifo.front().map(|&(t, _)| t);
        for t in [self.control_poll_at, self.arp_probe_at, tw]
            .into_iter()
            .flatten()
        {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        if more_rx || !self.dirty.is_empty() || self.control_dirty {
            next = Some(now_ms);
        }
        PollResult {
            readiness_changed: changed,
            next_poll_ms: next,
            config_changed: mem::take(&mut self.config_changed),
        }
    }

    fn ingress_frame<N: Nic>(&mut self, nic: &mut N, frame: &[u8], now: Instant) {
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += frame.len() as u64;
        let us = Us {
            mac: self.mac,
            addr: self.cidr(),
            mtu: self.mtu,
        };
        match classify(frame, &us) {
            Class::Drop(r) => self.counters.rx_dropped.count(r),
            Class::Arp { sender } => {
                if Some(sender) == self.gateway && !self.gateway_resolved {
                    self.gateway_resolved = true;
                    self.arp_probe_at = None;
                    self.config_changed = true;
                }
                self.feed_control(nic, frame, now);
                // Sockets held back waiting for a neighbour may go now.
                for id in mem::take(&mut self.arp_waiters) {
                    self.mark_dirty(id);
                }
            }
            Class::Control => self.feed_control(nic, frame, now),
            Class::Udp { dst_port } => {
                if dst_port == DHCP_CLIENT_PORT && self.dhcp.is_some() {
                    self.feed_control(nic, frame, now);
                } else if let Some(&id) = self.udp_ports.get(&dst_port) {
                    self.feed_socket(nic, id, frame, now);
                } else if us.addr.is_none() {
                    self.counters.rx_dropped.count(DropReason::NotForUs);
                } else {
                    self.feed_empty(nic, frame, now);
                }
            }
            Class::Tcp { key, syn_only } => {
                if let Some(&id) = self.tcp_conns.get(&key) {
                    let now_ms = self.now_ms;
                    if let Ok(Entry {
                        kind: Kind::Tcp(c), ..
                    }) = self.entry_mut(id)
                    {
                        c.last_rx_ms = now_ms;
                    }
                    self.feed_socket(nic, id, frame, now);
                } else if self.time_wait_segment(nic, &key, frame) {
                    // Consumed by its TIME-WAIT record.
                } else if let Some(&lid) = self.tcp_listeners.get(&key.local_port)
                    && syn_only
                {
                    self.feed_listener(nic, lid, key, frame, now);
                } else {
                    // smoltcp answers with RST.
                    self.feed_empty(nic, frame, now);
                }
            }
        }
    }

    fn feed_control<N: Nic>(&mut self, nic: &mut N, frame: &[u8], now: Instant) {
        let mut set = mem::replace(&mut self.control, SocketSet::new(Vec::new()));
        self.feed(nic, &mut set, frame, now);
        self.control = set;
        self.control_dirty = true;
    }

    fn feed_empty<N: Nic>(&mut self, nic: &mut N, frame: &[u8], now: Instant) {
        let mut set = mem::replace(&mut self.empty, SocketSet::new(Vec::new()));
        self.feed(nic, &mut set, frame, now);
        self.empty = set;
    }

    fn feed_socket<N: Nic>(&mut self, nic: &mut N, id: SocketId, frame: &[u8], now: Instant) {
        self.bump_rx_gen(id);
        let Some(mut set) = self.take_set(id) else {
            return;
        };
        self.feed(nic, &mut set, frame, now);
        self.put_set(id, set);
        self.mark_dirty(id);
    }

    fn feed_listener<N: Nic>(
        &mut self,
        nic: &mut N,
        lid: SocketId,
        key: FourTuple,
        frame: &[u8],
        now: Instant,
    ) {
        let Ok(e) = self.entry(lid) else { return };
        let Some(handle) = e.handle else {
            // Backlog full: drop the SYN, as Linux does; the client retransmits
            // it and gets in once the application has accepted some.
            self.stats.listen_overflows += 1;
            return;
        };
        let Some(mut set) = self.take_set(lid) else {
            return;
        };
        self.feed(nic, &mut set, frame, now);
        if set.get::<tcp::Socket>(handle).state() == tcp::State::Listen {
            self.put_set(lid, set);
            return;
        }
        // The armed socket took the SYN: move it out into its own entry,
        // with its buffers' share of the budget.
        let sock = set.remove(handle);
        self.put_set(lid, set);
        let bytes = self
            .entry_mut(lid)
            .map_or(0, |e| mem::take(&mut e.buf_bytes));
        let mut cset = one_set();
        let h = cset.add(sock);
        let now_ms = self.now_ms;
        let id = self.alloc(Entry {
            set: cset,
            handle: Some(h),
            kind: Kind::Tcp(Conn::new(key, Some(lid), tcp::State::SynReceived, now_ms)),
            poll_at: None,
            dirty: false,
            rx_gen: 0,
            buf_bytes: bytes,
        });
        self.tcp_conns.insert(key, id);
        if let Ok(Entry {
            handle,
            kind: Kind::Listener(l),
            ..
        }) = self.entry_mut(lid)
        {
            *handle = None;
            l.pending.push_back(id);
        }
        self.mark_dirty(id);
        self.arm(lid);
    }

    /// Arms a fresh listening socket if the listener has none, room in its
    /// backlog, and the buffer budget room for one more connection. Unarmed,
    /// the listener drops SYNs; it is armed again when buffers are released.
    fn arm(&mut self, lid: SocketId) {
        let timeout = Duration::from_millis(self.opts.connect_timeout_ms);
        let Ok(e) = self.entry(lid) else { return };
        let Kind::Listener(l) = &e.kind else { return };
        if e.handle.is_some() || l.pending.len() >= l.backlog {
            return;
        }
        let (port, opts) = (l.port, l.opts);
        let Some((mut s, bytes)) = self.budgeted_tcp_socket(&opts) else {
            return;
        };
        s.set_timeout(Some(timeout));
        if s.listen(port).is_err() {
            self.release_buffers(bytes);
            return;
        }
        if let Ok(e) = self.entry_mut(lid) {
            e.handle = Some(e.set.add(s));
            e.buf_bytes = bytes;
        }
    }

    /// Egress, state bookkeeping and rescheduling for one dirty socket.
    fn service<N: Nic>(
        &mut self,
        nic: &mut N,
        id: SocketId,
        now: Instant,
        changed: &mut Vec<SocketId>,
    ) {
        let Some(mut set) = self.take_set(id) else {
            return;
        };
        let info = self.drain(nic, &mut set, now);
        if info.arp_sent {
            self.arp_waiters.push(id);
        }
        let mut deadline = self.deadline_of(&set, now);
        let now_ms = self.now_ms;
        let opts = self.opts;
        let Ok(e) = self.entry_mut(id) else { return };
        e.dirty = false;
        let handle = e.handle;
        let mut outcome = Outcome::Keep;
        match (&mut e.kind, handle) {
            (Kind::Tcp(c), Some(h)) => {
                let sock = set.get_mut::<tcp::Socket>(h);
                outcome = update_conn(c, sock, now_ms, &opts);
                if let Some(d) = c.deadline {
                    deadline = Some(deadline.map_or(d, |x| x.min(d)));
                }
                match c.parent {
                    Some(p) if outcome != Outcome::Keep => changed.push(p),
                    Some(_) => {}
                    None if !c.orphan => changed.push(id),
                    None => {}
                }
            }
            (Kind::Udp { .. }, _) => changed.push(id),
            _ => {}
        }
        self.put_set(id, set);
        match outcome {
            Outcome::Keep | Outcome::Notify => self.reschedule(id, deadline),
            Outcome::Closed => self.on_closed(id, deadline),
            Outcome::TimeWait => self.enter_time_wait(id),
        }
    }

    /// Replaces an orphaned connection in TIME-WAIT by a compact record
    /// (its 4-tuple and expiry) and frees the socket with its buffers.
    fn enter_time_wait(&mut self, id: SocketId) {
        let key = match self.entry(id) {
            Ok(Entry {
                kind: Kind::Tcp(c), ..
            }) => c.key,
            _ => None,
        };
        self.free_slot(id);
        let Some(key) = key else { return };
        self.stats.time_wait_entered += 1;
        let max = self.opts.max_time_wait;
        if max == 0 {
            return;
        }
        while self.time_wait.len() >= max || self.time_wait_fifo.len() >= max.saturating_mul(2) {
            let Some((t, k)) = self.time_wait_fifo.pop_front() else {
                break;
            };
            if self.time_wait.get(&k) == Some(&t) {
                self.time_wait.remove(&k);
                self.stats.time_wait_recycled += 1;
            }
        }
        // A record the heap has no room for is simply not kept.
        if self.time_wait.try_reserve(1).is_err() || self.time_wait_fifo.try_reserve(1).is_err() {
            return;
        }
        let expiry = self.now_ms.saturating_add(self.opts.time_wait_ms);
        self.time_wait.insert(key, expiry);
        self.time_wait_fifo.push_back((expiry, key));
    }

    /// Drops TIME-WAIT records whose time is up.
    fn expire_time_wait(&mut self) {
        while let Some(&(t, k)) = self.time_wait_fifo.front() {
            if t > self.now_ms {
                break;
            }
            self.time_wait_fifo.pop_front();
            if self.time_wait.get(&k) == Some(&t) {
                self.time_wait.remove(&k);
            }
        }
    }

    /// A segment for a 4-tuple in TIME-WAIT. Returns true when it is
    /// consumed here; false when it should go on (a new SYN for the same
    /// 4-tuple starts a new incarnation, as Linux allows).
    fn time_wait_segment<N: Nic>(&mut self, nic: &mut N, key: &FourTuple, frame: &[u8]) -> bool {
        let Some(&expiry) = self.time_wait.get(key) else {
            return false;
        };
        if expiry <= self.now_ms {
            self.time_wait.remove(key);
            return false;
        }
        let Some((_, tcp)) = parse_tcp(frame) else {
            return true;
        };
        if tcp.rst() {
            self.time_wait.remove(key);
            return true;
        }
        if tcp.syn() && !tcp.ack() {
            self.time_wait.remove(key);
            return false;
        }
        self.stats.time_wait_hits += 1;
        if tcp.fin() && tcp.ack() {
            self.time_wait_ack(nic, frame);
        }
        true
    }

    /// Answers a retransmitted FIN of a connection in TIME-WAIT with the ACK
    /// it missed, built from the segment alone: our sequence number is what
    /// it acknowledges, and we acknowledge its data and FIN.
    fn time_wait_ack<N: Nic>(&mut self, nic: &mut N, frame: &[u8]) {
        let Some((ip, tcp)) = parse_tcp(frame) else {
            return;
        };
        let eth = EthernetFrame::new_unchecked(frame);
        let consumed = tcp.payload().len() + 1;
        let repr = TcpRepr {
            src_port: tcp.dst_port(),
            dst_port: tcp.src_port(),
            control: TcpControl::None,
            seq_number: tcp.ack_number(),
            ack_number: Some(tcp.seq_number() + consumed),
            window_len: 0,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ip_repr = Ipv4Repr {
            src_addr: ip.dst_addr(),
            dst_addr: ip.src_addr(),
            next_header: IpProtocol::Tcp,
            payload_len: repr.buffer_len(),
            hop_limit: 64,
        };
        let eth_repr = EthernetRepr {
            src_addr: self.mac,
            dst_addr: eth.src_addr(),
            ethertype: EthernetProtocol::Ipv4,
        };
        let len = eth_repr.buffer_len() + ip_repr.buffer_len() + repr.buffer_len();
        let caps = ChecksumCapabilities::default();
        let sent = nic.transmit(len, |buf| {
            let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
            eth_repr.emit(&mut f);
            let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
            ip_repr.emit(&mut p, &caps);
            let mut t = TcpPacket::new_unchecked(p.payload_mut());
            repr.emit(
                &mut t,
                &IpAddress::Ipv4(ip_repr.src_addr),
                &IpAddress::Ipv4(ip_repr.dst_addr),
                &caps,
            );
        });
        if sent {
            self.counters.tx_frames += 1;
            self.counters.tx_bytes += len as u64;
        }
    }

    fn on_closed(&mut self, id: SocketId, deadline: Option<u64>) {
        let Ok(Entry {
            kind: Kind::Tcp(c), ..
        }) = self.entry_mut(id)
        else {
            return;
        };
        let key = c.key.take();
        let parent = c.parent.take();
        let orphan = c.orphan;
        if let Some(k) = key {
            self.tcp_conns.remove(&k);
        }
        if let Some(p) = parent {
            if let Ok(Entry {
                kind: Kind::Listener(l),
                ..
            }) = self.entry_mut(p)
            {
                l.pending.retain(|&x| x != id);
            }
            self.free_slot(id);
            self.arm(p);
        } else if orphan {
            self.free_slot(id);
        } else {
            self.reschedule(id, deadline);
        }
    }

    fn service_control<N: Nic>(&mut self, nic: &mut N, now: Instant) {
        self.control_dirty = false;
        let mut set = mem::replace(&mut self.control, SocketSet::new(Vec::new()));
        self.drain(nic, &mut set, now);
        if let Some(h) = self.dhcp {
            let event = match set.get_mut::<dhcpv4::Socket>(h).poll() {
                Some(dhcpv4::Event::Configured(cfg)) => {
                    Some(Some((cfg.address, cfg.router, cfg.dns_servers.to_vec())))
                }
                Some(dhcpv4::Event::Deconfigured) => Some(None),
                None => None,
            };
            match event {
                Some(Some((addr, router, dns))) => {
                    log::info!("dhcp: lease {addr} router {router:?}");
                    self.set_ip(addr, router, dns);
                }
                Some(None) => {
                    log::info!("dhcp: lease lost");
                    self.clear_ip();
                }
                None => {}
            }
        }
        self.control_poll_at = self.deadline_of(&set, now);
        self.control = set;
    }

    fn probe_gateway<N: Nic>(&mut self, nic: &mut N) {
        let (Some(at), Some(gw), Some(cidr)) = (self.arp_probe_at, self.gateway, self.cidr())
        else {
            return;
        };
        if self.gateway_resolved || at > self.now_ms {
            return;
        }
        self.arp_probe_at = Some(self.now_ms + self.opts.arp_retry_ms);
        let repr = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: self.mac,
            source_protocol_addr: cidr.address(),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: gw,
        };
        let len = crate::nic::ETH_HEADER_LEN + repr.buffer_len();
        let mac = self.mac;
        if !nic.can_transmit() {
            return;
        }
        let ok = nic.transmit(len, |buf| {
            let mut eth = EthernetFrame::new_unchecked(buf);
            eth.set_src_addr(mac);
            eth.set_dst_addr(EthernetAddress::BROADCAST);
            eth.set_ethertype(EthernetProtocol::Arp);
            repr.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        });
        if ok {
            self.counters.tx_frames += 1;
            self.counters.tx_bytes += len as u64;
        } else {
            self.counters.tx_dropped += 1;
        }
    }

    // ----- ICMP echo ----------------------------------------------------------

    /// Queues an ICMP echo request to `target` (answers come back through
    /// [`NetStack::ping_reply`]; echo requests *to* us are answered by smoltcp).
    pub fn ping(&mut self, target: Ipv4Addr, seq: u16, payload: &[u8]) -> Result<()> {
        if self.cidr().is_none() {
            return Err(NetError::AddrNotAvailable);
        }
        let repr = Icmpv4Repr::EchoRequest {
            ident: PING_IDENT,
            seq_no: seq,
            data: payload,
        };
        let sock = self.control.get_mut::<icmp::Socket>(self.icmp);
        let buf = sock
            .send(repr.buffer_len(), IpAddress::Ipv4(target))
            .map_err(|e| match e {
                icmp::SendError::BufferFull => NetError::WouldBlock,
                icmp::SendError::Unaddressable => NetError::InvalidInput,
            })?;
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(buf),
            &smoltcp::phy::ChecksumCapabilities::default(),
        );
        self.control_dirty = true;
        Ok(())
    }

    /// Takes the next echo reply received: `(from, seq)`.
    pub fn ping_reply(&mut self) -> Option<(Ipv4Addr, u16)> {
        let sock = self.control.get_mut::<icmp::Socket>(self.icmp);
        while let Ok((data, IpAddress::Ipv4(from))) = sock.recv() {
            let Ok(pkt) = Icmpv4Packet::new_checked(data) else {
                continue;
            };
            if let Ok(Icmpv4Repr::EchoReply { ident, seq_no, .. }) =
                Icmpv4Repr::parse(&pkt, &smoltcp::phy::ChecksumCapabilities::ignored())
                && ident == PING_IDENT
            {
                return Some((from, seq_no));
            }
        }
        None
    }

    // ----- TCP ----------------------------------------------------------------

    /// Listens on `port` (0 picks an ephemeral port) with room for `backlog`
    /// connections not yet accepted (0 means the default).
    pub fn tcp_listen(&mut self, port: u16, backlog: usize) -> Result<SocketId> {
        let opts = self.opts.tcp;
        self.tcp_listen_with(port, backlog, opts)
    }

    /// [`NetStack::tcp_listen`] with explicit options for accepted sockets.
    pub fn tcp_listen_with(
        &mut self,
        port: u16,
        backlog: usize,
        opts: SocketOptions,
    ) -> Result<SocketId> {
        let port = if port == 0 {
            self.ephemeral_listen_port()?
        } else {
            port
        };
        if self.tcp_listeners.contains_key(&port) {
            return Err(NetError::AddrInUse);
        }
        let backlog = if backlog == 0 {
            self.opts.default_backlog
        } else {
            backlog
        }
        .clamp(1, 65_535);
        let id = self.alloc(Entry {
            set: one_set(),
            handle: None,
            kind: Kind::Listener(Listener {
                port,
                backlog,
                pending: VecDeque::new(),
                opts,
            }),
            poll_at: None,
            dirty: false,
            rx_gen: 0,
            buf_bytes: 0,
        });
        self.tcp_listeners.insert(port, id);
        self.arm(id);
        Ok(id)
    }

    fn ephemeral_listen_port(&mut self) -> Result<u16> {
        for _ in 0..=(u16::MAX - EPHEMERAL_FIRST) {
            let p = self.next_tcp_port;
            self.next_tcp_port = p.checked_add(1).unwrap_or(EPHEMERAL_FIRST);
            if !self.tcp_listeners.contains_key(&p) {
                return Ok(p);
            }
        }
        Err(NetError::AddrNotAvailable)
    }

    /// Takes an established connection from the listener's accept queue.
    /// `WouldBlock` when none is ready.
    pub fn tcp_accept(&mut self, listener: SocketId) -> Result<(SocketId, SocketAddrV4)> {
        let Kind::Listener(l) = &self.entry(listener)?.kind else {
            return Err(NetError::InvalidInput);
        };
        let mut found = None;
        for (i, &cid) in l.pending.iter().enumerate() {
            if let Ok(Entry {
                kind: Kind::Tcp(c), ..
            }) = self.entry(cid)
                && c.established
            {
                found = Some((i, cid, c.key));
                break;
            }
        }
        let Some((i, cid, key)) = found else {
            return Err(NetError::WouldBlock);
        };
        if let Ok(Entry {
            kind: Kind::Listener(l),
            ..
        }) = self.entry_mut(listener)
        {
            l.pending.remove(i);
        }
        if let Ok(Entry {
            kind: Kind::Tcp(c), ..
        }) = self.entry_mut(cid)
        {
            c.parent = None;
        }
        self.stats.accepted += 1;
        self.arm(listener);
        let peer = key.map_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), |k| {
            SocketAddrV4::new(k.remote_addr, k.remote_port)
        });
        Ok((cid, peer))
    }

    /// Starts connecting to `remote` (from `local_port`, or an ephemeral
    /// port). Completion shows as `EPOLLOUT` (or `EPOLLERR` on failure).
    pub fn tcp_connect(
        &mut self,
        remote: SocketAddrV4,
        local_port: Option<u16>,
    ) -> Result<SocketId> {
        let opts = self.opts.tcp;
        self.tcp_connect_with(remote, local_port, opts)
    }

    /// [`NetStack::tcp_connect`] with explicit socket options.
    pub fn tcp_connect_with(
        &mut self,
        remote: SocketAddrV4,
        local_port: Option<u16>,
        opts: SocketOptions,
    ) -> Result<SocketId> {
        if remote.ip().is_unspecified() || remote.ip().is_broadcast() || remote.port() == 0 {
            return Err(NetError::InvalidInput);
        }
        let local = self.cidr().ok_or(NetError::AddrNotAvailable)?.address();
        let mut key = FourTuple {
            local_addr: local,
            local_port: 0,
            remote_addr: *remote.ip(),
            remote_port: remote.port(),
        };
        match local_port.filter(|&p| p != 0) {
            Some(p) => {
                key.local_port = p;
                if self.tcp_conns.contains_key(&key) {
                    return Err(NetError::AddrInUse);
                }
            }
            None => {
                let mut found = false;
                for _ in 0..=(u16::MAX - EPHEMERAL_FIRST) {
                    let p = self.next_tcp_port;
                    self.next_tcp_port = p.checked_add(1).unwrap_or(EPHEMERAL_FIRST);
                    key.local_port = p;
                    if !self.tcp_conns.contains_key(&key) && !self.tcp_listeners.contains_key(&p) {
                        found = true;
                        break;
                    }
                }
                if !found {
                    return Err(NetError::AddrNotAvailable);
                }
            }
        }
        let (mut s, bytes) = self.budgeted_tcp_socket(&opts).ok_or(NetError::NoBufs)?;
        s.set_timeout(Some(Duration::from_millis(self.opts.connect_timeout_ms)));
        if s.connect(
            self.iface.context(),
            IpEndpoint::new(IpAddress::Ipv4(key.remote_addr), key.remote_port),
            IpEndpoint::new(IpAddress::Ipv4(local), key.local_port),
        )
        .is_err()
        {
            self.release_buffers(bytes);
            return Err(NetError::InvalidInput);
        }
        let mut set = one_set();
        let h = set.add(s);
        let now_ms = self.now_ms;
        let id = self.alloc(Entry {
            set,
            handle: Some(h),
            kind: Kind::Tcp(Conn::new(key, None, tcp::State::SynSent, now_ms)),
            poll_at: None,
            dirty: false,
            rx_gen: 0,
            buf_bytes: bytes,
        });
        self.tcp_conns.insert(key, id);
        self.mark_dirty(id);
        Ok(id)
    }

    /// A user-visible TCP connection and its smoltcp socket.
    fn conn_mut(&mut self, id: SocketId) -> Result<(&mut Conn, &mut tcp::Socket<'static>)> {
        let e = self.entry_mut(id)?;
        let Some(h) = e.handle else {
            return Err(NetError::InvalidInput);
        };
        match &mut e.kind {
            Kind::Tcp(c) if !c.orphan && c.parent.is_none() => {
                Ok((c, e.set.get_mut::<tcp::Socket>(h)))
            }
            Kind::Tcp(_) => Err(NetError::BadFd),
            _ => Err(NetError::InvalidInput),
        }
    }

    fn check_send(c: &mut Conn, s: &tcp::Socket) -> Result<()> {
        if c.shut_wr {
            return Err(NetError::BrokenPipe);
        }
        if let Some(e) = c.error.take() {
            return Err(e);
        }
        match s.state() {
            tcp::State::SynSent | tcp::State::SynReceived => Err(NetError::WouldBlock),
            tcp::State::Established | tcp::State::CloseWait => {
                if s.send_queue() >= s.send_capacity() {
                    Err(NetError::WouldBlock)
                } else {
                    Ok(())
                }
            }
            tcp::State::Closed if !c.established && !c.broken => Err(NetError::NotConnected),
            _ => Err(NetError::BrokenPipe),
        }
    }

    /// Copies as much of `data` as fits into the transmit buffer.
    /// `WouldBlock` when it is full (or the connection is still being set up).
    pub fn tcp_send(&mut self, id: SocketId, data: &[u8]) -> Result<usize> {
        let (c, s) = self.conn_mut(id)?;
        if data.is_empty() {
            return Ok(0);
        }
        Self::check_send(c, s)?;
        let n = s.send_slice(data).map_err(|_| NetError::BrokenPipe)?;
        self.copy.app_to_socket += n as u64;
        self.mark_dirty(id);
        Ok(n)
    }

    /// Lets `f` write up to `max` bytes straight into the transmit buffer
    /// (the slice given may be shorter: the free space's contiguous part);
    /// `f` returns how many bytes it wrote. For a zero-copy sendfile path.
    pub fn tcp_send_with(
        &mut self,
        id: SocketId,
        max: usize,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize> {
        let (c, s) = self.conn_mut(id)?;
        if max == 0 {
            return Ok(0);
        }
        Self::check_send(c, s)?;
        let n = s
            .send(|buf| {
                let m = buf.len().min(max);
                let n = f(&mut buf[..m]).min(m);
                (n, n)
            })
            .map_err(|_| NetError::BrokenPipe)?;
        self.copy.filled_in_place += n as u64;
        self.mark_dirty(id);
        Ok(n)
    }

    /// Reads received bytes. `Ok(0)` is end of stream (peer sent FIN);
    /// `WouldBlock` when nothing is buffered yet.
    pub fn tcp_recv(&mut self, id: SocketId, buf: &mut [u8]) -> Result<usize> {
        let (c, s) = self.conn_mut(id)?;
        if buf.is_empty() {
            return Ok(0);
        }
        if s.can_recv() {
            let n = s.recv_slice(buf).unwrap_or(0);
            self.copy.socket_to_app += n as u64;
            // The window may have opened: let poll send an update.
            self.mark_dirty(id);
            return Ok(n);
        }
        if let Some(e) = c.error.take() {
            return Err(e);
        }
        match s.state() {
            tcp::State::Listen => Err(NetError::NotConnected),
            tcp::State::SynSent
            | tcp::State::SynReceived
            | tcp::State::Established
            | tcp::State::FinWait1
            | tcp::State::FinWait2 => Err(NetError::WouldBlock),
            tcp::State::CloseWait
            | tcp::State::LastAck
            | tcp::State::Closing
            | tcp::State::TimeWait
            | tcp::State::Closed => Ok(0),
        }
    }

    /// Closes the write half: a FIN follows the data already queued.
    pub fn tcp_shutdown_write(&mut self, id: SocketId) -> Result<()> {
        let (c, s) = self.conn_mut(id)?;
        match s.state() {
            tcp::State::SynSent | tcp::State::Listen => return Err(NetError::NotConnected),
            tcp::State::Closed if !c.established => return Err(NetError::NotConnected),
            _ => {}
        }
        c.shut_wr = true;
        s.close();
        self.mark_dirty(id);
        Ok(())
    }

    /// Closes a TCP socket (connection or listener). A connection is closed
    /// gracefully: queued data is sent, then FIN; the socket lingers (no
    /// longer visible through its id) until smoltcp reaches CLOSED, TIME-WAIT
    /// included. Closing a listener resets its not-yet-accepted connections.
    pub fn tcp_close(&mut self, id: SocketId) -> Result<()> {
        match &self.entry(id)?.kind {
            Kind::Udp { .. } => Err(NetError::InvalidInput),
            _ => self.close(id),
        }
    }

    /// Resets a TCP connection at once (RST) and releases its id.
    pub fn tcp_abort(&mut self, id: SocketId) -> Result<()> {
        let (c, s) = self.conn_mut(id)?;
        s.abort();
        c.orphan = true;
        self.mark_dirty(id);
        Ok(())
    }

    /// Closes any socket (see [`NetStack::tcp_close`]); the id is invalid afterwards.
    pub fn close(&mut self, id: SocketId) -> Result<()> {
        let e = self.entry_mut(id)?;
        let handle = e.handle;
        match &mut e.kind {
            Kind::Udp { .. } => {
                self.free_slot(id);
            }
            Kind::Listener(l) => {
                let pending: Vec<SocketId> = l.pending.drain(..).collect();
                self.free_slot(id);
                for cid in pending {
                    if let Ok(e) = self.entry_mut(cid)
                        && let (Kind::Tcp(c), Some(h)) = (&mut e.kind, e.handle)
                    {
                        c.parent = None;
                        c.orphan = true;
                        e.set.get_mut::<tcp::Socket>(h).abort();
                    }
                    self.mark_dirty(cid);
                }
            }
            Kind::Tcp(c) => {
                if c.orphan || c.parent.is_some() {
                    return Err(NetError::BadFd);
                }
                let Some(h) = handle else {
                    return Err(NetError::BadFd);
                };
                let s = e.set.get_mut::<tcp::Socket>(h);
                if s.state() == tcp::State::Closed {
                    self.free_slot(id);
                } else {
                    c.orphan = true;
                    s.close();
                    self.mark_dirty(id);
                }
            }
        }
        Ok(())
    }

    // ----- UDP ----------------------------------------------------------------

    /// Binds a UDP socket to `port` (0 picks an ephemeral port).
    pub fn udp_bind(&mut self, port: u16) -> Result<SocketId> {
        let port = if port == 0 {
            let mut found = None;
            for _ in 0..=(u16::MAX - EPHEMERAL_FIRST) {
                let p = self.next_udp_port;
                self.next_udp_port = p.checked_add(1).unwrap_or(EPHEMERAL_FIRST);
                if !self.udp_ports.contains_key(&p) {
                    found = Some(p);
                    break;
                }
            }
            found.ok_or(NetError::AddrNotAvailable)?
        } else {
            port
        };
        if self.udp_ports.contains_key(&port) || (port == DHCP_CLIENT_PORT && self.dhcp.is_some()) {
            return Err(NetError::AddrInUse);
        }
        let o = &self.opts;
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; o.udp_packets.max(1)],
                vec![0; o.udp_rx_buffer.max(1)],
            ),
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; o.udp_packets.max(1)],
                vec![0; o.udp_tx_buffer.max(1)],
            ),
        );
        s.bind(IpListenEndpoint { addr: None, port })
            .map_err(|_| NetError::InvalidInput)?;
        let mut set = one_set();
        let h = set.add(s);
        let id = self.alloc(Entry {
            set,
            handle: Some(h),
            kind: Kind::Udp { port },
            poll_at: None,
            dirty: false,
            rx_gen: 0,
            buf_bytes: 0,
        });
        self.udp_ports.insert(port, id);
        Ok(id)
    }

    fn udp_mut(&mut self, id: SocketId) -> Result<&mut udp::Socket<'static>> {
        let e = self.entry_mut(id)?;
        match (&e.kind, e.handle) {
            (Kind::Udp { .. }, Some(h)) => Ok(e.set.get_mut::<udp::Socket>(h)),
            _ => Err(NetError::InvalidInput),
        }
    }

    /// Queues one datagram to `dst`. `WouldBlock` when the queue is full,
    /// `NoBufs` when the datagram can never fit.
    pub fn udp_send_to(&mut self, id: SocketId, data: &[u8], dst: SocketAddrV4) -> Result<usize> {
        if dst.ip().is_unspecified() || dst.port() == 0 {
            return Err(NetError::InvalidInput);
        }
        if self.cidr().is_none() {
            return Err(NetError::AddrNotAvailable);
        }
        let s = self.udp_mut(id)?;
        if data.len() > s.payload_send_capacity() || data.len() > usize::from(u16::MAX) - 28 {
            return Err(NetError::NoBufs);
        }
        s.send_slice(
            data,
            IpEndpoint::new(IpAddress::Ipv4(*dst.ip()), dst.port()),
        )
        .map_err(|e| match e {
            udp::SendError::BufferFull => NetError::WouldBlock,
            udp::SendError::Unaddressable => NetError::InvalidInput,
        })?;
        self.copy.app_to_socket += data.len() as u64;
        self.mark_dirty(id);
        Ok(data.len())
    }

    /// Takes one datagram (truncated to `buf`). `WouldBlock` when none is queued.
    pub fn udp_recv_from(&mut self, id: SocketId, buf: &mut [u8]) -> Result<(usize, SocketAddrV4)> {
        let s = self.udp_mut(id)?;
        let (data, meta) = s.recv().map_err(|_| NetError::WouldBlock)?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        let from = v4(meta.endpoint);
        self.copy.socket_to_app += n as u64;
        Ok((n, from))
    }

    // ----- addresses & readiness -------------------------------------------

    /// The socket's local address.
    pub fn local_addr(&self, id: SocketId) -> Result<SocketAddrV4> {
        let e = self.entry(id)?;
        let ours = self.cidr().map_or(Ipv4Addr::UNSPECIFIED, |c| c.address());
        match &e.kind {
            Kind::Tcp(c) => match (c.key, e.handle) {
                (Some(k), _) => Ok(SocketAddrV4::new(k.local_addr, k.local_port)),
                (None, Some(h)) => e
                    .set
                    .get::<tcp::Socket>(h)
                    .local_endpoint()
                    .map(v4)
                    .ok_or(NetError::NotConnected),
                _ => Err(NetError::NotConnected),
            },
            Kind::Listener(l) => Ok(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, l.port)),
            Kind::Udp { port } => Ok(SocketAddrV4::new(ours, *port)),
        }
    }

    /// The connected peer's address.
    pub fn peer_addr(&self, id: SocketId) -> Result<SocketAddrV4> {
        let e = self.entry(id)?;
        match (&e.kind, e.handle) {
            (Kind::Tcp(Conn { key: Some(k), .. }), _) => {
                Ok(SocketAddrV4::new(k.remote_addr, k.remote_port))
            }
            (Kind::Tcp(_), Some(h)) => e
                .set
                .get::<tcp::Socket>(h)
                .remote_endpoint()
                .map(v4)
                .ok_or(NetError::NotConnected),
            _ => Err(NetError::NotConnected),
        }
    }

    /// A counter that grows whenever something arrives for socket `id`
    /// (data, FIN, reset; for a listener: anything for a pending
    /// connection). Readiness that changes without it (our own sends and
    /// acknowledgements) is not a new input event: `EPOLLET` users rely on it.
    pub fn rx_generation(&self, id: SocketId) -> u64 {
        self.entry(id).map_or(0, |e| e.rx_gen)
    }

    fn bump_rx_gen(&mut self, id: SocketId) {
        let parent = match self.entry_mut(id) {
            Ok(e) => {
                e.rx_gen += 1;
                match &e.kind {
                    Kind::Tcp(c) => c.parent,
                    _ => None,
                }
            }
            Err(_) => None,
        };
        if let Some(p) = parent
            && let Ok(e) = self.entry_mut(p)
        {
            e.rx_gen += 1;
        }
    }

    /// Readiness as Linux epoll bits ([`EPOLLIN`], [`EPOLLOUT`],
    /// [`EPOLLERR`], [`EPOLLHUP`], [`EPOLLRDHUP`]); 0 for an unknown id.
    pub fn readiness(&self, id: SocketId) -> u32 {
        let Ok(e) = self.entry(id) else { return 0 };
        match (&e.kind, e.handle) {
            (Kind::Listener(l), _) => {
                let ready = l.pending.iter().any(|&p| {
                    matches!(self.entry(p), Ok(Entry { kind: Kind::Tcp(c), .. }) if c.established)
                });
                if ready { EPOLLIN } else { 0 }
            }
            (Kind::Tcp(c), Some(h)) => {
                let s = e.set.get::<tcp::Socket>(h);
                let st = s.state();
                let mut r = 0;
                if s.can_recv() {
                    r |= EPOLLIN;
                }
                let peer_closed = c.fin_seen || c.broken;
                if peer_closed {
                    r |= EPOLLIN | EPOLLRDHUP;
                }
                if s.can_send() && !c.shut_wr {
                    r |= EPOLLOUT;
                }
                if c.error.is_some() {
                    r |= EPOLLERR;
                }
                let write_closed = c.shut_wr
                    || !matches!(
                        st,
                        tcp::State::SynSent
                            | tcp::State::SynReceived
                            | tcp::State::Established
                            | tcp::State::CloseWait
                    );
                if c.broken || (peer_closed && write_closed) || st == tcp::State::Closed {
                    r |= EPOLLHUP;
                }
                r
            }
            (Kind::Udp { .. }, Some(h)) => {
                let s = e.set.get::<udp::Socket>(h);
                let mut r = 0;
                if s.can_recv() {
                    r |= EPOLLIN;
                }
                if s.can_send() {
                    r |= EPOLLOUT;
                }
                r
            }
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Keep,
    /// Became established (a listener has something to accept).
    Notify,
    /// Reached CLOSED just now.
    Closed,
    /// Closed by the application and now in TIME-WAIT: the socket and its
    /// buffers go, a compact record takes its place.
    TimeWait,
}

/// Observes the smoltcp state after a visit and keeps `Conn` in step.
fn update_conn(c: &mut Conn, s: &mut tcp::Socket, now_ms: u64, opts: &StackOptions) -> Outcome {
    use tcp::State as S;
    let mut st = s.state();
    let prev = c.last_state;
    let mut out = Outcome::Keep;
    if st == S::Listen {
        // smoltcp sends a half-open socket back to LISTEN on RST; it is ours no more.
        s.abort();
        st = S::Closed;
    }
    if !c.established
        && matches!(
            st,
            S::Established
                | S::FinWait1
                | S::FinWait2
                | S::CloseWait
                | S::Closing
                | S::LastAck
                | S::TimeWait
        )
    {
        c.established = true;
        s.set_timeout(opts.user_timeout_ms.map(Duration::from_millis));
        out = Outcome::Notify;
    }
    if matches!(st, S::CloseWait | S::LastAck | S::Closing | S::TimeWait) {
        c.fin_seen = true;
    }
    if st == S::Closed && prev != S::Closed {
        let graceful = c.fin_seen && matches!(prev, S::LastAck | S::TimeWait | S::Closing);
        if !graceful && !c.orphan {
            c.broken = true;
            let err = if !c.established {
                if now_ms.saturating_sub(c.started_ms) + 1 >= opts.connect_timeout_ms {
                    NetError::TimedOut
                } else {
                    NetError::ConnRefused
                }
            } else if opts
                .user_timeout_ms
                .is_some_and(|t| now_ms.saturating_sub(c.last_rx_ms) + 1 >= t)
            {
                NetError::TimedOut
            } else {
                NetError::ConnReset
            };
            c.error = Some(err);
        }
        out = Outcome::Closed;
    }
    if c.orphan {
        // Nobody will read: discard so the window stays open and the peer can finish.
        while s.can_recv() {
            if s.recv(|b| (b.len(), ())).is_err() {
                break;
            }
        }
        if st == S::TimeWait && out != Outcome::Closed {
            // The ACK of the peer's FIN left in this visit's egress (or, if
            // the ring was full, the record answers the retransmitted FIN).
            c.last_state = st;
            return Outcome::TimeWait;
        }
        if st == S::FinWait2 {
            let d = *c
                .deadline
                .get_or_insert(now_ms.saturating_add(opts.fin_wait2_timeout_ms));
            if now_ms >= d {
                s.abort();
                st = S::Closed;
                out = Outcome::Closed;
            }
        }
    }
    c.last_state = st;
    out
}
