//! `encryption = "none"` on real zfs-fuse and rclone (no gpg at all): a
//! full and an incremental round-trip byte-identically through
//! `zfs2cloud restore` and through `cat chunks | zfs recv`, and
//! `verify --deep` proves them. Raw sends and volumes need OpenZFS
//! (`openzfs_real.rs`); here zfs-fuse's lack of volumes is pinned down, so
//! the file-mode refusal of a volume is tested with the fake zfs
//! (`send_flags.rs`) and on OpenZFS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::process::Command;

use common::{manifest, sorted_chunks, text, Setup};
use zfs2cloud_testkit::harness::{
    run_ok, run_pipeline, tree_digest, write_random_file, zfs_flavor, ZfsFlavor, ZfsSession,
};
use zfs2cloud_testkit::remote::RcloneConfig;

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";

/// `setup.cmd(day)` with gpg made unrunnable: nothing may need it.
fn without_gpg(setup: &Setup, day: &str) -> Command {
    let mut cmd = setup.cmd(day);
    cmd.env("ZFS2CLOUD_GPG", "/nonexistent/gpg");
    cmd
}

#[test]
fn an_unencrypted_backup_round_trips_byte_identically_without_gpg() {
    let Some(zfs) = ZfsSession::start(&["rclone"]) else {
        return;
    };
    let src = zfs.pool("ues");
    let dst = zfs.pool("ued");
    let data = src.create_dataset("data");
    let ds = src.dataset("data");
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("cloud");
    let setup = Setup::with_remote(
        &ds,
        &format!("cloud:{}", root.join("data").display()),
        &format!(
            "encryption = \"none\"\nallow_unencrypted = true\nrclone_config = {:?}\n",
            rclone.path().display().to_string()
        ),
    );
    // No passphrase_file: encryption = "none" needs none.
    let config = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        config.replace("passphrase_file = \"passphrase\"\n", ""),
    )
    .unwrap();
    write_random_file(&data.join("base.bin"), 300_000, 7);
    std::fs::write(data.join("a.txt"), "day 1\n").unwrap();
    run_ok(without_gpg(&setup, DAY1).arg("backup"));
    let at_day1 = tree_digest(&data);
    std::fs::write(data.join("a.txt"), "day 2\n").unwrap();
    write_random_file(&data.join("new.bin"), 100_000, 8);
    run_ok(without_gpg(&setup, DAY2).arg("backup"));
    let at_day2 = tree_digest(&data);
    // The remote copies (the local full was pruned after day 2's export).
    let full = root.join("data/20240101000000-full");
    assert_eq!(manifest(&full)["encryption"], "none");
    assert_eq!(
        manifest(&root.join("data/20240102000000"))["kind"],
        "incremental"
    );

    // zfs2cloud restore: the full plus the incremental, no passphrase.
    let target = dst.dataset("restored");
    let out = run_ok(without_gpg(&setup, DAY2).args(["restore", "--to", &target]));
    assert!(text(&out).contains("restored"), "{}", text(&out));
    assert_eq!(tree_digest(&dst.mountpoint(&target)), at_day2);

    // Stock tools: the chunks are the zfs send stream.
    let by_hand = dst.dataset("byhand");
    let names: Vec<String> = sorted_chunks(&full)
        .iter()
        .map(|c| format!("'{}'", c.display()))
        .collect();
    run_pipeline(&format!("cat {} | zfs recv {by_hand}", names.join(" ")));
    assert_eq!(tree_digest(&dst.mountpoint(&by_hand)), at_day1);

    let out = run_ok(without_gpg(&setup, DAY2).args(["verify", "--deep"]));
    assert_eq!(text(&out).matches("OK ").count(), 2, "{}", text(&out));
    for snap in ["20240101000000", "20240102000000"] {
        let _ = Command::new("zfs")
            .args(["release", "zfs2cloud", &format!("{ds}@{snap}")])
            .output();
    }
}

#[test]
fn zfs_fuse_cannot_create_a_volume() {
    let Some(zfs) = ZfsSession::start(&[]) else {
        return;
    };
    if zfs_flavor() != ZfsFlavor::ZfsFuse {
        // OpenZFS has volumes: openzfs_real.rs backs one up and has file
        // mode refuse it.
        return;
    }
    let pool = zfs.pool("uv");
    let out = Command::new("zfs")
        .args(["create", "-V", "16M", &pool.dataset("vol")])
        .output()
        .unwrap();
    // If this ever succeeds, test file mode's refusal of a volume here
    // too (it is tested with the fake zfs and on OpenZFS).
    assert!(
        !out.status.success(),
        "zfs-fuse created a volume: {}",
        text(&out)
    );
}
