//! The GDT and TSS. Per-CPU by construction: [`CpuTables`] holds one CPU's
//! descriptor table, task state segment and interrupt stacks, so a second CPU
//! gets a second instance. Selectors match the boot GDT: code 0x08, data 0x10.

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::{lgdt, load_tss};
use x86_64::structures::DescriptorTablePointer;
use x86_64::structures::gdt::SegmentSelector;
use x86_64::structures::tss::TaskStateSegment;

/// IST slot (0-based index into the TSS table) for page faults: demand paging
/// of stacks, and reporting a stack overflow, need a stack that is known good.
pub const IST_PAGE_FAULT: u16 = 0;
/// IST slot for double faults.
pub const IST_DOUBLE_FAULT: u16 = 1;
/// IST slot for NMIs and machine checks.
pub const IST_NMI: u16 = 2;
/// IST slot every other vector enters on: its stub moves the CPU's frame to
/// the interrupted stack below its 128-byte red zone and goes on there
/// (`arch::idt`), so the CPU never pushes into the red zone of the code it
/// interrupts.
pub const IST_ENTRY: u16 = 3;

const IST_SIZES: [usize; 4] = [16 * 1024, 8 * 1024, 4 * 1024, 4 * 1024];
/// Bytes of one CPU's interrupt stacks.
pub const IST_TOTAL: usize = IST_SIZES[0] + IST_SIZES[1] + IST_SIZES[2] + IST_SIZES[3];

#[repr(C, align(4096))]
struct IstStacks([u8; IST_TOTAL]);

/// One CPU's descriptor tables: null, 64-bit code (0x08), data (0x10) and
/// the 16-byte TSS descriptor (0x18), written out by hand (the x86_64
/// crate's GDT builder costs ~300 bytes of code more).
#[repr(C)]
pub struct CpuTables {
    gdt: [u64; 5],
    tss: TaskStateSegment,
}

/// The boot CPU's interrupt stacks (zero-initialised: .bss).
static IST0: crate::sync::BootCell<IstStacks> =
    crate::sync::BootCell::new(IstStacks([0; IST_TOTAL]));

static CPU0: crate::sync::BootCell<CpuTables> = crate::sync::BootCell::new(CpuTables {
    gdt: [0; 5],
    tss: TaskStateSegment::new(),
});

/// Builds and loads the boot CPU's GDT and TSS.
pub fn init_boot_cpu() {
    // SAFETY: called once, on the boot CPU, before interrupts are enabled and
    // before anything else refers to CPU0 or IST0; afterwards neither is
    // mutated.
    unsafe { load(CPU0.get(), IST0.get() as u64) }
}

/// Builds a GDT and TSS at `cpu`, whose interrupt stacks are the
/// [`IST_TOTAL`] bytes at `ist`, and loads them on the calling CPU.
///
/// # Safety
/// `cpu` and `[ist, ist + IST_TOTAL)` are 'static, writable, and belong to
/// the calling CPU alone from now on; the CPU is not handling an interrupt.
pub unsafe fn load(cpu: *mut CpuTables, ist: u64) {
    // SAFETY: per the caller, `cpu` is ours, 'static and writable.
    let cpu: &'static mut CpuTables = unsafe {
        cpu.write(CpuTables {
            gdt: [0; 5],
            tss: TaskStateSegment::new(),
        });
        &mut *cpu
    };
    let mut top = ist;
    for (slot, size) in IST_SIZES.iter().enumerate() {
        top += *size as u64;
        cpu.tss.interrupt_stack_table[slot] = VirtAddr::new(top);
    }
    let base = &raw const cpu.tss as u64;
    let limit = core::mem::size_of::<TaskStateSegment>() as u64 - 1;
    cpu.gdt = [
        0,
        0x00af_9b00_0000_ffff, // 64-bit code: present, DPL 0, long mode, accessed
        0x00cf_9300_0000_ffff, // data: present, writable, accessed
        // available 64-bit TSS (type 9), present, then the upper base half
        limit | (base & 0xff_ffff) << 16 | 0x89 << 40 | (base >> 24 & 0xff) << 56,
        base >> 32,
    ];
    let ptr = DescriptorTablePointer {
        limit: 5 * 8 - 1,
        base: VirtAddr::from_ptr(cpu.gdt.as_ptr()),
    };
    // SAFETY: the table is 'static and stays valid: code 0x08 and data 0x10
    // are the 64-bit kernel segments the boot GDT has at the same
    // selectors, 0x18 describes this CPU's 'static TSS.
    unsafe {
        lgdt(&ptr);
        CS::set_reg(KERNEL_CS);
        DS::set_reg(KERNEL_DS);
        ES::set_reg(KERNEL_DS);
        SS::set_reg(KERNEL_DS);
        load_tss(SegmentSelector(0x18));
    }
}

/// The kernel code selector.
pub const KERNEL_CS: SegmentSelector = SegmentSelector(0x08);
/// The kernel data selector.
const KERNEL_DS: SegmentSelector = SegmentSelector(0x10);
