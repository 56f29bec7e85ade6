//! Where exports live: the original tool's directory layout on local disk,
//! which is also the layout on the remote.
//!
//! ```text
//! <intermediate_basedir>/<snap>[-full]/<dataset with / as ->@<snap>.zfs.gpg.0000
//!                                                          ….zfs.gpg.0001
//!                                      SHA256SUMS
//!                                      manifest.json
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::manifest::{Manifest, MANIFEST_FILE};
use super::names::{DatasetName, SnapshotName};
use super::snapshot::ExportKind;

/// Suffix of an export directory that is still being written.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Where exports live on local disk.
#[derive(Debug, Clone)]
pub struct ExportLayout {
    basedir: PathBuf,
}

impl ExportLayout {
    /// Exports under `basedir` (`intermediate_basedir`).
    #[must_use]
    pub fn new(basedir: PathBuf) -> Self {
        Self { basedir }
    }

    /// The base directory.
    #[must_use]
    pub fn basedir(&self) -> &Path {
        &self.basedir
    }

    /// `<snap>-full` or `<snap>`, the original tool's directory names.
    #[must_use]
    pub fn dir_name(snapshot: &SnapshotName, kind: ExportKind) -> String {
        match kind {
            ExportKind::Full => format!("{}-full", snapshot.snap()),
            ExportKind::Incremental => snapshot.snap().to_owned(),
        }
    }

    /// The finished export directory.
    #[must_use]
    pub fn final_dir(&self, snapshot: &SnapshotName, kind: ExportKind) -> PathBuf {
        self.basedir.join(Self::dir_name(snapshot, kind))
    }

    /// The directory an export is written to before it is complete.
    #[must_use]
    pub fn partial_dir(&self, snapshot: &SnapshotName, kind: ExportKind) -> PathBuf {
        self.basedir.join(format!(
            "{}{PARTIAL_SUFFIX}",
            Self::dir_name(snapshot, kind)
        ))
    }

    /// `<dataset with / as ->@<snap>.zfs.gpg.`, to which `0000`… is appended.
    #[must_use]
    pub fn chunk_prefix(snapshot: &SnapshotName) -> String {
        format!(
            "{}@{}.zfs.gpg.",
            snapshot.dataset().dashed(),
            snapshot.snap()
        )
    }

    /// A complete export of `snapshot` (either kind), if one exists: a
    /// directory with the expected name that holds a manifest.
    #[must_use]
    pub fn find_complete(&self, snapshot: &SnapshotName) -> Option<(PathBuf, ExportKind)> {
        [ExportKind::Full, ExportKind::Incremental]
            .into_iter()
            .map(|k| (self.final_dir(snapshot, k), k))
            .find(|(dir, _)| dir.join(MANIFEST_FILE).is_file())
    }

    /// The complete exports of `dataset` under the base directory, oldest
    /// first: directories named like zfs2cloud's exports (`<snap>` or
    /// `<snap>-full`, never `.partial`) holding a manifest for `dataset`.
    /// A missing base directory holds none.
    ///
    /// # Errors
    ///
    /// I/O errors reading the directory.
    pub fn complete_exports(&self, dataset: &DatasetName) -> io::Result<Vec<LocalExport>> {
        let entries = match fs::read_dir(&self.basedir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            let snap = dir_name.strip_suffix("-full").unwrap_or(&dir_name);
            if crate::model::SnapTime::parse(snap).is_none() || !entry.file_type()?.is_dir() {
                continue;
            }
            let dir = entry.path();
            let Ok(manifest) = crate::model::read_manifest(&dir) else {
                continue;
            };
            if manifest.dataset != dataset.as_str() || manifest.snapshot != snap {
                continue;
            }
            let Ok(snapshot) = SnapshotName::new(dataset.clone(), snap) else {
                continue;
            };
            out.push(LocalExport {
                dir,
                dir_name,
                snapshot,
                manifest,
            });
        }
        out.sort_by_key(|e| e.snapshot.own_time());
        Ok(out)
    }
}

/// A complete export on local disk.
#[derive(Debug, Clone)]
pub struct LocalExport {
    /// Its directory.
    pub dir: PathBuf,
    /// The directory's name, which is also its name on the remote.
    pub dir_name: String,
    /// The snapshot it holds.
    pub snapshot: SnapshotName,
    /// Its manifest.
    pub manifest: Manifest,
}

/// `<remote>/<name>`, for remotes written `name:`, `name:path`, `/path`.
#[must_use]
pub fn remote_join(remote: &str, name: &str) -> String {
    if remote.ends_with(':') || remote.ends_with('/') {
        format!("{remote}{name}")
    } else {
        format!("{remote}/{name}")
    }
}
