//! Response planning end to end.

use uk_http::*;

const NOW: u64 = 1_700_000_000;
const META: FileMeta = FileMeta {
    len: 1000,
    mtime_unix: 784_111_777,
    seed: 7,
};
const INFO: ServerInfo<'static> = ServerInfo {
    server: "uk-httpd/1",
    max_ranges: 16,
    cache_control: None,
    headers: &[],
};

struct Resp {
    plan: ResponsePlan,
    status_line: String,
    fields: Vec<(String, String)>,
}

impl Resp {
    fn get(&self, name: &str) -> Option<&str> {
        let mut it = self
            .fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let v = it.next().map(|(_, v)| v.as_str());
        assert!(it.next().is_none(), "duplicate {name}");
        v
    }
    fn content_length(&self) -> Option<u64> {
        self.get("Content-Length").map(|v| v.parse().unwrap())
    }
}

fn decode(plan: ResponsePlan) -> Resp {
    let text = String::from_utf8(plan.head.to_vec()).unwrap();
    let block = text.strip_suffix("\r\n\r\n").expect("terminated");
    let mut lines = block.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    assert_eq!(
        status_line,
        format!("HTTP/1.1 {} {}", plan.status, reason_phrase(plan.status))
    );
    let fields = lines
        .map(|l| {
            let (n, v) = l.split_once(": ").unwrap();
            (n.to_string(), v.to_string())
        })
        .collect();
    Resp {
        plan,
        status_line,
        fields,
    }
}

fn request(raw: &str) -> Request {
    match parse_request(raw.as_bytes(), &Limits::default()) {
        ParseOutcome::Complete { request, .. } => request,
        o => panic!("{o:?}"),
    }
}

fn get(extra: &str) -> Request {
    request(&format!("GET /f.txt HTTP/1.1\r\nHost: h\r\n{extra}\r\n"))
}

fn file() -> FileInfo<'static> {
    FileInfo {
        meta: META,
        content_type: mime_for("/f.txt"),
        gzip: None,
        brotli: None,
    }
}

fn serve(req: &Request, f: FileInfo<'_>) -> Resp {
    let path = resolve_target(&req.target).unwrap();
    decode(plan_response(req, &path, &Resource::File(f), NOW, &INFO))
}

#[test]
fn full_200() {
    let r = serve(&get(""), file());
    assert_eq!(r.plan.status, 200);
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.get("Date"), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
    assert_eq!(r.get("Server"), Some("uk-httpd/1"));
    assert_eq!(r.get("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.content_length(), Some(1000));
    assert_eq!(r.get("Accept-Ranges"), Some("bytes"));
    assert_eq!(r.get("ETag"), Some(etag(&META).as_str()));
    assert_eq!(
        r.get("Last-Modified"),
        Some("Sun, 06 Nov 1994 08:49:37 GMT")
    );
    assert_eq!(r.get("Vary"), None);
    assert_eq!(r.get("Content-Encoding"), None);
    assert_eq!(r.get("Connection"), None);
    assert_eq!(r.get("Cache-Control"), None);
    assert_eq!(
        r.plan.body,
        vec![BodyPart::File {
            offset: 0,
            len: 1000
        }]
    );
    assert!(r.plan.keep_alive);
    assert_eq!(r.plan.encoding, Encoding::Identity);
    assert_eq!(r.plan.body_len(), 1000);
}

#[test]
fn head_has_same_headers_no_body() {
    let g = serve(&get(""), file());
    let h = serve(&request("HEAD /f.txt HTTP/1.1\r\nHost: h\r\n\r\n"), file());
    assert_eq!(g.fields, h.fields);
    assert!(h.plan.body.is_empty());
    // HEAD ignores Range (RFC 9110 §14.2: range handling is defined for GET only).
    let h = serve(
        &request("HEAD /f.txt HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\n\r\n"),
        file(),
    );
    assert_eq!(h.plan.status, 200);
    assert_eq!(h.content_length(), Some(1000));
}

#[test]
fn empty_file() {
    let f = FileInfo {
        meta: FileMeta { len: 0, ..META },
        ..file()
    };
    let r = serve(&get(""), f);
    assert_eq!((r.plan.status, r.content_length()), (200, Some(0)));
    assert!(r.plan.body.is_empty());
    for range in ["bytes=0-0", "bytes=0-", "bytes=-1"] {
        let r = serve(&get(&format!("Range: {range}\r\n")), f);
        assert_eq!(r.plan.status, 416, "{range}");
        assert_eq!(r.get("Content-Range"), Some("bytes */0"));
    }
}

#[test]
fn http10_and_connection_headers() {
    let r = serve(&request("GET /f.txt HTTP/1.0\r\n\r\n"), file());
    assert_eq!(r.get("Connection"), Some("close"));
    assert!(!r.plan.keep_alive);
    let r = serve(
        &request("GET /f.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        file(),
    );
    assert_eq!(r.get("Connection"), Some("keep-alive"));
    assert!(r.plan.keep_alive);
    let r = serve(&get("Connection: close\r\n"), file());
    assert_eq!(r.get("Connection"), Some("close"));
    let info = ServerInfo {
        server: "",
        cache_control: Some("max-age=3600"),
        ..INFO
    };
    let req = get("");
    let path = resolve_target("/f.txt").unwrap();
    let r = decode(plan_response(
        &req,
        &path,
        &Resource::File(file()),
        NOW,
        &info,
    ));
    assert_eq!(r.get("Server"), None);
    assert_eq!(r.get("Cache-Control"), Some("max-age=3600"));
}

#[test]
fn conditional_304_412() {
    let tag = etag(&META);
    let r = serve(&get(&format!("If-None-Match: {tag}\r\n")), file());
    assert_eq!(r.plan.status, 304);
    assert!(r.plan.body.is_empty());
    assert_eq!(r.content_length(), None);
    assert_eq!(r.get("ETag"), Some(tag.as_str()));
    assert!(r.get("Last-Modified").is_some());
    assert!(r.get("Content-Type").is_none());
    let r = serve(
        &get("If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
        file(),
    );
    assert_eq!(r.plan.status, 304);
    let r = serve(
        &get("If-Modified-Since: Sat, 05 Nov 1994 08:49:37 GMT\r\n"),
        file(),
    );
    assert_eq!(r.plan.status, 200);
    let r = serve(&get("If-Match: \"zzz\"\r\n"), file());
    assert_eq!(r.plan.status, 412);
    assert_eq!(r.content_length(), Some(r.plan.body_len()));
    // 304 beats Range.
    let r = serve(
        &get(&format!("If-None-Match: {tag}\r\nRange: bytes=0-1\r\n")),
        file(),
    );
    assert_eq!(r.plan.status, 304);
}

#[test]
fn single_ranges_at_edges() {
    let cases = [
        ("bytes=0-0", 0, 0),
        ("bytes=999-999", 999, 999),
        ("bytes=999-", 999, 999),
        ("bytes=-1", 999, 999),
        ("bytes=0-", 0, 999),
        ("bytes=-1000", 0, 999),
        ("bytes=-5000", 0, 999),
        ("bytes=500-5000", 500, 999),
        ("bytes=10-19", 10, 19),
    ];
    for (range, first, last) in cases {
        let r = serve(&get(&format!("Range: {range}\r\n")), file());
        assert_eq!(r.plan.status, 206, "{range}");
        assert_eq!(
            r.get("Content-Range"),
            Some(format!("bytes {first}-{last}/1000").as_str())
        );
        assert_eq!(r.content_length(), Some(last - first + 1));
        assert_eq!(
            r.plan.body,
            vec![BodyPart::File {
                offset: first,
                len: last - first + 1
            }]
        );
        assert_eq!(r.get("Content-Type"), Some("text/plain; charset=utf-8"));
    }
}

#[test]
fn unsatisfiable_and_ignored_ranges() {
    for range in [
        "bytes=1000-",
        "bytes=1000-1001",
        "bytes=-0",
        "bytes=5000-6000,2000-",
    ] {
        let r = serve(&get(&format!("Range: {range}\r\n")), file());
        assert_eq!(r.plan.status, 416, "{range}");
        assert_eq!(r.get("Content-Range"), Some("bytes */1000"));
        assert_eq!(r.content_length(), Some(r.plan.body_len()));
        assert!(r.plan.keep_alive);
    }
    for range in ["bytes=5-1", "chars=0-1", "bytes=x", "bytes=0-1, bytes=2-3"] {
        let r = serve(&get(&format!("Range: {range}\r\n")), file());
        assert_eq!(r.plan.status, 200, "{range}");
    }
    // Two Range fields are joined and thus invalid → ignored.
    let r = serve(&get("Range: bytes=0-1\r\nRange: bytes=2-3\r\n"), file());
    assert_eq!(r.plan.status, 200);
    // More than max_ranges → whole file.
    let many: Vec<String> = (0..17).map(|i| format!("{}-{}", i * 10, i * 10)).collect();
    let r = serve(
        &get(&format!("Range: bytes={}\r\n", many.join(","))),
        file(),
    );
    assert_eq!(r.plan.status, 200);
    let r = serve(
        &get(&format!("Range: bytes={}\r\n", many[..16].join(","))),
        file(),
    );
    assert_eq!(r.plan.status, 206);
}

#[test]
fn if_range_decides() {
    let tag = etag(&META);
    let r = serve(
        &get(&format!("Range: bytes=0-1\r\nIf-Range: {tag}\r\n")),
        file(),
    );
    assert_eq!(r.plan.status, 206);
    let r = serve(&get("Range: bytes=0-1\r\nIf-Range: \"old\"\r\n"), file());
    assert_eq!(r.plan.status, 200);
    let r = serve(
        &get("Range: bytes=0-1\r\nIf-Range: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
        file(),
    );
    assert_eq!(r.plan.status, 206);
    let r = serve(
        &get("Range: bytes=0-1\r\nIf-Range: Sun, 06 Nov 1994 08:49:38 GMT\r\n"),
        file(),
    );
    assert_eq!(r.plan.status, 200);
    let r = serve(&get("Range: bytes=5000-\r\nIf-Range: \"old\"\r\n"), file());
    assert_eq!(r.plan.status, 200);
}

fn assemble(plan: &ResponsePlan, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in &plan.body {
        match p {
            BodyPart::Bytes(b) => out.extend_from_slice(b),
            BodyPart::File { offset, len } => {
                out.extend_from_slice(&content[*offset as usize..(*offset + *len) as usize])
            }
        }
    }
    out
}

#[test]
fn multipart() {
    let content: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let r = serve(&get("Range: bytes=990-,0-1,5-5,4-4\r\n"), file());
    assert_eq!(r.plan.status, 206);
    let ct = r.get("Content-Type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect(ct);
    assert!(r.get("Content-Range").is_none());
    let body = assemble(&r.plan, &content);
    assert_eq!(r.content_length(), Some(body.len() as u64));
    let expected = format!(
        "--{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 0-1/1000\r\n\r\nab\
         \r\n--{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 4-5/1000\r\n\r\nef\
         \r\n--{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 990-999/1000\r\n\r\ncdefghijkl\
         \r\n--{b}--\r\n",
        b = boundary
    );
    assert_eq!(String::from_utf8(body).unwrap(), expected);
    // Coalescing to one range gives a single-part response.
    let r = serve(&get("Range: bytes=0-4,5-9\r\n"), file());
    assert_eq!(r.get("Content-Range"), Some("bytes 0-9/1000"));
    // HEAD of a multipart is never produced (HEAD ignores Range), but a GET's
    // Content-Length matches the assembled body for many shapes.
    for range in ["bytes=0-0,999-999", "bytes=-1,0-0,500-600,550-700"] {
        let r = serve(&get(&format!("Range: {range}\r\n")), file());
        assert_eq!(
            r.content_length(),
            Some(assemble(&r.plan, &content).len() as u64)
        );
    }
}

#[test]
fn precompressed() {
    let gz = FileMeta {
        len: 300,
        mtime_unix: 784_111_777,
        seed: 8,
    };
    let br = FileMeta {
        len: 250,
        mtime_unix: 784_111_777,
        seed: 9,
    };
    let f = FileInfo {
        gzip: Some(gz),
        brotli: Some(br),
        ..file()
    };
    let r = serve(&get("Accept-Encoding: gzip, br\r\n"), f);
    assert_eq!(r.plan.encoding, Encoding::Brotli);
    assert_eq!(r.get("Content-Encoding"), Some("br"));
    assert_eq!(r.get("Vary"), Some("Accept-Encoding"));
    assert_eq!(r.get("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.content_length(), Some(250));
    let br_tag = r.get("ETag").unwrap().to_string();
    assert_ne!(br_tag, etag(&br));
    assert!(br_tag.ends_with("-br\""));
    // Conditional on the compressed representation.
    let r = serve(
        &get(&format!(
            "Accept-Encoding: br\r\nIf-None-Match: {br_tag}\r\n"
        )),
        f,
    );
    assert_eq!(r.plan.status, 304);
    assert_eq!(r.get("Vary"), Some("Accept-Encoding"));
    let r = serve(&get(&format!("If-None-Match: {br_tag}\r\n")), f);
    assert_eq!(r.plan.status, 200);
    assert_eq!(r.plan.encoding, Encoding::Identity);
    assert_eq!(r.get("Vary"), Some("Accept-Encoding"));
    assert_eq!(r.get("Content-Encoding"), None);

    let r = serve(&get("Accept-Encoding: gzip;q=1, br;q=0.1\r\n"), f);
    assert_eq!(r.plan.encoding, Encoding::Gzip);
    assert_eq!(r.get("Content-Encoding"), Some("gzip"));
    // Single range of the compressed representation.
    let r = serve(&get("Accept-Encoding: gzip\r\nRange: bytes=-10\r\n"), f);
    assert_eq!(r.plan.status, 206);
    assert_eq!(r.get("Content-Range"), Some("bytes 290-299/300"));
    // Multiple ranges of a compressed representation → full 200.
    let r = serve(&get("Accept-Encoding: gzip\r\nRange: bytes=0-1,5-6\r\n"), f);
    assert_eq!(r.plan.status, 200);
    assert_eq!(r.content_length(), Some(300));
}

#[test]
fn directories_and_errors() {
    let req = request("GET /docs?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    let path = resolve_target(&req.target).unwrap();
    let r = decode(plan_response(&req, &path, &Resource::Directory, NOW, &INFO));
    assert_eq!(r.plan.status, 301);
    assert_eq!(r.get("Location"), Some("/docs/?x=1"));
    assert_eq!(r.content_length(), Some(r.plan.body_len()));

    let req = request("HEAD /my%20docs HTTP/1.1\r\nHost: h\r\n\r\n");
    let path = resolve_target(&req.target).unwrap();
    let r = decode(plan_response(&req, &path, &Resource::Directory, NOW, &INFO));
    assert_eq!(r.get("Location"), Some("/my%20docs/"));
    assert!(r.plan.body.is_empty());

    let req = request("GET /docs/ HTTP/1.1\r\nHost: h\r\n\r\n");
    let path = resolve_target(&req.target).unwrap();
    let r = decode(plan_response(&req, &path, &Resource::Directory, NOW, &INFO));
    assert_eq!(r.plan.status, 403);
    let r = decode(plan_response(&req, &path, &Resource::NotFound, NOW, &INFO));
    assert_eq!(r.plan.status, 404);
    assert_eq!(r.get("Content-Type"), Some("text/html; charset=utf-8"));
    let body = match &r.plan.body[..] {
        [BodyPart::Bytes(b)] => String::from_utf8(b.clone()).unwrap(),
        o => panic!("{o:?}"),
    };
    assert!(body.contains("404 Not Found"));
    let r = decode(plan_response(&req, &path, &Resource::Forbidden, NOW, &INFO));
    assert_eq!(r.plan.status, 403);
    assert!(r.plan.keep_alive);

    let head = request("HEAD /x HTTP/1.0\r\n\r\n");
    let r = decode(plan_error(&head, 404, NOW, &INFO));
    assert!(r.plan.body.is_empty());
    assert_eq!(r.get("Connection"), Some("close"));
    assert!(r.content_length().unwrap() > 0);
}

#[test]
fn error_response_extras_and_sanitising() {
    let r = decode(error_response(405, true, NOW, &INFO, &[]));
    assert_eq!(r.get("Allow"), Some("GET, HEAD"));
    assert_eq!(r.get("Connection"), Some("keep-alive"));
    let r = decode(error_response(405, false, NOW, &INFO, &[("Allow", "GET")]));
    assert_eq!(r.get("Allow"), Some("GET"));
    assert_eq!(r.get("Connection"), Some("close"));
    let r = decode(error_response(
        503,
        false,
        NOW,
        &INFO,
        &[
            ("Retry-After", "5"),
            ("X-Evil", "a\r\nSet-Cookie: x"),
            ("Bad Name", "v"),
            ("Content-Length", "0"),
            ("Connection", "keep-alive"),
        ],
    ));
    assert_eq!(r.get("Retry-After"), Some("5"));
    assert!(r.get("X-Evil").is_none() && r.get("Set-Cookie").is_none());
    assert_eq!(r.content_length(), Some(r.plan.body_len()));
    assert_eq!(r.get("Connection"), Some("close"));
    assert_eq!(r.fields.len(), 6);
    // Unsafe content type / server strings never reach the header block.
    let f = FileInfo {
        content_type: "text/html\r\nX: y",
        ..file()
    };
    let r = serve(&get(""), f);
    assert_eq!(r.get("Content-Type"), Some(DEFAULT_MIME));
    for s in [100u16, 200, 299, 418, 999] {
        let _ = decode(error_response(s, true, NOW, &INFO, &[]));
    }
    assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
}

#[test]
fn log_line_from_request() {
    let req = get("Referer: https://ex/\r\nUser-Agent: Mozilla \"5\"\r\n");
    let r = serve(&req, file());
    let line = combined_log_line(
        &"198.51.100.7",
        &req.request_line().unwrap(),
        r.plan.status,
        r.plan.body_len(),
        req.referer.as_deref(),
        req.user_agent.as_deref(),
        NOW,
    )
    .to_string();
    assert_eq!(
        line,
        "198.51.100.7 - - [14/Nov/2023:22:13:20 +0000] \"GET /f.txt HTTP/1.1\" 200 1000 \"https://ex/\" \"Mozilla \\\"5\\\"\""
    );
}

#[test]
fn site_headers_on_every_response() {
    let headers = vec![
        ("X-Frame-Options".to_string(), "DENY".to_string()),
        ("Content-Length".to_string(), "5".to_string()),
        ("Bad Name".to_string(), "x".to_string()),
    ];
    let info = ServerInfo {
        headers: &headers,
        ..INFO
    };
    let req = get("");
    let path = resolve_target("/f.txt").unwrap();
    for plan in [
        plan_response(&req, &path, &Resource::File(file()), NOW, &info),
        plan_response(&req, &path, &Resource::NotFound, NOW, &info),
        plan_error(&req, 500, NOW, &info),
    ] {
        let r = decode(plan);
        assert_eq!(r.get("X-Frame-Options"), Some("DENY"), "{}", r.status_line);
        // The server's own framing is never replaced.
        assert_ne!(r.get("Content-Length"), Some("5"));
        assert!(r.get("Bad Name").is_none());
    }
}

#[test]
fn redirects() {
    let req = get("");
    let r = decode(plan_redirect(&req, 301, "/new/", NOW, &INFO));
    assert_eq!(r.plan.status, 301);
    assert_eq!(r.get("Location"), Some("/new/"));
    assert!(r.plan.keep_alive);
    assert!(r.plan.body_len() > 0);
    let r = decode(plan_redirect(
        &req,
        308,
        "https://example.org/x",
        NOW,
        &INFO,
    ));
    assert_eq!(r.plan.status, 308);
    assert_eq!(r.get("Location"), Some("https://example.org/x"));
    // Not a redirect status: 302; an unsafe location: 500.
    assert_eq!(plan_redirect(&req, 200, "/x", NOW, &INFO).status, 302);
    assert_eq!(
        plan_redirect(&req, 301, "/x\r\nSet-Cookie: a", NOW, &INFO).status,
        500
    );
    let head = request("HEAD /old HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = decode(plan_redirect(&head, 301, "/new", NOW, &INFO));
    assert_eq!(r.plan.body_len(), 0);
    assert!(r.content_length().unwrap() > 0);
}

#[test]
fn custom_error_pages() {
    let page = FileInfo {
        meta: FileMeta {
            len: 321,
            mtime_unix: 1,
            seed: 1,
        },
        content_type: mime_for("/404.html"),
        gzip: None,
        brotli: None,
    };
    let req = get("Range: bytes=0-1\r\nIf-None-Match: *\r\n");
    let r = decode(plan_error_page(&req, 404, &page, NOW, &INFO));
    assert_eq!(r.plan.status, 404);
    assert_eq!(r.get("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.content_length(), Some(321));
    assert_eq!(r.get("Cache-Control"), Some("no-store"));
    assert_eq!(
        r.plan.body,
        [BodyPart::File {
            offset: 0,
            len: 321
        }]
    );
    let head = request("HEAD /nope HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = decode(plan_error_page(&head, 404, &page, NOW, &INFO));
    assert!(r.plan.body.is_empty());
    assert_eq!(r.content_length(), Some(321));
}

#[test]
fn directory_listing() {
    let entries = [
        ListingEntry {
            name: "a b&c.txt".into(),
            dir: false,
        },
        ListingEntry {
            name: "sub".into(),
            dir: true,
        },
        ListingEntry {
            name: ".hidden".into(),
            dir: false,
        },
    ];
    let req = request("GET /docs/ HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = decode(plan_listing(&req, "/docs/<x>/", &entries, NOW, &INFO));
    assert_eq!(r.plan.status, 200);
    assert_eq!(r.get("Content-Type"), Some("text/html; charset=utf-8"));
    let BodyPart::Bytes(b) = &r.plan.body[0] else {
        panic!("bytes body")
    };
    let html = String::from_utf8(b.clone()).unwrap();
    assert_eq!(r.content_length(), Some(b.len() as u64));
    assert!(html.contains("Index of /docs/&lt;x&gt;/"), "{html}");
    assert!(
        html.contains("<a href=\"a%20b%26c.txt\">a b&amp;c.txt</a>"),
        "{html}"
    );
    assert!(html.contains("<a href=\"sub/\">sub/</a>"), "{html}");
    assert!(html.contains("<a href=\"../\">"), "{html}");
    assert!(!html.contains("hidden"), "{html}");
    let head = request("HEAD /docs/ HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = decode(plan_listing(&head, "/", &entries, NOW, &INFO));
    assert!(r.plan.body.is_empty());
}
