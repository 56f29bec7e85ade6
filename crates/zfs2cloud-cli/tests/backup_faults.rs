//! Failure cases of `backup`, driven by the testkit's fake `zfs` and fake
//! `rclone` (real gpg where the export runs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::process::Command;

use common::{marker_hooks, text, with_fakes, Setup};
use zfs2cloud_testkit::fake::{FakeRclone, FakeZfs, FaultAction};
use zfs2cloud_testkit::harness::{require_tools, run_fail, run_ok};

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";
const REMOTE: &str = "cloud:backups/data";

fn fakes() -> (FakeZfs, FakeRclone) {
    let zfs = FakeZfs::new();
    zfs.add_dataset("tank/data");
    (zfs, FakeRclone::new())
}

fn backup(setup: &Setup, day: &str, zfs: &FakeZfs, rclone: &FakeRclone) -> Command {
    let mut cmd = setup.cmd(day);
    cmd.arg("backup");
    with_fakes(&mut cmd, zfs, rclone);
    cmd
}

fn prop(zfs: &FakeZfs, snap: &str, key: &str) -> Option<String> {
    zfs.snapshots("tank/data")
        .into_iter()
        .find(|s| s.short_name() == snap)
        .and_then(|s| s.properties.get(key).cloned())
}

#[test]
fn a_failing_snapshot_still_runs_post_snapshot_and_on_failure_gets_the_error() {
    let (zfs, rclone) = fakes();
    zfs.inject(
        "snapshot",
        FaultAction::Exit {
            code: 1,
            stderr:
                "cannot create snapshot 'tank/data@20240101000000': pool I/O is currently suspended"
                    .into(),
        },
        None,
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let failure = tempfile::NamedTempFile::new().unwrap();
    let setup = Setup::with_remote(
        "tank/data",
        REMOTE,
        &format!(
            "[hooks]\npre_snapshot = [\"/bin/sh\", \"-c\", \"echo pre >> '{log}'\"]\n\
             post_snapshot = [\"/bin/sh\", \"-c\", \"echo post >> '{log}'\"]\n\
             on_failure = [\"/bin/sh\", \"-c\", \"cat > '{failure}'; echo \\\"step=$ZFS2CLOUD_FAILED_STEP dataset=$ZFS2CLOUD_DATASET\\\" >> '{failure}'\"]\n",
            log = log.path().display(),
            failure = failure.path().display(),
        ),
    );
    let out = run_fail(&mut backup(&setup, DAY1, &zfs, &rclone));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("step snapshot failed"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "pre\npost\n");
    let reported = std::fs::read_to_string(failure.path()).unwrap();
    assert!(reported.contains("zfs snapshot failed"), "{reported}");
    assert!(
        reported.contains("pool I/O is currently suspended"),
        "{reported}"
    );
    assert!(
        reported.contains("step=snapshot dataset=tank/data"),
        "{reported}"
    );
    // Nothing after the failed step ran.
    assert!(zfs.invocations_of("send").is_empty());
    assert!(rclone.invocations().is_empty());
}

#[test]
fn a_transient_rclone_failure_is_retried_and_the_upload_succeeds() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let (zfs, rclone) = fakes();
    rclone.inject(
        "copyto",
        FaultAction::Exit {
            code: 5,
            stderr: "ERROR : temporary error, try again".into(),
        },
        Some(2),
    );
    let success = tempfile::NamedTempFile::new().unwrap();
    let setup = Setup::with_remote(
        "tank/data",
        REMOTE,
        &format!(
            "upload_retries = 3\n[hooks]\non_success = [\"/bin/sh\", \"-c\", \"echo $ZFS2CLOUD_KIND $ZFS2CLOUD_SNAPSHOT > '{}'\"]\n",
            success.path().display()
        ),
    );
    let out = run_ok(&mut backup(&setup, DAY1, &zfs, &rclone));
    assert!(text(&out).contains("finished"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(success.path()).unwrap(),
        "full tank/data@20240101000000\n",
        "on_success ran with the run's kind and snapshot"
    );
    let files = rclone.files(&format!("{REMOTE}/20240101000000-full"));
    assert!(files.contains(&"manifest.json".to_owned()), "{files:?}");
    assert!(files.contains(&"SHA256SUMS".to_owned()), "{files:?}");
    assert!(prop(&zfs, "20240101000000", "zfs2cloud:uploaded").is_some());
    // Two failed attempts, then the retries went through.
    assert!(
        rclone.faults().iter().all(|f| f.times == Some(0)),
        "{:?}",
        rclone.faults()
    );
}

#[test]
fn uploads_go_chunks_first_and_manifest_last_and_resume_without_resending() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let (zfs, rclone) = fakes();
    // The 3rd copy fails for good: two chunks made it, the rest did not.
    rclone.inject_rule({
        let mut rule = zfs2cloud_testkit::fake::FaultRule::new(
            "copyto",
            FaultAction::Exit {
                code: 1,
                stderr: "ERROR : connection reset".into(),
            },
            None,
        );
        rule.arg_contains = Some(".zfs.gpg.0002".into());
        rule
    });
    let setup = Setup::with_remote("tank/data", REMOTE, "upload_retries = 1\n");
    let out = run_fail(&mut backup(&setup, DAY1, &zfs, &rclone));
    assert!(text(&out).contains("step upload failed"), "{}", text(&out));
    assert!(text(&out).contains("connection reset"), "{}", text(&out));
    let remote_dir = format!("{REMOTE}/20240101000000-full");
    let files = rclone.files(&remote_dir);
    assert!(
        !files.contains(&"manifest.json".to_owned()),
        "no manifest on an incomplete backup: {files:?}"
    );
    assert!(prop(&zfs, "20240101000000", "zfs2cloud:uploaded").is_none());
    assert_eq!(
        setup.complete_exports(),
        ["20240101000000-full"],
        "the export is kept"
    );

    rclone.clear_faults();
    let before = rclone.invocations_of("copyto").len();
    run_ok(&mut backup(&setup, DAY2, &zfs, &rclone));
    let copies: Vec<String> = rclone.invocations_of("copyto")[before..]
        .iter()
        .map(|i| i.args.iter().rev().nth(1).cloned().unwrap_or_default())
        .collect();
    // The re-run sent no chunk that was already complete remotely.
    let day1: Vec<&String> = copies
        .iter()
        .filter(|c| c.contains("20240101000000"))
        .collect();
    assert!(
        !day1
            .iter()
            .any(|c| c.ends_with(".0000") || c.ends_with(".0001")),
        "complete chunks were sent again: {day1:?}"
    );
    // Order: the full (base) before the incremental, manifest last in each.
    let pos = |needle: &str| copies.iter().position(|c| c.ends_with(needle)).unwrap();
    let full_manifest = pos("20240101000000-full/manifest.json");
    let incr_first = copies
        .iter()
        .position(|c| c.contains("/20240102000000/"))
        .unwrap();
    assert!(full_manifest < incr_first, "{copies:?}");
    for dir in ["20240101000000-full", "20240102000000"] {
        let in_dir: Vec<&String> = copies
            .iter()
            .filter(|c| c.contains(&format!("/{dir}/")))
            .collect();
        assert!(
            in_dir.last().unwrap().ends_with("manifest.json"),
            "{in_dir:?}"
        );
    }
    assert_eq!(
        prop(&zfs, "20240102000000", "zfs2cloud:base").as_deref(),
        Some("20240101000000")
    );
    assert!(prop(&zfs, "20240101000000", "zfs2cloud:uploaded").is_some());
    assert!(prop(&zfs, "20240102000000", "zfs2cloud:uploaded").is_some());
}

#[test]
fn an_rclone_that_always_fails_keeps_the_export_and_the_next_run_uploads_it() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let (zfs, rclone) = fakes();
    rclone.inject(
        "*",
        FaultAction::Exit {
            code: 1,
            stderr: "Failed to create file system: network unreachable".into(),
        },
        None,
    );
    let setup = Setup::with_remote("tank/data", REMOTE, "upload_retries = 2\n");
    let out = run_fail(&mut backup(&setup, DAY1, &zfs, &rclone));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("network unreachable"), "{}", text(&out));
    assert_eq!(setup.complete_exports(), ["20240101000000-full"]);

    rclone.clear_faults();
    run_ok(&mut backup(&setup, DAY2, &zfs, &rclone));
    for dir in ["20240101000000-full", "20240102000000"] {
        let files = rclone.files(&format!("{REMOTE}/{dir}"));
        assert!(
            files.contains(&"manifest.json".to_owned()),
            "{dir}: {files:?}"
        );
    }
    assert_eq!(setup.complete_exports(), ["20240102000000"]);
}

#[test]
fn an_incremental_is_never_based_on_a_full_that_never_reached_the_remote() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let (zfs, rclone) = fakes();
    rclone.inject(
        "*",
        FaultAction::Exit {
            code: 1,
            stderr: "network unreachable".into(),
        },
        None,
    );
    let setup = Setup::with_remote("tank/data", REMOTE, "upload_retries = 0\n");
    run_fail(&mut backup(&setup, DAY1, &zfs, &rclone));
    // The local export of the full is lost (the disk was replaced, say):
    // the full exists only as a snapshot, never uploaded.
    std::fs::remove_dir_all(setup.basedir.join("20240101000000-full")).unwrap();
    rclone.clear_faults();
    let out = run_ok(&mut backup(&setup, DAY2, &zfs, &rclone));
    assert!(text(&out).contains("full export"), "{}", text(&out));
    let remote_dirs = rclone.files(REMOTE);
    assert!(
        remote_dirs
            .iter()
            .all(|f| !f.starts_with("20240102000000/")),
        "an incremental was uploaded: {remote_dirs:?}"
    );
    assert!(
        remote_dirs
            .iter()
            .any(|f| f == "20240102000000-full/manifest.json"),
        "{remote_dirs:?}"
    );
    // The hold moved to the new full, which is the new base.
    let snaps = zfs.snapshots("tank/data");
    let held: Vec<&str> = snaps
        .iter()
        .filter(|s| !s.holds.is_empty())
        .map(|s| s.short_name())
        .collect();
    assert_eq!(held, ["20240102000000"]);
}

#[test]
fn backup_dry_run_changes_nothing() {
    let (zfs, rclone) = fakes();
    zfs.add_snapshot("tank/data@20231231000000", &[("zfs2cloud:kind", "full")]);
    let setup = Setup::with_remote(
        "tank/data",
        REMOTE,
        &marker_hooks(std::path::Path::new("/dev/null"), "true"),
    );
    let out = run_ok(backup(&setup, DAY1, &zfs, &rclone).arg("--dry-run"));
    let shown = text(&out);
    assert!(
        shown.contains("fake-zfs snapshot tank/data@20240101000000"),
        "{shown}"
    );
    assert!(
        shown.contains("would create tank/data@20240101000000"),
        "{shown}"
    );
    assert!(
        shown.contains("[dry-run] /bin/sh -c"),
        "hooks are shown, not run: {shown}"
    );
    for cmd in ["snapshot", "set", "hold", "release", "destroy", "send"] {
        assert!(zfs.invocations_of(cmd).is_empty(), "dry-run ran zfs {cmd}");
    }
    assert!(rclone.invocations_of("copyto").is_empty());
    assert!(
        !setup.basedir.exists(),
        "dry-run created {}",
        setup.basedir.display()
    );
}

#[test]
fn standalone_prune_intermediates_is_dry_without_y_and_keeps_unuploaded_exports() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let (zfs, rclone) = fakes();
    let setup = Setup::with_remote("tank/data", REMOTE, "");
    for day in [DAY1, DAY2] {
        let mut snap = setup.cmd(day);
        snap.arg("snapshot");
        with_fakes(&mut snap, &zfs, &rclone);
        run_ok(&mut snap);
        let mut export = setup.cmd(day);
        export.arg("export");
        with_fakes(&mut export, &zfs, &rclone);
        run_ok(&mut export);
    }
    let prune = |yes: bool| {
        let mut cmd = setup.cmd(DAY2);
        cmd.arg("prune-intermediates");
        if yes {
            cmd.arg("-y");
        }
        with_fakes(&mut cmd, &zfs, &rclone);
        text(&run_ok(&mut cmd))
    };
    // Nothing is uploaded: nothing may go, with or without -y.
    let shown = prune(true);
    assert!(shown.contains("NOT UPLOADED"), "{shown}");
    assert_eq!(
        setup.complete_exports(),
        ["20240101000000-full", "20240102000000"]
    );

    let mut upload = setup.cmd(DAY2);
    upload.arg("upload");
    with_fakes(&mut upload, &zfs, &rclone);
    let shown = text(&run_ok(&mut upload));
    assert!(
        shown.contains("uploaded tank/data@20240101000000"),
        "{shown}"
    );
    assert!(
        shown.contains("uploaded tank/data@20240102000000"),
        "{shown}"
    );

    let shown = prune(false);
    assert!(shown.contains("would remove"), "{shown}");
    assert!(shown.contains("dry run"), "{shown}");
    assert_eq!(
        setup.complete_exports().len(),
        2,
        "without -y nothing is deleted"
    );
    let shown = prune(true);
    assert!(shown.contains("removed"), "{shown}");
    assert_eq!(
        setup.complete_exports(),
        ["20240102000000"],
        "the newest export stays"
    );
}

#[test]
fn a_new_remote_gets_the_full_before_any_incremental() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let (zfs, rclone) = fakes();
    let setup = Setup::with_remote("tank/data", REMOTE, "");
    run_ok(&mut backup(&setup, DAY1, &zfs, &rclone));
    // The admin moves the backups to another bucket.
    let text_before = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text_before.replace(REMOTE, "cloud:moved/data"),
    )
    .unwrap();
    run_ok(&mut backup(&setup, DAY2, &zfs, &rclone));
    let moved = rclone.files("cloud:moved/data");
    assert!(
        moved.contains(&"20240101000000-full/manifest.json".to_owned()),
        "the confirmation for the old remote must not count for the new one: {moved:?}"
    );
    assert!(
        moved.contains(&"20240102000000/manifest.json".to_owned()),
        "{moved:?}"
    );
}

#[test]
fn an_orphaned_incremental_does_not_stop_later_backups_from_reaching_the_cloud() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let (zfs, rclone) = fakes();
    let setup = Setup::with_remote("tank/data", REMOTE, "upload_retries = 0\n");
    let down = FaultAction::Exit {
        code: 1,
        stderr: "network unreachable".into(),
    };
    rclone.inject("*", down, None);
    run_fail(&mut backup(&setup, DAY1, &zfs, &rclone));
    run_fail(&mut backup(&setup, DAY2, &zfs, &rclone));
    // The disk fills up; the admin deletes the full's export.
    std::fs::remove_dir_all(setup.basedir.join("20240101000000-full")).unwrap();
    rclone.clear_faults();
    let out = run_ok(&mut backup(&setup, "2024-01-03T00:00:00Z", &zfs, &rclone));
    assert!(text(&out).contains("full export"), "{}", text(&out));
    let files = rclone.files(REMOTE);
    assert!(
        files.contains(&"20240103000000-full/manifest.json".to_owned()),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|f| f.starts_with("20240102000000/")),
        "the orphaned incremental was uploaded: {files:?}"
    );
}

#[test]
fn stray_chunks_on_the_remote_block_the_confirmation() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let (zfs, rclone) = fakes();
    // Left by an earlier export of the same snapshot with another split size.
    let stray = rclone.path(&format!(
        "{REMOTE}/20240101000000-full/tank-data@20240101000000.zfs.gpg.0099"
    ));
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"old").unwrap();
    let setup = Setup::with_remote("tank/data", REMOTE, "");
    let out = run_fail(&mut backup(&setup, DAY1, &zfs, &rclone));
    assert!(
        text(&out).contains("chunks that are not in the manifest"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains(".zfs.gpg.0099"), "{}", text(&out));
    let files = rclone.files(&format!("{REMOTE}/20240101000000-full"));
    assert!(!files.contains(&"manifest.json".to_owned()), "{files:?}");
}

#[test]
fn verify_as_a_step_checks_the_runs_backup() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let (zfs, rclone) = fakes();
    let setup = Setup::with_remote(
        "tank/data",
        REMOTE,
        "steps = [\"lock\", \"snapshot\", \"export\", \"upload\", \"verify\", \"unlock\"]\n",
    );
    let out = run_ok(&mut backup(&setup, DAY1, &zfs, &rclone));
    assert!(text(&out).contains("1 backup(s) OK"), "{}", text(&out));
    // Damage the uploaded chunk (same size, other bytes): the next run's
    // verify step fails, naming the chunk.
    let chunk = rclone.path(&format!(
        "{REMOTE}/20240101000000-full/tank-data@20240101000000.zfs.gpg.0000"
    ));
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&chunk, bytes).unwrap();
    let setup2 = Setup::with_remote("tank/data", REMOTE, "steps = [\"verify\"]\n");
    let out = run_fail(&mut backup(&setup2, DAY2, &zfs, &rclone));
    assert!(text(&out).contains("step verify failed"), "{}", text(&out));
    assert!(text(&out).contains("zfs.gpg.0000"), "{}", text(&out));
}
