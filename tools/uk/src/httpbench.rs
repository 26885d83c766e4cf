//! `cargo uk bench http`: `wrk` against `httpd` over a TAP device inside a
//! network namespace of the benchmark's own ([`crate::netns`], deleted
//! afterwards, checked with `ip netns identify` before any traffic), so the
//! load never leaves the namespace. Prints requests/s for a 1 KiB file,
//! MB/s for 64 KiB, 1 MiB and 16 MiB files, and p50/p99 latency for each,
//! at the chosen number of connections (64) and at 256. A guest that stalls
//! (wrk gets no response or mostly errors, or the guest no longer answers a
//! probe request afterwards) fails the run with the guest's console tail.

use crate::qemu::{in_path as have, run_output as run};
use std::time::Duration;

use crate::Error;
use crate::bench::{LiveGuest, table};
use crate::build::{Profile, build_image};
use crate::image::TempImage;
use crate::netns::{GUEST_IP, Netns};
use crate::qemu::{Accel, Machine, MemSize, VmConfig, ensure_qemu, is_root};

/// The benchmark's files: URL path and size.
pub const FILES: [(&str, usize); 4] = [
    ("/1k.bin", 1 << 10),
    ("/64k.bin", 64 << 10),
    ("/1m.bin", 1 << 20),
    ("/16m.bin", 16 << 20),
];

/// The connection count every run also measures, next to the chosen one.
pub const HIGH_CONNS: u32 = 256;

/// The connection counts to measure: `conns`, then [`HIGH_CONNS`].
pub fn conn_levels(conns: u32) -> Vec<u32> {
    if conns == HIGH_CONNS {
        vec![conns]
    } else {
        vec![conns, HIGH_CONNS]
    }
}

/// The `--max-conns` the guest gets: room for every level's connections.
pub fn guest_max_conns(conns: u32) -> u32 {
    conns.max(HIGH_CONNS) * 2 + 16
}

/// What `wrk --latency` reported.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkResult {
    /// Requests completed (`N requests in ...`).
    pub requests: u64,
    /// `Requests/sec`.
    pub requests_per_sec: f64,
    /// `Transfer/sec` in bytes.
    pub transfer_per_sec: f64,
    /// 50th percentile latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Socket errors and non-2xx/3xx responses reported by wrk.
    pub errors: u64,
    /// Of `errors`, the requests that took longer than wrk's `--timeout`.
    pub timeouts: u64,
}

impl WrkResult {
    /// Bytes read per second in 10^6 (wrk's `Transfer/sec`: bodies, partial
    /// ones included, and headers), so that large files at high concurrency
    /// count what moved even when few requests completed.
    pub fn mb_per_sec(&self) -> f64 {
        self.transfer_per_sec / 1e6
    }
}

/// Parses wrk's `1.23ms` / `850.00us` / `1.02s` / `2.00m`.
pub fn parse_wrk_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Parses wrk's `13.02MB` (binary units, as wrk prints them) into bytes.
pub fn parse_wrk_bytes(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(v * mult)
}

/// Parses the output of `wrk --latency`.
pub fn parse_wrk(out: &str) -> Option<WrkResult> {
    let mut rps = None;
    let mut tps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut errors = 0;
    let mut timeouts = 0;
    let mut requests = None;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["Transfer/sec:", v] => tps = parse_wrk_bytes(v),
            ["50%", v] => p50 = parse_wrk_duration(v),
            ["99%", v] => p99 = parse_wrk_duration(v),
            ["Socket", "errors:", rest @ ..] => {
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
                timeouts += rest
                    .windows(2)
                    .find(|w| w[0] == "timeout")
                    .and_then(|w| w[1].trim_end_matches(',').parse::<u64>().ok())
                    .unwrap_or(0);
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => errors += n.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(WrkResult {
        requests: requests?,
        requests_per_sec: rps?,
        transfer_per_sec: tps?,
        p50: p50?,
        p99: p99?,
        errors,
        timeouts,
    })
}

/// Makes sure `wrk` is installed: `apt-get install -y wrk` when root on a
/// Debian-like system, otherwise an error with the command to run.
pub fn ensure_wrk() -> Result<(), Error> {
    if have("wrk") {
        return Ok(());
    }
    crate::qemu::apt_install(&["wrk"], "wrk", || have("wrk"))
}

/// `1 KiB`, `16 MiB`.
pub fn human(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// `250 us`, `2.50 ms`.
pub fn fmt_latency(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.0} us", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// `wrk -t2 -cCONNS -dSECSs --timeout 10s --latency http://GUEST_IP/PATH`
/// inside `ns`; returns wrk's output.
pub fn run_wrk(ns: &Netns, conns: u32, secs: u64, path: &str) -> Result<String, Error> {
    let url = format!("http://{GUEST_IP}{path}");
    run(&mut ns.command(
        "wrk",
        [
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--timeout",
            "10s",
            "--latency",
            &url,
        ],
    ))
}

/// One file's measurement as `bench http` takes it: a 1 s warm-up (fills
/// the page cache, opens the TCP windows), then [`run_wrk`] for `secs`.
pub fn measure_file(ns: &Netns, conns: u32, secs: u64, path: &str) -> Result<WrkResult, Error> {
    run_wrk(ns, conns, 1, path)?;
    let out = run_wrk(ns, conns, secs, path)?;
    parse_wrk(&out).ok_or_else(|| Error::Failed(format!("cannot parse wrk's output:\n{out}")))
}

/// Why a wrk result shows a stalled guest: (almost) no bytes moved, or
/// more failed requests (connect/read/write errors, non-2xx) than half the
/// completed ones. Timeouts alone are not a stall (16 MiB to 256 clients
/// may well take longer than wrk's 10 s): the [`probe`] after each
/// measurement tells whether the guest still answers.
pub fn stall_reason(r: &WrkResult) -> Option<String> {
    let failed = r.errors.saturating_sub(r.timeouts);
    if r.transfer_per_sec < 1024.0 {
        Some(format!(
            "no data moved: {} responses, {} errors (the guest stalled)",
            r.requests, r.errors
        ))
    } else if failed > r.requests / 2 {
        Some(format!(
            "mostly errors: {failed} failed requests for {} responses (the guest stalled?)",
            r.requests
        ))
    } else {
        None
    }
}

/// One bounded probe after a measurement: `/1k.bin` must still come back
/// with 200 (up to 3 curl attempts of at most 5 s each).
pub fn probe(ns: &Netns) -> Result<(), Error> {
    let script = format!(
        "for i in 1 2 3; do c=$(curl -s -o /dev/null -w '%{{http_code}}' --connect-timeout 2 \
         --max-time 5 http://{GUEST_IP}/1k.bin); [ \"$c\" = 200 ] && exit 0; done; \
         echo \"last status: $c\" >&2; exit 1"
    );
    let out = ns
        .command("sh", ["-c", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Failed(format!("cannot run curl in the namespace: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "the guest no longer answers: 3 probes of /1k.bin failed ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// [`measure_file`], then the stall checks: [`stall_reason`] and [`probe`].
pub fn measure_checked(ns: &Netns, conns: u32, secs: u64, path: &str) -> Result<WrkResult, Error> {
    let r = measure_file(ns, conns, secs, path)?;
    if let Some(why) = stall_reason(&r) {
        return Err(Error::Failed(format!(
            "{path} with {conns} connections: {why}"
        )));
    }
    probe(ns).map_err(|e| {
        Error::Failed(format!(
            "after {path} with {conns} connections: {}",
            e.message()
        ))
    })?;
    Ok(r)
}

/// The last `n` lines of a guest's output, for failure messages.
pub fn console_tail(out: &str, n: usize) -> String {
    let lines: Vec<&str> = out.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs the benchmark and prints the table; `smp` above 1: the cells at 1
/// and at `smp` vCPUs side by side, `rounds` times each
/// ([`crate::smpbench`]).
pub fn bench_http(
    secs: u64,
    conns: u32,
    smp: u32,
    rounds: u32,
    accel: Option<Accel>,
) -> Result<i32, Error> {
    ensure_qemu()?;
    if !is_root() {
        return Err(Error::Failed(
            "bench http needs root (a network namespace and a TAP device): run it as root".into(),
        ));
    }
    ensure_wrk()?;
    let accel = accel.unwrap_or_else(Accel::detect);
    let image = build_image("httpd", Profile::Release, false)?;
    if smp > 1 {
        crate::nginxvm::ensure_tool("curl", "curl")?;
        let setup = crate::comparebench::Setup {
            // q35 at every vCPU count: its virtio-net-pci has a queue pair
            // (and an MSI-X vector) per vCPU, so the stack runs a shard on
            // each; microvm's virtio-mmio has a single queue.
            machine: Machine::Q35,
            accel,
            image,
            disk: TempImage::of_files("httpbench-site", &FILES, 11)?,
            small_disk: TempImage::of_files("httpbench-site", &FILES[..1], 11)?,
            vm: None,
            conns,
            tsc_khz: None,
            smp: std::cell::Cell::new(1),
        };
        return crate::smpbench::run_scaling(
            &setup,
            &[crate::comparebench::System::Uk],
            smp,
            secs,
            rounds,
        );
    }
    let disk = TempImage::of_files("httpbench-site", &FILES, 11)?;
    let ns = Netns::create("bench-http")?;
    let mut cfg = VmConfig::new(&image);
    cfg.machine = Machine::Microvm;
    cfg.accel = accel;
    cfg.mem = MemSize(256 << 20);
    cfg.disk = Some(disk.path.clone());
    ns.attach(&mut cfg);
    cfg.args = vec![
        "--no-access-log".into(),
        "--max-conns".into(),
        guest_max_conns(conns).to_string(),
    ];
    let levels = conn_levels(conns);
    println!(
        "http benchmark: httpd (sendfile) on microvm, accel {accel}, 256M; wrk -t2 -c{} -d{secs}s inside namespace {}",
        levels
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("|"),
        ns.name()
    );
    let mut guest = LiveGuest::spawn(&cfg).map_err(Error::Failed)?;
    guest
        .wait_for("httpd: serving", Duration::from_secs(120))
        .map_err(Error::Failed)?;
    let mut rows = vec![
        [
            "conns",
            "file",
            "requests/s",
            "MB/s",
            "p50",
            "p99",
            "errors",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut with_guest = |e: Error| {
        Error::Failed(format!(
            "{}\n--- guest output (last lines) ---\n{}",
            e.message(),
            console_tail(&guest.output(), 40)
        ))
    };
    let total = levels.len() * FILES.len();
    for (i, (c, (path, size))) in levels
        .iter()
        .flat_map(|&c| FILES.iter().map(move |f| (c, *f)))
        .enumerate()
    {
        let step = crate::progress::Step::start(&format!(
            "[{}/{total}] wrk -c{c} {path} ({} s + 1 s warm-up)",
            i + 1,
            secs
        ));
        let r = measure_checked(&ns, c, secs, path);
        step.finish(r.is_ok());
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                // What was measured before the stall, then the failure.
                print!("{}", table(&rows));
                return Err(with_guest(e));
            }
        };
        let mb_s = r.mb_per_sec();
        rows.push(vec![
            c.to_string(),
            format!("{path} ({})", human(size)),
            format!("{:.0}", r.requests_per_sec),
            format!("{mb_s:.1}"),
            fmt_latency(r.p50),
            fmt_latency(r.p99),
            r.errors.to_string(),
        ]);
    }
    guest.kill();
    print!("{}", table(&rows));
    println!(
        "MB/s: bytes read (10^6) per second (wrk's Transfer/sec, partial responses included); latency: wrk's per-request \
         distribution; under {accel} the guest's CPU is the limit"
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 10s test @ http://10.77.0.2/1k.bin
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  512.00us  20.10ms   90.00%
    Req/Sec     6.50k   300.00     7.00k    70.00%
  Latency Distribution
     50%    1.10ms
     75%    1.40ms
     90%    1.80ms
     99%    3.40ms
  129000 requests in 10.00s, 150.50MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  12900.00
Transfer/sec:     15.05MB
";

    #[test]
    fn parses_wrk_output() {
        let r = parse_wrk(SAMPLE).unwrap();
        assert_eq!(r.requests_per_sec, 12900.0);
        assert_eq!(r.transfer_per_sec, 15.05 * 1024.0 * 1024.0);
        assert_eq!(r.p50, Duration::from_micros(1100));
        assert_eq!(r.p99, Duration::from_micros(3400));
        assert_eq!(r.errors, 3);
        assert_eq!(r.requests, 129000);
        assert_eq!(r.timeouts, 1);
        assert!(parse_wrk("garbage").is_none());
        assert_eq!(stall_reason(&r), None);
    }

    #[test]
    fn stalls_are_detected() {
        let mut r = parse_wrk(SAMPLE).unwrap();
        r.transfer_per_sec = 0.0;
        assert!(stall_reason(&r).unwrap().contains("no data moved"));
        r.transfer_per_sec = 1e6;
        r.requests = 10;
        r.errors = 6;
        r.timeouts = 0;
        assert!(stall_reason(&r).unwrap().contains("mostly errors"));
        r.errors = 5;
        assert_eq!(stall_reason(&r), None);
        // Slow (16 MiB to 256 clients), not stalled: bytes move, requests time out.
        r.requests = 0;
        r.errors = 256;
        r.timeouts = 256;
        assert_eq!(stall_reason(&r), None);
        let stalled = "Running 8s test @ http://10.77.0.2/64k.bin
  1 threads and 64 connections
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  0 requests in 8.00s, 0.00B read
  Socket errors: connect 0, read 0, write 0, timeout 64
Requests/sec:      0.00
Transfer/sec:       0.00B
";
        let r = parse_wrk(stalled).unwrap();
        assert_eq!((r.requests, r.errors, r.timeouts), (0, 64, 64));
        assert!(stall_reason(&r).is_some());
    }

    #[test]
    fn levels() {
        assert_eq!(conn_levels(64), [64, 256]);
        assert_eq!(conn_levels(256), [256]);
        assert_eq!(guest_max_conns(64), 528);
        assert_eq!(console_tail("a\nb\nc", 2), "b\nc");
    }

    #[test]
    fn units() {
        assert_eq!(
            parse_wrk_duration("850.00us"),
            Some(Duration::from_micros(850))
        );
        assert_eq!(
            parse_wrk_duration("1.50s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_wrk_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_wrk_duration("1.0x"), None);
        assert_eq!(parse_wrk_bytes("1.00KB"), Some(1024.0));
        assert_eq!(parse_wrk_bytes("3B"), Some(3.0));
        assert_eq!(fmt_latency(Duration::from_micros(250)), "250 us");
        assert_eq!(fmt_latency(Duration::from_micros(2500)), "2.50 ms");
    }
}
