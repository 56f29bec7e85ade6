//! The process-backed stages for one config: `zfs`, `gpg`, `rclone` and
//! the mounter, built the way every command needs them.

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::model::{Encryption, Mode, Passphrase, PassphraseError};
use crate::process::Runner;
use crate::stages::{
    Encryptor, GpgEncryptor, Mounter, NoEncryption, RcloneOptions, RcloneUploader,
    RecipientEncryptor, ZfsCli,
};
use crate::util::Progress;

use super::Backup;

/// The stages a config's commands run with, each backed by its program.
#[derive(Debug)]
pub struct ProcessStages {
    /// `zfs`: snapshots, send, holds, destroy.
    pub zfs: ZfsCli,
    /// `gpg`; `None` in file mode or without `passphrase_file`.
    pub gpg: Option<GpgEncryptor>,
    /// `gpg` encrypting to public keys; `None` unless intermediate mode
    /// with `encryption = "gpg-recipients"`.
    pub recipients: Option<RecipientEncryptor>,
    /// `rclone` for listing, single uploads and syncs.
    pub rclone: RcloneUploader,
    /// `rclone` for a pipelined export: its `upload_concurrency` parallel
    /// uploads share `bwlimit`, so that together they keep to it.
    pub stream_rclone: RcloneUploader,
    /// Exposes snapshots as files (file mode).
    pub mounter: Mounter,
}

impl ProcessStages {
    /// The stages `config` asks for, all running through `runner`.
    ///
    /// # Errors
    ///
    /// [`PassphraseError`] if intermediate mode's passphrase file cannot be
    /// read.
    pub fn new(config: &Config, runner: &Runner) -> Result<Self, PassphraseError> {
        let gpg = match (config.mode, config.encryption, &config.passphrase_file) {
            (Mode::Intermediate, Encryption::Gpg, Some(file)) => Some(GpgEncryptor::new(
                runner.clone(),
                config.tools.gpg.clone(),
                Passphrase::from_file(file)?,
            )),
            _ => None,
        };
        let recipients = (config.mode == Mode::Intermediate
            && config.encryption == Encryption::GpgRecipients)
            .then(|| RecipientEncryptor::from_config(config, runner));
        let rclone = RcloneUploader::new(
            runner.clone(),
            config.tools.rclone.clone(),
            RcloneOptions::from(config),
        );
        Ok(Self {
            zfs: ZfsCli::new(runner.clone(), config.tools.zfs.clone())
                .with_send_flags(config.send_flags.clone()),
            gpg,
            recipients,
            stream_rclone: rclone.sharing_bwlimit(config.upload_concurrency),
            rclone,
            mounter: Mounter::new(runner.clone(), config.tools.zfs.clone()),
        })
    }

    /// A [`Backup`] of `config` with these stages.
    #[must_use]
    pub fn backup<'a>(
        &'a self,
        config: &'a Config,
        runner: &'a Runner,
        now: DateTime<Utc>,
        progress: &'a dyn Progress,
    ) -> Backup<'a> {
        Backup {
            config,
            runner,
            snapshotter: &self.zfs,
            pruner: &self.zfs,
            exporter: &self.zfs,
            encryptor: self.encryptor(config),
            uploader: &self.rclone,
            stream_uploader: &self.stream_rclone,
            mounter: &self.mounter,
            now,
            progress,
        }
    }
}

impl ProcessStages {
    /// The export's encryptor: gpg (to the passphrase or to public keys),
    /// or the pass-through of `encryption = "none"`; `None` in file mode,
    /// or without gpg.
    #[must_use]
    pub fn encryptor(&self, config: &Config) -> Option<&dyn Encryptor> {
        match (config.mode, config.encryption) {
            (Mode::File, _) => None,
            (Mode::Intermediate, Encryption::None) => Some(&NoEncryption),
            (Mode::Intermediate, Encryption::Gpg) => self.gpg.as_ref().map(|g| g as &dyn Encryptor),
            (Mode::Intermediate, Encryption::GpgRecipients) => {
                self.recipients.as_ref().map(|r| r as &dyn Encryptor)
            }
        }
    }
}

impl From<&Config> for RcloneOptions {
    /// `rclone_config`, `rclone_global_flags`, `rclone_args`, `bwlimit`
    /// and `upload_stall_timeout_seconds`.
    fn from(config: &Config) -> Self {
        Self {
            config: config.rclone_config.clone(),
            global_flags: config.rclone_global_flags.clone(),
            args: config.rclone_args.clone(),
            bwlimit: config.bwlimit.clone(),
            stall_timeout: config.upload_stall_timeout(),
        }
    }
}
