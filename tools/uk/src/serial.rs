//! Parsing the kernel's serial output contract.

use std::collections::HashMap;

/// The marker line the kernel prints right before the app's `main`.
pub const MAIN_MARKER: &str = "uk: main";

/// The parsed `uk: main after C tsc cycles (U us)` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MainMarker {
    /// TSC cycles since boot.
    pub cycles: u64,
    /// Microseconds since boot, `None` when the kernel printed `?`.
    pub micros: Option<u64>,
}

/// Parses a line containing `uk: main after C tsc cycles (U us)`.
pub fn parse_main_marker(line: &str) -> Option<MainMarker> {
    let rest = &line[line.find("uk: main after ")? + "uk: main after ".len()..];
    let (cycles, rest) = rest.split_once(" tsc cycles (")?;
    let (micros, _) = rest.split_once(" us)")?;
    let cycles = cycles.trim().parse().ok()?;
    let micros = match micros.trim() {
        "?" => None,
        m => Some(m.parse().ok()?),
    };
    Some(MainMarker { cycles, micros })
}

/// Parses the `key=value` words of `text` whose value is an integer
/// (decimal or `0x` hex); other words are ignored.
pub fn parse_kv(text: &str) -> HashMap<String, u64> {
    text.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| {
            let v = v.trim_end_matches([',', ';']);
            let n = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok()?,
                None => v.parse().ok()?,
            };
            Some((k.to_string(), n))
        })
        .collect()
}

/// The prefix of the line the `selftest bench-sched` scenario prints.
pub const SCHED_MARKER: &str = "bench-sched:";

/// The parsed `bench-sched: switch_ns=N spawn_join_ns=N switches=N` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedSample {
    /// The cost of one context switch (yield to another thread and back is
    /// two), in guest TSC nanoseconds.
    pub switch_ns: u64,
    /// The cost of spawning a thread and joining it, in nanoseconds.
    pub spawn_join_ns: u64,
    /// How many switches the measurement counted.
    pub switches: u64,
}

/// Parses a line containing `bench-sched: switch_ns=N spawn_join_ns=N
/// switches=N`; `None` if the marker or any of the three numbers is missing.
pub fn parse_bench_sched(line: &str) -> Option<SchedSample> {
    let (_, rest) = line.split_once(SCHED_MARKER)?;
    let kv = parse_kv(rest);
    Some(SchedSample {
        switch_ns: *kv.get("switch_ns")?,
        spawn_join_ns: *kv.get("spawn_join_ns")?,
        switches: *kv.get("switches")?,
    })
}

/// Parses a memory statistics line `[TAG ]memstats: k=v ...`; `None` if the
/// line has no `memstats:`.
pub fn parse_memstats(line: &str) -> Option<HashMap<String, u64>> {
    let (_, rest) = line.split_once("memstats:")?;
    Some(parse_kv(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_marker() {
        assert_eq!(
            parse_main_marker("uk: main after 123456 tsc cycles (789 us)\r"),
            Some(MainMarker {
                cycles: 123456,
                micros: Some(789)
            })
        );
        assert_eq!(
            parse_main_marker("[0.1] uk: main after 5 tsc cycles (? us)"),
            Some(MainMarker {
                cycles: 5,
                micros: None
            })
        );
        assert_eq!(
            parse_main_marker("uk: main after x tsc cycles (1 us)"),
            None
        );
        assert_eq!(
            parse_main_marker("uk: main after 1 tsc cycles (1 ms)"),
            None
        );
        assert_eq!(parse_main_marker("hello"), None);
    }

    #[test]
    fn kv_and_memstats() {
        let m = parse_memstats(
            "after memstats: frames_total=16000 frames_free=15000 heap_arenas=2 mapped_bytes=0x1000 junk x=y",
        )
        .unwrap();
        assert_eq!(m["frames_total"], 16000);
        assert_eq!(m["heap_arenas"], 2);
        assert_eq!(m["mapped_bytes"], 4096);
        assert!(!m.contains_key("x"));
        assert_eq!(parse_memstats("no stats here"), None);
        assert_eq!(parse_kv("heapgrow: arenas=3")["arenas"], 3);
        assert_eq!(parse_kv("mmap64: frames_delta=1,")["frames_delta"], 1);
    }

    #[test]
    fn bench_sched_line() {
        assert_eq!(
            parse_bench_sched("bench-sched: switch_ns=4251 spawn_join_ns=18065 switches=20000\r"),
            Some(SchedSample {
                switch_ns: 4251,
                spawn_join_ns: 18065,
                switches: 20000
            })
        );
        assert_eq!(
            parse_bench_sched("[1.0] bench-sched: switches=2 spawn_join_ns=1 switch_ns=0")
                .map(|s| (s.switch_ns, s.spawn_join_ns, s.switches)),
            Some((0, 1, 2))
        );
        assert_eq!(
            parse_bench_sched("bench-sched: switch_ns=1 switches=2"),
            None
        );
        assert_eq!(
            parse_bench_sched("bench-sched: switch_ns=x spawn_join_ns=1 switches=2"),
            None
        );
        assert_eq!(
            parse_bench_sched("switch_ns=1 spawn_join_ns=1 switches=2"),
            None
        );
    }
}
