//! The unikernel's framework: the only crate of the kernel that may use
//! `unsafe`.
//!
//! It owns the machine: boot (PVH/Multiboot2 entry, boot information), CPU
//! tables (GDT, TSS, IDT), paging and frame allocation, interrupt entry and
//! dispatch, the local and I/O APICs, context switching and the thread
//! scheduler glue (on `uk-sched`), the IRQ-safe and blocking locks, the heap
//! (talc behind `GlobalAlloc`), the serial console, the TSC and the clocks, and
//! the windows drivers use to reach devices: DMA memory, MMIO registers, I/O
//! ports and the virtio-drivers `Hal`. Its public API is safe: the crates above
//! it (the drivers and the kernel services) say `#![forbid(unsafe_code)]`, and
//! every `unsafe` block in here carries a `// SAFETY:` argument.
//!
//! Calls that must go up (a page fault on a file mapping that needs the file
//! system, memory pressure that needs the page cache, the application's entry)
//! go through hooks the upper crates register at init, never through an
//! import.
#![no_std]

extern crate alloc;

pub mod arch;
mod backtrace;
pub mod console;
pub mod dma;
pub mod entry;
pub mod hal;
mod heap;
pub use heap::{reserve_misses, try_arc};
pub mod irq;
pub mod mm;
pub mod mmio;
pub mod pagecache;
mod panic;
pub mod pci;
pub mod port;
pub mod sched;
pub mod sync;
pub mod time;
pub mod trap;
pub mod virtio;

/// Reports a failure during early boot (before the exception machinery) and
/// ends the VM.
#[cold]
pub fn fatal_early(msg: &str) -> ! {
    console::emergency(|w| {
        let _ = writeln!(w, "uk: fatal: {msg}");
    });
    arch::cpu::exit_vm(trap::EXIT_EXCEPTION)
}

/// Defines the symbol the boot code calls once the machine is up
/// (`__uk_app_start`); used by `unikernel::main!`, which passes the kernel
/// services' start function. Only the final binary may define it, once.
#[doc(hidden)]
#[macro_export]
macro_rules! app_entry {
    ($start:expr) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "Rust" fn __uk_app_start() -> ! {
            $start
        }
    };
}
