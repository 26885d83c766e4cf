//! ARP, ICMP, UDP, DHCP, static configuration, hostile input and the
//! per-packet cost of the socket table.

mod common;

use std::net::Ipv4Addr;

use common::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress,
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket,
    UdpPacket, UdpRepr,
};
use uk_net::testing::Wire;
use uk_net::{EPOLLIN, EPOLLOUT, NetConfig, NetError, NetStack, Nic, SocketOptions, StackOptions};

#[test]
fn arp_and_ping() {
    let mut net = Net::new();
    assert!(net.a.is_ready(), "no gateway: ready once addressed");
    assert!(!net.b.is_ready(), "gateway not resolved yet");
    net.a.ping(IP_B, 1, b"hello").unwrap();
    net.b.ping(IP_A, 2, b"hello").unwrap();
    let (mut ra, mut rb) = (None, None);
    assert!(net.run_until(
        |n| {
            ra = ra.or(n.a.ping_reply());
            rb = rb.or(n.b.ping_reply());
            ra.is_some() && rb.is_some()
        },
        5_000
    ));
    assert_eq!(ra, Some((IP_B, 1)));
    assert_eq!(rb, Some((IP_A, 2)));
    assert!(net.b.is_ready());
    assert!(net.a.counters().rx_frames >= 2);
    assert_eq!(net.a.counters().rx_dropped.total(), 0);
}

#[test]
fn static_gateway_resolved_before_ready() {
    // B's gateway is A: B becomes ready only after A answered B's ARP request.
    let mut net = Net::new();
    net.b.poll(0, &mut net.nb);
    assert!(!net.b.is_ready());
    let sent = net.nb.take_sent();
    assert_eq!(sent.len(), 1, "one ARP request for the gateway");
    assert_eq!(&sent[0][12..14], &[0x08, 0x06]);
    net.na.inject(&sent[0]);
    let mut changed = false;
    assert!(net.run_until(
        |n| {
            changed |= n.b.is_ready();
            changed
        },
        1_000
    ));
    // The first connection needs no ARP round trip: SYN leaves at once.
    let l = net.a.tcp_listen(80, 0).unwrap();
    let c = net.b.tcp_connect(sa(IP_A, 80), None).unwrap();
    let r = net.b.poll(net.now, &mut net.nb);
    assert!(r.next_poll_ms.is_some());
    let frames = net.nb.take_sent();
    assert_eq!(frames.len(), 1);
    assert_eq!(
        &frames[0][12..14],
        &[0x08, 0x00],
        "a SYN, not an ARP request"
    );
    for f in &frames {
        net.na.inject(f);
    }
    assert!(net.run_until(|n| n.b.readiness(c) & EPOLLOUT != 0, 1_000));
    let _ = l;
}

#[test]
fn gateway_arp_is_retried_until_answered() {
    let (mut na, nb) = Wire::pair(MAC_A, MAC_B, 1500, 64);
    let mut s = NetStack::new(
        &mut na,
        NetConfig::Static {
            addr: cidr(IP_A),
            gateway: Some([10, 0, 0, 254].into()),
        },
        StackOptions::default(),
        0,
    );
    let mut now = 0;
    while now <= 5_000 {
        let r = s.poll(now, &mut na);
        now = r.next_poll_ms.unwrap().max(now + 1);
    }
    assert!(!s.is_ready());
    let arps = nb_frames(&nb);
    assert!((5..=7).contains(&arps), "{arps} ARP requests in 5 s");
}

fn nb_frames(nb: &uk_net::testing::WireEnd) -> usize {
    nb.pending_rx()
}

#[test]
fn udp_round_trip() {
    let mut net = Net::new();
    let ua = net.a.udp_bind(5000).unwrap();
    let ub = net.b.udp_bind(0).unwrap();
    let pb = net.b.local_addr(ub).unwrap().port();
    assert!(pb >= 49152);
    assert_eq!(net.b.udp_send_to(ub, b"ping!", sa(IP_A, 5000)), Ok(5));
    let mut buf = [0u8; 64];
    let mut got = None;
    assert!(net.run_until(
        |n| {
            got = n.a.udp_recv_from(ua, &mut buf).ok();
            got.is_some()
        },
        2_000
    ));
    assert_eq!(got, Some((5, sa(IP_B, pb))));
    assert_eq!(&buf[..5], b"ping!");
    assert_eq!(net.a.readiness(ua) & EPOLLIN, 0);
    net.a.udp_send_to(ua, b"pong", sa(IP_B, pb)).unwrap();
    assert!(net.run_until(|n| n.b.readiness(ub) & EPOLLIN != 0, 2_000));
    let (k, from) = net.b.udp_recv_from(ub, &mut buf).unwrap();
    assert_eq!((&buf[..k], from), (&b"pong"[..], sa(IP_A, 5000)));
    assert_eq!(net.b.udp_recv_from(ub, &mut buf), Err(NetError::WouldBlock));
    assert_eq!(
        net.b.udp_send_to(ub, &vec![0u8; 70_000], sa(IP_A, 5000)),
        Err(NetError::NoBufs)
    );
}

// ----- DHCP ------------------------------------------------------------------

const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x53];
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 1);
const LEASE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 42);
const DNS1: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 53);
const DNS2: Ipv4Addr = Ipv4Addr::new(9, 9, 9, 9);

fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + payload_len];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_src_addr(EthernetAddress(src_mac));
    eth.set_dst_addr(EthernetAddress(dst_mac));
    eth.set_ethertype(EthernetProtocol::Ipv4);
    let caps = ChecksumCapabilities::default();
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload_len,
        hop_limit: 64,
    }
    .emit(&mut Ipv4Packet::new_unchecked(&mut f[14..34]), &caps);
    UdpRepr {
        src_port: ports.0,
        dst_port: ports.1,
    }
    .emit(
        &mut UdpPacket::new_unchecked(&mut f[34..]),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        payload_len,
        fill,
        &caps,
    );
    f
}

/// Answers DHCP discover/request and ARP for the router; returns replies.
fn fake_dhcp_server(frame: &[u8]) -> Option<Vec<u8>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() == EthernetProtocol::Arp {
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?;
        let ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = arp
        else {
            return None;
        };
        if target_protocol_addr != SERVER_IP {
            return None;
        }
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(SERVER_MAC),
            source_protocol_addr: SERVER_IP,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        let mut f = vec![0u8; 14 + reply.buffer_len()];
        let mut e = EthernetFrame::new_unchecked(&mut f[..]);
        e.set_src_addr(EthernetAddress(SERVER_MAC));
        e.set_dst_addr(source_hardware_addr);
        e.set_ethertype(EthernetProtocol::Arp);
        reply.emit(&mut ArpPacket::new_unchecked(e.payload_mut()));
        return Some(f);
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    if udp.dst_port() != 67 {
        return None;
    }
    let pkt = DhcpPacket::new_checked(udp.payload()).ok()?;
    let req = DhcpRepr::parse(&pkt).ok()?;
    let message_type = match req.message_type {
        DhcpMessageType::Discover => DhcpMessageType::Offer,
        DhcpMessageType::Request => DhcpMessageType::Ack,
        _ => return None,
    };
    let reply = DhcpRepr {
        message_type,
        transaction_id: req.transaction_id,
        secs: 0,
        client_hardware_address: req.client_hardware_address,
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: LEASE_IP,
        server_ip: SERVER_IP,
        router: Some(SERVER_IP),
        subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(SERVER_IP),
        parameter_request_list: None,
        dns_servers: Some([DNS1, DNS2].into_iter().collect()),
        max_size: None,
        lease_duration: Some(3600),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let len = reply.buffer_len();
    Some(udp_frame(
        SERVER_MAC,
        [0xff; 6],
        SERVER_IP,
        Ipv4Addr::BROADCAST,
        (67, 68),
        len,
        |p| {
            reply
                .emit(&mut DhcpPacket::new_unchecked(p))
                .expect("dhcp emit");
        },
    ))
}

#[test]
fn dhcp_lease_then_ready() {
    let (mut na, mut server) = Wire::pair(MAC_A, SERVER_MAC, 1500, 64);
    let mut s = NetStack::new(&mut na, NetConfig::Dhcp, StackOptions::default(), 0);
    assert!(s.ip_info().is_none());
    let mut now = 0;
    let mut config_changes = 0;
    while now < 30_000 && !s.is_ready() {
        let r = s.poll(now, &mut na);
        config_changes += usize::from(r.config_changed);
        let mut replied = false;
        while let Some(f) = server.receive() {
            if let Some(reply) = fake_dhcp_server(&f) {
                server.transmit(reply.len(), |b| b.copy_from_slice(&reply));
                replied = true;
            }
        }
        if !replied {
            now = r.next_poll_ms.unwrap_or(now + 100).max(now + 1);
        }
    }
    assert!(s.is_ready(), "no lease within 30 s");
    assert!(config_changes >= 1);
    let info = s.ip_info().unwrap();
    assert_eq!(info.addr.address(), LEASE_IP);
    assert_eq!(info.addr.prefix_len(), 24);
    assert_eq!(info.gateway, Some(SERVER_IP));
    assert_eq!(info.dns, vec![DNS1, DNS2]);
    assert_eq!(s.udp_bind(68), Err(NetError::AddrInUse));
}

// ----- hostile input ------------------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn tcp_frame(src_port: u16, dst_port: u16, flags: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + payload.len()];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_src_addr(EthernetAddress(MAC_B));
    eth.set_dst_addr(EthernetAddress(MAC_A));
    eth.set_ethertype(EthernetProtocol::Ipv4);
    Ipv4Repr {
        src_addr: IP_B,
        dst_addr: IP_A,
        next_header: IpProtocol::Tcp,
        payload_len: 20 + payload.len(),
        hop_limit: 64,
    }
    .emit(
        &mut Ipv4Packet::new_unchecked(&mut f[14..34]),
        &ChecksumCapabilities::default(),
    );
    {
        let mut t = TcpPacket::new_unchecked(&mut f[34..]);
        t.set_src_port(src_port);
        t.set_dst_port(dst_port);
        t.set_seq_number(smoltcp::wire::TcpSeqNumber(seq as i32));
        t.set_header_len(20);
        t.set_window_len(1024);
        let raw = t.into_inner();
        raw[13] = flags;
        raw[20..].copy_from_slice(payload);
    }
    let mut t = TcpPacket::new_unchecked(&mut f[34..]);
    t.fill_checksum(&IpAddress::Ipv4(IP_B), &IpAddress::Ipv4(IP_A));
    f
}

#[test]
fn hostile_frames_are_counted_not_fatal() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(80, 16).unwrap();
    let c = net.b.tcp_connect(sa(IP_A, 80), None).unwrap();
    assert!(net.run_until(|n| n.b.readiness(c) & EPOLLOUT != 0, 1_000));
    net.settle(100);
    let good = udp_frame(MAC_B, MAC_A, IP_B, IP_A, (1, 7), 4, |p| {
        p.copy_from_slice(b"abcd")
    });

    let check = |net: &mut Net, frame: &[u8], what: &str, get: fn(&uk_net::RxDrops) -> u64| {
        let before = get(&net.a.counters().rx_dropped);
        net.na.inject(frame);
        net.a.poll(net.now, &mut net.na);
        assert_eq!(get(&net.a.counters().rx_dropped), before + 1, "{what}");
    };
    check(&mut net, &good[..10], "short ethernet", |d| d.truncated);
    check(&mut net, &good[..30], "short ipv4", |d| d.truncated);
    check(&mut net, &vec![0u8; 3000], "oversize", |d| d.oversize);
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0xff;
    check(&mut net, &bad, "udp checksum", |d| d.bad_checksum);
    let mut bad = good.clone();
    bad[22] ^= 1; // TTL
    check(&mut net, &bad, "ip checksum", |d| d.bad_checksum);
    let mut bad = good.clone();
    bad[0..6].copy_from_slice(&[0x02, 9, 9, 9, 9, 9]);
    check(&mut net, &bad, "wrong mac", |d| d.not_for_us);
    let mut bad = good.clone();
    bad[12..14].copy_from_slice(&[0x86, 0xdd]);
    check(&mut net, &bad, "ipv6", |d| d.unknown_ethertype);
    let mut bad = good.clone();
    bad[14] = 0x55; // version 5
    check(&mut net, &bad, "bad version", |d| d.malformed);
    let mut bad = good.clone();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut bad[14..]);
        ip.set_more_frags(true);
        ip.fill_checksum();
    }
    check(&mut net, &bad, "fragment", |d| d.unsupported);
    let mut bad = good.clone();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut bad[14..]);
        ip.set_dst_addr(Ipv4Addr::new(10, 0, 0, 77));
        ip.fill_checksum();
    }
    check(&mut net, &bad, "other host", |d| d.not_for_us);
    let mut bad = tcp_frame(1000, 80, 0x02, 1, b"");
    bad[34 + 16] ^= 0x55;
    check(&mut net, &bad, "tcp checksum", |d| d.bad_checksum);

    // 100k random frames: raw noise, noise behind a plausible header, and
    // random TCP segments with valid checksums aimed at our ports.
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let rx_before = net.a.counters().rx_frames;
    for i in 0..100_000u32 {
        let kind = rng.next() % 4;
        let frame = match kind {
            0 => {
                let len = (rng.next() % 1600) as usize;
                (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
            }
            1 | 2 => {
                let len = 14 + (rng.next() % 200) as usize;
                let mut f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                f[0..6].copy_from_slice(&MAC_A);
                f[12..14].copy_from_slice(if kind == 1 {
                    &[0x08, 0x00]
                } else {
                    &[0x08, 0x06]
                });
                if kind == 1 && f.len() >= 34 {
                    f[14] = 0x45;
                    f[30..34].copy_from_slice(&IP_A.octets());
                    let n = (f.len() - 14) as u16;
                    f[16..18].copy_from_slice(&n.to_be_bytes());
                    f[20..22].copy_from_slice(&[0, 0]);
                    Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
                }
                f
            }
            _ => {
                let port = if rng.next().is_multiple_of(2) {
                    80
                } else {
                    rng.next() as u16
                };
                let plen = (rng.next() % 64) as usize;
                let payload: Vec<u8> = (0..plen).map(|_| rng.next() as u8).collect();
                // Never RST/SYN-flood the test's own connection: random ports only.
                tcp_frame(
                    40_000 + (rng.next() % 1000) as u16,
                    port,
                    rng.next() as u8,
                    rng.next() as u32,
                    &payload,
                )
            }
        };
        net.na.inject(&frame);
        if i % 128 == 0 {
            net.now += 1;
            net.poll();
            net.poll();
        }
    }
    net.settle(200_000);
    let cnt = net.a.counters();
    assert!(cnt.rx_frames - rx_before >= 100_000);
    assert!(cnt.rx_dropped.total() > 50_000, "{cnt:?}");
    assert!(cnt.rx_dropped.truncated > 0 && cnt.rx_dropped.bad_checksum > 0);
    assert!(cnt.rx_dropped.not_for_us > 0 && cnt.rx_dropped.unknown_ethertype > 0);
    assert!(cnt.rx_dropped.malformed > 0);
    eprintln!("hostile: {cnt:?}");

    // Still a working stack: the old connection and a new one echo.
    let mut server = EchoServer::new(l);
    let c2 = net.b.tcp_connect(sa(IP_A, 80), None).unwrap();
    let mut cl1 = EchoClient::new(c, pattern(10_000, 1));
    let mut cl2 = EchoClient::new(c2, pattern(10_000, 2));
    assert!(net.run_until(
        |n| {
            server.step(&mut n.a);
            let a = cl1.step(&mut n.b);
            cl2.step(&mut n.b) && a
        },
        60_000
    ));
    assert!(cl1.got == cl1.data && cl2.got == cl2.data);
}

// ----- scaling ------------------------------------------------------------------

/// Opens `n` idle connections, then measures socket visits per frame for
/// traffic on one of them.
fn visits_per_frame(n: usize) -> (f64, f64) {
    let small = SocketOptions {
        rx_buffer: 2048,
        tx_buffer: 2048,
        tx_buffer_max: 2048,
        nodelay: true,
    };
    let opts = StackOptions {
        tcp: small,
        ..StackOptions::default()
    };
    let mut net = Net::with_options(opts, opts);
    let l = net.a.tcp_listen(80, 4096).unwrap();
    let mut server = EchoServer::new(l);
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(net.b.tcp_connect(sa(IP_A, 80), None).unwrap());
    }
    assert!(net.run_until(
        |net| {
            server.step(&mut net.a);
            server.conns.len() == n
        },
        60_000
    ));
    net.settle(5_000);
    let before = net.a.stats();
    let mut total = 0;
    for round in 0..50u8 {
        let mut cl = EchoClient::new(clients[0], vec![round; 100]);
        assert!(net.run_until(
            |net| {
                server.step(&mut net.a);
                cl.step(&mut net.b)
            },
            5_000
        ));
        total += cl.got.len();
    }
    assert_eq!(total, 5_000);
    net.settle(1_000);
    let after = net.a.stats();
    let frames = (after.frames_dispatched - before.frames_dispatched) as f64;
    let visits = (after.socket_visits - before.socket_visits) as f64;
    (visits / frames, frames)
}

#[test]
fn per_packet_cost_is_flat_from_10_to_2000_connections() {
    let (v10, f10) = visits_per_frame(10);
    let (v2000, f2000) = visits_per_frame(2000);
    eprintln!(
        "visits/frame: 10 conns {v10:.2} ({f10} frames), 2000 conns {v2000:.2} ({f2000} frames)"
    );
    assert!(v10 < 10.0, "{v10}");
    assert!(v2000 <= v10 * 1.1 + 0.5, "grew from {v10} to {v2000}");
}

#[test]
fn unconfigured_shard_takes_another_stacks_address() {
    let (mut na, _nb) = Wire::pair(MAC_A, MAC_B, 1500, 64);
    let mut s = NetStack::new(&mut na, NetConfig::Unconfigured, StackOptions::default(), 0);
    let r = s.poll(0, &mut na);
    assert!(s.ip_info().is_none() && !s.is_ready());
    assert!(!r.config_changed);
    // No DHCP client runs: nothing is sent.
    assert_eq!(na.take_sent().len(), 0);
    let info = uk_net::IpInfo {
        addr: cidr(IP_A),
        gateway: None,
        dns: vec![[10, 0, 0, 53].into()],
    };
    s.set_config(Some(&info));
    assert_eq!(s.ip_info(), Some(info));
    assert!(s.is_ready());
    assert!(s.poll(1, &mut na).config_changed);
    s.set_config(None);
    assert!(s.ip_info().is_none());
}
