//! `prune-snapshots` with `[retention.local]`, on the testkit's fake `zfs`:
//! the plan shows every snapshot with its reasons, and `-y` destroys
//! exactly the snapshots the plan says it would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::process::Command;

use common::{with_fakes, Setup};
use zfs2cloud_core::{upload_record, ExportKind, ExportLayout, SnapshotName, HOLD_TAG};
use zfs2cloud_testkit::fake::{FakeRclone, FakeZfs};
use zfs2cloud_testkit::harness::run_ok;

const REMOTE: &str = "cloud:backups/data";
const NOW: &str = "2026-01-01T00:00:00Z";
const RETENTION: &str = "[retention.local]\nkeep_daily = 3\nkeep_weekly = 2\nkeep_monthly = 2\n";

/// How a snapshot was exported, if at all.
#[derive(Clone, Copy)]
enum Export {
    Never,
    Uploaded(ExportKind),
    NotUploaded(ExportKind),
}

/// Two months of snapshots at 03:00, and one zfs2cloud did not make.
fn seed(zfs: &FakeZfs) {
    use Export::{Never, NotUploaded, Uploaded};
    use ExportKind::{Full, Incremental};
    let snaps = [
        ("20251101030000", Uploaded(Full)),
        ("20251105030000", Uploaded(Incremental)),
        ("20251115030000", NotUploaded(Incremental)),
        ("20251120030000", Uploaded(Incremental)),
        ("20251130030000", Uploaded(Incremental)),
        ("20251201030000", Uploaded(Full)),
        ("20251210030000", Uploaded(Incremental)),
        ("20251220030000", Uploaded(Incremental)),
        ("20251227030000", Uploaded(Incremental)),
        ("20251228030000", Uploaded(Incremental)),
        ("20251229030000", Uploaded(Incremental)),
        ("20251230030000", Uploaded(Incremental)),
        ("20251231030000", Never),
        ("manual", Never),
    ];
    for (snap, export) in snaps {
        let name = format!("tank/data@{snap}");
        let (kind, uploaded) = match export {
            Never => {
                zfs.add_snapshot(&name, &[]);
                continue;
            }
            Uploaded(kind) => (kind, true),
            NotUploaded(kind) => (kind, false),
        };
        let dir = ExportLayout::dir_name(&SnapshotName::parse(&name).unwrap(), kind);
        let record = upload_record("2025-12-31T04:00:00Z", &dir, REMOTE);
        let mut props = vec![("zfs2cloud:kind", kind.to_string())];
        if uploaded {
            props.push(("zfs2cloud:uploaded", record));
        }
        let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
        zfs.add_snapshot(&name, &props);
    }
    // zfs2cloud's hold on the newest full, and someone else's.
    zfs.add_hold("tank/data@20251201030000", HOLD_TAG);
    zfs.add_hold("tank/data@20251105030000", "someone");
}

fn prune(setup: &Setup, zfs: &FakeZfs, rclone: &FakeRclone, yes: bool) -> Vec<String> {
    let mut cmd: Command = setup.cmd(NOW);
    cmd.arg("prune-snapshots");
    if yes {
        cmd.arg("-y");
    }
    with_fakes(&mut cmd, zfs, rclone);
    let out = run_ok(&mut cmd);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

const HELD: &str = "held (the full base of the current chain, or held by someone else)";

/// The plan, snapshot by snapshot, with `destroy` for the destroy verb.
fn plan(destroy: &str) -> Vec<String> {
    let keep = |snap: &str, why: &str| format!("keep           tank/data@{snap}  ({why})");
    let gone =
        |snap: &str| format!("{destroy:<13}  tank/data@{snap}  (not kept by any calendar period)");
    vec![
        gone("20251101030000"),
        keep("20251105030000", HELD),
        keep("20251115030000", "its export is not confirmed uploaded"),
        gone("20251120030000"),
        keep("20251130030000", "monthly 2025-11"),
        keep(
            "20251201030000",
            &format!("{HELD}, a base of future incrementals"),
        ),
        gone("20251210030000"),
        gone("20251220030000"),
        gone("20251227030000"),
        keep("20251228030000", "weekly 2025-W52"),
        keep("20251229030000", "daily 2025-12-29"),
        keep("20251230030000", "daily 2025-12-30"),
        keep(
            "20251231030000",
            "the newest snapshot, daily 2025-12-31, weekly 2026-W01, monthly 2025-12",
        ),
        keep("manual", "not made by zfs2cloud"),
    ]
}

fn snapshots(zfs: &FakeZfs) -> Vec<String> {
    let mut names: Vec<String> = zfs
        .snapshots("tank/data")
        .iter()
        .map(|s| s.short_name().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_plan_gives_every_reason_and_y_destroys_exactly_its_destroy_set() {
    let (zfs, rclone) = (FakeZfs::new(), FakeRclone::new());
    zfs.add_dataset("tank/data");
    seed(&zfs);
    let before = snapshots(&zfs);
    let setup = Setup::with_remote("tank/data", REMOTE, RETENTION);

    let mut expected = plan("would destroy");
    expected.push("(dry run: nothing was destroyed; pass -y to destroy)".into());
    assert_eq!(prune(&setup, &zfs, &rclone, false), expected);
    assert!(zfs.invocations_of("destroy").is_empty());
    assert_eq!(snapshots(&zfs), before);

    assert_eq!(prune(&setup, &zfs, &rclone, true), plan("destroyed"));
    let destroyed: Vec<String> = zfs
        .invocations_of("destroy")
        .iter()
        .map(|i| i.args.last().unwrap().clone())
        .collect();
    let gone = [
        "20251101030000",
        "20251120030000",
        "20251210030000",
        "20251220030000",
        "20251227030000",
    ];
    let gone_names: Vec<String> = gone.iter().map(|s| format!("tank/data@{s}")).collect();
    assert_eq!(destroyed, gone_names);
    let left: Vec<String> = before
        .into_iter()
        .filter(|s| !gone.contains(&s.as_str()))
        .collect();
    assert_eq!(snapshots(&zfs), left);

    // Nothing left to destroy: a second run keeps what is left.
    let again = prune(&setup, &zfs, &rclone, true);
    assert!(again.iter().all(|l| l.starts_with("keep ")), "{again:?}");
    assert_eq!(again.len(), 9);
}

#[test]
fn both_rules_are_refused_before_any_zfs_command() {
    let (zfs, rclone) = (FakeZfs::new(), FakeRclone::new());
    zfs.add_dataset("tank/data");
    let setup = Setup::with_remote(
        "tank/data",
        REMOTE,
        &format!("oldest_snapshot_days = 45\n{RETENTION}"),
    );
    let mut cmd = setup.cmd(NOW);
    cmd.args(["prune-snapshots", "-y"]);
    with_fakes(&mut cmd, &zfs, &rclone);
    let out = zfs2cloud_testkit::harness::run_fail(&mut cmd);
    assert_eq!(out.status.code(), Some(2));
    let shown = common::text(&out);
    assert!(
        shown.contains(": oldest_snapshot_days: ") && shown.contains("[retention.local]"),
        "{shown}"
    );
    assert!(zfs.invocations().is_empty());
}
