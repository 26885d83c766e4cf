//! TCP segmentation offload: a stack on a device with TSO sends TCP frames
//! larger than the MTU, which the device (here the wire end, as QEMU's tap
//! backend does) cuts into MSS-sized segments; the MSS advertised in our SYNs
//! stays that of the real MTU.

mod common;

use common::*;
use smoltcp::wire::{EthernetFrame, Ipv4Packet, TcpOption, TcpPacket};

const TSO_MAX_FRAME: usize = 14 + 65535;

/// The MSS option of a TCP SYN frame, if the frame is one.
fn syn_mss(frame: &[u8]) -> Option<(bool, u16)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    if !tcp.syn() {
        return None;
    }
    let mut opts = tcp.options();
    while !opts.is_empty() {
        let (rest, opt) = TcpOption::parse(opts).ok()?;
        if let TcpOption::MaxSegmentSize(mss) = opt {
            return Some((tcp.ack(), mss));
        }
        if opt == TcpOption::EndOfList {
            break;
        }
        opts = rest;
    }
    None
}

/// Polls A once and returns the frames it sent (handing them on to B).
fn frames_from_a(net: &mut Net) -> Vec<Vec<u8>> {
    net.a.poll(net.now, &mut net.na);
    let sent = net.na.take_sent();
    for f in &sent {
        net.nb.inject(f);
    }
    sent
}

#[test]
fn echo_1mib_with_tso_byte_exact_in_mss_sized_segments() {
    let mut net = Net::with_tso_on_a(TSO_MAX_FRAME);
    let l = net.a.tcp_listen(7, 0).unwrap();
    let c = net.b.tcp_connect(sa(IP_A, 7), None).unwrap();
    let mut server = EchoServer::new(l);
    let mut client = EchoClient::new(c, pattern(1 << 20, 11));
    assert!(net.run_until(
        |n| {
            server.step(&mut n.a);
            client.step(&mut n.b)
        },
        120_000
    ));
    assert_eq!(client.got.len(), 1 << 20);
    assert!(client.got == client.data, "echo differs");
    // A handed super-segments to its device...
    let ca = net.a.counters();
    assert!(ca.tx_tso_frames > 0, "no TSO frames: {ca:?}");
    assert_eq!(net.na.tso_frames, ca.tx_tso_frames);
    assert!(
        ca.tx_frames < (1 << 20) / 1460,
        "{} frames for 1 MiB",
        ca.tx_frames
    );
    // ...and B received only valid frames of at most 1514 bytes (its
    // classifier drops oversized frames and bad checksums).
    let cb = net.b.counters();
    assert_eq!(cb.rx_dropped.total(), 0, "{cb:?}");
    assert!(cb.rx_frames > (1 << 20) / 1460, "{cb:?}");
    // B (no TSO) sent plain segments.
    assert_eq!(cb.tx_tso_frames, 0);
}

#[test]
fn syns_from_a_tso_device_advertise_the_real_mss() {
    let mut net = Net::with_tso_on_a(TSO_MAX_FRAME);
    // A connects: its SYN.
    let c = net.a.tcp_connect(sa(IP_B, 9), None).unwrap();
    let _l = net.b.tcp_listen(9, 0).unwrap();
    let mut syn = None;
    for _ in 0..100 {
        for f in frames_from_a(&mut net) {
            syn = syn.or(syn_mss(&f));
        }
        if syn.is_some() {
            break;
        }
        net.b.poll(net.now, &mut net.nb);
        net.now += 1;
    }
    assert_eq!(syn, Some((false, 1460)), "A's SYN");
    assert!(net.run_until(|n| n.a.readiness(c) & uk_net::EPOLLOUT != 0, 10_000));

    // A accepts: its SYN-ACK.
    let l = net.a.tcp_listen(8, 0).unwrap();
    let _c = net.b.tcp_connect(sa(IP_A, 8), None).unwrap();
    let mut synack = None;
    for _ in 0..100 {
        net.b.poll(net.now, &mut net.nb);
        for f in frames_from_a(&mut net) {
            synack = synack.or(syn_mss(&f));
        }
        if synack.is_some() {
            break;
        }
        net.now += 1;
    }
    assert_eq!(synack, Some((true, 1460)), "A's SYN-ACK");
    assert!(net.run_until(|n| n.a.tcp_accept(l).is_ok(), 10_000));
}

#[test]
fn without_tso_nothing_exceeds_the_mtu() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(7, 0).unwrap();
    let c = net.b.tcp_connect(sa(IP_A, 7), None).unwrap();
    let mut server = EchoServer::new(l);
    let mut client = EchoClient::new(c, pattern(256 << 10, 5));
    assert!(net.run_until(
        |n| {
            server.step(&mut n.a);
            client.step(&mut n.b)
        },
        120_000
    ));
    assert!(client.got == client.data, "echo differs");
    assert_eq!(net.a.counters().tx_tso_frames, 0);
    assert_eq!(net.na.tso_frames, 0);
}
