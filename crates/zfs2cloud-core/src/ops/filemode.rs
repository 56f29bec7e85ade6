//! File mode: expose a snapshot read-only, `rclone sync` its files, and
//! always take the exposure down again.
//!
//! There are several ways to expose a snapshot, and which work depends on
//! the platform, so the method is a [`MountStrategy`]:
//!
//! * `mount`: `mount -t zfs -o ro <ds>@<snap> <dir>` (OpenZFS on Linux);
//! * `bind`: a read-only bind mount of `<mountpoint>/.zfs/snapshot/<snap>`;
//! * `clone`: a temporary read-only clone with `mountpoint=legacy`, mounted
//!   with `mount -t zfs` (zfs-fuse, which lacks that, mounts it itself),
//!   destroyed afterwards (the only strategy zfs-fuse supports);
//! * `auto`: the first of these that works.
//!
//! The mount directory is `<intermediate_basedir>/<snap>-full/`, the original
//! tool's path, created 0700. A temporary clone is named
//! `<parent>/<leaf>.zfs2cloud-<snap>` and carries the user property
//! [`PROP_CLONE_OF`]; leftovers of a killed run are found by both the name
//! pattern and the property, so nothing zfs2cloud did not create is ever
//! destroyed.

use serde::{Deserialize, Serialize};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::model::remote_join;
use crate::model::{DatasetName, OwnerMarker, HEARTBEAT_FILE, OWNER_FILE};
use crate::ops::upload::{read_object, with_retry, RetryPolicy, UploadStepError};
use crate::policy::check_sync_target;
use crate::process::CancelToken;
use crate::stages::SnapshotMount;
use crate::stages::Uploader;

/// The heartbeat object written after a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// `dataset@snap` that was synced.
    pub snapshot: String,
    /// When the sync finished (RFC 3339).
    pub synced_at: String,
    /// The version of zfs2cloud.
    pub tool_version: String,
}

/// Syncs the exposed snapshot to `remote` (retrying per `retry`), then
/// writes the [`Heartbeat`] object naming it. The heartbeat is excluded from
/// the sync, so the next sync does not delete it. A directory that holds
/// another dataset's files (its heartbeat says so) or intermediate-mode
/// backups (it has an owner marker) is refused before the sync, which
/// would delete them.
///
/// # Errors
///
/// [`UploadStepError::NotOwner`] or [`UploadStepError::UnreadableOwner`]
/// with nothing synced; other [`UploadStepError`]s if the sync or the
/// heartbeat fails after retries.
pub fn sync_snapshot(
    uploader: &dyn Uploader,
    mount: &SnapshotMount,
    remote: &str,
    retry: &RetryPolicy,
    cancel: &CancelToken,
    now: DateTime<Utc>,
) -> Result<(), UploadStepError> {
    let what = mount.snapshot.to_string();
    check_sync_remote(uploader, remote, mount.snapshot.dataset(), retry, cancel)?;
    let keep = format!("/{HEARTBEAT_FILE}");
    with_retry(retry, cancel, &what, || {
        uploader.sync_dir(&mount.dir, remote, &[&keep])
    })?;
    let heartbeat = Heartbeat {
        snapshot: mount.snapshot.to_string(),
        synced_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        tool_version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut bytes = serde_json::to_vec_pretty(&heartbeat).unwrap_or_default();
    bytes.push(b'\n');
    let target = remote_join(remote, HEARTBEAT_FILE);
    with_retry(retry, cancel, &what, || uploader.put_bytes(&bytes, &target))?;
    Ok(())
}

/// Refuses a sync of `dataset` into `remote` if the directory holds what
/// the sync would delete and is not the dataset's: see
/// [`check_sync_target`].
fn check_sync_remote(
    uploader: &dyn Uploader,
    remote: &str,
    dataset: &DatasetName,
    retry: &RetryPolicy,
    cancel: &CancelToken,
) -> Result<(), UploadStepError> {
    let unreadable = |object: &str, reason: String| UploadStepError::UnreadableOwner {
        action: "sync",
        dataset: dataset.to_string(),
        remote: remote.to_owned(),
        object: object.to_owned(),
        path: remote_join(remote, object),
        reason,
    };
    let read = |object: &str| {
        let path = remote_join(remote, object);
        with_retry(retry, cancel, remote, || read_object(uploader, &path))
    };
    let marker = read(OWNER_FILE)?
        .map(|b| OwnerMarker::parse(&b))
        .transpose()
        .map_err(|e| unreadable(OWNER_FILE, e.to_string()))?;
    // With a marker the answer is no, whatever the heartbeat says.
    let heartbeat: Option<Heartbeat> = match marker {
        Some(_) => None,
        None => read(HEARTBEAT_FILE)?
            .map(|b| serde_json::from_slice(&b))
            .transpose()
            .map_err(|e| unreadable(HEARTBEAT_FILE, e.to_string()))?,
    };
    check_sync_target(
        heartbeat.as_ref().map(|h| h.snapshot.as_str()),
        marker.as_ref(),
        dataset,
    )
    .map_err(|conflict| UploadStepError::NotOwner {
        action: "sync",
        dataset: dataset.to_string(),
        remote: remote.to_owned(),
        conflict,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::model::{RemoteFile, SnapshotName};
    use crate::stages::{Exposure, MockUploader, Started};

    const REMOTE: &str = "r:files";

    /// A remote holding `objects` (name, bytes) at its top; every sync and
    /// write goes to `log`.
    fn remote(objects: &[(&str, Vec<u8>)], log: &Arc<Mutex<Vec<String>>>) -> MockUploader {
        let objects: BTreeMap<String, Vec<u8>> = objects
            .iter()
            .map(|(name, bytes)| (remote_join(REMOTE, name), bytes.clone()))
            .collect();
        let mut up = MockUploader::new();
        let listed = objects.clone();
        up.expect_stat().returning(move |path| {
            Ok(listed.get(path).map(|b| RemoteFile {
                name: path.into(),
                size: b.len() as u64,
                sha256: None,
            }))
        });
        up.expect_cat().returning(move |path| {
            let bytes = objects[path].clone();
            Ok(Started::reading(
                format!("cat {path}"),
                std::io::Cursor::new(bytes),
            ))
        });
        let l = Arc::clone(log);
        up.expect_sync_dir().returning(move |_, remote, _| {
            l.lock().unwrap().push(format!("sync {remote}"));
            Ok(())
        });
        let l = Arc::clone(log);
        up.expect_put_bytes().returning(move |_, path| {
            l.lock().unwrap().push(format!("write {path}"));
            Ok(())
        });
        up
    }

    fn heartbeat(snapshot: &str) -> Vec<u8> {
        serde_json::to_vec(&Heartbeat {
            snapshot: snapshot.into(),
            synced_at: "2024-01-01T00:00:00Z".into(),
            tool_version: "0".into(),
        })
        .unwrap()
    }

    /// Syncs `tank/c@20240102000000` into a remote holding `objects`;
    /// returns the result and what was synced or written.
    fn sync(objects: &[(&str, Vec<u8>)]) -> (Result<(), UploadStepError>, Vec<String>) {
        let log = Arc::default();
        let up = remote(objects, &log);
        let mount = SnapshotMount {
            snapshot: SnapshotName::parse("tank/c@20240102000000").unwrap(),
            dir: "/nonexistent".into(),
            exposure: Exposure::Mounted,
        };
        let retry = RetryPolicy {
            retries: 0,
            delay: Duration::ZERO,
        };
        let now = Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap();
        let result = sync_snapshot(&up, &mount, REMOTE, &retry, &CancelToken::new(), now);
        let log = log.lock().unwrap().clone();
        (result, log)
    }

    #[test]
    fn a_sync_goes_only_over_this_datasets_files() {
        let synced = [
            format!("sync {REMOTE}"),
            format!("write {REMOTE}/{HEARTBEAT_FILE}"),
        ];
        let (result, log) = sync(&[]);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(log, synced);
        let (result, log) = sync(&[(HEARTBEAT_FILE, heartbeat("tank/c@20240101000000"))]);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(log, synced);
    }

    #[test]
    fn another_datasets_files_or_backups_are_never_synced_over() {
        let marker = OwnerMarker::new(
            &DatasetName::parse("tank/a").unwrap(),
            None,
            "2024-01-01T00:00:00Z",
        );
        for (objects, says) in [
            (
                vec![(HEARTBEAT_FILE, heartbeat("tank/d@20240101000000"))],
                "holds the files of another dataset (its __zfs2cloud_last_updated__ names \
                 tank/d@20240101000000), which rclone sync would delete",
            ),
            (
                vec![(OWNER_FILE, marker.to_json())],
                "holds intermediate-mode backups of tank/a",
            ),
            (
                vec![(HEARTBEAT_FILE, b"{".to_vec())],
                "its __zfs2cloud_last_updated__ cannot be read",
            ),
        ] {
            let (result, log) = sync(&objects);
            let text = result.unwrap_err().to_string();
            assert!(
                text.starts_with("refusing to sync tank/c to r:files: ") && text.contains(says),
                "{text}"
            );
            assert_eq!(log, Vec::<String>::new(), "nothing synced or written");
        }
    }
}
