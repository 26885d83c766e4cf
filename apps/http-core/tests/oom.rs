//! Allocation failure on the request path: the test binary's allocator is
//! `uk_failalloc::FailAlloc`, and each request is parsed, resolved, planned
//! and logged with allocation `n` failing (then every allocation from `n`
//! on), for every `n` the path makes. An allocation that did not go through
//! `try_reserve` would abort this binary (as it would end the VM); every
//! failure must instead give the normal response or a 503 that closes the
//! connection, and the same request succeeds once memory is back.

use uk_failalloc::{Plan, count, inject};
use uk_http::*;

#[global_allocator]
static ALLOC: uk_failalloc::FailAlloc = uk_failalloc::FailAlloc;

const NOW: u64 = 1_700_000_000;
const META: FileMeta = FileMeta {
    len: 100_000,
    mtime_unix: 784_111_777,
    seed: 7,
};

/// What the server would send: status, header block, body, keep-alive, and
/// the log line's request line.
type Sent = (
    u16,
    std::borrow::Cow<'static, [u8]>,
    Vec<BodyPart>,
    bool,
    Option<String>,
);

/// The request path as the server runs it: parse, resolve, look up (a
/// fixed file system: `/dir` is a directory, `/f.txt` and `/a b.txt` files
/// with a gzip sibling, anything else missing), plan, log.
fn serve(raw: &[u8], info: &ServerInfo<'_>) -> Sent {
    let plan = match parse_request(raw, &Limits::default()) {
        ParseOutcome::Complete { request, .. } => {
            let line = request.request_line().ok();
            let plan = match resolve_target(&request.target) {
                Err(e) => plan_error(&request, e.status, NOW, info),
                Ok(path) => {
                    let resource = match path.as_str() {
                        "/dir" | "/dir/" => Resource::Directory,
                        "/f.txt" | "/a b.txt" => Resource::File(FileInfo {
                            meta: META,
                            content_type: mime_for(path.as_str()),
                            gzip: Some(META),
                            brotli: None,
                        }),
                        "/secret" => Resource::Forbidden,
                        _ => Resource::NotFound,
                    };
                    plan_response(&request, &path, &resource, NOW, info)
                }
            };
            (plan, line)
        }
        ParseOutcome::Error(mut e) => {
            let line = e.request_line.take();
            (e.response(NOW, info), line)
        }
        ParseOutcome::Partial => panic!("complete requests only"),
    };
    let (plan, line) = plan;
    // The log line allocates nothing.
    let log = combined_log_line(
        &"192.0.2.1",
        line.as_deref().unwrap_or(""),
        plan.status,
        plan.body_len(),
        None,
        None,
        NOW,
    );
    let mut sink = Sink(0);
    core::fmt::Write::write_fmt(&mut sink, format_args!("{log}")).unwrap();
    assert!(sink.0 > 40);
    (plan.status, plan.head, plan.body, plan.keep_alive, line)
}

/// Counts what is written to it (allocates nothing).
struct Sink(usize);

impl core::fmt::Write for Sink {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

const REQUESTS: &[&[u8]] = &[
    b"GET /f.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nAccept-Encoding: gzip\r\n\r\n",
    b"GET /a%20b.txt?q=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9,20-29,500-\r\n\r\n",
    b"GET /f.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\nIf-Range: \"x\"\r\n\r\n",
    b"GET /f.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=200000-\r\n\r\n",
    b"GET /f.txt HTTP/1.0\r\nIf-None-Match: \"186a0-2ebc6aa1-7-gzip\", \"186a0-2ebc6aa1-7\"\r\nAccept-Encoding: gzip\r\n\r\n",
    b"HEAD /f.txt HTTP/1.1\r\nHost: x\r\nIf-Match: \"nope\"\r\nConnection: close\r\n\r\n",
    b"GET /dir?x=%20y HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /dir/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /missing/../nothing HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    b"GET /nothing HTTP/1.1\r\nHost: x\r\nReferer: r\r\nReferer: \xff\xfe\r\n\r\n",
    b"GET /../up HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /f.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /f.txt HTTP/2.0\r\nHost: x\r\n\r\n",
    b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
];

/// A 503 without file data: the static [`OVERLOADED`] (which closes), or
/// a planned 503 page (when the memory ran out resolving the target).
fn is_overloaded(s: &Sent) -> bool {
    s.0 == 503
        && s.2.iter().all(|p| !matches!(p, BodyPart::File { .. }))
        && (*s.1 != *OVERLOADED || (!s.3 && s.2.is_empty()))
}

/// Every allocation of every request's path failed in turn (transiently and
/// for good): the normal response (with possibly the log's request line
/// missing, or a Range ignored) or a 503, never an abort; and each plan made some
/// allocations, so the loop tested something.
#[test]
fn request_path_survives_every_failed_allocation() {
    let site = [(String::from("X-Site"), String::from("yes"))];
    let info = ServerInfo {
        server: "uk-httpd",
        max_ranges: 8,
        cache_control: Some("max-age=60"),
        headers: &site,
    };
    let mut overloaded = 0;
    for raw in REQUESTS {
        let want = serve(raw, &info);
        assert!(!is_overloaded(&want), "{raw:?} is a 503 on its own");
        let ((), allocs) = count(|| {
            serve(raw, &info);
        });
        assert!(allocs > 2, "{raw:?}: {allocs} allocations");
        for exhausted in [false, true] {
            for n in 0.. {
                let plan = if exhausted {
                    Plan::From(n)
                } else {
                    Plan::Nth(n)
                };
                let (got, rep) = inject(plan, || serve(raw, &info));
                if rep.failed == 0 {
                    assert_eq!(got, want, "{raw:?}");
                    break;
                }
                if is_overloaded(&got) {
                    overloaded += 1;
                } else if matches!(want.0, 206 | 416) && got.0 == 200 {
                    // No memory for the range list: the Range header is
                    // ignored (RFC 9110 allows it) and the whole file sent.
                    assert_eq!(
                        got.2,
                        [BodyPart::File {
                            offset: 0,
                            len: META.len
                        }]
                    );
                } else {
                    // Only the log's copy of the request line may be lost.
                    assert_eq!(
                        (got.0, &got.1, &got.2, got.3),
                        (want.0, &want.1, &want.2, want.3),
                        "{raw:?} {plan:?}"
                    );
                }
            }
        }
        // Memory is back: the same request is answered normally.
        assert_eq!(serve(raw, &info), want);
    }
    assert!(overloaded > 100, "{overloaded} plans ended in a 503");
}

/// The TLS session store and the HTTPS redirect under failing
/// allocations: a session is not stored (`false`), a lookup misses, a
/// redirect is a 503; nothing aborts, and it all works once memory is back.
#[test]
fn session_store_and_https_redirect_refuse_rather_than_abort() {
    use uk_http::https::https_location;
    use uk_http::session::SessionStore;
    let mut store = SessionStore::new(8, 4096);
    // Room for the first entry is the only allocation a put makes.
    let (key, value) = (vec![1; 32], vec![2; 100]);
    let (stored, rep) = inject(Plan::From(0), || store.put(key, value));
    assert!(!stored && rep.failed > 0);
    assert!(store.is_empty());
    assert!(store.put(vec![1; 32], vec![2; 100]));
    let (got, _) = inject(Plan::From(0), || store.get(&[1; 32]));
    assert_eq!(got, None);
    assert_eq!(store.get(&[1; 32]), Some(vec![2; 100]));
    let (_, n) = count(|| https_location(Some("example.com"), "/a?b", 8443));
    for i in 0..n {
        for plan in [Plan::Nth(i), Plan::From(i)] {
            let (r, _) = inject(plan, || https_location(Some("example.com"), "/a?b", 8443));
            assert!(
                r.as_deref() == Ok("https://example.com:8443/a?b") || r == Err(503),
                "{r:?}"
            );
        }
    }
}
