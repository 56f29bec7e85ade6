//! The command line: global options and one subcommand each.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

/// Back up ZFS datasets to any rclone remote through snapshots.
#[derive(Debug, Parser)]
#[command(name = "zfs2cloud", version, about, propagate_version = true)]
pub struct Cli {
    /// The config file (TOML).
    #[arg(
        short,
        long,
        env = "ZFS2CLOUD_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Only this job of a config file with [[job]] tables (repeatable);
    /// default: every job.
    #[arg(long = "job", global = true, value_name = "NAME")]
    pub jobs: Vec<String>,

    /// Print every command that would change state instead of running it.
    /// Read-only queries (zfs list, rclone lsjson) still run.
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// More output on stderr: -v logs every external command with its
    /// duration, -vv also debug details.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// No live progress display, even on a terminal: only plain lines on
    /// stderr (one per finished transfer and step, one a minute during a
    /// transfer), as without a terminal. Logging (-v) is unchanged.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole configured sequence (default: lock, snapshot, export,
    /// upload, prune-intermediates, prune-snapshots, unlock).
    #[command(alias = "perform")]
    Backup {
        /// Run up to N jobs at the same time (default: one after another).
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        parallel: u32,
        /// Machine-readable output on stdout (schema: docs/backup.schema.json).
        #[arg(long)]
        json: bool,
    },

    /// Validate the config file and print the effective configuration, with
    /// secrets masked.
    #[command(alias = "show-config")]
    CheckConfig {
        /// Also check the machine and the remote: the tools and their
        /// versions, the dataset, the passphrase file, bwlimit as rclone
        /// reads it, the remote (in rclone's config, reachable, writable:
        /// a marker is written and removed) and the free space for exports.
        /// Prints a checklist; exits 1 if any check fails.
        #[arg(long)]
        online: bool,
    },

    /// Take a snapshot: pre_snapshot hook, zfs snapshot
    /// <dataset>@YYYYMMDDHHMMSS, post_snapshot hook.
    Snapshot,

    /// Export a snapshot (default: the newest of zfs2cloud's) as encrypted
    /// chunks: zfs send | gpg | split.
    #[command(alias = "export-intermediate")]
    Export {
        /// Force a full export.
        #[arg(short, long, conflicts_with = "incremental")]
        full: bool,
        /// Force an incremental export against the last full.
        #[arg(short, long)]
        incremental: bool,
        /// The snapshot to export (the part after '@').
        #[arg(short, long, value_name = "NAME")]
        snapshot: Option<String>,
    },

    /// Upload every local export whose upload is not confirmed yet (or only
    /// one), chunks first and manifest.json last, and verify it.
    #[command(alias = "upload-intermediate-to-remote")]
    Upload {
        /// The snapshot whose export to upload (the part after '@').
        #[arg(short, long, value_name = "NAME")]
        snapshot: Option<String>,
    },

    /// Delete local exports except the newest, and only uploaded ones.
    /// Without -y, only shows what it would delete.
    #[command(alias = "prune-intermediate")]
    PruneIntermediates {
        /// Really delete.
        #[arg(short, long)]
        yes: bool,
        /// Machine-readable output on stdout (schema: docs/prune.schema.json).
        #[arg(long)]
        json: bool,
    },

    /// Restore a backup from the remote into a dataset: the full and at most
    /// one incremental, streamed (nothing staged locally), every chunk
    /// checked against its manifest. Works without a config file, from
    /// --from and a passphrase alone.
    Restore {
        /// The dataset to create (e.g. pool2/data).
        #[arg(long, value_name = "DATASET")]
        to: String,
        /// The backup to restore: a snapshot name (YYYYMMDDHHMMSS) or
        /// "latest".
        #[arg(long, value_name = "SNAPSHOT", default_value = "latest")]
        at: String,
        /// Where the backups are (an rclone remote or a directory); default:
        /// the config's remote.
        #[arg(long, value_name = "REMOTE")]
        from: Option<String>,
        /// File whose first line is the passphrase; default: the config's,
        /// else a prompt on the terminal. For backups encrypted to public
        /// keys: the passphrase of a protected secret key.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// For backups encrypted to public keys (gpg-recipients): an
        /// ASCII-armored secret key file (gpg --export-secret-keys),
        /// imported into a temporary GNUPGHOME for this restore only;
        /// default: the secret keys of your gpg keyring and agent.
        #[arg(long, value_name = "FILE")]
        secret_key_file: Option<PathBuf>,
        /// rclone's config file; default: the config's.
        #[arg(long, value_name = "FILE")]
        rclone_config: Option<PathBuf>,
        /// Overwrite the target if it exists (zfs recv -F).
        #[arg(long)]
        force: bool,
        /// Restore a recursive job's whole tree into --to, parents first:
        /// every dataset whose directory lies below --from.
        #[arg(long)]
        recursive: bool,
        /// Machine-readable output on stdout (schema: docs/restore.schema.json).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        stream: StreamArgs,
    },

    /// Check the backups on the remote: OK, DAMAGED or INCOMPLETE, with the
    /// reason. Exits non-zero unless everything checked is OK.
    Verify {
        /// Only this backup (snapshot name); default: all.
        #[arg(short, long, value_name = "NAME")]
        snapshot: Option<String>,
        /// All backups (the default).
        #[arg(long, conflicts_with = "snapshot")]
        all: bool,
        /// Download everything, check every sha256, decrypt, and receive the
        /// stream into a temporary dataset (destroyed afterwards).
        #[arg(long)]
        deep: bool,
        /// With --deep: the passphrase file of backups encrypted with one;
        /// default: the config's passphrase_file.
        #[arg(long, value_name = "FILE", requires = "deep")]
        passphrase_file: Option<PathBuf>,
        /// With --deep, for backups encrypted to public keys: a secret key
        /// file, imported into a temporary GNUPGHOME; default: the secret
        /// keys of your gpg keyring and agent.
        #[arg(long, value_name = "FILE", requires = "deep")]
        secret_key_file: Option<PathBuf>,
        /// Machine-readable output on stdout (schema: docs/verify.schema.json).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        stream: StreamArgs,
    },

    /// Show zfs2cloud's snapshots, the full base, local exports, the lock
    /// and the last successful backup (and with --remote, the backups on
    /// the remote and their chains).
    Status {
        /// Machine-readable output (schema: docs/status.schema.json).
        #[arg(long)]
        json: bool,
        /// Also list the remote's backups (complete or not) and chains.
        #[arg(long)]
        remote: bool,
    },

    /// File mode: expose the newest zfs2cloud snapshot read-only at
    /// <intermediate_basedir>/<snap>-full/ (cleaning up leftovers first).
    MountSnapshot,

    /// File mode: rclone sync the mounted snapshot to the remote and write
    /// the heartbeat object.
    #[command(alias = "upload-snapshot-files-to-remote")]
    UploadSnapshotFiles,

    /// File mode: unmount the snapshot (destroying a temporary clone) and
    /// remove its directory.
    #[command(alias = "unmount-snapshot")]
    UmountSnapshot,

    /// Destroy zfs2cloud's own snapshots that retention lets go
    /// (oldest_snapshot_days, or [retention.local]). Shows every snapshot
    /// with the reason it is kept or destroyed; without -y, destroys
    /// nothing.
    PruneSnapshots {
        /// Really destroy.
        #[arg(short, long)]
        yes: bool,
        /// Machine-readable output on stdout (schema: docs/prune.schema.json).
        #[arg(long)]
        json: bool,
    },

    /// Delete the backups on the remote that [retention.remote] lets go,
    /// never one that a kept backup needs. Without -y, only shows the plan:
    /// each backup kept or deleted and why, and what is left alone.
    PruneRemote {
        /// Really delete.
        #[arg(short, long)]
        yes: bool,
        /// Machine-readable output on stdout (schema: docs/prune.schema.json).
        #[arg(long)]
        json: bool,
    },

    /// Print the shell completion script for SHELL on stdout (e.g.
    /// `zfs2cloud completions bash > /etc/bash_completion.d/zfs2cloud`).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the manual page zfs2cloud(1), in roff, on stdout (e.g.
    /// `zfs2cloud man | man -l -`).
    Man,

    /// Write a commented config file for one dataset and a new random
    /// passphrase file (0600) next to it; never overwrites either. The
    /// config file is -c FILE, default /etc/zfs2cloud/<dataset with / as
    /// ->.toml, the name the systemd units read.
    Init(InitArgs),
}

impl Command {
    /// Whether the command was asked for JSON: then stdout holds the JSON
    /// alone, and everything else goes to stderr.
    pub fn json(&self) -> bool {
        match self {
            Self::Backup { json, .. }
            | Self::Status { json, .. }
            | Self::Verify { json, .. }
            | Self::Restore { json, .. }
            | Self::PruneIntermediates { json, .. }
            | Self::PruneSnapshots { json, .. }
            | Self::PruneRemote { json, .. } => *json,
            _ => false,
        }
    }
}

/// How `restore` and `verify` stream from the remote.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// Stop after this many seconds, aborting the receive (0: no limit).
    /// Default: no limit, except `verify` without --deep, which has the
    /// config's [step_timeouts] verify.
    #[arg(long, value_name = "SECONDS")]
    pub time_limit: Option<u64>,
    /// How much of the next chunks to fetch ahead while one streams into
    /// gpg, in memory (e.g. 64M; at least 1M).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = prefetch_size)]
    pub prefetch: usize,
}

impl StreamArgs {
    /// `--time-limit` as a limit: `None` for 0 or absent.
    pub fn limit(&self) -> Option<std::time::Duration> {
        self.time_limit
            .filter(|s| *s > 0)
            .map(std::time::Duration::from_secs)
    }
}

/// Parses `--prefetch`.
fn prefetch_size(text: &str) -> Result<usize, String> {
    let size = zfs2cloud_core::ByteSize::parse(text).map_err(|e| e.to_string())?;
    if size.0 < 1 << 20 {
        return Err(format!("{text} is less than the minimum, 1M"));
    }
    usize::try_from(size.0).map_err(|_| format!("{text} is too large"))
}

/// What `init` writes into the new config.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// The ZFS file system to back up (e.g. tank/data).
    #[arg(long, value_name = "DATASET")]
    pub dataset: String,
    /// Where the backups go: an rclone remote and path (e.g.
    /// b2:bucket/data), or an absolute directory.
    #[arg(long, value_name = "REMOTE")]
    pub remote: String,
    /// intermediate: zfs send streams, encrypted with gpg; file: the
    /// snapshot's files as plain files (encrypt with an rclone crypt remote).
    #[arg(long, value_enum, default_value_t = InitMode::Intermediate)]
    pub mode: InitMode,
    /// The passphrase file to create (intermediate mode); default: next to
    /// the config file, <name>.passphrase.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// rclone's config file (must exist); default: rclone's own.
    #[arg(long, value_name = "FILE")]
    pub rclone_config: Option<PathBuf>,
    /// Where exports (in file mode: the mounted snapshot) go; default:
    /// /var/lib/zfs2cloud/<dataset with / as ->.
    #[arg(long, value_name = "DIR")]
    pub intermediate_basedir: Option<PathBuf>,
}

/// The modes `init` writes a config for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitMode {
    /// `zfs send | gpg | split` chunks uploaded with rclone.
    Intermediate,
    /// The snapshot's files, synced with rclone.
    File,
}
