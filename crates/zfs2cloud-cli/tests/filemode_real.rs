//! File mode end to end on real ZFS and rclone: the snapshot is exposed
//! read-only (a temporary clone is the only way on zfs-fuse; on OpenZFS,
//! where `scripts/openzfs-vm/test` runs these too, `auto` picks
//! `mount -t zfs`), synced, and always taken down again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{text, Setup};
use zfs2cloud_testkit::fake::{FakeRclone, FaultAction};
use zfs2cloud_testkit::harness::{
    run_fail, run_ok, tree_digest, write_random_file, zfs_get, Pool, ZfsSession,
};
use zfs2cloud_testkit::remote::RcloneConfig;

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";
const HEARTBEAT: &str = "__zfs2cloud_last_updated__";

fn file_mode(rclone: &RcloneConfig, extra: &str) -> String {
    format!(
        "mode = \"file\"\nrclone_config = {:?}\nmount_strategy = \"auto\"\n{extra}",
        rclone.path().display().to_string()
    )
}

/// The remote tree without the heartbeat object.
fn remote_tree(root: &Path) -> BTreeMap<String, String> {
    let mut t = tree_digest(root);
    t.remove(HEARTBEAT);
    t
}

fn heartbeat(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join(HEARTBEAT)).unwrap()).unwrap()
}

/// Nothing of zfs2cloud's is mounted and no temporary clone exists.
fn assert_nothing_exposed(pool: &str, basedir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let base = basedir.display().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&base)),
        "a mount is left under {base}:\n{mounts}"
    );
    let out = run_ok(Command::new("zfs").args(["list", "-H", "-o", "name", "-r", pool]));
    let names = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !names.contains(".zfs2cloud-"),
        "a temporary clone is left:\n{names}"
    );
    let leftovers: Vec<PathBuf> = std::fs::read_dir(basedir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "mount directories left: {leftovers:?}"
    );
}

#[test]
fn file_mode_syncs_the_snapshot_tree_exactly_and_follows_changes() {
    let Some(zfs) = ZfsSession::start(&["rclone"]) else {
        return;
    };
    let pool = zfs.pool("fm");
    let data = pool.create_dataset("photos");
    let ds = pool.dataset("photos");
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("cloud");
    let remote_root = root.join("photos");
    let setup = Setup::with_remote(
        &ds,
        &format!("cloud:{}", remote_root.display()),
        &file_mode(&rclone, ""),
    );

    std::fs::create_dir_all(data.join("2024/january/trip")).unwrap();
    std::fs::write(data.join("2024/january/trip/beach day ☀ été.jpg"), b"sunny").unwrap();
    std::fs::write(data.join("2024/notes.txt"), b"notes\n").unwrap();
    std::fs::write(data.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("2024/january", data.join("latest")).unwrap();
    write_random_file(&data.join("video.mp4"), 50 << 20, 42);
    let at_day1 = tree_digest(&data);

    let out = run_ok(setup.cmd(DAY1).arg("backup"));
    let shown = text(&out);
    for step in ["mount-snapshot", "upload-snapshot-files", "umount-snapshot"] {
        assert!(shown.contains(step), "{shown}");
    }
    assert_eq!(
        remote_tree(&remote_root),
        at_day1,
        "same names, sizes and sha256s"
    );
    assert_eq!(
        heartbeat(&remote_root)["snapshot"],
        format!("{ds}@20240101000000")
    );
    assert_nothing_exposed(pool.name(), &setup.basedir);

    // Day 2: changes and deletions show up remotely.
    std::fs::write(data.join("2024/notes.txt"), b"more notes\n").unwrap();
    std::fs::remove_file(data.join("video.mp4")).unwrap();
    std::fs::remove_dir_all(data.join("2024/january/trip")).unwrap();
    std::fs::write(data.join("new.txt"), b"new").unwrap();
    let at_day2 = tree_digest(&data);
    run_ok(setup.cmd(DAY2).arg("backup"));
    assert_eq!(remote_tree(&remote_root), at_day2);
    assert!(!remote_root.join("video.mp4").exists());
    assert_eq!(
        heartbeat(&remote_root)["snapshot"],
        format!("{ds}@20240102000000")
    );
    assert_nothing_exposed(pool.name(), &setup.basedir);
}

#[test]
fn a_failing_rclone_leaves_no_mount_and_no_clone() {
    let Some(zfs) = ZfsSession::start(&[]) else {
        return;
    };
    let pool = zfs.pool("fmfail");
    let data = pool.create_dataset("data");
    let ds = pool.dataset("data");
    std::fs::write(data.join("f"), b"x").unwrap();
    let fake = FakeRclone::new();
    fake.inject(
        "sync",
        FaultAction::Exit {
            code: 7,
            stderr: "ERROR : Fatal error received - not attempting retries".into(),
        },
        None,
    );
    let rclone = RcloneConfig::new();
    let setup = Setup::with_remote(
        &ds,
        "cloud:data",
        &file_mode(&rclone, "upload_retries = 1\n"),
    );
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("backup");
    for (k, v) in fake.env() {
        cmd.env(k, v);
    }
    let out = run_fail(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("step upload-snapshot-files failed"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("Fatal error received"),
        "{}",
        text(&out)
    );
    assert_eq!(fake.invocations_of("sync").len(), 2, "one retry");
    assert_nothing_exposed(pool.name(), &setup.basedir);
}

/// `<pool>/data` holding one file, configured for file mode to a local
/// remote; returns the dataset, the rclone config (keep it alive), the
/// remote's root and the set-up.
fn one_file_to_a_local_remote(pool: &Pool<'_>) -> (String, RcloneConfig, PathBuf, Setup) {
    let data = pool.create_dataset("data");
    let ds = pool.dataset("data");
    std::fs::write(data.join("f"), b"x").unwrap();
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("cloud");
    let setup = Setup::with_remote(
        &ds,
        &format!("cloud:{}", root.display()),
        &file_mode(&rclone, ""),
    );
    (ds, rclone, root, setup)
}

/// An rclone whose `sync` first waits 60 s (killable), recording its pid.
fn slow_sync_rclone(dir: &Path) -> (PathBuf, PathBuf) {
    let pidfile = dir.join("rclone.pid");
    let wrapper = dir.join("rclone-slow");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" sync \"*) echo $$ > '{}'; sleep 60;; esac\nexec rclone \"$@\"\n",
            pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, pidfile)
}

/// Starts a DAY1 backup whose rclone hangs in `sync`, and kills it and
/// its rclone with SIGKILL while the snapshot is exposed: nothing can
/// clean up.
fn kill_9_while_syncing(setup: &Setup) {
    let (wrapper, pidfile) = slow_sync_rclone(setup.dir.path());
    let mut child = setup
        .cmd(DAY1)
        .arg("backup")
        .env("ZFS2CLOUD_RCLONE", &wrapper)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&pidfile);
    child.kill().unwrap();
    child.wait().unwrap();
    let wrapper_pid = std::fs::read_to_string(&pidfile).unwrap();
    run_ok(Command::new("kill").args(["-KILL", wrapper_pid.trim()]));
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_while_syncing_unmounts_and_exits_143() {
    let Some(zfs) = ZfsSession::start(&["rclone"]) else {
        return;
    };
    let pool = zfs.pool("fmterm");
    let (_ds, _rclone, _root, setup) = one_file_to_a_local_remote(&pool);
    let (wrapper, pidfile) = slow_sync_rclone(setup.dir.path());
    let child = setup
        .cmd(DAY1)
        .arg("backup")
        .env("ZFS2CLOUD_RCLONE", &wrapper)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&pidfile);
    run_ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out));
    assert!(
        text(&out).contains("upload-snapshot-files"),
        "{}",
        text(&out)
    );
    assert_nothing_exposed(pool.name(), &setup.basedir);
}

#[test]
fn after_a_kill_9_while_mounted_the_next_run_cleans_up_and_succeeds() {
    let Some(zfs) = ZfsSession::start(&["rclone"]) else {
        return;
    };
    let pool = zfs.pool("fmkill");
    let (ds, _rclone, root, setup) = one_file_to_a_local_remote(&pool);
    kill_9_while_syncing(&setup);
    // `auto` picks a clone on zfs-fuse and `mount -t zfs` on OpenZFS.
    let clones = run_ok(Command::new("zfs").args(["list", "-H", "-o", "name", "-r", pool.name()]));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        String::from_utf8_lossy(&clones.stdout).contains(".zfs2cloud-20240101000000")
            || mounts.contains(&setup.basedir.display().to_string()),
        "the killed run should have left its clone or mount for this test to mean anything"
    );

    let out = run_ok(setup.cmd(DAY2).arg("-v").arg("backup"));
    assert!(
        text(&out).contains("left by an earlier run"),
        "{}",
        text(&out)
    );
    assert_eq!(heartbeat(&root)["snapshot"], format!("{ds}@20240102000000"));
    assert_nothing_exposed(pool.name(), &setup.basedir);
}

/// A `zfs` that runs the real one, but reports `zfs clone` as failed after
/// it made the clone, as OpenZFS does when it cannot mount or share it.
fn half_failing_clone_zfs(dir: &Path) -> PathBuf {
    let wrapper = dir.join("zfs-half-clone");
    std::fs::write(
        &wrapper,
        "#!/bin/sh
if [ \"$1\" = clone ]; then
  zfs \"$@\" || exit
  \
         echo 'filesystem successfully created, but not mounted' >&2
  exit 1
fi
exec zfs \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

#[test]
fn a_clone_made_but_reported_failed_is_destroyed_again() {
    let Some(zfs) = ZfsSession::start(&["rclone"]) else {
        return;
    };
    let pool = zfs.pool("fmhalf");
    let (_ds, _rclone, _root, setup) = one_file_to_a_local_remote(&pool);
    rewrite_strategy(&setup, "clone");
    let wrapper = half_failing_clone_zfs(setup.dir.path());
    let out = run_fail(setup.cmd(DAY1).arg("backup").env("ZFS2CLOUD_ZFS", &wrapper));
    assert!(
        text(&out).contains("created, but not mounted"),
        "{}",
        text(&out)
    );
    assert_nothing_exposed(pool.name(), &setup.basedir);
}

/// Sets `mount_strategy` in the set-up's config.
fn rewrite_strategy(setup: &Setup, strategy: &str) {
    let config = std::fs::read_to_string(&setup.config).unwrap();
    let config = config.replace(
        "mount_strategy = \"auto\"",
        &format!("mount_strategy = {strategy:?}"),
    );
    std::fs::write(&setup.config, config).unwrap();
}

#[test]
fn a_leftover_clone_that_a_snapshot_tool_snapshotted_is_still_cleaned_up() {
    let Some(zfs) = ZfsSession::start(&["rclone"]) else {
        return;
    };
    let pool = zfs.pool("fmsnapd");
    let (ds, _rclone, root, setup) = one_file_to_a_local_remote(&pool);
    rewrite_strategy(&setup, "clone");
    kill_9_while_syncing(&setup);
    // A recursive snapshot tool (zfs-auto-snapshot, sanoid) passes by.
    run_ok(Command::new("zfs").args(["snapshot", "-r", &format!("{}@autosnap", pool.name())]));
    let clone = format!("{ds}.zfs2cloud-20240101000000");
    assert_eq!(
        zfs_get("name", &format!("{clone}@autosnap")),
        format!("{clone}@autosnap")
    );

    let out = run_ok(setup.cmd(DAY2).arg("-v").arg("backup"));
    assert!(
        text(&out).contains("left by an earlier run"),
        "{}",
        text(&out)
    );
    assert_eq!(heartbeat(&root)["snapshot"], format!("{ds}@20240102000000"));
    assert_nothing_exposed(pool.name(), &setup.basedir);
}

#[test]
fn a_crypt_remote_gets_encrypted_names_and_reads_back_the_original_bytes() {
    let Some(zfs) = ZfsSession::start(&["rclone"]) else {
        return;
    };
    let pool = zfs.pool("fmcrypt");
    let data = pool.create_dataset("data");
    let ds = pool.dataset("data");
    std::fs::create_dir(data.join("private")).unwrap();
    write_random_file(&data.join("private/tax return 2024.pdf"), 300_000, 7);
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("plain");
    rclone.add_crypt(
        "secret",
        &format!("plain:{}", root.display()),
        "correct horse",
    );
    let setup = Setup::with_remote(&ds, "secret:", &file_mode(&rclone, ""));
    run_ok(setup.cmd(DAY1).arg("backup"));

    let underlying = tree_digest(&root);
    assert!(!underlying.is_empty());
    for name in underlying.keys() {
        assert!(
            !name.contains("private") && !name.contains("tax") && !name.contains(HEARTBEAT),
            "a plain name on the remote: {name}"
        );
    }
    let back = run_ok(
        rclone
            .rclone()
            .args(["cat", "secret:private/tax return 2024.pdf"]),
    );
    assert_eq!(
        back.stdout,
        std::fs::read(data.join("private/tax return 2024.pdf")).unwrap()
    );
    let hb = run_ok(
        rclone
            .rclone()
            .args(["cat", &format!("secret:{HEARTBEAT}")]),
    );
    assert!(String::from_utf8_lossy(&hb.stdout).contains(&format!("{ds}@20240101000000")));
    assert_nothing_exposed(pool.name(), &setup.basedir);
}

#[test]
fn file_mode_dry_run_shows_mount_sync_and_unmount_and_does_none() {
    let Some(zfs) = ZfsSession::start(&["rclone"]) else {
        return;
    };
    let pool = zfs.pool("fmdry");
    let _ = pool.create_dataset("data");
    let ds = pool.dataset("data");
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("cloud");
    let setup = Setup::with_remote(
        &ds,
        &format!("cloud:{}", root.display()),
        &file_mode(&rclone, "").replace("\"auto\"", "\"clone\""),
    );
    let out = run_ok(setup.cmd(DAY1).args(["--dry-run", "backup"]));
    let shown = text(&out);
    assert!(
        shown.contains("[dry-run] zfs clone -o readonly=on"),
        "{shown}"
    );
    assert!(shown.contains(" sync --links "), "{shown}");
    assert!(
        shown.contains(&format!(
            "[dry-run] zfs destroy -r {ds}.zfs2cloud-20240101000000"
        )),
        "{shown}"
    );
    let snaps = run_ok(Command::new("zfs").args([
        "list",
        "-H",
        "-t",
        "snapshot",
        "-o",
        "name",
        "-r",
        pool.name(),
    ]));
    assert_eq!(String::from_utf8_lossy(&snaps.stdout).trim(), "");
    assert!(
        std::fs::read_dir(&root).unwrap().next().is_none(),
        "dry-run wrote to the remote"
    );
    assert_nothing_exposed(pool.name(), &setup.basedir);
}
