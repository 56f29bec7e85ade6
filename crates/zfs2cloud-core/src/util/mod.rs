//! Small helpers every layer may use: error chains, the clock and the
//! progress interface.

mod clock;
mod progress;

pub use clock::*;
pub use progress::*;

/// Renders an error and its `source()` chain as `a: b: c`.
#[must_use]
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        // thiserror's `transparent` repeats the inner message; skip repeats.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
