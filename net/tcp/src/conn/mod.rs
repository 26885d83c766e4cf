//! One connection's transmission control block and its state machine
//! (RFC 9293 section 3.10), driven by segments, the application and timers.

mod input;
mod output;
mod timers;

use core::mem::size_of;

use crate::cc::{NewReno, RttEstimator};
use crate::options::{MAX_WSCALE, Options};
use crate::payload::Payload;
use crate::recvq::{OutOfOrder, RecvQueue};
use crate::sack::Scoreboard;
use crate::sendq::SendQueue;
use crate::seq::Seq;
use crate::wire::{FourTuple, Header};
use crate::{Config, Error};

/// Connection states (RFC 9293 section 3.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// No connection.
    Closed,
    /// Waiting for a SYN (listeners only; see [`crate::Endpoint::listen`]).
    Listen,
    /// Our SYN is out.
    SynSent,
    /// SYN received, our SYN-ACK is out.
    SynReceived,
    /// Open in both directions.
    Established,
    /// We closed; our FIN is not acknowledged yet.
    FinWait1,
    /// Our FIN is acknowledged; waiting for the peer's.
    FinWait2,
    /// Both closed at once; waiting for the ACK of our FIN.
    Closing,
    /// Both closed; lingering to absorb old segments.
    TimeWait,
    /// The peer closed; we may still send.
    CloseWait,
    /// The peer closed, then we did; waiting for the ACK of our FIN.
    LastAck,
}

impl State {
    /// All states, for statistics.
    pub const ALL: [State; 11] = [
        State::Closed,
        State::Listen,
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::Closing,
        State::TimeWait,
        State::CloseWait,
        State::LastAck,
    ];

    /// SYNs have been exchanged.
    pub fn synchronized(self) -> bool {
        !matches!(self, State::Closed | State::Listen | State::SynSent)
    }

    fn may_receive(self) -> bool {
        matches!(
            self,
            State::SynReceived | State::Established | State::FinWait1 | State::FinWait2
        )
    }
}

/// Per-connection event counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Segments emitted (a TSO segment counts once).
    pub segments_sent: u64,
    /// Payload bytes emitted, retransmissions included.
    pub bytes_sent: u64,
    /// Segments carrying retransmitted data (or a retransmitted SYN/FIN).
    pub retransmits: u64,
    /// Payload bytes retransmitted.
    pub bytes_retransmitted: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Fast retransmits (entries into fast recovery).
    pub fast_retransmits: u64,
    /// Zero-window probes sent.
    pub window_probes: u64,
    /// Keep-alive probes sent.
    pub keepalives: u64,
    /// Challenge ACKs sent (RFC 5961).
    pub challenge_acks: u64,
    /// Segments dropped by PAWS.
    pub paws_drops: u64,
    /// Pure ACKs sent.
    pub acks_sent: u64,
    /// Received payload bytes copied by the CPU into the connection (from
    /// the device's buffer, or moved between its queues), counted at the
    /// copy.
    pub bytes_copied_in: u64,
    /// Received payload bytes copied out to the application.
    pub bytes_copied_out: u64,
    /// Received segments dropped because the memory to queue them could
    /// not be had (the peer retransmits them).
    pub alloc_drops: u64,
}

/// What the peer's SYN said, kept for (re)building our SYN-ACK.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PeerSyn {
    pub wscale: Option<u8>,
    pub sack: bool,
    pub tsval: Option<u32>,
}

#[derive(Clone, Copy, Debug)]
struct Recovery {
    /// SND.MAX when recovery began (RFC 6582 "recover").
    recover: Seq,
    /// Entered by a retransmission timeout: everything below `recover`
    /// that is not SACKed counts as lost.
    after_rto: bool,
}

/// A TCP connection: sequence state, queues and timers. Created and driven
/// by [`crate::Endpoint`].
#[derive(Debug)]
pub struct Connection<P> {
    pub(crate) tuple: FourTuple,
    pub(crate) state: State,
    pub(crate) error: Option<Error>,
    /// The application has let go of the connection (`close`).
    pub(crate) orphaned: bool,
    /// Port of the listener this connection came from, while it is half-open.
    pub(crate) listener: Option<u16>,
    /// The scheduled timer-queue deadline, if any.
    pub(crate) timer_key: Option<u64>,
    /// Readiness last reported, and whether an event is queued.
    pub(crate) last_ready: crate::Readiness,
    pub(crate) event_queued: bool,

    // Send side.
    iss: Seq,
    snd_una: Seq,
    snd_nxt: Seq,
    snd_wnd: u32,
    max_snd_wnd: u32,
    snd_wl1: Seq,
    snd_wl2: Seq,
    snd_mss: u32,
    snd_wscale: u8,
    sendq: SendQueue<P>,
    /// Sequence number of our FIN, once the application closed.
    fin_seq: Option<Seq>,
    fin_sent: bool,
    scoreboard: Scoreboard,
    recovery: Option<Recovery>,
    /// Lowest lost byte not yet retransmitted in this recovery.
    rtx_next: Seq,
    /// Send the first lost segment regardless of the window (fast
    /// retransmit, or after a timeout).
    rtx_now: bool,
    /// SND.MAX at the last timeout or recovery (RFC 6582 section 3.2 step 2).
    high_rxt: Seq,
    dupacks: u32,
    cc: NewReno,
    rtt: RttEstimator,
    /// Karn timing without timestamps: (sequence that must be acknowledged,
    /// time sent).
    rtt_probe: Option<(Seq, u64)>,
    retries: u32,

    // Receive side.
    irs: Seq,
    rcv_nxt: Seq,
    /// Stream offset of RCV.NXT (bytes received in order).
    rcv_off: u64,
    /// Right edge of the window last advertised.
    rcv_adv: Seq,
    rcv_wscale: u8,
    recvq: RecvQueue,
    ooo: OutOfOrder,
    ooo_fin: Option<Seq>,
    fin_received: bool,
    /// Largest segment received: the peer's effective MSS, for "ACK every
    /// second full-sized segment".
    rcv_mss: u32,

    // Options.
    ts_enabled: bool,
    ts_offset: u32,
    ts_recent: u32,
    last_ack_sent: Seq,
    sack_ok: bool,
    peer_syn: PeerSyn,
    /// Low bits forced into the SYN-ACK's TSval (SYN cookies).
    ts_syn_bits: Option<u32>,

    // Acknowledgments.
    ack_now: bool,
    unacked_bytes: u32,

    // Timers (absolute, µs).
    rto_at: Option<u64>,
    /// A segment could not be queued for lack of memory: try again then.
    retry_at: Option<u64>,
    /// Set by `push` when a segment could not be queued.
    out_blocked: bool,
    /// Payload bytes this connection may hand out in this call of `output`
    /// (the endpoint's transmit budget, [`Config::tx_queue_limit`]); the
    /// last segment may pass it.
    pub(crate) tx_quota: usize,
    /// Payload bytes handed out in this call of `output`.
    pub(crate) tx_used: usize,
    /// `output` stopped with data to send because `tx_quota` ran out.
    pub(crate) tx_starved: bool,
    /// Queued in the endpoint's list of connections waiting for a turn.
    pub(crate) tx_listed: bool,
    delack_at: Option<u64>,
    persist_at: Option<u64>,
    persist_backoff: u32,
    keepalive_at: Option<u64>,
    keepalive_probes: u32,
    close_at: Option<u64>,

    /// Send a probe (seq SND.UNA - 1) on the next output.
    probe_now: bool,
    /// Send a RST on the next output.
    rst_now: bool,
    /// Answer an unacceptable ACK with a RST of this sequence number.
    rst_reply: Option<Seq>,
    challenge: (u64, u32),
    oow_ack_at: Option<u64>,
    stats: ConnStats,
    cfg: ConnConfig,
}

/// The parts of [`Config`] a connection needs (copied, small).
#[derive(Clone, Copy, Debug)]
struct ConnConfig {
    mss: u16,
    max_segment: u32,
    recv_window: u32,
    nodelay: bool,
    delayed_ack: u64,
    max_retries: u32,
    syn_retries: u32,
    keepalive: Option<crate::Keepalive>,
    max_rto: u64,
    fin_wait2: u64,
    orphan_fin_wait2: u64,
    time_wait: u64,
    max_ooo: usize,
    max_sack: usize,
    window_scaling: bool,
    timestamps: bool,
    sack: bool,
}

impl From<&Config> for ConnConfig {
    fn from(c: &Config) -> Self {
        ConnConfig {
            mss: c.mss,
            max_segment: c.max_segment.max(u32::from(c.mss)),
            recv_window: c.recv_window.clamp(1, 1 << 30),
            nodelay: c.nodelay,
            delayed_ack: c.delayed_ack,
            max_retries: c.max_retries,
            syn_retries: c.syn_retries,
            keepalive: c.keepalive,
            max_rto: c.max_rto,
            fin_wait2: c.fin_wait2_timeout,
            orphan_fin_wait2: c.orphan_fin_wait2_timeout,
            time_wait: c.time_wait,
            max_ooo: c.max_ooo_segments,
            max_sack: c.max_sack_ranges,
            window_scaling: c.window_scaling,
            timestamps: c.timestamps,
            sack: c.sack,
        }
    }
}

/// Least time between two ACKs answering dropped pure ACKs.
const OOW_ACK_INTERVAL: u64 = 100_000;

/// Challenge ACKs per connection per second (RFC 5961 section 7).
const CHALLENGE_ACK_LIMIT: u32 = 10;

impl<P: Payload> Connection<P> {
    fn new(cfg: &Config, tuple: FourTuple, iss: Seq, ts_offset: u32, state: State) -> Self {
        let c = ConnConfig::from(cfg);
        let rcv_wscale = if c.window_scaling {
            (0..MAX_WSCALE)
                .find(|s| c.recv_window >> s <= 0xffff)
                .unwrap_or(MAX_WSCALE)
        } else {
            0
        };
        Connection {
            tuple,
            state,
            error: None,
            orphaned: false,
            listener: None,
            timer_key: None,
            last_ready: crate::Readiness::default(),
            event_queued: false,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: Seq(0),
            snd_wl2: Seq(0),
            snd_mss: 536,
            snd_wscale: 0,
            sendq: SendQueue::default(),
            fin_seq: None,
            fin_sent: false,
            scoreboard: Scoreboard::default(),
            recovery: None,
            rtx_next: iss,
            rtx_now: false,
            high_rxt: iss,
            dupacks: 0,
            cc: NewReno::new(536),
            rtt: RttEstimator::new(cfg.min_rto, cfg.max_rto),
            rtt_probe: None,
            retries: 0,
            irs: Seq(0),
            rcv_nxt: Seq(0),
            rcv_off: 0,
            rcv_adv: Seq(0),
            rcv_wscale,
            recvq: RecvQueue::default(),
            ooo: OutOfOrder::default(),
            ooo_fin: None,
            fin_received: false,
            rcv_mss: 536,
            ts_enabled: false,
            ts_offset,
            ts_recent: 0,
            last_ack_sent: Seq(0),
            sack_ok: false,
            peer_syn: PeerSyn::default(),
            ts_syn_bits: None,
            ack_now: false,
            unacked_bytes: 0,
            rto_at: None,
            retry_at: None,
            out_blocked: false,
            tx_quota: usize::MAX,
            tx_used: 0,
            tx_starved: false,
            tx_listed: false,
            delack_at: None,
            persist_at: None,
            persist_backoff: 0,
            keepalive_at: None,
            keepalive_probes: 0,
            close_at: None,
            probe_now: false,
            rst_now: false,
            rst_reply: None,
            challenge: (0, 0),
            oow_ack_at: None,
            stats: ConnStats::default(),
            cfg: c,
        }
    }

    /// Active open: a connection in SYN-SENT whose SYN goes out on the
    /// next [`Connection::output`].
    pub(crate) fn connect(cfg: &Config, tuple: FourTuple, iss: Seq, ts_offset: u32) -> Self {
        let mut c = Self::new(cfg, tuple, iss, ts_offset, State::SynSent);
        c.peer_syn = PeerSyn {
            wscale: cfg.window_scaling.then_some(0),
            sack: cfg.sack,
            tsval: cfg.timestamps.then_some(0),
        };
        c
    }

    /// Passive open from a SYN: SYN-RECEIVED, SYN-ACK on the next output.
    pub(crate) fn accept_syn(
        cfg: &Config,
        tuple: FourTuple,
        iss: Seq,
        ts_offset: u32,
        syn: &Header,
    ) -> Self {
        let mut c = Self::new(cfg, tuple, iss, ts_offset, State::SynReceived);
        c.peer_syn = PeerSyn {
            wscale: syn.options.wscale,
            sack: syn.options.sack_permitted,
            tsval: syn.options.timestamps.map(|t| t.0),
        };
        c.take_syn(syn);
        c
    }

    /// A connection rebuilt from a valid SYN cookie: ESTABLISHED at once.
    /// `decoded` is what the cookie carried: (MSS, window scale, SACK).
    pub(crate) fn from_cookie(
        cfg: &Config,
        tuple: FourTuple,
        iss: Seq,
        ts_offset: u32,
        ack: &Header,
        decoded: (u16, Option<u8>, bool),
    ) -> Self {
        let (mss, wscale, sack) = decoded;
        let mut c = Self::new(cfg, tuple, iss, ts_offset, State::Established);
        let ts = ack.options.timestamps;
        c.peer_syn = PeerSyn {
            wscale,
            sack,
            tsval: ts.map(|t| t.0),
        };
        let syn = Header {
            seq: ack.seq - 1,
            window: ack.window,
            options: Options {
                mss: Some(mss),
                wscale,
                sack_permitted: sack,
                timestamps: ts,
                ..Options::default()
            },
            ..*ack
        };
        c.take_syn(&syn);
        c.snd_una = iss + 1;
        c.snd_nxt = iss + 1;
        c.rtx_next = c.snd_nxt;
        c.high_rxt = c.snd_nxt;
        c.rcv_adv = c.rcv_nxt + c.cfg.recv_window.min(0xffff);
        c.snd_wnd = u32::from(ack.window) << c.snd_wscale;
        c.max_snd_wnd = c.snd_wnd;
        c.snd_wl1 = ack.seq;
        c.snd_wl2 = ack.ack;
        c
    }

    /// Applies the peer's SYN: IRS, options.
    fn take_syn(&mut self, syn: &Header) {
        let o = &syn.options;
        self.irs = syn.seq;
        self.rcv_nxt = syn.seq + 1;
        self.last_ack_sent = self.rcv_nxt;
        if self.cfg.window_scaling && o.wscale.is_some() && self.peer_syn.wscale.is_some() {
            self.snd_wscale = o.wscale.unwrap_or(0);
        } else {
            self.snd_wscale = 0;
            self.rcv_wscale = 0;
        }
        self.sack_ok = self.cfg.sack && o.sack_permitted && self.peer_syn.sack;
        self.ts_enabled =
            self.cfg.timestamps && o.timestamps.is_some() && self.peer_syn.tsval.is_some();
        if let Some((v, _)) = o.timestamps {
            self.ts_recent = v;
        }
        let ts_room = if self.ts_enabled { 12 } else { 0 };
        let mss = u32::from(o.mss.unwrap_or(536)).clamp(64, u32::from(self.cfg.mss).max(64));
        self.snd_mss = mss - ts_room;
        self.cc = NewReno::new(self.snd_mss);
        self.snd_wnd = u32::from(syn.window);
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = syn.seq;
        self.snd_wl2 = syn.ack;
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The 4-tuple.
    pub fn tuple(&self) -> FourTuple {
        self.tuple
    }

    /// The error that ended the connection, if any.
    pub fn error(&self) -> Option<Error> {
        self.error
    }

    /// Heap and inline bytes this connection holds (the control block, the
    /// queues' bookkeeping, received data); payload referenced by the send
    /// queue is counted by [`Connection::send_queued`] instead.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + self.sendq.memory_bytes()
            + self.recvq.memory_bytes()
            + self.ooo.memory_bytes()
            + self.scoreboard.memory_bytes()
    }

    /// Bytes queued for sending and not yet acknowledged.
    pub fn send_queued(&self) -> usize {
        self.sendq.len()
    }

    /// Bytes ready for the application to read.
    pub fn recv_queued(&self) -> usize {
        self.recvq.len()
    }

    /// Whether the peer's FIN arrived (more data may still be queued).
    pub fn fin_received(&self) -> bool {
        self.fin_received
    }

    /// Whether the application may still queue data.
    pub fn may_send(&self) -> bool {
        self.error.is_none()
            && self.fin_seq.is_none()
            && matches!(
                self.state,
                State::SynSent | State::SynReceived | State::Established | State::CloseWait
            )
    }

    /// Whether the peer has closed its direction and all its data was read.
    pub fn at_eof(&self) -> bool {
        self.fin_received && self.recvq.is_empty()
    }

    /// The most this connection may have in flight now: the smaller of its
    /// congestion window and the peer's send window (bytes). A send queue
    /// sized from it (twice this, as Linux's `tcp_sndbuf_expand`) keeps the
    /// next round trip's data ready without holding more.
    pub fn window(&self) -> usize {
        self.cc.cwnd.min(self.snd_wnd) as usize
    }

    /// Smoothed RTT (µs), congestion window and slow-start threshold.
    pub fn cc_info(&self) -> (Option<u64>, u32, u32) {
        (self.rtt.srtt(), self.cc.cwnd, self.cc.ssthresh)
    }

    /// TCP_NODELAY for this connection.
    pub(crate) fn set_nodelay(&mut self, on: bool) {
        self.cfg.nodelay = on;
    }

    /// SO_KEEPALIVE (with its timings) for this connection.
    pub(crate) fn set_keepalive(&mut self, now: u64, k: Option<crate::Keepalive>) {
        self.cfg.keepalive = k;
        self.keepalive_probes = 0;
        self.keepalive_at = k
            .filter(|_| self.state.synchronized())
            .map(|k| now + k.idle);
    }

    /// Event counters.
    pub fn stats(&self) -> ConnStats {
        ConnStats {
            bytes_copied_in: self.recvq.copied_in + self.ooo.copied,
            bytes_copied_out: self.recvq.copied_out,
            ..self.stats
        }
    }

    /// The sender MSS in use.
    pub fn mss(&self) -> u32 {
        self.snd_mss
    }

    pub(crate) fn snd_nxt(&self) -> Seq {
        self.snd_nxt
    }

    pub(crate) fn rcv_nxt(&self) -> Seq {
        self.rcv_nxt
    }

    pub(crate) fn ts_recent(&self) -> Option<u32> {
        self.ts_enabled.then_some(self.ts_recent)
    }

    pub(crate) fn set_ts_syn_bits(&mut self, bits: u32) {
        self.ts_syn_bits = Some(bits);
    }

    /// Earliest timer deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        // A plain loop: the iterator chain (flatten + min) cost about three
        // times as many instructions, on every segment.
        let mut next = u64::MAX;
        for t in [
            self.rto_at,
            self.retry_at,
            self.delack_at,
            self.persist_at,
            self.keepalive_at,
            self.close_at,
        ] {
            next = next.min(t.unwrap_or(u64::MAX));
        }
        (next != u64::MAX).then_some(next)
    }

    fn ts_now(&self, now: u64) -> u32 {
        ((now / 1000) as u32).wrapping_add(self.ts_offset)
    }

    /// Receive window: the per-connection limit less what waits unread.
    fn rcv_window(&self) -> u32 {
        self.cfg.recv_window.saturating_sub(self.recvq.len() as u32)
    }

    fn flight(&self) -> u32 {
        self.snd_nxt.since(self.snd_una)
    }

    /// Stream offset of a sequence number at or above SND.UNA (after SYN).
    fn off(&self, s: Seq) -> u64 {
        let base = if self.snd_una == self.iss {
            self.iss + 1
        } else {
            self.snd_una
        };
        self.sendq.head() + u64::from(s.since(base))
    }

    fn queue_fin(&mut self) {
        let base = if self.snd_una == self.iss {
            self.iss + 1
        } else {
            self.snd_una
        };
        self.fin_seq = Some(base + self.sendq.len() as u32);
    }

    fn fin_acked(&self) -> bool {
        self.fin_sent && self.fin_seq.is_some_and(|f| self.snd_una > f)
    }

    fn set_state(&mut self, s: State, now: u64) {
        self.state = s;
        match s {
            State::FinWait2 => {
                let t = if self.orphaned {
                    self.cfg.orphan_fin_wait2
                } else {
                    self.cfg.fin_wait2
                };
                self.close_at = Some(now + t);
            }
            State::TimeWait => {
                self.close_at = Some(now + self.cfg.time_wait);
                self.rto_at = None;
                self.persist_at = None;
                self.keepalive_at = None;
            }
            State::Closed => {
                self.rto_at = None;
                self.delack_at = None;
                self.persist_at = None;
                self.keepalive_at = None;
                self.close_at = None;
                self.release_buffers();
            }
            _ => {}
        }
    }

    fn release_buffers(&mut self) {
        self.sendq = SendQueue::default();
        self.ooo.clear();
        self.scoreboard.clear();
    }

    /// Ends the connection with an error (queues dropped).
    pub(crate) fn fail(&mut self, e: Error, now: u64) {
        self.error.get_or_insert(e);
        self.set_state(State::Closed, now);
    }

    // ----- Application calls -----

    /// Queues a payload reference.
    pub(crate) fn send(&mut self, p: P, limit: usize) -> Result<(), Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.state {
            State::SynSent | State::SynReceived | State::Established | State::CloseWait => {}
            _ => return Err(Error::Closed),
        }
        if self.fin_seq.is_some() {
            return Err(Error::Closed);
        }
        if self.sendq.len() >= limit {
            return Err(Error::WouldBlock);
        }
        self.sendq.push(p);
        Ok(())
    }

    /// Copies received bytes out; `Ok(0)` at end of stream.
    pub(crate) fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.recvq.is_empty() {
            if self.fin_received {
                return Ok(0);
            }
            if let Some(e) = self.error {
                return Err(e);
            }
            return Err(Error::WouldBlock);
        }
        let before = self.rcv_window();
        let n = self.recvq.read(buf);
        // Receiver-side silly window avoidance (RFC 9293 3.8.6.2.2): tell
        // the peer once the window grew by an MSS or half the buffer.
        let grown = self
            .rcv_window()
            .saturating_sub(self.rcv_adv.since(self.rcv_nxt));
        if before < self.rcv_window()
            && grown >= u32::from(self.cfg.mss).min(self.cfg.recv_window / 2)
            && self.state.may_receive()
        {
            self.ack_now = true;
        }
        Ok(n)
    }

    /// Closes our direction: FIN after the queued data.
    pub(crate) fn shutdown(&mut self, now: u64) {
        match self.state {
            State::SynSent => self.set_state(State::Closed, now),
            State::SynReceived | State::Established => {
                self.queue_fin();
                self.set_state(State::FinWait1, now);
            }
            State::CloseWait => {
                self.queue_fin();
                self.set_state(State::LastAck, now);
            }
            _ => {}
        }
    }

    /// Aborts: RST to the peer, everything dropped.
    pub(crate) fn abort(&mut self, now: u64) {
        if self.state.synchronized() && self.state != State::TimeWait {
            self.rst_now = true;
        }
        self.fail(Error::Aborted, now);
    }
}
