//! The static file server's command line: port, document root, index file,
//! log level, data path and limits, and the site's rules: extra headers,
//! `Cache-Control` per path pattern, redirects and custom error pages (what
//! `cargo uk` translates a site's `uk.toml` into).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::parse::Limits;
use crate::path::SafePath;

/// How file bytes travel from the page cache to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPath {
    /// `sendfile`: page cache → socket buffer, no application buffer.
    #[default]
    Sendfile,
    /// `pread` into an application buffer, then `write`.
    Read,
    /// `mmap_file` the range, then `write` from the mapping.
    Mmap,
}

impl DataPath {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DataPath::Sendfile => "sendfile",
            DataPath::Read => "read",
            DataPath::Mmap => "mmap",
        }
    }
}

/// Console log level for error and diagnostic lines (the access log is
/// switched separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    /// Nothing.
    Off,
    /// Failures only.
    Error,
    /// Failures and warnings.
    Warn,
    /// The default.
    #[default]
    Info,
    /// Per-connection diagnostics.
    Debug,
    /// Everything.
    Trace,
}

/// The server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// TCP port (default 80).
    pub port: u16,
    /// Document root: an absolute path without a trailing slash, or `/`.
    pub root: String,
    /// File served for a directory request (default `index.html`).
    pub index: String,
    /// Data path for file bodies (default sendfile).
    pub data_path: DataPath,
    /// Access log lines (Combined Log Format) on the console (default on).
    pub access_log: bool,
    /// Log level for error and diagnostic lines (`None`: keep the kernel's).
    pub log_level: Option<LogLevel>,
    /// Request-head limits.
    pub limits: Limits,
    /// Time a client has to send a complete request head once it started
    /// one (and a new connection to start one), in ms (default 10 s).
    pub header_timeout_ms: u64,
    /// Time a keep-alive connection may sit idle between requests, and a
    /// response may make no progress, in ms (default 30 s).
    pub idle_timeout_ms: u64,
    /// After a shutdown request (power button, Ctrl-Alt-Del), how long
    /// in-flight responses may take before their connections are cut, in ms
    /// (default 10 s).
    pub shutdown_timeout_ms: u64,
    /// Maximum simultaneous connections; more are refused with 503 (default 256).
    pub max_conns: usize,
    /// Listen backlog (default 511).
    pub backlog: usize,
    /// Event loops, at most one per CPU (`--workers N`; `None`: one per
    /// CPU).
    pub workers: Option<usize>,
    /// Maximum ranges honoured in one `Range` header (default 16).
    pub max_ranges: usize,
    /// Optional `Cache-Control` value for file responses.
    pub cache_control: Option<String>,
    /// Fields added to every response (`--header 'Name: value'`).
    pub headers: Vec<(String, String)>,
    /// `Cache-Control` per path pattern, first match wins over
    /// `cache_control` (`--cache-rule 'PATTERN=VALUE'`).
    pub cache_rules: Vec<(String, String)>,
    /// Redirects (`--redirect 'FROM TO [STATUS]'`), first match wins.
    pub redirects: Vec<Redirect>,
    /// Custom error pages: status → path of an HTML file under the root
    /// (`--error-page 404=/404.html`).
    pub error_pages: Vec<(u16, String)>,
    /// Directory listings for directories without an index file (default
    /// off: 403).
    pub listing: bool,
    /// PEM certificate chain for HTTPS (`--tls-cert FILE`, a path in the
    /// guest's file system; needs a TLS build and `--tls-key`).
    pub tls_cert: Option<String>,
    /// PEM private key matching `tls_cert` (`--tls-key FILE`).
    pub tls_key: Option<String>,
    /// HTTPS port (default 443), served beside `port`.
    pub tls_port: u16,
    /// Plain HTTP requests get this status (301 or 308) to the same URL on
    /// HTTPS (`--redirect-https[=308]`; needs `--tls-cert`).
    pub redirect_https: Option<u16>,
    /// `Strict-Transport-Security: max-age=N` on HTTPS responses
    /// (`--hsts N`; needs `--tls-cert`).
    pub hsts: Option<u64>,
    /// ACME: obtain and renew a certificate for this domain
    /// (`--acme-domain`, with `--acme-directory` and `--acme-ca`).
    pub acme: Option<Acme>,
    /// `--help` was given.
    pub help: bool,
}

/// ACME (RFC 8555) settings: the certificate comes from the directory
/// instead of `--tls-cert`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Acme {
    /// The DNS name of the certificate (`--acme-domain`).
    pub domain: String,
    /// The directory URL, `https://...` (`--acme-directory`).
    pub directory: String,
    /// Contact address for the account (`--acme-email`, optional).
    pub email: Option<String>,
    /// PEM roots trusted for the directory's HTTPS (`--acme-ca`).
    pub ca: String,
    /// Where the account key and the certificate are kept (`--acme-state`,
    /// default `/acme`).
    pub state: String,
    /// The DNS server that resolves the directory's host name when DHCP
    /// gave none (`--acme-dns`).
    pub dns: Option<core::net::Ipv4Addr>,
}

/// One redirect rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// A path pattern ([`glob_match`]) matched against the decoded request
    /// path.
    pub from: String,
    /// The `Location`: a path or an absolute URL.
    pub to: String,
    /// 301, 302, 307 or 308.
    pub status: u16,
}

/// Whether `path` matches `pattern`: `*` matches any run of characters
/// (slashes included), `?` one character, everything else itself.
/// `/assets/*` matches everything under `/assets/`; `*.css` every CSS file.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), path.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

impl Config {
    /// The `Cache-Control` for a request path: the first matching rule,
    /// else the global value.
    pub fn cache_control_for(&self, path: &str) -> Option<&str> {
        self.cache_rules
            .iter()
            .find(|(p, _)| glob_match(p, path))
            .map(|(_, v)| v.as_str())
            .or(self.cache_control.as_deref())
    }

    /// The redirect for a request path, if any.
    pub fn redirect_for(&self, path: &str) -> Option<&Redirect> {
        self.redirects.iter().find(|r| glob_match(&r.from, path))
    }

    /// The custom page for an error status, if any.
    pub fn error_page(&self, status: u16) -> Option<&str> {
        self.error_pages
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, p)| p.as_str())
    }
}

fn safe_value(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn is_token(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses `Name: value`.
pub fn parse_header(s: &str) -> Option<(String, String)> {
    let (n, v) = s.split_once(':')?;
    let (n, v) = (n.trim(), v.trim());
    let framing = [
        "content-length",
        "connection",
        "transfer-encoding",
        "date",
        "server",
    ];
    (is_token(n) && safe_value(v) && !framing.iter().any(|f| n.eq_ignore_ascii_case(f)))
        .then(|| (n.to_string(), v.to_string()))
}

/// Parses `PATTERN=VALUE` (a `Cache-Control` rule).
pub fn parse_cache_rule(s: &str) -> Option<(String, String)> {
    let (p, v) = s.split_once('=')?;
    let (p, v) = (p.trim(), v.trim());
    (p.starts_with(['/', '*']) && safe_value(p) && safe_value(v))
        .then(|| (p.to_string(), v.to_string()))
}

/// Parses `FROM TO [STATUS]` (status 301 by default).
pub fn parse_redirect(s: &str) -> Option<Redirect> {
    let mut w = s.split_whitespace();
    let from = w.next()?;
    let to = w.next()?;
    let status = match w.next() {
        Some(c) => c
            .parse()
            .ok()
            .filter(|c| matches!(c, 301 | 302 | 307 | 308))?,
        None => 301,
    };
    (w.next().is_none() && from.starts_with(['/', '*']) && safe_value(to)).then(|| Redirect {
        from: from.to_string(),
        to: to.to_string(),
        status,
    })
}

/// Parses `STATUS=/path.html` (a 4xx or 5xx status, an absolute path).
pub fn parse_error_page(s: &str) -> Option<(u16, String)> {
    let (c, p) = s.split_once('=')?;
    let c: u16 = c.trim().parse().ok().filter(|c| (400..600).contains(c))?;
    let p = p.trim();
    (p.starts_with('/') && !p.ends_with('/') && !p.contains(['\\', '\0']) && safe_value(p))
        .then(|| (c, p.to_string()))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 80,
            root: String::from("/"),
            index: String::from("index.html"),
            data_path: DataPath::default(),
            access_log: true,
            log_level: None,
            limits: Limits::default(),
            header_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            shutdown_timeout_ms: 10_000,
            max_conns: 256,
            backlog: 511,
            workers: None,
            max_ranges: 16,
            cache_control: None,
            headers: Vec::new(),
            cache_rules: Vec::new(),
            redirects: Vec::new(),
            error_pages: Vec::new(),
            listing: false,
            tls_cert: None,
            tls_key: None,
            tls_port: 443,
            redirect_https: None,
            hsts: None,
            acme: None,
            help: false,
        }
    }
}

/// The usage text of the server.
pub const USAGE: &str = "\
usage: httpd [OPTIONS]
  --port N                 TCP port (80)
  --root DIR               document root, absolute (/)
  --index NAME             file served for directories (index.html)
  --data-path P            sendfile | read | mmap (sendfile)
  --access-log on|off      Combined Log Format lines on the console (on)
  --no-access-log          same as --access-log off
  --log-level L            off | error | warn | info | debug | trace
  --max-conns N            simultaneous connections, more get 503 (256)
  --backlog N              listen backlog (511)
  --workers N              event loops, at most one per CPU (one per CPU)
  --header-timeout T       to send a request head: 10s, 500ms, 1m (10s)
  --idle-timeout T         keep-alive idle and send stall limit (30s)
  --shutdown-timeout T     on power-off, time to finish responses (10s)
  --max-request-line N     bytes, longer -> 414 (8192)
  --max-header-bytes N     bytes, more -> 431 (16384)
  --max-headers N          header fields, more -> 431 (64)
  --max-body N             request body bytes read and discarded, more -> 413 (65536)
  --max-ranges N           ranges per request honoured (16)
  --cache-control VALUE    Cache-Control for file responses (none)
  --cache-rule 'P=VALUE'   Cache-Control for paths matching P (*, ?), repeatable
  --header 'Name: value'   extra field on every response, repeatable
  --redirect 'FROM TO [S]' redirect paths matching FROM to TO (301, 302, 307, 308)
  --error-page S=/PATH     serve the file PATH as the body of status S (404=/404.html)
  --listing on|off         list directories that have no index file (off: 403)
  --help                   this text";

/// The HTTPS options (in TLS builds: `cargo uk build httpd --tls`).
pub const USAGE_TLS: &str = "\
  --tls-cert FILE          PEM certificate chain: HTTPS on --tls-port
  --tls-key FILE           PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)
  --tls-port N             HTTPS port (443)
  --redirect-https[=308]   answer plain HTTP with 301 (or 308) to https://HOST[:PORT]/PATH
  --hsts SECONDS           Strict-Transport-Security: max-age=SECONDS on HTTPS responses
  --acme-domain NAME       get (and renew) a certificate for NAME by ACME HTTP-01
  --acme-directory URL     the ACME directory (https://...)
  --acme-email ADDR        account contact (optional)
  --acme-ca FILE           PEM root(s) trusted for the directory's HTTPS
  --acme-state DIR         account key and certificate kept here (/acme)
  --acme-dns IP            DNS server for the directory's name (DHCP's)";

/// Parses a duration: `10s`, `500ms`, `2m`, or a plain number of seconds.
/// Returns milliseconds; zero is refused.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1000)
    };
    let n: u64 = num.parse().ok()?;
    n.checked_mul(mult).filter(|&ms| ms > 0)
}

fn parse_root(s: &str) -> Option<String> {
    if !s.starts_with('/') || s.contains(['\\', '\0']) {
        return None;
    }
    let mut out = String::new();
    for seg in s.split('/').filter(|seg| !seg.is_empty()) {
        if seg == "." || seg == ".." {
            return None;
        }
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

fn valid_index(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0'])
}

/// The value of `flag`: the inline one (`--flag=value`) or the next argument.
#[inline(never)]
fn take_value<'a, S: AsRef<str>>(
    args: &'a [S],
    i: &mut usize,
    inline: &mut Option<&'a str>,
    flag: &str,
) -> Result<&'a str, String> {
    if let Some(v) = inline.take() {
        return Ok(v);
    }
    let v = args
        .get(*i)
        .map(AsRef::as_ref)
        .ok_or_else(|| format!("{flag} needs a value"))?;
    *i += 1;
    Ok(v)
}

#[inline(never)]
fn bad_value(flag: &str, v: &str, what: &str) -> String {
    format!("{flag}: bad {what} '{v}'")
}

/// A number above zero.
#[inline(never)]
fn positive_number(flag: &str, v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| bad_value(flag, v, "number"))
}

/// Parses the server's arguments (as given after `--` on the kernel command
/// line). `--flag value` and `--flag=value` are both accepted.
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Config, String> {
    let mut c = Config::default();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_ref();
        i += 1;
        let (flag, mut inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (arg, None),
        };
        // The helpers are functions kept out of line: inlined at each of
        // the flags they cost about 4 KiB of the image.
        let mut value = || take_value(args, &mut i, &mut inline, flag);
        let bad = |v: &str, what: &str| bad_value(flag, v, what);
        let number = |v: &str| positive_number(flag, v);
        match flag {
            "--port" | "-p" => {
                let v = value()?;
                c.port = v
                    .parse()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| bad(v, "port"))?;
            }
            "--root" => {
                let v = value()?;
                c.root = parse_root(v).ok_or_else(|| bad(v, "absolute directory"))?;
            }
            "--index" => {
                let v = value()?;
                if !valid_index(v) {
                    return Err(bad(v, "file name"));
                }
                c.index = v.to_string();
            }
            "--data-path" => {
                let v = value()?;
                c.data_path = match v {
                    "sendfile" => DataPath::Sendfile,
                    "read" => DataPath::Read,
                    "mmap" => DataPath::Mmap,
                    _ => return Err(bad(v, "data path (sendfile, read, mmap)")),
                };
            }
            "--access-log" => {
                let v = value()?;
                c.access_log = match v {
                    "on" | "yes" | "true" | "1" => true,
                    "off" | "no" | "false" | "0" => false,
                    _ => return Err(bad(v, "switch (on, off)")),
                };
            }
            "--no-access-log" => c.access_log = false,
            "--listing" => {
                let v = value()?;
                c.listing = match v {
                    "on" | "yes" | "true" | "1" => true,
                    "off" | "no" | "false" | "0" => false,
                    _ => return Err(bad(v, "switch (on, off)")),
                };
            }
            "--log-level" => {
                let v = value()?;
                c.log_level = Some(match v {
                    "off" => LogLevel::Off,
                    "error" => LogLevel::Error,
                    "warn" => LogLevel::Warn,
                    "info" => LogLevel::Info,
                    "debug" => LogLevel::Debug,
                    "trace" => LogLevel::Trace,
                    _ => return Err(bad(v, "level")),
                });
            }
            "--max-conns" => c.max_conns = number(value()?)?,
            "--backlog" => c.backlog = number(value()?)?,
            "--workers" => c.workers = Some(number(value()?)?),
            "--header-timeout" => {
                let v = value()?;
                c.header_timeout_ms = parse_duration_ms(v).ok_or_else(|| bad(v, "duration"))?;
            }
            "--idle-timeout" => {
                let v = value()?;
                c.idle_timeout_ms = parse_duration_ms(v).ok_or_else(|| bad(v, "duration"))?;
            }
            "--shutdown-timeout" => {
                let v = value()?;
                c.shutdown_timeout_ms = parse_duration_ms(v).ok_or_else(|| bad(v, "duration"))?;
            }
            "--max-request-line" => c.limits.max_request_line = number(value()?)?,
            "--max-header-bytes" => c.limits.max_header_bytes = number(value()?)?,
            "--max-headers" => c.limits.max_headers = number(value()?)?,
            "--max-body" => {
                let v = value()?;
                c.limits.max_body = v.parse().map_err(|_| bad(v, "number"))?;
            }
            "--max-ranges" => c.max_ranges = number(value()?)?,
            "--cache-control" => {
                let v = value()?;
                if v.bytes().any(|b| b < 0x20 || b == 0x7f) {
                    return Err(bad(v, "header value"));
                }
                c.cache_control = Some(v.to_string());
            }
            "--header" => {
                let v = value()?;
                c.headers
                    .push(parse_header(v).ok_or_else(|| bad(v, "header ('Name: value')"))?);
            }
            "--cache-rule" => {
                let v = value()?;
                c.cache_rules
                    .push(parse_cache_rule(v).ok_or_else(|| bad(v, "rule ('PATTERN=VALUE')"))?);
            }
            "--redirect" => {
                let v = value()?;
                c.redirects
                    .push(parse_redirect(v).ok_or_else(|| bad(v, "redirect ('FROM TO [301]')"))?);
            }
            "--error-page" => {
                let v = value()?;
                c.error_pages.push(
                    parse_error_page(v).ok_or_else(|| bad(v, "error page ('404=/404.html')"))?,
                );
            }
            #[cfg(feature = "tls")]
            "--tls-cert" => c.tls_cert = Some(value()?.to_string()),
            #[cfg(feature = "tls")]
            "--tls-key" => c.tls_key = Some(value()?.to_string()),
            #[cfg(feature = "tls")]
            "--tls-port" => {
                let v = value()?;
                c.tls_port = v
                    .parse()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| bad(v, "port"))?;
            }
            #[cfg(feature = "tls")]
            "--redirect-https" => {
                c.redirect_https = Some(match inline.take() {
                    None => 301,
                    Some("301") => 301,
                    Some("308") => 308,
                    Some(v) => return Err(bad(v, "redirect status (301, 308)")),
                });
            }
            #[cfg(feature = "tls")]
            "--hsts" => {
                let v = value()?;
                // Browsers cap it (Chrome: one year); two years is plenty.
                c.hsts = Some(
                    v.parse::<u64>()
                        .ok()
                        .filter(|&s| s <= 2 * 365 * 86_400)
                        .ok_or_else(|| bad(v, "max-age (seconds, at most two years)"))?,
                );
            }
            #[cfg(feature = "tls")]
            "--acme-domain" => c.acme.get_or_insert_default().domain = value()?.to_string(),
            #[cfg(feature = "tls")]
            "--acme-directory" => {
                c.acme.get_or_insert_default().directory = value()?.to_string();
            }
            #[cfg(feature = "tls")]
            "--acme-email" => c.acme.get_or_insert_default().email = Some(value()?.to_string()),
            #[cfg(feature = "tls")]
            "--acme-ca" => c.acme.get_or_insert_default().ca = value()?.to_string(),
            #[cfg(feature = "tls")]
            "--acme-dns" => {
                let v = value()?;
                c.acme.get_or_insert_default().dns =
                    Some(v.parse().map_err(|_| bad(v, "IPv4 address"))?);
            }
            #[cfg(feature = "tls")]
            "--acme-state" => {
                let v = value()?;
                c.acme.get_or_insert_default().state =
                    parse_root(v).ok_or_else(|| bad(v, "absolute directory"))?;
            }
            "--help" | "-h" => c.help = true,
            _ => return Err(format!("unknown argument '{arg}'")),
        }
        if inline.is_some() {
            return Err(format!("{flag} takes no value"));
        }
    }
    #[cfg(feature = "tls")]
    check_tls(&c)?;
    #[cfg(feature = "tls")]
    if let Some(a) = c.acme.as_mut().filter(|a| a.state.is_empty()) {
        a.state = String::from("/acme");
    }
    Ok(c)
}

/// The HTTPS options go together.
#[cfg(feature = "tls")]
fn check_tls(c: &Config) -> Result<(), String> {
    match (&c.tls_cert, &c.tls_key) {
        (Some(_), None) => return Err("--tls-cert needs --tls-key".into()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
        _ => {}
    }
    if (c.tls_cert.is_some() || c.acme.is_some()) && c.tls_port == c.port {
        return Err(format!("--tls-port {} is also the HTTP port", c.tls_port));
    }
    if c.tls_cert.is_none() && c.acme.is_none() {
        if c.redirect_https.is_some() {
            return Err("--redirect-https needs --tls-cert and --tls-key, or --acme-domain".into());
        }
        if c.hsts.is_some() {
            return Err("--hsts needs --tls-cert and --tls-key, or --acme-domain".into());
        }
    }
    if let Some(a) = &c.acme {
        check_acme(a, c.tls_cert.is_some())?;
    }
    Ok(())
}

/// The ACME options go together: a valid domain, an `https://` directory,
/// the roots to trust for it, and no `--tls-cert` beside them.
#[cfg(feature = "tls")]
fn check_acme(a: &Acme, tls_cert: bool) -> Result<(), String> {
    if tls_cert {
        return Err("--tls-cert and --acme-domain exclude each other".into());
    }
    if a.domain.is_empty() {
        return Err("the --acme-* options need --acme-domain".into());
    }
    if !crate::acme::valid_domain(&a.domain) {
        return Err(format!("--acme-domain: bad domain name '{}'", a.domain));
    }
    if a.directory.is_empty() {
        return Err("--acme-domain needs --acme-directory URL".into());
    }
    if crate::acme::parse_url(&a.directory).is_none() {
        return Err(format!(
            "--acme-directory: bad URL '{}' (https://host[:port]/path)",
            a.directory
        ));
    }
    if a.ca.is_empty() {
        return Err(
            "--acme-domain needs --acme-ca FILE (PEM roots trusted for the directory)".into(),
        );
    }
    if let Some(e) = &a.email {
        let ok = e.split_once('@').is_some_and(|(u, d)| {
            !u.is_empty() && !d.is_empty() && !e.contains(['\\', '"', ' ', ',']) && safe_value(e)
        });
        if !ok {
            return Err(format!("--acme-email: bad address '{e}'"));
        }
    }
    Ok(())
}

/// The file-system path of `path` under the document root `root` (as
/// normalized by [`parse_args`]): `/www` + `/a/b.txt` → `/www/a/b.txt`. A
/// trailing slash is dropped. An error when memory runs out.
pub fn fs_path(root: &str, path: &SafePath) -> Result<String, crate::NoMemory> {
    let root = root.trim_end_matches('/');
    let mut out = crate::oom::Out::with_capacity(root.len() + path.as_str().len() + 1);
    out.push_str(root);
    for seg in path.segments() {
        out.push('/');
        out.push_str(seg);
    }
    if out.s.is_empty() {
        out.push('/');
    }
    out.finish()
}
