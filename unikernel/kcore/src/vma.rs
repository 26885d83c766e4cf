//! Virtual memory area bookkeeping for `mmap`, `munmap` and `mprotect`.
//!
//! A [`VmaSet`] records which page ranges of a window of the virtual address
//! space are mapped, with which protection and backing. It is a sorted,
//! fixed-capacity array (no heap), so it can live in a `static`. The set is
//! always kept canonical: sorted, non-overlapping, inside the window, page
//! aligned, and with mergeable neighbours merged (see [`VmaKind`]).
//!
//! Every operation is atomic: when it returns an error, nothing changed and
//! no callback was called.

use core::ops::BitOr;

/// Page size used by the VMA bookkeeping.
pub const PAGE_SIZE: u64 = 4096;

/// Page protection bits (the values of `PROT_READ`, `PROT_WRITE`,
/// `PROT_EXEC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Prot(u8);

impl Prot {
    /// No access.
    pub const NONE: Prot = Prot(0);
    /// Readable.
    pub const READ: Prot = Prot(1);
    /// Writable.
    pub const WRITE: Prot = Prot(2);
    /// Executable.
    pub const EXEC: Prot = Prot(4);
    /// Read and write.
    pub const RW: Prot = Prot(3);

    /// Both sets of bits.
    pub const fn union(self, o: Prot) -> Prot {
        Prot(self.0 | o.0)
    }

    /// Whether every bit of `o` is set in `self`.
    pub const fn contains(self, o: Prot) -> bool {
        self.0 & o.0 == o.0
    }

    /// Whether [`Prot::READ`] is set.
    pub fn readable(self) -> bool {
        self.contains(Prot::READ)
    }

    /// Whether [`Prot::WRITE`] is set.
    pub fn writable(self) -> bool {
        self.contains(Prot::WRITE)
    }

    /// Whether [`Prot::EXEC`] is set.
    pub fn executable(self) -> bool {
        self.contains(Prot::EXEC)
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// From raw bits, dropping unknown ones (anything but 1, 2, 4).
    pub const fn from_bits_truncate(b: u8) -> Prot {
        Prot(b & 7)
    }
}

impl BitOr for Prot {
    type Output = Prot;
    fn bitor(self, o: Prot) -> Prot {
        self.union(o)
    }
}

/// What backs a VMA.
///
/// Neighbouring VMAs with equal protection merge when their kinds are both
/// `Anon`, both `Heap` or both `Stack`, or both `File` of the same file with
/// contiguous offsets. `Guard` areas never merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaKind {
    /// Anonymous zero-filled memory.
    Anon,
    /// A guard area (never merged).
    Guard,
    /// A thread stack.
    Stack,
    /// Heap arena memory.
    Heap,
    /// A mapping of a file.
    File {
        /// Opaque file identifier.
        file: u64,
        /// Byte offset in the file of the VMA's start (page aligned).
        offset: u64,
    },
}

impl VmaKind {
    /// This kind, for a piece starting `delta` bytes after the original
    /// start (adjusts file offsets; wrapping so that it never panics).
    pub fn advanced(self, delta: u64) -> VmaKind {
        match self {
            VmaKind::File { file, offset } => VmaKind::File {
                file,
                offset: offset.wrapping_add(delta),
            },
            k => k,
        }
    }
}

/// A virtual memory area `[start, end)`, page aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    /// First address (inclusive).
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Protection.
    pub prot: Prot,
    /// Backing.
    pub kind: VmaKind,
}

impl Vma {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The part `[start, end)` of this VMA (which must lie inside it), with
    /// the kind adjusted.
    fn slice(&self, start: u64, end: u64) -> Vma {
        Vma {
            start,
            end,
            prot: self.prot,
            kind: self.kind.advanced(start - self.start),
        }
    }

    /// Whether `self` followed directly by `next` would merge.
    fn merges_with(&self, next: &Vma) -> bool {
        if self.end != next.start || self.prot != next.prot {
            return false;
        }
        match (self.kind, next.kind) {
            (VmaKind::Anon, VmaKind::Anon)
            | (VmaKind::Heap, VmaKind::Heap)
            | (VmaKind::Stack, VmaKind::Stack) => true,
            (
                VmaKind::File {
                    file: f1,
                    offset: o1,
                },
                VmaKind::File {
                    file: f2,
                    offset: o2,
                },
            ) => f1 == f2 && o1.checked_add(self.size()) == Some(o2),
            _ => false,
        }
    }
}

/// Errors of [`VmaSet`] operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmError {
    /// Bad address, length or alignment.
    InvalidArgument,
    /// No room in the window or in the set's capacity.
    NoMemory,
    /// Part of the range is not mapped.
    NotMapped,
    /// The range overlaps an existing mapping.
    Exists,
}

impl VmError {
    /// The Linux errno: `EINVAL` 22, `ENOMEM` 12 (also for
    /// [`VmError::NotMapped`], as `mprotect` returns), `EEXIST` 17.
    pub fn errno(self) -> i32 {
        match self {
            VmError::InvalidArgument => 22,
            VmError::NoMemory | VmError::NotMapped => 12,
            VmError::Exists => 17,
        }
    }
}

const EMPTY: Vma = Vma {
    start: 0,
    end: 0,
    prot: Prot::NONE,
    kind: VmaKind::Anon,
};

/// The VMAs of one address-space window, at most `N` of them.
pub struct VmaSet<const N: usize> {
    vmas: [Vma; N],
    len: usize,
    window_start: u64,
    window_end: u64,
}

impl<const N: usize> VmaSet<N> {
    /// An empty set managing `[window_start, window_end)`. The window is
    /// shrunk to page boundaries (start rounded up, end down); an inverted
    /// window is empty.
    pub const fn new(window_start: u64, window_end: u64) -> Self {
        let (ws, we) = Self::page_window(window_start, window_end);
        VmaSet {
            vmas: [EMPTY; N],
            len: 0,
            window_start: ws,
            window_end: we,
        }
    }

    const fn page_window(window_start: u64, window_end: u64) -> (u64, u64) {
        let ws = match window_start.checked_next_multiple_of(PAGE_SIZE) {
            Some(s) => s,
            None => !(PAGE_SIZE - 1),
        };
        let mut we = window_end & !(PAGE_SIZE - 1);
        if we < ws {
            we = ws;
        }
        (ws, we)
    }

    /// Replaces the window of an empty set (a set built with `new(0, 0)`
    /// in a zero-initialised static, placed at boot). Returns false, and
    /// changes nothing, if the set is not empty.
    pub fn set_window(&mut self, window_start: u64, window_end: u64) -> bool {
        if self.len != 0 {
            return false;
        }
        let (ws, we) = Self::page_window(window_start, window_end);
        self.window_start = ws;
        self.window_end = we;
        true
    }

    /// The (page-aligned) window `(start, end)`.
    pub fn window(&self) -> (u64, u64) {
        (self.window_start, self.window_end)
    }

    /// Maximum number of VMAs.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Maps `len` bytes (rounded up to pages) at the lowest free address of
    /// the window that fits (first fit) and returns that address.
    ///
    /// Errors: `InvalidArgument` if `len` is 0 or a file offset is not page
    /// aligned; `NoMemory` if no gap is large enough or a new VMA would
    /// exceed the capacity.
    pub fn map(&mut self, len: u64, prot: Prot, kind: VmaKind) -> Result<u64, VmError> {
        Self::check_kind(kind)?;
        if len == 0 {
            return Err(VmError::InvalidArgument);
        }
        let len = len
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(VmError::NoMemory)?;
        let mut gap_start = self.window_start;
        for i in 0..=self.len {
            let gap_end = if i < self.len {
                self.vmas[i].start
            } else {
                self.window_end
            };
            if gap_end - gap_start >= len {
                let v = Vma {
                    start: gap_start,
                    end: gap_start + len,
                    prot,
                    kind,
                };
                self.insert(i, v)?;
                return Ok(gap_start);
            }
            if i < self.len {
                gap_start = self.vmas[i].end;
            }
        }
        Err(VmError::NoMemory)
    }

    /// Maps `[start, start + len)` (`len` rounded up to pages) without
    /// replacing anything (like `MAP_FIXED_NOREPLACE`).
    ///
    /// Errors: `InvalidArgument` if `start` is unaligned, `len` is 0, a file
    /// offset is unaligned, or the range is not inside the window; `Exists`
    /// if it overlaps a mapping; `NoMemory` if the capacity would be
    /// exceeded.
    pub fn map_fixed(
        &mut self,
        start: u64,
        len: u64,
        prot: Prot,
        kind: VmaKind,
    ) -> Result<(), VmError> {
        Self::check_kind(kind)?;
        let end = self.range_end(start, len)?;
        if start < self.window_start || end > self.window_end {
            return Err(VmError::InvalidArgument);
        }
        let i = self.first_ending_after(start);
        if i < self.len && self.vmas[i].start < end {
            return Err(VmError::Exists);
        }
        self.insert(
            i,
            Vma {
                start,
                end,
                prot,
                kind,
            },
        )
    }

    /// Unmaps `[start, start + len)` (`len` rounded up to pages) like
    /// `munmap`: unmapped holes in the range are fine, VMAs are split as
    /// needed, and `f` is called once per removed piece (kind and file
    /// offset adjusted to the piece), lowest first, before this returns.
    ///
    /// Errors: `InvalidArgument` if `start` is unaligned, `len` is 0 or the
    /// range wraps; `NoMemory` if splitting a VMA in two would exceed the
    /// capacity (then nothing changed and `f` was not called).
    pub fn unmap(&mut self, start: u64, len: u64, mut f: impl FnMut(Vma)) -> Result<(), VmError> {
        let end = self.range_end(start, len)?;
        let i0 = self.first_ending_after(start);
        let mut i1 = i0;
        while i1 < self.len && self.vmas[i1].start < end {
            i1 += 1;
        }
        if i0 == i1 {
            return Ok(());
        }
        let first = self.vmas[i0];
        let last = self.vmas[i1 - 1];
        let keep_left = first.start < start;
        let keep_right = last.end > end;
        if i1 - i0 == 1 && keep_left && keep_right && self.len == N {
            return Err(VmError::NoMemory);
        }
        for v in &self.vmas[i0..i1] {
            f(v.slice(v.start.max(start), v.end.min(end)));
        }
        if i1 - i0 == 1 && keep_left && keep_right {
            self.vmas[i0] = first.slice(first.start, start);
            self.insert_raw(i0 + 1, last.slice(end, last.end));
            return Ok(());
        }
        let mut from = i0;
        let mut to = i1;
        if keep_left {
            self.vmas[i0] = first.slice(first.start, start);
            from += 1;
        }
        if keep_right {
            self.vmas[i1 - 1] = last.slice(end, last.end);
            to -= 1;
        }
        self.remove_raw(from, to);
        Ok(())
    }

    /// Changes the protection of `[start, start + len)` (`len` rounded up to
    /// pages) like `mprotect`. The whole range must be mapped. VMAs are
    /// split at the range ends and neighbours re-merged. `f` is called once
    /// per mapped piece of the range, with its OLD protection (and kind
    /// adjusted to the piece), lowest first, before this returns. `len == 0`
    /// succeeds without doing anything (as in Linux).
    ///
    /// Errors: `InvalidArgument` if `start` is unaligned; `NoMemory` if the
    /// range wraps or the splits would exceed the capacity; `NotMapped` if
    /// part of the range is not mapped.
    pub fn protect(
        &mut self,
        start: u64,
        len: u64,
        prot: Prot,
        mut f: impl FnMut(Vma),
    ) -> Result<(), VmError> {
        if !start.is_multiple_of(PAGE_SIZE) {
            return Err(VmError::InvalidArgument);
        }
        if len == 0 {
            return Ok(());
        }
        let end = len
            .checked_next_multiple_of(PAGE_SIZE)
            .and_then(|l| start.checked_add(l))
            .ok_or(VmError::NoMemory)?;
        let i0 = self.first_ending_after(start);
        let mut i1 = i0;
        let mut covered = start;
        while i1 < self.len && self.vmas[i1].start < end {
            if self.vmas[i1].start > covered {
                return Err(VmError::NotMapped);
            }
            covered = self.vmas[i1].end;
            i1 += 1;
        }
        if covered < end {
            return Err(VmError::NotMapped);
        }
        let plan = ProtectPlan::new(self, i0, i1, start, end, prot);
        let out = plan.run(self, false);
        let new_len = self.len - plan.window() + out;
        if new_len > N {
            return Err(VmError::NoMemory);
        }
        for v in &self.vmas[i0..i1] {
            f(v.slice(v.start.max(start), v.end.min(end)));
        }
        let old_top = plan.top;
        let new_top = plan.base + out;
        if new_top > old_top {
            self.vmas.copy_within(old_top..self.len, new_top);
        }
        plan.run(self, true);
        if new_top < old_top {
            self.vmas.copy_within(old_top..self.len, new_top);
        }
        self.len = new_len;
        Ok(())
    }

    /// The VMA containing `addr`, if any.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        let i = self.first_ending_after(addr);
        self.vmas[..self.len].get(i).filter(|v| v.start <= addr)
    }

    /// The VMAs in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.vmas[..self.len].iter()
    }

    /// Number of VMAs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total bytes mapped.
    pub fn mapped_bytes(&self) -> u64 {
        self.iter().map(Vma::size).sum()
    }

    fn check_kind(kind: VmaKind) -> Result<(), VmError> {
        match kind {
            VmaKind::File { offset, .. } if !offset.is_multiple_of(PAGE_SIZE) => {
                Err(VmError::InvalidArgument)
            }
            _ => Ok(()),
        }
    }

    /// End of `[start, start + len)` rounded up, or `InvalidArgument` if
    /// `start` is unaligned, `len` is 0 or the range wraps.
    fn range_end(&self, start: u64, len: u64) -> Result<u64, VmError> {
        if !start.is_multiple_of(PAGE_SIZE) || len == 0 {
            return Err(VmError::InvalidArgument);
        }
        len.checked_next_multiple_of(PAGE_SIZE)
            .and_then(|l| start.checked_add(l))
            .ok_or(VmError::InvalidArgument)
    }

    /// Index of the first VMA with `end > addr`.
    fn first_ending_after(&self, addr: u64) -> usize {
        self.vmas[..self.len].partition_point(|v| v.end <= addr)
    }

    /// Inserts `v` (which fits in the gap before index `i`), merging it with
    /// its neighbours when possible.
    fn insert(&mut self, i: usize, v: Vma) -> Result<(), VmError> {
        let merge_prev = i > 0 && self.vmas[i - 1].merges_with(&v);
        let merge_next = i < self.len && v.merges_with(&self.vmas[i]);
        match (merge_prev, merge_next) {
            (true, true) => {
                self.vmas[i - 1].end = self.vmas[i].end;
                self.remove_raw(i, i + 1);
            }
            (true, false) => self.vmas[i - 1].end = v.end,
            (false, true) => {
                self.vmas[i].start = v.start;
                self.vmas[i].kind = v.kind;
            }
            (false, false) => {
                if self.len == N {
                    return Err(VmError::NoMemory);
                }
                self.insert_raw(i, v);
            }
        }
        Ok(())
    }

    /// Inserts at index `i`, shifting the rest up (capacity checked by the
    /// caller).
    fn insert_raw(&mut self, i: usize, v: Vma) {
        self.vmas.copy_within(i..self.len, i + 1);
        self.vmas[i] = v;
        self.len += 1;
    }

    /// Removes indices `[from, to)`.
    fn remove_raw(&mut self, from: usize, to: usize) {
        if from < to {
            self.vmas.copy_within(to..self.len, from);
            self.len -= to - from;
        }
    }
}

/// How `protect` rewrites the slots `[base, top)`: the sequence
/// `[prev] [left rest] middle pieces... [right rest] [next]`, merged.
struct ProtectPlan {
    base: usize,
    top: usize,
    i0: usize,
    i1: usize,
    start: u64,
    end: u64,
    prot: Prot,
    first: Vma,
    last: Vma,
    prev: Option<Vma>,
    next: Option<Vma>,
    split_left: bool,
    split_right: bool,
}

impl ProtectPlan {
    fn new<const N: usize>(
        set: &VmaSet<N>,
        i0: usize,
        i1: usize,
        start: u64,
        end: u64,
        prot: Prot,
    ) -> Self {
        let first = set.vmas[i0];
        let last = set.vmas[i1 - 1];
        let prev = (i0 > 0).then(|| set.vmas[i0 - 1]);
        let next = (i1 < set.len).then(|| set.vmas[i1]);
        ProtectPlan {
            base: i0 - usize::from(prev.is_some()),
            top: i1 + usize::from(next.is_some()),
            i0,
            i1,
            start,
            end,
            prot,
            first,
            last,
            prev,
            next,
            split_left: first.start < start && first.prot != prot,
            split_right: last.end > end && last.prot != prot,
        }
    }

    /// Number of original slots rewritten.
    fn window(&self) -> usize {
        self.top - self.base
    }

    fn seq_len(&self) -> usize {
        usize::from(self.prev.is_some())
            + usize::from(self.split_left)
            + (self.i1 - self.i0)
            + usize::from(self.split_right)
            + usize::from(self.next.is_some())
    }

    /// Element `p` of the sequence. Middle pieces other than the first and
    /// last are read from the array (slot `i0 + k`), which `run` never
    /// overwrites before reading.
    fn elem<const N: usize>(&self, set: &VmaSet<N>, mut p: usize) -> Vma {
        if let Some(prev) = self.prev {
            if p == 0 {
                return prev;
            }
            p -= 1;
        }
        if self.split_left {
            if p == 0 {
                return self.first.slice(self.first.start, self.start);
            }
            p -= 1;
        }
        let k = self.i1 - self.i0;
        if p < k {
            let orig = if p == 0 {
                self.first
            } else if p == k - 1 {
                self.last
            } else {
                set.vmas[self.i0 + p]
            };
            let s = if p == 0 && self.split_left {
                self.start
            } else {
                orig.start
            };
            let e = if p == k - 1 && self.split_right {
                self.end
            } else {
                orig.end
            };
            let mut v = orig.slice(s, e);
            v.prot = self.prot;
            return v;
        }
        p -= k;
        if self.split_right {
            if p == 0 {
                return self.last.slice(self.end, self.last.end);
            }
            p -= 1;
        }
        debug_assert!(p == 0);
        self.next.unwrap_or(EMPTY)
    }

    /// Merges the sequence; writes the result to slots `base..` when
    /// `write` is set. Returns the number of resulting VMAs.
    fn run<const N: usize>(&self, set: &mut VmaSet<N>, write: bool) -> usize {
        let n = self.seq_len();
        let mut cur = self.elem(set, 0);
        let mut out = 0;
        for p in 1..n {
            let nx = self.elem(set, p);
            if cur.merges_with(&nx) {
                cur.end = nx.end;
            } else {
                if write {
                    set.vmas[self.base + out] = cur;
                }
                out += 1;
                cur = nx;
            }
        }
        if write {
            set.vmas[self.base + out] = cur;
        }
        out + 1
    }
}

#[cfg(test)]
mod set_window_tests {
    use super::*;

    #[test]
    fn set_window_only_on_an_empty_set() {
        let mut s: VmaSet<4> = VmaSet::new(0, 0);
        assert!(s.map(4096, Prot::READ, VmaKind::Anon).is_err());
        assert!(s.set_window(0x1001, 0x9fff));
        assert_eq!(s.window(), (0x2000, 0x9000));
        let a = s.map(4096, Prot::READ, VmaKind::Anon).unwrap();
        assert_eq!(a, 0x2000);
        assert!(!s.set_window(0, 0x10_0000));
        assert_eq!(s.window(), (0x2000, 0x9000));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const P: u64 = PAGE_SIZE;
    const W0: u64 = 0x10_0000;

    type Set = VmaSet<16>;

    fn vma(start: u64, end: u64, prot: Prot, kind: VmaKind) -> Vma {
        Vma {
            start,
            end,
            prot,
            kind,
        }
    }

    fn list<const N: usize>(s: &VmaSet<N>) -> Vec<Vma> {
        s.iter().copied().collect()
    }

    fn file(offset: u64) -> VmaKind {
        VmaKind::File { file: 7, offset }
    }

    /// Structural invariants of a canonical set.
    fn check<const N: usize>(s: &VmaSet<N>) {
        let (ws, we) = s.window();
        let v = list(s);
        assert!(v.len() <= N);
        assert_eq!(v.len(), s.len());
        assert_eq!(s.is_empty(), v.is_empty());
        for x in &v {
            assert!(x.start < x.end, "{x:?}");
            assert!(
                x.start.is_multiple_of(P) && x.end.is_multiple_of(P),
                "{x:?}"
            );
            assert!(x.start >= ws && x.end <= we, "{x:?}");
            if let VmaKind::File { offset, .. } = x.kind {
                assert_eq!(offset % P, 0);
            }
        }
        for w in v.windows(2) {
            assert!(w[0].end <= w[1].start, "sorted/non-overlapping {w:?}");
            assert!(!w[0].merges_with(&w[1]), "unmerged {w:?}");
        }
        assert_eq!(
            s.mapped_bytes(),
            v.iter().map(|x| x.end - x.start).sum::<u64>()
        );
    }

    #[test]
    fn prot_bits() {
        let rw = Prot::READ | Prot::WRITE;
        assert_eq!(rw, Prot::RW);
        assert!(rw.readable() && rw.writable() && !rw.executable());
        assert!(rw.contains(Prot::READ) && rw.contains(Prot::NONE) && !rw.contains(Prot::EXEC));
        assert!(!Prot::NONE.readable());
        assert_eq!(Prot::default(), Prot::NONE);
        assert_eq!(Prot::READ.union(Prot::EXEC).bits(), 5);
        assert_eq!(Prot::from_bits_truncate(0xff).bits(), 7);
        assert_eq!(Prot::from_bits_truncate(8), Prot::NONE);
        assert!(Prot::from_bits_truncate(7).executable());
    }

    #[test]
    fn errnos() {
        assert_eq!(VmError::InvalidArgument.errno(), 22);
        assert_eq!(VmError::NoMemory.errno(), 12);
        assert_eq!(VmError::NotMapped.errno(), 12);
        assert_eq!(VmError::Exists.errno(), 17);
    }

    #[test]
    fn const_static_and_window_rounding() {
        static EMPTY_SET: VmaSet<4> = VmaSet::new(0x1001, 0x5fff);
        assert_eq!(EMPTY_SET.window(), (0x2000, 0x5000));
        assert!(EMPTY_SET.is_empty());
        assert_eq!(EMPTY_SET.capacity(), 4);
        let s: VmaSet<4> = VmaSet::new(0x9000, 0x1000);
        assert_eq!(s.window(), (0x9000, 0x9000));
        let s: VmaSet<4> = VmaSet::new(u64::MAX, u64::MAX);
        let (a, b) = s.window();
        assert_eq!(a, b);
        let mut s: VmaSet<0> = VmaSet::new(0, 1 << 20);
        assert_eq!(s.map(P, Prot::RW, VmaKind::Anon), Err(VmError::NoMemory));
        assert_eq!(s.unmap(0, P, |_| panic!()), Ok(()));
    }

    #[test]
    fn map_first_fit_and_merge() {
        let mut s = Set::new(W0, W0 + 16 * P);
        assert_eq!(s.map(1, Prot::RW, VmaKind::Anon), Ok(W0));
        assert_eq!(s.map(P + 1, Prot::RW, VmaKind::Anon), Ok(W0 + P));
        assert_eq!(list(&s), vec![vma(W0, W0 + 3 * P, Prot::RW, VmaKind::Anon)]);
        assert_eq!(s.map(P, Prot::READ, VmaKind::Anon), Ok(W0 + 3 * P));
        assert_eq!(s.map(P, Prot::READ, VmaKind::Heap), Ok(W0 + 4 * P));
        assert_eq!(s.len(), 3);
        assert_eq!(s.mapped_bytes(), 5 * P);
        check(&s);
        assert_eq!(
            s.map(0, Prot::RW, VmaKind::Anon),
            Err(VmError::InvalidArgument)
        );
        assert_eq!(
            s.map(12 * P, Prot::RW, VmaKind::Anon),
            Err(VmError::NoMemory)
        );
        assert_eq!(
            s.map(u64::MAX, Prot::RW, VmaKind::Anon),
            Err(VmError::NoMemory)
        );
        assert_eq!(s.map(11 * P, Prot::RW, VmaKind::Anon), Ok(W0 + 5 * P));
        assert_eq!(s.map(1, Prot::RW, VmaKind::Anon), Err(VmError::NoMemory));
        // A hole is reused first.
        s.unmap(W0 + P, P, |_| {}).unwrap();
        assert_eq!(s.map(P, Prot::EXEC, VmaKind::Stack), Ok(W0 + P));
        check(&s);
    }

    #[test]
    fn map_fills_hole_merging_both_sides() {
        let mut s = Set::new(W0, W0 + 16 * P);
        s.map_fixed(W0, P, Prot::RW, VmaKind::Heap).unwrap();
        s.map_fixed(W0 + 2 * P, P, Prot::RW, VmaKind::Heap).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.map(P, Prot::RW, VmaKind::Heap), Ok(W0 + P));
        assert_eq!(list(&s), vec![vma(W0, W0 + 3 * P, Prot::RW, VmaKind::Heap)]);
    }

    #[test]
    fn guard_never_merges() {
        let mut s = Set::new(W0, W0 + 16 * P);
        s.map(P, Prot::NONE, VmaKind::Guard).unwrap();
        s.map(P, Prot::NONE, VmaKind::Guard).unwrap();
        s.map(P, Prot::NONE, VmaKind::Anon).unwrap();
        assert_eq!(s.len(), 3);
        check(&s);
    }

    #[test]
    fn file_offsets_merge_only_when_contiguous() {
        let mut s = Set::new(W0, W0 + 32 * P);
        assert_eq!(s.map(P, Prot::READ, file(0x10 * P)), Ok(W0));
        assert_eq!(s.map(2 * P, Prot::READ, file(0x11 * P)), Ok(W0 + P));
        assert_eq!(s.len(), 1);
        assert_eq!(s.map(P, Prot::READ, file(0x20 * P)), Ok(W0 + 3 * P));
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.map(
                P,
                Prot::READ,
                VmaKind::File {
                    file: 8,
                    offset: 0x21 * P
                }
            ),
            Ok(W0 + 4 * P)
        );
        assert_eq!(s.len(), 3);
        // Filling before an existing file VMA (merge with next) keeps the
        // earlier offset.
        s.map_fixed(W0 + 10 * P, P, Prot::READ, file(5 * P))
            .unwrap();
        s.map_fixed(W0 + 9 * P, P, Prot::READ, file(4 * P)).unwrap();
        assert_eq!(
            s.find(W0 + 10 * P).unwrap(),
            &vma(W0 + 9 * P, W0 + 11 * P, Prot::READ, file(4 * P))
        );
        assert_eq!(
            s.map(P, Prot::READ, file(3)),
            Err(VmError::InvalidArgument),
            "unaligned file offset"
        );
        // Offset overflow never merges nor panics.
        s.map_fixed(W0 + 20 * P, P, Prot::READ, file(!(P - 1)))
            .unwrap();
        s.map_fixed(W0 + 21 * P, P, Prot::READ, file(0)).unwrap();
        check(&s);
        assert_eq!(s.find(W0 + 21 * P).unwrap().start, W0 + 21 * P);
    }

    #[test]
    fn map_fixed_errors() {
        let mut s = Set::new(W0, W0 + 16 * P);
        let k = VmaKind::Anon;
        assert_eq!(
            s.map_fixed(W0 + 1, P, Prot::RW, k),
            Err(VmError::InvalidArgument)
        );
        assert_eq!(
            s.map_fixed(W0, 0, Prot::RW, k),
            Err(VmError::InvalidArgument)
        );
        assert_eq!(
            s.map_fixed(W0 - P, P, Prot::RW, k),
            Err(VmError::InvalidArgument)
        );
        assert_eq!(
            s.map_fixed(W0 + 15 * P, 2 * P, Prot::RW, k),
            Err(VmError::InvalidArgument)
        );
        assert_eq!(
            s.map_fixed(W0, u64::MAX, Prot::RW, k),
            Err(VmError::InvalidArgument)
        );
        assert_eq!(
            s.map_fixed(!(P - 1), P, Prot::RW, k),
            Err(VmError::InvalidArgument)
        );
        s.map_fixed(W0 + 4 * P, 2 * P, Prot::RW, k).unwrap();
        assert_eq!(
            s.map_fixed(W0 + 5 * P, P, Prot::RW, k),
            Err(VmError::Exists)
        );
        assert_eq!(
            s.map_fixed(W0 + 3 * P, 2 * P, Prot::RW, k),
            Err(VmError::Exists)
        );
        assert_eq!(s.map_fixed(W0, 16 * P, Prot::RW, k), Err(VmError::Exists));
        assert_eq!(s.map_fixed(W0 + 3 * P, P, Prot::READ, k), Ok(()));
        assert_eq!(s.map_fixed(W0 + 15 * P, 1, Prot::READ, k), Ok(()));
        assert_eq!(s.len(), 3);
        check(&s);
    }

    #[test]
    fn capacity_limits() {
        let mut s: VmaSet<2> = VmaSet::new(W0, W0 + 16 * P);
        s.map_fixed(W0, P, Prot::READ, VmaKind::Anon).unwrap();
        s.map_fixed(W0 + 4 * P, 4 * P, Prot::READ, VmaKind::Anon)
            .unwrap();
        assert_eq!(
            s.map_fixed(W0 + 2 * P, P, Prot::READ, VmaKind::Anon),
            Err(VmError::NoMemory)
        );
        // Merging needs no new slot.
        assert_eq!(s.map_fixed(W0 + P, P, Prot::READ, VmaKind::Anon), Ok(()));
        assert_eq!(
            s.map_fixed(W0 + 3 * P, P, Prot::READ, VmaKind::Anon),
            Ok(())
        );
        assert_eq!(s.len(), 2);
        // Hole punching needs a slot: nothing changes, no callback.
        let before = list(&s);
        assert_eq!(
            s.unmap(W0 + 5 * P, P, |_| panic!("no callback on error")),
            Err(VmError::NoMemory)
        );
        assert_eq!(
            s.protect(W0 + 5 * P, P, Prot::RW, |_| panic!("no callback on error")),
            Err(VmError::NoMemory)
        );
        assert_eq!(list(&s), before);
        // Trimming an end is fine.
        s.unmap(W0 + 7 * P, P, |_| {}).unwrap();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn unmap_splits_and_reports_pieces() {
        let mut s = Set::new(W0, W0 + 64 * P);
        s.map_fixed(W0, 10 * P, Prot::RW, file(100 * P)).unwrap();
        s.map_fixed(W0 + 12 * P, 4 * P, Prot::READ, VmaKind::Anon)
            .unwrap();
        s.map_fixed(W0 + 16 * P, 4 * P, Prot::RW, VmaKind::Anon)
            .unwrap();
        let mut pieces = Vec::new();
        s.unmap(W0 + 2 * P, 3 * P, |v| pieces.push(v)).unwrap();
        assert_eq!(
            pieces,
            vec![vma(W0 + 2 * P, W0 + 5 * P, Prot::RW, file(102 * P))]
        );
        assert_eq!(
            list(&s)[..2],
            [
                vma(W0, W0 + 2 * P, Prot::RW, file(100 * P)),
                vma(W0 + 5 * P, W0 + 10 * P, Prot::RW, file(105 * P))
            ]
        );
        pieces.clear();
        // Spanning holes and several VMAs, trimming both ends.
        s.unmap(W0 + 8 * P, 10 * P - 1, |v| pieces.push(v)).unwrap();
        assert_eq!(
            pieces,
            vec![
                vma(W0 + 8 * P, W0 + 10 * P, Prot::RW, file(108 * P)),
                vma(W0 + 12 * P, W0 + 16 * P, Prot::READ, VmaKind::Anon),
                vma(W0 + 16 * P, W0 + 18 * P, Prot::RW, VmaKind::Anon),
            ]
        );
        assert_eq!(
            list(&s),
            vec![
                vma(W0, W0 + 2 * P, Prot::RW, file(100 * P)),
                vma(W0 + 5 * P, W0 + 8 * P, Prot::RW, file(105 * P)),
                vma(W0 + 18 * P, W0 + 20 * P, Prot::RW, VmaKind::Anon),
            ]
        );
        check(&s);
        // Unmapping nothing / outside the window is fine.
        s.unmap(W0 + 30 * P, P, |_| panic!()).unwrap();
        s.unmap(0, P, |_| panic!()).unwrap();
        assert_eq!(s.unmap(W0 + 1, P, |_| {}), Err(VmError::InvalidArgument));
        assert_eq!(s.unmap(W0, 0, |_| {}), Err(VmError::InvalidArgument));
        assert_eq!(s.unmap(W0, u64::MAX, |_| {}), Err(VmError::InvalidArgument));
        // Everything.
        let mut n = 0;
        s.unmap(0, !(P - 1), |_| n += 1).unwrap();
        assert_eq!(n, 3);
        assert!(s.is_empty());
        assert_eq!(s.mapped_bytes(), 0);
    }

    #[test]
    fn protect_splits_and_merges() {
        let mut s = Set::new(W0, W0 + 64 * P);
        s.map_fixed(W0, 10 * P, Prot::RW, VmaKind::Anon).unwrap();
        let mut old = Vec::new();
        s.protect(W0 + 3 * P, 2 * P, Prot::READ, |v| old.push(v))
            .unwrap();
        assert_eq!(
            old,
            vec![vma(W0 + 3 * P, W0 + 5 * P, Prot::RW, VmaKind::Anon)]
        );
        assert_eq!(
            list(&s),
            vec![
                vma(W0, W0 + 3 * P, Prot::RW, VmaKind::Anon),
                vma(W0 + 3 * P, W0 + 5 * P, Prot::READ, VmaKind::Anon),
                vma(W0 + 5 * P, W0 + 10 * P, Prot::RW, VmaKind::Anon),
            ]
        );
        // Back to RW: everything merges into one again.
        old.clear();
        s.protect(W0 + 2 * P, 4 * P, Prot::RW, |v| old.push(v))
            .unwrap();
        assert_eq!(
            old,
            vec![
                vma(W0 + 2 * P, W0 + 3 * P, Prot::RW, VmaKind::Anon),
                vma(W0 + 3 * P, W0 + 5 * P, Prot::READ, VmaKind::Anon),
                vma(W0 + 5 * P, W0 + 6 * P, Prot::RW, VmaKind::Anon),
            ]
        );
        assert_eq!(
            list(&s),
            vec![vma(W0, W0 + 10 * P, Prot::RW, VmaKind::Anon)]
        );
        // Protect at the very ends.
        s.protect(W0, P, Prot::NONE, |_| {}).unwrap();
        s.protect(W0 + 9 * P, 1, Prot::NONE, |_| {}).unwrap();
        assert_eq!(s.len(), 3);
        check(&s);
    }

    #[test]
    fn protect_merges_with_neighbours() {
        let mut s = Set::new(W0, W0 + 64 * P);
        s.map_fixed(W0, 2 * P, Prot::READ, file(0)).unwrap();
        s.map_fixed(W0 + 2 * P, 2 * P, Prot::RW, file(2 * P))
            .unwrap();
        s.map_fixed(W0 + 4 * P, 2 * P, Prot::READ, file(4 * P))
            .unwrap();
        assert_eq!(s.len(), 3);
        s.protect(W0 + 2 * P, 2 * P, Prot::READ, |_| {}).unwrap();
        assert_eq!(list(&s), vec![vma(W0, W0 + 6 * P, Prot::READ, file(0))]);
        // Split in the middle keeps offsets.
        s.protect(W0 + 3 * P, P, Prot::EXEC, |_| {}).unwrap();
        assert_eq!(
            list(&s),
            vec![
                vma(W0, W0 + 3 * P, Prot::READ, file(0)),
                vma(W0 + 3 * P, W0 + 4 * P, Prot::EXEC, file(3 * P)),
                vma(W0 + 4 * P, W0 + 6 * P, Prot::READ, file(4 * P)),
            ]
        );
    }

    #[test]
    fn protect_errors_change_nothing() {
        let mut s = Set::new(W0, W0 + 64 * P);
        s.map_fixed(W0, 2 * P, Prot::RW, VmaKind::Anon).unwrap();
        s.map_fixed(W0 + 3 * P, 2 * P, Prot::RW, VmaKind::Heap)
            .unwrap();
        let before = list(&s);
        let no = |_| panic!("no callback on error");
        assert_eq!(
            s.protect(W0 + 1, P, Prot::READ, no),
            Err(VmError::InvalidArgument)
        );
        assert_eq!(
            s.protect(W0, 4 * P, Prot::READ, no),
            Err(VmError::NotMapped)
        );
        assert_eq!(
            s.protect(W0 + P, 3 * P, Prot::READ, no),
            Err(VmError::NotMapped)
        );
        assert_eq!(
            s.protect(W0 + 2 * P, P, Prot::READ, no),
            Err(VmError::NotMapped)
        );
        assert_eq!(
            s.protect(W0 + 4 * P, 2 * P, Prot::READ, no),
            Err(VmError::NotMapped)
        );
        assert_eq!(
            s.protect(W0 + 10 * P, P, Prot::READ, no),
            Err(VmError::NotMapped)
        );
        assert_eq!(s.protect(0, P, Prot::READ, no), Err(VmError::NotMapped));
        assert_eq!(
            s.protect(W0, u64::MAX, Prot::READ, no),
            Err(VmError::NoMemory)
        );
        assert_eq!(
            s.protect(W0 + 1, 0, Prot::READ, no),
            Err(VmError::InvalidArgument)
        );
        assert_eq!(s.protect(W0, 0, Prot::READ, no), Ok(()));
        assert_eq!(s.protect(W0 + 10 * P, 0, Prot::READ, no), Ok(()));
        assert_eq!(list(&s), before);
        // Same protection over several areas: pieces reported, no change.
        let mut n = 0;
        s.protect(W0 + 3 * P, 2 * P, Prot::RW, |_| n += 1).unwrap();
        assert_eq!(n, 1);
        assert_eq!(list(&s), before);
    }

    #[test]
    fn protect_guard_stays_separate() {
        let mut s = Set::new(W0, W0 + 64 * P);
        s.map_fixed(W0, 4 * P, Prot::NONE, VmaKind::Guard).unwrap();
        s.protect(W0 + P, P, Prot::READ, |_| {}).unwrap();
        assert_eq!(s.len(), 3);
        s.protect(W0 + P, P, Prot::NONE, |_| {}).unwrap();
        assert_eq!(s.len(), 3, "guards do not re-merge");
        s.protect(W0, 4 * P, Prot::NONE, |_| {}).unwrap();
        assert_eq!(s.len(), 3);
        check(&s);
    }

    #[test]
    fn protect_at_full_capacity_when_merges_compensate() {
        // 4 VMAs alternating prot; protecting a range that splits both ends
        // but merges the middle must succeed even at capacity.
        let mut s: VmaSet<4> = VmaSet::new(W0, W0 + 64 * P);
        let prots = [Prot::READ, Prot::RW, Prot::READ, Prot::RW];
        for (i, p) in prots.iter().enumerate() {
            s.map_fixed(W0 + 2 * i as u64 * P, 2 * P, *p, VmaKind::Anon)
                .unwrap();
        }
        assert_eq!(s.len(), 4);
        s.protect(W0 + P, 6 * P, Prot::EXEC, |_| {}).unwrap();
        assert_eq!(
            list(&s),
            vec![
                vma(W0, W0 + P, Prot::READ, VmaKind::Anon),
                vma(W0 + P, W0 + 7 * P, Prot::EXEC, VmaKind::Anon),
                vma(W0 + 7 * P, W0 + 8 * P, Prot::RW, VmaKind::Anon),
            ]
        );
    }

    #[test]
    fn find_lookup() {
        let mut s = Set::new(W0, W0 + 64 * P);
        assert!(s.find(W0).is_none());
        s.map_fixed(W0 + P, 2 * P, Prot::RW, VmaKind::Anon).unwrap();
        s.map_fixed(W0 + 5 * P, P, Prot::READ, VmaKind::Anon)
            .unwrap();
        assert!(s.find(W0 + P - 1).is_none());
        assert_eq!(s.find(W0 + P).unwrap().start, W0 + P);
        assert_eq!(s.find(W0 + 3 * P - 1).unwrap().start, W0 + P);
        assert!(s.find(W0 + 3 * P).is_none());
        assert_eq!(s.find(W0 + 5 * P + 17).unwrap().prot, Prot::READ);
        assert!(s.find(u64::MAX).is_none());
        assert!(s.find(0).is_none());
        assert!(s.find(W0 + 5 * P).unwrap().contains(W0 + 5 * P));
        assert_eq!(s.find(W0 + P).unwrap().size(), 2 * P);
    }

    // ---- randomized model test ----

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Per-page model kind: like `VmaKind`, but a file entry holds the
    /// offset of this page and a guard holds an identity (guard areas
    /// mapped or split separately stay separate).
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum MKind {
        Simple(VmaKind),
        File(u64, u64),
        Guard(u64),
    }

    type Page = Option<(Prot, MKind)>;

    struct Model {
        base: u64,
        pages: Vec<Page>,
        next_guard: u64,
    }

    impl Model {
        fn page_kind(&mut self, kind: VmaKind, page_in_vma: u64) -> MKind {
            match kind {
                VmaKind::File { file, offset } => MKind::File(file, offset + page_in_vma * P),
                VmaKind::Guard => MKind::Guard(self.next_guard),
                k => MKind::Simple(k),
            }
        }

        fn fill(&mut self, first: usize, n: usize, prot: Prot, kind: VmaKind) {
            for i in 0..n {
                let k = self.page_kind(kind, i as u64);
                self.pages[first + i] = Some((prot, k));
            }
            self.next_guard += 1;
        }

        /// The canonical VMA list implied by the pages.
        fn vmas(&self) -> Vec<Vma> {
            let mut out: Vec<Vma> = Vec::new();
            let mut last: Option<(usize, Prot, MKind)> = None;
            for (i, pg) in self.pages.iter().enumerate() {
                let addr = self.base + i as u64 * P;
                let Some((prot, k)) = *pg else {
                    last = None;
                    continue;
                };
                let cont = match last {
                    Some((li, lp, lk)) if li + 1 == i && lp == prot => match (lk, k) {
                        (MKind::Simple(a), MKind::Simple(b)) => a == b,
                        (MKind::File(f1, o1), MKind::File(f2, o2)) => {
                            f1 == f2 && o1.checked_add(P) == Some(o2)
                        }
                        (MKind::Guard(a), MKind::Guard(b)) => a == b,
                        _ => false,
                    },
                    _ => false,
                };
                if cont {
                    out.last_mut().unwrap().end = addr + P;
                } else {
                    let kind = match k {
                        MKind::Simple(k) => k,
                        MKind::File(file, offset) => VmaKind::File { file, offset },
                        MKind::Guard(_) => VmaKind::Guard,
                    };
                    out.push(vma(addr, addr + P, prot, kind));
                }
                last = Some((i, prot, k));
            }
            out
        }

        /// Pieces of `[s, e)` (page indices) as (vma-like) runs, for
        /// checking callbacks: consecutive pages of the same run.
        fn pieces(&self, s: usize, e: usize) -> Vec<Vma> {
            let all = self.vmas();
            let (a, b) = (self.base + s as u64 * P, self.base + e as u64 * P);
            all.iter()
                .filter(|v| v.start < b && v.end > a)
                .map(|v| v.slice(v.start.max(a), v.end.min(b)))
                .collect()
        }
    }

    fn random_kind(rng: &mut XorShift) -> VmaKind {
        match rng.below(6) {
            0 => VmaKind::Anon,
            1 => VmaKind::Heap,
            2 => VmaKind::Stack,
            3 => VmaKind::Guard,
            _ => VmaKind::File {
                file: rng.below(2),
                offset: rng.below(8) * P,
            },
        }
    }

    fn random_prot(rng: &mut XorShift) -> Prot {
        [Prot::NONE, Prot::READ, Prot::RW][rng.below(3) as usize]
    }

    fn model_test<const N: usize>(seed: u64, steps: usize) {
        const PAGES: usize = 40;
        let mut rng = XorShift(seed);
        let mut s: VmaSet<N> = VmaSet::new(W0, W0 + PAGES as u64 * P);
        let mut m = Model {
            base: W0,
            pages: vec![None; PAGES],
            next_guard: 0,
        };
        let mut counts = [0usize; 8];
        for _ in 0..steps {
            let before = list(&s);
            // Addresses: mostly page aligned in and around the window.
            let addr = if rng.below(20) == 0 {
                W0 + rng.below((PAGES as u64 + 4) * P)
            } else {
                W0 - 2 * P + rng.below(PAGES as u64 + 4) * P
            };
            let len = if rng.below(20) == 0 {
                rng.below(3)
            } else {
                rng.below(8 * P) + 1
            };
            let npages = len.div_ceil(P) as usize;
            let aligned = addr.is_multiple_of(P);
            let in_window = addr >= W0 && addr + npages as u64 * P <= W0 + PAGES as u64 * P;
            let first = addr.saturating_sub(W0) as usize / P as usize;
            let op = rng.below(4);
            let result = match op {
                0 => {
                    let prot = random_prot(&mut rng);
                    let kind = random_kind(&mut rng);
                    let got = s.map(len, prot, kind);
                    let want = if len == 0 {
                        Err(VmError::InvalidArgument)
                    } else {
                        let start = (0..=PAGES.saturating_sub(npages)).find(|&p| {
                            p + npages <= PAGES
                                && m.pages[p..p + npages].iter().all(Option::is_none)
                        });
                        match start {
                            None => Err(VmError::NoMemory),
                            Some(p) => {
                                let saved = (m.pages.clone(), m.next_guard);
                                m.fill(p, npages, prot, kind);
                                if m.vmas().len() > N {
                                    (m.pages, m.next_guard) = saved;
                                    Err(VmError::NoMemory)
                                } else {
                                    Ok(W0 + p as u64 * P)
                                }
                            }
                        }
                    };
                    assert_eq!(got, want);
                    got.map(|_| ())
                }
                1 => {
                    let prot = random_prot(&mut rng);
                    let kind = random_kind(&mut rng);
                    let got = s.map_fixed(addr, len, prot, kind);
                    let want = if !aligned || len == 0 || !in_window {
                        Err(VmError::InvalidArgument)
                    } else if m.pages[first..first + npages].iter().any(Option::is_some) {
                        Err(VmError::Exists)
                    } else {
                        let saved = (m.pages.clone(), m.next_guard);
                        m.fill(first, npages, prot, kind);
                        if m.vmas().len() > N {
                            (m.pages, m.next_guard) = saved;
                            Err(VmError::NoMemory)
                        } else {
                            Ok(())
                        }
                    };
                    assert_eq!(got, want);
                    got
                }
                2 => {
                    let mut pieces = Vec::new();
                    let got = s.unmap(addr, len, |v| pieces.push(v));
                    let want = if !aligned || len == 0 {
                        Err(VmError::InvalidArgument)
                    } else {
                        // Clip the range to the window in page indices.
                        let end = addr + npages as u64 * P;
                        let s0 = (addr.max(W0) - W0) / P;
                        let e0 = (end.min(W0 + PAGES as u64 * P)).saturating_sub(W0) / P;
                        let s0 = (s0 as usize).min(PAGES);
                        let e0 = (e0 as usize).max(s0);
                        let want_pieces = m.pieces(s0, e0);
                        let saved = m.pages.clone();
                        for pg in &mut m.pages[s0..e0] {
                            *pg = None;
                        }
                        if m.vmas().len() > N {
                            m.pages = saved;
                            Err(VmError::NoMemory)
                        } else {
                            assert_eq!(pieces, want_pieces, "unmap pieces");
                            Ok(())
                        }
                    };
                    assert_eq!(got, want);
                    got
                }
                _ => {
                    let prot = random_prot(&mut rng);
                    let mut pieces = Vec::new();
                    let got = s.protect(addr, len, prot, |v| pieces.push(v));
                    let want = if !aligned {
                        Err(VmError::InvalidArgument)
                    } else if len == 0 {
                        Ok(())
                    } else if !in_window
                        || m.pages[first..first + npages].iter().any(Option::is_none)
                    {
                        Err(VmError::NotMapped)
                    } else {
                        let want_pieces = m.pieces(first, first + npages);
                        let saved = (m.pages.clone(), m.next_guard);
                        // Guards whose protection changes are split off
                        // with a new identity.
                        let mut renamed: Vec<(u64, u64)> = Vec::new();
                        for i in first..first + npages {
                            let (old_prot, k) = m.pages[i].unwrap();
                            let k = match k {
                                MKind::Guard(id) if old_prot != prot => {
                                    let new = match renamed.iter().find(|r| r.0 == id) {
                                        Some(r) => r.1,
                                        None => {
                                            m.next_guard += 1;
                                            renamed.push((id, m.next_guard));
                                            m.next_guard
                                        }
                                    };
                                    MKind::Guard(new)
                                }
                                k => k,
                            };
                            m.pages[i] = Some((prot, k));
                        }
                        m.next_guard += 1;
                        if m.vmas().len() > N {
                            (m.pages, m.next_guard) = saved;
                            Err(VmError::NoMemory)
                        } else {
                            assert_eq!(pieces, want_pieces, "protect pieces");
                            Ok(())
                        }
                    };
                    assert_eq!(got, want, "protect {addr:#x} {len:#x}");
                    got
                }
            };
            counts[op as usize * 2 + usize::from(result.is_ok())] += 1;
            if result.is_err() {
                assert_eq!(list(&s), before, "failed op changed state");
            }
            check(&s);
            assert_eq!(list(&s), m.vmas());
            for _ in 0..4 {
                let a = W0 - P + rng.below((PAGES as u64 + 2) * P);
                let want = m.vmas().into_iter().find(|v| v.contains(a));
                assert_eq!(s.find(a).copied(), want);
            }
        }
        // Both outcomes of every operation were exercised.
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }

    #[test]
    fn randomized_model_small_capacity() {
        model_test::<5>(0xdead_beef_cafe_f00d, 20_000);
    }

    #[test]
    fn randomized_model_large_capacity() {
        model_test::<64>(0x0123_4567_89ab_cdef, 20_000);
    }

    #[test]
    fn randomized_model_more_seeds() {
        for seed in 1..8u64 {
            model_test::<8>(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 3000);
        }
    }
}
