//! Backup and restore on real zfs-fuse and gpg with each rclone client
//! (Debian's 1.60 and the current one, see
//! `zfs2cloud_testkit::remote::rclone_clients`) over each kind of remote:
//! a local path, sftp (`rclone serve sftp`), S3 (`rclone serve s3`) and S3
//! (moto). For every client × remote: a full backup, an incremental one a
//! day later, `verify`, and `restore --at latest` into a new dataset whose
//! files must equal the source's byte for byte.
//!
//! One pool per test function (one per remote kind); each client gets its
//! own source dataset, remote directory and restored dataset in it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{text, Setup};
use zfs2cloud_testkit::harness::{run_ok, tree_digest, write_random_file, Pool, ZfsSession};
use zfs2cloud_testkit::remote::{
    create_bucket, rclone_clients, MotoServer, RcloneClient, RcloneConfig, RcloneS3Server,
    RcloneSftpServer,
};

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";
const FULL: &str = "20240101000000-full";
const INCREMENTAL: &str = "20240102000000";

/// Where one client's backups go: the rclone remote string, and the same
/// directory on this machine's disk when the remote has one.
struct Target {
    remote: String,
    on_disk: Option<PathBuf>,
}

/// `zfs2cloud` with the clock at `now`, running `client` as its rclone.
fn zfs2cloud(setup: &Setup, client: &RcloneClient, now: &str) -> Command {
    let mut cmd = setup.cmd(now);
    cmd.env("ZFS2CLOUD_RCLONE", client.path());
    cmd
}

fn timed(what: &str, client: &RcloneClient, kind: &str, cmd: &mut Command) -> Output {
    let start = Instant::now();
    let out = run_ok(cmd);
    eprintln!(
        "{kind}/{}: {what} took {:.2?}",
        client.name(),
        start.elapsed()
    );
    out
}

fn release_holds(ds: &str) {
    for snap in ["20240101000000", "20240102000000"] {
        let _ = Command::new("zfs")
            .args(["release", "zfs2cloud", &format!("{ds}@{snap}")])
            .output();
    }
}

/// Day 1 (a full) and day 2 (an incremental) of `data`, backed up with
/// `client`; returns the source's digest at day 2.
fn back_up_two_days(
    setup: &Setup,
    client: &RcloneClient,
    kind: &str,
    data: &Path,
) -> BTreeMap<String, String> {
    let name = client.name();
    // Day 1: a few MiB (several 1M chunks), a subdirectory and a symlink.
    write_random_file(&data.join("big.bin"), 2 * 1024 * 1024 + 12_345, 1);
    std::fs::write(data.join("notes.txt"), format!("{kind} {name} day 1\n")).unwrap();
    std::fs::create_dir(data.join("sub")).unwrap();
    write_random_file(&data.join("sub/old.bin"), 100_000, 2);
    std::os::unix::fs::symlink("notes.txt", data.join("link")).unwrap();
    timed(
        "full backup",
        client,
        kind,
        zfs2cloud(setup, client, DAY1).arg("backup"),
    );

    // Day 2: a new file, a changed one, a removed one.
    write_random_file(&data.join("sub/new.bin"), 1024 * 1024 + 7, 3);
    std::fs::write(data.join("notes.txt"), format!("{kind} {name} day 2\n")).unwrap();
    std::fs::remove_file(data.join("sub/old.bin")).unwrap();
    timed(
        "incremental backup",
        client,
        kind,
        zfs2cloud(setup, client, DAY2).arg("backup"),
    );
    tree_digest(data)
}

/// Both backups are on the remote, as the client itself lists them, and
/// what the server stored (when it is on this disk) checks out with
/// coreutils.
fn check_the_remote(rclone: &RcloneConfig, target: &Target, kind: &str, name: &str) {
    let out = run_ok(rclone.rclone().args(["lsf", "--dirs-only", &target.remote]));
    let listed = String::from_utf8_lossy(&out.stdout);
    let mut dirs: Vec<&str> = listed.lines().collect();
    dirs.sort_unstable();
    assert_eq!(
        dirs,
        [format!("{FULL}/"), format!("{INCREMENTAL}/")],
        "{kind}/{name}: {listed}"
    );
    if let Some(dir) = &target.on_disk {
        for backup in [FULL, INCREMENTAL] {
            run_ok(
                Command::new("sha256sum")
                    .args(["-c", "--quiet", "SHA256SUMS"])
                    .current_dir(dir.join(backup)),
            );
        }
    }
}

/// `verify` finds both backups OK, and `restore --at latest` into a new
/// dataset gives files equal to `source` byte for byte.
fn verify_and_restore_latest(
    pool: &Pool<'_>,
    setup: &Setup,
    client: &RcloneClient,
    kind: &str,
    source: &BTreeMap<String, String>,
) {
    let name = client.name();
    let out = timed(
        "verify",
        client,
        kind,
        zfs2cloud(setup, client, DAY2).arg("verify"),
    );
    assert_eq!(
        text(&out).matches("OK ").count(),
        2,
        "{kind}/{name}: {}",
        text(&out)
    );

    let restored = pool.dataset(&format!("restored-{name}"));
    let out = timed(
        "restore --at latest",
        client,
        kind,
        zfs2cloud(setup, client, DAY2).args(["restore", "--to", &restored, "--at", "latest"]),
    );
    assert!(
        text(&out).contains(&format!("{FULL} + {INCREMENTAL}")),
        "{kind}/{name}: {}",
        text(&out)
    );
    let restored_tree = tree_digest(&pool.mountpoint(&restored));
    assert_eq!(
        &restored_tree, source,
        "{kind}/{name}: the restored files differ from the source"
    );
    assert!(
        source.contains_key("sub/new.bin") && !source.contains_key("sub/old.bin"),
        "{source:?}"
    );
}

/// Full backup, incremental backup, verify, restore --at latest and a
/// byte-for-byte comparison, for `client` over the remote `configure`
/// adds to its rclone config.
fn round_trip(
    pool: &Pool<'_>,
    kind: &str,
    client: &RcloneClient,
    configure: impl FnOnce(&RcloneConfig) -> Target,
) {
    let started = Instant::now();
    let name = client.name();
    let src_rel = format!("src-{name}");
    let data = pool.create_dataset(&src_rel);
    let ds = pool.dataset(&src_rel);
    let rclone = RcloneConfig::with_rclone(client.path());
    let target = configure(&rclone);
    let setup = Setup::with_split(
        &ds,
        &target.remote,
        "1M",
        &format!(
            "rclone_config = {:?}\n",
            rclone.path().display().to_string()
        ),
    );

    let source = back_up_two_days(&setup, client, kind, &data);
    check_the_remote(&rclone, &target, kind, name);
    verify_and_restore_latest(pool, &setup, client, kind, &source);
    release_holds(&ds);
    eprintln!(
        "{kind}/{name}: {} entries restored identical; round trip {:.2?}",
        source.len(),
        started.elapsed()
    );
}

/// The session, the clients and a pool for one remote kind; `None`: skip.
fn start<'z>(zfs: &'z Option<ZfsSession>, tag: &str) -> Option<(Vec<RcloneClient>, Pool<'z>)> {
    let zfs = zfs.as_ref()?;
    let clients = rclone_clients();
    if clients.is_empty() {
        return None;
    }
    Some((clients, zfs.pool(tag)))
}

#[test]
fn local_remote_with_each_rclone() {
    let zfs = ZfsSession::start(&["gpg", "sha256sum"]);
    let Some((clients, pool)) = start(&zfs, "rloc") else {
        return;
    };
    for client in &clients {
        round_trip(&pool, "local", client, |config| {
            let root = config.add_local("cloud");
            let dir = root.join("host/data");
            Target {
                remote: format!("cloud:{}", dir.display()),
                on_disk: Some(dir),
            }
        });
    }
}

#[test]
fn sftp_via_rclone_serve_sftp_with_each_rclone() {
    let zfs = ZfsSession::start(&["gpg", "sha256sum"]);
    let Some((clients, pool)) = start(&zfs, "rsftp") else {
        return;
    };
    let Some(server) = RcloneSftpServer::start() else {
        return;
    };
    for client in &clients {
        round_trip(&pool, "sftp", client, |config| {
            config.add_sftp("sftp", &server);
            let rel = format!("backups/{}/data", client.name());
            Target {
                remote: format!("sftp:{rel}"),
                on_disk: Some(server.root().join(rel)),
            }
        });
    }
}

#[test]
fn s3_via_rclone_serve_s3_with_each_rclone() {
    let zfs = ZfsSession::start(&["gpg", "sha256sum"]);
    let Some((clients, pool)) = start(&zfs, "rs3") else {
        return;
    };
    let Some(server) = RcloneS3Server::start() else {
        return;
    };
    for client in &clients {
        round_trip(&pool, "s3", client, |config| {
            config.add_s3("s3", &server);
            let bucket = format!("zfs2cloud-{}", client.name());
            create_bucket(config, "s3", &bucket);
            Target {
                remote: format!("s3:{bucket}/host/data"),
                on_disk: Some(server.root().join(bucket).join("host/data")),
            }
        });
    }
}

#[test]
fn s3_via_moto_with_each_rclone() {
    let zfs = ZfsSession::start(&["gpg"]);
    let Some((clients, pool)) = start(&zfs, "rmoto") else {
        return;
    };
    let Some(moto) = MotoServer::start() else {
        return;
    };
    for client in &clients {
        round_trip(&pool, "moto", client, |config| {
            config.add_s3("s3", &moto);
            let bucket = format!("zfs2cloud-{}", client.name());
            create_bucket(config, "s3", &bucket);
            Target {
                remote: format!("s3:{bucket}/host/data"),
                on_disk: None,
            }
        });
    }
}
