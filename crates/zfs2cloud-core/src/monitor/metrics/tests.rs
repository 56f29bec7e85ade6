#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use chrono::{TimeZone, Utc};

use super::*;
use crate::ops::catalog::RemoteTotals;
use crate::ops::status::{record_last_backup, LastBackup};

fn report(success: bool) -> RunReport {
    RunReport {
        job: "home \"x\"".into(),
        dataset: "tank/home".into(),
        dry_run: false,
        started_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        finished_at: Utc.timestamp_opt(1_700_000_060, 0).unwrap(),
        duration_seconds: 60.0,
        success,
        failed_step: (!success).then(|| "upload".into()),
        error: (!success).then(|| "rclone failed".into()),
        locked: false,
        kind: success.then(|| "full".into()),
        bytes_exported: 4096,
        bytes_uploaded: 4096,
        remote: success.then_some(RemoteTotals {
            backups: 2,
            bytes: 8192,
        }),
        steps: Vec::new(),
    }
}

#[test]
fn every_metric_has_help_type_and_the_labels() {
    let text = render_metrics(&report(true), None);
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(samples.len(), 9, "{text}");
    assert_eq!(text.matches("# TYPE ").count(), 9, "{text}");
    assert!(samples
        .iter()
        .all(|l| l.contains("backup_job=\"home \\\"x\\\"\",dataset=\"tank/home\"")));
    assert!(text.contains("zfs2cloud_last_run_info{backup_job=\"home \\\"x\\\"\",dataset=\"tank/home\",kind=\"full\"} 1\n"), "{text}");
    assert_eq!(parse_last_success(&text), Some(1_700_000_060.0));
}

#[test]
fn a_failed_run_keeps_the_old_success_and_knows_no_remote() {
    let text = render_metrics(&report(false), Some(1_600_000_000.0));
    assert_eq!(parse_last_success(&text), Some(1_600_000_000.0));
    assert!(text.contains("kind=\"none\""), "{text}");
    assert!(!text.contains("zfs2cloud_remote_backups"), "{text}");
    let never = render_metrics(&report(false), None);
    assert_eq!(parse_last_success(&never), None, "0 means none known");
}

#[test]
fn the_file_is_replaced_whole_0644_and_a_failure_keeps_the_last_success() {
    let dir = tempfile::tempdir().unwrap();
    let basedir = dir.path().join("base");
    let path = dir.path().join("z.prom");
    // No file yet: the success `status` recorded.
    record_last_backup(
        &basedir,
        &LastBackup::new(Utc.timestamp_opt(1_500_000_000, 0).unwrap(), None, None),
    )
    .unwrap();
    write_metrics(&path, &report(false), &basedir).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(parse_last_success(&text), Some(1_500_000_000.0));
    write_metrics(&path, &report(true), &basedir).unwrap();
    write_metrics(&path, &report(false), &basedir).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(parse_last_success(&text), Some(1_700_000_060.0));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file is left: {names:?}");
}
