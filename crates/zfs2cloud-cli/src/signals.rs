//! SIGINT, SIGTERM, SIGHUP and SIGQUIT: stop children, clean up, report,
//! exit non-zero.
//!
//! The handlers only set flags (async-signal-safe). The core library sees
//! the cancel flag: running commands are stopped, the export removes its
//! partial directory, `post_snapshot` still runs if `pre_snapshot` did,
//! `on_failure` runs, and the run lock is released as the stack unwinds.
//! SIGHUP matters: an SSH session that drops mid-run must not kill
//! zfs2cloud between `pre_snapshot` and `post_snapshot`, which would leave
//! the application stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use zfs2cloud_core::CancelToken;

/// The signals that interrupt a run, in order of precedence for the exit
/// code.
const HANDLED: [i32; 4] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT];

/// Which signals arrived.
#[derive(Debug)]
pub struct Signals {
    arrived: Vec<(i32, Arc<AtomicBool>)>,
}

impl Signals {
    /// 128 + the signal's number (as shells report it: 143 for SIGTERM, 130
    /// for SIGINT, 129 for SIGHUP, 131 for SIGQUIT), `None` if none arrived.
    pub fn exit_code(&self) -> Option<u8> {
        self.arrived
            .iter()
            .find(|(_, flag)| flag.load(Ordering::SeqCst))
            .and_then(|(signal, _)| u8::try_from(128 + signal).ok())
    }
}

/// Makes the handled signals set `cancel` (and remember which arrived)
/// instead of killing the process.
///
/// # Errors
///
/// If a handler cannot be registered.
pub fn install(cancel: &CancelToken) -> std::io::Result<Signals> {
    let mut arrived = Vec::new();
    for signal in HANDLED {
        let flag = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
        signal_hook::flag::register(signal, cancel.flag())?;
        arrived.push((signal, flag));
    }
    Ok(Signals { arrived })
}
