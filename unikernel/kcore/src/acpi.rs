//! Just enough ACPI to find interrupt controllers, PCI configuration space and
//! the power-management registers: the RSDP, the RSDT/XSDT, the MADT
//! ("APIC"), the MCFG and the FADT ("FACP"). Physical memory is
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
    /// APIC ids of the processors that are enabled or online capable
    /// (MADT Processor Local APIC and Processor Local x2APIC entries, flags
    /// bit 0 or 1), in table order; may repeat an id listed in both forms.
    pub cpus: Vec<u32>,
    /// I/O APICs.
    pub ioapics: Vec<IoApicInfo>,
    /// ISA IRQ overrides.
    pub overrides: Vec<IrqOverride>,
    /// PCI Express configuration windows.
    pub ecam: Vec<EcamInfo>,
    /// The fixed ACPI description (power management), if there is one.
    pub fadt: Option<Fadt>,
}

/// A register address from a FADT Generic Address Structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegAddr {
    /// Memory-mapped, at this physical address.
    Memory(u64),
    /// An I/O port.
    Port(u16),
}

/// What the kernel uses of the FADT: where the power button reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fadt {
    /// The SCI's interrupt (an ISA IRQ below 16, otherwise a GSI).
    pub sci_int: u16,
    /// The port that switches the chipset into ACPI mode (0: always in it).
    pub smi_cmd: u32,
    /// The value to write to `smi_cmd` for that.
    pub acpi_enable: u8,
    /// The PM1a event block port: status (2 bytes) then enable (2 bytes).
    pub pm1a_evt: u16,
    /// The PM1a control block port (SCI_EN is bit 0).
    pub pm1a_cnt: u16,
    /// PM1 event block length in bytes (4 with 16-bit registers).
    pub pm1_evt_len: u8,
    /// The GPE0 block port: status bytes, then as many enable bytes.
    pub gpe0_blk: u16,
    /// GPE0 block length in bytes (both halves).
    pub gpe0_len: u8,
    /// The FADT flags.
    pub flags: u32,
    /// ACPI 5.0 hardware-reduced platform (no PM1 blocks, no SCI_EN).
    pub hw_reduced: bool,
    /// The hardware-reduced sleep control register, when the FADT has one.
    pub sleep_control: Option<RegAddr>,
    /// The table's OEM id.
    pub oem_id: [u8; 6],
}

impl Fadt {
    /// FADT flag: the power button is a control-method device (or there is
    /// none) rather than the fixed-feature PWRBTN bits.
    pub const PWR_BUTTON: u32 = 1 << 4;
    /// FADT flag: hardware-reduced ACPI.
    pub const HW_REDUCED_ACPI: u32 = 1 << 20;

    /// True when the fixed-feature power button in PM1a can be used.
    pub fn has_fixed_power_button(&self) -> bool {
        !self.hw_reduced && self.pm1a_evt != 0 && self.pm1_evt_len >= 4
    }
}

/// PM1 status/enable bit of the fixed-feature power button.
pub const PM1_PWRBTN: u16 = 1 << 8;
/// Every defined PM1 status bit (timer, bus master, global lock, power and
/// sleep buttons, RTC, wake): written back to clear them all.
pub const PM1_STS_ALL_FIXED: u16 = 0x8731;
/// PM1 control bit: the chipset is in ACPI mode (events raise the SCI).
pub const PM1_SCI_EN: u16 = 1;

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

/// Where an RSDP may sit when the loader passes none (ACPI 5.2.5.1, "IA-PC
/// systems"): the BIOS read-only area, `[start, end)` physical, where BIOS
/// firmware and VMMs without a way to pass it leave it for a scan.
pub const BIOS_AREA: (u64, u64) = (0xe_0000, 0x10_0000);

/// The physical address of the first RSDP in `area`, which starts at the
/// 16-byte aligned physical address `base`: the signature on a 16-byte
/// boundary and an ACPI 1.0 checksum that adds up.
pub fn find_rsdp(area: &[u8], base: u64) -> Option<u64> {
    (0..area.len().saturating_sub(19))
        .step_by(16)
        .find(|&o| &area[o..o + 8] == b"RSD PTR " && checksum_ok(&area[o..o + 20]))
        .map(|o| base + o as u64)
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
            b"FACP" if info.fadt.is_none() => info.fadt = parse_fadt(&t),
            _ => {}
        }
    }
    Ok(info)
}

/// MADT processor flags: enabled (bit 0) or online capable (bit 1, ACPI
/// 6.3: disabled now but may be started by the OS).
const CPU_USABLE: u32 = 0b11;

/// The application processors to start: the MADT's processors (`cpus`)
/// without the boot CPU (`bsp`), without repeats, without ids the local
/// APIC cannot address (above 254 in xAPIC mode, the all-ones broadcast id
/// in x2APIC mode), at most `max` of them, in table order.
pub fn ap_targets(cpus: &[u32], bsp: u32, x2apic: bool, max: usize) -> Vec<u32> {
    let limit = if x2apic { u32::MAX - 1 } else { 0xfe };
    let mut out = Vec::new();
    for &id in cpus {
        if out.len() == max {
            break;
        }
        if id != bsp && id <= limit && !out.contains(&id) {
            out.push(id);
        }
    }
    out
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
            0 if len >= 8 && u32_at(e, 4) & CPU_USABLE != 0 => info.cpus.push(e[3] as u32),
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
            9 if len >= 16 && u32_at(e, 8) & CPU_USABLE != 0 => info.cpus.push(u32_at(e, 4)),
            _ => {}
        }
        o += len;
    }
}

/// A Generic Address Structure at `o`, if the table is long enough and the
/// address is set: system memory (space 0) or system I/O (space 1).
fn gas_at(t: &[u8], o: usize) -> Option<RegAddr> {
    if t.len() < o + 12 {
        return None;
    }
    let addr = u64_at(t, o + 4);
    match (t[o], addr) {
        (_, 0) => None,
        (0, a) => Some(RegAddr::Memory(a)),
        (1, a) => u16::try_from(a).ok().map(RegAddr::Port),
        _ => None,
    }
}

/// A port from a legacy 32-bit block field, or else from its 64-bit GAS.
fn port_at(t: &[u8], legacy: usize, gas: usize) -> u16 {
    let p = u32_at(t, legacy);
    if p != 0 {
        return u16::try_from(p).unwrap_or(0);
    }
    match gas_at(t, gas) {
        Some(RegAddr::Port(p)) => p,
        _ => 0,
    }
}

fn parse_fadt(t: &[u8]) -> Option<Fadt> {
    // Everything up to the flags (offset 112) is in every FADT revision.
    if t.len() < 116 {
        return None;
    }
    let flags = u32_at(t, 112);
    let mut oem_id = [0u8; 6];
    oem_id.copy_from_slice(&t[10..16]);
    Some(Fadt {
        sci_int: u16_at(t, 46),
        smi_cmd: u32_at(t, 48),
        acpi_enable: t[52],
        pm1a_evt: port_at(t, 56, 148),
        pm1a_cnt: port_at(t, 64, 172),
        pm1_evt_len: t[88],
        gpe0_blk: port_at(t, 80, 220),
        gpe0_len: t[92],
        flags,
        hw_reduced: flags & Fadt::HW_REDUCED_ACPI != 0,
        sleep_control: gas_at(t, 244),
        oem_id,
    })
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
        b.extend_from_slice(&[0, 8, 2, 2, 2, 0, 0, 0]); // cpu apic 2 online capable
        b.extend_from_slice(&[9, 16, 0, 0]); // x2APIC 0x100 enabled
        b.extend_from_slice(&0x100u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(&[9, 16, 0, 0]); // x2APIC 0x101 disabled
        b.extend_from_slice(&0x101u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&[0, 4, 3, 3]); // too short for its flags: skipped
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

    /// A FADT as QEMU 7.2 builds it for q35 (ICH9, revision 3), or for
    /// microvm (hardware-reduced, revision 5, GED sleep registers).
    fn fadt(microvm: bool) -> Vec<u8> {
        let len = if microvm { 276 } else { 244 };
        let mut b = vec![0u8; len - 36];
        let mut put32 = |o: usize, v: u32| b[o - 36..o - 32].copy_from_slice(&v.to_le_bytes());
        if microvm {
            put32(112, Fadt::HW_REDUCED_ACPI);
        } else {
            put32(48, 0xb2);
            put32(56, 0x600);
            put32(64, 0x604);
            put32(80, 0x620);
            put32(112, 0x84a5);
        }
        if microvm {
            // SLEEP_CONTROL_REG: system memory, 8 bits, at 0xfea00200.
            b[244 - 36..244 - 36 + 4].copy_from_slice(&[0, 8, 0, 1]);
            b[248 - 36..256 - 36].copy_from_slice(&0xfea0_0200u64.to_le_bytes());
        } else {
            b[46 - 36] = 9;
            b[52 - 36] = 2;
            b[88 - 36] = 4;
            b[89 - 36] = 2;
            b[92 - 36] = 16;
        }
        let mut t = table(b"FACP", &b);
        t[10..16].copy_from_slice(b"BOCHS ");
        fix_checksum(&mut t, 9);
        t
    }

    #[test]
    fn parses_the_fadt_of_q35_and_microvm() {
        let q35 = parse_fadt(&fadt(false)).unwrap();
        assert_eq!(q35.sci_int, 9);
        assert_eq!((q35.smi_cmd, q35.acpi_enable), (0xb2, 2));
        assert_eq!(
            (q35.pm1a_evt, q35.pm1a_cnt, q35.pm1_evt_len),
            (0x600, 0x604, 4)
        );
        assert_eq!((q35.gpe0_blk, q35.gpe0_len), (0x620, 16));
        assert!(!q35.hw_reduced);
        assert!(q35.has_fixed_power_button());
        assert_eq!(q35.sleep_control, None);
        assert_eq!(&q35.oem_id, b"BOCHS ");
        let micro = parse_fadt(&fadt(true)).unwrap();
        assert!(micro.hw_reduced);
        assert!(!micro.has_fixed_power_button());
        assert_eq!(micro.sleep_control, Some(RegAddr::Memory(0xfea0_0200)));
        // Too short for the flags: no FADT.
        assert_eq!(parse_fadt(&table(b"FACP", &[0u8; 40])), None);
    }

    fn platform(xsdt: bool) -> Mem {
        let mut m = BTreeMap::new();
        m.insert(0x2000, madt());
        m.insert(0x3000, mcfg());
        m.insert(0x4000, fadt(false));
        let mut rsdp = vec![0u8; 36];
        rsdp[..8].copy_from_slice(b"RSD PTR ");
        if xsdt {
            let mut body = vec![];
            body.extend_from_slice(&0x2000u64.to_le_bytes());
            body.extend_from_slice(&0x3000u64.to_le_bytes());
            body.extend_from_slice(&0x4000u64.to_le_bytes());
            body.extend_from_slice(&0xdead_0000u64.to_le_bytes()); // unreadable: skipped
            m.insert(0x1000, table(b"XSDT", &body));
            rsdp[15] = 2;
            rsdp[20..24].copy_from_slice(&36u32.to_le_bytes());
            rsdp[24..32].copy_from_slice(&0x1000u64.to_le_bytes());
        } else {
            let mut body = vec![];
            body.extend_from_slice(&0x2000u32.to_le_bytes());
            body.extend_from_slice(&0x3000u32.to_le_bytes());
            body.extend_from_slice(&0x4000u32.to_le_bytes());
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
            assert_eq!(info.cpus, vec![0, 2, 0x100]);
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
            let f = info.fadt.unwrap();
            assert_eq!((f.sci_int, f.pm1a_evt), (9, 0x600));
        }
    }

    #[test]
    fn ap_targets_skip_the_bsp_repeats_and_unaddressable_ids() {
        let cpus = [0, 1, 2, 1, 0x100, 0xff, 0xffff_ffff, 3];
        assert_eq!(ap_targets(&cpus, 0, false, 16), vec![1, 2, 3]);
        assert_eq!(ap_targets(&cpus, 2, true, 16), vec![0, 1, 0x100, 0xff, 3]);
        assert_eq!(ap_targets(&cpus, 0, true, 2), vec![1, 2]);
        assert_eq!(ap_targets(&[0], 0, true, 16), Vec::<u32>::new());
        assert_eq!(ap_targets(&[], 0, true, 16), Vec::<u32>::new());
    }

    #[test]
    fn madt_entries_cut_short_end_the_list() {
        // A processor entry whose length runs past the table: parsing
        // stops there, keeping what came before.
        let mut b = vec![];
        b.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]);
        b.extend_from_slice(&[0, 8, 1, 1, 1, 0, 0, 0]);
        b.extend_from_slice(&[9, 16, 0, 0, 5, 0]);
        let mut info = PlatformInfo::default();
        let t = table(b"APIC", &b);
        let n = t.len();
        let mut cut = t.clone();
        cut[n - 5] = 40; // the x2APIC entry claims 40 bytes
        parse_madt(&cut, &mut info);
        assert_eq!(info.cpus, vec![0, 1]);
        // A zero-length entry would loop forever: it ends the walk too.
        let mut zero = t;
        zero[n - 5] = 0;
        let mut info = PlatformInfo::default();
        parse_madt(&zero, &mut info);
        assert_eq!(info.cpus, vec![0, 1]);
    }

    #[test]
    fn finds_the_rsdp_in_the_bios_area() {
        let mut area = vec![0u8; 0x400];
        // A valid RSDP off the 16-byte grid, and one on it whose checksum
        // fails: both skipped.
        let rsdp = platform(false).0[&0xe0000].clone();
        area[0x28..0x28 + 20].copy_from_slice(&rsdp[..20]);
        area[0x40..0x48].copy_from_slice(b"RSD PTR ");
        area[0x48] = 1;
        assert_eq!(find_rsdp(&area, 0xe0000), None);
        area[0x100..0x100 + 20].copy_from_slice(&rsdp[..20]);
        assert_eq!(find_rsdp(&area, 0xe0000), Some(0xe0100));
        // The parser accepts what was found.
        let info = parse(&platform(false), 0xe0000).unwrap();
        assert_eq!(info.cpus, vec![0, 2, 0x100]);
        // A signature too close to the end to hold 20 bytes: not read past it.
        let mut short = vec![0u8; 0x20];
        short[0x10..0x18].copy_from_slice(b"RSD PTR ");
        assert_eq!(find_rsdp(&short, 0), None);
        assert_eq!(find_rsdp(&[], 0), None);
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
