//! One connection's transmission control block and its state machine
//! (RFC 9293 section 3.10), driven by segments, the application and timers.

use alloc::vec::Vec;
use core::mem::size_of;

use crate::cc::{NewReno, RttEstimator};
use crate::options::{MAX_WSCALE, Options};
use crate::payload::{Fragment, Payload};
use crate::recvq::{OutOfOrder, RecvQueue};
use crate::sack::Scoreboard;
use crate::segment::Segment;
use crate::sendq::SendQueue;
use crate::seq::Seq;
use crate::wire::{Flags, FourTuple, Header, HeaderBuf};
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
        [
            self.rto_at,
            self.delack_at,
            self.persist_at,
            self.keepalive_at,
            self.close_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn ts_now(&self, now: u64) -> u32 {
        ((now / 1000) as u32).wrapping_add(self.ts_offset)
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

    // ----- Segment arrival -----

    /// Processes a segment for this connection (RFC 9293 section 3.10.7).
    pub(crate) fn on_segment(&mut self, now: u64, h: &Header, payload: &[u8]) {
        if self.state == State::SynSent {
            self.on_segment_syn_sent(now, h);
            return;
        }
        if !self.state.synchronized() || self.state == State::Closed {
            return;
        }
        let f = h.flags;
        // A retransmitted SYN while our SYN-ACK is out: send it again.
        if self.state == State::SynReceived
            && f.has(Flags::SYN)
            && !f.has(Flags::ACK)
            && h.seq == self.irs
        {
            self.snd_nxt = self.iss;
            return;
        }
        self.keepalive_probes = 0;
        if let Some(k) = self.cfg.keepalive {
            self.keepalive_at = Some(now + k.idle);
        }

        // PAWS (RFC 7323 section 5), without the 24-day idle rule.
        if self.ts_enabled
            && !f.has(Flags::RST)
            && let Some((tsval, _)) = h.options.timestamps
            && Seq(tsval) < Seq(self.ts_recent)
        {
            self.stats.paws_drops += 1;
            self.dup_ack(now, payload.is_empty());
            return;
        }

        // SYN in a synchronized state, whatever its sequence number
        // (RFC 5961 section 4).
        if f.has(Flags::SYN) && !f.has(Flags::RST) {
            self.challenge_ack(now);
            return;
        }

        // Sequence acceptability.
        let seg_len =
            payload.len() as u32 + u32::from(f.has(Flags::SYN)) + u32::from(f.has(Flags::FIN));
        let wnd = self.rcv_adv.since(self.rcv_nxt);
        let end = self.rcv_nxt + wnd;
        let acceptable = match (seg_len, wnd) {
            (0, 0) => h.seq == self.rcv_nxt,
            (0, _) => h.seq.in_range(self.rcv_nxt, end),
            (_, 0) => false,
            (n, _) => {
                h.seq.in_range(self.rcv_nxt, end) || (h.seq + (n - 1)).in_range(self.rcv_nxt, end)
            }
        };
        if !acceptable {
            // Zero-window data still has its ACK processed (RFC 9293
            // 3.10.7.4), so that window probes from us do not deadlock.
            if !f.has(Flags::RST) {
                self.dup_ack(now, payload.is_empty() && !f.has(Flags::FIN));
                if f.has(Flags::ACK) && h.seq == self.rcv_nxt && wnd == 0 {
                    self.process_ack(now, h, false);
                }
            }
            return;
        }

        // RST (RFC 5961 section 3).
        if f.has(Flags::RST) {
            if h.seq == self.rcv_nxt {
                let e = if self.state == State::SynReceived && self.listener.is_none() {
                    Error::Refused
                } else {
                    Error::Reset
                };
                self.fail(e, now);
            } else {
                self.challenge_ack(now);
            }
            return;
        }

        if !f.has(Flags::ACK) {
            return;
        }

        // Timestamp bookkeeping (RFC 7323 section 4.3).
        if let Some((tsval, _)) = h.options.timestamps
            && self.ts_enabled
            && Seq(tsval) >= Seq(self.ts_recent)
            && h.seq <= self.last_ack_sent
        {
            self.ts_recent = tsval;
        }

        if self.state == State::SynReceived {
            if h.ack.in_range(self.snd_una + 1, self.snd_nxt + 1) {
                self.set_state(State::Established, now);
                self.snd_wnd = u32::from(h.window) << self.snd_wscale;
                self.max_snd_wnd = self.snd_wnd;
                self.snd_wl1 = h.seq;
                self.snd_wl2 = h.ack;
            } else {
                self.rst_reply = Some(h.ack);
                return;
            }
        }

        if !self.process_ack(now, h, !payload.is_empty() || f.has(Flags::FIN)) {
            return;
        }
        if self.state == State::Closed || self.state == State::TimeWait {
            return;
        }

        // Data.
        if !payload.is_empty() {
            if self.state.may_receive() {
                self.on_data(now, h.seq, payload);
            } else {
                self.ack_now = true;
            }
        }

        // FIN.
        if f.has(Flags::FIN) {
            let fin = h.seq + payload.len() as u32;
            if self.state.may_receive() && fin.in_range(self.rcv_nxt, self.rcv_adv + 1) {
                self.ooo_fin = Some(fin);
            }
            self.ack_now = true;
        }
        self.take_fin(now);
    }

    /// The ACK field (RFC 9293 3.10.7.4 "fifth", RFC 5961 section 5).
    /// Returns false when the segment must be dropped.
    fn process_ack(&mut self, now: u64, h: &Header, has_data: bool) -> bool {
        let ack = h.ack;
        if ack > self.snd_nxt || ack < self.snd_una - self.max_snd_wnd.max(1) {
            self.dup_ack(now, !has_data);
            return false;
        }
        self.take_sack(h);
        let window = u32::from(h.window) << self.snd_wscale;
        let window_changed = window != self.snd_wnd;
        if ack > self.snd_una {
            self.on_new_ack(now, h);
        } else if ack == self.snd_una
            && !has_data
            && !window_changed
            && self.flight() > 0
            && !h.flags.has(Flags::SYN)
        {
            self.on_dupack();
        }
        // Window update (RFC 9293 3.10.7.4).
        if self.snd_wl1 < h.seq || (self.snd_wl1 == h.seq && self.snd_wl2 <= ack) {
            self.snd_wnd = window;
            self.max_snd_wnd = self.max_snd_wnd.max(window);
            self.snd_wl1 = h.seq;
            self.snd_wl2 = ack;
            if window > 0 {
                self.persist_at = None;
                self.persist_backoff = 0;
            }
        }
        // Our FIN acknowledged?
        if self.fin_acked() {
            match self.state {
                State::FinWait1 => self.set_state(State::FinWait2, now),
                State::Closing => self.set_state(State::TimeWait, now),
                State::LastAck => {
                    self.set_state(State::Closed, now);
                    return false;
                }
                _ => {}
            }
        }
        true
    }

    fn take_sack(&mut self, h: &Header) {
        if !self.sack_ok {
            return;
        }
        for &(l, r) in h.options.sack_blocks() {
            // Ignore D-SACK and blocks outside what is outstanding.
            if l >= r || r > self.snd_nxt || r <= self.snd_una || l < self.snd_una {
                continue;
            }
            self.scoreboard.insert(l, r, self.cfg.max_sack);
        }
    }

    fn on_new_ack(&mut self, now: u64, h: &Header) {
        let ack = h.ack;
        let mut acked = ack.since(self.snd_una);
        if self.snd_una == self.iss {
            acked -= 1; // our SYN
        }
        let data_acked = (acked as usize).min(self.sendq.len());
        self.sendq.ack(data_acked);
        self.snd_una = ack;
        self.scoreboard.prune(ack);
        self.rtx_next = self.rtx_next.max(ack);
        self.retries = 0;
        self.rtt.reset_backoff();

        // RTT: timestamps when the peer echoes ours, else Karn.
        match (self.ts_enabled, h.options.timestamps) {
            (true, Some((_, tsecr))) if tsecr != 0 => {
                let ms = self.ts_now(now).wrapping_sub(tsecr);
                if ms < 60_000 {
                    self.rtt.sample(u64::from(ms) * 1000);
                }
            }
            _ => {
                if let Some((s, t)) = self.rtt_probe
                    && ack > s
                {
                    self.rtt.sample(now.saturating_sub(t));
                    self.rtt_probe = None;
                }
            }
        }

        match self.recovery {
            Some(r) if ack >= r.recover => {
                self.recovery = None;
                self.cc.on_recovery_end(self.flight());
            }
            Some(r) => {
                // Partial ACK (RFC 6582 step 4): the next hole is lost too.
                // With SACK the scoreboard names the holes; a partial ACK
                // alone does not prove the next segment lost (it may be
                // reordered).
                if r.after_rto {
                    self.cc.on_ack(acked);
                } else if !self.sack_ok || self.scoreboard.is_empty() && self.dupacks >= 3 {
                    self.rtx_now = true;
                }
            }
            None => self.cc.on_ack(acked),
        }
        self.dupacks = 0;
        self.rto_at = (self.flight() > 0).then(|| now + self.rtt.rto());
    }

    fn on_dupack(&mut self) {
        self.dupacks += 1;
        if self.recovery.is_some() {
            return;
        }
        let sack_loss = self.sack_ok && self.scoreboard.sacked_bytes() >= 3 * self.snd_mss;
        if (self.dupacks >= 3 || sack_loss) && self.snd_una >= self.high_rxt {
            // Fast retransmit and NewReno fast recovery.
            self.recovery = Some(Recovery {
                recover: self.snd_nxt,
                after_rto: false,
            });
            self.high_rxt = self.snd_nxt;
            self.cc.on_loss(self.flight());
            self.rtx_next = self.snd_una;
            self.rtx_now = true;
            self.rtt_probe = None;
            self.stats.fast_retransmits += 1;
        }
    }

    fn on_data(&mut self, now: u64, seq: Seq, payload: &[u8]) {
        // Trim to [RCV.NXT, right edge).
        let mut seq = seq;
        let mut data = payload;
        if seq < self.rcv_nxt {
            let skip = (self.rcv_nxt.since(seq) as usize).min(data.len());
            data = &data[skip..];
            seq = self.rcv_nxt;
        }
        // Nothing beyond the window, nor beyond a FIN already seen.
        let mut room = self.rcv_adv.since(seq) as usize;
        if let Some(fin) = self.ooo_fin {
            room = room.min(fin.since(seq) as usize);
        }
        data = &data[..data.len().min(room)];
        if data.is_empty() {
            self.ack_now = true;
            return;
        }
        let off = self.rcv_off + u64::from(seq.since(self.rcv_nxt));
        if seq == self.rcv_nxt {
            self.recvq.push(data);
            self.advance(data.len());
            let had_ooo = !self.ooo.is_empty();
            while let Some(v) = self.ooo.pop_ready(self.rcv_off) {
                let n = v.len();
                self.recvq.push_owned(v);
                self.advance(n);
            }
            self.unacked_bytes += data.len() as u32;
            let seg = (data.len() as u32).min(u32::from(self.cfg.mss));
            self.rcv_mss = self.rcv_mss.max(seg);
            if had_ooo || self.unacked_bytes >= 2 * self.rcv_mss || self.cfg.delayed_ack == 0 {
                self.ack_now = true;
            } else if self.delack_at.is_none() {
                self.delack_at = Some(now + self.cfg.delayed_ack);
            }
        } else {
            let hi = self.rcv_off + u64::from(self.rcv_adv.since(self.rcv_nxt));
            self.ooo
                .insert(off, data, self.rcv_off, hi, self.cfg.max_ooo);
            // Out-of-order data is acknowledged at once (RFC 5681 4.2), with
            // SACK blocks.
            self.ack_now = true;
        }
    }

    fn advance(&mut self, n: usize) {
        self.rcv_nxt += n as u32;
        self.rcv_off += n as u64;
    }

    /// Consumes the peer's FIN once everything before it arrived.
    fn take_fin(&mut self, now: u64) {
        let Some(fin) = self.ooo_fin else { return };
        if fin != self.rcv_nxt {
            return;
        }
        // Nothing follows a FIN: whatever was queued beyond it is junk.
        self.ooo.clear();
        self.ooo_fin = None;
        self.fin_received = true;
        self.rcv_nxt += 1;
        self.ack_now = true;
        match self.state {
            State::SynReceived | State::Established => self.set_state(State::CloseWait, now),
            State::FinWait1 if self.fin_acked() => self.set_state(State::TimeWait, now),
            State::FinWait1 => self.set_state(State::Closing, now),
            State::FinWait2 => self.set_state(State::TimeWait, now),
            _ => {}
        }
    }

    /// An ACK for a segment that is dropped. For pure ACKs it is rate
    /// limited, as Linux does (`tcp_invalid_ratelimit`): two ends that
    /// disagree about the sequence space would otherwise ACK each other
    /// forever.
    fn dup_ack(&mut self, now: u64, pure: bool) {
        if pure {
            if self
                .oow_ack_at
                .is_some_and(|t| now.saturating_sub(t) < OOW_ACK_INTERVAL)
            {
                return;
            }
            self.oow_ack_at = Some(now);
        }
        self.ack_now = true;
    }

    fn challenge_ack(&mut self, now: u64) {
        let (start, n) = self.challenge;
        if now.saturating_sub(start) >= 1_000_000 {
            self.challenge = (now, 1);
        } else if n < CHALLENGE_ACK_LIMIT {
            self.challenge.1 += 1;
        } else {
            return;
        }
        self.stats.challenge_acks += 1;
        self.ack_now = true;
    }

    fn on_segment_syn_sent(&mut self, now: u64, h: &Header) {
        let f = h.flags;
        if f.has(Flags::ACK) && (h.ack <= self.iss || h.ack > self.snd_nxt) {
            if !f.has(Flags::RST) {
                self.rst_reply = Some(h.ack);
            }
            return;
        }
        if f.has(Flags::RST) {
            if f.has(Flags::ACK) {
                self.fail(Error::Refused, now);
            }
            return;
        }
        if !f.has(Flags::SYN) {
            return;
        }
        self.take_syn(h);
        self.rcv_adv = self.rcv_nxt + self.cfg.recv_window.min(0xffff);
        if f.has(Flags::ACK) {
            if let Some((_, tsecr)) = h.options.timestamps
                && self.ts_enabled
                && tsecr != 0
            {
                let ms = self.ts_now(now).wrapping_sub(tsecr);
                self.rtt.sample(u64::from(ms.min(60_000)) * 1000);
            } else if let Some((_, t)) = self.rtt_probe.take() {
                self.rtt.sample(now.saturating_sub(t));
            }
            self.snd_una = h.ack;
            self.rtx_next = h.ack;
            self.high_rxt = h.ack;
            self.rto_at = None;
            self.retries = 0;
            self.rtt.reset_backoff();
            self.set_state(State::Established, now);
            self.ack_now = true;
            if let Some(k) = self.cfg.keepalive {
                self.keepalive_at = Some(now + k.idle);
            }
        } else {
            // Simultaneous open: SYN-ACK from SYN-RECEIVED.
            self.set_state(State::SynReceived, now);
            self.snd_nxt = self.iss;
            self.rto_at = None;
        }
    }

    // ----- Timers -----

    /// Runs the timers due at `now`.
    pub(crate) fn on_timer(&mut self, now: u64) {
        if self.close_at.is_some_and(|t| t <= now) {
            self.close_at = None;
            match self.state {
                State::FinWait2 => self.fail(Error::TimedOut, now),
                State::TimeWait => self.set_state(State::Closed, now),
                _ => {}
            }
            return;
        }
        if self.delack_at.is_some_and(|t| t <= now) {
            self.delack_at = None;
            self.ack_now = true;
        }
        if self.rto_at.is_some_and(|t| t <= now) {
            self.rto_at = None;
            self.on_rto(now);
        }
        if self.persist_at.is_some_and(|t| t <= now) {
            self.persist_at = None;
            if self.snd_wnd == 0 && self.flight() == 0 {
                self.probe_now = true;
                self.stats.window_probes += 1;
                self.persist_backoff = (self.persist_backoff + 1).min(16);
            }
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.keepalive_at = None;
            if let Some(k) = self.cfg.keepalive
                && matches!(self.state, State::Established | State::CloseWait)
            {
                if self.keepalive_probes >= k.probes {
                    self.fail(Error::TimedOut, now);
                    return;
                }
                self.keepalive_probes += 1;
                self.stats.keepalives += 1;
                self.probe_now = true;
                self.keepalive_at = Some(now + k.interval);
            }
        }
    }

    fn on_rto(&mut self, now: u64) {
        match self.state {
            State::SynSent | State::SynReceived => {
                if self.snd_nxt == self.iss {
                    return; // not sent yet: output sends it
                }
                self.retries += 1;
                self.stats.timeouts += 1;
                self.stats.retransmits += 1;
                if self.retries > self.cfg.syn_retries {
                    self.fail(Error::TimedOut, now);
                    return;
                }
                self.rtt.back_off();
                self.snd_nxt = self.iss; // resend the SYN
                self.rtt_probe = None;
            }
            State::Closed | State::TimeWait => {}
            _ => {
                let flight = self.flight();
                if flight == 0 {
                    return;
                }
                self.retries += 1;
                if self.retries > self.cfg.max_retries {
                    self.fail(Error::TimedOut, now);
                    return;
                }
                self.stats.timeouts += 1;
                self.rtt.back_off();
                self.cc.on_timeout(flight);
                // Keep what the peer SACKed through the first timeout (only
                // the holes are resent); a second timeout in a row suggests
                // it reneged (RFC 2018 section 8), so forget it then.
                if self.retries > 1 {
                    self.scoreboard.clear();
                }
                self.recovery = Some(Recovery {
                    recover: self.snd_nxt,
                    after_rto: true,
                });
                self.high_rxt = self.snd_nxt;
                self.rtx_next = self.snd_una;
                self.rtx_now = true;
                self.dupacks = 0;
                self.rtt_probe = None;
            }
        }
    }

    // ----- Output -----

    fn rcv_window(&self) -> u32 {
        self.cfg.recv_window.saturating_sub(self.recvq.len() as u32)
    }

    fn header(&mut self, now: u64, seq: Seq, flags: Flags) -> Header {
        let syn = flags.has(Flags::SYN);
        let mut o = Options::default();
        let window;
        if syn {
            window = self.cfg.recv_window.min(0xffff) as u16;
            o.mss = Some(self.cfg.mss);
            if self.cfg.window_scaling && self.peer_syn.wscale.is_some() {
                o.wscale = Some(self.rcv_wscale);
            }
            o.sack_permitted = self.cfg.sack && self.peer_syn.sack;
            if self.cfg.timestamps && self.peer_syn.tsval.is_some() {
                let mut tsval = self.ts_now(now);
                if let Some(bits) = self.ts_syn_bits {
                    tsval = (tsval & !0x3f) | bits;
                }
                o.timestamps = Some((tsval, self.peer_syn.tsval.unwrap_or(0)));
            }
        } else {
            // Never move the right edge left (RFC 9293 3.8.6.2.2).
            let wnd = self.rcv_window().max(self.rcv_adv.since(self.rcv_nxt));
            let field = ((wnd + (1 << self.rcv_wscale) - 1) >> self.rcv_wscale).min(0xffff);
            window = field as u16;
            let edge = self.rcv_nxt + (field << self.rcv_wscale);
            if edge > self.rcv_adv {
                self.rcv_adv = edge;
            }
            if self.ts_enabled {
                o.timestamps = Some((self.ts_now(now), self.ts_recent));
            }
            if self.sack_ok && !self.ooo.is_empty() {
                let mut r = Vec::new();
                self.ooo
                    .sack_ranges(crate::options::MAX_SACK_BLOCKS, &mut r);
                for (i, (s, e)) in r.into_iter().enumerate() {
                    // Out-of-order data always lies above RCV.NXT.
                    let l = self.rcv_nxt + s.saturating_sub(self.rcv_off) as u32;
                    let rr = self.rcv_nxt + e.saturating_sub(self.rcv_off) as u32;
                    o.sack[i] = (l, rr);
                    o.sack_len = i as u8 + 1;
                }
            }
        }
        let ack = if flags.has(Flags::ACK) {
            self.rcv_nxt
        } else {
            Seq(0)
        };
        Header {
            src_port: self.tuple.local_port,
            dst_port: self.tuple.remote_port,
            seq,
            ack,
            flags,
            window,
            options: o,
        }
    }

    fn push(
        &mut self,
        h: Header,
        payload: Vec<Fragment<P>>,
        len: usize,
        out: &mut Vec<Segment<P>>,
    ) {
        let mut header = HeaderBuf::default();
        h.emit(&mut header);
        if h.flags.has(Flags::ACK) {
            self.last_ack_sent = self.rcv_nxt;
            self.ack_now = false;
            self.delack_at = None;
            self.unacked_bytes = 0;
        }
        out.push(Segment {
            local_ip: self.tuple.local_ip,
            remote_ip: self.tuple.remote_ip,
            header,
            payload,
            payload_len: len,
            mss: self.snd_mss as u16,
        });
    }

    /// Bytes in flight as RFC 6675 counts them ("pipe"): outstanding bytes
    /// less those SACKed and those deemed lost and not yet retransmitted.
    fn pipe(&self) -> u32 {
        let flight = self.flight();
        let sacked = self.scoreboard.sacked_bytes();
        let Some((lo, hi)) = self.lost_range() else {
            return flight.saturating_sub(sacked);
        };
        let lost_pending = hi.since(lo) - self.scoreboard.sacked_in(lo, hi);
        let mut pipe = flight.saturating_sub(sacked).saturating_sub(lost_pending);
        if self.scoreboard.is_empty() && self.recovery.is_some_and(|r| !r.after_rto) {
            // NewReno without SACK: each duplicate ACK is a segment that
            // left the network (the classic window inflation).
            pipe = pipe.saturating_sub(self.dupacks.saturating_mul(self.snd_mss));
        }
        pipe
    }

    /// The lost, not yet retransmitted region `[rtx_next, end)`.
    fn lost_range(&self) -> Option<(Seq, Seq)> {
        let r = self.recovery?;
        // The first unacknowledged segment is presumed lost when recovery
        // starts (RFC 6675 step 4.3), and after a partial ACK without SACK
        // (RFC 6582).
        let first = if self.rtx_now {
            self.snd_una + self.snd_mss
        } else {
            self.snd_una
        };
        let end = if r.after_rto {
            r.recover
        } else if !self.scoreboard.is_empty() {
            // RFC 6675 IsLost(): unSACKed bytes with at least DupThresh
            // segments' worth SACKed above them. Bytes just below the
            // highest SACK may merely be reordered.
            let edge = self
                .scoreboard
                .lost_edge(3 * self.snd_mss)
                .unwrap_or(self.snd_una);
            edge.max(first)
        } else {
            first
        };
        let lo = self.rtx_next.max(self.snd_una);
        let end = end.min(self.snd_nxt);
        (lo < end).then_some((lo, end))
    }

    /// The next lost segment to retransmit: `(seq, len)` in sequence space.
    fn next_lost(&self) -> Option<(Seq, u32)> {
        let (mut lo, hi) = self.lost_range()?;
        while let Some(e) = self.scoreboard.covering(lo) {
            lo = e;
        }
        if lo >= hi {
            return None;
        }
        let mut end = hi.min(lo + self.snd_mss);
        if let Some(s) = self.scoreboard.next_start(lo) {
            end = end.min(s);
        }
        Some((lo, end.since(lo)))
    }

    /// Emits what the connection has to send: SYN or SYN-ACK, retransmissions,
    /// new data within the windows, FIN, probes and pure ACKs.
    pub(crate) fn output(&mut self, now: u64, out: &mut Vec<Segment<P>>) {
        if let Some(seq) = self.rst_reply.take() {
            let h = Header {
                src_port: self.tuple.local_port,
                dst_port: self.tuple.remote_port,
                seq,
                flags: Flags::RST,
                ..Header::default()
            };
            self.push(h, Vec::new(), 0, out);
        }
        if self.rst_now {
            self.rst_now = false;
            let h = self.header(now, self.snd_nxt, Flags::RST | Flags::ACK);
            self.push(h, Vec::new(), 0, out);
        }
        match self.state {
            State::Closed | State::Listen => return,
            State::SynSent | State::SynReceived if self.snd_nxt == self.iss => {
                let flags = if self.state == State::SynSent {
                    Flags::SYN
                } else {
                    Flags::SYN | Flags::ACK
                };
                let h = self.header(now, self.iss, flags);
                if self.state == State::SynReceived {
                    self.rcv_adv = self.rcv_nxt + u32::from(h.window);
                }
                self.push(h, Vec::new(), 0, out);
                self.snd_nxt = self.iss + 1;
                if self.retries == 0 {
                    self.rtt_probe = Some((self.iss, now));
                }
                self.rto_at = Some(now + self.rtt.rto());
                return;
            }
            State::SynSent => return,
            _ => {}
        }
        let sent_before = out.len();
        if self.state != State::SynReceived && self.state != State::TimeWait {
            self.send_segments(now, out);
        }
        if self.probe_now {
            self.probe_now = false;
            // A segment below the window: the peer answers with an ACK that
            // carries its current window (zero-window probe, keep-alive).
            let h = self.header(now, self.snd_una - 1, Flags::ACK);
            self.push(h, Vec::new(), 0, out);
        }
        if self.ack_now && out.len() == sent_before {
            self.stats.acks_sent += 1;
            let h = self.header(now, self.snd_nxt, Flags::ACK);
            self.push(h, Vec::new(), 0, out);
        }
        // Persist timer: data waiting, zero window, nothing in flight.
        let waiting = self.off(self.snd_nxt) < self.sendq.tail()
            || (self.fin_seq.is_some() && !self.fin_sent);
        if self.snd_wnd == 0 && waiting && self.flight() == 0 {
            if self.persist_at.is_none() {
                let t = self
                    .rtt
                    .rto()
                    .saturating_mul(1 << self.persist_backoff.min(16));
                self.persist_at = Some(now + t.min(self.cfg.max_rto));
            }
        } else {
            self.persist_at = None;
        }
        if self.flight() > 0 && self.rto_at.is_none() {
            self.rto_at = Some(now + self.rtt.rto());
        }
    }

    fn send_segments(&mut self, now: u64, out: &mut Vec<Segment<P>>) {
        let mss = self.snd_mss;
        let fin_seq = self.fin_seq;
        for _ in 0..1024 {
            // 1. Lost segments first.
            if let Some((seq, len)) = self.next_lost() {
                if self.rtx_now || self.pipe() < self.cc.cwnd {
                    self.rtx_now = false;
                    self.transmit(now, seq, len, fin_seq, out);
                    self.rtx_next = seq + len;
                    continue;
                }
                break;
            }
            self.rtx_now = false;
            // 2. New data, within the peer's window and the congestion window.
            let queued_end = self.sendq.tail();
            let off = self.off(self.snd_nxt);
            let avail = queued_end.saturating_sub(off) as u32;
            let wnd_room = (self.snd_una + self.snd_wnd).since(self.snd_nxt);
            let cwnd_room = self.cc.cwnd.saturating_sub(self.pipe());
            let mut len = avail.min(wnd_room).min(cwnd_room).min(self.cfg.max_segment);
            if len > mss && len < avail {
                len -= len % mss;
            }
            let fin_now =
                fin_seq.is_some_and(|f| f == self.snd_nxt + len) && !self.fin_sent && len == avail;
            if len == 0 && !fin_now {
                break;
            }
            if len < mss && len < avail {
                // Sender silly window avoidance: wait for a full segment
                // unless nothing is in flight.
                if self.flight() > 0 {
                    break;
                }
            } else if len < mss && !self.cfg.nodelay && self.flight() > 0 && !fin_now {
                // Nagle.
                break;
            }
            let seq = self.snd_nxt;
            self.transmit(now, seq, len + u32::from(fin_now), fin_seq, out);
            if self.rtt_probe.is_none() && !self.ts_enabled && self.recovery.is_none() {
                self.rtt_probe = Some((seq, now));
            }
        }
    }

    /// Sends `[seq, seq + len)` (sequence space; FIN included when it falls
    /// inside) from the send queue.
    fn transmit(
        &mut self,
        now: u64,
        seq: Seq,
        len: u32,
        fin_seq: Option<Seq>,
        out: &mut Vec<Segment<P>>,
    ) {
        let mut data_len = len;
        let mut flags = Flags::ACK;
        if let Some(f) = fin_seq
            && f.in_range(seq, seq + len)
        {
            data_len = f.since(seq);
            flags = flags | Flags::FIN;
        }
        let mut frags = Vec::new();
        let n = self
            .sendq
            .fragments(self.off(seq), data_len as usize, &mut frags) as u32;
        if n > 0 {
            flags = flags | Flags::PSH;
        }
        let h = self.header(now, seq, flags);
        self.push(h, frags, n as usize, out);
        let end = seq + n + u32::from(flags.has(Flags::FIN));
        self.stats.segments_sent += 1;
        self.stats.bytes_sent += u64::from(n);
        if seq < self.snd_nxt {
            self.stats.retransmits += 1;
            self.stats.bytes_retransmitted += u64::from(n);
        }
        if flags.has(Flags::FIN) {
            self.fin_sent = true;
        }
        if end > self.snd_nxt {
            self.snd_nxt = end;
        }
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rtt.rto());
        }
    }
}
