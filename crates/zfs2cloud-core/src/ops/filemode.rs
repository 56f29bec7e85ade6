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
use crate::model::HEARTBEAT_FILE;
use crate::ops::upload::{with_retry, RetryPolicy, UploadStepError};
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
/// the sync, so the next sync does not delete it.
///
/// # Errors
///
/// [`UploadStepError`] if the sync or the heartbeat fails after retries.
pub fn sync_snapshot(
    uploader: &dyn Uploader,
    mount: &SnapshotMount,
    remote: &str,
    retry: &RetryPolicy,
    cancel: &CancelToken,
    now: DateTime<Utc>,
) -> Result<(), UploadStepError> {
    let what = mount.snapshot.to_string();
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
