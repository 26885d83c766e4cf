//! The static file server: serves a document root over HTTP/1.1.
//!
//! One thread runs an event loop on epoll (level-triggered) over a
//! non-blocking listener and non-blocking connections. Each connection is a
//! small state machine: read and parse request heads (`uk-http`), then write
//! the planned response (header bytes, then file bytes through `sendfile`,
//! `pread`+`write` or a file mapping), then the next pipelined request.
//! Deadlines (header, idle, send) are checked when `epoll_wait` times out at
//! the earliest of them. With several CPUs, one such loop runs on each
//! (`--workers`): the first, on the boot CPU, accepts every connection and
//! hands each to the loop with the fewest, which serves it to the end (with
//! a sharded network stack, one shard per CPU over a multiqueue NIC: to the
//! loop on the CPU of the connection's shard).
//! Arguments: see [`uk_http::config::USAGE`].
#![no_std]
#![no_main]

extern crate alloc;

#[cfg(feature = "tls")]
mod acme;
mod server;
#[cfg(feature = "tls")]
mod tls;

use uk_http::config::{self, LogLevel};
use unikernel::fs::{self, FileKind};
use unikernel::io;
use unikernel::println;
use unikernel::time::Duration;

unikernel::main!(main);

fn main() -> i32 {
    let cfg = match config::parse_args(unikernel::env::args()) {
        Ok(c) => c,
        Err(e) => {
            println!("httpd: {e}\n{}", config::USAGE);
            return 2;
        }
    };
    if cfg.help {
        println!("{}", config::USAGE);
        #[cfg(feature = "tls")]
        println!("{}", config::USAGE_TLS);
        return 0;
    }
    if let Some(level) = cfg.log_level {
        log::set_max_level(match level {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        });
    }
    match fs::stat(&cfg.root) {
        Ok(st) if st.kind == FileKind::Directory => {}
        Ok(_) => log::error!("httpd: document root {} is not a directory", cfg.root),
        Err(e) => log::error!("httpd: document root {}: {e}", cfg.root),
    }
    if !unikernel::net::available() {
        println!("httpd: no network device");
        return 1;
    }
    if !unikernel::net::wait_ready(Duration::from_secs(30)) {
        println!("httpd: no IP address after 30 s");
        return 1;
    }
    if let Some(ip) = unikernel::net::ip_info() {
        println!("httpd: address {} gateway {:?}", ip.addr, ip.gateway);
    }
    let listener = match io::tcp_listen(cfg.port, cfg.backlog, io::O_NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => {
            println!("httpd: cannot listen on port {}: {e}", cfg.port);
            return 1;
        }
    };
    // HTTPS: a key that does not match the certificate, or a certificate
    // out of its validity period, refuses the start.
    #[cfg(feature = "tls")]
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => match tls::load(cert, key) {
            Ok(config) => match io::tcp_listen(cfg.tls_port, cfg.backlog, io::O_NONBLOCK) {
                Ok(fd) => Some((fd, config)),
                Err(e) => {
                    println!("httpd: cannot listen on port {}: {e}", cfg.tls_port);
                    return 1;
                }
            },
            Err(e) => {
                println!("httpd: TLS: {e}; not starting");
                return 1;
            }
        },
        _ => None,
    };
    // ACME: the certificate comes later, from a background thread; HTTP is
    // served meanwhile (and answers its HTTP-01 challenges).
    #[cfg(feature = "tls")]
    let acme = match &cfg.acme {
        Some(a) => match acme::start(a) {
            Ok(fd) => {
                println!(
                    "httpd: ACME: getting a certificate for {} from {}",
                    a.domain, a.directory
                );
                Some(fd)
            }
            Err(e) => {
                println!("httpd: ACME: {e}; not starting");
                return 1;
            }
        },
        None => None,
    };
    // One event loop per CPU (at most): loop 0 here, the others on their
    // CPUs, which serve what loop 0 hands them.
    let loops = cfg
        .workers
        .unwrap_or(usize::MAX)
        .min(unikernel::thread::cpu_count())
        .max(1);
    let cfg: &'static config::Config = alloc::boxed::Box::leak(alloc::boxed::Box::new(cfg));
    if let Err(e) = server::start_loops(cfg, loops) {
        println!("httpd: cannot start the event loops: {e}");
        return 1;
    }
    let mut srv = match server::Server::new(cfg, listener, 0) {
        Ok(s) => s,
        Err(e) => {
            println!("httpd: cannot set up epoll: {e}");
            return 1;
        }
    };
    #[cfg(feature = "tls")]
    if let Some(fd) = acme
        && let Err(e) = srv.watch_acme(fd)
    {
        println!("httpd: cannot set up epoll: {e}");
        return 1;
    }
    #[cfg(feature = "tls")]
    if let Some((fd, config)) = tls {
        if let Err(e) = srv.add_tls_listener(fd, config) {
            println!("httpd: cannot set up epoll: {e}");
            return 1;
        }
        println!(
            "httpd: HTTPS on port {} (TLS 1.3, 1.2)",
            srv.config().tls_port
        );
    }
    let c = srv.config();
    println!(
        "httpd: serving {} on port {} (data path {}, max {} connections, access log {}, {loops} event loops)",
        c.root,
        c.port,
        c.data_path.name(),
        c.max_conns,
        if c.access_log { "on" } else { "off" }
    );
    let status = srv.run();
    if status != 0 {
        return status;
    }
    let (status, finished, cut) = server::join_loops(&srv, status);
    println!("httpd: stopped ({finished} connections finished, {cut} cut at the deadline)");
    // HTTPS: what the record layer copied (and the rest).
    #[cfg(feature = "tls")]
    println!("httpd: copies {}", io::copy_stats());
    status
}
