//! ACME (RFC 8555) for the TLS build: `--acme-domain` gets a certificate
//! with the HTTP-01 challenge and keeps it renewed, while HTTP is served.
//!
//! A background thread ([`start`]) does the whole exchange with the
//! directory over HTTPS (rustls' unbuffered client over the kernel's TCP,
//! trusting the roots of `--acme-ca`): account (ECDSA P-256 key, JWS ES256
//! with ring), order, HTTP-01 (the event loop answers
//! `/.well-known/acme-challenge/TOKEN` from [`key_authorization`], in
//! memory), finalize with a CSR (`uk_http::acme::csr_p256`, a fresh P-256
//! key per certificate), download of the chain. The chain and key are
//! written under `--acme-state` (default `/acme`) and loaded through
//! [`crate::tls::load`], the same checks as `--tls-cert`; the configuration
//! goes to the event loop through [`take_config`] and an eventfd, which
//! opens the HTTPS port on the first certificate and swaps the
//! configuration on renewals (connections already open keep theirs).
//!
//! At boot a stored certificate for the domain that is still before its
//! renewal time is served at once, and a stored account key is reused.
//! Renewal is at two thirds of the certificate's lifetime. Every failure is
//! logged (`httpd: ACME: ...`) and retried with a backoff from 10 s doubling
//! to an hour. With a state disk (`cargo uk run --state-disk FILE`: the
//! kernel mounts it writable at `/state`) the files are kept in
//! `/state/acme`, so the next boot serves the stored certificate at once
//! and reuses the account; files missing there are read from
//! `--acme-state` (the image may hold them). Without one, the root file
//! system is read-only ext4, so the state directory is usually not
//! writable: the files then go to `/tmp/acme` (tmpfs) and last until the
//! VM stops; a state directory that already holds an account key and
//! certificate (put there by `cargo uk image`) is used as is.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::time::Duration;

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
};
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::time_provider::TimeProvider;
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use uk_http::acme::{
    self as proto, HttpResponse, Json, Signer, Url, b64url, csr_p256, jwk_p256, jws,
    key_authorization as keyauth, parse_url, pem, protected_header,
};
use uk_http::config::Acme;
use uk_http::{format_http_date, x509};
use unikernel::fs::{self, Errno, Flags};
use unikernel::io;
use unikernel::net::TcpStream;
use unikernel::println;
use unikernel::sync::{Mutex, Once};
use unikernel::time::SystemTime;

/// What the ACME thread shares with the event loop.
struct Shared {
    /// Pending HTTP-01 challenges: (token, key authorization).
    challenges: Mutex<Vec<(String, String)>>,
    /// A configuration with a new certificate, for the event loop.
    config: Mutex<Option<(Arc<ServerConfig>, String)>>,
    /// Readable when `config` holds one (the event loop watches it).
    wake: i32,
}

static SHARED: Once<Shared> = Once::new();

/// Largest HTTP response read from the directory (a certificate chain is a
/// few KiB).
const MAX_RESPONSE: usize = 1 << 20;
/// Socket timeouts of the client.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Status polls of an authorization or an order before giving up.
const POLLS: u32 = 60;
/// Clock difference waited out for a certificate not valid yet (s).
const MAX_SKEW: i64 = 600;
/// Requests retried after a `badNonce` error.
const NONCE_RETRIES: u32 = 5;

/// The key authorization for an HTTP-01 `token` under way, for the
/// responder.
pub fn key_authorization(token: &str) -> Option<String> {
    let s = SHARED.get()?;
    let list = s.challenges.lock();
    list.iter()
        .find(|(t, _)| t == token)
        .map(|(_, k)| k.clone())
}

/// The newest certificate's configuration and a description for the
/// console, once (the event loop calls this when the eventfd is readable).
pub fn take_config() -> Option<(Arc<ServerConfig>, String)> {
    let s = SHARED.get()?;
    let mut b = [0u8; 8];
    let _ = fs::read(s.wake, &mut b);
    s.config.lock().take()
}

/// The kernel's wall clock for certificate validity.
#[derive(Debug)]
struct Clock;

impl TimeProvider for Clock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(now())))
    }
}

fn now() -> u64 {
    SystemTime::now().unix_secs()
}

/// Checks the settings, reads the roots of `--acme-ca` and starts the
/// thread; returns the eventfd the event loop watches. An error (for the
/// console) refuses the start: the configuration cannot work.
pub fn start(cfg: &Acme) -> Result<i32, String> {
    let mut probe = [0u8; 8];
    unikernel::arch::rand::fill(&mut probe).map_err(|e| format!("no random numbers: {e}"))?;
    let url = parse_url(&cfg.directory).ok_or("bad --acme-directory URL")?;
    let pem_roots = read_file(&cfg.ca)?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem_roots) {
        let c = c.map_err(|e| format!("{}: bad PEM certificate: {e:?}", cfg.ca))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: unusable root: {e}", cfg.ca))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in the file", cfg.ca));
    }
    // (ring's X25519 on ADX/BMI2 CPUs keeps registers in the red zone below
    // rsp; the kernel's interrupt entry leaves it alone: `arch::idt`.)
    let provider = rustls::crypto::ring::default_provider();
    let client = ClientConfig::builder_with_details(Arc::new(provider), Arc::new(Clock))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let wake = io::eventfd(0, io::O_NONBLOCK).map_err(|e| format!("eventfd: {e}"))?;
    if SHARED
        .set(Shared {
            challenges: Mutex::new(Vec::new()),
            config: Mutex::new(None),
            wake,
        })
        .is_err()
    {
        return Err("started twice".into());
    }
    let cfg = cfg.clone();
    let client = Arc::new(client);
    unikernel::thread::spawn_with(512 * 1024, unikernel::thread::Priority::Normal, move || {
        run(&cfg, url, client)
    })
    .map_err(|e| format!("cannot start the ACME thread: {e:?}"))?;
    Ok(wake)
}

/// Hands a configuration to the event loop.
fn publish(config: Arc<ServerConfig>, what: String) {
    if let Some(s) = SHARED.get() {
        *s.config.lock() = Some((config, what));
        let _ = fs::write(s.wake, &1u64.to_ne_bytes());
    }
}

// ---------------------------------------------------------------------------
// Files

/// Largest file read.
const MAX_FILE: u64 = 1 << 20;

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    let st = fs::stat(path).map_err(|e| format!("{path}: {e}"))?;
    if st.size > MAX_FILE {
        return Err(format!("{path}: larger than {MAX_FILE} bytes"));
    }
    let mut f = fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).map_err(|e| format!("{path}: {e}"))?;
    Ok(v)
}

fn write_file(path: &str, data: &[u8]) -> Result<(), Errno> {
    let fd = fs::open(
        path,
        Flags::O_WRONLY | Flags::O_CREAT | Flags::O_TRUNC,
        0o600,
    )?;
    let mut at = 0;
    let r = loop {
        if at == data.len() {
            break Ok(());
        }
        match fs::write(fd, &data[at..]) {
            Ok(0) => break Err(Errno::EIO),
            Ok(n) => at += n,
            Err(e) => break Err(e),
        }
    };
    let _ = fs::close(fd);
    r
}

/// Where the files go: on the state disk when the kernel mounted one
/// (`/state/acme`, kept across boots); else the state directory when it is
/// writable, else `/tmp/acme`.
struct Store {
    dir: String,
    /// Where a file missing from `dir` is read from: `--acme-state` (which
    /// the image may hold) when `dir` is on the state disk.
    seed: Option<String>,
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

impl Store {
    fn new(cfg: &Acme) -> Store {
        if unikernel::fs::state::mounted().is_some() {
            println!(
                "httpd: ACME: account key and certificates on the state disk, in {}",
                proto::STATE_DISK_ACME
            );
            Store {
                dir: proto::STATE_DISK_ACME.into(),
                seed: Some(cfg.state.clone()),
            }
        } else {
            Store {
                dir: cfg.state.clone(),
                seed: None,
            }
        }
    }

    fn on_state_disk(&self) -> bool {
        self.dir == proto::STATE_DISK_ACME
    }

    fn path(&self, name: &str) -> String {
        join(&self.dir, name)
    }

    /// The directory that holds `name`: the store's, else the seed.
    fn holding(&self, name: &str) -> Option<&str> {
        core::iter::once(self.dir.as_str())
            .chain(self.seed.as_deref())
            .find(|d| fs::stat(&join(d, name)).is_ok())
    }

    /// Writes `name` in the state directory, or under `/tmp/acme` (said
    /// once on the console) when it cannot be written.
    fn save(&mut self, name: &str, data: &[u8]) -> Result<String, String> {
        let _ = fs::mkdir(&self.dir, 0o700);
        let p = self.path(name);
        match write_file(&p, data) {
            Ok(()) => Ok(p),
            Err(e) if self.dir != proto::FALLBACK_STATE => {
                println!(
                    "httpd: ACME: cannot write {p} ({e}): keeping the account key and certificate in {}, until the VM stops",
                    proto::FALLBACK_STATE
                );
                self.dir = proto::FALLBACK_STATE.into();
                self.save(name, data)
            }
            Err(e) => Err(format!("{p}: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------
// The thread

fn run(cfg: &Acme, dir_url: Url, client: Arc<ClientConfig>) {
    let mut store = Store::new(cfg);
    let crt_name = format!("{}.crt.pem", cfg.domain);
    let key_name = format!("{}.key.pem", cfg.domain);
    // A stored certificate: served at once, renewed when due.
    let mut renew = 0i64;
    if let Some(dir) = store.holding(&crt_name) {
        let how = if dir == store.dir && store.on_state_disk() {
            "loaded from the state disk"
        } else {
            "loaded from the disk"
        };
        match install(
            &join(dir, &crt_name),
            &join(dir, &key_name),
            &cfg.domain,
            how,
        ) {
            Ok(r) => renew = r,
            Err(e) => println!("httpd: ACME: stored certificate not used: {e}"),
        }
    }
    let mut account: Option<Account> = None;
    let mut failures = 0u32;
    loop {
        let wait = renew.saturating_sub(now() as i64);
        if wait > 0 {
            unikernel::thread::sleep(Duration::from_secs((wait as u64).min(3600)));
            continue;
        }
        let r = account
            .as_ref()
            .map_or_else(|| Account::load_or_create(&mut store), |a| Ok(a.clone()))
            .and_then(|a| {
                account = Some(a.clone());
                let mut c = AcmeClient {
                    tls: client.clone(),
                    dir_url: dir_url.clone(),
                    addr: None,
                    dns: cfg.dns,
                    nonce: None,
                    account: a,
                    kid: None,
                    rng: SystemRandom::new(),
                };
                c.obtain(cfg)
            })
            .and_then(|(chain, key_pem)| {
                // Each file is replaced whole (on the state disk: one
                // record each); a cut between the two leaves a pair that
                // does not match, refused at boot, and a new order.
                let key = store.save(&key_name, key_pem.as_bytes())?;
                let crt = store.save(&crt_name, chain.as_bytes())?;
                install(&crt, &key, &cfg.domain, "obtained")
            });
        if let Some(s) = SHARED.get() {
            s.challenges.lock().clear();
        }
        match r {
            Ok(r) => {
                // A new certificate already due (a short lifetime, or a
                // clock off): not renewed again for an hour.
                renew = r.max(now() as i64 + 3600);
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                let wait = proto::backoff_secs(failures);
                println!("httpd: ACME: {e}; trying again in {wait} s");
                unikernel::thread::sleep(Duration::from_secs(wait));
            }
        }
    }
}

/// Loads the certificate and key with the checks of `--tls-cert` (an
/// expired certificate is refused) and hands the configuration to the event
/// loop; returns the renewal time (in the past: renew now, serving this one
/// meanwhile).
fn install(crt: &str, key: &str, domain: &str, how: &str) -> Result<i64, String> {
    let pem_data = read_file(crt)?;
    let leaf = CertificateDer::pem_slice_iter(&pem_data)
        .next()
        .ok_or_else(|| format!("{crt}: no certificate"))?
        .map_err(|e| format!("{crt}: {e:?}"))?;
    let v = x509::validity(leaf.as_ref()).map_err(|e| format!("{crt}: {e}"))?;
    // A certificate that starts a little after our clock (a CA that does
    // not backdate, a guest clock behind): wait for its start rather than
    // refuse it.
    let early = v.not_before - now() as i64;
    if (1..=MAX_SKEW).contains(&early) {
        println!("httpd: ACME: {crt} is valid {early} s from now by our clock: waiting");
        unikernel::thread::sleep(Duration::from_secs(early as u64 + 1));
    }
    let config = crate::tls::load(crt, key)?;
    let renew = proto::renew_at(v.not_before, v.not_after);
    publish(
        config,
        format!(
            "the ACME certificate for {domain} ({how}, valid until {}, renewal after {})",
            format_http_date(v.not_after.max(0) as u64),
            format_http_date(renew.max(0) as u64)
        ),
    );
    Ok(renew)
}

/// The account key.
#[derive(Clone)]
struct Account {
    key: Arc<EcdsaKeyPair>,
    jwk: String,
    thumbprint: Vec<u8>,
}

impl Account {
    fn from_pkcs8(der: &[u8]) -> Result<Account, String> {
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|e| format!("account key: {e}"))?;
        let jwk = jwk_p256(key.public_key().as_ref()).ok_or("account key: not P-256")?;
        let thumbprint = ring::digest::digest(&ring::digest::SHA256, jwk.as_bytes())
            .as_ref()
            .to_vec();
        Ok(Account {
            key: Arc::new(key),
            jwk,
            thumbprint,
        })
    }

    /// The stored account key, or a new one (stored).
    fn load_or_create(store: &mut Store) -> Result<Account, String> {
        const NAME: &str = "account.key.pem";
        if let Some(path) = store.holding(NAME).map(|d| join(d, NAME)) {
            let pem_data = read_file(&path)?;
            let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(&pem_data)
                .map_err(|e| format!("{path}: {e:?}"))?;
            let a = Account::from_pkcs8(der.secret_pkcs8_der())?;
            println!("httpd: ACME: account key loaded from {path}");
            return Ok(a);
        }
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|e| format!("account key: {e}"))?;
        let a = Account::from_pkcs8(der.as_ref())?;
        let p = store.save(NAME, pem("PRIVATE KEY", der.as_ref()).as_bytes())?;
        println!("httpd: ACME: new account key in {p}");
        Ok(a)
    }
}

struct AcmeClient {
    tls: Arc<ClientConfig>,
    dir_url: Url,
    /// The directory's address, resolved once per attempt.
    addr: Option<Ipv4Addr>,
    /// `--acme-dns`: the resolver when DHCP gave none.
    dns: Option<Ipv4Addr>,
    nonce: Option<String>,
    account: Account,
    kid: Option<String>,
    rng: SystemRandom,
}

/// An ACME error document's `type` and `detail`.
fn problem(r: &HttpResponse) -> String {
    match Json::parse(&r.body) {
        Ok(j) => format!(
            "{} {}",
            j.str_of("type").unwrap_or("?"),
            j.str_of("detail").unwrap_or("")
        ),
        Err(_) => format!("HTTP {}", r.status),
    }
}

fn json(r: &HttpResponse, what: &str) -> Result<Json, String> {
    Json::parse(&r.body).map_err(|e| format!("{what}: {e}"))
}

impl AcmeClient {
    /// One HTTPS request; the response is read until the server closes.
    fn https(
        &mut self,
        method: &str,
        url: &str,
        body: Option<&str>,
    ) -> Result<HttpResponse, String> {
        let u = parse_url(url).ok_or_else(|| format!("bad URL from the server: {url}"))?;
        if (u.host.as_str(), u.port) != (self.dir_url.host.as_str(), self.dir_url.port) {
            // Everything stays on the directory's server (resolved once).
            return Err(format!("{url}: not on the directory's server"));
        }
        let ip = match self.addr {
            Some(ip) => ip,
            None => {
                let ip = resolve(&u.host, self.dns)?;
                self.addr = Some(ip);
                ip
            }
        };
        let req = proto::http_request(method, &u, body);
        let raw = exchange(&self.tls, &u.host, SocketAddrV4::new(ip, u.port), &req)
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let r = proto::parse_http_response(&raw, method == "HEAD")
            .map_err(|e| format!("{method} {url}: {e}"))?;
        if let Some(n) = r.header("replay-nonce") {
            self.nonce = Some(n.to_string());
        }
        Ok(r)
    }

    fn fresh_nonce(&mut self, new_nonce: &str) -> Result<String, String> {
        if let Some(n) = self.nonce.take() {
            return Ok(n);
        }
        self.https("HEAD", new_nonce, None)?;
        self.nonce
            .take()
            .ok_or_else(|| "no Replay-Nonce from the server".into())
    }

    /// A signed POST (payload `None`: POST-as-GET); `badNonce` is retried.
    fn post(
        &mut self,
        new_nonce: &str,
        url: &str,
        payload: Option<&str>,
    ) -> Result<HttpResponse, String> {
        let mut tries = 0;
        loop {
            let nonce = self.fresh_nonce(new_nonce)?;
            let signer = match &self.kid {
                Some(k) => Signer::Kid(k),
                None => Signer::Jwk(&self.account.jwk),
            };
            let ph = protected_header(signer, &nonce, url);
            let key = &self.account.key;
            let rng = &self.rng;
            let body = jws(&ph, payload.unwrap_or(""), |input| {
                key.sign(rng, input)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| String::from("signing failed"))
            })?;
            let r = self.https("POST", url, Some(&body))?;
            if (200..300).contains(&r.status) {
                return Ok(r);
            }
            let p = problem(&r);
            tries += 1;
            if p.contains("badNonce") && tries < NONCE_RETRIES {
                continue;
            }
            return Err(format!("POST {url}: {} {p}", r.status));
        }
    }

    /// The whole exchange: returns the PEM chain and the PEM key.
    fn obtain(&mut self, cfg: &Acme) -> Result<(String, String), String> {
        let dir_url = self.dir_url.clone();
        let dir_str = format!("https://{}:{}{}", dir_url.host, dir_url.port, dir_url.path);
        let r = self.https("GET", &dir_str, None)?;
        if r.status != 200 {
            return Err(format!("directory {}: HTTP {}", cfg.directory, r.status));
        }
        let dir = json(&r, "directory")?;
        let get = |k: &str| {
            dir.str_of(k)
                .map(String::from)
                .ok_or_else(|| format!("directory has no {k}"))
        };
        let (new_nonce, new_account, new_order) =
            (get("newNonce")?, get("newAccount")?, get("newOrder")?);
        // The account (created, or found again for this key).
        let contact = cfg
            .email
            .as_ref()
            .map(|e| format!(",\"contact\":[{}]", proto::json_str(&format!("mailto:{e}"))))
            .unwrap_or_default();
        let payload = format!("{{\"termsOfServiceAgreed\":true{contact}}}");
        self.kid = None;
        let r = self.post(&new_nonce, &new_account, Some(&payload))?;
        let kid = r
            .header("location")
            .ok_or("newAccount: no Location")?
            .to_string();
        println!("httpd: ACME: account {kid}");
        self.kid = Some(kid);
        // The order.
        let payload = format!(
            "{{\"identifiers\":[{{\"type\":\"dns\",\"value\":{}}}]}}",
            proto::json_str(&cfg.domain)
        );
        let r = self.post(&new_nonce, &new_order, Some(&payload))?;
        let order_url = r
            .header("location")
            .ok_or("newOrder: no Location")?
            .to_string();
        let order = json(&r, "order")?;
        let finalize = order
            .str_of("finalize")
            .ok_or("order has no finalize")?
            .to_string();
        let authzs: Vec<String> = order
            .get("authorizations")
            .map(|a| {
                a.items()
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for a in &authzs {
            self.authorize(&new_nonce, a)?;
        }
        // The order turns ready once its authorizations are valid (at once
        // with pebble; a CA may take a moment).
        let mut status = order.str_of("status").unwrap_or("").to_string();
        let mut polls = 0;
        while status == "pending" {
            polls += 1;
            if polls > POLLS {
                return Err("order not ready after its authorizations".into());
            }
            let r = self.post(&new_nonce, &order_url, None)?;
            status = json(&r, "order")?
                .str_of("status")
                .unwrap_or("")
                .to_string();
            if status == "pending" {
                unikernel::thread::sleep(Duration::from_secs(1));
            }
        }
        if status == "invalid" {
            return Err("order invalid".into());
        }
        // Finalize with a fresh key's request.
        let key_der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &self.rng)
            .map_err(|e| format!("certificate key: {e}"))?;
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key_der.as_ref(), &self.rng)
                .map_err(|e| format!("certificate key: {e}"))?;
        let csr = csr_p256(&cfg.domain, key.public_key().as_ref(), |info| {
            key.sign(&self.rng, info).map(|s| s.as_ref().to_vec())
        })
        .map_err(|e| format!("certificate request: {e:?}"))?;
        let payload = format!("{{\"csr\":\"{}\"}}", b64url(&csr));
        let mut r = self.post(&new_nonce, &finalize, Some(&payload))?;
        let mut polls = 0;
        let cert_url = loop {
            let o = json(&r, "order")?;
            match o.str_of("status") {
                Some("valid") => {
                    break o
                        .str_of("certificate")
                        .ok_or("valid order without certificate")?
                        .to_string();
                }
                Some("invalid") => {
                    return Err(format!(
                        "order invalid: {}",
                        o.get("error").map(|e| format!("{e:?}")).unwrap_or_default()
                    ));
                }
                _ => {}
            }
            polls += 1;
            if polls > POLLS {
                return Err("order not valid after polling".into());
            }
            unikernel::thread::sleep(Duration::from_secs(1));
            r = self.post(&new_nonce, &order_url, None)?;
        };
        let r = self.post(&new_nonce, &cert_url, None)?;
        let chain = String::from_utf8(r.body).map_err(|_| "certificate chain is not text")?;
        if !chain.contains("-----BEGIN CERTIFICATE-----") {
            return Err("certificate download is not a PEM chain".into());
        }
        Ok((chain, pem("PRIVATE KEY", key_der.as_ref())))
    }

    /// Completes one authorization with HTTP-01.
    fn authorize(&mut self, new_nonce: &str, url: &str) -> Result<(), String> {
        let r = self.post(new_nonce, url, None)?;
        let a = json(&r, "authorization")?;
        if a.str_of("status") == Some("valid") {
            return Ok(());
        }
        let name = a
            .get("identifier")
            .and_then(|i| i.str_of("value"))
            .unwrap_or("?")
            .to_string();
        let ch = a
            .get("challenges")
            .map(Json::items)
            .unwrap_or_default()
            .iter()
            .find(|c| c.str_of("type") == Some("http-01"))
            .ok_or_else(|| format!("{name}: no http-01 challenge offered"))?;
        let token = ch.str_of("token").ok_or("challenge without token")?;
        if !proto::valid_token(token) {
            return Err(format!("{name}: bad challenge token"));
        }
        let ch_url = ch.str_of("url").ok_or("challenge without url")?.to_string();
        let ka = keyauth(token, &self.account.thumbprint);
        if let Some(s) = SHARED.get() {
            let mut l = s.challenges.lock();
            l.retain(|(t, _)| t != token);
            l.push((token.to_string(), ka));
        }
        println!("httpd: ACME: answering the HTTP-01 challenge for {name}");
        self.post(new_nonce, &ch_url, Some("{}"))?;
        for _ in 0..POLLS {
            unikernel::thread::sleep(Duration::from_secs(1));
            let r = self.post(new_nonce, url, None)?;
            let a = json(&r, "authorization")?;
            match a.str_of("status") {
                Some("valid") => return Ok(()),
                Some("pending") | Some("processing") => {}
                other => {
                    let detail = a
                        .get("challenges")
                        .map(Json::items)
                        .unwrap_or_default()
                        .iter()
                        .find_map(|c| c.get("error"))
                        .map(|e| {
                            format!(
                                "{} {}",
                                e.str_of("type").unwrap_or(""),
                                e.str_of("detail").unwrap_or("")
                            )
                        })
                        .unwrap_or_default();
                    return Err(format!(
                        "{name}: authorization {}: {detail}",
                        other.unwrap_or("?")
                    ));
                }
            }
        }
        Err(format!(
            "{name}: authorization still pending after {POLLS} polls"
        ))
    }
}

// ---------------------------------------------------------------------------
// DNS

/// Tries per DNS server, and the wait for each answer.
const DNS_TRIES: u32 = 3;
const DNS_TIMEOUT: Duration = Duration::from_secs(3);

/// The IPv4 address of `host`: itself when it is one, else an A query to
/// the DHCP lease's DNS servers or `dns`.
fn resolve(host: &str, dns: Option<Ipv4Addr>) -> Result<Ipv4Addr, String> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ip);
    }
    let mut servers: Vec<Ipv4Addr> = unikernel::net::ip_info().map(|i| i.dns).unwrap_or_default();
    if let Some(d) = dns {
        servers.insert(0, d);
    }
    if servers.is_empty() {
        return Err(format!(
            "cannot resolve {host}: no DNS server (none from DHCP; give --acme-dns IP)"
        ));
    }
    let mut last = String::new();
    for server in servers {
        for _ in 0..DNS_TRIES {
            match dns_once(host, server) {
                Ok(ip) => return Ok(ip),
                Err(e) => last = e,
            }
        }
    }
    Err(format!("cannot resolve {host}: {last}"))
}

fn dns_once(host: &str, server: Ipv4Addr) -> Result<Ipv4Addr, String> {
    let mut idb = [0u8; 2];
    unikernel::arch::rand::fill(&mut idb).map_err(|e| format!("{e}"))?;
    let id = u16::from_ne_bytes(idb);
    let q = proto::dns_query(id, host).ok_or("not a host name")?;
    let mut sock = unikernel::net::UdpSocket::bind(0).map_err(|e| format!("udp: {e:?}"))?;
    sock.set_read_timeout(Some(DNS_TIMEOUT));
    let to = SocketAddrV4::new(server, 53);
    sock.send_to(&q, to).map_err(|e| format!("{to}: {e:?}"))?;
    let mut buf = [0u8; 1500];
    // Datagrams from elsewhere, or with another id, are ignored.
    for _ in 0..8 {
        let (n, from) = sock
            .recv_from(&mut buf)
            .map_err(|e| format!("{to}: {e:?}"))?;
        if from != to {
            continue;
        }
        match proto::dns_answer(&buf[..n], id) {
            Ok(a) => return Ok(Ipv4Addr::from(a[0])),
            Err(proto::DnsError::Malformed) => continue,
            Err(e) => return Err(format!("{to}: {e}")),
        }
    }
    Err(format!("{to}: no answer"))
}

// ---------------------------------------------------------------------------
// The TLS client

/// Connects to `addr`, sends `request` over TLS to `host` and returns the
/// plaintext received until the server closed (at most [`MAX_RESPONSE`]).
fn exchange(
    config: &Arc<ClientConfig>,
    host: &str,
    addr: SocketAddrV4,
    request: &[u8],
) -> Result<Vec<u8>, String> {
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("server name: {e}"))?;
    let mut conn =
        UnbufferedClientConnection::new(config.clone(), name).map_err(|e| format!("TLS: {e}"))?;
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e:?}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT));
    s.set_write_timeout(Some(IO_TIMEOUT));
    let mut inc: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut plain: Vec<u8> = Vec::new();
    let mut sent = false;
    let mut eof = false;
    let read_more = |s: &mut TcpStream, inc: &mut Vec<u8>, eof: &mut bool| -> Result<(), String> {
        if inc.len() > 64 * 1024 {
            return Err("TLS: record too large".into());
        }
        let old = inc.len();
        inc.resize(old + 17 * 1024, 0);
        let r = s.read(&mut inc[old..]);
        inc.truncate(old + *r.as_ref().unwrap_or(&0));
        match r {
            Ok(0) => *eof = true,
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e:?}")),
        }
        Ok(())
    };
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut inc);
        let state = state.map_err(|e| format!("TLS: {e}"))?;
        match state {
            ConnectionState::ReadTraffic(mut rt) => {
                while let Some(rec) = rt.next_record() {
                    let rec = rec.map_err(|e| format!("TLS: {e}"))?;
                    discard += rec.discard;
                    if plain.len() + rec.payload.len() > MAX_RESPONSE {
                        return Err("response too large".into());
                    }
                    plain.extend_from_slice(rec.payload);
                }
            }
            ConnectionState::EncodeTlsData(mut enc) => {
                crate::tls::append_grown(
                    &mut out,
                    4096,
                    |b| enc.encode(b),
                    crate::tls::encode_needs,
                )
                .map_err(|e| format!("TLS: {e}"))?;
            }
            ConnectionState::TransmitTlsData(t) => {
                s.write_all(&out).map_err(|e| format!("write: {e:?}"))?;
                out.clear();
                t.done();
            }
            ConnectionState::BlockedHandshake => {
                if eof {
                    return Err("connection closed during the TLS handshake".into());
                }
                read_more(&mut s, &mut inc, &mut eof)?;
            }
            ConnectionState::WriteTraffic(mut wt) => {
                if !sent {
                    let mut buf = Vec::new();
                    crate::tls::append_grown(
                        &mut buf,
                        request.len() + 1024,
                        |b| wt.encrypt(request, b),
                        crate::tls::encrypt_needs,
                    )
                    .map_err(|e| format!("TLS: {e}"))?;
                    s.write_all(&buf).map_err(|e| format!("write: {e:?}"))?;
                    sent = true;
                } else {
                    if eof {
                        // Closed without close_notify: the HTTP framing
                        // tells whether the response is whole.
                        return Ok(plain);
                    }
                    read_more(&mut s, &mut inc, &mut eof)?;
                }
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => return Ok(plain),
            _ => {
                if eof {
                    return Err("connection closed".into());
                }
                read_more(&mut s, &mut inc, &mut eof)?;
            }
        }
        inc.drain(..discard);
    }
}
