//! SIGINT and SIGTERM: stop children, clean up, report, exit non-zero.
//!
//! The handlers only set flags (async-signal-safe). The core library sees
//! the cancel flag: running commands are stopped, the export removes its
//! partial directory, `post_snapshot` still runs if `pre_snapshot` did,
//! `on_failure` runs, and the run lock is released as the stack unwinds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use zfs2cloud_core::process::CancelToken;

/// Which signals arrived.
#[derive(Debug)]
pub struct Signals {
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Signals {
    /// 130 after SIGINT, 143 after SIGTERM (128 + signal number, as shells
    /// report), `None` if neither arrived.
    pub fn exit_code(&self) -> Option<u8> {
        if self.term.load(Ordering::SeqCst) {
            Some(143)
        } else if self.int.load(Ordering::SeqCst) {
            Some(130)
        } else {
            None
        }
    }
}

/// Makes SIGINT and SIGTERM set `cancel` (and remember which arrived)
/// instead of killing the process.
///
/// # Errors
///
/// If a handler cannot be registered.
pub fn install(cancel: &CancelToken) -> std::io::Result<Signals> {
    let int = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    for (signal, which) in [(SIGINT, &int), (SIGTERM, &term)] {
        signal_hook::flag::register(signal, Arc::clone(which))?;
        signal_hook::flag::register(signal, cancel.flag())?;
    }
    Ok(Signals { int, term })
}
