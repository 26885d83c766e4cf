//! The 16550 UART at COM1 (0x3f8), the console of QEMU, Firecracker and clouds.

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// A 16550 UART driven by polling (the console is write-mostly and short).
pub struct Serial {
    base: u16,
}

impl Serial {
    /// COM1.
    pub const fn com1() -> Self {
        Self { base: COM1 }
    }

    fn out(&self, off: u16, v: u8) {
        let mut p = Port::<u8>::new(self.base + off);
        // SAFETY: the UART's own registers; writing them only affects the UART.
        unsafe { p.write(v) }
    }

    fn inb(&self, off: u16) -> u8 {
        let mut p = Port::<u8>::new(self.base + off);
        // SAFETY: reading a UART register has no effect on memory.
        unsafe { p.read() }
    }

    /// 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init(&self) {
        self.out(1, 0x00); // no interrupts
        self.out(3, 0x80); // DLAB
        self.out(0, 0x01); // divisor 1 = 115200
        self.out(1, 0x00);
        self.out(3, 0x03); // 8N1
        self.out(2, 0xc7); // FIFO on, clear, 14-byte threshold
        self.out(4, 0x03); // DTR | RTS
    }

    /// Raises IRQ 4 when a byte arrives (receive-data interrupt, OUT2 on).
    pub fn enable_rx_interrupt(&self) {
        self.out(4, 0x0b); // DTR | RTS | OUT2 (routes the UART's interrupt)
        self.out(1, 0x01); // received data available
    }

    /// A received byte, if one is waiting.
    pub fn read_byte(&self) -> Option<u8> {
        let lsr = self.inb(5);
        // A missing UART reads 0xff: treat it as "nothing received".
        (lsr != 0xff && lsr & 0x01 != 0).then(|| self.inb(0))
    }

    /// Sends one byte, waiting while the transmit holding register is full.
    /// A missing UART reads 0xff, which also reads as "empty": no hang.
    pub fn write_byte(&self, b: u8) {
        let mut spins = 0u32;
        while self.inb(5) & 0x20 == 0 && spins < 100_000 {
            spins += 1;
            core::hint::spin_loop();
        }
        self.out(0, b);
    }

    /// Sends bytes, turning `\n` into `\r\n`.
    pub fn write_bytes(&self, s: &[u8]) {
        for &b in s {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
    }
}
