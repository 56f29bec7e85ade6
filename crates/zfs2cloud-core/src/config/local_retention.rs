//! Which of zfs2cloud's own snapshots stay: `oldest_snapshot_days` (the
//! simple rule, the original's) or `[retention.local]` (calendar periods,
//! as sanoid and restic count them). One rule or the other, never both:
//! two rules over the same snapshots would leave the reader to guess
//! which one wins.

use serde::{Deserialize, Serialize};

use super::{KeyError, RawConfig};

/// The original's default.
const DEFAULT_OLDEST_SNAPSHOT_DAYS: u32 = 45;

/// The key that names the table in errors.
const TABLE_KEY: &str = "retention.local";

/// `[retention.local]` as written; an unwritten count keeps nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [retention.local] table")]
pub(super) struct RawLocalRetention {
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
}

/// `[retention.local]`: how many calendar periods of each kind keep their
/// newest snapshot of zfs2cloud's. Periods are counted among those that
/// have a snapshot, in the wall-clock time of the snapshot names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LocalRetention {
    /// `keep_hourly`: the newest snapshot of each of the last this many
    /// hours that have one.
    #[serde(rename = "keep_hourly")]
    pub hourly: u32,
    /// `keep_daily`: ... days.
    #[serde(rename = "keep_daily")]
    pub daily: u32,
    /// `keep_weekly`: ... ISO weeks (Monday to Sunday).
    #[serde(rename = "keep_weekly")]
    pub weekly: u32,
    /// `keep_monthly`: ... calendar months.
    #[serde(rename = "keep_monthly")]
    pub monthly: u32,
    /// `keep_yearly`: ... calendar years.
    #[serde(rename = "keep_yearly")]
    pub yearly: u32,
}

/// `oldest_snapshot_days`: as written or the default, and greater than
/// `full_every_x_days`; `None` when `[retention.local]` replaces it.
pub(super) fn oldest_snapshot_days(raw: &RawConfig) -> Result<Option<u32>, KeyError> {
    if raw.retention.local.is_some() {
        return match raw.oldest_snapshot_days {
            Some(days) => Err(KeyError::new(
                "oldest_snapshot_days",
                format!(
                    "= {days} is set, and so is [retention.local]: both say which of \
                     zfs2cloud's snapshots to destroy; keep one (remove oldest_snapshot_days to \
                     keep snapshots by calendar period)"
                ),
            )),
            None => Ok(None),
        };
    }
    let days = raw
        .oldest_snapshot_days
        .unwrap_or(DEFAULT_OLDEST_SNAPSHOT_DAYS);
    let (full_every_x_days, _) = super::strategy_periods(raw)?;
    if days <= full_every_x_days {
        return Err(KeyError::new(
            "oldest_snapshot_days",
            format!(
                "is {days} but must be greater than full_every_x_days ({}): otherwise the full \
                 snapshot that the newest incrementals are based on would be pruned",
                full_every_x_days
            ),
        ));
    }
    Ok(Some(days))
}

/// `[retention.local]`, if written: at least one count above zero, since
/// a table that keeps nothing would destroy every snapshot but the few
/// that are always kept, which no one means to write.
pub(super) fn local_retention(
    raw: Option<&RawLocalRetention>,
) -> Result<Option<LocalRetention>, KeyError> {
    let Some(raw) = raw else { return Ok(None) };
    let local = LocalRetention {
        hourly: raw.keep_hourly,
        daily: raw.keep_daily,
        weekly: raw.keep_weekly,
        monthly: raw.keep_monthly,
        yearly: raw.keep_yearly,
    };
    if local == LocalRetention::default() {
        return Err(KeyError::new(
            TABLE_KEY,
            "keeps nothing: set at least one of keep_hourly, keep_daily, keep_weekly, \
             keep_monthly, keep_yearly above 0 (or remove the table to use \
             oldest_snapshot_days)",
        ));
    }
    Ok(Some(local))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use crate::config::testing::{self, PASSPHRASE};
    use crate::config::{Config, ConfigError};

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        testing::parse_with(&format!("{PASSPHRASE}{extra}"))
    }

    fn invalid(extra: &str) -> (String, String) {
        testing::invalid(&format!("{PASSPHRASE}{extra}"))
    }

    #[test]
    fn without_the_table_oldest_snapshot_days_applies_with_its_default() {
        let c = parse("").unwrap();
        assert_eq!(c.oldest_snapshot_days, Some(45));
        assert_eq!(c.retention.local, None);
        let c = parse("oldest_snapshot_days = 60\n").unwrap();
        assert_eq!(c.oldest_snapshot_days, Some(60));
        let shown = c.to_effective_toml().unwrap();
        assert!(shown.contains("oldest_snapshot_days = 60"), "{shown}");
        assert!(!shown.contains("retention"), "{shown}");
    }

    #[test]
    fn the_table_replaces_oldest_snapshot_days_and_unset_counts_are_zero() {
        let c = parse("[retention.local]\nkeep_daily = 7\nkeep_monthly = 6\n").unwrap();
        assert_eq!(c.oldest_snapshot_days, None);
        let local = c.retention.local.unwrap();
        assert_eq!(
            (
                local.hourly,
                local.daily,
                local.weekly,
                local.monthly,
                local.yearly
            ),
            (0, 7, 0, 6, 0)
        );
        // The replaced rule's check does not apply: it is not in force.
        parse("full_every_x_days = 60\n[retention.local]\nkeep_daily = 1\n").unwrap();
        let shown = c.to_effective_toml().unwrap();
        assert!(shown.contains("[retention.local]"), "{shown}");
        assert!(shown.contains("keep_daily = 7"), "{shown}");
        assert!(shown.contains("keep_hourly = 0"), "{shown}");
        assert!(!shown.contains("oldest_snapshot_days"), "{shown}");
        // What check-config shows is the table as it would be written.
        let shown: toml::Table = toml::from_str(&shown).unwrap();
        let table = toml::to_string(&shown["retention"]["local"]).unwrap();
        let again = parse(&format!("[retention.local]\n{table}")).unwrap();
        assert_eq!(again.retention, c.retention);
    }

    #[test]
    fn both_rules_are_refused_naming_oldest_snapshot_days() {
        let (key, message) =
            invalid("oldest_snapshot_days = 45\n[retention.local]\nkeep_daily = 7\n");
        assert_eq!(key, "oldest_snapshot_days");
        assert!(message.contains("[retention.local]"), "{message}");
        assert!(message.contains("keep one"), "{message}");
    }

    #[test]
    fn a_table_that_keeps_nothing_is_refused() {
        for table in ["", "keep_daily = 0\n", "keep_hourly = 0\nkeep_yearly = 0\n"] {
            let (key, message) = invalid(&format!("[retention.local]\n{table}"));
            assert_eq!(key, "retention.local", "{table}");
            assert!(message.contains("at least one"), "{message}");
        }
    }

    #[test]
    fn unknown_keys_and_wrong_values_name_the_key() {
        for (extra, key) in [
            ("[retention.local]\nkeep_dayly = 7\n", "keep_dayly"),
            (
                "[retention.local]\nkeep_daily = -1\n",
                "retention.local.keep_daily",
            ),
            (
                "[retention.local]\nkeep_daily = \"7\"\n",
                "retention.local.keep_daily",
            ),
            ("[retention.locla]\nkeep_daily = 7\n", "locla"),
            ("retention = 3\n", "retention"),
        ] {
            let err = parse(extra).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
            assert!(err.to_string().contains(key), "{extra}: {err}");
        }
    }
}
