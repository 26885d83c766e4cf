//! Hardware random numbers: RDSEED (the entropy source's own output) where
//! the CPU has it, else RDRAND (a DRBG the CPU reseeds from that source).
//! Both can fail transiently (the carry flag is clear); each word is retried
//! a bounded number of times, as Intel's guidance suggests. There is no
//! software fallback: a CPU with neither instruction gets a clear error
//! (TLS refuses to start rather than use predictable keys).

use core::arch::asm;

/// Which instruction [`fill`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// RDSEED (CPUID.(EAX=7,ECX=0):EBX bit 18).
    Rdseed,
    /// RDRAND (CPUID.1:ECX bit 30).
    Rdrand,
}

/// Why [`fill`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandError {
    /// The CPU has neither RDSEED nor RDRAND (under QEMU TCG: use `-cpu max`
    /// or a CPU model that has them).
    NoHardwareRng,
    /// The instruction kept failing (entropy exhausted or a broken CPU).
    Exhausted,
}

impl core::fmt::Display for RandError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RandError::NoHardwareRng => "the CPU has neither RDSEED nor RDRAND",
            RandError::Exhausted => "RDSEED/RDRAND kept failing",
        })
    }
}

/// The hardware source, if any.
pub fn source() -> Option<Source> {
    let max = super::cpu::cpuid(0, 0).eax;
    if max >= 7 && super::cpu::cpuid(7, 0).ebx & (1 << 18) != 0 {
        Some(Source::Rdseed)
    } else if super::cpu::cpuid(1, 0).ecx & (1 << 30) != 0 {
        Some(Source::Rdrand)
    } else {
        None
    }
}

/// RDSEED may fail more often than RDRAND under load; both get this many
/// attempts per word (RDRAND's documented bound is 10).
const RETRIES: u32 = 128;

fn word(src: Source) -> Option<u64> {
    for _ in 0..RETRIES {
        let v: u64;
        let ok: u8;
        // SAFETY: `source` saw the instruction in CPUID; it writes only the
        // declared output register and the flags, and touches no memory.
        unsafe {
            match src {
                Source::Rdseed => {
                    asm!("rdseed {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok,
                                       options(nomem, nostack))
                }
                Source::Rdrand => {
                    asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok,
                                       options(nomem, nostack))
                }
            }
        }
        if ok != 0 {
            return Some(v);
        }
        core::hint::spin_loop();
    }
    None
}

/// Fills `buf` with hardware random bytes.
pub fn fill(buf: &mut [u8]) -> Result<(), RandError> {
    let src = source().ok_or(RandError::NoHardwareRng)?;
    for chunk in buf.chunks_mut(8) {
        let w = word(src).ok_or(RandError::Exhausted)?;
        chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]);
    }
    Ok(())
}
