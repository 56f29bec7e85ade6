//! Samplers that run in their own thread while a timed command runs.
//!
//! * [`RssSampler`]: the peak resident set of one process (not its
//!   children), from `VmHWM` in `/proc/<pid>/status` every 20 ms. `VmHWM`
//!   is the kernel's own high-water mark, so sampling only misses growth in
//!   the process's last 20 ms.
//! * [`DiskSampler`]: the peak sum of file sizes under a directory (all
//!   files, and chunk files only), walked every 10 ms.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Samples `VmHWM` of one pid.
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

/// `VmHWM` of `pid` in bytes, if the process is alive (a zombie has none).
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                // Read before checking the flag, so the last sample is taken
                // as late as possible.
                if let Some(v) = vm_hwm(pid) {
                    peak = peak.max(v);
                }
                if flag.load(Ordering::SeqCst) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { stop, thread }
    }

    /// Stops sampling; the peak `VmHWM` seen, in bytes.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or(0)
    }
}

/// Samples the bytes under a directory.
#[derive(Debug)]
pub struct DiskSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<DiskPeak>,
}

/// Peaks seen by a [`DiskSampler`] (each the largest of any one sample).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskPeak {
    /// All files: chunks, `SHA256SUMS`, `manifest.json`, the lock file.
    pub total: u64,
    /// Chunk files only (`*.zfs*.gpg.NNNN`).
    pub chunks: u64,
}

/// Whether a file name is an export chunk (`ds@snap.zfs.gpg.0000`).
pub fn is_chunk(name: &str) -> bool {
    name.contains(".zfs") && name.contains(".gpg.")
}

/// Bytes of all regular files under `dir`, and of the chunks among them.
/// Files and directories vanish while this walks (chunks are deleted
/// once uploaded); those are skipped.
pub fn tree_usage(dir: &Path) -> DiskPeak {
    let mut usage = DiskPeak::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return usage;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let sub = tree_usage(&entry.path());
            usage.total += sub.total;
            usage.chunks += sub.chunks;
        } else if meta.is_file() {
            usage.total += meta.len();
            if is_chunk(&entry.file_name().to_string_lossy()) {
                usage.chunks += meta.len();
            }
        }
    }
    usage
}

/// Sum of the sizes of all regular files under `dir`.
pub fn tree_bytes(dir: &Path) -> u64 {
    tree_usage(dir).total
}

impl DiskSampler {
    /// Starts sampling `dir` (which need not exist yet).
    pub fn start(dir: &Path) -> Self {
        let dir: PathBuf = dir.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = DiskPeak::default();
            loop {
                let now = tree_usage(&dir);
                peak.total = peak.total.max(now.total);
                peak.chunks = peak.chunks.max(now.chunks);
                if flag.load(Ordering::SeqCst) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self { stop, thread }
    }

    /// Stops sampling; the peaks seen.
    pub fn finish(self) -> DiskPeak {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}
