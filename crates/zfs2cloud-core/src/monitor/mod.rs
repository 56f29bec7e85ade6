//! Monitoring of `backup` runs: the Prometheus textfile metrics
//! (`metrics_file`) and the healthchecks.io-style pings (`ping_url`). Both
//! are for the monitor's sake: neither can fail or stop a backup, and a
//! dry run does neither.

pub mod metrics;
pub mod ping;

use crate::ops::backup::{Backup, BackupFailure, StepReport};
use crate::ops::report::RunReport;
use crate::util::error_chain;

use ping::{PingKind, Pinger};

/// [`Backup::run_reported`] with the job's monitoring around it: the start
/// ping, then the success or fail ping (the error text as its body), then
/// the metrics file. Failures of either are logged as warnings.
///
/// # Errors
///
/// The run's [`BackupFailure`], also described in the report.
pub fn run_monitored(
    backup: &Backup<'_>,
    on_step: &mut dyn FnMut(&StepReport),
) -> (RunReport, Result<(), BackupFailure>) {
    let config = backup.config;
    let live = !backup.runner.is_dry_run();
    let pinger = config
        .ping_url
        .as_ref()
        .filter(|_| live)
        .map(|u| Pinger::new(u.expose()));
    if let Some(p) = &pinger {
        p.ping(PingKind::Start, "");
    }
    let metrics_file = config.metrics_file.as_deref().filter(|_| live);
    let (report, result) = backup.run_reported(on_step, metrics_file.is_some());
    if let Some(p) = &pinger {
        match &result {
            Ok(()) => p.ping(PingKind::Success, &success_text(&report)),
            Err(failure) => p.ping(PingKind::Fail, &format!("{}\n", error_chain(failure))),
        };
    }
    if let Some(path) = metrics_file {
        if let Err(e) = metrics::write_metrics(path, &report, &config.intermediate_basedir) {
            log::warn!("could not write the metrics file {}: {e}", path.display());
        }
    }
    (report, result)
}

/// The body of a success ping: what the run did, in a line.
fn success_text(report: &RunReport) -> String {
    format!(
        "zfs2cloud backup of {}: {} in {:.1}s, {} bytes exported, {} bytes uploaded\n",
        report.dataset,
        report.kind.as_deref().unwrap_or("nothing exported"),
        report.duration_seconds,
        report.bytes_exported,
        report.bytes_uploaded
    )
}
