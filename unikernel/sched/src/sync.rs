//! Decision logic of the blocking primitives. The kernel supplies the
//! blocking (marking threads `Blocked`, switching, waking) and the locking.

use alloc::vec::Vec;

use crate::{ThreadId, WaitQueue};

/// Outcome of [`Semaphore::acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireResult {
    /// A unit was taken; the caller proceeds.
    Acquired,
    /// No unit was available; the caller has been queued and must block
    /// until [`Semaphore::release`] names it.
    MustWait,
}

/// Counting semaphore state: a count of available units and a FIFO of
/// waiters.
///
/// [`release`](Self::release) hands its unit *directly* to the
/// longest-waiting thread instead of incrementing the count, so the woken
/// thread owns the unit when it resumes and must not retry; a newcomer
/// calling [`try_acquire`](Self::try_acquire) cannot steal it. Hence the
/// invariant: the count is non-zero only when nobody waits.
#[derive(Clone, Debug, Default)]
pub struct Semaphore {
    count: usize,
    waiters: WaitQueue,
}

impl Semaphore {
    /// A semaphore with `count` units available.
    #[must_use]
    pub const fn new(count: usize) -> Self {
        Self {
            count,
            waiters: WaitQueue::new(),
        }
    }

    /// Takes a unit if one is available, without queueing.
    pub fn try_acquire(&mut self) -> bool {
        if self.count > 0 {
            self.count -= 1;
            true
        } else {
            false
        }
    }

    /// Takes a unit for thread `t`, or queues `t` and returns
    /// [`AcquireResult::MustWait`].
    pub fn acquire(&mut self, t: ThreadId) -> AcquireResult {
        if self.try_acquire() {
            AcquireResult::Acquired
        } else {
            self.waiters.push(t);
            AcquireResult::MustWait
        }
    }

    /// Returns a unit. If a thread waits, the unit is handed to it and its id
    /// is returned for the kernel to wake; otherwise the count grows.
    pub fn release(&mut self) -> Option<ThreadId> {
        let woken = self.waiters.wake_one();
        if woken.is_none() {
            self.count += 1;
        }
        woken
    }

    /// Withdraws waiting thread `t` (its wait timed out or it was killed).
    /// Returns `false` if `t` was not waiting — in particular if a `release`
    /// already handed it a unit, which it then owns.
    pub fn cancel(&mut self, t: ThreadId) -> bool {
        self.waiters.remove(t)
    }

    /// Units currently available.
    #[must_use]
    pub fn count(&self) -> usize {
        self.count
    }

    /// Number of waiting threads.
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }
}

/// Condition variable state: the queue of threads waiting for a
/// notification.
///
/// The usual protocol (with the associated mutex supplied by the kernel or
/// the caller): holding the mutex, a thread calls [`wait`](Self::wait),
/// releases the mutex and blocks; once woken it re-acquires the mutex and
/// re-checks its condition (wake-ups carry no guarantee). Notifications with
/// nobody waiting are lost, as for any condition variable.
#[derive(Clone, Debug, Default)]
pub struct CondvarState {
    waiters: WaitQueue,
}

impl CondvarState {
    /// A condition variable nobody waits on.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            waiters: WaitQueue::new(),
        }
    }

    /// Queues `t` as waiting for a notification.
    pub fn wait(&mut self, t: ThreadId) {
        self.waiters.push(t);
    }

    /// Wakes the longest-waiting thread, if any; returns its id.
    pub fn notify_one(&mut self) -> Option<ThreadId> {
        self.waiters.wake_one()
    }

    /// Wakes every waiter; returns their ids in waiting order.
    pub fn notify_all(&mut self) -> Vec<ThreadId> {
        self.waiters.wake_all()
    }

    /// Withdraws `t` (timed-out wait). Returns `false` if it had already
    /// been notified.
    pub fn remove(&mut self, t: ThreadId) -> bool {
        self.waiters.remove(t)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn semaphore_counting() {
        let mut s = Semaphore::new(2);
        assert_eq!(s.count(), 2);
        assert!(s.try_acquire());
        assert_eq!(s.acquire(1), AcquireResult::Acquired);
        assert_eq!(s.count(), 0);
        assert!(!s.try_acquire());
        assert_eq!(s.release(), None);
        assert_eq!(s.release(), None);
        assert_eq!(s.count(), 2);
        assert_eq!(s.release(), None);
        assert_eq!(s.count(), 3);
        for _ in 0..3 {
            assert!(s.try_acquire());
        }
        assert!(!s.try_acquire());
    }

    #[test]
    fn semaphore_waiters_fifo_with_handoff() {
        let mut s = Semaphore::new(1);
        assert_eq!(s.acquire(1), AcquireResult::Acquired);
        assert_eq!(s.acquire(2), AcquireResult::MustWait);
        assert_eq!(s.acquire(3), AcquireResult::MustWait);
        assert_eq!(s.waiting(), 2);
        // Release hands off: count stays 0, newcomers cannot barge in.
        assert_eq!(s.release(), Some(2));
        assert_eq!(s.count(), 0);
        assert!(!s.try_acquire());
        assert_eq!(s.acquire(4), AcquireResult::MustWait);
        assert_eq!(s.release(), Some(3));
        assert_eq!(s.release(), Some(4));
        assert_eq!(s.release(), None);
        assert_eq!(s.count(), 1);
        assert_eq!(s.waiting(), 0);
    }

    #[test]
    fn semaphore_zero_as_event() {
        let mut s = Semaphore::new(0);
        assert_eq!(s.acquire(7), AcquireResult::MustWait);
        assert_eq!(s.release(), Some(7));
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn semaphore_cancel_timeout() {
        let mut s = Semaphore::new(0);
        s.acquire(1);
        s.acquire(2);
        assert!(s.cancel(1)); // timed out
        assert!(!s.cancel(1));
        assert_eq!(s.release(), Some(2));
        assert!(!s.cancel(2)); // timeout lost the race: 2 owns the unit
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn condvar_notify() {
        let mut c = CondvarState::new();
        assert_eq!(c.notify_one(), None); // lost, nobody waits
        assert!(c.is_empty());
        c.wait(1);
        c.wait(2);
        c.wait(3);
        assert_eq!(c.len(), 3);
        assert_eq!(c.notify_one(), Some(1));
        assert!(c.remove(3));
        assert!(!c.remove(1));
        c.wait(4);
        assert_eq!(c.notify_all(), vec![2, 4]);
        assert!(c.notify_all().is_empty());
        assert!(c.is_empty());
    }
}
