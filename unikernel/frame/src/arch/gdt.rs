//! The GDT and TSS. Per-CPU by construction: [`CpuTables`] holds one CPU's
//! descriptor table, task state segment and interrupt stacks, so a second CPU
//! gets a second instance. Selectors match the boot GDT: code 0x08, data 0x10.

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
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

/// One CPU's descriptor tables.
pub struct CpuTables {
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
}

/// The boot CPU's interrupt stacks (zero-initialised: .bss).
static IST0: crate::sync::BootCell<IstStacks> =
    crate::sync::BootCell::new(IstStacks([0; IST_TOTAL]));

static CPU0: crate::sync::BootCell<CpuTables> = crate::sync::BootCell::new(CpuTables {
    gdt: GlobalDescriptorTable::new(),
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
            gdt: GlobalDescriptorTable::new(),
            tss: TaskStateSegment::new(),
        });
        &mut *cpu
    };
    let mut top = VirtAddr::new(ist);
    for (slot, size) in IST_SIZES.iter().enumerate() {
        top += *size as u64;
        cpu.tss.interrupt_stack_table[slot] = top;
    }
    let code = cpu.gdt.append(Descriptor::kernel_code_segment());
    let data = cpu.gdt.append(Descriptor::kernel_data_segment());
    let tss = cpu.gdt.append(Descriptor::tss_segment(&cpu.tss));
    debug_assert_eq!(code.0, 0x08);
    debug_assert_eq!(data.0, 0x10);
    cpu.gdt.load();
    // SAFETY: the selectors come from the GDT just loaded; the code and data
    // descriptors are valid 64-bit kernel segments and the TSS is 'static.
    unsafe {
        CS::set_reg(code);
        DS::set_reg(data);
        ES::set_reg(data);
        SS::set_reg(data);
        load_tss(tss);
    }
}

/// The kernel code selector.
pub const KERNEL_CS: SegmentSelector = SegmentSelector(0x08);
