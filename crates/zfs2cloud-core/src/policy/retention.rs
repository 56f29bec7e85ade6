//! Pure retention decisions: which of zfs2cloud's snapshots and which local
//! exports may go. The executors are in [`crate::ops::prune`].
//!
//! Snapshot retention is one rule, the max age (`oldest_snapshot_days`)
//! or the calendar (`[retention.local]`), over the snapshots that are not
//! always kept; every decision, keep or destroy, carries its reasons.

use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

use crate::config::{Config, LocalRetention};
use crate::model::{LocalExport, SnapTime, SnapshotInfo, SnapshotName, SnapshotTimeZone};
use crate::policy::calendar::{calendar_keeps, CalendarKeeps, CalendarReason};

/// What to do with one snapshot or export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Remove it.
    Remove,
    /// Keep it, for this reason.
    Keep(String),
}

/// Why snapshot retention keeps or destroys a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotReason {
    /// Kept: its name is not zfs2cloud's, so it is never touched.
    Foreign,
    /// Kept: the newest of zfs2cloud's snapshots.
    Newest,
    /// Kept: it has a user hold (zfs2cloud's on a full base, or anyone's).
    Held,
    /// Kept: a future incremental will be based on it.
    Base,
    /// Kept: it was exported and the export is not confirmed uploaded to
    /// the configured remote.
    NotUploaded,
    /// Kept: not older than `oldest_snapshot_days`.
    Young {
        /// `oldest_snapshot_days`.
        days: u32,
    },
    /// Kept: the newest snapshot of a calendar period.
    Period(CalendarReason),
    /// Kept: it turned out busy (held meanwhile) when it was destroyed.
    Busy,
    /// Destroyed: older than `oldest_snapshot_days`.
    Old {
        /// `oldest_snapshot_days`.
        days: u32,
    },
    /// Destroyed: no calendar period keeps it.
    NoPeriod,
}

impl fmt::Display for SnapshotReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Foreign => f.write_str("not made by zfs2cloud"),
            Self::Newest => f.write_str("the newest snapshot"),
            Self::Held => {
                f.write_str("held (the full base of the current chain, or held by someone else)")
            }
            Self::Base => f.write_str("a base of future incrementals"),
            Self::NotUploaded => f.write_str("its export is not confirmed uploaded"),
            Self::Young { days } => write!(f, "younger than {days} days"),
            Self::Period(period) => write!(f, "{period}"),
            Self::Busy => f.write_str("busy when destroyed"),
            Self::Old { days } => write!(f, "older than {days} days"),
            Self::NoPeriod => f.write_str("not kept by any calendar period"),
        }
    }
}

/// A snapshot and what pruning does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDecision {
    /// The snapshot.
    pub name: SnapshotName,
    /// Remove or keep; a kept snapshot's reasons joined.
    pub verdict: Verdict,
    /// Why: every reason to keep it, or the one to destroy it.
    pub reasons: Vec<SnapshotReason>,
}

impl SnapshotDecision {
    /// Keeps `name` for `reasons` (at least one).
    #[must_use]
    pub fn keep(name: SnapshotName, reasons: Vec<SnapshotReason>) -> Self {
        let verdict = Verdict::Keep(join(&reasons));
        Self {
            name,
            verdict,
            reasons,
        }
    }

    /// Destroys `name` because of `reason`.
    #[must_use]
    pub fn destroy(name: SnapshotName, reason: SnapshotReason) -> Self {
        Self {
            name,
            verdict: Verdict::Remove,
            reasons: vec![reason],
        }
    }

    /// The reasons as one line: `daily 2026-11-30, weekly 2026-W48`.
    #[must_use]
    pub fn why(&self) -> String {
        join(&self.reasons)
    }
}

fn join(reasons: &[SnapshotReason]) -> String {
    let shown: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    shown.join(", ")
}

/// Which of zfs2cloud's snapshots that are not always kept stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotRule {
    /// Those not older than this many days (`oldest_snapshot_days`).
    MaxAgeDays(u32),
    /// The newest of each of the last N periods (`[retention.local]`).
    Calendar(CalendarKeeps),
}

impl SnapshotRule {
    /// The configured rule: `[retention.local]` if set, else
    /// `oldest_snapshot_days`.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        match (&config.retention.local, config.oldest_snapshot_days) {
            (Some(local), _) => Self::Calendar(local.into()),
            (None, Some(days)) => Self::MaxAgeDays(days),
            // `Config::build` always sets one; a hand-built config without
            // either keeps everything rather than guess a limit.
            (None, None) => Self::MaxAgeDays(u32::MAX),
        }
    }

    /// Why a snapshot the rule does not keep goes.
    fn destroy_reason(self) -> SnapshotReason {
        match self {
            Self::MaxAgeDays(days) => SnapshotReason::Old { days },
            Self::Calendar(_) => SnapshotReason::NoPeriod,
        }
    }
}

impl From<&LocalRetention> for CalendarKeeps {
    fn from(local: &LocalRetention) -> Self {
        Self {
            hourly: local.hourly,
            daily: local.daily,
            weekly: local.weekly,
            monthly: local.monthly,
            yearly: local.yearly,
        }
    }
}

/// The inputs of snapshot retention.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotRetention<'a> {
    /// The time of the run.
    pub now: DateTime<Utc>,
    /// Which snapshots that are not always kept stay.
    pub rule: SnapshotRule,
    /// How snapshot names are read as times (for the max age; the
    /// calendar counts the names' wall-clock times as they are).
    pub zone: SnapshotTimeZone,
    /// The configured remote: an export counts as uploaded only if it was
    /// confirmed on this remote.
    pub remote: &'a str,
    /// The snapshots future incrementals will be based on: always kept.
    pub bases: &'a [SnapshotName],
}

impl<'a> SnapshotRetention<'a> {
    /// The retention inputs of `prune-snapshots` for a run at `now`, with
    /// the bases the caller found.
    #[must_use]
    pub fn from_config(config: &'a Config, now: DateTime<Utc>, bases: &'a [SnapshotName]) -> Self {
        Self {
            now,
            rule: SnapshotRule::from_config(config),
            zone: config.snapshot_time_zone,
            remote: &config.remote,
            bases,
        }
    }
}

/// Decides which snapshots `prune-snapshots` destroys: zfs2cloud's own
/// snapshots that the rule does not keep (older than `oldest_snapshot_days`,
/// or the newest of no calendar period), except
///
/// * the newest of zfs2cloud's snapshots;
/// * a held snapshot (the hold marks the full base of the current chain);
/// * every snapshot in `bases`, held or not;
/// * a snapshot whose export is not confirmed uploaded;
///
/// and never a snapshot that does not match zfs2cloud's name pattern (those
/// are reported as kept). A kept snapshot has every reason that applies.
#[must_use]
pub fn plan_snapshot_prune(
    snapshots: &[SnapshotInfo],
    policy: &SnapshotRetention<'_>,
) -> Vec<SnapshotDecision> {
    let times: Vec<Option<SnapTime>> = snapshots.iter().map(SnapshotInfo::own_time).collect();
    let newest = snapshots
        .iter()
        .zip(&times)
        .filter_map(|(s, t)| t.map(|t| (t, &s.name)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, name)| name);
    let by_rule = rule_keeps(&times, policy);
    let mut out: Vec<SnapshotDecision> = snapshots
        .iter()
        .zip(&times)
        .zip(by_rule)
        .map(|((s, time), by_rule)| {
            if time.is_none() {
                return SnapshotDecision::keep(s.name.clone(), vec![SnapshotReason::Foreign]);
            }
            let mut reasons = always_kept(s, newest, policy);
            reasons.extend(by_rule);
            if reasons.is_empty() {
                SnapshotDecision::destroy(s.name.clone(), policy.rule.destroy_reason())
            } else {
                SnapshotDecision::keep(s.name.clone(), reasons)
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.snap().cmp(b.name.snap()));
    out
}

/// The reasons that keep `s` whatever the rule says.
fn always_kept(
    s: &SnapshotInfo,
    newest: Option<&SnapshotName>,
    policy: &SnapshotRetention<'_>,
) -> Vec<SnapshotReason> {
    [
        (Some(&s.name) == newest, SnapshotReason::Newest),
        (s.userrefs > 0, SnapshotReason::Held),
        (policy.bases.contains(&s.name), SnapshotReason::Base),
        (
            s.kind.is_some() && !s.uploaded_to(policy.remote),
            SnapshotReason::NotUploaded,
        ),
    ]
    .into_iter()
    .filter_map(|(applies, reason)| applies.then_some(reason))
    .collect()
}

/// For each snapshot, the rule's reasons to keep it (none for one the rule
/// lets go, and for foreign ones, which `times` has as `None`).
fn rule_keeps(
    times: &[Option<SnapTime>],
    policy: &SnapshotRetention<'_>,
) -> Vec<Vec<SnapshotReason>> {
    match policy.rule {
        SnapshotRule::MaxAgeDays(days) => {
            let max_age = TimeDelta::days(i64::from(days));
            let young = |t: &SnapTime| policy.now - t.to_utc(policy.zone) <= max_age;
            times
                .iter()
                .map(|t| match t {
                    Some(t) if young(t) => vec![SnapshotReason::Young { days }],
                    _ => Vec::new(),
                })
                .collect()
        }
        SnapshotRule::Calendar(keeps) => {
            let own: Vec<(usize, NaiveDateTime)> = times
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.map(|t| (i, t.naive())))
                .collect();
            let naive: Vec<NaiveDateTime> = own.iter().map(|(_, t)| *t).collect();
            let mut out = vec![Vec::new(); times.len()];
            for ((i, _), periods) in own.iter().zip(calendar_keeps(&naive, &keeps)) {
                out[*i] = periods.into_iter().map(SnapshotReason::Period).collect();
            }
            out
        }
    }
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
    use crate::model::{ExportKind, Manifest};

    fn info(name: &str, kind: Option<ExportKind>, userrefs: u64, uploaded: bool) -> SnapshotInfo {
        SnapshotInfo {
            level: None,
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

    fn policy<'a>(now: &str, days: u32, bases: &'a [SnapshotName]) -> SnapshotRetention<'a> {
        SnapshotRetention {
            now: at(now),
            rule: SnapshotRule::MaxAgeDays(days),
            zone: SnapshotTimeZone::Utc,
            remote: REMOTE,
            bases,
        }
    }

    fn base(snap: &str) -> SnapshotName {
        SnapshotName::parse(&format!("tank/data@{snap}")).unwrap()
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
        let bases = [base("20240201000000")];
        let d = plan_snapshot_prune(&snaps, &policy("2024-03-15T00:00:00Z", 30, &bases));
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
        let d = plan_snapshot_prune(&snaps, &policy("2024-03-15T00:00:00Z", 30, &[]));
        assert!(verdicts(&d).iter().all(|(_, removed)| !removed), "{d:?}");
    }

    #[test]
    fn the_newest_full_is_kept_even_without_its_hold() {
        let snaps = [
            info("20240101000000", Some(Full), 0, true),
            info("20240102000000", Some(Incremental), 0, true),
        ];
        let bases = [base("20240101000000")];
        let d = plan_snapshot_prune(&snaps, &policy("2025-01-01T00:00:00Z", 30, &bases));
        assert!(verdicts(&d).iter().all(|(_, removed)| !removed), "{d:?}");
    }

    #[test]
    fn the_newest_snapshot_is_kept_however_old() {
        let snaps = [info("20200101000000", None, 0, false)];
        let d = plan_snapshot_prune(&snaps, &policy("2025-01-01T00:00:00Z", 1, &[]));
        assert_eq!(verdicts(&d), [("20200101000000".to_owned(), false)]);
    }

    fn calendar<'a>(keeps: CalendarKeeps, bases: &'a [SnapshotName]) -> SnapshotRetention<'a> {
        SnapshotRetention {
            // The calendar never looks at the time of the run.
            now: at("2030-01-01T00:00:00Z"),
            rule: SnapshotRule::Calendar(keeps),
            zone: SnapshotTimeZone::Utc,
            remote: REMOTE,
            bases,
        }
    }

    fn why_of(d: &[SnapshotDecision], snap: &str) -> String {
        let d = d.iter().find(|d| d.name.snap() == snap).unwrap();
        match &d.verdict {
            Verdict::Keep(why) => {
                assert_eq!(*why, d.why());
                format!("keep: {why}")
            }
            Verdict::Remove => format!("destroy: {}", d.why()),
        }
    }

    fn assert_whys(d: &[SnapshotDecision], expected: &[(&str, &str)]) {
        for (snap, why) in expected {
            assert_eq!(why_of(d, snap), *why, "{snap}");
        }
    }

    fn kept(d: &[SnapshotDecision]) -> Vec<&str> {
        d.iter()
            .filter(|d| d.verdict != Verdict::Remove)
            .map(|d| d.name.snap())
            .collect()
    }

    /// A year of daily snapshots at 03:00, except November (the machine was
    /// off), all exported and uploaded; the full of 06-01 is the base, and
    /// the export of 08-15 never reached the remote.
    fn a_year_of_dailies() -> Vec<SnapshotInfo> {
        let mut day = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let mut out = Vec::new();
        while day.year() == 2025 {
            if day.month() != 11 {
                let snap = format!("{}030000", day.format("%Y%m%d"));
                let kind = if snap == "20250601030000" {
                    Full
                } else {
                    Incremental
                };
                out.push(info(&snap, Some(kind), 0, snap != "20250815030000"));
            }
            day = day.succ_opt().unwrap();
        }
        out
    }

    use chrono::Datelike;

    #[test]
    fn a_year_of_dailies_keeps_exactly_the_calendar_the_base_and_the_unuploaded() {
        let snaps = a_year_of_dailies();
        assert_eq!(snaps.len(), 335);
        let keeps = CalendarKeeps {
            daily: 7,
            weekly: 4,
            monthly: 6,
            yearly: 1,
            ..CalendarKeeps::default()
        };
        let bases = [base("20250601030000")];
        let d = plan_snapshot_prune(&snaps, &calendar(keeps, &bases));
        assert_eq!(
            kept(&d),
            [
                "20250601030000", // the base
                "20250630030000", // monthly: November has none, so June counts
                "20250731030000",
                "20250815030000", // not uploaded
                "20250831030000",
                "20250930030000",
                "20251031030000",
                "20251214030000", // weekly 2025-W50
                "20251221030000", // weekly 2025-W51
                "20251225030000", // the 7 dailies
                "20251226030000",
                "20251227030000",
                "20251228030000",
                "20251229030000",
                "20251230030000",
                "20251231030000",
            ]
        );
        assert_eq!(d.len(), 335);
        assert_whys(
            &d,
            &[
                (
                    "20251231030000",
                    "keep: the newest snapshot, daily 2025-12-31, weekly 2026-W01, \
                     monthly 2025-12, yearly 2025",
                ),
                ("20251228030000", "keep: daily 2025-12-28, weekly 2025-W52"),
                ("20250630030000", "keep: monthly 2025-06"),
                ("20250601030000", "keep: a base of future incrementals"),
                (
                    "20250815030000",
                    "keep: its export is not confirmed uploaded",
                ),
                ("20250101030000", "destroy: not kept by any calendar period"),
            ],
        );
        assert_eq!(
            d.iter()
                .find(|d| d.name.snap() == "20251228030000")
                .unwrap()
                .reasons[1],
            SnapshotReason::Period(CalendarReason {
                period: crate::policy::Period::Weekly,
                label: "2025-W52".into(),
            })
        );
    }

    #[test]
    fn the_calendar_never_touches_foreign_snapshots_nor_counts_them() {
        let snaps = [
            info("manual", None, 0, false),
            info("autosnap_2025-12-31_00:00:00_daily", None, 0, false),
            // 13 digits, and a 14-digit time that does not exist.
            info("2025123103000", None, 0, false),
            info("20251332030000", None, 0, false),
            info("20251230030000", Some(Incremental), 0, true),
            info("20251231030000", Some(Incremental), 0, true),
        ];
        let keeps = CalendarKeeps {
            daily: 1,
            ..CalendarKeeps::default()
        };
        let d = plan_snapshot_prune(&snaps, &calendar(keeps, &[]));
        let foreign = "keep: not made by zfs2cloud";
        assert_whys(
            &d,
            &[
                ("manual", foreign),
                ("autosnap_2025-12-31_00:00:00_daily", foreign),
                ("2025123103000", foreign),
                ("20251332030000", foreign),
                ("20251230030000", "destroy: not kept by any calendar period"),
            ],
        );
    }

    #[test]
    fn held_snapshots_and_bases_are_kept_outside_every_period() {
        let snaps = [
            info("20240101030000", Some(Full), 1, true),
            info("20240102030000", Some(Full), 0, true),
            info("20240103030000", Some(Incremental), 0, true),
            info("20251231030000", Some(Incremental), 0, true),
        ];
        let keeps = CalendarKeeps {
            yearly: 1,
            ..CalendarKeeps::default()
        };
        let bases = [base("20240102030000")];
        let d = plan_snapshot_prune(&snaps, &calendar(keeps, &bases));
        assert!(why_of(&d, "20240101030000").starts_with("keep: held"));
        assert_whys(
            &d,
            &[
                ("20240102030000", "keep: a base of future incrementals"),
                ("20240103030000", "destroy: not kept by any calendar period"),
                ("20251231030000", "keep: the newest snapshot, yearly 2025"),
            ],
        );
    }

    #[test]
    fn the_newest_is_kept_and_says_so_whatever_else_keeps_it() {
        // Not exported: nothing but "newest" and the calendar can keep it.
        let snaps = [
            info("20240101000000", None, 0, false),
            info("20240101010000", None, 0, false),
        ];
        let keeps = CalendarKeeps {
            hourly: 1,
            ..CalendarKeeps::default()
        };
        let d = plan_snapshot_prune(&snaps, &calendar(keeps, &[]));
        assert_eq!(kept(&d), ["20240101010000"]);
        assert_eq!(
            d[1].reasons,
            [
                SnapshotReason::Newest,
                SnapshotReason::Period(CalendarReason {
                    period: crate::policy::Period::Hourly,
                    label: "2024-01-01 01h".into(),
                }),
            ]
        );
    }

    #[test]
    fn the_configured_rule_is_the_calendar_or_the_max_age() {
        let text = "dataset = \"tank/data\"\nintermediate_basedir = \"/x\"\nremote = \"r:b\"\n\
                    passphrase_file = \"/p\"\n";
        let config = |extra: &str| {
            Config::parse(&format!("{text}{extra}"), std::path::Path::new("/c.toml")).unwrap()
        };
        assert_eq!(
            SnapshotRule::from_config(&config("")),
            SnapshotRule::MaxAgeDays(45)
        );
        let c = config("[retention.local]\nkeep_hourly = 24\nkeep_yearly = 3\n");
        assert_eq!(
            SnapshotRule::from_config(&c),
            SnapshotRule::Calendar(CalendarKeeps {
                hourly: 24,
                yearly: 3,
                ..CalendarKeeps::default()
            })
        );
        let bases = [base("20240101000000")];
        let policy = SnapshotRetention::from_config(&c, at("2024-01-02T00:00:00Z"), &bases);
        assert_eq!(policy.bases, bases);
        assert_eq!(policy.remote, "r:b");
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
                level: None,
                recipients: Vec::new(),
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
