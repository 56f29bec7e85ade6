//! What is on the remote: backups, their manifests, chains, and whether
//! each is whole.
//!
//! A backup is a directory `<snap>` or `<snap>-full` under the remote. It is
//! complete when its `manifest.json` is there (the manifest goes last). A
//! directory with chunks but no manifest is either an interrupted upload or
//! a backup made by the original Python tool, which wrote no manifest.

use std::collections::BTreeMap;
use std::io::Read;

use serde::Serialize;

use crate::export::{Manifest, MANIFEST_FILE};
use crate::names::SnapTime;
use crate::plan::ExportKind;
use crate::stages::{RemoteFile, UploadError, Uploader};
use crate::upload::remote_join;

/// One backup directory on the remote.
#[derive(Debug, Clone)]
pub struct RemoteBackup {
    /// `<snap>` or `<snap>-full`.
    pub dir_name: String,
    /// The snapshot (part after `@`).
    pub snapshot: String,
    /// Full or incremental, from the directory name.
    pub kind: ExportKind,
    /// Its manifest, if present and readable.
    pub manifest: Option<Manifest>,
    /// Why a `manifest.json` that is present could not be read. Such a
    /// backup is DAMAGED, never restored as if it had no manifest.
    pub manifest_error: Option<String>,
    /// The files in the directory.
    pub files: Vec<RemoteFile>,
}

impl RemoteBackup {
    /// Whether the manifest is there.
    #[must_use]
    pub fn has_manifest(&self) -> bool {
        self.manifest.is_some()
    }

    /// The base snapshot of an incremental, from the manifest.
    #[must_use]
    pub fn base(&self) -> Option<&str> {
        self.manifest.as_ref().and_then(|m| m.base.as_deref())
    }

    /// The chunk files in order: the manifest's list, or for a backup
    /// without manifest (the original tool's), the `.zfs.gpg.NNNN` files
    /// sorted by their numeric suffix.
    #[must_use]
    pub fn chunk_names(&self) -> Vec<String> {
        if self.manifest_error.is_some() {
            return Vec::new();
        }
        if let Some(m) = &self.manifest {
            return m.chunks.iter().map(|c| c.name.clone()).collect();
        }
        let mut chunks: Vec<(u64, String)> = self
            .files
            .iter()
            .filter_map(|f| {
                let (_, suffix) = f.name.rsplit_once(".zfs.gpg.")?;
                suffix.parse::<u64>().ok().map(|n| (n, f.name.clone()))
            })
            .collect();
        chunks.sort();
        chunks.into_iter().map(|(_, n)| n).collect()
    }
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
    let mut proc = store.cat(path)?;
    let mut bytes = Vec::new();
    let read = proc.take_stdout().map(|mut o| o.read_to_end(&mut bytes));
    proc.wait().into_result()?;
    if let Some(Err(e)) = read {
        return Err(UploadError::Parse {
            command: format!("cat {path}"),
            message: e.to_string(),
        });
    }
    Ok(bytes)
}

/// Lists the backups under `remote`, oldest first. Directories that are not
/// named like a backup are ignored.
///
/// # Errors
///
/// [`CatalogError`] if the remote cannot be listed.
pub fn list_remote_backups(
    store: &dyn Uploader,
    remote: &str,
) -> Result<Vec<RemoteBackup>, CatalogError> {
    let mut out = Vec::new();
    for dir_name in store.list_dirs(remote)? {
        let (snapshot, kind) = match dir_name.strip_suffix("-full") {
            Some(s) => (s.to_owned(), ExportKind::Full),
            None => (dir_name.clone(), ExportKind::Incremental),
        };
        if SnapTime::parse(&snapshot).is_none() {
            continue;
        }
        let dir = remote_join(remote, &dir_name);
        let files = store.list(&dir)?;
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

/// The state of one backup, as `verify` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "UPPERCASE")]
pub enum Health {
    /// Every chunk is there with its size (and SHA-256 where the backend
    /// reports one).
    Ok,
    /// A chunk differs from the manifest.
    Damaged(String),
    /// Something is missing.
    Incomplete(String),
}

/// Checks a backup's remote listing against its manifest, without
/// downloading anything. Where the backend reports no SHA-256, only sizes
/// are compared (`verify --deep` reads everything).
#[must_use]
pub fn check_listing(backup: &RemoteBackup) -> Health {
    if let Some(e) = &backup.manifest_error {
        return Health::Damaged(format!("{MANIFEST_FILE} is unreadable: {e}"));
    }
    let Some(manifest) = &backup.manifest else {
        return Health::Incomplete(format!(
            "{MANIFEST_FILE} is missing (an interrupted upload, or a backup made by the original tool)"
        ));
    };
    let files: BTreeMap<&str, &RemoteFile> =
        backup.files.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut missing = Vec::new();
    for chunk in &manifest.chunks {
        match files.get(chunk.name.as_str()) {
            None => missing.push(chunk.name.clone()),
            Some(f) if f.size != chunk.size => {
                return Health::Damaged(format!(
                    "chunk {} has {} bytes, the manifest says {}",
                    chunk.name, f.size, chunk.size
                ))
            }
            Some(f) if f.sha256.as_deref().is_some_and(|h| h != chunk.sha256) => {
                return Health::Damaged(format!(
                    "chunk {} has a different sha256 than the manifest",
                    chunk.name
                ))
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Health::Incomplete(format!("missing chunk(s): {}", missing.join(", ")));
    }
    Health::Ok
}

/// A chain: a full and the incrementals based on it, oldest first.
#[derive(Debug, Clone)]
pub struct Chain<'a> {
    /// The full.
    pub full: &'a RemoteBackup,
    /// Incrementals whose manifest names the full as base.
    pub incrementals: Vec<&'a RemoteBackup>,
}

/// Groups backups into chains. Incrementals whose base is not on the remote
/// are returned separately as orphans.
#[must_use]
pub fn chains(backups: &[RemoteBackup]) -> (Vec<Chain<'_>>, Vec<&RemoteBackup>) {
    let mut chains: Vec<Chain<'_>> = backups
        .iter()
        .filter(|b| b.kind == ExportKind::Full)
        .map(|full| Chain {
            full,
            incrementals: Vec::new(),
        })
        .collect();
    let mut orphans = Vec::new();
    for b in backups.iter().filter(|b| b.kind == ExportKind::Incremental) {
        match b
            .base()
            .and_then(|base| chains.iter_mut().find(|c| c.full.snapshot == base))
        {
            Some(chain) => chain.incrementals.push(b),
            None => orphans.push(b),
        }
    }
    (chains, orphans)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::export::ChunkEntry;

    fn backup(
        dir: &str,
        chunks: &[(&str, u64, &str)],
        files: &[(&str, u64, Option<&str>)],
        manifest: bool,
    ) -> RemoteBackup {
        let snapshot = dir.trim_end_matches("-full").to_owned();
        let kind = if dir.ends_with("-full") {
            ExportKind::Full
        } else {
            ExportKind::Incremental
        };
        RemoteBackup {
            dir_name: dir.into(),
            snapshot: snapshot.clone(),
            kind,
            manifest_error: None,
            manifest: manifest.then(|| Manifest {
                format: 1,
                tool: "zfs2cloud".into(),
                tool_version: "0".into(),
                dataset: "tank/data".into(),
                snapshot,
                kind,
                base: (kind == ExportKind::Incremental).then(|| "20240101000000".into()),
                created_at: String::new(),
                encryption: String::new(),
                compression: "none".into(),
                split_size: 0,
                total_size: 0,
                chunks: chunks
                    .iter()
                    .map(|(n, s, h)| ChunkEntry {
                        name: (*n).into(),
                        size: *s,
                        sha256: (*h).into(),
                    })
                    .collect(),
            }),
            files: files
                .iter()
                .map(|(n, s, h)| RemoteFile {
                    name: (*n).into(),
                    size: *s,
                    sha256: h.map(Into::into),
                })
                .collect(),
        }
    }

    #[test]
    fn listing_checks_name_the_chunk() {
        let ok = backup(
            "20240101000000-full",
            &[("c.0000", 3, "aa")],
            &[("c.0000", 3, Some("aa"))],
            true,
        );
        assert_eq!(check_listing(&ok), Health::Ok);
        let flipped = backup(
            "20240101000000-full",
            &[("c.0000", 3, "aa")],
            &[("c.0000", 3, Some("bb"))],
            true,
        );
        assert!(matches!(check_listing(&flipped), Health::Damaged(r) if r.contains("c.0000")));
        let short = backup(
            "20240101000000-full",
            &[("c.0000", 3, "aa")],
            &[("c.0000", 2, None)],
            true,
        );
        assert!(matches!(check_listing(&short), Health::Damaged(r) if r.contains("c.0000")));
        let gone = backup("20240101000000-full", &[("c.0000", 3, "aa")], &[], true);
        assert!(matches!(check_listing(&gone), Health::Incomplete(r) if r.contains("c.0000")));
        let mut corrupt = backup("20240101000000-full", &[], &[("c.0000", 3, None)], false);
        corrupt.manifest_error = Some("EOF while parsing".into());
        assert!(matches!(check_listing(&corrupt), Health::Damaged(r) if r.contains("unreadable")));
        assert!(
            corrupt.chunk_names().is_empty(),
            "never restored as manifest-less"
        );
        let no_manifest = backup("20240101000000-full", &[], &[("c.0000", 3, None)], false);
        assert!(
            matches!(check_listing(&no_manifest), Health::Incomplete(r) if r.contains("manifest.json"))
        );
        // No hash from the backend: sizes decide.
        let s3 = backup(
            "20240101000000-full",
            &[("c.0000", 3, "aa")],
            &[("c.0000", 3, None)],
            true,
        );
        assert_eq!(check_listing(&s3), Health::Ok);
    }

    #[test]
    fn legacy_chunks_are_ordered_by_numeric_suffix() {
        let b = backup(
            "20240101000000-full",
            &[],
            &[
                ("d@s.zfs.gpg.0010", 1, None),
                ("d@s.zfs.gpg.0002", 1, None),
                ("notes.txt", 1, None),
                ("d@s.zfs.gpg.0000", 1, None),
            ],
            false,
        );
        assert_eq!(
            b.chunk_names(),
            ["d@s.zfs.gpg.0000", "d@s.zfs.gpg.0002", "d@s.zfs.gpg.0010"]
        );
    }

    #[test]
    fn chains_group_incrementals_under_their_full() {
        let backups = vec![
            backup("20240101000000-full", &[], &[], true),
            backup("20240102000000", &[], &[], true),
            backup("20240103000000", &[], &[], true),
        ];
        let (chains, orphans) = chains(&backups);
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0].incrementals.len(), 2);
        assert!(orphans.is_empty());
    }
}
