//! Secrets: the passphrase (read from its file with the permission checks,
//! or from a prompt, and wiped on drop), and the masking of secret-looking
//! flags wherever argv is shown.

use std::fmt;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

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
    pub(crate) fn to_pipe(&self) -> std::io::Result<std::io::PipeReader> {
        let (reader, mut writer) = std::io::pipe()?;
        writer.write_all(&self.0)?;
        drop(writer);
        Ok(reader)
    }

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

/// Masks the values of flags whose name suggests a secret
/// (`--s3-secret-access-key=…`, `--password …`, `--token …`).
#[must_use]
pub fn mask_secret_flags(flags: &[String]) -> Vec<String> {
    fn secret_name(flag: &str) -> bool {
        let lower = flag.to_ascii_lowercase();
        ["pass", "secret", "token", "key", "auth", "credential"]
            .iter()
            .any(|w| lower.contains(w))
    }
    let mut out = Vec::with_capacity(flags.len());
    let mut mask_next = false;
    for flag in flags {
        if mask_next {
            out.push("***".to_owned());
            mask_next = false;
        } else if let Some((name, _)) = flag.split_once('=').filter(|(n, _)| n.starts_with('-')) {
            if secret_name(name) {
                out.push(format!("{name}=***"));
            } else {
                out.push(flag.clone());
            }
        } else {
            mask_next = flag.starts_with('-') && secret_name(flag);
            out.push(flag.clone());
        }
    }
    out
}
