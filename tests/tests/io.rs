//! Descriptor I/O against booted `iotest` images: epoll semantics over real
//! TCP sockets, 10,000 connections held by one thread (TAP in a network
//! namespace), and the file data paths with their copy counters.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use uk_cli::image::{ImageFormat, build_image_from_dir, pseudo_random_bytes, temp_path};
use uk_tests::{BootOpts, Guest, Machine, Netns, free_port, machine_tests, parse_kv};

const BIG: usize = 16 << 20;
const HUGE: usize = 64 << 20;

fn disk() -> &'static PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        let dir = temp_path("io-test-site");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("big.bin"), pseudo_random_bytes(7, BIG)).unwrap();
        std::fs::write(dir.join("huge.bin"), pseudo_random_bytes(8, HUGE)).unwrap();
        std::fs::write(dir.join("small.txt"), b"hello, sendfile\n").unwrap();
        let image = temp_path("io-test").with_extension("img");
        build_image_from_dir(&dir, &image, ImageFormat::Ext4).expect("build the ext4 image");
        let _ = std::fs::remove_dir_all(&dir);
        image
    })
}

machine_tests!(epoll_semantics_over_tcp, |m| {
    let port = free_port();
    let mut g = Guest::boot(
        "iotest",
        m,
        BootOpts::args(&["epoll", "7000"]).fwd(port, 7000),
    );
    g.expect("epoll: ready on port 7000");
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    g.expect("epoll: accepted");
    let steps: [(&str, &[u8]); 5] = [
        ("epoll: et armed, send one byte", b"x"),
        ("epoll: et once ok, send another byte", b"y"),
        ("epoll: lt armed, send one byte", b"z"),
        ("epoll: oneshot armed, send one byte", b"w"),
        ("epoll: deleted, send one byte", b"v"),
    ];
    for (marker, byte) in steps {
        g.expect(marker);
        s.write_all(byte).unwrap();
    }
    g.expect("epoll: close your side");
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("EOF from the guest");
    drop(s);
    g.expect("epoll: rdhup and hup ok");
    g.expect("epoll: eventfd ok");
    g.expect("epoll: all ok");
    g.expect_exit(0);
    for step in [
        "et once ok",
        "et edge ok",
        "lt again ok",
        "oneshot ok",
        "del ok",
    ] {
        g.assert_output_contains(&format!("epoll: {step}"));
    }
});

fn get(port: u16, req: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read the response");
    out
}

fn stats(port: u16) -> std::collections::HashMap<String, u64> {
    parse_kv(&String::from_utf8_lossy(&get(port, "STATS\n")))
}

machine_tests!(sendfile_16mib_byte_exact_and_zero_app_copies, |m| {
    let port = free_port();
    let g = Guest::boot(
        "iotest",
        m,
        BootOpts::args(&["serve", "7000"])
            .fwd(port, 7000)
            .disk(disk())
            .mem("96M"),
    );
    g.expect("serve: listening on port 7000");
    let want = pseudo_random_bytes(7, BIG);
    for mode in ["sendfile", "read", "mmap"] {
        let before = stats(port);
        let got = get(port, &format!("GET /big.bin {mode}\n"));
        let after = stats(port);
        assert_eq!(got.len(), BIG, "{mode}: length");
        assert!(got == want, "{mode}: bytes differ");
        let d = |k: &str| after[k] - before[k];
        eprintln!(
            "{mode}: cache_to_app={} app_to_socket={} cache_to_socket={} socket_to_device={}",
            d("cache_to_app"),
            d("app_to_socket"),
            d("cache_to_socket"),
            d("socket_to_device")
        );
        match mode {
            // sendfile: the CPU copies no payload byte at all: the send
            // queue references page-cache pages and the NIC reads them
            // (scatter-gather). (The only application bytes in the window
            // are the reply to the previous STATS request, written after
            // its snapshot.)
            "sendfile" => {
                // The file was just read into a fresh guest's cache, in
                // batches of frames taken in ascending order: most pages
                // continue the previous one's frame, and a span of them is
                // one reference and one descriptor (a frame allocator that
                // handed frames out in descending order made every page a
                // span of its own).
                let (pages, spans) = (d("sendfile_pages"), d("sendfile_spans"));
                eprintln!("sendfile: {pages} pages in {spans} spans");
                // (Pages can be pinned twice: a call pins no more than the
                // socket takes, and the next starts in the same page.)
                assert!(pages >= BIG as u64 / 4096);
                assert!(
                    spans * 4 <= pages,
                    "{pages} pages pinned in {spans} spans: frames not consecutive"
                );
                assert_eq!(d("cache_to_app"), 0, "sendfile copied into an app buffer");
                assert!(
                    d("app_to_socket") < 1024,
                    "sendfile copied from an app buffer"
                );
                assert_eq!(d("cache_to_socket"), 0, "sendfile copied the cache");
            }
            // read + write: page cache → app, app → socket.
            "read" => {
                assert_eq!(d("cache_to_app"), BIG as u64);
                assert!((BIG as u64..BIG as u64 + 1024).contains(&d("app_to_socket")));
                assert_eq!(d("cache_to_socket"), 0);
            }
            // mmap + write: app (the mapped cache pages) → socket only.
            _ => {
                assert_eq!(d("cache_to_app"), 0, "mmap must not copy out of the cache");
                assert!((BIG as u64..BIG as u64 + 1024).contains(&d("app_to_socket")));
            }
        }
        // Frames leave as scatter-gather lists: nothing copied into the
        // device's buffers.
        assert_eq!(
            d("socket_to_device"),
            0,
            "{mode}: payload copied to the device"
        );
    }
    // Every page sendfile pinned is released once its bytes are
    // acknowledged and the device has read them (the last acknowledgements
    // and transmit completions may still be on their way: ask until a
    // deadline).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pinned = stats(port)["cache_pinned"];
        if pinned == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pinned} page-cache pages still pinned after the transfers"
        );
        std::thread::yield_now();
    }
});

// The three data paths over a TAP device with a real Linux peer, 64 MiB
// each, with TCP segmentation offload (QEMU's tap backend has vnet headers,
// so virtio-net offers `HOST_TSO4`): byte-exact, and the guest's copy
// counters show what the CPU copied per payload byte: sendfile 0 (the NIC
// reads the page-cache pages), mmap + write 1 (app → socket), read + write
// 2 (page cache → app → socket); nothing is copied into device buffers.
machine_tests!(
    data_paths_64mib_over_tap_with_tso_byte_exact_and_counted,
    |m| {
        if uk_tests::skip_unless_root() {
            return;
        }
        let tag = match m {
            Machine::Q35 => "tso-q35",
            _ => "tso-microvm",
        };
        let ns = Netns::create(tag).expect("create the test namespace");
        let g = Guest::boot(
            "iotest",
            m,
            ns.boot_opts(&["serve", "7000"]).disk(disk()).mem("160M"),
        );
        g.expect("serve: listening on port 7000");
        g.assert_output_contains("TCP segmentation offload in use");
        let want = temp_path("io-test-tso-want");
        std::fs::write(&want, pseudo_random_bytes(8, HUGE)).unwrap();
        // The client runs inside the namespace (checked by `Netns::command`).
        let script = format!(
            "import socket\n\
         def get(req):\n    \
           s=socket.create_connection(('{ip}',7000),timeout=120)\n    \
           s.sendall(req)\n    \
           out=bytearray()\n    \
           while True:\n        \
             b=s.recv(1<<20)\n        \
             if not b: break\n        \
             out+=b\n    \
           return bytes(out)\n\
         def stats():\n    \
           return dict((k,int(v)) for k,v in (w.split('=',1) for w in get(b'STATS\\n').decode().split() if '=' in w))\n\
         want=open('{want}','rb').read()\n\
         for mode in ['sendfile','mmap','read']:\n    \
           before=stats()\n    \
           got=get(('GET /huge.bin '+mode+'\\n').encode())\n    \
           after=stats()\n    \
           d=' '.join('%s=%d' % (k, after[k]-before[k]) for k in sorted(after))\n    \
           print(mode, 'got', len(got), 'ok' if got==want else 'MISMATCH', d, flush=True)\n",
            ip = ns.guest_ip,
            want = want.display()
        );
        let out = ns
            .command("python3", &["-c", &script])
            .output()
            .expect("run the client");
        let _ = std::fs::remove_file(&want);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "client: {stdout} {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            g.output()
        );
        let huge = HUGE as u64;
        for mode in ["sendfile", "mmap", "read"] {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&format!("{mode} got ")))
                .unwrap_or_else(|| panic!("no {mode} line: {stdout}"));
            eprintln!("{line}");
            assert!(
                line.starts_with(&format!("{mode} got {HUGE} ok ")),
                "{line}\n{}",
                g.output()
            );
            let d = parse_kv(line);
            // The reply to the first STATS is written after its own snapshot.
            let app = d["app_to_socket"];
            assert_eq!(d["socket_to_device"], 0, "{line}");
            assert_eq!(d["cache_to_socket"], 0, "{line}");
            let (cache_to_app, app_range) = match mode {
                "sendfile" => (0, 0..1024),
                "mmap" => (0, huge..huge + 1024),
                _ => (huge, huge..huge + 1024),
            };
            assert_eq!(d["cache_to_app"], cache_to_app, "{line}");
            assert!(app_range.contains(&app), "{line}");
            assert!(d["tx_tso_frames"] > 0, "no TSO frames: {line}");
        }
    }
);

#[test]
fn ten_thousand_connections_held_by_one_thread_over_tap() {
    if uk_tests::skip_unless_root() {
        return;
    }
    let ns = Netns::create("hold").expect("create the test namespace");
    let mut g = Guest::boot(
        "iotest",
        Machine::Microvm,
        ns.boot_opts(&["hold", "7000"]).mem("320M"),
    );
    g.expect("hold: listening on port 7000");
    // The clients run inside the namespace (checked by `Netns::command`);
    // each connection is opened, then all are held, then all closed.
    let script = format!(
        "import socket, resource, time, sys\n\
         resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))\n\
         socks=[]\n\
         for i in range(10000):\n    \
           s=socket.socket(); s.settimeout(60); s.connect(('{ip}',7000)); socks.append(s)\n\
         print('connected', len(socks), flush=True)\n\
         sys.stdin.readline()\n\
         for s in socks: s.close()\n\
         print('closed', flush=True)\n",
        ip = ns.guest_ip
    );
    let mut client = ns
        .command("python3", &["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the clients");
    let r = g.wait_for("hold: 10000 open", Duration::from_secs(300));
    let mut stdin = client.stdin.take().unwrap();
    let _ = stdin.write_all(b"go\n");
    drop(stdin);
    let out = client.wait_with_output().expect("clients");
    r.unwrap_or_else(|e| {
        panic!(
            "the guest never held 10000 connections: {e}\nclients: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(String::from_utf8_lossy(&out.stdout).contains("connected 10000"));
    g.wait_for("hold: all closed", Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    g.kill();
}

/// Loss, duplication and reordering against a real Linux peer: the guest's
/// frames pass through `relay.py` (between QEMU's `-netdev dgram` socket and
/// the TAP device, inside the namespace), which drops 1%, duplicates 1% and
/// reorders 2% of IPv4 frames in each direction with a fixed seed. 16 MiB
/// through sendfile and through read arrive byte-exact. (No vnet header on
/// a dgram backend: no checksum or segmentation offload, so this is also
/// the software-checksum path of scatter-gather transmit.)
#[test]
fn sendfile_and_read_16mib_through_a_lossy_reordering_relay() {
    if uk_tests::skip_unless_root() {
        return;
    }
    let ns = Netns::create("relay").expect("create the test namespace");
    let stats_file = temp_path("io-relay-stats");
    let relay_py = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/relay.py");
    // Ports on the namespace's own loopback.
    let (qemu_port, relay_port) = (40001u16, 40002u16);
    let mut relay = ns
        .command(
            "python3",
            &[
                relay_py,
                &ns.tap,
                &relay_port.to_string(),
                &qemu_port.to_string(),
                "13",
                "0.01",
                "0.01",
                "0.02",
                &stats_file.display().to_string(),
            ],
        )
        .spawn()
        .expect("start the relay");
    let g = Guest::boot(
        "iotest",
        Machine::Microvm,
        ns.relay_boot_opts(&["serve", "7000"], qemu_port, relay_port)
            .disk(disk())
            .mem("96M"),
    );
    g.expect("serve: listening on port 7000");
    let want = temp_path("io-relay-want");
    std::fs::write(&want, pseudo_random_bytes(7, BIG)).unwrap();
    let script = format!(
        "import socket\n\
         def get(req):\n    \
           s=socket.create_connection(('{ip}',7000),timeout=120)\n    \
           s.sendall(req)\n    \
           out=bytearray()\n    \
           while True:\n        \
             b=s.recv(1<<20)\n        \
             if not b: break\n        \
             out+=b\n    \
           return bytes(out)\n\
         want=open('{want}','rb').read()\n\
         for mode in ['sendfile','read']:\n    \
           got=get(('GET /big.bin '+mode+'\\n').encode())\n    \
           print(mode, 'got', len(got), 'ok' if got==want else 'MISMATCH', flush=True)\n",
        ip = ns.guest_ip,
        want = want.display()
    );
    let out = ns
        .command("python3", &["-c", &script])
        .output()
        .expect("run the client");
    let _ = std::fs::remove_file(&want);
    let _ = std::process::Command::new("kill")
        .arg(relay.id().to_string())
        .status();
    let _ = relay.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let relay_stats = std::fs::read_to_string(&stats_file).unwrap_or_default();
    let _ = std::fs::remove_file(&stats_file);
    eprintln!("client: {stdout}relay: {relay_stats}");
    for mode in ["sendfile", "read"] {
        assert!(
            stdout.contains(&format!("{mode} got {BIG} ok")),
            "{mode}: {stdout} {}\nrelay: {relay_stats}\n{}",
            String::from_utf8_lossy(&out.stderr),
            g.output()
        );
    }
    let r = parse_kv(&relay_stats);
    for k in ["dropped", "duplicated", "reordered"] {
        assert!(
            r.get(k).copied().unwrap_or(0) > 10,
            "relay {k}: {relay_stats}"
        );
    }
}
