//! The reference for `cargo uk bench compare`: Linux + nginx in the same
//! QEMU, built from Debian packages into `target/nginx-vm/`.
//!
//! [`build`] fetches `linux-image-amd64`'s kernel package, `nginx`, its
//! shared libraries' packages and `busybox-static` with `apt-get download`
//! (nothing is installed on the host), unpacks them with `dpkg-deb -x` into
//! a staging folder, and writes two files: `vmlinuz` (the Debian kernel) and
//! `initrd.cpio`, an uncompressed newc archive holding busybox as `/init`'s
//! shell, the virtio modules the kernel has as `.ko` files, nginx with the
//! libraries the packaged loader resolves (`ld.so --list`), and a minimal
//! `nginx.conf`. No disk: `/init` loads the modules, sets `10.77.0.2/24` on
//! `eth0`, writes the 1 KiB file to `/www` (a tmpfs: the initramfs), starts
//! nginx, prints [`LISTENING`], then writes the 1 MiB and 16 MiB files and
//! prints [`READY`]. With `ukwww=1k` on the kernel command line only the
//! 1 KiB file is written (the memory probe).
//!
//! A later run reuses the artifacts when `target/nginx-vm/manifest.txt`
//! names the same recipe ([`RECIPE_VERSION`] and the generated files);
//! delete the folder to fetch the newest packages again.

use crate::qemu::{in_path as have, run_output as run};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;
use crate::qemu::{Machine, VmConfig, is_root, qemu_command};

/// Bumped when the build changes in a way the generated texts do not show.
pub const RECIPE_VERSION: u32 = 2;

/// The serial line `/init` prints once nginx listens (the 1 KiB file exists).
pub const LISTENING: &str = "nginx-vm: listening";
/// The serial line `/init` prints once all benchmark files exist.
pub const READY: &str = "nginx-vm: ready";

/// The packages besides the kernel: nginx, the packages of its shared
/// libraries (on Debian 12), and busybox.
pub const PACKAGES: [&str; 7] = [
    "nginx",
    "libc6",
    "libcrypt1",
    "libpcre2-8-0",
    "libssl3",
    "zlib1g",
    "busybox-static",
];

/// The kernel modules `/init` loads, in dependency order (Debian builds
/// virtio, virtio-mmio, virtio-pci and virtio-net as modules); the path is
/// relative to `lib/modules/VERSION/kernel/`.
pub const MODULES: [&str; 9] = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_mmio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
];

/// The guest's nginx configuration: one worker per vCPU (`auto`: one with
/// one vCPU, as before; `bench compare --smp N` boots it with more),
/// sendfile, `tcp_nopush`/`tcp_nodelay`, keep-alive, no access log, and
/// whatever `/etc/nginx/conf.d/*.conf` an overlay adds.
pub const NGINX_CONF: &str = "\
user root root;
worker_processes auto;
pid /run/nginx.pid;
error_log stderr warn;
events {
    worker_connections 1024;
}
http {
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    access_log off;
    default_type application/octet-stream;
    server {
        listen 80 default_server backlog=511;
        root /www;
    }
    # More servers from an overlay archive: `cargo uk bench tls` adds its
    # HTTPS server here.
    include /etc/nginx/conf.d/*.conf;
}
";

/// The guest's `/init` (run by busybox's `sh`).
pub const INIT: &str = r#"#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin:/usr/sbin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in virtio_ring virtio virtio_mmio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
    insmod /lib/modules/$m.ko || echo "nginx-vm: insmod $m failed"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
addr=${ip:-10.77.0.2/24}
ip link set lo up
ip addr add "$addr" dev eth0
ip link set eth0 up
[ -n "$gw" ] && ip route add default via "$gw"
mkdir -p /www /run /var/lib/nginx /var/log/nginx
head -c 1024 /dev/urandom > /www/1k.bin
if nginx -e stderr; then
    echo "nginx-vm: listening on $addr"
else
    echo "nginx-vm: nginx failed"
fi
if ! grep -q 'ukwww=1k' /proc/cmdline; then
    head -c 65536 /dev/urandom > /www/64k.bin
    head -c 1048576 /dev/urandom > /www/1m.bin
    head -c 16777216 /dev/urandom > /www/16m.bin
fi
echo "nginx-vm: ready (MemTotal $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) kB)"
while true; do sleep 3600; done
"#;

/// The kernel options for the nginx guest (before [`crate::netns`]'s
/// `ip=... gw=...`, which the kernel hands to `/init` as variables).
pub const KERNEL_OPTIONS: &str = "console=ttyS0 panic=-1 quiet";

/// The built reference guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxVm {
    /// The Debian kernel (`-kernel`).
    pub kernel: PathBuf,
    /// The initramfs (`-initrd`).
    pub initrd: PathBuf,
    /// The `.deb` files it was built from, by package name.
    pub debs: Vec<String>,
}

impl NginxVm {
    /// The `.deb` file whose name starts with `prefix` (`"nginx_"`), or an
    /// empty string: what the benchmarks print as the versions measured.
    pub fn deb(&self, prefix: &str) -> String {
        self.debs
            .iter()
            .find(|d| d.starts_with(prefix))
            .cloned()
            .unwrap_or_default()
    }
}

/// The cache folder: `target/nginx-vm`.
pub fn cache_dir() -> PathBuf {
    crate::target_dir().join("nginx-vm")
}

/// The kernel package `linux-image-amd64` depends on, from `apt-cache
/// depends linux-image-amd64`'s output (`  Depends: linux-image-6.1.0-56-amd64`).
pub fn parse_kernel_package(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends:")?.trim();
        (dep.starts_with("linux-image-") && !dep.starts_with('<')).then(|| dep.to_string())
    })
}

/// The libraries in `ld.so --list`'s output: `(soname, resolved path)` for
/// every `NAME => PATH (0x...)` line (the vDSO has no path and is skipped).
pub fn parse_ld_list(out: &str) -> Vec<(String, PathBuf)> {
    out.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(" => ")?;
            let path = rest.rsplit_once(" (").map_or(rest, |(p, _)| p).trim();
            (!path.is_empty() && path != "not found").then(|| (name.to_string(), path.into()))
        })
        .collect()
}

/// The package name of a `.deb` file name (`libssl3_3.0.22-1_amd64.deb` →
/// `libssl3`).
pub fn deb_package(file: &str) -> Option<&str> {
    file.strip_suffix(".deb")?
        .split_once('_')
        .map(|(n, _)| n)
        .filter(|n| !n.is_empty())
}

/// 64-bit FNV-1a: a stable fingerprint of the recipe's texts.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The recipe line of the manifest: what the cached artifacts were built
/// from besides the packages.
pub fn recipe() -> String {
    let mut all = format!("{RECIPE_VERSION}\n{INIT}\n{NGINX_CONF}\n");
    for m in MODULES {
        all.push_str(m);
        all.push('\n');
    }
    format!("recipe {RECIPE_VERSION} {:016x}", fnv1a(all.as_bytes()))
}

/// A newc (`070701`) cpio archive, built in memory with every file owned by
/// root and dated 1970 (so the same inputs give the same bytes).
#[derive(Debug, Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Cpio {
        Cpio::default()
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// A directory.
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | (perm & 0o7777), (0, 0), data);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120_777, (0, 0), target.as_bytes());
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020_000 | (perm & 0o7777), (major, minor), &[]);
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

/// Makes sure `program` runs: `apt-get install -y PACKAGE` when root,
/// otherwise an error with the command to run.
pub fn ensure_tool(program: &str, package: &str) -> Result<(), Error> {
    if have(program) {
        return Ok(());
    }
    crate::qemu::apt_install(&[package], program, || have(program))
}

fn io<T>(what: &Path, r: std::io::Result<T>) -> Result<T, Error> {
    r.map_err(|e| Error::Failed(format!("{}: {e}", what.display())))
}

fn read_manifest(dir: &Path) -> Option<NginxVm> {
    let text = std::fs::read_to_string(dir.join("manifest.txt")).ok()?;
    let mut lines = text.lines();
    if lines.next()? != recipe() {
        return None;
    }
    let debs: Vec<String> = lines
        .filter_map(|l| l.strip_prefix("deb "))
        .map(String::from)
        .collect();
    let vm = NginxVm {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.cpio"),
        debs,
    };
    (vm.kernel.is_file() && vm.initrd.is_file() && !vm.debs.is_empty()).then_some(vm)
}

/// Downloads `packages` into `dir` with `apt-get download` (after an `apt-get
/// update` if the first try fails and we are root).
fn download(dir: &Path, packages: &[String]) -> Result<(), Error> {
    let fetch = || {
        run(Command::new("apt-get")
            .arg("download")
            .args(packages)
            .current_dir(dir))
    };
    if let Err(e) = fetch() {
        if !is_root() {
            return Err(e);
        }
        eprintln!("uk: apt-get download failed; running apt-get update and trying again");
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        fetch()?;
    }
    Ok(())
}

/// Builds (or reuses) the Linux + nginx guest under [`cache_dir`].
pub fn build() -> Result<NginxVm, Error> {
    let dir = cache_dir();
    if let Some(vm) = read_manifest(&dir) {
        return Ok(vm);
    }
    for (tool, pkg) in [
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("dpkg-deb", "dpkg"),
    ] {
        if !have(tool) {
            return Err(Error::Failed(format!(
                "{tool} is missing (package {pkg}): building the Linux + nginx guest needs a \
                 Debian-like host"
            )));
        }
    }
    eprintln!(
        "uk: building the Linux + nginx reference guest in {}",
        dir.display()
    );
    let debs_dir = dir.join("debs");
    let _ = std::fs::remove_dir_all(&debs_dir);
    io(&debs_dir, std::fs::create_dir_all(&debs_dir))?;
    let deps = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let kernel_pkg = parse_kernel_package(&deps).ok_or_else(|| {
        Error::Failed(format!(
            "cannot find the kernel package in 'apt-cache depends linux-image-amd64':\n{deps}"
        ))
    })?;
    let mut packages = vec![kernel_pkg.clone()];
    packages.extend(PACKAGES.iter().map(|p| p.to_string()));
    crate::progress::step(
        &format!(
            "nginx reference: apt-get download of {} packages",
            packages.len()
        ),
        || download(&debs_dir, &packages),
    )?;
    let mut debs: BTreeMap<String, String> = BTreeMap::new();
    for e in io(&debs_dir, std::fs::read_dir(&debs_dir))? {
        let name = e
            .map_err(|e| Error::Failed(e.to_string()))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(pkg) = deb_package(&name) {
            debs.insert(pkg.to_string(), name);
        }
    }
    for p in &packages {
        if !debs.contains_key(p) {
            return Err(Error::Failed(format!(
                "apt-get download did not fetch {p} into {}",
                debs_dir.display()
            )));
        }
    }
    let staging = dir.join("staging");
    let _ = std::fs::remove_dir_all(&staging);
    io(&staging, std::fs::create_dir_all(&staging))?;
    crate::progress::step(
        &format!("nginx reference: unpacking {} packages", debs.len()),
        || -> Result<(), Error> {
            for deb in debs.values() {
                run(Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(debs_dir.join(deb))
                    .arg(&staging))?;
            }
            Ok(())
        },
    )?;
    let version = kernel_pkg
        .strip_prefix("linux-image-")
        .unwrap_or(&kernel_pkg)
        .to_string();
    let vmlinuz = staging.join(format!("boot/vmlinuz-{version}"));
    let modules = staging.join(format!("lib/modules/{version}/kernel"));

    let mut cpio = Cpio::new();
    for d in [
        "bin",
        "dev",
        "etc",
        "etc/nginx",
        "etc/nginx/conf.d",
        "lib",
        "lib/modules",
        "lib/x86_64-linux-gnu",
        "lib64",
        "proc",
        "run",
        "sys",
        "tmp",
        "usr",
        "usr/sbin",
        "var",
        "var/lib",
        "var/lib/nginx",
        "var/log",
        "var/log/nginx",
        "www",
    ] {
        cpio.dir(d);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.char_dev("dev/null", 0o666, 1, 3);
    let read = |p: &Path| io(p, std::fs::read(p));
    cpio.file("bin/busybox", 0o755, &read(&staging.join("bin/busybox"))?);
    cpio.symlink("bin/sh", "busybox");
    cpio.file("init", 0o755, INIT.as_bytes());
    cpio.file("etc/nginx/nginx.conf", 0o644, NGINX_CONF.as_bytes());
    cpio.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    );
    cpio.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n");
    for m in MODULES {
        let name = Path::new(m).file_name().expect("module file name");
        cpio.file(
            &format!("lib/modules/{}", name.to_string_lossy()),
            0o644,
            &read(&modules.join(m))?,
        );
    }
    let nginx = staging.join("usr/sbin/nginx");
    cpio.file("usr/sbin/nginx", 0o755, &read(&nginx)?);
    // The packaged loader resolves nginx's libraries inside the staging
    // folder (its /lib64 link is absolute, so use the real file).
    let loader = staging.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
    let libpath = format!(
        "{}:{}",
        staging.join("lib/x86_64-linux-gnu").display(),
        staging.join("usr/lib/x86_64-linux-gnu").display()
    );
    let listed = run(Command::new(&loader)
        .arg("--list")
        .arg("--library-path")
        .arg(&libpath)
        .arg(&nginx))?;
    let libs = parse_ld_list(&listed);
    if libs.is_empty() {
        return Err(Error::Failed(format!(
            "no libraries in the loader's list for nginx:\n{listed}"
        )));
    }
    for (soname, path) in libs {
        if !path.starts_with(&staging) {
            return Err(Error::Failed(format!(
                "nginx's {soname} resolved outside the packages ({}): add its package to PACKAGES",
                path.display()
            )));
        }
        let base = Path::new(&soname)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(soname.clone());
        // std::fs::read follows the packages' relative symlinks.
        cpio.file(
            &format!("lib/x86_64-linux-gnu/{base}"),
            0o755,
            &read(&path)?,
        );
        if soname.starts_with("/lib64/") {
            cpio.symlink(
                soname.trim_start_matches('/'),
                &format!("/lib/x86_64-linux-gnu/{base}"),
            );
        }
    }
    let initrd = dir.join("initrd.cpio");
    io(&initrd, std::fs::write(&initrd, cpio.finish()))?;
    let kernel = dir.join("vmlinuz");
    io(&kernel, std::fs::copy(&vmlinuz, &kernel))?;
    let _ = std::fs::remove_dir_all(&staging);
    let mut manifest = format!("{}\n", recipe());
    for d in debs.values() {
        manifest.push_str(&format!("deb {d}\n"));
    }
    let mpath = dir.join("manifest.txt");
    io(&mpath, std::fs::write(&mpath, manifest))?;
    read_manifest(&dir).ok_or_else(|| Error::Failed("the manifest did not read back".into()))
}

/// Writes `base` (the cached [`NginxVm::initrd`]) followed by `overlay`
/// (another newc archive, e.g. a [`Cpio`] adding files under `/etc/nginx`)
/// to `out`: Linux unpacks concatenated archives in order, later files
/// replacing earlier ones, so a run adds its own files without rebuilding
/// the cached guest.
pub fn overlay_initrd(base: &Path, overlay: &[u8], out: &Path) -> Result<(), Error> {
    let mut all = io(base, std::fs::read(base))?;
    // Each newc archive ends 4-aligned (the kernel skips zero padding
    // between archives).
    while !all.len().is_multiple_of(4) {
        all.push(0);
    }
    all.extend_from_slice(overlay);
    io(out, std::fs::write(out, all))
}

/// The machine argument for Linux: microvm needs its option ROMs (the
/// `linuxboot` ROM loads a bzImage), so not `x-option-roms=off`; the rest as
/// for the unikernel.
pub fn linux_machine_arg(machine: Machine) -> &'static str {
    match machine {
        Machine::Microvm => "microvm,rtc=on",
        Machine::Q35 => "q35",
    }
}

/// The host's TSC rate in kHz from `/proc/cpuinfo`'s first `cpu MHz` line,
/// if its flags say the TSC is constant (`constant_tsc`).
pub fn parse_tsc_khz(cpuinfo: &str) -> Option<u64> {
    let constant = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "constant_tsc"));
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split_once(':')?
        .1
        .trim()
        .parse()
        .ok()?;
    (constant && mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

/// The `tsc_early_khz=` the Linux guest gets under TCG: TCG's guest TSC is
/// the host's, and microvm has no HPET or ACPI PM timer, so without it
/// Linux calibrates against the PIT, which fails now and then under TCG
/// ("tsc: Unable to calibrate against PIT") and the boot hangs.
pub fn host_tsc_khz() -> Option<u64> {
    parse_tsc_khz(&std::fs::read_to_string("/proc/cpuinfo").ok()?)
}

/// The QEMU command for the Linux guest: [`qemu_command`] of `cfg` (its
/// image the Debian kernel, the same accelerator, CPU, memory, TAP and
/// namespace as the unikernel gets) with the machine argument from
/// [`linux_machine_arg`], [`KERNEL_OPTIONS`] (and `tsc_early_khz=` if
/// given) in front of the options, and `-initrd`.
pub fn linux_command(cfg: &VmConfig, initrd: &Path, tsc_khz: Option<u64>) -> Command {
    let mut cfg = cfg.clone();
    let tsc = tsc_khz.map_or_else(String::new, |k| format!(" tsc_early_khz={k}"));
    cfg.append = format!("{KERNEL_OPTIONS}{tsc} {}", cfg.append.trim());
    let base = qemu_command(&cfg);
    let mut cmd = Command::new(base.get_program());
    let mut args = base.get_args().peekable();
    while let Some(a) = args.next() {
        cmd.arg(a);
        if a == "-M" && args.next().is_some() {
            cmd.arg(linux_machine_arg(cfg.machine));
        }
    }
    cmd.arg("-initrd").arg(initrd);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_khz() {
        let ci =
            "processor\t: 0\ncpu MHz\t\t: 2596.154\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n";
        assert_eq!(parse_tsc_khz(ci), Some(2_596_154));
        assert_eq!(parse_tsc_khz("cpu MHz : 2000.0\nflags : fpu tsc\n"), None);
        assert_eq!(parse_tsc_khz("flags : constant_tsc\n"), None);
        assert_eq!(parse_tsc_khz("cpu MHz : x\nflags : constant_tsc\n"), None);
    }

    #[test]
    fn kernel_package() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_kernel_package(out).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(parse_kernel_package("linux-image-amd64\n"), None);
        assert_eq!(
            parse_kernel_package("x\n  Recommends: firmware\n  Depends: linux-image-6.2-amd64"),
            Some("linux-image-6.2-amd64".into())
        );
    }

    #[test]
    fn ld_list() {
        let out = "\tlinux-vdso.so.1 (0x00007fc62e432000)
\tlibcrypt.so.1 => st/lib/x86_64-linux-gnu/libcrypt.so.1 (0x00007fc62e29a000)
\tlibssl.so.3 => /s t/usr/lib/libssl.so.3 (0x00007fc62e157000)
\tlibfoo.so.1 => not found
\t/lib64/ld-linux-x86-64.so.2 => st/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 (0x00007fc62e434000)
";
        let l = parse_ld_list(out);
        assert_eq!(
            l,
            vec![
                (
                    "libcrypt.so.1".to_string(),
                    PathBuf::from("st/lib/x86_64-linux-gnu/libcrypt.so.1")
                ),
                ("libssl.so.3".into(), "/s t/usr/lib/libssl.so.3".into()),
                (
                    "/lib64/ld-linux-x86-64.so.2".into(),
                    "st/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into()
                ),
            ]
        );
    }

    #[test]
    fn deb_names() {
        assert_eq!(
            deb_package("libssl3_3.0.22-1~deb12u2_amd64.deb"),
            Some("libssl3")
        );
        assert_eq!(
            deb_package("busybox-static_1%3a1.35.0-4_amd64.deb"),
            Some("busybox-static")
        );
        assert_eq!(deb_package("readme.txt"), None);
        assert_eq!(deb_package("_1_amd64.deb"), None);
    }

    #[test]
    fn cpio_layout() {
        let mut c = Cpio::new();
        c.dir("/www");
        c.file("init", 0o755, b"abcde");
        c.symlink("bin/sh", "busybox");
        c.char_dev("dev/console", 0o600, 5, 1);
        let a = c.finish();
        assert_eq!(a.len() % 4, 0);
        assert!(a.starts_with(b"070701"));
        // First header: ino 1, mode dir 755, name "www" (+NUL = 4).
        let h = std::str::from_utf8(&a[..110]).unwrap();
        assert_eq!(&h[6..14], "00000001");
        assert_eq!(&h[14..22], "000041ed");
        assert_eq!(&h[94..102], "00000004");
        assert_eq!(&a[110..114], b"www\0");
        // 110 + 4 = 114 is padded to 116, where the file's header starts.
        assert_eq!(&a[114..116], &[0, 0]);
        let f = std::str::from_utf8(&a[116..226]).unwrap();
        assert_eq!(&f[14..22], "000081ed");
        assert_eq!(&f[54..62], "00000005");
        assert_eq!(&a[226..231], b"init\0");
        // 226 + 5 = 231 → padded to 232, then the data padded to 4.
        assert_eq!(&a[232..237], b"abcde");
        assert_eq!(&a[237..240], &[0, 0, 0]);
        let dev = a.windows(11).position(|w| w == b"dev/console").unwrap();
        let dh = std::str::from_utf8(&a[dev - 110..dev]).unwrap();
        assert_eq!(&dh[14..22], "00002180");
        assert_eq!(&dh[78..86], "00000005");
        assert_eq!(&dh[86..94], "00000001");
        assert!(a.windows(10).any(|w| w == b"TRAILER!!!"));
        // Same input, same bytes.
        let mut d = Cpio::new();
        d.dir("www");
        assert_eq!(d.finish()[..114], a[..114]);
    }

    #[test]
    fn recipe_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(recipe(), recipe());
        assert!(recipe().starts_with(&format!("recipe {RECIPE_VERSION} ")));
    }

    #[test]
    fn linux_command_keeps_the_setup() {
        let mut cfg = VmConfig::new("/k/vmlinuz");
        cfg.accel = crate::qemu::Accel::Tcg;
        cfg.mem = crate::qemu::MemSize(128 << 20);
        cfg.tap = Some("tap0".into());
        cfg.netns = Some("uk-x-1".into());
        cfg.append = "ip=10.77.0.2/24 gw=10.77.0.1".into();
        let cmd = linux_command(&cfg, Path::new("/k/initrd.cpio"), Some(2_596_154));
        let a: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(&a[..4], ["netns", "exec", "uk-x-1", crate::QEMU]);
        let m = a.iter().position(|x| x == "-M").unwrap();
        assert_eq!(a[m + 1], "microvm,rtc=on");
        let ap = a.iter().position(|x| x == "-append").unwrap();
        assert!(
            a[ap + 1]
                .starts_with("console=ttyS0 panic=-1 quiet tsc_early_khz=2596154 ip=10.77.0.2/24")
        );
        assert!(a.contains(&"128M".to_string()));
        assert!(a.contains(&"virtio-net-device,netdev=net0".to_string()));
        assert_eq!(&a[a.len() - 2..], ["-initrd", "/k/initrd.cpio"]);
        cfg.machine = Machine::Q35;
        let a: Vec<String> = linux_command(&cfg, Path::new("/i"), None)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let m = a.iter().position(|x| x == "-M").unwrap();
        assert_eq!(a[m + 1], "q35");
    }
}

#[cfg(test)]
mod build_tests {
    /// Downloads packages and writes `target/nginx-vm/`: run with
    /// `cargo test -p uk-cli nginxvm -- --ignored`.
    #[test]
    #[ignore]
    fn builds_from_debian_packages() {
        let vm = super::build().unwrap();
        assert!(vm.kernel.is_file() && vm.initrd.is_file());
        eprintln!("{vm:?}");
    }
}
