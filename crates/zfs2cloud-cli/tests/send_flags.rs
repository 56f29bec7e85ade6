//! `send_flags`, `encryption = "none"` and volumes (issue 13), through the
//! real binary against the testkit's fake `zfs` and fake `rclone`: the
//! recorded argv, the manifest, the flags on the snapshot, a flag change
//! forcing a full, raw and volume restores that never mount, and file
//! mode refusing a volume before it takes a snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use common::{manifest, sorted_chunks, text, with_fake, with_fakes, Setup};
use zfs2cloud_testkit::fake::{send_stream, FakeRclone, FakeZfs};
use zfs2cloud_testkit::harness::{require_tools, run_fail, run_ok};

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";
const DAY3: &str = "2024-01-03T00:00:00Z";
const DAY4: &str = "2024-01-04T00:00:00Z";
const REMOTE: &str = "cloud:backups/data";
/// Unencrypted backups, allowed explicitly: these tests need no gpg.
const PLAIN: &str = "encryption = \"none\"\nallow_unencrypted = true\n";

fn fakes(dataset: &str) -> (FakeZfs, FakeRclone) {
    let zfs = FakeZfs::new();
    zfs.add_dataset(dataset);
    (zfs, FakeRclone::new())
}

/// Adds the volume `name` (`zfs create -V 64M`).
fn add_volume(zfs: &FakeZfs, name: &str) {
    zfs.update_state(|s| {
        s.ensure_dataset(name);
        let d = s.datasets.get_mut(name).unwrap();
        d.properties.insert("volsize".into(), "64M".into());
        d.mounted = false;
    });
}

fn run(setup: &Setup, day: &str, zfs: &FakeZfs, rclone: &FakeRclone, args: &[&str]) -> Command {
    let mut cmd = setup.cmd(day);
    cmd.args(args);
    with_fakes(&mut cmd, zfs, rclone);
    cmd
}

/// Fails unless `out` (stdout and stderr) shows `needle`.
fn assert_shows(out: &std::process::Output, needle: &str) {
    assert!(
        text(out).contains(needle),
        "{needle:?} not in:\n{}",
        text(out)
    );
}

/// The arguments of every `zfs send` that made a stream, in order: not
/// the usage (`zfs send` alone) or the size estimate (`zfs send -nP`)
/// asked for progress.
fn sends(zfs: &FakeZfs) -> Vec<Vec<String>> {
    zfs.invocations_of("send")
        .into_iter()
        .map(|i| i.args)
        .filter(|args| args.len() > 1 && args[1] != "-nP")
        .collect()
}

/// The arguments of every `zfs send -nP`: the size estimates.
fn estimates(zfs: &FakeZfs) -> Vec<Vec<String>> {
    zfs.invocations_of("send")
        .into_iter()
        .map(|i| i.args)
        .filter(|args| args.get(1).map(String::as_str) == Some("-nP"))
        .collect()
}

/// The `zfs2cloud:send_flags` property of `tank/data@<snap>`.
fn flags_record(zfs: &FakeZfs, snap: &str) -> Option<String> {
    zfs.snapshots("tank/data")
        .into_iter()
        .find(|s| s.short_name() == snap)
        .and_then(|s| s.properties.get("zfs2cloud:send_flags").cloned())
}

/// Rewrites the config's `send_flags` line.
fn set_flags(setup: &Setup, flags: &str) {
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("send_flags"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&setup.config, format!("{kept}send_flags = {flags}\n")).unwrap();
}

#[test]
fn every_configured_flag_reaches_zfs_send_and_the_manifest_and_the_snapshot() {
    let (zfs, rclone) = fakes("tank/data");
    let setup = Setup::with_remote(
        "tank/data",
        REMOTE,
        &format!(
            "{PLAIN}send_flags = [\"properties\", \"embedded\", \"large_blocks\", \"compressed\", \"raw\"]\n"
        ),
    );
    run_ok(&mut run(&setup, DAY1, &zfs, &rclone, &["backup"]));
    assert_eq!(
        sends(&zfs),
        [[
            "send",
            "-w",
            "-c",
            "-L",
            "-e",
            "-p",
            "tank/data@20240101000000"
        ]]
    );
    // The estimate is of the same stream: the same flags.
    let mut estimate = sends(&zfs).remove(0);
    estimate.insert(1, "-nP".to_owned());
    assert_eq!(estimates(&zfs), [estimate]);
    let dir = setup.export_dir("20240101000000-full");
    let m = manifest(&dir);
    assert_eq!(
        m["send_flags"],
        serde_json::json!([
            "raw",
            "compressed",
            "large_blocks",
            "embedded",
            "properties"
        ])
    );
    assert_eq!(m["encryption"], "none");
    assert_eq!(
        flags_record(&zfs, "20240101000000").as_deref(),
        Some("-w -c -L -e -p")
    );
    // encryption = "none": the chunks together are the send stream itself.
    let state = zfs.state();
    let header = state.stream_header(
        "tank/data@20240101000000",
        None,
        state.snapshots["tank/data@20240101000000"].stream_size,
    );
    let chunks = sorted_chunks(&dir);
    let joined: Vec<u8> = chunks
        .iter()
        .flat_map(|c| std::fs::read(c).unwrap())
        .collect();
    assert!(chunks.len() > 1, "{chunks:?}");
    assert!(
        joined == send_stream(&header, None),
        "the chunks differ from the stream"
    );

    // The next day's incremental keeps the flags, before -i.
    run_ok(&mut run(&setup, DAY2, &zfs, &rclone, &["backup"]));
    assert_eq!(
        sends(&zfs)[1],
        [
            "send",
            "-w",
            "-c",
            "-L",
            "-e",
            "-p",
            "-i",
            "tank/data@20240101000000",
            "tank/data@20240102000000"
        ]
    );
}

#[test]
fn without_send_flags_the_argv_and_the_manifest_are_as_before() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let (zfs, rclone) = fakes("tank/data");
    let setup = Setup::with_remote("tank/data", REMOTE, "");
    run_ok(&mut run(&setup, DAY1, &zfs, &rclone, &["backup"]));
    assert_eq!(sends(&zfs), [["send", "tank/data@20240101000000"]]);
    let m = manifest(&setup.export_dir("20240101000000-full"));
    assert_eq!(m["send_flags"], serde_json::json!([]));
    assert_eq!(m["encryption"], "gpg-symmetric-aes256");
    assert_eq!(flags_record(&zfs, "20240101000000"), None);
}

#[test]
fn a_flag_change_forces_a_full_and_the_log_says_why() {
    let (zfs, rclone) = fakes("tank/data");
    let setup = Setup::with_remote(
        "tank/data",
        REMOTE,
        &format!("{PLAIN}send_flags = [\"compressed\"]\n"),
    );
    run_ok(&mut run(&setup, DAY1, &zfs, &rclone, &["backup"]));
    // Same flags: an incremental on that full.
    let out = run_ok(&mut run(&setup, DAY2, &zfs, &rclone, &["-v", "backup"]));
    assert_shows(
        &out,
        "incremental export against the last full 20240101000000",
    );
    // Flags added: a full, and why.
    set_flags(&setup, "[\"compressed\", \"large_blocks\"]");
    let forced = run_fail(&mut run(
        &setup,
        DAY3,
        &zfs,
        &rclone,
        &["export", "--incremental", "--snapshot", "20240102000000"],
    ));
    assert_eq!(forced.status.code(), Some(1), "{}", text(&forced));
    assert_shows(
        &forced,
        "the last full 20240101000000 was sent with flags -c and this config sends -c -L",
    );
    let out = run_ok(&mut run(&setup, DAY3, &zfs, &rclone, &["-v", "backup"]));
    assert_shows(
        &out,
        "full export: the last full 20240101000000 was sent with flags -c, this config \
             sends -c -L",
    );
    assert!(setup.export_dir("20240103000000-full").is_dir());
    assert_eq!(
        sends(&zfs).last().unwrap(),
        &["send", "-c", "-L", "tank/data@20240103000000"]
    );
    // Flags removed: a full again.
    set_flags(&setup, "[]");
    let out = run_ok(&mut run(&setup, DAY4, &zfs, &rclone, &["-v", "backup"]));
    assert_shows(&out, "was sent with flags -c -L, this config sends none");
    assert_eq!(
        sends(&zfs).last().unwrap(),
        &["send", "tank/data@20240104000000"]
    );
    // A full sent without flags carries no flags record (none is read as none).
    assert_eq!(flags_record(&zfs, "20240104000000"), None);
}

#[test]
fn a_raw_restore_is_left_unmounted_and_says_how_to_load_the_key() {
    let (zfs, rclone) = fakes("tank/data");
    let setup = Setup::with_remote(
        "tank/data",
        REMOTE,
        "encryption = \"none\"\nsend_flags = [\"raw\"]\n",
    );
    // No passphrase_file is needed, and none is asked for at restore
    // (there is no terminal: asking would fail).
    let config = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        config.replace("passphrase_file = \"passphrase\"\n", ""),
    )
    .unwrap();
    std::fs::remove_file(&setup.passphrase_file).unwrap();
    run_ok(&mut run(&setup, DAY1, &zfs, &rclone, &["backup"]));
    let out = run_ok(&mut run(
        &setup,
        DAY2,
        &zfs,
        &rclone,
        &["restore", "--to", "tank/restored"],
    ));
    let shown = text(&out);
    assert!(shown.contains("zfs load-key tank/restored"), "{shown}");
    assert!(shown.contains("zfs mount tank/restored"), "{shown}");
    assert!(zfs.invocations_of("mount").is_empty(), "restore mounted it");
    assert!(zfs.state().datasets.contains_key("tank/restored"));
    assert!(!zfs.state().datasets["tank/restored"].mounted);
}

#[test]
fn a_volume_is_exported_and_its_restore_does_not_mount_it() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let zfs = FakeZfs::new();
    add_volume(&zfs, "tank/vol");
    let rclone = FakeRclone::new();
    let setup = Setup::with_remote("tank/vol", "cloud:backups/vol", "");
    run_ok(&mut run(&setup, DAY1, &zfs, &rclone, &["backup"]));
    assert_eq!(sends(&zfs), [["send", "tank/vol@20240101000000"]]);
    let out = run_ok(&mut run(
        &setup,
        DAY2,
        &zfs,
        &rclone,
        &["-v", "restore", "--to", "tank/vol2"],
    ));
    assert_shows(&out, "it is a volume, not a file system");
    assert!(zfs.invocations_of("mount").is_empty(), "restore mounted it");
    let state = zfs.state();
    assert!(
        state.datasets["tank/vol2"].is_volume(),
        "received as a volume"
    );
    assert!(!state.datasets["tank/vol2"].mounted);
}

#[test]
fn file_mode_refuses_a_volume_before_taking_a_snapshot() {
    let zfs = FakeZfs::new();
    add_volume(&zfs, "tank/vol");
    let rclone = FakeRclone::new();
    let setup = Setup::with_remote("tank/vol", "cloud:files/vol", "mode = \"file\"\n");
    let expected = "tank/vol is a volume; file mode copies files and needs a file system — use \
                    mode = \"intermediate\"";
    let out = run_fail(&mut run(&setup, DAY1, &zfs, &rclone, &["backup"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(expected), "{}", text(&out));
    assert!(
        zfs.invocations_of("snapshot").is_empty(),
        "it took a snapshot"
    );
    // The steps on their own say the same.
    zfs.add_snapshot("tank/vol@20240101000000", &[]);
    for step in ["mount-snapshot", "upload-snapshot-files"] {
        let out = run_fail(&mut run(&setup, DAY1, &zfs, &rclone, &[step]));
        assert!(text(&out).contains(expected), "{step}: {}", text(&out));
    }
    assert!(zfs.invocations_of("clone").is_empty());
    assert!(rclone.invocations().is_empty());
}

#[test]
fn check_config_warns_about_flags_the_installed_zfs_lacks() {
    let dir = tempfile::tempdir().unwrap();
    // zfs-fuse's usage, as the host's prints it.
    let usage =
        include_str!("../../zfs2cloud-core/tests/fixtures/send-usage/zfs-fuse-0.7.0.stderr");
    let old_zfs = dir.path().join("zfs");
    std::fs::write(
        &old_zfs,
        format!("#!/bin/sh\ncat >&2 <<'EOF'\n{usage}EOF\nexit 2\n"),
    )
    .unwrap();
    std::fs::set_permissions(&old_zfs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let setup = Setup::new(
        "tank/data",
        "send_flags = [\"raw\", \"properties\", \"large_blocks\"]\n",
    );
    let out = run_ok(
        setup
            .cmd(DAY1)
            .arg("check-config")
            .env("ZFS2CLOUD_ZFS", &old_zfs),
    );
    let shown = text(&out);
    assert!(
        shown.contains("warning: send_flags: raw (zfs send -w) is not supported")
            && shown.contains("large_blocks (zfs send -L) is not supported"),
        "{shown}"
    );
    assert!(!shown.contains("properties (zfs send -p)"), "{shown}");
    // The fake zfs lists every flag: no warning.
    let zfs = FakeZfs::new();
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("check-config");
    with_fake(&mut cmd, &zfs);
    let out = run_ok(&mut cmd);
    assert!(!text(&out).contains("warning"), "{}", text(&out));
}
