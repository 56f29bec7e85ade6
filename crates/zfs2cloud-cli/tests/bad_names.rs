//! Dataset names and remote paths with spaces, quotes, `$`, `;`,
//! backticks, leading dashes and unicode.
//!
//! Nothing is ever passed through a shell: a name ZFS would reject is a
//! clear configuration error (exit 2, naming the key) before any command
//! runs, which the fake zfs and fake rclone prove by recording no
//! invocation at all; a name ZFS accepts, however odd it looks, and a remote
//! path full of shell metacharacters back up and restore byte-identical on
//! real zfs-fuse.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::process::Command;

use common::{text, Setup};
use zfs2cloud_testkit::fake::{FakeRclone, FakeZfs};
use zfs2cloud_testkit::harness::run_fail;

const DAY1: &str = "2024-01-01T00:00:00Z";

/// Commands that each must refuse before running anything.
const COMMANDS: &[&[&str]] = &[
    &["backup"],
    &["--dry-run", "backup"],
    &["snapshot"],
    &["export"],
    &["upload"],
    &["prune-snapshots", "-y"],
    &["verify"],
    &["status", "--remote"],
    &["check-config"],
];

fn with_fakes(cmd: &mut Command, zfs: &FakeZfs, rclone: &FakeRclone) {
    for (k, v) in zfs.env().into_iter().chain(rclone.env()) {
        cmd.env(k, v);
    }
}

/// Runs `args` and expects exit 2 with a message naming `key` (and `name`).
fn refused(setup: &Setup, zfs: &FakeZfs, rclone: &FakeRclone, args: &[&str], key: &str) -> String {
    let mut cmd = setup.cmd(DAY1);
    cmd.args(args);
    with_fakes(&mut cmd, zfs, rclone);
    let out = run_fail(&mut cmd);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {msg}");
    assert!(msg.contains(&format!("`{key}`")), "{args:?}: {msg}");
    assert!(!msg.contains("panicked"), "{args:?}: {msg}");
    msg
}

#[test]
fn a_remote_that_starts_with_a_dash_is_refused_before_any_command_runs() {
    let zfs = FakeZfs::new();
    let rclone = FakeRclone::new();
    zfs.add_dataset("tank/data");
    for remote in ["-x", "--config=/etc/passwd", "-", ""] {
        let setup = Setup::with_remote("tank/data", remote, "");
        for args in COMMANDS {
            refused(&setup, &zfs, &rclone, args, "remote");
        }
        // restore --from: the same rule.
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zfs2cloud"));
        cmd.args(["restore", "--to", "tank/restored"])
            .arg(format!("--from={remote}"))
            .arg("--passphrase-file")
            .arg(&setup.passphrase_file)
            .env("GNUPGHOME", &setup.gnupghome)
            .env_remove("ZFS2CLOUD_CONFIG");
        with_fakes(&mut cmd, &zfs, &rclone);
        let out = run_fail(&mut cmd);
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(2), "--from={remote}: {msg}");
        assert!(msg.contains("--from"), "--from={remote}: {msg}");
    }
    assert!(zfs.invocations().is_empty(), "{:?}", zfs.invocations());
    assert!(
        rclone.invocations().is_empty(),
        "{:?}",
        rclone.invocations()
    );
}
