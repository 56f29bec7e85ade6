//! Validated ZFS dataset and snapshot names, and zfs2cloud's own snapshot
//! naming scheme (`YYYYMMDDHHMMSS`).
//!
//! Names are checked here, before any command runs, with the rules ZFS itself
//! applies, so a bad name in a config file is a clear error instead of a
//! confusing `zfs` failure halfway through a run. Every `zfs destroy`
//! argument is built from a parsed [`SnapshotName`], which always has
//! exactly one `@`: a dataset can never be passed by mistake.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Errors in dataset or snapshot names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The dataset name breaks a ZFS naming rule.
    #[error("invalid dataset name {name:?}: {reason}")]
    Dataset {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The snapshot name breaks a ZFS naming rule.
    #[error("invalid snapshot name {name:?}: {reason}")]
    Snapshot {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

/// ZFS's maximum name length (ZFS_MAX_DATASET_NAME_LEN - 1).
const MAX_NAME_LEN: usize = 255;

/// The characters ZFS accepts in a name component (`zfs_namecheck.c`).
fn valid_component_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | ' ')
}

/// A ZFS file system name such as `tank/data`, checked against ZFS's rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DatasetName(String);

impl DatasetName {
    /// Checks `name` against ZFS's naming rules.
    ///
    /// # Errors
    ///
    /// [`NameError::Dataset`] naming the broken rule.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let err = |reason| NameError::Dataset {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(err("it is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(err("it is longer than 255 bytes"));
        }
        if name.contains('@') {
            return Err(err(
                "a dataset name cannot contain '@' (that is a snapshot)",
            ));
        }
        if name.contains('#') {
            return Err(err(
                "a dataset name cannot contain '#' (that is a bookmark)",
            ));
        }
        if name.starts_with('/') || name.ends_with('/') {
            return Err(err("it starts or ends with '/'"));
        }
        for component in name.split('/') {
            if component.is_empty() {
                return Err(err("it has an empty component ('//')"));
            }
            if component == "." || component == ".." {
                return Err(err("'.' and '..' are not valid components"));
            }
            if !component.chars().all(valid_component_char) {
                return Err(err(
                    "only ASCII letters, digits, '-', '_', '.', ':' and space are allowed",
                ));
            }
        }
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(err("the pool name must start with a letter"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name with `/` replaced by `-`, as used in export file names.
    #[must_use]
    pub fn dashed(&self) -> String {
        self.0.replace('/', "-")
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DatasetName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for DatasetName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A full snapshot name `dataset@snap`. It always contains exactly one `@`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotName {
    dataset: DatasetName,
    snap: String,
}

impl SnapshotName {
    /// Builds `dataset@snap`, checking the part after the `@`.
    ///
    /// # Errors
    ///
    /// [`NameError::Snapshot`] if `snap` is empty, too long or has a
    /// character ZFS rejects.
    pub fn new(dataset: DatasetName, snap: &str) -> Result<Self, NameError> {
        let err = |reason| NameError::Snapshot {
            name: format!("{dataset}@{snap}"),
            reason,
        };
        if snap.is_empty() {
            return Err(err("the part after '@' is empty"));
        }
        // zfs_namecheck.c refuses "." and ".." as the last component, the
        // part after '@' included; as a directory name they would also
        // point outside the export directory.
        if snap == "." || snap == ".." {
            return Err(err("'.' and '..' are not valid snapshot names"));
        }
        if !snap.chars().all(valid_component_char) {
            return Err(err(
                "only ASCII letters, digits, '-', '_', '.', ':' and space are allowed after '@'",
            ));
        }
        if dataset.as_str().len() + 1 + snap.len() > MAX_NAME_LEN {
            return Err(err("it is longer than 255 bytes"));
        }
        Ok(Self {
            dataset,
            snap: snap.to_owned(),
        })
    }

    /// Parses `dataset@snap`.
    ///
    /// # Errors
    ///
    /// [`NameError`] if there is not exactly one `@` or either part is
    /// invalid.
    pub fn parse(full: &str) -> Result<Self, NameError> {
        let mut parts = full.split('@');
        let (Some(ds), Some(snap), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NameError::Snapshot {
                name: full.to_owned(),
                reason: "a snapshot name has exactly one '@'",
            });
        };
        Self::new(DatasetName::parse(ds)?, snap)
    }

    /// The dataset part.
    #[must_use]
    pub fn dataset(&self) -> &DatasetName {
        &self.dataset
    }

    /// The part after the `@`.
    #[must_use]
    pub fn snap(&self) -> &str {
        &self.snap
    }

    /// The time encoded in the name, if it follows zfs2cloud's scheme.
    #[must_use]
    pub fn own_time(&self) -> Option<SnapTime> {
        SnapTime::parse(&self.snap)
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.dataset, self.snap)
    }
}

/// The time in a zfs2cloud snapshot name, `YYYYMMDDHHMMSS`.
///
/// zfs2cloud treats a snapshot as its own only if the part after `@` is
/// exactly 14 digits that form a valid date and time. Snapshots made by
/// sanoid, by hand or by anything else never match, so they are never
/// exported as "the latest" and never pruned.
///
/// The time is the wall-clock time of the configured zone (UTC by default);
/// ordering compares the naive time, which is what name order means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapTime(NaiveDateTime);

/// The `strftime` pattern of zfs2cloud's snapshot names.
pub const SNAP_TIME_FORMAT: &str = "%Y%m%d%H%M%S";

impl SnapTime {
    /// Parses a snapshot suffix; `None` if it is not zfs2cloud's pattern.
    #[must_use]
    pub fn parse(snap: &str) -> Option<Self> {
        if snap.len() != 14 || !snap.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        NaiveDateTime::parse_from_str(snap, SNAP_TIME_FORMAT)
            .ok()
            .map(Self)
    }

    /// The name for a snapshot taken at `now`, in UTC or local time.
    #[must_use]
    pub fn from_instant(now: DateTime<Utc>, zone: SnapshotTimeZone) -> Self {
        match zone {
            SnapshotTimeZone::Utc => Self(now.naive_utc()),
            SnapshotTimeZone::Local => Self(now.with_timezone(&Local).naive_local()),
        }
    }

    /// The naive wall-clock time.
    #[must_use]
    pub fn naive(&self) -> NaiveDateTime {
        self.0
    }

    /// The instant this name denotes, interpreting it in `zone`. Ambiguous
    /// local times (a DST fold) take the earlier instant.
    #[must_use]
    pub fn to_utc(&self, zone: SnapshotTimeZone) -> DateTime<Utc> {
        match zone {
            SnapshotTimeZone::Utc => Utc.from_utc_datetime(&self.0),
            SnapshotTimeZone::Local => Local
                .from_local_datetime(&self.0)
                .earliest()
                .map_or_else(|| Utc.from_utc_datetime(&self.0), |t| t.with_timezone(&Utc)),
        }
    }
}

impl fmt::Display for SnapTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format(SNAP_TIME_FORMAT))
    }
}

/// Which clock the snapshot names follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotTimeZone {
    /// UTC (the default): a daylight-saving change can never produce a
    /// duplicate or out-of-order name.
    #[default]
    Utc,
    /// The machine's local time zone, as the original tool did.
    Local,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn dataset_names_follow_zfs_rules() {
        for ok in ["tank", "tank/data", "tank/my data", "t1/a-b_c.d:e"] {
            DatasetName::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "/tank",
            "tank/",
            "tank//x",
            "tank@x",
            "tank#b",
            "-tank",
            "1tank",
            "tank/$x",
            "tank/a;b",
            "tank/'q'",
            "tank/données",
            "tank/../x",
        ] {
            assert!(
                DatasetName::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn snapshot_names_have_exactly_one_at() {
        let s = SnapshotName::parse("tank/data@20240101000000").unwrap();
        assert_eq!(s.dataset().as_str(), "tank/data");
        assert_eq!(s.snap(), "20240101000000");
        assert_eq!(s.to_string(), "tank/data@20240101000000");
        for bad in [
            "tank/data",
            "tank@a@b",
            "tank@",
            "@x",
            "tank@a/b",
            // Found by the fuzz suite: ZFS refuses these.
            "tank@.",
            "tank@..",
        ] {
            assert!(SnapshotName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn own_pattern_is_fourteen_digits_forming_a_valid_time() {
        assert!(SnapTime::parse("20240101000000").is_some());
        assert!(SnapTime::parse("20241301000000").is_none()); // month 13
        assert!(SnapTime::parse("2024010100000").is_none());
        assert!(SnapTime::parse("autosnap_2024-01-01_00:00:00_daily").is_none());
        assert!(SnapTime::parse("manual").is_none());
        assert!(SnapTime::parse("+2024010100000").is_none());
    }

    #[test]
    fn utc_names_format_and_order() {
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = SnapTime::from_instant(t, SnapshotTimeZone::Utc);
        assert_eq!(a.to_string(), "20240102030405");
        assert_eq!(a.to_utc(SnapshotTimeZone::Utc), t);
        let b = SnapTime::parse("20240102030406").unwrap();
        assert!(a < b);
    }

    #[test]
    fn dashed_replaces_slashes() {
        assert_eq!(DatasetName::parse("a/b/c").unwrap().dashed(), "a-b-c");
    }
}
