//! Threads and the scheduler: the machine side of `uk-sched`'s policy.
//!
//! One run queue per CPU with three priority levels, round robin within a
//! level; a timer queue per CPU with the deadlines of the threads that went
//! to sleep there; a one-shot timer per CPU (tickless) armed for the
//! earliest of its next sleeper's deadline and its running thread's slice
//! end; a
//! timer slice (`timeslice=` ms, default 10, 0 = cooperative) preempts a thread
//! that never blocks. When nothing is runnable a CPU halts in its idle loop
//! (the boot context on the boot CPU, the AP's own stack on the others) until
//! the next interrupt.
//!
//! Placement: a thread is queued on its home CPU: the CPU that spawned it,
//! unless it is spawned with [`Placement::Cpu`] (pinned there for good) or
//! [`Placement::Any`] (the CPU with the fewest threads). Load balancing is
//! work stealing by idle CPUs: a CPU about to run its idle loop takes a
//! runnable thread that is not pinned from the CPU with the most threads
//! waiting, which becomes its new home; a thread that starts to wait behind
//! a running one is offered to an idle CPU (its IPI), which steals it.
//!
//! Locking: each CPU's part (`CpuSched`: run queue, timer queue, current
//! thread) is behind its own interrupt-disabling spinlock, and so is the
//! thread table (`THREADS`: ids, join and exit, the entry closure). A
//! thread's run state lives in its control block (`Ctx`, atomics written
//! under its home CPU's lock), and the run and timer queues hold control
//! block addresses, so a switch that involves no other CPU takes only its
//! own CPU's lock. Order: the thread table before a CPU's lock; two CPU
//! locks only when stealing, in index order (the idle loop) or with
//! `try_lock` (a switch, which holds its own). Every path that switches
//! threads disables interrupts first, takes its CPU's lock, picks the next
//! thread, releases the lock and switches with interrupts still off; the
//! resumed thread restores its own interrupt state. A thread's `on_cpu`
//! flag is set by the CPU that switches to it and cleared by that CPU only
//! after `switch_stack` saved the thread's registers (in `finish_switch`,
//! on the next context): a CPU that picks a thread whose flag is still set
//! waits for it, and a joiner that frees an exited thread's stack waits for
//! it too. A wake-up for a thread that is still running on another CPU
//! (between its waiter's registration and its block) is kept
//! (`wake_pending`) and makes that block return at once. Waking a thread
//! homed on another CPU that must reschedule (idle, or the woken thread
//! outranks its current one) sends that CPU the IPI (`smp::IPI_VECTOR`),
//! whose end of interrupt reschedules.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use uk_sched::{
    JoinResult, Priority, RunQueue, SlicePolicy, ThreadId, ThreadTable, TimerId, TimerQueue,
};
use x86_64::instructions::interrupts;

use crate::arch::apic;
use crate::arch::context::{prepare_stack, switch_stack};
use crate::arch::idt::TrapFrame;
use crate::arch::smp;
use crate::sync::{IrqGuard, IrqMutex, Once, level};
use crate::{mm, time};

pub use uk_sched::Priority as ThreadPriority;

/// The idle context's thread id (no thread: never in the table).
const IDLE: ThreadId = 0;
/// Default stack size of a spawned thread (demand paged).
pub const DEFAULT_STACK: u64 = 64 * 1024;

// A thread's run state (`Ctx::state`).
const RUNNABLE: u8 = 0;
const RUNNING: u8 = 1;
const BLOCKED: u8 = 2;
const SLEEPING: u8 = 3;
const EXITED: u8 = 4;
/// `Ctx::timer` when no timer is pending.
const NO_TIMER: u64 = u64::MAX;

/// A thread's control block (and each CPU's idle context): the saved stack
/// pointer and what the switch and wake-up paths need without the thread
/// table. A thread's is allocated at spawn and freed ([`free_thread`]) only
/// once the thread exited, left the table and its `on_cpu` is clear, so a
/// run queue, a timer queue, `current` or `prev` may hold its address. The
/// run-state fields are written under the lock of the thread's home CPU
/// (`home`, which changes only under both CPUs' locks, when stolen).
struct Ctx {
    rsp: AtomicU64,
    on_cpu: AtomicBool,
    id: AtomicU64,
    prio: Priority,
    /// Placed with [`Placement::Cpu`]: never moved to another CPU.
    pinned: bool,
    /// The demand-paged stack `[bottom, top)`; `(0, 0)` for an idle context.
    stack: (u64, u64),
    /// The home CPU's index: the CPU whose queue the thread goes to when
    /// woken and whose lock guards its state (an idle CPU may take it from
    /// there: [`take_from`]). A running thread runs on its home CPU.
    home: AtomicU32,
    state: AtomicU8,
    /// A wake-up arrived while the thread was running on another CPU.
    wake_pending: AtomicBool,
    woken_by_timer: AtomicBool,
    /// The pending sleep's timer id (`NO_TIMER`: none), in its home CPU's
    /// queue (a sleeping thread is in no run queue, so it cannot move).
    timer: AtomicU64,
}

impl Ctx {
    fn new(rsp: u64, prio: Priority, pinned: bool, stack: (u64, u64), home: usize) -> Ctx {
        Ctx {
            rsp: AtomicU64::new(rsp),
            on_cpu: AtomicBool::new(false),
            id: AtomicU64::new(IDLE),
            prio,
            pinned,
            stack,
            home: AtomicU32::new(home as u32),
            state: AtomicU8::new(RUNNABLE),
            wake_pending: AtomicBool::new(false),
            woken_by_timer: AtomicBool::new(false),
            timer: AtomicU64::new(NO_TIMER),
        }
    }

    /// Waits until no CPU runs on this context any more.
    fn wait_off_cpu(&self) {
        while self.on_cpu.load(Ordering::Acquire) {
            smp::service_tlb();
            core::hint::spin_loop();
        }
    }
}

/// The control block at `addr`: a thread's, from a run queue, a timer
/// queue, `CpuSched::current` or `prev`, or one looked up in the thread
/// table under its lock.
#[inline]
fn ctx<'a>(addr: u64) -> &'a Ctx {
    // SAFETY: such addresses come from `Box::into_raw` in `spawn_raw`, and
    // the box is freed only by `free_thread`, after the thread exited (so
    // it is in no run queue, timer queue or `current`), left the table
    // (which lookups hold the lock of) and its `on_cpu` was cleared (after
    // which no CPU's `prev` names it). All mutable fields are atomics.
    unsafe { &*(addr as *const Ctx) }
}

/// Where a new thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The spawning thread's CPU (the default).
    Here,
    /// The CPU with this index (the last one if there are fewer).
    Cpu(u32),
    /// The CPU with the fewest live threads.
    Any,
}

/// The kernel's per-thread data, kept in `uk-sched`'s thread table.
pub struct ThreadData {
    /// The control block (owned: freed by [`free_thread`]).
    ctx: NonNull<Ctx>,
    entry: Option<Box<dyn FnOnce() + Send>>,
    detached: bool,
}

// SAFETY: the control block is owned by this entry and shared only as
// `&Ctx`, whose mutable fields are atomics.
unsafe impl Send for ThreadData {}

impl ThreadData {
    fn addr(&self) -> u64 {
        self.ctx.as_ptr() as u64
    }
}

/// Frees a thread that left the table (joined or reaped): waits until its
/// CPU switched away from its stack, then frees its control block and
/// unmaps the stack.
fn free_thread(d: ThreadData) {
    let c = ctx(d.addr());
    c.wait_off_cpu();
    let (bottom, top) = c.stack;
    // SAFETY: from `Box::into_raw` in `spawn_raw`, freed once, here: the
    // thread exited and left the table, and no CPU runs on it any more.
    drop(unsafe { Box::from_raw(d.ctx.as_ptr()) });
    let _ = mm::unmap_stack(bottom, top);
}

/// One CPU's part of the scheduler, behind that CPU's lock.
struct CpuSched {
    /// Runnable threads' control block addresses.
    rq: RunQueue,
    /// The deadlines of the threads that went to sleep on this CPU (their
    /// home), with their control block addresses.
    timers: TimerQueue<u64>,
    /// The running thread's control block address; 0: the idle context.
    current: u64,
    idle_ctx: Ctx,
    policy: SlicePolicy,
    slice_start: u64,
    need_resched: bool,
    /// Exited detached threads, reaped by the next context this CPU runs.
    zombies: Vec<ThreadId>,
    armed: Option<u64>,
    /// The context this CPU is switching away from (0: none): its `on_cpu`
    /// is cleared once the switch finished.
    prev: u64,
    /// Timer interrupts this CPU took, and the sleepers they woke.
    timer_irqs: u64,
    timer_wakes: u64,
}

/// A CPU's lock and what others read of it without the lock.
struct PerCpuSched {
    s: IrqMutex<CpuSched>,
    /// Live threads homed here (for [`Placement::Any`]).
    homed: AtomicUsize,
}

/// Every CPU's part, set when the scheduler starts.
static CPUS: Once<Box<[PerCpuSched]>> = Once::new();

/// The thread table.
static THREADS: IrqMutex<ThreadTable<ThreadData>> =
    IrqMutex::with_level(level::SCHED, ThreadTable::new());

type CpuGuard = IrqGuard<'static, CpuSched>;

/// Every CPU's part (empty before the scheduler starts).
#[inline]
fn cpus() -> &'static [PerCpuSched] {
    CPUS.get().map_or(&[], |b| b)
}

/// CPU `c`'s lock.
#[inline]
fn lock_cpu(c: usize) -> CpuGuard {
    cpus()[c].s.lock()
}

/// This CPU's index.
#[inline]
fn me() -> usize {
    smp::this_cpu().index as usize
}

/// The running thread's (demand-paged) stack `[bottom, top)`, or `None` on
/// an idle context (the boot stack or an AP's, mapped in full). For [`mm`],
/// which makes the stack below its caller resident before it takes its lock.
pub fn current_stack() -> Option<(u64, u64)> {
    let c = smp::this_cpu();
    match (
        c.stack_bottom.load(Ordering::Relaxed),
        c.stack_top.load(Ordering::Relaxed),
    ) {
        (0, _) => None,
        r => Some(r),
    }
}

/// Counters for tests and benchmarks, summed over all CPUs (per CPU:
/// [`cpu_runs`]).
pub struct SchedStats {
    /// Context switches.
    pub switches: AtomicU64,
    /// Timer interrupts taken.
    pub timer_irqs: AtomicU64,
    /// Preemptions by the timer slice.
    pub preemptions: AtomicU64,
    /// Threads spawned.
    pub spawned: AtomicU64,
    /// Threads an idle CPU took from another CPU's queue.
    pub steals: AtomicU64,
    /// Times a CPU halted in its idle loop.
    pub idle_halts: AtomicU64,
    /// TSC cycles spent halted, all CPUs together (with one CPU, the rest
    /// of the time it worked).
    pub idle_cycles: AtomicU64,
}

/// The scheduler's counters.
pub static STATS: SchedStats = SchedStats {
    switches: AtomicU64::new(0),
    timer_irqs: AtomicU64::new(0),
    preemptions: AtomicU64::new(0),
    spawned: AtomicU64::new(0),
    steals: AtomicU64::new(0),
    idle_halts: AtomicU64::new(0),
    idle_cycles: AtomicU64::new(0),
};

fn ns_to_tsc(ns: u64) -> u64 {
    let hz = time::tsc_hz().max(1);
    crate::arch::boot::entry_tsc() + (ns as u128 * hz as u128 / 1_000_000_000) as u64
}

impl CpuSched {
    fn new(policy: SlicePolicy) -> CpuSched {
        CpuSched {
            rq: RunQueue::new(),
            timers: TimerQueue::new(),
            current: 0,
            idle_ctx: Ctx::new(0, Priority::Low, true, (0, 0), 0),
            policy,
            slice_start: 0,
            need_resched: false,
            zombies: Vec::new(),
            armed: None,
            prev: 0,
            timer_irqs: 0,
            timer_wakes: 0,
        }
    }

    fn cur_prio(&self) -> Priority {
        if self.current == 0 {
            Priority::Low
        } else {
            ctx(self.current).prio
        }
    }

    /// Threads waiting here (queued behind a running thread; one queued on
    /// an idle CPU is about to run there).
    fn waiting(&self) -> usize {
        self.rq.len().saturating_sub(usize::from(self.current == 0))
    }

    fn slice_deadline(&self) -> Option<u64> {
        if self.current == 0 || !self.policy.is_preemptive() {
            return None;
        }
        let waiting = self.rq.highest_waiting()?;
        (waiting >= self.cur_prio()).then(|| self.slice_start + self.policy.slice_ns)
    }

    /// Arms this CPU's one-shot timer (this must be the calling CPU's
    /// part) for the earliest of its own sleepers' deadlines and its slice
    /// end.
    fn reprogram(&mut self) {
        let next = match (self.timers.next_deadline(), self.slice_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Lazy: the timer is rewritten only when it must fire earlier than
        // it is set to. A deadline that moved later or went away leaves the
        // armed one in place; when it fires early, `on_timer` finds nothing
        // due and arms the real one. Each rewrite is a device access (an
        // exit under a hypervisor, a BQL round trip under TCG), and a busy
        // server cancels and re-arms its deadlines several times a request.
        if let Some(n) = next
            && self.armed.is_none_or(|a| n < a)
        {
            self.armed = next;
            apic::set_timer(Some(ns_to_tsc(n)));
        }
    }

    /// Makes the blocked or sleeping thread at `a`, homed on this CPU (`c`),
    /// runnable here; `None` if it was not waiting, else whether it should
    /// be offered to an idle CPU ([`offer`], with no CPU lock held).
    fn wake(&mut self, c: usize, a: u64, by_timer: bool) -> Option<bool> {
        let t = ctx(a);
        match t.state.load(Ordering::Relaxed) {
            BLOCKED | SLEEPING => {}
            // Between registering as a waiter and blocking, on another CPU:
            // its block returns at once. (Never with one CPU: a running
            // thread is then the caller itself.) Reported as not woken, so
            // `wake_one` also wakes the next waiter: the thread may be past
            // its wait already (a timeout), and a spare wake-up only costs
            // a re-check, where a lost one would cost a hang.
            RUNNING if c != me() => {
                t.wake_pending.store(true, Ordering::Relaxed);
                return None;
            }
            _ => return None,
        }
        t.woken_by_timer.store(by_timer, Ordering::Relaxed);
        let timer = t.timer.swap(NO_TIMER, Ordering::Relaxed);
        if timer != NO_TIMER && !by_timer {
            // This CPU's armed timer is left as it is (lazy re-arming).
            self.timers.cancel(TimerId::from_raw(timer));
        }
        t.state.store(RUNNABLE, Ordering::Relaxed);
        Some(self.push(c, a, t.prio, t.pinned))
    }

    /// Queues runnable thread `a` on this CPU (`c`) and marks it for a
    /// reschedule when `a` should run first; a remote CPU newly so marked
    /// gets the IPI. Returns true when the thread waits here and may move:
    /// the caller then offers it to an idle CPU ([`offer`]).
    fn push(&mut self, c: usize, a: u64, prio: Priority, pinned: bool) -> bool {
        let cur_prio = self.cur_prio();
        let was_empty = self.rq.is_empty();
        self.rq.push(a, prio);
        let runs_next = self.current == 0 || prio > cur_prio;
        let kick = if runs_next {
            !core::mem::replace(&mut self.need_resched, true)
        } else {
            // The first thread waiting behind a running one: that CPU's
            // slice timer must be armed now (the IPI handler re-arms).
            was_empty
        };
        if kick && c != me() {
            smp::kick(c);
        }
        !runs_next && !pinned && cpus().len() > 1
    }
}

/// Locks the home CPU of the thread at `a` (the caller holds the thread
/// table's lock, or the thread cannot exit): its index and guard.
fn lock_home(a: u64) -> (usize, CpuGuard) {
    let t = ctx(a);
    loop {
        let h = t.home.load(Ordering::Relaxed) as usize;
        let g = lock_cpu(h);
        // Stolen meanwhile (only a queued thread is): its new home.
        if t.home.load(Ordering::Relaxed) as usize == h {
            return (h, g);
        }
    }
}

/// A thread that may move now waits behind a running one: if a CPU is
/// idle with nothing queued and no wake-up pending, that CPU is told (the
/// IPI, or its own pending reschedule if it is the caller) and steals a
/// thread in its next `switch_away`. Takes each CPU's lock in turn: the
/// caller holds none.
#[cold]
#[inline(never)]
fn offer() {
    let here = me();
    for (i, p) in cpus().iter().enumerate() {
        let mut g = p.s.lock();
        if g.current == 0 && g.rq.is_empty() && !g.need_resched {
            g.need_resched = true;
            drop(g);
            if i != here {
                smp::kick(i);
            }
            return;
        }
    }
}

/// Moves the tail thread of `victim`'s highest level whose tail may move
/// (not pinned; nothing if none may) to `mine`, CPU `c`, its new home.
/// The thread may still be on its old CPU's stack (it was just preempted
/// or blocked there): `switch_away` waits for its `on_cpu`.
fn take_from(c: usize, mine: &mut CpuSched, v: usize, victim: &mut CpuSched) -> bool {
    let Some((a, p)) = victim.rq.steal(|a| !ctx(a).pinned) else {
        return false;
    };
    ctx(a).home.store(c as u32, Ordering::Relaxed);
    cpus()[v].homed.fetch_sub(1, Ordering::Relaxed);
    cpus()[c].homed.fetch_add(1, Ordering::Relaxed);
    mine.rq.push(a, p);
    STATS.steals.fetch_add(1, Ordering::Relaxed);
    true
}

/// Work stealing from `switch_away` (several CPUs, CPU `c`'s queue empty,
/// its lock held): the CPU with the most threads waiting among those whose
/// lock is free (`try_lock`: never waits for a second CPU lock).
#[cold]
#[inline(never)]
fn steal_locked(c: usize, mine: &mut CpuSched) -> bool {
    let mut best: Option<(usize, CpuGuard)> = None;
    let mut most = 0;
    for (i, p) in cpus().iter().enumerate() {
        if i == c {
            continue;
        }
        if let Some(g) = p.s.try_lock() {
            let w = g.waiting();
            if w > most {
                most = w;
                best = Some((i, g));
            }
        }
    }
    best.is_some_and(|(v, mut g)| take_from(c, mine, v, &mut g))
}

/// Work stealing from the idle loop of CPU `c` (several CPUs, no lock
/// held): picks the CPU with the most threads waiting, then takes its lock
/// and `c`'s in index order and moves a thread. Returns `c`'s guard if its
/// queue is no longer empty.
#[cold]
#[inline(never)]
fn steal_idle(c: usize) -> Option<CpuGuard> {
    let mut victim = c;
    let mut most = 0;
    for (i, p) in cpus().iter().enumerate() {
        if i != c {
            let w = p.s.lock().waiting();
            if w > most {
                most = w;
                victim = i;
            }
        }
    }
    if victim == c {
        return None;
    }
    let (mut mine, mut theirs) = if victim < c {
        let t = lock_cpu(victim);
        (lock_cpu(c), t)
    } else {
        let m = lock_cpu(c);
        (m, lock_cpu(victim))
    };
    if mine.rq.is_empty() {
        take_from(c, &mut mine, victim, &mut theirs);
    }
    drop(theirs);
    (!mine.rq.is_empty()).then_some(mine)
}

/// Switches to the next runnable thread (or idle). `requeue` puts the
/// current thread back at the tail of its queue. `g` is this CPU's lock;
/// interrupts must be disabled before it was taken; they stay disabled
/// across the switch.
fn switch_away(mut g: CpuGuard, requeue: bool) {
    let in_handler = crate::trap::in_handler();
    if in_handler != 0 {
        drop(g);
        panic!(
            "thread switch inside the handler of vector {:#x} (before its EOI)",
            in_handler - 1
        );
    }
    let cpu = smp::this_cpu();
    let c = cpu.index as usize;
    let cs = &mut *g;
    let cur = cs.current;
    if requeue && cur != 0 {
        let t = ctx(cur);
        if t.state.load(Ordering::Relaxed) == RUNNING {
            t.state.store(RUNNABLE, Ordering::Relaxed);
            cs.rq.push(cur, t.prio);
        }
    }
    if cs.rq.is_empty() && cpus().len() > 1 {
        steal_locked(c, cs);
    }
    let next = cs.rq.pop().map_or(0, |(a, _)| a);
    cs.need_resched = false;
    cs.slice_start = time::since_boot_ns();
    if next != 0 {
        ctx(next).state.store(RUNNING, Ordering::Relaxed);
    }
    if next == cur {
        cs.reprogram();
        return;
    }
    cs.current = next;
    cs.reprogram();
    let from: *const Ctx = if cur == 0 { &cs.idle_ctx } else { ctx(cur) };
    let to: *const Ctx = if next == 0 { &cs.idle_ctx } else { ctx(next) };
    // The context switched away from is released by the next context's
    // `finish_switch`, once its registers are saved.
    cs.prev = from as u64;
    // SAFETY: `to` is this CPU's idle context (in `CPUS`, never freed) or
    // the control block of `next`, which this CPU now runs (state Running,
    // current): nothing frees it; likewise `from`, whose block is freed
    // only after `finish_switch` below cleared its `on_cpu`.
    let (from, to) = unsafe { (&*from, &*to) };
    let (bottom, top) = to.stack;
    cpu.stack_bottom.store(bottom, Ordering::Relaxed);
    cpu.stack_top.store(top, Ordering::Relaxed);
    cpu.current
        .store(to.id.load(Ordering::Relaxed), Ordering::Relaxed);
    if next != 0 {
        cpu.runs
            .store(cpu.runs.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    STATS.switches.fetch_add(1, Ordering::Relaxed);
    drop(g);
    // Only a thread that moved between CPUs (stolen) can still be on its
    // old CPU's stack here.
    to.wait_off_cpu();
    to.on_cpu.store(true, Ordering::Relaxed);
    // SAFETY: interrupts are off (the caller disabled them before locking);
    // `from.rsp` lives while the thread exists (above), and `to.rsp` was
    // saved by switch_stack (its `on_cpu` was clear: the save finished) or
    // prepared by prepare_stack.
    unsafe { switch_stack(from.rsp.as_ptr(), to.rsp.load(Ordering::Relaxed)) };
    finish_switch();
}

/// Runs on the context that was just switched to: releases the context
/// this CPU switched away from (its registers are saved now), then reaps
/// this CPU's detached threads that exited and frees their stacks.
fn finish_switch() {
    let Some(p) = cpus().get(me()) else { return };
    loop {
        let zombie = {
            let mut g = p.s.lock();
            let prev = core::mem::take(&mut g.prev);
            if prev != 0 {
                // `prev` is freed only once this flag is clear (this CPU's
                // zombies below, joiners and `detach` wait for it).
                ctx(prev).on_cpu.store(false, Ordering::Release);
            }
            g.zombies.pop()
        };
        let Some(t) = zombie else { return };
        let data = THREADS.lock().reap(t);
        if let Some(d) = data {
            free_thread(d);
        }
    }
}

fn with_irqs_off<R>(f: impl FnOnce() -> R) -> R {
    let was = interrupts::are_enabled();
    interrupts::disable();
    let r = f();
    if was {
        interrupts::enable();
    }
    r
}

fn current_id() -> ThreadId {
    smp::this_cpu().current.load(Ordering::Relaxed)
}

/// The running thread's id (0 before the scheduler starts, and in idle).
pub fn current() -> ThreadId {
    current_id()
}

/// Timer interrupt: wakes sleepers whose time came, decides preemption and
/// re-arms the one-shot timer.
fn on_timer(_frame: &mut TrapFrame) {
    STATS.timer_irqs.fetch_add(1, Ordering::Relaxed);
    let now = time::since_boot_ns();
    let c = me();
    let Some(p) = cpus().get(c) else { return };
    let mut g = p.s.lock();
    g.armed = None;
    g.timer_irqs += 1;
    let mut offers = false;
    // Only this CPU's sleepers: their home is this CPU, so they wake here.
    while let Some((_, a)) = g.timers.pop_expired(now) {
        debug_assert_eq!(ctx(a).home.load(Ordering::Relaxed) as usize, c);
        offers |= g.wake(c, a, true) == Some(true);
        g.timer_wakes += 1;
    }
    if g.current != 0 {
        let prio = g.cur_prio();
        let cs = &mut *g;
        if cs
            .policy
            .should_preempt(prio, now.saturating_sub(cs.slice_start), &cs.rq)
        {
            cs.need_resched = true;
            STATS.preemptions.fetch_add(1, Ordering::Relaxed);
        }
    } else if !g.rq.is_empty() {
        g.need_resched = true;
    }
    g.reprogram();
    drop(g);
    if offers {
        offer();
    }
}

/// Called at the end of every device or timer interrupt, after the EOI:
/// switches threads if the interrupt made that necessary.
pub fn preempt_point() {
    let Some(p) = cpus().get(me()) else { return };
    let g = p.s.lock();
    if g.need_resched {
        switch_away(g, true);
    }
}

/// Starts the scheduler: `main` becomes the first thread and the boot
/// context becomes the idle loop. Never returns.
pub fn start(main: impl FnOnce() + Send + 'static, main_stack: u64, timeslice_ms: u32) -> ! {
    interrupts::disable();
    let n = smp::online() as usize;
    let policy = SlicePolicy::new(timeslice_ms as u64 * 1_000_000);
    let all: Box<[PerCpuSched]> = (0..n)
        .map(|_| PerCpuSched {
            s: IrqMutex::with_level(level::SCHED_CPU, CpuSched::new(policy)),
            homed: AtomicUsize::new(0),
        })
        .collect();
    if CPUS.set(all).is_err() {
        crate::fatal_early("scheduler started twice");
    }
    assert!(
        crate::trap::register(apic::TIMER_VECTOR, on_timer),
        "timer vector taken"
    );
    // `main` stays on the boot CPU (pinned: an idle CPU never steals it);
    // the application places its other threads.
    let id = spawn_raw(
        Box::new(main),
        main_stack,
        Priority::Normal,
        Placement::Cpu(me() as u32),
    )
    .unwrap_or_else(|_| crate::fatal_early("no memory for the main thread"));
    detach(id);
    if n > 1 {
        assert!(
            crate::trap::register(smp::IPI_VECTOR, on_ipi),
            "IPI vector taken"
        );
        smp::set_active();
        smp::release_aps();
    }
    idle_loop()
}

/// The IPI (several CPUs only): a TLB flush if one was asked for, and the
/// slice timer armed if a thread now waits here; the end of the interrupt
/// reschedules if a wake-up asked for it.
fn on_ipi(_frame: &mut TrapFrame) {
    smp::service_tlb();
    if let Some(p) = cpus().get(me()) {
        p.s.lock().reprogram();
    }
}

/// An AP's entry into the scheduler (from `smp::ap_main`, interrupts off,
/// on the AP's own stack, which becomes its idle context). Never returns.
pub fn ap_enter() -> ! {
    interrupts::disable();
    if me() >= cpus().len() {
        // Came up after the scheduler counted the CPUs: stays parked.
        crate::arch::cpu::halt_forever();
    }
    smp::set_active();
    idle_loop()
}

/// The number of CPUs the scheduler runs threads on.
pub fn cpu_count() -> usize {
    cpus().len().max(1)
}

/// How many times CPU `i` switched to a thread (not to its idle loop).
pub fn cpu_runs(i: usize) -> u64 {
    smp::cpu(i).map_or(0, |c| c.runs.load(Ordering::Relaxed))
}

/// One CPU's timer counts ([`cpu_timers`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimers {
    /// Timer interrupts taken (one may fire a little early under
    /// emulation, find nothing due and re-arm).
    pub irqs: u64,
    /// Sleepers its timer woke (only ever its own).
    pub wakes: u64,
    /// Sleepers' deadlines pending in its queue.
    pub pending: usize,
}

/// CPU `i`'s timer counts so far.
pub fn cpu_timers(i: usize) -> CpuTimers {
    cpus().get(i).map_or(CpuTimers::default(), |p| {
        let g = p.s.lock();
        CpuTimers {
            irqs: g.timer_irqs,
            wakes: g.timer_wakes,
            pending: g.timers.len(),
        }
    })
}

/// The index of the CPU the caller runs on (0: the boot CPU).
pub fn cpu_index() -> usize {
    me()
}

/// Ends an idle period, if one is running: called first thing by every
/// interrupt, so the time the woken threads then run is not counted idle.
pub(crate) fn end_idle() {
    let t = smp::this_cpu().idle_since.swap(0, Ordering::Relaxed);
    if t != 0 {
        STATS.idle_cycles.fetch_add(
            crate::arch::cpu::rdtsc().saturating_sub(t),
            Ordering::Relaxed,
        );
    }
}

static IDLE_HOOK: IrqMutex<Option<fn() -> bool>> = IrqMutex::new(None);

/// Registers the idle hook: called with interrupts off each time the CPU is
/// about to halt for want of a runnable thread. It may wake threads (as an
/// interrupt handler would) and returns true when it did, so the CPU runs
/// them instead of halting. It must not block. A driver that polls while
/// the CPU is busy and takes interrupts only when it is idle uses it to
/// take its last look before the halt.
pub fn set_idle_hook(hook: fn() -> bool) {
    *IDLE_HOOK.lock() = Some(hook);
}

fn run_idle_hook() -> bool {
    // Copied out first: the hook wakes threads, which takes other locks.
    let hook = *IDLE_HOOK.lock();
    hook.is_some_and(|h| h())
}

fn idle_loop() -> ! {
    let c = me();
    let several = cpus().len() > 1;
    loop {
        interrupts::disable();
        let mut g = lock_cpu(c);
        if !g.rq.is_empty() {
            switch_away(g, false);
            continue;
        }
        if several {
            drop(g);
            if let Some(g) = steal_idle(c) {
                switch_away(g, false);
                continue;
            }
            g = lock_cpu(c);
            if !g.rq.is_empty() {
                switch_away(g, false);
                continue;
            }
        }
        // A steal offer that found nothing left must not keep the next
        // wake-up from sending the IPI.
        g.need_resched = false;
        drop(g);
        // The hook polls devices, whose interrupts go to the boot CPU.
        if c == 0 && run_idle_hook() {
            continue;
        }
        STATS.idle_halts.fetch_add(1, Ordering::Relaxed);
        // `sti; hlt` is atomic: an interrupt arriving after sti (the IPI of
        // a wake-up that queued a thread here after the look above) wakes
        // the hlt.
        smp::this_cpu()
            .idle_since
            .store(crate::arch::cpu::rdtsc(), Ordering::Relaxed);
        interrupts::enable_and_hlt();
        end_idle();
    }
}

extern "C" fn thread_start() -> ! {
    finish_switch();
    let entry = THREADS
        .lock()
        .get_mut(current_id())
        .and_then(|t| t.data.entry.take());
    interrupts::enable();
    if let Some(f) = entry {
        f();
    }
    exit_current(0)
}

/// Errors of thread creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// No memory for the stack.
    NoMemory,
}

fn spawn_raw(
    entry: Box<dyn FnOnce() + Send>,
    stack_size: u64,
    prio: Priority,
    placement: Placement,
) -> Result<ThreadId, SpawnError> {
    let (bottom, top) = mm::map_stack(stack_size).map_err(|_| SpawnError::NoMemory)?;
    // The top page is touched right away by prepare_stack; the rest on demand.
    // SAFETY: [bottom, top) is a fresh stack mapping that nothing else uses.
    let rsp = unsafe { prepare_stack(top, thread_start) };
    let all = cpus();
    let here = me();
    let home = match placement {
        Placement::Here => here,
        Placement::Cpu(i) => (i as usize).min(all.len() - 1),
        Placement::Any => (0..all.len())
            .min_by_key(|&i| all[i].homed.load(Ordering::Relaxed))
            .unwrap_or(here),
    };
    let pinned = matches!(placement, Placement::Cpu(_));
    let block = Box::new(Ctx::new(rsp, prio, pinned, (bottom, top), home));
    let ptr = NonNull::from(Box::leak(block));
    let a = ptr.as_ptr() as u64;
    let data = ThreadData {
        ctx: ptr,
        entry: Some(entry),
        detached: false,
    };
    let id = with_irqs_off(|| {
        let id = THREADS.lock().spawn(prio, data);
        ctx(a).id.store(id, Ordering::Relaxed);
        all[home].homed.fetch_add(1, Ordering::Relaxed);
        let mut g = lock_cpu(home);
        let offers = g.push(home, a, prio, pinned);
        if home == here {
            g.reprogram();
        }
        drop(g);
        if offers {
            offer();
        }
        id
    });
    STATS.spawned.fetch_add(1, Ordering::Relaxed);
    Ok(id)
}

/// Marks a thread as not joinable: its resources go when it exits.
fn detach(id: ThreadId) {
    let data = with_irqs_off(|| {
        let mut tg = THREADS.lock();
        let th = tg.get_mut(id)?;
        th.data.detached = true;
        if th.state().is_exited() {
            return tg.reap(id);
        }
        None
    });
    if let Some(d) = data {
        free_thread(d);
    }
}

/// Ends the calling thread with `code`.
pub fn exit_current(code: i32) -> ! {
    interrupts::disable();
    let c = me();
    let cur = current_id();
    assert!(cur != IDLE, "the idle loop cannot exit");
    let (detached, offers) = {
        let mut tg = THREADS.lock();
        let joiner = tg.exit(cur, code);
        let detached = tg.get(cur).is_some_and(|t| t.data.detached);
        let offers = joiner
            .and_then(|j| tg.get(j).map(|t| t.data.addr()))
            .and_then(|a| {
                let (h, mut g) = lock_home(a);
                g.wake(h, a, false)
            })
            == Some(true);
        (detached, offers)
    };
    if offers {
        offer();
    }
    let mut g = lock_cpu(c);
    ctx(g.current).state.store(EXITED, Ordering::Relaxed);
    if detached {
        // Reaped by the next context on this CPU, once nothing runs on
        // this stack.
        g.zombies.push(cur);
    }
    // It no longer counts here (a zombie or one its joiner reaps).
    cpus()[c].homed.fetch_sub(1, Ordering::Relaxed);
    switch_away(g, false);
    unreachable!("an exited thread was resumed")
}

/// Gives up the CPU to another runnable thread of the same or higher priority.
pub fn yield_now() {
    with_irqs_off(|| {
        if let Some(p) = cpus().get(me()) {
            switch_away(p.s.lock(), true);
        }
    });
}

/// Blocks the calling thread until [`wake`] or the optional deadline (ns since
/// boot). The caller disabled interrupts and registered itself wherever its
/// waker will find it. Returns true if the deadline woke it.
pub fn block_current(deadline_ns: Option<u64>) -> bool {
    debug_assert!(!interrupts::are_enabled());
    let mut g = lock_cpu(me());
    let cur = g.current;
    if cur == 0 {
        panic!("the idle loop cannot block");
    }
    let t = ctx(cur);
    if t.wake_pending.swap(false, Ordering::Relaxed) {
        // Woken (from another CPU) since it registered as a waiter.
        return false;
    }
    match deadline_ns {
        Some(d) => {
            t.state.store(SLEEPING, Ordering::Relaxed);
            let id = g.timers.insert(d, cur);
            t.timer.store(id.raw(), Ordering::Relaxed);
            t.woken_by_timer.store(false, Ordering::Relaxed);
        }
        None => t.state.store(BLOCKED, Ordering::Relaxed),
    }
    switch_away(g, false);
    // Written by the waker under this CPU's lock, before the thread was
    // queued and picked again under it.
    t.woken_by_timer.load(Ordering::Relaxed)
}

/// One line about the scheduler for the diagnostic dump: per CPU the
/// running thread, its queues and armed timer; each thread's state.
pub fn debug_line() -> alloc::string::String {
    use core::fmt::Write;
    let mut out = alloc::string::String::new();
    with_irqs_off(|| {
        let now = time::since_boot_ns();
        for (i, p) in cpus().iter().enumerate() {
            let c = p.s.lock();
            let cur = if c.current == 0 {
                IDLE
            } else {
                ctx(c.current).id.load(Ordering::Relaxed)
            };
            let _ = write!(
                out,
                "{}cpu{i}: current={cur} runnable={} timers={} armed_in_us={:?} need_resched={}",
                if i == 0 { "" } else { " " },
                c.rq.len(),
                c.timers.len(),
                c.armed.map(|a| a.saturating_sub(now) / 1000),
                c.need_resched
            );
        }
        let _ = write!(out, " threads:");
        let tg = THREADS.lock();
        for (id, t) in tg.iter() {
            let state = ["runnable", "running", "blocked", "sleeping", "exited"]
                .get(ctx(t.data.addr()).state.load(Ordering::Relaxed) as usize)
                .unwrap_or(&"?");
            let _ = write!(out, " {id}:{state}");
        }
    });
    out
}

/// Makes thread `t` runnable if it is blocked. Safe from interrupt handlers.
///
/// From thread context with interrupts enabled (so no spinlock is held),
/// this acts as the end of an interrupt does: if the woken thread should run
/// before the caller (higher priority), the caller yields to it now; if it
/// only shares the caller's priority, the slice timer is armed so that the
/// caller is preempted at the end of its slice. From an interrupt handler
/// (interrupts off) the switch waits for the handler's `preempt_point`.
pub fn wake(t: ThreadId) -> bool {
    let was = interrupts::are_enabled();
    interrupts::disable();
    let c = me();
    let tg = THREADS.lock();
    let Some(a) = tg.get(t).map(|th| th.data.addr()) else {
        drop(tg);
        if was {
            interrupts::enable();
        }
        return false;
    };
    let (h, mut g) = lock_home(a);
    let woken = g.wake(h, a, false);
    drop(tg);
    if woken.is_some() && h == c {
        g.reprogram();
    }
    let switch = was && h == c && g.need_resched && g.current != 0;
    if woken == Some(true) {
        // `offer` takes other CPUs' locks: this one goes first.
        drop(g);
        offer();
        if switch {
            preempt_point();
        }
    } else if switch {
        switch_away(g, true);
    } else {
        drop(g);
    }
    if was {
        interrupts::enable();
    }
    woken.is_some()
}

/// Sleeps until `deadline_ns` (nanoseconds since boot).
pub fn sleep_until_ns(deadline_ns: u64) {
    while time::since_boot_ns() < deadline_ns {
        with_irqs_off(|| {
            block_current(Some(deadline_ns));
        });
    }
}

/// Sleeps for `d`.
pub fn sleep(d: core::time::Duration) {
    let now = time::since_boot_ns();
    sleep_until_ns(now.saturating_add(d.as_nanos().min(u64::MAX as u128) as u64));
}

/// The result slot a thread's closure writes and `join` reads.
type Packet<T> = alloc::sync::Arc<IrqMutex<Option<T>>>;

/// An owned permission to join a thread.
pub struct JoinHandle<T> {
    id: ThreadId,
    packet: Packet<T>,
    joined: bool,
}

impl<T> JoinHandle<T> {
    /// The thread's id.
    pub fn id(&self) -> ThreadId {
        self.id
    }

    /// Waits for the thread to finish and returns its result. Panics if
    /// the thread ended through `thread::exit` and so left no result (use
    /// [`join_result`](Self::join_result) for such threads).
    pub fn join(self) -> T {
        let id = self.id;
        match self.join_result() {
            Ok(v) => v,
            Err(code) => panic!("thread {id} exited with status {code} and left no result"),
        }
    }

    /// Waits for the thread to finish: its result, or the status it passed
    /// to `thread::exit`.
    pub fn join_result(mut self) -> Result<T, i32> {
        let me = current_id();
        loop {
            let done = with_irqs_off(|| {
                let mut tg = THREADS.lock();
                match tg.join(me, self.id) {
                    JoinResult::Done(code, data) => Some((code, data)),
                    JoinResult::MustWait => {
                        // Blocked before the table's lock goes: the exit
                        // that wakes it takes that lock first.
                        let g = lock_cpu(cpu_index());
                        ctx(g.current).state.store(BLOCKED, Ordering::Relaxed);
                        drop(tg);
                        switch_away(g, false);
                        None
                    }
                    JoinResult::Err(e) => panic!("join of thread {}: {e}", self.id),
                }
            });
            if let Some((code, data)) = done {
                // Its CPU may still be switching away from its stack.
                free_thread(data);
                self.joined = true;
                return self.packet.lock().take().ok_or(code);
            }
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if !self.joined {
            detach(self.id);
        }
    }
}

/// Spawns a thread running `f` with the default stack and priority.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    spawn_with(DEFAULT_STACK, Priority::Normal, f).expect("spawn: out of memory")
}

/// Spawns a thread with a given stack size (demand paged) and priority.
pub fn spawn_with<T: Send + 'static>(
    stack_size: u64,
    prio: Priority,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, SpawnError> {
    spawn_on(Placement::Here, stack_size, prio, f)
}

/// Spawns a thread on the CPU `placement` picks (see [`Placement`]).
pub fn spawn_on<T: Send + 'static>(
    placement: Placement,
    stack_size: u64,
    prio: Priority,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, SpawnError> {
    let packet: Packet<T> =
        alloc::sync::Arc::new(IrqMutex::with_level(crate::sync::level::WAIT, None));
    let p2 = packet.clone();
    let id = spawn_raw(
        Box::new(move || {
            let r = f();
            *p2.lock() = Some(r);
        }),
        stack_size,
        prio,
        placement,
    )?;
    Ok(JoinHandle {
        id,
        packet,
        joined: false,
    })
}

/// Number of live (not yet reaped) threads.
pub fn thread_count() -> usize {
    THREADS.lock().len()
}
