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
//! Locking: `SCHED` is an interrupt-disabling spinlock over every CPU's
//! state (one lock for now). Every path that switches threads disables
//! interrupts first, takes the lock, picks the next thread, releases the lock
//! and switches with interrupts still off; the resumed thread restores its
//! own interrupt state. A thread's `on_cpu` flag is set by the CPU that
//! switches to it and cleared by that CPU only after `switch_stack` saved the
//! thread's registers (in `finish_switch`, on the next context): a CPU that
//! picks a thread whose flag is still set waits for it, and a joiner that
//! frees an exited thread's stack waits for it too. A wake-up for a thread
//! that is still running on another CPU (between its waiter's registration
//! and its block) is kept (`wake_pending`) and makes that block return at
//! once. Waking a thread homed on another CPU that must reschedule (idle, or
//! the woken thread outranks its current one) sends that CPU the IPI
//! (`smp::IPI_VECTOR`), whose end of interrupt reschedules.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use uk_sched::{
    JoinResult, Priority, RunQueue, SlicePolicy, ThreadId, ThreadState, ThreadTable, TimerId,
    TimerQueue,
};
use x86_64::instructions::interrupts;

use crate::arch::apic;
use crate::arch::context::{prepare_stack, switch_stack};
use crate::arch::idt::TrapFrame;
use crate::arch::smp;
use crate::sync::{IrqGuard, IrqMutex};
use crate::{mm, time};

pub use uk_sched::Priority as ThreadPriority;

/// The idle context (the boot stack); never in the run queue.
const IDLE: ThreadId = 0;
/// Default stack size of a spawned thread (demand paged).
pub const DEFAULT_STACK: u64 = 64 * 1024;

/// A saved stack pointer, boxed so its address stays put while the thread
/// table grows, and whether a CPU runs on (or is still switching away from)
/// that stack.
struct Ctx {
    rsp: u64,
    on_cpu: AtomicBool,
}

impl Ctx {
    fn new(rsp: u64) -> Box<Ctx> {
        Box::new(Ctx {
            rsp,
            on_cpu: AtomicBool::new(false),
        })
    }

    /// Waits until no CPU runs on this context any more.
    fn wait_off_cpu(&self) {
        while self.on_cpu.load(Ordering::Acquire) {
            smp::service_tlb();
            core::hint::spin_loop();
        }
    }
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
    ctx: Box<Ctx>,
    stack: Option<(u64, u64)>,
    entry: Option<Box<dyn FnOnce() + Send>>,
    /// The pending sleep's timer, in CPU `timer_cpu`'s queue.
    timer: Option<TimerId>,
    woken_by_timer: bool,
    detached: bool,
    /// The home CPU's index: the CPU whose queue the thread goes to when
    /// woken (an idle CPU may take it from there: [`Sched::steal`]).
    cpu: u32,
    /// The CPU whose timer queue holds `timer` (the thread's home when it
    /// went to sleep).
    timer_cpu: u32,
    /// Placed with [`Placement::Cpu`]: never moved to another CPU.
    pinned: bool,
    /// A wake-up arrived while the thread was running on another CPU.
    wake_pending: bool,
}

/// One CPU's part of the scheduler.
struct CpuSched {
    rq: RunQueue,
    /// The deadlines of the threads that went to sleep on this CPU (their
    /// home: a sleeping thread is in no run queue, so it cannot move).
    timers: TimerQueue<ThreadId>,
    current: ThreadId,
    idle_ctx: Box<Ctx>,
    slice_start: u64,
    need_resched: bool,
    /// Exited detached threads, reaped by the next context this CPU runs.
    zombies: Vec<ThreadId>,
    armed: Option<u64>,
    /// The context this CPU is switching away from (0: idle's, or none):
    /// its `on_cpu` is cleared once the switch finished.
    prev: usize,
    /// Live threads homed here.
    homed: usize,
    /// Timer interrupts this CPU took, and the sleepers they woke.
    timer_irqs: u64,
    timer_wakes: u64,
}

impl CpuSched {
    fn new() -> CpuSched {
        CpuSched {
            rq: RunQueue::new(),
            timers: TimerQueue::new(),
            current: IDLE,
            idle_ctx: Ctx::new(0),
            slice_start: 0,
            need_resched: false,
            zombies: Vec::new(),
            armed: None,
            prev: 0,
            homed: 0,
            timer_irqs: 0,
            timer_wakes: 0,
        }
    }
}

struct Sched {
    threads: ThreadTable<ThreadData>,
    policy: SlicePolicy,
    cpus: Vec<CpuSched>,
}

// SAFETY: `prev` is an address, not a reference; the rest is owned data.
unsafe impl Send for CpuSched {}

static SCHED: IrqMutex<Option<Sched>> = IrqMutex::with_level(crate::sync::level::SCHED, None);

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

impl Sched {
    /// CPU `c`'s part (one bounds check site for all).
    fn cs(&mut self, c: usize) -> &mut CpuSched {
        &mut self.cpus[c]
    }

    fn csr(&self, c: usize) -> &CpuSched {
        &self.cpus[c]
    }

    fn prio(&self, t: ThreadId) -> Priority {
        self.threads.get(t).map_or(Priority::Low, |th| th.priority)
    }

    fn ctx(&mut self, c: usize, t: ThreadId) -> &mut Ctx {
        if t == IDLE {
            &mut self.cs(c).idle_ctx
        } else {
            &mut self
                .threads
                .get_mut(t)
                .expect("current thread exists")
                .data
                .ctx
        }
    }

    fn slice_deadline(&self, c: usize) -> Option<u64> {
        let cs = self.csr(c);
        if cs.current == IDLE || !self.policy.is_preemptive() {
            return None;
        }
        let waiting = cs.rq.highest_waiting()?;
        (waiting >= self.prio(cs.current)).then(|| cs.slice_start + self.policy.slice_ns)
    }

    /// Arms CPU `c`'s one-shot timer (`c` is the calling CPU) for the
    /// earliest of its own sleepers' deadlines and its slice end.
    fn reprogram(&mut self, c: usize) {
        let next = match (self.csr(c).timers.next_deadline(), self.slice_deadline(c)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Lazy: the timer is rewritten only when it must fire earlier than
        // it is set to. A deadline that moved later or went away leaves the
        // armed one in place; when it fires early, `on_timer` finds nothing
        // due and arms the real one. Each rewrite is a device access (an
        // exit under a hypervisor, a BQL round trip under TCG), and a busy
        // server cancels and re-arms its deadlines several times a request.
        let cs = self.cs(c);
        if let Some(n) = next
            && cs.armed.is_none_or(|a| n < a)
        {
            cs.armed = next;
            apic::set_timer(Some(ns_to_tsc(n)));
        }
    }

    /// Makes a blocked or sleeping thread runnable on its home CPU; sends
    /// that CPU the IPI when it is another one that must reschedule.
    fn wake(&mut self, t: ThreadId, by_timer: bool) -> bool {
        let Some(th) = self.threads.get_mut(t) else {
            return false;
        };
        let home = th.data.cpu as usize;
        match th.state() {
            ThreadState::Blocked | ThreadState::Sleeping { .. } => {}
            // Between registering as a waiter and blocking, on another CPU:
            // its block returns at once. (Never with one CPU: a running
            // thread is then the caller itself.) Reported as not woken, so
            // `wake_one` also wakes the next waiter: the thread may be past
            // its wait already (a timeout), and a spare wake-up only costs
            // a re-check, where a lost one would cost a hang.
            ThreadState::Running if home != me() => {
                th.data.wake_pending = true;
                return false;
            }
            _ => return false,
        }
        th.data.woken_by_timer = by_timer;
        let timer = th.data.timer.take();
        let prio = th.priority;
        let pinned = th.data.pinned;
        if let Some(id) = timer
            && !by_timer
        {
            // Its CPU's armed timer is left as it is (lazy re-arming).
            let tc = th.data.timer_cpu as usize;
            self.cs(tc).timers.cancel(id);
        }
        let _ = self.threads.set_state(t, ThreadState::Runnable);
        self.push(home, t, prio, pinned);
        true
    }

    /// Queues runnable thread `t` on CPU `c` and marks that CPU for a
    /// reschedule when `t` should run first; a remote CPU newly so marked
    /// gets the IPI. A thread that waits there and is not `pinned` is
    /// offered to an idle CPU.
    fn push(&mut self, c: usize, t: ThreadId, prio: Priority, pinned: bool) {
        let cur_prio = self.prio(self.csr(c).current);
        let cs = self.cs(c);
        let was_empty = cs.rq.is_empty();
        cs.rq.push(t, prio);
        let runs_next = cs.current == IDLE || prio > cur_prio;
        let kick = if runs_next {
            !core::mem::replace(&mut cs.need_resched, true)
        } else {
            // The first thread waiting behind a running one: that CPU's
            // slice timer must be armed now (the IPI handler re-arms).
            was_empty
        };
        if kick && c != me() {
            smp::kick(c);
        }
        if !runs_next && !pinned && self.cpus.len() > 1 {
            self.offer();
        }
    }

    /// A thread that may move now waits behind a running one: if a CPU is
    /// idle with nothing queued and no wake-up pending, that CPU is told
    /// (the IPI, or its own pending reschedule if it is the caller) and
    /// steals a thread in its next `switch_away`.
    #[cold]
    #[inline(never)]
    fn offer(&mut self) {
        let Some(i) = self
            .cpus
            .iter()
            .position(|cs| cs.current == IDLE && cs.rq.is_empty() && !cs.need_resched)
        else {
            return;
        };
        self.cs(i).need_resched = true;
        if i != me() {
            smp::kick(i);
        }
    }

    /// Work stealing (several CPUs, CPU `c`'s queue empty): picks the CPU
    /// with the most threads waiting (queued behind a running thread; one
    /// queued on an idle CPU is about to run there), takes the tail thread
    /// of its highest level whose tail may move (not pinned; nothing if
    /// none may), and makes `c` its home. The thread may still be on its old CPU's stack (it was just
    /// preempted or blocked there): `switch_away` waits for its `on_cpu`.
    #[cold]
    #[inline(never)]
    fn steal(&mut self, c: usize) -> bool {
        let mut victim = c;
        let mut most = 0;
        for (i, cs) in self.cpus.iter().enumerate() {
            let waiting = cs.rq.len().saturating_sub(usize::from(cs.current == IDLE));
            if waiting > most {
                most = waiting;
                victim = i;
            }
        }
        if victim == c {
            return false;
        }
        let Sched { threads, cpus, .. } = self;
        let Some((t, p)) = cpus.get_mut(victim).and_then(|v| {
            v.rq.steal(|t| threads.get(t).is_some_and(|th| !th.data.pinned))
        }) else {
            return false;
        };
        if let Some(th) = threads.get_mut(t) {
            th.data.cpu = c as u32;
        }
        self.cs(victim).homed -= 1;
        let cs = self.cs(c);
        cs.homed += 1;
        cs.rq.push(t, p);
        STATS.steals.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Switches to the next runnable thread (or idle). `requeue` puts the
/// current thread back at the tail of its queue. Interrupts must be disabled
/// before the lock was taken; they stay disabled across the switch.
fn switch_away(mut g: IrqGuard<'_, Option<Sched>>, requeue: bool) {
    let in_handler = crate::trap::in_handler();
    if in_handler != 0 {
        drop(g);
        panic!(
            "thread switch inside the handler of vector {:#x} (before its EOI)",
            in_handler - 1
        );
    }
    let s = g.as_mut().expect("scheduler running");
    let cpu = smp::this_cpu();
    let c = cpu.index as usize;
    let cur = s.cs(c).current;
    if requeue && cur != IDLE && s.threads.set_state(cur, ThreadState::Runnable).is_ok() {
        let p = s.prio(cur);
        s.cs(c).rq.push(cur, p);
    }
    if s.csr(c).rq.is_empty() && s.cpus.len() > 1 {
        s.steal(c);
    }
    let cs = s.cs(c);
    let next = cs.rq.pop().map_or(IDLE, |(t, _)| t);
    cs.need_resched = false;
    if next == cur {
        if cur != IDLE {
            let _ = s.threads.set_state(cur, ThreadState::Running);
        }
        s.cs(c).slice_start = time::since_boot_ns();
        s.reprogram(c);
        return;
    }
    if next != IDLE {
        let _ = s.threads.set_state(next, ThreadState::Running);
    }
    s.cs(c).current = next;
    s.cs(c).slice_start = time::since_boot_ns();
    s.reprogram(c);
    let from: *mut Ctx = s.ctx(c, cur);
    let (to, (bottom, top)): (*mut Ctx, _) = if next == IDLE {
        (&mut *s.cs(c).idle_ctx, (0, 0))
    } else {
        let data = &mut s.threads.get_mut(next).expect("next exists").data;
        (&mut *data.ctx, data.stack.unwrap_or((0, 0)))
    };
    // The context switched away from is released by the next context's
    // `finish_switch`, once its registers are saved.
    s.cs(c).prev = from as usize;
    cpu.stack_bottom.store(bottom, Ordering::Relaxed);
    cpu.stack_top.store(top, Ordering::Relaxed);
    cpu.current.store(next, Ordering::Relaxed);
    if next != IDLE {
        cpu.runs
            .store(cpu.runs.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    STATS.switches.fetch_add(1, Ordering::Relaxed);
    drop(g);
    // SAFETY: `to` is this CPU's idle context or the boxed Ctx of `next`,
    // which this CPU now runs (state Running, current): nothing frees it.
    let to = unsafe { &*to };
    // Only a thread that moved between CPUs (stolen) can still be on its
    // old CPU's stack here.
    to.wait_off_cpu();
    to.on_cpu.store(true, Ordering::Relaxed);
    // SAFETY: interrupts are off (the caller disabled them before locking);
    // `from` points into a boxed Ctx that lives while the thread exists (an
    // exited thread's is freed only after `finish_switch` below cleared its
    // `on_cpu`), and `to.rsp` was saved by switch_stack (its `on_cpu` was
    // clear: the save finished) or prepared by prepare_stack.
    unsafe { switch_stack(&raw mut (*from).rsp, to.rsp) };
    finish_switch();
}

/// Runs on the context that was just switched to: releases the context
/// this CPU switched away from (its registers are saved now), then reaps
/// this CPU's detached threads that exited and frees their stacks.
fn finish_switch() {
    loop {
        let data = {
            let mut g = SCHED.lock();
            let Some(s) = g.as_mut() else { return };
            let cs = s.cs(me());
            let prev = core::mem::take(&mut cs.prev);
            if prev != 0 {
                // SAFETY: `prev` is the Ctx this CPU switched away from; it
                // is freed only once this flag is clear (this CPU's zombies
                // below, joiners and `detach` wait for it).
                unsafe {
                    (*(prev as *const Ctx))
                        .on_cpu
                        .store(false, Ordering::Release)
                };
            }
            let Some(t) = cs.zombies.pop() else { return };
            if let Some(th) = s.threads.get(t) {
                let home = th.data.cpu as usize;
                s.cs(home).homed -= 1;
            }
            s.threads.reap(t)
        };
        if let Some((bottom, top)) = data.and_then(|d| d.stack) {
            let _ = mm::unmap_stack(bottom, top);
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
    let mut g = SCHED.lock();
    let Some(s) = g.as_mut() else { return };
    let c = me();
    let cs = s.cs(c);
    cs.armed = None;
    cs.timer_irqs += 1;
    // Only this CPU's sleepers: their home is this CPU, so they wake here.
    while let Some((_, t)) = s.cs(c).timers.pop_expired(now) {
        if let Some(th) = s.threads.get_mut(t) {
            th.data.timer = None;
        }
        s.wake(t, true);
        s.cs(c).timer_wakes += 1;
    }
    let cur = s.cs(c).current;
    if cur != IDLE {
        let p = s.prio(cur);
        let policy = s.policy;
        let cs = s.cs(c);
        if policy.should_preempt(p, now.saturating_sub(cs.slice_start), &cs.rq) {
            cs.need_resched = true;
            STATS.preemptions.fetch_add(1, Ordering::Relaxed);
        }
    } else if !s.cs(c).rq.is_empty() {
        s.cs(c).need_resched = true;
    }
    s.reprogram(c);
}

/// Called at the end of every device or timer interrupt, after the EOI:
/// switches threads if the interrupt made that necessary.
pub fn preempt_point() {
    let g = SCHED.lock();
    if g.as_ref()
        .is_some_and(|s| s.cpus.get(me()).is_some_and(|c| c.need_resched))
    {
        switch_away(g, true);
    }
}

/// Starts the scheduler: `main` becomes the first thread and the boot
/// context becomes the idle loop. Never returns.
pub fn start(main: impl FnOnce() + Send + 'static, main_stack: u64, timeslice_ms: u32) -> ! {
    interrupts::disable();
    let cpus = smp::online() as usize;
    *SCHED.lock() = Some(Sched {
        threads: ThreadTable::new(),
        policy: SlicePolicy::new(timeslice_ms as u64 * 1_000_000),
        cpus: (0..cpus).map(|_| CpuSched::new()).collect(),
    });
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
    if cpus > 1 {
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
    if let Some(s) = SCHED.lock().as_mut()
        && me() < s.cpus.len()
    {
        s.reprogram(me());
    }
}

/// An AP's entry into the scheduler (from `smp::ap_main`, interrupts off,
/// on the AP's own stack, which becomes its idle context). Never returns.
pub fn ap_enter() -> ! {
    interrupts::disable();
    let known = SCHED.lock().as_ref().is_some_and(|s| me() < s.cpus.len());
    if !known {
        // Came up after the scheduler counted the CPUs: stays parked.
        crate::arch::cpu::halt_forever();
    }
    smp::set_active();
    idle_loop()
}

/// The number of CPUs the scheduler runs threads on.
pub fn cpu_count() -> usize {
    with_irqs_off(|| SCHED.lock().as_ref().map_or(1, |s| s.cpus.len()))
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
    with_irqs_off(|| {
        SCHED
            .lock()
            .as_ref()
            .and_then(|s| s.cpus.get(i))
            .map_or(CpuTimers::default(), |c| CpuTimers {
                irqs: c.timer_irqs,
                wakes: c.timer_wakes,
                pending: c.timers.len(),
            })
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
    loop {
        interrupts::disable();
        let mut g = SCHED.lock();
        if let Some(s) = g.as_mut() {
            if !s.csr(c).rq.is_empty() || (s.cpus.len() > 1 && s.steal(c)) {
                switch_away(g, false);
                continue;
            }
            // A steal offer that found nothing left must not keep the
            // next wake-up from sending the IPI.
            s.cs(c).need_resched = false;
        }
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
    let entry = {
        let mut g = SCHED.lock();
        let s = g.as_mut().expect("scheduler running");
        let cur = s.cs(me()).current;
        s.threads.get_mut(cur).and_then(|t| t.data.entry.take())
    };
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
    let mut data = ThreadData {
        ctx: Ctx::new(rsp),
        stack: Some((bottom, top)),
        entry: Some(entry),
        timer: None,
        woken_by_timer: false,
        detached: false,
        cpu: 0,
        timer_cpu: 0,
        pinned: matches!(placement, Placement::Cpu(_)),
        wake_pending: false,
    };
    let id = with_irqs_off(|| {
        let mut g = SCHED.lock();
        let s = g.as_mut().expect("scheduler running");
        let here = me();
        let home = match placement {
            Placement::Here => here,
            Placement::Cpu(i) => (i as usize).min(s.cpus.len() - 1),
            Placement::Any => (0..s.cpus.len())
                .min_by_key(|&i| s.csr(i).homed)
                .unwrap_or(here),
        };
        data.cpu = home as u32;
        let pinned = data.pinned;
        let id = s.threads.spawn(prio, data);
        s.cs(home).homed += 1;
        s.push(home, id, prio, pinned);
        if home == here {
            s.reprogram(here);
        }
        id
    });
    STATS.spawned.fetch_add(1, Ordering::Relaxed);
    Ok(id)
}

/// Marks a thread as not joinable: its resources go when it exits.
fn detach(id: ThreadId) {
    let data = with_irqs_off(|| {
        let mut g = SCHED.lock();
        let s = g.as_mut()?;
        let th = s.threads.get_mut(id)?;
        th.data.detached = true;
        if th.state().is_exited() {
            return s.threads.reap(id);
        }
        None
    });
    if let Some(d) = data {
        // Its CPU may still be switching away from its stack.
        d.ctx.wait_off_cpu();
        if let Some((b, t)) = d.stack {
            let _ = mm::unmap_stack(b, t);
        }
    }
}

/// Ends the calling thread with `code`.
pub fn exit_current(code: i32) -> ! {
    interrupts::disable();
    let mut g = SCHED.lock();
    let s = g.as_mut().expect("scheduler running");
    let c = me();
    let cur = s.cs(c).current;
    assert!(cur != IDLE, "the idle loop cannot exit");
    if let Some(j) = s.threads.exit(cur, code) {
        s.wake(j, false);
    }
    if s.threads.get(cur).is_some_and(|t| t.data.detached) {
        // Reaped by the next context on this CPU, once nothing runs on
        // this stack.
        s.cs(c).zombies.push(cur);
    } else {
        // Reaped by its joiner (or `detach`): it no longer counts here.
        s.cs(c).homed -= 1;
    }
    switch_away(g, false);
    unreachable!("an exited thread was resumed")
}

/// Gives up the CPU to another runnable thread of the same or higher priority.
pub fn yield_now() {
    with_irqs_off(|| {
        let g = SCHED.lock();
        if g.is_some() {
            switch_away(g, true);
        }
    });
}

/// Blocks the calling thread until [`wake`] or the optional deadline (ns since
/// boot). The caller disabled interrupts and registered itself wherever its
/// waker will find it. Returns true if the deadline woke it.
pub fn block_current(deadline_ns: Option<u64>) -> bool {
    debug_assert!(!interrupts::are_enabled());
    let mut g = SCHED.lock();
    let s = g.as_mut().expect("scheduler running");
    let cur = s.cs(me()).current;
    if cur == IDLE {
        panic!("the idle loop cannot block");
    }
    if let Some(th) = s.threads.get_mut(cur)
        && core::mem::take(&mut th.data.wake_pending)
    {
        // Woken (from another CPU) since it registered as a waiter.
        return false;
    }
    let state = match deadline_ns {
        Some(d) => ThreadState::Sleeping { deadline_ns: d },
        None => ThreadState::Blocked,
    };
    let _ = s.threads.set_state(cur, state);
    if let Some(d) = deadline_ns {
        let c = me();
        let id = s.cs(c).timers.insert(d, cur);
        if let Some(th) = s.threads.get_mut(cur) {
            th.data.timer = Some(id);
            th.data.timer_cpu = c as u32;
            th.data.woken_by_timer = false;
        }
    }
    switch_away(g, false);
    let g = SCHED.lock();
    let s = g.as_ref().expect("scheduler running");
    s.threads.get(cur).is_some_and(|t| t.data.woken_by_timer)
}

/// One line about the scheduler for the diagnostic dump: the running
/// thread, each thread's state, the run queue, the armed timer.
pub fn debug_line() -> alloc::string::String {
    use core::fmt::Write;
    let mut out = alloc::string::String::new();
    with_irqs_off(|| {
        let g = SCHED.lock();
        let Some(s) = g.as_ref() else { return };
        let now = time::since_boot_ns();
        for (i, c) in s.cpus.iter().enumerate() {
            let _ = write!(
                out,
                "{}cpu{i}: current={} runnable={} timers={} armed_in_us={:?} need_resched={}",
                if i == 0 { "" } else { " " },
                c.current,
                c.rq.len(),
                c.timers.len(),
                c.armed.map(|a| a.saturating_sub(now) / 1000),
                c.need_resched
            );
        }
        let _ = write!(out, " threads:");
        for (id, t) in s.threads.iter() {
            let _ = write!(out, " {id}:{:?}", t.state());
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
    let mut g = SCHED.lock();
    let c = me();
    let woken = g.as_mut().is_some_and(|s| {
        let w = s.wake(t, false);
        if w {
            s.reprogram(c);
        }
        w
    });
    if was
        && woken
        && g.as_ref()
            .is_some_and(|s| s.csr(c).need_resched && s.csr(c).current != IDLE)
    {
        switch_away(g, true);
    } else {
        drop(g);
    }
    if was {
        interrupts::enable();
    }
    woken
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
            let (done, code, data) = with_irqs_off(|| {
                let mut g = SCHED.lock();
                let s = g.as_mut().expect("scheduler running");
                match s.threads.join(me, self.id) {
                    JoinResult::Done(code, data) => (true, code, Some(data)),
                    JoinResult::MustWait => {
                        let _ = s.threads.set_state(me, ThreadState::Blocked);
                        switch_away(g, false);
                        (false, 0, None)
                    }
                    JoinResult::Err(e) => panic!("join of thread {}: {e}", self.id),
                }
            });
            if done {
                if let Some(d) = data {
                    // Its CPU may still be switching away from its stack.
                    d.ctx.wait_off_cpu();
                    if let Some((b, t)) = d.stack {
                        let _ = mm::unmap_stack(b, t);
                    }
                }
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
    with_irqs_off(|| SCHED.lock().as_ref().map_or(0, |s| s.threads.len()))
}
