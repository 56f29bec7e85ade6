//! Splitting the pipeline's output into numbered chunk files, hashing
//! each in the same pass, and fsyncing each sealed chunk off the reading
//! thread before it is queued for upload.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};

use sha2::{Digest, Sha256};

use super::stream_upload::{ChunkQueue, SealedChunk, Stopped};
use super::write::create_private_file;
use super::{ExportError, MAX_CHUNKS};
use crate::model::{hex, ChunkEntry};
use crate::ops::upload::UploadStepError;
use crate::process::CancelToken;
use crate::util::Progress;

/// Read size from the pipeline; large enough that syscalls cost nothing
/// next to gpg.
const READ_BUFFER: usize = 1 << 20;

/// Splits a byte stream into numbered chunk files, hashing each in the same
/// pass that writes it. With a [`ChunkQueue`], each sealed chunk is handed
/// to the upload workers, and a new chunk file is only created once the
/// queue has room for it on disk.
pub(super) struct ChunkWriter<'q> {
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
pub(super) struct ToSync {
    file: File,
    chunk: SealedChunk,
}

/// The syncer thread: fsyncs each sealed chunk in order, then hands it to
/// the upload queue. The fsync of one 256 MiB chunk can take a second; here
/// it overlaps with writing the next one instead of stalling the pipeline.
/// The channel holds one chunk, so the writer is at most one chunk ahead.
pub(super) fn sync_chunks(
    chunks: Receiver<ToSync>,
    queue: Option<&ChunkQueue>,
) -> Result<(), ExportError> {
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

impl<'q> ChunkWriter<'q> {
    pub(super) fn new(
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
    pub(super) fn copy_from(
        &mut self,
        input: &mut impl Read,
        progress: &dyn Progress,
        cancel: &CancelToken,
    ) -> Result<(), ExportError> {
        let mut buf = vec![0u8; READ_BUFFER];
        let mut shown_chunk = String::new();
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
            if let Some(chunk) = self.current.as_ref().filter(|c| c.name != shown_chunk) {
                shown_chunk.clone_from(&chunk.name);
                progress.chunk(&chunk.name);
            }
            progress.advance(n as u64);
        }
    }

    pub(super) fn finish(mut self) -> Result<Vec<ChunkEntry>, ExportError> {
        self.seal()?;
        Ok(self.done)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

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
}
