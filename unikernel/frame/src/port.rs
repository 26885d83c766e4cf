//! I/O port windows: the safe way for the crates above the framework to reach
//! x86 I/O ports.
//!
//! Two forms: [`IoPorts`], a bounds-checked window a driver claims, and the
//! free functions [`read8`]/[`read16`]/[`write8`]/[`write16`] for drivers that
//! address ports named by firmware tables (ACPI). Both refuse the ports the
//! framework drives itself or that could make a device write memory: the
//! interrupt controllers, the timer, the CMOS clock, the serial console, PCI
//! configuration and the ISA DMA controllers. Other port I/O never touches
//! memory, so what a driver does with it cannot break the kernel's memory
//! safety; DMA a device is told to do through its own registers is the same
//! trust in the device as for any driver (no IOMMU is programmed).

use x86_64::instructions::port::Port;

/// Port ranges `[start, end)` the framework keeps for itself.
const RESERVED: &[(u16, u16)] = &[
    (0x00, 0x20),   // ISA DMA controller 1
    (0x20, 0x22),   // master PIC
    (0x40, 0x44),   // PIT
    (0x70, 0x72),   // CMOS / RTC
    (0x80, 0x90),   // ISA DMA page registers
    (0xa0, 0xa2),   // slave PIC
    (0xc0, 0xe0),   // ISA DMA controller 2
    (0x3f8, 0x400), // COM1
    (0xcf8, 0xd00), // PCI configuration (see `pci_config`)
];

/// Why a window could not be claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortError {
    /// Empty, or past the end of the port space.
    BadRange,
    /// The framework drives these ports itself.
    Reserved,
}

/// A bounds-checked window of `len` consecutive I/O ports.
#[derive(Debug)]
pub struct IoPorts {
    base: u16,
    len: u16,
}

impl IoPorts {
    /// Claims ports `base..base + len`.
    pub fn claim(base: u16, len: u16) -> Result<IoPorts, PortError> {
        let end = u32::from(base) + u32::from(len);
        if len == 0 || end > 0x1_0000 {
            return Err(PortError::BadRange);
        }
        let overlaps = |&(s, e): &(u16, u16)| u32::from(s) < end && u32::from(base) < u32::from(e);
        if RESERVED.iter().any(overlaps) {
            return Err(PortError::Reserved);
        }
        Ok(IoPorts { base, len })
    }

    /// The first port of the window.
    pub fn base(&self) -> u16 {
        self.base
    }

    /// Whether absolute port `port` lies in the window.
    pub fn contains(&self, port: u16) -> bool {
        port >= self.base && port - self.base < self.len
    }

    fn port(&self, off: u16, size: u16) -> u16 {
        assert!(
            off.checked_add(size).is_some_and(|e| e <= self.len),
            "port offset outside its window"
        );
        self.base + off
    }

    /// Reads the byte port at `off`.
    pub fn read8(&self, off: u16) -> u8 {
        let mut p = Port::<u8>::new(self.port(off, 1));
        // SAFETY: a port of this window, none of the framework's own; port
        // reads do not touch memory.
        unsafe { p.read() }
    }

    /// Reads the 16-bit port at `off`.
    pub fn read16(&self, off: u16) -> u16 {
        let mut p = Port::<u16>::new(self.port(off, 2));
        // SAFETY: as in `read8`.
        unsafe { p.read() }
    }

    /// Writes the byte port at `off`.
    pub fn write8(&self, off: u16, v: u8) {
        let mut p = Port::<u8>::new(self.port(off, 1));
        // SAFETY: as in `read8`; port writes reach the device only.
        unsafe { p.write(v) }
    }

    /// Writes the 16-bit port at `off`.
    pub fn write16(&self, off: u16, v: u16) {
        let mut p = Port::<u16>::new(self.port(off, 2));
        // SAFETY: as in `write8`.
        unsafe { p.write(v) }
    }
}

/// Whether the framework lets drivers use port `port`.
#[inline(never)]
pub fn allowed(port: u16) -> bool {
    !RESERVED.iter().any(|&(s, e)| s <= port && port < e)
}

/// Reads byte port `port`; all-ones for a port the framework keeps.
#[inline(never)]
pub fn read8(port: u16) -> u8 {
    if !allowed(port) {
        return 0xff;
    }
    // SAFETY: not one of the framework's ports (`RESERVED`); port reads do
    // not touch memory.
    unsafe { Port::<u8>::new(port).read() }
}

/// Reads 16-bit port `port`; all-ones for a port the framework keeps.
#[inline(never)]
pub fn read16(port: u16) -> u16 {
    if !allowed(port) || !allowed(port.wrapping_add(1)) {
        return 0xffff;
    }
    // SAFETY: as in `read8`.
    unsafe { Port::<u16>::new(port).read() }
}

/// Writes byte port `port`; ignored for a port the framework keeps.
#[inline(never)]
pub fn write8(port: u16, v: u8) {
    if allowed(port) {
        // SAFETY: as in `read8`; the write reaches the device only.
        unsafe { Port::<u8>::new(port).write(v) }
    }
}

/// Writes 16-bit port `port`; ignored for a port the framework keeps.
#[inline(never)]
pub fn write16(port: u16, v: u16) {
    if allowed(port) && allowed(port.wrapping_add(1)) {
        // SAFETY: as in `write8`.
        unsafe { Port::<u16>::new(port).write(v) }
    }
}
