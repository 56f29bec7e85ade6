//! Restore: pick the chain that reaches a backup, stream it from the remote,
//! check every chunk, decrypt, and `zfs recv`.
//!
//! Nothing is staged locally: each chunk is read once with `rclone cat`
//! (the next one fetched ahead into a bounded buffer, see [`feed`]), hashed
//! as it passes, and written to `gpg --decrypt`, whose output goes straight
//! into `zfs recv` (through the zstd decoder, for a compressed backup). A
//! chunk whose SHA-256 differs from the manifest aborts the receive before
//! the stream ends (gpg's stdin is never closed normally), so `zfs recv`
//! never commits a damaged backup: the target is left as it was (or
//! absent). Ctrl-C and the time limit stop every stage, also one that is
//! stalled.

mod feed;

use std::io::{self, PipeWriter};
use std::path::PathBuf;
use std::time::Duration;

use self::feed::{Feed, FeedError, FetchHandle};

use crate::model::{
    remote_join, Compression, CompressionSettings, DatasetName, Encryption, ExportKind,
    RemoteBackup,
};
use crate::policy::RestorePlanError;
use crate::process::{CancelToken, CommandLine, ProcessError, Runner};
use crate::stages::{
    compressor_for, ByteStream, Compressor, GpgEncryptor, GpgError, MountProperties,
    OverwriteFacts, ProcessStage, RunningStage, Started, UploadError, Uploader, ZfsCli,
};
use crate::util::Progress;

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
    /// The time limit ran out; the receive was aborted.
    #[error("the time limit of {}s ran out; the receive was aborted", .0.as_secs())]
    TimedOut(Duration),
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
    /// Stops the restore when set (Ctrl-C, or its deadline: see
    /// [`CancelToken::set_step_limit`]).
    pub cancel: CancelToken,
    /// How many bytes of the next chunks may be fetched ahead of `zfs
    /// recv` ([`DEFAULT_PREFETCH_BYTES`]).
    pub prefetch_bytes: usize,
}

/// The default of [`RestoreSettings::prefetch_bytes`]: at 100 MB/s, more
/// than half a second of a cloud remote's first-byte latency per chunk is
/// hidden, for 64 MiB of memory.
pub const DEFAULT_PREFETCH_BYTES: usize = 64 << 20;

/// The error for a restore stopped by `cancel`: its time limit, or an
/// interruption.
fn stopped(cancel: &CancelToken) -> RestoreError {
    cancel
        .timed_out()
        .map_or(RestoreError::Interrupted, RestoreError::TimedOut)
}

/// Receives `chain` (full first) into `settings.target`.
///
/// # Errors
///
/// [`RestoreError`]; a damaged chunk or any failure aborts the receive of
/// that backup before `zfs recv` can commit it. Once `settings.cancel` is
/// set, whatever failed says only that: [`RestoreError::Interrupted`] or
/// [`RestoreError::TimedOut`] (a `zfs` command cut short by the deadline
/// would otherwise be reported as a failure of its own).
pub fn restore_chain(
    store: &dyn Uploader,
    gpg: Option<&GpgEncryptor>,
    runner: &Runner,
    chain: &[&RemoteBackup],
    settings: &RestoreSettings,
    progress: &dyn Progress,
) -> Result<(), RestoreError> {
    if settings.cancel.is_cancelled() {
        return Err(stopped(&settings.cancel));
    }
    match receive_chain(store, gpg, runner, chain, settings, progress) {
        Err(_) if settings.cancel.is_cancelled() => Err(stopped(&settings.cancel)),
        result => result,
    }
}

/// [`restore_chain`], whatever stopped it.
fn receive_chain(
    store: &dyn Uploader,
    gpg: Option<&GpgEncryptor>,
    runner: &Runner,
    chain: &[&RemoteBackup],
    settings: &RestoreSettings,
    progress: &dyn Progress,
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
        if settings.cancel.is_cancelled() {
            return Err(stopped(&settings.cancel));
        }
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
        let feed = Feed {
            store,
            backup,
            dir: &dir,
            chunks: &chunks,
            cancel: &settings.cancel,
            prefetch_bytes: settings.prefetch_bytes,
            handle: &FetchHandle::default(),
            progress,
        };
        progress.begin(
            &format!("receive {}", backup.dir_name),
            Some(chunk_bytes(backup, &chunks)),
        );
        let received = receive_one(&feed, gpg, runner, &recv);
        progress.end();
        if let Err(e) = received {
            // A target this restore created must not stay behind half
            // done: after a failed incremental it would hold another point
            // than asked for, and an aborted full receive may leave an
            // empty dataset on some ZFS versions. It did not exist before,
            // so it is ours to remove.
            let cleanup = ZfsCli::new(cleanup_runner(runner), settings.zfs.clone());
            let created = !exists && (i > 0 || cleanup.exists(&settings.target).unwrap_or(false));
            if created {
                destroy_partly_restored(&cleanup, &settings.target);
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

/// The bytes of `chunks` of `backup`: the manifest's sizes, or for a
/// backup without one, the listing's.
fn chunk_bytes(backup: &RemoteBackup, chunks: &[String]) -> u64 {
    let size = |name: &String| match &backup.manifest {
        Some(m) => m.chunks.iter().find(|c| &c.name == name).map(|c| c.size),
        None => backup
            .files
            .iter()
            .find(|f| &f.name == name)
            .map(|f| f.size),
    };
    chunks.iter().filter_map(size).sum()
}

/// `runner` for the cleanup after a failed receive. A restore stopped at
/// its deadline has no time left, and its cleanup must not be cut to
/// nothing by it: the cleanup gets a token of its own, and with it the
/// usual bound of cleanup commands.
pub(crate) fn cleanup_runner(runner: &Runner) -> Runner {
    runner.clone().with_cancel(CancelToken::new())
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
/// `gpg --decrypt | [zstd -d] | zfs recv`. While the chunks are fed, a
/// watcher stops every stage and the fetching on Ctrl-C or at the time
/// limit, since a write into a stalled `zfs recv` or a read from a stalled
/// `rclone cat` cannot look at the flag; waiting for the stages afterwards
/// watches it by itself. (What a stop makes fail is reported as the stop
/// by [`restore_chain`].)
fn receive_one(
    feed: &Feed<'_>,
    gpg: Option<&GpgEncryptor>,
    runner: &Runner,
    recv_cmd: &CommandLine,
) -> Result<(), RestoreError> {
    let backup = feed.backup;
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
    let fed = feed.cancel.watch(
        || {
            stages.stop_all();
            feed.handle.abandon();
        },
        || feed.run(&mut cipher_in),
    );
    match fed {
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

    /// Stops every stage (from any thread, any number of times).
    fn stop_all(&self) {
        self.recv.stop();
        self.decrypt.stop();
        if let Some(decompress) = &self.decompress {
            decompress.stop();
        }
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
        self.stop_all();
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
        feed_error(failure, backup)
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

/// The restore error for feeding that failed by itself.
fn feed_error(failure: FeedError, backup: &RemoteBackup) -> RestoreError {
    match failure {
        FeedError::Damaged { chunk, reason } => RestoreError::DamagedChunk {
            backup: backup.dir_name.clone(),
            chunk,
            reason,
        },
        FeedError::Remote { path, source } => RestoreError::Remote { path, source },
        FeedError::Write(e) => decrypt_error(backup, GpgError::Pipe(e)),
        FeedError::Interrupted => RestoreError::Interrupted,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn settings(cancel: CancelToken) -> RestoreSettings {
        RestoreSettings {
            target: DatasetName::parse("tank/restored").unwrap(),
            force: false,
            mount: true,
            // Never run: a stopped restore must not get as far as asking.
            zfs: "/nonexistent/zfs".into(),
            remote: "r:".into(),
            cancel,
            prefetch_bytes: DEFAULT_PREFETCH_BYTES,
        }
    }

    #[test]
    fn a_restore_past_its_deadline_or_interrupted_says_so_and_runs_nothing() {
        let store = crate::stages::MockUploader::new();
        let run = |cancel: CancelToken| {
            restore_chain(
                &store,
                None,
                &Runner::new(),
                &[],
                &settings(cancel),
                &crate::util::NoProgress,
            )
            .unwrap_err()
        };
        let interrupted = CancelToken::new();
        interrupted.cancel();
        assert!(matches!(run(interrupted), RestoreError::Interrupted));
        let late = CancelToken::new();
        late.set_step_limit(Some(std::time::Duration::ZERO));
        let err = run(late);
        assert!(matches!(err, RestoreError::TimedOut(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "the time limit of 0s ran out; the receive was aborted"
        );
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
