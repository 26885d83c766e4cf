//! Device discovery and the drivers built on `virtio-drivers`.
//!
//! Discovery: virtio-mmio devices from `virtio_mmio.device=` entries on the
//! command line (Firecracker's convention), otherwise by probing QEMU
//! microvm's eight transport slots; virtio-pci devices by enumerating PCI
//! (q35). Each found device is parked here with its interrupt source until a
//! driver takes it ([`take`]).
//!
//! This crate is `uk-drivers`: device drivers on the framework (`uk-frame`).
//! It reaches hardware only through the framework's windows and calls back
//! into nothing above it.
#![no_std]
// No unsafe code: raw access goes through the framework's windows (DMA
// buffers, owning and lending virtqueues, MMIO, port I/O).
#![forbid(unsafe_code)]

extern crate alloc;

pub mod block;
pub mod nvme;
pub mod pci;
pub mod virtio_blk;
pub mod virtio_net;
pub mod virtio_scsi;

use alloc::vec::Vec;

use uk_frame::mmio::Mmio;
pub use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::transport::pci::PciTransport;
pub use virtio_drivers::transport::pci::bus::DeviceFunction;
use virtio_drivers::transport::pci::bus::PciRoot;
use virtio_drivers::transport::{SomeTransport, Transport};

use crate::sync::IrqMutex;
use crate::trap::IrqHandler;
use uk_frame::irq::{self, IrqError};

pub use uk_frame::hal;
pub use uk_frame::hal::KernelHal;
#[allow(unused_imports)]
use uk_frame::{arch, mm, println, sched, sync, time, trap};

/// QEMU microvm's virtio-mmio window: transports of 512 bytes, 24 of them
/// (GSI 24..47) when the machine has its second I/O APIC, else 8 (GSI 5..12).
const MICROVM_MMIO_BASE: u64 = 0xfeb0_0000;
const MICROVM_MMIO_SIZE: u64 = 512;
const VIRTIO_MMIO_MAGIC: u32 = 0x7472_6976;

/// How a device interrupts.
#[derive(Clone, Copy, Debug)]
pub enum IrqSource {
    /// A pin on an I/O APIC.
    Gsi {
        /// Global system interrupt.
        gsi: u32,
        /// Level-triggered.
        level: bool,
        /// Registers of a virtio-mmio device, whose interrupt the handler
        /// acknowledges (a level-triggered line stays asserted until then).
        mmio: Option<&'static Mmio>,
    },
    /// MSI-X of a PCI function.
    Msix(DeviceFunction),
}

/// A device found at boot, not yet claimed by a driver.
pub struct Found {
    /// The virtio transport.
    pub transport: SomeTransport<'static>,
    /// Its interrupt source.
    pub irq: IrqSource,
    /// Where it was found, for messages.
    pub location: alloc::string::String,
}

impl Found {
    /// The device type.
    pub fn kind(&self) -> DeviceType {
        self.transport.device_type()
    }
}

impl IrqSource {
    /// Acknowledges the device's interrupt where the device needs it (virtio-mmio:
    /// read InterruptStatus, write it to InterruptACK). Safe in interrupt context.
    pub fn ack(&self) {
        if let IrqSource::Gsi {
            mmio: Some(regs), ..
        } = *self
        {
            // InterruptStatus (0x60) and InterruptACK (0x64) only affect the
            // device's interrupt line.
            let status = regs.read32(0x60);
            regs.write32(0x64, status);
        }
    }
}

static FOUND: IrqMutex<Vec<Found>> = IrqMutex::new(Vec::new());

/// Takes the first unclaimed device of `kind`.
pub fn take(kind: DeviceType) -> Option<Found> {
    let mut f = FOUND.lock();
    let i = f.iter().position(|d| d.kind() == kind)?;
    Some(f.remove(i))
}

/// Number of devices of `kind` still unclaimed.
pub fn count(kind: DeviceType) -> usize {
    FOUND.lock().iter().filter(|d| d.kind() == kind).count()
}

/// The window the interrupt handler acknowledges a virtio-mmio device
/// through (the transport owns another over the same registers).
fn ack_window(base: u64, size: u64) -> Option<&'static Mmio> {
    Mmio::map(base, size).ok().map(Mmio::leak)
}

fn mmio_device(base: u64, size: u64) -> Option<MmioTransport<'static>> {
    let window = Mmio::map(base, size).ok()?;
    // Reading the magic and DeviceID registers of a virtio-mmio window (or of
    // nothing, which reads 0/all-ones) is harmless.
    let magic = window.read32(0);
    let device_id = window.read32(8);
    log::trace!("probe {base:#x}: magic {magic:#x} device {device_id}");
    if magic != VIRTIO_MMIO_MAGIC || device_id == 0 {
        return None;
    }
    match uk_frame::virtio::mmio_transport(window) {
        Ok(t) => Some(t),
        Err(e) => {
            log::warn!("virtio-mmio at {base:#x}: {e}");
            None
        }
    }
}

fn discover_mmio() {
    let cfg = uk_frame::entry::config();
    let mut found = FOUND.lock();
    if !cfg.virtio_mmio.is_empty() {
        for d in &cfg.virtio_mmio {
            if let Some(t) = mmio_device(d.base, d.size) {
                found.push(Found {
                    transport: t.into(),
                    irq: IrqSource::Gsi {
                        gsi: d.irq,
                        level: d.irq >= 16,
                        mmio: ack_window(d.base, d.size),
                    },
                    location: alloc::format!("virtio-mmio@{:#x} irq {}", d.base, d.irq),
                });
            }
        }
        return;
    }
    if pci::present() {
        return; // a PC with PCI: no microvm window
    }
    // microvm: GSI 24+slot behind the second I/O APIC when there is one, 5+slot otherwise.
    let two_ioapics = irq::platform().ioapics.len() > 1 || irq::platform().ioapics.is_empty();
    let (irq_base, slots) = if two_ioapics { (24, 24) } else { (5, 8) };
    for slot in 0..slots {
        let base = MICROVM_MMIO_BASE + slot * MICROVM_MMIO_SIZE;
        if let Some(t) = mmio_device(base, MICROVM_MMIO_SIZE) {
            let gsi = irq_base + slot as u32;
            found.push(Found {
                transport: t.into(),
                irq: IrqSource::Gsi {
                    gsi,
                    level: gsi >= 16,
                    mmio: ack_window(base, MICROVM_MMIO_SIZE),
                },
                location: alloc::format!("virtio-mmio@{base:#x} gsi {gsi}"),
            });
        }
    }
}

fn discover_pci() {
    if !pci::present() {
        return;
    }
    let mut root = PciRoot::new(pci::PortCam);
    let funcs = pci::enumerate(&root);
    let mut found = FOUND.lock();
    for f in funcs {
        if virtio_drivers::transport::pci::virtio_device_type(&f.info).is_none() {
            continue;
        }
        pci::assign_bars(&mut root, f.df);
        match PciTransport::new::<KernelHal, _>(&mut root, f.df) {
            Ok(t) => found.push(Found {
                transport: t.into(),
                irq: IrqSource::Msix(f.df),
                location: alloc::format!("virtio-pci {}", f.df),
            }),
            Err(e) => log::warn!("virtio-pci {}: {e}", f.df),
        }
    }
}

/// Finds every virtio device.
pub fn init() {
    discover_mmio();
    discover_pci();
    for d in FOUND.lock().iter() {
        let kind = match d.kind() {
            DeviceType::Network => "Network",
            DeviceType::Block => "Block",
            DeviceType::ScsiHost => "ScsiHost",
            _ => "another device",
        };
        log::debug!("found {kind} at {}", d.location);
    }
}

/// Connects a device's interrupt to `handler`, after its driver has set the
/// device up (virtio resets clear MSI-X queue vectors, so this comes last).
pub fn connect_irq(irq: IrqSource, handler: IrqHandler) -> Result<u8, IrqError> {
    let vector = irq::claim_vector(handler)?;
    match irq {
        IrqSource::Gsi { gsi, level, .. } => {
            if gsi < 16 {
                irq::route_isa_irq(gsi as u8, vector)?;
            } else {
                irq::route_gsi(gsi, vector, level, false)?;
            }
        }
        IrqSource::Msix(df) => {
            if !pci::enable_msix(df, 0, vector) {
                return Err(IrqError::NoRoute);
            }
            virtio_pci_queue_vectors(df, &|_| 0);
        }
    }
    Ok(vector)
}

/// How many virtio-net queue pairs, at most `wanted`, a device with this
/// interrupt source can signal separately: one per MSI-X entry (one entry
/// per pair); a pin interrupt (virtio-mmio) serves one pair.
pub fn queue_pairs_for(irq: IrqSource, wanted: usize) -> usize {
    match irq {
        IrqSource::Msix(df) => wanted.min(pci::msix_entries(df)).max(1),
        IrqSource::Gsi { .. } => 1,
    }
}

/// Connects the queue pairs of a multiqueue virtio-pci network device (see
/// `VirtioNet::new_multi`) to `handler`, after its driver has set it up:
/// pair `i` (receive queue `2i`, transmit queue `2i + 1`) signals MSI-X
/// entry `i`, whose message goes to the CPU with local APIC id
/// `cpu_apic_id(i)`, on a vector of its own; configuration changes and the
/// control queue signal nothing. Returns each pair's vector: the handler
/// tells the pairs apart by `TrapFrame::vector`.
pub fn connect_queue_irqs(
    df: DeviceFunction,
    pairs: usize,
    cpu_apic_id: impl Fn(usize) -> u32,
    handler: IrqHandler,
) -> Result<Vec<u8>, IrqError> {
    if pairs == 0 || pairs > pci::msix_entries(df) {
        return Err(IrqError::NoRoute);
    }
    let mut vectors = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let vector = irq::claim_vector(handler)?;
        if !pci::enable_msix_to(df, i as u16, vector, cpu_apic_id(i)) {
            return Err(IrqError::NoRoute);
        }
        vectors.push(vector);
    }
    let queues = 2 * pairs as u16;
    virtio_pci_queue_vectors(df, &|q| if q < queues { q / 2 } else { 0xffff });
    Ok(vectors)
}

/// Tells a virtio-pci device which MSI-X entry each queue signals
/// (`entry(queue)`, 0xffff: none), and configuration changes none, via its
/// common configuration.
fn virtio_pci_queue_vectors(df: DeviceFunction, entry: &dyn Fn(u16) -> u16) {
    use virtio_drivers::transport::pci::bus::ConfigurationAccess;
    let cam = pci::PortCam;
    let mut cap = match pci::find_capability(df, 0x09) {
        Some(c) => c,
        None => return,
    };
    // Walk the vendor capabilities for cfg_type 1 (common configuration).
    for _ in 0..16 {
        let hdr = cam.read_word(df, cap);
        if hdr as u8 == 0x09 && (hdr >> 24) as u8 == 1 {
            let bar = cam.read_word(df, cap + 4) as u8;
            let offset = cam.read_word(df, cap + 8) as u64;
            let Some(base) = pci::bar_address(df, bar) else {
                return;
            };
            let Ok(common) = Mmio::map(base + offset, 64) else {
                return;
            };
            // The virtio common configuration structure: msix_config @16,
            // num_queues @18, queue_select @22, queue_msix_vector @26 (u16).
            common.write16(16, 0xffff);
            for q in 0..common.read16(18) {
                common.write16(22, q);
                common.write16(26, entry(q));
            }
            return;
        }
        let next = ((hdr >> 8) & 0xfc) as u8;
        if next == 0 {
            return;
        }
        cap = next;
    }
}

/// A transport that hides `VIRTIO_F_RING_EVENT_IDX` (feature bit 29) from the
/// driver, so queues use the plain notification flags.
///
/// `virtio-drivers` 0.13 decides whether to notify an event-index device with
/// `avail_idx >= avail_event + 1`, a comparison that goes wrong once the
/// 16-bit ring index wraps (after 65,536 buffers): the device then never
/// hears about new buffers and the queue stalls for good. Without the event
/// index, the device's NO_NOTIFY flag decides, which has no such edge.
pub struct NoEventIdx<T: Transport>(pub T);

impl<T: Transport> Transport for NoEventIdx<T> {
    fn device_type(&self) -> DeviceType {
        self.0.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        self.0.read_device_features() & !(1 << 29)
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.0.write_driver_features(driver_features & !(1 << 29))
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.0.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        self.0.notify(queue)
    }
    fn get_status(&self) -> virtio_drivers::transport::DeviceStatus {
        self.0.get_status()
    }
    fn set_status(&mut self, status: virtio_drivers::transport::DeviceStatus) {
        self.0.set_status(status)
    }
    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.0.set_guest_page_size(guest_page_size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.0.requires_legacy_layout()
    }
    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: virtio_drivers::PhysAddr,
        driver_area: virtio_drivers::PhysAddr,
        device_area: virtio_drivers::PhysAddr,
    ) {
        self.0
            .queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.0.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.0.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> virtio_drivers::transport::InterruptStatus {
        self.0.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.0.read_config_generation()
    }
    fn read_config_space<V: zerocopy::FromBytes + zerocopy::IntoBytes>(
        &self,
        offset: usize,
    ) -> virtio_drivers::Result<V> {
        self.0.read_config_space(offset)
    }
    fn write_config_space<V: zerocopy::IntoBytes + zerocopy::Immutable>(
        &mut self,
        offset: usize,
        value: V,
    ) -> virtio_drivers::Result<()> {
        self.0.write_config_space(offset, value)
    }
}
