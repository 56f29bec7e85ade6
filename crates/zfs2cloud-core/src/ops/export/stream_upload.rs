//! Uploading chunks while the export is still writing them
//! (`upload_while_exporting`).
//!
//! The export seals a chunk (fsync, size, SHA-256) and hands it to a
//! [`ChunkQueue`]; `upload_concurrency` workers copy chunks to the remote
//! (rclone checks each transfer's checksum itself wherever both sides share
//! a hash) and confirm each one is there with its size. With `keep_local_export = false` a worker deletes a chunk once it
//! is confirmed, and the export may only open a new chunk file while fewer
//! than `upload_concurrency + 1` are on disk: otherwise it stops reading
//! gpg, gpg stops reading `zfs send`, and `zfs send` waits. Nothing is
//! buffered beyond the pipes and one read buffer.
//!
//! The manifest is never part of this: the export step sends it last,
//! after every chunk is confirmed ([`crate::ops::upload_export`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::model::remote_join;
use crate::ops::upload::{with_retry, RetryPolicy, UploadStepError};
use crate::process::CancelToken;
use crate::stages::{UploadError, Uploader};
use crate::util::{Progress, WorkerState};

/// How a pipelined export uploads.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct StreamUpload<'a> {
    /// The remote store.
    pub uploader: &'a dyn Uploader,
    /// The configured rclone destination.
    pub remote: &'a str,
    /// Retries of each chunk's transfer.
    pub retry: RetryPolicy,
    /// Chunks uploaded at once (at least 1).
    pub concurrency: u32,
    /// Keep the chunks on local disk once uploaded.
    pub keep_local: bool,
    /// Recorded as the upload's confirmation time.
    pub now: DateTime<Utc>,
}

impl<'a> StreamUpload<'a> {
    /// The pipelined upload `config` asks for (`upload_while_exporting`),
    /// through `uploader`; `None` when the export is to stay local.
    #[must_use]
    pub fn from_config(
        config: &'a Config,
        uploader: &'a dyn Uploader,
        now: DateTime<Utc>,
    ) -> Option<Self> {
        config.upload_while_exporting.then(|| Self {
            uploader,
            remote: &config.remote,
            retry: RetryPolicy::from(config),
            concurrency: config.upload_concurrency,
            keep_local: config.keep_local_export,
            now,
        })
    }

    /// How many chunk files may exist on local disk at once, if bounded:
    /// one being written plus one per upload slot.
    #[must_use]
    pub fn disk_limit(&self) -> Option<usize> {
        (!self.keep_local).then(|| usize::try_from(self.concurrency).unwrap_or(1).max(1) + 1)
    }
}

/// A sealed chunk, ready to upload.
#[derive(Debug, Clone)]
pub(crate) struct SealedChunk {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Default)]
struct QueueState {
    pending: VecDeque<SealedChunk>,
    /// Chunk files on local disk that this export created and that are
    /// not yet deleted (with `keep_local`, never decremented).
    on_disk: usize,
    peak_on_disk: usize,
    /// No more chunks will come.
    closed: bool,
    /// Stop now: a failure, or the export gave up.
    aborted: bool,
    failure: Option<UploadStepError>,
    confirmed: Vec<String>,
}

/// What the workers did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamReport {
    /// The chunks uploaded and confirmed, in the order confirmed.
    pub confirmed: Vec<String>,
    /// The most chunk files on local disk at one moment.
    pub peak_chunks_on_disk: usize,
}

/// Why the writer may not go on.
#[derive(Debug)]
pub(crate) enum Stopped {
    /// An upload failed for good (the error is taken at the end).
    UploadFailed,
    /// The run was interrupted.
    Interrupted,
}

/// The hand-over between the chunk writer and the upload workers.
pub(crate) struct ChunkQueue {
    state: Mutex<QueueState>,
    changed: Condvar,
    disk_limit: Option<usize>,
}

impl ChunkQueue {
    pub(crate) fn new(disk_limit: Option<usize>) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            changed: Condvar::new(),
            disk_limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panicking worker must not take the export down with a second
        // panic; its state is still consistent (every update is one step).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called before a new chunk file is created: waits until there is
    /// room on disk for it. This wait is the backpressure.
    pub(crate) fn reserve_file(&self, cancel: &CancelToken) -> Result<(), Stopped> {
        let mut state = self.lock();
        loop {
            if state.aborted {
                return Err(Stopped::UploadFailed);
            }
            if cancel.is_cancelled() {
                return Err(Stopped::Interrupted);
            }
            if self.disk_limit.is_none_or(|limit| state.on_disk < limit) {
                state.on_disk += 1;
                state.peak_on_disk = state.peak_on_disk.max(state.on_disk);
                return Ok(());
            }
            // Timed, so that an interruption is seen without a notify.
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Hands a sealed chunk to the workers.
    pub(crate) fn push(&self, chunk: SealedChunk) {
        self.lock().pending.push_back(chunk);
        self.changed.notify_all();
    }

    /// No more chunks: workers finish what is queued and stop.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Stop everything now (the export failed or was interrupted).
    pub(crate) fn abort(&self) {
        self.lock().aborted = true;
        self.changed.notify_all();
    }

    /// Whether an upload failed for good (or the export gave up).
    pub(crate) fn is_aborted(&self) -> bool {
        self.lock().aborted
    }

    fn fail(&self, error: UploadStepError) {
        let mut state = self.lock();
        state.failure.get_or_insert(error);
        state.aborted = true;
        drop(state);
        self.changed.notify_all();
    }

    /// The next chunk to upload, or `None` when there is nothing more to do.
    fn next(&self) -> Option<SealedChunk> {
        let mut state = self.lock();
        loop {
            if state.aborted {
                return None;
            }
            if let Some(chunk) = state.pending.pop_front() {
                return Some(chunk);
            }
            if state.closed {
                return None;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn confirmed(&self, name: String, deleted: bool) {
        let mut state = self.lock();
        state.confirmed.push(name);
        if deleted {
            state.on_disk = state.on_disk.saturating_sub(1);
        }
        drop(state);
        self.changed.notify_all();
    }

    /// One upload worker: takes chunks until the queue is closed and
    /// empty, or aborted.
    pub(crate) fn work(
        &self,
        stream: &StreamUpload<'_>,
        remote_dir: &str,
        what: &str,
        cancel: &CancelToken,
        shown: &Worker<'_>,
    ) {
        shown.show(WorkerState::Idle);
        while let Some(chunk) = self.next() {
            let uploaded = upload_chunk(stream, remote_dir, what, &chunk, cancel, shown);
            shown.show(WorkerState::Idle);
            if let Err(e) = uploaded {
                self.fail(e);
                shown.show(WorkerState::Done);
                return;
            }
            let deleted = !stream.keep_local;
            if deleted {
                if let Err(source) = std::fs::remove_file(&chunk.path) {
                    self.fail(UploadStepError::Local {
                        path: chunk.path.clone(),
                        source,
                    });
                    return;
                }
            }
            log::debug!("{what}: {} uploaded and confirmed", chunk.name);
            self.confirmed(chunk.name, deleted);
        }
        shown.show(WorkerState::Done);
    }

    /// The workers' result, once they have all stopped.
    pub(crate) fn finish(self) -> Result<StreamReport, UploadStepError> {
        let state = self
            .state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(failure) = state.failure {
            return Err(failure);
        }
        Ok(StreamReport {
            confirmed: state.confirmed,
            peak_chunks_on_disk: state.peak_on_disk,
        })
    }
}

/// Copies one chunk and confirms it on the remote: present, with the right
/// size (and the right SHA-256, should the uploader report one). A copy
/// that cannot be confirmed is retried like a failed one. Content is
/// rclone's to check during the copy; asking the remote for a hash here
/// would read every chunk back on many backends.
fn upload_chunk(
    stream: &StreamUpload<'_>,
    remote_dir: &str,
    what: &str,
    chunk: &SealedChunk,
    cancel: &CancelToken,
    shown: &Worker<'_>,
) -> Result<(), UploadStepError> {
    let target = remote_join(remote_dir, &chunk.name);
    let mut attempt = 0;
    with_retry(&stream.retry, cancel, what, || {
        attempt += 1;
        shown.show(if attempt == 1 {
            WorkerState::Uploading {
                chunk: &chunk.name,
                size: chunk.size,
            }
        } else {
            WorkerState::Retrying {
                chunk: &chunk.name,
                attempt,
            }
        });
        stream.uploader.put(&chunk.path, &target)?;
        let found = stream.uploader.stat(&target)?;
        let problem = match found {
            None => Some("it is missing after the copy".to_owned()),
            Some(f) if f.size != chunk.size => {
                Some(format!("{} bytes, expected {}", f.size, chunk.size))
            }
            Some(f) if f.sha256.as_deref().is_some_and(|h| h != chunk.sha256) => {
                Some("its sha256 differs from the local chunk".to_owned())
            }
            Some(_) => None,
        };
        match problem {
            None => Ok(()),
            Some(reason) => Err(UploadError::Unconfirmed {
                path: target.clone(),
                reason,
            }),
        }
    })
}

/// One upload worker, as progress shows it.
pub(crate) struct Worker<'a> {
    /// Its number, from 0.
    pub index: usize,
    pub progress: &'a dyn Progress,
}

impl Worker<'_> {
    fn show(&self, state: WorkerState<'_>) {
        self.progress.worker(self.index, state);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::model::RemoteFile;
    use crate::stages::MockUploader;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn wait_for(flag: &AtomicBool) -> bool {
        for _ in 0..100 {
            if flag.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    #[test]
    fn a_new_file_waits_at_the_limit_until_an_uploaded_chunk_is_deleted() {
        let queue = ChunkQueue::new(Some(2));
        let cancel = CancelToken::new();
        queue.reserve_file(&cancel).unwrap();
        queue.reserve_file(&cancel).unwrap();
        let third = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                queue.reserve_file(&cancel).unwrap();
                third.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(300));
            assert!(!third.load(Ordering::SeqCst), "the limit was not kept");
            // Confirmed but kept (keep_local): still no room.
            queue.confirmed("a".into(), false);
            std::thread::sleep(Duration::from_millis(300));
            assert!(!third.load(Ordering::SeqCst), "a kept chunk freed room");
            queue.confirmed("b".into(), true);
            assert!(wait_for(&third), "deleting a chunk did not free room");
        });
        let report = queue.finish().unwrap();
        assert_eq!(report.peak_chunks_on_disk, 2);
        assert_eq!(report.confirmed, ["a", "b"]);
    }

    #[test]
    fn a_waiting_writer_stops_on_abort_and_on_interruption() {
        for interrupt in [false, true] {
            let queue = ChunkQueue::new(Some(1));
            let cancel = CancelToken::new();
            queue.reserve_file(&cancel).unwrap();
            let stopped = std::thread::scope(|s| {
                let waiter = s.spawn(|| queue.reserve_file(&cancel));
                std::thread::sleep(Duration::from_millis(100));
                if interrupt {
                    cancel.cancel();
                } else {
                    queue.abort();
                }
                waiter.join().unwrap()
            });
            match (interrupt, stopped) {
                (true, Err(Stopped::Interrupted)) | (false, Err(Stopped::UploadFailed)) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    fn sealed(dir: &std::path::Path, name: &str, bytes: &[u8]) -> SealedChunk {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        SealedChunk {
            name: name.into(),
            path,
            size: bytes.len() as u64,
            sha256: crate::model::hex(&sha2::Digest::finalize(
                <sha2::Sha256 as sha2::Digest>::new_with_prefix(bytes),
            )),
        }
    }

    fn stream<'a>(uploader: &'a MockUploader, keep_local: bool) -> StreamUpload<'a> {
        StreamUpload {
            uploader,
            remote: "r:b",
            retry: RetryPolicy {
                retries: 1,
                delay: Duration::ZERO,
            },
            concurrency: 1,
            keep_local,
            now: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_worker_confirms_each_chunk_on_the_remote_then_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = sealed(dir.path(), "x.0000", b"chunk bytes");
        let (size, sha) = (chunk.size, chunk.sha256.clone());
        let mut up = MockUploader::new();
        up.expect_put()
            .withf(|_, target| target == "r:b/d/x.0000")
            .times(1)
            .returning(|_, _| Ok(()));
        up.expect_stat().times(1).returning(move |_| {
            Ok(Some(RemoteFile {
                name: "x.0000".into(),
                size,
                sha256: Some(sha.clone()),
            }))
        });
        let queue = ChunkQueue::new(Some(2));
        queue.reserve_file(&CancelToken::new()).unwrap();
        queue.push(chunk.clone());
        queue.close();
        work_once(&queue, &up);
        assert!(!chunk.path.exists(), "the confirmed chunk was not deleted");
        assert_eq!(queue.finish().unwrap().confirmed, ["x.0000"]);
    }

    /// One worker uploading what is queued to `r:b/d`.
    fn work_once(queue: &ChunkQueue, up: &MockUploader) {
        let worker = Worker {
            index: 0,
            progress: &crate::util::NoProgress,
        };
        queue.work(
            &stream(up, false),
            "r:b/d",
            "snap",
            &CancelToken::new(),
            &worker,
        );
    }

    #[test]
    fn a_chunk_the_remote_holds_wrongly_is_sent_again_then_fails_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = sealed(dir.path(), "x.0000", b"chunk bytes");
        let mut up = MockUploader::new();
        // The first attempt and one retry.
        up.expect_put().times(2).returning(|_, _| Ok(()));
        up.expect_stat().times(2).returning(|_| {
            Ok(Some(RemoteFile {
                name: "x.0000".into(),
                size: 3,
                sha256: None,
            }))
        });
        let queue = ChunkQueue::new(Some(2));
        queue.push(chunk.clone());
        queue.close();
        work_once(&queue, &up);
        assert!(chunk.path.exists(), "an unconfirmed chunk was deleted");
        assert!(queue.is_aborted());
        let err = crate::util::error_chain(&queue.finish().unwrap_err());
        assert!(err.contains("3 bytes, expected 11"), "{err}");
    }
}
