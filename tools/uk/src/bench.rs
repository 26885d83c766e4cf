//! `cargo uk bench boot`: boot-time measurements.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::qemu::{Exit, Machine, VmConfig, map_exit_status, qemu_command};
use crate::serial::{MAIN_MARKER, MainMarker, parse_main_marker};

/// One measured boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootSample {
    /// From spawning QEMU to reading the `uk: main` line.
    pub to_marker: Duration,
    /// The guest's own numbers from the marker line.
    pub marker: MainMarker,
    /// From spawning QEMU to QEMU's exit.
    pub to_exit: Duration,
    /// How QEMU exited.
    pub exit: Exit,
}

/// Boots `cfg` once, reading the serial output, and times the marker line
/// and the exit. Kills QEMU and fails after `timeout`.
pub fn boot_once(cfg: &VmConfig, timeout: Duration) -> Result<BootSample, String> {
    let mut cmd = qemu_command(cfg);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let deadline = start + timeout;
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", crate::QEMU))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\n', '\r'])
                .to_string();
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut output = String::new();
    let mut marker = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((t, line)) => {
                if marker.is_none() && line.contains(MAIN_MARKER) {
                    marker = Some((t - start, parse_main_marker(&line)));
                }
                output.push_str(&line);
                output.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "timed out after {timeout:?}; output so far:\n{output}"
                ));
            }
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for QEMU: {e}"))?;
    let to_exit = start.elapsed();
    let stderr = err_thread.join().unwrap_or_default();
    let exit = map_exit_status(status);
    let fail = |why: &str| format!("{why} ({}); output:\n{output}{stderr}", exit.describe());
    match marker {
        None => Err(fail("no 'uk: main' marker line")),
        Some((_, None)) => Err(fail("malformed 'uk: main' marker line")),
        Some((to_marker, Some(marker))) => {
            if exit != Exit::App(0) {
                return Err(fail("the guest did not exit with status 0"));
            }
            Ok(BootSample {
                to_marker,
                marker,
                to_exit,
                exit,
            })
        }
    }
}

/// Median, min and max of a non-empty list.
pub fn stats<T: Ord + Copy>(values: &[T]) -> (T, T, T) {
    let mut v = values.to_vec();
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Renders rows as a table: first column left-aligned, the rest
/// right-aligned, two spaces between columns.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c == 0 {
                line.push_str(&format!("{cell:<w$}", w = width[c]));
            } else {
                line.push_str(&format!("  {cell:>w$}", w = width[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One table row for `machine` from its samples.
pub fn row(machine: Machine, image_size: u64, samples: &[BootSample]) -> Vec<String> {
    let to_marker: Vec<Duration> = samples.iter().map(|s| s.to_marker).collect();
    let to_exit: Vec<Duration> = samples.iter().map(|s| s.to_exit).collect();
    let (mm, mn, mx) = stats(&to_marker);
    let (em, en, ex) = stats(&to_exit);
    let micros: Vec<u64> = samples.iter().filter_map(|s| s.marker.micros).collect();
    let cycles: Vec<u64> = samples.iter().map(|s| s.marker.cycles).collect();
    let guest_ms = if micros.len() == samples.len() {
        format!("{:.2}", stats(&micros).0 as f64 / 1000.0)
    } else {
        "?".to_string()
    };
    vec![
        machine.name().to_string(),
        image_size.to_string(),
        format!("{:.1}", image_size as f64 / 1024.0),
        ms(mm),
        ms(mn),
        ms(mx),
        guest_ms,
        stats(&cycles).0.to_string(),
        ms(em),
        ms(en),
        ms(ex),
    ]
}

/// The table header.
pub fn header() -> Vec<String> {
    [
        "machine",
        "image B",
        "KiB",
        "main med ms",
        "min",
        "max",
        "guest ms",
        "guest cycles",
        "exit med ms",
        "min",
        "max",
    ]
    .map(String::from)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_work() {
        assert_eq!(stats(&[5, 1, 3]), (3, 1, 5));
        assert_eq!(stats(&[2]), (2, 2, 2));
        assert_eq!(stats(&[4, 1, 3, 2]), (3, 1, 4));
    }

    #[test]
    fn table_aligns() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let t = table(&[
            s(&["machine", "ms"]),
            s(&["microvm", "1.5"]),
            s(&["q35", "100.25"]),
        ]);
        assert_eq!(t, "machine      ms\nmicrovm     1.5\nq35      100.25\n");
    }

    #[test]
    fn rows() {
        let sample = |m: u64, e: u64, us: Option<u64>| BootSample {
            to_marker: Duration::from_millis(m),
            marker: MainMarker {
                cycles: 1000 + m,
                micros: us,
            },
            to_exit: Duration::from_millis(e),
            exit: Exit::App(0),
        };
        let r = row(
            Machine::Q35,
            2048,
            &[
                sample(10, 20, Some(1500)),
                sample(30, 40, Some(2500)),
                sample(20, 30, Some(500)),
            ],
        );
        assert_eq!(
            r,
            [
                "q35", "2048", "2.0", "20.0", "10.0", "30.0", "1.50", "1020", "30.0", "20.0",
                "40.0"
            ]
        );
        let r = row(Machine::Microvm, 1, &[sample(1, 2, None)]);
        assert_eq!(r[6], "?");
        assert_eq!(r.len(), header().len());
    }
}
