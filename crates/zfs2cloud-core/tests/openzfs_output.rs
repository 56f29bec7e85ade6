//! The parsers and error matchers over output recorded from real OpenZFS
//! 2.3.2 (in the QEMU guest of `scripts/openzfs-vm`, by
//! `tests/fixtures/openzfs-2.3.2/capture.sh`): each case is a command's
//! argv, exit status, stdout and stderr.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use zfs2cloud_core::{
    classify_stderr, parse_mount_properties, parse_snapshot_list, DatasetName, ExportKind,
    KnownZfsFailure, MountProperties,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openzfs-2.3.2")
}

/// One recorded command.
struct Recorded {
    argv: String,
    status: i32,
    stdout: String,
    stderr: String,
}

fn recorded(name: &str) -> Recorded {
    let read = |ext: &str| {
        let path = fixtures().join(format!("{name}.{ext}"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    Recorded {
        argv: read("argv").replace('\n', " "),
        status: read("status").trim().parse().unwrap(),
        stdout: read("stdout"),
        stderr: read("stderr"),
    }
}

#[test]
fn the_fixtures_come_from_openzfs_2_3() {
    let version = std::fs::read_to_string(fixtures().join("zfs-version")).unwrap();
    assert!(version.starts_with("zfs-2.3."), "{version}");
}

#[test]
fn failures_are_classified_as_openzfs_words_them() {
    for (name, class) in [
        ("list-missing", KnownZfsFailure::NotFound),
        ("snapshot-exists", KnownZfsFailure::AlreadyExists),
        ("hold-twice", KnownZfsFailure::TagExists),
        ("release-missing", KnownZfsFailure::NoSuchTag),
        // A hold placed by someone else since the listing: prune skips it.
        ("destroy-held", KnownZfsFailure::Busy),
        ("destroy-cloned", KnownZfsFailure::Busy),
    ] {
        let r = recorded(name);
        assert_ne!(r.status, 0, "{name}: {}", r.argv);
        assert_eq!(
            classify_stderr(&r.stderr),
            Some(class),
            "{name}: `{}` said {:?}",
            r.argv,
            r.stderr
        );
    }
}

#[test]
fn the_snapshot_list_parses() {
    let r = recorded("list-snapshots");
    assert_eq!(r.status, 0);
    let ds = DatasetName::parse("cap/ds").unwrap();
    let list = parse_snapshot_list(&ds, &r.argv, &r.stdout).unwrap();
    let seen: Vec<(String, Option<ExportKind>, u64)> = list
        .iter()
        .map(|s| (s.name.snap().to_owned(), s.kind, s.userrefs))
        .collect();
    assert_eq!(
        seen,
        [
            ("20240101000000".to_owned(), Some(ExportKind::Full), 0),
            ("manual".to_owned(), None, 0),
        ]
    );
}

#[test]
fn mount_properties_parse_for_file_systems_and_volumes() {
    let props = |kind: &str, mountpoint: &str, canmount: &str| MountProperties {
        kind: kind.into(),
        mountpoint: mountpoint.into(),
        canmount: canmount.into(),
    };
    let legacy = recorded("get-mount-props");
    assert_eq!(
        parse_mount_properties(&legacy.stdout),
        props("filesystem", "legacy", "on")
    );
    let volume = recorded("get-volume-props");
    assert_eq!(
        parse_mount_properties(&volume.stdout),
        props("volume", "-", "-")
    );
}

/// What `zfs mount` says of the datasets restore must not mount: each is a
/// failure, which is why restore asks for the properties first.
#[test]
fn openzfs_refuses_to_mount_what_restore_leaves_unmounted() {
    for (name, says) in [
        ("mount-legacy", "legacy mountpoint"),
        ("mount-none", "no mountpoint set"),
        ("mount-canmount-off", "'canmount' property is set to 'off'"),
        (
            "mount-volume",
            "operation not applicable to datasets of this type",
        ),
    ] {
        let r = recorded(name);
        assert_ne!(r.status, 0, "{name}");
        assert!(r.stderr.contains(says), "{name}: {:?}", r.stderr);
    }
}
