//! `cargo uk bench fs`: cold- and warm-cache file read throughput, measured
//! in the guest (TSC clock) by `fstest bench` on a disk of 4 KiB, 1 MiB and
//! 16 MiB files.

use std::time::Duration;

use crate::Error;
use crate::bench::{run_guest, table};
use crate::build::{Profile, build_image};
use crate::image::TempImage;
use crate::qemu::{Accel, Machine, MemSize, VmConfig, ensure_qemu};

/// The benchmark's files: guest path and size.
pub const FILES: [(&str, usize); 3] = [
    ("/small.bin", 4 << 10),
    ("/medium.bin", 1 << 20),
    ("/large.bin", 16 << 20),
];

/// One `fsbench:` line of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsSample {
    /// Guest path.
    pub file: String,
    /// Bytes read.
    pub bytes: u64,
    /// Read with an empty page cache, in ns.
    pub cold_ns: u64,
    /// Read again with the file cached, in ns.
    pub warm_ns: u64,
}

/// Parses `fsbench: file=F bytes=N cold_ns=C warm_ns=W`.
pub fn parse_fsbench(line: &str) -> Option<FsSample> {
    let rest = line.split("fsbench: ").nth(1)?;
    let kv = crate::parse_kv(rest);
    let num = |k: &str| kv.get(k).copied();
    let file = rest
        .split_whitespace()
        .find_map(|w| w.strip_prefix("file="))?;
    Some(FsSample {
        file: file.to_string(),
        bytes: num("bytes")?,
        cold_ns: num("cold_ns")?,
        warm_ns: num("warm_ns")?,
    })
}

fn mib_per_s(bytes: u64, ns: u64) -> String {
    if ns == 0 {
        return "-".into();
    }
    format!(
        "{:.1}",
        bytes as f64 / (1024.0 * 1024.0) / (ns as f64 / 1e9)
    )
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// Runs the benchmark and prints the table.
pub fn bench_fs(accel: Option<Accel>) -> Result<i32, Error> {
    ensure_qemu()?;
    let accel = accel.unwrap_or_else(Accel::detect);
    let image = build_image("fstest", Profile::Release, false)?;
    let disk = TempImage::of_files("fsbench-site", &FILES, 7)?;
    println!(
        "fs benchmark: fstest, files of 4 KiB, 1 MiB and 16 MiB on an ext4 virtio-blk disk, accel {accel}"
    );
    let mut rows = vec![vec![
        "machine".to_string(),
        "file".into(),
        "cold MiB/s".into(),
        "warm MiB/s".into(),
        "cold us".into(),
        "warm us".into(),
    ]];
    for machine in Machine::ALL {
        let mut cfg = VmConfig::new(&image);
        cfg.machine = machine;
        cfg.accel = accel;
        cfg.mem = "256M".parse::<MemSize>().map_err(Error::Failed)?;
        cfg.disk = Some(disk.path.clone());
        cfg.args = std::iter::once("bench".to_string())
            .chain(FILES.iter().map(|(n, _)| n.to_string()))
            .collect();
        let run = crate::progress::step(&format!("{machine}: fstest bench"), || {
            run_guest(&cfg, Duration::from_secs(300), |_, _| Ok(()))
        })
        .map_err(|e| Error::Failed(format!("{machine}: {e}")))?;
        run.check_success()
            .map_err(|e| Error::Failed(format!("{machine}: {e}")))?;
        for l in &run.lines {
            if let Some(s) = parse_fsbench(&l.text) {
                rows.push(vec![
                    machine.to_string(),
                    human(s.bytes),
                    mib_per_s(s.bytes, s.cold_ns),
                    mib_per_s(s.bytes, s.warm_ns),
                    format!("{:.1}", s.cold_ns as f64 / 1e3),
                    format!("{:.1}", s.warm_ns as f64 / 1e3),
                ]);
            }
        }
    }
    print!("{}", table(&rows));
    println!(
        "cold: page cache dropped, then one read() loop in 64 KiB chunks (disk -> ext4 -> page cache -> \
         buffer); warm: the same again from the cache; guest TSC clock under {accel}"
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let s = parse_fsbench("fsbench: file=/a bytes=4096 cold_ns=100 warm_ns=10").unwrap();
        assert_eq!(s.file, "/a");
        assert_eq!((s.bytes, s.cold_ns, s.warm_ns), (4096, 100, 10));
        assert!(parse_fsbench("fsbench: file=/a").is_none());
    }
}
