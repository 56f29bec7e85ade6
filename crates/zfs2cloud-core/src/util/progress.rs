//! Progress reporting, as a trait so the library has no terminal UI.

/// Receives progress of long operations. All methods default to doing
/// nothing.
pub trait Progress: Send + Sync {
    /// A phase starts; `total` bytes if known.
    fn begin(&self, _label: &str, _total: Option<u64>) {}
    /// `bytes` more were processed.
    fn advance(&self, _bytes: u64) {}
    /// The phase ended.
    fn end(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
