//! The retention benchmark's markdown: what was run, one row per
//! strategy with its ratios to `since_last_full`, the uploads by level,
//! and the target.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::simulate::Outcome;
use super::{Changes, Params, Strategy};
use crate::human_bytes;
use crate::report::header;
use crate::setup::World;

/// The target's setting (issue 14): 1 % a day, 90 nights, levels 30,7,1.
fn is_target_setting(p: &Params) -> bool {
    (p.share - 0.01).abs() < 1e-9 && p.days == 90 && p.levels == [30, 7, 1]
}

/// `0.48`, or empty without a since_last_full run to compare with.
fn ratio(v: u64, base: Option<u64>) -> String {
    base.filter(|&b| b > 0)
        .map_or_else(String::new, |b| format!("{:.2}", v as f64 / b as f64))
}

fn minutes(d: f64) -> String {
    format!("{:.1} min", d / 60.0)
}

/// Fulls + incrementals: `3 + 87`.
fn backups(o: &Outcome) -> String {
    let fulls = o.nights.iter().filter(|n| n.backup.full).count();
    let incs = o.nights.len() - fulls;
    format!("{fulls} + {incs}")
}

/// What was run, in one paragraph.
fn setting(p: &Params, prune: bool) -> String {
    let levels: Vec<String> = p.levels.iter().map(u32::to_string).collect();
    let full_every = p.levels.first().copied().unwrap_or(30);
    format!(
        "Dataset: {} of random data in {} files of {}; each day {} % of the files ({:.2} on \
         average) rewritten whole with new random data, {}, the same files for every \
         strategy. {} nightly `zfs2cloud backup` runs, `ZFS2CLOUD_NOW` = \
         2025-01-01T03:00:00Z + n days, each strategy on a fresh dataset and remote. Fulls \
         every {full_every} days for all (`full_every_x_days = {full_every}`; `levels = [{}]`). \
         {}; split_size {}; a local-directory rclone remote. Remote retention, the same for all: \
         {}.",
        human_bytes(p.size),
        p.files,
        human_bytes(p.file_bytes),
        p.share * 100.0,
        p.share * p.files as f64,
        match p.changes {
            Changes::Fresh => "files not rewritten before, in turn (`--changes fresh`)",
            Changes::Random => "picked at random, so hot files change again (`--changes random`)",
        },
        p.days,
        levels.join(", "),
        if p.encrypt {
            "gpg encryption (AES256, passphrase file)"
        } else {
            "no encryption"
        },
        p.split,
        if prune {
            format!(
                "`[retention.remote]` {}, applied once after the last night with \
                 `zfs2cloud prune-remote -y`",
                p.keep.describe()
            )
        } else {
            "**not applied**: this zfs2cloud has no `prune-remote`, so the stored bytes are \
             the whole remote and the chains are those of every backup"
                .into()
        },
    )
}

/// The main table: one row per strategy.
fn main_table(out: &mut String, p: &Params, outcomes: &[Outcome], prune: bool) {
    let base = outcomes
        .iter()
        .find(|o| o.strategy == Strategy::SinceLastFull);
    let _ = writeln!(
        out,
        "| strategy | backups (full + incr.) | uploaded, {} nights | vs since_last_full | \
         stored before pruning | stored after `prune-remote -y` | vs since_last_full | \
         backups kept | longest restore chain{} | restore `--at latest`: chain, time | \
         restore identical | backup wall time, {} nights |",
        p.days,
        if prune { " (kept)" } else { " (all)" },
        p.days
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let (after, after_ratio, kept) = match o.pruned {
            Some(pr) => (
                human_bytes(pr.bytes),
                ratio(pr.bytes, base.map(Outcome::stored_after)),
                format!("{} (pruned in {:.1} s)", pr.backups, pr.secs),
            ),
            None => (
                "not measured".into(),
                String::new(),
                o.nights.len().to_string(),
            ),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {after} | {after_ratio} | {kept} | {} | {}, {:.1} s | \
             yes, {} files | {} |",
            o.strategy.name(),
            backups(o),
            human_bytes(o.uploaded()),
            ratio(o.uploaded(), base.map(Outcome::uploaded)),
            human_bytes(o.stored_before),
            o.longest_chain,
            o.latest_chain,
            o.restore_secs,
            o.restored_files,
            minutes(o.backup_secs()),
        );
    }
}

/// The row of the uploads table a night's backup counts in: fulls, then
/// each level of the levels strategy, or all incrementals of the others
/// in one row (chain's levels run up to the full period).
fn upload_class(o: &Outcome, b: &super::remote::Backup) -> String {
    match (b.full, o.strategy, b.level) {
        (true, _, _) => "full (level 0)".into(),
        (false, Strategy::Levels, Some(l)) => format!("level {l}"),
        _ => "incremental".into(),
    }
}

/// Uploads by kind and level: how many backups, their bytes, the largest.
fn level_table(out: &mut String, outcomes: &[Outcome]) {
    let _ = writeln!(
        out,
        "| strategy | backups | count | uploaded | largest backup |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for o in outcomes {
        let mut by: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
        for n in &o.nights {
            let e = by.entry(upload_class(o, &n.backup)).or_default();
            e.0 += 1;
            e.1 += n.backup.bytes;
            e.2 = e.2.max(n.backup.bytes);
        }
        for (class, (count, bytes, largest)) in by {
            let _ = writeln!(
                out,
                "| `{}` | {class} | {count} | {} | {} |",
                o.strategy.name(),
                human_bytes(bytes),
                human_bytes(largest)
            );
        }
    }
}

/// The target rows, where both strategies ran.
fn targets(out: &mut String, p: &Params, outcomes: &[Outcome]) {
    let find = |s| outcomes.iter().find(|o| o.strategy == s);
    let (Some(slf), Some(lv)) = (find(Strategy::SinceLastFull), find(Strategy::Levels)) else {
        let _ = writeln!(
            out,
            "Target not checked: it compares `levels` with `since_last_full`, and not both ran.\n"
        );
        return;
    };
    let checked = is_target_setting(p);
    let result = |met: bool| {
        if !checked {
            "reference (the target is set for 1 % a day, 90 nights, levels 30,7,1)"
        } else if met {
            "MET"
        } else {
            "**MISSED**"
        }
    };
    let r = lv.uploaded() as f64 / slf.uploaded() as f64;
    let bound = p.levels.len();
    let _ = writeln!(out, "| target (issue 14) | measured | result |");
    let _ = writeln!(out, "|---|---|---|");
    let _ = writeln!(
        out,
        "| `levels` uploads at most half the bytes of `since_last_full` | {r:.2} ({} / {}) | {} |",
        human_bytes(lv.uploaded()),
        human_bytes(slf.uploaded()),
        result(r <= 0.5)
    );
    let _ = writeln!(
        out,
        "| `levels`: a restore chain of at most {bound} | longest {}, latest {} | {} |\n",
        lv.longest_chain,
        lv.latest_chain,
        result(lv.longest_chain <= bound)
    );
}

/// The whole report.
pub fn render(
    world: &World,
    p: &Params,
    outcomes: &[Outcome],
    prune: bool,
    command: &str,
    took: Duration,
) -> String {
    let mut out = header(&world.bin, command);
    let _ = writeln!(out, "{}\n", setting(p, prune));
    main_table(&mut out, p, outcomes, prune);
    let _ = writeln!(out);
    targets(&mut out, p, outcomes);
    level_table(&mut out, outcomes);
    let backups: f64 = outcomes.iter().map(Outcome::backup_secs).sum();
    let _ = writeln!(
        out,
        "\nThe whole run took {} ({} of it in the {} nightly backups). \"Uploaded\" is the sum \
         of each night's new backup directory on the remote (chunks, `SHA256SUMS`, \
         `manifest.json`); a restore chain counts the backups a restore replays, the full \
         included, following `base` in each `manifest.json`.",
        minutes(took.as_secs_f64()),
        minutes(backups),
        outcomes.iter().map(|o| o.nights.len()).sum::<usize>()
    );
    out
}
