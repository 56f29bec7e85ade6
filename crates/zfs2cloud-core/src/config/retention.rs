//! The `[retention]` table. Its `local` sub-table says which of
//! zfs2cloud's snapshots `prune-snapshots` keeps (instead of
//! `oldest_snapshot_days`); its `remote` sub-table says which backups on
//! the remote `prune-remote` keeps; without it, remote pruning is off.
//!
//! ```toml
//! [retention.remote]
//! keep_daily = 7
//! keep_weekly = 4
//! keep_monthly = 12
//! keep_chains = 1
//! incomplete_grace_hours = 48
//! ```
//!
//! Each sub-table has its own raw struct and check, so that retention of
//! other things can sit beside `remote` without touching it.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::local_retention::{local_retention, LocalRetention, RawLocalRetention};
use super::KeyError;
use crate::model::Step;

/// The `[retention]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [retention] table")]
pub(super) struct RawRetention {
    #[serde(default, deserialize_with = "some_table")]
    pub(super) local: Option<RawLocalRetention>,
    #[serde(default, deserialize_with = "some_table")]
    remote: Option<RawRemoteRetention>,
}

/// Deserializes `T` from a table only. serde's derived structs also take
/// a list of their fields' values in order, and since every key here may
/// be left out, `remote = [7]` would read as `keep_hourly = 7`.
pub(super) fn table<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct TableOnly<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for TableOnly<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(TableOnly(PhantomData))
}

fn some_table<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    table(d).map(Some)
}

/// `[retention.remote]` as written: every key may be left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [retention.remote] table")]
struct RawRemoteRetention {
    #[serde(default)]
    keep_hourly: u32,
    #[serde(default)]
    keep_daily: u32,
    #[serde(default)]
    keep_weekly: u32,
    #[serde(default)]
    keep_monthly: u32,
    #[serde(default)]
    keep_yearly: u32,
    #[serde(default)]
    keep_chains: u32,
    #[serde(default = "default_incomplete_grace_hours")]
    incomplete_grace_hours: u32,
}

/// Two days: longer than any upload of one night's backup takes, short
/// enough that an interrupted one does not stay for weeks.
const DEFAULT_INCOMPLETE_GRACE_HOURS: u32 = 48;

fn default_incomplete_grace_hours() -> u32 {
    DEFAULT_INCOMPLETE_GRACE_HOURS
}

/// What is kept of what zfs2cloud makes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// `[retention.local]`: which of zfs2cloud's own snapshots stay, by
    /// calendar period; replaces `oldest_snapshot_days`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalRetention>,
    /// `[retention.remote]`: which backups `prune-remote` keeps; `None`
    /// (the table is absent): remote pruning is off, and `prune-remote`
    /// refuses to run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteRetention>,
}

/// `[retention.remote]`: which backup directories on the remote are kept.
/// A kept backup keeps every backup its restore needs, and the newest
/// complete backup is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RemoteRetention {
    /// The newest backup of each of the last N hours that have one.
    pub keep_hourly: u32,
    /// ... of each of the last N days.
    pub keep_daily: u32,
    /// ... of each of the last N ISO weeks.
    pub keep_weekly: u32,
    /// ... of each of the last N calendar months.
    pub keep_monthly: u32,
    /// ... of each of the last N calendar years.
    pub keep_yearly: u32,
    /// The newest N chains: a full and every backup that depends on it.
    pub keep_chains: u32,
    /// A backup directory without manifest younger than this (by the time
    /// in its name) may be an upload in progress, and is kept.
    pub incomplete_grace_hours: u32,
}

impl Retention {
    /// Whether no retention is configured (nothing to show in the
    /// effective config).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.local.is_none() && self.remote.is_none()
    }
}

/// The `[retention]` table, checked.
pub(super) fn retention(raw: RawRetention) -> Result<Retention, KeyError> {
    Ok(Retention {
        local: local_retention(raw.local.as_ref())?,
        remote: raw.remote.map(remote_retention).transpose()?,
    })
}

/// The `prune-remote` step needs `[retention.remote]`: found out when the
/// file is loaded, not in the middle of a nightly run.
pub(super) fn check_steps(steps: &[Step], retention: &Retention) -> Result<(), KeyError> {
    if steps.contains(&Step::PruneRemote) && retention.remote.is_none() {
        return Err(KeyError::new(
            "steps",
            "prune-remote needs a [retention.remote] table saying what to keep",
        ));
    }
    Ok(())
}

/// `[retention.remote]`, checked: it must keep something, and give an
/// upload in progress some time.
fn remote_retention(raw: RawRemoteRetention) -> Result<RemoteRetention, KeyError> {
    let keeps = [
        raw.keep_hourly,
        raw.keep_daily,
        raw.keep_weekly,
        raw.keep_monthly,
        raw.keep_yearly,
        raw.keep_chains,
    ];
    if keeps.iter().all(|n| *n == 0) {
        // An empty table would silently mean "only the newest backup";
        // whoever wants that says keep_chains = 1 and gets its chain.
        return Err(KeyError::new(
            "retention.remote",
            "keeps nothing but the newest backup: set at least one of keep_hourly, keep_daily, \
             keep_weekly, keep_monthly, keep_yearly or keep_chains (leave the table out to \
             never prune the remote)",
        ));
    }
    if raw.incomplete_grace_hours == 0 {
        return Err(KeyError::new(
            "retention.remote.incomplete_grace_hours",
            "must be at least 1: a backup without manifest may be an upload in progress",
        ));
    }
    Ok(RemoteRetention {
        keep_hourly: raw.keep_hourly,
        keep_daily: raw.keep_daily,
        keep_weekly: raw.keep_weekly,
        keep_monthly: raw.keep_monthly,
        keep_yearly: raw.keep_yearly,
        keep_chains: raw.keep_chains,
        incomplete_grace_hours: raw.incomplete_grace_hours,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::path::Path;

    use crate::config::{Config, ConfigError, ConfigFile};

    use crate::config::testing::{invalid, parse_with, PASSPHRASE};

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        parse_with(&format!("{PASSPHRASE}{extra}"))
    }

    fn invalid_key(extra: &str) -> String {
        invalid(&format!("{PASSPHRASE}{extra}")).0
    }

    #[test]
    fn remote_pruning_is_off_without_the_table() {
        assert_eq!(parse("").unwrap().retention.remote, None);
        assert_eq!(parse("[retention]\n").unwrap().retention.remote, None);
    }

    #[test]
    fn unset_keeps_are_zero_and_the_grace_has_a_default() {
        let r = parse("[retention.remote]\nkeep_daily = 7\nkeep_chains = 2\n")
            .unwrap()
            .retention
            .remote
            .unwrap();
        assert_eq!((r.keep_daily, r.keep_chains), (7, 2));
        assert_eq!((r.keep_hourly, r.keep_weekly, r.keep_monthly), (0, 0, 0));
        assert_eq!(r.keep_yearly, 0);
        assert_eq!(r.incomplete_grace_hours, 48);
    }

    #[test]
    fn a_table_that_keeps_nothing_or_no_grace_is_refused() {
        assert_eq!(invalid_key("[retention.remote]\n"), "retention.remote");
        assert_eq!(
            invalid_key("[retention.remote]\nkeep_daily = 0\n"),
            "retention.remote"
        );
        assert_eq!(
            invalid_key("[retention.remote]\nkeep_daily = 1\nincomplete_grace_hours = 0\n"),
            "retention.remote.incomplete_grace_hours"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        for (extra, key) in [
            ("[retention.remote]\nkeep_dialy = 7\n", "keep_dialy"),
            ("[retention]\nremtoe = {}\n", "remtoe"),
            (
                "[retention.remote]\nkeep_daily = -1\n",
                "retention.remote.keep_daily",
            ),
            ("[retention]\nremote = [7]\n", "retention.remote"),
            (
                "retention = [{ remote = { keep_daily = 1 } }]\n",
                "retention",
            ),
        ] {
            match parse(extra) {
                Err(ConfigError::Parse { message, .. }) => {
                    assert!(message.contains(key), "{extra}: {message}");
                }
                other => panic!("{extra}: expected a parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_prune_remote_step_needs_the_table() {
        let steps = "steps = [\"lock\", \"prune-remote\", \"unlock\"]\n";
        assert_eq!(invalid_key(steps), "steps");
        let c = parse(&format!("{steps}[retention.remote]\nkeep_chains = 2\n")).unwrap();
        assert!(c.steps.contains(&crate::model::Step::PruneRemote));
    }

    #[test]
    fn the_effective_config_shows_the_table() {
        let c = parse("[retention.remote]\nkeep_monthly = 12\n").unwrap();
        let toml = c.to_effective_toml().unwrap();
        assert!(toml.contains("[retention.remote]"), "{toml}");
        assert!(toml.contains("keep_monthly = 12"), "{toml}");
        assert!(toml.contains("incomplete_grace_hours = 48"), "{toml}");
    }

    #[test]
    fn a_job_overrides_single_keys_of_the_defaults() {
        let text = r#"
[defaults]
passphrase_file = "/etc/zfs2cloud/passphrase"
[defaults.retention.remote]
keep_daily = 7
keep_monthly = 12

[[job]]
name = "home"
dataset = "tank/home"
remote = "b2:bucket/home"
intermediate_basedir = "/var/tmp/z/home"
[job.retention.remote]
keep_daily = 3

[[job]]
name = "media"
dataset = "tank/media"
remote = "b2:bucket/media"
intermediate_basedir = "/var/tmp/z/media"
"#;
        let file = ConfigFile::parse(text, Path::new("/etc/zfs2cloud/jobs.toml")).unwrap();
        let home = file.jobs[0].retention.remote.unwrap();
        let media = file.jobs[1].retention.remote.unwrap();
        assert_eq!((home.keep_daily, home.keep_monthly), (3, 12));
        assert_eq!((media.keep_daily, media.keep_monthly), (7, 12));
    }

    #[test]
    fn a_job_error_names_the_job() {
        let text = r#"
[defaults]
passphrase_file = "/etc/zfs2cloud/passphrase"

[[job]]
name = "home"
dataset = "tank/home"
remote = "b2:bucket/home"
intermediate_basedir = "/var/tmp/z/home"
[job.retention.remote]
keep_chains = 0
"#;
        match ConfigFile::parse(text, Path::new("/etc/zfs2cloud/jobs.toml")) {
            Err(err @ ConfigError::Many { .. }) => {
                assert_eq!(err.key(), Some("job.home.retention.remote"));
            }
            other => panic!("expected the job's errors, got {other:?}"),
        }
    }
}
