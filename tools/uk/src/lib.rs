//! Host CLI library: build unikernel images, boot them under QEMU, map exit
//! statuses, and parse the kernel's serial contract.
//!
//! The binary `uk` (`cargo uk ...`) is a thin wrapper over [`cli::main`]; the
//! QEMU test harness (`uk-tests`) reuses [`build_image`], [`VmConfig`] and
//! [`qemu_command`] so that tests boot exactly what `cargo uk run` boots.
// Clap takes its help text from doc comments, which show uk.toml tables
// (`[headers]`, `[[redirects]]`) and `[:PORT]`: not links.
#![allow(rustdoc::broken_intra_doc_links)]

pub mod acme;
pub mod bench;
pub mod bootdisk;
pub mod build;
pub mod cli;
pub mod comparebench;
pub mod elf;
pub mod fsbench;
pub mod httpbench;
pub mod image;
pub mod netbench;
pub mod netclient;
pub mod netns;
pub mod nginxvm;
pub mod pathsbench;
pub mod proc;
pub mod progress;
pub mod qemu;
pub mod serial;
pub mod siteconfig;
pub mod smpbench;
pub mod soakbench;
pub mod statedisk;
pub mod tls;
pub mod tlsbench;
pub mod tlsclient;
pub mod toolchain;
pub mod vms;
pub mod workspace;

use std::fmt;

pub use bootdisk::{Firmware, disk_boot_command, firecracker_style_command};
pub use build::{
    Flavor, Profile, build_command, build_command_flavor, build_image, build_image_flavor,
    image_path, image_path_flavor,
};
pub use image::{ImageFormat, TempImage, build_image_from_dir};
pub use qemu::{
    Accel, DiskBus, Exit, Machine, MemSize, NET_APPS, PortFwd, QEMU, VmConfig, ensure_qemu,
    kernel_cmdline, map_exit, qemu_available, qemu_command, render_command,
};
pub use serial::{
    MainMarker, SchedSample, parse_bench_sched, parse_kv, parse_main_marker, parse_memstats,
};
pub use workspace::{apps, default_app, root, target_dir};

/// An error of the CLI; [`Error::exit_code`] is the process status to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bad command line (unknown flag, bad value, unknown app): exit 2.
    Usage(String),
    /// Something failed while doing the work: exit 1.
    Failed(String),
    /// `qemu-system-x86_64` is not runnable and could not be installed: exit 1.
    QemuMissing,
}

/// The exact message printed when QEMU is missing.
pub const QEMU_MISSING: &str = "QEMU is missing: run 'sudo apt-get install -y qemu-system-x86'";

impl Error {
    /// The message without the `error: ` prefix (for nesting in another).
    pub fn message(&self) -> String {
        match self {
            Error::Usage(m) | Error::Failed(m) => m.clone(),
            Error::QemuMissing => QEMU_MISSING.to_string(),
        }
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Failed(_) | Error::QemuMissing => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "error: {m}\nRun 'cargo uk help' for usage."),
            Error::Failed(m) => write!(f, "error: {m}"),
            Error::QemuMissing => f.write_str(QEMU_MISSING),
        }
    }
}

impl std::error::Error for Error {}
