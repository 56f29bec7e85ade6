//! `verify`: prove the backups on the remote.
//!
//! The default check reads only the remote listing: every chunk must be
//! there with the manifest's size, and its SHA-256 where the backend reports
//! one (local, sftp; not S3). `--deep` downloads everything, checks every
//! chunk's SHA-256 as it streams, decrypts, and receives the stream into a
//! temporary dataset, which proves it is a whole, valid ZFS send stream;
//! the dataset is destroyed afterwards.

use serde::Serialize;

use crate::catalog::{chains, check_listing, Health, RemoteBackup};
use crate::gpg::GpgEncryptor;
use crate::names::{DatasetName, SnapshotName};
use crate::process::{CommandLine, Runner};
use crate::restore::{restore_chain, RestoreError, RestoreSettings};
use crate::stages::Uploader;

/// One backup's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The backup directory on the remote.
    pub backup: String,
    /// OK, DAMAGED or INCOMPLETE, with the reason.
    #[serde(flatten)]
    pub health: Health,
}

/// Checks the listing of each backup (or only those named in `only`,
/// matched by snapshot or directory name).
#[must_use]
pub fn verify_listing(backups: &[RemoteBackup], only: Option<&[String]>) -> Vec<Verdict> {
    backups
        .iter()
        .filter(|b| only.is_none_or(|o| o.iter().any(|n| *n == b.snapshot || *n == b.dir_name)))
        .map(|b| Verdict {
            backup: b.dir_name.clone(),
            health: check_listing(b),
        })
        .collect()
}

fn verdict_from(backup: &RemoteBackup, result: Result<(), RestoreError>) -> Verdict {
    let health = match result {
        Ok(()) => Health::Ok,
        Err(e @ RestoreError::DamagedChunk { .. }) => Health::Damaged(e.to_string()),
        Err(e @ (RestoreError::Decrypt { .. } | RestoreError::Receive { .. })) => {
            Health::Damaged(crate::error_chain(&e))
        }
        Err(e) => Health::Incomplete(crate::error_chain(&e)),
    };
    Verdict {
        backup: backup.dir_name.clone(),
        health,
    }
}

/// Deep verification: each chain's full is received into `scratch`, then
/// each of its incrementals on top (rolled back to the full in between);
/// `scratch` is destroyed at the end. Backups whose listing is already
/// not OK are reported as such without download.
///
/// # Errors
///
/// Never for a bad backup (that is a verdict); only `Err` if the scratch
/// dataset cannot be cleaned up, which is reported so it is not forgotten.
pub fn verify_deep(
    store: &dyn Uploader,
    gpg: &GpgEncryptor,
    runner: &Runner,
    backups: &[RemoteBackup],
    only: Option<&[String]>,
    settings: &RestoreSettings,
) -> Result<Vec<Verdict>, crate::process::ProcessError> {
    let scratch = &settings.target;
    let wanted = |b: &RemoteBackup| {
        only.is_none_or(|o| o.iter().any(|n| *n == b.snapshot || *n == b.dir_name))
    };
    let mut verdicts = Vec::new();
    let (chains, orphans) = chains(backups);
    for orphan in orphans.into_iter().filter(|b| wanted(b)) {
        verdicts.push(Verdict {
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
                verdicts.push(Verdict {
                    backup: b.dir_name.clone(),
                    health,
                });
            }
            continue;
        }
        destroy_scratch(runner, settings, scratch)?;
        let full_result = restore_chain(store, gpg, runner, &[chain.full], settings);
        let full_ok = full_result.is_ok();
        if wanted(chain.full) || !full_ok {
            verdicts.push(verdict_from(chain.full, full_result));
        }
        for incr in chain.incrementals.iter().filter(|b| wanted(b)) {
            if !full_ok {
                verdicts.push(Verdict {
                    backup: incr.dir_name.clone(),
                    health: Health::Incomplete(format!(
                        "its full {} is not OK",
                        chain.full.dir_name
                    )),
                });
                continue;
            }
            let listing = check_listing(incr);
            if listing != Health::Ok {
                verdicts.push(Verdict {
                    backup: incr.dir_name.clone(),
                    health: listing,
                });
                continue;
            }
            // Back to the full, so every incremental lands on its base.
            if let Ok(base) = SnapshotName::new(scratch.clone(), &chain.full.snapshot) {
                runner.mutate(
                    &CommandLine::new(&settings.zfs)
                        .args(["rollback", "-r"])
                        .arg(base.to_string()),
                )?;
            }
            let mut incr_settings = settings.clone();
            incr_settings.force = true;
            let result = restore_chain(store, gpg, runner, &[*incr], &incr_settings);
            verdicts.push(verdict_from(incr, result));
        }
        destroy_scratch(runner, settings, scratch)?;
    }
    Ok(verdicts)
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
    if crate::restore::dataset_exists(runner, &settings.zfs, scratch)? {
        crate::zfs::destroy_own_dataset(runner, &settings.zfs, scratch.as_str(), true)?;
    }
    Ok(())
}

/// The scratch dataset for deep verification in `pool`.
#[must_use]
pub fn scratch_dataset(pool: &str) -> Option<DatasetName> {
    DatasetName::parse(&format!("{pool}/zfs2cloud-verify-{}", std::process::id())).ok()
}
