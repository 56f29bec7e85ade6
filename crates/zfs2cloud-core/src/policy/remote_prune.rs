//! Remote pruning: which backup directories of one dataset on the remote
//! `prune-remote` keeps, which it deletes, why, and in which order. The
//! executor is [`crate::ops::prune_remote`].
//!
//! The rules, in the order they are applied:
//!
//! 1. A backup that cannot be judged is kept and said so: a DAMAGED one
//!    (unreadable manifest, a chunk that differs from the manifest or is
//!    missing although the manifest is there: the manifest goes up last,
//!    so that is damage, not an upload in progress), and one without
//!    manifest that may be a backup of the original tool (see
//!    [`RemotePrunePolicy::claimed_at`]).
//! 2. A backup without manifest is an upload in progress while it is
//!    younger than the grace period (by the time in its name), and an
//!    interrupted one after: deleted.
//! 3. A complete incremental whose restore chain is broken (an orphan) is
//!    deleted, unless the chain breaks at a backup that rule 1 or 2 keeps.
//! 4. Of the complete backups with an intact chain, the calendar keeps
//!    ([`calendar_keeps`]), the newest `keep_chains` chains and the newest
//!    backup are kept.
//! 5. A kept backup keeps every backup its restore replays
//!    ([`Dependencies`]): "base of X". A damaged one keeps what its
//!    manifest names (without a readable manifest, the full before it).
//! 6. Everything else is deleted.
//!
//! So a backup is only deleted when nothing kept depends on it, and the
//! deletion order ([`RemotePrunePlan::deletion_order`], newest first)
//! deletes every dependent before its base.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::Config;
use crate::model::{
    ExportKind, RemoteBackup, SnapTime, SnapshotTimeZone, MANIFEST_FILE, SHA256SUMS_FILE,
};
use crate::policy::Health;
use crate::policy::{calendar_keeps, check_listing, CalendarKeeps, CalendarReason, Dependencies};

/// The inputs of remote pruning besides the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemotePrunePolicy {
    /// The calendar keeps (`keep_hourly` … `keep_yearly`).
    pub keeps: CalendarKeeps,
    /// The newest this many chains are kept whole (`keep_chains`).
    pub keep_chains: u32,
    /// A backup without manifest younger than this may be an upload in
    /// progress (`incomplete_grace_hours`).
    pub incomplete_grace: TimeDelta,
    /// How snapshot names are read as times.
    pub zone: SnapshotTimeZone,
    /// When zfs2cloud claimed the directory (its owner marker's
    /// `written_at`); `None` if it has no marker. zfs2cloud writes the
    /// marker before its first upload there and `SHA256SUMS` before the
    /// manifest, so a backup with chunks but neither manifest nor
    /// `SHA256SUMS` from before that time may be one of the original
    /// tool's (which wrote neither): such a backup is never deleted.
    pub claimed_at: Option<DateTime<Utc>>,
}

impl RemotePrunePolicy {
    /// The policy of `config`'s `[retention.remote]`; `None` without that
    /// table (remote pruning is off). `claimed_at` is `None`: it is the
    /// remote directory's, which the caller sets once it has listed it.
    #[must_use]
    pub fn from_config(config: &Config) -> Option<Self> {
        let r = config.retention.remote?;
        Some(Self {
            keeps: CalendarKeeps {
                hourly: r.keep_hourly,
                daily: r.keep_daily,
                weekly: r.keep_weekly,
                monthly: r.keep_monthly,
                yearly: r.keep_yearly,
            },
            keep_chains: r.keep_chains,
            incomplete_grace: TimeDelta::hours(i64::from(r.incomplete_grace_hours)),
            zone: config.snapshot_time_zone,
            claimed_at: None,
        })
    }
}

/// Why a backup is kept or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteReason {
    /// Kept: the newest backup of a calendar period.
    Calendar(CalendarReason),
    /// Kept: in one of the newest `keep_chains` chains; `rank` 1 is the
    /// newest.
    InChain {
        /// The chain's full.
        full: String,
        /// Its place among the chains, newest first.
        rank: usize,
    },
    /// Kept: the newest complete backup, whatever the keeps say.
    Newest,
    /// Kept: the restore of these kept backups replays it (newest first).
    BaseOf(Vec<String>),
    /// Kept: damaged, for someone to look at.
    Damaged(String),
    /// Kept: no manifest, and maybe a backup of the original tool.
    MaybeOriginal,
    /// Kept: no manifest, but younger than the grace period.
    UploadInProgress {
        /// The grace period in hours.
        grace_hours: i64,
    },
    /// Kept: its chain is broken at this snapshot, whose backup is kept.
    BrokenAtKept(String),
    /// Deleted: its chain is broken at this snapshot, of which no backup
    /// stays.
    Orphan(String),
    /// Deleted: no manifest, and older than the grace period.
    Abandoned {
        /// The grace period in hours.
        grace_hours: i64,
    },
    /// Deleted: no rule keeps it.
    Unneeded,
}

impl fmt::Display for RemoteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Calendar(r) => write!(f, "{r}"),
            Self::InChain { full, rank: 1 } => write!(f, "in the newest chain ({full})"),
            Self::InChain { full, rank } => write!(f, "in chain {rank} of the newest ({full})"),
            Self::Newest => f.write_str("the newest complete backup"),
            Self::BaseOf(dependents) => match dependents.as_slice() {
                [] => f.write_str("base of a kept backup"),
                [one] => write!(f, "base of {one}"),
                [first, rest @ ..] => write!(f, "base of {first} and {} more", rest.len()),
            },
            Self::Damaged(why) => write!(
                f,
                "DAMAGED ({why}): kept for you to look at; zfs2cloud never deletes a damaged \
                 backup"
            ),
            Self::MaybeOriginal => f.write_str(
                "no manifest and no SHA256SUMS, from before zfs2cloud claimed this directory: \
                 maybe a backup of the original tool, which zfs2cloud never deletes",
            ),
            Self::UploadInProgress { grace_hours } => write!(
                f,
                "no manifest, younger than {grace_hours} hours (incomplete_grace_hours): maybe \
                 an upload in progress"
            ),
            Self::BrokenAtKept(link) => write!(
                f,
                "its chain is broken at {link}, whose backup is kept: kept with it"
            ),
            Self::Orphan(link) => write!(
                f,
                "orphan: its restore needs {link}, which is not on the remote as a complete \
                 backup"
            ),
            Self::Abandoned { grace_hours } => write!(
                f,
                "no manifest, older than {grace_hours} hours (incomplete_grace_hours): an \
                 interrupted upload"
            ),
            Self::Unneeded => f.write_str("no keep rule applies"),
        }
    }
}

/// What pruning does with one backup directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteAction {
    /// It stays.
    Keep,
    /// It is deleted.
    Delete,
}

/// One backup directory, what pruning does with it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDecision {
    /// `<snap>` or `<snap>-full`.
    pub dir_name: String,
    /// Keep or delete.
    pub action: RemoteAction,
    /// Why: every reason to keep it, or the one to delete it.
    pub reasons: Vec<RemoteReason>,
    /// The sum of its files' sizes, as listed.
    pub bytes: u64,
}

/// What `prune-remote` does with the backups of one remote directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemotePrunePlan {
    /// Every backup directory, in the order given (oldest first).
    pub decisions: Vec<RemoteDecision>,
    /// The directories to delete, in the order to delete them: newest
    /// first, an incremental before a full of the same snapshot, so that
    /// every dependent goes before its base.
    pub deletion_order: Vec<String>,
}

impl RemotePrunePlan {
    /// The bytes the deletions free.
    #[must_use]
    pub fn bytes_freed(&self) -> u64 {
        self.bytes_of(RemoteAction::Delete)
    }

    /// The bytes that stay.
    #[must_use]
    pub fn bytes_kept(&self) -> u64 {
        self.bytes_of(RemoteAction::Keep)
    }

    fn bytes_of(&self, action: RemoteAction) -> u64 {
        self.decisions
            .iter()
            .filter(|d| d.action == action)
            .map(|d| d.bytes)
            .sum()
    }

    /// The decision on directory `dir_name`.
    #[must_use]
    pub fn decision(&self, dir_name: &str) -> Option<&RemoteDecision> {
        self.decisions.iter().find(|d| d.dir_name == dir_name)
    }
}

/// The files of `backup` in the order to delete them: `manifest.json`
/// first, so that from the first deletion on the backup is incomplete
/// rather than complete with missing chunks (which would look damaged);
/// `SHA256SUMS` last, so that whatever an interrupted prune leaves still
/// says it is zfs2cloud's and is no backup of the original tool (see
/// [`RemotePrunePolicy::claimed_at`]).
#[must_use]
pub fn deletion_sequence(backup: &RemoteBackup) -> Vec<String> {
    let rank = |name: &str| match name {
        MANIFEST_FILE => 0,
        SHA256SUMS_FILE => 2,
        _ => 1,
    };
    let mut names: Vec<String> = backup.files.iter().map(|f| f.name.clone()).collect();
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    names
}

/// What the listing says about a backup, as far as pruning cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Complete and whole.
    Whole,
    /// Unreadable manifest, or a chunk differs or is missing.
    Damaged(String),
    /// No manifest.
    NoManifest,
}

fn state(backup: &RemoteBackup) -> State {
    match check_listing(backup) {
        Health::Ok => State::Whole,
        Health::Damaged(why) => State::Damaged(why),
        Health::Incomplete(why) if backup.manifest.is_some() => State::Damaged(why),
        Health::Incomplete(_) => State::NoManifest,
    }
}

/// Decides what `prune-remote` does with `backups` (one dataset's, as
/// listed, oldest first) under `policy` at `now`; see the module
/// documentation for the rules.
#[must_use]
pub fn plan_remote_prune(
    backups: &[RemoteBackup],
    policy: &RemotePrunePolicy,
    now: DateTime<Utc>,
) -> RemotePrunePlan {
    let deps = Dependencies::new(backups, &has_manifest);
    let mut plan = Planner {
        backups,
        deps: &deps,
        states: backups.iter().map(state).collect(),
        keep: vec![Vec::new(); backups.len()],
        delete: vec![None; backups.len()],
    };
    plan.judge_the_unjudgeable(policy, now);
    plan.judge_orphans();
    plan.apply_keeps(policy);
    plan.keep_chains_of_kept();
    plan.finish()
}

/// The decisions being made.
struct Planner<'a> {
    backups: &'a [RemoteBackup],
    deps: &'a Dependencies<'a>,
    states: Vec<State>,
    keep: Vec<Vec<RemoteReason>>,
    delete: Vec<Option<RemoteReason>>,
}

impl Planner<'_> {
    /// Rules 1 and 2: damaged backups and backups without manifest.
    fn judge_the_unjudgeable(&mut self, policy: &RemotePrunePolicy, now: DateTime<Utc>) {
        let grace_hours = policy.incomplete_grace.num_hours();
        for (i, b) in self.backups.iter().enumerate() {
            match &self.states[i] {
                State::Whole => {}
                State::Damaged(why) => self.keep[i].push(RemoteReason::Damaged(why.clone())),
                State::NoManifest if maybe_original(b, policy) => {
                    self.keep[i].push(RemoteReason::MaybeOriginal);
                }
                State::NoManifest if age(b, policy.zone, now) < policy.incomplete_grace => {
                    self.keep[i].push(RemoteReason::UploadInProgress { grace_hours });
                }
                State::NoManifest => self.delete[i] = Some(RemoteReason::Abandoned { grace_hours }),
            }
        }
    }

    /// Rule 3: whole backups whose chain is broken.
    fn judge_orphans(&mut self) {
        for i in 0..self.backups.len() {
            if self.states[i] != State::Whole {
                continue;
            }
            let Err(link) = self.deps.chain(i) else {
                continue;
            };
            let link_kept = self
                .backups
                .iter()
                .zip(&self.keep)
                .any(|(b, why)| b.snapshot == link && !why.is_empty());
            if link_kept {
                self.keep[i].push(RemoteReason::BrokenAtKept(link));
            } else {
                self.delete[i] = Some(RemoteReason::Orphan(link));
            }
        }
    }

    /// Whole backups with an intact chain: what the keeps choose from.
    fn intact(&self) -> Vec<usize> {
        let mut out: Vec<usize> = (0..self.backups.len())
            .filter(|&i| self.states[i] == State::Whole && self.deps.depth(i).is_some())
            .collect();
        // Of two backups of one snapshot, the calendar keeps the first:
        // the one with the shorter chain.
        out.sort_by_key(|&i| (&self.backups[i].snapshot, self.deps.depth(i)));
        out
    }

    /// Rule 4: the calendar, the newest chains and the newest backup.
    fn apply_keeps(&mut self, policy: &RemotePrunePolicy) {
        let intact = self.intact();
        let times: Vec<_> = intact
            .iter()
            .map(|&i| snap_time(&self.backups[i]).naive())
            .collect();
        for (&i, reasons) in intact.iter().zip(calendar_keeps(&times, &policy.keeps)) {
            self.keep[i].extend(reasons.into_iter().map(RemoteReason::Calendar));
        }
        self.keep_newest_chains(&intact, policy.keep_chains);
        if let Some(&newest) = intact.last() {
            let newest_snapshot = &self.backups[newest].snapshot;
            // The shortest chain among the backups of the newest snapshot.
            let first = intact
                .iter()
                .find(|&&i| self.backups[i].snapshot == *newest_snapshot)
                .copied()
                .unwrap_or(newest);
            self.keep[first].push(RemoteReason::Newest);
        }
    }

    /// The newest `count` fulls of `intact`, each with every backup whose
    /// restore starts from it.
    fn keep_newest_chains(&mut self, intact: &[usize], count: u32) {
        let fulls: Vec<usize> = intact
            .iter()
            .rev()
            .copied()
            .filter(|&i| self.backups[i].kind == ExportKind::Full)
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .collect();
        for (rank, &full) in fulls.iter().enumerate() {
            for i in 0..self.backups.len() {
                let starts_here = self.deps.chain(i).is_ok_and(|c| {
                    c.first()
                        .is_some_and(|f| f.dir_name == self.backups[full].dir_name)
                });
                if starts_here {
                    self.keep[i].push(RemoteReason::InChain {
                        full: self.backups[full].dir_name.clone(),
                        rank: rank + 1,
                    });
                }
            }
        }
    }

    /// The bases in the restore chain of backup `i`, if it is intact.
    fn bases_of(&self, i: usize) -> Vec<usize> {
        let Ok(chain) = self.deps.chain(i) else {
            return Vec::new();
        };
        chain[..chain.len() - 1]
            .iter()
            .filter_map(|base| self.deps.index_of(&base.dir_name))
            .collect()
    }

    /// Rule 5: every kept backup keeps its restore chain. A base is "base
    /// of" every kept backup whose restore replays it, itself kept as a
    /// base or not.
    fn keep_chains_of_kept(&mut self) {
        let mut kept: Vec<bool> = self.keep.iter().map(|r| !r.is_empty()).collect();
        for i in 0..self.backups.len() {
            if !self.keep[i].is_empty() {
                for j in self.bases_of(i) {
                    kept[j] = true;
                }
            }
        }
        let mut dependents: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in (0..self.backups.len()).filter(|&i| kept[i]) {
            for j in self.bases_of(i) {
                dependents.entry(j).or_default().push(i);
            }
        }
        for (j, mut of) in dependents {
            of.sort_by(|a, b| self.backups[*b].snapshot.cmp(&self.backups[*a].snapshot));
            let names = of
                .iter()
                .map(|&i| self.backups[i].dir_name.clone())
                .collect();
            self.keep[j].push(RemoteReason::BaseOf(names));
        }
    }

    /// Rule 6, and the deletion order.
    fn finish(self) -> RemotePrunePlan {
        let decisions: Vec<RemoteDecision> = self
            .backups
            .iter()
            .zip(self.keep)
            .zip(self.delete)
            .map(|((b, keep), delete)| {
                let (action, reasons) = if keep.is_empty() {
                    let why = delete.unwrap_or(RemoteReason::Unneeded);
                    (RemoteAction::Delete, vec![why])
                } else {
                    (RemoteAction::Keep, keep)
                };
                RemoteDecision {
                    dir_name: b.dir_name.clone(),
                    action,
                    reasons,
                    bytes: b.files.iter().map(|f| f.size).sum(),
                }
            })
            .collect();
        let deletion_order = deletion_order(self.backups, &decisions);
        RemotePrunePlan {
            decisions,
            deletion_order,
        }
    }
}

/// The deleted directories, newest first: a base is always older than
/// what is based on it, so every dependent goes before its base. Of one
/// snapshot, the incremental goes before the full.
fn deletion_order(backups: &[RemoteBackup], decisions: &[RemoteDecision]) -> Vec<String> {
    let mut deleted: Vec<&RemoteBackup> = backups
        .iter()
        .zip(decisions)
        .filter(|(_, d)| d.action == RemoteAction::Delete)
        .map(|(b, _)| b)
        .collect();
    let kind_rank = |b: &RemoteBackup| match b.kind {
        ExportKind::Incremental => 0,
        ExportKind::Full => 1,
    };
    deleted.sort_by(|a, b| {
        b.snapshot
            .cmp(&a.snapshot)
            .then(kind_rank(a).cmp(&kind_rank(b)))
            .then(a.dir_name.cmp(&b.dir_name))
    });
    deleted.into_iter().map(|b| b.dir_name.clone()).collect()
}

/// The time in the backup's name. The catalog only lists directories
/// named like a snapshot time; anything else counts as the oldest time.
fn snap_time(backup: &RemoteBackup) -> SnapTime {
    SnapTime::parse(&backup.snapshot)
        .unwrap_or_else(|| SnapTime::from_instant(DateTime::UNIX_EPOCH, SnapshotTimeZone::Utc))
}

/// Whether a backup may be a base: it has a manifest, readable or not.
/// A damaged backup is kept, and so is what it is based on (by its
/// manifest, or without a readable one the full before it).
fn has_manifest(backup: &RemoteBackup) -> bool {
    backup.manifest.is_some() || backup.manifest_error.is_some()
}

/// How old the backup is, by the time in its name.
fn age(backup: &RemoteBackup, zone: SnapshotTimeZone, now: DateTime<Utc>) -> TimeDelta {
    now - snap_time(backup).to_utc(zone)
}

/// Whether a backup without manifest may be one of the original tool's:
/// it has chunks but no `SHA256SUMS`, and dates from before zfs2cloud
/// claimed the directory (or the directory has no owner marker).
fn maybe_original(backup: &RemoteBackup, policy: &RemotePrunePolicy) -> bool {
    let has_sums = backup.files.iter().any(|f| f.name == SHA256SUMS_FILE);
    let before_claim = policy
        .claimed_at
        .is_none_or(|claimed| snap_time(backup).to_utc(policy.zone) < claimed);
    !has_sums && !backup.chunk_names().is_empty() && before_claim
}

#[cfg(test)]
mod tests;
