//! Timer expiry: delayed ACK, retransmission, persist, keep-alive,
//! FIN-WAIT-2 and TIME-WAIT.

use super::{Connection, Recovery, State};
use crate::Error;
use crate::payload::Payload;

impl<P: Payload> Connection<P> {
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
        if self.retry_at.is_some_and(|t| t <= now) {
            // The output that follows every timer tries again.
            self.retry_at = None;
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
}
