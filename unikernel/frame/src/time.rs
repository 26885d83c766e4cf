//! Time. The monotonic clock is the TSC, whose frequency comes from CPUID
//! (leaf 0x15, the hypervisor's 0x40000010, or 0x16) where the CPU reports it,
//! from KVM's pvclock where present, otherwise from a 250 us measurement
//! against the PIT's channel 0. Wall-clock time is the CMOS RTC read at boot
//! plus the monotonic clock since. Apps get [`Instant`], [`SystemTime`] and
//! `core::time::Duration`.

use core::sync::atomic::{AtomicU64, Ordering};
pub use core::time::Duration;

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
/// Out of line: a call costs nothing next to the 128-bit division, and the
/// division inlined at its 20 callers cost 2.5 KiB of the image.
#[inline(never)]
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

/// KVM's paravirtual clock: its TSC-to-nanoseconds scale gives the TSC rate.
fn from_pvclock() -> Option<u64> {
    if cpu::cpuid(1, 0).ecx & (1 << 31) == 0 {
        return None;
    }
    let sig = cpu::cpuid(0x4000_0000, 0);
    if (sig.ebx, sig.ecx, sig.edx) != (0x4b4d_564b, 0x564b_4d56, 0x0000_004d) {
        return None; // not "KVMKVMKVM\0\0\0"
    }
    if cpu::cpuid(0x4000_0001, 0).eax & (1 << 3) == 0 {
        return None; // no KVM_FEATURE_CLOCKSOURCE2
    }
    #[repr(C, align(64))]
    struct PvClock([u32; 8]);
    static PVCLOCK: crate::sync::BootCell<PvClock> = crate::sync::BootCell::new(PvClock([0; 8]));
    let addr = PVCLOCK.get() as u64; // identity mapped: virtual = physical
    let mut msr = x86_64::registers::model_specific::Msr::new(0x4b56_4d01);
    // SAFETY: MSR_KVM_SYSTEM_TIME_NEW exists (CPUID said so); the hypervisor
    // writes the 32-byte record at `addr`, a static nobody else touches;
    // we disable it again before reading the record.
    let (mul, shift) = unsafe {
        msr.write(addr | 1);
        let rec = core::ptr::read_volatile(PVCLOCK.get());
        msr.write(0);
        (rec.0[6], (rec.0[7] & 0xff) as u8 as i8)
    };
    if mul == 0 {
        return None;
    }
    let hz = (1_000_000_000u128 << 32) / mul as u128;
    let hz = if shift >= 0 {
        hz >> shift
    } else {
        hz << (-shift)
    };
    Some(hz as u64)
}

static BOOT_UNIX_NS: AtomicU64 = AtomicU64::new(0);

fn read_rtc() -> Option<u64> {
    let mut idx = Port::<u8>::new(0x70);
    let mut data = Port::<u8>::new(0x71);
    let mut reg = |r: u8| -> u8 {
        // SAFETY: CMOS index/data ports; reading RTC registers has no side effects
        // (bit 7 of the index keeps NMIs disabled as they are).
        unsafe {
            idx.write(0x80 | r);
            data.read()
        }
    };
    let read_all = |reg: &mut dyn FnMut(u8) -> u8| {
        let mut spins = 0;
        while reg(0x0a) & 0x80 != 0 && spins < 100_000 {
            spins += 1;
        }
        uk_core::time::RtcFields {
            sec: reg(0x00),
            min: reg(0x02),
            hour: reg(0x04),
            day: reg(0x07),
            month: reg(0x08),
            year: reg(0x09),
            century: reg(0x32),
            status_b: reg(0x0b),
        }
    };
    // Read until two reads agree, so an update in between cannot tear it
    // (at most six reads; one call site of each helper keeps them small).
    let mut prev = None;
    for _ in 0..6 {
        let b = read_all(&mut reg);
        if prev == Some(b) {
            return uk_core::time::rtc_to_unix(b);
        }
        prev = Some(b);
    }
    None
}

/// Determines the TSC frequency and reads the wall clock.
pub fn init() {
    let hz = from_cpuid()
        .or_else(from_pvclock)
        .or_else(from_pit)
        .unwrap_or(0);
    TSC_HZ.store(hz, Ordering::Relaxed);
    let boot_ns = since_boot_ns();
    match read_rtc() {
        Some(secs) => BOOT_UNIX_NS.store(
            (secs * 1_000_000_000).saturating_sub(boot_ns),
            Ordering::Relaxed,
        ),
        None => log::warn!("no usable CMOS RTC: wall-clock time starts at the Unix epoch"),
    }
}

/// A point on the monotonic clock (nanoseconds since boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// Now.
    pub fn now() -> Instant {
        Instant(since_boot_ns())
    }

    /// Time since `earlier` (zero if `earlier` is later).
    pub fn duration_since(&self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Time since this instant.
    pub fn elapsed(&self) -> Duration {
        Instant::now().duration_since(*self)
    }

    /// `self + d`, or None on overflow.
    pub fn checked_add(&self, d: Duration) -> Option<Instant> {
        u64::try_from(d.as_nanos())
            .ok()
            .and_then(|n| self.0.checked_add(n))
            .map(Instant)
    }

    /// Nanoseconds since boot.
    pub fn as_nanos(&self) -> u64 {
        self.0
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.checked_add(d)
            .expect("overflow when adding a duration to an instant")
    }
}

impl core::ops::Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.duration_since(earlier)
    }
}

/// Wall-clock time (UTC), from the RTC at boot plus the monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SystemTime(u64);

impl SystemTime {
    /// 1970-01-01 00:00:00 UTC.
    pub const UNIX_EPOCH: SystemTime = SystemTime(0);

    /// Now.
    pub fn now() -> SystemTime {
        SystemTime(BOOT_UNIX_NS.load(Ordering::Relaxed) + since_boot_ns())
    }

    /// Time since `earlier`, or the negative difference as the error.
    pub fn duration_since(&self, earlier: SystemTime) -> Result<Duration, Duration> {
        if self.0 >= earlier.0 {
            Ok(Duration::from_nanos(self.0 - earlier.0))
        } else {
            Err(Duration::from_nanos(earlier.0 - self.0))
        }
    }

    /// Whole seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.0 / 1_000_000_000
    }
}

/// Boot milestones: (name, TSC cycles since the PVH entry).
static STAGES: crate::sync::IrqMutex<[(&str, u64); 16]> = crate::sync::IrqMutex::new([("", 0); 16]);

/// Records a boot milestone (for `log=debug` and the boot benchmark).
pub fn stage(name: &'static str) {
    let c = cpu::rdtsc().saturating_sub(boot::entry_tsc());
    let mut s = STAGES.lock();
    if let Some(slot) = s.iter_mut().find(|(n, _)| n.is_empty()) {
        *slot = (name, c);
    }
}

/// The milestones as `name=us` pairs.
pub fn stages() -> alloc::string::String {
    use core::fmt::Write;
    let mut out = alloc::string::String::new();
    for (n, c) in STAGES.lock().iter().filter(|(n, _)| !n.is_empty()) {
        let _ = write!(out, "{n}={} ", cycles_to_us(*c).unwrap_or(0));
    }
    out
}
