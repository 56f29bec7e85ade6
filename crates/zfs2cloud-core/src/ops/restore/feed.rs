//! Feeding one backup's chunks into its receive: fetched ahead on a thread,
//! hashed as they pass, and the end of each chunk held back until the chunk
//! is proven.
//!
//! The fetcher reads chunk *n* with `rclone cat` into a bounded queue and
//! starts `rclone cat` of chunk *n+1* as soon as chunk *n* is read, while
//! the queue still holds chunk *n*'s tail for gpg. A remote with a slow
//! first byte (S3, a cloud drive) then does not stall the stream at every
//! chunk boundary. Each chunk is read exactly once: its SHA-256 is computed
//! on the fetcher thread as it is read, never by a listing beforehand.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::model::{hex, remote_join, RemoteBackup};
use crate::process::CancelToken;
use crate::stages::{RunningStage, Started, UploadError, Uploader};
use crate::util::Progress;

/// The size of the blocks that move from the fetcher to the receive.
pub(super) const BLOCK: usize = 1 << 20;

/// How much of a chunk's end is held back until the chunk is proven.
/// `zfs recv` commits when it reads the stream's END record, in the final
/// bytes of the final chunk; gpg and zstd buffer far less than this, so no
/// byte of a damaged final chunk that could complete the stream reaches
/// `zfs recv` before the damage is known.
const HOLD_BACK: usize = BLOCK;

/// Why feeding stopped.
pub(super) enum FeedError {
    /// A chunk differs from the manifest.
    Damaged { chunk: String, reason: String },
    /// Reading from the remote failed.
    Remote { path: String, source: UploadError },
    /// Writing into the receive failed (a stage went away).
    Write(io::Error),
    /// The run was cancelled (or its time limit ran out).
    Interrupted,
}

/// What the fetcher passes on.
enum Fetched {
    /// The next bytes of the current chunk.
    Block(Vec<u8>),
    /// The current chunk ended: what was read of it.
    End(Passed),
    /// Reading failed; nothing more follows.
    Failed(FeedError),
}

/// The size and SHA-256 of what was read of one chunk.
struct Passed {
    size: u64,
    sha256: String,
}

/// The `rclone cat` the fetcher is reading, shared with whoever must be
/// able to stop it: a watcher on Ctrl-C or the time limit, and the
/// receive when it gives up. Once abandoned, every `cat` it is given is
/// stopped at once, so none can start unseen after the stop.
#[derive(Default)]
pub(super) struct FetchHandle {
    state: Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    cat: Option<Box<dyn RunningStage<UploadError>>>,
    abandoned: bool,
}

impl FetchHandle {
    /// Stops the current `cat` and every later one.
    pub(super) fn abandon(&self) {
        let mut state = self.lock();
        state.abandoned = true;
        if let Some(cat) = &state.cat {
            cat.stop();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FetchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `cat` the current one; stops it at once if abandoned.
    fn set(&self, cat: Box<dyn RunningStage<UploadError>>) -> bool {
        let mut state = self.lock();
        if state.abandoned {
            cat.stop();
        }
        state.cat = Some(cat);
        !state.abandoned
    }

    /// Takes the current `cat` back, to wait for it. Once taken it is
    /// never signalled again, so its reaped pid cannot be hit.
    fn take(&self) -> Option<Box<dyn RunningStage<UploadError>>> {
        self.lock().cat.take()
    }
}

/// What one feed reads and where.
pub(super) struct Feed<'a> {
    pub store: &'a dyn Uploader,
    pub backup: &'a RemoteBackup,
    /// The backup's directory on the remote.
    pub dir: &'a str,
    /// Its chunks, in stream order.
    pub chunks: &'a [String],
    pub cancel: &'a CancelToken,
    /// How many bytes may be fetched ahead of the receive.
    pub prefetch_bytes: usize,
    pub handle: &'a FetchHandle,
    /// Shown each chunk as it starts, and each block as it passes.
    pub progress: &'a dyn Progress,
}

impl Feed<'_> {
    /// Streams every chunk into `sink`, each checked against the manifest
    /// before its last [`HOLD_BACK`] bytes are passed on.
    pub(super) fn run(&self, sink: &mut (impl Write + ?Sized)) -> Result<(), FeedError> {
        let (to_receive, fetched) = mpsc::sync_channel((self.prefetch_bytes / BLOCK).max(1));
        let (recycle, recycled) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(move || self.fetch_all(&to_receive, &recycled));
            let result = self.receive(&fetched, &recycle, sink);
            if result.is_err() {
                // The fetcher may be blocked reading a stalled `cat`, or
                // sending into a full queue: both end now.
                self.handle.abandon();
            }
            drop(fetched);
            result
        })
    }

    /// The receiving side: passes blocks on, holding back each chunk's
    /// end until its [`Passed`] proves it.
    fn receive(
        &self,
        fetched: &Receiver<Fetched>,
        recycle: &Sender<Vec<u8>>,
        sink: &mut (impl Write + ?Sized),
    ) -> Result<(), FeedError> {
        let mut held = HeldBack::default();
        for name in self.chunks {
            self.progress.chunk(name);
            loop {
                match fetched.recv() {
                    Ok(Fetched::Block(block)) => {
                        self.progress.advance(block.len() as u64);
                        held.push(block, sink, recycle)?;
                    }
                    Ok(Fetched::End(passed)) => {
                        check_chunk(self.backup, name, &passed)?;
                        held.release(sink, recycle)?;
                        break;
                    }
                    Ok(Fetched::Failed(e)) => return Err(e),
                    // The fetcher ended without a word: it only does so
                    // when told to stop.
                    Err(_) => return Err(FeedError::Interrupted),
                }
            }
        }
        Ok(())
    }

    /// The fetching side: each chunk in turn, read into the queue.
    fn fetch_all(&self, to_receive: &SyncSender<Fetched>, recycled: &Receiver<Vec<u8>>) {
        for name in self.chunks {
            if self.cancel.is_cancelled() {
                let _ = to_receive.send(Fetched::Failed(FeedError::Interrupted));
                return;
            }
            let path = remote_join(self.dir, name);
            let message = match self.fetch_chunk(&path, to_receive, recycled) {
                Ok(Some(passed)) => Fetched::End(passed),
                // The receive went away; it knows why.
                Ok(None) => return,
                Err(e) => Fetched::Failed(e),
            };
            let failed = matches!(message, Fetched::Failed(_));
            if to_receive.send(message).is_err() || failed {
                return;
            }
        }
    }

    /// Reads the chunk at `path` into the queue, hashing it; `None` if the
    /// receive stopped listening.
    fn fetch_chunk(
        &self,
        path: &str,
        to_receive: &SyncSender<Fetched>,
        recycled: &Receiver<Vec<u8>>,
    ) -> Result<Option<Passed>, FeedError> {
        let remote_err = |source| FeedError::Remote {
            path: path.to_owned(),
            source,
        };
        let Started {
            stage,
            output: mut stream,
        } = self.store.cat(path).map_err(remote_err)?;
        if !self.handle.set(stage) {
            let _ = self.handle.take().map(RunningStage::wait);
            return Err(FeedError::Interrupted);
        }
        let read = copy_hashed(&mut stream, to_receive, recycled, path);
        drop(stream);
        let cat = self.handle.take();
        if !matches!(read, Ok(Some(_))) {
            if let Some(cat) = &cat {
                cat.stop();
            }
        }
        let waited = cat.map_or(Ok(()), RunningStage::wait);
        let passed = read?;
        waited.map_err(remote_err)?;
        Ok(passed)
    }
}

/// Reads `stream` to its end in [`BLOCK`]s, sending each on and hashing it;
/// `None` if the receiving side went away.
fn copy_hashed(
    stream: &mut impl Read,
    to_receive: &SyncSender<Fetched>,
    recycled: &Receiver<Vec<u8>>,
    path: &str,
) -> Result<Option<Passed>, FeedError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let mut block = recycled.try_recv().unwrap_or_default();
        block.resize(BLOCK, 0);
        let n = read_full(stream, &mut block).map_err(|e| FeedError::Remote {
            path: path.to_owned(),
            source: UploadError::Parse {
                command: format!("cat {path}"),
                message: e.to_string(),
            },
        })?;
        if n == 0 {
            return Ok(Some(Passed {
                size,
                sha256: hex(&hasher.finalize()),
            }));
        }
        block.truncate(n);
        hasher.update(&block);
        size += n as u64;
        if to_receive.send(Fetched::Block(block)).is_err() {
            return Ok(None);
        }
    }
}

/// Reads until `buf` is full or the stream ends; the number of bytes read.
fn read_full(stream: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The blocks of the current chunk not yet passed on: at least its last
/// [`HOLD_BACK`] bytes read (or all of it, if shorter).
#[derive(Default)]
struct HeldBack {
    blocks: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl HeldBack {
    /// Holds `block`, passing on what is no longer among the last
    /// [`HOLD_BACK`] bytes.
    fn push(
        &mut self,
        block: Vec<u8>,
        sink: &mut (impl Write + ?Sized),
        recycle: &Sender<Vec<u8>>,
    ) -> Result<(), FeedError> {
        self.bytes += block.len();
        self.blocks.push_back(block);
        while let Some(front) = self.blocks.front() {
            if self.bytes - front.len() < HOLD_BACK {
                break;
            }
            self.pass_front(sink, recycle)?;
        }
        Ok(())
    }

    /// Passes on everything held: the chunk is proven.
    fn release(
        &mut self,
        sink: &mut (impl Write + ?Sized),
        recycle: &Sender<Vec<u8>>,
    ) -> Result<(), FeedError> {
        while !self.blocks.is_empty() {
            self.pass_front(sink, recycle)?;
        }
        Ok(())
    }

    fn pass_front(
        &mut self,
        sink: &mut (impl Write + ?Sized),
        recycle: &Sender<Vec<u8>>,
    ) -> Result<(), FeedError> {
        let Some(block) = self.blocks.pop_front() else {
            return Ok(());
        };
        self.bytes -= block.len();
        sink.write_all(&block).map_err(FeedError::Write)?;
        // The fetcher reuses it; if the fetcher is gone, it is dropped.
        let _ = recycle.send(block);
        Ok(())
    }
}

/// Checks what was read of chunk `name` against the manifest, if there is
/// one.
fn check_chunk(backup: &RemoteBackup, name: &str, passed: &Passed) -> Result<(), FeedError> {
    let Some(entry) = backup
        .manifest
        .as_ref()
        .and_then(|m| m.chunks.iter().find(|c| c.name == name))
    else {
        return Ok(());
    };
    let reason = if entry.size != passed.size {
        format!("{} bytes, the manifest says {}", passed.size, entry.size)
    } else if entry.sha256 != passed.sha256 {
        "its sha256 differs from the manifest".to_owned()
    } else {
        return Ok(());
    };
    Err(FeedError::Damaged {
        chunk: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;
    use std::sync::{Arc, Condvar};
    use std::time::Duration;

    use super::*;
    use crate::model::testing::noise;
    use crate::model::{ChunkEntry, ExportKind, Manifest, MANIFEST_FORMAT};
    use crate::stages::MockUploader;

    const DIR: &str = "r:b/20240101000000-full";

    /// A remote holding `files` (name, bytes) under [`DIR`], each read in
    /// place by whoever reads the `cat` stage's output; every `cat` is
    /// also handed to `on_cat`.
    fn remote(
        files: &[(&str, Vec<u8>)],
        on_cat: impl Fn(&str) + Send + Sync + 'static,
    ) -> MockUploader {
        let files: HashMap<String, Vec<u8>> = files
            .iter()
            .map(|(name, bytes)| (remote_join(DIR, name), bytes.clone()))
            .collect();
        let mut up = MockUploader::new();
        up.expect_cat().returning(move |path| {
            on_cat(path);
            Ok(Started::reading(
                format!("cat {path}"),
                io::Cursor::new(files[path].clone()),
            ))
        });
        up
    }

    /// A backup whose manifest lists `chunks` (name, bytes as exported).
    fn backup(chunks: &[(&str, Vec<u8>)]) -> RemoteBackup {
        let chunks: Vec<ChunkEntry> = chunks
            .iter()
            .map(|(name, bytes)| ChunkEntry {
                name: (*name).to_owned(),
                size: bytes.len() as u64,
                sha256: hex(&Sha256::digest(bytes)),
            })
            .collect();
        RemoteBackup {
            dir_name: "20240101000000-full".into(),
            snapshot: "20240101000000".into(),
            kind: ExportKind::Full,
            manifest: Some(Manifest {
                format: MANIFEST_FORMAT,
                tool: "zfs2cloud".into(),
                tool_version: "test".into(),
                dataset: "tank/data".into(),
                snapshot: "20240101000000".into(),
                kind: ExportKind::Full,
                base: None,
                created_at: "2024-01-01T00:00:00Z".into(),
                encryption: "gpg-symmetric-aes256".into(),
                compression: "none".into(),
                split_size: 3 << 20,
                total_size: chunks.iter().map(|c| c.size).sum(),
                chunks,
                send_flags: crate::model::SendFlags::default(),
                level: None,
                recipients: Vec::new(),
            }),
            manifest_error: None,
            files: Vec::new(),
        }
    }

    fn run_feed(
        store: &MockUploader,
        exported: &[(&str, Vec<u8>)],
        cancel: &CancelToken,
        sink: &mut (impl Write + ?Sized),
    ) -> Result<(), FeedError> {
        let backup = backup(exported);
        let handle = FetchHandle::default();
        Feed {
            store,
            backup: &backup,
            dir: DIR,
            chunks: &backup.chunk_names(),
            cancel,
            prefetch_bytes: 64 << 20,
            handle: &handle,
            progress: &crate::util::NoProgress,
        }
        .run(sink)
    }

    fn feed(
        exported: &[(&str, Vec<u8>)],
        on_remote: &[(&str, Vec<u8>)],
        cancel: &CancelToken,
    ) -> (Result<(), FeedError>, Vec<u8>) {
        let mut sink = Vec::new();
        let fed = run_feed(&remote(on_remote, |_| {}), exported, cancel, &mut sink);
        (fed, sink)
    }

    fn chunks() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("x.0000", noise(3 << 20, 1)),
            ("x.0001", noise((3 << 20) / 2 + 7, 2)),
        ]
    }

    #[test]
    fn chunks_that_match_the_manifest_pass_whole_and_in_order_each_read_once() {
        let chunks = chunks();
        let cats = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&cats);
        let store = remote(&chunks, move |path| {
            seen.lock().unwrap().push(path.to_owned())
        });
        let mut sink = Vec::new();
        let fed = run_feed(&store, &chunks, &CancelToken::new(), &mut sink);
        assert!(fed.is_ok());
        assert_eq!(sink, [chunks[0].1.clone(), chunks[1].1.clone()].concat());
        assert_eq!(
            *cats.lock().unwrap(),
            [remote_join(DIR, "x.0000"), remote_join(DIR, "x.0001")]
        );
    }

    #[test]
    fn a_damaged_final_chunk_never_reaches_the_receiver_whole() {
        let exported = chunks();
        let mut on_remote = exported.clone();
        let last = on_remote[1].1.len() - 1;
        on_remote[1].1[last] ^= 1;
        let (fed, sink) = feed(&exported, &on_remote, &CancelToken::new());
        match fed {
            Err(FeedError::Damaged { chunk, reason }) => {
                assert_eq!(chunk, "x.0001");
                assert!(reason.contains("sha256"), "{reason}");
            }
            _ => panic!("not refused as damaged"),
        }
        // What passed is the start of the stream: all of the first chunk,
        // and not the last HOLD_BACK bytes of the second, where `zfs recv`
        // would commit.
        let stream = [exported[0].1.clone(), exported[1].1.clone()].concat();
        assert!(sink.len() >= exported[0].1.len());
        assert!(sink.len() <= stream.len() - HOLD_BACK);
        assert!(stream.starts_with(&sink));
    }

    #[test]
    fn a_short_chunk_is_refused_by_its_size() {
        let exported = chunks();
        let mut on_remote = exported.clone();
        on_remote[0].1.truncate(1000);
        let (fed, sink) = feed(&exported, &on_remote, &CancelToken::new());
        match fed {
            Err(FeedError::Damaged { chunk, reason }) => {
                assert_eq!(chunk, "x.0000");
                assert_eq!(reason, format!("1000 bytes, the manifest says {}", 3 << 20));
            }
            _ => panic!("not refused as damaged"),
        }
        assert!(
            sink.is_empty(),
            "a chunk shorter than the hold-back passes nothing"
        );
    }

    #[test]
    fn an_interrupted_feed_passes_nothing_on() {
        let chunks = chunks();
        let cancel = CancelToken::new();
        cancel.cancel();
        let (fed, sink) = feed(&chunks, &chunks, &cancel);
        assert!(matches!(fed, Err(FeedError::Interrupted)));
        assert!(sink.is_empty());
    }

    /// A sink whose first write waits (up to a bound) until `ready` is set.
    struct WaitingSink {
        ready: Arc<(Mutex<bool>, Condvar)>,
        waited_in_vain: bool,
        bytes: usize,
    }

    impl Write for WaitingSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.bytes == 0 {
                let (flag, signal) = &*self.ready;
                let (ready, timeout) = signal
                    .wait_timeout_while(flag.lock().unwrap(), Duration::from_secs(10), |r| !*r)
                    .unwrap();
                self.waited_in_vain = timeout.timed_out() && !*ready;
            }
            self.bytes += buf.len();
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_next_chunk_is_fetched_while_the_receiver_is_still_busy() {
        let chunks = chunks();
        let ready = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&ready);
        let store = remote(&chunks, move |path| {
            if path.ends_with("x.0001") {
                *signal.0.lock().unwrap() = true;
                signal.1.notify_all();
            }
        });
        let mut sink = WaitingSink {
            ready,
            waited_in_vain: false,
            bytes: 0,
        };
        let fed = run_feed(&store, &chunks, &CancelToken::new(), &mut sink);
        assert!(fed.is_ok());
        // The receiver's first write blocked until the second chunk's
        // `cat` had started: it was fetched ahead, not after the first
        // chunk was passed on.
        assert!(!sink.waited_in_vain, "x.0001 was not fetched ahead");
        assert_eq!(sink.bytes, chunks[0].1.len() + chunks[1].1.len());
    }

    #[test]
    fn a_sink_that_goes_away_ends_the_feed_and_the_fetcher() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let chunks = chunks();
        let fed = run_feed(
            &remote(&chunks, |_| {}),
            &chunks,
            &CancelToken::new(),
            &mut Broken,
        );
        assert!(matches!(fed, Err(FeedError::Write(_))));
    }
}
