//! The PVH entry: the ELF note that tells the VMM where to start, and the
//! 32-bit code that switches to long mode and calls [`crate::entry::kernel_start`].
//! The same entry serves Multiboot2 (GRUB, disk boot under BIOS or UEFI):
//! the image carries a Multiboot2 header too, and `kernel_start` tells the
//! two apart by `eax` at entry (0x36d76289 for Multiboot2, whose `ebx` is
//! the boot information instead of the `hvm_start_info`).
//!
//! PVH (x86/HVM direct boot ABI) enters in 32-bit protected mode with paging off,
//! flat segments, interrupts disabled and `ebx` holding the physical address of
//! the `hvm_start_info` structure. We zero .bss, build a temporary identity map of
//! the first 4 GiB with 2 MiB pages, enable PAE, long mode, NX and write protection,
//! load a 64-bit GDT and jump to 64-bit code, which calls Rust on the boot stack.
//! Rust then builds the real page tables (see `arch::paging`).

use core::arch::global_asm;

/// Size of the boot stack (the stack `kernel_start` runs on). It sits right
/// above a guard page that the real page tables leave unmapped.
pub const BOOT_STACK_SIZE: usize = 32 * 1024;

global_asm!(
    r#"
    .section .note.Xen, "a"
    .p2align 2
    .long 4                      /* namesz: "Xen\0" */
    .long 8                      /* descsz */
    .long 18                     /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .quad pvh_start

    /* Multiboot2 header (GRUB's `multiboot2`, disk boot): no address tag,
       so GRUB loads the ELF's PT_LOAD segments and enters at the ELF entry,
       pvh_start, in 32-bit protected mode with eax = 0x36d76289 and
       ebx = the boot information. Placed first in .text by kernel.ld
       (8-byte aligned, within the first 32 KiB of the file). */
    .section .multiboot2, "a"
    .p2align 3
uk_mb2_header:
    .long 0xe85250d6             /* magic */
    .long 0                      /* architecture: i386 protected mode */
    .long uk_mb2_header_end - uk_mb2_header
    .long -(0xe85250d6 + (uk_mb2_header_end - uk_mb2_header))
    .p2align 3
    .word 0, 0                   /* end tag */
    .long 8
uk_mb2_header_end:

    .section .data.boot, "aw"
    .p2align 3
    .global uk_boot_tsc
uk_boot_tsc:
    .quad 0
    .global uk_boot_eax
uk_boot_eax:
    .long 0

    .section .rodata.boot, "a"
    .p2align 3
uk_gdt64:
    .quad 0
    .quad 0x00af9b000000ffff     /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff     /* 0x10: data */
uk_gdt64_end:
uk_gdt64_ptr:
    .word uk_gdt64_end - uk_gdt64 - 1
    .quad uk_gdt64

    .section .bss.boot, "aw", @nobits
    .p2align 12
    .global uk_boot_pml4         /* also the APs' first tables (arch::smp) */
uk_boot_pml4:
    .skip 4096
uk_boot_pdpt:
    .skip 4096
uk_boot_pd:
    .skip 4096 * 4
    .global uk_boot_stack_guard
uk_boot_stack_guard:
    .skip 4096
    .global uk_boot_stack_bottom
uk_boot_stack_bottom:
    .skip {stack_size}
    .global uk_boot_stack_top
uk_boot_stack_top:

    .section .text.boot32, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    mov dword ptr [uk_boot_eax], eax /* Multiboot2 magic, or junk under PVH */
    mov esi, ebx                 /* hvm_start_info or MBI, kept in esi */
    rdtsc
    mov dword ptr [uk_boot_tsc], eax
    mov dword ptr [uk_boot_tsc + 4], edx

    /* zero .bss (the loader may not): 16 bytes per iteration with plain
       stores, which QEMU's TCG runs far faster than `rep stos` */
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    xor eax, eax
1:
    mov dword ptr [edi], eax
    mov dword ptr [edi + 4], eax
    mov dword ptr [edi + 8], eax
    mov dword ptr [edi + 12], eax
    add edi, 16
    cmp edi, ecx
    jb 1b                        /* .bss is page aligned and page sized */

    /* 4 page directories of 2 MiB pages: identity map of 0..4 GiB */
    mov edi, offset uk_boot_pd
    mov eax, 0x83                /* present | writable | huge */
    mov ecx, 2048
2:
    mov dword ptr [edi], eax
    mov dword ptr [edi + 4], 0
    add eax, 0x200000
    add edi, 8
    dec ecx
    jnz 2b

    mov edi, offset uk_boot_pdpt
    mov eax, offset uk_boot_pd
    or eax, 3
    mov ecx, 4
3:
    mov dword ptr [edi], eax
    mov dword ptr [edi + 4], 0
    add eax, 4096
    add edi, 8
    dec ecx
    jnz 3b

    mov eax, offset uk_boot_pdpt
    or eax, 3
    mov dword ptr [uk_boot_pml4], eax

    mov eax, cr4
    or eax, 0x620                /* PAE | OSFXSR | OSXMMEXCPT: SSE on (arch::simd) */
    mov cr4, eax
    mov eax, offset uk_boot_pml4
    mov cr3, eax
    mov ecx, 0xC0000080          /* EFER */
    rdmsr
    or eax, 0x900                /* LME | NXE */
    wrmsr
    mov eax, cr0
    and eax, 0xfffffff3          /* clear EM and TS: no x87/SSE emulation or traps */
    or eax, 0x80010003           /* PG | WP | MP | PE */
    mov cr0, eax

    lgdt [uk_gdt64_ptr]
    /* ljmp 0x08:uk_long_mode (EA ptr16:32) */
    .byte 0xea
    .long uk_long_mode
    .word 0x08

    .code64
uk_long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rsp, [rip + uk_boot_stack_top]
    fninit                       /* x87 control word 0x37f; MXCSR resets to 0x1f80 */
    xor ebp, ebp
    mov edi, esi                 /* first argument: hvm_start_info or MBI */
    mov esi, dword ptr [rip + uk_boot_eax] /* second: eax at entry */
    call {entry}
    ud2
"#,
    stack_size = const BOOT_STACK_SIZE,
    entry = sym crate::entry::kernel_start,
);

unsafe extern "C" {
    static uk_boot_tsc: u64;
    static uk_boot_stack_guard: u8;
    static uk_boot_stack_top: u8;
    static __kernel_start: u8;
    static __kernel_end: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
}

/// Addresses from the linker script, all page aligned.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// First byte of the image.
    pub start: u64,
    /// End of the image, .bss included.
    pub end: u64,
    /// `.text`: mapped read + execute.
    pub text: (u64, u64),
    /// `.rodata` (and the note): mapped read-only, no execute.
    pub rodata: (u64, u64),
    /// `.data` + `.bss`: read-write, no execute.
    pub data: (u64, u64),
    /// The page under the boot stack, left unmapped.
    pub boot_stack_guard: u64,
    /// Top of the boot stack.
    pub boot_stack_top: u64,
}

/// The image layout as linked.
pub fn layout() -> ImageLayout {
    let a = |p: *const u8| p as u64;
    ImageLayout {
        start: a(&raw const __kernel_start),
        end: a(&raw const __kernel_end),
        text: (a(&raw const __text_start), a(&raw const __text_end)),
        rodata: (a(&raw const __rodata_start), a(&raw const __rodata_end)),
        data: (a(&raw const __data_start), a(&raw const __kernel_end)),
        boot_stack_guard: a(&raw const uk_boot_stack_guard),
        boot_stack_top: a(&raw const uk_boot_stack_top),
    }
}

/// The TSC value read by the very first instructions of the PVH entry.
pub fn entry_tsc() -> u64 {
    // SAFETY: written once by the entry code before any Rust runs, then only read.
    unsafe { core::ptr::read_volatile(&raw const uk_boot_tsc) }
}
