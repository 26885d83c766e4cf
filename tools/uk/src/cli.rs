//! The `cargo uk` command line (clap) and the commands.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::Error;
use crate::bench;
use crate::build::{Profile, build_image, cargo};
use crate::qemu::{
    Accel, Exit, Machine, MemSize, PortFwd, VmConfig, ensure_qemu, map_exit_status, qemu_command,
    render_command,
};
use crate::workspace::{check_app, default_app, root};

/// Exit statuses, shown under every command's `--help`.
pub const EXIT_STATUS: &str = "\
Exit status:
  0    success
  1    the work failed (build, image, a failed test or measurement, QEMU missing)
  2    usage error (unknown command or flag, bad value, unknown app)
  run: the app's status (101 = kernel panic, 102 = fatal CPU exception); when
       QEMU itself fails, its own (even) exit code; 130/143/129 when the CLI
       was stopped by SIGINT/SIGTERM/SIGHUP (the VM is stopped with it)";

/// `cargo uk`: build and boot unikernel apps under QEMU.
#[derive(Debug, Parser)]
#[command(
    name = "uk",
    bin_name = "cargo uk",
    version,
    about = "Build and boot unikernel apps under QEMU",
    long_about = "Build and boot unikernel apps under QEMU.\n\n\
                  'cargo uk run' boots the static file server on the demo site \
                  (http://127.0.0.1:8080/); 'cargo uk test' runs every test.",
    after_help = EXIT_STATUS,
    arg_required_else_help = true,
    propagate_version = true
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Forcing the accelerator (default: KVM if /proc/cpuinfo has vmx/svm and
/// /dev/kvm is usable, else TCG).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Args)]
pub struct AccelArg {
    /// Force KVM
    #[arg(long, conflicts_with = "tcg")]
    pub kvm: bool,
    /// Force TCG (software emulation)
    #[arg(long)]
    pub tcg: bool,
}

impl AccelArg {
    /// The forced accelerator, if any.
    pub fn get(self) -> Option<Accel> {
        if self.kvm {
            Some(Accel::Kvm)
        } else if self.tcg {
            Some(Accel::Tcg)
        } else {
            None
        }
    }
}

/// Options of `cargo uk run`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Args)]
pub struct RunArgs {
    /// The app under apps/ (default: httpd if apps/httpd exists, else hello)
    pub app: Option<String>,
    /// QEMU machine: microvm or q35
    #[arg(long, short = 'M', default_value = "microvm", value_name = "MACHINE")]
    pub machine: Machine,
    /// Guest memory: 512K, 4M, 64M, 1G; a plain number is MiB
    #[arg(long, short = 'm', default_value = "64M", value_name = "SIZE")]
    pub mem: MemSize,
    /// Forward TCP 127.0.0.1:HOST to guest port GUEST (repeatable; adds a
    /// virtio-net device; httpd gets 8080:80 by default)
    #[arg(long = "fwd", value_name = "HOST:GUEST")]
    pub fwds: Vec<PortFwd>,
    /// Virtual CPUs (QEMU -smp; with TCG, one host thread each). Every CPU
    /// runs threads: idle CPUs steal waiting threads that are not pinned
    /// (thread::spawn_on with Placement::Cpu)
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub smp: u32,
    /// Forced accelerator.
    #[command(flatten)]
    pub accel: AccelArg,
    /// Print the QEMU command line
    #[arg(long, short)]
    pub verbose: bool,
    /// Kernel options, 'k=v ...' (repeatable)
    #[arg(long = "append", value_name = "'k=v ...'")]
    pub append: Vec<String>,
    /// Build with the dev profile
    #[arg(long)]
    pub debug: bool,
    /// Pack DIR into a temporary ext4 image and attach it as the guest's root
    /// file system (virtio-blk, read-only); httpd without --site serves the
    /// demo site apps/httpd/site
    #[arg(long, value_name = "DIR")]
    pub site: Option<PathBuf>,
    /// Start the VM in the background, print its name and return (see 'ps',
    /// 'logs', 'stop')
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// The name of a background VM (default: APP-N)
    #[arg(long, requires = "detach")]
    pub name: Option<String>,
    /// httpd over HTTPS too: the TLS build, 127.0.0.1:8443 forwarded to the
    /// guest's port 443, and (without --tls-cert/--tls-key or uk.toml's
    /// tls_cert/tls_key) a self-signed certificate for localhost and
    /// 127.0.0.1 made on the host (kept in target/uk-tls/)
    #[arg(long)]
    pub tls: bool,
    /// Attach FILE as the guest's writable state disk (mounted at /state;
    /// httpd keeps its ACME account and certificates there). A missing FILE
    /// is made (1 MiB, formatted); a file that is not a state disk is
    /// refused
    #[arg(long = "state-disk", value_name = "FILE")]
    pub state_disk: Option<PathBuf>,
    /// httpd's site settings (also read from DIR/uk.toml).
    #[command(flatten, next_help_heading = "Site (httpd; the same keys as uk.toml)")]
    pub site_args: crate::siteconfig::SiteArgs,
    /// Arguments for the app (after --)
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

impl RunArgs {
    /// The kernel options: every `--append`, space separated.
    pub fn append_line(&self) -> String {
        self.append
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A `--runs N` count (1 to 1,000,000).
fn parse_runs(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|&n| n > 0 && n <= 1_000_000)
        .ok_or_else(|| format!("bad count '{s}' (1 to 1000000)"))
}

/// A `--secs S` duration (1 to 600 seconds).
fn parse_secs(s: &str) -> Result<u64, String> {
    s.parse()
        .ok()
        .filter(|&n| n > 0 && n <= 600)
        .ok_or_else(|| format!("bad number of seconds '{s}' (1 to 600)"))
}

/// A `--conns N` count (1 to 10,000).
fn parse_conns(s: &str) -> Result<u32, String> {
    s.parse()
        .ok()
        .filter(|&n| n > 0 && n <= 10_000)
        .ok_or_else(|| format!("bad count '{s}' (1 to 10000)"))
}

/// A `--hs-clients N` count (1 to 256).
fn parse_hs_clients(s: &str) -> Result<u32, String> {
    s.parse()
        .ok()
        .filter(|&n| n > 0 && n <= 256)
        .ok_or_else(|| format!("bad count '{s}' (1 to 256)"))
}

/// A `--rounds R` count (1 to 20).
fn parse_rounds(s: &str) -> Result<u32, String> {
    s.parse()
        .ok()
        .filter(|&n| n > 0 && n <= 20)
        .ok_or_else(|| format!("bad number of rounds '{s}' (1 to 20)"))
}

/// A shell for `completions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

/// The commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Cmd {
    /// Build apps/APP for x86_64-unknown-none; print the image path and size
    Build {
        /// The app under apps/
        app: String,
        /// Build with the dev profile
        #[arg(long)]
        debug: bool,
        /// Build the TLS flavour (the app's `tls` feature: rustls + ring;
        /// needs gcc), into target/tls/
        #[arg(long)]
        tls: bool,
    },
    /// Build and boot APP under QEMU; exit with the app's status
    #[command(
        long_about = "Build and boot APP (default: httpd if apps/httpd exists, else hello); \
                      exit with the app's status. httpd gets 127.0.0.1:8080 -> port 80 and, \
                      without --site, the built-in demo site (apps/httpd/site). With -d the \
                      VM runs in the background: 'cargo uk ps', 'logs', 'stop'.",
        after_help = EXIT_STATUS
    )]
    Run(RunArgs),
    /// Pack the folder DIR into a disk image OUT for APP and print how to boot it
    #[command(
        long_about = "Pack the folder DIR into a disk image OUT for APP (default: \
                      httpd; ext4 via mkfs.ext4 -d, sized from the folder with headroom, \
                      with an empty /tmp for the guest's tmpfs); the kernel mounts it \
                      read-only at /. Also builds APP and prints how to boot the pair. \
                      Deploying: docs/DEPLOY.md"
    )]
    Image {
        /// The app the image is for (default: httpd)
        app: Option<String>,
        /// The folder to pack
        #[arg(long, value_name = "DIR")]
        site: PathBuf,
        /// The image file to write
        #[arg(short = 'o', long = "out", value_name = "OUT")]
        out: PathBuf,
        /// ext4: the disk only; elf: the PVH kernel at OUT and its ext4 disk
        /// at OUT.ext4 (QEMU -kernel, Firecracker); raw: a GPT disk that BIOS
        /// and UEFI firmware boot (GRUB + Multiboot2, ext4 root partition
        /// uk-root); qcow2: the same as qcow2; gce: disk.raw in a .tar.gz for
        /// 'gcloud compute images create --source-uri'
        #[arg(long, default_value = "ext4", value_name = "FORMAT")]
        format: crate::image::ImageFormat,
        /// httpd's site settings (also read from DIR/uk.toml).
        #[command(flatten, next_help_heading = "Site (httpd; the same keys as uk.toml)")]
        site_args: crate::siteconfig::SiteArgs,
        /// A certificate by ACME at boot (httpd's TLS build).
        #[command(flatten, next_help_heading = "ACME (httpd with TLS; ext4 format)")]
        acme: crate::acme::AcmeArgs,
        /// Make FILE a state disk if it does not exist (1 MiB, formatted;
        /// an existing one must be a state disk) and attach it in the
        /// printed boot command: the guest mounts it writable at /state,
        /// where httpd keeps its ACME account and certificates
        #[arg(long = "state-disk", value_name = "FILE")]
        state_disk: Option<PathBuf>,
    },
    /// Run the host tests (cargo test), then the QEMU tests (cargo test -p uk-tests)
    #[command(
        long_about = "Ensure QEMU and the test tools, run the host tests (cargo \
                      test), then the QEMU tests (cargo test --package uk-tests), both with \
                      --no-fail-fast; extra arguments go to both (e.g. 'cargo uk test -- \
                      boot'). Prints a summary with the tests skipped because they need \
                      root or KVM."
    )]
    Test {
        /// Arguments for both cargo test runs
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CARGO TEST ARGS"
        )]
        extra: Vec<String>,
    },
    /// Benchmarks (boot, sched, idle, fs, net, paths, epoll, http, compare, tls)
    #[command(subcommand)]
    Bench(BenchCmd),
    /// List the VMs started with 'cargo uk run -d' (name, app, ports, memory, uptime)
    Ps,
    /// Print the console of a background VM
    Logs {
        /// The VM's name (from 'cargo uk ps')
        name: String,
        /// Keep printing new output until the VM stops
        #[arg(long, short)]
        follow: bool,
    },
    /// Stop a background VM: ACPI power button, then kill after a timeout
    Stop {
        /// The VM's name (from 'cargo uk ps')
        name: String,
        /// Seconds to wait for a graceful shutdown before killing QEMU (httpd
        /// finishes its responses within its --shutdown-timeout, 10 s)
        #[arg(long, short = 't', default_value_t = 15, value_name = "SECS")]
        timeout: u64,
    },
    /// Print a shell completion script for the alias uk='cargo uk'
    #[command(
        long_about = "Print a shell completion script. cargo does not complete its \
                      aliases, so the script completes the shell alias uk='cargo uk': e.g. \
                      'alias uk=\"cargo uk\"; source <(cargo uk completions bash)'."
    )]
    Completions {
        /// The shell
        shell: Shell,
    },
    /// The load generator the network benchmarks run inside their namespace.
    #[command(name = "__netclient", hide = true)]
    NetClient {
        /// The mode and its `key=value` arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `cargo uk bench ...`
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum BenchCmd {
    /// Boot hello N times on microvm and q35 (and the raw disk through SeaBIOS
    /// and OVMF) and print the time to 'uk: main' and to QEMU's exit
    Boot {
        /// Boots per machine
        #[arg(long, short = 'n', default_value = "10", value_parser = parse_runs, value_name = "N")]
        runs: usize,
        /// Forced accelerator.
        #[command(flatten)]
        accel: AccelArg,
    },
    /// Boot 'selftest bench-sched' N times per machine: context switch and spawn+join cost
    Sched {
        /// Boots per machine
        #[arg(long, short = 'n', default_value = "5", value_parser = parse_runs, value_name = "N")]
        runs: usize,
        /// Forced accelerator.
        #[command(flatten)]
        accel: AccelArg,
    },
    /// Boot 'selftest idle S' per machine: QEMU's host CPU use while the guest sleeps
    Idle {
        /// How long the guest sleeps
        #[arg(long, short = 's', default_value = "10", value_parser = parse_secs, value_name = "S")]
        secs: u64,
        /// Forced accelerator.
        #[command(flatten)]
        accel: AccelArg,
    },
    /// Boot 'fstest bench' per machine: cold and warm read throughput of 4 KiB, 1 MiB, 16 MiB files
    Fs {
        /// Forced accelerator.
        #[command(flatten)]
        accel: AccelArg,
    },
    /// Echo over TAP in a private network namespace (root): MB/s and connections/s
    Net {
        /// Seconds per measurement
        #[arg(long, short = 's', default_value = "5", value_parser = parse_secs, value_name = "S")]
        secs: u64,
        /// Forced accelerator.
        #[command(flatten)]
        accel: AccelArg,
    },
    /// 'iotest serve' over TAP (root): read, mmap and sendfile per file size
    Paths {
        /// Most fetches per file size and path
        #[arg(long, short = 'n', default_value = "200", value_parser = parse_runs, value_name = "N")]
        runs: usize,
        /// The machine: microvm or q35
        #[arg(long, short = 'M', default_value = "microvm", value_name = "MACHINE")]
        machine: Machine,
        /// Forced accelerator.
        #[command(flatten)]
        accel: AccelArg,
    },
    /// Median ns per epoll_wait with 10, 1,000 and 10,000 registered
    Epoll {
        /// Boots
        #[arg(long, short = 'n', default_value = "3", value_parser = parse_runs, value_name = "N")]
        runs: usize,
        /// The machine: microvm or q35
        #[arg(long, short = 'M', default_value = "microvm", value_name = "MACHINE")]
        machine: Machine,
        /// Forced accelerator.
        #[command(flatten)]
        accel: AccelArg,
    },
    /// wrk against httpd over TAP in a private network namespace (root)
    #[command(
        long_about = "wrk against httpd over TAP in a private network namespace \
                      (root; wrk installed with apt-get if missing), for S seconds per file \
                      with N connections and with 256: requests/s for 1 KiB, MB/s for \
                      64 KiB, 1 MiB and 16 MiB, p50/p99 latency. A guest that stalls \
                      (no requests served, mostly errors, or no answer to a probe) fails \
                      the run with its console tail."
    )]
    Http {
        /// wrk's duration per file
        #[arg(long, short = 's', default_value = "10", value_parser = parse_secs, value_name = "S")]
        secs: u64,
        /// wrk's connections (a second run always uses 256)
        #[arg(long, short = 'c', default_value = "64", value_parser = parse_conns, value_name = "N")]
        conns: u32,
        /// vCPUs: above 1, the cells at 1 and at N vCPUs side by side, with
        /// the host CPU QEMU and wrk used
        #[arg(long, default_value_t = 1, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..=64))]
        smp: u32,
        /// Rounds per vCPU count (with --smp above 1)
        #[arg(long, short = 'r', default_value = "1", value_parser = parse_rounds, value_name = "R")]
        rounds: u32,
        /// Forced accelerator.
        #[command(flatten)]
        accel: AccelArg,
    },
    /// httpd next to Linux + nginx in the same QEMU: throughput, first 200, smallest -m
    #[command(
        long_about = "The same as 'bench http' for httpd and for Linux + nginx \
                      (Debian packages, built into target/nginx-vm) in the same QEMU, both \
                      guests running, each in a network namespace of its own (root), measured \
                      in R rounds that alternate which system goes first; plus QEMU start -> \
                      first HTTP 200 and the smallest -m that serves /1k.bin and survives a \
                      short Connection: close churn; prints per-round figures, medians and \
                      the ratios of the medians against the targets (never fails for a missed \
                      one)"
    )]
    Compare {
        /// wrk's duration per file and round
        #[arg(long, short = 's', default_value = "10", value_parser = parse_secs, value_name = "S")]
        secs: u64,
        /// wrk's connections (a second run always uses 256)
        #[arg(long, short = 'c', default_value = "64", value_parser = parse_conns, value_name = "N")]
        conns: u32,
        /// Rounds (each measures every file on both systems)
        #[arg(long, short = 'r', default_value = "3", value_parser = parse_rounds, value_name = "R")]
        rounds: u32,
        /// The machine both guests run on: microvm or q35
        #[arg(long, short = 'M', default_value = "microvm", value_name = "MACHINE")]
        machine: Machine,
        /// Skip the memory probe
        #[arg(long)]
        no_mem: bool,
        /// vCPUs: above 1, both systems at 1 and at N vCPUs side by side
        /// (nginx: worker_processes auto), with the host CPU QEMU and wrk
        /// used, instead of the boot, memory and target tables
        #[arg(long, default_value_t = 1, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..=64))]
        smp: u32,
        /// Forced accelerator.
        #[command(flatten)]
        accel: AccelArg,
    },
    /// HTTPS: httpd --tls next to Linux + nginx + OpenSSL in the same QEMU, alternated (root)
    #[command(
        long_about = "HTTPS from httpd's TLS flavour (rustls + ring) and from Linux + nginx + \
                      OpenSSL (Debian packages) in the same QEMU, both guests running, each in \
                      a network namespace of its own (root), with the same ECDSA P-256 \
                      certificate and TLS 1.3 suite: full handshakes/s with ECDHE P-256 and \
                      X25519 (new connection per request, no resumption), 1 KiB requests/s over \
                      kept-alive TLS and 16 MiB MB/s (connections opened before the clock \
                      starts), in R rounds that alternate which \
                      system goes first; prints medians, ratios, the targets (handshakes/s and \
                      bulk MB/s >= nginx; a missed one never fails the run) and the stripped \
                      image size with and without TLS. A guest that stalls fails the run with \
                      its console tail."
    )]
    Tls {
        /// Seconds per measurement
        #[arg(long, short = 's', default_value = "5", value_parser = parse_secs, value_name = "S")]
        secs: u64,
        /// Kept-alive connections of the 1 KiB measurement
        #[arg(long, short = 'c', default_value = "64", value_parser = parse_conns, value_name = "N")]
        conns: u32,
        /// Rounds (each measures everything on both systems)
        #[arg(long, short = 'r', default_value = "3", value_parser = parse_rounds, value_name = "R")]
        rounds: u32,
        /// Concurrent clients of the handshake measurement
        #[arg(long, default_value = "32", value_parser = parse_hs_clients, value_name = "N")]
        hs_clients: u32,
        /// The machine both guests run on: microvm or q35
        #[arg(long, short = 'M', default_value = "microvm", value_name = "MACHINE")]
        machine: Machine,
        /// Forced accelerator.
        #[command(flatten)]
        accel: AccelArg,
    },
    /// httpd under alternating keep-alive and Connection: close load for a long time, memory sampled (root)
    #[command(
        long_about = "httpd over TAP in a private network namespace (root) under rounds of \
                      64 kept-alive connections and of 200 Connection: close clients, for M \
                      minutes; the guest's memory (frames, heap, connections, socket buffers, \
                      TIME-WAIT records) is sampled every minute from its diagnostic dump. \
                      Exits 1 if memory grew after the first sample or the server stopped \
                      serving. Not part of the test suite."
    )]
    Soak {
        /// How long to run
        #[arg(long, default_value = "30", value_name = "MINUTES")]
        minutes: u64,
        /// Guest memory
        #[arg(long, default_value = "64M", value_name = "SIZE")]
        mem: MemSize,
        /// Forced accelerator.
        #[command(flatten)]
        accel: AccelArg,
    },
}

/// Parses the arguments after `uk`.
pub fn parse(args: &[String]) -> Result<Cmd, clap::Error> {
    Cli::try_parse_from(std::iter::once("uk".to_string()).chain(args.iter().cloned()))
        .map(|c| c.cmd)
}

/// The clap command, for help texts and completions.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Runs the CLI with the arguments after `uk`; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let cmd = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and exit 0; usage errors
            // print to stderr (with suggestions) and exit 2.
            let _ = e.print();
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
        Cmd::Build { app, debug, tls } => {
            let profile = if debug {
                Profile::Debug
            } else {
                Profile::Release
            };
            let flavor = if tls {
                crate::build::Flavor::Tls
            } else {
                crate::build::Flavor::Plain
            };
            let image = crate::build::build_image_flavor(&app, profile, flavor, false)?;
            let size = file_size(&image)?;
            let stripped = crate::elf::stripped_size(&image)?;
            println!(
                "{}  {size} bytes ({:.1} KiB; {stripped} stripped)",
                display_path(&image),
                size as f64 / 1024.0
            );
            Ok(0)
        }
        Cmd::Run(r) => run(r),
        Cmd::Test { extra } => test(&extra),
        Cmd::Image {
            app,
            site,
            out,
            format,
            site_args,
            acme,
            state_disk,
        } => {
            let app = app.unwrap_or_else(|| default_app().to_string());
            check_app(&app)?;
            if let Some(f) = &state_disk {
                if format != crate::image::ImageFormat::Ext4 {
                    return Err(Error::Usage(
                        "--state-disk goes with the ext4 format (a -kernel boot); attach it \
                         to other formats as a second virtio-blk disk"
                            .into(),
                    ));
                }
                crate::statedisk::prepare(f)?;
            }
            let sc = site_config(&app, Some(&site), &site_args)?;
            let mut args = sc.as_ref().map(|c| c.httpd_args()).unwrap_or_default();
            let mut files = sc.as_ref().map(|c| c.disk_files()).unwrap_or_default();
            if acme.is_set() {
                if app != "httpd" {
                    return Err(Error::Usage("--acme-* is for httpd".into()));
                }
                args.extend(acme.httpd_args()?);
                files.extend(acme.disk_files());
            }
            // HTTPS (files or ACME): the TLS build of httpd serves it.
            let flavor = if sc.as_ref().is_some_and(|c| c.tls.is_some()) || acme.is_set() {
                crate::build::Flavor::Tls
            } else {
                crate::build::Flavor::Plain
            };
            if state_disk.is_some() && flavor != crate::build::Flavor::Tls {
                eprintln!("{STATE_DISK_PLAIN}");
            }
            if format != crate::image::ImageFormat::Ext4 {
                return crate::bootdisk::image_command(
                    &app, &site, &out, format, &args, &files, flavor,
                );
            }
            let size = crate::progress::step(
                &format!(
                    "packing {} into {}",
                    display_path(&site),
                    display_path(&out)
                ),
                || crate::image::build_image_with(&site, &out, format, &files),
            )?;
            for (host, guest) in &files {
                println!("{} -> {guest} on the disk", display_path(host));
            }
            println!(
                "{}  {size} bytes ({:.1} MiB, ext4 of {})",
                display_path(&out),
                size as f64 / (1024.0 * 1024.0),
                display_path(&site)
            );
            // The kernel that serves it, and how to boot the pair.
            let kernel = crate::build::build_image_flavor(&app, Profile::Release, flavor, false)?;
            let mut cfg = VmConfig::new(&kernel);
            cfg.disk = Some(out.clone());
            cfg.state_disk = state_disk;
            cfg.args = args;
            cfg.apply_app_defaults(&app);
            if let Some(port) = sc.as_ref().and_then(|c| c.port) {
                forward_default_to(&mut cfg, port);
            }
            if flavor == crate::build::Flavor::Tls {
                cfg.fwds.push(crate::qemu::PortFwd {
                    host: crate::tls::LOCAL_HTTPS_PORT,
                    guest: 443,
                });
            }
            println!("{}  ({app} kernel)", display_path(&kernel));
            println!("boot: {}", render_command(&qemu_command(&cfg)));
            Ok(0)
        }
        Cmd::Bench(b) => bench_cmd(b),
        Cmd::Ps => crate::vms::ps(),
        Cmd::Logs { name, follow } => crate::vms::logs(&name, follow),
        Cmd::Stop { name, timeout } => crate::vms::stop(&name, Duration::from_secs(timeout)),
        Cmd::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut command(), "uk", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::NetClient { args } => crate::netclient::main(&args),
    }
}

fn bench_cmd(b: BenchCmd) -> Result<i32, Error> {
    match b {
        BenchCmd::Boot { runs, accel } => bench_boot(runs, accel.get()),
        BenchCmd::Sched { runs, accel } => bench_sched(runs, accel.get()),
        BenchCmd::Idle { secs, accel } => bench_idle(secs, accel.get()),
        BenchCmd::Fs { accel } => crate::fsbench::bench_fs(accel.get()),
        BenchCmd::Net { secs, accel } => crate::netbench::bench_net(secs, accel.get()),
        BenchCmd::Paths {
            runs,
            machine,
            accel,
        } => crate::pathsbench::bench_paths(runs, machine, accel.get()),
        BenchCmd::Epoll {
            runs,
            machine,
            accel,
        } => crate::netbench::bench_epoll(runs, machine, accel.get()),
        BenchCmd::Soak {
            minutes,
            mem,
            accel,
        } => crate::soakbench::bench_soak(minutes, mem, accel.get()),
        BenchCmd::Http {
            secs,
            conns,
            smp,
            rounds,
            accel,
        } => crate::httpbench::bench_http(secs, conns, smp, rounds, accel.get()),
        BenchCmd::Compare {
            secs,
            conns,
            rounds,
            machine,
            no_mem,
            smp,
            accel,
        } => crate::comparebench::bench_compare(&crate::comparebench::CompareArgs {
            secs,
            conns,
            rounds,
            machine,
            accel: accel.get(),
            no_mem,
            smp,
        }),
        BenchCmd::Tls {
            secs,
            conns,
            rounds,
            hs_clients,
            machine,
            accel,
        } => crate::tlsbench::bench_tls(&crate::tlsbench::TlsArgs {
            secs,
            conns,
            rounds,
            hs_clients,
            machine,
            accel: accel.get(),
        }),
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

/// Said when a state disk goes with an image that does not mount it.
const STATE_DISK_PLAIN: &str = "uk: note: only httpd's TLS image (--tls, --tls-cert, --acme-*) \
                                mounts the state disk; this image leaves it alone";

fn run(r: RunArgs) -> Result<i32, Error> {
    let app = r.app.clone().unwrap_or_else(|| default_app().to_string());
    check_app(&app)?;
    ensure_qemu()?;
    let profile = if r.debug {
        Profile::Debug
    } else {
        Profile::Release
    };
    if r.tls && app != "httpd" {
        return Err(Error::Usage(format!("--tls is httpd's, not {app}'s")));
    }
    // httpd without --site serves the built-in demo site.
    let site = r
        .site
        .clone()
        .or_else(|| (app == "httpd").then(crate::workspace::demo_site));
    let mut sc = site_config(&app, site.as_deref(), &r.site_args)?;
    if r.tls && sc.as_ref().is_none_or(|c| c.tls.is_none()) {
        let (files, made) = crate::tls::local_cert()?;
        eprintln!(
            "uk: {} self-signed certificate for localhost and 127.0.0.1: {} (trust it with \
             curl --cacert {})",
            if made { "made a" } else { "using the" },
            display_path(&files.cert),
            display_path(&files.cert)
        );
        sc.get_or_insert_default().tls = Some(files);
    }
    let tls = sc.as_ref().is_some_and(|c| c.tls.is_some());
    let flavor = if tls {
        crate::build::Flavor::Tls
    } else {
        crate::build::Flavor::Plain
    };
    let image = crate::build::build_image_flavor(&app, profile, flavor, false)?;
    let mut cfg = VmConfig {
        image,
        machine: r.machine,
        mem: r.mem,
        accel: r.accel.get().unwrap_or_else(Accel::detect),
        smp: r.smp,
        append: r.append_line(),
        args: r.args.clone(),
        fwds: r.fwds.clone(),
        net: false,
        tap: None,
        queues: 1,
        netns: None,
        dgram: None,
        disk: None,
        disk_bus: crate::qemu::DiskBus::Blk,
        state_disk: r.state_disk.clone(),
    };
    if let Some(f) = &r.state_disk {
        crate::statedisk::prepare(f)?;
        if flavor != crate::build::Flavor::Tls {
            eprintln!("{STATE_DISK_PLAIN}");
        }
    }
    if let Some(sc) = &sc {
        // The site's settings first, the user's own arguments after them.
        let mut args = sc.httpd_args();
        args.append(&mut cfg.args);
        cfg.args = args;
    }
    cfg.apply_app_defaults(&app);
    if let Some(port) = sc.as_ref().and_then(|c| c.port)
        && r.fwds.is_empty()
    {
        forward_default_to(&mut cfg, port);
    }
    // HTTPS: 127.0.0.1:8443 to the guest's 443, beside the defaults.
    if tls && r.fwds.is_empty() {
        cfg.fwds.push(crate::qemu::PortFwd {
            host: crate::tls::LOCAL_HTTPS_PORT,
            guest: 443,
        });
    }
    let files = sc.as_ref().map(|c| c.disk_files()).unwrap_or_default();
    if r.detach {
        return crate::vms::start(
            &app,
            r.name.as_deref(),
            cfg,
            site.as_deref(),
            &files,
            r.verbose,
        );
    }
    let disk = match &site {
        Some(dir) => Some(crate::image::TempImage::from_dir_with(dir, &files)?),
        None => None,
    };
    cfg.disk = disk.as_ref().map(|d| d.path.clone());
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
        let port = sc.as_ref().and_then(|c| c.port).unwrap_or(80);
        if let Some(f) = cfg.fwds.iter().find(|f| f.guest == port) {
            println!("http://127.0.0.1:{}/", f.host);
        }
        if tls && let Some(f) = cfg.fwds.iter().find(|f| f.guest == 443) {
            println!("https://localhost:{}/", f.host);
        }
    }
    // QEMU dies with the CLI; SIGINT, SIGTERM and SIGHUP stop it first.
    let mut child = crate::proc::spawn_foreground(&mut cmd)
        .map_err(|e| Error::Failed(format!("cannot start {}: {e}", crate::QEMU)))?;
    let (status, signal) = crate::proc::wait_forwarding(&mut child, Duration::from_secs(5))
        .map_err(|e| Error::Failed(format!("waiting for {}: {e}", crate::QEMU)))?;
    drop(disk);
    if let Some(sig) = signal {
        eprintln!("uk: stopped by signal {sig}; the VM is stopped");
        return Ok(128 + sig);
    }
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

/// The site settings for `app` from `site`'s uk.toml and the flags. Only
/// httpd has them: for another app, flags are a usage error and a uk.toml is
/// left alone.
fn site_config(
    app: &str,
    site: Option<&Path>,
    flags: &crate::siteconfig::SiteArgs,
) -> Result<Option<crate::siteconfig::SiteConfig>, Error> {
    if app != "httpd" {
        if *flags != crate::siteconfig::SiteArgs::default() {
            return Err(Error::Usage(format!(
                "--port, --header, --cache, --redirect, --error-page and --listing are httpd's \
                 settings, not {app}'s"
            )));
        }
        return Ok(None);
    }
    let sc = crate::siteconfig::for_site(site, flags)?;
    if let Some(dir) = site
        && dir.join(crate::siteconfig::FILE_NAME).is_file()
    {
        eprintln!(
            "uk: site settings from {}",
            display_path(&dir.join(crate::siteconfig::FILE_NAME))
        );
    }
    Ok(sc)
}

/// Points the default forward (host 8080 → guest 80) at the guest's `port`.
fn forward_default_to(cfg: &mut VmConfig, port: u16) {
    for f in &mut cfg.fwds {
        if *f == crate::qemu::DEFAULT_FWD {
            f.guest = port;
        }
    }
}

fn test(extra: &[String]) -> Result<i32, Error> {
    crate::toolchain::ensure_target()?;
    ensure_qemu()?;
    // The disk-boot tests (tests/cloud.rs) need GRUB, FAT tools and OVMF:
    // installed here once (root), so parallel tests never race apt-get.
    if let Err(e) = crate::bootdisk::ensure_tools().and_then(|()| crate::bootdisk::ensure_ovmf()) {
        eprintln!("uk: warning: {e} (the disk-boot tests will fail)");
    }
    // The HTTP tests use curl as a real client; the namespace tests use ip;
    // the SYN-flood test uses hping3; the HTTPS test testssl.sh.
    let tools = [
        ("curl", "curl"),
        ("iproute2", "ip"),
        ("hping3", "hping3"),
        ("testssl.sh", "testssl"),
    ];
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(_, bin)| !crate::qemu::in_path(bin))
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        let present = || tools.iter().all(|(_, bin)| crate::qemu::in_path(bin));
        if let Err(e) =
            crate::qemu::apt_install(&missing, "test tools (curl, ip, hping3, testssl)", present)
        {
            eprintln!("uk: warning: {e}");
        }
    }
    // Tests that need root or KVM record themselves here when they skip
    // (uk_tests::skip), so the summary reports them as skipped, not passed.
    let skip_file = crate::target_dir().join("uk-test-skips.txt");
    let _ = std::fs::create_dir_all(crate::target_dir());
    let _ = std::fs::remove_file(&skip_file);
    let mut counts = TestCounts::default();
    let mut cargo_test = |pkg: Option<&str>| -> Result<bool, Error> {
        let mut cmd = cargo();
        // Report every failing test binary, not just the first.
        cmd.current_dir(root()).args(["test", "--no-fail-fast"]);
        if let Some(p) = pkg {
            cmd.args(["--package", p]);
        }
        cmd.args(extra)
            .env("UK_TEST_SKIP_FILE", &skip_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        eprintln!("uk: {}", render_command(&cmd));
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Failed(format!("cannot run cargo: {e}")))?;
        // libtest's output goes on to our stdout, line by line, and its
        // "test result:" lines are counted.
        let out = child.stdout.take().expect("piped stdout");
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            println!("{line}");
            counts.add_line(&line);
        }
        child
            .wait()
            .map(|s| s.success())
            .map_err(|e| Error::Failed(format!("cannot run cargo: {e}")))
    };
    let host = cargo_test(None)?;
    let qemu = cargo_test(Some("uk-tests"))?;
    let skipped = read_skips(&skip_file);
    println!();
    if !skipped.is_empty() {
        println!(
            "uk: {} test(s) skipped (they need root or KVM; counted as skipped, not passed):",
            skipped.len()
        );
        for (name, reason) in &skipped {
            println!("uk:   {name}: {reason}");
        }
    }
    println!(
        "uk: host tests {}, QEMU tests {}",
        if host { "passed" } else { "FAILED" },
        if qemu { "passed" } else { "FAILED" }
    );
    println!("{}", counts.summary(skipped.len() as u64));
    let strict = std::env::var_os("UK_FAIL_ON_SKIP").is_some_and(|v| v == "1");
    if strict && !skipped.is_empty() {
        eprintln!("uk: UK_FAIL_ON_SKIP=1 and tests were skipped: failing");
        return Ok(1);
    }
    Ok(if host && qemu { 0 } else { 1 })
}

/// Totals over libtest's `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestCounts {
    /// Passed (including tests that skipped themselves).
    pub passed: u64,
    /// Failed.
    pub failed: u64,
    /// `#[ignore]`d.
    pub ignored: u64,
}

impl TestCounts {
    /// Adds a `test result: ok. 3 passed; 1 failed; 0 ignored; ...` line.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let (n, what) = match words.as_slice() {
                [.., n, w] => (n.parse::<u64>().unwrap_or(0), *w),
                _ => continue,
            };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }

    /// `summary: 120 passed, 0 failed, 4 skipped` (skipped tests are taken
    /// out of libtest's passed count; `#[ignore]`d ones are added).
    pub fn summary(&self, skipped: u64) -> String {
        format!(
            "summary: {} passed, {} failed, {} skipped",
            self.passed.saturating_sub(skipped),
            self.failed,
            skipped + self.ignored
        )
    }
}

/// The `NAME<TAB>REASON` lines the skipping tests wrote.
pub fn read_skips(path: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect();
    v.sort();
    v.dedup();
    v
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
        let samples = crate::progress::step(&format!("{machine}: {runs} boots"), || {
            let mut samples = Vec::with_capacity(runs);
            for i in 0..runs {
                let s = bench::boot_once(&cfg, Duration::from_secs(120))
                    .map_err(|e| Error::Failed(format!("{machine} run {}/{runs}: {e}", i + 1)))?;
                samples.push(s);
            }
            Ok::<_, Error>(samples)
        })?;
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
        let samples = crate::progress::step(&format!("{machine}: {runs} runs"), || {
            let mut samples = Vec::with_capacity(runs);
            for i in 0..runs {
                let s = bench::sched_once(&cfg, Duration::from_secs(300))
                    .map_err(|e| Error::Failed(format!("{machine} run {}/{runs}: {e}", i + 1)))?;
                samples.push(s);
            }
            Ok::<_, Error>(samples)
        })?;
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
        let s = crate::progress::step(&format!("{machine}: idle {secs} s"), || {
            bench::idle_once(&cfg, timeout).map_err(|e| Error::Failed(format!("{machine}: {e}")))
        })?;
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

    fn p(args: &[&str]) -> Result<Cmd, clap::Error> {
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

    /// A usage error: exit status 2 and its message.
    fn usage_err(args: &[&str]) -> String {
        let e = p(args).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        e.to_string()
    }

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn help_and_version_exit_0() {
        for args in [
            &["--help"][..],
            &["help"],
            &["run", "--help"],
            &["help", "run"],
            &["bench", "compare", "--help"],
            &["image", "-h"],
            &["--version"],
        ] {
            let e = p(args).unwrap_err();
            assert_eq!(e.exit_code(), 0, "{args:?}");
        }
        // No command: the help, as a usage error.
        assert_eq!(p(&[]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn typos_get_suggestions() {
        assert!(usage_err(&["biuld", "hello"]).contains("similar"));
        assert!(usage_err(&["run", "--machin", "q35"]).contains("--machine"));
        assert!(usage_err(&["bench", "comapre"]).contains("compare"));
    }

    #[test]
    fn build() {
        assert_eq!(
            p(&["build", "hello"]).unwrap(),
            Cmd::Build {
                app: "hello".into(),
                debug: false,
                tls: false
            }
        );
        assert_eq!(
            p(&["build", "--debug", "selftest"]).unwrap(),
            Cmd::Build {
                app: "selftest".into(),
                debug: true,
                tls: false
            }
        );
        assert_eq!(
            p(&["build", "httpd", "--tls"]).unwrap(),
            Cmd::Build {
                app: "httpd".into(),
                debug: false,
                tls: true
            }
        );
        usage_err(&["build"]);
        usage_err(&["build", "hello", "--fast"]);
        usage_err(&["build", "hello", "more"]);
        usage_err(&["build", "hello", "--debug=yes"]);
    }

    #[test]
    fn run_defaults() {
        let r = run_args(&[]);
        assert_eq!(r.machine, Machine::Microvm);
        assert_eq!(r.mem.to_qemu(), "64M");
        assert_eq!(r.app, None);
        assert_eq!(r.accel.get(), None);
        assert!(r.fwds.is_empty() && r.args.is_empty() && !r.detach);
        assert_eq!(r.append_line(), "");
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
        assert_eq!(r.accel.get(), Some(Accel::Tcg));
        assert!(r.verbose && r.debug);
        assert_eq!(r.append_line(), "log=debug x=1");
        assert_eq!(r.args, ["args", "a", "b c", "--tcg"]);
    }

    #[test]
    fn run_flags_anywhere() {
        let r = run_args(&["--kvm", "--mem", "512K", "hello", "--machine=microvm"]);
        assert_eq!(r.app.as_deref(), Some("hello"));
        assert_eq!(r.accel.get(), Some(Accel::Kvm));
        assert_eq!(r.mem.0, 512 * 1024);
        assert_eq!(r.machine, Machine::Microvm);
        assert_eq!(r.smp, 1);
        assert_eq!(run_args(&["--smp", "4", "hello"]).smp, 4);
        assert!(usage_err(&["run", "--smp", "0"]).contains("--smp"));
        assert!(usage_err(&["run", "--smp=65"]).contains("--smp"));
        let r = run_args(&["--append", "a=1", "--append", "b=2"]);
        assert_eq!(r.append_line(), "a=1 b=2");
        let r = run_args(&["--", "--help"]);
        assert_eq!(r.args, ["--help"]);
        assert_eq!(r.app, None);
        let r = run_args(&["-d", "--name", "web", "httpd"]);
        assert!(r.detach);
        assert_eq!(r.name.as_deref(), Some("web"));
    }

    #[test]
    fn run_errors() {
        usage_err(&["run", "--bogus"]);
        assert!(usage_err(&["run", "--machine", "pc"]).contains("unknown machine 'pc'"));
        usage_err(&["run", "--machine"]);
        assert!(usage_err(&["run", "--mem", "lots"]).contains("bad memory size"));
        assert!(usage_err(&["run", "--fwd", "x:80"]).contains("bad port forward"));
        usage_err(&["run", "hello", "extra"]);
        usage_err(&["run", "-x"]);
        usage_err(&["run", "--kvm", "--tcg"]);
        usage_err(&["run", "--name", "x"]);
        // The TLS files go together.
        assert!(usage_err(&["run", "--tls-cert", "c.pem"]).contains("--tls-key"));
        assert!(
            usage_err(&["image", "--site", "s", "-o", "o", "--tls-key", "k"])
                .contains("--tls-cert")
        );
    }

    #[test]
    fn state_disk_flag() {
        let r = run_args(&["--tls", "--state-disk", "s.img"]);
        assert_eq!(r.state_disk.as_deref(), Some(Path::new("s.img")));
        assert_eq!(run_args(&[]).state_disk, None);
        match p(&["image", "--site", "s", "-o", "o", "--state-disk", "st.img"]).unwrap() {
            Cmd::Image { state_disk, .. } => {
                assert_eq!(state_disk.as_deref(), Some(Path::new("st.img")))
            }
            c => panic!("{c:?}"),
        }
        assert!(usage_err(&["run", "--state-disk"]).contains("FILE"));
    }

    #[test]
    fn run_tls_flags() {
        let r = run_args(&["--tls"]);
        assert!(r.tls);
        let r = run_args(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--redirect-https",
            "--hsts",
            "60",
        ]);
        assert!(!r.tls);
        assert_eq!(r.site_args.tls_cert.as_deref(), Some(Path::new("c.pem")));
        assert_eq!(r.site_args.tls_key.as_deref(), Some(Path::new("k.pem")));
        assert!(r.site_args.redirect_https);
        assert_eq!(r.site_args.hsts, Some(60));
        // Not a file that exists: refused before anything is built.
        let e = site_config("httpd", None, &r.site_args).unwrap_err();
        assert!(e.message().contains("c.pem"), "{}", e.message());
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn test_passes_everything_on() {
        assert_eq!(p(&["test"]).unwrap(), Cmd::Test { extra: vec![] });
        assert_eq!(
            p(&["test", "boot", "--", "--nocapture"]).unwrap(),
            Cmd::Test {
                extra: vec!["boot".into(), "--".into(), "--nocapture".into()]
            }
        );
        assert_eq!(
            p(&["test", "--", "boot"]).unwrap(),
            Cmd::Test {
                extra: vec!["boot".into()]
            }
        );
        assert_eq!(
            p(&["test", "--release", "-p", "uk-tests"]).unwrap(),
            Cmd::Test {
                extra: vec!["--release".into(), "-p".into(), "uk-tests".into()]
            }
        );
    }

    #[test]
    fn bench_defaults_and_flags() {
        let acc = |kvm, tcg| AccelArg { kvm, tcg };
        assert_eq!(
            p(&["bench", "boot"]).unwrap(),
            Cmd::Bench(BenchCmd::Boot {
                runs: 10,
                accel: acc(false, false)
            })
        );
        assert_eq!(
            p(&["bench", "boot", "--runs=5", "--tcg"]).unwrap(),
            Cmd::Bench(BenchCmd::Boot {
                runs: 5,
                accel: acc(false, true)
            })
        );
        assert_eq!(
            p(&["bench", "sched", "-n", "7", "--kvm"]).unwrap(),
            Cmd::Bench(BenchCmd::Sched {
                runs: 7,
                accel: acc(true, false)
            })
        );
        assert_eq!(
            p(&["bench", "idle", "-s", "2"]).unwrap(),
            Cmd::Bench(BenchCmd::Idle {
                secs: 2,
                accel: acc(false, false)
            })
        );
        assert_eq!(
            p(&["bench", "http"]).unwrap(),
            Cmd::Bench(BenchCmd::Http {
                secs: 10,
                conns: 64,
                smp: 1,
                rounds: 1,
                accel: acc(false, false)
            })
        );
        assert_eq!(
            p(&["bench", "compare", "--secs=3", "--no-mem", "-M", "q35"]).unwrap(),
            Cmd::Bench(BenchCmd::Compare {
                secs: 3,
                conns: 64,
                rounds: 3,
                machine: Machine::Q35,
                no_mem: true,
                smp: 1,
                accel: acc(false, false)
            })
        );
        assert_eq!(
            p(&["bench", "tls"]).unwrap(),
            Cmd::Bench(BenchCmd::Tls {
                secs: 5,
                conns: 64,
                rounds: 3,
                hs_clients: 32,
                machine: Machine::Microvm,
                accel: acc(false, false)
            })
        );
        assert_eq!(
            p(&[
                "bench",
                "tls",
                "-s",
                "2",
                "-c",
                "16",
                "--rounds=1",
                "--hs-clients",
                "8",
                "-M",
                "q35",
                "--tcg"
            ])
            .unwrap(),
            Cmd::Bench(BenchCmd::Tls {
                secs: 2,
                conns: 16,
                rounds: 1,
                hs_clients: 8,
                machine: Machine::Q35,
                accel: acc(false, true)
            })
        );
        assert!(usage_err(&["bench", "tls", "--rounds", "0"]).contains("(1 to 20)"));
        assert!(usage_err(&["bench", "tls", "--rounds", "21"]).contains("(1 to 20)"));
        assert!(usage_err(&["bench", "tls", "--hs-clients", "0"]).contains("(1 to 256)"));
        assert_eq!(
            p(&["bench", "paths", "--runs", "20", "--machine=q35", "--kvm"]).unwrap(),
            Cmd::Bench(BenchCmd::Paths {
                runs: 20,
                machine: Machine::Q35,
                accel: acc(true, false)
            })
        );
        assert_eq!(
            p(&["bench", "epoll"]).unwrap(),
            Cmd::Bench(BenchCmd::Epoll {
                runs: 3,
                machine: Machine::Microvm,
                accel: acc(false, false)
            })
        );
        assert_eq!(
            p(&["bench", "net", "--secs=2"]).unwrap(),
            Cmd::Bench(BenchCmd::Net {
                secs: 2,
                accel: acc(false, false)
            })
        );
        assert_eq!(
            p(&["bench", "fs", "--tcg"]).unwrap(),
            Cmd::Bench(BenchCmd::Fs {
                accel: acc(false, true)
            })
        );
        usage_err(&["bench"]);
        usage_err(&["bench", "frob"]);
        assert!(usage_err(&["bench", "boot", "--runs", "0"]).contains("bad count '0'"));
        assert!(usage_err(&["bench", "net", "-s", "601"]).contains("(1 to 600)"));
        usage_err(&["bench", "net", "--machine", "q35"]);
        usage_err(&["bench", "idle", "--runs", "3"]);
        usage_err(&["bench", "sched", "--kvm=1"]);
    }

    #[test]
    fn image_ps_logs_stop_completions() {
        match p(&["image", "--site", "www", "-o", "site.img"]).unwrap() {
            Cmd::Image {
                app,
                site,
                out,
                format,
                ..
            } => {
                assert_eq!(app, None);
                assert_eq!(site, PathBuf::from("www"));
                assert_eq!(out, PathBuf::from("site.img"));
                assert_eq!(format, crate::image::ImageFormat::Ext4);
            }
            c => panic!("{c:?}"),
        }
        assert!(matches!(
            p(&["image", "httpd", "--site=d", "-o", "x", "--format", "raw"]).unwrap(),
            Cmd::Image {
                format: crate::image::ImageFormat::Raw,
                ..
            }
        ));
        usage_err(&["image", "httpd", "-o", "x"]);
        usage_err(&["image", "httpd", "--site", "d"]);
        assert!(
            usage_err(&["image", "a", "--site=d", "-o", "x", "--format", "iso"])
                .contains("unknown image format 'iso'")
        );
        assert_eq!(p(&["ps"]).unwrap(), Cmd::Ps);
        assert_eq!(
            p(&["logs", "web", "-f"]).unwrap(),
            Cmd::Logs {
                name: "web".into(),
                follow: true
            }
        );
        assert_eq!(
            p(&["stop", "web"]).unwrap(),
            Cmd::Stop {
                name: "web".into(),
                timeout: 15
            }
        );
        for sh in ["bash", "zsh", "fish"] {
            assert!(p(&["completions", sh]).is_ok());
        }
        usage_err(&["completions", "tcsh"]);
    }

    #[test]
    fn test_counts_and_skips() {
        let mut c = TestCounts::default();
        c.add_line("test result: ok. 13 passed; 0 failed; 1 ignored; 0 measured; 78 filtered out; finished in 0.02s");
        c.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("running 4 tests");
        assert_eq!(
            c,
            TestCounts {
                passed: 16,
                failed: 2,
                ignored: 1
            }
        );
        assert_eq!(c.summary(4), "summary: 12 passed, 2 failed, 5 skipped");
        let f = std::env::temp_dir().join(format!("uk-skips-{}", std::process::id()));
        std::fs::write(
            &f,
            "net::a\tneeds root\nio::b\tneeds root\nnet::a\tneeds root\n",
        )
        .unwrap();
        assert_eq!(
            read_skips(&f),
            [
                ("io::b".to_string(), "needs root".to_string()),
                ("net::a".to_string(), "needs root".to_string())
            ]
        );
        std::fs::remove_file(&f).unwrap();
        assert!(read_skips(&f).is_empty());
    }

    #[test]
    fn site_flags() {
        let r = run_args(&[
            "--port",
            "8081",
            "--header",
            "X-A: 1",
            "--cache",
            "/a/*=no-store",
            "--redirect",
            "/old /new 302",
            "--error-page",
            "404=/404.html",
            "--listing",
            "on",
        ]);
        assert_eq!(r.site_args.port, Some(8081));
        assert_eq!(r.site_args.headers, ["X-A: 1"]);
        assert_eq!(r.site_args.cache, ["/a/*=no-store"]);
        assert_eq!(r.site_args.redirects, ["/old /new 302"]);
        assert_eq!(r.site_args.error_pages, ["404=/404.html"]);
        assert_eq!(r.site_args.listing.as_deref(), Some("on"));
        usage_err(&["run", "--listing", "maybe"]);
        assert!(matches!(
            p(&["image", "--site", "d", "-o", "x", "--header", "X-A: 1"]).unwrap(),
            Cmd::Image { site_args, .. } if site_args.headers == ["X-A: 1"]
        ));
        let e = site_config("hello", None, &r.site_args).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let c = site_config("httpd", None, &r.site_args).unwrap().unwrap();
        assert_eq!(c.port, Some(8081));
        assert_eq!(
            site_config("hello", None, &Default::default()).unwrap(),
            None
        );
    }

    /// Every command the help lists, and each of its long flags, is in the
    /// README.
    #[test]
    fn readme_matches_the_help() {
        let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
        fn walk(cmd: &clap::Command, path: String, readme: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
                if sub.get_name() == "help" {
                    continue;
                }
                let p = format!("{path} {}", sub.get_name());
                if sub.get_subcommands().next().is_none() && !readme.contains(&format!("`{p}")) {
                    missing.push(p.clone());
                }
                for a in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                    if let Some(l) = a.get_long()
                        && !matches!(l, "help" | "version")
                        && !readme.contains(&format!("--{l}"))
                    {
                        missing.push(format!("{p} --{l}"));
                    }
                }
                walk(sub, p, readme, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&command(), "cargo uk".into(), &readme, &mut missing);
        // bench's subcommands are listed as `cargo uk bench boot|sched|...`.
        missing.retain(|m| {
            let Some(name) = m.strip_prefix("cargo uk bench ") else {
                return true;
            };
            name.contains(" --")
                || !(readme.contains(&format!("bench {name}"))
                    || readme.contains(&format!("|{name}")))
        });
        assert!(missing.is_empty(), "not in README.md: {missing:?}");
    }

    #[test]
    fn netclient_is_hidden() {
        assert_eq!(
            p(&["__netclient", "cps", "addr=10.77.0.2:7"]).unwrap(),
            Cmd::NetClient {
                args: vec!["cps".into(), "addr=10.77.0.2:7".into()]
            }
        );
        let help = command().render_long_help().to_string();
        assert!(!help.contains("__netclient"));
        assert!(help.contains("completions"));
    }

    #[test]
    fn completions_mention_every_command() {
        let mut out = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut command(), "uk", &mut out);
        let s = String::from_utf8(out).unwrap();
        for c in [
            "build", "run", "image", "test", "bench", "ps", "logs", "stop",
        ] {
            assert!(s.contains(c), "{c}");
        }
    }
}
