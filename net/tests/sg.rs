//! Scatter-gather transmit: segments leave as a header buffer plus payload
//! fragments that the device reads in place. Checks the frames byte-exact
//! (headers, checksums, payload at its sequence number), that no payload
//! byte is copied by the CPU, that the descriptor budget is respected, and
//! that referenced memory is released once acknowledged and completed.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Packet, TcpPacket};
use uk_net::testing::Wire;
use uk_net::{CopyStage, NetError, SharedBytes, SocketId, StackOptions, TcpPayload};

const TSO_MAX_FRAME: usize = 14 + 65535;

/// A "page" of memory the stack references but does not own; counts the
/// live ones so a test can see them released.
struct Page {
    bytes: Vec<u8>,
    live: Arc<AtomicUsize>,
}

impl SharedBytes for Page {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A run of "pages" in one object, each referenced on its own (as the
/// kernel pins up to 16 page-cache pages at once); counted like [`Page`].
struct Run {
    pages: Vec<Vec<u8>>,
    live: Arc<AtomicUsize>,
}

impl SharedBytes for Run {
    fn bytes(&self) -> &[u8] {
        self.part(0)
    }
    fn part(&self, i: usize) -> &[u8] {
        self.pages.get(i).map_or(&[], |p| &p[..])
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `data` as 4 KiB pages (references, as `sendfile` queues them): runs of
/// 16 pages, one object each, one reference per page.
fn pages(data: &[u8], live: &Arc<AtomicUsize>) -> VecDeque<TcpPayload> {
    let mut out = VecDeque::new();
    for run in data.chunks(16 * 4096) {
        live.fetch_add(1, Ordering::SeqCst);
        let obj: Arc<dyn SharedBytes> = Arc::new(Run {
            pages: run.chunks(4096).map(<[u8]>::to_vec).collect(),
            live: live.clone(),
        });
        for (i, c) in run.chunks(4096).enumerate() {
            out.push_back(TcpPayload::shared_part(obj.clone(), i, 0, c.len()).unwrap());
        }
        // Out of range: no such part, or past its end.
        assert!(TcpPayload::shared_part(obj.clone(), 16, 0, 1).is_none());
        assert!(TcpPayload::shared_part(obj, 0, 1, 4096).is_none());
    }
    out
}

fn net_with_sg_on_a(descriptors: usize, tso: bool) -> Net {
    let (mut na, nb) = Wire::pair(MAC_A, MAC_B, 1500, 4096);
    na.enable_sg(descriptors);
    if tso {
        na.enable_tso(TSO_MAX_FRAME);
    }
    Net::with_nics(na, nb, StackOptions::default(), StackOptions::default())
}

fn accept_one(net: &mut Net, port: u16) -> (SocketId, SocketId) {
    let l = net.a.tcp_listen(port, 0).unwrap();
    let c = net.b.tcp_connect(sa(IP_A, port), None).unwrap();
    let mut s = None;
    assert!(
        net.run_until(
            |n| {
                if let Ok((id, _)) = n.a.tcp_accept(l) {
                    s = Some(id);
                }
                s.is_some()
            },
            10_000
        ),
        "no connection"
    );
    net.settle(100);
    (s.unwrap(), c)
}

/// Sends `data` from A as page references, closes, and reads it all at B.
fn send_pages_and_read(
    net: &mut Net,
    s: SocketId,
    c: SocketId,
    data: &[u8],
    live: &Arc<AtomicUsize>,
) -> Vec<u8> {
    let mut refs = pages(data, live);
    let mut closed = false;
    let mut got = Vec::new();
    let mut eof = false;
    assert!(
        net.run_until(
            |n| {
                while !refs.is_empty() {
                    match n.a.tcp_send_refs(s, &mut refs) {
                        Ok(0) | Err(NetError::WouldBlock) => break,
                        Ok(_) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                if !closed && refs.is_empty() {
                    n.a.tcp_close(s).unwrap();
                    closed = true;
                }
                let mut b = [0u8; 65536];
                loop {
                    match n.b.tcp_recv(c, &mut b) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(k) => got.extend_from_slice(&b[..k]),
                        Err(NetError::WouldBlock) => break,
                        Err(e) => panic!("client: {e} after {} bytes", got.len()),
                    }
                }
                eof
            },
            120_000
        ),
        "transfer did not finish: {} of {} bytes",
        got.len(),
        data.len()
    );
    got
}

#[test]
fn sendfile_style_references_cross_without_a_cpu_copy() {
    for tso in [false, true] {
        let mut net = net_with_sg_on_a(64, tso);
        let (s, c) = accept_one(&mut net, 80);
        let live = Arc::new(AtomicUsize::new(0));
        let data = pattern(4 << 20, 3);
        let got = send_pages_and_read(&mut net, s, c, &data, &live);
        assert_eq!(got.len(), data.len());
        assert!(got == data, "payload differs (tso {tso})");
        let cs = net.a.copy_stats();
        assert_eq!(cs.get(CopyStage::SocketToDevice), 0, "{cs}");
        assert_eq!(cs.get(CopyStage::AppToSocket), 0, "{cs}");
        let (frames, _) = net.na.sg_counts();
        assert!(frames > 0);
        if tso {
            assert!(net.na.tso_frames > 0, "no TSO chains");
        }
        assert_eq!(net.b.counters().rx_dropped.total(), 0);
        // Everything acknowledged and completed: every page released.
        net.settle(1_000);
        assert_eq!(net.na.sg_in_flight(), 0);
        assert_eq!(
            live.load(Ordering::SeqCst),
            0,
            "pages still referenced (tso {tso})"
        );
    }
}

/// Without scatter-gather the same references are copied into the device
/// buffer once, and counted there.
#[test]
fn without_sg_the_device_copy_is_counted() {
    let mut net = Net::new();
    let (s, c) = accept_one(&mut net, 80);
    let live = Arc::new(AtomicUsize::new(0));
    let data = pattern(1 << 20, 4);
    let got = send_pages_and_read(&mut net, s, c, &data, &live);
    assert!(got == data);
    let cs = net.a.copy_stats();
    // Retransmissions copy again, so at least every byte once.
    assert!(cs.get(CopyStage::SocketToDevice) >= 1 << 20, "{cs}");
    assert_eq!(cs.get(CopyStage::AppToSocket), 0, "{cs}");
    net.settle(1_000);
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

/// Each frame A hands to the device: valid IPv4 and TCP checksums, and the
/// payload equal to the data at its sequence number.
#[test]
fn sg_frames_are_byte_exact() {
    let mut net = net_with_sg_on_a(64, false);
    let (s, c) = accept_one(&mut net, 80);
    let live = Arc::new(AtomicUsize::new(0));
    // Odd sizes so that segments straddle references.
    let data = pattern(300_001, 9);
    let mut refs: VecDeque<TcpPayload> = data
        .chunks(1000)
        .map(|ch| {
            live.fetch_add(1, Ordering::SeqCst);
            let p: Arc<dyn SharedBytes> = Arc::new(Page {
                bytes: ch.to_vec(),
                live: live.clone(),
            });
            TcpPayload::shared(p, 0, ch.len()).unwrap()
        })
        .collect();
    let mut isn = None;
    let mut seen = 0usize;
    let mut got = Vec::new();
    for _ in 0..100_000 {
        while !refs.is_empty() {
            match net.a.tcp_send_refs(s, &mut refs) {
                Ok(0) | Err(NetError::WouldBlock) => break,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
        net.now += 1;
        net.a.poll(net.now, &mut net.na);
        for f in net.na.take_sent() {
            let eth = EthernetFrame::new_checked(&f[..]).unwrap();
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum());
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            let (src, dst) = (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
            );
            assert!(tcp.verify_checksum(&src, &dst), "bad TCP checksum");
            assert_eq!(usize::from(ip.total_len()), f.len() - 14);
            let payload = tcp.payload();
            if !payload.is_empty() {
                let base = *isn.get_or_insert(tcp.seq_number() - 1);
                let off = tcp.seq_number() - base - 1;
                assert_eq!(payload, &data[off..off + payload.len()], "payload at {off}");
                seen += payload.len();
            }
            net.nb.inject(&f);
        }
        net.b.poll(net.now, &mut net.nb);
        for f in net.nb.take_sent() {
            net.na.inject(&f);
        }
        let mut b = [0u8; 65536];
        while let Ok(k) = net.b.tcp_recv(c, &mut b) {
            if k == 0 {
                break;
            }
            got.extend_from_slice(&b[..k]);
        }
        if got.len() == data.len() {
            break;
        }
    }
    assert!(got == data);
    assert!(seen >= data.len());
    assert_eq!(net.a.copy_stats().get(CopyStage::SocketToDevice), 0);
}

/// A ring with few descriptors: chains that do not fit wait (the segment
/// stays queued) until completed chains free descriptors; nothing stalls.
/// Held completions keep the fragments referenced.
#[test]
fn descriptor_budget_and_held_completions() {
    let mut net = net_with_sg_on_a(6, false);
    let (s, c) = accept_one(&mut net, 80);
    let live = Arc::new(AtomicUsize::new(0));
    let data = pattern(64 * 1024, 5);
    let mut refs = pages(&data, &live);
    net.na.hold_sg_completions(true);
    while !refs.is_empty() {
        match net.a.tcp_send_refs(s, &mut refs) {
            Ok(0) | Err(NetError::WouldBlock) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    net.now += 1;
    net.a.poll(net.now, &mut net.na);
    // At most 6 descriptors: with 1 header + 1..2 fragments per chain, 2..3 chains.
    let held = net.na.sg_in_flight();
    assert!(
        (2..=3).contains(&held),
        "{held} chains in a 6-descriptor ring"
    );
    let (_, refused) = net.na.sg_counts();
    assert!(refused > 0, "a full ring refused nothing");
    // The device still reads the fragments: the references are alive even
    // if the peer acknowledged them.
    for f in net.na.take_sent() {
        net.nb.inject(&f);
    }
    net.b.poll(net.now, &mut net.nb);
    for f in net.nb.take_sent() {
        net.na.inject(&f);
    }
    net.a.poll(net.now, &mut net.na);
    assert!(live.load(Ordering::SeqCst) > 0);
    net.na.hold_sg_completions(false);
    let mut got = Vec::new();
    assert!(net.run_until(
        |n| {
            let mut b = [0u8; 65536];
            while let Ok(k) = n.b.tcp_recv(c, &mut b) {
                if k == 0 {
                    break;
                }
                got.extend_from_slice(&b[..k]);
            }
            got.len() == data.len()
        },
        60_000
    ));
    assert!(got == data);
    // The last bytes are acknowledged (delayed ACK), then released.
    assert!(net.run_until(|n| n.a.stats().tcp_send_queued == 0, 5_000));
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

/// `write` copies once into an owned buffer, counted as application →
/// socket; with scatter-gather that is the only copy.
#[test]
fn write_is_one_copy_with_sg() {
    let mut net = net_with_sg_on_a(64, true);
    let (s, c) = accept_one(&mut net, 80);
    let data = pattern(1 << 20, 6);
    let mut sent = 0;
    let mut got = Vec::new();
    assert!(net.run_until(
        |n| {
            while sent < data.len() {
                match n.a.tcp_send(s, &data[sent..]) {
                    Ok(k) => sent += k,
                    Err(NetError::WouldBlock) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let mut b = [0u8; 65536];
            while let Ok(k) = n.b.tcp_recv(c, &mut b) {
                if k == 0 {
                    break;
                }
                got.extend_from_slice(&b[..k]);
            }
            got.len() == data.len()
        },
        60_000
    ));
    assert!(got == data);
    let cs = net.a.copy_stats();
    assert_eq!(cs.get(CopyStage::AppToSocket), 1 << 20, "{cs}");
    assert_eq!(cs.get(CopyStage::SocketToDevice), 0, "{cs}");
    let cb = net.b.copy_stats();
    assert_eq!(cb.get(CopyStage::SocketToApp), 1 << 20, "{cb}");
    assert!(cb.get(CopyStage::DeviceToSocket) >= 1 << 20, "{cb}");
}

/// References queued by one call leave together: three pages within the
/// initial congestion window go out as one TSO frame, not one per page.
#[test]
fn references_queued_together_leave_in_one_frame() {
    let mut net = net_with_sg_on_a(64, true);
    let (s, c) = accept_one(&mut net, 80);
    let live = Arc::new(AtomicUsize::new(0));
    let data = pattern(3 * 4096, 8);
    let mut refs = pages(&data, &live);
    let before = net.na.tso_frames;
    assert_eq!(net.a.tcp_send_refs(s, &mut refs), Ok(3 * 4096));
    net.now += 1;
    net.a.poll(net.now, &mut net.na);
    assert_eq!(net.na.tso_frames - before, 1, "one frame for three pages");
    let mut got = Vec::new();
    assert!(net.run_until(
        |n| {
            let mut b = [0u8; 65536];
            while let Ok(k) = n.b.tcp_recv(c, &mut b) {
                if k == 0 {
                    break;
                }
                got.extend_from_slice(&b[..k]);
            }
            got.len() == data.len()
        },
        10_000
    ));
    assert!(got == data);
}

/// A writer blocked on a full send queue is told "writable" once a quarter
/// of the queue is free, not for each acknowledged segment; a write still
/// takes whatever room there is.
#[test]
fn epollout_waits_for_a_quarter_of_the_send_queue() {
    let mut net = net_with_sg_on_a(64, false);
    let (s, c) = accept_one(&mut net, 8081);
    let tx_buffer = StackOptions::default().tcp.tx_buffer;
    let chunk = vec![7u8; 4096];
    let (mut low_room_seen, mut writable_seen, mut received) = (false, false, 0usize);
    let mut sent = 0usize;
    let total = 8 * tx_buffer;
    assert!(
        net.run_until(
            |n| {
                let room = n.a.tcp_send_room(s).unwrap_or(0);
                let out = n.a.readiness(s) & uk_net::EPOLLOUT != 0;
                assert!(
                    !out || room >= tx_buffer / 4,
                    "EPOLLOUT with {room} bytes free"
                );
                low_room_seen |= !out && room > 0;
                writable_seen |= out && sent < total;
                // Fill the queue, as a non-blocking writer does (after looking,
                // as it would on its next wake-up).
                while sent < total {
                    match n.a.tcp_send(s, &chunk[..chunk.len().min(total - sent)]) {
                        Ok(k) => sent += k,
                        Err(NetError::WouldBlock) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                // The reader drains a little at a time.
                let mut b = [0u8; 2048];
                if let Ok(k) = n.b.tcp_recv(c, &mut b) {
                    received += k;
                }
                received == total
            },
            120_000
        ),
        "received {received} of {total}"
    );
    assert!(
        low_room_seen,
        "the queue never sat between empty and a quarter free"
    );
    assert!(writable_seen);
}
