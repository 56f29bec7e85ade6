//! `zfs2cloud verify`: OK, DAMAGED or INCOMPLETE for each backup on the
//! remote, from the listing or (`--deep`) by receiving it.

use std::path::Path;

use anyhow::{bail, Context as _};

use zfs2cloud_core::{
    list_backups_of, scratch_dataset, verify_deep, BackupCheck, Encryption, GpgEncryptor, Health,
    Listing, Passphrase, RestoreSettings, Step,
};

use crate::app::{out, App, UsageError};
use crate::args::StreamArgs;
use crate::render::json;

/// What `verify --deep` decrypts with, besides the config's passphrase.
#[derive(Debug, Clone, Copy)]
pub struct DeepSecrets<'a> {
    /// `--passphrase-file`: instead of the config's.
    pub passphrase_file: Option<&'a Path>,
    /// `--secret-key-file`: for backups encrypted to public keys.
    pub secret_key_file: Option<&'a Path>,
}

/// Checks the backups (or only the one of `only`) and prints a verdict
/// each; fails unless all are OK. `deep`: receive each backup, decrypting
/// with these secrets.
pub fn run(
    app: &App,
    only: Option<&str>,
    deep: Option<DeepSecrets<'_>>,
    stream: &StreamArgs,
    as_json: bool,
) -> anyhow::Result<()> {
    if deep.is_some() && app.runner.is_dry_run() {
        // A dry run receives nothing, so it could prove nothing; saying OK
        // would be a lie.
        bail!(UsageError(
            "verify --deep cannot be a dry run: it must download and receive to prove anything"
                .into()
        ));
    }
    let limit = match stream.time_limit {
        Some(_) => stream.limit(),
        None if deep.is_some() => None,
        None => app.config.step_limit(&Step::Verify),
    };
    let cancel = app.runner.cancel_token();
    let (checks, timed_out) = cancel.run_limited(limit, || {
        if let Some(secrets) = deep {
            deep_checks(app, only, secrets, stream.prefetch)
        } else {
            app.backup()
                .verify_listing(only)
                .context("cannot list the remote")
        }
    });
    if let Some(limit) = timed_out {
        bail!(
            "verify{} stopped: its time limit of {}s ran out",
            if deep.is_some() { " --deep" } else { "" },
            limit.as_secs()
        );
    }
    let checks = checks?;
    if checks.is_empty() {
        bail!("no backup to verify on {}", app.config.remote);
    }
    let bad = checks.iter().filter(|c| c.health != Health::Ok).count();
    if as_json {
        let doc = json::verify(
            app.config.dataset.as_str(),
            &app.config.remote,
            deep.is_some(),
            &checks,
        );
        out(&serde_json::to_string_pretty(&doc)?);
    } else {
        for check in &checks {
            out(&verdict_line(check));
        }
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

/// gpg for `verify --deep`: with the passphrase (`--passphrase-file`, else
/// the config's) and the secret keys (`--secret-key-file`, else the user's
/// keyring, for a config that encrypts to public keys). `None` when there
/// is nothing to decrypt with (`encryption = "none"`): a backup that needs
/// gpg is then reported as a problem of the run, naming it.
fn deep_decryptor(app: &App, secrets: DeepSecrets<'_>) -> anyhow::Result<Option<GpgEncryptor>> {
    let config = &app.config;
    let passphrase = secrets
        .passphrase_file
        .or(config.passphrase_file.as_deref())
        .map(Passphrase::from_file)
        .transpose()?;
    if passphrase.is_none()
        && secrets.secret_key_file.is_none()
        && config.encryption != Encryption::GpgRecipients
    {
        return Ok(None);
    }
    crate::cmd::restore::decryptor(
        &app.runner,
        &config.tools.gpg,
        passphrase,
        secrets.secret_key_file,
    )
    .map(Some)
}

/// Receives each backup into a scratch dataset in the dataset's pool.
fn deep_checks(
    app: &App,
    only: Option<&str>,
    secrets: DeepSecrets<'_>,
    prefetch_bytes: usize,
) -> anyhow::Result<Vec<BackupCheck>> {
    let gpg = deep_decryptor(app, secrets)?;
    let gpg = gpg.as_ref();
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
        crate::progress::shown(),
    )?)
}
