//! Request-target resolution and traversal defence.

use uk_http::*;

fn ok(t: &str) -> SafePath {
    resolve_target(t).unwrap_or_else(|e| panic!("{t:?} rejected with {}", e.status))
}

fn bad(t: &str) {
    let e = resolve_target(t).expect_err(t);
    assert_eq!((e.status, e.close), (400, false), "{t:?}");
}

#[test]
fn basics() {
    let p = ok("/");
    assert_eq!(p.as_str(), "/");
    assert!(p.is_root() && p.trailing_slash());
    assert_eq!(p.segments().count(), 0);

    let p = ok("/a/b.txt");
    assert_eq!(p.as_str(), "/a/b.txt");
    assert!(!p.trailing_slash());
    assert_eq!(p.segments().collect::<Vec<_>>(), ["a", "b.txt"]);

    let p = ok("/docs/");
    assert_eq!(p.as_str(), "/docs/");
    assert!(p.trailing_slash());
    assert_eq!(p.segments().collect::<Vec<_>>(), ["docs"]);
}

#[test]
fn query_and_fragment() {
    let p = ok("/a/b?x=1&y=%2F#frag");
    assert_eq!(p.as_str(), "/a/b");
    assert_eq!(p.query(), Some("x=1&y=%2F"));
    let p = ok("/a#f?g");
    assert_eq!((p.as_str(), p.query()), ("/a", None));
    let p = ok("/a?");
    assert_eq!(p.query(), Some(""));
}

#[test]
fn absolute_form() {
    assert_eq!(ok("http://example.com/a/b").as_str(), "/a/b");
    assert_eq!(ok("HTTPS://example.com:8443/x?q").as_str(), "/x");
    assert_eq!(ok("http://example.com").as_str(), "/");
    assert_eq!(ok("http://example.com?q=1").query(), Some("q=1"));
    bad("http:///etc/passwd");
    bad("http://");
    bad("ftp://example.com/a");
    bad("*");
    bad("example.com:443");
    bad("");
    bad("a/b");
}

#[test]
fn decoding() {
    assert_eq!(ok("/a%20b/%C3%A9t%c3%a9").as_str(), "/a b/\u{e9}t\u{e9}");
    assert_eq!(ok("/100%25").as_str(), "/100%");
    // Decoded exactly once.
    assert_eq!(ok("/%252e%252e/x").as_str(), "/%2e%2e/x");
    assert_eq!(ok("/a+b").as_str(), "/a+b");
    for t in [
        "/%",
        "/%2",
        "/%zz",
        "/%g0",
        "/a%2fb",
        "/a%2Fb",
        "/a%5cb",
        "/a%5C..",
        "/a\\b",
        "/..\\x",
        "/%00",
        "/a%00.html",
        "/%0d%0aSet-Cookie:x",
        "/%7f",
        "/%1b",
        "/%ff",
        "/%c3",
        "/%C0%AF",
        "/%e0%80%ae%e0%80%ae/",
    ] {
        bad(t);
    }
}

#[test]
fn dot_segments() {
    assert_eq!(ok("/a/./b").as_str(), "/a/b");
    assert_eq!(ok("/a/../b").as_str(), "/b");
    assert_eq!(ok("/a/b/..").as_str(), "/a/");
    assert!(ok("/a/b/..").trailing_slash());
    assert_eq!(ok("/a/.").as_str(), "/a/");
    assert_eq!(ok("/a/%2e%2e/b").as_str(), "/b");
    assert_eq!(ok("/a/%2E/b").as_str(), "/a/b");
    assert_eq!(ok("/a/b/../../c").as_str(), "/c");
    assert_eq!(ok("/a/..").as_str(), "/");
    assert_eq!(ok("/.").as_str(), "/");
    // Names that merely contain dots are ordinary.
    assert_eq!(ok("/...").as_str(), "/...");
    assert_eq!(ok("/..a/b..").as_str(), "/..a/b..");
    assert_eq!(ok("/.well-known/x").as_str(), "/.well-known/x");
    assert!(ok("/.git/config").has_hidden_segment());
    assert!(!ok("/a.b/c").has_hidden_segment());
}

#[test]
fn traversal_attacks() {
    for t in [
        "/..",
        "/../",
        "/../etc/passwd",
        "/a/../../etc/passwd",
        "/..%2f",
        "/..%2fetc%2fpasswd",
        "/%2e%2e/",
        "/%2e%2e%2fetc",
        "/%2E%2E/%2E%2E/etc/passwd",
        "/.%2e/",
        "/%2e./x",
        "/..\\",
        "/..\\..\\windows",
        "/%5c..%5c",
        "/x/%2e%2e/%2e%2e/y",
        "/%00",
        "/index.html%00.jpg",
        "http://h/../x",
    ] {
        bad(t);
    }
    // Extra slashes normalize but never escape.
    let p = ok("//etc/passwd");
    assert_eq!(p.as_str(), "/etc/passwd");
    assert_eq!(p.segments().collect::<Vec<_>>(), ["etc", "passwd"]);
    assert_eq!(ok("///a//b///").as_str(), "/a/b/");
    assert_eq!(ok("/a//..//b").as_str(), "/b");
}

#[test]
fn uri_reencoding_and_redirect() {
    let p = ok("/a%20b/%C3%A9?q=%20x");
    assert_eq!(p.to_uri_path().unwrap(), "/a%20b/%C3%A9");
    assert_eq!(p.redirect_location().unwrap(), "/a%20b/%C3%A9/?q=%20x");
    assert_eq!(ok("/dir").redirect_location().unwrap(), "/dir/");
    assert_eq!(ok("/dir?a=1&b").redirect_location().unwrap(), "/dir/?a=1&b");
    assert_eq!(ok("/a%3Fb%23c").to_uri_path().unwrap(), "/a%3Fb%23c");
    assert_eq!(ok("/a%3Fb").as_str(), "/a?b");
    // Round trip.
    for t in ["/a%20b/%C3%A9", "/x/y/", "/%25", "/a%3Fb%23c"] {
        let p = ok(t);
        assert_eq!(
            ok(&p.to_uri_path().unwrap()),
            SafePath::clone(&ok(&p.to_uri_path().unwrap()))
        );
        assert_eq!(ok(&p.to_uri_path().unwrap()).as_str(), p.as_str());
    }
}
