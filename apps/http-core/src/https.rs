//! HTTP beside HTTPS (feature `tls`): the redirect of plain HTTP requests
//! to the HTTPS port (`--redirect-https`) and the `Strict-Transport-Security`
//! value (`--hsts`).
//!
//! The redirect's `Location` is built from the request's `Host` (or the
//! authority of an absolute-form target, which takes its place, RFC 9112
//! §3.2.2) and target. The host is validated, not escaped: a registered
//! name of letters, digits, `-`, `.` and `_`, an IPv4 address, or a
//! bracketed IPv6 address, optionally with a port (dropped: the HTTPS port
//! replaces it). Anything else, or no host at all, is a 400, so nothing a
//! client sends reaches the `Location` field but a plain host name and the
//! request's path and query (whose bytes outside printable ASCII are
//! percent-encoded).

use alloc::string::String;

use crate::oom::Out;
use crate::parse::Request;
use crate::response::{ResponsePlan, ServerInfo, plan_error, plan_redirect};

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Longest host name accepted (DNS names are at most 253 characters).
const MAX_HOST: usize = 253;

/// The host part of `authority` (`host[:port]`), if it is a valid host
/// with an optional valid port; the port is dropped.
pub fn valid_host(authority: &str) -> Option<&str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // An IPv6 literal: hex digits, colons and dots (an embedded IPv4
        // address); no zone identifier, no IPvFuture.
        let end = rest.find(']')?;
        let inner = &rest[..end];
        let ok = inner.len() >= 2
            && inner.contains(':')
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ok {
            return None;
        }
        let host = &authority[..end + 2];
        (host, &rest[end + 1..])
    } else {
        match authority.find(':') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        }
    };
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        // An empty port is allowed by RFC 3986 (`host:`).
        if digits.len() > 5
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.parse::<u32>().is_ok_and(|p| p > 65535)
        {
            return None;
        }
    }
    if host.starts_with('[') {
        return Some(host);
    }
    let ok = !host.is_empty()
        && host.len() <= MAX_HOST
        && !host.starts_with(['.', '-'])
        && !host.contains("..")
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    ok.then_some(host)
}

/// Splits an absolute-form target (`http://host[:port]/path?query`) into
/// its authority and its path and query (`/` when empty). `None` for a
/// target that is not absolute-form http(s), or carries user information.
fn split_absolute(target: &str) -> Option<(&str, &str)> {
    let scheme_end = target.find("://")?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return None;
    }
    Some((authority, path))
}

/// `https://HOST[:PORT]PATH`: the URL on the HTTPS port `tls_port` for a
/// request whose `Host` is `host` and whose target is `target`. `Err(400)`
/// for a missing or invalid host or a target that is neither origin-form
/// nor absolute-form; `Err(503)` when memory runs out.
pub fn https_location(host: Option<&str>, target: &str, tls_port: u16) -> Result<String, u16> {
    let (authority, path) = if target.starts_with('/') {
        (host.ok_or(400u16)?, target)
    } else {
        split_absolute(target).ok_or(400u16)?
    };
    let host = valid_host(authority.trim()).ok_or(400u16)?;
    // The fragment never belongs in a request; drop one if sent.
    let path = path.split('#').next().unwrap_or("");
    let mut o = Out::with_capacity(8 + host.len() + 6 + path.len() + 1);
    o.push_str("https://");
    o.push_str(host);
    if tls_port != 443 {
        o.push_str(":");
        o.push_u64(u64::from(tls_port), 10);
    }
    if !path.starts_with('/') {
        o.push_str("/");
    }
    for b in path.bytes() {
        if (0x21..0x7f).contains(&b) {
            o.push(char::from(b));
        } else {
            // Spaces, controls and non-ASCII: percent-encoded.
            o.push('%');
            o.push(char::from(HEX[usize::from(b >> 4)]));
            o.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    o.finish().map_err(|_| 503u16)
}

/// The response to a plain HTTP request when every request is redirected
/// to HTTPS: `status` (301 or 308) to [`https_location`], or a 400 for a
/// bad host (a 503 when memory runs out).
pub fn plan_https_redirect(
    req: &Request,
    status: u16,
    tls_port: u16,
    now_unix: u64,
    info: &ServerInfo<'_>,
) -> ResponsePlan {
    match https_location(req.host.as_deref(), &req.target, tls_port) {
        Ok(location) => plan_redirect(req, status, &location, now_unix, info),
        Err(status) => plan_error(req, status, now_unix, info),
    }
}

/// The `Strict-Transport-Security` value for `max_age` seconds.
pub fn hsts_value(max_age: u64) -> String {
    let mut o = Out::with_capacity(32);
    o.push_str("max-age=");
    o.push_u64(max_age, 10);
    // At startup, from the configuration: a failure here is no header.
    o.finish().unwrap_or_default()
}
