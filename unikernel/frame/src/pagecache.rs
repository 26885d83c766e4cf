//! Page-cache pages lent to the network: a pin that reads its frame.
//!
//! `sendfile` queues references to page-cache pages in a TCP send queue,
//! and the NIC reads them through scatter-gather descriptors. A
//! [`CachePin`] pins one page in a [`PageCache`] whose pages are
//! [`PageFrame`]s (so it is neither evicted nor freed), gives read access to
//! the frame's bytes, and unpins it when dropped (when the bytes are
//! acknowledged and the device has read them). A [`PinRun`] does the same
//! for up to [`PIN_BATCH`] resident pages at once.
//!
//! As with Linux's `sendfile`, a write to the file while its pages are
//! queued changes the bytes that leave: the cache writes a pinned page in
//! place (it never frees or reuses it while pinned).

use alloc::sync::Arc;

use uk_vfs::{FileId, Inode, Locking, PageCache, PageFrames};

use crate::mm::{PAGE, PageFrame};

/// The most pages [`PinRun::pin_resident`] pins under one lock.
pub const PIN_BATCH: usize = uk_vfs::PIN_RUN_MAX;

/// One pinned page of a page cache, readable.
pub struct CachePin<L: Locking, F: PageFrames<Page = PageFrame>> {
    cache: Arc<PageCache<L, F>>,
    pin: Option<uk_vfs::PinnedPage>,
    /// The pinned frame's physical (= virtual) address.
    pa: u64,
}

impl<L: Locking, F: PageFrames<Page = PageFrame>> CachePin<L, F> {
    /// Pins page `index` of `file` in `cache` (reading it if needed: may
    /// block on the disk).
    pub fn pin(
        cache: &Arc<PageCache<L, F>>,
        file: FileId,
        inode: &dyn Inode,
        index: u64,
    ) -> uk_vfs::Result<Self> {
        let (pin, pa) = cache.pin_with(file, inode, index, |p| p.phys())?;
        Ok(CachePin {
            cache: cache.clone(),
            pin: Some(pin),
            pa,
        })
    }

    /// The page's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `pa` is the frame of the page this value pinned in
        // `self.cache` (taken from the cache under the same pin), and the
        // cache never frees or reuses a pinned page's frame: it is unpinned
        // only in `drop`, so the frame stays allocated while `self` lives.
        // RAM is identity mapped, so `pa` is a valid, aligned 4 KiB region.
        // The cache writes a pinned page only in place (a file written while
        // it is being sent), as documented above.
        unsafe { core::slice::from_raw_parts(self.pa as *const u8, PAGE as usize) }
    }
}

impl<L: Locking, F: PageFrames<Page = PageFrame>> Drop for CachePin<L, F> {
    fn drop(&mut self) {
        if let Some(pin) = self.pin.take() {
            self.cache.unpin(pin);
        }
    }
}

/// Up to [`PIN_BATCH`] consecutive resident pages of a file, pinned under
/// one lock and released under one lock when the value is dropped: one
/// allocation and two lock round trips for a run that `sendfile` hands out
/// as one reference per *span* ([`uk_net::SharedBytes::part`]): pages whose
/// frames are consecutive too (most are: the cache fills a file's pages in
/// order from a mostly free allocator) are one span, one slice of up to 64
/// KiB in the identity map, so the network stack handles one payload and
/// the device reads one descriptor where there were up to sixteen. The
/// pages stay pinned until the last of those references is gone.
pub struct PinRun<L: Locking, F: PageFrames<Page = PageFrame>> {
    cache: Arc<PageCache<L, F>>,
    /// `None` only while dropping.
    pins: Option<uk_vfs::PinnedRun>,
    /// The pinned frames' numbers (physical = virtual address / 4 KiB;
    /// 32 bits cover 16 TiB and keep the value small: it is moved into its
    /// `Arc` by copy).
    pfn: [u32; PIN_BATCH],
    /// Span `i` is pages `start[i]..start[i + 1]` (the last one ends at the
    /// run's length).
    start: [u8; PIN_BATCH],
    /// How many spans.
    spans: u8,
}

impl<L: Locking, F: PageFrames<Page = PageFrame>> PinRun<L, F> {
    /// Pins the resident pages `index, index + 1, ...` of `file` (at most
    /// `max`, and at most [`PIN_BATCH`]); stops at the first page that is
    /// not resident (pin that one with [`CachePin::pin`], which reads it).
    /// `None` when the first page is not resident.
    pub fn pin_resident(
        cache: &Arc<PageCache<L, F>>,
        file: FileId,
        index: u64,
        max: u64,
    ) -> Option<Self> {
        let mut pfn = [0u32; PIN_BATCH];
        let mut fits = true;
        let run =
            cache.pin_resident_run(file, index, max.min(PIN_BATCH as u64) as u32, |k, page| {
                let n = page.phys() / PAGE;
                fits &= n <= u64::from(u32::MAX);
                pfn[k] = n as u32;
            });
        if run.is_empty() || !fits {
            cache.unpin_run(run);
            return None;
        }
        let mut start = [0u8; PIN_BATCH];
        let mut spans = 1;
        for k in 1..run.len() {
            if pfn[k] != pfn[k - 1].wrapping_add(1) {
                start[spans] = k as u8;
                spans += 1;
            }
        }
        Some(PinRun {
            cache: cache.clone(),
            pins: Some(run),
            pfn,
            start,
            spans: spans as u8,
        })
    }

    /// How many pages the run holds.
    pub fn len(&self) -> usize {
        self.pins.as_ref().map_or(0, uk_vfs::PinnedRun::len)
    }

    /// Never true: an empty run is not made.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many spans of consecutive frames the run holds (its parts).
    pub fn spans(&self) -> usize {
        usize::from(self.spans)
    }

    /// Span `i`'s bytes: its pages, one slice (empty past the last span).
    pub fn span(&self, i: usize) -> &[u8] {
        if i >= self.spans() {
            return &[];
        }
        let first = usize::from(self.start[i]);
        let end = if i + 1 < self.spans() {
            usize::from(self.start[i + 1])
        } else {
            self.len()
        };
        // SAFETY: `pfn[first..end]` are the frames of pages this run pinned
        // in `self.cache` (taken under the same pins, which `drop` releases),
        // and the cache never frees or reuses a pinned page's frame. They are
        // consecutive frame numbers (`pin_resident` cut the spans where they
        // are not), each a whole allocated RAM frame, and RAM is identity
        // mapped: the span is one valid, aligned region of `end - first`
        // pages. The cache writes a pinned page only in place, as for
        // [`CachePin`].
        unsafe {
            core::slice::from_raw_parts(
                (u64::from(self.pfn[first]) * PAGE) as *const u8,
                (end - first) * PAGE as usize,
            )
        }
    }
}

impl<L: Locking, F: PageFrames<Page = PageFrame>> Drop for PinRun<L, F> {
    fn drop(&mut self) {
        if let Some(run) = self.pins.take() {
            self.cache.unpin_run(run);
        }
    }
}

impl<L, F> uk_net::SharedBytes for PinRun<L, F>
where
    L: Locking + Send + Sync,
    F: PageFrames<Page = PageFrame> + Send + Sync,
    PageCache<L, F>: Send + Sync,
{
    fn bytes(&self) -> &[u8] {
        self.span(0)
    }

    fn part(&self, i: usize) -> &[u8] {
        self.span(i)
    }
}

impl<L, F> uk_net::SharedBytes for CachePin<L, F>
where
    L: Locking + Send + Sync,
    F: PageFrames<Page = PageFrame> + Send + Sync,
    PageCache<L, F>: Send + Sync,
{
    fn bytes(&self) -> &[u8] {
        CachePin::bytes(self)
    }
}
