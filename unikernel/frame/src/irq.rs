//! Interrupt routing for drivers, and the platform description behind it.
//!
//! At boot the kernel reads ACPI (MADT for I/O APICs and ISA overrides, MCFG
//! for PCI Express configuration space), masks the 8259 PICs and enables the
//! local APIC. Drivers then:
//! 1. claim a vector with a handler: [`claim_vector`];
//! 2. connect their device to it: [`route_gsi`] / [`route_isa_irq`] for pin
//!    interrupts through an I/O APIC, or [`msi_message`] for MSI/MSI-X;
//! 3. do nothing to acknowledge: the dispatcher sends the local APIC its EOI
//!    after the handler returns (a level-triggered device must be quieted by
//!    its handler, e.g. by reading its ISR register, or it fires again).
//!
//! Handlers run with interrupts disabled, on the interrupted thread's stack;
//! they must not block. They wake threads through wait queues; a needed
//! switch happens right after the EOI.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};

use uk_core::acpi::{self, PlatformInfo};

use crate::arch::apic::{self, IoApic};
use crate::sync::IrqMutex;
use crate::trap::{self, IrqHandler};

/// First vector handed to drivers.
pub const FIRST_DEVICE_VECTOR: u8 = 0x30;
/// Last vector handed to drivers.
pub const LAST_DEVICE_VECTOR: u8 = 0xdf;

static NEXT_VECTOR: AtomicU8 = AtomicU8::new(FIRST_DEVICE_VECTOR);
static IOAPICS: IrqMutex<Vec<IoApic>> = IrqMutex::new(Vec::new());
static PLATFORM: IrqMutex<Option<PlatformInfo>> = IrqMutex::new(None);

/// Errors of the interrupt API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqError {
    /// All device vectors are taken.
    NoVector,
    /// No I/O APIC serves that GSI.
    NoRoute,
}

struct FirmwareMem;

impl acpi::PhysRead for FirmwareMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let len = buf.len() as u64;
        if crate::mm::map_firmware(addr, len).is_err() || !crate::mm::is_readable(addr, len) {
            return false;
        }
        // SAFETY: [addr, addr+len) is identity mapped and readable (checked
        // just above); firmware tables are plain memory.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }
}

/// The RSDP in the BIOS area, for loaders that pass none (0: not found).
fn bios_rsdp() -> u64 {
    let (start, end) = acpi::BIOS_AREA;
    let len = end - start;
    if crate::mm::map_firmware(start, len).is_err() || !crate::mm::is_readable(start, len) {
        return 0;
    }
    // SAFETY: [start, end) is identity mapped and readable (checked just
    // above): firmware memory or RAM that nothing writes during boot.
    let area = unsafe { core::slice::from_raw_parts(start as *const u8, len as usize) };
    acpi::find_rsdp(area, start).unwrap_or(0)
}

/// Reads ACPI, enables the local APIC and the I/O APICs.
pub fn init(rsdp: u64) {
    let rsdp = if rsdp != 0 { rsdp } else { bios_rsdp() };
    let mut info = if rsdp != 0 {
        match acpi::parse(&FirmwareMem, rsdp) {
            Ok(i) => i,
            Err(e) => {
                log::warn!("ACPI tables unusable ({e:?}); assuming the standard PC layout");
                PlatformInfo::default()
            }
        }
    } else {
        log::debug!("no ACPI RSDP; assuming the standard PC layout");
        PlatformInfo::default()
    };
    if info.ioapics.is_empty() {
        info.ioapics.push(acpi::IoApicInfo {
            id: 0,
            addr: 0xfec0_0000,
            gsi_base: 0,
        });
    }
    apic::init_local();
    let mut ios = IOAPICS.lock();
    for io in &info.ioapics {
        match IoApic::new(io.addr, io.gsi_base) {
            Some(a) => ios.push(a),
            None => log::warn!("I/O APIC at {:#x} does not answer", io.addr),
        }
    }
    log::debug!(
        "interrupts: {} local APIC (id {}), timer {}, {} I/O APIC(s), {} PCIe window(s)",
        if apic::is_x2apic() { "x2APIC" } else { "xAPIC" },
        apic::id(),
        if apic::has_tsc_deadline() {
            "TSC-deadline"
        } else {
            "one-shot"
        },
        ios.len(),
        info.ecam.len()
    );
    drop(ios);
    *PLATFORM.lock() = Some(info);
}

/// The platform description read from ACPI.
pub fn platform() -> PlatformInfo {
    PLATFORM.lock().clone().unwrap_or_default()
}

/// The APIC ids of the other CPUs to start, at most `max`
/// (`acpi::ap_targets` over the MADT's processors; none without a MADT).
pub fn ap_targets(max: usize) -> Vec<u32> {
    PLATFORM.lock().as_ref().map_or_else(Vec::new, |p| {
        acpi::ap_targets(&p.cpus, apic::id(), apic::is_x2apic(), max)
    })
}

/// Allocates a device vector and installs `handler` on it.
pub fn claim_vector(handler: IrqHandler) -> Result<u8, IrqError> {
    loop {
        let v = NEXT_VECTOR.fetch_add(1, Ordering::Relaxed);
        if !(FIRST_DEVICE_VECTOR..=LAST_DEVICE_VECTOR).contains(&v) {
            NEXT_VECTOR.store(LAST_DEVICE_VECTOR + 1, Ordering::Relaxed);
            return Err(IrqError::NoVector);
        }
        if trap::register(v, handler) {
            return Ok(v);
        }
    }
}

/// Routes global system interrupt `gsi` to `vector` on this CPU (unmasked).
pub fn route_gsi(gsi: u32, vector: u8, level: bool, active_low: bool) -> Result<(), IrqError> {
    let ios = IOAPICS.lock();
    if ios
        .iter()
        .any(|io| io.route(gsi, vector, level, active_low))
    {
        Ok(())
    } else {
        Err(IrqError::NoRoute)
    }
}

/// Routes legacy ISA IRQ `irq`, honouring ACPI's interrupt source overrides.
pub fn route_isa_irq(irq: u8, vector: u8) -> Result<(), IrqError> {
    let (gsi, level, low) = PLATFORM
        .lock()
        .as_ref()
        .map_or((irq as u32, false, false), |p| p.isa_irq(irq));
    route_gsi(gsi, vector, level, low)
}

/// The MSI/MSI-X address and data that deliver `vector` to this CPU.
pub fn msi_message(vector: u8) -> (u64, u32) {
    apic::msi_message(vector)
}

/// The MSI/MSI-X address and data that deliver `vector` to the CPU whose
/// local APIC id is `apic_id` (ids above 255 cannot be reached this way:
/// no interrupt remapping).
pub fn msi_message_to(apic_id: u32, vector: u8) -> (u64, u32) {
    apic::msi_message_to(apic_id, vector)
}

/// The local APIC id of the CPU with scheduler index `i` (as
/// `sched::cpu_index`), once it is online; for MSI-X messages aimed at it.
pub fn cpu_apic_id(i: usize) -> Option<u32> {
    crate::arch::smp::cpu(i).map(|c| c.apic_id.load(Ordering::Relaxed))
}

/// Acknowledges the current interrupt at the local APIC. The dispatcher does
/// this after every handler; drivers rarely need it.
pub fn eoi() {
    apic::eoi();
}
