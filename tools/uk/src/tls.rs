//! HTTPS files on httpd's disk.
//!
//! `cargo uk image|run --tls-cert FILE --tls-key FILE` (uk.toml: `tls_cert`,
//! `tls_key`) put a PEM certificate chain and its key on the site disk at
//! [`GUEST_CERT`] and [`GUEST_KEY`] (under the hidden folder `/.uk`, which
//! httpd never serves) and pass httpd `--tls-cert`/`--tls-key`. The files
//! are checked here first ([`check`]): PEM that parses, a certificate in its
//! validity period, a key that matches it (when the key is one `ring` reads:
//! PKCS#8 EC, Ed25519 or RSA; the guest checks every kind again).
//!
//! `cargo uk run --tls` without files makes a self-signed certificate for
//! `localhost` and `127.0.0.1` ([`local_cert`]) with `rcgen` (no openssl
//! needed), kept in `target/uk-tls/` and remade when it nears its end.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// Where the certificate chain is on the guest's disk.
pub const GUEST_CERT: &str = "/.uk/tls/cert.pem";
/// Where the key is on the guest's disk.
pub const GUEST_KEY: &str = "/.uk/tls/key.pem";
/// The host port `cargo uk run --tls` forwards to the guest's HTTPS port.
pub const LOCAL_HTTPS_PORT: u16 = 8443;

/// A certificate chain and its key on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// httpd's arguments for the files on the disk.
    pub fn httpd_args() -> [String; 4] {
        ["--tls-cert", GUEST_CERT, "--tls-key", GUEST_KEY].map(String::from)
    }

    /// The files to add to the disk: (host file, guest path).
    pub fn disk_files(&self) -> Vec<(PathBuf, String)> {
        vec![
            (self.cert.clone(), GUEST_CERT.to_string()),
            (self.key.clone(), GUEST_KEY.to_string()),
        ]
    }
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn read(p: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(p).map_err(|e| Error::Usage(format!("{}: {e}", p.display())))
}

/// Checks that `cert` holds PEM certificates, the first one valid now,
/// and `key` a PEM private key that belongs to it. The error names the
/// file and the problem.
pub fn check(cert: &Path, key: &Path) -> Result<(), Error> {
    let bad = |p: &Path, what: String| Error::Usage(format!("{}: {what}", p.display()));
    let pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, format!("not a PEM certificate file ({e:?})")))?;
    let Some(leaf) = chain.first() else {
        return Err(bad(
            cert,
            "no PEM certificate in it (-----BEGIN CERTIFICATE-----)".into(),
        ));
    };
    let v = uk_http::x509::validity(leaf.as_ref())
        .map_err(|_| bad(cert, "the certificate does not parse as X.509".into()))?;
    let now = unix_now();
    let date = |t: i64| uk_http::format_http_date(t.max(0) as u64);
    if now > v.not_after {
        return Err(bad(
            cert,
            format!("the certificate expired on {}", date(v.not_after)),
        ));
    }
    if now < v.not_before {
        return Err(bad(
            cert,
            format!("the certificate is not valid before {}", date(v.not_before)),
        ));
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        bad(
            key,
            format!("no PEM private key in it (PKCS#8, PKCS#1 or SEC1): {e:?}"),
        )
    })?;
    // A key rcgen/ring reads: its SubjectPublicKeyInfo is in the leaf
    // certificate, byte for byte, when they belong together.
    if let Ok(kp) = rcgen::KeyPair::try_from(&key_der) {
        use rcgen::PublicKeyData;
        let spki = kp.subject_public_key_info();
        if !leaf.as_ref().windows(spki.len()).any(|w| w == spki) {
            return Err(Error::Usage(format!(
                "{} does not match the certificate in {}",
                key.display(),
                cert.display()
            )));
        }
    }
    Ok(())
}

/// The folder of `cargo uk run --tls`'s certificate.
pub fn local_dir() -> PathBuf {
    crate::target_dir().join("uk-tls")
}

/// Makes a self-signed certificate for `localhost` and `127.0.0.1`, valid
/// from yesterday for 90 days, into `dir` (`cert.pem`, `key.pem`, the key
/// readable by its owner only).
pub fn make_local_cert(dir: &Path) -> Result<TlsFiles, Error> {
    let fail = |e: String| Error::Failed(format!("self-signed certificate: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| fail(e.to_string()))?;
    let today = unix_now().div_euclid(86_400);
    let (y, m, d) = crate::tlsclient::civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = crate::tlsclient::civil_from_days(today + 90);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, "localhost");
    params.distinguished_name = name;
    let key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&files.key);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&files.key)
            .map_err(|e| fail(format!("{}: {e}", files.key.display())))?;
        f.write_all(key.serialize_pem().as_bytes())
            .map_err(|e| fail(format!("{}: {e}", files.key.display())))?;
    }
    std::fs::write(&files.cert, cert.pem())
        .map_err(|e| fail(format!("{}: {e}", files.cert.display())))?;
    Ok(files)
}

/// `cargo uk run --tls`'s certificate: the one in [`local_dir`] if it is
/// still valid for a day, else a new one. Returns the files and whether
/// they were made now.
pub fn local_cert() -> Result<(TlsFiles, bool), Error> {
    let dir = local_dir();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let fresh = check(&files.cert, &files.key).is_ok()
        && std::fs::read(&files.cert).is_ok_and(|pem| {
            CertificateDer::pem_slice_iter(&pem)
                .next()
                .and_then(Result::ok)
                .and_then(|c| uk_http::x509::validity(c.as_ref()).ok())
                .is_some_and(|v| v.not_after > unix_now() + 86_400)
        });
    if fresh {
        return Ok((files, false));
    }
    make_local_cert(&dir).map(|f| (f, true))
}

/// Host paths whose files would be packed into the image from `site` and
/// served: `key` inside `site` (not under a hidden folder) is refused.
pub fn refuse_key_in_site(site: &Path, key: &Path) -> Result<(), Error> {
    let (Ok(site), Ok(k)) = (site.canonicalize(), key.canonicalize()) else {
        return Ok(());
    };
    if let Ok(rel) = k.strip_prefix(&site) {
        let hidden = rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
        if !hidden {
            return Err(Error::Usage(format!(
                "{}: the private key is inside the site folder {} and would be served; \
                 keep it outside (it goes to {GUEST_KEY} on the disk, which is never served)",
                key.display(),
                site.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificates_pass_the_checks_and_bad_files_do_not() {
        let dir = std::env::temp_dir().join(format!("uk-tls-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = make_local_cert(&dir.join("a")).unwrap();
        let b = make_local_cert(&dir.join("b")).unwrap();
        check(&a.cert, &a.key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key mode {mode:o}");
        let pem = std::fs::read_to_string(&a.cert).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        // Localhost and 127.0.0.1, valid now for about 90 days.
        let der = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let v = uk_http::x509::validity(der.as_ref()).unwrap();
        let now = unix_now();
        assert!(v.not_before < now && v.not_after > now + 80 * 86_400);
        assert!(der.as_ref().windows(9).any(|w| w == b"localhost"));
        assert!(der.as_ref().windows(4).any(|w| w == [127, 0, 0, 1]));
        // A key of another certificate.
        let e = check(&a.cert, &b.key).unwrap_err().message();
        assert!(e.contains("does not match"), "{e}");
        // The files swapped, garbage, a missing file.
        let e = check(&a.key, &a.key).unwrap_err().message();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = check(&a.cert, &a.cert).unwrap_err().message();
        assert!(e.contains("no PEM private key"), "{e}");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "hello\n").unwrap();
        let e = check(&junk, &a.key).unwrap_err().message();
        assert!(e.contains("junk.pem"), "{e}");
        let e = check(&dir.join("nope.pem"), &a.key).unwrap_err().message();
        assert!(e.contains("nope.pem"), "{e}");
        // A key inside the site folder would be served.
        std::fs::create_dir_all(dir.join("site/.hidden")).unwrap();
        std::fs::copy(&a.key, dir.join("site/key.pem")).unwrap();
        std::fs::copy(&a.key, dir.join("site/.hidden/key.pem")).unwrap();
        let e = refuse_key_in_site(&dir.join("site"), &dir.join("site/key.pem"))
            .unwrap_err()
            .message();
        assert!(e.contains("would be served"), "{e}");
        refuse_key_in_site(&dir.join("site"), &dir.join("site/.hidden/key.pem")).unwrap();
        refuse_key_in_site(&dir.join("site"), &a.key).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
