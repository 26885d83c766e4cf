//! Behavioural tests of `EpollInstance`, `SourceState` and `poll_fds`.

mod common;

use common::{Harness, datas};
use uk_readiness::*;

const IN: Events = Events::IN;
const OUT: Events = Events::OUT;

#[test]
fn event_bits_match_linux() {
    let expected: [(Events, u32); 16] = [
        (Events::IN, 0x001),
        (Events::PRI, 0x002),
        (Events::OUT, 0x004),
        (Events::ERR, 0x008),
        (Events::HUP, 0x010),
        (Events::NVAL, 0x020),
        (Events::RDNORM, 0x040),
        (Events::RDBAND, 0x080),
        (Events::WRNORM, 0x100),
        (Events::WRBAND, 0x200),
        (Events::MSG, 0x400),
        (Events::RDHUP, 0x2000),
        (Events::EXCLUSIVE, 0x1000_0000),
        (Events::WAKEUP, 0x2000_0000),
        (Events::ONESHOT, 0x4000_0000),
        (Events::ET, 0x8000_0000),
    ];
    for (e, v) in expected {
        assert_eq!(e.bits(), v, "{e:?}");
    }
    assert_eq!(EPOLLIN, 1);
    assert_eq!(EPOLLET, 0x8000_0000);
    assert_eq!(EPOLLRDHUP, 0x2000);
    assert_eq!(EPOLLWRNORM, 0x100);
    assert_eq!(EPOLLRDNORM, 0x40);
    assert_eq!((EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD), (1, 2, 3));
}

#[test]
fn events_ops() {
    let e = IN | OUT;
    assert!(e.contains(IN) && e.contains(OUT) && !e.contains(Events::ERR));
    assert!(e.intersects(IN | Events::HUP));
    assert!(!e.intersects(Events::HUP));
    assert_eq!(e & IN, IN);
    assert_eq!(e - IN, OUT);
    assert_eq!(e ^ IN, OUT);
    assert_eq!((!IN).bits(), !1u32);
    let mut m = Events::NONE;
    assert!(m.is_empty());
    m |= Events::ET;
    m |= IN;
    m &= Events::ET;
    assert_eq!(m, Events::ET);
    m -= Events::ET;
    assert!(m.is_empty());
    assert_eq!((IN | Events::ET | Events::ONESHOT).reportable(), IN);
    assert_eq!(Events::from(5u32), IN | OUT);
    assert_eq!(u32::from(IN | OUT), 5);
    assert_eq!(format!("{:?}", IN | Events::ET), "Events(IN | ET)");
    assert_eq!(format!("{:?}", Events::NONE), "Events(NONE)");
    assert_eq!(format!("{:?}", Events(0x800 | 1)), "Events(IN | 0x800)");
}

#[test]
fn level_triggered_fires_again_while_ready() {
    let mut h = Harness::new(1);
    h.add(0, 1, 3, IN, 42).unwrap();
    assert!(h.wait(0, 8).is_empty());
    assert_eq!(h.set(1, IN | Events::RDNORM), 1);
    for _ in 0..5 {
        let evs = h.wait(0, 8);
        assert_eq!(
            evs,
            vec![EpollEvent {
                events: IN,
                data: 42
            }]
        );
        assert!(h.instances[0].is_ready());
    }
    // Data consumed: no notification needed, the next wait drops the entry.
    h.clear(1, IN | Events::RDNORM);
    assert_eq!(h.instances[0].ready_count(), 1);
    assert!(h.wait(0, 8).is_empty());
    assert_eq!(h.instances[0].ready_count(), 0);
    assert!(!h.instances[0].is_ready());
    assert!(h.wait(0, 8).is_empty());
    // Ready again.
    h.set(1, IN);
    assert_eq!(datas(&h.wait(0, 8)), vec![42]);
}

#[test]
fn edge_triggered_fires_once_per_edge() {
    let mut h = Harness::new(1);
    h.add(0, 1, 3, IN | Events::ET, 7).unwrap();
    h.set(1, IN);
    assert_eq!(
        h.wait(0, 8),
        vec![EpollEvent {
            events: IN,
            data: 7
        }]
    );
    // Still readable, but no new edge.
    assert!(h.wait(0, 8).is_empty());
    assert!(h.wait(0, 8).is_empty());
    assert_eq!(
        h.instances[0].interest(1, 3).unwrap().state,
        InterestState::Idle
    );
    // More data arrives while already readable: a new edge.
    assert_eq!(h.raise(1, IN), 1);
    assert_eq!(datas(&h.wait(0, 8)), vec![7]);
    assert!(h.wait(0, 8).is_empty());
    // `set` with unchanged bits is not an edge.
    assert_eq!(h.set(1, IN), 0);
    assert!(h.wait(0, 8).is_empty());
    // Edge, but consumed before the wait: nothing reported, entry dropped.
    h.raise(1, IN);
    h.clear(1, IN);
    assert!(h.wait(0, 8).is_empty());
    assert_eq!(h.instances[0].ready_count(), 0);
    // A new edge after that.
    h.set(1, IN);
    assert_eq!(datas(&h.wait(0, 8)), vec![7]);
}

#[test]
fn oneshot_disarms_until_mod() {
    let mut h = Harness::new(1);
    h.add(0, 1, 3, IN | Events::ONESHOT, 1).unwrap();
    h.set(1, IN);
    assert_eq!(datas(&h.wait(0, 8)), vec![1]);
    let st = h.instances[0].interest(1, 3).unwrap();
    assert_eq!(st.state, InterestState::Disarmed);
    assert_eq!(st.events, Events::ONESHOT);
    assert!(h.wait(0, 8).is_empty());
    // Notifications are ignored while disarmed, even ERR/HUP.
    assert_eq!(h.raise(1, IN | Events::HUP), 0);
    assert!(!h.instances[0].is_ready());
    assert!(h.wait(0, 8).is_empty());
    // MOD re-arms; the source is still ready, so it is queued immediately.
    h.modify(0, 1, 3, IN | Events::ONESHOT, 2).unwrap();
    assert_eq!(
        h.instances[0].interest(1, 3).unwrap().state,
        InterestState::Queued
    );
    assert_eq!(
        h.wait(0, 8),
        vec![EpollEvent {
            events: IN | Events::HUP,
            data: 2
        }]
    );
    assert!(h.wait(0, 8).is_empty());
    // Oneshot that finds nothing at wait time stays armed.
    h.set(1, Events::NONE);
    h.modify(0, 1, 3, IN | Events::ONESHOT, 3).unwrap();
    assert_eq!(
        h.instances[0].interest(1, 3).unwrap().state,
        InterestState::Idle
    );
    h.raise(1, IN);
    h.clear(1, IN);
    assert!(h.wait(0, 8).is_empty());
    assert_eq!(
        h.instances[0].interest(1, 3).unwrap().state,
        InterestState::Idle
    );
    h.raise(1, IN);
    assert_eq!(datas(&h.wait(0, 8)), vec![3]);
    assert_eq!(
        h.instances[0].interest(1, 3).unwrap().state,
        InterestState::Disarmed
    );
}

#[test]
fn del_stops_events() {
    let mut h = Harness::new(1);
    h.add(0, 1, 3, IN, 1).unwrap();
    h.add(0, 2, 4, IN, 2).unwrap();
    h.set(1, IN);
    h.set(2, IN);
    assert_eq!(h.instances[0].ready_count(), 2);
    h.del(0, 1, 3).unwrap();
    assert_eq!(h.instances[0].ready_count(), 1);
    assert_eq!(h.instances[0].interest_count(), 1);
    assert_eq!(datas(&h.wait(0, 8)), vec![2]);
    // A late notification for the deleted interest is ignored.
    assert!(!h.instances[0].notify(1, 3, IN));
    assert_eq!(h.raise(1, IN), 0);
    assert_eq!(datas(&h.wait(0, 8)), vec![2]);
    assert_eq!(h.instances[0].ctl_del(1, 3), Err(EpollError::NotFound));
    // Re-adding reuses the slot and works normally.
    h.add(0, 1, 3, IN, 9).unwrap();
    let mut d = datas(&h.wait(0, 8));
    d.sort();
    assert_eq!(d, vec![2, 9]);
}

#[test]
fn add_of_ready_source_reports_immediately() {
    let mut h = Harness::new(1);
    h.source(5).set(OUT | Events::WRNORM);
    h.add(0, 5, 10, OUT, 77).unwrap();
    assert!(h.instances[0].is_ready());
    assert_eq!(
        h.wait(0, 1),
        vec![EpollEvent {
            events: OUT,
            data: 77
        }]
    );
    // Ready in bits not requested: not queued.
    h.add(0, 5, 11, IN, 78).unwrap();
    assert_eq!(
        h.instances[0].interest(5, 11).unwrap().state,
        InterestState::Idle
    );
}

#[test]
fn mod_changes_mask_and_data() {
    let mut h = Harness::new(1);
    h.add(0, 1, 3, IN, 1).unwrap();
    h.set(1, OUT);
    assert!(h.wait(0, 8).is_empty());
    assert_eq!(h.instances[0].ready_count(), 0);
    // Switching to OUT: the source is writable, queued at once by MOD.
    h.modify(0, 1, 3, OUT, 2).unwrap();
    assert_eq!(
        h.wait(0, 8),
        vec![EpollEvent {
            events: OUT,
            data: 2
        }]
    );
    // Narrowing the mask while queued: the next wait drops it.
    h.modify(0, 1, 3, IN, 3).unwrap();
    assert_eq!(h.instances[0].ready_count(), 1);
    assert!(h.wait(0, 8).is_empty());
    assert_eq!(h.instances[0].ready_count(), 0);
    // Only IN notifications matter now.
    assert_eq!(h.raise(1, OUT), 0);
    assert_eq!(h.raise(1, IN), 1);
    assert_eq!(
        h.wait(0, 8),
        vec![EpollEvent {
            events: IN,
            data: 3
        }]
    );
    // Widening reports both.
    h.modify(0, 1, 3, IN | OUT, 4).unwrap();
    assert_eq!(
        h.wait(0, 8),
        vec![EpollEvent {
            events: IN | OUT,
            data: 4
        }]
    );
    assert_eq!(
        h.instances[0].interest(1, 3).unwrap().events,
        IN | OUT | Events::ERR | Events::HUP
    );
    // LT -> ET while queued: reported once more, then not re-queued.
    h.modify(0, 1, 3, IN | Events::ET, 5).unwrap();
    assert_eq!(datas(&h.wait(0, 8)), vec![5]);
    assert!(h.wait(0, 8).is_empty());
    // ET -> LT while ready and idle: MOD re-polls and queues it.
    h.modify(0, 1, 3, IN, 6).unwrap();
    assert_eq!(datas(&h.wait(0, 8)), vec![6]);
    assert_eq!(datas(&h.wait(0, 8)), vec![6]);
}

#[test]
fn err_and_hup_always_reported() {
    let mut h = Harness::new(1);
    h.add(0, 1, 3, IN, 1).unwrap();
    h.add(0, 2, 4, Events::NONE, 2).unwrap();
    assert_eq!(h.raise(1, Events::ERR), 1);
    assert_eq!(h.raise(2, Events::HUP), 1);
    let evs = h.wait(0, 8);
    assert_eq!(
        evs,
        vec![
            EpollEvent {
                events: Events::ERR,
                data: 1
            },
            EpollEvent {
                events: Events::HUP,
                data: 2
            },
        ]
    );
    // RDHUP is not implicit.
    h.add(0, 3, 5, IN, 3).unwrap();
    assert_eq!(h.raise(3, Events::RDHUP), 0);
    h.modify(0, 3, 5, IN | Events::RDHUP, 3).unwrap();
    let evs = h.wait(0, 8);
    assert!(evs.contains(&EpollEvent {
        events: Events::RDHUP,
        data: 3
    }));
    // Unrequested bits never leak into the report.
    h.add(0, 4, 6, OUT, 4).unwrap();
    h.raise(4, IN | OUT | Events::PRI | Events::ERR);
    let evs = h.wait(0, 8);
    assert!(evs.contains(&EpollEvent {
        events: OUT | Events::ERR,
        data: 4
    }));
}

#[test]
fn max_events_truncation_is_round_robin() {
    let mut h = Harness::new(1);
    for k in 0..5u64 {
        h.add(0, k, k as i32, IN, k).unwrap();
        h.set(k, IN);
    }
    assert_eq!(h.instances[0].ready_count(), 5);
    assert_eq!(datas(&h.wait(0, 2)), vec![0, 1]);
    assert_eq!(h.instances[0].ready_count(), 5);
    assert_eq!(datas(&h.wait(0, 2)), vec![2, 3]);
    assert_eq!(datas(&h.wait(0, 2)), vec![4, 0]);
    assert_eq!(datas(&h.wait(0, 2)), vec![1, 2]);
    assert_eq!(datas(&h.wait(0, 3)), vec![3, 4, 0]);
    assert!(h.wait(0, 0).is_empty());
    assert_eq!(h.take_polls(), 11);
    // Stale entries are skipped without counting against max_events.
    h.clear(2, IN);
    h.clear(3, IN);
    assert_eq!(datas(&h.wait(0, 2)), vec![1, 4]);
    assert_eq!(h.instances[0].ready_count(), 3);
    assert_eq!(datas(&h.wait(0, 10)), vec![0, 1, 4]);
}

#[test]
fn truncation_keeps_edge_triggered_items_queued() {
    let mut h = Harness::new(1);
    for k in 0..4u64 {
        h.add(0, k, 0, IN | Events::ET, k).unwrap();
        h.set(k, IN);
    }
    assert_eq!(datas(&h.wait(0, 3)), vec![0, 1, 2]);
    assert_eq!(h.instances[0].ready_count(), 1);
    assert_eq!(datas(&h.wait(0, 3)), vec![3]);
    assert!(h.wait(0, 3).is_empty());
}

#[test]
fn duplicate_notifies_do_not_duplicate_entries() {
    let mut h = Harness::new(1);
    h.add(0, 1, 3, IN | OUT, 1).unwrap();
    assert!(h.instances[0].notify(1, 3, IN));
    for _ in 0..100 {
        assert!(!h.instances[0].notify(1, 3, IN));
        assert!(!h.instances[0].notify(1, 3, OUT | Events::ERR));
    }
    assert_eq!(h.instances[0].ready_count(), 1);
    h.source(1).set(IN);
    assert_eq!(datas(&h.wait(0, 8)), vec![1]);
    assert_eq!(h.take_polls(), 1);
    // Unknown interests and empty or unrequested events are ignored.
    assert!(!h.instances[0].notify(1, 4, IN));
    assert!(!h.instances[0].notify(9, 3, IN));
    h.add(0, 2, 5, IN, 2).unwrap();
    assert!(!h.instances[0].notify(2, 5, Events::NONE));
    assert!(!h.instances[0].notify(2, 5, OUT | Events::PRI));
    assert!(!h.instances[0].notify(2, 5, Events::ET));
}

#[test]
fn wait_cost_follows_ready_not_registered() {
    const N: u64 = 10_000;
    let mut h = Harness::new(1);
    for k in 0..N {
        h.add(0, k, (k % 1000) as i32, IN, k).unwrap();
    }
    assert_eq!(h.instances[0].interest_count(), N as usize);
    h.take_polls();
    assert!(h.wait(0, 64).is_empty());
    assert_eq!(h.take_polls(), 0);
    h.set(4321, IN);
    assert_eq!(datas(&h.wait(0, 64)), vec![4321]);
    assert_eq!(h.take_polls(), 1, "wait must poll only the ready interest");
    // The level-triggered item is polled once more, then dropped when stale.
    h.clear(4321, IN);
    assert!(h.wait(0, 64).is_empty());
    assert_eq!(h.take_polls(), 1);
    assert!(h.wait(0, 64).is_empty());
    assert_eq!(h.take_polls(), 0);
    // Three ready out of 10,000: three polls.
    for k in [7, 5000, 9999] {
        h.set(k, IN);
    }
    assert_eq!(datas(&h.wait(0, 64)), vec![7, 5000, 9999]);
    assert_eq!(h.take_polls(), 3);
    // poll_self touches one entry.
    assert_eq!(h.poll_self(0), IN | Events::RDNORM);
    assert_eq!(h.take_polls(), 1);
}

#[test]
fn dup_descriptors_are_independent_interests() {
    let mut h = Harness::new(1);
    h.add(0, 1, 3, IN, 30).unwrap();
    h.add(0, 1, 4, IN | Events::ET, 40).unwrap();
    assert_eq!(h.add(0, 1, 3, OUT, 0), Err(EpollError::Exists));
    assert_eq!(h.source(1).observers().len(), 2);
    assert_eq!(h.set(1, IN), 2);
    assert_eq!(datas(&h.wait(0, 8)), vec![30, 40]);
    assert_eq!(datas(&h.wait(0, 8)), vec![30]);
    h.del(0, 1, 3).unwrap();
    assert_eq!(h.raise(1, IN), 1);
    assert_eq!(datas(&h.wait(0, 8)), vec![40]);
}

#[test]
fn ctl_errors() {
    let mut ep = EpollInstance::new();
    assert_eq!(
        ep.ctl_add(1, -1, IN, 0, Events::NONE),
        Err(EpollError::BadFd)
    );
    assert_eq!(
        ep.ctl_mod(1, 3, IN, 0, Events::NONE),
        Err(EpollError::NotFound)
    );
    assert_eq!(ep.ctl_del(1, 3), Err(EpollError::NotFound));
    ep.ctl_add(1, 3, IN, 0, Events::NONE).unwrap();
    assert_eq!(
        ep.ctl_add(1, 3, OUT, 0, Events::NONE),
        Err(EpollError::Exists)
    );
    // EPOLLEXCLUSIVE: only with IN/OUT/ERR/HUP/WAKEUP/ET, only on ADD.
    assert_eq!(
        ep.ctl_add(
            2,
            3,
            IN | Events::EXCLUSIVE | Events::ONESHOT,
            0,
            Events::NONE
        ),
        Err(EpollError::Invalid)
    );
    assert_eq!(
        ep.ctl_add(
            2,
            3,
            IN | Events::EXCLUSIVE | Events::RDHUP,
            0,
            Events::NONE
        ),
        Err(EpollError::Invalid)
    );
    ep.ctl_add(2, 3, IN | Events::EXCLUSIVE | Events::ET, 0, Events::NONE)
        .unwrap();
    assert_eq!(
        ep.ctl_mod(2, 3, IN, 0, Events::NONE),
        Err(EpollError::Invalid)
    );
    assert_eq!(
        ep.ctl_mod(1, 3, IN | Events::EXCLUSIVE, 0, Events::NONE),
        Err(EpollError::Invalid)
    );
    assert_eq!(
        ep.ctl_mod(9, 9, IN | Events::EXCLUSIVE, 0, Events::NONE),
        Err(EpollError::Invalid)
    );
    // Raw dispatch.
    assert_eq!(
        ep.ctl(0, 1, 3, IN, 0, Events::NONE),
        Err(EpollError::Invalid)
    );
    assert_eq!(
        ep.ctl(4, 1, 3, IN, 0, Events::NONE),
        Err(EpollError::Invalid)
    );
    ep.ctl(EPOLL_CTL_MOD, 1, 3, OUT, 5, OUT).unwrap();
    assert_eq!(ep.interest(1, 3).unwrap().data, 5);
    assert_eq!(ep.interest(1, 3).unwrap().state, InterestState::Queued);
    ep.ctl(EPOLL_CTL_DEL, 1, 3, Events::NONE, 0, Events::NONE)
        .unwrap();
    assert!(!ep.contains(1, 3));
    assert!(!ep.is_ready());
    ep.ctl(EPOLL_CTL_ADD, 1, 3, IN, 6, Events::NONE).unwrap();
    assert_eq!(CtlOp::from_raw(2), Ok(CtlOp::Del));
    assert_eq!(CtlOp::Mod.to_raw(), 3);
    // errno values.
    let errnos = [
        (EpollError::Perm, 1),
        (EpollError::NotFound, 2),
        (EpollError::BadFd, 9),
        (EpollError::Exists, 17),
        (EpollError::Invalid, 22),
        (EpollError::Loop, 40),
    ];
    for (e, n) in errnos {
        assert_eq!(e.errno(), n);
        assert!(!e.to_string().is_empty());
    }
    let mut all: Vec<_> = ep.interests().map(|(k, _)| k).collect();
    all.sort();
    assert_eq!(all, vec![WatchKey::new(1, 3), WatchKey::new(2, 3)]);
}

#[test]
fn nested_epoll_poll_self_prunes_stale_entries() {
    let mut h = Harness::new(1);
    for k in 0..4u64 {
        h.add(0, k, 0, IN, k).unwrap();
        h.set(k, IN);
    }
    h.clear(0, IN);
    h.clear(1, IN);
    h.take_polls();
    assert_eq!(h.poll_self(0), IN | Events::RDNORM);
    assert_eq!(h.take_polls(), 3);
    assert_eq!(h.instances[0].ready_count(), 2);
    h.clear(2, IN);
    h.clear(3, IN);
    assert_eq!(h.poll_self(0), Events::NONE);
    assert_eq!(h.instances[0].ready_count(), 0);
    assert!(!h.instances[0].is_ready());
}

#[test]
fn nested_epoll_as_a_source() {
    // Outer instance (0) watches inner instance (1) as source 100.
    let mut inner = EpollInstance::new();
    let mut outer = EpollInstance::new();
    let mut sock = SourceState::new(Events::NONE);
    sock.add_observer(Observer {
        instance: 1,
        key: 7,
        fd: 3,
    });
    inner.ctl_add(7, 3, IN, 70, sock.events()).unwrap();
    let inner_ready = inner.poll_self(|_, _| sock.events());
    outer.ctl_add(100, 5, IN, 500, inner_ready).unwrap();
    assert!(!outer.is_ready());
    // The socket becomes readable: inner is notified, and since it turned
    // ready it notifies its own observer, the outer instance.
    let f = sock.set(IN);
    for o in &f.observers {
        assert_eq!(o.instance, 1);
        if inner.notify(o.key, o.fd, f.events) {
            assert!(outer.notify(100, 5, IN));
        }
    }
    let mut out = [EpollEvent::default(); 8];
    let n = outer.wait(8, &mut out, |k, _| {
        assert_eq!(k, 100);
        inner.poll_self(|_, _| sock.events())
    });
    assert_eq!(n, 1);
    assert_eq!(
        out[0],
        EpollEvent {
            events: IN,
            data: 500
        }
    );
    out = [EpollEvent::default(); 8];
    assert_eq!(inner.wait(8, &mut out, |_, _| sock.events()), 1);
    assert_eq!(out[0].data, 70);
}

#[test]
fn source_state_fanout() {
    let mut s = SourceState::new(OUT);
    assert_eq!(s.events(), OUT);
    assert!(s.set(OUT).is_empty(), "no observers");
    let a = Observer {
        instance: 1,
        key: 9,
        fd: 3,
    };
    let b = Observer {
        instance: 2,
        key: 9,
        fd: 4,
    };
    let c = Observer {
        instance: 2,
        key: 9,
        fd: 5,
    };
    assert!(s.add_observer(a));
    assert!(!s.add_observer(a));
    assert!(s.add_observer(b));
    assert!(s.add_observer(c));
    // Only new bits are reported by `set`.
    let f = s.set(OUT | IN);
    assert_eq!(f.events, IN);
    assert_eq!(f.observers, vec![a, b, c]);
    assert!(s.set(IN).is_empty(), "clearing needs no notification");
    assert_eq!(s.events(), IN);
    // `raise` always reports, even for bits already set.
    let f = s.raise(IN);
    assert_eq!(f.events, IN);
    assert_eq!(f.observers.len(), 3);
    assert!(s.raise(Events::NONE).is_empty());
    s.clear(IN);
    assert_eq!(s.events(), Events::NONE);
    assert!(s.remove_observer(&a));
    assert!(!s.remove_observer(&a));
    assert_eq!(s.remove_instance(2), 2);
    assert!(s.observers().is_empty());
    assert!(s.raise(Events::HUP).is_empty());
    assert_eq!(s.events(), Events::HUP);
}

#[test]
fn fanout_to_several_instances() {
    let mut h = Harness::new(3);
    h.add(0, 1, 3, IN, 10).unwrap();
    h.add(1, 1, 3, IN | Events::ET, 11).unwrap();
    h.add(2, 1, 8, OUT, 12).unwrap();
    assert_eq!(h.set(1, IN), 2);
    assert_eq!(datas(&h.wait(0, 8)), vec![10]);
    assert_eq!(datas(&h.wait(1, 8)), vec![11]);
    assert!(h.wait(2, 8).is_empty());
    assert_eq!(h.set(1, IN | OUT), 1);
    assert_eq!(datas(&h.wait(2, 8)), vec![12]);
    assert!(h.wait(1, 8).is_empty());
}

#[test]
fn posix_poll() {
    let states = [IN | Events::RDNORM, OUT, Events::HUP | IN, Events::NONE];
    let fds = [
        (PollTarget::Source(0), IN),
        (PollTarget::Source(1), IN),
        (PollTarget::Source(2), OUT),
        (PollTarget::Source(3), IN | OUT),
        (PollTarget::Ignored, IN),
        (PollTarget::Invalid, IN),
        (PollTarget::Source(0), IN | Events::RDNORM | Events::ET),
        (PollTarget::Source(0), Events::NONE),
    ];
    let mut calls = 0;
    let rev = poll_fds(&fds, |k| {
        calls += 1;
        states[k as usize]
    });
    assert_eq!(calls, 6);
    assert_eq!(
        rev,
        vec![
            IN,
            Events::NONE,
            Events::HUP,
            Events::NONE,
            Events::NONE,
            Events::NVAL,
            IN | Events::RDNORM,
            Events::NONE,
        ]
    );
    assert_eq!(count_ready(&rev), 4);
}
