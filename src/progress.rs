//! Progress bars: one for the sweep, one for the current phase; hidden when stdout is not a
//! terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of a run.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    phase: ProgressBar,
}

impl Progress {
    /// Bars drawn on stderr when stdout is a terminal, hidden otherwise.
    pub fn new() -> Self {
        let target = if std::io::stdout().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self::with_target(target)
    }

    /// Bars that draw nothing (tests, child processes).
    pub fn hidden() -> Self {
        Self::with_target(ProgressDrawTarget::hidden())
    }

    fn with_target(target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let phase = multi.add(ProgressBar::new(0));
        phase.set_style(
            ProgressStyle::with_template(
                "  {msg:24} [{bar:30.green/white}] {pos}/{len} {per_sec} eta {eta}",
            )
            .expect("static template"),
        );
        Self { multi, phase }
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

    /// Starts a phase (annotation, an epoch, evaluation) of `len` units.
    pub fn phase(&self, name: &str, len: u64) {
        self.phase.set_message(name.to_string());
        self.phase.set_length(len);
        self.phase.set_position(0);
        self.phase.reset_eta();
    }

    /// Advances the current phase.
    pub fn inc(&self, n: u64) {
        self.phase.inc(n);
    }

    /// Prints a line above the bars.
    pub fn println(&self, line: &str) {
        if self.multi.is_hidden() {
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
