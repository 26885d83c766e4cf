//! Kernel self-tests driven from the host: the first argument picks a
//! scenario, and the QEMU tests in `tests/` check what it prints and how the VM
//! exits. Several scenarios end in a fault on purpose.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use unikernel::mem::{self, Prot};
use unikernel::println;
use unikernel::sync::{Condvar, Mutex, Semaphore};
use unikernel::thread;
use unikernel::time::{Duration, Instant};

unikernel::main!(main);

fn main() -> i32 {
    let args = unikernel::env::args();
    let Some(which) = args.first() else {
        println!("usage: selftest SCENARIO [ARGS]");
        return 2;
    };
    match which.as_str() {
        "panic" => panic!("selftest panic {}", 42),
        "null" => null_read(),
        "mmap64" => mmap64(),
        "heapgrow" => heapgrow(),
        "try-arc" => try_arc(),
        "try-lock" => try_lock(),
        "fresh-stack" => fresh_stack(),
        "large" => large(),
        "textwrite" => textwrite(),
        "stackoverflow" => {
            let n = recurse(1);
            println!("recursion returned {n}");
            1
        }
        "zeropage" => zeropage(),
        "mprotect" => mprotect(),
        "args" => {
            println!("args: {:?}", &args[1..]);
            0
        }
        "exit" => {
            let code = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            unikernel::process::exit(code)
        }
        "sleep" => sleep_accuracy(),
        "pingpong" => pingpong(),
        "smp" => smp_stress(),
        "smp-spin" => smp_spin(),
        "smp-timers" => smp_timers(),
        "steal" => steal(),
        "lock-order" if args.get(1).is_some_and(|a| a == "sleep") => sleep_under_spinlock(),
        "lock-order" => lock_order(),
        "threads" => many_threads(),
        "spin" => spinner_does_not_starve(),
        "simd" => simd_state(),
        "redzone" => red_zone(),
        "idle" => {
            let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
            println!("idle: sleeping {secs} s");
            thread::sleep(Duration::from_secs(secs));
            println!(
                "idle: done, halts={}",
                unikernel::sched::STATS.idle_halts.load(Relaxed)
            );
            0
        }
        "bench-sched" => bench_sched(),
        "bench-alloc" => bench_alloc(),
        "power" => power(),
        "bench-copy" => {
            let src = alloc::vec![7u8; 1 << 20];
            let mut dst = alloc::vec![0u8; 1 << 20];
            let t = Instant::now();
            for _ in 0..16 {
                dst.copy_from_slice(core::hint::black_box(&src));
            }
            let copy_ns = t.elapsed().as_nanos() as u64;
            let t = Instant::now();
            let mut sum = 0u32;
            for _ in 0..16 {
                for c in core::hint::black_box(&dst).chunks_exact(2) {
                    sum = sum.wrapping_add(u16::from_be_bytes([c[0], c[1]]) as u32);
                }
            }
            let sum_ns = t.elapsed().as_nanos() as u64;
            println!(
                "bench-copy: memcpy {} ps/B, checksum {} ps/B ({sum})",
                copy_ns * 1000 / (16 << 20),
                sum_ns * 1000 / (16 << 20)
            );
            0
        }
        "thread-exit" => {
            let h = thread::spawn_with(16 * 1024, thread::Priority::Normal, || -> u32 {
                thread::exit(5)
            })
            .expect("spawn");
            let r = h.join_result();
            println!("thread-exit: {r:?}");
            if r == Err(5) { 0 } else { 1 }
        }
        "oom" => {
            let mut v: Vec<Box<[u8; 4000]>> = Vec::new();
            loop {
                v.push(Box::new([1u8; 4000]));
            }
        }
        other => {
            println!("selftest: unknown scenario '{other}'");
            2
        }
    }
}

/// The shutdown-request API: the sources found at boot, and eventfds made
/// before and after a (software) request both become readable.
fn power() -> i32 {
    use unikernel::io::{self, EPOLL_CTL_ADD, EPOLLIN, EpollEvent};
    use unikernel::power;
    let s = power::sources();
    println!(
        "power: sources acpi_button={} ged={} i8042={}",
        s.acpi_button, s.ged, s.i8042
    );
    let before = power::shutdown_eventfd().expect("shutdown_eventfd");
    let ep = io::epoll_create().expect("epoll_create");
    let ev = EpollEvent {
        events: EPOLLIN,
        data: 7,
    };
    io::epoll_ctl(ep, EPOLL_CTL_ADD, before, ev).expect("epoll_ctl");
    let mut out = [EpollEvent::default(); 4];
    let idle = io::epoll_wait(ep, &mut out, 0).expect("epoll_wait");
    if idle != 0 || power::shutdown_requested() {
        println!("power: readable before any request");
        return 1;
    }
    power::request_shutdown();
    let n = io::epoll_wait(ep, &mut out, 5000).expect("epoll_wait");
    let mut buf = [0u8; 8];
    let got = unikernel::fs::read(before, &mut buf).map(|_| u64::from_ne_bytes(buf));
    let after = power::shutdown_eventfd().expect("shutdown_eventfd");
    let late = unikernel::fs::read(after, &mut buf).map(|_| u64::from_ne_bytes(buf));
    println!(
        "power: events={n} data={} read={got:?} late={late:?} source={:?}",
        out[0].data,
        power::shutdown_source()
    );
    let ok = n == 1
        && out[0].data == 7
        && got == Ok(1)
        && late == Ok(1)
        && power::shutdown_source() == Some(power::Source::Software);
    println!("power: {}", if ok { "ok" } else { "FAILED" });
    if ok { 0 } else { 1 }
}

fn null_read() -> i32 {
    let p = core::hint::black_box(core::ptr::null::<u64>());
    // SAFETY: deliberately invalid: this scenario checks the page-fault report.
    let v = unsafe { p.read_volatile() };
    println!("read {v} from address 0");
    1
}

fn mmap64() -> i32 {
    const LEN: usize = 64 << 20;
    let before = mem::stats();
    let p = match mem::mmap(LEN, Prot::READ | Prot::WRITE) {
        Ok(p) => p,
        Err(e) => {
            println!("mmap64: mmap failed: {e:?}");
            return 1;
        }
    };
    // SAFETY: p..p+LEN was just mapped read-write; we touch one byte in the middle.
    unsafe { p.add(LEN / 2).write_volatile(7) };
    let after = mem::stats();
    let data = |s: &unikernel::MemStats| s.frames_used as i64 - s.page_table_frames as i64;
    let delta = data(&after) - data(&before);
    println!(
        "mmap64: frames_delta={delta} (page tables +{})",
        after.page_table_frames - before.page_table_frames
    );
    println!("memstats: {after}");
    // Page tables for a fresh part of the window are counted apart
    // (page_table_frames): the data pages alone must be exactly one.
    mem::munmap(p, LEN).expect("munmap");
    let freed = mem::stats();
    println!(
        "mmap64: after munmap frames_used={} (before {})",
        freed.frames_used, before.frames_used
    );
    if delta == 1 { 0 } else { 1 }
}

fn heapgrow() -> i32 {
    let first = mem::stats().heap_arenas;
    let mut keep: Vec<Box<[u64; 16]>> = Vec::new();
    for i in 0..20_000u64 {
        keep.push(Box::new([i; 16]));
    }
    let s = mem::stats();
    let ok = keep
        .iter()
        .enumerate()
        .all(|(i, b)| b.iter().all(|&x| x == i as u64));
    println!(
        "heapgrow: arenas={} (first {first}) heap_in_use={} ok={ok}",
        s.heap_arenas, s.heap_in_use
    );
    if ok && s.heap_arenas >= 2 { 0 } else { 1 }
}

/// `mem::try_arc` for values of several sizes and alignments: each `Arc`
/// holds its value and `Arc::new` took every reserved block (none missed:
/// the layout `try_arc` assumes for `Arc`'s block is the real one).
/// A failed `Mutex::try_lock` must leave the holder's lock held (it once
/// built a guard anyway and dropped it, unlocking the mutex for a second
/// thread to take).
fn try_lock() -> i32 {
    let m = Mutex::new(0u32);
    let g = m.lock();
    let busy = m.try_lock().is_none();
    let still_held = m.try_lock().is_none();
    drop(g);
    let free = m.try_lock().is_some();
    println!("try-lock: busy={busy} still_held={still_held} free={free}");
    if busy && still_held && free { 0 } else { 1 }
}

fn try_arc() -> i32 {
    #[repr(align(64))]
    struct Wide([u8; 100]);
    let a = mem::try_arc(7u8).ok();
    let b = mem::try_arc([3u64; 5]).ok();
    let c = mem::try_arc(Wide([9; 100])).ok();
    let d = mem::try_arc(alloc::string::String::from("try")).ok();
    let e: Option<Arc<dyn Fn() -> u32 + Send + Sync>> = mem::try_arc(|| 42u32)
        .ok()
        .map(|f| f as Arc<dyn Fn() -> u32 + Send + Sync>);
    let ok = a.is_some_and(|a| *a == 7 && Arc::strong_count(&a) == 1)
        && b.is_some_and(|b| *b == [3; 5])
        && c.is_some_and(|c| c.0 == [9; 100] && (Arc::as_ptr(&c) as usize).is_multiple_of(64))
        && d.is_some_and(|d| d.as_str() == "try")
        && e.is_some_and(|e| e() == 42);
    let misses = mem::reserve_misses();
    println!("try-arc: ok={ok} misses={misses}");
    if ok && misses == 0 { 0 } else { 1 }
}

/// Levels [`descend`] goes down: well past a few pages of a 64 KiB stack.
const DESCEND_LEVELS: u32 = 600;

/// The memory manager's locked sections reaching stack pages never touched
/// before: a fresh thread (its stack filled on first touch) goes down a few
/// dozen bytes at a time and maps and unmaps a page at every level, so
/// some locked section is the first to reach each new stack page.
fn fresh_stack() -> i32 {
    let levels = thread::spawn(|| descend(0)).join();
    println!("fresh-stack: {levels} levels");
    if levels == DESCEND_LEVELS { 0 } else { 1 }
}

#[inline(never)]
fn descend(n: u32) -> u32 {
    let p = mem::mmap(4096, Prot::READ | Prot::WRITE).expect("mmap");
    mem::munmap(p, 4096).expect("munmap");
    if n == DESCEND_LEVELS {
        n
    } else {
        // Not a tail call: the frame stays while the next level runs.
        core::hint::black_box(descend(n + 1))
    }
}

fn large() -> i32 {
    let before = mem::stats();
    let v = alloc::vec![3u8; 1 << 20];
    let mid = mem::stats();
    let sum: u64 = v.iter().map(|&b| b as u64).sum();
    drop(v);
    let after = mem::stats();
    println!(
        "large: sum={sum} large_allocs {}->{}->{} frames_used {}->{}->{}",
        before.large_allocs,
        mid.large_allocs,
        after.large_allocs,
        before.frames_used,
        mid.frames_used,
        after.frames_used
    );
    let ok = mid.large_allocs == before.large_allocs + 1
        && after.large_allocs == before.large_allocs
        && after.frames_used <= before.frames_used + 2;
    if ok { 0 } else { 1 }
}

fn zeropage() -> i32 {
    const LEN: usize = 16 << 20;
    let p = mem::mmap(LEN, Prot::READ | Prot::WRITE).expect("mmap");
    let before = mem::stats();
    let mut sum = 0u64;
    for off in (0..LEN).step_by(4096) {
        // SAFETY: inside the mapping just made.
        sum += unsafe { p.add(off).read_volatile() } as u64;
    }
    let read = mem::stats();
    // SAFETY: inside the mapping.
    unsafe { p.write_volatile(1) };
    let written = mem::stats();
    println!(
        "zeropage: sum={sum} frames_used +{} after reading 4096 pages, +{} after one write; zero_page_maps={} cow_copies={}",
        read.frames_used - before.frames_used,
        written.frames_used - read.frames_used,
        written.zero_page_maps - before.zero_page_maps,
        written.cow_copies - before.cow_copies
    );
    let ok = sum == 0
        && read.frames_used - before.frames_used <= 8
        && written.cow_copies == before.cow_copies + 1;
    if ok { 0 } else { 1 }
}

fn mprotect() -> i32 {
    let p = mem::mmap(8192, Prot::READ | Prot::WRITE).expect("mmap");
    // SAFETY: inside the mapping.
    unsafe { p.write_volatile(42) };
    mem::mprotect(p, 8192, Prot::READ).expect("mprotect");
    // SAFETY: inside the mapping, now read-only: reading is allowed.
    let v = unsafe { p.read_volatile() };
    println!("mprotect: read {v} after PROT_READ; now writing (must fault)");
    // SAFETY: deliberately invalid: the page is read-only now.
    unsafe { p.write_volatile(1) };
    println!("mprotect: the write did not fault");
    1
}

fn textwrite() -> i32 {
    let f = core::hint::black_box(main as *const () as *mut u8);
    // SAFETY: deliberately invalid: kernel text is mapped read+execute only.
    unsafe { f.write_volatile(0xcc) };
    println!("textwrite: kernel text was writable");
    1
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    let mut buf = [0u8; 1024];
    buf[(n % 1024) as usize] = n as u8;
    core::hint::black_box(&mut buf);
    if n == u64::MAX {
        0
    } else {
        recurse(n + 1) + buf[0] as u64
    }
}

fn sleep_accuracy() -> i32 {
    let irqs_before = unikernel::sched::STATS.timer_irqs.load(Relaxed);
    let mut worst = 0u64;
    for ms in [1u64, 10, 100] {
        let t = Instant::now();
        thread::sleep(Duration::from_millis(ms));
        let us = t.elapsed().as_micros() as u64;
        println!("sleep: asked {ms} ms, slept {us} us");
        if us < ms * 1000 {
            println!("sleep: woke early");
            return 1;
        }
        worst = worst.max(us - ms * 1000);
    }
    let irqs = unikernel::sched::STATS.timer_irqs.load(Relaxed) - irqs_before;
    println!("sleep: worst lateness {worst} us, timer_irqs={irqs}");
    if irqs > 0 { 0 } else { 1 }
}

fn pingpong() -> i32 {
    const ROUNDS: u64 = 10_000;
    let state = Arc::new((Mutex::new(0u64), Condvar::new()));
    let s2 = state.clone();
    let t = Instant::now();
    let other = thread::spawn(move || {
        let (m, cv) = &*s2;
        let mut n = m.lock();
        while *n < 2 * ROUNDS {
            if *n % 2 == 1 {
                *n += 1;
                cv.notify_one();
            } else {
                n = cv.wait(n);
            }
        }
    });
    {
        let (m, cv) = &*state;
        let mut n = m.lock();
        while *n < 2 * ROUNDS {
            if *n % 2 == 0 {
                *n += 1;
                cv.notify_one();
            } else {
                n = cv.wait(n);
            }
        }
    }
    other.join();
    let n = *state.0.lock();
    println!(
        "pingpong: {} round trips in {} us",
        n / 2,
        t.elapsed().as_micros()
    );
    if n == 2 * ROUNDS { 0 } else { 1 }
}

/// Threads on every CPU (half placed with `Placement::Any`, half on the
/// boot CPU for idle CPUs to steal): work, a shared sleeping mutex,
/// condition-variable handoffs between pairs of threads (on different CPUs
/// when there are several) that pass a heap block along (allocated on one
/// CPU, checked and freed on another: the per-CPU heap caches), sleeps,
/// and mmap/munmap (TLB shootdown). The checksum does not depend on the order or the CPU count;
/// a lost update under the mutex, a lost wake-up (a hang) or a stale TLB
/// entry (a wrong pattern) breaks it. Prints the rounds each CPU ran.
fn smp_stress() -> i32 {
    const WORKERS: u64 = 8;
    const ROUNDS: u64 = 400;
    const MAX_CPUS: usize = 64;
    fn mix(i: u64, r: u64) -> u64 {
        let mut x = (i << 32 | r).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for _ in 0..64 {
            x ^= x >> 29;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        }
        x
    }
    type Token = (u64, u64, Vec<u64>);
    struct Shared {
        total: Mutex<(u64, u64)>,
        /// One token per pair: whose turn (0 or 1), how many passes, and
        /// the block passed along.
        pairs: Vec<(Mutex<Token>, Condvar)>,
        per_cpu: [AtomicU64; MAX_CPUS],
        bad_pattern: AtomicU64,
    }
    let cpus = thread::cpu_count();
    let shared = Arc::new(Shared {
        total: Mutex::new((0, 0)),
        pairs: (0..WORKERS / 2)
            .map(|_| (Mutex::new((0, 0, Vec::new())), Condvar::new()))
            .collect(),
        per_cpu: [const { AtomicU64::new(0) }; MAX_CPUS],
        bad_pattern: AtomicU64::new(0),
    });
    let steals0 = unikernel::sched::STATS.steals.load(Relaxed);
    let t = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let s = shared.clone();
            let placement = if i % 2 == 0 {
                thread::Placement::Any
            } else {
                thread::Placement::Here
            };
            thread::spawn_on(placement, 32 * 1024, thread::Priority::Normal, move || {
                let (pair, side) = (&s.pairs[(i / 2) as usize], i % 2);
                for r in 0..ROUNDS {
                    let h = mix(i, r);
                    {
                        let mut g = s.total.lock();
                        let (sum, n) = *g;
                        // A read-modify-write with room for a race.
                        core::hint::black_box(mix(n, 1));
                        *g = (sum.wrapping_add(h), n + 1);
                    }
                    // Hand the pair's token to the other side.
                    {
                        let (m, cv) = pair;
                        let mut g = m.lock();
                        while g.0 != side {
                            g = cv.wait(g);
                        }
                        // The partner's block: each word is its first
                        // xor its index.
                        let got = core::mem::take(&mut g.2);
                        if got.iter().enumerate().any(|(k, &w)| w != got[0] ^ k as u64) {
                            s.bad_pattern.fetch_add(1, Relaxed);
                        }
                        drop(got);
                        let block = (0..1 + h % 30).map(|k| h ^ k).collect();
                        *g = (1 - side, g.1 + 1, block);
                        cv.notify_all();
                    }
                    if r % 16 == 0 {
                        thread::sleep(Duration::from_micros(200 + 50 * i));
                    }
                    if r % 8 == 0 {
                        let len = 64 * 1024;
                        let p = mem::mmap(len, Prot::READ | Prot::WRITE).expect("mmap");
                        // SAFETY: a fresh private mapping of `len` bytes.
                        let buf = unsafe { core::slice::from_raw_parts_mut(p, len) };
                        for (k, b) in buf.iter_mut().enumerate().step_by(4096) {
                            *b = (h as usize + k) as u8;
                        }
                        for (k, b) in buf.iter().enumerate().step_by(4096) {
                            if *b != (h as usize + k) as u8 {
                                s.bad_pattern.fetch_add(1, Relaxed);
                            }
                        }
                        mem::munmap(p, len).expect("munmap");
                    }
                    s.per_cpu[thread::cpu_index().min(MAX_CPUS - 1)].fetch_add(1, Relaxed);
                }
            })
            .expect("spawn")
        })
        .collect();
    for w in workers {
        w.join();
    }
    let (sum, n) = *shared.total.lock();
    let expected = (0..WORKERS)
        .flat_map(|i| (0..ROUNDS).map(move |r| mix(i, r)))
        .fold(0u64, u64::wrapping_add);
    let passes: u64 = shared.pairs.iter().map(|(m, _)| m.lock().1).sum();
    // Every CPU ran threads; every AP ran workers' rounds (the boot CPU,
    // which runs `main`, gets none of them past 7 APs: the placement
    // prefers the CPUs with fewer threads).
    let mut all_ran = true;
    for c in 0..cpus {
        let rounds = shared.per_cpu[c].load(Relaxed);
        let runs = thread::cpu_runs(c);
        println!("smp: cpu {c} ran {rounds} rounds, {runs} thread switches");
        all_ran &= runs > 0 && (rounds > 0 || c == 0 || cpus > WORKERS as usize + 1);
    }
    let bad = shared.bad_pattern.load(Relaxed);
    println!(
        "smp: {} threads stolen by idle CPUs",
        unikernel::sched::STATS.steals.load(Relaxed) - steals0
    );
    println!(
        "smp: {cpus} CPUs, {n} updates, {passes} handoffs, {bad} bad pages, checksum {sum:#018x} (expected {expected:#018x}) in {} ms",
        t.elapsed().as_millis()
    );
    let ok = sum == expected && n == WORKERS * ROUNDS && passes == WORKERS * ROUNDS && bad == 0;
    println!("smp: {}", if ok && all_ran { "ok" } else { "FAILED" });
    if ok && all_ran { 0 } else { 1 }
}

/// Work stealing: 8 CPU-bound workers spawned on the boot CPU
/// (`Placement::Here`), which yield every 4 rounds and sleep every 64: idle
/// CPUs take them from the boot CPU's queue. Passes when the checksum of
/// their results (independent of where they ran) is right and, with
/// several CPUs, at least two CPUs ran rounds. Prints the rounds each CPU
/// ran and the steals.
fn steal() -> i32 {
    const WORKERS: u64 = 8;
    const ROUNDS: u64 = 256;
    const MAX_CPUS: usize = 64;
    fn mix(i: u64, r: u64) -> u64 {
        let mut x = (i << 32 | r).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2048 {
            x ^= x >> 29;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        }
        x
    }
    let per_cpu = Arc::new([const { AtomicU64::new(0) }; MAX_CPUS]);
    let steals0 = unikernel::sched::STATS.steals.load(Relaxed);
    let t = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let per_cpu = per_cpu.clone();
            thread::spawn_with(16 * 1024, thread::Priority::Normal, move || {
                let mut acc = 0u64;
                for r in 0..ROUNDS {
                    acc = acc.rotate_left(7) ^ mix(i, r);
                    per_cpu[thread::cpu_index().min(MAX_CPUS - 1)].fetch_add(1, Relaxed);
                    if r % 64 == 63 {
                        thread::sleep(Duration::from_micros(100));
                    } else if r % 4 == 3 {
                        thread::yield_now();
                    }
                }
                acc
            })
            .expect("spawn")
        })
        .collect();
    let sum = workers
        .into_iter()
        .map(|w| w.join())
        .fold(0u64, u64::wrapping_add);
    let expected = (0..WORKERS)
        .map(|i| (0..ROUNDS).fold(0u64, |acc, r| acc.rotate_left(7) ^ mix(i, r)))
        .fold(0u64, u64::wrapping_add);
    let cpus = thread::cpu_count();
    let mut ran = 0;
    for c in 0..cpus {
        let rounds = per_cpu[c].load(Relaxed);
        println!("steal: cpu {c} ran {rounds} rounds");
        ran += usize::from(rounds > 0);
    }
    let steals = unikernel::sched::STATS.steals.load(Relaxed) - steals0;
    println!(
        "steal: {cpus} CPUs, {ran} ran rounds, {steals} steals, checksum {sum:#018x} (expected {expected:#018x}) in {} ms",
        t.elapsed().as_millis()
    );
    let ok = sum == expected && (cpus == 1 || (ran >= 2 && steals > 0));
    println!("steal: {}", if ok { "ok" } else { "FAILED" });
    if ok { 0 } else { 1 }
}

/// Takes a scheduler-level lock inside a memory-manager-level one, against
/// the lock order: with the `lockdep` feature that panics; without, nothing
/// checks it.
fn lock_order() -> i32 {
    use unikernel::sync::{IrqMutex, level};
    let inner = IrqMutex::with_level(level::MM, 1u32);
    let outer = IrqMutex::with_level(level::SCHED, 2u32);
    println!("lock-order: a level 3 lock inside a level 8 lock");
    let g = inner.lock();
    let h = outer.lock();
    println!("lock-order: not checked ({})", *g + *h);
    0
}

/// With the lock-order check: a thread that would block on a sleeping lock
/// (held by another thread) while holding a spinlock panics. The spinlock
/// is of the wait lists' level, which the wait queue's own lock may nest
/// in, so only the check before blocking can catch it (a higher level is
/// caught already by the wait queue's lock).
fn sleep_under_spinlock() -> i32 {
    use unikernel::sync::{IrqMutex, level};
    let m = Arc::new(Mutex::new(0u32));
    let held = Arc::new(AtomicBool::new(false));
    let (m2, h2) = (m.clone(), held.clone());
    let holder = thread::spawn(move || {
        let _g = m2.lock();
        h2.store(true, Relaxed);
        thread::sleep(Duration::from_secs(30));
    });
    while !held.load(Relaxed) {
        thread::yield_now();
    }
    let spin = IrqMutex::with_level(level::WAIT, 1u32);
    println!("lock-order: a sleeping lock inside a level 2 lock");
    let g = spin.lock();
    let v = *m.lock();
    println!("lock-order: not checked ({})", *g + v);
    drop(holder);
    0
}

/// A thread that never blocks spins on the last CPU; a second thread on
/// the same CPU sleeps and takes semaphore permits released from the boot
/// CPU. It runs only if that CPU's slice timer preempts the spinner, armed
/// when a sleeper's deadline or a remote wake-up makes a thread wait there.
fn smp_spin() -> i32 {
    const TURNS: u64 = 20;
    let last = thread::Placement::Cpu(u32::MAX);
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let spinner = thread::spawn_on(last, 16 * 1024, thread::Priority::Normal, move || {
        let mut n = 0u64;
        while !s2.load(Relaxed) {
            n += 1;
            core::hint::spin_loop();
        }
        (thread::cpu_index(), n)
    })
    .expect("spawn");
    let sem = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (sem2, done2) = (sem.clone(), done.clone());
    let worker = thread::spawn_on(last, 16 * 1024, thread::Priority::Normal, move || {
        for _ in 0..TURNS {
            thread::sleep(Duration::from_millis(1));
            sem2.acquire();
            done2.fetch_add(1, Relaxed);
        }
        thread::cpu_index()
    })
    .expect("spawn");
    let t = Instant::now();
    for _ in 0..TURNS {
        thread::sleep(Duration::from_millis(1));
        sem.release();
    }
    while done.load(Relaxed) < TURNS && t.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(1));
    }
    let turns = done.load(Relaxed);
    stop.store(true, Relaxed);
    let (spin_cpu, spins) = spinner.join();
    let worker_cpu = if turns == TURNS {
        worker.join()
    } else {
        usize::MAX
    };
    println!(
        "smp-spin: {turns} of {TURNS} turns on cpu {worker_cpu} in {} ms next to {spins} spins on cpu {spin_cpu}",
        t.elapsed().as_millis()
    );
    if turns == TURNS && spin_cpu == worker_cpu && spins > 0 {
        0
    } else {
        1
    }
}

/// Per-CPU timer queues (2 or more CPUs): a thread on the last CPU sleeps
/// 1 ms 100 times while `main` sleeps 2 ms 40 times on the boot CPU; no sleep
/// ends early, and each CPU's timer wakes its own sleepers only (with one
/// shared queue whichever CPU's timer fired first woke them). Then a thread
/// on the last CPU waits on a condition variable with a 10 s timeout and is
/// notified from the boot CPU: the wait ends notified, and the cancelled
/// timer is gone from its CPU's queue.
fn smp_timers() -> i32 {
    const SHORT: u32 = 100;
    const LONG: u32 = 40;
    let last_cpu = unikernel::sched::cpu_count() - 1;
    if last_cpu == 0 {
        println!("smp-timers: needs 2 CPUs");
        return 1;
    }
    let last = thread::Placement::Cpu(last_cpu as u32);
    let sleeps = |n: u32, ms: u64| {
        let mut early = 0;
        for _ in 0..n {
            let t = Instant::now();
            thread::sleep(Duration::from_millis(ms));
            early += u32::from(t.elapsed() < Duration::from_millis(ms));
        }
        early
    };
    let boot0 = unikernel::sched::cpu_timers(0);
    let last0 = unikernel::sched::cpu_timers(last_cpu);
    let sleeper = thread::spawn_on(last, 16 * 1024, thread::Priority::Normal, move || {
        (thread::cpu_index(), sleeps(SHORT, 1))
    })
    .expect("spawn");
    let mut early = sleeps(LONG, 2);
    let (cpu, e) = sleeper.join();
    early += e;
    let boot1 = unikernel::sched::cpu_timers(0);
    let last1 = unikernel::sched::cpu_timers(last_cpu);
    let boot_wakes = boot1.wakes - boot0.wakes;
    let last_wakes = last1.wakes - last0.wakes;

    let state = Arc::new((Mutex::new(0u32), Condvar::new()));
    let s2 = state.clone();
    let waiter = thread::spawn_on(last, 16 * 1024, thread::Priority::Normal, move || {
        let (m, cv) = &*s2;
        let mut g = m.lock();
        *g = 1;
        let t = Instant::now();
        let mut timed_out = false;
        while *g != 2 && !timed_out {
            (g, timed_out) = cv.wait_timeout(g, Duration::from_secs(10));
        }
        (timed_out, t.elapsed())
    })
    .expect("spawn");
    let (m, cv) = &*state;
    loop {
        let mut g = m.lock();
        if *g == 1 {
            *g = 2;
            cv.notify_one();
            break;
        }
        drop(g);
        thread::sleep(Duration::from_millis(1));
    }
    let (timed_out, waited) = waiter.join();
    let pending = unikernel::sched::cpu_timers(last_cpu).pending;
    println!(
        "smp-timers: {SHORT} sleeps on cpu {cpu}, {LONG} on cpu 0, {early} early; timer wakes cpu 0 {boot_wakes}, cpu {last_cpu} {last_wakes} (irqs {} and {}); notified wait timed_out={timed_out} after {} ms, cpu {last_cpu} timers pending {pending}",
        boot1.irqs - boot0.irqs,
        last1.irqs - last0.irqs,
        waited.as_millis()
    );
    let ok = cpu == last_cpu
        && early == 0
        && boot_wakes == u64::from(LONG)
        && last_wakes == u64::from(SHORT)
        && !timed_out
        && pending == 0;
    if ok {
        println!("smp-timers: ok");
        0
    } else {
        1
    }
}

fn many_threads() -> i32 {
    const N: usize = 1000;
    let data = |s: &unikernel::MemStats| s.frames_used - s.page_table_frames;
    // The kernel's own threads (network, console dump, ...) are there before.
    let baseline = unikernel::sched::thread_count();
    // Round 1 grows the heap to hold 1,000 thread records; round 2 must then
    // end exactly where round 1 ended: every stack and record given back.
    let first = thread_round(N);
    let a = mem::stats();
    let second = thread_round(N);
    let b = mem::stats();
    println!(
        "threads: {N} alive at once (vmas={} at peak), joined; after round 1: data frames={} mapped={} vmas={}; after round 2: data frames={} mapped={} vmas={}; live={} (before: {baseline})",
        second.max(first),
        data(&a),
        a.mapped_bytes,
        a.vmas,
        data(&b),
        b.mapped_bytes,
        b.vmas,
        unikernel::sched::thread_count()
    );
    // Mappings must match exactly. Frames may differ by the few heap pages
    // that round 2 happens to touch first; a leak of even one stack page per
    // thread would show as N frames.
    let ok = data(&b) < data(&a) + N as u64 / 10
        && a.mapped_bytes == b.mapped_bytes
        && a.vmas == b.vmas
        && unikernel::sched::thread_count() == baseline;
    if ok { 0 } else { 1 }
}

/// Spawns `n` threads that all stay alive until released, then joins them.
/// Returns the VMA count at the peak.
fn thread_round(n: usize) -> u64 {
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let (g, st) = (gate.clone(), started.clone());
        handles.push(thread::spawn(move || {
            st.fetch_add(1, Relaxed);
            g.acquire();
            i * 2
        }));
    }
    while started.load(Relaxed) < n as u64 {
        thread::yield_now();
    }
    let peak = mem::stats().vmas;
    for _ in 0..n {
        gate.release();
    }
    let sum: u64 = handles.into_iter().map(|h| h.join()).sum();
    assert_eq!(sum, (n as u64 - 1) * n as u64, "thread results");
    peak
}

fn spinner_does_not_starve() -> i32 {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let spins = Arc::new(AtomicU64::new(0));
    let sp2 = spins.clone();
    let spinner = thread::spawn(move || {
        while !s2.load(Relaxed) {
            sp2.fetch_add(1, Relaxed);
            core::hint::spin_loop();
        }
    });
    // Let it start spinning, then sleep: the slice must preempt it.
    thread::yield_now();
    let t = Instant::now();
    thread::sleep(Duration::from_millis(50));
    let us = t.elapsed().as_micros();
    stop.store(true, Relaxed);
    spinner.join();
    let preemptions = unikernel::sched::STATS.preemptions.load(Relaxed);
    println!(
        "spin: slept 50 ms in {us} us while a thread spun {} times; preemptions={preemptions}",
        spins.load(Relaxed)
    );
    if spins.load(Relaxed) > 0 { 0 } else { 1 }
}

/// The 128 bytes below the stack pointer survive interrupts (code linked
/// into the kernel may keep data there), over 10,000 software interrupts
/// and a stretch with the timer and the other threads running.
fn red_zone() -> i32 {
    use unikernel::arch::simd;
    let mut changed = simd::red_zone_mismatches(10_000);
    let spinner = thread::spawn(|| simd::red_zone_mismatches(10_000));
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(2));
        changed += simd::red_zone_mismatches(100);
    }
    changed += spinner.join();
    println!("redzone: words changed by interrupts: {changed}");
    i32::from(changed != 0)
}

/// Two threads hold their own values in XMM0-15 while the timer preempts them
/// (and the main thread sleeps and wakes), and while a software interrupt
/// whose handler overwrites every XMM register fires on each spin. Neither
/// the other thread nor the handler may show through.
fn simd_state() -> i32 {
    use unikernel::arch::simd;
    const ROUNDS: u64 = 20;
    let info = simd::info();
    let spawn = |pattern: u64| {
        thread::spawn(move || {
            let mut total = simd::HoldResult::default();
            for round in 0..ROUNDS {
                // Each round waits for 4 more switches, at most 2 s.
                let r = simd::hold_registers(pattern ^ (round << 8), 4, 2000, round % 2 == 0);
                total.mismatches += r.mismatches;
                total.soft_irqs += r.soft_irqs;
                total.iterations += r.iterations;
                total.switches += r.switches;
            }
            total
        })
    };
    let a = spawn(0x1111_1111_0000_0000);
    let b = spawn(0x2222_2222_0000_0000);
    // Some timer wake-ups of this thread in between.
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(3));
    }
    let (ra, rb) = (a.join(), b.join());
    let cycles = simd::irq_round_trip_cycles(100_000);
    println!(
        "simd: xsave={} avx={} xcr0={:#x} area={} bytes; software interrupt round trip {} cycles ({} ns)",
        info.xsave,
        info.avx,
        info.xcr0,
        info.area_size,
        cycles,
        unikernel::time::cycles_to_us(cycles * 1000).unwrap_or(0)
    );
    for (name, r) in [("a", ra), ("b", rb)] {
        println!(
            "simd: thread {name} mismatches={} switches={} soft_irqs={} iterations={}",
            r.mismatches, r.switches, r.soft_irqs, r.iterations
        );
    }
    let switched = ra.switches >= ROUNDS && rb.switches >= ROUNDS;
    let interrupted = ra.soft_irqs > 0 && rb.soft_irqs > 0;
    if ra.mismatches + rb.mismatches == 0 && switched && interrupted {
        println!("simd: registers kept");
        0
    } else {
        println!("simd: FAILED (registers leaked, or too few switches/interrupts)");
        1
    }
}

/// Heap cost across CPUs: one thread pinned on each CPU allocates 8 small
/// blocks (24 to 200 bytes) and frees them, 20,000 times, all threads at
/// once. Prints the wall time per allocation+free pair over all threads
/// and the slowest thread's, and a checksum of the bytes written (so the
/// blocks are used).
fn bench_alloc() -> i32 {
    const ITERS: u64 = 20_000;
    const SIZES: [usize; 8] = [24, 40, 64, 96, 16, 128, 200, 48];
    let cpus = thread::cpu_count();
    let go = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..cpus)
        .map(|c| {
            let go = go.clone();
            thread::spawn_on(
                thread::Placement::Cpu(c as u32),
                16 * 1024,
                thread::Priority::Normal,
                move || {
                    while !go.load(Relaxed) {
                        core::hint::spin_loop();
                    }
                    let t = Instant::now();
                    let mut sum = 0u64;
                    for i in 0..ITERS {
                        let blocks: [Vec<u8>; 8] = core::array::from_fn(|k| {
                            let mut v = Vec::with_capacity(SIZES[k]);
                            v.push((i as usize + k) as u8);
                            v
                        });
                        sum += blocks.iter().map(|b| b[0] as u64).sum::<u64>();
                    }
                    (sum, t.elapsed().as_nanos() as u64)
                },
            )
            .expect("spawn")
        })
        .collect();
    let t = Instant::now();
    go.store(true, Relaxed);
    let mut sum = 0u64;
    let mut slowest = 0;
    for w in workers {
        let (s, ns) = w.join();
        sum = sum.wrapping_add(s);
        slowest = slowest.max(ns);
    }
    let wall = t.elapsed().as_nanos() as u64;
    let pairs = ITERS * SIZES.len() as u64;
    println!(
        "bench-alloc: {cpus} CPUs, {} pairs, wall_ns_per_pair={} slowest_thread_ns_per_pair={} sum={sum}",
        pairs * cpus as u64,
        wall / (pairs * cpus as u64),
        slowest / pairs
    );
    0
}

fn bench_sched() -> i32 {
    const SWITCHES: u64 = 20_000;
    const SPAWNS: u64 = 2_000;
    let go = Arc::new(AtomicBool::new(true));
    let g2 = go.clone();
    let other = thread::spawn(move || {
        while g2.load(Relaxed) {
            thread::yield_now();
        }
    });
    thread::yield_now();
    let s0 = unikernel::sched::STATS.switches.load(Relaxed);
    let t = Instant::now();
    for _ in 0..SWITCHES / 2 {
        thread::yield_now();
    }
    let el = t.elapsed().as_nanos() as u64;
    let switches = unikernel::sched::STATS.switches.load(Relaxed) - s0;
    go.store(false, Relaxed);
    other.join();
    let t = Instant::now();
    for i in 0..SPAWNS {
        let h = thread::spawn(move || i);
        h.join();
    }
    let spawn = t.elapsed().as_nanos() as u64 / SPAWNS;
    println!(
        "bench-sched: switch_ns={} spawn_join_ns={spawn} switches={switches}",
        el / switches.max(1)
    );
    0
}
