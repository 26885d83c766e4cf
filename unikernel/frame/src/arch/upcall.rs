//! Fault upcalls: resolving a page fault in the faulting thread itself.
//!
//! Page faults run on an IST stack with the memory manager locked, so they
//! cannot wait for a disk. For a not-present page of a file mapping the
//! handler instead rewrites the interrupted context so that, on `iretq`, the
//! thread "calls" `uk_fault_upcall`: two words go on the thread's stack
//! (the fault address and the interrupted RIP as a return address) and RIP
//! points at the trampoline. The trampoline saves every caller-saved register,
//! the flags and the vector state (`arch::simd`: the interrupted code may
//! have live XMM registers), calls the file system's fault hook (`set_file_fault_hook`) with `addr` — which may block like
//! any thread — restores everything and returns to the faulting instruction,
//! which now finds its page mapped. The two words go below the interrupted
//! stack pointer's 128-byte red zone (code linked into the kernel may keep
//! data there, see `arch::idt`), and the trampoline returns with `ret 128`,
//! which leaves the stack pointer where it was.

use core::arch::global_asm;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::idt::TrapFrame;

global_asm!(
    r#"
    .section .text.uk_upcall, "ax"
    .global uk_fault_upcall
uk_fault_upcall:
    pushfq
    cld
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    push rbx
    mov rdi, [rsp + 88]
    mov rbx, rsp
"#,
    super::simd::save_asm!(),
    r#"
    call {resolve}
"#,
    super::simd::restore_asm!(),
    r#"
    pop rbx
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    popfq
    lea rsp, [rsp + 8]
    ret 128
"#,
    resolve = sym resolve_file_fault,
    simd_size = sym super::simd::AREA_SIZE,
    simd_xsave = sym super::simd::USE_XSAVE,
);

unsafe extern "C" {
    fn uk_fault_upcall();
}

static FILE_FAULT_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Bytes below the stack pointer that interrupted code may still use (the
/// SysV red zone); `ret 128` in the trampoline must match.
const RED_ZONE: u64 = 128;

/// Registers the file-fault hook: `hook(addr)` runs in the faulting thread
/// (it may block) and must leave the page at `addr` mapped or end the VM. The
/// file system registers it before it creates any file mapping.
pub fn set_file_fault_hook(hook: fn(u64)) {
    FILE_FAULT_HOOK.store(hook as usize, Ordering::Release);
}

/// Called by the trampoline with the fault address.
extern "C" fn resolve_file_fault(addr: u64) {
    let h = FILE_FAULT_HOOK.load(Ordering::Acquire);
    if h == 0 {
        // No file system: nothing made a file mapping, so nothing redirects here.
        crate::fatal_early("file-mapping fault without a file system");
    }
    // SAFETY: only `set_file_fault_hook` stores non-zero values, and it stores
    // `fn(u64)` pointers.
    let hook: fn(u64) = unsafe { core::mem::transmute::<usize, fn(u64)>(h) };
    hook(addr);
}

/// Redirects the interrupted thread to resolve the fault at `addr` itself.
/// Returns false if its stack cannot take the two words.
pub fn redirect(frame: &mut TrapFrame, addr: u64) -> bool {
    // [sp] = addr, [sp + 8] = the return address, then the red zone.
    let sp = frame.rsp.wrapping_sub(RED_ZONE + 16);
    for word in [sp, sp + 8] {
        if !crate::mm::is_writable(word) && crate::mm::handle_page_fault(word, 0b10).is_err() {
            return false;
        }
    }
    // SAFETY: [sp, sp+16) is mapped writable (checked/faulted in above) and
    // lies below the interrupted stack pointer and its red zone, which no
    // live data occupies.
    unsafe {
        (sp as *mut u64).write(addr);
        ((sp + 8) as *mut u64).write(frame.rip);
    }
    frame.rsp = sp;
    frame.rip = uk_fault_upcall as *const () as u64;
    true
}
