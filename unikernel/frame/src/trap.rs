//! What happens on every exception and interrupt: the page-fault path into the
//! memory manager, handlers that drivers register for their vectors, and the
//! fatal report (vector, error code, RIP, CR2, backtrace) for everything else.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::arch::cpu;
use crate::arch::idt::TrapFrame;
use crate::mm;

/// Exit status of the VM after a fatal CPU exception.
pub const EXIT_EXCEPTION: u32 = 102;

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved",
];

/// A handler for an interrupt vector (32..=255).
pub type IrqHandler = fn(&mut TrapFrame);

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
static SPURIOUS: AtomicU64 = AtomicU64::new(0);

/// Installs `handler` for `vector`. Returns false if the vector is an
/// exception (below 32) or already taken.
pub fn register(vector: u8, handler: IrqHandler) -> bool {
    if vector < 32 {
        return false;
    }
    HANDLERS[vector as usize]
        .compare_exchange(0, handler as usize, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// Interrupts that arrived on a vector nobody claimed.
pub fn spurious_count() -> u64 {
    SPURIOUS.load(Ordering::Relaxed)
}

/// The vector (+1) whose handler runs now on this CPU, 0 outside handlers
/// (per CPU, in `smp::PerCpu`): a thread switch while it is set would leave
/// the vector in service (no EOI) and block every interrupt of its priority
/// class.
pub fn in_handler() -> u32 {
    crate::arch::smp::this_cpu()
        .in_handler
        .load(Ordering::Relaxed)
}

/// Called by the entry stubs with the saved state.
pub extern "C" fn dispatch(frame: &mut TrapFrame) {
    let v = frame.vector as usize;
    if v == 14 {
        let addr = cpu::cr2();
        match mm::handle_page_fault(addr, frame.error) {
            Ok(()) => return,
            // A file page: let the thread fetch it itself, where it may block.
            Err(why) if why == mm::FILE_PAGE_FAULT => {
                if frame.rflags & (1 << 9) == 0 {
                    fatal(
                        frame,
                        Some(addr),
                        "file mapping touched with interrupts disabled",
                    );
                }
                if crate::arch::upcall::redirect(frame, addr) {
                    return;
                }
                fatal(
                    frame,
                    Some(addr),
                    "no stack to resolve a file-mapping fault on",
                );
            }
            Err(why) => fatal(frame, Some(addr), why),
        }
    }
    if v < 32 {
        let why = if v == 8 && mm::is_guard_address(cpu::cr2()) {
            "stack overflow: the stack ran into its guard page"
        } else {
            ""
        };
        fatal(frame, Some(cpu::cr2()), why);
    }
    crate::sched::end_idle();
    if v == crate::arch::apic::SPURIOUS_VECTOR as usize || (0x20..0x30).contains(&v) {
        // APIC spurious vector, or a stray legacy PIC interrupt: no EOI.
        SPURIOUS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let h = HANDLERS[v].load(Ordering::Acquire);
    if h == 0 {
        SPURIOUS.fetch_add(1, Ordering::Relaxed);
    } else {
        // SAFETY: only `register` stores non-zero values, and it stores `IrqHandler`s.
        let handler: IrqHandler = unsafe { core::mem::transmute::<usize, IrqHandler>(h) };
        let cpu = crate::arch::smp::this_cpu();
        cpu.in_handler.store(v as u32 + 1, Ordering::Relaxed);
        handler(frame);
        cpu.in_handler.store(0, Ordering::Relaxed);
    }
    crate::arch::apic::eoi();
    crate::sched::preempt_point();
}

fn fatal(frame: &TrapFrame, cr2: Option<u64>, why: &str) -> ! {
    let v = frame.vector as usize;
    let name = NAMES.get(v).copied().unwrap_or("interrupt");
    crate::console::emergency(|w| {
        let _ = writeln!(
            w,
            "EXCEPTION vector {v} ({name}) error=0x{:x} rip=0x{:016x} cr2=0x{:016x} rsp=0x{:016x}",
            frame.error,
            frame.rip,
            cr2.unwrap_or(0),
            frame.rsp
        );
        if v == 14 {
            let e = frame.error;
            let _ = writeln!(
                w,
                "  page fault: {} {} access, {}",
                if e & 1 != 0 {
                    "protection violation on a"
                } else {
                    "not-present page on a"
                },
                if e & 16 != 0 {
                    "instruction fetch"
                } else if e & 2 != 0 {
                    "write"
                } else {
                    "read"
                },
                if e & 8 != 0 {
                    "reserved bit set"
                } else {
                    "kernel mode"
                },
            );
        }
        if !why.is_empty() {
            let _ = writeln!(w, "  {why}");
        }
        let _ = writeln!(
            w,
            "  rax={:016x} rbx={:016x} rcx={:016x} rdx={:016x}\n  rsi={:016x} rdi={:016x} rbp={:016x} r8={:016x}",
            frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp, frame.r8
        );
        crate::backtrace::write(w, frame.rip, frame.rbp);
        let _ = writeln!(w, "memstats: {}", mm::stats());
    });
    cpu::exit_vm(EXIT_EXCEPTION)
}
