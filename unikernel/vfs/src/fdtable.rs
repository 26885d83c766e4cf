//! The file-descriptor table.

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::error::{Result, VfsError};
use crate::file::FileOps;

/// Default `RLIMIT_NOFILE`.
pub const DEFAULT_FD_LIMIT: usize = 1024;

struct Slot {
    file: Arc<dyn FileOps>,
    cloexec: bool,
}

/// A POSIX file-descriptor table: small integers mapping to shared open
/// file descriptions. New descriptors take the lowest free number.
///
/// The table itself is not locked; the kernel keeps it behind its own lock
/// and should clone the `Arc` out ([`FdTable::get`]) before doing I/O.
/// Removed descriptions are returned so the caller can drop them outside
/// that lock.
pub struct FdTable {
    slots: Vec<Option<Slot>>,
    limit: usize,
    open: usize,
    /// No free slot below this index.
    lowest_free: usize,
}

impl Default for FdTable {
    fn default() -> Self {
        Self::new(DEFAULT_FD_LIMIT)
    }
}

fn index(fd: i32) -> Result<usize> {
    usize::try_from(fd).map_err(|_| VfsError::EBADF)
}

impl FdTable {
    /// An empty table allowing descriptors `0 .. limit`.
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Vec::new(),
            limit: limit.min(i32::MAX as usize),
            open: 0,
            lowest_free: 0,
        }
    }

    /// The descriptor limit (`RLIMIT_NOFILE`).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Changes the limit; existing descriptors above it stay valid.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(i32::MAX as usize);
    }

    /// Number of open descriptors.
    pub fn len(&self) -> usize {
        self.open
    }

    /// Whether no descriptor is open.
    pub fn is_empty(&self) -> bool {
        self.open == 0
    }

    fn slot(&self, fd: i32) -> Result<&Slot> {
        self.slots
            .get(index(fd)?)
            .and_then(|s| s.as_ref())
            .ok_or(VfsError::EBADF)
    }

    /// Puts `slot` at `i`, returning what was there; `ENOMEM` when the table
    /// cannot grow.
    fn place(&mut self, i: usize, slot: Slot) -> Result<Option<Arc<dyn FileOps>>> {
        if self.slots.len() <= i {
            self.slots
                .try_reserve(i + 1 - self.slots.len())
                .map_err(|_| VfsError::ENOMEM)?;
            self.slots.resize_with(i + 1, || None);
        }
        let old = self.slots[i].replace(slot);
        if old.is_none() {
            self.open += 1;
        }
        if i == self.lowest_free {
            self.lowest_free = i + 1;
            while matches!(self.slots.get(self.lowest_free), Some(Some(_))) {
                self.lowest_free += 1;
            }
        }
        Ok(old.map(|s| s.file))
    }

    /// Installs `file` at the lowest free descriptor `>= min_fd`
    /// (`fcntl(F_DUPFD)`). `EMFILE` if none is below the limit, `EINVAL` if
    /// `min_fd` is out of range.
    pub fn insert_from(
        &mut self,
        min_fd: i32,
        file: Arc<dyn FileOps>,
        cloexec: bool,
    ) -> Result<i32> {
        let min = usize::try_from(min_fd).map_err(|_| VfsError::EINVAL)?;
        if min >= self.limit {
            return Err(VfsError::EINVAL);
        }
        let mut i = min.max(self.lowest_free);
        while matches!(self.slots.get(i), Some(Some(_))) {
            i += 1;
        }
        if i >= self.limit {
            return Err(VfsError::EMFILE);
        }
        self.place(i, Slot { file, cloexec })?;
        Ok(i as i32)
    }

    /// Installs `file` at the lowest free descriptor.
    pub fn insert(&mut self, file: Arc<dyn FileOps>) -> Result<i32> {
        self.insert_from(0, file, false).map_err(|e| match e {
            VfsError::EINVAL => VfsError::EMFILE,
            e => e,
        })
    }

    /// Installs `file` at the lowest free descriptor with the close-on-exec flag as given.
    pub fn insert_cloexec(&mut self, file: Arc<dyn FileOps>, cloexec: bool) -> Result<i32> {
        self.insert_from(0, file, cloexec).map_err(|e| match e {
            VfsError::EINVAL => VfsError::EMFILE,
            e => e,
        })
    }

    /// The open file description behind `fd`.
    pub fn get(&self, fd: i32) -> Result<Arc<dyn FileOps>> {
        Ok(self.slot(fd)?.file.clone())
    }

    /// Closes `fd`, returning its description (drop it outside any lock).
    pub fn close(&mut self, fd: i32) -> Result<Arc<dyn FileOps>> {
        let i = index(fd)?;
        let slot = self
            .slots
            .get_mut(i)
            .and_then(Option::take)
            .ok_or(VfsError::EBADF)?;
        self.open -= 1;
        self.lowest_free = self.lowest_free.min(i);
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        Ok(slot.file)
    }

    /// Duplicates `fd` onto the lowest free descriptor (close-on-exec clear).
    pub fn dup(&mut self, fd: i32) -> Result<i32> {
        let file = self.get(fd)?;
        self.insert(file)
    }

    /// Makes `new_fd` refer to `old_fd`'s description (close-on-exec
    /// clear), closing whatever `new_fd` was. `dup2(fd, fd)` only validates
    /// `fd`. `EBADF` if `old_fd` is not open or `new_fd` is outside
    /// `0 .. limit`. Returns `new_fd` and the replaced description, if any
    /// (drop it outside any lock).
    pub fn dup2(&mut self, old_fd: i32, new_fd: i32) -> Result<(i32, Option<Arc<dyn FileOps>>)> {
        if old_fd == new_fd {
            self.slot(old_fd)?;
            return Ok((new_fd, None));
        }
        self.dup_onto(old_fd, new_fd, false)
    }

    /// `dup3`: like [`FdTable::dup2`] with an explicit close-on-exec flag,
    /// but `EINVAL` when both descriptors are equal.
    pub fn dup3(
        &mut self,
        old_fd: i32,
        new_fd: i32,
        cloexec: bool,
    ) -> Result<(i32, Option<Arc<dyn FileOps>>)> {
        if old_fd == new_fd {
            self.slot(old_fd)?;
            return Err(VfsError::EINVAL);
        }
        self.dup_onto(old_fd, new_fd, cloexec)
    }

    fn dup_onto(
        &mut self,
        old_fd: i32,
        new_fd: i32,
        cloexec: bool,
    ) -> Result<(i32, Option<Arc<dyn FileOps>>)> {
        let file = self.get(old_fd)?;
        let new = usize::try_from(new_fd).map_err(|_| VfsError::EBADF)?;
        if new >= self.limit {
            return Err(VfsError::EBADF);
        }
        let old = self.place(new, Slot { file, cloexec })?;
        Ok((new_fd, old))
    }

    /// The close-on-exec flag of `fd`.
    pub fn cloexec(&self, fd: i32) -> Result<bool> {
        Ok(self.slot(fd)?.cloexec)
    }

    /// Sets the close-on-exec flag of `fd` (`fcntl(F_SETFD)`).
    pub fn set_cloexec(&mut self, fd: i32, cloexec: bool) -> Result<()> {
        let i = index(fd)?;
        let slot = self
            .slots
            .get_mut(i)
            .and_then(|s| s.as_mut())
            .ok_or(VfsError::EBADF)?;
        slot.cloexec = cloexec;
        Ok(())
    }

    /// The open descriptors in increasing order.
    pub fn fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as i32)
    }
}
