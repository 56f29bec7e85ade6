//! The Prometheus textfile metrics of one job (`metrics_file`), for
//! node_exporter's textfile collector. The collector reads each `*.prom`
//! file whole, so every run rewrites its job's file whole and atomically:
//! one file per job (a config refuses two jobs sharing one), never a
//! half-written one.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::DateTime;

use crate::ops::report::RunReport;
use crate::ops::status::read_last_backup;

/// The metric whose value a failed run keeps from the file before.
const LAST_SUCCESS: &str = "zfs2cloud_last_success_timestamp_seconds";

/// The metrics of `report`, in the Prometheus text format. `last_success`
/// (unix seconds) is used when the run failed; 0 says no success is known.
#[must_use]
pub fn render_metrics(report: &RunReport, last_success: Option<f64>) -> String {
    let labels = format!(
        "backup_job=\"{}\",dataset=\"{}\"",
        escape(&report.job),
        escape(&report.dataset)
    );
    let finished = unix_seconds(report.finished_at);
    let success = if report.success {
        Some(finished)
    } else {
        last_success
    };
    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, extra: &str, value: f64| {
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}{extra}}} {value}\n"
        );
    };
    gauge(
        LAST_SUCCESS,
        "When the last successful backup run ended (unix time; 0: none known).",
        "",
        success.unwrap_or(0.0),
    );
    gauge(
        "zfs2cloud_last_run_timestamp_seconds",
        "When the last backup run ended (unix time).",
        "",
        finished,
    );
    gauge(
        "zfs2cloud_last_run_duration_seconds",
        "How long the last backup run took.",
        "",
        report.duration_seconds,
    );
    gauge(
        "zfs2cloud_last_run_success",
        "Whether the last backup run succeeded (1) or failed (0).",
        "",
        if report.success { 1.0 } else { 0.0 },
    );
    gauge(
        "zfs2cloud_last_run_exported_bytes",
        "The bytes the last backup run exported.",
        "",
        report.bytes_exported as f64,
    );
    gauge(
        "zfs2cloud_last_run_uploaded_bytes",
        "The chunk bytes the last backup run uploaded.",
        "",
        report.bytes_uploaded as f64,
    );
    let kind = format!(
        ",kind=\"{}\"",
        escape(report.kind.as_deref().unwrap_or("none"))
    );
    gauge(
        "zfs2cloud_last_run_info",
        "The kind of backup the last run made: full, incremental, file or none.",
        &kind,
        1.0,
    );
    if let Some(remote) = report.remote {
        gauge(
            "zfs2cloud_remote_backups",
            "Complete backups on the remote after the last successful run.",
            "",
            remote.backups as f64,
        );
        gauge(
            "zfs2cloud_remote_backup_bytes",
            "The bytes of the complete backups on the remote.",
            "",
            remote.bytes as f64,
        );
    }
    text
}

/// The last success time in a metrics file this module wrote, if any.
#[must_use]
pub fn parse_last_success(text: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(LAST_SUCCESS) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .find(|v| *v > 0.0)
}

/// Writes `report`'s metrics to `path`, atomically (a temporary file in
/// the same directory, fsynced, renamed over the old one), mode 0644. A
/// failed run keeps the last success time: from the file it replaces,
/// else from the last backup recorded in `basedir`.
///
/// # Errors
///
/// I/O errors writing, syncing or renaming (the directory must exist).
pub fn write_metrics(path: &Path, report: &RunReport, basedir: &Path) -> io::Result<()> {
    let last_success = if report.success {
        None
    } else {
        previous_success(path, basedir)
    };
    let text = render_metrics(report, last_success);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(
        || "metrics".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    // Not `*.prom`: the collector never reads the temporary file.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)?;
    // Whatever the umask: node_exporter runs as another user.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// The last success before this run: the old metrics file's, else the
/// last backup `status` knows of.
fn previous_success(path: &Path, basedir: &Path) -> Option<f64> {
    if let Some(t) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| parse_last_success(&t))
    {
        return Some(t);
    }
    let last = read_last_backup(basedir).ok().flatten()?;
    DateTime::parse_from_rfc3339(&last.finished_at)
        .ok()
        .map(|t| unix_seconds(t.to_utc()))
}

fn unix_seconds(t: DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests;
