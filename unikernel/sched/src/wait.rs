//! FIFO queue of blocked threads.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::ThreadId;

/// Threads blocked on some event, woken in the order they started waiting.
///
/// The wait queue only records *who* waits; the kernel marks the thread
/// [`Blocked`](crate::ThreadState::Blocked) and switches away, and makes the
/// ids returned by [`wake_one`](Self::wake_one)/[`wake_all`](Self::wake_all)
/// runnable again.
#[derive(Clone, Debug, Default)]
pub struct WaitQueue {
    waiters: VecDeque<ThreadId>,
}

impl WaitQueue {
    /// An empty wait queue.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            waiters: VecDeque::new(),
        }
    }

    /// Appends `t` to the waiters. A thread waits at most once per queue;
    /// debug builds check this.
    pub fn push(&mut self, t: ThreadId) {
        debug_assert!(!self.contains(t), "thread {t} waits twice");
        self.waiters.push_back(t);
    }

    /// Removes and returns the longest-waiting thread.
    pub fn wake_one(&mut self) -> Option<ThreadId> {
        self.waiters.pop_front()
    }

    /// Removes every waiter and returns them in waiting order.
    pub fn wake_all(&mut self) -> Vec<ThreadId> {
        Vec::from(core::mem::take(&mut self.waiters))
    }

    /// Removes `t` (e.g. its wait timed out or it was killed). Returns whether
    /// it was waiting; `false` means it had already been woken. O(n).
    pub fn remove(&mut self, t: ThreadId) -> bool {
        match self.waiters.iter().position(|&x| x == t) {
            Some(i) => {
                self.waiters.remove(i);
                true
            }
            None => false,
        }
    }

    /// Whether `t` is waiting. O(n).
    #[must_use]
    pub fn contains(&self, t: ThreadId) -> bool {
        self.waiters.contains(&t)
    }

    /// The thread [`wake_one`](Self::wake_one) would return.
    #[must_use]
    pub fn peek(&self) -> Option<ThreadId> {
        self.waiters.front().copied()
    }

    /// Number of waiting threads.
    #[must_use]
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether nobody waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// The waiters in waking order.
    pub fn iter(&self) -> impl Iterator<Item = ThreadId> + '_ {
        self.waiters.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn wake_one_in_order() {
        let mut w = WaitQueue::new();
        assert_eq!(w.wake_one(), None);
        w.push(3);
        w.push(1);
        w.push(2);
        assert_eq!(w.len(), 3);
        assert_eq!(w.peek(), Some(3));
        assert_eq!(w.wake_one(), Some(3));
        assert_eq!(w.wake_one(), Some(1));
        assert_eq!(w.wake_one(), Some(2));
        assert_eq!(w.wake_one(), None);
        assert!(w.is_empty());
    }

    #[test]
    fn wake_all_in_order_and_empties() {
        let mut w = WaitQueue::new();
        for t in [5, 4, 9] {
            w.push(t);
        }
        assert_eq!(w.iter().collect::<Vec<_>>(), [5, 4, 9]);
        assert_eq!(w.wake_all(), vec![5, 4, 9]);
        assert!(w.is_empty());
        assert!(w.wake_all().is_empty());
        // Reusable afterwards.
        w.push(1);
        assert_eq!(w.wake_all(), vec![1]);
    }

    #[test]
    fn wake_all_after_partial_wake() {
        // Exercise a wrapped ring buffer.
        let mut w = WaitQueue::new();
        for t in 0..4 {
            w.push(t);
        }
        w.wake_one();
        w.wake_one();
        for t in 4..8 {
            w.push(t);
        }
        assert_eq!(w.wake_all(), vec![2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn remove_for_timeout() {
        let mut w = WaitQueue::new();
        for t in 1..=4 {
            w.push(t);
        }
        assert!(w.remove(2));
        assert!(!w.remove(2));
        assert!(!w.contains(2));
        assert!(w.contains(3));
        assert_eq!(w.wake_one(), Some(1));
        assert!(!w.remove(1)); // already woken: the timeout lost the race
        assert_eq!(w.wake_all(), vec![3, 4]);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "waits twice")]
    fn double_wait_is_caught_in_debug() {
        let mut w = WaitQueue::new();
        w.push(1);
        w.push(1);
    }
}
