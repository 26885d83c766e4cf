//! Everything that touches the x86_64 machine directly. Most of the kernel's
//! `unsafe` lives below this module; each block carries a `// SAFETY:` comment.

pub mod apic;
pub mod boot;
pub mod context;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod mem;
pub mod paging;
pub mod rand;
pub mod serial;
pub mod simd;
pub mod smp;
pub mod upcall;
