//! The unikernel an application links with.
//!
//! An app is an ordinary `#![no_std] #![no_main]` binary crate that depends on
//! this crate and names its entry point with [`main!`]:
//!
//! ```ignore
//! #![no_std]
#![forbid(unsafe_code)]
//! #![no_main]
//! unikernel::main!(main);
//! fn main() {
//!     unikernel::println!("hello");
//! }
//! ```
//!
//! There is no user/kernel boundary: the kernel APIs (`mem`, `env`,
//! [`process`]) are plain function calls. The hardware-independent logic lives
//! in `uk-core` and is tested on the host.
//!
//! This crate holds the kernel services (file system, network, descriptors and
//! epoll, power policy, the application's entry) and may not use `unsafe`: the
//! machine is reached through the framework (`uk-frame`, re-exported here as
//! [`arch`], [`mm`], [`sched`], [`sync`], [`time`], ...) and the devices
//! through the drivers (`uk-drivers`, re-exported as [`drivers`]).
#![no_std]

extern crate alloc;

pub use uk_drivers as drivers;
#[doc(hidden)]
pub use uk_frame as __frame;
pub use uk_frame::{arch, console, irq, mm, print, println, sched, sync, time, trap};

#[doc(hidden)]
pub mod entry;
pub mod fs;
pub mod io;
pub mod net;
pub mod power;

pub use uk_core::stats::MemStats;

/// What `main` may return: `()`, an exit status, or a `Result`.
pub trait Termination {
    /// The VM's exit status.
    fn report(self) -> i32;
}

impl Termination for () {
    fn report(self) -> i32 {
        0
    }
}

impl Termination for i32 {
    fn report(self) -> i32 {
        self
    }
}

impl<E: core::fmt::Debug> Termination for Result<(), E> {
    fn report(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                println!("Error: {e:?}");
                1
            }
        }
    }
}

/// Declares the application's entry point: `unikernel::main!(main);`.
#[macro_export]
macro_rules! main {
    ($f:path) => {
        $crate::__frame::app_entry!($crate::entry::start(|| {
            $crate::Termination::report($f())
        }));
    };
}

/// The application's environment.
pub mod env {
    use alloc::string::String;

    /// The arguments after `--` on the kernel command line.
    pub fn args() -> &'static [String] {
        uk_frame::entry::args()
    }

    /// The kernel options in effect.
    pub fn config() -> &'static uk_core::cmdline::KernelConfig {
        uk_frame::entry::config()
    }
}

/// Threads: spawn, join, sleep, yield.
pub mod thread {
    pub use crate::sched::{
        DEFAULT_STACK, JoinHandle, Placement, SpawnError, ThreadPriority as Priority, cpu_count,
        cpu_index, cpu_runs, current, sleep, spawn, spawn_on, spawn_with, yield_now,
    };

    /// Ends the calling thread with `code`. Its `JoinHandle::join_result`
    /// returns `Err(code)` (there is no result value).
    pub fn exit(code: i32) -> ! {
        crate::sched::exit_current(code)
    }
}

/// Ending the VM.
pub mod process {
    /// Ends the VM with `status`, as returning it from `main` would.
    pub fn exit(status: i32) -> ! {
        crate::entry::exit(status)
    }
}

/// Memory for applications: anonymous mappings and statistics.
pub mod mem {
    pub use uk_core::vma::{Prot, VmError as MemError};
    pub use uk_frame::{reserve_misses, try_arc};

    /// Maps `len` bytes of zeroed anonymous memory, filled on first touch.
    pub fn mmap(len: usize, prot: Prot) -> Result<*mut u8, MemError> {
        crate::mm::mmap(len as u64, prot).map(|a| a as *mut u8)
    }

    /// Unmaps a range; the frames behind it go back to the allocator.
    pub fn munmap(addr: *mut u8, len: usize) -> Result<(), MemError> {
        crate::mm::munmap(addr as u64, len as u64)
    }

    /// Changes the protection of a mapped range.
    pub fn mprotect(addr: *mut u8, len: usize, prot: Prot) -> Result<(), MemError> {
        crate::mm::mprotect(addr as u64, len as u64, prot)
    }

    /// The current memory statistics.
    pub fn stats() -> crate::MemStats {
        crate::mm::stats()
    }
}
