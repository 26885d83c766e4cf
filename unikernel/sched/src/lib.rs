//! Hardware-independent scheduler logic: run queues, timer queue, wait queues.
//!
//! This crate holds the *decisions* and the *bookkeeping* of the scheduler and
//! nothing else: it never touches registers, stacks, interrupts or locks. The
//! kernel's context-switch code asks it two questions — "who runs next?"
//! ([`RunQueue::pop`], [`SlicePolicy::should_preempt`]) and "when must the
//! next timer interrupt fire?" ([`TimerQueue::next_deadline`],
//! [`SlicePolicy::next_slice_deadline`]) — and supplies the blocking, the
//! switching and the locking itself.
//!
//! # Per-CPU instances, no globals
//!
//! Every structure here is a plain value. The kernel gives each CPU its own
//! [`RunQueue`] and [`TimerQueue`] (behind that CPU's lock; their entries
//! are the kernel's per-thread control blocks, which the [`ThreadId`]-typed
//! slots carry as opaque numbers) and keeps one [`ThreadTable`] for ids,
//! exit codes and joins. Nothing in the crate is `static`, and nothing
//! assumes there is only one of anything.
//!
//! # Policy: round-robin over a few strict priority levels
//!
//! The run queue keeps one FIFO per [`Priority`] (three levels: `Low`,
//! `Normal`, `High`). [`RunQueue::pop`] takes the thread at the head of the
//! highest non-empty level; within a level threads take turns in arrival
//! order. With a non-zero [`SlicePolicy::slice_ns`] a running thread is
//! preempted as soon as a *higher*-priority thread is waiting, and at the end
//! of its slice when a thread of the *same* priority is waiting; it is never
//! preempted in favour of a lower priority. A slice of `0` turns preemption
//! off entirely (purely cooperative scheduling). When nobody else waits no
//! slice timer is needed at all, so the kernel can run tickless.
//!
//! Why this rather than a CFS-like fair scheduler? The workloads this
//! unikernel targets are servers: a handful of threads that are mostly
//! I/O-bound — they wake on a packet or a completed read, do a little work and
//! block again. For them the things that matter are
//!
//! * **predictable latency**: a woken thread waits behind at most the threads
//!   of its own level (each for at most one slice) plus any higher level,
//!   which is easy to reason about and to bound;
//! * **O(1) operations**: enqueue and dequeue are a `VecDeque` push/pop plus a
//!   scan of three levels, with no tree rebalancing or virtual-runtime
//!   arithmetic on the switch path;
//! * **simplicity**: a few hundred lines of policy that can be tested
//!   exhaustively on the host.
//!
//! Fairness between CPU-bound threads is what CFS buys, and it costs a
//! red-black tree, per-thread accounting and tunables. With few threads that
//! block often, round-robin is already close to fair. Strict priorities can
//! starve `Low` threads while higher levels stay busy; `Low` is meant for
//! background work that may wait. A CFS-like policy (or priority aging) can
//! be added later behind the same "who runs next" interface.
//!
//! # Other pieces
//!
//! * [`TimerQueue`]: one-shot timers keyed by a monotonic deadline in
//!   nanoseconds, with O(log n) insert/cancel and FIFO order for equal
//!   deadlines.
//! * [`WaitQueue`]: a FIFO of blocked thread ids.
//! * [`ThreadTable`]: thread lifecycle states, legal transitions and join.
//! * [`Semaphore`] and [`CondvarState`]: the decision logic of the two basic
//!   blocking primitives.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod policy;
mod runqueue;
mod sync;
mod thread;
mod timer;
mod wait;

pub use policy::SlicePolicy;
pub use runqueue::{Priority, RunQueue};
pub use sync::{AcquireResult, CondvarState, Semaphore};
pub use thread::{JoinResult, SchedError, Thread, ThreadState, ThreadTable};
pub use timer::{TimerId, TimerQueue};
pub use wait::WaitQueue;

/// Opaque thread identifier.
///
/// Ids handed out by [`ThreadTable::spawn`] start at 1 and increase
/// monotonically; they are never reused. `0` is never assigned, so the kernel
/// may use it for a thread that is not in the table (e.g. a per-CPU idle
/// thread, which is never put in a [`RunQueue`] either).
pub type ThreadId = u64;
