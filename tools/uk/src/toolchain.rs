//! Making sure the active Rust toolchain can build for the kernel target.
//!
//! rustup installs the targets and components a `rust-toolchain.toml` lists
//! only when it installs the toolchain itself: on a machine that already has
//! `stable`, nothing fetches `x86_64-unknown-none`, and the first kernel build
//! fails with "can't find crate for `core`". Every command that builds for the
//! kernel target calls [`ensure_target`] first; it runs
//! `rustup target add --toolchain NAME x86_64-unknown-none` when the target's
//! `lib/rustlib` folder is missing from the active toolchain's sysroot, or
//! stops with the exact command when rustup is not there to run it.
//!
//! The tool itself needs no `llvm-tools` (it never calls objcopy or strip:
//! images are ELF files as the linker writes them), so only the target is
//! checked.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::Error;
use crate::build::TARGET;
use crate::workspace::root;

/// The rustc binary cargo would use: `$RUSTC`, else `rustc` (the rustup
/// proxy, which honours `rust-toolchain.toml` in the workspace root).
fn rustc() -> Command {
    let mut c = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
    c.current_dir(root()).stdin(Stdio::null());
    c
}

/// The active toolchain's sysroot (`rustc --print sysroot`).
pub fn sysroot() -> Result<PathBuf, Error> {
    let out = rustc().args(["--print", "sysroot"]).output().map_err(|e| {
        Error::Failed(format!(
            "cannot run rustc ({e}): install Rust with rustup (https://rustup.rs)"
        ))
    })?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "rustc --print sysroot failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// Whether `sysroot` has the standard library for `target`.
pub fn has_target(sysroot: &Path, target: &str) -> bool {
    sysroot
        .join("lib/rustlib")
        .join(target)
        .join("lib")
        .is_dir()
}

/// The rustup toolchain name of a sysroot under `RUSTUP_HOME/toolchains/`
/// (`stable-x86_64-unknown-linux-gnu`); `None` for a rustc rustup did not
/// install.
pub fn toolchain_name(sysroot: &Path) -> Option<String> {
    let parent = sysroot.parent()?;
    (parent.file_name()? == "toolchains")
        .then(|| sysroot.file_name()?.to_str().map(str::to_string))
        .flatten()
}

/// The command that adds `target` to `toolchain`.
pub fn target_add_command(toolchain: Option<&str>, target: &str) -> Vec<String> {
    let mut v: Vec<String> = vec!["rustup".into(), "target".into(), "add".into()];
    if let Some(t) = toolchain {
        v.extend(["--toolchain".into(), t.to_string()]);
    }
    v.push(target.into());
    v
}

fn rustup_available() -> bool {
    crate::qemu::version_runs("rustup")
}

/// Makes sure the active toolchain has the `x86_64-unknown-none` target,
/// running `rustup target add` (with a line saying so) when it lacks it.
/// Checked once per process.
pub fn ensure_target() -> Result<(), Error> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    let sysroot = sysroot()?;
    if has_target(&sysroot, TARGET) {
        *done = true;
        return Ok(());
    }
    let toolchain = toolchain_name(&sysroot);
    let argv = target_add_command(toolchain.as_deref(), TARGET);
    let line = argv.join(" ");
    if !rustup_available() {
        return Err(Error::Failed(format!(
            "the {TARGET} target is not installed for the Rust toolchain at {} and rustup is \
             not available: install Rust with rustup (https://rustup.rs), then run '{}'",
            sysroot.display(),
            target_add_command(None, TARGET).join(" ")
        )));
    }
    eprintln!(
        "uk: the {TARGET} target is missing from toolchain {}: running '{line}'",
        toolchain.as_deref().unwrap_or("(active)")
    );
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status();
    let ok = status.as_ref().is_ok_and(|s| s.success());
    if !ok || !has_target(&sysroot, TARGET) {
        return Err(Error::Failed(format!(
            "'{line}' failed ({}); run it by hand and try again",
            match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            }
        )));
    }
    eprintln!("uk: installed the {TARGET} target");
    *done = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_names() {
        assert_eq!(
            toolchain_name(Path::new(
                "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu"
            ))
            .as_deref(),
            Some("stable-x86_64-unknown-linux-gnu")
        );
        assert_eq!(toolchain_name(Path::new("/usr")), None);
        assert_eq!(toolchain_name(Path::new("/")), None);
    }

    #[test]
    fn add_command() {
        assert_eq!(
            target_add_command(Some("stable-x86_64-unknown-linux-gnu"), TARGET).join(" "),
            "rustup target add --toolchain stable-x86_64-unknown-linux-gnu x86_64-unknown-none"
        );
        assert_eq!(
            target_add_command(None, TARGET).join(" "),
            "rustup target add x86_64-unknown-none"
        );
    }

    #[test]
    fn target_detection() {
        let tmp = std::env::temp_dir().join(format!("uk-sysroot-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("lib/rustlib/x86_64-unknown-linux-gnu/lib")).unwrap();
        assert!(has_target(&tmp, "x86_64-unknown-linux-gnu"));
        assert!(!has_target(&tmp, TARGET));
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn this_machine_has_a_sysroot() {
        assert!(sysroot().unwrap().is_dir());
    }
}
