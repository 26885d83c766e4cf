//! `cargo uk bench tls`: HTTPS from our `httpd` (the TLS flavour: rustls
//! 0.23 + ring) against Linux + nginx + OpenSSL ([`crate::nginxvm`]) in the
//! same QEMU: the same machine type, accelerator, CPU, one vCPU, memory and
//! TAP link, the same ECDSA P-256 certificate ([`make_certs`], made here
//! with `rcgen`), the same TLS 1.3 cipher suite (TLS_AES_128_GCM_SHA256,
//! forced by the clients).
//!
//! Both guests run at once, each in a network namespace of its own
//! ([`crate::netns`], both with the guest at [`GUEST_IP`]), and the
//! measurements alternate between them: every round measures each metric
//! on both systems, the first system of a round alternating (ABBA), so that
//! a noisy host (2 shared cores) weighs on both alike. The idle guest only
//! waits. Per system and round:
//! - full TLS 1.3 handshakes per second with ECDHE P-256 and with X25519:
//!   the `tls-hs` load generator of `uk __netclient` ([`crate::tlsclient`]),
//!   `--hs-clients` ([`HS_CLIENTS`]) loops of new connection, handshake (no resumption),
//!   `GET /1k.bin` with `Connection: close`, response checked; only checked
//!   exchanges count;
//! - 1 KiB requests/s over kept-alive TLS and 16 MiB MB/s: the `tls-ka`
//!   load generator (N connections, respectively [`BULK_CONNS`], opened and
//!   warmed before the clock starts, so the figure has no handshake in it;
//!   the same client settings).
//!
//! Each measurement has a 1 s warm-up; after each, an HTTPS probe must still
//! get a 200. A guest that stalls fails its remaining cells and the run
//! (exit 1, with its console tail, after everything is printed). The
//! negotiated version, suite and group of every measurement are printed.
//! The report: the medians, the ratio of the medians and the range of the
//! per-round ratios, against the targets (handshakes/s ≥ nginx, bulk MB/s ≥
//! nginx; a missed target never fails the run), and the stripped image
//! sizes of httpd with and without TLS.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::Error;
use crate::bench::{LiveGuest, table};
use crate::build::{Flavor, Profile, build_image, build_image_flavor};
use crate::comparebench::{BENCH_MEM, System, median, met, round_order, summarize, verdict};
use crate::httpbench::{console_tail, fmt_latency, guest_max_conns};
use crate::image::{TempImage, pseudo_random_bytes, temp_path};
use crate::netbench::run_client;
use crate::netns::{GUEST_IP, Netns};
use crate::nginxvm::{self, Cpio};
use crate::qemu::{Accel, Machine, VmConfig, ensure_qemu, is_root};
use crate::tlsclient::{Certs, Group, HsResult, KaResult, make_certs, parse_hs, parse_ka};

/// The files served: URL path and size.
pub const TLS_FILES: [(&str, usize); 2] = [("/1k.bin", 1 << 10), ("/16m.bin", 16 << 20)];
/// The handshake measurement's concurrent clients by default: enough to
/// keep either server busy on a loaded 2-core host (with 8, httpd idled a
/// quarter of the time).
pub const HS_CLIENTS: u32 = 32;
/// At most this many handshakes per measurement.
pub const HS_MAX: u64 = 200_000;
/// The connections of the 16 MiB measurement.
pub const BULK_CONNS: u32 = 8;
/// The cipher suite the clients force.
pub const SUITE: &str = "TLS_AES_128_GCM_SHA256";
/// Where the certificate and key are in both guests.
pub const UK_CERT: &str = "/tls/cert.pem";
/// The key on the unikernel's site disk.
pub const UK_KEY: &str = "/tls/key.pem";

/// nginx's HTTPS server, added through an initramfs overlay: the same
/// document root, the benchmark's certificate, TLS 1.3 and 1.2, no session
/// cache and no tickets (the clients never resume, and httpd issues none).
pub const NGINX_TLS_CONF: &str = "\
server {
    listen 443 ssl default_server backlog=511;
    root /www;
    ssl_certificate /etc/nginx/tls/cert.pem;
    ssl_certificate_key /etc/nginx/tls/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
}
";

/// The arguments of `bench tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsArgs {
    /// Seconds per measurement.
    pub secs: u64,
    /// The kept-alive 1 KiB measurement's connections.
    pub conns: u32,
    /// Rounds (each measures every metric on both systems).
    pub rounds: u32,
    /// Concurrent clients of the handshake measurement.
    pub hs_clients: u32,
    /// The machine both guests run on.
    pub machine: Machine,
    /// Forced accelerator.
    pub accel: Option<Accel>,
}

impl Default for TlsArgs {
    fn default() -> Self {
        TlsArgs {
            secs: 5,
            conns: 64,
            rounds: 3,
            hs_clients: HS_CLIENTS,
            machine: Machine::Microvm,
            accel: None,
        }
    }
}

/// What one cell measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Full handshakes per second with a key exchange group.
    Handshakes(Group),
    /// 1 KiB requests per second over kept-alive connections.
    Requests1k,
    /// 16 MiB responses: MB/s.
    Bulk16m,
}

impl Metric {
    /// All, in table order.
    pub const ALL: [Metric; 4] = [
        Metric::Handshakes(Group::P256),
        Metric::Handshakes(Group::X25519),
        Metric::Requests1k,
        Metric::Bulk16m,
    ];

    /// The row label.
    pub fn label(self, args: &TlsArgs) -> String {
        match self {
            Metric::Handshakes(g) => {
                format!(
                    "full handshakes/s, {} ({} clients)",
                    g.label(),
                    args.hs_clients
                )
            }
            Metric::Requests1k => format!("1 KiB requests/s, keep-alive ({} conns)", args.conns),
            Metric::Bulk16m => format!("16 MiB MB/s, keep-alive ({BULK_CONNS} conns)"),
        }
    }

    /// The factor of nginx's figure to reach, if this metric has a target.
    pub fn target(self) -> Option<f64> {
        match self {
            Metric::Handshakes(_) | Metric::Bulk16m => Some(1.0),
            Metric::Requests1k => None,
        }
    }
}

/// The `sh` script that fetches `https://GUEST_IP/1k.bin` with curl until
/// it gets a 200: at most `tries` attempts, 100 ms apart, each bounded by
/// `--max-time 5` (the certificate is not checked: the probe only asks
/// whether the server answers).
pub fn https_probe_script(tries: u32) -> String {
    format!(
        "i=0; while [ $i -lt {tries} ]; do \
         c=$(curl -sk -o /dev/null -w '%{{http_code}}' --connect-timeout 2 --max-time 5 \
         https://{GUEST_IP}/1k.bin); [ \"$c\" = 200 ] && exit 0; i=$((i+1)); sleep 0.1; done; \
         echo \"last status: $c\" >&2; exit 1"
    )
}

/// A file deleted on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn write(what: &str, ext: &str, data: &[u8]) -> Result<TempFile, Error> {
        let p = temp_path(what).with_extension(ext);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::Failed(format!("{}: {e}", d.display())))?;
        }
        std::fs::write(&p, data).map_err(|e| Error::Failed(format!("{}: {e}", p.display())))?;
        Ok(TempFile(p))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The unikernel's site disk: the files under `/www`, the certificate and
/// key under `/tls`.
fn uk_disk(certs: &Certs) -> Result<TempImage, Error> {
    let dir = temp_path("tls-site");
    let fail = |e: std::io::Error| Error::Failed(format!("{}: {e}", dir.display()));
    let made = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir.join("www"))?;
        std::fs::create_dir_all(dir.join("tls"))?;
        for (i, (name, size)) in TLS_FILES.iter().enumerate() {
            let p = dir.join("www").join(name.trim_start_matches('/'));
            std::fs::write(p, pseudo_random_bytes(11 + i as u64, *size))?;
        }
        std::fs::write(dir.join("tls/cert.pem"), &certs.cert_pem)?;
        std::fs::write(dir.join("tls/key.pem"), &certs.key_pem)
    })();
    let disk = made.map_err(fail).and_then(|()| TempImage::from_dir(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    disk
}

/// The initramfs overlay for nginx: the certificate, the key and
/// [`NGINX_TLS_CONF`].
pub fn nginx_overlay(certs: &Certs) -> Vec<u8> {
    let mut c = Cpio::new();
    c.dir("etc/nginx/tls");
    c.file("etc/nginx/tls/cert.pem", 0o644, certs.cert_pem.as_bytes());
    c.file("etc/nginx/tls/key.pem", 0o600, certs.key_pem.as_bytes());
    c.file(
        "etc/nginx/conf.d/tls.conf",
        0o644,
        NGINX_TLS_CONF.as_bytes(),
    );
    c.finish()
}

/// One running system (the guest is declared first: it is dropped, so
/// killed, before its namespace is deleted).
struct Live {
    guest: LiveGuest,
    sys: System,
    ns: Netns,
    /// Why it stopped being measured.
    stalled: Option<String>,
    hangs: u32,
}

struct Setup {
    machine: Machine,
    accel: Accel,
    uk_image: PathBuf,
    uk_disk: TempImage,
    kernel: PathBuf,
    initrd: TempFile,
    conns: u32,
    tsc_khz: Option<u64>,
}

impl Setup {
    fn spawn(&self, ns: &Netns, sys: System) -> Result<LiveGuest, String> {
        match sys {
            System::Uk => {
                let mut cfg = VmConfig::new(&self.uk_image);
                cfg.machine = self.machine;
                cfg.accel = self.accel;
                cfg.mem = BENCH_MEM;
                cfg.disk = Some(self.uk_disk.path.clone());
                ns.attach(&mut cfg);
                cfg.args = [
                    "--root",
                    "/www",
                    "--no-access-log",
                    "--max-conns",
                    &guest_max_conns(self.conns).to_string(),
                    "--tls-cert",
                    UK_CERT,
                    "--tls-key",
                    UK_KEY,
                ]
                .map(String::from)
                .to_vec();
                LiveGuest::spawn(&cfg)
            }
            System::Nginx => {
                let mut cfg = VmConfig::new(&self.kernel);
                cfg.machine = self.machine;
                cfg.accel = self.accel;
                cfg.mem = BENCH_MEM;
                ns.attach(&mut cfg);
                LiveGuest::spawn_command(nginxvm::linux_command(&cfg, &self.initrd.0, self.tsc_khz))
            }
        }
    }

    /// Boots `sys` in a namespace of its own and waits until it serves
    /// HTTPS; a boot that hangs without its marker is retried once.
    fn boot(&self, sys: System) -> Result<Live, String> {
        let tag = match sys {
            System::Uk => "tls-uk",
            System::Nginx => "tls-nginx",
        };
        let ns = Netns::create(tag).map_err(|e| e.message())?;
        let mut hangs = 0;
        let mut guest = self.spawn(&ns, sys)?;
        loop {
            match guest.wait_for(sys.ready(), sys.boot_timeout()) {
                Ok(_) => break,
                Err(e) if hangs == 0 && e.starts_with("no '") => {
                    hangs += 1;
                    eprintln!(
                        "uk: {}: no '{}' line after {:?}; booting again",
                        sys.label(),
                        sys.ready(),
                        sys.boot_timeout()
                    );
                    guest.kill();
                    guest = self.spawn(&ns, sys)?;
                }
                Err(e) => return Err(e),
            }
        }
        let out = ns
            .command("sh", ["-c", &https_probe_script(100)])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run curl in the namespace: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "no HTTPS 200 for /1k.bin after the '{}' line: {}\n--- guest output ---\n{}",
                sys.ready(),
                String::from_utf8_lossy(&out.stderr).trim(),
                console_tail(&guest.output(), 40)
            ));
        }
        Ok(Live {
            guest,
            sys,
            ns,
            stalled: None,
            hangs,
        })
    }
}

/// A measured cell.
#[derive(Debug, Clone)]
enum Cell {
    Hs(HsResult),
    Ka(KaResult),
}

impl Cell {
    /// The figure `metric` reports: handshakes/s, requests/s or MB/s.
    fn value(&self, metric: Metric) -> f64 {
        match (self, metric) {
            (Cell::Hs(r), _) => r.per_sec(),
            (Cell::Ka(r), Metric::Bulk16m) => r.mb_per_sec(),
            (Cell::Ka(r), _) => r.per_sec(),
        }
    }

    fn p50(&self) -> Duration {
        match self {
            Cell::Hs(r) => r.p50,
            Cell::Ka(r) => r.p50,
        }
    }

    fn negotiated(&self) -> &crate::tlsclient::Negotiated {
        match self {
            Cell::Hs(r) => &r.negotiated,
            Cell::Ka(r) => &r.negotiated,
        }
    }
}

/// After a measurement: the guest must still answer over HTTPS (3 tries).
fn probe(ns: &Netns) -> Result<(), String> {
    let out = ns
        .command("sh", ["-c", &https_probe_script(3)])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run curl in the namespace: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "the guest no longer answers: 3 HTTPS probes of /1k.bin failed ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

struct Files {
    ca: TempFile,
}

/// Measures `metric` on `live` (1 s warm-up, then `secs`), then probes.
fn measure(live: &Live, files: &Files, metric: Metric, args: &TlsArgs) -> Result<Cell, String> {
    let (secs, conns) = (args.secs, args.conns);
    let common = |g: Group, secs: u64| {
        vec![
            format!("addr={GUEST_IP}:443"),
            format!("ca={}", files.ca.0.display()),
            format!("group={}", g.arg()),
            format!("secs={secs}"),
        ]
    };
    let cell = match metric {
        Metric::Handshakes(g) => {
            let args = |secs: u64| {
                let mut a = common(g, secs);
                a.extend([
                    format!("workers={}", args.hs_clients),
                    format!("max={HS_MAX}"),
                    format!("path={}", TLS_FILES[0].0),
                ]);
                a
            };
            run_client(&live.ns, "tls-hs", &args(1), Duration::from_secs(1))?;
            let out = run_client(&live.ns, "tls-hs", &args(secs), Duration::from_secs(secs))?;
            let r = parse_hs(&out).ok_or_else(|| format!("cannot parse tls-hs output: {out}"))?;
            if let Some(why) = r.stall_reason() {
                return Err(why);
            }
            Cell::Hs(r)
        }
        Metric::Requests1k | Metric::Bulk16m => {
            let (path, conns) = if metric == Metric::Requests1k {
                (TLS_FILES[0].0, conns)
            } else {
                (TLS_FILES[1].0, BULK_CONNS)
            };
            // Kept-alive transfers: the group does not matter; X25519.
            let args = |secs: u64| {
                let mut a = common(Group::X25519, secs);
                a.extend([
                    format!("conns={conns}"),
                    format!("path={path}"),
                    format!("warm={}", TLS_FILES[0].0),
                ]);
                a
            };
            run_client(&live.ns, "tls-ka", &args(1), Duration::from_secs(1))?;
            let out = run_client(&live.ns, "tls-ka", &args(secs), Duration::from_secs(secs))?;
            let r = parse_ka(&out).ok_or_else(|| format!("cannot parse tls-ka output: {out}"))?;
            if let Some(why) = r.stall_reason() {
                return Err(why);
            }
            Cell::Ka(r)
        }
    };
    probe(&live.ns)?;
    Ok(cell)
}

/// A number for the tables.
fn fmt_value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::Bulk16m => format!("{v:.1}"),
        _ => format!("{v:.0}"),
    }
}

/// Runs the benchmark and prints the tables.
pub fn bench_tls(args: &TlsArgs) -> Result<i32, Error> {
    ensure_qemu()?;
    if !is_root() {
        return Err(Error::Failed(
            "bench tls needs root (network namespaces and TAP devices): run it as root".into(),
        ));
    }
    if !crate::build::have_c_compiler() {
        return Err(Error::Failed(
            "bench tls needs a C compiler (gcc) to build ring for the TLS image".into(),
        ));
    }
    nginxvm::ensure_tool("curl", "curl")?;
    let accel = args.accel.unwrap_or_else(Accel::detect);
    let vm = nginxvm::build()?;
    let plain = build_image("httpd", Profile::Release, false)?;
    let tls = build_image_flavor("httpd", Profile::Release, Flavor::Tls, false)?;
    let (plain_size, tls_size) = (
        crate::elf::stripped_size(&plain)?,
        crate::elf::stripped_size(&tls)?,
    );
    let certs = make_certs(IpAddr::V4(
        GUEST_IP.parse::<Ipv4Addr>().expect("an address"),
    ))
    .map_err(Error::Failed)?;
    let initrd = TempFile::write("tls-initrd", "cpio", &[])?;
    nginxvm::overlay_initrd(&vm.initrd, &nginx_overlay(&certs), &initrd.0)?;
    let setup = Setup {
        machine: args.machine,
        accel,
        uk_image: tls,
        uk_disk: uk_disk(&certs)?,
        kernel: vm.kernel.clone(),
        initrd,
        conns: args.conns,
        tsc_khz: (accel == Accel::Tcg).then(nginxvm::host_tsc_khz).flatten(),
    };
    let files = Files {
        ca: TempFile::write("tls-ca", "pem", certs.ca_pem.as_bytes())?,
    };
    let deb = |prefix: &str| vm.deb(prefix);
    println!(
        "tls: uk httpd (rustls 0.23 + ring, no_std) vs Linux + nginx + OpenSSL ({}, {}, {})",
        deb("linux-image-"),
        deb("nginx_"),
        deb("libssl3_")
    );
    println!(
        "both: {} ({} for Linux), accel {accel}, 1 vCPU, {BENCH_MEM}, virtio-net on tap0, each \
         in a namespace of its own, both running; rounds: {}, alternating which goes first; {} s \
         per measurement after a 1 s warm-up",
        setup.machine,
        nginxvm::linux_machine_arg(setup.machine),
        args.rounds,
        args.secs
    );
    println!(
        "certificate: ECDSA P-256 (SHA-256) for localhost and {GUEST_IP}, signed by a CA made \
         for this run; clients: TLS 1.3 only, {SUITE} only, no session resumption"
    );

    let mut lives: Vec<Option<Live>> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for sys in System::ALL {
        let step = crate::progress::Step::start(&format!("{}: booting ({BENCH_MEM})", sys.label()));
        let r = setup.boot(sys);
        step.finish(r.is_ok());
        match r {
            Ok(l) => lives.push(Some(l)),
            Err(e) => {
                failed.push(format!("{}: boot: {e}", sys.label()));
                lives.push(None);
            }
        }
    }

    let rounds = args.rounds as usize;
    // cells[metric][system][round]
    let mut cells: Vec<[Vec<Option<Cell>>; 2]> = Metric::ALL
        .iter()
        .map(|_| [vec![None; rounds], vec![None; rounds]])
        .collect();
    let total = rounds * Metric::ALL.len() * 2;
    let mut k = 0;
    for round in 0..args.rounds {
        for (m, metric) in Metric::ALL.into_iter().enumerate() {
            for sys in round_order(round) {
                k += 1;
                let s = sys as usize;
                let Some(live) = lives[s].as_mut() else {
                    continue;
                };
                if live.stalled.is_some() {
                    continue;
                }
                let step = crate::progress::Step::start(&format!(
                    "[{k}/{total}] round {}: {}: {} ({} s + 1 s warm-up)",
                    round + 1,
                    sys.label(),
                    metric.label(args),
                    args.secs
                ));
                let r = measure(live, &files, metric, args);
                step.finish(r.is_ok());
                match r {
                    Ok(c) => cells[m][s][round as usize] = Some(c),
                    Err(e) => {
                        failed.push(format!(
                            "{} {} (round {}): {e}\n--- guest console (last lines) ---\n{}",
                            live.sys.label(),
                            metric.label(args),
                            round + 1,
                            console_tail(&live.guest.output(), 40)
                        ));
                        live.stalled = Some(e);
                    }
                }
            }
        }
    }
    let hangs: Vec<(System, u32)> = lives.iter().flatten().map(|l| (l.sys, l.hangs)).collect();
    // Guests first, then their namespaces.
    for l in lives.iter_mut().flatten() {
        l.guest.kill();
    }
    drop(lives);

    println!();
    let mut rows = vec![{
        let mut h = vec!["metric".to_string(), "system".into()];
        h.extend((1..=rounds).map(|r| format!("round {r}")));
        h.push("median".into());
        h.push("p50 latency (last round)".into());
        h
    }];
    for (m, metric) in Metric::ALL.into_iter().enumerate() {
        for sys in System::ALL {
            let s = sys as usize;
            let vals: Vec<Option<f64>> = cells[m][s]
                .iter()
                .map(|c| c.as_ref().map(|c| c.value(metric)))
                .collect();
            let mut row = vec![
                if s == 0 {
                    metric.label(args)
                } else {
                    String::new()
                },
                sys.label().into(),
            ];
            row.extend(
                vals.iter()
                    .map(|v| v.map_or_else(|| "-".into(), |v| fmt_value(metric, v))),
            );
            let flat: Vec<f64> = vals.iter().flatten().copied().collect();
            row.push(median(&flat).map_or_else(|| "-".into(), |v| fmt_value(metric, v)));
            row.push(
                cells[m][s]
                    .iter()
                    .rev()
                    .flatten()
                    .next()
                    .map_or_else(|| "-".into(), |c| fmt_latency(c.p50())),
            );
            rows.push(row);
        }
    }
    print!("{}", table(&rows));

    println!();
    let mut rows = vec![
        [
            "median",
            System::Uk.label(),
            System::Nginx.label(),
            "ratio",
            "ratio per round",
            "target",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut verdicts = Vec::new();
    for (m, metric) in Metric::ALL.into_iter().enumerate() {
        let vals = |s: usize| -> Vec<Option<f64>> {
            cells[m][s]
                .iter()
                .map(|c| c.as_ref().map(|c| c.value(metric)))
                .collect()
        };
        let sum = summarize(&vals(0), &vals(1));
        let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| fmt_value(metric, v));
        let target = match (metric.target(), sum.uk, sum.nginx) {
            (Some(t), Some(u), Some(n)) => {
                let (ok, ratio) = verdict(u, n, t);
                verdicts.push(format!(
                    "  {} >= {t}x nginx: {} / {} = {ratio:.2}x: {}",
                    metric.label(args),
                    fmt_value(metric, u),
                    fmt_value(metric, n),
                    met(ok)
                ));
                format!(">= {t}x: {}", met(ok))
            }
            (Some(t), _, _) => {
                verdicts.push(format!(
                    "  {} >= {t}x nginx: not measured",
                    metric.label(args)
                ));
                format!(">= {t}x: not measured")
            }
            (None, ..) => "none".into(),
        };
        rows.push(vec![
            metric.label(args),
            f(sum.uk),
            f(sum.nginx),
            sum.ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
            sum.round_ratios
                .map_or_else(|| "-".into(), |(lo, hi)| format!("{lo:.2}x - {hi:.2}x")),
            target,
        ]);
    }
    print!("{}", table(&rows));

    println!();
    println!("negotiated (each measurement's clients, last round):");
    for sys in System::ALL {
        let s = sys as usize;
        for (m, metric) in Metric::ALL.into_iter().enumerate() {
            let n = cells[m][s]
                .iter()
                .rev()
                .flatten()
                .next()
                .map(Cell::negotiated);
            println!(
                "  {} / {}: {}",
                sys.label(),
                metric.label(args),
                n.map_or_else(
                    || "not measured".into(),
                    |n| format!("{} {} {}", n.version, n.suite, n.group)
                )
            );
        }
    }
    println!();
    println!(
        "httpd image, stripped: {plain_size} bytes without TLS, {tls_size} bytes with TLS \
         (+{} bytes, {:.2}x)",
        tls_size.saturating_sub(plain_size),
        tls_size as f64 / plain_size.max(1) as f64
    );
    println!();
    println!("targets (a missed target does not fail the run):");
    for v in verdicts {
        println!("{v}");
    }
    println!(
        "notes: MB/s = response body bytes (10^6) per second, a response cut by the end of the \
         measurement counting what arrived; a handshake counts only when its GET came back \
         complete with a 200; kept-alive connections are opened before the clock starts; \
         p50 = one request's time (for handshakes: connect to the checked response); under \
         {accel} the guest's CPU is the limit"
    );
    if let Some(k) = setup.tsc_khz {
        println!("Linux got tsc_early_khz={k} (see bench compare)");
    }
    Ok(crate::comparebench::report_hangs_and_failures(
        hangs, &failed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics() {
        assert_eq!(Metric::ALL.len(), 4);
        assert_eq!(Metric::Handshakes(Group::P256).target(), Some(1.0));
        assert_eq!(Metric::Bulk16m.target(), Some(1.0));
        assert_eq!(Metric::Requests1k.target(), None);
        let a = TlsArgs::default();
        assert!(Metric::Requests1k.label(&a).contains("64 conns"));
        let hs = Metric::Handshakes(Group::X25519).label(&a);
        assert!(hs.contains("X25519") && hs.contains("(32 clients)"));
    }

    #[test]
    fn probe_is_bounded() {
        let p = https_probe_script(3);
        assert!(p.contains("[ $i -lt 3 ]") && p.contains("--max-time 5"));
        assert!(p.contains("https://10.77.0.2/1k.bin"));
    }

    #[test]
    fn cells_pick_their_unit() {
        let r = parse_ka(
            "tls-ka conns=8 requests=10 bytes=20000000 ns=2000000000 fails=0 p50_us=7 \
             p99_us=9 version=TLSv1_3 suite=TLS13_AES_128_GCM_SHA256 group=X25519",
        )
        .unwrap();
        let c = Cell::Ka(r);
        assert_eq!(c.value(Metric::Bulk16m), 10.0);
        assert_eq!(c.value(Metric::Requests1k), 5.0);
        assert_eq!(c.p50(), Duration::from_micros(7));
        assert_eq!(c.negotiated().group, "X25519");
    }

    #[test]
    fn nginx_overlay_holds_the_server() {
        let certs = make_certs(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2))).unwrap();
        assert!(certs.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let o = nginx_overlay(&certs);
        assert!(o.starts_with(b"070701"));
        assert_eq!(o.len() % 4, 0);
        for name in [
            &b"etc/nginx/tls/cert.pem"[..],
            b"etc/nginx/tls/key.pem",
            b"etc/nginx/conf.d/tls.conf",
            b"listen 443 ssl",
        ] {
            assert!(o.windows(name.len()).any(|w| w == name));
        }
        assert!(nginxvm::NGINX_CONF.contains("include /etc/nginx/conf.d/*.conf;"));
        let dir = temp_path("tls-overlay-test");
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("base.cpio");
        std::fs::write(&base, b"070701ab").unwrap();
        let out = dir.join("out.cpio");
        nginxvm::overlay_initrd(&base, &o, &out).unwrap();
        let all = std::fs::read(&out).unwrap();
        assert_eq!(&all[..8], b"070701ab");
        assert_eq!(&all[8..], &o[..]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
