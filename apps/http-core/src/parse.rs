//! Request-head parsing on a byte buffer (built on `httparse`).

use alloc::string::String;
use alloc::vec::Vec;

use crate::oom::{NoMemory, Out, push_lossy, try_lossy, try_string};
use crate::response::{ResponsePlan, ServerInfo, error_plan};

/// Value of the `Allow` header sent with 405 responses.
pub const ALLOW: &str = "GET, HEAD";

/// Hard ceiling on [`Limits::max_headers`] so a misconfiguration cannot make
/// the per-parse header array arbitrarily large.
const MAX_HEADERS_CAP: usize = 1024;

/// Methods that are known but not served (→ 405). Anything else that is not
/// GET/HEAD → 501.
const KNOWN_UNSUPPORTED: [&str; 7] = [
    "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

/// Size limits applied while parsing a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum request-line length in bytes, excluding the line terminator
    /// (and including any leading empty lines). Longer → 414.
    pub max_request_line: usize,
    /// Maximum size of the header section (all field lines plus the final
    /// empty line). Larger → 431.
    pub max_header_bytes: usize,
    /// Maximum number of header fields (capped internally at 1024). More → 431.
    pub max_headers: usize,
    /// Largest `Content-Length` request body that is accepted and discarded
    /// (see [`Request::body_len`]). Larger → 413.
    pub max_body: u64,
}

impl Default for Limits {
    /// 8 KiB request line, 16 KiB of headers, 64 header fields, 64 KiB body.
    fn default() -> Self {
        Self {
            max_request_line: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body: 64 * 1024,
        }
    }
}

/// A method this server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// `GET`
    #[default]
    Get,
    /// `HEAD`: same headers as GET, no body.
    Head,
}

impl Method {
    /// The method token as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
        }
    }
}

/// A parsed, accepted request head (owned).
///
/// Only the fields the static file server uses are kept. Repeated fields are
/// joined with `", "` as RFC 9110 §5.3 allows for list-valued fields; for
/// singleton fields (`Range`, `If-Modified-Since`, ...) this makes the joined
/// value invalid, which the consumers then ignore, as the RFC requires.
/// Values that are not UTF-8 are converted lossily.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// GET or HEAD.
    pub method: Method,
    /// The request target exactly as received (see [`crate::resolve_target`]).
    pub target: String,
    /// HTTP minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Whether the connection may be reused after this request (RFC 9112 §9.3):
    /// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Number of request body bytes (from `Content-Length`, ≤
    /// [`Limits::max_body`]) that follow the head and must be read and
    /// discarded before the next pipelined request starts.
    pub body_len: u64,
    /// `Host`
    pub host: Option<String>,
    /// `If-Match`
    pub if_match: Option<String>,
    /// `If-None-Match`
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`
    pub if_modified_since: Option<String>,
    /// `If-Unmodified-Since`
    pub if_unmodified_since: Option<String>,
    /// `If-Range`
    pub if_range: Option<String>,
    /// `Range`
    pub range: Option<String>,
    /// `Accept-Encoding`
    pub accept_encoding: Option<String>,
    /// `Referer` (for the access log)
    pub referer: Option<String>,
    /// `User-Agent` (for the access log)
    pub user_agent: Option<String>,
}

impl Request {
    /// The request line as it is reconstructed for logs: `GET /x HTTP/1.1`
    /// (an error when memory ran out).
    pub fn request_line(&self) -> Result<String, NoMemory> {
        let method = self.method.as_str();
        let mut o = Out::with_capacity(method.len() + self.target.len() + 11);
        o.push_str(method);
        o.push_str(" ");
        o.push_str(&self.target);
        o.push_str(" HTTP/1.");
        o.push_u64(u64::from(self.version_minor), 10);
        o.finish()
    }

    /// True for HEAD requests (the response carries no body).
    pub fn is_head(&self) -> bool {
        self.method == Method::Head
    }
}

/// A request that must be answered with an error status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusError {
    /// HTTP status code (4xx/5xx).
    pub status: u16,
    /// The connection must be closed after the error response: either the
    /// byte stream is no longer synchronised (unknown framing, oversized or
    /// malformed head) or the request asked for it. When `false` the caller
    /// may continue with the next request after skipping `consumed` +
    /// `body_len` bytes.
    pub close: bool,
    /// Bytes of the buffer occupied by the rejected request head. Only
    /// meaningful when `close` is false; 0 otherwise and for errors not
    /// produced by [`parse_request`].
    pub consumed: usize,
    /// Body bytes following the head that must be discarded (only when
    /// `close` is false).
    pub body_len: u64,
    /// The rejected request was a HEAD request (the error response then
    /// carries no body).
    pub head_request: bool,
    /// The request line as received (lossy UTF-8), when it was complete and
    /// within limits; for the access log.
    pub request_line: Option<String>,
}

impl StatusError {
    /// An error with the given status that does not by itself force the
    /// connection closed (used by [`crate::resolve_target`]).
    pub fn new(status: u16) -> Self {
        Self {
            status,
            close: false,
            consumed: 0,
            body_len: 0,
            head_request: false,
            request_line: None,
        }
    }

    fn fatal(status: u16, request_line: Option<String>, head_request: bool) -> Self {
        Self {
            status,
            close: true,
            consumed: 0,
            body_len: 0,
            head_request,
            request_line,
        }
    }

    /// The error response for this error: small HTML body (none for HEAD),
    /// `Allow` for 405, `Connection: close` when [`StatusError::close`] is set
    /// and `Connection: keep-alive` otherwise; [`ResponsePlan::overloaded`]
    /// when memory runs out.
    pub fn response(&self, now_unix: u64, info: &ServerInfo<'_>) -> ResponsePlan {
        match error_plan(self.status, !self.close, None, now_unix, info, &[]) {
            Ok(plan) if self.head_request => plan.into_head_only(),
            Ok(plan) => plan,
            Err(NoMemory) => ResponsePlan::overloaded(),
        }
    }
}

/// Result of [`parse_request`].
// Returned once per request and immediately destructured; boxing the
// request would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseOutcome {
    /// A complete, acceptable GET/HEAD request head.
    Complete {
        /// The request.
        request: Request,
        /// Length of the request head in the buffer. The request body
        /// ([`Request::body_len`] bytes, usually 0) follows it; the next
        /// pipelined request starts after both.
        consumed: usize,
    },
    /// The head is incomplete but within limits: read more and call again
    /// with the extended buffer.
    Partial,
    /// The request must be answered with an error.
    Error(StatusError),
}

/// Parses one request head from the start of `buf`.
///
/// Status mapping: request line longer than [`Limits::max_request_line`] →
/// 414; header section larger than [`Limits::max_header_bytes`] or more than
/// [`Limits::max_headers`] fields → 431; malformed syntax, invalid or
/// conflicting `Content-Length`, missing or repeated `Host` on HTTP/1.1 →
/// 400; a syntactically valid but unsupported version (`HTTP/2.0`, `HTTP/3`,
/// `HTTP/1.2`, ...) → 505; POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT →
/// 405 (respond with `Allow: GET, HEAD`); other methods → 501; any
/// `Transfer-Encoding` → 501; `Content-Length` above [`Limits::max_body`] →
/// 413. All of these close the connection except 405/501-for-method on a
/// persistent connection with a small, `Content-Length`-framed body. When
/// memory runs out the result is a 503 that closes the connection.
///
/// Up to one leading empty line sequence is skipped (RFC 9112 §2.2).
pub fn parse_request(buf: &[u8], limits: &Limits) -> ParseOutcome {
    use ParseOutcome::{Error, Partial};

    let max_line = limits.max_request_line;
    let Some(start) = skip_blank_lines(buf) else {
        return Error(StatusError::fatal(400, None, false));
    };
    if start > max_line {
        return Error(StatusError::fatal(400, None, false));
    }
    let rest = &buf[start..];
    let budget = max_line - start;
    let window = &rest[..rest.len().min(budget.saturating_add(2))];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if rest.len() > budget.saturating_add(1) {
            // Too long: but report garbage as 400 rather than 414.
            let status = match probe(&buf[..start + budget]) {
                Err(_) => 400,
                Ok(()) => 414,
            };
            return Error(StatusError::fatal(status, None, false));
        }
        return match probe(buf) {
            Err(httparse::Error::Version) | Ok(()) => Partial,
            Err(_) => Error(StatusError::fatal(400, None, false)),
        };
    };
    let line = strip_cr(&rest[..lf]);
    if line.len() > budget {
        return Error(StatusError::fatal(414, None, false));
    }
    // Only for the log: left out when memory is short.
    let request_line = try_lossy(line).ok();
    let head_request = line.starts_with(b"HEAD ");
    if unsupported_version(line) {
        return Error(StatusError::fatal(505, request_line, head_request));
    }
    let head_start = start + lf + 1;

    let oom = |request_line| Error(StatusError::fatal(503, request_line, head_request));
    let n_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut headers = Vec::new();
    if headers.try_reserve_exact(n_headers).is_err() {
        return oom(request_line);
    }
    headers.resize(n_headers, httparse::EMPTY_HEADER);
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len().saturating_sub(head_start) > limits.max_header_bytes {
                Error(StatusError::fatal(431, request_line, head_request))
            } else {
                Partial
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Error(StatusError::fatal(431, request_line, head_request));
        }
        Err(_) => return Error(StatusError::fatal(400, request_line, head_request)),
    };
    if consumed.saturating_sub(head_start) > limits.max_header_bytes {
        return Error(StatusError::fatal(431, request_line, head_request));
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Error(StatusError::fatal(400, request_line, head_request));
    };

    let Ok(target) = try_string(target) else {
        return oom(request_line);
    };
    let mut out = Request {
        target,
        version_minor: version,
        ..Request::default()
    };
    let mut short = false;
    let mut host_count = 0usize;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut content_length: Option<u64> = None;
    let mut bad_length = false;
    let mut chunked_or_te = false;

    for h in req.headers.iter() {
        let name = h.name;
        let value = trim_ows(h.value);
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("content-length") {
            match parse_content_length(value) {
                Some(n) if content_length.is_none_or(|c| c == n) => content_length = Some(n),
                _ => bad_length = true,
            }
        } else if is("transfer-encoding") {
            chunked_or_te = true;
        } else if is("host") {
            host_count += 1;
            short |= append(&mut out.host, value);
        } else if is("connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim_ows(token);
                if token.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                }
            }
        } else if is("if-match") {
            short |= append(&mut out.if_match, value);
        } else if is("if-none-match") {
            short |= append(&mut out.if_none_match, value);
        } else if is("if-modified-since") {
            short |= append(&mut out.if_modified_since, value);
        } else if is("if-unmodified-since") {
            short |= append(&mut out.if_unmodified_since, value);
        } else if is("if-range") {
            short |= append(&mut out.if_range, value);
        } else if is("range") {
            short |= append(&mut out.range, value);
        } else if is("accept-encoding") {
            short |= append(&mut out.accept_encoding, value);
        } else if is("referer") {
            short |= append(&mut out.referer, value);
        } else if is("user-agent") {
            short |= append(&mut out.user_agent, value);
        }
    }

    if short {
        return oom(request_line);
    }
    let persistent = if version == 1 {
        !conn_close
    } else {
        conn_keep_alive && !conn_close
    };
    if bad_length || host_count > 1 || (version == 1 && host_count == 0) {
        return Error(StatusError::fatal(400, request_line, head_request));
    }
    let body_len = content_length.unwrap_or(0);
    let framing_ok = !chunked_or_te && body_len <= limits.max_body;

    out.method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => {
            let status = if KNOWN_UNSUPPORTED.contains(&other) {
                405
            } else {
                501
            };
            let keep = persistent && framing_ok;
            return Error(StatusError {
                status,
                close: !keep,
                consumed: if keep { consumed } else { 0 },
                body_len: if keep { body_len } else { 0 },
                head_request: false,
                request_line,
            });
        }
    };
    if chunked_or_te {
        return Error(StatusError::fatal(501, request_line, head_request));
    }
    if body_len > limits.max_body {
        return Error(StatusError::fatal(413, request_line, head_request));
    }
    out.keep_alive = persistent;
    out.body_len = body_len;
    ParseOutcome::Complete {
        request: out,
        consumed,
    }
}

/// Index of the first byte after leading CRLF / LF lines; `None` if a CR is
/// followed by something other than LF.
fn skip_blank_lines(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        match buf.get(i) {
            Some(b'\n') => i += 1,
            Some(b'\r') => match buf.get(i + 1) {
                Some(b'\n') => i += 2,
                Some(_) => return None,
                None => return Some(i),
            },
            _ => return Some(i),
        }
    }
}

/// Runs httparse on an incomplete request line to detect garbage early.
fn probe(buf: &[u8]) -> Result<(), httparse::Error> {
    let mut no_headers: [httparse::Header<'_>; 0] = [];
    httparse::Request::new(&mut no_headers)
        .parse(buf)
        .map(|_| ())
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `true` when the last token of a three-part request line is a well-formed
/// HTTP version other than 1.0/1.1 (`HTTP/2.0`, `HTTP/3`, `HTTP/1.2`).
fn unsupported_version(line: &[u8]) -> bool {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_), Some(_), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some(num) = v.strip_prefix(b"HTTP/") else {
        return false;
    };
    if num == b"1.0" || num == b"1.1" {
        return false;
    }
    let (major, minor) = match num.iter().position(|&b| b == b'.') {
        Some(dot) => (&num[..dot], Some(&num[dot + 1..])),
        None => (num, None),
    };
    let all_digits = |s: &[u8]| !s.is_empty() && s.len() <= 3 && s.iter().all(u8::is_ascii_digit);
    all_digits(major) && minor.is_none_or(all_digits)
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// `Content-Length` value: `1*DIGIT`, or a list of identical such values
/// (RFC 9110 §8.6). Overflow saturates (and is then rejected as too large).
fn parse_content_length(v: &[u8]) -> Option<u64> {
    let mut result = None;
    for item in v.split(|&b| b == b',') {
        let item = trim_ows(item);
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = item.iter().fold(0u64, |acc, &d| {
            acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        match result {
            Some(prev) if prev != n => return None,
            _ => result = Some(n),
        }
    }
    result
}

/// Appends a field value (lossy UTF-8) to a joined list; true when memory
/// ran out.
fn append(slot: &mut Option<String>, value: &[u8]) -> bool {
    let mut o = match slot.take() {
        Some(s) => {
            let mut o = Out::with_capacity(0);
            o.s = s;
            o.push_str(", ");
            o
        }
        None => Out::with_capacity(value.len()),
    };
    push_lossy(&mut o, value);
    match o.finish() {
        Ok(s) => {
            *slot = Some(s);
            false
        }
        Err(NoMemory) => true,
    }
}
