//! Hardware-independent kernel logic for the unikernel.
//!
//! Everything in this crate is plain, `unsafe`-free bookkeeping that runs (and
//! is tested) on the host as well as inside the kernel:
//!
//! * [`cmdline`] parses the PVH kernel command line into kernel options,
//!   application arguments and a typed [`cmdline::KernelConfig`];
//! * [`frame`] is the physical frame allocator (a bitmap over 4 KiB frames)
//!   plus helpers over the firmware (e820) memory map;
//! * [`vma`] keeps track of the virtual memory areas behind `mmap`,
//!   `munmap` and `mprotect`, in fixed capacity and without a heap;
//! * [`stats`] is the memory statistics record the kernel prints;
//! * [`multiboot2`] reads the boot information GRUB passes on a disk boot;
//! * [`kbd`] recognizes Ctrl+Alt+Del in i8042 keyboard bytes;
//! * [`acpi`] reads the firmware's MADT, MCFG and FADT;
//! * [`partition`] reads and writes GPT/MBR partition tables (the root
//!   file system's partition on a bootable disk);
//! * [`reclaim`] is the allocators' out-of-memory policy: reclaim, retry,
//!   fail as an error, never recurse.
//!
//! * [`hashindex`] is the hash index of slot numbers behind the kernel's
//!   hash maps (one copy of the table's growth code for all of them).
//!
//! Only [`cmdline`], [`hashindex`], [`idmap`] and [`pairs`] need `alloc`; the other modules work
//! without a heap.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

#[cfg(test)]
extern crate std;

// Host tests make allocations fail on demand (`uk_failalloc::inject`).
#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: uk_failalloc::FailAlloc = uk_failalloc::FailAlloc;

pub mod acpi;
pub mod cmdline;
pub mod copy;
pub mod frame;
pub mod hashindex;
pub mod idmap;
pub mod kbd;
pub mod multiboot2;
pub mod pairs;
pub mod partition;
pub mod reclaim;
pub mod statefs;
pub mod stats;
pub mod time;
pub mod vma;
