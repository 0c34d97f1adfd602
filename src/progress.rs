//! The one progress-bar helper: an indicatif bar on stderr with an ETA. When stderr is not a
//! terminal (a log file, a pipe), the bar's state is written as a plain line at most once every
//! [`LOG_EVERY`], so that a long run logged to a file still shows where it is; quiet output
//! hides it.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Asked between batches of a long run whether to stop (a front end's Ctrl-C).
pub type CancelCheck = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// The process's cancel check, if a front end set one.
static CANCEL: Mutex<Option<CancelCheck>> = Mutex::new(None);

/// Set (or clear, with None) the check that long runs ask between batches; the Python package
/// sets it around a benchmark so that Ctrl-C stops it after the batch under way (finished
/// batches stay saved in the run's journal).
pub fn set_cancel(check: Option<CancelCheck>) {
    *CANCEL.lock().unwrap_or_else(|e| e.into_inner()) = check;
}

/// Whether the cancel check asks to stop.
pub fn cancelled() -> bool {
    let check = CANCEL.lock().unwrap_or_else(|e| e.into_inner()).clone();
    check.is_some_and(|c| c())
}

/// An error when the cancel check asks to stop, so that a long run stops between batches with
/// `progress::check_cancel()?`.
pub fn check_cancel() -> crate::error::Result<()> {
    match cancelled() {
        true => Err(crate::error::Error::Invalid("interrupted".into())),
        false => Ok(()),
    }
}

/// How often a bar on a non-terminal stderr writes a line.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// A bar for `len` steps labelled `what`.
pub fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if quiet {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    } else if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::term_like_with_hz(
            Box::new(Lines::default()),
            1,
        ));
    }
    let style =
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

/// Print `line` on stderr above `pb`. (`ProgressBar::println` would go through the bar's draw
/// target, which on a non-terminal stderr writes at most a line a [`LOG_EVERY`] and so drops
/// most of them.)
pub fn say(pb: &ProgressBar, line: &str) {
    pb.suspend(|| eprintln!("{line}"));
}

/// A "terminal" that writes each drawn bar as one line on stderr, at most once a
/// [`LOG_EVERY`], and ignores cursor movement.
#[derive(Debug, Default)]
struct Lines {
    last: Mutex<Option<Instant>>,
}

impl TermLike for Lines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= LOG_EVERY);
        if due && !s.trim().is_empty() {
            *last = Some(Instant::now());
            writeln!(std::io::stderr(), "{}", s.trim_end())?;
        }
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write_line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
