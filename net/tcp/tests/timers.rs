//! Timers and options: zero-window probes, keep-alive, delayed ACK, Nagle,
//! window scaling, timestamps.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use common::*;
use uk_tcp::{Config, Error, Keepalive, State};

fn read_all(sim: &mut Sim, id: uk_tcp::ConnId, server: bool) -> usize {
    let mut buf = vec![0; 1 << 16];
    let mut n = 0;
    loop {
        let ep = if server { &mut sim.b } else { &mut sim.a };
        match ep.recv(sim.now, id, &mut buf) {
            Ok(0) | Err(Error::WouldBlock) => return n,
            Ok(k) => n += k,
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[test]
fn zero_window_probes_until_the_reader_drains() {
    let small = Config {
        recv_window: 16 * 1024,
        ..config()
    };
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), small);
    let (c, s) = sim.connect();
    let total = 64 * 1024;
    sim.a.send(sim.now, c, pattern_chunk(0, 0, total)).unwrap();
    // Nobody reads at b: its window closes after 16 KiB.
    sim.advance(10_000_000);
    assert_eq!(sim.b.get(s).unwrap().recv_queued(), 16 * 1024);
    let probes = sim.a.get(c).unwrap().stats().window_probes;
    // Probes back off: 200 ms, 400 ms, ... within 10 s that is about 5.
    assert!((3..=7).contains(&probes), "{probes} probes");
    assert_eq!(
        sim.a.state(c),
        Some(State::Established),
        "probing never gives up"
    );

    // The reader drains, but its window update is lost: the next probe
    // learns about the open window.
    let lose_update = Rc::new(Cell::new(true));
    let l = lose_update.clone();
    sim.filter = Some(Box::new(move |_, to_b, h, len| {
        if !to_b && len == 0 && h.window > 0 && l.get() {
            l.set(false);
            return false;
        }
        true
    }));
    let mut got = read_all(&mut sim, s, true);
    sim.flush();
    assert!(!lose_update.get(), "the window update was sent (and lost)");
    assert!(sim.run_until(60_000_000, |sim| {
        got += read_all(sim, s, true);
        got == total
    }));
    assert!(sim.a.get(c).unwrap().stats().window_probes > probes);
}

#[test]
fn keepalive_probes_an_idle_peer_and_drops_a_dead_one() {
    let ka = Keepalive {
        idle: 10_000_000,
        interval: 1_000_000,
        probes: 3,
    };
    let cfg = Config {
        keepalive: Some(ka),
        ..config()
    };
    let mut sim = Sim::new(LinkModel::perfect(), 1, cfg, config());
    let (c, _s) = sim.connect();
    sim.advance(35_000_000);
    let st = sim.a.get(c).unwrap().stats();
    assert_eq!(
        st.keepalives, 3,
        "one probe per idle period, each answered: {st:?}"
    );
    assert_eq!(sim.a.state(c), Some(State::Established));

    // The peer disappears: 3 unanswered probes, 1 s apart, then the end.
    sim.filter = Some(Box::new(|_, to_b, _, _| to_b));
    let t0 = sim.now;
    sim.run_until(60_000_000, |sim| sim.a.state(c) == Some(State::Closed));
    assert_eq!(sim.a.error(c), Some(Error::TimedOut));
    assert!(sim.now - t0 <= 10_000_000 + 4 * 1_000_000);
}

#[test]
fn delayed_ack_waits_40ms_or_two_segments() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, s) = sim.connect();
    let acks = Rc::new(RefCell::new(Vec::new()));
    let a2 = acks.clone();
    sim.filter = Some(Box::new(move |now, to_b, _, len| {
        if !to_b && len == 0 {
            a2.borrow_mut().push(now);
        }
        true
    }));
    let t0 = sim.now;
    sim.a.send(sim.now, c, pattern_chunk(0, 0, 100)).unwrap();
    sim.run_until(1_000_000, |sim| sim.a.get(c).unwrap().send_queued() == 0);
    let first = acks.borrow()[0];
    // 1 ms one way + 40 ms delay.
    assert_eq!((first - t0) / 1000, 41, "one small segment: delayed ACK");

    acks.borrow_mut().clear();
    let t1 = sim.now;
    sim.a
        .send(sim.now, c, pattern_chunk(0, 0, 2 * 1448))
        .unwrap();
    sim.run_until(1_000_000, |sim| sim.a.get(c).unwrap().send_queued() == 0);
    let first = acks.borrow()[0];
    assert!((first - t1) / 1000 < 5, "two full segments: ACK at once");
    assert_eq!(read_all(&mut sim, s, true), 100 + 2 * 1448);
}

#[test]
fn nodelay_by_default_and_nagle_when_asked() {
    for nodelay in [true, false] {
        let cfg = Config {
            nodelay,
            ..config()
        };
        let mut sim = Sim::new(LinkModel::perfect(), 1, cfg, config());
        let (c, _s) = sim.connect();
        let before = sim.a.get(c).unwrap().stats().segments_sent;
        for i in 0..10 {
            sim.a
                .send(sim.now, c, pattern_chunk(0, i * 10, 10))
                .unwrap();
        }
        let sent = sim.a.get(c).unwrap().stats().segments_sent - before;
        // Nagle holds small writes while one is unacknowledged.
        assert_eq!(sent, if nodelay { 10 } else { 1 }, "nodelay {nodelay}");
        sim.run_until(1_000_000, |sim| sim.a.get(c).unwrap().send_queued() == 0);
        let sent = sim.a.get(c).unwrap().stats().segments_sent - before;
        assert_eq!(sent, if nodelay { 10 } else { 2 });
    }
}

/// With a 10 ms RTT, a 64 KiB window caps throughput at 6.5 MB/s; with
/// window scaling and a 1 MiB window the link (125 MB/s) is the limit.
#[test]
fn window_scaling_opens_the_window_beyond_64k() {
    let run = |scaling: bool| {
        let cfg = Config {
            recv_window: 1 << 20,
            window_scaling: scaling,
            ..config()
        };
        let model = LinkModel {
            latency_us: 5_000,
            ..LinkModel::perfect()
        };
        let mut sim = Sim::new(model, 1, cfg.clone(), cfg);
        let (c, s) = sim.connect();
        let total = 8 << 20;
        sim.a.send(sim.now, c, pattern_chunk(0, 0, total)).unwrap();
        let t0 = sim.now;
        let mut got = 0;
        assert!(sim.run_until(100_000_000, |sim| {
            got += read_all(sim, s, true);
            got == total
        }));
        sim.now - t0
    };
    let (with, without) = (run(true), run(false));
    assert!(with < 400_000, "{with} us with scaling");
    assert!(without > 1_200_000, "{without} us without");
}

#[test]
fn timestamps_measure_rtt_and_paws_drops_old_segments() {
    let model = LinkModel {
        latency_us: 10_000,
        ..LinkModel::perfect()
    };
    let mut sim = Sim::new(model, 1, config(), config());
    let (c, s) = sim.connect();
    sim.a
        .send(sim.now, c, pattern_chunk(0, 0, 100_000))
        .unwrap();
    sim.run_until(2_000_000, |sim| sim.a.get(c).unwrap().send_queued() == 0);
    let srtt = sim.a.get(c).unwrap().cc_info().0.unwrap();
    // 20 ms of propagation, plus serialisation and delayed ACKs.
    assert!((20_000..30_000).contains(&srtt), "srtt {srtt}");

    // Replay b's last segment with an older timestamp: PAWS drops it.
    let mut h = sim.last[1].unwrap();
    let (tsval, tsecr) = h.options.timestamps.unwrap();
    h.options.timestamps = Some((tsval.wrapping_sub(1000), tsecr));
    let before = sim.a.get(c).unwrap().stats().paws_drops;
    sim.inject(false, h, b"old data").unwrap();
    assert_eq!(sim.a.get(c).unwrap().stats().paws_drops, before + 1);
    assert_eq!(sim.a.get(c).unwrap().recv_queued(), 0);
    let _ = s;
}

#[test]
fn keepalive_and_nodelay_per_connection() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, s) = sim.connect();
    let ka = Keepalive {
        idle: 5_000_000,
        interval: 1_000_000,
        probes: 2,
    };
    sim.b.set_keepalive(sim.now, s, Some(ka)).unwrap();
    sim.advance(12_000_000);
    assert_eq!(sim.b.get(s).unwrap().stats().keepalives, 2);
    assert_eq!(sim.a.get(c).unwrap().stats().keepalives, 0);
    sim.b.set_keepalive(sim.now, s, None).unwrap();
    sim.advance(12_000_000);
    assert_eq!(sim.b.get(s).unwrap().stats().keepalives, 2);

    sim.a.set_nodelay(sim.now, c, false).unwrap();
    let before = sim.a.get(c).unwrap().stats().segments_sent;
    for i in 0..5 {
        sim.a
            .send(sim.now, c, pattern_chunk(0, i * 10, 10))
            .unwrap();
    }
    assert_eq!(sim.a.get(c).unwrap().stats().segments_sent - before, 1);
}
