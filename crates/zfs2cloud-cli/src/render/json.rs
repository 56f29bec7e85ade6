//! The `--json` documents of `verify`, `restore` and the `prune-*`
//! commands (`backup`'s is core's `RunReport`; `status`'s core's
//! `StatusReport`). Their schemas are in `docs/*.schema.json`.

use serde_json::{json, Value};

use zfs2cloud_core::{
    BackupCheck, ExportDecision, RemoteAction, RemoteBackup, RemotePruneReport, SnapshotDecision,
    Verdict,
};

/// The format of every document here; it changes only incompatibly.
pub const JSON_FORMAT: u32 = 1;

/// One item of a prune plan.
fn item(name: &str, remove: bool, reasons: Vec<String>, bytes: Option<u64>) -> Value {
    json!({
        "name": name,
        "action": if remove { "remove" } else { "keep" },
        "reasons": reasons,
        "bytes": bytes,
    })
}

fn verdict_item(name: &str, verdict: &Verdict, reasons: Vec<String>) -> Value {
    match verdict {
        Verdict::Remove => item(name, true, reasons, None),
        Verdict::Keep(why) if reasons.is_empty() => item(name, false, vec![why.clone()], None),
        Verdict::Keep(_) => item(name, false, reasons, None),
    }
}

/// A prune command's plan, and whether it was carried out (`acted`).
fn prune(command: &str, dataset: &str, acted: bool, items: Vec<Value>, extra: Value) -> Value {
    let mut doc = json!({
        "format": JSON_FORMAT,
        "command": command,
        "dataset": dataset,
        "acted": acted,
        "items": items,
    });
    if let (Some(doc), Value::Object(extra)) = (doc.as_object_mut(), extra) {
        doc.extend(extra);
    }
    doc
}

/// `prune-intermediates --json`.
pub fn prune_intermediates(dataset: &str, acted: bool, decisions: &[ExportDecision]) -> Value {
    let items = decisions
        .iter()
        .map(|d| verdict_item(&d.dir.display().to_string(), &d.verdict, Vec::new()))
        .collect();
    prune("prune-intermediates", dataset, acted, items, json!({}))
}

/// `prune-snapshots --json`.
pub fn prune_snapshots(dataset: &str, acted: bool, decisions: &[SnapshotDecision]) -> Value {
    let items = decisions
        .iter()
        .map(|d| {
            let reasons = d.reasons.iter().map(ToString::to_string).collect();
            verdict_item(&d.name.to_string(), &d.verdict, reasons)
        })
        .collect();
    prune("prune-snapshots", dataset, acted, items, json!({}))
}

/// `prune-remote --json`.
pub fn prune_remote(dataset: &str, acted: bool, report: &RemotePruneReport) -> Value {
    let plan = &report.plan;
    let items = plan
        .decisions
        .iter()
        .map(|d| {
            let reasons = d.reasons.iter().map(ToString::to_string).collect();
            item(
                &d.dir_name,
                d.action == RemoteAction::Delete,
                reasons,
                Some(d.bytes),
            )
        })
        .collect();
    let left_alone: Vec<Value> = report
        .left_alone
        .iter()
        .map(|l| json!({ "name": l.name, "what": l.what }))
        .collect();
    let extra = json!({
        "deletion_order": plan.deletion_order,
        "bytes_freed": plan.bytes_freed(),
        "bytes_kept": plan.bytes_kept(),
        "left_alone": left_alone,
    });
    prune("prune-remote", dataset, acted, items, extra)
}

/// `verify --json`: each backup's verdict.
pub fn verify(dataset: &str, remote: &str, deep: bool, checks: &[BackupCheck]) -> Value {
    json!({
        "format": JSON_FORMAT,
        "dataset": dataset,
        "remote": remote,
        "deep": deep,
        "ok": checks.iter().all(|c| c.health == zfs2cloud_core::Health::Ok),
        "backups": checks,
    })
}

/// One dataset of `restore --json`: the chain from `remote` into
/// `target`, and whether it was received (not in a dry run).
pub fn restore_entry(
    dataset: Option<&str>,
    remote: &str,
    target: &str,
    chain: &[&RemoteBackup],
    raw: bool,
    restored: bool,
) -> Value {
    let backups: Vec<Value> = chain
        .iter()
        .map(|b| {
            json!({
                "dir": b.dir_name,
                "snapshot": b.snapshot,
                "kind": b.kind.as_str(),
            })
        })
        .collect();
    json!({
        "dataset": dataset,
        "remote": remote,
        "target": target,
        "backups": backups,
        "raw": raw,
        "restored": restored,
    })
}

/// `restore --json`: every dataset restored (one, or a tree's members).
pub fn restore(dry_run: bool, at: &str, datasets: Vec<Value>) -> Value {
    json!({
        "format": JSON_FORMAT,
        "dry_run": dry_run,
        "at": at,
        "datasets": datasets,
    })
}
