//! A sans-IO TCP engine whose send queue holds references to payload.
//!
//! `uk-tcp` is the TCP of the unikernel's network stack, meant to replace
//! smoltcp's TCP socket inside `uk-net` (smoltcp keeps ARP/NDP, IP, ICMP,
//! DHCP and UDP). It never does I/O, never reads a clock and never draws
//! randomness: segments come in as bytes, go out as [`Segment`]s, the time
//! (`now`, microseconds) is an argument of every call that needs it, and
//! a 128-bit secret given to [`Endpoint::new`] keys everything that must
//! be unpredictable. It is `no_std` + `alloc`, has no `unsafe`, and is
//! tested on the host (`cargo test -p uk-tcp`).
//!
//! ```
//! use core::net::{IpAddr, Ipv4Addr, SocketAddr};
//! use uk_tcp::{Config, Endpoint, SharedSlice};
//!
//! let (a_ip, b_ip) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
//! let mut client: Endpoint<SharedSlice> = Endpoint::new(Config::default(), [1; 16]);
//! let mut server: Endpoint<SharedSlice> = Endpoint::new(Config::default(), [2; 16]);
//! server.listen(SocketAddr::new(b_ip, 80), 16).unwrap();
//! let mut now = 0; // µs, from the caller's clock
//! let c = client.connect(now, a_ip, SocketAddr::new(b_ip, 80)).unwrap();
//! client.send(now, c, SharedSlice::from(b"hello".to_vec())).unwrap();
//!
//! // The "wire": move segments until both sides are quiet.
//! let mut segs = Vec::new();
//! for _ in 0..10 {
//!     now += 1000;
//!     client.poll(now, &mut segs);
//!     for s in segs.drain(..) {
//!         server.on_segment(now, s.local_ip, s.remote_ip, &s.to_bytes()).unwrap();
//!     }
//!     server.poll(now, &mut segs);
//!     for s in segs.drain(..) {
//!         client.on_segment(now, s.local_ip, s.remote_ip, &s.to_bytes()).unwrap();
//!     }
//! }
//! let s = server.accept(80).unwrap();
//! let mut buf = [0; 16];
//! assert_eq!(server.recv(now, s, &mut buf), Ok(5));
//! assert_eq!(&buf[..5], b"hello");
//! ```
//!
//! # Zero-copy send queue
//!
//! The send queue ([`sendq::SendQueue`]) is a deque of *references*: values
//! of a type implementing [`Payload`] (cheap to clone, e.g. a refcounted,
//! pinned page-cache slice `(page, offset, len)`, or an `Arc`'d buffer for
//! `write`). [`Endpoint::send`] takes ownership of one reference; nothing
//! is copied. A segment leaves as a small [`Segment`]: the TCP header
//! (options included, in a 60-byte inline [`wire::HeaderBuf`]), the IP
//! addresses, and a scatter-gather list of [`Fragment`]s `(P, offset, len)`
//! that are clones of the queued references, so the page stays alive until
//! the device is done with it. When an ACK covers bytes, fully acknowledged
//! references are dropped (releasing the page); a partly acknowledged one
//! stays and only the queue's offset moves. Positions are 64-bit stream
//! offsets, found by binary search.
//!
//! A segment may be larger than the MSS (up to [`Config::max_segment`],
//! 64 KiB by default): the device cuts it at [`Segment::mss`] (TSO/GSO),
//! or [`Segment::split`] does it in software without copying. Checksums:
//! [`Segment::fill_partial_checksum`] stores the pseudo-header sum for
//! checksum offload; [`Segment::fill_checksum`] is the software fallback
//! over header and fragments ([`wire::Checksum`] sums pieces of any length
//! and alignment).
//!
//! ## What is copied, where
//!
//! | path | CPU copies of payload |
//! |---|---|
//! | `send` of a page-cache reference → device (SG + offload) | **0** |
//! | the same, device without checksum offload | 0 (the checksum reads the bytes once) |
//! | device without scatter-gather ([`Segment::to_bytes`]) | 1 |
//! | device → receive queue ([`recvq::RecvQueue`]) | 1, into a buffer sized to the segment |
//! | receive queue → application ([`Endpoint::recv`]) | 1 (the read itself) |
//!
//! Out-of-order segments are copied once into their own buffers, which move
//! into the in-order queue when the hole fills; segments under 512 bytes
//! are appended to the previous chunk instead, so that tiny segments
//! cannot inflate per-chunk overhead.
//!
//! The receive-side copies go through `uk_core::copy::{append_into,
//! copy_into}` (the kernel's one copy primitive), which count what they
//! copy ([`ConnStats::bytes_copied_in`] and [`ConnStats::bytes_copied_out`],
//! summed over the endpoint in [`Counters`]), for the kernel's
//! copies-per-byte accounting; the host tests check that every received
//! byte is copied in once and out once. (A small chunk growing while it
//! coalesces may reallocate; that move is not counted.)
//!
//! # State machine
//!
//! [`Connection`] implements RFC 9293's states ([`State`]): `SYN-SENT`,
//! `SYN-RECEIVED` (passive, or simultaneous open), `ESTABLISHED`,
//! `FIN-WAIT-1/2`, `CLOSING`, `TIME-WAIT`, `CLOSE-WAIT`, `LAST-ACK`,
//! `CLOSED`; `LISTEN` is a listener in the [`Endpoint`]. Segment
//! processing follows RFC 9293 section 3.10.7 with these additions:
//!
//! - RFC 5961: a RST is accepted only at exactly RCV.NXT; in the window it
//!   draws a challenge ACK; a SYN in a synchronized state draws a challenge
//!   ACK whatever its sequence number; ACKs beyond SND.NXT or older than the
//!   largest window ever seen are dropped. Challenge ACKs are limited to 10
//!   per second per connection, ACKs to dropped pure ACKs to one per 100 ms
//!   (no ACK wars between ends that disagree about the sequence space).
//! - RFC 7323: window scaling, timestamps with a per-connection keyed
//!   offset, RTT from TSecr, PAWS (without the 24-day rule).
//! - RFC 2018: SACK-permitted; SACK blocks for out-of-order data (the
//!   block of the latest segment first); received blocks feed the
//!   scoreboard ([`sack::Scoreboard`]).
//! - MSS option; delayed ACK (every second full-sized segment, else after
//!   [`Config::delayed_ack`], 40 ms; out-of-order data and FINs at once);
//!   TCP_NODELAY by default, Nagle on request; receiver and sender silly
//!   window avoidance; zero-window probes and keep-alives (a segment with
//!   SEQ = SND.UNA - 1 that the peer must answer with an ACK), the persist
//!   timer backing off up to [`Config::max_rto`] and never giving up.
//! - RFC 6528 initial sequence numbers: `ISN = M + SipHash(key, 4-tuple)`,
//!   with `M` a 4 µs clock ([`isn::initial_seq`]); RFC 6056 algorithm 3
//!   ephemeral ports ([`isn::EphemeralPorts`]). Hash tables use the same
//!   keyed SipHash, so a peer cannot aim 4-tuples at one bucket.
//! - IPv4 and IPv6 alike (`core::net::IpAddr`).
//! - A segment that matches nothing gets a RST (never for a RST).
//!
//! # Retransmission and congestion control
//!
//! The RTO follows RFC 6298 (SRTT/RTTVAR, `RTO = SRTT + max(G, 4 RTTVAR)`,
//! bounded by [`Config::min_rto`] = 200 ms and [`Config::max_rto`] = 60 s,
//! doubled on each expiry, Karn's rule when there are no timestamps).
//!
//! The congestion controller is **NewReno** ([`cc::NewReno`]): initial
//! window 10 segments (RFC 6928), slow start growing by every byte
//! acknowledged (as Linux does; not RFC 3465's L = 2 SMSS per ACK, which
//! behind receive offload, one ACK per 64 KiB, makes slow start nearly
//! linear), congestion avoidance adding one SMSS per
//! window of acknowledged bytes (RFC 5681). Loss recovery:
//!
//! - *Fast retransmit* on the third duplicate ACK, or as soon as SACK
//!   blocks cover 3 SMSS above SND.UNA (RFC 6675's trigger). `ssthresh =
//!   max(FlightSize / 2, 2 SMSS)`, `cwnd = ssthresh`; the first hole goes
//!   out at once, whatever the window.
//! - *Fast recovery* until SND.UNA reaches `recover` (SND.MAX at entry;
//!   RFC 6582). With SACK, an unSACKed byte with at least 3 SMSS SACKed
//!   above it is lost (RFC 6675 `IsLost`; bytes just below the highest
//!   SACK may only be reordered); lost bytes are retransmitted once, holes
//!   first, then new data, while
//!   the RFC 6675 `pipe` (outstanding bytes minus SACKed minus lost and not
//!   yet retransmitted) is below cwnd. Without SACK, a partial ACK
//!   retransmits the next segment (RFC 6582 step 4), and each duplicate ACK
//!   counts a segment out of the pipe (the classic window inflation). A
//!   full ACK ends recovery with `cwnd = min(ssthresh, FlightSize + SMSS)`.
//! - *Timeout*: `cwnd = 1 SMSS`, everything outstanding and not SACKed
//!   counts as lost and is resent in slow start; a second timeout in a row
//!   also forgets the SACK scoreboard (the receiver may have reneged).
//!
//! A new recovery does not start before SND.UNA passes the previous
//! `recover` point, so one window's losses halve cwnd once.
//!
//! # Memory bounds
//!
//! Memory follows the data, and every table is bounded:
//!
//! - An idle ESTABLISHED connection holds no payload buffer: queues are
//!   released when they empty ([`Connection::memory_bytes`] is then the
//!   size of the control block, under 1 KiB).
//! - Received data (in order and out of order) is bounded by
//!   [`Config::recv_window`], out-of-order segments by
//!   [`Config::max_ooo_segments`], SACK scoreboard ranges by
//!   [`Config::max_sack_ranges`]; the send queue holds at most
//!   [`Config::send_buffer`] bytes of references (pinned pages).
//! - TIME-WAIT is a [`timewait::TimeWaitRecord`] of at most 64 bytes
//!   (4-tuple, SND.NXT, RCV.NXT, TS.Recent, expiry) in a table bounded by
//!   [`Config::time_wait_capacity`] (the oldest record is recycled). It
//!   answers a retransmitted FIN with an ACK, ignores RSTs (RFC 1337), and
//!   lets a SYN with a newer timestamp (or, without timestamps, a higher
//!   sequence number) reopen the 4-tuple (RFC 6191).
//! - SYN-RECEIVED connections are bounded per listener by
//!   [`Config::syn_backlog`]; beyond it SYNs are answered with SYN cookies
//!   ([`cookie`]: a 5-bit 64 s counter, a 3-bit MSS index and 24 bits of
//!   keyed SipHash in the ISN; window scale and SACK-permitted ride in
//!   the timestamp) and no state is kept until a valid ACK returns. Cookie
//!   ACKs are honoured only within two minutes of the listener's last
//!   cookie, so they cannot be brute-forced while no flood is on.
//! - FIN-WAIT-2 times out ([`Config::fin_wait2_timeout`], shorter once the
//!   application closed the connection); SYN retries and data
//!   retransmissions are bounded; keep-alive drops dead peers.
//! - [`Config::max_connections`] is the admission limit: beyond it SYNs
//!   are dropped and established connections keep going.
//!
//! [`Endpoint::stats`] gives count and bytes per state (TIME-WAIT records
//! included), queued bytes and event counters; [`Connection::stats`] has
//! per-connection counters (retransmissions, timeouts, probes).
//!
//! # The connection table
//!
//! [`Endpoint`] dispatches each incoming segment by 4-tuple (a hashbrown
//! map) to its connection, else to the TIME-WAIT table, else to a listener
//! (SYN → half-open connection or cookie; ACK → cookie check), else answers
//! RST. Connections live in a slab addressed by [`ConnId`] (index +
//! generation). Timers sit in an indexed min-heap with one entry per slot,
//! its room reserved when the slot is made ([`timerheap`]): [`Endpoint::poll`]
//! visits only connections whose deadline passed, and
//! [`Endpoint::next_deadline`] says when to call it next. All state is in
//! the value, nothing is global: a multi-core kernel can give each CPU its
//! own `Endpoint` and steer segments to it by 4-tuple hash (as RSS does),
//! with a shared listener configuration.
//!
//! # Limitations
//!
//! - No RACK, F-RTO or D-SACK undo: heavy reordering (beyond 3 SMSS) still
//!   costs spurious retransmissions and a halved window.
//! - No urgent data (URG is ignored), no TCP Fast Open (data on a SYN is
//!   dropped and retransmitted by the peer after the handshake), no MTU
//!   probing.
//! - PAWS without the 24-day idle rule.
//! - One listener per port, for IPv4 and IPv6 together (an unspecified
//!   address), or bound to one address.
//! - A TIME-WAIT record is 64 bytes; with the hash table's slack and the
//!   expiry FIFO a full table uses about 170 bytes per record (counted in
//!   [`Endpoint::stats`]), against 96 KiB for a smoltcp socket kept
//!   through TIME-WAIT.

//! # Integrating
//!
//! How `uk-net` drives it (smoltcp keeps everything but TCP):
//!
//! 1. **Setup**: `Endpoint::<KernelPayload>::new(config, secret)` with the
//!    secret from RDSEED/RDRAND; `KernelPayload` implements [`Payload`]
//!    for a pinned page-cache slice and for `Arc<[u8]>` write buffers.
//!    [`Config::max_segment`] = the device's TSO limit when virtio offers
//!    `VIRTIO_NET_F_HOST_TSO4/6`, else the MSS.
//! 2. **Ingress**: the classifier hands an IPv4/IPv6 packet whose protocol
//!    is TCP to [`Endpoint::on_segment`] with the source and destination
//!    addresses from the IP header and the TCP bytes (header + payload);
//!    [`Endpoint::on_segment_unchecked`] when virtio set
//!    `VIRTIO_NET_HDR_F_DATA_VALID`. The receive buffer can be recycled at
//!    once: the engine copied what it keeps.
//! 3. **Egress**: after ingress, after socket calls, and when the clock
//!    reaches [`Endpoint::next_deadline`], call [`Endpoint::poll`]. For each
//!    [`Segment`]: build the IP header (addresses from the segment, payload
//!    length [`Segment::tcp_len`]) and the Ethernet header (ARP/NDP via
//!    smoltcp) into one small header buffer, append the TCP header bytes,
//!    then chain one virtio descriptor per [`Fragment`] pointing at the
//!    page itself. With `VIRTIO_NET_F_CSUM`, call
//!    [`Segment::fill_partial_checksum`] and set `NEEDS_CSUM` with
//!    `csum_start` at the TCP header and `csum_offset` 16; with TSO, set
//!    `gso_type` TCPV4/TCPV6 and `gso_size` = [`Segment::mss`] when
//!    [`Segment::needs_segmentation`]. Without offload, use
//!    [`Segment::split`] and [`Segment::fill_checksum`]. Keep the segment
//!    (its fragments hold the pages) until the device returns the
//!    descriptors, then drop it.
//! 4. **Sockets**: `listen`/`accept`, `connect`, `send` (pages from the
//!    page cache for `sendfile`, an owned buffer for `write`; check
//!    [`Endpoint::send_capacity`] for `EPOLLOUT`), `recv`, `shutdown`,
//!    `close` (orphans: the engine finishes the close and frees the
//!    connection), `abort`, [`Endpoint::set_nodelay`],
//!    [`Endpoint::set_keepalive`]. Readiness: [`Endpoint::readiness`] has
//!    the epoll bits; after each ingress/poll, [`Endpoint::take_events`]
//!    names the connections (and listeners) whose readiness changed, at
//!    most one event each, so only their waiters are woken.
//! 5. **Stats**: print [`Endpoint::stats`] (bytes per connection and per
//!    TIME-WAIT entry, per state) in `STATS`.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod cc;
mod conn;
pub mod cookie;
mod endpoint;
pub mod hash;
pub mod isn;
pub mod options;
mod payload;
pub mod recvq;
pub mod sack;
mod segment;
pub mod sendq;
pub mod seq;
pub mod timerheap;
pub mod timewait;
pub mod wire;

pub use conn::{ConnStats, Connection, State};
pub use endpoint::{ConnId, Counters, Endpoint, Event, Readiness, StateStats, Stats, TX_TURN};
pub use payload::{Fragment, Payload, SharedSlice};
pub use segment::Segment;
pub use seq::Seq;
pub use wire::{FourTuple, ParseError};

use core::fmt;

/// Microseconds: the engine's only notion of time, always passed in.
pub type Micros = u64;

/// Keep-alive probing (RFC 9293 section 3.8.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Micros,
    /// Time between probes.
    pub interval: Micros,
    /// Unanswered probes before the connection is dropped.
    pub probes: u32,
}

/// Engine configuration. Every size here bounds memory.
#[derive(Clone, Debug)]
pub struct Config {
    /// MSS we advertise (link MTU less IP and TCP headers).
    pub mss: u16,
    /// Largest segment handed to the device in one piece (TSO/GSO); the
    /// device cuts it at the MSS. Set to `mss` without offload.
    pub max_segment: u32,
    /// Receive window per connection: the most received-but-unread (plus
    /// out-of-order) data a connection may hold. Memory is used only for
    /// what actually arrives.
    pub recv_window: u32,
    /// Bytes of payload references a connection's send queue accepts
    /// (bounds the page-cache pages one connection pins).
    pub send_buffer: usize,
    /// Payload bytes of segments handed out by [`Endpoint::poll`] and not
    /// yet given back with [`Endpoint::release`] (the queue below TCP:
    /// the caller's transmit queue). Beyond it connections wait their turn
    /// (round robin, [`TX_TURN`] bytes each) instead of queueing more: a
    /// deep local queue delays every segment past its retransmission
    /// timer. `usize::MAX` (the default): no limit, nothing to release.
    pub tx_queue_limit: usize,
    /// TCP_NODELAY (on by default); off enables Nagle's algorithm.
    pub nodelay: bool,
    /// Offer window scaling (RFC 7323).
    pub window_scaling: bool,
    /// Offer timestamps (RFC 7323).
    pub timestamps: bool,
    /// Offer SACK (RFC 2018).
    pub sack: bool,
    /// Lower bound of the retransmission timeout.
    pub min_rto: Micros,
    /// Upper bound of the retransmission timeout (and of backoff).
    pub max_rto: Micros,
    /// Delayed-ACK timeout (an ACK goes at once every second full segment).
    pub delayed_ack: Micros,
    /// Retransmission timeouts of data before the connection is dropped.
    pub max_retries: u32,
    /// SYN / SYN-ACK retransmissions before giving up.
    pub syn_retries: u32,
    /// Keep-alive probing; off by default.
    pub keepalive: Option<Keepalive>,
    /// FIN-WAIT-2 timeout while the application still holds the connection.
    pub fin_wait2_timeout: Micros,
    /// FIN-WAIT-2 timeout once the application closed it.
    pub orphan_fin_wait2_timeout: Micros,
    /// TIME-WAIT duration (2 MSL).
    pub time_wait: Micros,
    /// Most TIME-WAIT records kept; the oldest is recycled beyond.
    pub time_wait_capacity: usize,
    /// Half-open (SYN-RECEIVED) connections per listener before SYN cookies.
    pub syn_backlog: usize,
    /// Connections (any state but TIME-WAIT) beyond which new SYNs are
    /// dropped: admission control when the memory budget is spent.
    pub max_connections: usize,
    /// Out-of-order segments kept per connection.
    pub max_ooo_segments: usize,
    /// SACK scoreboard ranges kept per connection.
    pub max_sack_ranges: usize,
    /// Ephemeral port range, inclusive.
    pub ephemeral_ports: (u16, u16),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mss: 1460,
            max_segment: 65_160, // 45 segments of 1448 (MSS less timestamps)
            recv_window: 256 * 1024,
            send_buffer: 1024 * 1024,
            tx_queue_limit: usize::MAX,
            nodelay: true,
            window_scaling: true,
            timestamps: true,
            sack: true,
            min_rto: 200_000,
            max_rto: 60_000_000,
            delayed_ack: 40_000,
            max_retries: 15,
            syn_retries: 6,
            keepalive: None,
            fin_wait2_timeout: 60_000_000,
            orphan_fin_wait2_timeout: 10_000_000,
            time_wait: 60_000_000,
            time_wait_capacity: 16_384,
            syn_backlog: 256,
            max_connections: 65_536,
            max_ooo_segments: 256,
            max_sack_ranges: 32,
            ephemeral_ports: (49152, 65535),
        }
    }
}

/// Errors of the application-facing calls and of ended connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Not now: the queue is full or empty.
    WouldBlock,
    /// The connection is closed (for sending, or altogether).
    Closed,
    /// The peer reset the connection.
    Reset,
    /// The peer refused the connection (RST to our SYN).
    Refused,
    /// Retransmissions, SYN retries, keep-alive or FIN-WAIT-2 timed out.
    TimedOut,
    /// The application aborted the connection.
    Aborted,
    /// No free port, or the port is already listened on.
    AddrInUse,
    /// A bad argument or an unknown handle.
    InvalidInput,
    /// The memory for a new connection could not be had (ENOBUFS).
    NoMemory,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl core::error::Error for Error {}
