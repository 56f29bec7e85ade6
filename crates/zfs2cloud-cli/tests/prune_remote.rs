//! `zfs2cloud prune-remote` on the fakes: the plan it prints, `-y`
//! deleting exactly that, what is no backup left alone, and a prune that
//! fails or is killed at any delete leaving every complete backup
//! restorable, with a rerun finishing the job.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{text, with_fakes, Setup};
use sha2::{Digest, Sha256};
use zfs2cloud_testkit::fake::{FakeRclone, FakeZfs, FaultAction, FaultRule};
use zfs2cloud_testkit::harness::{run_fail, run_ok};

const REMOTE: &str = "cloud:backups/data";
/// Two hours after the newest backup, a month after the oldest.
const NOW: &str = "2024-02-03T12:00:00Z";
const RETENTION: &str = "[retention.remote]\nkeep_monthly = 2\nkeep_chains = 1\n";

/// What the remote holds: (directory, base; `None` for a full, `-` for a
/// backup without manifest (with `SHA256SUMS` or, `-chunks`, only its
/// chunk).
const HISTORY: &[(&str, Option<&str>)] = &[
    ("20231201000000-full", None),
    ("20231202000000", Some("20231201000000")),
    ("20231203000000", Some("20231202000000")),
    ("20240101000000-full", None),
    ("20240102000000", Some("20240101000000")),
    ("20240103000000", Some("20240102000000")),
    ("20240104000000", Some("20240103000000")),
    ("20240110000000", Some("20240102000000")),
    // Its base is gone.
    ("20240115000000", Some("20240114000000")),
    // An interrupted upload: chunks and SHA256SUMS, no manifest.
    ("20240120000000", Some("-")),
    ("20240201000000-full", None),
    ("20240202000000", Some("20240201000000")),
    ("20240203000000", Some("20240202000000")),
    // An upload in progress: a chunk so far.
    ("20240203100000", Some("-chunks")),
];

/// What `keep_monthly = 2, keep_chains = 1` keeps of [`HISTORY`]: January's
/// newest complete backup with its chain (skipping 0103 and 0104, which
/// 0110 does not need), February's chain, and the upload in progress.
const KEPT: &[&str] = &[
    "20240101000000-full",
    "20240102000000",
    "20240110000000",
    "20240201000000-full",
    "20240202000000",
    "20240203000000",
    "20240203100000",
];

/// The rest, in the order they go: newest first.
const DELETED: &[&str] = &[
    "20240120000000",
    "20240115000000",
    "20240104000000",
    "20240103000000",
    "20231203000000",
    "20231202000000",
    "20231201000000-full",
];

/// The files [`DELETED`] holds: `rclone deletefile` calls of a prune.
const DELETES: u32 = 2 + 6 * 3;

/// What is there beside the backups, and must stay as it is.
const FOREIGN: &[&str] = &[
    "20240105000000/tank-other@20240105000000.zfs.gpg.0000",
    "child/20240101000000-full/tank-data-child@20240101000000.zfs.gpg.0000",
    "child/zfs2cloud-owner.json",
    "notes.txt",
    "zfs2cloud-owner.json",
];

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Puts backup `dir` of tank/data based on `base` into `root`, as an
/// upload leaves it.
fn put_backup(root: &Path, dir: &str, base: Option<&str>) {
    put_backup_of("tank/data", root, dir, base);
}

/// [`put_backup`] of `dataset`.
fn put_backup_of(dataset: &str, root: &Path, dir: &str, base: Option<&str>) {
    let snapshot = dir.trim_end_matches("-full");
    let chunk = format!("{}@{snapshot}.zfs.gpg.0000", dataset.replace('/', "-"));
    let bytes = format!("the stream of {dir} ").repeat(50).into_bytes();
    write(&root.join(dir).join(&chunk), &bytes);
    if base == Some("-chunks") {
        return;
    }
    let sums = format!("{}  {chunk}\n", sha256(&bytes));
    write(&root.join(dir).join("SHA256SUMS"), sums.as_bytes());
    if base == Some("-") {
        return;
    }
    let kind = if base.is_some() {
        "incremental"
    } else {
        "full"
    };
    let manifest = serde_json::json!({
        "format": 1, "tool": "zfs2cloud", "tool_version": "0.1.0",
        "dataset": dataset, "snapshot": snapshot, "kind": kind, "base": base,
        "created_at": "2024-01-01T00:00:00Z", "encryption": "gpg-symmetric-aes256",
        "compression": "none", "split_size": 65536, "total_size": bytes.len(),
        "chunks": [{"name": chunk, "size": bytes.len(), "sha256": sha256(&bytes)}],
    });
    write(
        &root.join(dir).join("manifest.json"),
        &serde_json::to_vec(&manifest).unwrap(),
    );
}

/// A fake remote holding [`HISTORY`] and [`FOREIGN`], claimed by tank/data
/// before the first backup.
fn seeded() -> (FakeZfs, FakeRclone) {
    let zfs = FakeZfs::new();
    zfs.add_dataset("tank/data");
    let rclone = FakeRclone::new();
    let root = rclone.path(REMOTE);
    for (dir, base) in HISTORY {
        put_backup(&root, dir, *base);
    }
    write(
        &root.join("zfs2cloud-owner.json"),
        marker("tank/data").as_bytes(),
    );
    write(&root.join("notes.txt"), b"the restore key is in the safe");
    write(&root.join(FOREIGN[0]), b"not ours");
    write(&root.join(FOREIGN[1]), b"a child's backup");
    write(&root.join(FOREIGN[2]), marker("tank/data/child").as_bytes());
    (zfs, rclone)
}

/// The owner marker of `dataset`, written before the first backup.
fn marker(dataset: &str) -> String {
    format!(
        r#"{{"format": 1, "tool": "zfs2cloud", "dataset": "{dataset}", "guid": null,
            "written_at": "2023-11-30T00:00:00Z", "tool_version": "0.1.0"}}"#
    )
}

/// Every file under the remote with its SHA-256.
fn contents(rclone: &FakeRclone) -> BTreeMap<String, String> {
    let root = rclone.path(REMOTE);
    rclone
        .files(REMOTE)
        .into_iter()
        .map(|f| {
            let digest = sha256(&std::fs::read(root.join(&f)).unwrap());
            (f, digest)
        })
        .collect()
}

/// The directories directly under the remote.
fn dirs(rclone: &FakeRclone) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(rclone.path(REMOTE))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The size of the files in the [`DELETED`] directories.
fn deleted_bytes(before: &BTreeMap<String, String>, rclone: &FakeRclone) -> u64 {
    let root = rclone.path(REMOTE);
    before
        .keys()
        .filter(|f| DELETED.iter().any(|d| f.starts_with(&format!("{d}/"))))
        .map(|f| std::fs::metadata(root.join(f)).unwrap().len())
        .sum()
}

/// What must be left after a prune: the kept backups and the foreign
/// objects, byte for byte as they were.
fn after_the_prune(before: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    before
        .iter()
        .filter(|(f, _)| !DELETED.iter().any(|d| f.starts_with(&format!("{d}/"))))
        .map(|(f, d)| (f.clone(), d.clone()))
        .collect()
}

fn prune(setup: &Setup, zfs: &FakeZfs, rclone: &FakeRclone, args: &[&str]) -> Command {
    let mut cmd = setup.cmd(NOW);
    cmd.args(args);
    with_fakes(&mut cmd, zfs, rclone);
    cmd
}

fn setup() -> Setup {
    Setup::with_remote("tank/data", REMOTE, RETENTION)
}

#[test]
fn without_y_the_plan_is_printed_and_nothing_is_deleted() {
    let (zfs, rclone) = seeded();
    let setup = setup();
    let before = contents(&rclone);
    let out = run_ok(&mut prune(&setup, &zfs, &rclone, &["prune-remote"]));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |dir: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(dir))
            .unwrap_or_else(|| panic!("no line for {dir}:\n{stdout}"))
            .to_owned()
    };
    for dir in KEPT {
        assert!(line(dir).trim_start().starts_with("keep "), "{stdout}");
    }
    for dir in DELETED {
        assert!(line(dir).trim_start().starts_with("delete "), "{stdout}");
    }
    let reasons = [
        ("20240102000000", "base of 20240110000000"),
        ("20240110000000", "monthly 2024-01"),
        ("20240203000000", "the newest complete backup"),
        (
            "20240202000000",
            "in the newest chain (20240201000000-full)",
        ),
        ("20240203100000", "maybe an upload in progress"),
        ("20240115000000", "orphan: its restore needs 20240114000000"),
        ("20240120000000", "an interrupted upload"),
        ("20240104000000", "no keep rule applies"),
    ];
    for (dir, reason) in reasons {
        assert!(line(dir).contains(reason), "{dir}: {}", line(dir));
    }
    for left in [
        "left alone  notes.txt  (a file, not a backup)",
        "left alone  child/",
        "left alone  20240105000000/  (a backup of tank-other (from its chunk names), not of tank/data)",
        "left alone  zfs2cloud-owner.json  (the owner marker)",
    ] {
        assert!(stdout.contains(left), "{left}:\n{stdout}");
    }
    let freed = format!(
        "({} bytes) in 7 backup(s); 7 kept",
        deleted_bytes(&before, &rclone)
    );
    assert!(stdout.contains(&freed), "{freed}:\n{stdout}");
    assert!(stdout.contains("pass -y to delete"), "{stdout}");
    assert_eq!(contents(&rclone), before);
    assert!(rclone.invocations_of("deletefile").is_empty());

    // --dry-run -y only prints too.
    run_ok(&mut prune(
        &setup,
        &zfs,
        &rclone,
        &["--dry-run", "prune-remote", "-y"],
    ));
    assert_eq!(contents(&rclone), before);
    assert!(rclone.invocations_of("deletefile").is_empty());
}

#[test]
fn y_deletes_exactly_the_plan_and_leaves_everything_else_alone() {
    let (zfs, rclone) = seeded();
    let setup = setup();
    let before = contents(&rclone);
    let bytes = deleted_bytes(&before, &rclone);
    let out = run_ok(&mut prune(&setup, &zfs, &rclone, &["prune-remote", "-y"]));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let total = stdout.lines().last().unwrap();
    assert!(
        total.starts_with("freed ") && total.contains(&format!("({bytes} bytes) in 7 backup(s)")),
        "{stdout}"
    );
    for dir in DELETED {
        assert!(
            stdout.contains(&format!("  deleted  {dir} ")),
            "{dir}: {stdout}"
        );
    }
    assert_eq!(contents(&rclone), after_the_prune(&before));
    let mut expected: Vec<String> = KEPT.iter().map(|d| (*d).to_owned()).collect();
    expected.extend(["20240105000000".into(), "child".into()]);
    expected.sort();
    assert_eq!(dirs(&rclone), expected, "deleted directories are removed");
    // Each directory's files newest first, the manifest first in each.
    let deletes: Vec<String> = rclone
        .invocations_of("deletefile")
        .iter()
        .map(|i| i.args.last().unwrap().replace(&format!("{REMOTE}/"), ""))
        .collect();
    assert_eq!(deletes.len(), DELETES as usize);
    let order: Vec<&str> =
        deletes
            .iter()
            .map(|d| d.split('/').next().unwrap())
            .fold(Vec::new(), |mut v, d| {
                if v.last() != Some(&d) {
                    v.push(d);
                }
                v
            });
    assert_eq!(order, DELETED);
    assert_eq!(deletes[2], "20240115000000/manifest.json");
    assert_eq!(deletes[4], "20240115000000/SHA256SUMS");

    // Nothing is left to do.
    let out = run_ok(&mut prune(&setup, &zfs, &rclone, &["prune-remote", "-y"]));
    assert!(
        text(&out).contains("freed 0 B (0 bytes) in 0 backup(s)"),
        "{}",
        text(&out)
    );
}

#[test]
fn without_retention_remote_prune_remote_refuses() {
    let (zfs, rclone) = seeded();
    let setup = Setup::with_remote("tank/data", REMOTE, "");
    let out = run_fail(&mut prune(&setup, &zfs, &rclone, &["prune-remote", "-y"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("remote pruning is off for tank/data: there is no [retention.remote]"),
        "{}",
        text(&out)
    );
    assert!(
        rclone.invocations().is_empty(),
        "the remote was not even listed"
    );
}

#[test]
fn a_recursive_job_prunes_each_member_in_its_own_directory() {
    let zfs = FakeZfs::new();
    for d in ["tank/home", "tank/home/a"] {
        zfs.add_dataset(d);
    }
    let rclone = FakeRclone::new();
    let remote = "cloud:backups/home";
    for (dataset, dir) in [
        ("tank/home", remote.to_owned()),
        ("tank/home/a", format!("{remote}/a")),
    ] {
        let root = rclone.path(&dir);
        put_backup_of(dataset, &root, "20240101000000-full", None);
        put_backup_of(dataset, &root, "20240201000000-full", None);
        put_backup_of(dataset, &root, "20240202000000", Some("20240201000000"));
        write(
            &root.join("zfs2cloud-owner.json"),
            marker(dataset).as_bytes(),
        );
    }
    let setup = Setup::with_remote(
        "tank/home",
        remote,
        "recursive = true\n[retention.remote]\nkeep_chains = 1\n",
    );
    let mut cmd = setup.cmd(NOW);
    cmd.args(["prune-remote", "-y"]);
    with_fakes(&mut cmd, &zfs, &rclone);
    let out = run_ok(&mut cmd);
    let t = text(&out);
    assert!(
        t.contains("-- tank/home --") && t.contains("-- tank/home/a --"),
        "{t}"
    );
    assert!(
        t.contains("left alone  a/"),
        "the child's directory, from the parent: {t}"
    );
    for dir in [remote.to_owned(), format!("{remote}/a")] {
        let files = rclone.files(&dir);
        assert!(
            files.iter().all(|f| !f.starts_with("20240101000000-full/")),
            "{dir}: {files:?}"
        );
        assert!(
            files.contains(&"20240202000000/manifest.json".to_owned()),
            "{files:?}"
        );
    }
    assert!(rclone
        .files(remote)
        .contains(&"a/20240202000000/manifest.json".to_owned()));
}

#[test]
fn prune_remote_is_a_step_of_backup_when_steps_name_it() {
    let (zfs, rclone) = seeded();
    let setup = Setup::with_remote(
        "tank/data",
        REMOTE,
        &format!("steps = [\"lock\", \"prune-remote\", \"unlock\"]\n{RETENTION}"),
    );
    let before = contents(&rclone);
    let mut cmd = setup.cmd(NOW);
    cmd.arg("backup");
    with_fakes(&mut cmd, &zfs, &rclone);
    let out = run_ok(&mut cmd);
    assert!(
        text(&out).contains("deleted 7 of 14 backup(s)"),
        "{}",
        text(&out)
    );
    assert_eq!(contents(&rclone), after_the_prune(&before));
}

/// The manifest of backup `dir`, if it is there and parses.
fn manifest(root: &Path, dir: &str) -> Option<serde_json::Value> {
    let bytes = std::fs::read(root.join(dir).join("manifest.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether backup `dir` has its manifest and every chunk it names, with
/// its size.
fn complete(root: &Path, dir: &str) -> bool {
    let Some(m) = manifest(root, dir) else {
        return false;
    };
    m["chunks"].as_array().unwrap().iter().all(|c| {
        let path = root.join(dir).join(c["name"].as_str().unwrap());
        std::fs::metadata(path).is_ok_and(|f| Some(f.len()) == c["size"].as_u64())
    })
}

/// Whether backup `dir` can be restored from the listing alone: it is
/// complete, and so is (recursively) a backup of its base snapshot.
fn restorable(root: &Path, dir: &str) -> bool {
    if !complete(root, dir) {
        return false;
    }
    let Some(base) = manifest(root, dir).unwrap()["base"]
        .as_str()
        .map(str::to_owned)
    else {
        return true;
    };
    [base.clone(), format!("{base}-full")]
        .iter()
        .any(|d| restorable(root, d))
}

/// After an interrupted prune: no backup looks complete with a chunk
/// missing, every backup that could be restored before still can if it
/// still looks complete, and what the plan keeps is untouched.
fn check_interrupted(rclone: &FakeRclone, before: &BTreeMap<String, String>, case: &str) {
    let root = rclone.path(REMOTE);
    for dir in dirs(rclone) {
        if manifest(&root, &dir).is_some() {
            assert!(
                complete(&root, &dir),
                "{case}: {dir} looks complete but is not"
            );
            if dir != "20240115000000" {
                assert!(restorable(&root, &dir), "{case}: {dir} lost its chain");
            }
        }
    }
    let now = contents(rclone);
    for (file, digest) in after_the_prune(before) {
        assert_eq!(now.get(&file), Some(&digest), "{case}: {file} was touched");
    }
}

/// Runs `prune-remote -y` with the fake stuck (hanging) in its delete
/// number `n` (from 0), and kills zfs2cloud there.
fn kill_at(setup: &Setup, zfs: &FakeZfs, rclone: &FakeRclone, n: u32) {
    rclone.inject_rule(FaultRule::new("deletefile", FaultAction::Hang, Some(1)).after(n));
    let mut child = prune(setup, zfs, rclone, &["prune-remote", "-y"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while rclone.faults()[0].times != Some(0) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "delete {n} never came"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "it ended before delete {n}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A prune interrupted at delete `n` (failed, or killed while the delete
/// hangs), checked, then run again to the end.
fn interrupt_and_rerun(n: u32, killed: bool) {
    let case = format!("{} at delete {n}", if killed { "killed" } else { "failed" });
    let (zfs, rclone) = seeded();
    let setup = setup();
    let before = contents(&rclone);
    if killed {
        kill_at(&setup, &zfs, &rclone, n);
    } else {
        let exit = FaultAction::Exit {
            code: 1,
            stderr: "ERROR : connection reset".into(),
        };
        rclone.inject_rule(FaultRule::new("deletefile", exit, Some(1)).after(n));
        let out = run_fail(&mut prune(&setup, &zfs, &rclone, &["prune-remote", "-y"]));
        assert!(
            text(&out).contains("connection reset"),
            "{case}: {}",
            text(&out)
        );
    }
    check_interrupted(&rclone, &before, &case);
    rclone.clear_faults();
    run_ok(&mut prune(&setup, &zfs, &rclone, &["prune-remote", "-y"]));
    assert_eq!(contents(&rclone), after_the_prune(&before), "{case}");
}

#[test]
fn a_prune_failed_or_killed_at_any_delete_leaves_complete_backups_restorable_and_a_rerun_finishes()
{
    // Every case has fakes and a config of its own; a few at once, since
    // most of the time goes to starting processes.
    const WORKERS: u32 = 4;
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            scope.spawn(move || {
                for n in (0..DELETES).filter(|n| n % WORKERS == worker) {
                    interrupt_and_rerun(n, false);
                    interrupt_and_rerun(n, true);
                }
            });
        }
    });
}
