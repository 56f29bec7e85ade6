//! `zfs2cloud verify`: OK, DAMAGED or INCOMPLETE for each backup on the
//! remote, from the listing or (`--deep`) by receiving it.

use anyhow::{bail, Context as _};

use zfs2cloud_core::{
    list_backups_of, scratch_dataset, verify_deep, BackupCheck, Health, Listing, RestoreSettings,
    Step,
};

use crate::app::{out, App, UsageError};
use crate::args::StreamArgs;

/// Checks the backups (or only the one of `only`) and prints a verdict
/// each; fails unless all are OK.
pub fn run(app: &App, only: Option<&str>, deep: bool, stream: &StreamArgs) -> anyhow::Result<()> {
    if deep && app.runner.is_dry_run() {
        // A dry run receives nothing, so it could prove nothing; saying OK
        // would be a lie.
        bail!(UsageError(
            "verify --deep cannot be a dry run: it must download and receive to prove anything"
                .into()
        ));
    }
    let limit = match stream.time_limit {
        Some(_) => stream.limit(),
        None if deep => None,
        None => app.config.step_limit(&Step::Verify),
    };
    let cancel = app.runner.cancel_token();
    let (checks, timed_out) = cancel.run_limited(limit, || {
        if deep {
            deep_checks(app, only, stream.prefetch)
        } else {
            app.backup()
                .verify_listing(only)
                .context("cannot list the remote")
        }
    });
    if let Some(limit) = timed_out {
        bail!(
            "verify{} stopped: its time limit of {}s ran out",
            if deep { " --deep" } else { "" },
            limit.as_secs()
        );
    }
    let checks = checks?;
    if checks.is_empty() {
        bail!("no backup to verify on {}", app.config.remote);
    }
    let bad = checks.iter().filter(|c| c.health != Health::Ok).count();
    for check in &checks {
        out(&verdict_line(check));
    }
    if bad > 0 {
        bail!("{bad} of {} backup(s) are not OK", checks.len());
    }
    Ok(())
}

fn verdict_line(check: &BackupCheck) -> String {
    match &check.health {
        Health::Ok => format!("OK          {}", check.backup),
        Health::Damaged(why) => format!("DAMAGED     {}: {why}", check.backup),
        Health::Incomplete(why) => format!("INCOMPLETE  {}: {why}", check.backup),
    }
}

/// Receives each backup into a scratch dataset in the dataset's pool.
fn deep_checks(
    app: &App,
    only: Option<&str>,
    prefetch_bytes: usize,
) -> anyhow::Result<Vec<BackupCheck>> {
    // None with `encryption = "none"`: the backups need no gpg (one that
    // does is reported as a problem of the run, naming it).
    let gpg = app.stages.gpg.as_ref();
    let store = &app.stages.rclone;
    let backups = list_backups_of(
        store,
        &app.config.remote,
        &app.config.dataset,
        Listing::Sizes,
    )
    .context("cannot list the remote")?;
    let pool = app
        .config
        .dataset
        .as_str()
        .split('/')
        .next()
        .unwrap_or_default();
    let scratch = scratch_dataset(pool)
        .ok_or_else(|| anyhow::anyhow!("no valid scratch dataset name in pool {pool}"))?;
    let settings = RestoreSettings {
        target: scratch,
        force: false,
        mount: false,
        zfs: app.config.tools.zfs.clone(),
        remote: app.config.remote.clone(),
        cancel: app.runner.cancel_token().clone(),
        prefetch_bytes,
    };
    let only: Option<Vec<String>> = only.map(|o| vec![o.to_owned()]);
    Ok(verify_deep(
        store,
        gpg,
        &app.runner,
        &backups,
        only.as_deref(),
        &settings,
    )?)
}
