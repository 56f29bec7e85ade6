//! `zfs2cloud mount-snapshot`, `upload-snapshot-files` and
//! `umount-snapshot`: file mode's steps on their own.

use zfs2cloud_core::Step;

use crate::app::{out, App};

/// Runs one of file mode's steps under the run lock.
pub fn run(app: &App, step: &Step) -> anyhow::Result<()> {
    let _lock = app.lock()?;
    let summary = app.backup().run_single(step)?;
    out(&format!("{step}: {summary}"));
    Ok(())
}
