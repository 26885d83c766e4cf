//! ETags, conditional requests and byte ranges.

use uk_http::*;

const META: FileMeta = FileMeta {
    len: 1000,
    mtime_unix: 784_111_777,
    seed: 0xabc,
};
const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

fn req() -> Request {
    Request {
        keep_alive: true,
        version_minor: 1,
        target: "/f".into(),
        ..Request::default()
    }
}

#[test]
fn etag_format() {
    assert_eq!(etag(&META), "\"3e8-2ebc98a1-abc\"");
    assert_eq!(etag(&FileMeta::default()), "\"0-0-0\"");
}

#[test]
fn etag_matching() {
    let tag = "\"x\"";
    assert!(etag_list_matches("*", tag, true));
    assert!(etag_list_matches(" * ", tag, false));
    assert!(etag_list_matches("\"x\"", tag, false));
    assert!(etag_list_matches("\"a\", \"x\"", tag, false));
    assert!(etag_list_matches("\"a\",\"x\"", tag, true));
    assert!(etag_list_matches("W/\"x\"", tag, true));
    assert!(!etag_list_matches("W/\"x\"", tag, false));
    assert!(etag_list_matches("\"x\"", "W/\"x\"", true));
    assert!(!etag_list_matches("\"x\"", "W/\"x\"", false));
    assert!(!etag_list_matches("\"y\"", tag, true));
    assert!(!etag_list_matches("x", tag, true));
    assert!(!etag_list_matches("\"x", tag, true));
    assert!(!etag_list_matches("", tag, true));
    assert!(!etag_list_matches("\"a\", garbage, \"x\"", tag, true));
    assert!(!etag_list_matches("\"\"", tag, true));
}

#[test]
fn preconditions() {
    let tag = etag(&META);
    let eval = |r: &Request| evaluate_preconditions(r, &tag, META.mtime_unix);
    use Precondition::*;
    assert_eq!(eval(&req()), Proceed);

    let r = Request {
        if_none_match: Some(tag.clone()),
        ..req()
    };
    assert_eq!(eval(&r), NotModified);
    let r = Request {
        if_none_match: Some(format!("W/{tag}")),
        ..req()
    };
    assert_eq!(eval(&r), NotModified);
    let r = Request {
        if_none_match: Some("*".into()),
        ..req()
    };
    assert_eq!(eval(&r), NotModified);
    let r = Request {
        if_none_match: Some("\"other\"".into()),
        ..req()
    };
    assert_eq!(eval(&r), Proceed);
    // INM present → IMS ignored even if it would match.
    let r = Request {
        if_none_match: Some("\"other\"".into()),
        if_modified_since: Some(LM.into()),
        ..req()
    };
    assert_eq!(eval(&r), Proceed);

    let r = Request {
        if_modified_since: Some(LM.into()),
        ..req()
    };
    assert_eq!(eval(&r), NotModified);
    let r = Request {
        if_modified_since: Some("Sun, 06 Nov 1994 08:49:38 GMT".into()),
        ..req()
    };
    assert_eq!(eval(&r), NotModified);
    let r = Request {
        if_modified_since: Some("Sun, 06 Nov 1994 08:49:36 GMT".into()),
        ..req()
    };
    assert_eq!(eval(&r), Proceed);
    let r = Request {
        if_modified_since: Some("yesterday".into()),
        ..req()
    };
    assert_eq!(eval(&r), Proceed);
    let r = Request {
        if_modified_since: Some(format!("{LM}, {LM}")),
        ..req()
    };
    assert_eq!(eval(&r), Proceed);

    let r = Request {
        if_match: Some("\"nope\"".into()),
        ..req()
    };
    assert_eq!(eval(&r), Failed);
    let r = Request {
        if_match: Some(format!("W/{tag}")),
        ..req()
    };
    assert_eq!(eval(&r), Failed);
    let r = Request {
        if_match: Some(tag.clone()),
        if_none_match: Some(tag.clone()),
        ..req()
    };
    assert_eq!(eval(&r), NotModified);
    let r = Request {
        if_match: Some("*".into()),
        ..req()
    };
    assert_eq!(eval(&r), Proceed);
    let r = Request {
        if_unmodified_since: Some("Sun, 06 Nov 1994 08:49:36 GMT".into()),
        ..req()
    };
    assert_eq!(eval(&r), Failed);
    let r = Request {
        if_unmodified_since: Some(LM.into()),
        ..req()
    };
    assert_eq!(eval(&r), Proceed);
    // If-Match present → If-Unmodified-Since ignored.
    let r = Request {
        if_match: Some(tag.clone()),
        if_unmodified_since: Some("Sun, 06 Nov 1994 08:49:36 GMT".into()),
        ..req()
    };
    assert_eq!(eval(&r), Proceed);
}

#[test]
fn if_range() {
    let tag = etag(&META);
    assert!(if_range_allows(&tag, &tag, META.mtime_unix));
    assert!(!if_range_allows(&format!("W/{tag}"), &tag, META.mtime_unix));
    assert!(!if_range_allows("\"other\"", &tag, META.mtime_unix));
    assert!(!if_range_allows(
        &format!("{tag}, {tag}"),
        &tag,
        META.mtime_unix
    ));
    assert!(if_range_allows(LM, &tag, META.mtime_unix));
    assert!(!if_range_allows(
        "Sun, 06 Nov 1994 08:49:38 GMT",
        &tag,
        META.mtime_unix
    ));
    assert!(!if_range_allows("garbage", &tag, META.mtime_unix));
    assert!(!if_range_allows(&tag, &format!("W/{tag}"), META.mtime_unix));
}

fn r(first: u64, last: u64) -> ByteRange {
    ByteRange { first, last }
}

#[test]
fn ranges_single() {
    use RangeOutcome::*;
    let p = |h: &str, len: u64| parse_range(h, len, 16);
    assert_eq!(p("bytes=0-0", 10), Partial(vec![r(0, 0)]));
    assert_eq!(p("bytes=9-9", 10), Partial(vec![r(9, 9)]));
    assert_eq!(p("bytes=9-", 10), Partial(vec![r(9, 9)]));
    assert_eq!(p("bytes=-1", 10), Partial(vec![r(9, 9)]));
    assert_eq!(p("bytes=-10", 10), Partial(vec![r(0, 9)]));
    assert_eq!(p("bytes=-100", 10), Partial(vec![r(0, 9)]));
    assert_eq!(p("bytes=0-", 10), Partial(vec![r(0, 9)]));
    assert_eq!(p("bytes=5-100", 10), Partial(vec![r(5, 9)]));
    assert_eq!(
        p("bytes=0-99999999999999999999999", 10),
        Partial(vec![r(0, 9)])
    );
    assert_eq!(p("BYTES=2-3", 10), Partial(vec![r(2, 3)]));
    assert_eq!(p(" bytes=2-3 ", 10), Partial(vec![r(2, 3)]));
    assert_eq!(p("bytes=10-", 10), Unsatisfiable);
    assert_eq!(p("bytes=10-20", 10), Unsatisfiable);
    assert_eq!(p("bytes=99999999999999999999999-", 10), Unsatisfiable);
    assert_eq!(p("bytes=-0", 10), Unsatisfiable);
    // Empty file: every byte range is unsatisfiable.
    for h in [
        "bytes=0-0",
        "bytes=0-",
        "bytes=-1",
        "bytes=-0",
        "bytes=0-0,-5",
    ] {
        assert_eq!(p(h, 0), Unsatisfiable, "{h}");
    }
    // Invalid syntax → ignore.
    for h in [
        "bytes=5-4",
        "bytes=",
        "bytes=,",
        "bytes=a-b",
        "bytes=-",
        "bytes=1",
        "bytes=--1",
        "bytes=1-2-3",
        "items=0-1",
        "bytes 0-1",
        "bytes=0 -1",
        "bytes=+1-2",
        "bytes=0-1,x",
        "bytes=0-1, bytes=2-3",
        "",
    ] {
        assert_eq!(p(h, 10), Full, "{h}");
    }
}

#[test]
fn ranges_multiple() {
    use RangeOutcome::*;
    let p = |h: &str, len: u64| parse_range(h, len, 4);
    assert_eq!(p("bytes=0-1,5-6", 10), Partial(vec![r(0, 1), r(5, 6)]));
    assert_eq!(p("bytes=5-6, 0-1", 10), Partial(vec![r(0, 1), r(5, 6)]));
    // Overlapping and adjacent ranges coalesce.
    assert_eq!(p("bytes=0-4,3-6", 10), Partial(vec![r(0, 6)]));
    assert_eq!(p("bytes=0-4,5-6", 10), Partial(vec![r(0, 6)]));
    assert_eq!(p("bytes=0-1,-2,4-", 10), Partial(vec![r(0, 1), r(4, 9)]));
    assert_eq!(p("bytes=0-0,0-0,0-0", 10), Partial(vec![r(0, 0)]));
    // Unsatisfiable members dropped.
    assert_eq!(p("bytes=20-30,2-3", 10), Partial(vec![r(2, 3)]));
    assert_eq!(p("bytes=20-30,-0", 10), Unsatisfiable);
    // Empty list elements are tolerated.
    assert_eq!(p("bytes=0-1,,  ,5-6", 10), Partial(vec![r(0, 1), r(5, 6)]));
    // Too many ranges → ignored entirely.
    assert_eq!(
        p("bytes=0-0,2-2,4-4,6-6", 10).clone(),
        Partial(vec![r(0, 0), r(2, 2), r(4, 4), r(6, 6)])
    );
    assert_eq!(p("bytes=0-0,2-2,4-4,6-6,8-8", 10), Full);
    assert_eq!(r(3, 5).len(), 3);
    assert!(!r(3, 3).is_empty());
}
