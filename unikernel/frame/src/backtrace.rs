//! Frame-pointer backtraces. Images are built with frame pointers, so each
//! frame starts with the caller's `rbp` followed by the return address. Every
//! frame is checked to be mapped before it is read, so a corrupt chain ends
//! the walk instead of faulting.

use core::fmt::Write;

use crate::mm;

const MAX_FRAMES: usize = 32;

/// Writes `backtrace:` and one line per frame, starting at `rip`.
pub fn write(w: &mut dyn Write, rip: u64, rbp: u64) {
    let _ = writeln!(w, "backtrace:");
    let _ = writeln!(w, "  #0 0x{rip:016x}");
    let mut fp = rbp;
    for i in 1..MAX_FRAMES {
        if fp == 0 || !fp.is_multiple_of(8) || !mm::is_readable(fp, 16) {
            break;
        }
        // SAFETY: `fp` is 8-byte aligned and the 16 bytes at it are mapped and
        // readable (checked just above): a frame record of saved rbp + return address.
        let (next, ret) = unsafe {
            let p = fp as *const u64;
            (p.read_volatile(), p.add(1).read_volatile())
        };
        if ret == 0 {
            break;
        }
        let _ = writeln!(w, "  #{i} 0x{ret:016x}");
        if next <= fp {
            break;
        }
        fp = next;
    }
}

/// The current frame pointer and instruction pointer, for a panic backtrace.
pub fn here(w: &mut dyn Write) {
    let rbp: u64;
    // SAFETY: reading rbp has no side effects.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags))
    };
    write(w, here as *const () as u64, rbp);
}
