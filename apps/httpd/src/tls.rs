//! HTTPS (feature `tls`): rustls 0.23 (no_std) with the ring provider.
//!
//! - [`load`] reads the PEM certificate chain and key from the guest's file
//!   system and builds the server configuration: TLS 1.3 and 1.2, ALPN
//!   `http/1.1` (or `http/1.0`). It refuses a key that does not match the certificate and a
//!   certificate outside its validity period (by the kernel's wall clock,
//!   read from the CMOS RTC at boot).
//! - [`TlsConn`] is one connection's record layer over a non-blocking
//!   socket, on rustls' unbuffered API (the buffered `ServerConnection`
//!   needs std): [`TlsConn::read`] and [`TlsConn::write`] behave like
//!   `read`/`write` on the socket, returning `EAGAIN` when the socket is.
//!   Ciphertext waiting to go out stays in the connection
//!   ([`TlsConn::wants_write`]) until the socket takes it.
//! - Randomness for ring and rustls: `getrandom`'s custom backend on
//!   RDSEED/RDRAND (`unikernel::arch::rand`); with neither, [`load`] fails
//!   with a clear error instead of serving with predictable keys.
//!
//! - Resumption: TLS 1.3 and 1.2 session tickets sealed with AES-256-GCM
//!   ([`Ticketer`]; keys from the hardware RNG, a new one every
//!   [`TICKET_PERIOD_S`], the previous one still accepted, so a ticket
//!   works for 12 to 24 hours and never after; the lifetime hint is 12 h),
//!   and TLS 1.2 session IDs for clients without tickets ([`SessionCache`]:
//!   at most [`SESSION_ENTRIES`] sessions and [`SESSION_BYTES`] bytes, the
//!   oldest evicted first, nothing stored when memory runs out). Both
//!   rotation and eviction logic live in `uk_http::session` (host tests).
//!
//! Copies: the record layer cannot encrypt in the page cache, so TLS
//! responses take the mmap data path (file pages → record buffer, the
//! encryption's one copy, counted as `app_to_tls`), and received records are
//! decrypted in place and copied once into the request buffer
//! (`tls_to_app`).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use core::sync::atomic::{AtomicU64, Ordering};
use ring::aead;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::UnbufferedServerConnection;
use rustls::time_provider::TimeProvider;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{ServerConfig, version};
use uk_http::session::{KEY_NAME_LEN, KeyRing, NamedKey, SessionStore};
use uk_http::x509;
use unikernel::fs::{self, Errno};
use unikernel::io::{APP_COPIES as TLS_COPIES, CopyStage};
use unikernel::sync::Mutex;
use unikernel::time::SystemTime;

/// Appends what `write` puts into a new tail of `out`: first `room` bytes
/// of room, then as many as `needs` says the error asks for, until it fits.
/// The tail is dropped on another error. (rustls' unbuffered encoders report
/// the size they want instead of growing a buffer.)
pub(crate) fn append_grown<E>(
    out: &mut Vec<u8>,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
) -> Result<usize, E> {
    loop {
        let at = out.len();
        out.resize(at + room, 0);
        match write(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(n);
            }
            Err(e) => {
                out.truncate(at);
                room = needs(&e).ok_or(e)?;
            }
        }
    }
}

/// The room an `EncodeError` asks for, if that is what it is.
pub(crate) fn encode_needs(e: &EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

/// The room an `EncryptError` asks for, if that is what it is.
pub(crate) fn encrypt_needs(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

/// The wall clock for rustls (certificate validity).
#[derive(Debug)]
struct KernelClock;

impl TimeProvider for KernelClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(core::time::Duration::from_secs(
            SystemTime::now().unix_secs(),
        )))
    }
}

fn hardware_random(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    unikernel::arch::rand::fill(buf).map_err(|e| {
        log::error!("httpd: no random numbers for TLS: {e}");
        getrandom::Error::UNSUPPORTED
    })
}

getrandom::register_custom_getrandom!(hardware_random);

/// The one certificate, whatever the client asks for (SNI).
#[derive(Debug)]
struct OneCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// TLS 1.2 session IDs kept for resumption.
const SESSION_ENTRIES: usize = 512;
/// Bytes of session IDs and session state kept (a TLS 1.2 session is about
/// 150 bytes without client certificates).
const SESSION_BYTES: usize = 192 * 1024;
/// Ticket keys are replaced every this many seconds.
const TICKET_PERIOD_S: u32 = 12 * 3600;

/// Server-side session state for TLS 1.2 session IDs (and stateful TLS 1.3
/// tickets, which rustls uses only when the ticketer cannot seal).
struct SessionCache(Mutex<SessionStore>);

impl core::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SessionCache")
    }
}

impl rustls::server::StoresServerSessions for SessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.lock().put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.lock().get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.lock().take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// One ticket key: AES-256-GCM, and the count of tickets it sealed (the
/// nonce: never repeated under one key).
struct TicketKey {
    aead: aead::LessSafeKey,
    sealed: AtomicU64,
}

/// Random name, random key: `None` without hardware randomness.
fn new_ticket_key() -> Option<NamedKey<TicketKey>> {
    let mut bytes = [0u8; 32 + KEY_NAME_LEN];
    if let Err(e) = unikernel::arch::rand::fill(&mut bytes) {
        log::error!("httpd: no random numbers for a ticket key: {e}");
        return None;
    }
    let (key, name_bytes) = bytes.split_at(32);
    let mut name = [0u8; KEY_NAME_LEN];
    name.copy_from_slice(name_bytes);
    let key = aead::UnboundKey::new(&aead::AES_256_GCM, key).ok()?;
    bytes.fill(0);
    Some(NamedKey {
        name,
        key: TicketKey {
            aead: aead::LessSafeKey::new(key),
            sealed: AtomicU64::new(0),
        },
    })
}

/// Seals and opens session tickets: `name (16) | nonce (12) | ciphertext |
/// tag (16)`, the name as additional data.
struct Ticketer(Mutex<KeyRing<TicketKey>>);

impl core::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Ticketer")
    }
}

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

impl rustls::server::ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_PERIOD_S
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut ring = self.0.lock();
        let k = ring.sealing(now_ms(), &mut new_ticket_key)?;
        let n = k.key.sealed.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let mut out = Vec::new();
        // All the room up front: sealing never reallocates (an allocation
        // failure is no ticket, not an abort).
        out.try_reserve_exact(KEY_NAME_LEN + NONCE_LEN + plain.len() + TAG_LEN)
            .ok()?;
        out.extend_from_slice(&k.name);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let (head, body) = out.split_at_mut(KEY_NAME_LEN + NONCE_LEN);
        let tag = k
            .key
            .aead
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&head[..KEY_NAME_LEN]),
                body,
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < KEY_NAME_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (name, rest) = cipher.split_at(KEY_NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let mut ring = self.0.lock();
        let k = ring.opening(now_ms(), name, &mut new_ticket_key)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut out = Vec::new();
        out.try_reserve_exact(sealed.len()).ok()?;
        out.extend_from_slice(sealed);
        let n = k
            .key
            .aead
            .open_in_place(nonce, aead::Aad::from(name), &mut out)
            .ok()?
            .len();
        out.truncate(n);
        Some(out)
    }
}

fn now_ms() -> u64 {
    unikernel::time::Instant::now().as_nanos() / 1_000_000
}

/// Largest file read for a certificate or key.
const MAX_PEM: usize = 1 << 20;

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    let st = fs::stat(path).map_err(|e| format!("{path}: {e}"))?;
    if st.size > MAX_PEM as u64 {
        return Err(format!("{path}: larger than {MAX_PEM} bytes"));
    }
    let fd = fs::open(path, fs::Flags::O_RDONLY, 0).map_err(|e| format!("{path}: {e}"))?;
    let mut buf = vec![0u8; st.size as usize];
    let mut at = 0;
    let r = loop {
        if at == buf.len() {
            break Ok(());
        }
        match fs::read(fd, &mut buf[at..]) {
            Ok(0) => break Ok(()),
            Ok(n) => at += n,
            Err(e) => break Err(format!("{path}: {e}")),
        }
    };
    let _ = fs::close(fd);
    r?;
    buf.truncate(at);
    Ok(buf)
}

/// Reads `cert` and `key` (PEM) and builds the server configuration; the
/// error says what is wrong, for the console.
pub fn load(cert: &str, key: &str) -> Result<Arc<ServerConfig>, String> {
    let mut probe = [0u8; 8];
    unikernel::arch::rand::fill(&mut probe).map_err(|e| format!("no random numbers: {e}"))?;
    let pem = read_file(cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert}: bad PEM certificate: {e:?}"))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("{cert}: no certificate in the file"));
    };
    let v = x509::validity(leaf.as_ref()).map_err(|e| format!("{cert}: {e}"))?;
    let now = i64::try_from(SystemTime::now().unix_secs()).unwrap_or(i64::MAX);
    if now > v.not_after {
        return Err(format!(
            "{cert}: the certificate expired ({} < now {})",
            uk_http::format_http_date(v.not_after.max(0) as u64),
            uk_http::format_http_date(now as u64)
        ));
    }
    if now < v.not_before {
        return Err(format!(
            "{cert}: the certificate is not valid yet (from {}, now {})",
            uk_http::format_http_date(v.not_before.max(0) as u64),
            uk_http::format_http_date(now as u64)
        ));
    }
    let key_pem = read_file(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{key}: bad PEM private key: {e:?}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{key}: unusable private key: {e}"))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("{key} does not match {cert}: {e}"))?;
    let mut config = ServerConfig::builder_with_details(provider, Arc::new(KernelClock))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OneCert(Arc::new(certified))));
    // http/1.1, and http/1.0 for clients that offer only that (curl -0).
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    config.session_storage = Arc::new(SessionCache(Mutex::new(SessionStore::new(
        SESSION_ENTRIES,
        SESSION_BYTES,
    ))));
    config.ticketer = Arc::new(Ticketer(Mutex::new(KeyRing::new(
        u64::from(TICKET_PERIOD_S) * 1000,
    ))));
    Ok(Arc::new(config))
}

/// Most ciphertext buffered from the socket before records are processed
/// (a record is at most 16 KiB + 256 bytes).
const MAX_INCOMING: usize = 40 * 1024;
/// Ciphertext read from the socket at a time.
const READ_STEP: usize = 17 * 1024;
/// Room for one encrypted alert record (2 bytes of alert, a record
/// header, the content type and an AEAD tag or explicit nonce).
const ALERT_ROOM: usize = 64;
/// Plaintext bytes encrypted per record.
const RECORD: usize = 16 * 1024;

/// One TLS connection's state over a non-blocking socket.
pub struct TlsConn {
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet processed.
    inc: Vec<u8>,
    /// Ciphertext to send, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// Decrypted bytes not yet read, from `plain_pos`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// The handshake is complete.
    established: bool,
    /// close_notify received (or the connection is closed).
    peer_closed: bool,
}

impl TlsConn {
    /// A connection with `config`.
    pub fn new(config: &Arc<ServerConfig>) -> Result<TlsConn, Errno> {
        let conn = UnbufferedServerConnection::new(config.clone()).map_err(|e| {
            log::error!("httpd: TLS connection: {e}");
            Errno::ENOMEM
        })?;
        Ok(TlsConn {
            conn,
            inc: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            plain: Vec::new(),
            plain_pos: 0,
            established: false,
            peer_closed: false,
        })
    }

    /// Ciphertext is waiting for room in the socket.
    pub fn wants_write(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Sends buffered ciphertext; `Ok(true)` once all of it is out.
    pub fn flush(&mut self, fd: i32) -> Result<bool, Errno> {
        while self.out_pos < self.out.len() {
            match fs::write(fd, &self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(Errno::EAGAIN) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(true)
    }

    /// Runs rustls over the received ciphertext: decrypted data goes to
    /// `plain`, handshake messages to `out`. With `data`, once the
    /// connection can carry application data, encrypts a record of it into
    /// `out` and returns how many of its bytes it took (0 without `data` or
    /// when the handshake is not complete).
    fn process(&mut self, data: Option<&[u8]>) -> Result<usize, Errno> {
        let TlsConn {
            conn,
            inc,
            out,
            plain,
            plain_pos,
            established,
            peer_closed,
            ..
        } = self;
        loop {
            let UnbufferedStatus { mut discard, state } = conn.process_tls_records(inc);
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("httpd: TLS: {e}");
                    // rustls queued the fatal alert: it comes out of the
                    // next call; the caller sends it before closing.
                    inc.drain(..discard);
                    if let Ok(ConnectionState::EncodeTlsData(mut enc)) =
                        conn.process_tls_records(inc).state
                    {
                        let at = out.len();
                        out.resize(at + ALERT_ROOM, 0);
                        let n = enc.encode(&mut out[at..]).unwrap_or(0);
                        out.truncate(at + n);
                    }
                    return Err(Errno::ECONNRESET);
                }
            };
            // Whether rustls can make progress without new input.
            let mut more = false;
            let mut taken = None;
            match state {
                ConnectionState::ReadTraffic(mut rt) => {
                    while let Some(rec) = rt.next_record() {
                        let rec = rec.map_err(|e| {
                            log::debug!("httpd: TLS: {e}");
                            Errno::ECONNRESET
                        })?;
                        discard += rec.discard;
                        if *plain_pos == plain.len() {
                            plain.clear();
                            *plain_pos = 0;
                        }
                        TLS_COPIES.append(CopyStage::TlsToApp, plain, rec.payload);
                    }
                    more = true;
                }
                ConnectionState::ReadEarlyData(mut ed) => {
                    // Not enabled in the configuration; drained if it comes.
                    while let Some(rec) = ed.next_record() {
                        let rec = rec.map_err(|_| Errno::ECONNRESET)?;
                        discard += rec.discard;
                    }
                    more = true;
                }
                ConnectionState::EncodeTlsData(mut enc) => {
                    append_grown(out, 4096, |b| enc.encode(b), encode_needs).map_err(|e| {
                        log::debug!("httpd: TLS: {e}");
                        Errno::ECONNRESET
                    })?;
                    more = true;
                }
                ConnectionState::TransmitTlsData(t) => {
                    // `out` keeps it until the socket takes it.
                    t.done();
                    more = true;
                }
                ConnectionState::BlockedHandshake => {}
                ConnectionState::WriteTraffic(mut wt) => {
                    *established = true;
                    if let Some(d) = data {
                        let d = &d[..d.len().min(RECORD)];
                        append_grown(out, d.len() + 64, |b| wt.encrypt(d, b), encrypt_needs)
                            .map_err(|e| {
                                log::debug!("httpd: TLS: {e}");
                                Errno::ECONNRESET
                            })?;
                        TLS_COPIES.count(CopyStage::AppToTls, d.len());
                        taken = Some(d.len());
                    }
                }
                ConnectionState::PeerClosed => {
                    *peer_closed = true;
                    more = true;
                }
                ConnectionState::Closed => *peer_closed = true,
                _ => {}
            }
            inc.drain(..discard);
            if let Some(n) = taken {
                return Ok(n);
            }
            if !more && discard == 0 {
                return Ok(0);
            }
        }
    }

    /// Before the server closes the connection: a close_notify alert, so
    /// the client knows the stream was not cut (best effort: whatever the
    /// socket takes now).
    pub fn close_notify(&mut self, fd: i32) {
        if !self.established || self.peer_closed {
            let _ = self.flush(fd);
            return;
        }
        let TlsConn { conn, inc, out, .. } = self;
        if let Ok(ConnectionState::WriteTraffic(mut wt)) = conn.process_tls_records(inc).state {
            let at = out.len();
            out.resize(at + ALERT_ROOM, 0);
            let n = wt.queue_close_notify(&mut out[at..]).unwrap_or(0);
            out.truncate(at + n);
        }
        let _ = self.flush(fd);
    }

    /// Like `read` on the socket: decrypted bytes, `Ok(0)` at the end of the
    /// stream, `EAGAIN` when nothing is ready.
    pub fn read(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
        loop {
            if self.plain_pos < self.plain.len() {
                let n = buf.len().min(self.plain.len() - self.plain_pos);
                TLS_COPIES.copy(
                    CopyStage::TlsToApp,
                    &mut buf[..n],
                    &self.plain[self.plain_pos..self.plain_pos + n],
                );
                self.plain_pos += n;
                return Ok(n);
            }
            if self.peer_closed {
                return Ok(0);
            }
            if let Err(e) = self.process(None) {
                // The fatal alert, if rustls made one.
                let _ = self.flush(fd);
                return Err(e);
            }
            self.flush(fd)?;
            if self.plain_pos < self.plain.len() || self.peer_closed {
                continue;
            }
            if self.inc.len() >= MAX_INCOMING {
                return Err(Errno::ENOBUFS);
            }
            let old = self.inc.len();
            // Room for one more full record (16 KiB + 256 + a header).
            self.inc.resize(MAX_INCOMING.min(old + READ_STEP), 0);
            let r = fs::read(fd, &mut self.inc[old..]);
            self.inc.truncate(old + *r.as_ref().unwrap_or(&0));
            if r? == 0 {
                return Ok(0);
            }
        }
    }

    /// Like `write` on the socket: takes up to one record of `data`
    /// (encrypted into the connection's buffer, sent as far as the socket
    /// takes it); `EAGAIN` while earlier ciphertext is still waiting.
    pub fn write(&mut self, fd: i32, data: &[u8]) -> Result<usize, Errno> {
        if data.is_empty() {
            return Ok(0);
        }
        if !self.flush(fd)? {
            return Err(Errno::EAGAIN);
        }
        let n = match self.process(Some(data)) {
            Ok(n) => n,
            Err(e) => {
                let _ = self.flush(fd);
                return Err(e);
            }
        };
        self.flush(fd)?;
        if n == 0 {
            // Not established: cannot happen (a response follows a request,
            // which only arrives once the handshake is done), but never
            // report progress that was not made.
            return Err(Errno::EAGAIN);
        }
        Ok(n)
    }
}
