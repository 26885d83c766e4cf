//! Shared helpers: temporary directories, `mkfs.ext4 -d` images, a file
//! reader, deterministic bytes.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use uk_ext4::{BlockRead, IoError};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("uk-ext4-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `mkfs.ext4 -F -q -d dir -b block_size [extra] img size` (Debian 12
/// defaults otherwise: 64bit, extents, flex_bg, metadata_csum, dir_index...).
pub fn mkfs(dir: &Path, img: &Path, block_size: u32, size: &str, extra: &[&str]) {
    let out = Command::new("mkfs.ext4")
        .args(["-F", "-q", "-b", &block_size.to_string()])
        .args(extra)
        .arg("-d")
        .arg(dir)
        .arg(img)
        .arg(size)
        .output()
        .expect("run mkfs.ext4 (install e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.ext4 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deterministic pseudo-random bytes (never a whole zero block).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8 | 1
        })
        .collect()
}

/// A disk image file read with `pread`.
pub struct ImageFile(pub File);

impl BlockRead for ImageFile {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.0.read_exact_at(buf, off).map_err(|_| IoError)
    }

    fn size(&self) -> u64 {
        self.0.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

pub type Fs<R> = uk_ext4::Ext4<R, uk_vfs::StdLocking>;

/// `e2fsck -fyD`: checks the image and rebuilds its directories as hashed
/// trees (`mkfs.ext4 -d` writes linear ones). Panics if the check fails.
pub fn index_dirs(img: &Path) {
    let out = Command::new("e2fsck")
        .args(["-f", "-y", "-D"])
        .arg(img)
        .output()
        .expect("run e2fsck");
    // 0: clean, 1: errors corrected (the directory optimisation counts).
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "e2fsck failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
