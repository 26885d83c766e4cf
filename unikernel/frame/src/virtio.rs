//! Safe virtqueues: a [`Queue`] owns what it has posted until the device
//! gives it back.
//!
//! virtio-drivers' `VirtQueue::add`/`pop_used` are `unsafe` because the
//! buffers must stay alive and untouched while the device holds them. Here the
//! queue takes the buffers by value ([`Buffers`]: a [`DeviceWrites`] buffer for
//! receive, a [`Chain`] of device-readable segments for transmit) and returns
//! them from [`Queue::pop_used`], so no reference to them can exist in
//! between. A buffer whose memory could move with its owner cannot be posted:
//! [`Buffers`] is sealed and implemented here only over [`Stable`] memory (DMA
//! buffers, page-cache frames), whose address does not change when the handle
//! moves.
//!
//! A [`Chain`] is one descriptor chain: a header buffer (its first
//! `head_len` bytes) followed by up to [`MAX_FRAGMENTS`] fragments, each a
//! byte range of a buffer the chain owns (for example pinned page-cache pages
//! for a scatter-gather transmit); the device reads them in order.
//!
//! Block requests, whose data is the blocked caller's own memory (a
//! page-cache frame filled in place), go through [`lend`] on a
//! [`LendingQueue`] instead: it posts borrowed buffers and cannot return
//! before the device has given them back.

use alloc::vec::Vec;

mod lend;
pub use lend::{Lend, LendingDevice, LendingQueue, MAX_LENT, lend};

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport;

use crate::dma::DmaBuffer;
use crate::hal::KernelHal;
use crate::mmio::Mmio;

pub use virtio_drivers::Error;

/// A short description of a virtio error, for the console. (virtio-drivers'
/// `Display` carries long messages for its socket device, which this kernel
/// does not drive: formatting through it would put them all in the image.)
pub fn error_str(e: &Error) -> &'static str {
    match e {
        Error::QueueFull => "queue full",
        Error::NotReady => "device not ready",
        Error::WrongToken => "unexpected descriptor chain",
        Error::AlreadyUsed => "queue already in use",
        Error::InvalidParam => "invalid parameter",
        Error::DmaError => "no DMA memory",
        Error::IoError => "I/O error",
        Error::Unsupported => "not supported by the device",
        Error::ConfigSpaceTooSmall => "config space too small",
        Error::ConfigSpaceMissing => "no config space",
        _ => "device error",
    }
}

/// Memory whose address does not change when the value owning it moves,
/// that stays valid while the value lives, and that nothing else reaches
/// while a queue owns the value.
///
/// # Safety
///
/// `bytes` (and `bytes_mut`) must return the same memory for the whole life
/// of the value, wherever it moves, and only through this value.
pub unsafe trait Stable: Send {
    /// The memory.
    fn bytes(&self) -> &[u8];
}

/// [`Stable`] memory the device may write.
///
/// # Safety
///
/// As for [`Stable`].
pub unsafe trait StableMut: Stable {
    /// The memory, writable.
    fn bytes_mut(&mut self) -> &mut [u8];
}

// SAFETY: a DmaBuffer's memory is a fixed physical range owned by the handle
// (see `dma`), independent of where the handle lives.
unsafe impl Stable for DmaBuffer {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

// SAFETY: as above.
unsafe impl StableMut for DmaBuffer {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

// SAFETY: a PageFrame owns one physical frame until it is dropped; its
// address does not depend on where the handle lives.
unsafe impl Stable for crate::mm::PageFrame {
    fn bytes(&self) -> &[u8] {
        uk_vfs::Page::bytes(self)
    }
}

/// A byte range of a TCP payload reference (a page-cache page or a
/// socket's own buffer), as one device-readable piece of a transmit chain.
/// It holds a clone of the reference, so the memory stays alive (and, for a
/// page-cache page, pinned) until the device has read it.
pub struct PayloadPiece {
    _keep: uk_net::TcpPayload,
    ptr: *const u8,
    len: usize,
}

impl PayloadPiece {
    /// Bytes `start..start + len` of `payload`, or `None` when out of range
    /// or empty.
    pub fn new(payload: &uk_net::TcpPayload, start: usize, len: usize) -> Option<Self> {
        let b = uk_tcp::Payload::bytes(payload).get(start..start.checked_add(len)?)?;
        (len > 0).then(|| PayloadPiece {
            _keep: payload.clone(),
            ptr: b.as_ptr(),
            len,
        })
    }
}

impl core::fmt::Debug for PayloadPiece {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PayloadPiece({:p}, {} bytes)", self.ptr, self.len)
    }
}

// SAFETY: the pointer is only read through `bytes` (shared access to
// memory the clone keeps alive, see below); the clone itself is Send
// (`TcpPayload` is an `Arc` of `Send + Sync` bytes or an `Arc`'d buffer).
unsafe impl Send for PayloadPiece {}

// SAFETY: `ptr..ptr + len` was borrowed from `_keep` at construction. A
// `TcpPayload`'s bytes live behind an `Arc` (an owned `SharedSlice` buffer,
// or the pointee of an `Arc<dyn SharedBytes>`, borrowed through `&self`), so
// they do not move with the handle and stay allocated while the clone held
// here lives; `Arc` gives no `&mut` to them while another clone exists.
// Page-cache pages may be written in place (see `pagecache`), which changes
// the bytes the device reads, not their validity.
unsafe impl Stable for PayloadPiece {
    fn bytes(&self) -> &[u8] {
        // SAFETY: as above: valid, immutable-through-this-handle memory of
        // `len` bytes for the life of `self`.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Segments of one descriptor chain: device-readable ones, then at most one
/// device-writable one.
type Segments<'a> = [&'a [u8]; MAX_FRAGMENTS + 1];

/// What one descriptor chain posts: the buffers the queue owns while the
/// device has them. Implemented only by [`DeviceWrites`] and [`Chain`].
pub trait Buffers: Send + sealed::Sealed {
    /// Fills `ins` with the device-readable segments; returns how many, and
    /// the device-writable segment if any.
    #[doc(hidden)]
    fn segments<'a>(&'a mut self, ins: &mut Segments<'a>) -> (usize, Option<&'a mut [u8]>);
}

/// A buffer the device writes (a receive buffer).
#[derive(Debug)]
pub struct DeviceWrites<B: StableMut>(pub B);

impl<B: StableMut> sealed::Sealed for DeviceWrites<B> {}

impl<B: StableMut> Buffers for DeviceWrites<B> {
    fn segments<'a>(&'a mut self, _ins: &mut Segments<'a>) -> (usize, Option<&'a mut [u8]>) {
        (0, Some(self.0.bytes_mut()))
    }
}

/// A request and its reply in one buffer: the device reads the first
/// `out_len` bytes and writes the rest (a control-queue command and its
/// status byte; with `out_len` 0, a buffer the device only writes, as
/// [`DeviceWrites`]).
#[derive(Debug)]
pub struct Request<B: StableMut> {
    /// The buffer.
    pub buf: B,
    /// Bytes the device reads; the rest it may write.
    pub out_len: usize,
}

impl<B: StableMut> sealed::Sealed for Request<B> {}

impl<B: StableMut> Buffers for Request<B> {
    fn segments<'a>(&'a mut self, ins: &mut Segments<'a>) -> (usize, Option<&'a mut [u8]>) {
        let bytes = self.buf.bytes_mut();
        let at = self.out_len.min(bytes.len());
        let (out, reply) = bytes.split_at_mut(at);
        ins[0] = out;
        // No readable descriptor when there is nothing to read.
        (usize::from(at > 0), Some(reply))
    }
}

/// The most fragments a [`Chain`] may carry after its header.
pub const MAX_FRAGMENTS: usize = 23;

/// A device-readable descriptor chain: `head[..head_len]`, then each
/// fragment's byte range, in order. Fragments added with
/// [`Chain::push_joining`] that continue the previous one in identity-mapped
/// RAM share its descriptor.
#[derive(Debug)]
pub struct Chain<H: Stable, F: Stable> {
    head: H,
    head_len: usize,
    fragments: Vec<(F, usize, usize)>,
    /// Bit `i`: fragment `i` continues fragment `i - 1`'s descriptor.
    joined: u32,
}

impl<H: Stable, F: Stable> Chain<H, F> {
    /// A chain of the first `head_len` bytes of `head` (clamped to its size).
    pub fn new(head: H, head_len: usize) -> Self {
        let head_len = head_len.min(head.bytes().len());
        Chain {
            head,
            head_len,
            fragments: Vec::new(),
            joined: 0,
        }
    }

    /// As [`Chain::new`], with room for `fragments` fragments reserved at
    /// once (no reallocation per [`Chain::push`]). Gives `head` back when
    /// that memory is not available.
    pub fn try_with_capacity(head: H, head_len: usize, fragments: usize) -> Result<Self, H> {
        let mut v = Vec::new();
        if v.try_reserve_exact(fragments.min(MAX_FRAGMENTS)).is_err() {
            return Err(head);
        }
        let head_len = head_len.min(head.bytes().len());
        Ok(Chain {
            head,
            head_len,
            fragments: v,
            joined: 0,
        })
    }

    /// Appends bytes `start..start + len` of `buf`; gives `buf` back when the
    /// range is outside it, the chain is full or memory is short.
    pub fn push(&mut self, buf: F, start: usize, len: usize) -> Result<(), F> {
        let fits = start
            .checked_add(len)
            .is_some_and(|end| end <= buf.bytes().len());
        if !fits
            || len == 0
            || self.fragments.len() == MAX_FRAGMENTS
            || self.fragments.try_reserve(1).is_err()
        {
            return Err(buf);
        }
        self.fragments.push((buf, start, len));
        Ok(())
    }

    /// As [`Chain::push`]; when the range starts where the last fragment's
    /// ends and both lie in identity-mapped RAM (below the mmap window, so
    /// adjacent addresses are adjacent frames), it shares that fragment's
    /// descriptor: the device reads both in one piece (consecutive
    /// page-cache pages are usually consecutive frames, and a 64 KiB
    /// segment then takes one or two descriptors instead of seventeen).
    pub fn push_joining(&mut self, buf: F, start: usize, len: usize) -> Result<(), F> {
        let at = self.fragments.len();
        let joins = match (self.fragments.last(), buf.bytes().get(start..)) {
            (Some((prev, ps, pl)), Some(this)) => {
                let prev_start = prev.bytes()[*ps..].as_ptr() as u64;
                let prev_end = prev_start + *pl as u64;
                let here = this.as_ptr() as u64;
                // The run's first byte and this range's last are both below
                // the window: every byte between is identity-mapped RAM.
                prev_end == here
                    && crate::hal::is_identity(prev_start, here + len as u64 - prev_start)
            }
            _ => false,
        };
        self.push(buf, start, len)?;
        if joins {
            self.joined |= 1 << at;
        }
        Ok(())
    }

    /// The header buffer.
    pub fn head(&self) -> &H {
        &self.head
    }

    /// Bytes posted from the header.
    pub fn head_len(&self) -> usize {
        self.head_len
    }

    /// Takes the chain apart: the header and the fragments (each buffer with
    /// its posted range, start and length).
    pub fn into_parts(self) -> (H, Vec<(F, usize, usize)>) {
        (self.head, self.fragments)
    }
}

impl<H: Stable, F: Stable> sealed::Sealed for Chain<H, F> {}

impl<H: Stable, F: Stable> Buffers for Chain<H, F> {
    fn segments<'a>(&'a mut self, ins: &mut Segments<'a>) -> (usize, Option<&'a mut [u8]>) {
        ins[0] = &self.head.bytes()[..self.head_len];
        let mut n = 1;
        let mut i = 0;
        while i < self.fragments.len() {
            let (b, start, len) = &self.fragments[i];
            let first = &b.bytes()[*start..*start + *len];
            let mut total = first.len();
            i += 1;
            while i < self.fragments.len() && self.joined & (1 << i) != 0 {
                total += self.fragments[i].2;
                i += 1;
            }
            ins[n] = if total == first.len() {
                first
            } else {
                // SAFETY: `push_joining` joined these fragments only where
                // each starts at the byte after the previous one ends, all
                // inside identity-mapped RAM (one region of physical memory,
                // mapped once, never moved); each fragment's buffer is held
                // by this chain and valid for reads of its range for as long
                // as the chain (and so the returned borrow) lives. The
                // ranges are read only, as `Stable::bytes` allows.
                unsafe { core::slice::from_raw_parts(first.as_ptr(), total) }
            };
            n += 1;
        }
        (n, None)
    }
}

/// Posts one chain.
///
/// # Safety
///
/// As `VirtQueue::add`: the buffers stay valid and untouched until `pop_raw`
/// has had the returned token back.
#[inline(never)]
unsafe fn add_raw<const N: usize>(
    vq: &mut VirtQueue<KernelHal, N>,
    ins: &[&[u8]],
    out: Option<&mut [u8]>,
) -> Result<u16, Error> {
    match out {
        // SAFETY: the caller's promise.
        Some(o) => unsafe { vq.add(ins, &mut [o]) },
        // SAFETY: the caller's promise.
        None => unsafe { vq.add(ins, &mut []) },
    }
}

/// Takes chain `token` back from the used ring.
///
/// # Safety
///
/// As `VirtQueue::pop_used`: the same buffers as were posted with `token`.
#[inline(never)]
unsafe fn pop_raw<const N: usize>(
    vq: &mut VirtQueue<KernelHal, N>,
    token: u16,
    ins: &[&[u8]],
    out: Option<&mut [u8]>,
) -> Result<u32, Error> {
    match out {
        // SAFETY: the caller's promise.
        Some(o) => unsafe { vq.pop_used(token, ins, &mut [o]) },
        // SAFETY: the caller's promise.
        None => unsafe { vq.pop_used(token, ins, &mut []) },
    }
}

/// A virtqueue of `N` descriptors that owns each posted [`Buffers`] value
/// until the device returns it.
pub struct Queue<T: Buffers, const N: usize> {
    vq: VirtQueue<KernelHal, N>,
    /// The value posted under each token (head descriptor index).
    posted: Vec<Option<T>>,
}

impl<T: Buffers, const N: usize> Queue<T, N> {
    /// Sets up queue `idx` of the device behind `transport`.
    pub fn new<Tr: Transport>(
        transport: &mut Tr,
        idx: u16,
        indirect: bool,
        event_idx: bool,
    ) -> Result<Self, Error> {
        let vq = VirtQueue::new(transport, idx, indirect, event_idx)?;
        let mut posted = Vec::with_capacity(N);
        posted.resize_with(N, || None);
        Ok(Queue { vq, posted })
    }

    /// Posts `item`; gives it back if the queue has no room for it.
    pub fn add(&mut self, mut item: T) -> Result<u16, T> {
        let mut ins: Segments<'_> = [&[]; MAX_FRAGMENTS + 1];
        let (n, out) = item.segments(&mut ins);
        // SAFETY: the segments point into `item`'s Stable memory, whose
        // address does not change when `item` moves; `item` moves into
        // `posted` right below and stays there, unreachable by anyone else,
        // until `pop_used` has had this token back from the device.
        let r = unsafe { add_raw(&mut self.vq, &ins[..n], out) };
        match r {
            Ok(token) => {
                self.posted[token as usize] = Some(item);
                Ok(token)
            }
            Err(_) => Err(item),
        }
    }

    /// The next buffer the device has finished with, and the number of bytes
    /// it wrote (receive).
    pub fn pop_used(&mut self) -> Option<(T, u32)> {
        let token = self.vq.peek_used()?;
        let mut item = self.posted.get_mut(token as usize)?.take()?;
        let mut ins: Segments<'_> = [&[]; MAX_FRAGMENTS + 1];
        let (n, out) = item.segments(&mut ins);
        // SAFETY: `item` is the value posted with `token` (it has been in
        // `posted[token]` since `add`), so these are the same segments.
        let r = unsafe { pop_raw(&mut self.vq, token, &ins[..n], out) };
        match r {
            Ok(len) => Some((item, len)),
            Err(_) => {
                // The device broke the ring (the queue stalls, as before the
                // wrapper); it may still hold the buffers: never free them.
                core::mem::forget(item);
                None
            }
        }
    }

    /// Whether the device has returned a buffer.
    pub fn has_used(&self) -> bool {
        self.vq.peek_used().is_some()
    }

    /// Free descriptors.
    pub fn available_desc(&self) -> usize {
        self.vq.available_desc()
    }

    /// Whether the device wants a notification for what was added.
    pub fn should_notify(&self) -> bool {
        self.vq.should_notify()
    }

    /// Asks the device to interrupt (or not) when it returns buffers on
    /// this queue. A hint: the device may still interrupt, so a caller that
    /// turns interrupts back on checks [`Queue::has_used`] afterwards.
    pub fn set_interrupts(&mut self, on: bool) {
        self.vq.set_dev_notify(on);
    }
}

impl<T: Buffers, const N: usize> Drop for Queue<T, N> {
    fn drop(&mut self) {
        // The device may still hold what is posted: leak it rather than free
        // memory a device could write into.
        core::mem::forget(core::mem::take(&mut self.posted));
    }
}

/// Makes the virtio-mmio transport of the device whose register window is
/// `window` (its magic value checked by the caller or not: the transport
/// checks it again). The window is consumed: the transport owns it.
pub fn mmio_transport(
    window: Mmio,
) -> Result<
    virtio_drivers::transport::mmio::MmioTransport<'static>,
    virtio_drivers::transport::mmio::MmioError,
> {
    use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
    let header = core::ptr::NonNull::new(window.base() as *mut VirtIOHeader)
        .ok_or(virtio_drivers::transport::mmio::MmioError::BadMagic(0))?;
    // SAFETY: `window` is device memory (`Mmio::map` refuses RAM), identity
    // mapped uncached, `len` bytes long, and consumed here, so the transport
    // is its owner for the rest of the VM's life; other accesses to the same
    // registers are volatile (an interrupt acknowledgement), never Rust
    // references.
    unsafe { MmioTransport::new(header, window.len() as usize) }
}
