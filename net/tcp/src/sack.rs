//! The sender's SACK scoreboard (RFC 2018, RFC 6675): which bytes above
//! SND.UNA the peer reported as received.

use alloc::vec::Vec;

use crate::seq::Seq;

/// Disjoint, sorted `[start, end)` ranges above SND.UNA, at most `cap` of
/// them (a hostile peer cannot make it grow further).
#[derive(Debug, Default)]
pub struct Scoreboard {
    ranges: Vec<(Seq, Seq)>,
}

impl Scoreboard {
    /// Records a SACK block already clamped to `(snd_una, snd_max]`.
    pub fn insert(&mut self, mut l: Seq, mut r: Seq, cap: usize) {
        if l >= r {
            return;
        }
        // SACK is advisory: a block there is no memory for is ignored
        // (before anything is merged, so nothing recorded is lost).
        if self.ranges.len() < cap && self.ranges.try_reserve(1).is_err() {
            return;
        }
        // Merge with every range that overlaps or touches [l, r).
        let mut i = 0;
        while i < self.ranges.len() {
            let (a, b) = self.ranges[i];
            if b >= l && a <= r {
                l = l.min(a);
                r = r.max(b);
                self.ranges.remove(i);
            } else {
                i += 1;
            }
        }
        if self.ranges.len() >= cap {
            return;
        }
        let pos = self
            .ranges
            .iter()
            .position(|&(a, _)| a > l)
            .unwrap_or(self.ranges.len());
        self.ranges.insert(pos, (l, r));
    }

    /// Forgets what lies below the cumulative ACK.
    pub fn prune(&mut self, snd_una: Seq) {
        self.ranges.retain_mut(|(a, b)| {
            *a = a.max(snd_una);
            *b > snd_una
        });
        if self.ranges.is_empty() {
            self.ranges = Vec::new();
        }
    }

    /// Forgets everything (after a retransmission timeout).
    pub fn clear(&mut self) {
        self.ranges = Vec::new();
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Bytes reported received above SND.UNA.
    pub fn sacked_bytes(&self) -> u32 {
        self.ranges.iter().map(|&(a, b)| b.since(a)).sum()
    }

    /// One past the highest SACKed byte.
    pub fn high(&self) -> Option<Seq> {
        self.ranges.last().map(|&(_, b)| b)
    }

    /// If `s` is SACKed, the end of its range.
    pub fn covering(&self, s: Seq) -> Option<Seq> {
        self.ranges
            .iter()
            .find(|&&(a, b)| s.in_range(a, b))
            .map(|&(_, b)| b)
    }

    /// The start of the first SACKed range above `s`.
    pub fn next_start(&self, s: Seq) -> Option<Seq> {
        self.ranges.iter().map(|&(a, _)| a).find(|&a| a > s)
    }

    /// RFC 6675 `IsLost` as a boundary: unSACKed bytes below the returned
    /// sequence number have at least `thresh` SACKed bytes above them.
    pub fn lost_edge(&self, thresh: u32) -> Option<Seq> {
        let mut above = 0u32;
        for &(a, b) in self.ranges.iter().rev() {
            above = above.saturating_add(b.since(a));
            if above >= thresh {
                return Some(a);
            }
        }
        None
    }

    /// SACKed bytes inside `[lo, hi)`.
    pub fn sacked_in(&self, lo: Seq, hi: Seq) -> u32 {
        self.ranges
            .iter()
            .map(|&(a, b)| b.min(hi).since(a.max(lo)))
            .sum()
    }

    /// Heap bytes.
    pub fn memory_bytes(&self) -> usize {
        self.ranges.capacity() * core::mem::size_of::<(Seq, Seq)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_caps() {
        let mut s = Scoreboard::default();
        s.insert(Seq(10), Seq(20), 3);
        s.insert(Seq(30), Seq(40), 3);
        s.insert(Seq(20), Seq(30), 3);
        assert_eq!(s.len(), 1);
        assert_eq!(s.sacked_bytes(), 30);
        s.insert(Seq(50), Seq(60), 3);
        s.insert(Seq(70), Seq(80), 3);
        s.insert(Seq(90), Seq(95), 3);
        assert_eq!(s.len(), 3, "capped");
        assert_eq!(s.covering(Seq(55)), Some(Seq(60)));
        assert_eq!(s.next_start(Seq(41)), Some(Seq(50)));
        assert_eq!(s.sacked_in(Seq(15), Seq(55)), 30);
        assert_eq!(s.lost_edge(10), Some(Seq(70)));
        assert_eq!(s.lost_edge(11), Some(Seq(50)));
        assert_eq!(s.lost_edge(1000), None);
        s.prune(Seq(35));
        assert_eq!(s.sacked_bytes(), 5 + 10 + 10);
    }
}
