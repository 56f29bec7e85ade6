//! Pure decisions: which snapshot to export, and whether as a full or as an
//! incremental against which base.
//!
//! The strategy is `since_last_full`: every incremental is based on the last
//! *full*, never on the previous incremental, so one bad incremental never
//! breaks a later one. These functions take the snapshot list and return a
//! plan; they run nothing, so every rule is unit-tested.

use chrono::TimeDelta;

use crate::model::ExportKind;
use crate::model::SnapshotInfo;
use crate::model::{SnapTime, SnapshotName};

/// What to export and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPlan {
    /// The snapshot to export.
    pub snapshot: SnapshotName,
    /// Full or incremental.
    pub kind: ExportKind,
    /// The base of an incremental (always the last full).
    pub base: Option<SnapshotName>,
    /// Why, for the log.
    pub reason: String,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// There is no zfs2cloud snapshot to export.
    #[error("there is no zfs2cloud snapshot to export (names like @20240101000000); run `zfs2cloud snapshot` first")]
    NoSnapshot,
    /// The requested snapshot does not exist.
    #[error("snapshot {0} does not exist")]
    NoSuchSnapshot(String),
    /// The requested snapshot is not zfs2cloud's.
    #[error("snapshot {0} was not made by zfs2cloud (its name is not YYYYMMDDHHMMSS); zfs2cloud only exports its own snapshots")]
    NotOwn(String),
    /// `--incremental` was forced but there is no full to base it on.
    #[error("an incremental export was requested, but there is no earlier full export of {0} to base it on")]
    NoFullBase(String),
}

/// The newest of zfs2cloud's own snapshots. Snapshots with other names
/// (sanoid, manual) are never "the latest".
#[must_use]
pub fn latest_own(snapshots: &[SnapshotInfo]) -> Option<&SnapshotInfo> {
    snapshots
        .iter()
        .filter_map(|s| s.own_time().map(|t| (t, s)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, s)| s)
}

/// The last full export strictly older than `before` that `usable` accepts:
/// the base for an incremental of a snapshot taken at `before`.
#[must_use]
pub fn last_full_before<'a>(
    snapshots: &'a [SnapshotInfo],
    before: SnapTime,
    usable: &dyn Fn(&SnapshotInfo) -> bool,
) -> Option<&'a SnapshotInfo> {
    snapshots
        .iter()
        .filter(|s| s.kind == Some(ExportKind::Full) && usable(s))
        .filter_map(|s| s.own_time().map(|t| (t, s)))
        .filter(|(t, _)| *t < before)
        .max_by_key(|(t, _)| *t)
        .map(|(_, s)| s)
}

/// Decides how to export.
///
/// * `target`: a snapshot name (`snap` part), or `None` for the newest of
///   zfs2cloud's own snapshots;
/// * `force`: `--full` / `--incremental`;
/// * `base_usable`: whether a full may be the base of a new incremental.
///   The caller accepts a full whose upload is confirmed, or whose complete
///   export is still on local disk (the upload step sends a base before any
///   incremental on it). A full that is neither never gets an incremental:
///   the next export is full instead, so no incremental is ever uploaded
///   whose base is missing remotely.
///
/// Without `force`, the export is full if there is no earlier full, or if
/// the last full is `full_every_x_days` days or more older than the target
/// (compared by the times in the names, so the result does not depend on
/// when the export runs); otherwise incremental against that full.
///
/// # Errors
///
/// [`PlanError`] when there is nothing (valid) to export or no base for a
/// forced incremental.
pub fn plan_export(
    snapshots: &[SnapshotInfo],
    target: Option<&str>,
    full_every_x_days: u32,
    force: Option<ExportKind>,
    base_usable: &dyn Fn(&SnapshotInfo) -> bool,
) -> Result<ExportPlan, PlanError> {
    let target = match target {
        None => latest_own(snapshots).ok_or(PlanError::NoSnapshot)?,
        Some(name) => snapshots
            .iter()
            .find(|s| s.name.snap() == name || s.name.to_string() == name)
            .ok_or_else(|| PlanError::NoSuchSnapshot(name.to_owned()))?,
    };
    let target_time = target
        .own_time()
        .ok_or_else(|| PlanError::NotOwn(target.name.to_string()))?;
    let last_full = last_full_before(snapshots, target_time, base_usable);
    let unusable = last_full_before(snapshots, target_time, &|_| true)
        .filter(|f| last_full.is_none_or(|u| u.name != f.name));
    let plan = |kind, base: Option<&SnapshotInfo>, reason: String| ExportPlan {
        snapshot: target.name.clone(),
        kind,
        base: base.map(|b| b.name.clone()),
        reason,
    };
    match (force, last_full, unusable) {
        (Some(ExportKind::Full), _, _) => Ok(plan(
            ExportKind::Full,
            None,
            "full export forced by --full".into(),
        )),
        (Some(ExportKind::Incremental), None, _) => {
            Err(PlanError::NoFullBase(target.name.dataset().to_string()))
        }
        (Some(ExportKind::Incremental), Some(base), _) => Ok(plan(
            ExportKind::Incremental,
            Some(base),
            format!(
                "incremental export against the last full {} (forced by --incremental)",
                base.name.snap()
            ),
        )),
        (None, None, None) => Ok(plan(
            ExportKind::Full,
            None,
            "full export: there is no earlier full export".into(),
        )),
        (None, _, Some(newest)) => Ok(plan(
            ExportKind::Full,
            None,
            format!(
                "full export: the last full {} was never confirmed uploaded and its local export is gone, so nothing may be based on it",
                newest.name.snap()
            ),
        )),
        (None, Some(base), None) => {
            let base_time = base.own_time().unwrap_or(target_time);
            let age = target_time.naive() - base_time.naive();
            if age >= TimeDelta::days(i64::from(full_every_x_days)) {
                Ok(plan(
                    ExportKind::Full,
                    None,
                    format!(
                        "full export: the last full {} is {:.1} days old (full_every_x_days = {full_every_x_days})",
                        base.name.snap(),
                        age.num_seconds() as f64 / 86_400.0
                    ),
                ))
            } else {
                Ok(plan(
                    ExportKind::Incremental,
                    Some(base),
                    format!(
                        "incremental export against the last full {}",
                        base.name.snap()
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn snap(name: &str, kind: Option<ExportKind>) -> SnapshotInfo {
        SnapshotInfo {
            name: SnapshotName::parse(&format!("tank/data@{name}")).unwrap(),
            userrefs: 0,
            kind,
            base: None,
            uploaded: None,
        }
    }

    use ExportKind::{Full, Incremental};

    #[test]
    fn first_export_is_full() {
        let snaps = [snap("20240101000000", None)];
        let p = plan_export(&snaps, None, 30, None, &|_| true).unwrap();
        assert_eq!(p.kind, Full);
        assert_eq!(p.base, None);
    }

    #[test]
    fn incrementals_are_against_the_last_full_not_the_previous_incremental() {
        let snaps = [
            snap("20240101000000", Some(Full)),
            snap("20240102000000", Some(Incremental)),
            snap("20240103000000", None),
        ];
        let p = plan_export(&snaps, None, 30, None, &|_| true).unwrap();
        assert_eq!(p.snapshot.snap(), "20240103000000");
        assert_eq!(p.kind, Incremental);
        assert_eq!(p.base.unwrap().snap(), "20240101000000");
    }

    #[test]
    fn a_new_full_comes_when_the_last_full_is_old_enough() {
        let snaps = [
            snap("20240101000000", Some(Full)),
            snap("20240205000000", None),
        ];
        assert_eq!(
            plan_export(&snaps, None, 30, None, &|_| true).unwrap().kind,
            Full
        );
        assert_eq!(
            plan_export(&snaps, None, 36, None, &|_| true).unwrap().kind,
            Incremental
        );
        // Exactly full_every_x_days old: full.
        let snaps = [
            snap("20240101000000", Some(Full)),
            snap("20240131000000", None),
        ];
        assert_eq!(
            plan_export(&snaps, None, 30, None, &|_| true).unwrap().kind,
            Full
        );
    }

    #[test]
    fn foreign_snapshots_are_never_the_latest_or_a_base() {
        let mut manual = snap("zzz-manual", Some(Full));
        manual.kind = Some(Full);
        let snaps = [
            snap("20240101000000", None),
            manual,
            snap("autosnap_2024-02-01_00:00:00_daily", None),
        ];
        let p = plan_export(&snaps, None, 30, None, &|_| true).unwrap();
        assert_eq!(p.snapshot.snap(), "20240101000000");
        assert_eq!(p.kind, Full, "a foreign snapshot marked full is no base");
        assert_eq!(
            plan_export(&snaps, Some("zzz-manual"), 30, None, &|_| true).unwrap_err(),
            PlanError::NotOwn("tank/data@zzz-manual".into())
        );
    }

    #[test]
    fn a_full_that_never_reached_the_remote_is_no_base() {
        let snaps = [
            snap("20240101000000", Some(Full)),
            snap("20240102000000", None),
        ];
        let uploaded_or_local = |_: &SnapshotInfo| false;
        let p = plan_export(&snaps, None, 30, None, &uploaded_or_local).unwrap();
        assert_eq!(p.kind, Full);
        assert!(
            p.reason.contains("never confirmed uploaded"),
            "{}",
            p.reason
        );
        // An older usable full is no base either when a newer full exists
        // that is not usable: incrementals follow the newest full only.
        let snaps = [
            snap("20231201000000", Some(Full)),
            snap("20240101000000", Some(Full)),
            snap("20240102000000", None),
        ];
        let only_old = |s: &SnapshotInfo| s.name.snap() == "20231201000000";
        assert_eq!(
            plan_export(&snaps, None, 60, None, &only_old).unwrap().kind,
            Full
        );
        assert!(matches!(
            plan_export(&snaps, None, 60, Some(Incremental), &uploaded_or_local),
            Err(PlanError::NoFullBase(_))
        ));
    }

    #[test]
    fn forcing() {
        let snaps = [
            snap("20240101000000", Some(Full)),
            snap("20240102000000", None),
        ];
        assert_eq!(
            plan_export(&snaps, None, 30, Some(Full), &|_| true)
                .unwrap()
                .kind,
            Full
        );
        let snaps = [
            snap("20240101000000", Some(Full)),
            snap("20240301000000", None),
        ];
        let p = plan_export(&snaps, None, 30, Some(Incremental), &|_| true).unwrap();
        assert_eq!(
            (p.kind, p.base.unwrap().snap().to_owned()),
            (Incremental, "20240101000000".to_owned())
        );
        let snaps = [snap("20240101000000", None)];
        assert!(matches!(
            plan_export(&snaps, None, 30, Some(Incremental), &|_| true),
            Err(PlanError::NoFullBase(_))
        ));
    }

    #[test]
    fn explicit_targets_and_missing_snapshots() {
        let snaps = [
            snap("20240101000000", Some(Full)),
            snap("20240102000000", None),
        ];
        let p = plan_export(&snaps, Some("20240101000000"), 30, None, &|_| true).unwrap();
        assert_eq!(p.kind, Full, "the base of a full is never itself");
        assert_eq!(
            plan_export(&snaps, Some("20990101000000"), 30, None, &|_| true).unwrap_err(),
            PlanError::NoSuchSnapshot("20990101000000".into())
        );
        assert_eq!(
            plan_export(&[], None, 30, None, &|_| true).unwrap_err(),
            PlanError::NoSnapshot
        );
    }
}
