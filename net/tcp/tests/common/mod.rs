//! Test harness: two endpoints joined by a simulated link with a virtual
//! clock, bandwidth, latency, and seeded loss, duplication and reordering.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use uk_tcp::wire::Header;
use uk_tcp::{Config, ConnId, Endpoint, Segment, SharedSlice};

pub type Ep = Endpoint<SharedSlice>;
pub type Seg = Segment<SharedSlice>;

pub const A_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
pub const B_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
pub const PORT: u16 = 80;

/// SplitMix64: a small seeded PRNG.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Impairments and shape of one direction of the link.
#[derive(Clone, Debug)]
pub struct LinkModel {
    /// Bytes per microsecond (125 = 1 Gbit/s).
    pub bytes_per_us: u64,
    pub latency_us: u64,
    pub loss: f64,
    pub dup: f64,
    /// Probability that a frame is delayed by up to `reorder_us` extra.
    pub reorder: f64,
    pub reorder_us: u64,
    /// Drop-tail queue limit in bytes.
    pub queue_bytes: u64,
}

impl LinkModel {
    pub fn perfect() -> Self {
        LinkModel {
            bytes_per_us: 125,
            latency_us: 1000,
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            reorder_us: 0,
            queue_bytes: u64::MAX,
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: u64,
    seq: u64,
    to_b: bool,
    bytes: Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
}

/// Decides per frame (time, direction a->b, header, payload length) whether it passes.
pub type Filter = Box<dyn FnMut(u64, bool, &Header, usize) -> bool>;

/// Two endpoints and the wire between them.
pub struct Sim {
    pub now: u64,
    pub a: Ep,
    pub b: Ep,
    pub model: LinkModel,
    pub rng: Rng,
    wire: BinaryHeap<Reverse<InFlight>>,
    busy_until: [u64; 2],
    counter: u64,
    /// Frames sent per direction (0: a->b), and dropped.
    pub frames: [u64; 2],
    pub dropped: [u64; 2],
    /// Optional filter: return false to drop a frame (direction, header).
    pub filter: Option<Filter>,
    /// The last header sent in each direction (0: a->b).
    pub last: [Option<Header>; 2],
    /// Runs each delivery to b (the call it is given): a test can wrap it,
    /// e.g. in `uk_failalloc::inject` to make b's allocations fail.
    pub wrap_b: Option<DeliverHook>,
    /// The same for a: each delivery to a and each poll of a.
    pub wrap_a: Option<DeliverHook>,
    /// Give a's transmit budget back as its segments go on the wire (as a
    /// device would take them), for a's `tx_queue_limit`.
    pub release_a: bool,
    /// The most payload bytes one poll of a handed out.
    pub max_batch_a: usize,
}

/// See [`Sim::wrap_b`].
pub type DeliverHook = Box<dyn FnMut(&mut dyn FnMut())>;

pub fn config() -> Config {
    Config::default()
}

impl Sim {
    pub fn new(model: LinkModel, seed: u64, cfg_a: Config, cfg_b: Config) -> Self {
        Sim {
            now: 1_000_000,
            a: Endpoint::new(cfg_a, [1; 16]),
            b: Endpoint::new(cfg_b, [2; 16]),
            model,
            rng: Rng(seed),
            wire: BinaryHeap::new(),
            busy_until: [0; 2],
            counter: 0,
            frames: [0; 2],
            dropped: [0; 2],
            filter: None,
            last: [None, None],
            wrap_b: None,
            wrap_a: None,
            release_a: false,
            max_batch_a: 0,
        }
    }

    fn transmit(&mut self, to_b: bool, segs: Vec<Seg>) {
        let dir = usize::from(!to_b);
        for s in segs {
            for s in s.split() {
                let bytes = s.to_bytes();
                self.frames[dir] += 1;
                let (h, _) = Header::parse(&bytes).unwrap();
                self.last[dir] = Some(h);
                if let Some(f) = self.filter.as_mut()
                    && !f(self.now, to_b, &h, s.payload_len)
                {
                    self.dropped[dir] += 1;
                    continue;
                }
                let m = &self.model;
                let wire_len = bytes.len() as u64 + 40;
                let start = self.busy_until[dir].max(self.now);
                if (start - self.now) * m.bytes_per_us > m.queue_bytes {
                    self.dropped[dir] += 1;
                    continue;
                }
                let done = start + wire_len.div_ceil(m.bytes_per_us);
                self.busy_until[dir] = done;
                if self.rng.chance(m.loss) {
                    self.dropped[dir] += 1;
                    continue;
                }
                let copies = if self.rng.chance(m.dup) { 2 } else { 1 };
                for _ in 0..copies {
                    let mut at = done + m.latency_us;
                    if self.rng.chance(m.reorder) {
                        at += self.rng.below(m.reorder_us + 1);
                    }
                    self.counter += 1;
                    self.wire.push(Reverse(InFlight {
                        at,
                        seq: self.counter,
                        to_b,
                        bytes: bytes.clone(),
                        src: s.local_ip,
                        dst: s.remote_ip,
                    }));
                }
            }
        }
    }

    /// Frames on the wire.
    pub fn in_flight(&self) -> usize {
        self.wire.len()
    }

    /// Polls both endpoints at the current time and puts their output on the wire.
    pub fn flush(&mut self) {
        let mut out = Vec::new();
        let now = self.now;
        let a = &mut self.a;
        let mut poll = || a.poll(now, &mut out);
        match self.wrap_a.as_mut() {
            Some(w) => w(&mut poll),
            None => poll(),
        }
        let bytes: usize = out.iter().map(|s| s.payload_len).sum();
        self.max_batch_a = self.max_batch_a.max(bytes);
        if self.release_a {
            self.a.release(bytes);
        }
        self.transmit(true, out);
        let mut out = Vec::new();
        self.b.poll(self.now, &mut out);
        self.transmit(false, out);
    }

    /// Advances to the next event (a frame arrival or a timer) and handles
    /// it; returns false when nothing is pending at all.
    pub fn step(&mut self) -> bool {
        self.step_until(u64::MAX)
    }

    /// [`Sim::step`], but the clock stops at `limit` if nothing happens
    /// before.
    pub fn step_until(&mut self, limit: u64) -> bool {
        self.flush();
        let next_frame = self.wire.peek().map(|r| r.0.at);
        let next_timer = [self.a.next_deadline(), self.b.next_deadline()]
            .into_iter()
            .flatten()
            .min();
        let Some(t) = [next_frame, next_timer].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(t.min(limit));
        while let Some(r) = self.wire.peek() {
            if r.0.at > self.now {
                break;
            }
            let f = self.wire.pop().unwrap().0;
            let now = self.now;
            let ep = if f.to_b { &mut self.b } else { &mut self.a };
            let mut deliver = || {
                if ep.on_segment(now, f.src, f.dst, &f.bytes).is_err() {
                    panic!("invalid frame");
                }
            };
            match (self.wrap_b.as_mut(), self.wrap_a.as_mut()) {
                (Some(w), _) if f.to_b => w(&mut deliver),
                (_, Some(w)) if !f.to_b => w(&mut deliver),
                _ => deliver(),
            }
        }
        self.flush();
        true
    }

    /// Runs until `done` or `limit_us` of virtual time passed.
    pub fn run_until(&mut self, limit_us: u64, mut done: impl FnMut(&mut Sim) -> bool) -> bool {
        let end = self.now + limit_us;
        while self.now < end {
            if done(self) {
                return true;
            }
            if !self.step_until(end) {
                return done(self);
            }
        }
        done(self)
    }

    /// Lets `us` of virtual time pass, handling every event in it.
    pub fn advance(&mut self, us: u64) {
        let end = self.now + us;
        self.run_until(us, |_| false);
        self.now = self.now.max(end);
    }

    /// Delivers a hand-made segment now (to b when `to_b`), checksummed,
    /// and sends whatever the endpoints answer.
    pub fn inject(
        &mut self,
        to_b: bool,
        h: Header,
        payload: &[u8],
    ) -> Result<(), uk_tcp::ParseError> {
        let (src, dst) = if to_b { (A_IP, B_IP) } else { (B_IP, A_IP) };
        let bytes = raw_segment(src, dst, h, payload);
        let ep = if to_b { &mut self.b } else { &mut self.a };
        let r = ep.on_segment(self.now, src, dst, &bytes);
        self.flush();
        r
    }

    /// A connects to B's listener on [`PORT`]; returns (client, server) ids.
    pub fn connect(&mut self) -> (ConnId, ConnId) {
        // Listening already (AddrInUse) is fine.
        let _ = self.b.listen(SocketAddr::new(B_IP, PORT), 128);
        let c = self
            .a
            .connect(self.now, A_IP, SocketAddr::new(B_IP, PORT))
            .unwrap();
        let mut s = None;
        assert!(self.run_until(10_000_000, |sim| {
            s = s.or_else(|| sim.b.accept(PORT));
            s.is_some() && sim.a.state(c) == Some(uk_tcp::State::Established)
        }));
        (c, s.unwrap())
    }
}

/// A deterministic byte pattern for stream position `i` (so the receiver
/// can check every byte without storing the stream).
pub fn pattern(seed: u64, i: u64) -> u8 {
    let x = (i / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
    (x.rotate_left(((i % 8) * 8) as u32) >> 56) as u8 ^ (i as u8)
}

pub fn pattern_chunk(seed: u64, start: u64, len: usize) -> SharedSlice {
    (0..len as u64)
        .map(|i| pattern(seed, start + i))
        .collect::<Vec<u8>>()
        .into()
}

/// A checksummed segment.
pub fn raw_segment(src: IpAddr, dst: IpAddr, h: Header, payload: &[u8]) -> Vec<u8> {
    let mut hb = uk_tcp::wire::HeaderBuf::default();
    h.emit(&mut hb);
    let c = uk_tcp::wire::tcp_checksum(src, dst, [hb.as_bytes(), payload]);
    hb.set_checksum(c);
    let mut v = hb.as_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}
