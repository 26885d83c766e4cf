//! Fuzzing entry point shared by the cargo-fuzz target and the stable
//! randomized test.

use alloc::string::String;

use crate::date::{MAX_HTTP_DATE, format_http_date, parse_http_date};
use crate::encoding::{Encoding, choose_encoding};
use crate::log::combined_log_line;
use crate::mime::mime_for;
use crate::parse::{Limits, ParseOutcome, parse_request};
use crate::path::resolve_target;
use crate::precond::{FileMeta, RangeOutcome, parse_range};
use crate::response::{
    BodyPart, FileInfo, Resource, ResponsePlan, ServerInfo, plan_error, plan_response,
};

const NOW: u64 = 1_700_000_000;

fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Runs arbitrary bytes through parse → resolve → plan (with fake file
/// metadata derived from the input) and the auxiliary parsers, asserting the
/// crate's invariants. Panics only if an invariant is violated.
///
/// Invariants checked: parsing consumes a non-empty prefix within the
/// buffer; error statuses are 4xx/5xx; resolved paths start with `/` and have
/// no empty, `.` or `..` segments, backslashes or control characters; every
/// header block is well-formed (status line, CRLF-terminated lines without
/// stray CR/LF, final empty line); the body length equals `Content-Length`
/// (except HEAD and 304, which carry no body); file parts lie within the
/// selected file; ranges are sorted, disjoint and in bounds; HTTP-dates
/// round-trip; log lines are printable ASCII.
pub fn fuzz_one(data: &[u8]) {
    let h = fnv(data);
    let tiny = Limits {
        max_request_line: 48,
        max_header_bytes: 160,
        max_headers: 6,
        max_body: 8,
    };
    run_pipeline(data, &Limits::default(), h);
    run_pipeline(data, &tiny, h.rotate_left(17));

    let text = String::from_utf8_lossy(data);
    if let Some(t) = parse_http_date(&text) {
        assert!(t <= MAX_HTTP_DATE + 1);
        let back = parse_http_date(&format_http_date(t));
        assert_eq!(back, Some(t.min(MAX_HTTP_DATE)));
    }
    let len = [0, 1, 2, 100, 1 << 40, u64::MAX][(h % 6) as usize];
    check_ranges(&parse_range(&text, len, 8), len);
    let _ = choose_encoding(Some(&text), h & 1 == 0, h & 2 == 0);
    let _ = mime_for(&text);
    let line = alloc::format!(
        "{}",
        combined_log_line(&text, &text, 200, h, Some(&text), None, h)
    );
    assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)));
}

fn check_ranges(outcome: &RangeOutcome, len: u64) {
    if let RangeOutcome::Partial(ranges) = outcome {
        assert!(!ranges.is_empty());
        for w in ranges.windows(2) {
            assert!(w[0].last.saturating_add(1) < w[1].first);
        }
        for r in ranges {
            assert!(r.first <= r.last && r.last < len);
        }
    }
}

fn run_pipeline(data: &[u8], limits: &Limits, h: u64) {
    let info = ServerInfo {
        server: "fuzz",
        max_ranges: 4,
        cache_control: if h & 4 == 0 { Some("max-age=60") } else { None },
        headers: &[],
    };
    let mut off = 0usize;
    for round in 0..16u64 {
        let Some(buf) = data.get(off..).filter(|b| !b.is_empty()) else {
            return;
        };
        let advance = match parse_request(buf, limits) {
            ParseOutcome::Partial => return,
            ParseOutcome::Error(e) => {
                assert!((400..600).contains(&e.status), "status {}", e.status);
                let plan = e.response(NOW, &info);
                check_plan(&plan, None, e.head_request);
                if e.close {
                    return;
                }
                assert!(e.consumed > 0 && e.consumed <= buf.len());
                assert!(e.body_len <= limits.max_body);
                (e.consumed, e.body_len)
            }
            ParseOutcome::Complete { request, consumed } => {
                assert!(consumed > 0 && consumed <= buf.len());
                assert!(request.body_len <= limits.max_body);
                let seed = h.rotate_left(round as u32 * 7);
                match resolve_target(&request.target) {
                    Err(e) => {
                        assert_eq!(e.status, 400);
                        let plan = plan_error(&request, e.status, NOW, &info);
                        check_plan(&plan, None, request.is_head());
                    }
                    Ok(path) => {
                        let p = path.as_str();
                        assert!(p.starts_with('/'));
                        assert!(!p.contains("//") && !p.contains('\\'));
                        assert!(!p.bytes().any(|b| b < 0x20 || b == 0x7f));
                        for s in path.segments() {
                            assert!(!s.is_empty() && s != "." && s != "..");
                        }
                        assert!(path.trailing_slash() == p.ends_with('/'));
                        let again = resolve_target(&path.to_uri_path().expect("memory"))
                            .map(|q| String::from(q.as_str()));
                        assert_eq!(again.as_deref(), Ok(p));
                        let meta = |s: u64| FileMeta {
                            len: [0, 1, 5, 1000, 1 << 33][(s % 5) as usize],
                            mtime_unix: [0, 784_111_777, NOW, u64::MAX][((s >> 3) % 4) as usize],
                            seed: s,
                        };
                        let file = FileInfo {
                            meta: meta(seed),
                            content_type: mime_for(p),
                            gzip: (seed & 0x100 != 0).then(|| meta(seed >> 9)),
                            brotli: (seed & 0x200 != 0).then(|| meta(seed >> 13)),
                        };
                        let resource = match (seed >> 20) % 8 {
                            0 => Resource::NotFound,
                            1 => Resource::Directory,
                            2 => Resource::Forbidden,
                            _ => Resource::File(file),
                        };
                        let plan = plan_response(&request, &path, &resource, NOW, &info);
                        let selected = match plan.encoding {
                            Encoding::Identity => file.meta.len,
                            Encoding::Gzip => file.gzip.map_or(0, |m| m.len),
                            Encoding::Brotli => file.brotli.map_or(0, |m| m.len),
                        };
                        check_plan(&plan, Some(selected), request.is_head());
                        assert_eq!(plan.keep_alive, request.keep_alive);
                    }
                }
                (consumed, request.body_len)
            }
        };
        let Some(next) = usize::try_from(advance.1)
            .ok()
            .and_then(|b| off.checked_add(advance.0)?.checked_add(b))
        else {
            return;
        };
        off = next;
    }
}

fn check_plan(plan: &ResponsePlan, file_len: Option<u64>, head: bool) {
    let text = core::str::from_utf8(&plan.head).expect("header block is UTF-8");
    let block = text
        .strip_suffix("\r\n\r\n")
        .expect("header block ends with CRLFCRLF");
    let mut lines = block.split("\r\n");
    let status_line = lines.next().expect("status line");
    assert!(status_line.starts_with("HTTP/1.1 "));
    assert_eq!(
        status_line.get(9..12),
        Some(alloc::format!("{}", plan.status).as_str())
    );
    let mut content_length = None;
    let mut connection = None;
    for line in lines {
        assert!(!line.contains('\r') && !line.contains('\n'));
        let (name, value) = line.split_once(": ").expect("field line");
        assert!(!name.is_empty() && !name.contains(' '));
        if name == "Content-Length" {
            assert!(content_length.is_none(), "duplicate Content-Length");
            content_length = Some(value.parse::<u64>().expect("numeric Content-Length"));
        }
        if name == "Connection" {
            connection = Some(value);
        }
    }
    if !plan.keep_alive {
        assert_eq!(connection, Some("close"));
    } else {
        assert_ne!(connection, Some("close"));
    }
    let body_len = plan.body_len();
    if plan.status == 304 {
        assert!(plan.body.is_empty() && content_length.is_none());
    } else {
        let cl = content_length.expect("Content-Length present");
        if head {
            assert!(plan.body.is_empty());
        } else {
            assert_eq!(cl, body_len);
        }
    }
    for part in &plan.body {
        match part {
            BodyPart::File { offset, len } => {
                let file_len = file_len.expect("file part only for file resources");
                assert!(*len > 0);
                assert!(offset.checked_add(*len).is_some_and(|end| end <= file_len));
            }
            BodyPart::Bytes(b) => assert!(!b.is_empty()),
        }
    }
}
