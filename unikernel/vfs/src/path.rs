//! Lexical path handling: normalization, splitting, limits.
//!
//! Paths in this crate are UTF-8 `str`s. A *normalized* path is absolute,
//! starts with exactly one `/`, has no empty, `.` or `..` components and no
//! trailing slash (except the root `/` itself). `..` is resolved lexically and
//! never climbs above `/`, as on Linux for `/..`.

use alloc::string::String;

use crate::error::{Result, VfsError};

/// Maximum length of a path in bytes, including the terminating NUL (Linux `PATH_MAX`).
pub const PATH_MAX: usize = 4096;
/// Maximum length of one path component in bytes (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Normalizes `path` relative to the root directory `/`.
///
/// See [`normalize_at`].
pub fn normalize(path: &str) -> Result<String> {
    normalize_at("/", path)
}

/// Normalizes `path`, resolving a relative path against `cwd`.
///
/// * `cwd` must be absolute (otherwise `EINVAL`); it is normalized too.
/// * An empty `path` is `ENOENT` (as `open("")` on Linux).
/// * A NUL byte anywhere is `EINVAL`.
/// * A `path` of `PATH_MAX` bytes or more, a component longer than
///   `NAME_MAX`, or a result of `PATH_MAX` bytes or more is `ENAMETOOLONG`.
/// * Repeated slashes and `.` are dropped; `..` removes the previous
///   component and is ignored at the root.
pub fn normalize_at(cwd: &str, path: &str) -> Result<String> {
    check_raw(path)?;
    if path.is_empty() {
        return Err(VfsError::ENOENT);
    }
    // Room for the longest result ('/', the components of both with their
    // separators): the pushes below never reallocate.
    let mut out = String::new();
    out.try_reserve_exact(cwd.len() + path.len() + 2)
        .map_err(|_| VfsError::ENOMEM)?;
    out.push('/');
    if !path.starts_with('/') {
        check_raw(cwd)?;
        if !cwd.starts_with('/') {
            return Err(VfsError::EINVAL);
        }
        push_components(&mut out, cwd)?;
    }
    push_components(&mut out, path)?;
    if out.len() >= PATH_MAX {
        return Err(VfsError::ENAMETOOLONG);
    }
    Ok(out)
}

fn check_raw(path: &str) -> Result<()> {
    if path.as_bytes().contains(&0) {
        return Err(VfsError::EINVAL);
    }
    if path.len() >= PATH_MAX {
        return Err(VfsError::ENAMETOOLONG);
    }
    Ok(())
}

/// Appends the components of `path` to the normalized prefix `out`.
fn push_components(out: &mut String, path: &str) -> Result<()> {
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => pop_component(out),
            name => {
                if name.len() > NAME_MAX {
                    return Err(VfsError::ENAMETOOLONG);
                }
                if !out.ends_with('/') {
                    out.push('/');
                }
                out.push_str(name);
            }
        }
    }
    Ok(())
}

fn pop_component(out: &mut String) {
    match out.rfind('/') {
        Some(0) | None => out.truncate(1),
        Some(i) => out.truncate(i),
    }
}

/// Checks that `name` is a valid single directory-entry name: non-empty, not
/// `.`/`..`, no `/` or NUL, at most `NAME_MAX` bytes.
pub fn validate_name(name: &str) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(VfsError::ENAMETOOLONG);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(VfsError::EINVAL);
    }
    Ok(())
}

/// Splits a normalized path into its parent directory and final component.
///
/// Returns `None` for the root `/`, which has no parent entry.
/// `split_parent("/a/b") == Some(("/a", "b"))`, `split_parent("/a") == Some(("/", "a"))`.
pub fn split_parent(path: &str) -> Option<(&str, &str)> {
    let i = path.rfind('/')?;
    let name = &path[i + 1..];
    if name.is_empty() {
        return None;
    }
    let parent = if i == 0 { "/" } else { &path[..i] };
    Some((parent, name))
}

/// Iterates over the components of a path, skipping empty ones.
pub fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> + Clone {
    path.split('/').filter(|c| !c.is_empty())
}

/// Whether `path` is `prefix` or lies below it, component-wise
/// (`/tmp/x` is below `/tmp`; `/tmpx` is not). Both must be normalized.
pub fn is_within(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Whether the caller-supplied path ends in a slash after a component, which
/// on Linux requires the final component to be a directory.
pub fn has_trailing_slash(path: &str) -> bool {
    path.len() > 1
        && path.trim_end_matches('/').len() < path.len()
        && !path.trim_end_matches('/').is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    fn n(p: &str) -> String {
        normalize(p).unwrap()
    }

    #[test]
    fn basic_normalization() {
        assert_eq!(n("/"), "/");
        assert_eq!(n("//"), "/");
        assert_eq!(n("///a//b///"), "/a/b");
        assert_eq!(n("/a/./b/."), "/a/b");
        assert_eq!(n("/a/b/../c"), "/a/c");
        assert_eq!(n("/a/b/../../.."), "/");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/./"), "/");
        assert_eq!(n("/a/.../b"), "/a/.../b");
        assert_eq!(n("/a/..b/c.."), "/a/..b/c..");
    }

    #[test]
    fn relative_paths_use_cwd() {
        assert_eq!(
            normalize_at("/home/user", "docs/x").unwrap(),
            "/home/user/docs/x"
        );
        assert_eq!(
            normalize_at("/home/user", "../other").unwrap(),
            "/home/other"
        );
        assert_eq!(normalize_at("/home/user", "../../../..").unwrap(), "/");
        assert_eq!(normalize_at("/home//user/./", ".").unwrap(), "/home/user");
        assert_eq!(normalize_at("/", "a").unwrap(), "/a");
        assert_eq!(normalize("a/b").unwrap(), "/a/b");
        // Absolute path ignores cwd, even an invalid one.
        assert_eq!(normalize_at("relative", "/x").unwrap(), "/x");
        assert_eq!(normalize_at("relative", "x"), Err(VfsError::EINVAL));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(normalize(""), Err(VfsError::ENOENT));
        assert_eq!(normalize("/a\0b"), Err(VfsError::EINVAL));
        assert_eq!(normalize_at("/a\0", "b"), Err(VfsError::EINVAL));
        let long_name = "x".repeat(NAME_MAX + 1);
        assert_eq!(
            normalize(&alloc::format!("/{long_name}")),
            Err(VfsError::ENAMETOOLONG)
        );
        let ok_name = "x".repeat(NAME_MAX);
        assert_eq!(n(&alloc::format!("/{ok_name}")).len(), NAME_MAX + 1);
        // A name too long is rejected even if `..` would remove it.
        assert_eq!(
            normalize(&alloc::format!("/{long_name}/..")),
            Err(VfsError::ENAMETOOLONG)
        );
    }

    #[test]
    fn path_max_limits() {
        let comp = "y".repeat(200);
        let mut p = String::new();
        while p.len() + 201 < PATH_MAX {
            p.push('/');
            p.push_str(&comp);
        }
        assert!(normalize(&p).is_ok());
        let too_long = "/".repeat(PATH_MAX);
        assert_eq!(normalize(&too_long), Err(VfsError::ENAMETOOLONG));
        let just_fits = "/".repeat(PATH_MAX - 1);
        assert_eq!(n(&just_fits), "/");
        // Relative path that only becomes too long after joining with cwd.
        let cwd: String = (0..15).map(|_| alloc::format!("/{comp}")).collect();
        let rel: String = (0..6).map(|_| alloc::format!("{comp}/")).collect();
        assert!(cwd.len() < PATH_MAX && rel.len() < PATH_MAX);
        assert_eq!(normalize_at(&cwd, &rel), Err(VfsError::ENAMETOOLONG));
    }

    #[test]
    fn helpers() {
        assert_eq!(split_parent("/a/b"), Some(("/a", "b")));
        assert_eq!(split_parent("/a"), Some(("/", "a")));
        assert_eq!(split_parent("/"), None);
        assert_eq!(components("/a//b/").collect::<Vec<_>>(), ["a", "b"]);
        assert!(is_within("/tmp/x", "/tmp"));
        assert!(is_within("/tmp", "/tmp"));
        assert!(!is_within("/tmpx", "/tmp"));
        assert!(is_within("/anything", "/"));
        assert!(has_trailing_slash("/a/"));
        assert!(has_trailing_slash("a//"));
        assert!(!has_trailing_slash("/"));
        assert!(!has_trailing_slash("//"));
        assert!(!has_trailing_slash("/a"));
        assert_eq!(validate_name("ok"), Ok(()));
        assert_eq!(validate_name(".."), Err(VfsError::EINVAL));
        assert_eq!(validate_name("a/b"), Err(VfsError::EINVAL));
        assert_eq!(validate_name(""), Err(VfsError::EINVAL));
        assert_eq!(validate_name(&"z".repeat(256)), Err(VfsError::ENAMETOOLONG));
        assert_eq!("/".to_string(), n("/."));
    }
}
