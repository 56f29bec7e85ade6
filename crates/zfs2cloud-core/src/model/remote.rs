//! What a remote holds, as listed: files, and backup directories.

use super::manifest::Manifest;
use super::snapshot::ExportKind;

/// A file on the remote, as listed by an [`Uploader`](crate::Uploader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// File name inside the listed directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256, where the backend offers it.
    pub sha256: Option<String>,
}

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
