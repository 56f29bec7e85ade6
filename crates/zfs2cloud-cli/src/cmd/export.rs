//! `zfs2cloud export`: the export step on its own.

use anyhow::bail;

use zfs2cloud_core::{ExportOptions, ExportOutcome, ExportStepOutcome, Step, StreamReport};

use crate::app::{out, App, UsageError};

/// Exports a snapshot (`options`), then says what was written where.
pub fn run(app: &App, options: &ExportOptions) -> anyhow::Result<()> {
    app.require_intermediate("export")?;
    if app.stages.encryptor(&app.config).is_none() {
        bail!(UsageError("intermediate mode needs passphrase_file".into()));
    }
    let _lock = app.lock()?;
    let outcome = app
        .backup()
        .run_alone(&Step::Export, |b| b.export(options))?;
    out(&describe(app, &outcome));
    Ok(())
}

fn describe(app: &App, outcome: &ExportStepOutcome) -> String {
    match outcome {
        ExportStepOutcome::Exported { plan, outcome } => {
            let m = &outcome.manifest;
            format!(
                "exported {} ({}{}) to {}: {} chunk(s), {} bytes",
                plan.snapshot,
                plan.kind,
                plan.base
                    .as_ref()
                    .map(|b| format!(" from {}", b.snap()))
                    .unwrap_or_default(),
                place(app, outcome),
                m.chunks.len(),
                m.total_size
            )
        }
        ExportStepOutcome::AlreadyExported { snapshot, dir } => format!(
            "{snapshot} is already exported at {}; nothing to do (remove that directory to export it again)",
            dir.display()
        ),
        ExportStepOutcome::DryRun { plan, dir } => format!(
            "[dry-run] would export {} as {} ({}) to {}",
            plan.snapshot,
            plan.kind,
            plan.reason,
            dir.display()
        ),
    }
}

/// Where the export went: its directory, and the remote if it was
/// uploaded while exporting.
fn place(app: &App, outcome: &ExportOutcome) -> String {
    let streamed: Option<&StreamReport> = outcome.streamed.as_ref();
    match streamed {
        None => outcome.dir.display().to_string(),
        Some(report) => format!(
            "{} and uploaded it while exporting (at most {} chunk(s) on local disk at once)",
            if app.config.keep_local_export {
                outcome.dir.display().to_string()
            } else {
                "local disk".to_owned()
            },
            report.peak_chunks_on_disk
        ),
    }
}
