//! Progress for long work: a spinner with the elapsed time on a terminal
//! (indicatif, on stderr), plain `uk: ...` lines otherwise (CI logs, pipes).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Whether progress is drawn (stderr is a terminal and `CI` is unset).
pub fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// One step of long work: started, then finished (ok or failed).
#[derive(Debug)]
pub struct Step {
    what: String,
    start: Instant,
    bar: Option<ProgressBar>,
}

impl Step {
    /// Starts `what`: a spinner on a terminal, else a `uk: what` line.
    pub fn start(what: &str) -> Step {
        let bar = interactive().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_message(what.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        if bar.is_none() {
            eprintln!("uk: {what}");
        }
        Step {
            what: what.to_string(),
            start: Instant::now(),
            bar,
        }
    }

    /// Ends the step with one line saying how it went and how long it took.
    pub fn finish(self, ok: bool) {
        let line = finish_line(&self.what, ok, self.start.elapsed());
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        eprintln!("uk: {line}");
    }
}

/// `what: done (1.2 s)` / `what: FAILED (1.2 s)`.
pub fn finish_line(what: &str, ok: bool, took: Duration) -> String {
    format!(
        "{what}: {} ({:.1} s)",
        if ok { "done" } else { "FAILED" },
        took.as_secs_f64()
    )
}

/// Runs `f` as a [`Step`].
pub fn step<T, E>(what: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let s = Step::start(what);
    let r = f();
    s.finish(r.is_ok());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            finish_line("packing", true, Duration::from_millis(1234)),
            "packing: done (1.2 s)"
        );
        assert_eq!(
            finish_line("wrk", false, Duration::from_secs(2)),
            "wrk: FAILED (2.0 s)"
        );
        let r: Result<u8, ()> = step("a step", || Ok(3));
        assert_eq!(r, Ok(3));
    }
}
