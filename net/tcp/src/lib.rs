//! A sans-IO TCP engine whose send queue holds references to payload.
//!
//! (Design notes: see the sections below.)
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
pub mod timewait;
pub mod wire;

pub use conn::{ConnStats, Connection, State};
pub use endpoint::{ConnId, Counters, Endpoint, StateStats, Stats};
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
            max_segment: 65_160, // 44 segments of 1460 + headers < 64 KiB
            recv_window: 256 * 1024,
            send_buffer: 1024 * 1024,
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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl core::error::Error for Error {}
