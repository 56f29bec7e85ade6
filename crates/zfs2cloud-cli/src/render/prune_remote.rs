//! `prune-remote`'s plan: each backup directory kept or deleted with its
//! size and reasons, what is left alone, and the total.

use std::fmt::Write as _;

use zfs2cloud_core::{RemoteAction, RemotePruneReport};

use super::summary::human_bytes;

/// The plan for `remote`, as done (`acted`) or as it would be done.
pub fn render_remote_prune(report: &RemotePruneReport, remote: &str, acted: bool) -> String {
    let plan = &report.plan;
    let mut out = format!("backups in {remote}:\n");
    let dir_w = plan
        .decisions
        .iter()
        .map(|d| d.dir_name.len())
        .max()
        .unwrap_or(0);
    for d in &plan.decisions {
        let action = match (d.action, acted) {
            (RemoteAction::Keep, _) => "keep",
            (RemoteAction::Delete, true) => "deleted",
            (RemoteAction::Delete, false) => "delete",
        };
        let reasons: Vec<String> = d.reasons.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "  {action:<7}  {:<dir_w$}  {:>10}  {}",
            d.dir_name,
            human_bytes(d.bytes),
            reasons.join("; ")
        );
    }
    for l in &report.left_alone {
        let _ = writeln!(out, "  left alone  {}  ({})", l.name, l.what);
    }
    let deleted = plan.deletion_order.len();
    let kept = plan.decisions.len() - deleted;
    let freed = plan.bytes_freed();
    let verb = if acted { "freed" } else { "would free" };
    let _ = writeln!(
        out,
        "{verb} {} ({freed} bytes) in {deleted} backup(s); {kept} kept ({})",
        human_bytes(freed),
        human_bytes(plan.bytes_kept())
    );
    out
}

#[cfg(test)]
mod tests {
    use zfs2cloud_core::{LeftAlone, RemoteDecision, RemotePrunePlan, RemoteReason};

    use super::*;

    #[test]
    fn each_backup_gets_a_line_and_the_total_comes_last() {
        let decision = |dir: &str, action, reasons, bytes| RemoteDecision {
            dir_name: dir.into(),
            action,
            reasons,
            bytes,
        };
        let report = RemotePruneReport {
            plan: RemotePrunePlan {
                decisions: vec![
                    decision(
                        "20240101000000-full",
                        RemoteAction::Keep,
                        vec![RemoteReason::BaseOf(vec!["20240103000000".into()])],
                        3 << 20,
                    ),
                    decision(
                        "20240102000000",
                        RemoteAction::Delete,
                        vec![RemoteReason::Unneeded],
                        1536,
                    ),
                    decision(
                        "20240103000000",
                        RemoteAction::Keep,
                        vec![RemoteReason::Newest],
                        10,
                    ),
                ],
                deletion_order: vec!["20240102000000".into()],
            },
            left_alone: vec![LeftAlone {
                name: "notes.txt".into(),
                what: "a file, not a backup".into(),
            }],
            deleted: Vec::new(),
        };
        assert_eq!(
            render_remote_prune(&report, "r:data", false),
            "backups in r:data:
  keep     20240101000000-full     3.0 MiB  base of 20240103000000
  delete   20240102000000          1.5 KiB  no keep rule applies
  keep     20240103000000             10 B  the newest complete backup
  left alone  notes.txt  (a file, not a backup)
would free 1.5 KiB (1536 bytes) in 1 backup(s); 2 kept (3.0 MiB)
"
        );
        assert!(render_remote_prune(&report, "r:data", true).contains("  deleted  20240102000000"));
    }
}
