//! Symmetric encryption with `gpg`, and the passphrase that feeds it.
//!
//! The passphrase reaches gpg through a pipe on file descriptor 3
//! (`--passphrase-fd 3`): it is never in any process's argv or environment,
//! never logged and never printed by `--dry-run`.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::process::{CommandLine, ProcessError, Runner, RunningProcess, SpawnOptions};
use crate::stages::Encryptor;

/// The child fd on which gpg reads the passphrase.
const PASSPHRASE_FD: i32 = 3;

/// Errors reading the passphrase file.
#[derive(Debug, thiserror::Error)]
pub enum PassphraseError {
    /// The file could not be read.
    #[error("cannot read passphrase file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read it.
    #[error(
        "passphrase file {} is readable by group or others (mode {mode:04o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It is not a regular file.
    #[error("passphrase file {} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Its first line is empty.
    #[error("passphrase file {} is empty (gpg uses its first line as the passphrase)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
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
}

/// A passphrase, kept out of `Debug` output and wiped from memory on drop.
///
/// It is the first line of the passphrase file without its line ending,
/// exactly what `gpg --passphrase-file FILE` uses, so a backup made by
/// zfs2cloud decrypts by hand with that same file.
#[derive(Clone)]
pub struct Passphrase(Vec<u8>);

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(***)")
    }
}

impl Drop for Passphrase {
    fn drop(&mut self) {
        // Best effort: black_box keeps the optimizer from dropping the
        // store as dead (a guaranteed wipe would need unsafe volatile writes).
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

impl Passphrase {
    /// Reads the passphrase file. It must be a regular file that group and
    /// others cannot read, and its first line must not be empty.
    ///
    /// # Errors
    ///
    /// [`PassphraseError`] saying which of these failed.
    pub fn from_file(path: &Path) -> Result<Self, PassphraseError> {
        let read_err = |source| PassphraseError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if !meta.is_file() {
            return Err(PassphraseError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(PassphraseError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let mut bytes = std::fs::read(path).map_err(read_err)?;
        if let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            // Only the first line counts, as with gpg --passphrase-file.
            bytes[end..].fill(0);
            bytes.truncate(end);
        }
        if bytes.is_empty() {
            return Err(PassphraseError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self(bytes))
    }

    /// Wraps bytes already in memory (e.g. typed at a prompt).
    #[must_use]
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The raw bytes. Handle with care.
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// A pipe whose read end yields the passphrase and then EOF. The whole
    /// passphrase fits in the pipe buffer, so no writer thread is needed.
    fn to_pipe(&self) -> std::io::Result<std::io::PipeReader> {
        let (reader, mut writer) = std::io::pipe()?;
        writer.write_all(&self.0)?;
        drop(writer);
        Ok(reader)
    }
}

/// `gpg --symmetric` with AES256 and gpg's own compression off (the stream
/// is a ZFS send stream; compression is a separate, explicit choice).
#[derive(Debug, Clone)]
pub struct GpgEncryptor {
    runner: Runner,
    gpg: PathBuf,
    passphrase: Passphrase,
}

impl GpgEncryptor {
    /// An encryptor that runs `gpg` (the configured binary).
    #[must_use]
    pub fn new(runner: Runner, gpg: PathBuf, passphrase: Passphrase) -> Self {
        Self {
            runner,
            gpg,
            passphrase,
        }
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
}

impl GpgEncryptor {
    /// `gpg --decrypt` reading ciphertext from its stdin pipe and writing the
    /// plaintext to its stdout pipe, with the passphrase on fd 3.
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

    /// Starts decrypting: write the ciphertext to the process's stdin; the
    /// plaintext is its stdout.
    ///
    /// # Errors
    ///
    /// [`GpgError`] if gpg cannot be started.
    pub fn decrypt(&self) -> Result<RunningProcess, GpgError> {
        let pipe = self.passphrase.to_pipe().map_err(GpgError::Pipe)?;
        Ok(self.runner.spawn(
            &self.decrypt_command(),
            SpawnOptions {
                stdin: Some(Stdio::piped()),
                pipe_stdout: true,
                extra_fds: vec![(pipe.into(), PASSPHRASE_FD)],
            },
        )?)
    }
}

impl Passphrase {
    /// Asks for the passphrase on the terminal (`/dev/tty`), without echo.
    ///
    /// # Errors
    ///
    /// If there is no terminal, or it cannot be read.
    pub fn prompt(prompt: &str) -> std::io::Result<Self> {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        use std::io::{BufRead, BufReader};
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")?;
        let mut out = tty.try_clone()?;
        out.write_all(prompt.as_bytes())?;
        out.flush()?;
        let saved = tcgetattr(&tty).map_err(std::io::Error::from)?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&tty, SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
        let mut line = String::new();
        let read = BufReader::new(&tty).read_line(&mut line);
        let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
        let _ = out.write_all(b"\n");
        read?;
        let bytes = line.trim_end_matches(['\n', '\r']).as_bytes().to_vec();
        line.clear();
        if bytes.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty passphrase",
            ));
        }
        Ok(Self(bytes))
    }
}

impl Encryptor for GpgEncryptor {
    fn describe(&self) -> String {
        self.command().to_string()
    }

    fn encrypt(&self, input: Stdio) -> Result<RunningProcess, GpgError> {
        let pipe = self.passphrase.to_pipe().map_err(GpgError::Pipe)?;
        Ok(self.runner.spawn(
            &self.command(),
            SpawnOptions {
                stdin: Some(input),
                pipe_stdout: true,
                extra_fds: vec![(pipe.into(), PASSPHRASE_FD)],
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
