//! Locating the workspace, its apps and its target directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::Error;

/// The workspace root (canonicalized), found from this crate's manifest dir.
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        p.canonicalize().unwrap_or(p)
    })
}

/// The cargo target directory: `$CARGO_TARGET_DIR` if set (relative paths are
/// taken relative to the workspace root), else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => root().join(d),
        _ => root().join("target"),
    }
}

/// The bootable apps: directories under `apps/` with a `Cargo.toml` and a
/// binary (`src/main.rs` or a `[[bin]]` section). Library crates that live
/// under `apps/` (such as `http-core`) are not apps. Sorted by name.
pub fn apps() -> Vec<String> {
    apps_in(&root().join("apps"))
}

fn apps_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut apps: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| is_app_dir(&e.path()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    apps.sort();
    apps
}

fn is_app_dir(dir: &Path) -> bool {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return false;
    }
    dir.join("src/main.rs").is_file()
        || std::fs::read_to_string(&manifest).is_ok_and(|m| m.contains("[[bin]]"))
}

/// Checks that `app` is one of [`apps`], with an error listing them if not.
pub fn check_app(app: &str) -> Result<(), Error> {
    let apps = apps();
    if apps.iter().any(|a| a == app) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "unknown app '{app}': expected a directory under {}/apps with a Cargo.toml and a binary; available apps: {}",
            root().display(),
            if apps.is_empty() {
                "(none)".to_string()
            } else {
                apps.join(", ")
            }
        )))
    }
}

/// The app `cargo uk run` boots when none is given: `httpd` once it exists,
/// else `hello`.
pub fn default_app() -> &'static str {
    default_app_in(&root().join("apps"))
}

/// The built-in demo site that `cargo uk run` serves with httpd when no
/// `--site` is given.
pub fn demo_site() -> PathBuf {
    root().join("apps/httpd/site")
}

fn default_app_in(apps_dir: &Path) -> &'static str {
    if apps_dir.join("httpd").join("Cargo.toml").is_file() {
        "httpd"
    } else {
        "hello"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_workspace() {
        let r = root();
        assert!(r.join("Cargo.toml").is_file());
        assert!(r.join("tools/uk/Cargo.toml").is_file());
        assert!(r.is_absolute());
    }

    #[test]
    fn apps_are_binaries_only() {
        let apps = apps();
        assert!(apps.iter().any(|a| a == "hello"), "{apps:?}");
        assert!(apps.iter().any(|a| a == "selftest"), "{apps:?}");
        assert!(!apps.iter().any(|a| a == "http-core"), "{apps:?}");
    }

    #[test]
    fn unknown_app_lists_apps() {
        let e = check_app("nope").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown app 'nope'"), "{msg}");
        assert!(msg.contains("hello"), "{msg}");
        assert_eq!(e.exit_code(), 2);
        assert!(check_app("hello").is_ok());
    }

    #[test]
    fn default_app_prefers_httpd() {
        let tmp = std::env::temp_dir().join(format!("uk-default-app-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        assert_eq!(default_app_in(&tmp), "hello");
        std::fs::create_dir_all(tmp.join("httpd")).unwrap();
        std::fs::write(tmp.join("httpd/Cargo.toml"), "[package]\n").unwrap();
        assert_eq!(default_app_in(&tmp), "httpd");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
