//! A network namespace of our own with a TAP device, for guests that need a
//! real L2 link (static addresses, network benchmarks).
//!
//! User networking (`-netdev user`) is about ten times slower than TAP and is
//! not for benchmarks; a TAP device on the host would touch the host's own
//! network. [`Netns::create`] makes a private namespace `uk-TAG-PID` holding
//! `tap0` at [`HOST_IP`]/24; a guest booted with [`Netns::attach`] joins that
//! link as [`GUEST_IP`] (static, no DHCP), and QEMU itself runs inside the
//! namespace. Clients reach the guest with [`Netns::command`], which refuses
//! to run anything that is not really inside the namespace. Nothing leaves
//! it: the namespace has no route out.
//!
//! ```no_run
//! # fn main() -> Result<(), uk_cli::Error> {
//! use uk_cli::{VmConfig, netns::Netns};
//! let ns = Netns::create("echo")?; // needs root
//! let mut cfg = VmConfig::new("target/x86_64-unknown-none/release/echo");
//! ns.attach(&mut cfg); // tap0, inside the namespace, ip=10.77.0.2/24 gw=10.77.0.1
//! // ... boot cfg with qemu_command(&cfg), wait for the guest's "listening" line ...
//! let out = ns
//!     .command("python3", ["-c", "print('hello from inside')"])
//!     .output();
//! // Kill the guest before `ns` is dropped: dropping deletes the namespace.
//! # Ok(()) }
//! ```
//!
//! The QEMU test harness has the same helper (`uk_tests::Netns`); the CLI
//! cannot depend on the test crate, hence this copy.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use crate::Error;
use crate::qemu::VmConfig;

/// The TAP interface inside the namespace.
pub const TAP: &str = "tap0";
/// The host side's address on the TAP link.
pub const HOST_IP: &str = "10.77.0.1";
/// The address [`Netns::attach`] gives the guest.
pub const GUEST_IP: &str = "10.77.0.2";
/// The prefix length of the TAP link.
pub const PREFIX: u8 = 24;
/// The status of a [`Netns::command`] that found itself outside the
/// namespace (and so ran nothing).
pub const NOT_INSIDE_STATUS: i32 = 99;

/// A network namespace `uk-TAG-PID` with `tap0` up at `10.77.0.1/24`;
/// deleted on drop.
///
/// Kill the processes running inside (QEMU, clients) before dropping it:
/// `ip netns del` only removes the name, and a namespace with processes
/// left in it lives on, unreachable, until they exit.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Queues of its TAP device (more than one: `multi_queue`).
    queues: u32,
}

/// The namespace name for `tag` in process `pid`: `uk-TAG-PID`.
pub fn netns_name(tag: &str, pid: u32) -> String {
    format!("uk-{tag}-{pid}")
}

/// Whether `tag` is usable in a namespace name: 1 to 32 ASCII letters,
/// digits, `-` or `_` (so the name needs no quoting anywhere).
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 32
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The `sh -c` script of [`Netns::command`]: checks with `ip netns identify`
/// that it runs inside `name`, then execs its arguments; exits with
/// [`NOT_INSIDE_STATUS`] without running anything otherwise.
pub fn guard_script(name: &str) -> String {
    format!(
        "test \"$(ip netns identify)\" = '{name}' || \
         {{ echo 'uk: not inside network namespace {name}' >&2; exit {NOT_INSIDE_STATUS}; }}; \
         exec \"$@\""
    )
}

/// The kernel options that give the guest [`GUEST_IP`] with [`HOST_IP`] as
/// gateway: `ip=10.77.0.2/24 gw=10.77.0.1`.
pub fn kernel_options() -> String {
    format!("ip={GUEST_IP}/{PREFIX} gw={HOST_IP}")
}

/// Runs `ip ARGS...`; fails with its stderr.
fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Failed(format!("cannot run ip: {e} (install iproute2)")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The name of the network namespace this process is in (`ip netns
/// identify`); empty when it is not a named one (e.g. the host's).
pub fn current() -> Result<String, Error> {
    let out = Command::new("ip")
        .args(["netns", "identify"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Failed(format!("cannot run ip: {e} (install iproute2)")))?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "ip netns identify: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Netns {
    /// Creates the namespace `uk-TAG-PID` (a stale one of that name is
    /// deleted first) with `lo` up and [`TAP`] up at [`HOST_IP`]/24.
    /// Needs root; fails with a message saying so otherwise.
    pub fn create(tag: &str) -> Result<Netns, Error> {
        Self::create_with_queues(tag, 1)
    }

    /// As [`Netns::create`], with a `multi_queue` TAP device when `queues`
    /// is more than 1; [`Netns::attach`] then gives the guest a multiqueue
    /// network device with that many queue pairs (on q35).
    pub fn create_with_queues(tag: &str, queues: u32) -> Result<Netns, Error> {
        if !valid_tag(tag) {
            return Err(Error::Failed(format!(
                "bad network namespace tag '{tag}' (letters, digits, '-', '_')"
            )));
        }
        if !crate::qemu::is_root() {
            return Err(Error::Failed(
                "creating a network namespace with a TAP device needs root (run as root)".into(),
            ));
        }
        let name = netns_name(tag, std::process::id());
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        // From here on, dropping `ns` deletes the namespace again.
        let queues = queues.max(1);
        let ns = Netns { name, queues };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        let mut add = vec!["-n", n, "tuntap", "add", "dev", TAP, "mode", "tap"];
        if queues > 1 {
            add.push("multi_queue");
        }
        ip(&add)?;
        let addr = format!("{HOST_IP}/{PREFIX}");
        ip(&["-n", n, "addr", "add", &addr, "dev", TAP])?;
        ip(&["-n", n, "link", "set", TAP, "up"])?;
        Ok(ns)
    }

    /// The namespace's name, `uk-TAG-PID`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TAP interface inside it ([`TAP`]).
    pub fn tap(&self) -> &'static str {
        TAP
    }

    /// The host side's address ([`HOST_IP`]).
    pub fn host_ip(&self) -> &'static str {
        HOST_IP
    }

    /// The guest's address ([`GUEST_IP`]).
    pub fn guest_ip(&self) -> &'static str {
        GUEST_IP
    }

    /// Puts a guest on this namespace's TAP link: QEMU runs inside the
    /// namespace (`netns`), the network device is [`TAP`] (`tap`; port
    /// forwards are then ignored), and [`kernel_options`] come first in
    /// `append` (other options are kept).
    pub fn attach(&self, cfg: &mut VmConfig) {
        cfg.tap = Some(TAP.to_string());
        cfg.queues = self.queues;
        cfg.netns = Some(self.name.clone());
        cfg.net = true;
        let opts = kernel_options();
        cfg.append = if cfg.append.trim().is_empty() {
            opts
        } else {
            format!("{opts} {}", cfg.append.trim())
        };
    }

    /// `program args...` run inside the namespace: `ip netns exec NS sh -c
    /// GUARD sh program args...`, where the [`guard_script`] checks `ip netns
    /// identify` first and exits with [`NOT_INSIDE_STATUS`] (running
    /// nothing) if it is not inside. Stdio is left to the caller.
    pub fn command<S: AsRef<OsStr>>(
        &self,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, "sh", "-c"])
            .arg(guard_script(&self.name))
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

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn names_and_tags() {
        assert_eq!(netns_name("http", 4242), "uk-http-4242");
        assert!(valid_tag("bench-net_1"));
        for bad in ["", "a b", "a'b", "a/b", "x;rm", &"a".repeat(33)] {
            assert!(!valid_tag(bad), "{bad:?} accepted");
        }
        assert_eq!(kernel_options(), "ip=10.77.0.2/24 gw=10.77.0.1");
    }

    #[test]
    fn command_is_guarded() {
        let ns = Netns {
            name: "uk-unit-1".into(),
            queues: 1,
        };
        let c = ns.command("python3", ["-c", "print(1)"]);
        assert_eq!(c.get_program(), "ip");
        assert_eq!(
            args(&c),
            [
                "netns",
                "exec",
                "uk-unit-1",
                "sh",
                "-c",
                &guard_script("uk-unit-1"),
                "sh",
                "python3",
                "-c",
                "print(1)"
            ]
        );
        assert!(guard_script("uk-x-1").starts_with(
            "test \"$(ip netns identify)\" = 'uk-x-1' || { echo 'uk: not inside network namespace uk-x-1' >&2; exit 99; };"
        ));
        let owned: Vec<String> = vec!["a".into()];
        assert_eq!(args(&ns.command("prog", &owned)).last().unwrap(), "a");
        // Not a real namespace: the drop's `ip netns del` just fails.
    }

    #[test]
    fn guard_refuses_outside_the_namespace() {
        // Run the guard directly, outside any namespace of that name: it
        // must not run the program.
        let st = Command::new("sh")
            .arg("-c")
            .arg(guard_script("uk-nonexistent-0"))
            .args(["sh", "sh", "-c", "exit 0"])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(st.code(), Some(NOT_INSIDE_STATUS));
    }

    #[test]
    fn attach_sets_the_config() {
        let ns = Netns {
            name: "uk-unit-2".into(),
            queues: 1,
        };
        let mut cfg = VmConfig::new("/img");
        ns.attach(&mut cfg);
        assert_eq!(cfg.tap.as_deref(), Some("tap0"));
        assert_eq!(cfg.netns.as_deref(), Some("uk-unit-2"));
        assert_eq!(cfg.append, "ip=10.77.0.2/24 gw=10.77.0.1");
        let mut cfg = VmConfig::new("/img");
        cfg.append = "log=debug ".into();
        ns.attach(&mut cfg);
        assert_eq!(cfg.append, "ip=10.77.0.2/24 gw=10.77.0.1 log=debug");
        let cmd = crate::qemu::qemu_command(&cfg);
        let a = args(&cmd);
        assert_eq!(cmd.get_program(), "ip");
        assert_eq!(&a[..4], ["netns", "exec", "uk-unit-2", crate::QEMU]);
        assert!(a.contains(&"tap,id=net0,ifname=tap0,script=no,downscript=no".to_string()));
    }

    #[test]
    fn real_namespace_when_root() {
        if !crate::qemu::is_root() || Command::new("ip").arg("-V").output().is_err() {
            eprintln!("skipped: needs root and iproute2");
            return;
        }
        let ns = Netns::create("unittest").unwrap();
        let name = ns.name().to_string();
        let out = ns
            .command("ip", ["-o", "addr", "show", "dev", "tap0"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("10.77.0.1/24"));
        let inside = ns.command("ip", ["netns", "identify"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&inside.stdout).trim(), name);
        drop(ns);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
    }
}
