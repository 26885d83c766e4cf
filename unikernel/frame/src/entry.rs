//! The boot sequence in Rust: from the PVH entry to the application's `main`.
//!
//! 1. console (COM1) up, so anything later can report;
//! 2. copy the command line, memory map and RSDP out of the PVH start info
//!    or, after a disk boot through GRUB, the Multiboot2 information;
//! 3. GDT + TSS (IST stacks), IDT;
//! 4. frame allocator, kernel page tables (W^X image, page 0 unmapped);
//! 5. heap (lazily, on first allocation), then parse the command line;
//! 6. TSC frequency;
//! 7. ACPI, local APIC and I/O APICs (`irq::init`);
//! 8. the other CPUs of the MADT started (`arch::smp`; they wait for the scheduler), then
//!    `smp: N CPUs online`;
//! 9. the application's `__uk_app_start` (`unikernel::main!`): the kernel
//!    services start the drivers, then the scheduler with `main` as its first
//!    thread (`unikernel::entry`).

use alloc::string::String;
use alloc::vec::Vec;

use uk_core::cmdline::{Cmdline, KernelConfig};
use uk_core::frame::{MemRegion, RegionKind};

use crate::arch::{self, boot, cpu};
use crate::sync::BootCell;
use crate::{console, mm, time};

const START_INFO_MAGIC: u32 = 0x336e_c578;
const MAX_CMDLINE: usize = 4096;
const MAX_MEMMAP: usize = 128;
/// Size of the main thread's stack (demand paged: only touched pages cost RAM).
pub const MAIN_STACK_SIZE: u64 = 1024 * 1024;

/// hvm_start_info, as the PVH ABI defines it.
#[repr(C)]
#[derive(Clone, Copy)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

struct BootInfo {
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    map: [MemRegion; MAX_MEMMAP],
    map_len: usize,
    rsdp: u64,
    /// The RSDP copy from a Multiboot2 ACPI tag (`rsdp` then points here).
    rsdp_copy: [u8; RSDP_COPY],
}

/// Room for an ACPI 2.0+ RSDP (36 bytes) copied out of the MBI.
const RSDP_COPY: usize = 64;
/// Largest Multiboot2 boot information the kernel accepts.
const MAX_MBI: usize = 64 * 1024;

/// How the kernel was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH (QEMU `-kernel`, Firecracker, cloud-hypervisor).
    Pvh,
    /// Multiboot2 (GRUB from a disk, under BIOS or UEFI).
    Multiboot2,
}

static PROTOCOL: BootCell<BootProtocol> = BootCell::new(BootProtocol::Pvh);

/// How the kernel was entered.
pub fn boot_protocol() -> BootProtocol {
    // SAFETY: written once in `kernel_start` before anything else runs.
    unsafe { *PROTOCOL.get() }
}

static BOOT_INFO: BootCell<BootInfo> = BootCell::new(BootInfo {
    cmdline: [0; MAX_CMDLINE],
    cmdline_len: 0,
    // All-zero (RegionKind::Ram is 0) so this lives in .bss; only the first
    // `map_len` entries are meaningful.
    map: [MemRegion {
        start: 0,
        len: 0,
        kind: RegionKind::Ram,
    }; MAX_MEMMAP],
    map_len: 0,
    rsdp: 0,
    rsdp_copy: [0; RSDP_COPY],
});

/// Reads the Multiboot2 boot information GRUB left at `paddr` (`ebx`).
/// Everything is copied, as for PVH.
fn read_multiboot2(paddr: u32, info: &mut BootInfo) {
    use uk_core::multiboot2;
    if paddr == 0 || !paddr.is_multiple_of(8) {
        crate::fatal_early("Multiboot2 information pointer is invalid");
    }
    let mut head = [0u8; 8];
    // SAFETY: a Multiboot2 loader puts the MBI (8-byte aligned, starting
    // with its u32 total size) at `paddr`, below 4 GiB, which the boot page
    // tables identity map.
    unsafe { core::ptr::copy_nonoverlapping(paddr as usize as *const u8, head.as_mut_ptr(), 8) };
    let total = multiboot2::total_size(&head);
    if !(8..=MAX_MBI).contains(&total) {
        crate::fatal_early("Multiboot2 information has a bad size");
    }
    // SAFETY: as above; the MBI is `total` bytes long (bounded by MAX_MBI),
    // and nothing writes it while the kernel reads it.
    let bytes = unsafe { core::slice::from_raw_parts(paddr as usize as *const u8, total) };
    let Ok(mbi) = multiboot2::parse(bytes) else {
        crate::fatal_early("Multiboot2 information is malformed");
    };
    if let Some(c) = mbi.cmdline {
        let n = c.len().min(MAX_CMDLINE - 1);
        info.cmdline[..n].copy_from_slice(&c[..n]);
        info.cmdline_len = n;
    }
    let mut n = 0;
    for r in mbi.memory_map().take(MAX_MEMMAP) {
        info.map[n] = r;
        n += 1;
    }
    info.map_len = n;
    if n == 0 {
        crate::fatal_early("Multiboot2 information has no memory map");
    }
    if let Some(r) = mbi.rsdp() {
        let n = r.len().min(RSDP_COPY);
        info.rsdp_copy[..n].copy_from_slice(&r[..n]);
        info.rsdp = info.rsdp_copy.as_ptr() as u64;
    }
}

/// Reads what the VMM passed. Everything is copied, so low memory can be reused.
fn read_start_info(paddr: u32, info: &mut BootInfo) {
    if paddr == 0 || !paddr.is_multiple_of(4) {
        crate::fatal_early("PVH start info pointer is invalid");
    }
    // SAFETY: the PVH ABI puts a hvm_start_info at `paddr` (ebx at entry),
    // inside the first 4 GiB that the boot page tables identity map.
    let si = unsafe { (paddr as usize as *const StartInfo).read_unaligned() };
    if si.magic != START_INFO_MAGIC {
        crate::fatal_early("PVH start info has a bad magic number");
    }
    info.rsdp = si.rsdp_paddr;
    if si.cmdline_paddr != 0 && si.cmdline_paddr < 0x1_0000_0000 {
        let base = si.cmdline_paddr as usize as *const u8;
        let mut n = 0;
        while n < MAX_CMDLINE - 1 {
            // SAFETY: the command line is a NUL-terminated string the VMM put
            // in low memory; we stop at the NUL or at MAX_CMDLINE.
            let b = unsafe { base.add(n).read() };
            if b == 0 {
                break;
            }
            info.cmdline[n] = b;
            n += 1;
        }
        info.cmdline_len = n;
    }
    let count = (si.memmap_entries as usize).min(MAX_MEMMAP);
    if si.memmap_paddr != 0 && si.memmap_paddr < 0x1_0000_0000 {
        let base = si.memmap_paddr as usize as *const MemmapEntry;
        for i in 0..count {
            // SAFETY: the VMM provides `memmap_entries` entries at
            // `memmap_paddr` (we read at most MAX_MEMMAP of them).
            let e = unsafe { base.add(i).read_unaligned() };
            info.map[i] = MemRegion {
                start: e.addr,
                len: e.size,
                kind: RegionKind::from_e820(e.kind),
            };
        }
        info.map_len = count;
    }
    if info.map_len == 0 {
        crate::fatal_early("PVH start info has no memory map");
    }
}

static ARGS: BootCell<Vec<String>> = BootCell::new(Vec::new());

/// The application's arguments (after `--` on the command line).
pub fn args() -> &'static [String] {
    // SAFETY: written once in `kernel_start` before `main` runs, then only read.
    unsafe { &*ARGS.get() }
}

static CONFIG: BootCell<Option<KernelConfig>> = BootCell::new(None);

/// The kernel configuration from the command line.
pub fn config() -> &'static KernelConfig {
    // SAFETY: written once in `kernel_start` before `main` runs, then only read.
    unsafe { (*CONFIG.get()).as_ref() }.expect("kernel config read before boot finished")
}

/// Called by the PVH/Multiboot2 entry code on the boot stack, in long mode,
/// with `ebx` and `eax` as they were at entry.
pub extern "C" fn kernel_start(start_info: u32, entry_eax: u32) -> ! {
    arch::smp::init_boot_cpu();
    console::init();
    crate::arch::simd::init();
    crate::arch::mem::init();
    // SAFETY: single-threaded boot; nothing else refers to BOOT_INFO yet.
    let info = unsafe { &mut *BOOT_INFO.get() };
    if entry_eax == uk_core::multiboot2::BOOTLOADER_MAGIC {
        // SAFETY: single-threaded boot, before anything reads PROTOCOL.
        unsafe { *PROTOCOL.get() = BootProtocol::Multiboot2 };
        read_multiboot2(start_info, info);
    } else {
        read_start_info(start_info, info);
    }
    arch::gdt::init_boot_cpu();
    arch::idt::init();
    mm::init(&info.map[..info.map_len], boot::layout());
    time::stage("mm");

    let text = String::from_utf8_lossy(&info.cmdline[..info.cmdline_len]).into_owned();
    let (cmdline, mut warnings) = Cmdline::parse(&text);
    let (config, more) = KernelConfig::from_cmdline(&cmdline);
    warnings.extend(more);
    console::init_log(config.log);
    time::init();
    time::stage("tsc");
    crate::irq::init(info.rsdp);
    time::stage("irq");
    arch::smp::start();
    for w in &warnings {
        log::warn!("{w}");
    }
    log::debug!(
        "boot protocol: {:?}; command line: \"{text}\"",
        boot_protocol()
    );
    log::debug!("tsc: {} Hz; memory: {}", time::tsc_hz(), mm::stats());
    // SAFETY: single-threaded boot; `main` has not started, nobody reads these yet.
    unsafe {
        *ARGS.get() = cmdline.args;
        *CONFIG.get() = Some(config);
    }

    // SAFETY: the application defines this symbol with `unikernel::main!`
    // (through `app_entry!`), with exactly this signature; the link fails if
    // it is missing.
    unsafe { __uk_app_start() }
}

unsafe extern "Rust" {
    /// Defined by the application through `unikernel::main!`: starts the
    /// kernel services (drivers, power, then the scheduler with the main
    /// thread), never returns.
    fn __uk_app_start() -> !;
}

/// Ends the VM with `status` (0..=127 arrive intact at the host).
pub fn exit(status: i32) -> ! {
    log::debug!("exit status {status}");
    cpu::exit_vm(status as u32)
}
