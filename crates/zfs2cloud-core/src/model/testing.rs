//! Fixtures for the crate's unit tests: remote backups as listed, and
//! exports on local disk.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use sha2::{Digest, Sha256};

use super::{
    hex, sha256sums_text, ChunkEntry, DatasetName, ExportKind, ExportLayout, Manifest,
    RemoteBackup, RemoteFile, SnapshotName, MANIFEST_FILE, SHA256SUMS_FILE,
};

/// The manifest of an export of `tank/data@snap` holding `chunks`.
pub(crate) fn test_manifest(
    snap: &str,
    kind: ExportKind,
    base: Option<&str>,
    chunks: Vec<ChunkEntry>,
) -> Manifest {
    Manifest {
        format: 1,
        tool: "zfs2cloud".into(),
        tool_version: "0".into(),
        dataset: "tank/data".into(),
        snapshot: snap.into(),
        kind,
        base: base.map(Into::into),
        created_at: "2024-01-01T00:00:00Z".into(),
        encryption: "gpg-symmetric-aes256".into(),
        compression: "none".into(),
        split_size: 1024,
        total_size: chunks.iter().map(|c| c.size).sum(),
        chunks,
        send_flags: crate::model::SendFlags::default(),
        level: None,
        recipients: Vec::new(),
    }
}

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
        manifest: manifest.then(|| test_manifest(&snapshot, kind, base, chunks)),
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

/// Writes a complete export of `tank/data@snap` under `basedir` in the
/// real layout (chunks with these contents, `SHA256SUMS`, the manifest),
/// incremental if it has a `base`; returns its directory name.
pub(crate) fn write_local_export(
    basedir: &Path,
    snap: &str,
    base: Option<&str>,
    chunks: &[&[u8]],
) -> String {
    let kind = if base.is_some() {
        ExportKind::Incremental
    } else {
        ExportKind::Full
    };
    let dataset = DatasetName::parse("tank/data").unwrap();
    let snapshot = SnapshotName::new(dataset.clone(), snap).unwrap();
    let dir_name = ExportLayout::dir_name(&snapshot, kind);
    let dir = basedir.join(&dir_name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut entries = Vec::new();
    for (i, bytes) in chunks.iter().enumerate() {
        let name = format!("{}{i:04}", ExportLayout::chunk_prefix(&snapshot));
        std::fs::write(dir.join(&name), bytes).unwrap();
        entries.push(ChunkEntry {
            name,
            size: bytes.len() as u64,
            sha256: hex(&Sha256::digest(bytes)),
        });
    }
    std::fs::write(dir.join(SHA256SUMS_FILE), sha256sums_text(&entries)).unwrap();
    let manifest = test_manifest(snap, kind, base, entries);
    let json = serde_json::to_vec(&manifest).unwrap();
    std::fs::write(dir.join(MANIFEST_FILE), json).unwrap();
    dir_name
}

/// `len` bytes that neither repeat nor compress (xorshift from `seed`).
pub(crate) fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()[0]
        })
        .collect()
}
