//! Progress: bars on a terminal; elsewhere (a batch job, `nohup`, a parallel cell's log.txt)
//! timestamped lines, at most one a minute per phase, so a run of hours can be followed with
//! `tail -f`.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shortest gap between two progress lines of one phase in log mode.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Where log-mode lines go and when the last one went.
struct LineLog {
    sink: Box<dyn Write + Send>,
    every: Duration,
    started: Instant,
    phase_started: Instant,
    last_line: Instant,
}

impl LineLog {
    fn line(&mut self, text: &str) {
        let elapsed = fmt_duration(self.started.elapsed());
        // A progress line that cannot be written must not fail the run.
        let _ = writeln!(self.sink, "[{elapsed:>8}] {text}");
        self.last_line = Instant::now();
    }
}

/// `1h02m`, `12m05s`, `42s`.
fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, min, _) => format!("{h}h{min:02}m"),
    }
}

/// The bars of a run.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    phase: ProgressBar,
    log: Option<Arc<Mutex<LineLog>>>,
}

impl Progress {
    /// Bars drawn on stderr when stdout is a terminal, timestamped lines on stderr otherwise.
    pub fn new() -> Self {
        if std::io::stdout().is_terminal() {
            Self::with_target(ProgressDrawTarget::stderr(), None)
        } else {
            Self::lines(Box::new(std::io::stderr()), LOG_EVERY)
        }
    }

    /// Timestamped progress lines to `sink`, at most one per `every` within a phase.
    pub fn lines(sink: Box<dyn Write + Send>, every: Duration) -> Self {
        let now = Instant::now();
        let log = LineLog {
            sink,
            every,
            started: now,
            phase_started: now,
            last_line: now,
        };
        Self::with_target(
            ProgressDrawTarget::hidden(),
            Some(Arc::new(Mutex::new(log))),
        )
    }

    /// Bars that draw nothing (tests).
    pub fn hidden() -> Self {
        Self::with_target(ProgressDrawTarget::hidden(), None)
    }

    fn with_target(target: ProgressDrawTarget, log: Option<Arc<Mutex<LineLog>>>) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let phase = multi.add(ProgressBar::new(0));
        phase.set_style(
            ProgressStyle::with_template(
                "  {msg:24} [{bar:30.green/white}] {pos}/{len} {per_sec} eta {eta}",
            )
            .expect("static template"),
        );
        Self { multi, phase, log }
    }

    fn with_log(&self, f: impl FnOnce(&mut LineLog)) {
        if let Some(log) = &self.log {
            // A poisoned lock means a panic elsewhere; progress lines are not worth a second one.
            if let Ok(mut log) = log.lock() {
                f(&mut log);
            }
        }
    }

    /// The sweep bar (one tick per cell).
    pub fn sweep(&self, cells: u64) -> ProgressBar {
        let bar = self.multi.insert(0, ProgressBar::new(cells));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:26} [{bar:30.cyan/blue}] {pos}/{len} cells, eta {eta}",
            )
            .expect("static template"),
        );
        bar.enable_steady_tick(Duration::from_millis(500));
        bar
    }

    /// Shows that the sweep `bar` moves on to the cell `name`.
    pub fn cell(&self, bar: &ProgressBar, name: &str) {
        bar.set_message(name.to_string());
        let (done, total) = (bar.position(), bar.length().unwrap_or(0));
        self.with_log(|log| log.line(&format!("cell {name} ({done} of {total} done)")));
    }

    /// Starts a phase (annotation, an epoch, evaluation) of `len` units.
    pub fn phase(&self, name: &str, len: u64) {
        self.phase.set_message(name.to_string());
        self.phase.set_length(len);
        self.phase.set_position(0);
        self.phase.reset_eta();
        self.with_log(|log| {
            log.phase_started = Instant::now();
            log.line(&format!("  {name}: 0/{len}"));
        });
    }

    /// Advances the current phase.
    pub fn inc(&self, n: u64) {
        self.phase.inc(n);
        self.with_log(|log| {
            if log.last_line.elapsed() < log.every {
                return;
            }
            let (pos, len) = (self.phase.position(), self.phase.length().unwrap_or(0));
            let spent = log.phase_started.elapsed();
            let eta = if pos > 0 && pos < len {
                format!(
                    ", eta {}",
                    fmt_duration(spent.mul_f64((len - pos) as f64 / pos as f64))
                )
            } else {
                String::new()
            };
            log.line(&format!("  {}: {pos}/{len}{eta}", self.phase.message()));
        });
    }

    /// Prints a line above the bars.
    pub fn println(&self, line: &str) {
        if self.log.is_some() {
            self.with_log(|log| log.line(line));
        } else if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    /// Clears the bars.
    pub fn finish(&self) {
        self.phase.finish_and_clear();
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(sink: &Shared) -> Vec<String> {
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        // Drop the elapsed-time stamp, which depends on the clock.
        text.lines()
            .map(|l| l.split_once("] ").unwrap().1.to_string())
            .collect()
    }

    #[test]
    fn log_mode_writes_cells_phases_and_counts() {
        let sink = Shared::default();
        let progress = Progress::lines(Box::new(sink.clone()), Duration::ZERO);
        let bar = progress.sweep(2);
        progress.cell(&bar, "sst2-freeal-s1");
        progress.phase("LLM labels pool", 4);
        progress.inc(1);
        progress.inc(3);
        progress.println("a warning");
        let got = lines(&sink);
        assert_eq!(got[0], "cell sst2-freeal-s1 (0 of 2 done)");
        assert_eq!(got[1], "  LLM labels pool: 0/4");
        assert!(
            got[2].starts_with("  LLM labels pool: 1/4, eta "),
            "{}",
            got[2]
        );
        assert_eq!(got[3], "  LLM labels pool: 4/4");
        assert_eq!(got[4], "a warning");
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn log_mode_throttles_counts_but_not_phases() {
        let sink = Shared::default();
        let progress = Progress::lines(Box::new(sink.clone()), Duration::from_secs(3600));
        progress.phase("train epoch 1/2", 100);
        for _ in 0..100 {
            progress.inc(1);
        }
        progress.phase("train epoch 2/2", 100);
        assert_eq!(
            lines(&sink),
            ["  train epoch 1/2: 0/100", "  train epoch 2/2: 0/100"]
        );
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(fmt_duration(Duration::from_secs(42)), "42s");
        assert_eq!(fmt_duration(Duration::from_secs(725)), "12m05s");
        assert_eq!(fmt_duration(Duration::from_secs(3720)), "1h02m");
    }
}
