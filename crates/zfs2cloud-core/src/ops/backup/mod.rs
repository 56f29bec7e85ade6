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
use crate::model::{ExportKind, Mode, SnapshotName, Step};
use crate::ops::catalog::CatalogError;
use crate::ops::export::{ExportError, ExportStepOutcome};
use crate::ops::lock::{LockError, RunLock};
use crate::ops::prune_remote::PruneRemoteError;
use crate::ops::snapshot::{run_hook, HookEnv, HookError, HookOptions, SnapshotError};
use crate::ops::status::{record_last_backup, LastBackup, LAST_BACKUP_KIND_FILE};
use crate::ops::upload::{UploadReport, UploadStepError};
use crate::policy::{Health, PlanError, TreePlan, Verdict};
use crate::process::Runner;
use crate::stages::{
    Encryptor, Exporter, MountError, Mounter, PruneError, Pruner, SnapshotMount, Snapshotter,
    Uploader, ZfsError,
};
use crate::util::{error_chain, Progress, StepDone};

mod process_stages;
mod steps;
mod tree;

pub use process_stages::ProcessStages;
pub use steps::{ExportOptions, RemotePruneReport};
pub use tree::{MemberFailure, MemberFailures};

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
    /// The prune-remote step failed.
    #[error(transparent)]
    PruneRemote(#[from] PruneRemoteError),
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
    Catalog(#[from] CatalogError),
    /// Members of a recursive job's tree failed; the others were backed up.
    #[error("{0}")]
    Members(MemberFailures),
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
    /// Progress of the steps, and of the transfers inside them.
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
    /// The bytes it exported, where it exported any.
    pub bytes: Option<u64>,
    /// The chunk bytes it sent to the remote, where it sent any.
    pub uploaded: Option<u64>,
    /// The kind of export it made (or in a dry run, would make).
    pub kind: Option<ExportKind>,
}

/// What the run knows so far, for hooks.
#[derive(Debug, Default)]
struct RunState {
    lock: Option<RunLock>,
    snapshot: Option<SnapshotName>,
    kind: Option<ExportKind>,
    mount: Option<SnapshotMount>,
    /// The bytes the step that just ran exported.
    step_bytes: Option<u64>,
    /// The chunk bytes the step that just ran uploaded.
    step_uploaded: Option<u64>,
    /// A recursive job's tree, once listed.
    tree: Option<TreePlan>,
    /// The members of the tree that failed so far.
    failed: Vec<MemberFailure>,
}

impl Backup<'_> {
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
        if let Err(e) = self.refuse_volume_in_file_mode() {
            return Err(self.fail(state, Step::MountSnapshot.to_string(), e));
        }
        let mut reports = Vec::new();
        for step in &self.config.steps {
            let name = step.to_string();
            let started = Instant::now();
            log::info!("step {name}: started");
            self.progress.step_begin(&name);
            let result = if self.runner.cancel_token().is_cancelled() {
                Err(StepError::Interrupted)
            } else if self.config.recursive && !tree::runs_once(step) {
                self.run_tree_step(step, &mut state)
                    .map(|(summary, members)| {
                        for report in members {
                            on_step(&report);
                            reports.push(report);
                        }
                        summary
                    })
            } else {
                self.run_step_limited(step, &mut state)
            };
            match result {
                Ok(summary) => {
                    let report = StepReport {
                        step: name.clone(),
                        duration: started.elapsed(),
                        summary,
                        bytes: state.step_bytes.take(),
                        uploaded: state.step_uploaded.take(),
                        kind: if *step == Step::Export {
                            state.kind
                        } else {
                            None
                        },
                    };
                    self.progress.step_end(&StepDone {
                        step: &name,
                        duration: report.duration,
                        bytes: report.bytes,
                        failed: false,
                    });
                    log::info!(
                        "step {name}: done in {:.1}s: {}",
                        report.duration.as_secs_f64(),
                        report.summary
                    );
                    on_step(&report);
                    reports.push(report);
                }
                Err(error) => {
                    self.progress.step_end(&StepDone {
                        step: &name,
                        duration: started.elapsed(),
                        bytes: None,
                        failed: true,
                    });
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
        if let Some(error) = self.member_failures(&state) {
            let step = state
                .failed
                .first()
                .map_or_else(String::new, |f| f.step.clone());
            return Err(self.fail(state, step, error));
        }
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
                Mode::File => Some(LAST_BACKUP_KIND_FILE),
                Mode::Intermediate => state.kind.map(ExportKind::as_str),
            };
            let record = LastBackup::new(self.now, state.snapshot.as_ref(), kind);
            // The backup itself succeeded; a status file that cannot be
            // written must not turn that into a failure.
            if let Err(e) = record_last_backup(&self.config.intermediate_basedir, &record) {
                log::warn!("could not record the last backup for `status`: {e}");
            }
        }
        Ok(reports)
    }

    /// File mode of a volume fails in `mount-snapshot`; say so before the
    /// sequence takes a snapshot (and stops the application for it). If
    /// zfs cannot tell, the steps find out for themselves.
    fn refuse_volume_in_file_mode(&self) -> Result<(), StepError> {
        if self.config.mode != Mode::File {
            return Ok(());
        }
        match self.mounter.require_file_system(&self.config.dataset) {
            Err(e @ MountError::Volume { .. }) => Err(e.into()),
            Err(e) => {
                log::debug!("cannot tell whether the dataset is a volume: {e}");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
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
        self.run_alone(step, |this| this.run_step(step, &mut state))
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
                stdin: Some(format!("{}\n", error_chain(&failure))),
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
                log::error!("{}", error_chain(&e));
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
                    error_chain(&e)
                );
            }
        }
    }

    /// Runs `f`, the work of `step`, under the step's `[step_timeouts]`
    /// limit: when it runs out, whatever the step is running is stopped.
    /// The deadline is cleared before anything else runs (unmounting,
    /// `on_failure`).
    ///
    /// # Errors
    ///
    /// `f`'s error; [`StepError::TimedOut`] around it if the limit ran out,
    /// [`StepError::InterruptedDuring`] if the run was interrupted.
    pub fn limited<T>(
        &self,
        step: &Step,
        f: impl FnOnce() -> Result<T, StepError>,
    ) -> Result<T, StepError> {
        let cancel = self.runner.cancel_token();
        let (result, timed_out) = cancel.run_limited(self.config.step_limit(step), f);
        match (result, timed_out) {
            (Err(error), Some(limit)) => Err(StepError::TimedOut {
                step: step.to_string(),
                limit,
                source: Box::new(error),
            }),
            // Say so, unless the error does already.
            (Err(error), None)
                if cancel.is_interrupted() && !error_chain(&error).contains("interrupted") =>
            {
                Err(StepError::InterruptedDuring(Box::new(error)))
            }
            (result, _) => result,
        }
    }

    /// Runs one step's function `f` on its own, as a standalone command
    /// does: under the step's time limit, with no hooks but those inside
    /// the step.
    ///
    /// # Errors
    ///
    /// [`BackupFailure`] naming the step.
    pub fn run_alone<T>(
        &self,
        step: &Step,
        f: impl FnOnce(&Self) -> Result<T, StepError>,
    ) -> Result<T, BackupFailure> {
        self.limited(step, || f(self))
            .map_err(|error| BackupFailure {
                step: step.to_string(),
                error,
            })
    }

    fn run_step_limited(&self, step: &Step, state: &mut RunState) -> Result<String, StepError> {
        self.limited(step, || self.run_step(step, state))
    }

    /// Runs `step`, keeping what later steps and the hooks need in
    /// `state`, and says what it did in a few words.
    fn run_step(&self, step: &Step, state: &mut RunState) -> Result<String, StepError> {
        match step {
            Step::Lock => {
                state.lock = self.lock()?;
                Ok(state.lock.as_ref().map_or_else(
                    || "dry run".to_owned(),
                    |lock| format!("holding {}", lock.path().display()),
                ))
            }
            Step::Unlock => {
                state.lock = None;
                Ok("released".into())
            }
            Step::Snapshot if self.config.recursive => {
                let summary = self.snapshot_tree(state)?;
                self.fail_unusable_members(state);
                Ok(summary)
            }
            Step::Snapshot => {
                let name = self.snapshot(state.lock.is_some())?;
                let summary = if self.runner.is_dry_run() {
                    format!("dry run: would create {name}")
                } else {
                    format!("created {name}")
                };
                state.snapshot = Some(name);
                Ok(summary)
            }
            Step::Export => self.export_in_run(state),
            Step::Upload => {
                let done = self.upload(None)?;
                state.step_uploaded = Some(done.iter().map(|(_, r)| r.chunk_bytes_sent).sum());
                Ok(upload_summary(&done))
            }
            Step::PruneIntermediates => {
                let act = !self.runner.is_dry_run();
                let decisions = self.prune_intermediates(act)?;
                let removed: Vec<_> = decisions
                    .iter()
                    .filter(|d| d.verdict == Verdict::Remove)
                    .collect();
                if !act {
                    for d in &removed {
                        self.runner
                            .skip_in_dry_run(&format!("rm -r {}", d.dir.display()));
                    }
                }
                Ok(format!("{} removed", removed.len()))
            }
            Step::PruneSnapshots => {
                // Destroy goes through the runner, so a dry run only prints.
                let decisions = self.prune_snapshots(true)?;
                let destroyed = decisions
                    .iter()
                    .filter(|d| d.verdict == Verdict::Remove)
                    .count();
                Ok(format!("{destroyed} destroyed"))
            }
            Step::PruneRemote => {
                // Deletes go through the runner, so a dry run only prints.
                let report = self.prune_remote(true)?;
                Ok(prune_remote_summary(&report, self.runner.is_dry_run()))
            }
            Step::Script(path) => {
                self.run_script(path, state.snapshot.as_ref())?;
                Ok("ran".into())
            }
            Step::MountSnapshot => {
                let m = self.mount_snapshot(state.snapshot.as_ref())?;
                let summary = format!("{} at {}", m.snapshot, m.dir.display());
                state.mount = Some(m);
                Ok(summary)
            }
            Step::UploadSnapshotFiles => {
                let m =
                    self.upload_snapshot_files(state.mount.as_ref(), state.snapshot.as_ref())?;
                Ok(format!("synced {} to {}", m.snapshot, self.config.remote))
            }
            Step::UmountSnapshot => match state.mount.take() {
                Some(m) => {
                    self.umount_snapshot(Some(m.clone()))?;
                    Ok(format!("{} unmounted", m.snapshot))
                }
                None => Ok(format!("{} taken down", self.umount_snapshot(None)?.len())),
            },
            Step::Verify => {
                let only = state.snapshot.as_ref().map(SnapshotName::snap);
                let checks = self.verify_listing(only)?;
                let bad: Vec<String> = checks
                    .iter()
                    .filter(|v| v.health != Health::Ok)
                    .map(|v| format!("{} {:?}", v.backup, v.health))
                    .collect();
                if !bad.is_empty() {
                    return Err(StepError::Verify(bad.join("; ")));
                }
                Ok(format!("{} backup(s) OK", checks.len()))
            }
        }
    }

    /// The export step inside a run: of the snapshot the run took, if any.
    fn export_in_run(&self, state: &mut RunState) -> Result<String, StepError> {
        if self.encryptor.is_some() && self.runner.is_dry_run() {
            if let Some(snap) = &state.snapshot {
                // The dry run took no snapshot, so there is nothing to plan
                // from; say what would happen instead.
                self.runner.skip_in_dry_run(&format!(
                    "export {snap}: zfs send {}[-i <last full>] {snap} | {} | split into {}",
                    self.config
                        .send_flags
                        .args()
                        .iter()
                        .map(|a| format!("{a} "))
                        .collect::<String>(),
                    match self.config.encryption {
                        crate::model::Encryption::Gpg => "gpg ...",
                        crate::model::Encryption::None => "(no encryption)",
                        crate::model::Encryption::GpgRecipients =>
                            "gpg --encrypt --recipient-file ...",
                    },
                    self.config.intermediate_basedir.display()
                ));
                return Ok("dry run".into());
            }
        }
        let options = ExportOptions {
            target: state.snapshot.as_ref().map(|s| s.snap().to_owned()),
            force: None,
        };
        let outcome = self.export(&options)?;
        if let ExportStepOutcome::Exported { plan, .. } | ExportStepOutcome::DryRun { plan, .. } =
            &outcome
        {
            state.kind = Some(plan.kind);
        }
        if let ExportStepOutcome::Exported { outcome, .. } = &outcome {
            state.step_bytes = Some(outcome.manifest.total_size);
            state.step_uploaded = outcome
                .streamed
                .as_ref()
                .map(|r| outcome.manifest.chunk_bytes_among(&r.confirmed));
        }
        Ok(export_summary(&outcome))
    }
}

/// The export step's line in the backup report.
fn export_summary(outcome: &ExportStepOutcome) -> String {
    match outcome {
        ExportStepOutcome::Exported { plan, outcome } => {
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
        ExportStepOutcome::DryRun { plan, .. } => format!(
            "dry run: would make a {} export of {}",
            plan.kind, plan.snapshot
        ),
    }
}

/// The prune-remote step's line in the backup report.
fn prune_remote_summary(report: &RemotePruneReport, dry_run: bool) -> String {
    let verb = if dry_run {
        "dry run: would delete"
    } else {
        "deleted"
    };
    format!(
        "{verb} {} of {} backup(s), {} bytes",
        report.deleted.len(),
        report.plan.decisions.len(),
        report.plan.bytes_freed()
    )
}

/// The upload step's line in the backup report.
fn upload_summary(done: &[(SnapshotName, UploadReport)]) -> String {
    if done.is_empty() {
        return "nothing to upload".into();
    }
    done.iter()
        .map(|(s, r)| {
            format!(
                "{s} ({} sent, {} bytes of chunks, {} already there)",
                r.sent.len(),
                r.chunk_bytes_sent,
                r.skipped.len()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
