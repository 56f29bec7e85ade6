//! `zfs2cloud check-config`: the effective configuration, secrets masked.

use zfs2cloud_core::{Config, ConfigFile, Runner, ZfsCli};

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
        warn_unsupported_send_flags(config);
    }
    let shown = ConfigFile {
        path: file.path.clone(),
        jobs: jobs.iter().map(|c| (*c).clone()).collect(),
    };
    out(shown.to_effective_toml()?.trim_end());
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
