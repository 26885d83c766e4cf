//! Descriptor I/O driven from the host tests and benchmarks.
//!
//! Scenarios (first argument):
//! - `epoll PORT`: checks epoll semantics step by step over a real TCP
//!   connection that the host drives; prints `epoll: <step>` markers.
//! - `hold PORT`: one thread, one epoll instance, holds every connection it
//!   gets open until the peer closes; prints `hold: N open` and
//!   `hold: all closed`.
//! - `serve PORT`: a file server for the data-path tests and benchmarks:
//!   the client sends `GET <path> <read|mmap|sendfile>\n` and gets the file's
//!   bytes, then EOF; `STATS\n` returns the copy counters and CPU figures.
//! - `epoll-bench`: the cost of `epoll_wait` with 1 ready descriptor among
//!   10, 1,000 and 10,000 registered.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;

use unikernel::fs::{self, Flags};
use unikernel::io::{
    self, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLONESHOT,
    EPOLLRDHUP, EpollEvent, O_NONBLOCK,
};
use unikernel::println;
use unikernel::time::{Duration, Instant};

unikernel::main!(main);

fn main() -> i32 {
    let args = unikernel::env::args();
    let port = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(7000u16);
    let ok = match args.first().map(String::as_str) {
        Some("epoll") => net_up() && epoll_semantics(port),
        Some("hold") => net_up() && hold(port),
        Some("serve") => net_up() && serve(port),
        Some("epoll-bench") => epoll_bench(),
        _ => {
            println!("usage: iotest epoll|hold|serve PORT | epoll-bench");
            return 2;
        }
    };
    if ok { 0 } else { 1 }
}

fn net_up() -> bool {
    if !unikernel::net::wait_ready(Duration::from_secs(30)) {
        println!("iotest: no network");
        return false;
    }
    true
}

/// Waits for events; returns (count, events of the first).
fn wait(ep: i32, timeout_ms: i32) -> (usize, u32, u64) {
    let mut evs = [EpollEvent::default(); 8];
    let n = io::epoll_wait(ep, &mut evs, timeout_ms).expect("epoll_wait");
    (n, evs[0].events, evs[0].data)
}

fn read_all(fd: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = fs::read(fd, &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

macro_rules! check {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            println!("epoll: FAIL {}", format!($($msg)*));
            return false;
        }
    };
}

fn epoll_semantics(port: u16) -> bool {
    let l = io::tcp_listen(port, 16, O_NONBLOCK).expect("listen");
    let ep = io::epoll_create().expect("epoll_create");
    io::epoll_ctl(
        ep,
        EPOLL_CTL_ADD,
        l,
        EpollEvent {
            events: EPOLLIN,
            data: 1,
        },
    )
    .expect("add listener");
    println!("epoll: ready on port {port}");

    // A connection arrives: the listener is readable (level-triggered).
    let (n, ev, data) = wait(ep, 30_000);
    check!(
        n == 1 && data == 1 && ev & EPOLLIN != 0,
        "listener not readable: n={n} ev={ev:#x}"
    );
    let (a, peer) = io::accept4(l, O_NONBLOCK).expect("accept4");
    check!(
        io::accept4(l, O_NONBLOCK).err() == Some(fs::Errno::EAGAIN),
        "second accept4 should be EAGAIN"
    );
    let (n, _, _) = wait(ep, 0);
    check!(n == 0, "listener still ready after accepting everything");
    println!("epoll: accepted {peer}");

    // Edge-triggered: one event per edge.
    io::epoll_ctl(
        ep,
        EPOLL_CTL_ADD,
        a,
        EpollEvent {
            events: EPOLLIN | EPOLLET | EPOLLRDHUP,
            data: 2,
        },
    )
    .unwrap();
    let mut b = [0u8; 16];
    check!(
        fs::read(a, &mut b).err() == Some(fs::Errno::EAGAIN),
        "empty non-blocking read is not EAGAIN"
    );
    println!("epoll: et armed, send one byte");
    let (n, ev, data) = wait(ep, 30_000);
    check!(
        n == 1 && data == 2 && ev & EPOLLIN != 0,
        "no edge: n={n} ev={ev:#x}"
    );
    let (n, _, _) = wait(ep, 300);
    check!(n == 0, "edge-triggered fired twice for one edge");
    println!("epoll: et once ok, send another byte");
    let (n, _, data) = wait(ep, 30_000);
    check!(n == 1 && data == 2, "second edge missing");
    let got = read_all(a);
    check!(got.len() == 2, "read {} bytes, expected 2", got.len());
    println!("epoll: et edge ok");

    // Level-triggered: fires again while data stays unread.
    io::epoll_ctl(
        ep,
        EPOLL_CTL_MOD,
        a,
        EpollEvent {
            events: EPOLLIN | EPOLLRDHUP,
            data: 3,
        },
    )
    .unwrap();
    println!("epoll: lt armed, send one byte");
    let (n, _, data) = wait(ep, 30_000);
    check!(n == 1 && data == 3, "level-triggered did not fire");
    let (n, _, _) = wait(ep, 0);
    check!(
        n == 1,
        "level-triggered did not fire again with data unread"
    );
    read_all(a);
    let (n, _, _) = wait(ep, 0);
    check!(n == 0, "level-triggered fired with nothing to read");
    println!("epoll: lt again ok");

    // One-shot: disarmed after one event until MOD re-arms it.
    io::epoll_ctl(
        ep,
        EPOLL_CTL_MOD,
        a,
        EpollEvent {
            events: EPOLLIN | EPOLLONESHOT,
            data: 4,
        },
    )
    .unwrap();
    println!("epoll: oneshot armed, send one byte");
    let (n, _, data) = wait(ep, 30_000);
    check!(n == 1 && data == 4, "one-shot did not fire");
    let (n, _, _) = wait(ep, 300);
    check!(n == 0, "one-shot fired again before MOD");
    io::epoll_ctl(
        ep,
        EPOLL_CTL_MOD,
        a,
        EpollEvent {
            events: EPOLLIN | EPOLLONESHOT,
            data: 5,
        },
    )
    .unwrap();
    let (n, _, data) = wait(ep, 0);
    check!(
        n == 1 && data == 5,
        "MOD did not re-arm the one-shot interest"
    );
    read_all(a);
    println!("epoll: oneshot ok");

    // DEL stops events.
    io::epoll_ctl(ep, EPOLL_CTL_DEL, a, EpollEvent::default()).unwrap();
    println!("epoll: deleted, send one byte");
    // The host's byte arrives; nothing may be reported for it.
    let t = Instant::now();
    let mut arrived = false;
    while t.elapsed() < Duration::from_secs(30) {
        if io::poll(
            &mut [io::PollFd {
                fd: a,
                events: EPOLLIN,
                revents: 0,
            }],
            100,
        )
        .unwrap_or(0)
            > 0
        {
            arrived = true;
            break;
        }
    }
    check!(arrived, "the byte never arrived (poll)");
    let (n, _, _) = wait(ep, 200);
    check!(n == 0, "events after EPOLL_CTL_DEL");
    read_all(a);
    println!("epoll: del ok");

    // Peer closes: EPOLLRDHUP with EPOLLIN (end of stream to read).
    io::epoll_ctl(
        ep,
        EPOLL_CTL_ADD,
        a,
        EpollEvent {
            events: EPOLLIN | EPOLLRDHUP,
            data: 6,
        },
    )
    .unwrap();
    println!("epoll: close your side");
    let (n, ev, _) = wait(ep, 30_000);
    check!(
        n == 1 && ev & EPOLLRDHUP != 0 && ev & EPOLLIN != 0,
        "no RDHUP: n={n} ev={ev:#x}"
    );
    check!(
        fs::read(a, &mut b) == Ok(0),
        "read after peer close is not EOF"
    );
    io::shutdown_write(a).unwrap();
    let t = Instant::now();
    let mut hup = false;
    while t.elapsed() < Duration::from_secs(30) {
        let (n, ev, _) = wait(ep, 100);
        if n == 1 && ev & EPOLLHUP != 0 {
            hup = true;
            break;
        }
    }
    check!(hup, "no EPOLLHUP after both sides closed");
    println!("epoll: rdhup and hup ok");
    fs::close(a).unwrap();

    // eventfd wakes an epoll waiter from another thread.
    let efd = io::eventfd(0, O_NONBLOCK).expect("eventfd");
    io::epoll_ctl(
        ep,
        EPOLL_CTL_ADD,
        efd,
        EpollEvent {
            events: EPOLLIN,
            data: 7,
        },
    )
    .unwrap();
    let waker = unikernel::thread::spawn(move || {
        unikernel::thread::sleep(Duration::from_millis(20));
        fs::write(efd, &3u64.to_ne_bytes()).expect("eventfd write");
    });
    let (n, _, data) = wait(ep, 30_000);
    waker.join();
    check!(n == 1 && data == 7, "eventfd did not wake epoll_wait");
    let mut v = [0u8; 8];
    fs::read(efd, &mut v).unwrap();
    check!(u64::from_ne_bytes(v) == 3, "eventfd value");
    check!(
        fs::read(efd, &mut v).err() == Some(fs::Errno::EAGAIN),
        "drained eventfd is not EAGAIN"
    );
    println!("epoll: eventfd ok");
    println!("epoll: all ok");
    true
}

fn hold(port: u16) -> bool {
    // Small buffers: 10,000 idle connections fit in a small guest.
    let l = io::tcp_listen_with_buffers(port, 4096, O_NONBLOCK, 2048, 2048).expect("listen");
    let ep = io::epoll_create().unwrap();
    io::epoll_ctl(
        ep,
        EPOLL_CTL_ADD,
        l,
        EpollEvent {
            events: EPOLLIN,
            data: u64::MAX,
        },
    )
    .unwrap();
    println!("hold: listening on port {port}");
    let mut open = 0usize;
    let mut peak = 0usize;
    let mut last_report = 0usize;
    let mut evs = vec![EpollEvent::default(); 256];
    let mut buf = [0u8; 512];
    loop {
        let n = io::epoll_wait(ep, &mut evs, 1000).unwrap();
        for e in &evs[..n] {
            if e.data == u64::MAX {
                while let Ok((fd, _)) = io::accept4(l, O_NONBLOCK) {
                    io::epoll_ctl(
                        ep,
                        EPOLL_CTL_ADD,
                        fd,
                        EpollEvent {
                            events: EPOLLIN | EPOLLRDHUP,
                            data: fd as u64,
                        },
                    )
                    .unwrap();
                    open += 1;
                }
                continue;
            }
            let fd = e.data as i32;
            let closed = loop {
                match fs::read(fd, &mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(fs::Errno::EAGAIN) => break false,
                    Err(_) => break true,
                }
            };
            if closed {
                let _ = io::epoll_ctl(ep, EPOLL_CTL_DEL, fd, EpollEvent::default());
                let _ = fs::close(fd);
                open -= 1;
            }
        }
        peak = peak.max(open);
        if open != last_report && (open.is_multiple_of(1000) || n == 0) {
            println!("hold: {open} open");
            last_report = open;
        }
        if peak > 0 && open == 0 {
            println!(
                "hold: all closed after a peak of {peak}; {}",
                unikernel::net::stats_line()
            );
            return true;
        }
    }
}

fn serve(port: u16) -> bool {
    // Default buffers: each connection this server closes keeps its buffers
    // through smoltcp's TIME-WAIT (10 s), and a benchmark closes hundreds per
    // second (larger send buffers made sendfile faster but ran the guest out
    // of memory).
    let l = io::tcp_listen(port, 128, 0).expect("listen");
    println!("serve: listening on port {port}");
    loop {
        let (fd, _) = match io::accept4(l, 0) {
            Ok(c) => c,
            Err(e) => {
                println!("serve: accept: {e}");
                continue;
            }
        };
        unikernel::thread::spawn(move || {
            if let Err(e) = serve_one(fd) {
                log::warn!("serve: {e}");
            }
            let _ = fs::close(fd);
        });
    }
}

fn write_all(fd: i32, mut b: &[u8]) -> Result<(), fs::Errno> {
    while !b.is_empty() {
        let n = fs::write(fd, b)?;
        b = &b[n..];
    }
    Ok(())
}

fn serve_one(sock: i32) -> Result<(), fs::Errno> {
    // The request is one line, and the client sends nothing more until the
    // reply has ended: read whatever has arrived (a byte at a time cost a
    // socket call per byte, the same for every data path).
    let mut buf = [0u8; 512];
    let mut have = 0;
    let line_end = loop {
        if let Some(i) = buf[..have].iter().position(|&c| c == b'\n') {
            break i;
        }
        if have == buf.len() {
            break have;
        }
        let n = fs::read(sock, &mut buf[have..])?;
        if n == 0 {
            return Ok(());
        }
        have += n;
    };
    let line = &buf[..line_end];
    let mut b = [0u8; 1];
    let line = String::from_utf8_lossy(line).into_owned();
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["STATS"] => {
            let s = unikernel::sched::STATS.idle_cycles.load(Relaxed);
            let now = unikernel::arch::cpu::rdtsc() - unikernel::arch::boot::entry_tsc();
            let (sent_pages, sent_spans) = unikernel::fs::sendfile_spans();
            let text = format!(
                "{} idle_cycles={s} uptime_cycles={now} tsc_hz={} tx_tso_frames={} cache_pinned={} \
                 sendfile_pages={sent_pages} sendfile_spans={sent_spans}\n",
                io::copy_stats(),
                unikernel::time::tsc_hz(),
                unikernel::net::tso_frames(),
                unikernel::fs::cache_stats().pinned,
            );
            write_all(sock, text.as_bytes())?;
        }
        ["GET", path, mode] => {
            let f = fs::open(path, Flags::O_RDONLY, 0)?;
            let size = fs::fstat(f)?.size;
            let r = match *mode {
                "sendfile" => {
                    let mut off = 0u64;
                    while off < size {
                        let left = (size - off) as usize;
                        if io::sendfile(sock, f, &mut off, left)? == 0 {
                            break;
                        }
                    }
                    Ok(())
                }
                "read" => {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = fs::read(f, &mut buf)?;
                        if n == 0 {
                            break Ok(());
                        }
                        write_all(sock, &buf[..n])?;
                    }
                }
                "mmap" => {
                    if size == 0 {
                        Ok(())
                    } else {
                        let p = fs::mmap_file(f, size as usize, 0)?;
                        // SAFETY: mmap_file mapped `size` readable bytes at `p`
                        // (page-cache frames), valid until munmap_file.
                        let bytes = unsafe { core::slice::from_raw_parts(p, size as usize) };
                        let r = write_all(sock, bytes);
                        fs::munmap_file(p)?;
                        r
                    }
                }
                _ => Err(fs::Errno::EINVAL),
            };
            let _ = fs::close(f);
            r?;
        }
        _ => write_all(sock, b"ERR bad request\n")?,
    }
    let _ = io::shutdown_write(sock);
    // Drain until the client closes, so the FIN exchange completes.
    while let Ok(n) = fs::read(sock, &mut b) {
        if n == 0 {
            break;
        }
    }
    Ok(())
}

fn epoll_bench() -> bool {
    const ROUNDS: u64 = 20_000;
    let mut line = String::from("epoll-bench:");
    for n in [10usize, 1000, 10_000] {
        let ep = io::epoll_create().unwrap();
        let fds: Vec<i32> = (0..n)
            .map(|_| io::eventfd(0, O_NONBLOCK).expect("eventfd"))
            .collect();
        for (i, &fd) in fds.iter().enumerate() {
            io::epoll_ctl(
                ep,
                EPOLL_CTL_ADD,
                fd,
                EpollEvent {
                    events: EPOLLIN,
                    data: i as u64,
                },
            )
            .unwrap();
        }
        fs::write(fds[n / 2], &1u64.to_ne_bytes()).unwrap();
        let mut evs = [EpollEvent::default(); 4];
        for _ in 0..100 {
            io::epoll_wait(ep, &mut evs, 0).unwrap();
        }
        let t = Instant::now();
        for _ in 0..ROUNDS {
            let k = io::epoll_wait(ep, &mut evs, 0).unwrap();
            assert_eq!(k, 1);
        }
        let ns = t.elapsed().as_nanos() as u64 / ROUNDS;
        line += &format!(" n{n}_ns={ns}");
        for fd in fds {
            let _ = fs::close(fd);
        }
        let _ = fs::close(ep);
    }
    println!("{line}");
    true
}
