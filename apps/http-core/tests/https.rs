//! The redirect of plain HTTP to HTTPS and the HSTS value.

use uk_http::https::{hsts_value, https_location, plan_https_redirect, valid_host};
use uk_http::{Limits, ParseOutcome, Request, ServerInfo, parse_request};

fn request(raw: &str) -> Request {
    match parse_request(raw.as_bytes(), &Limits::default()) {
        ParseOutcome::Complete { request, .. } => request,
        o => panic!("{o:?}"),
    }
}

fn head_of(plan: &uk_http::ResponsePlan) -> String {
    String::from_utf8_lossy(&plan.head).into_owned()
}

#[test]
fn hosts() {
    for (authority, host) in [
        ("example.com", "example.com"),
        ("example.com:80", "example.com"),
        ("Example.COM:", "Example.COM"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("my_host-1.local", "my_host-1.local"),
        ("[::1]", "[::1]"),
        ("[::1]:8080", "[::1]"),
        ("[2001:db8::ffff:1.2.3.4]:1", "[2001:db8::ffff:1.2.3.4]"),
    ] {
        assert_eq!(valid_host(authority), Some(host), "{authority}");
    }
    for bad in [
        "",
        ":80",
        "a b",
        "evil.com/x",
        "evil.com\\x",
        "evil.com?x",
        "evil.com#x",
        "user@evil.com",
        "a\"b",
        "a<b>",
        "a\r\nSet-Cookie: x",
        "a%0d%0a",
        ".evil",
        "-evil",
        "a..b",
        "host:99999",
        "host:123456",
        "host:8o",
        "host:80:80",
        "[::1",
        "[::1]x",
        "[fe80::1%25eth0]",
        "[v1.x]",
        "[]",
        "ex\u{e4}mple.com",
    ] {
        assert_eq!(valid_host(bad), None, "{bad:?}");
    }
    assert!(valid_host(&"a".repeat(253)).is_some());
    assert!(valid_host(&"a".repeat(254)).is_none());
}

#[test]
fn locations() {
    let l = |host: Option<&str>, target: &str, port: u16| https_location(host, target, port);
    assert_eq!(
        l(Some("example.com"), "/a/b.html?x=1&y=2", 443).as_deref(),
        Ok("https://example.com/a/b.html?x=1&y=2")
    );
    // The HTTP port is replaced by the HTTPS port (none for 443).
    assert_eq!(
        l(Some("localhost:8080"), "/", 8443).as_deref(),
        Ok("https://localhost:8443/")
    );
    assert_eq!(
        l(Some("[::1]:80"), "/x", 443).as_deref(),
        Ok("https://[::1]/x")
    );
    // Absolute-form: its authority wins over Host.
    assert_eq!(
        l(Some("other"), "http://example.org:80/p?q", 443).as_deref(),
        Ok("https://example.org/p?q")
    );
    assert_eq!(
        l(None, "HTTP://example.org", 443).as_deref(),
        Ok("https://example.org/")
    );
    assert_eq!(
        l(None, "http://example.org?q=1", 443).as_deref(),
        Ok("https://example.org/?q=1")
    );
    // Bytes outside printable ASCII are percent-encoded.
    assert_eq!(
        l(Some("h"), "/caf\u{e9} x", 443).as_deref(),
        Ok("https://h/caf%C3%A9%20x")
    );
    // Bad hosts and targets: 400.
    assert_eq!(l(None, "/", 443), Err(400));
    assert_eq!(l(Some("a b"), "/", 443), Err(400));
    assert_eq!(l(Some("evil.com/@x"), "/", 443), Err(400));
    assert_eq!(l(Some("h"), "*", 443), Err(400));
    assert_eq!(l(Some("h"), "ftp://h/", 443), Err(400));
    assert_eq!(l(Some("h"), "http://u:p@h/", 443), Err(400));
    assert_eq!(l(Some("h"), "http://a b/", 443), Err(400));
}

#[test]
fn redirect_plans() {
    let info = ServerInfo::default();
    let req = request("GET /docs/?page=2 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
    let plan = plan_https_redirect(&req, 301, 8443, 1_700_000_000, &info);
    assert_eq!(plan.status, 301);
    let head = head_of(&plan);
    assert!(
        head.contains("\r\nLocation: https://example.com:8443/docs/?page=2\r\n"),
        "{head}"
    );
    assert!(plan.keep_alive);
    let plan = plan_https_redirect(&req, 308, 443, 1_700_000_000, &info);
    assert_eq!(plan.status, 308);
    assert!(head_of(&plan).contains("Location: https://example.com/docs/?page=2\r\n"));
    // A bad Host is a 400 and is nowhere in the response.
    let req = request("GET / HTTP/1.1\r\nHost: evil\"<script>\r\n\r\n");
    let plan = plan_https_redirect(&req, 301, 443, 1_700_000_000, &info);
    assert_eq!(plan.status, 400);
    let all = head_of(&plan)
        + &plan
            .body
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<String>();
    assert!(!all.contains("evil") && !all.contains("Location"), "{all}");
    // HTTP/1.0 without Host: 400 as well.
    let req = request("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        plan_https_redirect(&req, 301, 443, 1_700_000_000, &info).status,
        400
    );
}

#[test]
fn hsts() {
    assert_eq!(hsts_value(31_536_000), "max-age=31536000");
    assert_eq!(hsts_value(0), "max-age=0");
}
