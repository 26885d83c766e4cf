//! The engine's timer queue: one deadline per connection slot, earliest
//! first, in memory reserved when the connection's slot is made.
//!
//! An indexed binary min-heap over `(deadline, slot)`: `pos[slot]` says
//! where a slot's entry sits, so a connection's deadline is moved or removed
//! in O(log n) without a search. Setting, moving, removing and popping never
//! allocate once [`TimerHeap::try_reserve_slots`] has made room for every
//! slot (the endpoint does that when it makes a slot, in its fallible
//! connection insert), so a timer can never be lost to, or panic on, a
//! failed allocation.

use alloc::collections::TryReserveError;
use alloc::vec::Vec;

/// No entry for this slot.
const ABSENT: u32 = u32::MAX;

/// Deadlines (µs) keyed by slot index, earliest first.
#[derive(Debug, Default)]
pub struct TimerHeap {
    /// `(deadline, slot, generation)`, a binary min-heap on (deadline, slot).
    heap: Vec<(u64, u32, u32)>,
    /// Where each slot's entry is in `heap`, or `ABSENT`.
    pos: Vec<u32>,
}

impl TimerHeap {
    /// An empty queue.
    pub fn new() -> Self {
        TimerHeap::default()
    }

    /// Makes room for slots `0..slots`: afterwards no operation on them
    /// allocates.
    pub fn try_reserve_slots(&mut self, slots: usize) -> Result<(), TryReserveError> {
        if self.pos.len() < slots {
            self.pos.try_reserve(slots - self.pos.len())?;
            self.pos.resize(slots, ABSENT);
        }
        if self.heap.capacity() < slots {
            self.heap.try_reserve(slots - self.heap.len())?;
        }
        Ok(())
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Heap bytes held (both vectors' capacity).
    pub fn memory_bytes(&self) -> usize {
        self.heap.capacity() * core::mem::size_of::<(u64, u32, u32)>() + self.pos.capacity() * 4
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest entry: `(deadline, slot, generation)`.
    pub fn first(&self) -> Option<(u64, u32, u32)> {
        self.heap.first().copied()
    }

    /// Removes and returns the earliest entry.
    pub fn pop_first(&mut self) -> Option<(u64, u32, u32)> {
        let first = self.first()?;
        self.remove(first.1);
        Some(first)
    }

    /// Sets slot `slot`'s deadline (`None` removes it). A slot outside the
    /// reserved range is a caller bug: it is ignored (debug builds assert).
    pub fn set(&mut self, slot: u32, generation: u32, deadline: Option<u64>) {
        let Some(&p) = self.pos.get(slot as usize) else {
            debug_assert!(false, "timer slot {slot} not reserved");
            return;
        };
        match (p, deadline) {
            (ABSENT, None) => {}
            (ABSENT, Some(t)) => {
                if self.heap.len() == self.heap.capacity() {
                    debug_assert!(false, "timer heap not reserved");
                    return;
                }
                let at = self.heap.len();
                self.heap.push((t, slot, generation));
                self.pos[slot as usize] = at as u32;
                self.sift_up(at);
            }
            (_, None) => self.remove(slot),
            (p, Some(t)) => {
                let at = p as usize;
                let old = self.heap[at].0;
                self.heap[at] = (t, slot, generation);
                if t < old {
                    self.sift_up(at);
                } else {
                    self.sift_down(at);
                }
            }
        }
    }

    /// Removes slot `slot`'s entry, if any.
    pub fn remove(&mut self, slot: u32) {
        let Some(&p) = self.pos.get(slot as usize) else {
            return;
        };
        if p == ABSENT {
            return;
        }
        let at = p as usize;
        let last = self.heap.len() - 1;
        self.heap.swap(at, last);
        self.heap.pop();
        self.pos[slot as usize] = ABSENT;
        if at < last {
            self.pos[self.heap[at].1 as usize] = at as u32;
            self.sift_down(at);
            self.sift_up(at);
        }
    }

    fn key(&self, i: usize) -> (u64, u32) {
        (self.heap[i].0, self.heap[i].1)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1 as usize] = a as u32;
        self.pos[self.heap[b].1 as usize] = b as u32;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.key(i) >= self.key(parent) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < n && self.key(l) < self.key(m) {
                m = l;
            }
            if r < n && self.key(r) < self.key(m) {
                m = r;
            }
            if m == i {
                break;
            }
            self.swap(i, m);
            i = m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;

    /// A small deterministic generator.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn matches_an_ordered_set_under_random_operations() {
        const SLOTS: u32 = 64;
        let mut h = TimerHeap::new();
        h.try_reserve_slots(SLOTS as usize).unwrap();
        let mut model: BTreeSet<(u64, u32)> = BTreeSet::new();
        let mut current: [Option<u64>; SLOTS as usize] = [None; SLOTS as usize];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for step in 0..200_000 {
            let slot = rng.below(u64::from(SLOTS)) as u32;
            match rng.below(4) {
                0 => {
                    h.set(slot, 0, None);
                    if let Some(t) = current[slot as usize].take() {
                        model.remove(&(t, slot));
                    }
                }
                1 => {
                    let got = h.pop_first().map(|(t, s, _)| (t, s));
                    let want = model.pop_first();
                    assert_eq!(got, want, "step {step}");
                    if let Some((_, s)) = want {
                        current[s as usize] = None;
                    }
                }
                _ => {
                    let t = rng.below(1000);
                    h.set(slot, 7, Some(t));
                    if let Some(old) = current[slot as usize].replace(t) {
                        model.remove(&(old, slot));
                    }
                    model.insert((t, slot));
                }
            }
            assert_eq!(h.len(), model.len());
            assert_eq!(h.first().map(|(t, s, _)| (t, s)), model.first().copied());
        }
    }

    #[test]
    fn reserved_operations_never_grow_the_heap() {
        let mut h = TimerHeap::new();
        h.try_reserve_slots(16).unwrap();
        let cap = h.heap.capacity();
        for round in 0..100u64 {
            for s in 0..16 {
                h.set(s, 0, Some(round * 31 % 17 + u64::from(s)));
            }
            while h.pop_first().is_some() {}
        }
        assert_eq!(h.heap.capacity(), cap);
        assert!(h.is_empty());
    }

    #[test]
    fn an_unreserved_slot_is_ignored_in_release() {
        let mut h = TimerHeap::new();
        h.try_reserve_slots(2).unwrap();
        h.remove(5);
        assert!(h.first().is_none());
    }
}
