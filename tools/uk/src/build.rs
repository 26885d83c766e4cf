//! Building app images for `x86_64-unknown-none`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;
use crate::workspace::{check_app, root, target_dir};

/// The bare-metal target every app image is built for.
pub const TARGET: &str = "x86_64-unknown-none";

/// Which cargo profile to build an image with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// `--release` (the default): `target/x86_64-unknown-none/release/APP`.
    #[default]
    Release,
    /// `--profile dev` (`--debug`): `target/x86_64-unknown-none/debug/APP`.
    Debug,
}

impl Profile {
    /// The directory name of the profile under the target directory.
    pub fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// Which image to build: the plain one, or the TLS flavour (the app's `tls`
/// feature: rustls with the `ring` provider, and the kernel's `simd` feature
/// that keeps vector state per thread for ring's assembly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Flavor {
    /// The default image.
    #[default]
    Plain,
    /// With TLS: built into `target/tls/` (its own target directory, so the
    /// two flavours never overwrite or invalidate each other).
    Tls,
    /// With the kernel's per-thread vector state only (the app's `simd`
    /// feature; `selftest simd` tests it): built into `target/simd/`.
    Simd,
    /// With the kernel's lock-order check (the app's `lockdep` feature; the
    /// SMP tests boot `selftest` so): built into `target/lockdep/`.
    Lockdep,
}

/// C flags for ring's C code (compiled by the host's `cc`/gcc for the
/// kernel): no red zone (interrupts arrive on the running stack), no stack
/// protector (there is no `%fs` canary in the kernel), freestanding.
pub const TLS_CFLAGS: &str = "-ffreestanding -fno-stack-protector -mno-red-zone";

/// The target directory of a flavour.
pub fn flavor_target_dir(flavor: Flavor) -> PathBuf {
    match flavor {
        Flavor::Plain => target_dir(),
        Flavor::Tls => target_dir().join("tls"),
        Flavor::Simd => target_dir().join("simd"),
        Flavor::Lockdep => target_dir().join("lockdep"),
    }
}

/// The cargo binary: `$CARGO` (set when run by cargo) or `cargo`.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `cargo build --package APP --target x86_64-unknown-none --release`
/// (or `--profile dev`), run in the workspace root.
pub fn build_command(app: &str, profile: Profile) -> Command {
    build_command_flavor(app, profile, Flavor::Plain)
}

/// [`build_command`] for a flavour. The TLS flavour adds `--features tls`,
/// its own target directory, the C flags for ring ([`TLS_CFLAGS`]) and
/// `tools/uk/ring-cfg-wrapper` as the rustc wrapper, which tells ring (only
/// ring) that SSE2 is there; see the script for why it is not
/// `-C target-feature`.
pub fn build_command_flavor(app: &str, profile: Profile, flavor: Flavor) -> Command {
    let mut cmd = cargo();
    if flavor != Flavor::Plain {
        cmd.env("CARGO_TARGET_DIR", flavor_target_dir(flavor));
    }
    if flavor == Flavor::Tls {
        cmd.env("RUSTC_WRAPPER", root().join("tools/uk/ring-cfg-wrapper"))
            .env("CFLAGS_x86_64_unknown_none", TLS_CFLAGS);
    }
    cmd.current_dir(root())
        .args(["build", "--package", app, "--target", TARGET]);
    match profile {
        Profile::Release => cmd.arg("--release"),
        Profile::Debug => cmd.args(["--profile", "dev"]),
    };
    if let Some(remaps) = registry_remaps(&cargo_home()) {
        cmd.args(["--config", &remaps]);
    }
    match flavor {
        Flavor::Plain => {}
        Flavor::Tls => {
            cmd.args(["--features", "tls"]);
        }
        Flavor::Simd => {
            cmd.args(["--features", "simd"]);
        }
        Flavor::Lockdep => {
            cmd.args(["--features", "lockdep"]);
        }
    }
    cmd
}

/// Cargo's home: `$CARGO_HOME`, else `~/.cargo`.
fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default()
}

/// A `--config` value that adds `--remap-path-prefix` for each registry
/// source directory under `cargo_home` (`.../registry/src/index.crates.io-
/// HASH`) to the kernel target's rustflags (Cargo appends it to those of
/// `.cargo/config.toml`): panic locations in dependencies then read
/// `crates/smoltcp-0.14.0/src/...` instead of the builder's absolute path,
/// which is about 60 bytes shorter per source file and does not name the
/// machine's directories (plain httpd: 1.5 KiB). Cargo's `trim-paths` would
/// do it but is not stable. `None` without a registry.
fn registry_remaps(cargo_home: &Path) -> Option<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(cargo_home.join("registry/src"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.path().to_str().map(str::to_owned))
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return None;
    }
    let quote = |s: &str| {
        let mut q = String::from("\"");
        for c in s.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    };
    let flags: Vec<String> = dirs
        .iter()
        .map(|d| quote(&format!("--remap-path-prefix={d}=crates")))
        .collect();
    Some(format!("target.{TARGET}.rustflags=[{}]", flags.join(", ")))
}

/// Where the image of `app` lands.
pub fn image_path(app: &str, profile: Profile) -> PathBuf {
    image_path_flavor(app, profile, Flavor::Plain)
}

/// Where the image of `app` in `flavor` lands.
pub fn image_path_flavor(app: &str, profile: Profile, flavor: Flavor) -> PathBuf {
    flavor_target_dir(flavor)
        .join(TARGET)
        .join(profile.dir())
        .join(app)
}

/// Whether a C compiler for ring's build is on `PATH` (`$CC`, `cc` or `gcc`).
pub fn have_c_compiler() -> bool {
    let candidates: Vec<std::ffi::OsString> = std::env::var_os("CC")
        .into_iter()
        .chain(["cc".into(), "gcc".into()])
        .collect();
    candidates.iter().any(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Builds `app` and returns its image path.
///
/// With `capture` false, cargo's output goes to our stderr (for the CLI);
/// with `capture` true it is captured and returned in the error on failure
/// (for the test harness).
pub fn build_image(app: &str, profile: Profile, capture: bool) -> Result<PathBuf, Error> {
    build_image_flavor(app, profile, Flavor::Plain, capture)
}

/// [`build_image`] for a flavour.
pub fn build_image_flavor(
    app: &str,
    profile: Profile,
    flavor: Flavor,
    capture: bool,
) -> Result<PathBuf, Error> {
    check_app(app)?;
    crate::toolchain::ensure_target()?;
    if flavor == Flavor::Tls && !have_c_compiler() {
        return Err(Error::Failed(
            "a TLS image needs a C compiler for ring's C code: install gcc \
             (Debian/Ubuntu: apt-get install gcc) or set CC"
                .into(),
        ));
    }
    let mut cmd = build_command_flavor(app, profile, flavor);
    cmd.stdin(Stdio::null());
    let (ok, out) = if capture {
        let out = cmd
            .output()
            .map_err(|e| Error::Failed(format!("cannot run cargo: {e}")))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    } else {
        // cargo's stdout (if any) goes to our stderr: stdout is for results.
        // On a terminal cargo draws its own progress bar; in logs a line
        // says what is built and how long it took.
        cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        let what = format!(
            "building {app}{} for {TARGET} ({})",
            match flavor {
                Flavor::Plain => "",
                Flavor::Tls => " with TLS",
                Flavor::Simd => " with vector state",
                Flavor::Lockdep => " with the lock-order check",
            },
            profile.dir()
        );
        let plain = !crate::progress::interactive();
        let start = std::time::Instant::now();
        if plain {
            eprintln!("uk: {what}");
        }
        let status = cmd
            .status()
            .map_err(|e| Error::Failed(format!("cannot run cargo: {e}")))?;
        if plain {
            eprintln!(
                "uk: {}",
                crate::progress::finish_line(&what, status.success(), start.elapsed())
            );
        }
        (status.success(), String::new())
    };
    if !ok {
        return Err(Error::Failed(format!(
            "building app '{app}' failed{}{out}",
            if out.is_empty() { "" } else { ":\n" }
        )));
    }
    let image = image_path_flavor(app, profile, flavor);
    if !image.is_file() {
        return Err(Error::Failed(format!(
            "cargo succeeded but the image {} does not exist",
            image.display()
        )));
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arguments less the `--config` of [`registry_remaps`] (its own
    /// test checks it; whether it is there depends on the machine).
    fn args(cmd: &Command) -> Vec<String> {
        let all: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut out = Vec::new();
        let mut it = all.into_iter();
        while let Some(a) = it.next() {
            if a == "--config" {
                let v = it.next().unwrap_or_default();
                assert!(v.contains("--remap-path-prefix="), "{v}");
                continue;
            }
            out.push(a);
        }
        out
    }

    #[test]
    fn release_build_command() {
        let cmd = build_command("hello", Profile::Release);
        assert_eq!(
            args(&cmd),
            [
                "build",
                "--package",
                "hello",
                "--target",
                "x86_64-unknown-none",
                "--release"
            ]
        );
        assert_eq!(cmd.get_current_dir(), Some(root()));
    }

    #[test]
    fn registry_sources_are_remapped_to_short_paths() {
        let home = std::env::temp_dir().join(format!("uk-remap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        assert_eq!(registry_remaps(&home), None);
        std::fs::create_dir_all(home.join("registry/src/index.crates.io-abc")).unwrap();
        std::fs::create_dir_all(home.join("registry/src/my \"odd\" reg")).unwrap();
        std::fs::write(home.join("registry/src/not-a-dir"), b"").unwrap();
        let src = home.join("registry/src");
        let v = registry_remaps(&home).unwrap();
        let d = src.display();
        assert_eq!(
            v,
            format!(
                "target.x86_64-unknown-none.rustflags=[\"--remap-path-prefix={d}/index.crates.io-abc=crates\", \"--remap-path-prefix={d}/my \\\"odd\\\" reg=crates\"]"
            )
        );
        std::fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn tls_build_command() {
        let cmd = build_command_flavor("httpd", Profile::Release, Flavor::Tls);
        assert_eq!(args(&cmd)[5..], ["--release", "--features", "tls"]);
        let env: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.map(|v| v.to_owned())))
            .collect();
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| v.clone())
        };
        assert_eq!(
            get("RUSTC_WRAPPER"),
            Some(root().join("tools/uk/ring-cfg-wrapper").into())
        );
        assert_eq!(
            get("CARGO_TARGET_DIR"),
            Some(target_dir().join("tls").into())
        );
        assert!(root().join("tools/uk/ring-cfg-wrapper").is_file());
        assert!(
            image_path_flavor("httpd", Profile::Release, Flavor::Tls)
                .starts_with(target_dir().join("tls"))
        );
    }

    #[test]
    fn simd_build_command() {
        let cmd = build_command_flavor("selftest", Profile::Release, Flavor::Simd);
        assert_eq!(args(&cmd)[5..], ["--release", "--features", "simd"]);
        assert!(cmd.get_envs().all(|(k, _)| k != "RUSTC_WRAPPER"));
        assert_eq!(
            image_path_flavor("selftest", Profile::Release, Flavor::Simd),
            target_dir().join("simd/x86_64-unknown-none/release/selftest")
        );
    }

    #[test]
    fn lockdep_build_command() {
        let cmd = build_command_flavor("selftest", Profile::Release, Flavor::Lockdep);
        assert_eq!(args(&cmd)[5..], ["--release", "--features", "lockdep"]);
        assert_eq!(
            image_path_flavor("selftest", Profile::Release, Flavor::Lockdep),
            target_dir().join("lockdep/x86_64-unknown-none/release/selftest")
        );
    }

    #[test]
    fn debug_build_command() {
        let cmd = build_command("selftest", Profile::Debug);
        assert_eq!(args(&cmd)[4..], ["x86_64-unknown-none", "--profile", "dev"]);
    }

    #[test]
    fn image_paths() {
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            assert_eq!(
                image_path("hello", Profile::Release),
                root().join("target/x86_64-unknown-none/release/hello")
            );
            assert_eq!(
                image_path("hello", Profile::Debug),
                root().join("target/x86_64-unknown-none/debug/hello")
            );
        }
    }

    #[test]
    fn unknown_app_fails_before_cargo() {
        let e = build_image("no-such-app", Profile::Release, true).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
