//! `zfs2cloud check-config`: the effective configuration, secrets masked.

use zfs2cloud_core::{Config, ConfigFile};

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
    let shown = ConfigFile {
        path: file.path.clone(),
        jobs: jobs.iter().map(|c| (*c).clone()).collect(),
    };
    out(shown.to_effective_toml()?.trim_end());
    Ok(())
}
