//! QEMU processes that behave like the CLI's own: they die with it.
//!
//! A foreground VM ([`spawn_foreground`]) gets `PR_SET_PDEATHSIG` = SIGKILL,
//! so the kernel kills it if the CLI dies for any reason (even SIGKILL), and
//! [`wait_forwarding`] turns SIGINT, SIGTERM and SIGHUP sent to the CLI into
//! a SIGTERM for QEMU, waits for it, and reports which signal arrived so the
//! caller can clean up (temporary disk images) and exit with 128 + signal.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The signal the CLI received (0: none).
static SIGNALLED: AtomicI32 = AtomicI32::new(0);
/// The QEMU the handler forwards to (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);

/// The signals a supervisor, a terminal or a closed session sends.
pub const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; pid is our child's.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Installs the forwarding handler for [`STOP_SIGNALS`] (without
/// `SA_RESTART`, so a blocking `waitpid` returns `EINTR`).
pub fn install_handlers() {
    for sig in STOP_SIGNALS {
        // SAFETY: a zeroed sigaction is valid; the handler only does
        // async-signal-safe work (atomics and kill).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The signal received since [`install_handlers`], if any.
pub fn signalled() -> Option<i32> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Makes the child die (SIGKILL) when this process dies.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid before fork; in the child only async-signal-safe calls
    // (prctl, getppid, kill on ourselves).
    let parent = unsafe { libc::getpid() };
    // SAFETY: see above; the closure runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent died before prctl: nobody would kill us.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
}

/// Starts the child in a session of its own (a background VM: no terminal
/// signals reach it, it outlives the CLI).
pub fn detach(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Spawns `cmd` so that it dies with the CLI and receives the CLI's stop
/// signals (as SIGTERM).
pub fn spawn_foreground(cmd: &mut Command) -> io::Result<Child> {
    install_handlers();
    die_with_parent(cmd);
    let child = cmd.spawn()?;
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    // A signal that arrived between the handler and the store.
    if signalled().is_some() {
        kill(child.id() as i32, libc::SIGTERM);
    }
    Ok(child)
}

/// Sends `sig` to `pid`; false if it is gone.
pub fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Waits for `child`; after a stop signal gives it `grace` to exit on the
/// forwarded SIGTERM, then kills it. Returns its status and the signal the
/// CLI received, if any.
pub fn wait_forwarding(
    child: &mut Child,
    grace: Duration,
) -> io::Result<(ExitStatus, Option<i32>)> {
    let pid = child.id() as i32;
    let status = loop {
        if signalled().is_some() {
            break wait_bounded(child, grace)?;
        }
        let mut st: libc::c_int = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            break ExitStatus::from_raw(st);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    CHILD.store(0, Ordering::SeqCst);
    Ok((status, signalled()))
}

/// Waits at most `grace` for the child, then SIGKILLs and reaps it.
fn wait_bounded(child: &mut Child, grace: Duration) -> io::Result<ExitStatus> {
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait()
}

/// Whether `pid` is a live process: some thread of it is not a zombie (a
/// process whose main thread exited is still closing its files while its
/// other threads finish).
pub fn alive(pid: i32) -> bool {
    if pid <= 0 || !kill(pid, 0) && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    let running = |stat: &str| {
        // The state follows the parenthesized command name.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X")
    };
    match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(tasks) => tasks
            .filter_map(Result::ok)
            .any(|t| std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| running(&s))),
        Err(_) => false,
    }
}

/// The NUL-separated command line of `pid`, joined with spaces.
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(0));
        assert!(!alive(i32::MAX));
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        c.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn pdeathsig_child_starts() {
        let mut cmd = Command::new("true");
        die_with_parent(&mut cmd);
        assert!(cmd.status().unwrap().success());
    }
}
