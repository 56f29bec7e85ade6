//! What the user sees of a running transfer, on stderr: a live display on
//! a terminal ([`bars`]), plain lines otherwise or with `-q` ([`plain`]).
//! stdout stays for results.

mod bars;
pub mod console;
pub mod plain;

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use zfs2cloud_core::{NoProgress, Progress};

use crate::args::Cli;

/// The display of this invocation, shared by every job (with
/// `--parallel`, the bar follows the transfer that began last).
static SHOWN: OnceLock<Box<dyn Progress>> = OnceLock::new();

/// Sets up the display: bars when stderr is a terminal and `-q` was not
/// given, else plain lines.
pub fn init(cli: &Cli) {
    SHOWN.get_or_init(|| {
        if !cli.quiet && std::io::stderr().is_terminal() {
            Box::new(bars::Bars::new())
        } else {
            Box::new(plain::PlainProgress::new(plain::interval_from_env()))
        }
    });
}

/// The display set up by [`init`] (nothing before that).
pub fn shown() -> &'static dyn Progress {
    SHOWN.get().map_or(&NoProgress, |p| p.as_ref())
}
