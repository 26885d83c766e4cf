//! Hostile input: random and malicious segments, blind RST/SYN (RFC 5961),
//! SYN floods (cookies), TIME-WAIT abuse. Nothing may panic or grow without
//! bound.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::*;
use uk_tcp::options::Options;
use uk_tcp::timewait::TimeWaitRecord;
use uk_tcp::wire::{Flags, Header};
use uk_tcp::{Config, Error, Seq, State};

/// a's view of the connection: (a's next expected seq from b, a's snd_nxt).
fn a_expects(sim: &Sim) -> (Seq, Seq) {
    let h = sim.last[0].expect("a sent something");
    (h.ack, h.seq)
}

fn hdr(seq: Seq, ack: Seq, flags: Flags) -> Header {
    Header {
        src_port: PORT,
        dst_port: 0,
        seq,
        ack,
        flags,
        window: 65535,
        options: Options::default(),
    }
}

/// A header from b to a on the given connection.
fn from_b(sim: &Sim, seq: Seq, ack: Seq, flags: Flags) -> Header {
    let last = sim.last[0].unwrap();
    Header {
        src_port: last.dst_port,
        dst_port: last.src_port,
        ..hdr(seq, ack, flags)
    }
}

#[test]
fn rst_exactly_at_rcv_nxt_resets_in_window_gets_challenge_ack() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, _s) = sim.connect();
    sim.a.send(sim.now, c, pattern_chunk(0, 0, 10)).unwrap();
    sim.run_until(100_000, |sim| sim.a.get(c).unwrap().send_queued() == 0);
    let (rcv_nxt, snd_nxt) = a_expects(&sim);

    // In window, not exact: challenge ACK, connection stays.
    sim.inject(false, from_b(&sim, rcv_nxt + 100, Seq(0), Flags::RST), &[])
        .unwrap();
    assert_eq!(sim.a.state(c), Some(State::Established));
    assert_eq!(sim.a.get(c).unwrap().stats().challenge_acks, 1);
    // Out of window: silently ignored.
    sim.inject(
        false,
        from_b(&sim, rcv_nxt + 10_000_000, Seq(0), Flags::RST),
        &[],
    )
    .unwrap();
    assert_eq!(sim.a.get(c).unwrap().stats().challenge_acks, 1);
    // SYN in a synchronized state, any sequence number: challenge ACK.
    sim.inject(false, from_b(&sim, rcv_nxt + 5, Seq(0), Flags::SYN), &[])
        .unwrap();
    sim.inject(false, from_b(&sim, Seq(12345), Seq(0), Flags::SYN), &[])
        .unwrap();
    assert_eq!(sim.a.state(c), Some(State::Established));
    assert_eq!(sim.a.get(c).unwrap().stats().challenge_acks, 3);
    // Challenge ACKs are rate limited.
    for i in 0..100 {
        sim.inject(
            false,
            from_b(&sim, rcv_nxt + 1 + i, Seq(0), Flags::RST),
            &[],
        )
        .unwrap();
    }
    assert_eq!(sim.a.get(c).unwrap().stats().challenge_acks, 10);
    // ACK of data never sent: dropped with an ACK, its data not taken.
    let h = from_b(&sim, rcv_nxt, snd_nxt + 1000, Flags::ACK);
    sim.inject(false, h, b"bogus").unwrap();
    assert_eq!(sim.a.get(c).unwrap().recv_queued(), 0);
    // ACK far below SND.UNA (older than any window): dropped.
    let h = from_b(&sim, rcv_nxt, snd_nxt - 3_000_000, Flags::ACK);
    sim.inject(false, h, b"bogus").unwrap();
    assert_eq!(sim.a.get(c).unwrap().recv_queued(), 0);
    // The exact RST works.
    sim.inject(false, from_b(&sim, rcv_nxt, Seq(0), Flags::RST), &[])
        .unwrap();
    assert_eq!(sim.a.state(c), Some(State::Closed));
    assert_eq!(sim.a.error(c), Some(Error::Reset));
}

#[test]
fn segments_to_no_connection_get_rst() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let mut out = Vec::new();
    let mut h = hdr(Seq(1000), Seq(0), Flags::SYN);
    h.dst_port = 9;
    let seg = raw_segment(A_IP, B_IP, h, &[]);
    sim.b.on_segment(sim.now, A_IP, B_IP, &seg).unwrap();
    sim.b.poll(sim.now, &mut out);
    let (r, _) = Header::parse(out[0].header.as_bytes()).unwrap();
    assert_eq!(
        (r.flags, r.seq, r.ack),
        (Flags::RST | Flags::ACK, Seq(0), Seq(1001))
    );

    h.flags = Flags::ACK;
    h.ack = Seq(777);
    let seg = raw_segment(A_IP, B_IP, h, b"data");
    out.clear();
    sim.b.on_segment(sim.now, A_IP, B_IP, &seg).unwrap();
    sim.b.poll(sim.now, &mut out);
    let (r, _) = Header::parse(out[0].header.as_bytes()).unwrap();
    assert_eq!((r.flags, r.seq), (Flags::RST, Seq(777)));

    // Never a RST for a RST.
    h.flags = Flags::RST;
    out.clear();
    sim.b
        .on_segment(sim.now, A_IP, B_IP, &raw_segment(A_IP, B_IP, h, &[]))
        .unwrap();
    sim.b.poll(sim.now, &mut out);
    assert!(out.is_empty());
    // A bad checksum is dropped.
    let mut seg = raw_segment(A_IP, B_IP, hdr(Seq(1), Seq(0), Flags::SYN), &[]);
    seg[5] ^= 1;
    assert!(sim.b.on_segment(sim.now, A_IP, B_IP, &seg).is_err());
}

/// Random bytes, and random well-formed segments aimed at a live
/// connection (in and out of window, overlapping data, RST/SYN/FIN, bogus
/// options, huge windows, SACK blocks for unsent data): no panic, memory
/// stays bounded, and the connection either still works or ended cleanly.
#[test]
fn random_and_hostile_segments() {
    let cfg = Config {
        recv_window: 64 * 1024,
        max_ooo_segments: 64,
        ..config()
    };
    let mut sim = Sim::new(LinkModel::perfect(), 7, cfg.clone(), cfg);
    let mut rng = Rng(99);
    sim.b.listen(SocketAddr::new(B_IP, PORT), 16).unwrap();

    // Pure garbage, checksum skipped so that parsing is exercised.
    for _ in 0..50_000 {
        let len = rng.below(80) as usize;
        let mut bytes = rng.bytes(len);
        if len > 13 && rng.chance(0.5) {
            bytes[12] = 0x50 + ((rng.below(11) as u8) << 4 & 0xf0);
        }
        let _ = sim.b.on_segment_unchecked(sim.now, A_IP, B_IP, &bytes);
        let _ = sim.a.on_segment_unchecked(sim.now, B_IP, A_IP, &bytes);
    }
    sim.flush();

    let mut connections = 0;
    let mut ended = 0;
    for round in 0..50 {
        let (c, s) = sim.connect();
        connections += 1;
        sim.a
            .send(sim.now, c, pattern_chunk(round, 0, 100_000))
            .unwrap();
        sim.b
            .send(sim.now, s, pattern_chunk(round, 0, 100_000))
            .unwrap();
        for _ in 0..2_000 {
            if sim.a.get(c).is_none() || sim.a.state(c) == Some(State::Closed) {
                break;
            }
            let (rcv_nxt, snd_nxt) = a_expects(&sim);
            let seq = match rng.below(4) {
                0 => rcv_nxt + rng.below(70_000) as u32,
                1 => rcv_nxt - rng.below(70_000) as u32,
                2 => Seq(rng.next_u64() as u32),
                _ => rcv_nxt + rng.below(3000) as u32,
            };
            let ack = match rng.below(3) {
                0 => snd_nxt - rng.below(100_000) as u32,
                1 => snd_nxt + rng.below(100) as u32,
                _ => Seq(rng.next_u64() as u32),
            };
            let mut h = from_b(&sim, seq, ack, Flags(rng.next_u64() as u8 & 0x3f));
            if rng.chance(0.7) {
                h.flags = Flags(h.flags.0 & !(Flags::SYN.0 | Flags::RST.0)) | Flags::ACK;
            }
            h.window = rng.next_u64() as u16;
            if rng.chance(0.3) {
                h.options.timestamps = Some((rng.next_u64() as u32, rng.next_u64() as u32));
            }
            if rng.chance(0.3) {
                let n = 1 + rng.below(3) as u8;
                for i in 0..n as usize {
                    let l = snd_nxt - rng.below(200_000) as u32;
                    h.options.sack[i] = (l, l + rng.below(100_000) as u32);
                }
                h.options.sack_len = n;
            }
            if rng.chance(0.1) {
                h.options.wscale = Some(rng.below(20) as u8);
                h.options.mss = Some(rng.next_u64() as u16);
            }
            let len = if rng.chance(0.5) {
                0
            } else {
                rng.below(3000) as usize
            };
            let payload = rng.bytes(len);
            let bytes = raw_segment(B_IP, A_IP, h, &payload);
            let bytes = if rng.chance(0.05) {
                // Bogus option bytes in place of the real ones.
                let mut b = bytes;
                let off = usize::from(b[12] >> 4) * 4;
                for x in &mut b[20..off] {
                    *x = rng.next_u64() as u8;
                }
                b
            } else {
                bytes
            };
            let _ = sim.a.on_segment_unchecked(sim.now, B_IP, A_IP, &bytes);
            if let Some(conn) = sim.a.get(c) {
                // Received data is bounded by the window, out-of-order
                // segments by their cap, the scoreboard by its cap.
                assert!(
                    conn.memory_bytes() < 64 * 1024 + 64 * 2048 + 16 * 1024,
                    "{}",
                    conn.memory_bytes()
                );
            }
            if rng.chance(0.05) {
                sim.advance(rng.below(300_000));
            }
        }
        if sim.a.state(c) == Some(State::Closed) {
            ended += 1;
        }
        sim.a.abort(sim.now, c);
        sim.b.abort(sim.now, s);
        sim.advance(1_000_000);
        // b still accepts and serves a normal client.
    }
    let (c, s) = sim.connect();
    sim.a.send(sim.now, c, pattern_chunk(1, 0, 10_000)).unwrap();
    assert!(
        sim.run_until(10_000_000, |sim| sim.b.get(s).unwrap().recv_queued()
            == 10_000)
    );
    assert!(connections == 50 && ended <= 50);
}

/// 100,000 SYNs from spoofed sources: half-open connections stay at the
/// listener's bound, the rest get cookies, memory stays flat, and cookie
/// handshakes (a real client's among them) complete.
#[test]
fn syn_flood_is_answered_with_cookies() {
    let cfg = Config {
        syn_backlog: 128,
        ..config()
    };
    let mut server: Ep = uk_tcp::Endpoint::new(cfg, [3; 16]);
    let mut now = 1_000_000;
    server.listen(SocketAddr::new(B_IP, PORT), 1024).unwrap();
    // A correct cookie, but no flood going on: not accepted (cookies are
    // only honoured shortly after the listener sent some).
    let key = uk_tcp::hash::derive_key(&[3; 16], b"cookie");
    let tuple = uk_tcp::FourTuple {
        local_ip: B_IP,
        remote_ip: A_IP,
        local_port: PORT,
        remote_port: 4000,
    };
    let (cookie, _) = uk_tcp::cookie::encode(&key, &tuple, Seq(99), 1460, now);
    let mut ack = hdr(Seq(100), cookie + 1, Flags::ACK);
    ack.src_port = 4000;
    ack.dst_port = PORT;
    let seg = raw_segment(A_IP, B_IP, ack, &[]);
    server.on_segment(now, A_IP, B_IP, &seg).unwrap();
    assert_eq!(server.stats().counters.syn_cookies_rejected, 1);
    let mut rng = Rng(5);
    let mut out = Vec::new();
    let mut cookies = Vec::new();
    let mut peak = 0;
    for i in 0..100_000u32 {
        let src = IpAddr::V4(Ipv4Addr::from(
            0x0a80_0000 | (rng.next_u64() as u32 & 0xffff),
        ));
        let mut h = hdr(Seq(rng.next_u64() as u32), Seq(0), Flags::SYN);
        h.src_port = 1024 + (rng.below(60_000) as u16);
        h.dst_port = PORT;
        h.options.mss = Some(1460);
        if i % 2 == 0 {
            h.options.timestamps = Some((i, 0));
            h.options.wscale = Some(7);
            h.options.sack_permitted = true;
        }
        server
            .on_segment(now, src, B_IP, &raw_segment(src, B_IP, h, &[]))
            .unwrap();
        if i % 1000 == 0 {
            now += 10_000;
            out.clear();
            server.poll(now, &mut out);
            peak = peak.max(server.table_bytes() + server.stats().state(State::SynReceived).bytes);
        }
        server.poll(now, &mut out);
        if let Some(s) = out.pop() {
            let (r, _) = Header::parse(s.header.as_bytes()).unwrap();
            if cookies.len() < 100 && i >= 1000 {
                cookies.push((src, h, r));
            }
        }
        out.clear();
    }
    let st = server.stats();
    assert_eq!(st.state(State::SynReceived).count, 128);
    assert!(st.counters.syn_cookies_sent > 99_000, "{:?}", st.counters);
    assert!(peak < 2 << 20, "peak {peak} bytes");

    // Completing cookie handshakes creates connections.
    for (src, syn, synack) in &cookies {
        let mut ack = hdr(syn.seq + 1, synack.seq + 1, Flags::ACK);
        ack.src_port = syn.src_port;
        ack.dst_port = PORT;
        if let Some((_, tsecr)) = synack.options.timestamps.map(|(v, _)| (0, v)) {
            ack.options.timestamps = Some((1, tsecr));
        }
        server
            .on_segment(now, *src, B_IP, &raw_segment(*src, B_IP, ack, b"GET /"))
            .unwrap();
    }
    let st = server.stats();
    assert_eq!(st.counters.syn_cookies_accepted, 100);
    let id = server.accept(PORT).unwrap();
    assert_eq!(server.get(id).unwrap().recv_queued(), 5);
    // A forged ACK is refused with a RST.
    let mut ack = hdr(Seq(1), Seq(12345), Flags::ACK);
    ack.src_port = 999;
    ack.dst_port = PORT;
    server
        .on_segment(now, A_IP, B_IP, &raw_segment(A_IP, B_IP, ack, &[]))
        .unwrap();
    assert_eq!(server.stats().counters.syn_cookies_rejected, 2);
    // The same correct cookie is accepted now that a flood is on.
    server.on_segment(now, A_IP, B_IP, &seg).unwrap();
    assert_eq!(server.stats().counters.syn_cookies_accepted, 101);
}

#[test]
fn real_client_gets_through_a_syn_flood() {
    for timestamps in [true, false] {
        let cfg = Config {
            syn_backlog: 4,
            timestamps,
            ..config()
        };
        let mut sim = Sim::new(LinkModel::perfect(), 1, cfg.clone(), cfg);
        sim.b.listen(SocketAddr::new(B_IP, PORT), 64).unwrap();
        let mut rng = Rng(1);
        for _ in 0..1000 {
            let src = IpAddr::V4(Ipv4Addr::new(192, 168, rng.below(255) as u8, 1));
            let mut h = hdr(Seq(rng.next_u64() as u32), Seq(0), Flags::SYN);
            h.src_port = 1024 + rng.below(60_000) as u16;
            h.dst_port = PORT;
            let now = sim.now;
            sim.b
                .on_segment(now, src, B_IP, &raw_segment(src, B_IP, h, &[]))
                .unwrap();
        }
        // Replies to spoofed sources go nowhere.
        let mut out = Vec::new();
        sim.b.poll(sim.now, &mut out);
        let (c, s) = sim.connect();
        assert!(sim.b.stats().counters.syn_cookies_accepted >= 1);
        let total = 1 << 20;
        sim.a.send(sim.now, c, pattern_chunk(0, 0, total)).unwrap();
        let mut got = 0;
        let mut buf = vec![0; 65536];
        assert!(sim.run_until(10_000_000, |sim| {
            while let Ok(n) = sim.b.recv(sim.now, s, &mut buf) {
                if n == 0 {
                    break;
                }
                for (i, &b) in buf[..n].iter().enumerate() {
                    assert_eq!(b, pattern(0, (got + i) as u64));
                }
                got += n;
            }
            got == total
        }));
        if timestamps {
            // Window scaling survived the cookie (in TSval's low bits): the
            // window grew beyond 64 KiB.
            assert!(sim.a.get(c).unwrap().cc_info().1 > 65_535);
        }
    }
}

#[test]
fn time_wait_is_a_small_record() {
    assert!(std::mem::size_of::<TimeWaitRecord>() <= 64);
    // Per record in a full table: the record, hash-table slack, the FIFO.
    let mut t =
        uk_tcp::timewait::TimeWaitTable::new(10_000, uk_tcp::hash::KeyedState::new([0; 16]));
    for i in 0..10_000u32 {
        t.insert(TimeWaitRecord {
            tuple: uk_tcp::FourTuple {
                local_ip: B_IP,
                remote_ip: A_IP,
                local_port: 80,
                remote_port: i as u16,
            },
            snd_nxt: Seq(i),
            rcv_nxt: Seq(i),
            ts_recent: None,
            expiry: u64::from(i),
        });
    }
    let per = t.memory_bytes() / t.len();
    eprintln!(
        "TIME-WAIT: {} bytes per record in a table of {}",
        per,
        t.len()
    );
    assert!(per <= 200, "{per}");
    let cfg = Config {
        time_wait_capacity: 4,
        ..config()
    };
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), cfg);
    for _ in 0..10 {
        let (c, s) = sim.connect();
        sim.b.close(sim.now, s);
        sim.run_until(1_000_000, |sim| sim.a.state(c) == Some(State::CloseWait));
        sim.a.close(sim.now, c);
        sim.run_until(1_000_000, |sim| {
            sim.a.stats().state(State::LastAck).count == 0
        });
    }
    let st = sim.b.stats();
    assert_eq!(st.state(State::TimeWait).count, 4, "bounded");
    assert_eq!(st.time_wait_recycled, 6, "oldest recycled");
    assert!(
        st.state(State::TimeWait).bytes <= 4096,
        "{} bytes for 4 records",
        st.state(State::TimeWait).bytes
    );
    sim.advance(Config::default().time_wait + 1);
    assert_eq!(sim.b.stats().state(State::TimeWait).count, 0);
    assert_eq!(
        sim.b.stats().state(State::TimeWait).bytes,
        0,
        "table memory released"
    );
}

#[test]
fn time_wait_acks_a_retransmitted_fin_and_a_new_syn_reopens() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, s) = sim.connect();
    let port = sim.last[0].unwrap().src_port;
    sim.b.close(sim.now, s);
    sim.run_until(1_000_000, |sim| sim.a.state(c) == Some(State::CloseWait));
    // b's last ACK is lost: a retransmits its FIN, the TIME-WAIT record answers.
    let lost = std::rc::Rc::new(std::cell::Cell::new(false));
    let l = lost.clone();
    sim.filter = Some(Box::new(move |_, to_b, h, _| {
        if !to_b && !l.get() && h.flags == Flags::ACK {
            l.set(true);
            return false;
        }
        true
    }));
    sim.a.shutdown(sim.now, c).unwrap();
    sim.run_until(5_000_000, |sim| sim.a.state(c) == Some(State::Closed));
    assert!(lost.get());
    assert_eq!(sim.a.state(c), Some(State::Closed));
    assert_eq!(sim.a.error(c), None);
    assert_eq!(sim.b.stats().state(State::TimeWait).count, 1);
    sim.a.close(sim.now, c);

    // A new SYN on the same 4-tuple (later timestamp) reopens it.
    let c2 = sim
        .a
        .connect_from(
            sim.now,
            SocketAddr::new(A_IP, port),
            SocketAddr::new(B_IP, PORT),
        )
        .unwrap();
    sim.run_until(1_000_000, |sim| sim.a.state(c2) == Some(State::Established));
    assert_eq!(sim.a.state(c2), Some(State::Established));
    assert_eq!(sim.b.stats().counters.time_wait_reopened, 1);
    assert_eq!(sim.b.stats().state(State::TimeWait).count, 0);
}

#[test]
fn isns_are_keyed_and_advance_with_the_clock() {
    use uk_tcp::isn::initial_seq;
    let t = uk_tcp::FourTuple {
        local_ip: A_IP,
        remote_ip: B_IP,
        local_port: 80,
        remote_port: 5000,
    };
    let t2 = uk_tcp::FourTuple {
        remote_port: 5001,
        ..t
    };
    let (k1, k2) = ([1; 16], [2; 16]);
    assert_ne!(initial_seq(&k1, &t, 0), initial_seq(&k2, &t, 0));
    assert_ne!(initial_seq(&k1, &t, 0), initial_seq(&k1, &t2, 0));
    // Monotonic with the 4 µs clock for one tuple.
    let base = initial_seq(&k1, &t, 1_000_000);
    assert_eq!(initial_seq(&k1, &t, 1_000_004), base + 1);
    assert_eq!(initial_seq(&k1, &t, 2_000_000), base + 250_000);
    // Neighbouring tuples give unrelated ISNs: about half the bits differ.
    let mut diff = 0;
    for p in 0..1000u16 {
        let a = initial_seq(
            &k1,
            &uk_tcp::FourTuple {
                remote_port: p,
                ..t
            },
            0,
        );
        let b = initial_seq(
            &k1,
            &uk_tcp::FourTuple {
                remote_port: p + 1,
                ..t
            },
            0,
        );
        diff += (a.0 ^ b.0).count_ones();
    }
    let avg = diff as f64 / 1000.0;
    assert!((14.0..18.0).contains(&avg), "{avg}");
}

#[test]
fn ephemeral_ports_are_randomized_and_distinct() {
    let mut ep: Ep = uk_tcp::Endpoint::new(config(), [9; 16]);
    let remote = SocketAddr::new(B_IP, 80);
    let ports: Vec<u16> = (0..1000)
        .map(|_| {
            let id = ep.connect(0, A_IP, remote).unwrap();
            ep.get(id).unwrap().tuple().local_port
        })
        .collect();
    let mut sorted = ports.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 1000, "distinct");
    assert!(ports.iter().all(|p| *p >= 49152));
    // Different secrets, different starting points.
    let mut other: Ep = uk_tcp::Endpoint::new(config(), [10; 16]);
    let id = other.connect(0, A_IP, remote).unwrap();
    assert_ne!(other.get(id).unwrap().tuple().local_port, ports[0]);
    // Another destination starts elsewhere in the range.
    let id = ep.connect(0, A_IP, SocketAddr::new(B_IP, 443)).unwrap();
    let p443 = ep.get(id).unwrap().tuple().local_port;
    assert!(p443.abs_diff(ports[999]) > 1);
}

#[test]
fn ipv6_connection() {
    let a6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
    let b6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
    let mut a: Ep = uk_tcp::Endpoint::new(config(), [1; 16]);
    let mut b: Ep = uk_tcp::Endpoint::new(config(), [2; 16]);
    b.listen(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 443), 4)
        .unwrap();
    let mut now = 0;
    let c = a.connect(now, a6, SocketAddr::new(b6, 443)).unwrap();
    let total = 300_000;
    a.send(now, c, pattern_chunk(6, 0, total)).unwrap();
    let mut got = Vec::new();
    let mut s = None;
    for _ in 0..10_000 {
        now += 100;
        let mut out = Vec::new();
        a.poll(now, &mut out);
        for seg in out.drain(..).flat_map(|s| s.split()) {
            assert_eq!((seg.local_ip, seg.remote_ip), (a6, b6));
            b.on_segment(now, a6, b6, &seg.to_bytes()).unwrap();
        }
        b.poll(now, &mut out);
        for seg in out.drain(..).flat_map(|s| s.split()) {
            a.on_segment(now, b6, a6, &seg.to_bytes()).unwrap();
        }
        s = s.or_else(|| b.accept(443));
        if let Some(s) = s {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = b.recv(now, s, &mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        if got.len() == total {
            break;
        }
    }
    assert_eq!(got.len(), total);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, &x)| x == pattern(6, i as u64))
    );
}

/// A spoofed in-window segment desynchronizes the two ends: a now ACKs
/// data b never sent, b drops those ACKs. Neither side may answer every
/// dropped ACK with another ACK forever.
#[test]
fn ack_war_is_rate_limited() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, _s) = sim.connect();
    let (rcv_nxt, snd_nxt) = a_expects(&sim);
    sim.inject(
        false,
        from_b(&sim, rcv_nxt, snd_nxt, Flags::ACK),
        b"spoofed",
    )
    .unwrap();
    assert_eq!(sim.a.get(c).unwrap().recv_queued(), 7);
    let before = sim.frames;
    sim.advance(10_000_000);
    let frames = (sim.frames[0] - before[0]) + (sim.frames[1] - before[1]);
    // At most one answer per 100 ms per side, instead of one per RTT.
    assert!(frames <= 2 * 100 + 4, "{frames} frames in 10 s");
}

#[test]
fn admission_limit_drops_new_syns() {
    let cfg = Config {
        max_connections: 3,
        ..config()
    };
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), cfg);
    let conns: Vec<_> = (0..3).map(|_| sim.connect()).collect();
    let c = sim
        .a
        .connect(sim.now, A_IP, SocketAddr::new(B_IP, PORT))
        .unwrap();
    sim.advance(500_000);
    assert_eq!(
        sim.a.state(c),
        Some(State::SynSent),
        "SYN dropped, client retries"
    );
    assert!(sim.b.stats().counters.listen_overflows >= 1);
    // The established ones keep going; when one closes, the newcomer gets in.
    let (c0, s0) = conns[0];
    sim.a.send(sim.now, c0, pattern_chunk(0, 0, 1000)).unwrap();
    sim.run_until(1_000_000, |sim| {
        sim.b.get(s0).unwrap().recv_queued() == 1000
    });
    sim.b.abort(sim.now, s0);
    sim.run_until(10_000_000, |sim| sim.a.state(c) == Some(State::Established));
    assert_eq!(sim.a.state(c), Some(State::Established));
}

/// Thousands of 1-byte out-of-order segments: the queue keeps at most
/// `max_ooo_segments` of them, and the connection still delivers.
#[test]
fn out_of_order_flood_is_bounded() {
    let cfg = Config {
        max_ooo_segments: 32,
        ..config()
    };
    let mut sim = Sim::new(LinkModel::perfect(), 1, cfg, config());
    let (c, s) = sim.connect();
    let (rcv_nxt, snd_nxt) = a_expects(&sim);
    for i in 0..10_000u32 {
        let h = from_b(&sim, rcv_nxt + 100 + 2 * i, snd_nxt, Flags::ACK);
        let now = sim.now;
        let bytes = raw_segment(B_IP, A_IP, h, b"x");
        sim.a.on_segment(now, B_IP, A_IP, &bytes).unwrap();
        sim.advance(10);
    }
    let mem = sim.a.memory_bytes(c);
    assert!(mem < 16 * 1024, "{mem} bytes");
    // b's real data (which overlaps the junk) still arrives in order.
    sim.b.send(sim.now, s, pattern_chunk(4, 0, 50_000)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    sim.run_until(10_000_000, |sim| {
        while let Ok(n @ 1..) = sim.a.recv(sim.now, c, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        got.len() >= 50_000
    });
    // Up to the first junk byte the stream is b's; the junk bytes that were
    // kept replaced b's at their offsets (first copy wins, as in any TCP).
    assert_eq!(
        &got[..100],
        &(0..100).map(|i| pattern(4, i)).collect::<Vec<_>>()[..]
    );
}

#[test]
fn receiver_sends_sack_blocks_for_out_of_order_data() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, _s) = sim.connect();
    let hole = std::rc::Rc::new(std::cell::Cell::new(None));
    let blocks = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let (h2, b2) = (hole.clone(), blocks.clone());
    let mut n = 0;
    sim.filter = Some(Box::new(move |_, to_b, h, len| {
        if to_b && len > 0 {
            n += 1;
            if n == 3 {
                h2.set(Some((h.seq, h.seq + len as u32)));
                return false;
            }
        }
        if !to_b && h.options.sack_len > 0 {
            b2.borrow_mut()
                .push((h.ack, h.options.sack_blocks().to_vec()));
        }
        true
    }));
    sim.a
        .send(sim.now, c, pattern_chunk(0, 0, 10 * 1448))
        .unwrap();
    sim.run_until(2_000_000, |sim| sim.a.get(c).unwrap().send_queued() == 0);
    let (lo, hi) = hole.get().unwrap();
    let blocks = blocks.borrow();
    assert!(!blocks.is_empty());
    for (ack, sack) in blocks.iter() {
        // Cumulative ACK at the hole, one block starting right after it.
        assert_eq!(*ack, lo);
        assert_eq!(sack.len(), 1);
        assert_eq!(sack[0].0, hi);
    }
    // The block grows to the end of the data (the hole is the 3rd segment).
    assert_eq!(blocks.last().unwrap().1[0].1, lo + 8 * 1448);
}

/// 5,000 `Connection: close` exchanges, 100 at a time: the server closes
/// first, so every exchange leaves a TIME-WAIT record on it. Connections,
/// slots and TIME-WAIT records stay bounded; memory does not creep.
#[test]
fn connection_churn_keeps_memory_flat() {
    let cfg = Config {
        time_wait_capacity: 1024,
        ..config()
    };
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), cfg);
    sim.b.listen(SocketAddr::new(B_IP, PORT), 256).unwrap();
    let mut buf = vec![0; 65536];
    let mut tables = Vec::new();
    for round in 0..50 {
        let clients: Vec<_> = (0..100)
            .map(|_| {
                sim.a
                    .connect(sim.now, A_IP, SocketAddr::new(B_IP, PORT))
                    .unwrap()
            })
            .collect();
        for &c in &clients {
            sim.a
                .send(sim.now, c, b"GET / HTTP/1.0\r\n\r\n"[..].to_vec().into())
                .unwrap();
        }
        let mut served = 0;
        let mut finished = 0;
        let mut done = vec![false; clients.len()];
        let ok = sim.run_until(10_000_000, |sim| {
            while let Some(s) = sim.b.accept(PORT) {
                while sim.b.get(s).unwrap().recv_queued() == 0 {
                    sim.step();
                }
                let _ = sim.b.recv(sim.now, s, &mut buf);
                sim.b
                    .send(sim.now, s, pattern_chunk(round, 0, 10_000))
                    .unwrap();
                sim.b.close(sim.now, s);
                served += 1;
            }
            for (&c, done) in clients.iter().zip(done.iter_mut()) {
                if !*done && sim.a.get(c).is_some_and(|x| x.fin_received()) {
                    *done = true;
                    while let Ok(n @ 1..) = sim.a.recv(sim.now, c, &mut buf) {
                        let _ = n;
                    }
                    sim.a.close(sim.now, c);
                    finished += 1;
                }
            }
            served == 100 && finished == 100
        });
        assert!(
            ok,
            "round {round}: served {served}, finished {finished}, {:?}",
            sim.b.stats()
        );
        sim.advance(100_000);
        tables.push(sim.b.table_bytes());
    }
    let st = sim.b.stats();
    let live: usize = st.by_state.iter().map(|s| s.count).sum::<usize>()
        - st.state(State::TimeWait).count
        - st.state(State::Listen).count;
    assert_eq!(live, 0, "{:?}", st.by_state);
    assert_eq!(st.state(State::TimeWait).count, 1024);
    assert_eq!(st.time_wait_recycled, 5000 - 1024);
    // After the TIME-WAIT table filled up, the tables stop growing.
    let (mid, last) = (tables[20], tables[49]);
    assert!(last <= mid, "table bytes grew from {mid} to {last}");
    assert_eq!(sim.a.stats().state(State::LastAck).count, 0);
}
