//! What the TCP send queues hold: [`TcpPayload`], either an owned buffer
//! (`write`: one copy from the application) or a reference to memory the
//! stack does not own (`sendfile`: pinned page-cache pages, no copy).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use uk_tcp::{Payload, SharedSlice};

/// Memory that a payload reference points into without owning a copy of it:
/// the kernel implements it for a run of pinned page-cache pages (released
/// when the last reference is dropped: when the data is acknowledged and the
/// device has finished reading it). It may have several parts that are not
/// contiguous (one per span of consecutive page frames), each referenced on
/// its own: one object (one allocation, one pin and one unpin under the
/// cache's lock) then serves many references.
pub trait SharedBytes: Send + Sync {
    /// The bytes of part 0 (immutable while any reference exists).
    fn bytes(&self) -> &[u8];

    /// The bytes of part `i`; empty past the last part. Memory in one piece
    /// has only part 0.
    fn part(&self, i: usize) -> &[u8] {
        if i == 0 { self.bytes() } else { &[] }
    }
}

/// A payload reference: owned bytes or a slice of [`SharedBytes`]. Cloning
/// never copies the bytes.
#[derive(Clone)]
pub enum TcpPayload {
    /// A buffer the stack owns (filled by one copy from the application).
    Owned(SharedSlice),
    /// `len` bytes from `offset` of part `part` of memory owned elsewhere
    /// (zero-copy).
    Shared {
        /// The referenced memory (kept alive by this reference).
        obj: Arc<dyn SharedBytes>,
        /// The part of `obj` ([`SharedBytes::part`]).
        part: usize,
        /// Start inside the part.
        offset: usize,
        /// Length.
        len: usize,
    },
}

impl TcpPayload {
    /// A reference to `[offset, offset + len)` of `obj`; `None` when out of bounds.
    pub fn shared(obj: Arc<dyn SharedBytes>, offset: usize, len: usize) -> Option<TcpPayload> {
        Self::shared_part(obj, 0, offset, len)
    }

    /// A reference to `[offset, offset + len)` of part `part` of `obj`;
    /// `None` when out of bounds.
    pub fn shared_part(
        obj: Arc<dyn SharedBytes>,
        part: usize,
        offset: usize,
        len: usize,
    ) -> Option<TcpPayload> {
        (offset.checked_add(len)? <= obj.part(part).len()).then_some(TcpPayload::Shared {
            obj,
            part,
            offset,
            len,
        })
    }

    /// The first `n` bytes and the rest (`n` clamped to the length), both
    /// referencing the same memory.
    pub fn split_at(self, n: usize) -> (TcpPayload, TcpPayload) {
        match self {
            TcpPayload::Owned(s) => {
                let (a, b) = s.split_at(n);
                (TcpPayload::Owned(a), TcpPayload::Owned(b))
            }
            TcpPayload::Shared {
                obj,
                part,
                offset,
                len,
            } => {
                let n = n.min(len);
                (
                    TcpPayload::Shared {
                        obj: obj.clone(),
                        part,
                        offset,
                        len: n,
                    },
                    TcpPayload::Shared {
                        obj,
                        part,
                        offset: offset + n,
                        len: len - n,
                    },
                )
            }
        }
    }

    /// Whether this references memory the stack does not own (no copy was made).
    pub fn is_shared(&self) -> bool {
        matches!(self, TcpPayload::Shared { .. })
    }
}

impl From<Vec<u8>> for TcpPayload {
    fn from(v: Vec<u8>) -> Self {
        TcpPayload::Owned(SharedSlice::from(v))
    }
}

impl Payload for TcpPayload {
    fn len(&self) -> usize {
        match self {
            TcpPayload::Owned(s) => s.len(),
            TcpPayload::Shared { len, .. } => *len,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            TcpPayload::Owned(s) => s.bytes(),
            TcpPayload::Shared {
                obj,
                part,
                offset,
                len,
            } => &obj.part(*part)[*offset..*offset + *len],
        }
    }
}

impl fmt::Debug for TcpPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpPayload::Owned(s) => write!(f, "Owned({} bytes)", s.len()),
            TcpPayload::Shared {
                part, offset, len, ..
            } => {
                write!(f, "Shared(part {part}, offset {offset}, {len} bytes)")
            }
        }
    }
}
