//! Failure cases of `snapshot` and `export`, driven by the testkit's fake
//! `zfs` (and a failing gpg), with the real gpg wherever it is not the
//! thing that fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{marker_hooks, text, with_fake, Setup};
use zfs2cloud_testkit::fake::{FakeZfs, FaultAction};
use zfs2cloud_testkit::harness::{require_tools, run_fail, run_ok};

const DAY1: &str = "2024-01-01T00:00:00Z";

fn fake_with_snapshot() -> FakeZfs {
    let fake = FakeZfs::new();
    fake.add_dataset("tank/data");
    fake.add_snapshot("tank/data@20240101000000", &[]);
    fake.set_stream_size("tank/data@20240101000000", 1_000_000);
    fake
}

/// After a failed export nothing may look complete: no directory without
/// `.partial`, no manifest anywhere, and no leftover partial either.
fn assert_nothing_complete(setup: &Setup) {
    assert_eq!(setup.complete_exports(), Vec::<String>::new());
    for e in setup.all_entries() {
        assert!(
            !e.to_string_lossy().ends_with("manifest.json"),
            "{} left behind",
            e.display()
        );
    }
    let partials = setup.partials();
    assert!(
        partials.is_empty(),
        "partial export not cleaned up: {partials:?}"
    );
}

#[test]
fn a_send_that_dies_mid_stream_fails_clearly_and_leaves_nothing_complete() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let fake = fake_with_snapshot();
    // 300 000 bytes then death: gpg sees a clean EOF and exits 0, and would
    // produce a valid-looking but truncated message. Only the exit status
    // of zfs send tells.
    fake.inject("send", FaultAction::DieAfter { bytes: 300_000 }, None);
    let setup = Setup::new("tank/data", "");
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("export");
    with_fake(&mut cmd, &fake);
    let out = run_fail(&mut cmd);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.contains("step export"), "{msg}");
    assert!(msg.contains("zfs send failed"), "{msg}");
    assert!(
        msg.contains("killed mid-stream"),
        "stderr of zfs is in the error: {msg}"
    );
    assert_nothing_complete(&setup);
    // Nothing was recorded on the snapshot.
    let snap = &fake.snapshots("tank/data")[0];
    assert!(!snap.properties.contains_key("zfs2cloud:kind"), "{snap:?}");
    assert!(fake.invocations_of("hold").is_empty());
    assert!(fake.invocations_of("set").is_empty());

    // The same export succeeds once the fault is gone, and replaces the
    // partial leftovers of the failed one.
    fake.clear_faults();
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("export");
    with_fake(&mut cmd, &fake);
    run_ok(&mut cmd);
    assert_eq!(setup.complete_exports(), ["20240101000000-full"]);
}

#[test]
fn a_gpg_failure_fails_clearly_and_leaves_nothing_complete() {
    let fake = fake_with_snapshot();
    let setup = Setup::new("tank/data", "");
    // Reads part of the stream, then fails the way gpg does.
    let gpg = setup.dir.path().join("failing-gpg");
    std::fs::write(
        &gpg,
        "#!/bin/sh\nhead -c 10000 >/dev/null\necho 'gpg: encryption failed: Bad passphrase' >&2\nexit 2\n",
    )
    .unwrap();
    std::fs::set_permissions(&gpg, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("export").env("ZFS2CLOUD_GPG", &gpg);
    with_fake(&mut cmd, &fake);
    let out = run_fail(&mut cmd);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    // gpg is named as the cause, not the zfs send that got a broken pipe.
    assert!(msg.contains("gpg encryption failed"), "{msg}");
    assert!(msg.contains("Bad passphrase"), "{msg}");
    assert!(!msg.contains("zfs send failed"), "{msg}");
    assert_nothing_complete(&setup);
}

#[test]
fn a_missing_gpg_binary_is_named() {
    let fake = fake_with_snapshot();
    let setup = Setup::new("tank/data", "");
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("export").env("ZFS2CLOUD_GPG", "/nonexistent/gpg");
    with_fake(&mut cmd, &fake);
    let out = run_fail(&mut cmd);
    let msg = text(&out);
    assert!(msg.contains("could not start `/nonexistent/gpg`"), "{msg}");
    assert_nothing_complete(&setup);
}

#[test]
fn garbage_from_zfs_list_is_a_clear_error() {
    let fake = fake_with_snapshot();
    fake.inject("list", FaultAction::Garbage, None);
    let setup = Setup::new("tank/data", "");
    for step in ["snapshot", "export"] {
        let mut cmd = setup.cmd(DAY1);
        cmd.arg(step);
        with_fake(&mut cmd, &fake);
        let out = run_fail(&mut cmd);
        let msg = text(&out);
        assert!(
            msg.contains("unexpected output from `") && msg.contains("list -H"),
            "{step}: {msg}"
        );
        assert!(!msg.contains("panicked"), "{msg}");
    }
    assert!(fake.invocations_of("snapshot").is_empty());
    assert!(fake.invocations_of("send").is_empty());
}

#[test]
fn a_failing_zfs_snapshot_still_runs_post_snapshot() {
    let fake = FakeZfs::new();
    fake.add_dataset("tank/data");
    fake.inject(
        "snapshot",
        FaultAction::Exit {
            code: 1,
            stderr: "cannot create snapshot 'tank/data@20240101000000': out of space".into(),
        },
        None,
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let setup = Setup::new("tank/data", &marker_hooks(log.path(), "true"));
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("snapshot");
    with_fake(&mut cmd, &fake);
    let out = run_fail(&mut cmd);
    let msg = text(&out);
    assert!(msg.contains("zfs snapshot failed"), "{msg}");
    assert!(msg.contains("out of space"), "{msg}");
    assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "pre\npost\n");
}

#[test]
fn a_failing_pre_snapshot_hook_takes_no_snapshot_and_still_runs_post() {
    let fake = FakeZfs::new();
    fake.add_dataset("tank/data");
    let log = tempfile::NamedTempFile::new().unwrap();
    let setup = Setup::new(
        "tank/data",
        &marker_hooks(log.path(), "echo cannot stop app >&2; exit 3"),
    );
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("snapshot");
    with_fake(&mut cmd, &fake);
    let out = run_fail(&mut cmd);
    let msg = text(&out);
    assert!(msg.contains("pre_snapshot hook failed"), "{msg}");
    assert!(msg.contains("cannot stop app"), "{msg}");
    assert!(fake.invocations_of("snapshot").is_empty());
    assert!(fake.snapshots("tank/data").is_empty());
    assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "pre\npost\n");
}

#[test]
fn an_existing_snapshot_name_runs_no_zfs_snapshot() {
    let fake = fake_with_snapshot();
    let setup = Setup::new("tank/data", "");
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("snapshot");
    with_fake(&mut cmd, &fake);
    let out = run_fail(&mut cmd);
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    assert!(fake.invocations_of("snapshot").is_empty());
}

#[test]
fn fake_zfs_export_records_state_and_hold() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let fake = fake_with_snapshot();
    let setup = Setup::new("tank/data", "");
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("export");
    with_fake(&mut cmd, &fake);
    run_ok(&mut cmd);
    let snap = &fake.snapshots("tank/data")[0];
    assert_eq!(
        snap.properties.get("zfs2cloud:kind").map(String::as_str),
        Some("full")
    );
    assert_eq!(snap.holds, ["zfs2cloud"]);
    // zfs is always called with -H for parsing, and nothing is destroyed.
    for inv in fake.invocations_of("list") {
        assert!(inv.args.contains(&"-H".to_owned()), "{inv:?}");
    }
    assert!(fake.invocations_of("destroy").is_empty());
}

#[test]
fn an_export_that_was_never_recorded_is_recorded_on_the_next_run() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let fake = fake_with_snapshot();
    let setup = Setup::new("tank/data", "");
    let export = || {
        let mut cmd = setup.cmd(DAY1);
        cmd.arg("export");
        with_fake(&mut cmd, &fake);
        run_ok(&mut cmd)
    };
    export();
    // As if the run died between the rename and `zfs set` / `zfs hold`.
    fake.update_state(|s| {
        let snap = s.snapshots.get_mut("tank/data@20240101000000").unwrap();
        snap.properties.clear();
        snap.holds.clear();
    });
    let out = export();
    assert!(text(&out).contains("already exported"), "{}", text(&out));
    let snap = &fake.snapshots("tank/data")[0];
    assert_eq!(
        snap.properties.get("zfs2cloud:kind").map(String::as_str),
        Some("full"),
        "{snap:?}"
    );
    assert_eq!(snap.holds, ["zfs2cloud"]);
}
