//! Bulk transfer through the simulated link.

mod common;

use common::*;
use uk_tcp::{Config, ConnId, Error, State};

/// Moves `total` bytes each way at once; returns the virtual time taken.
fn both_ways(model: LinkModel, seed: u64, total: u64) -> u64 {
    both_ways_with(model, seed, total, config())
}

fn both_ways_with(model: LinkModel, seed: u64, total: u64, cfg: Config) -> u64 {
    let mut sim = Sim::new(model, seed, cfg.clone(), cfg);
    let (c, s) = sim.connect();
    let start = sim.now;
    let ids = [c, s];
    let mut sent = [0u64; 2];
    let mut got = [0u64; 2];
    let mut buf = vec![0u8; 256 * 1024];
    let chunk = 64 * 1024;
    let mut closed = [false; 2];
    let ok = sim.run_until(600_000_000, |sim| {
        for side in 0..2 {
            let (ep, id) = if side == 0 {
                (&mut sim.a, ids[0])
            } else {
                (&mut sim.b, ids[1])
            };
            // Feed the sender as capacity allows (references, not copies).
            while sent[side] < total && ep.send_capacity(id) > 0 {
                let n = chunk.min((total - sent[side]) as usize);
                ep.send(sim.now, id, pattern_chunk(side as u64, sent[side], n))
                    .unwrap();
                sent[side] += n as u64;
            }
            if sent[side] == total && !closed[side] {
                ep.shutdown(sim.now, id).unwrap();
                closed[side] = true;
            }
            // Drain and verify what arrived from the other side.
            loop {
                match ep.recv(sim.now, id, &mut buf) {
                    Ok(0) | Err(Error::WouldBlock) => break,
                    Ok(n) => {
                        let other = 1 - side as u64;
                        for (i, &b) in buf[..n].iter().enumerate() {
                            assert_eq!(
                                b,
                                pattern(other, got[side] + i as u64),
                                "byte {}",
                                got[side] + i as u64
                            );
                        }
                        got[side] += n as u64;
                    }
                    Err(e) => panic!("recv: {e:?}"),
                }
            }
        }
        got == [total, total]
    });
    assert!(
        ok,
        "stalled: got {got:?} of {total} at {} us",
        sim.now - start
    );
    let t = sim.now - start;
    eprintln!(
        "{} MiB each way: {} ms virtual, frames {:?}, dropped {:?}\n a {:?}\n b {:?}",
        total >> 20,
        t / 1000,
        sim.frames,
        sim.dropped,
        sim.a.get(c).map(|c| (c.stats(), c.cc_info())),
        sim.b.get(s).map(|c| (c.stats(), c.cc_info())),
    );
    // Both closed: the connections finish their close handshake.
    let done = |st: Option<State>| matches!(st, Some(State::TimeWait | State::Closed));
    assert!(
        sim.run_until(600_000_000, |sim| done(sim.a.state(c))
            && done(sim.b.state(s))),
        "close handshake: {:?} {:?}",
        sim.a.state(c),
        sim.b.state(s)
    );
    assert_eq!((sim.a.error(c), sim.b.error(s)), (None, None));
    // Every received byte was copied into the socket once: out-of-order
    // data moves into the in-order queue without another copy (only the
    // rare partial overlap, or pieces under 512 bytes, are copied again).
    let copied = sim.b.stats().counters.bytes_copied_in;
    assert!(
        copied >= total && copied <= total + total / 100 + 4096,
        "{copied} for {total}"
    );
    assert_eq!(sim.b.stats().counters.bytes_copied_out, total);
    sim.now - start
}

fn lossy() -> LinkModel {
    LinkModel {
        bytes_per_us: 125,
        latency_us: 2_000,
        loss: 0.002,
        dup: 0.002,
        reorder: 0.01,
        reorder_us: 500,
        queue_bytes: 512 * 1024,
    }
}

#[test]
fn four_mib_both_ways_perfect_link() {
    let t = both_ways(LinkModel::perfect(), 1, 4 << 20);
    assert!(t < 2_000_000, "took {t} us");
}

#[test]
fn four_mib_both_ways_lossy_link() {
    both_ways(lossy(), 2, 4 << 20);
}

/// The acceptance test: 64 MiB byte-exact in both directions at once, with
/// loss, duplication, reordering and a bandwidth/latency model.
#[test]
fn sixty_four_mib_both_ways_lossy_link() {
    both_ways(lossy(), 3, 64 << 20);
}

/// Every option turned off in turn (and Nagle on, and no TSO) over the
/// lossy link: each combination still moves the data byte-exact.
#[test]
fn one_mib_both_ways_lossy_link_option_combinations() {
    let base = config();
    let variants = [
        Config {
            sack: false,
            ..base.clone()
        },
        Config {
            timestamps: false,
            ..base.clone()
        },
        Config {
            window_scaling: false,
            ..base.clone()
        },
        Config {
            sack: false,
            timestamps: false,
            window_scaling: false,
            ..base.clone()
        },
        Config {
            nodelay: false,
            ..base.clone()
        },
        Config {
            max_segment: 1460,
            ..base.clone()
        },
        Config {
            delayed_ack: 0,
            recv_window: 8 * 1024,
            ..base.clone()
        },
    ];
    for (i, cfg) in variants.into_iter().enumerate() {
        both_ways_with(lossy(), 10 + i as u64, 1 << 20, cfg);
    }
}

/// 300 seeds: random impairments (up to 5% loss, reordering, duplication,
/// small queues), random option sets, random sizes. Every transfer
/// completes byte-exact.
#[test]
fn randomized_links_and_options() {
    let mut rng = Rng(2026);
    for seed in 0..300 {
        let model = LinkModel {
            bytes_per_us: 1 + rng.below(200),
            latency_us: 100 + rng.below(20_000),
            loss: rng.below(50) as f64 / 1000.0,
            dup: rng.below(20) as f64 / 1000.0,
            reorder: rng.below(50) as f64 / 1000.0,
            reorder_us: rng.below(5_000),
            queue_bytes: 16 * 1024 + rng.below(1 << 20),
        };
        let cfg = Config {
            sack: rng.chance(0.7),
            timestamps: rng.chance(0.7),
            window_scaling: rng.chance(0.7),
            nodelay: rng.chance(0.7),
            max_segment: if rng.chance(0.5) { 1460 } else { 65_160 },
            recv_window: 4096 + rng.below(1 << 20) as u32,
            delayed_ack: rng.below(100_000),
            ..config()
        };
        let total = 1 + rng.below(300_000);
        both_ways_with(model.clone(), seed, total, cfg.clone());
    }
}

/// A link with 20 ms latency and `conns` connections from a to b, a's
/// transmit budget `limit` bytes (given back as its segments go on the
/// wire).
fn budget_sim(limit: usize, seed: u64, conns: usize) -> (Sim, Vec<(ConnId, ConnId)>) {
    let cfg_a = Config {
        tx_queue_limit: limit,
        ..config()
    };
    let model = LinkModel {
        latency_us: 20_000,
        ..LinkModel::perfect()
    };
    let mut sim = Sim::new(model, seed, cfg_a, config());
    sim.release_a = true;
    let ids = (0..conns).map(|_| sim.connect()).collect();
    (sim, ids)
}

/// Feeds stream `k` into `c` as room allows, up to `total` bytes (`sent`
/// so far), and reads what arrived on `s`, checking every byte (`got`).
fn pump(
    sim: &mut Sim,
    k: usize,
    (c, s): (ConnId, ConnId),
    total: u64,
    (sent, got): (&mut u64, &mut u64),
    buf: &mut [u8],
) {
    while *sent < total && sim.a.send_capacity(c) > 0 {
        let n = (256 * 1024).min((total - *sent) as usize);
        sim.a
            .send(sim.now, c, pattern_chunk(k as u64, *sent, n))
            .unwrap();
        *sent += n as u64;
    }
    loop {
        match sim.b.recv(sim.now, s, buf) {
            Ok(0) | Err(Error::WouldBlock) => break,
            Ok(n) => {
                for (i, &b) in buf[..n].iter().enumerate() {
                    assert_eq!(b, pattern(k as u64, *got + i as u64));
                }
                *got += n as u64;
            }
            Err(e) => panic!("recv: {e:?}"),
        }
    }
}

/// With a transmit budget (`tx_queue_limit`) far below what 16 senders'
/// congestion windows allow at once, a poll never hands out more than the
/// budget and one segment, every stream arrives whole, and the senders
/// take turns: when the first finishes, every other has sent most of its
/// stream. (Without the budget the second round's first poll hands out
/// every window at once.)
#[test]
fn senders_take_turns_within_the_transmit_budget() {
    const CONNS: usize = 16;
    const LIMIT: usize = 256 * 1024;
    let (mut sim, ids) = budget_sim(LIMIT, 7, CONNS);
    let mut sent = [0u64; CONNS];
    let mut got = [0u64; CONNS];
    let mut buf = vec![0u8; 256 * 1024];
    // Round 1 opens the windows; round 2 starts every stream at once.
    for (round, total) in [(0, 1u64 << 20), (1, 3 << 20)] {
        let mut first_done: Option<[u64; CONNS]> = None;
        let base = got;
        let ok = sim.run_until(600_000_000, |sim| {
            for (k, &pair) in ids.iter().enumerate() {
                pump(sim, k, pair, total, (&mut sent[k], &mut got[k]), &mut buf);
            }
            if first_done.is_none() && got.contains(&total) {
                first_done = Some(got);
            }
            got.iter().all(|&g| g == total)
        });
        assert!(ok, "round {round} stalled: {got:?}");
        let at_first = first_done.unwrap();
        let half = (total - base[0]) / 2;
        assert!(
            at_first.iter().zip(base).all(|(&g, b)| g - b >= half),
            "round {round} unfair: {at_first:?}"
        );
    }
    let max = uk_tcp::Config::default().max_segment as usize;
    assert!(
        sim.max_batch_a <= LIMIT + max,
        "a poll handed out {} bytes",
        sim.max_batch_a
    );
    let retransmits: u64 = ids
        .iter()
        .filter_map(|&(c, _)| sim.a.get(c).map(|c| c.stats().retransmits))
        .sum();
    assert_eq!(retransmits, 0);
}

/// Connections reset while they wait for a turn at the transmit budget
/// leave the waiting list: the others still take turns and finish whole,
/// and the endpoint does not report work it cannot do (no poll due at once
/// once everything is acknowledged).
#[test]
fn resets_while_waiting_for_the_transmit_budget_stall_nobody() {
    const CONNS: usize = 12;
    const TOTAL: u64 = 1 << 20;
    let (mut sim, ids) = budget_sim(128 * 1024, 11, CONNS);
    let mut sent = [0u64; CONNS];
    let mut got = [0u64; CONNS];
    let mut buf = vec![0u8; 256 * 1024];
    let mut aborted = false;
    let live = |k: usize| !k.is_multiple_of(3);
    let ok = sim.run_until(600_000_000, |sim| {
        for (k, &pair) in ids.iter().enumerate() {
            if aborted && !live(k) {
                continue;
            }
            pump(sim, k, pair, TOTAL, (&mut sent[k], &mut got[k]), &mut buf);
        }
        // A quarter of the way in, a third of the senders reset.
        if !aborted && got.iter().sum::<u64>() >= CONNS as u64 * TOTAL / 4 {
            aborted = true;
            for (k, &(c, _)) in ids.iter().enumerate() {
                if !live(k) {
                    sim.a.abort(sim.now, c);
                }
            }
        }
        aborted && (0..CONNS).filter(|&k| live(k)).all(|k| got[k] == TOTAL)
    });
    assert!(ok, "stalled: {got:?}");
    sim.advance(5_000_000);
    assert_ne!(sim.a.next_deadline(), Some(0), "work reported forever");
}
