//! Lending a blocked caller's buffers to a device for the length of one
//! call.
//!
//! A block request reads into (or writes from) the caller's own memory: a
//! page-cache frame, a buffer on its stack. [`Queue`](super::Queue) cannot
//! post that memory, since it must own what it posts. [`lend`] posts
//! borrowed buffers instead, and is built so that it cannot return before
//! the device has given every one of them back: it waits, under the
//! driver's own wait routine but re-checking for itself, until the queue
//! has reaped each request it posted. While a request is in flight only the
//! queue reaches its buffers (the caller's borrows are held by the blocked
//! call), and the queue touches them only to hand them back
//! (`VirtQueue::pop_used`, which copies a bounce buffer into place).
//!
//! A lent buffer that is not physically contiguous (a heap buffer spread
//! over scattered frames, say) is bounced before it is posted: [`lend`]
//! copies it into DMA memory of its own (and back, for a buffer the device
//! writes, when the request is reaped), allocated outside the device's
//! lock. When that memory cannot be had the request fails with
//! `Error::DmaError`, an I/O error for one caller; the HAL's own bounce
//! path (which can only panic on failure) is never reached from here.
//!
//! Several threads may lend at once: each posts under the device's
//! [`IrqMutex`], sleeps, and on waking reaps every completion in used-ring
//! order (whoever's it is) and looks for its own; a request's result waits
//! under a unique id, so a descriptor is reused as soon as it is reaped.

use alloc::vec::Vec;
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicU64, Ordering};

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport;

use super::Error;
use crate::dma::DmaBuffer;
use crate::hal::{BOUNCED_BYTES, KernelHal, contiguous_phys, pages_for};
use crate::mm;
use crate::sync::IrqMutex;

/// The most buffers of each direction in one lent request.
pub const MAX_LENT: usize = 3;

/// The buffers of one request: the device reads the `reads` buffers, then
/// writes the `writes` buffers, each side in the order given (virtio puts
/// every device-readable descriptor before the device-writable ones).
#[derive(Debug)]
pub struct Lend<'a> {
    ins: [&'a [u8]; MAX_LENT],
    n_in: usize,
    outs: [&'a mut [u8]; MAX_LENT],
    n_out: usize,
}

impl Default for Lend<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Lend<'a> {
    /// A request with no buffers yet.
    pub fn new() -> Self {
        Lend {
            ins: [&[]; MAX_LENT],
            n_in: 0,
            outs: [&mut [], &mut [], &mut []],
            n_out: 0,
        }
    }

    /// Adds a buffer the device reads. An empty buffer is left out.
    ///
    /// # Panics
    ///
    /// With more than [`MAX_LENT`] of them (a driver bug).
    pub fn reads(mut self, buf: &'a [u8]) -> Self {
        if !buf.is_empty() {
            assert!(self.n_in < MAX_LENT, "too many device-readable buffers");
            self.ins[self.n_in] = buf;
            self.n_in += 1;
        }
        self
    }

    /// Adds a buffer the device writes. An empty buffer is left out.
    ///
    /// # Panics
    ///
    /// With more than [`MAX_LENT`] of them (a driver bug).
    pub fn writes(mut self, buf: &'a mut [u8]) -> Self {
        if !buf.is_empty() {
            assert!(self.n_out < MAX_LENT, "too many device-writable buffers");
            self.outs[self.n_out] = buf;
            self.n_out += 1;
        }
        self
    }
}

/// A posted request's buffers, as the queue keeps them until the device is
/// done: the same pointers and lengths as were posted (the caller's own, or
/// the bounce buffers standing in for them).
struct Lent {
    ins: [*const [u8]; MAX_LENT],
    n_in: usize,
    outs: [*mut [u8]; MAX_LENT],
    n_out: usize,
    id: u64,
    /// Bounce buffers posted for device-readable buffers, freed when reaped.
    bounce_in: [Option<DmaBuffer>; MAX_LENT],
    /// Bounce buffers posted for device-writable buffers, with the caller's
    /// buffer each is copied back into when reaped.
    bounce_out: [Option<(DmaBuffer, *mut [u8])>; MAX_LENT],
}

impl Lent {
    /// The buffers of `req` as they will be posted: each physically
    /// contiguous one as it is, each other one replaced by a bounce buffer
    /// (a device-readable one filled from it). Allocates, so it runs
    /// outside the device's lock; `DmaError` (nothing kept) when the bounce
    /// memory cannot be had.
    fn prepare(req: &mut Lend<'_>) -> Result<Lent, Error> {
        let mut lent = Lent {
            ins: [&[] as &[u8]; MAX_LENT].map(|s| s as *const [u8]),
            n_in: req.n_in,
            outs: [core::ptr::slice_from_raw_parts_mut(core::ptr::null_mut(), 0); MAX_LENT],
            n_out: req.n_out,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            bounce_in: [None, None, None],
            bounce_out: [None, None, None],
        };
        for (i, buf) in req.ins[..req.n_in].iter().enumerate() {
            lent.ins[i] = match bounce_for(buf, false) {
                None => *buf as *const [u8],
                Some(Ok(mut b)) => {
                    let posted = &mut b.as_mut_slice()[..buf.len()];
                    posted.copy_from_slice(buf);
                    BOUNCED_BYTES.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    let p = posted as *const [u8];
                    lent.bounce_in[i] = Some(b);
                    p
                }
                Some(Err(e)) => {
                    lent.free_bounces();
                    return Err(e);
                }
            };
        }
        for (i, buf) in req.outs[..req.n_out].iter_mut().enumerate() {
            lent.outs[i] = match bounce_for(buf, true) {
                None => &mut **buf as *mut [u8],
                Some(Ok(mut b)) => {
                    let p = &mut b.as_mut_slice()[..buf.len()] as *mut [u8];
                    lent.bounce_out[i] = Some((b, &mut **buf as *mut [u8]));
                    p
                }
                Some(Err(e)) => {
                    lent.free_bounces();
                    return Err(e);
                }
            };
        }
        Ok(lent)
    }

    /// Copies what the device wrote into bounce buffers back into the
    /// caller's buffers, and frees every bounce buffer. Only once the
    /// device has given the request back.
    fn unbounce(&mut self) {
        for (b, orig) in self.bounce_out.iter_mut().filter_map(Option::take) {
            // SAFETY: `orig` is a buffer of the blocked lender (see `reap`),
            // reached by nothing else until its result is filed; the bounce
            // buffer is at least as long (made for it in `prepare`).
            let dst = unsafe { &mut *orig };
            dst.copy_from_slice(&b.as_slice()[..dst.len()]);
            BOUNCED_BYTES.fetch_add(dst.len() as u64, Ordering::Relaxed);
            b.free();
        }
        self.free_bounces();
    }

    fn free_bounces(&mut self) {
        for b in self.bounce_in.iter_mut().filter_map(Option::take) {
            b.free();
        }
        for (b, _) in self.bounce_out.iter_mut().filter_map(Option::take) {
            b.free();
        }
    }
}

/// A bounce buffer for `buf` when the device cannot reach it in place (not
/// physically contiguous once present): `None` when it can.
fn bounce_for(buf: &[u8], device_writes: bool) -> Option<Result<DmaBuffer, Error>> {
    let (va, len) = (buf.as_ptr() as u64, buf.len() as u64);
    mm::prepare_for_dma(va, len, device_writes);
    if contiguous_phys(va, len).is_some() {
        return None;
    }
    Some(DmaBuffer::alloc_reclaiming(pages_for(buf.len())).ok_or(Error::DmaError))
}

// SAFETY: the pointers are dereferenced only by `LendingQueue::reap`, under
// the device's lock, while their lender is blocked in `lend` (see there);
// which CPU does so does not matter.
unsafe impl Send for Lent {}

/// Ids of lent requests, unique across every queue (so a lender can only
/// ever find its own result).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A virtqueue of `N` descriptors whose requests lend their callers'
/// buffers through [`lend`]. Like the device it serves, it is meant to live
/// for the rest of the VM: dropping it leaks its rings (the device may still
/// use them), and any request still in flight keeps its lender blocked.
pub struct LendingQueue<const N: usize> {
    vq: ManuallyDrop<VirtQueue<KernelHal, N>>,
    /// The request posted under each token (head descriptor index).
    lent: Vec<Option<Lent>>,
    /// Reaped requests whose lender has not yet collected them: (id, bytes
    /// the device wrote).
    done: Vec<(u64, u32)>,
    /// The device broke the ring: nothing more is posted or reaped.
    broken: bool,
}

impl<const N: usize> LendingQueue<N> {
    /// Sets up queue `idx` of the device behind `transport`.
    pub fn new<Tr: Transport>(
        transport: &mut Tr,
        idx: u16,
        indirect: bool,
        event_idx: bool,
    ) -> Result<Self, Error> {
        let vq = VirtQueue::new(transport, idx, indirect, event_idx)?;
        let mut lent = Vec::with_capacity(N);
        lent.resize_with(N, || None);
        Ok(LendingQueue {
            vq: ManuallyDrop::new(vq),
            lent,
            done: Vec::with_capacity(N),
            broken: false,
        })
    }

    /// Requests posted and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.lent.iter().filter(|l| l.is_some()).count()
    }

    /// Takes every request the device has finished with off the used ring
    /// (in its order) and files its result for its lender. Returns how many.
    pub fn reap(&mut self) -> usize {
        let mut n = 0;
        while !self.broken {
            let Some(token) = self.vq.peek_used() else {
                break;
            };
            let Some(mut l) = self.lent.get_mut(token as usize).and_then(Option::take) else {
                log::error!("virtio: completion for unknown token {token}");
                self.broken = true;
                break;
            };
            // SAFETY: `l` holds the buffers posted with `token` (it has been
            // in `lent[token]` since `add`), borrowed by a caller of `lend`
            // that is blocked until it finds `l.id` in `done`, which happens
            // only below, after the device has given them back. Until then
            // nothing but this queue reaches them (the lender holds the
            // borrows and does not use them), so the references made here
            // are the only ones, and they end with this block.
            let popped = unsafe {
                let ins: [&[u8]; MAX_LENT] =
                    core::array::from_fn(|i| if i < l.n_in { &*l.ins[i] } else { &[] });
                let mut outs: [&mut [u8]; MAX_LENT] = core::array::from_fn(|i| {
                    if i < l.n_out {
                        &mut *l.outs[i]
                    } else {
                        &mut []
                    }
                });
                self.vq
                    .pop_used(token, &ins[..l.n_in], &mut outs[..l.n_out])
            };
            match popped {
                Ok(len) => {
                    l.unbounce();
                    self.done.push((l.id, len));
                    n += 1;
                }
                Err(e) => {
                    // The device may still hold the buffers: their lender
                    // must never get them back, so its result is never
                    // filed (it stays blocked) and the queue stops.
                    log::error!(
                        "virtio: the device broke the used ring ({}); queue stopped",
                        super::error_str(&e)
                    );
                    self.broken = true;
                }
            }
        }
        n
    }

    /// Posts the request in `pending` (from [`Lent::prepare`]) and takes it
    /// out; returns its id, or why it was not posted (leaving it there).
    /// Its buffers must stay borrowed and untouched until `take` has
    /// returned that id (`lend` sees to it).
    fn add(&mut self, pending: &mut Option<Lent>) -> Result<u64, Error> {
        let Some(lent) = pending.as_mut() else {
            return Err(Error::InvalidParam);
        };
        if self.broken {
            return Err(Error::IoError);
        }
        // SAFETY: each pointer is a buffer of `lend`'s caller (borrowed by
        // it for longer than the device may hold it: `lend` does not return
        // before `reap` has popped this token and filed `lent.id`, and it
        // neither reads nor writes them meanwhile) or a bounce buffer that
        // `lent` owns until then. The slices made here end with this call;
        // `lent` records the same pointers for `pop_used`.
        let r = unsafe {
            let ins: [&[u8]; MAX_LENT] =
                core::array::from_fn(|i| if i < lent.n_in { &*lent.ins[i] } else { &[] });
            let mut outs: [&mut [u8]; MAX_LENT] = core::array::from_fn(|i| {
                if i < lent.n_out {
                    &mut *lent.outs[i]
                } else {
                    &mut []
                }
            });
            self.vq.add(&ins[..lent.n_in], &mut outs[..lent.n_out])
        };
        let token = r?;
        let id = lent.id;
        match self.lent.get_mut(token as usize) {
            Some(slot) => *slot = pending.take(),
            None => {
                // Cannot happen (tokens are descriptor indices); were it to,
                // the request could never be reaped: stop the queue, which
                // keeps the lender blocked. Its bounce buffers are left to
                // the device (a dropped `DmaBuffer` keeps its frames).
                self.broken = true;
                *pending = None;
            }
        }
        Ok(id)
    }

    /// The result of request `id`, once reaped.
    fn take(&mut self, id: u64) -> Option<u32> {
        let i = self.done.iter().position(|(x, _)| *x == id)?;
        Some(self.done.swap_remove(i).1)
    }
}

/// A device with a [`LendingQueue`], behind the lock [`lend`] takes.
pub trait LendingDevice<const N: usize>: Send {
    /// The queue requests go to.
    fn queue(&mut self) -> &mut LendingQueue<N>;
    /// Tells the device that requests were added (the queue wants it).
    fn notify(&mut self);
    /// Called after each request is posted, with the requests in flight.
    fn posted(&mut self, _in_flight: usize) {}
}

/// While armed, an unwind out of `lend` would free buffers a device still
/// holds: spin instead (the kernel target aborts on panic, so this is a
/// second line).
struct NoUnwind;

impl Drop for NoUnwind {
    fn drop(&mut self) {
        loop {
            core::hint::spin_loop();
        }
    }
}

/// Runs `reqs` on `dev`'s queue with their buffers lent to the device:
/// posts them in order (several in flight; waiting for room when the queue
/// is full) and returns, once the device has given back every buffer it
/// was given, each request's result: the bytes the device wrote, or why it
/// was not posted (the requests after a failed one are not posted either,
/// and get the same error).
///
/// `wait(cond)` is the driver's way of waiting (sleeping on the device's
/// wait queue, woken by its interrupt, or polling) until `cond()` holds;
/// `lend` checks the condition again itself, so a `wait` that returns early
/// only costs another round.
///
/// `Err(DmaError)`, with nothing posted, when there is no memory for the
/// bookkeeping of `reqs.len()` requests.
pub fn lend<D: LendingDevice<N>, const N: usize>(
    dev: &IrqMutex<D>,
    reqs: &mut [Lend<'_>],
    wait: &mut dyn FnMut(&mut dyn FnMut() -> bool),
) -> Result<Vec<Result<u32, Error>>, Error> {
    let mut ids: Vec<Result<u64, Error>> = Vec::new();
    let mut results: Vec<Result<u32, Error>> = Vec::new();
    if ids.try_reserve_exact(reqs.len()).is_err() || results.try_reserve_exact(reqs.len()).is_err()
    {
        return Err(Error::DmaError);
    }
    let mut until = |cond: &mut dyn FnMut() -> bool| {
        let mut hit = false;
        while !hit {
            wait(&mut || {
                hit = hit || cond();
                hit
            });
        }
    };
    let guard = NoUnwind;
    for req in reqs.iter_mut() {
        if let Some(Err(e)) = ids.last() {
            let e = *e;
            ids.push(Err(e));
            continue;
        }
        let mut pending = match Lent::prepare(req) {
            Ok(l) => Some(l),
            Err(e) => {
                ids.push(Err(e));
                continue;
            }
        };
        let mut got = None;
        until(&mut || {
            if pending.is_none() {
                return true;
            }
            let mut g = dev.lock();
            let d = &mut *g;
            let q = d.queue();
            q.reap();
            let r = q.add(&mut pending);
            let in_flight = q.in_flight();
            let notify = q.vq.should_notify();
            match r {
                Err(Error::QueueFull) => false,
                Err(e) => {
                    if let Some(mut lent) = pending.take() {
                        lent.free_bounces();
                    }
                    got = Some(Err(e));
                    true
                }
                Ok(id) => {
                    d.posted(in_flight);
                    if notify {
                        d.notify();
                    }
                    got = Some(Ok(id));
                    true
                }
            }
        });
        ids.push(got.unwrap_or(Err(Error::IoError)));
    }
    for id in ids {
        let Ok(id) = id else {
            results.push(id.map(|_| 0));
            continue;
        };
        let mut len = None;
        until(&mut || {
            let mut g = dev.lock();
            let q = g.queue();
            q.reap();
            len = q.take(id);
            len.is_some()
        });
        results.push(Ok(len.unwrap_or(0)));
    }
    // Every posted request has been reaped: the buffers are back.
    core::mem::forget(guard);
    Ok(results)
}
