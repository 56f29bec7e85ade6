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

use common::{marker_hooks, text, with_fakes, Setup};
use zfs2cloud_testkit::fake::{FakeRclone, FakeZfs};
use zfs2cloud_testkit::harness::{run_fail, run_ok, tree_digest, write_random_file, ZfsSession};
use zfs2cloud_testkit::remote::{sanitize_env, RcloneConfig};

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";

/// Dataset names that ZFS rejects (zfs-fuse says "invalid character" for
/// `;`, `$` and non-ASCII), each of which would also mean something to a
/// shell or to a command-line parser.
const REJECTED: &[&str] = &[
    "-tank/data",
    "--help",
    " tank/data",
    "tank/a;b",
    "tank/a; rm -rf x",
    "tank/$HOME",
    "tank/$(id)",
    "tank/`id`",
    "tank/'q'",
    "tank/\"q\"",
    "tank/a|b",
    "tank/a&b",
    "tank/a>b",
    "tank/a*",
    "tank/a\\b",
    "tank/a\nb",
    "tank/a\tb",
    "tank/données",
    "tank/✓",
    "tank/a@b",
    "tank/../etc",
];

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

/// Runs `args` and expects exit 2 with a message naming `key` (and `name`).
fn refused(setup: &Setup, zfs: &FakeZfs, rclone: &FakeRclone, args: &[&str], key: &str) -> String {
    let mut cmd = setup.cmd(DAY1);
    cmd.args(args);
    with_fakes(&mut cmd, zfs, rclone);
    let out = run_fail(&mut cmd);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {msg}");
    // A config error reads `<file>:<line>: <key>: ...`; others quote the key.
    assert!(
        msg.contains(&format!(": {key}: ")) || msg.contains(&format!("`{key}`")),
        "{args:?}: {msg}"
    );
    assert!(!msg.contains("panicked"), "{args:?}: {msg}");
    msg
}

#[test]
fn a_dataset_name_zfs_would_reject_is_refused_before_any_command_runs() {
    let zfs = FakeZfs::new();
    let rclone = FakeRclone::new();
    // The fakes are wired in: with a good name, commands do reach them.
    let log = tempfile::NamedTempFile::new().unwrap();
    let good = Setup::new("tank/data", &marker_hooks(log.path(), "true"));
    zfs.add_dataset("tank/data");
    let mut cmd = good.cmd(DAY1);
    cmd.arg("snapshot");
    with_fakes(&mut cmd, &zfs, &rclone);
    run_ok(&mut cmd);
    assert!(!zfs.invocations_of("snapshot").is_empty());
    assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "pre\npost\n");

    let zfs = FakeZfs::new();
    let rclone = FakeRclone::new();
    for name in REJECTED {
        zfs.add_dataset(name);
        let log = tempfile::NamedTempFile::new().unwrap();
        let setup = Setup::new(name, &marker_hooks(log.path(), "true"));
        for args in COMMANDS {
            let msg = refused(&setup, &zfs, &rclone, args, "dataset");
            assert!(
                msg.contains("invalid dataset name"),
                "{name:?} {args:?}: {msg}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(log.path()).unwrap(),
            "",
            "{name:?}: a hook ran"
        );
        assert!(
            !setup.basedir.exists(),
            "{name:?}: the intermediate dir was created"
        );
    }
    assert!(zfs.invocations().is_empty(), "{:?}", zfs.invocations());
    assert!(
        rclone.invocations().is_empty(),
        "{:?}",
        rclone.invocations()
    );
}

#[test]
fn a_restore_target_zfs_would_reject_is_refused_before_any_command_runs() {
    let zfs = FakeZfs::new();
    let rclone = FakeRclone::new();
    let setup = Setup::new("tank/data", "");
    for name in REJECTED {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zfs2cloud"));
        // `--to=NAME`: with `--to NAME`, clap itself refuses a leading dash.
        cmd.args(["restore", "--from", "cloud:backups"])
            .arg(format!("--to={name}"))
            .arg("--passphrase-file")
            .arg(&setup.passphrase_file)
            .env("GNUPGHOME", &setup.gnupghome)
            .env_remove("ZFS2CLOUD_CONFIG");
        with_fakes(&mut cmd, &zfs, &rclone);
        let out = run_fail(&mut cmd);
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(2), "{name:?}: {msg}");
        assert!(msg.contains("invalid dataset name"), "{name:?}: {msg}");
    }
    assert!(zfs.invocations().is_empty(), "{:?}", zfs.invocations());
    assert!(
        rclone.invocations().is_empty(),
        "{:?}",
        rclone.invocations()
    );
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

/// Backs up a dataset whose name ZFS accepts but which has a space, a
/// leading dash in a component, `:`, `.` and `_`, to a local remote whose
/// path holds spaces, quotes, `$`, `;`, backticks, a leading dash and
/// unicode; restores it, by the config and by `--from`, into datasets with
/// such names; and compares.
#[test]
fn odd_but_valid_names_and_a_shell_hostile_remote_path_back_up_and_restore() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let started = std::time::Instant::now();
    let src = zfs.pool("odd");
    let dst = zfs.pool("oddr");
    let rel = "-my data:v1.0_x";
    let data = src.create_dataset(rel);
    let ds = src.dataset(rel);
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("cloud");
    let weird = "we'ird \"dir\" $HOME; `id` ✓ äöü -x";
    let remote_dir = root.join(weird).join("-sub dir");
    let remote = format!("cloud:{}", remote_dir.display());
    let setup = Setup::with_remote(
        &ds,
        &remote,
        &format!(
            "rclone_config = {:?}\n",
            rclone.path().display().to_string()
        ),
    );
    write_random_file(&data.join("base.bin"), 150_000, 7);
    std::fs::write(data.join("a file; $x `y`"), "odd file name\n").unwrap();
    run_ok(setup.cmd(DAY1).arg("backup"));
    std::fs::write(data.join("day2 ✓.txt"), "day 2\n").unwrap();
    run_ok(setup.cmd(DAY2).arg("backup"));
    let source = tree_digest(&data);

    // The backups are at the literal path: nothing expanded `$HOME` or ran
    // `id`, and the chunk names carry the dataset name as it is.
    let dashed = ds.replace('/', "-");
    for (dir, snap) in [
        ("20240101000000-full", "20240101000000"),
        ("20240102000000", "20240102000000"),
    ] {
        let d = remote_dir.join(dir);
        assert!(d.join("manifest.json").is_file(), "{}", d.display());
        let chunk = d.join(format!("{dashed}@{snap}.zfs.gpg.0000"));
        assert!(chunk.is_file(), "{} missing", chunk.display());
    }
    let out = run_ok(setup.cmd(DAY2).arg("verify"));
    assert_eq!(text(&out).matches("OK ").count(), 2, "{}", text(&out));

    // Restore by the config's remote ...
    let target = dst.dataset("re stored:1.0_-x");
    run_ok(setup.cmd(DAY2).args(["restore", "--to", &target]));
    assert_eq!(tree_digest(&dst.mountpoint(&target)), source);
    // ... and by --from, without a config.
    let target = dst.dataset("-from remote");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zfs2cloud"));
    cmd.args(["restore", "--to", &target, "--from", &remote])
        .arg("--passphrase-file")
        .arg(&setup.passphrase_file)
        .arg("--rclone-config")
        .arg(rclone.path())
        .env("GNUPGHOME", &setup.gnupghome)
        .env_remove("ZFS2CLOUD_CONFIG")
        .current_dir("/");
    sanitize_env(&mut cmd);
    run_ok(&mut cmd);
    assert_eq!(tree_digest(&dst.mountpoint(&target)), source);

    let _ = Command::new("zfs")
        .args(["release", "zfs2cloud", &format!("{ds}@20240101000000")])
        .output();
    eprintln!("held the ZFS lock for {:?}", started.elapsed());
}
