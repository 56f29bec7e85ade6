//! `zfs2cloud prune-intermediates`, `prune-snapshots` and
//! `prune-remote`: the plan, and with `-y` its execution.

use anyhow::bail;
use zfs2cloud_core::{SnapshotDecision, Step, Verdict};

use crate::app::{out, App, UsageError};
use crate::render::json;
use crate::render::prune_remote::render_remote_prune;

/// Prints a `--json` document.
fn print(doc: &serde_json::Value) -> anyhow::Result<()> {
    out(&serde_json::to_string_pretty(doc)?);
    Ok(())
}

/// Removes local exports retention lets go (only with `yes`).
pub fn intermediates(app: &App, yes: bool, as_json: bool) -> anyhow::Result<()> {
    app.require_intermediate("prune-intermediates")?;
    let act = yes && !app.runner.is_dry_run();
    let _lock = if act { app.lock()? } else { None };
    let decisions = app.backup().run_alone(&Step::PruneIntermediates, |b| {
        Ok(b.prune_intermediates(act)?)
    })?;
    if as_json {
        let dataset = app.config.dataset.as_str();
        return print(&json::prune_intermediates(dataset, act, &decisions));
    }
    for d in &decisions {
        show(&d.dir.display().to_string(), &d.verdict, act);
    }
    if !act {
        out("(dry run: nothing was deleted; pass -y to delete)");
    }
    Ok(())
}

/// Destroys zfs2cloud's snapshots retention lets go (only with `yes`).
pub fn snapshots(app: &App, yes: bool, as_json: bool) -> anyhow::Result<()> {
    let act = yes && !app.runner.is_dry_run();
    let _lock = if act { app.lock()? } else { None };
    let decisions = app
        .backup()
        .run_alone(&Step::PruneSnapshots, |b| Ok(b.prune_snapshots(act)?))?;
    if as_json {
        let dataset = app.config.dataset.as_str();
        return print(&json::prune_snapshots(dataset, act, &decisions));
    }
    for d in &decisions {
        out(&snapshot_line(d, act));
    }
    if !act {
        out("(dry run: nothing was destroyed; pass -y to destroy)");
    }
    Ok(())
}

/// One snapshot of the plan, with its reasons whatever the verdict: a
/// destroy without its reason would leave the reader to work out the rule.
fn snapshot_line(d: &SnapshotDecision, act: bool) -> String {
    let action = match d.verdict {
        Verdict::Keep(_) => "keep",
        Verdict::Remove if act => "destroyed",
        Verdict::Remove => "would destroy",
    };
    format!("{action:<13}  {}  ({})", d.name, d.why())
}

/// Deletes the backups on the remote that `[retention.remote]` lets go
/// (only with `yes`); prints the plan either way.
pub fn remote(app: &App, yes: bool, as_json: bool) -> anyhow::Result<()> {
    app.require_intermediate("prune-remote")?;
    require_remote_retention(app)?;
    let act = yes && !app.runner.is_dry_run();
    let _lock = if act { app.lock()? } else { None };
    let report = app
        .backup()
        .run_alone(&Step::PruneRemote, |b| b.prune_remote(act))?;
    if as_json {
        return print(&json::prune_remote(
            app.config.dataset.as_str(),
            act,
            &report,
        ));
    }
    out(render_remote_prune(&report, &app.config.remote, act).trim_end());
    if !act {
        out("(dry run: nothing was deleted; pass -y to delete)");
    }
    Ok(())
}

/// Refuses `prune-remote` without `[retention.remote]`: pruning the remote
/// is opt-in.
pub fn require_remote_retention(app: &App) -> anyhow::Result<()> {
    if app.config.retention.remote.is_none() {
        bail!(UsageError(format!(
            "{}: prune-remote: remote pruning is off for {}: there is no [retention.remote] \
             table (pruning the remote is opt-in; see docs/retention.md)",
            app.config.path.display(),
            app.config.name()
        )));
    }
    Ok(())
}

fn show(what: &str, verdict: &Verdict, act: bool) {
    match verdict {
        Verdict::Remove if act => out(&format!("removed  {what}")),
        Verdict::Remove => out(&format!("would remove  {what}")),
        Verdict::Keep(why) => out(&format!("keep     {what}  ({why})")),
    }
}
