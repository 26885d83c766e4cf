//! ACME: the TLS flavour of httpd (`cargo uk build httpd --tls`) with
//! `--acme-domain` gets its certificate from Debian's `pebble` (the ACME
//! test server) by HTTP-01 and serves HTTPS with it, serving HTTP
//! meanwhile. Everything runs inside a network namespace the test creates:
//! pebble listens on the namespace's TAP address with a certificate of the
//! test's own CA (which the guest trusts through `--acme-ca`), validates the
//! challenge for real against the guest's port 80 (`PEBBLE_VA_NOSLEEP=1`,
//! no `PEBBLE_VA_ALWAYS_VALID`), and finds the guest by the test domain
//! through the namespace's `/etc/netns/<ns>/hosts`. Failures on the way
//! (the directory not up yet, a validation that cannot reach the guest) are
//! logged and retried while HTTP is served. These boots have a state disk
//! (`--state-disk`): the second one serves the stored certificate with no
//! new order, the third renews a due certificate put on the disk with the
//! first boot's account. A last boot without a state disk, whose image
//! holds a stored certificate that is due, serves it and renews it. Needs
//! root, a C compiler (ring) and openssl; pebble is installed with apt-get
//! if missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uk_cli::Flavor;
use uk_cli::acme::AcmeArgs;
use uk_cli::image::{ImageFormat, build_image_with, temp_path};
use uk_tests::{Guest, Machine, Netns, skip};

const DOMAIN: &str = "acme-test.example";
/// The directory's host name, resolved by the guest through [`DNS`].
const DIR_HOST: &str = "acme-dir.test";

/// A DNS responder for the namespace (`python3 -c DNS ADDR`): A records for
/// acme-dir.test (ADDR), NXDOMAIN for anything else; prints `ready` once
/// bound.
const DNS: &str = r#"
import socket, sys
addr = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(512)
    if len(q) < 12:
        continue
    i, labels = 12, []
    while i < len(q) and q[i] != 0:
        labels.append(q[i + 1:i + 1 + q[i]].decode(errors="replace"))
        i += 1 + q[i]
    question = q[12:i + 5]
    name = ".".join(labels).lower()
    print("query", name, flush=True)
    if name == "acme-dir.test":
        ans = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(addr)
        s.sendto(q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + question + ans, peer)
    else:
        s.sendto(q[:2] + b"\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00" + question, peer)
"#;
/// How long the whole exchange may take under TCG (it takes a few seconds
/// with KVM).
const OBTAIN_TIMEOUT: Duration = Duration::from_secs(240);

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and, signed by it, pebble's certificate for `ip` and
/// [`DIR_HOST`], in `dir`:
/// `ca.pem`, `pebble.pem`, `pebble-key.pem`.
fn make_certs(dir: &Path, ip: &str) {
    let p = |n: &str| dir.join(n).display().to_string();
    let ext = dir.join("leaf.ext");
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:{ip},DNS:{DIR_HOST}\n"
        ),
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("ca-key.pem"),
        "-out",
        &p("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=uk acme test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("pebble-key.pem"),
        "-out",
        &p("pebble.csr"),
        "-subj",
        "/CN=pebble",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("pebble.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca-key.pem"),
        "-CAcreateserial",
        "-out",
        &p("pebble.pem"),
        "-days",
        "2",
        "-extfile",
        &ext.display().to_string(),
    ]);
}

/// Writes into `dir/acme` a stored ACME state for the second boot: an
/// account key and a certificate for the domain signed by the test CA, valid
/// from 20 days ago for 25 days (due for renewal: two thirds are past).
const STORED_STATE: &str = r#"
import datetime, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
d, domain = sys.argv[1], sys.argv[2]
ca_key = serialization.load_pem_private_key(open(f"{d}/ca-key.pem", "rb").read(), None)
ca = x509.load_pem_x509_certificate(open(f"{d}/ca.pem", "rb").read())
now = datetime.datetime.now(datetime.timezone.utc)
day = datetime.timedelta(days=1)
key = ec.generate_private_key(ec.SECP256R1())
cert = (x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - 20 * day).not_valid_after(now + 5 * day)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), False)
        .sign(ca_key, hashes.SHA256()))
pk = lambda k: k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
out = f"{d}/site2/acme"
open(f"{out}/{domain}.crt.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(f"{out}/{domain}.key.pem", "wb").write(pk(key))
open(f"{out}/account.key.pem", "wb").write(pk(ec.generate_private_key(ec.SECP256R1())))
"#;

/// What the test set up outside the guest; undone on drop.
struct Env {
    dir: PathBuf,
    hosts_dir: PathBuf,
    pebble: Option<Child>,
    dns: Option<Child>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for mut c in [self.pebble.take(), self.dns.take()].into_iter().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.hosts_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until `log` (pebble's output) contains `needle`.
fn wait_log(log: &Path, needle: &str, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(text);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The SAN and issuer of the certificate the guest serves on 443.
fn served_cert(ns: &Netns) -> String {
    let out = ns
        .command(
            "sh",
            &[
                "-c",
                &format!(
                    "openssl s_client -connect {}:443 -servername {DOMAIN} </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName -issuer",
                    ns.guest_ip
                ),
            ],
        )
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The SHA-256 fingerprint of the certificate the guest serves on 443.
fn served_fingerprint(ns: &Netns) -> String {
    let out = ns
        .command(
            "sh",
            &[
                "-c",
                &format!(
                    "openssl s_client -connect {}:443 -servername {DOMAIN} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
                    ns.guest_ip
                ),
            ],
        )
        .output()
        .unwrap();
    let f = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(f.contains("Fingerprint="), "no certificate served: {f}");
    f
}

/// How many times pebble's log says `needle`.
fn pebble_says(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

const CRT: &str = "acme/acme-test.example.crt.pem";
const KEY: &str = "acme/acme-test.example.key.pem";

#[test]
fn acme_certificate_from_pebble_over_http01() {
    if uk_tests::skip_unless_root() {
        return;
    }
    if !uk_cli::build::have_c_compiler() {
        skip(None, "a C compiler (gcc) is needed to build ring");
        return;
    }
    if !have("openssl") || !have("curl") {
        skip(None, "openssl and curl are needed");
        return;
    }
    if !have("pebble")
        && uk_cli::qemu::apt_install(&["pebble"], "pebble (ACME test server)", || have("pebble"))
            .is_err()
    {
        skip(None, "pebble is not installed (apt-get install pebble)");
        return;
    }
    let ns = Netns::create("acme").expect("create the test namespace");
    let dir = temp_path("acme-test");
    let hosts_dir = PathBuf::from("/etc/netns").join(&ns.name);
    let mut env = Env {
        dir: dir.clone(),
        hosts_dir: hosts_dir.clone(),
        pebble: None,
        dns: None,
    };
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir, ns.host_ip);
    // Inside the namespace (`ip netns exec` bind-mounts this over
    // /etc/hosts), the test domain is first the namespace's own address,
    // where nothing listens on port 80, so the first validation fails;
    // then the guest.
    std::fs::create_dir_all(&hosts_dir).unwrap();
    let map_domain_to = |ip: &str| {
        // Rewritten in place: the bind mount follows the same file.
        std::fs::write(
            hosts_dir.join("hosts"),
            format!("127.0.0.1 localhost\n{ip} {DOMAIN}\n"),
        )
        .unwrap()
    };
    map_domain_to(ns.host_ip);

    // The site: a page; the CA the guest trusts for pebble's HTTPS goes in
    // the way `cargo uk image --acme-ca` puts it there.
    let site = dir.join("site");
    std::fs::create_dir_all(site.join("www")).unwrap();
    std::fs::write(site.join("www/index.html"), b"hello over acme\n").unwrap();
    let image = dir.join("site.img");
    // The directory by name: the guest resolves it with the namespace's
    // DNS responder (its static address comes with no DNS server).
    let dns_log = dir.join("dns.log");
    let dns_out = std::fs::File::create(&dns_log).unwrap();
    env.dns = Some(
        ns.command("python3", &["-c", DNS, ns.host_ip])
            .stdin(Stdio::null())
            .stdout(dns_out.try_clone().unwrap())
            .stderr(dns_out)
            .spawn()
            .expect("start the DNS responder"),
    );
    if let Err(text) = wait_log(&dns_log, "ready", Duration::from_secs(20)) {
        panic!("the DNS responder did not start:\n{text}");
    }
    let directory = format!("https://{DIR_HOST}:14000/dir");
    let acme = AcmeArgs {
        domain: Some(DOMAIN.into()),
        directory: Some(directory),
        email: Some("ops@acme-test.example".into()),
        ca: Some(dir.join("ca.pem")),
        dns: Some(ns.host_ip.parse().unwrap()),
    };
    // The image with the CA file at /acme/ca.pem, as `cargo uk image --acme-ca` makes it.
    build_image_with(&site, &image, ImageFormat::Ext4, &acme.disk_files())
        .expect("build the ext4 image");
    let mut args = vec!["--root".to_string(), "/www".to_string()];
    args.extend(acme.httpd_args().expect("the image's httpd arguments"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A state disk, as `cargo uk run --state-disk` makes it: the account
    // and the certificate are kept there across boots.
    let state = dir.join("state.img");
    uk_cli::statedisk::ensure(&state).expect("make the state disk");

    // The guest first: the directory is not up yet, so the first attempt
    // fails, is logged and retried, and HTTP is served meanwhile.
    let g = Guest::boot_image(
        "httpd",
        uk_tests::image_flavor("httpd", Flavor::Tls),
        Machine::Microvm,
        ns.boot_opts(&args)
            .disk(&image)
            .state_disk(&state)
            .mem("128M"),
    );
    g.expect("httpd: serving");
    g.assert_output_contains("uk: fs: state disk on");
    // Said by the ACME thread, which may start after the event loop serves.
    g.expect("httpd: ACME: account key and certificates on the state disk");
    g.wait_for("trying again in 10 s", Duration::from_secs(120))
        .unwrap_or_else(|e| {
            panic!(
                "no retry after a failed attempt: {e}\n{}",
                g.failure("acme")
            )
        });
    let out = ns
        .command(
            "curl",
            &[
                "-sS",
                "--max-time",
                "20",
                &format!("http://{}/", ns.guest_ip),
            ],
        )
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello over acme\n",
        "HTTP while waiting: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!g.output().contains("HTTPS on port"));

    // Now pebble, in the namespace.
    let config = dir.join("pebble.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"pebble": {{"listenAddress": "{ip}:14000", "managementListenAddress": "{ip}:15000",
  "certificate": "{cert}", "privateKey": "{key}", "httpPort": 80, "tlsPort": 5001,
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
            ip = ns.host_ip,
            cert = dir.join("pebble.pem").display(),
            key = dir.join("pebble-key.pem").display()
        ),
    )
    .unwrap();
    let log = dir.join("pebble.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = ns
        .command("pebble", &["-config", &config.display().to_string()])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env_remove("PEBBLE_VA_ALWAYS_VALID")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start pebble");
    env.pebble = Some(child);
    if let Err(text) = wait_log(&log, "ACME directory available", Duration::from_secs(30)) {
        panic!("pebble did not start:\n{text}");
    }

    // A validation that fails (port 80 of the wrong address) is logged with
    // pebble's reason and retried; then the domain points at the guest.
    g.wait_for("authorization invalid", OBTAIN_TIMEOUT)
        .unwrap_or_else(|e| panic!("no failed validation: {e}\n{}", g.failure("acme")));
    assert!(!g.output().contains("HTTPS on port"));
    map_domain_to(ns.guest_ip);

    let started = Instant::now();
    let mark = g.wait_for(
        "httpd: HTTPS on port 443 with the ACME certificate",
        OBTAIN_TIMEOUT,
    );
    eprintln!(
        "acme: certificate served {:.1} s after pebble was up (one failed validation, 20 s backoff)",
        started.elapsed().as_secs_f64()
    );
    let pebble_log = || tail(&std::fs::read_to_string(&log).unwrap_or_default(), 40);
    if let Err(e) = mark {
        panic!(
            "no certificate: {e}\n--- pebble ---\n{}\n{}",
            pebble_log(),
            g.failure("acme")
        );
    }
    g.assert_output_contains("httpd: ACME: answering the HTTP-01 challenge for acme-test.example");
    let dlog = std::fs::read_to_string(&dns_log).unwrap_or_default();
    assert!(dlog.contains("query acme-dir.test"), "no DNS query: {dlog}");
    // pebble validated over HTTP for real.
    let plog = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        plog.contains("http-01") || plog.contains("Pulled a task"),
        "pebble log: {}",
        pebble_log()
    );

    // pebble's issuing root, from its management port.
    let root = dir.join("pebble-root.pem");
    let ca = dir.join("ca.pem").display().to_string();
    let out = ns
        .command(
            "curl",
            &[
                "-sS",
                "--max-time",
                "20",
                "--cacert",
                &ca,
                "-o",
                &root.display().to_string(),
                &format!("https://{}:15000/roots/0", ns.host_ip),
            ],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "roots: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // HTTPS for the domain, verified against pebble's root.
    let out = ns
        .command(
            "curl",
            &[
                "-sS",
                "-v",
                "--max-time",
                "30",
                "--cacert",
                &root.display().to_string(),
                "--resolve",
                &format!("{DOMAIN}:443:{}", ns.guest_ip),
                &format!("https://{DOMAIN}/index.html"),
            ],
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "curl over HTTPS failed: {err}\n{}",
        g.failure("acme")
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over acme\n");
    assert!(
        err.contains(&format!("\"{DOMAIN}\" matched")) || err.contains(DOMAIN),
        "{err}"
    );
    // The served certificate names the domain, issued by pebble.
    let text = served_cert(&ns);
    assert!(
        text.contains(&format!("DNS:{DOMAIN}")),
        "certificate: {text}"
    );
    assert!(text.to_lowercase().contains("pebble"), "issuer: {text}");
    for l in g.lines().iter().filter(|l| l.contains("ACME")) {
        eprintln!("guest: {l}");
    }
    g.assert_output_contains("httpd: ACME: new account key in /state/acme/account.key.pem");
    let first = served_fingerprint(&ns);
    drop(g);
    // The account, the certificate and its key are on the state disk.
    let crt1 = uk_cli::statedisk::read_file(&state, CRT).expect("certificate on the state disk");
    assert!(String::from_utf8_lossy(&crt1).contains("BEGIN CERTIFICATE"));
    uk_cli::statedisk::read_file(&state, KEY).expect("key on the state disk");
    uk_cli::statedisk::read_file(&state, "acme/account.key.pem")
        .expect("account on the state disk");
    let issued = pebble_says(&log, "Issued certificate serial");
    assert_eq!(issued, 1, "pebble log: {}", pebble_log());
    assert_eq!(pebble_says(&log, "There are now 1 accounts"), 1);

    // Second boot with the same state disk: the stored certificate is
    // served at once, with no new order.
    let g = Guest::boot_image(
        "httpd",
        uk_tests::image_flavor("httpd", Flavor::Tls),
        Machine::Microvm,
        ns.boot_opts(&args)
            .disk(&image)
            .state_disk(&state)
            .mem("128M"),
    );
    g.wait_for(
        "httpd: HTTPS on port 443 with the ACME certificate for acme-test.example (loaded from the state disk",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("stored certificate not served: {e}\n{}", g.failure("acme")));
    assert_eq!(served_fingerprint(&ns), first, "not the stored certificate");
    let out = ns
        .command(
            "curl",
            &[
                "-sS",
                "--max-time",
                "30",
                "--cacert",
                &root.display().to_string(),
                "--resolve",
                &format!("{DOMAIN}:443:{}", ns.guest_ip),
                &format!("https://{DOMAIN}/index.html"),
            ],
        )
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello over acme\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = g.output();
    assert!(!text.contains("answering the HTTP-01 challenge"), "{text}");
    assert!(!text.contains("new account key"), "{text}");
    assert_eq!(
        pebble_says(&log, "Issued certificate serial"),
        issued,
        "a new order on the second boot"
    );
    for l in g
        .lines()
        .iter()
        .filter(|l| l.contains("ACME") || l.contains("state disk"))
    {
        eprintln!("guest (state disk, boot 2): {l}");
    }
    drop(g);

    // The stored states of the next boots: a certificate for the domain
    // signed by the test CA that is due for renewal.
    std::fs::create_dir_all(dir.join("site2/acme")).unwrap();
    std::fs::create_dir_all(dir.join("site2/www")).unwrap();
    std::fs::write(dir.join("site2/www/index.html"), b"hello over acme\n").unwrap();
    let made = Command::new("python3")
        .args(["-c", STORED_STATE])
        .arg(&dir)
        .arg(DOMAIN)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        skip(
            Some("acme stored state"),
            "python3 with `cryptography` is needed for the stored-state part",
        );
        return;
    }
    // Third boot with the state disk holding that due certificate: served
    // at once, renewed with the account of the first boot (pebble still
    // knows one account), the new certificate kept on the state disk.
    let due_crt = std::fs::read(dir.join("site2").join(CRT)).unwrap();
    uk_cli::statedisk::write_file(&state, CRT, &due_crt).unwrap();
    uk_cli::statedisk::write_file(
        &state,
        KEY,
        &std::fs::read(dir.join("site2").join(KEY)).unwrap(),
    )
    .unwrap();
    let g = Guest::boot_image(
        "httpd",
        uk_tests::image_flavor("httpd", Flavor::Tls),
        Machine::Microvm,
        ns.boot_opts(&args)
            .disk(&image)
            .state_disk(&state)
            .mem("128M"),
    );
    g.wait_for(
        "httpd: HTTPS on port 443 with the ACME certificate for acme-test.example (loaded from the state disk",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("stored certificate not served: {e}\n{}", g.failure("acme")));
    g.wait_for(
        "httpd: HTTPS now with the ACME certificate for acme-test.example (obtained",
        OBTAIN_TIMEOUT,
    )
    .unwrap_or_else(|e| {
        panic!(
            "no renewal: {e}\n--- pebble ---\n{}\n{}",
            pebble_log(),
            g.failure("acme")
        )
    });
    g.assert_output_contains("httpd: ACME: account key loaded from /state/acme/account.key.pem");
    assert_eq!(
        pebble_says(&log, "There are now 2 accounts"),
        0,
        "a new account: {}",
        pebble_log()
    );
    assert_eq!(pebble_says(&log, "Issued certificate serial"), issued + 1);
    let renewed = served_fingerprint(&ns);
    assert_ne!(renewed, first);
    drop(g);
    let crt3 = uk_cli::statedisk::read_file(&state, CRT).unwrap();
    assert_ne!(
        crt3, due_crt,
        "the renewed certificate is not on the state disk"
    );
    assert_ne!(crt3, crt1);

    // Without a state disk, a stored state put in the image (`--acme-state`,
    // read only): the stored certificate is served at once, and as it is
    // due it is renewed with the stored account key, the new one replacing
    // it (in /tmp/acme).
    let image2 = dir.join("site2.img");
    build_image_with(
        &dir.join("site2"),
        &image2,
        ImageFormat::Ext4,
        &acme.disk_files(),
    )
    .expect("build the ext4 image");
    let g = Guest::boot_image(
        "httpd",
        uk_tests::image_flavor("httpd", Flavor::Tls),
        Machine::Microvm,
        ns.boot_opts(&args).disk(&image2).mem("128M"),
    );
    g.wait_for(
        "httpd: HTTPS on port 443 with the ACME certificate for acme-test.example (loaded from the disk",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("stored certificate not served: {e}\n{}", g.failure("acme")));
    let started = Instant::now();
    g.wait_for(
        "httpd: HTTPS now with the ACME certificate for acme-test.example (obtained",
        OBTAIN_TIMEOUT,
    )
    .unwrap_or_else(|e| {
        panic!(
            "no renewal: {e}\n--- pebble ---\n{}\n{}",
            pebble_log(),
            g.failure("acme")
        )
    });
    eprintln!(
        "acme: renewed {:.1} s after the stored certificate was served",
        started.elapsed().as_secs_f64()
    );
    g.assert_output_contains("httpd: ACME: account key loaded from /acme/account.key.pem");
    // The private keys are not served, from the state directory or the
    // tmpfs fallback.
    for path in [
        "/acme/account.key.pem",
        "/tmp/acme/acme-test.example.key.pem",
    ] {
        let out = ns
            .command(
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "20",
                    &format!("http://{}{path}", ns.guest_ip),
                ],
            )
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "404", "{path}");
    }
    let text = served_cert(&ns);
    assert!(
        text.to_lowercase().contains("pebble"),
        "not renewed: {text}"
    );
    for l in g.lines().iter().filter(|l| l.contains("ACME")) {
        eprintln!("guest 2: {l}");
    }
    drop(g);
    drop(env);
}
