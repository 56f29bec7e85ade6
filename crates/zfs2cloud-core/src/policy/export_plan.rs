//! Pure decisions: which snapshot to export, whether as a full or as an
//! incremental against which base, and which snapshots must stay because a
//! future incremental will be based on them.
//!
//! Three strategies ([`Strategy`]) pick the base of an incremental:
//! `since_last_full` (the last full: one bad incremental never breaks a
//! later one), `chain` (the previous backup: the least upload, the longest
//! restore), and `levels` (dump levels: a backup of level *k* is based on
//! the newest backup of a level below *k*, so a restore replays at most one
//! backup per level). These functions take the snapshot list and return a
//! plan; they run nothing, so every rule is unit-tested.

use crate::config::{Config, IncrementalStrategy};
use crate::model::ExportKind;
use crate::model::SendFlags;
use crate::model::SnapshotInfo;
use crate::model::{recipient_set, recipients_compatible};
use crate::model::{SnapTime, SnapshotName};

/// What to export and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPlan {
    /// The snapshot to export.
    pub snapshot: SnapshotName,
    /// Full or incremental.
    pub kind: ExportKind,
    /// The base of an incremental (chosen by the [`Strategy`]).
    pub base: Option<SnapshotName>,
    /// Its level: 0 for a full; for an incremental one more than what
    /// it may be based on ([`SnapshotInfo::level`]).
    pub level: u32,
    /// Why, for the log.
    pub reason: String,
    /// The `zfs send` flags it is sent with (recorded on the snapshot).
    pub send_flags: SendFlags,
    /// The fingerprints it is encrypted to (`gpg-recipients`; recorded on
    /// a full's snapshot), empty otherwise.
    pub recipients: Vec<String>,
    /// What zfs2cloud holds once this export is recorded: the snapshots a
    /// future incremental may be based on ([`future_bases`]). Every other
    /// hold of zfs2cloud's is released.
    pub holds: Vec<SnapshotName>,
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
    /// `--incremental` was forced, but the last full was encrypted
    /// otherwise (to the passphrase, or to other public keys): one chain
    /// never mixes encryptions.
    #[error("an incremental export was requested, but the last full {base} was encrypted {base_encryption} and this export is encrypted {encryption}; one chain never mixes encryptions (a restore would need both secrets), so export a full (--full or no option)")]
    IncompatibleEncryption {
        /// The last full (part after `@`).
        base: String,
        /// How it was encrypted, in words.
        base_encryption: String,
        /// How this export is encrypted, in words.
        encryption: String,
    },
    /// `--incremental` was forced, but the last full was sent with other
    /// flags: the incremental could not be received onto it.
    #[error("an incremental export was requested, but the last full {base} was sent with flags {base_flags} and this config sends {flags}; an incremental is only received onto a full sent with the same flags, so export a full (--full or no option)")]
    IncompatibleBase {
        /// The last full (part after `@`).
        base: String,
        /// Its flags, as recorded (`unknown` if unreadable).
        base_flags: String,
        /// The configured flags.
        flags: String,
    },
}

/// What the planner needs to know about the fulls that could be a base.
pub struct BaseFacts<'a> {
    /// Whether a full may be the base of a new incremental. The caller
    /// accepts a full whose upload is confirmed, or whose complete export
    /// is still on local disk (the upload step sends a base before any
    /// incremental on it). A full that is neither never gets an
    /// incremental: the next export is full instead, so no incremental is
    /// ever uploaded whose base is missing remotely.
    pub usable: &'a dyn Fn(&SnapshotInfo) -> bool,
    /// The `zfs send` flags a full was sent with; `None` if its record
    /// cannot be read (which matches no flags). A full with no record
    /// was sent with none.
    pub flags: &'a dyn Fn(&SnapshotInfo) -> Option<SendFlags>,
    /// The fingerprints a full was encrypted to (empty: not to public
    /// keys); `None` if its record cannot be read (which matches none).
    pub recipients: &'a dyn Fn(&SnapshotInfo) -> Option<Vec<String>>,
    /// The fingerprints this export is encrypted to (empty: not to public
    /// keys). An incremental is only based on a full encrypted to the
    /// same ([`recipients_compatible`]).
    pub export_recipients: &'a [String],
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

/// How incrementals are based, with its periods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Every incremental on the last full; a full every `full_every_days`.
    SinceLastFull {
        /// Days between fulls.
        full_every_days: u32,
    },
    /// Every incremental on the previous backup; a full every
    /// `full_every_days`.
    Chain {
        /// Days between fulls.
        full_every_days: u32,
    },
    /// Dump levels: `days[k]` is how often a backup of level *k* is made
    /// (`days[0]`: fulls), and a backup of level *k* is based on the newest
    /// backup of a level below *k*. Days decrease; there are at least two.
    Levels {
        /// Days between backups of each level.
        days: Vec<u32>,
    },
}

impl Strategy {
    /// The strategy a configuration asks for.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        let full_every_days = config.full_every_x_days;
        match config.incremental_strategy {
            IncrementalStrategy::SinceLastFull => Self::SinceLastFull { full_every_days },
            IncrementalStrategy::Chain => Self::Chain { full_every_days },
            IncrementalStrategy::Levels => Self::Levels {
                days: config.levels.clone(),
            },
        }
    }

    /// Days between fulls.
    #[must_use]
    pub fn full_every_days(&self) -> u32 {
        match self {
            Self::SinceLastFull { full_every_days } | Self::Chain { full_every_days } => {
                *full_every_days
            }
            Self::Levels { days } => days.first().copied().unwrap_or(1),
        }
    }
}

/// Decides how to export.
///
/// * `target`: a snapshot name (`snap` part), or `None` for the newest of
///   zfs2cloud's own snapshots;
/// * `strategy`: how often a full is made, and what an incremental is
///   based on ([`Strategy`]);
/// * `force`: `--full` / `--incremental`;
/// * `send_flags`: the flags this export is sent with;
/// * `bases`: which exports may be a base, and the fulls' flags
///   ([`BaseFacts`]).
///
/// Without `force`, the export is full if there is no earlier full, if
/// the last full was sent with other flags than `send_flags` (an
/// incremental is received only onto a full of the same kind; see
/// [`SendFlags::compatible_with`]), or if the last full is the strategy's
/// full period or more older than the target (compared by the times in
/// the names, so the result does not depend on when the export runs);
/// otherwise incremental, on the base the strategy picks among the usable
/// exports since that full.
///
/// # Errors
///
/// [`PlanError`] when there is nothing (valid) to export, or no
/// (compatible) base for a forced incremental.
pub fn plan_export(
    snapshots: &[SnapshotInfo],
    target: Option<&str>,
    strategy: &Strategy,
    force: Option<ExportKind>,
    send_flags: &SendFlags,
    bases: &BaseFacts<'_>,
) -> Result<ExportPlan, PlanError> {
    let target = find_target(snapshots, target)?;
    let target_time = target
        .own_time()
        .ok_or_else(|| PlanError::NotOwn(target.name.to_string()))?;
    let last_full = last_full_before(snapshots, target_time, bases.usable);
    let unusable = last_full_before(snapshots, target_time, &|_| true)
        .filter(|f| last_full.is_none_or(|u| u.name != f.name));
    let full = |reason: String| ExportPlan {
        snapshot: target.name.clone(),
        kind: ExportKind::Full,
        base: None,
        level: 0,
        reason,
        send_flags: send_flags.clone(),
        recipients: bases.export_recipients.to_vec(),
        holds: Vec::new(),
    };
    let incremental = |last_full: &SnapshotInfo, forced: bool| {
        let (base, level, why) =
            incremental_base(strategy, snapshots, last_full, target_time, bases.usable);
        let forced = if forced {
            " (forced by --incremental)"
        } else {
            ""
        };
        ExportPlan {
            snapshot: target.name.clone(),
            kind: ExportKind::Incremental,
            base: Some(base.name.clone()),
            level,
            reason: format!("incremental export against {why}{forced}"),
            send_flags: send_flags.clone(),
            recipients: bases.export_recipients.to_vec(),
            holds: Vec::new(),
        }
    };
    let mismatch = last_full.and_then(|full| flags_mismatch(full, send_flags, bases));
    let sealed_apart = last_full.and_then(|full| recipients_mismatch(full, bases));
    let mut plan = match (force, last_full, unusable) {
        (Some(ExportKind::Full), _, _) => Ok(full("full export forced by --full".into())),
        (Some(ExportKind::Incremental), None, _) => {
            Err(PlanError::NoFullBase(target.name.dataset().to_string()))
        }
        (Some(ExportKind::Incremental), Some(base), _) if sealed_apart.is_some() => {
            Err(PlanError::IncompatibleEncryption {
                base: base.name.snap().to_owned(),
                base_encryption: sealed_apart.unwrap_or_default(),
                encryption: encryption_in_words(Some(bases.export_recipients)),
            })
        }
        (Some(ExportKind::Incremental), Some(base), _) if mismatch.is_some() => {
            Err(PlanError::IncompatibleBase {
                base: base.name.snap().to_owned(),
                base_flags: mismatch.unwrap_or_default(),
                flags: send_flags.to_string(),
            })
        }
        (Some(ExportKind::Incremental), Some(base), _) => Ok(incremental(base, true)),
        (None, None, None) => Ok(full("full export: there is no earlier full export".into())),
        (None, _, Some(newest)) => Ok(full(format!(
            "full export: the last full {} was never confirmed uploaded and its local export is gone, so nothing may be based on it",
            newest.name.snap()
        ))),
        (None, Some(base), None) if sealed_apart.is_some() => Ok(full(format!(
            "full export: the last full {} was encrypted {}, this export is encrypted {}, and \
             one chain never mixes encryptions",
            base.name.snap(),
            sealed_apart.unwrap_or_default(),
            encryption_in_words(Some(bases.export_recipients)),
        ))),
        (None, Some(base), None) if mismatch.is_some() => Ok(full(format!(
            "full export: the last full {} was sent with flags {}, this config sends {}, \
             and an incremental is only received onto a full sent with the same flags",
            base.name.snap(),
            mismatch.unwrap_or_default(),
            send_flags
        ))),
        (None, Some(base), None) => {
            let period = strategy.full_every_days();
            let age = days_between(base, target_time);
            if age >= f64::from(period) {
                Ok(full(format!(
                    "full export: the last full {} is {age:.1} days old (fulls every {period} days)",
                    base.name.snap(),
                )))
            } else {
                Ok(incremental(base, false))
            }
        }
    }?;
    plan.holds = holds_after(strategy, snapshots, &plan);
    Ok(plan)
}

/// [`future_bases`] once `plan`'s export is recorded.
#[must_use]
pub fn holds_after(
    strategy: &Strategy,
    snapshots: &[SnapshotInfo],
    plan: &ExportPlan,
) -> Vec<SnapshotName> {
    let mut recorded = snapshots.to_vec();
    if let Some(s) = recorded.iter_mut().find(|s| s.name == plan.snapshot) {
        s.kind = Some(plan.kind);
        s.level = Some(plan.level);
        s.base = plan.base.as_ref().map(|b| b.snap().to_owned());
    }
    future_bases(strategy, &recorded)
}

/// The snapshot to export: the one named, or the newest own one.
fn find_target<'a>(
    snapshots: &'a [SnapshotInfo],
    target: Option<&str>,
) -> Result<&'a SnapshotInfo, PlanError> {
    match target {
        None => latest_own(snapshots).ok_or(PlanError::NoSnapshot),
        Some(name) => snapshots
            .iter()
            .find(|s| s.name.snap() == name || s.name.to_string() == name)
            .ok_or_else(|| PlanError::NoSuchSnapshot(name.to_owned())),
    }
}

/// Days from `from`'s name time to `to`.
fn days_between(from: &SnapshotInfo, to: SnapTime) -> f64 {
    let from = from.own_time().unwrap_or(to);
    (to.naive() - from.naive()).num_seconds() as f64 / 86_400.0
}

/// The base of an incremental of a snapshot taken at `target_time`, its
/// level, and the base in words. Only usable exports since `last_full`
/// (itself usable) are considered, so every level obeys the rule that
/// nothing is based on an export that is neither confirmed on the remote
/// nor complete on local disk.
fn incremental_base<'a>(
    strategy: &Strategy,
    snapshots: &'a [SnapshotInfo],
    last_full: &'a SnapshotInfo,
    target_time: SnapTime,
    usable: &dyn Fn(&SnapshotInfo) -> bool,
) -> (&'a SnapshotInfo, u32, String) {
    let since_full = exported_since(snapshots, last_full, Some(target_time));
    let newest = |max_level: u32| {
        since_full
            .iter()
            .copied()
            .filter(|s| usable(s) && s.level().is_some_and(|l| l <= max_level))
            .max_by_key(|s| s.own_time())
            .unwrap_or(last_full)
    };
    match strategy {
        Strategy::SinceLastFull { .. } => (
            last_full,
            1,
            format!("the last full {}", last_full.name.snap()),
        ),
        Strategy::Chain { .. } => {
            let base = newest(u32::MAX);
            let level = base.level().unwrap_or(0).saturating_add(1);
            (
                base,
                level,
                format!("the previous backup {}", base.name.snap()),
            )
        }
        Strategy::Levels { days } => {
            let level = due_level(days, &newest, target_time);
            let base = newest(level - 1);
            let why = format!(
                "{} (level {level}: based on the newest backup of a level below {level})",
                base.name.snap()
            );
            (base, level, why)
        }
    }
}

/// The exports of own snapshots taken from `full` (included) on, up to
/// `before` (excluded) if given.
fn exported_since<'a>(
    snapshots: &'a [SnapshotInfo],
    full: &SnapshotInfo,
    before: Option<SnapTime>,
) -> Vec<&'a SnapshotInfo> {
    let from = full.own_time();
    snapshots
        .iter()
        .filter(|s| s.kind.is_some())
        .filter(|s| {
            s.own_time()
                .is_some_and(|t| Some(t) >= from && before.is_none_or(|b| t < b))
        })
        .collect()
}

/// The level of a backup at `target_time` under `days` (at least two
/// entries): the lowest level *k* ≥ 1 whose newest backup of level ≤ *k*
/// is `days[k]` days old or more, else the deepest level.
fn due_level<'a>(
    days: &[u32],
    newest: &dyn Fn(u32) -> &'a SnapshotInfo,
    target_time: SnapTime,
) -> u32 {
    let deepest = u32::try_from(days.len().saturating_sub(1))
        .unwrap_or(1)
        .max(1);
    (1..deepest)
        .find(|&k| {
            let period = days.get(k as usize).copied().unwrap_or(1);
            days_between(newest(k), target_time) >= f64::from(period)
        })
        .unwrap_or(deepest)
}

/// The snapshots a future incremental may be based on under `strategy`:
/// what zfs2cloud holds. `since_last_full`: the newest full; `chain`: the
/// newest export; `levels`: for each level *k* ≥ 1, the newest export of
/// a level below *k* since the newest full. Decided from the recorded
/// exports alone, so an export holds its future bases as soon as it is
/// recorded.
#[must_use]
pub fn future_bases(strategy: &Strategy, snapshots: &[SnapshotInfo]) -> Vec<SnapshotName> {
    let Some(full) = snapshots
        .iter()
        .filter(|s| s.kind == Some(ExportKind::Full))
        .filter(|s| s.own_time().is_some())
        .max_by_key(|s| s.own_time())
    else {
        return Vec::new();
    };
    let since_full = exported_since(snapshots, full, None);
    let newest_below = |level: u32| {
        since_full
            .iter()
            .filter(|s| s.level().is_some_and(|l| l < level))
            .max_by_key(|s| s.own_time())
            .map(|s| s.name.clone())
    };
    let mut out: Vec<SnapshotName> = match strategy {
        Strategy::SinceLastFull { .. } => vec![full.name.clone()],
        Strategy::Chain { .. } => newest_below(u32::MAX).into_iter().collect(),
        Strategy::Levels { days } => (1..u32::try_from(days.len()).unwrap_or(1))
            .filter_map(newest_below)
            .collect(),
    };
    out.sort_by(|a, b| a.snap().cmp(b.snap()));
    out.dedup();
    out
}

impl std::fmt::Debug for BaseFacts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseFacts").finish_non_exhaustive()
    }
}

/// The flags `full` was sent with, in words, if an incremental sent with
/// `flags` cannot be based on it.
fn flags_mismatch(full: &SnapshotInfo, flags: &SendFlags, bases: &BaseFacts<'_>) -> Option<String> {
    match (bases.flags)(full) {
        Some(base_flags) if flags.compatible_with(&base_flags) => None,
        Some(base_flags) => Some(base_flags.to_string()),
        None => Some("unknown (its record cannot be read)".to_owned()),
    }
}

/// How `full` was encrypted, in words, if an incremental encrypted to
/// `bases.export_recipients` cannot be based on it.
fn recipients_mismatch(full: &SnapshotInfo, bases: &BaseFacts<'_>) -> Option<String> {
    let base = (bases.recipients)(full);
    match &base {
        Some(r) if recipients_compatible(bases.export_recipients, r) => None,
        _ => Some(encryption_in_words(base.as_deref())),
    }
}

/// "to the public keys A, B", "without public keys (…)", or unknown.
fn encryption_in_words(recipients: Option<&[String]>) -> String {
    match recipients {
        None => "in an unknown way (its record cannot be read)".to_owned(),
        Some([]) => "without public keys (with the passphrase, or not at all)".to_owned(),
        Some(r) => format!(
            "to the public keys {}",
            recipient_set(r).into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod year;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn snap(name: &str, kind: Option<ExportKind>) -> SnapshotInfo {
        SnapshotInfo {
            level: None,
            name: SnapshotName::parse(&format!("tank/data@{name}")).unwrap(),
            userrefs: 0,
            kind,
            base: None,
            uploaded: None,
        }
    }

    use ExportKind::{Full, Incremental};

    /// `plan_export` with no flags configured or recorded anywhere.
    fn plan(
        snapshots: &[SnapshotInfo],
        target: Option<&str>,
        days: u32,
        force: Option<ExportKind>,
        usable: &dyn Fn(&SnapshotInfo) -> bool,
    ) -> Result<ExportPlan, PlanError> {
        let bases = BaseFacts {
            usable,
            flags: &|_| Some(SendFlags::default()),
            recipients: &|_| Some(Vec::new()),
            export_recipients: &[],
        };
        plan_export(
            snapshots,
            target,
            &Strategy::SinceLastFull {
                full_every_days: days,
            },
            force,
            &SendFlags::default(),
            &bases,
        )
    }

    #[test]
    fn first_export_is_full() {
        let snaps = [snap("20240101000000", None)];
        let p = plan(&snaps, None, 30, None, &|_| true).unwrap();
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
        let p = plan(&snaps, None, 30, None, &|_| true).unwrap();
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
        assert_eq!(plan(&snaps, None, 30, None, &|_| true).unwrap().kind, Full);
        assert_eq!(
            plan(&snaps, None, 36, None, &|_| true).unwrap().kind,
            Incremental
        );
        // Exactly full_every_x_days old: full.
        let snaps = [
            snap("20240101000000", Some(Full)),
            snap("20240131000000", None),
        ];
        assert_eq!(plan(&snaps, None, 30, None, &|_| true).unwrap().kind, Full);
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
        let p = plan(&snaps, None, 30, None, &|_| true).unwrap();
        assert_eq!(p.snapshot.snap(), "20240101000000");
        assert_eq!(p.kind, Full, "a foreign snapshot marked full is no base");
        assert_eq!(
            plan(&snaps, Some("zzz-manual"), 30, None, &|_| true).unwrap_err(),
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
        let p = plan(&snaps, None, 30, None, &uploaded_or_local).unwrap();
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
        assert_eq!(plan(&snaps, None, 60, None, &only_old).unwrap().kind, Full);
        assert!(matches!(
            plan(&snaps, None, 60, Some(Incremental), &uploaded_or_local),
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
            plan(&snaps, None, 30, Some(Full), &|_| true).unwrap().kind,
            Full
        );
        let snaps = [
            snap("20240101000000", Some(Full)),
            snap("20240301000000", None),
        ];
        let p = plan(&snaps, None, 30, Some(Incremental), &|_| true).unwrap();
        assert_eq!(
            (p.kind, p.base.unwrap().snap().to_owned()),
            (Incremental, "20240101000000".to_owned())
        );
        let snaps = [snap("20240101000000", None)];
        assert!(matches!(
            plan(&snaps, None, 30, Some(Incremental), &|_| true),
            Err(PlanError::NoFullBase(_))
        ));
    }

    #[test]
    fn explicit_targets_and_missing_snapshots() {
        let snaps = [
            snap("20240101000000", Some(Full)),
            snap("20240102000000", None),
        ];
        let p = plan(&snaps, Some("20240101000000"), 30, None, &|_| true).unwrap();
        assert_eq!(p.kind, Full, "the base of a full is never itself");
        assert_eq!(
            plan(&snaps, Some("20990101000000"), 30, None, &|_| true).unwrap_err(),
            PlanError::NoSuchSnapshot("20990101000000".into())
        );
        assert_eq!(
            plan(&[], None, 30, None, &|_| true).unwrap_err(),
            PlanError::NoSnapshot
        );
    }

    /// `plan_export` with `flags` configured and each full's recorded
    /// flags from `recorded` (by snap name; absent: none).
    /// The full of 2024-01-01 was sent raw.
    const RAW_FULL: &[(&str, Option<&[&str]>)] = &[("20240101000000", Some(&["raw"]))];

    /// The full of 2024-01-01 and a snapshot `next` to export.
    fn full_then(next: &str) -> [SnapshotInfo; 2] {
        [snap("20240101000000", Some(Full)), snap(next, None)]
    }

    fn plan_with_flags(
        snapshots: &[SnapshotInfo],
        force: Option<ExportKind>,
        flags: &[&str],
        recorded: &[(&str, Option<&[&str]>)],
    ) -> Result<ExportPlan, PlanError> {
        let flags_of = |s: &SnapshotInfo| match recorded.iter().find(|(n, _)| *n == s.name.snap()) {
            None => Some(SendFlags::default()),
            Some((_, None)) => None,
            Some((_, Some(names))) => Some(SendFlags::parse_names(names).unwrap()),
        };
        let bases = BaseFacts {
            usable: &|_| true,
            flags: &flags_of,
            recipients: &|_| Some(Vec::new()),
            export_recipients: &[],
        };
        let flags = SendFlags::parse_names(flags).unwrap();
        let strategy = Strategy::SinceLastFull {
            full_every_days: 30,
        };
        plan_export(snapshots, None, &strategy, force, &flags, &bases)
    }

    #[test]
    fn a_flag_change_forces_a_full_and_says_why() {
        let snaps = full_then("20240102000000");
        // Same flags: incremental, and the plan carries the flags.
        let p = plan_with_flags(&snaps, None, &["raw"], RAW_FULL).unwrap();
        assert_eq!(p.kind, Incremental);
        assert_eq!(p.send_flags.args(), ["-w"]);
        // Flags added since the full (which has no record: none).
        let p = plan_with_flags(&snaps, None, &["compressed", "raw"], &[]).unwrap();
        assert_eq!(p.kind, Full);
        assert!(
            p.reason.contains(
                "the last full 20240101000000 was sent with flags none, this config sends -w -c"
            ),
            "{}",
            p.reason
        );
        // Flags removed since the full.
        let p = plan_with_flags(&snaps, None, &[], RAW_FULL).unwrap();
        assert_eq!(p.kind, Full);
        assert!(
            p.reason
                .contains("sent with flags -w, this config sends none"),
            "{}",
            p.reason
        );
        // A subset is a change too.
        let p = plan_with_flags(
            &snaps,
            None,
            &["raw"],
            &[("20240101000000", Some(&["raw", "large_blocks"]))],
        )
        .unwrap();
        assert_eq!(p.kind, Full);
        // An unreadable record matches nothing.
        let p = plan_with_flags(&snaps, None, &[], &[("20240101000000", None)]).unwrap();
        assert_eq!(p.kind, Full);
        assert!(p.reason.contains("unknown"), "{}", p.reason);
    }

    #[test]
    fn a_forced_incremental_onto_a_full_of_other_flags_is_refused() {
        let snaps = full_then("20240102000000");
        let err = plan_with_flags(&snaps, Some(Incremental), &["raw"], &[]).unwrap_err();
        assert_eq!(
            err,
            PlanError::IncompatibleBase {
                base: "20240101000000".into(),
                base_flags: "none".into(),
                flags: "-w".into(),
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("--full"), "{msg}");
        // Same flags: forced incremental as before; --full is always fine.
        let p = plan_with_flags(&snaps, Some(Incremental), &["raw"], RAW_FULL).unwrap();
        assert_eq!(p.kind, Incremental);
        assert_eq!(
            plan_with_flags(&snaps, Some(Full), &["raw"], &[])
                .unwrap()
                .kind,
            Full
        );
    }

    const KEY_A: &str = "634AF28DB8567DDC2A359B486EB4C2A854F1F4DB";
    const KEY_B: &str = "FA341A40D7F133C96EF905B2C0EC28198A95D41B";

    /// `plan_export` of an export encrypted to `keys`, onto the full of
    /// 2024-01-01 encrypted to `full_keys` (`None`: unreadable record).
    fn plan_with_keys(
        force: Option<ExportKind>,
        keys: &[&str],
        full_keys: Option<&[&str]>,
    ) -> Result<ExportPlan, PlanError> {
        let owned = |k: &[&str]| k.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let export_recipients = owned(keys);
        let recipients_of = |_: &SnapshotInfo| full_keys.map(owned);
        let bases = BaseFacts {
            usable: &|_| true,
            flags: &|_| Some(SendFlags::default()),
            recipients: &recipients_of,
            export_recipients: &export_recipients,
        };
        let strategy = Strategy::SinceLastFull {
            full_every_days: 30,
        };
        let snaps = full_then("20240102000000");
        plan_export(
            &snaps,
            None,
            &strategy,
            force,
            &SendFlags::default(),
            &bases,
        )
    }

    #[test]
    fn a_switch_of_encryption_makes_the_next_export_a_full() {
        // The same keys (in any order): incremental.
        let p = plan_with_keys(None, &[KEY_A, KEY_B], Some(&[KEY_B, KEY_A])).unwrap();
        assert_eq!(p.kind, Incremental);
        // Passphrase (or none) before and after: incremental, as ever.
        assert_eq!(
            plan_with_keys(None, &[], Some(&[])).unwrap().kind,
            Incremental
        );
        // Passphrase → public keys.
        let p = plan_with_keys(None, &[KEY_A], Some(&[])).unwrap();
        assert_eq!(p.kind, Full);
        assert!(
            p.reason.contains("was encrypted without public keys")
                && p.reason.contains(&format!(
                    "this export is encrypted to the public keys {KEY_A}"
                ))
                && p.reason.contains("never mixes"),
            "{}",
            p.reason
        );
        // Public keys → passphrase, other keys, an unreadable record.
        for (keys, full) in [
            (&[][..], Some(&[KEY_A][..])),
            (&[KEY_B][..], Some(&[KEY_A][..])),
            (&[KEY_A, KEY_B][..], Some(&[KEY_A][..])),
            (&[KEY_A][..], None),
        ] {
            assert_eq!(
                plan_with_keys(None, keys, full).unwrap().kind,
                Full,
                "{keys:?} on {full:?}"
            );
        }
    }

    #[test]
    fn a_forced_incremental_onto_a_full_encrypted_otherwise_is_refused() {
        let err = plan_with_keys(Some(Incremental), &[KEY_A], Some(&[])).unwrap_err();
        assert!(
            matches!(&err, PlanError::IncompatibleEncryption { base, .. } if base == "20240101000000"),
            "{err:?}"
        );
        assert!(err.to_string().contains("--full"), "{err}");
        let p = plan_with_keys(Some(Incremental), &[KEY_A], Some(&[KEY_A])).unwrap();
        assert_eq!(p.kind, Incremental);
    }

    #[test]
    fn an_old_enough_full_is_replaced_whatever_its_flags() {
        let snaps = full_then("20240301000000");
        let p = plan_with_flags(&snaps, None, &["raw"], RAW_FULL).unwrap();
        assert_eq!(p.kind, Full);
        assert!(p.reason.contains("days old"), "{}", p.reason);
    }
}
