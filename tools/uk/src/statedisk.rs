//! `--state-disk FILE`: the guest's writable state disk (format:
//! `uk_core::statefs`, docs/ARCHITECTURE.md "State disk"). A missing file is
//! made here, [`DEFAULT_SIZE`] bytes, formatted; an existing one must carry
//! the `uk-state` header, else it is refused (it is never formatted over).
//! The guest never formats a disk either.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use uk_core::statefs::{self, Disk, SECTOR, StateFs};

use crate::Error;

/// Size of a new state disk: 1 MiB, two slots of 511.5 KiB.
pub const DEFAULT_SIZE: u64 = 1 << 20;

/// A state disk in a host file.
pub struct FileDisk {
    file: File,
    sectors: u64,
}

impl FileDisk {
    /// Opens `path` (read-write when `write`).
    pub fn open(path: &Path, write: bool) -> std::io::Result<FileDisk> {
        let file = OpenOptions::new().read(true).write(write).open(path)?;
        let sectors = file.metadata()?.len() / SECTOR as u64;
        Ok(FileDisk { file, sectors })
    }
}

impl Disk for FileDisk {
    fn sectors(&self) -> u64 {
        self.sectors
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), statefs::Error> {
        self.file
            .read_exact_at(buf, lba * SECTOR as u64)
            .map_err(|_| statefs::Error::Io)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), statefs::Error> {
        self.file
            .write_all_at(buf, lba * SECTOR as u64)
            .map_err(|_| statefs::Error::Io)
    }
    fn flush(&mut self) -> Result<(), statefs::Error> {
        self.file.sync_data().map_err(|_| statefs::Error::Io)
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Made and formatted a new disk of this many bytes.
    Created(u64),
    /// An existing state disk: its generation and files (`path`, size).
    Existing(u64, Vec<(String, usize)>),
}

/// Makes `path` a formatted state disk if it does not exist; checks an
/// existing one (refused, untouched, unless it is a state disk).
pub fn ensure(path: &Path) -> Result<Outcome, Error> {
    let shown = path.display();
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut f) => {
            let made = f
                .set_len(DEFAULT_SIZE)
                .and_then(|()| f.flush())
                .map_err(|e| Error::Failed(format!("{shown}: {e}")))
                .and_then(|()| {
                    let mut d = FileDisk::open(path, true)
                        .map_err(|e| Error::Failed(format!("{shown}: {e}")))?;
                    statefs::format(&mut d)
                        .map_err(|e| Error::Failed(format!("formatting {shown}: {e}")))
                });
            if let Err(e) = made {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
            Ok(Outcome::Created(DEFAULT_SIZE))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check(path),
        Err(e) => Err(Error::Failed(format!("--state-disk {shown}: {e}"))),
    }
}

/// Checks that `path` is a usable state disk (read only).
pub fn check(path: &Path) -> Result<Outcome, Error> {
    let shown = path.display();
    let refuse = |why: String| {
        Error::Usage(format!(
            "--state-disk {shown}: {why}; refusing to use it (a missing file is made as a new \
             state disk)"
        ))
    };
    let mut f = File::open(path).map_err(|e| Error::Failed(format!("{shown}: {e}")))?;
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(refuse("not a regular file".into()));
    }
    let mut s0 = [0u8; SECTOR];
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_exact(&mut s0))
        .map_err(|_| refuse("shorter than one sector, not a state disk".into()))?;
    if !statefs::is_state_disk(&s0) {
        return Err(refuse("not a state disk (no uk-state header)".into()));
    }
    let d = FileDisk::open(path, false).map_err(|e| Error::Failed(format!("{shown}: {e}")))?;
    let (fs, _) = StateFs::mount(d).map_err(|e| refuse(e.to_string()))?;
    let files = fs
        .files()
        .into_iter()
        .filter(|(p, _)| !p.ends_with('/'))
        .map(|(p, d)| (p, d.len()))
        .collect();
    Ok(Outcome::Existing(fs.generation(), files))
}

/// The contents of `file` (`"dir/name"`) on the state disk `path`.
pub fn read_file(path: &Path, file: &str) -> Result<Vec<u8>, Error> {
    let d = FileDisk::open(path, false)
        .map_err(|e| Error::Failed(format!("{}: {e}", path.display())))?;
    let (fs, _) =
        StateFs::mount(d).map_err(|e| Error::Failed(format!("{}: {e}", path.display())))?;
    let ino = fs
        .resolve(file)
        .map_err(|e| Error::Failed(format!("{}: {file}: {e}", path.display())))?;
    let size = fs.meta(ino).map(|m| m.size).unwrap_or(0) as usize;
    let mut buf = vec![0; size];
    fs.read(ino, 0, &mut buf)
        .map_err(|e| Error::Failed(format!("{}: {file}: {e}", path.display())))?;
    Ok(buf)
}

/// Writes `file` (`"dir/name"`, directories made as needed) on the state
/// disk `path`, replacing it whole (one record: crash safe as in the
/// guest).
pub fn write_file(path: &Path, file: &str, data: &[u8]) -> Result<(), Error> {
    let fail = |e: statefs::Error| Error::Failed(format!("{}: {file}: {e}", path.display()));
    let d = FileDisk::open(path, true)
        .map_err(|e| Error::Failed(format!("{}: {e}", path.display())))?;
    let (mut fs, _) = StateFs::mount(d).map_err(fail)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let parts: Vec<&str> = file.split('/').filter(|p| !p.is_empty()).collect();
    let (name, dirs) = parts.split_last().ok_or(fail(statefs::Error::BadName))?;
    let mut dir = statefs::ROOT;
    for p in dirs {
        dir = match fs.lookup(dir, p) {
            Ok(i) => i,
            Err(statefs::Error::NotFound) => fs.mkdir(dir, p, 0o700, now).map_err(fail)?,
            Err(e) => return Err(fail(e)),
        };
    }
    let ino = match fs.lookup(dir, name) {
        Ok(i) => {
            fs.truncate(i, 0, now).map_err(fail)?;
            i
        }
        Err(statefs::Error::NotFound) => fs.create(dir, name, 0o600, now).map_err(fail)?,
        Err(e) => return Err(fail(e)),
    };
    fs.write_at(ino, 0, data, now).map_err(fail)?;
    fs.sync().map_err(fail)
}

/// [`ensure`], saying what it did on stderr.
pub fn prepare(path: &Path) -> Result<(), Error> {
    match ensure(path)? {
        Outcome::Created(size) => eprintln!(
            "uk: made the state disk {} ({} KiB, empty)",
            path.display(),
            size / 1024
        ),
        Outcome::Existing(generation, files) => eprintln!(
            "uk: state disk {} (generation {generation}, {} file(s){})",
            path.display(),
            files.len(),
            if files.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    files
                        .iter()
                        .map(|(p, _)| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_checked_and_refused() {
        let dir = std::env::temp_dir().join(format!("uk-statedisk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("state.img");
        let _ = std::fs::remove_file(&p);
        assert_eq!(ensure(&p).unwrap(), Outcome::Created(DEFAULT_SIZE));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), DEFAULT_SIZE);
        assert_eq!(ensure(&p).unwrap(), Outcome::Existing(1, vec![]));
        // Written to (as the guest does), then checked again.
        let (mut fs, _) = StateFs::mount(FileDisk::open(&p, true).unwrap()).unwrap();
        let d = fs.mkdir(statefs::ROOT, "acme", 0o700, 0).unwrap();
        let f = fs.create(d, "k.pem", 0o600, 0).unwrap();
        fs.write_at(f, 0, b"key", 0).unwrap();
        drop(fs);
        assert_eq!(
            check(&p).unwrap(),
            Outcome::Existing(3, vec![("acme/k.pem".into(), 3)])
        );
        assert_eq!(read_file(&p, "acme/k.pem").unwrap(), b"key");
        write_file(&p, "acme/k.pem", b"other key").unwrap();
        write_file(&p, "new/dir/f", b"").unwrap();
        assert_eq!(read_file(&p, "acme/k.pem").unwrap(), b"other key");
        assert_eq!(read_file(&p, "new/dir/f").unwrap(), b"");
        assert!(read_file(&p, "acme/none").is_err());
        // Anything else is refused and left alone.
        let other = dir.join("other.img");
        std::fs::write(&other, vec![7u8; 4096]).unwrap();
        let e = ensure(&other).unwrap_err().message();
        assert!(e.contains("not a state disk"), "{e}");
        assert_eq!(std::fs::read(&other).unwrap(), vec![7u8; 4096]);
        std::fs::write(&other, vec![0u8; 4096]).unwrap();
        assert!(ensure(&other).is_err());
        assert_eq!(std::fs::read(&other).unwrap(), vec![0u8; 4096]);
        std::fs::write(&other, b"x").unwrap();
        assert!(ensure(&other).unwrap_err().message().contains("shorter"));
        // A damaged header.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&other, &bytes).unwrap();
        let e = ensure(&other).unwrap_err().message();
        assert!(e.contains("header"), "{e}");
        assert!(ensure(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
