//! Request parsing, limits, keep-alive and pipelining.

use uk_http::*;

fn parse(s: &str) -> ParseOutcome {
    parse_request(s.as_bytes(), &Limits::default())
}

fn complete(s: &str) -> (Request, usize) {
    match parse(s) {
        ParseOutcome::Complete { request, consumed } => (request, consumed),
        other => panic!("expected Complete for {s:?}, got {other:?}"),
    }
}

fn err(s: &str) -> StatusError {
    err_with(s.as_bytes(), &Limits::default())
}

fn err_with(b: &[u8], l: &Limits) -> StatusError {
    match parse_request(b, l) {
        ParseOutcome::Error(e) => e,
        other => panic!(
            "expected Error for {:?}, got {other:?}",
            String::from_utf8_lossy(b)
        ),
    }
}

#[test]
fn simple_get() {
    let s = "GET /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\nAccept-Encoding: gzip\r\nAccept-Encoding: br\r\n\r\n";
    let (r, n) = complete(s);
    assert_eq!(n, s.len());
    assert_eq!(r.method, Method::Get);
    assert_eq!(r.target, "/index.html?x=1");
    assert_eq!(r.version_minor, 1);
    assert!(r.keep_alive);
    assert_eq!(r.body_len, 0);
    assert_eq!(r.host.as_deref(), Some("example.com"));
    assert_eq!(r.user_agent.as_deref(), Some("curl"));
    assert_eq!(r.accept_encoding.as_deref(), Some("gzip, br"));
    assert_eq!(r.request_line().unwrap(), "GET /index.html?x=1 HTTP/1.1");
}

#[test]
fn head_and_lf_only_and_leading_blank_lines() {
    let (r, n) = complete("\r\n\nHEAD / HTTP/1.1\nHost: a\n\n");
    assert_eq!(n, 28);
    assert!(r.is_head());
    assert_eq!(r.method.as_str(), "HEAD");
}

#[test]
fn partial() {
    let full = "GET / HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n";
    for i in 0..full.len() {
        assert_eq!(parse(&full[..i]), ParseOutcome::Partial, "prefix {i}");
    }
    complete(full);
    // An unsupported version only becomes known once the line is complete.
    assert_eq!(parse("GET / HTTP/2"), ParseOutcome::Partial);
    assert_eq!(parse("\r"), ParseOutcome::Partial);
}

#[test]
fn pipelining() {
    let s = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /c";
    let (r1, n1) = complete(s);
    assert_eq!(r1.target, "/a");
    assert!(r1.keep_alive);
    let (r2, n2) = complete(&s[n1..]);
    assert_eq!(r2.target, "/b");
    assert!(r2.is_head());
    assert!(!r2.keep_alive);
    assert_eq!(parse(&s[n1 + n2..]), ParseOutcome::Partial);
}

#[test]
fn pipelining_with_discarded_body() {
    let s = "GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    let (r1, n1) = complete(s);
    assert_eq!(r1.body_len, 5);
    let next = n1 + r1.body_len as usize;
    let (r2, _) = complete(&s[next..]);
    assert_eq!(r2.target, "/b");
}

#[test]
fn keep_alive_rules() {
    let ka = |s: &str| complete(s).0.keep_alive;
    assert!(ka("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!ka(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    ));
    assert!(!ka(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n"
    ));
    assert!(!ka(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"
    ));
    assert!(ka(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"
    ));
    assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
    assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    assert!(ka("GET / HTTP/1.0\r\nConnection: foo , keep-alive\r\n\r\n"));
    assert!(!ka(
        "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
    ));
}

#[test]
fn http10_no_host_needed() {
    let (r, _) = complete("GET /x HTTP/1.0\r\n\r\n");
    assert_eq!(r.version_minor, 0);
    assert_eq!(r.host, None);
    assert_eq!(r.request_line().unwrap(), "GET /x HTTP/1.0");
}

#[test]
fn host_rules() {
    let e = err("GET / HTTP/1.1\r\n\r\n");
    assert_eq!((e.status, e.close), (400, true));
    assert_eq!(e.request_line.as_deref(), Some("GET / HTTP/1.1"));
    assert_eq!(
        err("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status,
        400
    );
    assert_eq!(
        err("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").status,
        400
    );
    complete("GET / HTTP/1.1\r\nhOsT: a\r\n\r\n");
}

#[test]
fn malformed_400() {
    for s in [
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        "GET /\r\n\r\n",
        "GET / FOO/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nHo\x01st: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
        "GET / HTTP/1.1\r\n: a\r\n\r\n",
        "G(T / HTTP/1.1\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03",
        "\rX",
        "GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
    ] {
        let e = err(s);
        assert_eq!((e.status, e.close), (400, true), "{s:?}");
    }
    let e = err_with(b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", &Limits::default());
    assert_eq!(e.status, 400);
}

#[test]
fn content_length_list_of_equal_values_ok() {
    let (r, _) =
        complete("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(r.body_len, 3);
}

#[test]
fn versions_505() {
    for s in [
        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/3\r\n\r\n",
        "GET / HTTP/1.2\r\n\r\n",
        "HEAD / HTTP/0.9\r\n\r\n",
    ] {
        let e = err(s);
        assert_eq!((e.status, e.close), (505, true), "{s:?}");
    }
    assert!(err("HEAD / HTTP/2.0\r\n\r\n").head_request);
    // Not a well-formed version at all → 400.
    assert_eq!(err("GET / HTTP/x.y\r\n\r\n").status, 400);
    assert_eq!(err("GET / HTTP/1.1.1\r\n\r\n").status, 400);
}

#[test]
fn methods() {
    for m in [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ] {
        let s = format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n");
        let e = err(&s);
        assert_eq!(e.status, 405, "{m}");
        assert!(!e.close, "{m}: well-framed request keeps the connection");
        assert_eq!(e.consumed, s.len());
        let plan = e.response(0, &ServerInfo::default());
        let head = String::from_utf8(plan.head.to_vec()).unwrap();
        assert!(head.contains("\r\nAllow: GET, HEAD\r\n"), "{head}");
        assert!(head.contains("\r\nConnection: keep-alive\r\n"));
    }
    for m in ["PROPFIND", "get", "BREW", "Get"] {
        let e = err(&format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!((e.status, e.close), (501, false), "{m}");
    }
    // Closing requests and bad framing close.
    assert!(err("POST / HTTP/1.0\r\n\r\n").close);
    assert!(err("POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").close);
    let e = err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!((e.status, e.close), (405, true));
    let e = err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999\r\n\r\n");
    assert_eq!((e.status, e.close), (405, true));
    // Small body: caller skips consumed + body_len.
    let s = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbodyGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let e = err(s);
    assert_eq!((e.status, e.close, e.body_len), (405, false, 4));
    let (r, _) = complete(&s[e.consumed + 4..]);
    assert_eq!(r.target, "/");
}

#[test]
fn bodies() {
    let e = err("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!((e.status, e.close), (501, true));
    let e =
        err("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
    assert_eq!((e.status, e.close), (501, true));
    let e = err("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\n");
    assert_eq!((e.status, e.close), (413, true));
    let e = err("HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n");
    assert_eq!((e.status, e.close, e.head_request), (413, true, true));
    let (r, _) = complete("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\n");
    assert_eq!(r.body_len, 65536);
    let l = Limits {
        max_body: 0,
        ..Limits::default()
    };
    let e = err_with(
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n",
        &l,
    );
    assert_eq!(e.status, 413);
    assert!(matches!(
        parse_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            &l
        ),
        ParseOutcome::Complete { .. }
    ));
}

#[test]
fn limits_414_431() {
    let l = Limits::default();
    // Request line exactly at the limit is fine.
    let target = format!(
        "/{}",
        "a".repeat(l.max_request_line - "GET  HTTP/1.1".len() - 1)
    );
    let line = format!("GET {target} HTTP/1.1");
    assert_eq!(line.len(), l.max_request_line);
    complete(&format!("{line}\r\nHost: a\r\n\r\n"));
    // One more byte → 414, whether or not the line is complete yet.
    let long = format!("GET /{target} HTTP/1.1");
    let e = err(&format!("{long}\r\nHost: a\r\n\r\n"));
    assert_eq!((e.status, e.close), (414, true));
    assert_eq!(err(&format!("GET /{}", "a".repeat(9000))).status, 414);
    assert_eq!(
        parse(&format!("GET /{}", "a".repeat(8000))),
        ParseOutcome::Partial
    );
    // Garbage that is too long is a 400, not a 414.
    assert_eq!(err_with(&[b'\x01'; 10_000], &l).status, 400);
    // Leading blank lines count against the request-line budget.
    assert_eq!(err(&"\r\n".repeat(5000)).status, 400);

    // Header section too large, complete or not.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17_000)
    );
    let e = err(&big);
    assert_eq!((e.status, e.close), (431, true));
    assert_eq!(err(&big[..big.len() - 4]).status, 431);
    // Too many headers.
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..64 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(err(&many).status, 431);
    // Exactly 64 is fine.
    let mut ok = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..63 {
        ok.push_str(&format!("X-{i}: v\r\n"));
    }
    ok.push_str("\r\n");
    complete(&ok);
    // A huge pipelined buffer doesn't count against the first request.
    let mut pipe = String::from("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    pipe.push_str(&"GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(2000));
    complete(&pipe);
}

#[test]
fn small_limits() {
    let l = Limits {
        max_request_line: 16,
        max_header_bytes: 20,
        max_headers: 2,
        max_body: 0,
    };
    assert!(matches!(
        parse_request(b"GET /ab HTTP/1.1\r\nHost: a\r\n\r\n", &l),
        ParseOutcome::Complete { .. }
    ));
    assert_eq!(
        err_with(b"GET /abcd HTTP/1.1\r\nHost: a\r\n\r\n", &l).status,
        414
    );
    assert_eq!(
        err_with(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", &l).status,
        431
    );
    assert_eq!(
        err_with(b"GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaa\r\n\r\n", &l).status,
        431
    );
    let zero = Limits {
        max_headers: 0,
        ..l
    };
    assert!(matches!(
        parse_request(b"GET / HTTP/1.0\r\n\r\n", &zero),
        ParseOutcome::Complete { .. }
    ));
}

#[test]
fn conditional_headers_captured_and_joined() {
    let (r, _) = complete(
        "GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"a\"\r\nIf-None-Match: \"b\"\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\nIf-Range: \"x\"\r\nRange: bytes=0-1\r\nIf-Match: *\r\nIf-Unmodified-Since: x\r\nReferer: http://r/\r\n\r\n",
    );
    assert_eq!(r.if_none_match.as_deref(), Some("\"a\", \"b\""));
    assert_eq!(
        r.if_modified_since.as_deref(),
        Some("Sun, 06 Nov 1994 08:49:37 GMT")
    );
    assert_eq!(r.if_range.as_deref(), Some("\"x\""));
    assert_eq!(r.range.as_deref(), Some("bytes=0-1"));
    assert_eq!(r.if_match.as_deref(), Some("*"));
    assert_eq!(r.if_unmodified_since.as_deref(), Some("x"));
    assert_eq!(r.referer.as_deref(), Some("http://r/"));
}

#[test]
fn status_error_responses() {
    let info = ServerInfo::default();
    for (s, status) in [
        ("GET / HTTP/3\r\n\r\n", 505),
        ("GET / HTTP/1.1\r\n\r\n", 400),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
    ] {
        let e = err(s);
        let plan = e.response(784_111_777, &info);
        assert_eq!(plan.status, status);
        assert!(!plan.keep_alive);
        let head = String::from_utf8(plan.head.to_vec()).unwrap();
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")));
        assert!(head.contains("\r\nConnection: close\r\n"));
        assert!(head.contains("\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", plan.body_len())));
        assert!(plan.body_len() > 0);
    }
    let e = err("HEAD / HTTP/3\r\n\r\n");
    let plan = e.response(0, &info);
    assert!(plan.body.is_empty());
    assert!(
        String::from_utf8(plan.head.to_vec())
            .unwrap()
            .contains("Content-Length: ")
    );
}
