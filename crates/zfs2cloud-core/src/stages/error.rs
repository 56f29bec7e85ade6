//! The stages' error types. They live beside the traits, not inside an
//! implementation, so that any implementation (process-backed or not) can
//! return them.

use crate::process::ProcessError;

/// Errors from `zfs`, with known messages mapped to variants.
#[derive(Debug, thiserror::Error)]
pub enum ZfsError {
    /// The dataset or snapshot already exists.
    #[error("{target} already exists")]
    AlreadyExists {
        /// What exists.
        target: String,
        /// The failed command.
        #[source]
        source: ProcessError,
    },
    /// The dataset or snapshot does not exist.
    #[error("{target} does not exist")]
    NotFound {
        /// What is missing.
        target: String,
        /// The failed command.
        #[source]
        source: ProcessError,
    },
    /// The snapshot is held or in use.
    #[error("{target} is busy (held or in use)")]
    Busy {
        /// What is busy.
        target: String,
        /// The failed command.
        #[source]
        source: ProcessError,
    },
    /// `zfs release` of a hold that is not there.
    #[error("{target} has no hold tagged {tag:?}")]
    NoSuchTag {
        /// The snapshot.
        target: String,
        /// The tag.
        tag: String,
        /// The failed command.
        #[source]
        source: ProcessError,
    },
    /// `zfs hold` of a hold that is already there.
    #[error("{target} already has a hold tagged {tag:?}")]
    TagExists {
        /// The snapshot.
        target: String,
        /// The tag.
        tag: String,
        /// The failed command.
        #[source]
        source: ProcessError,
    },
    /// `zfs` printed something this parser does not understand.
    #[error("unexpected output from `{command}`: {reason} in line {line:?}")]
    Parse {
        /// The command.
        command: String,
        /// The offending line.
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Any other failure of the `zfs` process.
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// What a failed `zfs` command's stderr says, for the messages zfs2cloud
/// reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownZfsFailure {
    /// "dataset already exists"
    AlreadyExists,
    /// "does not exist"
    NotFound,
    /// "dataset is busy", "snapshot has dependent clones" or "snapshot is
    /// cloned" (a restore test clone of an old snapshot), or "it's being
    /// held" (OpenZFS, for a hold placed since the listing): it cannot go
    /// now, and that is no reason to stop pruning the others.
    Busy,
    /// "no such tag on this dataset"
    NoSuchTag,
    /// "tag already exists on this dataset"
    TagExists,
}

/// Classifies a `zfs` stderr message. Pure; tested on captured messages from
/// OpenZFS and zfs-fuse.
#[must_use]
pub fn classify_stderr(stderr: &str) -> Option<KnownZfsFailure> {
    let s = stderr.to_ascii_lowercase();
    if s.contains("no such tag on this dataset") {
        Some(KnownZfsFailure::NoSuchTag)
    } else if s.contains("tag already exists on this dataset") {
        Some(KnownZfsFailure::TagExists)
    } else if s.contains("dataset already exists") {
        Some(KnownZfsFailure::AlreadyExists)
    } else if [
        "dataset is busy",
        "has dependent clones",
        "snapshot is cloned",
        "being held",
    ]
    .iter()
    .any(|m| s.contains(m))
    {
        Some(KnownZfsFailure::Busy)
    } else if s.contains("does not exist") || s.contains("could not find any snapshots") {
        Some(KnownZfsFailure::NotFound)
    } else {
        None
    }
}

/// Errors from the gpg stage.
#[derive(Debug, thiserror::Error)]
pub enum GpgError {
    /// gpg could not be started or failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The passphrase pipe could not be set up.
    #[error("cannot pass the passphrase to gpg: {0}")]
    Pipe(#[source] std::io::Error),
    /// A throwaway gpg home directory could not be made.
    #[error("cannot make a temporary gpg home directory: {0}")]
    Home(#[source] std::io::Error),
    /// A key file or fingerprint of `gpg-recipients` cannot be used.
    #[error("unusable key: {0}")]
    Keys(String),
    /// gpg has no secret key for any of the backup's recipients.
    #[error(
        "no secret key for this backup's recipients {recipients}: give the matching secret key \
         with --secret-key-file, or import it into the keyring gpg uses (GNUPGHOME); a \
         passphrase-protected secret key also needs --passphrase-file"
    )]
    NoSecretKey {
        /// The recipients' fingerprints, from the manifest.
        recipients: String,
        /// gpg's failure ("decryption failed: No secret key").
        #[source]
        source: ProcessError,
    },
}

/// Errors of an [`Uploader`](crate::Uploader).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The upload tool failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The upload tool printed something unparseable.
    #[error("unexpected output from `{command}`: {message}")]
    Parse {
        /// The command.
        command: String,
        /// What is wrong with the output.
        message: String,
    },
    /// A copy read and wrote nothing for the stall limit
    /// (`upload_stall_timeout_seconds`) and was stopped.
    #[error("rclone made no progress for {seconds}s and was stopped: `{command}`")]
    Stalled {
        /// The full command line, secrets redacted.
        command: String,
        /// The stall limit.
        seconds: u64,
    },
    /// A copy reported success, but the remote does not hold the file as
    /// sent.
    #[error("{path} could not be confirmed after the copy: {reason}")]
    Unconfirmed {
        /// The remote path.
        path: String,
        /// What is missing or wrong.
        reason: String,
    },
}

/// Errors of a [`Pruner`](crate::Pruner).
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// A `zfs` command failed.
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    /// A removal was about to touch something outside the configured
    /// dataset; refused.
    #[error("refusing to destroy {0}: it is not a snapshot of the configured dataset")]
    Foreign(String),
    /// Removing a local export failed.
    #[error("cannot remove {path}: {source}")]
    Io {
        /// What could not be removed.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
