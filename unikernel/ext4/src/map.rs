//! File block → disk block: extent trees and old-style block maps.

use crate::cache::CachedExtent;
use crate::error::{Ext4Error, Result};
use crate::inode::{InodeInfo, flags};
use crate::{BlockRead, Ext4, le16, le32};
use uk_vfs::Locking;

/// Extent header magic.
const EXTENT_MAGIC: u16 = 0xf30a;
/// Deepest extent tree Linux builds.
const MAX_DEPTH: u16 = 5;
/// File blocks are 32-bit in ext4.
const LOGICAL_END: u64 = 1 << 32;

fn hole(logical: u64, end: u64, ino: u32) -> CachedExtent {
    CachedExtent {
        ino,
        logical,
        len: end.saturating_sub(logical).max(1),
        phys: None,
    }
}

impl<R: BlockRead, L: Locking> Ext4<R, L> {
    /// The whole run (extent, block-map run or hole) containing `fb`.
    pub(crate) fn map_uncached(&self, info: &InodeInfo, fb: u64) -> Result<CachedExtent> {
        if fb >= LOGICAL_END {
            return Ok(hole(fb, u64::MAX, info.ino.0));
        }
        if info.flags & flags::EXTENTS != 0 {
            self.walk_extents(&info.i_block, fb, LOGICAL_END, None, info.ino.0)
        } else {
            self.walk_block_map(info, fb)
        }
    }

    fn check_run(&self, phys: u64, len: u64) -> Result<()> {
        if phys == 0
            || phys
                .checked_add(len)
                .is_none_or(|end| end > self.sb.blocks_count)
        {
            return Err(Ext4Error::Corrupt("extent points past the end"));
        }
        Ok(())
    }

    /// Walks one extent-tree node (`node`: the 60-byte root in the inode or
    /// a tree block) for file block `fb`; `end` bounds the node's logical
    /// range (the next sibling's start), `depth` is what the parent said.
    fn walk_extents(
        &self,
        node: &[u8],
        fb: u64,
        end: u64,
        depth: Option<u16>,
        ino: u32,
    ) -> Result<CachedExtent> {
        if node.len() < 12 || le16(node, 0) != EXTENT_MAGIC {
            return Err(Ext4Error::Corrupt("extent header"));
        }
        let entries = usize::from(le16(node, 2));
        let max = usize::from(le16(node, 4));
        let d = le16(node, 6);
        if entries > max || 12 + entries * 12 > node.len() || d > MAX_DEPTH {
            return Err(Ext4Error::Corrupt("extent header"));
        }
        if depth.is_some_and(|want| want != d) {
            return Err(Ext4Error::Corrupt("extent tree depth"));
        }
        let entry = |i: usize| &node[12 + i * 12..24 + i * 12];
        if d == 0 {
            for i in 0..entries {
                let e = entry(i);
                let start = u64::from(le32(e, 0));
                let raw_len = le16(e, 4);
                let (len, init) = if raw_len > 32768 {
                    (u64::from(raw_len - 32768), false)
                } else {
                    (u64::from(raw_len), true)
                };
                if len == 0 {
                    continue;
                }
                if fb < start {
                    return Ok(hole(fb, start.min(end), ino));
                }
                if fb < start + len {
                    let phys = (u64::from(le16(e, 6)) << 32) | u64::from(le32(e, 8));
                    self.check_run(phys, len)?;
                    return Ok(CachedExtent {
                        ino,
                        logical: start,
                        len,
                        // Uninitialized (preallocated) extents read as zeros.
                        phys: init.then_some(phys),
                    });
                }
            }
            return Ok(hole(fb, end, ino));
        }
        // An index node: the last child starting at or before `fb`.
        let mut chosen = None;
        for i in 0..entries {
            if u64::from(le32(entry(i), 0)) <= fb {
                chosen = Some(i);
            } else {
                break;
            }
        }
        let Some(i) = chosen else {
            let first = if entries > 0 {
                u64::from(le32(entry(0), 0))
            } else {
                end
            };
            return Ok(hole(fb, first.min(end), ino));
        };
        let e = entry(i);
        let child = u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32);
        let child_end = if i + 1 < entries {
            u64::from(le32(entry(i + 1), 0)).min(end)
        } else {
            end
        };
        let block = self.read_block(child)?;
        self.walk_extents(block.bytes(), fb, child_end, Some(d - 1), ino)
    }

    /// Old-style (ext2/3) block maps: 12 direct pointers, then single,
    /// double and triple indirect blocks.
    fn walk_block_map(&self, info: &InodeInfo, fb: u64) -> Result<CachedExtent> {
        let ino = info.ino.0;
        let per_block = u64::from(self.sb.block_size / 4);
        let ptrs: [u32; 15] = core::array::from_fn(|i| le32(&info.i_block, i * 4));
        if fb < 12 {
            let run = self.run_in(&ptrs[fb as usize..12], fb)?;
            return Ok(CachedExtent { ino, ..run });
        }
        let mut rel = fb - 12;
        let mut span = 1u64;
        for (slot, levels) in [(12usize, 1u32), (13, 2), (14, 3)] {
            span = span.saturating_mul(per_block);
            if rel < span {
                let mut block = u64::from(ptrs[slot]);
                let mut sub = span;
                for _ in 0..levels {
                    if block == 0 {
                        // The rest of this subtree is a hole.
                        let start = fb - rel % sub;
                        return Ok(hole(fb, start + sub, ino));
                    }
                    sub /= per_block;
                    let b = self.read_block(block)?;
                    let ptrs: alloc::vec::Vec<u32> = b
                        .bytes()
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    let idx = ((rel % (sub * per_block)) / sub) as usize;
                    if sub == 1 {
                        let run = self.run_in(&ptrs[idx..], fb)?;
                        return Ok(CachedExtent { ino, ..run });
                    }
                    block = u64::from(ptrs[idx]);
                }
                return Err(Ext4Error::Corrupt("block map"));
            }
            rel -= span;
        }
        Ok(hole(fb, LOGICAL_END, ino))
    }

    /// The run starting at `ptrs[0]` (file block `fb`): consecutive disk
    /// blocks, or consecutive holes.
    fn run_in(&self, ptrs: &[u32], fb: u64) -> Result<CachedExtent> {
        let first = ptrs[0];
        let len = if first == 0 {
            ptrs.iter().take_while(|&&p| p == 0).count()
        } else {
            ptrs.iter()
                .enumerate()
                .take_while(|&(k, &p)| u64::from(p) == u64::from(first) + k as u64)
                .count()
        } as u64;
        let phys = (first != 0).then_some(u64::from(first));
        if let Some(p) = phys {
            self.check_run(p, len)?;
        }
        Ok(CachedExtent {
            ino: 0,
            logical: fb,
            len,
            phys,
        })
    }
}
