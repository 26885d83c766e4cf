//! The kernel services' part of the boot: after the framework has brought the
//! machine up (`uk_frame::entry::kernel_start`: console, boot information, CPU
//! tables, memory, clocks, interrupt controllers), it calls the application's
//! `__uk_app_start` (made by [`crate::main!`]), which lands in [`start`]:
//!
//! 1. device discovery and drivers;
//! 2. power-button and shutdown sources;
//! 3. the scheduler starts: `main` runs as the first thread on a demand-paged
//!    1 MiB stack with a guard page, the boot context becomes the idle loop;
//! 4. in that thread: console input, the network, the file system, then the
//!    application's `main`;
//! 5. when `main` returns, the VM exits with its status.

use uk_frame::arch::{boot, cpu};
use uk_frame::entry::{MAIN_STACK_SIZE, config};
use uk_frame::sync::Once;
use uk_frame::{mm, time};

/// The application's `main` (through `Termination`), set once by [`start`].
static APP_MAIN: Once<fn() -> i32> = Once::new();

/// Starts the kernel services and runs `main` as the first thread.
pub fn start(main: fn() -> i32) -> ! {
    let _ = APP_MAIN.set(main);
    crate::drivers::init();
    time::stage("drivers");
    crate::power::init();
    time::stage("power");
    let timeslice = config().timeslice_ms;
    crate::sched::start(run_main, MAIN_STACK_SIZE, timeslice)
}

fn run_main() {
    crate::console::init_input(crate::net::debug_line);
    crate::net::init();
    time::stage("net");
    crate::fs::init();
    time::stage("fs");
    log::debug!("boot stages (us since entry): {}", time::stages());
    let cycles = cpu::rdtsc().saturating_sub(boot::entry_tsc());
    match time::cycles_to_us(cycles) {
        Some(us) => crate::println!("uk: main after {cycles} tsc cycles ({us} us)"),
        None => crate::println!("uk: main after {cycles} tsc cycles (? us)"),
    }
    if config().mem_report {
        crate::println!("memstats: {}", mm::stats());
    }
    let status = APP_MAIN.get().map_or(0, |main| main());
    if config().mem_report {
        crate::println!("memstats: {}", mm::stats());
    }
    exit(status)
}

/// Ends the VM with `status` (0..=127 arrive intact at the host).
pub fn exit(status: i32) -> ! {
    uk_frame::entry::exit(status)
}
