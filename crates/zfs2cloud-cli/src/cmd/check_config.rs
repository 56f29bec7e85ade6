//! `zfs2cloud check-config`: the effective configuration, secrets masked,
//! warnings about keys the mode ignores, and with `--online` a checklist
//! of what the run needs from the machine and the remote.

use anyhow::{bail, Context as _};
use zfs2cloud_core::{
    check_offline, check_online, mode_warnings, CheckResult, CheckStatus, Config, ConfigFile,
    Encryption, Mode, RecipientEncryptor, Runner, ZfsCli,
};

use crate::app::out;

/// Prints the effective configuration of the file (loaded, so valid): of
/// the jobs asked for, or of all; with `online`, runs the checks and fails
/// if any does.
pub fn run(file: &ConfigFile, jobs: &[&Config], online: bool) -> anyhow::Result<()> {
    out(&format!(
        "# {} is valid. Effective configuration:",
        file.path.display()
    ));
    for config in jobs.iter().filter(|c| uses_passphrase(c)) {
        if let Some(p) = &config.passphrase_file {
            out(&format!(
                "# passphrase{}: ******** (first line of {})",
                job_suffix(config),
                p.display()
            ));
        }
    }
    warn_ignored_keys(file, jobs);
    for config in jobs {
        for check in check_offline(config) {
            log::warn!("{}{}: {}", check.check, job_suffix(config), check.message);
        }
        if config.mode == Mode::Intermediate {
            check_recipients(config)?;
            if !online {
                warn_unsupported_send_flags(config);
            }
        }
    }
    let shown = ConfigFile {
        path: file.path.clone(),
        jobs: jobs.iter().map(|c| (*c).clone()).collect(),
    };
    out(shown.to_effective_toml()?.trim_end());
    if online {
        run_online(jobs)?;
    }
    Ok(())
}

fn job_suffix(config: &Config) -> String {
    config
        .job
        .as_deref()
        .map(|j| format!(" (job {j})"))
        .unwrap_or_default()
}

/// Only intermediate mode with gpg reads the passphrase file.
fn uses_passphrase(config: &Config) -> bool {
    config.mode == Mode::Intermediate && config.encryption == Encryption::Gpg
}

/// Warns about each key a job sets that its mode never reads (a
/// `passphrase_file` in file mode looks used and is not).
fn warn_ignored_keys(file: &ConfigFile, jobs: &[&Config]) {
    let Ok(text) = std::fs::read_to_string(&file.path) else {
        return;
    };
    let selected = |key: &str| {
        jobs.iter().any(|j| match &j.job {
            Some(name) => key.starts_with(&format!("job.{name}.")),
            None => true,
        })
    };
    for warning in mode_warnings(&text).iter().filter(|w| selected(&w.key)) {
        log::warn!("{}", warning.render(&file.path));
    }
}

/// The checklist of every job; an error if any check failed.
fn run_online(jobs: &[&Config]) -> anyhow::Result<()> {
    let runner = Runner::new();
    let now = zfs2cloud_core::now()?;
    let mut failed = 0;
    for config in jobs {
        out(&format!("# online checks{}:", job_suffix(config)));
        let results = check_online(config, &runner, now);
        failed += results
            .iter()
            .filter(|r| r.status == CheckStatus::Fail)
            .count();
        for result in &results {
            out(&checklist_line(result));
        }
    }
    if failed > 0 {
        bail!("check-config --online: {failed} check(s) failed (the FAIL lines above)");
    }
    Ok(())
}

/// `ok    rclone: /usr/bin/rclone (rclone v1.60.1)`.
fn checklist_line(result: &CheckResult) -> String {
    let status = match result.status {
        CheckStatus::Ok => "ok",
        CheckStatus::Warn => "warn",
        CheckStatus::Fail => "FAIL",
    };
    format!("{status:<5} {}: {}", result.check, result.message)
}

/// With `encryption = "gpg-recipients"`: refuses keys that cannot encrypt
/// (gpg reads them as the export will), names the fingerprints backups will
/// be encrypted to, and warns about keys that expire within 30 days.
fn check_recipients(config: &Config) -> anyhow::Result<()> {
    if config.encryption != Encryption::GpgRecipients {
        return Ok(());
    }
    let job = job_suffix(config);
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
/// another machine than the one that runs the backups (`--online` makes it
/// a failure).
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
