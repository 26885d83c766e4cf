//! A global allocator for host tests that fails on demand.
//!
//! The logic crates (`uk-vfs`, `uk-tcp`, ...) must turn a failed allocation
//! into an error (`try_reserve`, `try_insert`) and never allocate where
//! memory is being given back (eviction). Their host tests install
//! [`FailAlloc`] as the test binary's global allocator and run the code
//! under test inside [`inject`], which makes allocations fail according to a
//! [`Plan`], or [`count`], which reports how many allocations the code made.
//!
//! The knobs are per thread: the test harness and tests running on other
//! threads allocate normally, and only the closure's own thread is affected.
//! Outside [`inject`] the allocator is `std`'s system allocator.
//!
//! ```ignore
//! #[global_allocator]
//! static A: uk_failalloc::FailAlloc = uk_failalloc::FailAlloc;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Which allocations fail inside [`inject`]. Allocations are numbered from 0
/// in the order the closure makes them (a growing `realloc` counts as one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Allocation `n` fails; the others succeed (a transient failure).
    Nth(u64),
    /// Allocations `n` and later all fail (memory exhausted after `n`).
    From(u64),
    /// Every allocation succeeds (counting only).
    Never,
}

/// What happened inside [`inject`] or [`count`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Allocation attempts (successful or not), including growing reallocs.
    pub attempts: u64,
    /// Attempts that were made to fail.
    pub failed: u64,
}

#[derive(Clone, Copy)]
struct State {
    active: bool,
    plan: Plan,
    report: Report,
}

const IDLE: State = State {
    active: false,
    plan: Plan::Never,
    report: Report {
        attempts: 0,
        failed: 0,
    },
};

thread_local! {
    // `const` thread-locals need no lazy initialisation, so reading them
    // from inside the allocator never allocates.
    static STATE: Cell<State> = const { Cell::new(IDLE) };
}

/// Decides whether this allocation attempt (on this thread) fails.
fn should_fail() -> bool {
    STATE
        .try_with(|s| {
            let mut st = s.get();
            if !st.active {
                return false;
            }
            let n = st.report.attempts;
            st.report.attempts += 1;
            let fail = match st.plan {
                Plan::Nth(k) => n == k,
                Plan::From(k) => n >= k,
                Plan::Never => false,
            };
            if fail {
                st.report.failed += 1;
            }
            s.set(st);
            fail
        })
        .unwrap_or(false)
}

/// Restores the previous state when dropped (also when the closure panics).
struct Restore(State);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = STATE.try_with(|s| s.set(self.0));
    }
}

/// Runs `f` with this thread's allocations failing according to `plan`;
/// returns its result and what the allocator saw. Not re-entrant: an inner
/// `inject` replaces the outer plan for its duration.
pub fn inject<R>(plan: Plan, f: impl FnOnce() -> R) -> (R, Report) {
    let prev = STATE.with(|s| {
        s.replace(State {
            active: true,
            plan,
            report: Report::default(),
        })
    });
    let restore = Restore(prev);
    let r = f();
    let report = STATE.with(|s| s.get().report);
    drop(restore);
    (r, report)
}

/// Runs `f` and returns its result and the number of allocation attempts it
/// made on this thread (none fail).
pub fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let (r, rep) = inject(Plan::Never, f);
    (r, rep.attempts)
}

/// The system allocator with per-thread failure injection (see the crate
/// documentation).
#[derive(Debug)]
pub struct FailAlloc;

// SAFETY: every successful allocation comes from `System` with the caller's
// layout and is released through `System` with the same layout; a failure is
// reported as null, which `GlobalAlloc` permits.
unsafe impl GlobalAlloc for FailAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if should_fail() {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded `GlobalAlloc::alloc` contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if should_fail() {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded `GlobalAlloc::alloc_zeroed` contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout` (caller's contract).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && should_fail() {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded `GlobalAlloc::realloc` contract; `ptr` came
        // from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static A: FailAlloc = FailAlloc;

    #[test]
    fn nth_fails_once_and_from_fails_for_good() {
        let (r, rep) = inject(Plan::Nth(1), || {
            let a: Vec<u8> = Vec::with_capacity(8);
            let mut b: Vec<u8> = Vec::new();
            let e = b.try_reserve(8);
            let mut c: Vec<u8> = Vec::new();
            let ok = c.try_reserve(8);
            (a.capacity(), e.is_err(), ok.is_ok())
        });
        assert_eq!(r, (8, true, true));
        assert_eq!(
            rep,
            Report {
                attempts: 3,
                failed: 1
            }
        );

        let (r, rep) = inject(Plan::From(0), || {
            let mut v: Vec<u64> = Vec::new();
            (v.try_reserve(1).is_err(), v.try_reserve(100).is_err())
        });
        assert_eq!(r, (true, true));
        assert_eq!(rep.failed, 2);
    }

    #[test]
    fn growing_realloc_counts_and_shrinking_does_not() {
        let mut v: Vec<u8> = Vec::with_capacity(4);
        v.extend_from_slice(&[1, 2, 3, 4]);
        let (r, rep) = inject(Plan::From(0), || v.try_reserve(100));
        assert!(r.is_err());
        assert_eq!(v, [1, 2, 3, 4], "a failed growth keeps the contents");
        assert_eq!(rep.attempts, 1);
        let ((), n) = count(|| v.shrink_to_fit());
        assert_eq!(n, 0);
    }

    #[test]
    fn other_threads_are_unaffected() {
        use std::sync::{Arc, Barrier};
        let b = Arc::new(Barrier::new(2));
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            b2.wait();
            let n = vec![0u8; 64].len();
            b2.wait();
            n
        });
        let (mine, rep) = inject(Plan::From(0), || {
            b.wait(); // the other thread allocates while this plan holds
            b.wait();
            let mut v: Vec<u8> = Vec::new();
            v.try_reserve(64).is_err()
        });
        assert!(mine);
        assert_eq!(
            rep,
            Report {
                attempts: 1,
                failed: 1
            }
        );
        assert_eq!(t.join().unwrap(), 64);
    }

    #[test]
    fn state_is_restored_after_a_panic() {
        let r = std::panic::catch_unwind(|| {
            inject(Plan::Nth(0), || {
                let mut v: Vec<u8> = Vec::new();
                assert!(v.try_reserve(1).is_err());
                std::panic::panic_any(7u32);
            })
        });
        assert!(r.is_err());
        assert!(!STATE.with(|s| s.get().active), "the plan outlived inject");
    }
}
