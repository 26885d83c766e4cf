//! The size of an image as `strip` would leave it, without running `strip`.
//!
//! Images are written by the linker with a symbol table (the kernel's
//! backtraces print addresses; the symbols are for offline lookup). The size
//! that counts is the stripped one: what `strip` keeps is the allocated
//! sections (the program headers and the section contents up to the end of
//! the last one with contents), the section name table and the section
//! headers of the kept sections.

use std::path::Path;

use crate::Error;

/// The largest stripped httpd image the project accepts (512 KiB); checked
/// by `tests/tests/size.rs`.
pub const HTTPD_MAX_STRIPPED: u64 = 512 * 1024;

const SHF_ALLOC: u64 = 2;
const SHT_NOBITS: u32 = 8;
const SHDR_LEN: u64 = 64;

fn field(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let s = b.get(at..at + n)?;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(s);
    Some(u64::from_le_bytes(v))
}

/// The stripped size of the ELF64 little-endian file `bytes`, or `None` if it
/// is not one (or its section headers are out of bounds).
pub fn stripped_len(bytes: &[u8]) -> Option<u64> {
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = usize::try_from(field(bytes, 0x28, 8)?).ok()?;
    let shentsize = usize::try_from(field(bytes, 0x3a, 2)?).ok()?;
    let shnum = usize::try_from(field(bytes, 0x3c, 2)?).ok()?;
    let shstrndx = usize::try_from(field(bytes, 0x3e, 2)?).ok()?;
    if shentsize < SHDR_LEN as usize {
        return None;
    }
    let shdr = |i: usize| bytes.get(shoff + i * shentsize..shoff + (i + 1) * shentsize);
    let names_off = usize::try_from(field(shdr(shstrndx)?, 24, 8)?).ok()?;
    let name_len = |name_at: u64| -> Option<u64> {
        let start = names_off.checked_add(usize::try_from(name_at).ok()?)?;
        let rest = bytes.get(start..)?;
        Some(rest.iter().position(|&c| c == 0)? as u64)
    };
    let mut end = 0u64;
    let mut kept = 0u64;
    // The name table starts with a NUL and ends with ".shstrtab\0".
    let mut names = 1 + ".shstrtab".len() as u64 + 1;
    for i in 1..shnum {
        let h = shdr(i)?;
        let (name, kind, flags) = (field(h, 0, 4)?, field(h, 4, 4)?, field(h, 8, 8)?);
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        kept += 1;
        names += name_len(name)? + 1;
        if kind != u64::from(SHT_NOBITS) {
            end = end.max(field(h, 24, 8)? + field(h, 32, 8)?);
        }
    }
    // Contents, the name table, then the headers (null, kept, name table)
    // at an 8-byte boundary.
    Some((end + names).next_multiple_of(8) + (kept + 2) * SHDR_LEN)
}

/// [`stripped_len`] of the file at `path`.
pub fn stripped_size(path: &Path) -> Result<u64, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Failed(format!("cannot read {}: {e}", path.display())))?;
    stripped_len(&bytes)
        .ok_or_else(|| Error::Failed(format!("{} is not an ELF64 image", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64: a header, `sections` (name, type, flags, offset,
    /// size) after a null one, and a name table.
    fn elf(sections: &[(&str, u32, u64, u64, u64)]) -> Vec<u8> {
        let mut names = vec![0u8];
        let mut name_at = Vec::new();
        for (n, ..) in sections {
            name_at.push(names.len() as u64);
            names.extend_from_slice(n.as_bytes());
            names.push(0);
        }
        let shstr_name = names.len() as u64;
        names.extend_from_slice(b".shstrtab\0");
        let names_off = 0x1000u64;
        let shoff = 0x2000u64;
        let mut b = vec![0u8; shoff as usize];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&(sections.len() as u16 + 2).to_le_bytes());
        b[0x3e..0x40].copy_from_slice(&(sections.len() as u16 + 1).to_le_bytes());
        b[names_off as usize..names_off as usize + names.len()].copy_from_slice(&names);
        let mut hdr = |name: u64, kind: u32, flags: u64, off: u64, size: u64| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&(name as u32).to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[8..16].copy_from_slice(&flags.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            b.extend_from_slice(&h);
        };
        hdr(0, 0, 0, 0, 0);
        for (i, &(_, kind, flags, off, size)) in sections.iter().enumerate() {
            hdr(name_at[i], kind, flags, off, size);
        }
        hdr(shstr_name, 3, 0, names_off, names.len() as u64);
        b
    }

    #[test]
    fn keeps_allocated_sections_only() {
        let f = elf(&[
            (".text", 1, SHF_ALLOC | 4, 0x100, 0x300),
            (".bss", SHT_NOBITS, SHF_ALLOC | 1, 0x400, 0x9000),
            (".symtab", 2, 0, 0x400, 0x800),
        ]);
        // Contents end at 0x400; names "\0.text\0.bss\0.shstrtab\0" (23
        // bytes) -> 0x417, rounded to 0x418; headers: null, .text, .bss,
        // .shstrtab.
        assert_eq!(stripped_len(&f), Some(0x418 + 4 * 64));
    }

    #[test]
    fn not_an_elf() {
        assert_eq!(stripped_len(b"MZ\0\0"), None);
        assert_eq!(stripped_len(b""), None);
        let mut f = elf(&[(".text", 1, SHF_ALLOC, 0x100, 0x10)]);
        f.truncate(0x2010);
        assert_eq!(stripped_len(&f), None);
    }
}
