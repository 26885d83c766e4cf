//! `cargo uk bench paths`: serves files of 4 KiB, 64 KiB, 1 MiB and 16 MiB
//! through each data path of `iotest serve` (`read` into a buffer, `mmap` of
//! the page cache, `sendfile` from the page cache) over a TAP device, and
//! prints host-side throughput, guest CPU time per byte and bytes copied per
//! byte served, as a table and as an SVG plot.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::Error;
use crate::bench::{LiveGuest, process_cpu_time, table};
use crate::build::{Profile, build_image};
use crate::image::{TempImage, pseudo_random_bytes, temp_path};
use crate::netbench::{BOOT_TIMEOUT, mb_per_s, run_client};
use crate::netns::{GUEST_IP, Netns};
use crate::qemu::{Accel, Machine, MemSize, VmConfig, ensure_qemu};
use crate::serial::parse_kv;

/// The files served: guest path, size, seed of their pseudo-random bytes.
pub const FILES: [(&str, u64, u64); 4] = [
    ("/f4k.bin", 4 << 10, 41),
    ("/f64k.bin", 64 << 10, 42),
    ("/f1m.bin", 1 << 20, 43),
    ("/f16m.bin", 16 << 20, 44),
];
/// The data paths, as `iotest serve` names them.
pub const PATHS: [&str; 3] = ["read", "mmap", "sendfile"];
/// The port `iotest serve` listens on.
pub const PORT: u16 = 7000;
/// Each size × path stops fetching after this long per round (at least
/// one fetch).
pub const CELL_SECS: u64 = 3;
/// Rounds per size: each round runs every path once, in an order that
/// rotates from round to round, so a slow spell of a noisy host falls on
/// every path alike; a cell sums its rounds.
pub const ROUNDS: usize = 3;
/// The sendfile/read throughput target at 1 MiB.
pub const TARGET_SPEEDUP: f64 = 1.5;

/// One size × path measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// File size in bytes.
    pub size: u64,
    /// The data path.
    pub path: String,
    /// Timed fetches.
    pub fetches: u64,
    /// Bytes received in the timed fetches.
    pub bytes: u64,
    /// Host wall time of the timed fetches, ns.
    pub ns: u64,
    /// Fetches of the wrong length.
    pub bad: u64,
    /// Guest TSC cycles not idle over the window.
    pub busy_cycles: u64,
    /// Guest TSC cycles elapsed over the window.
    pub uptime_cycles: u64,
    /// The guest's TSC frequency.
    pub tsc_hz: u64,
    /// Counter deltas over the window (`app_to_socket` less the first
    /// `STATS` reply, which falls inside it).
    pub copies: HashMap<String, u64>,
    /// QEMU's host CPU time (utime + stime, 10 ms ticks) over the client's
    /// run (the two `STATS` requests and the timed fetches), if sampled.
    pub qemu_cpu_ns: Option<u64>,
}

impl Cell {
    /// This cell and `other` (the same size and path, measured in another
    /// round) as one: counts, times and counter deltas added.
    pub fn merged(mut self, other: &Cell) -> Cell {
        self.fetches += other.fetches;
        self.bytes += other.bytes;
        self.ns += other.ns;
        self.bad += other.bad;
        self.busy_cycles += other.busy_cycles;
        self.uptime_cycles += other.uptime_cycles;
        for (k, v) in &other.copies {
            *self.copies.entry(k.clone()).or_insert(0) += v;
        }
        self.qemu_cpu_ns = match (self.qemu_cpu_ns, other.qemu_cpu_ns) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self
    }

    /// Host-side throughput, MB/s.
    pub fn mb_per_s(&self) -> f64 {
        mb_per_s(self.bytes, self.ns)
    }

    /// Guest CPU (non-idle) time per byte served, ns.
    pub fn guest_ns_per_byte(&self) -> f64 {
        if self.bytes == 0 || self.tsc_hz == 0 {
            return 0.0;
        }
        self.busy_cycles as f64 / self.tsc_hz as f64 * 1e9 / self.bytes as f64
    }

    /// QEMU's host CPU time per byte served, ns.
    pub fn qemu_ns_per_byte(&self) -> Option<f64> {
        let ns = self.qemu_cpu_ns?;
        (self.bytes > 0).then(|| ns as f64 / self.bytes as f64)
    }

    /// Share of the window the guest CPU was busy, %.
    pub fn guest_busy_pct(&self) -> f64 {
        if self.uptime_cycles == 0 {
            0.0
        } else {
            self.busy_cycles as f64 / self.uptime_cycles as f64 * 100.0
        }
    }

    fn copy(&self, k: &str) -> u64 {
        self.copies.get(k).copied().unwrap_or(0)
    }

    /// Path copies (page cache → app, app → socket, page cache → socket)
    /// per byte served.
    pub fn path_copies(&self) -> f64 {
        self.per_byte(
            self.copy("cache_to_app") + self.copy("app_to_socket") + self.copy("cache_to_socket"),
        )
    }

    /// All copies, the socket → device stage (whole frames) included, per
    /// byte served.
    pub fn total_copies(&self) -> f64 {
        self.path_copies() + self.per_byte(self.copy("socket_to_device"))
    }

    fn per_byte(&self, n: u64) -> f64 {
        if self.bytes == 0 {
            0.0
        } else {
            n as f64 / self.bytes as f64
        }
    }
}

/// The copy counters `iotest serve` reports.
pub const COUNTERS: [&str; 4] = [
    "cache_to_app",
    "app_to_socket",
    "cache_to_socket",
    "socket_to_device",
];

/// Builds a [`Cell`] from the `fetch` client's output.
pub fn parse_fetch(size: u64, path: &str, out: &str) -> Result<Cell, String> {
    let line = |p: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(p))
            .ok_or_else(|| format!("no '{p}' line in: {out}"))
    };
    let f = parse_kv(line("fetch ")?);
    let before = parse_kv(line("before ")?);
    let after = parse_kv(line("after ")?);
    let num = |m: &HashMap<String, u64>, k: &str| {
        m.get(k)
            .copied()
            .ok_or_else(|| format!("'{k}' missing in: {out}"))
    };
    let delta =
        |k: &str| -> Result<u64, String> { Ok(num(&after, k)?.saturating_sub(num(&before, k)?)) };
    let mut copies = HashMap::new();
    for k in COUNTERS {
        copies.insert(k.to_string(), delta(k)?);
    }
    // The reply to the first STATS is written after its own snapshot.
    let reply = num(&f, "before_reply")?;
    if let Some(v) = copies.get_mut("app_to_socket") {
        *v = v.saturating_sub(reply);
    }
    let uptime = delta("uptime_cycles")?;
    let idle = delta("idle_cycles")?;
    Ok(Cell {
        size,
        path: path.to_string(),
        fetches: num(&f, "n")?,
        bytes: num(&f, "bytes")?,
        ns: num(&f, "ns")?,
        bad: num(&f, "bad")?,
        busy_cycles: uptime.saturating_sub(idle),
        uptime_cycles: uptime,
        tsc_hz: num(&after, "tsc_hz")?,
        copies,
        qemu_cpu_ns: None,
    })
}

/// `4 KiB`, `64 KiB`, `1 MiB`, `16 MiB`.
pub fn human_size(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{} KiB", b >> 10)
    }
}

/// The table header.
pub fn header() -> Vec<String> {
    [
        "size",
        "path",
        "fetches",
        "MB/s",
        "guest ns/B",
        "guest busy %",
        "QEMU CPU ns/B",
        "path copies/B",
        "total copies/B",
    ]
    .map(String::from)
    .to_vec()
}

/// One table row.
pub fn row(c: &Cell) -> Vec<String> {
    vec![
        human_size(c.size),
        c.path.clone(),
        c.fetches.to_string(),
        format!("{:.1}", c.mb_per_s()),
        format!("{:.2}", c.guest_ns_per_byte()),
        format!("{:.0}", c.guest_busy_pct()),
        c.qemu_ns_per_byte()
            .map_or_else(|| "-".to_string(), |v| format!("{v:.2}")),
        format!("{:.2}", c.path_copies()),
        format!("{:.2}", c.total_copies()),
    ]
}

/// The verdict lines on the project target, at 1 MiB and at 16 MiB:
/// sendfile at least [`TARGET_SPEEDUP`]× read's throughput, and no payload
/// byte copied by the CPU on the sendfile path (0.00 copies per byte, the
/// socket → device stage included).
pub fn verdict(cells: &[Cell]) -> String {
    [1 << 20, 16 << 20]
        .iter()
        .map(|&size| verdict_at(cells, size))
        .collect::<Vec<_>>()
        .join("\n")
}

fn verdict_at(cells: &[Cell], size: u64) -> String {
    let at = human_size(size);
    let find = |p: &str| cells.iter().find(|c| c.size == size && c.path == p);
    let (Some(s), Some(r)) = (find("sendfile"), find("read")) else {
        return format!("sendfile/read at {at}: not measured");
    };
    let speedup = if r.mb_per_s() > 0.0 {
        s.mb_per_s() / r.mb_per_s()
    } else {
        0.0
    };
    let fast = speedup >= TARGET_SPEEDUP;
    let zero = s.total_copies() < 0.005;
    format!(
        "sendfile/read at {at}: throughput {speedup:.2}x, CPU copies per byte {:.2} vs {:.2} \
         (target >= {TARGET_SPEEDUP}x with 0.00 copies on sendfile: {})",
        s.total_copies(),
        r.total_copies(),
        match (fast, zero) {
            (true, true) => "met",
            (false, true) => "not met: throughput",
            (true, false) => "not met: copies",
            (false, false) => "not met: throughput and copies",
        }
    )
}

/// Colors of the paths in the plot.
const COLORS: [&str; 3] = ["#4e79a7", "#f28e2b", "#59a14f"];

/// A "nice" axis maximum and tick step for values up to `max` (1, 2 or 5
/// times a power of ten per step, about 5 steps).
pub fn nice_axis(max: f64) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 {
        return (1.0, 0.2);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One grouped bar chart at vertical offset `top`: a group per file size, a
/// bar per path; `value` gives each bar's full height and `lower` an
/// optional lower segment drawn solid (the rest is drawn pale).
fn chart(
    svg: &mut String,
    top: f64,
    title: &str,
    cells: &[Cell],
    value: impl Fn(&Cell) -> f64,
    lower: Option<&dyn Fn(&Cell) -> f64>,
) {
    let (left, width, height) = (70.0, 660.0, 220.0);
    let base = top + 30.0 + height;
    let max = cells.iter().map(&value).fold(0.0, f64::max);
    let (axis_max, step) = nice_axis(max);
    let y = |v: f64| base - v / axis_max * height;
    let _ = writeln!(
        svg,
        r#"<text x="{left}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        top + 18.0,
        esc(title)
    );
    let mut t = 0.0;
    while t <= axis_max + step / 2.0 {
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" font-size="11" text-anchor="end">{4}</text>"##,
            y(t),
            left + width,
            left - 6.0,
            y(t) + 4.0,
            fmt_num(t)
        );
        t += step;
    }
    let group_w = width / FILES.len() as f64;
    let bar_w = group_w * 0.8 / PATHS.len() as f64;
    for (g, (_, size, _)) in FILES.iter().enumerate() {
        let gx = left + g as f64 * group_w + group_w * 0.1;
        for (p, path) in PATHS.iter().enumerate() {
            let Some(c) = cells.iter().find(|c| c.size == *size && c.path == *path) else {
                continue;
            };
            let x = gx + p as f64 * bar_w;
            let v = value(c);
            let color = COLORS[p];
            let solid_top = match lower {
                Some(f) => {
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="0.35"><title>{path} {}: {}</title></rect>"#,
                        y(v),
                        bar_w - 2.0,
                        base - y(v),
                        human_size(*size),
                        fmt_num(v)
                    );
                    f(c)
                }
                None => v,
            };
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{path} {}: {}</title></rect>"#,
                y(solid_top),
                bar_w - 2.0,
                base - y(solid_top),
                human_size(*size),
                fmt_num(solid_top)
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                x + (bar_w - 2.0) / 2.0,
                y(v) - 3.0,
                fmt_num(v)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            gx + group_w * 0.4,
            base + 16.0,
            human_size(*size)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{base:.1}" x2="{}" y2="{base:.1}" stroke="#333"/>"##,
        left + width
    );
}

/// The SVG plot: throughput per size and path, then copies per byte
/// (solid: path copies; pale: the socket → device copy on top).
pub fn svg(title: &str, cells: &[Cell]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="760" height="640" viewBox="0 0 760 640" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="760" height="640" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="380" y="22" font-size="16" text-anchor="middle">{}</text>"#,
        esc(title)
    );
    for (p, path) in PATHS.iter().enumerate() {
        let x = 250.0 + p as f64 * 110.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="34" width="12" height="12" fill="{}"/><text x="{}" y="45" font-size="12">{path}</text>"#,
            COLORS[p],
            x + 16.0
        );
    }
    chart(
        &mut s,
        50.0,
        "Throughput, MB/s (host side)",
        cells,
        Cell::mb_per_s,
        None,
    );
    chart(
        &mut s,
        340.0,
        "Bytes copied per byte served (solid: path copies; pale: + socket to device)",
        cells,
        Cell::total_copies,
        Some(&Cell::path_copies),
    );
    s.push_str("</svg>\n");
    s
}

/// Where the plot goes: `target/bench/paths.svg`.
pub fn svg_path() -> PathBuf {
    crate::target_dir().join("bench").join("paths.svg")
}

fn make_disk() -> Result<TempImage, Error> {
    let site = temp_path("paths-site");
    std::fs::create_dir_all(&site)
        .map_err(|e| Error::Failed(format!("{}: {e}", site.display())))?;
    for (name, size, seed) in FILES {
        let p = site.join(name.trim_start_matches('/'));
        std::fs::write(&p, pseudo_random_bytes(seed, size as usize))
            .map_err(|e| Error::Failed(format!("{}: {e}", p.display())))?;
    }
    let disk = TempImage::from_dir(&site);
    let _ = std::fs::remove_dir_all(&site);
    disk
}

/// A size × path whose measurement failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCell {
    /// File size in bytes.
    pub size: u64,
    /// The data path.
    pub path: String,
    /// What went wrong.
    pub why: String,
}

/// The table row of a failed cell.
pub fn failed_row(f: &FailedCell) -> Vec<String> {
    let mut r = vec![human_size(f.size), f.path.clone(), "failed".into()];
    r.resize(header().len(), "-".into());
    r
}

/// The `fetch` arguments without its own warm-up (done by `get` before).
fn with_warm0(args: &[String]) -> Vec<String> {
    let mut v = args.to_vec();
    v.push("warm=0".into());
    v
}

fn boot(cfg: &VmConfig) -> Result<LiveGuest, String> {
    let mut guest = LiveGuest::spawn(cfg)?;
    guest.wait_for(&format!("serve: listening on port {PORT}"), BOOT_TIMEOUT)?;
    Ok(guest)
}

/// Measures every size × path in [`ROUNDS`] rounds (the paths' order
/// rotating); a cell that fails (a guest that stops answering) is recorded,
/// skipped in later rounds, and the remaining cells get a fresh guest.
fn measure(
    ns: &Netns,
    cfg: &VmConfig,
    runs: usize,
) -> Result<Vec<Result<Cell, FailedCell>>, String> {
    let mut guest = boot(cfg)?;
    let mut cells = Vec::new();
    for (name, size, seed) in FILES {
        let mut acc: Vec<Option<Result<Cell, FailedCell>>> = vec![None; PATHS.len()];
        for round in 0..ROUNDS {
            for k in 0..PATHS.len() {
                let pi = (k + round) % PATHS.len();
                if matches!(acc[pi], Some(Err(_))) {
                    continue;
                }
                let path = PATHS[pi];
                let r = measure_once(ns, &guest, name, size, seed, path, runs, round);
                match r {
                    Ok(c) => {
                        acc[pi] = Some(Ok(match acc[pi].take() {
                            Some(Ok(a)) => a.merged(&c),
                            _ => c,
                        }));
                    }
                    Err(why) => {
                        let out = guest.output();
                        let after: Vec<&str> = out
                            .lines()
                            .skip_while(|l| !l.contains("serve: listening"))
                            .skip(1)
                            .collect();
                        let mut why = why.trim().to_string();
                        if !after.is_empty() {
                            why.push_str(&format!("; guest output:\n{}", after.join("\n")));
                        }
                        acc[pi] = Some(Err(FailedCell {
                            size,
                            path: path.to_string(),
                            why,
                        }));
                        guest.kill();
                        guest = boot(cfg)?;
                    }
                }
            }
        }
        cells.extend(acc.into_iter().flatten());
    }
    guest.kill();
    Ok(cells)
}

/// One round of one size × path: a checked warm-up fetch, then timed
/// fetches between two `STATS` requests.
#[allow(clippy::too_many_arguments)]
fn measure_once(
    ns: &Netns,
    guest: &LiveGuest,
    name: &str,
    size: u64,
    seed: u64,
    path: &str,
    runs: usize,
    round: usize,
) -> Result<Cell, String> {
    let args = [
        format!("addr={GUEST_IP}:{PORT}"),
        format!("path={name}"),
        format!("mode={path}"),
        format!("size={size}"),
        format!("seed={seed}"),
        format!("count={runs}"),
        format!("secs={CELL_SECS}"),
    ];
    let limit = Duration::from_secs(CELL_SECS);
    let step = crate::progress::Step::start(&format!(
        "{name} through {path} (round {}/{ROUNDS})",
        round + 1
    ));
    let r = run_client(ns, "get", &args, limit)
        .and_then(|_| {
            let cpu0 = process_cpu_time(guest.pid()).ok();
            let out = run_client(ns, "fetch", &with_warm0(&args), limit)?;
            let cpu1 = process_cpu_time(guest.pid()).ok();
            let mut c = parse_fetch(size, path, &out)?;
            if let (Some(a), Some(b)) = (cpu0, cpu1) {
                c.qemu_cpu_ns = Some(b.saturating_sub(a).as_nanos() as u64);
            }
            Ok(c)
        })
        .and_then(|c| {
            if c.bad > 0 {
                Err(format!(
                    "{} of {} fetches had the wrong length",
                    c.bad, c.fetches
                ))
            } else {
                Ok(c)
            }
        });
    step.finish(r.is_ok());
    r
}

/// Runs `bench paths` and prints the table, the verdict and the plot's path;
/// exits 1 when a measurement failed (after printing everything).
pub fn bench_paths(runs: usize, machine: Machine, accel: Option<Accel>) -> Result<i32, Error> {
    ensure_qemu()?;
    let accel = accel.unwrap_or_else(Accel::detect);
    let image = build_image("iotest", Profile::Release, false)?;
    let disk = make_disk()?;
    let ns = Netns::create("bench-paths")?;
    println!(
        "paths benchmark: iotest serve on {machine} over a TAP device in network namespace {} \
         (guest {GUEST_IP}), files of 4 KiB, 64 KiB, 1 MiB and 16 MiB on ext4; per size \
         {ROUNDS} rounds, each path once per round in a rotating order, up to {runs} fetches \
         or {CELL_SECS} s each after one warm-up fetch; accel {accel}",
        ns.name()
    );
    let mut cfg = VmConfig::new(&image);
    cfg.machine = machine;
    cfg.accel = accel;
    cfg.mem = "256M".parse::<MemSize>().map_err(Error::Failed)?;
    cfg.disk = Some(disk.path.clone());
    cfg.args = vec!["serve".into(), PORT.to_string()];
    ns.attach(&mut cfg);
    let results = measure(&ns, &cfg, runs).map_err(|e| Error::Failed(format!("{machine}: {e}")))?;
    let mut rows = vec![header()];
    rows.extend(results.iter().map(|r| match r {
        Ok(c) => row(c),
        Err(f) => failed_row(f),
    }));
    print!("{}", table(&rows));
    for f in results.iter().filter_map(|r| r.as_ref().err()) {
        println!("{} {}: FAILED: {}", human_size(f.size), f.path, f.why);
    }
    let cells: Vec<Cell> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .cloned()
        .collect();
    println!("{}", verdict(&cells));
    let out = svg_path();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Failed(format!("{}: {e}", dir.display())))?;
    }
    let title = format!("iotest serve data paths, {machine}, {accel}, TAP");
    std::fs::write(&out, svg(&title, &cells))
        .map_err(|e| Error::Failed(format!("{}: {e}", out.display())))?;
    println!("plot: {}", out.display());
    let failed = cells.len() < results.len();
    println!(
        "MB/s: 10^6 B/s received by the host client, connect to EOF per fetch, every length \
         checked (the warm-up fetch byte for byte); guest ns/B and busy %: non-idle guest TSC \
         cycles between two STATS requests (the kernel's idle accounting); QEMU CPU ns/B: host \
         CPU of the QEMU process over the same client run (10 ms ticks); path copies: cache_to_app + app_to_socket + \
         cache_to_socket; total adds socket_to_device (whole frames: headers and ACKs too); \
         QEMU under {accel}"
    );
    // The targets never fail the run; a measurement that failed does.
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(size: u64, path: &str, bytes: u64, ns: u64, copies: &[(&str, u64)]) -> Cell {
        Cell {
            size,
            path: path.into(),
            fetches: bytes / size,
            bytes,
            ns,
            bad: 0,
            busy_cycles: 2_000_000,
            uptime_cycles: 4_000_000,
            tsc_hz: 1_000_000_000,
            copies: copies.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            qemu_cpu_ns: None,
        }
    }

    #[test]
    fn rounds_merge_into_one_cell() {
        let a = cell(
            1 << 20,
            "read",
            100 << 20,
            1_000_000_000,
            &[("cache_to_app", 100 << 20)],
        );
        let mut b = cell(
            1 << 20,
            "read",
            50 << 20,
            1_000_000_000,
            &[("cache_to_app", 50 << 20)],
        );
        b.copies.insert("app_to_socket".into(), 7);
        let m = a.clone().merged(&b);
        assert_eq!((m.fetches, m.bytes, m.ns), (150, 150 << 20, 2_000_000_000));
        assert_eq!(m.copies["cache_to_app"], 150 << 20);
        assert_eq!(m.copies["app_to_socket"], 7);
        assert_eq!((m.busy_cycles, m.uptime_cycles), (4_000_000, 8_000_000));
        // Throughput over both rounds, not the mean of the two rates.
        assert!((m.mb_per_s() - (150u64 << 20) as f64 / 2e6).abs() < 1e-6);
        assert_eq!(m.qemu_cpu_ns, None);
        let (mut x, mut y) = (a.clone(), a);
        x.qemu_cpu_ns = Some(5);
        y.qemu_cpu_ns = Some(7);
        assert_eq!(x.merged(&y).qemu_cpu_ns, Some(12));
    }

    #[test]
    fn parses_fetch_output() {
        let out = "fetch n=10 bytes=10485760 ns=500000000 bad=0 before_reply=120\n\
                   before cache_to_app=100 app_to_socket=1000 cache_to_socket=0 socket_to_device=2000 idle_cycles=500 uptime_cycles=1000 tsc_hz=2000000000\n\
                   after cache_to_app=10485860 app_to_socket=10487880 cache_to_socket=0 socket_to_device=11000000 idle_cycles=1500 uptime_cycles=5000 tsc_hz=2000000000\n";
        let c = parse_fetch(1 << 20, "read", out).unwrap();
        assert_eq!((c.fetches, c.bytes, c.bad), (10, 10 << 20, 0));
        assert_eq!(c.copies["cache_to_app"], 10 << 20);
        assert_eq!(c.copies["app_to_socket"], 10487880 - 1000 - 120);
        assert_eq!((c.busy_cycles, c.uptime_cycles), (3000, 4000));
        assert!((c.mb_per_s() - 20.97152).abs() < 1e-6);
        assert!((c.guest_busy_pct() - 75.0).abs() < 1e-9);
        assert!((c.path_copies() - (2.0 + 1000.0 / 10485760.0)).abs() < 1e-9);
        assert!(c.total_copies() > c.path_copies());
        // 3000 cycles at 2 GHz = 1500 ns over 10 MiB.
        assert!((c.guest_ns_per_byte() - 1500.0 / 10485760.0).abs() < 1e-12);
        assert!(parse_fetch(1, "read", "fetch n=1").is_err());
        assert!(
            parse_fetch(1, "read", &out.replace("tsc_hz=2000000000\n", "\n"))
                .unwrap_err()
                .contains("tsc_hz")
        );
    }

    #[test]
    fn rows_and_verdict() {
        let r = cell(
            1 << 20,
            "read",
            100 << 20,
            1_000_000_000,
            &[
                ("cache_to_app", 100 << 20),
                ("app_to_socket", 100 << 20),
                ("socket_to_device", 103 << 20),
            ],
        );
        let s = cell(
            1 << 20,
            "sendfile",
            200 << 20,
            1_000_000_000,
            &[
                ("cache_to_socket", 200 << 20),
                ("socket_to_device", 206 << 20),
            ],
        );
        assert_eq!(
            row(&r),
            [
                "1 MiB", "read", "100", "104.9", "0.02", "50", "-", "2.00", "3.03"
            ]
        );
        assert_eq!(row(&s).len(), header().len());
        let f = FailedCell {
            size: 4096,
            path: "mmap".into(),
            why: "x".into(),
        };
        assert_eq!(
            failed_row(&f),
            ["4 KiB", "mmap", "failed", "-", "-", "-", "-", "-", "-"]
        );
        assert_eq!(
            verdict(&[r.clone(), s.clone()]),
            "sendfile/read at 1 MiB: throughput 2.00x, CPU copies per byte 2.03 vs 3.03 \
             (target >= 1.5x with 0.00 copies on sendfile: not met: copies)\n\
             sendfile/read at 16 MiB: not measured"
        );
        let zero = cell(1 << 20, "sendfile", 200 << 20, 1_000_000_000, &[]);
        assert!(verdict(&[r.clone(), zero.clone()]).starts_with(
            "sendfile/read at 1 MiB: throughput 2.00x, CPU copies per byte 0.00 vs 3.03 \
             (target >= 1.5x with 0.00 copies on sendfile: met)"
        ));
        let slow = Cell {
            ns: 1_700_000_000,
            ..zero
        };
        assert!(
            verdict(&[r.clone(), slow])
                .lines()
                .next()
                .unwrap()
                .ends_with("not met: throughput)")
        );
        assert!(verdict(&[r]).starts_with("sendfile/read at 1 MiB: not measured"));
        assert_eq!(human_size(4096), "4 KiB");
        assert_eq!(human_size(16 << 20), "16 MiB");
    }

    #[test]
    fn axes_are_nice() {
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        assert_eq!(nice_axis(47.0), (50.0, 10.0));
        assert_eq!(nice_axis(3.03), (4.0, 1.0));
        assert_eq!(nice_axis(100.0), (100.0, 20.0));
        assert_eq!(nice_axis(0.9), (1.0, 0.2));
        assert_eq!(fmt_num(2.0), "2");
        assert_eq!(fmt_num(0.123), "0.12");
        assert_eq!(fmt_num(52.34), "52.3");
        assert_eq!(fmt_num(523.4), "523");
    }

    #[test]
    fn svg_has_every_bar() {
        let mut cells = Vec::new();
        for (_, size, _) in FILES {
            for path in PATHS {
                cells.push(cell(
                    size,
                    path,
                    size * 10,
                    1_000_000,
                    &[
                        ("app_to_socket", size * 10),
                        ("socket_to_device", size * 11),
                    ],
                ));
            }
        }
        let s = svg("t & <x>", &cells);
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(s.ends_with("</svg>\n"));
        assert!(s.contains("t &amp; &lt;x&gt;"));
        // 12 throughput bars, 12 × 2 copy bar segments, 3 legend swatches,
        // the background.
        assert_eq!(s.matches("<rect").count(), 12 + 24 + 3 + 1);
        for size in ["4 KiB", "64 KiB", "1 MiB", "16 MiB"] {
            assert!(s.contains(&format!(">{size}</text>")), "{size}");
        }
        assert!(!s.contains("NaN") && !s.contains("inf"));
    }
}
