//! `verify`: prove the backups on the remote.
//!
//! The default check reads only the remote listing: every chunk must be
//! there with the manifest's size, and its SHA-256 where the backend reports
//! one (local, sftp; not S3). `--deep` downloads everything, checks every
//! chunk's SHA-256 as it streams, decrypts, and receives the stream into a
//! temporary dataset, which proves it is a whole, valid ZFS send stream;
//! the dataset is destroyed afterwards.

use serde::Serialize;

use crate::model::{DatasetName, RemoteBackup, SnapshotName};
use crate::ops::restore::{restore_chain, RestoreError, RestoreSettings};
use crate::policy::{chains, check_listing, Health};
use crate::process::Runner;
use crate::stages::{GpgEncryptor, Uploader, ZfsCli};

/// One backup's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupCheck {
    /// The backup directory on the remote.
    pub backup: String,
    /// OK, DAMAGED or INCOMPLETE, with the reason.
    #[serde(flatten)]
    pub health: Health,
}

/// Checks the listing of each backup (or only those named in `only`,
/// matched by snapshot or directory name).
#[must_use]
pub fn verify_listing(backups: &[RemoteBackup], only: Option<&[String]>) -> Vec<BackupCheck> {
    backups
        .iter()
        .filter(|b| only.is_none_or(|o| o.iter().any(|n| *n == b.snapshot || *n == b.dir_name)))
        .map(|b| BackupCheck {
            backup: b.dir_name.clone(),
            health: check_listing(b),
        })
        .collect()
}

/// Errors that stop `verify --deep` as a whole, rather than being a verdict
/// on one backup.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A local `zfs` command (scratch dataset, rollback) failed.
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    /// A problem of this run, not of the backups: interrupted, a wrong
    /// passphrase, a local ZFS failure.
    #[error("verify --deep stopped")]
    Aborted(#[source] RestoreError),
}

/// Whether a restore error says something about this run rather than the
/// backup: those must not mark good backups DAMAGED.
fn is_run_problem(e: &RestoreError) -> bool {
    match e {
        RestoreError::Interrupted
        | RestoreError::Mount { .. }
        | RestoreError::NoPassphrase { .. } => true,
        RestoreError::Decrypt { .. } => {
            let text = crate::util::error_chain(e).to_ascii_lowercase();
            text.contains("session key") || text.contains("passphrase")
        }
        // A receive error not tied to a backup is a local `zfs` failure.
        RestoreError::Receive { backup, .. } => backup.is_empty(),
        _ => false,
    }
}

fn verdict_from(
    backup: &RemoteBackup,
    result: Result<(), RestoreError>,
) -> Result<BackupCheck, RestoreError> {
    let health = match result {
        Ok(()) => Health::Ok,
        Err(e) if is_run_problem(&e) => return Err(e),
        Err(e @ RestoreError::DamagedChunk { .. }) => Health::Damaged(e.to_string()),
        Err(e @ (RestoreError::Decrypt { .. } | RestoreError::Receive { .. })) => {
            Health::Damaged(crate::util::error_chain(&e))
        }
        Err(e) => Health::Incomplete(crate::util::error_chain(&e)),
    };
    Ok(BackupCheck {
        backup: backup.dir_name.clone(),
        health,
    })
}

/// Deep verification: each chain's full is received into `scratch`, then
/// each of its incrementals on top (rolled back to the full in between);
/// `scratch` is destroyed after each chain, also when the run stops early.
/// Backups whose listing is already not OK are reported as such without
/// download.
///
/// # Errors
///
/// Never for a bad backup (that is a verdict). [`VerifyError`] for
/// problems of the run itself: interrupted, a wrong passphrase, local ZFS
/// failures, or a scratch dataset that cannot be cleaned up.
pub fn verify_deep(
    store: &dyn Uploader,
    gpg: Option<&GpgEncryptor>,
    runner: &Runner,
    backups: &[RemoteBackup],
    only: Option<&[String]>,
    settings: &RestoreSettings,
) -> Result<Vec<BackupCheck>, VerifyError> {
    let scratch = &settings.target;
    let wanted = |b: &RemoteBackup| {
        only.is_none_or(|o| o.iter().any(|n| *n == b.snapshot || *n == b.dir_name))
    };
    let mut verdicts = Vec::new();
    let (chains, orphans) = chains(backups);
    for orphan in orphans.into_iter().filter(|b| wanted(b)) {
        verdicts.push(BackupCheck {
            backup: orphan.dir_name.clone(),
            health: Health::Incomplete("its full base is not on the remote".into()),
        });
    }
    for chain in chains {
        let members: Vec<&RemoteBackup> = std::iter::once(chain.full)
            .chain(chain.incrementals.iter().copied())
            .filter(|b| {
                wanted(b)
                    || (b.snapshot == chain.full.snapshot
                        && chain.incrementals.iter().any(|i| wanted(i)))
            })
            .collect();
        if members.is_empty() {
            continue;
        }
        let full_listing = check_listing(chain.full);
        if full_listing != Health::Ok {
            for b in members {
                let health = if b.snapshot == chain.full.snapshot {
                    full_listing.clone()
                } else {
                    Health::Incomplete(format!("its full {} is not OK", chain.full.dir_name))
                };
                verdicts.push(BackupCheck {
                    backup: b.dir_name.clone(),
                    health,
                });
            }
            continue;
        }
        destroy_scratch(runner, settings, scratch)?;
        let checked =
            deep_check_chain(store, gpg, runner, &chain, &wanted, settings, &mut verdicts);
        // Clean up whatever happened, then report the first problem.
        let cleaned = destroy_scratch(runner, settings, scratch);
        checked?;
        cleaned?;
    }
    Ok(verdicts)
}

fn deep_check_chain(
    store: &dyn Uploader,
    gpg: Option<&GpgEncryptor>,
    runner: &Runner,
    chain: &crate::policy::Chain<'_>,
    wanted: &dyn Fn(&RemoteBackup) -> bool,
    settings: &RestoreSettings,
    verdicts: &mut Vec<BackupCheck>,
) -> Result<(), VerifyError> {
    let scratch = &settings.target;
    let full_result = restore_chain(store, gpg, runner, &[chain.full], settings);
    let full_ok = full_result.is_ok();
    let full_verdict = verdict_from(chain.full, full_result).map_err(VerifyError::Aborted)?;
    if wanted(chain.full) || !full_ok {
        verdicts.push(full_verdict);
    }
    for incr in chain.incrementals.iter().filter(|b| wanted(b)) {
        if !full_ok {
            verdicts.push(BackupCheck {
                backup: incr.dir_name.clone(),
                health: Health::Incomplete(format!("its full {} is not OK", chain.full.dir_name)),
            });
            continue;
        }
        let listing = check_listing(incr);
        if listing != Health::Ok {
            verdicts.push(BackupCheck {
                backup: incr.dir_name.clone(),
                health: listing,
            });
            continue;
        }
        // Back to the full, so every incremental lands on its base.
        if let Ok(base) = SnapshotName::new(scratch.clone(), &chain.full.snapshot) {
            ZfsCli::new(runner.clone(), settings.zfs.clone()).rollback_own(&base)?;
        }
        let mut incr_settings = settings.clone();
        incr_settings.force = true;
        let result = restore_chain(store, gpg, runner, &[*incr], &incr_settings);
        verdicts.push(verdict_from(incr, result).map_err(VerifyError::Aborted)?);
    }
    Ok(())
}

/// Destroys the scratch dataset if it exists. Only names of the form
/// `<pool>/zfs2cloud-verify-<pid>` are ever passed here.
fn destroy_scratch(
    runner: &Runner,
    settings: &RestoreSettings,
    scratch: &DatasetName,
) -> Result<(), crate::process::ProcessError> {
    if !scratch.as_str().contains("/zfs2cloud-verify-") {
        return Ok(());
    }
    let zfs = ZfsCli::new(runner.clone(), settings.zfs.clone());
    if zfs.exists(scratch)? {
        zfs.destroy_own(scratch.as_str(), true)?;
    }
    Ok(())
}

/// The scratch dataset for deep verification in `pool`.
#[must_use]
pub fn scratch_dataset(pool: &str) -> Option<DatasetName> {
    DatasetName::parse(&format!("{pool}/zfs2cloud-verify-{}", std::process::id())).ok()
}

#[cfg(test)]
mod tests;
