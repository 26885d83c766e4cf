//! Just enough ACPI to find interrupt controllers and PCI configuration space:
//! the RSDP, the RSDT/XSDT, the MADT ("APIC") and the MCFG. Physical memory is
//! read through a caller-supplied function, so the parser runs on the host
//! against byte arrays and in the kernel against firmware memory. Every length
//! and count is checked; a corrupt table yields an error or is skipped, never a
//! panic.

use alloc::vec::Vec;

/// Reads `buf.len()` bytes of physical memory at an address; false if it cannot.
pub trait PhysRead {
    /// Fills `buf` from physical address `addr`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

impl<F: Fn(u64, &mut [u8]) -> bool> PhysRead for F {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self(addr, buf)
    }
}

/// Why the tables could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// No RSDP signature at the given address.
    NoRsdp,
    /// A checksum did not add up to zero.
    BadChecksum,
    /// A table is shorter than its header says, or unreadable.
    Truncated,
}

/// An I/O APIC from the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApicInfo {
    /// Its APIC id.
    pub id: u8,
    /// Physical address of its registers.
    pub addr: u64,
    /// First global system interrupt it serves.
    pub gsi_base: u32,
}

/// An ISA IRQ that is wired to a different GSI, or with other polarity/trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqOverride {
    /// The ISA IRQ.
    pub source: u8,
    /// The GSI it arrives on.
    pub gsi: u32,
    /// MPS INTI flags: bits 0-1 polarity, 2-3 trigger mode.
    pub flags: u16,
}

/// A PCI Express ECAM window from the MCFG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamInfo {
    /// Physical base of the window.
    pub base: u64,
    /// PCI segment group.
    pub segment: u16,
    /// First bus decoded.
    pub bus_start: u8,
    /// Last bus decoded.
    pub bus_end: u8,
}

/// What the kernel needs from ACPI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformInfo {
    /// The local APIC's physical address.
    pub lapic_addr: u64,
    /// APIC ids of enabled processors.
    pub cpus: Vec<u32>,
    /// I/O APICs.
    pub ioapics: Vec<IoApicInfo>,
    /// ISA IRQ overrides.
    pub overrides: Vec<IrqOverride>,
    /// PCI Express configuration windows.
    pub ecam: Vec<EcamInfo>,
}

impl PlatformInfo {
    /// The GSI and (level, active_low) of ISA IRQ `irq`.
    pub fn isa_irq(&self, irq: u8) -> (u32, bool, bool) {
        match self.overrides.iter().find(|o| o.source == irq) {
            Some(o) => {
                let active_low = o.flags & 0b11 == 0b11;
                let level = (o.flags >> 2) & 0b11 == 0b11;
                (o.gsi, level, active_low)
            }
            None => (irq as u32, false, false),
        }
    }
}

const MAX_TABLES: usize = 64;
const MAX_TABLE_LEN: usize = 64 * 1024;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    (u32_at(b, o) as u64) | ((u32_at(b, o + 4) as u64) << 32)
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
}

fn read_table(mem: &impl PhysRead, addr: u64) -> Result<Vec<u8>, AcpiError> {
    let mut hdr = [0u8; 36];
    if !mem.read(addr, &mut hdr) {
        return Err(AcpiError::Truncated);
    }
    let len = u32_at(&hdr, 4) as usize;
    if !(36..=MAX_TABLE_LEN).contains(&len) {
        return Err(AcpiError::Truncated);
    }
    let mut t = alloc::vec![0u8; len];
    if !mem.read(addr, &mut t) {
        return Err(AcpiError::Truncated);
    }
    if !checksum_ok(&t) {
        return Err(AcpiError::BadChecksum);
    }
    Ok(t)
}

/// Reads the platform description starting at the RSDP at `rsdp`.
pub fn parse(mem: &impl PhysRead, rsdp: u64) -> Result<PlatformInfo, AcpiError> {
    let mut r = [0u8; 36];
    if !mem.read(rsdp, &mut r[..20]) {
        return Err(AcpiError::NoRsdp);
    }
    if &r[..8] != b"RSD PTR " {
        return Err(AcpiError::NoRsdp);
    }
    if !checksum_ok(&r[..20]) {
        return Err(AcpiError::BadChecksum);
    }
    let revision = r[15];
    let (root, entry_size) =
        if revision >= 2 && mem.read(rsdp, &mut r) && checksum_ok(&r) && u64_at(&r, 24) != 0 {
            (u64_at(&r, 24), 8)
        } else {
            (u32_at(&r, 16) as u64, 4)
        };
    let root = read_table(mem, root)?;
    let n = ((root.len() - 36) / entry_size).min(MAX_TABLES);
    let mut info = PlatformInfo::default();
    for i in 0..n {
        let o = 36 + i * entry_size;
        let addr = if entry_size == 8 {
            u64_at(&root, o)
        } else {
            u32_at(&root, o) as u64
        };
        let Ok(t) = read_table(mem, addr) else {
            continue;
        };
        match &t[..4] {
            b"APIC" => parse_madt(&t, &mut info),
            b"MCFG" => parse_mcfg(&t, &mut info),
            _ => {}
        }
    }
    Ok(info)
}

fn parse_madt(t: &[u8], info: &mut PlatformInfo) {
    if t.len() < 44 {
        return;
    }
    info.lapic_addr = u32_at(t, 36) as u64;
    let mut o = 44;
    while o + 2 <= t.len() {
        let (kind, len) = (t[o], t[o + 1] as usize);
        if len < 2 || o + len > t.len() {
            break;
        }
        let e = &t[o..o + len];
        match kind {
            0 if len >= 8 && u32_at(e, 4) & 1 != 0 => info.cpus.push(e[3] as u32),
            1 if len >= 12 => info.ioapics.push(IoApicInfo {
                id: e[2],
                addr: u32_at(e, 4) as u64,
                gsi_base: u32_at(e, 8),
            }),
            2 if len >= 10 => info.overrides.push(IrqOverride {
                source: e[3],
                gsi: u32_at(e, 4),
                flags: u16_at(e, 8),
            }),
            5 if len >= 12 => info.lapic_addr = u64_at(e, 4),
            9 if len >= 16 && u32_at(e, 8) & 1 != 0 => info.cpus.push(u32_at(e, 4)),
            _ => {}
        }
        o += len;
    }
}

fn parse_mcfg(t: &[u8], info: &mut PlatformInfo) {
    let mut o = 44;
    while o + 16 <= t.len() {
        info.ecam.push(EcamInfo {
            base: u64_at(t, o),
            segment: u16_at(t, o + 8),
            bus_start: t[o + 10],
            bus_end: t[o + 11],
        });
        o += 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec;

    struct Mem(BTreeMap<u64, Vec<u8>>);

    impl PhysRead for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            for (&base, bytes) in &self.0 {
                if addr >= base && addr + buf.len() as u64 <= base + bytes.len() as u64 {
                    let o = (addr - base) as usize;
                    buf.copy_from_slice(&bytes[o..o + buf.len()]);
                    return true;
                }
            }
            false
        }
    }

    fn fix_checksum(t: &mut [u8], at: usize) {
        t[at] = 0;
        let s = t.iter().fold(0u8, |a, &x| a.wrapping_add(x));
        t[at] = 0u8.wrapping_sub(s);
    }

    fn table(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 36];
        t[..4].copy_from_slice(sig);
        t.extend_from_slice(body);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut t, 9);
        t
    }

    fn madt() -> Vec<u8> {
        let mut b = vec![];
        b.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // cpu apic 0 enabled
        b.extend_from_slice(&[0, 8, 1, 1, 0, 0, 0, 0]); // cpu apic 1 disabled
        b.extend_from_slice(&[1, 12, 0, 0]);
        b.extend_from_slice(&0xfec0_0000u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&[2, 10, 0, 0]);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&[2, 10, 0, 9]);
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&0x000fu16.to_le_bytes());
        table(b"APIC", &b)
    }

    fn mcfg() -> Vec<u8> {
        let mut b = vec![0u8; 8];
        b.extend_from_slice(&0xb000_0000u64.to_le_bytes());
        b.extend_from_slice(&[0, 0, 0, 255, 0, 0, 0, 0]);
        table(b"MCFG", &b)
    }

    fn platform(xsdt: bool) -> Mem {
        let mut m = BTreeMap::new();
        m.insert(0x2000, madt());
        m.insert(0x3000, mcfg());
        let mut rsdp = vec![0u8; 36];
        rsdp[..8].copy_from_slice(b"RSD PTR ");
        if xsdt {
            let mut body = vec![];
            body.extend_from_slice(&0x2000u64.to_le_bytes());
            body.extend_from_slice(&0x3000u64.to_le_bytes());
            body.extend_from_slice(&0xdead_0000u64.to_le_bytes()); // unreadable: skipped
            m.insert(0x1000, table(b"XSDT", &body));
            rsdp[15] = 2;
            rsdp[20..24].copy_from_slice(&36u32.to_le_bytes());
            rsdp[24..32].copy_from_slice(&0x1000u64.to_le_bytes());
        } else {
            let mut body = vec![];
            body.extend_from_slice(&0x2000u32.to_le_bytes());
            body.extend_from_slice(&0x3000u32.to_le_bytes());
            m.insert(0x1000, table(b"RSDT", &body));
            rsdp[16..20].copy_from_slice(&0x1000u32.to_le_bytes());
        }
        fix_checksum(&mut rsdp[..20], 8);
        if xsdt {
            fix_checksum(&mut rsdp, 32);
        }
        m.insert(0xe0000, rsdp);
        Mem(m)
    }

    #[test]
    fn parses_madt_and_mcfg_through_rsdt_and_xsdt() {
        for xsdt in [false, true] {
            let info = parse(&platform(xsdt), 0xe0000).unwrap();
            assert_eq!(info.lapic_addr, 0xfee0_0000);
            assert_eq!(info.cpus, vec![0]);
            assert_eq!(
                info.ioapics,
                vec![IoApicInfo {
                    id: 0,
                    addr: 0xfec0_0000,
                    gsi_base: 0
                }]
            );
            assert_eq!(info.isa_irq(0), (2, false, false));
            assert_eq!(info.isa_irq(9), (9, true, true));
            assert_eq!(info.isa_irq(4), (4, false, false));
            assert_eq!(
                info.ecam,
                vec![EcamInfo {
                    base: 0xb000_0000,
                    segment: 0,
                    bus_start: 0,
                    bus_end: 255
                }]
            );
        }
    }

    #[test]
    fn rejects_bad_rsdp_and_checksums() {
        let m = platform(false);
        assert_eq!(parse(&m, 0x2000), Err(AcpiError::NoRsdp));
        assert_eq!(parse(&m, 0x9999_0000), Err(AcpiError::NoRsdp));
        let mut bad = platform(false);
        bad.0.get_mut(&0xe0000).unwrap()[9] ^= 1;
        assert_eq!(parse(&bad, 0xe0000), Err(AcpiError::BadChecksum));
        let mut bad_root = platform(false);
        bad_root.0.get_mut(&0x1000).unwrap()[40] ^= 1;
        assert_eq!(parse(&bad_root, 0xe0000), Err(AcpiError::BadChecksum));
    }

    #[test]
    fn corrupt_madt_entries_never_panic() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            let mut m = platform(true);
            let t = m.0.get_mut(&0x2000).unwrap();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = 36 + (seed as usize % (t.len() - 36));
                t[i] = (seed >> 32) as u8;
            }
            fix_checksum(t, 9);
            let _ = parse(&m, 0xe0000);
        }
    }
}
