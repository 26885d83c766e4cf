//! SSE/AVX: enabling it at boot and keeping each thread's vector registers.
//!
//! Compiled Rust never touches vector registers here: `x86_64-unknown-none`
//! has a soft-float ABI without SSE, and no crate is built with
//! `-C target-feature=+sse2` (LLVM miscompiles soft-float plus SSE2; see
//! "SIMD state" in docs/ARCHITECTURE.md). Vector code comes from assembly:
//! inline `asm!` (which may use XMM registers without declaring them, as the
//! compiler holds nothing there) and, in TLS images, ring's assembly and C.
//! The save and restore below exist only with the `simd` feature. So
//! interrupt handlers do not clobber vector state, but any thread may be
//! interrupted, and preempted, in the middle of vector code. The
//! boot code (`arch::boot`) clears CR0.EM and CR0.TS, sets CR0.MP and
//! CR4.OSFXSR/OSXMMEXCPT before the first Rust instruction; [`init`] then
//! turns on XSAVE (CR4.OSXSAVE, XCR0 = x87 | SSE | AVX where CPUID offers
//! them; AVX-512 state is left off to keep the save area at 832 bytes).
//!
//! Where a thread's vector state lives:
//! - At a voluntary switch (`switch_stack` is an ordinary `extern "C"` call)
//!   every vector register is caller-saved in the SysV ABI: the compiler has
//!   already spilled whatever it needs, so only the callee-saved control
//!   words (MXCSR and the x87 control word) go on the thread's stack.
//! - At an interrupt or exception the interrupted code may have live
//!   registers anywhere. The entry stub (`arch::idt`) saves the whole state
//!   (XSAVE64 with the size CPUID 0xD reports for the enabled XCR0, or
//!   FXSAVE64's 512 bytes without XSAVE) into a 64-byte aligned area right
//!   below the trap frame, on the interrupted thread's own stack (or the IST
//!   stack), and restores it just before `iretq`. A preemption switches
//!   threads inside the handler, so the preempted thread's state stays in
//!   its own frame until it resumes: the frame is the per-thread save area.
//! - The fault upcall (`arch::upcall`) runs Rust code on the thread's stack
//!   in the middle of an arbitrary instruction stream and saves the same way.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::cpu;
use super::idt::TrapFrame;

/// Assembly text for the entry stubs: with `rbx` = `rsp` = the saved frame,
/// reserves a 64-byte aligned save area below it and saves the vector
/// state there (XSAVE64 with the XSAVE header zeroed first, as XRSTOR
/// requires, or FXSAVE64). Clobbers `rax`, `rdx` and the flags. Needs the
/// operands `simd_size = sym AREA_SIZE`, `simd_xsave = sym USE_XSAVE`.
#[cfg(feature = "simd")]
macro_rules! save_asm {
    () => {
        r#"
    sub rsp, qword ptr [rip + {simd_size}]
    and rsp, -64
    cmp qword ptr [rip + {simd_xsave}], 0
    je 71f
    xor eax, eax
    mov [rsp + 512], rax
    mov [rsp + 520], rax
    mov [rsp + 528], rax
    mov [rsp + 536], rax
    mov [rsp + 544], rax
    mov [rsp + 552], rax
    mov [rsp + 560], rax
    mov [rsp + 568], rax
    mov eax, -1
    mov edx, -1
    xsave64 [rsp]
    jmp 72f
71:
    fxsave64 [rsp]
72:
"#
    };
}

/// Assembly text: restores what [`save_asm`] saved and sets `rsp` back to
/// `rbx`. Clobbers `rax`, `rdx` and the flags.
#[cfg(feature = "simd")]
macro_rules! restore_asm {
    () => {
        r#"
    cmp qword ptr [rip + {simd_xsave}], 0
    je 73f
    mov eax, -1
    mov edx, -1
    xrstor64 [rsp]
    jmp 74f
73:
    fxrstor64 [rsp]
74:
    mov rsp, rbx
"#
    };
}

/// Without the `simd` feature nothing but the kernel's own assembly can
/// touch vector registers (compiled Rust never does, see above, and no
/// SIMD library is linked), so the stubs save nothing: they only align the
/// stack for the call (the operands are named, as the stubs pass them, but
/// unused).
#[cfg(not(feature = "simd"))]
macro_rules! save_asm {
    () => {
        r#"
    and rsp, -16                 /* no vector state: {simd_size} {simd_xsave} unused */
"#
    };
}

/// Without the `simd` feature: sets `rsp` back to `rbx`.
#[cfg(not(feature = "simd"))]
macro_rules! restore_asm {
    () => {
        r#"
    mov rsp, rbx
"#
    };
}

pub(crate) use {restore_asm, save_asm};

/// Bytes of one save area (XSAVE size for the enabled features, or 512).
/// Read by the entry stubs.
pub(crate) static AREA_SIZE: AtomicU64 = AtomicU64::new(512);
/// Non-zero when the entry stubs use XSAVE64/XRSTOR64 instead of FXSAVE64.
pub(crate) static USE_XSAVE: AtomicU64 = AtomicU64::new(0);
static XCR0: AtomicU64 = AtomicU64::new(0);

/// Turns on XSAVE and AVX where the CPU has them. Called once on the boot
/// CPU before interrupts are enabled or any thread exists.
pub fn init() {
    if !cfg!(feature = "simd") {
        return;
    }
    let l1 = cpu::cpuid(1, 0);
    let has_xsave = l1.ecx & (1 << 26) != 0;
    let has_avx = l1.ecx & (1 << 28) != 0;
    if !has_xsave {
        return;
    }
    let supported = cpu::cpuid(0xd, 0).eax as u64;
    let mut xcr0 = 0b11; // x87 | SSE
    if has_avx && supported & 0b100 != 0 {
        xcr0 |= 0b100;
    }
    xcr0 &= supported | 0b1;
    XCR0.store(xcr0, Ordering::Relaxed);
    set_xcr0();
    // EBX of leaf 0xD: the size XSAVE needs for the features now in XCR0.
    let size = cpu::cpuid(0xd, 0).ebx as u64;
    AREA_SIZE.store(size.max(576), Ordering::Relaxed);
    USE_XSAVE.store(1, Ordering::Relaxed);
}

/// Turns on CR4.OSXSAVE and loads the XCR0 that [`init`] chose.
fn set_xcr0() {
    // SAFETY: only called when CPUID reports XSAVE (the boot CPU checked;
    // every CPU of the VM has the same features), so CR4.OSXSAVE is a valid
    // bit; setting it only makes XGETBV/XSETBV/XSAVE usable.
    unsafe {
        x86_64::registers::control::Cr4::update(|f| {
            f.insert(x86_64::registers::control::Cr4Flags::OSXSAVE)
        })
    };
    let xcr0 = XCR0.load(Ordering::Relaxed);
    // SAFETY: CR4.OSXSAVE is set, and XCR0 has only the x87 bit (always
    // valid) plus bits CPUID 0xD reports as supported, SSE with AVX.
    unsafe {
        asm!("xsetbv", in("ecx") 0, in("eax") xcr0 as u32, in("edx") 0u32,
             options(nomem, nostack, preserves_flags))
    };
}

/// Gives an application processor the vector state configuration of the
/// boot CPU (its entry code already enabled SSE as the boot CPU's did).
pub fn init_ap() {
    if USE_XSAVE.load(Ordering::Relaxed) != 0 {
        set_xcr0();
    }
}

/// What [`init`] chose.
#[derive(Debug, Clone, Copy)]
pub struct SimdInfo {
    /// Built with the `simd` feature: the interrupt entry and the fault
    /// upcall save the vector state (else nothing below applies).
    pub saved: bool,
    /// XSAVE64/XRSTOR64 (else FXSAVE64/FXRSTOR64).
    pub xsave: bool,
    /// The AVX (YMM) state is enabled.
    pub avx: bool,
    /// XCR0 (0 without XSAVE).
    pub xcr0: u64,
    /// Bytes of one save area.
    pub area_size: u64,
}

/// The vector state configuration in effect.
pub fn info() -> SimdInfo {
    let xcr0 = XCR0.load(Ordering::Relaxed);
    SimdInfo {
        saved: cfg!(feature = "simd"),
        xsave: USE_XSAVE.load(Ordering::Relaxed) != 0,
        avx: xcr0 & 0b100 != 0,
        xcr0,
        area_size: AREA_SIZE.load(Ordering::Relaxed),
    }
}

/// The vector the self-test's clobbering handler is installed on (free: device
/// vectors end at 0xdf, the timer is 0xef).
pub const SELFTEST_VECTOR: u8 = 0xe0;

static CLOBBERS: AtomicU64 = AtomicU64::new(0);
static HANDLER_SET: AtomicBool = AtomicBool::new(false);

/// An interrupt handler that overwrites XMM0-15 with all ones, as a handler
/// running SIMD assembly would.
fn clobber_handler(_frame: &mut TrapFrame) {
    CLOBBERS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: writes only XMM registers, which compiled Rust never holds
    // values in on this soft-float target (see the module comment), so they
    // need no operand declarations; no memory, stack or flags are touched.
    unsafe {
        asm!(
            "pcmpeqd xmm0, xmm0",
            "pcmpeqd xmm1, xmm1",
            "pcmpeqd xmm2, xmm2",
            "pcmpeqd xmm3, xmm3",
            "pcmpeqd xmm4, xmm4",
            "pcmpeqd xmm5, xmm5",
            "pcmpeqd xmm6, xmm6",
            "pcmpeqd xmm7, xmm7",
            "pcmpeqd xmm8, xmm8",
            "pcmpeqd xmm9, xmm9",
            "pcmpeqd xmm10, xmm10",
            "pcmpeqd xmm11, xmm11",
            "pcmpeqd xmm12, xmm12",
            "pcmpeqd xmm13, xmm13",
            "pcmpeqd xmm14, xmm14",
            "pcmpeqd xmm15, xmm15",
            options(nomem, nostack, preserves_flags)
        )
    };
}

fn install_handler() {
    if !HANDLER_SET.swap(true, Ordering::AcqRel) {
        assert!(
            crate::trap::register(SELFTEST_VECTOR, clobber_handler),
            "SIMD self-test vector taken"
        );
    }
}

/// Result of [`hold_registers`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HoldResult {
    /// 64-bit halves of XMM0-15 that did not hold their value (0..=32).
    pub mismatches: u32,
    /// Software interrupts to [`SELFTEST_VECTOR`] taken while holding.
    pub soft_irqs: u64,
    /// Loop iterations.
    pub iterations: u64,
    /// Context switches (all threads) seen while holding.
    pub switches: u64,
}

/// Self-test of the vector state: fills XMM0-15 with values derived from
/// `pattern` (`pattern + i` in both halves of XMMi), then spins with
/// interrupts as they are until `switches` more context switches happened
/// (so other threads ran in between, preempted by the timer) or `max_ms`
/// passed; with `soft_irq` it also raises [`SELFTEST_VECTOR`] on every
/// iteration, whose handler overwrites every XMM register. Then it counts
/// the register halves that changed. Any mismatch means a thread or a
/// handler leaked into this thread's registers.
pub fn hold_registers(pattern: u64, switches: u64, max_ms: u64, soft_irq: bool) -> HoldResult {
    if soft_irq {
        install_handler();
    }
    let start = crate::sched::STATS.switches.load(Ordering::Relaxed);
    let target = start + switches;
    let deadline = cpu::rdtsc() + max_ms.saturating_mul(crate::time::tsc_hz() / 1000);
    let clob0 = CLOBBERS.load(Ordering::Relaxed);
    let mut bad: u32 = 0;
    let mut iterations: u64 = 0;
    // SAFETY: the block writes only the declared registers and XMM0-15
    // (which compiled Rust never uses here, see the module comment) and reads the
    // switch counter through a valid pointer to an AtomicU64 (an aligned
    // 8-byte load is atomic). `int` goes through the normal IDT stub to the
    // handler registered above (or never runs without `soft_irq`), which
    // returns here with every register as it was, if the kernel is correct.
    unsafe {
        asm!(
        "lea rax, [{p} + 0]",
        "movq xmm0, rax",
        "punpcklqdq xmm0, xmm0",
        "lea rax, [{p} + 1]",
        "movq xmm1, rax",
        "punpcklqdq xmm1, xmm1",
        "lea rax, [{p} + 2]",
        "movq xmm2, rax",
        "punpcklqdq xmm2, xmm2",
        "lea rax, [{p} + 3]",
        "movq xmm3, rax",
        "punpcklqdq xmm3, xmm3",
        "lea rax, [{p} + 4]",
        "movq xmm4, rax",
        "punpcklqdq xmm4, xmm4",
        "lea rax, [{p} + 5]",
        "movq xmm5, rax",
        "punpcklqdq xmm5, xmm5",
        "lea rax, [{p} + 6]",
        "movq xmm6, rax",
        "punpcklqdq xmm6, xmm6",
        "lea rax, [{p} + 7]",
        "movq xmm7, rax",
        "punpcklqdq xmm7, xmm7",
        "lea rax, [{p} + 8]",
        "movq xmm8, rax",
        "punpcklqdq xmm8, xmm8",
        "lea rax, [{p} + 9]",
        "movq xmm9, rax",
        "punpcklqdq xmm9, xmm9",
        "lea rax, [{p} + 10]",
        "movq xmm10, rax",
        "punpcklqdq xmm10, xmm10",
        "lea rax, [{p} + 11]",
        "movq xmm11, rax",
        "punpcklqdq xmm11, xmm11",
        "lea rax, [{p} + 12]",
        "movq xmm12, rax",
        "punpcklqdq xmm12, xmm12",
        "lea rax, [{p} + 13]",
        "movq xmm13, rax",
        "punpcklqdq xmm13, xmm13",
        "lea rax, [{p} + 14]",
        "movq xmm14, rax",
        "punpcklqdq xmm14, xmm14",
        "lea rax, [{p} + 15]",
        "movq xmm15, rax",
        "punpcklqdq xmm15, xmm15",
            "2:",
            "pause",
            "test {irq}, {irq}",
            "jz 3f",
            "int {vec}",
            "3:",
            "add {iters}, 1",
            "mov rax, [{sw}]",
            "cmp rax, {target}",
            "jae 4f",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "cmp rax, {deadline}",
            "jb 2b",
            "4:",
            "xor edx, edx",
        "lea rcx, [{p} + 0]",
        "movq rax, xmm0",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm0, xmm0, 0x4e",
        "movq rax, xmm0",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 1]",
        "movq rax, xmm1",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm1, xmm1, 0x4e",
        "movq rax, xmm1",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 2]",
        "movq rax, xmm2",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm2, xmm2, 0x4e",
        "movq rax, xmm2",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 3]",
        "movq rax, xmm3",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm3, xmm3, 0x4e",
        "movq rax, xmm3",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 4]",
        "movq rax, xmm4",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm4, xmm4, 0x4e",
        "movq rax, xmm4",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 5]",
        "movq rax, xmm5",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm5, xmm5, 0x4e",
        "movq rax, xmm5",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 6]",
        "movq rax, xmm6",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm6, xmm6, 0x4e",
        "movq rax, xmm6",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 7]",
        "movq rax, xmm7",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm7, xmm7, 0x4e",
        "movq rax, xmm7",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 8]",
        "movq rax, xmm8",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm8, xmm8, 0x4e",
        "movq rax, xmm8",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 9]",
        "movq rax, xmm9",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm9, xmm9, 0x4e",
        "movq rax, xmm9",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 10]",
        "movq rax, xmm10",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm10, xmm10, 0x4e",
        "movq rax, xmm10",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 11]",
        "movq rax, xmm11",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm11, xmm11, 0x4e",
        "movq rax, xmm11",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 12]",
        "movq rax, xmm12",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm12, xmm12, 0x4e",
        "movq rax, xmm12",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 13]",
        "movq rax, xmm13",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm13, xmm13, 0x4e",
        "movq rax, xmm13",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 14]",
        "movq rax, xmm14",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm14, xmm14, 0x4e",
        "movq rax, xmm14",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "lea rcx, [{p} + 15]",
        "movq rax, xmm15",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
        "pshufd xmm15, xmm15, 0x4e",
        "movq rax, xmm15",
        "cmp rax, rcx",
        "setne dl",
        "add {bad:e}, edx",
            p = in(reg) pattern,
            irq = in(reg) soft_irq as u64,
            sw = in(reg) crate::sched::STATS.switches.as_ptr(),
            target = in(reg) target,
            deadline = in(reg) deadline,
            vec = const SELFTEST_VECTOR,
            bad = inout(reg) bad,
            iters = inout(reg) iterations,
            out("rax") _, out("rcx") _, out("rdx") _,
        )
    };
    HoldResult {
        mismatches: bad,
        soft_irqs: CLOBBERS.load(Ordering::Relaxed) - clob0,
        iterations,
        switches: crate::sched::STATS.switches.load(Ordering::Relaxed) - start,
    }
}

/// Fills the 128 bytes below the stack pointer (the SysV red zone, which
/// code linked into the kernel, such as ring's X25519 assembly, may use) with
/// a pattern, takes a software interrupt to [`SELFTEST_VECTOR`] (delivered
/// like a device interrupt: the CPU pushes the frame wherever its vector's
/// stack is), and counts the words of the red zone that changed, over `n`
/// rounds. The interrupt entry must leave them all as they were (see
/// `arch::idt`: every vector enters on an IST stack).
pub fn red_zone_mismatches(n: u64) -> u64 {
    install_handler();
    let mut bad: u64 = 0;
    for round in 0..n {
        let pattern = 0x5a5a_0000_0000_0000 ^ round;
        // SAFETY: the block writes only the 128 bytes below the stack
        // pointer, which this target's compiled code never uses (it has no
        // red zone) and which hold nothing of the caller's; the handler
        // registered above runs and returns with every register as it was.
        unsafe {
            asm!(
                "lea rdi, [rsp - 128]",
                "mov ecx, 16",
                "2:",
                "mov [rdi], {p}",
                "add rdi, 8",
                "dec ecx",
                "jnz 2b",
                "int {vec}",
                "lea rdi, [rsp - 128]",
                "mov ecx, 16",
                "3:",
                "cmp [rdi], {p}",
                "je 4f",
                "add {bad}, 1",
                "4:",
                "add rdi, 8",
                "dec ecx",
                "jnz 3b",
                p = in(reg) pattern,
                vec = const SELFTEST_VECTOR,
                bad = inout(reg) bad,
                out("rdi") _, out("rcx") _,
            )
        };
    }
    bad
}

/// Average TSC cycles of one software interrupt to [`SELFTEST_VECTOR`] and
/// back (entry stub, vector state save and restore, dispatch, the
/// clobbering handler), over `n` of them: the cost of the save shows as the
/// difference to a stub without it.
pub fn irq_round_trip_cycles(n: u64) -> u64 {
    install_handler();
    let t = cpu::rdtsc();
    for _ in 0..n {
        // SAFETY: as in `hold_registers`: the handler registered above runs
        // and returns with every register as it was.
        unsafe { asm!("int {vec}", vec = const SELFTEST_VECTOR) };
    }
    (cpu::rdtsc() - t) / n.max(1)
}
