//! Symmetric encryption with `gpg`, the passphrase that feeds it, and the
//! decryption of every gpg backup (symmetric, or to public keys).
//!
//! The passphrase reaches gpg through a pipe on file descriptor 3
//! (`--passphrase-fd 3`): it is never in any process's argv or environment,
//! never logged and never printed by `--dry-run`.

use std::path::PathBuf;

use super::error::GpgError;
use super::gpg_recipients::{gpg_stage, SecretKeyring};
use crate::model::Passphrase;
use crate::process::{CommandLine, Runner};
use crate::stages::{ByteStream, Encryptor, ProcessStage, Started};

/// The child fd on which gpg reads the passphrase.
const PASSPHRASE_FD: i32 = 3;

/// `gpg --symmetric` with AES256 and gpg's own compression off (the stream
/// is a ZFS send stream; compression is a separate, explicit choice); and,
/// for restore, `gpg --decrypt` with the secrets given: the passphrase of
/// symmetric backups, the secret keys of backups encrypted to public keys.
#[derive(Debug, Clone)]
pub struct GpgEncryptor {
    runner: Runner,
    gpg: PathBuf,
    /// Symmetric backups' passphrase; for backups to public keys, the
    /// secret key's passphrase, if it has one.
    passphrase: Option<Passphrase>,
    /// Secret keys imported from a file; `None`: the user's keyring.
    keyring: Option<SecretKeyring>,
}

impl GpgEncryptor {
    /// An encryptor that runs `gpg` (the configured binary).
    #[must_use]
    pub fn new(runner: Runner, gpg: PathBuf, passphrase: Passphrase) -> Self {
        Self {
            runner,
            gpg,
            passphrase: Some(passphrase),
            keyring: None,
        }
    }

    /// A decryptor for restore: `passphrase` decrypts symmetric backups
    /// (and unlocks a protected secret key); backups to public keys are
    /// decrypted with `keyring`'s secret keys, or without one with the
    /// user's keyring and agent.
    #[must_use]
    pub fn for_restore(
        runner: Runner,
        gpg: PathBuf,
        passphrase: Option<Passphrase>,
        keyring: Option<SecretKeyring>,
    ) -> Self {
        Self {
            runner,
            gpg,
            passphrase,
            keyring,
        }
    }

    /// Whether a passphrase was given: symmetric backups need one.
    #[must_use]
    pub fn has_passphrase(&self) -> bool {
        self.passphrase.is_some()
    }

    /// The gpg command line. Note what is *not* in it: the passphrase.
    #[must_use]
    pub fn command(&self) -> CommandLine {
        CommandLine::new(&self.gpg).args([
            "--batch",
            "--no-tty",
            "--quiet",
            "--yes",
            // gpg ≥ 2.1 reads --passphrase-fd only in loopback mode, and
            // must not cache the symmetric key in gpg-agent afterwards.
            "--pinentry-mode",
            "loopback",
            "--no-symkey-cache",
            "--passphrase-fd",
            "3",
            "--symmetric",
            "--cipher-algo",
            "AES256",
            "--compress-algo",
            "none",
            "--output",
            "-",
        ])
    }

    /// `gpg --decrypt` reading ciphertext from its stdin and writing the
    /// plaintext to its stdout, with the passphrase on fd 3.
    #[must_use]
    pub fn decrypt_command(&self) -> CommandLine {
        CommandLine::new(&self.gpg).args([
            "--batch",
            "--no-tty",
            "--quiet",
            "--pinentry-mode",
            "loopback",
            "--no-symkey-cache",
            "--passphrase-fd",
            "3",
            "--decrypt",
            "--output",
            "-",
        ])
    }

    /// Starts decrypting `input`: the returned stage's output is the
    /// plaintext.
    ///
    /// # Errors
    ///
    /// [`GpgError`] if gpg cannot be started.
    pub fn decrypt(&self, input: ByteStream) -> Result<Started<GpgError>, GpgError> {
        self.start(&self.decrypt_command(), input)
    }

    /// `gpg --decrypt` of a backup encrypted to public keys: in the
    /// imported keyring's home if there is one, and with the passphrase on
    /// fd 3 (for a protected secret key) only if one was given; else gpg
    /// asks the user's agent.
    #[must_use]
    pub fn decrypt_with_keys_command(&self) -> CommandLine {
        let mut cmd = CommandLine::new(&self.gpg);
        if let Some(keyring) = &self.keyring {
            cmd = cmd.arg("--homedir").arg(keyring.home());
        }
        cmd = cmd.args(["--batch", "--no-tty", "--quiet"]);
        if self.passphrase.is_some() {
            cmd = cmd.args(["--pinentry-mode", "loopback", "--passphrase-fd", "3"]);
        }
        cmd.args(["--decrypt", "--output", "-"])
    }

    /// Starts decrypting `input`, a stream encrypted to `recipients`
    /// (their fingerprints, named if no secret key of theirs is here).
    ///
    /// # Errors
    ///
    /// [`GpgError`] if gpg cannot be started.
    pub fn decrypt_with_keys(
        &self,
        input: ByteStream,
        recipients: &[String],
    ) -> Result<Started<GpgError>, GpgError> {
        let started = self.start(&self.decrypt_with_keys_command(), input)?;
        Ok(gpg_stage(
            started,
            self.keyring.as_ref().map(SecretKeyring::shared_home),
            Some(recipients.to_vec()),
        ))
    }

    /// Starts `cmd` reading `input`, with the passphrase (if any) on fd 3.
    fn start(&self, cmd: &CommandLine, input: ByteStream) -> Result<Started<GpgError>, GpgError> {
        let fds = match &self.passphrase {
            Some(passphrase) => {
                let pipe = passphrase.to_pipe().map_err(GpgError::Pipe)?;
                vec![(pipe.into(), PASSPHRASE_FD)]
            }
            None => Vec::new(),
        };
        ProcessStage::start(&self.runner, cmd, Some(input), fds)
    }
}

impl Encryptor for GpgEncryptor {
    fn describe(&self) -> String {
        self.command().to_string()
    }

    fn encrypt(&self, input: ByteStream) -> Result<Started<GpgError>, GpgError> {
        self.start(&self.command(), input)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::model::PassphraseError;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    fn write(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn first_line_is_the_passphrase_like_gpg() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "p",
            b"correct horse \xc3\xa9\nsecond line\n",
            0o600,
        );
        let pass = Passphrase::from_file(&p).unwrap();
        assert_eq!(pass.expose(), "correct horse é".as_bytes());
        let p = write(d.path(), "q", b"no-newline", 0o400);
        assert_eq!(Passphrase::from_file(&p).unwrap().expose(), b"no-newline");
    }

    #[test]
    fn open_permissions_and_empty_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "p", b"x\n", 0o640);
        let err = Passphrase::from_file(&p).unwrap_err();
        assert!(
            matches!(err, PassphraseError::TooOpen { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        let p = write(d.path(), "e", b"\nsecret-on-line-2\n", 0o600);
        assert!(matches!(
            Passphrase::from_file(&p).unwrap_err(),
            PassphraseError::Empty { .. }
        ));
        assert!(matches!(
            Passphrase::from_file(d.path()).unwrap_err(),
            PassphraseError::NotAFile { .. }
        ));
    }

    #[test]
    fn passphrase_never_shows_in_debug_or_command() {
        let pass = Passphrase::from_bytes(b"hunter2".to_vec());
        assert!(!format!("{pass:?}").contains("hunter2"));
        let enc = GpgEncryptor::new(Runner::new(), "gpg".into(), pass);
        assert!(!format!("{enc:?}").contains("hunter2"));
        assert!(!enc.describe().contains("hunter2"));
    }
}
