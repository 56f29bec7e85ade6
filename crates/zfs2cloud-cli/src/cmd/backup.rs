//! `zfs2cloud backup`: the whole configured sequence, for every job asked
//! for. Jobs run one after another, or up to `--parallel` at once; a job
//! that fails does not stop the others, and the run ends with a summary
//! table when there is more than one job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use zfs2cloud_core::{CancelToken, Config, StepReport};

use crate::app::{out, App};
use crate::args::Cli;
use crate::render::summary::{render_jobs, JobRow};

/// Some jobs of a multi-job run failed (each was reported as it failed).
#[derive(Debug)]
pub struct JobsFailed {
    pub failed: usize,
    pub total: usize,
    /// Every job failed because another run holds its lock: nothing was
    /// done (exit code 75, as for one job).
    pub all_locked: bool,
}

impl std::fmt::Display for JobsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} jobs failed", self.failed, self.total)
    }
}

impl std::error::Error for JobsFailed {}

impl JobsFailed {
    /// The run's result: an error if any of `total` failed, `locked` of
    /// those because another run held the lock.
    pub fn check(total: usize, failed: usize, locked: usize) -> anyhow::Result<()> {
        if failed == 0 {
            return Ok(());
        }
        Err(Self {
            failed,
            total,
            // Nothing was done at all: "try again later", as for one job.
            all_locked: locked == total,
        }
        .into())
    }
}

/// Reports `error` (about `what`) on stderr as it happens, and says whether
/// it was another run holding the lock.
pub fn report_failure(error: anyhow::Error, what: &str) -> bool {
    let error = error.context(what.to_owned());
    crate::report_error(&error);
    crate::exit_code(&error) == crate::EXIT_LOCKED
}

/// Runs `jobs`. A file in the single-dataset form runs as it always did:
/// its error is the run's.
pub fn run(cli: &Cli, cancel: &CancelToken, jobs: &[&Config], parallel: u32) -> anyhow::Result<()> {
    if let [job] = jobs {
        if job.job.is_none() {
            let app = App::new(cli, cancel, (*job).clone())?;
            return run_job(&app, None).map(|_| ());
        }
    }
    let rows = run_all(cli, cancel, jobs, parallel as usize);
    out(render_jobs(&rows).trim_end());
    let failed = rows.iter().filter(|r| r.failed).count();
    let locked = rows.iter().filter(|r| r.locked).count();
    JobsFailed::check(rows.len(), failed, locked)
}

/// Every job, `parallel` at a time, in file order in the result.
fn run_all(cli: &Cli, cancel: &CancelToken, jobs: &[&Config], parallel: usize) -> Vec<JobRow> {
    let next = AtomicUsize::new(0);
    let rows: Mutex<Vec<Option<JobRow>>> = Mutex::new(vec![None; jobs.len()]);
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        let Some(job) = jobs.get(i) else { return };
        let row = run_one(cli, cancel, job);
        if let Ok(mut rows) = rows.lock() {
            rows[i] = Some(row);
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..parallel.clamp(1, jobs.len().max(1)) {
            scope.spawn(worker);
        }
    });
    rows.into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// One job, its failure reported on stderr as it happens.
fn run_one(cli: &Cli, cancel: &CancelToken, job: &Config) -> JobRow {
    let started = Instant::now();
    let name = job.name();
    let result = App::new(cli, cancel, job.clone()).and_then(|app| run_job(&app, Some(&name)));
    let (bytes, failure) = match result {
        Ok(bytes) => (bytes, None),
        Err(e) => (None, Some(report_failure(e, &format!("job {name}")))),
    };
    JobRow {
        name,
        dataset: job.dataset.to_string(),
        failed: failure.is_some(),
        locked: failure.unwrap_or(false),
        duration: started.elapsed(),
        bytes,
    }
}

/// Runs one job's sequence, printing a line per finished step (prefixed
/// with the job's name when several run); gives the bytes exported.
fn run_job(app: &App, prefix: Option<&str>) -> anyhow::Result<Option<u64>> {
    let started = Instant::now();
    let tag = prefix.map(|p| format!("[{p}] ")).unwrap_or_default();
    let reports = app.backup().run(&mut |step| {
        out(&format!(
            "{tag}{:<20} {:>7.1}s  {}",
            step.step,
            step.duration.as_secs_f64(),
            step.summary
        ));
    })?;
    out(&format!(
        "{tag}backup of {} finished in {:.1}s",
        app.config.dataset,
        started.elapsed().as_secs_f64()
    ));
    Ok(exported_bytes(&reports))
}

/// The bytes the run exported, if any step says.
fn exported_bytes(reports: &[StepReport]) -> Option<u64> {
    reports.iter().filter_map(|r| r.bytes).reduce(|a, b| a + b)
}
