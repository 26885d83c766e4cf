//! The QEMU command line, accelerator choice, exit-status mapping and
//! making sure QEMU is installed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::str::FromStr;

use crate::Error;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// Apps that get a network device (and the default `8080:80` forward) even
/// without `--fwd`.
// echo joins this list once its tests stop passing their own forwards.
pub const NET_APPS: &[&str] = &["httpd"];

/// The default host:guest forward for [`NET_APPS`].
pub const DEFAULT_FWD: PortFwd = PortFwd {
    host: 8080,
    guest: 80,
};

/// Kernel status conventions (written to isa-debug-exit by the kernel).
pub const STATUS_PANIC: i32 = 101;
/// Fatal CPU exception (page fault, stack overflow, ...).
pub const STATUS_EXCEPTION: i32 = 102;

/// The QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Machine {
    /// `-M microvm,x-option-roms=off,rtc=on`: virtio-mmio devices.
    #[default]
    Microvm,
    /// `-M q35`: PCI, virtio-pci devices.
    Q35,
}

impl Machine {
    /// Both machines, in the order the tests and the benchmark use.
    pub const ALL: [Machine; 2] = [Machine::Microvm, Machine::Q35];

    /// The lower-case name (`microvm`, `q35`).
    pub fn name(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm",
            Machine::Q35 => "q35",
        }
    }

    fn machine_arg(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm,x-option-roms=off,rtc=on",
            Machine::Q35 => "q35",
        }
    }

    fn blk_device(self) -> &'static str {
        match self {
            Machine::Microvm => "virtio-blk-device,drive=d0",
            Machine::Q35 => "virtio-blk-pci,drive=d0",
        }
    }

    /// The state disk's device (drive `d1`).
    fn state_blk_device(self) -> &'static str {
        match self {
            Machine::Microvm => "virtio-blk-device,drive=d1",
            Machine::Q35 => "virtio-blk-pci,drive=d1",
        }
    }

    fn net_device(self) -> &'static str {
        match self {
            Machine::Microvm => "virtio-net-device,netdev=net0",
            Machine::Q35 => "virtio-net-pci,netdev=net0",
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Machine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "microvm" => Ok(Machine::Microvm),
            "q35" => Ok(Machine::Q35),
            _ => Err(format!("unknown machine '{s}' (expected microvm or q35)")),
        }
    }
}

/// The QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accel {
    /// `-accel kvm -cpu host,-arch-capabilities`
    Kvm,
    /// `-accel tcg -cpu max`
    Tcg,
}

impl Accel {
    /// KVM if `/proc/cpuinfo` shows `vmx` or `svm` and `/dev/kvm` opens
    /// read-write; TCG otherwise (nested KVM without those flags is slower
    /// than TCG or broken).
    pub fn detect() -> Accel {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let kvm_ok = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        Self::choose(&cpuinfo, kvm_ok)
    }

    /// The decision of [`Accel::detect`], from its inputs.
    pub fn choose(cpuinfo: &str, dev_kvm_rw: bool) -> Accel {
        let virt = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .filter_map(|l| l.split_once(':'))
            .any(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        if virt && dev_kvm_rw {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    /// The lower-case name (`kvm`, `tcg`).
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host,-arch-capabilities"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }

    /// The accelerator, CPU model and vCPU count for QEMU: with more than
    /// one vCPU, `-smp N`, and TCG runs one host thread per vCPU
    /// (`-accel tcg,thread=multi`).
    pub fn vcpu_args(self, smp: u32) -> Vec<String> {
        let mut a: Vec<String> = self.args().iter().map(|s| s.to_string()).collect();
        if smp > 1 {
            if self == Accel::Tcg {
                a[1] = "tcg,thread=multi".to_string();
            }
            a.push("-smp".to_string());
            a.push(smp.to_string());
        }
        a
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A guest memory size, in bytes (a whole number of KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemSize(pub u64);

impl MemSize {
    /// The default: 64 MiB.
    pub const DEFAULT: MemSize = MemSize(64 << 20);

    /// The `-m` argument: `NG`, `NM` or `NK`, the largest exact unit.
    pub fn to_qemu(self) -> String {
        let b = self.0;
        if b.is_multiple_of(1 << 30) {
            format!("{}G", b >> 30)
        } else if b.is_multiple_of(1 << 20) {
            format!("{}M", b >> 20)
        } else {
            format!("{}K", b >> 10)
        }
    }
}

impl Default for MemSize {
    fn default() -> Self {
        MemSize::DEFAULT
    }
}

impl FromStr for MemSize {
    type Err = String;
    /// `512K`, `4M`, `64M`, `1G` (case-insensitive, optional `B`/`iB`
    /// suffix); a plain number is MiB, as for QEMU's `-m`.
    fn from_str(s: &str) -> Result<Self, String> {
        let err =
            || format!("bad memory size '{s}' (expected e.g. 512K, 64M, 1G or a number of MiB)");
        let t = s.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits_end);
        let n: u64 = num.parse().map_err(|_| err())?;
        let unit = unit.to_ascii_lowercase();
        let unit = unit
            .strip_suffix("ib")
            .or_else(|| unit.strip_suffix('b'))
            .unwrap_or(&unit);
        let shift = match unit {
            "" | "m" => 20,
            "k" => 10,
            "g" => 30,
            "t" => 40,
            _ => return Err(err()),
        };
        if n == 0 {
            return Err(format!("memory size '{s}' must not be zero"));
        }
        n.checked_mul(1 << shift)
            .filter(|&b| b <= 1 << 42)
            .map(MemSize)
            .ok_or_else(|| format!("memory size '{s}' is too large"))
    }
}

impl fmt::Display for MemSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_qemu())
    }
}

/// A TCP port forward from `127.0.0.1:host` to the guest's `guest` port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortFwd {
    /// The port on 127.0.0.1 on the host.
    pub host: u16,
    /// The port in the guest.
    pub guest: u16,
}

impl FromStr for PortFwd {
    type Err = String;
    /// `HOSTPORT:GUESTPORT`, or a single `PORT` for both.
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("bad port forward '{s}' (expected HOSTPORT:GUESTPORT, e.g. 8080:80)");
        let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(err);
        match s.split_once(':') {
            Some((h, g)) => Ok(PortFwd {
                host: port(h)?,
                guest: port(g)?,
            }),
            None => {
                let p = port(s)?;
                Ok(PortFwd { host: p, guest: p })
            }
        }
    }
}

impl fmt::Display for PortFwd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.guest)
    }
}

/// How the disk is attached: the bus the guest sees it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskBus {
    /// virtio-blk (`virtio-blk-pci` on q35, `virtio-blk-device` on microvm).
    #[default]
    Blk,
    /// A `scsi-hd` on a virtio-scsi host adapter (`virtio-scsi-pci` on q35,
    /// `virtio-scsi-device` on microvm): GCE's boot disk.
    Scsi,
    /// An NVMe controller (`nvme`, PCI: q35 only): GCE's newer machine
    /// types and EC2's Nitro instances.
    Nvme,
}

impl DiskBus {
    /// The `-device` arguments for drive `d0` on `machine`; `boot` adds
    /// `bootindex=0` (firmware boots from it).
    pub fn devices(self, machine: Machine, boot: bool) -> Vec<String> {
        let bootindex = if boot { ",bootindex=0" } else { "" };
        match (self, machine) {
            (DiskBus::Blk, m) => vec![format!("{}{bootindex}", m.blk_device())],
            (DiskBus::Scsi, Machine::Microvm) => vec![
                "virtio-scsi-device,id=scsi0".to_string(),
                format!("scsi-hd,drive=d0,bus=scsi0.0{bootindex}"),
            ],
            (DiskBus::Scsi, Machine::Q35) => vec![
                "virtio-scsi-pci,id=scsi0".to_string(),
                format!("scsi-hd,drive=d0,bus=scsi0.0{bootindex}"),
            ],
            (DiskBus::Nvme, _) => vec![format!("nvme,serial=uk0,drive=d0{bootindex}")],
        }
    }
}

/// Everything needed to boot one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// The kernel image (an ELF) for `-kernel`.
    pub image: PathBuf,
    /// The machine type.
    pub machine: Machine,
    /// Guest memory.
    pub mem: MemSize,
    /// The accelerator.
    pub accel: Accel,
    /// Virtual CPUs (`-smp`; 1 adds nothing to the command line).
    pub smp: u32,
    /// Kernel options (`k=v ...`), before the ` -- `.
    pub append: String,
    /// App arguments, after the ` -- `.
    pub args: Vec<String>,
    /// Host forwards; the network device exists if this is non-empty or
    /// `net` is set.
    pub fwds: Vec<PortFwd>,
    /// Add a network device even without forwards.
    pub net: bool,
    /// Attach the network device to this TAP interface instead of user
    /// networking (forwards are then ignored).
    pub tap: Option<String>,
    /// Queue pairs of the TAP network device (1: one, as without the
    /// option). More than one on q35 makes a multiqueue device
    /// (`-netdev tap,queues=N,vhost=off`, `virtio-net-pci,mq=on,
    /// vectors=2N+2`); the TAP interface must be `multi_queue` then.
    pub queues: u32,
    /// Run QEMU inside this network namespace (`ip netns exec NS ...`).
    pub netns: Option<String>,
    /// Attach the network device to a UDP socket instead (`-netdev dgram`):
    /// QEMU binds 127.0.0.1 port `.0` and sends each frame as one datagram
    /// to 127.0.0.1 port `.1` (a relay, in tests). Overrides `tap`.
    pub dgram: Option<(u16, u16)>,
    /// A raw disk image attached read-only as a virtio-blk device (the
    /// guest's root file system).
    pub disk: Option<PathBuf>,
    /// The bus `disk` is attached on (virtio-blk by default).
    pub disk_bus: DiskBus,
    /// A state disk (`cargo uk ... --state-disk`), attached writable as a
    /// second virtio-blk device.
    pub state_disk: Option<PathBuf>,
}

impl VmConfig {
    /// A config with the defaults: microvm, 64M, detected accelerator, no
    /// options, no args, no network.
    pub fn new(image: impl Into<PathBuf>) -> VmConfig {
        VmConfig {
            image: image.into(),
            machine: Machine::default(),
            mem: MemSize::default(),
            accel: Accel::detect(),
            smp: 1,
            append: String::new(),
            args: Vec::new(),
            fwds: Vec::new(),
            net: false,
            tap: None,
            queues: 1,
            netns: None,
            dgram: None,
            disk: None,
            disk_bus: DiskBus::Blk,
            state_disk: None,
        }
    }

    /// The `-netdev` and `-device` arguments of the network device on TAP
    /// interface `tap`: multiqueue with [`VmConfig::queues`] pairs on q35.
    pub fn tap_netdev(&self, tap: &str) -> (String, String) {
        let netdev = format!("tap,id=net0,ifname={tap},script=no,downscript=no");
        let device = self.machine.net_device();
        if self.queues > 1 && self.machine == Machine::Q35 {
            let n = self.queues;
            (
                format!("{netdev},queues={n},vhost=off"),
                format!("{device},mq=on,vectors={}", 2 * n + 2),
            )
        } else {
            (netdev, device.to_string())
        }
    }

    /// The defaults for `app`: a network device and the default forward
    /// `8080:80` if the app is in [`NET_APPS`] and `fwds` is empty.
    pub fn apply_app_defaults(&mut self, app: &str) {
        if NET_APPS.contains(&app) {
            self.net = true;
            if self.fwds.is_empty() {
                self.fwds.push(DEFAULT_FWD);
            }
        }
    }
}

/// Quotes an app argument for the kernel command line: in double quotes if
/// it is empty or contains whitespace.
fn quote_app_arg(arg: &str) -> String {
    if arg.is_empty() || arg.chars().any(char::is_whitespace) {
        format!("\"{arg}\"")
    } else {
        arg.to_string()
    }
}

/// The kernel command line: `OPTIONS -- ARGS`, each app arg in double quotes
/// if it contains whitespace.
pub fn kernel_cmdline(options: &str, args: &[String]) -> String {
    let args: Vec<String> = args.iter().map(|a| quote_app_arg(a)).collect();
    format!("{} -- {}", options.trim(), args.join(" "))
}

/// The QEMU command for `cfg`. Stdio is left to the caller.
pub fn qemu_command(cfg: &VmConfig) -> Command {
    let mut cmd = match &cfg.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, QEMU]);
            c
        }
        None => Command::new(QEMU),
    };
    cmd.args(["-M", cfg.machine.machine_arg()]);
    cmd.args(cfg.accel.vcpu_args(cfg.smp));
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ]);
    cmd.arg("-m").arg(cfg.mem.to_qemu());
    cmd.arg("-kernel").arg(&cfg.image);
    cmd.arg("-append")
        .arg(kernel_cmdline(&cfg.append, &cfg.args));
    cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    if let Some(disk) = &cfg.disk {
        cmd.arg("-drive").arg(format!(
            "if=none,id=d0,file={},format=raw,readonly=on",
            disk.display()
        ));
        for d in cfg.disk_bus.devices(cfg.machine, false) {
            cmd.arg("-device").arg(d);
        }
    }
    if let Some(state) = &cfg.state_disk {
        cmd.arg("-drive")
            .arg(format!("if=none,id=d1,file={},format=raw", state.display()));
        cmd.arg("-device").arg(cfg.machine.state_blk_device());
    }
    if let Some((local, remote)) = cfg.dgram {
        cmd.arg("-netdev").arg(format!(
            "dgram,id=net0,local.type=inet,local.host=127.0.0.1,local.port={local},\
             remote.type=inet,remote.host=127.0.0.1,remote.port={remote}"
        ));
        cmd.args(["-device", cfg.machine.net_device()]);
    } else if let Some(tap) = &cfg.tap {
        let (netdev, device) = cfg.tap_netdev(tap);
        cmd.arg("-netdev").arg(netdev);
        cmd.arg("-device").arg(device);
    } else if cfg.net || !cfg.fwds.is_empty() {
        let mut netdev = String::from("user,id=net0");
        for f in &cfg.fwds {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest));
        }
        cmd.arg("-netdev").arg(netdev);
        cmd.args(["-device", cfg.machine.net_device()]);
    }
    cmd
}

/// The command as a shell-pasteable line (for `-v` and error messages).
pub fn render_command(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` quoted for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:,=@+%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// How a QEMU run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The app's status: from isa-debug-exit (`(S << 1) | 1`), or 0 when the
    /// guest powered off cleanly.
    App(i32),
    /// QEMU itself failed with this (even, non-zero) exit code.
    Qemu(i32),
    /// QEMU was killed by a signal.
    Signal,
}

/// Maps QEMU's exit code (`None`: killed by a signal) to [`Exit`].
pub fn map_exit(code: Option<i32>) -> Exit {
    match code {
        None => Exit::Signal,
        Some(0) => Exit::App(0),
        Some(c) if c & 1 == 1 => Exit::App(c >> 1),
        Some(c) => Exit::Qemu(c),
    }
}

/// [`map_exit`] of an [`ExitStatus`].
pub fn map_exit_status(status: ExitStatus) -> Exit {
    map_exit(status.code())
}

impl Exit {
    /// A short human description (`status 0`, `kernel panic (status 101)`).
    pub fn describe(self) -> String {
        match self {
            Exit::App(STATUS_PANIC) => format!("kernel panic (status {STATUS_PANIC})"),
            Exit::App(STATUS_EXCEPTION) => {
                format!("fatal CPU exception (status {STATUS_EXCEPTION})")
            }
            Exit::App(s) => format!("status {s}"),
            Exit::Qemu(c) => format!("QEMU failed with exit code {c}"),
            Exit::Signal => "QEMU was killed by a signal".to_string(),
        }
    }

    /// The status for our own process to exit with.
    pub fn process_code(self) -> i32 {
        match self {
            Exit::App(s) | Exit::Qemu(s) => s,
            Exit::Signal => 1,
        }
    }
}

/// Whether `qemu-system-x86_64 --version` runs.
pub fn qemu_available() -> bool {
    version_runs(QEMU)
}

/// Whether `program --version` runs and succeeds (output discarded).
pub fn version_runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // The effective uid is the second field of the Uid line.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Runs `cmd` (stdin closed) and returns its stdout; a failure carries the
/// command line, exit status and stderr.
pub(crate) fn run_output(cmd: &mut Command) -> Result<String, Error> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Failed(format!("cannot run {}: {e}", render_command(cmd))))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Failed(format!(
            "{} failed ({}): {}",
            render_command(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether `prog` is a file in a folder of PATH.
pub fn in_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(prog).is_file()))
}

/// Makes sure QEMU is runnable: installs it with apt-get when running as
/// root, otherwise fails with [`Error::QemuMissing`].
pub fn ensure_qemu() -> Result<(), Error> {
    if qemu_available() {
        return Ok(());
    }
    apt_install(&["qemu-system-x86"], "QEMU", qemu_available).map_err(|_| Error::QemuMissing)
}

/// Installs Debian `packages` (needed for `what`) with apt-get when running
/// as root on a Debian-like system, until `present()` holds: first without,
/// then after an `apt-get update`. Otherwise, or if that fails, an error
/// with the exact command for the user to run.
pub fn apt_install(packages: &[&str], what: &str, present: impl Fn() -> bool) -> Result<(), Error> {
    let line = format!("apt-get install -y {}", packages.join(" "));
    let missing = || Error::Failed(format!("{what} is missing: run 'sudo {line}'"));
    if !(is_root() && in_path("apt-get")) {
        return Err(missing());
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = || {
        let mut args = vec!["install", "-y", "-q"];
        args.extend_from_slice(packages);
        apt(&args) && present()
    };
    eprintln!("uk: installing {what}: {line}");
    if install() {
        return Ok(());
    }
    eprintln!("uk: retrying after apt-get update");
    if !apt(&["update", "-q"]) {
        eprintln!("uk: apt-get update failed");
    }
    if install() { Ok(()) } else { Err(missing()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The value following `flag` (each occurrence).
    fn values(cmd: &Command, flag: &str) -> Vec<String> {
        let a = args(cmd);
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    fn cfg() -> VmConfig {
        VmConfig {
            image: PathBuf::from("/img/hello"),
            machine: Machine::Microvm,
            mem: MemSize::DEFAULT,
            accel: Accel::Tcg,
            smp: 1,
            append: String::new(),
            args: vec![],
            fwds: vec![],
            net: false,
            tap: None,
            queues: 1,
            netns: None,
            dgram: None,
            disk: None,
            disk_bus: DiskBus::Blk,
            state_disk: None,
        }
    }

    #[test]
    fn exit_mapping() {
        assert_eq!(map_exit(Some(0)), Exit::App(0));
        assert_eq!(map_exit(Some(1)), Exit::App(0));
        assert_eq!(map_exit(Some(3)), Exit::App(1));
        assert_eq!(map_exit(Some(15)), Exit::App(7));
        assert_eq!(map_exit(Some((101 << 1) | 1)), Exit::App(101));
        assert_eq!(map_exit(Some((102 << 1) | 1)), Exit::App(102));
        assert_eq!(map_exit(Some(255)), Exit::App(127));
        assert_eq!(map_exit(Some(2)), Exit::Qemu(2));
        assert_eq!(map_exit(Some(254)), Exit::Qemu(254));
        assert_eq!(map_exit(None), Exit::Signal);
        assert_eq!(Exit::App(7).process_code(), 7);
        assert_eq!(Exit::Qemu(2).process_code(), 2);
        assert_eq!(Exit::Signal.process_code(), 1);
        assert!(Exit::App(101).describe().contains("panic"));
        assert!(Exit::App(102).describe().contains("exception"));
    }

    #[test]
    fn mem_sizes() {
        let p = |s: &str| s.parse::<MemSize>().map(MemSize::to_qemu);
        assert_eq!(p("4M").unwrap(), "4M");
        assert_eq!(p("64M").unwrap(), "64M");
        assert_eq!(p("64").unwrap(), "64M");
        assert_eq!(p("1G").unwrap(), "1G");
        assert_eq!(p("1g").unwrap(), "1G");
        assert_eq!(p("1024M").unwrap(), "1G");
        assert_eq!(p("512K").unwrap(), "512K");
        assert_eq!(p("2048K").unwrap(), "2M");
        assert_eq!(p("128MiB").unwrap(), "128M");
        assert_eq!(p("128MB").unwrap(), "128M");
        assert_eq!("512K".parse::<MemSize>().unwrap().0, 512 * 1024);
        for bad in [
            "",
            "M",
            "0",
            "0M",
            "12X",
            "-4M",
            "1.5G",
            "4M4",
            "99999999999T",
        ] {
            assert!(bad.parse::<MemSize>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn port_forwards() {
        assert_eq!(
            "8080:80".parse::<PortFwd>().unwrap(),
            PortFwd {
                host: 8080,
                guest: 80
            }
        );
        assert_eq!(
            "5555".parse::<PortFwd>().unwrap(),
            PortFwd {
                host: 5555,
                guest: 5555
            }
        );
        for bad in ["", ":", "80:", ":80", "0:80", "70000:80", "a:b", "1:2:3"] {
            assert!(bad.parse::<PortFwd>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn machines_parse() {
        assert_eq!("microvm".parse::<Machine>().unwrap(), Machine::Microvm);
        assert_eq!("q35".parse::<Machine>().unwrap(), Machine::Q35);
        assert!("pc".parse::<Machine>().is_err());
    }

    #[test]
    fn accel_choice() {
        let vmx = "processor: 0\nflags\t\t: fpu vme vmx sse\n";
        let svm = "flags\t\t: fpu svm\n";
        let none = "flags\t\t: fpu vme sse hypervisor\nvmx flags\t: foo\n";
        assert_eq!(Accel::choose(vmx, true), Accel::Kvm);
        assert_eq!(Accel::choose(svm, true), Accel::Kvm);
        assert_eq!(Accel::choose(vmx, false), Accel::Tcg);
        assert_eq!(Accel::choose(none, true), Accel::Tcg);
        assert_eq!(Accel::choose("", true), Accel::Tcg);
    }

    #[test]
    fn cmdline_quoting() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(kernel_cmdline("", &[]), " -- ");
        assert_eq!(kernel_cmdline("log=debug", &[]), "log=debug -- ");
        assert_eq!(
            kernel_cmdline("a=1 b=2", &s(&["args", "a", "b c"])),
            "a=1 b=2 -- args a \"b c\""
        );
        assert_eq!(
            kernel_cmdline("", &s(&["x", "", "t\tab"])),
            " -- x \"\" \"t\tab\""
        );
    }

    #[test]
    fn microvm_command() {
        let mut c = cfg();
        c.append = "log=debug".into();
        c.args = vec!["a".into(), "b c".into()];
        let cmd = qemu_command(&c);
        assert_eq!(cmd.get_program(), QEMU);
        let a = args(&cmd);
        for flag in ["-nodefaults", "-no-user-config", "-no-reboot"] {
            assert!(a.iter().any(|x| x == flag), "{flag} missing: {a:?}");
        }
        assert_eq!(values(&cmd, "-M"), ["microvm,x-option-roms=off,rtc=on"]);
        assert_eq!(values(&cmd, "-display"), ["none"]);
        assert_eq!(values(&cmd, "-serial"), ["stdio"]);
        assert_eq!(values(&cmd, "-m"), ["64M"]);
        assert_eq!(values(&cmd, "-kernel"), ["/img/hello"]);
        assert_eq!(values(&cmd, "-append"), ["log=debug -- a \"b c\""]);
        assert_eq!(
            values(&cmd, "-device"),
            ["isa-debug-exit,iobase=0xf4,iosize=0x04"]
        );
        assert_eq!(values(&cmd, "-accel"), ["tcg"]);
        assert_eq!(values(&cmd, "-cpu"), ["max"]);
        assert!(values(&cmd, "-smp").is_empty());
        assert!(values(&cmd, "-netdev").is_empty());
    }

    #[test]
    fn smp_adds_vcpus_and_multithreaded_tcg() {
        let mut c = cfg();
        c.smp = 4;
        let cmd = qemu_command(&c);
        assert_eq!(values(&cmd, "-smp"), ["4"]);
        assert_eq!(values(&cmd, "-accel"), ["tcg,thread=multi"]);
        c.accel = Accel::Kvm;
        let cmd = qemu_command(&c);
        assert_eq!(values(&cmd, "-smp"), ["4"]);
        assert_eq!(values(&cmd, "-accel"), ["kvm"]);
        c.smp = 1;
        assert!(values(&qemu_command(&c), "-smp").is_empty());
    }

    #[test]
    fn q35_kvm_command() {
        let mut c = cfg();
        c.machine = Machine::Q35;
        c.accel = Accel::Kvm;
        c.mem = "1G".parse().unwrap();
        let cmd = qemu_command(&c);
        assert_eq!(values(&cmd, "-M"), ["q35"]);
        assert_eq!(values(&cmd, "-accel"), ["kvm"]);
        assert_eq!(values(&cmd, "-cpu"), ["host,-arch-capabilities"]);
        assert_eq!(values(&cmd, "-m"), ["1G"]);
        assert_eq!(values(&cmd, "-append"), [" -- "]);
    }

    #[test]
    fn disk_devices() {
        let mut c = cfg();
        c.disk = Some(PathBuf::from("/d.img"));
        let cmd = qemu_command(&c);
        assert_eq!(
            values(&cmd, "-drive"),
            ["if=none,id=d0,file=/d.img,format=raw,readonly=on"]
        );
        assert!(values(&cmd, "-device").contains(&"virtio-blk-device,drive=d0".to_string()));
        c.machine = Machine::Q35;
        let cmd = qemu_command(&c);
        assert!(values(&cmd, "-device").contains(&"virtio-blk-pci,drive=d0".to_string()));
        assert!(values(&qemu_command(&cfg()), "-drive").is_empty());
        c.state_disk = Some(PathBuf::from("/s.img"));
        let cmd = qemu_command(&c);
        assert!(
            values(&cmd, "-drive").contains(&"if=none,id=d1,file=/s.img,format=raw".to_string())
        );
        assert!(values(&cmd, "-device").contains(&"virtio-blk-pci,drive=d1".to_string()));
        c.state_disk = None;
        c.disk_bus = DiskBus::Scsi;
        let cmd = qemu_command(&c);
        let devs = values(&cmd, "-device");
        assert!(
            devs.contains(&"virtio-scsi-pci,id=scsi0".to_string()),
            "{devs:?}"
        );
        assert!(
            devs.contains(&"scsi-hd,drive=d0,bus=scsi0.0".to_string()),
            "{devs:?}"
        );
        c.disk_bus = DiskBus::Nvme;
        let devs = values(&qemu_command(&c), "-device");
        assert!(
            devs.contains(&"nvme,serial=uk0,drive=d0".to_string()),
            "{devs:?}"
        );
    }

    #[test]
    fn network_devices() {
        let mut c = cfg();
        c.fwds = vec![
            PortFwd {
                host: 8080,
                guest: 80,
            },
            PortFwd {
                host: 2222,
                guest: 22,
            },
        ];
        let cmd = qemu_command(&c);
        assert_eq!(
            values(&cmd, "-netdev"),
            ["user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:2222-:22"]
        );
        assert_eq!(
            values(&cmd, "-device"),
            [
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "virtio-net-device,netdev=net0"
            ]
        );
        c.machine = Machine::Q35;
        let cmd = qemu_command(&c);
        assert_eq!(values(&cmd, "-device")[1], "virtio-net-pci,netdev=net0");

        let mut c = cfg();
        c.net = true;
        assert_eq!(values(&qemu_command(&c), "-netdev"), ["user,id=net0"]);
    }

    #[test]
    fn multiqueue_tap() {
        let mut c = cfg();
        c.tap = Some("tap0".into());
        c.queues = 2;
        // microvm: virtio-mmio has one queue pair.
        let cmd = qemu_command(&c);
        assert_eq!(
            values(&cmd, "-netdev"),
            ["tap,id=net0,ifname=tap0,script=no,downscript=no"]
        );
        c.machine = Machine::Q35;
        let cmd = qemu_command(&c);
        assert_eq!(
            values(&cmd, "-netdev"),
            ["tap,id=net0,ifname=tap0,script=no,downscript=no,queues=2,vhost=off"]
        );
        assert_eq!(
            values(&cmd, "-device")[1],
            "virtio-net-pci,netdev=net0,mq=on,vectors=6"
        );
    }

    #[test]
    fn app_defaults() {
        let mut c = cfg();
        c.apply_app_defaults("hello");
        assert!(!c.net && c.fwds.is_empty());
        for app in NET_APPS {
            let mut c = cfg();
            c.apply_app_defaults(app);
            assert!(c.net);
            assert_eq!(c.fwds, [DEFAULT_FWD]);
            let mut c = cfg();
            c.fwds = vec![PortFwd {
                host: 9000,
                guest: 80,
            }];
            c.apply_app_defaults(app);
            assert_eq!(
                c.fwds,
                [PortFwd {
                    host: 9000,
                    guest: 80
                }]
            );
        }
    }

    #[test]
    fn rendering() {
        let mut c = cfg();
        c.args = vec!["b c".into()];
        let line = render_command(&qemu_command(&c));
        assert!(
            line.starts_with("qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=on "),
            "{line}"
        );
        assert!(line.contains("-append ' -- \"b c\"'"), "{line}");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
