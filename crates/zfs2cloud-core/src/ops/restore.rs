//! Restore: pick the chain that reaches a backup, stream it from the remote,
//! check every chunk, decrypt, and `zfs recv`.
//!
//! Nothing is staged locally: each chunk is read with `rclone cat`, hashed
//! as it passes, and written to `gpg --decrypt`, whose output goes straight
//! into `zfs recv`. A chunk whose SHA-256 differs from the manifest aborts
//! the receive before the stream ends (gpg's stdin is never closed
//! normally), so `zfs recv` never commits a damaged backup: the target is
//! left as it was (or absent).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;

use sha2::{Digest, Sha256};

use crate::model::hex;
use crate::model::remote_join;
use crate::model::Compression;
use crate::model::DatasetName;
use crate::model::RemoteBackup;
use crate::policy::RestorePlanError;
use crate::process::{
    CancelToken, CommandLine, ProcessError, Runner, RunningProcess, SpawnOptions,
};
use crate::stages::{GpgEncryptor, GpgError};
use crate::stages::{UploadError, Uploader};

/// Errors of restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The restore point or its base is not on the remote.
    #[error(transparent)]
    Plan(#[from] RestorePlanError),
    /// The target exists and `--force` was not given.
    #[error("{0} already exists; restore into a new dataset, or pass --force to overwrite it")]
    TargetExists(String),
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

/// Whether `dataset` exists.
///
/// # Errors
///
/// [`ProcessError`] if `zfs list` fails for another reason than absence.
pub fn dataset_exists(
    runner: &Runner,
    zfs: &std::path::Path,
    dataset: &DatasetName,
) -> Result<bool, ProcessError> {
    // Also asked while cleaning up after an interruption, so it must run
    // even then.
    let options = crate::process::RunOptions::cleanup(runner);
    match runner.query_with(
        &CommandLine::new(zfs)
            .args(["list", "-H", "-o", "name"])
            .arg(dataset.as_str()),
        &options,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.stderr().contains("does not exist") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Receives `chain` (full first) into `settings.target`.
///
/// # Errors
///
/// [`RestoreError`]; a damaged chunk or any failure aborts the receive of
/// that backup before `zfs recv` can commit it.
pub fn restore_chain(
    store: &dyn Uploader,
    gpg: &GpgEncryptor,
    runner: &Runner,
    chain: &[&RemoteBackup],
    settings: &RestoreSettings,
) -> Result<(), RestoreError> {
    let exists = dataset_exists(runner, &settings.zfs, &settings.target).map_err(|source| {
        RestoreError::Receive {
            backup: String::new(),
            source,
        }
    })?;
    if exists && !settings.force {
        return Err(RestoreError::TargetExists(settings.target.to_string()));
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
        let force = i > 0 || settings.force;
        // -u: receive without mounting. A mount that fails (a non-empty
        // mountpoint) would fail the receive of data that arrived whole;
        // the dataset is mounted once the whole chain is in.
        let mut recv = CommandLine::new(&settings.zfs).args(["recv", "-u"]);
        if force {
            recv = recv.arg("-F");
        }
        let recv = recv.arg(settings.target.as_str());
        let dir = remote_join(&settings.remote, &backup.dir_name);
        let chunks = backup.chunk_names();
        if runner.skip_in_dry_run(&format!(
            "rclone cat {dir}/{{{}}} (checked against the manifest) | {} | {recv}",
            chunks.join(","),
            gpg.decrypt_command()
        )) {
            continue;
        }
        if let Err(e) = receive_one(
            store,
            gpg,
            runner,
            backup,
            &dir,
            &chunks,
            &recv,
            &settings.cancel,
        ) {
            // A target this restore created must not stay behind half
            // done: after a failed incremental it would hold another point
            // than asked for, and an aborted full receive may leave an
            // empty dataset on some ZFS versions. It did not exist before,
            // so it is ours to remove.
            let created = !exists
                && (i > 0
                    || dataset_exists(runner, &settings.zfs, &settings.target).unwrap_or(false));
            if created {
                match crate::stages::destroy_own_dataset(
                    runner,
                    &settings.zfs,
                    settings.target.as_str(),
                    true,
                ) {
                    Ok(_) => log::warn!("destroyed the partly restored {}", settings.target),
                    Err(d) => log::error!(
                        "could not destroy the partly restored {}: {}",
                        settings.target,
                        crate::util::error_chain(&d)
                    ),
                }
            }
            return Err(e);
        }
        log::info!("received {} into {}", backup.dir_name, settings.target);
    }
    if settings.mount {
        let cmd = CommandLine::new(&settings.zfs)
            .arg("mount")
            .arg(settings.target.as_str());
        runner.mutate(&cmd).map_err(|source| RestoreError::Mount {
            target: settings.target.to_string(),
            source,
        })?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn receive_one(
    store: &dyn Uploader,
    gpg: &GpgEncryptor,
    runner: &Runner,
    backup: &RemoteBackup,
    dir: &str,
    chunks: &[String],
    recv_cmd: &CommandLine,
    cancel: &CancelToken,
) -> Result<(), RestoreError> {
    let decrypt_err = |source| RestoreError::Decrypt {
        backup: backup.dir_name.clone(),
        source,
    };
    let compression = match &backup.manifest {
        None => Compression::None,
        Some(m) => Compression::from_manifest(&m.compression).map_err(|compression| {
            RestoreError::UnknownCompression {
                backup: backup.dir_name.clone(),
                compression,
            }
        })?,
    };
    let mut decrypt = gpg.decrypt().map_err(decrypt_err)?;
    let Some(plain) = decrypt.take_stdout() else {
        return Err(decrypt_err(GpgError::Pipe(std::io::Error::other(
            "gpg has no stdout",
        ))));
    };
    // Compressed: zstd runs in this process between gpg and zfs recv.
    let (recv_stdin, plain) = match compression {
        Compression::None => (Stdio::from(plain), None),
        Compression::Zstd => (Stdio::piped(), Some(plain)),
    };
    let mut recv = runner
        .spawn(
            recv_cmd,
            SpawnOptions {
                stdin: Some(recv_stdin),
                ..SpawnOptions::default()
            },
        )
        .map_err(|source| RestoreError::Receive {
            backup: backup.dir_name.clone(),
            source,
        })?;
    let Some(mut cipher_in) = decrypt.take_stdin() else {
        return Err(decrypt_err(GpgError::Pipe(std::io::Error::other(
            "gpg has no stdin",
        ))));
    };
    let decompressor = match (plain, recv.take_stdin()) {
        (Some(plain), Some(mut sink)) => Some(std::thread::spawn(move || {
            crate::stages::zstd_decompress(plain, &mut sink)
        })),
        _ => None,
    };
    let fed = feed_chunks(store, backup, dir, chunks, &mut cipher_in, cancel);
    let decompress_err = |source| RestoreError::Decompress {
        backup: backup.dir_name.clone(),
        source,
    };
    if let Err(e) = fed {
        // Kill before gpg ever sees the end of its input: zfs recv gets a
        // truncated stream and never commits it.
        abort(&mut decrypt, &mut recv);
        // With gpg dead, the decompressor's input ends; it then stops.
        let _ = decompressor.map(std::thread::JoinHandle::join);
        let (decrypt_done, recv_done) = (decrypt.wait(), recv.wait());
        // A broken pipe while feeding means a consumer died first, and its
        // error is the real one: gpg's when it refused the input (a wrong
        // passphrase), else zfs recv's (which makes gpg's write fail too).
        if let FeedError::Write(_) = e {
            // Exited by itself with an error (we killed a running one with
            // a signal, which says nothing about the cause).
            let gpg_cause = decrypt_done
                .status
                .is_some_and(|st| st.code().is_some_and(|c| c != 0))
                && !decrypt_done.stderr.contains("Broken pipe");
            if gpg_cause {
                if let Err(source) = decrypt_done.into_result() {
                    return Err(decrypt_err(GpgError::Process(source)));
                }
            } else if let Err(source) = recv_done.into_result() {
                return Err(RestoreError::Receive {
                    backup: backup.dir_name.clone(),
                    source,
                });
            }
        }
        return Err(e.into_restore_error(backup));
    }
    drop(cipher_in);
    let decrypt_done = decrypt.wait();
    let decompressed = decompressor.map(|h| {
        h.join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the zstd thread panicked")))
    });
    let recv_done = recv.wait();
    let recv_result = recv_done.into_result();
    decrypt_done
        .into_result()
        .map_err(|e| decrypt_err(GpgError::Process(e)))?;
    if let Some(Err(e)) = decompressed {
        // A broken pipe means zfs recv went away first: its error says why.
        if e.kind() != std::io::ErrorKind::BrokenPipe || recv_result.is_ok() {
            return Err(decompress_err(e));
        }
    }
    recv_result.map_err(|source| RestoreError::Receive {
        backup: backup.dir_name.clone(),
        source,
    })
}

fn abort(decrypt: &mut RunningProcess, recv: &mut RunningProcess) {
    recv.kill();
    decrypt.kill();
}

enum FeedError {
    Damaged { chunk: String, reason: String },
    Remote { path: String, source: UploadError },
    Write(std::io::Error),
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
            Self::Write(e) => RestoreError::Decrypt {
                backup: backup.dir_name.clone(),
                source: GpgError::Pipe(e),
            },
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
    let mut buf = vec![0u8; 1 << 20];
    for name in chunks {
        let path = remote_join(dir, name);
        let remote_err = |source| FeedError::Remote {
            path: path.clone(),
            source,
        };
        let mut cat = store.cat(&path).map_err(remote_err)?;
        let mut stream = cat
            .take_stdout()
            .ok_or_else(|| FeedError::Write(std::io::Error::other("no stdout")))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        // The last block read is held back until the next one arrives, and
        // the chunk's final block until its size and SHA-256 are proven:
        // `zfs recv` commits when it reads the stream's END record, which
        // is in the final bytes, so a damaged final chunk must never reach
        // it, even for a moment.
        let mut held = vec![0u8; buf.len()];
        let mut held_len = 0;
        loop {
            if cancel.is_cancelled() {
                cat.kill();
                let _ = cat.wait();
                return Err(FeedError::Interrupted);
            }
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    cat.kill();
                    let _ = cat.wait();
                    return Err(FeedError::Remote {
                        path: path.clone(),
                        source: UploadError::Parse {
                            command: format!("cat {path}"),
                            message: e.to_string(),
                        },
                    });
                }
            };
            hasher.update(&buf[..n]);
            size += n as u64;
            if let Err(e) = sink.write_all(&held[..held_len]) {
                cat.kill();
                let _ = cat.wait();
                return Err(FeedError::Write(e));
            }
            std::mem::swap(&mut buf, &mut held);
            held_len = n;
        }
        drop(stream);
        cat.wait().into_result().map_err(|e| remote_err(e.into()))?;
        if let Some(entry) = backup
            .manifest
            .as_ref()
            .and_then(|m| m.chunks.iter().find(|c| &c.name == name))
        {
            let digest = hex(&hasher.finalize());
            if entry.size != size {
                return Err(FeedError::Damaged {
                    chunk: name.clone(),
                    reason: format!("{size} bytes, the manifest says {}", entry.size),
                });
            }
            if entry.sha256 != digest {
                return Err(FeedError::Damaged {
                    chunk: name.clone(),
                    reason: "its sha256 differs from the manifest".into(),
                });
            }
        }
        sink.write_all(&held[..held_len])
            .map_err(FeedError::Write)?;
    }
    Ok(())
}
