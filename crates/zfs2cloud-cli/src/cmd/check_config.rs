//! `zfs2cloud check-config`: the effective configuration, secrets masked.

use crate::app::{out, App};

/// Prints the effective configuration (the config loaded, so valid).
pub fn run(app: &App) -> anyhow::Result<()> {
    let config = &app.config;
    out(&format!(
        "# {} is valid. Effective configuration:",
        config.path.display()
    ));
    if let Some(p) = &config.passphrase_file {
        out(&format!(
            "# passphrase: ******** (first line of {})",
            p.display()
        ));
    }
    warn_unsupported_send_flags(app);
    out(config.to_effective_toml()?.trim_end());
    Ok(())
}

/// Warns about each configured send flag the installed zfs does not list
/// in its `zfs send` usage. Only a warning: the file may be checked on
/// another machine than the one that runs the backups.
fn warn_unsupported_send_flags(app: &App) {
    let flags = &app.config.send_flags;
    if flags.is_empty() {
        return;
    }
    let zfs = app.config.tools.zfs.display();
    match app.stages.zfs.send_usage() {
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
