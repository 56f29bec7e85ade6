//! The bytes between stages, and a handle for a running stage, so that a
//! stage can be an external process or work inside this process.
//!
//! A process stage's stdout is an OS pipe, and a process after it takes
//! that pipe as its stdin directly: the bytes never pass through zfs2cloud,
//! which keeps `zfs send | gpg` as fast as in a shell. An in-process stage
//! ([`ThreadStage`]) reads whatever it is given and writes into a new pipe,
//! so the process after it is again handed a pipe. Only bytes made in this
//! process ([`ByteStream::Reader`]) are copied into a process, by a pump
//! thread.

use std::fmt;
use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::process::{
    CancelToken, CommandLine, ProcessError, Runner, RunningProcess, SpawnOptions,
};

/// Read size of the threads that move bytes inside this process.
const PUMP_BUFFER: usize = 1 << 20;

/// The bytes one stage passes to the next.
pub enum ByteStream {
    /// An OS pipe: a child's stdout, or what a [`ThreadStage`] writes. A
    /// process stage takes it as its stdin as it is.
    Pipe(PipeReader),
    /// Bytes made in this process (e.g. a buffer in memory). A process
    /// stage pumps them into its stdin on a thread.
    Reader(Box<dyn Read + Send>),
}

impl ByteStream {
    /// A child's stdout.
    #[must_use]
    pub fn from_child(stdout: ChildStdout) -> Self {
        Self::Pipe(PipeReader::from(OwnedFd::from(stdout)))
    }

    /// Bytes read from `reader` in this process.
    pub fn reader(reader: impl Read + Send + 'static) -> Self {
        Self::Reader(Box::new(reader))
    }
}

impl Read for ByteStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Pipe(pipe) => pipe.read(buf),
            Self::Reader(reader) => reader.read(buf),
        }
    }
}

impl fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pipe(pipe) => f.debug_tuple("Pipe").field(pipe).finish(),
            Self::Reader(_) => f.write_str("Reader(..)"),
        }
    }
}

/// A stage that is running: an external process, or work on a thread of
/// this process. `E` is the stage's error type.
///
/// `Sync`, so that a watcher thread can stop the stages of a pipeline
/// while another thread is blocked reading the pipeline's output.
pub trait RunningStage<E>: Send + Sync {
    /// What runs, for logs and errors (a command line, secrets redacted).
    fn describe(&self) -> String;

    /// Ends the stage now, because the run was interrupted or the pipeline
    /// gave up: its output is of no use any more. Callable from any thread
    /// and more than once. The stage must still be waited for.
    fn stop(&self);

    /// Waits for the stage to end. Drop its output (or read it to the end)
    /// first: a stage blocked writing to a pipe nobody reads never ends.
    ///
    /// # Errors
    ///
    /// The stage's error if it failed or was stopped.
    fn wait(self: Box<Self>) -> Result<(), E>;
}

/// A stage just started, and the bytes it produces.
pub struct Started<E> {
    /// The running stage.
    pub stage: Box<dyn RunningStage<E>>,
    /// Its output, for the next stage.
    pub output: ByteStream,
}

impl<E: 'static> Started<E> {
    /// A stage that runs nothing of its own: its output is `reader`, read
    /// by the next stage itself. Stopping it does nothing, and waiting for
    /// it succeeds.
    pub fn reading(description: impl Into<String>, reader: impl Read + Send + 'static) -> Self {
        Self {
            stage: Box::new(Passive {
                description: description.into(),
            }),
            output: ByteStream::reader(reader),
        }
    }

    /// A stage that leaves `stream` as it is: the next stage reads it
    /// directly (a pipe stays a pipe). Stopping it does nothing, and
    /// waiting for it succeeds.
    pub fn passing(description: impl Into<String>, stream: ByteStream) -> Self {
        Self {
            stage: Box::new(Passive {
                description: description.into(),
            }),
            output: stream,
        }
    }

    /// The same stage with its error converted by `convert`, so that the
    /// stages of a pipeline can share one error type.
    #[must_use]
    pub fn map_err<F: 'static>(self, convert: fn(E) -> F) -> Started<F> {
        Started {
            stage: Box::new(MapErr {
                stage: self.stage,
                convert,
            }),
            output: self.output,
        }
    }
}

impl<E> fmt::Debug for Started<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Started")
            .field("stage", &self.stage.describe())
            .field("output", &self.output)
            .finish()
    }
}

/// See [`Started::reading`].
struct Passive {
    description: String,
}

impl<E> RunningStage<E> for Passive {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn stop(&self) {}

    fn wait(self: Box<Self>) -> Result<(), E> {
        Ok(())
    }
}

/// See [`Started::map_err`].
struct MapErr<E, F> {
    stage: Box<dyn RunningStage<E>>,
    convert: fn(E) -> F,
}

impl<E, F> RunningStage<F> for MapErr<E, F> {
    fn describe(&self) -> String {
        self.stage.describe()
    }

    fn stop(&self) {
        self.stage.stop();
    }

    fn wait(self: Box<Self>) -> Result<(), F> {
        self.stage.wait().map_err(self.convert)
    }
}

/// A stage that is an external process: its stdin is the input stream, its
/// stdout (if kept) the output. Stopping it kills its process group.
/// Dropped without waiting, the process is killed and reaped.
pub struct ProcessStage<E> {
    command: String,
    // A mutex only so that `stop` can kill it through a shared reference.
    process: Mutex<RunningProcess>,
    pump: Option<JoinHandle<Pumped>>,
    /// The runner's: waiting stops the process on Ctrl-C or at the step's
    /// deadline, so a stalled stage never holds up a stopped run.
    cancel: CancelToken,
    error: PhantomData<fn() -> E>,
}

/// How a pump thread ended.
struct Pumped {
    /// Why reading the input failed, if it did.
    read_error: Option<io::Error>,
    /// The child's stdin, kept open after a failed read, so that the child
    /// never takes the truncated input for all of it: it is killed first.
    stdin: Option<ChildStdin>,
}

impl<E: From<ProcessError> + 'static> ProcessStage<E> {
    /// Starts `cmd` reading `input` (`None`: `/dev/null`), with
    /// `extra_fds` at fixed numbers (e.g. a passphrase pipe); its stdout is
    /// the output.
    ///
    /// # Errors
    ///
    /// `E` from [`ProcessError::Spawn`] if it cannot start.
    pub fn start(
        runner: &Runner,
        cmd: &CommandLine,
        input: Option<ByteStream>,
        extra_fds: Vec<(OwnedFd, i32)>,
    ) -> Result<Started<E>, E> {
        let mut stage = Self::spawn(runner, cmd, input, true, extra_fds)?;
        let stdout = stage
            .process
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take_stdout();
        let Some(stdout) = stdout else {
            // Cannot happen: the stdout pipe was asked for.
            return Err(E::from(ProcessError::Io {
                command: stage.command,
                source: io::Error::other("no stdout pipe"),
            }));
        };
        Ok(Started {
            stage: Box::new(stage),
            output: ByteStream::from_child(stdout),
        })
    }

    /// Starts `cmd` reading `input`, with its stdout discarded (the last
    /// stage of a pipeline, e.g. `zfs recv`).
    ///
    /// # Errors
    ///
    /// `E` from [`ProcessError::Spawn`] if it cannot start.
    pub fn start_sink(
        runner: &Runner,
        cmd: &CommandLine,
        input: ByteStream,
    ) -> Result<Box<dyn RunningStage<E>>, E> {
        Ok(Box::new(Self::spawn(
            runner,
            cmd,
            Some(input),
            false,
            Vec::new(),
        )?))
    }

    fn spawn(
        runner: &Runner,
        cmd: &CommandLine,
        input: Option<ByteStream>,
        pipe_stdout: bool,
        extra_fds: Vec<(OwnedFd, i32)>,
    ) -> Result<Self, E> {
        let (stdin, to_pump) = match input {
            None => (None, None),
            Some(ByteStream::Pipe(pipe)) => (Some(Stdio::from(pipe)), None),
            Some(ByteStream::Reader(reader)) => (Some(Stdio::piped()), Some(reader)),
        };
        let mut process = runner.spawn(
            cmd,
            SpawnOptions {
                stdin,
                pipe_stdout,
                extra_fds,
            },
        )?;
        let command = process.command().to_owned();
        let pump = match (to_pump, process.take_stdin()) {
            (Some(reader), Some(stdin)) => Some(
                std::thread::Builder::new()
                    .name("stdin-pump".into())
                    .spawn(move || pump(reader, stdin))
                    .map_err(|source| ProcessError::Io {
                        command: command.clone(),
                        source,
                    })?,
            ),
            _ => None,
        };
        Ok(Self {
            command,
            process: Mutex::new(process),
            pump,
            cancel: runner.cancel_token().clone(),
            error: PhantomData,
        })
    }
}

/// Copies `input` into a child's stdin until either ends.
fn pump(mut input: Box<dyn Read + Send>, mut stdin: ChildStdin) -> Pumped {
    let mut buf = vec![0u8; PUMP_BUFFER];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Pumped {
                    read_error: Some(e),
                    stdin: Some(stdin),
                }
            }
        };
        if stdin.write_all(&buf[..n]).is_err() {
            // The child stopped reading (it exited or was stopped): its
            // own status says why.
            break;
        }
    }
    Pumped {
        read_error: None,
        stdin: None,
    }
}

impl<E: From<ProcessError>> RunningStage<E> for ProcessStage<E> {
    fn describe(&self) -> String {
        self.command.clone()
    }

    fn stop(&self) {
        self.process
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .kill();
    }

    fn wait(self: Box<Self>) -> Result<(), E> {
        let Self {
            command,
            process,
            pump,
            cancel,
            ..
        } = *self;
        let mut process = process.into_inner().unwrap_or_else(PoisonError::into_inner);
        let pumped = pump.map(|thread| {
            thread.join().unwrap_or_else(|_| Pumped {
                read_error: Some(io::Error::other("the input pump panicked")),
                stdin: None,
            })
        });
        if let Some(Pumped {
            read_error: Some(source),
            stdin,
        }) = pumped
        {
            // Its input was cut short: it must not finish as if it had
            // read all of it.
            process.kill();
            let _ = process.wait();
            drop(stdin);
            return Err(E::from(ProcessError::Io { command, source }));
        }
        process
            .wait_until(Some(&cancel), None)
            .into_result()
            .map_err(E::from)
    }
}

/// A stage that runs in this process, on its own thread, and writes its
/// output into a new pipe: the stage after it reads that like a process's
/// stdout (a process stage takes it as its stdin directly).
///
/// Stopping it is seen by its work between blocks. A thread blocked on a
/// read or a write ends when the stage feeding it or reading it ends,
/// which is why a pipeline stops all of its stages together.
pub struct ThreadStage {
    name: String,
    thread: Option<JoinHandle<io::Result<()>>>,
    stopped: Arc<AtomicBool>,
}

impl ThreadStage {
    /// Starts `work` on a new thread named after the stage. `work` gets the
    /// input, the write end of the output pipe, and a check that says
    /// whether the stage was stopped.
    ///
    /// # Errors
    ///
    /// If the pipe or the thread cannot be created.
    pub fn start<W>(
        name: impl Into<String>,
        input: ByteStream,
        work: W,
    ) -> io::Result<Started<io::Error>>
    where
        W: FnOnce(ByteStream, PipeWriter, &dyn Fn() -> bool) -> io::Result<()> + Send + 'static,
    {
        let name = name.into();
        let (output, sink) = io::pipe()?;
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopped);
        let thread = std::thread::Builder::new()
            .name(thread_name(&name))
            .spawn(move || work(input, sink, &|| flag.load(Ordering::SeqCst)))?;
        Ok(Started {
            stage: Box::new(Self {
                name,
                thread: Some(thread),
                stopped,
            }),
            output: ByteStream::Pipe(output),
        })
    }
}

/// The first word of a stage's name, as its thread's name (`zstd`).
fn thread_name(stage: &str) -> String {
    stage
        .split_whitespace()
        .next()
        .unwrap_or("stage")
        .to_owned()
}

impl RunningStage<io::Error> for ThreadStage {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    fn wait(mut self: Box<Self>) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other(format!("{} panicked", self.name))))
    }
}

impl Drop for ThreadStage {
    fn drop(&mut self) {
        // Not waited for: let the thread end at its next block.
        self.stopped.store(true, Ordering::SeqCst);
    }
}

impl<E> fmt::Debug for ProcessStage<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessStage")
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ThreadStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadStage")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
