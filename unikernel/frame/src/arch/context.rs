//! The context switch: callee-saved registers go on the old stack, the stack
//! pointer is swapped, and the new thread's registers come off its stack.
//! Everything else (caller-saved registers, flags) is saved by the compiler
//! at the call site or by the interrupt entry stub. All XMM/YMM registers
//! are caller-saved too; of the vector state only the callee-saved control
//! words, MXCSR and the x87 control word, are kept here (`arch::simd`).

use core::arch::naked_asm;

/// Saves the current context, storing its stack pointer at `*from`, and
/// resumes the context whose stack pointer is `to`.
///
/// # Safety
/// Interrupts must be disabled. `from` must be valid for a write and stay
/// valid until this context is resumed; `to` must be a stack pointer saved by
/// this function or prepared by [`prepare_stack`].
#[cfg(feature = "simd")]
#[unsafe(naked)]
pub unsafe extern "C" fn switch_stack(from: *mut u64, to: u64) {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "sub rsp, 8",
        "stmxcsr [rsp]",
        "fnstcw [rsp + 4]",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "ldmxcsr [rsp]",
        "fldcw [rsp + 4]",
        "add rsp, 8",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}

/// Saves the current context, storing its stack pointer at `*from`, and
/// resumes the context whose stack pointer is `to`. (Without the `simd`
/// feature no vector code runs, so there are no control words to keep.)
///
/// # Safety
/// As for the `simd` build of this function.
#[cfg(not(feature = "simd"))]
#[unsafe(naked)]
pub unsafe extern "C" fn switch_stack(from: *mut u64, to: u64) {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}

/// Lays out a fresh stack so that the first [`switch_stack`] to it "returns"
/// into `entry` with a correctly aligned stack. Returns the stack pointer.
///
/// # Safety
/// `top` must be the 16-byte aligned top of a mapped, writable stack of at
/// least 128 bytes that nothing else uses.
pub unsafe fn prepare_stack(top: u64, entry: extern "C" fn() -> !) -> u64 {
    // MXCSR and the x87 control word at their reset values (all exceptions
    // masked, round to nearest), six callee-saved registers, the entry as the
    // return address, and a word that keeps the entry's stack ABI-aligned.
    // (Without the `simd` feature there are no control words.)
    #[cfg(feature = "simd")]
    let words: [u64; 9] = {
        const CONTROL: u64 = 0x1f80 | (0x037f << 32);
        [CONTROL, 0, 0, 0, 0, 0, 0, entry as usize as u64, 0]
    };
    #[cfg(not(feature = "simd"))]
    let words: [u64; 8] = [0, 0, 0, 0, 0, 0, entry as usize as u64, 0];
    let sp = top - 8 * words.len() as u64;
    // SAFETY: guaranteed by the caller: [top - 72, top) is mapped and ours.
    unsafe { core::ptr::copy_nonoverlapping(words.as_ptr(), sp as *mut u64, words.len()) };
    sp
}
