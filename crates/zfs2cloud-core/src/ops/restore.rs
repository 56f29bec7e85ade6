//! Restore: pick the chain that reaches a backup, stream it from the remote,
//! check every chunk, decrypt, and `zfs recv`.
//!
//! Nothing is staged locally: each chunk is read with `rclone cat`, hashed
//! as it passes, and written to `gpg --decrypt`, whose output goes straight
//! into `zfs recv` (through the zstd decoder, for a compressed backup). A chunk whose SHA-256 differs from the manifest aborts
//! the receive before the stream ends (gpg's stdin is never closed
//! normally), so `zfs recv` never commits a damaged backup: the target is
//! left as it was (or absent).

use std::io::{self, PipeWriter, Read, Write};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::model::{
    hex, remote_join, Compression, CompressionSettings, DatasetName, Encryption, ExportKind,
    RemoteBackup,
};
use crate::policy::RestorePlanError;
use crate::process::{CancelToken, CommandLine, ProcessError, Runner};
use crate::stages::{
    compressor_for, ByteStream, Compressor, GpgEncryptor, GpgError, MountProperties,
    OverwriteFacts, ProcessStage, RunningStage, Started, UploadError, Uploader, ZfsCli,
};

/// Errors of restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The restore point or its base is not on the remote.
    #[error(transparent)]
    Plan(#[from] RestorePlanError),
    /// The target exists and `--force` was not given.
    #[error("{0} already exists; restore into a new dataset, or pass --force to overwrite it")]
    TargetExists(String),
    /// `--force` was given, but `zfs recv -F` cannot overwrite the target
    /// with a full stream; nothing was downloaded.
    #[error(
        "--force cannot overwrite {target}: {reason}, and zfs recv -F refuses such a target; \
         restore into a new dataset, or remove it first if it is yours to remove \
         (zfs destroy -r {target})"
    )]
    CannotOverwrite {
        /// The existing target.
        target: String,
        /// What stops `zfs recv -F`.
        reason: String,
    },
    /// A chunk differs from its manifest entry.
    #[error("chunk {chunk} of {backup} is damaged: {reason}; the receive was aborted before it could commit")]
    DamagedChunk {
        /// The backup directory.
        backup: String,
        /// The chunk.
        chunk: String,
        /// What differs.
        reason: String,
    },
    /// Reading from the remote failed.
    #[error("reading {path} from the remote failed")]
    Remote {
        /// The remote path.
        path: String,
        /// Why.
        #[source]
        source: UploadError,
    },
    /// gpg failed (a wrong passphrase, a damaged message).
    #[error("gpg --decrypt of {backup} failed")]
    Decrypt {
        /// The backup directory.
        backup: String,
        /// Why.
        #[source]
        source: GpgError,
    },
    /// `zfs recv` failed.
    #[error("zfs recv of {backup} failed")]
    Receive {
        /// The backup directory.
        backup: String,
        /// Why.
        #[source]
        source: ProcessError,
    },
    /// Everything was received, but mounting the result failed. The data
    /// is kept; mount it by hand once the cause is fixed.
    #[error("{target} was restored completely, but mounting it failed; the data is kept, mount it with `zfs mount {target}` once the cause is fixed")]
    Mount {
        /// The restored dataset.
        target: String,
        /// Why.
        #[source]
        source: ProcessError,
    },
    /// The manifest names a compression this version cannot undo.
    #[error("{backup} is compressed with {compression:?}, which this version of zfs2cloud cannot decompress; use a newer version")]
    UnknownCompression {
        /// The backup directory.
        backup: String,
        /// The manifest's `compression`.
        compression: String,
    },
    /// zstd found the decrypted stream corrupt.
    #[error("zstd decompression of {backup} failed; the receive was aborted")]
    Decompress {
        /// The backup directory.
        backup: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The run was interrupted; the receive was aborted.
    #[error("interrupted; the receive was aborted")]
    Interrupted,
    /// A backup is gpg-encrypted, but no passphrase was given.
    #[error("{backup} is encrypted with gpg, and no passphrase was given")]
    NoPassphrase {
        /// The backup directory.
        backup: String,
    },
    /// A backup is encrypted to public keys, but no gpg to decrypt it with
    /// was given.
    #[error("{backup} is encrypted to public keys (gpg-recipients), and no secret key was given")]
    NoSecretKey {
        /// The backup directory.
        backup: String,
    },
    /// The manifest names an encryption this version cannot undo.
    #[error("{backup} is encrypted with {encryption:?}, which this version of zfs2cloud cannot decrypt; use a newer version")]
    UnknownEncryption {
        /// The backup directory.
        backup: String,
        /// The manifest's `encryption`.
        encryption: String,
    },
}

/// How `backup` is encrypted, from its manifest: gpg without one (the
/// original tool's backups).
///
/// # Errors
///
/// [`RestoreError::UnknownEncryption`] for a name this version does not know.
pub fn backup_encryption(backup: &RemoteBackup) -> Result<Encryption, RestoreError> {
    let Some(manifest) = &backup.manifest else {
        return Ok(Encryption::Gpg);
    };
    Encryption::from_manifest(&manifest.encryption).map_err(|encryption| {
        RestoreError::UnknownEncryption {
            backup: backup.dir_name.clone(),
            encryption,
        }
    })
}

/// Whether restoring `chain` needs the gpg passphrase: if a backup is
/// encrypted with it (`gpg`, and every backup without a manifest). An
/// unknown encryption counts as needing it (the restore then fails for it,
/// naming it). Backups to public keys need a secret key instead.
#[must_use]
pub fn chain_needs_passphrase(chain: &[&RemoteBackup]) -> bool {
    chain.iter().any(|b| {
        !matches!(
            backup_encryption(b),
            Ok(Encryption::None | Encryption::GpgRecipients)
        )
    })
}

/// Whether restoring `chain` needs gpg at all: unless every backup says
/// `encryption = none`.
#[must_use]
pub fn chain_needs_gpg(chain: &[&RemoteBackup]) -> bool {
    chain
        .iter()
        .any(|b| !matches!(backup_encryption(b), Ok(Encryption::None)))
}

/// The fingerprints `backup` is encrypted to, from its manifest.
fn recipients_of(backup: &RemoteBackup) -> &[String] {
    backup
        .manifest
        .as_ref()
        .map_or(&[][..], |m| m.recipients.as_slice())
}

/// Whether `chain` was sent raw (`zfs send -w`): received, it is an
/// encrypted dataset whose key is not loaded, so it is not mounted.
#[must_use]
pub fn chain_is_raw(chain: &[&RemoteBackup]) -> bool {
    chain
        .iter()
        .any(|b| b.manifest.as_ref().is_some_and(|m| m.send_flags.is_raw()))
}

/// Everything a restore needs besides the chain.
#[derive(Debug, Clone)]
pub struct RestoreSettings {
    /// The dataset to receive into.
    pub target: DatasetName,
    /// Overwrite an existing target (`zfs recv -F`).
    pub force: bool,
    /// Mount the target once everything is received (not for the
    /// scratch dataset of `verify --deep`).
    pub mount: bool,
    /// The `zfs` binary.
    pub zfs: PathBuf,
    /// The rclone remote the backups are under.
    pub remote: String,
    /// Stops the restore when set.
    pub cancel: CancelToken,
}

/// Receives `chain` (full first) into `settings.target`.
///
/// # Errors
///
/// [`RestoreError`]; a damaged chunk or any failure aborts the receive of
/// that backup before `zfs recv` can commit it.
pub fn restore_chain(
    store: &dyn Uploader,
    gpg: Option<&GpgEncryptor>,
    runner: &Runner,
    chain: &[&RemoteBackup],
    settings: &RestoreSettings,
) -> Result<(), RestoreError> {
    let zfs = ZfsCli::new(runner.clone(), settings.zfs.clone());
    let exists = zfs
        .exists(&settings.target)
        .map_err(|source| RestoreError::Receive {
            backup: String::new(),
            source,
        })?;
    if exists {
        check_overwrite(&zfs, chain, settings)?;
    }
    for (i, backup) in chain.iter().enumerate() {
        if backup.manifest.is_none() {
            log::warn!(
                "{} has no manifest (made by the original tool?): its chunks are taken in suffix order and no hash is checked",
                backup.dir_name
            );
        }
        // -F: overwrite an existing target (--force), and roll the freshly
        // received full back to its snapshot before the incremental.
        let recv = zfs.recv_command(&settings.target, i > 0 || settings.force);
        let dir = remote_join(&settings.remote, &backup.dir_name);
        let chunks = backup.chunk_names();
        if runner.skip_in_dry_run(&format!(
            "rclone cat {dir}/{{{}}} (checked against the manifest) | {} | {recv}",
            chunks.join(","),
            decrypt_description(gpg, backup)
        )) {
            continue;
        }
        let received = receive_one(
            store,
            gpg,
            runner,
            backup,
            &dir,
            &chunks,
            &recv,
            &settings.cancel,
        );
        if let Err(e) = received {
            // A target this restore created must not stay behind half
            // done: after a failed incremental it would hold another point
            // than asked for, and an aborted full receive may leave an
            // empty dataset on some ZFS versions. It did not exist before,
            // so it is ours to remove.
            let created = !exists && (i > 0 || zfs.exists(&settings.target).unwrap_or(false));
            if created {
                destroy_partly_restored(&zfs, &settings.target);
            }
            return Err(e);
        }
        log::info!("received {} into {}", backup.dir_name, settings.target);
    }
    if settings.mount && chain_is_raw(chain) {
        // `zfs mount` would fail: the key is not loaded. The caller says
        // how to load it.
        log::info!(
            "{} is a raw receive of an encrypted dataset; its key is not loaded, so it is left \
             unmounted",
            settings.target
        );
    } else if settings.mount {
        mount_restored(&zfs, runner, &settings.target)?;
    }
    Ok(())
}

/// What decrypts `backup`, for the dry run's pipeline.
fn decrypt_description(gpg: Option<&GpgEncryptor>, backup: &RemoteBackup) -> String {
    match (backup_encryption(backup), gpg) {
        (Ok(Encryption::None), _) => "(not encrypted)".to_owned(),
        (Ok(Encryption::GpgRecipients), Some(gpg)) => gpg.decrypt_with_keys_command().to_string(),
        (_, Some(gpg)) => gpg.decrypt_command().to_string(),
        (_, None) => "gpg --decrypt (no passphrase given)".to_owned(),
    }
}

/// Whether the existing target may be received into: only with
/// `--force`, and for a chain that starts with a full, only if
/// `zfs recv -F` accepts the target (it refuses one with snapshots, a
/// clone, and an encrypted one). Checked before anything is downloaded.
fn check_overwrite(
    zfs: &ZfsCli,
    chain: &[&RemoteBackup],
    settings: &RestoreSettings,
) -> Result<(), RestoreError> {
    let target = settings.target.to_string();
    if !settings.force {
        return Err(RestoreError::TargetExists(target));
    }
    // An incremental first (verify --deep's replay onto its scratch
    // dataset) goes onto the snapshots it is based on.
    if chain.first().is_none_or(|b| b.kind != ExportKind::Full) {
        return Ok(());
    }
    let facts = zfs
        .overwrite_facts(&settings.target)
        .map_err(|source| RestoreError::Receive {
            backup: String::new(),
            source,
        })?;
    match overwrite_refusal(&facts) {
        Some(reason) => Err(RestoreError::CannotOverwrite { target, reason }),
        None => Ok(()),
    }
}

/// Why `zfs recv -F` of a full stream refuses a target with these facts,
/// as OpenZFS and zfs-fuse word it, if it does.
fn overwrite_refusal(facts: &OverwriteFacts) -> Option<String> {
    if let Some(first) = facts.snapshots.first() {
        return Some(format!(
            "it has {} snapshot(s) (e.g. {first})",
            facts.snapshots.len()
        ));
    }
    if facts.origin != "-" {
        return Some(format!("it is a clone of {}", facts.origin));
    }
    (facts.encryption != "off").then(|| format!("it is encrypted ({})", facts.encryption))
}

/// Mounts the restored `target`, unless it is not meant to be mounted:
/// `zfs mount` fails for those, and the restore would report a failure
/// although every byte arrived.
fn mount_restored(zfs: &ZfsCli, runner: &Runner, target: &DatasetName) -> Result<(), RestoreError> {
    let mount_err = |source| RestoreError::Mount {
        target: target.to_string(),
        source,
    };
    if runner.is_dry_run() {
        // Nothing was received, so there is nothing to ask; `zfs mount`
        // only says what would run.
        return zfs.mount(target).map_err(mount_err);
    }
    let props = zfs.mount_properties(target).map_err(mount_err)?;
    if let Some(why) = not_mountable(&props) {
        log::info!("{target} is restored and left unmounted: {why}");
        return Ok(());
    }
    // A target overwritten with --force may still be mounted, and
    // `zfs mount` fails for a mounted one.
    if zfs.is_mounted(target).map_err(mount_err)? {
        return Ok(());
    }
    zfs.mount(target).map_err(mount_err)
}

/// Why a dataset with these properties must not be given to `zfs mount`,
/// if it must not: a volume, a file system whose mountpoint is `none` or
/// `legacy` (mounted by the admin, or never), or one with `canmount=off`.
fn not_mountable(props: &MountProperties) -> Option<String> {
    if props.kind != "filesystem" {
        return Some(format!("it is a {}, not a file system", props.kind));
    }
    if props.mountpoint == "none" || props.mountpoint == "legacy" {
        return Some(format!("its mountpoint is {}", props.mountpoint));
    }
    (props.canmount == "off").then(|| "canmount is off".to_owned())
}

/// Removes the target this restore created, after a failed receive. A
/// failure is logged: the receive's error is the one to report.
fn destroy_partly_restored(zfs: &ZfsCli, target: &DatasetName) {
    match zfs.destroy_own(target.as_str(), true) {
        Ok(()) => log::warn!("destroyed the partly restored {target}"),
        Err(d) => log::error!(
            "could not destroy the partly restored {target}: {}",
            crate::util::error_chain(&d)
        ),
    }
}

/// Receives one backup: its chunks, checked as they pass, into
/// `gpg --decrypt | [zstd -d] | zfs recv`.
#[allow(clippy::too_many_arguments)]
fn receive_one(
    store: &dyn Uploader,
    gpg: Option<&GpgEncryptor>,
    runner: &Runner,
    backup: &RemoteBackup,
    dir: &str,
    chunks: &[String],
    recv_cmd: &CommandLine,
    cancel: &CancelToken,
) -> Result<(), RestoreError> {
    let compression = match &backup.manifest {
        None => Compression::None,
        Some(m) => Compression::from_manifest(&m.compression).map_err(|compression| {
            RestoreError::UnknownCompression {
                backup: backup.dir_name.clone(),
                compression,
            }
        })?,
    };
    let decompressor = compressor_for(CompressionSettings {
        compression,
        ..CompressionSettings::default()
    });
    let (mut cipher_in, stages) =
        ReceiveStages::start(gpg, decompressor.as_deref(), runner, recv_cmd, backup)?;
    match feed_chunks(store, backup, dir, chunks, &mut cipher_in, cancel) {
        Ok(()) => stages.finish(cipher_in, backup),
        Err(failure) => Err(stages.abort(cipher_in, failure, backup)),
    }
}

fn decrypt_error(backup: &RemoteBackup, source: GpgError) -> RestoreError {
    RestoreError::Decrypt {
        backup: backup.dir_name.clone(),
        source,
    }
}

fn receive_error(backup: &RemoteBackup, source: ProcessError) -> RestoreError {
    RestoreError::Receive {
        backup: backup.dir_name.clone(),
        source,
    }
}

fn decompress_error(backup: &RemoteBackup, source: io::Error) -> RestoreError {
    RestoreError::Decompress {
        backup: backup.dir_name.clone(),
        source,
    }
}

/// The running stages of one receive, `gpg --decrypt | [zstd -d] | zfs
/// recv`, which this process feeds through a pipe into gpg.
struct ReceiveStages {
    decrypt: Box<dyn RunningStage<GpgError>>,
    decompress: Option<Box<dyn RunningStage<io::Error>>>,
    recv: Box<dyn RunningStage<ProcessError>>,
}

impl ReceiveStages {
    /// Starts the stages, and returns them with the pipe into gpg. If one
    /// cannot start, those already started are dropped, which stops them.
    fn start(
        gpg: Option<&GpgEncryptor>,
        decompressor: Option<&dyn Compressor>,
        runner: &Runner,
        recv_cmd: &CommandLine,
        backup: &RemoteBackup,
    ) -> Result<(PipeWriter, Self), RestoreError> {
        let (cipher_out, cipher_in) =
            io::pipe().map_err(|e| decrypt_error(backup, GpgError::Pipe(e)))?;
        let Started {
            stage: decrypt,
            output: plain,
        } = start_decrypt(gpg, backup, ByteStream::Pipe(cipher_out))?;
        let (decompress, plain) = match decompressor {
            None => (None, plain),
            Some(compressor) => {
                let Started { stage, output } = compressor
                    .decompress(plain)
                    .map_err(|e| decompress_error(backup, e))?;
                (Some(stage), output)
            }
        };
        let recv = ProcessStage::start_sink(runner, recv_cmd, plain)
            .map_err(|e| receive_error(backup, e))?;
        Ok((
            cipher_in,
            Self {
                decrypt,
                decompress,
                recv,
            },
        ))
    }

    /// After the whole stream went in: waits for every stage and names the
    /// one that failed.
    fn finish(self, cipher_in: PipeWriter, backup: &RemoteBackup) -> Result<(), RestoreError> {
        drop(cipher_in);
        let decrypted = self.decrypt.wait();
        let decompressed = self.decompress.map(RunningStage::wait);
        let received = self.recv.wait();
        decrypted.map_err(|e| decrypt_error(backup, e))?;
        if let Some(Err(e)) = decompressed {
            // A broken pipe means zfs recv went away first: its error says
            // why.
            if e.kind() != io::ErrorKind::BrokenPipe || received.is_ok() {
                return Err(decompress_error(backup, e));
            }
        }
        received.map_err(|e| receive_error(backup, e))
    }

    /// After feeding failed: stops every stage before gpg ever sees the end
    /// of its input, so `zfs recv` gets a truncated stream and never
    /// commits it, then names the cause.
    fn abort(
        self,
        cipher_in: PipeWriter,
        failure: FeedError,
        backup: &RemoteBackup,
    ) -> RestoreError {
        self.recv.stop();
        self.decrypt.stop();
        if let Some(decompress) = &self.decompress {
            decompress.stop();
        }
        drop(cipher_in);
        // With gpg dead, the decompressor's input ends; it then stops.
        let _ = self.decompress.map(RunningStage::wait);
        let decrypted = self.decrypt.wait();
        let received = self.recv.wait();
        // A broken pipe while feeding means a consumer died first, and its
        // error is the real one: gpg's when it refused the input (a wrong
        // passphrase), else zfs recv's (which makes gpg's write fail too).
        if let FeedError::Write(_) = failure {
            match (decrypted, received) {
                (Err(source), _) if failed_by_itself(&source) => {
                    return decrypt_error(backup, source)
                }
                (_, Err(source)) => return receive_error(backup, source),
                _ => {}
            }
        }
        failure.into_restore_error(backup)
    }
}

/// Starts gpg on `input` for a gpg-encrypted backup (with the passphrase,
/// or to the secret keys for one encrypted to public keys); for one sent
/// unencrypted, a stage that passes `input` on as it is.
fn start_decrypt(
    gpg: Option<&GpgEncryptor>,
    backup: &RemoteBackup,
    input: ByteStream,
) -> Result<Started<GpgError>, RestoreError> {
    match (backup_encryption(backup)?, gpg) {
        (Encryption::None, _) => Ok(Started::passing("(not encrypted)", input)),
        (Encryption::Gpg, Some(gpg)) if gpg.has_passphrase() => {
            gpg.decrypt(input).map_err(|e| decrypt_error(backup, e))
        }
        (Encryption::Gpg, _) => Err(RestoreError::NoPassphrase {
            backup: backup.dir_name.clone(),
        }),
        (Encryption::GpgRecipients, Some(gpg)) => gpg
            .decrypt_with_keys(input, recipients_of(backup))
            .map_err(|e| decrypt_error(backup, e)),
        (Encryption::GpgRecipients, None) => Err(RestoreError::NoSecretKey {
            backup: backup.dir_name.clone(),
        }),
    }
}

/// Whether gpg exited by itself with an error (one we killed with a signal
/// says nothing about the cause), and not because its reader went away.
fn failed_by_itself(error: &GpgError) -> bool {
    match error {
        GpgError::Process(e) => {
            e.status().and_then(|s| s.code()).is_some_and(|c| c != 0)
                && !e.stderr().contains("Broken pipe")
        }
        GpgError::NoSecretKey { .. } => true,
        GpgError::Pipe(_) | GpgError::Home(_) | GpgError::Keys(_) => false,
    }
}

enum FeedError {
    Damaged { chunk: String, reason: String },
    Remote { path: String, source: UploadError },
    Write(io::Error),
    Interrupted,
}

impl FeedError {
    fn into_restore_error(self, backup: &RemoteBackup) -> RestoreError {
        match self {
            Self::Damaged { chunk, reason } => RestoreError::DamagedChunk {
                backup: backup.dir_name.clone(),
                chunk,
                reason,
            },
            Self::Remote { path, source } => RestoreError::Remote { path, source },
            Self::Write(e) => decrypt_error(backup, GpgError::Pipe(e)),
            Self::Interrupted => RestoreError::Interrupted,
        }
    }
}

/// Streams each chunk from the remote into `sink`, checking it against the
/// manifest as it passes.
fn feed_chunks(
    store: &dyn Uploader,
    backup: &RemoteBackup,
    dir: &str,
    chunks: &[String],
    sink: &mut impl Write,
    cancel: &CancelToken,
) -> Result<(), FeedError> {
    let mut hold = HoldBack::new(1 << 20);
    for name in chunks {
        let passed = stream_chunk(store, &remote_join(dir, name), sink, cancel, &mut hold)?;
        check_chunk(backup, name, &passed)?;
        hold.release(sink).map_err(FeedError::Write)?;
    }
    Ok(())
}

/// Passes blocks on one block late. `zfs recv` commits when it reads the
/// stream's END record, which is in the final bytes, so a damaged final
/// chunk must never reach it, even for a moment: a chunk's last block stays
/// here until the chunk's size and SHA-256 are proven.
struct HoldBack {
    read: Vec<u8>,
    held: Vec<u8>,
    held_len: usize,
}

impl HoldBack {
    fn new(block: usize) -> Self {
        Self {
            read: vec![0u8; block],
            held: vec![0u8; block],
            held_len: 0,
        }
    }

    /// Passes on the block held so far, and holds the `n` bytes just read
    /// into `self.read` instead.
    fn pass_on(&mut self, n: usize, sink: &mut impl Write) -> io::Result<()> {
        sink.write_all(&self.held[..self.held_len])?;
        std::mem::swap(&mut self.read, &mut self.held);
        self.held_len = n;
        Ok(())
    }

    /// Passes on the block held, once its chunk is proven.
    fn release(&mut self, sink: &mut impl Write) -> io::Result<()> {
        sink.write_all(&self.held[..self.held_len])?;
        self.held_len = 0;
        Ok(())
    }
}

/// The size and SHA-256 of what passed of one chunk.
struct Passed {
    size: u64,
    sha256: String,
}

/// Streams the chunk at `path` into `sink`, all but its last block, which
/// `hold` keeps.
fn stream_chunk(
    store: &dyn Uploader,
    path: &str,
    sink: &mut impl Write,
    cancel: &CancelToken,
    hold: &mut HoldBack,
) -> Result<Passed, FeedError> {
    let remote_err = |source| FeedError::Remote {
        path: path.to_owned(),
        source,
    };
    let Started {
        stage: cat,
        output: mut stream,
    } = store.cat(path).map_err(remote_err)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let copied = loop {
        if cancel.is_cancelled() {
            break Err(FeedError::Interrupted);
        }
        let n = match stream.read(&mut hold.read) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                break Err(remote_err(UploadError::Parse {
                    command: format!("cat {path}"),
                    message: e.to_string(),
                }))
            }
        };
        hasher.update(&hold.read[..n]);
        size += n as u64;
        if let Err(e) = hold.pass_on(n, sink) {
            break Err(FeedError::Write(e));
        }
    };
    drop(stream);
    if let Err(e) = copied {
        cat.stop();
        let _ = cat.wait();
        return Err(e);
    }
    cat.wait().map_err(remote_err)?;
    Ok(Passed {
        size,
        sha256: hex(&hasher.finalize()),
    })
}

/// Checks what passed of chunk `name` against the manifest, if there is
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

    use super::*;
    use crate::model::testing::noise;
    use crate::model::{ChunkEntry, ExportKind, Manifest, MANIFEST_FORMAT};
    use crate::stages::MockUploader;

    const DIR: &str = "r:b/20240101000000-full";

    /// A remote holding `files` (name, bytes) under [`DIR`], each read in
    /// place by whoever reads the `cat` stage's output.
    fn remote(files: &[(&str, Vec<u8>)]) -> MockUploader {
        let files: HashMap<String, Vec<u8>> = files
            .iter()
            .map(|(name, bytes)| (remote_join(DIR, name), bytes.clone()))
            .collect();
        let mut up = MockUploader::new();
        up.expect_cat().returning(move |path| {
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

    fn feed(
        exported: &[(&str, Vec<u8>)],
        on_remote: &[(&str, Vec<u8>)],
        cancel: &CancelToken,
    ) -> (Result<(), FeedError>, Vec<u8>) {
        let backup = backup(exported);
        let mut sink = Vec::new();
        let fed = feed_chunks(
            &remote(on_remote),
            &backup,
            DIR,
            &backup.chunk_names(),
            &mut sink,
            cancel,
        );
        (fed, sink)
    }

    fn chunks() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("x.0000", noise(3 << 20, 1)),
            ("x.0001", noise((3 << 20) / 2, 2)),
        ]
    }

    #[test]
    fn chunks_that_match_the_manifest_pass_whole_and_in_order() {
        let chunks = chunks();
        let (fed, sink) = feed(&chunks, &chunks, &CancelToken::new());
        assert!(fed.is_ok());
        assert_eq!(sink, [chunks[0].1.clone(), chunks[1].1.clone()].concat());
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
        // and not the end of the second, where `zfs recv` would commit.
        let stream = [exported[0].1.clone(), exported[1].1.clone()].concat();
        assert!(sink.len() >= exported[0].1.len());
        assert!(sink.len() < stream.len());
        assert!(stream.starts_with(&sink));
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

    #[test]
    fn only_file_systems_with_a_mountpoint_and_canmount_are_mounted() {
        let props = |kind: &str, mountpoint: &str, canmount: &str| MountProperties {
            kind: kind.into(),
            mountpoint: mountpoint.into(),
            canmount: canmount.into(),
        };
        assert_eq!(not_mountable(&props("filesystem", "/tank/r", "on")), None);
        assert_eq!(
            not_mountable(&props("filesystem", "/tank/r", "noauto")),
            None
        );
        for (p, why) in [
            (
                props("volume", "-", "-"),
                "it is a volume, not a file system",
            ),
            (props("filesystem", "none", "on"), "its mountpoint is none"),
            (
                props("filesystem", "legacy", "on"),
                "its mountpoint is legacy",
            ),
            (props("filesystem", "/tank/r", "off"), "canmount is off"),
        ] {
            assert_eq!(not_mountable(&p).as_deref(), Some(why));
        }
    }

    #[test]
    fn only_a_target_recv_f_accepts_is_overwritten() {
        let facts = |snapshots: &[&str], origin: &str, encryption: &str| OverwriteFacts {
            snapshots: snapshots.iter().map(|s| (*s).to_owned()).collect(),
            origin: origin.into(),
            encryption: encryption.into(),
        };
        assert_eq!(overwrite_refusal(&facts(&[], "-", "off")), None);
        for (f, why) in [
            (
                facts(&["t/r@a", "t/r@b"], "-", "off"),
                "it has 2 snapshot(s) (e.g. t/r@a)",
            ),
            (facts(&[], "t/s@x", "off"), "it is a clone of t/s@x"),
            (
                facts(&[], "-", "aes-256-gcm"),
                "it is encrypted (aes-256-gcm)",
            ),
        ] {
            assert_eq!(overwrite_refusal(&f).as_deref(), Some(why));
        }
    }
}
