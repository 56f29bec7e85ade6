//! stderr, shared by the log and the progress display: while bars are
//! drawn, a line goes above them (indicatif's `MultiProgress::println`),
//! so neither garbles the other.

use std::io::Write as _;
use std::sync::{Mutex, PoisonError};

use indicatif::MultiProgress;

/// The bars on screen, if any.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Lines from now on go above `bars` (`None`: straight to stderr).
pub fn set_bars(bars: Option<MultiProgress>) {
    *BARS.lock().unwrap_or_else(PoisonError::into_inner) = bars;
}

/// Writes `text` and a newline to stderr, above the bars if there are any.
pub fn line(text: &str) {
    let bars = BARS.lock().unwrap_or_else(PoisonError::into_inner);
    match bars.as_ref() {
        Some(bars) if !bars.is_hidden() => {
            bars.suspend(|| write_line(text));
        }
        _ => write_line(text),
    }
}

/// Runs `f` (which writes to stdout) with the bars, if any, taken off the
/// screen, so a result line printed while a bar is shown does not garble it.
pub fn above_bars(f: impl FnOnce()) {
    let bars = BARS.lock().unwrap_or_else(PoisonError::into_inner);
    match bars.as_ref() {
        Some(bars) if !bars.is_hidden() => bars.suspend(f),
        _ => f(),
    }
}

fn write_line(text: &str) {
    let mut stderr = std::io::stderr().lock();
    // A closed stderr must not turn the run into a failure.
    // Names in these lines come from files, zfs and the remote.
    let text = zfs2cloud_core::escape_controls(text);
    let _ = writeln!(stderr, "zfs2cloud: {text}");
}
