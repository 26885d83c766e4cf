//! File-system scenarios, driven by the QEMU tests (`tests/tests/fs.rs`) and
//! `cargo uk bench fs`. Each prints `fstest: ...` lines and exits 0 on
//! success.
//!
//! - `sha PATH`: SHA-256 of the file read with `read` (64 KiB chunks), and
//!   the bytes bounced (DMA) while reading its data
//! - `mmap-sha PATH`: SHA-256 of the file through `mmap_file`
//! - `seq PATH` / `random PATH`: read the whole file sequentially, or 4 KiB
//!   pages in a pseudo-random order, and print the page-cache counters
//! - `evict PATH`: read the file twice (more than the cache holds with a small
//!   `-m`) and print the counters
//! - `root`: what `/` is, a missing file, tmpfs at `/tmp`
//! - `bench PATH...`: cold and warm read time per file (`fsbench:` lines)
//! - `blk-parallel`: 8 threads read raw sectors of disk 0 at once; prints the
//!   driver's counters (requests in flight at once)
#![no_std]
#![no_main]
extern crate alloc;

mod sha256;

use alloc::vec;
use unikernel::fs::{self, Errno, File};
use unikernel::println;
use unikernel::time::Instant;

unikernel::main!(main);

const CHUNK: usize = 64 * 1024;

fn main() -> i32 {
    let args = unikernel::env::args();
    let what = args.first().map(|s| s.as_str()).unwrap_or("root");
    let path = args.get(1).map(|s| s.as_str()).unwrap_or("/");
    let r = match what {
        "sha" => sha(path),
        "mmap-sha" => mmap_sha(path),
        "mmap-lazy" => mmap_lazy(path),
        "seq" => seq(path),
        "random" => random(path),
        "evict" => evict(path),
        "root" => root(),
        "bench" => bench(&args[1..]),
        "blk-parallel" => blk_parallel(),
        other => {
            println!("fstest: unknown scenario '{other}'");
            return 2;
        }
    };
    match r {
        Ok(()) => {
            println!("fstest: ok");
            0
        }
        Err(e) => {
            println!("fstest: error {e}");
            1
        }
    }
}

fn stats_line(tag: &str) {
    let s = fs::cache_stats();
    println!(
        "fstest: {tag} hits={} misses={} pages_read_ahead={} evictions={} resident={} capacity={}",
        s.hits, s.misses, s.pages_read_ahead, s.evictions, s.resident, s.capacity,
    );
}

fn sha(path: &str) -> Result<(), Errno> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    let mut h = sha256::Sha256::new();
    let mut total = 0u64;
    // Opening read metadata; from here on only file data moves.
    let bounced = fs::bounced_bytes();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    println!("fstest: sha256 {} bytes={total}", h.hex());
    println!("fstest: data bounced={}", fs::bounced_bytes() - bounced,);
    stats_line("stats");
    Ok(())
}

fn mmap_sha(path: &str) -> Result<(), Errno> {
    let f = File::open(path)?;
    let size = f.stat()?.size as usize;
    let p = fs::mmap_file(f.fd(), size, 0)?;
    // SAFETY: `mmap_file` mapped `size` bytes readable at `p` (page-cache
    // frames, pinned); they stay mapped until `munmap_file` below.
    let data = unsafe { core::slice::from_raw_parts(p, size) };
    let mut h = sha256::Sha256::new();
    h.update(data);
    println!("fstest: sha256 {} bytes={size}", h.hex());
    stats_line("mapped");
    fs::munmap_file(p)?;
    stats_line("unmapped");
    Ok(())
}

/// Maps the whole file, touches one byte in the middle: only that page is
/// read into the cache (file mappings fault in on demand).
fn mmap_lazy(path: &str) -> Result<(), Errno> {
    let f = File::open(path)?;
    let size = f.stat()?.size as usize;
    stats_line("before");
    let p = fs::mmap_file(f.fd(), size, 0)?;
    stats_line("mapped");
    // SAFETY: `mmap_file` mapped `size` readable bytes at `p`; reading one
    // of them faults its page in.
    let b = unsafe { p.add(size / 2).read_volatile() };
    println!("fstest: byte {b}");
    stats_line("touched");
    fs::munmap_file(p)?;
    Ok(())
}

fn seq(path: &str) -> Result<(), Errno> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 4096];
    while f.read(&mut buf)? > 0 {}
    stats_line("seq");
    Ok(())
}

fn random(path: &str) -> Result<(), Errno> {
    let f = File::open(path)?;
    let pages = f.stat()?.size / 4096;
    let mut buf = vec![0u8; 4096];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..pages.min(1024) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let page = x % pages.max(1);
        f.read_at(&mut buf, page * 4096)?;
    }
    stats_line("random");
    Ok(())
}

fn evict(path: &str) -> Result<(), Errno> {
    for _ in 0..2 {
        let mut f = File::open(path)?;
        let mut buf = vec![0u8; CHUNK];
        while f.read(&mut buf)? > 0 {}
    }
    stats_line("evict");
    // The heap still grows under pressure: the cache gives frames back.
    let big = vec![7u8; 8 << 20];
    println!("fstest: allocated {} bytes after reading", big.len());
    stats_line("after-alloc");
    Ok(())
}

fn root() -> Result<(), Errno> {
    println!("fstest: root is {}", fs::root_kind());
    match File::open("/no/such/file") {
        Err(e) => println!("fstest: open missing -> {}", e.name()),
        Ok(_) => println!("fstest: open missing -> opened?!"),
    }
    let mut t = File::create("/tmp/hello.txt")?;
    t.write(b"hello tmpfs")?;
    drop(t);
    let mut t = File::open("/tmp/hello.txt")?;
    let mut buf = [0u8; 32];
    let n = t.read(&mut buf)?;
    println!(
        "fstest: tmp read {:?}",
        core::str::from_utf8(&buf[..n]).unwrap_or("?")
    );
    for (name, kind) in fs::read_dir("/")? {
        println!("fstest: / has {name} ({kind:?})");
    }
    println!("fstest: app runs");
    Ok(())
}

fn bench(paths: &[alloc::string::String]) -> Result<(), Errno> {
    let mut buf = vec![0u8; CHUNK];
    for p in paths {
        let mut time_read = || -> Result<(u64, u64), Errno> {
            let start = Instant::now();
            let mut f = File::open(p)?;
            let mut total = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            Ok((total, start.elapsed().as_nanos() as u64))
        };
        fs::drop_caches();
        let (bytes, cold) = time_read()?;
        let (_, warm) = time_read()?;
        println!("fsbench: file={p} bytes={bytes} cold_ns={cold} warm_ns={warm}");
    }
    stats_line("bench");
    Ok(())
}

fn blk_parallel() -> Result<(), Errno> {
    use unikernel::drivers::virtio_blk;
    let disk = virtio_blk::disk(0).ok_or(Errno::ENOENT)?;
    // The whole disk read once, single-threaded, as the reference.
    let sectors = disk.sectors().min(16 * 1024);
    let chunk = 64u64; // sectors per request (32 KiB)
    let mut reference = vec![0u8; (sectors * 512) as usize];
    for (i, c) in reference.chunks_mut((chunk * 512) as usize).enumerate() {
        disk.read(i as u64 * chunk, c)?;
    }
    let workers: alloc::vec::Vec<_> = (0..8u64)
        .map(|t| {
            unikernel::thread::spawn(move || -> Result<alloc::vec::Vec<(u64, u64)>, Errno> {
                let mut sums = alloc::vec::Vec::new();
                let mut buf = vec![0u8; (chunk * 512) as usize];
                let mut s = t * chunk;
                while s + chunk <= sectors {
                    disk.read(s, &mut buf)?;
                    let sum = buf
                        .iter()
                        .fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
                    sums.push((s, sum));
                    s += 8 * chunk;
                }
                Ok(sums)
            })
        })
        .collect();
    let mut checked = 0;
    for w in workers {
        for (s, sum) in w.join()? {
            let at = (s * 512) as usize;
            let want = reference[at..at + (chunk * 512) as usize]
                .iter()
                .fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
            if sum != want {
                println!("fstest: blk mismatch at sector {s}");
                return Err(Errno::EIO);
            }
            checked += 1;
        }
    }
    let st = disk.stats();
    println!(
        "fstest: blk checked={checked} reads={} max_inflight={} interrupts={} errors={}",
        st.reads, st.max_inflight, st.interrupts, st.errors
    );
    // Past the end of the disk: EIO, not a panic.
    let mut one = [0u8; 512];
    match disk.read(disk.sectors(), &mut one) {
        Err(e) => println!("fstest: read past end -> {}", e.name()),
        Ok(()) => println!("fstest: read past end -> ok?!"),
    }
    Ok(())
}
