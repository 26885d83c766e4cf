//! The kernel's lowest-level lock: a spinlock that also disables interrupts
//! while held, so an interrupt handler on the same CPU can never deadlock on a
//! lock its own CPU holds. It excludes other CPUs by its atomic flag alone;
//! lock order: docs/ARCHITECTURE.md, "Multiple CPUs".

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::instructions::interrupts;

/// A spinlock that runs its critical section with interrupts disabled.
pub struct IrqMutex<T> {
    locked: AtomicBool,
    #[cfg(feature = "lockdep")]
    level: u8,
    value: UnsafeCell<T>,
}

/// The levels of the lock order (docs/ARCHITECTURE.md, "Lock order"): a
/// lock may be taken while holding locks of its own level or lower ones,
/// never while holding a higher one. Level 0: not checked.
pub mod level {
    /// Wait-queue and condition-variable lists, semaphore counts, a
    /// thread's result packet.
    pub const WAIT: u8 = 2;
    /// The scheduler's thread table.
    pub const SCHED: u8 = 3;
    /// A CPU's part of the scheduler (run queue, timer queue); two only
    /// when stealing, in index order or with `try_lock`.
    pub const SCHED_CPU: u8 = 4;
    /// A CPU's small-block heap cache.
    pub const HEAP_CACHE: u8 = 5;
    /// The heap (talc, the large-block counters).
    pub const HEAP: u8 = 6;
    /// A CPU's frame cache.
    pub const FRAME_CACHE: u8 = 7;
    /// The memory manager.
    pub const MM: u8 = 8;
    /// The console: innermost, nothing is taken while it is held (what it
    /// prints is formatted under it, so a `Display` must not lock).
    pub const CONSOLE: u8 = 9;
    /// Levels, 0 included.
    pub const COUNT: usize = 10;
}

/// The lock-order check (feature `lockdep`): each CPU counts the locks of
/// each level it holds (`PerCpu::held`); an IrqMutex guard is held with
/// interrupts off, so it is released on the CPU that took it.
#[cfg(feature = "lockdep")]
mod lockdep {
    use core::sync::atomic::Ordering::Relaxed;

    fn held() -> &'static [core::sync::atomic::AtomicU8; super::level::COUNT] {
        &crate::arch::smp::this_cpu().held
    }

    /// Before a blocking `lock` of a lock of `level`: panics when this CPU
    /// holds a lock of a higher level (the order is broken: two CPUs
    /// taking the pair the other way round would deadlock).
    pub fn check(level: u8) {
        let level = level as usize;
        if level == 0 {
            return;
        }
        for (l, n) in held().iter().enumerate().skip(level + 1) {
            if n.load(Relaxed) != 0 {
                panic!("lock order: a level {level} lock taken while holding one of level {l}");
            }
        }
    }

    /// Before a thread blocks (a sleeping lock, a wait queue, a condition
    /// variable, a semaphore): panics when this CPU holds a levelled
    /// spinlock (the thread would sleep with it held, and interrupts off).
    pub fn check_sleep() {
        for (l, n) in held().iter().enumerate().skip(1) {
            if n.load(Relaxed) != 0 {
                panic!("lock order: a thread blocks while holding a level {l} lock");
            }
        }
    }

    /// A lock of `level` was taken (`lock` or `try_lock`).
    pub fn acquired(level: u8) {
        if let Some(n) = held().get(level as usize) {
            n.fetch_add(1, Relaxed);
        }
    }

    /// A lock of `level` is released.
    pub fn released(level: u8) {
        if let Some(n) = held().get(level as usize)
            && n.fetch_sub(1, Relaxed) == 0
        {
            panic!("lock order: a level {level} lock released on a CPU that did not hold it");
        }
    }
}

// SAFETY: access to `value` is serialised by `locked`; T moves between CPUs
// only as a `Send` value would.
unsafe impl<T: Send> Sync for IrqMutex<T> {}
// SAFETY: as above; the lock owns its value.
unsafe impl<T: Send> Send for IrqMutex<T> {}

/// Takes `locked` with interrupts off; returns whether they were on. One
/// copy for every lock type; the uncontended path calls nothing (the
/// contended one is a tail call), so it saves no registers.
#[inline(never)]
fn raw_lock(locked: &AtomicBool) -> bool {
    let irq_was_enabled = interrupts::are_enabled();
    interrupts::disable();
    if locked
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return irq_was_enabled;
    }
    lock_contended(locked, irq_was_enabled)
}

/// The contended path of [`raw_lock`] (never reached with one CPU): spins
/// with the caller's interrupt state until `locked` is clear, then takes it
/// with interrupts off. A waiter may have interrupts off (it holds another
/// lock): it still answers a TLB shootdown, whose sender may hold the lock
/// it waits for.
#[cold]
#[inline(never)]
fn lock_contended(locked: &AtomicBool, irq_was_enabled: bool) -> bool {
    loop {
        if irq_was_enabled {
            interrupts::enable();
        }
        while locked.load(Ordering::Relaxed) {
            crate::arch::smp::service_tlb();
            core::hint::spin_loop();
        }
        interrupts::disable();
        if locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return irq_was_enabled;
        }
    }
}

/// Proof of holding an [`IrqMutex`]; restores the interrupt flag on drop.
pub struct IrqGuard<'a, T> {
    lock: &'a IrqMutex<T>,
    irq_was_enabled: bool,
}

impl<T> IrqMutex<T> {
    /// A new unlocked mutex, outside the checked lock order.
    pub const fn new(value: T) -> Self {
        Self::with_level(0, value)
    }

    /// A new unlocked mutex at `level` of the lock order ([`level`]; checked
    /// with the `lockdep` feature, ignored without).
    #[allow(unused_variables)]
    pub const fn with_level(level: u8, value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            #[cfg(feature = "lockdep")]
            level,
            value: UnsafeCell::new(value),
        }
    }

    /// Spins until the lock is free.
    pub fn lock(&self) -> IrqGuard<'_, T> {
        #[cfg(feature = "lockdep")]
        lockdep::check(self.level);
        let irq_was_enabled = raw_lock(&self.locked);
        #[cfg(feature = "lockdep")]
        lockdep::acquired(self.level);
        IrqGuard {
            irq_was_enabled,
            lock: self,
        }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<IrqGuard<'_, T>> {
        let irq_was_enabled = interrupts::are_enabled();
        interrupts::disable();
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            #[cfg(feature = "lockdep")]
            lockdep::acquired(self.level);
            Some(IrqGuard {
                lock: self,
                irq_was_enabled,
            })
        } else {
            if irq_was_enabled {
                interrupts::enable();
            }
            None
        }
    }

    /// True while someone holds the lock.
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

impl<T> Deref for IrqGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive ownership of the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for IrqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive ownership of the lock.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for IrqGuard<'_, T> {
    fn drop(&mut self) {
        #[cfg(feature = "lockdep")]
        lockdep::released(self.lock.level);
        self.lock.locked.store(false, Ordering::Release);
        if self.irq_was_enabled {
            interrupts::enable();
        }
    }
}

/// Threads waiting for a condition. Wakers change the condition, then call
/// [`WaitQueue::wake_one`] or [`WaitQueue::wake_all`]; waiters re-check it.
pub struct WaitQueue {
    waiters: IrqMutex<uk_sched::WaitQueue>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        Self {
            waiters: IrqMutex::with_level(level::WAIT, uk_sched::WaitQueue::new()),
        }
    }

    /// Blocks until `cond` returns `Some`, and returns that value.
    pub fn wait_until<T>(&self, mut cond: impl FnMut() -> Option<T>) -> T {
        loop {
            if let Some(v) = self.wait_step(&mut cond, None) {
                return v;
            }
        }
    }

    /// Like [`wait_until`](Self::wait_until), giving up at `deadline_ns`
    /// (nanoseconds since boot) with `None`.
    pub fn wait_until_deadline<T>(
        &self,
        mut cond: impl FnMut() -> Option<T>,
        deadline_ns: u64,
    ) -> Option<T> {
        loop {
            if let Some(v) = self.wait_step(&mut cond, Some(deadline_ns)) {
                return Some(v);
            }
            if crate::time::since_boot_ns() >= deadline_ns {
                return cond();
            }
        }
    }

    /// Checks `cond` with interrupts off and, if it does not hold, blocks once.
    ///
    /// The waiter registers itself *before* its last look at the condition:
    /// a waker on another CPU that changes the condition after that look
    /// finds it in the queue, and a wake-up that lands between the look and
    /// the block is kept by the scheduler (`sched::wake` of a thread running
    /// on another CPU), so the block returns at once. With one CPU nothing
    /// runs in between (interrupts are off), so the second look is made only
    /// when other CPUs run threads.
    fn wait_step<T>(
        &self,
        cond: &mut impl FnMut() -> Option<T>,
        deadline: Option<u64>,
    ) -> Option<T> {
        let was = interrupts::are_enabled();
        interrupts::disable();
        let r = match cond() {
            Some(v) => Some(v),
            None => {
                let me = crate::sched::current();
                self.waiters.lock().push(me);
                let r = if crate::arch::smp::multi() {
                    cond()
                } else {
                    None
                };
                if r.is_none() {
                    #[cfg(feature = "lockdep")]
                    lockdep::check_sleep();
                    crate::sched::block_current(deadline);
                }
                self.waiters.lock().remove(me);
                r
            }
        };
        if was {
            interrupts::enable();
        }
        r
    }

    /// Wakes the longest waiter. Returns whether there was one.
    pub fn wake_one(&self) -> bool {
        loop {
            let Some(t) = self.waiters.lock().wake_one() else {
                return false;
            };
            if crate::sched::wake(t) {
                return true;
            }
        }
    }

    /// Wakes every waiter.
    pub fn wake_all(&self) {
        let all = self.waiters.lock().wake_all();
        for t in all {
            crate::sched::wake(t);
        }
    }

    /// Number of waiting threads.
    pub fn len(&self) -> usize {
        self.waiters.lock().len()
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Spins of [`Mutex::lock`] on a busy mutex before it blocks (only with
/// several CPUs).
const MUTEX_SPINS: u32 = 2000;

/// Spins up to `loops` pause loops until `done`; whether it is. For a
/// waiter that expects another CPU to end its wait soon (before blocking).
pub fn spin_until(loops: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..loops {
        core::hint::spin_loop();
        if done() {
            return true;
        }
    }
    false
}

/// A sleeping mutex for threads: waiters block instead of spinning.
pub struct Mutex<T> {
    locked: AtomicBool,
    waiters: WaitQueue,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reachable through a guard, and `locked` admits
// one guard at a time.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Mutex<T> {}

/// Proof of holding a [`Mutex`].
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            waiters: WaitQueue::new(),
            value: UnsafeCell::new(value),
        }
    }

    fn try_acquire(&self) -> bool {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Blocks until the mutex is free, then takes it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if !self.try_acquire() {
            self.lock_contended();
        }
        MutexGuard { mutex: self }
    }

    /// The contended path of [`Mutex::lock`]: with other CPUs running
    /// threads the holder is most likely running on one of them and about
    /// to let go, so it spins a little first (a block and a wake-up cost two
    /// switches and an IPI); then it blocks.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        if crate::arch::smp::multi()
            && spin_until(MUTEX_SPINS, || {
                !self.locked.load(Ordering::Relaxed) && self.try_acquire()
            })
        {
            return;
        }
        self.waiters.wait_until(|| self.try_acquire().then_some(()));
    }

    /// Takes the mutex if it is free.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        // Not `then_some(MutexGuard { .. })`: its argument is built even
        // when the mutex is busy, and dropping that guard unlocked the
        // holder's mutex (a second thread then got in).
        if self.try_acquire() {
            Some(MutexGuard { mutex: self })
        } else {
            None
        }
    }

    fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
        self.waiters.wake_one();
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive ownership.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive ownership.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

/// A condition variable for [`Mutex`].
pub struct Condvar {
    waiters: IrqMutex<uk_sched::CondvarState>,
}

impl Default for Condvar {
    fn default() -> Self {
        Self::new()
    }
}

impl Condvar {
    /// A new condition variable.
    pub const fn new() -> Self {
        Self {
            waiters: IrqMutex::with_level(level::WAIT, uk_sched::CondvarState::new()),
        }
    }

    /// Releases the mutex, blocks until notified, and takes the mutex again.
    /// Like every condition variable, it may wake spuriously: re-check.
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait_deadline(guard, None).0
    }

    /// [`wait`](Self::wait) with a timeout; the flag says whether it expired.
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        d: core::time::Duration,
    ) -> (MutexGuard<'a, T>, bool) {
        let deadline =
            crate::time::since_boot_ns().saturating_add(d.as_nanos().min(u64::MAX as u128) as u64);
        self.wait_deadline(guard, Some(deadline))
    }

    fn wait_deadline<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<u64>,
    ) -> (MutexGuard<'a, T>, bool) {
        let mutex = guard.mutex;
        let was = interrupts::are_enabled();
        interrupts::disable();
        let me = crate::sched::current();
        self.waiters.lock().wait(me);
        drop(guard);
        let timed_out = crate::sched::block_current(deadline);
        self.waiters.lock().remove(me);
        if was {
            interrupts::enable();
        }
        (mutex.lock(), timed_out)
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        loop {
            let Some(t) = self.waiters.lock().notify_one() else {
                return;
            };
            if crate::sched::wake(t) {
                return;
            }
        }
    }

    /// Wakes all waiters.
    pub fn notify_all(&self) {
        let all = self.waiters.lock().notify_all();
        for t in all {
            crate::sched::wake(t);
        }
    }
}

/// A counting semaphore.
pub struct Semaphore {
    count: IrqMutex<usize>,
    waiters: WaitQueue,
}

impl Semaphore {
    /// A semaphore holding `count` permits.
    pub const fn new(count: usize) -> Self {
        Self {
            count: IrqMutex::with_level(level::WAIT, count),
            waiters: WaitQueue::new(),
        }
    }

    /// Takes a permit if one is available.
    pub fn try_acquire(&self) -> bool {
        let mut c = self.count.lock();
        if *c > 0 {
            *c -= 1;
            true
        } else {
            false
        }
    }

    /// Blocks until a permit is available and takes it.
    pub fn acquire(&self) {
        self.waiters.wait_until(|| self.try_acquire().then_some(()));
    }

    /// Returns a permit.
    pub fn release(&self) {
        *self.count.lock() += 1;
        self.waiters.wake_one();
    }

    /// Permits available now.
    pub fn available(&self) -> usize {
        *self.count.lock()
    }
}

/// Storage written during single-threaded boot (or by its one owner) and
/// read afterwards: a `static` without `static mut`.
pub struct BootCell<T>(UnsafeCell<T>);

// SAFETY: all access goes through the unsafe `get`, whose callers guarantee
// that no write overlaps another access.
unsafe impl<T> Sync for BootCell<T> {}

impl<T> BootCell<T> {
    /// A cell holding `v`.
    pub const fn new(v: T) -> Self {
        Self(UnsafeCell::new(v))
    }

    /// A raw pointer to the contents.
    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// A value set once (at init, by any thread) and read by everyone after: the
/// safe replacement for a `static mut` written during boot.
pub struct Once<T> {
    /// 0: empty, 1: being written, 2: set.
    state: core::sync::atomic::AtomicU8,
    value: UnsafeCell<core::mem::MaybeUninit<T>>,
}

// SAFETY: the value is written once, by the thread that won the 0 -> 1
// transition, before the Release store of 2; readers see it only after an
// Acquire load of 2 and only get `&T`, so `T: Sync` makes sharing sound and
// `T: Send` moving it in from another thread.
unsafe impl<T: Send + Sync> Sync for Once<T> {}

impl<T> Once<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        Once {
            state: core::sync::atomic::AtomicU8::new(0),
            value: UnsafeCell::new(core::mem::MaybeUninit::uninit()),
        }
    }

    /// Stores `v` if the cell is empty; gives it back otherwise.
    pub fn set(&self, v: T) -> Result<(), T> {
        if self
            .state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(v);
        }
        // SAFETY: this thread won the 0 -> 1 transition, so it is the only
        // writer, and no reader looks before the state is 2.
        unsafe { (*self.value.get()).write(v) };
        self.state.store(2, Ordering::Release);
        Ok(())
    }

    /// The value, once set.
    pub fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) != 2 {
            return None;
        }
        // SAFETY: state 2 means the value was fully written (Release/Acquire)
        // and is never written again; only shared references are handed out.
        Some(unsafe { (*self.value.get()).assume_init_ref() })
    }
}

impl<T> Default for Once<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for Once<T> {
    fn drop(&mut self) {
        if *self.state.get_mut() == 2 {
            // SAFETY: state 2: the value is initialised, and `&mut self`
            // means no reference to it is alive.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}
