//! The stage traits of a backup, one per external tool, and their
//! process-backed implementations.
//!
//! The implementations are [`ZfsCli`] ([`Snapshotter`], [`Exporter`],
//! [`Pruner`]), [`GpgEncryptor`] ([`Encryptor`]) and [`RcloneUploader`]
//! ([`Uploader`]); [`ZstdCompressor`] ([`Compressor`]) runs in this
//! process. The streaming stages hand each other a [`ByteStream`] and return
//! a [`RunningStage`], so a stage can be a process or work in this process.
//! Embedders can substitute their own; the operations are tested against
//! the traits' mocks.

mod error;
mod gpg;
mod gpg_recipients;
mod mount;
mod plain;
mod rclone;
mod send_size;
mod send_usage;
mod stream;
mod zfs;
mod zstd;

pub use error::*;
pub use gpg::*;
pub use gpg_recipients::*;
pub use mount::*;
pub use plain::*;
pub use rclone::*;
pub use send_usage::*;
pub use stream::*;
pub use zfs::*;
pub use zstd::*;

use std::io;
use std::path::Path;

use crate::model::RemoteFile;
use crate::model::SnapshotInfo;
use crate::model::TreeEntry;
use crate::model::{DatasetName, SnapshotName};

/// Creates, lists, destroys, holds and releases snapshots.
#[cfg_attr(test, mockall::automock)]
pub trait Snapshotter {
    /// The snapshots of `dataset` (not of its children), in no particular
    /// order.
    ///
    /// # Errors
    ///
    /// [`ZfsError::NotFound`] if the dataset does not exist, other
    /// [`ZfsError`]s if `zfs` fails or prints something unparseable.
    fn list(&self, dataset: &DatasetName) -> Result<Vec<SnapshotInfo>, ZfsError>;

    /// Creates `snapshot`.
    ///
    /// # Errors
    ///
    /// [`ZfsError::AlreadyExists`] if it exists, other [`ZfsError`]s on
    /// failure.
    fn create(&self, snapshot: &SnapshotName) -> Result<(), ZfsError>;

    /// Creates `snapshot` and the snapshot of that name of every dataset
    /// below its dataset, at one instant (`zfs snapshot -r`).
    ///
    /// # Errors
    ///
    /// [`ZfsError::AlreadyExists`] if one exists, other [`ZfsError`]s on
    /// failure (then none was created: zfs takes them all or none).
    fn create_recursive(&self, snapshot: &SnapshotName) -> Result<(), ZfsError>;

    /// `root` and every file system and volume below it, parents first,
    /// with their type and whether [`SKIP_PROPERTY`](crate::model::SKIP_PROPERTY)
    /// is on.
    ///
    /// # Errors
    ///
    /// [`ZfsError::NotFound`] if `root` does not exist, other [`ZfsError`]s
    /// if `zfs` fails or prints something unparseable.
    fn list_tree(&self, root: &DatasetName) -> Result<Vec<TreeEntry>, ZfsError>;

    /// Destroys `snapshot`. Only snapshots can be passed: a [`SnapshotName`]
    /// always contains an `@`.
    ///
    /// # Errors
    ///
    /// [`ZfsError::Busy`] if it is held, other [`ZfsError`]s on failure.
    fn destroy(&self, snapshot: &SnapshotName) -> Result<(), ZfsError>;

    /// Places a user hold `tag` on `snapshot`.
    ///
    /// # Errors
    ///
    /// [`ZfsError::TagExists`] if that hold is already there.
    fn hold(&self, snapshot: &SnapshotName, tag: &str) -> Result<(), ZfsError>;

    /// Releases the user hold `tag` from `snapshot`.
    ///
    /// # Errors
    ///
    /// [`ZfsError::NoSuchTag`] if there is no such hold.
    fn release(&self, snapshot: &SnapshotName, tag: &str) -> Result<(), ZfsError>;

    /// Removes a user property (`zfs inherit`) from `snapshot`.
    ///
    /// # Errors
    ///
    /// [`ZfsError`] on failure.
    fn clear_property(&self, snapshot: &SnapshotName, property: &str) -> Result<(), ZfsError>;

    /// Sets a user property (`zfs2cloud:…`) on `snapshot`.
    ///
    /// # Errors
    ///
    /// [`ZfsError`] on failure.
    fn set_property(
        &self,
        snapshot: &SnapshotName,
        property: &str,
        value: &str,
    ) -> Result<(), ZfsError>;

    /// The GUID of `dataset` (decimal), which tells it from a namesake;
    /// `None` where zfs gives none. The default knows none.
    ///
    /// # Errors
    ///
    /// [`ZfsError::NotFound`] if the dataset does not exist, other
    /// [`ZfsError`]s if `zfs` fails.
    fn guid(&self, dataset: &DatasetName) -> Result<Option<String>, ZfsError> {
        let _ = dataset;
        Ok(None)
    }

    /// The value of the user property `property` (`zfs2cloud:…`) of
    /// `snapshot`, `None` where it is not set. The default knows none.
    ///
    /// # Errors
    ///
    /// [`ZfsError::NotFound`] if the snapshot does not exist, other
    /// [`ZfsError`]s if `zfs` fails.
    fn property(
        &self,
        snapshot: &SnapshotName,
        property: &str,
    ) -> Result<Option<String>, ZfsError> {
        let _ = (snapshot, property);
        Ok(None)
    }
}

/// Produces a ZFS send stream.
#[cfg_attr(test, mockall::automock)]
pub trait Exporter {
    /// The command [`Exporter::send`] would run, for logs and `--dry-run`.
    // mockall needs the named lifetime on `Option<&T>` arguments.
    #[allow(clippy::needless_lifetimes)]
    fn describe<'a>(&self, snapshot: &SnapshotName, base: Option<&'a SnapshotName>) -> String;

    /// Starts sending `snapshot` (incrementally from `base` if given): the
    /// returned stage's output is the send stream.
    ///
    /// # Errors
    ///
    /// [`ZfsError`] if it cannot be started.
    #[allow(clippy::needless_lifetimes)]
    fn send<'a>(
        &self,
        snapshot: &SnapshotName,
        base: Option<&'a SnapshotName>,
    ) -> Result<Started<ZfsError>, ZfsError>;

    /// How many bytes [`Exporter::send`] is expected to produce, for
    /// progress; `None` when zfs cannot tell. It never fails the export:
    /// whatever goes wrong is logged.
    #[allow(clippy::needless_lifetimes)]
    fn estimate<'a>(&self, snapshot: &SnapshotName, base: Option<&'a SnapshotName>) -> Option<u64> {
        let _ = (snapshot, base);
        None
    }
}

/// Encrypts a stream.
#[cfg_attr(test, mockall::automock)]
pub trait Encryptor {
    /// The command [`Encryptor::encrypt`] runs, for logs and `--dry-run`.
    /// It never contains a secret.
    fn describe(&self) -> String;

    /// Starts encrypting `input`: the returned stage's output is the
    /// ciphertext.
    ///
    /// # Errors
    ///
    /// [`GpgError`] if it cannot be started.
    fn encrypt(&self, input: ByteStream) -> Result<Started<GpgError>, GpgError>;

    /// The fingerprints of the public keys the stream is encrypted to,
    /// checked usable at `now`, for the manifest and for the rule that a
    /// chain keeps one set of recipients; empty for any other encryption.
    ///
    /// # Errors
    ///
    /// [`GpgError`] if a key cannot be read or used.
    fn recipients(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<String>, GpgError> {
        let _ = now;
        Ok(Vec::new())
    }
}

/// Compresses a stream before encryption, and undoes that on restore.
pub trait Compressor {
    /// What [`Compressor::compress`] runs, for logs and `--dry-run`.
    fn describe(&self) -> String;

    /// Starts compressing `input`: the returned stage's output is the
    /// compressed stream.
    ///
    /// # Errors
    ///
    /// If it cannot be started.
    fn compress(&self, input: ByteStream) -> io::Result<Started<io::Error>>;

    /// Starts decompressing `input`, a stream [`Compressor::compress`]
    /// made: the returned stage's output is the original.
    ///
    /// # Errors
    ///
    /// If it cannot be started.
    fn decompress(&self, input: ByteStream) -> io::Result<Started<io::Error>>;
}

/// Copies files to the remote, lists what is there and deletes what remote
/// pruning lets go. Ordering, verification and retries are the caller's
/// (the upload step, the prune-remote step), so every uploader gets them. `Sync`, because a pipelined export uploads several
/// chunks at once through one uploader.
#[cfg_attr(test, mockall::automock)]
pub trait Uploader: Sync {
    /// The files directly inside `remote_dir`; empty if it does not exist.
    ///
    /// # Errors
    ///
    /// [`UploadError`] if listing fails or its output is unparseable.
    fn list(&self, remote_dir: &str) -> Result<Vec<RemoteFile>, UploadError>;

    /// Copies the local file `local` to `remote_path` (a full path,
    /// including the file name).
    ///
    /// # Errors
    ///
    /// [`UploadError`] if the copy fails.
    fn put(&self, local: &Path, remote_path: &str) -> Result<(), UploadError>;

    /// The file at `remote_path` (name and size; no hash, which would mean
    /// reading it back on many backends), or `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`UploadError`] if the lookup fails or its output is unparseable.
    fn stat(&self, remote_path: &str) -> Result<Option<RemoteFile>, UploadError>;

    /// [`Uploader::list`] without hashes: names and sizes only. For checks
    /// of files whose content was already confirmed as they were sent.
    ///
    /// # Errors
    ///
    /// As for [`Uploader::list`].
    fn list_sizes(&self, remote_dir: &str) -> Result<Vec<RemoteFile>, UploadError> {
        self.list(remote_dir)
    }

    /// The files directly inside `remote_dir` and inside its direct
    /// subdirectories, with names and sizes only: `name` is the path below
    /// `remote_dir` (`file`, or `dir/file`). Empty if it does not exist.
    /// One call where the backend allows, instead of one per directory.
    ///
    /// # Errors
    ///
    /// As for [`Uploader::list`].
    fn list_two_levels(&self, remote_dir: &str) -> Result<Vec<RemoteFile>, UploadError> {
        let mut files = self.list_sizes(remote_dir)?;
        for dir in self.list_dirs(remote_dir)? {
            let inside = self.list_sizes(&crate::model::remote_join(remote_dir, &dir))?;
            files.extend(inside.into_iter().map(|f| RemoteFile {
                name: format!("{dir}/{}", f.name),
                ..f
            }));
        }
        Ok(files)
    }

    /// Makes `remote_dir` an exact copy of the local directory `local_dir`
    /// (deleting what is not in it), leaving alone remote paths matching
    /// `keep` (rclone filter patterns, e.g. `/__zfs2cloud_last_updated__`).
    ///
    /// # Errors
    ///
    /// [`UploadError`] if the sync fails.
    #[allow(clippy::needless_lifetimes)]
    fn sync_dir<'a>(
        &self,
        local_dir: &Path,
        remote_dir: &str,
        keep: &[&'a str],
    ) -> Result<(), UploadError>;

    /// The subdirectories directly inside `remote_dir`; empty if it does
    /// not exist.
    ///
    /// # Errors
    ///
    /// [`UploadError`] if listing fails or its output is unparseable.
    fn list_dirs(&self, remote_dir: &str) -> Result<Vec<String>, UploadError>;

    /// Starts streaming the remote file `remote_path`: its bytes are the
    /// returned stage's output (no local staging).
    ///
    /// # Errors
    ///
    /// [`UploadError`] if it cannot be started.
    fn cat(&self, remote_path: &str) -> Result<Started<UploadError>, UploadError>;

    /// Writes `bytes` to `remote_path`.
    ///
    /// # Errors
    ///
    /// [`UploadError`] if the write fails.
    fn put_bytes(&self, bytes: &[u8], remote_path: &str) -> Result<(), UploadError>;

    /// Deletes the file at `remote_path`. A file that is already gone is
    /// no error: a prune that was interrupted is simply run again.
    ///
    /// # Errors
    ///
    /// [`UploadError`] if the delete fails.
    fn delete_file(&self, remote_path: &str) -> Result<(), UploadError>;

    /// Removes the empty directory `remote_dir`. A directory that is not
    /// there is no error: object stores have no directories, and on them
    /// it went with its last file.
    ///
    /// # Errors
    ///
    /// [`UploadError`] if the removal fails (e.g. the directory is not
    /// empty).
    fn remove_dir(&self, remote_dir: &str) -> Result<(), UploadError>;
}

/// Removes what retention no longer needs. The retention policy decides
/// (`plan_snapshot_prune`); the prune step calls this for each snapshot it
/// lets go. [`ZfsCli`] implements it with `zfs destroy`.
pub trait Pruner {
    /// Removes `snapshot` (and only it).
    ///
    /// # Errors
    ///
    /// [`PruneError`] if removal fails.
    fn prune_snapshot(&self, snapshot: &SnapshotName) -> Result<(), PruneError>;
}
