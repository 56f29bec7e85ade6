//! `encryption = "gpg-recipients"`: gpg public-key encryption, and the
//! secret keys that undo it.
//!
//! The backup host holds only public keys: ASCII-armored files given to
//! gpg with `--recipient-file` (no keyring needed), or fingerprints of keys
//! in a configured keyring. With files alone, gpg runs in a throwaway home
//! directory, so it neither needs nor writes anything in the user's home.
//!
//! A restore decrypts with the user's keyring and agent, or with a secret
//! key file imported into a throwaway home directory ([`SecretKeyring`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::error::GpgError;
use crate::model::{check_recipient_keys, parse_key_listing, ListedKey, RecipientKeys};
use crate::process::{CommandLine, Runner};
use crate::stages::{ByteStream, Encryptor, ProcessStage, RunningStage, Started};

/// A gpg home directory of zfs2cloud's own (mode 0700), removed when
/// dropped, together with the gpg-agent gpg may have started for it.
#[derive(Debug)]
pub struct TempGpgHome {
    dir: tempfile::TempDir,
    gpgconf: PathBuf,
}

impl TempGpgHome {
    /// A new, empty home for the `gpg` binary `gpg`.
    ///
    /// # Errors
    ///
    /// [`GpgError::Home`] if the directory cannot be made.
    pub fn new(gpg: &Path) -> Result<Self, GpgError> {
        let dir = tempfile::Builder::new()
            .prefix("zfs2cloud-gnupg.")
            // tempfile makes directories 0700: gpg refuses a home others
            // can read.
            .tempdir()
            .map_err(GpgError::Home)?;
        Ok(Self {
            dir,
            gpgconf: gpg.with_file_name("gpgconf"),
        })
    }

    /// The directory, for `--homedir`.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempGpgHome {
    fn drop(&mut self) {
        // An agent started for an imported secret key would otherwise
        // linger until it notices its socket is gone. Best effort: a
        // missing gpgconf only leaves it to do that.
        let _ = std::process::Command::new(&self.gpgconf)
            .arg("--homedir")
            .arg(self.dir.path())
            .args(["--kill", "gpg-agent"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The options every gpg run of this module starts with.
fn gpg_base(gpg: &Path, home: Option<&Path>) -> CommandLine {
    let cmd = CommandLine::new(gpg);
    let cmd = match home {
        Some(home) => cmd.arg("--homedir").arg(home),
        None => cmd,
    };
    cmd.args(["--batch", "--no-tty"])
}

/// Lists the keys of the ASCII-armored `file` without importing them,
/// in a throwaway home.
///
/// # Errors
///
/// [`GpgError`] if gpg fails (e.g. the file holds no OpenPGP data).
pub fn list_key_file(runner: &Runner, gpg: &Path, file: &Path) -> Result<Vec<ListedKey>, GpgError> {
    let home = TempGpgHome::new(gpg)?;
    let cmd = gpg_base(gpg, Some(home.path()))
        .args(["--with-colons", "--import-options", "show-only", "--import"])
        .arg(file);
    let out = runner.query(&cmd)?;
    Ok(parse_key_listing(&out.stdout_lossy()))
}

/// `encryption = "gpg-recipients"`: encrypts to public keys. Never holds
/// a secret.
#[derive(Debug, Clone)]
pub struct RecipientEncryptor {
    runner: Runner,
    gpg: PathBuf,
    files: Vec<PathBuf>,
    fingerprints: Vec<String>,
    homedir: Option<PathBuf>,
}

/// Stands for the throwaway home in [`Encryptor::describe`].
const TEMP_HOME: &str = "<temporary GNUPGHOME>";

impl RecipientEncryptor {
    /// Encrypts to the keys of `files` and to `fingerprints`, looked up in
    /// the keyring of `homedir` (`None`: gpg's default).
    #[must_use]
    pub fn new(
        runner: Runner,
        gpg: PathBuf,
        files: Vec<PathBuf>,
        fingerprints: Vec<String>,
        homedir: Option<PathBuf>,
    ) -> Self {
        Self {
            runner,
            gpg,
            files,
            fingerprints,
            homedir,
        }
    }

    /// The encryptor of `config`'s `recipient_files`, `recipients` and
    /// `gpg_homedir`.
    #[must_use]
    pub fn from_config(config: &crate::config::Config, runner: &Runner) -> Self {
        Self::new(
            runner.clone(),
            config.tools.gpg.clone(),
            config.recipient_files.clone(),
            config.recipients.clone(),
            config.gpg_homedir.clone(),
        )
    }

    /// The home gpg runs in: the configured keyring's when fingerprints
    /// are looked up in it, else a throwaway one.
    fn uses_temp_home(&self) -> bool {
        self.fingerprints.is_empty()
    }

    fn command(&self, temp_home: Option<&Path>) -> CommandLine {
        let home = temp_home.or(self.homedir.as_deref());
        let mut cmd = gpg_base(&self.gpg, home).args([
            "--quiet",
            "--yes",
            // The keys are the ones the config names: no web of trust to
            // consult, and no trustdb to write.
            "--trust-model",
            "always",
            "--compress-algo",
            "none",
            "--encrypt",
        ]);
        for file in &self.files {
            cmd = cmd.arg("--recipient-file").arg(file);
        }
        for fpr in &self.fingerprints {
            cmd = cmd.arg("--recipient").arg(fpr);
        }
        cmd.args(["--output", "-"])
    }

    /// Checks every key at `now` (as [`check_recipient_keys`]) and returns
    /// them: each file's keys, then the configured fingerprints' keys.
    ///
    /// # Errors
    ///
    /// [`GpgError::Keys`] naming the file or fingerprint whose key cannot
    /// be used; [`GpgError`] if gpg cannot list it.
    pub fn check_keys(&self, now: DateTime<Utc>) -> Result<RecipientKeys, GpgError> {
        let now = now.timestamp();
        let mut all = RecipientKeys {
            fingerprints: Vec::new(),
            expiring: Vec::new(),
        };
        for file in &self.files {
            let keys = list_key_file(&self.runner, &self.gpg, file)?;
            let checked = check_recipient_keys(&keys, now)
                .map_err(|why| GpgError::Keys(format!("{}: {why}", file.display())))?;
            merge(&mut all, checked);
        }
        for fpr in &self.fingerprints {
            let keys = self.list_keyring_key(fpr)?;
            let checked = check_recipient_keys(&keys, now)
                .map_err(|why| GpgError::Keys(format!("recipient {fpr}: {why}")))?;
            merge(&mut all, checked);
        }
        Ok(all)
    }

    /// The keyring's listing of the public key `fpr`.
    fn list_keyring_key(&self, fpr: &str) -> Result<Vec<ListedKey>, GpgError> {
        let cmd = gpg_base(&self.gpg, self.homedir.as_deref())
            .args(["--with-colons", "--list-keys"])
            .arg(fpr);
        match self.runner.query(&cmd) {
            Ok(out) => Ok(parse_key_listing(&out.stdout_lossy())),
            Err(e) if e.stderr().contains("No public key") || e.status().is_some() => {
                Err(GpgError::Keys(format!(
                    "recipient {fpr}: no such public key in the keyring of {}",
                    self.homedir
                        .as_deref()
                        .map_or("gpg's default home".to_owned(), |h| h.display().to_string())
                )))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn merge(all: &mut RecipientKeys, more: RecipientKeys) {
    all.fingerprints.extend(more.fingerprints);
    all.expiring.extend(more.expiring);
}

impl Encryptor for RecipientEncryptor {
    fn describe(&self) -> String {
        let home = self.uses_temp_home().then_some(Path::new(TEMP_HOME));
        self.command(home).to_string()
    }

    fn encrypt(&self, input: ByteStream) -> Result<Started<GpgError>, GpgError> {
        let home = self
            .uses_temp_home()
            .then(|| TempGpgHome::new(&self.gpg))
            .transpose()?;
        let started = ProcessStage::start(
            &self.runner,
            &self.command(home.as_ref().map(TempGpgHome::path)),
            Some(input),
            Vec::new(),
        )?;
        Ok(gpg_stage(started, home.map(Arc::new), None))
    }

    fn recipients(&self, now: DateTime<Utc>) -> Result<Vec<String>, GpgError> {
        let keys = self.check_keys(now)?;
        for (fpr, days) in &keys.expiring {
            log::warn!("the recipient key {fpr} expires in {days} day(s): renew it or replace it");
        }
        Ok(keys.fingerprints)
    }
}

/// The secret keys a restore decrypts with, from a secret key file
/// imported into a throwaway home.
#[derive(Debug, Clone)]
pub struct SecretKeyring {
    home: Arc<TempGpgHome>,
}

impl SecretKeyring {
    /// Imports the secret key file `file` (as `gpg --export-secret-keys`
    /// writes it; a passphrase-protected key stays protected) into a new
    /// throwaway home.
    ///
    /// # Errors
    ///
    /// [`GpgError::Keys`] if the file holds no secret key; [`GpgError`] if
    /// gpg fails.
    pub fn import(runner: &Runner, gpg: &Path, file: &Path) -> Result<Self, GpgError> {
        let home = TempGpgHome::new(gpg)?;
        // Only this run's own throwaway home changes: a dry run imports
        // too, which proves the file before anything would be downloaded.
        let import = gpg_base(gpg, Some(home.path()))
            .args(["--quiet", "--import"])
            .arg(file);
        runner.query(&import)?;
        let list = gpg_base(gpg, Some(home.path())).args(["--with-colons", "--list-secret-keys"]);
        let keys = parse_key_listing(&runner.query(&list)?.stdout_lossy());
        if !keys.iter().any(|k| k.secret) {
            return Err(GpgError::Keys(format!(
                "{} holds no secret key (is it the public key? export the secret one with \
                 `gpg --armor --export-secret-keys FPR`)",
                file.display()
            )));
        }
        Ok(Self {
            home: Arc::new(home),
        })
    }

    /// The home directory holding the imported key.
    #[must_use]
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The home, to keep alive while gpg runs in it.
    pub(super) fn shared_home(&self) -> Arc<TempGpgHome> {
        Arc::clone(&self.home)
    }
}

/// `started`, holding `home` (if any) until its stage has been waited for
/// (gpg writes into its home until it exits), and, with `recipients`,
/// naming them if gpg has none of their secret keys.
pub(super) fn gpg_stage(
    started: Started<GpgError>,
    home: Option<Arc<TempGpgHome>>,
    recipients: Option<Vec<String>>,
) -> Started<GpgError> {
    if home.is_none() && recipients.is_none() {
        return started;
    }
    Started {
        stage: Box::new(GpgStage {
            stage: started.stage,
            _home: home,
            recipients,
        }),
        output: started.output,
    }
}

/// A gpg stage with the home it runs in and, when decrypting to secret
/// keys, the recipients to name if none of theirs is there.
struct GpgStage {
    stage: Box<dyn RunningStage<GpgError>>,
    _home: Option<Arc<TempGpgHome>>,
    recipients: Option<Vec<String>>,
}

impl RunningStage<GpgError> for GpgStage {
    fn describe(&self) -> String {
        self.stage.describe()
    }

    fn stop(&self) {
        self.stage.stop();
    }

    fn wait(self: Box<Self>) -> Result<(), GpgError> {
        match (self.stage.wait(), &self.recipients) {
            (Err(GpgError::Process(source)), Some(recipients))
                if source.stderr().contains("No secret key") =>
            {
                Err(GpgError::NoSecretKey {
                    recipients: recipients_in_words(recipients),
                    source,
                })
            }
            (other, _) => other,
        }
    }
}

fn recipients_in_words(recipients: &[String]) -> String {
    if recipients.is_empty() {
        "(not recorded)".to_owned()
    } else {
        recipients.join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_command_encrypts_to_every_key_and_holds_no_secret() {
        let enc = RecipientEncryptor::new(
            Runner::new(),
            "gpg".into(),
            vec!["/etc/zfs2cloud/a.asc".into(), "/etc/zfs2cloud/b.asc".into()],
            Vec::new(),
            None,
        );
        let shown = enc.describe();
        assert!(
            shown.contains("--homedir '<temporary GNUPGHOME>'")
                || shown.contains("--homedir <temporary GNUPGHOME>"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "--encrypt --recipient-file /etc/zfs2cloud/a.asc --recipient-file \
                 /etc/zfs2cloud/b.asc --output -"
            ),
            "{shown}"
        );
        assert!(!shown.contains("passphrase"), "{shown}");
        let fpr = "634AF28DB8567DDC2A359B486EB4C2A854F1F4DB".to_owned();
        let enc = RecipientEncryptor::new(
            Runner::new(),
            "gpg".into(),
            Vec::new(),
            vec![fpr.clone()],
            Some("/etc/zfs2cloud/gnupg".into()),
        );
        let shown = enc.describe();
        assert!(
            shown.starts_with("gpg --homedir /etc/zfs2cloud/gnupg --batch"),
            "{shown}"
        );
        assert!(shown.contains(&format!("--recipient {fpr}")), "{shown}");
    }

    #[test]
    fn a_missing_secret_key_names_the_recipients() {
        assert_eq!(recipients_in_words(&[]), "(not recorded)");
        assert_eq!(recipients_in_words(&["A".into(), "B".into()]), "A, B");
    }
}
