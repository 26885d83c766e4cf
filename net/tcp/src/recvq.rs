//! Received data: the in-order queue the application reads from, and the
//! out-of-order store that SACK blocks describe. Each received byte is copied
//! once, from the device's buffer into a buffer sized to the segment; memory
//! follows what is queued, never a preallocated ring.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::mem::size_of;

use uk_core::copy::{append_into, copy_into};

/// Segments smaller than this are appended to the previous chunk, so that a
/// peer sending 1-byte segments cannot make per-chunk overhead dominate.
const COALESCE_BELOW: usize = 512;

/// In-order data waiting for the application.
#[derive(Debug, Default)]
pub struct RecvQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already read.
    read: usize,
    len: usize,
    /// Payload bytes copied into the queue, counted where the copy happens.
    pub copied_in: u64,
    /// Payload bytes copied out to the application.
    pub copied_out: u64,
}

impl RecvQueue {
    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes (one copy).
    pub fn push(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        self.len += b.len();
        if let Some(last) = self.chunks.back_mut()
            && (b.len() < COALESCE_BELOW || last.len() < COALESCE_BELOW)
            && last.len() + b.len() <= 64 * 1024
        {
            append_into(&mut self.copied_in, last, b);
            return;
        }
        let mut v = Vec::with_capacity(b.len());
        append_into(&mut self.copied_in, &mut v, b);
        self.chunks.push_back(v);
    }

    /// Appends an owned buffer without copying it again.
    pub fn push_owned(&mut self, v: Vec<u8>) {
        if v.len() < COALESCE_BELOW {
            self.push(&v);
        } else {
            self.len += v.len();
            self.chunks.push_back(v);
        }
    }

    /// Copies up to `out.len()` bytes to `out`, releasing what was read.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let avail = &front[self.read..];
            let k = avail.len().min(out.len() - n);
            copy_into(&mut self.copied_out, &mut out[n..n + k], &avail[..k]);
            n += k;
            self.read += k;
            if self.read == front.len() {
                self.chunks.pop_front();
                self.read = 0;
            }
        }
        self.len -= n;
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
        n
    }

    /// Heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<Vec<u8>>()
            + self.chunks.iter().map(Vec::capacity).sum::<usize>()
    }
}

/// Out-of-order segments keyed by stream offset, never overlapping.
#[derive(Debug, Default)]
pub struct OutOfOrder {
    segs: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
    /// Payload bytes copied in (and moved when a segment is trimmed).
    pub copied: u64,
    /// Start of the most recently received segment (its block goes first in
    /// the SACK option, RFC 2018 section 4).
    latest: Option<u64>,
}

impl OutOfOrder {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of segments held.
    pub fn segments(&self) -> usize {
        self.segs.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Highest stream offset held (one past the last byte).
    pub fn end(&self) -> Option<u64> {
        self.segs.last_key_value().map(|(s, v)| s + v.len() as u64)
    }

    /// Stores `data` at stream offset `off`, keeping only what lies in
    /// `[lo, hi)` and is not held yet. Refuses (returns false) when that
    /// would exceed `max_segs` segments.
    pub fn insert(&mut self, off: u64, data: &[u8], lo: u64, hi: u64, max_segs: usize) -> bool {
        let mut s = off.max(lo);
        let mut e = (off + data.len() as u64).min(hi);
        if s >= e {
            return false;
        }
        // Trim against the segment starting before `s`.
        if let Some((&ps, pv)) = self.segs.range(..=s).next_back() {
            s = s.max(ps + pv.len() as u64);
        }
        if s >= e {
            self.latest = Some(off);
            return true;
        }
        // Trim against the segment starting inside and reaching past the end.
        if let Some((&ns, nv)) = self.segs.range(s..e).next_back()
            && ns + nv.len() as u64 >= e
        {
            e = ns;
        }
        if s >= e {
            self.latest = Some(off);
            return true;
        }
        // Whatever else starts inside [s, e) is covered by the new segment.
        let inside: Vec<u64> = self.segs.range(s..e).map(|(&k, _)| k).collect();
        if self.segs.len() + 1 - inside.len() > max_segs {
            return false;
        }
        for k in inside {
            if let Some(v) = self.segs.remove(&k) {
                self.bytes -= v.len();
            }
        }
        let from = (s - off) as usize;
        let to = (e - off) as usize;
        let mut v = Vec::with_capacity(to - from);
        append_into(&mut self.copied, &mut v, &data[from..to]);
        self.segs.insert(s, v);
        self.bytes += to - from;
        self.latest = Some(s);
        true
    }

    /// Takes the segment that starts at or before `next` (trimmed to start
    /// at `next`), dropping segments that lie wholly before it.
    pub fn pop_ready(&mut self, next: u64) -> Option<Vec<u8>> {
        loop {
            let (&s, v) = self.segs.first_key_value()?;
            if s > next {
                return None;
            }
            let end = s + v.len() as u64;
            let mut v = self.segs.remove(&s)?;
            self.bytes -= v.len();
            if end > next {
                if next > s {
                    // Trimming the front copies the rest of the buffer.
                    let mut w = Vec::with_capacity((end - next) as usize);
                    append_into(&mut self.copied, &mut w, &v[(next - s) as usize..]);
                    v = w;
                }
                return Some(v);
            }
        }
    }

    /// Contiguous ranges `[start, end)`, the most recently received first,
    /// then the others from the highest down; at most `max`.
    pub fn sack_ranges(&self, max: usize, out: &mut Vec<(u64, u64)>) {
        let mut all: Vec<(u64, u64)> = Vec::new();
        for (&s, v) in &self.segs {
            let e = s + v.len() as u64;
            match all.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => all.push((s, e)),
            }
        }
        let first = self
            .latest
            .and_then(|l| all.iter().position(|&(s, e)| s <= l && l < e));
        if let Some(i) = first {
            out.push(all.remove(i));
        }
        out.extend(all.iter().rev().take(max.saturating_sub(out.len())));
        out.truncate(max);
    }

    /// Heap bytes held (payload plus an estimate of tree overhead).
    pub fn memory_bytes(&self) -> usize {
        self.segs.values().map(Vec::capacity).sum::<usize>()
            + self.segs.len() * (size_of::<u64>() + size_of::<Vec<u8>>() + 16)
    }

    /// Drops everything (the copy counter stays).
    pub fn clear(&mut self) {
        self.segs = BTreeMap::new();
        self.bytes = 0;
        self.latest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_pieces() {
        let mut q = RecvQueue::default();
        q.push(&[1; 1000]);
        q.push(&[2; 10]);
        let mut b = [0; 600];
        assert_eq!(q.read(&mut b), 600);
        assert_eq!(q.read(&mut b), 410);
        assert_eq!(&b[400..410], &[2; 10]);
        assert_eq!(q.memory_bytes(), 0);
    }

    #[test]
    fn overlap_and_ranges() {
        let mut o = OutOfOrder::default();
        let d: Vec<u8> = (0..=255).collect();
        assert!(o.insert(10, &d[10..20], 0, 1000, 8));
        assert!(o.insert(30, &d[30..40], 0, 1000, 8));
        assert!(o.insert(5, &d[5..35], 0, 1000, 8)); // covers the gap, overlaps both
        assert_eq!(o.bytes(), 35);
        let mut r = Vec::new();
        o.sack_ranges(4, &mut r);
        assert_eq!(r, [(5, 40)]);
        assert!(o.pop_ready(0).is_none());
        let mut got = Vec::new();
        while let Some(v) = o.pop_ready(5 + got.len() as u64) {
            got.extend(v);
        }
        assert_eq!(got, &d[5..40]);
        assert!(!o.insert(2000, &d, 0, 1000, 8), "beyond the window");
        for i in 0..8 {
            assert!(o.insert(100 + 10 * i, &d[..1], 0, 1000, 8));
        }
        assert!(!o.insert(500, &d[..1], 0, 1000, 8), "segment cap");
    }
}
