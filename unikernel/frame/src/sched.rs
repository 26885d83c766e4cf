//! Threads and the scheduler: the machine side of `uk-sched`'s policy.
//!
//! One run queue per CPU (one CPU for now) with three priority levels, round
//! robin within a level; a one-shot timer (tickless) armed for the earliest of
//! the next sleeping thread's deadline and the running thread's slice end; a
//! timer slice (`timeslice=` ms, default 10, 0 = cooperative) preempts a thread
//! that never blocks. When nothing is runnable the CPU halts in the idle loop
//! (the boot context) until the next interrupt.
//!
//! Locking: `SCHED` is an interrupt-disabling spinlock. Every path that
//! switches threads disables interrupts first, takes the lock, picks the next
//! thread, releases the lock and switches with interrupts still off; the
//! resumed thread restores its own interrupt state. On one CPU nothing can run
//! between a waiter's last check of its condition and its switch, so wake-ups
//! are never lost. (A second CPU will need an on-CPU flag per thread.)

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use uk_sched::{
    JoinResult, Priority, RunQueue, SlicePolicy, ThreadId, ThreadState, ThreadTable, TimerId,
    TimerQueue,
};
use x86_64::instructions::interrupts;

use crate::arch::apic;
use crate::arch::context::{prepare_stack, switch_stack};
use crate::arch::idt::TrapFrame;
use crate::sync::{IrqGuard, IrqMutex};
use crate::{mm, time};

pub use uk_sched::Priority as ThreadPriority;

/// The idle context (the boot stack); never in the run queue.
const IDLE: ThreadId = 0;
/// Default stack size of a spawned thread (demand paged).
pub const DEFAULT_STACK: u64 = 64 * 1024;

/// A saved stack pointer, boxed so its address stays put while the thread
/// table grows.
struct Ctx {
    rsp: u64,
}

/// The kernel's per-thread data, kept in `uk-sched`'s thread table.
pub struct ThreadData {
    ctx: Box<Ctx>,
    stack: Option<(u64, u64)>,
    entry: Option<Box<dyn FnOnce() + Send>>,
    timer: Option<TimerId>,
    woken_by_timer: bool,
    detached: bool,
}

struct Sched {
    threads: ThreadTable<ThreadData>,
    rq: RunQueue,
    timers: TimerQueue<ThreadId>,
    current: ThreadId,
    idle_ctx: Box<Ctx>,
    policy: SlicePolicy,
    slice_start: u64,
    need_resched: bool,
    /// Exited detached threads, reaped by the next thread to run.
    zombies: Vec<ThreadId>,
    armed: Option<u64>,
}

static SCHED: IrqMutex<Option<Sched>> = IrqMutex::new(None);

/// The running thread's stack, `[bottom, top)`; 0 and 0 on the idle context
/// (the boot stack, mapped in full). One CPU runs threads, so one value.
static STACK_BOTTOM: AtomicU64 = AtomicU64::new(0);
static STACK_TOP: AtomicU64 = AtomicU64::new(0);

/// The running thread's (demand-paged) stack `[bottom, top)`, or `None` on
/// the boot stack. For [`mm`], which makes the stack below its caller
/// resident before it takes its lock.
pub fn current_stack() -> Option<(u64, u64)> {
    match (
        STACK_BOTTOM.load(Ordering::Relaxed),
        STACK_TOP.load(Ordering::Relaxed),
    ) {
        (0, _) => None,
        r => Some(r),
    }
}

/// Counters for tests and benchmarks.
pub struct SchedStats {
    /// Context switches.
    pub switches: AtomicU64,
    /// Timer interrupts taken.
    pub timer_irqs: AtomicU64,
    /// Preemptions by the timer slice.
    pub preemptions: AtomicU64,
    /// Threads spawned.
    pub spawned: AtomicU64,
    /// Times the CPU halted in the idle loop.
    pub idle_halts: AtomicU64,
    /// TSC cycles spent halted (the rest of the time the CPU worked).
    pub idle_cycles: AtomicU64,
}

/// The scheduler's counters.
pub static STATS: SchedStats = SchedStats {
    switches: AtomicU64::new(0),
    timer_irqs: AtomicU64::new(0),
    preemptions: AtomicU64::new(0),
    spawned: AtomicU64::new(0),
    idle_halts: AtomicU64::new(0),
    idle_cycles: AtomicU64::new(0),
};

fn ns_to_tsc(ns: u64) -> u64 {
    let hz = time::tsc_hz().max(1);
    crate::arch::boot::entry_tsc() + (ns as u128 * hz as u128 / 1_000_000_000) as u64
}

impl Sched {
    fn prio(&self, t: ThreadId) -> Priority {
        self.threads.get(t).map_or(Priority::Low, |th| th.priority)
    }

    fn ctx_ptr(&mut self, t: ThreadId) -> *mut u64 {
        if t == IDLE {
            &mut self.idle_ctx.rsp
        } else {
            &mut self
                .threads
                .get_mut(t)
                .expect("current thread exists")
                .data
                .ctx
                .rsp
        }
    }

    fn slice_deadline(&self) -> Option<u64> {
        if self.current == IDLE || !self.policy.is_preemptive() {
            return None;
        }
        let waiting = self.rq.highest_waiting()?;
        (waiting >= self.prio(self.current)).then(|| self.slice_start + self.policy.slice_ns)
    }

    /// Arms the one-shot timer for the earliest pending deadline.
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

    /// Makes a blocked or sleeping thread runnable.
    fn wake(&mut self, t: ThreadId, by_timer: bool) -> bool {
        let Some(th) = self.threads.get_mut(t) else {
            return false;
        };
        if !matches!(
            th.state(),
            ThreadState::Blocked | ThreadState::Sleeping { .. }
        ) {
            return false;
        }
        th.data.woken_by_timer = by_timer;
        let timer = th.data.timer.take();
        let prio = th.priority;
        if let Some(id) = timer
            && !by_timer
        {
            self.timers.cancel(id);
        }
        let _ = self.threads.set_state(t, ThreadState::Runnable);
        self.rq.push(t, prio);
        if self.current == IDLE || prio > self.prio(self.current) {
            self.need_resched = true;
        }
        true
    }
}

/// Switches to the next runnable thread (or idle). `requeue` puts the
/// current thread back at the tail of its queue. Interrupts must be disabled
/// before the lock was taken; they stay disabled across the switch.
fn switch_away(mut g: IrqGuard<'_, Option<Sched>>, requeue: bool) {
    let in_handler = crate::trap::IN_HANDLER.load(Ordering::Relaxed);
    if in_handler != 0 {
        drop(g);
        panic!(
            "thread switch inside the handler of vector {:#x} (before its EOI)",
            in_handler - 1
        );
    }
    let s = g.as_mut().expect("scheduler running");
    let cur = s.current;
    if requeue && cur != IDLE && s.threads.set_state(cur, ThreadState::Runnable).is_ok() {
        let p = s.prio(cur);
        s.rq.push(cur, p);
    }
    let next = s.rq.pop().map_or(IDLE, |(t, _)| t);
    s.need_resched = false;
    if next == cur {
        if cur != IDLE {
            let _ = s.threads.set_state(cur, ThreadState::Running);
        }
        s.slice_start = time::since_boot_ns();
        s.reprogram();
        return;
    }
    if next != IDLE {
        let _ = s.threads.set_state(next, ThreadState::Running);
    }
    s.current = next;
    s.slice_start = time::since_boot_ns();
    s.reprogram();
    let from = s.ctx_ptr(cur);
    let (to, (bottom, top)) = if next == IDLE {
        (s.idle_ctx.rsp, (0, 0))
    } else {
        let data = &s.threads.get(next).expect("next exists").data;
        (data.ctx.rsp, data.stack.unwrap_or((0, 0)))
    };
    STACK_BOTTOM.store(bottom, Ordering::Relaxed);
    STACK_TOP.store(top, Ordering::Relaxed);
    STATS.switches.fetch_add(1, Ordering::Relaxed);
    drop(g);
    // SAFETY: interrupts are off (the caller disabled them before locking);
    // `from` points into a boxed Ctx that lives while the thread exists, and
    // `to` was saved by switch_stack or prepared by prepare_stack.
    unsafe { switch_stack(from, to) };
    finish_switch();
}

/// Runs on the thread that was just switched to: reaps detached threads that
/// exited (none of them runs on its stack any more) and frees their stacks.
fn finish_switch() {
    loop {
        let data = {
            let mut g = SCHED.lock();
            let Some(s) = g.as_mut() else { return };
            let Some(t) = s.zombies.pop() else { return };
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
    SCHED.lock().as_ref().map_or(IDLE, |s| s.current)
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
    s.armed = None;
    while let Some((_, t)) = s.timers.pop_expired(now) {
        if let Some(th) = s.threads.get_mut(t) {
            th.data.timer = None;
        }
        s.wake(t, true);
    }
    if s.current != IDLE {
        let p = s.prio(s.current);
        if s.policy
            .should_preempt(p, now.saturating_sub(s.slice_start), &s.rq)
        {
            s.need_resched = true;
            STATS.preemptions.fetch_add(1, Ordering::Relaxed);
        }
    } else if !s.rq.is_empty() {
        s.need_resched = true;
    }
    s.reprogram();
}

/// Called at the end of every device or timer interrupt, after the EOI:
/// switches threads if the interrupt made that necessary.
pub fn preempt_point() {
    let g = SCHED.lock();
    if g.as_ref().is_some_and(|s| s.need_resched) {
        switch_away(g, true);
    }
}

/// Starts the scheduler: `main` becomes the first thread and the boot
/// context becomes the idle loop. Never returns.
pub fn start(main: impl FnOnce() + Send + 'static, main_stack: u64, timeslice_ms: u32) -> ! {
    interrupts::disable();
    *SCHED.lock() = Some(Sched {
        threads: ThreadTable::new(),
        rq: RunQueue::new(),
        timers: TimerQueue::new(),
        current: IDLE,
        idle_ctx: Box::new(Ctx { rsp: 0 }),
        policy: SlicePolicy::new(timeslice_ms as u64 * 1_000_000),
        slice_start: 0,
        need_resched: false,
        zombies: Vec::new(),
        armed: None,
    });
    assert!(
        crate::trap::register(apic::TIMER_VECTOR, on_timer),
        "timer vector taken"
    );
    let id = spawn_raw(Box::new(main), main_stack, Priority::Normal)
        .unwrap_or_else(|_| crate::fatal_early("no memory for the main thread"));
    detach(id);
    idle_loop()
}

/// When the CPU halted (TSC), 0 while it works.
static IDLE_SINCE: AtomicU64 = AtomicU64::new(0);

/// Ends an idle period, if one is running: called first thing by every
/// interrupt, so the time the woken threads then run is not counted idle.
pub(crate) fn end_idle() {
    let t = IDLE_SINCE.swap(0, Ordering::Relaxed);
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
    loop {
        interrupts::disable();
        let g = SCHED.lock();
        if g.as_ref().is_some_and(|s| !s.rq.is_empty()) {
            switch_away(g, false);
            continue;
        }
        drop(g);
        if run_idle_hook() {
            continue;
        }
        STATS.idle_halts.fetch_add(1, Ordering::Relaxed);
        // `sti; hlt` is atomic: an interrupt arriving after sti wakes the hlt.
        IDLE_SINCE.store(crate::arch::cpu::rdtsc(), Ordering::Relaxed);
        interrupts::enable_and_hlt();
        end_idle();
    }
}

extern "C" fn thread_start() -> ! {
    finish_switch();
    let entry = {
        let mut g = SCHED.lock();
        let s = g.as_mut().expect("scheduler running");
        let cur = s.current;
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
) -> Result<ThreadId, SpawnError> {
    let (bottom, top) = mm::map_stack(stack_size).map_err(|_| SpawnError::NoMemory)?;
    // The top page is touched right away by prepare_stack; the rest on demand.
    // SAFETY: [bottom, top) is a fresh stack mapping that nothing else uses.
    let rsp = unsafe { prepare_stack(top, thread_start) };
    let data = ThreadData {
        ctx: Box::new(Ctx { rsp }),
        stack: Some((bottom, top)),
        entry: Some(entry),
        timer: None,
        woken_by_timer: false,
        detached: false,
    };
    let id = with_irqs_off(|| {
        let mut g = SCHED.lock();
        let s = g.as_mut().expect("scheduler running");
        let id = s.threads.spawn(prio, data);
        s.rq.push(id, prio);
        if prio > s.prio(s.current) || s.current == IDLE {
            s.need_resched = true;
        }
        s.reprogram();
        id
    });
    STATS.spawned.fetch_add(1, Ordering::Relaxed);
    Ok(id)
}

/// Marks a thread as not joinable: its resources go when it exits.
fn detach(id: ThreadId) {
    let stack = with_irqs_off(|| {
        let mut g = SCHED.lock();
        let s = g.as_mut()?;
        let th = s.threads.get_mut(id)?;
        th.data.detached = true;
        if th.state().is_exited() {
            return s.threads.reap(id).and_then(|d| d.stack);
        }
        None
    });
    if let Some((b, t)) = stack {
        let _ = mm::unmap_stack(b, t);
    }
}

/// Ends the calling thread with `code`.
pub fn exit_current(code: i32) -> ! {
    interrupts::disable();
    let mut g = SCHED.lock();
    let s = g.as_mut().expect("scheduler running");
    let cur = s.current;
    assert!(cur != IDLE, "the idle loop cannot exit");
    if let Some(j) = s.threads.exit(cur, code) {
        s.wake(j, false);
    }
    if s.threads.get(cur).is_some_and(|t| t.data.detached) {
        // Reaped by the next thread, once nothing runs on this stack.
        s.zombies.push(cur);
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
    let cur = s.current;
    if cur == IDLE {
        panic!("the idle loop cannot block");
    }
    let state = match deadline_ns {
        Some(d) => ThreadState::Sleeping { deadline_ns: d },
        None => ThreadState::Blocked,
    };
    let _ = s.threads.set_state(cur, state);
    if let Some(d) = deadline_ns {
        let id = s.timers.insert(d, cur);
        if let Some(th) = s.threads.get_mut(cur) {
            th.data.timer = Some(id);
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
        let _ = write!(
            out,
            "current={} runnable={} timers={} armed_in_us={:?} need_resched={} threads:",
            s.current,
            s.rq.len(),
            s.timers.len(),
            s.armed.map(|a| a.saturating_sub(now) / 1000),
            s.need_resched
        );
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
    let woken = g.as_mut().is_some_and(|s| {
        let w = s.wake(t, false);
        if w {
            s.reprogram();
        }
        w
    });
    if was
        && woken
        && g.as_ref()
            .is_some_and(|s| s.need_resched && s.current != IDLE)
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
            let (done, code, stack) = with_irqs_off(|| {
                let mut g = SCHED.lock();
                let s = g.as_mut().expect("scheduler running");
                match s.threads.join(me, self.id) {
                    JoinResult::Done(code, data) => (true, code, data.stack),
                    JoinResult::MustWait => {
                        let _ = s.threads.set_state(me, ThreadState::Blocked);
                        switch_away(g, false);
                        (false, 0, None)
                    }
                    JoinResult::Err(e) => panic!("join of thread {}: {e}", self.id),
                }
            });
            if done {
                if let Some((b, t)) = stack {
                    let _ = mm::unmap_stack(b, t);
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
    let packet: Packet<T> = alloc::sync::Arc::new(IrqMutex::new(None));
    let p2 = packet.clone();
    let id = spawn_raw(
        Box::new(move || {
            let r = f();
            *p2.lock() = Some(r);
        }),
        stack_size,
        prio,
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
