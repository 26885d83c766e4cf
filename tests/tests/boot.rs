//! Boot tests: hello and the selftest scenarios, on microvm and q35.

use uk_tests::{BootOpts, Guest, STATUS_EXCEPTION, STATUS_PANIC, machine_tests};

fn selftest(m: uk_tests::Machine, args: &[&str]) -> Guest {
    Guest::boot("selftest", m, BootOpts::args(args))
}

machine_tests!(hello, |m| {
    let mut g = Guest::boot("hello", m, BootOpts::default());
    let marker = g.expect("uk: main after");
    assert!(
        uk_tests::parse_main_marker(&marker).is_some(),
        "malformed marker line: {marker}"
    );
    g.expect("Hello from the unikernel!");
    g.expect_exit(0);
});

machine_tests!(panic, |m| {
    let mut g = selftest(m, &["panic"]);
    g.expect_exit(STATUS_PANIC);
    g.assert_output_contains("panicked at");
    g.assert_output_contains("selftest panic 42");
});

machine_tests!(null_deref, |m| {
    let mut g = selftest(m, &["null"]);
    g.expect_exit(STATUS_EXCEPTION);
    for needle in [
        "EXCEPTION",
        "vector 14",
        "cr2=0x0000000000000000",
        "backtrace:",
    ] {
        g.assert_output_contains(needle);
    }
});

machine_tests!(mmap64, |m| {
    let mut g = selftest(m, &["mmap64"]);
    g.expect("mmap64: frames_delta=1");
    g.expect_exit(0);
});

// `try_arc` (the kernel's fallible `Arc::new`) relies on the layout of
// `Arc`'s block: every reservation must be the block `Arc::new` takes.
machine_tests!(try_arc_uses_its_reservation, |m| {
    let mut g = selftest(m, &["try-arc"]);
    g.expect("try-arc: ok=true misses=0");
    g.expect_exit(0);
});

// A failed `try_lock` of a sleeping mutex leaves it held (it used to
// unlock the holder's mutex: two threads then ran under one lock).
machine_tests!(failed_try_lock_keeps_the_mutex_held, |m| {
    let mut g = selftest(m, &["try-lock"]);
    g.expect("try-lock: busy=true still_held=true free=true");
    g.expect_exit(0);
});

machine_tests!(heapgrow, |m| {
    let mut g = selftest(m, &["heapgrow"]);
    let line = g.expect("heapgrow: arenas=");
    let arenas = uk_tests::parse_kv(&line)
        .get("arenas")
        .copied()
        .unwrap_or_else(|| panic!("no arenas=N in {line:?}"));
    assert!(arenas >= 2, "expected at least 2 heap arenas: {line}");
    g.expect_exit(0);
});

// Thread stacks are filled on first touch; a stack page first reached while
// the memory manager holds its lock must not fault.
machine_tests!(memory_manager_on_a_fresh_stack, |m| {
    let mut g = selftest(m, &["fresh-stack"]);
    g.expect("fresh-stack: 600 levels");
    g.expect_exit(0);
});

machine_tests!(textwrite, |m| {
    let mut g = selftest(m, &["textwrite"]);
    g.expect_exit(STATUS_EXCEPTION);
    for needle in ["EXCEPTION", "vector 14", "write to read-only kernel text"] {
        g.assert_output_contains(needle);
    }
});

machine_tests!(stackoverflow, |m| {
    let mut g = selftest(m, &["stackoverflow"]);
    g.expect_exit(STATUS_EXCEPTION);
    g.assert_output_contains("stack overflow");
    g.assert_output_contains("guard page");
});

machine_tests!(args, |m| {
    let mut g = selftest(m, &["args", "a", "b c"]);
    g.expect(r#"args: ["a", "b c"]"#);
    g.expect_exit(0);
});

machine_tests!(bad_kernel_options, |m| {
    let mut g = Guest::boot("hello", m, BootOpts::default().append("bogus=1 log=loud"));
    g.expect("unknown kernel option 'bogus'");
    g.expect("Hello from the unikernel!");
    g.expect_exit(0);
    // A second warning, about the bad value of `log`.
    let log_warning = g
        .lines()
        .into_iter()
        .any(|l| l.contains("log") && !l.contains("bogus") && !l.contains("Hello"));
    assert!(
        log_warning,
        "{}",
        g.failure("no warning about the bad 'log' option")
    );
});

machine_tests!(exit_status, |m| {
    let mut g = selftest(m, &["exit", "7"]);
    g.expect_exit(7);
});

machine_tests!(large_alloc_returns_memory, |m| {
    let mut g = selftest(m, &["large"]);
    g.expect("large: sum=3145728 large_allocs 0->1->0");
    g.expect_exit(0);
});

machine_tests!(zero_page_then_copy_on_write, |m| {
    let mut g = selftest(m, &["zeropage"]);
    let line = g.expect("zeropage: sum=0");
    assert!(line.contains("zero_page_maps=4096 cow_copies=1"), "{line}");
    g.expect_exit(0);
});

machine_tests!(mprotect_read_only_faults_on_write, |m| {
    let mut g = selftest(m, &["mprotect"]);
    g.expect("mprotect: read 42 after PROT_READ");
    g.expect_exit(STATUS_EXCEPTION);
    g.assert_output_contains("write to read-only memory");
});

machine_tests!(out_of_memory_reports_and_fails, |m| {
    let mut g = Guest::boot("selftest", m, BootOpts::args(&["oom"]).mem("16M"));
    g.expect_exit(STATUS_PANIC);
    g.assert_output_contains("out of memory: allocation of 4000 bytes");
    g.assert_output_contains("memstats: frames_total=");
});

// The shutdown-request sources each machine has (q35: the ACPI fixed power
// button and the i8042; microvm: the Generic Event Device), and a request
// makes shutdown eventfds readable, made before or after it.
machine_tests!(power_sources_and_shutdown_eventfd, |m| {
    let mut g = selftest(m, &["power"]);
    let line = g.expect("power: sources");
    let want = match m {
        uk_tests::Machine::Q35 => "acpi_button=true ged=false i8042=true",
        uk_tests::Machine::Microvm => "acpi_button=false ged=true i8042=false",
    };
    assert!(line.contains(want), "{line}");
    g.expect("power: ok");
    g.expect_exit(0);
});
