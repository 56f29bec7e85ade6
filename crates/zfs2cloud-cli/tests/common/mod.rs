//! Shared set-up for the CLI's end-to-end tests: a temp dir with a config,
//! a passphrase file and a private GNUPGHOME, and a way to run the real
//! `zfs2cloud` binary against it.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A passphrase with spaces and non-ASCII characters, unique per test
/// process so that a search for it in /proc cannot hit another test.
pub fn passphrase() -> String {
    format!("correct horse ✓ battery {}-{}", std::process::id(), line!())
}

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub passphrase_file: PathBuf,
    pub passphrase: String,
    pub basedir: PathBuf,
    pub gnupghome: PathBuf,
}

impl Setup {
    /// Writes a config for `dataset` with `extra` TOML appended and a remote
    /// that must never be used.
    pub fn new(dataset: &str, extra: &str) -> Self {
        Self::with_remote(dataset, "/nonexistent/remote", extra)
    }

    /// Writes a config for `dataset` uploading to `remote`, with `extra`
    /// TOML appended. Retries have no delay.
    pub fn with_remote(dataset: &str, remote: &str, extra: &str) -> Self {
        Self::with_split(dataset, remote, "64K", extra)
    }

    /// [`Setup::with_remote`] with chunks of `split_size`.
    pub fn with_split(dataset: &str, remote: &str, split_size: &str, extra: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("zfs2cloud-test-")
            .tempdir()
            .unwrap();
        let passphrase = passphrase();
        let passphrase_file = dir.path().join("passphrase");
        std::fs::write(&passphrase_file, format!("{passphrase}\n")).unwrap();
        std::fs::set_permissions(&passphrase_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let gnupghome = dir.path().join("gnupg");
        std::fs::create_dir(&gnupghome).unwrap();
        std::fs::set_permissions(&gnupghome, std::fs::Permissions::from_mode(0o700)).unwrap();
        let basedir = dir.path().join("intermediate");
        let config = dir.path().join("zfs2cloud.toml");
        std::fs::write(
            &config,
            format!(
                "dataset = {dataset:?}\n\
                 intermediate_basedir = \"intermediate\"\n\
                 remote = {remote:?}\n\
                 passphrase_file = \"passphrase\"\n\
                 split_size = {split_size:?}\n\
                 full_every_x_days = 30\n\
                 upload_retry_delay_seconds = 0\n\
                 {extra}"
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            passphrase_file,
            passphrase,
            basedir,
            gnupghome,
        }
    }

    /// `zfs2cloud -c <config>` with the clock set to `now` (RFC 3339) and
    /// no tool overrides from the caller's environment.
    pub fn cmd(&self, now: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zfs2cloud"));
        cmd.arg("-c")
            .arg(&self.config)
            .env("ZFS2CLOUD_NOW", now)
            .env("GNUPGHOME", &self.gnupghome)
            .env_remove("ZFS2CLOUD_ZFS")
            .env_remove("ZFS2CLOUD_GPG")
            .env_remove("ZFS2CLOUD_RCLONE")
            .env_remove("ZFS2CLOUD_CONFIG")
            .current_dir(self.dir.path());
        zfs2cloud_testkit::remote::sanitize_env(&mut cmd);
        cmd
    }

    /// Export directories that look complete: directories without a
    /// `.partial` suffix (the run lock file is not one).
    pub fn complete_exports(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.basedir) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".partial"))
            .collect();
        v.sort();
        v
    }

    /// Every entry under the intermediate dir, recursively.
    pub fn all_entries(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        collect(&self.basedir, &mut out);
        out.sort();
        out
    }

    /// `.partial` export directories (left by an export that did not finish).
    pub fn partials(&self) -> Vec<PathBuf> {
        self.all_entries()
            .into_iter()
            .filter(|e| e.to_string_lossy().ends_with(".partial"))
            .collect()
    }

    pub fn export_dir(&self, name: &str) -> PathBuf {
        self.basedir.join(name)
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        }
        out.push(p);
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // gpg starts an agent per GNUPGHOME; stop it with the home.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.gnupghome)
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

/// A `[hooks]` table whose pre_snapshot and post_snapshot append "pre" and
/// "post" to `log`; `pre_extra` is shell code run after pre's echo (e.g.
/// `exit 3`).
pub fn marker_hooks(log: &Path, pre_extra: &str) -> String {
    let log = log.display();
    format!(
        "[hooks]\npre_snapshot = [\"/bin/sh\", \"-c\", \"echo pre >> '{log}'; {pre_extra}\"]\n\
         post_snapshot = [\"/bin/sh\", \"-c\", \"echo post >> '{log}'\"]\n"
    )
}

/// stdout + stderr of an output, for assertions on messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The chunks in the export directory `dir`, in name order (the order they
/// are restored in).
pub fn sorted_chunks(dir: &Path) -> Vec<PathBuf> {
    let mut chunks: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".zfs.gpg."))
        .collect();
    chunks.sort();
    chunks
}

/// Reads an export's manifest.
pub fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Points `cmd` at the fake `zfs` (its binary and state directory).
pub fn with_fake(cmd: &mut Command, zfs: &zfs2cloud_testkit::fake::FakeZfs) {
    cmd.envs(zfs.env());
}

/// Points `cmd` at the fake `zfs` and the fake `rclone`.
pub fn with_fakes(
    cmd: &mut Command,
    zfs: &zfs2cloud_testkit::fake::FakeZfs,
    rclone: &zfs2cloud_testkit::fake::FakeRclone,
) {
    cmd.envs(zfs.env().into_iter().chain(rclone.env()));
}

/// Where `program` is on `PATH` (for a wrapper that runs the real one).
pub fn which(program: &str) -> PathBuf {
    let out = zfs2cloud_testkit::harness::run_ok(
        Command::new("sh").args(["-c", &format!("command -v {program}")]),
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
