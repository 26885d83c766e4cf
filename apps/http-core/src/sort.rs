//! A small in-place heapsort for the cold paths that sort (byte ranges,
//! directory listings).
//!
//! `slice::sort_unstable_by` is about 3 KiB of code for every element type
//! it is instantiated with (pattern-defeating quicksort, heapsort fallback,
//! small-sort networks); this one is a few hundred bytes, still
//! O(n log n) in the worst case, and needs no allocation.

use core::cmp::Ordering;

/// Sorts `v` by `cmp`, not stably, in O(n log n).
pub fn heapsort_by<T>(v: &mut [T], mut cmp: impl FnMut(&T, &T) -> Ordering) {
    let n = v.len();
    for start in (0..n / 2).rev() {
        sift_down(v, start, n, &mut cmp);
    }
    for end in (1..n).rev() {
        v.swap(0, end);
        sift_down(v, 0, end, &mut cmp);
    }
}

/// Restores the max-heap property of `v[..end]` below `node`.
fn sift_down<T>(
    v: &mut [T],
    mut node: usize,
    end: usize,
    cmp: &mut impl FnMut(&T, &T) -> Ordering,
) {
    loop {
        let mut child = 2 * node + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && cmp(&v[child], &v[child + 1]) == Ordering::Less {
            child += 1;
        }
        if cmp(&v[node], &v[child]) != Ordering::Less {
            return;
        }
        v.swap(node, child);
        node = child;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn sorts_like_the_standard_sort() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for len in 0..200usize {
            let mut v: Vec<u64> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % (len as u64 / 2 + 1)
                })
                .collect();
            let mut want = v.clone();
            want.sort_unstable();
            heapsort_by(&mut v, |a, b| a.cmp(b));
            assert_eq!(v, want, "length {len}");
            heapsort_by(&mut v, |a, b| b.cmp(a));
            want.reverse();
            assert_eq!(v, want, "length {len}, descending");
        }
    }
}
