//! `cargo uk bench net`: echo throughput and connections per second over a
//! TAP device in a network namespace; `cargo uk bench epoll`: the cost of
//! `epoll_wait` as the interest list grows. Also the pieces `bench paths`
//! shares: running the load generator ([`crate::netclient`]) inside the
//! namespace with a time limit.
//!
//! User networking is about ten times slower than TAP and is not for
//! benchmarks, so the network benchmarks always boot the guest on the TAP
//! link of a [`Netns`] of their own (needs root).

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;
use crate::bench::{LiveGuest, run_guest, stats, table};
use crate::build::{Profile, build_image};
use crate::netclient::SUBCOMMAND;
use crate::netns::{GUEST_IP, NOT_INSIDE_STATUS, Netns};
use crate::qemu::{Accel, Machine, MemSize, VmConfig, ensure_qemu};
use crate::serial::parse_kv;

/// The line the echo app prints when it accepts connections.
pub const ECHO_READY: &str = "echo: listening on port 7";
/// The echo port.
pub const ECHO_PORT: u16 = 7;
/// How long a guest may take to boot and come up on the network.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound on the bytes one `stream` measurement sends.
pub const STREAM_MAX_BYTES: u64 = 2 << 30;
/// Upper bound on the connections one `cps` measurement opens (well below
/// the namespace's ephemeral ports, which TIME-WAIT holds for a minute).
pub const CPS_MAX_CONNS: u64 = 20_000;
/// The streaming connections and connecting clients measured.
pub const PARALLEL: [u64; 2] = [1, 4];

/// Runs `cmd` (stdout and stderr captured), killing it after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("killed after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    match status.code() {
        Some(0) => Ok(stdout),
        Some(NOT_INSIDE_STATUS) => Err(format!(
            "the client was not inside the network namespace; nothing sent: {}",
            stderr.trim()
        )),
        _ => Err(format!("{status}: {}{}", stderr.trim(), stdout.trim())),
    }
}

/// Runs `uk __netclient MODE ARGS...` inside `ns` (this very binary,
/// re-executed through `/proc/PID/exe`) and returns its output; `limit` is the client's own time
/// bound, to which a margin for draining and timeouts is added.
pub fn run_client(
    ns: &Netns,
    mode: &str,
    args: &[String],
    limit: Duration,
) -> Result<String, String> {
    // Our own executable through /proc: still there when `cargo build`
    // replaced (and so deleted) the file we were started from.
    let exe = format!("/proc/{}/exe", std::process::id());
    let mut cmd = ns.command(
        &exe,
        std::iter::once(SUBCOMMAND.to_string())
            .chain(std::iter::once(mode.to_string()))
            .chain(args.iter().cloned()),
    );
    run_bounded(&mut cmd, limit + Duration::from_secs(90))
        .map_err(|e| format!("{SUBCOMMAND} {mode}: {e}"))
}

/// The result of one `stream` measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamResult {
    /// Connections.
    pub conns: u64,
    /// Bytes sent.
    pub sent: u64,
    /// Bytes echoed back.
    pub echoed: u64,
    /// Wall time from the first connect to the last EOF.
    pub ns: u64,
    /// Connections that failed (connect, timeout, short echo).
    pub errors: u64,
    /// Connections whose echo differed from what was sent.
    pub mismatches: u64,
}

impl StreamResult {
    /// Parses the client's `stream ...` line.
    pub fn parse(line: &str) -> Option<StreamResult> {
        let line = line.lines().find(|l| l.starts_with("stream "))?;
        let kv = parse_kv(line);
        Some(StreamResult {
            conns: *kv.get("conns")?,
            sent: *kv.get("sent")?,
            echoed: *kv.get("echoed")?,
            ns: *kv.get("ns")?,
            errors: *kv.get("errors")?,
            mismatches: *kv.get("mismatches")?,
        })
    }

    /// Echoed bytes per second, in MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        mb_per_s(self.echoed, self.ns)
    }
}

/// The result of one `cps` measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpsResult {
    /// Parallel client loops.
    pub workers: u64,
    /// Completed connections.
    pub conns: u64,
    /// Failed connections.
    pub fails: u64,
    /// Wall time.
    pub ns: u64,
    /// Median connect-echo-close time, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
}

impl CpsResult {
    /// Parses the client's `cps ...` line.
    pub fn parse(line: &str) -> Option<CpsResult> {
        let line = line.lines().find(|l| l.starts_with("cps "))?;
        let kv = parse_kv(line);
        Some(CpsResult {
            workers: *kv.get("workers")?,
            conns: *kv.get("conns")?,
            fails: *kv.get("fails")?,
            ns: *kv.get("ns")?,
            p50_us: *kv.get("p50_us")?,
            p99_us: *kv.get("p99_us")?,
        })
    }

    /// Completed connections per second.
    pub fn per_sec(&self) -> f64 {
        if self.ns == 0 {
            0.0
        } else {
            self.conns as f64 / (self.ns as f64 / 1e9)
        }
    }
}

/// `bytes` over `ns` nanoseconds in MB/s (10^6 bytes per second).
pub fn mb_per_s(bytes: u64, ns: u64) -> f64 {
    if ns == 0 {
        0.0
    } else {
        bytes as f64 / 1e6 / (ns as f64 / 1e9)
    }
}

/// One measurement of `bench net`; each gets a freshly booted guest, so a
/// guest that wedges spoils only its own measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetTest {
    /// Echo streaming over this many connections.
    Stream(u64),
    /// Connect-echo-close loops in this many clients.
    Cps(u64),
}

impl NetTest {
    /// The measurements, in table order.
    pub const ALL: [NetTest; 4] = [
        NetTest::Stream(PARALLEL[0]),
        NetTest::Stream(PARALLEL[1]),
        NetTest::Cps(PARALLEL[0]),
        NetTest::Cps(PARALLEL[1]),
    ];

    /// `echo MB/s 1 conn`, `conn/s 4 clients`, ...
    pub fn name(self) -> String {
        let s = |n: u64| if n == 1 { "" } else { "s" };
        match self {
            NetTest::Stream(n) => format!("echo MB/s {n} conn{}", s(n)),
            NetTest::Cps(n) => format!("conn/s {n} client{}", s(n)),
        }
    }
}

/// The outcome of one [`NetTest`].
#[derive(Debug, Clone, PartialEq)]
pub enum NetResult {
    /// A complete, byte-exact echo stream.
    Stream(StreamResult),
    /// Connection loops (some connections may have failed).
    Cps(CpsResult),
    /// No usable number, and why.
    Failed(String),
}

/// Judges the client's output for `test`.
pub fn judge(test: NetTest, out: &str) -> NetResult {
    match test {
        NetTest::Stream(_) => match StreamResult::parse(out) {
            None => NetResult::Failed(format!("malformed client output: {}", out.trim())),
            Some(s) if s.mismatches > 0 => NetResult::Failed(format!(
                "the echo differed from what was sent on {} of {} connections",
                s.mismatches, s.conns
            )),
            Some(s) if s.errors > 0 => NetResult::Failed(format!(
                "stalled: {} of {} bytes sent came back in {:.1} s ({} of {} connections \
                 timed out or broke)",
                s.echoed,
                s.sent,
                s.ns as f64 / 1e9,
                s.errors,
                s.conns
            )),
            Some(s) => NetResult::Stream(s),
        },
        NetTest::Cps(_) => match CpsResult::parse(out) {
            None => NetResult::Failed(format!("malformed client output: {}", out.trim())),
            Some(c) if c.conns == 0 => {
                NetResult::Failed(format!("no connection completed ({} failed)", c.fails))
            }
            Some(c) => NetResult::Cps(c),
        },
    }
}

/// One machine's `bench net` numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct NetRow {
    /// The machine.
    pub machine: Machine,
    /// Each [`NetTest`] and its outcome.
    pub results: Vec<(NetTest, NetResult)>,
    /// Notable guest counters summed over the guests that answered the UDP
    /// `stats` request after their measurement.
    pub counters: HashMap<String, u64>,
    /// Guests that did not answer it.
    pub unanswered: usize,
}

/// The guest counters worth a look after a load test.
pub const NOTABLE_COUNTERS: [&str; 3] = ["rx_dropped", "tx_ring_full", "listen_overflows"];

/// The `bench net` table header.
pub fn net_header() -> Vec<String> {
    let mut h = vec!["machine".to_string()];
    h.extend(NetTest::ALL.iter().map(|t| t.name()));
    h.extend(["p50 us", "p99 us", "failed conns"].map(String::from));
    h
}

/// One `bench net` table row (`failed` where a measurement failed).
pub fn net_row(r: &NetRow) -> Vec<String> {
    let mut row = vec![r.machine.to_string()];
    for (_, res) in &r.results {
        row.push(match res {
            NetResult::Stream(s) => format!("{:.1}", s.mb_per_s()),
            NetResult::Cps(c) => format!("{:.0}", c.per_sec()),
            NetResult::Failed(_) => "failed".into(),
        });
    }
    let one = r.results.iter().find_map(|(t, res)| match (t, res) {
        (NetTest::Cps(1), NetResult::Cps(c)) => Some(c),
        _ => None,
    });
    row.push(one.map_or("-".into(), |c| c.p50_us.to_string()));
    row.push(one.map_or("-".into(), |c| c.p99_us.to_string()));
    let fails: u64 = r
        .results
        .iter()
        .filter_map(|(_, res)| match res {
            NetResult::Cps(c) => Some(c.fails),
            _ => None,
        })
        .sum();
    row.push(fails.to_string());
    row
}

/// The notes under the table for `r`: each failure, then the counters.
pub fn net_notes(r: &NetRow) -> Vec<String> {
    let mut notes: Vec<String> = r
        .results
        .iter()
        .filter_map(|(t, res)| match res {
            NetResult::Failed(why) => Some(format!("{} {}: FAILED: {why}", r.machine, t.name())),
            _ => None,
        })
        .collect();
    let mut c = format!("{} guest counters:", r.machine);
    for k in NOTABLE_COUNTERS {
        c.push_str(&format!(" {k}={}", r.counters.get(k).copied().unwrap_or(0)));
    }
    if r.unanswered > 0 {
        c.push_str(&format!(
            " ({} of {} guests did not answer the UDP stats request)",
            r.unanswered,
            r.results.len()
        ));
    }
    notes.push(c);
    notes
}

/// QEMU's CPU use over one second, in % of a host core.
fn qemu_cpu_pct(pid: u32) -> Option<f64> {
    let a = crate::bench::process_cpu_time(pid).ok()?;
    std::thread::sleep(Duration::from_secs(1));
    let b = crate::bench::process_cpu_time(pid).ok()?;
    Some(b.saturating_sub(a).as_secs_f64() * 100.0)
}

/// Boots a guest for `test`, runs it, asks the guest for its counters and
/// kills it; `Err` only when the guest does not come up.
fn net_test(
    ns: &Netns,
    cfg: &VmConfig,
    test: NetTest,
    secs: u64,
) -> Result<(NetResult, Option<HashMap<String, u64>>), String> {
    let mut guest = LiveGuest::spawn(cfg)?;
    guest.wait_for(ECHO_READY, BOOT_TIMEOUT)?;
    let addr = format!("addr={GUEST_IP}:{ECHO_PORT}");
    let (mode, args) = match test {
        NetTest::Stream(n) => (
            "stream",
            [
                addr.clone(),
                format!("conns={n}"),
                format!("secs={secs}"),
                format!("max_bytes={STREAM_MAX_BYTES}"),
            ],
        ),
        NetTest::Cps(n) => (
            "cps",
            [
                addr.clone(),
                format!("workers={n}"),
                format!("secs={secs}"),
                format!("max={CPS_MAX_CONNS}"),
            ],
        ),
    };
    let mut res = match run_client(ns, mode, &args, Duration::from_secs(secs)) {
        Ok(out) => judge(test, &out),
        Err(e) => NetResult::Failed(e),
    };
    let counters = run_client(ns, "udp-stats", &[addr], Duration::from_secs(10))
        .ok()
        .map(|l| parse_kv(&l));
    if let NetResult::Failed(why) = &mut res {
        // Is the guest still there, and is it spinning or idle?
        why.push_str(if counters.is_some() {
            "; the guest still answered UDP afterwards"
        } else {
            "; the guest no longer answered UDP afterwards"
        });
        if let Some(pct) = qemu_cpu_pct(guest.pid()) {
            why.push_str(&format!(" and QEMU used {pct:.0}% of a host core"));
        }
        let out = guest.output();
        let after: Vec<&str> = out
            .lines()
            .skip_while(|l| !l.contains(ECHO_READY))
            .skip(1)
            .collect();
        if !after.is_empty() {
            why.push_str(&format!(
                "; guest output after it was ready:\n{}",
                after.join("\n")
            ));
        }
    }
    guest.kill();
    Ok((res, counters))
}

/// Runs `bench net` and prints the table; exits 1 when a measurement
/// failed (after printing everything).
pub fn bench_net(secs: u64, accel: Option<Accel>) -> Result<i32, Error> {
    ensure_qemu()?;
    let accel = accel.unwrap_or_else(Accel::detect);
    let image = build_image("echo", Profile::Release, false)?;
    let ns = Netns::create("bench-net")?;
    println!(
        "net benchmark: echo on a TAP device in network namespace {} (guest {GUEST_IP}), \
         a fresh guest and {secs} s per measurement, accel {accel}",
        ns.name()
    );
    let mut rows = Vec::new();
    for machine in Machine::ALL {
        let mut cfg = VmConfig::new(&image);
        cfg.machine = machine;
        cfg.accel = accel;
        cfg.mem = "128M".parse::<MemSize>().map_err(Error::Failed)?;
        ns.attach(&mut cfg);
        let mut row = NetRow {
            machine,
            results: Vec::new(),
            counters: HashMap::new(),
            unanswered: 0,
        };
        for test in NetTest::ALL {
            let (res, counters) =
                crate::progress::step(&format!("{machine}: {} ({secs} s)", test.name()), || {
                    net_test(&ns, &cfg, test, secs)
                        .map_err(|e| Error::Failed(format!("{machine}: {e}")))
                })?;
            match counters {
                Some(kv) => {
                    for k in NOTABLE_COUNTERS {
                        *row.counters.entry(k.to_string()).or_default() +=
                            kv.get(k).copied().unwrap_or(0);
                    }
                }
                None => row.unanswered += 1,
            }
            row.results.push((test, res));
        }
        rows.push(row);
    }
    let mut t = vec![net_header()];
    t.extend(rows.iter().map(net_row));
    print!("{}", table(&t));
    for r in &rows {
        for n in net_notes(r) {
            println!("{n}");
        }
    }
    println!(
        "echo MB/s: bytes echoed back per second (10^6 B; each byte crosses the link twice), \
         every byte checked, from the first connect to the last EOF; conn/s: connect, echo 1 \
         byte, half-close, read EOF, close, in a loop per client; p50/p99: one such cycle with \
         1 client; clients run inside the namespace; QEMU under {accel}"
    );
    let failed = rows
        .iter()
        .flat_map(|r| &r.results)
        .any(|(_, res)| matches!(res, NetResult::Failed(_)));
    Ok(if failed { 1 } else { 0 })
}

/// The line `iotest epoll-bench` prints.
pub const EPOLL_MARKER: &str = "epoll-bench:";
/// The registered-descriptor counts of `epoll-bench`.
pub const EPOLL_SIZES: [u64; 3] = [10, 1000, 10_000];
/// The target: `epoll_wait` with 10,000 registered costs at most this
/// many times what it costs with 10.
pub const EPOLL_TARGET_RATIO: f64 = 1.2;

/// Parses `epoll-bench: n10_ns=A n1000_ns=B n10000_ns=C` into the three
/// costs in ns (in [`EPOLL_SIZES`] order).
pub fn parse_epoll_bench(line: &str) -> Option<[u64; 3]> {
    let (_, rest) = line.split_once(EPOLL_MARKER)?;
    let kv = parse_kv(rest);
    let get = |n: u64| kv.get(&format!("n{n}_ns")).copied();
    Some([
        get(EPOLL_SIZES[0])?,
        get(EPOLL_SIZES[1])?,
        get(EPOLL_SIZES[2])?,
    ])
}

/// The `bench epoll` table and verdict for per-run samples.
pub fn epoll_report(machine: Machine, samples: &[[u64; 3]]) -> (String, String) {
    let mut rows = vec![vec![
        format!(
            "{machine} ({} run{})",
            samples.len(),
            if samples.len() == 1 { "" } else { "s" }
        ),
        "median ns".into(),
        "min".into(),
        "max".into(),
    ]];
    let mut medians = [0u64; 3];
    for (i, n) in EPOLL_SIZES.iter().enumerate() {
        let v: Vec<u64> = samples.iter().map(|s| s[i]).collect();
        let (md, mn, mx) = stats(&v);
        medians[i] = md;
        rows.push(vec![
            format!("  {n} registered"),
            md.to_string(),
            mn.to_string(),
            mx.to_string(),
        ]);
    }
    let ratio = if medians[0] == 0 {
        f64::INFINITY
    } else {
        medians[2] as f64 / medians[0] as f64
    };
    let verdict = format!(
        "ratio 10,000/10 registered: {ratio:.2} (target <= {EPOLL_TARGET_RATIO}: {})",
        if ratio <= EPOLL_TARGET_RATIO {
            "met"
        } else {
            "not met"
        }
    );
    (table(&rows), verdict)
}

/// Runs `bench epoll` and prints the table and verdict.
pub fn bench_epoll(runs: usize, machine: Machine, accel: Option<Accel>) -> Result<i32, Error> {
    ensure_qemu()?;
    let accel = accel.unwrap_or_else(Accel::detect);
    let image = build_image("iotest", Profile::Release, false)?;
    println!(
        "epoll benchmark: iotest epoll-bench, {runs} boot{} on {machine}, accel {accel}",
        if runs == 1 { "" } else { "s" }
    );
    let mut cfg = VmConfig::new(&image);
    cfg.machine = machine;
    cfg.accel = accel;
    // 10,000 eventfds and their epoll entries.
    cfg.mem = "128M".parse::<MemSize>().map_err(Error::Failed)?;
    cfg.args = vec!["epoll-bench".into()];
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let fail = |e: String| Error::Failed(format!("run {}/{runs}: {e}", i + 1));
        let run = crate::progress::step(&format!("epoll-bench run {}/{runs}", i + 1), || {
            run_guest(&cfg, Duration::from_secs(300), |_, _| Ok(()))
        })
        .map_err(fail)?;
        run.check_success().map_err(fail)?;
        let line = run
            .find(EPOLL_MARKER)
            .ok_or_else(|| fail(run.fail("no 'epoll-bench:' line")))?;
        samples.push(
            parse_epoll_bench(&line.text)
                .ok_or_else(|| fail(run.fail("malformed 'epoll-bench:' line")))?,
        );
    }
    let (t, verdict) = epoll_report(machine, &samples);
    print!("{t}");
    println!("{verdict}");
    println!(
        "ns per epoll_wait(timeout 0) returning the 1 ready eventfd among N registered, \
         guest TSC clock under {accel}"
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_lines() {
        let s = StreamResult::parse(
            "stream conns=4 sent=100000000 echoed=100000000 ns=2000000000 errors=0 mismatches=0\n",
        )
        .unwrap();
        assert_eq!(s.conns, 4);
        assert!((s.mb_per_s() - 50.0).abs() < 1e-9);
        assert!(StreamResult::parse("stream conns=1").is_none());
        assert!(StreamResult::parse("nothing").is_none());
        let c = CpsResult::parse(
            "cps workers=1 conns=3000 fails=2 ns=1500000000 p50_us=480 p99_us=2100",
        )
        .unwrap();
        assert_eq!((c.workers, c.fails, c.p50_us, c.p99_us), (1, 2, 480, 2100));
        assert!((c.per_sec() - 2000.0).abs() < 1e-9);
        assert!(CpsResult::parse("cps workers=1").is_none());
        assert_eq!(mb_per_s(5, 0), 0.0);
    }

    #[test]
    fn net_table() {
        let s = |conns, echoed| StreamResult {
            conns,
            sent: echoed,
            echoed,
            ns: 1_000_000_000,
            errors: 0,
            mismatches: 0,
        };
        let c = |workers, conns, fails| CpsResult {
            workers,
            conns,
            fails,
            ns: 2_000_000_000,
            p50_us: 500,
            p99_us: 900,
        };
        let mut counters = HashMap::new();
        counters.insert("tx_ring_full".to_string(), 7);
        let r = NetRow {
            machine: Machine::Q35,
            results: vec![
                (NetTest::Stream(1), NetResult::Stream(s(1, 52_340_000))),
                (NetTest::Stream(4), NetResult::Failed("stalled: x".into())),
                (NetTest::Cps(1), NetResult::Cps(c(1, 3400, 0))),
                (NetTest::Cps(4), NetResult::Cps(c(4, 5000, 1))),
            ],
            counters,
            unanswered: 1,
        };
        assert_eq!(
            net_row(&r),
            ["q35", "52.3", "failed", "1700", "2500", "500", "900", "1"]
        );
        assert_eq!(net_header().len(), net_row(&r).len());
        assert_eq!(net_header()[1], "echo MB/s 1 conn");
        assert_eq!(net_header()[4], "conn/s 4 clients");
        assert_eq!(
            net_notes(&r),
            [
                "q35 echo MB/s 4 conns: FAILED: stalled: x",
                "q35 guest counters: rx_dropped=0 tx_ring_full=7 listen_overflows=0 (1 of 4 \
                 guests did not answer the UDP stats request)"
            ]
        );
    }

    #[test]
    fn judging() {
        let ok = "stream conns=1 sent=10 echoed=10 ns=5 errors=0 mismatches=0";
        assert!(matches!(
            judge(NetTest::Stream(1), ok),
            NetResult::Stream(_)
        ));
        let stall = "stream conns=4 sent=100 echoed=60 ns=35000000000 errors=4 mismatches=0";
        assert_eq!(
            judge(NetTest::Stream(4), stall),
            NetResult::Failed(
                "stalled: 60 of 100 bytes sent came back in 35.0 s (4 of 4 connections timed \
                 out or broke)"
                    .into()
            )
        );
        let bad = "stream conns=1 sent=10 echoed=10 ns=5 errors=0 mismatches=1";
        assert!(
            matches!(judge(NetTest::Stream(1), bad), NetResult::Failed(w) if w.contains("differed"))
        );
        let none = "cps workers=1 conns=0 fails=3 ns=5 p50_us=0 p99_us=0";
        assert_eq!(
            judge(NetTest::Cps(1), none),
            NetResult::Failed("no connection completed (3 failed)".into())
        );
        assert!(matches!(
            judge(NetTest::Cps(1), "junk"),
            NetResult::Failed(_)
        ));
        assert_eq!(NetTest::ALL.map(|t| t.name())[3], "conn/s 4 clients");
    }

    #[test]
    fn epoll_lines_and_report() {
        assert_eq!(
            parse_epoll_bench("epoll-bench: n10_ns=210 n1000_ns=215 n10000_ns=240\r"),
            Some([210, 215, 240])
        );
        assert_eq!(parse_epoll_bench("epoll-bench: n10_ns=1 n1000_ns=2"), None);
        assert_eq!(parse_epoll_bench("n10_ns=1 n1000_ns=2 n10000_ns=3"), None);
        let (t, v) = epoll_report(
            Machine::Microvm,
            &[[200, 210, 230], [220, 215, 250], [210, 205, 240]],
        );
        assert_eq!(
            t,
            "microvm (3 runs)    median ns  min  max\n\
             \x20 10 registered           210  200  220\n\
             \x20 1000 registered         210  205  215\n\
             \x20 10000 registered        240  230  250\n"
        );
        assert_eq!(v, "ratio 10,000/10 registered: 1.14 (target <= 1.2: met)");
        let (_, v) = epoll_report(Machine::Q35, &[[100, 200, 400]]);
        assert_eq!(
            v,
            "ratio 10,000/10 registered: 4.00 (target <= 1.2: not met)"
        );
    }

    #[test]
    fn bounded_commands() {
        let out = run_bounded(
            Command::new("sh").args(["-c", "echo hi"]),
            Duration::from_secs(10),
        );
        assert_eq!(out.unwrap(), "hi\n");
        let e = run_bounded(
            Command::new("sh").args(["-c", "echo no >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(e.contains("no"), "{e}");
        let e = run_bounded(
            Command::new("sh").args(["-c", "exit 99"]),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(e.contains("not inside the network namespace"), "{e}");
        let t = Instant::now();
        let e =
            run_bounded(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("killed after"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
