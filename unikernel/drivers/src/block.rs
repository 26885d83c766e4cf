//! The block layer: one small trait ([`BlockDevice`]) that every disk
//! driver implements (virtio-blk, virtio-scsi, NVMe), and a registry of the
//! disks found at boot ([`disk`]), so the file system does not care which
//! driver serves its disk.
//!
//! Addresses are 512-byte sectors whatever the device's own block size;
//! buffers are whole sectors. A driver shares the caller's buffer with the
//! device in place when it is identity mapped and physically contiguous (a
//! page-cache frame), so page-cache fills are DMAed straight into the frame.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use uk_vfs::VfsError;

use crate::sync::IrqMutex;

/// The sector size of the block layer's addresses.
pub const SECTOR: usize = 512;

/// A disk, as the file system sees it.
pub trait BlockDevice: Send + Sync {
    /// The device's logical block size in bytes (512 for every disk the
    /// drivers accept today).
    fn block_size(&self) -> u64 {
        SECTOR as u64
    }

    /// Capacity in 512-byte sectors.
    fn capacity_blocks(&self) -> u64;

    /// Reads `buf.len()` bytes (a multiple of 512) from sector `lba`.
    /// Device errors are `EIO`.
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), VfsError>;

    /// Reads several `(sector, buffer)` requests, as many at once as the
    /// driver can keep in flight. The default reads them one by one.
    fn read_batch(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), VfsError> {
        for (lba, buf) in reqs.iter_mut() {
            self.read(*lba, buf)?;
        }
        Ok(())
    }

    /// Where the device was found and what drives it, for messages.
    fn location(&self) -> &str;

    /// Capacity in bytes.
    fn size(&self) -> u64 {
        self.capacity_blocks() * SECTOR as u64
    }

    /// Reads `buf.len()` bytes at byte `offset` (any alignment):
    /// sector-aligned parts go straight into `buf`, unaligned edges through
    /// a one-sector buffer.
    fn read_bytes(&self, offset: u64, buf: &mut [u8]) -> Result<(), VfsError> {
        let s = SECTOR as u64;
        let mut pos = offset;
        let mut done = 0;
        while done < buf.len() {
            let rest = buf.len() - done;
            let in_sector = (pos % s) as usize;
            if in_sector == 0 && rest >= SECTOR {
                let n = rest - rest % SECTOR;
                self.read(pos / s, &mut buf[done..done + n])?;
                done += n;
                pos += n as u64;
            } else {
                let mut tmp = [0u8; SECTOR];
                self.read(pos / s, &mut tmp)?;
                let n = (SECTOR - in_sector).min(rest);
                buf[done..done + n].copy_from_slice(&tmp[in_sector..in_sector + n]);
                done += n;
                pos += n as u64;
            }
        }
        Ok(())
    }
}

/// Checks a request against a device of `capacity` sectors: `EINVAL` for
/// an empty or partial-sector buffer, `EIO` past the end.
pub fn check_range(capacity: u64, lba: u64, len: usize) -> Result<(), VfsError> {
    if len == 0 || !len.is_multiple_of(SECTOR) {
        return Err(VfsError::EINVAL);
    }
    let n = (len / SECTOR) as u64;
    if lba.checked_add(n).is_none_or(|end| end > capacity) {
        return Err(VfsError::EIO);
    }
    Ok(())
}

static DISKS: IrqMutex<Vec<&'static dyn BlockDevice>> = IrqMutex::new(Vec::new());
static PROBED: AtomicBool = AtomicBool::new(false);

/// Adds a disk to the registry (drivers call this from their `init`).
pub fn register(disk: &'static dyn BlockDevice) {
    DISKS.lock().push(disk);
}

/// Initialises every block driver once: virtio-blk, virtio-scsi, NVMe, in
/// that order (the registry keeps that order).
pub fn init() {
    if PROBED.swap(true, Ordering::AcqRel) {
        return;
    }
    super::virtio_blk::init();
    super::virtio_scsi::init();
    super::nvme::init();
}

/// Disk number `n` of every driver (in registration order), after [`init`].
pub fn disk(n: usize) -> Option<&'static dyn BlockDevice> {
    DISKS.lock().get(n).copied()
}

/// Number of disks.
pub fn count() -> usize {
    DISKS.lock().len()
}
