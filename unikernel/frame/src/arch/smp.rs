//! Multiprocessor bring-up: the application processors (APs) listed in the
//! ACPI MADT are started with INIT-SIPI-SIPI and enter the scheduler.
//!
//! An AP starts in real mode at `page << 12`, where `page` is the SIPI
//! vector, so the first instructions (`uk_ap_tramp`, 38 bytes of 16-bit
//! code and data) are copied to a free RAM page below 1 MiB that the frame
//! allocator gives up for good. They load a GDT from the kernel's rodata
//! (`uk_ap_gdt`: 32-bit code, data, 64-bit code), turn on protection and jump
//! to `uk_ap_start32` in the kernel's text, which enables the same CR0/CR4/
//! EFER bits as the boot CPU's entry (`arch::boot`), paging through the boot
//! identity map of the first 4 GiB (`uk_boot_pml4`), and long mode. In
//! 64-bit code the AP switches to the kernel's page tables, takes a ticket
//! (an atomic counter) that selects its own `ApBlock` (interrupt stacks,
//! a 16 KiB stack, its per-CPU data and descriptor tables), and calls
//! `ap_main`: its own GDT and TSS, the shared IDT, GS base at its
//! [`PerCpu`], the vector state the boot CPU chose, its local APIC enabled
//! (x2APIC where the boot CPU uses it, every local interrupt masked), then it
//! reads its APIC id back through GS, counts itself online and waits for
//! the scheduler.
//!
//! Until the scheduler starts, an AP waits in `sti; hlt`; then it runs
//! threads like the boot CPU (`sched::ap_enter`). Also here: the IPI that
//! wakes a CPU and asks for a TLB flush ([`IPI_VECTOR`], [`shootdown`]).
//! With one CPU in the MADT none of this runs.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::gdt::{self, CpuTables, IST_TOTAL};
use super::{apic, cpu, idt, simd};
use crate::mm::{self, PAGE};
use crate::sync::BootCell;

/// Most CPUs brought up (the boot CPU included).
pub const MAX_CPUS: usize = 64;
/// Stack of an AP: `ap_main`, then its idle loop and the interrupts it takes there.
const AP_STACK: usize = 16 * 1024;
/// How long the boot CPU waits for one AP after its second SIPI.
const AP_TIMEOUT_MS: u64 = 2000;

/// One CPU's data, reached through its GS base (`gs:0` holds the block's
/// own address). Written only by its own CPU (with interrupts off where an
/// interrupt handler also writes it), except `tlb_gen`'s readers and the
/// counters, which other CPUs read.
#[repr(C)]
pub struct PerCpu {
    this: u64,
    /// 0 for the boot CPU, then 1.. in the order the APs came up.
    pub index: u32,
    /// The local APIC id.
    pub apic_id: AtomicU32,
    /// The vector (+1) whose handler runs now on this CPU, 0 outside
    /// handlers (`trap::dispatch`).
    pub in_handler: AtomicU32,
    /// Whether this CPU's timer vector entry is unmasked (one-shot mode).
    pub lvt_armed: AtomicBool,
    /// The running thread's stack `[bottom, top)`, 0 and 0 in idle.
    pub stack_bottom: AtomicU64,
    pub stack_top: AtomicU64,
    /// When this CPU halted (TSC), 0 while it works.
    pub idle_since: AtomicU64,
    /// The thread running on this CPU (0: idle).
    pub current: AtomicU64,
    /// The block `heap::try_arc` set aside on this CPU: address, size, align.
    pub reserved: [AtomicUsize; 3],
    /// The TLB shootdown generation this CPU has flushed up to.
    pub tlb_gen: AtomicU64,
    /// Switches to a thread (not idle) on this CPU.
    pub runs: AtomicU64,
    /// How many locks of each level this CPU holds (`sync::lockdep`).
    #[cfg(feature = "lockdep")]
    pub held: [core::sync::atomic::AtomicU8; crate::sync::level::COUNT],
}

impl PerCpu {
    const fn new(this: u64, index: u32, apic_id: u32) -> PerCpu {
        PerCpu {
            this,
            index,
            apic_id: AtomicU32::new(apic_id),
            in_handler: AtomicU32::new(0),
            lvt_armed: AtomicBool::new(false),
            stack_bottom: AtomicU64::new(0),
            stack_top: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            current: AtomicU64::new(0),
            reserved: [const { AtomicUsize::new(0) }; 3],
            tlb_gen: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            #[cfg(feature = "lockdep")]
            held: [const { core::sync::atomic::AtomicU8::new(0) }; crate::sync::level::COUNT],
        }
    }
}

/// Everything an AP owns, in frames the boot CPU takes from the allocator
/// (identity mapped, resident, never freed).
#[repr(C)]
struct ApBlock {
    ist: [u8; IST_TOTAL],
    stack: [u8; AP_STACK],
    percpu: PerCpu,
    tables: CpuTables,
}

/// The boot CPU's per-CPU data (.bss; filled by [`start`]).
static BSP_CPU: BootCell<PerCpu> = BootCell::new(PerCpu::new(0, 0, 0));

/// Read by the APs' entry code: the kernel's page-table root, how many
/// [`ApBlock`]s exist, their addresses, and the next ticket.
static UK_AP_CR3: AtomicU64 = AtomicU64::new(0);
static UK_AP_COUNT: AtomicU32 = AtomicU32::new(0);
static UK_AP_TICKET: AtomicU32 = AtomicU32::new(0);
static UK_AP_BLOCKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// APs that finished [`ap_main`]'s setup.
static ONLINE: AtomicU32 = AtomicU32::new(0);
/// Every CPU's [`PerCpu`] by index (0: not online).
static CPUS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Set by the scheduler when the APs may enter it ([`release_aps`]).
static GO: AtomicBool = AtomicBool::new(false);
/// CPUs running the scheduler, one bit per index: the ones that take IPIs
/// and may hold TLB entries of the mmap window.
static ACTIVE: AtomicU64 = AtomicU64::new(0);
/// The TLB shootdown generation: raised by [`shootdown`].
static TLB_GEN: AtomicU64 = AtomicU64::new(0);
/// The vector of the inter-processor interrupt: a wake-up (the end of the
/// interrupt reschedules) and a TLB shootdown request.
pub const IPI_VECTOR: u8 = 0xf0;

global_asm!(
    r#"
    .section .rodata.uk_ap, "a"
    .p2align 3
uk_ap_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff     /* 0x08: 32-bit code */
    .quad 0x00cf93000000ffff     /* 0x10: data */
    .quad 0x00af9b000000ffff     /* 0x18: 64-bit code */

    /* Copied to the trampoline page; runs in real mode with cs = page << 8,
       ip = 0. Hand-encoded: lgdt and ljmp with 32-bit operands. */
    .p2align 4
    .global uk_ap_tramp
uk_ap_tramp:
    .byte 0xfa, 0xfc             /* cli; cld */
    .byte 0x8c, 0xc8             /* mov ax, cs */
    .byte 0x8e, 0xd8             /* mov ds, ax */
    .byte 0x66, 0x0f, 0x01, 0x16 /* lgdt dword [gdtr] */
    .word 3f - uk_ap_tramp
    .byte 0x0f, 0x20, 0xc0       /* mov eax, cr0 */
    .byte 0x0c, 0x01             /* or al, 1 (PE) */
    .byte 0x0f, 0x22, 0xc0       /* mov cr0, eax */
    .byte 0x66, 0xff, 0x2e       /* ljmp dword [farptr] */
    .word 4f - uk_ap_tramp
    .p2align 1
3:  .word 31                     /* gdtr: limit, base */
    .long uk_ap_gdt
4:  .long uk_ap_start32          /* farptr: offset, selector */
    .word 0x08
    .global uk_ap_tramp_end
uk_ap_tramp_end:

    .section .text.uk_ap, "ax"
    .code32
uk_ap_start32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, cr4
    or eax, 0x620                /* PAE | OSFXSR | OSXMMEXCPT, as the BSP */
    mov cr4, eax
    mov eax, offset uk_boot_pml4
    mov cr3, eax
    mov ecx, 0xC0000080          /* EFER */
    rdmsr
    or eax, 0x900                /* LME | NXE */
    wrmsr
    mov eax, cr0
    and eax, 0xfffffff3          /* clear EM and TS */
    or eax, 0x80010003           /* PG | WP | MP | PE */
    mov cr0, eax
    .byte 0xea                   /* ljmp 0x18:uk_ap_start64 */
    .long uk_ap_start64
    .word 0x18

    .code64
uk_ap_start64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rax, qword ptr [rip + {cr3}]
    mov cr3, rax                 /* the kernel's tables (may be above 4 GiB) */
    mov eax, 1
    lock xadd dword ptr [rip + {ticket}], eax
    cmp eax, dword ptr [rip + {count}]
    jae 2f                       /* no block for this CPU */
    lea rcx, [rip + {blocks}]
    mov rdi, qword ptr [rcx + rax * 8]
    lea rsp, [rdi + {stack_top}]
    mov esi, eax
    fninit
    xor ebp, ebp
    call {main}
2:
    cli
    hlt
    jmp 2b
"#,
    cr3 = sym UK_AP_CR3,
    ticket = sym UK_AP_TICKET,
    count = sym UK_AP_COUNT,
    blocks = sym UK_AP_BLOCKS,
    stack_top = const core::mem::offset_of!(ApBlock, percpu),
    main = sym ap_main,
);

unsafe extern "C" {
    static uk_ap_tramp: u8;
    static uk_ap_tramp_end: u8;
}

/// Sets GS base to `p` and fills in the block.
///
/// # Safety
/// `p` is this CPU's own, 'static, writable [`PerCpu`].
unsafe fn set_percpu(p: *mut PerCpu, index: u32, apic_id: u32) {
    // SAFETY: per the caller, nobody else writes `p`.
    unsafe { p.write(PerCpu::new(p as u64, index, apic_id)) };
    if let Some(slot) = CPUS.get(index as usize) {
        slot.store(p as u64, Ordering::Release);
    }
    // IA32_GS_BASE; GS is not otherwise used (no user mode, no swapgs).
    let mut gs = x86_64::registers::model_specific::Msr::new(0xc000_0101);
    // SAFETY: setting GS base changes no memory and nothing else reads it.
    unsafe { gs.write(p as u64) };
}

/// This CPU's [`PerCpu`] (valid after [`start`] on the boot CPU, from the
/// first instructions of `ap_main` on an AP).
pub fn this_cpu() -> &'static PerCpu {
    let p: u64;
    // SAFETY: reads `gs:0`, the block's own address, which `set_percpu`
    // stored before anything calls this.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags))
    };
    // SAFETY: the block is 'static and only written before GS base pointed at it.
    unsafe { &*(p as *const PerCpu) }
}

/// The [`PerCpu`] of the CPU with index `i`, once it is online.
pub fn cpu(i: usize) -> Option<&'static PerCpu> {
    let p = CPUS.get(i)?.load(Ordering::Acquire);
    // SAFETY: only `set_percpu` stores non-zero values: 'static blocks.
    (p != 0).then(|| unsafe { &*(p as *const PerCpu) })
}

/// Sets up the boot CPU's per-CPU block (GS base) before anything reads it:
/// first thing at boot, one CPU, interrupts off.
pub fn init_boot_cpu() {
    // SAFETY: boot, one CPU: BSP_CPU is the boot CPU's and written only here.
    unsafe { set_percpu(BSP_CPU.get(), 0, 0) };
}

/// Lets the parked APs enter the scheduler (`sched::ap_enter`); called by
/// `sched::start` once the scheduler and the IPI handler exist.
pub fn release_aps() {
    GO.store(true, Ordering::Release);
    for i in 1..MAX_CPUS {
        if let Some(c) = cpu(i) {
            apic::send_ipi(c.apic_id.load(Ordering::Relaxed), IPI_VECTOR as u32);
        }
    }
}

/// Marks the calling CPU as running the scheduler (it takes IPIs from now
/// on) and flushes its TLB up to the current generation.
pub fn set_active() {
    ACTIVE.fetch_or(1 << this_cpu().index, Ordering::AcqRel);
    service_tlb();
}

/// True once CPUs other than the boot CPU run the scheduler (never with
/// one CPU).
#[inline]
pub fn multi() -> bool {
    ACTIVE.load(Ordering::Relaxed) != 0
}

/// Sends the IPI to the CPU with index `i` (a wake-up).
pub fn kick(i: usize) {
    if let Some(c) = cpu(i) {
        apic::send_ipi(c.apic_id.load(Ordering::Relaxed), IPI_VECTOR as u32);
    }
}

/// Flushes this CPU's TLB if a [`shootdown`] asked for it since it last
/// did. Called by the IPI handler and by every spinning lock waiter, so a
/// CPU that waits for a lock with interrupts off still answers.
pub fn service_tlb() {
    let g = TLB_GEN.load(Ordering::Acquire);
    let me = this_cpu();
    if me.tlb_gen.load(Ordering::Relaxed) < g {
        x86_64::instructions::tlb::flush_all();
        me.tlb_gen.store(g, Ordering::Release);
    }
}

/// After the memory manager narrowed or removed mappings (it flushed its own
/// TLB already, and holds its lock, so the freed frames cannot be reused
/// yet): makes every other CPU in the scheduler flush its TLB and waits
/// until they did. Nothing to do while the other CPUs are parked (`-smp 1`).
#[inline(never)]
pub fn shootdown() {
    let me = this_cpu().index;
    let others = ACTIVE.load(Ordering::Acquire) & !(1u64 << me);
    if others == 0 {
        return;
    }
    let want = TLB_GEN.fetch_add(1, Ordering::AcqRel) + 1;
    let cpus = || {
        (0..MAX_CPUS)
            .filter(move |i| others & (1 << i) != 0)
            .filter_map(cpu)
    };
    for c in cpus() {
        apic::send_ipi(c.apic_id.load(Ordering::Relaxed), IPI_VECTOR as u32);
    }
    for c in cpus() {
        while c.tlb_gen.load(Ordering::Acquire) < want {
            service_tlb();
            core::hint::spin_loop();
        }
    }
}

/// CPUs online, the boot CPU included.
pub fn online() -> u32 {
    ONLINE.load(Ordering::Acquire) + 1
}

/// The AP's Rust entry, on its own stack in its own block. Never returns.
extern "C" fn ap_main(block: u64, ticket: u64) -> ! {
    let b = block as *mut ApBlock;
    // SAFETY: `block` is the ApBlock the ticket selected: zeroed, identity
    // mapped, 'static (never freed) and used by this CPU alone (tickets are
    // unique); its IST area is IST_TOTAL bytes.
    unsafe { gdt::load(&raw mut (*b).tables, block) };
    idt::load();
    let apic_id = cpu::cpuid(1, 0).ebx >> 24;
    let apic_id = if apic::is_x2apic() {
        cpu::cpuid(0xb, 0).edx
    } else {
        apic_id
    };
    // SAFETY: as above, the block's PerCpu belongs to this CPU.
    unsafe { set_percpu(&raw mut (*b).percpu, ticket as u32 + 1, apic_id) };
    simd::init_ap();
    apic::init_ap();
    // Online means its per-CPU data answers through GS.
    if this_cpu().apic_id.load(Ordering::Relaxed) != apic_id {
        cpu::halt_forever();
    }
    ONLINE.fetch_add(1, Ordering::Release);
    // Parked until the scheduler runs: nothing but `release_aps`' IPI
    // targets this CPU (every local source is masked), and before the
    // scheduler registered its handler that IPI is only counted.
    while !GO.load(Ordering::Acquire) {
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
    }
    crate::sched::ap_enter()
}

/// Spins up to `cycles` TSC cycles for the online count to move from
/// `before`; true if it did.
fn wait_online(before: u32, cycles: u64) -> bool {
    let end = cpu::rdtsc() + cycles;
    loop {
        if ONLINE.load(Ordering::Acquire) != before {
            return true;
        }
        if cpu::rdtsc() >= end {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// Sets up the boot CPU's per-CPU data, starts the APs of the MADT and
/// prints `smp: N CPUs online`. Called once at boot after `irq::init`.
pub fn start() {
    this_cpu().apic_id.store(apic::id(), Ordering::Relaxed);
    let targets = crate::irq::ap_targets(MAX_CPUS - 1);
    if !targets.is_empty() {
        start_aps(&targets);
    }
    crate::println!("smp: {} CPUs online", online());
}

fn start_aps(targets: &[u32]) {
    let Some(page) = mm::take_low_page() else {
        crate::println!("smp: no free page below 1 MiB for the APs");
        return;
    };
    let tramp = &raw const uk_ap_tramp;
    let len = &raw const uk_ap_tramp_end as usize - tramp as usize;
    // SAFETY: `page` is a RAM page below 1 MiB, identity mapped writable and
    // now owned by this code alone; the trampoline is a few dozen bytes.
    unsafe { core::ptr::copy_nonoverlapping(tramp, page as *mut u8, len) };
    UK_AP_CR3.store(
        x86_64::registers::control::Cr3::read_raw()
            .0
            .start_address()
            .as_u64(),
        Ordering::Relaxed,
    );
    let pages = core::mem::size_of::<ApBlock>().div_ceil(PAGE as usize) as u64;
    let mut count = 0;
    for slot in UK_AP_BLOCKS.iter().take(targets.len()) {
        let Ok(b) = mm::alloc_dma(pages) else { break };
        slot.store(b, Ordering::Relaxed);
        count += 1;
    }
    // Release: an AP that reads the count sees the blocks and CR3 above.
    UK_AP_COUNT.store(count as u32, Ordering::Release);
    let ms = crate::time::tsc_hz().max(1_000_000_000) / 1000;
    let hypervisor = cpu::cpuid(1, 0).ecx & (1 << 31) != 0;
    let sipi = apic::ICR_STARTUP | (page >> 12) as u32;
    // One AP at a time, by the online count: an AP given up on that comes
    // up late (it still gets its own block: tickets) is taken for the next
    // one, which is then reported as online without having been seen; the
    // printed total counts every AP that came up by the end.
    'cpus: for &id in &targets[..count] {
        let before = ONLINE.load(Ordering::Acquire);
        apic::send_ipi(id, apic::ICR_INIT);
        // The 10 ms between INIT and SIPI that the MP specification asks of
        // real hardware; a hypervisor handles INIT at once (Linux skips the
        // wait on every modern CPU).
        if !hypervisor {
            wait_online(before, 10 * ms);
        }
        // A second SIPI if the first was missed, as the specification says.
        for wait_ms in [1, AP_TIMEOUT_MS] {
            apic::send_ipi(id, sipi);
            if wait_online(before, wait_ms * ms) {
                continue 'cpus;
            }
        }
        crate::println!("smp: CPU with APIC id {id} did not start; skipped");
    }
}
