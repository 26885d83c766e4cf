//! The server's command line.

use uk_http::config::{Config, DataPath, LogLevel, fs_path, parse_args, parse_duration_ms};
use uk_http::resolve_target;

#[test]
fn defaults() {
    let c = parse_args::<&str>(&[]).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.port, 80);
    assert_eq!(c.root, "/");
    assert_eq!(c.index, "index.html");
    assert_eq!(c.data_path, DataPath::Sendfile);
    assert!(c.access_log);
    assert_eq!(c.shutdown_timeout_ms, 10_000);
}

#[test]
fn everything() {
    let c = parse_args(&[
        "--port",
        "8080",
        "--root=/www/",
        "--index",
        "home.htm",
        "--data-path",
        "mmap",
        "--no-access-log",
        "--log-level",
        "debug",
        "--max-conns=10",
        "--header-timeout",
        "500ms",
        "--idle-timeout",
        "2m",
        "--shutdown-timeout",
        "1500ms",
        "--max-request-line",
        "100",
        "--max-header-bytes",
        "200",
        "--max-headers",
        "5",
        "--max-body",
        "0",
        "--max-ranges",
        "3",
        "--cache-control",
        "max-age=60",
        "--backlog",
        "7",
        "--workers",
        "3",
    ])
    .unwrap();
    assert_eq!(c.port, 8080);
    assert_eq!(c.root, "/www");
    assert_eq!(c.index, "home.htm");
    assert_eq!(c.data_path, DataPath::Mmap);
    assert!(!c.access_log);
    assert_eq!(c.log_level, Some(LogLevel::Debug));
    assert_eq!(c.max_conns, 10);
    assert_eq!(c.header_timeout_ms, 500);
    assert_eq!(c.idle_timeout_ms, 120_000);
    assert_eq!(c.shutdown_timeout_ms, 1500);
    assert_eq!(c.limits.max_request_line, 100);
    assert_eq!(c.limits.max_header_bytes, 200);
    assert_eq!(c.limits.max_headers, 5);
    assert_eq!(c.limits.max_body, 0);
    assert_eq!(c.max_ranges, 3);
    assert_eq!(c.cache_control.as_deref(), Some("max-age=60"));
    assert_eq!(c.backlog, 7);
    assert_eq!(c.workers, Some(3));
}

#[test]
fn errors() {
    let e = |a: &[&str]| parse_args(a).unwrap_err();
    assert!(e(&["--port"]).contains("needs a value"));
    assert!(e(&["--port", "0"]).contains("bad port"));
    assert!(e(&["--port", "70000"]).contains("bad port"));
    assert!(e(&["--root", "www"]).contains("absolute"));
    assert!(e(&["--root", "/a/../b"]).contains("absolute"));
    assert!(e(&["--index", "a/b"]).contains("file name"));
    assert!(e(&["--data-path", "splice"]).contains("data path"));
    assert!(e(&["--max-conns", "0"]).contains("bad number"));
    assert!(e(&["--workers", "0"]).contains("bad number"));
    assert_eq!(parse_args::<&str>(&[]).unwrap().workers, None);
    assert!(e(&["--header-timeout", "0"]).contains("duration"));
    assert!(e(&["--shutdown-timeout", "soon"]).contains("duration"));
    assert!(e(&["--cache-control", "a\r\nb"]).contains("header value"));
    assert!(e(&["--bogus"]).contains("unknown argument"));
    assert!(e(&["--no-access-log=1"]).contains("takes no value"));
    assert!(parse_args(&["--help"]).unwrap().help);
}

#[test]
fn durations() {
    assert_eq!(parse_duration_ms("10"), Some(10_000));
    assert_eq!(parse_duration_ms("10s"), Some(10_000));
    assert_eq!(parse_duration_ms("250ms"), Some(250));
    assert_eq!(parse_duration_ms("1m"), Some(60_000));
    assert_eq!(parse_duration_ms("0s"), None);
    assert_eq!(parse_duration_ms("x"), None);
    assert_eq!(parse_duration_ms("99999999999999999999m"), None);
}

#[test]
fn paths_under_the_root() {
    let p = |t: &str| resolve_target(t).unwrap();
    assert_eq!(fs_path("/", &p("/")).unwrap(), "/");
    assert_eq!(fs_path("/", &p("/a/b.txt")).unwrap(), "/a/b.txt");
    assert_eq!(fs_path("/www", &p("/")).unwrap(), "/www");
    assert_eq!(fs_path("/www", &p("/dir/")).unwrap(), "/www/dir");
    assert_eq!(fs_path("/www", &p("/a/%2e%2e/x")).unwrap(), "/www/x");
    assert!(resolve_target("/%2e%2e/x").is_err());
    assert!(resolve_target("/..%2fetc/passwd").is_err());
}

#[test]
fn site_rules() {
    use uk_http::config::{Redirect, glob_match};
    let c = parse_args(&[
        "--header",
        "X-Frame-Options: DENY",
        "--header=Strict-Transport-Security: max-age=63072000",
        "--cache-control",
        "no-cache",
        "--cache-rule",
        "/assets/*=public, max-age=31536000, immutable",
        "--cache-rule=*.html=no-store",
        "--redirect",
        "/old /new/",
        "--redirect=/blog/* https://blog.example.org/ 302",
        "--error-page",
        "404=/404.html",
        "--error-page=403=/errors/403.html",
        "--listing",
        "on",
    ])
    .unwrap();
    assert!(c.listing);
    assert!(!parse_args::<&str>(&[]).unwrap().listing);
    assert_eq!(
        c.headers,
        [
            ("X-Frame-Options".to_string(), "DENY".to_string()),
            (
                "Strict-Transport-Security".to_string(),
                "max-age=63072000".to_string()
            )
        ]
    );
    assert_eq!(
        c.cache_control_for("/assets/app.css"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(c.cache_control_for("/index.html"), Some("no-store"));
    assert_eq!(c.cache_control_for("/img/a.png"), Some("no-cache"));
    assert_eq!(
        c.redirect_for("/old"),
        Some(&Redirect {
            from: "/old".into(),
            to: "/new/".into(),
            status: 301
        })
    );
    assert_eq!(c.redirect_for("/blog/2024/post").unwrap().status, 302);
    assert_eq!(c.redirect_for("/older"), None);
    assert_eq!(c.error_page(404), Some("/404.html"));
    assert_eq!(c.error_page(403), Some("/errors/403.html"));
    assert_eq!(c.error_page(500), None);

    assert!(glob_match("*", "/anything/at/all"));
    assert!(glob_match("/a/*.css", "/a/b/c.css"));
    assert!(glob_match("/?.txt", "/a.txt"));
    assert!(!glob_match("/?.txt", "/ab.txt"));
    assert!(glob_match("/a*b*c", "/aXbYbZc"));
    assert!(!glob_match("/a*b*c", "/aXbYbZ"));
    assert!(glob_match("/exact", "/exact"));
    assert!(!glob_match("/exact", "/exact/"));

    for bad in [
        &["--header", "NoColon"][..],
        &["--header", "Bad Name: x"],
        &["--header", "Content-Length: 3"],
        &["--cache-rule", "noslash=x"],
        &["--cache-rule", "/a="],
        &["--redirect", "/only"],
        &["--redirect", "/a /b 200"],
        &["--redirect", "/a /b 301 extra"],
        &["--redirect", "relative /b"],
        &["--error-page", "200=/x.html"],
        &["--error-page", "404=x.html"],
        &["--error-page", "404=/dir/"],
        &["--listing", "maybe"],
    ] {
        assert!(parse_args(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn tls_options() {
    let c = parse_args::<&str>(&[]).unwrap();
    assert_eq!((c.tls_cert, c.tls_key, c.tls_port), (None, None, 443));
    let c = parse_args(&[
        "--tls-cert",
        "/c.pem",
        "--tls-key=/k.pem",
        "--tls-port",
        "8443",
    ])
    .unwrap();
    assert_eq!(c.tls_cert.as_deref(), Some("/c.pem"));
    assert_eq!(c.tls_key.as_deref(), Some("/k.pem"));
    assert_eq!(c.tls_port, 8443);
    let e = |a: &[&str]| parse_args(a).unwrap_err();
    assert!(e(&["--tls-cert", "/c.pem"]).contains("--tls-key"));
    assert!(e(&["--tls-key", "/k.pem"]).contains("--tls-cert"));
    assert!(e(&["--tls-cert", "/c", "--tls-key", "/k", "--tls-port", "80"]).contains("HTTP port"));
    assert!(e(&["--tls-port", "0"]).contains("port"));
}

#[test]
fn https_redirect_and_hsts_options() {
    let tls = ["--tls-cert", "/c", "--tls-key", "/k"];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = tls.to_vec();
        a.extend_from_slice(extra);
        parse_args(&a)
    };
    let c = with(&[]).unwrap();
    assert_eq!((c.redirect_https, c.hsts), (None, None));
    let c = with(&["--redirect-https", "--hsts", "31536000"]).unwrap();
    assert_eq!((c.redirect_https, c.hsts), (Some(301), Some(31_536_000)));
    // The flag takes no separate value: the next argument is a flag.
    let c = with(&["--redirect-https=308", "--hsts=0"]).unwrap();
    assert_eq!((c.redirect_https, c.hsts), (Some(308), Some(0)));
    assert!(
        with(&["--redirect-https=302"])
            .unwrap_err()
            .contains("301, 308")
    );
    assert!(with(&["--hsts", "-1"]).unwrap_err().contains("max-age"));
    assert!(with(&["--hsts", "1y"]).unwrap_err().contains("max-age"));
    assert!(
        with(&["--hsts", "999999999"])
            .unwrap_err()
            .contains("max-age")
    );
    assert!(with(&["--hsts"]).unwrap_err().contains("needs a value"));
    // Both need HTTPS.
    let e = |a: &[&str]| parse_args(a).unwrap_err();
    assert!(e(&["--redirect-https"]).contains("needs --tls-cert"));
    assert!(e(&["--hsts", "60"]).contains("needs --tls-cert"));
    // ACME's certificate counts too.
    let acme = [
        "--acme-domain",
        "www.example.test",
        "--acme-directory",
        "https://10.77.0.1:14000/dir",
        "--acme-ca=/acme/ca.pem",
        "--redirect-https",
        "--hsts",
        "60",
    ];
    let c = parse_args(&acme).unwrap();
    assert_eq!((c.redirect_https, c.hsts), (Some(301), Some(60)));
}

#[test]
fn acme_options() {
    let base = [
        "--acme-domain",
        "www.example.test",
        "--acme-directory",
        "https://10.77.0.1:14000/dir",
        "--acme-ca=/acme/ca.pem",
    ];
    let c = parse_args(&base).unwrap();
    let a = c.acme.unwrap();
    assert_eq!(a.domain, "www.example.test");
    assert_eq!(a.directory, "https://10.77.0.1:14000/dir");
    assert_eq!(a.ca, "/acme/ca.pem");
    assert_eq!(a.email, None);
    assert_eq!(a.state, "/acme");
    let mut more = base.to_vec();
    more.extend([
        "--acme-email",
        "ops@example.test",
        "--acme-state",
        "/data//acme/",
    ]);
    let a = parse_args(&more).unwrap().acme.unwrap();
    assert_eq!(a.email.as_deref(), Some("ops@example.test"));
    assert_eq!(a.state, "/data/acme");
    let e = |extra: &[&str], drop: Option<&str>| {
        let mut v: Vec<&str> = Vec::new();
        let mut i = 0;
        while i < base.len() {
            if Some(base[i]) == drop {
                i += 2;
                continue;
            }
            if drop.is_some_and(|d| base[i].starts_with(&format!("{d}="))) {
                i += 1;
                continue;
            }
            v.push(base[i]);
            i += 1;
        }
        v.extend_from_slice(extra);
        parse_args(&v).unwrap_err()
    };
    assert!(e(&[], Some("--acme-directory")).contains("--acme-directory"));
    assert!(e(&[], Some("--acme-ca")).contains("--acme-ca"));
    assert!(e(&[], Some("--acme-domain")).contains("--acme-domain"));
    assert!(e(&["--acme-domain", "bad_name"], None).contains("domain"));
    assert!(e(&["--acme-directory", "http://a/dir"], None).contains("URL"));
    assert!(e(&["--acme-email", "nobody"], None).contains("address"));
    assert!(e(&["--acme-email", "a b@c"], None).contains("address"));
    assert!(e(&["--acme-state", "rel"], None).contains("directory"));
    assert!(e(&["--acme-dns", "name"], None).contains("IPv4"));
    assert!(e(&["--tls-port", "80"], None).contains("HTTP port"));
    assert!(e(&["--tls-cert", "/c", "--tls-key", "/k"], None).contains("exclude"));
}
