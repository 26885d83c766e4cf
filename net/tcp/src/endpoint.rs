//! The connection table: dispatches each incoming segment to its
//! connection, a listener, the TIME-WAIT table or a RST; owns the timer
//! queue. All state is in the value (no globals), so each CPU can own one.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::mem::size_of;
use core::net::{IpAddr, SocketAddr};

use hashbrown::HashMap;

use crate::conn::{Connection, State};
use crate::cookie;
use crate::hash::{Key, KeyedState, derive_key};
use crate::isn::{EphemeralPorts, initial_seq, ts_offset};
use crate::options::Options;
use crate::payload::Payload;
use crate::segment::Segment;
use crate::seq::Seq;
use crate::timerheap::TimerHeap;
use crate::timewait::{TimeWaitAction, TimeWaitRecord, TimeWaitTable};
use crate::wire::{Flags, FourTuple, Header, HeaderBuf, ParseError, verify_checksum};
use crate::{Config, Error};

/// A connection handle: a slot index and a generation, so that a stale
/// handle never reaches a newer connection in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// The slot index (small, dense: fits a file-descriptor table).
    pub fn index(self) -> u32 {
        self.index
    }

    /// The id as one `u64` (index, then generation: the same order), the
    /// network stack's hash key. Collections of
    /// `u64` keys share their code with the rest of the kernel, which keeps
    /// the image smaller.
    pub fn as_u64(self) -> u64 {
        (u64::from(self.index) << 32) | u64::from(self.generation)
    }
}

/// A connection on the heap, allocated fallibly: a one-element boxed array
/// (made from a `Vec`), because stable Rust has no `Box::try_new`.
#[derive(Debug)]
struct ConnBox<P>(Box<[Connection<P>; 1]>);

impl<P> ConnBox<P> {
    fn try_new(c: Connection<P>) -> Option<Self> {
        let mut v = Vec::new();
        v.try_reserve_exact(1).ok()?;
        v.push(c);
        Some(Self(v.into_boxed_slice().try_into().ok()?))
    }
}

impl<P> core::ops::Deref for ConnBox<P> {
    type Target = Connection<P>;
    fn deref(&self) -> &Connection<P> {
        &self.0[0]
    }
}

impl<P> core::ops::DerefMut for ConnBox<P> {
    fn deref_mut(&mut self) -> &mut Connection<P> {
        &mut self.0[0]
    }
}

#[derive(Debug)]
enum Slot<P> {
    Free,
    Live(ConnBox<P>),
    /// The connection ended while the application still holds the handle.
    Done(State, Option<Error>),
}

#[derive(Debug)]
struct Entry<P> {
    generation: u32,
    slot: Slot<P>,
}

#[derive(Debug)]
struct Listener {
    ip: Option<IpAddr>,
    backlog: usize,
    accept: VecDeque<ConnId>,
    half_open: usize,
    event_queued: bool,
    /// When this listener last answered with a cookie: cookie ACKs are only
    /// considered while a flood may be on (as Linux does), so that an
    /// attacker cannot forge connections by guessing 24-bit MACs at leisure.
    last_cookie: Option<u64>,
}

/// What epoll would report for a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Data to read, end of stream, or an error (`EPOLLIN`).
    pub readable: bool,
    /// [`Endpoint::send`] would accept data (`EPOLLOUT`).
    pub writable: bool,
    /// The connection ended with an error (`EPOLLERR`).
    pub error: bool,
    /// Both directions are closed (`EPOLLHUP`).
    pub hangup: bool,
    /// The peer closed its direction (`EPOLLRDHUP`).
    pub read_closed: bool,
}

/// A readiness change to pass on to waiting threads; at most one is queued
/// per connection or listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The connection's [`Readiness`] changed.
    Conn(ConnId),
    /// The listener on this port has a connection to accept.
    Accept(u16),
}

/// Cumulative event counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Segments handed to [`Endpoint::on_segment`].
    pub segments_in: u64,
    /// Segments dropped as malformed or with a bad checksum.
    pub malformed: u64,
    /// RSTs sent for segments that matched nothing.
    pub resets_sent: u64,
    /// SYN-ACKs sent as SYN cookies (half-open queue full).
    pub syn_cookies_sent: u64,
    /// Connections created from a valid cookie.
    pub syn_cookies_accepted: u64,
    /// ACKs to a listener with an invalid cookie (answered with RST).
    pub syn_cookies_rejected: u64,
    /// SYNs (and cookie ACKs) dropped because the accept queue was full or
    /// [`crate::Config::max_connections`] was reached.
    pub listen_overflows: u64,
    /// SYNs (and cookie ACKs) dropped because the memory for the new
    /// connection could not be had.
    pub alloc_refusals: u64,
    /// Control segments (RSTs, SYN-ACK cookies) and polled output dropped
    /// because the memory to queue them could not be had.
    pub alloc_drops: u64,
    /// TIME-WAIT records reopened by a new SYN.
    pub time_wait_reopened: u64,
    /// Connections that ended with an error.
    pub failed: u64,
    /// Received payload bytes the CPU copied into connections (device
    /// buffer to socket), over all connections, ended ones included.
    pub bytes_copied_in: u64,
    /// Received payload bytes copied out to applications (socket to app).
    pub bytes_copied_out: u64,
}

/// Count and memory of connections in one state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Connections (or TIME-WAIT records) in the state.
    pub count: usize,
    /// Bytes they hold.
    pub bytes: usize,
}

/// A snapshot for `STATS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Indexed by `State as usize` (see [`State::ALL`]).
    pub by_state: [StateStats; 11],
    /// Payload bytes referenced by send queues (page-cache pages pinned).
    pub send_queued: usize,
    /// Bytes received and not yet read.
    pub recv_queued: usize,
    /// Connections waiting in accept queues.
    pub accept_queued: usize,
    /// TIME-WAIT records recycled early because the table was full.
    pub time_wait_recycled: u64,
    /// Event counters.
    pub counters: Counters,
}

impl Stats {
    /// Count and bytes of one state.
    pub fn state(&self, s: State) -> StateStats {
        self.by_state[s as usize]
    }
}

/// The TCP engine for one set of connections.
#[derive(Debug)]
pub struct Endpoint<P> {
    cfg: Config,
    isn_key: Key,
    cookie_key: Key,
    ts_key: Key,
    slots: Vec<Entry<P>>,
    free: Vec<u32>,
    by_tuple: HashMap<FourTuple, ConnId, KeyedState>,
    listeners: HashMap<u16, Listener, KeyedState>,
    timewait: TimeWaitTable,
    /// One deadline per live connection, in memory reserved with its slot.
    timers: TimerHeap,
    out: Vec<Segment<P>>,
    events: Vec<Event>,
    ports: EphemeralPorts,
    counters: Counters,
    /// What is left of [`Config::tx_queue_limit`]: payload bytes that may
    /// still be handed out before the caller releases some.
    tx_room: usize,
    /// Connections that stopped with data to send for want of `tx_room`,
    /// in the order they stopped (each at most once; room reserved for
    /// every slot, so a push never allocates).
    tx_waiting: VecDeque<ConnId>,
}

/// Payload bytes a connection hands out per turn while the transmit budget
/// ([`Config::tx_queue_limit`]) is short: about one TSO segment, so that
/// connections share the queue below TCP round robin.
pub const TX_TURN: usize = 64 * 1024;

impl<P: Payload> Endpoint<P> {
    /// An endpoint with a 128-bit secret (from RDRAND/RDSEED in the kernel,
    /// a fixed value in tests). ISNs, ports, cookies, timestamp offsets and
    /// table hashing all derive their keys from it.
    pub fn new(cfg: Config, secret: Key) -> Self {
        let table = derive_key(&secret, b"table");
        Endpoint {
            isn_key: derive_key(&secret, b"isn"),
            cookie_key: derive_key(&secret, b"cookie"),
            ts_key: derive_key(&secret, b"ts"),
            slots: Vec::new(),
            free: Vec::new(),
            by_tuple: HashMap::with_hasher(KeyedState::new(table)),
            listeners: HashMap::with_hasher(KeyedState::new(table)),
            timewait: TimeWaitTable::new(cfg.time_wait_capacity, KeyedState::new(table)),
            timers: TimerHeap::new(),
            out: Vec::new(),
            events: Vec::new(),
            ports: EphemeralPorts::new(
                derive_key(&secret, b"ports"),
                cfg.ephemeral_ports.0,
                cfg.ephemeral_ports.1,
            ),
            counters: Counters::default(),
            tx_room: cfg.tx_queue_limit,
            tx_waiting: VecDeque::new(),
            cfg,
        }
    }

    /// Gives back transmit budget ([`Config::tx_queue_limit`]): `bytes` of
    /// the payload of segments from [`Endpoint::poll`] left the caller's
    /// queue (handed to the device, or dropped).
    pub fn release(&mut self, bytes: usize) {
        self.tx_room = self
            .tx_room
            .saturating_add(bytes)
            .min(self.cfg.tx_queue_limit);
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    // ----- Application side -----

    /// Listens on `addr` (an unspecified IP means every local address).
    /// `backlog` bounds the accept queue; the half-open queue is bounded by
    /// [`Config::syn_backlog`], beyond which SYN cookies answer.
    pub fn listen(&mut self, addr: SocketAddr, backlog: usize) -> Result<(), Error> {
        if addr.port() == 0 {
            return Err(Error::InvalidInput);
        }
        if self.listeners.contains_key(&addr.port()) {
            return Err(Error::AddrInUse);
        }
        // Room for this listener's accept event beside one per slot.
        self.events
            .try_reserve(self.slots.len() + self.listeners.len() + 1)
            .map_err(|_| Error::NoMemory)?;
        self.listeners.try_reserve(1).map_err(|_| Error::NoMemory)?;
        let ip = (!addr.ip().is_unspecified()).then_some(addr.ip());
        let l = Listener {
            ip,
            backlog: backlog.max(1),
            accept: VecDeque::new(),
            half_open: 0,
            event_queued: false,
            last_cookie: None,
        };
        self.listeners.insert(addr.port(), l);
        Ok(())
    }

    /// Stops listening; connections waiting in the accept queue are reset.
    pub fn unlisten(&mut self, now: u64, port: u16) {
        if let Some(l) = self.listeners.remove(&port) {
            for id in l.accept {
                self.abort(now, id);
            }
        }
    }

    /// The next established connection of the listener on `port`.
    pub fn accept(&mut self, port: u16) -> Option<ConnId> {
        self.listeners.get_mut(&port)?.accept.pop_front()
    }

    /// Connections waiting to be accepted on `port`.
    pub fn accept_queue_len(&self, port: u16) -> usize {
        self.listeners.get(&port).map_or(0, |l| l.accept.len())
    }

    /// Active open from `local_ip` (an ephemeral port is chosen) to `remote`.
    pub fn connect(
        &mut self,
        now: u64,
        local_ip: IpAddr,
        remote: SocketAddr,
    ) -> Result<ConnId, Error> {
        self.connect_from(now, SocketAddr::new(local_ip, 0), remote)
    }

    /// Active open from `local` (port 0: an ephemeral port) to `remote`.
    pub fn connect_from(
        &mut self,
        now: u64,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<ConnId, Error> {
        let local_ip = local.ip();
        if remote.port() == 0 || remote.ip().is_unspecified() || local_ip.is_unspecified() {
            return Err(Error::InvalidInput);
        }
        let (by_tuple, timewait) = (&self.by_tuple, &self.timewait);
        let mk = |p: u16| FourTuple {
            local_ip,
            remote_ip: remote.ip(),
            local_port: p,
            remote_port: remote.port(),
        };
        let in_use = |p: u16| {
            let t = mk(p);
            by_tuple.contains_key(&t) || timewait.get(&t).is_some()
        };
        let port = if local.port() != 0 {
            if in_use(local.port()) {
                return Err(Error::AddrInUse);
            }
            local.port()
        } else {
            self.ports
                .pick(local_ip, remote.ip(), remote.port(), in_use)
                .ok_or(Error::AddrInUse)?
        };
        let tuple = mk(port);
        let iss = initial_seq(&self.isn_key, &tuple, now);
        let conn = Connection::connect(&self.cfg, tuple, iss, ts_offset(&self.ts_key, &tuple));
        let id = self.try_insert(conn).ok_or(Error::NoMemory)?;
        self.after(now, id);
        Ok(id)
    }

    /// Queues a payload reference for sending. Fails with
    /// [`Error::WouldBlock`] while [`Config::send_buffer`] bytes are queued.
    pub fn send(&mut self, now: u64, id: ConnId, p: P) -> Result<(), Error> {
        let limit = self.cfg.send_buffer;
        self.live(id)?.send(p, limit)?;
        self.after(now, id);
        Ok(())
    }

    /// Queues several payload references, then builds segments once (so
    /// that references queued together, e.g. the pages of one `sendfile`
    /// call, leave in frames as large as the windows allow, not one per
    /// reference). Stops at the first that does not fit
    /// ([`Error::WouldBlock`], that one and the rest dropped); returns
    /// the bytes queued.
    pub fn send_batch(
        &mut self,
        now: u64,
        id: ConnId,
        ps: impl IntoIterator<Item = P>,
    ) -> Result<usize, Error> {
        let limit = self.cfg.send_buffer;
        let c = self.live(id)?;
        let mut n = 0;
        let mut result = Ok(());
        for p in ps {
            let len = p.len();
            if let Err(e) = c.send(p, limit) {
                result = Err(e);
                break;
            }
            n += len;
        }
        self.after(now, id);
        result.map(|()| n)
    }

    /// How many more bytes [`Endpoint::send`] accepts now.
    pub fn send_capacity(&self, id: ConnId) -> usize {
        self.get(id)
            .map_or(0, |c| self.cfg.send_buffer.saturating_sub(c.send_queued()))
    }

    /// Sets TCP_NODELAY (on by default, see [`Config::nodelay`]).
    pub fn set_nodelay(&mut self, now: u64, id: ConnId, on: bool) -> Result<(), Error> {
        self.live(id)?.set_nodelay(on);
        self.after(now, id);
        Ok(())
    }

    /// Sets keep-alive probing for one connection (`None`: off).
    pub fn set_keepalive(
        &mut self,
        now: u64,
        id: ConnId,
        keepalive: Option<crate::Keepalive>,
    ) -> Result<(), Error> {
        self.live(id)?.set_keepalive(now, keepalive);
        self.after(now, id);
        Ok(())
    }

    /// Reads received bytes; `Ok(0)` at end of stream.
    pub fn recv(&mut self, now: u64, id: ConnId, buf: &mut [u8]) -> Result<usize, Error> {
        if let Some(Entry {
            slot: Slot::Done(_, None),
            ..
        }) = self.entry(id)
        {
            return Ok(0);
        }
        let n = self.live(id)?.recv(buf)?;
        self.after(now, id);
        Ok(n)
    }

    /// Closes the sending direction (FIN after queued data); the handle
    /// stays valid.
    pub fn shutdown(&mut self, now: u64, id: ConnId) -> Result<(), Error> {
        self.live(id)?.shutdown(now);
        self.after(now, id);
        Ok(())
    }

    /// Lets go of the connection: a graceful close (FIN after queued data),
    /// or a reset when received data was left unread (RFC 2525 2.17). The
    /// handle is invalid afterwards.
    pub fn close(&mut self, now: u64, id: ConnId) {
        let Some(e) = self.entry_mut(id) else { return };
        match &mut e.slot {
            Slot::Live(c) => {
                c.orphaned = true;
                if c.recv_queued() > 0 {
                    c.abort(now);
                } else {
                    c.shutdown(now);
                }
                self.after(now, id);
            }
            _ => self.free_slot(id),
        }
    }

    /// Resets the connection and frees it.
    pub fn abort(&mut self, now: u64, id: ConnId) {
        if let Ok(c) = self.live(id) {
            c.orphaned = true;
            c.abort(now);
            self.after(now, id);
        } else {
            self.free_slot(id);
        }
    }

    /// The connection's state (`None` for an unknown handle). Once the
    /// connection ended (CLOSED, or TIME-WAIT handed to the TIME-WAIT
    /// table) the handle keeps reporting that state until
    /// [`Endpoint::close`].
    pub fn state(&self, id: ConnId) -> Option<State> {
        match &self.entry(id)?.slot {
            Slot::Live(c) => Some(c.state()),
            Slot::Done(s, _) => Some(*s),
            Slot::Free => None,
        }
    }

    /// The error that ended the connection, if any.
    pub fn error(&self, id: ConnId) -> Option<Error> {
        match &self.entry(id)?.slot {
            Slot::Live(c) => c.error(),
            Slot::Done(_, e) => *e,
            Slot::Free => None,
        }
    }

    /// The connection, for inspection (queues, memory, congestion state).
    pub fn get(&self, id: ConnId) -> Option<&Connection<P>> {
        match &self.entry(id)?.slot {
            Slot::Live(c) => Some(c),
            _ => None,
        }
    }

    /// Bytes held by one connection.
    pub fn memory_bytes(&self, id: ConnId) -> usize {
        self.get(id).map_or(0, Connection::memory_bytes)
    }

    /// Statistics: connections and bytes per state, TIME-WAIT records,
    /// counters. Walks every connection.
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            counters: self.counters,
            ..Stats::default()
        };
        for e in &self.slots {
            if let Slot::Live(c) = &e.slot {
                let cs = c.stats();
                s.counters.bytes_copied_in += cs.bytes_copied_in;
                s.counters.bytes_copied_out += cs.bytes_copied_out;
                let st = &mut s.by_state[c.state() as usize];
                st.count += 1;
                st.bytes += c.memory_bytes();
                s.send_queued += c.send_queued();
                s.recv_queued += c.recv_queued();
            }
        }
        let tw = &mut s.by_state[State::TimeWait as usize];
        tw.count += self.timewait.len();
        tw.bytes += self.timewait.memory_bytes();
        s.by_state[State::Listen as usize] = StateStats {
            count: self.listeners.len(),
            bytes: self.listeners.capacity() * size_of::<(u16, Listener)>(),
        };
        s.accept_queued = self.listeners.values().map(|l| l.accept.len()).sum();
        s.time_wait_recycled = self.timewait.recycled();
        s
    }

    /// Heap bytes of the tables themselves (slots, hash tables, timers).
    pub fn table_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Entry<P>>()
            + self.free.capacity() * 4
            + self.by_tuple.capacity() * (size_of::<(FourTuple, ConnId)>() + 1)
            + self.timers.memory_bytes()
            + self.timewait.memory_bytes()
    }

    // ----- Network side -----

    /// Handles one received TCP segment (header and payload) whose IP
    /// header said `src` to `dst`; verifies the checksum first.
    pub fn on_segment(
        &mut self,
        now: u64,
        src: IpAddr,
        dst: IpAddr,
        segment: &[u8],
    ) -> Result<(), ParseError> {
        if !verify_checksum(src, dst, segment) {
            self.counters.segments_in += 1;
            self.counters.malformed += 1;
            return Err(ParseError::Checksum);
        }
        self.on_segment_unchecked(now, src, dst, segment)
    }

    /// [`Endpoint::on_segment`] for a segment whose checksum the device
    /// already verified.
    pub fn on_segment_unchecked(
        &mut self,
        now: u64,
        src: IpAddr,
        dst: IpAddr,
        segment: &[u8],
    ) -> Result<(), ParseError> {
        self.counters.segments_in += 1;
        let (h, off) = Header::parse(segment).inspect_err(|_| self.counters.malformed += 1)?;
        let payload = &segment[off..];
        let tuple = FourTuple {
            local_ip: dst,
            remote_ip: src,
            local_port: h.dst_port,
            remote_port: h.src_port,
        };
        if let Some(&id) = self.by_tuple.get(&tuple) {
            if let Ok(c) = self.live(id) {
                c.on_segment(now, &h, payload);
                self.after(now, id);
            }
            return Ok(());
        }
        let f = h.flags;
        if self.timewait.get(&tuple).is_some() {
            let tsval = h.options.timestamps.map(|t| t.0);
            match self.timewait.on_segment(
                &tuple,
                f.has(Flags::SYN),
                f.has(Flags::RST),
                f.has(Flags::ACK),
                h.seq,
                tsval,
            ) {
                TimeWaitAction::Ack { seq, ack } => {
                    let ts = h.options.timestamps.map(|(v, _)| {
                        (
                            ((now / 1000) as u32).wrapping_add(ts_offset(&self.ts_key, &tuple)),
                            v,
                        )
                    });
                    let options = Options {
                        timestamps: ts,
                        ..Options::default()
                    };
                    self.emit_control(
                        &tuple,
                        Header {
                            seq,
                            ack,
                            flags: Flags::ACK,
                            options,
                            ..Header::default()
                        },
                    );
                    return Ok(());
                }
                TimeWaitAction::Ignore => return Ok(()),
                TimeWaitAction::Reopen => self.counters.time_wait_reopened += 1,
            }
        }
        let listening = self
            .listeners
            .get(&tuple.local_port)
            .is_some_and(|l| l.ip.is_none_or(|ip| ip == tuple.local_ip));
        if listening {
            self.on_listen(now, tuple, &h, payload);
        } else {
            self.reset(&tuple, &h, payload.len());
        }
        Ok(())
    }

    fn on_listen(&mut self, now: u64, tuple: FourTuple, h: &Header, payload: &[u8]) {
        let f = h.flags;
        let port = tuple.local_port;
        let Some(l) = self.listeners.get(&port) else {
            return;
        };
        let full = l.accept.len() >= l.backlog || self.by_tuple.len() >= self.cfg.max_connections;
        let half_open_full = l.half_open >= self.cfg.syn_backlog;
        if f.has(Flags::RST) {
            return;
        }
        if f.has(Flags::SYN) && !f.has(Flags::ACK) {
            if full {
                self.counters.listen_overflows += 1;
                return;
            }
            let ts_off = ts_offset(&self.ts_key, &tuple);
            if half_open_full {
                if let Some(l) = self.listeners.get_mut(&port) {
                    l.last_cookie = Some(now);
                }
                self.syn_cookie(now, tuple, h, ts_off);
                return;
            }
            let iss = initial_seq(&self.isn_key, &tuple, now);
            let mut c = Connection::accept_syn(&self.cfg, tuple, iss, ts_off, h);
            c.listener = Some(port);
            // Without memory for it, the SYN is dropped: the peer tries
            // again, and the connections already open are untouched.
            let Some(id) = self.try_insert(c) else {
                self.counters.alloc_refusals += 1;
                return;
            };
            if let Some(l) = self.listeners.get_mut(&port) {
                l.half_open += 1;
            }
            self.after(now, id);
            return;
        }
        if f.has(Flags::ACK) && !f.has(Flags::SYN) {
            let cookie = h.ack - 1;
            let recent = l
                .last_cookie
                .is_some_and(|t| now.saturating_sub(t) <= cookie::VALIDITY_US);
            let decoded = recent
                .then(|| cookie::decode(&self.cookie_key, &tuple, h.seq - 1, cookie, now))
                .flatten();
            let Some(mss) = decoded else {
                self.counters.syn_cookies_rejected += 1;
                self.reset(&tuple, h, payload.len());
                return;
            };
            if full {
                self.counters.listen_overflows += 1;
                return;
            }
            let (wscale, sack) = match h.options.timestamps {
                Some((_, tsecr)) => cookie::decode_ts_options(tsecr),
                None => (None, false),
            };
            let ts_off = ts_offset(&self.ts_key, &tuple);
            let mut c =
                Connection::from_cookie(&self.cfg, tuple, cookie, ts_off, h, (mss, wscale, sack));
            c.on_segment(now, h, payload);
            let Some(id) = self.try_insert(c) else {
                // The peer's next segment brings the cookie back.
                self.counters.alloc_refusals += 1;
                return;
            };
            self.counters.syn_cookies_accepted += 1;
            self.push_accept(port, id);
            self.after(now, id);
            return;
        }
        self.reset(&tuple, h, payload.len());
    }

    /// Answers a SYN statelessly with a cookie SYN-ACK.
    fn syn_cookie(&mut self, now: u64, tuple: FourTuple, h: &Header, ts_off: u32) {
        let peer_mss = h.options.mss.unwrap_or(536);
        let (isn, mss) = cookie::encode(&self.cookie_key, &tuple, h.seq, peer_mss, now);
        let mut syn = *h;
        syn.options.mss = Some(mss);
        let ts = h.options.timestamps.is_some() && self.cfg.timestamps;
        if !ts {
            // Without timestamps there is nowhere to keep these.
            syn.options.wscale = None;
            syn.options.sack_permitted = false;
        }
        let mut c: Connection<P> = Connection::accept_syn(&self.cfg, tuple, isn, ts_off, &syn);
        if ts {
            let ws = syn.options.wscale.filter(|_| self.cfg.window_scaling);
            let sack = syn.options.sack_permitted && self.cfg.sack;
            c.set_ts_syn_bits(cookie::encode_ts_options(0, ws, sack));
        }
        c.output(now, &mut self.out);
        self.counters.syn_cookies_sent += 1;
    }

    /// RST for a segment that matches nothing (RFC 9293 3.10.7.1).
    fn reset(&mut self, tuple: &FourTuple, h: &Header, payload_len: usize) {
        if h.flags.has(Flags::RST) {
            return;
        }
        let hdr = if h.flags.has(Flags::ACK) {
            Header {
                seq: h.ack,
                flags: Flags::RST,
                ..Header::default()
            }
        } else {
            let len = payload_len as u32
                + u32::from(h.flags.has(Flags::SYN))
                + u32::from(h.flags.has(Flags::FIN));
            Header {
                seq: Seq(0),
                ack: h.seq + len,
                flags: Flags::RST | Flags::ACK,
                ..Header::default()
            }
        };
        self.counters.resets_sent += 1;
        self.emit_control(tuple, hdr);
    }

    fn emit_control(&mut self, tuple: &FourTuple, mut h: Header) {
        h.src_port = tuple.local_port;
        h.dst_port = tuple.remote_port;
        if self.out.try_reserve(1).is_err() {
            // As if lost on the wire: the peer sends again.
            self.counters.alloc_drops += 1;
            return;
        }
        let mut header = HeaderBuf::default();
        h.emit(&mut header);
        self.out.push(Segment {
            local_ip: tuple.local_ip,
            remote_ip: tuple.remote_ip,
            header,
            payload: Vec::new(),
            payload_len: 0,
            mss: self.cfg.mss,
        });
    }

    /// Runs due timers and hands over every segment waiting to be sent
    /// (replies to received segments, data the application queued,
    /// retransmissions, delayed ACKs, probes, keep-alives). Only connections
    /// with a due timer are visited.
    pub fn poll(&mut self, now: u64, out: &mut Vec<Segment<P>>) {
        self.timewait.expire(now);
        while let Some((t, index, generation)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            let id = ConnId { index, generation };
            if let Ok(c) = self.live(id) {
                c.timer_key = None;
                c.on_timer(now);
                self.after(now, id);
            }
        }
        // Connections waiting for transmit budget, in turn while it lasts.
        // Each turn either spends budget or takes one off the list.
        while self.tx_room > 0
            && let Some(id) = self.tx_waiting.pop_front()
        {
            if let Ok(c) = self.live(id) {
                c.tx_listed = false;
                self.after_turn(now, id, true);
            }
        }
        if out.try_reserve(self.out.len()).is_ok() {
            out.append(&mut self.out);
        } else {
            // As if lost on the wire: retransmission timers cover data, the
            // peer covers the rest.
            self.counters.alloc_drops += self.out.len() as u64;
            let held: usize = self.out.iter().map(|s| s.payload_len).sum();
            self.release(held);
            self.out.clear();
        }
        if self.out.capacity() > 1024 {
            // A burst (a SYN flood's cookies) does not keep its memory.
            self.out = Vec::new();
        }
    }

    /// When [`Endpoint::poll`] must be called next (µs): a time at or before
    /// now when segments are already waiting.
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.out.is_empty() || (self.tx_room > 0 && !self.tx_waiting.is_empty()) {
            return Some(0);
        }
        let t = self.timers.first().map(|(t, _, _)| t);
        match (t, self.timewait.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What epoll would report for the connection (`None`: unknown handle).
    pub fn readiness(&self, id: ConnId) -> Option<Readiness> {
        match &self.entry(id)?.slot {
            Slot::Live(c) => Some(readiness_of(c, self.cfg.send_buffer)),
            Slot::Done(_, e) => Some(Readiness {
                readable: true,
                writable: false,
                error: e.is_some(),
                hangup: true,
                read_closed: true,
            }),
            Slot::Free => None,
        }
    }

    /// Moves the pending readiness events to `out` (at most one per
    /// connection and listener since the last call): the connections whose
    /// waiters to wake.
    /// When `out` cannot grow (memory is short), nothing moves and the
    /// events wait for the next call.
    pub fn take_events(&mut self, out: &mut Vec<Event>) {
        if out.try_reserve(self.events.len()).is_err() {
            return;
        }
        for ev in self.events.drain(..) {
            match ev {
                Event::Conn(id) => {
                    if let Some(Entry {
                        slot: Slot::Live(c),
                        generation,
                    }) = self.slots.get_mut(id.index as usize)
                        && *generation == id.generation
                    {
                        c.event_queued = false;
                    }
                }
                Event::Accept(port) => {
                    if let Some(l) = self.listeners.get_mut(&port) {
                        l.event_queued = false;
                    }
                }
            }
            out.push(ev);
        }
    }

    fn push_accept(&mut self, port: u16, id: ConnId) {
        if let Some(l) = self.listeners.get_mut(&port) {
            l.accept.push_back(id);
            if !l.event_queued {
                l.event_queued = true;
                self.events.push(Event::Accept(port));
            }
        }
    }

    // ----- Internals -----

    fn entry(&self, id: ConnId) -> Option<&Entry<P>> {
        self.slots
            .get(id.index as usize)
            .filter(|e| e.generation == id.generation)
    }

    fn entry_mut(&mut self, id: ConnId) -> Option<&mut Entry<P>> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|e| e.generation == id.generation)
    }

    fn live(&mut self, id: ConnId) -> Result<&mut Connection<P>, Error> {
        match self.entry_mut(id).map(|e| &mut e.slot) {
            Some(Slot::Live(c)) => Ok(c),
            Some(Slot::Done(_, e)) => Err(e.unwrap_or(Error::Closed)),
            _ => Err(Error::InvalidInput),
        }
    }

    /// Puts a new connection in the table, or drops it and returns `None`
    /// when the memory for it (its box, a slot, the tuple index) cannot be had.
    /// Nothing changes on failure, and removing it later never allocates
    /// (the free list has room for every slot).
    fn try_insert(&mut self, c: Connection<P>) -> Option<ConnId> {
        let tuple = c.tuple();
        self.by_tuple.try_reserve(1).ok()?;
        if self.free.is_empty() {
            let slots = self.slots.len() + 1;
            self.slots.try_reserve(1).ok()?;
            self.free.try_reserve(slots - self.free.len()).ok()?;
            self.timers.try_reserve_slots(slots).ok()?;
            self.tx_waiting
                .try_reserve(slots.saturating_sub(self.tx_waiting.len()))
                .ok()?;
            // Each connection queues at most one event at a time.
            self.events.try_reserve(slots + self.listeners.len()).ok()?;
        }
        let slot = Slot::Live(ConnBox::try_new(c)?);
        let id = if let Some(i) = self.free.pop() {
            let e = &mut self.slots[i as usize];
            e.slot = slot;
            ConnId {
                index: i,
                generation: e.generation,
            }
        } else {
            self.slots.push(Entry {
                generation: 0,
                slot,
            });
            ConnId {
                index: self.slots.len() as u32 - 1,
                generation: 0,
            }
        };
        self.by_tuple.insert(tuple, id);
        Some(id)
    }

    fn free_slot(&mut self, id: ConnId) {
        if let Some(e) = self.entry_mut(id) {
            e.slot = Slot::Free;
            e.generation = e.generation.wrapping_add(1);
            self.free.push(id.index);
        }
    }

    /// After anything touched a connection: send what it has to send,
    /// follow state changes (accept queue, TIME-WAIT, closing), reschedule
    /// its timer.
    fn after(&mut self, now: u64, id: ConnId) {
        self.after_turn(now, id, false);
    }

    /// [`Endpoint::after`]; `turn`: the connection's turn at the transmit
    /// budget (else, while others wait for one, it waits behind them).
    fn after_turn(&mut self, now: u64, id: ConnId, turn: bool) {
        let Some(Entry {
            slot: Slot::Live(c),
            ..
        }) = self.slots.get_mut(id.index as usize)
        else {
            return;
        };
        c.tx_quota = if self.cfg.tx_queue_limit == usize::MAX {
            usize::MAX
        } else if (turn || self.tx_waiting.is_empty()) && !c.tx_listed {
            self.tx_room.min(TX_TURN)
        } else {
            0
        };
        c.tx_starved = false;
        c.tx_used = 0;
        c.output(now, &mut self.out);
        self.tx_room = self.tx_room.saturating_sub(c.tx_used);
        if c.tx_starved && !c.tx_listed {
            c.tx_listed = true;
            self.tx_waiting.push_back(id);
        }
        let state = c.state();
        let old_key = c.timer_key;
        if let Some(port) = c.listener
            && state != State::SynReceived
        {
            c.listener = None;
            let established = state != State::Closed;
            if let Some(l) = self.listeners.get_mut(&port) {
                l.half_open = l.half_open.saturating_sub(1);
                if established {
                    l.accept.push_back(id);
                    if !l.event_queued {
                        l.event_queued = true;
                        self.events.push(Event::Accept(port));
                    }
                }
            } else if established {
                c.orphaned = true;
                c.abort(now);
                c.output(now, &mut self.out);
            }
            if !established {
                c.orphaned = true; // never seen by the application
            }
        }
        let (state, orphaned, error, tuple) = (c.state(), c.orphaned, c.error(), c.tuple());
        let tx_listed = c.tx_listed;
        let ready = readiness_of(c, self.cfg.send_buffer);
        if ready != c.last_ready && !orphaned {
            c.last_ready = ready;
            if !c.event_queued {
                c.event_queued = true;
                self.events.push(Event::Conn(id));
            }
        }
        // Unread data outlives a graceful end until the application reads it.
        let keep = !orphaned && error.is_none() && c.recv_queued() > 0;
        match state {
            State::TimeWait | State::Closed if !keep => {
                if old_key.is_some() {
                    self.timers.remove(id.index);
                }
                if tx_listed {
                    self.tx_waiting.retain(|&w| w != id);
                }
                if state == State::TimeWait {
                    let rec = TimeWaitRecord {
                        tuple,
                        snd_nxt: c.snd_nxt(),
                        rcv_nxt: c.rcv_nxt(),
                        ts_recent: c.ts_recent(),
                        expiry: now + self.cfg.time_wait,
                    };
                    self.timewait.insert(rec);
                }
                if error.is_some() {
                    self.counters.failed += 1;
                }
                let copies = c.stats();
                self.counters.bytes_copied_in += copies.bytes_copied_in;
                self.counters.bytes_copied_out += copies.bytes_copied_out;
                self.by_tuple.remove(&tuple);
                if orphaned {
                    self.free_slot(id);
                } else {
                    self.slots[id.index as usize].slot = Slot::Done(state, error);
                }
            }
            _ => {
                let new_key = c.next_deadline();
                if new_key != old_key {
                    c.timer_key = new_key;
                    self.timers.set(id.index, id.generation, new_key);
                }
            }
        }
    }
}

fn readiness_of<P: Payload>(c: &Connection<P>, send_buffer: usize) -> Readiness {
    let error = c.error().is_some();
    let done = matches!(c.state(), State::Closed | State::TimeWait);
    Readiness {
        readable: c.recv_queued() > 0 || c.fin_received() || error,
        writable: c.may_send() && c.state().synchronized() && c.send_queued() < send_buffer,
        error,
        hangup: done || error,
        read_closed: c.fin_received(),
    }
}
