//! The load generator of `cargo uk bench net|paths`: the hidden subcommand
//! `uk __netclient MODE key=value...`, which the benchmarks run inside their
//! network namespace through [`Netns::command`](crate::netns::Netns::command)
//! (the CLI re-executes itself; no Python, no extra tool).
//!
//! It only talks to [`GUEST_IP`] (and then only from inside a named network
//! namespace, checked with `ip netns identify`) or to 127.0.0.1, and every
//! loop is bounded by a count and a time. It prints one line of `key=value`
//! words per result, parsed back with [`crate::parse_kv`].
//!
//! Modes:
//! - `stream addr=A:P conns=N secs=S max_bytes=B`: N connections to an echo
//!   server each send a repeating pattern for S seconds (B bytes in all at
//!   most), then half-close and read the echo to EOF, checking every byte.
//!   Prints `stream conns= sent= echoed= ns= errors= mismatches=`.
//! - `cps addr=A:P workers=N secs=S max=M`: N loops of connect, echo one
//!   byte, half-close, read to EOF, close, for S seconds (M connections in all
//!   at most). Prints `cps workers= conns= fails= ns= p50_us= p99_us=`.
//! - `fetch addr=A:P path=F mode=read|mmap|sendfile size=B seed=X count=N
//!   secs=S`: one `GET F MODE` to warm the cache (checked byte for byte
//!   against `pseudo_random_bytes(X, B)`), a `STATS` request, then up to N
//!   timed GETs (at least one, no more after S seconds; each checked for
//!   length), then `STATS` again. Prints `fetch n= bytes= ns= bad=
//!   before_reply=`, `before <STATS line>` and `after <STATS line>`. With
//!   `warm=0` it skips the warm-up fetch.
//! - `get addr=A:P path=F mode=M size=B seed=X`: only the checked warm-up
//!   fetch; prints `get bytes=B ok=1`.
//! - `udp-stats addr=A:P`: sends `stats\n` over UDP and prints the reply
//!   (the echo app's network counters) as `udp-stats <reply>`.
//! - `tls-hs addr=A:P ca=FILE group=x25519|p256 workers=N secs=S max=M
//!   path=F`: full TLS 1.3 handshakes, each fetching F; `tls-ka addr=A:P
//!   ca=FILE group=G conns=N secs=S path=F warm=W`: N kept-alive TLS
//!   connections fetching F again and again ([`crate::tlsclient`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Error;
use crate::netns::GUEST_IP;

/// The hidden subcommand's name.
pub const SUBCOMMAND: &str = "__netclient";

/// Timeout of one connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one blocked read or write (a stalled guest fails the run).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer size.
const BUF: usize = 256 << 10;

/// The arguments of a mode: `key=value` words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientArgs(HashMap<String, String>);

impl ClientArgs {
    /// Parses `key=value` words; anything else is an error.
    pub fn parse(words: &[String]) -> Result<ClientArgs, String> {
        let mut m = HashMap::new();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got '{w}'"))?;
            m.insert(k.to_string(), v.to_string());
        }
        Ok(ClientArgs(m))
    }

    pub(crate) fn str(&self, k: &str) -> Result<&str, String> {
        self.0
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("missing {k}="))
    }

    pub(crate) fn num(&self, k: &str) -> Result<u64, String> {
        let v = self.str(k)?;
        v.parse().map_err(|_| format!("{k}: bad number '{v}'"))
    }

    /// The target address: [`GUEST_IP`] or 127.0.0.1 only.
    pub fn addr(&self) -> Result<SocketAddr, String> {
        let v = self.str("addr")?;
        let a: SocketAddrV4 = v.parse().map_err(|_| format!("bad address '{v}'"))?;
        let guest: Ipv4Addr = GUEST_IP.parse().expect("GUEST_IP is an address");
        if *a.ip() != guest && *a.ip() != Ipv4Addr::LOCALHOST {
            return Err(format!(
                "refusing to send traffic to {a}: only {GUEST_IP} (inside a uk network \
                 namespace) or 127.0.0.1"
            ));
        }
        Ok(SocketAddr::V4(a))
    }
}

/// Fails unless traffic to `addr` stays local: 127.0.0.1, or the guest's
/// address from inside a named network namespace of ours (`uk-...`).
fn check_inside(addr: &SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    let ns = crate::netns::current().map_err(|e| e.to_string())?;
    if !ns.starts_with("uk-") {
        return Err(format!(
            "refusing to send traffic to {addr} outside a uk network namespace (in '{ns}')"
        ));
    }
    Ok(())
}

/// The repeating pattern of `stream`: byte `i` of a connection is `i % 251`.
fn pattern_chunk() -> Vec<u8> {
    // 261 whole periods: consecutive chunks continue the pattern.
    (0..251 * 261).map(|i| (i % 251) as u8).collect()
}

/// A connection with [`CONNECT_TIMEOUT`] and [`IO_TIMEOUT`].
pub(crate) fn connect(addr: &SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// One streaming connection's outcome.
#[derive(Debug, Default, Clone, Copy)]
struct StreamConn {
    sent: u64,
    echoed: u64,
    mismatch: bool,
    error: bool,
}

fn stream_one(addr: SocketAddr, deadline: Instant, budget: u64) -> StreamConn {
    let mut r = StreamConn::default();
    let Ok(s) = connect(&addr) else {
        r.error = true;
        return r;
    };
    let Ok(mut w) = s.try_clone() else {
        r.error = true;
        return r;
    };
    let writer = std::thread::spawn(move || {
        let chunk = pattern_chunk();
        let mut sent = 0u64;
        let mut ok = true;
        while sent < budget && Instant::now() < deadline {
            let n = chunk.len().min((budget - sent) as usize);
            if w.write_all(&chunk[..n]).is_err() {
                ok = false;
                break;
            }
            sent += n as u64;
        }
        let _ = w.shutdown(Shutdown::Write);
        (sent, ok)
    });
    let mut s = s;
    let mut buf = vec![0u8; BUF];
    let mut pos = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !r.mismatch {
                    r.mismatch = buf[..n]
                        .iter()
                        .enumerate()
                        .any(|(i, &b)| b != ((pos + i as u64) % 251) as u8);
                }
                pos += n as u64;
            }
            Err(_) => {
                r.error = true;
                break;
            }
        }
    }
    let (sent, ok) = writer.join().unwrap_or((0, false));
    r.sent = sent;
    r.echoed = pos;
    r.error |= !ok || pos != sent;
    r
}

/// `stream`: see the module documentation.
pub fn stream(addr: SocketAddr, conns: u64, secs: u64, max_bytes: u64) -> String {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let budget = max_bytes / conns.max(1);
    let handles: Vec<_> = (0..conns)
        .map(|_| std::thread::spawn(move || stream_one(addr, deadline, budget)))
        .collect();
    let results: Vec<StreamConn> = handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or(StreamConn {
                error: true,
                ..StreamConn::default()
            })
        })
        .collect();
    let ns = start.elapsed().as_nanos();
    format!(
        "stream conns={conns} sent={} echoed={} ns={ns} errors={} mismatches={}",
        results.iter().map(|r| r.sent).sum::<u64>(),
        results.iter().map(|r| r.echoed).sum::<u64>(),
        results.iter().filter(|r| r.error).count(),
        results.iter().filter(|r| r.mismatch).count(),
    )
}

/// One connection of `cps`: connect, echo a byte, half-close, read to EOF.
fn cps_one(addr: &SocketAddr) -> std::io::Result<()> {
    let mut s = connect(addr)?;
    s.set_nodelay(true)?;
    s.write_all(b"x")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    if b != *b"x" {
        return Err(std::io::Error::other("wrong byte echoed"));
    }
    s.shutdown(Shutdown::Write)?;
    let mut rest = [0u8; 16];
    while s.read(&mut rest)? > 0 {}
    Ok(())
}

/// The `q`-quantile (0..=1) of sorted values; 0 for none.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `cps`: see the module documentation.
pub fn cps(addr: SocketAddr, workers: u64, secs: u64, max: u64) -> String {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let started = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let started = Arc::clone(&started);
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut fails = 0u64;
                while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < max {
                    let t = Instant::now();
                    match cps_one(&addr) {
                        Ok(()) => lat.push(t.elapsed().as_micros() as u64),
                        Err(_) => {
                            fails += 1;
                            // No busy loop against a refusing guest.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                (lat, fails)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut fails = 0;
    for h in handles {
        let (l, f) = h.join().unwrap_or_default();
        lat.extend(l);
        fails += f;
    }
    let ns = start.elapsed().as_nanos();
    lat.sort_unstable();
    format!(
        "cps workers={workers} conns={} fails={fails} ns={ns} p50_us={} p99_us={}",
        lat.len(),
        quantile(&lat, 0.5),
        quantile(&lat, 0.99)
    )
}

/// Sends `req` on a new connection and reads the reply to EOF.
fn request(addr: &SocketAddr, req: &str) -> std::io::Result<Vec<u8>> {
    let mut s = connect(addr)?;
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Reads a GET reply to EOF and returns its length (no copy kept).
fn get_len(addr: &SocketAddr, req: &str, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut s = connect(addr)?;
    s.write_all(req.as_bytes())?;
    let mut len = 0u64;
    loop {
        let n = s.read(buf)?;
        if n == 0 {
            return Ok(len);
        }
        len += n as u64;
    }
}

/// One `GET path mode`, checked byte for byte against
/// `pseudo_random_bytes(seed, size)` (the `get` mode and `fetch`'s warm-up).
pub fn get_checked(
    addr: SocketAddr,
    path: &str,
    mode: &str,
    size: u64,
    seed: u64,
) -> Result<String, String> {
    let got = request(&addr, &format!("GET {path} {mode}\n"))
        .map_err(|e| format!("warm-up GET {path} {mode}: {e}"))?;
    if got.len() as u64 != size {
        return Err(format!(
            "warm-up GET {path} {mode}: {} bytes, expected {size}",
            got.len()
        ));
    }
    if got != crate::image::pseudo_random_bytes(seed, size as usize) {
        return Err(format!("warm-up GET {path} {mode}: the bytes differ"));
    }
    Ok(format!("get bytes={size} ok=1"))
}

/// `fetch`: see the module documentation.
#[allow(clippy::too_many_arguments)]
pub fn fetch(
    addr: SocketAddr,
    path: &str,
    mode: &str,
    size: u64,
    seed: u64,
    count: u64,
    secs: u64,
    warm: bool,
) -> Result<String, String> {
    let req = format!("GET {path} {mode}\n");
    let mut buf = vec![0u8; BUF];
    if warm {
        get_checked(addr, path, mode, size, seed)?;
    }
    let stats = || -> Result<String, String> {
        let r = request(&addr, "STATS\n").map_err(|e| format!("STATS: {e}"))?;
        Ok(String::from_utf8_lossy(&r).trim().to_string())
    };
    let before = stats()?;
    let before_reply = before.len() + 1;
    let start = Instant::now();
    let limit = Duration::from_secs(secs);
    let (mut n, mut bytes, mut bad) = (0u64, 0u64, 0u64);
    while n < count && (n == 0 || start.elapsed() < limit) {
        let got = get_len(&addr, &req, &mut buf).map_err(|e| format!("GET {path} {mode}: {e}"))?;
        if got != size {
            bad += 1;
        }
        bytes += got;
        n += 1;
    }
    let ns = start.elapsed().as_nanos();
    let after = stats()?;
    Ok(format!(
        "fetch n={n} bytes={bytes} ns={ns} bad={bad} before_reply={before_reply}\n\
         before {before}\nafter {after}"
    ))
}

/// `udp-stats`: see the module documentation.
pub fn udp_stats(addr: SocketAddr) -> Result<String, String> {
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("udp bind: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        s.send_to(b"stats\n", addr)
            .map_err(|e| format!("udp: {e}"))?;
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Ok(format!(
                "udp-stats {}",
                String::from_utf8_lossy(&buf[..n]).trim()
            ));
        }
    }
    Err("no reply to the UDP stats request".into())
}

/// Runs `uk __netclient MODE key=value...`; prints the result line(s) and
/// returns the exit status (0, or 1 with a message on stderr).
pub fn main(args: &[String]) -> Result<i32, Error> {
    let fail = |e: String| Error::Failed(format!("{SUBCOMMAND}: {e}"));
    let Some((mode, rest)) = args.split_first() else {
        return Err(fail(
            "needs a mode: stream, cps, fetch, get, udp-stats, tls-hs or tls-ka".into(),
        ));
    };
    let a = ClientArgs::parse(rest).map_err(fail)?;
    let addr = a.addr().map_err(fail)?;
    check_inside(&addr).map_err(fail)?;
    let n = |k: &str| a.num(k).map_err(fail);
    let out = match mode.as_str() {
        "stream" => stream(
            addr,
            n("conns")?.clamp(1, 64),
            n("secs")?.clamp(1, 600),
            n("max_bytes")?,
        ),
        "cps" => cps(
            addr,
            n("workers")?.clamp(1, 64),
            n("secs")?.clamp(1, 600),
            n("max")?,
        ),
        "fetch" => fetch(
            addr,
            a.str("path").map_err(fail)?,
            a.str("mode").map_err(fail)?,
            n("size")?,
            n("seed")?,
            n("count")?.max(1),
            n("secs")?.clamp(1, 600),
            a.num("warm").unwrap_or(1) != 0,
        )
        .map_err(fail)?,
        "get" => get_checked(
            addr,
            a.str("path").map_err(fail)?,
            a.str("mode").map_err(fail)?,
            n("size")?,
            n("seed")?,
        )
        .map_err(fail)?,
        "udp-stats" => udp_stats(addr).map_err(fail)?,
        "tls-hs" | "tls-ka" => {
            let ca = a.str("ca").map_err(fail)?;
            let pem = std::fs::read(ca).map_err(|e| fail(format!("{ca}: {e}")))?;
            let group = a.str("group").map_err(fail)?;
            let group = crate::tlsclient::Group::parse(group)
                .ok_or_else(|| fail(format!("unknown group '{group}' (p256, x25519)")))?;
            let cfg = crate::tlsclient::client_config(&pem, group).map_err(fail)?;
            let path = a.str("path").map_err(fail)?;
            if mode == "tls-hs" {
                crate::tlsclient::handshakes(
                    addr,
                    cfg,
                    path,
                    n("workers")?.clamp(1, 256),
                    n("secs")?.clamp(1, 600),
                    n("max")?,
                )
            } else {
                crate::tlsclient::keepalive(
                    addr,
                    cfg,
                    path,
                    a.str("warm").map_err(fail)?,
                    n("conns")?.clamp(1, 256),
                    n("secs")?.clamp(1, 600),
                )
            }
        }
        other => return Err(fail(format!("unknown mode '{other}'"))),
    };
    println!("{out}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn words(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_and_addresses() {
        let a = ClientArgs::parse(&words(&["addr=10.77.0.2:7", "conns=4"])).unwrap();
        assert_eq!(a.num("conns"), Ok(4));
        assert!(a.num("secs").unwrap_err().contains("missing secs="));
        assert_eq!(a.addr().unwrap().to_string(), "10.77.0.2:7");
        assert!(ClientArgs::parse(&words(&["oops"])).is_err());
        for bad in [
            "8.8.8.8:53",
            "10.77.0.1:7",
            "192.168.1.1:80",
            "[::1]:7",
            "x",
        ] {
            let a = ClientArgs::parse(&words(&[&format!("addr={bad}")])).unwrap();
            assert!(a.addr().is_err(), "{bad} accepted");
        }
        let a = ClientArgs::parse(&words(&["addr=127.0.0.1:9"])).unwrap();
        assert!(a.addr().is_ok());
        assert!(check_inside(&a.addr().unwrap()).is_ok());
    }

    #[test]
    fn quantiles() {
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[7], 0.99), 7);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 51);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
    }

    #[test]
    fn pattern_continues_across_chunks() {
        let c = pattern_chunk();
        assert_eq!(c.len() % 251, 0);
        assert_eq!(c[250], 250);
        assert_eq!(c[251], 0);
    }

    /// A local echo server on 127.0.0.1 serving `conns` connections.
    fn echo_server(conns: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(conns) {
                let mut s = s.unwrap();
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut s, &mut w);
                    let _ = w.shutdown(Shutdown::Write);
                });
            }
        });
        addr
    }

    #[test]
    fn stream_and_cps_against_a_local_echo() {
        let addr = echo_server(2);
        let line = stream(addr, 2, 1, 4 << 20);
        let kv = crate::parse_kv(&line);
        assert!(line.starts_with("stream conns=2 "), "{line}");
        assert_eq!(kv["errors"], 0, "{line}");
        assert_eq!(kv["mismatches"], 0, "{line}");
        assert_eq!(kv["sent"], kv["echoed"], "{line}");
        assert!(kv["sent"] <= 4 << 20 && kv["sent"] > 0, "{line}");
        let addr = echo_server(5);
        let line = cps(addr, 1, 10, 5);
        let kv = crate::parse_kv(&line);
        assert_eq!((kv["conns"], kv["fails"]), (5, 0), "{line}");
    }

    #[test]
    fn fetch_against_a_local_file_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let data = crate::image::pseudo_random_bytes(3, 5000);
        std::thread::spawn(move || {
            let mut counter = 0u64;
            for s in l.incoming().take(5) {
                let mut s = s.unwrap();
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                    line.push(b[0]);
                }
                if line == b"STATS" {
                    counter += 100;
                    writeln!(s, "app_to_socket={counter} tsc_hz=1").unwrap();
                } else {
                    assert_eq!(line, b"GET /f read");
                    s.write_all(&data).unwrap();
                }
            }
        });
        let out = fetch(addr, "/f", "read", 5000, 3, 2, 5, true).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        let kv = crate::parse_kv(lines[0]);
        assert_eq!((kv["n"], kv["bytes"], kv["bad"]), (2, 10000, 0), "{out}");
        assert_eq!(
            kv["before_reply"],
            "app_to_socket=100 tsc_hz=1\n".len() as u64
        );
        assert_eq!(lines[1], "before app_to_socket=100 tsc_hz=1");
        assert_eq!(lines[2], "after app_to_socket=200 tsc_hz=1");
    }
}
