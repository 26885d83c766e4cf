//! `cargo uk bench soak`: httpd under a mixed load for a long time, with the
//! guest's memory sampled every minute; the run fails when memory keeps
//! growing or the server stops serving.
//!
//! The load (the test suite's own client, `tests/clients/httpload.py`, run
//! inside the benchmark's network namespace) alternates rounds of 64
//! kept-alive connections fetching 1 KiB, 64 KiB and 1 MiB files in turn
//! with rounds of `Connection: close` requests from 200 clients. The samples
//! come from the kernel's diagnostic dump (the console byte 0x1c): its
//! memory line (frames in use, heap in use) and its network line (TCP
//! connections, socket-buffer bytes, TIME-WAIT records).

use std::time::{Duration, Instant};

use crate::Error;
use crate::bench::{LiveGuest, table};
use crate::build::{Profile, build_image};
use crate::httpbench::console_tail;
use crate::image::TempImage;
use crate::netns::{GUEST_IP, Netns};
use crate::qemu::{Accel, Machine, MemSize, VmConfig, ensure_qemu, is_root};

const CLIENT: &str = include_str!("../../../tests/clients/httpload.py");
/// The console byte that makes the kernel print its diagnostic dump.
const DUMP_KEY: u8 = 0x1c;
const FILES: [(&str, usize); 3] = [
    ("/1k.bin", 1 << 10),
    ("/64k.bin", 64 << 10),
    ("/1m.bin", 1 << 20),
];
/// Seconds of load between two memory samples.
const ROUND_SECS: u64 = 30;

/// One memory sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the load started.
    pub at: u64,
    /// Frames in use (page cache included).
    pub frames_used: u64,
    /// Heap bytes allocated.
    pub heap_in_use: u64,
    /// Bytes of the heap's arenas (kept once grown: its high-water mark).
    pub heap_arena_bytes: u64,
    /// Bytes of large allocations (own mappings, given back on free).
    pub large_alloc_bytes: u64,
    /// TCP connections open.
    pub connections: u64,
    /// Socket-buffer bytes.
    pub buffer_bytes: u64,
    /// TIME-WAIT records.
    pub time_wait: u64,
}

/// The `key=value` number after `key=` in `line`.
fn kv(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// A sample from the dump's memory and network lines.
pub fn parse_sample(at: u64, mem: &str, net: &str) -> Option<Sample> {
    Some(Sample {
        at,
        frames_used: kv(mem, "frames_used")?,
        heap_in_use: kv(mem, "heap_in_use")?,
        heap_arena_bytes: kv(mem, "heap_arena_bytes").unwrap_or(0),
        large_alloc_bytes: kv(mem, "large_alloc_bytes").unwrap_or(0),
        connections: kv(net, "tcp_connections").unwrap_or(0),
        buffer_bytes: kv(net, "buffer_bytes").unwrap_or(0),
        time_wait: kv(net, "time_wait").unwrap_or(0),
    })
}

/// Whether memory stayed flat: after the first sample (the warm-up, which
/// fills the page cache), the heap at the end is within 25% + 1 MiB of the
/// smallest later sample, and frames in use within 10% + 256 frames.
pub fn is_flat(samples: &[Sample]) -> bool {
    let later = &samples[1.min(samples.len())..];
    let (Some(last), Some(min_heap), Some(min_frames)) = (
        later.last(),
        later.iter().map(|s| s.heap_in_use).min(),
        later.iter().map(|s| s.frames_used).min(),
    ) else {
        return true;
    };
    last.heap_in_use <= min_heap + min_heap / 4 + (1 << 20)
        && last.frames_used <= min_frames + min_frames / 10 + 256
}

/// Why memory grew, in words: how much of the frames' growth (last sample
/// against the smallest later one) is heap arenas, which the heap keeps once
/// grown (a high-water mark of transient peaks), and whether the heap's
/// live bytes grew (a leak would).
pub fn growth_note(samples: &[Sample]) -> String {
    let later = &samples[1.min(samples.len())..];
    let (Some(first), Some(last)) = (later.first(), later.last()) else {
        return String::new();
    };
    let min_frames = later.iter().map(|s| s.frames_used).min().unwrap_or(0);
    let frames = last.frames_used.saturating_sub(min_frames) * 4096;
    let arenas = last.heap_arena_bytes.saturating_sub(first.heap_arena_bytes);
    format!(
        "frames +{} KiB, of which heap arenas +{} KiB (kept once grown); heap in use {} -> {} bytes",
        frames >> 10,
        arenas.min(frames) >> 10,
        first.heap_in_use,
        last.heap_in_use
    )
}

fn dump(guest: &mut LiveGuest, at: u64) -> Result<Sample, String> {
    let mark = guest.mark();
    guest.send(&[DUMP_KEY])?;
    let mem = guest.wait_for_after(mark, "uk: dump: mem:", Duration::from_secs(30))?;
    let net = guest.wait_for_after(mark, "uk: dump: net:", Duration::from_secs(1))?;
    parse_sample(at, &mem.text, &net.text)
        .ok_or_else(|| format!("cannot read the dump:\n{}\n{}", mem.text, net.text))
}

fn run_client(ns: &Netns, args: &[String]) -> Result<String, String> {
    let mut full = vec!["-c".to_string(), CLIENT.to_string()];
    full.extend(args.iter().cloned());
    let out = ns
        .command("python3", &full)
        .output()
        .map_err(|e| format!("cannot run the load client: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if stdout.starts_with("ok ") || stdout == "fetch ok" {
        Ok(stdout)
    } else {
        Err(format!(
            "load client {:?}: {stdout} {}",
            args.first(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs the soak for `minutes` against a guest of `mem`.
pub fn bench_soak(minutes: u64, mem: MemSize, accel: Option<Accel>) -> Result<i32, Error> {
    ensure_qemu()?;
    if !is_root() {
        return Err(Error::Failed(
            "bench soak needs root (a network namespace and a TAP device): run it as root".into(),
        ));
    }
    let accel = accel.unwrap_or_else(Accel::detect);
    let image = build_image("httpd", Profile::Release, false)?;
    let disk = TempImage::of_files("soak-site", &FILES, 21)?;
    let ns = Netns::create("bench-soak")?;
    let mut cfg = VmConfig::new(&image);
    cfg.machine = Machine::Microvm;
    cfg.accel = accel;
    cfg.mem = mem;
    cfg.disk = Some(disk.path.clone());
    ns.attach(&mut cfg);
    cfg.args = vec!["--no-access-log".into()];
    println!(
        "soak: httpd on microvm, accel {accel}, {mem}; {minutes} min of alternating keep-alive \
         (64 connections) and Connection: close (200 clients) rounds of {ROUND_SECS} s, inside \
         namespace {}",
        ns.name()
    );
    let mut guest = LiveGuest::spawn(&cfg).map_err(Error::Failed)?;
    guest
        .wait_for("httpd: serving", Duration::from_secs(120))
        .map_err(Error::Failed)?;
    let ip = GUEST_IP.to_string();
    let start = Instant::now();
    let end = start + Duration::from_secs(minutes * 60);
    let mut samples = Vec::new();
    let mut requests = 0u64;
    let mut round = 0u64;
    let fail = |guest: &mut LiveGuest, e: String| {
        Error::Failed(format!(
            "{e}\n--- guest output (last lines) ---\n{}",
            console_tail(&guest.output(), 30)
        ))
    };
    while Instant::now() < end {
        let args: Vec<String> = if round.is_multiple_of(2) {
            let mut a = vec![
                "keepalive".into(),
                ip.clone(),
                "64".into(),
                ROUND_SECS.to_string(),
            ];
            a.extend(FILES.iter().map(|(p, s)| format!("{p}={s}")));
            a
        } else {
            // About one round's worth of requests at the rates seen under TCG.
            vec![
                "close".into(),
                ip.clone(),
                "200".into(),
                (ROUND_SECS * 1500).to_string(),
                ROUND_SECS.to_string(),
                "/1k.bin=1024".into(),
            ]
        };
        let line = match run_client(&ns, &args) {
            Ok(l) => l,
            Err(e) => return Err(fail(&mut guest, e)),
        };
        requests += kv(&line, "requests").unwrap_or(0);
        round += 1;
        if round.is_multiple_of(2) {
            let at = start.elapsed().as_secs();
            match dump(&mut guest, at) {
                Ok(s) => {
                    println!(
                        "soak: {:>5} s  frames_used={} heap_in_use={} heap_arena_bytes={} large_alloc_bytes={} connections={} buffer_bytes={} time_wait={} requests={requests}",
                        s.at,
                        s.frames_used,
                        s.heap_in_use,
                        s.heap_arena_bytes,
                        s.large_alloc_bytes,
                        s.connections,
                        s.buffer_bytes,
                        s.time_wait
                    );
                    samples.push(s);
                }
                Err(e) => return Err(fail(&mut guest, e)),
            }
        }
    }
    let probe = run_client(
        &ns,
        &[
            "keepalive".into(),
            ip.clone(),
            "1".into(),
            "1".into(),
            "/1k.bin=1024".into(),
        ],
    );
    if let Err(e) = probe {
        return Err(fail(
            &mut guest,
            format!("after the soak the server does not serve: {e}"),
        ));
    }
    guest.kill();
    let mut rows = vec![
        [
            "seconds",
            "frames used",
            "heap in use",
            "heap arenas",
            "large allocs",
            "connections",
            "buffer bytes",
            "TIME-WAIT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in &samples {
        rows.push(vec![
            s.at.to_string(),
            s.frames_used.to_string(),
            s.heap_in_use.to_string(),
            s.heap_arena_bytes.to_string(),
            s.large_alloc_bytes.to_string(),
            s.connections.to_string(),
            s.buffer_bytes.to_string(),
            s.time_wait.to_string(),
        ]);
    }
    print!("{}", table(&rows));
    let flat = is_flat(&samples);
    println!(
        "soak: {requests} requests in {} s; memory {}",
        start.elapsed().as_secs(),
        if flat {
            "flat (after the first sample)".to_string()
        } else {
            format!("GREW: {}", growth_note(&samples))
        }
    );
    Ok(if flat { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_dump() {
        let mem = "uk: dump: mem: frames_total=100 frames_free=40 frames_used=60 heap_arenas=2 heap_arena_bytes=196608 heap_in_use=12345 large_allocs=1 large_alloc_bytes=131072";
        let net = "uk: dump: net: irq_pending=false nic: x stack: tcp_connections=3 buffer_bytes=98304 time_wait=7 time_wait_bytes_per_entry=40";
        let s = parse_sample(5, mem, net).unwrap();
        assert_eq!(
            s,
            Sample {
                at: 5,
                frames_used: 60,
                heap_in_use: 12345,
                heap_arena_bytes: 196608,
                large_alloc_bytes: 131072,
                connections: 3,
                buffer_bytes: 98304,
                time_wait: 7
            }
        );
        assert!(parse_sample(0, "nothing", net).is_none());
    }

    #[test]
    fn flatness() {
        let s = |at, frames, heap| Sample {
            at,
            frames_used: frames,
            heap_in_use: heap,
            ..Sample::default()
        };
        // The first sample (warm-up) does not count.
        assert!(is_flat(&[
            s(0, 10, 10),
            s(60, 5000, 4 << 20),
            s(120, 5010, 4 << 20)
        ]));
        assert!(!is_flat(&[
            s(0, 10, 10),
            s(60, 5000, 4 << 20),
            s(120, 5000, 40 << 20)
        ]));
        assert!(!is_flat(&[
            s(0, 10, 10),
            s(60, 5000, 4 << 20),
            s(120, 9000, 4 << 20)
        ]));
        assert!(is_flat(&[]));
    }

    #[test]
    fn growth_note_separates_arenas() {
        let s = |at, frames, heap, arenas| Sample {
            at,
            frames_used: frames,
            heap_in_use: heap,
            heap_arena_bytes: arenas,
            ..Sample::default()
        };
        // The second 64 s sample onwards: +1,026 frames, +4 MiB of arenas.
        let v = [
            s(0, 10, 10, 0),
            s(64, 3130, 423_156, 8 << 20),
            s(319, 4156, 351_220, 12 << 20),
        ];
        assert!(!is_flat(&v));
        assert_eq!(
            growth_note(&v),
            "frames +4104 KiB, of which heap arenas +4096 KiB (kept once grown); heap in use 423156 -> 351220 bytes"
        );
    }
}
