//! `cargo uk bench compare`: our `httpd` against Linux + nginx
//! ([`crate::nginxvm`]) in the same QEMU, side by side: the same machine
//! type, accelerator, CPU, one vCPU, memory and TAP link in a network
//! namespace of its own ([`crate::netns`]).
//!
//! Per system it measures (a) the time from spawning QEMU to the guest's
//! serial marker and to the first `200` for `/1k.bin` (a bounded `curl` loop
//! inside the namespace, started at the marker), (b) `bench http`'s wrk runs
//! ([`crate::httpbench::measure_checked`]) for the 1 KiB, 64 KiB, 1 MiB and
//! 16 MiB files at 256M, with the chosen connections (64) and with 256, with
//! both guests up (each in a namespace of its own) and measured in rounds
//! that alternate which goes first, judged on the medians (a
//! stalled guest fails its remaining cells, with its console tail), and (c)
//! the smallest `-m` of [`MEM_STEPS`] at which the guest still serves
//! `/1k.bin` (descending; the first failure ends the probe), and the
//! smallest at which it also survives a bounded `Connection: close` churn
//! ([`churn_script`]) and still answers afterwards. It then prints the ratios against the project's targets; a missed
//! target never fails the run, a failed measurement does (exit 1, after
//! everything is printed).

use std::path::PathBuf;
use std::time::Duration;

use crate::Error;
use crate::bench::{LiveGuest, table};
use crate::build::{Profile, build_image};
use crate::httpbench::{
    FILES, WrkResult, conn_levels, console_tail, ensure_wrk, fmt_latency, guest_max_conns, human,
    measure_checked,
};
use crate::image::TempImage;
use crate::netns::{GUEST_IP, Netns};
use crate::nginxvm::{self, NginxVm};
use crate::qemu::{Accel, Machine, MemSize, VmConfig, ensure_qemu, is_root};

/// The memory both guests get for the boot and throughput measurements.
pub const BENCH_MEM: MemSize = MemSize(256 << 20);

/// The memory sizes the probe tries, in MiB, largest first.
pub const MEM_STEPS: [u64; 12] = [256, 128, 64, 32, 16, 8, 6, 5, 4, 3, 2, 1];

/// Target: our 1 KiB requests/s at least this many times nginx's.
pub const TARGET_1K_RATIO: f64 = 3.0;
/// 1 MiB and 16 MiB MB/s against nginx's (the zero-copy transmit issue).
const TARGET_BULK_RATIO: f64 = 1.2;
/// Linux + nginx's expected QEMU start → first 200, in seconds.
pub const NGINX_BOOT_RANGE: (f64, f64) = (5.0, 8.0);

/// The arguments of `bench compare`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareArgs {
    /// wrk's duration per file, in seconds.
    pub secs: u64,
    /// wrk's connections.
    pub conns: u32,
    /// Rounds: each measures every cell on both systems.
    pub rounds: u32,
    /// The machine both guests run on.
    pub machine: Machine,
    /// Forced accelerator.
    pub accel: Option<Accel>,
    /// Skip the memory probe.
    pub no_mem: bool,
    /// vCPUs: above 1, both systems are measured at 1 and at this many
    /// ([`crate::smpbench`]) instead.
    pub smp: u32,
}

impl Default for CompareArgs {
    fn default() -> Self {
        CompareArgs {
            secs: 10,
            conns: 64,
            rounds: 3,
            machine: Machine::Microvm,
            accel: None,
            no_mem: false,
            smp: 1,
        }
    }
}

/// The two systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Our unikernel's `httpd`.
    Uk,
    /// Debian's Linux kernel + nginx.
    Nginx,
}

impl System {
    /// Both, in table order.
    pub const ALL: [System; 2] = [System::Uk, System::Nginx];

    /// The column label.
    pub fn label(self) -> &'static str {
        match self {
            System::Uk => "uk httpd",
            System::Nginx => "Linux + nginx",
        }
    }

    /// The serial line after which the server accepts connections.
    pub fn marker(self) -> &'static str {
        match self {
            System::Uk => "httpd: serving",
            System::Nginx => nginxvm::LISTENING,
        }
    }

    /// The serial line after which all benchmark files exist.
    pub fn ready(self) -> &'static str {
        match self {
            System::Uk => "httpd: serving",
            System::Nginx => nginxvm::READY,
        }
    }

    /// How long a boot may take before it counts as failed.
    pub fn boot_timeout(self) -> Duration {
        match self {
            System::Uk => Duration::from_secs(60),
            System::Nginx => Duration::from_secs(60),
        }
    }
}

/// The first system of round `round` (0-based): ABBA.
pub fn round_order(round: u32) -> [System; 2] {
    if round.is_multiple_of(2) {
        [System::Uk, System::Nginx]
    } else {
        [System::Nginx, System::Uk]
    }
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len().is_multiple_of(2) {
        (s[m - 1] + s[m]) / 2.0
    } else {
        s[m]
    })
}

/// One metric's result over the rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Our median.
    pub uk: Option<f64>,
    /// nginx's median.
    pub nginx: Option<f64>,
    /// The ratio of the medians (ours / nginx's).
    pub ratio: Option<f64>,
    /// The smallest and largest ratio within one round (rounds where both
    /// measured).
    pub round_ratios: Option<(f64, f64)>,
}

/// Summarises per-round values (`None`: not measured in that round).
pub fn summarize(uk: &[Option<f64>], nginx: &[Option<f64>]) -> Summary {
    let flat = |v: &[Option<f64>]| v.iter().flatten().copied().collect::<Vec<_>>();
    let (u, n) = (median(&flat(uk)), median(&flat(nginx)));
    let ratios: Vec<f64> = uk
        .iter()
        .zip(nginx)
        .filter_map(|(a, b)| Some(a.as_ref()? / b.as_ref().filter(|b| **b > 0.0)?))
        .collect();
    let round_ratios = ratios.iter().copied().fold(None, |acc, r| match acc {
        None => Some((r, r)),
        Some((lo, hi)) => Some((f64::min(lo, r), f64::max(hi, r))),
    });
    Summary {
        uk: u,
        nginx: n,
        ratio: match (u, n) {
            (Some(u), Some(n)) if n > 0.0 => Some(u / n),
            _ => None,
        },
        round_ratios,
    }
}

/// Whether `ours` reaches `factor` × `theirs`, and the ratio.
pub fn verdict(ours: f64, theirs: f64, factor: f64) -> (bool, f64) {
    let ratio = if theirs > 0.0 {
        ours / theirs
    } else {
        f64::INFINITY
    };
    (ratio >= factor, ratio)
}

/// `met` / `not met`.
pub fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

/// How a guest did at one memory size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemResult {
    /// No first 200 for `/1k.bin`.
    Fails,
    /// It served, but not after the churn.
    Serves,
    /// It served and still answered after the churn.
    SurvivesChurn,
}

/// The result of the memory probe: the smallest size that served, the
/// smallest that also survived the churn, and the size that failed below
/// them (none if every step served).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemProbe {
    /// The smallest size in MiB that served, if any.
    pub smallest_ok: Option<u64>,
    /// The smallest size in MiB that served and survived the churn.
    pub smallest_churn: Option<u64>,
    /// The first failing size in MiB.
    pub first_failed: Option<u64>,
}

impl MemProbe {
    /// `3M (2M fails)`, `1M (smallest tried)`, `none of 256M..1M`.
    pub fn describe(&self) -> String {
        match (self.smallest_ok, self.first_failed) {
            (Some(ok), Some(bad)) => format!("{ok}M ({bad}M fails)"),
            (Some(ok), None) => format!("{ok}M (smallest tried)"),
            (None, _) => format!(
                "none of {}M..{}M",
                MEM_STEPS[0],
                MEM_STEPS[MEM_STEPS.len() - 1]
            ),
        }
    }

    /// `4M`, or `none`.
    pub fn describe_churn(&self) -> String {
        self.smallest_churn
            .map_or_else(|| "none".to_string(), |m| format!("{m}M"))
    }
}

/// Walks [`MEM_STEPS`] down while `try_at(mib)` serves.
pub fn probe_mem(mut try_at: impl FnMut(u64) -> MemResult) -> MemProbe {
    let mut p = MemProbe {
        smallest_ok: None,
        smallest_churn: None,
        first_failed: None,
    };
    for mib in MEM_STEPS {
        match try_at(mib) {
            MemResult::Fails => {
                p.first_failed = Some(mib);
                break;
            }
            MemResult::Serves => p.smallest_ok = Some(mib),
            MemResult::SurvivesChurn => {
                p.smallest_ok = Some(mib);
                p.smallest_churn = Some(mib);
            }
        }
    }
    p
}

/// The churn: `wrk` with `Connection: close` (a new connection per
/// request), 16 connections for 2 s, then up to 20 probes for a 200. Bounded
/// in time (wrk's 2 s, each curl at most 3 s).
pub fn churn_script() -> String {
    format!(
        "wrk -t1 -c16 -d2s --timeout 2s -H 'Connection: close' http://{GUEST_IP}/1k.bin \
         >/dev/null 2>&1; {}",
        first_200_script(20).replace("--max-time 5", "--max-time 3")
    )
}

/// The `sh` script that fetches `/1k.bin` with curl until it gets a 200:
/// at most `tries` attempts, 50 ms apart, each bounded by `--max-time 5`.
pub fn first_200_script(tries: u32) -> String {
    format!(
        "i=0; while [ $i -lt {tries} ]; do \
         c=$(curl -s -o /dev/null -w '%{{http_code}}' --connect-timeout 1 --max-time 5 \
         http://{GUEST_IP}/1k.bin); [ \"$c\" = 200 ] && exit 0; i=$((i+1)); sleep 0.05; done; \
         echo \"last status: $c\" >&2; exit 1"
    )
}

/// What booting one system gave.
pub(crate) struct Boot {
    pub(crate) guest: LiveGuest,
    to_marker: Duration,
    to_200: Duration,
}

/// How the systems are booted.
pub(crate) struct Setup {
    pub(crate) machine: Machine,
    pub(crate) accel: Accel,
    pub(crate) image: PathBuf,
    pub(crate) disk: TempImage,
    pub(crate) small_disk: TempImage,
    /// The Linux + nginx guest (`None`: our httpd only).
    pub(crate) vm: Option<NginxVm>,
    pub(crate) conns: u32,
    pub(crate) tsc_khz: Option<u64>,
    /// vCPUs of the guests booted next.
    pub(crate) smp: std::cell::Cell<u32>,
}

impl Setup {
    fn spawn(
        &self,
        ns: &Netns,
        sys: System,
        mem: MemSize,
        full: bool,
    ) -> Result<LiveGuest, String> {
        match sys {
            System::Uk => {
                let mut cfg = VmConfig::new(&self.image);
                cfg.machine = self.machine;
                cfg.accel = self.accel;
                cfg.smp = self.smp.get();
                cfg.mem = mem;
                cfg.disk = Some(if full {
                    self.disk.path.clone()
                } else {
                    self.small_disk.path.clone()
                });
                ns.attach(&mut cfg);
                cfg.args = vec![
                    "--no-access-log".into(),
                    "--max-conns".into(),
                    guest_max_conns(self.conns).to_string(),
                ];
                LiveGuest::spawn(&cfg)
            }
            System::Nginx => {
                let vm = self.vm.as_ref().ok_or("no Linux + nginx guest")?;
                let mut cfg = VmConfig::new(&vm.kernel);
                cfg.machine = self.machine;
                cfg.accel = self.accel;
                cfg.smp = self.smp.get();
                cfg.mem = mem;
                if !full {
                    cfg.append = "ukwww=1k".into();
                }
                ns.attach(&mut cfg);
                LiveGuest::spawn_command(nginxvm::linux_command(&cfg, &vm.initrd, self.tsc_khz))
            }
        }
    }

    /// Boots `sys`, waits for its marker, then polls for the first 200.
    /// A boot that prints no marker within [`System::boot_timeout`] while
    /// QEMU still runs (a hang) is retried up to `attempts` times in all;
    /// `hangs` counts them.
    pub(crate) fn boot(
        &self,
        ns: &Netns,
        sys: System,
        mem: MemSize,
        full: bool,
        attempts: u32,
        hangs: &mut u32,
    ) -> Result<Boot, String> {
        let mut guest = self.spawn(ns, sys, mem, full)?;
        let mut left = attempts.max(1);
        let marker = loop {
            left -= 1;
            match guest.wait_for(sys.marker(), sys.boot_timeout()) {
                Ok(m) => break m,
                Err(e) if left > 0 && e.starts_with("no '") => {
                    *hangs += 1;
                    eprintln!(
                        "uk: {}: no '{}' line after {:?}; booting again",
                        sys.label(),
                        sys.marker(),
                        sys.boot_timeout()
                    );
                    guest.kill();
                    guest = self.spawn(ns, sys, mem, full)?;
                }
                Err(e) => return Err(e),
            }
        };
        let out = ns
            .command("sh", ["-c", &first_200_script(100)])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run curl in the namespace: {e}"))?;
        let to_200 = guest.started().elapsed();
        if !out.status.success() {
            return Err(format!(
                "no 200 for /1k.bin after the '{}' line: {}\n--- guest output ---\n{}",
                sys.marker(),
                String::from_utf8_lossy(&out.stderr).trim(),
                guest.output()
            ));
        }
        Ok(Boot {
            guest,
            to_marker: marker.at,
            to_200,
        })
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// One round of one cell: wrk's result, or why there is none.
type CellResult = Result<WrkResult, String>;

/// A guest that stays up for the rounds, in its own namespace.
struct Live {
    ns: Netns,
    guest: LiveGuest,
    /// Set when a measurement failed: the guest's remaining cells are skipped.
    stalled: bool,
}

/// Runs the comparison and prints the tables.
pub fn bench_compare(args: &CompareArgs) -> Result<i32, Error> {
    ensure_qemu()?;
    if !is_root() {
        return Err(Error::Failed(
            "bench compare needs root (a network namespace and a TAP device): run it as root"
                .into(),
        ));
    }
    ensure_wrk()?;
    nginxvm::ensure_tool("curl", "curl")?;
    let accel = args.accel.unwrap_or_else(Accel::detect);
    let vm = nginxvm::build()?;
    let image = build_image("httpd", Profile::Release, false)?;
    let deb = |prefix: &str| vm.deb(prefix);
    let (kernel_deb, nginx_deb) = (deb("linux-image-"), deb("nginx_"));
    let make_disk = |files: &[(&str, usize)]| TempImage::of_files("compare-site", files, 11);
    let setup = Setup {
        machine: args.machine,
        accel,
        image,
        disk: make_disk(&FILES)?,
        small_disk: make_disk(&FILES[..1])?,
        vm: Some(vm),
        conns: args.conns,
        tsc_khz: (accel == Accel::Tcg).then(nginxvm::host_tsc_khz).flatten(),
        smp: std::cell::Cell::new(1),
    };
    if args.smp > 1 {
        println!(
            "compare --smp {}: uk httpd vs Linux + nginx ({kernel_deb}, {nginx_deb}; worker_processes auto) at 1 and {} vCPUs",
            args.smp, args.smp
        );
        return crate::smpbench::run_scaling(
            &setup,
            &System::ALL,
            args.smp,
            args.secs,
            args.rounds,
        );
    }
    let levels = conn_levels(args.conns);
    // Every cell: (connections, (path, size)), at each level every file.
    let cell_list: Vec<(u32, (&str, usize))> = levels
        .iter()
        .flat_map(|&c| FILES.iter().map(move |f| (c, *f)))
        .collect();
    println!(
        "compare: uk httpd (sendfile, ext4 on virtio-blk) vs Linux + nginx ({kernel_deb}, \
         {nginx_deb}; initramfs, files in tmpfs)"
    );
    println!(
        "both: {} ({} for Linux: its bzImage needs the option ROMs), accel {accel}, 1 vCPU, {}, \
         virtio-net on tap0, each in a network namespace of its own, both running; {} rounds, \
         each measuring every cell on both systems, alternating which goes first; \
         wrk -t2 -c{} -d{}s after a 1 s warm-up",
        setup.machine,
        nginxvm::linux_machine_arg(setup.machine),
        BENCH_MEM,
        args.rounds,
        levels
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("|"),
        args.secs
    );
    let ncells = cell_list.len();
    let rounds = args.rounds.max(1) as usize;
    let mut failed = Vec::new();
    let mut boots: Vec<Option<(Duration, Duration)>> = Vec::new();
    let mut hangs = [0u32; 2];
    // Both guests boot (ours first, alone, so its boot time is its own) and
    // stay up: the rounds then alternate between them, so that a slow spell
    // of the host falls on both.
    let mut lives: Vec<Option<Live>> = Vec::new();
    for (i, sys) in System::ALL.into_iter().enumerate() {
        let ns = Netns::create(match sys {
            System::Uk => "cmp-uk",
            System::Nginx => "cmp-nginx",
        })?;
        let step = crate::progress::Step::start(&format!("{}: booting ({BENCH_MEM})", sys.label()));
        let booted = setup.boot(&ns, sys, BENCH_MEM, true, 3, &mut hangs[i]);
        step.finish(booted.is_ok());
        let mut boot = match booted {
            Ok(b) => b,
            Err(e) => {
                failed.push(format!("{}: boot: {e}", sys.label()));
                boots.push(None);
                lives.push(None);
                continue;
            }
        };
        boots.push(Some((boot.to_marker, boot.to_200)));
        if let Err(e) = boot.guest.wait_for(sys.ready(), sys.boot_timeout()) {
            failed.push(format!("{}: {e}", sys.label()));
            boot.guest.kill();
            lives.push(None);
            continue;
        }
        lives.push(Some(Live {
            ns,
            guest: boot.guest,
            stalled: false,
        }));
    }
    // cells[system][cell][round]
    let mut cells: Vec<Vec<Vec<CellResult>>> = (0..2)
        .map(|_| {
            (0..ncells)
                .map(|_| (0..rounds).map(|_| Err("not measured".into())).collect())
                .collect()
        })
        .collect();
    let total = rounds * ncells * 2;
    let mut k = 0;
    for round in 0..args.rounds.max(1) {
        let ri = round as usize;
        for (cell, (c, (path, _))) in cell_list.iter().enumerate() {
            for sys in round_order(round) {
                k += 1;
                let s = sys as usize;
                let Some(live) = lives[s].as_mut() else {
                    continue;
                };
                if live.stalled {
                    cells[s][cell][ri] = Err("skipped: the guest stalled".into());
                    continue;
                }
                let step = crate::progress::Step::start(&format!(
                    "[{k}/{total}] round {}: {}: wrk -c{c} {path} ({} s + 1 s warm-up)",
                    round + 1,
                    sys.label(),
                    args.secs
                ));
                let r = measure_checked(&live.ns, *c, args.secs, path).map_err(|e| e.message());
                step.finish(r.is_ok());
                if let Err(e) = &r {
                    // A guest that stopped answering fails what is left of it.
                    live.stalled = true;
                    failed.push(format!(
                        "{} {path} ({c} connections, round {}): {e}\n--- guest console (last lines) ---\n{}",
                        sys.label(),
                        round + 1,
                        console_tail(&live.guest.output(), 40)
                    ));
                }
                cells[s][cell][ri] = r;
            }
        }
    }
    // Guests first, then their namespaces.
    for l in lives.iter_mut().flatten() {
        l.guest.kill();
    }
    drop(lives);
    let mut mem: Vec<Option<MemProbe>> = Vec::new();
    // The memory probe boots one guest at a time.
    let ns = Netns::create("bench-cmp")?;
    if !args.no_mem {
        for (i, sys) in System::ALL.into_iter().enumerate() {
            let p = probe_mem(|mib| {
                let step = crate::progress::Step::start(&format!(
                    "{}: memory probe at {mib}M",
                    sys.label()
                ));
                let r = match setup.boot(&ns, sys, MemSize(mib << 20), false, 1, &mut hangs[i]) {
                    Ok(mut b) => {
                        let churn = ns
                            .command("sh", ["-c", &churn_script()])
                            .stdin(std::process::Stdio::null())
                            .output()
                            .is_ok_and(|o| o.status.success());
                        if !churn {
                            eprintln!(
                                "uk: {} serves at {mib}M but not after the churn: {}",
                                sys.label(),
                                console_tail(&b.guest.output(), 3).replace('\n', " | ")
                            );
                        }
                        b.guest.kill();
                        if churn {
                            MemResult::SurvivesChurn
                        } else {
                            MemResult::Serves
                        }
                    }
                    Err(e) => {
                        eprintln!(
                            "uk: {} does not serve at {mib}M: {}",
                            sys.label(),
                            console_tail(&e, 3).replace('\n', " | ")
                        );
                        MemResult::Fails
                    }
                };
                step.finish(r != MemResult::Fails);
                r
            });
            mem.push(Some(p));
        }
    }
    drop(ns);

    println!();
    let boot_cell = |i: usize, f: fn(&(Duration, Duration)) -> Duration| {
        boots[i]
            .as_ref()
            .map_or_else(|| "failed".into(), |b| secs(f(b)))
    };
    let mut rows = vec![vec![
        format!("boot ({BENCH_MEM})"),
        System::Uk.label().into(),
        System::Nginx.label().into(),
    ]];
    rows.push(vec![
        "QEMU start -> serial marker".into(),
        boot_cell(0, |b| b.0),
        boot_cell(1, |b| b.0),
    ]);
    rows.push(vec![
        "QEMU start -> first HTTP 200".into(),
        boot_cell(0, |b| b.1),
        boot_cell(1, |b| b.1),
    ]);
    print!("{}", table(&rows));
    println!();

    let mut head: Vec<String> = ["conns", "file", "system"].map(String::from).to_vec();
    head.extend((1..=rounds).map(|r| format!("round {r} req/s")));
    head.extend(["median req/s", "median MB/s", "p50", "p99", "errors"].map(String::from));
    let mut rows = vec![head];
    for (cell, (c, (path, size))) in cell_list.iter().enumerate() {
        for (s, sys) in System::ALL.iter().enumerate() {
            let (conns, file) = if s == 0 {
                (c.to_string(), format!("{path} ({})", human(*size)))
            } else {
                (String::new(), String::new())
            };
            let mut row = vec![conns, file, sys.label().into()];
            let runs = &cells[s][cell];
            row.extend(runs.iter().map(|r| match r {
                Ok(r) => format!("{:.0}", r.requests_per_sec),
                Err(e) if e.starts_with("skipped") => "skipped".into(),
                Err(_) => "failed".into(),
            }));
            let ok: Vec<&WrkResult> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
            let rps: Vec<f64> = ok.iter().map(|r| r.requests_per_sec).collect();
            let mbs: Vec<f64> = ok.iter().map(|r| r.mb_per_sec()).collect();
            let last = ok.last();
            row.push(median(&rps).map_or_else(|| "-".into(), |v| format!("{v:.0}")));
            row.push(median(&mbs).map_or_else(|| "-".into(), |v| format!("{v:.1}")));
            row.push(last.map_or_else(|| "-".into(), |r| fmt_latency(r.p50)));
            row.push(last.map_or_else(|| "-".into(), |r| fmt_latency(r.p99)));
            row.push(ok.iter().map(|r| r.errors).sum::<u64>().to_string());
            rows.push(row);
        }
    }
    print!("{}", table(&rows));
    println!("(p50 and p99: the last round measured; errors: all rounds)");
    if !mem.is_empty() {
        println!();
        let mut rows = vec![vec![
            "smallest -m serving /1k.bin".to_string(),
            System::Uk.label().into(),
            System::Nginx.label().into(),
        ]];
        let d = |p: &Option<MemProbe>| p.map_or_else(|| "skipped".into(), |p| p.describe());
        rows.push(vec![
            format!(
                "tried {}",
                MEM_STEPS
                    .iter()
                    .map(|m| format!("{m}M"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            d(&mem[0]),
            d(&mem[1]),
        ]);
        let dc = |p: &Option<MemProbe>| p.map_or_else(|| "skipped".into(), |p| p.describe_churn());
        rows.push(vec![
            "... and survives a 2 s Connection: close churn".to_string(),
            dc(&mem[0]),
            dc(&mem[1]),
        ]);
        print!("{}", table(&rows));
    }

    println!();
    println!("targets (a missed target does not fail the run):");
    // The targets are judged at the chosen connection count (the first
    // level), on the medians of the rounds.
    let per_round = |s: usize, cell: usize, f: fn(&WrkResult) -> f64| -> Vec<Option<f64>> {
        cells[s][cell]
            .iter()
            .map(|r| r.as_ref().ok().map(f))
            .collect()
    };
    let judge = |label: String, cell: usize, f: fn(&WrkResult) -> f64, target: f64, unit: &str| {
        let sum = summarize(&per_round(0, cell, f), &per_round(1, cell, f));
        match (sum.uk, sum.nginx) {
            (Some(o), Some(t)) => {
                let (ok, ratio) = verdict(o, t, target);
                let range = sum.round_ratios.map_or_else(String::new, |(lo, hi)| {
                    format!(" (per round {lo:.2}x..{hi:.2}x)")
                });
                println!(
                    "  {label}: medians {o:.1} / {t:.1} {unit} = {ratio:.2}x{range}: {}",
                    met(ok)
                );
            }
            _ => println!("  {label}: not measured"),
        }
    };
    judge(
        format!("1 KiB requests/s >= {TARGET_1K_RATIO}x nginx"),
        0,
        |r| r.requests_per_sec,
        TARGET_1K_RATIO,
        "req/s",
    );
    // Bulk throughput targets: the 1 MiB and 16 MiB files.
    for (f, (path, size)) in FILES
        .iter()
        .enumerate()
        .filter(|(_, (_, size))| *size >= 1 << 20)
    {
        judge(
            format!(
                "{} MB/s >= {TARGET_BULK_RATIO}x nginx ({path})",
                human(*size)
            ),
            f,
            WrkResult::mb_per_sec,
            TARGET_BULK_RATIO,
            "MB/s",
        );
    }
    match (&boots[0], &boots[1]) {
        (Some(u), Some(n)) => {
            let (lo, hi) = NGINX_BOOT_RANGE;
            let t = n.1.as_secs_f64();
            let within = (lo..=hi).contains(&t);
            println!(
                "  QEMU start -> first 200: uk {} vs Linux + nginx {} ({:.1}x faster); nginx's \
                 expected {lo}-{hi} s: {}",
                secs(u.1),
                secs(n.1),
                t / u.1.as_secs_f64().max(1e-9),
                if within { "within" } else { "outside" }
            );
        }
        _ => println!("  QEMU start -> first 200: not measured"),
    }
    if let [Some(u), Some(n)] = mem.as_slice()
        && let (Some(a), Some(b)) = (u.smallest_ok, n.smallest_ok)
    {
        println!(
            "  memory: uk serves at {a}M, Linux + nginx at {b}M ({:.0}x less)",
            b as f64 / a as f64
        );
    }
    println!(
        "notes: first 200 = QEMU spawn until curl (run inside the namespace from the serial \
         marker on) got a 200 for /1k.bin, so it includes ~10-20 ms of process start; nginx's \
         1 MiB and 16 MiB files are written after its marker; under {accel} the guest's CPU is \
         the limit"
    );
    if let Some(k) = setup.tsc_khz {
        println!(
            "Linux got tsc_early_khz={k} (the host's TSC; microvm has no HPET/PM timer and PIT \
             calibration under TCG fails now and then, hanging the boot)"
        );
    }
    Ok(report_hangs_and_failures(
        System::ALL.into_iter().zip(hangs),
        &failed,
    ))
}

/// The end of a side-by-side run: the boots that hung (and were retried),
/// then every failure; the exit status (1 when something failed).
pub fn report_hangs_and_failures(
    hangs: impl IntoIterator<Item = (System, u32)>,
    failed: &[String],
) -> i32 {
    for (sys, h) in hangs {
        if h > 0 {
            println!(
                "{}: {h} boot(s) hung without a marker and were not counted",
                sys.label()
            );
        }
    }
    if failed.is_empty() {
        0
    } else {
        eprintln!();
        for f in failed {
            eprintln!("uk: failed: {f}");
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_summaries() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        let s = summarize(
            &[Some(100.0), Some(120.0), Some(110.0)],
            &[Some(200.0), Some(100.0), Some(220.0)],
        );
        assert_eq!(s.uk, Some(110.0));
        assert_eq!(s.nginx, Some(200.0));
        assert_eq!(s.ratio, Some(0.55));
        assert_eq!(s.round_ratios, Some((0.5, 1.2)));
        // A round one system missed has no per-round ratio.
        let s = summarize(&[Some(10.0), None], &[Some(5.0), Some(7.0)]);
        assert_eq!(s.round_ratios, Some((2.0, 2.0)));
        assert_eq!(s.nginx, Some(6.0));
        let s = summarize(&[None], &[Some(0.0)]);
        assert_eq!((s.uk, s.ratio, s.round_ratios), (None, None, None));
    }

    #[test]
    fn rounds_alternate() {
        assert_eq!(round_order(0), [System::Uk, System::Nginx]);
        assert_eq!(round_order(1), [System::Nginx, System::Uk]);
        assert_eq!(round_order(2), round_order(0));
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(3000.0, 1000.0, 3.0), (true, 3.0));
        assert!(!verdict(2000.0, 1000.0, 3.0).0);
        assert_eq!(verdict(10.0, 10.0, 1.0), (true, 1.0));
        assert!(verdict(1.0, 0.0, 3.0).0);
        assert_eq!(met(true), "met");
        assert_eq!(met(false), "not met");
    }

    #[test]
    fn mem_probe_walks_down() {
        let mut tried = Vec::new();
        let p = probe_mem(|m| {
            tried.push(m);
            match m {
                5.. => MemResult::SurvivesChurn,
                3..=4 => MemResult::Serves,
                _ => MemResult::Fails,
            }
        });
        assert_eq!(tried, [256, 128, 64, 32, 16, 8, 6, 5, 4, 3, 2]);
        assert_eq!(
            p,
            MemProbe {
                smallest_ok: Some(3),
                smallest_churn: Some(5),
                first_failed: Some(2)
            }
        );
        assert_eq!(p.describe(), "3M (2M fails)");
        assert_eq!(p.describe_churn(), "5M");
        let all = probe_mem(|_| MemResult::SurvivesChurn);
        assert_eq!(all.describe(), "1M (smallest tried)");
        let none = probe_mem(|_| MemResult::Fails);
        assert_eq!(none.first_failed, Some(256));
        assert_eq!(none.describe(), "none of 256M..1M");
        assert_eq!(none.describe_churn(), "none");
    }

    #[test]
    fn script_is_bounded() {
        let sc = first_200_script(100);
        assert!(sc.contains("[ $i -lt 100 ]"));
        assert!(sc.contains("--max-time 5"));
        assert!(sc.contains("http://10.77.0.2/1k.bin"));
        assert!(sc.contains("'%{http_code}'"));
    }

    #[test]
    fn churn_is_bounded() {
        let c = churn_script();
        assert!(c.contains("-d2s") && c.contains("Connection: close"));
        assert!(c.contains("http://10.77.0.2/1k.bin"));
        assert!(c.contains("[ $i -lt 20 ]") && c.contains("--max-time 3"));
    }

    #[test]
    fn systems() {
        assert_eq!(System::Uk.marker(), "httpd: serving");
        assert_eq!(System::Nginx.marker(), nginxvm::LISTENING);
        assert_eq!(System::Nginx.ready(), nginxvm::READY);
        assert!(nginxvm::INIT.contains(nginxvm::LISTENING));
        assert!(nginxvm::INIT.contains(nginxvm::READY));
    }
}
