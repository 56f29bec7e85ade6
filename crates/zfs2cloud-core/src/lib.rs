//! zfs2cloud's library: back up ZFS datasets to any rclone remote through
//! snapshots.
//!
//! The stages of a backup are traits ([`stages`]) with process-backed
//! implementations ([`zfs::ZfsCli`], [`gpg::GpgEncryptor`]); every external
//! program runs through one [`process::Runner`]. Decisions are pure
//! functions ([`plan`]); orchestration lives in [`snapshot`] and [`export`].
//! There is no terminal UI here: progress goes through
//! [`progress::Progress`] and diagnostics through the `log` facade.

pub mod backup;
pub mod catalog;
pub mod clock;
pub mod compress;
pub mod config;
pub mod export;
pub mod filemode;
pub mod gpg;
pub mod lock;
pub mod names;
pub mod pipelined;
pub mod plan;
pub mod process;
pub mod progress;
pub mod prune;
pub mod rclone;
pub mod restore;
pub mod snapshot;
pub mod stages;
pub mod status;
pub mod steps;
pub mod upload;
pub mod verify;
pub mod zfs;

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
