//! Remote pruning against a remote that is a local directory, through the
//! uploader mock: what is listed, what is deleted and in which order.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{TimeDelta, TimeZone};

use super::*;
use crate::model::testing::write_local_export;
use crate::model::{OwnerMarker, RemoteFile, SnapshotTimeZone};
use crate::policy::{plan_remote_prune, CalendarKeeps, RemotePrunePolicy};
use crate::stages::{MockUploader, Started};

fn ds(name: &str) -> DatasetName {
    DatasetName::parse(name).unwrap()
}

fn entries(dir: &str, dirs: bool) -> Vec<(String, u64)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = read
        .map(Result::unwrap)
        .filter(|e| e.file_type().unwrap().is_dir() == dirs)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().unwrap().len())
        })
        .collect();
    out.sort();
    out
}

fn files(dir: &str) -> Vec<RemoteFile> {
    entries(dir, false)
        .into_iter()
        .map(|(name, size)| RemoteFile {
            name,
            size,
            sha256: None,
        })
        .collect()
}

/// An uploader over a local directory that records every deletion in
/// `log` and fails the delete of any path containing `fail_on`.
fn local_remote(log: &Arc<Mutex<Vec<String>>>, fail_on: Option<&'static str>) -> MockUploader {
    let mut up = MockUploader::new();
    up.expect_list().returning(|dir| Ok(files(dir)));
    up.expect_list_sizes().returning(|dir| Ok(files(dir)));
    up.expect_list_dirs()
        .returning(|dir| Ok(entries(dir, true).into_iter().map(|(n, _)| n).collect()));
    up.expect_stat().returning(|path| {
        Ok(std::fs::metadata(path).ok().map(|m| RemoteFile {
            name: path.rsplit('/').next().unwrap().to_owned(),
            size: m.len(),
            sha256: None,
        }))
    });
    up.expect_cat().returning(|path| {
        let bytes = std::fs::read(path).unwrap();
        Ok(Started::reading(path, std::io::Cursor::new(bytes)))
    });
    let deletes = Arc::clone(log);
    up.expect_delete_file().returning(move |path| {
        if fail_on.is_some_and(|f| path.contains(f)) {
            return Err(UploadError::Parse {
                command: format!("deletefile {path}"),
                message: "injected".into(),
            });
        }
        std::fs::remove_file(path).unwrap();
        deletes.lock().unwrap().push(format!("delete {path}"));
        Ok(())
    });
    let removals = Arc::clone(log);
    up.expect_remove_dir().returning(move |dir| {
        std::fs::remove_dir(dir).unwrap();
        removals.lock().unwrap().push(format!("rmdir {dir}"));
        Ok(())
    });
    up
}

/// A remote directory of `tank/data`: a full of 2024-01-01 with two
/// incrementals, a full of 2024-02-01 with one, and beside them a note, a
/// child dataset's directory and a backup of another dataset.
fn seeded(root: &Path) -> PathBuf {
    let remote = root.join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    write_local_export(&remote, "20240101000000", None, &[b"full-1"]);
    write_local_export(&remote, "20240102000000", Some("20240101000000"), &[b"i-2"]);
    write_local_export(&remote, "20240103000000", Some("20240102000000"), &[b"i-3"]);
    write_local_export(&remote, "20240201000000", None, &[b"full-2"]);
    write_local_export(&remote, "20240202000000", Some("20240201000000"), &[b"i-4"]);
    let marker = OwnerMarker::new(&ds("tank/data"), None, "2023-12-31T00:00:00Z");
    std::fs::write(remote.join(OWNER_FILE), marker.to_json()).unwrap();
    std::fs::write(remote.join("notes.txt"), "mine").unwrap();
    std::fs::create_dir_all(remote.join("child/20240101000000-full")).unwrap();
    let foreign = remote.join("20240105000000");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("tank-other@20240105000000.zfs.gpg.0000"), "x").unwrap();
    remote
}

fn only_the_newest() -> RemotePrunePolicy {
    RemotePrunePolicy {
        keeps: CalendarKeeps::default(),
        keep_chains: 0,
        incomplete_grace: TimeDelta::hours(48),
        zone: SnapshotTimeZone::Utc,
        claimed_at: None,
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap()
}

#[test]
fn what_is_no_backup_of_the_dataset_is_listed_as_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = seeded(tmp.path());
    let up = local_remote(&Arc::default(), None);
    let listing = list_for_prune(&up, remote.to_str().unwrap(), &ds("tank/data")).unwrap();
    let dirs: Vec<&str> = listing
        .backups
        .iter()
        .map(|b| b.dir_name.as_str())
        .collect();
    assert_eq!(
        dirs,
        [
            "20240101000000-full",
            "20240102000000",
            "20240103000000",
            "20240201000000-full",
            "20240202000000"
        ]
    );
    let left: Vec<(&str, &str)> = listing
        .left_alone
        .iter()
        .map(|l| (l.name.as_str(), l.what.as_str()))
        .collect();
    assert_eq!(
        left,
        [
            (
                "20240105000000/",
                "a backup of tank-other (from its chunk names), not of tank/data"
            ),
            (
                "child/",
                "a directory not named like a backup (a child dataset's, or not zfs2cloud's)"
            ),
            ("notes.txt", "a file, not a backup"),
            (OWNER_FILE, "the owner marker"),
        ]
    );
    assert_eq!(
        listing.claimed_at,
        Some(Utc.with_ymd_and_hms(2023, 12, 31, 0, 0, 0).unwrap())
    );
}

#[test]
fn a_prune_deletes_what_the_plan_lets_go_dependents_and_manifests_first() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = seeded(tmp.path());
    let log = Arc::default();
    let up = local_remote(&log, None);
    let r = remote.to_str().unwrap();
    let listing = list_for_prune(&up, r, &ds("tank/data")).unwrap();
    let plan = plan_remote_prune(&listing.backups, &only_the_newest(), now());
    let deleted = delete_planned(&up, r, &listing.backups, &plan, &CancelToken::new()).unwrap();
    assert_eq!(
        deleted,
        ["20240103000000", "20240102000000", "20240101000000-full"]
    );
    let log: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.replace(&format!("{r}/"), ""))
        .collect();
    assert_eq!(
        log[..5],
        [
            "delete 20240103000000/manifest.json",
            "delete 20240103000000/tank-data@20240103000000.zfs.gpg.0000",
            "delete 20240103000000/SHA256SUMS",
            "rmdir 20240103000000",
            "delete 20240102000000/manifest.json",
        ]
    );
    assert_eq!(log.len(), 12);
    let left: Vec<String> = entries(r, true).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        left,
        [
            "20240105000000",
            "20240201000000-full",
            "20240202000000",
            "child"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(remote.join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(remote.join("child/20240101000000-full").is_dir());
}

#[test]
fn a_failed_delete_stops_the_prune_where_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = seeded(tmp.path());
    let log = Arc::default();
    let up = local_remote(&log, Some("20240102000000/tank-data"));
    let r = remote.to_str().unwrap();
    let listing = list_for_prune(&up, r, &ds("tank/data")).unwrap();
    let plan = plan_remote_prune(&listing.backups, &only_the_newest(), now());
    let err = delete_planned(&up, r, &listing.backups, &plan, &CancelToken::new()).unwrap_err();
    assert!(
        matches!(&err, PruneRemoteError::Delete { path, .. } if path.ends_with(".zfs.gpg.0000")),
        "{err:?}"
    );
    // 03 went, 02 lost its manifest (it is incomplete now), the full is
    // whole: the rerun's plan deletes the rest.
    assert_eq!(log.lock().unwrap().len(), 5);
    let again = list_for_prune(&up, r, &ds("tank/data")).unwrap();
    let incomplete = again
        .backups
        .iter()
        .find(|b| b.dir_name == "20240102000000")
        .unwrap();
    assert!(incomplete.manifest.is_none());
    let plan = plan_remote_prune(&again.backups, &only_the_newest(), now());
    assert_eq!(
        plan.deletion_order,
        ["20240102000000", "20240101000000-full"]
    );
}

#[test]
fn a_directory_of_another_dataset_is_never_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = seeded(tmp.path());
    let marker = OwnerMarker::new(&ds("tank/other"), None, "2023-12-31T00:00:00Z");
    std::fs::write(remote.join(OWNER_FILE), marker.to_json()).unwrap();
    let up = local_remote(&Arc::default(), None);
    let err = list_for_prune(&up, remote.to_str().unwrap(), &ds("tank/data")).unwrap_err();
    assert!(err.to_string().contains("belongs to tank/other"), "{err}");
}

#[test]
fn an_interrupted_prune_stops_before_the_next_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = seeded(tmp.path());
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let up = local_remote(&log, None);
    let r = remote.to_str().unwrap();
    let listing = list_for_prune(&up, r, &ds("tank/data")).unwrap();
    let plan = plan_remote_prune(&listing.backups, &only_the_newest(), now());
    let cancel = CancelToken::new();
    cancel.cancel();
    let err = delete_planned(&up, r, &listing.backups, &plan, &cancel).unwrap_err();
    assert!(matches!(err, PruneRemoteError::Interrupted), "{err:?}");
    assert!(log.lock().unwrap().is_empty());
}
