//! Per-open-file readahead state, modelled on Linux's `ondemand_readahead`
//! (`mm/readahead.c`).
//!
//! The state is a window `[start, start + size)` of pages that has been (or is
//! being) read ahead, of which the last `async_size` pages are "ahead" of the
//! reader. The first of those, page `start + size - async_size`, carries the
//! readahead *marker* (Linux's `PG_readahead`). Here the marker lives in this
//! per-file state rather than as a page flag: it is equivalent for one reader
//! and needs no page-cache cooperation.
//!
//! * First access at page 0, or an access right after the previous one
//!   (`index == prev + 1`), outside the current window: **initial window**
//!   sized from the request (4 pages for a one-page read, see
//!   [`Readahead::init_size`]), starting at the accessed page.
//! * Access touching the marker (or the page right after the window):
//!   **ramp up**: the next window starts where the old one ended and is twice
//!   as large, up to `max_pages` (default 32 pages = 128 KiB); all of it is
//!   asynchronous, so the marker is its first page and the next window is
//!   requested as soon as the reader enters this one. Accesses between the
//!   previous window's start and the current window's end are the reader
//!   catching up and cause no I/O decision.
//! * Any other access outside the window is **random**: the window is reset
//!   and nothing beyond the requested pages is read.

use core::ops::Range;

/// Default initial window for a single-page read, in pages.
pub const DEFAULT_INIT_PAGES: u64 = 4;
/// Default maximum window, in pages (128 KiB).
pub const DEFAULT_MAX_PAGES: u64 = 32;

/// Readahead state of one open file (Linux's `struct file_ra_state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readahead {
    /// First page of the current window.
    pub start: u64,
    /// Pages in the current window (0: no window).
    pub size: u64,
    /// Trailing pages of the window that are ahead of the reader.
    pub async_size: u64,
    /// Last page accessed, if any.
    pub prev_index: Option<u64>,
    /// Start of the previous window: a sequential reader is somewhere in
    /// `[prev_start, start + size)`, so accesses there are not random.
    pub prev_start: u64,
    /// Maximum window size in pages.
    pub max_pages: u64,
}

impl Default for Readahead {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAGES)
    }
}

impl Readahead {
    /// Fresh state with a maximum window of `max_pages` (0 disables
    /// readahead entirely).
    pub const fn new(max_pages: u64) -> Self {
        Self {
            start: 0,
            size: 0,
            async_size: 0,
            prev_index: None,
            prev_start: 0,
            max_pages,
        }
    }

    /// The page carrying the readahead marker, if there is a window.
    pub fn marker(&self) -> Option<u64> {
        (self.size > 0 && self.async_size > 0).then(|| self.start + self.size - self.async_size)
    }

    /// Initial window size for a request of `req` pages (Linux
    /// `get_init_ra_size`): ×4 for small requests, ×2 for medium, else max.
    pub fn init_size(&self, req: u64) -> u64 {
        let req = req.max(1).checked_next_power_of_two().unwrap_or(u64::MAX);
        let max = self.max_pages;
        if req <= max / 32 {
            req * 4
        } else if req <= max / 4 {
            req * 2
        } else {
            max
        }
        .min(max)
    }

    /// Next window size after `cur` (doubling, capped at `max_pages`).
    pub fn next_size(&self, cur: u64) -> u64 {
        cur.saturating_mul(2).min(self.max_pages).max(1)
    }

    /// Forgets the window (for example after `lseek` or `POSIX_FADV_RANDOM`).
    pub fn reset(&mut self) {
        self.size = 0;
        self.async_size = 0;
        self.prev_index = None;
    }

    /// Records an access to pages `index .. index + len_pages` of a file of
    /// `file_pages` pages and returns the range of pages that should be in
    /// the cache because of readahead, if any.
    ///
    /// The returned range may include the requested pages (for a new initial
    /// window); the caller reads whichever pages of it are not yet cached.
    /// `None` means: read only the requested pages.
    pub fn on_access(&mut self, index: u64, len_pages: u64, file_pages: u64) -> Option<Range<u64>> {
        let len = len_pages.max(1);
        let last = index.saturating_add(len - 1);
        let prev = self.prev_index;
        self.prev_index = Some(last);
        if self.max_pages == 0 || index >= file_pages {
            return None;
        }
        let win_end = self.start + self.size;
        let in_window = self.size > 0 && index >= self.prev_start && index < win_end;
        let sequential = match prev {
            None => index == 0,
            Some(p) => index == p.wrapping_add(1) || (index == p && len > 1),
        };

        // Ramp up: the access touches the marker, or (marker missed, e.g.
        // pages already cached by another reader) starts right at the end of
        // the window.
        let hits_marker = self.marker().is_some_and(|m| index <= m && m <= last);
        if hits_marker || (self.size > 0 && index == win_end && sequential) {
            let new_start = win_end.max(index);
            let new_size = self.next_size(self.size);
            self.prev_start = self.start;
            self.start = new_start;
            self.size = new_size;
            self.async_size = new_size;
            return self.clamp(file_pages);
        }
        if in_window {
            return None;
        }
        if sequential {
            let size = self.init_size(len).max(len.min(self.max_pages));
            self.start = index;
            self.size = size;
            // If the request fills the whole window, its last page becomes
            // the marker so that the next access ramps up.
            self.async_size = size.saturating_sub(len).max(1);
            self.prev_start = index;
            return self.clamp(file_pages);
        }
        // Random access: drop the window, read just what was asked for.
        self.size = 0;
        self.async_size = 0;
        self.start = index;
        None
    }

    fn clamp(&self, file_pages: u64) -> Option<Range<u64>> {
        let end = (self.start + self.size).min(file_pages);
        (self.start < end).then_some(self.start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn sequential_window_grows_to_max() {
        let mut ra = Readahead::default();
        let mut windows = Vec::new();
        for i in 0..200 {
            if let Some(r) = ra.on_access(i, 1, 1000) {
                windows.push((i, r));
            }
        }
        assert_eq!(windows[0], (0, 0..4));
        assert_eq!(windows[1], (1, 4..12));
        assert_eq!(windows[2], (4, 12..28));
        assert_eq!(windows[3], (12, 28..60));
        assert_eq!(windows[4], (28, 60..92));
        // Windows are contiguous, never exceed 32 pages, and stay ahead of the reader.
        for w in windows.windows(2) {
            assert_eq!(w[0].1.end, w[1].1.start);
            assert!(w[1].1.end - w[1].1.start <= 32);
            assert!(w[1].0 < w[1].1.start);
        }
    }

    #[test]
    fn clamps_to_file_end() {
        let mut ra = Readahead::default();
        assert_eq!(ra.on_access(0, 1, 2), Some(0..2));
        assert_eq!(ra.on_access(1, 1, 2), None); // next window starts past EOF
        assert_eq!(ra.on_access(5, 1, 2), None);
    }

    #[test]
    fn random_access_does_not_read_ahead() {
        let mut ra = Readahead::default();
        for &i in &[50u64, 7, 300, 120, 9, 77, 500, 3] {
            assert_eq!(ra.on_access(i, 1, 1000), None, "page {i}");
        }
        assert_eq!(ra.size, 0);
        // Re-reading the same page in small pieces is not "sequential".
        assert_eq!(ra.on_access(3, 1, 1000), None);
        // But moving on to the next page starts a new stream.
        assert_eq!(ra.on_access(4, 1, 1000), Some(4..8));
    }

    #[test]
    fn random_jump_resets_window() {
        let mut ra = Readahead::default();
        assert!(ra.on_access(0, 1, 1000).is_some());
        assert!(ra.on_access(1, 1, 1000).is_some());
        assert_eq!(ra.on_access(700, 1, 1000), None);
        assert_eq!(ra.size, 0);
        assert_eq!(ra.on_access(701, 1, 1000), Some(701..705));
    }

    #[test]
    fn large_requests_and_config() {
        let mut ra = Readahead::new(64);
        assert_eq!(ra.init_size(1), 4);
        assert_eq!(ra.init_size(2), 8);
        assert_eq!(ra.init_size(8), 16);
        assert_eq!(ra.init_size(32), 64);
        // A 16-page read at offset 0: window of 32, marker after the request.
        assert_eq!(ra.on_access(0, 16, 1000), Some(0..32));
        assert_eq!(ra.marker(), Some(16));
        assert_eq!(ra.on_access(16, 16, 1000), Some(32..96));
        let mut off = Readahead::new(0);
        assert_eq!(off.on_access(0, 1, 1000), None);
        assert_eq!(off.on_access(1, 1, 1000), None);
        // Request bigger than the max window.
        let mut small = Readahead::new(4);
        assert_eq!(small.on_access(0, 8, 100), Some(0..4));
        assert_eq!(small.on_access(8, 8, 100), Some(8..12));
    }
}
