//! Building app images for `x86_64-unknown-none`.

use std::path::PathBuf;
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

/// The cargo binary: `$CARGO` (set when run by cargo) or `cargo`.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `cargo build --package APP --target x86_64-unknown-none --release`
/// (or `--profile dev`), run in the workspace root.
pub fn build_command(app: &str, profile: Profile) -> Command {
    let mut cmd = cargo();
    cmd.current_dir(root())
        .args(["build", "--package", app, "--target", TARGET]);
    match profile {
        Profile::Release => cmd.arg("--release"),
        Profile::Debug => cmd.args(["--profile", "dev"]),
    };
    cmd
}

/// Where the image of `app` lands.
pub fn image_path(app: &str, profile: Profile) -> PathBuf {
    target_dir().join(TARGET).join(profile.dir()).join(app)
}

/// Builds `app` and returns its image path.
///
/// With `capture` false, cargo's output goes to our stderr (for the CLI);
/// with `capture` true it is captured and returned in the error on failure
/// (for the test harness).
pub fn build_image(app: &str, profile: Profile, capture: bool) -> Result<PathBuf, Error> {
    check_app(app)?;
    crate::toolchain::ensure_target()?;
    let mut cmd = build_command(app, profile);
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
        let what = format!("building {app} for {TARGET} ({})", profile.dir());
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
    let image = image_path(app, profile);
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

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
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
