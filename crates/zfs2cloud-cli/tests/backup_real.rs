//! End-to-end `backup` runs against real zfs-fuse, gpg and rclone (a
//! local-path remote and an S3 server on loopback), and the failure cases of
//! the whole sequence: lock contention, SIGKILL, SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{manifest, text, Setup};
use zfs2cloud_testkit::harness::{
    run_fail, run_ok, run_pipeline, tree_digest, write_random_file, zfs_get, ZfsSession,
};
use zfs2cloud_testkit::remote::{create_bucket, MotoServer, RcloneConfig};

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";
const DAY3: &str = "2024-01-03T00:00:00Z";
const DAY200: &str = "2024-07-19T00:00:00Z";
const DAY201: &str = "2024-07-20T00:00:00Z";
const BACKUP_DIRS: [&str; 3] = ["20240101000000-full", "20240102000000", "20240103000000"];

fn own_snapshots(ds: &str) -> Vec<String> {
    let out = run_ok(
        Command::new("zfs").args(["list", "-H", "-t", "snapshot", "-o", "name", "-d", "1", ds]),
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.rsplit('@').next().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn dirs_in(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Three daily backups; returns the source tree at day 3.
fn three_daily_backups(setup: &Setup, data: &Path) -> std::collections::BTreeMap<String, String> {
    write_random_file(&data.join("base.bin"), 300_000, 1);
    for (i, day) in [DAY1, DAY2, DAY3].into_iter().enumerate() {
        std::fs::write(data.join("day.txt"), format!("day {i}\n")).unwrap();
        write_random_file(&data.join(format!("day{i}.bin")), 20_000, 10 + i as u64);
        let out = run_ok(setup.cmd(day).arg("backup"));
        let shown = text(&out);
        for step in [
            "lock",
            "snapshot",
            "export",
            "upload",
            "prune-intermediates",
            "prune-snapshots",
            "unlock",
        ] {
            assert!(
                shown.contains(step),
                "{day}: step {step} not reported: {shown}"
            );
        }
    }
    tree_digest(data)
}

#[test]
fn three_daily_backups_to_a_local_remote_then_pruning_200_days_later() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let src = zfs.pool("bk");
    let dst = zfs.pool("bkr");
    let data = src.create_dataset("data");
    let ds = src.dataset("data");
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("backup");
    let remote = format!("backup:{}", root.join("data").display());
    let setup = Setup::with_remote(
        &ds,
        &remote,
        &format!(
            "rclone_config = {:?}\noldest_snapshot_days = 120\n",
            rclone.path().display().to_string()
        ),
    );

    let at_day3 = three_daily_backups(&setup, &data);
    let remote_dir = root.join("data");
    assert_eq!(dirs_in(&remote_dir), BACKUP_DIRS);
    for dir in BACKUP_DIRS {
        let d = remote_dir.join(dir);
        assert!(d.join("manifest.json").is_file(), "{dir}");
        assert!(d.join("SHA256SUMS").is_file(), "{dir}");
        let chunks = manifest(&d)["chunks"].as_array().unwrap().len();
        let files = std::fs::read_dir(&d).unwrap().count();
        assert_eq!(
            files,
            chunks + 2,
            "{dir}: every chunk, SHA256SUMS and manifest.json"
        );
        run_ok(
            Command::new("sha256sum")
                .args(["-c", "--quiet", "SHA256SUMS"])
                .current_dir(&d),
        );
    }
    assert_eq!(
        manifest(&remote_dir.join("20240103000000"))["base"],
        "20240101000000"
    );
    // Locally only the newest export remains.
    assert_eq!(setup.complete_exports(), ["20240103000000"]);
    // Uploads are recorded in the pool.
    for snap in ["20240101000000", "20240102000000", "20240103000000"] {
        assert_ne!(
            zfs_get("zfs2cloud:uploaded", &format!("{ds}@{snap}")),
            "-",
            "{snap}"
        );
    }

    // The backup restores byte-identical from the remote with stock tools.
    let target = dst.dataset("restored");
    for dir in ["20240101000000-full", "20240103000000"] {
        run_pipeline(&format!(
            "cat '{}'/*.zfs.gpg.* | GNUPGHOME='{}' gpg --batch --passphrase-file '{}' --decrypt | zfs recv {target}",
            remote_dir.join(dir).display(),
            setup.gnupghome.display(),
            setup.passphrase_file.display()
        ));
    }
    assert_eq!(tree_digest(&dst.mountpoint(&target)), at_day3);

    // 200 days later, with a snapshot made by hand in between.
    run_ok(Command::new("zfs").args(["snapshot", &format!("{ds}@manual")]));
    run_ok(setup.cmd(DAY200).arg("backup"));
    run_ok(setup.cmd(DAY201).arg("backup"));
    assert_eq!(
        own_snapshots(&ds),
        ["20240719000000", "20240720000000", "manual"],
        "old snapshots destroyed; the held full base, the newest and @manual kept"
    );
    assert_eq!(
        zfs_get("zfs2cloud:kind", &format!("{ds}@20240719000000")),
        "full"
    );
    assert_eq!(zfs_get("userrefs", &format!("{ds}@20240719000000")), "1");
    assert_eq!(
        dirs_in(&remote_dir),
        [&BACKUP_DIRS[..], &["20240719000000-full", "20240720000000"]].concat(),
        "pruning never touches the remote"
    );
    run_ok(Command::new("zfs").args(["release", "zfs2cloud", &format!("{ds}@20240719000000")]));
}

#[test]
fn three_daily_backups_to_an_s3_server_on_loopback() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let src = zfs.pool("s3");
    let data = src.create_dataset("data");
    let ds = src.dataset("data");
    let rclone = RcloneConfig::new();
    rclone.add_s3("s3", &moto);
    create_bucket(&rclone, "s3", "zfs2cloud");
    let setup = Setup::with_remote(
        &ds,
        "s3:zfs2cloud/host/data",
        &format!(
            "rclone_config = {:?}\n",
            rclone.path().display().to_string()
        ),
    );
    three_daily_backups(&setup, &data);

    let lsf = run_ok(
        rclone
            .rclone()
            .args(["lsf", "-R", "s3:zfs2cloud/host/data"]),
    );
    let listing = String::from_utf8_lossy(&lsf.stdout).into_owned();
    for dir in BACKUP_DIRS {
        let m = run_ok(rclone.rclone().args([
            "cat",
            &format!("s3:zfs2cloud/host/data/{dir}/manifest.json"),
        ]));
        let m: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
        for chunk in m["chunks"].as_array().unwrap() {
            let name = chunk["name"].as_str().unwrap();
            assert!(
                listing.contains(&format!("{dir}/{name}")),
                "{dir}/{name} missing: {listing}"
            );
        }
        assert!(listing.contains(&format!("{dir}/SHA256SUMS")), "{listing}");
    }
    // The whole chain checks out against SHA256SUMS after a download.
    let dl = tempfile::tempdir().unwrap();
    run_ok(
        rclone
            .rclone()
            .arg("copy")
            .arg("s3:zfs2cloud/host/data")
            .arg(dl.path()),
    );
    for dir in BACKUP_DIRS {
        run_ok(
            Command::new("sha256sum")
                .args(["-c", "--quiet", "SHA256SUMS"])
                .current_dir(dl.path().join(dir)),
        );
    }
    run_ok(Command::new("zfs").args(["release", "zfs2cloud", &format!("{ds}@20240101000000")]));
}

#[test]
fn a_second_concurrent_backup_exits_75_at_once() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let src = zfs.pool("lock");
    let _ = src.create_dataset("data");
    let ds = src.dataset("data");
    let marker = tempfile::NamedTempFile::new().unwrap();
    let setup = Setup::new(
        &ds,
        &format!(
            "[hooks]\npre_snapshot = [\"/bin/sh\", \"-c\", \"echo started > '{}'; sleep 4\"]\n",
            marker.path().display()
        ),
    );
    let mut first = setup
        .cmd(DAY1)
        .arg("backup")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(marker.path())
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the first run never reached pre_snapshot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let out = run_fail(setup.cmd(DAY2).arg("backup"));
    let waited = started.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("another zfs2cloud run holds the lock"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("pid={}", first.id())),
        "the holder is named: {msg}"
    );
    // "At once": it did not wait for the first run's 4 s hook.
    assert!(waited < Duration::from_secs(3), "took {waited:?}");
    let _ = first.kill();
    let _ = first.wait();
}

/// A zfs that keeps `zfs send`'s stdout open for `secs` after the stream,
/// so a test can interrupt zfs2cloud mid-export.
fn slow_send_zfs(dir: &Path, secs: u32) -> std::path::PathBuf {
    let wrapper = dir.join("zfs-slow-send");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nif [ \"$1\" = send ]; then zfs \"$@\"; rc=$?; sleep {secs}; exit $rc; fi\nexec zfs \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

fn wait_for_partial(setup: &Setup) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if !setup.partials().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the export never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn after_a_kill_9_mid_export_the_next_run_succeeds() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let src = zfs.pool("kill");
    let data = src.create_dataset("data");
    let ds = src.dataset("data");
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("r");
    let setup = Setup::with_remote(
        &ds,
        &format!("r:{}", root.display()),
        &format!(
            "rclone_config = {:?}\n",
            rclone.path().display().to_string()
        ),
    );
    write_random_file(&data.join("f"), 200_000, 5);
    let wrapper = slow_send_zfs(setup.dir.path(), 5);
    let mut child = setup
        .cmd(DAY1)
        .arg("backup")
        .env("ZFS2CLOUD_ZFS", &wrapper)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_partial(&setup);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        setup.complete_exports().is_empty(),
        "a killed export looks complete"
    );

    let out = run_ok(setup.cmd(DAY2).arg("backup"));
    assert!(text(&out).contains("finished"), "{}", text(&out));
    assert_eq!(setup.complete_exports(), ["20240102000000-full"]);
    let leftovers = setup.partials();
    assert!(
        leftovers.is_empty(),
        "stale partial export not cleaned: {leftovers:?}"
    );
    assert!(root.join("20240102000000-full/manifest.json").is_file());
    run_ok(Command::new("zfs").args(["release", "zfs2cloud", &format!("{ds}@20240102000000")]));
}

#[test]
fn sigterm_mid_export_cleans_up_runs_on_failure_and_frees_the_lock() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let src = zfs.pool("term");
    let data = src.create_dataset("data");
    let ds = src.dataset("data");
    let report = tempfile::NamedTempFile::new().unwrap();
    let setup = Setup::new(
        &ds,
        &format!(
            "[hooks]\non_failure = [\"/bin/sh\", \"-c\", \"cat > '{}'; echo step=$ZFS2CLOUD_FAILED_STEP >> '{}'\"]\n",
            report.path().display(),
            report.path().display()
        ),
    );
    write_random_file(&data.join("f"), 200_000, 6);
    let wrapper = slow_send_zfs(setup.dir.path(), 5);
    let child = setup
        .cmd(DAY1)
        .arg("backup")
        .env("ZFS2CLOUD_ZFS", &wrapper)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_partial(&setup);
    run_ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out));
    assert!(
        setup.partials().is_empty(),
        "partial export left: {:?}",
        setup.partials()
    );
    assert!(setup.complete_exports().is_empty());
    let reported = std::fs::read_to_string(report.path()).unwrap();
    assert!(reported.contains("step export failed"), "{reported}");
    assert!(reported.contains("interrupted"), "{reported}");
    assert!(reported.contains("step=export"), "{reported}");
    // The lock is free: a dry run of the next day gets past it, and a real
    // lock can be taken.
    run_ok(setup.cmd(DAY2).arg("snapshot"));
}
