//! Progress of a long one-shot command (`reconcile`, `replay`): a spinner line on stderr when
//! it is a terminal, else a log line (info) every few seconds. Never on stdout.

use std::time::Duration;
use tokio::time::Instant;

/// How often progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A progress line, shown now ([`Progress::new`]) or once [`Progress::show`] says the work
/// is large enough to be worth one ([`Progress::hidden`]).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    /// Whether stderr is a terminal and the caller wants a spinner there.
    terminal: bool,
    last_log: Instant,
}

impl Progress {
    /// A spinner from now on a terminal; log lines otherwise.
    pub fn new() -> Progress {
        let mut progress = Progress::hidden(true);
        progress.show();
        progress
    }

    /// Nothing on the terminal until [`show`](Progress::show); log lines meanwhile when stderr
    /// is not one. `spinner: false` keeps the terminal clean (e.g. records go to it on stdout).
    pub fn hidden(spinner: bool) -> Progress {
        Progress {
            bar: None,
            terminal: spinner && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            last_log: Instant::now(),
        }
    }

    /// Shows the spinner (on a terminal; a no-op elsewhere or when already shown).
    pub fn show(&mut self) {
        if self.terminal && self.bar.is_none() {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            self.bar = Some(bar);
        }
    }

    /// A new message: drawn on the spinner, or logged when the last log line is old enough.
    pub fn update(&mut self, message: impl FnOnce() -> String) {
        match &self.bar {
            Some(bar) => bar.set_message(message()),
            None if !self.terminal && self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                tracing::info!("{}", message());
            }
            None => {}
        }
    }

    /// Clears the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}
