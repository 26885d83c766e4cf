use super::*;
use std::format;
use std::vec::Vec;

/// A disk in memory that can lose power: after `budget` sectors written
/// (and, with `tear`, the first `tear` bytes of the next one) every write
/// fails and nothing more reaches the bytes.
#[derive(Clone)]
struct MemDisk {
    bytes: Vec<u8>,
    budget: Option<usize>,
    tear: usize,
    written: usize,
    flushes: usize,
    dead: bool,
}

impl MemDisk {
    fn new(sectors: usize) -> MemDisk {
        MemDisk {
            bytes: vec![0; sectors * SECTOR],
            budget: None,
            tear: 0,
            written: 0,
            flushes: 0,
            dead: false,
        }
    }

    /// The same bytes, power back on.
    fn reboot(&self) -> MemDisk {
        MemDisk {
            bytes: self.bytes.clone(),
            budget: None,
            tear: 0,
            written: 0,
            flushes: 0,
            dead: false,
        }
    }
}

impl Disk for MemDisk {
    fn sectors(&self) -> u64 {
        (self.bytes.len() / SECTOR) as u64
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Error> {
        assert_eq!(buf.len() % SECTOR, 0);
        let at = lba as usize * SECTOR;
        let src = self.bytes.get(at..at + buf.len()).ok_or(Error::Io)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Error> {
        assert_eq!(buf.len() % SECTOR, 0);
        let at = lba as usize * SECTOR;
        if at + buf.len() > self.bytes.len() {
            return Err(Error::Io);
        }
        for (i, s) in buf.chunks(SECTOR).enumerate() {
            let o = at + i * SECTOR;
            if self.dead {
                return Err(Error::Io);
            }
            if self.budget == Some(self.written) {
                // The power goes: `tear` bytes of this sector made it.
                self.bytes[o..o + self.tear].copy_from_slice(&s[..self.tear]);
                self.dead = true;
                return Err(Error::Io);
            }
            self.bytes[o..o + SECTOR].copy_from_slice(s);
            self.written += 1;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), Error> {
        if self.dead {
            return Err(Error::Io);
        }
        self.flushes += 1;
        Ok(())
    }
}

fn formatted(sectors: usize) -> MemDisk {
    let mut d = MemDisk::new(sectors);
    format(&mut d).unwrap();
    d
}

fn mount(d: MemDisk) -> (StateFs<MemDisk>, MountReport) {
    StateFs::mount(d).unwrap()
}

/// Writes `path` (creating parents) the way httpd does: create/truncate,
/// then one write.
fn put(fs: &mut StateFs<MemDisk>, path: &str, data: &[u8]) -> Result<(), Error> {
    let parts: Vec<&str> = path.split('/').collect();
    let mut dir = ROOT;
    for p in &parts[..parts.len() - 1] {
        dir = match fs.lookup(dir, p) {
            Ok(i) => i,
            Err(Error::NotFound) => fs.mkdir(dir, p, 0o700, 1)?,
            Err(e) => return Err(e),
        };
    }
    let name = parts[parts.len() - 1];
    let ino = match fs.lookup(dir, name) {
        Ok(i) => {
            fs.truncate(i, 0, 2)?;
            i
        }
        Err(_) => fs.create(dir, name, 0o600, 2)?,
    };
    fs.write_at(ino, 0, data, 3)?;
    Ok(())
}

fn get(fs: &StateFs<MemDisk>, path: &str) -> Option<Vec<u8>> {
    let ino = fs.resolve(path).ok()?;
    let m = fs.meta(ino).unwrap();
    let mut b = vec![0; m.size as usize];
    assert_eq!(fs.read(ino, 0, &mut b).unwrap(), b.len());
    Some(b)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn header_round_trip_and_rejects() {
    let h = Header::for_disk(2048).unwrap();
    assert_eq!(h.slot_sectors, 1023);
    let b = h.to_bytes();
    assert!(is_state_disk(&b));
    assert_eq!(Header::parse(&b, 2048), Ok(h));
    // A smaller disk than the header says.
    assert_eq!(Header::parse(&b, 2047), Err(Error::TooSmall));
    // Any flipped bit: bad CRC (or not the magic at all).
    for byte in 0..36 {
        let mut x = b;
        x[byte] ^= 0x10;
        let r = Header::parse(&x, 2048);
        if byte < 8 {
            assert_eq!(r, Err(Error::NotStateDisk), "byte {byte}");
        } else {
            assert_eq!(r, Err(Error::BadHeader), "byte {byte}");
        }
    }
    // Another version, with a correct CRC.
    let mut v = b;
    v[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32(&v[..32]);
    v[32..36].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(Header::parse(&v, 2048), Err(Error::Version(2)));
    // Slots that do not fit, with a correct CRC.
    let mut s = b;
    s[24..32].copy_from_slice(&2000u64.to_le_bytes());
    let crc = crc32(&s[..32]);
    s[32..36].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(Header::parse(&s, 2048), Err(Error::BadHeader));
    // Zeros and other data are not state disks.
    assert_eq!(Header::parse(&[0; SECTOR], 2048), Err(Error::NotStateDisk));
    assert_eq!(Header::for_disk(4), Err(Error::TooSmall));
    assert!(!is_state_disk(&[0; SECTOR]));
}

#[test]
fn mount_refuses_what_is_not_a_state_disk() {
    assert!(matches!(
        StateFs::mount(MemDisk::new(64)),
        Err(Error::NotStateDisk)
    ));
    let mut d = MemDisk::new(64);
    d.bytes[1080] = 0x53; // an ext4 magic, say
    d.bytes[1081] = 0xef;
    assert!(matches!(StateFs::mount(d), Err(Error::NotStateDisk)));
    let mut d = formatted(64);
    d.bytes[20] ^= 1;
    assert!(matches!(StateFs::mount(d), Err(Error::BadHeader)));
}

#[test]
fn fresh_disk_is_empty_and_round_trips() {
    let d = formatted(256);
    let (mut fs, r) = mount(d);
    assert_eq!(r.generation, 1);
    assert_eq!(r.damaged, 0);
    assert_eq!(fs.entry(ROOT, 0).unwrap(), None);
    let key = pattern(241, 1);
    let crt = pattern(3000, 2);
    put(&mut fs, "acme/account.key.pem", &key).unwrap();
    put(&mut fs, "acme/example.org.crt.pem", &crt).unwrap();
    put(&mut fs, "top", b"x").unwrap();
    let before = fs.files();
    let (fs2, r) = mount(fs.disk().reboot());
    assert_eq!(fs2.files(), before);
    assert_eq!(r.generation, fs.generation());
    assert_eq!(get(&fs2, "acme/account.key.pem").unwrap(), key);
    assert_eq!(get(&fs2, "acme/example.org.crt.pem").unwrap(), crt);
    assert_eq!(
        fs2.meta(fs2.resolve("acme").unwrap()).unwrap().kind,
        Kind::Dir
    );
    assert_eq!(
        fs2.meta(fs2.resolve("acme/account.key.pem").unwrap())
            .unwrap()
            .perm,
        0o600
    );
    // Overwrite, partial writes, truncation, removal.
    let mut fs = fs2;
    put(&mut fs, "acme/account.key.pem", b"short").unwrap();
    let ino = fs.resolve("top").unwrap();
    fs.write_at(ino, 4, b"yz", 5).unwrap();
    assert_eq!(get(&fs, "top").unwrap(), b"x\0\0\0yz");
    fs.truncate(ino, 2, 6).unwrap();
    fs.remove(ROOT, "top", false, 7).unwrap();
    assert_eq!(fs.remove(ROOT, "acme", true, 7), Err(Error::NotEmpty));
    assert_eq!(fs.remove(ROOT, "acme", false, 7), Err(Error::IsDir));
    let (fs3, _) = mount(fs.disk().reboot());
    assert_eq!(get(&fs3, "acme/account.key.pem").unwrap(), b"short");
    assert_eq!(get(&fs3, "top"), None);
    assert_eq!(fs3.files(), fs.files());
}

#[test]
fn names_and_kinds_are_checked() {
    let (mut fs, _) = mount(formatted(64));
    for bad in ["", ".", "..", "a/b", "a\0b", &"n".repeat(256)] {
        assert_eq!(
            fs.create(ROOT, bad, 0o600, 0),
            Err(Error::BadName),
            "{bad:?}"
        );
    }
    let f = fs.create(ROOT, "f", 0o600, 0).unwrap();
    assert_eq!(fs.create(ROOT, "f", 0o600, 0), Err(Error::Exists));
    assert_eq!(fs.mkdir(f, "d", 0o700, 0), Err(Error::NotDir));
    assert_eq!(fs.lookup(f, "x"), Err(Error::NotDir));
    assert_eq!(fs.lookup(ROOT, "x"), Err(Error::NotFound));
    let d = fs.mkdir(ROOT, "d", 0o700, 0).unwrap();
    assert_eq!(fs.write_at(d, 0, b"x", 0), Err(Error::IsDir));
    assert_eq!(fs.read(d, 0, &mut [0; 4]), Err(Error::IsDir));
    assert_eq!(fs.remove(ROOT, "f", true, 0), Err(Error::NotDir));
    let long = "n".repeat(255);
    fs.create(d, &long, 0o600, 0).unwrap();
    fs.sync().unwrap();
    let (fs2, _) = mount(fs.disk().reboot());
    assert!(fs2.resolve(&format!("d/{long}")).is_ok());
}

/// A change cut by a power loss after each sector it writes (and halfway
/// into each): the disk mounts with the old tree or the new one, never
/// anything else.
#[test]
fn torn_writes_at_every_sector_leave_old_or_new() {
    let (mut fs, _) = mount(formatted(256));
    put(&mut fs, "acme/account.key.pem", &pattern(300, 7)).unwrap();
    put(&mut fs, "acme/a.crt.pem", &pattern(5000, 8)).unwrap();
    let old = fs.files();
    let base = fs.disk().reboot();
    // The change under test: a larger certificate (the record spans ~19
    // sectors). First without a cut, for the new tree.
    let new_crt = pattern(9000, 9);
    let (mut fs, _) = StateFs::mount(base.reboot()).unwrap();
    put(&mut fs, "acme/a.crt.pem", &new_crt).unwrap();
    let new = fs.files();
    let sectors = fs.disk().written;
    assert!(sectors >= 19, "{sectors}");
    let mut kept_old = 0;
    for budget in 0..sectors {
        for tear in [0, 100, 511] {
            let mut d = base.reboot();
            d.budget = Some(budget);
            d.tear = tear;
            let (mut fs, _) = StateFs::mount(d).unwrap();
            assert_eq!(put(&mut fs, "acme/a.crt.pem", &new_crt), Err(Error::Io));
            // In memory the truncation stands, the failed write does not.
            assert_eq!(get(&fs, "acme/a.crt.pem").unwrap(), b"");
            let (fs2, report) = StateFs::mount(fs.disk().reboot()).unwrap();
            let files = fs2.files();
            // The old tree, or the new one when the cut only lost the
            // padding after the record (the device failed, the data made
            // it): never anything else.
            assert!(
                files == old || files == new,
                "budget {budget} tear {tear}: neither old nor new"
            );
            if files == old {
                kept_old += 1;
                assert!(report.damaged <= 1);
            }
            // Still usable: the next change goes through.
            let mut fs2 = fs2;
            put(&mut fs2, "acme/a.crt.pem", &new_crt).unwrap();
            let (fs3, r3) = mount(fs2.disk().reboot());
            assert!(fs3.files() == new);
            assert_eq!(r3.damaged, 0);
        }
    }
    // Every cut before the last sector keeps the old tree.
    assert!(
        kept_old >= 3 * (sectors - 1),
        "{kept_old} of {}",
        3 * sectors
    );
}

/// O_TRUNC + write is one record: a cut anywhere leaves the old contents.
#[test]
fn truncate_then_write_is_atomic() {
    let (mut fs, _) = mount(formatted(64));
    put(&mut fs, "k", b"old contents").unwrap();
    let base = fs.disk().reboot();
    let writes_before = base.written;
    assert_eq!(writes_before, 0);
    let mut d = base.reboot();
    d.budget = Some(0);
    let (mut fs, _) = StateFs::mount(d).unwrap();
    let ino = fs.resolve("k").unwrap();
    fs.truncate(ino, 0, 9).unwrap(); // kept in memory: nothing written
    assert_eq!(fs.disk().written, 0);
    assert!(fs.write_at(ino, 0, b"new", 9).is_err()); // the cut
    // In memory the failed write changed nothing.
    assert_eq!(get(&fs, "k").unwrap(), b"");
    let (fs2, _) = mount(fs.disk().reboot());
    assert_eq!(get(&fs2, "k").unwrap(), b"old contents");
    // A creation alone is written with the next change (or sync).
    let (mut fs, _) = mount(fs2.disk().reboot());
    fs.create(ROOT, "empty", 0o600, 1).unwrap();
    assert_eq!(fs.disk().flushes, 0);
    fs.sync().unwrap();
    let (fs2, _) = mount(fs.disk().reboot());
    assert_eq!(get(&fs2, "empty").unwrap(), b"");
}

/// Damaged sectors in either slot: the other slot's generation is used;
/// in both: `Corrupt`, never an empty file system.
#[test]
fn corrupted_sectors() {
    let (mut fs, _) = mount(formatted(128));
    put(&mut fs, "a", &pattern(2000, 1)).unwrap(); // gen 2 in slot 1
    let older = fs.files();
    put(&mut fs, "a", &pattern(2100, 2)).unwrap(); // gen 3 in slot 0
    let newer = fs.files();
    let h = Header::for_disk(128).unwrap();
    let slot = |s: usize| h.slot_lba(s) as usize * SECTOR;
    let record_sectors = (HEAD + fs.used()).div_ceil(SECTOR);
    for sector in 0..record_sectors {
        // The newest record damaged: the older one.
        let mut d = fs.disk().reboot();
        d.bytes[slot(0) + sector * SECTOR + 17] ^= 0x40;
        let (m, r) = mount(d);
        assert_eq!(m.files(), older, "sector {sector}");
        assert_eq!(r.damaged, 1);
        assert_eq!(r.generation, 2);
        // The older one damaged: the newest.
        let mut d = fs.disk().reboot();
        d.bytes[slot(1) + sector * SECTOR + 300] ^= 1;
        let (m, r) = mount(d);
        assert_eq!(m.files(), newer);
        assert_eq!(r.generation, 3);
        // Both: refused.
        let mut d = fs.disk().reboot();
        d.bytes[slot(0) + sector * SECTOR + 5] ^= 0xff;
        d.bytes[slot(1) + sector * SECTOR + 5] ^= 0xff;
        assert!(matches!(StateFs::mount(d), Err(Error::Corrupt)));
    }
    // A huge length in the head: damaged, not a huge allocation.
    let mut d = fs.disk().reboot();
    d.bytes[slot(0) + 12..slot(0) + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    let (m, r) = mount(d);
    assert_eq!((m.files(), r.damaged), (older, 1));
}

/// A well-formed CRC over a malformed payload is damage too.
#[test]
fn malformed_payloads_are_rejected() {
    let mut t = empty_tree();
    t.nodes
        .get_mut(&ROOT)
        .unwrap()
        .children
        .insert("x".into(), 2);
    t.nodes.insert(
        2,
        Node {
            parent: ROOT,
            name: "x".into(),
            kind: Kind::File,
            perm: 0o600,
            mtime: 0,
            data: vec![1, 2, 3],
            children: BTreeMap::new(),
        },
    );
    let p = encode_tree(&t);
    assert!(decode_tree(&p).is_some());
    for cut in 0..p.len() {
        assert!(decode_tree(&p[..cut]).is_none(), "cut {cut}");
    }
    let mut extra = p.clone();
    extra.push(0);
    assert!(decode_tree(&extra).is_none());
    // A parent that is a file, a bad kind, a bad name.
    let mut two = p.clone();
    two[0] = 2;
    two.extend_from_slice(&1u32.to_le_bytes()); // parent: entry 1, the file
    two.push(2);
    two.extend_from_slice(&[0; 10]);
    two.push(1);
    two.push(b'y');
    two.extend_from_slice(&0u32.to_le_bytes());
    assert!(decode_tree(&two).is_none());
    let mut kind = p.clone();
    kind[8] = 7;
    assert!(decode_tree(&kind).is_none());
    let mut name = p.clone();
    name[20] = b'/';
    assert!(decode_tree(&name).is_none());
}

/// A change that does not fit fails with `NoSpace` and loses nothing.
#[test]
fn full_disk_is_a_clear_error_and_loses_nothing() {
    let (mut fs, r) = mount(formatted(21)); // slots of 10 sectors
    assert_eq!(r.capacity, 10 * SECTOR - HEAD);
    put(&mut fs, "a", &pattern(3000, 1)).unwrap();
    let before = fs.files();
    let generation = fs.generation();
    assert_eq!(put(&mut fs, "b", &pattern(2100, 2)), Err(Error::NoSpace));
    assert_eq!(
        fs.write_at(fs.resolve("a").unwrap(), u64::MAX - 1, b"xx", 0),
        Err(Error::NoSpace)
    );
    assert_eq!(
        fs.truncate(fs.resolve("a").unwrap(), 1 << 40, 0),
        Err(Error::NoSpace)
    );
    // The failed put left its pending creation of "b" in memory, empty; the
    // disk has exactly the old tree.
    assert_eq!(fs.generation(), generation);
    let (fs2, _) = mount(fs.disk().reboot());
    assert_eq!(fs2.files(), before);
    // Room is made by removing: then it fits.
    let mut fs = fs2;
    fs.remove(ROOT, "a", false, 0).unwrap();
    put(&mut fs, "b", &pattern(2100, 2)).unwrap();
    let (fs3, _) = mount(fs.disk().reboot());
    assert_eq!(get(&fs3, "b").unwrap(), pattern(2100, 2));
    // Too many entries.
    let (mut fs, _) = mount(formatted(4096));
    let mut made = 0;
    let r = loop {
        match fs.create(ROOT, &format!("f{made}"), 0o600, 0) {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
    };
    assert_eq!((r, made), (Error::NoSpace, MAX_ENTRIES));
}

/// Generations alternate between the slots and the newest wins.
#[test]
fn generations_alternate() {
    let (mut fs, _) = mount(formatted(64));
    for i in 0..10u8 {
        put(&mut fs, "f", &[i; 10]).unwrap();
        let (m, r) = mount(fs.disk().reboot());
        assert_eq!(get(&m, "f").unwrap(), [i; 10]);
        assert_eq!(r.generation, fs.generation());
    }
    // Format wrote generation 1; each put is one record.
    assert_eq!(fs.generation(), 1 + 10);
}
