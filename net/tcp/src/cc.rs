//! Retransmission timer (RFC 6298) and congestion control: NewReno (RFC 5681
//! slow start and congestion avoidance with byte counting, RFC 6582 fast
//! recovery); see the crate documentation for how loss recovery uses SACK.

/// Microseconds.
pub type Micros = u64;

/// RFC 6298 round-trip estimator and retransmission timeout.
#[derive(Clone, Debug)]
pub struct RttEstimator {
    srtt: Option<Micros>,
    rttvar: Micros,
    rto: Micros,
    backoff: u32,
    min_rto: Micros,
    max_rto: Micros,
}

impl RttEstimator {
    /// RFC 6298 section 2.1: 1 s before the first measurement.
    pub const INITIAL_RTO: Micros = 1_000_000;
    /// Clock granularity G.
    const GRANULARITY: Micros = 1_000;

    /// A fresh estimator with the given bounds.
    pub fn new(min_rto: Micros, max_rto: Micros) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: 0,
            rto: Self::INITIAL_RTO.clamp(min_rto, max_rto),
            backoff: 0,
            min_rto,
            max_rto,
        }
    }

    /// Feeds one RTT measurement (sections 2.2 and 2.3); clears the backoff.
    pub fn sample(&mut self, r: Micros) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                self.rttvar = (3 * self.rttvar + s.abs_diff(r)) / 4;
                self.srtt = Some((7 * s + r) / 8);
            }
        }
        let s = self.srtt.unwrap_or(r);
        self.rto = (s + Self::GRANULARITY.max(4 * self.rttvar)).clamp(self.min_rto, self.max_rto);
        self.backoff = 0;
    }

    /// The current timeout, with exponential backoff applied (section 5.5).
    pub fn rto(&self) -> Micros {
        self.rto
            .saturating_mul(1 << self.backoff.min(20))
            .min(self.max_rto)
    }

    /// Doubles the timeout after an expiry.
    pub fn back_off(&mut self) {
        if self.rto() < self.max_rto {
            self.backoff += 1;
        }
    }

    /// Clears the backoff (new data acknowledged, section 5.7 spirit).
    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// The smoothed RTT, if measured.
    pub fn srtt(&self) -> Option<Micros> {
        self.srtt
    }
}

/// NewReno congestion window, in bytes.
#[derive(Clone, Debug)]
pub struct NewReno {
    /// Congestion window.
    pub cwnd: u32,
    /// Slow-start threshold.
    pub ssthresh: u32,
    mss: u32,
    /// Bytes acknowledged since cwnd last grew in congestion avoidance.
    acked: u32,
}

impl NewReno {
    /// Initial window of 10 segments (RFC 6928).
    pub fn new(mss: u32) -> Self {
        NewReno {
            cwnd: 10 * mss,
            ssthresh: u32::MAX,
            mss,
            acked: 0,
        }
    }

    /// The sender's maximum segment size.
    pub fn mss(&self) -> u32 {
        self.mss
    }

    /// New data acknowledged outside loss recovery.
    pub fn on_ack(&mut self, bytes: u32) {
        if self.cwnd < self.ssthresh {
            // Slow start, counting every byte acknowledged (as Linux does
            // since 3.9), not RFC 3465's limit of L = 2 SMSS per ACK: a
            // receiver behind segmentation and receive offload (a virtio
            // NIC, GRO) acknowledges a 64 KiB super-segment with one ACK,
            // and L = 2 would then grow the window by 2 segments per 44,
            // turning slow start nearly linear. The window still at most
            // doubles per round trip (it grows by what was acknowledged),
            // and stops at ssthresh.
            let grown = self.cwnd.saturating_add(bytes);
            self.cwnd = if self.ssthresh == u32::MAX {
                grown
            } else {
                grown.min(self.ssthresh.max(self.cwnd))
            };
        } else {
            self.acked = self.acked.saturating_add(bytes);
            if self.acked >= self.cwnd {
                self.acked -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(self.mss);
            }
        }
    }

    /// Entering fast recovery with `flight` bytes outstanding (RFC 5681
    /// equation 4; RFC 6582 sets cwnd to ssthresh, without inflation: the
    /// sender counts the pipe instead).
    pub fn on_loss(&mut self, flight: u32) {
        self.ssthresh = (flight / 2).max(2 * self.mss);
        self.cwnd = self.ssthresh;
        self.acked = 0;
    }

    /// A retransmission timeout: one segment, slow start again.
    pub fn on_timeout(&mut self, flight: u32) {
        self.ssthresh = (flight / 2).max(2 * self.mss);
        self.cwnd = self.mss;
        self.acked = 0;
    }

    /// Leaving fast recovery on a full acknowledgment (RFC 6582 step 3).
    pub fn on_recovery_end(&mut self, flight: u32) {
        self.cwnd = self.ssthresh.min(flight.max(self.mss) + self.mss);
        self.acked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_follows_rfc6298() {
        let mut r = RttEstimator::new(200_000, 60_000_000);
        assert_eq!(r.rto(), 1_000_000);
        r.sample(100_000);
        // SRTT 100 ms, RTTVAR 50 ms: RTO = 100 + 200 = 300 ms.
        assert_eq!(r.rto(), 300_000);
        r.back_off();
        r.back_off();
        assert_eq!(r.rto(), 1_200_000);
        for _ in 0..30 {
            r.back_off();
        }
        assert_eq!(r.rto(), 60_000_000);
        r.sample(100_000);
        assert!(r.rto() >= 200_000 && r.rto() < 300_000);
    }

    #[test]
    fn newreno_window() {
        let mut c = NewReno::new(1000);
        c.on_ack(1000);
        assert_eq!(c.cwnd, 11_000);
        c.on_loss(20_000);
        assert_eq!((c.cwnd, c.ssthresh), (10_000, 10_000));
        for _ in 0..10 {
            c.on_ack(1000);
        }
        assert_eq!(c.cwnd, 11_000, "one MSS per window in congestion avoidance");
        c.on_timeout(8000);
        assert_eq!((c.cwnd, c.ssthresh), (1000, 4000));
    }

    #[test]
    fn slow_start_counts_stretch_acks_in_full() {
        // One ACK for a 44-segment super-segment grows the window by 44
        // segments, not 2: the window doubles per round trip however the
        // receiver batches its ACKs.
        let mut c = NewReno::new(1000);
        c.on_ack(10_000);
        assert_eq!(c.cwnd, 20_000);
        c.on_ack(20_000);
        assert_eq!(c.cwnd, 40_000);
        // Slow start ends at ssthresh, not past it.
        c.on_loss(30_000);
        assert_eq!((c.cwnd, c.ssthresh), (15_000, 15_000));
        c.on_timeout(15_000);
        assert_eq!((c.cwnd, c.ssthresh), (1000, 7500));
        c.on_ack(50_000);
        assert_eq!(c.cwnd, 7500);
        // Then congestion avoidance: one segment per window.
        c.on_ack(7500);
        assert_eq!(c.cwnd, 8500);
    }
}
