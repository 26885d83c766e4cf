//! ACME (RFC 8555) without the I/O, for httpd's TLS build: the encodings an
//! ACME client needs, host-tested here while httpd does the networking and
//! the cryptography (ring).
//!
//! - [`b64url`], [`pem`]: base64url (JWS) and PEM armour.
//! - [`Json`]: a small bounded JSON parser for the server's replies, and
//!   [`json_str`] to quote strings in what we send.
//! - [`jwk_p256`], [`protected_header`], [`jws`]: the flattened JWS (ES256)
//!   every request carries, and [`key_authorization`] for HTTP-01.
//! - [`csr_p256`]: a PKCS#10 certificate request (DER) for one DNS name with
//!   a P-256 key, signed by the caller.
//! - [`Url`], [`http_request`], [`parse_http_response`]: the HTTP/1.1
//!   client side (`Connection: close`, `Content-Length` or chunked bodies).
//! - [`challenge_token`], [`plan_challenge`]: the HTTP-01 responder's
//!   request matching and response.
//! - [`renew_at`], [`backoff_secs`]: when to renew and how long to wait
//!   after a failure.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use crate::{Encoding, Request, ResponsePlan, ServerInfo, format_http_date};

// ---------------------------------------------------------------------------
// base64 and PEM

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if pad {
            for _ in c.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// Base64url without padding (RFC 7515 §2).
pub fn b64url(data: &[u8]) -> String {
    base64(data, B64URL, false)
}

/// `data` in PEM armour with `label` (`CERTIFICATE`, `PRIVATE KEY`).
pub fn pem(label: &str, data: &[u8]) -> String {
    let b = base64(data, B64, true);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b.as_bytes().chunks(64) {
        out.push_str(core::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// ---------------------------------------------------------------------------
// JSON

/// A JSON value. Numbers are kept as their text.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// A number, as written.
    Num(String),
    /// A string, unescaped.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, members in order.
    Obj(Vec<(String, Json)>),
}

/// Why JSON did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadJson;

impl core::fmt::Display for BadJson {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("malformed JSON")
    }
}

/// Deepest nesting accepted (ACME replies nest three or four levels).
const MAX_DEPTH: usize = 32;

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), BadJson> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(BadJson)
        }
    }

    fn lit(&mut self, word: &[u8], v: Json) -> Result<Json, BadJson> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(BadJson)
        }
    }

    fn hex4(&mut self) -> Result<u32, BadJson> {
        let h = self.b.get(self.i..self.i + 4).ok_or(BadJson)?;
        let s = core::str::from_utf8(h).map_err(|_| BadJson)?;
        let v = u32::from_str_radix(s, 16).map_err(|_| BadJson)?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, BadJson> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let &c = self.b.get(self.i).ok_or(BadJson)?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let &e = self.b.get(self.i).ok_or(BadJson)?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xd800..0xdc00).contains(&hi) {
                                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(BadJson);
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return Err(BadJson);
                                }
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            char::from_u32(cp).ok_or(BadJson)?
                        }
                        _ => return Err(BadJson),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0..0x20 => return Err(BadJson),
                _ => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| BadJson)
    }

    fn value(&mut self, depth: usize) -> Result<Json, BadJson> {
        if depth > MAX_DEPTH {
            return Err(BadJson);
        }
        self.ws();
        match *self.b.get(self.i).ok_or(BadJson)? {
            b'n' => self.lit(b"null", Json::Null),
            b't' => self.lit(b"true", Json::Bool(true)),
            b'f' => self.lit(b"false", Json::Bool(false)),
            b'"' => self.string().map(Json::Str),
            b'[' => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(v));
                }
                loop {
                    v.push(self.value(depth + 1)?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(v));
                        }
                        _ => return Err(BadJson),
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    let k = self.string()?;
                    self.eat(b':')?;
                    m.push((k, self.value(depth + 1)?));
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => return Err(BadJson),
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                while self.i < self.b.len()
                    && matches!(
                        self.b[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                let s = core::str::from_utf8(&self.b[start..self.i]).map_err(|_| BadJson)?;
                if !s.bytes().any(|c| c.is_ascii_digit()) {
                    return Err(BadJson);
                }
                Ok(Json::Num(s.to_string()))
            }
            _ => Err(BadJson),
        }
    }
}

impl Json {
    /// Parses a complete JSON text.
    pub fn parse(text: &[u8]) -> Result<Json, BadJson> {
        let mut p = Parser { b: text, i: 0 };
        let v = p.value(0)?;
        p.ws();
        if p.i == text.len() {
            Ok(v)
        } else {
            Err(BadJson)
        }
    }

    /// An object's member `key`.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The member `key` as a string.
    pub fn str_of(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Json::as_str)
    }

    /// The elements, if this is an array.
    pub fn items(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => &[],
        }
    }
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// JWS (RFC 7515) with ES256 and the JWK of a P-256 key

/// The JWK of a P-256 public key given as the uncompressed point
/// (`0x04 || x || y`, 65 bytes), members in lexicographic order, so the
/// same text is also the input of the thumbprint (RFC 7638).
pub fn jwk_p256(point: &[u8]) -> Option<String> {
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    Some(format!(
        "{{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"{}\",\"y\":\"{}\"}}",
        b64url(&point[1..33]),
        b64url(&point[33..])
    ))
}

/// Who signs a request: the new account's key (`jwk`, for newAccount) or
/// the account URL (`kid`, for everything after).
#[derive(Debug, Clone, Copy)]
pub enum Signer<'a> {
    /// The JWK text ([`jwk_p256`]).
    Jwk(&'a str),
    /// The account URL.
    Kid(&'a str),
}

/// The JWS protected header for a request to `url`.
pub fn protected_header(signer: Signer<'_>, nonce: &str, url: &str) -> String {
    let key = match signer {
        Signer::Jwk(jwk) => format!("\"jwk\":{jwk}"),
        Signer::Kid(kid) => format!("\"kid\":{}", json_str(kid)),
    };
    format!(
        "{{\"alg\":\"ES256\",{key},\"nonce\":{},\"url\":{}}}",
        json_str(nonce),
        json_str(url)
    )
}

/// The flattened JWS JSON of `payload` (empty for POST-as-GET) under
/// `protected`; `sign` gets the signing input and returns the signature
/// (ES256: r || s, 64 bytes).
pub fn jws<E>(
    protected: &str,
    payload: &str,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<String, E> {
    let p = b64url(protected.as_bytes());
    let b = b64url(payload.as_bytes());
    let input = format!("{p}.{b}");
    let sig = sign(input.as_bytes())?;
    Ok(format!(
        "{{\"protected\":\"{p}\",\"payload\":\"{b}\",\"signature\":\"{}\"}}",
        b64url(&sig)
    ))
}

/// The key authorization of an HTTP-01 challenge (RFC 8555 §8.1): the
/// token and the base64url SHA-256 thumbprint of the account key.
pub fn key_authorization(token: &str, thumbprint: &[u8]) -> String {
    format!("{token}.{}", b64url(thumbprint))
}

/// Whether `t` can be a challenge token (base64url characters, RFC 8555
/// §8.3): what the responder accepts and what goes into a URL path.
pub fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 256
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ---------------------------------------------------------------------------
// DER and the certificate request

/// A DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        v.push(0x80 | (bytes.len() - skip) as u8);
        v.extend_from_slice(&bytes[skip..]);
    }
    v.extend_from_slice(content);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const SEQ: u8 = 0x30;
const SET: u8 = 0x31;
/// commonName (2.5.4.3)
const OID_CN: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
/// id-ecPublicKey (1.2.840.10045.2.1)
const OID_EC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 (1.2.840.10045.3.1.7)
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// extensionRequest (1.2.840.113549.1.9.14)
const OID_EXT_REQ: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e,
];
/// subjectAltName (2.5.29.17)
const OID_SAN: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x11];
/// ecdsa-with-SHA256 (1.2.840.10045.4.3.2)
const OID_ECDSA_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

/// Whether `name` is a DNS name a certificate can be asked for: labels of
/// letters, digits and inner hyphens, at least two of them, at most 253
/// characters (a leading `*.` is not supported: HTTP-01 cannot prove it).
pub fn valid_domain(name: &str) -> bool {
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Why a certificate request was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrError<E> {
    /// The name is not a valid domain ([`valid_domain`]).
    BadDomain,
    /// The public key is not an uncompressed P-256 point.
    BadKey,
    /// The signer failed.
    Sign(E),
}

/// A PKCS#10 certificate request (RFC 2986) in DER for `domain` (subject
/// CN, and the subjectAltName extension ACME servers read) with the P-256
/// public key `point` (uncompressed, 65 bytes); `sign` gets the DER
/// CertificationRequestInfo and returns its ECDSA P-256 SHA-256 signature
/// (ASN.1 DER `Ecdsa-Sig-Value`).
pub fn csr_p256<E>(
    domain: &str,
    point: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, CsrError<E>> {
    if !valid_domain(domain) {
        return Err(CsrError::BadDomain);
    }
    if point.len() != 65 || point[0] != 4 {
        return Err(CsrError::BadKey);
    }
    let version = der(0x02, &[0]);
    // CN is at most 64 characters (RFC 5280 ub-common-name); a longer name
    // is in the subjectAltName only.
    let subject = if domain.len() <= 64 {
        let atv = der(SEQ, &cat(&[OID_CN, &der(0x0c, domain.as_bytes())]));
        der(SEQ, &der(SET, &atv))
    } else {
        der(SEQ, &[])
    };
    let alg = der(SEQ, &cat(&[OID_EC_KEY, OID_P256]));
    let spki = der(SEQ, &cat(&[&alg, &der(0x03, &cat(&[&[0], point]))]));
    let san = der(SEQ, &der(0x82, domain.as_bytes()));
    let ext = der(SEQ, &cat(&[OID_SAN, &der(0x04, &san)]));
    let attr = der(SEQ, &cat(&[OID_EXT_REQ, &der(SET, &der(SEQ, &ext))]));
    let info = der(SEQ, &cat(&[&version, &subject, &spki, &der(0xa0, &attr)]));
    let sig = sign(&info).map_err(CsrError::Sign)?;
    let sig_alg = der(SEQ, OID_ECDSA_SHA256);
    let sig_bits = der(0x03, &cat(&[&[0], &sig]));
    Ok(der(SEQ, &cat(&[&info, &sig_alg, &sig_bits])))
}

// ---------------------------------------------------------------------------
// HTTP client side

/// An `https://` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or IPv4 address.
    pub host: String,
    /// Port (443 by default).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Splits an `https://host[:port][/path]` URL (no user info, no IPv6
/// literal).
pub fn parse_url(s: &str) -> Option<Url> {
    let rest = s.strip_prefix("https://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok().filter(|&p| p != 0)?),
        None => (hostport, 443),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let path_ok = path.bytes().all(|b| b > 0x20 && b < 0x7f);
    (host_ok && path_ok).then(|| Url {
        host: host.to_ascii_lowercase(),
        port,
        path: path.to_string(),
    })
}

/// An HTTP/1.1 request for `url`: `Connection: close`, and with a body the
/// ACME content type `application/jose+json`.
pub fn http_request(method: &str, url: &Url, body: Option<&str>) -> Vec<u8> {
    let host = if url.port == 443 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let mut r = format!(
        "{method} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: uk-httpd-acme\r\nAccept: */*\r\nConnection: close\r\n",
        url.path
    );
    if let Some(b) = body {
        r.push_str(&format!(
            "Content-Type: application/jose+json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        r.push_str("\r\n");
    }
    r.into_bytes()
}

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header fields (names as received).
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What is wrong with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadResponse {
    /// The stream ended before the response did.
    Truncated,
    /// Not HTTP/1.x, or a malformed head or chunk.
    Malformed,
}

impl core::fmt::Display for BadResponse {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            BadResponse::Truncated => "truncated HTTP response",
            BadResponse::Malformed => "malformed HTTP response",
        })
    }
}

/// Parses a whole response read until the server closed the connection
/// (`head` says whether it answers a HEAD request: no body).
pub fn parse_http_response(data: &[u8], head: bool) -> Result<HttpResponse, BadResponse> {
    let mut hdrs = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut hdrs);
    let n = match r.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(BadResponse::Truncated),
        Err(_) => return Err(BadResponse::Malformed),
    };
    let status = r.code.ok_or(BadResponse::Malformed)?;
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let resp = |body| HttpResponse {
        status,
        headers: headers.clone(),
        body,
    };
    let rest = &data[n..];
    if head || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp(Vec::new()));
    }
    let field = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if field("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return dechunk(rest).map(resp);
    }
    if let Some(len) = field("content-length") {
        let len: usize = len.parse().map_err(|_| BadResponse::Malformed)?;
        if rest.len() < len {
            return Err(BadResponse::Truncated);
        }
        return Ok(resp(rest[..len].to_vec()));
    }
    Ok(resp(rest.to_vec()))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, BadResponse> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(BadResponse::Truncated)?;
        let line = core::str::from_utf8(&b[..eol]).map_err(|_| BadResponse::Malformed)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| BadResponse::Malformed)?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(BadResponse::Truncated);
        }
        if &b[size..size + 2] != b"\r\n" {
            return Err(BadResponse::Malformed);
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

// ---------------------------------------------------------------------------
// DNS (the directory's address): one A query over UDP (RFC 1035)

/// A query for the A records of `name` with `id`, recursion desired; `None`
/// for a name that is not a valid host name.
pub fn dns_query(id: u16, name: &str) -> Option<Vec<u8>> {
    let name = name.trim_end_matches('.');
    if name.is_empty()
        || name.len() > 253
        || name.split('.').any(|l| {
            l.is_empty()
                || l.len() > 63
                || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    {
        return None;
    }
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    // RD; one question.
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    // Root, QTYPE A, QCLASS IN.
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Some(q)
}

/// Why a DNS answer gave no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsError {
    /// Not an answer to our query (other id, not a response, truncated
    /// or malformed).
    Malformed,
    /// The server answered with this RCODE (3: no such name).
    Rcode(u8),
    /// No A record in the answer.
    NoAddress,
}

impl core::fmt::Display for DnsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DnsError::Malformed => f.write_str("malformed DNS answer"),
            DnsError::Rcode(3) => f.write_str("no such name (NXDOMAIN)"),
            DnsError::Rcode(c) => write!(f, "DNS error (RCODE {c})"),
            DnsError::NoAddress => f.write_str("no IPv4 address in the DNS answer"),
        }
    }
}

/// Skips a (possibly compressed) name at `at`; the offset after it.
fn skip_name(m: &[u8], mut at: usize) -> Result<usize, DnsError> {
    for _ in 0..128 {
        let &len = m.get(at).ok_or(DnsError::Malformed)?;
        match len {
            0 => return Ok(at + 1),
            0xc0..=0xff => {
                m.get(at + 1).ok_or(DnsError::Malformed)?;
                return Ok(at + 2);
            }
            0x40..=0xbf => return Err(DnsError::Malformed),
            _ => at += 1 + usize::from(len),
        }
    }
    Err(DnsError::Malformed)
}

/// The IPv4 addresses (A records) in the answer `m` to the query with `id`.
pub fn dns_answer(m: &[u8], id: u16) -> Result<Vec<[u8; 4]>, DnsError> {
    if m.len() < 12 || m[..2] != id.to_be_bytes() || m[2] & 0x80 == 0 {
        return Err(DnsError::Malformed);
    }
    if m[2] & 0x02 != 0 {
        // Truncated: no TCP fallback (an A answer fits in 512 bytes).
        return Err(DnsError::Malformed);
    }
    let rcode = m[3] & 0x0f;
    if rcode != 0 {
        return Err(DnsError::Rcode(rcode));
    }
    let qd = u16::from_be_bytes([m[4], m[5]]);
    let an = u16::from_be_bytes([m[6], m[7]]);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(m, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(m, at)?;
        let h = m.get(at..at + 10).ok_or(DnsError::Malformed)?;
        let (typ, class) = (
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[2], h[3]]),
        );
        let len = usize::from(u16::from_be_bytes([h[8], h[9]]));
        let data = m.get(at + 10..at + 10 + len).ok_or(DnsError::Malformed)?;
        if typ == 1 && class == 1 && len == 4 {
            out.push([data[0], data[1], data[2], data[3]]);
        }
        at += 10 + len;
    }
    if out.is_empty() {
        Err(DnsError::NoAddress)
    } else {
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// The HTTP-01 responder

/// The path prefix of HTTP-01 challenges.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The token a request path asks for, if it is a challenge path.
pub fn challenge_token(path: &str) -> Option<&str> {
    path.strip_prefix(CHALLENGE_PREFIX)
        .filter(|t| valid_token(t))
}

/// The 200 response carrying a key authorization (`text/plain`,
/// `Cache-Control: no-store`; no body for HEAD).
pub fn plan_challenge(
    req: &Request,
    key_auth: &str,
    now_unix: u64,
    info: &ServerInfo<'_>,
) -> ResponsePlan {
    let head = format!(
        "HTTP/1.1 200 OK\r\nDate: {}\r\nServer: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}\r\n",
        format_http_date(now_unix),
        info.server,
        key_auth.len(),
        if req.keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        }
    );
    ResponsePlan {
        status: 200,
        head: Cow::Owned(head.into_bytes()),
        body: if req.is_head() {
            Vec::new()
        } else {
            vec![crate::BodyPart::Bytes(key_auth.as_bytes().to_vec())]
        },
        keep_alive: req.keep_alive,
        encoding: Encoding::Identity,
    }
}

/// Where httpd keeps ACME state when the state directory is not writable
/// (tmpfs, lost when the VM stops).
pub const FALLBACK_STATE: &str = "/tmp/acme";

/// Where the kernel mounts a state disk (`unikernel::fs::state`); httpd
/// keeps the ACME state in [`STATE_DISK_ACME`] on it.
pub const STATE_DISK: &str = "/state";
/// The ACME state on a state disk.
pub const STATE_DISK_ACME: &str = "/state/acme";

/// Whether the file-system path `p` is ACME state (the account key, the
/// certificate's private key) that must never be served: under `state`,
/// [`FALLBACK_STATE`] or on the state disk ([`STATE_DISK`]).
pub fn is_private(p: &str, state: &str) -> bool {
    [state.trim_end_matches('/'), FALLBACK_STATE, STATE_DISK]
        .iter()
        .any(|d| p == *d || p.strip_prefix(d).is_some_and(|r| r.starts_with('/')))
}

// ---------------------------------------------------------------------------
// Timing

/// When to renew a certificate valid from `not_before` to `not_after`
/// (Unix seconds): at two thirds of its lifetime.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let life = not_after.saturating_sub(not_before).max(0);
    not_before.saturating_add(life / 3 * 2)
}

/// Seconds to wait after the `failures`-th failure in a row (1, 2, ...):
/// 10 s doubling up to an hour.
pub fn backoff_secs(failures: u32) -> u64 {
    let exp = failures.saturating_sub(1).min(10);
    (10u64 << exp).min(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        let cases = [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (i, o) in cases {
            assert_eq!(b64url(i.as_bytes()), o);
        }
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        let p = pem("TEST", b"fo");
        assert_eq!(p, "-----BEGIN TEST-----\nZm8=\n-----END TEST-----\n");
        let long = pem("X", &[0u8; 60]);
        assert_eq!(long.lines().nth(1).unwrap().len(), 64);
        assert_eq!(long.lines().count(), 4);
    }

    #[test]
    fn json_parses_acme_replies() {
        let dir = br#"{"keyChange":"https://10.77.0.1:14000/rollover-account-key",
          "meta":{"externalAccountRequired":false,"termsOfService":"data:text/plain,Do%20what%20thou%20wilt"},
          "newAccount":"https://10.77.0.1:14000/sign-me-up","newNonce":"https://10.77.0.1:14000/nonce-plz",
          "newOrder":"https://10.77.0.1:14000/order-plz","revokeCert":"https://10.77.0.1:14000/revoke-cert"}"#;
        let j = Json::parse(dir).unwrap();
        assert_eq!(
            j.str_of("newOrder"),
            Some("https://10.77.0.1:14000/order-plz")
        );
        assert_eq!(
            j.get("meta").and_then(|m| m.get("externalAccountRequired")),
            Some(&Json::Bool(false))
        );
        let authz = br#"{ "status": "pending", "identifier": {"type":"dns","value":"a.test"},
           "challenges": [ {"type":"tls-alpn-01","url":"u1","token":"t1","status":"pending"},
                           {"type":"http-01","url":"u2","token":"t2","status":"pending"} ],
           "expires": "2026-12-04T18:00:00Z", "n": -1.5e3, "x": null, "s": "\u00e9\ud83d\ude00\n\"" }"#;
        let j = Json::parse(authz).unwrap();
        let ch = j
            .get("challenges")
            .unwrap()
            .items()
            .iter()
            .find(|c| c.str_of("type") == Some("http-01"))
            .unwrap();
        assert_eq!(ch.str_of("token"), Some("t2"));
        assert_eq!(j.get("n"), Some(&Json::Num("-1.5e3".into())));
        assert_eq!(j.str_of("s"), Some("é😀\n\""));
        assert_eq!(Json::parse(b"[]").unwrap(), Json::Arr(vec![]));
        assert_eq!(Json::parse(b" {} ").unwrap(), Json::Obj(vec![]));
    }

    #[test]
    fn json_refuses_bad_input() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\"}",
            b"{\"a\":1,}",
            b"[1,]",
            b"\"abc",
            b"\"\\x\"",
            b"\"\\ud800\"",
            b"tru",
            b"1 2",
            b"-",
            b"\"a\nb\"",
            b"{1:2}",
        ] {
            assert_eq!(Json::parse(bad), Err(BadJson), "{:?}", bad);
        }
        // Deep nesting is refused, not a stack overflow.
        let deep = "[".repeat(100_000);
        assert_eq!(Json::parse(deep.as_bytes()), Err(BadJson));
        // Every truncation of a valid text fails cleanly or parses.
        let t = br#"{"a":[1,{"b":"c\u0041"}],"d":true}"#;
        for n in 0..t.len() {
            let _ = Json::parse(&t[..n]);
        }
        assert!(Json::parse(t).is_ok());
    }

    #[test]
    fn json_strings_round_trip() {
        let s = "a\"b\\c\nd\u{1}é";
        let q = json_str(s);
        assert_eq!(q, "\"a\\\"b\\\\c\\nd\\u0001é\"");
        assert_eq!(Json::parse(q.as_bytes()).unwrap(), Json::Str(s.into()));
    }

    #[test]
    fn jws_layout() {
        let mut point = vec![4u8];
        point.extend(1..=64u8);
        let jwk = jwk_p256(&point).unwrap();
        let j = Json::parse(jwk.as_bytes()).unwrap();
        assert_eq!(j.str_of("kty"), Some("EC"));
        assert_eq!(j.str_of("x"), Some(b64url(&point[1..33]).as_str()));
        assert!(jwk_p256(&point[1..]).is_none());
        let ph = protected_header(Signer::Jwk(&jwk), "n1", "https://a/b");
        let ph = Json::parse(ph.as_bytes()).unwrap();
        assert_eq!(ph.str_of("alg"), Some("ES256"));
        assert_eq!(ph.get("jwk"), Some(&j));
        let ph = protected_header(Signer::Kid("https://a/acct/1"), "n\"2", "https://a/c");
        let ph_j = Json::parse(ph.as_bytes()).unwrap();
        assert_eq!(ph_j.str_of("kid"), Some("https://a/acct/1"));
        assert_eq!(ph_j.str_of("nonce"), Some("n\"2"));
        let mut seen = Vec::new();
        let out = jws::<()>(&ph, "", |input| {
            seen = input.to_vec();
            Ok(vec![0xff; 64])
        })
        .unwrap();
        let o = Json::parse(out.as_bytes()).unwrap();
        assert_eq!(o.str_of("payload"), Some(""));
        assert_eq!(
            core::str::from_utf8(&seen).unwrap(),
            format!("{}.", b64url(ph.as_bytes()))
        );
        assert_eq!(o.str_of("signature").unwrap().len(), 86);
        assert!(jws(&ph, "{}", |_| Err::<Vec<u8>, _>("no")).is_err());
        assert_eq!(key_authorization("tok", &[0xfb, 0xff]), "tok.-_8");
    }

    #[test]
    fn domains_and_tokens() {
        assert!(valid_domain("example.com"));
        assert!(valid_domain("a-b.c0.example"));
        for bad in [
            "",
            "localhost",
            "-a.com",
            "a-.com",
            "a..com",
            "*.a.com",
            "a_b.com",
            "a.com.",
        ] {
            assert!(!valid_domain(bad), "{bad}");
        }
        assert!(!valid_domain(&format!("{}.com", "a".repeat(64))));
        assert!(valid_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        assert!(!valid_token("../x"));
        assert!(!valid_token(""));
        assert_eq!(
            challenge_token("/.well-known/acme-challenge/abc_-1"),
            Some("abc_-1")
        );
        assert_eq!(challenge_token("/.well-known/acme-challenge/a/b"), None);
        assert_eq!(challenge_token("/.well-known/acme-challenge/"), None);
        assert_eq!(challenge_token("/index.html"), None);
    }

    #[test]
    fn csr_structure() {
        let mut point = vec![4u8];
        point.extend([7u8; 64]);
        let mut signed = Vec::new();
        let csr = csr_p256::<()>("www.example.com", &point, |info| {
            signed = info.to_vec();
            Ok(vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02])
        })
        .unwrap();
        assert_eq!(csr[0], 0x30);
        // The signed part is the first element, byte for byte.
        let (hdr, total) = if csr[1] < 0x80 {
            (2, usize::from(csr[1]))
        } else {
            let n = usize::from(csr[1] & 0x7f);
            (
                2 + n,
                csr[2..2 + n]
                    .iter()
                    .fold(0, |a, &b| (a << 8) | usize::from(b)),
            )
        };
        assert_eq!(csr.len(), hdr + total);
        assert_eq!(&csr[hdr..hdr + signed.len()], &signed[..]);
        let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(has(&signed, b"www.example.com"));
        assert!(has(&signed, OID_SAN));
        assert!(has(&signed, &point));
        assert!(has(&csr, OID_ECDSA_SHA256));
        // Long lengths: a 250-character name uses two-byte lengths and no CN.
        let long = format!(
            "{}.{}.{}.{}.com",
            "a".repeat(61),
            "b".repeat(61),
            "c".repeat(61),
            "d".repeat(61)
        );
        let csr2 = csr_p256::<()>(&long, &point, |_| Ok(vec![0x30, 0])).unwrap();
        assert_eq!(csr2[1], 0x82);
        assert!(!has(&csr2, OID_CN));
        assert_eq!(
            csr_p256::<()>("bad_name", &point, |_| Ok(vec![])),
            Err(CsrError::BadDomain)
        );
        assert_eq!(
            csr_p256::<()>("a.com", &point[..64], |_| Ok(vec![])),
            Err(CsrError::BadKey)
        );
        assert_eq!(
            csr_p256("a.com", &point, |_| Err(5)),
            Err(CsrError::Sign(5))
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://10.77.0.1:14000/dir"),
            Some(Url {
                host: "10.77.0.1".into(),
                port: 14000,
                path: "/dir".into()
            })
        );
        assert_eq!(
            parse_url("https://ACME.example.org"),
            Some(Url {
                host: "acme.example.org".into(),
                port: 443,
                path: "/".into()
            })
        );
        for bad in [
            "http://a/b",
            "https://",
            "https://a:0/",
            "https://a:x/",
            "https://u@a/",
            "https://a/b c",
        ] {
            assert_eq!(parse_url(bad), None, "{bad}");
        }
        let u = parse_url("https://h:1/p?q").unwrap();
        let r = String::from_utf8(http_request("POST", &u, Some("{}"))).unwrap();
        assert!(r.starts_with("POST /p?q HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(r.ends_with("Content-Length: 2\r\n\r\n{}"));
        let r = String::from_utf8(http_request("HEAD", &u, None)).unwrap();
        assert!(r.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn responses() {
        let r = parse_http_response(
            b"HTTP/1.1 201 Created\r\nReplay-Nonce: abc\r\nLocation: https://a/acct/1\r\nContent-Length: 2\r\n\r\n{}extra",
            false,
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.header("replay-nonce"), Some("abc"));
        assert_eq!(r.body, b"{}");
        let r = parse_http_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.body, b"abc0123456789abcdef");
        let r = parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap();
        assert!(r.body.is_empty());
        let r = parse_http_response(b"HTTP/1.0 200 OK\r\n\r\nto the end", false).unwrap();
        assert_eq!(r.body, b"to the end");
        assert_eq!(
            parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", false),
            Err(BadResponse::Truncated)
        );
        assert_eq!(
            parse_http_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false
            ),
            Err(BadResponse::Malformed)
        );
        assert_eq!(
            parse_http_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                false
            ),
            Err(BadResponse::Truncated)
        );
        assert_eq!(
            parse_http_response(b"HTTP/1.1 2", false),
            Err(BadResponse::Truncated)
        );
        assert_eq!(
            parse_http_response(b"garbage\r\n\r\n", false),
            Err(BadResponse::Malformed)
        );
        let full = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for n in 0..full.len() {
            let _ = parse_http_response(&full[..n], false);
        }
    }

    #[test]
    fn challenge_response() {
        let info = ServerInfo {
            server: "uk-httpd",
            max_ranges: 1,
            cache_control: None,
            headers: &[],
        };
        let req = |m: &str| match crate::parse_request(
            format!("{m} /.well-known/acme-challenge/t HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
            &crate::Limits::default(),
        ) {
            crate::ParseOutcome::Complete { request, .. } => request,
            _ => panic!("parse"),
        };
        let p = plan_challenge(&req("GET"), "t.abc", 0, &info);
        let head = core::str::from_utf8(&p.head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("Content-Length: 5\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
        assert_eq!(p.body, vec![crate::BodyPart::Bytes(b"t.abc".to_vec())]);
        assert!(p.keep_alive);
        let p = plan_challenge(&req("HEAD"), "t.abc", 0, &info);
        assert!(p.body.is_empty());
    }

    #[test]
    fn dns() {
        let q = dns_query(0x1234, "acme.example.org").unwrap();
        assert_eq!(
            q,
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04acme\x07example\x03org\x00\x00\x01\x00\x01"
        );
        assert!(dns_query(1, "a..b").is_none());
        assert!(dns_query(1, "a b").is_none());
        assert!(dns_query(1, "").is_none());
        // An answer: the question, a CNAME, then two A records with
        // compressed names.
        let mut a = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
        a.extend_from_slice(&q[12..]);
        a.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'x', 0xc0, 12]);
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 77, 0, 1]);
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 77, 0, 9]);
        assert_eq!(
            dns_answer(&a, 0x1234),
            Ok(vec![[10, 77, 0, 1], [10, 77, 0, 9]])
        );
        assert_eq!(dns_answer(&a, 0x1235), Err(DnsError::Malformed));
        for n in 0..a.len() {
            assert!(dns_answer(&a[..n], 0x1234).is_err());
        }
        let mut nx = a[..12].to_vec();
        nx[3] = 0x83;
        assert_eq!(dns_answer(&nx, 0x1234), Err(DnsError::Rcode(3)));
        let mut none = a[..12 + q.len() - 12].to_vec();
        none[7] = 0;
        assert_eq!(dns_answer(&none, 0x1234), Err(DnsError::NoAddress));
        // A name that points at itself forever is refused.
        let mut lp = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        lp.extend_from_slice(&[1, b'a'].repeat(200));
        assert_eq!(dns_answer(&lp, 0x1234), Err(DnsError::Malformed));
    }

    #[test]
    fn private_paths() {
        assert!(is_private("/acme", "/acme"));
        assert!(is_private("/acme/account.key.pem", "/acme"));
        assert!(is_private("/tmp/acme/a.test.key.pem", "/acme"));
        assert!(is_private("/data/acme/x", "/data/acme/"));
        assert!(!is_private("/acmex/x", "/acme"));
        assert!(!is_private("/www/acme/x", "/acme"));
        assert!(!is_private("/tmp/acme2", "/acme"));
        assert!(is_private("/state/acme/account.key.pem", "/acme"));
        assert!(is_private("/state", "/acme"));
        assert!(!is_private("/stately/x", "/acme"));
    }

    #[test]
    fn timing() {
        // A 90-day certificate renews after 60 days.
        assert_eq!(renew_at(0, 90 * 86_400), 60 * 86_400);
        assert_eq!(renew_at(100, 50), 100);
        assert_eq!(backoff_secs(1), 10);
        assert_eq!(backoff_secs(2), 20);
        assert_eq!(backoff_secs(9), 2560);
        assert_eq!(backoff_secs(10), 3600);
        assert_eq!(backoff_secs(u32::MAX), 3600);
    }
}
