//! Writing one export: the `.partial` directory, the chunks, `SHA256SUMS`
//! and the manifest, and the rename into place once all of it is fsynced.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::SecondsFormat;

use super::pipeline::{write_chunks, ExportStages};
use super::{ExportError, ExportOutcome, ExportSettings, StreamUpload};
use crate::model::remote_join;
use crate::model::{
    sha256sums_text, ChunkEntry, ExportLayout, Manifest, MANIFEST_FILE, MANIFEST_FORMAT,
    SHA256SUMS_FILE,
};
use crate::policy::ExportPlan;
use crate::stages::{compressor_for, Encryptor, Exporter};
use crate::util::Progress;

/// Runs the export pipeline for `plan` and renames the result into place.
///
/// With `stream`, chunks are uploaded as they are sealed (to
/// `<remote>/<dir name>/`). If `stream.keep_local` is false they are
/// deleted once confirmed, and the directory is left as `.partial` with
/// only the manifest and `SHA256SUMS`: the caller uploads those, then
/// removes it. Nothing without its chunks ever looks complete.
///
/// # Errors
///
/// [`ExportError`] naming the failed part; the partial directory is
/// removed.
pub fn write_export(
    exporter: &dyn Exporter,
    encryptor: &dyn Encryptor,
    layout: &ExportLayout,
    plan: &ExportPlan,
    settings: &ExportSettings,
    stream: Option<&StreamUpload<'_>>,
    progress: &dyn Progress,
) -> Result<ExportOutcome, ExportError> {
    let final_dir = layout.final_dir(&plan.snapshot, plan.kind);
    let partial = layout.partial_dir(&plan.snapshot, plan.kind);
    create_partial(layout, &partial)?;
    let remote_dir =
        stream.map(|s| remote_join(s.remote, &ExportLayout::dir_name(&plan.snapshot, plan.kind)));
    let streaming = stream.zip(remote_dir.as_deref());
    let keep_local = stream.is_none_or(|s| s.keep_local);
    let compressor = compressor_for(settings.compression);
    let total = exporter.estimate(&plan.snapshot, plan.base.as_ref());

    let result = ExportStages::start(exporter, compressor.as_deref(), encryptor, plan)
        .and_then(|stages| {
            let shown = (progress, total);
            write_chunks(stages, &partial, plan, settings, streaming, shown)
        })
        .and_then(|(chunks, streamed)| {
            let manifest = write_manifest(&partial, plan, settings, chunks)?;
            fsync_dir(&partial).map_err(write_error(&partial))?;
            if !keep_local {
                return Ok((partial.clone(), manifest, streamed));
            }
            fs::rename(&partial, &final_dir).map_err(write_error(&final_dir))?;
            fsync_dir(layout.basedir()).map_err(write_error(layout.basedir()))?;
            Ok((final_dir.clone(), manifest, streamed))
        });
    match result {
        Ok((dir, manifest, streamed)) => Ok(ExportOutcome {
            dir,
            manifest,
            streamed,
        }),
        Err(e) => {
            remove_partial(&partial);
            Err(e)
        }
    }
}

/// The export error for an I/O failure on `path`.
fn write_error(path: &Path) -> impl FnOnce(io::Error) -> ExportError {
    let path = path.to_owned();
    move |source| ExportError::Write { path, source }
}

/// Creates the empty `.partial` directory (and the base directory),
/// replacing one left by a killed run of this same export.
fn create_partial(layout: &ExportLayout, partial: &Path) -> Result<(), ExportError> {
    create_private_dir(layout.basedir(), true).map_err(write_error(layout.basedir()))?;
    if partial.exists() {
        // Left by a killed run of this same export; never complete.
        log::warn!("removing stale partial export {}", partial.display());
        fs::remove_dir_all(partial).map_err(write_error(partial))?;
    }
    create_private_dir(partial, false).map_err(write_error(partial))
}

/// Removes a partial export; a failure is only logged, as the error that
/// led here is the one to report.
pub(super) fn remove_partial(partial: &Path) {
    if let Err(rm) = fs::remove_dir_all(partial) {
        if rm.kind() != io::ErrorKind::NotFound {
            log::warn!("could not remove {}: {rm}", partial.display());
        }
    }
}

/// Writes `SHA256SUMS` and then `manifest.json` for `chunks` into `dir`,
/// each fsynced.
fn write_manifest(
    dir: &Path,
    plan: &ExportPlan,
    settings: &ExportSettings,
    chunks: Vec<ChunkEntry>,
) -> Result<Manifest, ExportError> {
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        tool: "zfs2cloud".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        dataset: plan.snapshot.dataset().to_string(),
        snapshot: plan.snapshot.snap().to_owned(),
        kind: plan.kind,
        base: plan.base.as_ref().map(|b| b.snap().to_owned()),
        level: Some(plan.level),
        created_at: settings
            .created_at
            .to_rfc3339_opts(SecondsFormat::Secs, true),
        encryption: settings.encryption.manifest_name().into(),
        compression: settings.compression.compression.as_str().into(),
        split_size: settings.split_size,
        total_size: chunks.iter().map(|c| c.size).sum(),
        chunks,
        send_flags: settings.send_flags.clone(),
        recipients: settings.recipients.clone(),
    };
    let write_file = |name: &str, bytes: &[u8]| {
        let path: PathBuf = dir.join(name);
        write_private_file(&path, bytes).map_err(|source| ExportError::Write { path, source })
    };
    write_file(
        SHA256SUMS_FILE,
        sha256sums_text(&manifest.chunks).as_bytes(),
    )?;
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ExportError::Write {
        path: dir.join(MANIFEST_FILE),
        source: io::Error::other(e),
    })?;
    write_file(MANIFEST_FILE, &json)?;
    Ok(manifest)
}

/// Creates `path` (which must not exist) readable by its owner only.
pub(super) fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn create_private_dir(path: &Path, recursive: bool) -> io::Result<()> {
    DirBuilder::new()
        .recursive(recursive)
        .mode(0o700)
        .create(path)
}

fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut f = create_private_file(path)?;
    f.write_all(contents)?;
    f.sync_all()
}
