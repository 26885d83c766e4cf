//! Response planning: status, header block and body parts.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::date::write_http_date;
use crate::encoding::{Encoding, choose_encoding};
use crate::mime::DEFAULT_MIME;
use crate::oom::{NoMemory, Out, try_format, try_push};
use crate::parse::{ALLOW, Method, Request};
use crate::path::SafePath;
use crate::precond::{
    ByteRange, FileMeta, Precondition, RangeOutcome, evaluate_preconditions, if_range_allows,
    parse_range,
};

/// Server-wide response settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerInfo<'a> {
    /// `Server` header value; empty → no `Server` header.
    pub server: &'a str,
    /// Maximum number of ranges honoured in one `Range` header; more → the
    /// header is ignored and the full file is sent (200).
    pub max_ranges: usize,
    /// Optional `Cache-Control` value for file responses (200/206/304).
    pub cache_control: Option<&'a str>,
    /// Extra fields added to every response (the site's headers); unsafe
    /// names or values are dropped, as in [`error_response`].
    pub headers: &'a [(String, String)],
}

impl Default for ServerInfo<'static> {
    /// `Server: uk-http`, 16 ranges, no `Cache-Control`.
    fn default() -> Self {
        Self {
            server: "uk-http",
            max_ranges: 16,
            cache_control: None,
            headers: &[],
        }
    }
}

/// One piece of a response body, written in order after the header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyPart {
    /// `len` bytes of the selected file (see [`ResponsePlan::encoding`])
    /// starting at `offset`.
    File {
        /// Byte offset in the file.
        offset: u64,
        /// Number of bytes.
        len: u64,
    },
    /// Literal bytes (error pages, multipart boundaries).
    Bytes(Vec<u8>),
}

impl BodyPart {
    /// Number of bytes this part contributes.
    pub fn len(&self) -> u64 {
        match self {
            BodyPart::File { len, .. } => *len,
            BodyPart::Bytes(b) => b.len() as u64,
        }
    }

    /// True when the part contributes no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything the server needs to send one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsePlan {
    /// Status code.
    pub status: u16,
    /// The complete header block: status line, fields, final empty line
    /// (static for [`ResponsePlan::overloaded`]).
    pub head: Cow<'static, [u8]>,
    /// Body parts in order (empty for HEAD, 304 and zero-length files).
    pub body: Vec<BodyPart>,
    /// Whether the connection stays open after this response.
    pub keep_alive: bool,
    /// Which file [`BodyPart::File`] parts refer to: the original or a
    /// precompressed sibling (`path` + [`Encoding::file_suffix`]).
    pub encoding: Encoding,
}

/// The 503 sent when memory ran out while planning a response: no `Date`
/// (optional for 5xx, RFC 9110 §6.6.1), no body, the connection closed.
pub const OVERLOADED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

impl ResponsePlan {
    /// The response when memory ran out: [`OVERLOADED`]; making it
    /// allocates nothing.
    pub fn overloaded() -> Self {
        ResponsePlan {
            status: 503,
            head: Cow::Borrowed(OVERLOADED),
            body: Vec::new(),
            keep_alive: false,
            encoding: Encoding::Identity,
        }
    }

    /// Total body bytes to write (for the access log).
    pub fn body_len(&self) -> u64 {
        self.body
            .iter()
            .fold(0u64, |acc, p| acc.saturating_add(p.len()))
    }

    /// Drops the body, keeping the headers (including `Content-Length`): the
    /// HEAD variant of a GET response.
    pub fn into_head_only(mut self) -> Self {
        self.body.clear();
        self
    }
}

/// What the server found for a [`SafePath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A regular file to serve (for a directory path this is typically its
    /// `index.html`). A path with a trailing slash naming a regular file
    /// should be reported as [`Resource::NotFound`] by the server.
    File(FileInfo<'a>),
    /// A directory without a usable index: without a trailing slash → 301 to
    /// the slash form (query preserved); with one → 403 (no listings).
    Directory,
    /// Nothing there → 404.
    NotFound,
    /// Exists but must not be served (e.g. dotfiles) → 403.
    Forbidden,
}

/// A file to serve and its precompressed siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo<'a> {
    /// Metadata of the file itself.
    pub meta: FileMeta,
    /// `Content-Type`, normally [`crate::mime_for`] of the file's path.
    /// Values containing control characters are replaced by the default.
    pub content_type: &'a str,
    /// Metadata of the `.gz` sibling, if one exists.
    pub gzip: Option<FileMeta>,
    /// Metadata of the `.br` sibling, if one exists.
    pub brotli: Option<FileMeta>,
}

/// Standard reason phrase for a status code (`""` if unknown).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

fn is_safe_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn is_token(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Header block under construction (see [`Out`]: the first failed
/// allocation makes [`Head::finish`] fail).
struct Head(Out);

impl Head {
    fn new(status: u16, now_unix: u64, info: &ServerInfo<'_>) -> Self {
        let status = status.clamp(100, 999);
        let mut h = Head(Out::with_capacity(384));
        h.0.push_str("HTTP/1.1 ");
        h.0.push_u64(u64::from(status), 10);
        h.0.push_str(" ");
        h.0.push_str(reason_phrase(status));
        h.0.push_str("\r\n");
        h.date("Date", now_unix);
        h.field("Server", info.server);
        for (n, v) in info.headers {
            // Framing fields are the server's own.
            if !["content-length", "connection", "transfer-encoding"]
                .iter()
                .any(|f| n.eq_ignore_ascii_case(f))
            {
                h.field(n, v);
            }
        }
        h
    }

    /// Adds a field; silently skipped when the name is not a token or the
    /// value is empty or could break the framing (CR, LF, other controls).
    #[inline(never)]
    fn field(&mut self, name: &str, value: &str) {
        if is_token(name) && !value.is_empty() && is_safe_value(value) {
            self.0.push_str(name);
            self.0.push_str(": ");
            self.0.push_str(value);
            self.0.push_str("\r\n");
        }
    }

    #[inline(never)]
    fn field_u64(&mut self, name: &str, value: u64) {
        self.0.push_str(name);
        self.0.push_str(": ");
        self.0.push_u64(value, 10);
        self.0.push_str("\r\n");
    }

    fn date(&mut self, name: &str, t: u64) {
        self.0.push_str(name);
        self.0.push_str(": ");
        write_http_date(&mut self.0, t);
        self.0.push_str("\r\n");
    }

    /// `Connection` field: `close`, or `keep-alive` when persistence must be
    /// announced (HTTP/1.0 or unknown version).
    fn connection(&mut self, keep_alive: bool, version_minor: Option<u8>) {
        if !keep_alive {
            self.field("Connection", "close");
        } else if version_minor != Some(1) {
            self.field("Connection", "keep-alive");
        }
    }

    fn finish(mut self) -> Result<Cow<'static, [u8]>, NoMemory> {
        self.0.push_str("\r\n");
        Ok(Cow::Owned(self.0.finish()?.into_bytes()))
    }
}

/// A body of one part, fallibly.
fn one(part: BodyPart) -> Result<Vec<BodyPart>, NoMemory> {
    let mut v = Vec::new();
    try_push(&mut v, part)?;
    Ok(v)
}

fn error_body(status: u16) -> Result<Vec<u8>, NoMemory> {
    let reason = reason_phrase(status);
    Ok(try_format(format_args!(
        "<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>\
         <body><h1>{status} {reason}</h1></body></html>\n"
    ))?
    .into_bytes())
}

pub(crate) fn error_plan(
    status: u16,
    keep_alive: bool,
    version_minor: Option<u8>,
    now_unix: u64,
    info: &ServerInfo<'_>,
    extra: &[(&str, &str)],
) -> Result<ResponsePlan, NoMemory> {
    let body = error_body(status)?;
    let mut h = Head::new(status, now_unix, info);
    h.field("Content-Type", "text/html; charset=utf-8");
    h.field_u64("Content-Length", body.len() as u64);
    if status == 405 && !extra.iter().any(|(n, _)| n.eq_ignore_ascii_case("allow")) {
        h.field("Allow", ALLOW);
    }
    for (n, v) in extra {
        if !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("connection") {
            h.field(n, v);
        }
    }
    h.connection(keep_alive, version_minor);
    Ok(ResponsePlan {
        status,
        head: h.finish()?,
        body: one(BodyPart::Bytes(body))?,
        keep_alive,
        encoding: Encoding::Identity,
    })
}

/// The plan, or [`ResponsePlan::overloaded`] when memory ran out; the body
/// dropped for HEAD.
fn or_overloaded(plan: Result<ResponsePlan, NoMemory>, head_only: bool) -> ResponsePlan {
    match plan {
        Ok(p) if head_only => p.into_head_only(),
        Ok(p) => p,
        Err(NoMemory) => ResponsePlan::overloaded(),
    }
}

/// An error (or other bodyless-by-design) response with a small HTML body.
///
/// Adds `Allow: GET, HEAD` for 405 unless `extra` has an `Allow` field. Extra
/// fields with unsafe values are dropped; `Content-Length` and `Connection`
/// in `extra` are ignored (they are computed). The `Connection` field is
/// `keep-alive` or `close` according to `keep_alive`. For a HEAD request use
/// [`plan_error`] or [`ResponsePlan::into_head_only`].
pub fn error_response(
    status: u16,
    keep_alive: bool,
    now_unix: u64,
    info: &ServerInfo<'_>,
    extra: &[(&str, &str)],
) -> ResponsePlan {
    or_overloaded(
        error_plan(status, keep_alive, None, now_unix, info, extra),
        false,
    )
}

/// Error response for an accepted request (e.g. a [`crate::StatusError`] from
/// [`crate::resolve_target`], 404, 403, 500): honours the request's
/// keep-alive state and version, and omits the body for HEAD.
pub fn plan_error(
    req: &Request,
    status: u16,
    now_unix: u64,
    info: &ServerInfo<'_>,
) -> ResponsePlan {
    or_overloaded(req_error(req, status, now_unix, info, &[]), req.is_head())
}

/// [`error_plan`] for `req` (body kept for HEAD too).
fn req_error(
    req: &Request,
    status: u16,
    now_unix: u64,
    info: &ServerInfo<'_>,
    extra: &[(&str, &str)],
) -> Result<ResponsePlan, NoMemory> {
    error_plan(
        status,
        req.keep_alive,
        Some(req.version_minor),
        now_unix,
        info,
        extra,
    )
}

/// A redirect (301, 302, 307 or 308; anything else is sent as 302) to
/// `location` with a small HTML body; a `location` with unsafe characters
/// gives a 500. Honours keep-alive and HEAD as [`plan_error`] does.
pub fn plan_redirect(
    req: &Request,
    status: u16,
    location: &str,
    now_unix: u64,
    info: &ServerInfo<'_>,
) -> ResponsePlan {
    let status = if matches!(status, 301 | 302 | 307 | 308) {
        status
    } else {
        302
    };
    if location.is_empty() || !is_safe_value(location) {
        return plan_error(req, 500, now_unix, info);
    }
    or_overloaded(
        req_error(req, status, now_unix, info, &[("Location", location)]),
        req.is_head(),
    )
}

/// A custom error page: status `status` (e.g. 404) with the whole file
/// `page` as the body (no ranges, no conditionals, no precompressed
/// siblings, `Cache-Control: no-store`). HEAD gets the headers only.
pub fn plan_error_page(
    req: &Request,
    status: u16,
    page: &FileInfo<'_>,
    now_unix: u64,
    info: &ServerInfo<'_>,
) -> ResponsePlan {
    let content_type = if is_safe_value(page.content_type) {
        page.content_type
    } else {
        crate::DEFAULT_MIME
    };
    let mut h = Head::new(status, now_unix, info);
    h.field("Content-Type", content_type);
    h.field_u64("Content-Length", page.meta.len);
    h.field("Cache-Control", "no-store");
    if status == 405 {
        h.field("Allow", ALLOW);
    }
    h.connection(req.keep_alive, Some(req.version_minor));
    let plan = (|| {
        let body = if req.is_head() || page.meta.len == 0 {
            Vec::new()
        } else {
            one(BodyPart::File {
                offset: 0,
                len: page.meta.len,
            })?
        };
        Ok(ResponsePlan {
            status,
            head: h.finish()?,
            body,
            keep_alive: req.keep_alive,
            encoding: Encoding::Identity,
        })
    })();
    or_overloaded(plan, false)
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingEntry {
    /// The file name (not a path).
    pub name: String,
    /// Whether it is a directory (listed with a trailing slash).
    pub dir: bool,
}

fn html_escape(out: &mut Out, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

fn href_escape(out: &mut Out, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// A directory listing (`dir` is the decoded request path, ending in `/`):
/// 200, `text/html`, one link per entry in the order given, names escaped,
/// dotfiles left out, `Cache-Control: no-cache`. HEAD gets the headers only.
pub fn plan_listing(
    req: &Request,
    dir: &str,
    entries: &[ListingEntry],
    now_unix: u64,
    info: &ServerInfo<'_>,
) -> ResponsePlan {
    let mut body = Out::with_capacity(1024);
    body.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of ");
    html_escape(&mut body, dir);
    body.push_str("</title></head><body><h1>Index of ");
    html_escape(&mut body, dir);
    body.push_str("</h1><ul>\n");
    if dir != "/" {
        body.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for e in entries.iter().filter(|e| !e.name.starts_with('.')) {
        body.push_str("<li><a href=\"");
        href_escape(&mut body, &e.name);
        if e.dir {
            body.push('/');
        }
        body.push_str("\">");
        html_escape(&mut body, &e.name);
        if e.dir {
            body.push('/');
        }
        body.push_str("</a></li>\n");
    }
    body.push_str("</ul></body></html>\n");
    let plan = (|| {
        let body = body.finish()?;
        let mut h = Head::new(200, now_unix, info);
        h.field("Content-Type", "text/html; charset=utf-8");
        h.field_u64("Content-Length", body.len() as u64);
        h.field("Cache-Control", "no-cache");
        h.connection(req.keep_alive, Some(req.version_minor));
        Ok(ResponsePlan {
            status: 200,
            head: h.finish()?,
            body: one(BodyPart::Bytes(body.into_bytes()))?,
            keep_alive: req.keep_alive,
            encoding: Encoding::Identity,
        })
    })();
    or_overloaded(plan, req.is_head())
}

/// Plans the response to a GET/HEAD request for `path`, given what the server
/// found there.
///
/// For files: negotiates the precompressed sibling ([`choose_encoding`]),
/// evaluates preconditions (412 / 304), applies `Range` (GET only, subject to
/// `If-Range`) producing 200, 206 (single part or `multipart/byteranges`) or
/// 416, and builds the header block with `Date`, `Server`, `Content-Type`,
/// `Content-Length`, `Accept-Ranges`, `ETag`, `Last-Modified`,
/// `Cache-Control`, `Vary: Accept-Encoding` (when a sibling exists),
/// `Content-Encoding`, `Content-Range` and `Connection` as applicable.
/// Multiple ranges of a precompressed representation are not served as
/// multipart; the full representation is sent instead (200).
pub fn plan_response(
    req: &Request,
    path: &SafePath,
    resource: &Resource<'_>,
    now_unix: u64,
    info: &ServerInfo<'_>,
) -> ResponsePlan {
    let plan = match resource {
        Resource::NotFound => req_error(req, 404, now_unix, info, &[]),
        Resource::Forbidden => req_error(req, 403, now_unix, info, &[]),
        Resource::Directory if path.trailing_slash() => req_error(req, 403, now_unix, info, &[]),
        Resource::Directory => path
            .redirect_location()
            .and_then(|location| req_error(req, 301, now_unix, info, &[("Location", &location)])),
        Resource::File(file) => plan_file(req, file, now_unix, info),
    };
    or_overloaded(plan, req.is_head())
}

/// ETag of the selected representation: compressed siblings get a distinct
/// suffix so caches never confuse them with the identity file.
fn representation_etag(meta: &FileMeta, enc: Encoding) -> Result<String, NoMemory> {
    let (len, mtime, seed) = (meta.len, meta.mtime_unix, meta.seed);
    let coding = enc.content_encoding().map_or("", |c| c);
    let dash = if coding.is_empty() { "" } else { "-" };
    let mut o = Out::with_capacity(64);
    o.push_str("\"");
    o.push_u64(len, 16);
    o.push_str("-");
    o.push_u64(mtime, 16);
    o.push_str("-");
    o.push_u64(seed, 16);
    o.push_str(dash);
    o.push_str(coding);
    o.push_str("\"");
    o.finish()
}

fn plan_file(
    req: &Request,
    file: &FileInfo<'_>,
    now_unix: u64,
    info: &ServerInfo<'_>,
) -> Result<ResponsePlan, NoMemory> {
    let has_siblings = file.gzip.is_some() || file.brotli.is_some();
    let chosen = choose_encoding(
        req.accept_encoding.as_deref(),
        file.brotli.is_some(),
        file.gzip.is_some(),
    );
    let (encoding, meta) = match (chosen, file.brotli, file.gzip) {
        (Encoding::Brotli, Some(m), _) => (Encoding::Brotli, m),
        (Encoding::Gzip, _, Some(m)) => (Encoding::Gzip, m),
        _ => (Encoding::Identity, file.meta),
    };
    let tag = representation_etag(&meta, encoding)?;
    let content_type = if !file.content_type.is_empty() && is_safe_value(file.content_type) {
        file.content_type
    } else {
        DEFAULT_MIME
    };
    let validators = |h: &mut Head| {
        h.field("ETag", &tag);
        h.date("Last-Modified", meta.mtime_unix);
        if let Some(cc) = info.cache_control {
            h.field("Cache-Control", cc);
        }
        if has_siblings {
            h.field("Vary", "Accept-Encoding");
        }
    };

    match evaluate_preconditions(req, &tag, meta.mtime_unix) {
        Precondition::Failed => return req_error(req, 412, now_unix, info, &[]),
        Precondition::NotModified => {
            let mut h = Head::new(304, now_unix, info);
            validators(&mut h);
            h.connection(req.keep_alive, Some(req.version_minor));
            return Ok(ResponsePlan {
                status: 304,
                head: h.finish()?,
                body: Vec::new(),
                keep_alive: req.keep_alive,
                encoding,
            });
        }
        Precondition::Proceed => {}
    }

    let mut outcome = match &req.range {
        Some(range)
            if req.method == Method::Get
                && req
                    .if_range
                    .as_deref()
                    .is_none_or(|ir| if_range_allows(ir, &tag, meta.mtime_unix)) =>
        {
            parse_range(range, meta.len, info.max_ranges)
        }
        _ => RangeOutcome::Full,
    };
    if let RangeOutcome::Partial(ranges) = &outcome
        && ranges.len() > 1
        && encoding != Encoding::Identity
    {
        outcome = RangeOutcome::Full;
    }

    let (status, body, content_length) = match outcome {
        RangeOutcome::Unsatisfiable => {
            let cr = try_format(format_args!("bytes */{}", meta.len))?;
            return req_error(
                req,
                416,
                now_unix,
                info,
                &[("Content-Range", &cr), ("Accept-Ranges", "bytes")],
            );
        }
        RangeOutcome::Full => {
            let body = if meta.len > 0 {
                one(BodyPart::File {
                    offset: 0,
                    len: meta.len,
                })?
            } else {
                Vec::new()
            };
            (200, body, meta.len)
        }
        RangeOutcome::Partial(ranges) if ranges.len() == 1 => {
            let r = ranges[0];
            let body = one(BodyPart::File {
                offset: r.first,
                len: r.len(),
            })?;
            (206, body, r.len())
        }
        RangeOutcome::Partial(ranges) => {
            let boundary = boundary_for(&tag, now_unix)?;
            let body = multipart_body(&ranges, meta.len, content_type, &boundary)?;
            let total = body.iter().fold(0u64, |acc, p| acc.saturating_add(p.len()));
            let mut h = Head::new(206, now_unix, info);
            let _ = write!(
                h.0,
                "Content-Type: multipart/byteranges; boundary={boundary}\r\n"
            );
            h.field_u64("Content-Length", total);
            h.field("Accept-Ranges", "bytes");
            validators(&mut h);
            h.connection(req.keep_alive, Some(req.version_minor));
            return finish_file_plan(req, 206, h, body, encoding);
        }
    };

    let mut h = Head::new(status, now_unix, info);
    h.field("Content-Type", content_type);
    h.field_u64("Content-Length", content_length);
    h.field("Accept-Ranges", "bytes");
    validators(&mut h);
    if let Some(coding) = encoding.content_encoding() {
        h.field("Content-Encoding", coding);
    }
    if let [BodyPart::File { offset, len }] = body.as_slice()
        && status == 206
    {
        let _ = write!(
            h.0,
            "Content-Range: bytes {}-{}/{}\r\n",
            offset,
            offset + len - 1,
            meta.len
        );
    }
    h.connection(req.keep_alive, Some(req.version_minor));
    finish_file_plan(req, status, h, body, encoding)
}

fn finish_file_plan(
    req: &Request,
    status: u16,
    h: Head,
    body: Vec<BodyPart>,
    encoding: Encoding,
) -> Result<ResponsePlan, NoMemory> {
    Ok(ResponsePlan {
        status,
        head: h.finish()?,
        body,
        keep_alive: req.keep_alive,
        encoding,
    })
}

/// Deterministic boundary: 64-bit FNV-1a of the ETag and time, in hex.
fn boundary_for(tag: &str, now_unix: u64) -> Result<String, NoMemory> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tag.bytes().chain(now_unix.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    try_format(format_args!("uk-http-{h:016x}"))
}

/// `multipart/byteranges` body (RFC 9110 §14.6): per range a boundary line,
/// `Content-Type` and `Content-Range` fields, an empty line and the data,
/// followed by the closing delimiter.
fn multipart_body(
    ranges: &[ByteRange],
    len: u64,
    content_type: &str,
    boundary: &str,
) -> Result<Vec<BodyPart>, NoMemory> {
    let mut parts = Vec::new();
    parts
        .try_reserve_exact(ranges.len() * 2 + 1)
        .map_err(|_| NoMemory)?;
    for (i, r) in ranges.iter().enumerate() {
        let sep = if i == 0 { "" } else { "\r\n" };
        let header = try_format(format_args!(
            "{sep}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
            r.first, r.last
        ))?;
        parts.push(BodyPart::Bytes(header.into_bytes()));
        parts.push(BodyPart::File {
            offset: r.first,
            len: r.len(),
        });
    }
    let end = try_format(format_args!("\r\n--{boundary}--\r\n"))?;
    parts.push(BodyPart::Bytes(end.into_bytes()));
    Ok(parts)
}
