//! Bootable disk images: `cargo uk image --format raw|qcow2|gce|elf`.
//!
//! A raw image is a GPT disk that BIOS and UEFI firmware both boot, built
//! from files without root and without loop devices:
//!
//! ```text
//! LBA 0        protective MBR carrying GRUB's boot.img (BIOS stage 1)
//! LBA 1..33    primary GPT
//! 1 MiB        "bios"    BIOS boot partition: GRUB's core.img (i386-pc)
//! 2 MiB        "EFI"     EFI system partition (FAT, label UKBOOT):
//!                          EFI/BOOT/BOOTX64.EFI  GRUB (x86_64-efi)
//!                          boot/uk-kernel        the kernel ELF
//! after it     "uk-root" ext4 with the site (mkfs.ext4 -d)
//! last 33      backup GPT
//! ```
//!
//! Both GRUB images carry the same embedded configuration: serial console
//! on COM1, find the partition holding `/boot/uk-kernel`, load it with
//! `multiboot2` and the kernel command line, boot. No menu, no timeout.
//! The kernel enters through its Multiboot2 header, finds the `uk-root`
//! partition in the GPT and mounts it at `/`.
//!
//! The GRUB stages are installed by hand, as `grub-bios-setup` would for a
//! GPT disk: boot.img's kernel-sector field points at core.img's first
//! sector, and core.img's first sector (diskboot.img) gets the block list of
//! the rest of core.img. Tools: `grub-mkimage` (grub-common), the module
//! directories of `grub-pc-bin` and `grub-efi-amd64-bin`, `mkfs.fat`
//! (dosfstools), `mmd`/`mcopy` (mtools), `mkfs.ext4` (e2fsprogs),
//! `qemu-img` (qemu-utils) for qcow2, GNU `tar` for the GCE archive.
//! [`ensure_tools`] installs them with apt-get when running as root.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use uk_core::partition::{self, NewPartition};

use crate::Error;

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
/// GRUB's i386-pc module directory (grub-pc-bin).
pub const GRUB_PC_DIR: &str = "/usr/lib/grub/i386-pc";
/// GRUB's x86_64-efi module directory (grub-efi-amd64-bin).
pub const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
/// Where the kernel sits in the EFI system partition.
pub const KERNEL_PATH: &str = "/boot/uk-kernel";
/// The EFI system partition's FAT label.
pub const ESP_LABEL: &str = "UKBOOT";
/// The kernel options every disk image gets before the user's: the serial
/// console clouds show (accepted and ignored by the kernel, which always
/// logs to COM1).
pub const BASE_CMDLINE: &str = "console=ttyS0";

/// Debian packages the bootable formats need, with a file that shows each
/// one is installed.
pub const PACKAGES: &[(&str, &str)] = &[
    ("grub-common", "/usr/bin/grub-mkimage"),
    ("grub-pc-bin", "/usr/lib/grub/i386-pc/boot.img"),
    (
        "grub-efi-amd64-bin",
        "/usr/lib/grub/x86_64-efi/multiboot2.mod",
    ),
    ("dosfstools", "/sbin/mkfs.fat"),
    ("mtools", "/usr/bin/mcopy"),
    ("e2fsprogs", "/sbin/mkfs.ext4"),
    ("qemu-utils", "/usr/bin/qemu-img"),
];

/// GRUB modules in both images.
const MODULES_COMMON: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "multiboot2",
    "serial",
    "terminal",
    "search",
    "search_fs_file",
    "echo",
    "boot",
];

/// The GRUB configuration embedded in both images (run by GRUB's kernel
/// before any menu: one command a line, no scripting).
pub fn grub_config(cmdline: &str) -> String {
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial\n\
         terminal_output serial\n\
         search --no-floppy --file --set=root {KERNEL_PATH}\n\
         multiboot2 {KERNEL_PATH} {cmdline}\n\
         boot\n"
    )
}

/// The kernel command line of a disk image: [`BASE_CMDLINE`], the user's
/// options, then ` -- ` and the app's arguments.
pub fn disk_cmdline(options: &str, args: &[String]) -> String {
    let opts = format!("{BASE_CMDLINE} {}", options.trim());
    crate::qemu::kernel_cmdline(opts.trim(), args)
        .trim_end()
        .to_string()
}

fn installed(path: &str) -> bool {
    Path::new(path).exists()
}

/// The Debian packages of [`PACKAGES`] that are missing.
pub fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .filter(|(_, f)| !installed(f))
        .map(|(p, _)| *p)
        .collect()
}

/// Makes sure the image tools are there: installs the missing packages with
/// apt-get when running as root on a Debian-like system, otherwise fails
/// with the exact command to run.
pub fn ensure_tools() -> Result<(), Error> {
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(());
    }
    crate::qemu::apt_install(&missing, "disk image tools", || {
        missing_packages().is_empty()
    })
}

fn run(cmd: &mut Command) -> Result<(), Error> {
    crate::qemu::run_output(cmd).map(drop)
}

fn io_err(what: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Failed(format!("{}: {e}", what.display()))
}

/// A scratch directory under the target dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Result<Scratch, Error> {
        let p = crate::image::temp_path(what);
        std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `grub-mkimage` command for `format` (`i386-pc` or `x86_64-efi`).
pub fn grub_mkimage(format: &str, dir: &str, config: &Path, out: &Path) -> Command {
    let mut cmd = Command::new("grub-mkimage");
    cmd.args(["-O", format, "-d", dir, "-p", "/boot/grub", "-c"])
        .arg(config)
        .arg("-o")
        .arg(out);
    if format == "i386-pc" {
        cmd.arg("biosdisk");
    }
    cmd.args(MODULES_COMMON);
    cmd
}

/// Offsets in boot.img (GRUB's i386-pc `boot.S`).
const BOOT_KERNEL_SECTOR: usize = 0x5c;
const BOOT_DRIVE_CHECK: usize = 0x66;

/// Patches GRUB's boot.img (the MBR boot code) to load core.img from
/// `core_lba`, as grub-bios-setup does for a hard disk.
pub fn patch_boot_img(boot: &mut [u8; 512], core_lba: u64) {
    boot[BOOT_KERNEL_SECTOR..BOOT_KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    // Trust the boot drive the BIOS passes in dl (grub-bios-setup turns
    // the floppy check into two nops for hard disks).
    boot[BOOT_DRIVE_CHECK] = 0x90;
    boot[BOOT_DRIVE_CHECK + 1] = 0x90;
}

/// Patches core.img's first sector (diskboot.img): its block list (the
/// last 12 bytes: u64 start, u16 sectors, u16 segment) names the sectors
/// after the first, contiguous from `core_lba + 1`.
pub fn patch_core_img(core: &mut [u8], core_lba: u64) -> Result<(), Error> {
    let sectors = (core.len() as u64).div_ceil(SECTOR);
    if !(2..=0xffff).contains(&sectors) {
        return Err(Error::Failed(format!(
            "core.img has an unexpected size ({} bytes)",
            core.len()
        )));
    }
    let bl = 512 - 12;
    core[bl..bl + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    core[bl + 8..bl + 10].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
    Ok(())
}

/// Sizes and places of the three partitions, in sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// BIOS boot partition (core.img).
    pub bios: (u64, u64),
    /// EFI system partition.
    pub esp: (u64, u64),
    /// Root ext4.
    pub root: (u64, u64),
    /// Whole disk.
    pub disk_sectors: u64,
}

/// The layout for an ESP of `esp_bytes` and a root of `root_bytes` (both
/// MiB multiples): 1 MiB alignment, 1 MiB left at the end for the backup GPT.
pub fn layout(esp_bytes: u64, root_bytes: u64) -> Layout {
    let s = |b: u64| b / SECTOR;
    let bios = (s(MIB), s(MIB));
    let esp = (bios.0 + bios.1, s(esp_bytes));
    let root = (esp.0 + esp.1, s(root_bytes));
    Layout {
        bios,
        esp,
        root,
        disk_sectors: root.0 + root.1 + s(MIB),
    }
}

/// Builds the bootable raw disk `out` with `kernel` (a PVH/Multiboot2 ELF),
/// the site folder `site` and the kernel command line `cmdline`. Returns
/// the image size.
pub fn build_raw(
    kernel: &Path,
    site: &Path,
    files: &[(PathBuf, String)],
    cmdline: &str,
    out: &Path,
) -> Result<u64, Error> {
    ensure_tools()?;
    let tmp = Scratch::new("bootdisk")?;
    let t = |name: &str| tmp.0.join(name);

    let root_img = t("root.ext4");
    let root_bytes =
        crate::image::build_image_with(site, &root_img, crate::ImageFormat::Ext4, files)?;

    std::fs::write(t("grub.cfg"), grub_config(cmdline)).map_err(io_err(&t("grub.cfg")))?;
    run(&mut grub_mkimage(
        "i386-pc",
        GRUB_PC_DIR,
        &t("grub.cfg"),
        &t("core.img"),
    ))?;
    run(&mut grub_mkimage(
        "x86_64-efi",
        GRUB_EFI_DIR,
        &t("grub.cfg"),
        &t("BOOTX64.EFI"),
    ))?;

    // The ESP: GRUB for UEFI and the kernel, plus room; at least 33 MiB
    // so that mkfs.fat makes FAT32, which every UEFI firmware reads.
    let kernel_len = std::fs::metadata(kernel).map_err(io_err(kernel))?.len();
    let efi_len = std::fs::metadata(t("BOOTX64.EFI"))
        .map_err(io_err(&t("BOOTX64.EFI")))?
        .len();
    let esp_bytes = (kernel_len + efi_len + 4 * MIB).max(33 * MIB).div_ceil(MIB) * MIB;
    let esp = t("esp.img");
    run(Command::new("mkfs.fat")
        .args(["-F", "32", "-n", ESP_LABEL, "-C"])
        .arg(&esp)
        .arg((esp_bytes / 1024).to_string()))?;
    let mtool = |args: &[&str]| {
        let mut c = Command::new(args[0]);
        c.arg("-i").arg(&esp).args(&args[1..]);
        c.env("MTOOLS_SKIP_CHECK", "1");
        c
    };
    run(&mut mtool(&["mmd", "::/EFI", "::/EFI/BOOT", "::/boot"]))?;
    run(mtool(&["mcopy"])
        .arg(t("BOOTX64.EFI"))
        .arg("::/EFI/BOOT/BOOTX64.EFI"))?;
    run(mtool(&["mcopy"])
        .arg(kernel)
        .arg(format!("::{KERNEL_PATH}")))?;

    let l = layout(esp_bytes, root_bytes);
    let mut boot = [0u8; 512];
    let boot_img = Path::new(GRUB_PC_DIR).join("boot.img");
    let b = std::fs::read(&boot_img).map_err(io_err(&boot_img))?;
    if b.len() != 512 {
        return Err(Error::Failed(format!(
            "{}: not 512 bytes",
            boot_img.display()
        )));
    }
    boot.copy_from_slice(&b);
    patch_boot_img(&mut boot, l.bios.0);
    let mut core = std::fs::read(t("core.img")).map_err(io_err(&t("core.img")))?;
    if core.len() as u64 > l.bios.1 * SECTOR {
        return Err(Error::Failed("core.img does not fit its partition".into()));
    }
    patch_core_img(&mut core, l.bios.0)?;

    let guid = |n: u8| -> [u8; 16] {
        // Deterministic unique GUIDs: reproducible images.
        let mut g = [0x75u8; 16];
        g[15] = n;
        g[6] = 0x40 | (g[6] & 0x0f);
        g[8] = 0x80 | (g[8] & 0x3f);
        g
    };
    let parts = [
        NewPartition {
            first_lba: l.bios.0,
            sectors: l.bios.1,
            type_guid: partition::BIOS_BOOT,
            unique_guid: guid(1),
            name: "bios".into(),
        },
        NewPartition {
            first_lba: l.esp.0,
            sectors: l.esp.1,
            type_guid: partition::EFI_SYSTEM,
            unique_guid: guid(2),
            name: "EFI".into(),
        },
        NewPartition {
            first_lba: l.root.0,
            sectors: l.root.1,
            type_guid: partition::LINUX_FS,
            unique_guid: guid(3),
            name: partition::ROOT_LABEL.into(),
        },
    ];
    let gpt = partition::gpt_write(l.disk_sectors, guid(0), &parts, Some(&boot))
        .map_err(|e| Error::Failed(format!("GPT: {e:?}")))?;

    let _ = std::fs::remove_file(out);
    let mut f = File::create(out).map_err(io_err(out))?;
    let size = l.disk_sectors * SECTOR;
    f.set_len(size).map_err(io_err(out))?;
    let mut put = |at: u64, bytes: &[u8]| -> Result<(), Error> {
        f.seek(SeekFrom::Start(at)).map_err(io_err(out))?;
        f.write_all(bytes).map_err(io_err(out))
    };
    put(0, &gpt.primary)?;
    put(l.bios.0 * SECTOR, &core)?;
    put(
        l.esp.0 * SECTOR,
        &std::fs::read(&esp).map_err(io_err(&esp))?,
    )?;
    put(
        l.root.0 * SECTOR,
        &std::fs::read(&root_img).map_err(io_err(&root_img))?,
    )?;
    put(size - gpt.backup.len() as u64, &gpt.backup)?;
    f.sync_all().map_err(io_err(out))?;
    Ok(size)
}

/// `qemu-img convert -O qcow2 RAW OUT`.
pub fn qcow2_command(raw: &Path, out: &Path) -> Command {
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out);
    c
}

/// The GCE archive: `disk.raw` in a sparse, gzip-compressed GNU tar in the
/// old GNU format, as `gcloud compute images create --source-uri` expects.
pub fn gce_tar_command(dir: &Path, out: &Path) -> Command {
    let mut c = Command::new("tar");
    c.args(["--format=oldgnu", "-Sczf"])
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg("disk.raw");
    c
}

/// The formats beyond plain ext4: builds `out` from `kernel` and `site`.
/// Returns a description of what was written, one line per file.
pub fn build(
    format: crate::ImageFormat,
    kernel: &Path,
    site: &Path,
    files: &[(PathBuf, String)],
    cmdline: &str,
    out: &Path,
) -> Result<Vec<String>, Error> {
    use crate::ImageFormat as F;
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let out = abs(out);
    let mib = |n: u64| format!("{:.1} MiB", n as f64 / MIB as f64);
    match format {
        F::Ext4 => {
            let n = crate::image::build_image_with(site, &out, F::Ext4, files)?;
            Ok(vec![format!("{}  ext4, {}", out.display(), mib(n))])
        }
        F::Elf => {
            let disk = out.with_extension("ext4");
            std::fs::copy(kernel, &out).map_err(io_err(&out))?;
            let n = crate::image::build_image_with(site, &disk, F::Ext4, files)?;
            let k = std::fs::metadata(&out).map_err(io_err(&out))?.len();
            Ok(vec![
                format!("{}  PVH ELF kernel, {}", out.display(), mib(k)),
                format!("{}  ext4 root disk, {}", disk.display(), mib(n)),
            ])
        }
        F::Raw => {
            let n = build_raw(kernel, site, files, cmdline, &out)?;
            Ok(vec![format!(
                "{}  raw GPT disk (BIOS + UEFI), {}",
                out.display(),
                mib(n)
            )])
        }
        F::Qcow2 => {
            let tmp = Scratch::new("qcow2")?;
            let raw = tmp.0.join("disk.raw");
            build_raw(kernel, site, files, cmdline, &raw)?;
            let _ = std::fs::remove_file(&out);
            run(&mut qcow2_command(&raw, &out))?;
            let n = std::fs::metadata(&out).map_err(io_err(&out))?.len();
            Ok(vec![format!(
                "{}  qcow2 (BIOS + UEFI), {}",
                out.display(),
                mib(n)
            )])
        }
        F::Gce => {
            let tmp = Scratch::new("gce")?;
            let raw = tmp.0.join("disk.raw");
            build_raw(kernel, site, files, cmdline, &raw)?;
            let _ = std::fs::remove_file(&out);
            run(&mut gce_tar_command(&tmp.0, &out))?;
            let n = std::fs::metadata(&out).map_err(io_err(&out))?.len();
            Ok(vec![format!(
                "{}  GCE image (disk.raw in tar.gz), {}",
                out.display(),
                mib(n)
            )])
        }
    }
}

/// `cargo uk image APP --site DIR -o OUT --format F` for the formats that
/// carry a kernel: builds APP (release), the image, and prints how to boot it.
pub fn image_command(
    app: &str,
    site: &Path,
    out: &Path,
    format: crate::ImageFormat,
    args: &[String],
    files: &[(PathBuf, String)],
    flavor: crate::build::Flavor,
) -> Result<i32, Error> {
    let kernel = crate::build::build_image_flavor(app, crate::Profile::Release, flavor, false)?;
    let cmdline = disk_cmdline("", args);
    for line in build(format, &kernel, site, files, &cmdline, out)? {
        println!("{line}");
    }
    let out = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let q = |s: &Path| s.display().to_string();
    match format {
        crate::ImageFormat::Elf => println!(
            "boot: {} -M microvm -m 128M -nodefaults -no-user-config -display none -serial stdio \
             -kernel {} -append {} \
             -drive if=none,id=d0,file={},format=raw,readonly=on -device virtio-blk-device,drive=d0 \
             -netdev user,id=n0,hostfwd=tcp:127.0.0.1:8080-:80 -device virtio-net-device,netdev=n0",
            crate::QEMU,
            q(&out),
            crate::qemu::shell_quote(&crate::qemu::kernel_cmdline("console=ttyS0", args)),
            q(&out.with_extension("ext4"))
        ),
        crate::ImageFormat::Raw | crate::ImageFormat::Qcow2 => {
            let fmt = if format == crate::ImageFormat::Raw {
                "raw"
            } else {
                "qcow2"
            };
            println!(
                "boot (BIOS): {} -M q35 -m 256M -nodefaults -no-user-config -display none -serial stdio \
                 -drive if=none,id=d0,file={},format={fmt} -device virtio-blk-pci,drive=d0,bootindex=0 \
                 -netdev user,id=n0,hostfwd=tcp:127.0.0.1:8080-:80 -device virtio-net-pci,netdev=n0",
                crate::QEMU,
                q(&out)
            );
            println!("boot (UEFI): the same with -bios {OVMF}");
        }
        _ => println!("deploy: see docs/DEPLOY.md"),
    }
    Ok(0)
}

/// OVMF (UEFI firmware for QEMU) from Debian's `ovmf` package.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// The firmware that boots a disk image, as a cloud VM's would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default BIOS (legacy boot through GRUB's boot.img).
    SeaBios,
    /// OVMF (UEFI boot through EFI/BOOT/BOOTX64.EFI).
    Ovmf,
}

impl Firmware {
    /// Both, in the order the tests and the benchmark use.
    pub const ALL: [Firmware; 2] = [Firmware::SeaBios, Firmware::Ovmf];

    /// The lower-case name (`seabios`, `ovmf`).
    pub fn name(self) -> &'static str {
        match self {
            Firmware::SeaBios => "seabios",
            Firmware::Ovmf => "ovmf",
        }
    }
}

impl std::fmt::Display for Firmware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Makes sure OVMF is there (Debian's `ovmf`), installing it with apt-get
/// when root; otherwise fails with the command to run.
pub fn ensure_ovmf() -> Result<(), Error> {
    let present = || Path::new(OVMF).is_file();
    if present() {
        return Ok(());
    }
    crate::qemu::apt_install(&["ovmf"], "OVMF (UEFI firmware)", present)
}

/// The QEMU command that boots the disk image `cfg.disk` through `fw` the
/// way a cloud starts a VM: `-M q35`, no `-kernel` (the kernel and its
/// command line come from the image), the disk as a bootable virtio-blk-pci
/// device (a snapshot: writes never reach the image), virtio-net-pci with
/// user networking when `cfg` asks for a network, the first serial port on
/// stdio. `cfg.image`, `cfg.machine`, `cfg.append` and `cfg.args` are not
/// used. isa-debug-exit stays, so the app's status reaches the host.
pub fn disk_boot_command(cfg: &crate::VmConfig, fw: Firmware) -> Command {
    let mut cmd = match &cfg.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, crate::QEMU]);
            c
        }
        None => Command::new(crate::QEMU),
    };
    cmd.args(["-M", "q35"]);
    cmd.args(cfg.accel.vcpu_args(cfg.smp));
    if fw == Firmware::Ovmf {
        cmd.args(["-bios", OVMF]);
    }
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
    cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    if let Some(disk) = &cfg.disk {
        let fmt = if disk.extension().is_some_and(|e| e == "qcow2") {
            "qcow2"
        } else {
            "raw"
        };
        cmd.arg("-drive").arg(format!(
            "if=none,id=d0,file={},format={fmt},snapshot=on",
            disk.display()
        ));
        for d in cfg.disk_bus.devices(crate::Machine::Q35, true) {
            cmd.arg("-device").arg(d);
        }
    }
    if let Some(tap) = &cfg.tap {
        let (netdev, device) = crate::VmConfig {
            machine: crate::Machine::Q35,
            ..cfg.clone()
        }
        .tap_netdev(tap);
        cmd.arg("-netdev").arg(netdev);
        cmd.arg("-device").arg(device);
    } else if cfg.net || !cfg.fwds.is_empty() {
        let mut netdev = String::from("user,id=net0");
        for f in &cfg.fwds {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest));
        }
        cmd.arg("-netdev").arg(netdev);
        cmd.args(["-device", "virtio-net-pci,netdev=net0"]);
    }
    cmd
}

/// QEMU microvm's virtio-mmio transports: 512 bytes each from this base.
pub const MICROVM_MMIO_BASE: u64 = 0xfeb0_0000;
/// Transports on microvm with its second I/O APIC (GSI 24 + slot).
pub const MICROVM_MMIO_SLOTS: u64 = 24;

/// The `virtio_mmio.device=` options for `n` devices on QEMU microvm, in
/// `-device` order: QEMU plugs the first device into the last transport
/// (slot 23: 0xfeb02e00, GSI 47), the next into slot 22, and so on.
pub fn microvm_mmio_options(n: usize) -> Vec<String> {
    (0..n as u64)
        .map(|i| {
            let slot = MICROVM_MMIO_SLOTS - 1 - i;
            format!(
                "virtio_mmio.device=512@{:#x}:{}",
                MICROVM_MMIO_BASE + 512 * slot,
                24 + slot
            )
        })
        .collect()
}

/// A Firecracker-style start on QEMU microvm: `cfg` booted as
/// [`crate::qemu_command`] would, but QEMU adds nothing to the command
/// line (`auto-kernel-cmdline=off`), the virtio-mmio devices are announced
/// on it (`virtio_mmio.device=SIZE@ADDR:IRQ`, as Firecracker does) after
/// Firecracker's usual `console=ttyS0 reboot=k panic=1 pci=off`, and the
/// VM has no isa-debug-exit, only an i8042 whose reset line ends the VM
/// (Firecracker's shutdown; QEMU exits with 0 under `-no-reboot`).
pub fn firecracker_style_command(cfg: &crate::VmConfig) -> Command {
    let base = crate::qemu_command(&crate::VmConfig {
        machine: crate::Machine::Microvm,
        ..cfg.clone()
    });
    let devices = usize::from(cfg.disk.is_some())
        + usize::from(cfg.state_disk.is_some())
        + usize::from(cfg.tap.is_some() || cfg.net || !cfg.fwds.is_empty());
    let mut opts = vec!["console=ttyS0 reboot=k panic=1 pci=off".to_string()];
    opts.extend(microvm_mmio_options(devices));
    let mut cmd = Command::new(base.get_program());
    let args: Vec<String> = base
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut i = 0;
    while i < args.len() {
        let (a, next) = (&args[i], args.get(i + 1));
        match (a.as_str(), next) {
            ("-M", Some(m)) => {
                cmd.arg("-M").arg(format!("{m},auto-kernel-cmdline=off"));
                i += 2;
            }
            ("-append", Some(line)) => {
                cmd.arg("-append")
                    .arg(format!("{} {}", opts.join(" "), line.trim_start()));
                i += 2;
            }
            ("-device", Some(d)) if d.starts_with("isa-debug-exit") => {
                cmd.args(["-device", "i8042"]);
                i += 2;
            }
            _ => {
                cmd.arg(a);
                i += 1;
            }
        }
    }
    cmd
}

/// `cargo uk bench boot`'s disk rows: `kernel` in a raw image (empty
/// site) booted `runs` times through each [`Firmware`] on q35.
pub fn bench_disk_rows(
    kernel: &Path,
    runs: usize,
    accel: crate::Accel,
) -> Result<Vec<Vec<String>>, Error> {
    ensure_ovmf()?;
    let tmp = Scratch::new("bench-disk")?;
    let site = tmp.0.join("site");
    std::fs::create_dir_all(&site).map_err(io_err(&site))?;
    let disk = tmp.0.join("disk.raw");
    build_raw(kernel, &site, &[], &disk_cmdline("", &[]), &disk)?;
    let size = std::fs::metadata(&disk).map_err(io_err(&disk))?.len();
    let mut rows = Vec::new();
    for fw in Firmware::ALL {
        let mut cfg = crate::VmConfig::new(kernel);
        cfg.machine = crate::Machine::Q35;
        cfg.accel = accel;
        cfg.mem = crate::MemSize(256 << 20);
        cfg.disk = Some(disk.clone());
        let mut samples = Vec::with_capacity(runs);
        for i in 0..runs {
            let s = crate::bench::boot_once_command(
                disk_boot_command(&cfg, fw),
                std::time::Duration::from_secs(180),
            )
            .map_err(|e| Error::Failed(format!("q35 {fw} disk run {}/{runs}: {e}", i + 1)))?;
            samples.push(s);
        }
        rows.push(crate::bench::row_named(
            &format!("q35 {fw} disk"),
            size,
            &samples,
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_cmdline() {
        let c = disk_cmdline("log=debug", &["--port".into(), "80".into()]);
        assert_eq!(c, "console=ttyS0 log=debug -- --port 80");
        assert_eq!(disk_cmdline("", &[]), "console=ttyS0 --");
        let g = grub_config(&c);
        assert!(g.starts_with("serial --unit=0 --speed=115200\n"));
        assert!(g.contains("\nmultiboot2 /boot/uk-kernel console=ttyS0 log=debug -- --port 80\n"));
        assert!(g.ends_with("boot\n"));
    }

    #[test]
    fn layout_is_aligned() {
        let l = layout(33 * MIB, 20 * MIB);
        assert_eq!(l.bios, (2048, 2048));
        assert_eq!(l.esp.0, 4096);
        assert_eq!(l.root.0, 4096 + 33 * 2048);
        assert_eq!(l.disk_sectors, l.root.0 + 20 * 2048 + 2048);
        assert_eq!((l.disk_sectors * SECTOR) % MIB, 0);
    }

    #[test]
    fn grub_stage_patches() {
        let mut boot = [0u8; 512];
        patch_boot_img(&mut boot, 2048);
        assert_eq!(&boot[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(&boot[0x66..0x68], &[0x90, 0x90]);
        let mut core = vec![0u8; 512 * 60 + 100];
        patch_core_img(&mut core, 2048).unwrap();
        assert_eq!(&core[500..508], &2049u64.to_le_bytes());
        assert_eq!(&core[508..510], &60u16.to_le_bytes());
        assert!(patch_core_img(&mut [0u8; 512], 1).is_err());
    }

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn vm() -> crate::VmConfig {
        let mut c = crate::VmConfig::new("/k");
        c.accel = crate::Accel::Tcg;
        c.disk = Some("/d.raw".into());
        c.fwds = vec![crate::PortFwd {
            host: 8080,
            guest: 80,
        }];
        c
    }

    #[test]
    fn disk_boot_commands() {
        let a = args(&disk_boot_command(&vm(), Firmware::SeaBios));
        let s = a.join(" ");
        assert!(
            s.starts_with("-M q35 -accel tcg -cpu max -nodefaults"),
            "{s}"
        );
        assert!(!s.contains("-kernel") && !s.contains("-bios"), "{s}");
        assert!(s.contains("-drive if=none,id=d0,file=/d.raw,format=raw,snapshot=on"));
        assert!(s.contains("-device virtio-blk-pci,drive=d0,bootindex=0"));
        assert!(s.contains("hostfwd=tcp:127.0.0.1:8080-:80 -device virtio-net-pci,netdev=net0"));
        let a = args(&disk_boot_command(&vm(), Firmware::Ovmf));
        assert!(a.join(" ").contains(&format!("-bios {OVMF}")));
        let mut c = vm();
        c.disk_bus = crate::DiskBus::Scsi;
        let s = args(&disk_boot_command(&c, Firmware::SeaBios)).join(" ");
        assert!(
            s.contains(
                "-device virtio-scsi-pci,id=scsi0 -device scsi-hd,drive=d0,bus=scsi0.0,bootindex=0"
            ),
            "{s}"
        );
        c.disk_bus = crate::DiskBus::Nvme;
        let s = args(&disk_boot_command(&c, Firmware::SeaBios)).join(" ");
        assert!(
            s.contains("-device nvme,serial=uk0,drive=d0,bootindex=0"),
            "{s}"
        );
    }

    #[test]
    fn firecracker_style() {
        assert_eq!(
            microvm_mmio_options(2),
            [
                "virtio_mmio.device=512@0xfeb02e00:47",
                "virtio_mmio.device=512@0xfeb02c00:46"
            ]
        );
        let mut c = vm();
        c.append = "log=debug".into();
        c.args = vec!["x".into()];
        let s = args(&firecracker_style_command(&c)).join(" ");
        assert!(
            s.contains("-M microvm,x-option-roms=off,rtc=on,auto-kernel-cmdline=off"),
            "{s}"
        );
        assert!(
            s.contains(
                "-append console=ttyS0 reboot=k panic=1 pci=off \
                 virtio_mmio.device=512@0xfeb02e00:47 virtio_mmio.device=512@0xfeb02c00:46 \
                 log=debug -- x"
            ),
            "{s}"
        );
        assert!(
            s.contains("-device i8042") && !s.contains("isa-debug-exit"),
            "{s}"
        );
        assert!(s.contains("-kernel /k"));
    }

    #[test]
    fn packaging_commands() {
        let a = |c: &Command| {
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            a(&gce_tar_command(Path::new("/t"), Path::new("/o.tar.gz"))),
            [
                "--format=oldgnu",
                "-Sczf",
                "/o.tar.gz",
                "-C",
                "/t",
                "disk.raw"
            ]
        );
        assert_eq!(
            a(&qcow2_command(Path::new("/r"), Path::new("/o"))),
            ["convert", "-f", "raw", "-O", "qcow2", "/r", "/o"]
        );
        let m = a(&grub_mkimage(
            "i386-pc",
            GRUB_PC_DIR,
            Path::new("/c"),
            Path::new("/o"),
        ));
        assert!(m.contains(&"biosdisk".to_string()) && m.contains(&"multiboot2".to_string()));
    }
}
