//! Page-cache pages lent to the network: a pin that reads its frame.
//!
//! `sendfile` queues references to page-cache pages in a TCP send queue,
//! and the NIC reads them through scatter-gather descriptors. A
//! [`CachePin`] pins one page in a [`PageCache`] whose pages are
//! [`PageFrame`]s (so it is neither evicted nor freed), gives read access to
//! the frame's bytes, and unpins it when dropped (when the bytes are
//! acknowledged and the device has read them).
//!
//! As with Linux's `sendfile`, a write to the file while its pages are
//! queued changes the bytes that leave: the cache writes a pinned page in
//! place (it never frees or reuses it while pinned).

use alloc::sync::Arc;

use uk_vfs::{FileId, Inode, Locking, PageCache, PageFrames};

use crate::mm::{PAGE, PageFrame};

/// The most pages [`CachePin::pin_resident`] pins under one lock.
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

    /// Pins the resident pages `index, index + 1, ...` of `file` (at most
    /// `max`, and at most [`PIN_BATCH`]) under one lock, then hands each to
    /// `f` after the lock is released (`f` may allocate, and dropping a pin
    /// takes the lock again); returns how many. Stops at the first page
    /// that is not resident (pin that one with [`CachePin::pin`], which
    /// reads it).
    pub fn pin_resident(
        cache: &Arc<PageCache<L, F>>,
        file: FileId,
        index: u64,
        max: u64,
        mut f: impl FnMut(Self),
    ) -> u64 {
        let mut got: [Option<(uk_vfs::PinnedPage, u64)>; PIN_BATCH] =
            core::array::from_fn(|_| None);
        let mut k = 0;
        let n = cache.pin_resident(file, index, max.min(PIN_BATCH as u64), |pin, page| {
            got[k] = Some((pin, page.phys()));
            k += 1;
        });
        for (pin, pa) in got.iter_mut().filter_map(Option::take) {
            f(CachePin {
                cache: cache.clone(),
                pin: Some(pin),
                pa,
            });
        }
        n
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
