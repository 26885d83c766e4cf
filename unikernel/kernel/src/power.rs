//! Shutdown requests from the machine: the ACPI power button (what a cloud's
//! "stop" and QEMU's `system_powerdown` press) and Ctrl+Alt+Del on the i8042
//! keyboard controller (Firecracker's `SendCtrlAltDel`).
//!
//! Sources, found at boot by `init`:
//! - **Fixed-feature power button** (QEMU q35/ICH9, PC firmware): the FADT
//!   gives SCI_INT, the PM1a event block (status, then enable) and control
//!   block, SMI_CMD and ACPI_ENABLE. If SCI_EN is clear the chipset is put
//!   into ACPI mode (ACPI_ENABLE written to SMI_CMD, SCI_EN polled for a
//!   bounded time), every other PM1 event and every GPE is masked and
//!   pending status cleared, PWRBTN_EN is set and the SCI is routed as the MADT's
//!   interrupt source override says (level-triggered; on QEMU active-high).
//!   The handler reads PM1 status and clears PWRBTN_STS by writing 1 to it,
//!   which also lowers the level-triggered SCI.
//! - **Generic Event Device** (QEMU microvm with its default `acpi=on`, a
//!   hardware-reduced platform): one edge-triggered, active-high interrupt
//!   and a 32-bit event selector (ESEL) in MMIO whose bit 1 is the power-down
//!   event; reading ESEL returns the pending events and clears them. The
//!   address and interrupt are in the DSDT's `ACPI0013` device (AML), which
//!   the kernel does not interpret: it uses QEMU's microvm constants (ESEL at
//!   0xfea00000, GSI 9) and only when the FADT is hardware-reduced and puts
//!   its sleep control register at 0xfea00200, where QEMU's microvm has it.
//! - **i8042 keyboard** (Firecracker, PCs): IRQ 1; the handler drains port
//!   0x60 and feeds the bytes to [`uk_core::kbd::CtrlAltDel`].
//!
//! The handlers only record the request and wake a wait queue. Apps ask
//! [`shutdown_requested`] or get a descriptor from [`shutdown_eventfd`] that
//! becomes readable on the request (a kernel thread, started by the first
//! call, writes to those eventfds from thread context).

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, Ordering};

use uk_core::acpi::{self, Fadt, RegAddr};
use uk_core::kbd::CtrlAltDel;
use uk_frame::mmio::Mmio;
use uk_vfs::FileOps;

use crate::arch::idt::TrapFrame;
use crate::fs::Errno;
use crate::io::{self, EventFd};
use crate::sync::{IrqMutex, WaitQueue};

/// What asked for the shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The ACPI power button (fixed feature or Generic Event Device).
    PowerButton,
    /// Ctrl+Alt+Del on the i8042 keyboard.
    CtrlAltDel,
    /// [`request_shutdown`] was called.
    Software,
}

impl Source {
    /// A short description for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Source::PowerButton => "ACPI power button",
            Source::CtrlAltDel => "Ctrl-Alt-Del",
            Source::Software => "software request",
        }
    }

    fn code(self) -> u8 {
        match self {
            Source::PowerButton => 1,
            Source::CtrlAltDel => 2,
            Source::Software => 3,
        }
    }
}

/// Which request sources were set up at boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// The fixed-feature power button through the SCI.
    pub acpi_button: bool,
    /// The power-down event of microvm's Generic Event Device.
    pub ged: bool,
    /// Ctrl+Alt+Del on the i8042.
    pub i8042: bool,
}

static SOURCE: AtomicU8 = AtomicU8::new(0);
static WAITERS: WaitQueue = WaitQueue::new();
static SETUP: IrqMutex<Sources> = IrqMutex::new(Sources {
    acpi_button: false,
    ged: false,
    i8042: false,
});
/// PM1a event block port (status; enable at +2).
static PM1_EVT: AtomicU16 = AtomicU16::new(0);
/// Physical (identity-mapped) address of the GED event selector.
static GED_ESEL: IrqMutex<Option<Mmio>> = IrqMutex::new(None);
static KBD: IrqMutex<CtrlAltDel> = IrqMutex::new(CtrlAltDel::new());
/// Eventfds to signal; `None` once they have been signalled.
static EVENTFDS: IrqMutex<Option<Vec<Weak<EventFd>>>> = IrqMutex::new(Some(Vec::new()));
static NOTIFIER: AtomicBool = AtomicBool::new(false);

/// QEMU microvm: the GED's event selector (`GED_MMIO_BASE`).
const MICROVM_GED_ESEL: u64 = 0xfea0_0000;
/// QEMU microvm: the GED's sleep control register (`GED_MMIO_BASE_REGS`),
/// which the FADT names; used to recognize the machine.
const MICROVM_GED_SLEEP_CTL: u64 = 0xfea0_0200;
/// QEMU microvm: the GED's interrupt (`GED_MMIO_IRQ`).
const MICROVM_GED_GSI: u32 = 9;
/// GED event selector bit of the power-down event (`ACPI_GED_PWR_DOWN_EVT`).
const GED_PWR_DOWN: u32 = 1 << 1;

const I8042_DATA: u16 = 0x60;
const I8042_STATUS: u16 = 0x64;
const I8042_OBF: u8 = 1;
const I8042_IBF: u8 = 1 << 1;
const I8042_AUX: u8 = 1 << 5;
/// Controller configuration byte: keyboard interrupt enabled.
const I8042_CTR_KBDINT: u8 = 1;

// The i8042 and the ACPI PM registers the FADT names, through the
// framework's checked port access.
use uk_frame::port::{read8 as inb, read16 as inw, write8 as outb, write16 as outw};

/// Records a shutdown request (the first source wins) and wakes the waiters.
/// Safe in interrupt handlers.
fn record(source: Source) {
    let first = SOURCE
        .compare_exchange(0, source.code(), Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    if first {
        WAITERS.wake_all();
    }
}

/// True once a shutdown was requested.
pub fn shutdown_requested() -> bool {
    SOURCE.load(Ordering::Acquire) != 0
}

/// What requested the shutdown, if anything did.
pub fn shutdown_source() -> Option<Source> {
    match SOURCE.load(Ordering::Acquire) {
        1 => Some(Source::PowerButton),
        2 => Some(Source::CtrlAltDel),
        3 => Some(Source::Software),
        _ => None,
    }
}

/// Requests a shutdown as the power button would.
pub fn request_shutdown() {
    record(Source::Software);
}

/// Which sources were found at boot.
pub fn sources() -> Sources {
    *SETUP.lock()
}

/// Blocks the calling thread until a shutdown is requested.
pub fn wait_shutdown() -> Source {
    WAITERS.wait_until(shutdown_source)
}

/// A non-blocking eventfd that becomes readable (counter 1) when a shutdown
/// is requested; already readable if one was. Watch it with epoll.
pub fn shutdown_eventfd() -> io::Result<i32> {
    let fd = io::eventfd(0, io::O_NONBLOCK)?;
    let ops = crate::fs::file_ops(fd)?;
    let any: Arc<dyn core::any::Any + Send + Sync> = ops;
    let Ok(efd) = any.downcast::<EventFd>() else {
        let _ = crate::fs::close(fd);
        return Err(Errno::EINVAL);
    };
    let delivered = {
        let mut list = EVENTFDS.lock();
        match list.as_mut() {
            Some(l) => {
                l.retain(|w| w.strong_count() > 0);
                l.push(Arc::downgrade(&efd));
                false
            }
            None => true,
        }
    };
    if delivered {
        let _ = efd.write(&1u64.to_ne_bytes());
    } else if !NOTIFIER.swap(true, Ordering::AcqRel) {
        // The thread that turns the request into eventfd writes.
        let spawned = crate::sched::spawn_with(
            crate::sched::DEFAULT_STACK,
            crate::sched::ThreadPriority::High,
            || {
                wait_shutdown();
                let list = EVENTFDS.lock().take().unwrap_or_default();
                for e in list.iter().filter_map(Weak::upgrade) {
                    let _ = e.write(&1u64.to_ne_bytes());
                }
            },
        );
        if let Err(e) = spawned {
            NOTIFIER.store(false, Ordering::Release);
            let _ = crate::fs::close(fd);
            log::error!("power: cannot start the shutdown notifier: {e:?}");
            return Err(Errno::ENOMEM);
        }
    }
    Ok(fd)
}

// ---------------------------------------------------------------------------
// Boot-time setup

/// Finds and enables the shutdown request sources. Called once at boot,
/// after `irq::init`.
pub(crate) fn init() {
    let platform = crate::irq::platform();
    let mut found = Sources::default();
    if let Some(fadt) = platform.fadt {
        if fadt.has_fixed_power_button() {
            found.acpi_button = init_fixed_button(&fadt, &platform);
        } else if fadt.hw_reduced
            && fadt.sleep_control == Some(RegAddr::Memory(MICROVM_GED_SLEEP_CTL))
        {
            found.ged = init_microvm_ged();
        } else {
            log::debug!("power: no power button this kernel can use");
        }
    }
    found.i8042 = init_i8042();
    log::debug!("power: shutdown sources {found:?}");
    *SETUP.lock() = found;
}

fn init_fixed_button(fadt: &Fadt, platform: &acpi::PlatformInfo) -> bool {
    let (sts, en, cnt) = (fadt.pm1a_evt, fadt.pm1a_evt.wrapping_add(2), fadt.pm1a_cnt);
    if cnt != 0 && inw(cnt) & acpi::PM1_SCI_EN == 0 {
        if fadt.smi_cmd == 0 || fadt.acpi_enable == 0 {
            log::warn!("power: chipset not in ACPI mode and no way to switch it");
            return false;
        }
        let Ok(port) = u16::try_from(fadt.smi_cmd) else {
            return false;
        };
        outb(port, fadt.acpi_enable);
        // The spec allows the firmware its time; QEMU switches at once.
        let deadline = crate::time::since_boot_ns() + 300_000_000;
        while inw(cnt) & acpi::PM1_SCI_EN == 0 {
            if crate::time::since_boot_ns() >= deadline {
                log::warn!("power: SCI_EN did not come on after ACPI_ENABLE");
                return false;
            }
            core::hint::spin_loop();
        }
    }
    // Only the power button may raise the level-triggered SCI: an enabled
    // event nobody clears would keep it asserted. Mask every general-purpose
    // event (the enable half of GPE0) and every other PM1 event, and clear
    // whatever is pending (status bits are write-1-to-clear).
    if fadt.gpe0_blk != 0 {
        let half = u16::from(fadt.gpe0_len / 2);
        for i in 0..half {
            outb(fadt.gpe0_blk.wrapping_add(half + i), 0);
            outb(fadt.gpe0_blk.wrapping_add(i), 0xff);
        }
    }
    outw(en, 0);
    outw(sts, acpi::PM1_STS_ALL_FIXED);
    let Ok(vector) = crate::irq::claim_vector(sci_handler) else {
        log::warn!("power: no vector for the SCI");
        return false;
    };
    PM1_EVT.store(sts, Ordering::Release);
    let routed = if fadt.sci_int < 16 {
        crate::irq::route_isa_irq(fadt.sci_int as u8, vector)
    } else {
        // ACPI's default for the SCI: level-triggered, active-low.
        crate::irq::route_gsi(u32::from(fadt.sci_int), vector, true, true)
    };
    if routed.is_err() {
        log::warn!("power: cannot route the SCI (interrupt {})", fadt.sci_int);
        return false;
    }
    outw(en, acpi::PM1_PWRBTN);
    log::debug!(
        "power: ACPI power button on SCI {} (PM1a at {:#x}, {:?})",
        fadt.sci_int,
        sts,
        platform.isa_irq(fadt.sci_int.min(255) as u8)
    );
    true
}

fn sci_handler(_frame: &mut TrapFrame) {
    let sts = PM1_EVT.load(Ordering::Acquire);
    if sts == 0 {
        return;
    }
    if inw(sts) & acpi::PM1_PWRBTN != 0 {
        // Write-1-to-clear; this also lowers the level-triggered SCI.
        outw(sts, acpi::PM1_PWRBTN);
        record(Source::PowerButton);
    }
}

fn init_microvm_ged() -> bool {
    let Ok(window) = Mmio::map(MICROVM_GED_ESEL, 4096) else {
        log::warn!("power: cannot map the Generic Event Device");
        return false;
    };
    *GED_ESEL.lock() = Some(window);
    // Drop anything pending from before.
    let _ = read_esel();
    let Ok(vector) = crate::irq::claim_vector(ged_handler) else {
        return false;
    };
    // The DSDT's _CRS: Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive).
    if crate::irq::route_gsi(MICROVM_GED_GSI, vector, false, false).is_err() {
        log::warn!("power: cannot route the Generic Event Device's GSI");
        return false;
    }
    log::debug!(
        "power: microvm Generic Event Device at {MICROVM_GED_ESEL:#x}, GSI {MICROVM_GED_GSI}"
    );
    true
}

fn read_esel() -> u32 {
    // The event selector: a 32-bit read (the only access size the device
    // accepts) that clears the pending events.
    GED_ESEL.lock().as_ref().map_or(0, |w| w.read32(0))
}

fn ged_handler(_frame: &mut TrapFrame) {
    if read_esel() & GED_PWR_DOWN != 0 {
        record(Source::PowerButton);
    }
}

/// Waits (bounded) until `status & mask == want`; false on timeout.
fn i8042_wait(mask: u8, want: u8) -> bool {
    for _ in 0..20_000 {
        if inb(I8042_STATUS) & mask == want {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

fn init_i8042() -> bool {
    if inb(I8042_STATUS) == 0xff {
        // Nothing decodes the port (QEMU microvm has no i8042).
        return false;
    }
    // Drain stale bytes.
    for _ in 0..32 {
        if inb(I8042_STATUS) & I8042_OBF == 0 {
            break;
        }
        let _ = inb(I8042_DATA);
    }
    // The keyboard interrupt must be on in the configuration byte (it is
    // after firmware and in Firecracker; set it if not).
    if i8042_wait(I8042_IBF, 0) {
        outb(I8042_STATUS, 0x20);
        if i8042_wait(I8042_OBF, I8042_OBF) {
            let ctr = inb(I8042_DATA);
            if ctr & I8042_CTR_KBDINT == 0 && i8042_wait(I8042_IBF, 0) {
                outb(I8042_STATUS, 0x60);
                if i8042_wait(I8042_IBF, 0) {
                    outb(I8042_DATA, ctr | I8042_CTR_KBDINT);
                }
            }
        }
    }
    let Ok(vector) = crate::irq::claim_vector(kbd_handler) else {
        return false;
    };
    if crate::irq::route_isa_irq(1, vector).is_err() {
        log::warn!("power: cannot route the keyboard interrupt");
        return false;
    }
    true
}

fn kbd_handler(_frame: &mut TrapFrame) {
    let mut kbd = KBD.lock();
    for _ in 0..16 {
        let st = inb(I8042_STATUS);
        if st == 0xff || st & I8042_OBF == 0 {
            break;
        }
        let b = inb(I8042_DATA);
        if st & I8042_AUX == 0 && kbd.feed(b) {
            record(Source::CtrlAltDel);
        }
    }
}
