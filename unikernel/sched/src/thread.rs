//! Thread lifecycle bookkeeping, independent of stacks and registers.

use core::fmt;
use uk_core::idmap::IdMap;

use crate::{Priority, ThreadId};

/// Lifecycle state of a thread.
///
/// Legal transitions through [`ThreadTable::set_state`]:
///
/// ```text
/// Runnable ──► Running ──► Runnable          (preempted / yielded)
///                 │──────► Blocked  ──► Runnable   (woken)
///                 └──────► Sleeping ──► Runnable   (deadline reached)
/// any non-exited state ──► Exited            (only via ThreadTable::exit)
/// ```
///
/// Everything else — including a state to itself, and anything out of
/// `Exited` — is rejected with [`SchedError::InvalidTransition`]. That lets
/// the kernel detect a lost race cheaply: if a timeout and a wake-up both try
/// to make a thread `Runnable`, the second attempt fails and the thread is
/// not queued twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// Ready to run, waiting in a run queue.
    Runnable,
    /// Currently on a CPU.
    Running,
    /// Waiting for an event (wait queue, join, I/O).
    Blocked,
    /// Waiting for a deadline (monotonic nanoseconds).
    Sleeping {
        /// When the thread should be woken.
        deadline_ns: u64,
    },
    /// Finished with an exit code; the entry stays until joined or reaped.
    Exited(i32),
}

impl ThreadState {
    /// Whether `set_state` allows moving from `self` to `to`.
    #[must_use]
    pub const fn can_transition_to(self, to: ThreadState) -> bool {
        use ThreadState::*;
        matches!(
            (self, to),
            (Runnable, Running)
                | (Running, Runnable | Blocked | Sleeping { .. })
                | (Blocked | Sleeping { .. }, Runnable)
        )
    }

    /// Whether the thread has exited.
    #[must_use]
    pub const fn is_exited(self) -> bool {
        matches!(self, ThreadState::Exited(_))
    }
}

/// Errors from [`ThreadTable`] operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedError {
    /// No thread with that id (never spawned, or already reaped).
    NoSuchThread,
    /// Another thread is already joining the target.
    AlreadyJoined,
    /// A thread tried to join itself.
    JoinSelf,
    /// The requested state change is not allowed (see [`ThreadState`]).
    InvalidTransition {
        /// State the thread was in (unchanged).
        from: ThreadState,
        /// State that was requested.
        to: ThreadState,
    },
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedError::NoSuchThread => f.write_str("no such thread"),
            SchedError::AlreadyJoined => f.write_str("thread already has a joiner"),
            SchedError::JoinSelf => f.write_str("a thread cannot join itself"),
            SchedError::InvalidTransition { from, to } => {
                write!(f, "invalid thread state transition {from:?} -> {to:?}")
            }
        }
    }
}

impl core::error::Error for SchedError {}

/// Outcome of [`ThreadTable::join`].
#[derive(Debug, PartialEq, Eq)]
pub enum JoinResult<T> {
    /// The target had exited with this code. Its entry has been removed from
    /// the table and its kernel data is handed back for the kernel to free
    /// (e.g. the stack).
    Done(i32, T),
    /// The target is still alive; the waiter is recorded as its joiner. The
    /// kernel blocks the waiter; [`ThreadTable::exit`] of the target returns
    /// the waiter's id, and the waiter then calls `join` again to get `Done`.
    MustWait,
    /// The join was refused.
    Err(SchedError),
}

/// One thread's bookkeeping entry.
#[derive(Clone, Debug)]
pub struct Thread<T> {
    state: ThreadState,
    joiner: Option<ThreadId>,
    /// Scheduling priority. If the thread is queued in a
    /// [`RunQueue`](crate::RunQueue), the kernel must re-queue it after a
    /// change.
    pub priority: Priority,
    /// The kernel's per-thread data (saved stack pointer, stack, ...).
    pub data: T,
}

impl<T> Thread<T> {
    /// Current lifecycle state. Changed only through
    /// [`ThreadTable::set_state`] and [`ThreadTable::exit`].
    #[must_use]
    pub fn state(&self) -> ThreadState {
        self.state
    }

    /// The thread waiting to join this one, if any.
    #[must_use]
    pub fn joiner(&self) -> Option<ThreadId> {
        self.joiner
    }
}

/// All threads of the kernel (or of one CPU), keyed by [`ThreadId`].
///
/// Ids are allocated monotonically from 1 and never reused, so a stale id
/// fails with [`SchedError::NoSuchThread`] instead of reaching a new thread.
/// Lookups are O(log n).
#[derive(Clone, Debug)]
pub struct ThreadTable<T> {
    threads: IdMap<Thread<T>>,
    next_id: ThreadId,
}

impl<T> Default for ThreadTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ThreadTable<T> {
    /// An empty table; the first id handed out is 1.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            threads: IdMap::new(),
            next_id: 1,
        }
    }

    /// Registers a new thread in state [`ThreadState::Runnable`] and returns
    /// its id. The kernel then pushes it on a run queue.
    pub fn spawn(&mut self, priority: Priority, data: T) -> ThreadId {
        let id = self.next_id;
        self.next_id += 1;
        self.threads.insert(
            id,
            Thread {
                state: ThreadState::Runnable,
                joiner: None,
                priority,
                data,
            },
        );
        id
    }

    /// The entry of `id`.
    #[must_use]
    pub fn get(&self, id: ThreadId) -> Option<&Thread<T>> {
        self.threads.get(id)
    }

    /// The entry of `id`, mutably (priority and data; the state is changed
    /// through [`set_state`](Self::set_state)).
    pub fn get_mut(&mut self, id: ThreadId) -> Option<&mut Thread<T>> {
        self.threads.get_mut(id)
    }

    /// The state of `id`.
    #[must_use]
    pub fn state(&self, id: ThreadId) -> Option<ThreadState> {
        self.threads.get(id).map(|t| t.state)
    }

    /// Whether `id` is in the table (alive, or exited and not yet reaped).
    #[must_use]
    pub fn contains(&self, id: ThreadId) -> bool {
        self.threads.contains_key(id)
    }

    /// Moves `id` to state `to` if the transition is legal (see
    /// [`ThreadState`]); otherwise leaves it unchanged. Moving to `Exited`
    /// must go through [`exit`](Self::exit) and is rejected here.
    pub fn set_state(&mut self, id: ThreadId, to: ThreadState) -> Result<(), SchedError> {
        let t = self.threads.get_mut(id).ok_or(SchedError::NoSuchThread)?;
        if !t.state.can_transition_to(to) {
            return Err(SchedError::InvalidTransition { from: t.state, to });
        }
        t.state = to;
        Ok(())
    }

    /// Marks `id` exited with `code` and returns the thread to wake because
    /// it is waiting in [`join`](Self::join), if any.
    ///
    /// Any live state may exit (a running thread finishing, or another state
    /// being killed; the kernel removes it from run/wait queues). Returns
    /// `None` and changes nothing if `id` does not exist or already exited.
    /// The entry stays in the table until joined or [`reap`](Self::reap)ed.
    pub fn exit(&mut self, id: ThreadId, code: i32) -> Option<ThreadId> {
        let t = self.threads.get_mut(id)?;
        if t.state.is_exited() {
            return None;
        }
        t.state = ThreadState::Exited(code);
        t.joiner
    }

    /// `waiter` joins `target`.
    ///
    /// * `target` exited: returns [`JoinResult::Done`] with its exit code and
    ///   data, and removes its entry.
    /// * `target` alive: records `waiter` as its joiner and returns
    ///   [`JoinResult::MustWait`]. Calling again from the same waiter (after
    ///   being woken, or spuriously) is allowed.
    /// * Errors: [`SchedError::JoinSelf`], [`SchedError::NoSuchThread`] (also
    ///   for an already-joined-and-reaped target), and
    ///   [`SchedError::AlreadyJoined`] if a different thread is the joiner.
    ///
    /// `waiter` itself need not be in the table.
    pub fn join(&mut self, waiter: ThreadId, target: ThreadId) -> JoinResult<T> {
        if waiter == target {
            return JoinResult::Err(SchedError::JoinSelf);
        }
        let Some(t) = self.threads.get_mut(target) else {
            return JoinResult::Err(SchedError::NoSuchThread);
        };
        if t.joiner.is_some_and(|j| j != waiter) {
            return JoinResult::Err(SchedError::AlreadyJoined);
        }
        match t.state {
            ThreadState::Exited(code) => match self.threads.remove(target) {
                Some(t) => JoinResult::Done(code, t.data),
                None => JoinResult::Err(SchedError::NoSuchThread),
            },
            _ => {
                t.joiner = Some(waiter);
                JoinResult::MustWait
            }
        }
    }

    /// Removes an exited thread nobody will join (detached) and returns its
    /// data. Returns `None` and changes nothing if `id` does not exist or has
    /// not exited. A recorded joiner is *not* woken: the kernel should join
    /// rather than reap a thread that has one.
    pub fn reap(&mut self, id: ThreadId) -> Option<T> {
        if !self.threads.get(id)?.state.is_exited() {
            return None;
        }
        self.threads.remove(id).map(|t| t.data)
    }

    /// Number of entries (live and exited-but-unreaped threads).
    #[must_use]
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// All entries in id order.
    pub fn iter(&self) -> impl Iterator<Item = (ThreadId, &Thread<T>)> + '_ {
        self.threads.iter()
    }

    /// All entries, mutably, in no particular order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ThreadId, &mut Thread<T>)> + '_ {
        self.threads.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ThreadState::*;
    use alloc::vec::Vec;

    fn table() -> ThreadTable<&'static str> {
        ThreadTable::new()
    }

    #[test]
    fn spawn_assigns_monotonic_ids() {
        let mut tt = table();
        let a = tt.spawn(Priority::Normal, "a");
        let b = tt.spawn(Priority::High, "b");
        assert_eq!((a, b), (1, 2));
        assert_eq!(tt.len(), 2);
        assert_eq!(tt.state(a), Some(Runnable));
        assert_eq!(tt.get(b).unwrap().priority, Priority::High);
        assert_eq!(tt.get(b).unwrap().data, "b");
        assert_eq!(tt.get(a).unwrap().joiner(), None);
        // Ids are not reused after reaping.
        tt.exit(b, 0);
        assert_eq!(tt.reap(b), Some("b"));
        assert_eq!(tt.spawn(Priority::Low, "c"), 3);
        let ids: Vec<_> = tt.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [1, 3]);
    }

    #[test]
    fn get_mut_edits_data_and_priority() {
        let mut tt = ThreadTable::new();
        let a = tt.spawn(Priority::Low, 0usize);
        let t = tt.get_mut(a).unwrap();
        t.data = 0xdead;
        t.priority = Priority::High;
        assert_eq!(tt.get(a).unwrap().data, 0xdead);
        assert_eq!(tt.get(a).unwrap().priority, Priority::High);
        for (_, t) in tt.iter_mut() {
            t.data += 1;
        }
        assert_eq!(tt.get(a).unwrap().data, 0xdeae);
    }

    #[test]
    fn legal_transitions() {
        let mut tt = table();
        let a = tt.spawn(Priority::Normal, "a");
        let steps = [
            Running,
            Runnable,
            Running,
            Blocked,
            Runnable,
            Running,
            Sleeping { deadline_ns: 99 },
            Runnable,
            Running,
        ];
        for s in steps {
            assert_eq!(tt.set_state(a, s), Ok(()), "-> {s:?}");
            assert_eq!(tt.state(a), Some(s));
        }
    }

    #[test]
    fn illegal_transitions() {
        let mut tt = table();
        let a = tt.spawn(Priority::Normal, "a");
        // Runnable cannot block/sleep or become Runnable again.
        for to in [Runnable, Blocked, Sleeping { deadline_ns: 1 }] {
            assert_eq!(
                tt.set_state(a, to),
                Err(SchedError::InvalidTransition { from: Runnable, to })
            );
        }
        tt.set_state(a, Running).unwrap();
        assert!(tt.set_state(a, Running).is_err());
        tt.set_state(a, Blocked).unwrap();
        // Blocked -> Running must go through Runnable; double wake rejected.
        assert!(tt.set_state(a, Running).is_err());
        assert!(tt.set_state(a, Sleeping { deadline_ns: 5 }).is_err());
        tt.set_state(a, Runnable).unwrap();
        assert!(tt.set_state(a, Runnable).is_err()); // lost wake/timeout race
        // Exited only through exit().
        assert_eq!(
            tt.set_state(a, Exited(0)),
            Err(SchedError::InvalidTransition {
                from: Runnable,
                to: Exited(0)
            })
        );
        assert_eq!(tt.state(a), Some(Runnable));
        assert_eq!(tt.set_state(42, Running), Err(SchedError::NoSuchThread));
    }

    #[test]
    fn waking_exited_thread_is_an_error() {
        let mut tt = table();
        let a = tt.spawn(Priority::Normal, "a");
        tt.set_state(a, Running).unwrap();
        tt.set_state(a, Blocked).unwrap();
        assert_eq!(tt.exit(a, 3), None); // killed while blocked
        for to in [Runnable, Running, Blocked, Exited(1)] {
            assert_eq!(
                tt.set_state(a, to),
                Err(SchedError::InvalidTransition {
                    from: Exited(3),
                    to
                })
            );
        }
        // A second exit changes nothing.
        assert_eq!(tt.exit(a, 9), None);
        assert_eq!(tt.state(a), Some(Exited(3)));
        assert_eq!(tt.exit(77, 0), None);
    }

    #[test]
    fn join_after_exit() {
        let mut tt = table();
        let main = tt.spawn(Priority::Normal, "main");
        let child = tt.spawn(Priority::Normal, "child");
        assert_eq!(tt.exit(child, 7), None); // nobody joined yet
        assert_eq!(tt.join(main, child), JoinResult::Done(7, "child"));
        assert!(!tt.contains(child)); // reaped
        assert_eq!(
            tt.join(main, child),
            JoinResult::Err(SchedError::NoSuchThread)
        );
    }

    #[test]
    fn join_before_exit() {
        let mut tt = table();
        let main = tt.spawn(Priority::Normal, "main");
        let child = tt.spawn(Priority::Normal, "child");
        assert_eq!(tt.join(main, child), JoinResult::MustWait);
        assert_eq!(tt.get(child).unwrap().joiner(), Some(main));
        // Spurious wake-up: joining again still waits, no error.
        assert_eq!(tt.join(main, child), JoinResult::MustWait);
        // Exit reports the joiner to wake.
        assert_eq!(tt.exit(child, -1), Some(main));
        assert_eq!(tt.join(main, child), JoinResult::Done(-1, "child"));
        assert_eq!(tt.len(), 1);
    }

    #[test]
    fn double_join_is_an_error() {
        let mut tt = table();
        let a = tt.spawn(Priority::Normal, "a");
        let b = tt.spawn(Priority::Normal, "b");
        let c = tt.spawn(Priority::Normal, "c");
        assert_eq!(tt.join(a, c), JoinResult::MustWait);
        assert_eq!(tt.join(b, c), JoinResult::Err(SchedError::AlreadyJoined));
        tt.exit(c, 0);
        // Still refused after exit: only the registered joiner collects.
        assert_eq!(tt.join(b, c), JoinResult::Err(SchedError::AlreadyJoined));
        assert_eq!(tt.join(a, c), JoinResult::Done(0, "c"));
    }

    #[test]
    fn join_errors() {
        let mut tt = table();
        let a = tt.spawn(Priority::Normal, "a");
        assert_eq!(tt.join(a, a), JoinResult::Err(SchedError::JoinSelf));
        assert_eq!(tt.join(a, 99), JoinResult::Err(SchedError::NoSuchThread));
        // A waiter outside the table (e.g. id 0 for the boot thread) may join.
        assert_eq!(tt.join(0, a), JoinResult::MustWait);
    }

    #[test]
    fn reap_only_exited() {
        let mut tt = table();
        let a = tt.spawn(Priority::Normal, "a");
        assert_eq!(tt.reap(a), None);
        assert!(tt.contains(a));
        tt.exit(a, 0);
        assert_eq!(tt.reap(a), Some("a"));
        assert_eq!(tt.reap(a), None);
        assert!(tt.is_empty());
    }

    #[test]
    fn can_transition_table() {
        let all = [
            Runnable,
            Running,
            Blocked,
            Sleeping { deadline_ns: 0 },
            Exited(0),
        ];
        let mut legal = 0;
        for from in all {
            for to in all {
                if from.can_transition_to(to) {
                    legal += 1;
                }
            }
        }
        // Runnable->Running, Running->{Runnable,Blocked,Sleeping},
        // Blocked->Runnable, Sleeping->Runnable.
        assert_eq!(legal, 6);
    }

    #[test]
    fn error_display() {
        use alloc::string::ToString;
        assert_eq!(
            SchedError::JoinSelf.to_string(),
            "a thread cannot join itself"
        );
        assert!(
            SchedError::InvalidTransition {
                from: Exited(1),
                to: Runnable
            }
            .to_string()
            .contains("Exited(1)")
        );
    }
}
