//! A snapshot as zfs2cloud sees it: its export kind, base, upload record
//! and holds, all kept as user properties in the pool.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::names::{SnapTime, SnapshotName};

/// Full stream or incremental stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    /// `zfs send snap`.
    Full,
    /// `zfs send -i base snap`.
    Incremental,
}

impl ExportKind {
    /// The property / manifest spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Incremental => "incremental",
        }
    }

    /// Parses [`ExportKind::as_str`]'s output.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(Self::Full),
            "incremental" => Some(Self::Incremental),
            _ => None,
        }
    }
}

impl fmt::Display for ExportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// User property recording what an export of this snapshot was:
/// `full` or `incremental`. It lives in the pool, so the identity of the
/// last full survives the loss of `intermediate_basedir`.
pub const PROP_KIND: &str = "zfs2cloud:kind";

/// User property naming the base snapshot of an incremental export.
pub const PROP_BASE: &str = "zfs2cloud:base";

/// The level of an export (0: a full; an incremental is one more than the
/// level of what it may be based on; see `incremental_strategy`).
pub const PROP_LEVEL: &str = "zfs2cloud:level";

/// User property recording a confirmed upload: `<time> <export dir> <remote>`
/// (see [`upload_record`]). A confirmation counts only for the same export
/// directory and the same remote, so changing `remote`, a second config for
/// the dataset, or re-exporting the snapshot never inherits one. Pruning and
/// incremental bases depend on it.
pub const PROP_UPLOADED: &str = "zfs2cloud:uploaded";

/// The [`PROP_UPLOADED`] value for `dir_name` confirmed on `remote` at `at`.
/// The remote goes last: it may contain spaces.
#[must_use]
pub fn upload_record(at: &str, dir_name: &str, remote: &str) -> String {
    format!("{at} {dir_name} {remote}")
}

/// The `zfs hold` tag that protects the current full base.
pub const HOLD_TAG: &str = "zfs2cloud";

/// One snapshot of the configured dataset, with zfs2cloud's state for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// `dataset@snap`.
    pub name: SnapshotName,
    /// Number of user holds (`userrefs`), zfs2cloud's and anyone else's.
    pub userrefs: u64,
    /// What it was exported as, from [`PROP_KIND`]; `None` if never exported.
    pub kind: Option<ExportKind>,
    /// The base of an incremental export, from [`PROP_BASE`].
    pub base: Option<String>,
    /// The raw [`PROP_UPLOADED`] record; use [`SnapshotInfo::uploaded_to`].
    pub uploaded: Option<String>,
    /// The export's level, from [`PROP_LEVEL`]; `None` where it was not
    /// recorded (exports from before levels; see [`SnapshotInfo::level`]).
    pub level: Option<u32>,
}

impl SnapshotInfo {
    /// The level of this snapshot's export: 0 for a full, the recorded
    /// level for an incremental. An incremental recorded before levels
    /// existed is 1: every incremental was then based on the last full.
    /// `None` if it was never exported.
    #[must_use]
    pub fn level(&self) -> Option<u32> {
        match self.kind? {
            ExportKind::Full => Some(0),
            ExportKind::Incremental => Some(self.level.unwrap_or(1)),
        }
    }

    /// The time in its name if the name is zfs2cloud's own pattern. Only
    /// such snapshots are ever treated as zfs2cloud's.
    #[must_use]
    pub fn own_time(&self) -> Option<SnapTime> {
        self.name.own_time()
    }

    /// Whether the snapshot's current export (the directory its
    /// [`PROP_KIND`] names) is confirmed complete on `remote`.
    #[must_use]
    pub fn uploaded_to(&self, remote: &str) -> bool {
        let (Some(kind), Some(record)) = (self.kind, self.uploaded.as_deref()) else {
            return false;
        };
        let dir = crate::model::ExportLayout::dir_name(&self.name, kind);
        let mut parts = record.splitn(3, ' ');
        let _at = parts.next();
        parts.next() == Some(dir.as_str()) && parts.next() == Some(remote)
    }
}
