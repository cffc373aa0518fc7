//! Phase messages: a spinner when stderr is a terminal, plain lines (only
//! for the slow phases) otherwise, so CI logs stay short and greppable.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports what a run is doing.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A spinner on a terminal, plain lines otherwise.
    pub fn for_stderr() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Self { bar: Some(bar) }
    }

    /// Shows a quick phase: only the spinner shows it.
    pub fn quick(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// Shows a slow phase: the spinner, or a line on stderr.
    pub fn slow(&self, message: String) {
        match &self.bar {
            Some(bar) => bar.set_message(message),
            None => eprintln!("{message}"),
        }
    }

    /// Hides the spinner (e.g. while a builder streams its output).
    pub fn pause(&self) {
        if let Some(bar) = &self.bar {
            bar.disable_steady_tick();
            bar.finish_and_clear();
        }
    }

    /// Shows the spinner again after [`Progress::pause`].
    pub fn resume(&mut self) {
        if self.bar.is_some() {
            *self = Self::for_stderr();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.pause();
    }
}
