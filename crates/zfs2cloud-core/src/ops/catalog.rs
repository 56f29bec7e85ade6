//! What is on the remote: backups, their manifests, chains, and whether
//! each is whole.
//!
//! A backup is a directory `<snap>` or `<snap>-full` under the remote. It is
//! complete when its `manifest.json` is there (the manifest goes last). A
//! directory with chunks but no manifest is either an interrupted upload or
//! a backup made by the original Python tool, which wrote no manifest.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::model::remote_join;
use crate::model::DatasetName;
use crate::model::ExportKind;
use crate::model::SnapTime;
use crate::model::{Manifest, MANIFEST_FILE};
use crate::model::{RemoteBackup, RemoteFile};
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
    match listing {
        Listing::Sizes => RemoteListing::read(store, remote)?.backups(store),
        Listing::Hashes => backups_among(store, remote, store.list_dirs(remote)?, listing),
    }
}

/// The complete backups (those with a manifest) in a remote directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RemoteTotals {
    /// How many.
    pub backups: u64,
    /// The bytes of all their files.
    pub bytes: u64,
}

/// One listing of a remote directory: the files in it and in each of its
/// subdirectories, names and sizes only, from one call where the backend
/// allows ([`Uploader::list_two_levels`]). What a restore reads before it
/// streams: its time is paid before the first byte reaches `zfs recv`.
#[derive(Debug, Clone)]
pub struct RemoteListing {
    remote: String,
    /// The files directly in `remote`.
    top: Vec<RemoteFile>,
    /// Each subdirectory's files.
    dirs: BTreeMap<String, Vec<RemoteFile>>,
}

impl RemoteListing {
    /// Lists `remote`.
    ///
    /// # Errors
    ///
    /// [`CatalogError`] if it cannot be listed.
    pub fn read(store: &dyn Uploader, remote: &str) -> Result<Self, CatalogError> {
        let mut top = Vec::new();
        let mut dirs: BTreeMap<String, Vec<RemoteFile>> = BTreeMap::new();
        for file in store.list_two_levels(remote)? {
            match file.name.split_once('/') {
                None => top.push(file),
                Some((dir, name)) => {
                    let inside = RemoteFile {
                        name: name.to_owned(),
                        ..file.clone()
                    };
                    dirs.entry(dir.to_owned()).or_default().push(inside);
                }
            }
        }
        Ok(Self {
            remote: remote.to_owned(),
            top,
            dirs,
        })
    }

    /// Whether the file `name` is directly in the listed directory.
    #[must_use]
    pub fn has_file(&self, name: &str) -> bool {
        self.top.iter().any(|f| f.name == name)
    }

    /// How many complete backups (directories named like one, holding a
    /// manifest) the listing holds, and the bytes of their files.
    #[must_use]
    pub fn totals(&self) -> RemoteTotals {
        let complete: Vec<&Vec<RemoteFile>> = self
            .dirs
            .iter()
            .filter(|(d, files)| {
                backup_name(d).is_some() && files.iter().any(|f| f.name == MANIFEST_FILE)
            })
            .map(|(_, files)| files)
            .collect();
        RemoteTotals {
            backups: complete.len() as u64,
            bytes: complete.iter().flat_map(|f| f.iter()).map(|f| f.size).sum(),
        }
    }

    /// The backups among the listed directories, oldest first, with their
    /// manifests (read in parallel).
    ///
    /// # Errors
    ///
    /// [`CatalogError`] if a manifest cannot be read.
    pub fn backups(&self, store: &dyn Uploader) -> Result<Vec<RemoteBackup>, CatalogError> {
        let dirs = self
            .dirs
            .iter()
            .map(|(d, files)| (d.clone(), files.clone()))
            .collect();
        backups_from(store, &self.remote, dirs)
    }

    /// [`RemoteListing::backups`] of `dataset` only, as
    /// [`list_backups_of`] gives them; all of them without one.
    ///
    /// # Errors
    ///
    /// [`CatalogError`] if a manifest cannot be read.
    pub fn backups_of(
        &self,
        store: &dyn Uploader,
        dataset: Option<&DatasetName>,
    ) -> Result<Vec<RemoteBackup>, CatalogError> {
        let all = self.backups(store)?;
        Ok(match dataset {
            Some(d) => keep_backups_of(&self.remote, all, d),
            None => all,
        })
    }
}

/// [`list_remote_backups`] of the directories `dir_names` of `remote`,
/// already listed.
pub(crate) fn backups_among(
    store: &dyn Uploader,
    remote: &str,
    dir_names: Vec<String>,
    listing: Listing,
) -> Result<Vec<RemoteBackup>, CatalogError> {
    let mut dirs = Vec::new();
    for dir_name in dir_names {
        if backup_name(&dir_name).is_none() {
            continue;
        }
        let dir = remote_join(remote, &dir_name);
        let files = match listing {
            Listing::Sizes => store.list_sizes(&dir)?,
            Listing::Hashes => store.list(&dir)?,
        };
        dirs.push((dir_name, files));
    }
    backups_from(store, remote, dirs)
}

/// The snapshot and kind a directory name says, if it is named like a
/// backup.
fn backup_name(dir_name: &str) -> Option<(String, ExportKind)> {
    let (snapshot, kind) = match dir_name.strip_suffix("-full") {
        Some(s) => (s, ExportKind::Full),
        None => (dir_name, ExportKind::Incremental),
    };
    SnapTime::parse(snapshot).map(|_| (snapshot.to_owned(), kind))
}

/// The backups among `dirs` (name and files) of `remote`, oldest first,
/// with their manifests.
fn backups_from(
    store: &dyn Uploader,
    remote: &str,
    dirs: Vec<(String, Vec<RemoteFile>)>,
) -> Result<Vec<RemoteBackup>, CatalogError> {
    let dirs: Vec<_> = dirs
        .into_iter()
        .filter_map(|(d, files)| backup_name(&d).map(|name| (d, name, files)))
        .collect();
    let with_manifest: Vec<String> = dirs
        .iter()
        .filter(|(_, _, files)| files.iter().any(|f| f.name == MANIFEST_FILE))
        .map(|(d, _, _)| remote_join(&remote_join(remote, d), MANIFEST_FILE))
        .collect();
    let mut read = read_all(store, &with_manifest)?.into_iter();
    let mut out = Vec::new();
    for (dir_name, (snapshot, kind), files) in dirs {
        let (manifest, manifest_error) = if files.iter().any(|f| f.name == MANIFEST_FILE) {
            let bytes = read.next().unwrap_or_default();
            match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m) => (Some(m), None),
                Err(e) => {
                    log::warn!("{remote}/{dir_name}/{MANIFEST_FILE} is unreadable: {e}");
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

/// How many small files [`read_all`] reads at once: each read is an
/// rclone start-up and a round trip, which add up over many backups.
const PARALLEL_READS: usize = 8;

/// Reads the small remote files `paths`, several at once; their bytes in
/// the same order.
fn read_all(store: &dyn Uploader, paths: &[String]) -> Result<Vec<Vec<u8>>, UploadError> {
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<Result<Vec<u8>, UploadError>>> = Vec::new();
    slots.resize_with(paths.len(), || None);
    let slots = Mutex::new(slots);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_READS.min(paths.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(path) = paths.get(i) else { break };
                let read = read_remote(store, path);
                slots.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(read);
            });
        }
    });
    let slots = slots.into_inner().unwrap_or_else(PoisonError::into_inner);
    paths
        .iter()
        .zip(slots)
        .map(|(path, slot)| {
            slot.unwrap_or_else(|| {
                Err(UploadError::Parse {
                    command: format!("cat {path}"),
                    message: "its reader thread panicked".to_owned(),
                })
            })
        })
        .collect()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::testing::test_manifest;
    use crate::stages::MockUploader;

    fn file(name: &str, size: u64) -> RemoteFile {
        RemoteFile {
            name: name.into(),
            size,
            sha256: None,
        }
    }

    #[test]
    fn one_listing_gives_the_top_files_and_each_backup_with_its_manifest() {
        let mut store = MockUploader::new();
        store.expect_list_two_levels().times(1).returning(|_| {
            Ok(vec![
                file("zfs2cloud-owner.json", 10),
                file("20240101000000-full/manifest.json", 5),
                file("20240101000000-full/x.0000", 7),
                file("20240102000000/x.0000", 3),
                file("not-a-backup/x", 1),
            ])
        });
        let manifest = test_manifest("20240101000000", ExportKind::Full, None, Vec::new());
        let bytes = serde_json::to_vec(&manifest).unwrap();
        store
            .expect_cat()
            .withf(|path| path == "r:b/20240101000000-full/manifest.json")
            .times(1)
            .returning(move |path| Ok(Started::reading(path, std::io::Cursor::new(bytes.clone()))));
        let listing = RemoteListing::read(&store, "r:b").unwrap();
        assert!(listing.has_file(crate::model::OWNER_FILE));
        assert!(!listing.has_file("x.0000"));
        let backups = listing.backups(&store).unwrap();
        let seen: Vec<(&str, usize, bool)> = backups
            .iter()
            .map(|b| (b.dir_name.as_str(), b.files.len(), b.manifest.is_some()))
            .collect();
        assert_eq!(
            seen,
            [
                ("20240101000000-full", 2, true),
                ("20240102000000", 1, false)
            ]
        );
        assert_eq!(backups[1].files[0].name, "x.0000");
    }
}
