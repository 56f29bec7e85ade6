//! A copy whose rclone makes no progress is stopped after
//! `upload_stall_timeout_seconds` and retried, with no step limit set: in
//! the upload step and while exporting. The fake `rclone` hangs on the
//! first copy of one chunk (real gpg in between).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::{Duration, Instant};

use common::{text, with_fakes, Setup};
use zfs2cloud_testkit::fake::{FakeRclone, FakeZfs, FaultAction, FaultRule};
use zfs2cloud_testkit::harness::{require_tools, run_ok};

const DAY1: &str = "2024-01-01T00:00:00Z";
const REMOTE: &str = "cloud:backups/data";
const SNAPSHOT_DIR: &str = "20240101000000-full";
/// The chunk whose first copy hangs.
const STALLED_CHUNK: &str = ".zfs.gpg.0001";

/// Backs up with the first copy of [`STALLED_CHUNK`] hanging and `extra`
/// config; checks the stall was stopped and retried, and the remote holds
/// the whole backup.
fn a_stalled_copy_is_stopped_and_retried(extra: &str) -> String {
    if !require_tools(&["gpg"]) {
        return String::new();
    }
    let zfs = FakeZfs::new();
    zfs.add_dataset("tank/data");
    let rclone = FakeRclone::new();
    rclone.inject_rule(FaultRule {
        arg_contains: Some(STALLED_CHUNK.into()),
        ..FaultRule::new("copyto", FaultAction::Hang, Some(1))
    });
    let setup = Setup::with_remote(
        "tank/data",
        REMOTE,
        &format!("upload_stall_timeout_seconds = 2\n{extra}"),
    );
    let started = Instant::now();
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("backup");
    with_fakes(&mut cmd, &zfs, &rclone);
    let out = run_ok(&mut cmd);
    let shown = text(&out);
    // A bound, not a timing: a 2 s stall, not a hang.
    assert!(started.elapsed() < Duration::from_secs(45), "{shown}");
    assert!(
        shown.contains("stalled (attempt 1 of 4), retrying")
            && shown.contains("rclone made no progress for 2s and was stopped"),
        "{shown}"
    );
    assert!(rclone.faults().iter().all(|f| f.times == Some(0)));
    the_hung_copy_is_gone(&rclone);
    the_remote_holds_the_local_export(&setup, &rclone);
    shown
}

/// The fake that hung was stopped, not left behind.
fn the_hung_copy_is_gone(rclone: &FakeRclone) {
    let copies: Vec<_> = rclone
        .invocations_of("copyto")
        .into_iter()
        .filter(|i| i.args.iter().any(|a| a.contains(STALLED_CHUNK)))
        .collect();
    assert_eq!(copies.len(), 2, "the stalled copy and its retry");
    let hung = copies[0].pid;
    // Gone, or its pid reused by an unrelated process.
    let cmdline = std::fs::read(format!("/proc/{hung}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(STALLED_CHUNK),
        "the hung fake-rclone {hung} is still running"
    );
}

/// Every file of the local export (chunks, `SHA256SUMS`, manifest) is on
/// the remote, byte for byte, and nothing else.
fn the_remote_holds_the_local_export(setup: &Setup, rclone: &FakeRclone) {
    let local = setup.export_dir(SNAPSHOT_DIR);
    let mut names: Vec<String> = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let remote_dir = format!("{REMOTE}/{SNAPSHOT_DIR}");
    assert_eq!(rclone.files(&remote_dir), names);
    assert!(
        names.iter().any(|n| n.ends_with(STALLED_CHUNK)),
        "{names:?}"
    );
    assert!(names.contains(&"manifest.json".to_owned()), "{names:?}");
    for name in &names {
        let remote = std::fs::read(rclone.path(&format!("{remote_dir}/{name}"))).unwrap();
        assert!(remote == std::fs::read(local.join(name)).unwrap(), "{name}");
    }
}

#[test]
fn a_stalled_copy_in_the_upload_step_is_stopped_and_retried() {
    a_stalled_copy_is_stopped_and_retried("");
}

#[test]
fn a_stalled_copy_while_exporting_is_stopped_and_retried() {
    let shown = a_stalled_copy_is_stopped_and_retried("upload_while_exporting = true\n");
    assert!(
        shown.is_empty() || shown.contains("uploaded while exporting"),
        "{shown}"
    );
}
