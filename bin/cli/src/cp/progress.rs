//! The progress of a copy on stderr: a bar (bytes, rate, ETA) or a spinner when stderr is a
//! terminal, nothing at all when it is piped.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress on stderr when it is a terminal; nothing at all when it is not, so piped stderr
/// holds only rmm's messages.
#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    pub(super) visible: bool,
}

impl Progress {
    pub(super) fn for_stderr() -> Self {
        Self {
            visible: std::io::stderr().is_terminal(),
        }
    }

    /// A bar of `total` bytes at `position`: bytes, rate, ETA.
    pub(super) fn bar(self, what: &str, total: u64, position: u64) -> Bar {
        if !self.visible {
            return Bar(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:>11} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what.to_owned());
        bar.set_position(position);
        // The rate is of this run's bytes, not of those a resume skipped.
        bar.reset_eta();
        Bar(bar)
    }

    /// A spinner with `message`, for a wait of unknown length.
    pub(super) fn spinner(self, message: String) -> Bar {
        if !self.visible {
            return Bar(ProgressBar::hidden());
        }
        let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        spinner.set_message(message);
        spinner.enable_steady_tick(Duration::from_millis(120));
        Bar(spinner)
    }
}

/// A progress bar that is cleared from the terminal when dropped, however the step ended, so
/// the next line starts clean.
#[derive(Debug)]
pub(super) struct Bar(ProgressBar);

impl Bar {
    pub(super) fn inc(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    /// A handle to advance it from elsewhere (the upload's body stream).
    pub(super) fn handle(&self) -> ProgressBar {
        self.0.clone()
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
