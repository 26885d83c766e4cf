//! Time from the TSC. Its frequency comes from CPUID (leaf 0x15, the
//! hypervisor's 0x40000010, or 0x16) where the CPU reports it, otherwise from a
//! 250 us measurement against the PIT's channel 0.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use crate::arch::{boot, cpu};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// The TSC frequency in Hz, 0 before [`init`].
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Converts TSC cycles to microseconds (None while the frequency is unknown).
pub fn cycles_to_us(cycles: u64) -> Option<u64> {
    let hz = tsc_hz();
    (hz != 0).then(|| (cycles as u128 * 1_000_000 / hz as u128) as u64)
}

/// Nanoseconds since the PVH entry (0 while the frequency is unknown).
pub fn since_boot_ns() -> u64 {
    let hz = tsc_hz();
    if hz == 0 {
        return 0;
    }
    let c = cpu::rdtsc().saturating_sub(boot::entry_tsc());
    (c as u128 * 1_000_000_000 / hz as u128) as u64
}

/// Microseconds since the PVH entry.
pub fn since_boot_us() -> u64 {
    since_boot_ns() / 1000
}

fn from_cpuid() -> Option<u64> {
    let max = cpu::cpuid(0, 0).eax;
    if max >= 0x15 {
        let r = cpu::cpuid(0x15, 0);
        if r.eax != 0 && r.ebx != 0 && r.ecx != 0 {
            return Some(r.ecx as u64 * r.ebx as u64 / r.eax as u64);
        }
    }
    // Hypervisor timing leaf (KVM/QEMU with invtsc, VMware convention): kHz.
    if cpu::cpuid(1, 0).ecx & (1 << 31) != 0 {
        let hv_max = cpu::cpuid(0x4000_0000, 0).eax;
        if hv_max >= 0x4000_0010 {
            let khz = cpu::cpuid(0x4000_0010, 0).eax;
            if khz != 0 {
                return Some(khz as u64 * 1000);
            }
        }
    }
    if max >= 0x16 {
        let mhz = cpu::cpuid(0x16, 0).eax & 0xffff;
        if mhz != 0 {
            return Some(mhz as u64 * 1_000_000);
        }
    }
    None
}

const PIT_HZ: u64 = 1_193_182;

fn pit_read_ch0(cmd: &mut Port<u8>, data: &mut Port<u8>) -> u16 {
    // SAFETY: PIT ports; latching and reading the count has no memory effects.
    unsafe {
        cmd.write(0x00); // latch channel 0
        let lo = data.read() as u16;
        let hi = data.read() as u16;
        (hi << 8) | lo
    }
}

/// Measures the TSC against PIT channel 0 for about 250 us.
fn from_pit() -> Option<u64> {
    let mut cmd = Port::<u8>::new(0x43);
    let mut data = Port::<u8>::new(0x40);
    // SAFETY: programs PIT channel 0 (one-shot, full count); the PIC is masked
    // and interrupts are off, so its IRQ0 goes nowhere.
    unsafe {
        cmd.write(0x30); // channel 0, lo/hi, mode 0, binary
        data.write(0xff);
        data.write(0xff);
    }
    let ticks = PIT_HZ / 4000;
    let start = pit_read_ch0(&mut cmd, &mut data);
    if start == 0xffff && pit_read_ch0(&mut cmd, &mut data) == 0xffff {
        // Either no PIT or it is not counting; give up after a bounded wait.
        let mut n = 0;
        while pit_read_ch0(&mut cmd, &mut data) == 0xffff {
            n += 1;
            if n > 100_000 {
                return None;
            }
        }
    }
    let t0 = cpu::rdtsc();
    let c0 = pit_read_ch0(&mut cmd, &mut data);
    let mut spins = 0u64;
    loop {
        let c = pit_read_ch0(&mut cmd, &mut data);
        let elapsed = c0.wrapping_sub(c) as u64;
        if elapsed >= ticks {
            let t1 = cpu::rdtsc();
            return Some((t1 - t0) * PIT_HZ / elapsed);
        }
        spins += 1;
        if spins > 50_000_000 {
            return None;
        }
    }
}

/// Determines the TSC frequency.
pub fn init() {
    let hz = from_cpuid().or_else(from_pit).unwrap_or(0);
    TSC_HZ.store(hz, Ordering::Relaxed);
}
