//! Interrupts, time and threads, on microvm and q35.

use std::time::{Duration, Instant};

use uk_tests::{BootOpts, Guest, machine_tests};

fn selftest(m: uk_tests::Machine, args: &[&str]) -> Guest {
    Guest::boot("selftest", m, BootOpts::args(args))
}

// Sleeps never wake early, and wake within 200 ms of their deadline (a loaded
// TCG host delays the guest; the bound is about correctness, not speed). The
// timer interrupts that woke them are counted.
machine_tests!(sleep_wakes_on_time, |m| {
    let mut g = selftest(m, &["sleep"]);
    g.expect_exit(0);
    let line = g.expect("sleep: worst lateness");
    let kv = uk_tests::parse_kv(&line);
    assert!(kv["timer_irqs"] > 0, "{line}");
    for l in g.lines().iter().filter(|l| l.starts_with("sleep: asked")) {
        let words: Vec<&str> = l.split_whitespace().collect();
        let asked_ms: u64 = words[2].parse().unwrap();
        let slept_us: u64 = words[5].parse().unwrap();
        assert!(slept_us >= asked_ms * 1000, "woke early: {l}");
        assert!(
            slept_us <= asked_ms * 1000 + 200_000,
            "woke more than 200 ms late: {l}"
        );
    }
});

machine_tests!(condvar_ping_pong_10000, |m| {
    let mut g = selftest(m, &["pingpong"]);
    g.expect("pingpong: 10000 round trips");
    g.expect_exit(0);
});

machine_tests!(thousand_threads_spawned_joined_and_freed, |m| {
    let mut g = selftest(m, &["threads"]);
    g.expect_exit(0);
    g.assert_output_contains("threads: 1000 alive at once");
});

// Two threads keep their own XMM0-15 values across timer preemptions and
// across an interrupt handler that overwrites every XMM register.
machine_tests!(simd_registers_survive_switches_and_interrupts, |m| {
    // The vector state is kept only with the `simd` feature.
    let image = uk_tests::image_flavor("selftest", uk_cli::Flavor::Simd);
    let mut g = Guest::boot_image("selftest", image, m, BootOpts::args(&["simd"]));
    g.expect_exit(0);
    g.assert_output_contains("simd: registers kept");
});

// Interrupts never write into the 128 bytes below the interrupted stack
// pointer (ring's X25519 assembly keeps registers there): every vector
// enters on an IST stack, not on the interrupted one.
machine_tests!(interrupts_leave_the_red_zone_alone, |m| {
    let mut g = selftest(m, &["redzone"]);
    let line = g.expect("redzone: words changed by interrupts: ");
    assert!(line.ends_with(": 0"), "{line}");
    g.expect_exit(0);
});

machine_tests!(spinning_thread_does_not_starve_a_sleeper, |m| {
    let mut g = selftest(m, &["spin"]);
    let line = g.expect("spin: slept 50 ms");
    assert!(!line.contains("preemptions=0"), "{line}");
    g.expect_exit(0);
});

// An idle guest halts: over 3 idle seconds QEMU's own CPU time stays far
// below a busy guest's (which would be ~100% of a core). The 2% target is
// measured by `cargo uk bench idle`; this checks the mechanism.
machine_tests!(idle_guest_halts, |m| {
    let mut g = selftest(m, &["idle", "3"]);
    g.expect("idle: sleeping 3 s");
    let pid = g.pid();
    let cpu0 = uk_tests::process_cpu_time(pid).expect("QEMU CPU time");
    let t0 = Instant::now();
    g.expect("idle: done");
    let wall = t0.elapsed();
    let cpu = uk_tests::process_cpu_time(pid).expect("QEMU CPU time") - cpu0;
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    eprintln!(
        "idle: QEMU used {:?} CPU over {:?} wall ({:.1}%)",
        cpu,
        wall,
        share * 100.0
    );
    assert!(
        wall >= Duration::from_millis(2500),
        "the guest did not sleep"
    );
    assert!(
        share < 0.25,
        "idle guest used {:.1}% of a core",
        share * 100.0
    );
    g.expect_exit(0);
});

machine_tests!(thread_exit_status_reaches_the_joiner, |m| {
    let mut g = selftest(m, &["thread-exit"]);
    g.expect("thread-exit: Err(5)");
    g.expect_exit(0);
});
