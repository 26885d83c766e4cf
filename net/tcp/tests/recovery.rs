//! Loss recovery: SACK, NewReno, retransmission timeout.

mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::*;
use uk_tcp::{Config, Error};

/// Sends `total` bytes a->b and reads them at b; returns the sim.
fn transfer(mut sim: Sim, total: usize) -> (Sim, uk_tcp::ConnId, uk_tcp::ConnId) {
    let (c, s) = sim.connect();
    sim.a.send(sim.now, c, pattern_chunk(0, 0, total)).unwrap();
    let mut got = 0;
    let mut buf = vec![0; 1 << 16];
    let ok = sim.run_until(120_000_000, |sim| {
        loop {
            match sim.b.recv(sim.now, s, &mut buf) {
                Ok(n) if n > 0 => {
                    for (i, &b) in buf[..n].iter().enumerate() {
                        assert_eq!(b, pattern(0, (got + i) as u64));
                    }
                    got += n;
                }
                Ok(_) | Err(Error::WouldBlock) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        got == total && sim.a.get(c).unwrap().send_queued() == 0
    });
    assert!(ok, "got {got} of {total}");
    (sim, c, s)
}

/// Drops the data frames a->b whose sequence offsets are listed, once each.
fn drop_frames(sim: &mut Sim, nth: &[u64]) -> Rc<Cell<u64>> {
    let count = Rc::new(Cell::new(0));
    let seen = count.clone();
    let nth = nth.to_vec();
    sim.filter = Some(Box::new(move |_, to_b, _h, len| {
        if !to_b || len == 0 {
            return true;
        }
        seen.set(seen.get() + 1);
        !nth.contains(&seen.get())
    }));
    count
}

#[test]
fn sack_retransmits_only_the_lost_segment() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    drop_frames(&mut sim, &[30]);
    let (sim, c, _) = transfer(sim, 200 * 1448);
    let st = sim.a.get(c).unwrap().stats();
    assert_eq!(st.fast_retransmits, 1, "{st:?}");
    assert_eq!(st.timeouts, 0, "{st:?}");
    assert_eq!(
        (st.retransmits, st.bytes_retransmitted),
        (1, 1448),
        "only the hole: {st:?}"
    );
}

#[test]
fn sack_repairs_several_holes_in_one_recovery() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    drop_frames(&mut sim, &[30, 33, 37]);
    let (sim, c, _) = transfer(sim, 200 * 1448);
    let st = sim.a.get(c).unwrap().stats();
    assert_eq!(st.fast_retransmits, 1, "{st:?}");
    assert_eq!(st.timeouts, 0, "{st:?}");
    assert_eq!(
        (st.retransmits, st.bytes_retransmitted),
        (3, 3 * 1448),
        "{st:?}"
    );
}

#[test]
fn newreno_without_sack_recovers_from_two_losses() {
    let cfg = Config {
        sack: false,
        ..config()
    };
    let mut sim = Sim::new(LinkModel::perfect(), 1, cfg.clone(), cfg);
    drop_frames(&mut sim, &[30, 35]);
    let (sim, c, _) = transfer(sim, 200 * 1448);
    let st = sim.a.get(c).unwrap().stats();
    assert_eq!(
        st.fast_retransmits, 1,
        "one recovery episode (RFC 6582): {st:?}"
    );
    assert_eq!(
        st.timeouts, 0,
        "partial ACK retransmits the second hole: {st:?}"
    );
    assert_eq!(st.retransmits, 2, "{st:?}");
}

#[test]
fn rto_backs_off_exponentially_and_recovers() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, s) = sim.connect();
    let times = Rc::new(std::cell::RefCell::new(Vec::new()));
    let t = times.clone();
    // The link a->b goes dark for data.
    let dark = Rc::new(Cell::new(true));
    let d = dark.clone();
    sim.filter = Some(Box::new(move |now, to_b, _h, len| {
        if to_b && len > 0 && d.get() {
            t.borrow_mut().push(now);
            return false;
        }
        true
    }));
    sim.a.send(sim.now, c, pattern_chunk(0, 0, 1000)).unwrap();
    sim.run_until(7_000_000, |_| false);
    let times = times.borrow().clone();
    let gaps: Vec<u64> = times.windows(2).map(|w| (w[1] - w[0]) / 1000).collect();
    // RTO starts at its 200 ms floor (RTT is 4 ms here), then doubles.
    assert_eq!(gaps[..4], [200, 400, 800, 1600], "{gaps:?}");
    let st = sim.a.get(c).unwrap().stats();
    assert_eq!(st.timeouts as usize, times.len() - 1);
    assert_eq!(
        sim.a.get(c).unwrap().cc_info().1,
        sim.a.get(c).unwrap().mss(),
        "cwnd = 1 MSS"
    );
    dark.set(false);
    let mut buf = [0; 2000];
    sim.run_until(10_000_000, |sim| {
        sim.b.get(s).unwrap().recv_queued() == 1000
    });
    assert_eq!(sim.b.recv(sim.now, s, &mut buf), Ok(1000));
    sim.run_until(1_000_000, |sim| sim.a.get(c).unwrap().send_queued() == 0);
    assert_eq!(sim.a.get(c).unwrap().send_queued(), 0);
}

#[test]
fn too_many_timeouts_drop_the_connection() {
    let cfg = Config {
        max_retries: 3,
        ..config()
    };
    let mut sim = Sim::new(LinkModel::perfect(), 1, cfg, config());
    let (c, _s) = sim.connect();
    sim.filter = Some(Box::new(|_, to_b, _, _| !to_b));
    sim.a.send(sim.now, c, pattern_chunk(0, 0, 1000)).unwrap();
    sim.run_until(100_000_000, |sim| {
        sim.a.state(c) == Some(uk_tcp::State::Closed)
    });
    assert_eq!(sim.a.error(c), Some(Error::TimedOut));
    assert_eq!(
        sim.a.send(sim.now, c, pattern_chunk(0, 0, 1)),
        Err(Error::TimedOut)
    );
}

/// The retransmission of a hole is lost too: the timeout resends the hole
/// alone, not the SACKed data behind it.
#[test]
fn timeout_keeps_sack_information() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let mut hole = None;
    let mut drops = 0;
    sim.filter = Some(Box::new(move |_, to_b, h, len| {
        if !to_b || len == 0 {
            return true;
        }
        if hole.is_none() {
            drops += 1;
            if drops == 5 {
                hole = Some(h.seq);
                return false;
            }
        } else if hole == Some(h.seq) && drops < 6 {
            drops += 1;
            return false; // the fast retransmission
        }
        true
    }));
    let (sim, c, _) = transfer(sim, 20 * 1448);
    let st = sim.a.get(c).unwrap().stats();
    assert_eq!((st.fast_retransmits, st.timeouts), (1, 1), "{st:?}");
    assert_eq!(st.bytes_retransmitted, 2 * 1448, "{st:?}");
}
