//! Progress reporting, as a trait so the library has no terminal UI.
//!
//! A run reports a sequence of events: a backup's steps begin and end, and
//! inside a step one or more phases (an export, the upload of one export,
//! the receive of one backup) each begin with a label and the bytes they
//! expect, advance, name the chunk they are at, and end. A pipelined
//! export also reports what each of its upload workers is doing. Phases
//! do not nest; several may follow each other in one step.

use std::time::Duration;

/// Receives progress of long operations. All methods default to doing
/// nothing, so an implementation picks what it shows. They are called from
/// whichever thread does the work (upload workers call
/// [`Progress::worker`] from their own), and must return quickly.
pub trait Progress: Send + Sync {
    /// A phase starts, e.g. `export tank/data@20240101000000`; `total`
    /// bytes are expected, if known.
    fn begin(&self, _label: &str, _total: Option<u64>) {}
    /// `bytes` more were processed in the current phase.
    fn advance(&self, _bytes: u64) {}
    /// The phase is now at chunk `name` (a file of the export).
    fn chunk(&self, _name: &str) {}
    /// Upload worker `index` (from 0) of a pipelined export changed state.
    fn worker(&self, _index: usize, _state: WorkerState<'_>) {}
    /// The phase ended (successfully or not).
    fn end(&self) {}
    /// A step of a backup (or of a standalone command) starts.
    fn step_begin(&self, _step: &str) {}
    /// The step ended.
    fn step_end(&self, _done: &StepDone<'_>) {}
}

/// What an upload worker of a pipelined export is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState<'a> {
    /// Waiting for a sealed chunk.
    Idle,
    /// Copying `chunk` (`size` bytes) to the remote and confirming it.
    Uploading {
        /// The chunk's file name.
        chunk: &'a str,
        /// Its size in bytes.
        size: u64,
    },
    /// Waiting to try `chunk` again after a failed attempt.
    Retrying {
        /// The chunk's file name.
        chunk: &'a str,
        /// The attempt that comes next (2 for the first retry).
        attempt: u32,
    },
    /// The worker has finished.
    Done,
}

/// A finished step, as [`Progress::step_end`] gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepDone<'a> {
    /// The step's name.
    pub step: &'a str,
    /// How long it ran.
    pub duration: Duration,
    /// The bytes it exported, where it exported any.
    pub bytes: Option<u64>,
    /// Whether it failed.
    pub failed: bool,
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
