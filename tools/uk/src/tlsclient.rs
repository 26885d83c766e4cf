//! The TLS side of `bench tls`: its certificate ([`make_certs`], made with
//! `rcgen`) and its handshake load generator, the `tls-hs` mode of
//! `uk __netclient` ([`handshakes`]), built on `rustls` with the `ring`
//! provider.
//!
//! `tls-hs addr=A:P ca=FILE group=x25519|p256 workers=N secs=S max=M
//! path=F`: N loops, each of a new TCP connection, a full TLS 1.3 handshake
//! (the client offers only `group` and only TLS_AES_128_GCM_SHA256, never
//! resumes a session, and verifies the server's chain against the CA in
//! FILE for the name `localhost`), a `GET F` with `Connection: close`, and
//! the response read to the end and checked ([`check_response`]: a 200 whose
//! body has its Content-Length). Only such checked exchanges count. It stops
//! after S seconds or M exchanges started. Prints `tls-hs workers= ok=
//! fails= ns= p50_us= p99_us= version= suite= group=` (what the last
//! completed handshake negotiated) and, when anything failed, `tls-hs-error
//! <the first error>`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::crypto::{CryptoProvider, ring as rp};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The server name the certificate holds and the client asks for.
pub const SERVER_NAME: &str = "localhost";

/// The key exchange group a handshake measurement forces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// ECDHE on NIST P-256 (`secp256r1`).
    P256,
    /// X25519.
    X25519,
}

impl Group {
    /// Both, in table order.
    pub const ALL: [Group; 2] = [Group::P256, Group::X25519];

    /// The `group=` value.
    pub fn arg(self) -> &'static str {
        match self {
            Group::P256 => "p256",
            Group::X25519 => "x25519",
        }
    }

    /// The name in tables: `ECDHE P-256`, `X25519`.
    pub fn label(self) -> &'static str {
        match self {
            Group::P256 => "ECDHE P-256",
            Group::X25519 => "X25519",
        }
    }

    /// The name OpenSSL's `Groups` setting uses.
    pub fn openssl_name(self) -> &'static str {
        match self {
            Group::P256 => "P-256",
            Group::X25519 => "X25519",
        }
    }

    /// Parses a `group=` value.
    pub fn parse(s: &str) -> Option<Group> {
        match s {
            "p256" => Some(Group::P256),
            "x25519" => Some(Group::X25519),
            _ => None,
        }
    }

    fn kx(self) -> &'static dyn rustls::crypto::SupportedKxGroup {
        match self {
            Group::P256 => rp::kx_group::SECP256R1,
            Group::X25519 => rp::kx_group::X25519,
        }
    }
}

/// The certificates of a benchmark run, PEM.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA's certificate (the client trusts it).
    pub ca_pem: String,
    /// The server's certificate (ECDSA P-256, signed by the CA, for
    /// `localhost` and the guest's address).
    pub cert_pem: String,
    /// The server's private key (PKCS#8).
    pub key_pem: String,
}

/// `(year, month, day)` of a day counted from 1970-01-01 (the civil
/// calendar, proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (i32, u8, u8) {
    // Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

/// A CA and a server certificate signed by it, both ECDSA P-256 with
/// SHA-256, valid from yesterday for 30 days (by the host's clock; the
/// guests read theirs from the same host through the RTC). The server's
/// names: `localhost` and `ip`.
pub fn make_certs(ip: std::net::IpAddr) -> Result<Certs, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
    };
    fn e(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
        move |err| format!("certificate ({what}): {err}")
    }
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|err| format!("the clock is before 1970: {err}"))?
        .as_secs() as i64
        / 86_400;
    let date = |days: i64| {
        let (y, m, d) = civil_from_days(days);
        rcgen::date_time_ymd(y, m, d)
    };
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(e("CA key"))?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "uk bench tls CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = date(today - 1);
    ca.not_after = date(today + 30);
    let ca_cert = ca.self_signed(&ca_key).map_err(e("CA"))?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(e("server key"))?;
    let mut p = CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(e("names"))?;
    p.subject_alt_names.push(SanType::IpAddress(ip));
    p.distinguished_name.push(DnType::CommonName, SERVER_NAME);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = date(today - 1);
    p.not_after = date(today + 30);
    let cert = p.signed_by(&key, &issuer).map_err(e("server"))?;
    Ok(Certs {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The client configuration of a handshake measurement: TLS 1.3 only,
/// TLS_AES_128_GCM_SHA256 only, `group` only, no resumption, ALPN
/// `http/1.1`, the CA in `ca_pem` as the one trust anchor.
pub fn client_config(ca_pem: &[u8], group: Group) -> Result<Arc<ClientConfig>, String> {
    let provider = CryptoProvider {
        cipher_suites: vec![rp::cipher_suite::TLS13_AES_128_GCM_SHA256],
        kx_groups: vec![group.kx()],
        ..rp::default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        let c = c.map_err(|e| format!("CA file: {e:?}"))?;
        roots
            .add(c)
            .map_err(|e| format!("CA certificate rejected: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in the CA file".into());
    }
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The end of the headers in `buf` (the index after `\r\n\r\n`), if
/// they are complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Checks a response head (without the blank line): status 200 and a
/// `Content-Length`, which it returns.
pub fn parse_head(head: &[u8]) -> Result<usize, String> {
    let head = std::str::from_utf8(head).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut words = status.split_whitespace();
    if !words.next().is_some_and(|v| v.starts_with("HTTP/1.")) || words.next() != Some("200") {
        return Err(format!("status '{status}'"));
    }
    lines
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .ok_or_else(|| "no Content-Length".into())
}

/// Checks an HTTP/1.1 response read to the end: status 200, a
/// `Content-Length`, and exactly that many body bytes. Returns the body
/// length.
pub fn check_response(resp: &[u8]) -> Result<usize, String> {
    let end = head_end(resp).ok_or_else(|| format!("no end of headers in {} bytes", resp.len()))?;
    let len = parse_head(&resp[..end - 4])?;
    let body = resp.len() - end;
    if body != len {
        return Err(format!("body of {body} bytes, Content-Length {len}"));
    }
    Ok(len)
}

/// What a completed handshake negotiated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Negotiated {
    /// `TLSv1_3`.
    pub version: String,
    /// `TLS13_AES_128_GCM_SHA256`.
    pub suite: String,
    /// `secp256r1`, `X25519`.
    pub group: String,
}

/// One exchange: connect, handshake, GET, read to the end, check.
fn exchange(
    addr: &SocketAddr,
    cfg: &Arc<ClientConfig>,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> Result<Negotiated, String> {
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    let mut sock = crate::netclient::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(req)
        .map_err(|e| format!("handshake/request: {e}"))?;
    buf.clear();
    match tls.read_to_end(buf) {
        Ok(_) => {}
        // A server that closes without close_notify: the body check decides.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(format!("response: {e}")),
    }
    check_response(buf)?;
    Ok(negotiated(&conn))
}

fn negotiated(conn: &rustls::ClientConnection) -> Negotiated {
    Negotiated {
        version: conn
            .protocol_version()
            .map_or_else(|| "?".into(), |v| format!("{v:?}")),
        suite: conn
            .negotiated_cipher_suite()
            .map_or_else(|| "?".into(), |s| format!("{:?}", s.suite())),
        group: conn
            .negotiated_key_exchange_group()
            .map_or_else(|| "?".into(), |g| format!("{:?}", g.name())),
    }
}

/// `tls-hs`: see the module documentation.
pub fn handshakes(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    path: &str,
    workers: u64,
    secs: u64,
    max: u64,
) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n");
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let started = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let last = Arc::new(Mutex::new(Negotiated::default()));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (started, first_error, last) = (started.clone(), first_error.clone(), last.clone());
            let (cfg, req) = (cfg.clone(), req.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut fails = 0u64;
                let mut buf = Vec::new();
                while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < max {
                    let t = Instant::now();
                    match exchange(&addr, &cfg, req.as_bytes(), &mut buf) {
                        Ok(n) => {
                            lat.push(t.elapsed().as_micros() as u64);
                            if let Ok(mut l) = last.lock() {
                                *l = n;
                            }
                        }
                        Err(e) => {
                            fails += 1;
                            if let Ok(mut f) = first_error.lock() {
                                f.get_or_insert(e);
                            }
                            // No busy loop against a refusing guest.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                (lat, fails)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut fails = 0;
    for h in handles {
        let (l, f) = h.join().unwrap_or_default();
        lat.extend(l);
        fails += f;
    }
    let ns = start.elapsed().as_nanos();
    lat.sort_unstable();
    let n = last.lock().map(|l| l.clone()).unwrap_or_default();
    let mut out = format!(
        "tls-hs workers={workers} ok={} fails={fails} ns={ns} p50_us={} p99_us={} version={} \
         suite={} group={}",
        lat.len(),
        crate::netclient::quantile(&lat, 0.5),
        crate::netclient::quantile(&lat, 0.99),
        n.version,
        n.suite,
        n.group
    );
    if let Some(e) = first_error.lock().ok().and_then(|mut f| f.take()) {
        out.push_str(&format!("\ntls-hs-error {}", e.replace('\n', " ")));
    }
    out
}

/// A TLS connection with its handshake done (the first request also
/// fetched `warm`, untimed).
type Tls = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

fn open(addr: &SocketAddr, cfg: &Arc<ClientConfig>) -> Result<Tls, String> {
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    let sock = crate::netclient::connect(addr).map_err(|e| format!("connect: {e}"))?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// Reads one response from a kept-alive connection: its head, then the
/// body of its Content-Length, counting body bytes into `bytes` as they
/// come. Stops early (`Ok(false)`) once `deadline` passes mid-body.
fn read_response(
    tls: &mut Tls,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    bytes: &mut u64,
    deadline: Instant,
) -> Result<bool, String> {
    buf.clear();
    let end = loop {
        if let Some(e) = head_end(buf) {
            break e;
        }
        if buf.len() > 64 << 10 {
            return Err("response head over 64 KiB".into());
        }
        match tls.read(chunk) {
            Ok(0) => return Err(format!("closed after {} bytes of a response", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("response: {e}")),
        }
    };
    let len = parse_head(&buf[..end - 4])? as u64;
    let mut got = (buf.len() - end) as u64;
    if got > len {
        return Err(format!("{} bytes after the body", got - len));
    }
    *bytes += got;
    while got < len {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        let want = chunk.len().min((len - got) as usize);
        match tls.read(&mut chunk[..want]) {
            Ok(0) => return Err(format!("closed after {got} of {len} body bytes")),
            Ok(n) => {
                got += n as u64;
                *bytes += n as u64;
            }
            Err(e) => return Err(format!("body: {e}")),
        }
    }
    Ok(true)
}

/// `tls-ka`: `conns` kept-alive TLS connections, opened (handshake and one
/// untimed `GET warm`) before the clock starts; then each sends `GET path`
/// and reads the response, again and again, for `secs` seconds. Body bytes
/// count as they arrive (a response cut by the deadline counts its bytes,
/// not as a request). Prints `tls-ka conns= requests= bytes= ns= fails=
/// p50_us= p99_us= version= suite= group=` and `tls-hs-error` as
/// [`handshakes`] does.
pub fn keepalive(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    path: &str,
    warm: &str,
    conns: u64,
    secs: u64,
) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n");
    let warm_req = format!("GET {warm} HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n");
    let barrier = Arc::new(std::sync::Barrier::new(conns as usize + 1));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let last = Arc::new(Mutex::new(Negotiated::default()));
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let (barrier, first_error, last) = (barrier.clone(), first_error.clone(), last.clone());
            let (cfg, req, warm_req) = (cfg.clone(), req.clone(), warm_req.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut bytes = 0u64;
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 << 10];
                let fail = |e: String| {
                    if let Ok(mut f) = first_error.lock() {
                        f.get_or_insert(e);
                    }
                    1u64
                };
                // Open and warm before the clock: a failure here still
                // waits at the barrier, so the others are not held.
                let opened = open(&addr, &cfg).and_then(|mut tls| {
                    tls.write_all(warm_req.as_bytes())
                        .map_err(|e| format!("handshake/request: {e}"))?;
                    let mut ignored = 0;
                    let far = Instant::now() + Duration::from_secs(3600);
                    read_response(&mut tls, &mut buf, &mut chunk, &mut ignored, far)?;
                    if let Ok(mut l) = last.lock() {
                        *l = negotiated(&tls.conn);
                    }
                    Ok(tls)
                });
                barrier.wait();
                let mut tls = match opened {
                    Ok(t) => t,
                    Err(e) => return (lat, bytes, fail(e)),
                };
                let deadline = Instant::now() + Duration::from_secs(secs);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if let Err(e) = tls.write_all(req.as_bytes()) {
                        return (lat, bytes, fail(format!("request: {e}")));
                    }
                    match read_response(&mut tls, &mut buf, &mut chunk, &mut bytes, deadline) {
                        Ok(true) => lat.push(t.elapsed().as_micros() as u64),
                        Ok(false) => break,
                        Err(e) => return (lat, bytes, fail(e)),
                    }
                }
                (lat, bytes, 0)
            })
        })
        .collect();
    // Everyone has connected (or failed): the clock starts. It is read
    // before this thread releases the barrier, so every connection's
    // deadline (taken after it) is at least `secs` past it.
    let start = Instant::now();
    barrier.wait();
    let mut lat = Vec::new();
    let (mut bytes, mut fails) = (0, 0);
    for h in handles {
        let (l, b, f) = h.join().unwrap_or_default();
        lat.extend(l);
        bytes += b;
        fails += f;
    }
    let ns = start.elapsed().as_nanos();
    lat.sort_unstable();
    let n = last.lock().map(|l| l.clone()).unwrap_or_default();
    let mut out = format!(
        "tls-ka conns={conns} requests={} bytes={bytes} ns={ns} fails={fails} p50_us={} \
         p99_us={} version={} suite={} group={}",
        lat.len(),
        crate::netclient::quantile(&lat, 0.5),
        crate::netclient::quantile(&lat, 0.99),
        n.version,
        n.suite,
        n.group
    );
    if let Some(e) = first_error.lock().ok().and_then(|mut f| f.take()) {
        out.push_str(&format!("\ntls-hs-error {}", e.replace('\n', " ")));
    }
    out
}

/// The parsed `tls-ka` result.
#[derive(Debug, Clone, PartialEq)]
pub struct KaResult {
    /// Connections.
    pub conns: u64,
    /// Complete responses.
    pub requests: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// The timed part's wall time.
    pub elapsed: Duration,
    /// Connections that failed.
    pub fails: u64,
    /// Median time of one request.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// What the last connection negotiated.
    pub negotiated: Negotiated,
    /// The first error, if any failed.
    pub error: Option<String>,
}

impl KaResult {
    /// Complete responses per second.
    pub fn per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Body bytes (10^6) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Why the result shows a stalled guest: (almost) no bytes, or more
    /// than half the connections failed.
    pub fn stall_reason(&self) -> Option<String> {
        let why = self.error.as_deref().unwrap_or("no error text");
        if self.bytes < 1024 {
            Some(format!(
                "no data moved ({} connections failed: {why})",
                self.fails
            ))
        } else if self.fails * 2 > self.conns {
            Some(format!(
                "{} of {} connections failed ({why})",
                self.fails, self.conns
            ))
        } else {
            None
        }
    }
}

/// Parses the output of `tls-ka`.
pub fn parse_ka(out: &str) -> Option<KaResult> {
    let line = out.lines().find(|l| l.starts_with("tls-ka "))?;
    let kv = crate::parse_kv(line);
    Some(KaResult {
        conns: *kv.get("conns")?,
        requests: *kv.get("requests")?,
        bytes: *kv.get("bytes")?,
        elapsed: Duration::from_nanos(*kv.get("ns")?),
        fails: *kv.get("fails")?,
        p50: Duration::from_micros(*kv.get("p50_us")?),
        p99: Duration::from_micros(*kv.get("p99_us")?),
        negotiated: parse_negotiated(line),
        error: first_error(out),
    })
}

fn parse_negotiated(line: &str) -> Negotiated {
    let word = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or("?")
            .to_string()
    };
    Negotiated {
        version: word("version"),
        suite: word("suite"),
        group: word("group"),
    }
}

fn first_error(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("tls-hs-error "))
        .map(String::from)
}

/// The parsed `tls-hs` result.
#[derive(Debug, Clone, PartialEq)]
pub struct HsResult {
    /// Checked exchanges.
    pub ok: u64,
    /// Failed ones.
    pub fails: u64,
    /// The measurement's wall time.
    pub elapsed: Duration,
    /// Median time of one exchange (connect to checked response).
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// What the last handshake negotiated.
    pub negotiated: Negotiated,
    /// The first error, if any failed.
    pub error: Option<String>,
}

impl HsResult {
    /// Completed (checked) handshakes per second.
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Why the result shows a stalled guest: nothing completed, or more
    /// failures than half the completed exchanges.
    pub fn stall_reason(&self) -> Option<String> {
        let why = self.error.as_deref().unwrap_or("no error text");
        if self.ok == 0 {
            Some(format!(
                "no handshake completed ({} failed: {why})",
                self.fails
            ))
        } else if self.fails > self.ok / 2 {
            Some(format!(
                "mostly failures: {} failed, {} completed ({why})",
                self.fails, self.ok
            ))
        } else {
            None
        }
    }
}

/// Parses the output of `tls-hs`.
pub fn parse_hs(out: &str) -> Option<HsResult> {
    let line = out.lines().find(|l| l.starts_with("tls-hs "))?;
    let kv = crate::parse_kv(line);
    Some(HsResult {
        ok: *kv.get("ok")?,
        fails: *kv.get("fails")?,
        elapsed: Duration::from_nanos(*kv.get("ns")?),
        p50: Duration::from_micros(*kv.get("p50_us")?),
        p99: Duration::from_micros(*kv.get("p99_us")?),
        negotiated: parse_negotiated(line),
        error: first_error(out),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, TcpListener};

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_790), (2026, 12, 3));
        assert_eq!(civil_from_days(20_818), (2026, 12, 31));
        assert_eq!(civil_from_days(20_819), (2027, 1, 1));
    }

    #[test]
    fn groups() {
        for g in Group::ALL {
            assert_eq!(Group::parse(g.arg()), Some(g));
        }
        assert_eq!(Group::parse("p384"), None);
        assert_eq!(Group::P256.openssl_name(), "P-256");
    }

    #[test]
    fn responses_are_checked() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        assert_eq!(check_response(ok), Ok(3));
        let lower = b"HTTP/1.1 200 OK\r\ncontent-length:0\r\n\r\n";
        assert_eq!(check_response(lower), Ok(0));
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabc";
        assert!(
            check_response(short)
                .unwrap_err()
                .contains("body of 3 bytes")
        );
        let notfound = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(check_response(notfound).unwrap_err().contains("404"));
        assert!(check_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(check_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3").is_err());
        assert!(check_response(b"").is_err());
        assert!(check_response(b"XTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").is_err());
    }

    #[test]
    fn parses_results() {
        let out = "tls-hs workers=8 ok=1200 fails=1 ns=5000000000 p50_us=30000 p99_us=90000 \
                   version=TLSv1_3 suite=TLS13_AES_128_GCM_SHA256 group=secp256r1\n\
                   tls-hs-error connect: refused\n";
        let r = parse_hs(out).unwrap();
        assert_eq!((r.ok, r.fails), (1200, 1));
        assert_eq!(r.per_sec(), 240.0);
        assert_eq!(r.p50, Duration::from_millis(30));
        assert_eq!(r.negotiated.suite, "TLS13_AES_128_GCM_SHA256");
        assert_eq!(r.negotiated.group, "secp256r1");
        assert_eq!(r.negotiated.version, "TLSv1_3");
        assert_eq!(r.error.as_deref(), Some("connect: refused"));
        assert_eq!(r.stall_reason(), None);
        let bad = HsResult {
            ok: 10,
            fails: 6,
            ..r.clone()
        };
        assert!(bad.stall_reason().unwrap().contains("mostly failures"));
        let none = HsResult { ok: 0, ..r };
        assert!(
            none.stall_reason()
                .unwrap()
                .contains("no handshake completed")
        );
        assert!(parse_hs("garbage").is_none());
        assert!(parse_hs("tls-hs ok=1").is_none());
        let ka = parse_ka(
            "tls-ka conns=64 requests=5000 bytes=5120000 ns=2000000000 fails=0 p50_us=20 \
             p99_us=90 version=TLSv1_3 suite=TLS13_AES_128_GCM_SHA256 group=X25519",
        )
        .unwrap();
        assert_eq!(ka.per_sec(), 2500.0);
        assert_eq!(ka.mb_per_sec(), 2.56);
        assert_eq!(ka.negotiated.group, "X25519");
        assert_eq!(ka.error, None);
        assert_eq!(ka.stall_reason(), None);
        let half = KaResult {
            fails: 33,
            ..ka.clone()
        };
        assert!(half.stall_reason().unwrap().contains("33 of 64"));
        let none = KaResult { bytes: 0, ..ka };
        assert!(none.stall_reason().unwrap().contains("no data moved"));
        assert!(parse_ka("tls-ka conns=1").is_none());
    }

    /// A local rustls server with the generated certificate: the client
    /// completes handshakes with the forced group and suite, and counts a
    /// wrong response as a failure.
    #[test]
    fn handshakes_against_a_local_server() {
        let certs = make_certs(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        let chain: Vec<_> = CertificateDer::pem_slice_iter(certs.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).unwrap();
        let server = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(rp::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let server = server.clone();
                std::thread::spawn(move || {
                    let mut conn = rustls::ServerConnection::new(server).unwrap();
                    let mut tls = rustls::Stream::new(&mut conn, &mut s);
                    let mut req = Vec::new();
                    let mut b = [0u8; 1024];
                    loop {
                        while !req.ends_with(b"\r\n\r\n") {
                            match tls.read(&mut b) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => req.extend_from_slice(&b[..n]),
                            }
                        }
                        let close = req.windows(17).any(|w| w == b"Connection: close");
                        let resp: Vec<u8> = if req.starts_with(b"GET /ok ") {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec()
                        } else if req.starts_with(b"GET /big ") {
                            let mut r =
                                b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
                            r.resize(r.len() + 100_000, 7);
                            r
                        } else {
                            // A body shorter than its Content-Length, then the end.
                            let _ =
                                tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort");
                            tls.conn.send_close_notify();
                            let _ = tls.flush();
                            return;
                        };
                        req.clear();
                        if tls.write_all(&resp).is_err() {
                            return;
                        }
                        if close {
                            tls.conn.send_close_notify();
                            let _ = tls.flush();
                            return;
                        }
                    }
                });
            }
        });
        for g in Group::ALL {
            let cfg = client_config(certs.ca_pem.as_bytes(), g).unwrap();
            let r = parse_hs(&handshakes(addr, cfg, "/ok", 2, 5, 6)).unwrap();
            assert_eq!((r.ok, r.fails), (6, 0), "{r:?}");
            assert_eq!(r.negotiated.version, "TLSv1_3");
            assert_eq!(r.negotiated.suite, "TLS13_AES_128_GCM_SHA256");
            let want = if g == Group::P256 {
                "secp256r1"
            } else {
                "X25519"
            };
            assert_eq!(r.negotiated.group, want);
        }
        let cfg = client_config(certs.ca_pem.as_bytes(), Group::X25519).unwrap();
        let r = parse_hs(&handshakes(addr, cfg, "/short", 1, 5, 2)).unwrap();
        assert_eq!((r.ok, r.fails), (0, 2));
        assert!(r.error.unwrap().contains("body of 5 bytes"));
        // Another CA: the chain does not verify.
        let other = make_certs(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        let cfg = client_config(other.ca_pem.as_bytes(), Group::X25519).unwrap();
        let r = parse_hs(&handshakes(addr, cfg, "/ok", 1, 5, 1)).unwrap();
        assert_eq!((r.ok, r.fails), (0, 1));
        assert!(client_config(b"not pem", Group::P256).is_err());

        // Kept alive: 3 connections for 1 s, every response complete.
        let cfg = client_config(certs.ca_pem.as_bytes(), Group::P256).unwrap();
        let r = parse_ka(&keepalive(addr, cfg.clone(), "/big", "/ok", 3, 1)).unwrap();
        assert_eq!((r.conns, r.fails), (3, 0), "{r:?}");
        assert!(r.requests > 3, "{r:?}");
        assert!(r.bytes >= r.requests * 100_000, "{r:?}");
        assert!(r.elapsed >= Duration::from_secs(1));
        assert_eq!(r.negotiated.group, "secp256r1");
        assert_eq!(r.stall_reason(), None);
        // A short body fails its connection.
        let r = parse_ka(&keepalive(addr, cfg, "/short", "/ok", 2, 1)).unwrap();
        assert_eq!((r.requests, r.fails), (0, 2), "{r:?}");
        assert!(r.error.is_some());
        assert!(r.stall_reason().is_some());
    }
}
