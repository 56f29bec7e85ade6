//! File mode's names: how a snapshot is exposed, where, and the names of
//! the temporary clones and heartbeat object zfs2cloud owns.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::names::{DatasetName, SnapshotName};

/// User property on a temporary clone: the snapshot it exposes.
pub const PROP_CLONE_OF: &str = "zfs2cloud:clone-of";

/// The infix of temporary clone names.
pub const CLONE_INFIX: &str = ".zfs2cloud-";

/// How a snapshot is exposed as files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountStrategy {
    /// Try `mount`, then `bind`, then `clone`.
    #[default]
    Auto,
    /// `mount -t zfs -o ro ds@snap dir`.
    Mount,
    /// Read-only bind mount of `.zfs/snapshot/<snap>`.
    Bind,
    /// A read-only temporary clone.
    Clone,
}

/// The mount directory of `snapshot` under `basedir`: `<snap>-full`.
#[must_use]
pub fn mount_dir(basedir: &Path, snapshot: &SnapshotName) -> PathBuf {
    basedir.join(format!("{}-full", snapshot.snap()))
}

/// The temporary clone's name for `snapshot`.
#[must_use]
pub fn clone_name(snapshot: &SnapshotName) -> Option<DatasetName> {
    let ds = snapshot.dataset().as_str();
    let name = match ds.rsplit_once('/') {
        Some((parent, leaf)) => format!("{parent}/{leaf}{CLONE_INFIX}{}", snapshot.snap()),
        None => format!("{ds}/{ds}{CLONE_INFIX}{}", snapshot.snap()),
    };
    DatasetName::parse(&name).ok()
}

/// The heartbeat object's name on the remote.
pub const HEARTBEAT_FILE: &str = "__zfs2cloud_last_updated__";
