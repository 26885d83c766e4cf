//! In-memory devices for host tests (and for kernel self-tests): a [`Wire`]
//! joins two [`WireEnd`]s like a crossover cable.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::nic::Nic;

#[derive(Default)]
struct Queues {
    /// Frames travelling towards end 0 and end 1.
    to: [VecDeque<Vec<u8>>; 2],
}

/// A point-to-point link between two [`WireEnd`]s.
pub struct Wire;

impl Wire {
    /// Two connected ends with the given MACs and IP MTU; each direction
    /// holds at most `capacity` frames (a full queue is a full TX ring).
    pub fn pair(mac_a: [u8; 6], mac_b: [u8; 6], mtu: usize, capacity: usize) -> (WireEnd, WireEnd) {
        let q = Rc::new(RefCell::new(Queues::default()));
        let a = WireEnd {
            q: q.clone(),
            side: 0,
            mac: mac_a,
            mtu,
            capacity,
            flushes: 0,
            released: 0,
        };
        let b = WireEnd {
            q,
            side: 1,
            mac: mac_b,
            mtu,
            capacity,
            flushes: 0,
            released: 0,
        };
        (a, b)
    }
}

/// One end of a [`Wire`]; implements [`Nic`].
pub struct WireEnd {
    q: Rc<RefCell<Queues>>,
    side: usize,
    mac: [u8; 6],
    mtu: usize,
    capacity: usize,
    /// Number of `flush_tx` calls (device notifications).
    pub flushes: u64,
    /// Number of receive buffers given back.
    pub released: u64,
}

impl WireEnd {
    /// Frames waiting to be received by this end.
    pub fn pending_rx(&self) -> usize {
        self.q.borrow().to[self.side].len()
    }

    /// Frames in flight in either direction.
    pub fn in_flight(&self) -> usize {
        let q = self.q.borrow();
        q.to[0].len() + q.to[1].len()
    }

    /// Puts a frame in this end's receive queue (as if the peer had sent it).
    pub fn inject(&self, frame: &[u8]) {
        self.q.borrow_mut().to[self.side].push_back(frame.to_vec());
    }

    /// Takes the frames this end sent that the peer has not received yet.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.q.borrow_mut().to[1 - self.side].drain(..).collect()
    }
}

impl Nic for WireEnd {
    type Rx = Vec<u8>;

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn receive(&mut self) -> Option<Vec<u8>> {
        self.q.borrow_mut().to[self.side].pop_front()
    }

    fn release(&mut self, rx: Vec<u8>) {
        drop(rx);
        self.released += 1;
    }

    fn can_transmit(&self) -> bool {
        self.q.borrow().to[1 - self.side].len() < self.capacity
    }

    fn transmit(&mut self, len: usize, f: impl FnOnce(&mut [u8])) -> bool {
        if !self.can_transmit() {
            return false;
        }
        let mut frame = vec![0u8; len];
        f(&mut frame);
        self.q.borrow_mut().to[1 - self.side].push_back(frame);
        true
    }

    fn flush_tx(&mut self) {
        self.flushes += 1;
    }
}
