//! The send path holds references: no payload byte is copied to queue or
//! to transmit it, references are released as data is acknowledged, and an
//! idle connection holds no buffers.

mod common;

use std::sync::Arc;

use common::*;
use uk_tcp::wire::{Checksum, Header};
use uk_tcp::{Connection, SharedSlice};

#[test]
fn segments_reference_the_queued_buffer_and_acks_release_it() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, s) = sim.connect();
    let page: Arc<Box<[u8]>> = Arc::new((0..256 * 1024).map(|i| i as u8).collect());
    let range = page.as_ptr_range();
    // Two references into the same "page-cache" buffer.
    sim.a
        .send(
            sim.now,
            c,
            SharedSlice::slice(page.clone(), 0, 100_000).unwrap(),
        )
        .unwrap();
    sim.a
        .send(
            sim.now,
            c,
            SharedSlice::slice(page.clone(), 100_000, 162_144).unwrap(),
        )
        .unwrap();
    // Two queued references, plus those of the segments already waiting
    // for the device.
    assert!(Arc::strong_count(&page) > 3);

    let mut out = Vec::new();
    sim.a.poll(sim.now, &mut out);
    assert!(!out.is_empty());
    let mut bytes = 0;
    for seg in &out {
        for f in &seg.payload {
            // The fragment's bytes are the page's bytes, not a copy.
            assert!(range.contains(&f.bytes().as_ptr()));
            bytes += f.len;
        }
    }
    // The initial window: 10 segments, handed over as one TSO segment.
    assert_eq!(out.len(), 1);
    assert_eq!(bytes, 10 * 1448);
    assert_eq!(out[0].payload_len, 10 * 1448);
    assert_eq!(usize::from(out[0].mss), 1448);
    assert_eq!(out[0].dst_port(), PORT);
    assert_eq!((out[0].local_ip, out[0].remote_ip), (A_IP, B_IP));
    let frames = out[0].split();
    assert_eq!(frames.len(), 10);
    assert!(frames.iter().all(|f| f.payload_len == 1448));
    // Segments in flight hold references too (the NIC reads them).
    assert!(Arc::strong_count(&page) > 3);
    drop(out);
    drop(frames);
    assert_eq!(Arc::strong_count(&page), 3);

    // Deliver the first 100,000 bytes only: the first reference is
    // released, the second one stays (partly acknowledged, not copied).
    sim.a.shutdown(sim.now, c).unwrap();
    let mut got = 0;
    let mut buf = vec![0; 1 << 16];
    sim.run_until(10_000_000, |sim| {
        while let Ok(n @ 1..) = sim.b.recv(sim.now, s, &mut buf) {
            assert!(
                buf[..n]
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == (got + i) as u8)
            );
            got += n;
        }
        sim.a.get(c).is_some_and(|c| c.send_queued() < 162_144)
    });
    assert_eq!(Arc::strong_count(&page), 2, "first reference released");
    sim.run_until(10_000_000, |sim| {
        while let Ok(n @ 1..) = sim.b.recv(sim.now, s, &mut buf) {
            got += n;
        }
        sim.a.get(c).is_some_and(|c| c.send_queued() == 0)
    });
    assert_eq!(
        Arc::strong_count(&page),
        1,
        "everything acknowledged, everything released"
    );
    assert_eq!(got, 256 * 1024);
}

#[test]
fn idle_connection_holds_no_buffers() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, s) = sim.connect();
    let base = std::mem::size_of::<Connection<SharedSlice>>();
    assert_eq!(sim.a.memory_bytes(c), base);
    assert_eq!(sim.b.memory_bytes(s), base);
    let total = 1 << 20;
    sim.a.send(sim.now, c, pattern_chunk(0, 0, total)).unwrap();
    sim.b.send(sim.now, s, pattern_chunk(1, 0, total)).unwrap();
    let mut got = [0; 2];
    let mut buf = vec![0; 1 << 16];
    let mut peak = 0;
    sim.run_until(10_000_000, |sim| {
        while let Ok(n @ 1..) = sim.b.recv(sim.now, s, &mut buf) {
            got[0] += n;
        }
        // Read a's side only now and then: its receive queue fills.
        if sim.now % 3 == 0 {
            while let Ok(n @ 1..) = sim.a.recv(sim.now, c, &mut buf) {
                got[1] += n;
            }
        }
        peak = peak.max(sim.a.memory_bytes(c));
        got == [total, total]
            && sim.a.get(c).unwrap().send_queued() == 0
            && sim.b.get(s).unwrap().send_queued() == 0
    });
    assert_eq!(got, [total, total]);
    // Each received byte was copied exactly once into the socket and once
    // out of it (counted where the copies happen).
    for st in [sim.a.get(c).unwrap().stats(), sim.b.get(s).unwrap().stats()] {
        assert_eq!(
            (st.bytes_copied_in, st.bytes_copied_out),
            (total as u64, total as u64)
        );
    }
    // Memory followed the data (bounded by the 256 KiB receive window)...
    assert!(peak > base && peak < base + 300 * 1024, "peak {peak}");
    // ...and is gone once the data is: no ring buffers kept.
    assert_eq!(sim.a.memory_bytes(c), base, "idle: no payload buffers");
    assert_eq!(sim.b.memory_bytes(s), base);
    eprintln!("idle established connection: {base} bytes");
}

#[test]
fn checksum_offload_sum_completes_to_the_software_checksum() {
    let mut sim = Sim::new(LinkModel::perfect(), 1, config(), config());
    let (c, _s) = sim.connect();
    sim.a.send(sim.now, c, pattern_chunk(0, 0, 3001)).unwrap();
    let mut out = Vec::new();
    sim.a.poll(sim.now, &mut out);
    for seg in out.iter_mut().flat_map(|s| s.split()) {
        let mut sw = seg.clone();
        sw.fill_checksum();
        let mut hw = seg.clone();
        hw.fill_partial_checksum();
        // What the device does: sum from the TCP header on, complement.
        let mut sum = Checksum::default();
        sum.add(hw.header.as_bytes());
        for f in &hw.payload {
            sum.add(f.bytes());
        }
        hw.header.set_checksum(!sum.fold());
        assert_eq!(hw.header, sw.header);
        // And the result verifies.
        assert!(uk_tcp::wire::verify_checksum(A_IP, B_IP, &sw.to_bytes()));
        let (h, _) = Header::parse(sw.header.as_bytes()).unwrap();
        assert!(h.options.timestamps.is_some());
    }
}
