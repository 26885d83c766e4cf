//! The allocators' out-of-memory policy, without the hardware: try, and
//! while that fails ask the reclaimable caches (the page cache) for memory
//! and try again, a bounded number of times; give up, as an error, when a
//! reclaim frees nothing. [`Reclaimer`] keeps a reclaim from starting
//! another one (Linux's `PF_MEMALLOC`): the caches' own code may allocate
//! while it gives memory back, and such an allocation must fail rather than
//! recurse.
//!
//! The kernel's heap (`GlobalAlloc::alloc`) runs [`alloc_or_reclaim`] with
//! no allocator lock held; the kernel's `mm::reclaim` is a [`Reclaimer`].

use core::sync::atomic::{AtomicBool, Ordering};

/// An allocation that failed after reclaim could free no more memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// Reclaim rounds run (each followed by a retry).
    pub rounds: u32,
    /// Pages (or whatever unit `reclaim` counts) the rounds freed in all.
    pub reclaimed: u64,
}

/// Runs `attempt` until it succeeds. After each failure, `reclaim` is asked
/// to free memory; when it frees nothing, or after `rounds` reclaims, the
/// allocation fails with [`Exhausted`]. `attempt` runs at most `rounds + 1`
/// times and `reclaim` at most `rounds` times.
pub fn alloc_or_reclaim<P>(
    rounds: u32,
    mut attempt: impl FnMut() -> Option<P>,
    mut reclaim: impl FnMut() -> u64,
) -> Result<P, Exhausted> {
    let mut done = Exhausted {
        rounds: 0,
        reclaimed: 0,
    };
    loop {
        if let Some(p) = attempt() {
            return Ok(p);
        }
        if done.rounds == rounds {
            return Err(done);
        }
        let freed = reclaim();
        if freed == 0 {
            return Err(done);
        }
        done.rounds += 1;
        done.reclaimed += freed;
    }
}

/// The size of the heap's next arena, in bytes (whole pages): `preferred`
/// (the heap's doubling size) when that much memory is free, else the
/// smallest arena that holds `need` bytes when that fits in `free`, else
/// `None`. Near the memory floor a small request must not fail because the
/// arena it would have opened is big.
pub fn arena_size(preferred: u64, need: u64, free: u64, page: u64) -> Option<u64> {
    let pages = |b: u64| b.div_ceil(page) * page;
    let want = pages(preferred.max(need));
    if free >= want {
        return Some(want);
    }
    let min = pages(need);
    (free >= min).then_some(min)
}

/// Lets one reclaim run at a time and refuses the nested ones.
#[derive(Debug)]
pub struct Reclaimer {
    running: AtomicBool,
}

impl Reclaimer {
    /// No reclaim running.
    pub const fn new() -> Self {
        Self {
            running: AtomicBool::new(false),
        }
    }

    /// Runs `hook(pages)` and returns what it freed, or 0 without running
    /// it when a reclaim is already running (the caller is that reclaim's
    /// own allocation or page fault).
    pub fn run(&self, pages: u64, hook: impl FnOnce(u64) -> u64) -> u64 {
        if self.running.swap(true, Ordering::AcqRel) {
            return 0;
        }
        /// Clears the flag on the way out, also when `hook` panics.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _done = Done(&self.running);
        hook(pages)
    }

    /// True while a reclaim runs.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }
}

impl Default for Reclaimer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::{Cell, RefCell};
    use std::vec::Vec;

    /// A machine with `free` pages and a cache holding `cached` pages it
    /// gives back on demand. Blocks are counted in pages. Every page is
    /// free, cached or allocated: nothing is lost.
    struct Machine {
        free: Cell<u64>,
        cached: Cell<u64>,
        allocated: RefCell<Vec<u64>>,
        attempts: Cell<u32>,
        reclaims: Cell<u32>,
        /// Pages the cache gives back per reclaim call at most.
        per_reclaim: u64,
        total: u64,
    }

    impl Machine {
        fn new(free: u64, cached: u64, per_reclaim: u64) -> Self {
            Self {
                free: Cell::new(free),
                cached: Cell::new(cached),
                allocated: RefCell::new(Vec::new()),
                attempts: Cell::new(0),
                reclaims: Cell::new(0),
                per_reclaim,
                total: free + cached,
            }
        }
        fn try_alloc(&self, pages: u64) -> Option<u64> {
            self.attempts.set(self.attempts.get() + 1);
            if self.free.get() < pages {
                return None;
            }
            self.free.set(self.free.get() - pages);
            self.allocated.borrow_mut().push(pages);
            Some(pages)
        }
        fn reclaim(&self, want: u64) -> u64 {
            self.reclaims.set(self.reclaims.get() + 1);
            let n = want.min(self.per_reclaim).min(self.cached.get());
            self.cached.set(self.cached.get() - n);
            self.free.set(self.free.get() + n);
            n
        }
        fn alloc(&self, pages: u64, rounds: u32) -> Result<u64, Exhausted> {
            alloc_or_reclaim(rounds, || self.try_alloc(pages), || self.reclaim(pages))
        }
        fn conserved(&self) -> bool {
            let a: u64 = self.allocated.borrow().iter().sum();
            a + self.free.get() + self.cached.get() == self.total
        }
    }

    #[test]
    fn success_needs_no_reclaim() {
        let m = Machine::new(10, 100, 100);
        assert_eq!(m.alloc(4, 4), Ok(4));
        assert_eq!((m.attempts.get(), m.reclaims.get()), (1, 0));
        assert_eq!(m.cached.get(), 100, "the cache was not touched");
        assert!(m.conserved());
    }

    #[test]
    fn one_reclaim_then_success() {
        let m = Machine::new(2, 100, 100);
        assert_eq!(m.alloc(8, 4), Ok(8));
        assert_eq!((m.attempts.get(), m.reclaims.get()), (2, 1));
        assert!(m.conserved());
    }

    #[test]
    fn several_small_reclaims_add_up() {
        // The cache gives 3 pages a call: 0 + 3 + 3 + 3 >= 8.
        let m = Machine::new(0, 100, 3);
        assert_eq!(m.alloc(8, 4), Ok(8));
        assert_eq!((m.attempts.get(), m.reclaims.get()), (4, 3));
        assert!(m.conserved());
    }

    #[test]
    fn gives_up_after_the_rounds_as_an_error() {
        // 4 rounds of 1 page do not make 8: an error, not a panic or a loop.
        let m = Machine::new(0, 100, 1);
        assert_eq!(
            m.alloc(8, 4),
            Err(Exhausted {
                rounds: 4,
                reclaimed: 4
            })
        );
        assert_eq!((m.attempts.get(), m.reclaims.get()), (5, 4));
        // Nothing was lost: the reclaimed pages are free for the next one.
        assert!(m.conserved());
        assert_eq!(m.free.get(), 4);
        assert_eq!(m.alloc(4, 0), Ok(4));
    }

    #[test]
    fn stops_when_reclaim_frees_nothing() {
        let m = Machine::new(1, 2, 100);
        assert_eq!(
            m.alloc(8, 4),
            Err(Exhausted {
                rounds: 1,
                reclaimed: 2
            })
        );
        // Attempt, reclaim 2, attempt, reclaim 0: stop.
        assert_eq!((m.attempts.get(), m.reclaims.get()), (2, 2));
        assert!(m.conserved());
        assert_eq!(m.alloc(3, 4), Ok(3), "what was reclaimed is usable");
    }

    #[test]
    fn zero_rounds_never_reclaims() {
        let m = Machine::new(0, 100, 100);
        assert_eq!(
            m.alloc(1, 0),
            Err(Exhausted {
                rounds: 0,
                reclaimed: 0
            })
        );
        assert_eq!(m.reclaims.get(), 0);
    }

    /// The cache allocates while it gives memory back (its bookkeeping).
    /// That nested allocation fails, and does not start a second reclaim or
    /// loop; the outer allocation still gets the memory.
    #[test]
    fn reclaim_inside_reclaim_is_refused() {
        let m = Machine::new(0, 64, 64);
        let r = Reclaimer::new();
        let nested = Cell::new(None);
        let hook_runs = Cell::new(0);
        let alloc = |pages: u64, hook: &dyn Fn(u64) -> u64| {
            alloc_or_reclaim(4, || m.try_alloc(pages), || r.run(pages, hook))
        };
        let inner_hook = |_: u64| -> u64 { unreachable!("a nested reclaim ran") };
        let hook = |want: u64| -> u64 {
            hook_runs.set(hook_runs.get() + 1);
            assert!(r.is_running());
            // Allocating before anything is freed: fails, no recursion.
            nested.set(Some(alloc(1, &inner_hook)));
            m.reclaim(want)
        };
        assert_eq!(alloc(8, &hook), Ok(8));
        assert_eq!(hook_runs.get(), 1);
        assert_eq!(
            nested.get(),
            Some(Err(Exhausted {
                rounds: 0,
                reclaimed: 0
            }))
        );
        assert!(!r.is_running());
        assert!(m.conserved());
    }

    #[test]
    fn arena_size_falls_back_to_what_fits() {
        const P: u64 = 4096;
        // Plenty free: the preferred size, or the request when it is bigger.
        assert_eq!(arena_size(256 << 10, 1000, 1 << 30, P), Some(256 << 10));
        assert_eq!(arena_size(64 << 10, 100_000, 1 << 30, P), Some(25 * P));
        // 208 KiB free, a 256 KiB arena preferred, 33 KB needed (the 2M
        // guest's TIME-WAIT table): a 9-page arena instead of a failure.
        assert_eq!(arena_size(256 << 10, 33_300, 52 * P, P), Some(9 * P));
        // Not even the request fits.
        assert_eq!(arena_size(256 << 10, 300 << 10, 52 * P, P), None);
        assert_eq!(arena_size(64 << 10, 1, 0, P), None);
        assert_eq!(arena_size(64 << 10, 1, P, P), Some(P));
    }

    #[test]
    fn reclaimer_flag_clears_after_a_panic() {
        let r = Reclaimer::new();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.run(1, |_| panic!("hook failed"))
        }));
        assert!(res.is_err());
        assert!(!r.is_running());
        assert_eq!(r.run(5, |n| n * 2), 10);
    }
}
