//! Restore and verify on real zfs-fuse, gpg and rclone: backups that can be
//! proved and got back with one command.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{sorted_chunks, text, Setup};
use zfs2cloud_testkit::harness::{
    run_fail, run_ok, run_pipeline, tree_digest, write_random_file, zfs_get, Pool, ZfsSession,
};
use zfs2cloud_testkit::remote::{sanitize_env, RcloneConfig};

const DAYS: [&str; 3] = [
    "2024-01-01T00:00:00Z",
    "2024-01-02T00:00:00Z",
    "2024-01-03T00:00:00Z",
];

struct Backed {
    setup: Setup,
    rclone: RcloneConfig,
    remote_dir: PathBuf,
    remote: String,
    at_day3: BTreeMap<String, String>,
}

/// Three daily backups of `<pool>/data` to a local rclone remote.
fn three_backups(src: &Pool<'_>) -> Backed {
    let data = src.create_dataset("data");
    let ds = src.dataset("data");
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("cloud");
    let remote_dir = root.join("data");
    let remote = format!("cloud:{}", remote_dir.display());
    let setup = Setup::with_remote(
        &ds,
        &remote,
        &format!(
            "rclone_config = {:?}\n",
            rclone.path().display().to_string()
        ),
    );
    write_random_file(&data.join("base.bin"), 200_000, 1);
    for (i, day) in DAYS.iter().enumerate() {
        std::fs::write(data.join("day.txt"), format!("day {i}\n")).unwrap();
        write_random_file(&data.join(format!("d{i}.bin")), 30_000, 10 + i as u64);
        run_ok(setup.cmd(day).arg("backup"));
    }
    let at_day3 = tree_digest(&data);
    Backed {
        setup,
        rclone,
        remote_dir,
        remote,
        at_day3,
    }
}

fn release(ds: &str, snap: &str) {
    let _ = Command::new("zfs")
        .args(["release", "zfs2cloud", &format!("{ds}@{snap}")])
        .output();
}

fn exists(dataset: &str) -> bool {
    Command::new("zfs")
        .args(["list", "-H", "-o", "name", dataset])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn last_chunk(dir: &Path) -> PathBuf {
    sorted_chunks(dir).pop().unwrap()
}

fn first_chunk(dir: &Path) -> PathBuf {
    sorted_chunks(dir).remove(0)
}

/// XORs the byte at `index(len)` of `chunk` with `mask`; returns the
/// chunk's file name, which the errors must show.
fn flip(chunk: &Path, index: impl FnOnce(usize) -> usize, mask: u8) -> String {
    let name = chunk.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = std::fs::read(chunk).unwrap();
    let at = index(bytes.len());
    bytes[at] ^= mask;
    std::fs::write(chunk, &bytes).unwrap();
    name
}

/// `restore --at` by point in time and by `latest` both get the day-3 state.
fn restores_at_a_point_and_at_latest(b: &Backed, dst: &Pool<'_>) {
    for (at, name) in [("20240103000000", "at3"), ("latest", "latest")] {
        let target = dst.dataset(name);
        let out = run_ok(
            b.setup
                .cmd(DAYS[2])
                .args(["restore", "--to", &target, "--at", at]),
        );
        assert!(
            text(&out).contains("20240101000000-full + 20240103000000"),
            "{}",
            text(&out)
        );
        assert_eq!(
            tree_digest(&dst.mountpoint(&target)),
            b.at_day3,
            "--at {at}"
        );
    }
}

/// Disaster recovery: no config file, only the remote and the passphrase.
/// Returns the restored dataset.
fn restores_without_any_config(b: &Backed, dst: &Pool<'_>) -> String {
    let target = dst.dataset("dr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zfs2cloud"));
    cmd.args(["restore", "--to", &target, "--from", &b.remote])
        .arg("--passphrase-file")
        .arg(&b.setup.passphrase_file)
        .arg("--rclone-config")
        .arg(b.rclone.path())
        .env("GNUPGHOME", &b.setup.gnupghome)
        .env_remove("ZFS2CLOUD_CONFIG")
        .current_dir("/");
    sanitize_env(&mut cmd);
    run_ok(&mut cmd);
    assert_eq!(tree_digest(&dst.mountpoint(&target)), b.at_day3);
    target
}

/// A target under a parent with `mountpoint=none` inherits it, so
/// `zfs mount` would fail: the restore succeeds and leaves it unmounted,
/// and every byte is there once it is given a mountpoint.
fn a_target_that_cannot_be_mounted_is_restored_unmounted(b: &Backed, dst: &Pool<'_>) {
    let parent = dst.dataset("nomount");
    run_ok(Command::new("zfs").args(["create", "-o", "mountpoint=none", &parent]));
    let target = format!("{parent}/data");
    let out = run_ok(b.setup.cmd(DAYS[2]).args(["restore", "--to", &target]));
    assert!(
        text(&out).contains(&format!("restored {target}")),
        "{}",
        text(&out)
    );
    assert_eq!(zfs_get("mounted", &target), "no");
    let dir = dst.scratch().join("nomount-data");
    let mountpoint = format!("mountpoint={}", dir.display());
    run_ok(Command::new("zfs").args(["set", &mountpoint, &target]));
    if zfs_get("mounted", &target) != "yes" {
        run_ok(Command::new("zfs").args(["mount", &target]));
    }
    assert_eq!(tree_digest(&dir), b.at_day3);
}

/// `status --json --remote` of this real state validates against the
/// documented schema, and the table shows the same chain.
fn status_of_the_real_state_matches_the_schema(b: &Backed) {
    let out = run_ok(b.setup.cmd(DAYS[2]).args(["status", "--json", "--remote"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/status.schema.json");
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{report:#}");
    assert_eq!(
        report["remote_backups"]["chains"][0]["incrementals"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(report["full_base"], "20240101000000");
    assert_eq!(report["last_backup"]["kind"], "incremental");
    let table = text(&run_ok(b.setup.cmd(DAYS[2]).args(["status", "--remote"])));
    // Both incrementals drawn under the full they are based on.
    for line in [
        "  20240101000000-full  full         0",
        "  ├─ 20240102000000    incremental  1",
        "  └─ 20240103000000    incremental  1",
    ] {
        assert!(table.contains(line), "{line:?} not in\n{table}");
    }
}

/// A wrong passphrase is reported as gpg's failure, and no target stays.
fn a_wrong_passphrase_fails_and_leaves_no_target(b: &Backed, dst: &Pool<'_>) {
    let wrong = b.setup.dir.path().join("wrong-passphrase");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let target = dst.dataset("wrongpass");
    let out = run_fail(
        b.setup
            .cmd(DAYS[2])
            .args(["restore", "--to", &target, "--passphrase-file"])
            .arg(&wrong),
    );
    assert!(
        text(&out).contains("gpg --decrypt of 20240101000000-full failed"),
        "{}",
        text(&out)
    );
    assert!(!exists(&target));
}

/// An `existing` target is refused without --force; --dry-run prints the
/// chain and the commands and receives nothing.
fn an_existing_target_is_refused_and_dry_run_receives_nothing(
    b: &Backed,
    dst: &Pool<'_>,
    existing: &str,
) {
    let out = run_fail(b.setup.cmd(DAYS[2]).args(["restore", "--to", existing]));
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    let out =
        run_ok(
            b.setup
                .cmd(DAYS[2])
                .args(["--dry-run", "restore", "--to", &dst.dataset("dry")]),
        );
    assert!(
        text(&out).contains("[dry-run] rclone cat"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("zfs recv"), "{}", text(&out));
    assert!(!exists(&dst.dataset("dry")));
}

/// `--force` over a target with snapshots (an earlier restore) is
/// refused before anything is downloaded, naming the cause, as
/// `zfs recv -F` would refuse it; over one without snapshots it replaces
/// the content.
fn force_overwrites_only_what_recv_f_accepts(b: &Backed, dst: &Pool<'_>, restored: &str) {
    let out = run_fail(
        b.setup
            .cmd(DAYS[2])
            .args(["restore", "--force", "--to", restored]),
    );
    let shown = text(&out);
    assert!(shown.contains("--force cannot overwrite"), "{shown}");
    assert!(shown.contains("snapshot(s)"), "{shown}");
    let dir = dst.create_dataset("plain");
    std::fs::write(dir.join("old.txt"), "replaced by the restore\n").unwrap();
    let plain = dst.dataset("plain");
    run_ok(
        b.setup
            .cmd(DAYS[2])
            .args(["restore", "--force", "--to", &plain]),
    );
    assert_eq!(tree_digest(&dst.mountpoint(&plain)), b.at_day3);
}

#[test]
fn restore_at_a_point_and_at_latest_and_without_any_config() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let src = zfs.pool("rs");
    let dst = zfs.pool("rd");
    let b = three_backups(&src);

    restores_at_a_point_and_at_latest(&b, &dst);
    a_target_that_cannot_be_mounted_is_restored_unmounted(&b, &dst);
    let recovered = restores_without_any_config(&b, &dst);
    status_of_the_real_state_matches_the_schema(&b);
    a_wrong_passphrase_fails_and_leaves_no_target(&b, &dst);
    // The disaster-recovery target is the one that already exists.
    an_existing_target_is_refused_and_dry_run_receives_nothing(&b, &dst, &recovered);
    force_overwrites_only_what_recv_f_accepts(&b, &dst, &recovered);
    release(&src.dataset("data"), "20240101000000");
}

/// Both verify depths find the three intact backups OK, and the deep one
/// leaves no scratch dataset behind.
fn verify_finds_three_ok_and_leaves_nothing(b: &Backed, src: &Pool<'_>) {
    let out = run_ok(b.setup.cmd(DAYS[2]).arg("verify"));
    assert_eq!(text(&out).matches("OK ").count(), 3, "{}", text(&out));
    let out = run_ok(b.setup.cmd(DAYS[2]).args(["verify", "--deep"]));
    assert_eq!(text(&out).matches("OK ").count(), 3, "{}", text(&out));
    let leftovers =
        run_ok(Command::new("zfs").args(["list", "-H", "-o", "name", "-r", src.name()]));
    assert!(!String::from_utf8_lossy(&leftovers.stdout).contains("zfs2cloud-verify"));
}

/// Shallow and deep verify both report the day-3 backup DAMAGED and name
/// `chunk_name`.
fn verify_names_the_damaged_chunk(b: &Backed, chunk_name: &str) {
    let out = run_fail(b.setup.cmd(DAYS[2]).arg("verify"));
    let shown = text(&out);
    assert!(shown.contains("DAMAGED     20240103000000"), "{shown}");
    assert!(shown.contains(chunk_name), "the chunk is named: {shown}");
    let out =
        run_fail(
            b.setup
                .cmd(DAYS[2])
                .args(["verify", "--deep", "--snapshot", "20240103000000"]),
        );
    assert!(text(&out).contains(chunk_name), "{}", text(&out));
}

/// A restore `--at` into `dst/<name>` fails naming `chunk_name`, and
/// nothing of the target is left.
fn restore_stops_at_the_damaged_chunk(
    b: &Backed,
    dst: &Pool<'_>,
    name: &str,
    at: &str,
    chunk_name: &str,
) {
    let target = dst.dataset(name);
    let out = run_fail(
        b.setup
            .cmd(DAYS[2])
            .args(["restore", "--to", &target, "--at", at]),
    );
    let shown = text(&out);
    assert!(shown.contains(&format!("chunk {chunk_name}")), "{shown}");
    assert!(!exists(&target), "a half-received target was left behind");
}

/// A deleted chunk and a deleted manifest are INCOMPLETE; a corrupt
/// manifest is DAMAGED, never treated as a manifest-less backup.
fn missing_parts_are_incomplete_and_a_corrupt_manifest_is_damaged(b: &Backed) {
    std::fs::remove_file(first_chunk(&b.remote_dir.join("20240102000000"))).unwrap();
    std::fs::remove_file(b.remote_dir.join("20240101000000-full/manifest.json")).unwrap();
    std::fs::write(
        b.remote_dir.join("20240103000000/manifest.json"),
        b"{ not json",
    )
    .unwrap();
    let out = run_fail(b.setup.cmd(DAYS[2]).arg("verify"));
    let shown = text(&out);
    assert!(
        shown.contains("DAMAGED     20240103000000: manifest.json is unreadable"),
        "{shown}"
    );
    assert!(
        shown.contains("INCOMPLETE  20240102000000: missing chunk"),
        "{shown}"
    );
    assert!(
        shown.contains("INCOMPLETE  20240101000000-full: manifest.json is missing"),
        "{shown}"
    );
}

#[test]
fn a_flipped_byte_is_found_by_verify_and_stops_restore_and_a_missing_chunk_is_incomplete() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let src = zfs.pool("vs");
    let dst = zfs.pool("vd");
    let b = three_backups(&src);
    verify_finds_three_ok_and_leaves_nothing(&b, &src);

    // Flip one byte in the first chunk of the day-3 incremental.
    let chunk = first_chunk(&b.remote_dir.join("20240103000000"));
    let chunk_name = flip(&chunk, |_| 100, 0x01);
    verify_names_the_damaged_chunk(&b, &chunk_name);
    restore_stops_at_the_damaged_chunk(&b, &dst, "damaged", "20240103000000", &chunk_name);

    // A dry run cannot prove anything deep, so it refuses instead of saying OK.
    let out = run_fail(b.setup.cmd(DAYS[2]).args(["--dry-run", "verify", "--deep"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Damage in the LAST chunk of a backup: its final bytes are held back
    // until the chunk is proven, so zfs recv never sees the stream's end.
    let last = last_chunk(&b.remote_dir.join("20240102000000"));
    let last_name = flip(&last, |len| len - 1, 0x01);
    restore_stops_at_the_damaged_chunk(&b, &dst, "damagedlast", "20240102000000", &last_name);

    // The same for a damaged full: nothing is left of the target.
    let full_chunk = first_chunk(&b.remote_dir.join("20240101000000-full"));
    let full_chunk_name = flip(&full_chunk, |_| 200, 0x80);
    restore_stops_at_the_damaged_chunk(&b, &dst, "damagedfull", "20240101000000", &full_chunk_name);

    missing_parts_are_incomplete_and_a_corrupt_manifest_is_damaged(&b);
    release(&src.dataset("data"), "20240101000000");
}

#[test]
fn a_backup_made_by_the_original_tool_is_restored() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let src = zfs.pool("ls");
    let dst = zfs.pool("ld");
    let data = src.create_dataset("app");
    let ds = src.dataset("app");
    write_random_file(&data.join("db.bin"), 300_000, 3);
    std::fs::write(data.join("conf"), "x=1\n").unwrap();
    run_ok(Command::new("zfs").args(["snapshot", &format!("{ds}@20240101000000")]));
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("cloud");
    let setup = Setup::new(&ds, "");
    // The original's pipeline, with split(1) and no manifest.
    let dir = root.join("20240101000000-full");
    std::fs::create_dir_all(&dir).unwrap();
    run_pipeline(&format!(
        "zfs send {ds}@20240101000000 | GNUPGHOME='{}' gpg -c --batch --cipher-algo AES256 --passphrase-file '{}' \
         | split -b 64K --numeric-suffixes --suffix-length=4 - '{}/{}@20240101000000.zfs.gpg.'",
        setup.gnupghome.display(),
        setup.passphrase_file.display(),
        dir.display(),
        ds.replace('/', "-"),
    ));
    let target = dst.dataset("restored");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zfs2cloud"));
    cmd.args(["restore", "--to", &target, "--from"])
        .arg(format!("cloud:{}", root.display()))
        .arg("--passphrase-file")
        .arg(&setup.passphrase_file)
        .arg("--rclone-config")
        .arg(rclone.path())
        .env("GNUPGHOME", &setup.gnupghome)
        .env_remove("ZFS2CLOUD_CONFIG");
    sanitize_env(&mut cmd);
    let out = run_ok(&mut cmd);
    assert!(
        text(&out).contains("no manifest"),
        "the missing checks are said: {}",
        text(&out)
    );
    assert_eq!(tree_digest(&dst.mountpoint(&target)), tree_digest(&data));
    assert_eq!(
        zfs_get("type", &format!("{target}@20240101000000")),
        "snapshot"
    );
}
