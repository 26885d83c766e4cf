//! QEMU test harness: build app images once per test process, boot them,
//! wait for serial markers (never with fixed sleeps), map exit statuses.
//!
//! ```no_run
//! use std::time::Duration;
//! use uk_tests::{BootOpts, Guest, Machine};
//!
//! let mut g = Guest::boot("selftest", Machine::Q35, BootOpts::args(&["exit", "7"]));
//! g.wait_for("uk: main", Duration::from_secs(60)).unwrap();
//! assert_eq!(g.wait_exit(Duration::from_secs(60)), Ok(7));
//! ```
//!
//! Every test file gets both machines with [`machine_tests!`]. Set
//! `UK_TEST_ECHO=1` to copy each guest's serial lines to stderr as they come
//! (libtest shows them for failing tests, or with `--nocapture`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use uk_cli::qemu::map_exit_status;
pub use uk_cli::{Accel, DiskBus, Exit, Firmware, Machine, MemSize, PortFwd, Profile, VmConfig};
pub use uk_cli::{parse_kv, parse_main_marker, parse_memstats};

/// A generous time for a TCG guest to boot and reach a marker.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// A generous time for a TCG guest to run to its exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Kernel status for a panic.
pub const STATUS_PANIC: i32 = uk_cli::qemu::STATUS_PANIC;
/// Kernel status for a fatal CPU exception.
pub const STATUS_EXCEPTION: i32 = uk_cli::qemu::STATUS_EXCEPTION;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not poison the state for the others.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds `app` (release profile) once per test process and returns its
/// image. Builds are serialized; a failed build panics, with cargo's
/// output, in every test that asks for that app.
pub fn image(app: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let result = {
        let mut built = lock(BUILT.get_or_init(Default::default));
        built
            .entry(app.to_string())
            .or_insert_with(|| {
                uk_cli::build_image(app, Profile::Release, true).map_err(|e| e.to_string())
            })
            .clone()
    };
    result.unwrap_or_else(|e| panic!("cannot build app '{app}':\n{e}"))
}

/// Builds `app` in `flavor` (release profile) once per test process and
/// returns its image (as [`image`]; flavours build into their own target
/// directories).
pub fn image_flavor(app: &str, flavor: uk_cli::Flavor) -> PathBuf {
    type Built = HashMap<(String, uk_cli::Flavor), Result<PathBuf, String>>;
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let result = {
        let mut built = lock(BUILT.get_or_init(Default::default));
        built
            .entry((app.to_string(), flavor))
            .or_insert_with(|| {
                uk_cli::build_image_flavor(app, Profile::Release, flavor, true)
                    .map_err(|e| e.to_string())
            })
            .clone()
    };
    result.unwrap_or_else(|e| panic!("cannot build app '{app}' ({flavor:?}):\n{e}"))
}

/// Builds (once per test process and app) a bootable raw disk image of
/// `app` with the folder `site` (`cargo uk image APP --site SITE --format
/// raw`) and returns its path. Installs the image tools when root.
pub fn boot_disk_image(app: &str, site: &std::path::Path) -> PathBuf {
    type Built = HashMap<(String, PathBuf), Result<PathBuf, String>>;
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let kernel = image(app);
    let mut built = lock(BUILT.get_or_init(Default::default));
    built
        .entry((app.to_string(), site.to_path_buf()))
        .or_insert_with(|| {
            let out = uk_cli::image::temp_path(&format!("boot-{app}")).with_extension("raw");
            if let Some(p) = out.parent() {
                std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
            }
            let cmdline = uk_cli::bootdisk::disk_cmdline("", &[]);
            uk_cli::bootdisk::build(uk_cli::ImageFormat::Raw, &kernel, site, &[], &cmdline, &out)
                .map(|_| out)
                .map_err(|e| e.to_string())
        })
        .clone()
        .unwrap_or_else(|e| panic!("cannot build the boot disk of '{app}':\n{e}"))
}

/// A free TCP port on 127.0.0.1 (bound, read and released; for forwards).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind 127.0.0.1:0")
}

/// How to boot a guest. `BootOpts::default()` is 64M, no kernel options, no
/// app args, no network, the detected accelerator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOpts {
    /// Guest memory, as for `--mem` (`64M`, `512K`, `1G`, plain = MiB).
    pub mem: String,
    /// Kernel options (`k=v ...`).
    pub append: String,
    /// App arguments.
    pub args: Vec<String>,
    /// `(host, guest)` TCP forwards; host ports bind 127.0.0.1 only.
    pub fwds: Vec<(u16, u16)>,
    /// Force an accelerator; `None` detects (TCG unless vmx/svm + /dev/kvm).
    pub accel: Option<Accel>,
    /// Virtual CPUs (`-smp`).
    pub smp: u32,
    /// Add a network device even without forwards.
    pub net: bool,
    /// Attach the network device to this TAP interface (see [`Netns`]).
    pub tap: Option<String>,
    /// Queue pairs of the TAP device (more than one: multiqueue on q35;
    /// the TAP interface must be `multi_queue`, see [`Netns::with_queues`]).
    pub queues: u32,
    /// Run QEMU inside this network namespace.
    pub netns: Option<String>,
    /// Attach the network device to a UDP relay on 127.0.0.1 (QEMU's port,
    /// the relay's port) instead (see [`Netns::relay_boot_opts`]).
    pub dgram: Option<(u16, u16)>,
    /// A raw disk image attached read-only as virtio-blk (the root fs).
    pub disk: Option<PathBuf>,
    /// Boot `disk` (a bootable image from [`boot_disk_image`]) through this
    /// firmware on q35, without `-kernel`; `append`/`args` are not used
    /// (the command line is in the image).
    pub firmware: Option<uk_cli::Firmware>,
    /// Firecracker-style start on microvm: virtio-mmio devices announced on
    /// the command line, no isa-debug-exit (the i8042 reset ends the VM).
    pub firecracker: bool,
    /// The bus `disk` is attached on (virtio-blk by default).
    pub disk_bus: DiskBus,
    /// Give QEMU a QMP socket, for [`Guest::qmp`] (`system_powerdown`,
    /// `send-key`).
    pub qmp: bool,
    /// A state disk (writable virtio-blk, `cargo uk run --state-disk`).
    pub state_disk: Option<PathBuf>,
}

impl Default for BootOpts {
    fn default() -> Self {
        BootOpts {
            mem: "64M".to_string(),
            append: String::new(),
            args: Vec::new(),
            fwds: Vec::new(),
            accel: None,
            smp: 1,
            net: false,
            tap: None,
            queues: 1,
            netns: None,
            dgram: None,
            disk: None,
            firmware: None,
            firecracker: false,
            disk_bus: DiskBus::Blk,
            qmp: false,
            state_disk: None,
        }
    }
}

impl BootOpts {
    /// Defaults with these app arguments.
    pub fn args(args: &[&str]) -> BootOpts {
        BootOpts {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..BootOpts::default()
        }
    }

    /// Sets the kernel options.
    pub fn append(mut self, options: &str) -> BootOpts {
        self.append = options.to_string();
        self
    }

    /// With a network device of `pairs` queue pairs (multiqueue on q35
    /// when more than one; the TAP must be `multi_queue`).
    pub fn queues(mut self, pairs: u32) -> BootOpts {
        self.queues = pairs;
        self
    }

    /// With this many virtual CPUs.
    pub fn smp(mut self, cpus: u32) -> BootOpts {
        self.smp = cpus;
        self
    }

    /// Sets the memory size.
    pub fn mem(mut self, mem: &str) -> BootOpts {
        self.mem = mem.to_string();
        self
    }

    /// Attaches a raw disk image (read-only virtio-blk, the root fs).
    pub fn disk(mut self, image: impl Into<PathBuf>) -> BootOpts {
        self.disk = Some(image.into());
        self
    }

    /// Attaches the state disk `file` (writable virtio-blk).
    pub fn state_disk(mut self, file: impl Into<PathBuf>) -> BootOpts {
        self.state_disk = Some(file.into());
        self
    }

    /// Boots the bootable disk `image` through `fw` (q35, no `-kernel`).
    pub fn firmware(mut self, fw: uk_cli::Firmware, image: impl Into<PathBuf>) -> BootOpts {
        self.firmware = Some(fw);
        self.disk = Some(image.into());
        self
    }

    /// Attaches the disk on `bus` (virtio-scsi, NVMe) instead of virtio-blk.
    pub fn disk_bus(mut self, bus: DiskBus) -> BootOpts {
        self.disk_bus = bus;
        self
    }

    /// Starts the guest Firecracker style (see [`BootOpts::firecracker`]).
    pub fn firecracker(mut self) -> BootOpts {
        self.firecracker = true;
        self
    }

    /// Gives QEMU a QMP socket (see [`Guest::qmp`]).
    pub fn qmp(mut self) -> BootOpts {
        self.qmp = true;
        self
    }

    /// Adds a forward from 127.0.0.1:`host` to guest port `guest`.
    pub fn fwd(mut self, host: u16, guest: u16) -> BootOpts {
        self.fwds.push((host, guest));
        self
    }
}

#[derive(Default)]
struct State {
    lines: Vec<String>,
    /// An unterminated last line.
    partial: String,
    stdout_eof: bool,
    stderr: String,
    stderr_eof: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    /// Waits on the condvar until `done` gives a value or `deadline` passes.
    fn wait_until<T>(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&State) -> Option<T>,
    ) -> Result<T, MutexGuard<'_, State>> {
        let mut st = lock(&self.state);
        loop {
            if let Some(v) = done(&st) {
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(st);
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A running QEMU guest. A reader thread collects serial (stdout) lines;
/// dropping the guest kills QEMU.
pub struct Guest {
    app: String,
    machine: Machine,
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    shared: Arc<Shared>,
    exit: Option<Exit>,
    started: Instant,
    /// The QMP socket, when booted with [`BootOpts::qmp`].
    qmp: Option<PathBuf>,
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest")
            .field("app", &self.app)
            .field("machine", &self.machine)
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

fn spawn_reader(
    shared: Arc<Shared>,
    stream: impl Read + Send + 'static,
    echo: Option<String>,
    is_stdout: bool,
) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = r.read_until(b'\n', &mut buf).unwrap_or(0);
            let mut st = lock(&shared.state);
            if n == 0 {
                if is_stdout {
                    st.stdout_eof = true;
                } else {
                    st.stderr_eof = true;
                }
                drop(st);
                shared.changed.notify_all();
                return;
            }
            let text = String::from_utf8_lossy(&buf);
            if !is_stdout {
                st.stderr.push_str(&text);
            } else if let Some(line) = text.strip_suffix('\n') {
                let mut line = std::mem::take(&mut st.partial) + line;
                if line.ends_with('\r') {
                    line.pop();
                }
                if let Some(tag) = &echo {
                    eprintln!("[{tag}] {line}");
                }
                st.lines.push(line);
            } else {
                st.partial.push_str(&text);
            }
            drop(st);
            shared.changed.notify_all();
        }
    });
}

/// User + system CPU time a process has used so far, from /proc (Linux).
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: fields after it follow ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux x86_64 build.
    Some(Duration::from_millis((utime + stime) * 10))
}

impl Guest {
    /// The QEMU process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Builds (once) and boots `app` on `machine`. Panics if the build fails,
    /// an option is invalid or QEMU cannot start.
    pub fn boot(app: &str, machine: Machine, opts: BootOpts) -> Guest {
        Guest::boot_image(app, image(app), machine, opts)
    }

    /// Boots a given image as `app` (the name selects the app defaults,
    /// such as networking for [`uk_cli::NET_APPS`], and labels reports).
    pub fn boot_image(app: &str, image: PathBuf, machine: Machine, opts: BootOpts) -> Guest {
        assert!(
            uk_cli::qemu_available(),
            "{} (or run the QEMU tests through 'cargo uk test')",
            uk_cli::QEMU_MISSING
        );
        let mem: MemSize = opts.mem.parse().unwrap_or_else(|e| panic!("{e}"));
        let (firmware, firecracker, want_qmp) = (opts.firmware, opts.firecracker, opts.qmp);
        let mut cfg = VmConfig {
            image,
            machine,
            mem,
            accel: opts.accel.unwrap_or_else(|| *detected_accel()),
            smp: opts.smp,
            append: opts.append,
            args: opts.args,
            fwds: opts
                .fwds
                .iter()
                .map(|&(host, guest)| PortFwd { host, guest })
                .collect(),
            net: opts.net,
            tap: opts.tap,
            queues: opts.queues,
            netns: opts.netns,
            dgram: opts.dgram,
            disk: opts.disk,
            disk_bus: opts.disk_bus,
            state_disk: opts.state_disk,
        };
        cfg.apply_app_defaults(app);
        let mut cmd = match firmware {
            Some(fw) => {
                uk_cli::bootdisk::ensure_ovmf().unwrap_or_else(|e| panic!("{e}"));
                uk_cli::disk_boot_command(&cfg, fw)
            }
            None if firecracker => uk_cli::firecracker_style_command(&cfg),
            None => uk_cli::qemu_command(&cfg),
        };
        let qmp = want_qmp.then(|| {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("uk-test-qmp-{}-{n}.sock", std::process::id()));
            let _ = std::fs::remove_file(&path);
            cmd.arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", path.display()));
            path
        });
        let command = uk_cli::render_command(&cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start QEMU: {e}\ncommand: {command}"));
        let shared = Arc::new(Shared::default());
        let echo = std::env::var_os("UK_TEST_ECHO").map(|_| format!("{app}/{machine}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        spawn_reader(shared.clone(), stdout, echo, true);
        spawn_reader(shared.clone(), stderr, None, false);
        Guest {
            app: app.to_string(),
            machine,
            command,
            stdin: child.stdin.take(),
            child,
            shared,
            exit: None,
            started,
            qmp,
        }
    }

    /// Runs QMP commands (complete JSON objects, e.g.
    /// `{"execute":"system_powerdown"}`) on a guest booted with
    /// [`BootOpts::qmp`]; returns each command's answer line.
    pub fn qmp(&self, commands: &[&str]) -> Result<Vec<String>, String> {
        let sock = self
            .qmp
            .as_ref()
            .ok_or("the guest was booted without BootOpts::qmp")?;
        uk_cli::vms::qmp_execute(sock, commands)
    }

    /// Presses the ACPI power button (QMP `system_powerdown`).
    pub fn powerdown(&self) -> Result<(), String> {
        self.qmp(&[r#"{"execute":"system_powerdown"}"#]).map(|_| ())
    }

    /// Presses Ctrl+Alt+Del on the guest's keyboard (QMP `send-key`).
    pub fn ctrl_alt_del(&self) -> Result<(), String> {
        self.qmp(&[concat!(
            r#"{"execute":"send-key","arguments":{"keys":["#,
            r#"{"type":"qcode","data":"ctrl"},{"type":"qcode","data":"alt"},"#,
            r#"{"type":"qcode","data":"delete"}]}}"#
        )])
        .map(|_| ())
    }

    /// The app name.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The machine type.
    pub fn machine(&self) -> Machine {
        self.machine
    }

    /// The QEMU command line, shell-quoted.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Time since QEMU was spawned.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// All serial output so far (complete lines, then any partial line).
    pub fn output(&self) -> String {
        let st = lock(&self.shared.state);
        let mut out = st.lines.join("\n");
        if !st.lines.is_empty() {
            out.push('\n');
        }
        out.push_str(&st.partial);
        out
    }

    /// The complete serial lines so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.shared.state).lines.clone()
    }

    /// The number of complete lines so far: pass it to
    /// [`Guest::wait_for_from`] to wait for something that comes later.
    pub fn mark(&self) -> usize {
        lock(&self.shared.state).lines.len()
    }

    /// Waits for the first line containing `needle` and returns it. The error
    /// tells why (timeout or QEMU exit) and holds all output so far.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.wait_for_from(needle, 0, timeout)
    }

    /// Like [`Guest::wait_for`], looking only at lines from index `from`
    /// (see [`Guest::mark`]). An unterminated last line also matches (for
    /// prompts).
    pub fn wait_for_from(
        &self,
        needle: &str,
        from: usize,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let res = self.shared.wait_until(deadline, |st| {
            if let Some(l) = st.lines.iter().skip(from).find(|l| l.contains(needle)) {
                return Some(Ok(l.clone()));
            }
            if st.partial.contains(needle) {
                return Some(Ok(st.partial.clone()));
            }
            st.stdout_eof.then_some(Err(()))
        });
        match res {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(())) => Err(self.failure(&format!("QEMU exited before printing '{needle}'"))),
            Err(st) => {
                drop(st);
                Err(self.failure(&format!(
                    "timed out after {timeout:?} waiting for '{needle}'"
                )))
            }
        }
    }

    /// Waits for a line containing `needle` and parses its integer `k=v`
    /// words (e.g. `heapgrow: arenas=3` gives `{"arenas": 3}`).
    pub fn wait_kv(&self, needle: &str, timeout: Duration) -> Result<HashMap<String, u64>, String> {
        self.wait_for(needle, timeout).map(|l| parse_kv(&l))
    }

    /// The last memory statistics line tagged `tag` (`TAG memstats: k=v ...`;
    /// an empty tag takes any `memstats:` line), parsed.
    pub fn memstats(&self, tag: &str) -> Option<HashMap<String, u64>> {
        let needle = memstats_needle(tag);
        let st = lock(&self.shared.state);
        st.lines
            .iter()
            .rev()
            .find(|l| l.contains(&needle))
            .and_then(|l| parse_memstats(l))
    }

    /// Waits for the first memory statistics line tagged `tag`, parsed.
    pub fn wait_memstats(
        &self,
        tag: &str,
        timeout: Duration,
    ) -> Result<HashMap<String, u64>, String> {
        let line = self.wait_for(&memstats_needle(tag), timeout)?;
        parse_memstats(&line).ok_or_else(|| format!("not a memstats line: {line}"))
    }

    /// Writes bytes to the guest's serial input.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().ok_or(std::io::ErrorKind::BrokenPipe)?;
        stdin.write_all(bytes)?;
        stdin.flush()
    }

    /// Waits for QEMU to exit and returns the app's status (isa-debug-exit
    /// status, or 0 for a clean power-off). QEMU failing by itself, being
    /// killed, or the timeout passing is an error holding all output.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<i32, String> {
        let exit = match self.exit {
            Some(e) => e,
            None => {
                let deadline = Instant::now() + timeout;
                // QEMU closes its stdout only by exiting.
                if self
                    .shared
                    .wait_until(deadline, |st| st.stdout_eof.then_some(()))
                    .is_err()
                {
                    return Err(self.failure(&format!(
                        "timed out after {timeout:?} waiting for QEMU to exit"
                    )));
                }
                let status = self
                    .child
                    .wait()
                    .map_err(|e| self.failure(&format!("waiting for QEMU failed: {e}")))?;
                let e = map_exit_status(status);
                self.exit = Some(e);
                // QEMU's own startup errors exit with 1, which reads as
                // status 0: a guest that printed nothing never ran.
                if status.code() == Some(1) && self.output().is_empty() {
                    return Err(self.failure(
                        "QEMU exited with code 1 before the guest printed anything (QEMU failed?)",
                    ));
                }
                e
            }
        };
        match exit {
            Exit::App(s) => Ok(s),
            Exit::Qemu(_) | Exit::Signal => Err(self.failure(&exit.describe())),
        }
    }

    /// Like [`Guest::wait_for`] with [`BOOT_TIMEOUT`], panicking with the
    /// full output on failure.
    #[track_caller]
    pub fn expect(&self, needle: &str) -> String {
        match self.wait_for(needle, BOOT_TIMEOUT) {
            Ok(line) => line,
            Err(e) => panic!("{e}"),
        }
    }

    /// Waits for the exit (with [`EXIT_TIMEOUT`]) and asserts the app status,
    /// panicking with the full output otherwise.
    #[track_caller]
    pub fn expect_exit(&mut self, status: i32) {
        match self.wait_exit(EXIT_TIMEOUT) {
            Ok(s) if s == status => {}
            Ok(s) => panic!(
                "{}",
                self.failure(&format!("expected exit status {status}, got {s}"))
            ),
            Err(e) => panic!("{e}"),
        }
    }

    /// Asserts that the output so far contains `needle`.
    #[track_caller]
    pub fn assert_output_contains(&self, needle: &str) {
        if !self.output().contains(needle) {
            panic!("{}", self.failure(&format!("the output lacks '{needle}'")));
        }
    }

    /// Kills QEMU now (also done on drop).
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            if let Ok(s) = self.child.wait() {
                self.exit = Some(map_exit_status(s));
            }
        }
    }

    /// A failure report: what went wrong, the command, all output so far.
    pub fn failure(&self, what: &str) -> String {
        // If QEMU has gone, give its stderr reader a moment to finish.
        let deadline = Instant::now() + Duration::from_secs(2);
        let stderr = match self.shared.wait_until(deadline, |st| {
            (!st.stdout_eof || st.stderr_eof).then_some(())
        }) {
            Ok(()) => lock(&self.shared.state).stderr.clone(),
            Err(st) => st.stderr.clone(),
        };
        format!(
            "{what} ({} on {}, after {:.1?})\n--- command ---\n{}\n--- serial output ---\n{}\n--- QEMU stderr ---\n{}--- end ---",
            self.app,
            self.machine,
            self.elapsed(),
            self.command,
            self.output(),
            stderr
        )
    }
}

fn memstats_needle(tag: &str) -> String {
    if tag.is_empty() {
        "memstats:".to_string()
    } else {
        format!("{tag} memstats:")
    }
}

fn detected_accel() -> &'static Accel {
    static ACCEL: OnceLock<Accel> = OnceLock::new();
    ACCEL.get_or_init(Accel::detect)
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
        if let Some(sock) = &self.qmp {
            let _ = std::fs::remove_file(sock);
        }
    }
}

/// Defines a test per machine: `machine_tests!(name, |m| { ... })` makes
/// `name::microvm` and `name::q35`, each running the body with `m` bound to
/// the [`Machine`].
#[macro_export]
macro_rules! machine_tests {
    ($(#[$attr:meta])* $name:ident, |$m:ident| $body:block) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn microvm() {
                let $m = $crate::Machine::Microvm;
                $body
            }

            #[test]
            fn q35() {
                let $m = $crate::Machine::Q35;
                $body
            }
        }
    };
}

/// The environment variable naming the file [`skip`] appends to; set by
/// `cargo uk test`, which reports the skipped tests in its summary.
pub const SKIP_FILE_ENV: &str = "UK_TEST_SKIP_FILE";

/// Records that the current test is skipped (it needs root or KVM): prints
/// `skipped: REASON` and appends `NAME<TAB>REASON` to the file named by
/// [`SKIP_FILE_ENV`], so that `cargo uk test` reports it as skipped rather
/// than passed. The test then returns. The name is the test thread's
/// (libtest names it after the test) unless `name` is given.
pub fn skip(name: Option<&str>, reason: &str) {
    skip_to(
        std::env::var_os(SKIP_FILE_ENV)
            .map(PathBuf::from)
            .as_deref(),
        name,
        reason,
    );
}

/// [`skip`], recording to `file` (none: only the printed line).
pub fn skip_to(file: Option<&std::path::Path>, name: Option<&str>, reason: &str) {
    let thread = std::thread::current();
    let name = name
        .or(thread.name())
        .filter(|n| *n != "main")
        .unwrap_or("(unnamed test)");
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.rsplit_once('-').map_or(s.clone(), |(a, _)| a.to_string()))
        .unwrap_or_default();
    eprintln!("skipped: {reason}");
    if let Some(path) = file {
        let line = format!("{exe}::{name}\t{reason}\n");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

/// For tests that need root (network namespaces, TAP): true (and the test
/// is recorded as skipped, see [`skip`]) when not root, so the test returns.
pub fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    skip(
        None,
        "needs root (creating a network namespace and a TAP device)",
    );
    true
}

/// True when this process runs as root (network namespaces and TAP need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A network namespace of our own with a TAP device `tap0` at `10.77.0.1/24`,
/// for guests that need a real L2 link (static addresses, benchmarks).
/// Deleted on drop. Traffic to the guest only ever happens inside it.
pub struct Netns {
    /// The namespace's name.
    pub name: String,
    /// The TAP interface inside it.
    pub tap: String,
    /// The host side's address on the TAP link.
    pub host_ip: &'static str,
    /// The address tests give the guest.
    pub guest_ip: &'static str,
    /// Queues of the TAP device (more than one: `multi_queue`).
    pub queues: u32,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates `uk-TAG-PID` with `tap0` up at 10.77.0.1/24.
    pub fn create(tag: &str) -> Result<Netns, String> {
        Self::with_queues(tag, 1)
    }

    /// As [`Netns::create`], with a `multi_queue` TAP device of `queues`
    /// queues when that is more than 1 ([`Netns::boot_opts`] then asks for
    /// a multiqueue network device with as many pairs).
    pub fn with_queues(tag: &str, queues: u32) -> Result<Netns, String> {
        let name = format!("uk-{tag}-{}", std::process::id());
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name: name.clone(),
            tap: "tap0".into(),
            host_ip: "10.77.0.1",
            guest_ip: "10.77.0.2",
            queues: queues.max(1),
        };
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        let mut add = vec!["-n", &name, "tuntap", "add", "dev", "tap0", "mode", "tap"];
        if queues > 1 {
            add.push("multi_queue");
        }
        ip(&add)?;
        ip(&["-n", &name, "addr", "add", "10.77.0.1/24", "dev", "tap0"])?;
        ip(&["-n", &name, "link", "set", "tap0", "up"])?;
        Ok(ns)
    }

    /// Boot options that put a guest on this namespace's TAP device with a
    /// static address.
    pub fn boot_opts(&self, args: &[&str]) -> BootOpts {
        let mut o = BootOpts::args(args);
        o.tap = Some(self.tap.clone());
        o.queues = self.queues;
        o.netns = Some(self.name.clone());
        o.append = format!("ip={}/24 gw={}", self.guest_ip, self.host_ip);
        o
    }

    /// Boot options that put a guest inside this namespace on a `-netdev
    /// dgram` socket (127.0.0.1 port `qemu_port`, frames sent to port
    /// `relay_port`) instead of the TAP device, for a relay that passes
    /// frames between that socket and the TAP device (see
    /// `tests/tests/relay.py`); same static address.
    pub fn relay_boot_opts(&self, args: &[&str], qemu_port: u16, relay_port: u16) -> BootOpts {
        let mut o = BootOpts::args(args);
        o.netns = Some(self.name.clone());
        o.dgram = Some((qemu_port, relay_port));
        o.append = format!("ip={}/24 gw={}", self.guest_ip, self.host_ip);
        o
    }

    /// `program args...` run inside the namespace, after checking (with
    /// `ip netns identify`) that it really is inside it.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, "sh", "-c"])
            .arg(format!(
                "test \"$(ip netns identify)\" = '{}' || {{ echo 'not inside the namespace' >&2; exit 99; }}; exec \"$@\"",
                self.name
            ))
            .arg("sh")
            .arg(program)
            .args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_opts() {
        let o = BootOpts::args(&["a", "b c"])
            .append("log=debug")
            .mem("4M")
            .fwd(1, 2);
        assert_eq!(o.args, ["a", "b c"]);
        assert_eq!(o.append, "log=debug");
        assert_eq!(o.mem, "4M");
        assert_eq!(o.fwds, [(1, 2)]);
        assert_eq!(BootOpts::default().mem, "64M");
    }

    #[test]
    fn ports_are_free() {
        let p = free_port();
        assert_ne!(p, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, p)).unwrap();
    }

    #[test]
    fn memstats_needles() {
        assert_eq!(memstats_needle(""), "memstats:");
        assert_eq!(memstats_needle("after"), "after memstats:");
    }
}
