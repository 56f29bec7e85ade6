//! `zfs2cloud backup`: the whole configured sequence, for every job asked
//! for. Jobs run one after another, or up to `--parallel` at once; a job
//! that fails does not stop the others, and the run ends with a summary
//! table when there is more than one job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use zfs2cloud_core::{run_monitored, CancelToken, Config, RunReport, RUN_REPORT_FORMAT};

use crate::app::{note, out, App};
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
/// its error is the run's. With `json`, the steps are not printed; one
/// JSON document with every job's report is (docs/backup.schema.json).
pub fn run(
    cli: &Cli,
    cancel: &CancelToken,
    jobs: &[&Config],
    parallel: u32,
    json: bool,
) -> anyhow::Result<()> {
    if let [job] = jobs {
        if job.job.is_none() {
            let app = App::new(cli, cancel, (*job).clone())?;
            let (report, result) = run_job(&app, None, json);
            if json {
                print_json(std::slice::from_ref(&report))?;
            }
            return result;
        }
    }
    let reports = run_all(cli, cancel, jobs, parallel as usize, json);
    if json {
        print_json(&reports)?;
    } else {
        let rows: Vec<JobRow> = reports.iter().map(JobRow::from).collect();
        out(render_jobs(&rows).trim_end());
    }
    let failed = reports.iter().filter(|r| !r.success).count();
    let locked = reports.iter().filter(|r| r.locked).count();
    JobsFailed::check(reports.len(), failed, locked)
}

/// The reports as `backup --json` prints them.
fn print_json(reports: &[RunReport]) -> anyhow::Result<()> {
    let doc = serde_json::json!({
        "format": RUN_REPORT_FORMAT,
        "success": reports.iter().all(|r| r.success),
        "jobs": reports,
    });
    out(&serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// Every job, `parallel` at a time, in file order in the result.
fn run_all(
    cli: &Cli,
    cancel: &CancelToken,
    jobs: &[&Config],
    parallel: usize,
    json: bool,
) -> Vec<RunReport> {
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<Option<RunReport>>> = Mutex::new(vec![None; jobs.len()]);
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        let Some(job) = jobs.get(i) else { return };
        let report = run_one(cli, cancel, job, json);
        if let Ok(mut reports) = reports.lock() {
            reports[i] = Some(report);
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..parallel.clamp(1, jobs.len().max(1)) {
            scope.spawn(worker);
        }
    });
    reports
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// One job, its failure reported on stderr as it happens.
fn run_one(cli: &Cli, cancel: &CancelToken, job: &Config, json: bool) -> RunReport {
    let name = job.name();
    let (mut report, result) = match App::new(cli, cancel, job.clone()) {
        Ok(app) => run_job(&app, Some(&name), json),
        Err(e) => {
            let text = format!("{e:#}");
            (RunReport::not_started(job, cli.dry_run, text), Err(e))
        }
    };
    if let Err(e) = result {
        // The lock, as the exit code sees it (also when held in a step).
        report.locked = report_failure(e, &format!("job {name}"));
    }
    report
}

/// Runs one job's sequence with its monitoring (pings, metrics file),
/// printing a line per finished step (prefixed with the job's name when
/// several run): on stdout, or with `json` on stderr, as it happens.
fn run_job(app: &App, prefix: Option<&str>, json: bool) -> (RunReport, anyhow::Result<()>) {
    let tag = prefix.map(|p| format!("[{p}] ")).unwrap_or_default();
    let say = |line: &str| if json { note(line) } else { out(line) };
    let backup = app.backup();
    let (report, result) = run_monitored(&backup, &mut |step| {
        say(&format!(
            "{tag}{:<20} {:>7.1}s  {}",
            step.step,
            step.duration.as_secs_f64(),
            step.summary
        ));
    });
    if result.is_ok() {
        say(&format!(
            "{tag}backup of {} finished in {:.1}s",
            app.config.dataset, report.duration_seconds
        ));
    }
    (report, result.map_err(anyhow::Error::from))
}
