//! Directories: linear walks over the directory's blocks.
//!
//! Hashed-tree (`dir_index`) directories stay valid linear directories:
//! the tree's interior nodes hide inside entries with inode 0 that span
//! their block, so a linear walk sees exactly the leaf entries. The
//! `metadata_csum` tail is such an entry too.

use crate::error::{Ext4Error, Result};
use crate::inode::{FileKind, InodeInfo, InodeNum};
use crate::superblock::incompat;
use crate::{BlockRead, DirEntry, Ext4, le16, le32};
use uk_vfs::Locking;

impl<R: BlockRead, L: Locking> Ext4<R, L> {
    /// Passes the entries of `dir` from byte position `pos` to `f` until it
    /// returns `false`.
    pub(crate) fn walk_dir(
        &self,
        dir: &InodeInfo,
        pos: u64,
        f: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let blocks = dir.size.div_ceil(bs);
        let filetype = self.sb.feature_incompat & incompat::FILETYPE != 0;
        let mut fb = pos / bs;
        while fb < blocks {
            let ext = self.map_blocks_of(dir, fb, blocks - fb)?;
            let Some(phys) = ext.phys_block else {
                fb += ext.len.max(1);
                continue;
            };
            for k in 0..ext.len {
                let block = self.read_block(phys + k)?;
                let base = (fb + k) * bs;
                if !parse_block(block.bytes(), base, pos, filetype, f)? {
                    return Ok(());
                }
            }
            fb += ext.len.max(1);
        }
        Ok(())
    }
}

/// Parses one directory block at directory position `base`, passing
/// entries at or after `pos`; `Ok(false)` when `f` asked to stop.
fn parse_block(
    b: &[u8],
    base: u64,
    pos: u64,
    filetype: bool,
    f: &mut dyn FnMut(DirEntry<'_>) -> bool,
) -> Result<bool> {
    let bs = b.len();
    let mut off = 0usize;
    while off + 8 <= bs {
        let ino = le32(b, off);
        let mut rec_len = usize::from(le16(b, off + 4));
        if bs >= 65536 && (rec_len == 0 || rec_len == 65535) {
            rec_len = 65536; // the 64 KiB-block encoding of a whole block
        }
        let (name_len, kind) = if filetype {
            (usize::from(b[off + 6]), FileKind::from_dirent(b[off + 7]))
        } else {
            (usize::from(le16(b, off + 6)), FileKind::Unknown)
        };
        if rec_len < 8 || rec_len % 4 != 0 || off + rec_len > bs || 8 + name_len > rec_len {
            return Err(Ext4Error::Corrupt("directory entry"));
        }
        let at = base + off as u64;
        if ino != 0 && name_len > 0 && at >= pos {
            let e = DirEntry {
                ino: InodeNum(ino),
                name: &b[off + 8..off + 8 + name_len],
                kind,
                next_pos: at + rec_len as u64,
            };
            if !f(e) {
                return Ok(false);
            }
        }
        off += rec_len;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn entry(ino: u32, name: &[u8], rec_len: u16, kind: u8) -> Vec<u8> {
        let mut v = vec![0u8; usize::from(rec_len)];
        v[..4].copy_from_slice(&ino.to_le_bytes());
        v[4..6].copy_from_slice(&rec_len.to_le_bytes());
        v[6] = name.len() as u8;
        v[7] = kind;
        v[8..8 + name.len()].copy_from_slice(name);
        v
    }

    #[test]
    fn parses_entries_and_skips_empty_ones() {
        let mut b = entry(2, b".", 12, 2);
        b.extend(entry(0, b"", 12, 0));
        b.extend(entry(12, b"file", 1024 - 24, 1));
        let mut seen = Vec::new();
        let more = parse_block(&b, 0, 0, true, &mut |e| {
            seen.push((e.ino, e.name.to_vec(), e.kind, e.next_pos));
            true
        })
        .unwrap();
        assert!(more);
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[1],
            (InodeNum(12), b"file".to_vec(), FileKind::Regular, 1024)
        );
        // Resuming after the first entry skips it.
        let mut n = 0;
        parse_block(&b, 0, 12, true, &mut |_| {
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn rejects_bad_rec_len() {
        let mut b = entry(2, b".", 12, 2);
        b.extend(entry(3, b"x", 1024 - 12, 1));
        b[4] = 6; // rec_len 6
        assert!(parse_block(&b, 0, 0, true, &mut |_| true).is_err());
        let mut b = entry(2, b"abc", 12, 2);
        b[6] = 200; // name longer than the record
        b.resize(1024, 0);
        assert!(parse_block(&b, 0, 0, true, &mut |_| true).is_err());
    }
}
