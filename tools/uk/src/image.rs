//! Disk images for the guest's root file system.
//!
//! `cargo uk image APP --site DIR -o OUT` and `cargo uk run APP --site DIR`
//! pack a folder into an ext4 image with `mkfs.ext4 -d` (no root needed, no
//! loop mount). The kernel mounts the first virtio-blk disk read-only at `/`
//! and puts a tmpfs on `/tmp`, so the image always gets an empty `tmp`
//! directory. [`ImageFormat`] leaves room for other formats later.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The on-disk format of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    /// ext4, built by `mkfs.ext4 -d`: the root disk alone.
    #[default]
    Ext4,
    /// The PVH ELF kernel at OUT and its ext4 root disk beside it
    /// (`OUT` with the extension `.ext4`): QEMU `-kernel`, Firecracker,
    /// cloud-hypervisor.
    Elf,
    /// A GPT disk that BIOS and UEFI firmware boot (GRUB, Multiboot2).
    Raw,
    /// The raw disk converted to qcow2.
    Qcow2,
    /// The raw disk as `disk.raw` in a `.tar.gz` for GCE.
    Gce,
}

impl ImageFormat {
    /// Every format, in the order the usage text lists them.
    pub const ALL: [ImageFormat; 5] = [
        ImageFormat::Ext4,
        ImageFormat::Elf,
        ImageFormat::Raw,
        ImageFormat::Qcow2,
        ImageFormat::Gce,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Ext4 => "ext4",
            ImageFormat::Elf => "elf",
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Gce => "gce",
        }
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ImageFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!("unknown image format '{s}' (known: ext4, elf, raw, qcow2, gce)")
            })
    }
}

/// Total size of the regular files under `dir` and the number of entries.
pub fn tree_size(dir: &Path) -> Result<(u64, u64), Error> {
    let mut bytes = 0;
    let mut entries = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd =
            std::fs::read_dir(&d).map_err(|e| Error::Failed(format!("{}: {e}", d.display())))?;
        for e in rd {
            let e = e.map_err(|e| Error::Failed(format!("{}: {e}", d.display())))?;
            let m = e
                .metadata()
                .map_err(|err| Error::Failed(format!("{}: {err}", e.path().display())))?;
            entries += 1;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                // Whole 4 KiB blocks per file.
                bytes += m.len().div_ceil(4096) * 4096;
            }
        }
    }
    Ok((bytes, entries))
}

/// Image size for `data` bytes in `entries` files: the data plus an eighth,
/// 4 KiB per entry for metadata, and 8 MiB for the file-system structures
/// (superblock copies, inode tables, journal), rounded up to a MiB.
pub fn image_size_for(data: u64, entries: u64) -> u64 {
    let raw = data + data / 8 + entries * 4096 + (8 << 20);
    raw.div_ceil(1 << 20) << 20
}

/// The `mkfs.ext4` command that packs `dir` into `out` of `size` bytes.
pub fn mkfs_command(dir: &Path, out: &Path, size: u64) -> Command {
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-F", "-q", "-L", "uk-root", "-d"])
        .arg(dir)
        .arg(out)
        .arg(format!("{}k", size / 1024));
    cmd
}

/// Builds an image of `format` from the folder `dir` at `out` and returns
/// its size. The image gets an empty `/tmp` (the tmpfs mount point) unless
/// `dir` has one.
pub fn build_image_from_dir(dir: &Path, out: &Path, format: ImageFormat) -> Result<u64, Error> {
    build_image_with(dir, out, format, &[])
}

/// The `debugfs` commands that put `files` (host file, absolute guest
/// path) into an image, creating their folders; an existing file at a
/// guest path is replaced.
pub fn debugfs_script(files: &[(PathBuf, String)]) -> String {
    let mut script = String::new();
    let mut made: Vec<String> = Vec::new();
    for (host, guest) in files {
        let mut at = String::new();
        let parts: Vec<&str> = guest.split('/').filter(|p| !p.is_empty()).collect();
        for dir in &parts[..parts.len().saturating_sub(1)] {
            at.push('/');
            at.push_str(dir);
            if !made.contains(&at) {
                script.push_str(&format!("mkdir {at}\n"));
                made.push(at.clone());
            }
        }
        script.push_str(&format!("rm {guest}\nwrite {} {guest}\n", host.display()));
    }
    script
}

/// [`build_image_from_dir`] plus `files` (host file, absolute guest path)
/// written into the image afterwards (the HTTPS certificate and key under
/// `/.uk/tls`), each read back and compared.
pub fn build_image_with(
    dir: &Path,
    out: &Path,
    format: ImageFormat,
    files: &[(PathBuf, String)],
) -> Result<u64, Error> {
    let size = build_image_files(dir, out, format)?;
    if files.is_empty() {
        return Ok(size);
    }
    for (host, guest) in files {
        let ok = guest.starts_with('/')
            && !guest.contains(char::is_whitespace)
            && !host.to_string_lossy().contains(char::is_whitespace);
        if !ok {
            return Err(Error::Failed(format!(
                "cannot add {} to the image as {guest} (no spaces in the paths)",
                host.display()
            )));
        }
    }
    let script = temp_path("debugfs").with_extension("txt");
    if let Some(p) = script.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::Failed(format!("{}: {e}", p.display())))?;
    }
    std::fs::write(&script, debugfs_script(files))
        .map_err(|e| Error::Failed(format!("{}: {e}", script.display())))?;
    let output = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(out)
        .output();
    let _ = std::fs::remove_file(&script);
    let output = output
        .map_err(|e| Error::Failed(format!("cannot run debugfs: {e} (install e2fsprogs)")))?;
    if !output.status.success() {
        return Err(Error::Failed(format!(
            "debugfs failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    // debugfs reports a failed command on stderr and still exits 0: read
    // each file back.
    for (host, guest) in files {
        let want =
            std::fs::read(host).map_err(|e| Error::Failed(format!("{}: {e}", host.display())))?;
        let got = Command::new("debugfs")
            .args(["-R", &format!("cat {guest}")])
            .arg(out)
            .output()
            .map_err(|e| Error::Failed(format!("cannot run debugfs: {e}")))?;
        if got.stdout != want {
            return Err(Error::Failed(format!(
                "{} did not arrive at {guest} in {}: {}",
                host.display(),
                out.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    Ok(size)
}

fn build_image_files(dir: &Path, out: &Path, format: ImageFormat) -> Result<u64, Error> {
    if format != ImageFormat::Ext4 {
        return Err(Error::Failed(format!(
            "format '{}' needs a kernel: use crate::bootdisk::build",
            format.name()
        )));
    }
    if !dir.is_dir() {
        return Err(Error::Failed(format!("{}: not a directory", dir.display())));
    }
    let (data, entries) = tree_size(dir)?;
    let size = image_size_for(data, entries);
    let _ = std::fs::remove_file(out);
    let output = mkfs_command(dir, out, size)
        .output()
        .map_err(|e| Error::Failed(format!("cannot run mkfs.ext4: {e} (install e2fsprogs)")))?;
    if !output.status.success() {
        return Err(Error::Failed(format!(
            "mkfs.ext4 failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    if dir.join(crate::siteconfig::FILE_NAME).is_file() {
        // The site's settings are httpd's arguments, not a page to serve.
        let output = Command::new("debugfs")
            .args(["-w", "-R", &format!("rm {}", crate::siteconfig::FILE_NAME)])
            .arg(out)
            .output()
            .map_err(|e| Error::Failed(format!("cannot run debugfs: {e} (install e2fsprogs)")))?;
        if !output.status.success() {
            return Err(Error::Failed(format!(
                "debugfs rm {} failed ({})",
                crate::siteconfig::FILE_NAME,
                output.status
            )));
        }
    }
    if !dir.join("tmp").exists() {
        // The tmpfs mount point, added inside the image (no copy of the site).
        let output = Command::new("debugfs")
            .args(["-w", "-R", "mkdir tmp"])
            .arg(out)
            .output()
            .map_err(|e| Error::Failed(format!("cannot run debugfs: {e} (install e2fsprogs)")))?;
        if !output.status.success() {
            return Err(Error::Failed(format!(
                "debugfs mkdir tmp failed ({})",
                output.status
            )));
        }
    }
    Ok(size)
}

/// A fresh path under the target directory's `uk-tmp` folder.
pub fn temp_path(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    crate::target_dir()
        .join("uk-tmp")
        .join(format!("{what}-{}-{n}", std::process::id()))
}

/// An image file deleted on drop (`cargo uk run --site`).
#[derive(Debug)]
pub struct TempImage {
    /// Where it is.
    pub path: PathBuf,
}

/// The process id in a [`temp_path`] name (`WHAT-PID-N[.ext]`).
pub fn temp_owner(file_name: &str) -> Option<i32> {
    let stem = file_name.split('.').next()?;
    let mut parts = stem.rsplitn(3, '-');
    let n = parts.next()?;
    let pid = parts.next()?;
    parts.next()?;
    n.parse::<u64>().ok()?;
    pid.parse().ok().filter(|&p| p > 0)
}

/// Removes the entries of `dir` (the `uk-tmp` folder) whose owning process
/// is gone: temporary images left behind by a CLI or test that was killed.
/// Returns how many it removed.
pub fn reclaim_stale(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(temp_owner) else {
            continue;
        };
        if crate::proc::alive(pid) {
            continue;
        }
        let p = e.path();
        let ok = if p.is_dir() {
            std::fs::remove_dir_all(&p).is_ok()
        } else {
            std::fs::remove_file(&p).is_ok()
        };
        n += usize::from(ok);
    }
    n
}

impl TempImage {
    /// Builds an ext4 image of `dir` in a temporary file, after reclaiming
    /// the temporary files of processes that are gone.
    pub fn from_dir(dir: &Path) -> Result<TempImage, Error> {
        TempImage::from_dir_with(dir, &[])
    }

    /// [`TempImage::from_dir`] with `files` added ([`build_image_with`]).
    pub fn from_dir_with(dir: &Path, files: &[(PathBuf, String)]) -> Result<TempImage, Error> {
        let path = temp_path("disk").with_extension("img");
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)
                .map_err(|e| Error::Failed(format!("{}: {e}", p.display())))?;
            reclaim_stale(p);
        }
        let img = TempImage { path };
        crate::progress::step(
            &format!("packing {} into an ext4 image", dir.display()),
            || build_image_with(dir, &img.path, ImageFormat::Ext4, files),
        )?;
        Ok(img)
    }

    /// An image holding `files` (`/name`, size) of deterministic
    /// pseudo-random bytes, file `i` from seed `seed + i` (the benchmarks'
    /// sites); `tag` names the temporary folder it is packed from.
    pub fn of_files(tag: &str, files: &[(&str, usize)], seed: u64) -> Result<TempImage, Error> {
        let site = temp_path(tag);
        std::fs::create_dir_all(&site)
            .map_err(|e| Error::Failed(format!("{}: {e}", site.display())))?;
        let written = files.iter().enumerate().try_for_each(|(i, (name, size))| {
            let path = site.join(name.trim_start_matches('/'));
            std::fs::write(&path, pseudo_random_bytes(seed + i as u64, *size))
                .map_err(|e| Error::Failed(format!("{}: {e}", path.display())))
        });
        let disk = written.and_then(|()| TempImage::from_dir(&site));
        let _ = std::fs::remove_dir_all(&site);
        disk
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `len` deterministic pseudo-random bytes (xorshift64* from `seed`), for
/// test and benchmark files.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_headroom() {
        assert_eq!(image_size_for(0, 0), 8 << 20);
        let s = image_size_for(16 << 20, 3);
        assert!(s >= (16 << 20) + (16 << 20) / 8 + (8 << 20));
        assert_eq!(s % (1 << 20), 0);
    }

    #[test]
    fn formats_parse() {
        assert_eq!("ext4".parse::<ImageFormat>(), Ok(ImageFormat::Ext4));
        for f in ImageFormat::ALL {
            assert_eq!(f.name().parse::<ImageFormat>(), Ok(f));
        }
        assert_eq!("gce".parse::<ImageFormat>(), Ok(ImageFormat::Gce));
        assert!("iso".parse::<ImageFormat>().is_err());
    }

    #[test]
    fn temp_owners() {
        assert_eq!(temp_owner("disk-1234-0.img"), Some(1234));
        assert_eq!(temp_owner("boot-hello-77-3.raw"), Some(77));
        assert_eq!(temp_owner("cloud-site-5-1"), Some(5));
        assert_eq!(temp_owner("disk.img"), None);
        assert_eq!(temp_owner("x-y-z"), None);
    }

    #[test]
    fn stale_temp_files_are_reclaimed() {
        let dir = std::env::temp_dir().join(format!("uk-reclaim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A pid that is gone: a child that has been reaped.
        let mut c = Command::new("true").spawn().unwrap();
        let dead = c.id();
        c.wait().unwrap();
        let me = std::process::id();
        std::fs::write(dir.join(format!("disk-{dead}-0.img")), b"x").unwrap();
        std::fs::create_dir_all(dir.join(format!("site-{dead}-1"))).unwrap();
        std::fs::write(dir.join(format!("disk-{me}-0.img")), b"x").unwrap();
        std::fs::write(dir.join("keep.txt"), b"x").unwrap();
        assert_eq!(reclaim_stale(&dir), 2);
        assert!(dir.join(format!("disk-{me}-0.img")).exists());
        assert!(dir.join("keep.txt").exists());
        assert!(!dir.join(format!("disk-{dead}-0.img")).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debugfs_scripts_make_folders_once() {
        let files = [
            (PathBuf::from("/h/c.pem"), "/.uk/tls/cert.pem".to_string()),
            (PathBuf::from("/h/k.pem"), "/.uk/tls/key.pem".to_string()),
        ];
        assert_eq!(
            debugfs_script(&files),
            "mkdir /.uk\nmkdir /.uk/tls\nrm /.uk/tls/cert.pem\nwrite /h/c.pem /.uk/tls/cert.pem\n\
             rm /.uk/tls/key.pem\nwrite /h/k.pem /.uk/tls/key.pem\n"
        );
        assert_eq!(debugfs_script(&[]), "");
    }

    #[test]
    fn files_are_added_to_images() {
        if !crate::qemu::in_path("mkfs.ext4") || !crate::qemu::in_path("debugfs") {
            return;
        }
        let dir = std::env::temp_dir().join(format!("uk-image-files-{}", std::process::id()));
        let site = dir.join("site");
        std::fs::create_dir_all(site.join(".uk")).unwrap();
        std::fs::write(site.join("index.html"), b"hi").unwrap();
        // An old file at the same place is replaced.
        std::fs::write(site.join(".uk/old"), b"x").unwrap();
        std::fs::write(dir.join("a.pem"), b"AAAA\n").unwrap();
        let img = dir.join("x.img");
        let files = [(dir.join("a.pem"), "/.uk/tls/cert.pem".to_string())];
        build_image_with(&site, &img, ImageFormat::Ext4, &files).unwrap();
        let out = Command::new("debugfs")
            .args(["-R", "cat /.uk/tls/cert.pem"])
            .arg(&img)
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"AAAA\n");
        // A host file that is not there fails the build.
        let files = [(dir.join("none.pem"), "/.uk/tls/cert.pem".to_string())];
        assert!(build_image_with(&site, &img, ImageFormat::Ext4, &files).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mkfs_arguments() {
        let cmd = mkfs_command(Path::new("/site"), Path::new("/o.img"), 12 << 20);
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-F", "-q", "-L", "uk-root", "-d", "/site", "/o.img", "12288k"
            ]
        );
    }
}
