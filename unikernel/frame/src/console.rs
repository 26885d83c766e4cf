//! The serial console: `print!`/`println!` for apps and the `log` backend.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::serial::Serial;
use crate::sync::IrqMutex;

static CONSOLE: IrqMutex<Serial> =
    IrqMutex::with_level(crate::sync::level::CONSOLE, Serial::com1());

struct Writer<'a>(&'a Serial);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Initialises the UART.
pub fn init() {
    CONSOLE.lock().init();
}

/// The byte that asks for a diagnostic dump on the console: Ctrl-\\ (FS,
/// 0x1c), as Linux's magic SysRq over a serial line. The dump (scheduler,
/// network, memory) is printed by a thread of its own, so it shows a guest
/// that stopped answering on the network but still takes interrupts.
pub const DUMP_KEY: u8 = 0x1c;

static DUMP_REQUESTS: AtomicU64 = AtomicU64::new(0);
/// The application's line of the dump ([`set_app_dump_line`]).
static APP_LINE: crate::sync::Once<fn() -> alloc::string::String> = crate::sync::Once::new();

/// Adds a line made by `f` to the diagnostic dump (`uk: dump: app: ...`):
/// the application's own counters (httpd's requests per CPU). Once; a
/// second call is ignored.
pub fn set_app_dump_line(f: fn() -> alloc::string::String) {
    let _ = APP_LINE.set(f);
}
static DUMP_WQ: crate::sync::WaitQueue = crate::sync::WaitQueue::new();

fn on_serial_irq(_frame: &mut crate::arch::idt::TrapFrame) {
    let mut dump = false;
    {
        let c = CONSOLE.lock();
        // Bounded: a UART that keeps saying "data ready" cannot hold us here.
        for _ in 0..64 {
            match c.read_byte() {
                Some(DUMP_KEY) => dump = true,
                Some(_) => {}
                None => break,
            }
        }
    }
    if dump {
        DUMP_REQUESTS.fetch_add(1, Ordering::AcqRel);
        DUMP_WQ.wake_one();
    }
}

/// Turns on console input (IRQ 4) for the diagnostic dump ([`DUMP_KEY`]).
/// Call once interrupts and the scheduler are up.
/// `net_line` is the network's line of the dump (the kernel services pass it:
/// the framework does not know the network).
pub fn init_input(net_line: fn() -> alloc::string::String) {
    let Ok(v) = crate::irq::claim_vector(on_serial_irq) else {
        return;
    };
    if crate::irq::route_isa_irq(4, v).is_err() {
        return;
    }
    CONSOLE.lock().enable_rx_interrupt();
    let _ = crate::sched::spawn_with(16 * 1024, crate::sched::ThreadPriority::High, move || {
        let mut seen = 0;
        loop {
            DUMP_WQ.wait_until(|| {
                let n = DUMP_REQUESTS.load(Ordering::Acquire);
                (n != seen).then_some(n)
            });
            seen = DUMP_REQUESTS.load(Ordering::Acquire);
            crate::println!("uk: dump: sched: {}", crate::sched::debug_line());
            crate::println!("uk: dump: net: {}", net_line());
            crate::println!("uk: dump: mem: {}", crate::mm::stats());
            if let Some(f) = APP_LINE.get() {
                crate::println!("uk: dump: app: {}", f());
            }
        }
    });
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let guard = CONSOLE.lock();
    let _ = Writer(&guard).write_fmt(args);
}

/// Writes to the console without waiting for its lock: for fatal reports,
/// which may happen while the lock is held by the code that faulted.
pub fn emergency(f: impl FnOnce(&mut dyn Write)) {
    let serial = Serial::com1();
    f(&mut Writer(&serial));
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let us = crate::time::since_boot_us();
            _print(format_args!(
                "[{:>4}.{:06}] {:<5} {}: {}\n",
                us / 1_000_000,
                us % 1_000_000,
                r.level(),
                r.target(),
                r.args()
            ));
        }
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`.
pub fn init_log(level: uk_core::cmdline::LogLevel) {
    use uk_core::cmdline::LogLevel as L;
    let f = match level {
        L::Error => log::LevelFilter::Error,
        L::Warn => log::LevelFilter::Warn,
        L::Info => log::LevelFilter::Info,
        L::Debug => log::LevelFilter::Debug,
        L::Trace => log::LevelFilter::Trace,
    };
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(f);
}
