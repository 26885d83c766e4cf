//! TIME-WAIT as a compact record, not a connection (RFC 9293 section 3.6.1;
//! reuse by a new SYN as in RFC 6191).

use alloc::collections::VecDeque;
use core::hash::BuildHasher;
use core::mem::size_of;

use uk_core::hashindex::HashIndex;

use crate::hash::KeyedState;
use crate::seq::Seq;
use crate::wire::FourTuple;

/// What is left of a connection in TIME-WAIT: enough to answer a
/// retransmitted FIN and to judge a new SYN. `size_of::<TimeWaitRecord>()`
/// is at most 64 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWaitRecord {
    /// The connection.
    pub tuple: FourTuple,
    /// Our next sequence number (after our FIN).
    pub snd_nxt: Seq,
    /// The peer's next sequence number (after its FIN).
    pub rcv_nxt: Seq,
    /// The last TSval from the peer, when timestamps were in use.
    pub ts_recent: Option<u32>,
    /// When the record expires (µs).
    pub expiry: u64,
}

/// What to do with a segment that hit a TIME-WAIT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeWaitAction {
    /// Send an ACK for `rcv_nxt` from `snd_nxt` (retransmitted FIN, or
    /// anything else in the old connection's space).
    Ack {
        /// Our sequence number.
        seq: Seq,
        /// The acknowledgment number.
        ack: Seq,
    },
    /// A SYN that may start a new incarnation: the record is gone, treat it
    /// as a fresh SYN for a listener.
    Reopen,
    /// Nothing (an RST ends the record silently too).
    Ignore,
}

/// A FIFO place: a record, or what is left of one removed early (its
/// expiry still orders the FIFO).
#[derive(Clone, Copy, Debug)]
struct Place {
    rec: TimeWaitRecord,
    live: bool,
}

/// The bounded TIME-WAIT table. Every record lives the same time, so
/// insertion order is expiry order: the records sit in a FIFO, which finds
/// the expired and, when the table is full, the oldest record to recycle.
/// A hash index keyed by tuple (SipHash with the endpoint's secret, so
/// that a peer cannot choose colliding tuples) finds a record's place in
/// the FIFO; a record removed early leaves a dead place there.
#[derive(Debug)]
pub struct TimeWaitTable {
    index: HashIndex,
    hasher: KeyedState,
    /// The records, oldest first.
    fifo: VecDeque<Place>,
    /// The index's number for `fifo[0]`; `fifo[i]` is `head + i`.
    head: u32,
    capacity: usize,
    recycled: u64,
    dropped: u64,
}

impl TimeWaitTable {
    /// A table holding at most `capacity` records.
    pub fn new(capacity: usize, hasher: KeyedState) -> Self {
        TimeWaitTable {
            index: HashIndex::new(),
            hasher,
            fifo: VecDeque::new(),
            head: 0,
            // A FIFO place is a u32 in the index.
            capacity: capacity.clamp(1, u32::MAX as usize),
            recycled: 0,
            dropped: 0,
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// How many records were dropped early because the table was full.
    pub fn recycled(&self) -> u64 {
        self.recycled
    }

    /// Heap bytes used by the table.
    pub fn memory_bytes(&self) -> usize {
        self.index.capacity() * HashIndex::BYTES_PER_ENTRY
            + self.fifo.capacity() * size_of::<Place>()
    }

    /// The FIFO position of `tuple`'s record.
    fn find(&self, tuple: &FourTuple) -> Option<usize> {
        let (fifo, head) = (&self.fifo, self.head);
        let at = |slot: u32| slot.wrapping_sub(head) as usize;
        let slot = self.index.find(self.hasher.hash_one(tuple), |slot| {
            fifo.get(at(slot))
                .is_some_and(|p| p.live && p.rec.tuple == *tuple)
        })?;
        Some(at(slot))
    }

    /// Removes the record at FIFO position `at`, leaving a dead place;
    /// false when it was dead already.
    fn remove_at(&mut self, at: usize) -> bool {
        let p = &mut self.fifo[at];
        if !p.live {
            return false;
        }
        p.live = false;
        let hash = self.hasher.hash_one(p.rec.tuple);
        self.index
            .remove_slot(hash, self.head.wrapping_add(at as u32));
        true
    }

    /// Looks a record up.
    pub fn get(&self, tuple: &FourTuple) -> Option<TimeWaitRecord> {
        Some(self.fifo[self.find(tuple)?].rec)
    }

    /// Adds a record, recycling the oldest when full. When the memory to
    /// grow the table cannot be had, the record is dropped instead (the
    /// connection skips TIME-WAIT, as Linux's does when its bucket table
    /// overflows) and counted in [`TimeWaitTable::dropped`].
    pub fn insert(&mut self, r: TimeWaitRecord) {
        while self.fifo.len() >= self.capacity {
            if !self.recycle_oldest() {
                break;
            }
        }
        if self.index.try_reserve(1).is_err() || self.fifo.try_reserve(1).is_err() {
            self.dropped += 1;
            return;
        }
        // A record for the same tuple is replaced.
        if let Some(at) = self.find(&r.tuple) {
            self.remove_at(at);
        }
        let slot = self.head.wrapping_add(self.fifo.len() as u32);
        self.index.insert(self.hasher.hash_one(r.tuple), slot);
        self.fifo.push_back(Place { rec: r, live: true });
    }

    /// Forgets the oldest record (counted as recycled) or dead place;
    /// false when there is none.
    fn recycle_oldest(&mut self) -> bool {
        if self.fifo.is_empty() {
            return false;
        }
        if self.remove_at(0) {
            self.recycled += 1;
        }
        self.drop_front();
        true
    }

    /// Drops `fifo[0]` (already dead).
    fn drop_front(&mut self) {
        self.fifo.pop_front();
        self.head = self.head.wrapping_add(1);
    }

    /// Records dropped because the table could not grow and held nothing
    /// to recycle.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Removes records expired at `now`.
    pub fn expire(&mut self, now: u64) {
        while self.fifo.front().is_some_and(|p| p.rec.expiry <= now) {
            self.remove_at(0);
            self.drop_front();
        }
        if self.index.is_empty() {
            self.index.shrink_to(0);
            self.fifo = VecDeque::new();
        }
    }

    /// The earliest expiry.
    pub fn next_expiry(&self) -> Option<u64> {
        self.fifo.front().map(|p| p.rec.expiry)
    }

    /// Handles a segment for a tuple in TIME-WAIT.
    pub fn on_segment(
        &mut self,
        tuple: &FourTuple,
        syn: bool,
        rst: bool,
        ack: bool,
        seq: Seq,
        tsval: Option<u32>,
    ) -> TimeWaitAction {
        let Some(at) = self.find(tuple) else {
            return TimeWaitAction::Ignore;
        };
        let e = self.fifo[at].rec;
        if rst {
            // RFC 1337: ignore RSTs in TIME-WAIT (no assassination).
            return TimeWaitAction::Ignore;
        }
        if syn && !ack {
            // RFC 6191 (as Linux applies it): a SYN may reopen the 4-tuple
            // if its timestamp is not older than the old connection's and
            // either its sequence number or its timestamp is newer.
            let (older, newer) = match (e.ts_recent, tsval) {
                (Some(old), Some(new)) => (Seq(new) < Seq(old), Seq(new) > Seq(old)),
                _ => (false, false),
            };
            if !older && (seq > e.rcv_nxt || newer) {
                self.remove_at(at);
                return TimeWaitAction::Reopen;
            }
        }
        TimeWaitAction::Ack {
            seq: e.snd_nxt,
            ack: e.rcv_nxt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr};

    fn table(ts: Option<u32>) -> (TimeWaitTable, FourTuple) {
        let tuple = FourTuple {
            local_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            remote_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            local_port: 80,
            remote_port: 4000,
        };
        let mut t = TimeWaitTable::new(2, KeyedState::new([0; 16]));
        t.insert(TimeWaitRecord {
            tuple,
            snd_nxt: Seq(500),
            rcv_nxt: Seq(1000),
            ts_recent: ts,
            expiry: 100,
        });
        (t, tuple)
    }

    #[test]
    fn answers_and_reopens() {
        let (mut t, tu) = table(Some(50));
        let ack = TimeWaitAction::Ack {
            seq: Seq(500),
            ack: Seq(1000),
        };
        // A retransmitted FIN (or anything else) gets the final ACK again.
        assert_eq!(
            t.on_segment(&tu, false, false, true, Seq(999), Some(60)),
            ack
        );
        // RSTs are ignored (RFC 1337).
        assert_eq!(
            t.on_segment(&tu, false, true, false, Seq(1000), None),
            TimeWaitAction::Ignore
        );
        // An older timestamp never reopens, even with a newer sequence number.
        assert_eq!(
            t.on_segment(&tu, true, false, false, Seq(5000), Some(40)),
            ack
        );
        // An old sequence number with the same timestamp does not either.
        assert_eq!(
            t.on_segment(&tu, true, false, false, Seq(10), Some(50)),
            ack
        );
        // A newer timestamp does.
        assert_eq!(
            t.on_segment(&tu, true, false, false, Seq(10), Some(51)),
            TimeWaitAction::Reopen
        );
        assert!(t.get(&tu).is_none());

        let (mut t, tu) = table(None);
        assert_eq!(
            t.on_segment(&tu, true, false, false, Seq(1001), None),
            TimeWaitAction::Reopen
        );
        t.expire(1000);
        assert!(t.is_empty());
        assert_eq!(t.memory_bytes(), 0);
    }

    fn tuple(port: u16) -> FourTuple {
        FourTuple {
            local_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            remote_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            local_port: 80,
            remote_port: port,
        }
    }

    fn rec(port: u16, expiry: u64) -> TimeWaitRecord {
        TimeWaitRecord {
            tuple: tuple(port),
            snd_nxt: Seq(u32::from(port)),
            rcv_nxt: Seq(7),
            ts_recent: None,
            expiry,
        }
    }

    /// Records are found through the index while the FIFO recycles,
    /// replaces and expires around them (with early removals leaving dead
    /// places that still order the FIFO).
    #[test]
    fn recycles_replaces_and_expires_in_order() {
        let mut t = TimeWaitTable::new(4, KeyedState::new([7; 16]));
        for p in 0..4 {
            t.insert(rec(p, 10 + u64::from(p)));
        }
        assert_eq!(t.len(), 4);
        // Full: the oldest (port 0) is recycled.
        t.insert(rec(4, 14));
        assert_eq!((t.len(), t.recycled()), (4, 1));
        assert!(t.get(&tuple(0)).is_none());
        for p in 1..5 {
            assert_eq!(t.get(&tuple(p)), Some(rec(p, 10 + u64::from(p))));
        }
        // Full again: port 1 is recycled; replacing port 2 leaves a dead
        // place (not a record) behind.
        t.insert(rec(2, 20));
        assert_eq!((t.len(), t.recycled()), (3, 2));
        assert_eq!(t.get(&tuple(2)), Some(rec(2, 20)));
        // A reopening SYN removes port 3's record early.
        assert_eq!(
            t.on_segment(&tuple(3), true, false, false, Seq(100), None),
            TimeWaitAction::Reopen
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.next_expiry(), Some(12));
        t.expire(14);
        assert_eq!(t.len(), 1);
        assert!(t.get(&tuple(4)).is_none());
        assert_eq!(t.next_expiry(), Some(20));
        assert_eq!(
            t.on_segment(&tuple(2), false, false, true, Seq(1), None),
            TimeWaitAction::Ack {
                seq: Seq(2),
                ack: Seq(7)
            }
        );
        t.expire(20);
        assert!(t.is_empty());
        assert_eq!(t.next_expiry(), None);
        assert_eq!(t.memory_bytes(), 0);
        // Many more than fit, through the wrapping FIFO numbers.
        for p in 0..1000 {
            t.insert(rec(p, 100 + u64::from(p)));
        }
        assert_eq!(t.len(), 4);
        for p in 996..1000 {
            assert_eq!(t.get(&tuple(p)), Some(rec(p, 100 + u64::from(p))));
        }
    }
}
