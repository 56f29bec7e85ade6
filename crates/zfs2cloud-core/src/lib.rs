//! zfs2cloud's library: back up ZFS datasets to any rclone remote through
//! snapshots.
//!
//! A backup is a sequence of steps (lock, snapshot, export, upload,
//! prune-intermediates, prune-snapshots, unlock; or file mode's mount,
//! sync and unmount). [`Backup`] runs a configured sequence, and each step
//! is also a method of its own ([`Backup::snapshot`], [`Backup::export`],
//! [`Backup::upload`], …), which is what the `zfs2cloud` command line calls.
//!
//! The external programs are stages behind traits: [`Snapshotter`],
//! [`Exporter`] and [`Pruner`] (`zfs`, [`ZfsCli`]), [`Encryptor`] (`gpg`,
//! [`GpgEncryptor`]) and [`Uploader`] (`rclone`, [`RcloneUploader`]).
//! [`ProcessStages`] builds all of them from a [`Config`]; an embedder may
//! put its own implementation in any place. Every program runs through one
//! [`Runner`], which logs each command with its duration, turns a dry run
//! into printed lines and stops everything on a [`CancelToken`].
//!
//! Decisions are pure functions ([`plan_export`], [`plan_snapshot_prune`],
//! [`plan_restore`], [`check_listing`]), so every rule is tested on plain
//! data. There is no terminal UI here: results are data (for example
//! [`StatusReport`]), progress goes through [`Progress`], and diagnostics
//! through the `log` facade.
//!
//! # Embedding
//!
//! Snapshot a dataset and export the snapshot with the process-backed
//! stages, as `zfs2cloud snapshot` and `zfs2cloud export` do, counting
//! the bytes of the export as they pass ([`NoProgress`] shows nothing):
//!
//! ```no_run
//! use std::path::Path;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! use zfs2cloud_core::{now, Config, ExportOptions, ExportStepOutcome, Progress, ProcessStages, Runner};
//!
//! /// Counts bytes; every other event is ignored (the trait's defaults).
//! #[derive(Default)]
//! struct Bytes(AtomicU64);
//!
//! impl Progress for Bytes {
//!     fn begin(&self, label: &str, total: Option<u64>) {
//!         eprintln!("{label}: about {} bytes", total.unwrap_or(0));
//!     }
//!     fn advance(&self, bytes: u64) {
//!         self.0.fetch_add(bytes, Ordering::Relaxed);
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load(Path::new("/etc/zfs2cloud/data.toml"))?;
//! let runner = Runner::new();
//! let stages = ProcessStages::new(&config, &runner)?;
//! let progress = Bytes::default();
//! let backup = stages.backup(&config, &runner, now()?, &progress);
//!
//! let lock = backup.lock()?;
//! let snapshot = backup.snapshot(lock.is_some())?;
//! let options = ExportOptions {
//!     target: Some(snapshot.snap().to_owned()),
//!     ..ExportOptions::default()
//! };
//! if let ExportStepOutcome::Exported { plan, outcome } = backup.export(&options)? {
//!     println!(
//!         "{} export of {snapshot}: {} chunks in {}",
//!         plan.kind,
//!         outcome.manifest.chunks.len(),
//!         outcome.dir.display()
//!     );
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A stage need not be a program. This exporter streams from memory, as
//! a test or an embedder with its own source of send streams might; the
//! export pipeline reads its output like `zfs send`'s:
//!
//! ```
//! use std::io::{Cursor, Read};
//!
//! use zfs2cloud_core::{Exporter, SnapshotName, Started, ZfsError};
//!
//! struct FromMemory(Vec<u8>);
//!
//! impl Exporter for FromMemory {
//!     fn describe(&self, snapshot: &SnapshotName, _base: Option<&SnapshotName>) -> String {
//!         format!("stream of {snapshot} from memory")
//!     }
//!
//!     fn send(
//!         &self,
//!         snapshot: &SnapshotName,
//!         base: Option<&SnapshotName>,
//!     ) -> Result<Started<ZfsError>, ZfsError> {
//!         let what = self.describe(snapshot, base);
//!         Ok(Started::reading(what, Cursor::new(self.0.clone())))
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let snapshot = SnapshotName::parse("tank/data@20240101000000")?;
//! let Started { stage, mut output } = FromMemory(b"a send stream".to_vec()).send(&snapshot, None)?;
//! let mut bytes = Vec::new();
//! output.read_to_end(&mut bytes)?;
//! stage.wait()?;
//! assert_eq!(bytes, b"a send stream");
//! # Ok(())
//! # }
//! ```
//!
//! # Layers
//!
//! The modules are private and import only downward; what an embedder
//! needs is re-exported here. From the bottom: `model` (names, steps,
//! snapshot metadata, the manifest and the layout on disk and remote) and
//! `util`; `process` (the runner); `config` (a leaf that nothing imports
//! back: consumers build themselves from it, e.g. `RetryPolicy::from`);
//! `stages` (the traits and their process-backed implementations) beside
//! `policy` (pure decisions); `ops` (the steps, restore, verify, status);
//! `monitor` (metrics and pings around a backup run).
//! `docs/design.md` draws them and the route of one backup.

mod config;
mod model;
mod monitor;
mod ops;
mod policy;
mod process;
mod stages;
mod util;

// The configuration file.
pub use config::{
    ByteSize, Config, ConfigError, ConfigFile, HookCommand, Hooks, IncrementalStrategy, SizeError,
    ToolPaths, ENV_GPG, ENV_RCLONE, ENV_ZFS,
};
// `[retention]` (its own list, for an easy merge).
pub use config::{LocalRetention, RemoteRetention, Retention};
// check-config: every error of a file, and the keys its mode ignores.
pub use config::{diagnose, mode_warnings, Diagnostic};
pub use ops::check_online::{
    check_offline, check_online, local_space_needed, remote_form, CheckResult, CheckStatus,
    RemoteForm,
};

// Names, steps, snapshot metadata, and the formats on disk and remote.
pub use model::{
    excluded_by, mask_secret_flags, parse_guid, upload_record, ChunkEntry, Compression,
    CompressionSettings, DatasetName, DatasetType, ExcludePattern, ExportKind, ExportLayout,
    LocalExport, Manifest, Mode, MountStrategy, NameError, OwnerMarker, OwnerMarkerError,
    Passphrase, PassphraseError, PatternError, RemoteBackup, RemoteFile, SnapTime, SnapshotInfo,
    SnapshotName, SnapshotTimeZone, Step, TreeEntry, UnknownStep, CLONE_INFIX, DEFAULT_ZSTD_LEVEL,
    HOLD_TAG, MANIFEST_FILE, MANIFEST_FORMAT, OWNER_FILE, OWNER_FORMAT, PROP_BASE, PROP_CLONE_OF,
    PROP_KIND, PROP_LEVEL, PROP_UPLOADED, SHA256SUMS_FILE, SKIP_PROPERTY, ZSTD_LEVELS,
};
// Send flags and the encryption choice (their own list, for an easy merge).
pub use model::{Encryption, SendFlag, SendFlags, MANIFEST_GPG, PROP_SEND_FLAGS};
// check-config (issue 16): rclone's --bwlimit grammar, escaping for the terminal.
pub use model::{check_bwlimit, escape_controls, BwLimitError};
pub use policy::BaseFacts;
pub use stages::{parse_send_usage, NoEncryption, SendUsage};
// Encryption to public keys (`gpg-recipients`; its own list, for an easy
// merge).
pub use model::{
    check_recipient_keys, is_fingerprint, parse_key_listing, recipients_compatible,
    recipients_property, KeyPart, ListedKey, RecipientKeys, EXPIRY_WARNING_DAYS,
    MANIFEST_GPG_RECIPIENTS, PROP_RECIPIENTS,
};
pub use ops::restore::chain_needs_gpg;
pub use stages::{list_key_file, RecipientEncryptor, SecretKeyring, TempGpgHome};

// Running external programs.
pub use process::{
    CancelToken, CommandLine, DryRunSink, Finished, Output, ProcessError, RunOptions, Runner,
    RunningProcess, SpawnOptions, StopReason, StopWhen, CLEANUP_TIMEOUT,
};

// The stages and their process-backed implementations, with the parsers
// of the programs' output. A streaming stage takes and gives a
// `ByteStream` and runs as a `RunningStage`, a process or a thread.
pub use stages::{
    classify_stderr, compressor_for, parse_lsjson, parse_lsjson_stat, parse_mount_properties,
    parse_snapshot_list, parse_tree_list, ByteStream, Compressor, Encryptor, Exporter, Exposure,
    GpgEncryptor, GpgError, KnownZfsFailure, MountError, MountProperties, Mounter, ProcessStage,
    PruneError, Pruner, RcloneOptions, RcloneUploader, RunningStage, SnapshotMount, Snapshotter,
    Started, ThreadStage, UploadError, Uploader, ZfsCli, ZfsError, ZstdCompressor,
};

// Pure decisions.
pub use policy::{
    backups_of, calendar_keeps, chains, chains_of, check_listing, check_sync_target,
    decide_ownership, latest_own, member_config, member_restore_point, plan_export,
    plan_export_prune, plan_restore, plan_snapshot_prune, plan_tree, tree_restore_point,
    CalendarKeeps, CalendarReason, Chain, Dependencies, ExportDecision, ExportPlan, Health,
    OwnerConflict, Ownership, Period, PlanError, RestorePlanError, RestorePoint, SkippedBackup,
    SnapshotDecision, SnapshotRetention, TreeExclusion, TreeMember, TreePlan, Verdict,
};
// Incremental strategies: what a future incremental is based on.
pub use policy::{future_bases, holds_after, linkable, Strategy};
// Snapshot retention's rule and reasons.
pub use policy::{SnapshotReason, SnapshotRule};
// Remote pruning (its own list, for an easy merge).
pub use policy::{
    deletion_sequence, plan_remote_prune, RemoteAction, RemoteDecision, RemotePrunePlan,
    RemotePrunePolicy, RemoteReason,
};

// Operations: the steps and the sequence that runs them.
pub use ops::backup::{
    Backup, BackupFailure, ExportOptions, MemberFailure, MemberFailures, ProcessStages,
    RemotePruneReport, StepError, StepReport,
};
pub use ops::catalog::RemoteTotals;
pub use ops::catalog::{
    list_backups_of, list_remote_backups, CatalogError, Listing, RemoteListing,
};
pub use ops::export::{ExportError, ExportOutcome, ExportStepOutcome, StreamReport};
pub use ops::lock::{LockError, RunLock, LOCK_FILE};
pub use ops::prune_remote::{
    delete_planned, list_for_prune, LeftAlone, PruneListing, PruneRemoteError,
};
pub use ops::remote_tree::{find_tree, RemoteTreeMember};
pub use ops::report::{RunReport, StepEntry, RUN_REPORT_FORMAT};
// Monitoring (issue 16; its own list, for an easy merge).
pub use config::{mask_url, PingUrl};
pub use monitor::metrics::{parse_last_success, render_metrics, write_metrics};
pub use monitor::ping::{ping_url, PingKind, Pinger, MAX_PING_BODY};
pub use monitor::run_monitored;
pub use ops::snapshot::{HookError, SnapshotError};
pub use ops::upload::{
    read_owner, read_owner_in, OwnerReadError, RetryPolicy, UploadReport, UploadStepError,
};

// Operations outside the sequence: restore, verify and status.
pub use ops::restore::{backup_encryption, chain_is_raw, chain_needs_passphrase};
pub use ops::restore::{restore_chain, RestoreError, RestoreSettings, DEFAULT_PREFETCH_BYTES};
pub use ops::status::{
    collect_status, record_last_backup, ChainStatus, HealthState, LastBackup, LocalExportStatus,
    LockStatus, RemoteBackupStatus, RemoteStatus, SnapshotStatus, StatusError, StatusReport,
    LAST_BACKUP_FILE, LAST_BACKUP_KIND_FILE, STATUS_FORMAT,
};
pub use ops::verify::{scratch_dataset, verify_deep, verify_listing, BackupCheck, VerifyError};

// Small helpers.
pub use util::{
    error_chain, human_bytes, now, ClockError, NoProgress, Progress, StepDone, WorkerState, ENV_NOW,
};
