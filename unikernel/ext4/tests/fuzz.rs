//! Randomized corruption of real images: whatever the bytes, mounting and
//! reading return errors, never panic (and never loop forever).

mod common;

use common::{Fs, TempDir, bytes, index_dirs, mkfs};
use uk_ext4::{FileKind, InodeNum};

fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn image(block_size: u32) -> Vec<u8> {
    let dir = TempDir::new("fuzz-src");
    let root = &dir.0;
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::write(root.join("a/b/c/f"), bytes(1, 5000)).unwrap();
    std::fs::write(root.join("small"), b"hi").unwrap();
    std::fs::create_dir(root.join("many")).unwrap();
    for i in 0..300 {
        std::fs::write(root.join(format!("many/n{i:04}")), bytes(i, 100)).unwrap();
    }
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(root.join("frag")).unwrap();
        for k in 0..200 {
            f.write_all_at(&bytes(k, 1024), k * 8192).unwrap();
        }
    }
    std::os::unix::fs::symlink("small", root.join("fast")).unwrap();
    std::os::unix::fs::symlink("x".repeat(100), root.join("slow")).unwrap();
    let out = TempDir::new("fuzz-img");
    let img = out.0.join("fs.img");
    mkfs(root, &img, block_size, "4M", &[]);
    index_dirs(&img);
    std::fs::read(&img).unwrap()
}

/// Reads everything reachable, with bounds on depth and work.
fn walk(fs: &Fs<Vec<u8>>, dir: InodeNum, depth: u32, budget: &mut u32) {
    if depth > 8 || *budget == 0 {
        return;
    }
    let mut children = Vec::new();
    let _ = fs.read_dir(dir, |e| {
        children.push((e.ino, e.name.to_vec()));
        children.len() < 400
    });
    for (ino, name) in children {
        *budget = budget.saturating_sub(1);
        if *budget == 0 || name == b"." || name == b".." {
            continue;
        }
        let _ = fs.lookup(dir, &name);
        let Ok(info) = fs.inode(ino) else { continue };
        match info.kind {
            FileKind::Directory => walk(fs, ino, depth + 1, budget),
            FileKind::Symlink => {
                let _ = fs.readlink(ino);
            }
            _ => {
                let mut buf = vec![0u8; 64 << 10];
                let _ = fs.read_at(&info, 0, &mut buf);
                let _ = fs.read_at(&info, info.size.saturating_sub(100), &mut buf);
                for fb in [0u64, 1, 7, 100, 1 << 20, u64::from(u32::MAX), u64::MAX - 1] {
                    let _ = fs.map_blocks(ino, fb, 1 << 40);
                }
            }
        }
    }
}

fn fuzz(block_size: u32, iterations: u32, seed: u64) {
    let good = image(block_size);
    let bs = block_size as usize;
    let mut rng = Rng(seed);
    let mut mounted = 0;
    for _ in 0..iterations {
        let mut b = good.clone();
        // Mostly metadata: the first 128 blocks hold the group descriptors,
        // bitmaps, inode table and the first directories.
        let hot = (128 * bs).min(b.len());
        for _ in 0..1 + rng.below(16) {
            let at = if rng.below(5) == 0 {
                rng.below(b.len() as u64)
            } else {
                rng.below(hot as u64)
            } as usize;
            b[at] = match rng.below(4) {
                0 => 0,
                1 => 0xff,
                _ => rng.next() as u8,
            };
        }
        match rng.below(8) {
            // Keep the superblock checksum valid so parsing goes deeper.
            0 | 1 => {
                let at = 1024 + rng.below(0x180) as usize;
                b[at] = rng.next() as u8;
                let c = crc32c(!0, &b[1024..1024 + 0x3fc]);
                b[1024 + 0x3fc..1024 + 0x400].copy_from_slice(&c.to_le_bytes());
            }
            2 => b.truncate(rng.below(b.len() as u64) as usize),
            _ => {}
        }
        if let Ok(fs) = Fs::mount(b) {
            mounted += 1;
            let mut budget = 2000;
            walk(&fs, fs.root(), 0, &mut budget);
            for _ in 0..20 {
                let ino = InodeNum(rng.next() as u32 % 64);
                let _ = fs.inode(ino);
                let _ = fs.readlink(ino);
                let _ = fs.read_dir_from(ino, rng.next() % 8192, |_| true);
                let _ = fs.map_blocks(ino, rng.below(1 << 33), rng.next());
            }
        }
    }
    assert!(
        mounted > iterations / 4,
        "too few images mounted: {mounted}"
    );
}

#[test]
fn corrupt_1k_images_never_panic() {
    fuzz(1024, 1500, 0x1234_5678_9abc_def1);
}

#[test]
fn corrupt_4k_images_never_panic() {
    fuzz(4096, 1500, 0x0fed_cba9_8765_4321);
}
