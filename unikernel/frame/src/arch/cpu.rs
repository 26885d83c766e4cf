//! Small CPU helpers: time stamp counter, halting, control registers, port I/O
//! for the exit devices.

use x86_64::instructions::port::Port;

/// Reads the time stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no side effects and is available on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The faulting address of the last page fault.
#[inline]
pub fn cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

/// Stops the CPU forever with interrupts disabled.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Writes a 32-bit value to an I/O port.
pub fn outl(port: u16, value: u32) {
    let mut p = Port::<u32>::new(port);
    // SAFETY: only used on the exit devices below, whose ports have no effect
    // on memory safety whether or not the device exists.
    unsafe { p.write(value) }
}

/// Writes a 16-bit value to an I/O port.
pub fn outw(port: u16, value: u16) {
    let mut p = Port::<u16>::new(port);
    // SAFETY: as in `outl`: power-management ports only.
    unsafe { p.write(value) }
}

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    let mut p = Port::<u8>::new(port);
    // SAFETY: as in `outl`: the keyboard controller's reset command only.
    unsafe { p.write(value) }
}

/// Ends the VM with `status`.
///
/// On QEMU the `isa-debug-exit` device at port 0xf4 makes QEMU exit with
/// `(status << 1) | 1`. Elsewhere: the ACPI PM1a control of QEMU's q35/ICH9
/// (sleep type 5 = soft off), then the i8042 reset line that Firecracker treats
/// as a shutdown request, then a halt.
pub fn exit_vm(status: u32) -> ! {
    outl(0xf4, status);
    outw(0x604, 0x2000);
    outb(0x64, 0xfe);
    halt_forever()
}

/// One CPUID leaf.
pub fn cpuid(leaf: u32, sub: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, sub)
}
