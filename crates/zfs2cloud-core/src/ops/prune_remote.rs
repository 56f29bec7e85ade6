//! `prune-remote`: deletes the backup directories on the remote that
//! `[retention.remote]` lets go. [`plan_remote_prune`] decides; this lists
//! the remote directory for it and carries the plan out.
//!
//! Only backup directories of the dataset are ever deleted. Everything
//! else in the directory (the owner marker, other files, the directories
//! of a tree's children, backups of another dataset) is left alone, and
//! listed as such. A directory whose owner marker names another dataset
//! is not pruned at all.
//!
//! The order keeps one promise: an interrupted prune leaves incomplete
//! backups (which a rerun deletes), never a complete backup whose chain is
//! broken. Dependents go before their bases, and inside a backup the
//! manifest goes first ([`deletion_sequence`]).

use chrono::{DateTime, Utc};

use crate::model::{remote_join, DatasetName, RemoteBackup, OWNER_FILE};
use crate::ops::catalog::{backups_among, CatalogError, Listing};
use crate::ops::upload::{read_owner, OwnerReadError};
use crate::policy::{
    backups_of, decide_ownership, deletion_sequence, OwnerConflict, RemoteAction, RemotePrunePlan,
};
use crate::process::CancelToken;
use crate::stages::{UploadError, Uploader};
use crate::util::error_chain;

/// Why remote pruning failed.
#[derive(Debug, thiserror::Error)]
pub enum PruneRemoteError {
    /// Listing or reading the remote failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The owner marker could not be read: whose the backups are is
    /// unknown, so nothing is deleted.
    #[error(transparent)]
    Owner(#[from] OwnerReadError),
    /// The directory is another dataset's.
    #[error("refusing to prune {remote} for {dataset}: that directory {conflict}")]
    NotOwner {
        /// The remote directory.
        remote: String,
        /// The dataset being pruned.
        dataset: String,
        /// Whose it is.
        conflict: OwnerConflict,
    },
    /// A delete failed; what was deleted before it stays deleted, and a
    /// rerun finishes the job.
    #[error("cannot delete {path}")]
    Delete {
        /// The remote path.
        path: String,
        /// Why.
        #[source]
        source: UploadError,
    },
    /// The plan names a directory to delete that it does not let go: a
    /// bug, refused.
    #[error("refusing to delete {0}: the plan does not let it go")]
    NotPlanned(String),
    /// The run was interrupted between two deletions.
    #[error("interrupted")]
    Interrupted,
}

/// An entry of the remote directory that pruning never touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftAlone {
    /// Its name; a directory's ends with `/`.
    pub name: String,
    /// What it is, as far as zfs2cloud can tell.
    pub what: String,
}

/// A remote directory as remote pruning sees it.
#[derive(Debug, Clone)]
pub struct PruneListing {
    /// The dataset's backups, oldest first.
    pub backups: Vec<RemoteBackup>,
    /// Everything else in the directory, by name.
    pub left_alone: Vec<LeftAlone>,
    /// When zfs2cloud claimed the directory: its owner marker's
    /// `written_at`; `None` without a marker (or with an unreadable time).
    pub claimed_at: Option<DateTime<Utc>>,
}

/// Lists `remote` for pruning the backups of `dataset`: its backups, what
/// is left alone, and when zfs2cloud claimed it.
///
/// # Errors
///
/// [`PruneRemoteError::NotOwner`] if the directory is another dataset's
/// (by its marker or, without one, by its manifests);
/// [`PruneRemoteError::Owner`] if the marker cannot be read;
/// [`PruneRemoteError::Catalog`] if listing fails.
pub fn list_for_prune(
    store: &dyn Uploader,
    remote: &str,
    dataset: &DatasetName,
) -> Result<PruneListing, PruneRemoteError> {
    let marker = read_owner(store, remote)?;
    let dirs = store.list_dirs(remote).map_err(CatalogError::from)?;
    let files = store.list_sizes(remote).map_err(CatalogError::from)?;
    let all = backups_among(store, remote, dirs.clone(), Listing::Hashes)?;
    decide_ownership(marker.as_ref(), &all, dataset, None).map_err(|conflict| {
        PruneRemoteError::NotOwner {
            remote: remote.to_owned(),
            dataset: dataset.to_string(),
            conflict,
        }
    })?;
    let (backups, skipped) = backups_of(all, dataset);
    let mut left_alone: Vec<LeftAlone> = files
        .into_iter()
        .map(|f| LeftAlone {
            what: if f.name == OWNER_FILE {
                "the owner marker".to_owned()
            } else {
                "a file, not a backup".to_owned()
            },
            name: f.name,
        })
        .collect();
    for dir in dirs {
        let what = match skipped.iter().find(|s| s.dir_name == dir) {
            Some(s) => format!("a backup of {}, not of {dataset}", s.dataset),
            None if backups.iter().any(|b| b.dir_name == dir) => continue,
            None => "a directory not named like a backup (a child dataset's, or not zfs2cloud's)"
                .to_owned(),
        };
        left_alone.push(LeftAlone {
            name: format!("{dir}/"),
            what,
        });
    }
    left_alone.sort_by(|a, b| a.name.cmp(&b.name));
    let claimed_at = marker.and_then(|m| {
        DateTime::parse_from_rfc3339(&m.written_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    });
    Ok(PruneListing {
        backups,
        left_alone,
        claimed_at,
    })
}

/// Deletes what `plan` lets go of `backups` under `remote`, in its
/// order: each directory's files in [`deletion_sequence`], then the
/// directory. Returns the directories deleted. A directory that cannot be
/// removed once its files are gone (it holds something else) is only
/// warned about: no backup is left there.
///
/// # Errors
///
/// [`PruneRemoteError::Delete`] for the first file that cannot be deleted
/// (nothing after it is touched); [`PruneRemoteError::Interrupted`] when
/// `cancel` is set between two deletions.
pub fn delete_planned(
    store: &dyn Uploader,
    remote: &str,
    backups: &[RemoteBackup],
    plan: &RemotePrunePlan,
    cancel: &CancelToken,
) -> Result<Vec<String>, PruneRemoteError> {
    let mut deleted = Vec::new();
    for dir_name in &plan.deletion_order {
        let planned = plan
            .decision(dir_name)
            .is_some_and(|d| d.action == RemoteAction::Delete);
        let backup = backups.iter().find(|b| b.dir_name == *dir_name);
        let (true, Some(backup)) = (planned, backup) else {
            return Err(PruneRemoteError::NotPlanned(dir_name.clone()));
        };
        delete_backup(store, remote, backup, cancel)?;
        deleted.push(dir_name.clone());
    }
    Ok(deleted)
}

/// Deletes one backup directory: its files, then the directory.
fn delete_backup(
    store: &dyn Uploader,
    remote: &str,
    backup: &RemoteBackup,
    cancel: &CancelToken,
) -> Result<(), PruneRemoteError> {
    let dir = remote_join(remote, &backup.dir_name);
    for file in deletion_sequence(backup) {
        if cancel.is_cancelled() {
            return Err(PruneRemoteError::Interrupted);
        }
        let path = remote_join(&dir, &file);
        store
            .delete_file(&path)
            .map_err(|source| PruneRemoteError::Delete { path, source })?;
    }
    if let Err(e) = store.remove_dir(&dir) {
        log::warn!(
            "the files of {dir} are deleted, but the directory stays: {}",
            error_chain(&e)
        );
    }
    log::info!("deleted {dir}");
    Ok(())
}

#[cfg(test)]
mod tests;
