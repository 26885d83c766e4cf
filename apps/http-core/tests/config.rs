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
    assert_eq!(c.limits.max_request_line, 100);
    assert_eq!(c.limits.max_header_bytes, 200);
    assert_eq!(c.limits.max_headers, 5);
    assert_eq!(c.limits.max_body, 0);
    assert_eq!(c.max_ranges, 3);
    assert_eq!(c.cache_control.as_deref(), Some("max-age=60"));
    assert_eq!(c.backlog, 7);
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
    assert!(e(&["--header-timeout", "0"]).contains("duration"));
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
    assert_eq!(fs_path("/", &p("/")), "/");
    assert_eq!(fs_path("/", &p("/a/b.txt")), "/a/b.txt");
    assert_eq!(fs_path("/www", &p("/")), "/www");
    assert_eq!(fs_path("/www", &p("/dir/")), "/www/dir");
    assert_eq!(fs_path("/www", &p("/a/%2e%2e/x")), "/www/x");
    assert!(resolve_target("/%2e%2e/x").is_err());
    assert!(resolve_target("/..%2fetc/passwd").is_err());
}
