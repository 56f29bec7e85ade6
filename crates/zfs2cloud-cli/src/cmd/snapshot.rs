//! `zfs2cloud snapshot`: the snapshot step on its own.

use zfs2cloud_core::Step;

use crate::app::{out, App};

/// Takes a snapshot under the run lock, with the hooks around it.
pub fn run(app: &App) -> anyhow::Result<()> {
    let lock = app.lock()?;
    let backup = app.backup();
    let name = backup.run_alone(&Step::Snapshot, |b| Ok(b.snapshot(lock.is_some())?))?;
    if !app.runner.is_dry_run() {
        out(&format!("created snapshot {name}"));
    }
    Ok(())
}
