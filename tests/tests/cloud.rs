//! Cloud-style boots (issue #8): the bootable raw disk image under SeaBIOS
//! and under OVMF on q35 (virtio-pci, no `-kernel`: GRUB loads the kernel
//! with Multiboot2 from the EFI system partition and the kernel mounts the
//! GPT partition `uk-root`), an address by DHCP over user networking, and
//! an HTTP GET through a forward bound to 127.0.0.1; and a Firecracker-style
//! start on microvm with the virtio-mmio devices on the command line.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use uk_tests::{BootOpts, DiskBus, Firmware, Guest, Machine, boot_disk_image, free_port};

/// Booting through firmware and GRUB under TCG takes a few seconds; OVMF
/// the longest.
const FIRMWARE_BOOT: Duration = Duration::from_secs(120);
const PAGE: &str = "<h1>uk cloud test page</h1>\n";

fn site() -> PathBuf {
    let dir = uk_cli::image::temp_path("cloud-site");
    std::fs::create_dir_all(&dir).expect("site dir");
    std::fs::write(dir.join("index.html"), PAGE).expect("index.html");
    dir
}

/// The response to `GET /`, retried until the guest answers (it listens
/// once its `serving` line is out, so retries are for slirp's forward).
fn http_get(port: u16, timeout: Duration) -> Result<String, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match try_get(port) {
            Ok(r) => return Ok(r),
            Err(e) => last = e,
        }
        std::thread::yield_now();
    }
    Err(format!("no HTTP answer within {timeout:?}: {last}"))
}

fn try_get(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    if out.is_empty() {
        return Err("empty response".into());
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn disk_boot(fw: Firmware) {
    disk_boot_on(fw, DiskBus::Blk);
}

fn disk_boot_on(fw: Firmware, bus: DiskBus) -> Guest {
    let disk = boot_disk_image("httpd", &site());
    let port = free_port();
    let g = Guest::boot(
        "httpd",
        Machine::Q35,
        BootOpts::default()
            .mem("256M")
            .firmware(fw, disk)
            .disk_bus(bus)
            .fwd(port, 80),
    );
    g.wait_for("uk: main after", FIRMWARE_BOOT)
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    g.wait_for("GPT partition 'uk-root'", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    g.wait_for("httpd: address 10.0.2.15/24", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    g.wait_for("httpd: serving", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    let r = http_get(port, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}\n{}", g.output());
    assert!(r.ends_with(PAGE), "{r}");
    g
}

#[test]
fn raw_image_boots_under_seabios() {
    disk_boot(Firmware::SeaBios);
}

#[test]
fn raw_image_boots_under_ovmf() {
    disk_boot(Firmware::Ovmf);
}

/// GCE's boot disk: the raw image on a virtio-scsi host (`scsi-hd` on
/// `virtio-scsi-pci`), booted by SeaBIOS through its own virtio-scsi
/// driver; the kernel finds the disk with its virtio-scsi driver and mounts
/// `uk-root` from it.
#[test]
fn raw_image_boots_from_virtio_scsi_under_seabios() {
    let g = disk_boot_on(Firmware::SeaBios, DiskBus::Scsi);
    let out = g.output();
    assert!(
        out.contains("/ is ext4 (read-only) on virtio-scsi virtio-pci"),
        "{out}"
    );
}

/// The same under OVMF (GCE boots UEFI images through UEFI).
#[test]
fn raw_image_boots_from_virtio_scsi_under_ovmf() {
    let g = disk_boot_on(Firmware::Ovmf, DiskBus::Scsi);
    assert!(
        g.output()
            .contains("/ is ext4 (read-only) on virtio-scsi virtio-pci"),
        "{}",
        g.output()
    );
}

/// GCE's newer machine types and EC2's Nitro instances: the raw image on
/// an NVMe controller, booted by SeaBIOS; the kernel's NVMe driver finds
/// `uk-root` on namespace 1.
#[test]
fn raw_image_boots_from_nvme_under_seabios() {
    let g = disk_boot_on(Firmware::SeaBios, DiskBus::Nvme);
    assert!(
        g.output().contains("/ is ext4 (read-only) on nvme "),
        "{}",
        g.output()
    );
}

/// The PVH image with its ext4 site (no partition table) on `bus`: the
/// kernel's driver for that bus finds the disk and httpd serves the page
/// from it. `root_on` is how the mount line names the disk.
fn pvh_serves_from(bus: DiskBus, root_on: &str) {
    let disk = uk_cli::TempImage::from_dir(&site()).expect("ext4 image");
    let port = free_port();
    let g = Guest::boot(
        "httpd",
        Machine::Q35,
        BootOpts::default()
            .disk(disk.path.clone())
            .disk_bus(bus)
            .fwd(port, 80),
    );
    g.wait_for(
        &format!("/ is ext4 (read-only) on {root_on}"),
        uk_tests::BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    g.wait_for("httpd: serving", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    let r = http_get(port, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}\n{}", g.output());
    assert!(r.ends_with(PAGE), "{r}");
}

#[test]
fn pvh_image_serves_from_a_virtio_scsi_disk() {
    pvh_serves_from(DiskBus::Scsi, "virtio-scsi virtio-pci");
}

#[test]
fn pvh_image_serves_from_an_nvme_disk() {
    pvh_serves_from(DiskBus::Nvme, "nvme ");
}

/// Firecracker's conventions on QEMU microvm: QEMU adds nothing to the
/// command line, the kernel finds its disk and NIC from the
/// `virtio_mmio.device=` list (not by probing: the location reads `irq`),
/// accepts `console=ttyS0 reboot=k panic=1 pci=off` silently, serves a
/// page, and the i8042 reset ends the VM.
#[test]
fn microvm_with_command_line_devices() {
    let disk = uk_cli::TempImage::from_dir(&site()).expect("ext4 image");
    let port = free_port();
    let mut g = Guest::boot(
        "httpd",
        Machine::Microvm,
        BootOpts::default()
            .append("log=debug")
            .disk(disk.path.clone())
            .fwd(port, 80)
            .firecracker(),
    );
    g.wait_for(
        "found Block at virtio-mmio@0xfeb02e00 irq 47",
        uk_tests::BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    g.wait_for(
        "found Network at virtio-mmio@0xfeb02c00 irq 46",
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    g.wait_for("httpd: serving", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    let r = http_get(port, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.ends_with(PAGE), "{r}");
    let out = g.output();
    assert!(!out.contains("unknown kernel option"), "{out}");
    assert!(g.command().contains("auto-kernel-cmdline=off"));
    assert!(!g.command().contains("isa-debug-exit"));
    g.kill();
}

/// The Firecracker-style shutdown: without isa-debug-exit, the kernel's
/// exit reaches the i8042 reset line, which QEMU (`-no-reboot`) and
/// Firecracker both treat as the end of the VM.
#[test]
fn microvm_firecracker_style_exit_is_the_i8042_reset() {
    let mut g = Guest::boot("hello", Machine::Microvm, BootOpts::default().firecracker());
    g.wait_for("uk: main after", uk_tests::BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    assert_eq!(g.wait_exit(uk_tests::EXIT_TIMEOUT), Ok(0), "{}", g.output());
    assert!(g.command().contains("-device i8042"));
}
