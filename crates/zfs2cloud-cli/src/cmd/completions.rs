//! `zfs2cloud completions <shell>`: the completion script, generated from
//! the same clap definition that parses the command line.

use std::io::Write as _;

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::args::Cli;

/// Prints the completion script for `shell` on stdout.
///
/// # Errors
///
/// Only if stdout cannot be written (a closed pipe is not an error).
pub fn run(shell: Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "zfs2cloud", &mut script);
    write_stdout(&script)
}

/// Writes generated text to stdout. A reader that stopped early (`| head`)
/// is not a failure; a full disk behind a redirect is.
///
/// # Errors
///
/// Any write error but a broken pipe.
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}
