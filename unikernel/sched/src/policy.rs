//! Time-slice preemption policy.

use crate::{Priority, RunQueue};

/// Decides when the running thread must give up the CPU.
///
/// Rules, with a non-zero [`slice_ns`](Self::slice_ns):
///
/// * a waiting thread of **higher** priority preempts at once, whatever the
///   time already used;
/// * a waiting thread of the **same** priority preempts once the current
///   thread has run a full slice (round-robin);
/// * waiting threads of **lower** priority never preempt;
/// * with nobody waiting there is nothing to switch to, and no slice timer is
///   needed (tickless).
///
/// `slice_ns == 0` turns preemption off entirely: threads run until they
/// block, yield or exit, whatever the priorities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlicePolicy {
    /// Length of a time slice in nanoseconds; `0` disables preemption.
    pub slice_ns: u64,
}

impl Default for SlicePolicy {
    fn default() -> Self {
        Self::new(Self::DEFAULT_SLICE_NS)
    }
}

impl SlicePolicy {
    /// Default slice: 10 ms. Long enough that the switch cost is negligible,
    /// short enough that a CPU-bound thread delays its peers only briefly.
    pub const DEFAULT_SLICE_NS: u64 = 10_000_000;

    /// A policy with the given slice length (`0` = cooperative).
    #[must_use]
    pub const fn new(slice_ns: u64) -> Self {
        Self { slice_ns }
    }

    /// A policy that never preempts.
    #[must_use]
    pub const fn cooperative() -> Self {
        Self::new(0)
    }

    /// Whether preemption is enabled (`slice_ns != 0`).
    #[must_use]
    pub const fn is_preemptive(&self) -> bool {
        self.slice_ns != 0
    }

    /// Whether the running thread, of priority `current`, which has run for
    /// `ran_ns` nanoseconds of its current slice, should be switched out now
    /// in favour of the head of `rq`.
    ///
    /// The kernel calls this from the slice timer interrupt and whenever it
    /// makes a thread runnable. If it returns `true`, the kernel re-queues
    /// the current thread — with [`RunQueue::push_front`] if a higher level
    /// preempted it before its slice ran out, [`RunQueue::push`] otherwise —
    /// and switches to [`RunQueue::pop`].
    #[must_use]
    pub fn should_preempt(&self, current: Priority, ran_ns: u64, rq: &RunQueue) -> bool {
        if !self.is_preemptive() {
            return false;
        }
        match rq.highest_waiting() {
            None => false,
            Some(w) if w > current => true,
            Some(w) if w == current => ran_ns >= self.slice_ns,
            Some(_) => false,
        }
    }

    /// When the slice timer should fire for a thread whose slice starts at
    /// `now_ns`, or `None` if no slice timer is needed: preemption is off or
    /// nobody else waits in `rq` (tickless).
    ///
    /// This does not know the running thread's priority, so it arms a timer
    /// whenever anyone waits, even if only lower priorities do (the timer then
    /// fires and [`should_preempt`](Self::should_preempt) says no). Use
    /// [`next_slice_deadline_for`](Self::next_slice_deadline_for) to avoid
    /// that spurious tick.
    #[must_use]
    pub fn next_slice_deadline(&self, now_ns: u64, rq: &RunQueue) -> Option<u64> {
        if !self.is_preemptive() || rq.is_empty() {
            return None;
        }
        Some(now_ns.saturating_add(self.slice_ns))
    }

    /// Like [`next_slice_deadline`](Self::next_slice_deadline) but for a
    /// running thread of priority `current`: returns `None` also when only
    /// lower priorities wait, since they could never preempt it at slice end.
    ///
    /// The kernel must re-evaluate (and possibly arm the timer) whenever it
    /// makes a thread runnable.
    #[must_use]
    pub fn next_slice_deadline_for(
        &self,
        current: Priority,
        now_ns: u64,
        rq: &RunQueue,
    ) -> Option<u64> {
        if !self.is_preemptive() {
            return None;
        }
        match rq.highest_waiting() {
            Some(w) if w >= current => Some(now_ns.saturating_add(self.slice_ns)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLICE: u64 = 1_000;

    fn rq_with(p: Priority) -> RunQueue {
        let mut rq = RunQueue::new();
        rq.push(7, p);
        rq
    }

    #[test]
    fn no_preemption_when_alone() {
        let pol = SlicePolicy::new(SLICE);
        let rq = RunQueue::new();
        for p in Priority::DESCENDING {
            assert!(!pol.should_preempt(p, 0, &rq));
            assert!(!pol.should_preempt(p, SLICE * 100, &rq));
        }
        assert_eq!(pol.next_slice_deadline(500, &rq), None);
        assert_eq!(pol.next_slice_deadline_for(Priority::Low, 500, &rq), None);
    }

    #[test]
    fn same_priority_preempts_at_slice_end() {
        let pol = SlicePolicy::new(SLICE);
        let rq = rq_with(Priority::Normal);
        assert!(!pol.should_preempt(Priority::Normal, 0, &rq));
        assert!(!pol.should_preempt(Priority::Normal, SLICE - 1, &rq));
        assert!(pol.should_preempt(Priority::Normal, SLICE, &rq));
        assert!(pol.should_preempt(Priority::Normal, SLICE + 1, &rq));
    }

    #[test]
    fn higher_priority_preempts_immediately() {
        let pol = SlicePolicy::new(SLICE);
        let rq = rq_with(Priority::High);
        assert!(pol.should_preempt(Priority::Normal, 0, &rq));
        assert!(pol.should_preempt(Priority::Low, 0, &rq));
        let rq = rq_with(Priority::Normal);
        assert!(pol.should_preempt(Priority::Low, 1, &rq));
    }

    #[test]
    fn lower_priority_never_preempts() {
        let pol = SlicePolicy::new(SLICE);
        let rq = rq_with(Priority::Low);
        assert!(!pol.should_preempt(Priority::Normal, SLICE * 10, &rq));
        assert!(!pol.should_preempt(Priority::High, u64::MAX, &rq));
    }

    #[test]
    fn zero_slice_never_preempts() {
        let pol = SlicePolicy::cooperative();
        assert!(!pol.is_preemptive());
        for waiting in Priority::DESCENDING {
            let rq = rq_with(waiting);
            for current in Priority::DESCENDING {
                assert!(!pol.should_preempt(current, 0, &rq));
                assert!(!pol.should_preempt(current, u64::MAX, &rq));
                assert_eq!(pol.next_slice_deadline_for(current, 0, &rq), None);
            }
            assert_eq!(pol.next_slice_deadline(0, &rq), None);
        }
    }

    #[test]
    fn slice_deadline() {
        let pol = SlicePolicy::new(SLICE);
        let rq = rq_with(Priority::Low);
        assert_eq!(pol.next_slice_deadline(100, &rq), Some(100 + SLICE));
        // Only a lower priority waits: no tick needed for a Normal thread.
        assert_eq!(
            pol.next_slice_deadline_for(Priority::Normal, 100, &rq),
            None
        );
        assert_eq!(
            pol.next_slice_deadline_for(Priority::Low, 100, &rq),
            Some(100 + SLICE)
        );
        let rq = rq_with(Priority::High);
        assert_eq!(
            pol.next_slice_deadline_for(Priority::Normal, 100, &rq),
            Some(100 + SLICE)
        );
        // Saturates rather than wrapping.
        assert_eq!(pol.next_slice_deadline(u64::MAX - 1, &rq), Some(u64::MAX));
    }

    #[test]
    fn default_is_preemptive() {
        let pol = SlicePolicy::default();
        assert!(pol.is_preemptive());
        assert_eq!(pol.slice_ns, SlicePolicy::DEFAULT_SLICE_NS);
    }
}
