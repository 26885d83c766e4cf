//! Memory statistics, as reported by the kernel (for example when the
//! `memstats` kernel option is on).

use core::fmt;

/// A snapshot of the kernel's memory counters.
///
/// The kernel fills it from the frame allocator, the page-fault handler, the
/// heap and the VMA set; this crate only defines the record and its
/// one-line textual form (see the [`Display`](fmt::Display) impl).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Frames managed by the frame allocator (free + allocated).
    pub frames_total: u64,
    /// Frames currently free.
    pub frames_free: u64,
    /// Frames currently handed out (page tables included).
    pub frames_used: u64,
    /// Of those, frames holding page tables of the mmap window.
    pub page_table_frames: u64,
    /// Page faults handled.
    pub page_faults: u64,
    /// Faults resolved by mapping the shared zero page.
    pub zero_page_maps: u64,
    /// Copy-on-write copies performed.
    pub cow_copies: u64,
    /// Heap arenas obtained from the page allocator.
    pub heap_arenas: u64,
    /// Total bytes of those heap arenas.
    pub heap_arena_bytes: u64,
    /// Heap bytes currently allocated.
    pub heap_in_use: u64,
    /// Allocations served directly by page mappings (too large for the heap).
    pub large_allocs: u64,
    /// Bytes held by those large allocations.
    pub large_alloc_bytes: u64,
    /// Number of virtual memory areas.
    pub vmas: u64,
    /// Bytes covered by virtual memory areas.
    pub mapped_bytes: u64,
}

impl MemStats {
    /// The fields as `(name, value)` pairs, in declaration order.
    pub const fn fields(&self) -> [(&'static str, u64); 14] {
        [
            ("frames_total", self.frames_total),
            ("frames_free", self.frames_free),
            ("frames_used", self.frames_used),
            ("page_table_frames", self.page_table_frames),
            ("page_faults", self.page_faults),
            ("zero_page_maps", self.zero_page_maps),
            ("cow_copies", self.cow_copies),
            ("heap_arenas", self.heap_arenas),
            ("heap_arena_bytes", self.heap_arena_bytes),
            ("heap_in_use", self.heap_in_use),
            ("large_allocs", self.large_allocs),
            ("large_alloc_bytes", self.large_alloc_bytes),
            ("vmas", self.vmas),
            ("mapped_bytes", self.mapped_bytes),
        ]
    }
}

/// One line of space-separated `key=value` pairs covering every field, e.g.
/// `frames_total=10 frames_free=5 ... mapped_bytes=0` (no trailing newline).
impl fmt::Display for MemStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.fields().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::string::ToString;
    use std::vec::Vec;

    #[test]
    fn default_is_all_zero() {
        let s = MemStats::default().to_string();
        assert_eq!(
            s,
            "frames_total=0 frames_free=0 frames_used=0 page_table_frames=0 page_faults=0 zero_page_maps=0 \
             cow_copies=0 heap_arenas=0 heap_arena_bytes=0 heap_in_use=0 large_allocs=0 \
             large_alloc_bytes=0 vmas=0 mapped_bytes=0"
        );
    }

    #[test]
    fn every_field_appears_once_with_its_value() {
        let m = MemStats {
            frames_total: 1,
            frames_free: 2,
            frames_used: 3,
            page_table_frames: 13,
            page_faults: 4,
            zero_page_maps: 5,
            cow_copies: 6,
            heap_arenas: 7,
            heap_arena_bytes: 8,
            heap_in_use: 9,
            large_allocs: 10,
            large_alloc_bytes: 11,
            vmas: 12,
            mapped_bytes: u64::MAX,
        };
        let s = m.to_string();
        assert!(!s.contains('\n'));
        assert!(!s.starts_with(' ') && !s.ends_with(' '));
        let pairs: Vec<(&str, &str)> = s.split(' ').map(|p| p.split_once('=').unwrap()).collect();
        assert_eq!(pairs.len(), 14);
        for (i, (k, v)) in pairs.iter().enumerate() {
            assert_eq!(*k, m.fields()[i].0);
            assert_eq!(v.parse::<u64>().unwrap(), m.fields()[i].1);
        }
        assert!(s.contains(&format!("mapped_bytes={}", u64::MAX)));
        assert!(s.starts_with("frames_total=1 frames_free=2 frames_used=3 "));
    }
}
