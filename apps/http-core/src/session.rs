//! TLS session resumption state (feature `tls`), without the cryptography:
//!
//! - [`SessionStore`]: the server side of session IDs (TLS 1.2) and of
//!   stateful TLS 1.3 tickets. Bounded in entries and bytes (the oldest
//!   entry goes first), and fallible: when memory runs out an entry is not
//!   stored (the client makes a full handshake next time) and a lookup
//!   misses, never a panic.
//! - [`KeyRing`]: the keys that encrypt stateless session tickets. A new key
//!   every `period`; the previous one still decrypts, so a ticket is
//!   accepted for at least one period after it was issued and at most two.
//!   After two idle periods both keys are gone (an old ticket never comes
//!   back to life). Keys are made by the caller (hardware randomness); when
//!   that fails there is no current key (no tickets issued) until it works.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Session IDs and their encoded session state, oldest first.
#[derive(Debug)]
pub struct SessionStore {
    entries: VecDeque<(Vec<u8>, Vec<u8>)>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl SessionStore {
    /// An empty store of at most `max_entries` sessions and `max_bytes`
    /// bytes of keys and values.
    pub const fn new(max_entries: usize, max_bytes: usize) -> SessionStore {
        SessionStore {
            entries: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    /// Sessions stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No session is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of keys and values stored.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn position(&self, key: &[u8]) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k.as_slice() == key)
    }

    fn remove_at(&mut self, i: usize) -> Option<(Vec<u8>, Vec<u8>)> {
        let e = self.entries.remove(i)?;
        self.bytes -= e.0.len() + e.1.len();
        Some(e)
    }

    /// Stores `value` under `key` (replacing an entry with that key),
    /// evicting the oldest entries to make room. `false` when it was not
    /// stored: larger than the whole store, or no memory for the entry.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let size = key.len() + value.len();
        if self.max_entries == 0 || size > self.max_bytes {
            return false;
        }
        if let Some(i) = self.position(&key) {
            self.remove_at(i);
        }
        while self.entries.len() >= self.max_entries || self.bytes + size > self.max_bytes {
            let Some((k, v)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= k.len() + v.len();
        }
        if self.entries.try_reserve(1).is_err() {
            return false;
        }
        self.bytes += size;
        self.entries.push_back((key, value));
        true
    }

    /// A copy of the value stored under `key`; `None` when there is none
    /// or no memory for the copy.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (_, v) = &self.entries[self.position(key)?];
        let mut out = Vec::new();
        out.try_reserve_exact(v.len()).ok()?;
        out.extend_from_slice(v);
        Some(out)
    }

    /// The value stored under `key`, removed from the store.
    pub fn take(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let i = self.position(key)?;
        self.remove_at(i).map(|(_, v)| v)
    }
}

/// Length of a ticket key's name (sent in clear at the start of a ticket).
pub const KEY_NAME_LEN: usize = 16;

/// A ticket key and its random name.
#[derive(Debug)]
pub struct NamedKey<K> {
    /// Random bytes that say which key sealed a ticket.
    pub name: [u8; KEY_NAME_LEN],
    /// The key.
    pub key: K,
}

/// The current and the previous ticket key, rotated every period.
#[derive(Debug)]
pub struct KeyRing<K> {
    current: Option<NamedKey<K>>,
    previous: Option<NamedKey<K>>,
    /// When `current` is replaced (ms on the caller's monotonic clock);
    /// `None` before the first key.
    rotate_at: Option<u64>,
    period_ms: u64,
}

impl<K> KeyRing<K> {
    /// No keys yet: the first use makes one. `period_ms` is at least 1.
    pub const fn new(period_ms: u64) -> KeyRing<K> {
        KeyRing {
            current: None,
            previous: None,
            rotate_at: None,
            period_ms: if period_ms == 0 { 1 } else { period_ms },
        }
    }

    /// Rotates when due: at `now_ms` past the rotation time, the current
    /// key becomes the previous one (or, a whole period later still, is
    /// dropped as well) and `make` gives the new current key. Rotations
    /// keep their schedule (every `period_ms` from the first key), so a
    /// key seals tickets for at most one period and opens them for at most
    /// one more. A key that `make` could not give is asked for again on
    /// the next call.
    fn rotate(&mut self, now_ms: u64, make: &mut dyn FnMut() -> Option<NamedKey<K>>) {
        match self.rotate_at {
            Some(at) if now_ms < at => {
                if self.current.is_some() {
                    return;
                }
            }
            Some(at) => {
                let old = self.current.take();
                let next = at.saturating_add(self.period_ms);
                if now_ms < next {
                    // On schedule: the old key opens tickets for one more
                    // period.
                    self.previous = old;
                    self.rotate_at = Some(next);
                } else {
                    // Idle for more than a period past the rotation: both
                    // keys are too old.
                    self.previous = None;
                    self.rotate_at = Some(now_ms.saturating_add(self.period_ms));
                }
            }
            None => self.rotate_at = Some(now_ms.saturating_add(self.period_ms)),
        }
        self.current = make();
    }

    /// The key that seals tickets issued at `now_ms` (rotated first if
    /// due); `None` when no key could be made.
    pub fn sealing(
        &mut self,
        now_ms: u64,
        make: &mut dyn FnMut() -> Option<NamedKey<K>>,
    ) -> Option<&NamedKey<K>> {
        self.rotate(now_ms, make);
        self.current.as_ref()
    }

    /// The key named `name` that may still open tickets at `now_ms`: the
    /// current or the previous one.
    pub fn opening(
        &mut self,
        now_ms: u64,
        name: &[u8],
        make: &mut dyn FnMut() -> Option<NamedKey<K>>,
    ) -> Option<&NamedKey<K>> {
        self.rotate(now_ms, make);
        [self.current.as_ref(), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.name.as_slice() == name)
    }
}
