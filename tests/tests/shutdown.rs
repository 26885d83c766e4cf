//! Graceful shutdown of httpd: the ACPI power button (QMP `system_powerdown`,
//! q35's fixed-feature button and microvm's Generic Event Device) and
//! Ctrl-Alt-Del (QMP `send-key` into the i8042: q35's, and the one a
//! Firecracker-style microvm gets) make httpd stop accepting, finish what is
//! in flight within `--shutdown-timeout`, and power off with status 0.
//! Traffic goes only to 127.0.0.1 (QEMU user networking, forwards bound to
//! 127.0.0.1).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use uk_cli::image::{ImageFormat, build_image_from_dir, pseudo_random_bytes, temp_path};
use uk_tests::{
    BOOT_TIMEOUT, BootOpts, Firmware, Guest, Machine, boot_disk_image, free_port, machine_tests,
};

const BIG: usize = 16 << 20;
const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// From the request to QEMU's exit, generously (TCG on a shared machine).
const STOP_BOUND: Duration = Duration::from_secs(60);

struct Site {
    image: PathBuf,
    big: Vec<u8>,
}

/// The test disk, built once: `/www/big.bin` (16 MiB) and `/www/hello.txt`.
fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let dir = temp_path("shutdown-site");
        let www = dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("hello.txt"), b"hello, world\n").unwrap();
        let big = pseudo_random_bytes(7, BIG);
        std::fs::write(www.join("big.bin"), &big).unwrap();
        let image = temp_path("shutdown-test").with_extension("img");
        build_image_from_dir(&dir, &image, ImageFormat::Ext4).expect("build the ext4 image");
        let _ = std::fs::remove_dir_all(&dir);
        Site { image, big }
    })
}

fn boot(m: Machine, firecracker: bool, args: &[&str]) -> (Guest, u16) {
    let port = free_port();
    let mut all = vec!["--root", "/www"];
    all.extend_from_slice(args);
    let mut opts = BootOpts::args(&all)
        .mem("128M")
        .disk(&site().image)
        .fwd(port, 80)
        .qmp();
    if firecracker {
        opts = opts.firecracker();
    }
    let guest = Guest::boot("httpd", m, opts);
    guest.expect("httpd: serving");
    (guest, port)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Sends a GET and reads the response head; returns the reader and the
/// Content-Length.
fn get_head(port: u16, target: &str) -> (BufReader<TcpStream>, usize) {
    let mut s = connect(port);
    write!(s, "GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "status line: {line:?}");
    let mut len = None;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = Some(v.trim().parse().unwrap());
        }
    }
    (r, len.expect("a Content-Length"))
}

/// A connection opened now gets no HTTP answer: the guest's listener is
/// closed, its RST makes QEMU's user networking drop the forwarded
/// connection (or refuse it).
fn assert_refused(port: u16) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            panic!("a connection after the shutdown request hung instead of being refused")
        }
        Err(_) => {}
        Ok(n) => panic!(
            "a connection after the shutdown request was answered: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

/// Presses the ACPI power button (QMP): the console mark before it and
/// when it was pressed.
fn press_power_button(g: &Guest) -> (usize, Instant) {
    let mark = g.mark();
    let pressed = Instant::now();
    g.powerdown()
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    (mark, pressed)
}

/// Waits for QEMU to exit within `STOP_BOUND` of `since` and checks status 0.
fn expect_powered_off(g: &mut Guest, since: Instant) {
    match g.wait_exit(STOP_BOUND) {
        Ok(0) => {}
        Ok(s) => panic!("{}", g.failure(&format!("exit status {s}, not 0"))),
        Err(e) => panic!("{e}"),
    }
    assert!(
        since.elapsed() < STOP_BOUND,
        "{}",
        g.failure("took too long to power off")
    );
}

/// A 16 MiB download is in flight (the client has read 1 MiB and pauses,
/// so the server is blocked on a full window) when the power button is
/// pressed; it completes byte-exact, new connections are refused, and the
/// VM powers off with status 0.
fn power_button_finishes_download(m: Machine) {
    let (mut g, port) = boot(m, false, &[]);
    let (mut r, len) = get_head(port, "/big.bin");
    assert_eq!(len, BIG);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body[..1 << 20]).unwrap();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        go_rx.recv().unwrap();
        // Dropping `r` then closes the connection, which ends the server's
        // lingering close.
        r.read_exact(&mut body[1 << 20..])?;
        Ok::<_, std::io::Error>(body)
    });

    let (mark, pressed) = press_power_button(&g);
    g.wait_for_from(
        "httpd: shutdown requested (ACPI power button)",
        mark,
        BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_refused(port);
    go_tx.send(()).unwrap();
    let body = reader.join().unwrap().expect("the rest of the download");
    assert!(body == site().big, "the download differs from big.bin");
    g.wait_for_from(
        "httpd: stopped (1 connections finished, 0 cut at the deadline)",
        mark,
        STOP_BOUND,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    expect_powered_off(&mut g, pressed);
}

machine_tests!(power_button_finishes_in_flight_download, |m| {
    power_button_finishes_download(m);
});

/// Ctrl-Alt-Del into the i8042 with an idle keep-alive connection open:
/// the idle connection is closed (the client sees EOF) and the VM powers
/// off with status 0.
fn ctrl_alt_del_stops(m: Machine, firecracker: bool) {
    let (mut g, port) = boot(m, firecracker, &[]);
    let (mut r, len) = get_head(port, "/hello.txt");
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    assert_eq!(body, b"hello, world\n");
    let mark = g.mark();
    let pressed = Instant::now();
    g.ctrl_alt_del()
        .unwrap_or_else(|e| panic!("{}", g.failure(&e)));
    g.wait_for_from(
        "httpd: shutdown requested (Ctrl-Alt-Del)",
        mark,
        BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("EOF on the idle keep-alive connection");
    assert!(rest.is_empty(), "unexpected bytes after shutdown: {rest:?}");
    drop(r);
    g.wait_for_from(
        "httpd: stopped (1 connections finished, 0 cut at the deadline)",
        mark,
        STOP_BOUND,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    expect_powered_off(&mut g, pressed);
}

#[test]
fn ctrl_alt_del_on_q35_i8042() {
    ctrl_alt_del_stops(Machine::Q35, false);
}

/// Firecracker's `SendCtrlAltDel` puts the same keys into its i8042; a
/// Firecracker-style microvm (virtio-mmio on the command line, an i8042,
/// the i8042 reset to end the VM) gets them through QEMU's `send-key`.
#[test]
fn ctrl_alt_del_on_firecracker_style_microvm() {
    ctrl_alt_del_stops(Machine::Microvm, true);
}

/// A client that requests 16 MiB and reads nothing holds its response
/// open: it is cut at `--shutdown-timeout` and the VM still powers off
/// with status 0, no earlier than the deadline.
#[test]
fn deadline_cuts_a_stalled_response() {
    let (mut g, port) = boot(Machine::Q35, false, &["--shutdown-timeout", "2s"]);
    let mut stalled = connect(port);
    write!(stalled, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    // The response has started: its first bytes are here (read only those).
    let mut first = [0u8; 12];
    stalled.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let (mark, pressed) = press_power_button(&g);
    g.wait_for_from("httpd: shutdown requested", mark, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    g.wait_for_from(
        "httpd: stopped (0 connections finished, 1 cut at the deadline)",
        mark,
        STOP_BOUND,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        pressed.elapsed() >= Duration::from_millis(1900),
        "cut before the 2 s deadline ({:?})",
        pressed.elapsed()
    );
    expect_powered_off(&mut g, pressed);
    drop(stalled);
}

/// A cloud's "stop": the bootable raw image (GRUB, under UEFI firmware as
/// on GCE) on q35 powers off through the ACPI power button with status 0.
#[test]
fn power_button_stops_the_disk_image_under_ovmf() {
    let dir = temp_path("shutdown-cloud-site");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), b"<h1>stop me</h1>\n").unwrap();
    let disk = boot_disk_image("httpd", &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let mut g = Guest::boot(
        "httpd",
        Machine::Q35,
        BootOpts::default()
            .mem("256M")
            .firmware(Firmware::Ovmf, disk)
            .fwd(port, 80)
            .qmp(),
    );
    g.wait_for("httpd: serving", Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    let (mark, pressed) = press_power_button(&g);
    g.wait_for_from(
        "httpd: stopped (0 connections finished, 0 cut at the deadline)",
        mark,
        STOP_BOUND,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    expect_powered_off(&mut g, pressed);
}

/// Multi-core (issue 16): with an event loop per CPU, the power button
/// stops every loop. Six idle keep-alive connections and one 16 MiB download
/// paused by its client (spread over the loops: each new connection goes to
/// the loop with the fewest); the idle ones see EOF, the download completes
/// byte-exact, all seven count as finished, and the VM powers off with 0.
fn power_button_stops_every_loop(cpus: u32) {
    let port = free_port();
    let mut g = Guest::boot(
        "httpd",
        Machine::Microvm,
        BootOpts::args(&["--root", "/www"])
            .mem("128M")
            .smp(cpus)
            .disk(&site().image)
            .fwd(port, 80)
            .qmp(),
    );
    let line = g.expect("httpd: serving");
    assert!(line.contains(&format!("{cpus} event loops")), "{line}");
    let (mut big, len) = get_head(port, "/big.bin");
    assert_eq!(len, BIG);
    let mut body = vec![0u8; len];
    big.read_exact(&mut body[..1 << 20]).unwrap();
    let idle: Vec<_> = (0..6)
        .map(|_| {
            let (mut r, len) = get_head(port, "/hello.txt");
            let mut b = vec![0u8; len];
            r.read_exact(&mut b).unwrap();
            assert_eq!(b, b"hello, world\n");
            r
        })
        .collect();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        go_rx.recv().unwrap();
        big.read_exact(&mut body[1 << 20..])?;
        Ok::<_, std::io::Error>(body)
    });
    let (mark, pressed) = press_power_button(&g);
    g.wait_for_from(
        "httpd: shutdown requested (ACPI power button)",
        mark,
        BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for (i, mut r) in idle.into_iter().enumerate() {
        let mut rest = Vec::new();
        r.read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
        assert!(rest.is_empty(), "idle connection {i}: {rest:?}");
    }
    go_tx.send(()).unwrap();
    let body = reader.join().unwrap().expect("the rest of the download");
    assert!(body == site().big, "the download differs from big.bin");
    g.wait_for_from(
        "httpd: stopped (7 connections finished, 0 cut at the deadline)",
        mark,
        STOP_BOUND,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    expect_powered_off(&mut g, pressed);
}

#[test]
fn power_button_stops_every_loop_of_two() {
    power_button_stops_every_loop(2);
}

#[test]
fn power_button_stops_every_loop_of_four() {
    power_button_stops_every_loop(4);
}
