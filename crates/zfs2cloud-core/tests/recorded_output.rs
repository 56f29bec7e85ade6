//! The parsers, the error matcher and `ZfsCli` over output recorded from
//! real zfs: OpenZFS 2.3.2 (in the QEMU guest of `scripts/openzfs-vm`) and
//! zfs-fuse 0.7.0 (the zfs the other tests run on), both made by
//! `tests/fixtures/capture.sh`. Each case is a command's argv, exit status,
//! stdout and stderr; `CASES` says what each zfs did, and every recording
//! must be there (a missing one fails, it is never skipped).
//!
//! `ZfsCli` and `Mounter` are run against a replaying `zfs`: a script that
//! answers a command only if its argv is exactly a recorded one, so these
//! tests also prove that the code still runs the recorded command lines.
//! What cannot be replayed (the clone strategy's mount(8) and read-only
//! probe) is compared in a dry run instead, line for line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use zfs2cloud_core::{
    classify_stderr, parse_mount_properties, parse_snapshot_list, CommandLine, DatasetName,
    ExportKind, Exposure, KnownZfsFailure, MountError, MountProperties, MountStrategy, Mounter,
    Runner, SnapshotName, Snapshotter, ZfsCli, ZfsError, HOLD_TAG,
};

use KnownZfsFailure::{AlreadyExists, Busy, NoSuchTag, NotFound, TagExists};
use Outcome::{Fails, Flaky, NotRecorded, Succeeds};

/// What one zfs did in one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Exit status 0.
    Succeeds,
    /// A non-zero exit status, and what `classify_stderr` makes of it.
    Fails(Option<KnownZfsFailure>),
    /// Either: zfs-fuse fails some commands on a file system it mounted a
    /// moment ago, and not always. A failure is so classified and says
    /// this; which one a recording holds depends on the run.
    Flaky(Option<KnownZfsFailure>, &'static str),
    /// This zfs cannot run it (listed in its `skipped`, with the reason).
    NotRecorded,
}

/// Every case of `capture.sh`: (name, OpenZFS 2.3.2, zfs-fuse 0.7.0).
const CASES: &[(&str, Outcome, Outcome)] = &[
    ("version", Succeeds, NotRecorded),
    ("snapshot-new", Succeeds, Succeeds),
    (
        "snapshot-exists",
        Fails(Some(AlreadyExists)),
        Fails(Some(AlreadyExists)),
    ),
    // OpenZFS adds the usage and exits 2; zfs-fuse exits 1.
    (
        "snapshot-missing-dataset",
        Fails(Some(NotFound)),
        Fails(Some(NotFound)),
    ),
    ("set-property", Succeeds, Succeeds),
    (
        "set-property-missing",
        Fails(Some(NotFound)),
        Fails(Some(NotFound)),
    ),
    ("inherit-property", Succeeds, Succeeds),
    (
        "inherit-property-missing",
        Fails(Some(NotFound)),
        Fails(Some(NotFound)),
    ),
    ("hold", Succeeds, Succeeds),
    ("hold-twice", Fails(Some(TagExists)), Fails(Some(TagExists))),
    ("hold-missing", Fails(Some(NotFound)), Fails(Some(NotFound))),
    // `zfs holds` is broken on zfs-fuse: why zfs2cloud reads `userrefs`.
    ("holds", Succeeds, Fails(None)),
    ("list-snapshots", Succeeds, Succeeds),
    ("list-snapshots-none", Succeeds, Succeeds),
    ("list-missing", Fails(Some(NotFound)), Fails(Some(NotFound))),
    ("exists-yes", Succeeds, Succeeds),
    ("exists-no", Fails(Some(NotFound)), Fails(Some(NotFound))),
    // A hold placed by someone else since the listing: prune skips it.
    ("destroy-held", Fails(Some(Busy)), Fails(Some(Busy))),
    ("release", Succeeds, Succeeds),
    (
        "release-missing",
        Fails(Some(NoSuchTag)),
        Fails(Some(NoSuchTag)),
    ),
    (
        "release-missing-snapshot",
        Fails(Some(NotFound)),
        Fails(Some(NotFound)),
    ),
    ("destroy-snapshot", Succeeds, Succeeds),
    (
        "destroy-snapshot-missing",
        Fails(Some(NotFound)),
        Fails(Some(NotFound)),
    ),
    ("send-full", Succeeds, Succeeds),
    ("send-incremental", Succeeds, Succeeds),
    ("send-missing", Fails(Some(NotFound)), Fails(Some(NotFound))),
    (
        "send-incremental-missing-base",
        Fails(Some(NotFound)),
        Fails(Some(NotFound)),
    ),
    ("send-incremental-not-earlier", Fails(None), Fails(None)),
    ("recv-new", Succeeds, Succeeds),
    ("get-mounted-no", Succeeds, Succeeds),
    ("get-mounted-yes", Succeeds, Succeeds),
    ("recv-incremental", Succeeds, Succeeds),
    ("list-received", Succeeds, Succeeds),
    // -F with an incremental: OpenZFS rolls the target back to the
    // stream's base (destroying the newer snapshots), zfs-fuse refuses.
    ("recv-incremental-twice", Succeeds, Fails(None)),
    ("recv-incremental-not-newest", Fails(None), Fails(None)),
    ("recv-incremental-not-newest-force", Succeeds, Fails(None)),
    ("list-after-not-newest-force", Succeeds, Succeeds),
    ("recv-incremental-no-base", Fails(None), Fails(None)),
    // OpenZFS names the missing target; zfs-fuse names the dataset the
    // stream was sent from and says it was modified or does not match.
    (
        "recv-incremental-missing-target",
        Fails(Some(NotFound)),
        Fails(None),
    ),
    (
        "recv-incremental-missing-target-force",
        Fails(Some(NotFound)),
        Fails(None),
    ),
    ("recv-incremental-modified", Fails(None), Fails(None)),
    ("recv-incremental-modified-force", Succeeds, Succeeds),
    ("facts-plain-snapshots", Succeeds, Succeeds),
    ("facts-plain-origin", Succeeds, Succeeds),
    // zfs-fuse has no encryption property: overwrite_facts reads "off".
    ("facts-plain-encryption", Succeeds, Fails(None)),
    ("recv-existing-no-force", Fails(None), Fails(None)),
    // zfs-fuse, over the file system created (and mounted) just before.
    ("recv-force-over-empty", Succeeds, Flaky(None, "I/O error")),
    ("facts-target-snapshots", Succeeds, Succeeds),
    ("facts-target-origin", Succeeds, Succeeds),
    ("facts-target-encryption", Succeeds, Fails(None)),
    ("recv-force-over-snapshots", Fails(None), Fails(None)),
    ("facts-clone-snapshots", Succeeds, Succeeds),
    ("facts-clone-origin", Succeeds, Succeeds),
    ("facts-clone-encryption", Succeeds, Fails(None)),
    ("recv-force-over-clone", Fails(None), Fails(None)),
    ("facts-enc-snapshots", Succeeds, NotRecorded),
    ("facts-enc-origin", Succeeds, NotRecorded),
    ("facts-enc-encryption", Succeeds, NotRecorded),
    ("recv-force-over-encrypted", Fails(None), NotRecorded),
    ("recv-new-under-encrypted", Succeeds, NotRecorded),
    ("recv-truncated", Fails(None), Fails(None)),
    // Neither leaves a dataset behind after a truncated full stream.
    (
        "exists-after-truncated",
        Fails(Some(NotFound)),
        Fails(Some(NotFound)),
    ),
    ("recv-truncated-incremental", Fails(None), Fails(None)),
    ("list-after-truncated-incremental", Succeeds, Succeeds),
    ("recv-empty", Fails(None), Fails(None)),
    ("recv-garbage", Fails(None), Fails(None)),
    ("get-missing", Fails(Some(NotFound)), Fails(Some(NotFound))),
    ("get-mount-props", Succeeds, Succeeds),
    ("get-mount-props-legacy", Succeeds, Succeeds),
    ("mount-legacy", Fails(None), Fails(None)),
    ("get-mount-props-none", Succeeds, Succeeds),
    ("mount-none", Fails(None), Fails(None)),
    ("get-mount-props-canmount-off", Succeeds, Succeeds),
    ("mount-canmount-off", Fails(None), Fails(None)),
    // zfs-fuse cannot create volumes.
    ("get-mount-props-volume", Succeeds, NotRecorded),
    ("mount-volume", Fails(None), NotRecorded),
    ("mount-mounted", Fails(None), Fails(None)),
    (
        "mount-missing",
        Fails(Some(NotFound)),
        Fails(Some(NotFound)),
    ),
    ("mount", Succeeds, Succeeds),
    ("umount", Succeeds, Succeeds),
    ("umount-not-mounted", Fails(None), Fails(None)),
    ("rollback-not-newest", Fails(None), Fails(None)),
    ("rollback-r", Succeeds, Succeeds),
    ("list-after-rollback", Succeeds, Succeeds),
    (
        "rollback-missing",
        Fails(Some(NotFound)),
        Fails(Some(NotFound)),
    ),
    ("get-mountpoint", Succeeds, Succeeds),
    // mount(8), not zfs: zfs-fuse has no kernel file system to mount.
    ("mount-snapshot", Succeeds, Fails(None)),
    // The temporary clone of file mode (Mounter's clone strategy).
    ("clone", Succeeds, Succeeds),
    (
        "clone-exists",
        Fails(Some(AlreadyExists)),
        Fails(Some(AlreadyExists)),
    ),
    (
        "clone-missing-snapshot",
        Fails(Some(NotFound)),
        Fails(Some(NotFound)),
    ),
    // What Mounter asks after a failed `zfs clone`: was it made anyway?
    (
        "find-clone-missing",
        Fails(Some(NotFound)),
        Fails(Some(NotFound)),
    ),
    // mount(8) of the legacy clone; zfs-fuse has no mount.zfs, so zfs
    // mounts it once its mountpoint is the directory (and only there).
    ("mount-clone", Succeeds, Fails(None)),
    ("set-clone-mountpoint", NotRecorded, Succeeds),
    ("get-clone-props", Succeeds, Succeeds),
    ("find-clone", Succeeds, Succeeds),
    ("list-clones", Succeeds, Succeeds),
    // As a snapshot tool run with -r over the pool would.
    ("snapshot-clone", Succeeds, Succeeds),
    // Why the clone is destroyed with -r: "filesystem has children".
    ("destroy-clone-with-snapshot", Fails(None), Fails(None)),
    // zfs-fuse: busy for a moment after the clone was mounted, which is
    // why ZfsCli::destroy_own retries "busy".
    (
        "destroy-clone",
        Succeeds,
        Flaky(Some(Busy), "dataset is busy"),
    ),
    ("destroy-cloned", Fails(Some(Busy)), Fails(Some(Busy))),
    // "has dependent clones" is Busy for a file system too.
    (
        "destroy-origin-recursive",
        Fails(Some(Busy)),
        Fails(Some(Busy)),
    ),
    ("destroy-with-children", Fails(None), Fails(None)),
    (
        "destroy-recursive",
        Succeeds,
        Flaky(Some(Busy), "dataset is busy"),
    ),
    (
        "destroy-dataset-missing",
        Fails(Some(NotFound)),
        Fails(Some(NotFound)),
    ),
];

/// Recorded cases that are mount(8), not zfs.
const NOT_ZFS: &[&str] = &["mount-snapshot", "mount-clone"];

/// Which zfs a set of recordings comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zfs {
    OpenZfs,
    ZfsFuse,
}

/// One directory of recordings, with the names they contain.
struct Set {
    zfs: Zfs,
    dir: PathBuf,
    pool: String,
    mountroot: String,
    /// Where the capture exposed snapshots: file mode's base directory.
    exposeroot: PathBuf,
}

/// One recorded command.
#[derive(Debug)]
struct Recorded {
    argv: Vec<String>,
    status: i32,
    stdout: String,
    stderr: String,
}

fn sets() -> [Set; 2] {
    [Zfs::OpenZfs, Zfs::ZfsFuse].map(|zfs| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(match zfs {
                Zfs::OpenZfs => "openzfs-2.3.2",
                Zfs::ZfsFuse => "zfs-fuse-0.7.0",
            });
        let names = read(&dir.join("names"));
        let name = |key: &str| {
            names
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{}: no {key}=", dir.display()))
                .to_owned()
        };
        Set {
            zfs,
            pool: name("pool"),
            mountroot: name("mountroot"),
            exposeroot: PathBuf::from(name("exposeroot")),
            dir,
        }
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Set {
    fn expected(&self, case: &str) -> Outcome {
        let (_, openzfs, zfs_fuse) = CASES
            .iter()
            .find(|(name, ..)| *name == case)
            .unwrap_or_else(|| panic!("{case} is not in CASES"));
        match self.zfs {
            Zfs::OpenZfs => *openzfs,
            Zfs::ZfsFuse => *zfs_fuse,
        }
    }

    fn file(&self, case: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{case}.{ext}"))
    }

    /// The recording of `case`; panics if it is missing.
    fn recorded(&self, case: &str) -> Recorded {
        // A send's stream is not kept, only its size.
        let stdout = if self.file(case, "stdout-bytes").exists() {
            String::new()
        } else {
            read(&self.file(case, "stdout"))
        };
        Recorded {
            argv: read(&self.file(case, "argv"))
                .lines()
                .map(str::to_owned)
                .collect(),
            status: read(&self.file(case, "status")).trim().parse().unwrap(),
            stdout,
            stderr: read(&self.file(case, "stderr")),
        }
    }

    /// `<pool>/<rel>`.
    fn ds(&self, rel: &str) -> DatasetName {
        DatasetName::parse(&format!("{}/{rel}", self.pool)).unwrap()
    }

    /// `<pool>/<rel>`, a snapshot.
    fn snap(&self, rel: &str) -> SnapshotName {
        SnapshotName::parse(&format!("{}/{rel}", self.pool)).unwrap()
    }

    /// A `zfs` that answers exactly the recorded commands of `cases` (the
    /// first whose argv matches), and fails with status 99 for anything
    /// else. Each call is logged (see `calls`).
    fn replay(&self, cases: &[&str]) -> (tempfile::TempDir, PathBuf) {
        for case in cases {
            assert_ne!(
                self.expected(case),
                NotRecorded,
                "{case} is not recorded on {:?}",
                self.zfs
            );
            // A send's stream was not kept: it cannot be replayed.
            assert!(self.file(case, "stdout").exists(), "{case} has no stdout");
        }
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("zfs");
        let quoted: Vec<String> = cases.iter().map(|c| format!("'{c}'")).collect();
        std::fs::write(
            &script,
            format!(
                "#!/bin/bash\n\
                 dir='{}'\n\
                 want=$(printf '%s\\n' zfs \"$@\")\n\
                 calls=\"$(dirname \"$0\")/calls\"\n\
                 for c in {}; do\n\
                 \x20 if [ \"$(cat \"$dir/$c.argv\")\" = \"$want\" ]; then\n\
                 \x20   echo \"$c\" >>\"$calls\"\n\
                 \x20   cat \"$dir/$c.stdout\"; cat \"$dir/$c.stderr\" >&2\n\
                 \x20   exit \"$(cat \"$dir/$c.status\")\"\n\
                 \x20 fi\n\
                 done\n\
                 echo \"unrecorded: zfs $*\" >>\"$calls\"\n\
                 echo \"replay: no recording of: zfs $*\" >&2\n\
                 exit 99\n",
                self.dir.display(),
                quoted.join(" ")
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        (tmp, script)
    }

    /// The cases a `replay` zfs answered, in order, and `unrecorded: ...`
    /// for each command it did not know.
    fn calls(replay: &tempfile::TempDir) -> Vec<String> {
        std::fs::read_to_string(replay.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn zfs_cli(&self, cases: &[&str]) -> (tempfile::TempDir, ZfsCli) {
        let (tmp, script) = self.replay(cases);
        (tmp, ZfsCli::new(Runner::new(), script))
    }
}

/// Every set, with what to call it in a failure.
fn each_set(mut check: impl FnMut(&Set)) {
    for set in sets() {
        check(&set);
    }
}

#[test]
fn the_recordings_come_from_the_zfs_they_are_named_after() {
    each_set(|set| {
        let version = read(&set.dir.join("zfs-version"));
        let expected = match set.zfs {
            Zfs::OpenZfs => "zfs-2.3.",
            Zfs::ZfsFuse => "zfs-fuse\t0.7.0",
        };
        assert!(version.starts_with(expected), "{:?}: {version}", set.zfs);
    });
}

/// A case missing where it was expected fails here rather than being
/// skipped later; a case missing where the zfs lacks the feature must be
/// listed in `skipped` with the reason; and nothing is recorded that the
/// table does not describe.
#[test]
fn every_case_is_recorded_where_expected_and_nowhere_else() {
    let mut names = BTreeSet::new();
    for (name, ..) in CASES {
        assert!(names.insert(*name), "{name} is twice in CASES");
    }
    each_set(|set| {
        let skipped = std::fs::read_to_string(set.dir.join("skipped")).unwrap_or_default();
        let skipped: BTreeSet<&str> = skipped
            .lines()
            .map(|l| l.split_once(": ").map_or(l, |(case, _)| case))
            .collect();
        for (case, ..) in CASES {
            let recorded = set.file(case, "argv").exists();
            match set.expected(case) {
                NotRecorded => {
                    assert!(!recorded, "{:?}: {case} is recorded", set.zfs);
                    assert!(
                        skipped.contains(case),
                        "{:?}: {case} is not listed in skipped",
                        set.zfs
                    );
                }
                Succeeds | Fails(_) | Flaky(..) => {
                    assert!(recorded, "{:?}: {case} is missing", set.zfs);
                    for ext in ["status", "stderr"] {
                        assert!(set.file(case, ext).exists(), "{case}.{ext}");
                    }
                    assert!(
                        set.file(case, "stdout").exists()
                            || set.file(case, "stdout-bytes").exists(),
                        "{:?}: {case} has no stdout",
                        set.zfs
                    );
                    assert!(!skipped.contains(case), "{:?}: {case}", set.zfs);
                }
            }
        }
        for entry in std::fs::read_dir(&set.dir).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            if let Some(case) = file.strip_suffix(".argv") {
                assert!(
                    names.contains(case),
                    "{:?}: {case} is not in CASES",
                    set.zfs
                );
            }
        }
    });
}

#[test]
fn every_recording_succeeds_or_fails_as_expected_and_is_classified() {
    each_set(|set| {
        for (case, ..) in CASES {
            let expected = set.expected(case);
            if expected == NotRecorded {
                continue;
            }
            let r = set.recorded(case);
            let seen = if r.status == 0 {
                Succeeds
            } else {
                Fails(classify_stderr(&r.stderr))
            };
            let expected = match expected {
                Flaky(class, says) if r.status != 0 => {
                    assert!(
                        r.stderr.contains(says),
                        "{:?}: {case}: {}",
                        set.zfs,
                        r.stderr
                    );
                    Fails(class)
                }
                Flaky(..) => Succeeds,
                other => other,
            };
            assert_eq!(
                seen,
                expected,
                "{:?}: {case}: `{}` exited {} saying {:?}",
                set.zfs,
                r.argv.join(" "),
                r.status,
                r.stderr
            );
            if r.status == 0 && !NOT_ZFS.contains(case) {
                // zfs prints nothing on stderr when it succeeds here, so
                // a success with a message would be a recording gone wrong.
                assert_eq!(r.stderr, "", "{:?}: {case}", set.zfs);
            }
        }
    });
}

#[test]
fn the_snapshot_list_parses() {
    each_set(|set| {
        let r = set.recorded("list-snapshots");
        let ds = set.ds("ds");
        let list = parse_snapshot_list(&ds, &r.argv.join(" "), &r.stdout).unwrap();
        let seen: Vec<_> = list
            .iter()
            .map(|s| {
                (
                    s.name.snap().to_owned(),
                    s.userrefs,
                    s.kind,
                    s.base.clone(),
                    s.uploaded.clone(),
                )
            })
            .collect();
        let own = |snap: &str, userrefs, kind, base: Option<&str>, uploaded: Option<&str>| {
            (
                snap.to_owned(),
                userrefs,
                kind,
                base.map(str::to_owned),
                uploaded.map(str::to_owned),
            )
        };
        let levels: Vec<_> = list.iter().map(|s| (s.level, s.level())).collect();
        // Recorded on the incremental only; a full is level 0 by its kind.
        assert_eq!(
            levels,
            [
                (None, Some(0)),
                (Some(2), Some(2)),
                (None, None),
                (None, None)
            ],
            "{:?}",
            set.zfs
        );
        assert_eq!(
            seen,
            [
                own(
                    "20240101000000",
                    1,
                    Some(ExportKind::Full),
                    None,
                    Some("2024-01-01T00:10:00Z")
                ),
                own(
                    "20240102000000",
                    0,
                    Some(ExportKind::Incremental),
                    Some("20240101000000"),
                    None
                ),
                own("20240103000000", 0, None, None, None),
                // Its zfs2cloud:uploaded was cleared with `zfs inherit`.
                own("manual", 0, None, None, None),
            ],
            "{:?}",
            set.zfs
        );
        let none = set.recorded("list-snapshots-none");
        assert!(
            parse_snapshot_list(&set.ds("empty"), "zfs list", &none.stdout)
                .unwrap()
                .is_empty()
        );
    });
}

fn props(kind: &str, mountpoint: &str, canmount: &str) -> MountProperties {
    MountProperties {
        kind: kind.into(),
        mountpoint: mountpoint.into(),
        canmount: canmount.into(),
    }
}

#[test]
fn mount_properties_parse() {
    each_set(|set| {
        let mut cases = vec![
            (
                "get-mount-props",
                props("filesystem", &format!("{}/ds", set.mountroot), "on"),
            ),
            (
                "get-mount-props-legacy",
                props("filesystem", "legacy", "on"),
            ),
            ("get-mount-props-none", props("filesystem", "none", "on")),
            (
                "get-mount-props-canmount-off",
                props("filesystem", &format!("{}/off", set.mountroot), "off"),
            ),
        ];
        if set.zfs == Zfs::OpenZfs {
            cases.push(("get-mount-props-volume", props("volume", "-", "-")));
        }
        for (case, expected) in cases {
            let r = set.recorded(case);
            assert_eq!(
                parse_mount_properties(&r.stdout),
                expected,
                "{:?}: {case}",
                set.zfs
            );
        }
    });
}

#[test]
fn zfs_cli_lists_snapshots_and_maps_the_failures() {
    each_set(|set| {
        let zfs = |cases: &[&str]| set.zfs_cli(cases);
        let at = format!("{:?}", set.zfs);

        let (_t, cli) = zfs(&["list-snapshots"]);
        let list = cli.list(&set.ds("ds")).unwrap();
        assert_eq!(list.len(), 4, "{at}");
        let (_t, cli) = zfs(&["list-missing"]);
        let err = cli.list(&set.ds("nope")).unwrap_err();
        assert!(matches!(err, ZfsError::NotFound { .. }), "{at}: {err}");

        let s1 = set.snap("ds@20240101000000");
        let (_t, cli) = zfs(&["snapshot-new"]);
        cli.create(&s1).unwrap();
        let (_t, cli) = zfs(&["snapshot-exists"]);
        let err = cli.create(&s1).unwrap_err();
        assert!(matches!(err, ZfsError::AlreadyExists { .. }), "{at}: {err}");
        let (_t, cli) = zfs(&["snapshot-missing-dataset"]);
        let err = cli.create(&set.snap("nope@20240101000000")).unwrap_err();
        assert!(matches!(err, ZfsError::NotFound { .. }), "{at}: {err}");

        let none = set.snap("ds@19990101000000");
        let (_t, cli) = zfs(&["set-property", "set-property-missing"]);
        cli.set_property(&s1, "zfs2cloud:kind", "full").unwrap();
        let err = cli
            .set_property(&none, "zfs2cloud:kind", "full")
            .unwrap_err();
        assert!(matches!(err, ZfsError::NotFound { .. }), "{at}: {err}");
        let (_t, cli) = zfs(&["inherit-property", "inherit-property-missing"]);
        cli.clear_property(&set.snap("ds@manual"), "zfs2cloud:uploaded")
            .unwrap();
        let err = cli.clear_property(&none, "zfs2cloud:uploaded").unwrap_err();
        assert!(matches!(err, ZfsError::NotFound { .. }), "{at}: {err}");

        let (_t, cli) = zfs(&["hold"]);
        cli.hold(&s1, HOLD_TAG).unwrap();
        let (_t, cli) = zfs(&["hold-twice"]);
        let err = cli.hold(&s1, HOLD_TAG).unwrap_err();
        assert!(matches!(err, ZfsError::TagExists { .. }), "{at}: {err}");
        let (_t, cli) = zfs(&["hold-missing"]);
        let err = cli.hold(&none, HOLD_TAG).unwrap_err();
        assert!(matches!(err, ZfsError::NotFound { .. }), "{at}: {err}");
        let (_t, cli) = zfs(&["release"]);
        cli.release(&s1, HOLD_TAG).unwrap();
        let (_t, cli) = zfs(&["release-missing"]);
        let err = cli.release(&s1, HOLD_TAG).unwrap_err();
        assert!(matches!(err, ZfsError::NoSuchTag { .. }), "{at}: {err}");
        let (_t, cli) = zfs(&["release-missing-snapshot"]);
        let err = cli.release(&none, HOLD_TAG).unwrap_err();
        assert!(matches!(err, ZfsError::NotFound { .. }), "{at}: {err}");

        let doomed = set.snap("ds@doomed");
        let (_t, cli) = zfs(&["destroy-snapshot"]);
        cli.destroy(&doomed).unwrap();
        let (_t, cli) = zfs(&["destroy-snapshot-missing"]);
        let err = cli.destroy(&doomed).unwrap_err();
        assert!(matches!(err, ZfsError::NotFound { .. }), "{at}: {err}");
        for case in ["destroy-held", "destroy-cloned"] {
            let (_t, cli) = zfs(&[case]);
            let err = cli.destroy(&s1).unwrap_err();
            assert!(matches!(err, ZfsError::Busy { .. }), "{at}: {case}: {err}");
        }
    });
}

#[test]
fn zfs_cli_answers_what_restore_asks() {
    each_set(|set| {
        let at = format!("{:?}", set.zfs);
        let (_t, cli) = set.zfs_cli(&["exists-yes", "exists-no", "exists-after-truncated"]);
        assert!(cli.exists(&set.ds("ds")).unwrap(), "{at}");
        assert!(!cli.exists(&set.ds("nope")).unwrap(), "{at}");
        assert!(!cli.exists(&set.ds("trunc")).unwrap(), "{at}");

        let (_t, cli) = set.zfs_cli(&["get-mounted-yes", "get-mounted-no"]);
        assert!(cli.is_mounted(&set.ds("ds")).unwrap(), "{at}");
        assert!(!cli.is_mounted(&set.ds("restored")).unwrap(), "{at}");

        let (_t, cli) = set.zfs_cli(&["get-mount-props", "get-mount-props-legacy"]);
        assert_eq!(
            cli.mount_properties(&set.ds("legacy")).unwrap(),
            props("filesystem", "legacy", "on"),
            "{at}"
        );
        assert_eq!(
            cli.mount_properties(&set.ds("ds")).unwrap().mountpoint,
            format!("{}/ds", set.mountroot),
            "{at}"
        );

        let origin = format!("{}/ds@20240101000000", set.pool);
        let mut targets = vec![
            ("plain", vec![], "-", "off"),
            (
                "target",
                vec![format!("{}/target@other", set.pool)],
                "-",
                "off",
            ),
            ("clone", vec![], origin.as_str(), "off"),
        ];
        if set.zfs == Zfs::OpenZfs {
            targets.push(("enc", vec![], "-", "aes-256-gcm"));
        }
        for (name, snapshots, origin, encryption) in targets {
            let cases = ["snapshots", "origin", "encryption"].map(|q| format!("facts-{name}-{q}"));
            let cases: Vec<&str> = cases.iter().map(String::as_str).collect();
            let (_t, cli) = set.zfs_cli(&cases);
            let dataset = if name == "enc" { "enc/target" } else { name };
            let facts = cli.overwrite_facts(&set.ds(dataset)).unwrap();
            assert_eq!(facts.snapshots, snapshots, "{at}: {name}");
            assert_eq!(facts.origin, origin, "{at}: {name}");
            assert_eq!(facts.encryption, encryption, "{at}: {name}");
        }
    });
}

#[test]
fn the_temporary_clone_has_the_properties_the_mounter_gives_it() {
    each_set(|set| {
        let r = set.recorded("get-clone-props");
        let seen: Vec<&str> = r.stdout.lines().collect();
        let dir = set.exposeroot.join("20240101000000-full");
        let (readonly, mountpoint) = match set.zfs {
            // Mounted by mount(8): the mountpoint stays legacy.
            Zfs::OpenZfs => ("on", "legacy".to_owned()),
            // zfs-fuse says readonly=off, yet refuses writes (EROFS), as
            // Mounter::is_read_only checks; zfs mounted it at the
            // mountpoint the fallback set.
            Zfs::ZfsFuse => ("off", dir.display().to_string()),
        };
        let origin = format!("{}/ds@20240101000000", set.pool);
        assert_eq!(
            seen,
            [
                readonly,
                origin.as_str(),
                mountpoint.as_str(),
                "off",
                "off",
                "false"
            ],
            "{:?}",
            set.zfs
        );
    });
}

/// A dry run of `Mounter::mount` and `unmount` with the clone strategy
/// shows the command lines of the path that succeeds, which a replay
/// cannot run: mount(8) comes from `PATH`, and the read-only probe needs
/// a real read-only mount. They are the recorded ones.
#[test]
fn the_mounters_clone_commands_are_the_recorded_ones() {
    each_set(|set| {
        let at = format!("{:?}", set.zfs);
        let (_t, script) = set.replay(&[]);
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = {
            let lines = std::sync::Arc::clone(&lines);
            std::sync::Arc::new(move |line: &str| lines.lock().unwrap().push(line.to_owned()))
        };
        let mounter = Mounter::new(Runner::dry_run(sink), script.clone());
        let s1 = set.snap("ds@20240101000000");
        let m = mounter
            .mount(&s1, &set.exposeroot, MountStrategy::Clone)
            .unwrap();
        assert_eq!(
            m.exposure,
            Exposure::Clone(set.ds("ds.zfs2cloud-20240101000000")),
            "{at}"
        );
        mounter.unmount(&m).unwrap();
        let recorded = |case: &str, program: &Path| {
            let argv = set.recorded(case).argv;
            CommandLine::new(program).args(&argv[1..]).to_string()
        };
        let dir = set.exposeroot.join("20240101000000-full");
        assert_eq!(
            *lines.lock().unwrap(),
            [
                format!("mkdir -m 700 {}", dir.display()),
                recorded("clone", &script),
                recorded("mount-clone", Path::new("mount")),
                recorded("destroy-clone", &script),
                format!("rmdir {}", dir.display()),
            ],
            "{at}"
        );
    });
}

/// Where `zfs clone` fails, the Mounter asks whether the clone was made
/// anyway, and destroys it if it is this snapshot's: the failed paths of
/// `Mounter::mount` with the clone strategy, replayed.
#[test]
fn the_mounter_cleans_up_after_a_failed_clone() {
    each_set(|set| {
        let at = format!("{:?}", set.zfs);
        let basedir = tempfile::tempdir().unwrap();
        let none = set.snap("ds@19990101000000");
        let (t, script) = set.replay(&["clone-missing-snapshot", "find-clone-missing"]);
        let err = Mounter::new(Runner::new(), script)
            .mount(&none, basedir.path(), MountStrategy::Clone)
            .unwrap_err();
        assert!(
            matches!(&err, MountError::NoStrategy { attempts, .. }
                if attempts.len() == 1 && attempts[0].contains("dataset does not exist")),
            "{at}: {err}"
        );
        assert_eq!(
            Set::calls(&t),
            ["clone-missing-snapshot", "find-clone-missing"],
            "{at}"
        );
        assert!(!basedir.path().join("19990101000000-full").exists(), "{at}");
    });
    // The clone exists (an earlier run's, by its zfs2cloud:clone-of): it
    // is destroyed, with -r. Not on zfs-fuse, whose recorded destroy may
    // be its transient "busy", which destroy_own would retry for ten
    // seconds.
    let [openzfs, _] = sets();
    let basedir = tempfile::tempdir().unwrap();
    let (t, script) = openzfs.replay(&["clone-exists", "find-clone", "destroy-clone"]);
    let err = Mounter::new(Runner::new(), script)
        .mount(
            &openzfs.snap("ds@20240101000000"),
            basedir.path(),
            MountStrategy::Clone,
        )
        .unwrap_err();
    assert!(err.to_string().contains("dataset already exists"), "{err}");
    assert_eq!(
        Set::calls(&t),
        ["clone-exists", "find-clone", "destroy-clone"]
    );
}

#[test]
fn the_mounter_finds_and_cleans_temporary_clones() {
    each_set(|set| {
        let at = format!("{:?}", set.zfs);
        let basedir = tempfile::tempdir().unwrap();
        let (_t, script) = set.replay(&["find-clone", "find-clone-missing"]);
        let mounter = Mounter::new(Runner::new(), script);
        let s1 = set.snap("ds@20240101000000");
        let found = mounter.find(&s1, basedir.path()).unwrap().expect(&at);
        assert_eq!(
            found.exposure,
            Exposure::Clone(set.ds("ds.zfs2cloud-20240101000000")),
            "{at}"
        );
        let none = set.snap("ds@19990101000000");
        assert_eq!(mounter.find(&none, basedir.path()).unwrap(), None, "{at}");

        // Every line of the pool's listing is read; none is a clone of
        // `restored`, so nothing is destroyed.
        let (_t, script) = set.replay(&["list-clones"]);
        let mounter = Mounter::new(Runner::new(), script);
        let cleaned = mounter
            .clean_leftovers(&set.ds("restored"), basedir.path())
            .unwrap();
        assert!(cleaned.is_empty(), "{at}: {cleaned:?}");
    });
    // The clone of ds@20240101000000 is found and destroyed, with -r: it
    // may have a snapshot (destroy-clone-with-snapshot). Not on zfs-fuse,
    // for the reason above.
    let [openzfs, _] = sets();
    let basedir = tempfile::tempdir().unwrap();
    let (t, script) = openzfs.replay(&["list-clones", "destroy-clone"]);
    let cleaned = Mounter::new(Runner::new(), script)
        .clean_leftovers(&openzfs.ds("ds"), basedir.path())
        .unwrap();
    assert_eq!(
        cleaned,
        [openzfs.ds("ds.zfs2cloud-20240101000000").as_str()]
    );
    assert_eq!(Set::calls(&t), ["list-clones", "destroy-clone"]);
}
