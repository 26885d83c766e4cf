//! Readiness and events: what the kernel needs to wake waiting threads.

mod common;

use std::net::SocketAddr;

use common::*;
use uk_tcp::{Event, Readiness, State};

fn events(ep: &mut Ep) -> Vec<Event> {
    let mut v = Vec::new();
    ep.take_events(&mut v);
    v
}

#[test]
fn accept_read_write_and_hangup_events() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    sim.b.listen(SocketAddr::new(B_IP, PORT), 8).unwrap();
    let c = sim
        .a
        .connect(sim.now, A_IP, SocketAddr::new(B_IP, PORT))
        .unwrap();
    assert_eq!(
        sim.a.readiness(c).unwrap(),
        Readiness::default(),
        "connecting"
    );
    sim.run_until(100_000, |sim| sim.a.state(c) == Some(State::Established));
    sim.advance(10_000);
    // Connected: writable.
    assert_eq!(events(&mut sim.a), [Event::Conn(c)]);
    assert!(sim.a.readiness(c).unwrap().writable);
    // The listener has one to accept (the connection itself reported its
    // readiness already; the application looks at it once accepted).
    let ev = events(&mut sim.b);
    assert!(ev.contains(&Event::Accept(PORT)), "{ev:?}");
    let s = sim.b.accept(PORT).unwrap();
    assert!(sim.b.readiness(s).unwrap().writable);
    assert!(events(&mut sim.b).is_empty());

    sim.a.send(sim.now, c, pattern_chunk(0, 0, 3000)).unwrap();
    sim.advance(10_000);
    assert_eq!(events(&mut sim.b), [Event::Conn(s)]);
    let r = sim.b.readiness(s).unwrap();
    assert!(r.readable && r.writable && !r.read_closed);
    // More data while the event is still readable: no new event.
    sim.a
        .send(sim.now, c, pattern_chunk(0, 3000, 3000))
        .unwrap();
    sim.advance(10_000);
    assert!(events(&mut sim.b).is_empty());
    let mut buf = vec![0; 10_000];
    assert_eq!(sim.b.recv(sim.now, s, &mut buf), Ok(6000));
    assert_eq!(events(&mut sim.b), [Event::Conn(s)], "no longer readable");
    assert!(!sim.b.readiness(s).unwrap().readable);

    // The peer closes: readable (EOF) and read-closed.
    sim.a.shutdown(sim.now, c).unwrap();
    sim.advance(10_000);
    assert_eq!(events(&mut sim.b), [Event::Conn(s)]);
    let r = sim.b.readiness(s).unwrap();
    assert!(r.readable && r.read_closed && r.writable && !r.hangup);
    // The peer resets: error and hangup.
    sim.a.abort(sim.now, c);
    sim.advance(10_000);
    assert_eq!(events(&mut sim.b), [Event::Conn(s)]);
    let r = sim.b.readiness(s).unwrap();
    assert!(r.error && r.hangup && !r.writable);
}
