//! The `uk` binary as a user runs it: its VM dies with it (SIGTERM, SIGKILL),
//! and background VMs (`run -d`, `ps`, `logs`, `stop`) behave. Traffic only
//! to 127.0.0.1 (QEMU user networking, forwards bound to 127.0.0.1).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use uk_tests::free_port;

/// The `uk` binary, built once per test process.
fn uk() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = uk_cli::build::cargo()
                .current_dir(uk_cli::root())
                .args(["build", "--quiet", "--package", "uk-cli", "--bin", "uk"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(uk_cli::target_dir().join("debug/uk"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("cannot build uk: {e}"))
}

/// A running `uk` whose stdout and stderr are collected.
struct Cli {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Cli {
    fn spawn(args: &[&str]) -> Cli {
        let mut child = Command::new(uk())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn uk");
        let out = Arc::new(Mutex::new(String::new()));
        for r in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Cli { child, out }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.output().contains(needle) {
            assert!(
                Instant::now() < end,
                "no '{needle}' within {timeout:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("uk did not exit within {timeout:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The QEMU child of `pid` (the first child whose command is QEMU).
fn qemu_child(pid: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for t in tasks.filter_map(Result::ok) {
        let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let cmd = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains("qemu-system-x86_64") {
                return Some(c);
            }
        }
    }
    None
}

/// Whether `pid` is gone (or a zombie waiting for its reaper).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .is_some_and(|st| st == "Z" || st == "X")
    })
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    gone(pid)
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Whether the port is free within `timeout`: QEMU's main thread turns
/// zombie before its other threads have exited and its sockets are closed.
fn port_freed(port: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if port_free(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    port_free(port)
}

fn http_get_status(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("status line");
    String::from_utf8_lossy(&head).into_owned()
}

/// Boots httpd through `uk run` in the foreground and returns the CLI, the
/// QEMU pid and the forwarded port, once the server serves.
fn foreground_httpd() -> (Cli, u32, u16) {
    let port = free_port();
    let fwd = format!("{port}:80");
    let cli = Cli::spawn(&["run", "--fwd", &fwd, "--tcg"]);
    cli.wait_for("httpd: serving", Duration::from_secs(300));
    let qemu = qemu_child(cli.child.id()).expect("QEMU is a child of uk");
    assert!(http_get_status(port).ends_with("200"));
    (cli, qemu, port)
}

/// Sends `sig` (`TERM`, `INT`, `HUP`, number `n`) to a foreground `uk run`:
/// it stops QEMU, exits with 128 + n, and the port is free.
fn stop_signal_stops_the_vm(sig: &str, n: i32) {
    let (mut cli, qemu, port) = foreground_httpd();
    let pid = cli.child.id().to_string();
    assert!(
        Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap()
            .success(),
        "kill -{sig} uk"
    );
    let status = cli.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(128 + n), "{}", cli.output());
    assert!(
        cli.output().contains(&format!("stopped by signal {n}")),
        "{}",
        cli.output()
    );
    assert!(
        wait_gone(qemu, Duration::from_secs(10)),
        "QEMU {qemu} still runs"
    );
    assert!(
        port_freed(port, Duration::from_secs(10)),
        "127.0.0.1:{port} still taken"
    );
}

#[test]
fn sigterm_stops_the_vm_and_frees_the_port() {
    stop_signal_stops_the_vm("TERM", 15);
}

#[test]
fn sigint_and_sighup_stop_the_vm_too() {
    stop_signal_stops_the_vm("INT", 2);
    stop_signal_stops_the_vm("HUP", 1);
}

#[test]
fn sigkill_of_the_cli_kills_the_vm() {
    let (mut cli, qemu, port) = foreground_httpd();
    cli.child.kill().unwrap();
    cli.wait_exit(Duration::from_secs(10));
    assert!(
        wait_gone(qemu, Duration::from_secs(10)),
        "QEMU {qemu} outlived its CLI"
    );
    assert!(
        port_freed(port, Duration::from_secs(10)),
        "127.0.0.1:{port} still taken"
    );
}

fn uk_output(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(uk())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run uk");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Stops a background VM when a test ends, passed or not (`stop` on a VM
/// that is already gone just removes nothing).
struct StopOnDrop(String);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(uk())
            .args(["stop", &self.0, "--timeout", "1"])
            .stdin(Stdio::null())
            .output();
    }
}

#[test]
fn background_vm_ps_logs_stop() {
    let port = free_port();
    let name = format!("test-{}", std::process::id());
    let fwd = format!("{port}:80");
    let _guard = StopOnDrop(name.clone());
    let (code, out, err) = uk_output(&["run", "-d", "--name", &name, "--fwd", &fwd, "--tcg"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), name, "run -d prints the name: {out}{err}");
    let (_, ps, _) = uk_output(&["ps"]);
    let row = ps
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("{name} not in ps:\n{ps}"));
    assert!(row.contains("httpd") && row.contains(&format!("127.0.0.1:{port}->80")));
    assert!(row.contains("64M") && row.contains("running"), "{row}");
    // The server answers; its console is in `logs`.
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, logs, _) = uk_output(&["logs", &name]);
        if logs.contains("httpd: serving") {
            break;
        }
        assert!(Instant::now() < end, "httpd never served:\n{logs}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(http_get_status(port).ends_with("200"));
    // The access log line follows the response.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, logs, _) = uk_output(&["logs", &name]);
        if logs.contains("\"GET / HTTP/1.1\" 200") {
            break;
        }
        assert!(Instant::now() < end, "no access log line:\n{logs}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A second VM with the same name is refused.
    let (code, _, err) = uk_output(&["run", "-d", "--name", &name, "--fwd", "1:80", "hello"]);
    assert_ne!(code, 0, "{err}");
    // `logs -f` follows the console until the VM stops.
    let mut follow = Cli::spawn(&["logs", &name, "-f"]);
    follow.wait_for("httpd: serving", Duration::from_secs(30));
    // stop: the power button; httpd, with no connection left, powers off.
    let (code, _, err) = uk_output(&["stop", &name, "--timeout", "60"]);
    assert_eq!(code, 0, "{err}");
    assert!(follow.wait_exit(Duration::from_secs(10)).success());
    assert!(err.contains("powered off (ACPI power button)"), "{err}");
    let (_, ps, _) = uk_output(&["ps"]);
    assert!(!ps.contains(&name), "{ps}");
    assert!(port_freed(port, Duration::from_secs(10)));
    let (code, _, err) = uk_output(&["logs", &name]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn help_version_and_usage_errors() {
    let (code, out, _) = uk_output(&["run", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--detach") && out.contains("Exit status"),
        "{out}"
    );
    let (code, out, _) = uk_output(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("uk "), "{out}");
    let (code, _, err) = uk_output(&["biuld"]);
    assert_eq!(code, 2);
    assert!(err.contains("build"), "{err}");
    let (code, out, _) = uk_output(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(out.contains("complete"), "{out}");
}

/// `GET path` with `Connection: close`: status, header block, body.
fn http_get(port: u16, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head[9..12].parse().expect("status");
    (status, head.to_string(), body.to_string())
}

#[test]
fn site_settings_from_uk_toml() {
    let site = uk_cli::image::temp_path("toml-site");
    std::fs::create_dir_all(site.join("docs")).unwrap();
    std::fs::create_dir_all(site.join("assets")).unwrap();
    std::fs::write(site.join("index.html"), "home\n").unwrap();
    std::fs::write(site.join("404.html"), "<p>custom not found</p>\n").unwrap();
    std::fs::write(site.join("docs/a.txt"), "a\n").unwrap();
    std::fs::write(site.join("assets/app.css"), "body{}\n").unwrap();
    // A bad file is refused before anything boots, naming the line.
    std::fs::write(
        site.join("uk.toml"),
        "listing = true\n[errors]\n404 = \"404.html\"\n",
    )
    .unwrap();
    let dir = site.display().to_string();
    let (code, _, err) = uk_output(&["run", "-d", "--site", &dir, "--fwd", "1:80"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("uk.toml:3: errors:"), "{err}");
    std::fs::write(
        site.join("uk.toml"),
        r#"listing = true

[headers]
"X-Site" = "uk-test"

[errors]
404 = "/404.html"

[[cache]]
path = "/assets/*"
value = "max-age=60"

[[redirects]]
from = "/old"
to = "/new/"
"#,
    )
    .unwrap();
    let port = free_port();
    let name = format!("toml-{}", std::process::id());
    let fwd = format!("{port}:80");
    let _guard = StopOnDrop(name.clone());
    let (code, out, err) = uk_output(&[
        "run", "-d", "--name", &name, "--site", &dir, "--fwd", &fwd, "--tcg",
    ]);
    let _ = std::fs::remove_dir_all(&site);
    assert_eq!(code, 0, "{out}{err}");
    let end = Instant::now() + Duration::from_secs(120);
    while !uk_output(&["logs", &name]).1.contains("httpd: serving") {
        assert!(Instant::now() < end, "httpd never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = std::panic::catch_unwind(|| {
        let (s, head, body) = http_get(port, "/");
        assert_eq!((s, body.as_str()), (200, "home\n"), "{head}");
        assert!(head.contains("X-Site: uk-test"), "{head}");
        let (s, head, _) = http_get(port, "/assets/app.css");
        assert_eq!(s, 200);
        assert!(head.contains("Cache-Control: max-age=60"), "{head}");
        let (s, head, _) = http_get(port, "/old");
        assert_eq!(s, 301, "{head}");
        assert!(head.contains("Location: /new/"), "{head}");
        let (s, head, body) = http_get(port, "/missing");
        assert_eq!(s, 404, "{head}");
        assert_eq!(body, "<p>custom not found</p>\n");
        assert!(head.contains("X-Site: uk-test"), "{head}");
        // The settings are not served.
        assert_eq!(http_get(port, "/uk.toml").0, 404);
        let (s, head, body) = http_get(port, "/docs/");
        assert_eq!(s, 200, "{head}");
        assert!(body.contains("<a href=\"a.txt\">a.txt</a>"), "{body}");
    });
    if result.is_err() {
        eprintln!("{}", uk_output(&["logs", &name]).1);
    }
    let (code, _, err) = uk_output(&["stop", &name, "--timeout", "1"]);
    assert_eq!(code, 0, "{err}");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// `run --state-disk FILE`: a missing FILE is made and the TLS kernel
/// mounts it writable at /state, with what the host wrote on it; a file
/// that is not a state disk is refused (exit 2) and left as it was.
#[test]
fn state_disk_made_mounted_and_refused() {
    let dir = uk_cli::image::temp_path("cli-state-disk");
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.img");
    let state_arg = state.display().to_string();
    let port = free_port();
    let fwd = format!("{port}:80");
    let run = [
        "run",
        "--tls",
        "--state-disk",
        &state_arg,
        "--fwd",
        &fwd,
        "--tcg",
    ];
    let mut cli = Cli::spawn(&run);
    cli.wait_for("httpd: serving", Duration::from_secs(600));
    let out = cli.output();
    assert!(out.contains("uk: made the state disk"), "{out}");
    assert!(
        out.contains("at /state (generation 1, 4 of 523744 bytes used)"),
        "{out}"
    );
    cli.child.kill().unwrap();
    cli.wait_exit(Duration::from_secs(10));
    drop(cli);
    // What the host writes, the guest finds (generation 2 the directory, 3
    // the file with its contents).
    uk_cli::statedisk::write_file(&state, "acme/x.pem", b"kept").unwrap();
    let mut cli = Cli::spawn(&run);
    cli.wait_for("httpd: serving", Duration::from_secs(300));
    let out = cli.output();
    assert!(out.contains("uk: state disk "), "{out}");
    assert!(out.contains("1 file(s): acme/x.pem"), "{out}");
    assert!(out.contains("at /state (generation 3,"), "{out}");
    cli.child.kill().unwrap();
    cli.wait_exit(Duration::from_secs(10));
    drop(cli);
    // Not a state disk: refused before anything boots, untouched.
    let other = dir.join("other.img");
    std::fs::write(&other, vec![0u8; 65536]).unwrap();
    let (code, _, err) = uk_output(&[
        "run",
        "--tls",
        "--state-disk",
        &other.display().to_string(),
        "--tcg",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a state disk"), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), vec![0u8; 65536]);
    std::fs::remove_dir_all(&dir).unwrap();
}
