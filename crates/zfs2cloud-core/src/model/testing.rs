//! Fixtures for the crate's unit tests: remote backups as listed.

use super::{ChunkEntry, ExportKind, Manifest, RemoteBackup, RemoteFile};

/// A backup directory `dir` (`<snap>-full` or `<snap>`) as a listing
/// shows it: `files` (name, size, SHA-256 where the backend gives one)
/// and, with `manifest`, a manifest naming `chunks` (name, size, SHA-256)
/// and `base`.
pub(crate) fn remote_backup(
    dir: &str,
    base: Option<&str>,
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
    let chunks: Vec<ChunkEntry> = chunks
        .iter()
        .map(|(name, size, sha256)| ChunkEntry {
            name: (*name).into(),
            size: *size,
            sha256: (*sha256).into(),
        })
        .collect();
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
            base: base.map(Into::into),
            created_at: "2024-01-01T00:00:00Z".into(),
            encryption: "gpg-symmetric-aes256".into(),
            compression: "none".into(),
            split_size: 1024,
            total_size: chunks.iter().map(|c| c.size).sum(),
            chunks,
        }),
        files: files
            .iter()
            .map(|(name, size, sha256)| RemoteFile {
                name: (*name).into(),
                size: *size,
                sha256: sha256.map(Into::into),
            })
            .collect(),
    }
}
