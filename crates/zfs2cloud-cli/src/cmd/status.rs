//! `zfs2cloud status`: what zfs2cloud knows about the dataset.

use zfs2cloud_core::{collect_status, Uploader};

use crate::app::{out, App};
use crate::render;

/// Prints the status report as tables, or as JSON.
pub fn run(app: &App, json: bool, with_remote: bool) -> anyhow::Result<()> {
    let remote: Option<&dyn Uploader> = with_remote.then_some(&app.stages.rclone as _);
    let report = collect_status(&app.stages.zfs, &app.config, app.now, remote)?;
    if json {
        out(&serde_json::to_string_pretty(&report)?);
    } else {
        out(render::status::render_table(&report).trim_end());
    }
    Ok(())
}
