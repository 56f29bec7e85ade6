//! Intermediate-mode export: `zfs send [-i base] | gpg | split`, run as one
//! pipeline inside the program, into the original tool's layout:
//!
//! ```text
//! <intermediate_basedir>/<snap>[-full]/<dataset with / as ->@<snap>.zfs.gpg.0000
//!                                                          ….zfs.gpg.0001
//!                                      SHA256SUMS
//!                                      manifest.json
//! ```
//!
//! The chunks together are ONE gpg message, so
//! `cat <chunks> | gpg --decrypt | zfs recv` restores with stock tools.
//!
//! The export is written to `<dir>.partial` and renamed into place only
//! after every stage of the pipeline succeeded and every file and the
//! directory are fsynced. A failed or killed export never leaves anything
//! that looks complete. Directories are created 0700 and files 0600.
//!
//! * this module: the `export` step (plan, run, record in the pool);
//! * `write`: one export's directory, manifest and rename;
//! * `pipeline`: the stages, stopped together, and which one failed;
//! * `chunk_writer`: the chunk files and their fsync;
//! * `stream_upload`: uploading chunks while exporting.

mod chunk_writer;
mod pipeline;
#[cfg(test)]
mod step_tests;
mod stream_upload;
mod write;

pub use stream_upload::{StreamReport, StreamUpload};
pub use write::write_export;

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::model::remote_join;
use crate::model::DatasetName;
use crate::model::ExportKind;
use crate::model::SnapshotName;
use crate::model::PROP_SEND_FLAGS;
use crate::model::{recipients_property, PROP_RECIPIENTS};
use crate::model::{
    upload_record, SnapshotInfo, HOLD_TAG, PROP_BASE, PROP_KIND, PROP_LEVEL, PROP_UPLOADED,
};
use crate::model::{CompressionSettings, ExportLayout, LocalExport, Manifest};
use crate::model::{Encryption, SendFlags};
use crate::ops::upload::{claim_remote, upload_export, RemoteClaim, UploadStepError};
use crate::policy::{holds_after, plan_export, BaseFacts, ExportPlan, PlanError, Strategy};
use crate::process::{CancelToken, Runner};
use crate::stages::{compressor_for, GpgError, ZfsError};
use crate::stages::{Encryptor, Exporter, Snapshotter};
use crate::util::Progress;
use write::remove_partial;

/// `split -a 4`: chunk suffixes are four digits, so that a shell glob lists
/// the chunks in order.
const MAX_CHUNKS: usize = 10_000;

/// Errors of the export stage.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// `zfs send` could not start or failed (e.g. died mid-stream).
    #[error("zfs send failed")]
    Send(#[source] ZfsError),
    /// gpg could not start or failed.
    #[error("gpg encryption failed")]
    Encrypt(#[source] GpgError),
    /// Writing the chunks failed (disk full, permissions).
    #[error("writing the export to {} failed", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The run was interrupted; the pipeline was stopped and the partial
    /// export removed.
    #[error("interrupted; the partial export was removed")]
    Interrupted,
    /// The stream needs more than 10000 chunks.
    #[error(
        "the export needs more than {MAX_CHUNKS} chunks of {split_size} bytes; raise split_size"
    )]
    TooManyChunks {
        /// The configured chunk size.
        split_size: u64,
    },
    /// Listing the dataset's snapshots failed.
    #[error("cannot list the snapshots of the dataset")]
    List(#[source] ZfsError),
    /// Nothing (valid) to export.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Recording the export in the pool (properties, hold) failed.
    #[error("the export was written, but recording it on the snapshot failed")]
    Record(#[source] ZfsError),
    /// zstd failed (not because gpg went away: that is gpg's error).
    #[error("zstd compression failed")]
    Compress(#[source] io::Error),
    /// Uploading while exporting failed for good, so the export stopped.
    /// The remote copy has no manifest: it counts as incomplete, and the
    /// next run starts a fresh backup.
    #[error(
        "uploading while exporting failed; the remote copy of this backup is not confirmed (it \
         has no manifest unless every chunk was confirmed), and the next run starts afresh"
    )]
    Upload(#[source] UploadStepError),
    /// The remote directory is not the dataset's (or could not be checked),
    /// so the export did not start: nothing was written, here or there.
    #[error(transparent)]
    Remote(UploadStepError),
    /// The send flags or recipients recorded on a full
    /// (`zfs2cloud:send_flags`, `zfs2cloud:recipients`) could not be read,
    /// so it is unknown whether an incremental may be based on it; nothing
    /// was exported.
    #[error("cannot read the send flags or recipients recorded on {snapshot}")]
    SendFlags {
        /// The full.
        snapshot: String,
        /// Why.
        #[source]
        source: ZfsError,
    },
    /// The public keys of `encryption = "gpg-recipients"` cannot be
    /// used (expired, revoked, not a public key, unreadable); nothing was
    /// exported.
    #[error("the recipients' public keys cannot be used")]
    Recipients(#[source] GpgError),
}

/// Settings for one export.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// Chunk size in bytes.
    pub split_size: u64,
    /// Recorded as the manifest's `created_at`.
    pub created_at: DateTime<Utc>,
    /// Stops the pipeline when set (SIGINT/SIGTERM).
    pub cancel: CancelToken,
    /// Compression before encryption.
    pub compression: CompressionSettings,
    /// The flags the exporter sends with (the config's, as given to
    /// [`ZfsCli::with_send_flags`](crate::stages::ZfsCli::with_send_flags)):
    /// recorded in the manifest and on the snapshot, and an incremental is
    /// only based on a full sent with the same.
    pub send_flags: SendFlags,
    /// How the encryptor encrypts, for the manifest.
    pub encryption: Encryption,
    /// The fingerprints the encryptor encrypts to (`gpg-recipients`; empty
    /// otherwise), as [`Encryptor::recipients`] gives them: recorded in the
    /// manifest and on a full, and an incremental is only based on a full
    /// encrypted to the same.
    pub recipients: Vec<String>,
}

/// A finished export.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// The export directory: the complete one, or, when the chunks were
    /// uploaded and deleted while exporting, the partial one that holds
    /// only the manifest and `SHA256SUMS` until the upload is confirmed.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// What the upload workers did, for a pipelined export.
    pub streamed: Option<StreamReport>,
}

/// What the `export` command was asked to do.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// A snapshot name (part after `@`), or `None` for the newest of
    /// zfs2cloud's own snapshots.
    pub target: Option<String>,
    /// `--full` / `--incremental`.
    pub force: Option<ExportKind>,
    /// How often a full is made and what incrementals are based on.
    pub strategy: Strategy,
    /// The configured remote: a full is a base for incrementals only if its
    /// upload to this remote is confirmed (or its export is still local).
    pub remote: String,
    /// Chunk size and timestamp.
    pub settings: ExportSettings,
}

/// What the `export` step did.
#[derive(Debug, Clone)]
pub enum ExportStepOutcome {
    /// A new export was written and recorded.
    Exported {
        /// What was exported and why.
        plan: ExportPlan,
        /// Where, and its manifest.
        outcome: Box<ExportOutcome>,
    },
    /// A complete export of the snapshot exists already; nothing was done.
    AlreadyExported {
        /// The snapshot.
        snapshot: SnapshotName,
        /// The existing export.
        dir: PathBuf,
    },
    /// Dry run: the pipeline and state changes were reported, not run.
    DryRun {
        /// What would be exported and why.
        plan: ExportPlan,
        /// Where it would go.
        dir: PathBuf,
    },
}

/// The `export` step: plan, run the pipeline, record the result in the pool.
///
/// A snapshot that already has a complete local export is not exported
/// again (remove its directory to force that).
///
/// # Errors
///
/// [`ExportError`] saying which part failed.
#[allow(clippy::too_many_arguments)]
pub fn export_step(
    snapshotter: &dyn Snapshotter,
    exporter: &dyn Exporter,
    encryptor: &dyn Encryptor,
    runner: &Runner,
    layout: &ExportLayout,
    dataset: &DatasetName,
    request: &ExportRequest,
    stream: Option<&StreamUpload<'_>>,
    progress: &dyn Progress,
) -> Result<ExportStepOutcome, ExportError> {
    let snapshots = snapshotter.list(dataset).map_err(ExportError::List)?;
    let plan = plan_step(snapshotter, layout, &snapshots, request)?;
    if let Some((dir, kind)) = layout.find_complete(&plan.snapshot) {
        record_found_export(
            snapshotter,
            &snapshots,
            &plan,
            &dir,
            kind,
            dataset,
            &request.strategy,
        )?;
        return Ok(ExportStepOutcome::AlreadyExported {
            snapshot: plan.snapshot,
            dir,
        });
    }
    log::info!("{}: {}", plan.snapshot, plan.reason);
    let stream = stream.filter(|s| base_uploaded(&plan, &snapshots, s));
    if let Some(s) = stream {
        claim_remote(&RemoteClaim {
            snapshotter,
            uploader: s.uploader,
            remote: s.remote,
            dataset,
            retry: &s.retry,
            cancel: &request.settings.cancel,
            now: s.now,
        })
        .map_err(ExportError::Remote)?;
    }
    let dir = layout.final_dir(&plan.snapshot, plan.kind);
    let pipeline = describe_pipeline(
        exporter,
        encryptor,
        layout,
        &plan,
        &request.settings,
        stream,
    );
    if runner.skip_in_dry_run(&pipeline) {
        // The snapshotter runs with the same dry-run runner, so this only
        // reports the `zfs set` / `zfs hold` / `zfs release` it would run.
        record_export(snapshotter, &snapshots, &plan).map_err(ExportError::Record)?;
        return Ok(ExportStepOutcome::DryRun { plan, dir });
    }
    let outcome = write_export(
        exporter,
        encryptor,
        layout,
        &plan,
        &request.settings,
        stream,
        progress,
    )?;
    match stream {
        None => record_export(snapshotter, &snapshots, &plan).map_err(ExportError::Record)?,
        Some(s) => finish_streamed(
            snapshotter,
            &snapshots,
            &plan,
            &outcome,
            s,
            &request.settings.cancel,
        )?,
    }
    Ok(ExportStepOutcome::Exported {
        plan,
        outcome: Box::new(outcome),
    })
}

/// What to export, from the snapshots and the request.
fn plan_step(
    snapshotter: &dyn Snapshotter,
    layout: &ExportLayout,
    snapshots: &[SnapshotInfo],
    request: &ExportRequest,
) -> Result<ExportPlan, ExportError> {
    // A full may carry incrementals once its upload is confirmed, or while
    // its complete export waits on local disk for the upload step (which
    // sends a base before anything based on it).
    let base_usable = |s: &SnapshotInfo| {
        s.uploaded_to(&request.remote) || layout.find_complete(&s.name).is_some()
    };
    let records = fulls_records(snapshotter, layout, snapshots, &base_usable)?;
    let record_of = |s: &SnapshotInfo| records.iter().find(|r| r.name == s.name);
    let flags_of = |s: &SnapshotInfo| record_of(s).and_then(|r| r.flags.clone());
    let recipients_of = |s: &SnapshotInfo| record_of(s).and_then(|r| r.recipients.clone());
    let bases = BaseFacts {
        usable: &base_usable,
        flags: &flags_of,
        recipients: &recipients_of,
        export_recipients: &request.settings.recipients,
    };
    Ok(plan_export(
        snapshots,
        request.target.as_deref(),
        &request.strategy,
        request.force,
        &request.settings.send_flags,
        &bases,
    )?)
}

/// What is recorded of a full that could be a base.
struct FullRecord {
    name: SnapshotName,
    /// Its send flags; `None`: a record that cannot be read.
    flags: Option<SendFlags>,
    /// The fingerprints it was encrypted to (empty: not to public keys);
    /// `None`: a record that cannot be read.
    recipients: Option<Vec<String>>,
}

/// The records of every own full that could be a base: each from its
/// property ([`PROP_SEND_FLAGS`], [`PROP_RECIPIENTS`]), else from its local
/// manifest, else none (exports from before the record).
fn fulls_records(
    snapshotter: &dyn Snapshotter,
    layout: &ExportLayout,
    snapshots: &[SnapshotInfo],
    usable: &dyn Fn(&SnapshotInfo) -> bool,
) -> Result<Vec<FullRecord>, ExportError> {
    let candidates = snapshots
        .iter()
        .filter(|s| s.kind == Some(ExportKind::Full) && s.own_time().is_some() && usable(s));
    let mut out = Vec::new();
    for full in candidates {
        let property = |name: &str| {
            snapshotter
                .property(&full.name, name)
                .map_err(|source| ExportError::SendFlags {
                    snapshot: full.name.to_string(),
                    source,
                })
        };
        let flags = property(PROP_SEND_FLAGS)?;
        let recipients = property(PROP_RECIPIENTS)?;
        let manifest = || local_manifest(layout, &full.name);
        out.push(FullRecord {
            name: full.name.clone(),
            flags: match flags {
                Some(text) => SendFlags::from_property(&text)
                    .inspect_err(|e| log::warn!("{}: {PROP_SEND_FLAGS}: {e}", full.name))
                    .ok(),
                None => Some(manifest().map(|m| m.send_flags).unwrap_or_default()),
            },
            recipients: Some(match recipients {
                Some(text) => text.split(',').map(str::to_owned).collect(),
                None => manifest().map(|m| m.recipients).unwrap_or_default(),
            }),
        });
    }
    Ok(out)
}

/// The local manifest of `snapshot`'s complete export, if there is one
/// (its export may be pruned, and then recorded on the snapshot).
fn local_manifest(layout: &ExportLayout, snapshot: &SnapshotName) -> Option<Manifest> {
    layout
        .find_complete(snapshot)
        .and_then(|(dir, _)| crate::model::read_manifest(&dir).ok())
}

/// A run that died between the rename and recording it left the export in
/// `dir` unrecorded; records it now (idempotent), from what the export
/// actually is.
fn record_found_export(
    snapshotter: &dyn Snapshotter,
    snapshots: &[SnapshotInfo],
    plan: &ExportPlan,
    dir: &Path,
    kind: ExportKind,
    dataset: &DatasetName,
    strategy: &Strategy,
) -> Result<(), ExportError> {
    let target = snapshots.iter().find(|s| s.name == plan.snapshot);
    if !target.is_some_and(|s| s.kind != Some(kind)) {
        return Ok(());
    }
    let manifest = crate::model::read_manifest(dir).map_err(|source| ExportError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let recorded = ExportPlan {
        snapshot: plan.snapshot.clone(),
        kind,
        base: manifest
            .base
            .as_deref()
            .and_then(|b| SnapshotName::new(dataset.clone(), b).ok()),
        level: manifest
            .level
            .unwrap_or(u32::from(kind == ExportKind::Incremental)),
        reason: "recording an export found complete on disk".into(),
        send_flags: manifest.send_flags,
        recipients: manifest.recipients,
        holds: Vec::new(),
    };
    let recorded = ExportPlan {
        holds: holds_after(strategy, snapshots, &recorded),
        ..recorded
    };
    log::warn!(
        "{}: recording the complete export found at {}",
        plan.snapshot,
        dir.display()
    );
    record_export(snapshotter, snapshots, &recorded).map_err(ExportError::Record)
}

/// Whether the export may go up while exporting: only if its base (if any)
/// is already confirmed on the remote; otherwise the upload step must send
/// the base first, and this export waits on disk for it.
fn base_uploaded(plan: &ExportPlan, snapshots: &[SnapshotInfo], stream: &StreamUpload<'_>) -> bool {
    let uploaded = plan.base.as_ref().is_none_or(|b| {
        snapshots
            .iter()
            .any(|i| &i.name == b && i.uploaded_to(stream.remote))
    });
    if !uploaded {
        log::warn!(
            "{}: its base is not confirmed on {} yet, so it is exported to local disk in full \
             and left to the upload step (not uploaded while exporting)",
            plan.snapshot,
            stream.remote
        );
    }
    uploaded
}

/// The pipeline in words, for the log and `--dry-run`.
fn describe_pipeline(
    exporter: &dyn Exporter,
    encryptor: &dyn Encryptor,
    layout: &ExportLayout,
    plan: &ExportPlan,
    settings: &ExportSettings,
    stream: Option<&StreamUpload<'_>>,
) -> String {
    let compression = compressor_for(settings.compression)
        .map(|c| format!(" | {}", c.describe()))
        .unwrap_or_default();
    let mut pipeline = format!(
        "{}{compression} | {} | split into {}/{}0000, … ({} bytes each)",
        exporter.describe(&plan.snapshot, plan.base.as_ref()),
        encryptor.describe(),
        layout.partial_dir(&plan.snapshot, plan.kind).display(),
        ExportLayout::chunk_prefix(&plan.snapshot),
        settings.split_size,
    );
    if let Some(s) = stream {
        pipeline.push_str(&format!(
            ", uploading each sealed chunk to {} ({} at once){}, then SHA256SUMS and \
             manifest.json last",
            remote_join(s.remote, &ExportLayout::dir_name(&plan.snapshot, plan.kind)),
            s.concurrency,
            if s.keep_local {
                ""
            } else {
                " and deleting it once confirmed"
            },
        ));
    }
    if stream.is_none_or(|s| s.keep_local) {
        pipeline.push_str(&format!(
            ", then rename to {}",
            layout.final_dir(&plan.snapshot, plan.kind).display()
        ));
    }
    pipeline
}

/// Completes a pipelined export: `SHA256SUMS` and the manifest go last,
/// after the remote listing holds every chunk, then the upload is recorded
/// on the snapshot. Without a local copy, the export is recorded only once
/// the remote is complete, and the local directory (manifest and sums) is
/// removed either way.
fn finish_streamed(
    snapshotter: &dyn Snapshotter,
    snapshots: &[SnapshotInfo],
    plan: &ExportPlan,
    outcome: &ExportOutcome,
    stream: &StreamUpload<'_>,
    cancel: &CancelToken,
) -> Result<(), ExportError> {
    let dir_name = ExportLayout::dir_name(&plan.snapshot, plan.kind);
    let remote_dir = remote_join(stream.remote, &dir_name);
    let local = LocalExport {
        dir: outcome.dir.clone(),
        dir_name: dir_name.clone(),
        snapshot: plan.snapshot.clone(),
        manifest: outcome.manifest.clone(),
    };
    let confirmed = outcome
        .streamed
        .as_ref()
        .map(|r| r.confirmed.clone())
        .unwrap_or_default();
    let result = (|| {
        if stream.keep_local {
            // The local export is complete: record it as any export, so
            // the upload step can finish the job if this fails.
            record_export(snapshotter, snapshots, plan).map_err(ExportError::Record)?;
        }
        upload_export(
            stream.uploader,
            &local,
            &remote_dir,
            &stream.retry,
            cancel,
            true,
            &confirmed,
            // Only SHA256SUMS is left to send: the export showed the rest.
            &crate::util::NoProgress,
        )
        .map_err(ExportError::Upload)?;
        if !stream.keep_local {
            record_export(snapshotter, snapshots, plan).map_err(ExportError::Record)?;
        }
        let record = upload_record(
            &stream.now.to_rfc3339_opts(SecondsFormat::Secs, true),
            &dir_name,
            stream.remote,
        );
        snapshotter
            .set_property(&plan.snapshot, PROP_UPLOADED, &record)
            .map_err(ExportError::Record)
    })();
    if !stream.keep_local {
        remove_partial(&outcome.dir);
    }
    result
}

/// Records a finished export in the pool, where it survives the loss of
/// `intermediate_basedir`:
///
/// * [`PROP_SEND_FLAGS`] on a full sent with flags and [`PROP_RECIPIENTS`]
///   on a full encrypted to public keys (before [`PROP_KIND`], so that a
///   full is never recorded without them; a full without has none, and a
///   re-export drops an old value);
/// * [`PROP_KIND`] (and [`PROP_BASE`] and [`PROP_LEVEL`] for an
///   incremental) on the snapshot;
/// * a [`HOLD_TAG`] hold on every snapshot in `plan.holds` (the future
///   bases), so nothing (not even a manual `zfs destroy`) removes a base
///   while incrementals will depend on it, and then the release of that
///   hold from every other exported snapshot.
///
/// # Errors
///
/// [`ZfsError`] from setting the property or the hold. Releasing an old
/// hold that is already gone is not an error.
pub fn record_export(
    snapshotter: &dyn Snapshotter,
    snapshots: &[SnapshotInfo],
    plan: &ExportPlan,
) -> Result<(), ZfsError> {
    let target = snapshots.iter().find(|s| s.name == plan.snapshot);
    // A new export of this snapshot is not uploaded, whatever an earlier
    // one was: drop any old confirmation first.
    if target.is_some_and(|s| s.uploaded.is_some()) {
        snapshotter.clear_property(&plan.snapshot, PROP_UPLOADED)?;
    }
    let flags = &plan.send_flags;
    let flags = (!flags.is_empty()).then(|| flags.to_property());
    record_on_full(snapshotter, target, plan, PROP_SEND_FLAGS, flags)?;
    let recipients = (!plan.recipients.is_empty()).then(|| recipients_property(&plan.recipients));
    record_on_full(snapshotter, target, plan, PROP_RECIPIENTS, recipients)?;
    snapshotter.set_property(&plan.snapshot, PROP_KIND, plan.kind.as_str())?;
    if let Some(base) = &plan.base {
        snapshotter.set_property(&plan.snapshot, PROP_BASE, base.snap())?;
    }
    if plan.kind == ExportKind::Incremental {
        snapshotter.set_property(&plan.snapshot, PROP_LEVEL, &plan.level.to_string())?;
    }
    update_holds(snapshotter, snapshots, plan)
}

/// Holds `plan.holds` and releases zfs2cloud's hold from every other
/// exported snapshot. New holds come first, so a base is held at every
/// moment. A snapshot that already carries a user reference is taken to
/// carry ours (placed when it became a base); only the exported snapshot
/// itself is always held, as its old holds say nothing about this export.
fn update_holds(
    snapshotter: &dyn Snapshotter,
    snapshots: &[SnapshotInfo],
    plan: &ExportPlan,
) -> Result<(), ZfsError> {
    let userrefs = |name: &SnapshotName| {
        snapshots
            .iter()
            .find(|s| &s.name == name)
            .map_or(0, |s| s.userrefs)
    };
    for name in &plan.holds {
        if *name == plan.snapshot || userrefs(name) == 0 {
            match snapshotter.hold(name, HOLD_TAG) {
                Ok(()) | Err(ZfsError::TagExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let released = snapshots.iter().filter(|s| {
        s.own_time().is_some()
            && s.userrefs > 0
            && (s.kind.is_some() || s.name == plan.snapshot)
            && !plan.holds.contains(&s.name)
    });
    for old in released {
        match snapshotter.release(&old.name, HOLD_TAG) {
            Ok(()) => log::info!(
                "released hold {HOLD_TAG:?} from {}: no future incremental is based on it",
                old.name
            ),
            Err(ZfsError::NoSuchTag { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Records on a full what decides whether an incremental may be based
/// on it (only fulls are bases, so only theirs are asked): `value` of
/// `property` ([`PROP_SEND_FLAGS`], [`PROP_RECIPIENTS`]). Without a value,
/// nothing is set (no record means none), but a snapshot exported before
/// may carry one, which goes.
fn record_on_full(
    snapshotter: &dyn Snapshotter,
    target: Option<&SnapshotInfo>,
    plan: &ExportPlan,
    property: &str,
    value: Option<String>,
) -> Result<(), ZfsError> {
    if plan.kind != ExportKind::Full {
        return Ok(());
    }
    if let Some(value) = value {
        return snapshotter.set_property(&plan.snapshot, property, &value);
    }
    if target.is_some_and(|s| s.kind.is_some()) {
        snapshotter.clear_property(&plan.snapshot, property)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::model::{sha256sums_text, ChunkEntry};
    use crate::stages::MockSnapshotter;
    use mockall::predicate::{always, eq};
    use mockall::Sequence;

    fn sn(s: &str) -> SnapshotName {
        SnapshotName::parse(&format!("tank/data@{s}")).unwrap()
    }

    fn info(s: &str, kind: Option<ExportKind>, userrefs: u64) -> SnapshotInfo {
        SnapshotInfo {
            level: None,
            name: sn(s),
            userrefs,
            kind,
            base: None,
            uploaded: None,
        }
    }

    #[test]
    fn layout_matches_the_original_tool() {
        let snap = SnapshotName::parse("tank/app/db@20240101000000").unwrap();
        let layout = ExportLayout::new("/x".into());
        assert_eq!(
            layout.final_dir(&snap, ExportKind::Full),
            Path::new("/x/20240101000000-full")
        );
        assert_eq!(
            layout.final_dir(&snap, ExportKind::Incremental),
            Path::new("/x/20240101000000")
        );
        assert_eq!(
            ExportLayout::chunk_prefix(&snap),
            "tank-app-db@20240101000000.zfs.gpg."
        );
        assert_eq!(
            layout.partial_dir(&snap, ExportKind::Full),
            Path::new("/x/20240101000000-full.partial")
        );
    }

    #[test]
    fn sha256sums_is_sha256sum_format() {
        let c = ChunkEntry {
            name: "a@1.zfs.gpg.0000".into(),
            size: 1,
            sha256: "ab".repeat(32),
        };
        assert_eq!(
            sha256sums_text(&[c]),
            format!("{}  a@1.zfs.gpg.0000\n", "ab".repeat(32))
        );
    }

    #[test]
    fn recording_a_full_holds_it_before_releasing_older_fulls() {
        let plan = ExportPlan {
            snapshot: sn("20240205000000"),
            kind: ExportKind::Full,
            base: None,
            reason: String::new(),
            send_flags: SendFlags::default(),
            recipients: Vec::new(),
            level: 0,
            holds: vec![sn("20240205000000")],
        };
        let snaps = [
            info("20231201000000", Some(ExportKind::Full), 0),
            info("20240101000000", Some(ExportKind::Full), 1),
            info("20240102000000", Some(ExportKind::Incremental), 0),
            info("manual", Some(ExportKind::Full), 1),
            info("20240205000000", None, 0),
        ];
        let mut mock = MockSnapshotter::new();
        let mut seq = Sequence::new();
        mock.expect_set_property()
            .with(eq(sn("20240205000000")), eq(PROP_KIND), eq("full"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));
        mock.expect_hold()
            .with(eq(sn("20240205000000")), eq(HOLD_TAG))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        // Only the held own full is released; the foreign "manual" one and
        // the unheld 2023 one are left alone.
        mock.expect_release()
            .with(eq(sn("20240101000000")), eq(HOLD_TAG))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        record_export(&mock, &snaps, &plan).unwrap();
    }

    #[test]
    fn re_recording_drops_an_old_upload_confirmation_first() {
        let plan = ExportPlan {
            snapshot: sn("20240103000000"),
            kind: ExportKind::Full,
            base: None,
            reason: String::new(),
            send_flags: SendFlags::default(),
            recipients: Vec::new(),
            level: 0,
            holds: vec![sn("20240103000000")],
        };
        let mut target = info("20240103000000", Some(ExportKind::Incremental), 0);
        target.uploaded = Some("2024-01-03T00:00:00Z 20240103000000 r:x".into());
        let mut mock = MockSnapshotter::new();
        let mut seq = Sequence::new();
        mock.expect_clear_property()
            .with(eq(sn("20240103000000")), eq(PROP_UPLOADED))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        // Re-exported as a full without flags or recipients: old
        // records of either go.
        mock.expect_clear_property()
            .with(eq(sn("20240103000000")), eq(PROP_SEND_FLAGS))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        mock.expect_clear_property()
            .with(eq(sn("20240103000000")), eq(PROP_RECIPIENTS))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        mock.expect_set_property()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));
        mock.expect_hold().times(1).returning(|_, _| Ok(()));
        mock.expect_release().times(0);
        record_export(&mock, &[target], &plan).unwrap();
    }

    /// Records a full of 20240103000000 with `flags` and `recipients`,
    /// expecting `property = value` to be set before its kind.
    fn records_before_its_kind(
        flags: &[&str],
        recipients: &[&str],
        property: &'static str,
        value: &'static str,
    ) {
        let plan = ExportPlan {
            snapshot: sn("20240103000000"),
            kind: ExportKind::Full,
            base: None,
            reason: String::new(),
            send_flags: SendFlags::parse_names(flags).unwrap(),
            recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
            level: 0,
            holds: vec![sn("20240103000000")],
        };
        let mut mock = MockSnapshotter::new();
        let mut seq = Sequence::new();
        mock.expect_set_property()
            .with(eq(sn("20240103000000")), eq(property), eq(value))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));
        mock.expect_set_property()
            .with(eq(sn("20240103000000")), eq(PROP_KIND), eq("full"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));
        mock.expect_hold().times(1).returning(|_, _| Ok(()));
        record_export(&mock, &[], &plan).unwrap();
    }

    #[test]
    fn recording_a_full_with_flags_records_them_before_its_kind() {
        records_before_its_kind(&["compressed", "raw"], &[], PROP_SEND_FLAGS, "-w -c");
    }

    #[test]
    fn recording_a_full_to_public_keys_records_them_before_its_kind() {
        // Sorted and upper-case: one set of keys has one record.
        records_before_its_kind(&[], &["BB", "aa"], PROP_RECIPIENTS, "AA,BB");
    }

    #[test]
    fn recording_an_incremental_sets_kind_base_and_level_and_keeps_the_held_base() {
        let plan = ExportPlan {
            snapshot: sn("20240103000000"),
            kind: ExportKind::Incremental,
            base: Some(sn("20240101000000")),
            reason: String::new(),
            send_flags: SendFlags::default(),
            recipients: Vec::new(),
            level: 1,
            holds: vec![sn("20240101000000")],
        };
        let mut mock = MockSnapshotter::new();
        mock.expect_set_property()
            .with(eq(sn("20240103000000")), eq(PROP_KIND), eq("incremental"))
            .times(1)
            .returning(|_, _, _| Ok(()));
        mock.expect_set_property()
            .with(
                eq(sn("20240103000000")),
                eq(PROP_BASE),
                eq("20240101000000"),
            )
            .times(1)
            .returning(|_, _, _| Ok(()));
        mock.expect_set_property()
            .with(eq(sn("20240103000000")), eq(PROP_LEVEL), eq("1"))
            .times(1)
            .returning(|_, _, _| Ok(()));
        mock.expect_hold().with(always(), always()).times(0);
        mock.expect_release().with(always(), always()).times(0);
        let snaps = [
            info("20240101000000", Some(ExportKind::Full), 1),
            info("20240103000000", None, 0),
        ];
        record_export(&mock, &snaps, &plan).unwrap();
    }
}
