//! Partition tables: GPT (with its protective MBR) and classic MBR, read by
//! the kernel to find the root file system on a bootable disk, and written
//! by `cargo uk image` to build one.
//!
//! The kernel reads the first 34 sectors of the disk (MBR, GPT header, 128
//! entries of 128 bytes) and calls [`parse`]; [`find_root`] then picks the
//! partition labelled [`ROOT_LABEL`], else the first Linux file-system
//! partition. A disk without a partition table (an ext4 image made for
//! `-kernel` boots) gives [`Table::None`] and is mounted whole.

use alloc::string::String;
use alloc::vec::Vec;

/// Bytes per sector (logical block) this module assumes.
pub const SECTOR: usize = 512;
/// Sectors the kernel reads to see the whole primary GPT (MBR + header +
/// 128 entries of 128 bytes).
pub const GPT_SPAN_SECTORS: usize = 34;
/// The GPT partition name (and ext4 label) of the root file system.
pub const ROOT_LABEL: &str = "uk-root";

/// A GUID in its on-disk (mixed-endian) byte order.
pub type Guid = [u8; 16];

/// Converts the text form `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` to the
/// on-disk byte order (first three fields little endian). `None` if malformed.
pub const fn guid(s: &str) -> Option<Guid> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    // Positions of the 16 bytes in the text, in text order.
    let pos = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut text = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let (Some(h), Some(l)) = (hex(b[pos[i]]), hex(b[pos[i] + 1])) else {
            return None;
        };
        text[i] = (h << 4) | l;
        i += 1;
    }
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut g = [0u8; 16];
    let mut j = 0;
    while j < 16 {
        g[j] = text[order[j]];
        j += 1;
    }
    Some(g)
}

const fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const fn must(g: Option<Guid>) -> Guid {
    match g {
        Some(g) => g,
        None => panic!("bad GUID constant"),
    }
}

/// Linux file-system data.
pub const LINUX_FS: Guid = must(guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4"));
/// EFI system partition.
pub const EFI_SYSTEM: Guid = must(guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"));
/// BIOS boot partition (GRUB's core.img on a GPT disk).
pub const BIOS_BOOT: Guid = must(guid("21686148-6449-6E6F-744E-656564454649"));

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// First sector.
    pub first_lba: u64,
    /// Length in sectors.
    pub sectors: u64,
    /// GPT type GUID; for MBR partitions, zero with the type byte in [`Partition::mbr_type`].
    pub type_guid: Guid,
    /// MBR partition type (0 for GPT partitions).
    pub mbr_type: u8,
    /// GPT partition name (empty for MBR).
    pub name: String,
}

impl Partition {
    /// Byte offset on the disk.
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.sectors * SECTOR as u64
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.sectors == 0
    }

    /// A Linux file-system partition (GPT type or MBR type 0x83).
    pub fn is_linux(&self) -> bool {
        self.type_guid == LINUX_FS || self.mbr_type == 0x83
    }
}

/// What the start of a disk holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    /// No partition table: the disk is one file system.
    None,
    /// A classic MBR.
    Mbr(Vec<Partition>),
    /// A GUID partition table.
    Gpt(Vec<Partition>),
}

/// Why a partition table is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartError {
    /// Fewer bytes than needed.
    Truncated,
    /// The GPT header or entry array fails its CRC32.
    BadCrc,
    /// A field is out of range (entry size, entry count, partition bounds).
    Malformed,
}

/// CRC-32 (IEEE 802.3, reflected, as GPT uses).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Parses the start of a disk of `disk_sectors` sectors: `head` holds at
/// least the first sector, and [`GPT_SPAN_SECTORS`] sectors for a GPT disk.
pub fn parse(head: &[u8], disk_sectors: u64) -> Result<Table, PartError> {
    if head.len() < SECTOR {
        return Err(PartError::Truncated);
    }
    let mbr = &head[..SECTOR];
    if mbr[510] != 0x55 || mbr[511] != 0xaa {
        return Ok(Table::None);
    }
    let entries: Vec<(u8, u8, u32, u32)> = (0..4)
        .map(|i| {
            let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
            (e[0], e[4], u32_at(e, 8), u32_at(e, 12))
        })
        .collect();
    // An ext4 image's first sector is zero (or a boot sector without
    // partitions): valid entries have status 0x00/0x80 and a type.
    if entries
        .iter()
        .any(|&(status, ty, ..)| ty != 0 && status & 0x7f != 0)
    {
        return Ok(Table::None);
    }
    if entries.iter().any(|&(_, ty, ..)| ty == 0xee) {
        return parse_gpt(head, disk_sectors).map(Table::Gpt);
    }
    let parts: Vec<Partition> = entries
        .iter()
        .filter(|&&(_, ty, _, len)| ty != 0 && len != 0)
        .map(|&(_, ty, start, len)| Partition {
            first_lba: u64::from(start),
            sectors: u64::from(len),
            type_guid: [0; 16],
            mbr_type: ty,
            name: String::new(),
        })
        .collect();
    if parts.is_empty() {
        return Ok(Table::None);
    }
    if parts
        .iter()
        .any(|p| p.first_lba == 0 || p.first_lba + p.sectors > disk_sectors)
    {
        return Err(PartError::Malformed);
    }
    Ok(Table::Mbr(parts))
}

fn parse_gpt(head: &[u8], disk_sectors: u64) -> Result<Vec<Partition>, PartError> {
    let h = head.get(SECTOR..2 * SECTOR).ok_or(PartError::Truncated)?;
    if &h[..8] != b"EFI PART" {
        return Err(PartError::Malformed);
    }
    let hsize = u32_at(h, 12) as usize;
    if !(92..=SECTOR).contains(&hsize) {
        return Err(PartError::Malformed);
    }
    let mut hdr = [0u8; SECTOR];
    hdr[..hsize].copy_from_slice(&h[..hsize]);
    hdr[16..20].fill(0);
    if crc32(&hdr[..hsize]) != u32_at(h, 16) {
        return Err(PartError::BadCrc);
    }
    let entries_lba = u64_at(h, 72);
    let count = u32_at(h, 80) as usize;
    let esize = u32_at(h, 84) as usize;
    if esize < 128 || !esize.is_power_of_two() || count > 1024 || entries_lba < 2 {
        return Err(PartError::Malformed);
    }
    let start = usize::try_from(entries_lba)
        .ok()
        .and_then(|l| l.checked_mul(SECTOR))
        .ok_or(PartError::Malformed)?;
    let array = head
        .get(start..start + count * esize)
        .ok_or(PartError::Truncated)?;
    if crc32(array) != u32_at(h, 88) {
        return Err(PartError::BadCrc);
    }
    let mut parts = Vec::new();
    for e in array.chunks_exact(esize) {
        let mut ty = [0u8; 16];
        ty.copy_from_slice(&e[..16]);
        if ty == [0; 16] {
            continue;
        }
        let first = u64_at(e, 32);
        let last = u64_at(e, 40);
        if last < first || last >= disk_sectors {
            return Err(PartError::Malformed);
        }
        let units: Vec<u16> = (0..36)
            .map(|i| u16_at(e, 56 + 2 * i))
            .take_while(|&u| u != 0)
            .collect();
        parts.push(Partition {
            first_lba: first,
            sectors: last - first + 1,
            type_guid: ty,
            mbr_type: 0,
            name: String::from_utf16_lossy(&units),
        });
    }
    Ok(parts)
}

/// The root file system's partition: the one named [`ROOT_LABEL`], else the
/// first Linux file-system partition. `None` for a disk without a table
/// (mount the whole disk) or a table without such a partition.
pub fn find_root(table: &Table) -> Option<&Partition> {
    let parts = match table {
        Table::None => return None,
        Table::Mbr(p) | Table::Gpt(p) => p,
    };
    parts
        .iter()
        .find(|p| p.name == ROOT_LABEL)
        .or_else(|| parts.iter().find(|p| p.is_linux()))
}

/// A partition to write with [`gpt_write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPartition {
    /// First sector.
    pub first_lba: u64,
    /// Length in sectors.
    pub sectors: u64,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique GUID.
    pub unique_guid: Guid,
    /// Name (at most 36 UTF-16 units).
    pub name: String,
}

/// The partition-table sectors of a GPT disk of `disk_sectors` sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptImage {
    /// Sectors 0..34: protective MBR, primary header, entry array.
    pub primary: Vec<u8>,
    /// The last 33 sectors: entry array copy, backup header.
    pub backup: Vec<u8>,
}

/// Builds a GPT (128 entries of 128 bytes) for `parts` on a disk of
/// `disk_sectors` sectors with `disk_guid`. `protective_mbr` is the sector
/// to use for LBA 0 (for example GRUB's boot.img); its partition table area
/// is overwritten with the protective entry.
pub fn gpt_write(
    disk_sectors: u64,
    disk_guid: Guid,
    parts: &[NewPartition],
    protective_mbr: Option<&[u8; SECTOR]>,
) -> Result<GptImage, PartError> {
    const ENTRIES: usize = 128;
    const ESIZE: usize = 128;
    let first_usable = 34u64;
    let last_usable = disk_sectors.checked_sub(34).ok_or(PartError::Malformed)?;
    if parts.len() > ENTRIES {
        return Err(PartError::Malformed);
    }
    let mut array = alloc::vec![0u8; ENTRIES * ESIZE];
    for (i, p) in parts.iter().enumerate() {
        let last = p.first_lba + p.sectors - 1;
        if p.sectors == 0 || p.first_lba < first_usable || last > last_usable {
            return Err(PartError::Malformed);
        }
        let units: Vec<u16> = p.name.encode_utf16().collect();
        if units.len() > 36 {
            return Err(PartError::Malformed);
        }
        let e = &mut array[i * ESIZE..(i + 1) * ESIZE];
        e[..16].copy_from_slice(&p.type_guid);
        e[16..32].copy_from_slice(&p.unique_guid);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        for (j, u) in units.iter().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let array_crc = crc32(&array);
    let header = |my_lba: u64, alt_lba: u64, entries_lba: u64| {
        let mut h = [0u8; SECTOR];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ESIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let last_lba = disk_sectors - 1;
    let mut mbr = protective_mbr.copied().unwrap_or([0u8; SECTOR]);
    mbr[446..510].fill(0);
    let pe = &mut mbr[446..462];
    pe[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    pe[4] = 0xee;
    pe[5..8].fill(0xff);
    pe[8..12].copy_from_slice(&1u32.to_le_bytes());
    let len = u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX);
    pe[12..16].copy_from_slice(&len.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let mut primary = Vec::with_capacity(34 * SECTOR);
    primary.extend_from_slice(&mbr);
    primary.extend_from_slice(&header(1, last_lba, 2));
    primary.extend_from_slice(&array);
    let mut backup = Vec::with_capacity(33 * SECTOR);
    backup.extend_from_slice(&array);
    backup.extend_from_slice(&header(last_lba, 1, last_lba - 32));
    Ok(GptImage { primary, backup })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn guid_byte_order() {
        // The EFI system partition GUID as it appears on disk.
        assert_eq!(
            EFI_SYSTEM,
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert!(guid("not-a-guid").is_none());
        assert!(guid("0FC63DAF-8483-4772-8E79-3D69D8477DEX").is_none());
    }

    fn sample_disk() -> (Vec<u8>, u64) {
        let sectors = 64 * 2048; // 64 MiB
        let parts = [
            NewPartition {
                first_lba: 2048,
                sectors: 2048,
                type_guid: BIOS_BOOT,
                unique_guid: [1; 16],
                name: "bios".into(),
            },
            NewPartition {
                first_lba: 4096,
                sectors: 32768,
                type_guid: EFI_SYSTEM,
                unique_guid: [2; 16],
                name: "EFI".into(),
            },
            NewPartition {
                first_lba: 36864,
                sectors: sectors - 36864 - 34,
                type_guid: LINUX_FS,
                unique_guid: [3; 16],
                name: ROOT_LABEL.into(),
            },
        ];
        let mut boot = [0x90u8; SECTOR];
        boot[..2].copy_from_slice(&[0xeb, 0x63]);
        let g = gpt_write(sectors, [9; 16], &parts, Some(&boot)).unwrap();
        assert_eq!(g.primary.len(), 34 * SECTOR);
        assert_eq!(g.backup.len(), 33 * SECTOR);
        // boot code kept, partition area replaced
        assert_eq!(&g.primary[..2], &[0xeb, 0x63]);
        assert_eq!(g.primary[446 + 4], 0xee);
        let mut disk = g.primary.clone();
        disk.resize(sectors as usize * SECTOR - g.backup.len(), 0);
        disk.extend_from_slice(&g.backup);
        (disk, sectors)
    }

    #[test]
    fn gpt_round_trip_and_root() {
        let (disk, sectors) = sample_disk();
        let t = parse(&disk[..GPT_SPAN_SECTORS * SECTOR], sectors).unwrap();
        let Table::Gpt(parts) = &t else {
            panic!("{t:?}")
        };
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].type_guid, BIOS_BOOT);
        assert_eq!(parts[1].name, "EFI");
        let root = find_root(&t).unwrap();
        assert_eq!(root.name, ROOT_LABEL);
        assert_eq!(root.offset(), 36864 * 512);
        assert_eq!(root.len(), (sectors - 36864 - 34) * 512);
        // The backup header is a valid header too.
        let b = &disk[disk.len() - SECTOR..];
        assert_eq!(&b[..8], b"EFI PART");
        assert_eq!(u64_at(b, 24), sectors - 1);
        assert_eq!(u64_at(b, 72), sectors - 33);
    }

    #[test]
    fn gpt_root_falls_back_to_linux_type() {
        let (mut disk, sectors) = sample_disk();
        // Rename the root partition: entry 2 name at 1024 + 2*128 + 56.
        let off = 1024 + 256 + 56;
        disk[off..off + 2].copy_from_slice(&(u16::from(b'x')).to_le_bytes());
        let crc = crc32(&disk[1024..1024 + 128 * 128]);
        disk[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
        disk[512 + 16..512 + 20].fill(0);
        let hcrc = crc32(&disk[512..512 + 92]);
        disk[512 + 16..512 + 20].copy_from_slice(&hcrc.to_le_bytes());
        let t = parse(&disk[..GPT_SPAN_SECTORS * SECTOR], sectors).unwrap();
        let root = find_root(&t).unwrap();
        assert_eq!(root.name, "xk-root");
        assert_eq!(root.first_lba, 36864);
    }

    #[test]
    fn gpt_corruption_is_detected() {
        let (disk, sectors) = sample_disk();
        let mut d = disk.clone();
        d[512 + 40] ^= 1; // header field
        assert_eq!(parse(&d[..34 * 512], sectors), Err(PartError::BadCrc));
        let mut d = disk.clone();
        d[1024 + 33] ^= 1; // entry array
        assert_eq!(parse(&d[..34 * 512], sectors), Err(PartError::BadCrc));
        assert_eq!(parse(&disk[..1024], sectors), Err(PartError::Truncated));
        // A disk smaller than the table claims.
        assert_eq!(parse(&disk[..34 * 512], 40_000), Err(PartError::Malformed));
    }

    #[test]
    fn mbr_and_no_table() {
        // ext4 image: first sector zero, no signature.
        assert_eq!(parse(&[0u8; 1024], 100), Ok(Table::None));
        assert_eq!(find_root(&Table::None), None);
        let mut s = [0u8; SECTOR];
        s[510] = 0x55;
        s[511] = 0xaa;
        assert_eq!(parse(&s, 100), Ok(Table::None));
        // FAT (0x0c) then Linux (0x83).
        let e = |s: &mut [u8; SECTOR], i: usize, ty: u8, start: u32, len: u32| {
            let o = 446 + 16 * i;
            s[o + 4] = ty;
            s[o + 8..o + 12].copy_from_slice(&start.to_le_bytes());
            s[o + 12..o + 16].copy_from_slice(&len.to_le_bytes());
        };
        e(&mut s, 0, 0x0c, 2048, 2048);
        e(&mut s, 1, 0x83, 4096, 8192);
        let t = parse(&s, 20_000).unwrap();
        let root = find_root(&t).unwrap();
        assert_eq!(
            (root.first_lba, root.sectors, root.mbr_type),
            (4096, 8192, 0x83)
        );
        assert_eq!(parse(&s, 10_000), Err(PartError::Malformed));
        // Bad status byte: not a partition table.
        s[446] = 0x12;
        assert_eq!(parse(&s, 20_000), Ok(Table::None));
        let v = vec![0u8; 10];
        assert_eq!(parse(&v, 1), Err(PartError::Truncated));
    }

    #[test]
    fn writer_rejects_bad_layouts() {
        let p = |first, sectors| NewPartition {
            first_lba: first,
            sectors,
            type_guid: LINUX_FS,
            unique_guid: [0; 16],
            name: "x".into(),
        };
        assert!(gpt_write(1000, [0; 16], &[p(10, 10)], None).is_err());
        assert!(gpt_write(1000, [0; 16], &[p(100, 900)], None).is_err());
        assert!(gpt_write(1000, [0; 16], &[p(100, 0)], None).is_err());
        assert!(gpt_write(10, [0; 16], &[], None).is_err());
        assert!(gpt_write(1000, [0; 16], &[p(34, 932)], None).is_ok());
    }
}
