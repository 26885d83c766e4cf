//! Per-CPU run queue: one FIFO per priority level.

use alloc::collections::VecDeque;

use crate::ThreadId;

/// Scheduling priority. Levels are strict: a runnable thread of a higher
/// level always runs before any thread of a lower level.
///
/// The idle thread has no priority: it is not in any [`RunQueue`] and runs
/// only when [`RunQueue::pop`] returns `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Background work that may wait while anything else is runnable.
    Low = 0,
    /// The default for application threads.
    #[default]
    Normal = 1,
    /// Latency-critical, short-running work (e.g. network or disk completion
    /// handling). Should block quickly, as it can starve lower levels.
    High = 2,
}

impl Priority {
    /// Number of priority levels.
    pub const COUNT: usize = 3;

    /// All levels, from highest to lowest (the order [`RunQueue::pop`]
    /// searches them).
    pub const DESCENDING: [Priority; Priority::COUNT] =
        [Priority::High, Priority::Normal, Priority::Low];

    /// Index of this level, `0..Priority::COUNT` (`Low` is 0).
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A per-CPU run queue of runnable threads that are not currently running.
///
/// One FIFO per [`Priority`]; [`push`](Self::push), [`push_front`](Self::push_front)
/// and [`pop`](Self::pop) are O(1) (amortised, plus a scan of the
/// [`Priority::COUNT`] levels). [`remove`](Self::remove) and
/// [`contains`](Self::contains) are O(n) scans, which is fine for the short
/// queues of a server unikernel.
///
/// A thread id may be queued at most once. The kernel guarantees this; debug
/// builds check it in `push`/`push_front` with an O(n) scan.
#[derive(Clone, Debug, Default)]
pub struct RunQueue {
    levels: [VecDeque<ThreadId>; Priority::COUNT],
    len: usize,
}

impl RunQueue {
    /// An empty run queue.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `t` at the tail of level `p`.
    ///
    /// Use this for every ordinary enqueue: a newly spawned thread, a woken
    /// thread, a thread that yielded, and a thread whose slice expired. Waking
    /// at the tail keeps round-robin fair among threads of the same level: a
    /// thread that blocks and wakes very often cannot jump ahead of its peers
    /// every time. Threads needing prompt wake-up get a higher [`Priority`]
    /// instead.
    pub fn push(&mut self, t: ThreadId, p: Priority) {
        debug_assert!(!self.contains(t), "thread {t} queued twice");
        self.levels[p.index()].push_back(t);
        self.len += 1;
    }

    /// Inserts `t` at the head of level `p`, so it is the next thread of that
    /// level to run.
    ///
    /// Use this only for a thread that was *involuntarily* displaced before
    /// its slice ran out — preempted because a higher-priority thread became
    /// runnable. It goes back to the head of its level (as in POSIX
    /// `SCHED_RR`), so being preempted does not also cost it its turn.
    /// Woken threads use [`push`](Self::push).
    pub fn push_front(&mut self, t: ThreadId, p: Priority) {
        debug_assert!(!self.contains(t), "thread {t} queued twice");
        self.levels[p.index()].push_front(t);
        self.len += 1;
    }

    /// Removes and returns the next thread to run: the head of the highest
    /// non-empty level. `None` means the CPU should run its idle thread.
    pub fn pop(&mut self) -> Option<(ThreadId, Priority)> {
        for p in Priority::DESCENDING {
            if let Some(t) = self.levels[p.index()].pop_front() {
                self.len -= 1;
                return Some((t, p));
            }
        }
        None
    }

    /// The thread [`pop`](Self::pop) would return, without removing it.
    #[must_use]
    pub fn peek(&self) -> Option<(ThreadId, Priority)> {
        Priority::DESCENDING
            .into_iter()
            .find_map(|p| self.levels[p.index()].front().map(|&t| (t, p)))
    }

    /// Removes `t` wherever it is queued (e.g. a runnable thread being killed,
    /// or re-queued at a new priority). Returns whether it was queued. O(n).
    pub fn remove(&mut self, t: ThreadId) -> bool {
        for level in &mut self.levels {
            if let Some(i) = level.iter().position(|&x| x == t) {
                level.remove(i);
                self.len -= 1;
                return true;
            }
        }
        false
    }

    /// Removes and returns a thread for another CPU to run (work stealing):
    /// the tail thread (the one that would wait longest here) of the
    /// highest level whose tail `movable` accepts. O(1).
    pub fn steal(
        &mut self,
        mut movable: impl FnMut(ThreadId) -> bool,
    ) -> Option<(ThreadId, Priority)> {
        for p in Priority::DESCENDING {
            let level = &mut self.levels[p.index()];
            if level.back().is_some_and(|&t| movable(t)) {
                let t = level.pop_back()?;
                self.len -= 1;
                return Some((t, p));
            }
        }
        None
    }

    /// Whether `t` is queued. O(n).
    #[must_use]
    pub fn contains(&self, t: ThreadId) -> bool {
        self.levels.iter().any(|level| level.contains(&t))
    }

    /// Number of queued threads over all levels.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of threads queued at level `p`.
    #[must_use]
    pub fn len_at(&self, p: Priority) -> usize {
        self.levels[p.index()].len()
    }

    /// Whether no thread is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The highest level with a queued thread, or `None` if the queue is
    /// empty.
    #[must_use]
    pub fn highest_waiting(&self) -> Option<Priority> {
        Priority::DESCENDING
            .into_iter()
            .find(|p| !self.levels[p.index()].is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn drain(rq: &mut RunQueue) -> Vec<(ThreadId, Priority)> {
        core::iter::from_fn(|| rq.pop()).collect()
    }

    #[test]
    fn steal_takes_the_movable_tail_of_the_highest_level() {
        let mut rq = RunQueue::new();
        rq.push(1, Priority::Normal);
        rq.push(2, Priority::High);
        rq.push(3, Priority::Normal);
        rq.push(4, Priority::High);
        rq.push(5, Priority::Low);
        // High's tail, 4, is pinned: Normal's tail.
        assert_eq!(rq.steal(|t| t != 4), Some((3, Priority::Normal)));
        assert_eq!(rq.len(), 4);
        assert_eq!(rq.steal(|t| t != 4), Some((1, Priority::Normal)));
        assert_eq!(rq.steal(|t| t != 4), Some((5, Priority::Low)));
        assert_eq!(rq.steal(|t| t != 4), None);
        assert_eq!(rq.steal(|_| true), Some((4, Priority::High)));
        let order: Vec<_> = drain(&mut rq).into_iter().map(|(t, _)| t).collect();
        assert_eq!(order, [2]);
    }

    #[test]
    fn empty() {
        let mut rq = RunQueue::new();
        assert!(rq.is_empty());
        assert_eq!(rq.len(), 0);
        assert_eq!(rq.pop(), None);
        assert_eq!(rq.peek(), None);
        assert_eq!(rq.highest_waiting(), None);
        assert!(!rq.remove(1));
    }

    #[test]
    fn fifo_within_priority() {
        let mut rq = RunQueue::new();
        for t in 1..=5 {
            rq.push(t, Priority::Normal);
        }
        assert_eq!(rq.len(), 5);
        let order: Vec<_> = drain(&mut rq).into_iter().map(|(t, _)| t).collect();
        assert_eq!(order, [1, 2, 3, 4, 5]);
        assert!(rq.is_empty());
    }

    #[test]
    fn priority_ordering() {
        let mut rq = RunQueue::new();
        rq.push(1, Priority::Low);
        rq.push(2, Priority::Normal);
        rq.push(3, Priority::High);
        rq.push(4, Priority::Low);
        rq.push(5, Priority::High);
        rq.push(6, Priority::Normal);
        assert_eq!(rq.highest_waiting(), Some(Priority::High));
        assert_eq!(rq.peek(), Some((3, Priority::High)));
        assert_eq!(rq.len_at(Priority::Low), 2);
        assert_eq!(
            drain(&mut rq),
            [
                (3, Priority::High),
                (5, Priority::High),
                (2, Priority::Normal),
                (6, Priority::Normal),
                (1, Priority::Low),
                (4, Priority::Low),
            ]
        );
    }

    #[test]
    fn highest_waiting_tracks_pops() {
        let mut rq = RunQueue::new();
        rq.push(1, Priority::Low);
        rq.push(2, Priority::High);
        assert_eq!(rq.highest_waiting(), Some(Priority::High));
        rq.pop();
        assert_eq!(rq.highest_waiting(), Some(Priority::Low));
        rq.pop();
        assert_eq!(rq.highest_waiting(), None);
    }

    #[test]
    fn push_front_goes_to_head_of_its_level_only() {
        let mut rq = RunQueue::new();
        rq.push(1, Priority::Normal);
        rq.push(2, Priority::Normal);
        rq.push(3, Priority::High);
        rq.push_front(4, Priority::Normal);
        assert_eq!(
            drain(&mut rq),
            [
                (3, Priority::High),
                (4, Priority::Normal),
                (1, Priority::Normal),
                (2, Priority::Normal),
            ]
        );
    }

    #[test]
    fn remove_keeps_order_of_others() {
        let mut rq = RunQueue::new();
        for t in 1..=4 {
            rq.push(t, Priority::Normal);
        }
        rq.push(9, Priority::Low);
        assert!(rq.contains(3));
        assert!(rq.remove(3));
        assert!(!rq.contains(3));
        assert!(!rq.remove(3));
        assert!(rq.remove(9));
        assert_eq!(rq.len(), 3);
        assert_eq!(rq.highest_waiting(), Some(Priority::Normal));
        let order: Vec<_> = drain(&mut rq).into_iter().map(|(t, _)| t).collect();
        assert_eq!(order, [1, 2, 4]);
    }

    #[test]
    fn requeue_after_remove() {
        let mut rq = RunQueue::new();
        rq.push(1, Priority::Low);
        assert!(rq.remove(1));
        rq.push(1, Priority::High);
        assert_eq!(rq.pop(), Some((1, Priority::High)));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "queued twice")]
    fn double_push_is_caught_in_debug() {
        let mut rq = RunQueue::new();
        rq.push(1, Priority::Low);
        rq.push(1, Priority::High);
    }

    #[test]
    fn round_robin_rotation() {
        // Simulate three equal threads taking turns: pop, run, push back.
        let mut rq = RunQueue::new();
        for t in 1..=3 {
            rq.push(t, Priority::Normal);
        }
        let mut ran = Vec::new();
        for _ in 0..7 {
            let (t, p) = rq.pop().unwrap();
            ran.push(t);
            rq.push(t, p);
        }
        assert_eq!(ran, [1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn priority_index_and_order() {
        assert!(Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
        assert_eq!(Priority::default(), Priority::Normal);
        for (i, p) in Priority::DESCENDING.iter().rev().enumerate() {
            assert_eq!(p.index(), i);
        }
    }

    #[test]
    fn independent_instances() {
        // Two CPUs' queues do not share state.
        let mut a = RunQueue::new();
        let b = RunQueue::new();
        a.push(1, Priority::Normal);
        assert!(b.is_empty());
        assert!(!b.contains(1));
    }
}
