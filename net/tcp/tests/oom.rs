//! Allocation failure inside the engine: the test binary's allocator is
//! `uk_failalloc::FailAlloc`, and deliveries to b run with its allocations
//! failing. A failed allocation must cost one segment (dropped, the peer
//! retransmits) or one new connection (SYN dropped), never a panic (which
//! would abort this binary), and the other connections keep going.

mod common;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;

use common::*;
use uk_failalloc::{Plan, inject};
use uk_tcp::{Error, State};

#[global_allocator]
static ALLOC: uk_failalloc::FailAlloc = uk_failalloc::FailAlloc;

/// Makes `share` (out of 1000) of b's deliveries run with allocation `Nth`
/// failing (`From` when `exhausted`); counts the failures it caused.
fn fail_some_of_b(sim: &mut Sim, seed: u64, share: u64, exhausted: bool) -> Rc<Cell<u64>> {
    let failed = Rc::new(Cell::new(0));
    let f = failed.clone();
    let mut rng = Rng(seed);
    sim.wrap_b = Some(Box::new(move |deliver: &mut dyn FnMut()| {
        if rng.below(1000) < share {
            let plan = if exhausted {
                Plan::From(0)
            } else {
                Plan::Nth(rng.below(3))
            };
            let ((), rep) = inject(plan, deliver);
            f.set(f.get() + rep.failed);
        } else {
            deliver();
        }
    }));
    failed
}

/// Makes `share` (out of 1000) of a's deliveries and polls (where its
/// segments are built and queued: fragment lists, the output list, the
/// caller's list) run with allocations failing; counts the failures.
fn fail_some_of_a(sim: &mut Sim, seed: u64, share: u64, exhausted: bool) -> Rc<Cell<u64>> {
    let failed = Rc::new(Cell::new(0));
    let f = failed.clone();
    let mut rng = Rng(seed);
    sim.wrap_a = Some(Box::new(move |run: &mut dyn FnMut()| {
        if rng.below(1000) < share {
            let plan = if exhausted {
                Plan::From(0)
            } else {
                Plan::Nth(rng.below(4))
            };
            let ((), rep) = inject(plan, run);
            f.set(f.get() + rep.failed);
        } else {
            run();
        }
    }));
    failed
}

/// Sends `total` bytes a -> b over a reordering link, reading and checking
/// them at b; returns b's connection statistics.
fn transfer(sim: &mut Sim, c: uk_tcp::ConnId, s: uk_tcp::ConnId, total: u64) {
    let mut sent = 0u64;
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let ok = sim.run_until(120_000_000, |sim| {
        while sent < total && sim.a.send_capacity(c) > 0 {
            let n = (16 * 1024).min((total - sent) as usize);
            sim.a.send(sim.now, c, pattern_chunk(0, sent, n)).unwrap();
            sent += n as u64;
        }
        loop {
            match sim.b.recv(sim.now, s, &mut buf) {
                Ok(0) | Err(Error::WouldBlock) => break,
                Ok(n) => {
                    for (i, &b) in buf[..n].iter().enumerate() {
                        assert_eq!(b, pattern(0, got + i as u64), "byte {}", got + i as u64);
                    }
                    got += n as u64;
                }
                Err(e) => panic!("recv: {e:?}"),
            }
        }
        got == total
    });
    assert!(
        ok,
        "stalled at {got} of {total}: a {:?} {:?} deadline {:?}, b {:?} deadline {:?}, in flight {}",
        sim.a.state(c),
        sim.a.get(c).map(|x| x.stats()),
        sim.a.next_deadline(),
        sim.b.get(s).map(|x| x.stats()),
        sim.b.next_deadline(),
        sim.in_flight()
    );
}

fn reordering() -> LinkModel {
    LinkModel {
        reorder: 0.05,
        reorder_us: 3000,
        ..LinkModel::perfect()
    }
}

/// A fifth of the receiver's deliveries fail one of their first
/// allocations (the in-order queue's chunk, the out-of-order copy or its
/// slot, a SACK range): those segments are dropped and counted, the sender
/// retransmits, and every byte arrives in order.
#[test]
fn receiver_allocation_failures_drop_segments_not_the_connection() {
    let mut sim = Sim::new(reordering(), 7, config(), config());
    let (c, s) = sim.connect();
    let failed = fail_some_of_b(&mut sim, 11, 200, false);
    transfer(&mut sim, c, s, 2 << 20);
    let st = sim.b.get(s).unwrap().stats();
    assert!(failed.get() > 50, "few failures injected: {}", failed.get());
    assert!(st.alloc_drops > 10, "drops counted: {st:?}");
    assert_eq!(sim.b.state(s), Some(State::Established));
    let a = sim.a.get(c).unwrap().stats();
    assert!(a.retransmits > 0, "the dropped segments were sent again");
}

/// The sender's output under allocation failure: building a segment's
/// fragment list, queueing it, handing the polled segments over. A failed
/// allocation costs a segment (as if lost: the retransmission timers and
/// fast retransmit send it again), never the connection or a byte.
#[test]
fn sender_allocation_failures_lose_segments_not_bytes() {
    let mut sim = Sim::new(reordering(), 21, config(), config());
    let (c, s) = sim.connect();
    let failed = fail_some_of_a(&mut sim, 13, 200, false);
    transfer(&mut sim, c, s, 2 << 20);
    let ep = sim.a.stats().counters;
    let st = sim.a.get(c).unwrap().stats();
    assert!(failed.get() > 50, "few failures injected: {}", failed.get());
    assert!(
        st.alloc_drops + ep.alloc_drops > 10,
        "drops counted: {st:?} {ep:?}"
    );
    assert!(st.retransmits > 0, "the lost segments were sent again");
    assert_eq!(sim.a.state(c), Some(State::Established));
}

/// Bursts of exhausted memory on the sending side, with the timers firing
/// inside them: the transfer completes byte-exact.
#[test]
fn sender_survives_exhausted_memory_bursts() {
    let mut sim = Sim::new(reordering(), 4, config(), config());
    let (c, s) = sim.connect();
    let failed = fail_some_of_a(&mut sim, 9, 100, true);
    transfer(&mut sim, c, s, 1 << 20);
    assert!(failed.get() > 0);
}

/// Some deliveries find memory exhausted altogether (every allocation
/// fails while they run); the connection rides it out.
#[test]
fn receiver_survives_exhausted_memory_bursts() {
    let mut sim = Sim::new(reordering(), 3, config(), config());
    let (c, s) = sim.connect();
    let failed = fail_some_of_b(&mut sim, 5, 100, true);
    transfer(&mut sim, c, s, 1 << 20);
    assert!(failed.get() > 0);
    assert!(sim.b.get(s).unwrap().stats().alloc_drops > 0);
}

/// A SYN that arrives while memory is exhausted is dropped (counted as an
/// allocation refusal) without touching the connection already open; the
/// client's retransmitted SYN gets in once memory is back.
#[test]
fn syn_without_memory_is_refused_and_the_retry_gets_in() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c0, s0) = sim.connect();
    let before = sim.b.stats();
    let failed = fail_some_of_b(&mut sim, 1, 1000, true);
    let c = sim
        .a
        .connect(sim.now, A_IP, SocketAddr::new(B_IP, PORT))
        .unwrap();
    sim.advance(500_000);
    assert!(failed.get() > 0);
    assert_eq!(
        sim.a.state(c),
        Some(State::SynSent),
        "SYN dropped, client retries"
    );
    let after = sim.b.stats();
    assert!(after.counters.alloc_refusals >= 1, "{:?}", after.counters);
    assert_eq!(
        after.by_state[State::Established as usize].count,
        before.by_state[State::Established as usize].count,
        "no connection half-made"
    );
    assert_eq!(sim.b.accept(PORT), None);
    // Memory comes back: the retry is accepted, and the old connection
    // still carries data.
    sim.wrap_b = None;
    let mut s = None;
    assert!(sim.run_until(10_000_000, |sim| {
        s = s.or_else(|| sim.b.accept(PORT));
        s.is_some() && sim.a.state(c) == Some(State::Established)
    }));
    transfer(&mut sim, c0, s0, 64 * 1024);
}

/// The client side: `connect` without memory for the connection is an
/// error (ENOBUFS upstream), and the endpoint is unchanged.
#[test]
fn connect_without_memory_is_an_error() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let _ = sim.b.listen(SocketAddr::new(B_IP, PORT), 16);
    let now = sim.now;
    let (r, rep) = inject(Plan::From(0), || {
        sim.a.connect(now, A_IP, SocketAddr::new(B_IP, PORT))
    });
    assert_eq!(r, Err(Error::NoMemory));
    assert!(rep.failed >= 1);
    assert_eq!(
        sim.a
            .stats()
            .by_state
            .iter()
            .map(|s| s.count)
            .sum::<usize>(),
        0
    );
    let (c, _s) = sim.connect();
    assert_eq!(sim.a.state(c), Some(State::Established));
}

/// A TIME-WAIT table that cannot grow drops the new record (counted)
/// instead of panicking, keeps the ones it has, and grows again once memory
/// is back. (A 2M httpd guest under `Connection: close` churn panicked here
/// when the table wanted its 512-bucket allocation.)
#[test]
fn time_wait_table_without_memory_drops_the_record() {
    use std::net::{IpAddr, Ipv4Addr};
    use uk_tcp::hash::KeyedState;
    use uk_tcp::seq::Seq;
    use uk_tcp::timewait::{TimeWaitRecord, TimeWaitTable};
    use uk_tcp::wire::FourTuple;
    let rec = |port: u16| TimeWaitRecord {
        tuple: FourTuple {
            local_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            remote_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            local_port: 80,
            remote_port: port,
        },
        snd_nxt: Seq(1),
        rcv_nxt: Seq(2),
        ts_recent: None,
        expiry: 1_000,
    };
    let mut t = TimeWaitTable::new(1000, KeyedState::new([3; 16]));
    let mut port = 1000;
    for _ in 0..28 {
        t.insert(rec(port));
        port += 1;
    }
    let held = t.len();
    let mut dropped = 0;
    for _ in 0..64 {
        let ((), rep) = inject(Plan::From(0), || t.insert(rec(port)));
        port += 1;
        if rep.failed > 0 {
            dropped += 1;
        }
    }
    assert!(dropped > 0, "the table never needed to grow");
    assert_eq!(t.dropped(), dropped);
    assert_eq!(t.len(), held + 64 - dropped as usize, "kept records lost");
    t.insert(rec(port));
    assert_eq!(t.len(), held + 65 - dropped as usize);
}
