//! The rules of remote pruning on plain listings: a year of each
//! incremental strategy's shape, and the cases at the edges.
#![allow(clippy::unwrap_used)]

use chrono::{NaiveDate, TimeZone};

use super::*;
use crate::model::testing::remote_backup;
use crate::model::RemoteFile;

/// Snapshots of the year fixtures are taken at 03:00 UTC.
const SNAP_TIME: &str = "030000";

/// How the incrementals of a fixture are based.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Each on the last full.
    SinceLastFull,
    /// Each on the backup of the day before.
    Chain,
    /// Dump levels [30, 7, 1]: a full every 30 days, every 7th day of a
    /// full's cycle an incremental on the full, the other days one on the
    /// newest of the full and that cycle's weekly.
    Levels,
}

/// A whole backup `dir` based on `base`: one chunk, `SHA256SUMS` and the
/// manifest, listed with their sizes.
fn whole(dir: &str, base: Option<&str>) -> RemoteBackup {
    let snapshot = dir.trim_end_matches("-full");
    let chunk = format!("tank-data@{snapshot}.zfs.gpg.0000");
    remote_backup(
        dir,
        base,
        &[(&chunk, 1000, "aa")],
        &[
            (&chunk, 1000, Some("aa")),
            (SHA256SUMS_FILE, 90, None),
            (MANIFEST_FILE, 400, None),
        ],
        true,
    )
}

/// A backup every day of 2023 at 03:00, the first a full and then a full
/// every 30 days, the incrementals based as `shape` says.
fn year(shape: Shape) -> Vec<RemoteBackup> {
    let start = NaiveDate::from_ymd_opt(2023, 1, 1).unwrap();
    let (mut last_full, mut last_weekly, mut previous) = (String::new(), None, String::new());
    let mut out = Vec::new();
    for day in 0..365 {
        let snap = format!(
            "{}{SNAP_TIME}",
            (start + chrono::Days::new(day)).format("%Y%m%d")
        );
        let in_cycle = day % 30;
        if in_cycle == 0 {
            out.push(whole(&format!("{snap}-full"), None));
            last_full.clone_from(&snap);
            last_weekly = None;
        } else {
            let base = match shape {
                Shape::SinceLastFull => last_full.clone(),
                Shape::Chain => previous.clone(),
                Shape::Levels if in_cycle % 7 == 0 => {
                    last_weekly = Some(snap.clone());
                    last_full.clone()
                }
                Shape::Levels => last_weekly.clone().unwrap_or_else(|| last_full.clone()),
            };
            out.push(whole(&snap, Some(&base)));
        }
        previous = snap;
    }
    out
}

fn sample_policy() -> RemotePrunePolicy {
    RemotePrunePolicy {
        keeps: CalendarKeeps {
            daily: 7,
            weekly: 4,
            monthly: 3,
            ..CalendarKeeps::default()
        },
        keep_chains: 1,
        incomplete_grace: TimeDelta::hours(48),
        zone: SnapshotTimeZone::Utc,
        claimed_at: Some(at(2023, 1, 1, 0)),
    }
}

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

/// The end of the year fixtures' year.
fn year_end() -> DateTime<Utc> {
    at(2023, 12, 31, 12)
}

fn with_action(plan: &RemotePrunePlan, action: RemoteAction) -> Vec<&str> {
    plan.decisions
        .iter()
        .filter(|d| d.action == action)
        .map(|d| d.dir_name.as_str())
        .collect()
}

fn reasons(plan: &RemotePrunePlan, dir: &str) -> Vec<String> {
    plan.decision(dir)
        .unwrap()
        .reasons
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn assert_year(shape: Shape, kept: &[&str], deleted: &str) {
    let plan = plan_remote_prune(&year(shape), &sample_policy(), year_end());
    assert_eq!(with_action(&plan, RemoteAction::Keep), kept, "{shape:?}");
    let deleted: Vec<&str> = deleted.split_whitespace().collect();
    assert_eq!(
        with_action(&plan, RemoteAction::Delete),
        deleted,
        "{shape:?}"
    );
    assert_eq!(plan.bytes_freed(), 1490 * deleted.len() as u64);
    assert_eq!(plan.bytes_kept(), 1490 * kept.len() as u64);
}

#[test]
fn the_policy_is_the_configs_table_and_none_without_it() {
    let text = "dataset = \"tank/data\"\nintermediate_basedir = \"/b\"\nremote = \"r:d\"\n\
                passphrase_file = \"/p\"\nsnapshot_time_zone = \"local\"\n";
    let path = std::path::Path::new("/etc/zfs2cloud/d.toml");
    assert_eq!(
        RemotePrunePolicy::from_config(&Config::parse(text, path).unwrap()),
        None
    );
    let with = format!("{text}[retention.remote]\nkeep_weekly = 4\nkeep_chains = 2\n");
    let policy = RemotePrunePolicy::from_config(&Config::parse(&with, path).unwrap()).unwrap();
    assert_eq!(
        policy,
        RemotePrunePolicy {
            keeps: CalendarKeeps {
                weekly: 4,
                ..CalendarKeeps::default()
            },
            keep_chains: 2,
            incomplete_grace: TimeDelta::hours(48),
            zone: SnapshotTimeZone::Local,
            claimed_at: None,
        }
    );
}

#[test]
fn a_year_since_the_last_full_keeps_the_periods_and_their_fulls() {
    assert_year(
        Shape::SinceLastFull,
        &[
            "20231028030000-full",
            "20231031030000",
            "20231127030000-full",
            "20231130030000",
            "20231210030000",
            "20231217030000",
            "20231224030000",
            "20231225030000",
            "20231226030000",
            "20231227030000-full",
            "20231228030000",
            "20231229030000",
            "20231230030000",
            "20231231030000",
        ],
        SINCE_LAST_FULL_DELETED,
    );
}

#[test]
fn a_year_of_chains_keeps_every_link_up_to_each_kept_backup() {
    let mut kept = vec![
        "20231028030000-full",
        "20231029030000",
        "20231030030000",
        "20231031030000",
        "20231127030000-full",
        "20231128030000",
        "20231129030000",
        "20231130030000",
    ];
    kept.extend([
        "20231201030000",
        "20231202030000",
        "20231203030000",
        "20231204030000",
        "20231205030000",
        "20231206030000",
        "20231207030000",
        "20231208030000",
        "20231209030000",
        "20231210030000",
        "20231211030000",
        "20231212030000",
        "20231213030000",
        "20231214030000",
        "20231215030000",
        "20231216030000",
        "20231217030000",
        "20231218030000",
        "20231219030000",
        "20231220030000",
        "20231221030000",
        "20231222030000",
        "20231223030000",
        "20231224030000",
        "20231225030000",
        "20231226030000",
        "20231227030000-full",
        "20231228030000",
        "20231229030000",
        "20231230030000",
        "20231231030000",
    ]);
    assert_year(Shape::Chain, &kept, CHAIN_DELETED);
}

#[test]
fn a_year_of_levels_keeps_the_weekly_under_each_kept_daily() {
    assert_year(
        Shape::Levels,
        &[
            "20231028030000-full",
            "20231031030000",
            "20231127030000-full",
            "20231130030000",
            "20231204030000",
            "20231210030000",
            "20231211030000",
            "20231217030000",
            "20231218030000",
            "20231224030000",
            "20231225030000",
            "20231226030000",
            "20231227030000-full",
            "20231228030000",
            "20231229030000",
            "20231230030000",
            "20231231030000",
        ],
        LEVELS_DELETED,
    );
}

#[test]
fn each_kept_backup_says_why() {
    let plan = plan_remote_prune(&year(Shape::Levels), &sample_policy(), year_end());
    assert_eq!(
        reasons(&plan, "20231231030000"),
        [
            "daily 2023-12-31",
            "weekly 2023-W52",
            "monthly 2023-12",
            "in the newest chain (20231227030000-full)",
            "the newest complete backup",
        ]
    );
    assert_eq!(reasons(&plan, "20231204030000"), ["base of 20231210030000"]);
    assert_eq!(
        reasons(&plan, "20231127030000-full"),
        ["base of 20231226030000 and 8 more"]
    );
    assert_eq!(reasons(&plan, "20231101030000"), ["no keep rule applies"]);
}

/// The policy that keeps only what must stay: nothing but the newest
/// complete backup and its chain. The config refuses it; the plan must
/// still never lose that chain.
fn keeps_nothing() -> RemotePrunePolicy {
    RemotePrunePolicy {
        keeps: CalendarKeeps::default(),
        keep_chains: 0,
        ..sample_policy()
    }
}

#[test]
fn the_newest_complete_backup_and_its_chain_stay_whatever_the_keeps() {
    let plan = plan_remote_prune(&year(Shape::Chain), &keeps_nothing(), year_end());
    assert_eq!(
        with_action(&plan, RemoteAction::Keep),
        [
            "20231227030000-full",
            "20231228030000",
            "20231229030000",
            "20231230030000",
            "20231231030000"
        ]
    );
    // The newest complete one, not the newest directory: an upload in
    // progress is no backup yet.
    let mut backups = year(Shape::SinceLastFull);
    backups.push(remote_backup(
        "20231231150000",
        Some("20231227030000"),
        &[],
        &[("tank-data@20231231150000.zfs.gpg.0000", 7, None)],
        false,
    ));
    let plan = plan_remote_prune(&backups, &keeps_nothing(), year_end());
    assert_eq!(
        with_action(&plan, RemoteAction::Keep),
        ["20231227030000-full", "20231231030000", "20231231150000"]
    );
}

#[test]
fn an_orphan_goes_but_an_incremental_on_an_intact_incremental_stays() {
    let backups = [
        whole("20240101000000-full", None),
        whole("20240102000000", Some("20240101000000")),
        whole("20240103000000", Some("20240102000000")),
        // Its base 20240104000000 is gone, and with it this chain.
        whole("20240105000000", Some("20240104000000")),
        whole("20240106000000", Some("20240105000000")),
    ];
    let policy = RemotePrunePolicy {
        keeps: CalendarKeeps {
            daily: 30,
            ..CalendarKeeps::default()
        },
        ..sample_policy()
    };
    let plan = plan_remote_prune(&backups, &policy, at(2024, 1, 7, 0));
    assert_eq!(
        with_action(&plan, RemoteAction::Delete),
        ["20240105000000", "20240106000000"]
    );
    assert!(
        reasons(&plan, "20240106000000")[0].contains("orphan: its restore needs 20240104000000")
    );
    assert_eq!(
        reasons(&plan, "20240103000000"),
        [
            "daily 2024-01-03",
            "in the newest chain (20240101000000-full)",
            "the newest complete backup"
        ]
    );
    assert_eq!(plan.deletion_order, ["20240106000000", "20240105000000"]);
}

/// A backup of `dir` without manifest: chunks only (as the original tool
/// left them), or with `SHA256SUMS` too (as an interrupted zfs2cloud
/// upload).
fn no_manifest(dir: &str, sums: bool) -> RemoteBackup {
    let snapshot = dir.trim_end_matches("-full");
    let chunk = format!("tank-data@{snapshot}.zfs.gpg.0000");
    let mut files = vec![(chunk.as_str(), 1000, None)];
    if sums {
        files.push((SHA256SUMS_FILE, 90, None));
    }
    remote_backup(dir, None, &[], &files, false)
}

#[test]
fn an_incomplete_backup_gets_the_grace_period_then_goes() {
    let backups = [
        whole("20240101000000-full", None),
        no_manifest("20240108000000", false),
        no_manifest("20240109000000", true),
        whole("20240109120000", Some("20240101000000")),
        no_manifest("20240110000000", false),
    ];
    let policy = RemotePrunePolicy {
        claimed_at: Some(at(2024, 1, 1, 0)),
        ..keeps_nothing()
    };
    let plan = plan_remote_prune(&backups, &policy, at(2024, 1, 11, 6));
    assert_eq!(
        with_action(&plan, RemoteAction::Delete),
        ["20240108000000", "20240109000000"]
    );
    assert!(reasons(&plan, "20240108000000")[0].contains("older than 48 hours"));
    assert!(reasons(&plan, "20240110000000")[0].contains("maybe an upload in progress"));
    // Nothing is based on an incomplete backup, not even its own chain.
    assert_eq!(
        with_action(&plan, RemoteAction::Keep),
        ["20240101000000-full", "20240109120000", "20240110000000"]
    );
}

#[test]
fn what_may_be_the_original_tools_is_never_deleted() {
    let backups = [
        no_manifest("20231201000000-full", false),
        no_manifest("20231202000000", false),
        // From before the claim, but with SHA256SUMS: zfs2cloud's.
        no_manifest("20231203000000", true),
        whole("20240101000000-full", None),
    ];
    let claimed = RemotePrunePolicy {
        claimed_at: Some(at(2023, 12, 31, 0)),
        ..keeps_nothing()
    };
    let plan = plan_remote_prune(&backups, &claimed, at(2024, 2, 1, 0));
    assert_eq!(with_action(&plan, RemoteAction::Delete), ["20231203000000"]);
    assert!(reasons(&plan, "20231202000000")[0].contains("original tool"));
    // Without an owner marker, no backup without SHA256SUMS can be told
    // from the original tool's.
    let unclaimed = RemotePrunePolicy {
        claimed_at: None,
        ..claimed
    };
    let mut late = backups.to_vec();
    late.push(no_manifest("20240105000000", false));
    let plan = plan_remote_prune(&late, &unclaimed, at(2024, 2, 1, 0));
    assert_eq!(with_action(&plan, RemoteAction::Delete), ["20231203000000"]);
}

#[test]
fn a_damaged_backup_is_kept_with_its_chain_and_says_so() {
    let mut damaged = whole("20240103000000", Some("20240102000000"));
    damaged.files[0].sha256 = Some("bb".into());
    let mut missing_chunk = whole("20240104000000", Some("20240102000000"));
    missing_chunk.files.remove(0);
    let mut unreadable = whole("20240105000000", Some("20240101000000"));
    unreadable.manifest = None;
    unreadable.manifest_error = Some("EOF while parsing".into());
    let backups = [
        whole("20240101000000-full", None),
        whole("20240102000000", Some("20240101000000")),
        damaged,
        missing_chunk,
        unreadable,
        whole("20240201000000-full", None),
    ];
    let plan = plan_remote_prune(&backups, &keeps_nothing(), at(2024, 3, 1, 0));
    assert!(
        with_action(&plan, RemoteAction::Delete).is_empty(),
        "{plan:?}"
    );
    assert!(reasons(&plan, "20240103000000")[0].starts_with("DAMAGED (chunk "));
    assert!(reasons(&plan, "20240104000000")[0].starts_with("DAMAGED (missing chunk(s)"));
    assert!(reasons(&plan, "20240105000000")[0].contains("unreadable"));
    assert_eq!(
        reasons(&plan, "20240102000000"),
        ["base of 20240104000000 and 1 more"]
    );
}

#[test]
fn a_backup_based_on_a_damaged_one_is_no_orphan() {
    let mut unreadable = whole("20240102000000", Some("20240101000000"));
    unreadable.manifest = None;
    unreadable.manifest_error = Some("EOF while parsing".into());
    let backups = [
        whole("20240101000000-full", None),
        unreadable,
        whole("20240103000000", Some("20240102000000")),
        whole("20240201000000-full", None),
    ];
    let plan = plan_remote_prune(&backups, &keeps_nothing(), at(2024, 3, 1, 0));
    // Nothing keeps 03; the damaged 02 keeps the full before it.
    assert_eq!(with_action(&plan, RemoteAction::Delete), ["20240103000000"]);
    assert_eq!(reasons(&plan, "20240103000000"), ["no keep rule applies"]);
    assert_eq!(
        reasons(&plan, "20240101000000-full"),
        ["base of 20240102000000"]
    );
}

#[test]
fn an_orphan_of_a_kept_backup_stays_while_it_does() {
    let backups = [
        whole("20240101000000-full", None),
        no_manifest("20240102000000", false),
        whole("20240103000000", Some("20240102000000")),
        whole("20240201000000-full", None),
    ];
    let policy = RemotePrunePolicy {
        claimed_at: Some(at(2024, 1, 2, 12)),
        ..keeps_nothing()
    };
    let plan = plan_remote_prune(&backups, &policy, at(2024, 3, 1, 0));
    assert_eq!(
        with_action(&plan, RemoteAction::Delete),
        ["20240101000000-full"]
    );
    assert_eq!(
        reasons(&plan, "20240103000000"),
        ["its chain is broken at 20240102000000, whose backup is kept: kept with it"]
    );
}

#[test]
fn inside_a_backup_the_manifest_goes_first_and_the_checksums_last() {
    let mut b = whole("20240101000000-full", None);
    b.files.push(RemoteFile {
        name: "tank-data@20240101000000.zfs.gpg.0001".into(),
        size: 1,
        sha256: None,
    });
    assert_eq!(
        deletion_sequence(&b),
        [
            MANIFEST_FILE,
            "tank-data@20240101000000.zfs.gpg.0000",
            "tank-data@20240101000000.zfs.gpg.0001",
            SHA256SUMS_FILE
        ]
    );
}

/// `backups` after deleting, in the plan's order, the first `steps` files
/// (each directory's [`deletion_sequence`], then the directory).
fn after_steps(
    backups: &[RemoteBackup],
    plan: &RemotePrunePlan,
    steps: usize,
) -> Vec<RemoteBackup> {
    let mut left = backups.to_vec();
    let mut done = 0;
    for dir in &plan.deletion_order {
        let i = left.iter().position(|b| b.dir_name == *dir).unwrap();
        for file in deletion_sequence(&left[i].clone()) {
            if done == steps {
                return left;
            }
            if file == MANIFEST_FILE {
                left[i].manifest = None;
            }
            left[i].files.retain(|f| f.name != file);
            done += 1;
        }
        if done == steps {
            return left;
        }
        left.remove(i);
        done += 1;
    }
    left
}

/// Every file deletion and directory removal the plan makes.
fn steps_of(backups: &[RemoteBackup], plan: &RemotePrunePlan) -> usize {
    plan.deletion_order
        .iter()
        .map(|dir| {
            backups
                .iter()
                .find(|b| b.dir_name == *dir)
                .unwrap()
                .files
                .len()
                + 1
        })
        .sum()
}

/// The property behind the deletion order: after every step of the plan,
/// a backup is either complete with the chain it had (nothing broken
/// looks complete), or without manifest (incomplete, and deleted by a
/// rerun); and what the plan keeps is untouched.
fn check_every_prefix(backups: &[RemoteBackup], plan: &RemotePrunePlan) {
    let complete = |b: &RemoteBackup| b.manifest.is_some();
    let before = Dependencies::new(backups, &complete);
    let intact_before: Vec<&str> = (0..backups.len())
        .filter(|&i| before.depth(i).is_some())
        .map(|i| backups[i].dir_name.as_str())
        .collect();
    for steps in 0..=steps_of(backups, plan) {
        let left = after_steps(backups, plan, steps);
        let deps = Dependencies::new(&left, &complete);
        for (i, b) in left.iter().enumerate() {
            if !complete(b) {
                continue;
            }
            assert_eq!(check_listing(b), Health::Ok, "step {steps}: {}", b.dir_name);
            if intact_before.contains(&b.dir_name.as_str()) {
                assert!(
                    deps.chain(i).is_ok(),
                    "step {steps}: {} lost its chain",
                    b.dir_name
                );
            }
        }
        for d in plan
            .decisions
            .iter()
            .filter(|d| d.action == RemoteAction::Keep)
        {
            let now = left.iter().find(|b| b.dir_name == d.dir_name).unwrap();
            let was = backups.iter().find(|b| b.dir_name == d.dir_name).unwrap();
            assert_eq!(
                now.files, was.files,
                "step {steps}: kept {} touched",
                d.dir_name
            );
        }
    }
    assert_eq!(
        after_steps(backups, plan, usize::MAX).len(),
        plan.decisions.len() - plan.deletion_order.len()
    );
}

#[test]
fn an_interrupted_prune_never_leaves_a_complete_backup_without_its_chain() {
    for shape in [Shape::SinceLastFull, Shape::Chain, Shape::Levels] {
        // Two months: every cut of the deletion is checked.
        let backups: Vec<RemoteBackup> = year(shape).into_iter().take(75).collect();
        for policy in [sample_policy(), keeps_nothing()] {
            let plan = plan_remote_prune(&backups, &policy, at(2023, 3, 17, 0));
            assert!(!plan.deletion_order.is_empty(), "{shape:?}");
            check_every_prefix(&backups, &plan);
        }
    }
}

#[test]
fn every_dependent_is_deleted_before_its_base() {
    for shape in [Shape::SinceLastFull, Shape::Chain, Shape::Levels] {
        let backups = year(shape);
        let plan = plan_remote_prune(&backups, &keeps_nothing(), year_end());
        let deps = Dependencies::new(&backups, &has_manifest);
        let position = |dir: &str| plan.deletion_order.iter().position(|d| d == dir);
        for (i, b) in backups.iter().enumerate() {
            let (Some(base), Some(at)) = (deps.base_of(i), position(&b.dir_name)) else {
                continue;
            };
            if let Some(base_at) = position(&backups[base].dir_name) {
                assert!(at < base_at, "{shape:?}: {} after its base", b.dir_name);
            }
        }
    }
}

/// What a year of the since last full shape loses.
const SINCE_LAST_FULL_DELETED: &str = "
    20230101030000-full 20230102030000 20230103030000 20230104030000 20230105030000
    20230106030000 20230107030000 20230108030000 20230109030000 20230110030000
    20230111030000 20230112030000 20230113030000 20230114030000 20230115030000
    20230116030000 20230117030000 20230118030000 20230119030000 20230120030000
    20230121030000 20230122030000 20230123030000 20230124030000 20230125030000
    20230126030000 20230127030000 20230128030000 20230129030000 20230130030000
    20230131030000-full 20230201030000 20230202030000 20230203030000 20230204030000
    20230205030000 20230206030000 20230207030000 20230208030000 20230209030000
    20230210030000 20230211030000 20230212030000 20230213030000 20230214030000
    20230215030000 20230216030000 20230217030000 20230218030000 20230219030000
    20230220030000 20230221030000 20230222030000 20230223030000 20230224030000
    20230225030000 20230226030000 20230227030000 20230228030000 20230301030000
    20230302030000-full 20230303030000 20230304030000 20230305030000 20230306030000
    20230307030000 20230308030000 20230309030000 20230310030000 20230311030000
    20230312030000 20230313030000 20230314030000 20230315030000 20230316030000
    20230317030000 20230318030000 20230319030000 20230320030000 20230321030000
    20230322030000 20230323030000 20230324030000 20230325030000 20230326030000
    20230327030000 20230328030000 20230329030000 20230330030000 20230331030000
    20230401030000-full 20230402030000 20230403030000 20230404030000 20230405030000
    20230406030000 20230407030000 20230408030000 20230409030000 20230410030000
    20230411030000 20230412030000 20230413030000 20230414030000 20230415030000
    20230416030000 20230417030000 20230418030000 20230419030000 20230420030000
    20230421030000 20230422030000 20230423030000 20230424030000 20230425030000
    20230426030000 20230427030000 20230428030000 20230429030000 20230430030000
    20230501030000-full 20230502030000 20230503030000 20230504030000 20230505030000
    20230506030000 20230507030000 20230508030000 20230509030000 20230510030000
    20230511030000 20230512030000 20230513030000 20230514030000 20230515030000
    20230516030000 20230517030000 20230518030000 20230519030000 20230520030000
    20230521030000 20230522030000 20230523030000 20230524030000 20230525030000
    20230526030000 20230527030000 20230528030000 20230529030000 20230530030000
    20230531030000-full 20230601030000 20230602030000 20230603030000 20230604030000
    20230605030000 20230606030000 20230607030000 20230608030000 20230609030000
    20230610030000 20230611030000 20230612030000 20230613030000 20230614030000
    20230615030000 20230616030000 20230617030000 20230618030000 20230619030000
    20230620030000 20230621030000 20230622030000 20230623030000 20230624030000
    20230625030000 20230626030000 20230627030000 20230628030000 20230629030000
    20230630030000-full 20230701030000 20230702030000 20230703030000 20230704030000
    20230705030000 20230706030000 20230707030000 20230708030000 20230709030000
    20230710030000 20230711030000 20230712030000 20230713030000 20230714030000
    20230715030000 20230716030000 20230717030000 20230718030000 20230719030000
    20230720030000 20230721030000 20230722030000 20230723030000 20230724030000
    20230725030000 20230726030000 20230727030000 20230728030000 20230729030000
    20230730030000-full 20230731030000 20230801030000 20230802030000 20230803030000
    20230804030000 20230805030000 20230806030000 20230807030000 20230808030000
    20230809030000 20230810030000 20230811030000 20230812030000 20230813030000
    20230814030000 20230815030000 20230816030000 20230817030000 20230818030000
    20230819030000 20230820030000 20230821030000 20230822030000 20230823030000
    20230824030000 20230825030000 20230826030000 20230827030000 20230828030000
    20230829030000-full 20230830030000 20230831030000 20230901030000 20230902030000
    20230903030000 20230904030000 20230905030000 20230906030000 20230907030000
    20230908030000 20230909030000 20230910030000 20230911030000 20230912030000
    20230913030000 20230914030000 20230915030000 20230916030000 20230917030000
    20230918030000 20230919030000 20230920030000 20230921030000 20230922030000
    20230923030000 20230924030000 20230925030000 20230926030000 20230927030000
    20230928030000-full 20230929030000 20230930030000 20231001030000 20231002030000
    20231003030000 20231004030000 20231005030000 20231006030000 20231007030000
    20231008030000 20231009030000 20231010030000 20231011030000 20231012030000
    20231013030000 20231014030000 20231015030000 20231016030000 20231017030000
    20231018030000 20231019030000 20231020030000 20231021030000 20231022030000
    20231023030000 20231024030000 20231025030000 20231026030000 20231027030000
    20231029030000 20231030030000 20231101030000 20231102030000 20231103030000
    20231104030000 20231105030000 20231106030000 20231107030000 20231108030000
    20231109030000 20231110030000 20231111030000 20231112030000 20231113030000
    20231114030000 20231115030000 20231116030000 20231117030000 20231118030000
    20231119030000 20231120030000 20231121030000 20231122030000 20231123030000
    20231124030000 20231125030000 20231126030000 20231128030000 20231129030000
    20231201030000 20231202030000 20231203030000 20231204030000 20231205030000
    20231206030000 20231207030000 20231208030000 20231209030000 20231211030000
    20231212030000 20231213030000 20231214030000 20231215030000 20231216030000
    20231218030000 20231219030000 20231220030000 20231221030000 20231222030000
    20231223030000
";

/// What a year of the chain shape loses.
const CHAIN_DELETED: &str = "
    20230101030000-full 20230102030000 20230103030000 20230104030000 20230105030000
    20230106030000 20230107030000 20230108030000 20230109030000 20230110030000
    20230111030000 20230112030000 20230113030000 20230114030000 20230115030000
    20230116030000 20230117030000 20230118030000 20230119030000 20230120030000
    20230121030000 20230122030000 20230123030000 20230124030000 20230125030000
    20230126030000 20230127030000 20230128030000 20230129030000 20230130030000
    20230131030000-full 20230201030000 20230202030000 20230203030000 20230204030000
    20230205030000 20230206030000 20230207030000 20230208030000 20230209030000
    20230210030000 20230211030000 20230212030000 20230213030000 20230214030000
    20230215030000 20230216030000 20230217030000 20230218030000 20230219030000
    20230220030000 20230221030000 20230222030000 20230223030000 20230224030000
    20230225030000 20230226030000 20230227030000 20230228030000 20230301030000
    20230302030000-full 20230303030000 20230304030000 20230305030000 20230306030000
    20230307030000 20230308030000 20230309030000 20230310030000 20230311030000
    20230312030000 20230313030000 20230314030000 20230315030000 20230316030000
    20230317030000 20230318030000 20230319030000 20230320030000 20230321030000
    20230322030000 20230323030000 20230324030000 20230325030000 20230326030000
    20230327030000 20230328030000 20230329030000 20230330030000 20230331030000
    20230401030000-full 20230402030000 20230403030000 20230404030000 20230405030000
    20230406030000 20230407030000 20230408030000 20230409030000 20230410030000
    20230411030000 20230412030000 20230413030000 20230414030000 20230415030000
    20230416030000 20230417030000 20230418030000 20230419030000 20230420030000
    20230421030000 20230422030000 20230423030000 20230424030000 20230425030000
    20230426030000 20230427030000 20230428030000 20230429030000 20230430030000
    20230501030000-full 20230502030000 20230503030000 20230504030000 20230505030000
    20230506030000 20230507030000 20230508030000 20230509030000 20230510030000
    20230511030000 20230512030000 20230513030000 20230514030000 20230515030000
    20230516030000 20230517030000 20230518030000 20230519030000 20230520030000
    20230521030000 20230522030000 20230523030000 20230524030000 20230525030000
    20230526030000 20230527030000 20230528030000 20230529030000 20230530030000
    20230531030000-full 20230601030000 20230602030000 20230603030000 20230604030000
    20230605030000 20230606030000 20230607030000 20230608030000 20230609030000
    20230610030000 20230611030000 20230612030000 20230613030000 20230614030000
    20230615030000 20230616030000 20230617030000 20230618030000 20230619030000
    20230620030000 20230621030000 20230622030000 20230623030000 20230624030000
    20230625030000 20230626030000 20230627030000 20230628030000 20230629030000
    20230630030000-full 20230701030000 20230702030000 20230703030000 20230704030000
    20230705030000 20230706030000 20230707030000 20230708030000 20230709030000
    20230710030000 20230711030000 20230712030000 20230713030000 20230714030000
    20230715030000 20230716030000 20230717030000 20230718030000 20230719030000
    20230720030000 20230721030000 20230722030000 20230723030000 20230724030000
    20230725030000 20230726030000 20230727030000 20230728030000 20230729030000
    20230730030000-full 20230731030000 20230801030000 20230802030000 20230803030000
    20230804030000 20230805030000 20230806030000 20230807030000 20230808030000
    20230809030000 20230810030000 20230811030000 20230812030000 20230813030000
    20230814030000 20230815030000 20230816030000 20230817030000 20230818030000
    20230819030000 20230820030000 20230821030000 20230822030000 20230823030000
    20230824030000 20230825030000 20230826030000 20230827030000 20230828030000
    20230829030000-full 20230830030000 20230831030000 20230901030000 20230902030000
    20230903030000 20230904030000 20230905030000 20230906030000 20230907030000
    20230908030000 20230909030000 20230910030000 20230911030000 20230912030000
    20230913030000 20230914030000 20230915030000 20230916030000 20230917030000
    20230918030000 20230919030000 20230920030000 20230921030000 20230922030000
    20230923030000 20230924030000 20230925030000 20230926030000 20230927030000
    20230928030000-full 20230929030000 20230930030000 20231001030000 20231002030000
    20231003030000 20231004030000 20231005030000 20231006030000 20231007030000
    20231008030000 20231009030000 20231010030000 20231011030000 20231012030000
    20231013030000 20231014030000 20231015030000 20231016030000 20231017030000
    20231018030000 20231019030000 20231020030000 20231021030000 20231022030000
    20231023030000 20231024030000 20231025030000 20231026030000 20231027030000
    20231101030000 20231102030000 20231103030000 20231104030000 20231105030000
    20231106030000 20231107030000 20231108030000 20231109030000 20231110030000
    20231111030000 20231112030000 20231113030000 20231114030000 20231115030000
    20231116030000 20231117030000 20231118030000 20231119030000 20231120030000
    20231121030000 20231122030000 20231123030000 20231124030000 20231125030000
    20231126030000
";

/// What a year of the levels shape loses.
const LEVELS_DELETED: &str = "
    20230101030000-full 20230102030000 20230103030000 20230104030000 20230105030000
    20230106030000 20230107030000 20230108030000 20230109030000 20230110030000
    20230111030000 20230112030000 20230113030000 20230114030000 20230115030000
    20230116030000 20230117030000 20230118030000 20230119030000 20230120030000
    20230121030000 20230122030000 20230123030000 20230124030000 20230125030000
    20230126030000 20230127030000 20230128030000 20230129030000 20230130030000
    20230131030000-full 20230201030000 20230202030000 20230203030000 20230204030000
    20230205030000 20230206030000 20230207030000 20230208030000 20230209030000
    20230210030000 20230211030000 20230212030000 20230213030000 20230214030000
    20230215030000 20230216030000 20230217030000 20230218030000 20230219030000
    20230220030000 20230221030000 20230222030000 20230223030000 20230224030000
    20230225030000 20230226030000 20230227030000 20230228030000 20230301030000
    20230302030000-full 20230303030000 20230304030000 20230305030000 20230306030000
    20230307030000 20230308030000 20230309030000 20230310030000 20230311030000
    20230312030000 20230313030000 20230314030000 20230315030000 20230316030000
    20230317030000 20230318030000 20230319030000 20230320030000 20230321030000
    20230322030000 20230323030000 20230324030000 20230325030000 20230326030000
    20230327030000 20230328030000 20230329030000 20230330030000 20230331030000
    20230401030000-full 20230402030000 20230403030000 20230404030000 20230405030000
    20230406030000 20230407030000 20230408030000 20230409030000 20230410030000
    20230411030000 20230412030000 20230413030000 20230414030000 20230415030000
    20230416030000 20230417030000 20230418030000 20230419030000 20230420030000
    20230421030000 20230422030000 20230423030000 20230424030000 20230425030000
    20230426030000 20230427030000 20230428030000 20230429030000 20230430030000
    20230501030000-full 20230502030000 20230503030000 20230504030000 20230505030000
    20230506030000 20230507030000 20230508030000 20230509030000 20230510030000
    20230511030000 20230512030000 20230513030000 20230514030000 20230515030000
    20230516030000 20230517030000 20230518030000 20230519030000 20230520030000
    20230521030000 20230522030000 20230523030000 20230524030000 20230525030000
    20230526030000 20230527030000 20230528030000 20230529030000 20230530030000
    20230531030000-full 20230601030000 20230602030000 20230603030000 20230604030000
    20230605030000 20230606030000 20230607030000 20230608030000 20230609030000
    20230610030000 20230611030000 20230612030000 20230613030000 20230614030000
    20230615030000 20230616030000 20230617030000 20230618030000 20230619030000
    20230620030000 20230621030000 20230622030000 20230623030000 20230624030000
    20230625030000 20230626030000 20230627030000 20230628030000 20230629030000
    20230630030000-full 20230701030000 20230702030000 20230703030000 20230704030000
    20230705030000 20230706030000 20230707030000 20230708030000 20230709030000
    20230710030000 20230711030000 20230712030000 20230713030000 20230714030000
    20230715030000 20230716030000 20230717030000 20230718030000 20230719030000
    20230720030000 20230721030000 20230722030000 20230723030000 20230724030000
    20230725030000 20230726030000 20230727030000 20230728030000 20230729030000
    20230730030000-full 20230731030000 20230801030000 20230802030000 20230803030000
    20230804030000 20230805030000 20230806030000 20230807030000 20230808030000
    20230809030000 20230810030000 20230811030000 20230812030000 20230813030000
    20230814030000 20230815030000 20230816030000 20230817030000 20230818030000
    20230819030000 20230820030000 20230821030000 20230822030000 20230823030000
    20230824030000 20230825030000 20230826030000 20230827030000 20230828030000
    20230829030000-full 20230830030000 20230831030000 20230901030000 20230902030000
    20230903030000 20230904030000 20230905030000 20230906030000 20230907030000
    20230908030000 20230909030000 20230910030000 20230911030000 20230912030000
    20230913030000 20230914030000 20230915030000 20230916030000 20230917030000
    20230918030000 20230919030000 20230920030000 20230921030000 20230922030000
    20230923030000 20230924030000 20230925030000 20230926030000 20230927030000
    20230928030000-full 20230929030000 20230930030000 20231001030000 20231002030000
    20231003030000 20231004030000 20231005030000 20231006030000 20231007030000
    20231008030000 20231009030000 20231010030000 20231011030000 20231012030000
    20231013030000 20231014030000 20231015030000 20231016030000 20231017030000
    20231018030000 20231019030000 20231020030000 20231021030000 20231022030000
    20231023030000 20231024030000 20231025030000 20231026030000 20231027030000
    20231029030000 20231030030000 20231101030000 20231102030000 20231103030000
    20231104030000 20231105030000 20231106030000 20231107030000 20231108030000
    20231109030000 20231110030000 20231111030000 20231112030000 20231113030000
    20231114030000 20231115030000 20231116030000 20231117030000 20231118030000
    20231119030000 20231120030000 20231121030000 20231122030000 20231123030000
    20231124030000 20231125030000 20231126030000 20231128030000 20231129030000
    20231201030000 20231202030000 20231203030000 20231205030000 20231206030000
    20231207030000 20231208030000 20231209030000 20231212030000 20231213030000
    20231214030000 20231215030000 20231216030000 20231219030000 20231220030000
    20231221030000 20231222030000 20231223030000
";
