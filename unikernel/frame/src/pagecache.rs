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
pub const PIN_BATCH: usize = 16;

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
/// as one reference per page ([`uk_net::SharedBytes::part`]). The pages stay
/// pinned until the last of those references is gone.
pub struct PinRun<L: Locking, F: PageFrames<Page = PageFrame>> {
    cache: Arc<PageCache<L, F>>,
    /// `None` only while dropping.
    pins: Option<uk_vfs::PinnedRun>,
    /// The pinned frames' numbers (physical = virtual address / 4 KiB;
    /// 32 bits cover 16 TiB and keep the value small: it is moved into its
    /// `Arc` by copy).
    pfn: [u32; PIN_BATCH],
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
        Some(PinRun {
            cache: cache.clone(),
            pins: Some(run),
            pfn,
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

    /// Page `i`'s bytes (empty past the last).
    pub fn page(&self, i: usize) -> &[u8] {
        if i >= self.len() {
            return &[];
        }
        // SAFETY: `pfn[i]` is the frame of a page this run pinned in
        // `self.cache` (taken under the same pin, which `drop` releases),
        // and the cache never frees or reuses a pinned page's frame; RAM is
        // identity mapped, so it is a valid, aligned 4 KiB region. The cache
        // writes a pinned page only in place, as for [`CachePin`].
        unsafe {
            core::slice::from_raw_parts((u64::from(self.pfn[i]) * PAGE) as *const u8, PAGE as usize)
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
        self.page(0)
    }

    fn part(&self, i: usize) -> &[u8] {
        self.page(i)
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
