//! The state disk: a small writable file system on a second disk, for what a
//! server must keep across boots (httpd's ACME account key and
//! certificates), with crash-safe updates.
//!
//! # On-disk format (version 1, 512-byte sectors, little-endian)
//!
//! * Sector 0, the header: `b"uk-state"` (8 bytes), version `u32` (1),
//!   flags `u32` (0), the disk's size in sectors at format time `u64`,
//!   sectors per slot `u64`, CRC-32 (IEEE) of bytes 0..32 `u32`; the rest
//!   of the sector is zero. Written once, by [`format`].
//! * Two slots of `slot_sectors` sectors each, from sector 1. Each holds at
//!   most one *record*: the whole file tree at one generation. A record is a
//!   32-byte head, `b"uk-slot1"` (8), CRC-32 `u32` of every byte after it
//!   (head bytes 12..32 and the payload), payload length `u32`, generation
//!   `u64`, 8 zero bytes; then the payload: an entry count `u32`, then per
//!   entry (parents before children) the parent's entry number `u32` (0:
//!   the root, n: the n-th entry), kind `u8` (1 directory, 2 file),
//!   permissions `u16`, modification time `i64` (Unix seconds), name length
//!   `u8`, the name (UTF-8, no `/`), data length `u32`, the data.
//!
//! # Crash safety
//!
//! A change never overwrites the current record: the new tree is written
//! whole, as the next generation, into the *other* slot, then the device's
//! write cache is flushed. At mount the valid record (magic, length in
//! bounds, CRC, a well-formed payload) with the highest generation wins. A
//! power cut in the middle of a write leaves a record whose CRC fails (torn
//! at any sector, or inside one), so the previous generation, intact in the
//! other slot, is the state: every change is all or nothing. [`format`]
//! writes an empty generation-1 record, so a disk on which no slot holds a
//! valid record is damaged ([`Error::Corrupt`]), never taken for empty.
//!
//! Changes that only leave a file empty (creating it, truncating it to 0)
//! are kept in memory and written with the next change, so that the usual
//! `open(O_CREAT | O_TRUNC)` + `write` replaces a file in one record: after
//! a crash the file holds its old contents or the new ones, never nothing.
//! A change that does not fit (the new tree is larger than a slot) fails
//! with [`Error::NoSpace`] and changes nothing, in memory or on the disk.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::partition::crc32;

/// Sector size in bytes.
pub const SECTOR: usize = 512;
/// The header's magic (sector 0, bytes 0..8).
pub const MAGIC: &[u8; 8] = b"uk-state";
/// The format version this code reads and writes.
pub const VERSION: u32 = 1;
/// A record's magic.
const SLOT_MAGIC: &[u8; 8] = b"uk-slot1";
/// A record's head.
const HEAD: usize = 32;
/// Smallest state disk: the header and two slots of two sectors.
pub const MIN_SECTORS: u64 = 5;
/// Longest name.
pub const MAX_NAME: usize = 255;
/// Most entries (files and directories).
pub const MAX_ENTRIES: usize = 4096;
/// The root directory's inode number.
pub const ROOT: u64 = 1;

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The device failed (or, in tests, the power went).
    Io,
    /// Sector 0 does not start with [`MAGIC`]: not a state disk.
    NotStateDisk,
    /// The header's CRC or fields are wrong.
    BadHeader,
    /// A format version this code does not know.
    Version(u32),
    /// The disk is smaller than [`MIN_SECTORS`] or than its header says.
    TooSmall,
    /// Neither slot holds a valid record.
    Corrupt,
    /// The new tree does not fit in a slot (or too many entries).
    NoSpace,
    /// No such entry.
    NotFound,
    /// The name exists.
    Exists,
    /// Not a directory.
    NotDir,
    /// A directory.
    IsDir,
    /// The directory is not empty.
    NotEmpty,
    /// An empty name, `.`, `..`, one with `/` or NUL, or too long.
    BadName,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Io => f.write_str("I/O error"),
            Error::NotStateDisk => f.write_str("not a state disk (no uk-state header)"),
            Error::BadHeader => f.write_str("damaged state-disk header"),
            Error::Version(v) => write!(
                f,
                "state-disk format version {v} (this kernel reads {VERSION})"
            ),
            Error::TooSmall => f.write_str("the disk is smaller than its header says"),
            Error::Corrupt => f.write_str("no valid record in either slot"),
            Error::NoSpace => f.write_str("the state disk is full"),
            Error::NotFound => f.write_str("not found"),
            Error::Exists => f.write_str("exists"),
            Error::NotDir => f.write_str("not a directory"),
            Error::IsDir => f.write_str("is a directory"),
            Error::NotEmpty => f.write_str("directory not empty"),
            Error::BadName => f.write_str("bad name"),
        }
    }
}

/// The device under the file system.
pub trait Disk {
    /// Size in sectors.
    fn sectors(&self) -> u64;
    /// Reads `buf.len()` bytes (whole sectors) from sector `lba`.
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Error>;
    /// Writes `buf` (whole sectors) at sector `lba`.
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Error>;
    /// Makes the writes done so far durable.
    fn flush(&mut self) -> Result<(), Error>;
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The disk's size in sectors at format time.
    pub sectors: u64,
    /// Sectors per slot.
    pub slot_sectors: u64,
}

impl Header {
    /// The header for a disk of `sectors` sectors: two equal slots after
    /// sector 0. `TooSmall` under [`MIN_SECTORS`].
    pub fn for_disk(sectors: u64) -> Result<Header, Error> {
        if sectors < MIN_SECTORS {
            return Err(Error::TooSmall);
        }
        // A slot holds at most 4 GiB of record (the length is a u32).
        let slot_sectors = ((sectors - 1) / 2).min((u32::MAX as u64) / SECTOR as u64);
        Ok(Header {
            sectors,
            slot_sectors,
        })
    }

    /// Sector 0.
    pub fn to_bytes(&self) -> [u8; SECTOR] {
        let mut s = [0u8; SECTOR];
        s[..8].copy_from_slice(MAGIC);
        s[8..12].copy_from_slice(&VERSION.to_le_bytes());
        s[16..24].copy_from_slice(&self.sectors.to_le_bytes());
        s[24..32].copy_from_slice(&self.slot_sectors.to_le_bytes());
        let crc = crc32(&s[..32]);
        s[32..36].copy_from_slice(&crc.to_le_bytes());
        s
    }

    /// Parses sector 0 of a disk of `disk_sectors` sectors.
    pub fn parse(s: &[u8], disk_sectors: u64) -> Result<Header, Error> {
        if s.len() < SECTOR || &s[..8] != MAGIC {
            return Err(Error::NotStateDisk);
        }
        if crc32(&s[..32]) != u32_at(s, 32) {
            return Err(Error::BadHeader);
        }
        let version = u32_at(s, 8);
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let h = Header {
            sectors: u64_at(s, 16),
            slot_sectors: u64_at(s, 24),
        };
        if u32_at(s, 12) != 0
            || h.slot_sectors < 2
            || h.slot_sectors > (u32::MAX as u64) / SECTOR as u64
            || h.slot_sectors.checked_mul(2).and_then(|n| n.checked_add(1)) > Some(h.sectors)
        {
            return Err(Error::BadHeader);
        }
        if h.sectors > disk_sectors {
            return Err(Error::TooSmall);
        }
        Ok(h)
    }

    fn slot_lba(&self, slot: usize) -> u64 {
        1 + slot as u64 * self.slot_sectors
    }

    /// Largest payload a slot holds.
    pub fn capacity(&self) -> usize {
        self.slot_sectors as usize * SECTOR - HEAD
    }
}

/// Whether sector 0 (`s`) starts with the state-disk magic.
pub fn is_state_disk(s: &[u8]) -> bool {
    s.len() >= 8 && &s[..8] == MAGIC
}

/// Formats `disk` as an empty state disk (header last, so a crash leaves no
/// header). The caller checks that the disk holds nothing else.
pub fn format<D: Disk>(disk: &mut D) -> Result<Header, Error> {
    let h = Header::for_disk(disk.sectors())?;
    disk.write(h.slot_lba(1), &[0u8; SECTOR])?;
    let rec = record(&encode_tree(&empty_tree()), 1);
    disk.write(h.slot_lba(0), &rec)?;
    disk.flush()?;
    disk.write(0, &h.to_bytes())?;
    disk.flush()?;
    Ok(h)
}

/// A record: head and payload, padded to whole sectors.
fn record(payload: &[u8], generation: u64) -> Vec<u8> {
    let mut r = vec![0u8; (HEAD + payload.len()).div_ceil(SECTOR) * SECTOR];
    r[..8].copy_from_slice(SLOT_MAGIC);
    r[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    r[16..24].copy_from_slice(&generation.to_le_bytes());
    r[HEAD..HEAD + payload.len()].copy_from_slice(payload);
    let crc = crc32(&r[12..HEAD + payload.len()]);
    r[8..12].copy_from_slice(&crc.to_le_bytes());
    r
}

/// What a slot holds.
enum Slot {
    /// All zero head: never written.
    Blank,
    /// Something that is not a valid record (torn, damaged).
    Damaged,
    /// A valid record: generation and tree.
    Valid(u64, Tree),
}

fn read_slot<D: Disk>(disk: &mut D, h: &Header, slot: usize) -> Result<Slot, Error> {
    let lba = h.slot_lba(slot);
    let mut first = [0u8; SECTOR];
    disk.read(lba, &mut first)?;
    if first.iter().all(|&b| b == 0) {
        return Ok(Slot::Blank);
    }
    if &first[..8] != SLOT_MAGIC {
        return Ok(Slot::Damaged);
    }
    let len = u32_at(&first, 12) as usize;
    if len > h.capacity() {
        return Ok(Slot::Damaged);
    }
    let mut r = vec![0u8; (HEAD + len).div_ceil(SECTOR) * SECTOR];
    r[..SECTOR].copy_from_slice(&first);
    if r.len() > SECTOR {
        disk.read(lba + 1, &mut r[SECTOR..])?;
    }
    if crc32(&r[12..HEAD + len]) != u32_at(&r, 8) {
        return Ok(Slot::Damaged);
    }
    match decode_tree(&r[HEAD..HEAD + len]) {
        Some(t) => Ok(Slot::Valid(u64_at(&r, 16), t)),
        None => Ok(Slot::Damaged),
    }
}

// ---------------------------------------------------------------------------
// The tree

/// The kind of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    parent: u64,
    name: String,
    kind: Kind,
    perm: u16,
    mtime: i64,
    data: Vec<u8>,
    children: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Tree {
    nodes: BTreeMap<u64, Node>,
    next_ino: u64,
}

fn empty_tree() -> Tree {
    let mut nodes = BTreeMap::new();
    nodes.insert(
        ROOT,
        Node {
            parent: ROOT,
            name: String::new(),
            kind: Kind::Dir,
            perm: 0o755,
            mtime: 0,
            data: Vec::new(),
            children: BTreeMap::new(),
        },
    );
    Tree {
        nodes,
        next_ino: ROOT + 1,
    }
}

/// Entries of `tree` in depth-first order (parents first), each with its
/// parent's entry number (0 = root).
fn walk(tree: &Tree, out: &mut Vec<(u32, u64)>, dir: u64, dir_no: u32) {
    let Some(n) = tree.nodes.get(&dir) else {
        return;
    };
    for &child in n.children.values() {
        out.push((dir_no, child));
        let no = out.len() as u32;
        walk(tree, out, child, no);
    }
}

fn encode_tree(tree: &Tree) -> Vec<u8> {
    let mut order = Vec::new();
    walk(tree, &mut order, ROOT, 0);
    let mut p = Vec::new();
    p.extend_from_slice(&(order.len() as u32).to_le_bytes());
    for (parent, ino) in order {
        let n = &tree.nodes[&ino];
        p.extend_from_slice(&parent.to_le_bytes());
        p.push(match n.kind {
            Kind::Dir => 1,
            Kind::File => 2,
        });
        p.extend_from_slice(&n.perm.to_le_bytes());
        p.extend_from_slice(&n.mtime.to_le_bytes());
        p.push(n.name.len() as u8);
        p.extend_from_slice(n.name.as_bytes());
        p.extend_from_slice(&(n.data.len() as u32).to_le_bytes());
        p.extend_from_slice(&n.data);
    }
    p
}

/// Reads a payload; `None` if it is not well formed.
fn decode_tree(p: &[u8]) -> Option<Tree> {
    struct Rd<'a>(&'a [u8]);
    impl<'a> Rd<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Some(a)
        }
        fn u32(&mut self) -> Option<u32> {
            self.take(4).map(|b| u32_at(b, 0))
        }
    }
    let mut r = Rd(p);
    let count = r.u32()? as usize;
    if count > MAX_ENTRIES {
        return None;
    }
    let mut tree = empty_tree();
    // Entry number -> inode (entry 0 is the root).
    let mut inos = vec![ROOT];
    for _ in 0..count {
        let parent_no = r.u32()? as usize;
        let kind = match r.take(1)?[0] {
            1 => Kind::Dir,
            2 => Kind::File,
            _ => return None,
        };
        let pb = r.take(2)?;
        let perm = u16::from_le_bytes([pb[0], pb[1]]);
        let mtime = u64_at(r.take(8)?, 0) as i64;
        let name_len = r.take(1)?[0] as usize;
        let name = core::str::from_utf8(r.take(name_len)?).ok()?;
        let data_len = r.u32()? as usize;
        let data = r.take(data_len)?;
        if !valid_name(name) || (kind == Kind::Dir && data_len != 0) {
            return None;
        }
        let parent = *inos.get(parent_no)?;
        let ino = tree.next_ino;
        let pnode = tree.nodes.get_mut(&parent)?;
        if pnode.kind != Kind::Dir || pnode.children.contains_key(name) {
            return None;
        }
        pnode.children.insert(String::from(name), ino);
        tree.nodes.insert(
            ino,
            Node {
                parent,
                name: String::from(name),
                kind,
                perm,
                mtime,
                data: data.to_vec(),
                children: BTreeMap::new(),
            },
        );
        tree.next_ino += 1;
        inos.push(ino);
    }
    r.0.is_empty().then_some(tree)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
}

/// An entry's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Inode number (stable while mounted, not stored).
    pub ino: u64,
    /// Kind.
    pub kind: Kind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Permission bits.
    pub perm: u32,
    /// Modification time, Unix seconds.
    pub mtime: i64,
}

/// What [`StateFs::mount`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountReport {
    /// The generation mounted.
    pub generation: u64,
    /// Slots that held a torn or damaged record (the other one was used).
    pub damaged: u32,
    /// Bytes a slot holds (the largest tree).
    pub capacity: usize,
    /// Bytes the mounted tree takes.
    pub used: usize,
}

/// A mounted state disk: the whole tree in memory, every change written
/// through as a new record (see the module documentation).
pub struct StateFs<D: Disk> {
    disk: D,
    header: Header,
    /// The slot holding the current generation.
    current: usize,
    generation: u64,
    tree: Tree,
    /// Changes in memory not yet written (creations, truncations to 0).
    pending: bool,
}

impl<D: Disk> StateFs<D> {
    /// Mounts `disk`: the valid record with the highest generation.
    pub fn mount(mut disk: D) -> Result<(StateFs<D>, MountReport), Error> {
        let mut s0 = [0u8; SECTOR];
        let sectors = disk.sectors();
        if sectors == 0 {
            return Err(Error::NotStateDisk);
        }
        disk.read(0, &mut s0)?;
        let header = Header::parse(&s0, sectors)?;
        let mut best: Option<(usize, u64, Tree)> = None;
        let mut damaged = 0;
        for slot in 0..2 {
            match read_slot(&mut disk, &header, slot)? {
                Slot::Blank => {}
                Slot::Damaged => damaged += 1,
                Slot::Valid(g, t) => {
                    if best.as_ref().is_none_or(|b| g > b.1) {
                        best = Some((slot, g, t));
                    }
                }
            }
        }
        let (current, generation, tree) = best.ok_or(Error::Corrupt)?;
        let used = encode_tree(&tree).len();
        let fs = StateFs {
            disk,
            header,
            current,
            generation,
            tree,
            pending: false,
        };
        let report = MountReport {
            generation,
            damaged,
            capacity: header.capacity(),
            used,
        };
        Ok((fs, report))
    }

    /// The generation on the disk.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes a slot holds.
    pub fn capacity(&self) -> usize {
        self.header.capacity()
    }

    /// Bytes the tree takes now.
    pub fn used(&self) -> usize {
        encode_tree(&self.tree).len()
    }

    /// The device.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    fn node(&self, ino: u64) -> Result<&Node, Error> {
        self.tree.nodes.get(&ino).ok_or(Error::NotFound)
    }

    fn dir(&self, ino: u64) -> Result<&Node, Error> {
        let n = self.node(ino)?;
        if n.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        Ok(n)
    }

    /// Metadata of `ino`.
    pub fn meta(&self, ino: u64) -> Result<Meta, Error> {
        let n = self.node(ino)?;
        Ok(Meta {
            ino,
            kind: n.kind,
            size: n.data.len() as u64,
            perm: u32::from(n.perm),
            mtime: n.mtime,
        })
    }

    /// `name` in directory `dir`.
    pub fn lookup(&self, dir: u64, name: &str) -> Result<u64, Error> {
        self.dir(dir)?
            .children
            .get(name)
            .copied()
            .ok_or(Error::NotFound)
    }

    /// The `index`-th entry of `dir` (by name): name, inode, kind.
    pub fn entry(&self, dir: u64, index: usize) -> Result<Option<(String, u64, Kind)>, Error> {
        let d = self.dir(dir)?;
        Ok(d.children
            .iter()
            .nth(index)
            .map(|(name, &ino)| (name.clone(), ino, self.tree.nodes[&ino].kind)))
    }

    /// Reads from file `ino` at `offset`; returns the bytes read.
    pub fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
        let n = self.node(ino)?;
        if n.kind == Kind::Dir {
            return Err(Error::IsDir);
        }
        let start = (offset.min(n.data.len() as u64)) as usize;
        let len = buf.len().min(n.data.len() - start);
        buf[..len].copy_from_slice(&n.data[start..start + len]);
        Ok(len)
    }

    /// Applies `f` to the tree and writes the result (unless `defer`); on
    /// any failure the tree is as before.
    fn change<R>(
        &mut self,
        defer: bool,
        f: impl FnOnce(&mut Tree) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let before = self.tree.clone();
        let r = match f(&mut self.tree) {
            Ok(r) => r,
            Err(e) => {
                self.tree = before;
                return Err(e);
            }
        };
        if self.tree.nodes.len() > MAX_ENTRIES + 1 {
            self.tree = before;
            return Err(Error::NoSpace);
        }
        if defer {
            self.pending = true;
            return Ok(r);
        }
        match self.commit() {
            Ok(()) => Ok(r),
            Err(e) => {
                self.tree = before;
                Err(e)
            }
        }
    }

    /// Writes the tree as the next generation into the other slot.
    fn commit(&mut self) -> Result<(), Error> {
        let payload = encode_tree(&self.tree);
        if payload.len() > self.header.capacity() {
            return Err(Error::NoSpace);
        }
        let generation = self.generation + 1;
        let rec = record(&payload, generation);
        let target = 1 - self.current;
        self.disk.write(self.header.slot_lba(target), &rec)?;
        self.disk.flush()?;
        self.current = target;
        self.generation = generation;
        self.pending = false;
        Ok(())
    }

    /// Writes pending changes (creations, truncations to 0), if any.
    pub fn sync(&mut self) -> Result<(), Error> {
        if self.pending {
            self.commit()?;
        }
        Ok(())
    }

    fn add(&mut self, dir: u64, name: &str, kind: Kind, perm: u32, now: i64) -> Result<u64, Error> {
        if !valid_name(name) {
            return Err(Error::BadName);
        }
        if self.dir(dir)?.children.contains_key(name) {
            return Err(Error::Exists);
        }
        self.change(kind == Kind::File, |t| {
            let ino = t.next_ino;
            t.next_ino += 1;
            let d = t.nodes.get_mut(&dir).ok_or(Error::NotFound)?;
            d.children.insert(String::from(name), ino);
            d.mtime = now;
            t.nodes.insert(
                ino,
                Node {
                    parent: dir,
                    name: String::from(name),
                    kind,
                    perm: (perm & 0o7777) as u16,
                    mtime: now,
                    data: Vec::new(),
                    children: BTreeMap::new(),
                },
            );
            Ok(ino)
        })
    }

    /// Creates the empty file `name` in `dir` (written with the next
    /// change).
    pub fn create(&mut self, dir: u64, name: &str, perm: u32, now: i64) -> Result<u64, Error> {
        self.add(dir, name, Kind::File, perm, now)
    }

    /// Creates the directory `name` in `dir`.
    pub fn mkdir(&mut self, dir: u64, name: &str, perm: u32, now: i64) -> Result<u64, Error> {
        self.add(dir, name, Kind::Dir, perm, now)
    }

    /// Writes `data` at `offset` of file `ino` (zero-filling a gap), as one
    /// record; returns `data.len()`.
    pub fn write_at(
        &mut self,
        ino: u64,
        offset: u64,
        data: &[u8],
        now: i64,
    ) -> Result<usize, Error> {
        if self.node(ino)?.kind == Kind::Dir {
            return Err(Error::IsDir);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= self.header.capacity() as u64)
            .ok_or(Error::NoSpace)? as usize;
        self.change(false, |t| {
            let n = t.nodes.get_mut(&ino).ok_or(Error::NotFound)?;
            if n.data.len() < end {
                n.data.resize(end, 0);
            }
            n.data[offset as usize..end].copy_from_slice(data);
            n.mtime = now;
            Ok(data.len())
        })
    }

    /// Sets the size of file `ino` (truncation to 0 is written with the
    /// next change).
    pub fn truncate(&mut self, ino: u64, size: u64, now: i64) -> Result<(), Error> {
        let n = self.node(ino)?;
        if n.kind == Kind::Dir {
            return Err(Error::IsDir);
        }
        if size > self.header.capacity() as u64 {
            return Err(Error::NoSpace);
        }
        if n.data.len() as u64 == size {
            return Ok(());
        }
        self.change(size == 0, |t| {
            let n = t.nodes.get_mut(&ino).ok_or(Error::NotFound)?;
            n.data.resize(size as usize, 0);
            n.mtime = now;
            Ok(())
        })
    }

    /// Removes the file (`dir == false`) or empty directory `name` of
    /// `parent`.
    pub fn remove(&mut self, parent: u64, name: &str, dir: bool, now: i64) -> Result<(), Error> {
        let ino = self.lookup(parent, name)?;
        let n = self.node(ino)?;
        match (n.kind, dir) {
            (Kind::Dir, false) => return Err(Error::IsDir),
            (Kind::File, true) => return Err(Error::NotDir),
            (Kind::Dir, true) if !n.children.is_empty() => return Err(Error::NotEmpty),
            _ => {}
        }
        self.change(false, |t| {
            t.nodes.remove(&ino);
            let p = t.nodes.get_mut(&parent).ok_or(Error::NotFound)?;
            p.children.remove(name);
            p.mtime = now;
            Ok(())
        })
    }

    /// Path lookup from the root (`"a/b"`), for tools and tests.
    pub fn resolve(&self, path: &str) -> Result<u64, Error> {
        let mut ino = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.lookup(ino, part)?;
        }
        Ok(ino)
    }

    /// Every file as `(path, contents)`, for tools and tests.
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        let mut order = Vec::new();
        walk(&self.tree, &mut order, ROOT, 0);
        let mut out = Vec::new();
        for (_, ino) in order {
            let n = &self.tree.nodes[&ino];
            let mut path = n.name.clone();
            let mut p = n.parent;
            while p != ROOT {
                let pn = &self.tree.nodes[&p];
                path = alloc::format!("{}/{path}", pn.name);
                p = pn.parent;
            }
            out.push((
                if n.kind == Kind::Dir {
                    alloc::format!("{path}/")
                } else {
                    path
                },
                n.data.clone(),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests;
