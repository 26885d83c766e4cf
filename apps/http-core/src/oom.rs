//! Building strings and lists without aborting when memory runs out.
//!
//! Every allocation on the request path goes through `try_reserve`: a failed
//! one becomes [`NoMemory`], which the public functions turn into a 503
//! (a parse error, or [`crate::ResponsePlan::overloaded`], which needs no
//! memory), never a panic.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// An allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoMemory;

/// A string being built whose first failed allocation is remembered: later
/// writes are dropped and [`Out::finish`] reports [`NoMemory`].
pub(crate) struct Out {
    pub(crate) s: String,
    oom: bool,
}

impl Out {
    /// Out of line: inlined at its callers the reservation cost about
    /// 0.8 KiB of the image, and the allocation it makes dwarfs a call.
    #[inline(never)]
    pub(crate) fn with_capacity(n: usize) -> Out {
        let mut s = String::new();
        let oom = s.try_reserve(n).is_err();
        Out { s, oom }
    }

    #[inline(never)]
    pub(crate) fn push_str(&mut self, v: &str) {
        // Room already there (the usual case: heads start with capacity
        // for their fields) needs no call into the allocator's reserve.
        let room = self.s.capacity() - self.s.len() >= v.len();
        if !self.oom && (room || self.s.try_reserve(v.len()).is_ok()) {
            self.s.push_str(v);
        } else {
            self.oom = true;
        }
    }

    /// Appends `v` in base `radix` (10 or 16, lower-case), without
    /// `core::fmt` (response heads carry several numbers).
    #[inline(never)]
    pub(crate) fn push_u64(&mut self, mut v: u64, radix: u64) {
        let mut b = [0u8; 20];
        let mut i = b.len();
        loop {
            let d = (v % radix) as u8;
            i -= 1;
            b[i] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
            v /= radix;
            if v == 0 {
                break;
            }
        }
        if let Ok(s) = core::str::from_utf8(&b[i..]) {
            self.push_str(s);
        }
    }

    pub(crate) fn push(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0; 4]));
    }

    pub(crate) fn finish(self) -> Result<String, NoMemory> {
        if self.oom { Err(NoMemory) } else { Ok(self.s) }
    }
}

impl fmt::Write for Out {
    fn write_str(&mut self, v: &str) -> fmt::Result {
        self.push_str(v);
        Ok(())
    }
}

/// `format!` that fails instead of aborting.
pub(crate) fn try_format(args: fmt::Arguments<'_>) -> Result<String, NoMemory> {
    let mut o = Out::with_capacity(0);
    let _ = fmt::write(&mut o, args);
    o.finish()
}

/// `String::from(v)`, fallible.
pub(crate) fn try_string(v: &str) -> Result<String, NoMemory> {
    let mut o = Out::with_capacity(v.len());
    o.push_str(v);
    o.finish()
}

/// Appends `v` as UTF-8, each invalid sequence replaced by U+FFFD (as
/// `String::from_utf8_lossy`), fallibly.
pub(crate) fn push_lossy(out: &mut Out, v: &[u8]) {
    for chunk in v.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// `String::from_utf8_lossy(v).into_owned()`, fallible.
pub(crate) fn try_lossy(v: &[u8]) -> Result<String, NoMemory> {
    let mut o = Out::with_capacity(v.len());
    push_lossy(&mut o, v);
    o.finish()
}

/// Pushes onto a vector, fallibly.
pub(crate) fn try_push<T>(v: &mut Vec<T>, item: T) -> Result<(), NoMemory> {
    v.try_reserve(1).map_err(|_| NoMemory)?;
    v.push(item);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Out;
    use alloc::format;

    #[test]
    fn push_u64_matches_fmt() {
        let mut x: u64 = 7;
        for v in [0, 1, 9, 10, 15, 16, 255, u64::MAX]
            .into_iter()
            .chain((0..2000).map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                x >> (x % 64)
            }))
        {
            let mut o = Out::with_capacity(0);
            o.push_u64(v, 10);
            o.push_str(" ");
            o.push_u64(v, 16);
            assert_eq!(o.finish().unwrap(), format!("{v} {v:x}"));
        }
    }
}
