//! A TCP and UDP echo server: every byte received is sent back.
//!
//! Arguments: `[--port N]` (default 7) `[--spread]`. One thread per TCP
//! connection: on the accepting CPU, or with `--spread` on the CPU with the
//! fewest threads (`thread::Placement::Any`; a multi-core test of the
//! network stack called from every CPU). A UDP datagram `stats\n` is
//! answered with the network counters instead.
#![no_std]
#![no_main]

extern crate alloc;

use unikernel::net::{TcpListener, TcpStream, UdpSocket};
use unikernel::println;
use unikernel::thread;
use unikernel::time::Duration;

unikernel::main!(main);

fn main() -> i32 {
    let args = unikernel::env::args();
    let mut port = 7u16;
    let mut spread = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => match it.next().and_then(|p| p.parse().ok()) {
                Some(p) => port = p,
                None => {
                    println!("echo: --port needs a number");
                    return 2;
                }
            },
            "--spread" => spread = true,
            other => {
                println!("echo: unknown argument '{other}' (usage: echo [--port N] [--spread])");
                return 2;
            }
        }
    }
    if !unikernel::net::available() {
        println!("echo: no network device");
        return 1;
    }
    if !unikernel::net::wait_ready(Duration::from_secs(30)) {
        println!("echo: no IP address after 30 s");
        return 1;
    }
    if let Some(ip) = unikernel::net::ip_info() {
        println!("echo: address {} gateway {:?}", ip.addr, ip.gateway);
    }
    let listener = match TcpListener::bind(port) {
        Ok(l) => l,
        Err(e) => {
            println!("echo: cannot listen on port {port}: {e:?}");
            return 1;
        }
    };
    if let Ok(udp) = UdpSocket::bind(port) {
        thread::spawn(move || udp_echo(udp));
    }
    println!("echo: listening on port {port}");
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                log::debug!("echo: connection from {peer}");
                if spread {
                    let placed = thread::spawn_on(
                        thread::Placement::Any,
                        thread::DEFAULT_STACK,
                        thread::Priority::Normal,
                        move || {
                            let n = serve(stream);
                            println!("echo: cpu {} echoed {n} bytes", thread::cpu_index());
                        },
                    );
                    if placed.is_err() {
                        println!("echo: no memory for a connection thread");
                    }
                } else {
                    thread::spawn(move || {
                        serve(stream);
                    });
                }
            }
            Err(e) => println!("echo: accept failed: {e:?}"),
        }
    }
}

/// Echoes until the peer closes; returns the bytes echoed.
fn serve(mut s: TcpStream) -> u64 {
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = s.write_all(&buf[..n]) {
                    log::debug!("echo: write failed: {e:?}");
                    return total;
                }
                total += n as u64;
            }
            Err(e) => {
                log::debug!("echo: read failed: {e:?}");
                return total;
            }
        }
    }
    let _ = s.shutdown_write();
    total
}

fn udp_echo(s: UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            if &buf[..n] == b"stats\n" {
                // Operator aid: the network counters instead of an echo.
                let line = unikernel::net::stats_line();
                let _ = s.send_to(line.as_bytes(), from);
            } else {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    }
}
