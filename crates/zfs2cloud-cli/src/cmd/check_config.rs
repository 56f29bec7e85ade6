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
    out(config.to_effective_toml()?.trim_end());
    Ok(())
}
