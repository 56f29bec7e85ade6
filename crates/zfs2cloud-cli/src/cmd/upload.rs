//! `zfs2cloud upload`: the upload step on its own.

use zfs2cloud_core::Step;

use crate::app::{out, App};

/// Uploads every unconfirmed export (or only the one of `only`).
pub fn run(app: &App, only: Option<&str>) -> anyhow::Result<()> {
    app.require_intermediate("upload")?;
    let _lock = app.lock()?;
    let done = app
        .backup()
        .run_alone(&Step::Upload, |b| Ok(b.upload(only)?))?;
    if done.is_empty() {
        out("nothing to upload: every local export is confirmed uploaded");
    }
    for (snapshot, report) in done {
        out(&format!(
            "uploaded {snapshot}: {} file(s) sent, {} already complete on the remote",
            report.sent.len(),
            report.skipped.len()
        ));
    }
    Ok(())
}
