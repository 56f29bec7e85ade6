//! One owner per remote directory, on the remote: the owner marker
//! ([`OWNER_FILE`]) read, and checked and written before an upload writes
//! anything. `policy::decide_ownership` decides; this reads what it
//! decides from and carries it out.

use chrono::{DateTime, SecondsFormat, Utc};

use super::{with_retry, RetryPolicy, UploadStepError};
use crate::model::{remote_join, DatasetName, OwnerMarker, OwnerMarkerError, OWNER_FILE};
use crate::ops::catalog::{list_remote_backups, read_remote, CatalogError, Listing};
use crate::policy::{decide_ownership, Ownership};
use crate::process::CancelToken;
use crate::stages::{Snapshotter, UploadError, Uploader};

/// Why the owner marker could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OwnerReadError {
    /// Listing or reading it failed.
    #[error("cannot read {path}")]
    Remote {
        /// The marker's remote path.
        path: String,
        /// Why.
        #[source]
        source: UploadError,
    },
    /// It is there, but not a marker this version can read.
    #[error("{path} is unreadable")]
    Unreadable {
        /// The marker's remote path.
        path: String,
        /// Why.
        #[source]
        source: OwnerMarkerError,
    },
}

/// The small object at `path`, or `None` if there is none.
///
/// # Errors
///
/// [`UploadError`] if looking it up or reading it fails.
pub fn read_object(store: &dyn Uploader, path: &str) -> Result<Option<Vec<u8>>, UploadError> {
    if store.stat(path)?.is_none() {
        return Ok(None);
    }
    read_remote(store, path).map(Some)
}

/// The owner marker of the directory `remote`, if it has one.
///
/// # Errors
///
/// [`OwnerReadError`] if it cannot be read, or is not a marker.
pub fn read_owner(
    store: &dyn Uploader,
    remote: &str,
) -> Result<Option<OwnerMarker>, OwnerReadError> {
    read_owner_in(store, remote, None)
}

/// [`read_owner`] where a listing of `remote` already said whether the
/// marker is there (`listed`), which saves looking it up first; `None`:
/// not known.
///
/// # Errors
///
/// [`OwnerReadError`] if it cannot be read, or is not a marker.
pub fn read_owner_in(
    store: &dyn Uploader,
    remote: &str,
    listed: Option<bool>,
) -> Result<Option<OwnerMarker>, OwnerReadError> {
    let path = remote_join(remote, OWNER_FILE);
    let bytes = match listed {
        None => read_object(store, &path),
        Some(false) => Ok(None),
        Some(true) => read_remote(store, &path).map(Some),
    }
    .map_err(|source| OwnerReadError::Remote {
        path: path.clone(),
        source,
    })?;
    bytes
        .map(|b| OwnerMarker::parse(&b))
        .transpose()
        .map_err(|source| OwnerReadError::Unreadable { path, source })
}

/// What checking and claiming a remote directory needs.
pub(crate) struct RemoteClaim<'a> {
    /// The GUID of the dataset.
    pub snapshotter: &'a dyn Snapshotter,
    /// The remote store.
    pub uploader: &'a dyn Uploader,
    /// The configured remote directory.
    pub remote: &'a str,
    /// The dataset whose backups go there.
    pub dataset: &'a DatasetName,
    /// Retries of each remote call.
    pub retry: &'a RetryPolicy,
    /// Stops the retries.
    pub cancel: &'a CancelToken,
    /// Recorded in a new marker.
    pub now: DateTime<Utc>,
}

/// Makes sure the directory is the dataset's before an upload writes
/// anything there: refused if its marker names another dataset or, without
/// a marker, if manifests there do; a directory without an owner gets the
/// marker first. Nothing of another dataset's is ever rewritten.
///
/// # Errors
///
/// [`UploadStepError::NotOwner`] or [`UploadStepError::UnreadableOwner`]
/// with nothing written; other [`UploadStepError`]s if the remote or zfs
/// fails.
pub(crate) fn claim_remote(claim: &RemoteClaim<'_>) -> Result<(), UploadStepError> {
    let RemoteClaim {
        remote, dataset, ..
    } = *claim;
    let path = remote_join(remote, OWNER_FILE);
    let bytes = with_retry(claim.retry, claim.cancel, remote, || {
        read_object(claim.uploader, &path)
    })?;
    let marker = bytes
        .map(|b| OwnerMarker::parse(&b))
        .transpose()
        .map_err(|e| UploadStepError::UnreadableOwner {
            action: "upload",
            dataset: dataset.to_string(),
            remote: remote.to_owned(),
            object: OWNER_FILE.to_owned(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
    // Only without a marker do the manifests speak: an older version left
    // none, and its backups say whose they are.
    let backups = match marker {
        Some(_) => Vec::new(),
        None => with_retry(claim.retry, claim.cancel, remote, || {
            list_remote_backups(claim.uploader, remote, Listing::Hashes)
                .map_err(|CatalogError::Remote(e)| e)
        })?,
    };
    let guid = claim.snapshotter.guid(dataset)?;
    let ownership = decide_ownership(marker.as_ref(), &backups, dataset, guid.as_deref()).map_err(
        |conflict| UploadStepError::NotOwner {
            action: "upload",
            dataset: dataset.to_string(),
            remote: remote.to_owned(),
            conflict,
        },
    )?;
    match ownership {
        Ownership::Owned => Ok(()),
        Ownership::OwnedWithOtherGuid {
            marker,
            dataset: now,
        } => {
            log::warn!(
                "{path} names {dataset} with GUID {marker}, but {dataset} has GUID {now}: it was \
                 re-created or restored since, or another machine's {dataset} uploads here too \
                 (then give each a directory of its own); if it was re-created or restored, \
                 delete {path} and the next upload writes it anew"
            );
            Ok(())
        }
        Ownership::Unclaimed => write_marker(claim, &path, guid.as_deref()),
    }
}

/// Writes a new marker for the dataset at `path`.
fn write_marker(
    claim: &RemoteClaim<'_>,
    path: &str,
    guid: Option<&str>,
) -> Result<(), UploadStepError> {
    let written_at = claim.now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let bytes = OwnerMarker::new(claim.dataset, guid, &written_at).to_json();
    log::info!(
        "{} has no owner yet: writing {path} for {}",
        claim.remote,
        claim.dataset
    );
    with_retry(claim.retry, claim.cancel, claim.remote, || {
        claim.uploader.put_bytes(&bytes, path)
    })
}
