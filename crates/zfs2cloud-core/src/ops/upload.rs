//! Uploading exports: ordering, resumption, verification, retries, and the
//! record that makes pruning safe.
//!
//! One export goes to `<remote>/<snap>[-full]/`: the chunks first, then
//! `SHA256SUMS`, then `manifest.json` last, so that on the remote a present
//! manifest means a complete backup. Before the manifest is sent, the remote
//! listing is checked: every chunk must be there with its size, and with its
//! SHA-256 where the backend reports one. A chunk that is already complete
//! on the remote is not sent again, so a re-run after a failed upload only
//! sends what is missing. Only after the manifest is confirmed is the upload
//! recorded on the snapshot ([`PROP_UPLOADED`]); pruning depends on that
//! record.
//!
//! Before the first file goes up, the remote directory must be the
//! dataset's (`owner`): its owner marker must name the dataset, or be
//! written now if the directory has no owner yet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::model::remote_join;
use crate::model::ExportKind;
use crate::model::RemoteFile;
use crate::model::{upload_record, SnapshotInfo, PROP_UPLOADED};
use crate::model::{DatasetName, SnapshotName};
use crate::model::{ExportLayout, LocalExport, MANIFEST_FILE, SHA256SUMS_FILE};
use crate::policy::OwnerConflict;
use crate::process::{CancelToken, ProcessError};
use crate::stages::ZfsError;
use crate::stages::{Snapshotter, UploadError, Uploader};
use crate::util::Progress;

mod owner;

pub(crate) use owner::{claim_remote, RemoteClaim};
pub use owner::{read_object, read_owner, read_owner_in, OwnerReadError};

/// How failed transfers are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Delay before the first retry; doubled for each further one, capped
    /// at five minutes.
    pub delay: Duration,
}

impl From<&Config> for RetryPolicy {
    /// `upload_retries` and `upload_retry_delay_seconds`.
    fn from(config: &Config) -> Self {
        Self {
            retries: config.upload_retries,
            delay: Duration::from_secs(config.upload_retry_delay_seconds),
        }
    }
}

impl RetryPolicy {
    fn delay_before(&self, retry: u32) -> Duration {
        self.delay
            .saturating_mul(1u32 << retry.min(16))
            .min(Duration::from_secs(300))
    }
}

/// Errors of the upload step.
#[derive(Debug, thiserror::Error)]
pub enum UploadStepError {
    /// Listing the dataset's snapshots or recording the upload failed.
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    /// Reading the local export failed.
    #[error("cannot read the local export {}: {source}", path.display())]
    Local {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The transfer failed (after retries).
    #[error("uploading {snapshot} failed")]
    Transfer {
        /// The snapshot whose export failed.
        snapshot: String,
        /// Why.
        #[source]
        source: UploadError,
    },
    /// The remote does not hold what was sent.
    #[error("the upload of {snapshot} could not be confirmed: {reason}")]
    NotConfirmed {
        /// The snapshot.
        snapshot: String,
        /// What is missing or wrong on the remote.
        reason: String,
    },
    /// An incremental whose base is not on the remote.
    #[error(
        "{snapshot} is an incremental based on {base}, which is not on the remote; it is not \
         uploaded, since it could never be restored"
    )]
    BaseNotUploaded {
        /// The incremental.
        snapshot: String,
        /// Its base.
        base: String,
    },
    /// The remote holds chunk files the manifest does not list (left by an
    /// earlier export of the same snapshot, or another split size).
    #[error("{dir} on the remote holds chunks that are not in the manifest: {}; remove them (e.g. rclone purge) and upload again", names.join(", "))]
    StrayChunks {
        /// The remote directory.
        dir: String,
        /// The unexpected files.
        names: Vec<String>,
    },
    /// `--snapshot` names a snapshot with no local export.
    #[error("there is no complete local export of {0}")]
    NoSuchExport(String),
    /// The remote directory belongs to another dataset (or, in file mode,
    /// holds what a sync would delete); nothing was written.
    #[error(
        "refusing to {action} {dataset} to {remote}: that directory {conflict}; point `remote` \
         in the config of {dataset} at a directory of its own"
    )]
    NotOwner {
        /// `upload` or `sync`.
        action: &'static str,
        /// The dataset being backed up.
        dataset: String,
        /// The configured remote directory.
        remote: String,
        /// Whose it is.
        conflict: OwnerConflict,
    },
    /// The object that says whose the remote directory is cannot be read,
    /// so it is not replaced; nothing was written.
    #[error(
        "refusing to {action} {dataset} to {remote}: its {object} cannot be read ({reason}), so \
         whose the directory is cannot be told; look at it (rclone cat {path})"
    )]
    UnreadableOwner {
        /// `upload` or `sync`.
        action: &'static str,
        /// The dataset being backed up.
        dataset: String,
        /// The configured remote directory.
        remote: String,
        /// The marker or heartbeat.
        object: String,
        /// Its remote path.
        path: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// The run was interrupted.
    #[error("interrupted")]
    Interrupted,
}

fn retryable(e: &UploadError) -> bool {
    match e {
        UploadError::Process(p) => !matches!(
            p,
            ProcessError::Spawn { .. } | ProcessError::Cancelled { .. }
        ),
        UploadError::Stalled { .. }
        | UploadError::Parse { .. }
        | UploadError::Unconfirmed { .. } => true,
    }
}

/// Runs `f`, retrying retryable failures per `policy`.
pub(crate) fn with_retry<T>(
    policy: &RetryPolicy,
    cancel: &CancelToken,
    what: &str,
    mut f: impl FnMut() -> Result<T, UploadError>,
) -> Result<T, UploadStepError>
where
{
    let mut retry = 0;
    loop {
        if cancel.is_cancelled() {
            return Err(UploadStepError::Interrupted);
        }
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if retry < policy.retries && retryable(&e) => {
                let delay = policy.delay_before(retry);
                let outcome = match e {
                    UploadError::Stalled { .. } => "stalled",
                    _ => "failed",
                };
                log::warn!(
                    "{what} {outcome} (attempt {} of {}), retrying in {:.1}s: {}",
                    retry + 1,
                    policy.retries + 1,
                    delay.as_secs_f64(),
                    crate::util::error_chain(&e)
                );
                sleep_unless_cancelled(delay, cancel);
                retry += 1;
            }
            Err(e) => {
                return Err(UploadStepError::Transfer {
                    snapshot: what.to_owned(),
                    source: e,
                })
            }
        }
    }
}

fn sleep_unless_cancelled(total: Duration, cancel: &CancelToken) {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < total && !cancel.is_cancelled() {
        std::thread::sleep(step.min(total - slept));
        slept += step;
    }
}

fn file_sha256(path: &Path) -> std::io::Result<(u64, String)> {
    let bytes = std::fs::read(path)?;
    Ok((
        bytes.len() as u64,
        crate::model::hex(&Sha256::digest(&bytes)),
    ))
}

/// Whether the remote already holds this exact file.
fn complete_on_remote(
    remote: &BTreeMap<String, RemoteFile>,
    name: &str,
    size: u64,
    sha256: &str,
) -> bool {
    remote
        .get(name)
        .is_some_and(|r| r.size == size && r.sha256.as_deref().is_none_or(|h| h == sha256))
}

/// Whether the remote copy is provably identical: same size and the same
/// SHA-256. Without a remote hash (S3, crypt) a same-size file may be a
/// chunk of an earlier export of the same snapshot, so it is sent again;
/// rclone itself skips a file whose size and modification time match.
fn provably_on_remote(
    remote: &BTreeMap<String, RemoteFile>,
    name: &str,
    size: u64,
    sha256: &str,
) -> bool {
    remote
        .get(name)
        .is_some_and(|r| r.size == size && r.sha256.as_deref() == Some(sha256))
}

/// What an upload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadReport {
    /// Files sent.
    pub sent: Vec<String>,
    /// Files already complete on the remote, not sent again.
    pub skipped: Vec<String>,
    /// The bytes of the chunks among `sent`.
    pub chunk_bytes_sent: u64,
}

/// Uploads one export directory to `remote_dir` in order, verifies it and
/// sends the manifest last. In dry-run mode (`verify == false`) the copies
/// are only reported and nothing is verified. Files named in `already_sent`
/// were uploaded and confirmed one by one while exporting; they are not
/// sent again, only checked in the listing.
///
/// # Errors
///
/// [`UploadStepError`] if a transfer fails after retries or the remote does
/// not hold what was sent.
#[allow(clippy::too_many_arguments)]
pub fn upload_export(
    uploader: &dyn Uploader,
    export: &LocalExport,
    remote_dir: &str,
    policy: &RetryPolicy,
    cancel: &CancelToken,
    verify: bool,
    already_sent: &[String],
    progress: &dyn Progress,
) -> Result<UploadReport, UploadStepError> {
    let what = export.snapshot.to_string();
    let local_err = |path: &Path| {
        let path = path.to_owned();
        move |source| UploadStepError::Local { path, source }
    };
    // After a pipelined export every chunk was confirmed as it went up
    // (rclone checks each transfer's hash itself): a listing with hashes
    // would only read the whole backup back once more.
    let sizes_only = !already_sent.is_empty();
    let listed =
        |uploader: &dyn Uploader| -> Result<BTreeMap<String, RemoteFile>, UploadStepError> {
            let files = with_retry(policy, cancel, &what, || {
                if sizes_only {
                    uploader.list_sizes(remote_dir)
                } else {
                    uploader.list(remote_dir)
                }
            })?;
            Ok(files.into_iter().map(|f| (f.name.clone(), f)).collect())
        };
    let mut report = UploadReport::default();
    let remote = listed(uploader)?;

    let sums_path = export.dir.join(SHA256SUMS_FILE);
    let (sums_size, sums_hash) = file_sha256(&sums_path).map_err(local_err(&sums_path))?;
    let mut files: Vec<(String, u64, String)> = export
        .manifest
        .chunks
        .iter()
        .map(|c| (c.name.clone(), c.size, c.sha256.clone()))
        .collect();
    files.push((SHA256SUMS_FILE.to_owned(), sums_size, sums_hash));
    let to_send: Vec<&(String, u64, String)> = files
        .iter()
        .filter(|(name, size, sha256)| {
            !already_sent.contains(name) && !provably_on_remote(&remote, name, *size, sha256)
        })
        .collect();
    if !to_send.is_empty() {
        let total = to_send.iter().map(|(_, size, _)| size).sum();
        progress.begin(&format!("upload {}", export.dir_name), Some(total));
    }
    let sent = send_files(
        uploader, &to_send, export, remote_dir, policy, cancel, progress,
    );
    if !to_send.is_empty() {
        progress.end();
    }
    sent?;
    for (name, size, sha256) in &files {
        if already_sent.contains(name) {
            // Uploaded and confirmed while exporting (and perhaps deleted
            // locally since); the listing below checks it again.
            report.sent.push(name.clone());
            continue;
        }
        if provably_on_remote(&remote, name, *size, sha256) {
            report.skipped.push(name.clone());
            continue;
        }
        report.sent.push(name.clone());
    }
    if verify {
        confirm_files(&listed(uploader)?, &files, remote_dir, &what)?;
    }
    let manifest_path = export.dir.join(MANIFEST_FILE);
    let (m_size, m_hash) = file_sha256(&manifest_path).map_err(local_err(&manifest_path))?;
    if provably_on_remote(&remote, MANIFEST_FILE, m_size, &m_hash) && report.sent.is_empty() {
        report.skipped.push(MANIFEST_FILE.to_owned());
    } else {
        let target = remote_join(remote_dir, MANIFEST_FILE);
        with_retry(policy, cancel, &what, || {
            uploader.put(&manifest_path, &target)
        })?;
        report.sent.push(MANIFEST_FILE.to_owned());
    }
    if verify && !complete_on_remote(&listed(uploader)?, MANIFEST_FILE, m_size, &m_hash) {
        return Err(UploadStepError::NotConfirmed {
            snapshot: what,
            reason: format!("{MANIFEST_FILE} is missing or wrong after upload"),
        });
    }
    report.chunk_bytes_sent = export.manifest.chunk_bytes_among(&report.sent);
    Ok(report)
}

/// Copies `files` (name, size, SHA-256) of `export` to `remote_dir`, in
/// order, each retried per `policy`; a copy is one process, so progress
/// advances by whole files.
fn send_files(
    uploader: &dyn Uploader,
    files: &[&(String, u64, String)],
    export: &LocalExport,
    remote_dir: &str,
    policy: &RetryPolicy,
    cancel: &CancelToken,
    progress: &dyn Progress,
) -> Result<(), UploadStepError> {
    let what = export.snapshot.to_string();
    for (name, size, _) in files {
        progress.chunk(name);
        let local = export.dir.join(name);
        let target = remote_join(remote_dir, name);
        with_retry(policy, cancel, &what, || uploader.put(&local, &target))?;
        progress.advance(*size);
    }
    Ok(())
}

/// Checks the listing `remote` of `remote_dir` after an upload: every
/// file of `files` (name, size, SHA-256) is there and whole, and no chunk
/// is there that the manifest does not name.
fn confirm_files(
    remote: &BTreeMap<String, RemoteFile>,
    files: &[(String, u64, String)],
    remote_dir: &str,
    what: &str,
) -> Result<(), UploadStepError> {
    let stray: Vec<String> = remote
        .keys()
        .filter(|n| n.contains(".zfs.gpg.") && !files.iter().any(|(f, _, _)| f == *n))
        .cloned()
        .collect();
    if !stray.is_empty() {
        return Err(UploadStepError::StrayChunks {
            dir: remote_dir.to_owned(),
            names: stray,
        });
    }
    for (name, size, sha256) in files {
        if !complete_on_remote(remote, name, *size, sha256) {
            let reason = match remote.get(name) {
                None => format!("{name} is missing"),
                Some(r) if r.size != *size => {
                    format!("{name} has {} bytes, expected {size}", r.size)
                }
                Some(_) => format!("{name} has a different sha256 than the manifest"),
            };
            return Err(UploadStepError::NotConfirmed {
                snapshot: what.to_owned(),
                reason,
            });
        }
    }
    Ok(())
}

/// Everything the upload step needs.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// The rclone destination from the config.
    pub remote: String,
    /// Retry policy for transfers.
    pub retry: RetryPolicy,
    /// Stops the step when set.
    pub cancel: CancelToken,
    /// Recorded as the confirmation time.
    pub now: DateTime<Utc>,
    /// Dry run: report, do not verify or record.
    pub dry_run: bool,
}

/// The upload step: uploads every complete local export whose upload is not
/// yet confirmed, oldest first (or only `only`, with its base first if
/// that is pending too), and records each confirmed upload on its snapshot.
/// Before the first file goes up, the remote directory must be the
/// dataset's or nobody's (then it gets the dataset's owner marker).
///
/// Oldest first means a full is always sent before the incrementals based
/// on it. An incremental whose base is neither confirmed uploaded nor about
/// to be is not sent: the refusal ([`UploadStepError::BaseNotUploaded`]) is
/// logged and the step goes on, so that a later full still reaches the
/// remote; the export stays on local disk.
///
/// # Errors
///
/// [`UploadStepError`] for the first export that fails; the ones before it
/// stay recorded. [`UploadStepError::NotOwner`] before anything is written
/// if the remote directory is another dataset's.
pub fn upload_step(
    snapshotter: &dyn Snapshotter,
    uploader: &dyn Uploader,
    layout: &ExportLayout,
    dataset: &DatasetName,
    only: Option<&str>,
    settings: &UploadSettings,
    progress: &dyn Progress,
) -> Result<Vec<(SnapshotName, UploadReport)>, UploadStepError> {
    let snapshots = snapshotter.list(dataset)?;
    let exports = layout
        .complete_exports(dataset)
        .map_err(|source| UploadStepError::Local {
            path: layout.basedir().to_owned(),
            source,
        })?;
    let pending = pending_exports(&exports, &snapshots, only, &settings.remote)?;
    let claim = RemoteClaim {
        snapshotter,
        uploader,
        remote: &settings.remote,
        dataset,
        retry: &settings.retry,
        cancel: &settings.cancel,
        now: settings.now,
    };
    let mut claimed = false;
    let mut done: Vec<(SnapshotName, UploadReport)> = Vec::new();
    for export in pending {
        let ready = base_ready(snapshotter, uploader, &snapshots, export, &done, settings)?;
        if !ready {
            // Skip this one and go on: a later full must still reach the
            // cloud. It stays local (never uploaded, never pruned).
            let e = UploadStepError::BaseNotUploaded {
                snapshot: export.snapshot.to_string(),
                base: export.manifest.base.clone().unwrap_or_default(),
            };
            log::error!(
                "{e}; it is kept at {} (delete it to reclaim the space)",
                export.dir.display()
            );
            continue;
        }
        if !claimed {
            // Before the first file goes up, and only if one does.
            claim_remote(&claim)?;
            claimed = true;
        }
        let remote_dir = remote_join(&settings.remote, &export.dir_name);
        log::info!("uploading {} to {remote_dir}", export.dir.display());
        let report = upload_export(
            uploader,
            export,
            &remote_dir,
            &settings.retry,
            &settings.cancel,
            !settings.dry_run,
            &[],
            progress,
        )?;
        let record = upload_record(
            &settings.now.to_rfc3339_opts(SecondsFormat::Secs, true),
            &export.dir_name,
            &settings.remote,
        );
        snapshotter.set_property(&export.snapshot, PROP_UPLOADED, &record)?;
        done.push((export.snapshot.clone(), report));
    }
    Ok(done)
}

/// The exports to upload, oldest first: those of existing snapshots not
/// yet confirmed on `remote`, or with `only`, that one (again, if it is
/// confirmed: uploading is idempotent, so a user can repair a remote by
/// hand) and its base if that is pending too.
fn pending_exports<'e>(
    exports: &'e [LocalExport],
    snapshots: &[SnapshotInfo],
    only: Option<&str>,
    remote: &str,
) -> Result<Vec<&'e LocalExport>, UploadStepError> {
    let mut pending: Vec<&LocalExport> = exports
        .iter()
        .filter(|e| {
            let exists = snapshots.iter().any(|s| s.name == e.snapshot);
            if !exists {
                log::warn!(
                    "{} has a local export but the snapshot is gone; not uploading it",
                    e.snapshot
                );
            }
            exists && !export_confirmed(snapshots, e, remote)
        })
        .collect();
    if let Some(only) = only {
        let wanted = exports
            .iter()
            .find(|e| e.snapshot.snap() == only || e.snapshot.to_string() == only)
            .ok_or_else(|| UploadStepError::NoSuchExport(only.to_owned()))?;
        let base = wanted.manifest.base.clone();
        pending.retain(|e| {
            e.snapshot == wanted.snapshot || base.as_deref() == Some(e.snapshot.snap())
        });
        if !pending.iter().any(|e| e.snapshot == wanted.snapshot) {
            pending.push(wanted);
        }
    }
    pending.sort_by_key(|e| e.snapshot.own_time());
    Ok(pending)
}

/// Whether `export` may go up now: a full always; an incremental only if
/// its base went up in this run (`done`) or is confirmed and still on the
/// remote. A confirmed base whose manifest is gone (lifecycle rules may
/// have expired it) loses its record, so the next export is a full.
fn base_ready(
    snapshotter: &dyn Snapshotter,
    uploader: &dyn Uploader,
    snapshots: &[SnapshotInfo],
    export: &LocalExport,
    done: &[(SnapshotName, UploadReport)],
    settings: &UploadSettings,
) -> Result<bool, UploadStepError> {
    if export.manifest.kind != ExportKind::Incremental {
        return Ok(true);
    }
    let dataset = export.snapshot.dataset();
    let Some(base) = export
        .manifest
        .base
        .as_deref()
        .and_then(|b| SnapshotName::new(dataset.clone(), b).ok())
    else {
        return Ok(false);
    };
    if done.iter().any(|(d, _)| *d == base) {
        return Ok(true);
    }
    // The base may be a full or (with chain or levels) an incremental: its
    // recorded export says which directory to look in.
    let recorded = snapshots
        .iter()
        .find(|s| s.name == base && s.uploaded_to(&settings.remote))
        .and_then(|s| s.kind);
    let Some(base_kind) = recorded else {
        return Ok(false);
    };
    let present = base_on_remote(uploader, &settings.remote, &base, base_kind, settings)?;
    if !present && !settings.dry_run {
        log::error!(
            "the base {base} is recorded as uploaded but its manifest is gone from the remote; \
             forgetting that record, so the next export is not based on it"
        );
        snapshotter.clear_property(&base, PROP_UPLOADED)?;
    }
    Ok(present)
}

/// Whether the upload of this local export to `remote` is confirmed: its
/// snapshot records this export's kind and a confirmation for this export
/// directory on this remote.
#[must_use]
pub fn export_confirmed(snapshots: &[SnapshotInfo], export: &LocalExport, remote: &str) -> bool {
    snapshots.iter().any(|s| {
        s.name == export.snapshot && s.kind == Some(export.manifest.kind) && s.uploaded_to(remote)
    })
}

/// Whether the manifest of `base`'s export of `kind` is on the remote.
fn base_on_remote(
    uploader: &dyn Uploader,
    remote: &str,
    base: &SnapshotName,
    kind: ExportKind,
    settings: &UploadSettings,
) -> Result<bool, UploadStepError> {
    let dir = remote_join(remote, &ExportLayout::dir_name(base, kind));
    let files = with_retry(&settings.retry, &settings.cancel, &base.to_string(), || {
        uploader.list(&dir)
    })?;
    Ok(files.iter().any(|f| f.name == MANIFEST_FILE))
}

#[cfg(test)]
mod tests;
