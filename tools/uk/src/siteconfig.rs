//! A site's optional `uk.toml`: what a static-site user configures, read
//! by `cargo uk run` and `cargo uk image` from the site folder, validated
//! (errors name the file and line) and turned into `httpd` arguments. The
//! same settings are command-line flags of `run` and `image`
//! ([`SiteArgs`]), which come after (and win over) the file's.
//!
//! ```toml
//! port = 80                 # the port httpd listens on (cargo uk run forwards 127.0.0.1:8080 to it)
//! listing = false           # list directories that have no index.html
//!
//! [headers]                 # extra fields on every response
//! "X-Frame-Options" = "DENY"
//!
//! [errors]                  # custom error pages (files in the site)
//! 404 = "/404.html"
//!
//! [[cache]]                 # Cache-Control per path pattern (* and ?), first match wins
//! path = "/assets/*"
//! value = "public, max-age=31536000, immutable"
//!
//! [[redirects]]             # first match wins; status 301 (default), 302, 307 or 308
//! from = "/old"
//! to = "/new/"
//! status = 301
//!
//! # HTTPS (a TLS build of httpd): PEM files, relative to this folder; put
//! # on the disk under /.uk/tls/ (never served). The key must not be in the
//! # site folder itself.
//! tls_cert = "../tls/fullchain.pem"
//! tls_key = "../tls/privkey.pem"
//! redirect_https = true     # plain HTTP answers 301 to https://HOST/PATH
//! hsts = 31536000           # Strict-Transport-Security max-age on HTTPS responses
//! ```
//!
//! The file itself is packed into the image like any other file; httpd
//! never reads it: its settings reach httpd as arguments on the kernel
//! command line (`--port`, `--header`, `--cache-rule`, `--redirect`,
//! `--error-page`, `--listing`, and `--tls-cert`/`--tls-key` naming the
//! files on the disk, `--redirect-https`, `--hsts`), checked by the same
//! parser httpd uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::Error;

/// The file name looked for in the site folder.
pub const FILE_NAME: &str = "uk.toml";

/// The site settings as command-line flags of `run` and `image`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct SiteArgs {
    /// The port httpd listens on in the guest (uk.toml: port; default 80)
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// An extra response header, 'Name: value' (uk.toml: [headers]; repeatable)
    #[arg(long = "header", value_name = "'NAME: VALUE'")]
    pub headers: Vec<String>,
    /// Cache-Control for paths matching a pattern, 'PATTERN=VALUE' (uk.toml:
    /// [[cache]]; repeatable, first match wins)
    #[arg(long = "cache", value_name = "'PATTERN=VALUE'")]
    pub cache: Vec<String>,
    /// A redirect, 'FROM TO [STATUS]' (uk.toml: [[redirects]]; repeatable)
    #[arg(long = "redirect", value_name = "'FROM TO [STATUS]'")]
    pub redirects: Vec<String>,
    /// A custom error page, STATUS=/PATH (uk.toml: [errors]; repeatable)
    #[arg(long = "error-page", value_name = "STATUS=/PATH")]
    pub error_pages: Vec<String>,
    /// Directory listings on or off (uk.toml: listing)
    #[arg(long, value_name = "on|off", value_parser = ["on", "off"])]
    pub listing: Option<String>,
    /// HTTPS: a PEM certificate chain, put on the disk at /.uk/tls/cert.pem
    /// (uk.toml: tls_cert; needs --tls-key and the TLS build)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// HTTPS: the certificate's PEM private key, put on the disk at
    /// /.uk/tls/key.pem (uk.toml: tls_key)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Plain HTTP answers 301 to the same URL on HTTPS (uk.toml:
    /// redirect_https)
    #[arg(long)]
    pub redirect_https: bool,
    /// Strict-Transport-Security: max-age=SECONDS on HTTPS responses
    /// (uk.toml: hsts)
    #[arg(long, value_name = "SECONDS")]
    pub hsts: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    port: Option<Spanned<i64>>,
    listing: Option<Spanned<bool>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    errors: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    cache: Vec<Spanned<RawCache>>,
    #[serde(default)]
    redirects: Vec<Spanned<RawRedirect>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    redirect_https: Option<Spanned<bool>>,
    hsts: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    path: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirect {
    from: String,
    to: String,
    status: Option<u16>,
}

/// A validated site configuration: httpd arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteConfig {
    /// The port httpd listens on, if not 80.
    pub port: Option<u16>,
    /// The httpd arguments (without `--port` and the TLS files).
    pub args: Vec<String>,
    /// HTTPS: the certificate and key to put on the disk (checked).
    pub tls: Option<crate::tls::TlsFiles>,
}

impl SiteConfig {
    /// Every httpd argument, `--port` and `--tls-cert`/`--tls-key` (the
    /// files' paths on the disk) included.
    pub fn httpd_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(p) = self.port {
            v.extend(["--port".to_string(), p.to_string()]);
        }
        if self.tls.is_some() {
            v.extend(crate::tls::TlsFiles::httpd_args());
        }
        v.extend(self.args.iter().cloned());
        v
    }

    /// The files to add to the disk beside the site: (host file, guest
    /// path).
    pub fn disk_files(&self) -> Vec<(PathBuf, String)> {
        self.tls
            .as_ref()
            .map(crate::tls::TlsFiles::disk_files)
            .unwrap_or_default()
    }

    /// `--redirect-https` and `--hsts` need HTTPS.
    fn check_https_options(&self) -> Result<(), String> {
        if self.tls.is_none()
            && let Some(a) = self
                .args
                .iter()
                .find(|a| *a == "--redirect-https" || *a == "--hsts")
        {
            return Err(format!(
                "{a} (uk.toml: {}) needs HTTPS: a certificate and key (tls_cert and tls_key \
                 in uk.toml, or --tls-cert and --tls-key)",
                a.trim_start_matches("--").replace('-', "_")
            ));
        }
        Ok(())
    }
}

/// The HTTPS files, both or neither, checked (PEM, validity, key match).
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<crate::tls::TlsFiles>, String> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(_), None) => Err("a TLS certificate needs its key (tls_key, --tls-key)".into()),
        (None, Some(_)) => Err("a TLS key needs its certificate (tls_cert, --tls-cert)".into()),
        (Some(cert), Some(key)) => {
            crate::tls::check(&cert, &key).map_err(|e| e.message())?;
            Ok(Some(crate::tls::TlsFiles { cert, key }))
        }
    }
}

/// Checks an HTTPS option with httpd's parser (with a certificate given,
/// which it needs).
fn check_https(flag: &str, value: Option<&str>) -> Result<(), String> {
    let mut a = vec!["--tls-cert", "/c", "--tls-key", "/k", flag];
    a.extend(value);
    uk_http::config::parse_args(&a)
        .map(drop)
        .map_err(|e| e.trim_start_matches(&format!("{flag}: ")).to_string())
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Checks one httpd flag and value with httpd's own parser; an arg that
/// cannot travel on the kernel command line (a double quote) is refused.
fn check(flag: &str, value: &str) -> Result<(), String> {
    if value.contains(['"', '\\', '$']) {
        return Err(
            "'\"', '\\' and '$' cannot be passed on the kernel command line (or through GRUB)"
                .into(),
        );
    }
    uk_http::config::parse_args(&[flag, value])
        .map(drop)
        .map_err(|e| e.trim_start_matches(&format!("{flag}: ")).to_string())
}

/// Parses and validates the text of a `uk.toml` (`path` names it in
/// errors).
pub fn parse(text: &str, path: &Path) -> Result<SiteConfig, Error> {
    let at = |span: std::ops::Range<usize>, msg: &str| {
        Error::Usage(format!(
            "{}:{}: {msg}",
            path.display(),
            line_of(text, span.start)
        ))
    };
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        match e.span() {
            Some(s) => at(s, &msg),
            None => Error::Usage(format!("{}: {msg}", path.display())),
        }
    })?;
    let mut cfg = SiteConfig::default();
    if let Some(p) = &raw.port {
        let v = *p.get_ref();
        let port = u16::try_from(v)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| at(p.span(), &format!("port: {v} is not a port (1 to 65535)")))?;
        cfg.port = (port != 80).then_some(port);
    }
    for (name, value) in &raw.headers {
        let h = format!("{name}: {}", value.get_ref());
        check("--header", &h).map_err(|e| at(value.span(), &format!("headers: {e}")))?;
        cfg.args.extend(["--header".into(), h]);
    }
    for c in &raw.cache {
        let rule = format!("{}={}", c.get_ref().path, c.get_ref().value);
        check("--cache-rule", &rule).map_err(|e| at(c.span(), &format!("cache: {e}")))?;
        cfg.args.extend(["--cache-rule".into(), rule]);
    }
    for r in &raw.redirects {
        let v = r.get_ref();
        let line = format!("{} {} {}", v.from, v.to, v.status.unwrap_or(301));
        if v.from.contains(char::is_whitespace) || v.to.contains(char::is_whitespace) {
            return Err(at(
                r.span(),
                "redirects: 'from' and 'to' cannot contain spaces",
            ));
        }
        check("--redirect", &line).map_err(|e| at(r.span(), &format!("redirects: {e}")))?;
        cfg.args.extend(["--redirect".into(), line]);
    }
    for (status, page) in &raw.errors {
        let v = format!("{status}={}", page.get_ref());
        check("--error-page", &v).map_err(|e| at(page.span(), &format!("errors: {e}")))?;
        cfg.args.extend(["--error-page".into(), v]);
    }
    if let Some(l) = &raw.listing {
        cfg.args.extend([
            "--listing".into(),
            if *l.get_ref() { "on" } else { "off" }.into(),
        ]);
    }
    // Paths relative to the folder of the file.
    let base = path.parent().unwrap_or(Path::new("."));
    let rel = |s: &Spanned<String>| base.join(s.get_ref());
    let span = raw
        .tls_cert
        .as_ref()
        .or(raw.tls_key.as_ref())
        .map(Spanned::span);
    cfg.tls = tls_files(
        raw.tls_cert.as_ref().map(rel),
        raw.tls_key.as_ref().map(rel),
    )
    .map_err(|e| at(span.clone().unwrap_or(0..0), &format!("tls: {e}")))?;
    if let Some(t) = &cfg.tls {
        crate::tls::refuse_key_in_site(base, &t.key)
            .map_err(|e| at(span.unwrap_or(0..0), &format!("tls_key: {}", e.message())))?;
    }
    if let Some(r) = &raw.redirect_https
        && *r.get_ref()
    {
        cfg.args.push("--redirect-https".into());
    }
    if let Some(h) = &raw.hsts {
        let v = h.get_ref().to_string();
        check_https("--hsts", Some(&v)).map_err(|e| at(h.span(), &format!("hsts: {e}")))?;
        cfg.args.extend(["--hsts".into(), v]);
    }
    // Whether --redirect-https and --hsts have HTTPS is checked once the
    // flags are combined with the file (`combine`).
    Ok(cfg)
}

/// Reads `DIR/uk.toml` if there is one.
pub fn load(site: &Path) -> Result<Option<SiteConfig>, Error> {
    let path: PathBuf = site.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text, &path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Failed(format!("{}: {e}", path.display()))),
    }
}

/// The file's settings (if any), then the flags': the flags' rules come
/// first (first match wins), their port replaces the file's.
pub fn combine(file: Option<SiteConfig>, flags: &SiteArgs) -> Result<SiteConfig, Error> {
    let mut out = SiteConfig::default();
    let flag_err = |flag: &str, e: String| Error::Usage(format!("--{flag}: {e}"));
    for h in &flags.headers {
        check("--header", h).map_err(|e| flag_err("header", e))?;
        out.args.extend(["--header".into(), h.clone()]);
    }
    for c in &flags.cache {
        check("--cache-rule", c).map_err(|e| flag_err("cache", e))?;
        out.args.extend(["--cache-rule".into(), c.clone()]);
    }
    for r in &flags.redirects {
        check("--redirect", r).map_err(|e| flag_err("redirect", e))?;
        out.args.extend(["--redirect".into(), r.clone()]);
    }
    for p in &flags.error_pages {
        check("--error-page", p).map_err(|e| flag_err("error-page", e))?;
        out.args.extend(["--error-page".into(), p.clone()]);
    }
    if let Some(f) = file {
        out.port = f.port;
        out.args.extend(f.args);
        out.tls = f.tls;
    }
    if let Some(l) = &flags.listing {
        out.args.extend(["--listing".into(), l.clone()]);
    }
    if let Some(p) = flags.port {
        if p == 0 {
            return Err(Error::Usage("--port: 0 is not a port".into()));
        }
        out.port = (p != 80).then_some(p);
    }
    if flags.tls_cert.is_some() || flags.tls_key.is_some() {
        out.tls = tls_files(flags.tls_cert.clone(), flags.tls_key.clone()).map_err(Error::Usage)?;
    }
    if flags.redirect_https {
        out.args.push("--redirect-https".into());
    }
    if let Some(h) = flags.hsts {
        let v = h.to_string();
        check_https("--hsts", Some(&v)).map_err(|e| flag_err("hsts", e))?;
        out.args.extend(["--hsts".into(), v]);
    }
    out.check_https_options().map_err(Error::Usage)?;
    Ok(out)
}

/// The site config of `site` with the flags applied; `None` when neither
/// says anything.
pub fn for_site(site: Option<&Path>, flags: &SiteArgs) -> Result<Option<SiteConfig>, Error> {
    let file = match site {
        Some(s) => load(s)?,
        None => None,
    };
    let had_file = file.is_some();
    let c = combine(file, flags)?;
    if let (Some(site), Some(t)) = (site, &c.tls) {
        crate::tls::refuse_key_in_site(site, &t.key)?;
    }
    Ok((had_file || c != SiteConfig::default()).then_some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
port = 8081
listing = true

[headers]
"X-Frame-Options" = "DENY"

[errors]
404 = "/404.html"

[[cache]]
path = "/assets/*"
value = "public, max-age=31536000, immutable"

[[cache]]
path = "*.html"
value = "no-cache"

[[redirects]]
from = "/old"
to = "/new/"

[[redirects]]
from = "/blog/*"
to = "https://blog.example.org/"
status = 302
"#;

    fn p(text: &str) -> Result<SiteConfig, Error> {
        parse(text, Path::new("site/uk.toml"))
    }

    fn err(text: &str) -> String {
        let e = p(text).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        e.message()
    }

    #[test]
    fn full_file() {
        let c = p(FULL).unwrap();
        assert_eq!(c.port, Some(8081));
        assert_eq!(
            c.httpd_args(),
            [
                "--port",
                "8081",
                "--header",
                "X-Frame-Options: DENY",
                "--cache-rule",
                "/assets/*=public, max-age=31536000, immutable",
                "--cache-rule",
                "*.html=no-cache",
                "--redirect",
                "/old /new/ 301",
                "--redirect",
                "/blog/* https://blog.example.org/ 302",
                "--error-page",
                "404=/404.html",
                "--listing",
                "on"
            ]
        );
        // httpd accepts exactly these.
        let httpd = uk_http::config::parse_args(&c.httpd_args()).unwrap();
        assert_eq!(httpd.port, 8081);
        assert!(httpd.listing);
        assert_eq!(
            httpd.cache_control_for("/assets/x.js"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(httpd.redirect_for("/blog/a").unwrap().status, 302);
        assert_eq!(httpd.error_page(404), Some("/404.html"));
        assert_eq!(p("").unwrap(), SiteConfig::default());
        assert_eq!(p("port = 80").unwrap().httpd_args(), Vec::<String>::new());
    }

    #[test]
    fn errors_name_the_line() {
        assert!(
            err("port = 80\nprot = 1\n").starts_with("site/uk.toml:2:"),
            "{}",
            err("port = 80\nprot = 1\n")
        );
        assert!(err("port = 80\nprot = 1\n").contains("prot"));
        let e = err("\n\nport = 70000\n");
        assert!(e.starts_with("site/uk.toml:3: port: 70000"), "{e}");
        let e = err("[errors]\n404 = \"404.html\"\n");
        assert!(e.starts_with("site/uk.toml:2: errors:"), "{e}");
        let e = err("[errors]\n200 = \"/ok.html\"\n");
        assert!(e.starts_with("site/uk.toml:2:"), "{e}");
        let e = err("[headers]\n\"Content-Length\" = \"3\"\n");
        assert!(e.starts_with("site/uk.toml:2: headers:"), "{e}");
        let e = err("\n[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nstatus = 200\n");
        assert!(
            e.starts_with("site/uk.toml:2: redirects:")
                || e.starts_with("site/uk.toml:3: redirects:"),
            "{e}"
        );
        let e = err("[[cache]]\npath = \"/a\"\n");
        assert!(e.contains("value"), "{e}");
        let e = err("port = \"eighty\"\n");
        assert!(e.starts_with("site/uk.toml:1:"), "{e}");
        let e = err("listing = true\nlisting = false\n");
        assert!(e.starts_with("site/uk.toml:2:"), "{e}");
        let e = err("[headers]\n\"X-A\" = 'say \"hi\"'\n");
        assert!(e.contains("kernel command line"), "{e}");
    }

    #[test]
    fn lines() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }

    #[test]
    fn flags_combine_with_the_file() {
        let flags = SiteArgs {
            port: Some(9000),
            headers: vec!["X-B: 2".into()],
            cache: vec!["/*=no-store".into()],
            redirects: vec!["/x /y 307".into()],
            error_pages: vec!["403=/403.html".into()],
            listing: Some("off".into()),
            ..Default::default()
        };
        let c = combine(Some(p(FULL).unwrap()), &flags).unwrap();
        assert_eq!(c.port, Some(9000));
        let a = c.httpd_args();
        // The flags' rules first; the listing flag after the file's.
        assert_eq!(&a[..4], ["--port", "9000", "--header", "X-B: 2"]);
        assert_eq!(&a[a.len() - 2..], ["--listing", "off"]);
        let httpd = uk_http::config::parse_args(&a).unwrap();
        assert_eq!(httpd.cache_control_for("/assets/x"), Some("no-store"));
        assert!(!httpd.listing);
        assert!(
            combine(
                None,
                &SiteArgs {
                    headers: vec!["bad".into()],
                    ..Default::default()
                }
            )
            .is_err()
        );
        assert!(
            combine(
                None,
                &SiteArgs {
                    redirects: vec!["/a".into()],
                    ..Default::default()
                }
            )
            .is_err()
        );
        assert_eq!(
            combine(None, &SiteArgs::default()).unwrap(),
            SiteConfig::default()
        );
    }

    #[test]
    fn tls_settings() {
        let dir = std::env::temp_dir().join(format!("uk-siteconfig-tls-{}", std::process::id()));
        let site = dir.join("site");
        std::fs::create_dir_all(&site).unwrap();
        let files = crate::tls::make_local_cert(&dir.join("tls")).unwrap();
        let write = |text: &str| std::fs::write(site.join(FILE_NAME), text).unwrap();
        let flags = SiteArgs::default();
        // Paths relative to the site folder; the files on the disk.
        write(
            "tls_cert = \"../tls/cert.pem\"\ntls_key = \"../tls/key.pem\"\nredirect_https = true\nhsts = 600\n",
        );
        let c = for_site(Some(&site), &flags).unwrap().unwrap();
        assert_eq!(c.tls.as_ref().unwrap().key, site.join("../tls/key.pem"));
        let a = c.httpd_args();
        assert_eq!(
            a,
            [
                "--tls-cert",
                crate::tls::GUEST_CERT,
                "--tls-key",
                crate::tls::GUEST_KEY,
                "--redirect-https",
                "--hsts",
                "600"
            ]
        );
        let httpd = uk_http::config::parse_args(&a).unwrap();
        assert_eq!((httpd.redirect_https, httpd.hsts), (Some(301), Some(600)));
        assert_eq!(c.disk_files().len(), 2);
        // One without the other, a bad file, a key in the site, HTTPS
        // options without a certificate, a bad max-age.
        write("\ntls_cert = \"../tls/cert.pem\"\n");
        let e = for_site(Some(&site), &flags).unwrap_err().message();
        assert!(
            e.contains("uk.toml:2: tls:") && e.contains("needs its key"),
            "{e}"
        );
        write("tls_cert = \"../tls/key.pem\"\ntls_key = \"../tls/key.pem\"\n");
        let e = for_site(Some(&site), &flags).unwrap_err().message();
        assert!(e.contains("no PEM certificate"), "{e}");
        std::fs::copy(&files.key, site.join("key.pem")).unwrap();
        write("tls_cert = \"../tls/cert.pem\"\ntls_key = \"key.pem\"\n");
        let e = for_site(Some(&site), &flags).unwrap_err().message();
        assert!(e.contains("would be served"), "{e}");
        write("redirect_https = true\n");
        let e = for_site(Some(&site), &flags).unwrap_err().message();
        assert!(
            e.contains("redirect_https") && e.contains("needs HTTPS"),
            "{e}"
        );
        write("hsts = -5\n");
        let e = for_site(Some(&site), &flags).unwrap_err().message();
        assert!(e.contains("uk.toml:1: hsts:"), "{e}");
        // The flags give the files: the file's HTTPS options are then fine.
        write("redirect_https = true\n");
        let flags = SiteArgs {
            tls_cert: Some(files.cert.clone()),
            tls_key: Some(files.key.clone()),
            hsts: Some(60),
            ..Default::default()
        };
        let c = for_site(Some(&site), &flags).unwrap().unwrap();
        assert!(c.httpd_args().contains(&"--redirect-https".to_string()));
        assert!(c.httpd_args().contains(&"60".to_string()));
        let flags = SiteArgs {
            tls_cert: Some(files.cert.clone()),
            tls_key: Some(site.join("key.pem")),
            ..Default::default()
        };
        let e = for_site(Some(&site), &flags).unwrap_err().message();
        assert!(e.contains("would be served"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_in_a_folder() {
        let dir = std::env::temp_dir().join(format!("uk-siteconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir).unwrap(), None);
        assert_eq!(for_site(Some(&dir), &SiteArgs::default()).unwrap(), None);
        std::fs::write(dir.join(FILE_NAME), "port = 8080\n").unwrap();
        assert_eq!(load(&dir).unwrap().unwrap().port, Some(8080));
        std::fs::write(dir.join(FILE_NAME), "port = 0\n").unwrap();
        let e = load(&dir).unwrap_err().message();
        assert!(e.contains("uk.toml:1: port"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
