//! The stages of an export, `zfs send | [zstd |] gpg`, read into chunk
//! files: starting them, stopping them together, waiting for them, and
//! naming the one that failed.
//!
//! A stage may be a process or work in this process; this module only sees
//! [`RunningStage`]s and the [`ByteStream`] they end in. With the
//! process-backed stages, `zfs send`'s stdout pipe is gpg's stdin (or
//! zstd's input, and zstd's output pipe gpg's stdin): no byte passes through
//! zfs2cloud before gpg's output.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::ScopedJoinHandle;

use super::chunk_writer::{sync_chunks, ChunkWriter};
use super::stream_upload::{ChunkQueue, StreamReport, StreamUpload, Worker};
use super::{ExportError, ExportSettings};
use crate::model::{ChunkEntry, ExportLayout};
use crate::ops::upload::UploadStepError;
use crate::policy::ExportPlan;
use crate::process::CancelToken;
use crate::stages::{ByteStream, Compressor, Encryptor, Exporter, RunningStage};
use crate::util::Progress;

/// The running stages of one export and the stream they end in.
pub(super) struct ExportStages {
    /// Upstream first: `zfs send`, the compressor if any, gpg.
    stages: Vec<Box<dyn RunningStage<ExportError>>>,
    output: ByteStream,
    /// The bytes `zfs send` wrote so far, counted where they pass through
    /// this process anyway (into the compressor); `None`: not counted, and
    /// the output's bytes stand for them.
    sent: Option<Arc<AtomicU64>>,
}

impl ExportStages {
    /// Starts `zfs send`, the compressor if any, and gpg, each reading the
    /// one before. If one cannot start, those already started are dropped,
    /// which stops them.
    pub(super) fn start(
        exporter: &dyn Exporter,
        compressor: Option<&dyn Compressor>,
        encryptor: &dyn Encryptor,
        plan: &ExportPlan,
    ) -> Result<Self, ExportError> {
        let send = exporter
            .send(&plan.snapshot, plan.base.as_ref())
            .map_err(ExportError::Send)?
            .map_err(ExportError::Send);
        let mut stages = vec![send.stage];
        let mut stream = send.output;
        let mut sent = None;
        if let Some(compressor) = compressor {
            let counter = Arc::new(AtomicU64::new(0));
            sent = Some(Arc::clone(&counter));
            // The compressor reads in this process anyway: counting costs
            // no copy.
            stream = ByteStream::reader(Counting {
                inner: stream,
                count: counter,
            });
            let compress = compressor
                .compress(stream)
                .map_err(ExportError::Compress)?
                .map_err(ExportError::Compress);
            stages.push(compress.stage);
            stream = compress.output;
        }
        let encrypt = encryptor
            .encrypt(stream)
            .map_err(ExportError::Encrypt)?
            .map_err(ExportError::Encrypt);
        stages.push(encrypt.stage);
        Ok(Self {
            stages,
            output: encrypt.output,
            sent,
        })
    }

    /// Reads the output with `read` to its end, then waits for every stage.
    /// A read blocked on a stalled pipe cannot look at the cancel flag, so
    /// meanwhile a watcher stops every stage when `cancel` is set; the read
    /// then sees the end of the stream.
    ///
    /// # Errors
    ///
    /// [`ExportError::Interrupted`] when `cancel` is set, else the error
    /// that explains the failure ([`pipeline_error`]).
    pub(super) fn run(
        self,
        cancel: &CancelToken,
        read: impl FnOnce(&mut ByteStream) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        let Self {
            stages, mut output, ..
        } = self;
        let copied = cancel.watch(|| stop_all(&stages), || read(&mut output));
        if copied.is_err() {
            // We stop reading; make sure no stage blocks forever.
            stop_all(&stages);
        }
        drop(output);
        // Downstream first: a stage before a failed one ends because its
        // reader went away.
        let waited: Vec<_> = stages.into_iter().rev().map(|stage| stage.wait()).collect();
        if cancel.is_cancelled() {
            return Err(ExportError::Interrupted);
        }
        pipeline_error(copied, waited)
    }
}

/// A reader that counts what passes.
struct Counting {
    inner: ByteStream,
    count: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The export's progress in bytes of `zfs send`'s stream, which is what
/// its expected size is about: counted before the compressor where there
/// is one, else the bytes written (gpg compresses nothing, so those are
/// within a fraction of a percent of the stream).
struct SendProgress<'a> {
    progress: &'a dyn Progress,
    sent: Option<Arc<AtomicU64>>,
    shown: AtomicU64,
}

impl Progress for SendProgress<'_> {
    fn advance(&self, bytes: u64) {
        let Some(sent) = &self.sent else {
            self.progress.advance(bytes);
            return;
        };
        let now = sent.load(Ordering::Relaxed);
        let before = self.shown.swap(now, Ordering::Relaxed);
        if now > before {
            self.progress.advance(now - before);
        }
    }

    fn chunk(&self, name: &str) {
        self.progress.chunk(name);
    }
}

fn stop_all(stages: &[Box<dyn RunningStage<ExportError>>]) {
    for stage in stages {
        stage.stop();
    }
}

/// Picks the error that explains a failed pipeline: our own (reading, or
/// writing the chunks) first, then that of the most downstream failed
/// stage (`waited` is most downstream first). When gpg dies, zstd and
/// `zfs send` also fail (broken pipe), but gpg is the cause; when
/// `zfs send` dies mid-stream, the stages after it see a clean end of input
/// and exit 0, so only `zfs send` failed.
fn pipeline_error(
    copied: Result<(), ExportError>,
    waited: Vec<Result<(), ExportError>>,
) -> Result<(), ExportError> {
    copied?;
    waited.into_iter().find_map(Result::err).map_or(Ok(()), Err)
}

/// Runs `stages` into chunk files in `dir`, each fsynced by a syncer thread
/// and, with `stream`, uploaded by worker threads as soon as it is sealed.
///
/// # Errors
///
/// [`ExportError`] naming the failed part: a stage, the writer, the
/// syncer, or the upload workers.
pub(super) fn write_chunks(
    stages: ExportStages,
    dir: &Path,
    plan: &ExportPlan,
    settings: &ExportSettings,
    stream: Option<(&StreamUpload<'_>, &str)>,
    shown: (&dyn Progress, Option<u64>),
) -> Result<(Vec<ChunkEntry>, Option<StreamReport>), ExportError> {
    let (progress, total) = shown;
    let queue = stream.map(|(s, _)| ChunkQueue::new(s.disk_limit()));
    let what = plan.snapshot.to_string();
    let cancel = &settings.cancel;
    let sending = SendProgress {
        progress,
        sent: stages.sent.clone(),
        shown: AtomicU64::new(0),
    };
    progress.begin(&format!("export {}", plan.snapshot), total);
    let written = std::thread::scope(|scope| {
        let queue = queue.as_ref();
        let (to_sync, syncing) = std::sync::mpsc::sync_channel(1);
        let syncer = scope.spawn(move || sync_chunks(syncing, queue));
        let workers: Vec<_> = match (stream, queue) {
            (Some((s, remote_dir)), Some(q)) => (0..s.concurrency.max(1))
                .map(|index| {
                    let what = &what;
                    let index = usize::try_from(index).unwrap_or(usize::MAX);
                    let shown = Worker { index, progress };
                    scope.spawn(move || q.work(s, remote_dir, what, cancel, &shown))
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut writer = ChunkWriter::new(
            dir.to_owned(),
            ExportLayout::chunk_prefix(&plan.snapshot),
            settings.split_size,
            queue,
            cancel.clone(),
            Some(to_sync),
        );
        let written = stages
            .run(cancel, |output| writer.copy_from(output, &sending, cancel))
            // Only a stream that ended cleanly seals its last chunk. The
            // writer goes either way, and with it the syncer's channel.
            .and_then(|()| writer.finish());
        let written = join_syncer(syncer, written, dir);
        finish_uploads(queue, written.is_ok(), workers);
        written
    });
    progress.end();
    if cancel.is_cancelled() {
        // The workers' uploads were stopped by the same interruption.
        return Err(ExportError::Interrupted);
    }
    upload_outcome(queue, written, plan)
}

/// The writer's result, or the syncer's error, which is the cause of the
/// writer's.
fn join_syncer(
    syncer: ScopedJoinHandle<'_, Result<(), ExportError>>,
    written: Result<Vec<ChunkEntry>, ExportError>,
    dir: &Path,
) -> Result<Vec<ChunkEntry>, ExportError> {
    let synced = syncer.join().unwrap_or_else(|_| {
        Err(ExportError::Write {
            path: dir.to_owned(),
            source: std::io::Error::other("the fsync thread panicked"),
        })
    });
    match (written, synced) {
        (Ok(chunks), Ok(())) => Ok(chunks),
        (Ok(_) | Err(ExportError::Write { .. }), Err(e)) => Err(e),
        (Err(e), _) => Err(e),
    }
}

/// Lets the upload workers finish what is queued (or stop now, if the
/// export failed) and waits for them.
fn finish_uploads(
    queue: Option<&ChunkQueue>,
    exported: bool,
    workers: Vec<ScopedJoinHandle<'_, ()>>,
) {
    if let Some(q) = queue {
        if exported {
            q.close();
        } else {
            q.abort();
        }
    }
    for worker in workers {
        if worker.join().is_err() {
            log::error!("an upload worker panicked");
            if let Some(q) = queue {
                q.abort();
            }
        }
    }
}

/// The chunks, with what the upload workers did. The workers' failure is
/// the cause of whatever the writer saw, so it comes first.
fn upload_outcome(
    queue: Option<ChunkQueue>,
    written: Result<Vec<ChunkEntry>, ExportError>,
    plan: &ExportPlan,
) -> Result<(Vec<ChunkEntry>, Option<StreamReport>), ExportError> {
    let streamed = match queue.map(ChunkQueue::finish) {
        None => None,
        Some(Err(failure)) => return Err(ExportError::Upload(failure)),
        Some(Ok(report)) => Some(report),
    };
    let chunks = written?;
    if let Some(report) = &streamed {
        if report.confirmed.len() != chunks.len() {
            // Cannot happen with a closed queue; checked because a manifest
            // over unconfirmed chunks would be a lie.
            return Err(ExportError::Upload(UploadStepError::NotConfirmed {
                snapshot: plan.snapshot.to_string(),
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
    Ok((chunks, streamed))
}
