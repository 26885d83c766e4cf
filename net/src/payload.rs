//! What the TCP send queues hold: [`TcpPayload`], either an owned buffer
//! (`write`: one copy from the application) or a reference to memory the
//! stack does not own (`sendfile`: a pinned page-cache page, no copy).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use uk_tcp::{Payload, SharedSlice};

/// Memory that a payload reference points into without owning a copy of it:
/// the kernel implements it for a pinned page-cache page (released when the
/// last reference is dropped: when the data is acknowledged and the device
/// has finished reading it).
pub trait SharedBytes: Send + Sync {
    /// The bytes (immutable while any reference exists).
    fn bytes(&self) -> &[u8];
}

/// A payload reference: owned bytes or a slice of [`SharedBytes`]. Cloning
/// never copies the bytes.
#[derive(Clone)]
pub enum TcpPayload {
    /// A buffer the stack owns (filled by one copy from the application).
    Owned(SharedSlice),
    /// `len` bytes from `offset` of memory owned elsewhere (zero-copy).
    Shared {
        /// The referenced memory (kept alive by this reference).
        obj: Arc<dyn SharedBytes>,
        /// Start inside `obj`.
        offset: usize,
        /// Length.
        len: usize,
    },
}

impl TcpPayload {
    /// A reference to `[offset, offset + len)` of `obj`; `None` when out of bounds.
    pub fn shared(obj: Arc<dyn SharedBytes>, offset: usize, len: usize) -> Option<TcpPayload> {
        (offset.checked_add(len)? <= obj.bytes().len()).then_some(TcpPayload::Shared {
            obj,
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
            TcpPayload::Shared { obj, offset, len } => {
                let n = n.min(len);
                (
                    TcpPayload::Shared {
                        obj: obj.clone(),
                        offset,
                        len: n,
                    },
                    TcpPayload::Shared {
                        obj,
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
            TcpPayload::Shared { obj, offset, len } => &obj.bytes()[*offset..*offset + *len],
        }
    }
}

impl fmt::Debug for TcpPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpPayload::Owned(s) => write!(f, "Owned({} bytes)", s.len()),
            TcpPayload::Shared { offset, len, .. } => {
                write!(f, "Shared(offset {offset}, {len} bytes)")
            }
        }
    }
}
