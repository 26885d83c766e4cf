//! TIME-WAIT as a compact record, not a connection (RFC 9293 section 3.6.1;
//! reuse by a new SYN as in RFC 6191).

use alloc::collections::VecDeque;
use core::mem::size_of;

use hashbrown::HashMap;

use crate::hash::KeyedState;
use crate::seq::Seq;
use crate::wire::FourTuple;

/// What is left of a connection in TIME-WAIT: enough to answer a
/// retransmitted FIN and to judge a new SYN. Stored as the table's key and
/// value; `size_of::<TimeWaitRecord>()` is at most 64 bytes.
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

/// The value stored beside the key (the key is the tuple).
#[derive(Clone, Copy, Debug)]
struct Entry {
    snd_nxt: Seq,
    rcv_nxt: Seq,
    ts_recent: Option<u32>,
    expiry: u64,
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

/// The bounded TIME-WAIT table. Every record lives the same time, so
/// insertion order is expiry order: a FIFO finds the expired and, when the
/// table is full, the oldest record to recycle.
#[derive(Debug)]
pub struct TimeWaitTable {
    map: HashMap<FourTuple, Entry, KeyedState>,
    fifo: VecDeque<(FourTuple, u64)>,
    capacity: usize,
    recycled: u64,
    dropped: u64,
}

impl TimeWaitTable {
    /// A table holding at most `capacity` records.
    pub fn new(capacity: usize, hasher: KeyedState) -> Self {
        TimeWaitTable {
            map: HashMap::with_hasher(hasher),
            fifo: VecDeque::new(),
            capacity: capacity.max(1),
            recycled: 0,
            dropped: 0,
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// How many records were dropped early because the table was full.
    pub fn recycled(&self) -> u64 {
        self.recycled
    }

    /// Heap bytes used by the table.
    pub fn memory_bytes(&self) -> usize {
        self.map.capacity() * (size_of::<(FourTuple, Entry)>() + 1)
            + self.fifo.capacity() * size_of::<(FourTuple, u64)>()
    }

    /// Looks a record up.
    pub fn get(&self, tuple: &FourTuple) -> Option<TimeWaitRecord> {
        self.map.get(tuple).map(|e| TimeWaitRecord {
            tuple: *tuple,
            snd_nxt: e.snd_nxt,
            rcv_nxt: e.rcv_nxt,
            ts_recent: e.ts_recent,
            expiry: e.expiry,
        })
    }

    /// Adds a record, recycling the oldest when full. When the memory to
    /// grow the table cannot be had, the record is dropped instead (the
    /// connection skips TIME-WAIT, as Linux's does when its bucket table
    /// overflows) and counted in [`TimeWaitTable::dropped`].
    pub fn insert(&mut self, r: TimeWaitRecord) {
        while self.map.len() >= self.capacity || self.fifo.len() >= self.capacity {
            if !self.recycle_oldest() {
                break;
            }
        }
        if self.map.try_reserve(1).is_err() || self.fifo.try_reserve(1).is_err() {
            self.dropped += 1;
            return;
        }
        let e = Entry {
            snd_nxt: r.snd_nxt,
            rcv_nxt: r.rcv_nxt,
            ts_recent: r.ts_recent,
            expiry: r.expiry,
        };
        self.map.insert(r.tuple, e);
        self.fifo.push_back((r.tuple, r.expiry));
    }

    /// Forgets the oldest record; false when there is none.
    fn recycle_oldest(&mut self) -> bool {
        let Some((t, exp)) = self.fifo.pop_front() else {
            return false;
        };
        if self.map.get(&t).is_some_and(|e| e.expiry == exp) {
            self.map.remove(&t);
            self.recycled += 1;
        }
        true
    }

    /// Records dropped because the table could not grow and held nothing
    /// to recycle.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Removes records expired at `now`.
    pub fn expire(&mut self, now: u64) {
        while let Some(&(t, exp)) = self.fifo.front() {
            if exp > now {
                break;
            }
            self.fifo.pop_front();
            if self.map.get(&t).is_some_and(|e| e.expiry == exp) {
                self.map.remove(&t);
            }
        }
        if self.map.is_empty() {
            self.map.shrink_to(0);
            self.fifo = VecDeque::new();
        }
    }

    /// The earliest expiry.
    pub fn next_expiry(&self) -> Option<u64> {
        self.fifo.front().map(|&(_, e)| e)
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
        let Some(e) = self.map.get(tuple).copied() else {
            return TimeWaitAction::Ignore;
        };
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
                self.map.remove(tuple);
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
}
