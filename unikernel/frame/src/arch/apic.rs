//! Interrupt controllers: the local APIC (x2APIC when the CPU has it, else
//! xAPIC through MMIO), the I/O APIC(s), the legacy 8259 PICs (remapped to
//! 0x20..0x2f and masked, so a stray legacy IRQ is counted as spurious instead
//! of looking like an exception), MSI messages, and the local APIC timer in
//! TSC-deadline mode where supported, one-shot mode otherwise.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use x86_64::registers::model_specific::Msr;

use super::cpu;

/// Vector of the local APIC timer.
pub const TIMER_VECTOR: u8 = 0xef;
/// Vector of APIC errors.
pub const ERROR_VECTOR: u8 = 0xfe;
/// The spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// Physical base of the xAPIC registers.
pub const LAPIC_BASE: u64 = 0xfee0_0000;

const IA32_APIC_BASE: u32 = 0x1b;
const IA32_TSC_DEADLINE: u32 = 0x6e0;

const REG_ID: u32 = 0x20;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
const REG_ESR: u32 = 0x280;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CUR: u32 = 0x390;
const REG_TIMER_DIV: u32 = 0x3e0;

static X2APIC: AtomicBool = AtomicBool::new(false);
static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);
static APIC_ID: AtomicU32 = AtomicU32::new(0);
/// Local APIC timer ticks per millisecond (one-shot mode, divide by 16).
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC MSRs 0x800.. exist once x2APIC mode is enabled.
        unsafe { Msr::new(0x800 + (reg >> 4)).read() as u32 }
    } else {
        // SAFETY: the xAPIC page is identity mapped uncached by `init`, and
        // `reg` is a register offset inside it.
        unsafe { ((LAPIC_BASE + reg as u64) as *const u32).read_volatile() }
    }
}

fn write(reg: u32, v: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        let mut m = Msr::new(0x800 + (reg >> 4));
        // SAFETY: as in `read`; writes to APIC registers affect only interrupt delivery.
        unsafe { m.write(v as u64) }
    } else {
        // SAFETY: as in `read`.
        unsafe { ((LAPIC_BASE + reg as u64) as *mut u32).write_volatile(v) }
    }
}

fn pic_remap_and_mask() {
    let out = cpu::outb;
    // ICW1..ICW4: edge, cascade, vectors 0x20/0x28, 8086 mode; then mask all.
    out(0x20, 0x11);
    out(0xa0, 0x11);
    out(0x21, 0x20);
    out(0xa1, 0x28);
    out(0x21, 0x04);
    out(0xa1, 0x02);
    out(0x21, 0x01);
    out(0xa1, 0x01);
    out(0x21, 0xff);
    out(0xa1, 0xff);
}

/// True when the local APIC runs in x2APIC mode.
pub fn is_x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

/// True when the timer uses TSC-deadline mode.
pub fn has_tsc_deadline() -> bool {
    TSC_DEADLINE.load(Ordering::Relaxed)
}

/// This CPU's APIC id (the destination for MSI and I/O APIC routes).
pub fn id() -> u32 {
    APIC_ID.load(Ordering::Relaxed)
}

/// Masks the PICs and enables this CPU's local APIC.
pub fn init_local() {
    pic_remap_and_mask();
    let f = cpu::cpuid(1, 0);
    let has_x2 = f.ecx & (1 << 21) != 0;
    TSC_DEADLINE.store(f.ecx & (1 << 24) != 0, Ordering::Relaxed);
    X2APIC.store(has_x2, Ordering::Relaxed);
    if !has_x2 {
        crate::mm::map_mmio(LAPIC_BASE, 4096).expect("map the local APIC");
    }
    enable(ERROR_VECTOR as u32);
    let id = read(REG_ID);
    APIC_ID.store(if has_x2 { id } else { id >> 24 }, Ordering::Relaxed);
    write(REG_TIMER_DIV, 0x3); // divide by 16
    if !has_tsc_deadline() {
        calibrate_timer();
    }
}

/// Enables an application processor's local APIC in the boot CPU's mode,
/// every local interrupt masked (`arch::smp`: a parked CPU takes none; the
/// scheduler arms its timer once it runs threads).
/// Touches no kernel lock: the xAPIC page is already mapped.
pub fn init_ap() {
    enable(1 << 16);
    write(REG_TIMER_DIV, 0x3); // as the boot CPU's (the calibration is shared)
}

/// Enables the calling CPU's local APIC (x2APIC if [`init_local`] chose it):
/// LINT0/1 and the timer masked, `lvt_error` as the error entry.
fn enable(lvt_error: u32) {
    let mut base = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; we only set the
    // global-enable bit (11) and, when supported, the x2APIC bit (10).
    unsafe {
        let v = base.read();
        base.write(v | (1 << 11) | if is_x2apic() { 1 << 10 } else { 0 });
    }
    write(REG_TPR, 0);
    write(REG_LVT_LINT0, 1 << 16);
    write(REG_LVT_LINT1, 1 << 16);
    write(REG_LVT_ERROR, lvt_error);
    write(REG_ESR, 0);
    write(REG_SVR, (1 << 8) | SPURIOUS_VECTOR as u32);
    write(REG_LVT_TIMER, 1 << 16);
}

/// ICR command: INIT, level assert.
pub const ICR_INIT: u32 = 0x4500;
/// ICR command: start-up (SIPI); or in the start page number.
pub const ICR_STARTUP: u32 = 0x4600;

/// Sends the inter-processor interrupt `icr` (the ICR's low word) to the
/// CPU with APIC id `dest`; in xAPIC mode, waits (bounded) until the APIC
/// has sent it.
pub fn send_ipi(dest: u32, icr: u32) {
    if is_x2apic() {
        // SAFETY: the x2APIC ICR (MSR 0x830) takes the destination in the
        // high half; sending an IPI changes no memory.
        unsafe { Msr::new(0x830).write(((dest as u64) << 32) | icr as u64) };
    } else {
        write(REG_ICR_HIGH, dest << 24);
        write(REG_ICR_LOW, icr);
        for _ in 0..1_000_000 {
            if read(REG_ICR_LOW) & (1 << 12) == 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
}

/// Measures the one-shot timer's rate against the TSC (about 250 us).
fn calibrate_timer() {
    let hz = crate::time::tsc_hz();
    if hz == 0 {
        return;
    }
    write(REG_LVT_TIMER, (1 << 16) | TIMER_VECTOR as u32);
    write(REG_TIMER_INIT, u32::MAX);
    let t0 = cpu::rdtsc();
    let wait = hz / 4000;
    while cpu::rdtsc() - t0 < wait {
        core::hint::spin_loop();
    }
    let cur = read(REG_TIMER_CUR);
    let t1 = cpu::rdtsc();
    write(REG_TIMER_INIT, 0);
    let ticks = (u32::MAX - cur) as u64;
    let per_ms = (ticks as u128 * hz as u128 / 1000 / (t1 - t0).max(1) as u128) as u64;
    TICKS_PER_MS.store(per_ms.max(1), Ordering::Relaxed);
}

/// Signals the end of the current interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Arms this CPU's timer to fire at TSC value `deadline` (or stops it with
/// `None`). Interrupts off (the per-CPU "armed" flag).
pub fn set_timer(deadline: Option<u64>) {
    let Some(deadline) = deadline else {
        if has_tsc_deadline() {
            // SAFETY: writing 0 disarms the TSC-deadline timer.
            unsafe { Msr::new(IA32_TSC_DEADLINE).write(0) };
        } else {
            write(REG_TIMER_INIT, 0);
        }
        return;
    };
    if has_tsc_deadline() {
        if !super::smp::this_cpu()
            .lvt_armed
            .swap(true, Ordering::Relaxed)
        {
            write(REG_LVT_TIMER, (0b10 << 17) | TIMER_VECTOR as u32);
        }
        // SAFETY: arms the TSC-deadline timer; its only effect is an interrupt.
        unsafe { Msr::new(IA32_TSC_DEADLINE).write(deadline.max(1)) };
    } else {
        let now = cpu::rdtsc();
        let hz = crate::time::tsc_hz().max(1);
        let cycles = deadline.saturating_sub(now);
        let per_ms = TICKS_PER_MS.load(Ordering::Relaxed).max(1);
        // Aim 3% early: the calibration is approximate, and an early interrupt
        // only re-arms the timer for the small remainder, while a late one
        // would make every sleep late.
        let ticks = (cycles as u128 * per_ms as u128 * 970 / hz as u128).clamp(1, u32::MAX as u128);
        // The vector entry is written once: `init` leaves it masked, the
        // first arming unmasks it, and one-shot mode never changes it again.
        if !super::smp::this_cpu()
            .lvt_armed
            .swap(true, Ordering::Relaxed)
        {
            write(REG_LVT_TIMER, TIMER_VECTOR as u32);
        }
        write(REG_TIMER_INIT, ticks as u32);
    }
}

/// The address and data of an MSI/MSI-X message delivering `vector` to this CPU.
pub fn msi_message(vector: u8) -> (u64, u32) {
    msi_message_to(id(), vector)
}

/// The address and data of an MSI/MSI-X message delivering `vector` to the
/// CPU with local APIC id `apic_id` (physical destination mode, fixed).
pub fn msi_message_to(apic_id: u32, vector: u8) -> (u64, u32) {
    (0xfee0_0000 | ((apic_id as u64 & 0xff) << 12), vector as u32)
}

/// An I/O APIC.
#[derive(Clone, Copy, Debug)]
pub struct IoApic {
    /// Physical base of its registers.
    pub base: u64,
    /// First GSI it serves.
    pub gsi_base: u32,
    /// Number of redirection entries.
    pub pins: u32,
}

impl IoApic {
    fn reg(&self, r: u32) -> u32 {
        // SAFETY: the register window is identity mapped uncached by
        // `IoApic::new`; IOREGSEL/IOWIN accesses only affect the I/O APIC.
        unsafe {
            ((self.base) as *mut u32).write_volatile(r);
            ((self.base + 0x10) as *const u32).read_volatile()
        }
    }

    fn set_reg(&self, r: u32, v: u32) {
        // SAFETY: as in `reg`.
        unsafe {
            ((self.base) as *mut u32).write_volatile(r);
            ((self.base + 0x10) as *mut u32).write_volatile(v);
        }
    }

    /// Maps the I/O APIC at `base` and masks all its pins.
    pub fn new(base: u64, gsi_base: u32) -> Option<IoApic> {
        crate::mm::map_mmio(base, 4096).ok()?;
        let mut io = IoApic {
            base,
            gsi_base,
            pins: 0,
        };
        let ver = io.reg(1);
        if ver == u32::MAX {
            return None;
        }
        io.pins = ((ver >> 16) & 0xff) + 1;
        for pin in 0..io.pins {
            io.set_reg(0x10 + 2 * pin, 1 << 16);
        }
        Some(io)
    }

    /// Routes pin `gsi - gsi_base` to `vector` on this CPU.
    pub fn route(&self, gsi: u32, vector: u8, level: bool, active_low: bool) -> bool {
        let Some(pin) = gsi.checked_sub(self.gsi_base).filter(|p| *p < self.pins) else {
            return false;
        };
        let lo =
            vector as u32 | if level { 1 << 15 } else { 0 } | if active_low { 1 << 13 } else { 0 };
        self.set_reg(0x11 + 2 * pin, (id() & 0xff) << 24);
        self.set_reg(0x10 + 2 * pin, lo);
        true
    }

    /// Masks or unmasks the pin of `gsi`.
    pub fn set_masked(&self, gsi: u32, masked: bool) {
        if let Some(pin) = gsi.checked_sub(self.gsi_base).filter(|p| *p < self.pins) {
            let lo = self.reg(0x10 + 2 * pin);
            let lo = if masked {
                lo | 1 << 16
            } else {
                lo & !(1 << 16)
            };
            self.set_reg(0x10 + 2 * pin, lo);
        }
    }
}
