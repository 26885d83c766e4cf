//! Background VMs: `cargo uk run -d`, `ps`, `logs`, `stop`.
//!
//! Each VM started with `run -d` lives in its own session (no terminal
//! signal reaches it) and keeps its state in one folder,
//! `target/uk-vms/NAME/`:
//!
//! | file | what |
//! | --- | --- |
//! | `vm.json` | name, app, QEMU pid, forwards, memory, machine, start time, QEMU command |
//! | `console.log` | the serial console (QEMU's stdout and stderr) |
//! | `qmp.sock` | the QEMU monitor (QMP), for `system_powerdown` |
//! | `disk.img` | the site's ext4 image, when the app has one |
//!
//! `stop` presses the ACPI power button through QMP (httpd then finishes
//! its responses and powers off), waits (15 s by default) for QEMU to exit, then sends SIGTERM and, 3 s later, SIGKILL,
//! and removes the folder. `ps` shows VMs whose QEMU has exited as
//! `exited`; `stop` removes those too.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::qemu::{PortFwd, VmConfig, qemu_command, render_command};

/// The folder every background VM's state lives in.
pub fn state_root() -> PathBuf {
    crate::target_dir().join("uk-vms")
}

/// What `vm.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// The VM's name.
    pub name: String,
    /// The app it runs.
    pub app: String,
    /// QEMU's process id.
    pub pid: i32,
    /// `HOST:GUEST` forwards from 127.0.0.1.
    pub ports: Vec<String>,
    /// Guest memory (QEMU's `-m`).
    pub mem: String,
    /// The machine type.
    pub machine: String,
    /// Start time, seconds since the Unix epoch.
    pub started: u64,
    /// The QEMU command line.
    pub command: String,
}

/// Whether `name` is a usable VM name (a folder name, no surprises).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The first `APP-N` (N from 1) not in `taken`.
pub fn next_name(app: &str, taken: &[String]) -> String {
    (1..)
        .map(|n| format!("{app}-{n}"))
        .find(|n| !taken.contains(n))
        .expect("a free name")
}

/// `1h02m`, `3m05s`, `42s`, `2d03h`.
pub fn format_uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn fail(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Failed(format!("{what}: {e}"))
}

/// The record of the VM in `dir`.
fn read_record(dir: &Path) -> Option<VmRecord> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("vm.json")).ok()?).ok()
}

/// Whether the VM's QEMU still runs: its pid is alive and its command line
/// names this VM's monitor socket (not a recycled pid).
pub fn running(dir: &Path, rec: &VmRecord) -> bool {
    crate::proc::alive(rec.pid)
        && crate::proc::cmdline(rec.pid).is_some_and(|c| {
            c.contains(crate::QEMU) && c.contains(&dir.join("qmp.sock").display().to_string())
        })
}

/// Every VM folder with its record, sorted by name.
fn all() -> Vec<(PathBuf, VmRecord)> {
    let mut v: Vec<(PathBuf, VmRecord)> = std::fs::read_dir(state_root())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| read_record(&e.path()).map(|r| (e.path(), r)))
        .collect();
    v.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    v
}

fn find(name: &str) -> Result<(PathBuf, VmRecord), Error> {
    let dir = state_root().join(name);
    if !valid_name(name) {
        return Err(Error::Usage(format!("bad VM name '{name}'")));
    }
    read_record(&dir)
        .map(|r| (dir, r))
        .ok_or_else(|| Error::Failed(format!("no VM named '{name}' (see 'cargo uk ps')")))
}

/// `cargo uk run -d`: starts `cfg` (with the site `site` and `files`
/// packed into the VM's folder) in the background, waits for the kernel's `uk: main`
/// marker, prints the VM's name and returns.
pub fn start(
    app: &str,
    name: Option<&str>,
    mut cfg: VmConfig,
    site: Option<&Path>,
    files: &[(std::path::PathBuf, String)],
    verbose: bool,
) -> Result<i32, Error> {
    let root = state_root();
    std::fs::create_dir_all(&root).map_err(|e| fail(root.display(), e))?;
    let vms = all();
    let name = match name {
        Some(n) if !valid_name(n) => {
            return Err(Error::Usage(format!(
                "bad VM name '{n}': letters, digits, '-', '_' and '.' only"
            )));
        }
        Some(n) => n.to_string(),
        None => next_name(
            app,
            &vms.iter().map(|v| v.1.name.clone()).collect::<Vec<_>>(),
        ),
    };
    let dir = root.join(&name);
    if let Some((d, r)) = vms.iter().find(|v| v.1.name == name)
        && running(d, r)
    {
        return Err(Error::Failed(format!(
            "a VM named '{name}' is running (cargo uk stop {name})"
        )));
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| fail(dir.display(), e))?;
    // A forward whose port is taken would make QEMU fail: say so first.
    for f in &cfg.fwds {
        if std::net::TcpListener::bind(("127.0.0.1", f.host)).is_err() {
            return Err(Error::Failed(format!(
                "127.0.0.1:{} is in use (another VM? 'cargo uk ps'); pick another with --fwd PORT:{}",
                f.host, f.guest
            )));
        }
    }
    if let Some(site) = site {
        let disk = dir.join("disk.img");
        crate::progress::step(
            &format!("packing {} into {}", site.display(), disk.display()),
            || crate::image::build_image_with(site, &disk, crate::ImageFormat::Ext4, files),
        )?;
        cfg.disk = Some(disk);
    }
    let log_path = dir.join("console.log");
    let log = std::fs::File::create(&log_path).map_err(|e| fail(log_path.display(), e))?;
    let log2 = log.try_clone().map_err(|e| fail(log_path.display(), e))?;
    let mut cmd = qemu_command(&cfg);
    cmd.arg("-qmp").arg(format!(
        "unix:{},server=on,wait=off",
        dir.join("qmp.sock").display()
    ));
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    crate::proc::detach(&mut cmd);
    let command = render_command(&cmd);
    if verbose {
        eprintln!("{command}");
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::Failed(format!("cannot start {}: {e}", crate::QEMU)))?;
    let rec = VmRecord {
        name: name.clone(),
        app: app.to_string(),
        pid: child.id() as i32,
        ports: cfg
            .fwds
            .iter()
            .map(|f| format!("{}:{}", f.host, f.guest))
            .collect(),
        mem: cfg.mem.to_qemu(),
        machine: cfg.machine.to_string(),
        started: now(),
        command,
    };
    let json = serde_json::to_string_pretty(&rec).map_err(|e| fail("vm.json", e))?;
    std::fs::write(dir.join("vm.json"), json + "\n").map_err(|e| fail("vm.json", e))?;
    // Up when the kernel reaches main; a QEMU that exits first failed.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("uk: main after") {
            break;
        }
        if !crate::proc::alive(rec.pid) {
            return Err(Error::Failed(format!(
                "VM '{name}' exited while booting; its console:\n{}",
                tail(&text, 20)
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::Failed(format!(
                "VM '{name}' did not boot within 120 s (still running: 'cargo uk logs {name}', \
                 'cargo uk stop {name}')"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for f in &cfg.fwds {
        eprintln!(
            "uk: {name}: 127.0.0.1:{} -> guest port {}{}",
            f.host,
            f.guest,
            match f.guest {
                80 => format!(" (http://127.0.0.1:{}/)", f.host),
                // HTTPS files on the disk: the TLS image serves 443.
                443 if !files.is_empty() => format!(" (https://localhost:{}/)", f.host),
                _ => String::new(),
            }
        );
    }
    eprintln!("uk: {name} runs in the background: cargo uk logs {name} / cargo uk stop {name}");
    println!("{name}");
    Ok(0)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `cargo uk ps`
pub fn ps() -> Result<i32, Error> {
    let mut rows = vec![[
        "NAME".to_string(),
        "APP".into(),
        "PORTS".into(),
        "MEMORY".into(),
        "UPTIME".into(),
        "STATUS".into(),
    ]];
    for (dir, r) in all() {
        let up = running(&dir, &r);
        rows.push([
            r.name.clone(),
            r.app.clone(),
            if r.ports.is_empty() {
                "-".into()
            } else {
                r.ports
                    .iter()
                    .map(|p| format!("127.0.0.1:{}", p.replacen(':', "->", 1)))
                    .collect::<Vec<_>>()
                    .join(",")
            },
            r.mem.clone(),
            if up {
                format_uptime(now().saturating_sub(r.started))
            } else {
                "-".into()
            },
            if up {
                format!("running (pid {})", r.pid)
            } else {
                "exited".into()
            },
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(0)
}

/// `cargo uk logs NAME [-f]`
pub fn logs(name: &str, follow: bool) -> Result<i32, Error> {
    let (dir, rec) = find(name)?;
    let path = dir.join("console.log");
    let mut f = std::fs::File::open(&path).map_err(|e| fail(path.display(), e))?;
    let mut out = std::io::stdout();
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| fail(path.display(), e))?;
    out.write_all(&buf).map_err(|e| fail("stdout", e))?;
    out.flush().map_err(|e| fail("stdout", e))?;
    if !follow {
        return Ok(0);
    }
    let mut pos = buf.len() as u64;
    loop {
        let up = running(&dir, &rec);
        buf.clear();
        f.seek(SeekFrom::Start(pos))
            .and_then(|_| f.read_to_end(&mut buf))
            .map_err(|e| fail(path.display(), e))?;
        pos += buf.len() as u64;
        if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
            // The reader went away (| head).
            return Ok(0);
        }
        if !up {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Presses the ACPI power button through the QMP socket at `sock`.
pub fn qmp_powerdown(sock: &Path) -> Result<(), String> {
    qmp_execute(sock, &[r#"{"execute":"system_powerdown"}"#]).map(|_| ())
}

/// Runs QMP commands (each a complete JSON object) through the socket at
/// `sock`, after the capabilities handshake; returns each command's
/// `"return"` line. An `"error"` answer is an error.
pub fn qmp_execute(sock: &Path, commands: &[&str]) -> Result<Vec<String>, String> {
    let s = UnixStream::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    // The greeting, then one answer per command (events may come between).
    r.read_line(&mut line).map_err(|e| format!("QMP: {e}"))?;
    let mut answers = Vec::new();
    let all = std::iter::once(r#"{"execute":"qmp_capabilities"}"#).chain(commands.iter().copied());
    for (i, c) in all.enumerate() {
        writeln!(w, "{c}").map_err(|e| format!("QMP: {e}"))?;
        loop {
            line.clear();
            if r.read_line(&mut line).map_err(|e| format!("QMP: {e}"))? == 0 {
                return Err("QMP: connection closed".into());
            }
            if line.contains("\"error\"") {
                return Err(format!("QMP {c}: {}", line.trim()));
            }
            if line.contains("\"return\"") {
                if i > 0 {
                    answers.push(line.trim().to_string());
                }
                break;
            }
        }
    }
    Ok(answers)
}

fn wait_gone(dir: &Path, rec: &VmRecord, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if !running(dir, rec) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !running(dir, rec)
}

/// `cargo uk stop NAME`: the power button, then SIGTERM and SIGKILL.
pub fn stop(name: &str, timeout: Duration) -> Result<i32, Error> {
    let (dir, rec) = find(name)?;
    if !running(&dir, &rec) {
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("uk: {name} had already exited; removed {}", dir.display());
        return Ok(0);
    }
    let how = match qmp_powerdown(&dir.join("qmp.sock")) {
        Ok(()) => {
            eprintln!(
                "uk: {name}: pressed the ACPI power button; waiting up to {} s",
                timeout.as_secs()
            );
            if wait_gone(&dir, &rec, timeout) {
                "powered off (ACPI power button)".to_string()
            } else {
                "did not power off in time: killed QEMU".into()
            }
        }
        // A guest with nothing to finish can power off before QEMU has
        // answered: the monitor's socket then closes under us. Gone soon
        // after, it was the power button.
        Err(_) if wait_gone(&dir, &rec, Duration::from_secs(2)) => {
            "powered off (ACPI power button)".to_string()
        }
        Err(e) => format!("monitor unusable ({e}): killed QEMU"),
    };
    if running(&dir, &rec) {
        crate::proc::kill(rec.pid, libc::SIGTERM);
        if !wait_gone(&dir, &rec, Duration::from_secs(3)) {
            crate::proc::kill(rec.pid, libc::SIGKILL);
            if !wait_gone(&dir, &rec, Duration::from_secs(3)) {
                return Err(Error::Failed(format!(
                    "{name}: QEMU (pid {}) survived SIGKILL",
                    rec.pid
                )));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("uk: {name} {how}");
    Ok(0)
}

/// The forwards of a record, parsed back.
pub fn record_fwds(rec: &VmRecord) -> Vec<PortFwd> {
    rec.ports.iter().filter_map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("httpd-1"));
        assert!(valid_name("web_2.a"));
        assert!(!valid_name(""));
        assert!(!valid_name("../x"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a/b"));
        assert_eq!(next_name("httpd", &[]), "httpd-1");
        assert_eq!(
            next_name("httpd", &["httpd-1".into(), "httpd-3".into()]),
            "httpd-2"
        );
    }

    #[test]
    fn uptimes() {
        assert_eq!(format_uptime(42), "42s");
        assert_eq!(format_uptime(185), "3m05s");
        assert_eq!(format_uptime(3720), "1h02m");
        assert_eq!(format_uptime(2 * 86_400 + 3 * 3600), "2d03h");
    }

    #[test]
    fn records_round_trip() {
        let r = VmRecord {
            name: "httpd-1".into(),
            app: "httpd".into(),
            pid: 42,
            ports: vec!["8080:80".into()],
            mem: "64M".into(),
            machine: "microvm".into(),
            started: 1,
            command: "qemu-system-x86_64 ...".into(),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<VmRecord>(&s).unwrap(), r);
        assert_eq!(
            record_fwds(&r),
            [PortFwd {
                host: 8080,
                guest: 80
            }]
        );
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
