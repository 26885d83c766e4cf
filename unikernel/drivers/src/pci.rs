//! PCI: configuration space through the legacy 0xcf8/0xcfc ports, bus
//! enumeration, BAR assignment for devices the firmware left unassigned, and
//! MSI-X programming.

use alloc::vec::Vec;

use uk_frame::mmio::Mmio;
use uk_frame::sync::IrqMutex;
use virtio_drivers::transport::pci::bus::{
    BarInfo, Command, ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, HeaderType, PciRoot,
};

pub use uk_frame::pci::PortCam;

/// A PCI function found on the bus.
#[derive(Clone, Debug)]
pub struct PciFunction {
    /// Its address.
    pub df: DeviceFunction,
    /// Vendor, device, class.
    pub info: DeviceFunctionInfo,
}

/// Whether a PCI host bridge answers at all (not on microvm).
pub fn present() -> bool {
    let id = PortCam.read_word(
        DeviceFunction {
            bus: 0,
            device: 0,
            function: 0,
        },
        0,
    );
    id != u32::MAX && id != 0
}

/// Lists the functions on bus 0 and the buses behind PCI-PCI bridges.
pub fn enumerate(root: &PciRoot<PortCam>) -> Vec<PciFunction> {
    let mut out = Vec::new();
    let mut buses = alloc::vec![0u8];
    let mut seen = [false; 256];
    while let Some(bus) = buses.pop() {
        if core::mem::replace(&mut seen[bus as usize], true) {
            continue;
        }
        for (df, info) in root.enumerate_bus(bus) {
            if info.header_type == HeaderType::PciPciBridge {
                let secondary = (PortCam.read_word(df, 0x18) >> 8) as u8;
                if secondary != 0 {
                    buses.push(secondary);
                }
            }
            out.push(PciFunction { df, info });
        }
    }
    out
}

/// Next free address in the window used for BARs the firmware did not assign.
static BAR_WINDOW: IrqMutex<u64> = IrqMutex::new(0xe000_0000);
const BAR_WINDOW_END: u64 = 0xfe00_0000;

/// Gives every unassigned memory BAR of `df` an address, then enables memory
/// decoding and bus mastering.
pub fn assign_bars(root: &mut PciRoot<PortCam>, df: DeviceFunction) {
    let Ok(bars) = root.bars(df) else { return };
    for (i, bar) in bars.iter().enumerate() {
        let Some(BarInfo::Memory {
            address,
            size,
            address_type,
            ..
        }) = bar
        else {
            continue;
        };
        if *address != 0 || *size == 0 {
            continue;
        }
        let mut next = BAR_WINDOW.lock();
        let base = next.div_ceil(*size) * *size;
        if base + *size > BAR_WINDOW_END {
            log::warn!("pci {df}: no room for BAR{i} ({size:#x} bytes)");
            continue;
        }
        *next = base + *size;
        if bar.as_ref().is_some_and(BarInfo::takes_two_entries) {
            root.set_bar_64(df, i as u8, base);
        } else {
            root.set_bar_32(df, i as u8, base as u32);
        }
        let _ = address_type;
        log::debug!("pci {df}: BAR{i} assigned {base:#x} ({size:#x} bytes)");
    }
    let (_, cmd) = root.get_status_command(df);
    root.set_command(df, cmd | Command::MEMORY_SPACE | Command::BUS_MASTER);
}

/// Capability offsets of `df` with id `id`.
pub fn find_capability(df: DeviceFunction, id: u8) -> Option<u8> {
    let status = PortCam.read_word(df, 0x04) >> 16;
    if status & 0x10 == 0 {
        return None;
    }
    let mut off = (PortCam.read_word(df, 0x34) & 0xfc) as u8;
    for _ in 0..48 {
        if off == 0 {
            return None;
        }
        let hdr = PortCam.read_word(df, off);
        if hdr as u8 == id {
            return Some(off);
        }
        off = ((hdr >> 8) & 0xfc) as u8;
    }
    None
}

/// The address of memory BAR `bar` of `df`.
pub fn bar_address(df: DeviceFunction, bar: u8) -> Option<u64> {
    let lo = PortCam.read_word(df, 0x10 + 4 * bar);
    if lo & 1 != 0 {
        return None;
    }
    let mut a = (lo & !0xf) as u64;
    if (lo >> 1) & 3 == 2 {
        a |= (PortCam.read_word(df, 0x14 + 4 * bar) as u64) << 32;
    }
    (a != 0).then_some(a)
}

/// Points MSI-X table entry `entry` of `df` at `vector` on this CPU and
/// enables MSI-X (INTx is then off). Returns false if the device has no MSI-X.
pub fn enable_msix(df: DeviceFunction, entry: u16, vector: u8) -> bool {
    enable_msix_to(df, entry, vector, uk_frame::arch::apic::id())
}

/// The number of entries in the MSI-X table of `df` (0 without MSI-X).
pub fn msix_entries(df: DeviceFunction) -> usize {
    find_capability(df, 0x11).map_or(0, |cap| {
        ((PortCam.read_word(df, cap) >> 16) & 0x7ff) as usize + 1
    })
}

/// As [`enable_msix`], with the message addressed to the CPU whose local
/// APIC id is `apic_id`.
pub fn enable_msix_to(df: DeviceFunction, entry: u16, vector: u8, apic_id: u32) -> bool {
    let Some(cap) = find_capability(df, 0x11) else {
        return false;
    };
    let ctrl = PortCam.read_word(df, cap);
    let table_size = ((ctrl >> 16) & 0x7ff) as u16 + 1;
    if entry >= table_size {
        return false;
    }
    let table = PortCam.read_word(df, cap + 4);
    let Some(bar) = bar_address(df, (table & 7) as u8) else {
        return false;
    };
    let base = bar + (table & !7) as u64;
    let Ok(msix) = Mmio::map(base, table_size as u64 * 16) else {
        return false;
    };
    let (addr, data) = crate::irq::msi_message_to(apic_id, vector);
    // Each entry is 16 bytes: address low/high, data, vector control.
    let e = entry as u64 * 16;
    msix.write32(e, addr as u32);
    msix.write32(e + 4, (addr >> 32) as u32);
    msix.write32(e + 8, data);
    msix.write32(e + 12, 0); // unmasked
    // Message control: enable (bit 15), clear function mask (bit 14).
    let mut cam = PortCam;
    let new_ctrl = (ctrl & !(1 << 30)) | (1 << 31);
    cam.write_word(df, cap, new_ctrl);
    true
}
