//! The PVH kernel command line.
//!
//! Syntax: whitespace-separated kernel options, each `key=value` or a bare
//! `flag`, then an optional `--` token, then the application's arguments:
//!
//! ```text
//! log=debug timeslice=5 ip=10.0.2.15/24 gw=10.0.2.2 -- --port 8080 "hello world"
//! ```
//!
//! Double quotes group words containing spaces (`msg="a b"` gives the value
//! `a b`); the quotes themselves are removed. A quote that is never closed is
//! reported as a warning and the token takes the rest of the line. A
//! backslash before `\`, `"` or `'` stands for that character (GRUB writes
//! its arguments' quotes and backslashes that way: `'self'` reaches the
//! kernel as `\'self\'`); any other backslash is kept. Only a bare,
//! unquoted `--` separates the kernel options from the arguments.
//!
//! [`Cmdline::parse`] does the lexical part; [`KernelConfig::from_cmdline`]
//! interprets the options the kernel knows about. Neither ever panics: bad
//! input produces warnings (plain English strings for the console) and
//! defaults.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// One kernel option: `key=value` (`value` is `Some`, possibly empty) or a
/// bare `flag` (`value` is `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelOption {
    /// The text before the first `=`.
    pub key: String,
    /// The text after the first `=`, or `None` for a bare flag.
    pub value: Option<String>,
}

/// A command line split into kernel options and application arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// Kernel options, in command-line order (before `--`).
    pub options: Vec<KernelOption>,
    /// Application arguments (after `--`), quotes removed.
    pub args: Vec<String>,
}

/// Splits `s` into tokens: `(text, had_quotes)`.
fn tokenize(s: &str, warnings: &mut Vec<String>) -> Vec<(String, bool)> {
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut tok = String::new();
        let mut quoted = false;
        let mut in_quote = false;
        while let Some(&c) = chars.peek() {
            if !in_quote && c.is_whitespace() {
                break;
            }
            chars.next();
            if c == '\\' && chars.peek().is_some_and(|n| matches!(n, '\\' | '"' | '\'')) {
                tok.extend(chars.next());
            } else if c == '"' {
                in_quote = !in_quote;
                quoted = true;
            } else {
                tok.push(c);
            }
        }
        if in_quote {
            warnings.push(format!(
                "unterminated quote in kernel command line; '{}' takes the rest of the line",
                show(&tok)
            ));
        }
        tokens.push((tok, quoted));
    }
    tokens
}

/// Escapes control characters and truncates long text for warnings.
fn show(s: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push_str("...");
            break;
        }
        // Through `Display` (one call) rather than `extend`, which inlined
        // the escape iterator and a UTF-8 push: about 0.5 KiB.
        let _ = write!(out, "{}", c.escape_debug());
    }
    out
}

impl Cmdline {
    /// Parses a command line. Returns the result and the warnings (for
    /// example about an unterminated quote or an option with an empty key,
    /// which is dropped). Never panics.
    pub fn parse(s: &str) -> (Cmdline, Vec<String>) {
        let mut warnings = Vec::new();
        let mut cmdline = Cmdline::default();
        let mut in_args = false;
        for (tok, quoted) in tokenize(s, &mut warnings) {
            if in_args {
                cmdline.args.push(tok);
                continue;
            }
            if tok == "--" && !quoted {
                in_args = true;
                continue;
            }
            let (key, value) = match tok.split_once('=') {
                Some((k, v)) => (String::from(k), Some(String::from(v))),
                None => (tok, None),
            };
            if key.is_empty() {
                warnings.push(format!(
                    "kernel option with an empty name ignored (value '{}')",
                    show(value.as_deref().unwrap_or(""))
                ));
                continue;
            }
            cmdline.options.push(KernelOption { key, value });
        }
        (cmdline, warnings)
    }

    /// The last option named `key`, if any (later options override earlier
    /// ones).
    pub fn get(&self, key: &str) -> Option<&KernelOption> {
        self.options.iter().rev().find(|o| o.key == key)
    }
}

/// Kernel log verbosity, from least to most verbose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Normal informational messages (the default).
    #[default]
    Info,
    /// Debugging output.
    Debug,
    /// Very verbose tracing.
    Trace,
}

impl LogLevel {
    /// Parses `error`, `warn`, `info`, `debug` or `trace`, ignoring ASCII
    /// case. Also accepts `warning` as an alias of `warn`.
    pub fn parse(s: &str) -> Option<LogLevel> {
        const NAMES: [(&str, LogLevel); 6] = [
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("warning", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("trace", LogLevel::Trace),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|&(_, l)| l)
    }

    /// The lower-case name (`"info"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// A static IPv4 address with its prefix length (`ip=10.0.2.15/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address octets, most significant first.
    pub addr: [u8; 4],
    /// The prefix length, `0..=32`.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `A.B.C.D/PREFIX`.
    pub fn parse(s: &str) -> Option<Ipv4Cidr> {
        let (a, p) = s.split_once('/')?;
        let addr = parse_ipv4(a)?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        let prefix = parse_dec(p)?;
        if prefix > 32 {
            return None;
        }
        Some(Ipv4Cidr {
            addr,
            prefix: prefix as u8,
        })
    }

    /// The network mask for the prefix, e.g. `[255, 255, 255, 0]` for `/24`.
    pub fn netmask(&self) -> [u8; 4] {
        let m = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix.min(32)))
        };
        m.to_be_bytes()
    }
}

/// A virtio-mmio device declared on the command line
/// (`virtio_mmio.device=SIZE@ADDR:IRQ`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevice {
    /// Physical base address of the register window.
    pub base: u64,
    /// Size of the register window in bytes (non-zero).
    pub size: u64,
    /// The device's interrupt line.
    pub irq: u32,
}

impl MmioDevice {
    /// Parses the Linux/Firecracker syntax `SIZE@ADDR:IRQ[:ID]`.
    ///
    /// `SIZE` and `ADDR` are decimal or `0x` hexadecimal numbers with an
    /// optional `K`, `M`, `G` or `T` suffix (binary multiples, either case);
    /// `IRQ` (and the optional platform device `ID`, which is ignored) are
    /// decimal. The size must be non-zero and `ADDR + SIZE` must not
    /// overflow.
    pub fn parse(s: &str) -> Option<MmioDevice> {
        let (size, rest) = s.split_once('@')?;
        let (base, irq) = rest.split_once(':')?;
        let irq = match irq.split_once(':') {
            Some((irq, id)) => {
                parse_dec(id)?;
                irq
            }
            None => irq,
        };
        let size = parse_memsize(size)?;
        let base = parse_memsize(base)?;
        let irq = u32::try_from(parse_dec(irq)?).ok()?;
        if size == 0 {
            return None;
        }
        base.checked_add(size)?;
        Some(MmioDevice { base, size, irq })
    }
}

/// Parses a non-empty string of ASCII decimal digits.
fn parse_dec(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Parses a non-empty string of ASCII hexadecimal digits.
fn parse_hex(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        let d = (b as char).to_digit(16)?;
        v = v.checked_mul(16)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// Parses a decimal or `0x` hexadecimal number.
fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => parse_hex(h),
        None => parse_dec(s),
    }
}

/// Parses a number with an optional `K`/`M`/`G`/`T` suffix (like Linux
/// `memparse`).
fn parse_memsize(s: &str) -> Option<u64> {
    let shift = match s.as_bytes().last()? {
        b'k' | b'K' => 10,
        b'm' | b'M' => 20,
        b'g' | b'G' => 30,
        b't' | b'T' => 40,
        _ => 0,
    };
    let digits = if shift == 0 { s } else { &s[..s.len() - 1] };
    let n = parse_num(digits)?;
    n.checked_mul(1u64 << shift)
}

/// Parses a dotted-quad IPv4 address (`A.B.C.D`, each part 1-3 decimal
/// digits, at most 255).
pub fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for slot in out.iter_mut() {
        let p = parts.next()?;
        if p.len() > 3 {
            return None;
        }
        *slot = u8::try_from(parse_dec(p)?).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

/// Parses an on/off switch value: `on|off|1|0|true|false|yes|no`, ignoring
/// ASCII case.
fn parse_bool(s: &str) -> Option<bool> {
    const T: [&str; 4] = ["on", "1", "true", "yes"];
    const F: [&str; 4] = ["off", "0", "false", "no"];
    if T.iter().any(|t| t.eq_ignore_ascii_case(s)) {
        Some(true)
    } else if F.iter().any(|f| f.eq_ignore_ascii_case(s)) {
        Some(false)
    } else {
        None
    }
}

/// Linux/Firecracker options that the unikernel accepts and ignores without
/// a warning (VMMs and boot loaders pass them by default).
pub const IGNORED_OPTIONS: &[&str] = &[
    "console",
    "reboot",
    "panic",
    "pci",
    "i8042.noaux",
    "i8042.nomux",
    "i8042.nopnp",
    "i8042.dumbkbd",
    "noapic",
    "nomodules",
    "quiet",
    "root",
    "rw",
    "ro",
    "init",
    "tsc",
    "acpi",
    "earlyprintk",
];

/// Largest accepted `timeslice=` value, in milliseconds.
pub const MAX_TIMESLICE_MS: u32 = 1000;

/// The kernel's configuration, as set by kernel options.
///
/// | option | meaning | default |
/// |---|---|---|
/// | `log=error\|warn\|info\|debug\|trace` | log level (case-insensitive) | `info` |
/// | `timeslice=MS` | preemption time slice in ms, `0..=1000` (`0` disables preemption; an `ms` suffix is allowed) | `10` |
/// | `memstats`, `memstats=on\|off\|1\|0\|true\|false\|yes\|no` | print memory statistics | off |
/// | `ip=A.B.C.D/PREFIX`, `ip=dhcp` | static address, or DHCP (`None`) | DHCP |
/// | `gw=A.B.C.D` | default gateway | none |
/// | `virtio_mmio.device=SIZE@ADDR:IRQ` | a virtio-mmio device; may repeat | none |
///
/// Options in [`IGNORED_OPTIONS`] are accepted silently; any other key gives
/// the warning `unknown kernel option 'KEY' ignored`. A malformed value gives
/// a warning naming the key and the value, and leaves the setting as it was
/// (the default, or an earlier valid occurrence of the option). When an
/// option is repeated, the last valid one wins, except that every
/// `virtio_mmio.device` is collected.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelConfig {
    /// `log=`: the log level.
    pub log: LogLevel,
    /// `timeslice=`: the scheduler time slice in ms; 0 disables preemption.
    pub timeslice_ms: u32,
    /// `memstats`: whether to report memory statistics.
    pub mem_report: bool,
    /// `ip=`: static address; `None` means DHCP.
    pub ip: Option<Ipv4Cidr>,
    /// `gw=`: default gateway.
    pub gw: Option<[u8; 4]>,
    /// `virtio_mmio.device=`: virtio-mmio devices, in command-line order.
    pub virtio_mmio: Vec<MmioDevice>,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            log: LogLevel::Info,
            timeslice_ms: 10,
            mem_report: false,
            ip: None,
            gw: None,
            virtio_mmio: Vec::new(),
        }
    }
}

impl KernelConfig {
    /// Interprets the kernel options of `c`. Returns the configuration and
    /// the warnings (unknown options, malformed values). Never panics.
    pub fn from_cmdline(c: &Cmdline) -> (KernelConfig, Vec<String>) {
        let mut cfg = KernelConfig::default();
        let mut warnings = Vec::new();
        for opt in &c.options {
            let key = opt.key.as_str();
            let known = matches!(
                key,
                "log" | "timeslice" | "memstats" | "ip" | "gw" | "virtio_mmio.device"
            );
            if !known {
                if !IGNORED_OPTIONS.contains(&key) {
                    warnings.push(format!("unknown kernel option '{}' ignored", show(key)));
                }
                continue;
            }
            if key == "memstats" {
                match opt.value.as_deref() {
                    None => cfg.mem_report = true,
                    Some(v) => match parse_bool(v) {
                        Some(b) => cfg.mem_report = b,
                        None => bad(&mut warnings, key, v, "on|off|1|0|true|false"),
                    },
                }
                continue;
            }
            let Some(v) = opt.value.as_deref() else {
                warnings.push(format!("kernel option '{key}' needs a value; ignored"));
                continue;
            };
            match key {
                "log" => match LogLevel::parse(v) {
                    Some(l) => cfg.log = l,
                    None => bad(&mut warnings, key, v, "error|warn|info|debug|trace"),
                },
                "timeslice" => {
                    let digits = v.strip_suffix("ms").unwrap_or(v);
                    match parse_dec(digits) {
                        Some(n) if n <= u64::from(MAX_TIMESLICE_MS) => cfg.timeslice_ms = n as u32,
                        _ => bad(&mut warnings, key, v, "milliseconds in 0..=1000"),
                    }
                }
                "ip" => {
                    if v.eq_ignore_ascii_case("dhcp") {
                        cfg.ip = None;
                    } else {
                        match Ipv4Cidr::parse(v) {
                            Some(ip) => cfg.ip = Some(ip),
                            None => bad(&mut warnings, key, v, "A.B.C.D/PREFIX or dhcp"),
                        }
                    }
                }
                "gw" => match parse_ipv4(v) {
                    Some(gw) => cfg.gw = Some(gw),
                    None => bad(&mut warnings, key, v, "A.B.C.D"),
                },
                _ => match MmioDevice::parse(v) {
                    Some(d) => cfg.virtio_mmio.push(d),
                    None => bad(&mut warnings, key, v, "SIZE@ADDR:IRQ"),
                },
            }
        }
        (cfg, warnings)
    }
}

fn bad(warnings: &mut Vec<String>, key: &str, value: &str, expected: &str) {
    warnings.push(format!(
        "invalid value '{}' for kernel option '{}' (expected {}); ignored",
        show(value),
        key,
        expected
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn show_escapes_like_escape_debug_and_truncates() {
        let s = "a\tb\u{1}\u{301}é\"'\\";
        let expected: String = s.chars().flat_map(char::escape_debug).collect();
        assert_eq!(show(s), expected);
        assert_eq!(show(s), "a\\tb\\u{1}\\u{301}é\\\"\\'\\\\");
        let long = "x".repeat(70);
        assert_eq!(show(&long), format!("{}...", "x".repeat(64)));
    }

    fn opt(k: &str, v: Option<&str>) -> KernelOption {
        KernelOption {
            key: k.to_string(),
            value: v.map(|s| s.to_string()),
        }
    }

    fn cfg(s: &str) -> (KernelConfig, Vec<String>) {
        let (c, mut w) = Cmdline::parse(s);
        let (k, w2) = KernelConfig::from_cmdline(&c);
        w.extend(w2);
        (k, w)
    }

    #[test]
    fn empty_and_blank() {
        for s in ["", " ", "\t\n  \r"] {
            let (c, w) = Cmdline::parse(s);
            assert_eq!(c, Cmdline::default());
            assert!(w.is_empty());
        }
        let (k, w) = cfg("");
        assert_eq!(k, KernelConfig::default());
        assert!(w.is_empty());
    }

    #[test]
    fn options_flags_and_args() {
        let (c, w) = Cmdline::parse("  log=debug  quiet\tkey= -- a  b=c -- \"d e\"  ");
        assert!(w.is_empty());
        assert_eq!(
            c.options,
            vec![
                opt("log", Some("debug")),
                opt("quiet", None),
                opt("key", Some(""))
            ]
        );
        assert_eq!(c.args, vec!["a", "b=c", "--", "d e"]);
    }

    #[test]
    fn value_with_equals_splits_at_first() {
        let (c, _) = Cmdline::parse("a=b=c");
        assert_eq!(c.options, vec![opt("a", Some("b=c"))]);
    }

    #[test]
    fn quotes_group_and_are_removed() {
        let (c, w) = Cmdline::parse(r#"msg="a b" x"y z"w "" -- "hello world" ab"c d"ef """#);
        // `""` before `--` is a flag with an empty name: dropped, warned.
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(c.options[0], opt("msg", Some("a b")));
        assert_eq!(c.options[1], opt("xy zw", None));
        assert_eq!(c.options.len(), 2);
        assert_eq!(c.args, vec!["hello world", "abc def", ""]);
    }

    #[test]
    fn grub_escapes() {
        // What GRUB's multiboot2 command writes for the arguments
        // `X: a b`, `default-src 'self'` and `c:\d`.
        let (c, w) = Cmdline::parse(r#"-- "X: a b" "default-src \'self\'" c:\\d \"q\" a\b"#);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            c.args,
            vec!["X: a b", "default-src 'self'", "c:\\d", "\"q\"", "a\\b"]
        );
        // A trailing backslash is kept.
        let (c, _) = Cmdline::parse(r"-- x\");
        assert_eq!(c.args, vec!["x\\"]);
    }

    #[test]
    fn empty_quoted_option_warns() {
        let (c, w) = Cmdline::parse(r#""" =x"#);
        assert!(c.options.is_empty());
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn quoted_double_dash_is_not_separator() {
        let (c, _) = Cmdline::parse(r#"a "--" b -- "--" c"#);
        assert_eq!(
            c.options,
            vec![opt("a", None), opt("--", None), opt("b", None)]
        );
        assert_eq!(c.args, vec!["--", "c"]);
        let (c, _) = Cmdline::parse("---- --x");
        assert_eq!(c.options.len(), 2);
        assert!(c.args.is_empty());
    }

    #[test]
    fn unterminated_quote_takes_rest_of_line() {
        let (c, w) = Cmdline::parse(r#"a=1 msg="hello there -- x y"#);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("unterminated quote"), "{}", w[0]);
        assert_eq!(
            c.options,
            vec![opt("a", Some("1")), opt("msg", Some("hello there -- x y"))]
        );
        assert!(c.args.is_empty());
        let (c, w) = Cmdline::parse("-- a \"b  c");
        assert_eq!(w.len(), 1);
        assert_eq!(c.args, vec!["a", "b  c"]);
        let (c, w) = Cmdline::parse("\"");
        assert_eq!(w.len(), 2); // unterminated + empty key
        assert!(c.options.is_empty());
    }

    #[test]
    fn get_last_wins() {
        let (c, _) = Cmdline::parse("log=info x log=trace -- log=error");
        assert_eq!(c.get("log"), Some(&opt("log", Some("trace"))));
        assert_eq!(c.get("x"), Some(&opt("x", None)));
        assert_eq!(c.get("y"), None);
        assert_eq!(c.get(""), None);
    }

    #[test]
    fn unicode_is_kept() {
        let (c, w) = Cmdline::parse("größe=ü\u{3000}x -- 日本 \"a\u{a0}b\"");
        assert!(w.is_empty());
        // U+3000 and U+00A0 are whitespace.
        assert_eq!(c.options, vec![opt("größe", Some("ü")), opt("x", None)]);
        assert_eq!(c.args, vec!["日本", "a\u{a0}b"]);
    }

    #[test]
    fn log_level_parse() {
        assert_eq!(LogLevel::parse("error"), Some(LogLevel::Error));
        assert_eq!(LogLevel::parse("WARN"), Some(LogLevel::Warn));
        assert_eq!(LogLevel::parse("Warning"), Some(LogLevel::Warn));
        assert_eq!(LogLevel::parse("Info"), Some(LogLevel::Info));
        assert_eq!(LogLevel::parse("dEbUg"), Some(LogLevel::Debug));
        assert_eq!(LogLevel::parse("trace"), Some(LogLevel::Trace));
        for bad in ["", "inf", "infos", " info", "debug ", "2", "ınfo"] {
            assert_eq!(LogLevel::parse(bad), None, "{bad}");
        }
        assert!(LogLevel::Error < LogLevel::Warn && LogLevel::Debug < LogLevel::Trace);
        for l in [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ] {
            assert_eq!(LogLevel::parse(l.as_str()), Some(l));
        }
        assert_eq!(LogLevel::default(), LogLevel::Info);
    }

    #[test]
    fn defaults() {
        let d = KernelConfig::default();
        assert_eq!(d.log, LogLevel::Info);
        assert_eq!(d.timeslice_ms, 10);
        assert!(!d.mem_report);
        assert_eq!(d.ip, None);
        assert_eq!(d.gw, None);
        assert!(d.virtio_mmio.is_empty());
    }

    #[test]
    fn full_config() {
        let (k, w) = cfg(
            "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux \
             i8042.nopnp i8042.dumbkbd noapic nomodules quiet root=/dev/vda rw ro init=/x \
             tsc=reliable acpi=off earlyprintk=serial \
             log=TRACE timeslice=0 memstats ip=192.168.1.20/24 gw=192.168.1.1 \
             virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=0x1000@3489665024:6:2 \
             -- app args",
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(k.log, LogLevel::Trace);
        assert_eq!(k.timeslice_ms, 0);
        assert!(k.mem_report);
        assert_eq!(
            k.ip,
            Some(Ipv4Cidr {
                addr: [192, 168, 1, 20],
                prefix: 24
            })
        );
        assert_eq!(k.gw, Some([192, 168, 1, 1]));
        assert_eq!(
            k.virtio_mmio,
            vec![
                MmioDevice {
                    base: 0xd000_0000,
                    size: 4096,
                    irq: 5
                },
                MmioDevice {
                    base: 0xd000_1000,
                    size: 4096,
                    irq: 6
                },
            ]
        );
    }

    #[test]
    fn unknown_options_warn() {
        let (k, w) = cfg("foo bar=1 console=ttyS0 Log=debug consolex");
        assert_eq!(k, KernelConfig::default());
        assert_eq!(
            w,
            vec![
                "unknown kernel option 'foo' ignored",
                "unknown kernel option 'bar' ignored",
                "unknown kernel option 'Log' ignored",
                "unknown kernel option 'consolex' ignored",
            ]
        );
    }

    #[test]
    fn application_args_are_not_options() {
        let (k, w) = cfg("-- log=debug foo");
        assert!(w.is_empty());
        assert_eq!(k, KernelConfig::default());
    }

    #[test]
    fn malformed_values_warn_and_keep_default() {
        let cases = [
            "log=verbose",
            "log=",
            "timeslice=abc",
            "timeslice=1001",
            "timeslice=-1",
            "timeslice=+5",
            "timeslice=99999999999999999999999",
            "memstats=maybe",
            "memstats=",
            "ip=1.2.3.4",
            "ip=1.2.3.4/33",
            "ip=1.2.3/24",
            "ip=1.2.3.4.5/24",
            "ip=256.1.1.1/8",
            "ip=1.2.3.4/",
            "ip=1.2.3.4/024",
            "ip=/24",
            "ip=a.b.c.d/8",
            "ip=1..3.4/8",
            "ip=0001.2.3.4/8",
            "gw=1.2.3",
            "gw=1.2.3.4/24",
            "gw=",
            "gw=-1.2.3.4",
            "virtio_mmio.device=",
            "virtio_mmio.device=4K",
            "virtio_mmio.device=4K@0xd0000000",
            "virtio_mmio.device=0@0xd0000000:5",
            "virtio_mmio.device=4K@0xd0000000:",
            "virtio_mmio.device=4K@0xd0000000:x",
            "virtio_mmio.device=4K@0xd0000000:4294967296",
            "virtio_mmio.device=4X@0xd0000000:5",
            "virtio_mmio.device=4K@0xzz:5",
            "virtio_mmio.device=4K@0x:5",
            "virtio_mmio.device=K@0x1000:5",
            "virtio_mmio.device=@0x1000:5",
            "virtio_mmio.device=4K@0xffffffffffffffff:5",
            "virtio_mmio.device=0xffffffffffffffffK@0:5",
            "virtio_mmio.device=4K@0x1000:5:",
            "virtio_mmio.device=4K@0x1000:5:x",
            "virtio_mmio.device=4K@@0x1000:5",
            "virtio_mmio.device=-4K@0x1000:5",
        ];
        for case in cases {
            let (k, w) = cfg(case);
            assert_eq!(k, KernelConfig::default(), "{case}");
            assert_eq!(w.len(), 1, "{case}: {w:?}");
            let (key, value) = case.split_once('=').unwrap();
            assert!(w[0].contains(&format!("'{key}'")), "{case}: {}", w[0]);
            assert!(w[0].contains(&format!("'{value}'")), "{case}: {}", w[0]);
        }
    }

    #[test]
    fn missing_values_warn() {
        for key in ["log", "timeslice", "ip", "gw", "virtio_mmio.device"] {
            let (k, w) = cfg(key);
            assert_eq!(k, KernelConfig::default());
            assert_eq!(w.len(), 1, "{key}");
            assert!(w[0].contains(key));
        }
    }

    #[test]
    fn bad_value_keeps_earlier_valid_one() {
        let (k, w) = cfg("log=debug log=nope timeslice=5 timeslice=x ip=10.0.0.2/8 ip=bad");
        assert_eq!(w.len(), 3);
        assert_eq!(k.log, LogLevel::Debug);
        assert_eq!(k.timeslice_ms, 5);
        assert_eq!(k.ip.unwrap().addr, [10, 0, 0, 2]);
    }

    #[test]
    fn last_valid_wins_and_dhcp_resets() {
        let (k, w) = cfg("log=error log=warn ip=10.0.0.2/8 ip=DHCP memstats memstats=off");
        assert!(w.is_empty());
        assert_eq!(k.log, LogLevel::Warn);
        assert_eq!(k.ip, None);
        assert!(!k.mem_report);
    }

    #[test]
    fn memstats_values() {
        for (v, want) in [
            ("on", true),
            ("ON", true),
            ("1", true),
            ("true", true),
            ("Yes", true),
            ("off", false),
            ("0", false),
            ("FALSE", false),
            ("no", false),
        ] {
            let (k, w) = cfg(&format!("memstats memstats={v}"));
            assert!(w.is_empty());
            assert_eq!(k.mem_report, want, "{v}");
        }
    }

    #[test]
    fn timeslice_values() {
        for (v, want) in [("0", 0), ("1", 1), ("1000", 1000), ("007", 7), ("20ms", 20)] {
            let (k, w) = cfg(&format!("timeslice={v}"));
            assert!(w.is_empty(), "{v}");
            assert_eq!(k.timeslice_ms, want);
        }
    }

    #[test]
    fn ip_edge_cases() {
        let (k, w) = cfg("ip=0.0.0.0/0 gw=255.255.255.255");
        assert!(w.is_empty());
        assert_eq!(
            k.ip,
            Some(Ipv4Cidr {
                addr: [0; 4],
                prefix: 0
            })
        );
        assert_eq!(k.gw, Some([255; 4]));
        let (k, _) = cfg("ip=10.1.2.3/32");
        assert_eq!(k.ip.unwrap().prefix, 32);
        let c = |p| Ipv4Cidr {
            addr: [0; 4],
            prefix: p,
        };
        assert_eq!(c(0).netmask(), [0, 0, 0, 0]);
        assert_eq!(c(24).netmask(), [255, 255, 255, 0]);
        assert_eq!(c(20).netmask(), [255, 255, 240, 0]);
        assert_eq!(c(32).netmask(), [255; 4]);
        assert_eq!(c(200).netmask(), [255; 4]);
    }

    #[test]
    fn mmio_sizes() {
        let p = |s: &str| MmioDevice::parse(s);
        assert_eq!(
            p("512@4096:1"),
            Some(MmioDevice {
                base: 4096,
                size: 512,
                irq: 1
            })
        );
        assert_eq!(p("1M@0x100000:10").unwrap().size, 1 << 20);
        assert_eq!(p("2g@0:0").unwrap().size, 2 << 30);
        assert_eq!(p("1T@0:0").unwrap().size, 1 << 40);
        assert_eq!(p("0x200@0X1k:3").unwrap().base, 0x400);
        assert_eq!(p("0XaB@0:3").unwrap().size, 0xab);
        assert_eq!(p("4K@0xd0000000:5:0").unwrap().irq, 5);
        assert_eq!(p("1@0xfffffffffffffffe:0").unwrap().size, 1);
        assert_eq!(p("1@0xffffffffffffffff:0"), None);
        assert_eq!(p("4k@0x1000:5 "), None);
    }

    /// A long list of garbage: nothing panics, all results are sane.
    #[test]
    fn garbage_never_panics() {
        let garbage = [
            "=",
            "==",
            "===",
            "= =",
            "\"",
            "\"\"\"",
            "\"=\"",
            "--",
            "-- --",
            "-- \"",
            "\0",
            "\0=\0",
            "log\0=debug",
            "log=\u{7f}",
            "\u{feff}log=debug",
            "log=debug\"",
            "ip=\"1.2.3.4/24\"",
            "ip=1.2.3.4/24/24",
            "ip=::1/128",
            "ip=1.2.3.4//",
            "gw=1.2.3.4.",
            "gw=.1.2.3",
            "gw=1,2,3,4",
            "timeslice=0x10",
            "timeslice=1e3",
            "timeslice=ms",
            "virtio_mmio.device=::",
            "virtio_mmio.device=@:",
            "virtio_mmio.device=@@@:::",
            "virtio_mmio.device=0x@0x:0x",
            "virtio_mmio.device=K@K:K",
            "virtio_mmio.device=ü@ü:ü",
            "virtio_mmio.device=4ü@0:1",
            "virtio_mmio.device=18446744073709551616@0:1",
            "virtio_mmio.device=18446744073709551615@1:1",
            "virtio_mmio.device=16777216T@0:0",
            "memstats=\u{1}",
            "\u{1b}[31mred",
            "a\u{0300}=\u{0300}",
            "🦀=🦀 -- 🦀",
            "\\\"escaped\\\"",
            "\t\t\t\t=\t",
            "x=\"\"\"\"\"",
        ];
        for g in garbage {
            let (c, w) = Cmdline::parse(g);
            let (_, w2) = KernelConfig::from_cmdline(&c);
            for warning in w.iter().chain(w2.iter()) {
                assert!(!warning.is_empty());
                assert!(!warning.chars().any(|c| c.is_control()), "{warning:?}");
            }
            for o in &c.options {
                assert!(!o.key.is_empty());
                assert!(!o.key.contains('='));
            }
        }
        let long: String = core::iter::repeat_n("virtio_mmio.device=4K@0x1000:5 ", 1000).collect();
        let (k, w) = cfg(&long);
        assert!(w.is_empty());
        assert_eq!(k.virtio_mmio.len(), 1000);
        let long_value = format!("log={}", "x".repeat(10_000));
        let (_, w) = cfg(&long_value);
        assert_eq!(w.len(), 1);
        assert!(w[0].len() < 300, "warnings are truncated");
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    /// Byte soup and token soup: never panics; parse is consistent.
    #[test]
    fn random_soup_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let pieces = [
            "log",
            "=",
            "\"",
            " ",
            "--",
            "ip",
            "gw",
            "timeslice",
            "memstats",
            "0x",
            "4K",
            "@",
            ":",
            "/",
            ".",
            "1",
            "255",
            "999",
            "dhcp",
            "virtio_mmio.device",
            "\t",
            "ü",
            "\0",
            "on",
            "k",
            "G",
        ];
        for round in 0..4000 {
            let s = if round % 2 == 0 {
                let n = (rng.next() % 64) as usize;
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                let n = (rng.next() % 24) as usize;
                (0..n)
                    .map(|_| pieces[(rng.next() % pieces.len() as u64) as usize])
                    .collect()
            };
            let (c, w) = Cmdline::parse(&s);
            let (k, w2) = KernelConfig::from_cmdline(&c);
            assert!(k.timeslice_ms <= MAX_TIMESLICE_MS);
            if let Some(ip) = k.ip {
                assert!(ip.prefix <= 32);
            }
            for d in &k.virtio_mmio {
                assert!(d.size > 0 && d.base.checked_add(d.size).is_some());
            }
            assert!(w.len() <= 1 + s.len() && w2.len() <= c.options.len());
            // No quotes survive in parsed tokens, except escaped ones.
            if !s.contains("\\\"") {
                assert!(c.options.iter().all(|o| !o.key.contains('"')));
                assert!(c.args.iter().all(|a| !a.contains('"')));
            }
        }
    }
}
