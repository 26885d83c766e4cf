//! The superblock and group descriptors.

use alloc::vec::Vec;

use crate::crc32c::crc32c;
use crate::error::{Ext4Error, Result};
use crate::{le16, le32};

/// Superblock magic.
pub const EXT4_MAGIC: u16 = 0xef53;

/// `INCOMPAT_*` feature bits.
pub mod incompat {
    /// Compression (never implemented by Linux).
    pub const COMPRESSION: u32 = 0x1;
    /// Directory entries carry a file type.
    pub const FILETYPE: u32 = 0x2;
    /// The journal needs recovery.
    pub const RECOVER: u32 = 0x4;
    /// An external journal device.
    pub const JOURNAL_DEV: u32 = 0x8;
    /// Meta block groups.
    pub const META_BG: u32 = 0x10;
    /// Extent trees.
    pub const EXTENTS: u32 = 0x40;
    /// 64-bit block numbers.
    pub const BIT64: u32 = 0x80;
    /// Multiple-mount protection.
    pub const MMP: u32 = 0x100;
    /// Flexible block groups.
    pub const FLEX_BG: u32 = 0x200;
    /// Large extended attributes in inodes.
    pub const EA_INODE: u32 = 0x400;
    /// Data in directory entries.
    pub const DIRDATA: u32 = 0x1000;
    /// Checksum seed in the superblock.
    pub const CSUM_SEED: u32 = 0x2000;
    /// Directories over 2 GiB or with 3-level htrees.
    pub const LARGEDIR: u32 = 0x4000;
    /// Data inside the inode.
    pub const INLINE_DATA: u32 = 0x8000;
    /// Encrypted inodes.
    pub const ENCRYPT: u32 = 0x10000;
    /// Case-insensitive directories.
    pub const CASEFOLD: u32 = 0x20000;

    /// Features this reader handles.
    pub const SUPPORTED: u32 =
        FILETYPE | EXTENTS | BIT64 | MMP | FLEX_BG | EA_INODE | CSUM_SEED | LARGEDIR;

    /// Known features this reader refuses, with their names.
    pub const REFUSED: [(u32, &str); 8] = [
        (COMPRESSION, "compression"),
        (
            RECOVER,
            "needs_recovery (the journal must be replayed: run e2fsck)",
        ),
        (JOURNAL_DEV, "journal_dev"),
        (META_BG, "meta_bg"),
        (DIRDATA, "dirdata"),
        (
            INLINE_DATA,
            "inline_data (make the image without -O inline_data)",
        ),
        (ENCRYPT, "encrypt"),
        (CASEFOLD, "casefold"),
    ];
}

/// `RO_COMPAT_*` feature bits this reader looks at (any others are fine for
/// reading).
pub mod ro_compat {
    /// Files over 2 GiB.
    pub const LARGE_FILE: u32 = 0x2;
    /// `i_blocks` may be in file-system blocks.
    pub const HUGE_FILE: u32 = 0x8;
    /// CRC32C checksums on metadata.
    pub const METADATA_CSUM: u32 = 0x400;
}

/// The fields of the superblock this reader uses.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// Block size in bytes (1 KiB .. 64 KiB).
    pub block_size: u32,
    /// Total blocks.
    pub blocks_count: u64,
    /// Total inodes.
    pub inodes_count: u32,
    /// First data block (1 for 1 KiB blocks, else 0).
    pub first_data_block: u32,
    /// Blocks per group.
    pub blocks_per_group: u32,
    /// Inodes per group.
    pub inodes_per_group: u32,
    /// Bytes per on-disk inode.
    pub inode_size: u32,
    /// Bytes per group descriptor (32, or 64 with `64bit`).
    pub desc_size: u32,
    /// Feature bits.
    pub feature_compat: u32,
    /// Feature bits.
    pub feature_incompat: u32,
    /// Feature bits.
    pub feature_ro_compat: u32,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Volume label (NUL padded).
    pub volume_name: [u8; 16],
    /// Seed of the metadata checksums.
    pub csum_seed: u32,
    /// Number of block groups.
    pub group_count: u32,
    /// Free blocks (as of the last write).
    pub free_blocks: u64,
    /// Free inodes (as of the last write).
    pub free_inodes: u32,
}

impl Superblock {
    /// Parses and checks the 1024-byte superblock. `device_size` is the
    /// size of the device in bytes.
    pub fn parse(b: &[u8], device_size: u64) -> Result<Self> {
        if b.len() < 1024 {
            return Err(Ext4Error::Truncated {
                needed: 2048,
                size: device_size,
            });
        }
        let magic = le16(b, 0x38);
        if magic != EXT4_MAGIC {
            return Err(Ext4Error::BadMagic(magic));
        }
        let rev = le32(b, 0x4c);
        let incompat_bits = if rev >= 1 { le32(b, 0x60) } else { 0 };
        let ro_bits = if rev >= 1 { le32(b, 0x64) } else { 0 };
        let compat_bits = if rev >= 1 { le32(b, 0x5c) } else { 0 };
        for (bit, name) in incompat::REFUSED {
            if incompat_bits & bit != 0 {
                return Err(Ext4Error::Unsupported(name));
            }
        }
        let unknown = incompat_bits & !incompat::SUPPORTED;
        if unknown != 0 {
            return Err(Ext4Error::UnknownIncompat(unknown));
        }
        if ro_bits & ro_compat::METADATA_CSUM != 0 {
            if b[0x175] != 1 {
                return Err(Ext4Error::BadSuperblock("unknown checksum type"));
            }
            let want = le32(b, 0x3fc);
            if crc32c(!0, &b[..0x3fc]) != want {
                return Err(Ext4Error::SuperblockChecksum);
            }
        }
        let log = le32(b, 0x18);
        if log > 6 {
            return Err(Ext4Error::BadSuperblock("block size"));
        }
        let block_size = 1024u32 << log;
        let bit64 = incompat_bits & incompat::BIT64 != 0;
        let mut blocks_count = u64::from(le32(b, 0x04));
        let mut free_blocks = u64::from(le32(b, 0x0c));
        if bit64 {
            blocks_count |= u64::from(le32(b, 0x150)) << 32;
            free_blocks |= u64::from(le32(b, 0x158)) << 32;
        }
        let inodes_count = le32(b, 0x00);
        let first_data_block = le32(b, 0x14);
        let blocks_per_group = le32(b, 0x20);
        let inodes_per_group = le32(b, 0x28);
        let inode_size = if rev == 0 {
            128
        } else {
            u32::from(le16(b, 0x58))
        };
        let desc_size = if bit64 { u32::from(le16(b, 0xfe)) } else { 32 };
        let bits_per_block = block_size * 8;
        if blocks_per_group == 0 || blocks_per_group > bits_per_block {
            return Err(Ext4Error::BadSuperblock("blocks per group"));
        }
        if inodes_per_group == 0 || inodes_per_group > bits_per_block {
            return Err(Ext4Error::BadSuperblock("inodes per group"));
        }
        if !inode_size.is_power_of_two() || inode_size < 128 || inode_size > block_size {
            return Err(Ext4Error::BadSuperblock("inode size"));
        }
        if !desc_size.is_power_of_two() || !(32..=1024).contains(&desc_size) {
            return Err(Ext4Error::BadSuperblock("group descriptor size"));
        }
        if first_data_block != u32::from(block_size == 1024) {
            return Err(Ext4Error::BadSuperblock("first data block"));
        }
        if blocks_count <= u64::from(first_data_block) {
            return Err(Ext4Error::BadSuperblock("block count"));
        }
        let group_count =
            (blocks_count - u64::from(first_data_block)).div_ceil(u64::from(blocks_per_group));
        let group_count =
            u32::try_from(group_count).map_err(|_| Ext4Error::BadSuperblock("block count"))?;
        if inodes_count == 0
            || u64::from(inodes_count) > u64::from(group_count) * u64::from(inodes_per_group)
        {
            return Err(Ext4Error::BadSuperblock("inode count"));
        }
        let needed = blocks_count
            .checked_mul(u64::from(block_size))
            .ok_or(Ext4Error::BadSuperblock("block count"))?;
        if needed > device_size {
            return Err(Ext4Error::Truncated {
                needed,
                size: device_size,
            });
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[0x68..0x78]);
        let mut volume_name = [0u8; 16];
        volume_name.copy_from_slice(&b[0x78..0x88]);
        let csum_seed = if incompat_bits & incompat::CSUM_SEED != 0 {
            le32(b, 0x270)
        } else {
            crc32c(!0, &uuid)
        };
        Ok(Self {
            block_size,
            blocks_count,
            inodes_count,
            first_data_block,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            desc_size,
            feature_compat: compat_bits,
            feature_incompat: incompat_bits,
            feature_ro_compat: ro_bits,
            uuid,
            volume_name,
            csum_seed,
            group_count,
            free_blocks,
            free_inodes: le32(b, 0x10),
        })
    }

    /// Whether metadata checksums are on.
    pub fn metadata_csum(&self) -> bool {
        self.feature_ro_compat & ro_compat::METADATA_CSUM != 0
    }

    /// Byte offset of the group descriptor table.
    pub fn gdt_offset(&self) -> u64 {
        (u64::from(self.first_data_block) + 1) * u64::from(self.block_size)
    }

    /// Parses the descriptor table (`group_count * desc_size` bytes) into
    /// each group's inode-table block, verifying checksums if enabled.
    pub fn parse_groups(&self, gdt: &[u8]) -> Result<Vec<u64>> {
        let ds = self.desc_size as usize;
        let mut out = Vec::with_capacity(self.group_count as usize);
        for g in 0..self.group_count {
            let at = g as usize * ds;
            let d = gdt
                .get(at..at + ds)
                .ok_or(Ext4Error::Corrupt("group descriptor table"))?;
            if self.metadata_csum() {
                let mut c = crc32c(self.csum_seed, &g.to_le_bytes());
                c = crc32c(c, &d[..0x1e]);
                c = crc32c(c, &[0, 0]);
                c = crc32c(c, &d[0x20..]);
                if (c & 0xffff) as u16 != le16(d, 0x1e) {
                    return Err(Ext4Error::GroupDescriptorChecksum(g));
                }
            }
            let mut table = u64::from(le32(d, 0x08));
            if ds >= 64 {
                table |= u64::from(le32(d, 0x28)) << 32;
            }
            let table_blocks = (u64::from(self.inodes_per_group) * u64::from(self.inode_size))
                .div_ceil(u64::from(self.block_size));
            if table == 0
                || table
                    .checked_add(table_blocks)
                    .is_none_or(|end| end > self.blocks_count)
            {
                return Err(Ext4Error::Corrupt("inode table location"));
            }
            out.push(table);
        }
        Ok(out)
    }
}
