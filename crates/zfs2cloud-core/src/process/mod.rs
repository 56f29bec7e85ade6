//! The one way zfs2cloud starts external programs.
//!
//! Every `zfs`, `gpg`, `rclone` and hook invocation goes through [`Runner`].
//! It gives the same guarantees everywhere:
//!
//! * failure is decided by the exit status, never by whether stderr is empty
//!   (`zfs` prints warnings on success, `gpg` prints notes);
//! * stderr is drained on its own thread, so a chatty child can never fill
//!   the pipe and deadlock against us while we read its stdout;
//! * errors carry the program, the arguments with secrets redacted, the
//!   status and the tail of stderr;
//! * every command is logged with its duration;
//! * in dry-run mode commands that change state are reported, not run;
//! * a [`RunningProcess`] that is dropped without being waited for is killed
//!   and reaped, and its `Drop` never panics.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};

mod idle;

use idle::IdleMonitor;

/// How much of a child's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 16 * 1024;

/// Errors from starting or running an external program.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started at all (not found, not executable).
    #[error("could not start `{program}` ({command}): {source}")]
    Spawn {
        /// The program as configured.
        program: String,
        /// The full command line, secrets redacted.
        command: String,
        /// Why the OS refused.
        #[source]
        source: io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("`{command}` failed with {status}{}", stderr_suffix(stderr))]
    Failed {
        /// The program as configured.
        program: String,
        /// The full command line, secrets redacted.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// The last part of what it printed on stderr.
        stderr: String,
    },
    /// The run was interrupted (SIGINT/SIGTERM) and the program was stopped.
    #[error("`{command}` was stopped because zfs2cloud was interrupted")]
    Cancelled {
        /// The full command line, secrets redacted.
        command: String,
    },
    /// The program ran longer than its timeout and was stopped.
    #[error("`{command}` did not finish within {}s and was stopped{}", timeout.as_secs_f64(), stderr_suffix(stderr))]
    TimedOut {
        /// The full command line, secrets redacted.
        command: String,
        /// The timeout.
        timeout: Duration,
        /// The last part of what it printed on stderr.
        stderr: String,
    },
    /// The program read and wrote nothing for its idle limit and was
    /// stopped.
    #[error("`{command}` made no progress for {}s and was stopped{}", idle.as_secs_f64(), stderr_suffix(stderr))]
    Stalled {
        /// The full command line, secrets redacted.
        command: String,
        /// The idle limit.
        idle: Duration,
        /// The last part of what it printed on stderr.
        stderr: String,
    },
    /// Reading or writing one of the program's pipes failed.
    #[error("I/O error while talking to `{command}`: {source}")]
    Io {
        /// The full command line, secrets redacted.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ProcessError {
    /// The stderr tail of a failed program, or `""` for other errors.
    #[must_use]
    pub fn stderr(&self) -> &str {
        match self {
            Self::Failed { stderr, .. }
            | Self::TimedOut { stderr, .. }
            | Self::Stalled { stderr, .. } => stderr,
            _ => "",
        }
    }

    /// The exit status of a failed program, if it ran.
    #[must_use]
    pub fn status(&self) -> Option<ExitStatus> {
        match self {
            Self::Failed { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        " (no output on stderr)".to_owned()
    } else {
        format!(": {trimmed}")
    }
}

/// A program and its arguments, some of which may be secret.
///
/// Secret arguments are passed to the program unchanged but shown as `***`
/// in logs, errors and dry-run output. zfs2cloud itself never puts a
/// passphrase in argv; this exists for user-supplied flags such as
/// `--s3-secret-access-key=…` in `rclone_global_flags`.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandLine {
    program: PathBuf,
    /// Each argument, with what to show instead of it when it is secret.
    args: Vec<(OsString, Option<String>)>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    current_dir: Option<PathBuf>,
}

impl CommandLine {
    /// A command line for `program` with no arguments.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            current_dir: None,
        }
    }

    /// Appends one argument that may be shown in logs.
    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push((arg.as_ref().to_owned(), None));
        self
    }

    /// Appends several arguments that may be shown in logs.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    /// Appends user-supplied flags, showing the values of secret-looking
    /// ones (`--s3-secret-access-key=…`, `--password …`) as `***`, the same
    /// masking as `check-config` ([`mask_secret_flags`](crate::mask_secret_flags)).
    #[must_use]
    pub fn user_flags(mut self, flags: &[String]) -> Self {
        let shown = crate::model::mask_secret_flags(flags);
        for (flag, shown) in flags.iter().zip(shown) {
            let display = (shown != *flag).then_some(shown);
            self.args.push((OsString::from(flag), display));
        }
        self
    }

    /// Sets an environment variable for the child.
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Removes an environment variable from the child's environment.
    #[must_use]
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env_remove.push(key.as_ref().to_owned());
        self
    }

    /// Runs the child in `dir`.
    #[must_use]
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// The program to run.
    #[must_use]
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The value the child gets for `key` from this command line, if set.
    #[cfg(test)]
    pub(crate) fn env_value(&self, key: &str) -> Option<&OsStr> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_os_str())
    }

    /// The arguments as they are passed to the program (secrets included),
    /// for tests that check a secret reaches the program.
    #[cfg(test)]
    pub(crate) fn raw_args(&self) -> impl Iterator<Item = &OsStr> {
        self.args.iter().map(|(a, _)| a.as_os_str())
    }

    fn to_command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(self.args.iter().map(|(a, _)| a));
        for key in &self.env_remove {
            cmd.env_remove(key);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        cmd
    }
}

/// Shows the command line shell-quoted, with secret arguments as `***`.
impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shell_quote(self.program.as_os_str()))?;
        for (arg, shown) in &self.args {
            f.write_str(" ")?;
            match shown {
                Some(masked) => f.write_str(masked)?,
                None => f.write_str(&shell_quote(arg))?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandLine({self})")
    }
}

/// Quotes one word so that a human can paste it into a POSIX shell.
///
/// This is for display only: zfs2cloud never runs anything through a shell.
#[must_use]
pub fn shell_quote(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
    if safe {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Receives the description of every state-changing action that dry-run mode
/// skips.
pub type DryRunSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Starts external programs; see the module documentation for the guarantees.
#[derive(Clone)]
pub struct Runner {
    dry_run: Option<DryRunSink>,
    cancel: CancelToken,
}

/// Set when the run is interrupted (the binary sets it from SIGINT and
/// SIGTERM), or when the running step's deadline passes. Running commands
/// are stopped and long loops give up when it is set. Clones share the
/// state.
///
/// A deadline ends one step: it is the same stop as an interruption for
/// everything that watches the token (so no loop or pipeline needs its own
/// timer), but it is cleared when the step ends, and cleanup that ignores
/// cancellation (`post_snapshot`, `on_failure`) still runs.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    interrupted: Arc<AtomicBool>,
    /// When the running step must have finished, and its limit.
    deadline: Arc<std::sync::Mutex<Option<(Instant, Duration)>>>,
}

impl CancelToken {
    /// A token that is not cancelled.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the run as interrupted.
    pub fn cancel(&self) {
        self.interrupted.store(true, AtomicOrdering::SeqCst);
    }

    /// Whether the run was interrupted or the step's deadline has passed.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.is_interrupted() || self.timed_out().is_some()
    }

    /// Whether the run was interrupted (by a signal), as opposed to a step
    /// running out of time.
    #[must_use]
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(AtomicOrdering::SeqCst)
    }

    /// Gives the step that starts now `limit` to finish (`None`: no limit),
    /// replacing any earlier deadline.
    pub fn set_step_limit(&self, limit: Option<Duration>) {
        let deadline = limit.map(|l| (Instant::now() + l, l));
        *self
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = deadline;
    }

    /// Time left before the step's deadline (zero once it has passed);
    /// `None` without a deadline.
    #[must_use]
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|(at, _)| at.saturating_duration_since(Instant::now()))
    }

    /// Runs one step's work `f` under `limit` (`None`: none), clearing the
    /// deadline afterwards. Returns `f`'s result, and the limit if the
    /// step ran out of it (an interruption by a signal is not that).
    pub fn run_limited<T>(
        &self,
        limit: Option<Duration>,
        f: impl FnOnce() -> T,
    ) -> (T, Option<Duration>) {
        self.set_step_limit(limit);
        let result = f();
        let timed_out = self.timed_out().filter(|_| !self.is_interrupted());
        self.set_step_limit(None);
        (result, timed_out)
    }

    /// The step's limit, if its deadline has passed.
    #[must_use]
    pub fn timed_out(&self) -> Option<Duration> {
        self.deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .filter(|(at, _)| Instant::now() >= *at)
            .map(|(_, limit)| limit)
    }

    /// Runs `f` while a watcher thread calls `on_cancel` once the token is
    /// cancelled, and again every 50 ms (`WATCH_INTERVAL`) until `f` returns.
    /// For work blocked in a read or a write that cannot look at the flag
    /// itself: `on_cancel` stops what it waits on. It is called again
    /// because what it stops may have been replaced meanwhile (the next
    /// chunk's `rclone cat`); it must be callable any number of times.
    pub fn watch<T>(&self, on_cancel: impl Fn() + Sync, f: impl FnOnce() -> T) -> T {
        let finished = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                while !finished.load(AtomicOrdering::SeqCst) {
                    if self.is_cancelled() {
                        on_cancel();
                    }
                    std::thread::park_timeout(WATCH_INTERVAL);
                }
            });
            let result = f();
            finished.store(true, AtomicOrdering::SeqCst);
            // Not a whole interval's wait for the scope to end.
            watcher.thread().unpark();
            result
        })
    }

    /// The interruption flag, e.g. for `signal_hook::flag::register`.
    #[must_use]
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.interrupted)
    }
}

/// Per-command settings beyond the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Bytes written to the child's stdin (then closed); `/dev/null` when
    /// `None`.
    pub stdin_data: Option<Vec<u8>>,
    /// Stop the child (SIGTERM, then SIGKILL) if it runs longer.
    pub timeout: Option<Duration>,
    /// Run to completion even if the run is interrupted. For `post_snapshot`,
    /// which must restart the application whatever happens.
    pub ignore_cancel: bool,
    /// Stop the child (SIGTERM, then SIGKILL) once it has read and written
    /// nothing but its stderr for this long, judged by its I/O counters in
    /// `/proc/<pid>/io`. Where those cannot be read it is not watched.
    pub idle_timeout: Option<Duration>,
}

/// The longest a cleanup command (`zfs destroy` of a temporary clone,
/// `umount`, a rollback) may take. Cleanup runs even after an interruption,
/// so it must be bounded on its own, or a hung `zfs` would hold the run
/// (and its lock) forever.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);

impl RunOptions {
    /// Options for a cleanup command: it runs even when the run is
    /// interrupted, for at most [`CLEANUP_TIMEOUT`], and, inside a step
    /// with a time limit, no longer than what is left of it.
    #[must_use]
    pub fn cleanup(runner: &Runner) -> Self {
        let timeout = runner
            .cancel_token()
            .remaining()
            .map_or(CLEANUP_TIMEOUT, |left| left.min(CLEANUP_TIMEOUT));
        Self {
            ignore_cancel: true,
            timeout: Some(timeout),
            ..Self::default()
        }
    }
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("dry_run", &self.dry_run.is_some())
            .field("cancelled", &self.cancel.is_cancelled())
            .finish()
    }
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// The tail of what it wrote to stderr.
    pub stderr: String,
}

impl Output {
    /// stdout as UTF-8, with invalid sequences replaced.
    #[must_use]
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// How the child's standard streams and extra descriptors are set up.
#[derive(Debug, Default)]
pub struct SpawnOptions {
    /// The child's stdin; `/dev/null` when `None`.
    pub stdin: Option<Stdio>,
    /// Whether to capture stdout through a pipe ([`RunningProcess::take_stdout`]).
    /// When false, stdout goes to `/dev/null`.
    pub pipe_stdout: bool,
    /// Descriptors to hand to the child at fixed numbers, e.g. a passphrase
    /// pipe at fd 3 for `gpg --passphrase-fd 3`.
    pub extra_fds: Vec<(OwnedFd, i32)>,
}

impl Runner {
    /// A runner that runs everything.
    #[must_use]
    pub fn new() -> Self {
        Self {
            dry_run: None,
            cancel: CancelToken::new(),
        }
    }

    /// A runner that reports state-changing commands to `sink` instead of
    /// running them. Read-only queries still run.
    #[must_use]
    pub fn dry_run(sink: DryRunSink) -> Self {
        Self {
            dry_run: Some(sink),
            cancel: CancelToken::new(),
        }
    }

    /// This runner, stopping its commands when `cancel` is set.
    #[must_use]
    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The cancellation flag this runner obeys.
    #[must_use]
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Whether this runner is in dry-run mode.
    #[must_use]
    pub fn is_dry_run(&self) -> bool {
        self.dry_run.is_some()
    }

    /// In dry-run mode, reports `action` and returns `true` (meaning: skip
    /// it). Otherwise returns `false`.
    pub fn skip_in_dry_run(&self, action: &str) -> bool {
        match &self.dry_run {
            Some(sink) => {
                sink(action);
                true
            }
            None => false,
        }
    }

    /// Runs a command that only reads state, even in dry-run mode, and
    /// returns its output.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Spawn`] if it cannot start, [`ProcessError::Failed`]
    /// if it exits unsuccessfully, [`ProcessError::Io`] if its pipes fail.
    pub fn query(&self, cmd: &CommandLine) -> Result<Output, ProcessError> {
        self.run_capture(cmd, &RunOptions::default())
    }

    /// [`Runner::query`] with [`RunOptions`] (e.g. a query made while
    /// cleaning up after an interruption).
    ///
    /// # Errors
    ///
    /// As for [`Runner::query`].
    pub fn query_with(&self, cmd: &CommandLine, opts: &RunOptions) -> Result<Output, ProcessError> {
        self.run_capture(cmd, opts)
    }

    /// Runs a command that changes state. In dry-run mode it is reported and
    /// `Ok(None)` is returned.
    ///
    /// # Errors
    ///
    /// As for [`Runner::query`].
    pub fn mutate(&self, cmd: &CommandLine) -> Result<Option<Output>, ProcessError> {
        self.mutate_with(cmd, &RunOptions::default())
    }

    /// [`Runner::mutate`] with stdin data, a timeout, or immunity to
    /// cancellation.
    ///
    /// # Errors
    ///
    /// As for [`Runner::query`], plus [`ProcessError::TimedOut`] and
    /// [`ProcessError::Cancelled`].
    pub fn mutate_with(
        &self,
        cmd: &CommandLine,
        opts: &RunOptions,
    ) -> Result<Option<Output>, ProcessError> {
        if self.skip_in_dry_run(&cmd.to_string()) {
            return Ok(None);
        }
        self.run_capture(cmd, opts).map(Some)
    }

    fn run_capture(&self, cmd: &CommandLine, opts: &RunOptions) -> Result<Output, ProcessError> {
        if !opts.ignore_cancel && self.cancel.is_cancelled() {
            return Err(ProcessError::Cancelled {
                command: cmd.to_string(),
            });
        }
        let mut proc = self.spawn(
            cmd,
            SpawnOptions {
                stdin: opts.stdin_data.as_ref().map(|_| Stdio::piped()),
                pipe_stdout: true,
                ..SpawnOptions::default()
            },
        )?;
        // Feed stdin and read stdout on threads so that waiting can watch
        // the clock and the cancel flag, and no pipe can deadlock.
        let writer = match (proc.take_stdin(), opts.stdin_data.clone()) {
            (Some(mut stdin), Some(data)) => Some(std::thread::spawn(move || {
                // A child that does not read its stdin is not an error.
                let _ = std::io::Write::write_all(&mut stdin, &data);
            })),
            _ => None,
        };
        let reader = proc.take_stdout().map(|mut out| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                out.read_to_end(&mut buf).map(|_| buf)
            })
        });
        let finished = proc.wait_with(&StopWhen {
            cancel: (!opts.ignore_cancel).then_some(&self.cancel),
            timeout: opts.timeout,
            idle: opts.idle_timeout,
        });
        if let Some(w) = writer {
            let _ = join_bounded(w, &finished.command);
        }
        let stdout = match reader.map(|r| join_bounded(r, &finished.command)) {
            Some(Some(Ok(buf))) => Ok(buf),
            Some(Some(Err(source))) => Err(source),
            // Left behind by join_bounded, which warned: whatever the child
            // printed is lost, but the run goes on.
            Some(None) => Ok(Vec::new()),
            None => Ok(Vec::new()),
        };
        finished.clone().into_result()?;
        let stdout = stdout.map_err(|source| ProcessError::Io {
            command: cmd.to_string(),
            source,
        })?;
        Ok(Output {
            stdout,
            stderr: finished.stderr,
        })
    }

    /// Starts a command and returns it running. This is for streaming
    /// pipelines; the caller must call [`RunningProcess::wait`].
    ///
    /// Spawning happens even in dry-run mode: callers decide what a pipeline
    /// does in dry-run mode before they build it.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Spawn`] if it cannot start.
    pub fn spawn(
        &self,
        cmd: &CommandLine,
        opts: SpawnOptions,
    ) -> Result<RunningProcess, ProcessError> {
        let shown = cmd.to_string();
        let mut command = cmd.to_command();
        command.stdin(opts.stdin.unwrap_or_else(Stdio::null));
        command.stdout(if opts.pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        command.stderr(Stdio::piped());
        // Each child leads its own process group, so that stopping it also
        // stops what it started (a hook's `sleep`, a shell pipeline) and a
        // terminal's Ctrl-C reaches zfs2cloud, which then decides what to
        // stop, and not post_snapshot.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        if !opts.extra_fds.is_empty() {
            let mappings = opts
                .extra_fds
                .into_iter()
                .map(|(parent_fd, child_fd)| FdMapping {
                    parent_fd,
                    child_fd,
                })
                .collect();
            command
                .fd_mappings(mappings)
                .map_err(|_| ProcessError::Spawn {
                    program: cmd.program.display().to_string(),
                    command: shown.clone(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "two descriptors mapped to the same child fd",
                    ),
                })?;
        }
        log::debug!("starting: {shown}");
        let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: cmd.program.display().to_string(),
            command: shown.clone(),
            source,
        })?;
        let stderr_bytes = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&stderr_bytes);
        let stderr_thread = child.stderr.take().and_then(|stderr| {
            std::thread::Builder::new()
                .name("stderr-drain".into())
                .spawn(move || drain_tail(stderr, &counted))
                .ok()
        });
        Ok(RunningProcess {
            child,
            program: cmd.program.display().to_string(),
            command: shown,
            stderr_thread,
            stderr_bytes,
            started: Instant::now(),
            finished: false,
        })
    }
}

/// Reads `r` to the end, keeping only the last [`STDERR_TAIL_BYTES`] and
/// counting every byte in `count`.
fn drain_tail(mut r: impl Read, count: &AtomicU64) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                count.fetch_add(n as u64, AtomicOrdering::Relaxed);
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if tail.len() > STDERR_TAIL_BYTES {
        tail.drain(..tail.len() - STDERR_TAIL_BYTES);
    }
    tail
}

/// A started child process. Wait for it with [`RunningProcess::wait`];
/// dropping it instead kills and reaps it.
#[derive(Debug)]
pub struct RunningProcess {
    child: Child,
    program: String,
    command: String,
    stderr_thread: Option<JoinHandle<Vec<u8>>>,
    /// Bytes read from its stderr so far: output, not progress.
    stderr_bytes: Arc<AtomicU64>,
    started: Instant,
    finished: bool,
}

/// How a [`RunningProcess`] ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The program as configured.
    pub program: String,
    /// The command line, secrets redacted.
    pub command: String,
    /// The exit status; `None` if waiting for it failed.
    pub status: Option<ExitStatus>,
    /// The tail of stderr.
    pub stderr: String,
    /// Wall-clock run time.
    pub duration: Duration,
    /// Why zfs2cloud stopped it, if it did.
    pub stopped: Option<StopReason>,
    wait_error: Option<String>,
}

/// Why zfs2cloud stopped a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The run was interrupted.
    Cancelled,
    /// The child exceeded this timeout.
    TimedOut(Duration),
    /// The child read and wrote nothing for this long.
    Idle(Duration),
}

/// When [`RunningProcess::wait_with`] stops a child before it exits.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopWhen<'a> {
    /// When this is cancelled (or its step's deadline passes).
    pub cancel: Option<&'a CancelToken>,
    /// When it has run this long.
    pub timeout: Option<Duration>,
    /// When it has made no progress for this long (see
    /// [`RunOptions::idle_timeout`]).
    pub idle: Option<Duration>,
}

impl Finished {
    /// Whether the process exited with status 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// `Ok(())` on success, else the matching [`ProcessError`].
    ///
    /// # Errors
    ///
    /// [`ProcessError::Failed`] for a non-zero exit or a signal,
    /// [`ProcessError::Io`] if the status could not be collected.
    pub fn into_result(self) -> Result<(), ProcessError> {
        match self.stopped {
            Some(StopReason::Cancelled) => {
                return Err(ProcessError::Cancelled {
                    command: self.command,
                })
            }
            Some(StopReason::TimedOut(timeout)) => {
                return Err(ProcessError::TimedOut {
                    command: self.command,
                    timeout,
                    stderr: self.stderr,
                })
            }
            Some(StopReason::Idle(idle)) => {
                return Err(ProcessError::Stalled {
                    command: self.command,
                    idle,
                    stderr: self.stderr,
                })
            }
            None => {}
        }
        match self.status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(ProcessError::Failed {
                program: self.program,
                command: self.command,
                status,
                stderr: self.stderr,
            }),
            None => Err(ProcessError::Io {
                command: self.command,
                source: io::Error::other(self.wait_error.unwrap_or_default()),
            }),
        }
    }
}

impl RunningProcess {
    /// The child's stdout pipe, if it was requested and not yet taken.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's stdin pipe, if one was requested and not yet taken.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// The OS process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The command line, secrets redacted.
    #[must_use]
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Kills the child and its process group (SIGKILL). It must still be
    /// waited for.
    pub fn kill(&mut self) {
        // The child may have exited already; that is not an error here.
        self.kill_group();
    }

    /// Sends SIGTERM to the child's process group (a polite stop that lets
    /// rclone or a hook clean up).
    pub fn terminate(&self) {
        terminate_pid(self.child.id());
    }

    fn kill_group(&mut self) {
        signal_group(self.child.id(), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
    }

    /// Waits for the child to exit and collects its stderr tail. Logs the
    /// command with its duration and status.
    pub fn wait(self) -> Finished {
        self.wait_until(None, None)
    }

    /// Like [`RunningProcess::wait`], but stops the child (SIGTERM, then
    /// SIGKILL after a grace period) when `cancel` is set or `timeout`
    /// passes.
    pub fn wait_until(self, cancel: Option<&CancelToken>, timeout: Option<Duration>) -> Finished {
        self.wait_with(&StopWhen {
            cancel,
            timeout,
            idle: None,
        })
    }

    /// Like [`RunningProcess::wait`], but stops the child (SIGTERM, then
    /// SIGKILL after a grace period) as soon as `stop` says so.
    pub fn wait_with(mut self, stop: &StopWhen<'_>) -> Finished {
        // Close our end of its stdout first so a child blocked writing to a
        // pipe nobody reads gets EPIPE instead of hanging forever.
        drop(self.child.stdout.take());
        drop(self.child.stdin.take());
        let stopped = self.watch(stop);
        let waited = self.child.wait();
        self.finished = true;
        let stderr = self
            .stderr_thread
            .take()
            .and_then(|t| join_bounded(t, &self.command))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        let duration = self.started.elapsed();
        let (status, wait_error) = match waited {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let shown_status = status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string());
        if let Some(reason) = stopped {
            log::warn!(
                "stopped `{}` after {:.3}s ({reason:?})",
                self.command,
                duration.as_secs_f64()
            );
        } else if status.is_some_and(|s| s.success()) {
            log::info!(
                "ran `{}` in {:.3}s ({shown_status})",
                self.command,
                duration.as_secs_f64()
            );
        } else {
            // Callers decide whether a failure matters (rclone's "directory
            // not found" is an answer); the error carries it if it does.
            log::info!(
                "`{}` failed after {:.3}s ({shown_status})",
                self.command,
                duration.as_secs_f64()
            );
        }
        Finished {
            program: std::mem::take(&mut self.program),
            command: std::mem::take(&mut self.command),
            status,
            stderr,
            duration,
            stopped,
            wait_error,
        }
    }
}

impl RunningProcess {
    /// Polls the child until it exits, stopping it (SIGTERM, then SIGKILL
    /// after [`STOP_GRACE`]) when `stop` says so; why it was stopped.
    fn watch(&mut self, stop: &StopWhen<'_>) -> Option<StopReason> {
        if stop.cancel.is_none() && stop.timeout.is_none() && stop.idle.is_none() {
            return None;
        }
        let stderr_bytes = Arc::clone(&self.stderr_bytes);
        let mut idle = stop
            .idle
            .and_then(|limit| IdleMonitor::start(self.id(), limit, stderr_bytes, &self.command));
        let mut stopped = None;
        let mut terminated_at: Option<Instant> = None;
        while let Ok(None) = self.child.try_wait() {
            if let Some(at) = terminated_at {
                if at.elapsed() > STOP_GRACE {
                    self.kill_group();
                }
            } else if let Some(reason) = self.stop_reason(stop, idle.as_mut()) {
                stopped = Some(reason);
                self.terminate();
                terminated_at = Some(Instant::now());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        stopped
    }

    /// Why the running child must be stopped now, if it must.
    fn stop_reason(
        &self,
        stop: &StopWhen<'_>,
        idle: Option<&mut IdleMonitor>,
    ) -> Option<StopReason> {
        if let Some(limit) = stop.cancel.and_then(CancelToken::timed_out) {
            Some(StopReason::TimedOut(limit))
        } else if stop.cancel.is_some_and(CancelToken::is_cancelled) {
            Some(StopReason::Cancelled)
        } else if let Some(t) = stop.timeout.filter(|t| self.started.elapsed() > *t) {
            Some(StopReason::TimedOut(t))
        } else {
            let limit = stop.idle?;
            idle?
                .stalled(Instant::now())
                .then_some(StopReason::Idle(limit))
        }
    }
}

/// How often a waiting loop looks at the clock and the cancel flag.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How often [`CancelToken::watch`] looks at the token.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);
/// How long a stopped child gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Sends SIGTERM to the process group led by `pid` (every child started by
/// [`Runner::spawn`] leads one). Errors (it already exited) are ignored.
pub fn terminate_pid(pid: u32) {
    signal_group(pid, nix::sys::signal::Signal::SIGTERM);
}

fn signal_group(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// How long a pipe may stay open after its child exited: long enough for
/// the last output to drain.
const PIPE_GRACE: Duration = Duration::from_secs(3);

/// Joins a pipe thread, but only waits [`PIPE_GRACE`] once the child is
/// gone. A background process started by a hook (`nohup app &` in
/// post_snapshot) inherits the hook's stdout/stderr and keeps them open for
/// as long as it runs; waiting for EOF would hang the backup, and with it
/// the lock, forever. Such a thread is left behind instead (it ends when
/// the pipe closes) and `None` is returned.
fn join_bounded<T>(thread: JoinHandle<T>, command: &str) -> Option<T> {
    let deadline = Instant::now() + PIPE_GRACE;
    while !thread.is_finished() {
        if Instant::now() > deadline {
            log::warn!(
                "`{command}` exited, but something it started still holds its output open (a \
                 background process?); not waiting for it. Redirect the output of background \
                 processes in hooks, e.g. `app >/dev/null 2>&1 &`"
            );
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    thread.join().ok()
}

impl Drop for RunningProcess {
    fn drop(&mut self) {
        if !self.finished {
            // Never panic here: a failed kill means it already exited.
            self.kill_group();
            let _ = self.child.wait();
            if let Some(t) = self.stderr_thread.take() {
                let _ = join_bounded(t, &self.command);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::Mutex;

    fn sh(script: &str) -> CommandLine {
        CommandLine::new("/bin/sh").arg("-c").arg(script)
    }

    #[test]
    fn a_step_limit_stops_the_step_and_is_cleared_after_it() {
        let token = CancelToken::new();
        let limit = Some(Duration::from_millis(50));
        let (seen, timed_out) = token.run_limited(limit, || {
            std::thread::sleep(Duration::from_millis(100));
            token.is_cancelled()
        });
        assert!(seen, "the deadline cancels the running step");
        assert_eq!(timed_out, limit);
        assert!(!token.is_cancelled(), "cleared when the step ends");
        let ((), timed_out) = token.run_limited(limit, || ());
        assert_eq!(timed_out, None, "a step within its limit");
        token.cancel();
        let ((), timed_out) = token.run_limited(limit, || {
            std::thread::sleep(Duration::from_millis(100));
        });
        assert_eq!(timed_out, None, "a signal is not a timeout");
    }

    #[test]
    fn failure_is_decided_by_status_not_stderr() {
        let runner = Runner::new();
        let out = runner
            .query(&sh("echo warning >&2; echo ok"))
            .expect("stderr alone is not failure");
        assert_eq!(out.stdout_lossy(), "ok\n");
        assert_eq!(out.stderr, "warning\n");

        let err = runner.query(&sh("exit 3")).unwrap_err();
        assert_eq!(err.status().and_then(|s| s.code()), Some(3));
        assert!(err.to_string().contains("no output on stderr"), "{err}");
    }

    #[test]
    fn error_carries_command_status_and_stderr_tail() {
        let err = Runner::new()
            .query(&sh(
                "echo 'cannot open: dataset does not exist' >&2; exit 1",
            ))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/bin/sh -c"), "{msg}");
        assert!(msg.contains("exit status: 1"), "{msg}");
        assert!(msg.contains("dataset does not exist"), "{msg}");
    }

    #[test]
    fn secret_flags_are_redacted_everywhere_but_passed_through() {
        let cmd = CommandLine::new("/bin/sh")
            .arg("-c")
            .arg(r#"test "$1" = "$EXPECTED" || exit 9; exit 4"#)
            .user_flags(&["--password".to_owned(), "hunter2".to_owned()])
            .env("EXPECTED", "hunter2");
        assert!(!cmd.to_string().contains("hunter2"));
        assert!(!format!("{cmd:?}").contains("hunter2"));
        let err = Runner::new().query(&cmd).unwrap_err();
        // 4, not 9: the secret reached the child unchanged.
        assert_eq!(err.status().and_then(|s| s.code()), Some(4));
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[test]
    fn large_stderr_does_not_deadlock_and_is_truncated() {
        // 1 MiB on stderr before any stdout: a reader that drained stderr
        // only after stdout would deadlock here.
        let out = Runner::new()
            .query(&sh("head -c 1048576 /dev/zero | tr '\\0' x >&2; echo done"))
            .unwrap();
        assert_eq!(out.stdout_lossy(), "done\n");
        assert_eq!(out.stderr.len(), STDERR_TAIL_BYTES);
    }

    #[test]
    fn spawn_failure_names_the_program() {
        let err = Runner::new()
            .query(&CommandLine::new("/nonexistent/zfs").arg("list"))
            .unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }));
        assert!(err.to_string().contains("/nonexistent/zfs"), "{err}");
    }

    #[test]
    fn dry_run_reports_mutations_and_runs_queries() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink_seen = Arc::clone(&seen);
        let runner = Runner::dry_run(Arc::new(move |s: &str| {
            sink_seen.lock().unwrap().push(s.to_owned());
        }));
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let out = runner
            .mutate(&CommandLine::new("touch").arg(&marker))
            .unwrap();
        assert!(out.is_none());
        assert!(!marker.exists());
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert!(seen.lock().unwrap()[0].starts_with("touch "));
        let q = runner.query(&sh("echo hi")).unwrap();
        assert_eq!(q.stdout_lossy(), "hi\n");
    }

    #[test]
    fn extra_fd_reaches_the_child() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        std::io::Write::write_all(&mut writer, b"from-fd-3").unwrap();
        drop(writer);
        let mut proc = Runner::new()
            .spawn(
                &sh("cat <&3"),
                SpawnOptions {
                    pipe_stdout: true,
                    extra_fds: vec![(reader.into(), 3)],
                    ..SpawnOptions::default()
                },
            )
            .unwrap();
        let mut out = String::new();
        proc.take_stdout()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        proc.wait().into_result().unwrap();
        assert_eq!(out, "from-fd-3");
    }

    #[test]
    fn dropping_a_running_process_kills_it() {
        let proc = Runner::new()
            .spawn(&sh("sleep 30"), SpawnOptions::default())
            .unwrap();
        let pid = proc.id();
        drop(proc);
        // Reaped: /proc/<pid> is gone (or reused by an unrelated process,
        // which would not be our sleeping shell).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains("sleep 30"));
    }

    #[test]
    fn stdin_data_reaches_the_child() {
        let out = Runner::new()
            .mutate_with(
                &sh("tr a-z A-Z"),
                &RunOptions {
                    stdin_data: Some(b"error text".to_vec()),
                    ..RunOptions::default()
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(out.stdout_lossy(), "ERROR TEXT");
    }

    #[test]
    fn a_timeout_stops_the_child_and_says_so() {
        let started = Instant::now();
        let err = Runner::new()
            .mutate_with(
                &sh("echo starting >&2; sleep 30"),
                &RunOptions {
                    timeout: Some(Duration::from_millis(200)),
                    ..RunOptions::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains("starting"), "{err}");
        // Bound, not timing: SIGTERM ends `sleep` long before its 30 s.
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn a_child_that_does_nothing_is_stopped_and_one_that_works_is_not() {
        if std::fs::read(format!("/proc/{}/io", std::process::id())).is_err() {
            return;
        }
        let idle = |limit_ms| RunOptions {
            idle_timeout: Some(Duration::from_millis(limit_ms)),
            ..RunOptions::default()
        };
        let started = Instant::now();
        let err = Runner::new()
            .mutate_with(&sh("echo waiting >&2; sleep 30"), &idle(300))
            .unwrap_err();
        assert!(matches!(err, ProcessError::Stalled { .. }), "{err}");
        assert!(
            err.to_string().contains("made no progress for 0.3s"),
            "{err}"
        );
        assert!(err.to_string().contains("waiting"), "{err}");
        // A bound, not a timing: far less than the `sleep 30`.
        assert!(started.elapsed() < Duration::from_secs(20));
        // Output every 0.1 s for 1.5 s: slow, but never idle for 1 s.
        let busy = "i=0; while [ $i -lt 15 ]; do echo x; sleep 0.1; i=$((i+1)); done";
        Runner::new().mutate_with(&sh(busy), &idle(1000)).unwrap();
        // The same work in a child of a shell that waits for it (a wrapper
        // that does not `exec`): the shell does nothing, its group works.
        let wrapped = format!("sh -c '{busy}'; true");
        Runner::new()
            .mutate_with(&sh(&wrapped), &idle(1000))
            .unwrap();
    }

    #[test]
    fn cancellation_stops_running_commands_unless_told_otherwise() {
        let cancel = CancelToken::new();
        let runner = Runner::new().with_cancel(cancel.clone());
        let c2 = cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            c2.cancel();
        });
        let err = runner.mutate(&sh("sleep 30")).unwrap_err();
        t.join().unwrap();
        assert!(matches!(err, ProcessError::Cancelled { .. }), "{err}");
        // Once cancelled, new commands do not start...
        assert!(matches!(
            runner.mutate(&sh("true")).unwrap_err(),
            ProcessError::Cancelled { .. }
        ));
        // ...except those that must run anyway (post_snapshot).
        let out = runner
            .mutate_with(
                &sh("echo still"),
                &RunOptions {
                    ignore_cancel: true,
                    ..RunOptions::default()
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(out.stdout_lossy(), "still\n");
    }

    #[test]
    fn a_background_process_holding_the_output_does_not_hang_the_run() {
        // `nohup app &` in a hook: the hook exits, the app keeps the pipes.
        let started = Instant::now();
        let out = Runner::new()
            .mutate(&sh("sleep 30 & echo started"))
            .unwrap()
            .unwrap();
        // A bound, not a timing: far less than the background `sleep 30`.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert!(out.stderr.is_empty());
    }

    #[test]
    fn shell_quote_is_safe_for_awkward_words() {
        assert_eq!(shell_quote(OsStr::new("tank/data@1")), "tank/data@1");
        assert_eq!(shell_quote(OsStr::new("a b")), "'a b'");
        assert_eq!(shell_quote(OsStr::new("it's")), r"'it'\''s'");
        assert_eq!(shell_quote(OsStr::new("")), "''");
        assert_eq!(shell_quote(OsStr::new("$x;y")), "'$x;y'");
    }
}
