//! The interrupt descriptor table and the assembly entry stubs for all 256
//! vectors. Every stub pushes the vector (and a zero error code where the CPU
//! pushes none), saves the general registers into a [`TrapFrame`], saves
//! the vector state below it (`arch::simd`: handlers are Rust compiled with
//! SSE and may use any XMM register) and calls [`crate::trap::dispatch`].
//!
//! The red zone. The kernel's Rust has none (the target disables it), but
//! code linked into it may use the 128 bytes below its stack pointer as
//! scratch, as the SysV ABI allows: ring's X25519 assembly (the ADX/BMI2
//! path) keeps callee-saved registers there. An interrupt taken on the
//! current stack would push its frame over them. So every vector enters on
//! an IST stack: page faults, double faults, NMIs and machine checks on
//! their own (they stay there), every other vector on `IST_ENTRY`, whose
//! stub (`uk_isr_move`, interrupts still off) copies the CPU's frame to the
//! interrupted stack 128 bytes below its pointer and goes on there exactly
//! as if the CPU had pushed it there, so handlers may block and switch
//! threads as before.

use core::arch::global_asm;

use super::gdt::{IST_DOUBLE_FAULT, IST_ENTRY, IST_NMI, IST_PAGE_FAULT, KERNEL_CS};

/// The registers saved on entry, lowest address first.
#[repr(C)]
#[derive(Debug, Clone)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

global_asm!(
    r#"
    .section .text.uk_isr, "ax"
    .p2align 4
    .global uk_isr_table
uk_isr_table:
    /* Every stub is ISR_STUB_BYTES (12) long, encoded by hand so that no
       instruction is shortened (4 KiB of 16-byte slots before). */
    .set vec, 0
    .rept 256
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .byte 0x90, 0x90             /* the CPU pushed an error code */
    .else
    .byte 0x6a, 0x00             /* push 0 */
    .endif
    .byte 0x68                   /* push imm32: the vector */
    .long vec
    .byte 0xe9                   /* jmp rel32 */
    .if (vec == 2) || (vec == 8) || (vec == 14) || (vec == 18)
    .long uk_isr_common - (. + 4) /* stays on its own IST stack */
    .else
    .long uk_isr_move - (. + 4)
    .endif
    .set vec, vec + 1
    .endr

/* On the IST_ENTRY stack, interrupts off: vector, error, rip, cs, rflags,
   rsp, ss. Copy them (and the two scratch registers) below the interrupted
   stack's red zone, switch to the copy, and go on as if the CPU had pushed
   the frame there (the same alignment: 8 mod 16 at the vector). */
uk_isr_move:
    push rax
    push rcx
    mov rax, [rsp + 56]
    sub rax, 128
    and rax, -16
    sub rax, 72
    mov rcx, [rsp + 64]
    mov [rax + 64], rcx
    mov rcx, [rsp + 56]
    mov [rax + 56], rcx
    mov rcx, [rsp + 48]
    mov [rax + 48], rcx
    mov rcx, [rsp + 40]
    mov [rax + 40], rcx
    mov rcx, [rsp + 32]
    mov [rax + 32], rcx
    mov rcx, [rsp + 24]
    mov [rax + 24], rcx
    mov rcx, [rsp + 16]
    mov [rax + 16], rcx
    mov rcx, [rsp + 8]
    mov [rax + 8], rcx
    mov rcx, [rsp]
    mov [rax], rcx
    mov rsp, rax
    pop rcx
    pop rax
    jmp uk_isr_common

uk_isr_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rbx, rsp
"#,
    super::simd::save_asm!(),
    r#"
    mov rdi, rbx
    cld
    call {dispatch}
"#,
    super::simd::restore_asm!(),
    r#"
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq
"#,
    dispatch = sym crate::trap::dispatch,
    simd_size = sym super::simd::AREA_SIZE,
    simd_xsave = sym super::simd::USE_XSAVE,
);

unsafe extern "C" {
    static uk_isr_table: u8;
}

#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Gate([u32; 4]);

#[repr(C, align(4096))]
struct Idt([Gate; 256]);

static IDT: crate::sync::BootCell<Idt> = crate::sync::BootCell::new(Idt([Gate([0; 4]); 256]));

fn gate(handler: u64, ist: Option<u16>) -> Gate {
    let sel = KERNEL_CS.0 as u32;
    let ist = ist.map_or(0, |i| i as u32 + 1);
    let attrs = 0x8e; // present, DPL 0, 64-bit interrupt gate (IF cleared on entry)
    Gate([
        (handler as u32 & 0xffff) | (sel << 16),
        (handler as u32 & 0xffff_0000) | (attrs << 8) | ist,
        (handler >> 32) as u32,
        0,
    ])
}

/// The length of each vector's stub in `uk_isr_table`.
const ISR_STUB_BYTES: u64 = 12;

/// Fills and loads the IDT: every vector goes to its stub; page faults,
/// double faults, NMIs and machine checks run on their own IST stacks, every
/// other vector enters on `IST_ENTRY` (see the module docs: the red zone).
pub fn init() {
    let base = &raw const uk_isr_table as u64;
    // SAFETY: called once on the boot CPU with interrupts disabled; nothing
    // reads IDT until `lidt` below, and it is never written again.
    let idt = unsafe { &mut *IDT.get() };
    for (v, g) in idt.0.iter_mut().enumerate() {
        let ist = match v {
            14 => Some(IST_PAGE_FAULT),
            8 => Some(IST_DOUBLE_FAULT),
            2 | 18 => Some(IST_NMI),
            _ => Some(IST_ENTRY),
        };
        *g = gate(base + ISR_STUB_BYTES * v as u64, ist);
    }
    load();
}

/// Loads the IDT (filled by [`init`]) on the calling CPU: all CPUs share it.
pub fn load() {
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::from_ptr(IDT.get()),
    };
    // SAFETY: the table is 'static, filled by `init` before any CPU loads
    // it, and each gate points at a stub in uk_isr_table that saves state
    // and calls the Rust dispatcher.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}
