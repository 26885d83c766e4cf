//! `memcpy` tuned for where the kernel runs.
//!
//! The compiler's `memcpy` (from compiler-builtins) is `rep movsb/movsq`,
//! which real CPUs and KVM run at memory speed but which QEMU's TCG
//! emulates one element at a time through a helper: about 3.4 ns per byte,
//! which made every copy in the data paths the dominant cost. Under TCG an
//! unrolled loop of 8-byte moves is compiled to inline loads and stores and
//! runs several times faster. [`init`] picks the string instructions unless
//! the CPU reports QEMU's TCG signature. This `memcpy` overrides the weak
//! one from compiler-builtins; `memset` gets the same treatment.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU8, Ordering};

/// 1: use `rep movs`; 0: use the unrolled loop.
#[unsafe(no_mangle)]
static UK_USE_REP_MOVS: AtomicU8 = AtomicU8::new(1);

global_asm!(
    r#"
    .section .text.memcpy, "ax"
    .global memcpy
    .p2align 4
memcpy:
    mov rax, rdi
    cmp byte ptr [rip + {flag}], 0
    jne 5f
    cmp rdx, 32
    jb 3f
2:
    mov r8, [rsi]
    mov r9, [rsi + 8]
    mov r10, [rsi + 16]
    mov r11, [rsi + 24]
    mov [rdi], r8
    mov [rdi + 8], r9
    mov [rdi + 16], r10
    mov [rdi + 24], r11
    add rsi, 32
    add rdi, 32
    sub rdx, 32
    cmp rdx, 32
    jae 2b
3:
    cmp rdx, 8
    jb 4f
    mov r8, [rsi]
    mov [rdi], r8
    add rsi, 8
    add rdi, 8
    sub rdx, 8
    jmp 3b
4:
    test rdx, rdx
    jz 6f
    mov r8b, [rsi]
    mov [rdi], r8b
    inc rsi
    inc rdi
    dec rdx
    jmp 4b
5:
    mov rcx, rdx
    shr rcx, 3
    rep movsq
    mov rcx, rdx
    and rcx, 7
    rep movsb
6:
    ret
"#,
    flag = sym UK_USE_REP_MOVS,
);

// memset(dst, byte, n): the same choice as memcpy (`rep stosb` is emulated
// one byte at a time under TCG, like `rep movs`).
global_asm!(
    r#"
    .section .text.memset, "ax"
    .global memset
    .p2align 4
memset:
    mov rax, rdi
    movzx esi, sil
    mov r8, 0x0101010101010101
    imul rsi, r8
    cmp byte ptr [rip + {flag}], 0
    jne 5f
    mov rcx, rdi
    cmp rdx, 32
    jb 3f
2:
    mov [rcx], rsi
    mov [rcx + 8], rsi
    mov [rcx + 16], rsi
    mov [rcx + 24], rsi
    add rcx, 32
    sub rdx, 32
    cmp rdx, 32
    jae 2b
3:
    test rdx, rdx
    jz 6f
    mov [rcx], sil
    inc rcx
    dec rdx
    jmp 3b
5:
    mov r9, rdi
    mov rcx, rdx
    shr rcx, 3
    xchg rax, rsi
    rep stosq
    mov rcx, rdx
    and rcx, 7
    rep stosb
    mov rax, r9
6:
    ret
"#,
    flag = sym UK_USE_REP_MOVS,
);

/// Chooses the copy strategy: the unrolled loop under QEMU's TCG (CPUID
/// hypervisor signature "TCGTCGTCGTCG"), `rep movs` everywhere else.
pub fn init() {
    let hv = super::cpu::cpuid(1, 0).ecx & (1 << 31) != 0;
    let tcg = hv && {
        let s = super::cpu::cpuid(0x4000_0000, 0);
        (s.ebx, s.ecx, s.edx) == (0x5447_4354, 0x4354_4743, 0x4743_5447)
    };
    UK_USE_REP_MOVS.store(u8::from(!tcg), Ordering::Relaxed);
}

/// True when `memcpy` uses the unrolled loop (TCG).
pub fn uses_loop() -> bool {
    UK_USE_REP_MOVS.load(Ordering::Relaxed) == 0
}
