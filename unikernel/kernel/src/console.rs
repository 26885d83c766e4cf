//! The serial console: `print!`/`println!` for apps and the `log` backend.

use core::fmt::{self, Write};

use crate::arch::serial::Serial;
use crate::sync::IrqMutex;

static CONSOLE: IrqMutex<Serial> = IrqMutex::new(Serial::com1());

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
