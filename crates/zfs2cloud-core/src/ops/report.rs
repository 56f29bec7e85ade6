//! One `backup` run of one job, summed up once: what the metrics file,
//! the pings, `backup --json` and the jobs' summary table all report.

use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::model::{ExportKind, Mode};
use crate::ops::backup::{Backup, BackupFailure, StepReport};
use crate::ops::catalog::{RemoteListing, RemoteTotals};
use crate::ops::status::LAST_BACKUP_KIND_FILE;
use crate::util::error_chain;

/// The format of [`RunReport`] as JSON (`backup --json`).
pub const RUN_REPORT_FORMAT: u32 = 1;

/// What one run of one job did, whether it succeeded or not.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The job's name (its dataset in the single-dataset form).
    pub job: String,
    /// The job's dataset (the root of a recursive job's tree).
    pub dataset: String,
    /// Nothing was changed: the run only printed what it would do.
    pub dry_run: bool,
    /// When the run started (wall clock).
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    /// When it ended.
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: DateTime<Utc>,
    /// How long it took.
    pub duration_seconds: f64,
    /// Every step succeeded.
    pub success: bool,
    /// The step that failed.
    pub failed_step: Option<String>,
    /// Why, the whole cause chain on one line.
    pub error: Option<String>,
    /// Another run held the lock: nothing was done.
    pub locked: bool,
    /// `full` or `incremental` (the export this run made or, dry, would
    /// make), `file` (a file-mode run), or `None` (nothing exported).
    pub kind: Option<String>,
    /// The bytes exported (the sum of the new exports' chunks).
    pub bytes_exported: u64,
    /// The chunk bytes sent to the remote (while exporting, or by the
    /// upload step).
    pub bytes_uploaded: u64,
    /// The complete backups on the remote after a successful run, where
    /// they were listed.
    pub remote: Option<RemoteTotals>,
    /// The steps that finished, in order.
    pub steps: Vec<StepEntry>,
}

/// One finished step of a [`RunReport`].
#[derive(Debug, Clone, Serialize)]
pub struct StepEntry {
    /// The step's name (a recursive job has one entry per member).
    pub step: String,
    /// How long it took.
    pub duration_seconds: f64,
    /// What it did, in a few words.
    pub summary: String,
    /// The bytes it exported.
    pub bytes_exported: Option<u64>,
    /// The chunk bytes it uploaded.
    pub bytes_uploaded: Option<u64>,
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

impl From<&StepReport> for StepEntry {
    fn from(r: &StepReport) -> Self {
        Self {
            step: r.step.clone(),
            duration_seconds: r.duration.as_secs_f64(),
            summary: r.summary.clone(),
            bytes_exported: r.bytes,
            bytes_uploaded: r.uploaded,
        }
    }
}

impl RunReport {
    /// The report of a run that started at `started_at` and ended with
    /// `result` after the steps `steps`.
    #[must_use]
    pub fn new(
        backup: &Backup<'_>,
        started_at: DateTime<Utc>,
        steps: &[StepReport],
        result: Result<(), &BackupFailure>,
    ) -> Self {
        let finished_at = Utc::now();
        let kind = match backup.config.mode {
            Mode::File => result.is_ok().then(|| LAST_BACKUP_KIND_FILE.to_owned()),
            Mode::Intermediate => {
                // A recursive job's steps list its members: the root's kind.
                let kinds: Vec<ExportKind> = steps.iter().filter_map(|s| s.kind).collect();
                kinds.first().map(|k| k.as_str().to_owned())
            }
        };
        Self {
            job: backup.config.name(),
            dataset: backup.config.dataset.to_string(),
            dry_run: backup.runner.is_dry_run(),
            started_at,
            finished_at,
            duration_seconds: (finished_at - started_at)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64(),
            success: result.is_ok(),
            failed_step: result.err().map(|f| f.step.clone()),
            error: result.err().map(|f| error_chain(f)),
            locked: result.err().is_some_and(|f| f.error.is_lock_held()),
            kind,
            bytes_exported: steps.iter().filter_map(|s| s.bytes).sum(),
            bytes_uploaded: steps.iter().filter_map(|s| s.uploaded).sum(),
            remote: None,
            steps: steps.iter().map(StepEntry::from).collect(),
        }
    }
}

impl RunReport {
    /// The report of a job that could not start (its stages could not be
    /// built): `error` says why.
    #[must_use]
    pub fn not_started(config: &Config, dry_run: bool, error: String) -> Self {
        let now = Utc::now();
        Self {
            job: config.name(),
            dataset: config.dataset.to_string(),
            dry_run,
            started_at: now,
            finished_at: now,
            duration_seconds: 0.0,
            success: false,
            failed_step: None,
            error: Some(error),
            locked: false,
            kind: None,
            bytes_exported: 0,
            bytes_uploaded: 0,
            remote: None,
            steps: Vec::new(),
        }
    }

    /// The bytes exported, if any step exported (for tables: `-` else).
    #[must_use]
    pub fn exported(&self) -> Option<u64> {
        self.steps
            .iter()
            .any(|s| s.bytes_exported.is_some())
            .then_some(self.bytes_exported)
    }
}

impl Backup<'_> {
    /// [`Backup::run`], summed up in a [`RunReport`]. With `list_remote`,
    /// a successful run that changed things lists the remote once more
    /// (one `rclone lsjson`, names and sizes) to count its backups; a
    /// recursive job's members have directories of their own and are not
    /// counted.
    ///
    /// # Errors
    ///
    /// The run's [`BackupFailure`], also described in the report.
    pub fn run_reported(
        &self,
        on_step: &mut dyn FnMut(&StepReport),
        list_remote: bool,
    ) -> (RunReport, Result<(), BackupFailure>) {
        let started_at = Utc::now();
        let clock = Instant::now();
        let mut steps = Vec::new();
        let result = self
            .run(&mut |step| {
                on_step(step);
                steps.push(step.clone());
            })
            .map(|_| ());
        let mut report = RunReport::new(self, started_at, &steps, result.as_ref().map(|_| ()));
        report.duration_seconds = clock.elapsed().as_secs_f64();
        if list_remote
            && result.is_ok()
            && !report.dry_run
            && !self.config.recursive
            && self.config.mode == Mode::Intermediate
        {
            report.remote = self.remote_totals();
        }
        (report, result)
    }

    /// The remote's complete backups, or `None` (logged) if it cannot be
    /// listed: a count that cannot be had must not fail the backup.
    fn remote_totals(&self) -> Option<RemoteTotals> {
        match RemoteListing::read(self.uploader, &self.config.remote) {
            Ok(listing) => Some(listing.totals()),
            Err(e) => {
                log::warn!(
                    "could not count the backups on the remote: {}",
                    error_chain(&e)
                );
                None
            }
        }
    }
}
