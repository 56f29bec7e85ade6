//! A year of daily backups under each strategy: every export's kind, level
//! and base, and what is held after it, against tables written out here.

#![allow(clippy::unwrap_used)]

use super::*;

/// Fulls every 30 days from 2025-01-01 (month and day).
const FULLS: [&str; 13] = [
    "0101", "0131", "0302", "0401", "0501", "0531", "0630", "0730", "0829", "0928", "1028", "1127",
    "1227",
];

/// With levels [30, 7, 1]: the weekly (level 1) backups, 7, 14, 21 and 28
/// days after each full.
const WEEKLIES: [&str; 48] = [
    "0108", "0115", "0122", "0129", "0207", "0214", "0221", "0228", //
    "0309", "0316", "0323", "0330", "0408", "0415", "0422", "0429", //
    "0508", "0515", "0522", "0529", "0607", "0614", "0621", "0628", //
    "0707", "0714", "0721", "0728", "0806", "0813", "0820", "0827", //
    "0905", "0912", "0919", "0926", "1005", "1012", "1019", "1026", //
    "1104", "1111", "1118", "1125", "1204", "1211", "1218", "1225", //
];

/// What one night's export was.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Night {
    day: String,
    level: u32,
    base: Option<String>,
    holds: Vec<String>,
}

/// Snapshots the days of 2025 one by one, exporting each with `strategy`
/// (every export usable as a base) and recording it as the export step
/// does.
fn a_year_of(strategy: &Strategy) -> Vec<Night> {
    let mut snapshots: Vec<SnapshotInfo> = Vec::new();
    let mut nights = Vec::new();
    let mut day = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    while day.year() == 2025 {
        let name = format!("tank/data@{}030000", day.format("%Y%m%d"));
        snapshots.push(SnapshotInfo {
            name: SnapshotName::parse(&name).unwrap(),
            userrefs: 0,
            kind: None,
            base: None,
            uploaded: None,
            level: None,
        });
        let bases = BaseFacts {
            usable: &|_| true,
            flags: &|_| Some(SendFlags::default()),
            recipients: &|_| Some(Vec::new()),
            export_recipients: &[],
        };
        let plan = plan_export(
            &snapshots,
            None,
            strategy,
            None,
            &SendFlags::default(),
            &bases,
        )
        .unwrap();
        let s = snapshots.last_mut().unwrap();
        s.kind = Some(plan.kind);
        s.level = Some(plan.level);
        s.base = plan.base.as_ref().map(|b| b.snap().to_owned());
        let mmdd = |n: &SnapshotName| n.snap()[4..8].to_owned();
        nights.push(Night {
            day: day.format("%m%d").to_string(),
            level: plan.level,
            base: plan.base.as_ref().map(mmdd),
            holds: plan.holds.iter().map(mmdd).collect(),
        });
        day = day.succ_opt().unwrap();
    }
    nights
}

/// The newest of `days` before `day` (all are `MMDD` of one year).
fn newest_before(days: &[&str], day: &str) -> String {
    days.iter().filter(|d| **d < day).max().unwrap().to_string()
}

use chrono::Datelike;

#[test]
fn since_last_full_bases_every_night_on_the_last_full() {
    let nights = a_year_of(&Strategy::SinceLastFull {
        full_every_days: 30,
    });
    assert_eq!(nights.len(), 365);
    for n in &nights {
        let full = FULLS.contains(&n.day.as_str());
        let last_full = if full {
            n.day.clone()
        } else {
            newest_before(&FULLS, &n.day)
        };
        let expected = Night {
            day: n.day.clone(),
            level: u32::from(!full),
            base: (!full).then(|| last_full.clone()),
            holds: vec![last_full],
        };
        assert_eq!(*n, expected);
    }
}

#[test]
fn chain_bases_every_night_on_the_night_before() {
    let nights = a_year_of(&Strategy::Chain {
        full_every_days: 30,
    });
    let mut depth = 0;
    for (i, n) in nights.iter().enumerate() {
        let full = FULLS.contains(&n.day.as_str());
        depth = if full { 0 } else { depth + 1 };
        let expected = Night {
            day: n.day.clone(),
            level: depth,
            base: (!full).then(|| nights[i - 1].day.clone()),
            holds: vec![n.day.clone()],
        };
        assert_eq!(*n, expected);
    }
    // The longest chain: a full and 29 incrementals.
    assert_eq!(nights.iter().map(|n| n.level).max(), Some(29));
}

#[test]
fn levels_base_dailies_on_the_weekly_and_weeklies_on_the_full() {
    let nights = a_year_of(&Strategy::Levels {
        days: vec![30, 7, 1],
    });
    let mut full_or_weekly: Vec<&str> = FULLS.iter().chain(&WEEKLIES).copied().collect();
    full_or_weekly.sort_unstable();
    for n in &nights {
        let day = n.day.as_str();
        let (level, base) = if FULLS.contains(&day) {
            (0, None)
        } else if WEEKLIES.contains(&day) {
            (1, Some(newest_before(&FULLS, day)))
        } else {
            (2, Some(newest_before(&full_or_weekly, day)))
        };
        let last_full = full_or_weekly
            .iter()
            .filter(|d| **d <= day && FULLS.contains(d))
            .max()
            .unwrap()
            .to_string();
        let last_weekly_or_full = full_or_weekly
            .iter()
            .filter(|d| **d <= day)
            .max()
            .unwrap()
            .to_string();
        let mut holds = vec![last_full, last_weekly_or_full];
        holds.dedup();
        let expected = Night {
            day: n.day.clone(),
            level,
            base,
            holds,
        };
        assert_eq!(*n, expected);
    }
}

#[test]
fn a_lost_weekly_is_made_again_by_the_next_night() {
    // The weekly of 01-08 never reached the remote and its export is gone:
    // 01-09 is made a weekly on the full, not a daily on the lost one.
    let mut snapshots: Vec<SnapshotInfo> = Vec::new();
    let add = |snapshots: &mut Vec<SnapshotInfo>, snap: &str, kind, level, base: Option<&str>| {
        snapshots.push(SnapshotInfo {
            name: SnapshotName::parse(&format!("tank/data@{snap}")).unwrap(),
            userrefs: 0,
            kind,
            base: base.map(str::to_owned),
            uploaded: None,
            level,
        });
    };
    use ExportKind::{Full, Incremental};
    add(&mut snapshots, "20250101030000", Some(Full), None, None);
    add(
        &mut snapshots,
        "20250107030000",
        Some(Incremental),
        Some(2),
        Some("20250101030000"),
    );
    add(
        &mut snapshots,
        "20250108030000",
        Some(Incremental),
        Some(1),
        Some("20250101030000"),
    );
    add(&mut snapshots, "20250109030000", None, None, None);
    let lost = |s: &SnapshotInfo| s.name.snap() != "20250108030000";
    let bases = BaseFacts {
        usable: &lost,
        flags: &|_| Some(SendFlags::default()),
        recipients: &|_| Some(Vec::new()),
        export_recipients: &[],
    };
    let strategy = Strategy::Levels {
        days: vec![30, 7, 1],
    };
    let plan = plan_export(
        &snapshots,
        None,
        &strategy,
        None,
        &SendFlags::default(),
        &bases,
    )
    .unwrap();
    assert_eq!(plan.level, 1, "{}", plan.reason);
    assert_eq!(plan.base.unwrap().snap(), "20250101030000");
}
