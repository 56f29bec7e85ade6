//! `status` as tables: the snapshots, the full base, local exports, the
//! lock, the last backup and, with `--remote`, the remote's backups and
//! chains.

use std::fmt::Write as _;

use chrono::DateTime;

use zfs2cloud_core::{ExportKind, LockStatus, Mode, RemoteStatus, StatusReport};

use super::tree::forest;

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

/// `1.5 GiB`, `512 B`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[allow(clippy::cast_precision_loss)] // display only
    let mut value = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// `35m`, `5.5h`, `3.0d`.
fn human_age(seconds: i64) -> String {
    #[allow(clippy::cast_precision_loss)] // display only
    let s = seconds as f64;
    if seconds.abs() < 3600 {
        format!("{}m", seconds / 60)
    } else if seconds.abs() < 48 * 3600 {
        format!("{:.1}h", s / 3600.0)
    } else {
        format!("{:.1}d", s / 86_400.0)
    }
}

/// Appends an aligned table, indented by two spaces.
fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(line, "  {cell:<w$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn lock_line(lock: &LockStatus) -> String {
    match (lock.held, lock.holder.as_deref()) {
        (false, _) => "free".to_owned(),
        (true, Some(holder)) => format!("held by {holder}"),
        (true, None) => "held (holder unknown)".to_owned(),
    }
}

fn last_backup_line(report: &StatusReport) -> String {
    let Some(last) = &report.last_backup else {
        return "never".to_owned();
    };
    let mut line = last.finished_at.clone();
    let ago = DateTime::parse_from_rfc3339(&last.finished_at)
        .ok()
        .zip(DateTime::parse_from_rfc3339(&report.generated_at).ok())
        .map(|(then, now)| (now - then).num_seconds());
    if let Some(secs) = ago {
        let _ = write!(line, " ({} ago)", human_age(secs));
    }
    match (last.kind.as_deref(), last.snapshot.as_deref()) {
        (Some(kind), Some(snap)) => {
            let _ = write!(line, " {kind} of {snap}");
        }
        (None, Some(snap)) => {
            let _ = write!(line, " of {snap}");
        }
        (Some(kind), None) => {
            let _ = write!(line, " {kind}");
        }
        (None, None) => {}
    }
    line
}

/// The report as plain text for a terminal: a header, the lock, the last
/// backup, then sections for the snapshots, the local exports and (when
/// listed) the remote backups.
#[must_use]
pub fn render_table(report: &StatusReport) -> String {
    let mut out = String::new();
    let mode = match report.mode {
        Mode::Intermediate => "intermediate",
        Mode::File => "file",
    };
    let _ = writeln!(
        out,
        "dataset {} ({mode} mode), remote {}",
        report.dataset, report.remote
    );
    let _ = writeln!(out, "status at {}", report.generated_at);
    let _ = writeln!(out, "lock: {}", lock_line(&report.lock));
    let _ = writeln!(out, "last backup: {}", last_backup_line(report));

    let _ = writeln!(
        out,
        "snapshots ({} zfs2cloud, {} other):",
        report.snapshots.len(),
        report.foreign_snapshots
    );
    if report.snapshots.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows = snapshot_rows(report);
        table(
            &mut out,
            &["SNAPSHOT", "AGE", "KIND", "LEVEL", "HELD", "UPLOADED"],
            &rows,
        );
    }
    out.push_str(&bases_line(report));

    let _ = write!(out, "local exports in {}:", report.intermediate_basedir);
    if report.local_exports.is_empty() && report.partial_exports.is_empty() {
        out.push_str(" none\n");
    } else {
        out.push('\n');
        if !report.local_exports.is_empty() {
            let rows: Vec<Vec<String>> = report
                .local_exports
                .iter()
                .map(|e| {
                    vec![
                        e.dir.clone(),
                        e.kind.as_str().to_owned(),
                        e.chunks.to_string(),
                        human_bytes(e.bytes),
                        yes_no(e.uploaded),
                    ]
                })
                .collect();
            table(
                &mut out,
                &["DIR", "KIND", "CHUNKS", "SIZE", "UPLOADED"],
                &rows,
            );
        }
        for p in &report.partial_exports {
            let _ = writeln!(
                out,
                "  partial: {p} (unfinished: in progress, or left by an interrupted run)"
            );
        }
    }

    match (&report.remote_backups, report.mode) {
        (_, Mode::File) => {
            out.push_str("remote backups: none listed (file mode keeps plain files there)\n");
        }
        (None, Mode::Intermediate) => {
            out.push_str("remote backups: not listed (status --remote lists them)\n");
        }
        (Some(remote), Mode::Intermediate) => render_remote(&mut out, remote),
    }
    out
}

/// The snapshots, each under the one its export is based on.
fn snapshot_rows(report: &StatusReport) -> Vec<Vec<String>> {
    let snapshots = &report.snapshots;
    let parents: Vec<Option<usize>> = snapshots
        .iter()
        .map(|s| {
            let base = s.base.as_deref()?;
            snapshots.iter().position(|b| b.name == base)
        })
        .collect();
    forest(&parents)
        .into_iter()
        .map(|(i, prefix)| {
            let s = &snapshots[i];
            vec![
                format!("{prefix}{}", s.name),
                format!("{:.1}d", s.age_days),
                or_dash(s.kind.map(ExportKind::as_str)),
                or_dash(s.level.map(|l| l.to_string()).as_deref()),
                yes_no(s.held),
                yes_no(s.uploaded),
            ]
        })
        .collect()
}

/// Which snapshots the next incrementals will be based on, and whether
/// each is held.
fn bases_line(report: &StatusReport) -> String {
    if report.future_bases.is_empty() {
        return "future bases: none (the next export is a full)\n".to_owned();
    }
    let bases: Vec<String> = report
        .future_bases
        .iter()
        .map(|base| {
            let held = report.snapshots.iter().any(|s| &s.name == base && s.held);
            if held {
                base.clone()
            } else {
                format!("{base} (NOT held)")
            }
        })
        .collect();
    format!("future bases: {}\n", bases.join(", "))
}

fn render_remote(out: &mut String, remote: &RemoteStatus) {
    let _ = write!(out, "remote backups ({}):", remote.backups.len());
    if remote.backups.is_empty() {
        out.push_str(" none\n");
        return;
    }
    out.push('\n');
    for chain in &remote.chains {
        let incrementals = if chain.incrementals.is_empty() {
            "no incrementals".to_owned()
        } else {
            chain.incrementals.join(", ")
        };
        let _ = writeln!(out, "  chain {}: {incrementals}", chain.full);
    }
    if !remote.orphans.is_empty() {
        let _ = writeln!(
            out,
            "  orphans (chain broken: a backup they need is missing or has no manifest): {}",
            remote.orphans.join(", ")
        );
    }
    let rows: Vec<Vec<String>> = remote
        .backups
        .iter()
        .map(|b| {
            let health = match &b.reason {
                Some(reason) => format!("{}: {reason}", b.health.as_str()),
                None => b.health.as_str().to_owned(),
            };
            vec![
                b.dir.clone(),
                b.kind.as_str().to_owned(),
                or_dash(b.base.as_deref()),
                b.chunks.to_string(),
                human_bytes(b.bytes),
                health,
            ]
        })
        .collect();
    table(
        out,
        &["DIR", "KIND", "BASE", "CHUNKS", "SIZE", "HEALTH"],
        &rows,
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Reports captured from `collect_status` in core's tests (a realistic
    /// state, the same with the lock released, a fresh setup, file mode).
    fn report(json: &str) -> StatusReport {
        serde_json::from_str(json).unwrap()
    }

    fn assert_shows(text: &str, needles: &[&str]) {
        for needle in needles {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
    }

    #[test]
    fn a_realistic_state_reads_as_tables() {
        let text = render_table(&report(include_str!("testdata/status-realistic.json")));
        assert_shows(
            &text,
            &[
                "dataset tank/data (intermediate mode), remote ",
                "lock: held by pid=28530",
                "last backup: 2024-01-03T00:00:05Z (12.0h ago) incremental of tank/data@20240102000000",
                "snapshots (3 zfs2cloud, 2 other):",
                "SNAPSHOT           AGE   KIND         LEVEL  HELD  UPLOADED",
                "20240101000000     2.5d  full         0      yes   yes",
                "└─ 20240102000000  1.5d  incremental  1      no    no",
                "20240103000000     0.5d  -            -      no    no",
                "future bases: 20240101000000\n",
                "20240101000000-full  full         2       1.0 KiB  yes",
                "partial: 20240103000000.partial",
                "remote backups (3):",
                "chain 20240101000000-full: no incrementals",
                "orphans (chain broken: a backup they need is missing or has no manifest): 20231215000000, 20240102000000",
                "INCOMPLETE: manifest.json is missing",
                "DAMAGED: chunk tank-data@20231215000000.zfs.gpg.0000",
            ],
        );
        let text = render_table(&report(include_str!("testdata/status-released.json")));
        assert_shows(&text, &["lock: free\n", "remote backups: not listed"]);
    }

    #[test]
    fn a_fresh_setup_says_none() {
        let text = render_table(&report(include_str!("testdata/status-fresh.json")));
        assert_shows(
            &text,
            &[
                "last backup: never",
                "snapshots (0 zfs2cloud, 1 other):\n  none",
                "future bases: none (the next export is a full)",
                ": none\n",
            ],
        );
    }

    #[test]
    fn file_mode_says_so() {
        let text = render_table(&report(include_str!("testdata/status-file-mode.json")));
        assert!(text.contains("(file mode)"), "{text}");
    }

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_age(59), "0m");
        assert_eq!(human_age(35 * 60), "35m");
        assert_eq!(human_age(5 * 3600 + 1800), "5.5h");
        assert_eq!(human_age(3 * 86_400), "3.0d");
    }
}
