//! What the send queue holds: references to payload, never copies.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// A cheaply clonable reference to immutable payload bytes.
///
/// The kernel implements it for a pinned, reference-counted page-cache
/// slice (page, offset, length) and for owned buffers written by `write`.
/// Cloning must not copy the bytes (it is called once per transmitted
/// fragment); dropping the last clone releases the memory. That is why
/// there is no implementation for `Box<[u8]>` or `Vec<u8>`: wrap owned
/// buffers in an `Arc` ([`SharedSlice`] does).
pub trait Payload: Clone {
    /// Number of bytes.
    fn len(&self) -> usize;
    /// The bytes (read by the software checksum and by tests; a
    /// scatter-gather NIC reads the memory directly).
    fn bytes(&self) -> &[u8];
    /// Whether there are no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Payload for Arc<[u8]> {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Payload for Arc<Vec<u8>> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Payload for &'static [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// A slice `[offset, offset + len)` of a shared buffer: what a page-cache
/// reference looks like, for tests and for `write` buffers.
#[derive(Clone, Debug)]
pub struct SharedSlice {
    buf: Arc<Box<[u8]>>,
    offset: usize,
    len: usize,
}

impl SharedSlice {
    /// The whole buffer.
    pub fn new(buf: Arc<Box<[u8]>>) -> Self {
        let len = buf.len();
        SharedSlice {
            buf,
            offset: 0,
            len,
        }
    }

    /// A sub-slice; `None` when out of bounds.
    pub fn slice(buf: Arc<Box<[u8]>>, offset: usize, len: usize) -> Option<Self> {
        (offset.checked_add(len)? <= buf.len()).then_some(SharedSlice { buf, offset, len })
    }

    /// The first `n` bytes and the rest (`n` clamped to the length); both
    /// reference the same buffer, nothing is copied.
    pub fn split_at(self, n: usize) -> (Self, Self) {
        let n = n.min(self.len);
        let tail = SharedSlice {
            buf: self.buf.clone(),
            offset: self.offset + n,
            len: self.len - n,
        };
        (SharedSlice { len: n, ..self }, tail)
    }
}

impl From<Vec<u8>> for SharedSlice {
    fn from(v: Vec<u8>) -> Self {
        SharedSlice::new(Arc::new(v.into_boxed_slice()))
    }
}

impl Payload for SharedSlice {
    fn len(&self) -> usize {
        self.len
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[self.offset..self.offset + self.len]
    }
}

/// A piece of a segment's payload: `len` bytes of `data` from `offset`.
/// A segment's payload is a list of these (a scatter-gather list).
#[derive(Clone, Debug)]
pub struct Fragment<P> {
    /// The referenced payload (a clone of the queued reference).
    pub data: P,
    /// Start inside `data`.
    pub offset: usize,
    /// Length.
    pub len: usize,
}

impl<P: Payload> Fragment<P> {
    /// The bytes of this fragment.
    pub fn bytes(&self) -> &[u8] {
        &self.data.bytes()[self.offset..self.offset + self.len]
    }
}
