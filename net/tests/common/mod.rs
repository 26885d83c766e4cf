//! Two stacks on an in-memory wire, driven by a fake clock.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};

use uk_net::testing::{Wire, WireEnd};
use uk_net::{Ipv4Cidr, NetConfig, NetStack, StackOptions};

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
pub const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

pub struct Net {
    pub a: NetStack,
    pub b: NetStack,
    pub na: WireEnd,
    pub nb: WireEnd,
    pub now: u64,
    next_a: Option<u64>,
    next_b: Option<u64>,
}

pub fn cidr(ip: Ipv4Addr) -> Ipv4Cidr {
    Ipv4Cidr::new(ip, 24)
}

impl Net {
    /// A = 10.0.0.1/24 (no gateway), B = 10.0.0.2/24 (gateway A).
    pub fn new() -> Net {
        Net::with_options(StackOptions::default(), StackOptions::default())
    }

    pub fn with_options(oa: StackOptions, ob: StackOptions) -> Net {
        let (na, nb) = Wire::pair(MAC_A, MAC_B, 1500, 4096);
        Net::with_nics(na, nb, oa, ob)
    }

    /// As [`Net::new`], with checksum and segmentation offload (frames of
    /// up to `max_frame` bytes) on A's device.
    pub fn with_tso_on_a(max_frame: usize) -> Net {
        let (mut na, nb) = Wire::pair(MAC_A, MAC_B, 1500, 4096);
        na.enable_tso(max_frame);
        Net::with_nics(na, nb, StackOptions::default(), StackOptions::default())
    }

    pub fn with_nics(mut na: WireEnd, mut nb: WireEnd, oa: StackOptions, ob: StackOptions) -> Net {
        let a = NetStack::new(
            &mut na,
            NetConfig::Static {
                addr: cidr(IP_A),
                gateway: None,
            },
            StackOptions {
                random_seed: 1,
                ..oa
            },
            0,
        );
        let b = NetStack::new(
            &mut nb,
            NetConfig::Static {
                addr: cidr(IP_B),
                gateway: Some(IP_A),
            },
            StackOptions {
                random_seed: 2,
                ..ob
            },
            0,
        );
        Net {
            a,
            b,
            na,
            nb,
            now: 0,
            next_a: Some(0),
            next_b: Some(0),
        }
    }

    pub fn poll(&mut self) {
        let ra = self.a.poll(self.now, &mut self.na);
        self.next_a = ra.next_poll_ms;
        let rb = self.b.poll(self.now, &mut self.nb);
        self.next_b = rb.next_poll_ms;
    }

    /// Polls both stacks, running `cond` (which may act on the sockets)
    /// after each round, advancing the fake clock to the next deadline when
    /// the wire is quiet. Returns whether `cond` became true within `max_ms`.
    pub fn run_until(&mut self, mut cond: impl FnMut(&mut Net) -> bool, max_ms: u64) -> bool {
        let deadline = self.now + max_ms;
        let mut spins = 0u32;
        loop {
            self.poll();
            if cond(self) {
                return true;
            }
            let busy = self.na.pending_rx() > 0
                || self.nb.pending_rx() > 0
                || self.a.needs_poll()
                || self.b.needs_poll();
            let next = [self.next_a, self.next_b].into_iter().flatten().min();
            if busy || next.is_some_and(|t| t <= self.now) {
                spins += 1;
                if spins < 10_000 {
                    continue;
                }
            }
            spins = 0;
            let step = next.filter(|&t| t > self.now).unwrap_or(self.now + 1);
            self.now = step.min(deadline + 1).max(self.now + 1);
            if self.now > deadline {
                return false;
            }
        }
    }

    /// Runs until nothing is in flight and nothing is due within 1 ms.
    pub fn settle(&mut self, max_ms: u64) {
        self.run_until(
            |n| {
                n.na.pending_rx() == 0
                    && n.nb.pending_rx() == 0
                    && !n.a.needs_poll()
                    && !n.b.needs_poll()
            },
            max_ms,
        );
    }
}

pub fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

use uk_net::{NetError, SocketId};

/// Accepts connections and echoes everything back; closes after the peer's EOF.
pub struct EchoServer {
    pub listener: SocketId,
    pub conns: Vec<EchoConn>,
}

pub struct EchoConn {
    pub id: SocketId,
    pub out: Vec<u8>,
    pub eof: bool,
    pub closed: bool,
    pub echoed: usize,
}

impl EchoServer {
    pub fn new(listener: SocketId) -> Self {
        EchoServer {
            listener,
            conns: Vec::new(),
        }
    }

    pub fn step(&mut self, s: &mut NetStack) {
        while let Ok((id, _)) = s.tcp_accept(self.listener) {
            self.conns.push(EchoConn {
                id,
                out: Vec::new(),
                eof: false,
                closed: false,
                echoed: 0,
            });
        }
        let mut buf = [0u8; 8192];
        for c in &mut self.conns {
            if c.closed {
                continue;
            }
            loop {
                if !c.out.is_empty() {
                    match s.tcp_send(c.id, &c.out) {
                        Ok(n) => {
                            c.out.drain(..n);
                            c.echoed += n;
                        }
                        Err(NetError::WouldBlock) => {}
                        Err(e) => panic!("server send: {e}"),
                    }
                }
                if c.eof || c.out.len() > 64 * 1024 {
                    break;
                }
                match s.tcp_recv(c.id, &mut buf) {
                    Ok(0) => c.eof = true,
                    Ok(n) => c.out.extend_from_slice(&buf[..n]),
                    Err(NetError::WouldBlock) => break,
                    Err(e) => panic!("server recv: {e}"),
                }
            }
            if c.eof && c.out.is_empty() {
                s.tcp_close(c.id).unwrap();
                c.closed = true;
            }
        }
    }
}

/// Sends `data`, collects the echo.
pub struct EchoClient {
    pub id: SocketId,
    pub data: Vec<u8>,
    pub sent: usize,
    pub got: Vec<u8>,
}

impl EchoClient {
    pub fn new(id: SocketId, data: Vec<u8>) -> Self {
        EchoClient {
            id,
            data,
            sent: 0,
            got: Vec::new(),
        }
    }

    /// Returns true once the whole echo has come back.
    pub fn step(&mut self, s: &mut NetStack) -> bool {
        while self.sent < self.data.len() {
            match s.tcp_send(self.id, &self.data[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(NetError::WouldBlock) => break,
                Err(e) => panic!("client send: {e}"),
            }
        }
        let mut buf = [0u8; 8192];
        loop {
            match s.tcp_recv(self.id, &mut buf) {
                Ok(0) => break,
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(NetError::WouldBlock) => break,
                Err(e) => panic!("client recv: {e}"),
            }
        }
        self.got.len() >= self.data.len()
    }
}
