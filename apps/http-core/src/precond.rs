//! Validators (ETag / Last-Modified), conditional requests and byte ranges.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::date::parse_http_date;
use crate::parse::Request;

/// What the server knows about a file (or a precompressed sibling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileMeta {
    /// Size in bytes.
    pub len: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime_unix: u64,
    /// Extra entropy for the ETag (inode number, content hash, ...).
    pub seed: u64,
}

/// Strong ETag for a file: `"<len hex>-<mtime hex>-<seed hex>"` (with quotes).
pub fn etag(meta: &FileMeta) -> String {
    format!("\"{:x}-{:x}-{:x}\"", meta.len, meta.mtime_unix, meta.seed)
}

/// Result of [`evaluate_preconditions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve normally (200/206).
    Proceed,
    /// Answer 304 Not Modified.
    NotModified,
    /// Answer 412 Precondition Failed.
    Failed,
}

/// Splits an entity-tag list into `(weak, opaque-tag-with-quotes)` items.
/// Stops at the first malformed element.
fn entity_tags(list: &str) -> impl Iterator<Item = (bool, &str)> {
    let mut rest = list;
    core::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return None;
        }
        let (weak, r) = match rest.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if !r.starts_with('"') {
            rest = "";
            return None;
        }
        let Some(close) = r[1..].find('"') else {
            rest = "";
            return None;
        };
        let tag = &r[..close + 2];
        rest = &r[close + 2..];
        Some((weak, tag))
    })
}

/// Whether `etag` (as produced by [`etag`], quotes included, optionally
/// `W/`-prefixed) matches the field value `list` (`*` or a comma-separated
/// entity-tag list). `weak` selects weak comparison (If-None-Match) instead of
/// strong comparison (If-Match, If-Range), RFC 9110 §8.8.3.2.
pub fn etag_list_matches(list: &str, etag: &str, weak: bool) -> bool {
    let list = list.trim_matches([' ', '\t']);
    if list == "*" {
        return true;
    }
    let (our_weak, our_tag) = match etag.strip_prefix("W/") {
        Some(t) => (true, t),
        None => (false, etag),
    };
    entity_tags(list).any(|(w, t)| t == our_tag && (weak || (!w && !our_weak)))
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and
/// `If-Modified-Since` in the order of RFC 9110 §13.2.2 for a GET/HEAD of an
/// existing representation with the given validators.
///
/// `If-Unmodified-Since` is only used without `If-Match`, `If-Modified-Since`
/// only without `If-None-Match`; unparsable dates are ignored.
pub fn evaluate_preconditions(req: &Request, etag: &str, mtime_unix: u64) -> Precondition {
    if let Some(im) = &req.if_match {
        if !etag_list_matches(im, etag, false) {
            return Precondition::Failed;
        }
    } else if let Some(date) = req.if_unmodified_since.as_deref().and_then(parse_http_date)
        && mtime_unix > date
    {
        return Precondition::Failed;
    }
    if let Some(inm) = &req.if_none_match {
        if etag_list_matches(inm, etag, true) {
            return Precondition::NotModified;
        }
    } else if let Some(date) = req.if_modified_since.as_deref().and_then(parse_http_date)
        && mtime_unix <= date
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Whether an `If-Range` value lets the `Range` header apply: an entity-tag
/// must match strongly (weak tags never match); an HTTP-date must equal the
/// Last-Modified time exactly. Anything unparsable → `false` (send 200).
pub fn if_range_allows(if_range: &str, etag: &str, mtime_unix: u64) -> bool {
    let v = if_range.trim_matches([' ', '\t']);
    if v.starts_with('"') || v.starts_with("W/") {
        let mut tags = entity_tags(v);
        match (tags.next(), tags.next()) {
            (Some((false, t)), None) => !etag.starts_with("W/") && t == etag,
            _ => false,
        }
    } else {
        parse_http_date(v) == Some(mtime_unix)
    }
}

/// An inclusive byte range `first..=last` within the representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// Offset of the first byte.
    pub first: u64,
    /// Offset of the last byte (inclusive).
    pub last: u64,
}

impl ByteRange {
    /// Number of bytes in the range (never 0).
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Always false: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Result of [`parse_range`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeOutcome {
    /// Ignore the Range header and send the whole representation (200).
    Full,
    /// Send these ranges (206): sorted, non-overlapping, non-adjacent, each
    /// within the representation.
    Partial(Vec<ByteRange>),
    /// No range is satisfiable (416 with `Content-Range: bytes */len`).
    Unsatisfiable,
}

/// Parses a `Range` field value against a representation of `len` bytes.
///
/// Supports `bytes=a-b`, `bytes=a-`, `bytes=-n` and comma-separated lists of
/// them (unit case-insensitive, optional whitespace around list elements).
/// Unsatisfiable elements (start ≥ len, `-0`, anything when len = 0) are
/// dropped; if none remains the result is [`RangeOutcome::Unsatisfiable`].
/// Overlapping and adjacent ranges are merged (and sorted).
///
/// Invalid syntax (other units, `b < a`, non-digits, empty set) and more than
/// `max_ranges` elements → [`RangeOutcome::Full`]: RFC 9110 §14.2 allows
/// ignoring the Range header, which defuses many-ranges amplification. So
/// does running out of memory for the list.
pub fn parse_range(header: &str, len: u64, max_ranges: usize) -> RangeOutcome {
    let Some((unit, set)) = header.trim_matches([' ', '\t']).split_once('=') else {
        return RangeOutcome::Full;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return RangeOutcome::Full;
    }
    // Room for every element up front (no growth below); without it the
    // header is ignored like an oversized one.
    let mut ranges: Vec<ByteRange> = Vec::new();
    if ranges
        .try_reserve_exact((set.bytes().filter(|&b| b == b',').count() + 1).min(max_ranges))
        .is_err()
    {
        return RangeOutcome::Full;
    }
    let mut count = 0usize;
    for spec in set.split(',') {
        let spec = spec.trim_matches([' ', '\t']);
        if spec.is_empty() {
            continue;
        }
        count += 1;
        if count > max_ranges {
            return RangeOutcome::Full;
        }
        let Some((a, b)) = spec.split_once('-') else {
            return RangeOutcome::Full;
        };
        if a.is_empty() {
            let Some(n) = digits(b) else {
                return RangeOutcome::Full;
            };
            if n > 0 && len > 0 {
                ranges.push(ByteRange {
                    first: len.saturating_sub(n),
                    last: len - 1,
                });
            }
        } else {
            let Some(first) = digits(a) else {
                return RangeOutcome::Full;
            };
            let last = if b.is_empty() {
                u64::MAX
            } else {
                match digits(b) {
                    Some(l) if l >= first => l,
                    _ => return RangeOutcome::Full,
                }
            };
            if first < len {
                ranges.push(ByteRange {
                    first,
                    last: last.min(len - 1),
                });
            }
        }
    }
    if count == 0 {
        return RangeOutcome::Full;
    }
    if ranges.is_empty() {
        return RangeOutcome::Unsatisfiable;
    }
    crate::sort::heapsort_by(&mut ranges, |a, b| a.first.cmp(&b.first));
    // Merged in place: `r` joins the kept range `m` before it.
    ranges.dedup_by(|r, m| {
        let joins = r.first <= m.last.saturating_add(1);
        if joins {
            m.last = m.last.max(r.last);
        }
        joins
    });
    RangeOutcome::Partial(ranges)
}

/// `1*DIGIT`, saturating on overflow.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}
