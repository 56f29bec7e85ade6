//! Pure retention decisions: which of zfs2cloud's snapshots and which local
//! exports may go. The executors are in [`crate::ops::prune`].

use chrono::{DateTime, Utc};

use crate::config::Config;

use crate::model::{
    ExportKind, LocalExport, SnapTime, SnapshotInfo, SnapshotName, SnapshotTimeZone,
};
use std::path::PathBuf;

use chrono::TimeDelta;

/// What to do with one snapshot or export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Remove it.
    Remove,
    /// Keep it, for this reason.
    Keep(String),
}

/// A snapshot and what pruning does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDecision {
    /// The snapshot.
    pub name: SnapshotName,
    /// Remove or keep, and why.
    pub verdict: Verdict,
}

/// The inputs of snapshot retention.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotRetention<'a> {
    /// The time of the run.
    pub now: DateTime<Utc>,
    /// Snapshots older than this many days may go.
    pub oldest_snapshot_days: u32,
    /// How snapshot names are read as times.
    pub zone: SnapshotTimeZone,
    /// The configured remote: an export counts as uploaded only if it was
    /// confirmed on this remote.
    pub remote: &'a str,
}

impl<'a> SnapshotRetention<'a> {
    /// The retention inputs of `prune-snapshots` for a run at `now`.
    #[must_use]
    pub fn from_config(config: &'a Config, now: DateTime<Utc>) -> Self {
        Self {
            now,
            // [retention.local] is not applied yet: keep everything.
            oldest_snapshot_days: config.oldest_snapshot_days.unwrap_or(u32::MAX),
            zone: config.snapshot_time_zone,
            remote: &config.remote,
        }
    }
}

/// Decides which snapshots `prune-snapshots` destroys: zfs2cloud's own
/// snapshots older than `oldest_snapshot_days`, except
///
/// * the newest of zfs2cloud's snapshots;
/// * a held snapshot (the hold marks the full base of the current chain);
/// * the newest full, held or not: the base of the current chain;
/// * a snapshot whose export is not confirmed uploaded;
///
/// and never a snapshot that does not match zfs2cloud's name pattern (those
/// are reported as kept).
#[must_use]
pub fn plan_snapshot_prune(
    snapshots: &[SnapshotInfo],
    policy: &SnapshotRetention<'_>,
) -> Vec<SnapshotDecision> {
    let SnapshotRetention {
        now,
        oldest_snapshot_days,
        zone,
        remote,
    } = *policy;
    fn own(s: &SnapshotInfo) -> Option<(SnapTime, &SnapshotInfo)> {
        s.own_time().map(|t| (t, s))
    }
    let newest = snapshots
        .iter()
        .filter_map(own)
        .max_by_key(|(t, _)| *t)
        .map(|(_, s)| &s.name);
    let current_base = snapshots
        .iter()
        .filter(|s| s.kind == Some(ExportKind::Full))
        .filter_map(own)
        .max_by_key(|(t, _)| *t)
        .map(|(_, s)| &s.name);
    let max_age = TimeDelta::days(i64::from(oldest_snapshot_days));
    let mut out: Vec<SnapshotDecision> = snapshots
        .iter()
        .map(|s| {
            let keep = |why: &str| Verdict::Keep(why.to_owned());
            let verdict = match s.own_time() {
                None => keep("not made by zfs2cloud"),
                Some(_) if Some(&s.name) == newest => keep("the newest snapshot"),
                Some(_) if s.userrefs > 0 => {
                    keep("held (the full base of the current chain, or held by someone else)")
                }
                Some(_) if Some(&s.name) == current_base => {
                    keep("the full base of the current chain")
                }
                Some(_) if s.kind.is_some() && !s.uploaded_to(remote) => {
                    keep("its export is not confirmed uploaded")
                }
                Some(t) => {
                    let age = now - t.to_utc(zone);
                    if age > max_age {
                        Verdict::Remove
                    } else {
                        Verdict::Keep(format!("younger than {oldest_snapshot_days} days"))
                    }
                }
            };
            SnapshotDecision {
                name: s.name.clone(),
                verdict,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.snap().cmp(b.name.snap()));
    out
}

/// A local export and what pruning does with it.
#[derive(Debug, Clone)]
pub struct ExportDecision {
    /// The export directory.
    pub dir: PathBuf,
    /// Remove or keep, and why.
    pub verdict: Verdict,
}

/// Decides which local exports `prune-intermediates` deletes: every export
/// but the newest, and of those only the ones whose upload is confirmed.
/// An export that was never uploaded is kept (the caller warns loudly).
#[must_use]
pub fn plan_export_prune(
    exports: &[LocalExport],
    uploaded: &dyn Fn(&LocalExport) -> bool,
) -> Vec<ExportDecision> {
    let newest = exports.iter().filter_map(|e| e.snapshot.own_time()).max();
    exports
        .iter()
        .map(|e| {
            let verdict = if e.snapshot.own_time() == newest {
                Verdict::Keep("the newest export".into())
            } else if uploaded(e) {
                Verdict::Remove
            } else {
                Verdict::Keep("NOT UPLOADED: its upload was never confirmed".into())
            };
            ExportDecision {
                dir: e.dir.clone(),
                verdict,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::Manifest;

    fn info(name: &str, kind: Option<ExportKind>, userrefs: u64, uploaded: bool) -> SnapshotInfo {
        SnapshotInfo {
            name: SnapshotName::parse(&format!("tank/data@{name}")).unwrap(),
            userrefs,
            kind,
            base: None,
            uploaded: uploaded.then(|| {
                let dir = crate::model::ExportLayout::dir_name(
                    &SnapshotName::parse(&format!("tank/data@{name}")).unwrap(),
                    kind.unwrap_or(ExportKind::Full),
                );
                crate::model::upload_record("2024-01-01T00:00:00Z", &dir, REMOTE)
            }),
        }
    }

    const REMOTE: &str = "b2:bucket/data";

    fn policy(now: &str, days: u32) -> SnapshotRetention<'static> {
        SnapshotRetention {
            now: at(now),
            oldest_snapshot_days: days,
            zone: SnapshotTimeZone::Utc,
            remote: REMOTE,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn verdicts(d: &[SnapshotDecision]) -> Vec<(String, bool)> {
        d.iter()
            .map(|d| (d.name.snap().to_owned(), d.verdict == Verdict::Remove))
            .collect()
    }

    use ExportKind::{Full, Incremental};

    #[test]
    fn old_snapshots_go_except_the_protected_ones() {
        let snaps = [
            info("20240101000000", Some(Full), 0, true), // old full, replaced
            info("20240102000000", Some(Incremental), 0, true), // old, uploaded
            info("20240103000000", Some(Incremental), 0, false), // old, NOT uploaded
            info("20240104000000", None, 0, false),      // old, never exported
            info("20240201000000", Some(Full), 1, true), // held base
            info("20240301000000", Some(Incremental), 0, true), // young
            info("manual", None, 0, false),              // foreign
            info("autosnap_2023-01-01_00:00:00_daily", None, 0, false),
            info("20240310000000", Some(Incremental), 0, true), // newest
        ];
        let d = plan_snapshot_prune(&snaps, &policy("2024-03-15T00:00:00Z", 30));
        let removed: Vec<String> = verdicts(&d)
            .into_iter()
            .filter(|(_, r)| *r)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            removed,
            ["20240101000000", "20240102000000", "20240104000000"]
        );
        let why = |n: &str| match &d.iter().find(|d| d.name.snap() == n).unwrap().verdict {
            Verdict::Keep(w) => w.clone(),
            Verdict::Remove => "remove".into(),
        };
        assert!(why("20240103000000").contains("not confirmed uploaded"));
        assert!(why("20240201000000").contains("held"));
        assert!(why("manual").contains("not made by zfs2cloud"));
        assert!(why("20240310000000").contains("newest"));
        assert!(why("20240301000000").contains("younger"));
    }

    #[test]
    fn an_upload_to_another_remote_does_not_count() {
        let mut old = info("20240101000000", Some(Incremental), 0, true);
        old.uploaded = Some(crate::model::upload_record(
            "t",
            "20240101000000",
            "other:remote",
        ));
        let snaps = [old, info("20240301000000", None, 0, false)];
        let d = plan_snapshot_prune(&snaps, &policy("2024-03-15T00:00:00Z", 30));
        assert!(verdicts(&d).iter().all(|(_, removed)| !removed), "{d:?}");
    }

    #[test]
    fn the_newest_full_is_kept_even_without_its_hold() {
        let snaps = [
            info("20240101000000", Some(Full), 0, true),
            info("20240102000000", Some(Incremental), 0, true),
        ];
        let d = plan_snapshot_prune(&snaps, &policy("2025-01-01T00:00:00Z", 30));
        assert!(verdicts(&d).iter().all(|(_, removed)| !removed), "{d:?}");
    }

    #[test]
    fn the_newest_snapshot_is_kept_however_old() {
        let snaps = [info("20200101000000", None, 0, false)];
        let d = plan_snapshot_prune(&snaps, &policy("2025-01-01T00:00:00Z", 1));
        assert_eq!(verdicts(&d), [("20200101000000".to_owned(), false)]);
    }

    fn export(name: &str) -> LocalExport {
        LocalExport {
            dir: PathBuf::from(format!("/x/{name}")),
            dir_name: name.to_owned(),
            snapshot: SnapshotName::parse(&format!("tank/data@{}", name.trim_end_matches("-full")))
                .unwrap(),
            manifest: Manifest {
                format: 1,
                tool: String::new(),
                tool_version: String::new(),
                dataset: "tank/data".into(),
                snapshot: String::new(),
                kind: Full,
                base: None,
                created_at: String::new(),
                encryption: String::new(),
                compression: String::new(),
                split_size: 0,
                total_size: 0,
                chunks: vec![],
                send_flags: crate::model::SendFlags::default(),
            },
        }
    }

    #[test]
    fn only_uploaded_older_exports_are_removed() {
        let exports = [
            export("20240101000000-full"),
            export("20240102000000"),
            export("20240103000000"),
        ];
        let uploaded = |e: &LocalExport| e.snapshot.snap() != "20240102000000";
        let d = plan_export_prune(&exports, &uploaded);
        let v: Vec<(&str, bool)> = d
            .iter()
            .map(|d| (d.dir.to_str().unwrap(), d.verdict == Verdict::Remove))
            .collect();
        assert_eq!(
            v,
            [
                ("/x/20240101000000-full", true),
                ("/x/20240102000000", false),
                ("/x/20240103000000", false)
            ]
        );
    }
}
