//! TCP over two stacks on an in-memory wire.

mod common;

use common::*;
use uk_net::{
    CopyStage, EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, NetError, SocketId,
    SocketOptions, StackOptions, TcpPayload,
};

fn connect_all(net: &mut Net, ids: &[SocketId]) {
    let ids = ids.to_vec();
    assert!(
        net.run_until(
            |n| ids.iter().all(|&id| n.b.readiness(id) & EPOLLOUT != 0),
            10_000
        ),
        "connections did not establish"
    );
    // Let the final ACKs reach the server.
    net.settle(100);
}

#[test]
fn echo_1mib_byte_exact() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(7, 0).unwrap();
    let c = net.b.tcp_connect(sa(IP_A, 7), None).unwrap();
    let mut server = EchoServer::new(l);
    let mut client = EchoClient::new(c, pattern(1 << 20, 7));
    assert!(net.run_until(
        |n| {
            server.step(&mut n.a);
            client.step(&mut n.b)
        },
        120_000
    ));
    assert_eq!(client.got.len(), 1 << 20);
    assert!(client.got == client.data, "echo differs");
    let cs = net.b.copy_stats();
    assert_eq!(cs.get(CopyStage::AppToSocket), 1 << 20);
    assert_eq!(cs.get(CopyStage::SocketToApp), 1 << 20);
    assert_eq!(net.a.stats().accepted, 1);
}

#[test]
fn two_hundred_concurrent_echo_64k() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(7, 256).unwrap();
    let mut server = EchoServer::new(l);
    let mut clients: Vec<EchoClient> = (0..200)
        .map(|i| {
            let id = net.b.tcp_connect(sa(IP_A, 7), None).unwrap();
            EchoClient::new(id, pattern(64 * 1024, i + 1))
        })
        .collect();
    assert!(net.run_until(
        |n| {
            server.step(&mut n.a);
            let mut all = true;
            for c in &mut clients {
                all &= c.step(&mut n.b);
            }
            all
        },
        600_000
    ));
    for c in &clients {
        assert!(c.got == c.data, "echo differs on {:?}", c.id);
    }
    assert_eq!(server.conns.len(), 200);
    assert_eq!(net.a.stats().listen_overflows, 0);
}

#[test]
fn burst_of_100_connects_all_accepted() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(80, 128).unwrap();
    // All SYNs leave in one poll, before the server accepts anything.
    let ids: Vec<_> = (0..100)
        .map(|_| net.b.tcp_connect(sa(IP_A, 80), None).unwrap())
        .collect();
    connect_all(&mut net, &ids);
    assert_ne!(net.a.readiness(l) & EPOLLIN, 0);
    let mut accepted = Vec::new();
    while let Ok((id, peer)) = net.a.tcp_accept(l) {
        assert_eq!(*peer.ip(), IP_B);
        accepted.push(id);
    }
    assert_eq!(accepted.len(), 100);
    assert_eq!(net.a.stats().listen_overflows, 0);
    assert_eq!(net.a.tcp_accept(l), Err(NetError::WouldBlock));
    assert_eq!(net.a.readiness(l) & EPOLLIN, 0);
    // Each accepted socket is a working connection.
    for (i, &id) in accepted.iter().enumerate() {
        assert_eq!(net.a.tcp_send(id, &[i as u8]), Ok(1));
    }
    net.settle(1_000);
    let mut total = 0;
    for &id in &ids {
        let mut b = [0u8; 4];
        total += net.b.tcp_recv(id, &mut b).unwrap();
    }
    assert_eq!(total, 100);
}

/// The backlog bounds established connections not yet accepted: with it
/// full, further SYNs are dropped (not refused) and retransmitted by the
/// clients, who get in once the application accepts. (With smoltcp the
/// backlog also counted half-open connections; the TCP engine bounds those
/// separately, with SYN cookies beyond `syn_backlog`.)
#[test]
fn backlog_overflow_drops_syns_until_accepted() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(80, 4).unwrap();
    let first: Vec<_> = (0..4)
        .map(|_| net.b.tcp_connect(sa(IP_A, 80), None).unwrap())
        .collect();
    connect_all(&mut net, &first);
    let rest: Vec<_> = (0..6)
        .map(|_| net.b.tcp_connect(sa(IP_A, 80), None).unwrap())
        .collect();
    net.run_until(|_| false, 500);
    assert!(
        rest.iter().all(|&id| net.b.readiness(id) & EPOLLOUT == 0),
        "the backlog is full"
    );
    assert!(
        rest.iter().all(|&id| net.b.readiness(id) & EPOLLERR == 0),
        "nobody is refused"
    );
    assert!(net.a.stats().listen_overflows >= 6);
    // Accepting frees backlog room: the retransmitted SYNs get in, all ten.
    let mut n_acc = 0;
    assert!(net.run_until(
        |n| {
            while n.a.tcp_accept(l).is_ok() {
                n_acc += 1;
            }
            n_acc == 10
        },
        30_000
    ));
    assert!(rest.iter().all(|&id| net.b.readiness(id) & EPOLLOUT != 0));
}

#[test]
fn closing_listener_resets_unaccepted_connections() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(80, 8).unwrap();
    let ids: Vec<_> = (0..3)
        .map(|_| net.b.tcp_connect(sa(IP_A, 80), None).unwrap())
        .collect();
    connect_all(&mut net, &ids);
    net.a.tcp_close(l).unwrap();
    assert!(net.run_until(
        |n| ids.iter().all(|&id| n.b.readiness(id) & EPOLLERR != 0),
        5_000
    ));
    let mut b = [0u8; 8];
    assert_eq!(net.b.tcp_recv(ids[0], &mut b), Err(NetError::ConnReset));
    net.settle(1_000);
    assert_eq!(net.a.socket_count(), 0);
    // Port is free again.
    net.a.tcp_listen(80, 8).unwrap();
}

#[test]
fn graceful_close_delivers_all_data_then_eof() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(9, 0).unwrap();
    let c = net.b.tcp_connect(sa(IP_A, 9), None).unwrap();
    connect_all(&mut net, &[c]);
    let (s, _) = net.a.tcp_accept(l).unwrap();
    // Queue more than fits in one window, then close at once.
    let data = pattern(60_000, 3);
    assert_eq!(net.a.tcp_send(s, &data), Ok(60_000));
    net.a.tcp_close(s).unwrap();
    assert_eq!(net.a.tcp_send(s, b"x"), Err(NetError::BadFd));
    let mut got = Vec::new();
    let mut eof = false;
    assert!(net.run_until(
        |n| {
            let mut b = [0u8; 4096];
            loop {
                match n.b.tcp_recv(c, &mut b) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(k) => got.extend_from_slice(&b[..k]),
                    Err(NetError::WouldBlock) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            eof
        },
        10_000
    ));
    assert!(got == data);
    let r = net.b.readiness(c);
    assert_eq!(r & (EPOLLIN | EPOLLRDHUP), EPOLLIN | EPOLLRDHUP);
    assert_eq!(r & EPOLLHUP, 0, "our write half is still open");
    // Close our side too; both ends go away (server after TIME-WAIT).
    net.b.tcp_close(c).unwrap();
    assert!(net.run_until(
        |n| n.a.socket_count() == 1 && n.b.socket_count() == 0,
        30_000
    ));
}

#[test]
fn peer_close_and_reset_readiness() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(9, 0).unwrap();
    let c1 = net.b.tcp_connect(sa(IP_A, 9), None).unwrap();
    let c2 = net.b.tcp_connect(sa(IP_A, 9), None).unwrap();
    connect_all(&mut net, &[c1, c2]);
    let (s1, _) = net.a.tcp_accept(l).unwrap();
    let (s2, _) = net.a.tcp_accept(l).unwrap();
    assert_eq!(net.b.readiness(c1), EPOLLOUT);

    // Graceful: FIN -> IN|RDHUP; after our shutdown too -> HUP.
    net.a.tcp_close(s1).unwrap();
    assert!(net.run_until(|n| n.b.readiness(c1) & EPOLLRDHUP != 0, 5_000));
    assert_eq!(
        net.b.readiness(c1) & (EPOLLIN | EPOLLOUT),
        EPOLLIN | EPOLLOUT
    );
    let mut b = [0u8; 8];
    assert_eq!(net.b.tcp_recv(c1, &mut b), Ok(0));
    net.b.tcp_shutdown_write(c1).unwrap();
    assert!(net.run_until(|n| n.b.readiness(c1) & EPOLLHUP != 0, 5_000));

    // Abort: RST -> ERR|HUP, ECONNRESET once, then EOF / EPIPE.
    net.a.tcp_abort(s2).unwrap();
    assert!(net.run_until(|n| n.b.readiness(c2) & EPOLLERR != 0, 5_000));
    assert_eq!(
        net.b.readiness(c2) & (EPOLLHUP | EPOLLRDHUP | EPOLLIN),
        EPOLLHUP | EPOLLRDHUP | EPOLLIN
    );
    assert_eq!(net.b.tcp_recv(c2, &mut b), Err(NetError::ConnReset));
    assert_eq!(net.b.tcp_recv(c2, &mut b), Ok(0));
    assert_eq!(net.b.tcp_send(c2, b"x"), Err(NetError::BrokenPipe));
}

#[test]
fn connect_to_closed_port_is_refused() {
    let mut net = Net::new();
    let c = net.b.tcp_connect(sa(IP_A, 1234), None).unwrap();
    assert!(net.run_until(|n| n.b.readiness(c) & EPOLLERR != 0, 5_000));
    let mut b = [0u8; 1];
    assert_eq!(net.b.tcp_recv(c, &mut b), Err(NetError::ConnRefused));
    assert_eq!(NetError::ConnRefused.errno(), 111);
}

#[test]
fn connect_times_out_without_peer() {
    let o = StackOptions {
        connect_timeout_ms: 5_000,
        ..StackOptions::default()
    };
    let mut net = Net::with_options(StackOptions::default(), o);
    // 10.0.0.99 never answers ARP.
    let c = net
        .b
        .tcp_connect(sa([10, 0, 0, 99].into(), 80), None)
        .unwrap();
    assert!(net.run_until(|n| n.b.readiness(c) & EPOLLERR != 0, 20_000));
    let mut b = [0u8; 1];
    assert_eq!(net.b.tcp_recv(c, &mut b), Err(NetError::TimedOut));
}

#[test]
fn api_errors() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(80, 1).unwrap();
    assert_eq!(net.a.tcp_listen(80, 1), Err(NetError::AddrInUse));
    assert_eq!(net.a.tcp_send(l, b"x"), Err(NetError::InvalidInput));
    assert_eq!(
        net.a.tcp_recv(SocketId::from_u32(999), &mut [0]),
        Err(NetError::BadFd)
    );
    assert_eq!(
        net.b.tcp_connect(sa(IP_A, 0), None),
        Err(NetError::InvalidInput)
    );
    let c = net.b.tcp_connect(sa(IP_A, 80), Some(5555)).unwrap();
    assert_eq!(
        net.b.tcp_connect(sa(IP_A, 80), Some(5555)),
        Err(NetError::AddrInUse)
    );
    assert_eq!(net.b.tcp_send(c, b"early"), Err(NetError::WouldBlock));
    assert_eq!(net.b.local_addr(c).unwrap(), sa(IP_B, 5555));
    assert_eq!(net.b.peer_addr(c).unwrap(), sa(IP_A, 80));
    assert_eq!(net.a.local_addr(l).unwrap().port(), 80);
    assert_eq!(net.a.peer_addr(l), Err(NetError::NotConnected));
    let u = net.a.udp_bind(53).unwrap();
    assert_eq!(net.a.udp_bind(53), Err(NetError::AddrInUse));
    assert_eq!(net.a.tcp_close(u), Err(NetError::InvalidInput));
    net.a.close(u).unwrap();
    assert_eq!(net.a.close(u), Err(NetError::BadFd));
}

#[test]
fn send_refs_queues_without_copying() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(9, 0).unwrap();
    let c = net.b.tcp_connect(sa(IP_A, 9), None).unwrap();
    connect_all(&mut net, &[c]);
    let (s, _) = net.a.tcp_accept(l).unwrap();
    let body: Vec<u8> = (0..1000).map(|i| i as u8).collect();
    let mut refs: std::collections::VecDeque<TcpPayload> =
        [body[..600].to_vec(), body[600..].to_vec()]
            .into_iter()
            .map(TcpPayload::from)
            .collect();
    let n = net.b.tcp_send_refs(c, &mut refs).unwrap();
    assert_eq!(n, 1000);
    assert!(refs.is_empty());
    assert_eq!(net.b.copy_stats().get(CopyStage::AppToSocket), 0);
    let mut got = Vec::new();
    assert!(net.run_until(
        |n| {
            let mut b = [0u8; 2000];
            if let Ok(k) = n.a.tcp_recv(s, &mut b) {
                got.extend_from_slice(&b[..k]);
            }
            got.len() >= 1000
        },
        1_000
    ));
    assert_eq!(got, body);
    // A full buffer reports WouldBlock.
    let small = SocketOptions {
        rx_buffer: 1024,
        tx_buffer: 1024,
        tx_buffer_max: 0,
        nodelay: true,
    };
    let l2 = net.a.tcp_listen_with(10, 0, small).unwrap();
    let c2 = net.b.tcp_connect_with(sa(IP_A, 10), None, small).unwrap();
    connect_all(&mut net, &[c2]);
    let _ = l2;
    let mut sent = 0;
    loop {
        match net.b.tcp_send(c2, &[0u8; 512]) {
            Ok(n) => sent += n,
            Err(NetError::WouldBlock) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(sent, 1024);
    assert_eq!(net.b.readiness(c2) & EPOLLOUT, 0);
}

#[test]
fn server_closed_connections_leave_time_wait_and_the_listener_keeps_serving() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(80, 64).unwrap();
    for round in 0..3u64 {
        let ids: Vec<_> = (0..20)
            .map(|_| net.b.tcp_connect(sa(IP_A, 80), None).unwrap())
            .collect();
        connect_all(&mut net, &ids);
        let mut accepted = Vec::new();
        assert!(
            net.run_until(
                |n| {
                    while let Ok((id, _)) = n.a.tcp_accept(l) {
                        accepted.push(id);
                    }
                    accepted.len() == 20
                },
                10_000
            ),
            "round {round}: not all accepted"
        );
        // The server sends a little and closes first: it ends in TIME-WAIT.
        for &id in &accepted {
            net.a.tcp_send(id, b"bye").unwrap();
            net.a.tcp_close(id).unwrap();
        }
        assert!(
            net.run_until(
                |n| ids.iter().all(|&id| n.b.readiness(id) & EPOLLRDHUP != 0),
                10_000
            ),
            "round {round}: FINs did not arrive"
        );
        for &id in &ids {
            net.b.tcp_close(id).unwrap();
        }
        net.settle(2_000);
    }
    // After TIME-WAIT has run out for the orphans, only the listener remains.
    assert!(
        net.run_until(|n| n.a.socket_count() == 1, 30_000),
        "sockets left: {}",
        net.a.socket_count()
    );
}

/// A connection we close first leaves no socket and no buffers behind:
/// TIME-WAIT is a compact record, which expires on its own. (Adjusted from
/// the smoltcp version, which counted armed listening sockets' buffers.)
#[test]
fn time_wait_is_a_record_not_a_socket() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(80, 64).unwrap();
    assert_eq!(net.a.stats().buffer_bytes, 0, "a listener holds no buffers");
    let ids: Vec<_> = (0..20)
        .map(|_| net.b.tcp_connect(sa(IP_A, 80), None).unwrap())
        .collect();
    connect_all(&mut net, &ids);
    let mut accepted = Vec::new();
    assert!(net.run_until(
        |n| {
            while let Ok((id, _)) = n.a.tcp_accept(l) {
                accepted.push(id);
            }
            accepted.len() == 20
        },
        10_000
    ));
    let s = net.a.stats();
    assert_eq!(s.tcp_connections, 20);
    eprintln!(
        "20 idle connections: {} bytes each",
        s.bytes_per_connection()
    );
    assert!(s.bytes_per_connection() < 1024, "{s:?}");
    for &id in &accepted {
        net.a.tcp_send(id, b"bye").unwrap();
        net.a.tcp_close(id).unwrap();
    }
    assert!(net.run_until(
        |n| ids.iter().all(|&id| n.b.readiness(id) & EPOLLRDHUP != 0),
        10_000
    ));
    for &id in &ids {
        // Read the data first: closing with unread data resets (RFC 2525).
        let mut b = [0u8; 8];
        assert_eq!(net.b.tcp_recv(id, &mut b), Ok(3));
        net.b.tcp_close(id).unwrap();
    }
    assert!(
        net.run_until(|n| n.a.stats().time_wait == 20, 5_000),
        "time_wait records: {}",
        net.a.stats().time_wait
    );
    let s = net.a.stats();
    assert_eq!(net.a.socket_count(), 1, "only the listener is left");
    assert_eq!(s.tcp_connections, 0);
    assert_eq!(
        s.buffer_bytes, s.time_wait_bytes,
        "TIME-WAIT holds no buffers"
    );
    eprintln!(
        "TIME-WAIT: {} records, {} bytes each (record {} bytes)",
        s.time_wait,
        s.time_wait_bytes_per_record(),
        uk_net::TIME_WAIT_RECORD_BYTES
    );
    const { assert!(uk_net::TIME_WAIT_RECORD_BYTES <= 64) };
    // The records run out by themselves.
    assert!(net.run_until(|n| n.a.stats().time_wait == 0, 15_000));
}

/// With the memory budget spent, new connections are refused (their SYNs
/// dropped) while established ones keep working; once one goes, the
/// listener takes connections again. (Adjusted: the budget is now the TCP
/// engine's measured memory, not smoltcp's fixed buffers.)
#[test]
fn buffer_budget_refuses_new_connections_and_keeps_old_ones() {
    let opts = StackOptions {
        // Room for the first connection only: it alone passes the budget.
        buffer_budget: 1,
        ..StackOptions::default()
    };
    let mut net = Net::with_options(opts, StackOptions::default());
    let l = net.a.tcp_listen(80, 64).unwrap();
    let ids: Vec<_> = (0..4)
        .map(|_| net.b.tcp_connect(sa(IP_A, 80), None).unwrap())
        .collect();
    let mut accepted = Vec::new();
    net.run_until(
        |n| {
            while let Ok((id, _)) = n.a.tcp_accept(l) {
                accepted.push(id);
            }
            false
        },
        2_000,
    );
    assert_eq!(accepted.len(), 1, "accepted {}", accepted.len());
    assert!(net.a.stats().budget_refusals > 0);
    // The established one still moves data.
    net.a.tcp_send(accepted[0], b"still here").unwrap();
    let mut got = [0u8; 32];
    let mut n_got = 0;
    assert!(net.run_until(
        |n| {
            for &id in &ids {
                if let Ok(k) = n.b.tcp_recv(id, &mut got) {
                    n_got += k;
                }
            }
            n_got == 10
        },
        2_000
    ));
    // Closing it (abort: no TIME-WAIT) makes room for a waiting client.
    net.a.tcp_abort(accepted[0]).unwrap();
    assert!(
        net.run_until(
            |n| {
                while let Ok((id, _)) = n.a.tcp_accept(l) {
                    accepted.push(id);
                }
                accepted.len() == 2
            },
            10_000
        ),
        "a retransmitted SYN got in once memory was released"
    );
}

/// A writer that found its send queue full is told when it drains (the
/// kernel's blocking writes and epoll wait for exactly this report).
#[test]
fn a_full_send_queue_reports_writable_when_it_drains() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(9, 0).unwrap();
    let small = SocketOptions {
        rx_buffer: 64 * 1024,
        tx_buffer: 4096,
        tx_buffer_max: 0,
        nodelay: true,
    };
    let c = net.b.tcp_connect_with(sa(IP_A, 9), None, small).unwrap();
    connect_all(&mut net, &[c]);
    let _s = net.a.tcp_accept(l).unwrap();
    let mut sent = 0;
    loop {
        match net.b.tcp_send(c, &[7u8; 1000]) {
            Ok(n) => sent += n,
            Err(NetError::WouldBlock) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(sent, 4096);
    assert_eq!(net.b.readiness(c) & EPOLLOUT, 0);
    // The fall of EPOLLOUT is reported too (epoll keeps the last state it
    // was told, and must see the bit fall to see it rise).
    assert!(net.b.needs_poll());
    net.now += 1;
    let r = net.b.poll(net.now, &mut net.nb);
    assert!(
        r.readiness_changed.contains(&c),
        "the full queue was not reported"
    );
    let mut reported = false;
    for _ in 0..2_000 {
        net.now += 1;
        net.a.poll(net.now, &mut net.na);
        let r = net.b.poll(net.now, &mut net.nb);
        if r.readiness_changed.contains(&c) && net.b.readiness(c) & EPOLLOUT != 0 {
            reported = true;
            break;
        }
    }
    assert!(reported, "the drained send queue was never reported");
}

/// Every arrival is reported (with a new `rx_generation`), even when the
/// readiness bits stay the same: a second byte while the first is unread
/// is a new edge for `EPOLLET`.
#[test]
fn each_arrival_is_reported_even_with_data_unread() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(9, 0).unwrap();
    let c = net.b.tcp_connect(sa(IP_A, 9), None).unwrap();
    connect_all(&mut net, &[c]);
    let (s, _) = net.a.tcp_accept(l).unwrap();
    for byte in [b"x", b"y"] {
        let gen_before = net.a.rx_generation(s);
        net.b.tcp_send(c, byte).unwrap();
        let mut reported = false;
        for _ in 0..100 {
            net.now += 1;
            net.b.poll(net.now, &mut net.nb);
            let r = net.a.poll(net.now, &mut net.na);
            if r.readiness_changed.contains(&s) && net.a.rx_generation(s) != gen_before {
                reported = true;
                break;
            }
        }
        assert!(reported, "arrival of {byte:?} not reported");
        assert_ne!(net.a.readiness(s) & EPOLLIN, 0);
    }
}

/// A server that queues a large body with `tcp_send_refs` as room allows
/// and closes right after the last byte: the client reads all of it, then
/// end of stream.
#[test]
fn large_body_then_close_arrives_whole() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(80, 0).unwrap();
    let c = net.b.tcp_connect(sa(IP_A, 80), None).unwrap();
    connect_all(&mut net, &[c]);
    let (s, _) = net.a.tcp_accept(l).unwrap();
    net.b.tcp_send(c, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    net.settle(100);
    let mut req = [0u8; 64];
    assert_eq!(net.a.tcp_recv(s, &mut req), Ok(18));
    const TOTAL: usize = 4 << 20;
    let data = pattern(TOTAL, 5);
    let mut refs: std::collections::VecDeque<TcpPayload> = data
        .chunks(4096)
        .map(|c| TcpPayload::from(c.to_vec()))
        .collect();
    let mut queued = 0;
    let mut closed = false;
    let mut got = Vec::new();
    let mut eof = false;
    assert!(net.run_until(
        |n| {
            while !closed && queued < TOTAL {
                match n.a.tcp_send_refs(s, &mut refs) {
                    Ok(0) | Err(NetError::WouldBlock) => break,
                    Ok(k) => queued += k,
                    Err(e) => panic!("{e}"),
                }
            }
            if !closed && queued == TOTAL {
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
    ));
    assert_eq!(got.len(), TOTAL);
    assert!(got == data);
}

/// A call that only finds `WouldBlock` reports nothing: a blocked caller
/// that saw its own report as a change would retry forever.
#[test]
fn would_block_is_not_a_readiness_change() {
    let mut net = Net::new();
    let l = net.a.tcp_listen(9, 0).unwrap();
    let c = net.b.tcp_connect(sa(IP_A, 9), None).unwrap();
    connect_all(&mut net, &[c]);
    let (s, _) = net.a.tcp_accept(l).unwrap();
    net.settle(1_000);
    let mut b = [0u8; 8];
    for _ in 0..3 {
        assert_eq!(net.a.tcp_recv(s, &mut b), Err(NetError::WouldBlock));
        net.now += 1;
        let r = net.a.poll(net.now, &mut net.na);
        assert!(
            !r.readiness_changed.contains(&s),
            "a WouldBlock recv was reported"
        );
    }
}

/// The send queue grows with the connection's window, to twice the window
/// and at most `tx_buffer_max` (a bulk transfer keeps a round trip's data
/// ready), and falls back when the peer's window closes (a reader that
/// stopped does not get more queued for it).
#[test]
fn send_queue_follows_the_window() {
    const TX: usize = 8 * 1024;
    let mut net = Net::new();
    let l = net.a.tcp_listen(9, 0).unwrap();
    let cap = 4 * TX;
    let opts = SocketOptions {
        rx_buffer: 64 * 1024,
        tx_buffer: TX,
        tx_buffer_max: cap,
        nodelay: true,
    };
    let c = net.b.tcp_connect_with(sa(IP_A, 9), None, opts).unwrap();
    connect_all(&mut net, &[c]);
    let (s, _) = net.a.tcp_accept(l).unwrap();
    // The initial window (ten segments) already asks for more than 8 KiB.
    let first = net.b.tcp_send_room(c).unwrap();
    assert!(first > TX && first <= cap, "{first}");
    // A 2 MiB transfer to a reader: the queue reaches the cap and never
    // passes it; every byte arrives.
    let data = pattern(2 << 20, 11);
    let (mut sent, mut got, mut most) = (0, Vec::new(), 0);
    let mut buf = vec![0u8; 64 * 1024];
    let done = net.run_until(
        |n| {
            if let Ok(room) = n.b.tcp_send_room(c) {
                most = most.max(room + n.b.tcp_send_queued(c).unwrap());
            }
            if sent < data.len()
                && let Ok(k) = n.b.tcp_send(c, &data[sent..])
            {
                sent += k;
            }
            while let Ok(k) = n.a.tcp_recv(s, &mut buf) {
                if k == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..k]);
            }
            got.len() == data.len()
        },
        60_000,
    );
    assert!(done, "transfer stalled at {} of {}", got.len(), data.len());
    assert!(got == data, "bytes differ");
    assert_eq!(most, cap, "the queue never grew to its cap");
    // The reader stops: its window closes, the limit falls back to
    // `tx_buffer`, and nothing more is taken once that much is queued.
    let mut queued = 0;
    net.run_until(
        |n| {
            if let Ok(k) = n.b.tcp_send(c, &data) {
                queued += k;
            }
            false
        },
        2_000,
    );
    assert!(net.b.tcp_send_room(c).is_err());
    assert_eq!(net.b.readiness(c) & EPOLLOUT, 0);
    assert!(
        queued <= 64 * 1024 + cap,
        "{queued} bytes queued for a reader that stopped"
    );
}
