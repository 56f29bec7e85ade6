//! One function per step. `backup` runs them in its sequence, and each
//! standalone command (`zfs2cloud export`, `upload`, …) calls the same one,
//! so a step behaves the same however it is started.

use std::path::Path;

use crate::model::{ExportKind, ExportLayout, LocalExport, Mode, SnapTime, SnapshotName};
use crate::ops::catalog::{list_backups_of, CatalogError, Listing};
use crate::ops::export::{
    export_step, ExportError, ExportRequest, ExportSettings, ExportStepOutcome, StreamUpload,
};
use crate::ops::filemode::sync_snapshot;
use crate::ops::lock::{LockError, RunLock, LOCK_FILE};
use crate::ops::prune::{prune_exports, prune_snapshots};
use crate::ops::prune_remote::{delete_planned, list_for_prune, LeftAlone, PruneListing};
use crate::ops::snapshot::{
    take_snapshot, HookError, SnapshotError, SnapshotOptions, SNAPSHOT_WINDOW_FILE,
};
use crate::ops::upload::{
    export_confirmed, upload_step, RetryPolicy, UploadReport, UploadSettings, UploadStepError,
};
use crate::ops::verify::{verify_listing, BackupCheck};
use crate::policy::{
    future_bases, latest_own, ExportDecision, PlanError, SnapshotDecision, SnapshotRetention,
    Strategy,
};
use crate::policy::{plan_remote_prune, RemotePrunePlan, RemotePrunePolicy};
use crate::process::{CommandLine, RunOptions};
use crate::stages::{MountError, PruneError, SnapshotMount};

use super::{Backup, StepError};

/// What the prune-remote step decided and did.
#[derive(Debug, Clone)]
pub struct RemotePruneReport {
    /// What is kept and deleted, and why.
    pub plan: RemotePrunePlan,
    /// What in the remote directory is no backup of the dataset.
    pub left_alone: Vec<LeftAlone>,
    /// The directories deleted (in a dry run: those whose deletion was
    /// printed), in the order they went.
    pub deleted: Vec<String>,
}

/// What the command line may ask of the export step; `backup` asks for
/// the defaults.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The snapshot to export (the part after `@`); `None`: the newest of
    /// zfs2cloud's own.
    pub target: Option<String>,
    /// `--full` / `--incremental`; `None`: as the plan decides.
    pub force: Option<ExportKind>,
}

impl Backup<'_> {
    /// Where exports live (`intermediate_basedir`).
    #[must_use]
    pub fn layout(&self) -> ExportLayout {
        ExportLayout::new(self.config.intermediate_basedir.clone())
    }

    /// The lock step: takes the run lock in `intermediate_basedir`. A dry
    /// run only says so and takes none.
    ///
    /// # Errors
    ///
    /// [`LockError::Held`] if another run holds it, other [`LockError`]s if
    /// it cannot be created.
    pub fn lock(&self) -> Result<Option<RunLock>, LockError> {
        let basedir = &self.config.intermediate_basedir;
        let action = format!("lock {}", basedir.join(LOCK_FILE).display());
        if self.runner.skip_in_dry_run(&action) {
            return Ok(None);
        }
        RunLock::acquire(basedir, self.now).map(Some)
    }

    /// The snapshot step: `pre_snapshot`, `zfs snapshot`, `post_snapshot`.
    /// With `under_lock`, a marker records the downtime window, so that a
    /// run killed inside it is detected by the next one (only under the
    /// run lock can a marker be a dead run's).
    ///
    /// # Errors
    ///
    /// [`SnapshotError`] naming the hook or the zfs command that failed.
    pub fn snapshot(&self, under_lock: bool) -> Result<SnapshotName, SnapshotError> {
        let config = self.config;
        let window = under_lock.then(|| config.intermediate_basedir.join(SNAPSHOT_WINDOW_FILE));
        take_snapshot(
            self.snapshotter,
            self.runner,
            &config.hooks,
            &config.dataset,
            SnapTime::from_instant(self.now, config.snapshot_time_zone),
            &SnapshotOptions {
                hook_timeout: config.hook_timeout(),
                window: window.as_deref(),
                recursive: config.recursive,
            },
        )
    }

    /// The export step: plan, `zfs send | [zstd |] gpg | split`, record.
    /// Uploading while exporting, it first makes sure the remote directory
    /// is the dataset's, as the upload step does.
    ///
    /// # Errors
    ///
    /// [`StepError::Unsupported`] without an encryptor (file mode, or no
    /// `passphrase_file`), else the [`ExportError`](crate::ExportError) of
    /// the part that failed (`ExportError::Remote` for a remote directory
    /// that is another dataset's, before anything is written;
    /// `ExportError::Recipients` for public keys that cannot be used).
    pub fn export(&self, options: &ExportOptions) -> Result<ExportStepOutcome, StepError> {
        let Some(encryptor) = self.encryptor else {
            return Err(StepError::Unsupported(
                "export needs passphrase_file (intermediate mode)".into(),
            ));
        };
        let config = self.config;
        // Checked before anything is planned: an expired key must stop the
        // export, not end up in a manifest.
        let recipients = encryptor
            .recipients(self.now)
            .map_err(|e| StepError::Export(ExportError::Recipients(e)))?;
        let request = ExportRequest {
            target: options.target.clone(),
            force: options.force,
            strategy: Strategy::from_config(config),
            remote: config.remote.clone(),
            settings: ExportSettings {
                split_size: config.split_size.0,
                created_at: self.now,
                cancel: self.runner.cancel_token().clone(),
                compression: config.compression_settings(),
                send_flags: config.send_flags.clone(),
                encryption: config.encryption,
                recipients,
            },
        };
        let stream = StreamUpload::from_config(config, self.stream_uploader, self.now);
        let outcome = export_step(
            self.snapshotter,
            self.exporter,
            encryptor,
            self.runner,
            &self.layout(),
            &config.dataset,
            &request,
            stream.as_ref(),
            self.progress,
        )?;
        Ok(outcome)
    }

    /// The upload step: every complete local export not yet confirmed on
    /// the remote (or only the export of snapshot `only`), oldest first,
    /// into a remote directory that is the dataset's (see
    /// [`decide_ownership`](crate::decide_ownership)).
    ///
    /// # Errors
    ///
    /// [`UploadStepError`] for the first export that fails;
    /// [`UploadStepError::NotOwner`], with nothing written, if the remote
    /// directory is another dataset's.
    pub fn upload(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<(SnapshotName, UploadReport)>, UploadStepError> {
        let settings = UploadSettings {
            remote: self.config.remote.clone(),
            retry: RetryPolicy::from(self.config),
            cancel: self.runner.cancel_token().clone(),
            now: self.now,
            dry_run: self.runner.is_dry_run(),
        };
        upload_step(
            self.snapshotter,
            self.uploader,
            &self.layout(),
            &self.config.dataset,
            only,
            &settings,
            self.progress,
        )
    }

    /// The prune-intermediates step: decides which local exports may go
    /// (all but the newest, and only uploaded ones) and, with `act`,
    /// removes them.
    ///
    /// # Errors
    ///
    /// [`PruneError`] if listing or removing fails.
    pub fn prune_intermediates(&self, act: bool) -> Result<Vec<ExportDecision>, PruneError> {
        let layout = self.layout();
        let config = self.config;
        let snapshots = self.snapshotter.list(&config.dataset)?;
        let exports =
            layout
                .complete_exports(&config.dataset)
                .map_err(|source| PruneError::Io {
                    path: layout.basedir().display().to_string(),
                    source,
                })?;
        let uploaded = |e: &LocalExport| export_confirmed(&snapshots, e, &config.remote);
        prune_exports(&layout, &exports, &uploaded, act)
    }

    /// The prune-snapshots step: decides which of zfs2cloud's snapshots
    /// retention lets go and, with `act`, destroys them (through the
    /// runner, so a dry run only prints the commands).
    ///
    /// # Errors
    ///
    /// [`PruneError`] if listing or destroying fails.
    pub fn prune_snapshots(&self, act: bool) -> Result<Vec<SnapshotDecision>, PruneError> {
        let config = self.config;
        let snapshots = self.snapshotter.list(&config.dataset)?;
        let bases = future_bases(&Strategy::from_config(config), &snapshots);
        prune_snapshots(
            self.pruner,
            &config.dataset,
            &snapshots,
            &SnapshotRetention::from_config(config, self.now, &bases),
            act,
        )
    }

    /// The prune-remote step: decides which backups on the remote
    /// `[retention.remote]` lets go and, with `act`, deletes them (through
    /// the runner, so a dry run only prints the commands).
    ///
    /// # Errors
    ///
    /// [`StepError::Unsupported`] in file mode or without
    /// `[retention.remote]` (remote pruning is opt-in); else the
    /// [`PruneRemoteError`](crate::ops::prune_remote::PruneRemoteError) of
    /// the listing or of the first delete that failed.
    pub fn prune_remote(&self, act: bool) -> Result<RemotePruneReport, StepError> {
        let config = self.config;
        if config.mode != Mode::Intermediate {
            return Err(StepError::Unsupported(
                "prune-remote is for intermediate mode: in file mode the remote holds the \
                 snapshot's files, not backups"
                    .into(),
            ));
        }
        let mut policy = RemotePrunePolicy::from_config(config).ok_or_else(|| {
            StepError::Unsupported(format!(
                "remote pruning is off for {}: {} has no [retention.remote] table (it is \
                 opt-in; see docs/retention.md)",
                config.name(),
                config.path.display()
            ))
        })?;
        let PruneListing {
            backups,
            left_alone,
            claimed_at,
        } = list_for_prune(self.uploader, &config.remote, &config.dataset)?;
        policy.claimed_at = claimed_at;
        let plan = plan_remote_prune(&backups, &policy, self.now);
        let deleted = if act {
            delete_planned(
                self.uploader,
                &config.remote,
                &backups,
                &plan,
                self.runner.cancel_token(),
            )?
        } else {
            Vec::new()
        };
        Ok(RemotePruneReport {
            plan,
            left_alone,
            deleted,
        })
    }

    /// The mount-snapshot step: cleans up a killed run's leftovers, then
    /// exposes `snapshot` (default: the newest of zfs2cloud's) read-only.
    ///
    /// # Errors
    ///
    /// [`StepError`] if the dataset is a volume, there is no snapshot or no
    /// strategy works.
    pub fn mount_snapshot(
        &self,
        snapshot: Option<&SnapshotName>,
    ) -> Result<SnapshotMount, StepError> {
        self.mounter.require_file_system(&self.config.dataset)?;
        let basedir = &self.config.intermediate_basedir;
        let cleaned = self
            .mounter
            .clean_leftovers(&self.config.dataset, basedir)?;
        if !cleaned.is_empty() {
            log::warn!("cleaned up after an earlier run: {}", cleaned.join(", "));
        }
        let snapshot = self.target_snapshot(snapshot)?;
        Ok(self
            .mounter
            .mount(&snapshot, basedir, self.config.mount_strategy)?)
    }

    /// The upload-snapshot-files step: `rclone sync` of the exposed
    /// snapshot (`mount`, or the one `mount-snapshot` left mounted for
    /// `snapshot`), then the heartbeat object.
    ///
    /// # Errors
    ///
    /// [`StepError`] if the dataset is a volume, nothing is mounted, the
    /// remote directory holds
    /// what the sync would delete and is not the dataset's
    /// ([`UploadStepError::NotOwner`]), or the sync fails for good.
    pub fn upload_snapshot_files(
        &self,
        mount: Option<&SnapshotMount>,
        snapshot: Option<&SnapshotName>,
    ) -> Result<SnapshotMount, StepError> {
        self.mounter.require_file_system(&self.config.dataset)?;
        let mount = match mount {
            Some(m) => m.clone(),
            None => self.find_mount(snapshot)?,
        };
        sync_snapshot(
            self.uploader,
            &mount,
            &self.config.remote,
            &RetryPolicy::from(self.config),
            self.runner.cancel_token(),
            self.now,
        )?;
        Ok(mount)
    }

    /// The umount-snapshot step: takes `mount` down or, without one, every
    /// exposure of this dataset that zfs2cloud left behind. Returns what
    /// was taken down.
    ///
    /// # Errors
    ///
    /// [`MountError`] if unmounting or destroying a clone fails.
    pub fn umount_snapshot(&self, mount: Option<SnapshotMount>) -> Result<Vec<String>, MountError> {
        match mount {
            Some(m) => {
                self.mounter.unmount(&m)?;
                Ok(vec![m.snapshot.to_string()])
            }
            None => self
                .mounter
                .clean_leftovers(&self.config.dataset, &self.config.intermediate_basedir),
        }
    }

    /// The verify step (and `verify` without `--deep`): every backup of
    /// the dataset on the remote (backups of other datasets are skipped,
    /// with a warning), or only the one of snapshot `only`, checked from
    /// the listing against its manifest.
    ///
    /// # Errors
    ///
    /// [`CatalogError`] if the remote cannot be listed.
    pub fn verify_listing(&self, only: Option<&str>) -> Result<Vec<BackupCheck>, CatalogError> {
        // One listing, which on some backends hashes every file remotely:
        // no bytes to count, only the time it takes.
        self.progress
            .begin(&format!("verify: listing {}", self.config.remote), None);
        let backups = list_backups_of(
            self.uploader,
            &self.config.remote,
            &self.config.dataset,
            Listing::Hashes,
        );
        self.progress.end();
        let backups = backups?;
        let only = only.map(|o| vec![o.to_owned()]);
        Ok(verify_listing(&backups, only.as_deref()))
    }

    /// A script step: runs `path` with the dataset and snapshot in its
    /// environment, under `hook_timeout_seconds`.
    ///
    /// # Errors
    ///
    /// [`HookError`] if it cannot start, fails or times out.
    pub fn run_script(
        &self,
        path: &Path,
        snapshot: Option<&SnapshotName>,
    ) -> Result<(), HookError> {
        let cmd = CommandLine::new(path)
            .env("ZFS2CLOUD_DATASET", self.config.dataset.as_str())
            .env(
                "ZFS2CLOUD_SNAPSHOT",
                snapshot.map(ToString::to_string).unwrap_or_default(),
            );
        let options = RunOptions {
            timeout: self.config.hook_timeout(),
            ..RunOptions::default()
        };
        self.runner
            .mutate_with(&cmd, &options)
            .map_err(|source| HookError {
                name: path.display().to_string(),
                source,
            })?;
        Ok(())
    }

    /// `snapshot`, or the newest of zfs2cloud's snapshots.
    fn target_snapshot(&self, snapshot: Option<&SnapshotName>) -> Result<SnapshotName, StepError> {
        if let Some(s) = snapshot {
            return Ok(s.clone());
        }
        let snapshots = self.snapshotter.list(&self.config.dataset)?;
        Ok(latest_own(&snapshots)
            .ok_or(PlanError::NoSnapshot)?
            .name
            .clone())
    }

    /// The exposure `mount-snapshot` left for `snapshot` (default: the
    /// newest of zfs2cloud's).
    fn find_mount(&self, snapshot: Option<&SnapshotName>) -> Result<SnapshotMount, StepError> {
        let snapshot = self.target_snapshot(snapshot)?;
        self.mounter
            .find(&snapshot, &self.config.intermediate_basedir)?
            .ok_or_else(|| {
                StepError::Unsupported(format!(
                    "{snapshot} is not mounted; run mount-snapshot first"
                ))
            })
    }
}
