//! The send queue: payload references in stream order, released as they are
//! acknowledged, sliced into fragments without copying.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::mem::size_of;

use crate::payload::{Fragment, Payload};

/// Queued payload references. Positions are 64-bit stream offsets (bytes
/// since the first byte ever queued), so they never wrap.
#[derive(Debug)]
pub struct SendQueue<P> {
    /// (stream offset of the chunk's first byte, chunk), in order.
    chunks: VecDeque<(u64, P)>,
    /// Stream offset of the first unacknowledged byte.
    head: u64,
    /// Stream offset one past the last queued byte.
    tail: u64,
}

impl<P> Default for SendQueue<P> {
    fn default() -> Self {
        SendQueue {
            chunks: VecDeque::new(),
            head: 0,
            tail: 0,
        }
    }
}

impl<P: Payload> SendQueue<P> {
    /// Bytes queued and not yet acknowledged.
    pub fn len(&self) -> usize {
        (self.tail - self.head) as usize
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.tail == self.head
    }

    /// Stream offset of the first unacknowledged byte.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Stream offset one past the last queued byte.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Appends a reference (empty ones are dropped).
    pub fn push(&mut self, p: P) {
        let n = p.len() as u64;
        if n == 0 {
            return;
        }
        self.chunks.push_back((self.tail, p));
        self.tail += n;
    }

    /// Releases `n` acknowledged bytes from the front: fully acknowledged
    /// references are dropped, a partly acknowledged one stays (the offset
    /// moves, nothing is copied).
    pub fn ack(&mut self, n: usize) {
        self.head = (self.head + n as u64).min(self.tail);
        while let Some((start, p)) = self.chunks.front() {
            if start + p.len() as u64 <= self.head {
                self.chunks.pop_front();
            } else {
                break;
            }
        }
        if self.chunks.is_empty() {
            // An idle connection holds no buffer at all.
            self.chunks = VecDeque::new();
        } else if self.chunks.capacity() > 64 && self.chunks.len() * 4 < self.chunks.capacity() {
            self.chunks.shrink_to(self.chunks.len() * 2);
        }
    }

    /// Appends to `out` the fragments covering `len` bytes from stream
    /// offset `from` (clamped to what is queued); returns the byte count,
    /// which is smaller when `out` cannot grow (memory is short).
    pub fn fragments(&self, from: u64, len: usize, out: &mut Vec<Fragment<P>>) -> usize {
        let from = from.max(self.head);
        let end = (from + len as u64).min(self.tail);
        if from >= end {
            return 0;
        }
        // The last chunk starting at or before `from`.
        let mut i = self
            .chunks
            .partition_point(|(s, _)| *s <= from)
            .saturating_sub(1);
        // Room for every chunk the range touches, reserved once (a shorter
        // range when there is no memory for the list).
        let last = self.chunks.partition_point(|(s, _)| *s < end);
        let mut room = last.saturating_sub(i);
        while room > 0 && out.try_reserve(room).is_err() {
            room /= 2;
        }
        let mut pos = from;
        while pos < end {
            let Some((start, p)) = self.chunks.get(i) else {
                break;
            };
            let off = (pos - start) as usize;
            let take = (p.len() - off).min((end - pos) as usize);
            if out.len() == out.capacity() && out.try_reserve(1).is_err() {
                // No memory for the list: a shorter range.
                break;
            }
            out.push(Fragment {
                data: p.clone(),
                offset: off,
                len: take,
            });
            pos += take as u64;
            i += 1;
        }
        (pos - from) as usize
    }

    /// Heap bytes held by the queue itself (the references, not what they
    /// point to: that memory belongs to the page cache or the writer).
    pub fn memory_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<(u64, P)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::SharedSlice;
    use alloc::sync::Arc;
    use alloc::vec;

    #[test]
    fn split_ack_and_release() {
        let a = Arc::new(vec![1u8; 100].into_boxed_slice());
        let b: SharedSlice = vec![2u8; 50].into();
        let mut q = SendQueue::default();
        q.push(SharedSlice::new(a.clone()));
        q.push(b);
        assert_eq!(Arc::strong_count(&a), 2);
        let mut f = Vec::new();
        assert_eq!(q.fragments(90, 30, &mut f), 30);
        assert_eq!(
            (f[0].offset, f[0].len, f[1].offset, f[1].len),
            (90, 10, 0, 20)
        );
        drop(f);
        q.ack(60);
        assert_eq!(
            Arc::strong_count(&a),
            2,
            "partly acknowledged: still referenced"
        );
        q.ack(40);
        assert_eq!(Arc::strong_count(&a), 1, "fully acknowledged: released");
        q.ack(50);
        assert!(q.is_empty());
        assert_eq!(q.memory_bytes(), 0);
    }
}
