//! `cargo uk bench http --smp N` and `bench compare --smp N` (issue 16):
//! the same wrk cells as `bench http` (1 KiB, 64 KiB, 1 MiB, 16 MiB; the
//! chosen connections and 256) against guests booted with 1 vCPU and then
//! with N, side by side: the median requests/s over the rounds, the ratio,
//! and the host CPU each process used during the timed wrk runs (QEMU's
//! `utime + stime` from `/proc`, wrk's from `getrusage(RUSAGE_CHILDREN)`),
//! in cores (CPU seconds per second). For our httpd, the per-CPU request
//! counters of its event loops (the diagnostic dump's `app` line) show how
//! the connections were spread. Linux + nginx runs `worker_processes auto`
//! (one worker per vCPU).
//!
//! On a host with few cores (this project's has 2), the vCPU threads of
//! MTTCG, QEMU's I/O thread and wrk share them, so the N-vCPU figures cannot
//! show scaling there; the output says so, with the host's core count.

use std::time::{Duration, Instant};

use crate::Error;
use crate::bench::{LiveGuest, process_cpu_time, table};
use crate::comparebench::{BENCH_MEM, Setup, System, median, round_order};
use crate::httpbench::{FILES, WrkResult, conn_levels, console_tail, human, parse_wrk, probe};
use crate::httpbench::{run_wrk, stall_reason};
use crate::netns::Netns;
use crate::qemu::Machine;

/// The console byte that makes the kernel print its diagnostic dump.
const DUMP_KEY: u8 = 0x1c;

/// The scaling target on a host with hardware virtualization: requests/s
/// at 2 vCPUs against 1.
pub const TARGET_2_VCPU: f64 = 1.8;

/// The vCPU counts measured: 1, then `n` (only 1 when `n` is 1).
pub fn cpu_counts(n: u32) -> Vec<u32> {
    if n <= 1 { vec![1] } else { vec![1, n] }
}

/// One timed wrk run and the host CPU it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub wrk: WrkResult,
    /// Wall time of the timed run.
    pub wall: Duration,
    /// QEMU's CPU time (all its threads) over the run.
    pub qemu_cpu: Duration,
    /// wrk's CPU time (the load generator) over the run.
    pub wrk_cpu: Duration,
}

impl Timed {
    /// QEMU's host CPU use in cores.
    pub fn qemu_cores(&self) -> f64 {
        cores(self.qemu_cpu, self.wall)
    }

    /// wrk's host CPU use in cores.
    pub fn wrk_cores(&self) -> f64 {
        cores(self.wrk_cpu, self.wall)
    }
}

/// CPU time over wall time: how many host cores were busy on average.
pub fn cores(cpu: Duration, wall: Duration) -> f64 {
    let w = wall.as_secs_f64();
    if w > 0.0 { cpu.as_secs_f64() / w } else { 0.0 }
}

/// The CPU time (user + system) of this process's finished children.
fn children_cpu() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid, writable rusage; getrusage only writes it.
    let r = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, ru.as_mut_ptr()) };
    if r != 0 {
        return Duration::ZERO;
    }
    // SAFETY: zero-initialised, and getrusage succeeded, filling it in.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `bench http`'s measurement of one cell (a 1 s warm-up, then wrk for
/// `secs`, the stall checks), with the CPU QEMU (`qemu_pid`) and wrk used
/// during the timed run.
pub fn measure_timed(
    ns: &Netns,
    conns: u32,
    secs: u64,
    path: &str,
    qemu_pid: u32,
) -> Result<Timed, String> {
    run_wrk(ns, conns, 1, path).map_err(|e| e.message())?;
    let q0 = process_cpu_time(qemu_pid)?;
    let w0 = children_cpu();
    let t0 = Instant::now();
    let out = run_wrk(ns, conns, secs, path).map_err(|e| e.message())?;
    let wall = t0.elapsed();
    let wrk_cpu = children_cpu().saturating_sub(w0);
    let qemu_cpu = process_cpu_time(qemu_pid)?.saturating_sub(q0);
    let wrk = parse_wrk(&out).ok_or_else(|| format!("cannot parse wrk's output:\n{out}"))?;
    if let Some(why) = stall_reason(&wrk) {
        return Err(format!("{path} with {conns} connections: {why}"));
    }
    probe(ns).map_err(|e| e.message())?;
    Ok(Timed {
        wrk,
        wall,
        qemu_cpu,
        wrk_cpu,
    })
}

/// Requests per CPU from httpd's dump line (`cpuC_requests=R ...`), in
/// CPU order: `[(cpu, requests)]`.
pub fn per_cpu_requests(line: &str) -> Vec<(u32, u64)> {
    let mut v: Vec<(u32, u64)> = line
        .split_whitespace()
        .filter_map(|w| {
            let (k, n) = w.split_once('=')?;
            let cpu = k.strip_prefix("cpu")?.strip_suffix("_requests")?;
            Some((cpu.parse().ok()?, n.parse().ok()?))
        })
        .collect();
    v.sort_unstable();
    v
}

/// Asks httpd for its loops' counters (the dump key) and returns the line.
fn loop_counters(guest: &mut LiveGuest) -> Result<String, String> {
    let mark = guest.mark();
    guest.send(&[DUMP_KEY])?;
    guest
        .wait_for_after(mark, "uk: dump: app: httpd", Duration::from_secs(20))
        .map(|l| l.text)
}

/// The median of `f` over the rounds that were measured.
fn med(runs: &[Timed], f: impl Fn(&Timed) -> f64) -> Option<f64> {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

/// Boots `systems` with each of [`cpu_counts`]`(smp)` vCPUs (every system
/// up at once, each in a namespace of its own), measures every cell in
/// `rounds` rounds that alternate which system goes first, and prints the
/// side-by-side table. Exit status 1 if a measurement failed.
pub(crate) fn run_scaling(
    setup: &Setup,
    systems: &[System],
    smp: u32,
    secs: u64,
    rounds: u32,
) -> Result<i32, Error> {
    let counts = cpu_counts(smp);
    let levels = conn_levels(setup.conns);
    let cells: Vec<(u32, (&str, usize))> = levels
        .iter()
        .flat_map(|&c| FILES.iter().map(move |f| (c, *f)))
        .collect();
    let host_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "vCPU scaling: {} on {}, accel {}, {BENCH_MEM}; {} rounds of wrk -t2 -c{} -d{secs}s after a \
         1 s warm-up; this host has {host_cores} cores",
        systems
            .iter()
            .map(|s| s.label())
            .collect::<Vec<_>>()
            .join(" and "),
        setup.machine,
        setup.accel,
        rounds,
        levels
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("|"),
    );
    let mut failed: Vec<String> = Vec::new();
    // results[count][system][cell]: the rounds measured.
    let mut results: Vec<Vec<Vec<Vec<Timed>>>> = Vec::new();
    let mut spread: Vec<String> = Vec::new();
    for &cpus in &counts {
        setup.smp.set(cpus);
        let mut per_sys: Vec<Vec<Vec<Timed>>> = vec![vec![Vec::new(); cells.len()]; systems.len()];
        let mut lives: Vec<Option<(Netns, LiveGuest)>> = Vec::new();
        let mut hangs = 0;
        for sys in systems {
            // One TAP queue pair per vCPU (a multiqueue device from 2 on;
            // virtio-net-pci on q35 only: microvm's virtio-mmio has one).
            let ns = Netns::create_with_queues(
                match sys {
                    System::Uk => "smp-uk",
                    System::Nginx => "smp-nginx",
                },
                if setup.machine == Machine::Q35 {
                    cpus
                } else {
                    1
                },
            )?;
            let step = crate::progress::Step::start(&format!(
                "{}: booting with {cpus} vCPU(s)",
                sys.label()
            ));
            let booted = setup.boot(&ns, *sys, BENCH_MEM, true, 3, &mut hangs);
            step.finish(booted.is_ok());
            match booted {
                Ok(mut b) => match b.guest.wait_for(sys.ready(), sys.boot_timeout()) {
                    Ok(_) => lives.push(Some((ns, b.guest))),
                    Err(e) => {
                        failed.push(format!("{} ({cpus} vCPUs): {e}", sys.label()));
                        b.guest.kill();
                        lives.push(None);
                    }
                },
                Err(e) => {
                    failed.push(format!("{} ({cpus} vCPUs): boot: {e}", sys.label()));
                    lives.push(None);
                }
            }
        }
        let total = rounds as usize * cells.len() * systems.len();
        let mut k = 0;
        for round in 0..rounds {
            for (cell, (c, (path, _))) in cells.iter().enumerate() {
                for sys in round_order(round) {
                    let Some(s) = systems.iter().position(|x| *x == sys) else {
                        continue;
                    };
                    k += 1;
                    let Some((ns, guest)) = lives[s].as_mut() else {
                        continue;
                    };
                    let step = crate::progress::Step::start(&format!(
                        "[{k}/{total}] {cpus} vCPU(s), round {}: {}: wrk -c{c} {path} ({secs} s + 1 s warm-up)",
                        round + 1,
                        sys.label()
                    ));
                    let r = measure_timed(ns, *c, secs, path, guest.pid());
                    step.finish(r.is_ok());
                    match r {
                        Ok(t) => per_sys[s][cell].push(t),
                        Err(e) => {
                            failed.push(format!(
                                "{} {path} ({c} connections, {cpus} vCPUs, round {}): {e}\n\
                                 --- guest console (last lines) ---\n{}",
                                sys.label(),
                                round + 1,
                                console_tail(&guest.output(), 40)
                            ));
                            lives[s] = None;
                        }
                    }
                }
            }
        }
        for (s, sys) in systems.iter().enumerate() {
            if let (System::Uk, Some((_, guest))) = (sys, lives[s].as_mut()) {
                match loop_counters(guest) {
                    Ok(line) => spread.push(format!(
                        "  {cpus} vCPU(s): {}",
                        per_cpu_requests(&line)
                            .iter()
                            .map(|(c, n)| format!("cpu{c} {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Err(e) => failed.push(format!("uk httpd ({cpus} vCPUs): counters: {e}")),
                }
            }
        }
        // Guests first, then their namespaces.
        for (_, g) in lives.iter_mut().flatten() {
            g.kill();
        }
        drop(lives);
        results.push(per_sys);
    }

    println!();
    let n = *counts.last().unwrap_or(&1);
    let mut head: Vec<String> = ["conns", "file", "system"].map(String::from).to_vec();
    for &c in &counts {
        head.push(format!("req/s {c} vCPU"));
    }
    if counts.len() > 1 {
        head.push(format!("{n}/1"));
    }
    for &c in &counts {
        head.push(format!("QEMU cores {c}"));
        head.push(format!("wrk cores {c}"));
    }
    let mut rows = vec![head];
    for (cell, (c, (path, size))) in cells.iter().enumerate() {
        for (s, sys) in systems.iter().enumerate() {
            let (conns, file) = if s == 0 {
                (c.to_string(), format!("{path} ({})", human(*size)))
            } else {
                (String::new(), String::new())
            };
            let mut row = vec![conns, file, sys.label().to_string()];
            let rps: Vec<Option<f64>> = results
                .iter()
                .map(|r| med(&r[s][cell], |t| t.wrk.requests_per_sec))
                .collect();
            // 16 MiB at 256 connections completes a few requests per second.
            row.extend(
                rps.iter()
                    .map(|v| fmt_opt(*v, if v.is_some_and(|v| v < 100.0) { 1 } else { 0 })),
            );
            if let [Some(one), .., Some(last)] = rps.as_slice()
                && counts.len() > 1
            {
                row.push(format!("{:.2}x", last / one.max(1e-9)));
            } else if counts.len() > 1 {
                row.push("-".into());
            }
            for r in &results {
                row.push(fmt_opt(med(&r[s][cell], Timed::qemu_cores), 2));
                row.push(fmt_opt(med(&r[s][cell], Timed::wrk_cores), 2));
            }
            rows.push(row);
        }
    }
    print!("{}", table(&rows));
    println!(
        "(medians over the rounds; cores: CPU seconds per second of the timed wrk run, QEMU's \
         all threads (vCPUs, I/O), wrk's two threads)"
    );
    if !spread.is_empty() {
        println!("uk httpd requests per event loop (CPU), the whole run:");
        for l in &spread {
            println!("{l}");
        }
    }
    if counts.len() > 1 {
        println!(
            "note: this host has {host_cores} cores. Under TCG each vCPU is a host thread \
             (MTTCG), and the {n} vCPU threads, QEMU's I/O thread and wrk share those \
             {host_cores} cores, so the {n}-vCPU column shows what spreading the work costs \
             and gains here, not the scaling of the design. The target, >= {TARGET_2_VCPU}x \
             requests/s at 2 vCPUs (1 KiB), is for a KVM host with cores to spare for the \
             vCPUs and the load generator."
        );
    }
    Ok(crate::comparebench::report_hangs_and_failures(
        std::iter::empty(),
        &failed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(cpu_counts(1), [1]);
        assert_eq!(cpu_counts(2), [1, 2]);
        assert_eq!(cpu_counts(4), [1, 4]);
    }

    #[test]
    fn per_cpu_counters() {
        let l = "uk: dump: app: httpd loops=2 requests=30 cpu1_requests=20 cpu1_conns=3 \
                 cpu0_requests=10 cpu0_conns=2";
        assert_eq!(per_cpu_requests(l), [(0, 10), (1, 20)]);
        assert!(per_cpu_requests("uk: dump: app: httpd loops=1").is_empty());
    }

    #[test]
    fn core_use() {
        assert_eq!(
            cores(Duration::from_millis(1500), Duration::from_secs(1)),
            1.5
        );
        assert_eq!(cores(Duration::from_secs(1), Duration::ZERO), 0.0);
    }
}
