//! The TOML configuration file.
//!
//! Keys are snake_case and keep the original tool's names where one exists;
//! its other spellings (`zfs_fs`, `rclone_conf`, `backup_sequences`) are
//! accepted as aliases so a migrated file needs few edits. Unknown keys are
//! an error, so a typo never silently falls back to a default.
//!
//! Loading is two phases: [`Config::parse`] checks syntax and the rules that
//! need nothing but the text; [`Config::load`] also checks the files the
//! configuration points to (the passphrase file's permissions, the hooks).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod diagnose;
mod jobs;

pub use diagnose::{diagnose, mode_warnings, Diagnostic};
pub use jobs::ConfigFile;

mod send_options;

mod local_retention;
mod monitor;
mod retention;

#[cfg(test)]
mod testing;

pub use local_retention::LocalRetention;
pub use monitor::{mask_url, PingUrl};
pub use retention::{RemoteRetention, Retention};

use crate::model::{
    check_bwlimit, mask_secret_flags, Compression, DatasetName, ExcludePattern, Mode,
    MountStrategy, Passphrase, SnapshotTimeZone, Step, DEFAULT_ZSTD_LEVEL, ZSTD_LEVELS,
};
use crate::model::{Encryption, SendFlags};

/// Environment variable that overrides the `zfs` binary.
pub const ENV_ZFS: &str = "ZFS2CLOUD_ZFS";
/// Environment variable that overrides the `gpg` binary.
pub const ENV_GPG: &str = "ZFS2CLOUD_GPG";
/// Environment variable that overrides the `rclone` binary.
pub const ENV_RCLONE: &str = "ZFS2CLOUD_RCLONE";

/// Errors in a configuration file. Every variant names the file; invalid
/// values also name the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. The cause is the source only: error
    /// chains (`{:#}`) print it once.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a wrong type or an unknown key.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is present and well-typed but not acceptable.
    #[error("{}: `{key}`: {message}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The offending key, e.g. `split_size` or `hooks.pre_snapshot`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Every error of the file, each with its line and key (see
    /// [`diagnose`]); shown one per line.
    #[error("{}", diagnose::render_all(path, diagnostics))]
    Many {
        /// The config file.
        path: PathBuf,
        /// The errors, in the order of the checks.
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The key an [`ConfigError::Invalid`] error is about (the first
    /// error's of [`ConfigError::Many`]).
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            Self::Many { diagnostics, .. } => diagnostics.first().map(|d| d.key.as_str()),
            _ => None,
        }
    }
}

/// A size in bytes, written like `split(1)` sizes: `1G`, `512M`, `64K`,
/// `1GB` (powers of 1000), `1GiB` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A size string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid size {input:?}: {reason} (write e.g. \"1G\", \"512M\", \"64K\" or a number of bytes)"
)]
pub struct SizeError {
    input: String,
    reason: &'static str,
}

impl ByteSize {
    /// Parses a size string.
    ///
    /// # Errors
    ///
    /// [`SizeError`] for an empty, malformed, zero or overflowing size.
    pub fn parse(input: &str) -> Result<Self, SizeError> {
        let err = |reason| SizeError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(digits_end);
        if digits.is_empty() {
            return Err(err("it does not start with a number"));
        }
        let n: u64 = digits.parse().map_err(|_| err("the number is too large"))?;
        let multiplier: u64 = match unit.to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KIB" => 1 << 10,
            "M" | "MIB" => 1 << 20,
            "G" | "GIB" => 1 << 30,
            "T" | "TIB" => 1 << 40,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return Err(err("unknown unit")),
        };
        let bytes = n
            .checked_mul(multiplier)
            .ok_or_else(|| err("the size is too large"))?;
        if bytes == 0 {
            return Err(err("the size must be greater than zero"));
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("T", 1 << 40),
            ("G", 1 << 30),
            ("M", 1 << 20),
            ("K", 1 << 10),
        ];
        for (unit, size) in UNITS {
            if self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A command to run as a hook: the program and its arguments. It is run
/// directly, never through a shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HookCommand {
    /// `argv[0]` first.
    #[serde(serialize_with = "serialize_argv")]
    pub argv: Vec<OsString>,
}

/// An argv as the list of strings it was written as (serde would show an
/// `OsString` as its bytes, which no config file takes). Every element
/// came from a TOML string, joined at most to the config file's directory.
fn serialize_argv<S: serde::Serializer>(argv: &[OsString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(argv.iter().map(|a| a.to_string_lossy()))
}

/// The user's commands around the snapshot and at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hooks {
    /// Runs before `zfs snapshot`: stop the application (downtime starts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_snapshot: Option<HookCommand>,
    /// Runs after `zfs snapshot`, and always once `pre_snapshot` has run:
    /// start the application again (downtime ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_snapshot: Option<HookCommand>,
    /// Runs when a backup fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<HookCommand>,
    /// Runs when a backup succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_success: Option<HookCommand>,
}

/// Paths of the external programs. Each can be overridden by an environment
/// variable ([`ENV_ZFS`], [`ENV_GPG`], [`ENV_RCLONE`]), which wins.
/// Shown under the keys that set them, so a printed config loads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolPaths {
    /// The `zfs` binary.
    #[serde(rename = "zfs_path")]
    pub zfs: PathBuf,
    /// The `gpg` binary.
    #[serde(rename = "gpg_path")]
    pub gpg: PathBuf,
    /// The `rclone` binary.
    #[serde(rename = "rclone_path")]
    pub rclone: PathBuf,
}

impl ToolPaths {
    /// One tool's path: the environment variable `env` if set and not empty,
    /// else the configured path, else `default` (looked up in `PATH`).
    #[must_use]
    pub fn resolve(env: &str, configured: Option<PathBuf>, default: &str) -> PathBuf {
        std::env::var_os(env)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or(configured)
            .unwrap_or_else(|| PathBuf::from(default))
    }

    /// The paths without a config file: environment overrides, else `PATH`.
    #[must_use]
    pub fn from_env() -> Self {
        Self {
            zfs: Self::resolve(ENV_ZFS, None, "zfs"),
            gpg: Self::resolve(ENV_GPG, None, "gpg"),
            rclone: Self::resolve(ENV_RCLONE, None, "rclone"),
        }
    }
}

/// How incrementals are based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncrementalStrategy {
    /// Every incremental is `zfs send -i <last full>`: one bad incremental
    /// never breaks a later one.
    #[default]
    SinceLastFull,
    /// Every incremental is based on the previous backup: the least
    /// upload, and a restore replays every backup since the full.
    Chain,
    /// Dump levels (`levels`): a backup of level *k* is based on the
    /// newest backup of a level below *k*, so a restore replays at most
    /// one backup per level.
    Levels,
}

/// The default `levels`: monthly fulls, weekly incrementals on the full,
/// daily incrementals on the weekly.
pub const DEFAULT_LEVELS: [u32; 3] = [30, 7, 1];

/// A validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file it was loaded from.
    #[serde(skip)]
    pub path: PathBuf,
    /// The ZFS file system to back up (`zfs_fs` in the original).
    pub dataset: DatasetName,
    /// Intermediate (zfs send streams) or file mode.
    pub mode: Mode,
    /// Where exports (intermediate mode) or mounts (file mode) go.
    pub intermediate_basedir: PathBuf,
    /// The rclone destination, e.g. `b2:bucket/host/data`.
    pub remote: String,
    /// rclone's config file (`rclone_conf` in the original).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rclone_config: Option<PathBuf>,
    /// Flags placed before the rclone subcommand; values of secret-looking
    /// flags are masked when shown.
    #[serde(serialize_with = "serialize_masked_flags")]
    pub rclone_global_flags: Vec<String>,
    /// Flags placed after the rclone subcommand.
    #[serde(serialize_with = "serialize_masked_flags")]
    pub rclone_args: Vec<String>,
    /// `--bwlimit` for uploads, in rclone's syntax (`8M`, `"08:00,512k 19:00,off"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bwlimit: Option<String>,
    /// Retries of a failed transfer after the first attempt.
    pub upload_retries: u32,
    /// Seconds before the first retry; doubled for each further one.
    pub upload_retry_delay_seconds: u64,
    /// Seconds an upload's rclone may read and write nothing before it is
    /// stopped and retried; 0 means never.
    pub upload_stall_timeout_seconds: u64,
    /// Seconds a hook may run before it is stopped; 0 means no limit.
    pub hook_timeout_seconds: u64,
    /// Size of each export chunk.
    pub split_size: ByteSize,
    /// A new full export is made once the last full is this old.
    pub full_every_x_days: u32,
    /// zfs2cloud's own snapshots older than this are pruned: the simple
    /// rule. `None` exactly when `retention.local` replaces it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_snapshot_days: Option<u32>,
    /// File holding the gpg passphrase (its first line, as with
    /// `gpg --passphrase-file`). Required in intermediate mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
    /// The backup sequence.
    pub steps: Vec<Step>,
    /// Whether `steps` came from the file rather than the mode's default.
    #[serde(skip)]
    pub steps_overridden: bool,
    /// User commands.
    pub hooks: Hooks,
    /// UTC (default) or local time in snapshot names.
    pub snapshot_time_zone: SnapshotTimeZone,
    /// How file mode exposes a snapshot.
    pub mount_strategy: MountStrategy,
    /// How incrementals are based.
    pub incremental_strategy: IncrementalStrategy,
    /// With `incremental_strategy = "levels"`: days between backups of
    /// each level, the first being fulls (so `full_every_x_days` is
    /// `levels[0]`); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<u32>,
    /// The export step uploads each chunk as soon as it is sealed, while
    /// the export goes on, instead of leaving the upload to the upload step.
    pub upload_while_exporting: bool,
    /// Chunks uploaded at once by a pipelined export.
    pub upload_concurrency: u32,
    /// Keep the newest export on local disk (the original's behaviour).
    /// `false` (only with `upload_while_exporting`) deletes each chunk once
    /// its upload is confirmed, so at most `upload_concurrency + 1` chunks
    /// are ever on local disk.
    pub keep_local_export: bool,
    /// How the stream is compressed before encryption.
    pub compression: Compression,
    /// zstd level (1–19).
    pub compression_level: i32,
    /// Seconds each built-in step may take (canonical step name → seconds;
    /// 0 or absent: no limit). When it runs out, whatever the step is
    /// running is stopped and the step fails.
    pub step_timeouts: BTreeMap<String, u64>,
    /// The external programs, after environment overrides.
    #[serde(flatten)]
    pub tools: ToolPaths,
    /// The job's name in a file of `[[job]]` tables; `None` in the
    /// single-dataset form.
    #[serde(rename = "name", skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Back up every dataset under `dataset` too, each as its own chain in
    /// its own remote directory, from one `zfs snapshot -r`.
    pub recursive: bool,
    /// With `recursive`: datasets left out (with their descendants), as
    /// patterns over their names (see [`crate::ExcludePattern`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<ExcludePattern>,
    /// The `zfs send` flags (`-w`, `-c`, `-L`, `-e`, `-p`); none by
    /// default. An incremental is only based on a full sent with the same.
    pub send_flags: SendFlags,
    /// gpg (default), gpg-recipients, or none: with none the chunks are
    /// the send stream.
    pub encryption: Encryption,
    /// With `gpg-recipients`: ASCII-armored public key files the stream is
    /// encrypted to (`gpg --recipient-file`), read without any keyring.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recipient_files: Vec<PathBuf>,
    /// With `gpg-recipients`: fingerprints of public keys in the keyring of
    /// `gpg_homedir` (else gpg's default) the stream is encrypted to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// The gpg home directory holding the keys of `recipients`; `None`:
    /// gpg's default (`GNUPGHOME`, else `~/.gnupg`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpg_homedir: Option<PathBuf>,
    /// `encryption = "none"` without a raw send: explicitly wanted.
    pub allow_unencrypted: bool,
    /// `[retention]`: what pruning keeps.
    #[serde(skip_serializing_if = "Retention::is_empty")]
    pub retention: Retention,
    /// Where `backup` writes this job's Prometheus textfile metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_file: Option<PathBuf>,
    /// The healthchecks.io-style URL `backup` pings (`/start`, success,
    /// `/fail`); it may hold a secret token, so it is shown masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_url: Option<PingUrl>,
}

fn serialize_masked_flags<S: serde::Serializer>(flags: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(mask_secret_flags(flags))
}

/// The file as written; see [`Config`] for the meaning of each key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(alias = "zfs_fs")]
    dataset: String,
    #[serde(default)]
    mode: Mode,
    intermediate_basedir: PathBuf,
    remote: String,
    #[serde(alias = "rclone_conf")]
    rclone_config: Option<PathBuf>,
    #[serde(default)]
    rclone_global_flags: Vec<String>,
    #[serde(default)]
    rclone_args: Vec<String>,
    bwlimit: Option<String>,
    #[serde(default = "default_upload_retries")]
    upload_retries: u32,
    #[serde(default = "default_upload_retry_delay_seconds")]
    upload_retry_delay_seconds: u64,
    #[serde(default = "default_upload_stall_timeout_seconds")]
    upload_stall_timeout_seconds: u64,
    #[serde(default = "default_hook_timeout_seconds")]
    hook_timeout_seconds: u64,
    #[serde(default)]
    split_size: Option<RawSize>,
    full_every_x_days: Option<u32>,
    /// `None` when not written: the default applies unless
    /// `[retention.local]` replaces it.
    oldest_snapshot_days: Option<u32>,
    passphrase_file: Option<PathBuf>,
    /// The original kept the passphrase itself in the config; refused with
    /// a migration hint rather than "unknown field".
    encryption_passphrase: Option<toml::Value>,
    #[serde(alias = "backup_sequences")]
    steps: Option<Vec<String>>,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    snapshot_time_zone: SnapshotTimeZone,
    #[serde(default)]
    mount_strategy: MountStrategy,
    #[serde(default)]
    incremental_strategy: IncrementalStrategy,
    levels: Option<Vec<u32>>,
    #[serde(default)]
    upload_while_exporting: bool,
    #[serde(default = "default_upload_concurrency")]
    upload_concurrency: u32,
    #[serde(default = "default_keep_local_export")]
    keep_local_export: bool,
    #[serde(default)]
    compression: Compression,
    #[serde(default = "default_compression_level")]
    compression_level: i32,
    #[serde(default)]
    step_timeouts: BTreeMap<String, u64>,
    zfs_path: Option<PathBuf>,
    gpg_path: Option<PathBuf>,
    rclone_path: Option<PathBuf>,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    send_flags: Vec<String>,
    #[serde(default)]
    encryption: Encryption,
    #[serde(default)]
    recipient_files: Vec<PathBuf>,
    #[serde(default)]
    recipients: Vec<String>,
    gpg_homedir: Option<PathBuf>,
    #[serde(default)]
    allow_unencrypted: bool,
    #[serde(default, deserialize_with = "retention::table")]
    retention: retention::RawRetention,
    metrics_file: Option<PathBuf>,
    ping_url: Option<String>,
}

/// Limits for the steps that should never take long. A hung `zfs` or
/// rclone there would otherwise hold the run lock until someone notices,
/// and every later night would fail as "locked". Export, upload and the
/// file-mode sync get none by default: over a home uplink a first full
/// legitimately takes days.
const DEFAULT_STEP_TIMEOUTS: &[(&str, u64)] = &[
    ("snapshot", 1800),
    ("prune-intermediates", 600),
    ("prune-snapshots", 1800),
    ("verify", 3600),
    ("mount-snapshot", 600),
    ("umount-snapshot", 600),
];

/// Reads `[step_timeouts]` over the defaults: keys are step names (or the
/// original's aliases), values seconds (0: no limit).
fn step_timeouts(raw: BTreeMap<String, u64>) -> Result<BTreeMap<String, u64>, String> {
    let mut out: BTreeMap<String, u64> = DEFAULT_STEP_TIMEOUTS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    for (name, seconds) in raw {
        let step = Step::parse(&name, Path::new("")).map_err(|e| e.to_string())?;
        if matches!(step, Step::Script(_)) {
            return Err(format!(
                "{name:?} is not a step name (script steps are limited by hook_timeout_seconds)"
            ));
        }
        if seconds > MAX_STEP_TIMEOUT {
            return Err(format!(
                "{name} = {seconds} is more than 30 days; use 0 for no limit"
            ));
        }
        out.insert(step.to_string(), seconds);
    }
    Ok(out)
}

/// 30 days: anything longer is a typo (or means "no limit", which is 0).
const MAX_STEP_TIMEOUT: u64 = 30 * 24 * 3600;

fn default_upload_concurrency() -> u32 {
    2
}

fn default_keep_local_export() -> bool {
    true
}

fn default_compression_level() -> i32 {
    DEFAULT_ZSTD_LEVEL
}

fn default_full_every_x_days() -> u32 {
    30
}

fn default_upload_retries() -> u32 {
    3
}

fn default_upload_retry_delay_seconds() -> u64 {
    10
}

/// Five minutes, rclone's own `--timeout` for an idle connection: a copy
/// that moves no byte for that long is not coming back.
fn default_upload_stall_timeout_seconds() -> u64 {
    300
}

/// A day: a copy idle for longer is stalled whatever the backend.
const MAX_UPLOAD_STALL_TIMEOUT: u64 = 24 * 3600;

fn default_hook_timeout_seconds() -> u64 {
    600
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
// Without this, a wrong type reads "data did not match any variant of
// untagged enum RawSize".
#[serde(expecting = "expected a size such as \"1G\", \"512M\", \"64K\" or a whole number of bytes")]
enum RawSize {
    Text(String),
    Bytes(u64),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [hooks] table")]
struct RawHooks {
    pre_snapshot: Option<RawHook>,
    post_snapshot: Option<RawHook>,
    on_failure: Option<RawHook>,
    on_success: Option<RawHook>,
}

/// A hook as written: a program path, or a list `[program, args...]`.
#[derive(Debug)]
enum RawHook {
    Program(String),
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for RawHook {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawHook;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a program path, or a list [\"program\", \"arg\", ...]")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawHook, E> {
                Ok(RawHook::Program(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawHook, A::Error> {
                let mut argv = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    argv.push(s);
                }
                Ok(RawHook::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

/// More parallel uploads than this only add local disk and remote load.
const MAX_UPLOAD_CONCURRENCY: u32 = 16;
/// Default chunk size: the original tool's.
const DEFAULT_SPLIT_SIZE: ByteSize = ByteSize(1 << 30);
/// Smallest accepted chunk size; smaller only makes millions of files.
const MIN_SPLIT_SIZE: u64 = 1 << 10;

impl Config {
    /// Reads and fully validates a config file, including the files it
    /// points to.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file and, for bad values, the key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::parse(&read_text(path)?, path)?;
        config.check_files()?;
        Ok(config)
    }

    /// Parses config text and checks every rule that needs only the text.
    /// Relative paths are resolved against `path`'s directory. Environment
    /// overrides of the tool paths are applied.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] for bad TOML, wrong types and unknown keys;
    /// [`ConfigError::Invalid`] for unacceptable values.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("job")) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: "job".into(),
                message: "this file holds [[job]] tables: load it with ConfigFile, which \
                          gives each job"
                    .into(),
            });
        }
        Self::build(deserialize(text, path)?, path)
    }

    /// [`Config::from_raw`] with relative paths resolved against `path`'s
    /// directory, its errors naming the file.
    fn build(raw: RawConfig, path: &Path) -> Result<Self, ConfigError> {
        Self::from_raw(raw, path, base_dir(path)).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            key: e.key,
            message: e.message,
        })
    }

    /// Validates `raw` (in the order a reader meets the rules) and builds
    /// the configuration, resolving relative paths against `base_dir`.
    fn from_raw(raw: RawConfig, path: &Path, base_dir: &Path) -> Result<Self, KeyError> {
        check_destination(&raw)?;
        let dataset = DatasetName::parse(&raw.dataset).map_err(|e| KeyError::new("dataset", e))?;
        check_paths(&raw)?;
        let split_size = split_size(raw.split_size.as_ref())?;
        check_ranges(&raw)?;
        let (full_every_x_days, levels) = strategy_periods(&raw)?;
        let oldest_snapshot_days = local_retention::oldest_snapshot_days(&raw)?;
        let exclude = tree_patterns(&raw)?;
        let step_timeouts = step_timeouts(raw.step_timeouts.clone())
            .map_err(|m| KeyError::new("step_timeouts", m))?;
        let send_flags = send_options::send_flags(&raw.send_flags)?;
        send_options::check_encryption(raw.encryption, &send_flags, raw.allow_unencrypted)?;
        send_options::check_recipients(&raw)?;
        if send_options::needs_passphrase(raw.mode, raw.encryption) && raw.passphrase_file.is_none()
        {
            return Err(KeyError::new(
                "passphrase_file",
                "is missing: intermediate mode encrypts every export with gpg and needs a file \
                 holding the passphrase (or encryption = \"none\", see the docs)",
            ));
        }
        let (steps, steps_overridden) = steps(raw.steps.as_deref(), raw.mode, base_dir)?;
        let hooks = hooks(raw.hooks, base_dir)?;
        let retention = retention::retention(raw.retention)?;
        retention::check_steps(&steps, &retention)?;
        let ping_url = raw
            .ping_url
            .map(PingUrl::new)
            .transpose()
            .map_err(|m| KeyError::new("ping_url", m))?;
        let resolve = |p: &Path| base_dir.join(p);
        Ok(Self {
            path: path.to_owned(),
            dataset,
            mode: raw.mode,
            intermediate_basedir: resolve(&raw.intermediate_basedir),
            remote: raw.remote,
            rclone_config: raw.rclone_config.as_deref().map(resolve),
            rclone_global_flags: raw.rclone_global_flags,
            rclone_args: raw.rclone_args,
            bwlimit: raw.bwlimit,
            upload_retries: raw.upload_retries,
            upload_retry_delay_seconds: raw.upload_retry_delay_seconds,
            upload_stall_timeout_seconds: raw.upload_stall_timeout_seconds,
            hook_timeout_seconds: raw.hook_timeout_seconds,
            split_size,
            full_every_x_days,
            oldest_snapshot_days,
            passphrase_file: raw.passphrase_file.as_deref().map(resolve),
            steps,
            steps_overridden,
            hooks,
            snapshot_time_zone: raw.snapshot_time_zone,
            mount_strategy: raw.mount_strategy,
            incremental_strategy: raw.incremental_strategy,
            levels,
            upload_while_exporting: raw.upload_while_exporting,
            upload_concurrency: raw.upload_concurrency,
            keep_local_export: raw.keep_local_export,
            compression: raw.compression,
            compression_level: raw.compression_level,
            step_timeouts,
            tools: ToolPaths {
                zfs: ToolPaths::resolve(ENV_ZFS, raw.zfs_path, "zfs"),
                gpg: ToolPaths::resolve(ENV_GPG, raw.gpg_path, "gpg"),
                rclone: ToolPaths::resolve(ENV_RCLONE, raw.rclone_path, "rclone"),
            },
            job: None,
            recursive: raw.recursive,
            exclude,
            send_flags,
            encryption: raw.encryption,
            recipient_files: raw.recipient_files.iter().map(|p| resolve(p)).collect(),
            recipients: raw
                .recipients
                .iter()
                .map(|f| f.to_ascii_uppercase())
                .collect(),
            gpg_homedir: raw.gpg_homedir.as_deref().map(resolve),
            allow_unencrypted: raw.allow_unencrypted,
            retention,
            metrics_file: raw.metrics_file.as_deref().map(resolve),
            ping_url,
        })
    }

    /// What tables and messages call this job: its name, or its dataset
    /// in the single-dataset form.
    #[must_use]
    pub fn name(&self) -> String {
        self.job.clone().unwrap_or_else(|| self.dataset.to_string())
    }

    /// Checks the files the configuration points to: the passphrase file
    /// (present, a single non-empty first line, readable by its owner only),
    /// the recipient files and `gpg_homedir` (present; what the key files
    /// hold is gpg's to read, see `check-config`), the rclone config, and
    /// path-like hooks and script steps.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the key whose file is wrong.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: self.path.clone(),
            key: key.to_owned(),
            message,
        };
        if let Some(file) = &self.passphrase_file {
            Passphrase::from_file(file).map_err(|e| invalid("passphrase_file", e.to_string()))?;
        }
        for file in &self.recipient_files {
            if !file.is_file() {
                return Err(invalid(
                    "recipient_files",
                    format!("{} does not exist or is not a file", file.display()),
                ));
            }
        }
        if let Some(dir) = self.gpg_homedir.as_ref().filter(|d| !d.is_dir()) {
            return Err(invalid(
                "gpg_homedir",
                format!("{} does not exist or is not a directory", dir.display()),
            ));
        }
        if let Some(rc) = &self.rclone_config {
            if !rc.is_file() {
                return Err(invalid(
                    "rclone_config",
                    format!("{} does not exist or is not a file", rc.display()),
                ));
            }
        }
        let hooks = [
            ("hooks.pre_snapshot", &self.hooks.pre_snapshot),
            ("hooks.post_snapshot", &self.hooks.post_snapshot),
            ("hooks.on_failure", &self.hooks.on_failure),
            ("hooks.on_success", &self.hooks.on_success),
        ];
        for (key, hook) in hooks {
            if let Some(program) = hook.as_ref().and_then(|h| h.argv.first()) {
                let program = Path::new(program);
                if program.components().count() > 1 && !program.is_file() {
                    return Err(invalid(
                        key,
                        format!("{} does not exist", program.display()),
                    ));
                }
            }
        }
        for step in &self.steps {
            if let Step::Script(p) = step {
                if !p.is_file() {
                    return Err(invalid(
                        "steps",
                        format!("script {} does not exist", p.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The export's compression.
    #[must_use]
    pub fn compression_settings(&self) -> crate::model::CompressionSettings {
        crate::model::CompressionSettings {
            compression: self.compression,
            level: self.compression_level,
        }
    }

    /// How long `step` may take (`[step_timeouts]`); `None`: no limit.
    #[must_use]
    pub fn step_limit(&self, step: &Step) -> Option<std::time::Duration> {
        self.step_timeouts
            .get(&step.to_string())
            .copied()
            .filter(|s| *s > 0)
            .map(std::time::Duration::from_secs)
    }

    /// `hook_timeout_seconds` as a limit; `None` for 0 (no limit).
    #[must_use]
    pub fn hook_timeout(&self) -> Option<std::time::Duration> {
        (self.hook_timeout_seconds > 0)
            .then(|| std::time::Duration::from_secs(self.hook_timeout_seconds))
    }

    /// `upload_stall_timeout_seconds` as a limit; `None` for 0 (off).
    #[must_use]
    pub fn upload_stall_timeout(&self) -> Option<std::time::Duration> {
        (self.upload_stall_timeout_seconds > 0)
            .then(|| std::time::Duration::from_secs(self.upload_stall_timeout_seconds))
    }

    /// The effective configuration as TOML, for `check-config`. Contains no
    /// secret: the passphrase lives in its own file, and secret-looking
    /// rclone flag values are masked.
    ///
    /// # Errors
    ///
    /// Only if TOML serialization fails, which would be a bug.
    pub fn to_effective_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

/// The directory relative paths in the file at `path` are resolved against.
fn base_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The file's text, which must be UTF-8.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| not_utf8(path, e.as_bytes()))
}

/// An unacceptable value: the key and what is wrong with it.
#[derive(Debug)]
struct KeyError {
    key: String,
    message: String,
}

impl KeyError {
    fn new(key: &str, message: impl ToString) -> Self {
        Self {
            key: key.to_owned(),
            message: message.to_string(),
        }
    }
}

/// The TOML text as [`RawConfig`]: syntax, types and unknown keys.
fn deserialize(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    deserialize_from(toml::Deserializer::new(text), path)
}

/// [`RawConfig`] from any TOML deserializer (the file's text, or one job's
/// table merged with the defaults).
fn deserialize_from<'de, D>(from: D, path: &Path) -> Result<RawConfig, ConfigError>
where
    D: serde::Deserializer<'de>,
    D::Error: Into<toml::de::Error>,
{
    // The TOML parser gives the line, but not the key: a wrong type in a
    // list spread over lines, or `-3` where a count belongs ("expected
    // u32"), would be reported without it. serde_path_to_error records
    // the key being read when deserialization failed (`steps[2]`,
    // `hooks.pre_snapshot`), and the message leads with it.
    serde_path_to_error::deserialize(from).map_err(|e| {
        let key = e.path().to_string();
        let e: toml::de::Error = e.into_inner().into();
        if let Some((key, message)) = alias_conflict(e.message()) {
            return ConfigError::Invalid {
                path: path.to_owned(),
                key: key.to_owned(),
                message,
            };
        }
        let message = e.to_string().trim_end().to_owned();
        ConfigError::Parse {
            path: path.to_owned(),
            message: if key == "." {
                message
            } else {
                format!("`{key}`: {message}")
            },
        }
    })
}

/// No passphrase in the file itself.
fn check_destination(raw: &RawConfig) -> Result<(), KeyError> {
    if raw.encryption_passphrase.is_some() {
        return Err(KeyError::new(
            "encryption_passphrase",
            "a passphrase in the config file is not supported (it would end up in logs and \
             backups of /etc); write it to a file only root can read (chmod 600) and set \
             passphrase_file to its path",
        ));
    }
    Ok(())
}

/// `intermediate_basedir`, `remote` and `bwlimit`: present, and none
/// that rclone would read as a flag.
fn check_paths(raw: &RawConfig) -> Result<(), KeyError> {
    if raw.intermediate_basedir.as_os_str().is_empty() {
        return Err(KeyError::new("intermediate_basedir", "must not be empty"));
    }
    if raw.remote.trim().is_empty() {
        return Err(KeyError::new(
            "remote",
            "must not be empty; give an rclone destination such as \"b2:bucket/path\"",
        ));
    }
    if raw.remote.starts_with('-') {
        return Err(KeyError::new(
            "remote",
            "must not start with '-' (it would be read as a flag)",
        ));
    }
    Ok(())
}

/// `split_size`, or the default.
fn split_size(raw: Option<&RawSize>) -> Result<ByteSize, KeyError> {
    let size = match raw {
        None => DEFAULT_SPLIT_SIZE,
        Some(RawSize::Bytes(n)) => ByteSize(*n),
        Some(RawSize::Text(s)) => ByteSize::parse(s).map_err(|e| KeyError::new("split_size", e))?,
    };
    if size.0 < MIN_SPLIT_SIZE {
        return Err(KeyError::new(
            "split_size",
            format!("{} bytes is too small; the minimum is 1K", size.0),
        ));
    }
    Ok(size)
}

/// The numbers and switches that must lie in a range or go together.
fn check_ranges(raw: &RawConfig) -> Result<(), KeyError> {
    if let Some(bwlimit) = &raw.bwlimit {
        check_bwlimit(bwlimit).map_err(|e| KeyError::new("bwlimit", e))?;
    }
    if raw.upload_retries > 100 {
        return Err(KeyError::new(
            "upload_retries",
            format!("{} is too many; at most 100", raw.upload_retries),
        ));
    }
    if raw.upload_retry_delay_seconds > 3600 {
        return Err(KeyError::new(
            "upload_retry_delay_seconds",
            format!(
                "{} is more than an hour; at most 3600",
                raw.upload_retry_delay_seconds
            ),
        ));
    }
    if raw.upload_stall_timeout_seconds > MAX_UPLOAD_STALL_TIMEOUT {
        return Err(KeyError::new(
            "upload_stall_timeout_seconds",
            format!(
                "{} is more than a day; at most {MAX_UPLOAD_STALL_TIMEOUT}, or 0 to never \
                 stop a stalled upload",
                raw.upload_stall_timeout_seconds
            ),
        ));
    }
    check_days(raw)?;
    check_upload_and_compression(raw)
}

/// `recursive` and `exclude`: intermediate mode only (file mode syncs the
/// files of one file system), patterns only for a tree; the patterns.
fn tree_patterns(raw: &RawConfig) -> Result<Vec<ExcludePattern>, KeyError> {
    if raw.recursive && raw.mode == Mode::File {
        return Err(KeyError::new(
            "recursive",
            "needs mode = \"intermediate\": file mode copies the files of one file system; \
             give each file system its own [[job]] instead",
        ));
    }
    if !raw.recursive && !raw.exclude.is_empty() {
        return Err(KeyError::new(
            "exclude",
            "only applies with recursive = true (it leaves datasets out of the tree)",
        ));
    }
    raw.exclude
        .iter()
        .map(|p| ExcludePattern::parse(p).map_err(|e| KeyError::new("exclude", e)))
        .collect()
}

/// `full_every_x_days` (`oldest_snapshot_days` is checked with the
/// retention it may be replaced by).
fn check_days(raw: &RawConfig) -> Result<(), KeyError> {
    let (full_every_x_days, _) = strategy_periods(raw)?;
    if full_every_x_days == 0 {
        return Err(KeyError::new("full_every_x_days", "must be at least 1"));
    }
    Ok(())
}

/// The days between fulls and, with `levels`, between backups of each
/// level. With levels, fulls come every `levels[0]` days, and a
/// `full_every_x_days` that says otherwise is refused rather than ignored.
fn strategy_periods(raw: &RawConfig) -> Result<(u32, Vec<u32>), KeyError> {
    let full_every = raw.full_every_x_days;
    if raw.incremental_strategy != IncrementalStrategy::Levels {
        if raw.levels.is_some() {
            return Err(KeyError::new(
                "levels",
                "only applies with incremental_strategy = \"levels\"",
            ));
        }
        return Ok((
            full_every.unwrap_or_else(default_full_every_x_days),
            Vec::new(),
        ));
    }
    let levels = raw
        .levels
        .clone()
        .unwrap_or_else(|| DEFAULT_LEVELS.to_vec());
    check_levels(&levels)?;
    match full_every {
        Some(days) if days != levels[0] => Err(KeyError::new(
            "full_every_x_days",
            format!(
                "is {days}, but with incremental_strategy = \"levels\" fulls come every \
                 levels[0] = {} days; remove full_every_x_days or make them equal",
                levels[0]
            ),
        )),
        _ => Ok((levels[0], levels)),
    }
}

/// `levels`: two to nine periods in days, each shorter than the one
/// before (a level made more often than the level below it would never
/// be the base of anything).
fn check_levels(levels: &[u32]) -> Result<(), KeyError> {
    if !(2..=9).contains(&levels.len()) {
        return Err(KeyError::new(
            "levels",
            format!(
                "has {} entries; give 2 to 9 periods in days, fulls first, e.g. [30, 7, 1]",
                levels.len()
            ),
        ));
    }
    if levels.contains(&0) || levels.windows(2).any(|w| w[1] >= w[0]) {
        return Err(KeyError::new(
            "levels",
            format!(
                "{levels:?} must be whole days, each period shorter than the one before, \
                 e.g. [30, 7, 1]"
            ),
        ));
    }
    Ok(())
}

/// `upload_concurrency`, `keep_local_export` and `compression_level`.
fn check_upload_and_compression(raw: &RawConfig) -> Result<(), KeyError> {
    if !(1..=MAX_UPLOAD_CONCURRENCY).contains(&raw.upload_concurrency) {
        return Err(KeyError::new(
            "upload_concurrency",
            format!(
                "{} is out of range; give 1 to {MAX_UPLOAD_CONCURRENCY}",
                raw.upload_concurrency
            ),
        ));
    }
    if !raw.keep_local_export && !raw.upload_while_exporting {
        return Err(KeyError::new(
            "keep_local_export",
            "= false needs upload_while_exporting = true: without it the upload step reads \
             the whole export from local disk, so it must be kept",
        ));
    }
    if !ZSTD_LEVELS.contains(&raw.compression_level) {
        return Err(KeyError::new(
            "compression_level",
            format!(
                "{} is out of range; zstd levels are {} to {}",
                raw.compression_level,
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            ),
        ));
    }
    Ok(())
}

/// The backup sequence: as written, or the mode's default. The flag says
/// whether it was written.
fn steps(
    names: Option<&[String]>,
    mode: Mode,
    base_dir: &Path,
) -> Result<(Vec<Step>, bool), KeyError> {
    let Some(names) = names else {
        return Ok((Step::default_sequence(mode), false));
    };
    if names.is_empty() {
        return Err(KeyError::new(
            "steps",
            "must not be empty; remove the key to use the default sequence",
        ));
    }
    let steps = names
        .iter()
        .map(|n| Step::parse(n, base_dir))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KeyError::new("steps", e))?;
    Ok((steps, true))
}

/// The `[hooks]` table, each hook resolved to an argv.
fn hooks(raw: RawHooks, base_dir: &Path) -> Result<Hooks, KeyError> {
    let hook = |key: &str, raw: Option<RawHook>| {
        raw.map(|h| {
            resolve_hook(h, base_dir).map_err(|m| KeyError::new(&format!("hooks.{key}"), m))
        })
        .transpose()
    };
    Ok(Hooks {
        pre_snapshot: hook("pre_snapshot", raw.pre_snapshot)?,
        post_snapshot: hook("post_snapshot", raw.post_snapshot)?,
        on_failure: hook("on_failure", raw.on_failure)?,
        on_success: hook("on_success", raw.on_success)?,
    })
}

/// Keys with the original tool's name as an alias (the `#[serde(alias)]`s of
/// [`RawConfig`]).
const ALIASES: [(&str, &str); 3] = [
    ("dataset", "zfs_fs"),
    ("rclone_config", "rclone_conf"),
    ("steps", "backup_sequences"),
];

/// serde reports a key set under both its names as "duplicate field
/// `dataset`", pointing at line 1; say which two keys clash instead.
fn alias_conflict(message: &str) -> Option<(&'static str, String)> {
    let field = message
        .strip_prefix("duplicate field `")?
        .strip_suffix('`')?;
    let (key, alias) = ALIASES.into_iter().find(|(k, _)| *k == field)?;
    Some((
        key,
        format!("is set twice, as `{key}` and as `{alias}` (its original name); keep one"),
    ))
}

/// The error for a config file that is not UTF-8: where the first bad byte
/// is, in the TOML parser's terms, since TOML files are UTF-8 text.
fn not_utf8(path: &Path, bytes: &[u8]) -> ConfigError {
    let valid = std::str::from_utf8(bytes)
        .err()
        .map_or(bytes.len(), |e| e.valid_up_to());
    // `valid` bytes are valid UTF-8, so this never loses anything.
    let before = String::from_utf8_lossy(&bytes[..valid]);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let byte = bytes.get(valid).copied().unwrap_or_default();
    ConfigError::Parse {
        path: path.to_owned(),
        message: format!(
            "TOML parse error at line {line}, column {column}\nbyte 0x{byte:02x} is not UTF-8: \
             a config file is UTF-8 text (is this a binary file?)"
        ),
    }
}

/// Turns a written hook into an argv, resolving `./x` against the config dir.
fn resolve_hook(raw: RawHook, base_dir: &Path) -> Result<HookCommand, String> {
    let argv: Vec<String> = match raw {
        RawHook::Program(p) => {
            if p.trim().is_empty() {
                return Err("must not be empty".to_owned());
            }
            // Hooks never go through a shell. A string with spaces that is
            // not a file is almost certainly "systemctl stop app" written as
            // one string; say how to write it instead of failing at 3 am.
            if p.contains(char::is_whitespace) && !base_dir.join(&p).is_file() {
                let words: Vec<String> = p.split_whitespace().map(|w| format!("{w:?}")).collect();
                return Err(format!(
                    "{p:?} is not a file; hooks are run without a shell, so write a command with \
                     arguments as a list: [{}]",
                    words.join(", ")
                ));
            }
            vec![p]
        }
        RawHook::Argv(v) => v,
    };
    let Some(program) = argv.first() else {
        return Err("the list must name a program".to_owned());
    };
    let program = if program.contains('/') {
        base_dir.join(program).into_os_string()
    } else {
        OsString::from(program)
    };
    let mut out = vec![program];
    out.extend(argv.into_iter().skip(1).map(OsString::from));
    Ok(HookCommand { argv: out })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const MINIMAL: &str = r#"
dataset = "tank/data"
intermediate_basedir = "/var/lib/zfs2cloud"
remote = "b2:bucket/data"
passphrase_file = "/etc/zfs2cloud/passphrase"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/zfs2cloud/data.toml"))
    }

    fn invalid_key(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.mode, Mode::Intermediate);
        assert_eq!(c.split_size, ByteSize(1 << 30));
        assert_eq!(c.full_every_x_days, 30);
        assert_eq!(c.snapshot_time_zone, SnapshotTimeZone::Utc);
        assert_eq!(c.steps, Step::default_sequence(Mode::Intermediate));
        assert!(!c.steps_overridden);
        // The original's behaviour: export to disk, keep it, upload after.
        assert!(!c.upload_while_exporting);
        assert!(c.keep_local_export);
        assert_eq!(c.upload_concurrency, 2);
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.compression_level, 3);
    }

    #[test]
    fn step_timeouts_merge_over_defaults_by_step_name_or_alias() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.step_limit(&Step::Snapshot),
            Some(std::time::Duration::from_secs(1800))
        );
        assert_eq!(c.step_limit(&Step::Export), None, "no default for export");
        let c = parse(&format!(
            "{MINIMAL}[step_timeouts]\nexport-intermediate = 7200\nsnapshot = 0\nverify = 5\n"
        ))
        .unwrap();
        assert_eq!(
            c.step_limit(&Step::Export),
            Some(std::time::Duration::from_secs(7200))
        );
        assert_eq!(c.step_limit(&Step::Snapshot), None, "0 means no limit");
        assert_eq!(
            c.step_limit(&Step::Verify),
            Some(std::time::Duration::from_secs(5))
        );
        for bad in ["exprot = 5", "\"./x.sh\" = 5", "upload = 99999999999"] {
            assert_eq!(
                invalid_key(&format!("{MINIMAL}[step_timeouts]\n{bad}\n")),
                "step_timeouts",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_stalled_upload_is_stopped_after_five_minutes_unless_told_otherwise() {
        let secs = |n| Some(std::time::Duration::from_secs(n));
        assert_eq!(parse(MINIMAL).unwrap().upload_stall_timeout(), secs(300));
        let with = |n: &str| format!("{MINIMAL}upload_stall_timeout_seconds = {n}\n");
        assert_eq!(parse(&with("2")).unwrap().upload_stall_timeout(), secs(2));
        assert_eq!(parse(&with("0")).unwrap().upload_stall_timeout(), None);
        assert_eq!(invalid_key(&with("86401")), "upload_stall_timeout_seconds");
        for bad in ["-1", "\"5m\""] {
            assert!(
                matches!(parse(&with(bad)), Err(ConfigError::Parse { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn pipelining_and_compression_keys() {
        let c = parse(&format!(
            "{MINIMAL}upload_while_exporting = true
keep_local_export = false
             upload_concurrency = 4
compression = \"zstd\"
compression_level = 19
"
        ))
        .unwrap();
        assert!(c.upload_while_exporting && !c.keep_local_export);
        assert_eq!(c.upload_concurrency, 4);
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.compression_level, 19);
        let with = |extra: &str| format!("{MINIMAL}{extra}");
        // Without pipelining, the upload step reads the export from disk.
        assert_eq!(
            invalid_key(&with(
                "keep_local_export = false
"
            )),
            "keep_local_export"
        );
        for n in ["0", "17"] {
            assert_eq!(
                invalid_key(&with(&format!(
                    "upload_concurrency = {n}
"
                ))),
                "upload_concurrency"
            );
        }
        for level in ["0", "20", "-5"] {
            assert_eq!(
                invalid_key(&with(&format!(
                    "compression_level = {level}
"
                ))),
                "compression_level"
            );
        }
        for bad in [
            "compression = \"lz4\"
",
            "upload_concurrency = -1
",
            "upload_while_exporting = \"yes\"
",
        ] {
            assert!(
                matches!(parse(&with(bad)), Err(ConfigError::Parse { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn original_key_names_are_aliases() {
        let text = r#"
zfs_fs = "tank/data"
intermediate_basedir = "/var/lib/zfs2cloud"
remote = "b2:bucket/data"
rclone_conf = "./rclone.conf"
passphrase_file = "pass"
backup_sequences = ["lock", "snapshot", "export-intermediate", "upload-intermediate-to-remote", "./notify.sh", "unlock"]
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.dataset.as_str(), "tank/data");
        assert_eq!(
            c.rclone_config.unwrap(),
            Path::new("/etc/zfs2cloud/./rclone.conf")
        );
        assert_eq!(c.passphrase_file.unwrap(), Path::new("/etc/zfs2cloud/pass"));
        assert_eq!(c.steps[2], Step::Export);
        assert_eq!(
            c.steps[4],
            Step::Script(PathBuf::from("/etc/zfs2cloud/./notify.sh"))
        );
        assert!(c.steps_overridden);
    }

    #[test]
    fn sizes_parse_like_split() {
        assert_eq!(ByteSize::parse("1G").unwrap(), ByteSize(1 << 30));
        assert_eq!(ByteSize::parse("512M").unwrap(), ByteSize(512 << 20));
        assert_eq!(ByteSize::parse("64k").unwrap(), ByteSize(64 << 10));
        assert_eq!(ByteSize::parse("1GB").unwrap(), ByteSize(1_000_000_000));
        assert_eq!(ByteSize::parse("2GiB").unwrap(), ByteSize(2 << 30));
        assert_eq!(ByteSize::parse("4096").unwrap(), ByteSize(4096));
        for bad in [
            "",
            "G",
            "1Q",
            "1.5G",
            "-1G",
            "0",
            "99999999999999999999",
            "20000000T",
        ] {
            assert!(ByteSize::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ByteSize(1 << 30).to_string(), "1G");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[test]
    fn levels_come_with_their_strategy_and_set_the_full_period() {
        let with = |extra: &str| format!("{MINIMAL}{extra}");
        let c = parse(&with("incremental_strategy = \"levels\"\n")).unwrap();
        assert_eq!(c.levels, DEFAULT_LEVELS);
        assert_eq!(c.full_every_x_days, 30);
        let c = parse(&with(
            "incremental_strategy = \"levels\"\nlevels = [14, 1]\nfull_every_x_days = 14\n",
        ))
        .unwrap();
        assert_eq!((c.full_every_x_days, c.levels), (14, vec![14, 1]));
        let c = parse(&with("incremental_strategy = \"chain\"\n")).unwrap();
        assert_eq!(c.incremental_strategy, IncrementalStrategy::Chain);
        assert!(c.levels.is_empty());
        for bad in [
            "[30]",
            "[7, 30]",
            "[30, 7, 7]",
            "[30, 0]",
            "[1,1,1,1,1,1,1,1,1,1]",
        ] {
            let text = with(&format!(
                "incremental_strategy = \"levels\"\nlevels = {bad}\n"
            ));
            assert_eq!(invalid_key(&text), "levels", "{bad}");
        }
        assert_eq!(invalid_key(&with("levels = [30, 7, 1]\n")), "levels");
        let text = with("incremental_strategy = \"levels\"\nfull_every_x_days = 20\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("levels[0] = 30"), "{err}");
    }

    #[test]
    fn each_rule_names_its_key() {
        let with = |extra: &str| format!("{MINIMAL}{extra}");
        assert_eq!(invalid_key(&with("split_size = \"1X\"\n")), "split_size");
        assert_eq!(invalid_key(&with("bwlimit = \"eight megs\"\n")), "bwlimit");
        parse(&with("bwlimit = \"08:00,512k 19:00,off\"\n")).unwrap();
        assert_eq!(invalid_key(&with("split_size = \"100\"\n")), "split_size");
        assert_eq!(
            invalid_key(&with("full_every_x_days = 30\noldest_snapshot_days = 30\n")),
            "oldest_snapshot_days"
        );
        assert_eq!(
            invalid_key(&with("full_every_x_days = 0\n")),
            "full_every_x_days"
        );
        assert_eq!(
            invalid_key(&with("encryption_passphrase = \"x\"\n")),
            "encryption_passphrase"
        );
        assert_eq!(
            invalid_key(&with("steps = [\"snapshot\", \"exprot\"]\n")),
            "steps"
        );
        assert_eq!(invalid_key(&with("steps = []\n")), "steps");
        assert_eq!(
            invalid_key(&with("[hooks]\npre_snapshot = \"systemctl stop app\"\n")),
            "hooks.pre_snapshot"
        );
        assert_eq!(
            invalid_key(&with("[hooks]\npre_snapshot = []\n")),
            "hooks.pre_snapshot"
        );
        assert_eq!(
            invalid_key(&MINIMAL.replace("tank/data", "tank/da;ta")),
            "dataset"
        );
        assert_eq!(
            invalid_key(&MINIMAL.replace("b2:bucket/data", "")),
            "remote"
        );
        let no_pass = MINIMAL.replace("passphrase_file = \"/etc/zfs2cloud/passphrase\"\n", "");
        assert_eq!(invalid_key(&no_pass), "passphrase_file");
        // File mode needs no passphrase.
        parse(&format!("{no_pass}mode = \"file\"\n")).unwrap();
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_parse_errors_with_the_key() {
        let err = parse(&format!("{MINIMAL}fulle_every_x_days = 3\n")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown field `fulle_every_x_days`"), "{msg}");
        assert!(msg.contains("/etc/zfs2cloud/data.toml"), "{msg}");
        let err = parse(&format!("{MINIMAL}full_every_x_days = \"x\"\n")).unwrap_err();
        assert!(err.to_string().contains("full_every_x_days"), "{err}");
        let err = parse(&format!("{MINIMAL}full_every_x_days = -3\n")).unwrap_err();
        assert!(err.to_string().contains("full_every_x_days"), "{err}");
        let err = parse(&format!("{MINIMAL}[hooks]\npre_snap = \"/bin/true\"\n")).unwrap_err();
        assert!(err.to_string().contains("pre_snap"), "{err}");
    }

    #[test]
    fn parse_errors_lead_with_the_key_and_give_the_line() {
        let shown = |extra: &str| parse(&format!("{MINIMAL}{extra}")).unwrap_err().to_string();
        // MINIMAL starts with an empty line: its keys are on lines 2-5.
        let msg = shown("full_every_x_days = -3\n");
        assert!(
            msg.contains("`full_every_x_days`: TOML parse error at line 6"),
            "{msg}"
        );
        // A list spread over lines: the element's line does not show the key.
        let msg = shown("steps = [\n  \"snapshot\",\n  3,\n]\n");
        assert!(
            msg.contains("`steps[1]`: TOML parse error at line 8"),
            "{msg}"
        );
        let msg = shown("[hooks]\npre_snapshot = [\"a\", 3]\n");
        assert!(msg.contains("`hooks.pre_snapshot[1]`"), "{msg}");
        // What is expected, not a Rust type name.
        for bad in ["-1", "1.5", "true"] {
            let msg = shown(&format!("split_size = {bad}\n"));
            assert!(
                msg.contains("`split_size`: TOML parse error at line 6"),
                "{msg}"
            );
            assert!(msg.contains("expected a size such as \"1G\""), "{msg}");
            assert!(!msg.contains("RawSize"), "{msg}");
        }
        let msg = shown("hooks = 3\n");
        assert!(
            msg.contains("expected a [hooks] table") && !msg.contains("RawHooks"),
            "{msg}"
        );
        // Errors of the whole document have no key to lead with.
        let msg = parse("").unwrap_err().to_string();
        assert!(
            msg.contains(": TOML parse error at line 1") && msg.contains("missing field `dataset`"),
            "{msg}"
        );
    }

    #[test]
    fn a_key_set_under_both_names_names_both() {
        let err = parse(&format!("{MINIMAL}zfs_fs = \"tank/other\"\n")).unwrap_err();
        assert_eq!(err.key(), Some("dataset"), "{err}");
        assert!(err.to_string().contains("`zfs_fs`"), "{err}");
        let err = parse(&format!(
            "{MINIMAL}steps = [\"lock\"]\nbackup_sequences = [\"lock\"]\n"
        ))
        .unwrap_err();
        assert_eq!(err.key(), Some("steps"), "{err}");
        assert!(err.to_string().contains("`backup_sequences`"), "{err}");
    }

    #[test]
    fn load_says_where_a_file_stops_being_utf8_and_names_the_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, b"dataset = \"tank\"\n# caf\xc3\xa9 \xff\x00\n").unwrap();
        let msg = Config::load(&path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("TOML parse error at line 2, column 8"),
            "{msg}"
        );
        assert!(msg.contains("byte 0xff is not UTF-8"), "{msg}");

        let missing = dir.path().join("missing.toml");
        let err = Config::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        // The cause is the source, so an error chain shows it once.
        assert!(!err.to_string().contains("No such file"), "{err}");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("No such file"), "{source}");
    }

    #[test]
    fn hooks_are_argv_lists_resolved_against_the_config_dir() {
        let c = parse(&format!(
            "{MINIMAL}[hooks]\npre_snapshot = [\"systemctl\", \"stop\", \"app\"]\npost_snapshot = \"./start.sh\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.hooks.pre_snapshot.unwrap().argv,
            vec![OsString::from("systemctl"), "stop".into(), "app".into()]
        );
        assert_eq!(
            c.hooks.post_snapshot.unwrap().argv,
            vec![OsString::from("/etc/zfs2cloud/./start.sh")]
        );
    }

    #[test]
    fn secret_flag_values_are_masked() {
        let flags: Vec<String> = [
            "--s3-secret-access-key=abc",
            "--password",
            "hunter2",
            "--bwlimit",
            "8M",
            "-v",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let masked = mask_secret_flags(&flags);
        assert_eq!(
            masked,
            [
                "--s3-secret-access-key=***",
                "--password",
                "***",
                "--bwlimit",
                "8M",
                "-v"
            ]
        );
        let mut c = parse(MINIMAL).unwrap();
        c.rclone_global_flags = flags;
        let shown = c.to_effective_toml().unwrap();
        assert!(
            !shown.contains("abc") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
