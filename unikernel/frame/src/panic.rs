//! Panics print their message, location and a backtrace, then end the VM
//! with status 101 (the status of a panicking Rust process).

use core::panic::PanicInfo;

use crate::arch::cpu;

/// Exit status after a panic.
pub const EXIT_PANIC: u32 = 101;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    x86_64::instructions::interrupts::disable();
    crate::console::emergency(|w| {
        match info.location() {
            Some(l) => {
                let _ = write!(w, "panicked at {}:{}:{}: ", l.file(), l.line(), l.column());
            }
            None => {
                let _ = write!(w, "panicked at unknown location: ");
            }
        }
        let _ = writeln!(w, "{}", info.message());
        crate::backtrace::here(w);
        let _ = writeln!(w, "memstats: {}", crate::mm::stats());
    });
    cpu::exit_vm(EXIT_PANIC)
}
