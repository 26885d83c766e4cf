//! Puts the kernel's linker script where the final link of every app finds it
//! (`-Tkernel.ld` in .cargo/config.toml, searched in the link-search path).
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("kernel.ld", out.join("kernel.ld")).expect("copy kernel.ld");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=kernel.ld");
}
