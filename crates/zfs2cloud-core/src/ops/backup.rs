//! The `backup` command: runs the configured sequence of steps.
//!
//! Default sequence (intermediate mode): lock, snapshot (with the
//! `pre_snapshot` and `post_snapshot` hooks around it), export, upload,
//! prune-intermediates, prune-snapshots, unlock. The first failing step
//! stops the run; then `on_failure` runs with the error on its stdin, the
//! lock is released, and the failure is returned. After the last step
//! `on_success` runs.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::model::ExportKind;
use crate::model::Step;
use crate::model::{ExportLayout, LocalExport};
use crate::model::{SnapTime, SnapshotName};
use crate::ops::export::StreamUpload;
use crate::ops::export::{
    export_step, ExportError, ExportRequest, ExportSettings, ExportStepOutcome,
};
use crate::ops::filemode::sync_snapshot;
use crate::ops::lock::{LockError, RunLock};
use crate::ops::prune::{prune_exports, prune_snapshots};
use crate::ops::snapshot::{
    run_hook, take_snapshot, HookEnv, HookError, HookOptions, SnapshotError,
};
use crate::ops::upload::{
    export_confirmed, upload_step, RetryPolicy, UploadSettings, UploadStepError,
};
use crate::policy::{SnapshotRetention, Verdict};
use crate::policy::{latest_own, PlanError};
use crate::process::{CommandLine, ProcessError, RunOptions, Runner};
use crate::stages::ZfsError;
use crate::stages::{Encryptor, Exporter, PruneError, Pruner, Snapshotter, Uploader};
use crate::stages::{MountError, Mounter, SnapshotMount};
use crate::util::Progress;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The run lock is held by another run.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The snapshot step failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The export step failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The upload step failed.
    #[error(transparent)]
    Upload(#[from] UploadStepError),
    /// A prune step failed.
    #[error(transparent)]
    Prune(#[from] PruneError),
    /// Listing snapshots failed.
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    /// A hook or script failed.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// Mounting or unmounting the snapshot failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// There is no snapshot to work on.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// `verify` found backups that are not OK.
    #[error("verify: {0}")]
    Verify(String),
    /// Listing the remote failed.
    #[error(transparent)]
    Catalog(#[from] crate::ops::catalog::CatalogError),
    /// The step is not available in this build or mode.
    #[error("{0}")]
    Unsupported(String),
    /// The run was interrupted before the step could start.
    #[error("interrupted")]
    Interrupted,
    /// The run was interrupted while the step ran, and the step failed
    /// (a cleanup that runs on regardless may fail for its own reason).
    #[error("interrupted")]
    InterruptedDuring(#[source] Box<StepError>),
    /// The step ran out of its `[step_timeouts]` limit: whatever it was
    /// running was stopped.
    #[error("timed out after {}s (step_timeouts.{step})", limit.as_secs())]
    TimedOut {
        /// The step.
        step: String,
        /// Its limit.
        limit: Duration,
        /// What the stop made fail.
        #[source]
        source: Box<StepError>,
    },
}

impl StepError {
    /// Whether this is another run holding the lock (exit code 75).
    #[must_use]
    pub fn is_lock_held(&self) -> bool {
        matches!(self, Self::Lock(LockError::Held { .. }))
    }
}

/// A failed backup run.
#[derive(Debug, thiserror::Error)]
#[error("step {step} failed")]
pub struct BackupFailure {
    /// The step that failed (`on_success` if only that hook failed).
    pub step: String,
    /// Why.
    #[source]
    pub error: StepError,
}

/// The stages and settings a backup runs with.
#[allow(missing_debug_implementations)]
pub struct Backup<'a> {
    /// The validated configuration.
    pub config: &'a Config,
    /// Runs every external command; carries dry-run and cancellation.
    pub runner: &'a Runner,
    /// zfs snapshot/list/hold/...
    pub snapshotter: &'a dyn Snapshotter,
    /// zfs destroy of old snapshots.
    pub pruner: &'a dyn Pruner,
    /// zfs send.
    pub exporter: &'a dyn Exporter,
    /// gpg; `None` when the sequence needs no encryption (file mode).
    pub encryptor: Option<&'a dyn Encryptor>,
    /// rclone.
    pub uploader: &'a dyn Uploader,
    /// rclone for a pipelined export (`upload_while_exporting`), whose
    /// parallel uploads share the bandwidth limit.
    pub stream_uploader: &'a dyn Uploader,
    /// Exposes snapshots as files (file mode).
    pub mounter: &'a Mounter,
    /// The run's clock.
    pub now: DateTime<Utc>,
    /// Export progress.
    pub progress: &'a dyn Progress,
}

/// One finished step, for the report.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The step's name.
    pub step: String,
    /// How long it took.
    pub duration: Duration,
    /// What it did, in a few words.
    pub summary: String,
}

/// What the run knows so far, for hooks.
#[derive(Debug, Default)]
struct RunState {
    lock: Option<RunLock>,
    snapshot: Option<SnapshotName>,
    kind: Option<ExportKind>,
    mount: Option<SnapshotMount>,
}

impl Backup<'_> {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::from(self.config)
    }

    fn layout(&self) -> ExportLayout {
        ExportLayout::new(self.config.intermediate_basedir.clone())
    }

    fn hook_env<'s>(&'s self, state: &'s RunState, failed_step: Option<&'s str>) -> HookEnv<'s> {
        HookEnv {
            dataset: &self.config.dataset,
            snapshot: state.snapshot.as_ref(),
            kind: state.kind,
            failed_step,
        }
    }

    /// Runs the sequence. `on_step` is called after each finished step.
    ///
    /// # Errors
    ///
    /// [`BackupFailure`] naming the failed step. `on_failure` has run by
    /// then (its own failure is only logged) and the lock is released.
    pub fn run(
        &self,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<Vec<StepReport>, BackupFailure> {
        let mut state = RunState::default();
        let mut reports = Vec::new();
        for step in &self.config.steps {
            let name = step.to_string();
            let started = Instant::now();
            log::info!("step {name}: started");
            let result = if self.runner.cancel_token().is_cancelled() {
                Err(StepError::Interrupted)
            } else {
                self.run_step_limited(step, &mut state)
            };
            match result {
                Ok(summary) => {
                    let report = StepReport {
                        step: name.clone(),
                        duration: started.elapsed(),
                        summary,
                    };
                    log::info!(
                        "step {name}: done in {:.1}s: {}",
                        report.duration.as_secs_f64(),
                        report.summary
                    );
                    on_step(&report);
                    reports.push(report);
                }
                Err(error) => {
                    log::error!(
                        "step {name}: failed after {:.1}s",
                        started.elapsed().as_secs_f64()
                    );
                    return Err(self.fail(state, name, error));
                }
            }
        }
        // "Then it is unmounted, always", also when `steps` forgot to.
        self.unmount_if_mounted(&mut state);
        if let Some(hook) = &self.config.hooks.on_success {
            let options = HookOptions {
                timeout: self.config.hook_timeout(),
                ..HookOptions::default()
            };
            if let Err(e) = run_hook(
                self.runner,
                "on_success",
                hook,
                &self.hook_env(&state, None),
                &options,
            ) {
                return Err(self.fail(state, "on_success".into(), StepError::Hook(e)));
            }
        }
        if !self.runner.is_dry_run() {
            let kind = match self.config.mode {
                crate::model::Mode::File => Some(crate::ops::status::LAST_BACKUP_KIND_FILE),
                crate::model::Mode::Intermediate => state.kind.map(ExportKind::as_str),
            };
            let record =
                crate::ops::status::LastBackup::new(self.now, state.snapshot.as_ref(), kind);
            // The backup itself succeeded; a status file that cannot be
            // written must not turn that into a failure.
            if let Err(e) =
                crate::ops::status::record_last_backup(&self.config.intermediate_basedir, &record)
            {
                log::warn!("could not record the last backup for `status`: {e}");
            }
        }
        Ok(reports)
    }

    /// Runs one step on its own, as the standalone commands do: no hooks
    /// but those inside the step, and a snapshot mounted by
    /// `mount-snapshot` stays mounted (that is what the command is for).
    ///
    /// # Errors
    ///
    /// [`BackupFailure`] naming the step.
    pub fn run_single(&self, step: &Step) -> Result<String, BackupFailure> {
        let mut state = RunState::default();
        // A mount made here is left in place on purpose (dropping the state
        // does not unmount); `umount-snapshot` takes it down, or the next
        // run cleans it up.
        self.run_step_limited(step, &mut state)
            .map_err(|error| BackupFailure {
                step: step.to_string(),
                error,
            })
    }

    /// Runs `on_failure` with the error on stdin, then releases the lock
    /// (by dropping `state`).
    fn fail(&self, state: RunState, step: String, error: StepError) -> BackupFailure {
        let failure = BackupFailure { step, error };
        // Another run holding the lock is not this run's failure to report.
        if failure.error.is_lock_held() {
            return failure;
        }
        let mut state = state;
        self.unmount_if_mounted(&mut state);
        if let Some(hook) = &self.config.hooks.on_failure {
            let options = HookOptions {
                stdin: Some(format!("{}\n", crate::util::error_chain(&failure))),
                timeout: self.config.hook_timeout(),
                // It must report an interruption too.
                must_run: true,
            };
            if let Err(e) = run_hook(
                self.runner,
                "on_failure",
                hook,
                &self.hook_env(&state, Some(&failure.step)),
                &options,
            ) {
                log::error!("{}", crate::util::error_chain(&e));
            }
        }
        drop(state);
        failure
    }

    /// Takes down a snapshot exposure this run made, whatever happened;
    /// a failure to do so is logged loudly (the next run cleans it up).
    fn unmount_if_mounted(&self, state: &mut RunState) {
        if let Some(m) = state.mount.take() {
            if let Err(e) = self.mounter.unmount(&m) {
                log::error!(
                    "could not take down {} at {} (the next run will retry): {}",
                    m.snapshot,
                    m.dir.display(),
                    crate::util::error_chain(&e)
                );
            }
        }
    }

    /// The run's snapshot, or the newest of zfs2cloud's.
    fn target_snapshot(&self, state: &RunState) -> Result<SnapshotName, StepError> {
        if let Some(s) = &state.snapshot {
            return Ok(s.clone());
        }
        let snapshots = self.snapshotter.list(&self.config.dataset)?;
        Ok(latest_own(&snapshots)
            .ok_or(PlanError::NoSnapshot)?
            .name
            .clone())
    }

    /// Runs `step` under its `[step_timeouts]` limit. The deadline is
    /// cleared before anything else runs (unmounting, `on_failure`).
    fn run_step_limited(&self, step: &Step, state: &mut RunState) -> Result<String, StepError> {
        let cancel = self.runner.cancel_token();
        let (result, timed_out) =
            cancel.run_limited(self.config.step_limit(step), || self.run_step(step, state));
        match (result, timed_out) {
            (Err(error), Some(limit)) => Err(StepError::TimedOut {
                step: step.to_string(),
                limit,
                source: Box::new(error),
            }),
            // Say so, unless the error does already.
            (Err(error), None)
                if cancel.is_interrupted()
                    && !crate::util::error_chain(&error).contains("interrupted") =>
            {
                Err(StepError::InterruptedDuring(Box::new(error)))
            }
            (result, _) => result,
        }
    }

    fn run_step(&self, step: &Step, state: &mut RunState) -> Result<String, StepError> {
        let config = self.config;
        match step {
            Step::Lock => {
                if self.runner.skip_in_dry_run(&format!(
                    "lock {}",
                    config
                        .intermediate_basedir
                        .join(crate::ops::lock::LOCK_FILE)
                        .display()
                )) {
                    return Ok("dry run".into());
                }
                let lock = RunLock::acquire(&config.intermediate_basedir, self.now)?;
                let summary = format!("holding {}", lock.path().display());
                state.lock = Some(lock);
                Ok(summary)
            }
            Step::Unlock => {
                state.lock = None;
                Ok("released".into())
            }
            Step::Snapshot => {
                let at = SnapTime::from_instant(self.now, config.snapshot_time_zone);
                let name = take_snapshot(
                    self.snapshotter,
                    self.runner,
                    &config.hooks,
                    &config.dataset,
                    at,
                    config.hook_timeout(),
                    // Only under the run lock can a marker be a dead run's.
                    state
                        .lock
                        .as_ref()
                        .map(|_| {
                            config
                                .intermediate_basedir
                                .join(crate::ops::snapshot::SNAPSHOT_WINDOW_FILE)
                        })
                        .as_deref(),
                )?;
                let summary = if self.runner.is_dry_run() {
                    format!("dry run: would create {name}")
                } else {
                    format!("created {name}")
                };
                state.snapshot = Some(name);
                Ok(summary)
            }
            Step::Export => {
                let Some(encryptor) = self.encryptor else {
                    return Err(StepError::Unsupported(
                        "export needs passphrase_file (intermediate mode)".into(),
                    ));
                };
                if self.runner.is_dry_run() {
                    if let Some(snap) = &state.snapshot {
                        // The dry run took no snapshot, so there is nothing
                        // to plan from; say what would happen instead.
                        self.runner.skip_in_dry_run(&format!(
                            "export {snap}: zfs send [-i <last full>] {snap} | gpg ... | split into {}",
                            config.intermediate_basedir.display()
                        ));
                        return Ok("dry run".into());
                    }
                }
                let request = ExportRequest {
                    target: state.snapshot.as_ref().map(|s| s.snap().to_owned()),
                    force: None,
                    full_every_x_days: config.full_every_x_days,
                    remote: config.remote.clone(),
                    settings: ExportSettings {
                        split_size: config.split_size.0,
                        created_at: self.now,
                        cancel: self.runner.cancel_token().clone(),
                        compression: config.compression_settings(),
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
                Ok(match outcome {
                    ExportStepOutcome::Exported { plan, outcome } => {
                        state.kind = Some(plan.kind);
                        let streamed = outcome.streamed.as_ref().map_or(String::new(), |r| {
                            format!(
                                ", uploaded while exporting with at most {} chunk(s) on local disk",
                                r.peak_chunks_on_disk
                            )
                        });
                        format!(
                            "{} export of {} ({} chunks, {} bytes{streamed})",
                            plan.kind,
                            plan.snapshot,
                            outcome.manifest.chunks.len(),
                            outcome.manifest.total_size
                        )
                    }
                    ExportStepOutcome::AlreadyExported { snapshot, dir } => {
                        format!("{snapshot} already exported at {}", dir.display())
                    }
                    ExportStepOutcome::DryRun { plan, .. } => {
                        state.kind = Some(plan.kind);
                        format!(
                            "dry run: would make a {} export of {}",
                            plan.kind, plan.snapshot
                        )
                    }
                })
            }
            Step::Upload => {
                let settings = UploadSettings {
                    remote: config.remote.clone(),
                    retry: self.retry_policy(),
                    cancel: self.runner.cancel_token().clone(),
                    now: self.now,
                    dry_run: self.runner.is_dry_run(),
                };
                let done = upload_step(
                    self.snapshotter,
                    self.uploader,
                    &self.layout(),
                    &config.dataset,
                    None,
                    &settings,
                )?;
                Ok(if done.is_empty() {
                    "nothing to upload".into()
                } else {
                    done.iter()
                        .map(|(s, r)| {
                            format!(
                                "{s} ({} sent, {} already there)",
                                r.sent.len(),
                                r.skipped.len()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            }
            Step::PruneIntermediates => {
                let layout = self.layout();
                let snapshots = self.snapshotter.list(&config.dataset)?;
                let exports =
                    layout
                        .complete_exports(&config.dataset)
                        .map_err(|source| PruneError::Io {
                            path: layout.basedir().display().to_string(),
                            source,
                        })?;
                let uploaded = |e: &LocalExport| export_confirmed(&snapshots, e, &config.remote);
                let act = !self.runner.is_dry_run();
                let decisions = prune_exports(&layout, &exports, &uploaded, act)?;
                let removed = decisions
                    .iter()
                    .filter(|d| d.verdict == Verdict::Remove)
                    .count();
                if !act {
                    for d in decisions.iter().filter(|d| d.verdict == Verdict::Remove) {
                        self.runner
                            .skip_in_dry_run(&format!("rm -r {}", d.dir.display()));
                    }
                }
                Ok(format!("{removed} removed"))
            }
            Step::PruneSnapshots => {
                let snapshots = self.snapshotter.list(&config.dataset)?;
                // Destroy goes through the runner, so a dry run only prints.
                let decisions = prune_snapshots(
                    self.pruner,
                    &config.dataset,
                    &snapshots,
                    &SnapshotRetention::from_config(config, self.now),
                    true,
                )?;
                let removed = decisions
                    .iter()
                    .filter(|d| d.verdict == Verdict::Remove)
                    .count();
                Ok(format!("{removed} destroyed"))
            }
            Step::Script(path) => {
                let cmd = CommandLine::new(path)
                    .env("ZFS2CLOUD_DATASET", config.dataset.as_str())
                    .env(
                        "ZFS2CLOUD_SNAPSHOT",
                        state
                            .snapshot
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    );
                let options = RunOptions {
                    timeout: config.hook_timeout(),
                    ..RunOptions::default()
                };
                self.runner
                    .mutate_with(&cmd, &options)
                    .map_err(|source: ProcessError| {
                        StepError::Hook(HookError {
                            name: path.display().to_string(),
                            source,
                        })
                    })?;
                Ok("ran".into())
            }
            Step::MountSnapshot => {
                let basedir = &config.intermediate_basedir;
                let cleaned = self.mounter.clean_leftovers(&config.dataset, basedir)?;
                if !cleaned.is_empty() {
                    log::warn!("cleaned up after an earlier run: {}", cleaned.join(", "));
                }
                let snapshot = self.target_snapshot(state)?;
                let m = self
                    .mounter
                    .mount(&snapshot, basedir, config.mount_strategy)?;
                let summary = format!("{snapshot} at {}", m.dir.display());
                state.mount = Some(m);
                Ok(summary)
            }
            Step::UploadSnapshotFiles => {
                let m = match &state.mount {
                    Some(m) => m.clone(),
                    None => {
                        let snapshot = self.target_snapshot(state)?;
                        self.mounter
                            .find(&snapshot, &config.intermediate_basedir)?
                            .ok_or_else(|| {
                                StepError::Unsupported(format!(
                                    "{snapshot} is not mounted; run mount-snapshot first"
                                ))
                            })?
                    }
                };
                sync_snapshot(
                    self.uploader,
                    &m,
                    &config.remote,
                    &self.retry_policy(),
                    self.runner.cancel_token(),
                    self.now,
                )?;
                Ok(format!("synced {} to {}", m.snapshot, config.remote))
            }
            Step::UmountSnapshot => match state.mount.take() {
                Some(m) => {
                    self.mounter.unmount(&m)?;
                    Ok(format!("{} unmounted", m.snapshot))
                }
                None => {
                    let cleaned = self
                        .mounter
                        .clean_leftovers(&config.dataset, &config.intermediate_basedir)?;
                    Ok(format!("{} taken down", cleaned.len()))
                }
            },
            Step::Verify => {
                let backups =
                    crate::ops::catalog::list_remote_backups(self.uploader, &config.remote)?;
                let only = state.snapshot.as_ref().map(|s| vec![s.snap().to_owned()]);
                let verdicts = crate::ops::verify::verify_listing(&backups, only.as_deref());
                let bad: Vec<String> = verdicts
                    .iter()
                    .filter(|v| v.health != crate::policy::Health::Ok)
                    .map(|v| format!("{} {:?}", v.backup, v.health))
                    .collect();
                if !bad.is_empty() {
                    return Err(StepError::Verify(bad.join("; ")));
                }
                Ok(format!("{} backup(s) OK", verdicts.len()))
            }
        }
    }
}
