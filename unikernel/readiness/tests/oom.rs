//! Allocation failure while registering interest: the test binary's
//! allocator is `uk_failalloc::FailAlloc`. `EPOLL_CTL_ADD` and a source's
//! observer list make room with `try_reserve` first, so a failed allocation
//! is `ENOMEM` with nothing half-registered, never an abort; and waiting
//! allocates nothing at all.

use uk_failalloc::{Plan, count, inject};
use uk_readiness::*;

#[global_allocator]
static ALLOC: uk_failalloc::FailAlloc = uk_failalloc::FailAlloc;

#[test]
fn ctl_add_is_enomem_when_memory_is_short() {
    let mut ep = EpollInstance::new();
    let (mut added, mut refused) = (0, 0);
    for fd in 0..200 {
        let key = 1000 + fd as u64;
        let (r, rep) = inject(Plan::From(0), || {
            ep.ctl_add(key, fd, Events::IN, fd as u64, Events::IN)
        });
        match r {
            Ok(()) => assert_eq!(rep.attempts, 0, "an add that allocated cannot succeed here"),
            Err(e) => {
                assert_eq!(e, EpollError::NoMemory);
                assert_eq!(e.errno(), 12);
                assert!(rep.failed > 0);
                refused += 1;
                // Nothing half-registered: the same add works with memory.
                ep.ctl_add(key, fd, Events::IN, fd as u64, Events::IN)
                    .unwrap();
            }
        }
        added += 1;
    }
    assert!(refused > 3, "the tables grew {refused} times");
    // Every interest is there and ready; waiting allocates nothing.
    let mut out = [EpollEvent::default(); 256];
    let (n, allocs) = count(|| ep.wait(256, &mut out, |_, _| Events::IN));
    assert_eq!((n, allocs), (added, 0));
}

#[test]
fn observer_room_is_reserved_fallibly() {
    let mut s = SourceState::new(Events::NONE);
    let (ok, rep) = inject(Plan::From(0), || s.reserve_observer());
    assert!(!ok);
    assert_eq!(rep.failed, 1);
    assert!(s.reserve_observer());
    let o = Observer {
        instance: 1,
        key: 2,
        fd: 3,
    };
    let (added, allocs) = count(|| s.add_observer(o));
    assert!(added);
    assert_eq!(
        allocs, 0,
        "add_observer after reserve_observer allocates nothing"
    );
}
