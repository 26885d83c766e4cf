//! Real images from `mkfs.ext4 -d`, with 1 KiB and 4 KiB blocks, compared
//! against the host files they were made from: contents byte for byte,
//! sizes, kinds, link targets, hard links, directory listings, holes, a
//! 5,000-entry (htree) directory and multi-level extent trees.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{Fs, ImageFile, TempDir, bytes, index_dirs, mkfs};
use uk_ext4::{Ext4Error, FileKind, InodeNum};

/// Data blocks alternating with holes: one extent per data block.
const FRAG_CHUNKS: u64 = 3000;

fn populate(root: &Path) {
    // Files of many sizes.
    for (i, size) in [
        0usize,
        1,
        511,
        1023,
        1024,
        1025,
        4095,
        4096,
        4097,
        12_288,
        65_543,
        1 << 20,
        3_000_001,
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(root.join(format!("size-{size}")), bytes(i as u64, *size)).unwrap();
    }
    // Sparse: data, a hole, data, and a hole up to the end.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(root.join("sparse.bin")).unwrap();
        f.write_all(&bytes(100, 5000)).unwrap();
        f.seek(SeekFrom::Start(10 << 20)).unwrap();
        f.write_all(&bytes(101, 3000)).unwrap();
        f.set_len(20 << 20).unwrap();
        let f = std::fs::File::create(root.join("all-hole.bin")).unwrap();
        f.set_len(7 << 20).unwrap();
    }
    // Fragmented: 4 KiB of data every 8 KiB, so many extents that the tree
    // needs index levels.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(root.join("frag.bin")).unwrap();
        for k in 0..FRAG_CHUNKS {
            f.write_all_at(&bytes(1000 + k, 4096), k * 8192).unwrap();
        }
    }
    // Deep directories.
    let mut deep = root.join("deep");
    for i in 0..24 {
        deep = deep.join(format!("level{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom.txt"), b"at the bottom\n").unwrap();
    // A large (htree) directory.
    let many = root.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..5000 {
        let p = many.join(format!("entry-with-a-longish-name-{i:05}"));
        if i % 500 == 0 {
            std::fs::write(p, format!("file {i}\n")).unwrap();
        } else {
            std::fs::File::create(p).unwrap();
        }
    }
    // Symlinks: fast (in the inode) and slow (in a block), dangling too.
    std::os::unix::fs::symlink("size-4096", root.join("fast-link")).unwrap();
    let long = format!("{}/size-1", "d".repeat(150));
    std::os::unix::fs::symlink(&long, root.join("slow-link")).unwrap();
    std::os::unix::fs::symlink("deep/level0", root.join("dir-link")).unwrap();
    // Hard links.
    std::fs::write(root.join("linked-a"), bytes(7, 9000)).unwrap();
    std::fs::hard_link(root.join("linked-a"), root.join("deep/linked-b")).unwrap();
}

fn kind_of(m: &std::fs::Metadata) -> FileKind {
    let t = m.file_type();
    if t.is_dir() {
        FileKind::Directory
    } else if t.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Regular
    }
}

fn resolve(fs: &Fs<ImageFile>, rel: &Path) -> InodeNum {
    let mut ino = fs.root();
    for c in rel.components() {
        let name = c.as_os_str().as_encoded_bytes();
        ino = fs
            .lookup(ino, name)
            .unwrap()
            .unwrap_or_else(|| panic!("{} not found", rel.display()));
    }
    ino
}

fn listing(fs: &Fs<ImageFile>, dir: InodeNum) -> BTreeMap<Vec<u8>, (InodeNum, FileKind)> {
    let mut out = BTreeMap::new();
    fs.read_dir(dir, |e| {
        assert!(out.insert(e.name.to_vec(), (e.ino, e.kind)).is_none());
        true
    })
    .unwrap();
    out
}

/// Compares the tree under `host` with directory `dir` of the image.
fn compare(fs: &Fs<ImageFile>, host: &Path, dir: InodeNum, inos: &mut BTreeMap<u64, InodeNum>) {
    let list = listing(fs, dir);
    let mut names: BTreeSet<Vec<u8>> = std::fs::read_dir(host)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_encoded_bytes().to_vec())
        .collect();
    names.insert(b".".to_vec());
    names.insert(b"..".to_vec());
    if dir == fs.root() {
        names.insert(b"lost+found".to_vec());
    }
    assert_eq!(
        list.keys().cloned().collect::<BTreeSet<_>>(),
        names,
        "{}",
        host.display()
    );
    assert_eq!(list[&b"."[..]].0, dir);
    for (name, (ino, kind)) in &list {
        if name == b"." || name == b".." || name == b"lost+found" {
            continue;
        }
        let path = host.join(std::str::from_utf8(name).unwrap());
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(*kind, kind_of(&m), "{}", path.display());
        assert_eq!(fs.lookup(dir, name).unwrap(), Some(*ino));
        // Hard links: same host inode <=> same image inode.
        if let Some(prev) = inos.insert(m.ino(), *ino) {
            assert_eq!(prev, *ino, "{} is a hard link", path.display());
        }
        let info = fs.inode(*ino).unwrap();
        assert_eq!(info.kind, *kind);
        assert_eq!(info.mtime.sec, m.mtime(), "{}", path.display());
        assert_eq!(
            u32::from(info.nlink),
            m.nlink() as u32,
            "{}",
            path.display()
        );
        assert_eq!(u32::from(info.perm()), m.mode() & 0o7777);
        match kind {
            FileKind::Directory => compare(fs, &path, *ino, inos),
            FileKind::Symlink => {
                let want = std::fs::read_link(&path).unwrap();
                assert_eq!(
                    fs.readlink(*ino).unwrap(),
                    want.as_os_str().as_encoded_bytes()
                );
                assert_eq!(info.size, want.as_os_str().len() as u64);
            }
            _ => {
                let want = std::fs::read(&path).unwrap();
                assert_eq!(info.size, want.len() as u64, "{}", path.display());
                let mut got = vec![0xaa; want.len() + 100];
                let n = fs.read_at(&info, 0, &mut got).unwrap();
                assert_eq!(n, want.len());
                assert!(got[..n] == want[..], "{} differs", path.display());
                // Odd offsets and lengths.
                if want.len() > 5000 {
                    let mut part = vec![0u8; 3001];
                    let n = fs.read_at(&info, 1234, &mut part).unwrap();
                    assert_eq!(&part[..n], &want[1234..1234 + 3001]);
                }
            }
        }
    }
}

/// The extent tree depth of `/file`, from `debugfs -R "ex"` (lines start
/// with "level/max_level"); `None` without debugfs.
fn extent_depth(img: &Path, file: &str) -> Option<u32> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("ex /{file}")])
        .arg(img)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let depth = text
        .lines()
        .filter_map(|l| {
            let (level, rest) = l.split_once('/')?;
            level.trim().parse::<u32>().ok()?;
            rest.split_whitespace().next()?.parse::<u32>().ok()
        })
        .max()
        .unwrap_or(0);
    Some(depth)
}

fn check_image(block_size: u32) {
    let dir = TempDir::new("src");
    populate(&dir.0);
    let out = TempDir::new("img");
    let img = out.0.join("fs.img");
    mkfs(&dir.0, &img, block_size, "96M", &["-N", "16384"]);
    index_dirs(&img);
    let fs = Fs::mount(ImageFile(std::fs::File::open(&img).unwrap())).unwrap();
    assert_eq!(fs.block_size(), block_size);
    assert!(fs.superblock().metadata_csum(), "Debian defaults");
    let mut inos = BTreeMap::new();
    compare(&fs, &dir.0, fs.root(), &mut inos);

    // Hard links: one inode, two links.
    let a = resolve(&fs, Path::new("linked-a"));
    let b = resolve(&fs, Path::new("deep/linked-b"));
    assert_eq!(a, b);
    assert_eq!(fs.inode(a).unwrap().nlink, 2);

    // Holes come back as holes.
    let bs = u64::from(block_size);
    let sparse = resolve(&fs, Path::new("sparse.bin"));
    let e = fs.map_blocks(sparse, 0, 1).unwrap();
    assert!(e.phys_block.is_some() && e.len == 1);
    let mid = (5 << 20) / bs;
    let e = fs.map_blocks(sparse, mid, 1 << 20).unwrap();
    assert_eq!(e.phys_block, None);
    assert_eq!(
        e.len,
        (10 << 20) / bs - mid,
        "the hole ends where data starts"
    );
    let e = fs.map_blocks(sparse, (15 << 20) / bs, 10).unwrap();
    assert_eq!((e.phys_block, e.len), (None, 10));
    let hole = resolve(&fs, Path::new("all-hole.bin"));
    assert_eq!(fs.map_blocks(hole, 0, 100).unwrap().phys_block, None);

    // The fragmented file: one extent per 4 KiB chunk, holes between.
    let frag = resolve(&fs, Path::new("frag.bin"));
    let per_chunk = 4096 / bs;
    for k in [0, 1, 2, 777, FRAG_CHUNKS - 1] {
        let e = fs.map_blocks(frag, k * 2 * per_chunk, 1000).unwrap();
        assert!(e.phys_block.is_some());
        assert_eq!(e.len, per_chunk, "chunk {k}");
        let e = fs.map_blocks(frag, (k * 2 + 1) * per_chunk, 1000).unwrap();
        if k < FRAG_CHUNKS - 1 {
            assert_eq!((e.phys_block, e.len), (None, per_chunk), "hole after {k}");
        }
    }
    let depth = extent_depth(&img, "frag.bin");
    assert!(depth.is_none_or(|d| d >= 1), "frag.bin has an index level");
    if block_size == 1024 {
        assert!(
            depth.is_none_or(|d| d == 2),
            "two index levels with 1 KiB blocks"
        );
    }
    let depth = extent_depth(&img, "size-3000001");
    assert_eq!(depth.unwrap_or(0), 0);

    // The large directory: every name found, lookups of absent names fail.
    let many = resolve(&fs, Path::new("many"));
    assert_eq!(listing(&fs, many).len(), 5002);
    assert!(
        fs.inode(many).unwrap().flags & uk_ext4::flags::INDEX != 0,
        "htree"
    );
    for i in [0, 1, 2499, 4999] {
        let name = format!("entry-with-a-longish-name-{i:05}");
        assert!(fs.lookup(many, name.as_bytes()).unwrap().is_some());
    }
    assert_eq!(
        fs.lookup(many, b"entry-with-a-longish-name-05000").unwrap(),
        None
    );

    // Resuming a listing from a position gives the rest.
    let mut first = Vec::new();
    let mut resume = 0;
    fs.read_dir(many, |e| {
        first.push(e.name.to_vec());
        resume = e.next_pos;
        first.len() < 100
    })
    .unwrap();
    let mut rest = 0;
    fs.read_dir_from(many, resume, |_| {
        rest += 1;
        true
    })
    .unwrap();
    assert_eq!(first.len() + rest, 5002);

    // Errors.
    let file = resolve(&fs, Path::new("size-1"));
    assert_eq!(fs.lookup(file, b"x"), Err(Ext4Error::NotADirectory));
    assert_eq!(fs.readlink(file), Err(Ext4Error::NotASymlink));
    assert!(matches!(fs.inode(InodeNum(0)), Err(Ext4Error::BadInode(0))));
    assert!(matches!(
        fs.inode(InodeNum(u32::MAX)),
        Err(Ext4Error::BadInode(_))
    ));
    assert_eq!(fs.lookup(fs.root(), b""), Err(Ext4Error::BadName));

    let st = fs.cache_stats();
    assert!(st.resident <= st.capacity && st.evictions > 0, "{st:?}");
    assert!(st.extent_hits > 0, "{st:?}");
}

#[test]
fn image_1k_blocks_matches_host() {
    check_image(1024);
}

#[test]
fn image_4k_blocks_matches_host() {
    check_image(4096);
}

#[test]
fn sequential_reads_hit_the_extent_cache() {
    let dir = TempDir::new("seq");
    std::fs::write(dir.0.join("big"), bytes(5, 8 << 20)).unwrap();
    let out = TempDir::new("seq-img");
    let img = out.0.join("fs.img");
    mkfs(&dir.0, &img, 4096, "32M", &[]);
    let fs = Fs::mount(ImageFile(std::fs::File::open(&img).unwrap())).unwrap();
    let ino = resolve(&fs, Path::new("big"));
    let before = fs.cache_stats();
    for b in 0..2048 {
        let e = fs.map_blocks(ino, b, 1).unwrap();
        assert!(e.phys_block.is_some());
    }
    let after = fs.cache_stats();
    assert!(after.extent_misses - before.extent_misses <= 2, "{after:?}");
}

#[test]
fn refuses_what_it_cannot_read() {
    let dir = TempDir::new("feat");
    std::fs::write(dir.0.join("a"), b"x").unwrap();
    let out = TempDir::new("feat-img");
    let img = out.0.join("fs.img");
    mkfs(&dir.0, &img, 4096, "8M", &["-O", "inline_data"]);
    let r = Fs::mount(ImageFile(std::fs::File::open(&img).unwrap()));
    let e = r.err().expect("inline_data refused");
    assert!(
        matches!(e, Ext4Error::Unsupported(n) if n.starts_with("inline_data")),
        "{e}"
    );

    // Not ext4 at all, and a truncated image.
    let zeros = vec![0u8; 1 << 20];
    assert!(matches!(
        Fs::mount(&zeros[..]).err(),
        Some(Ext4Error::BadMagic(0))
    ));
    assert!(matches!(
        Fs::mount(&zeros[..100]).err(),
        Some(Ext4Error::Truncated { .. })
    ));
    mkfs(&dir.0, &img, 4096, "8M", &[]);
    let mut bytes = std::fs::read(&img).unwrap();
    bytes.truncate(4 << 20);
    let e = Fs::mount(bytes).err().unwrap();
    assert!(
        matches!(
            e,
            Ext4Error::Truncated {
                needed: 8388608,
                size: 4194304
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("truncated"));
}

#[test]
fn refuses_unknown_incompat_features() {
    let dir = TempDir::new("unk");
    let out = TempDir::new("unk-img");
    let img = out.0.join("fs.img");
    // Without metadata_csum, so the superblock needs no new checksum.
    mkfs(&dir.0, &img, 4096, "8M", &["-O", "^metadata_csum"]);
    let mut b = std::fs::read(&img).unwrap();
    b[1024 + 0x60 + 3] |= 0x40; // incompat bit 30
    let e = Fs::mount(b).err().unwrap();
    assert_eq!(e, Ext4Error::UnknownIncompat(0x4000_0000));
    assert!(
        e.to_string()
            .contains("unknown incompatible features 0x40000000")
    );
}

#[test]
fn checksums_are_verified() {
    let dir = TempDir::new("csum");
    let out = TempDir::new("csum-img");
    let img = out.0.join("fs.img");
    mkfs(&dir.0, &img, 4096, "8M", &[]);
    let good = std::fs::read(&img).unwrap();
    let mut b = good.clone();
    b[1024 + 0x78] ^= 1; // the volume name
    assert_eq!(Fs::mount(b).err(), Some(Ext4Error::SuperblockChecksum));
    let mut b = good;
    b[4096 + 0x0c] ^= 1; // group 0's free block count
    assert_eq!(
        Fs::mount(b).err(),
        Some(Ext4Error::GroupDescriptorChecksum(0))
    );
}
