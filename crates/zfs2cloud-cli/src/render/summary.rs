//! The table that ends a run of several jobs.

use std::fmt::Write as _;
use std::time::Duration;

/// One job's line.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub name: String,
    pub dataset: String,
    pub failed: bool,
    /// It failed because another run holds its lock.
    pub locked: bool,
    pub duration: Duration,
    /// Bytes exported, where the job exported any.
    pub bytes: Option<u64>,
}

impl From<&zfs2cloud_core::RunReport> for JobRow {
    fn from(r: &zfs2cloud_core::RunReport) -> Self {
        Self {
            name: r.job.clone(),
            dataset: r.dataset.clone(),
            failed: !r.success,
            locked: r.locked,
            duration: Duration::from_secs_f64(r.duration_seconds),
            bytes: r.exported(),
        }
    }
}

/// `job  dataset  result  duration  bytes`, one line per job.
pub fn render_jobs(rows: &[JobRow]) -> String {
    let name_w = width(rows.iter().map(|r| r.name.len()), "job");
    let ds_w = width(rows.iter().map(|r| r.dataset.len()), "dataset");
    let mut text = format!(
        "{:<name_w$}  {:<ds_w$}  {:<7}  {:>9}  {:>10}\n",
        "job", "dataset", "result", "duration", "bytes"
    );
    for r in rows {
        let result = match (r.failed, r.locked) {
            (false, _) => "ok",
            (true, false) => "FAILED",
            (true, true) => "LOCKED",
        };
        let _ = writeln!(
            text,
            "{:<name_w$}  {:<ds_w$}  {result:<7}  {:>8.1}s  {:>10}",
            r.name,
            r.dataset,
            r.duration.as_secs_f64(),
            r.bytes.map_or_else(|| "-".to_owned(), human_bytes)
        );
    }
    text
}

fn width(lens: impl Iterator<Item = usize>, header: &str) -> usize {
    lens.max().unwrap_or(0).max(header.len())
}

pub use zfs2cloud_core::human_bytes;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_table_aligns_and_marks_failures() {
        let row = |name: &str, failed, locked, bytes| JobRow {
            name: name.into(),
            dataset: format!("tank/{name}"),
            failed,
            locked,
            duration: Duration::from_millis(1500),
            bytes,
        };
        let text = render_jobs(&[
            row("home", false, false, Some(3 << 20)),
            row("media-library", true, false, None),
            row("vm", true, true, None),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[1].contains(" ok ") && lines[1].ends_with("3.0 MiB"),
            "{text}"
        );
        assert!(
            lines[2].contains("FAILED") && lines[2].ends_with('-'),
            "{text}"
        );
        assert!(lines[3].contains("LOCKED"), "{text}");
        let col = |l: &str| l.find("tank/").unwrap();
        assert!(lines[1..].iter().all(|l| col(l) == col(lines[1])), "{text}");
    }

    #[test]
    fn sizes_are_binary_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
