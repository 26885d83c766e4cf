//! The Multiboot2 boot information (MBI) that GRUB passes in `ebx` when it
//! loads the kernel with `multiboot2` (disk boot under BIOS or UEFI).
//!
//! The kernel copies the MBI into a byte slice and calls [`parse`]; this
//! module only reads bytes, so the tests feed it hand-built MBIs.
//!
//! Layout (Multiboot2 specification, section 3.6): `u32 total_size`,
//! `u32 reserved`, then tags, each `u32 type`, `u32 size` (header
//! included), padded to 8 bytes; type 0 ends the list. The tags used here:
//!
//! | type | tag | payload |
//! | --- | --- | --- |
//! | 1 | boot command line | NUL-terminated string |
//! | 6 | memory map | `u32 entry_size`, `u32 entry_version`, entries of `u64 base, u64 len, u32 type, u32 reserved` (e820 types) |
//! | 14 | ACPI old RSDP | a copy of the RSDP (20 bytes) |
//! | 15 | ACPI new RSDP | a copy of the RSDP (36 bytes) |

use crate::frame::{MemRegion, RegionKind};

/// The value of `eax` when a Multiboot2 loader enters the kernel.
pub const BOOTLOADER_MAGIC: u32 = 0x36d7_6289;
/// The first word of the Multiboot2 header in the image.
pub const HEADER_MAGIC: u32 = 0xe852_50d6;

const TAG_END: u32 = 0;
const TAG_CMDLINE: u32 = 1;
const TAG_MMAP: u32 = 6;
const TAG_ACPI_OLD: u32 = 14;
const TAG_ACPI_NEW: u32 = 15;

/// Why an MBI is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MbiError {
    /// Shorter than its header, or `total_size` larger than the bytes given.
    Truncated,
    /// A tag runs past the end of the MBI or is shorter than its header.
    BadTag {
        /// Offset of the tag.
        offset: usize,
    },
}

/// The parts of an MBI the kernel uses, borrowed from the MBI bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mbi<'a> {
    /// The command line, without its NUL (GRUB passes the arguments after
    /// the kernel path only).
    pub cmdline: Option<&'a [u8]>,
    /// The memory map tag's entry area and entry size.
    mmap: Option<(&'a [u8], usize)>,
    /// The ACPI 2.0+ RSDP copy (tag 15), if any.
    pub rsdp_v2: Option<&'a [u8]>,
    /// The ACPI 1.0 RSDP copy (tag 14), if any.
    pub rsdp_v1: Option<&'a [u8]>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// The MBI's `total_size` field, from its first 4 bytes.
pub fn total_size(head: &[u8; 8]) -> usize {
    u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize
}

/// Parses an MBI (`mbi` holds at least `total_size` bytes).
pub fn parse(mbi: &[u8]) -> Result<Mbi<'_>, MbiError> {
    let total = u32_at(mbi, 0).ok_or(MbiError::Truncated)? as usize;
    if total < 8 || total > mbi.len() {
        return Err(MbiError::Truncated);
    }
    let mbi = &mbi[..total];
    let mut out = Mbi::default();
    let mut off = 8;
    while off + 8 <= total {
        let ty = u32_at(mbi, off).ok_or(MbiError::BadTag { offset: off })?;
        let size = u32_at(mbi, off + 4).ok_or(MbiError::BadTag { offset: off })? as usize;
        if ty == TAG_END {
            break;
        }
        if size < 8 || off + size > total {
            return Err(MbiError::BadTag { offset: off });
        }
        let body = &mbi[off + 8..off + size];
        match ty {
            TAG_CMDLINE => {
                let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                out.cmdline = Some(&body[..end]);
            }
            TAG_MMAP => {
                let esize = u32_at(body, 0).unwrap_or(0) as usize;
                if esize >= 24 && body.len() >= 8 {
                    out.mmap = Some((&body[8..], esize));
                }
            }
            TAG_ACPI_OLD => out.rsdp_v1 = Some(body),
            TAG_ACPI_NEW => out.rsdp_v2 = Some(body),
            _ => {}
        }
        off += size.div_ceil(8) * 8;
    }
    Ok(out)
}

impl<'a> Mbi<'a> {
    /// The memory map as [`MemRegion`]s (types are e820 codes).
    pub fn memory_map(&self) -> impl Iterator<Item = MemRegion> + 'a {
        let (area, esize) = self.mmap.unwrap_or((&[], 24));
        area.chunks_exact(esize).filter_map(|e| {
            Some(MemRegion {
                start: u64_at(e, 0)?,
                len: u64_at(e, 8)?,
                kind: RegionKind::from_e820(u32_at(e, 16)?),
            })
        })
    }

    /// The RSDP copy to hand to the ACPI parser: the 2.0+ one when present.
    pub fn rsdp(&self) -> Option<&'a [u8]> {
        self.rsdp_v2.or(self.rsdp_v1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn tag(out: &mut Vec<u8>, ty: u32, body: &[u8]) {
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&(8 + body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }

    fn mbi(tags: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = alloc::vec![0u8; 8];
        tags(&mut v);
        tag(&mut v, TAG_END, &[]);
        let n = v.len() as u32;
        v[..4].copy_from_slice(&n.to_le_bytes());
        v
    }

    fn mmap_body(entries: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&24u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for &(base, len, ty) in entries {
            b.extend_from_slice(&base.to_le_bytes());
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
        }
        b
    }

    #[test]
    fn grub_like_mbi() {
        let m = mbi(|v| {
            tag(v, TAG_CMDLINE, b"console=ttyS0 log=debug -- a b\0");
            tag(v, 2, b"GRUB 2.06\0"); // boot loader name: skipped
            tag(
                v,
                TAG_MMAP,
                &mmap_body(&[
                    (0, 0x9fc00, 1),
                    (0x9fc00, 0x400, 2),
                    (0x10_0000, 0x7ee_0000, 1),
                ]),
            );
            let mut rsdp = [0u8; 20];
            rsdp[..8].copy_from_slice(b"RSD PTR ");
            tag(v, TAG_ACPI_OLD, &rsdp);
        });
        let p = parse(&m).unwrap();
        assert_eq!(p.cmdline, Some(&b"console=ttyS0 log=debug -- a b"[..]));
        let map: Vec<_> = p.memory_map().collect();
        assert_eq!(map.len(), 3);
        assert_eq!(map[1].kind, RegionKind::Reserved);
        assert_eq!(map[2].start, 0x10_0000);
        assert_eq!(map[2].len, 0x7ee_0000);
        assert_eq!(map[2].kind, RegionKind::Ram);
        assert_eq!(p.rsdp().unwrap().len(), 20);
        assert!(p.rsdp_v2.is_none());
    }

    #[test]
    fn new_rsdp_wins_and_larger_entries() {
        let m = mbi(|v| {
            tag(v, TAG_ACPI_OLD, &[1; 20]);
            tag(v, TAG_ACPI_NEW, &[2; 36]);
            // 32-byte entries (a future entry version): extra bytes skipped.
            let mut b = Vec::new();
            b.extend_from_slice(&32u32.to_le_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            for i in 0..2u64 {
                b.extend_from_slice(&(i << 20).to_le_bytes());
                b.extend_from_slice(&(1u64 << 20).to_le_bytes());
                b.extend_from_slice(&3u32.to_le_bytes());
                b.extend_from_slice(&[0; 12]);
            }
            tag(v, TAG_MMAP, &b);
        });
        let p = parse(&m).unwrap();
        assert_eq!(p.rsdp().unwrap(), &[2; 36]);
        let map: Vec<_> = p.memory_map().collect();
        assert_eq!(map.len(), 2);
        assert_eq!(map[1].start, 1 << 20);
        assert_eq!(map[1].kind, RegionKind::Acpi);
        assert_eq!(p.cmdline, None);
    }

    #[test]
    fn malformed() {
        assert_eq!(parse(&[]), Err(MbiError::Truncated));
        assert_eq!(parse(&[4, 0, 0, 0, 0, 0, 0, 0]), Err(MbiError::Truncated));
        let mut m = mbi(|v| tag(v, TAG_CMDLINE, b"x\0"));
        assert!(parse(&m[..m.len() - 1]).is_err());
        // A tag claiming to run past the end.
        m[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(parse(&m), Err(MbiError::BadTag { offset: 8 }));
        // A tag shorter than its header.
        m[12..16].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(parse(&m), Err(MbiError::BadTag { offset: 8 }));
        // No end tag: stops at total_size.
        let mut m = alloc::vec![0u8; 8];
        tag(&mut m, TAG_CMDLINE, b"y\0");
        let n = m.len() as u32;
        m[..4].copy_from_slice(&n.to_le_bytes());
        assert_eq!(parse(&m).unwrap().cmdline, Some(&b"y"[..]));
        assert_eq!(total_size(&[16, 0, 0, 0, 0, 0, 0, 0]), 16);
    }
}
