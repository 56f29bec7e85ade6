//! A recursive job whose one child fails, driven by the testkit's fake
//! `zfs` and fake `rclone` (real gpg): the other datasets of the tree are
//! still backed up, the run fails naming the child and the step, and
//! `on_failure` runs once with that text.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use common::{text, with_fakes, Setup};
use zfs2cloud_testkit::fake::{FakeRclone, FakeZfs, FaultAction, FaultRule};
use zfs2cloud_testkit::harness::{require_tools, run_fail};

const DAY1: &str = "2024-01-01T00:00:00Z";
const REMOTE: &str = "cloud:backups/home";

#[test]
fn a_child_that_fails_its_export_costs_the_others_nothing() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let zfs = FakeZfs::new();
    for d in ["tank/home", "tank/home/a", "tank/home/b"] {
        zfs.add_dataset(d);
    }
    let rclone = FakeRclone::new();
    zfs.inject_rule(FaultRule {
        arg_contains: Some("tank/home/a@".into()),
        ..FaultRule::new(
            "send",
            FaultAction::Exit {
                code: 1,
                stderr: "warning: cannot send 'tank/home/a@20240101000000': I/O error".into(),
            },
            None,
        )
    });
    let failure = tempfile::NamedTempFile::new().unwrap();
    let setup = Setup::with_remote(
        "tank/home",
        REMOTE,
        &format!(
            "recursive = true\n[hooks]\non_failure = [\"/bin/sh\", \"-c\", \"cat >> '{}'\"]\n",
            failure.path().display()
        ),
    );
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("backup");
    with_fakes(&mut cmd, &zfs, &rclone);
    let out = run_fail(&mut cmd);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("1 of 3 datasets of the tree failed: tank/home/a (export:"),
        "{t}"
    );
    assert!(t.contains("I/O error"), "{t}");
    // One snapshot for the tree, taken recursively.
    let snaps = zfs.invocations_of("snapshot");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert!(snaps[0].args.contains(&"-r".to_owned()), "{snaps:?}");
    // The parent and the other child are complete on the remote.
    for dir in [REMOTE.to_owned(), format!("{REMOTE}/b")] {
        let files = rclone.files(&format!("{dir}/20240101000000-full"));
        assert!(
            files.contains(&"manifest.json".to_owned()),
            "{dir}: {files:?}\n{t}"
        );
    }
    assert!(
        rclone.files(&format!("{REMOTE}/a")).is_empty(),
        "nothing of the failed child is on the remote"
    );
    let reported = std::fs::read_to_string(failure.path()).unwrap();
    assert_eq!(
        reported.matches("datasets of the tree failed").count(),
        1,
        "{reported}"
    );
    assert!(reported.contains("tank/home/a"), "{reported}");
}
