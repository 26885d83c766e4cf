//! TCP under a SYN flood and with thousands of idle connections, through
//! the whole stack (classifier, engine, egress) on an in-memory wire.

mod common;

use common::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpPacket,
};
use std::net::Ipv4Addr;
use uk_net::{EPOLLOUT, NetError};

/// A bare SYN from `src` (spoofed: nobody there answers), with an MSS option.
fn syn_frame(src: Ipv4Addr, src_port: u16, dst_port: u16, seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 24];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_src_addr(EthernetAddress(MAC_B));
    eth.set_dst_addr(EthernetAddress(MAC_A));
    eth.set_ethertype(EthernetProtocol::Ipv4);
    Ipv4Repr {
        src_addr: src,
        dst_addr: IP_A,
        next_header: IpProtocol::Tcp,
        payload_len: 24,
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
        t.set_header_len(24);
        t.set_window_len(65_535);
        let raw = t.into_inner();
        raw[13] = 0x02; // SYN
        raw[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    }
    let mut t = TcpPacket::new_unchecked(&mut f[34..]);
    t.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(IP_A));
    f
}

/// 100,000 spoofed SYNs while a real client connects and echoes 256 KiB:
/// the listener answers the flood with SYN cookies (no state), the client
/// gets in and its data arrives byte-exact, and the server's memory stays
/// bounded by the half-open limit.
#[test]
fn syn_flood_of_100k_spoofed_syns_while_a_real_connection_transfers() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(80, 128).unwrap();
    let mut server = EchoServer::new(l);
    let mut client = None;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut peak_conns = 0;
    let mut peak_bytes = 0;
    for i in 0..100_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Spoofed sources on our link (their replies go nowhere useful).
        let src = Ipv4Addr::new(10, 0, 0, 100 + (x % 150) as u8);
        let port = 1024 + (x >> 16) as u16 % 60_000;
        net.na.inject(&syn_frame(src, port, 80, (x >> 32) as u32));
        if i == 2_000 {
            // The half-open queue is full of spoofed SYNs by now.
            let c = net.b.tcp_connect(sa(IP_A, 80), None).unwrap();
            client = Some(EchoClient::new(c, pattern(256 * 1024, 9)));
        }
        if i % 256 == 255 {
            net.now += 1;
            net.poll();
            server.step(&mut net.a);
            if let Some(c) = client.as_mut() {
                c.step(&mut net.b);
            }
            // Whatever A sent to the spoofed hosts: gone.
            let _ = net.nb.take_sent().len();
            if i % 4096 == 4095 {
                let s = net.a.stats();
                peak_conns = peak_conns.max(s.tcp_connections);
                peak_bytes = peak_bytes.max(s.buffer_bytes);
            }
        }
    }
    let mut client = client.unwrap();
    assert!(
        net.run_until(
            |n| {
                server.step(&mut n.a);
                client.step(&mut n.b)
            },
            120_000
        ),
        "the real client was not served: got {} bytes",
        client.got.len()
    );
    assert!(client.got == client.data, "echo differs");
    let s = net.a.stats();
    eprintln!(
        "SYN flood: cookies sent {} accepted {} rejected {}; peak {} connections, {} bytes; listen_overflows {}; now {s:?}",
        s.syn_cookies_sent,
        s.syn_cookies_accepted,
        s.syn_cookies_rejected,
        peak_conns,
        peak_bytes,
        s.listen_overflows
    );
    assert!(s.syn_cookies_sent > 90_000, "{s:?}");
    assert!(
        s.syn_cookies_accepted >= 1,
        "the client came in on a cookie"
    );
    assert!(peak_conns <= 256 + 2, "half-open connections are bounded");
    assert!(peak_bytes < 1 << 20, "memory is bounded: {peak_bytes}");
}

/// 5,000 idle established connections: each costs the server well under
/// 1 KiB (no buffers), and a new client is still served.
#[test]
fn five_thousand_idle_connections_are_small() {
    const N: usize = 5_000;
    let mut net = Net::new();
    let l = net.a.tcp_listen(80, N + 16).unwrap();
    let mut accepted = Vec::new();
    let mut clients = Vec::new();
    for batch in 0..(N / 250) {
        for _ in 0..250 {
            clients.push(net.b.tcp_connect(sa(IP_A, 80), None).unwrap());
        }
        assert!(
            net.run_until(
                |n| {
                    while let Ok((id, _)) = n.a.tcp_accept(l) {
                        accepted.push(id);
                    }
                    accepted.len() == (batch + 1) * 250
                },
                30_000
            ),
            "batch {batch}: {} accepted",
            accepted.len()
        );
    }
    net.settle(1_000);
    assert!(clients.iter().all(|&c| net.b.readiness(c) & EPOLLOUT != 0));
    let s = net.a.stats();
    let per_conn = s.bytes_per_connection();
    let table = net.a.tcp_engine().table_bytes();
    eprintln!(
        "{N} idle connections: {} bytes in connections, {per_conn} bytes per connection (+{} bytes per connection of tables)",
        s.tcp_connection_bytes,
        table / N
    );
    assert_eq!(s.tcp_connections, N);
    assert!(per_conn < 1024, "{per_conn} bytes per idle connection");
    assert_eq!(s.tcp_send_queued + s.tcp_recv_queued, 0);
    for &id in &accepted[..10] {
        assert!(net.a.tcp_connection_bytes(id) < 1024);
    }
    // A new client is served among them.
    let mut server = EchoServer::new(l);
    let c = net.b.tcp_connect(sa(IP_A, 80), None).unwrap();
    let mut client = EchoClient::new(c, pattern(64 * 1024, 3));
    assert!(net.run_until(
        |n| {
            server.step(&mut n.a);
            client.step(&mut n.b)
        },
        30_000
    ));
    assert!(client.got == client.data);
    // The idle ones are still there and still work.
    let mut b = [0u8; 4];
    assert_eq!(
        net.b.tcp_recv(clients[0], &mut b),
        Err(NetError::WouldBlock)
    );
    assert_eq!(net.a.tcp_send(accepted[0], b"ping"), Ok(4));
    net.settle(1_000);
    let got: usize = clients
        .iter()
        .map(|&c| net.b.tcp_recv(c, &mut b).unwrap_or(0))
        .sum();
    assert_eq!(got, 4);
}
