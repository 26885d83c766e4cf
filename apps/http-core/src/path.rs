//! Request-target → normalized, decoded, traversal-free path.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::oom::{NoMemory, Out, try_push, try_string};
use crate::parse::StatusError;

/// A normalized, percent-decoded request path that cannot escape the document
/// root.
///
/// Invariants: [`SafePath::as_str`] starts with `/`; no segment is empty, `.`
/// or `..`; no segment contains `/`, `\`, NUL or other control characters;
/// the text is valid UTF-8. The query string (raw, undecoded) is kept for
/// redirects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePath {
    /// `/` + segments joined by `/` (+ `/` when `trailing_slash`, except root).
    path: String,
    trailing_slash: bool,
    query: Option<String>,
}

impl SafePath {
    /// The normalized, decoded path: `/`, `/a/b.txt` or `/dir/` (trailing slash
    /// kept when the request had one).
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The decoded path segments, in order (none for the root).
    pub fn segments(&self) -> impl Iterator<Item = &str> + '_ {
        self.path.split('/').filter(|s| !s.is_empty())
    }

    /// Whether the request path ended in `/` (or in a `.`/`..` segment),
    /// i.e. names a directory. Always true for the root.
    pub fn trailing_slash(&self) -> bool {
        self.trailing_slash
    }

    /// True for `/`.
    pub fn is_root(&self) -> bool {
        self.path == "/"
    }

    /// The raw query string (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// True if some segment starts with `.` (dotfiles such as `/.git/config`);
    /// servers commonly refuse these.
    pub fn has_hidden_segment(&self) -> bool {
        self.segments().any(|s| s.starts_with('.'))
    }

    /// The path re-encoded for use in a URI (e.g. a `Location` header):
    /// characters outside RFC 3986 `pchar` are percent-encoded (an error
    /// when memory runs out).
    pub fn to_uri_path(&self) -> Result<String, NoMemory> {
        let mut out = Out::with_capacity(self.path.len() + 8);
        self.push_uri_path(&mut out);
        out.finish()
    }

    fn push_uri_path(&self, out: &mut Out) {
        for b in self.path.bytes() {
            if b == b'/' || is_pchar(b) {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }

    /// `Location` value for the directory redirect: the encoded path with a
    /// trailing `/` added and the original query appended (an error when
    /// memory runs out).
    pub fn redirect_location(&self) -> Result<String, NoMemory> {
        let mut loc = Out::with_capacity(self.path.len() + 16);
        self.push_uri_path(&mut loc);
        if !loc.s.ends_with('/') {
            loc.push('/');
        }
        if let Some(q) = &self.query {
            loc.push('?');
            for b in q.bytes() {
                if (0x21..0x7f).contains(&b) {
                    loc.push(char::from(b));
                } else {
                    let _ = write!(loc, "%{b:02X}");
                }
            }
        }
        loc.finish()
    }
}

fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

/// Maps a request target to a [`SafePath`].
///
/// Steps: drop any `#fragment`; split off the `?query`; accept absolute-form
/// (`http://host/path`, `https://...`, scheme case-insensitive) by dropping
/// scheme and authority; require the path to start with `/` (asterisk- and
/// authority-form → 400); percent-decode each segment once; resolve `.` and
/// `..` segments and collapse empty segments (`//etc` → `/etc`).
///
/// Rejected with 400: invalid percent escapes, decoded NUL or control
/// characters, encoded `/` or `\` (`%2F`, `%5C`), a literal backslash,
/// non-UTF-8 after decoding, and `..` that would climb above the root (400
/// like nginx, not 403, since it is a malformed request rather than a
/// permission problem). `%2e%2e` is treated exactly like `..`. When memory
/// runs out: 503.
pub fn resolve_target(target: &str) -> Result<SafePath, StatusError> {
    let bad = || StatusError::new(400);
    let oom = |NoMemory| StatusError::new(503);
    let target = target.split('#').next().unwrap_or("");
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(try_string(q).map_err(oom)?)),
        None => (target, None),
    };
    let raw_path = strip_absolute_form(raw_path).ok_or_else(bad)?;
    let Some(rel) = raw_path.strip_prefix('/') else {
        return Err(bad());
    };

    let mut segments: Vec<String> = Vec::new();
    let mut trailing = false;
    for raw in rel.split('/') {
        let seg = decode_segment(raw).map_err(StatusError::new)?;
        match seg.as_str() {
            "" | "." => trailing = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(bad());
                }
                trailing = true;
            }
            _ => {
                try_push(&mut segments, seg).map_err(oom)?;
                trailing = false;
            }
        }
    }
    if segments.is_empty() {
        trailing = true;
    }
    let mut path = Out::with_capacity(rel.len() + 1);
    for s in &segments {
        path.push('/');
        path.push_str(s);
    }
    if trailing {
        path.push('/');
    }
    Ok(SafePath {
        path: path.finish().map_err(oom)?,
        trailing_slash: trailing,
        query,
    })
}

/// For `scheme://authority/path` returns `/path` (or `/` when there is no
/// path); for anything else returns the input unchanged. `None` for an
/// absolute-form with an empty authority.
fn strip_absolute_form(p: &str) -> Option<&str> {
    let lower_starts = |prefix: &str| {
        p.len() >= prefix.len()
            && p.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    let after = if lower_starts("http://") {
        &p[7..]
    } else if lower_starts("https://") {
        &p[8..]
    } else {
        return Some(p);
    };
    match after.find('/') {
        Some(0) => None,
        Some(i) => Some(&after[i..]),
        None if after.is_empty() => None,
        None => Some("/"),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One decoded segment, or the status to answer (400 malformed, 503 out of
/// memory).
fn decode_segment(raw: &str) -> Result<String, u16> {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    out.try_reserve_exact(bytes.len()).map_err(|_| 503u16)?;
    let mut i = 0;
    let byte = |i: usize| bytes.get(i).and_then(|&b| hex(b)).ok_or(400u16);
    while i < bytes.len() {
        let b = match bytes[i] {
            b'%' => {
                let d = (byte(i + 1)? << 4) | byte(i + 2)?;
                i += 3;
                if d == b'/' {
                    return Err(400);
                }
                d
            }
            b => {
                i += 1;
                b
            }
        };
        if b == b'\\' || b < 0x20 || b == 0x7f {
            return Err(400);
        }
        out.push(b);
    }
    String::from_utf8(out).map_err(|_| 400)
}
