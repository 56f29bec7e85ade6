//! `zfs2cloud check-config`: the effective configuration, secrets masked.

use anyhow::Context as _;
use zfs2cloud_core::{Config, ConfigFile, Encryption, RecipientEncryptor, Runner, ZfsCli};

use crate::app::out;

/// Prints the effective configuration of the file (loaded, so valid): of
/// the jobs asked for, or of all.
pub fn run(file: &ConfigFile, jobs: &[&Config]) -> anyhow::Result<()> {
    out(&format!(
        "# {} is valid. Effective configuration:",
        file.path.display()
    ));
    for config in jobs {
        if let Some(p) = &config.passphrase_file {
            let job = config
                .job
                .as_deref()
                .map(|j| format!(" (job {j})"))
                .unwrap_or_default();
            out(&format!(
                "# passphrase{job}: ******** (first line of {})",
                p.display()
            ));
        }
    }
    for config in jobs {
        check_recipients(config)?;
    }
    for config in jobs {
        warn_unsupported_send_flags(config);
    }
    let shown = ConfigFile {
        path: file.path.clone(),
        jobs: jobs.iter().map(|c| (*c).clone()).collect(),
    };
    out(shown.to_effective_toml()?.trim_end());
    Ok(())
}

/// With `encryption = "gpg-recipients"`: refuses keys that cannot encrypt
/// (gpg reads them as the export will), names the fingerprints backups will
/// be encrypted to, and warns about keys that expire within 30 days.
fn check_recipients(config: &Config) -> anyhow::Result<()> {
    if config.encryption != Encryption::GpgRecipients {
        return Ok(());
    }
    let job = config
        .job
        .as_deref()
        .map(|j| format!(" (job {j})"))
        .unwrap_or_default();
    let keys = RecipientEncryptor::from_config(config, &Runner::new())
        .check_keys(zfs2cloud_core::now()?)
        .with_context(|| format!("{}{job}: recipient_files/recipients", config.path.display()))?;
    out(&format!(
        "# encrypted to{job}: {} (only public keys on this host; restore needs a secret key)",
        keys.fingerprints.join(", ")
    ));
    for (fpr, days) in &keys.expiring {
        log::warn!(
            "the recipient key {fpr}{job} expires in {days} day(s): backups fail once it has; \
             extend it (gpg --quick-set-expire) and export the public key again, or replace it"
        );
    }
    Ok(())
}

/// Warns about each configured send flag the installed zfs does not list
/// in its `zfs send` usage. Only a warning: the file may be checked on
/// another machine than the one that runs the backups.
fn warn_unsupported_send_flags(config: &Config) {
    let flags = &config.send_flags;
    if flags.is_empty() {
        return;
    }
    let zfs = config.tools.zfs.display();
    let cli = ZfsCli::new(Runner::new(), config.tools.zfs.clone());
    match cli.send_usage() {
        Ok(usage) => {
            for flag in usage.lacking(flags) {
                log::warn!(
                    "send_flags: {flag} (zfs send -{}) is not supported by the zfs here ({zfs}): \
                     backups with this config fail on this machine",
                    flag.letter()
                );
            }
        }
        Err(e) => log::warn!("send_flags: cannot tell which send flags {zfs} supports: {e}"),
    }
}
