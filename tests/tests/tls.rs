//! HTTPS: the TLS flavour of httpd (`cargo uk build httpd --tls`) serves the
//! site over TLS 1.3 and 1.2 beside HTTP, survives garbage and truncated
//! handshakes, and refuses to start with a key that does not match its
//! certificate or with an expired certificate. Certificates are made on the
//! host with Python's `cryptography` (skipped without it) and put on the
//! site disk.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use uk_cli::Flavor;
use uk_cli::image::{ImageFormat, build_image_from_dir, pseudo_random_bytes, temp_path};
use uk_tests::{BootOpts, Guest, Machine, free_port, skip};

/// The TLS image, built once per test process.
fn tls_image() -> PathBuf {
    uk_tests::image_flavor("httpd", Flavor::Tls)
}

/// Writes into `dir`: `cert.pem`/`key.pem` (P-256, valid from yesterday for
/// 30 days, CN and SAN localhost), `other-key.pem` (a different key) and
/// `expired.pem`/`expired-key.pem` (valid 60 to 30 days ago).
const MAKE_CERTS: &str = r#"
import datetime, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
d = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc)
def make(name, keyname, start, end):
    key = ec.generate_private_key(ec.SECP256R1())
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (x509.CertificateBuilder().subject_name(subj).issuer_name(subj)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    open(f"{d}/{name}", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open(f"{d}/{keyname}", "wb").write(key.private_bytes(serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
day = datetime.timedelta(days=1)
make("cert.pem", "key.pem", now - day, now + 30 * day)
make("expired.pem", "expired-key.pem", now - 60 * day, now - 30 * day)
ec_key = ec.generate_private_key(ec.SECP256R1())
open(f"{d}/other-key.pem", "wb").write(ec_key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"#;

struct Site {
    image: PathBuf,
    /// The host copy of the certificate (curl trusts it).
    cert: PathBuf,
    data: Vec<u8>,
}

/// The site disk: `/www/data.bin` (300,001 pseudo-random bytes),
/// `/www/hello.txt` and the certificates under `/tls`. `None` without
/// Python's `cryptography`.
fn site() -> Option<&'static Site> {
    static SITE: OnceLock<Option<Site>> = OnceLock::new();
    SITE.get_or_init(|| {
        let dir = temp_path("tls-site");
        let (www, tls) = (dir.join("www"), dir.join("tls"));
        std::fs::create_dir_all(&www).unwrap();
        std::fs::create_dir_all(&tls).unwrap();
        let ok = Command::new("python3")
            .args(["-c", MAKE_CERTS])
            .arg(&tls)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        let data = pseudo_random_bytes(7, 300_001);
        std::fs::write(www.join("data.bin"), &data).unwrap();
        std::fs::write(www.join("hello.txt"), b"hello over tls\n").unwrap();
        let cert = temp_path("tls-cert").with_extension("pem");
        std::fs::copy(tls.join("cert.pem"), &cert).unwrap();
        let image = temp_path("tls-test").with_extension("img");
        build_image_from_dir(&dir, &image, ImageFormat::Ext4).expect("build the ext4 image");
        let _ = std::fs::remove_dir_all(&dir);
        Some(Site { image, cert, data })
    })
    .as_ref()
}

fn site_or_skip(name: &str) -> Option<&'static Site> {
    if !uk_cli::build::have_c_compiler() {
        skip(Some(name), "a C compiler (gcc) is needed to build ring");
        return None;
    }
    let s = site();
    if s.is_none() {
        skip(
            Some(name),
            "python3 with `cryptography` is needed to make certificates",
        );
    }
    s
}

fn boot(site: &Site, cert: &str, key: &str, http: u16, https: u16) -> Guest {
    boot_opts(site, cert, key, http, https, false)
}

fn boot_opts(site: &Site, cert: &str, key: &str, http: u16, https: u16, qmp: bool) -> Guest {
    let args = [
        "--root",
        "/www",
        "--no-access-log",
        "--max-conns",
        "32",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    Guest::boot_image(
        "httpd",
        tls_image(),
        Machine::Microvm,
        (if qmp {
            BootOpts::args(&args).qmp()
        } else {
            BootOpts::args(&args)
        })
        .mem("128M")
        .disk(&site.image)
        .fwd(http, 80)
        .fwd(https, 443),
    )
}

/// curl over TLS `version` ("1.3" or "1.2"), trusting the test certificate;
/// returns (body, curl's stderr).
fn curl(site: &Site, port: u16, version: &str, path: &str) -> (Vec<u8>, String) {
    curl_with(site, port, version, path, &[])
}

fn curl_with(
    site: &Site,
    port: u16,
    version: &str,
    path: &str,
    extra: &[&str],
) -> (Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "120", "--cacert"])
        .arg(&site.cert)
        .args(extra)
        .args([
            &format!("--tlsv{version}"),
            "--tls-max",
            version,
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            &format!("https://localhost:{port}{path}"),
        ])
        .output()
        .expect("run curl");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "curl TLS {version} {path}: {err}");
    (out.stdout, err)
}

fn good_fetches(site: &Site, port: u16) {
    for version in ["1.3", "1.2"] {
        let (body, err) = curl(site, port, version, "/data.bin");
        assert!(
            body == site.data,
            "TLS {version}: body differs ({} bytes)",
            body.len()
        );
        assert!(
            err.contains(&format!("TLSv{version}")),
            "TLS {version} not negotiated: {err}"
        );
        assert!(
            err.contains("ALPN: server accepted http/1.1"),
            "no ALPN http/1.1 with TLS {version}: {err}"
        );
    }
}

/// Sends `bytes` to the HTTPS port, then reads until the guest closes (or
/// 15 s pass: the header timeout is 10 s).
fn send_and_wait_close(port: u16, bytes: &[u8], half_close: bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// With the `openssl` CLI: a cipher suite the server does not offer gets a
/// handshake_failure alert (not a bare close), and a response that ends
/// the connection is followed by close_notify.
fn openssl_sees_alerts(port: u16) {
    if !Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return;
    }
    let connect = format!("127.0.0.1:{port}");
    let out = Command::new("timeout")
        .args(["30", "openssl", "s_client", "-connect", &connect])
        .args(["-tls1_2", "-cipher", "AES128-SHA"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("alert handshake failure"), "{text}");
    let mut child = Command::new("timeout")
        .args(["30", "openssl", "s_client", "-connect", &connect])
        .args(["-servername", "localhost", "-msg", "-quiet", "-ign_eof"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"GET /hello.txt HTTP/1.0\r\n\r\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().expect("openssl output");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("hello over tls"), "{text}");
    assert!(
        text.contains("<<< TLS 1.3, Alert [length 0002], warning close_notify"),
        "no close_notify from the server: {text}"
    );
}

#[test]
fn https_serves_files_over_tls13_and_tls12_and_survives_bad_input() {
    let Some(site) = site_or_skip("https_serves_files") else {
        return;
    };
    let (http, https) = (free_port(), free_port());
    let mut g = boot_opts(site, "/tls/cert.pem", "/tls/key.pem", http, https, true);
    g.expect("httpd: HTTPS on port 443");
    g.expect("httpd: serving");
    good_fetches(site, https);
    // Plain HTTP still beside it.
    let out = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{http}/hello.txt")])
        .output()
        .expect("run curl");
    assert_eq!(out.stdout, b"hello over tls\n");
    // Garbage instead of a ClientHello, in one piece and as a flood.
    send_and_wait_close(https, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
    send_and_wait_close(https, &pseudo_random_bytes(3, 64 * 1024), true);
    // A handshake record that announces 512 bytes and stops after 40; once
    // with the client half-closing, once left open until the guest's
    // header timeout ends it.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.extend_from_slice(&[0x42; 29]);
    send_and_wait_close(https, &hello, true);
    send_and_wait_close(https, &hello, false);
    // A flood: 40 connections (over the 32-connection limit of this boot)
    // each holding a partial ClientHello, then all dropped at once.
    let flood: Vec<TcpStream> = (0..40)
        .filter_map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", https)).ok()?;
            c.write_all(&hello).ok()?;
            Some(c)
        })
        .collect();
    assert!(flood.len() >= 32, "only {} connections", flood.len());
    drop(flood);
    // An oversized record header (length 0xffff).
    send_and_wait_close(https, &[0x17, 0x03, 0x03, 0xff, 0xff, 1, 2, 3], true);
    // Still serving, byte for byte.
    good_fetches(site, https);
    // A response that ends the connection (`Connection: close`, and
    // HTTP/1.0) arrives whole: the last records are sent before the close.
    for extra in [&["-H", "Connection: close"][..], &["-0"][..]] {
        let (body, err) = curl_with(site, https, "1.3", "/data.bin", extra);
        assert!(
            body == site.data,
            "{extra:?}: body differs ({} bytes): {err}",
            body.len()
        );
    }
    assert!(!g.output().contains("panicked"), "{}", g.output());
    openssl_sees_alerts(https);
    // The record layer's copies are counted: six fetches of data.bin went
    // through the encryption (the response heads add a little).
    g.powerdown()
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    let copies = g
        .wait_for("httpd: copies ", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let count = |key: &str| -> u64 {
        copies
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {copies:?}"))
    };
    let body = 6 * site.data.len() as u64;
    let app_to_tls = count("app_to_tls");
    assert!(
        (body..body + 4096).contains(&app_to_tls),
        "app_to_tls={app_to_tls}, bodies {body}: {copies}"
    );
    assert!(count("tls_to_app") > 0, "{copies}");
    g.expect_exit(0);
}

#[test]
fn mismatched_key_refuses_to_start() {
    let Some(site) = site_or_skip("mismatched_key") else {
        return;
    };
    let mut g = boot(
        site,
        "/tls/cert.pem",
        "/tls/other-key.pem",
        free_port(),
        free_port(),
    );
    g.expect_exit(1);
    g.assert_output_contains("does not match /tls/cert.pem");
    g.assert_output_contains("not starting");
}

#[test]
fn expired_certificate_refuses_to_start() {
    let Some(site) = site_or_skip("expired_certificate") else {
        return;
    };
    let mut g = boot(
        site,
        "/tls/expired.pem",
        "/tls/expired-key.pem",
        free_port(),
        free_port(),
    );
    g.expect_exit(1);
    g.assert_output_contains("the certificate expired");
    g.assert_output_contains("not starting");
}
