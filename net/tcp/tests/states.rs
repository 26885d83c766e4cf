//! Every state transition of RFC 9293's state diagram, observed one event
//! at a time over a lossless link.

mod common;

use std::net::SocketAddr;

use common::*;
use uk_tcp::{Config, Error, State};

/// Steps the simulation, recording each new state of `get` (deduplicated).
fn trace(sim: &mut Sim, steps: usize, mut get: impl FnMut(&Sim) -> Vec<State>) -> Vec<Vec<State>> {
    let mut seen = vec![get(sim)];
    for _ in 0..steps {
        // Only while segments are on the wire: timers (FIN-WAIT-2,
        // TIME-WAIT) are not part of these traces.
        sim.flush();
        if sim.in_flight() == 0 || !sim.step() {
            break;
        }
        let s = get(sim);
        if seen.last() != Some(&s) {
            seen.push(s);
        }
    }
    seen
}

fn count(sim: &Sim, server: bool, st: State) -> usize {
    let ep = if server { &sim.b } else { &sim.a };
    ep.stats().state(st).count
}

#[test]
fn three_way_handshake_active_and_passive() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    sim.b.listen(SocketAddr::new(B_IP, PORT), 8).unwrap();
    assert_eq!(sim.b.stats().state(State::Listen).count, 1);
    let c = sim
        .a
        .connect(sim.now, A_IP, SocketAddr::new(B_IP, PORT))
        .unwrap();
    assert_eq!(sim.a.state(c), Some(State::SynSent));
    let t = trace(&mut sim, 10, |sim| {
        vec![
            sim.a.state(c).unwrap(),
            if count(sim, true, State::SynReceived) == 1 {
                State::SynReceived
            } else if count(sim, true, State::Established) == 1 {
                State::Established
            } else {
                State::Listen
            },
        ]
    });
    assert_eq!(
        t,
        [
            [State::SynSent, State::Listen],
            [State::SynSent, State::SynReceived],
            [State::Established, State::SynReceived],
            [State::Established, State::Established],
        ]
    );
    let s = sim.b.accept(PORT).expect("accept queue");
    assert_eq!(sim.b.state(s), Some(State::Established));
    // Options were negotiated on both sides.
    assert_eq!(sim.a.get(c).unwrap().mss(), 1460 - 12);
}

#[test]
fn active_close_passes_fin_wait_and_time_wait() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, s) = sim.connect();
    sim.a.shutdown(sim.now, c).unwrap();
    assert_eq!(sim.a.state(c), Some(State::FinWait1));
    let t = trace(&mut sim, 10, |sim| {
        vec![sim.a.state(c).unwrap(), sim.b.state(s).unwrap()]
    });
    assert_eq!(
        t,
        [
            [State::FinWait1, State::Established],
            [State::FinWait1, State::CloseWait],
            [State::FinWait2, State::CloseWait],
        ]
    );
    assert_eq!(sim.b.recv(sim.now, s, &mut [0; 8]), Ok(0), "end of stream");
    sim.b.shutdown(sim.now, s).unwrap();
    assert_eq!(sim.b.state(s), Some(State::LastAck));
    let t = trace(&mut sim, 10, |sim| {
        vec![sim.a.state(c).unwrap(), sim.b.state(s).unwrap()]
    });
    assert_eq!(
        t,
        [
            [State::FinWait2, State::LastAck],
            [State::TimeWait, State::LastAck],
            [State::TimeWait, State::Closed]
        ]
    );
    // The client's TIME-WAIT is a record, not a connection.
    assert_eq!(count(&sim, false, State::TimeWait), 1);
    assert!(sim.a.get(c).is_none());
    sim.advance(Config::default().time_wait + 1);
    assert_eq!(count(&sim, false, State::TimeWait), 0, "record expired");
    assert_eq!(sim.a.error(c), None);
}

#[test]
fn simultaneous_close_passes_closing() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, s) = sim.connect();
    sim.a.shutdown(sim.now, c).unwrap();
    sim.b.shutdown(sim.now, s).unwrap();
    let t = trace(&mut sim, 10, |sim| {
        vec![sim.a.state(c).unwrap(), sim.b.state(s).unwrap()]
    });
    assert_eq!(
        t,
        [
            // The FINs cross: each arrives while its receiver waits for
            // the ACK of its own.
            [State::FinWait1, State::FinWait1],
            [State::Closing, State::Closing],
            [State::TimeWait, State::TimeWait],
        ]
    );
}

#[test]
fn simultaneous_open_passes_syn_received() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (pa, pb) = (SocketAddr::new(A_IP, 5000), SocketAddr::new(B_IP, 6000));
    let c = sim.a.connect_from(sim.now, pa, pb).unwrap();
    let s = sim.b.connect_from(sim.now, pb, pa).unwrap();
    let t = trace(&mut sim, 10, |sim| {
        vec![sim.a.state(c).unwrap(), sim.b.state(s).unwrap()]
    });
    assert_eq!(t.first().unwrap(), &[State::SynSent, State::SynSent]);
    assert!(
        t.contains(&vec![State::SynReceived, State::SynReceived]),
        "{t:?}"
    );
    assert_eq!(t.last().unwrap(), &[State::Established, State::Established]);
    sim.a
        .send(sim.now, c, b"hello"[..].to_vec().into())
        .unwrap();
    sim.run_until(1_000_000, |sim| sim.b.get(s).unwrap().recv_queued() == 5);
}

#[test]
fn passive_close_and_data_after_fin() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, s) = sim.connect();
    // The server closes first; the client may still send in CLOSE-WAIT.
    sim.b.shutdown(sim.now, s).unwrap();
    sim.run_until(1_000_000, |sim| sim.b.state(s) == Some(State::FinWait2));
    assert_eq!(sim.a.state(c), Some(State::CloseWait));
    sim.a.send(sim.now, c, b"late"[..].to_vec().into()).unwrap();
    sim.a.close(sim.now, c);
    sim.run_until(1_000_000, |sim| count(sim, false, State::LastAck) == 0);
    // TIME-WAIT with unread data: still a connection until the data is read.
    assert_eq!(sim.b.state(s), Some(State::TimeWait));
    assert!(sim.b.get(s).is_some());
    let mut buf = [0; 16];
    assert_eq!(sim.b.recv(sim.now, s, &mut buf), Ok(4));
    assert_eq!(&buf[..4], b"late");
    assert!(sim.b.get(s).is_none(), "read: now a TIME-WAIT record");
    assert_eq!(sim.b.stats().state(State::TimeWait).count, 1);
    assert_eq!(sim.b.state(s), Some(State::TimeWait));
    assert_eq!(sim.b.recv(sim.now, s, &mut buf), Ok(0));
    assert!(sim.a.state(c).is_none(), "closed handle is gone");
    assert_eq!(sim.a.stats().state(State::LastAck).count, 0);
}

#[test]
fn refused_connection_and_reset() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let c = sim
        .a
        .connect(sim.now, A_IP, SocketAddr::new(B_IP, 81))
        .unwrap();
    sim.run_until(1_000_000, |sim| sim.a.state(c) == Some(State::Closed));
    assert_eq!(sim.a.error(c), Some(Error::Refused));
    assert_eq!(sim.b.stats().counters.resets_sent, 1);

    let (c, s) = sim.connect();
    sim.a.abort(sim.now, c);
    assert!(sim.a.state(c).is_none());
    sim.run_until(1_000_000, |sim| sim.b.state(s) == Some(State::Closed));
    assert_eq!(sim.b.error(s), Some(Error::Reset));
    assert_eq!(sim.b.recv(sim.now, s, &mut [0; 4]), Err(Error::Reset));
}

#[test]
fn close_with_unread_data_resets() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, s) = sim.connect();
    sim.a
        .send(sim.now, c, b"unread"[..].to_vec().into())
        .unwrap();
    sim.run_until(1_000_000, |sim| sim.b.get(s).unwrap().recv_queued() == 6);
    sim.b.close(sim.now, s);
    sim.run_until(1_000_000, |sim| sim.a.state(c) == Some(State::Closed));
    assert_eq!(sim.a.error(c), Some(Error::Reset));
}

#[test]
fn fin_wait_2_times_out() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, _s) = sim.connect();
    sim.a.shutdown(sim.now, c).unwrap();
    sim.run_until(1_000_000, |sim| sim.a.state(c) == Some(State::FinWait2));
    let t0 = sim.now;
    sim.run_until(100_000_000, |sim| sim.a.state(c) == Some(State::Closed));
    assert_eq!(sim.a.error(c), Some(Error::TimedOut));
    let waited = sim.now - t0;
    assert!((60_000_000..61_000_000).contains(&waited), "{waited}");

    // Orphaned (closed by the application): the shorter timeout.
    let (c, _s) = sim.connect();
    sim.a.close(sim.now, c);
    sim.run_until(1_000_000, |sim| {
        sim.a.stats().state(State::FinWait2).count == 1
    });
    let t0 = sim.now;
    sim.run_until(100_000_000, |sim| {
        sim.a.stats().state(State::FinWait2).count == 0
    });
    let waited = sim.now - t0;
    assert!((10_000_000..11_000_000).contains(&waited), "{waited}");
}

#[test]
fn syn_retries_time_out() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    sim.filter = Some(Box::new(|_, to_b, _, _| !to_b));
    let c = sim
        .a
        .connect(sim.now, A_IP, SocketAddr::new(B_IP, PORT))
        .unwrap();
    let t0 = sim.now;
    sim.run_until(1_000_000_000, |sim| sim.a.state(c) == Some(State::Closed));
    assert_eq!(sim.a.error(c), Some(Error::TimedOut));
    let st = sim.a.stats();
    assert_eq!(st.counters.failed, 1);
    // 1 + 2 + 4 + ... + 32 s of backoff, then 60 s (the RTO cap) after
    // the 6th retry.
    assert!(
        (123_000_000..124_000_000).contains(&(sim.now - t0)),
        "{}",
        sim.now - t0
    );
}
