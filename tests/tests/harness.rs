//! Self-tests of the harness with synthetic PVH images (no kernel needed):
//! serial collection, marker waits, exit mapping, timeouts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use uk_tests::{BootOpts, Guest, Machine, machine_tests};

/// A 32-bit ELF with a PVH entry note whose code writes `text` to COM1 and
/// then `status` to isa-debug-exit (or halts forever with `hang`).
fn fake_image(name: &str, text: &str, status: u32, hang: bool) -> PathBuf {
    const BASE: u32 = 0x10_0000;
    let mut code = Vec::new();
    for b in text.bytes() {
        code.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0xb0, b, 0xee]); // mov dx,0x3f8; mov al,b; out dx,al
    }
    if hang {
        code.extend_from_slice(&[0xf4, 0xeb, 0xfd]); // hlt; jmp $-1
    }
    code.extend_from_slice(&[0x66, 0xba, 0xf4, 0x00, 0xb8]); // mov dx,0xf4; mov eax,
    code.extend_from_slice(&status.to_le_bytes());
    code.extend_from_slice(&[0xef, 0xf4, 0xeb, 0xfd]); // out dx,eax; hlt; jmp
    let (ehsz, phsz) = (52u32, 32u32);
    let note_off = ehsz + 2 * phsz;
    let note_len = 12 + 4 + 4;
    let code_off = note_off + note_len;
    let entry = BASE + code_off;
    let total = code_off + code.len() as u32;
    let mut f: Vec<u8> = b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
    let h16 = |f: &mut Vec<u8>, v: u16| f.extend_from_slice(&v.to_le_bytes());
    let w32 = |f: &mut Vec<u8>, v: u32| f.extend_from_slice(&v.to_le_bytes());
    h16(&mut f, 2); // ET_EXEC
    h16(&mut f, 3); // EM_386
    for v in [1, entry, ehsz, 0, 0] {
        w32(&mut f, v);
    }
    for v in [ehsz as u16, phsz as u16, 2, 40, 0, 0] {
        h16(&mut f, v);
    }
    for v in [1, 0, BASE, BASE, total, total, 7, 0x1000] {
        w32(&mut f, v); // PT_LOAD: the whole file
    }
    let n = BASE + note_off;
    for v in [4, note_off, n, n, note_len, note_len, 4, 4] {
        w32(&mut f, v); // PT_NOTE
    }
    for v in [4, 4, 18] {
        w32(&mut f, v); // namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY
    }
    f.extend_from_slice(b"Xen\0");
    w32(&mut f, entry);
    f.extend_from_slice(&code);
    assert_eq!(f.len() as u32, total);
    let dir = std::env::temp_dir().join(format!("uk-harness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, f).unwrap();
    path
}

fn boot_fake(m: Machine, text: &str, status: u32, hang: bool) -> Guest {
    let name = format!("fake-{}-{status}-{hang}", m.name());
    Guest::boot_image(
        &name,
        fake_image(&name, text, status, hang),
        m,
        BootOpts::default(),
    )
}

machine_tests!(fake_clean_exit, |m| {
    let mut g = boot_fake(
        m,
        "early\r\nuk: main after 42 tsc cycles (? us)\r\nHello\npartial",
        0,
        false,
    );
    let line = g.wait_for("uk: main", Duration::from_secs(60)).unwrap();
    assert_eq!(line, "uk: main after 42 tsc cycles (? us)");
    let marker = uk_tests::parse_main_marker(&line).unwrap();
    assert_eq!((marker.cycles, marker.micros), (42, None));
    assert_eq!(g.wait_exit(Duration::from_secs(60)), Ok(0));
    assert_eq!(
        g.lines(),
        ["early", "uk: main after 42 tsc cycles (? us)", "Hello"]
    );
    assert_eq!(
        g.output(),
        "early\nuk: main after 42 tsc cycles (? us)\nHello\npartial"
    );
    // An unterminated last line matches too.
    assert_eq!(
        g.wait_for("part", Duration::from_secs(1)).unwrap(),
        "partial"
    );
    // After the exit, waiting for something absent fails at once.
    let t = Instant::now();
    let e = g
        .wait_for("never printed", Duration::from_secs(60))
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "{e}");
    assert!(
        e.contains("QEMU exited before printing 'never printed'"),
        "{e}"
    );
    assert!(e.contains("Hello"), "{e}");
    assert!(e.contains("-kernel"), "{e}");
    // wait_exit twice gives the same answer.
    assert_eq!(g.wait_exit(Duration::from_secs(1)), Ok(0));
});

machine_tests!(fake_status_and_kv, |m| {
    let mut g = boot_fake(
        m,
        "t1 memstats: frames_total=10 frames_free=4\npanicked at x.rs:1:2:\nselftest panic 42\nt1 memstats: frames_total=10 frames_free=3\n",
        101,
        false,
    );
    let stats = g.wait_memstats("t1", Duration::from_secs(60)).unwrap();
    assert_eq!(stats["frames_free"], 4);
    g.expect_exit(uk_tests::STATUS_PANIC);
    assert_eq!(g.memstats("t1").unwrap()["frames_free"], 3);
    assert_eq!(g.memstats("").unwrap()["frames_total"], 10);
    assert!(g.memstats("t2").is_none());
    let from = g
        .lines()
        .iter()
        .position(|l| l.contains("panicked"))
        .unwrap();
    let later = g
        .wait_for_from("memstats", from, Duration::from_secs(1))
        .unwrap();
    assert!(later.ends_with("frames_free=3"), "{later}");
    g.assert_output_contains("selftest panic 42");
});

machine_tests!(fake_timeouts, |m| {
    let mut g = boot_fake(m, "uk: main after 1 tsc cycles (1 us)\nspinning\n", 0, true);
    g.expect("spinning");
    let e = g.wait_for("nope", Duration::from_millis(300)).unwrap_err();
    assert!(
        e.contains("timed out after 300ms waiting for 'nope'"),
        "{e}"
    );
    assert!(e.contains("spinning"), "{e}");
    let e = g.wait_exit(Duration::from_millis(300)).unwrap_err();
    assert!(e.contains("waiting for QEMU to exit"), "{e}");
    // Drop kills QEMU.
});

#[test]
fn qemu_startup_failure_is_an_error() {
    let dir = std::env::temp_dir().join(format!("uk-harness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("not-a-kernel");
    std::fs::write(&bad, b"garbage").unwrap();
    let mut g = Guest::boot_image("bad", bad, Machine::Q35, BootOpts::default());
    let e = g.wait_exit(Duration::from_secs(60)).unwrap_err();
    assert!(e.contains("before the guest printed anything"), "{e}");
    assert!(e.contains("--- QEMU stderr ---\nqemu"), "{e}");
}

#[test]
fn free_ports_are_local_and_distinct_enough() {
    let a = uk_tests::free_port();
    assert!(a > 0);
    let l = std::net::TcpListener::bind(("127.0.0.1", a)).unwrap();
    let b = uk_tests::free_port();
    assert_ne!(a, b);
    drop(l);
}

machine_tests!(bench_boot_once, |m| {
    let image = fake_image(
        &format!("bench-{}", m.name()),
        "x\nuk: main after 99 tsc cycles (12 us)\nbye\n",
        0,
        false,
    );
    let mut cfg = uk_tests::VmConfig::new(image);
    cfg.machine = m;
    let s = uk_cli::bench::boot_once(&cfg, Duration::from_secs(60)).unwrap();
    assert_eq!((s.marker.cycles, s.marker.micros), (99, Some(12)));
    assert!(s.to_marker <= s.to_exit);
    assert_eq!(s.exit, uk_tests::Exit::App(0));
    let row = uk_cli::bench::row(m, 1024, &[s]);
    assert_eq!(row[0], m.name());
    assert_eq!(row[6], "0.01");
});

#[test]
fn a_skipping_test_is_recorded_with_its_name() {
    let file = uk_cli::image::temp_path("skips").with_extension("txt");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    uk_tests::skip_to(Some(&file), None, "needs KVM");
    uk_tests::skip_to(Some(&file), Some("other"), "needs root");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    // libtest names the test's thread after the test.
    assert!(
        lines[0].starts_with("harness::a_skipping_test_is_recorded_with_its_name\tneeds KVM"),
        "{text}"
    );
    assert_eq!(lines[1], "harness::other\tneeds root");
}
