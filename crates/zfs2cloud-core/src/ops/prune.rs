//! Retention: which local exports and which of zfs2cloud's snapshots can go.
//!
//! The decisions are pure functions of the state and the time, and every
//! "keep" carries its reason, so `prune-* ` without `-y` can show exactly
//! what would happen and why.

use std::fs;
use std::path::PathBuf;

use crate::model::SnapshotInfo;
use crate::model::{DatasetName, SnapTime};
use crate::model::{ExportLayout, LocalExport, PARTIAL_SUFFIX};
use crate::policy::{
    plan_export_prune, plan_snapshot_prune, ExportDecision, SnapshotDecision, SnapshotReason,
    SnapshotRetention, Verdict,
};
use crate::stages::ZfsError;
use crate::stages::{PruneError, Pruner};

/// Destroys what [`plan_snapshot_prune`] marks for removal (only when `act`;
/// otherwise only decides), and returns the decisions.
///
/// A snapshot that turns out to be busy (held by someone else meanwhile)
/// is kept with a warning; any other failure stops the step.
///
/// # Errors
///
/// [`PruneError`] if a destroy fails for another reason, or if a decision
/// names a snapshot of another dataset (which would be a bug).
pub fn prune_snapshots(
    pruner: &dyn Pruner,
    dataset: &DatasetName,
    snapshots: &[SnapshotInfo],
    policy: &SnapshotRetention<'_>,
    act: bool,
) -> Result<Vec<SnapshotDecision>, PruneError> {
    let mut decisions = plan_snapshot_prune(snapshots, policy);
    if !act {
        return Ok(decisions);
    }
    for d in &mut decisions {
        if d.verdict != Verdict::Remove {
            continue;
        }
        if d.name.dataset() != dataset {
            return Err(PruneError::Foreign(d.name.to_string()));
        }
        match pruner.prune_snapshot(&d.name) {
            Ok(()) => log::info!("destroyed {} ({})", d.name, d.why()),
            Err(PruneError::Zfs(ZfsError::Busy { .. })) => {
                log::warn!("{} is busy (held?); kept", d.name);
                *d = SnapshotDecision::keep(d.name.clone(), vec![SnapshotReason::Busy]);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(decisions)
}

/// Leftover `<snap>[-full].partial` directories of killed exports. They
/// never look complete; removing them only frees space. Call this only
/// under the run lock, when no export can be running.
///
/// # Errors
///
/// I/O errors reading the base directory.
pub fn stale_partials(layout: &ExportLayout) -> std::io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(layout.basedir()) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(PARTIAL_SUFFIX) else {
            continue;
        };
        let snap = stem.strip_suffix("-full").unwrap_or(stem);
        if SnapTime::parse(snap).is_some() && entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes the exports marked for removal and stale partial exports (only
/// when `act`), and returns the decisions.
///
/// # Errors
///
/// [`PruneError::Io`] if a directory cannot be removed.
pub fn prune_exports(
    layout: &ExportLayout,
    exports: &[LocalExport],
    uploaded: &dyn Fn(&LocalExport) -> bool,
    act: bool,
) -> Result<Vec<ExportDecision>, PruneError> {
    let mut decisions = plan_export_prune(exports, uploaded);
    let partials = stale_partials(layout).map_err(|source| PruneError::Io {
        path: layout.basedir().display().to_string(),
        source,
    })?;
    decisions.extend(partials.into_iter().map(|dir| ExportDecision {
        dir,
        verdict: Verdict::Remove,
    }));
    for d in &decisions {
        match &d.verdict {
            Verdict::Keep(why) if why.starts_with("NOT UPLOADED") => {
                log::warn!("keeping {}: {why}; run `zfs2cloud upload`", d.dir.display());
            }
            Verdict::Remove if act => {
                fs::remove_dir_all(&d.dir).map_err(|source| PruneError::Io {
                    path: d.dir.display().to_string(),
                    source,
                })?;
                log::info!("removed {}", d.dir.display());
            }
            _ => {}
        }
    }
    Ok(decisions)
}
