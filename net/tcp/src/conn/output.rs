//! Segment emission: SYN/SYN-ACK, loss recovery, new data within the
//! windows, FIN, probes and ACKs.

use alloc::vec::Vec;

use super::{Connection, State};
use crate::options::{MAX_SACK_BLOCKS, Options};
use crate::payload::{Fragment, Payload};
use crate::segment::Segment;
use crate::seq::Seq;
use crate::wire::{Flags, Header, HeaderBuf};

/// How soon a connection tries again to queue a segment that found no
/// memory (µs).
const ALLOC_RETRY_US: u64 = 10_000;

impl<P: Payload> Connection<P> {
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
                let mut r = [(0, 0); MAX_SACK_BLOCKS];
                let n = self.ooo.sack_ranges(&mut r);
                for (i, &(s, e)) in r[..n].iter().enumerate() {
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

    /// Queues one segment in `out`. False (nothing queued, nothing changed)
    /// when `out` cannot grow: the segment is as good as lost on the wire
    /// (counted in `alloc_drops`), and the timers send it again.
    fn push(
        &mut self,
        h: Header,
        payload: Vec<Fragment<P>>,
        len: usize,
        out: &mut Vec<Segment<P>>,
    ) -> bool {
        if out.try_reserve(1).is_err() {
            self.stats.alloc_drops += 1;
            self.out_blocked = true;
            return false;
        }
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
        true
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
            let _ = self.push(h, Vec::new(), 0, out);
        }
        if self.rst_now {
            self.rst_now = false;
            let h = self.header(now, self.snd_nxt, Flags::RST | Flags::ACK);
            let _ = self.push(h, Vec::new(), 0, out);
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
                let _ = self.push(h, Vec::new(), 0, out);
                self.snd_nxt = self.iss + 1;
                if self.retries == 0 {
                    self.rtt_probe = Some((self.iss, now));
                }
                self.rto_at = Some(now + self.rtt.rto());
                self.arm_retry(now);
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
            let _ = self.push(h, Vec::new(), 0, out);
        }
        if self.ack_now && out.len() == sent_before {
            self.stats.acks_sent += 1;
            let h = self.header(now, self.snd_nxt, Flags::ACK);
            let _ = self.push(h, Vec::new(), 0, out);
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
        self.arm_retry(now);
    }

    /// After a segment could not be queued for lack of memory: a timer to
    /// try again, since nothing else may be armed (nothing in flight).
    fn arm_retry(&mut self, now: u64) {
        if core::mem::take(&mut self.out_blocked) && self.retry_at.is_none() {
            self.retry_at = Some(now + ALLOC_RETRY_US);
        }
    }

    fn send_segments(&mut self, now: u64, out: &mut Vec<Segment<P>>) {
        let mss = self.snd_mss;
        let fin_seq = self.fin_seq;
        for _ in 0..1024 {
            // 1. Lost segments first.
            if let Some((seq, len)) = self.next_lost() {
                if self.rtx_now || self.pipe() < self.cc.cwnd {
                    if self.tx_used >= self.tx_quota {
                        self.tx_starved = true;
                        break;
                    }
                    self.rtx_now = false;
                    if !self.transmit(now, seq, len, fin_seq, out) {
                        break;
                    }
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
            if len > 0 && self.tx_used >= self.tx_quota {
                self.tx_starved = true;
                break;
            }
            let seq = self.snd_nxt;
            if !self.transmit(now, seq, len + u32::from(fin_now), fin_seq, out) {
                break;
            }
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
    ) -> bool {
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
        if n < data_len {
            // Memory for the fragment list ran out: a shorter segment, and
            // the FIN (which follows all data) waits for a later one.
            if n == 0 {
                self.stats.alloc_drops += 1;
                self.out_blocked = true;
                return false;
            }
            flags = Flags::ACK;
        }
        if n > 0 {
            flags = flags | Flags::PSH;
        }
        let h = self.header(now, seq, flags);
        if !self.push(h, frags, n as usize, out) {
            return false;
        }
        let end = seq + n + u32::from(flags.has(Flags::FIN));
        self.tx_used += n as usize;
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
        true
    }
}
