//! Intermediate-mode export: `zfs send [-i base] | gpg | split`, run as one
//! pipeline inside the program, into the original tool's layout:
//!
//! ```text
//! <intermediate_basedir>/<snap>[-full]/<dataset with / as ->@<snap>.zfs.gpg.0000
//!                                                          ….zfs.gpg.0001
//!                                      SHA256SUMS
//!                                      manifest.json
//! ```
//!
//! The chunks together are ONE gpg message, so
//! `cat <chunks> | gpg --decrypt | zfs recv` restores with stock tools.
//!
//! The export is written to `<dir>.partial` and renamed into place only
//! after every process in the pipeline exited 0 and every file and the
//! directory are fsynced. A failed or killed export never leaves anything
//! that looks complete. Directories are created 0700 and files 0600.

mod stream_upload;

pub use stream_upload::{StreamReport, StreamUpload};

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use crate::stages::zstd_compress;

use crate::model::remote_join;
use crate::model::DatasetName;
use crate::model::ExportKind;
use crate::model::SnapshotName;
use crate::model::{
    hex, sha256sums_text, ChunkEntry, ExportLayout, LocalExport, Manifest, MANIFEST_FILE,
    MANIFEST_FORMAT, SHA256SUMS_FILE,
};
use crate::model::{upload_record, SnapshotInfo, HOLD_TAG, PROP_BASE, PROP_KIND, PROP_UPLOADED};
use crate::model::{Compression, CompressionSettings};
use crate::ops::upload::{upload_export, UploadStepError};
use crate::policy::{plan_export, ExportPlan, PlanError};
use crate::process::Runner;
use crate::process::{terminate_pid, CancelToken, Finished, ProcessError, RunningProcess};
use crate::stages::GpgError;
use crate::stages::ZfsError;
use crate::stages::{Encryptor, Exporter, Snapshotter};
use crate::util::Progress;
use stream_upload::{ChunkQueue, SealedChunk, Stopped};

/// `split -a 4`: chunk suffixes are four digits, so that a shell glob lists
/// the chunks in order.
const MAX_CHUNKS: usize = 10_000;
/// Read size from gpg; large enough that syscalls cost nothing next to gpg.
const READ_BUFFER: usize = 1 << 20;

/// Errors of the export stage.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// `zfs send` could not start or failed (e.g. died mid-stream).
    #[error("zfs send failed")]
    Send(#[source] ZfsError),
    /// gpg could not start or failed.
    #[error("gpg encryption failed")]
    Encrypt(#[source] GpgError),
    /// Writing the chunks failed (disk full, permissions).
    #[error("writing the export to {} failed", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The run was interrupted; the pipeline was stopped and the partial
    /// export removed.
    #[error("interrupted; the partial export was removed")]
    Interrupted,
    /// The stream needs more than 10000 chunks.
    #[error(
        "the export needs more than {MAX_CHUNKS} chunks of {split_size} bytes; raise split_size"
    )]
    TooManyChunks {
        /// The configured chunk size.
        split_size: u64,
    },
    /// Listing the dataset's snapshots failed.
    #[error("cannot list the snapshots of the dataset")]
    List(#[source] ZfsError),
    /// Nothing (valid) to export.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Recording the export in the pool (properties, hold) failed.
    #[error("the export was written, but recording it on the snapshot failed")]
    Record(#[source] ZfsError),
    /// zstd failed (not because gpg went away: that is gpg's error).
    #[error("zstd compression failed")]
    Compress(#[source] io::Error),
    /// Uploading while exporting failed for good, so the export stopped.
    /// The remote copy has no manifest: it counts as incomplete, and the
    /// next run starts a fresh backup.
    #[error(
        "uploading while exporting failed; the remote copy of this backup is not confirmed (it \
         has no manifest unless every chunk was confirmed), and the next run starts afresh"
    )]
    Upload(#[source] UploadStepError),
}

/// Splits a byte stream into numbered chunk files, hashing each in the same
/// pass that writes it. With a [`ChunkQueue`], each sealed chunk is handed
/// to the upload workers, and a new chunk file is only created once the
/// queue has room for it on disk.
struct ChunkWriter<'q> {
    dir: PathBuf,
    prefix: String,
    split_size: u64,
    current: Option<OpenChunk>,
    done: Vec<ChunkEntry>,
    queue: Option<&'q ChunkQueue>,
    cancel: CancelToken,
    /// Where sealed chunks go to be fsynced (and then queued for upload)
    /// off the reading thread; `None`: fsync inline.
    syncer: Option<SyncSender<ToSync>>,
}

/// A written chunk on its way to the syncer thread.
struct ToSync {
    file: File,
    chunk: SealedChunk,
}

/// The syncer thread: fsyncs each sealed chunk in order, then hands it to
/// the upload queue. The fsync of one 256 MiB chunk can take a second; here
/// it overlaps with writing the next one instead of stalling the pipeline.
/// The channel holds one chunk, so the writer is at most one chunk ahead.
fn sync_chunks(chunks: Receiver<ToSync>, queue: Option<&ChunkQueue>) -> Result<(), ExportError> {
    for ToSync { file, chunk } in chunks {
        file.sync_all().map_err(|source| ExportError::Write {
            path: chunk.path.clone(),
            source,
        })?;
        drop(file);
        if let Some(queue) = queue {
            queue.push(chunk);
        }
    }
    Ok(())
}

struct OpenChunk {
    file: File,
    name: String,
    hasher: Sha256,
    written: u64,
}

/// The writer's error when the upload workers gave up; replaced by their
/// error once they have stopped.
fn upload_stopped() -> ExportError {
    ExportError::Upload(UploadStepError::Interrupted)
}

fn create_private_file(path: &Path) -> io::Result<File> {
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

impl<'q> ChunkWriter<'q> {
    fn new(
        dir: PathBuf,
        prefix: String,
        split_size: u64,
        queue: Option<&'q ChunkQueue>,
        cancel: CancelToken,
        syncer: Option<SyncSender<ToSync>>,
    ) -> Self {
        Self {
            dir,
            prefix,
            split_size,
            current: None,
            done: Vec::new(),
            queue,
            cancel,
            syncer,
        }
    }

    fn write_err(&self, name: &str, source: io::Error) -> ExportError {
        ExportError::Write {
            path: self.dir.join(name),
            source,
        }
    }

    /// Seals the open chunk: records its size and hash, and has it fsynced
    /// (by the syncer thread if there is one) and then queued for upload.
    fn seal(&mut self) -> Result<(), ExportError> {
        if let Some(chunk) = self.current.take() {
            let entry = ChunkEntry {
                name: chunk.name,
                size: chunk.written,
                sha256: hex(&chunk.hasher.finalize()),
            };
            let sealed = SealedChunk {
                path: self.dir.join(&entry.name),
                name: entry.name.clone(),
                size: entry.size,
                sha256: entry.sha256.clone(),
            };
            match &self.syncer {
                Some(syncer) => {
                    let sent = syncer.send(ToSync {
                        file: chunk.file,
                        chunk: sealed,
                    });
                    if sent.is_err() {
                        // The syncer stopped on an error; its result says which.
                        return Err(self.write_err(&entry.name, io::Error::other("fsync failed")));
                    }
                }
                None => {
                    chunk
                        .file
                        .sync_all()
                        .map_err(|e| self.write_err(&entry.name, e))?;
                    if let Some(queue) = self.queue {
                        queue.push(sealed);
                    }
                }
            }
            self.done.push(entry);
        }
        Ok(())
    }

    fn open_next(&self) -> Result<OpenChunk, ExportError> {
        if self.done.len() >= MAX_CHUNKS {
            return Err(ExportError::TooManyChunks {
                split_size: self.split_size,
            });
        }
        if let Some(queue) = self.queue {
            // Blocks while the disk bound is reached: the backpressure.
            queue
                .reserve_file(&self.cancel)
                .map_err(|stopped| match stopped {
                    Stopped::UploadFailed => upload_stopped(),
                    Stopped::Interrupted => ExportError::Interrupted,
                })?;
        }
        let name = format!("{}{:04}", self.prefix, self.done.len());
        let file =
            create_private_file(&self.dir.join(&name)).map_err(|e| self.write_err(&name, e))?;
        Ok(OpenChunk {
            file,
            name,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    fn write(&mut self, mut buf: &[u8]) -> Result<(), ExportError> {
        while !buf.is_empty() {
            if self
                .current
                .as_ref()
                .is_some_and(|c| c.written == self.split_size)
            {
                self.seal()?;
            }
            if self.current.is_none() {
                let chunk = self.open_next()?;
                self.current = Some(chunk);
            }
            let Some(chunk) = self.current.as_mut() else {
                continue;
            };
            let room = usize::try_from(self.split_size - chunk.written).unwrap_or(usize::MAX);
            let (now, rest) = buf.split_at(room.min(buf.len()));
            if let Err(e) = chunk.file.write_all(now) {
                let name = chunk.name.clone();
                return Err(self.write_err(&name, e));
            }
            chunk.hasher.update(now);
            chunk.written += now.len() as u64;
            buf = rest;
        }
        Ok(())
    }

    /// Reads `input` to EOF into chunks, giving up when `cancel` is set.
    fn copy_from(
        &mut self,
        input: &mut impl Read,
        progress: &dyn Progress,
        cancel: &CancelToken,
    ) -> Result<(), ExportError> {
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            if cancel.is_cancelled() {
                return Err(ExportError::Interrupted);
            }
            if self.queue.is_some_and(ChunkQueue::is_aborted) {
                return Err(upload_stopped());
            }
            let n = match input.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.write_err("<pipeline>", e)),
            };
            self.write(&buf[..n])?;
            progress.advance(n as u64);
        }
    }

    fn finish(mut self) -> Result<Vec<ChunkEntry>, ExportError> {
        self.seal()?;
        Ok(self.done)
    }
}

fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut f = create_private_file(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Settings for one export.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// Chunk size in bytes.
    pub split_size: u64,
    /// Recorded as the manifest's `created_at`.
    pub created_at: DateTime<Utc>,
    /// Stops the pipeline when set (SIGINT/SIGTERM).
    pub cancel: CancelToken,
    /// Compression before encryption.
    pub compression: CompressionSettings,
}

/// A finished export.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// The export directory: the complete one, or, when the chunks were
    /// uploaded and deleted while exporting, the partial one that holds
    /// only the manifest and `SHA256SUMS` until the upload is confirmed.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// What the upload workers did, for a pipelined export.
    pub streamed: Option<StreamReport>,
}

/// Picks the error that explains a failed pipeline: our own I/O error
/// first, then the most downstream failed part. When gpg dies, zstd and
/// `zfs send` also fail (broken pipe), but gpg is the cause; when `zfs send`
/// dies mid-stream, the parts after it see a clean end of input and exit 0,
/// so only `zfs send` failed.
fn pipeline_error(
    copy: Result<(), ExportError>,
    compress: Option<io::Result<u64>>,
    send: Finished,
    gpg: Finished,
) -> Result<(), ExportError> {
    copy?;
    let send_result = send.into_result();
    gpg.into_result()
        .map_err(|e| ExportError::Encrypt(GpgError::Process(e)))?;
    if let Some(Err(e)) = compress {
        return Err(ExportError::Compress(e));
    }
    send_result.map_err(|e| ExportError::Send(ZfsError::Process(e)))
}

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
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Write { path, source }
    };
    create_private_dir(layout.basedir(), true).map_err(io_err(layout.basedir()))?;
    if partial.exists() {
        // Left by a killed run of this same export; never complete.
        log::warn!("removing stale partial export {}", partial.display());
        fs::remove_dir_all(&partial).map_err(io_err(&partial))?;
    }
    create_private_dir(&partial, false).map_err(io_err(&partial))?;
    let remote_dir =
        stream.map(|s| remote_join(s.remote, &ExportLayout::dir_name(&plan.snapshot, plan.kind)));
    let streaming = stream.zip(remote_dir.as_deref());
    let keep_local = stream.is_none_or(|s| s.keep_local);

    let result = run_pipeline(
        exporter, encryptor, &partial, plan, settings, streaming, progress,
    )
    .and_then(|(manifest, streamed)| {
        fsync_dir(&partial).map_err(io_err(&partial))?;
        if !keep_local {
            return Ok((partial.clone(), manifest, streamed));
        }
        fs::rename(&partial, &final_dir).map_err(io_err(&final_dir))?;
        fsync_dir(layout.basedir()).map_err(io_err(layout.basedir()))?;
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

fn remove_partial(partial: &Path) {
    if let Err(rm) = fs::remove_dir_all(partial) {
        if rm.kind() != io::ErrorKind::NotFound {
            log::warn!("could not remove {}: {rm}", partial.display());
        }
    }
}

/// Starts `zfs send`, and gpg reading either its stdout directly or, with
/// compression, a pipe that the caller feeds through zstd. Returns the two
/// processes, the send stream for zstd, and gpg's stdin for zstd.
fn start_processes(
    exporter: &dyn Exporter,
    encryptor: &dyn Encryptor,
    plan: &ExportPlan,
    compression: Compression,
) -> Result<
    (
        RunningProcess,
        RunningProcess,
        Option<ChildStdout>,
        Option<ChildStdin>,
    ),
    ExportError,
> {
    let mut send = exporter
        .send(&plan.snapshot, plan.base.as_ref())
        .map_err(ExportError::Send)?;
    let send_out = send.take_stdout().ok_or_else(|| {
        ExportError::Send(ZfsError::Process(ProcessError::Io {
            command: send.command().to_owned(),
            source: io::Error::other("zfs send has no stdout pipe"),
        }))
    })?;
    let gpg_pipe_err = |gpg: &RunningProcess, what: &str| {
        ExportError::Encrypt(GpgError::Process(ProcessError::Io {
            command: gpg.command().to_owned(),
            source: io::Error::other(format!("gpg has no {what} pipe")),
        }))
    };
    // If gpg cannot start, `send` is dropped here, which kills and reaps it.
    Ok(match compression {
        Compression::None => {
            let gpg = encryptor
                .encrypt(Stdio::from(send_out))
                .map_err(ExportError::Encrypt)?;
            (send, gpg, None, None)
        }
        Compression::Zstd => {
            let mut gpg = encryptor
                .encrypt(Stdio::piped())
                .map_err(ExportError::Encrypt)?;
            let gpg_in = gpg
                .take_stdin()
                .ok_or_else(|| gpg_pipe_err(&gpg, "stdin"))?;
            (send, gpg, Some(send_out), Some(gpg_in))
        }
    })
}

fn run_pipeline(
    exporter: &dyn Exporter,
    encryptor: &dyn Encryptor,
    dir: &Path,
    plan: &ExportPlan,
    settings: &ExportSettings,
    stream: Option<(&StreamUpload<'_>, &str)>,
    progress: &dyn Progress,
) -> Result<(Manifest, Option<StreamReport>), ExportError> {
    let (mut send, mut gpg, send_out, gpg_in) =
        start_processes(exporter, encryptor, plan, settings.compression.compression)?;
    let mut gpg_out = gpg.take_stdout().ok_or_else(|| {
        ExportError::Encrypt(GpgError::Process(ProcessError::Io {
            command: gpg.command().to_owned(),
            source: io::Error::other("gpg has no stdout pipe"),
        }))
    })?;

    let queue = stream.map(|(s, _)| ChunkQueue::new(s.disk_limit()));
    let (to_sync, syncing) = std::sync::mpsc::sync_channel(1);
    let mut writer = ChunkWriter::new(
        dir.to_owned(),
        ExportLayout::chunk_prefix(&plan.snapshot),
        settings.split_size,
        queue.as_ref(),
        settings.cancel.clone(),
        Some(to_sync),
    );
    progress.begin(&format!("exporting {}", plan.snapshot), None);
    let what = plan.snapshot.to_string();
    let cancel = &settings.cancel;
    let pids = [send.id(), gpg.id()];
    let finished = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        // A read blocked on a stalled pipe cannot look at the cancel flag,
        // so a watcher stops both processes on interruption; our read then
        // sees EOF.
        scope.spawn(|| {
            while !finished.load(AtomicOrdering::SeqCst) {
                if cancel.is_cancelled() {
                    pids.iter().copied().for_each(terminate_pid);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let compressor = send_out.zip(gpg_in).map(|(mut input, output)| {
            let level = settings.compression.level;
            scope.spawn(move || zstd_compress(&mut input, output, level, &|| cancel.is_cancelled()))
        });
        let queue_ref = queue.as_ref();
        let syncer = scope.spawn(move || sync_chunks(syncing, queue_ref));
        let workers: Vec<_> = match (stream, &queue) {
            (Some((s, remote_dir)), Some(q)) => (0..s.concurrency.max(1))
                .map(|_| {
                    let what = &what;
                    scope.spawn(move || q.work(s, remote_dir, what, cancel))
                })
                .collect(),
            _ => Vec::new(),
        };

        let copied = writer.copy_from(&mut gpg_out, progress, cancel);
        if copied.is_err() {
            // We stop reading; make sure neither side blocks forever.
            gpg.kill();
            send.kill();
        }
        let gpg_done = gpg.wait();
        let send_done = send.wait();
        let compressed = compressor.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("the zstd thread panicked")))
        });
        finished.store(true, AtomicOrdering::SeqCst);
        let result = if cancel.is_cancelled() {
            Err(ExportError::Interrupted)
        } else {
            pipeline_error(copied, compressed, send_done, gpg_done)
        };
        // Only a stream that ended cleanly seals its last chunk. The writer
        // goes either way, and with it the syncer's channel.
        let result = result.and_then(|()| writer.finish());
        let synced = syncer.join().unwrap_or_else(|_| {
            Err(ExportError::Write {
                path: dir.to_owned(),
                source: io::Error::other("the fsync thread panicked"),
            })
        });
        let result = match (result, synced) {
            (Ok(chunks), Ok(())) => Ok(chunks),
            // The syncer's error is the cause of the writer's.
            (Ok(_) | Err(ExportError::Write { .. }), Err(e)) => Err(e),
            (Err(e), _) => Err(e),
        };
        if let Some(q) = &queue {
            if result.is_ok() {
                q.close();
            } else {
                q.abort();
            }
        }
        for worker in workers {
            if worker.join().is_err() {
                log::error!("an upload worker panicked");
                if let Some(q) = &queue {
                    q.abort();
                }
            }
        }
        result
    });
    progress.end();
    drop(gpg_out);
    if settings.cancel.is_cancelled() {
        // The workers' uploads were stopped by the same interruption.
        return Err(ExportError::Interrupted);
    }
    let streamed = match queue.map(ChunkQueue::finish) {
        None => None,
        // The workers' failure is the cause of whatever the writer saw.
        Some(Err(failure)) => return Err(ExportError::Upload(failure)),
        Some(Ok(report)) => Some(report),
    };
    let chunks = outcome?;
    if let Some(report) = &streamed {
        if report.confirmed.len() != chunks.len() {
            // Cannot happen with a closed queue; checked because a manifest
            // over unconfirmed chunks would be a lie.
            return Err(ExportError::Upload(UploadStepError::NotConfirmed {
                snapshot: what,
                reason: format!(
                    "{} of {} chunks confirmed",
                    report.confirmed.len(),
                    chunks.len()
                ),
            }));
        }
        log::info!(
            "{}: {} chunks uploaded while exporting; at most {} on local disk at once",
            plan.snapshot,
            chunks.len(),
            report.peak_chunks_on_disk
        );
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        tool: "zfs2cloud".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        dataset: plan.snapshot.dataset().to_string(),
        snapshot: plan.snapshot.snap().to_owned(),
        kind: plan.kind,
        base: plan.base.as_ref().map(|b| b.snap().to_owned()),
        created_at: settings
            .created_at
            .to_rfc3339_opts(SecondsFormat::Secs, true),
        encryption: "gpg-symmetric-aes256".into(),
        compression: settings.compression.compression.as_str().into(),
        split_size: settings.split_size,
        total_size: chunks.iter().map(|c| c.size).sum(),
        chunks,
    };
    let write_file = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
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
    Ok((manifest, streamed))
}

/// Records a finished export in the pool, where it survives the loss of
/// `intermediate_basedir`:
///
/// * [`PROP_KIND`] (and [`PROP_BASE`] for an incremental) on the snapshot;
/// * for a full: a [`HOLD_TAG`] hold on it, so nothing (not even a manual
///   `zfs destroy`) removes the base while incrementals depend on it, and
///   then the release of that hold from every older full it replaces. The
///   new hold is placed before old ones are released, so a base is held at
///   every moment.
///
/// # Errors
///
/// [`ZfsError`] from setting the property or the hold. Releasing an old
/// hold that is already gone is not an error.
pub fn record_export(
    snapshotter: &dyn Snapshotter,
    snapshots: &[SnapshotInfo],
    plan: &ExportPlan,
) -> Result<(), ZfsError> {
    let target = snapshots.iter().find(|s| s.name == plan.snapshot);
    // A new export of this snapshot is not uploaded, whatever an earlier
    // one was: drop any old confirmation first.
    if target.is_some_and(|s| s.uploaded.is_some()) {
        snapshotter.clear_property(&plan.snapshot, PROP_UPLOADED)?;
    }
    snapshotter.set_property(&plan.snapshot, PROP_KIND, plan.kind.as_str())?;
    if let Some(base) = &plan.base {
        snapshotter.set_property(&plan.snapshot, PROP_BASE, base.snap())?;
    }
    if plan.kind != ExportKind::Full {
        // Re-exported as an incremental: it is no base any more.
        if target.is_some_and(|s| s.userrefs > 0) {
            match snapshotter.release(&plan.snapshot, HOLD_TAG) {
                Ok(()) | Err(ZfsError::NoSuchTag { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    }
    match snapshotter.hold(&plan.snapshot, HOLD_TAG) {
        Ok(()) | Err(ZfsError::TagExists { .. }) => {}
        Err(e) => return Err(e),
    }
    // Only fulls older than this one: exporting an old snapshot as a full
    // (`export --full --snapshot`) must not unprotect the current base.
    let older_fulls = snapshots.iter().filter(|s| {
        s.name != plan.snapshot
            && s.kind == Some(ExportKind::Full)
            && s.own_time()
                .is_some_and(|t| Some(t) < plan.snapshot.own_time())
            && s.userrefs > 0
    });
    for old in older_fulls {
        match snapshotter.release(&old.name, HOLD_TAG) {
            Ok(()) => log::info!(
                "released hold {HOLD_TAG:?} from the previous full {}",
                old.name
            ),
            Err(ZfsError::NoSuchTag { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What the `export` command was asked to do.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// A snapshot name (part after `@`), or `None` for the newest of
    /// zfs2cloud's own snapshots.
    pub target: Option<String>,
    /// `--full` / `--incremental`.
    pub force: Option<ExportKind>,
    /// From the config.
    pub full_every_x_days: u32,
    /// The configured remote: a full is a base for incrementals only if its
    /// upload to this remote is confirmed (or its export is still local).
    pub remote: String,
    /// Chunk size and timestamp.
    pub settings: ExportSettings,
}

/// What the `export` step did.
#[derive(Debug, Clone)]
pub enum ExportStepOutcome {
    /// A new export was written and recorded.
    Exported {
        /// What was exported and why.
        plan: ExportPlan,
        /// Where, and its manifest.
        outcome: Box<ExportOutcome>,
    },
    /// A complete export of the snapshot exists already; nothing was done.
    AlreadyExported {
        /// The snapshot.
        snapshot: SnapshotName,
        /// The existing export.
        dir: PathBuf,
    },
    /// Dry run: the pipeline and state changes were reported, not run.
    DryRun {
        /// What would be exported and why.
        plan: ExportPlan,
        /// Where it would go.
        dir: PathBuf,
    },
}

/// The `export` step: plan, run the pipeline, record the result in the pool.
///
/// A snapshot that already has a complete local export is not exported
/// again (remove its directory to force that).
///
/// # Errors
///
/// [`ExportError`] saying which part failed.
#[allow(clippy::too_many_arguments)]
pub fn export_step(
    snapshotter: &dyn Snapshotter,
    exporter: &dyn Exporter,
    encryptor: &dyn Encryptor,
    runner: &Runner,
    layout: &ExportLayout,
    dataset: &DatasetName,
    request: &ExportRequest,
    stream: Option<&StreamUpload<'_>>,
    progress: &dyn Progress,
) -> Result<ExportStepOutcome, ExportError> {
    let snapshots = snapshotter.list(dataset).map_err(ExportError::List)?;
    // A full may carry incrementals once its upload is confirmed, or while
    // its complete export waits on local disk for the upload step (which
    // sends a base before anything based on it).
    let base_usable = |s: &SnapshotInfo| {
        s.uploaded_to(&request.remote) || layout.find_complete(&s.name).is_some()
    };
    let plan = plan_export(
        &snapshots,
        request.target.as_deref(),
        request.full_every_x_days,
        request.force,
        &base_usable,
    )?;
    if let Some((dir, kind)) = layout.find_complete(&plan.snapshot) {
        // A run that died between the rename and recording it left the
        // export unrecorded; record it now (idempotent), from what the
        // export actually is.
        let target = snapshots.iter().find(|s| s.name == plan.snapshot);
        if target.is_some_and(|s| s.kind != Some(kind)) {
            let manifest =
                crate::model::read_manifest(&dir).map_err(|source| ExportError::Write {
                    path: dir.clone(),
                    source,
                })?;
            let recorded = ExportPlan {
                snapshot: plan.snapshot.clone(),
                kind,
                base: manifest
                    .base
                    .as_deref()
                    .and_then(|b| SnapshotName::new(dataset.clone(), b).ok()),
                reason: "recording an export found complete on disk".into(),
            };
            log::warn!(
                "{}: recording the complete export found at {}",
                plan.snapshot,
                dir.display()
            );
            record_export(snapshotter, &snapshots, &recorded).map_err(ExportError::Record)?;
        }
        return Ok(ExportStepOutcome::AlreadyExported {
            snapshot: plan.snapshot,
            dir,
        });
    }
    log::info!("{}: {}", plan.snapshot, plan.reason);
    // An incremental may go up while exporting only if its base is
    // already confirmed on the remote; otherwise the upload step must send
    // the base first, and this export waits on disk for it.
    let stream = stream.filter(|s| {
        let base_uploaded = plan.base.as_ref().is_none_or(|b| {
            snapshots
                .iter()
                .any(|i| &i.name == b && i.uploaded_to(s.remote))
        });
        if !base_uploaded {
            log::warn!(
                "{}: its base is not confirmed on {} yet, so it is exported to local disk in full \
                 and left to the upload step (not uploaded while exporting)",
                plan.snapshot,
                s.remote
            );
        }
        base_uploaded
    });
    let dir = layout.final_dir(&plan.snapshot, plan.kind);
    let compression = match request.settings.compression.compression {
        Compression::None => String::new(),
        Compression::Zstd => format!(
            " | zstd -{} (in process)",
            request.settings.compression.level
        ),
    };
    let mut pipeline = format!(
        "{}{compression} | {} | split into {}/{}0000, … ({} bytes each)",
        exporter.describe(&plan.snapshot, plan.base.as_ref()),
        encryptor.describe(),
        layout.partial_dir(&plan.snapshot, plan.kind).display(),
        ExportLayout::chunk_prefix(&plan.snapshot),
        request.settings.split_size,
    );
    if let Some(s) = stream {
        pipeline.push_str(&format!(
            ", uploading each sealed chunk to {} ({} at once){}, then SHA256SUMS and \
             manifest.json last",
            remote_join(s.remote, &ExportLayout::dir_name(&plan.snapshot, plan.kind)),
            s.concurrency,
            if s.keep_local {
                ""
            } else {
                " and deleting it once confirmed"
            },
        ));
    }
    if stream.is_none_or(|s| s.keep_local) {
        pipeline.push_str(&format!(", then rename to {}", dir.display()));
    }
    if runner.skip_in_dry_run(&pipeline) {
        // The snapshotter runs with the same dry-run runner, so this only
        // reports the `zfs set` / `zfs hold` / `zfs release` it would run.
        record_export(snapshotter, &snapshots, &plan).map_err(ExportError::Record)?;
        return Ok(ExportStepOutcome::DryRun { plan, dir });
    }
    let outcome = write_export(
        exporter,
        encryptor,
        layout,
        &plan,
        &request.settings,
        stream,
        progress,
    )?;
    match stream {
        None => record_export(snapshotter, &snapshots, &plan).map_err(ExportError::Record)?,
        Some(s) => finish_streamed(
            snapshotter,
            &snapshots,
            &plan,
            &outcome,
            s,
            &request.settings.cancel,
        )?,
    }
    Ok(ExportStepOutcome::Exported {
        plan,
        outcome: Box::new(outcome),
    })
}

/// Completes a pipelined export: `SHA256SUMS` and the manifest go last,
/// after the remote listing holds every chunk, then the upload is recorded
/// on the snapshot. Without a local copy, the export is recorded only once
/// the remote is complete, and the local directory (manifest and sums) is
/// removed either way.
fn finish_streamed(
    snapshotter: &dyn Snapshotter,
    snapshots: &[SnapshotInfo],
    plan: &ExportPlan,
    outcome: &ExportOutcome,
    stream: &StreamUpload<'_>,
    cancel: &CancelToken,
) -> Result<(), ExportError> {
    let dir_name = ExportLayout::dir_name(&plan.snapshot, plan.kind);
    let remote_dir = remote_join(stream.remote, &dir_name);
    let local = LocalExport {
        dir: outcome.dir.clone(),
        dir_name: dir_name.clone(),
        snapshot: plan.snapshot.clone(),
        manifest: outcome.manifest.clone(),
    };
    let confirmed = outcome
        .streamed
        .as_ref()
        .map(|r| r.confirmed.clone())
        .unwrap_or_default();
    let result = (|| {
        if stream.keep_local {
            // The local export is complete: record it as any export, so
            // the upload step can finish the job if this fails.
            record_export(snapshotter, snapshots, plan).map_err(ExportError::Record)?;
        }
        upload_export(
            stream.uploader,
            &local,
            &remote_dir,
            &stream.retry,
            cancel,
            true,
            &confirmed,
        )
        .map_err(ExportError::Upload)?;
        if !stream.keep_local {
            record_export(snapshotter, snapshots, plan).map_err(ExportError::Record)?;
        }
        let record = upload_record(
            &stream.now.to_rfc3339_opts(SecondsFormat::Secs, true),
            &dir_name,
            stream.remote,
        );
        snapshotter
            .set_property(&plan.snapshot, PROP_UPLOADED, &record)
            .map_err(ExportError::Record)
    })();
    if !stream.keep_local {
        remove_partial(&outcome.dir);
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::stages::MockSnapshotter;
    use mockall::predicate::{always, eq};
    use mockall::Sequence;
    use std::os::unix::fs::PermissionsExt;

    fn sn(s: &str) -> SnapshotName {
        SnapshotName::parse(&format!("tank/data@{s}")).unwrap()
    }

    fn info(s: &str, kind: Option<ExportKind>, userrefs: u64) -> SnapshotInfo {
        SnapshotInfo {
            name: sn(s),
            userrefs,
            kind,
            base: None,
            uploaded: None,
        }
    }

    #[test]
    fn layout_matches_the_original_tool() {
        let snap = SnapshotName::parse("tank/app/db@20240101000000").unwrap();
        let layout = ExportLayout::new("/x".into());
        assert_eq!(
            layout.final_dir(&snap, ExportKind::Full),
            Path::new("/x/20240101000000-full")
        );
        assert_eq!(
            layout.final_dir(&snap, ExportKind::Incremental),
            Path::new("/x/20240101000000")
        );
        assert_eq!(
            ExportLayout::chunk_prefix(&snap),
            "tank-app-db@20240101000000.zfs.gpg."
        );
        assert_eq!(
            layout.partial_dir(&snap, ExportKind::Full),
            Path::new("/x/20240101000000-full.partial")
        );
    }

    #[test]
    fn chunk_writer_splits_exactly_and_hashes_each_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = ChunkWriter::new(
            dir.path().to_owned(),
            "p.".into(),
            4096,
            None,
            CancelToken::new(),
            None,
        );
        // Odd write sizes cross chunk boundaries mid-buffer.
        for piece in data.chunks(1000) {
            w.write(piece).unwrap();
        }
        let chunks = w.finish().unwrap();
        let sizes: Vec<u64> = chunks.iter().map(|c| c.size).collect();
        assert_eq!(sizes, [4096, 4096, 1808]);
        assert_eq!(chunks[2].name, "p.0002");
        let mut joined = Vec::new();
        for c in &chunks {
            let bytes = fs::read(dir.path().join(&c.name)).unwrap();
            assert_eq!(hex(&Sha256::digest(&bytes)), c.sha256);
            let mode = fs::metadata(dir.path().join(&c.name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            joined.extend(bytes);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn an_exact_multiple_makes_no_empty_trailing_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ChunkWriter::new(
            dir.path().to_owned(),
            "p.".into(),
            1024,
            None,
            CancelToken::new(),
            None,
        );
        w.write(&[1u8; 2048]).unwrap();
        assert_eq!(w.finish().unwrap().len(), 2);
    }

    #[test]
    fn sha256sums_is_sha256sum_format() {
        let c = ChunkEntry {
            name: "a@1.zfs.gpg.0000".into(),
            size: 1,
            sha256: "ab".repeat(32),
        };
        assert_eq!(
            sha256sums_text(&[c]),
            format!("{}  a@1.zfs.gpg.0000\n", "ab".repeat(32))
        );
    }

    #[test]
    fn recording_a_full_holds_it_before_releasing_older_fulls() {
        let plan = ExportPlan {
            snapshot: sn("20240205000000"),
            kind: ExportKind::Full,
            base: None,
            reason: String::new(),
        };
        let snaps = [
            info("20231201000000", Some(ExportKind::Full), 0),
            info("20240101000000", Some(ExportKind::Full), 1),
            info("20240102000000", Some(ExportKind::Incremental), 0),
            info("manual", Some(ExportKind::Full), 1),
            info("20240205000000", None, 0),
        ];
        let mut mock = MockSnapshotter::new();
        let mut seq = Sequence::new();
        mock.expect_set_property()
            .with(eq(sn("20240205000000")), eq(PROP_KIND), eq("full"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));
        mock.expect_hold()
            .with(eq(sn("20240205000000")), eq(HOLD_TAG))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        // Only the held own full is released; the foreign "manual" one and
        // the unheld 2023 one are left alone.
        mock.expect_release()
            .with(eq(sn("20240101000000")), eq(HOLD_TAG))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        record_export(&mock, &snaps, &plan).unwrap();
    }

    #[test]
    fn re_recording_drops_an_old_upload_confirmation_first() {
        let plan = ExportPlan {
            snapshot: sn("20240103000000"),
            kind: ExportKind::Full,
            base: None,
            reason: String::new(),
        };
        let mut target = info("20240103000000", Some(ExportKind::Incremental), 0);
        target.uploaded = Some("2024-01-03T00:00:00Z 20240103000000 r:x".into());
        let mut mock = MockSnapshotter::new();
        let mut seq = Sequence::new();
        mock.expect_clear_property()
            .with(eq(sn("20240103000000")), eq(PROP_UPLOADED))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        mock.expect_set_property()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));
        mock.expect_hold().times(1).returning(|_, _| Ok(()));
        mock.expect_release().times(0);
        record_export(&mock, &[target], &plan).unwrap();
    }

    #[test]
    fn recording_an_incremental_sets_kind_and_base_and_touches_no_hold() {
        let plan = ExportPlan {
            snapshot: sn("20240103000000"),
            kind: ExportKind::Incremental,
            base: Some(sn("20240101000000")),
            reason: String::new(),
        };
        let mut mock = MockSnapshotter::new();
        mock.expect_set_property()
            .with(eq(sn("20240103000000")), eq(PROP_KIND), eq("incremental"))
            .times(1)
            .returning(|_, _, _| Ok(()));
        mock.expect_set_property()
            .with(
                eq(sn("20240103000000")),
                eq(PROP_BASE),
                eq("20240101000000"),
            )
            .times(1)
            .returning(|_, _, _| Ok(()));
        mock.expect_hold().with(always(), always()).times(0);
        mock.expect_release().with(always(), always()).times(0);
        record_export(&mock, &[], &plan).unwrap();
    }
}
