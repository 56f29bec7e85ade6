//! Orchestration tests against the stage mocks: verify's verdicts.
#![allow(clippy::unwrap_used)]

use crate::model::testing::remote_backup;
use crate::model::{Passphrase, RemoteBackup};
use crate::process::CancelToken;
use crate::stages::MockUploader;

use super::*;

/// A backup `dir` on the remote whose manifest lists `chunks` (name, size,
/// sha256), holding `files` (name, size, sha256 if the backend says), with
/// the manifest only if `manifest`, and then listed too. An incremental is
/// based on `20240101000000`.
fn backup(
    dir: &str,
    chunks: &[(&str, u64, &str)],
    files: &[(&str, u64, Option<&str>)],
    manifest: bool,
) -> RemoteBackup {
    let base = (!dir.ends_with("-full")).then_some("20240101000000");
    let mut listed = files.to_vec();
    if manifest {
        listed.push(("manifest.json", 100, None));
    }
    remote_backup(dir, base, chunks, &listed, manifest)
}

/// A whole backup of `dir`: two chunks, listed with their hashes.
fn whole(dir: &str) -> RemoteBackup {
    backup(
        dir,
        &[("c.0000", 4, "aa"), ("c.0001", 2, "bb")],
        &[("c.0000", 4, Some("aa")), ("c.0001", 2, Some("bb"))],
        true,
    )
}

fn verdicts(checks: &[BackupCheck]) -> Vec<(&str, &Health)> {
    checks
        .iter()
        .map(|c| (c.backup.as_str(), &c.health))
        .collect()
}

#[test]
fn whole_backups_are_ok_with_or_without_hashes_from_the_backend() {
    let s3 = backup(
        "20240102000000",
        &[("c.0000", 4, "aa")],
        &[("c.0000", 4, None)],
        true,
    );
    let checks = verify_listing(&[whole("20240101000000-full"), s3], None);
    assert_eq!(
        verdicts(&checks),
        [
            ("20240101000000-full", &Health::Ok),
            ("20240102000000", &Health::Ok)
        ]
    );
}

#[test]
fn a_chunk_of_the_wrong_size_or_hash_is_damaged() {
    let short = backup(
        "20240101000000-full",
        &[("c.0000", 4, "aa"), ("c.0001", 2, "bb")],
        &[("c.0000", 3, None), ("c.0001", 2, None)],
        true,
    );
    let flipped = backup(
        "20240102000000",
        &[("c.0000", 4, "aa")],
        &[("c.0000", 4, Some("ab"))],
        true,
    );
    let checks = verify_listing(&[short, flipped], None);
    assert_eq!(checks.len(), 2);
    assert_eq!(
        checks[0].health,
        Health::Damaged("chunk c.0000 has 3 bytes, the manifest says 4".into())
    );
    assert_eq!(
        checks[1].health,
        Health::Damaged("chunk c.0000 has a different sha256 than the manifest".into())
    );
}

#[test]
fn a_missing_manifest_or_chunk_is_incomplete_and_an_unreadable_manifest_damaged() {
    let no_manifest = backup(
        "20240101000000-full",
        &[],
        &[("c.0000", 4, Some("aa"))],
        false,
    );
    let missing = backup(
        "20240102000000",
        &[("c.0000", 4, "aa"), ("c.0001", 2, "bb")],
        &[("c.0000", 4, Some("aa"))],
        true,
    );
    let mut corrupt = backup("20240103000000", &[], &[("c.0000", 4, None)], false);
    corrupt.manifest_error = Some("EOF while parsing".into());
    let checks = verify_listing(&[no_manifest, missing, corrupt], None);
    assert!(
        matches!(&checks[0].health, Health::Incomplete(r) if r.starts_with("manifest.json is missing")),
        "{checks:?}"
    );
    assert_eq!(
        checks[1].health,
        Health::Incomplete("missing chunk(s): c.0001".into())
    );
    assert!(
        matches!(&checks[2].health, Health::Damaged(r) if r.contains("unreadable")),
        "{checks:?}"
    );
}

#[test]
fn only_selects_by_snapshot_or_directory_name() {
    let backups = [
        whole("20240101000000-full"),
        whole("20240102000000"),
        whole("20240103000000-full"),
    ];
    let names = |only: &[&str]| -> Vec<String> {
        let only: Vec<String> = only.iter().map(|s| (*s).to_owned()).collect();
        verify_listing(&backups, Some(&only))
            .into_iter()
            .map(|c| c.backup)
            .collect()
    };
    assert_eq!(names(&["20240101000000"]), ["20240101000000-full"]);
    assert_eq!(
        names(&["20240103000000-full", "20240102000000"]),
        ["20240102000000", "20240103000000-full"]
    );
    assert!(names(&["20240104000000"]).is_empty());
    assert!(names(&[]).is_empty());
    assert_eq!(verify_listing(&backups, None).len(), 3);
}

#[test]
fn a_verdict_serializes_with_its_state_and_reason() {
    let ok = BackupCheck {
        backup: "20240101000000-full".into(),
        health: Health::Ok,
    };
    let bad = BackupCheck {
        backup: "20240102000000".into(),
        health: Health::Incomplete("missing chunk(s): c.0001".into()),
    };
    assert_eq!(
        serde_json::to_value(&ok).unwrap(),
        serde_json::json!({"backup": "20240101000000-full", "state": "OK"})
    );
    assert_eq!(
        serde_json::to_value(&bad).unwrap(),
        serde_json::json!({
            "backup": "20240102000000",
            "state": "INCOMPLETE",
            "reason": "missing chunk(s): c.0001"
        })
    );
}

/// `verify --deep` over `backups` with stages that fail the test if used:
/// an uploader without expectations, and gpg and zfs binaries that do not
/// exist.
fn deep_without_download(
    backups: &[RemoteBackup],
    only: Option<&[String]>,
) -> Result<Vec<BackupCheck>, VerifyError> {
    let runner = Runner::new();
    let gpg = GpgEncryptor::new(
        runner.clone(),
        "/nonexistent/gpg".into(),
        Passphrase::from_bytes(b"secret".to_vec()),
    );
    let settings = RestoreSettings {
        target: DatasetName::parse("tank/zfs2cloud-verify-1").unwrap(),
        force: false,
        mount: false,
        zfs: "/nonexistent/zfs".into(),
        remote: "r:".into(),
        cancel: CancelToken::new(),
        prefetch_bytes: crate::ops::restore::DEFAULT_PREFETCH_BYTES,
    };
    verify_deep(
        &MockUploader::new(),
        Some(&gpg),
        &runner,
        backups,
        only,
        &settings,
        &crate::util::NoProgress,
    )
}

/// The verdict on an incremental based on the missing 20240104000000.
const ORPHAN: &str =
    "its restore needs 20240104000000, which is not on the remote as a complete backup";

#[test]
fn an_incremental_whose_chain_is_broken_is_incomplete_one_on_an_intact_one_is_not() {
    let on = |dir: &str, base: &str| {
        let mut b = whole(dir);
        b.manifest.as_mut().unwrap().base = Some(base.into());
        b
    };
    let backups = [
        whole("20240101000000-full"),
        on("20240102000000", "20240101000000"),
        on("20240103000000", "20240102000000"),
        on("20240105000000", "20240104000000"),
        on("20240106000000", "20240105000000"),
    ];
    let checks = verify_listing(&backups, None);
    assert_eq!(
        verdicts(&checks),
        [
            ("20240101000000-full", &Health::Ok),
            ("20240102000000", &Health::Ok),
            ("20240103000000", &Health::Ok),
            ("20240105000000", &Health::Incomplete(ORPHAN.into())),
            ("20240106000000", &Health::Incomplete(ORPHAN.into())),
        ]
    );
}

#[test]
fn deep_verify_condemns_a_whole_chain_below_a_damaged_full_without_downloading() {
    let damaged_full = backup(
        "20240101000000-full",
        &[("c.0000", 4, "aa")],
        &[("c.0000", 1, None)],
        true,
    );
    let mut on_incremental = whole("20240103000000");
    on_incremental.manifest.as_mut().unwrap().base = Some("20240102000000".into());
    let backups = [damaged_full, whole("20240102000000"), on_incremental];
    let checks = deep_without_download(&backups, None).unwrap();
    let find = |dir: &str| &checks.iter().find(|c| c.backup == dir).unwrap().health;
    assert_eq!(checks.len(), 3, "{checks:?}");
    for dir in ["20240102000000", "20240103000000"] {
        assert_eq!(
            find(dir),
            &Health::Incomplete("its full 20240101000000-full is not OK".into())
        );
    }
}

#[test]
fn deep_verify_reports_what_the_listing_condemns_without_downloading() {
    let damaged_full = backup(
        "20240101000000-full",
        &[("c.0000", 4, "aa")],
        &[("c.0000", 1, None)],
        true,
    );
    // Based on 20240101000000, like every incremental here.
    let on_damaged = whole("20240102000000");
    let mut orphan = whole("20240105000000");
    orphan.manifest.as_mut().unwrap().base = Some("20240104000000".into());

    let checks = deep_without_download(&[damaged_full, on_damaged, orphan], None).unwrap();
    assert_eq!(checks.len(), 3, "{checks:?}");
    let find = |dir: &str| &checks.iter().find(|c| c.backup == dir).unwrap().health;
    assert_eq!(find("20240105000000"), &Health::Incomplete(ORPHAN.into()));
    assert!(matches!(find("20240101000000-full"), Health::Damaged(_)));
    assert_eq!(
        find("20240102000000"),
        &Health::Incomplete("its full 20240101000000-full is not OK".into())
    );
}

#[test]
fn deep_verify_only_checks_what_was_asked_for() {
    let damaged_full = backup(
        "20240101000000-full",
        &[("c.0000", 4, "aa")],
        &[("c.0000", 1, None)],
        true,
    );
    let mut orphan = whole("20240105000000");
    orphan.manifest.as_mut().unwrap().base = Some("20240104000000".into());
    let backups = [damaged_full, whole("20240102000000"), orphan];
    let only = vec!["20240105000000".to_owned()];
    let checks = deep_without_download(&backups, Some(&only)).unwrap();
    assert_eq!(
        verdicts(&checks),
        [("20240105000000", &Health::Incomplete(ORPHAN.into()))]
    );
}

/// A `zfs` that receives into nothing: `list` finds the dataset once a
/// receive made it, `recv` logs what it was sent, `rollback` and `destroy`
/// log their target. Every call is appended to `log`.
fn logging_zfs(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let (zfs, log, made) = (dir.join("zfs"), dir.join("log"), dir.join("made"));
    let script = format!(
        "#!/bin/sh\n\
         case \"$1\" in\n\
         list) [ -e '{made}' ] && exit 0; echo \"cannot open '$5': dataset does not exist\" >&2; exit 1;;\n\
         recv) echo \"recv $(cat)\" >> '{log}'; touch '{made}';;\n\
         rollback) echo \"rollback $3\" >> '{log}';;\n\
         destroy) echo destroy >> '{log}'; rm -f '{made}';;\n\
         esac\n",
        made = made.display(),
        log = log.display()
    );
    std::fs::write(&zfs, script).unwrap();
    std::fs::set_permissions(&zfs, std::fs::Permissions::from_mode(0o755)).unwrap();
    (zfs, log)
}

/// An unencrypted backup of `dir` based on `base`, whose one chunk holds
/// the directory's name.
fn plain(dir: &str, base: Option<&str>) -> RemoteBackup {
    use sha2::{Digest, Sha256};
    let sha = crate::model::hex(&Sha256::digest(dir.as_bytes()));
    let chunk = format!("{dir}.0000");
    let mut b = remote_backup(
        dir,
        base,
        &[(&chunk, dir.len() as u64, &sha)],
        &[(&chunk, dir.len() as u64, Some(&sha))],
        true,
    );
    b.manifest.as_mut().unwrap().encryption = "none".into();
    b
}

#[test]
fn deep_verify_receives_each_backup_on_its_own_base() {
    let tmp = tempfile::tempdir().unwrap();
    let (zfs, log) = logging_zfs(tmp.path());
    // A full, a chain on it (A, B on A, D on B), and C on the full.
    let backups = [
        plain("20240101000000-full", None),
        plain("20240102000000", Some("20240101000000")),
        plain("20240103000000", Some("20240102000000")),
        plain("20240104000000", Some("20240101000000")),
        plain("20240105000000", Some("20240103000000")),
    ];
    let mut store = MockUploader::new();
    store.expect_cat().returning(|path| {
        let dir = path.rsplit('/').nth(1).unwrap().to_owned();
        Ok(crate::stages::Started::reading(
            path,
            std::io::Cursor::new(dir.into_bytes()),
        ))
    });
    let settings = RestoreSettings {
        target: DatasetName::parse("tank/zfs2cloud-verify-1").unwrap(),
        force: false,
        mount: false,
        zfs,
        remote: "r:data".into(),
        cancel: CancelToken::new(),
        prefetch_bytes: crate::ops::restore::DEFAULT_PREFETCH_BYTES,
    };
    let checks = verify_deep(
        &store,
        None,
        &Runner::new(),
        &backups,
        None,
        &settings,
        &crate::util::NoProgress,
    )
    .unwrap();
    assert!(checks.iter().all(|c| c.health == Health::Ok), "{checks:?}");
    assert_eq!(checks.len(), 5);
    let at = |snap: &str| format!("rollback tank/zfs2cloud-verify-1@{snap}");
    assert_eq!(
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        [
            "recv 20240101000000-full".to_owned(),
            at("20240101000000"),
            "recv 20240102000000".into(),
            at("20240102000000"),
            "recv 20240103000000".into(),
            at("20240103000000"),
            "recv 20240105000000".into(),
            at("20240101000000"),
            "recv 20240104000000".into(),
            "destroy".into(),
        ]
    );
}
