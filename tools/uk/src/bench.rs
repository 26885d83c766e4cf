//! `cargo uk bench boot|sched|idle`: boot time, scheduler costs and idle
//! CPU use, measured by booting images under QEMU; and the guest runners the
//! other benchmarks share ([`run_guest`] for guests that exit by themselves,
//! [`LiveGuest`] for servers the host drives).

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::qemu::{Exit, Machine, VmConfig, map_exit_status, qemu_command};
use crate::serial::{
    MAIN_MARKER, MainMarker, SCHED_MARKER, SchedSample, parse_bench_sched, parse_kv,
    parse_main_marker,
};

/// One line of the guest's serial output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedLine {
    /// From spawning QEMU to reading the line.
    pub at: Duration,
    /// The line, without its line terminator.
    pub text: String,
}

/// A finished guest run: its serial lines, how and when QEMU exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRun {
    /// The serial lines, in order.
    pub lines: Vec<TimedLine>,
    /// From spawning QEMU to QEMU's exit.
    pub to_exit: Duration,
    /// How QEMU exited.
    pub exit: Exit,
    /// QEMU's stderr.
    pub stderr: String,
}

impl GuestRun {
    /// The first line containing `pat`.
    pub fn find(&self, pat: &str) -> Option<&TimedLine> {
        self.lines.iter().find(|l| l.text.contains(pat))
    }

    /// The serial output followed by QEMU's stderr.
    pub fn output(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(&l.text);
            s.push('\n');
        }
        s.push_str(&self.stderr);
        s
    }

    /// An error message: `why`, the exit, and the captured output.
    pub fn fail(&self, why: &str) -> String {
        format!(
            "{why} ({}); output:\n{}",
            self.exit.describe(),
            self.output()
        )
    }

    /// Fails unless the guest exited with status 0.
    pub fn check_success(&self) -> Result<(), String> {
        if self.exit == Exit::App(0) {
            Ok(())
        } else {
            Err(self.fail("the guest did not exit with status 0"))
        }
    }
}

/// Boots `cfg` once, collecting the serial output line by line with the
/// time each line was read. `observe` is called with QEMU's pid and each
/// line as soon as it is read (for sampling the process while the guest
/// runs); an error from it kills QEMU and fails the run. Kills QEMU and
/// fails after `timeout`.
pub fn run_guest(
    cfg: &VmConfig,
    timeout: Duration,
    observe: impl FnMut(u32, &TimedLine) -> Result<(), String>,
) -> Result<GuestRun, String> {
    run_guest_command(qemu_command(cfg), timeout, observe)
}

/// [`run_guest`] with a ready QEMU command (a disk boot through firmware,
/// a Firecracker-style start).
pub fn run_guest_command(
    mut cmd: std::process::Command,
    timeout: Duration,
    mut observe: impl FnMut(u32, &TimedLine) -> Result<(), String>,
) -> Result<GuestRun, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A benchmark killed midway takes its guest with it.
    crate::proc::die_with_parent(&mut cmd);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", crate::QEMU))?;
    let pid = child.id();
    let (rx, err_thread) = read_output(&mut child);
    let mut lines: Vec<TimedLine> = Vec::new();
    let output = |lines: &[TimedLine]| {
        lines
            .iter()
            .map(|l| format!("{}\n", l.text))
            .collect::<String>()
    };
    loop {
        // No `start + timeout`: that overflows for huge timeouts.
        let left = timeout.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok((t, text)) => {
                let line = TimedLine {
                    at: t - start,
                    text,
                };
                let seen = observe(pid, &line);
                lines.push(line);
                if let Err(e) = seen {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{e}; output so far:\n{}", output(&lines)));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "timed out after {timeout:?}; output so far:\n{}",
                    output(&lines)
                ));
            }
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for QEMU: {e}"))?;
    let to_exit = start.elapsed();
    let stderr = err_thread.join().unwrap_or_default();
    Ok(GuestRun {
        lines,
        to_exit,
        exit: map_exit_status(status),
        stderr,
    })
}

/// Reads a spawned QEMU's serial output (stdout) line by line, each with
/// the time it arrived, and collects its stderr, on two threads.
fn read_output(
    child: &mut std::process::Child,
) -> (
    mpsc::Receiver<(Instant, String)>,
    std::thread::JoinHandle<String>,
) {
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
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    (rx, err)
}

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
    boot_once_command(qemu_command(cfg), timeout)
}

/// [`boot_once`] with a ready QEMU command.
pub fn boot_once_command(
    cmd: std::process::Command,
    timeout: Duration,
) -> Result<BootSample, String> {
    let run = run_guest_command(cmd, timeout, |_, _| Ok(()))?;
    let line = run
        .find(MAIN_MARKER)
        .ok_or_else(|| run.fail("no 'uk: main' marker line"))?;
    let marker = parse_main_marker(&line.text)
        .ok_or_else(|| run.fail("malformed 'uk: main' marker line"))?;
    run.check_success()?;
    Ok(BootSample {
        to_marker: line.at,
        marker,
        to_exit: run.to_exit,
        exit: run.exit,
    })
}

/// Boots `cfg` (selftest with args `bench-sched`) once and returns the
/// guest's `bench-sched:` numbers.
pub fn sched_once(cfg: &VmConfig, timeout: Duration) -> Result<SchedSample, String> {
    let run = run_guest(cfg, timeout, |_, _| Ok(()))?;
    run.check_success()?;
    let line = run
        .find(SCHED_MARKER)
        .ok_or_else(|| run.fail("no 'bench-sched:' line"))?;
    parse_bench_sched(&line.text).ok_or_else(|| run.fail("malformed 'bench-sched:' line"))
}

/// Median, min and max of the samples' context-switch and spawn+join costs,
/// as a small table for `machine`.
pub fn sched_table(machine: Machine, samples: &[SchedSample]) -> String {
    table(&sched_rows(machine, samples))
}

/// The rows of [`sched_table`]: a header naming `machine`, then one row per
/// cost (render several machines' rows together to align their columns).
pub fn sched_rows(machine: Machine, samples: &[SchedSample]) -> Vec<Vec<String>> {
    let sw: Vec<u64> = samples.iter().map(|s| s.switch_ns).collect();
    let sj: Vec<u64> = samples.iter().map(|s| s.spawn_join_ns).collect();
    let switches: Vec<u64> = samples.iter().map(|s| s.switches).collect();
    let row = |name: &str, v: &[u64]| {
        let (md, mn, mx) = stats(v);
        vec![
            name.to_string(),
            md.to_string(),
            mn.to_string(),
            mx.to_string(),
        ]
    };
    let runs = samples.len();
    vec![
        vec![
            format!(
                "{machine} ({runs} run{}, {} switches/run)",
                if runs == 1 { "" } else { "s" },
                stats(&switches).0
            ),
            "median".into(),
            "min".into(),
            "max".into(),
        ],
        row("  context switch ns", &sw),
        row("  spawn+join ns", &sj),
    ]
}

/// The line the idle scenario prints before it sleeps.
pub const IDLE_SLEEPING: &str = "idle: sleeping";
/// The line the idle scenario prints after it slept.
pub const IDLE_DONE: &str = "idle: done";

/// Linux's `USER_HZ`: the unit of the times in `/proc/<pid>/stat`.
pub const USER_HZ: u64 = 100;

/// The idle target: QEMU's CPU use as a percentage of one host core.
pub const IDLE_TARGET_PCT: f64 = 2.0;

/// `utime + stime` in clock ticks from the text of `/proc/<pid>/stat`:
/// fields 14 and 15, counted past the `)` that closes the command name (which
/// may itself contain spaces and parentheses).
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // The text after ')' starts with field 3 (state).
    let mut f = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU time (user + system) process `pid` has used so far.
pub fn process_cpu_time(pid: u32) -> Result<Duration, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or_else(|| format!("{path}: cannot parse"))?;
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// One idle measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleSample {
    /// Wall time between reading the `idle: sleeping` and `idle: done` lines.
    pub wall: Duration,
    /// QEMU's CPU time (utime + stime) over the same span.
    pub cpu: Duration,
    /// The guest's count of idle halts, from the `idle: done` line.
    pub halts: Option<u64>,
}

impl IdleSample {
    /// QEMU's CPU use as a percentage of one host core.
    pub fn cpu_pct(&self) -> f64 {
        let wall = self.wall.as_secs_f64();
        if wall > 0.0 {
            self.cpu.as_secs_f64() / wall * 100.0
        } else {
            0.0
        }
    }

    /// Whether the CPU use is below [`IDLE_TARGET_PCT`].
    pub fn meets_target(&self) -> bool {
        self.cpu_pct() < IDLE_TARGET_PCT
    }
}

/// Boots `cfg` (selftest with args `idle S`) once and samples QEMU's CPU
/// time when the guest starts and when it ends its sleep.
pub fn idle_once(cfg: &VmConfig, timeout: Duration) -> Result<IdleSample, String> {
    let mut at_sleep = None;
    let mut at_done = None;
    let run = run_guest(cfg, timeout, |pid, line| {
        let slot = if line.text.contains(IDLE_SLEEPING) {
            &mut at_sleep
        } else if line.text.contains(IDLE_DONE) {
            &mut at_done
        } else {
            return Ok(());
        };
        if slot.is_none() {
            *slot = Some((Instant::now(), process_cpu_time(pid)?));
        }
        Ok(())
    })?;
    run.check_success()?;
    let (Some((t0, cpu0)), Some((t1, cpu1))) = (at_sleep, at_done) else {
        return Err(run.fail("no 'idle: sleeping' and 'idle: done' lines"));
    };
    if t1 < t0 {
        return Err(run.fail("'idle: done' came before 'idle: sleeping'"));
    }
    let halts = run
        .find(IDLE_DONE)
        .and_then(|l| parse_kv(&l.text).get("halts").copied());
    Ok(IdleSample {
        wall: t1 - t0,
        cpu: cpu1.saturating_sub(cpu0),
        halts,
    })
}

/// The idle table's header.
pub fn idle_header() -> Vec<String> {
    ["machine", "wall s", "QEMU CPU s", "CPU %", "guest halts"]
        .map(String::from)
        .to_vec()
}

/// One idle table row.
pub fn idle_row(machine: Machine, s: &IdleSample) -> Vec<String> {
    vec![
        machine.name().to_string(),
        format!("{:.2}", s.wall.as_secs_f64()),
        format!("{:.2}", s.cpu.as_secs_f64()),
        format!("{:.2}", s.cpu_pct()),
        s.halts.map_or_else(|| "?".to_string(), |h| h.to_string()),
    ]
}

/// The verdict line for one machine, e.g. `microvm: target < 2%: met (0.40%)`.
pub fn idle_verdict(machine: Machine, s: &IdleSample) -> String {
    format!(
        "{machine}: target < {IDLE_TARGET_PCT}%: {} ({:.2}%)",
        if s.meets_target() { "met" } else { "not met" },
        s.cpu_pct()
    )
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
    row_named(machine.name(), image_size, samples)
}

/// One table row labelled `label` (e.g. `q35 seabios disk`).
pub fn row_named(label: &str, image_size: u64, samples: &[BootSample]) -> Vec<String> {
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
        label.to_string(),
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

/// A guest that keeps running while the host drives it (a server under a
/// benchmark): its serial lines are collected in the background; it is
/// killed by [`LiveGuest::kill`] or on drop.
pub struct LiveGuest {
    child: std::process::Child,
    start: Instant,
    rx: mpsc::Receiver<(Instant, String)>,
    lines: Vec<TimedLine>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// The serial console's input (the kernel's diagnostic dump key).
    stdin: Option<std::process::ChildStdin>,
}

impl LiveGuest {
    /// Starts QEMU for `cfg` (serial and stderr captured; serial input
    /// through [`LiveGuest::send`]).
    pub fn spawn(cfg: &VmConfig) -> Result<LiveGuest, String> {
        Self::spawn_command(qemu_command(cfg))
    }

    /// [`LiveGuest::spawn`] with a ready QEMU command (another guest
    /// kernel, such as the Linux reference of `bench compare`).
    pub fn spawn_command(mut cmd: std::process::Command) -> Result<LiveGuest, String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A benchmark killed midway takes its guest with it.
        crate::proc::die_with_parent(&mut cmd);
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", crate::QEMU))?;
        let (rx, stderr) = read_output(&mut child);
        let stdin = child.stdin.take();
        Ok(LiveGuest {
            child,
            start,
            rx,
            lines: Vec::new(),
            stderr: Some(stderr),
            stdin,
        })
    }

    /// Writes `bytes` to the guest's serial console.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        use std::io::Write;
        let w = self
            .stdin
            .as_mut()
            .ok_or("the guest's console input is closed")?;
        w.write_all(bytes)
            .and_then(|()| w.flush())
            .map_err(|e| format!("writing to the guest's console: {e}"))
    }

    /// Number of serial lines read so far (a mark for [`LiveGuest::wait_for_after`]).
    pub fn mark(&mut self) -> usize {
        while let Ok(l) = self.rx.try_recv() {
            self.push(l);
        }
        self.lines.len()
    }

    /// Like [`LiveGuest::wait_for`], among the lines from `mark` on.
    pub fn wait_for_after(
        &mut self,
        mark: usize,
        pat: &str,
        timeout: Duration,
    ) -> Result<TimedLine, String> {
        let start = Instant::now();
        loop {
            while let Ok(l) = self.rx.try_recv() {
                self.push(l);
            }
            if let Some(l) = self.lines.iter().skip(mark).find(|l| l.text.contains(pat)) {
                return Ok(l.clone());
            }
            if start.elapsed() >= timeout {
                return Err(format!("no '{pat}' line after {timeout:?}"));
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => self.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("the guest ended before a '{pat}' line"));
                }
            }
        }
    }

    /// When QEMU was spawned.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// QEMU's pid (inside the namespace, if any, `ip netns exec` has
    /// exec'd QEMU itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn push(&mut self, (t, text): (Instant, String)) {
        self.lines.push(TimedLine {
            at: t - self.start,
            text,
        });
    }

    /// Waits for a serial line containing `pat` (also among the lines
    /// already read); fails when QEMU exits first or after `timeout`.
    pub fn wait_for(&mut self, pat: &str, timeout: Duration) -> Result<TimedLine, String> {
        if let Some(l) = self.lines.iter().find(|l| l.text.contains(pat)) {
            return Ok(l.clone());
        }
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.push(line);
                    let last = self.lines.last().expect("just pushed");
                    if last.text.contains(pat) {
                        return Ok(last.clone());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no '{pat}' line after {timeout:?}; output so far:\n{}",
                        self.output()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(map_exit_status);
                    let how = status.map_or_else(|e| e.to_string(), |s| s.describe());
                    return Err(format!(
                        "the guest ended ({how}) before a '{pat}' line; output:\n{}",
                        self.output()
                    ));
                }
            }
        }
    }

    /// The serial lines read so far (and any already waiting), then QEMU's
    /// stderr once it has exited.
    pub fn output(&mut self) -> String {
        while let Ok(l) = self.rx.try_recv() {
            self.push(l);
        }
        let mut s: String = self.lines.iter().map(|l| format!("{}\n", l.text)).collect();
        if matches!(self.child.try_wait(), Ok(Some(_)))
            && let Some(h) = self.stderr.take()
        {
            s.push_str(&h.join().unwrap_or_default());
        }
        s
    }

    /// Kills QEMU and waits for it (idempotent).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LiveGuest {
    fn drop(&mut self) {
        self.kill();
    }
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

    #[test]
    fn stat_cpu_ticks() {
        // Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt
        // cminflt majflt cmajflt utime stime cutime cstime ...
        let stat = "4242 (qemu-system-x86) S 1 2 3 0 -1 4194560 10 0 0 0 250 37 5 6 20 0 4";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(287));
        let tricky = "7 (a) b (c) d) R 1 2 3 0 -1 0 0 0 0 0 1 2 0 0 20 0 1\n";
        assert_eq!(parse_stat_cpu_ticks(tricky), Some(3));
        assert_eq!(parse_stat_cpu_ticks("7 (x) R 1 2 3"), None);
        assert_eq!(parse_stat_cpu_ticks("no paren 1 2 3"), None);
        assert_eq!(
            parse_stat_cpu_ticks("7 (x) R 1 2 3 0 -1 0 0 0 0 0 x 2 0"),
            None
        );
        // Our own process: readable, and counts in whole ticks.
        let own = process_cpu_time(std::process::id()).unwrap();
        assert_eq!(own.as_millis() % (1000 / USER_HZ as u128), 0);
    }

    #[test]
    fn idle_numbers() {
        let s = IdleSample {
            wall: Duration::from_secs(10),
            cpu: Duration::from_millis(50),
            halts: Some(12),
        };
        assert!((s.cpu_pct() - 0.5).abs() < 1e-9);
        assert!(s.meets_target());
        assert_eq!(
            idle_row(Machine::Microvm, &s),
            ["microvm", "10.00", "0.05", "0.50", "12"]
        );
        assert_eq!(idle_row(Machine::Q35, &s).len(), idle_header().len());
        assert_eq!(
            idle_verdict(Machine::Microvm, &s),
            "microvm: target < 2%: met (0.50%)"
        );
        let busy = IdleSample {
            wall: Duration::from_secs(2),
            cpu: Duration::from_millis(40),
            halts: None,
        };
        assert!(!busy.meets_target());
        assert_eq!(
            idle_verdict(Machine::Q35, &busy),
            "q35: target < 2%: not met (2.00%)"
        );
        assert_eq!(idle_row(Machine::Q35, &busy)[4], "?");
        let zero = IdleSample {
            wall: Duration::ZERO,
            cpu: Duration::ZERO,
            halts: None,
        };
        assert_eq!(zero.cpu_pct(), 0.0);
    }

    #[test]
    fn sched_tables() {
        let s = |sw, sj| SchedSample {
            switch_ns: sw,
            spawn_join_ns: sj,
            switches: 20000,
        };
        let t = sched_table(
            Machine::Microvm,
            &[s(400, 9000), s(350, 12000), s(500, 10000)],
        );
        assert_eq!(
            t,
            "microvm (3 runs, 20000 switches/run)  median   min    max\n\
             \x20 context switch ns                      400   350    500\n\
             \x20 spawn+join ns                        10000  9000  12000\n"
        );
        assert!(sched_table(Machine::Q35, &[s(1, 2)]).starts_with("q35 (1 run, "));
    }

    #[test]
    fn guest_run_helpers() {
        let run = GuestRun {
            lines: vec![
                TimedLine {
                    at: Duration::from_millis(1),
                    text: "a".into(),
                },
                TimedLine {
                    at: Duration::from_millis(2),
                    text: "bench-sched: x".into(),
                },
            ],
            to_exit: Duration::from_millis(3),
            exit: Exit::App(101),
            stderr: "qemu: warn\n".into(),
        };
        assert_eq!(run.find("bench").unwrap().at, Duration::from_millis(2));
        assert!(run.find("zzz").is_none());
        assert_eq!(run.output(), "a\nbench-sched: x\nqemu: warn\n");
        let e = run.check_success().unwrap_err();
        assert!(e.starts_with("the guest did not exit with status 0 (kernel panic"));
        assert!(
            e.ends_with("output:\na\nbench-sched: x\nqemu: warn\n"),
            "{e}"
        );
        let ok = GuestRun {
            exit: Exit::App(0),
            ..run
        };
        assert!(ok.check_success().is_ok());
    }
}
