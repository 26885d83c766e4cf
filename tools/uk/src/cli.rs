//! Argument parsing and the `cargo uk` commands.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::Error;
use crate::bench;
use crate::build::{Profile, build_image, cargo};
use crate::qemu::{
    Accel, Exit, Machine, MemSize, PortFwd, VmConfig, ensure_qemu, map_exit_status, qemu_command,
    render_command,
};
use crate::workspace::{check_app, default_app, root};

/// The usage text.
pub const USAGE: &str = "\
cargo uk: build and boot unikernel apps under QEMU

USAGE:
    cargo uk build APP [--debug]
    cargo uk image [APP] --site DIR -o OUT [--format ext4|elf|raw|qcow2|gce]
    cargo uk run [APP] [OPTIONS] [-- APP ARGS...]
    cargo uk test [CARGO TEST ARGS...]
    cargo uk bench boot [--runs N] [--kvm|--tcg]
    cargo uk bench sched [--runs N] [--kvm|--tcg]
    cargo uk bench idle [--secs S] [--kvm|--tcg]
    cargo uk bench fs [--kvm|--tcg]
    cargo uk bench net [--secs S] [--kvm|--tcg]
    cargo uk bench paths [--runs N] [--machine microvm|q35] [--kvm|--tcg]
    cargo uk bench epoll [--runs N] [--machine microvm|q35] [--kvm|--tcg]
    cargo uk bench http [--secs S] [--conns N] [--kvm|--tcg]
    cargo uk bench compare [--secs S] [--conns N] [--machine microvm|q35] [--no-mem] [--kvm|--tcg]
    cargo uk help

COMMANDS:
    build    Build apps/APP for x86_64-unknown-none; print the image path and size
    image    Pack the folder DIR into a disk image OUT for APP (default: httpd;
             ext4 via mkfs.ext4 -d, sized from the folder with headroom, with
             an empty /tmp for the guest's tmpfs); the kernel mounts it
             read-only at /. Also builds APP and prints how to boot the pair.
             --format elf: the PVH kernel at OUT and its ext4 disk at OUT.ext4
             (QEMU -kernel, Firecracker); raw: a GPT disk that BIOS and UEFI
             firmware boot (GRUB + Multiboot2, ext4 root partition uk-root);
             qcow2: the same as qcow2; gce: disk.raw in a .tar.gz for
             'gcloud compute images create --source-uri'
    run      Build and boot APP (default: httpd if apps/httpd exists, else hello);
             exit with the app's status. httpd gets 127.0.0.1:8080 -> port 80
             and, without --site, the built-in demo site (apps/httpd/site)
    test     Ensure QEMU, run the host tests (cargo test), then the QEMU tests
             (cargo test --package uk-tests), both with --no-fail-fast;
             extra args go to both
    bench    boot: boot hello N times (default 10) on microvm and q35 and print
             the time to the 'uk: main' marker and to QEMU's exit
             and, on q35, the raw disk image (cargo uk image --format raw)
             through SeaBIOS and through OVMF (UEFI) with GRUB, no -kernel
             sched: boot 'selftest bench-sched' N times (default 5) per machine
             and print median/min/max of the guest-measured context-switch
             and spawn+join costs
             idle: boot 'selftest idle S' (default 10 s) per machine and print
             QEMU's host CPU use while the guest sleeps (target < 2% of a core)
             fs: boot 'fstest bench' per machine with a disk of 4 KiB, 1 MiB
             and 16 MiB files and print guest-measured cold- and warm-cache
             read throughput
             net: boot echo per machine on a TAP device in a network
             namespace of its own (root; user networking is about ten times
             slower and not for benchmarks) and print echo MB/s with 1 and 4
             connections and connections/s with 1 and 4 clients, S seconds
             (5) each
             paths: boot 'iotest serve' on TAP (root) with files of 4 KiB,
             64 KiB, 1 MiB and 16 MiB; per size and path (read, mmap,
             sendfile) print MB/s, guest CPU ns per byte and bytes copied per
             byte served (up to N fetches (200) or 3 s each, after a warm-up
             fetch); plot in target/bench/paths.svg; machine microvm unless
             --machine
             epoll: boot 'iotest epoll-bench' N times (3) and print the median
             ns per epoll_wait with 10, 1,000 and 10,000 registered and the
             10,000/10 ratio (target <= 1.2)
             http: boot httpd on a TAP device in a network namespace of its
             own (root) and run wrk there (installed with apt-get if missing)
             for S seconds (10) with N connections (16) per file: requests/s
             for 1 KiB, MB/s for 1 MiB and 16 MiB, p50/p99 latency
             compare: the same as http for httpd and for Linux + nginx
             (Debian packages, built into target/nginx-vm) in the same QEMU,
             side by side, plus QEMU start -> first HTTP 200 and the
             smallest -m (256M down to 4M) that serves /1k.bin; prints
             the ratios against the targets (never fails for a missed one)
    help     Print this text (also -h, --help)

RUN OPTIONS:
    --machine microvm|q35   QEMU machine (default: microvm)
    --mem SIZE              guest memory: 512K, 4M, 64M, 1G; a plain number is MiB
                            (default: 64M)
    --fwd HOST:GUEST        forward TCP 127.0.0.1:HOST to guest port GUEST
                            (repeatable; adds a virtio-net device)
    --kvm, --tcg            force the accelerator (default: KVM if /proc/cpuinfo
                            has vmx/svm and /dev/kvm is usable, else TCG)
    --append 'k=v ...'      kernel options
    --site DIR              pack DIR into a temporary ext4 image and attach it as
                            the guest's root file system (virtio-blk, read-only)
    --debug                 build with the dev profile
    -v, --verbose           print the QEMU command line
    -- ARGS...              arguments for the app

EXIT STATUS of run:
    the app's status (101 = kernel panic, 102 = fatal CPU exception); when QEMU
    itself fails, its own (even) exit code; 2 for usage errors.
";

/// Options of `cargo uk run`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunArgs {
    /// The app; `None` means [`default_app`].
    pub app: Option<String>,
    /// The machine type.
    pub machine: Machine,
    /// Guest memory.
    pub mem: MemSize,
    /// Host forwards.
    pub fwds: Vec<PortFwd>,
    /// Forced accelerator; `None` means [`Accel::detect`].
    pub accel: Option<Accel>,
    /// Print the QEMU command line.
    pub verbose: bool,
    /// Kernel options.
    pub append: String,
    /// Build with the dev profile.
    pub debug: bool,
    /// App arguments.
    pub args: Vec<String>,
    /// A folder to pack into a temporary disk image (`--site`).
    pub site: Option<std::path::PathBuf>,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// Print the usage text.
    Help,
    /// `build APP [--debug]`
    Build {
        /// The app.
        app: String,
        /// The profile.
        profile: Profile,
    },
    /// `run ...`
    Run(RunArgs),
    /// `test ...`
    Test {
        /// Passed to both `cargo test` runs.
        extra: Vec<String>,
    },
    /// `bench boot ...`
    BenchBoot {
        /// Boots per machine.
        runs: usize,
        /// Forced accelerator.
        accel: Option<Accel>,
    },
    /// `bench sched ...`
    BenchSched {
        /// Boots per machine.
        runs: usize,
        /// Forced accelerator.
        accel: Option<Accel>,
    },
    /// `image APP --site DIR -o OUT [--format F]`
    Image {
        /// The app the image is for.
        app: String,
        /// The folder to pack.
        site: std::path::PathBuf,
        /// The image file to write.
        out: std::path::PathBuf,
        /// The image format.
        format: crate::image::ImageFormat,
    },
    /// `bench fs ...`
    BenchFs {
        /// Forced accelerator.
        accel: Option<Accel>,
    },
    /// `bench http ...`
    BenchHttp {
        /// wrk's duration per file, in seconds.
        secs: u64,
        /// wrk's connections.
        conns: u32,
        /// Forced accelerator.
        accel: Option<Accel>,
    },
    /// `bench compare ...`
    BenchCompare(crate::comparebench::CompareArgs),
    /// `bench net ...`
    BenchNet {
        /// Seconds per measurement.
        secs: u64,
        /// Forced accelerator.
        accel: Option<Accel>,
    },
    /// `bench paths ...`
    BenchPaths {
        /// Most fetches per file size and path.
        runs: usize,
        /// The machine.
        machine: Machine,
        /// Forced accelerator.
        accel: Option<Accel>,
    },
    /// `bench epoll ...`
    BenchEpoll {
        /// Boots.
        runs: usize,
        /// The machine.
        machine: Machine,
        /// Forced accelerator.
        accel: Option<Accel>,
    },
    /// The hidden `__netclient MODE ...`: the load generator the network
    /// benchmarks run inside their namespace ([`crate::netclient`]).
    NetClient {
        /// The mode and its `key=value` arguments.
        args: Vec<String>,
    },
    /// `bench idle ...`
    BenchIdle {
        /// How long the guest sleeps, in seconds.
        secs: u64,
        /// Forced accelerator.
        accel: Option<Accel>,
    },
}

/// Walks arguments, splitting `--flag=value` and fetching flag values.
struct Args<'a> {
    cmd: &'static str,
    args: &'a [String],
    pos: usize,
    /// The value of a `--flag=value` just split.
    inline: Option<&'a str>,
}

impl<'a> Args<'a> {
    fn new(cmd: &'static str, args: &'a [String]) -> Self {
        Args {
            cmd,
            args,
            pos: 0,
            inline: None,
        }
    }

    /// The next argument; for `--flag=value` returns `--flag` and keeps the
    /// value for [`Args::value`].
    fn next(&mut self) -> Result<Option<&'a str>, Error> {
        if let Some(v) = self.inline.take() {
            return Err(Error::Usage(format!(
                "'{}' takes no value (got '{v}')",
                self.args[self.pos - 1]
                    .split_once('=')
                    .map_or("", |(f, _)| f)
            )));
        }
        let Some(a) = self.args.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        if a.starts_with("--")
            && a.len() > 2
            && let Some((flag, v)) = a.split_once('=')
        {
            self.inline = Some(v);
            return Ok(Some(flag));
        }
        Ok(Some(a))
    }

    fn value(&mut self, flag: &str) -> Result<&'a str, Error> {
        if let Some(v) = self.inline.take() {
            return Ok(v);
        }
        let v = self
            .args
            .get(self.pos)
            .ok_or_else(|| Error::Usage(format!("'{flag}' needs a value")))?;
        self.pos += 1;
        Ok(v)
    }

    fn parsed<T: std::str::FromStr<Err = String>>(&mut self, flag: &str) -> Result<T, Error> {
        self.value(flag)?
            .parse()
            .map_err(|e: String| Error::Usage(format!("{flag}: {e}")))
    }

    fn rest(&mut self) -> Vec<String> {
        let r = self.args[self.pos..].to_vec();
        self.pos = self.args.len();
        r
    }

    fn unknown(&self, a: &str) -> Error {
        if a.starts_with('-') {
            Error::Usage(format!("unknown flag '{a}' for '{}'", self.cmd))
        } else {
            Error::Usage(format!("unexpected argument '{a}' for '{}'", self.cmd))
        }
    }
}

/// Parses the arguments after `uk`.
pub fn parse(args: &[String]) -> Result<Cmd, Error> {
    let Some((cmd, rest)) = args.split_first() else {
        return Ok(Cmd::Help);
    };
    match cmd.as_str() {
        "help" | "-h" | "--help" => Ok(Cmd::Help),
        "build" => parse_build(rest),
        "image" => parse_image(rest),
        "run" => parse_run(rest).map(Cmd::Run),
        "test" => Ok(Cmd::Test {
            extra: rest.to_vec(),
        }),
        "bench" => parse_bench(rest),
        crate::netclient::SUBCOMMAND => Ok(Cmd::NetClient {
            args: rest.to_vec(),
        }),
        other if other.starts_with('-') => Err(Error::Usage(format!("unknown flag '{other}'"))),
        other => Err(Error::Usage(format!("unknown command '{other}'"))),
    }
}

fn parse_build(args: &[String]) -> Result<Cmd, Error> {
    let mut it = Args::new("build", args);
    let mut app = None;
    let mut profile = Profile::Release;
    while let Some(a) = it.next()? {
        match a {
            "--debug" => profile = Profile::Debug,
            "--release" => profile = Profile::Release,
            _ if !a.starts_with('-') && app.is_none() => app = Some(a.to_string()),
            _ => return Err(it.unknown(a)),
        }
    }
    let app = app.ok_or_else(|| Error::Usage("'build' needs an APP".into()))?;
    Ok(Cmd::Build { app, profile })
}

fn parse_image(args: &[String]) -> Result<Cmd, Error> {
    let mut it = Args::new("image", args);
    let (mut app, mut site, mut out) = (None, None, None);
    let mut format = crate::image::ImageFormat::default();
    while let Some(a) = it.next()? {
        match a {
            "--site" => site = Some(std::path::PathBuf::from(it.value(a)?)),
            "-o" | "--out" | "--output" => out = Some(std::path::PathBuf::from(it.value(a)?)),
            "--format" => format = it.parsed(a)?,
            _ if !a.starts_with('-') && app.is_none() => app = Some(a.to_string()),
            _ => return Err(it.unknown(a)),
        }
    }
    Ok(Cmd::Image {
        app: app.unwrap_or_else(|| default_app().to_string()),
        site: site.ok_or_else(|| Error::Usage("'image' needs --site DIR".into()))?,
        out: out.ok_or_else(|| Error::Usage("'image' needs -o OUT".into()))?,
        format,
    })
}

fn parse_run(args: &[String]) -> Result<RunArgs, Error> {
    let mut it = Args::new("run", args);
    let mut r = RunArgs::default();
    while let Some(a) = it.next()? {
        match a {
            "--" => r.args = it.rest(),
            "--machine" | "-M" => r.machine = it.parsed(a)?,
            "--mem" | "-m" => r.mem = it.parsed(a)?,
            "--fwd" => r.fwds.push(it.parsed(a)?),
            "--kvm" => r.accel = Some(Accel::Kvm),
            "--tcg" => r.accel = Some(Accel::Tcg),
            "-v" | "--verbose" => r.verbose = true,
            "--append" => {
                let v = it.value(a)?;
                if !r.append.is_empty() {
                    r.append.push(' ');
                }
                r.append.push_str(v.trim());
            }
            "--debug" => r.debug = true,
            "--site" => r.site = Some(std::path::PathBuf::from(it.value(a)?)),
            _ if !a.starts_with('-') && r.app.is_none() => r.app = Some(a.to_string()),
            _ if !a.starts_with('-') => {
                return Err(Error::Usage(format!(
                    "unexpected argument '{a}' for 'run' (app arguments go after '--')"
                )));
            }
            _ => return Err(it.unknown(a)),
        }
    }
    Ok(r)
}

fn parse_bench_http(args: &[String]) -> Result<Cmd, Error> {
    let mut it = Args::new("bench http", args);
    let (mut secs, mut conns, mut accel) = (10u64, 16u32, None);
    while let Some(a) = it.next()? {
        match a {
            "--secs" | "-s" => {
                let v = it.value(a)?;
                secs =
                    v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        Error::Usage(format!("--secs: bad number of seconds '{v}'"))
                    })?;
            }
            "--conns" | "-c" => {
                let v = it.value(a)?;
                conns = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| Error::Usage(format!("--conns: bad count '{v}'")))?;
            }
            "--kvm" => accel = Some(Accel::Kvm),
            "--tcg" => accel = Some(Accel::Tcg),
            _ => return Err(it.unknown(a)),
        }
    }
    Ok(Cmd::BenchHttp { secs, conns, accel })
}

/// The most seconds per `bench net` measurement.
const MAX_NET_SECS: u64 = 600;

/// `bench net|paths|epoll`: a count flag (`--secs` for net, `--runs` for
/// the others), `--machine` (paths and epoll), `--kvm|--tcg`.
fn parse_bench_net(what: &str, args: &[String]) -> Result<Cmd, Error> {
    let (cmd, flags, default): (_, [&str; 2], u64) = match what {
        "net" => ("bench net", ["--secs", "-s"], 5),
        "paths" => ("bench paths", ["--runs", "-n"], 200),
        _ => ("bench epoll", ["--runs", "-n"], 3),
    };
    let mut it = Args::new(cmd, args);
    let (mut count, mut machine, mut accel) = (default, Machine::default(), None);
    while let Some(a) = it.next()? {
        match a {
            _ if flags.contains(&a) => {
                let v = it.value(a)?;
                let max = if what == "net" {
                    MAX_NET_SECS
                } else {
                    1_000_000
                };
                count = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0 && n <= max)
                    .ok_or_else(|| {
                        let kind = if what == "net" {
                            "number of seconds"
                        } else {
                            "count"
                        };
                        Error::Usage(format!("{}: bad {kind} '{v}' (1 to {max})", flags[0]))
                    })?;
            }
            "--machine" | "-M" if what != "net" => machine = it.parsed(a)?,
            "--kvm" => accel = Some(Accel::Kvm),
            "--tcg" => accel = Some(Accel::Tcg),
            _ => return Err(it.unknown(a)),
        }
    }
    let runs = count as usize;
    Ok(match what {
        "net" => Cmd::BenchNet { secs: count, accel },
        "paths" => Cmd::BenchPaths {
            runs,
            machine,
            accel,
        },
        _ => Cmd::BenchEpoll {
            runs,
            machine,
            accel,
        },
    })
}

fn parse_bench(args: &[String]) -> Result<Cmd, Error> {
    if let Some((what, rest)) = args.split_first()
        && matches!(what.as_str(), "net" | "paths" | "epoll")
    {
        return parse_bench_net(what, rest);
    }
    if let Some((what, rest)) = args.split_first()
        && what == "http"
    {
        return parse_bench_http(rest);
    }
    if let Some((what, rest)) = args.split_first()
        && what == "compare"
    {
        return crate::comparebench::parse_args(rest).map(Cmd::BenchCompare);
    }
    let Some((what, rest)) = args.split_first() else {
        return Err(Error::Usage(
            "'bench' needs a benchmark: boot, sched, idle, fs, http, net, paths or epoll".into(),
        ));
    };
    let (cmd, default_count, count_flags): (_, u64, &[&str]) = match what.as_str() {
        "boot" => ("bench boot", 10, &["--runs", "-n"]),
        "sched" => ("bench sched", 5, &["--runs", "-n"]),
        "idle" => ("bench idle", 10, &["--secs", "-s"]),
        "fs" => ("bench fs", 1, &[]),
        _ => {
            return Err(Error::Usage(format!(
                "unknown benchmark '{what}' (expected boot, sched, idle, fs, http, net, paths or epoll)"
            )));
        }
    };
    let mut it = Args::new(cmd, rest);
    let mut count = default_count;
    let mut accel = None;
    while let Some(a) = it.next()? {
        match a {
            _ if count_flags.contains(&a) => {
                let v = it.value(a)?;
                let what = if count_flags[0] == "--secs" {
                    "number of seconds"
                } else {
                    "count"
                };
                count =
                    v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        Error::Usage(format!("{}: bad {what} '{v}'", count_flags[0]))
                    })?;
            }
            "--kvm" => accel = Some(Accel::Kvm),
            "--tcg" => accel = Some(Accel::Tcg),
            _ => return Err(it.unknown(a)),
        }
    }
    let runs = usize::try_from(count)
        .map_err(|_| Error::Usage(format!("{}: too large", count_flags[0])))?;
    Ok(match what.as_str() {
        "boot" => Cmd::BenchBoot { runs, accel },
        "sched" => Cmd::BenchSched { runs, accel },
        "fs" => Cmd::BenchFs { accel },
        _ => Cmd::BenchIdle { secs: count, accel },
    })
}

/// Runs the CLI with the arguments after `uk`; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let cmd = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            let known = [
                "help", "-h", "--help", "build", "image", "run", "test", "bench",
            ];
            if args.first().is_some_and(|c| !known.contains(&c.as_str())) {
                eprint!("\n{USAGE}");
            }
            return e.exit_code();
        }
    };
    match execute(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    }
}

/// Executes a parsed command; returns the exit status.
pub fn execute(cmd: Cmd) -> Result<i32, Error> {
    match cmd {
        Cmd::Help => {
            print!("{USAGE}");
            Ok(0)
        }
        Cmd::Build { app, profile } => {
            let image = build_image(&app, profile, false)?;
            let size = file_size(&image)?;
            println!(
                "{}  {size} bytes ({:.1} KiB)",
                display_path(&image),
                size as f64 / 1024.0
            );
            Ok(0)
        }
        Cmd::Run(r) => run(r),
        Cmd::Test { extra } => test(&extra),
        Cmd::BenchBoot { runs, accel } => bench_boot(runs, accel),
        Cmd::BenchSched { runs, accel } => bench_sched(runs, accel),
        Cmd::BenchIdle { secs, accel } => bench_idle(secs, accel),
        Cmd::Image {
            app,
            site,
            out,
            format,
        } => {
            check_app(&app)?;
            if format != crate::image::ImageFormat::Ext4 {
                return crate::bootdisk::image_command(&app, &site, &out, format);
            }
            let size = crate::image::build_image_from_dir(&site, &out, format)?;
            println!(
                "{}  {size} bytes ({:.1} MiB, ext4 of {})",
                display_path(&out),
                size as f64 / (1024.0 * 1024.0),
                display_path(&site)
            );
            // The kernel that serves it, and how to boot the pair.
            let kernel = build_image(&app, Profile::Release, false)?;
            let mut cfg = VmConfig::new(&kernel);
            cfg.disk = Some(out.clone());
            cfg.apply_app_defaults(&app);
            println!("{}  ({app} kernel)", display_path(&kernel));
            println!("boot: {}", render_command(&qemu_command(&cfg)));
            Ok(0)
        }
        Cmd::BenchFs { accel } => crate::fsbench::bench_fs(accel),
        Cmd::BenchNet { secs, accel } => crate::netbench::bench_net(secs, accel),
        Cmd::BenchPaths {
            runs,
            machine,
            accel,
        } => crate::pathsbench::bench_paths(runs, machine, accel),
        Cmd::BenchEpoll {
            runs,
            machine,
            accel,
        } => crate::netbench::bench_epoll(runs, machine, accel),
        Cmd::NetClient { args } => crate::netclient::main(&args),
        Cmd::BenchHttp { secs, conns, accel } => crate::httpbench::bench_http(secs, conns, accel),
        Cmd::BenchCompare(a) => crate::comparebench::bench_compare(&a),
    }
}

fn file_size(p: &Path) -> Result<u64, Error> {
    std::fs::metadata(p)
        .map(|m| m.len())
        .map_err(|e| Error::Failed(format!("{}: {e}", p.display())))
}

/// `p` relative to the current directory if it is below it.
fn display_path(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok())
        .unwrap_or(p)
        .display()
        .to_string()
}

fn run(r: RunArgs) -> Result<i32, Error> {
    let app = r.app.clone().unwrap_or_else(|| default_app().to_string());
    check_app(&app)?;
    ensure_qemu()?;
    let profile = if r.debug {
        Profile::Debug
    } else {
        Profile::Release
    };
    let image = build_image(&app, profile, false)?;
    // httpd without --site serves the built-in demo site.
    let site = r
        .site
        .clone()
        .or_else(|| (app == "httpd").then(crate::workspace::demo_site));
    let disk = match &site {
        Some(dir) => Some(crate::image::TempImage::from_dir(dir)?),
        None => None,
    };
    let mut cfg = VmConfig {
        image,
        machine: r.machine,
        mem: r.mem,
        accel: r.accel.unwrap_or_else(Accel::detect),
        append: r.append,
        args: r.args,
        fwds: r.fwds,
        net: false,
        tap: None,
        netns: None,
        disk: disk.as_ref().map(|d| d.path.clone()),
        disk_bus: crate::qemu::DiskBus::Blk,
    };
    cfg.apply_app_defaults(&app);
    let mut cmd = qemu_command(&cfg);
    if r.verbose {
        eprintln!("{}", render_command(&cmd));
    }
    for f in &cfg.fwds {
        eprintln!(
            "uk: forwarding 127.0.0.1:{} -> guest port {}",
            f.host, f.guest
        );
    }
    if app == "httpd" {
        if let Some(dir) = &site {
            eprintln!("uk: serving {}", display_path(dir));
        }
        // The server listens on port 80 unless told otherwise.
        if let Some(f) = cfg.fwds.iter().find(|f| f.guest == 80) {
            println!("http://127.0.0.1:{}/", f.host);
        }
    }
    let status = cmd
        .status()
        .map_err(|e| Error::Failed(format!("cannot start {}: {e}", crate::QEMU)))?;
    let exit = map_exit_status(status);
    match exit {
        Exit::App(0) => {}
        Exit::App(_) => eprintln!("uk: {app} exited with {}", exit.describe()),
        Exit::Qemu(_) | Exit::Signal => {
            eprintln!(
                "error: {}; command: {}",
                exit.describe(),
                render_command(&cmd)
            )
        }
    }
    Ok(exit.process_code())
}

fn test(extra: &[String]) -> Result<i32, Error> {
    crate::toolchain::ensure_target()?;
    ensure_qemu()?;
    // The disk-boot tests (tests/cloud.rs) need GRUB, FAT tools and OVMF:
    // installed here once (root), so parallel tests never race apt-get.
    if let Err(e) = crate::bootdisk::ensure_tools().and_then(|()| crate::bootdisk::ensure_ovmf()) {
        eprintln!("uk: warning: {e} (the disk-boot tests will fail)");
    }
    // The HTTP tests use curl as a real client; the namespace tests use ip.
    let missing: Vec<&str> = [("curl", "curl"), ("iproute2", "ip")]
        .iter()
        .filter(|(_, bin)| !crate::qemu::in_path(bin))
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        let present = || crate::qemu::in_path("curl") && crate::qemu::in_path("ip");
        if let Err(e) = crate::qemu::apt_install(&missing, "test tools (curl, ip)", present) {
            eprintln!("uk: warning: {e}");
        }
    }
    let cargo_test = |pkg: Option<&str>| -> Result<bool, Error> {
        let mut cmd = cargo();
        // Report every failing test binary, not just the first.
        cmd.current_dir(root()).args(["test", "--no-fail-fast"]);
        if let Some(p) = pkg {
            cmd.args(["--package", p]);
        }
        cmd.args(extra).stdin(Stdio::null());
        eprintln!("uk: {}", render_command(&cmd));
        cmd.status()
            .map(|s| s.success())
            .map_err(|e| Error::Failed(format!("cannot run cargo: {e}")))
    };
    let host = cargo_test(None)?;
    let qemu = cargo_test(Some("uk-tests"))?;
    match (host, qemu) {
        (true, true) => Ok(0),
        _ => {
            eprintln!(
                "uk: host tests {}, QEMU tests {}",
                if host { "passed" } else { "FAILED" },
                if qemu { "passed" } else { "FAILED" }
            );
            Ok(1)
        }
    }
}

fn bench_boot(runs: usize, accel: Option<Accel>) -> Result<i32, Error> {
    ensure_qemu()?;
    let image = build_image("hello", Profile::Release, false)?;
    let size = file_size(&image)?;
    let accel = accel.unwrap_or_else(Accel::detect);
    println!(
        "boot benchmark: hello ({}, {size} bytes), {runs} runs per machine, accel {accel}",
        display_path(&image)
    );
    let mut rows = vec![bench::header()];
    for machine in Machine::ALL {
        let mut cfg = VmConfig::new(&image);
        cfg.machine = machine;
        cfg.accel = accel;
        let mut samples = Vec::with_capacity(runs);
        for i in 0..runs {
            let s = bench::boot_once(&cfg, Duration::from_secs(120))
                .map_err(|e| Error::Failed(format!("{machine} run {}/{runs}: {e}", i + 1)))?;
            samples.push(s);
        }
        rows.push(bench::row(machine, size, &samples));
    }
    rows.extend(crate::bootdisk::bench_disk_rows(&image, runs, accel)?);
    print!("{}", bench::table(&rows));
    first_http_200(runs, accel)?;
    println!(
        "main: spawn -> 'uk: main' line (wall); guest: the marker's own time since boot; exit: spawn -> QEMU exit"
    );
    println!(
        "pvh rows: -kernel (PVH entry); disk rows: q35 booting the raw GPT image (size in the \
         image columns) through SeaBIOS or OVMF and GRUB (Multiboot2), no -kernel"
    );
    Ok(0)
}

/// Boots httpd on the demo site (static address on user networking, a
/// forward from 127.0.0.1) and times QEMU start → the first `200` for `GET /`,
/// next to the guest's own boot time. The request is sent as soon as the
/// server prints that it serves.
fn first_http_200(runs: usize, accel: Accel) -> Result<(), Error> {
    use std::io::{Read, Write};
    let image = build_image("httpd", Profile::Release, false)?;
    let disk = crate::image::TempImage::from_dir(&crate::workspace::demo_site())?;
    for machine in Machine::ALL {
        let mut walls = Vec::new();
        let mut guests = Vec::new();
        for i in 0..runs {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| Error::Failed(format!("no free port: {e}")))?;
            let mut cfg = VmConfig::new(&image);
            cfg.machine = machine;
            cfg.accel = accel;
            cfg.disk = Some(disk.path.clone());
            cfg.append = "ip=10.0.2.15/24 gw=10.0.2.2".into();
            cfg.fwds = vec![crate::qemu::PortFwd {
                host: port,
                guest: 80,
            }];
            let fail =
                |e: String| Error::Failed(format!("http 200, {machine} run {}/{runs}: {e}", i + 1));
            let mut g = bench::LiveGuest::spawn(&cfg).map_err(fail)?;
            let marker = g
                .wait_for("uk: main after", Duration::from_secs(60))
                .map_err(fail)?;
            g.wait_for("httpd: serving", Duration::from_secs(60))
                .map_err(fail)?;
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
                .map_err(|e| fail(e.to_string()))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| fail(e.to_string()))?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                .map_err(|e| fail(e.to_string()))?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).map_err(|e| fail(e.to_string()))?;
            let wall = g.started().elapsed();
            if &head[9..12] != b"200" {
                return Err(fail(format!(
                    "status line {:?}",
                    String::from_utf8_lossy(&head)
                )));
            }
            walls.push(wall);
            if let Some(m) = crate::serial::parse_main_marker(&marker.text) {
                guests.push(m);
            }
        }
        walls.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let guest_us: Vec<u64> = guests.iter().filter_map(|m| m.micros).collect();
        let mut g = guest_us.clone();
        g.sort_unstable();
        println!(
            "{machine}: QEMU start -> first HTTP 200 for GET / (httpd, demo site, disk + user net): median {:.1} ms (min {:.1}, max {:.1}); guest entry -> main median {} us",
            ms(walls[walls.len() / 2]),
            ms(walls[0]),
            ms(walls[walls.len() - 1]),
            g.get(g.len() / 2)
                .map_or("?".to_string(), |v| v.to_string())
        );
    }
    Ok(())
}

/// The app the `sched` and `idle` benchmarks boot.
const SELFTEST: &str = "selftest";

/// Builds the selftest app for a benchmark and prints its first line.
fn bench_image(what: &str, detail: &str, accel: Accel) -> Result<std::path::PathBuf, Error> {
    ensure_qemu()?;
    check_app(SELFTEST)?;
    let image = build_image(SELFTEST, Profile::Release, false)?;
    let size = file_size(&image)?;
    println!(
        "{what} benchmark: {SELFTEST} ({}, {size} bytes), {detail}, accel {accel}",
        display_path(&image)
    );
    Ok(image)
}

fn bench_sched(runs: usize, accel: Option<Accel>) -> Result<i32, Error> {
    let accel = accel.unwrap_or_else(Accel::detect);
    let image = bench_image("sched", &format!("{runs} runs per machine"), accel)?;
    let mut rows = Vec::new();
    for machine in Machine::ALL {
        let mut cfg = VmConfig::new(&image);
        cfg.machine = machine;
        cfg.accel = accel;
        cfg.args = vec!["bench-sched".into()];
        let mut samples = Vec::with_capacity(runs);
        for i in 0..runs {
            let s = bench::sched_once(&cfg, Duration::from_secs(300))
                .map_err(|e| Error::Failed(format!("{machine} run {}/{runs}: {e}", i + 1)))?;
            samples.push(s);
        }
        rows.extend(bench::sched_rows(machine, &samples));
    }
    print!("{}", bench::table(&rows));
    println!(
        "note: guest-measured (TSC clock) under {accel}; context switch = one yield between \
         two threads, spawn+join = thread::spawn + join"
    );
    Ok(0)
}

fn bench_idle(secs: u64, accel: Option<Accel>) -> Result<i32, Error> {
    let accel = accel.unwrap_or_else(Accel::detect);
    let image = bench_image("idle", &format!("guest sleeps {secs} s per machine"), accel)?;
    // Booting under TCG on a loaded host can take a while.
    let timeout = Duration::from_secs(secs.saturating_add(180));
    let mut rows = vec![bench::idle_header()];
    let mut verdicts = Vec::new();
    for machine in Machine::ALL {
        let mut cfg = VmConfig::new(&image);
        cfg.machine = machine;
        cfg.accel = accel;
        cfg.args = vec!["idle".into(), secs.to_string()];
        let s = bench::idle_once(&cfg, timeout)
            .map_err(|e| Error::Failed(format!("{machine}: {e}")))?;
        rows.push(bench::idle_row(machine, &s));
        verdicts.push(bench::idle_verdict(machine, &s));
    }
    print!("{}", bench::table(&rows));
    for v in verdicts {
        println!("{v}");
    }
    println!(
        "wall: host time from the 'idle: sleeping' to the 'idle: done' line; QEMU CPU: \
         utime+stime of the QEMU process (all threads, {} ms resolution) over that span; \
         CPU %: of one host core",
        1000 / bench::USER_HZ
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cmd, Error> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let mut v = vec!["run"];
        v.extend_from_slice(args);
        match p(&v).unwrap() {
            Cmd::Run(r) => r,
            c => panic!("{c:?}"),
        }
    }

    fn usage_err(args: &[&str]) -> String {
        let e = p(args).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        e.to_string()
    }

    #[test]
    fn help() {
        assert_eq!(p(&[]).unwrap(), Cmd::Help);
        assert_eq!(p(&["help"]).unwrap(), Cmd::Help);
        assert_eq!(p(&["-h"]).unwrap(), Cmd::Help);
        assert_eq!(p(&["--help"]).unwrap(), Cmd::Help);
        assert!(usage_err(&["frobnicate"]).contains("unknown command 'frobnicate'"));
        assert!(usage_err(&["--frob"]).contains("unknown flag '--frob'"));
        assert!(USAGE.contains("cargo uk run [APP]"));
    }

    #[test]
    fn build() {
        assert_eq!(
            p(&["build", "hello"]).unwrap(),
            Cmd::Build {
                app: "hello".into(),
                profile: Profile::Release
            }
        );
        assert_eq!(
            p(&["build", "--debug", "selftest"]).unwrap(),
            Cmd::Build {
                app: "selftest".into(),
                profile: Profile::Debug
            }
        );
        assert!(usage_err(&["build"]).contains("needs an APP"));
        assert!(
            usage_err(&["build", "hello", "--fast"]).contains("unknown flag '--fast' for 'build'")
        );
        assert!(usage_err(&["build", "hello", "more"]).contains("unexpected argument 'more'"));
        assert!(usage_err(&["build", "hello", "--debug=yes"]).contains("takes no value"));
    }

    #[test]
    fn run_defaults() {
        let r = run_args(&[]);
        assert_eq!(r, RunArgs::default());
        assert_eq!(r.machine, Machine::Microvm);
        assert_eq!(r.mem.to_qemu(), "64M");
        assert_eq!(r.app, None);
    }

    #[test]
    fn run_everything() {
        let r = run_args(&[
            "selftest",
            "--machine",
            "q35",
            "--mem=1G",
            "--fwd",
            "8080:80",
            "--fwd=2222:22",
            "--tcg",
            "-v",
            "--append",
            "log=debug x=1",
            "--debug",
            "--",
            "args",
            "a",
            "b c",
            "--tcg",
        ]);
        assert_eq!(r.app.as_deref(), Some("selftest"));
        assert_eq!(r.machine, Machine::Q35);
        assert_eq!(r.mem.to_qemu(), "1G");
        assert_eq!(
            r.fwds,
            [
                PortFwd {
                    host: 8080,
                    guest: 80
                },
                PortFwd {
                    host: 2222,
                    guest: 22
                }
            ]
        );
        assert_eq!(r.accel, Some(Accel::Tcg));
        assert!(r.verbose && r.debug);
        assert_eq!(r.append, "log=debug x=1");
        assert_eq!(r.args, ["args", "a", "b c", "--tcg"]);
    }

    #[test]
    fn run_flags_anywhere() {
        let r = run_args(&["--kvm", "--mem", "512K", "hello", "--machine=microvm"]);
        assert_eq!(r.app.as_deref(), Some("hello"));
        assert_eq!(r.accel, Some(Accel::Kvm));
        assert_eq!(r.mem.0, 512 * 1024);
        assert_eq!(r.machine, Machine::Microvm);
        let r = run_args(&["--append", "a=1", "--append", "b=2"]);
        assert_eq!(r.append, "a=1 b=2");
        let r = run_args(&["--", "--help"]);
        assert_eq!(r.args, ["--help"]);
        assert_eq!(r.app, None);
    }

    #[test]
    fn run_errors() {
        assert!(usage_err(&["run", "--bogus"]).contains("unknown flag '--bogus' for 'run'"));
        assert!(usage_err(&["run", "--machine", "pc"]).contains("unknown machine 'pc'"));
        assert!(usage_err(&["run", "--machine"]).contains("'--machine' needs a value"));
        assert!(usage_err(&["run", "--mem", "lots"]).contains("bad memory size"));
        assert!(usage_err(&["run", "--fwd", "x:80"]).contains("bad port forward"));
        assert!(usage_err(&["run", "hello", "extra"]).contains("after '--'"));
        assert!(usage_err(&["run", "-x"]).contains("unknown flag '-x'"));
    }

    #[test]
    fn test_and_bench() {
        assert_eq!(p(&["test"]).unwrap(), Cmd::Test { extra: vec![] });
        assert_eq!(
            p(&["test", "boot", "--", "--nocapture"]).unwrap(),
            Cmd::Test {
                extra: vec!["boot".into(), "--".into(), "--nocapture".into()]
            }
        );
        assert_eq!(
            p(&["bench", "boot"]).unwrap(),
            Cmd::BenchBoot {
                runs: 10,
                accel: None
            }
        );
        assert_eq!(
            p(&["bench", "boot", "--runs", "3", "--tcg"]).unwrap(),
            Cmd::BenchBoot {
                runs: 3,
                accel: Some(Accel::Tcg)
            }
        );
        assert_eq!(
            p(&["bench", "boot", "--runs=5"]).unwrap(),
            Cmd::BenchBoot {
                runs: 5,
                accel: None
            }
        );
        assert!(usage_err(&["bench"]).contains("needs a benchmark"));
        assert!(usage_err(&["bench", "frob"]).contains("unknown benchmark 'frob'"));
        assert!(usage_err(&["bench", "boot", "--runs", "0"]).contains("bad count"));
        assert!(usage_err(&["bench", "boot", "--fast"]).contains("unknown flag '--fast'"));
    }

    #[test]
    fn bench_sched() {
        assert_eq!(
            p(&["bench", "sched"]).unwrap(),
            Cmd::BenchSched {
                runs: 5,
                accel: None
            }
        );
        assert_eq!(
            p(&["bench", "sched", "--runs", "2", "--kvm"]).unwrap(),
            Cmd::BenchSched {
                runs: 2,
                accel: Some(Accel::Kvm)
            }
        );
        assert_eq!(
            p(&["bench", "sched", "--tcg", "-n", "7"]).unwrap(),
            Cmd::BenchSched {
                runs: 7,
                accel: Some(Accel::Tcg)
            }
        );
        assert_eq!(
            p(&["bench", "sched", "--runs=1"]).unwrap(),
            Cmd::BenchSched {
                runs: 1,
                accel: None
            }
        );
        assert!(usage_err(&["bench", "sched", "--runs", "0"]).contains("--runs: bad count '0'"));
        assert!(usage_err(&["bench", "sched", "--runs", "x"]).contains("bad count 'x'"));
        assert!(usage_err(&["bench", "sched", "--runs"]).contains("'--runs' needs a value"));
        assert!(
            usage_err(&["bench", "sched", "--secs", "3"])
                .contains("unknown flag '--secs' for 'bench sched'")
        );
        assert!(usage_err(&["bench", "sched", "extra"]).contains("unexpected argument 'extra'"));
        assert!(usage_err(&["bench", "sched", "--kvm=1"]).contains("takes no value"));
        assert!(USAGE.contains("cargo uk bench sched [--runs N] [--kvm|--tcg]"));
    }

    #[test]
    fn bench_idle() {
        assert_eq!(
            p(&["bench", "idle"]).unwrap(),
            Cmd::BenchIdle {
                secs: 10,
                accel: None
            }
        );
        assert_eq!(
            p(&["bench", "idle", "--secs", "3", "--tcg"]).unwrap(),
            Cmd::BenchIdle {
                secs: 3,
                accel: Some(Accel::Tcg)
            }
        );
        assert_eq!(
            p(&["bench", "idle", "--kvm", "--secs=60"]).unwrap(),
            Cmd::BenchIdle {
                secs: 60,
                accel: Some(Accel::Kvm)
            }
        );
        assert_eq!(
            p(&["bench", "idle", "-s", "2"]).unwrap(),
            Cmd::BenchIdle {
                secs: 2,
                accel: None
            }
        );
        assert!(
            usage_err(&["bench", "idle", "--secs", "0"])
                .contains("--secs: bad number of seconds '0'")
        );
        assert!(usage_err(&["bench", "idle", "--secs", "1.5"]).contains("bad number of seconds"));
        assert!(usage_err(&["bench", "idle", "--secs"]).contains("'--secs' needs a value"));
        assert!(
            usage_err(&["bench", "idle", "--runs", "3"])
                .contains("unknown flag '--runs' for 'bench idle'")
        );
        assert!(usage_err(&["bench", "idle", "--fast"]).contains("unknown flag '--fast'"));
        assert!(
            usage_err(&["bench", "unknown"])
                .contains("(expected boot, sched, idle, fs, http, net, paths or epoll)")
        );
        assert!(USAGE.contains("cargo uk bench idle [--secs S] [--kvm|--tcg]"));
    }

    #[test]
    fn bench_compare() {
        assert_eq!(
            p(&["bench", "compare"]).unwrap(),
            Cmd::BenchCompare(crate::comparebench::CompareArgs::default())
        );
        let Cmd::BenchCompare(a) = p(&["bench", "compare", "--secs=3", "--no-mem"]).unwrap() else {
            panic!("not bench compare");
        };
        assert_eq!((a.secs, a.no_mem), (3, true));
        assert!(p(&["bench", "compare", "--bogus"]).is_err());
        assert!(USAGE.contains("cargo uk bench compare [--secs S]"));
    }

    #[test]
    fn bench_http() {
        assert_eq!(
            p(&["bench", "http"]).unwrap(),
            Cmd::BenchHttp {
                secs: 10,
                conns: 16,
                accel: None
            }
        );
        assert_eq!(
            p(&["bench", "http", "--secs=3", "-c", "64", "--tcg"]).unwrap(),
            Cmd::BenchHttp {
                secs: 3,
                conns: 64,
                accel: Some(Accel::Tcg)
            }
        );
        assert!(usage_err(&["bench", "http", "--secs", "0"]).contains("bad number of seconds"));
        assert!(usage_err(&["bench", "http", "--runs", "2"]).contains("unknown flag '--runs'"));
        assert!(USAGE.contains("cargo uk bench http"));
    }

    #[test]
    fn image_without_app_is_the_default_app() {
        match p(&["image", "--site", "www", "-o", "site.img"]).unwrap() {
            Cmd::Image { app, site, out, .. } => {
                assert_eq!(app, default_app());
                assert_eq!(site, std::path::PathBuf::from("www"));
                assert_eq!(out, std::path::PathBuf::from("site.img"));
            }
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn bench_net_paths_epoll() {
        assert_eq!(
            p(&["bench", "net"]).unwrap(),
            Cmd::BenchNet {
                secs: 5,
                accel: None
            }
        );
        assert_eq!(
            p(&["bench", "net", "--secs=2", "--tcg"]).unwrap(),
            Cmd::BenchNet {
                secs: 2,
                accel: Some(Accel::Tcg)
            }
        );
        assert!(usage_err(&["bench", "net", "--secs", "0"]).contains("bad number of seconds '0'"));
        assert!(usage_err(&["bench", "net", "-s", "601"]).contains("(1 to 600)"));
        assert!(
            usage_err(&["bench", "net", "--machine", "q35"])
                .contains("unknown flag '--machine' for 'bench net'")
        );
        assert!(usage_err(&["bench", "net", "--runs", "2"]).contains("unknown flag '--runs'"));
        assert_eq!(
            p(&["bench", "paths"]).unwrap(),
            Cmd::BenchPaths {
                runs: 200,
                machine: Machine::Microvm,
                accel: None
            }
        );
        assert_eq!(
            p(&["bench", "paths", "--runs", "20", "--machine=q35", "--kvm"]).unwrap(),
            Cmd::BenchPaths {
                runs: 20,
                machine: Machine::Q35,
                accel: Some(Accel::Kvm)
            }
        );
        assert!(usage_err(&["bench", "paths", "--machine", "pc"]).contains("unknown machine 'pc'"));
        assert!(usage_err(&["bench", "paths", "-n", "x"]).contains("--runs: bad count 'x'"));
        assert_eq!(
            p(&["bench", "epoll"]).unwrap(),
            Cmd::BenchEpoll {
                runs: 3,
                machine: Machine::Microvm,
                accel: None
            }
        );
        assert_eq!(
            p(&["bench", "epoll", "-M", "q35", "-n", "5"]).unwrap(),
            Cmd::BenchEpoll {
                runs: 5,
                machine: Machine::Q35,
                accel: None
            }
        );
        assert!(usage_err(&["bench", "epoll", "--secs", "3"]).contains("unknown flag '--secs'"));
        assert!(usage_err(&["bench", "epoll", "extra"]).contains("unexpected argument 'extra'"));
        for line in [
            "cargo uk bench net [--secs S] [--kvm|--tcg]",
            "cargo uk bench paths [--runs N] [--machine microvm|q35] [--kvm|--tcg]",
            "cargo uk bench epoll [--runs N] [--machine microvm|q35] [--kvm|--tcg]",
        ] {
            assert!(USAGE.contains(line), "{line}");
        }
        // The load generator is hidden from the usage text.
        assert_eq!(
            p(&["__netclient", "cps", "addr=10.77.0.2:7"]).unwrap(),
            Cmd::NetClient {
                args: vec!["cps".into(), "addr=10.77.0.2:7".into()]
            }
        );
        assert!(!USAGE.contains("__netclient"));
    }

    #[test]
    fn image_site_and_bench_fs() {
        assert_eq!(
            p(&["image", "httpd", "--site", "www", "-o", "out.img"]).unwrap(),
            Cmd::Image {
                app: "httpd".into(),
                site: "www".into(),
                out: "out.img".into(),
                format: crate::image::ImageFormat::Ext4,
            }
        );
        assert!(usage_err(&["image", "httpd", "-o", "x"]).contains("needs --site DIR"));
        assert!(usage_err(&["image", "httpd", "--site", "d"]).contains("needs -o OUT"));
        assert!(
            usage_err(&["image", "a", "--site=d", "-o", "x", "--format", "iso"])
                .contains("unknown image format 'iso'")
        );
        let r = run_args(&["hello", "--site", "www"]);
        assert_eq!(r.site, Some("www".into()));
        assert_eq!(
            p(&["bench", "fs", "--tcg"]).unwrap(),
            Cmd::BenchFs {
                accel: Some(Accel::Tcg)
            }
        );
    }
}
