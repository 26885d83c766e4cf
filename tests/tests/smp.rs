//! Multi-core (issue 16): the kernel starts every vCPU of the MADT and
//! counts it online; booted with 1, 2 and 4 vCPUs on microvm and q35 (PVH),
//! and with 2 through SeaBIOS or OVMF and GRUB (Multiboot2). Threads placed
//! on every CPU (`selftest smp`) share a mutex, hand tokens to each other,
//! sleep and map memory, and end with the same checksum on 1, 2 and 4 CPUs.
//! Those run with the kernel's lock-order check (`Flavor::Lockdep`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use uk_tests::{BootOpts, Firmware, Guest, Machine, boot_disk_image, free_port, machine_tests};

/// Boots `selftest pingpong` with `cpus` vCPUs: the console reports them
/// all online before `main`, and the threads, wait queues and timer of the
/// boot CPU still work (10,000 condition-variable round trips, exit 0).
fn boot_with(m: Machine, cpus: u32) {
    let mut g = Guest::boot("selftest", m, BootOpts::args(&["pingpong"]).smp(cpus));
    assert_online(&g, &g.expect("CPUs online"), cpus);
    g.expect("uk: main after");
    g.expect("pingpong: 10000 round trips");
    g.expect_exit(0);
    assert!(
        !g.output().contains("did not start"),
        "a CPU did not start:\n{}",
        g.output()
    );
}

/// The console line says `smp: N CPUs online` with the right N (after
/// whatever the firmware left on the line).
fn assert_online(g: &Guest, line: &str, cpus: u32) {
    assert!(
        line.trim_end()
            .ends_with(&format!("smp: {cpus} CPUs online")),
        "expected {cpus} CPUs online, got {line:?}:\n{}",
        g.output()
    );
}

/// Boots `selftest` built with the lock-order check (`lockdep`): a lock
/// taken against the order panics.
fn boot_checked(m: Machine, opts: BootOpts) -> Guest {
    let image = uk_tests::image_flavor("selftest", uk_cli::Flavor::Lockdep);
    Guest::boot_image("selftest", image, m, opts)
}

/// The check catches a lock taken against the order (a scheduler-level
/// lock inside a memory-manager-level one): the guest panics.
fn order_violation(m: Machine) {
    let mut g = boot_checked(m, BootOpts::args(&["lock-order"]));
    g.expect("lock order: a level 3 lock taken while holding one of level 8");
    g.expect_exit(101);
}

machine_tests!(lock_order_violation_is_caught, |m| { order_violation(m) });

/// The check catches a thread that would block on a sleeping lock while
/// holding a spinlock (with interrupts off): the guest panics.
#[test]
fn blocking_under_a_spinlock_is_caught() {
    let mut g = boot_checked(Machine::Microvm, BootOpts::args(&["lock-order", "sleep"]));
    g.expect("lock order: a thread blocks while holding a level 2 lock");
    g.expect_exit(101);
}

/// The checksum of `selftest smp` (8 workers x 400 rounds of a fixed mix):
/// the same whatever the CPU count and the order the threads ran in.
const SMP_CHECKSUM: &str = "checksum 0xeaed8b0444dce2ac (expected 0xeaed8b0444dce2ac)";

/// Boots `selftest smp` with `cpus` vCPUs: the checksum holds, no update,
/// handoff or page went wrong, and every CPU ran rounds of the workers (and
/// counted switches to threads).
fn stress(m: Machine, cpus: u32) {
    let mut g = boot_checked(m, BootOpts::args(&["smp"]).smp(cpus));
    let wait = |needle: &str, secs: u64| {
        g.wait_for(needle, Duration::from_secs(secs))
            .unwrap_or_else(|e| panic!("{}", g.failure(&e)))
    };
    assert_online(&g, &wait("CPUs online", 60), cpus);
    let summary = wait(" handoffs, ", 120);
    assert!(
        summary.contains(&format!(
            "smp: {cpus} CPUs, 3200 updates, 3200 handoffs, 0 bad pages, "
        )) && summary.contains(SMP_CHECKSUM),
        "wrong summary {summary:?}:\n{}",
        g.output()
    );
    for c in 0..cpus {
        let line = g.expect(&format!("smp: cpu {c} ran "));
        let num = |after: &str| -> u64 {
            line.split(after)
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no number after {after:?} in {line:?}"))
        };
        assert!(
            num(" ran ") > 0 && num("rounds, ") > 0,
            "cpu {c} ran nothing: {line:?}"
        );
    }
    g.expect("smp: ok");
    g.expect_exit(0);
}

machine_tests!(stress_one_cpu, |m| { stress(m, 1) });
machine_tests!(stress_two_cpus, |m| { stress(m, 2) });
machine_tests!(stress_four_cpus, |m| { stress(m, 4) });

/// The checksum of `selftest steal` (8 workers x 256 rounds).
const STEAL_CHECKSUM: &str = "checksum 0x8fefb82629ecca74 (expected 0x8fefb82629ecca74)";

/// `selftest steal`: 8 workers spawned on the boot CPU (`Placement::Here`)
/// are taken by the idle CPUs (work stealing): with 4 vCPUs at least two
/// CPUs ran rounds (the guest checks it, and that it stole), and the
/// checksum is the one-CPU checksum.
fn stolen(m: Machine, cpus: u32) {
    let mut g = boot_checked(m, BootOpts::args(&["steal"]).smp(cpus));
    let summary = g
        .wait_for(&format!("steal: {cpus} CPUs, "), Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    assert!(
        summary.contains(STEAL_CHECKSUM),
        "wrong summary {summary:?}:\n{}",
        g.output()
    );
    g.expect("steal: ok");
    g.expect_exit(0);
}

machine_tests!(idle_cpus_steal_threads, |m| { stolen(m, 4) });

/// `selftest smp-spin` with 2 vCPUs: a thread spinning on CPU 1 is
/// preempted by CPU 1's own slice timer, so a thread there that sleeps and
/// is woken from CPU 0 (a semaphore) runs all its 20 turns.
fn spinner_on_cpu_1(m: Machine) {
    let mut g = boot_checked(m, BootOpts::args(&["smp-spin"]).smp(2));
    let line = g
        .wait_for("smp-spin: ", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    assert!(
        line.contains("smp-spin: 20 of 20 turns on cpu 1 ") && line.contains(" spins on cpu 1"),
        "{line:?}:\n{}",
        g.output()
    );
    g.expect_exit(0);
}

machine_tests!(spinner_on_an_ap, |m| { spinner_on_cpu_1(m) });

/// `selftest smp-timers` with 2 and 4 vCPUs: each CPU's timer queue holds
/// the sleepers that went to sleep there, so the boot CPU's timer wakes its
/// own 40 sleepers and the last CPU's that CPU's 100 (with a shared queue
/// the boot CPU woke 8 to 18 of the other's in three runs); a timed wait on the last CPU
/// notified from the boot CPU ends notified, its timer cancelled in the
/// right queue.
fn timers_per_cpu(m: Machine, cpus: u32) {
    let mut g = boot_checked(m, BootOpts::args(&["smp-timers"]).smp(cpus));
    let line = g
        .wait_for("smp-timers: 100 sleeps", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    let last = cpus - 1;
    assert!(
        line.contains(&format!(
            "on cpu {last}, 40 on cpu 0, 0 early; timer wakes cpu 0 40, cpu {last} 100 "
        )) && line.contains("timed_out=false")
            && line
                .trim_end()
                .ends_with(&format!("cpu {last} timers pending 0")),
        "{line:?}:\n{}",
        g.output()
    );
    g.expect("smp-timers: ok");
    g.expect_exit(0);
}

machine_tests!(timers_per_cpu_of_two, |m| { timers_per_cpu(m, 2) });
machine_tests!(timers_per_cpu_of_four, |m| { timers_per_cpu(m, 4) });

/// `echo --spread` with 2 vCPUs: each connection's thread goes to the CPU
/// with the fewest threads, so most run on CPU 1 and call the network stack
/// (socket reads and writes, wake-ups of and by the network thread on CPU
/// 0) from there. 12 connections, opened one after the other (user
/// networking's backlog of one), then 256 KiB each echoed at once,
/// byte-exact; the guest reports which CPU served each.
fn echo_from_every_cpu(m: Machine) {
    const CONNS: usize = 12;
    const SIZE: usize = 256 * 1024;
    let port = free_port();
    let g = Guest::boot("echo", m, BootOpts::args(&["--spread"]).smp(2).fwd(port, 7));
    g.wait_for("echo: listening on port 7", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    let conns: Vec<(TcpStream, Vec<u8>)> = (0..CONNS)
        .map(|i| {
            let data: Vec<u8> = (0..SIZE)
                .map(|k| (k * 7 + i * 13 + k / 251) as u8)
                .collect();
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s.write_all(&data[..1]).expect("first byte");
            let mut b = [0u8; 1];
            s.read_exact(&mut b).expect("first byte echoed");
            assert_eq!(b[0], data[0], "connection {i}: first byte");
            (s, data)
        })
        .collect();
    let clients: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, (mut s, data))| {
            std::thread::spawn(move || {
                let mut w = s.try_clone().expect("clone");
                let rest = data[1..].to_vec();
                let writer = std::thread::spawn(move || {
                    w.write_all(&rest).expect("send");
                    w.shutdown(std::net::Shutdown::Write).expect("shutdown");
                });
                let mut got = vec![data[0]];
                s.read_to_end(&mut got).expect("read");
                writer.join().expect("writer");
                assert!(
                    got == data,
                    "connection {i}: echoed {} of {} bytes, or wrong ones",
                    got.len(),
                    data.len()
                );
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let done = |g: &Guest| g.output().matches(&format!(" echoed {SIZE} bytes")).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while done(&g) < CONNS && std::time::Instant::now() < deadline {
        let _ = g.wait_for_from(" echoed ", g.mark(), Duration::from_secs(1));
    }
    assert_eq!(done(&g), CONNS, "{}", g.output());
    assert!(
        g.output()
            .contains(&format!("echo: cpu 1 echoed {SIZE} bytes")),
        "no connection served on CPU 1:\n{}",
        g.output()
    );
}

machine_tests!(echo_threads_on_every_cpu, |m| { echo_from_every_cpu(m) });

machine_tests!(one_cpu, |m| { boot_with(m, 1) });
machine_tests!(two_cpus, |m| { boot_with(m, 2) });
machine_tests!(four_cpus, |m| { boot_with(m, 4) });

/// The Multiboot2 path: the raw disk image through `fw` and GRUB on q35
/// with 2 vCPUs; both come online and httpd serves.
fn two_cpus_after_multiboot2(fw: Firmware) {
    let site = uk_cli::image::temp_path("smp-site");
    std::fs::create_dir_all(&site).expect("site dir");
    std::fs::write(site.join("index.html"), "smp\n").expect("index.html");
    let disk = boot_disk_image("httpd", &site);
    let port = free_port();
    let g = Guest::boot(
        "httpd",
        Machine::Q35,
        BootOpts::default()
            .mem("256M")
            .smp(2)
            .firmware(fw, disk)
            .fwd(port, 80),
    );
    let wait = |needle: &str, secs: u64| {
        g.wait_for(needle, Duration::from_secs(secs))
            .unwrap_or_else(|e| panic!("{}", g.failure(&e)))
    };
    assert_online(&g, &wait("CPUs online", 120), 2);
    wait("uk: main after", 30);
    wait("httpd: serving", 60);
    // It serves (an event loop on each CPU, the network stack on the boot
    // CPU): a few requests on one connection.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    for _ in 0..3 {
        s.write_all(b"GET /index.html HTTP/1.1\r\nHost: smp\r\n\r\n")
            .expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"\r\n\r\nsmp\n") {
            let n = s
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("{}", g.failure(&format!("read: {e}; got {got:?}"))));
            assert!(n > 0, "{}", g.failure("connection closed"));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200 "),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[test]
fn two_cpus_after_seabios_and_grub() {
    two_cpus_after_multiboot2(Firmware::SeaBios);
}

#[test]
fn two_cpus_after_ovmf_and_grub() {
    two_cpus_after_multiboot2(Firmware::Ovmf);
}
