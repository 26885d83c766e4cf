//! The static file server (`apps/httpd`) against booted images, with real
//! clients: a raw HTTP/1.1 client on `std::net::TcpStream` for exact bytes
//! (pipelining, malformed requests, slowloris), `ureq` (an HTTP client
//! library) and `curl`. Traffic goes only to 127.0.0.1 (QEMU user
//! networking, forwards bound to 127.0.0.1).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use uk_cli::image::{ImageFormat, build_image_from_dir, pseudo_random_bytes, temp_path};
use uk_tests::{BootOpts, Guest, Machine, free_port, machine_tests};

const BIG: usize = 16 << 20;
/// A small file with known bytes for range checks.
const DATA_LEN: usize = 1000;
const IO_TIMEOUT: Duration = Duration::from_secs(120);

struct Site {
    image: PathBuf,
    big_sha: String,
    data: Vec<u8>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut stdin = child.stdin.take().unwrap();
    let data = bytes.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("sha256sum output");
    feeder.join().unwrap().expect("feed sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// The test disk, built once: the document root is `/www`; `/secret.txt`
/// lies outside it and must never be served.
fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let dir = temp_path("httpd-site");
        let www = dir.join("www");
        for d in ["dir", "empty", "sub/deeper"] {
            std::fs::create_dir_all(www.join(d)).unwrap();
        }
        std::fs::write(dir.join("secret.txt"), b"TOP SECRET\n").unwrap();
        std::fs::write(
            www.join("index.html"),
            b"<!DOCTYPE html><h1>root index</h1>\n",
        )
        .unwrap();
        std::fs::write(www.join("hello.txt"), b"hello, world\n").unwrap();
        std::fs::write(www.join("dir/index.html"), b"<p>dir index</p>\n").unwrap();
        std::fs::write(www.join("sub/deeper/page.html"), b"<p>deep</p>\n").unwrap();
        std::fs::write(www.join(".hidden"), b"dotfile\n").unwrap();
        std::fs::write(www.join("app.js"), b"console.log('identity');\n").unwrap();
        std::fs::write(www.join("app.js.gz"), b"GZIP-BYTES").unwrap();
        std::fs::write(www.join("app.js.br"), b"BROTLI-BYTES").unwrap();
        std::fs::write(www.join("photo.png"), b"\x89PNG\r\n\x1a\nfake").unwrap();
        std::fs::write(www.join("empty.txt"), b"").unwrap();
        let data: Vec<u8> = (0..DATA_LEN).map(|i| (i % 251) as u8).collect();
        std::fs::write(www.join("data.bin"), &data).unwrap();
        let big = pseudo_random_bytes(99, BIG);
        let big_sha = sha256_hex(&big);
        std::fs::write(www.join("big.bin"), &big).unwrap();
        std::os::unix::fs::symlink("../secret.txt", www.join("link.txt")).unwrap();
        std::os::unix::fs::symlink("/secret.txt", www.join("abs-link.txt")).unwrap();
        let image = temp_path("httpd-test").with_extension("img");
        build_image_from_dir(&dir, &image, ImageFormat::Ext4).expect("build the ext4 image");
        let _ = std::fs::remove_dir_all(&dir);
        Site {
            image,
            big_sha,
            data,
        }
    })
}

struct Server {
    guest: Guest,
    port: u16,
}

fn boot(m: Machine, disk: &Path, mem: &str, args: &[&str]) -> Server {
    let port = free_port();
    let guest = Guest::boot(
        "httpd",
        m,
        BootOpts::args(args).mem(mem).disk(disk).fwd(port, 80),
    );
    guest.expect("httpd: serving");
    Server { guest, port }
}

fn boot_site(m: Machine, args: &[&str]) -> Server {
    let mut all = vec!["--root", "/www"];
    all.extend_from_slice(args);
    boot(m, &site().image, "128M", &all)
}

#[derive(Debug)]
struct Resp {
    status: u16,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A connection speaking raw HTTP/1.1.
struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Conn {
            r: BufReader::with_capacity(256 * 1024, s),
        }
    }

    fn send(&mut self, raw: &[u8]) {
        self.r.get_mut().write_all(raw).expect("send");
    }

    /// Reads one response; `head` = it answers a HEAD request (no body).
    fn read(&mut self, head: bool) -> Resp {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("status line");
        assert!(!line.is_empty(), "connection closed before a response");
        let mut parts = line.trim_end().splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).expect("header line");
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            let (n, v) = h
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header {h:?}"));
            headers.push((n.to_string(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            version,
            headers,
            body: Vec::new(),
        };
        let len: usize = resp
            .header("content-length")
            .map(|v| v.parse().expect("numeric Content-Length"))
            .unwrap_or(0);
        if !head && status != 304 {
            resp.body = vec![0; len];
            self.r.read_exact(&mut resp.body).expect("body");
        }
        resp
    }

    fn get(&mut self, target: &str) -> Resp {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.read(false)
    }

    /// True if the server closes the connection (EOF) within the timeout.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0))
    }
}

/// One request on a fresh connection.
fn once(port: u16, raw: &str) -> Resp {
    let mut c = Conn::open(port);
    c.send(raw.as_bytes());
    c.read(raw.starts_with("HEAD "))
}

fn get(port: u16, target: &str, extra: &str) -> Resp {
    once(
        port,
        &format!("GET {target} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n"),
    )
}

fn check_common_headers(r: &Resp) {
    for h in ["date", "server", "content-length"] {
        assert!(r.header(h).is_some(), "missing {h}: {r:?}");
    }
    assert_eq!(r.header("server"), Some("uk-httpd"));
    let date = r.header("date").unwrap();
    assert!(date.ends_with(" GMT") && date.len() == 29, "Date: {date}");
}

fn files_and_directories(port: u16) {
    let r = get(port, "/", "");
    assert_eq!(r.status, 200);
    check_common_headers(&r);
    assert_eq!(r.text(), "<!DOCTYPE html><h1>root index</h1>\n");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").is_some_and(|e| e.starts_with('"')));
    assert!(r.header("last-modified").is_some());
    assert_eq!(r.header("connection"), Some("close"));

    let r = get(port, "/hello.txt", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("13"));
    assert_eq!(r.body, b"hello, world\n");
    assert_eq!(
        get(port, "/photo.png", "").header("content-type"),
        Some("image/png")
    );
    let r = get(port, "/empty.txt", "");
    assert_eq!((r.status, r.header("content-length")), (200, Some("0")));

    let r = once(port, "HEAD /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("13"));

    let r = get(port, "/dir", "");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/dir/"));
    let r = get(port, "/dir?x=1", "");
    assert_eq!(r.header("location"), Some("/dir/?x=1"));
    let r = get(port, "/dir/", "");
    assert_eq!((r.status, r.text().as_str()), (200, "<p>dir index</p>\n"));
    assert_eq!(get(port, "/sub/deeper/page.html", "").status, 200);
    assert_eq!(get(port, "/empty/", "").status, 403, "no listings");
    assert_eq!(get(port, "/hello.txt/", "").status, 404);
    assert_eq!(get(port, "/missing.html", "").status, 404);
    assert_eq!(get(port, "/.hidden", "").status, 403);
}

fn traversal_is_rejected(port: u16) {
    let attempts = [
        "/../secret.txt",
        "/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/..\\secret.txt",
        "/%5c..%5csecret.txt",
        "/dir/..%5c..%5csecret.txt",
        "/hello.txt%00.html",
        "/%00",
        "/dir/%2e%2e/%2e%2e/secret.txt",
        "//../secret.txt",
        "/./../secret.txt",
        "http://test/../secret.txt",
        "/%252e%252e/secret.txt",
        "/link.txt",
        "/abs-link.txt",
        "/secret.txt",
        "secret.txt",
        "*",
    ];
    for t in attempts {
        let r = get(port, t, "");
        assert!(
            matches!(r.status, 400 | 403 | 404),
            "{t}: status {} {:?}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("TOP SECRET"), "{t} leaked the secret");
    }
    // Symlinks below the root are refused, not followed.
    assert_eq!(get(port, "/link.txt", "").status, 403);
    // A legitimate dot-dot inside the root is normalized.
    let r = get(port, "/dir/../hello.txt", "");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello, world\n"[..]));
}

fn error_statuses(port: u16) {
    // Each malformed request gets its status; fatal ones close the connection.
    let cases: [(&str, String, u16, bool); 10] = [
        ("garbage", "\x01\x02 nonsense\r\n\r\n".into(), 400, true),
        (
            "no Host on 1.1",
            "GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n".into(),
            400,
            true,
        ),
        (
            "bad Content-Length",
            "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n".into(),
            400,
            true,
        ),
        (
            "POST",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc".into(),
            405,
            false,
        ),
        (
            "unknown method",
            "BREW / HTTP/1.1\r\nHost: t\r\n\r\n".into(),
            501,
            false,
        ),
        (
            "Transfer-Encoding",
            "GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
            501,
            true,
        ),
        (
            "HTTP/2.0",
            "GET / HTTP/2.0\r\nHost: t\r\n\r\n".into(),
            505,
            true,
        ),
        (
            "long URI",
            format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000)),
            414,
            true,
        ),
        (
            "huge header",
            format!(
                "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
                "b".repeat(20_000)
            ),
            431,
            true,
        ),
        (
            "body too large",
            "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999\r\n\r\n".into(),
            413,
            true,
        ),
    ];
    for (what, raw, status, closes) in cases {
        let mut c = Conn::open(port);
        c.send(raw.as_bytes());
        let r = c.read(false);
        assert_eq!(r.status, status, "{what}: {r:?}");
        assert!(
            r.text().contains(&status.to_string()),
            "{what}: small body names the status"
        );
        if status == 405 {
            assert_eq!(r.header("allow"), Some("GET, HEAD"), "{what}");
        }
        if closes {
            assert_eq!(r.header("connection"), Some("close"), "{what}");
            assert!(c.closed(), "{what}: the connection must close");
        } else {
            // The connection stays usable: the next request is served.
            let next = c.get("/hello.txt");
            assert_eq!(next.status, 200, "{what}: request after it");
        }
    }
    // Too many header fields.
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..100 {
        raw.push_str(&format!("X-H{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    let mut c = Conn::open(port);
    c.send(raw.as_bytes());
    assert_eq!(c.read(false).status, 431);
    assert!(c.closed());
}

fn keep_alive_pipelining_and_http10(port: u16) {
    // Three pipelined requests in one write, answered in order.
    let mut c = Conn::open(port);
    c.send(
        b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /dir/ HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /missing HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /data.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\n\r\n",
    );
    let a = c.read(false);
    let b = c.read(true);
    let d = c.read(false);
    let e = c.read(false);
    assert_eq!(
        (a.status, b.status, d.status, e.status),
        (200, 200, 404, 206)
    );
    assert_eq!(a.body, b"hello, world\n");
    assert_eq!(b.header("content-length"), Some("17"));
    assert_eq!(e.body, &site().data[..10]);
    // Keep-alive: the same connection serves 20 more.
    for _ in 0..20 {
        assert_eq!(c.get("/hello.txt").status, 200);
    }
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read(false).header("connection"), Some("close"));
    assert!(c.closed());

    // HTTP/1.0: closes by default, keeps alive when asked, no Host needed.
    let mut c = Conn::open(port);
    c.send(b"GET /hello.txt HTTP/1.0\r\n\r\n");
    let r = c.read(false);
    assert_eq!((r.status, r.version.as_str()), (200, "HTTP/1.1"));
    assert_eq!(r.body, b"hello, world\n");
    assert!(c.closed());
    let mut c = Conn::open(port);
    c.send(b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET /dir/ HTTP/1.0\r\n\r\n");
    assert_eq!(c.read(false).text(), "<p>dir index</p>\n");
    assert!(c.closed());
}

fn ranges(port: u16) {
    let data = &site().data;
    let n = DATA_LEN;
    let range = |spec: &str| get(port, "/data.bin", &format!("Range: {spec}\r\n"));
    for (spec, first, last) in [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=990-", 990, n - 1),
        ("bytes=-1", n - 1, n - 1),
        ("bytes=-10", n - 10, n - 1),
        ("bytes=999-999", n - 1, n - 1),
        ("bytes=500-5000", 500, n - 1),
        ("bytes=-5000", 0, n - 1),
    ] {
        let r = range(spec);
        assert_eq!(r.status, 206, "{spec}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {first}-{last}/{n}").as_str()),
            "{spec}"
        );
        assert_eq!(r.body, &data[first..=last], "{spec}");
    }
    for spec in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let r = range(spec);
        assert_eq!(r.status, 416, "{spec}");
        assert_eq!(r.header("content-range"), Some("bytes */1000"), "{spec}");
    }
    // Malformed or foreign units are ignored: the whole file.
    for spec in ["bytes=abc", "items=0-1", "bytes=5-1"] {
        assert_eq!(range(spec).status, 200, "{spec}");
    }
    // Multiple ranges: multipart/byteranges.
    let r = range("bytes=0-1,10-12,-2");
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap().to_string();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{ct}"));
    let mut parts = Vec::new();
    let delim = format!("--{boundary}");
    let text = r.text();
    assert!(text.ends_with(&format!("--{boundary}--\r\n")), "{text}");
    for chunk in text.split(&delim).skip(1) {
        if chunk.starts_with("--") {
            break;
        }
        let (head, rest) = chunk.split_once("\r\n\r\n").expect("part head");
        assert!(
            head.contains("Content-Type: application/octet-stream"),
            "{head}"
        );
        let cr = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: bytes "))
            .expect("part Content-Range");
        parts.push((cr.to_string(), rest.len()));
    }
    let crs: Vec<&str> = parts.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(crs, ["0-1/1000", "10-12/1000", "998-999/1000"]);
    // Ranges of the 16 MiB file at its edges.
    let big = |spec: &str| get(port, "/big.bin", &format!("Range: {spec}\r\n"));
    let r = big(&format!("bytes={}-", BIG - 3));
    assert_eq!((r.status, r.body.len()), (206, 3));
    let r = big("bytes=4095-4096");
    assert_eq!((r.status, r.body.len()), (206, 2));
    assert_eq!(r.body, &pseudo_random_bytes(99, 4097)[4095..]);

    // If-Range: a matching validator gives the range, a stale one the file.
    let etag = get(port, "/data.bin", "")
        .header("etag")
        .unwrap()
        .to_string();
    let lm = get(port, "/data.bin", "")
        .header("last-modified")
        .unwrap()
        .to_string();
    let r = get(
        port,
        "/data.bin",
        &format!("Range: bytes=0-3\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!((r.status, r.body.len()), (206, 4));
    let r = get(
        port,
        "/data.bin",
        "Range: bytes=0-3\r\nIf-Range: \"stale\"\r\n",
    );
    assert_eq!((r.status, r.body.len()), (200, n));
    let r = get(
        port,
        "/data.bin",
        &format!("Range: bytes=0-3\r\nIf-Range: {lm}\r\n"),
    );
    assert_eq!(r.status, 206);
}

fn conditionals_and_encodings(port: u16) {
    let r = get(port, "/hello.txt", "");
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();
    let r = get(port, "/hello.txt", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = get(
        port,
        "/hello.txt",
        &format!("If-None-Match: \"other\", {etag}\r\n"),
    );
    assert_eq!(r.status, 304);
    let r = get(port, "/hello.txt", "If-None-Match: *\r\n");
    assert_eq!(r.status, 304);
    let r = get(port, "/hello.txt", "If-None-Match: \"other\"\r\n");
    assert_eq!(r.status, 200);
    let r = get(port, "/hello.txt", &format!("If-Modified-Since: {lm}\r\n"));
    assert_eq!(r.status, 304);
    let r = get(
        port,
        "/hello.txt",
        "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n",
    );
    assert_eq!(r.status, 200);
    // If-None-Match wins over If-Modified-Since.
    let r = get(
        port,
        "/hello.txt",
        &format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {lm}\r\n"),
    );
    assert_eq!(r.status, 200);

    // Precompressed siblings.
    let r = get(port, "/app.js", "Accept-Encoding: gzip, deflate\r\n");
    assert_eq!(r.body, b"GZIP-BYTES");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let r = get(port, "/app.js", "Accept-Encoding: gzip, br\r\n");
    assert_eq!(r.body, b"BROTLI-BYTES");
    assert_eq!(r.header("content-encoding"), Some("br"));
    let r = get(port, "/app.js", "");
    assert_eq!(r.body, b"console.log('identity');\n");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let r = get(port, "/app.js", "Accept-Encoding: gzip;q=0, br;q=0\r\n");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(get(port, "/hello.txt", "").header("vary"), None);
}

fn slowloris_gets_408(g: &Guest, port: u16, timeout: Duration) {
    let mut c = Conn::open(port);
    let start = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    // Keep trickling bytes: the deadline counts from the first byte.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        if c.r.get_mut().write_all(b"a").is_err() {
            break;
        }
    }
    let r = c.read(false);
    let took = start.elapsed();
    assert_eq!(r.status, 408, "{r:?}");
    assert!(c.closed());
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(20),
        "408 after {took:?}"
    );
    // An idle connection that never sends is closed too (silently).
    let mut idle = Conn::open(port);
    assert!(idle.closed(), "idle connection closed");
    g.expect("\"-\" 408 ");
}

fn big_download_sha(port: u16) {
    let r = get(port, "/big.bin", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), BIG);
    assert_eq!(sha256_hex(&r.body), site().big_sha, "16 MiB body");
}

fn curl_and_ureq(port: u16) {
    let url = format!("http://127.0.0.1:{port}");
    // curl: the full file through a real client, checked by SHA-256.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "300",
            "-o",
            "-",
            &format!("{url}/big.bin"),
        ])
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_hex(&out.stdout), site().big_sha, "curl body");
    // curl: HTTP/1.0, a range and a redirect followed.
    let out = Command::new("curl")
        .args(["-sS", "-0", "-r", "2-5", &format!("{url}/hello.txt")])
        .output()
        .expect("run curl");
    assert_eq!(out.stdout, b"llo,");
    let out = Command::new("curl")
        .args([
            "-sS",
            "-L",
            "-w",
            "%{http_code} %{num_redirects}",
            &format!("{url}/dir"),
        ])
        .output()
        .expect("run curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "<p>dir index</p>\n200 1"
    );
    let out = Command::new("curl")
        .args([
            "-sS",
            "-H",
            "Accept-Encoding: gzip",
            "-D",
            "-",
            &format!("{url}/app.js"),
        ])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("content-encoding: gzip"), "{text}");
    assert!(
        lower.contains("vary: accept-encoding") && text.ends_with("GZIP-BYTES"),
        "{text}"
    );

    // ureq: one agent, keep-alive across requests.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    for _ in 0..5 {
        let r = agent.get(&format!("{url}/hello.txt")).call().expect("GET");
        assert_eq!(r.status(), 200);
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.into_string().unwrap(), "hello, world\n");
    }
    match agent.get(&format!("{url}/nope")).call() {
        Err(ureq::Error::Status(404, r)) => {
            assert_eq!(r.header("server"), Some("uk-httpd"));
        }
        other => panic!("expected 404, got {other:?}"),
    }
    match agent.post(&format!("{url}/")).send_string("x") {
        Err(ureq::Error::Status(405, r)) => assert_eq!(r.header("allow"), Some("GET, HEAD")),
        other => panic!("expected 405, got {other:?}"),
    }
    let r = agent
        .get(&format!("{url}/data.bin"))
        .set("Range", "bytes=10-19")
        .call()
        .expect("range");
    assert_eq!(r.status(), 206);
    let mut body = Vec::new();
    r.into_reader().read_to_end(&mut body).unwrap();
    assert_eq!(body, &site().data[10..20]);
}

/// 100 keep-alive clients at once. Connections are opened one after the
/// other (QEMU's user networking takes host connections through a backlog
/// of one), each proven live by a first request; then all 100 run
/// requests concurrently on their connections.
fn hundred_keep_alive_clients(port: u16) {
    let conns: Vec<Conn> = (0..100)
        .map(|i| {
            let mut c = Conn::open(port);
            assert_eq!(c.get("/hello.txt").status, 200, "client {i}: first request");
            c
        })
        .collect();
    let threads: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                for k in 0..5 {
                    get_100_bytes_of_data(&mut c, (i * 7 + k * 3) % 900, i, k);
                    let r = c.get("/dir/");
                    assert_eq!(r.body, b"<p>dir index</p>\n", "client {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

machine_tests!(serves_http_correctly, |m| {
    let header_timeout = Duration::from_secs(2);
    let s = boot_site(m, &["--header-timeout", "2s", "--idle-timeout", "4s"]);
    files_and_directories(s.port);
    traversal_is_rejected(s.port);
    error_statuses(s.port);
    keep_alive_pipelining_and_http10(s.port);
    ranges(s.port);
    conditionals_and_encodings(s.port);
    big_download_sha(s.port);
    curl_and_ureq(s.port);
    slowloris_gets_408(&s.guest, s.port, header_timeout);
    // The access log: Combined Log Format, one line per response.
    let line = s
        .guest
        .wait_for(
            "\"GET /hello.txt HTTP/1.0\" 200 13",
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(
        line.starts_with("10.0.2.2 - - [") && line.ends_with("\"-\" \"-\""),
        "{line}"
    );
    s.guest
        .wait_for("\"GET / HTTP/1.1\" 400 ", Duration::from_secs(10))
        .unwrap();
    let curl_line = s.guest.wait_for(
        "\"GET /big.bin HTTP/1.1\" 200 16777216 \"-\" \"curl/",
        Duration::from_secs(10),
    );
    assert!(curl_line.is_ok(), "{curl_line:?}");
});

// Its own server with the default idle timeout (30 s): opening 100
// connections through user networking can take longer than the 4 s idle
// timeout the main test uses, and an idle keep-alive connection is closed.
machine_tests!(hundred_concurrent_keep_alive_clients, |m| {
    let s = boot_site(m, &[]);
    hundred_keep_alive_clients(s.port);
});

#[test]
fn read_and_mmap_data_paths_serve_16_mib_intact() {
    for path in ["read", "mmap"] {
        let s = boot_site(Machine::Microvm, &["--data-path", path, "--no-access-log"]);
        s.guest.expect(&format!("data path {path}"));
        big_download_sha(s.port);
        let r = get(
            s.port,
            "/big.bin",
            &format!("Range: bytes=4000-{}\r\n", BIG - 2),
        );
        assert_eq!(r.status, 206);
        assert_eq!(r.body.len(), BIG - 1 - 4000, "{path}");
        assert_eq!(r.body[..8], pseudo_random_bytes(99, 4008)[4000..], "{path}");
        // Multipart ranges go through the same path.
        let r = get(s.port, "/data.bin", "Range: bytes=0-0,-1\r\n");
        assert_eq!(r.status, 206, "{path}");
        assert!(
            s.guest.output().lines().all(|l| !l.contains("\" 200 ")),
            "access log off"
        );
    }
}

#[test]
fn connection_limit_refuses_with_503() {
    let s = boot_site(Machine::Microvm, &["--max-conns", "2"]);
    let mut a = Conn::open(s.port);
    assert_eq!(a.get("/hello.txt").status, 200);
    let mut b = Conn::open(s.port);
    assert_eq!(b.get("/hello.txt").status, 200);
    let mut c = Conn::open(s.port);
    let r = c.read(false);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
    s.guest.expect("connection limit (2) reached");
    // Once a slot frees up, new connections are served again.
    a.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(a.read(false).status, 200);
    assert!(a.closed());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut d = Conn::open(s.port);
        d.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        let st = d.read(false).status;
        if st == 200 {
            break;
        }
        assert_eq!(st, 503);
        assert!(Instant::now() < deadline, "the slot never came back");
    }
    assert_eq!(b.get("/dir/").status, 200);
}

#[test]
fn demo_site_is_served() {
    let image = temp_path("httpd-demo").with_extension("img");
    build_image_from_dir(&uk_cli::workspace::demo_site(), &image, ImageFormat::Ext4)
        .expect("image of the demo site");
    let s = boot(Machine::Microvm, &image, "64M", &[]);
    let r = get(s.port, "/", "");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("It works."), "{}", r.text());
    let r = get(s.port, "/style.css", "Accept-Encoding: gzip\r\n");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(
        get(s.port, "/logo.png", "").header("content-type"),
        Some("image/png")
    );
    assert_eq!(get(s.port, "/docs", "").status, 301);
    drop(s);
    let _ = std::fs::remove_file(&image);
}

#[test]
fn shutdown_write_by_client_still_gets_answers() {
    let s = boot_site(Machine::Microvm, &[]);
    let mut c = Conn::open(s.port);
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /dir/ HTTP/1.1\r\nHost: t\r\n\r\n");
    c.r.get_mut().shutdown(Shutdown::Write).unwrap();
    assert_eq!(c.read(false).status, 200);
    assert_eq!(c.read(false).text(), "<p>dir index</p>\n");
    assert!(c.closed());
}

/// Client `i`'s request `k` on keep-alive connection `c`: bytes `first..first
/// + 100` of /data.bin as a range, answered 206 with exactly those bytes.
fn get_100_bytes_of_data(c: &mut Conn, first: usize, i: usize, k: usize) {
    c.send(
        format!(
            "GET /data.bin HTTP/1.1\r\nHost: t\r\nRange: bytes={first}-{}\r\n\r\n",
            first + 99
        )
        .as_bytes(),
    );
    let r = c.read(false);
    assert_eq!(r.status, 206, "client {i} request {k}");
    assert_eq!(r.body, &site().data[first..first + 100], "client {i}");
}

/// Multi-core (issue 16): httpd with `cpus` vCPUs (microvm, MTTCG) runs one
/// event loop per CPU. The battery of `serves_http_correctly` passes, 64
/// keep-alive clients at once and clients that each send one request with
/// `Connection: close` get byte-exact answers, and the loops' counters (the
/// diagnostic dump's `app` line) show that every CPU served requests.
fn serves_on_every_cpu(cpus: u32) {
    let port = free_port();
    let mut guest = Guest::boot(
        "httpd",
        Machine::Microvm,
        BootOpts::args(&["--root", "/www"])
            .mem("128M")
            .smp(cpus)
            .disk(&site().image)
            .fwd(port, 80),
    );
    let line = guest
        .wait_for("httpd: serving", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(line.contains(&format!("{cpus} event loops")), "{line}");
    files_and_directories(port);
    traversal_is_rejected(port);
    error_statuses(port);
    keep_alive_pipelining_and_http10(port);
    ranges(port);
    conditionals_and_encodings(port);
    big_download_sha(port);
    curl_and_ureq(port);
    // 64 keep-alive clients at once, 5 rounds of two requests each.
    let conns: Vec<Conn> = (0..64)
        .map(|i| {
            let mut c = Conn::open(port);
            assert_eq!(c.get("/hello.txt").body, b"hello, world\n", "client {i}");
            c
        })
        .collect();
    let keep_alive: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                for k in 0..5 {
                    get_100_bytes_of_data(&mut c, (i * 11 + k * 5) % 900, i, k);
                    assert_eq!(c.get("/data.bin").body, site().data, "client {i}");
                }
            })
        })
        .collect();
    // Meanwhile 8 clients open a connection per request (Connection: close).
    let close: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                for k in 0..6 {
                    let mut c = Conn::open(port);
                    c.send(b"GET /dir/index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                    let r = c.read(false);
                    assert_eq!(r.status, 200, "close client {i} request {k}");
                    assert_eq!(r.body, b"<p>dir index</p>\n", "close client {i}");
                    assert!(c.closed(), "close client {i}: connection left open");
                }
            })
        })
        .collect();
    for t in keep_alive.into_iter().chain(close) {
        t.join().expect("client thread");
    }
    // The loops' counters: every CPU's loop served requests.
    let mark = guest.mark();
    guest.send(&[0x1c]).expect("the dump key");
    let line = guest
        .wait_for_from("uk: dump: app: httpd ", mark, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let kv = uk_tests::parse_kv(&line);
    assert_eq!(kv.get("loops"), Some(&u64::from(cpus)), "{line}");
    let mut sum = 0;
    for c in 0..cpus {
        let n = kv.get(&format!("cpu{c}_requests")).copied().unwrap_or(0);
        assert!(n > 0, "CPU {c} served no request: {line}");
        assert!(
            kv.get(&format!("cpu{c}_conns")).is_some_and(|&k| k > 0),
            "{line}"
        );
        sum += n;
    }
    // 64 x 11 keep-alive and 48 close requests, besides the battery.
    assert!(sum >= 64 * 11 + 48, "{line}");
    assert_eq!(kv.get("requests"), Some(&sum), "{line}");
}

#[test]
fn serves_on_every_cpu_of_four() {
    serves_on_every_cpu(4);
}

#[test]
fn serves_on_every_cpu_of_two() {
    serves_on_every_cpu(2);
}
