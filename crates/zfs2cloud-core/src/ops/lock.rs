//! The run lock: one zfs2cloud run per `intermediate_basedir` at a time.
//!
//! An `flock` on `<intermediate_basedir>/lock`. The kernel drops it when the
//! process dies, however it dies, so a run killed with SIGKILL never leaves a
//! lock that blocks the next one. The file holds the holder's PID and start
//! time, so a refused run can say who holds it. The file itself is never
//! deleted: deleting an flock'ed file lets two runs lock two different
//! inodes.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

/// The lock file's name inside `intermediate_basedir`.
pub const LOCK_FILE: &str = "lock";

/// Errors taking the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds it.
    #[error("another zfs2cloud run holds the lock {} ({holder})", path.display())]
    Held {
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote: its PID and start time.
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot take the lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A held run lock; dropping it releases it.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock in `basedir` (created 0700 if missing) without
    /// waiting, and records this process in it.
    ///
    /// # Errors
    ///
    /// [`LockError::Held`] naming the holder if another run has it,
    /// [`LockError::Io`] if the file cannot be created or locked.
    pub fn acquire(basedir: &Path, started: DateTime<Utc>) -> Result<Self, LockError> {
        let path = basedir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(basedir)
            .map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.split_whitespace().collect::<Vec<_>>().join(" ");
                return Err(LockError::Held {
                    path,
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let record = format!(
            "pid={} started={}\n",
            std::process::id(),
            started.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(record.as_bytes()))
            .map_err(io)?;
        log::info!("took the lock {}", path.display());
        Ok(Self { file, path })
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Closing the file would release it too; unlock explicitly so the
        // release is logged at the point it happens.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
        log::info!("released the lock {}", self.path.display());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_second_run_is_refused_with_the_holder_named_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("intermediate");
        let now = Utc::now();
        let first = RunLock::acquire(&base, now).unwrap();
        let err = RunLock::acquire(&base, now).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{msg}");
        assert!(
            msg.contains(&format!("pid={}", std::process::id())),
            "{msg}"
        );
        drop(first);
        let again = RunLock::acquire(&base, now).unwrap();
        assert!(again.path().ends_with("intermediate/lock"));
    }
}
