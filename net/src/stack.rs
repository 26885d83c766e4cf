//! [`NetStack`]: one smoltcp `Interface` for ARP, IPv4, ICMP, DHCP and UDP,
//! one `uk_tcp::Endpoint` for every TCP connection, and the table that
//! routes each frame to the one that handles it.
//!
//! # Frames
//! A received frame is classified once ([`crate::classify`]), which also
//! verifies its checksums. ARP, ICMP and DHCP go to smoltcp's interface with
//! a small "control" socket set; UDP goes to its port's one-socket
//! `SocketSet` (`Interface::poll_ingress_single` against that set only).
//! TCP never reaches smoltcp: the IP addresses and the TCP segment go to
//! [`uk_tcp::Endpoint::on_segment_unchecked`], which dispatches by 4-tuple
//! to a connection, the TIME-WAIT table, a listener (SYN cookies under a
//! flood) or a RST. Per-frame work is independent of the number of open
//! sockets; [`StackStats::socket_visits`] counts it.
//!
//! # TCP egress
//! [`uk_tcp::Endpoint::poll`] hands out segments (a TCP header plus
//! references to payload). For each, the stack finds the next hop (the
//! destination when on-link, else the gateway) in its own neighbour table
//! (fed by ARP frames addressed to us and by TCP frames from on-link
//! hosts; an unknown neighbour gets an ARP request and its segments wait,
//! a bounded number of them) and writes Ethernet, IPv4 and TCP headers. A
//! scatter-gather NIC takes the headers and the payload fragments by
//! reference ([`Nic::transmit_sg`]: no CPU copy); otherwise headers and
//! payload are copied into the device's transmit buffer ([`Nic::transmit`],
//! or [`Nic::transmit_tso`] for a segment longer than the MSS on a device
//! with segmentation offload; without it the endpoint never builds one
//! longer than the MSS, and [`uk_tcp::Segment::split`] cuts any that is),
//! counted as socket → device. A full transmit ring keeps
//! segments in a bounded queue until the next poll.
//!
//! # Listen backlog and admission
//! The endpoint bounds each listener's accept queue (`backlog`: further SYNs
//! are dropped and retransmitted by the client, counted in
//! [`StackStats::listen_overflows`]) and its half-open connections
//! (`uk_tcp::Config::syn_backlog`; beyond it SYNs are answered with SYN
//! cookies and no state is kept). [`StackOptions::buffer_budget`] is an
//! admission limit on the bytes the TCP engine holds (see there).

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::mem;
use core::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use hashbrown::HashMap;
use smoltcp::iface::{Config, Interface, PollResult as SmolPoll, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, icmp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint,
    Ipv4Cidr, Ipv4Packet,
};
use uk_tcp::{ConnId, Endpoint, Event, Payload, Segment, State};

use crate::classify::{Class, FourTuple, Us, classify};
use crate::error::{NetError, Result};
use crate::nic::{DropReason, ETH_HEADER_LEN, FrameDevice, Nic, NicCounters, TxInfo};
use crate::payload::TcpPayload;
use uk_core::copy::{CopyCounters, CopyStats, Stage};
use uk_core::pairs::PairSet;

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
pub(crate) const EPHEMERAL_FIRST: u16 = 49152;
/// Bound on egress passes per socket visit (each pass emits at most one frame).
const MAX_EGRESS_PASSES: usize = 4096;
/// TCP segments kept while the transmit ring is full.
const MAX_TX_QUEUE: usize = 4096;
/// Payload bytes the TCP engine may have in the transmit queue
/// ([`uk_tcp::Config::tx_queue_limit`]): a few milliseconds of the device's
/// rate, so a segment waits far less than a retransmission timeout; beyond
/// it connections take turns instead of queueing (and being dropped).
const TX_QUEUE_BYTES: usize = 2 << 20;
/// TCP segments kept while their next hop's MAC address is being resolved.
const MAX_ARP_PENDING: usize = 256;
/// Neighbour-table entries (oldest forgotten beyond).
const MAX_NEIGHBORS: usize = 1024;
/// The TCP engine's memory is measured (a walk over its connections) when
/// a new connection asks for admission and the last measurement is older
/// than this, for [`StackOptions::buffer_budget`].
const BUDGET_MEASURE_MS: u64 = 100;
/// What each SYN admitted since the last measurement is assumed to cost.
const SYN_ESTIMATE_BYTES: usize = 1024;
/// The largest TCP header (with options).
const MAX_TCP_HEADER: usize = 60;
const IPV4_HEADER_LEN: usize = 20;

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
    /// No address until [`NetStack::set_config`] gives one (a shard that
    /// follows another's DHCP lease).
    Unconfigured,
}

/// A socket's send queue: `(queued, limit)`, the bytes in it and the bytes
/// it may hold now: its `tx_buffer`, or twice its connection's window (what
/// can be in flight over the next round trips) when that is more, at most
/// its `tx_buffer_max`.
fn send_queue(tcp: &Endpoint<TcpPayload>, conn: ConnId, tx: (usize, usize)) -> (usize, usize) {
    let (queued, window) = tcp
        .get(conn)
        .map_or((0, 0), |c| (c.send_queued(), c.window()));
    (queued, tx.0.max(window.saturating_mul(2).min(tx.1)))
}

/// Per-socket TCP options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// Receive window. Only [`StackOptions::tcp`]'s value is used: it is
    /// the TCP engine's receive window for every connection (at least
    /// 8 KiB). Memory is used only for data that actually arrives.
    pub rx_buffer: usize,
    /// Most bytes queued for sending on one connection (`EPOLLOUT` and
    /// `WouldBlock` follow it) while its window is small.
    pub tx_buffer: usize,
    /// The send queue grows with the connection's window (twice the smaller
    /// of the congestion and the peer's window) up to this: a bulk transfer
    /// keeps the next round trip's data ready as its window opens, and a
    /// slow or idle connection keeps `tx_buffer` (send-buffer autotuning,
    /// as Linux's). At most `tx_buffer` means no growth (an explicit buffer
    /// size, as `SO_SNDBUF` turns Linux's autotuning off).
    pub tx_buffer_max: usize,
    /// Disable Nagle's algorithm (`TCP_NODELAY`).
    pub nodelay: bool,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            rx_buffer: 64 * 1024,
            tx_buffer: 64 * 1024,
            tx_buffer_max: 64 * 1024,
            nodelay: false,
        }
    }
}

/// Stack-wide tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackOptions {
    /// Seed for smoltcp's PRNG (DHCP xids) and for the TCP engine's secret
    /// (initial sequence numbers, ephemeral ports, SYN cookies, hashing).
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
    /// A connection attempt is abandoned after about this long: the SYN is
    /// retransmitted (1 s, 2 s, 4 s, ...) as many times as fit (at least once).
    pub connect_timeout_ms: u64,
    /// Not used by the TCP engine (it gives up after a bounded number of
    /// retransmissions, `uk_tcp::Config::max_retries`); kept for API
    /// compatibility.
    pub user_timeout_ms: Option<u64>,
    /// A closed (orphaned) connection left in FIN-WAIT-2 is dropped after this long.
    pub fin_wait2_timeout_ms: u64,
    /// Interval between ARP requests for the gateway until it answers.
    pub arp_retry_ms: u64,
    /// Admission control: bytes the TCP engine may hold (connection
    /// control blocks, received data not yet read, send queues, the
    /// TIME-WAIT table), measured when a new connection asks for admission (at most every 100 ms). While it is
    /// passed, new SYNs are dropped before they reach the engine (counted
    /// in [`StackStats::budget_refusals`]) and `tcp_connect` fails with
    /// `NoBufs`; established connections keep going. Each connection's own
    /// memory is bounded by the receive window plus its `tx_buffer`.
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
    /// not after `now_ms` means "as soon as possible" (more frames pending).
    pub next_poll_ms: Option<u64>,
    /// The IP configuration or [`NetStack::is_ready`] changed.
    pub config_changed: bool,
}

/// Work and memory counters of the socket table and the TCP engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Sockets (TCP segments handed to the engine, UDP and control socket
    /// sets handed to smoltcp) visited, summed: grows by a small constant
    /// per frame, whatever the number of open sockets.
    pub socket_visits: u64,
    /// Frames given to smoltcp or to the TCP engine (after classification).
    pub frames_dispatched: u64,
    /// SYNs (and cookie ACKs) dropped because a listener's accept queue was
    /// full or the engine's connection limit was reached.
    pub listen_overflows: u64,
    /// Connections handed out by `tcp_accept`.
    pub accepted: u64,
    /// SYNs dropped (and connects refused) because the TCP engine's memory
    /// passed [`StackOptions::buffer_budget`].
    pub budget_refusals: u64,
    /// Bytes the TCP engine holds now: connections (control blocks and
    /// queues) and the TIME-WAIT table.
    pub buffer_bytes: usize,
    /// The budget for [`StackStats::buffer_bytes`].
    pub buffer_budget: usize,
    /// TCP connections (any state but TIME-WAIT; not listeners).
    pub tcp_connections: usize,
    /// Bytes those connections hold (control blocks and queues).
    pub tcp_connection_bytes: usize,
    /// Payload bytes queued for sending, over all connections.
    pub tcp_send_queued: usize,
    /// Received bytes not yet read, over all connections.
    pub tcp_recv_queued: usize,
    /// Compact TIME-WAIT records held now.
    pub time_wait: usize,
    /// Bytes the TIME-WAIT table holds (records, hash table, expiry queue).
    pub time_wait_bytes: usize,
    /// TIME-WAIT records recycled before their time (table full).
    pub time_wait_recycled: u64,
    /// TIME-WAIT records reopened by a new SYN.
    pub time_wait_reopened: u64,
    /// SYN-ACKs sent as SYN cookies (half-open queue full).
    pub syn_cookies_sent: u64,
    /// Connections created from a valid SYN cookie.
    pub syn_cookies_accepted: u64,
    /// ACKs to a listener with an invalid cookie.
    pub syn_cookies_rejected: u64,
    /// RSTs sent for segments that matched nothing.
    pub tcp_resets_sent: u64,
    /// Connections that ended with an error.
    pub tcp_failed: u64,
    /// TCP segments sent (before device segmentation).
    pub tcp_segments_out: u64,
    /// TCP segments dropped: no route, unresolved neighbour queue full, or
    /// transmit queue full (the engine retransmits them).
    pub tcp_segments_dropped: u64,
}

impl StackStats {
    /// Average bytes per TCP connection (0 without connections).
    pub fn bytes_per_connection(&self) -> usize {
        self.tcp_connection_bytes
            .checked_div(self.tcp_connections)
            .unwrap_or(0)
    }

    /// Average bytes per TIME-WAIT record, table overhead included (0
    /// without records).
    pub fn time_wait_bytes_per_record(&self) -> usize {
        self.time_wait_bytes
            .checked_div(self.time_wait)
            .unwrap_or(0)
    }
}

/// Bytes of one TIME-WAIT record itself (the table's slack comes on top:
/// see [`StackStats::time_wait_bytes_per_record`]).
pub const TIME_WAIT_RECORD_BYTES: usize = mem::size_of::<uk_tcp::timewait::TimeWaitRecord>();

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

/// A TCP connection the application holds.
struct TcpSock {
    conn: ConnId,
    key: FourTuple,
    /// `tx_buffer` and `tx_buffer_max` of its options.
    tx: (usize, usize),
    shut_wr: bool,
    /// The connection's error was returned once (then EOF / EPIPE).
    error_taken: bool,
}

struct Listener {
    port: u16,
    opts: SocketOptions,
}

enum Kind {
    Tcp(TcpSock),
    Listener(Listener),
    Udp {
        port: u16,
        set: SocketSet<'static>,
        handle: SocketHandle,
    },
}

struct Entry {
    kind: Kind,
    /// Scheduled deadline in `timers` (UDP).
    poll_at: Option<u64>,
    dirty: bool,
    /// Bumped whenever a frame is delivered to this socket (or, for a
    /// listener, for one of its not yet accepted connections): lets the
    /// epoll layer tell a new arrival from an unrelated state change.
    rx_gen: u64,
    /// The last poll that reported this socket's readiness as changed.
    changed_in: u64,
}

/// A segment waiting for the device or for its next hop's MAC address.
struct Pending {
    seg: Segment<TcpPayload>,
    next_hop: Ipv4Addr,
    /// Transmit budget to give back to the engine when the segment leaves
    /// the queue ([`uk_tcp::Config::tx_queue_limit`]): its payload, or 0
    /// once given back (a segment that waits for ARP holds none).
    held: usize,
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
    tcp: Endpoint<TcpPayload>,
    /// Connections the application holds, by engine handle and by 4-tuple.
    tcp_by_conn: HashMap<u64, SocketId>,
    tcp_by_key: HashMap<FourTuple, SocketId>,
    tcp_listeners: HashMap<u64, SocketId>,
    udp_ports: HashMap<u64, SocketId>,
    next_tcp_port: u16,
    next_udp_port: u16,
    timers: PairSet,
    dirty: Vec<SocketId>,
    control: SocketSet<'static>,
    control_dirty: bool,
    control_poll_at: Option<u64>,
    dhcp: Option<SocketHandle>,
    icmp: SocketHandle,
    gateway: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    gateway_resolved: bool,
    arp_probe_at: Option<u64>,
    config_changed: bool,
    counters: NicCounters,
    stats: StackStats,
    /// Payload the stack copies (application → socket, socket → device).
    copies: CopyCounters,
    scratch: Vec<u8>,
    /// IPv4 → MAC of on-link neighbours (our own table: smoltcp's cache is
    /// private to its interface).
    neighbors: HashMap<Ipv4Addr, u64>,
    neighbor_order: VecDeque<Ipv4Addr>,
    /// ARP requests sent (next hop → when), rate-limited per address.
    arp_asked: HashMap<Ipv4Addr, u64>,
    arp_pending: Vec<Pending>,
    txq: VecDeque<Pending>,
    segs: Vec<Segment<TcpPayload>>,
    events: Vec<Event>,
    /// Sockets whose send queue was full at their last send: the engine
    /// reports writability against its own limit, so these are checked
    /// after every poll and reported once they can take data again.
    send_blocked: Vec<SocketId>,
    /// Polls so far (marks which sockets a poll already reported).
    polls: u64,
    /// Sockets a segment arrived for, or the application used, since the
    /// last poll: reported as changed even when the engine saw no change
    /// (a new arrival is an edge for `EPOLLET`, see
    /// [`NetStack::rx_generation`]; a send that filled the queue cleared
    /// `EPOLLOUT`, which epoll must learn to see it rise again).
    rx_touched: Vec<SocketId>,
    /// A socket list given back by the caller ([`NetStack::recycle`]), so
    /// that the lists `poll` and `take_touched` return keep their memory
    /// (each poll grew a fresh one from nothing).
    spare: Vec<SocketId>,
    /// Last measured TCP engine memory, when, and SYNs admitted since.
    tcp_bytes: usize,
    tcp_bytes_at: Option<u64>,
    syns_since_measure: usize,
    ip_ident: u16,
}

fn instant(ms: u64) -> Instant {
    Instant::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn to_ms(i: Instant) -> u64 {
    u64::try_from(i.total_millis()).unwrap_or(0)
}

fn v4(ep: IpEndpoint) -> SocketAddrV4 {
    // smoltcp is built with IPv4 only.
    let IpAddress::Ipv4(a) = ep.addr;
    SocketAddrV4::new(a, ep.port)
}

fn ip4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

fn one_set() -> SocketSet<'static> {
    SocketSet::new(Vec::with_capacity(1))
}

/// The engine's errors as errno-shaped ones.
fn net_error(e: uk_tcp::Error) -> NetError {
    match e {
        uk_tcp::Error::WouldBlock => NetError::WouldBlock,
        uk_tcp::Error::Closed | uk_tcp::Error::Aborted => NetError::BrokenPipe,
        uk_tcp::Error::Reset => NetError::ConnReset,
        uk_tcp::Error::Refused => NetError::ConnRefused,
        uk_tcp::Error::TimedOut => NetError::TimedOut,
        uk_tcp::Error::AddrInUse => NetError::AddrInUse,
        uk_tcp::Error::InvalidInput => NetError::InvalidInput,
        uk_tcp::Error::NoMemory => NetError::NoBufs,
    }
}

/// The engine's secret, from the stack's seed (the kernel seeds it from
/// the time-stamp counter).
fn tcp_secret(seed: u64) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..].copy_from_slice(&(seed ^ 0x9e37_79b9_7f4a_7c15).rotate_left(29).to_le_bytes());
    s
}

/// SYN retransmissions (1 s, 2 s, 4 s, ...) that fit in `timeout_ms`.
fn syn_retries_for(timeout_ms: u64) -> u32 {
    let mut n = 1;
    while n < 10 && ((1u64 << (n + 2)) - 1) * 1000 <= timeout_ms {
        n += 1;
    }
    n
}

/// The TCP engine's configuration for a device with IP MTU `mtu` and
/// largest segmentable frame `tso`.
fn tcp_config(opts: &StackOptions, mtu: usize, tso: Option<usize>) -> uk_tcp::Config {
    let mss = (mtu.saturating_sub(IPV4_HEADER_LEN + 20)).clamp(536, 65_000) as u16;
    let max_segment = match tso {
        Some(max) => {
            let room = max
                .min(ETH_HEADER_LEN + 65_535)
                .saturating_sub(ETH_HEADER_LEN + IPV4_HEADER_LEN + MAX_TCP_HEADER);
            (room as u32).clamp(u32::from(mss), 65_160)
        }
        None => u32::from(mss),
    };
    let d = uk_tcp::Config::default();
    uk_tcp::Config {
        mss,
        max_segment,
        recv_window: opts.tcp.rx_buffer.clamp(8 * 1024, 1 << 30) as u32,
        // Each socket's `tx_buffer` is enforced by the stack; this is a
        // backstop.
        send_buffer: 16 << 20,
        tx_queue_limit: TX_QUEUE_BYTES,
        nodelay: true,
        syn_retries: syn_retries_for(opts.connect_timeout_ms),
        orphan_fin_wait2_timeout: opts.fin_wait2_timeout_ms.saturating_mul(1000),
        time_wait: opts.time_wait_ms.saturating_mul(1000),
        time_wait_capacity: opts.max_time_wait.max(1),
        ..d
    }
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
        let tso = nic
            .tso_max_frame()
            .filter(|&max| nic.tx_checksum_offload() && max > mtu + ETH_HEADER_LEN);
        let tcp = Endpoint::new(tcp_config(&opts, mtu, tso), tcp_secret(opts.random_seed));
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
            tcp,
            tcp_by_conn: HashMap::new(),
            tcp_by_key: HashMap::new(),
            tcp_listeners: HashMap::new(),
            udp_ports: HashMap::new(),
            next_tcp_port: EPHEMERAL_FIRST,
            next_udp_port: EPHEMERAL_FIRST,
            timers: PairSet::new(),
            dirty: Vec::new(),
            control,
            control_dirty: true,
            control_poll_at: None,
            dhcp: None,
            icmp,
            gateway: None,
            dns: Vec::new(),
            gateway_resolved: false,
            arp_probe_at: None,
            config_changed: false,
            counters,
            stats: StackStats::default(),
            copies: CopyCounters::new(),
            scratch,
            neighbors: HashMap::new(),
            neighbor_order: VecDeque::new(),
            arp_asked: HashMap::new(),
            arp_pending: Vec::new(),
            txq: VecDeque::new(),
            segs: Vec::new(),
            events: Vec::new(),
            send_blocked: Vec::new(),
            polls: 0,
            rx_touched: Vec::new(),
            spare: Vec::new(),
            tcp_bytes: 0,
            tcp_bytes_at: None,
            syns_since_measure: 0,
            ip_ident: 0,
        };
        match ip {
            NetConfig::Dhcp => {
                stack.dhcp = Some(stack.control.add(dhcpv4::Socket::new()));
            }
            NetConfig::Static { addr, gateway } => stack.set_ip(addr, gateway, Vec::new()),
            NetConfig::Unconfigured => {}
        }
        stack
    }

    /// Sets the address, gateway and DNS servers (`None` removes the
    /// address), as another shard's DHCP lease gives them. A stack running
    /// its own DHCP client is not meant to be configured this way.
    pub fn set_config(&mut self, info: Option<&IpInfo>) {
        match info {
            Some(i) => self.set_ip(i.addr, i.gateway, i.dns.clone()),
            None => self.clear_ip(),
        }
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
        self.gateway_resolved = gateway.is_some_and(|g| self.neighbors.contains_key(&g));
        self.arp_probe_at = gateway
            .filter(|_| !self.gateway_resolved)
            .map(|_| self.now_ms);
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
        self.iface.ip_addrs().first().map(|&IpCidr::Ipv4(c)| c)
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

    /// Socket-table and TCP engine counters. Walks every TCP connection
    /// (for the memory figures): for `STATS`, not for every packet.
    pub fn stats(&self) -> StackStats {
        let mut s = self.stats;
        let t = self.tcp.stats();
        s.buffer_budget = self.opts.buffer_budget;
        let tw = t.state(State::TimeWait);
        s.time_wait = tw.count;
        s.time_wait_bytes = tw.bytes;
        s.tcp_connections = 0;
        s.tcp_connection_bytes = 0;
        for st in State::ALL {
            if matches!(st, State::TimeWait | State::Listen) {
                continue;
            }
            let x = t.state(st);
            s.tcp_connections += x.count;
            s.tcp_connection_bytes += x.bytes;
        }
        s.tcp_send_queued = t.send_queued;
        s.tcp_recv_queued = t.recv_queued;
        s.buffer_bytes = s.tcp_connection_bytes + s.time_wait_bytes;
        let c = t.counters;
        s.listen_overflows = c.listen_overflows;
        s.syn_cookies_sent = c.syn_cookies_sent;
        s.syn_cookies_accepted = c.syn_cookies_accepted;
        s.syn_cookies_rejected = c.syn_cookies_rejected;
        s.tcp_resets_sent = c.resets_sent;
        s.tcp_failed = c.failed;
        s.time_wait_recycled = t.time_wait_recycled;
        s.time_wait_reopened = c.time_wait_reopened;
        s
    }

    /// Average bytes per TCP connection now (control block and queues; an
    /// idle connection holds no buffers). Walks every connection.
    pub fn tcp_bytes_per_connection(&self) -> usize {
        self.stats().bytes_per_connection()
    }

    /// Bytes one TCP connection holds, by socket id (0 for other sockets).
    pub fn tcp_connection_bytes(&self, id: SocketId) -> usize {
        match self.entry(id) {
            Ok(Entry {
                kind: Kind::Tcp(t), ..
            }) => self.tcp.memory_bytes(t.conn),
            _ => 0,
        }
    }

    /// The TCP engine (read-only: state, per-connection statistics).
    pub fn tcp_engine(&self) -> &Endpoint<TcpPayload> {
        &self.tcp
    }

    /// Payload bytes copied by the CPU, per stage: application → socket and
    /// socket → device (counted by [`CopyCounters::copy`] where the stack
    /// copies), device → socket and socket → application (counted by the
    /// TCP engine's receive queues where they copy). Walks every connection.
    pub fn copy_stats(&self) -> CopyStats {
        let mut s = self.copies.snapshot();
        let c = self.tcp.stats().counters;
        s.0[Stage::DeviceToSocket as usize] += c.bytes_copied_in;
        s.0[Stage::SocketToApp as usize] += c.bytes_copied_out;
        s
    }

    /// Number of live sockets the application holds (connections the TCP
    /// engine finishes closing on its own, and TIME-WAIT records, not
    /// included).
    pub fn socket_count(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// True when socket calls queued work that only `poll` performs (send
    /// data, window updates, FIN): the kernel should call `poll` soon.
    pub fn needs_poll(&self) -> bool {
        self.needs_output() || !self.rx_touched.is_empty()
    }

    /// True when socket calls queued output (send data, window updates,
    /// FIN, UDP or control work): [`NetStack::needs_poll`] less the
    /// sockets whose readiness only needs reporting.
    pub fn needs_output(&self) -> bool {
        !self.dirty.is_empty()
            || self.control_dirty
            || self
                .tcp
                .next_deadline()
                .is_some_and(|t| t <= self.now_ms.saturating_mul(1000))
    }

    /// The sockets the application moved data through since the last poll,
    /// for a caller that has no output to send ([`NetStack::needs_output`]
    /// false) and only has to report their readiness: what `poll` would
    /// report for them, without receiving or transmitting anything.
    /// Give the list back with [`NetStack::recycle`] to keep its memory.
    pub fn take_touched(&mut self) -> Vec<SocketId> {
        let spare = mem::take(&mut self.spare);
        let mut touched = mem::replace(&mut self.rx_touched, spare);
        self.polls += 1;
        let this_poll = self.polls;
        touched.retain(|id| match self.slots.get_mut(id.0 as usize) {
            Some(Some(e)) => core::mem::replace(&mut e.changed_in, this_poll) != this_poll,
            _ => false,
        });
        touched
    }

    /// Takes back a list [`NetStack::poll`] or [`NetStack::take_touched`]
    /// returned, for the next one (its memory is kept, its contents
    /// dropped).
    pub fn recycle(&mut self, mut list: Vec<SocketId>) {
        list.clear();
        if list.capacity() > self.spare.capacity() {
            self.spare = list;
        }
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

    fn new_entry(kind: Kind) -> Entry {
        Entry {
            kind,
            poll_at: None,
            dirty: false,
            rx_gen: 0,
            changed_in: 0,
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
            self.timers.remove(&(t, u64::from(id.0)));
        }
        if !self.send_blocked.is_empty() {
            self.send_blocked.retain(|&x| x != id);
        }
        match e.kind {
            Kind::Tcp(t) => {
                self.tcp_by_conn.remove(&t.conn.as_u64());
                if self.tcp_by_key.get(&t.key) == Some(&id) {
                    self.tcp_by_key.remove(&t.key);
                }
            }
            Kind::Listener(l) => {
                self.tcp_listeners.remove(&u64::from(l.port));
            }
            Kind::Udp { port, .. } => {
                self.udp_ports.remove(&u64::from(port));
            }
        }
        self.free.push(id.0);
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
            self.timers.remove(&(t, u64::from(id.0)));
        }
        e.poll_at = at;
        if let Some(t) = at {
            self.timers.insert((t, u64::from(id.0)));
        }
    }

    fn now_us(&self) -> u64 {
        self.now_ms.saturating_mul(1000)
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
        match &mut self.slots.get_mut(id.0 as usize)?.as_mut()?.kind {
            Kind::Udp { set, .. } => Some(mem::replace(set, SocketSet::new(Vec::new()))),
            _ => None,
        }
    }

    fn put_set(&mut self, id: SocketId, new: SocketSet<'static>) {
        if let Some(Some(Entry {
            kind: Kind::Udp { set, .. },
            ..
        })) = self.slots.get_mut(id.0 as usize)
        {
            *set = new;
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

        while let Some((t, raw)) = self.timers.first() {
            if t > now_ms {
                break;
            }
            self.timers.pop_first();
            let raw = raw as u32;
            if let Some(Some(e)) = self.slots.get_mut(raw as usize) {
                e.poll_at = None;
            }
            self.mark_dirty(SocketId(raw));
        }

        let mut changed = mem::take(&mut self.spare);
        let dirty = mem::take(&mut self.dirty);
        for id in dirty {
            self.service_udp(nic, id, now, &mut changed);
        }

        let control_due = self.control_poll_at.is_some_and(|t| t <= now_ms);
        if self.control_dirty || control_due {
            self.service_control(nic, now);
        }
        self.probe_gateway(nic);

        self.tcp_egress(nic);
        self.tcp_events(&mut changed);

        // Every poll, not only those that transmitted: besides notifying the
        // device of new frames, this is where the driver takes back transmit
        // buffers the device has finished with. A poll whose every transmit
        // was refused (ring full) is exactly the one that must reclaim, or the
        // ring stays full for good.
        nic.flush_tx();

        // Each socket once (marked with this poll's number: no sort).
        self.polls += 1;
        let this_poll = self.polls;
        changed.retain(|id| match self.slots.get_mut(id.0 as usize) {
            Some(Some(e)) => core::mem::replace(&mut e.changed_in, this_poll) != this_poll,
            _ => true,
        });
        let mut next = self.timers.first().map(|(t, _)| t);
        let tcp_next = self.tcp.next_deadline().map(|us| us.div_ceil(1000));
        let txq_next = (!self.txq.is_empty()).then_some(now_ms + 1);
        for t in [self.control_poll_at, self.arp_probe_at, tcp_next, txq_next]
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
                let mac = EthernetFrame::new_unchecked(frame).src_addr();
                if let Ok(pkt) = ArpPacket::new_checked(&frame[ETH_HEADER_LEN..])
                    && let Ok(ArpRepr::EthernetIpv4 {
                        source_hardware_addr,
                        ..
                    }) = ArpRepr::parse(&pkt)
                {
                    self.learn_neighbor(sender, source_hardware_addr);
                } else {
                    self.learn_neighbor(sender, mac);
                }
                if Some(sender) == self.gateway && !self.gateway_resolved {
                    self.gateway_resolved = true;
                    self.arp_probe_at = None;
                    self.config_changed = true;
                }
                self.feed_control(nic, frame, now);
            }
            Class::Control => self.feed_control(nic, frame, now),
            Class::Udp { dst_port } => {
                if dst_port == DHCP_CLIENT_PORT && self.dhcp.is_some() {
                    self.feed_control(nic, frame, now);
                } else if let Some(&id) = self.udp_ports.get(&u64::from(dst_port)) {
                    self.feed_udp(nic, id, frame, now);
                } else if us.addr.is_none() {
                    self.counters.rx_dropped.count(DropReason::NotForUs);
                } else {
                    // smoltcp answers with ICMP port unreachable.
                    let mut set = SocketSet::new(Vec::new());
                    self.feed(nic, &mut set, frame, now);
                }
            }
            Class::Tcp { key, syn_only } => self.ingress_tcp(frame, key, syn_only, us.addr),
        }
    }

    /// Hands a TCP segment (checksums verified by the classifier) to the
    /// engine.
    fn ingress_tcp(
        &mut self,
        frame: &[u8],
        key: FourTuple,
        syn_only: bool,
        cidr: Option<Ipv4Cidr>,
    ) {
        let Some(ip) = frame.get(ETH_HEADER_LEN..) else {
            return;
        };
        let ip = Ipv4Packet::new_unchecked(ip);
        let (ihl, total) = (usize::from(ip.header_len()), usize::from(ip.total_len()));
        let Some(seg) = frame.get(ETH_HEADER_LEN + ihl..ETH_HEADER_LEN + total) else {
            return;
        };
        let sid = self.tcp_by_key.get(&key).copied();
        if syn_only && sid.is_none() && self.over_budget() {
            self.stats.budget_refusals += 1;
            return;
        }
        if syn_only && sid.is_none() {
            self.syns_since_measure += 1;
        }
        // A host on our link: remember its MAC (replies go straight back).
        if cidr.is_some_and(|c| c.contains_addr(&key.remote_addr)) {
            let src = EthernetFrame::new_unchecked(frame).src_addr();
            if src.is_unicast() {
                self.learn_neighbor(key.remote_addr, src);
            }
        }
        if let Some(id) = sid {
            self.rx_touched.push(id);
        }
        let target = sid.or_else(|| self.tcp_listeners.get(&u64::from(key.local_port)).copied());
        if let Some(id) = target
            && let Ok(e) = self.entry_mut(id)
        {
            e.rx_gen += 1;
        }
        self.stats.socket_visits += 1;
        self.stats.frames_dispatched += 1;
        let now_us = self.now_us();
        let _ = self.tcp.on_segment_unchecked(
            now_us,
            IpAddr::V4(key.remote_addr),
            IpAddr::V4(key.local_addr),
            seg,
        );
    }

    fn feed_control<N: Nic>(&mut self, nic: &mut N, frame: &[u8], now: Instant) {
        let mut set = mem::replace(&mut self.control, SocketSet::new(Vec::new()));
        self.feed(nic, &mut set, frame, now);
        self.control = set;
        self.control_dirty = true;
    }

    fn feed_udp<N: Nic>(&mut self, nic: &mut N, id: SocketId, frame: &[u8], now: Instant) {
        if let Ok(e) = self.entry_mut(id) {
            e.rx_gen += 1;
        }
        let Some(mut set) = self.take_set(id) else {
            return;
        };
        self.feed(nic, &mut set, frame, now);
        self.put_set(id, set);
        self.mark_dirty(id);
    }

    /// Egress and rescheduling for one dirty UDP socket.
    fn service_udp<N: Nic>(
        &mut self,
        nic: &mut N,
        id: SocketId,
        now: Instant,
        changed: &mut Vec<SocketId>,
    ) {
        if let Ok(e) = self.entry_mut(id) {
            e.dirty = false;
        }
        let Some(mut set) = self.take_set(id) else {
            return;
        };
        self.drain(nic, &mut set, now);
        let deadline = self.deadline_of(&set, now);
        self.put_set(id, set);
        changed.push(id);
        self.reschedule(id, deadline);
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
        let (Some(at), Some(gw)) = (self.arp_probe_at, self.gateway) else {
            return;
        };
        if self.gateway_resolved || at > self.now_ms {
            return;
        }
        self.arp_probe_at = Some(self.now_ms + self.opts.arp_retry_ms);
        self.send_arp_request(nic, gw);
    }

    fn send_arp_request<N: Nic>(&mut self, nic: &mut N, target: Ipv4Addr) {
        let Some(cidr) = self.cidr() else { return };
        let repr = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: self.mac,
            source_protocol_addr: cidr.address(),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        let len = ETH_HEADER_LEN + repr.buffer_len();
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

    // ----- TCP egress -------------------------------------------------------

    fn learn_neighbor(&mut self, ip: Ipv4Addr, mac: EthernetAddress) {
        if !mac.is_unicast() || ip.is_unspecified() {
            return;
        }
        if self.neighbors.insert(ip, mac_to_u64(mac)).is_none() {
            self.neighbor_order.push_back(ip);
            while self.neighbor_order.len() > MAX_NEIGHBORS {
                if let Some(old) = self.neighbor_order.pop_front() {
                    self.neighbors.remove(&old);
                }
            }
        }
        self.arp_asked.remove(&ip);
        if self.arp_pending.iter().any(|p| p.next_hop == ip) {
            // Segments that waited for this neighbour go first.
            let (ready, wait): (Vec<Pending>, Vec<Pending>) = mem::take(&mut self.arp_pending)
                .into_iter()
                .partition(|p| p.next_hop == ip);
            self.arp_pending = wait;
            for p in ready.into_iter().rev() {
                self.txq.push_front(p);
            }
        }
    }

    /// The next hop towards `dst`: itself when on-link, else the gateway.
    fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let cidr = self.cidr()?;
        if cidr.contains_addr(&dst) || dst.is_broadcast() {
            Some(dst)
        } else {
            self.gateway
        }
    }

    /// Sends what the TCP engine has to send (and what waited for the ring).
    fn tcp_egress<N: Nic>(&mut self, nic: &mut N) {
        let now_us = self.now_us();
        let tso = nic
            .tso_max_frame()
            .filter(|&max| nic.tx_checksum_offload() && max > self.mtu + ETH_HEADER_LEN);
        let mut segs = mem::take(&mut self.segs);
        // Again while sending freed budget that waiting connections want
        // (each pass queues at most the budget, and the device takes it).
        for _ in 0..4 {
            self.tcp_queue(now_us, tso, &mut segs);
            self.tcp_drain(nic);
            if self.tcp.next_deadline() != Some(0) || !nic.can_transmit() {
                break;
            }
        }
        if segs.capacity() > 1024 {
            segs = Vec::new();
        }
        self.segs = segs;
    }

    /// Moves what the TCP engine has to send into the transmit queue.
    fn tcp_queue(&mut self, now_us: u64, tso: Option<usize>, segs: &mut Vec<Segment<TcpPayload>>) {
        self.tcp.poll(now_us, segs);
        for seg in segs.drain(..) {
            let held = seg.payload_len;
            let Some(hop) = self.next_hop(ip4(seg.remote_ip)) else {
                self.tcp_segment_dropped(held);
                continue;
            };
            if self.txq.len() >= MAX_TX_QUEUE {
                self.tcp_segment_dropped(held);
                continue;
            }
            let frame_len = ETH_HEADER_LEN + IPV4_HEADER_LEN + seg.tcp_len();
            if seg.needs_segmentation() && tso.is_none_or(|max| frame_len > max) {
                // No device segmentation for this one: cut it here (the
                // fragments are sliced, not copied).
                let Some(parts) = seg.try_split() else {
                    // No memory for the lists: as if lost on the wire.
                    self.tcp_segment_dropped(held);
                    continue;
                };
                if self.txq.try_reserve(parts.len()).is_err() {
                    self.tcp_segment_dropped(held);
                    continue;
                }
                for part in parts {
                    self.txq.push_back(Pending {
                        held: part.payload_len,
                        seg: part,
                        next_hop: hop,
                    });
                }
            } else {
                if self.txq.try_reserve(1).is_err() {
                    self.tcp_segment_dropped(held);
                    continue;
                }
                self.txq.push_back(Pending {
                    seg,
                    next_hop: hop,
                    held,
                });
            }
        }
    }

    /// A segment from the engine dropped before the transmit queue (the
    /// engine retransmits it): its budget goes back.
    fn tcp_segment_dropped(&mut self, held: usize) {
        self.tcp.release(held);
        self.stats.tcp_segments_dropped += 1;
    }

    /// Hands queued segments to the device while it has room (or to the
    /// ARP wait list when their next hop is unresolved).
    fn tcp_drain<N: Nic>(&mut self, nic: &mut N) {
        while let Some(mut p) = self.txq.pop_front() {
            let Some(mac) = self.neighbors.get(&p.next_hop).map(|&m| mac_from_u64(m)) else {
                let hop = p.next_hop;
                // Bounded by its own limit; holding budget here would stall
                // connections to resolved neighbours behind one that is not.
                self.tcp.release(mem::take(&mut p.held));
                if self.arp_pending.len() >= MAX_ARP_PENDING {
                    // The oldest waits longest for an answer that may never
                    // come; the engine retransmits what is dropped.
                    self.arp_pending.remove(0);
                    self.stats.tcp_segments_dropped += 1;
                }
                self.arp_pending.push(p);
                let due = self
                    .arp_asked
                    .get(&hop)
                    .is_none_or(|&t| self.now_ms >= t + self.opts.arp_retry_ms);
                if due {
                    if self.arp_asked.len() >= MAX_NEIGHBORS {
                        self.arp_asked.clear();
                    }
                    self.arp_asked.insert(hop, self.now_ms);
                    self.send_arp_request(nic, hop);
                }
                continue;
            };
            if !nic.can_transmit() {
                self.txq.push_front(p);
                break;
            }
            if !self.transmit_segment(nic, &mut p.seg, mac) {
                self.txq.push_front(p);
                break;
            }
            self.tcp.release(p.held);
        }
    }

    /// Hands one segment to the device. With scatter-gather
    /// ([`Nic::transmit_sg`]) the Ethernet, IPv4 and TCP headers go in one
    /// small buffer and the payload fragments by reference: no CPU copy.
    /// Otherwise headers and payload are copied into the device's transmit
    /// buffer (the socket → device copy). False (the segment kept for
    /// later) when the device has no room.
    fn transmit_segment<N: Nic>(
        &mut self,
        nic: &mut N,
        seg: &mut Segment<TcpPayload>,
        mac: EthernetAddress,
    ) -> bool {
        let offload = nic.tx_checksum_offload();
        let frame_len = ETH_HEADER_LEN + IPV4_HEADER_LEN + seg.tcp_len();
        if offload {
            seg.fill_partial_checksum();
        } else {
            seg.fill_checksum();
        }
        let ident = self.ip_ident;
        let src_mac = self.mac;
        let seg = &*seg;
        let big = seg.needs_segmentation();
        let ok = if nic.tx_scatter_gather() && seg.payload_len > 0 {
            let mut head = [0u8; ETH_HEADER_LEN + IPV4_HEADER_LEN + MAX_TCP_HEADER];
            let head_len = frame_len - seg.payload_len;
            write_headers(&mut head[..head_len], seg, src_mac, mac, ident);
            nic.transmit_sg(&head[..head_len], &seg.payload, big.then_some(seg.mss))
        } else {
            let copies = &self.copies;
            let fill = |buf: &mut [u8]| write_frame(buf, seg, src_mac, mac, ident, copies);
            if big {
                nic.transmit_tso(frame_len, seg.mss, fill)
            } else {
                nic.transmit(frame_len, fill)
            }
        };
        if !ok {
            self.counters.tx_dropped += 1;
            return false;
        }
        self.ip_ident = self.ip_ident.wrapping_add(if big {
            seg.payload_len.div_ceil(usize::from(seg.mss.max(1))) as u16
        } else {
            1
        });
        self.counters.tx_frames += 1;
        self.counters.tx_tso_frames += u64::from(big);
        self.counters.tx_bytes += frame_len as u64;
        self.stats.tcp_segments_out += 1;
        true
    }

    /// Passes the engine's readiness events on as changed sockets.
    fn tcp_events(&mut self, changed: &mut Vec<SocketId>) {
        let mut events = mem::take(&mut self.events);
        self.tcp.take_events(&mut events);
        for ev in events.drain(..) {
            self.stats.socket_visits += 1;
            let id = match ev {
                Event::Conn(c) => self.tcp_by_conn.get(&c.as_u64()).copied(),
                Event::Accept(port) => self.tcp_listeners.get(&u64::from(port)).copied(),
            };
            if let Some(id) = id {
                changed.push(id);
            }
        }
        self.events = events;
        for id in self.rx_touched.drain(..) {
            if self.slots.get(id.0 as usize).is_some_and(Option::is_some) {
                changed.push(id);
            }
        }
        if !self.send_blocked.is_empty() {
            let mut blocked = mem::take(&mut self.send_blocked);
            blocked.retain(|&id| {
                let r = self.readiness(id);
                if r == 0 && self.entry(id).is_err() {
                    return false;
                }
                if r & (EPOLLOUT | EPOLLERR | EPOLLHUP) != 0 {
                    changed.push(id);
                    false
                } else {
                    true
                }
            });
            self.send_blocked = blocked;
        }
    }

    /// Measures the engine's memory (a walk over its connections) when the
    /// budget is finite and the last measurement is old.
    fn measure_tcp_memory(&mut self) {
        if self.opts.buffer_budget == usize::MAX {
            return;
        }
        let due = self
            .tcp_bytes_at
            .is_none_or(|t| self.now_ms >= t + BUDGET_MEASURE_MS);
        if !due {
            return;
        }
        let s = self.tcp.stats();
        let mut bytes = s.send_queued;
        for st in State::ALL {
            if st != State::Listen {
                bytes += s.state(st).bytes;
            }
        }
        self.tcp_bytes = bytes;
        self.tcp_bytes_at = Some(self.now_ms);
        self.syns_since_measure = 0;
    }

    fn over_budget(&mut self) -> bool {
        if self.opts.buffer_budget == usize::MAX {
            return false;
        }
        self.measure_tcp_memory();
        let estimate = self
            .tcp_bytes
            .saturating_add(self.syns_since_measure.saturating_mul(SYN_ESTIMATE_BYTES));
        estimate > self.opts.buffer_budget
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
    /// established connections not yet accepted (0 means the default).
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
        if self.tcp_listeners.contains_key(&u64::from(port)) {
            return Err(NetError::AddrInUse);
        }
        let backlog = if backlog == 0 {
            self.opts.default_backlog
        } else {
            backlog
        }
        .clamp(1, 65_535);
        self.tcp
            .listen(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                backlog,
            )
            .map_err(net_error)?;
        let id = self.alloc(Self::new_entry(Kind::Listener(Listener { port, opts })));
        self.tcp_listeners.insert(u64::from(port), id);
        Ok(id)
    }

    fn ephemeral_listen_port(&mut self) -> Result<u16> {
        for _ in 0..=(u16::MAX - EPHEMERAL_FIRST) {
            let p = self.next_tcp_port;
            self.next_tcp_port = p.checked_add(1).unwrap_or(EPHEMERAL_FIRST);
            if !self.tcp_listeners.contains_key(&u64::from(p)) {
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
        let (port, opts) = (l.port, l.opts);
        let conn = self.tcp.accept(port).ok_or(NetError::WouldBlock)?;
        let now_us = self.now_us();
        let key = match self.tcp.get(conn) {
            Some(c) => {
                let t = c.tuple();
                FourTuple {
                    local_addr: ip4(t.local_ip),
                    local_port: t.local_port,
                    remote_addr: ip4(t.remote_ip),
                    remote_port: t.remote_port,
                }
            }
            // Ended while it waited (reset): the application sees it so.
            None => FourTuple {
                local_addr: Ipv4Addr::UNSPECIFIED,
                local_port: port,
                remote_addr: Ipv4Addr::UNSPECIFIED,
                remote_port: 0,
            },
        };
        let id = self.register_tcp(conn, key, &opts, now_us);
        self.stats.accepted += 1;
        Ok((id, SocketAddrV4::new(key.remote_addr, key.remote_port)))
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
        if self.over_budget() {
            self.stats.budget_refusals += 1;
            return Err(NetError::NoBufs);
        }
        let port = local_port.unwrap_or(0);
        let now_us = self.now_us();
        let conn = self
            .tcp
            .connect_from(
                now_us,
                SocketAddr::new(IpAddr::V4(local), port),
                SocketAddr::V4(remote),
            )
            .map_err(|e| match e {
                uk_tcp::Error::AddrInUse if port == 0 => NetError::AddrNotAvailable,
                e => net_error(e),
            })?;
        self.syns_since_measure += 1;
        let t = self.tcp.get(conn).map(|c| c.tuple());
        let key = FourTuple {
            local_addr: local,
            local_port: t.map_or(port, |t| t.local_port),
            remote_addr: *remote.ip(),
            remote_port: remote.port(),
        };
        Ok(self.register_tcp(conn, key, &opts, now_us))
    }

    /// Gives engine connection `conn` (4-tuple `key`) a socket id with the
    /// options `opts`: the one place accepted and connecting sockets enter
    /// the socket table.
    fn register_tcp(
        &mut self,
        conn: ConnId,
        key: FourTuple,
        opts: &SocketOptions,
        now_us: u64,
    ) -> SocketId {
        if !opts.nodelay {
            let _ = self.tcp.set_nodelay(now_us, conn, false);
        }
        let id = self.alloc(Self::new_entry(Kind::Tcp(TcpSock {
            conn,
            key,
            tx: (
                opts.tx_buffer.max(1),
                opts.tx_buffer_max.max(opts.tx_buffer),
            ),
            shut_wr: false,
            error_taken: false,
        })));
        self.tcp_by_conn.insert(conn.as_u64(), id);
        self.tcp_by_key.insert(key, id);
        id
    }

    /// A user-visible TCP connection.
    fn sock_mut(&mut self, id: SocketId) -> Result<&mut TcpSock> {
        match &mut self.entry_mut(id)?.kind {
            Kind::Tcp(t) => Ok(t),
            _ => Err(NetError::InvalidInput),
        }
    }

    /// The application moved data through socket `id` (or shut it down):
    /// report its readiness on the next poll. Never for a call that only
    /// found `WouldBlock`: a blocked caller would see its own report as a
    /// change and retry at once, forever.
    fn touched(&mut self, id: SocketId) {
        if self.rx_touched.last() != Some(&id) {
            self.rx_touched.push(id);
        }
    }

    /// How many bytes `send` may queue now, or why none.
    fn send_room(&mut self, id: SocketId) -> Result<(ConnId, usize)> {
        let t = self.sock_mut(id)?;
        let (conn, shut, tx, taken) = (t.conn, t.shut_wr, t.tx, t.error_taken);
        if shut {
            return Err(NetError::BrokenPipe);
        }
        if let Some(e) = self.tcp.error(conn) {
            if !taken {
                self.sock_mut(id)?.error_taken = true;
                return Err(net_error(e));
            }
            return Err(NetError::BrokenPipe);
        }
        match self.tcp.state(conn) {
            Some(State::SynSent | State::SynReceived) => Err(NetError::WouldBlock),
            Some(State::Established | State::CloseWait) => {
                let (queued, limit) = send_queue(&self.tcp, conn, tx);
                let room = limit
                    .saturating_sub(queued)
                    .min(self.tcp.send_capacity(conn));
                if room == 0 {
                    if !self.send_blocked.contains(&id) {
                        self.send_blocked.push(id);
                    }
                    Err(NetError::WouldBlock)
                } else {
                    Ok((conn, room))
                }
            }
            _ => Err(NetError::BrokenPipe),
        }
    }

    /// How many bytes the connection's send queue takes now (`WouldBlock`
    /// when none, an error when it is closed for sending). `sendfile` asks
    /// before pinning pages, so that it pins no more than will be queued.
    pub fn tcp_send_room(&mut self, id: SocketId) -> Result<usize> {
        self.send_room(id).map(|(_, room)| room)
    }

    /// Bytes in the connection's send queue: not sent yet, or sent and not
    /// acknowledged (Linux's `SIOCOUTQ`).
    pub fn tcp_send_queued(&self, id: SocketId) -> Result<usize> {
        match &self.entry(id)?.kind {
            Kind::Tcp(t) => Ok(self.tcp.get(t.conn).map_or(0, |c| c.send_queued())),
            _ => Err(NetError::InvalidInput),
        }
    }

    fn queue_payload(&mut self, conn: ConnId, data: TcpPayload) -> Result<()> {
        let now_us = self.now_us();
        self.tcp.send(now_us, conn, data).map_err(net_error)
    }

    /// Copies as much of `data` as fits into the connection's send queue
    /// (one owned buffer: the application → socket copy). `WouldBlock` when
    /// it is full (or the connection is still being set up).
    pub fn tcp_send(&mut self, id: SocketId, data: &[u8]) -> Result<usize> {
        self.sock_mut(id)?;
        if data.is_empty() {
            // A zero-length send reports a pending error (connect uses it).
            return match self.send_room(id) {
                Err(NetError::WouldBlock) | Ok(_) => Ok(0),
                Err(e) => Err(e),
            };
        }
        let (conn, room) = self.send_room(id)?;
        let n = room.min(data.len());
        let mut buf = Vec::new();
        buf.try_reserve_exact(n).map_err(|_| NetError::NoBufs)?;
        self.copies.append(Stage::AppToSocket, &mut buf, &data[..n]);
        self.queue_payload(conn, TcpPayload::from(buf))?;
        self.touched(id);
        Ok(n)
    }

    /// Queues payload references without copying them (`sendfile` passes
    /// pinned page-cache pages), from the front of `refs`, as many bytes as
    /// the send queue has room for (the last one split if need be: nothing
    /// is copied either way), and returns the bytes queued. `WouldBlock`
    /// when the queue is full. References queued by one call are handed to
    /// the engine together, so they leave in frames as large as the windows
    /// allow.
    pub fn tcp_send_refs(
        &mut self,
        id: SocketId,
        refs: &mut VecDeque<TcpPayload>,
    ) -> Result<usize> {
        self.sock_mut(id)?;
        if refs.is_empty() {
            return Ok(0);
        }
        let (conn, mut room) = self.send_room(id)?;
        let mut batch = Vec::new();
        while room > 0 {
            let Some(p) = refs.pop_front() else { break };
            let p = if p.len() > room {
                let (head, tail) = p.split_at(room);
                refs.push_front(tail);
                head
            } else {
                p
            };
            room -= p.len();
            batch.push(p);
        }
        let now_us = self.now_us();
        let total = self
            .tcp
            .send_batch(now_us, conn, batch)
            .map_err(net_error)?;
        self.touched(id);
        Ok(total)
    }

    /// Reads received bytes. `Ok(0)` is end of stream (peer sent FIN);
    /// `WouldBlock` when nothing is buffered yet.
    pub fn tcp_recv(&mut self, id: SocketId, buf: &mut [u8]) -> Result<usize> {
        let t = self.sock_mut(id)?;
        let (conn, taken) = (t.conn, t.error_taken);
        if buf.is_empty() {
            return Ok(0);
        }
        let now_us = self.now_us();
        match self.tcp.recv(now_us, conn, buf) {
            Ok(n) => {
                if n > 0 {
                    self.touched(id);
                }
                Ok(n)
            }
            Err(uk_tcp::Error::WouldBlock) => Err(NetError::WouldBlock),
            Err(uk_tcp::Error::InvalidInput) => Err(NetError::NotConnected),
            Err(e) if !taken => {
                self.sock_mut(id)?.error_taken = true;
                Err(net_error(e))
            }
            Err(_) => Ok(0),
        }
    }

    /// Closes the write half: a FIN follows the data already queued.
    pub fn tcp_shutdown_write(&mut self, id: SocketId) -> Result<()> {
        let conn = self.sock_mut(id)?.conn;
        match self.tcp.state(conn) {
            Some(State::SynSent | State::Listen) | None => return Err(NetError::NotConnected),
            Some(State::Closed) if self.tcp.error(conn).is_some() => {
                return Err(NetError::NotConnected);
            }
            _ => {}
        }
        self.sock_mut(id)?.shut_wr = true;
        self.touched(id);
        let now_us = self.now_us();
        let _ = self.tcp.shutdown(now_us, conn);
        Ok(())
    }

    /// Closes a TCP socket (connection or listener). A connection is closed
    /// gracefully: queued data is sent, then FIN (a RST instead if received
    /// data was left unread); the engine finishes the close on its own, the
    /// id is invalid at once. Closing a listener resets its not-yet-accepted
    /// connections.
    pub fn tcp_close(&mut self, id: SocketId) -> Result<()> {
        match &self.entry(id)?.kind {
            Kind::Udp { .. } => Err(NetError::InvalidInput),
            _ => self.close(id),
        }
    }

    /// Resets a TCP connection at once (RST) and releases its id.
    pub fn tcp_abort(&mut self, id: SocketId) -> Result<()> {
        let conn = self.sock_mut(id)?.conn;
        let now_us = self.now_us();
        self.tcp.abort(now_us, conn);
        self.free_slot(id);
        Ok(())
    }

    /// Closes any socket (see [`NetStack::tcp_close`]); the id is invalid afterwards.
    pub fn close(&mut self, id: SocketId) -> Result<()> {
        let now_us = self.now_us();
        match &self.entry(id)?.kind {
            Kind::Udp { .. } => {}
            Kind::Listener(l) => self.tcp.unlisten(now_us, l.port),
            Kind::Tcp(t) => self.tcp.close(now_us, t.conn),
        }
        self.free_slot(id);
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
                if !self.udp_ports.contains_key(&u64::from(p)) {
                    found = Some(p);
                    break;
                }
            }
            found.ok_or(NetError::AddrNotAvailable)?
        } else {
            port
        };
        if self.udp_ports.contains_key(&u64::from(port))
            || (port == DHCP_CLIENT_PORT && self.dhcp.is_some())
        {
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
        let id = self.alloc(Self::new_entry(Kind::Udp {
            port,
            set,
            handle: h,
        }));
        self.udp_ports.insert(u64::from(port), id);
        Ok(id)
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
        let s = udp_in(&mut self.slots, id)?;
        if data.len() > s.payload_send_capacity() || data.len() > usize::from(u16::MAX) - 28 {
            return Err(NetError::NoBufs);
        }
        let buf = s
            .send(
                data.len(),
                IpEndpoint::new(IpAddress::Ipv4(*dst.ip()), dst.port()),
            )
            .map_err(|e| match e {
                udp::SendError::BufferFull => NetError::WouldBlock,
                udp::SendError::Unaddressable => NetError::InvalidInput,
            })?;
        self.copies.copy(Stage::AppToSocket, buf, data);
        self.mark_dirty(id);
        Ok(data.len())
    }

    /// Takes one datagram (truncated to `buf`). `WouldBlock` when none is queued.
    pub fn udp_recv_from(&mut self, id: SocketId, buf: &mut [u8]) -> Result<(usize, SocketAddrV4)> {
        let s = udp_in(&mut self.slots, id)?;
        let (data, meta) = s.recv().map_err(|_| NetError::WouldBlock)?;
        let n = data.len().min(buf.len());
        self.copies
            .copy(Stage::SocketToApp, &mut buf[..n], &data[..n]);
        Ok((n, v4(meta.endpoint)))
    }

    // ----- addresses & readiness -------------------------------------------

    /// The socket's local address.
    pub fn local_addr(&self, id: SocketId) -> Result<SocketAddrV4> {
        let e = self.entry(id)?;
        let ours = self.cidr().map_or(Ipv4Addr::UNSPECIFIED, |c| c.address());
        match &e.kind {
            Kind::Tcp(t) => Ok(SocketAddrV4::new(t.key.local_addr, t.key.local_port)),
            Kind::Listener(l) => Ok(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, l.port)),
            Kind::Udp { port, .. } => Ok(SocketAddrV4::new(ours, *port)),
        }
    }

    /// The connected peer's address.
    pub fn peer_addr(&self, id: SocketId) -> Result<SocketAddrV4> {
        match &self.entry(id)?.kind {
            Kind::Tcp(t) if t.key.remote_port != 0 => {
                Ok(SocketAddrV4::new(t.key.remote_addr, t.key.remote_port))
            }
            _ => Err(NetError::NotConnected),
        }
    }

    /// A counter that grows whenever something arrives for socket `id`
    /// (data, FIN, reset; for a listener: anything for a connection not yet
    /// accepted). Readiness that changes without it (our own sends and
    /// acknowledgements) is not a new input event: `EPOLLET` users rely on it.
    pub fn rx_generation(&self, id: SocketId) -> u64 {
        self.entry(id).map_or(0, |e| e.rx_gen)
    }

    /// Whether socket `id` is a TCP listener.
    pub fn is_listener(&self, id: SocketId) -> bool {
        self.entry(id)
            .is_ok_and(|e| matches!(e.kind, Kind::Listener(_)))
    }

    /// Readiness as Linux epoll bits ([`EPOLLIN`], [`EPOLLOUT`],
    /// [`EPOLLERR`], [`EPOLLHUP`], [`EPOLLRDHUP`]); 0 for an unknown id.
    pub fn readiness(&self, id: SocketId) -> u32 {
        let Ok(e) = self.entry(id) else { return 0 };
        match &e.kind {
            Kind::Listener(l) => {
                if self.tcp.accept_queue_len(l.port) > 0 {
                    EPOLLIN
                } else {
                    0
                }
            }
            Kind::Tcp(t) => {
                let Some(r) = self.tcp.readiness(t.conn) else {
                    return EPOLLERR | EPOLLHUP;
                };
                let state = self.tcp.state(t.conn);
                let mut bits = 0;
                let error = r.error && !t.error_taken;
                if r.readable {
                    bits |= EPOLLIN;
                }
                let peer_closed = r.read_closed || r.error;
                if peer_closed {
                    bits |= EPOLLIN | EPOLLRDHUP;
                }
                let (queued, limit) = send_queue(&self.tcp, t.conn, t.tx);
                // Writable once a quarter of the send queue is free (Linux
                // waits for a third): a writer blocked on a full queue wakes
                // for a batch, not for every acknowledged segment. A write
                // still takes whatever room there is.
                if r.writable && !t.shut_wr && limit - queued.min(limit) >= send_low_water(limit) {
                    bits |= EPOLLOUT;
                }
                if error {
                    bits |= EPOLLERR;
                }
                let write_closed = t.shut_wr
                    || !matches!(
                        state,
                        Some(
                            State::SynSent
                                | State::SynReceived
                                | State::Established
                                | State::CloseWait
                        )
                    );
                if r.hangup || (peer_closed && write_closed) {
                    bits |= EPOLLHUP;
                }
                bits
            }
            Kind::Udp { set, handle, .. } => {
                let s = set.get::<udp::Socket>(*handle);
                let mut r = 0;
                if s.can_recv() {
                    r |= EPOLLIN;
                }
                if s.can_send() {
                    r |= EPOLLOUT;
                }
                r
            }
        }
    }
}

/// The UDP socket in slot `id` (a function of the slot table alone, so the
/// caller can use the stack's other fields while holding it).
fn udp_in(slots: &mut [Option<Entry>], id: SocketId) -> Result<&mut udp::Socket<'static>> {
    let e = slots
        .get_mut(id.0 as usize)
        .and_then(Option::as_mut)
        .ok_or(NetError::BadFd)?;
    match &mut e.kind {
        Kind::Udp { set, handle, .. } => Ok(set.get_mut::<udp::Socket>(*handle)),
        _ => Err(NetError::InvalidInput),
    }
}

/// Writes the Ethernet, IPv4 and TCP headers of `seg` into `buf` (at least
/// their length); returns the length written.
fn write_headers(
    buf: &mut [u8],
    seg: &Segment<TcpPayload>,
    src: EthernetAddress,
    dst: EthernetAddress,
    ident: u16,
) -> usize {
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    eth.set_ethertype(EthernetProtocol::Ipv4);
    let ip_total = IPV4_HEADER_LEN + seg.tcp_len();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[ETH_HEADER_LEN..]);
        ip.set_version(4);
        ip.set_header_len(IPV4_HEADER_LEN as u8);
        ip.set_dscp(0);
        ip.set_ecn(0);
        ip.set_total_len(ip_total.min(usize::from(u16::MAX)) as u16);
        ip.set_ident(ident);
        ip.clear_flags();
        ip.set_dont_frag(true);
        ip.set_frag_offset(0);
        ip.set_hop_limit(64);
        ip.set_next_header(smoltcp::wire::IpProtocol::Tcp);
        ip.set_src_addr(ip4(seg.local_ip));
        ip.set_dst_addr(ip4(seg.remote_ip));
        ip.fill_checksum();
    }
    let at = ETH_HEADER_LEN + IPV4_HEADER_LEN;
    let h = seg.header.as_bytes();
    buf[at..at + h.len()].copy_from_slice(h);
    at + h.len()
}

/// Writes the headers and the payload fragments of `seg` into `buf`
/// (exactly the frame's length): the socket → device copy, counted.
fn write_frame(
    buf: &mut [u8],
    seg: &Segment<TcpPayload>,
    src: EthernetAddress,
    dst: EthernetAddress,
    ident: u16,
    copies: &CopyCounters,
) {
    let mut at = write_headers(buf, seg, src, dst, ident);
    for f in &seg.payload {
        let b = f.bytes();
        copies.copy(Stage::SocketToDevice, &mut buf[at..at + b.len()], b);
        at += b.len();
    }
}

/// A MAC address as the low 48 bits of a `u64`: the neighbour table then
/// shares its hash table code with `arp_asked` (one instance, smaller image).
fn mac_to_u64(mac: EthernetAddress) -> u64 {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&mac.0);
    u64::from_le_bytes(b)
}

fn mac_from_u64(v: u64) -> EthernetAddress {
    let b = v.to_le_bytes();
    EthernetAddress([b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// The free send-queue bytes at which a socket reports `EPOLLOUT`.
fn send_low_water(tx_buffer: usize) -> usize {
    (tx_buffer / 4).max(1)
}
