//! One owner per remote directory, on real zfs-fuse, gpg and rclone with a
//! local remote: two configs for two datasets pointed at one directory
//! (issue 13). The second upload is refused and changes nothing there; a
//! restore or verify of one dataset never takes another's backup; a
//! directory without the owner marker gets one on the next upload if its
//! manifests agree; a restore without config learns the dataset from the
//! marker; file mode never syncs over another dataset's files or over
//! intermediate-mode backups.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{text, Setup};
use zfs2cloud_testkit::harness::{
    run_fail, run_ok, tree_digest, write_random_file, Pool, ZfsSession,
};
use zfs2cloud_testkit::remote::{sanitize_env, RcloneConfig};

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";
const DAY3: &str = "2024-01-03T00:00:00Z";
const MARKER: &str = "zfs2cloud-owner.json";
const HEARTBEAT: &str = "__zfs2cloud_last_updated__";

/// A local rclone remote `cloud:` and the datasets of one pool.
struct World<'p> {
    pool: &'p Pool<'p>,
    rclone: RcloneConfig,
    root: PathBuf,
}

impl<'p> World<'p> {
    fn new(pool: &'p Pool<'p>) -> Self {
        let rclone = RcloneConfig::new();
        let root = rclone.add_local("cloud");
        Self { pool, rclone, root }
    }

    /// Creates `<pool>/<name>` holding a little data of its own (`seed`)
    /// and returns its mountpoint.
    fn dataset(&self, name: &str, seed: u64) -> PathBuf {
        let dir = self.pool.create_dataset(name);
        write_random_file(&dir.join(format!("{name}.bin")), 150_000, seed);
        std::fs::write(dir.join("whose.txt"), format!("{name}\n")).unwrap();
        dir
    }

    /// A config backing `<pool>/<name>` up to `cloud:<root>/<dir>`, with
    /// `extra` TOML.
    fn config(&self, name: &str, dir: &str, extra: &str) -> Setup {
        Setup::with_remote(
            &self.pool.dataset(name),
            &self.remote(dir),
            &format!(
                "rclone_config = {:?}\n{extra}",
                self.rclone.path().display().to_string()
            ),
        )
    }

    fn remote(&self, dir: &str) -> String {
        format!("cloud:{}", self.root.join(dir).display())
    }

    /// Every file and directory under the remote directory `dir`, with
    /// the files' hashes.
    fn tree(&self, dir: &str) -> BTreeMap<String, String> {
        tree_digest(&self.root.join(dir))
    }

    fn marker(&self, dir: &str) -> serde_json::Value {
        let bytes = std::fs::read(self.root.join(dir).join(MARKER)).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }
}

/// `zfs get -Hp -o value guid <dataset>`.
fn guid(dataset: &str) -> String {
    let out = run_ok(Command::new("zfs").args(["get", "-Hp", "-o", "value", "guid", dataset]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Checks the marker written to the remote against `docs/owner.schema.json`.
fn assert_marker_matches_the_schema(marker: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/owner.schema.json");
    let schema = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(marker)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{marker:#}");
}

/// A failed run whose error names both datasets and the fix.
fn assert_refused(out: &Output, dataset: &str, owner: &str, remote: &str) {
    let t = text(out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "refusing to upload {dataset} to {remote}: that directory"
        )),
        "{t}"
    );
    assert!(t.contains(owner), "{t}");
    assert!(
        t.contains(&format!(
            "point `remote` in the config of {dataset} at a directory of its own"
        )),
        "{t}"
    );
}

#[test]
fn a_second_dataset_is_refused_from_anothers_directory_and_nothing_there_changes() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let pool = zfs.pool("oa");
    let w = World::new(&pool);
    w.dataset("a", 1);
    w.dataset("b", 2);
    let (a, b) = (pool.dataset("a"), pool.dataset("b"));
    let config_a = w.config("a", "shared", "");
    run_ok(config_a.cmd(DAY1).arg("backup"));
    let marker = w.marker("shared");
    assert_eq!(marker["dataset"], a.as_str());
    assert_eq!(marker["guid"], guid(&a).as_str());
    assert_marker_matches_the_schema(&marker);
    let before = w.tree("shared");

    // Snapshotted in the same second as a: the same directory name, which
    // used to get b's manifest over a's.
    let config_b = w.config("b", "shared", "");
    let out = run_fail(config_b.cmd(DAY1).arg("backup"));
    assert_refused(&out, &b, &format!("belongs to {a}"), &w.remote("shared"));
    assert_eq!(w.tree("shared"), before);
    // Its export stays local, and `upload` alone is refused the same way.
    assert_eq!(config_b.complete_exports(), ["20240101000000-full"]);
    let out = run_fail(config_b.cmd(DAY1).arg("upload"));
    assert_refused(&out, &b, &format!("belongs to {a}"), &w.remote("shared"));
    assert_eq!(w.tree("shared"), before);

    // Uploading while exporting: refused before zfs send even starts.
    let pipelined = w.config(
        "b",
        "shared",
        "upload_while_exporting = true\nkeep_local_export = false\n",
    );
    let out = run_fail(pipelined.cmd(DAY2).arg("backup"));
    assert_refused(&out, &b, &format!("belongs to {a}"), &w.remote("shared"));
    assert!(text(&out).contains("step export failed"), "{}", text(&out));
    assert_eq!(w.tree("shared"), before);
    assert_eq!(pipelined.complete_exports(), Vec::<String>::new());

    // a itself goes on as before.
    run_ok(config_a.cmd(DAY2).arg("backup"));
    assert!(w.root.join("shared/20240102000000").is_dir());
    assert_eq!(w.marker("shared"), marker, "the marker is never rewritten");
}

/// b's newest backup, put into a's directory as an older version, which
/// checked no owner, would have put it: by hand, a copy of the backup
/// directory b's own run made.
fn put_a_backup_of_b_into_as_directory(w: &World<'_>) -> BTreeMap<String, String> {
    w.dataset("b", 2);
    let config_b = w.config("b", "b-own", "");
    run_ok(config_b.cmd(DAY2).arg("backup"));
    let from = w.root.join("b-own/20240102000000-full");
    let to = w.root.join("shared/20240102000000-full");
    run_ok(Command::new("cp").arg("-a").arg(&from).arg(&to));
    tree_digest(&w.pool.mountpoint(&w.pool.dataset("b")))
}

fn restore_without_config(w: &World<'_>, setup: &Setup, target: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zfs2cloud"));
    cmd.args(["restore", "--to", target, "--from", &w.remote("shared")])
        .arg("--passphrase-file")
        .arg(&setup.passphrase_file)
        .arg("--rclone-config")
        .arg(w.rclone.path())
        .env("GNUPGHOME", &setup.gnupghome)
        .env_remove("ZFS2CLOUD_CONFIG")
        .current_dir("/");
    sanitize_env(&mut cmd);
    run_ok(&mut cmd)
}

#[test]
fn a_restore_of_one_dataset_never_restores_another_from_the_same_directory() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let pool = zfs.pool("or");
    let w = World::new(&pool);
    let a_dir = w.dataset("a", 1);
    let a = pool.dataset("a");
    let config_a = w.config("a", "shared", "");
    run_ok(config_a.cmd(DAY1).arg("backup"));
    let a_state = tree_digest(&a_dir);
    let b_state = put_a_backup_of_b_into_as_directory(&w);
    assert_ne!(a_state, b_state);
    let skipped = format!(
        "skipping {}/20240102000000-full: it is a backup of {}, not of {a}",
        w.remote("shared"),
        pool.dataset("b")
    );

    // The newest backup in the directory is b's; latest of a is a's.
    let target = pool.dataset("ra");
    let out = run_ok(config_a.cmd(DAY3).args(["restore", "--to", &target]));
    assert!(
        text(&out).contains(&format!("restoring latest of {a} into {target}")),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains(&skipped), "{}", text(&out));
    assert_eq!(tree_digest(&pool.mountpoint(&target)), a_state);

    // Asked for b's snapshot by name, a's restore finds no such backup.
    let target = pool.dataset("rb");
    let out =
        run_fail(
            config_a
                .cmd(DAY3)
                .args(["restore", "--to", &target, "--at", "20240102000000"]),
        );
    assert!(
        text(&out).contains(&format!(
            "restore of {a}: no backup 20240102000000 on the remote"
        )),
        "{}",
        text(&out)
    );
    assert!(!zfs2cloud_exists(&target));

    // verify checks a's backup only, and says which it skipped.
    let out = run_ok(config_a.cmd(DAY3).arg("verify"));
    assert_eq!(text(&out).matches("OK ").count(), 1, "{}", text(&out));
    assert!(
        text(&out).contains("OK          20240101000000-full"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains(&skipped), "{}", text(&out));

    // Without a config, the marker says whose backups these are.
    let target = pool.dataset("dr");
    let out = restore_without_config(&w, &config_a, &target);
    assert!(
        text(&out).contains(&format!("restoring latest of {a} into {target}")),
        "{}",
        text(&out)
    );
    assert_eq!(tree_digest(&pool.mountpoint(&target)), a_state);
}

fn zfs2cloud_exists(dataset: &str) -> bool {
    Command::new("zfs")
        .args(["list", "-H", "-o", "name", dataset])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_directory_without_marker_gets_one_on_the_next_upload_if_its_manifests_agree() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let pool = zfs.pool("om");
    let w = World::new(&pool);
    w.dataset("a", 1);
    w.dataset("b", 2);
    let (a, b) = (pool.dataset("a"), pool.dataset("b"));

    // Directories as an older version left them: backups, no marker.
    let config_a = w.config("a", "a-old", "");
    run_ok(config_a.cmd(DAY1).arg("backup"));
    let config_b = w.config("b", "b-old", "");
    run_ok(config_b.cmd(DAY1).arg("backup"));
    for dir in ["a-old", "b-old"] {
        std::fs::remove_file(w.root.join(dir).join(MARKER)).unwrap();
    }

    // Its own manifests agree: the next upload claims the directory.
    run_ok(config_a.cmd(DAY2).arg("backup"));
    let marker = w.marker("a-old");
    assert_eq!(marker["dataset"], a.as_str());
    assert_eq!(marker["guid"], guid(&a).as_str());
    assert_eq!(marker["written_at"], "2024-01-02T00:00:00Z");
    assert!(w.root.join("a-old/20240102000000").is_dir());

    // b's manifests do not: a is refused there, and nothing changes.
    let before = w.tree("b-old");
    let into_b = w.config("a", "b-old", "");
    let out = run_fail(into_b.cmd(DAY3).arg("backup"));
    assert_refused(
        &out,
        &a,
        &format!("has no {MARKER} and holds backups of {b} (20240101000000-full)"),
        &w.remote("b-old"),
    );
    assert_eq!(w.tree("b-old"), before);
}

/// File mode (the config already names the rclone config).
const FILE_MODE: &str = "mode = \"file\"\nmount_strategy = \"auto\"\n";

/// A failed file-mode run whose error names the dataset, what a sync
/// would delete and the fix, and which left no exposure behind.
fn assert_sync_refused(out: &Output, dataset: &str, remote: &str, says: &str) {
    let t = text(out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "refusing to sync {dataset} to {remote}: that directory {says}"
        )),
        "{t}"
    );
    assert!(t.contains("which rclone sync would delete"), "{t}");
    let names = run_ok(Command::new("zfs").args(["list", "-H", "-o", "name"]));
    let names = String::from_utf8_lossy(&names.stdout).into_owned();
    assert!(!names.contains(".zfs2cloud-"), "a clone is left:\n{names}");
}

#[test]
fn file_mode_into_another_datasets_directory_is_refused_and_deletes_nothing() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let pool = zfs.pool("of");
    let w = World::new(&pool);
    w.dataset("a", 1);
    let c_dir = w.dataset("c", 3);
    w.dataset("d", 4);
    let (a, c, d) = (pool.dataset("a"), pool.dataset("c"), pool.dataset("d"));
    let config_c = w.config("c", "c-files", FILE_MODE);
    run_ok(config_c.cmd(DAY1).arg("backup"));
    let mut synced = w.tree("c-files");
    synced.remove(HEARTBEAT);
    assert_eq!(synced, tree_digest(&c_dir));
    let before = w.tree("c-files");

    // d's sync would delete c's files.
    let config_d = w.config("d", "c-files", FILE_MODE);
    let out = run_fail(config_d.cmd(DAY1).arg("backup"));
    assert_sync_refused(
        &out,
        &d,
        &w.remote("c-files"),
        &format!("holds the files of another dataset (its {HEARTBEAT} names {c}@20240101000000)"),
    );
    assert_eq!(w.tree("c-files"), before);

    // Nor over intermediate-mode backups.
    run_ok(w.config("a", "a-backups", "").cmd(DAY1).arg("backup"));
    let before = w.tree("a-backups");
    let into_a = w.config("c", "a-backups", FILE_MODE);
    let out = run_fail(into_a.cmd(DAY2).arg("backup"));
    assert_sync_refused(
        &out,
        &c,
        &w.remote("a-backups"),
        &format!("holds intermediate-mode backups of {a}"),
    );
    assert_eq!(w.tree("a-backups"), before);

    // c itself syncs on (the refused run took c's DAY2 snapshot).
    run_ok(config_c.cmd(DAY3).arg("backup"));
}
