//! What is on the remote: backups, their manifests, chains, and whether
//! each is whole.
//!
//! A backup is a directory `<snap>` or `<snap>-full` under the remote. It is
//! complete when its `manifest.json` is there (the manifest goes last). A
//! directory with chunks but no manifest is either an interrupted upload or
//! a backup made by the original Python tool, which wrote no manifest.

use std::io::Read;

use crate::model::remote_join;
use crate::model::DatasetName;
use crate::model::ExportKind;
use crate::model::RemoteBackup;
use crate::model::SnapTime;
use crate::model::{Manifest, MANIFEST_FILE};
use crate::policy::backups_of;
use crate::stages::{Started, UploadError, Uploader};

/// How much of each backup's files a listing asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Names and sizes only: a restore or `verify --deep`, which hash
    /// every chunk as it streams, and must not read it a second time just
    /// to hash it first.
    Sizes,
    /// Also the SHA-256 where the backend gives one (local, sftp). On
    /// most backends that reads every chunk: for `verify`'s listing check,
    /// which has no other way to see the content.
    Hashes,
}

/// Errors reading the remote catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Listing or reading failed.
    #[error(transparent)]
    Remote(#[from] UploadError),
}

/// Reads a small remote file (a manifest) into memory.
///
/// # Errors
///
/// [`UploadError`] if `rclone cat` fails.
pub fn read_remote(store: &dyn Uploader, path: &str) -> Result<Vec<u8>, UploadError> {
    let Started { stage, mut output } = store.cat(path)?;
    let mut bytes = Vec::new();
    let read = output.read_to_end(&mut bytes);
    drop(output);
    stage.wait()?;
    if let Err(e) = read {
        return Err(UploadError::Parse {
            command: format!("cat {path}"),
            message: e.to_string(),
        });
    }
    Ok(bytes)
}

/// Lists the backups under `remote`, oldest first, each with its files as
/// `listing` asks. Directories that are not named like a backup are
/// ignored.
///
/// # Errors
///
/// [`CatalogError`] if the remote cannot be listed.
pub fn list_remote_backups(
    store: &dyn Uploader,
    remote: &str,
    listing: Listing,
) -> Result<Vec<RemoteBackup>, CatalogError> {
    backups_among(store, remote, store.list_dirs(remote)?, listing)
}

/// [`list_remote_backups`] of the directories `dir_names` of `remote`,
/// already listed.
pub(crate) fn backups_among(
    store: &dyn Uploader,
    remote: &str,
    dir_names: Vec<String>,
    listing: Listing,
) -> Result<Vec<RemoteBackup>, CatalogError> {
    let mut out = Vec::new();
    for dir_name in dir_names {
        let (snapshot, kind) = match dir_name.strip_suffix("-full") {
            Some(s) => (s.to_owned(), ExportKind::Full),
            None => (dir_name.clone(), ExportKind::Incremental),
        };
        if SnapTime::parse(&snapshot).is_none() {
            continue;
        }
        let dir = remote_join(remote, &dir_name);
        let files = match listing {
            Listing::Sizes => store.list_sizes(&dir)?,
            Listing::Hashes => store.list(&dir)?,
        };
        let (manifest, manifest_error) = if files.iter().any(|f| f.name == MANIFEST_FILE) {
            let bytes = read_remote(store, &remote_join(&dir, MANIFEST_FILE))?;
            match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m) => (Some(m), None),
                Err(e) => {
                    log::warn!("{dir}/{MANIFEST_FILE} is unreadable: {e}");
                    (None, Some(e.to_string()))
                }
            }
        } else {
            (None, None)
        };
        out.push(RemoteBackup {
            dir_name,
            snapshot,
            kind,
            manifest,
            manifest_error,
            files,
        });
    }
    out.sort_by(|a, b| a.snapshot.cmp(&b.snapshot));
    Ok(out)
}

/// The backups of `dataset` under `remote`, oldest first (as
/// [`list_remote_backups`]): a restore or verify of one dataset never
/// considers another's, even where two shared a directory before the owner
/// marker. Each one left out is logged with whose it is.
///
/// # Errors
///
/// [`CatalogError`] if the remote cannot be listed.
pub fn list_backups_of(
    store: &dyn Uploader,
    remote: &str,
    dataset: &DatasetName,
    listing: Listing,
) -> Result<Vec<RemoteBackup>, CatalogError> {
    Ok(keep_backups_of(
        remote,
        list_remote_backups(store, remote, listing)?,
        dataset,
    ))
}

/// The backups of `dataset` among `backups` (listed in `remote`), each one
/// left out logged with whose it is.
pub(crate) fn keep_backups_of(
    remote: &str,
    backups: Vec<RemoteBackup>,
    dataset: &DatasetName,
) -> Vec<RemoteBackup> {
    let (kept, skipped) = backups_of(backups, dataset);
    for s in &skipped {
        log::warn!(
            "skipping {}: it is a backup of {}, not of {dataset}",
            remote_join(remote, &s.dir_name),
            s.dataset
        );
    }
    kept
}
