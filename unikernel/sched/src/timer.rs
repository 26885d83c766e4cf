//! One-shot timers ordered by deadline.

use uk_core::idmap::IdMap;
use uk_core::pairs::PairSet;

/// Handle of a timer in a [`TimerQueue`], returned by
/// [`TimerQueue::insert`] and used to cancel it.
///
/// Ids are unique per queue and never reused, so cancelling an id whose timer
/// already fired (or was cancelled) is harmless: it simply finds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId(u64);

impl TimerId {
    /// The raw sequence number (for logging).
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The id whose [`raw`](Self::raw) number is `raw` (for a kernel that
    /// keeps ids in atomics). An id its queue never handed out cancels
    /// nothing, or another timer of that queue: keep ids with their queue.
    #[must_use]
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}

/// A set of one-shot timers, each with a deadline (monotonic nanoseconds) and
/// a payload `T` (e.g. the thread to wake).
///
/// Timers fire in deadline order; timers with equal deadlines fire in
/// insertion order. [`insert`](Self::insert) and [`cancel`](Self::cancel)
/// are a binary search and a `memmove` of the timers after it (a CPU has a
/// handful pending: one per sleeping thread at most);
/// [`next_deadline`](Self::next_deadline) is O(1).
///
/// One queue per CPU; the kernel programs its one-shot timer hardware for
/// the earlier of [`next_deadline`](Self::next_deadline) and the slice
/// deadline from [`SlicePolicy`](crate::SlicePolicy).
#[derive(Clone, Debug)]
pub struct TimerQueue<T> {
    /// Pending timers as (deadline, sequence): sequence breaks ties in FIFO
    /// order. (A set of `u64` pairs and an [`IdMap`] rather than a map to
    /// `T`: the image then holds one copy of the ordered-set code.)
    by_deadline: PairSet,
    /// Sequence -> (deadline, payload).
    by_id: IdMap<(u64, T)>,
    next_seq: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerQueue<T> {
    /// An empty timer queue.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            by_deadline: PairSet::new(),
            by_id: IdMap::new(),
            next_seq: 0,
        }
    }

    /// Adds a timer firing at `deadline_ns` carrying `payload`. A deadline in
    /// the past is allowed: the timer fires at the next
    /// [`expire`](Self::expire).
    pub fn insert(&mut self, deadline_ns: u64, payload: T) -> TimerId {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_deadline.insert((deadline_ns, seq));
        self.by_id.insert(seq, (deadline_ns, payload));
        TimerId(seq)
    }

    /// Cancels a pending timer and returns its payload, or `None` if `id`
    /// already fired, was already cancelled, or never existed.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let (deadline, payload) = self.by_id.remove(id.0)?;
        self.by_deadline.remove(&(deadline, id.0));
        Some(payload)
    }

    /// Deadline of a pending timer, or `None` if it is no longer pending.
    #[must_use]
    pub fn deadline(&self, id: TimerId) -> Option<u64> {
        self.by_id.get(id.0).map(|&(d, _)| d)
    }

    /// Earliest pending deadline, or `None` if no timer is pending.
    #[must_use]
    pub fn next_deadline(&self) -> Option<u64> {
        self.by_deadline.first().map(|(d, _)| d)
    }

    /// Removes and returns the earliest timer if its deadline is `<= now_ns`.
    ///
    /// Unlike [`expire`](Self::expire) this releases the borrow between
    /// timers, so the caller may insert or cancel timers while handling one.
    pub fn pop_expired(&mut self, now_ns: u64) -> Option<(TimerId, T)> {
        let (deadline, seq) = self.by_deadline.first()?;
        if deadline > now_ns {
            return None;
        }
        self.by_deadline.pop_first();
        let (_, payload) = self.by_id.remove(seq)?;
        Some((TimerId(seq), payload))
    }

    /// Removes every timer with deadline `<= now_ns` and calls `f` on each,
    /// in firing order (deadline, then insertion order).
    pub fn expire(&mut self, now_ns: u64, mut f: impl FnMut(TimerId, T)) {
        while let Some((id, payload)) = self.pop_expired(now_ns) {
            f(id, payload);
        }
    }

    /// Number of pending timers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_deadline.len()
    }

    /// Whether no timer is pending.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_deadline.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn fired<T>(q: &mut TimerQueue<T>, now: u64) -> Vec<T> {
        let mut out = Vec::new();
        q.expire(now, |_, p| out.push(p));
        out
    }

    #[test]
    fn empty() {
        let mut q: TimerQueue<u32> = TimerQueue::new();
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
        assert_eq!(q.pop_expired(u64::MAX), None);
        assert!(fired(&mut q, u64::MAX).is_empty());
    }

    #[test]
    fn deadline_ordering() {
        let mut q = TimerQueue::new();
        q.insert(30, 'c');
        q.insert(10, 'a');
        q.insert(20, 'b');
        assert_eq!(q.len(), 3);
        assert_eq!(q.next_deadline(), Some(10));
        assert_eq!(fired(&mut q, 100), ['a', 'b', 'c']);
        assert!(q.is_empty());
    }

    #[test]
    fn equal_deadlines_fire_fifo() {
        let mut q = TimerQueue::new();
        q.insert(50, 1);
        q.insert(40, 0);
        q.insert(50, 2);
        q.insert(50, 3);
        q.insert(60, 5);
        q.insert(50, 4);
        assert_eq!(fired(&mut q, 1000), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn expire_drains_only_due_timers() {
        let mut q = TimerQueue::new();
        for d in [5u64, 10, 15, 20] {
            q.insert(d, d);
        }
        assert!(fired(&mut q, 4).is_empty());
        assert_eq!(fired(&mut q, 10), [5, 10]); // deadline == now fires
        assert_eq!(q.next_deadline(), Some(15));
        assert_eq!(q.len(), 2);
        assert!(fired(&mut q, 14).is_empty());
        assert_eq!(fired(&mut q, 100), [15, 20]);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn expire_passes_matching_ids() {
        let mut q = TimerQueue::new();
        let a = q.insert(2, "a");
        let b = q.insert(1, "b");
        let mut got = Vec::new();
        q.expire(2, |id, p| got.push((id, p)));
        assert_eq!(got, [(b, "b"), (a, "a")]);
    }

    #[test]
    fn past_deadline_fires_at_once() {
        let mut q = TimerQueue::new();
        q.insert(0, ());
        assert_eq!(q.pop_expired(0), Some((TimerId(0), ())));
    }

    #[test]
    fn cancel() {
        let mut q = TimerQueue::new();
        let a = q.insert(10, 'a');
        let b = q.insert(10, 'b');
        let c = q.insert(5, 'c');
        assert_eq!(q.deadline(b), Some(10));
        assert_eq!(q.cancel(b), Some('b'));
        assert_eq!(q.deadline(b), None);
        assert_eq!(q.cancel(b), None); // twice
        assert_eq!(q.len(), 2);
        assert_eq!(q.cancel(c), Some('c'));
        assert_eq!(q.next_deadline(), Some(10));
        assert_eq!(fired(&mut q, 10), ['a']);
        assert_eq!(q.cancel(a), None); // already expired
        assert_eq!(q.cancel(TimerId(12345)), None); // unknown
        assert!(q.is_empty());
    }

    #[test]
    fn ids_not_reused() {
        let mut q = TimerQueue::new();
        let a = q.insert(1, 0);
        assert_eq!(q.cancel(a), Some(0));
        let b = q.insert(1, 1);
        assert_ne!(a, b);
        assert_eq!(q.cancel(a), None);
        assert_eq!(q.cancel(b), Some(1));
    }

    #[test]
    fn reinsert_while_popping() {
        // A periodic timer re-armed from its own handler.
        let mut q = TimerQueue::new();
        q.insert(10, 0u32);
        let mut count = 0;
        let mut now = 0;
        while now < 100 {
            now += 10;
            while let Some((_, n)) = q.pop_expired(now) {
                count += 1;
                q.insert(now + 10, n + 1);
            }
        }
        assert_eq!(count, 10);
        assert_eq!(q.len(), 1);
    }

    /// Tiny deterministic PRNG (xorshift64).
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn randomized_against_sorted_vec_model() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut q: TimerQueue<u64> = TimerQueue::new();
        // Model: (deadline, seq, id, payload), kept sorted by (deadline, seq).
        let mut model: Vec<(u64, u64, TimerId, u64)> = Vec::new();
        let mut all_ids: Vec<TimerId> = Vec::new();
        let mut seq = 0u64;
        let mut now = 0u64;
        let mut inserted = 0;

        while inserted < 10_000 {
            match rng.below(10) {
                // Insert (most common). Narrow deadline range => many ties.
                0..=5 => {
                    let deadline = now + rng.below(200);
                    let payload = rng.next();
                    let id = q.insert(deadline, payload);
                    let key = (deadline, seq);
                    let pos = model.partition_point(|e| (e.0, e.1) < key);
                    model.insert(pos, (deadline, seq, id, payload));
                    all_ids.push(id);
                    seq += 1;
                    inserted += 1;
                }
                // Cancel a random id ever issued (pending, fired or cancelled).
                6 | 7 => {
                    if all_ids.is_empty() {
                        continue;
                    }
                    let id = all_ids[rng.below(all_ids.len() as u64) as usize];
                    let expect = model
                        .iter()
                        .position(|e| e.2 == id)
                        .map(|i| model.remove(i).3);
                    assert_eq!(q.cancel(id), expect);
                }
                // Advance time and expire.
                _ => {
                    now += rng.below(60);
                    let mut got = Vec::new();
                    q.expire(now, |id, p| got.push((id, p)));
                    let split = model.partition_point(|e| e.0 <= now);
                    let expect: Vec<_> = model.drain(..split).map(|e| (e.2, e.3)).collect();
                    assert_eq!(got, expect);
                }
            }
            assert_eq!(q.len(), model.len());
            assert_eq!(q.next_deadline(), model.first().map(|e| e.0));
        }

        // Unknown ids are rejected too.
        assert_eq!(q.cancel(TimerId(seq + 1)), None);
        // Drain the rest.
        let mut got = Vec::new();
        q.expire(u64::MAX, |id, p| got.push((id, p)));
        let expect: Vec<_> = model.drain(..).map(|e| (e.2, e.3)).collect();
        assert_eq!(got, expect);
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }
}
