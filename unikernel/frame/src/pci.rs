//! PCI configuration space through the legacy 0xcf8/0xcfc ports
//! (configuration access mechanism #1, present on every PC chipset QEMU
//! emulates). The framework keeps these ports ([`crate::port`]); drivers
//! reach configuration space only through [`PortCam`].

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};
use x86_64::instructions::port::Port;

use crate::sync::IrqMutex;

/// Configuration access through ports 0xcf8/0xcfc.
#[derive(Clone, Copy, Debug)]
pub struct PortCam;

static CF8: IrqMutex<()> = IrqMutex::new(());

fn address(df: DeviceFunction, off: u8) -> u32 {
    0x8000_0000
        | (df.bus as u32) << 16
        | (df.device as u32) << 11
        | (df.function as u32) << 8
        | (off as u32 & 0xfc)
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, off: u8) -> u32 {
        let _g = CF8.lock();
        // SAFETY: the PCI configuration ports; the lock keeps the address/data
        // pair atomic. Reads have no effect on memory.
        unsafe {
            Port::<u32>::new(0xcf8).write(address(df, off));
            Port::<u32>::new(0xcfc).read()
        }
    }

    fn write_word(&mut self, df: DeviceFunction, off: u8, data: u32) {
        let _g = CF8.lock();
        // SAFETY: as in read_word; configuration writes only affect the device
        // (a BAR moved over RAM would be the same trust in drivers as a DMA
        // address: the PCI layer places BARs in the MMIO hole only).
        unsafe {
            Port::<u32>::new(0xcf8).write(address(df, off));
            Port::<u32>::new(0xcfc).write(data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}
