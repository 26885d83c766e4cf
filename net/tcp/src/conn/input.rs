//! Segment arrival (RFC 9293 section 3.10.7, with RFC 5961 and RFC 7323).

use super::{CHALLENGE_ACK_LIMIT, Connection, OOW_ACK_INTERVAL, Recovery, State};
use crate::Error;
use crate::payload::Payload;
use crate::seq::Seq;
use crate::wire::{Flags, Header};

impl<P: Payload> Connection<P> {
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
            if !self.recvq.push(data) {
                // No memory to queue it: the segment is dropped, as if
                // lost (the duplicate ACK tells the peer where we are).
                self.stats.alloc_drops += 1;
                self.ack_now = true;
                return;
            }
            self.advance(data.len());
            let had_ooo = !self.ooo.is_empty();
            // Room is made before a segment leaves the out-of-order store,
            // so that moving it can never lose it.
            while self.recvq.reserve_chunk()
                && let Some(v) = self.ooo.pop_ready(self.rcv_off)
            {
                let n = v.len();
                if let Err(v) = self.recvq.push_owned(v) {
                    unreachable!("a reserved chunk slot was refused ({} bytes)", v.len());
                }
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
            let failed = self.ooo.alloc_failures;
            self.ooo
                .insert(off, data, self.rcv_off, hi, self.cfg.max_ooo);
            self.stats.alloc_drops += self.ooo.alloc_failures - failed;
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
}
