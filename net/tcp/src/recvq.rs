//! Received data: the in-order queue the application reads from, and the
//! out-of-order store that SACK blocks describe. Each received byte is copied
//! once, from the device's buffer into a buffer sized to the segment; memory
//! follows what is queued, never a preallocated ring.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::mem::size_of;

use uk_core::copy::{append_into, copy_into, drain_front};

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

    /// Appends bytes (one copy), or returns false and queues nothing when
    /// the memory for them cannot be had (the caller drops the segment).
    #[must_use = "a false return means the bytes were not queued"]
    pub fn push(&mut self, b: &[u8]) -> bool {
        if b.is_empty() {
            return true;
        }
        if let Some(last) = self.chunks.back_mut()
            && (b.len() < COALESCE_BELOW || last.len() < COALESCE_BELOW)
            && last.len() + b.len() <= 64 * 1024
            && last.try_reserve(b.len()).is_ok()
        {
            append_into(&mut self.copied_in, last, b);
        } else {
            let mut v = Vec::new();
            if v.try_reserve_exact(b.len()).is_err() || self.chunks.try_reserve(1).is_err() {
                return false;
            }
            append_into(&mut self.copied_in, &mut v, b);
            self.chunks.push_back(v);
        }
        self.len += b.len();
        true
    }

    /// Makes room for one more chunk, so that the next
    /// [`RecvQueue::push_owned`] cannot fail; false when memory is short.
    pub fn reserve_chunk(&mut self) -> bool {
        self.chunks.try_reserve(1).is_ok()
    }

    /// Appends an owned buffer without copying it again. Never allocates
    /// after a successful [`RecvQueue::reserve_chunk`]; otherwise returns
    /// the buffer when memory is short.
    pub fn push_owned(&mut self, v: Vec<u8>) -> Result<(), Vec<u8>> {
        if v.len() < COALESCE_BELOW && self.push(&v) {
            return Ok(());
        }
        if self.chunks.try_reserve(1).is_err() {
            return Err(v);
        }
        self.len += v.len();
        self.chunks.push_back(v);
        Ok(())
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
/// A sorted vector (at most `max_segs` entries) rather than a tree, so that
/// every allocation it makes can fail without a panic.
#[derive(Debug, Default)]
pub struct OutOfOrder {
    segs: Vec<(u64, Vec<u8>)>,
    bytes: usize,
    /// Payload bytes copied in (and moved when a segment is trimmed).
    pub copied: u64,
    /// Segments refused because the memory to hold them could not be had.
    pub alloc_failures: u64,
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
        self.segs.last().map(|(s, v)| s + v.len() as u64)
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
        // Trim against the segment starting at or before `s`.
        let at_or_before = self.segs.partition_point(|&(k, _)| k <= s);
        if let Some((ps, pv)) = at_or_before.checked_sub(1).map(|i| &self.segs[i]) {
            s = s.max(ps + pv.len() as u64);
        }
        if s >= e {
            self.latest = Some(off);
            return true;
        }
        // Trim against the segment starting inside and reaching past the end.
        let (first, last) = self.inside(s, e);
        if let Some((ns, nv)) = (first < last).then(|| &self.segs[last - 1])
            && ns + nv.len() as u64 >= e
        {
            e = *ns;
        }
        if s >= e {
            self.latest = Some(off);
            return true;
        }
        // Whatever else starts inside [s, e) is covered by the new segment.
        let (first, last) = self.inside(s, e);
        if self.segs.len() + 1 - (last - first) > max_segs {
            return false;
        }
        let from = (s - off) as usize;
        let to = (e - off) as usize;
        // Without memory for the copy the segment is refused (the peer
        // sends it again); nothing held is touched.
        let mut copy = Vec::new();
        if copy.try_reserve_exact(to - from).is_err()
            || (first == last && self.segs.try_reserve(1).is_err())
        {
            self.alloc_failures += 1;
            return false;
        }
        append_into(&mut self.copied, &mut copy, &data[from..to]);
        for (_, v) in self.segs.drain(first..last) {
            self.bytes -= v.len();
        }
        self.segs.insert(first, (s, copy));
        self.bytes += to - from;
        self.latest = Some(s);
        true
    }

    /// The index range of the segments starting in `[s, e)`.
    fn inside(&self, s: u64, e: u64) -> (usize, usize) {
        (
            self.segs.partition_point(|&(k, _)| k < s),
            self.segs.partition_point(|&(k, _)| k < e),
        )
    }

    /// Takes the segment that starts at or before `next` (trimmed to start
    /// at `next`), dropping segments that lie wholly before it.
    pub fn pop_ready(&mut self, next: u64) -> Option<Vec<u8>> {
        loop {
            let &(s, ref v) = self.segs.first()?;
            if s > next {
                return None;
            }
            let end = s + v.len() as u64;
            let (_, mut v) = self.segs.remove(0);
            self.bytes -= v.len();
            if end > next {
                if next > s {
                    // Trimming the front moves the rest of the buffer.
                    drain_front(&mut self.copied, &mut v, (next - s) as usize);
                }
                return Some(v);
            }
        }
    }

    /// Contiguous ranges `[start, end)`, the most recently received first,
    /// then the others from the highest down, written to `out` (as many as
    /// fit); returns how many. Allocates nothing (it runs for every ACK).
    pub fn sack_ranges(&self, out: &mut [(u64, u64)]) -> usize {
        let first = self
            .latest
            .and_then(|l| self.ranges_rev().find(|&(s, e)| s <= l && l < e));
        let rest = self.ranges_rev().filter(|&r| Some(r) != first);
        let mut n = 0;
        for (slot, r) in out.iter_mut().zip(first.into_iter().chain(rest)) {
            *slot = r;
            n += 1;
        }
        n
    }

    /// Contiguous ranges `[start, end)`, from the highest down.
    fn ranges_rev(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut i = self.segs.len();
        core::iter::from_fn(move || {
            i = i.checked_sub(1)?;
            let (mut s, ref v) = self.segs[i];
            let e = s + v.len() as u64;
            while let Some((ps, pv)) = i.checked_sub(1).map(|j| &self.segs[j])
                && ps + pv.len() as u64 == s
            {
                s = *ps;
                i -= 1;
            }
            Some((s, e))
        })
    }

    /// Heap bytes held (payload plus an estimate of tree overhead).
    pub fn memory_bytes(&self) -> usize {
        self.segs.iter().map(|(_, v)| v.capacity()).sum::<usize>()
            + self.segs.capacity() * size_of::<(u64, Vec<u8>)>()
    }

    /// Drops everything (the copy counter stays).
    pub fn clear(&mut self) {
        self.segs = Vec::new();
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
        assert!(q.push(&[1; 1000]));
        assert!(q.push(&[2; 10]));
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
        let mut r = [(0, 0); 4];
        assert_eq!(o.sack_ranges(&mut r), 1);
        assert_eq!(r[0], (5, 40));
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
