//! Calendar keeps, shared by the retention of local snapshots and of remote
//! backups: "the newest of each of the last N days (hours, weeks, months,
//! years) that have one".
//!
//! The rule is restic's `--keep-daily` and sanoid's `daily = N`: periods
//! are counted among those that hold an item, so a week without backups
//! (a machine that was off) does not shorten what is kept. Times are the
//! wall-clock times in the snapshot names, so the result never depends on
//! when the plan is made.

use std::fmt;

use chrono::{Datelike, NaiveDateTime, Timelike};

/// How many periods of each kind to keep the newest item of. Zero keeps
/// none for that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CalendarKeeps {
    /// The newest item of each of the last `hourly` hours that have one.
    pub hourly: u32,
    /// ... of each of the last `daily` days.
    pub daily: u32,
    /// ... of each of the last `weekly` ISO weeks (Monday to Sunday).
    pub weekly: u32,
    /// ... of each of the last `monthly` calendar months.
    pub monthly: u32,
    /// ... of each of the last `yearly` calendar years.
    pub yearly: u32,
}

impl CalendarKeeps {
    /// Whether no period keeps anything.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.periods().iter().all(|(_, n)| *n == 0)
    }

    fn periods(&self) -> [(Period, u32); 5] {
        [
            (Period::Hourly, self.hourly),
            (Period::Daily, self.daily),
            (Period::Weekly, self.weekly),
            (Period::Monthly, self.monthly),
            (Period::Yearly, self.yearly),
        ]
    }
}

/// A kind of calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    /// A clock hour.
    Hourly,
    /// A calendar day.
    Daily,
    /// An ISO week.
    Weekly,
    /// A calendar month.
    Monthly,
    /// A calendar year.
    Yearly,
}

/// Why the calendar keeps an item: it is the newest of one period.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CalendarReason {
    /// The kind of period.
    pub period: Period,
    /// The period, written out: `2026-11-30 13h`, `2026-11-30`,
    /// `2026-W48`, `2026-11`, `2026`.
    pub label: String,
}

impl fmt::Display for CalendarReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.period {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        };
        write!(f, "{kind} {}", self.label)
    }
}

impl Period {
    fn label(self, t: NaiveDateTime) -> String {
        match self {
            Self::Hourly => format!("{} {:02}h", t.date(), t.hour()),
            Self::Daily => t.date().to_string(),
            Self::Weekly => {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Self::Monthly => format!("{}-{:02}", t.year(), t.month()),
            Self::Yearly => t.year().to_string(),
        }
    }
}

/// For each of `times` (in the given order), the calendar periods it is
/// kept for; an empty list means the calendar does not keep it. Equal
/// times are the same item for the calendar: only the first of them is
/// kept for a period.
#[must_use]
pub fn calendar_keeps(times: &[NaiveDateTime], keeps: &CalendarKeeps) -> Vec<Vec<CalendarReason>> {
    let mut newest_first: Vec<usize> = (0..times.len()).collect();
    newest_first.sort_by(|a, b| times[*b].cmp(&times[*a]).then(a.cmp(b)));
    let mut out = vec![Vec::new(); times.len()];
    for (period, count) in keeps.periods() {
        let mut last_label: Option<String> = None;
        let mut kept = 0;
        for &i in &newest_first {
            if kept == count {
                break;
            }
            let label = period.label(times[i]);
            if last_label.as_ref() == Some(&label) {
                continue;
            }
            out[i].push(CalendarReason {
                period,
                label: label.clone(),
            });
            last_label = Some(label);
            kept += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn kept(times: &[NaiveDateTime], keeps: &CalendarKeeps) -> Vec<String> {
        calendar_keeps(times, keeps)
            .iter()
            .zip(times)
            .filter(|(r, _)| !r.is_empty())
            .map(|(r, t)| {
                let why: Vec<String> = r.iter().map(ToString::to_string).collect();
                format!("{} {}", t.format("%m-%d %H:%M"), why.join(","))
            })
            .collect()
    }

    #[test]
    fn the_newest_of_each_period_is_kept_and_gaps_do_not_count() {
        // Two snapshots on 11-30, none on 11-28 and 11-27.
        let times = [
            t("2026-11-26 03:00"),
            t("2026-11-29 03:00"),
            t("2026-11-30 03:00"),
            t("2026-11-30 15:00"),
            t("2026-11-25 03:00"),
        ];
        let keeps = CalendarKeeps {
            daily: 3,
            ..CalendarKeeps::default()
        };
        assert_eq!(
            kept(&times, &keeps),
            [
                "11-26 03:00 daily 2026-11-26",
                "11-29 03:00 daily 2026-11-29",
                "11-30 15:00 daily 2026-11-30",
            ]
        );
    }

    #[test]
    fn one_item_may_be_kept_for_several_periods() {
        let times = [
            t("2025-12-31 23:00"),
            t("2026-01-04 10:00"), // Sunday of ISO week 2026-W01
            t("2026-01-05 10:00"), // Monday, W02
            t("2026-01-05 11:00"),
        ];
        let keeps = CalendarKeeps {
            hourly: 1,
            daily: 1,
            weekly: 3,
            monthly: 2,
            yearly: 5,
        };
        assert_eq!(
            kept(&times, &keeps),
            [
                "12-31 23:00 monthly 2025-12,yearly 2025",
                "01-04 10:00 weekly 2026-W01",
                "01-05 11:00 hourly 2026-01-05 11h,daily 2026-01-05,weekly 2026-W02,monthly 2026-01,yearly 2026",
            ]
        );
    }

    #[test]
    fn nothing_is_kept_without_keeps() {
        let times = [t("2026-01-01 00:00")];
        assert!(CalendarKeeps::default().is_empty());
        assert_eq!(
            kept(&times, &CalendarKeeps::default()),
            Vec::<String>::new()
        );
    }
}
