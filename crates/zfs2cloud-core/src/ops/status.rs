//! `zfs2cloud status`: what zfs2cloud knows about one dataset, read-only.
//!
//! [`collect_status`] gathers the snapshots (zfs2cloud's own, with their
//! export state), the local exports, the run lock, the last successful
//! backup and, on request, the backups on the remote into a
//! [`StatusReport`]. The report's serde serialization is the stable
//! `status --json` format (`"format": 1`, described in `docs/status.md` and
//! `docs/status.schema.json`); the command line renders it as tables.
//!
//! Collecting never changes anything: it never creates the base directory
//! or the lock file, and it only lists and reads.

use std::fs::{DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::{
    chains_of, check_listing, future_bases, linkable, Dependencies, Health, Strategy,
};

use crate::config::Config;
use crate::model::ExportKind;
use crate::model::ExportLayout;
use crate::model::Mode;
use crate::model::SnapshotInfo;
use crate::model::{SnapTime, SnapshotName};
use crate::ops::catalog::{list_remote_backups, CatalogError, Listing};
use crate::ops::lock::LOCK_FILE;
use crate::ops::prune::stale_partials;
use crate::ops::upload::export_confirmed;
use crate::stages::ZfsError;
use crate::stages::{Snapshotter, Uploader};

/// The `status --json` format this version writes ([`StatusReport::format`]).
/// It changes only when a field is removed or changes meaning.
pub const STATUS_FORMAT: u32 = 1;

/// The file, inside `intermediate_basedir`, where a successful `backup`
/// records itself ([`record_last_backup`]).
pub const LAST_BACKUP_FILE: &str = "last_backup.json";

/// [`LastBackup::kind`] of a file-mode backup.
pub const LAST_BACKUP_KIND_FILE: &str = "file";

/// The last successful `backup` run, kept in
/// `<intermediate_basedir>/`[`LAST_BACKUP_FILE`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LastBackup {
    /// When the run finished (RFC 3339, UTC).
    pub finished_at: String,
    /// The snapshot it backed up, `dataset@snap`, if it made or used one.
    pub snapshot: Option<String>,
    /// `full` or `incremental` (intermediate mode), `file` (file mode), or
    /// `None` when the sequence exported nothing.
    pub kind: Option<String>,
}

impl LastBackup {
    /// A record of a run that finished at `finished_at`. `kind` is
    /// [`ExportKind::as_str`] or [`LAST_BACKUP_KIND_FILE`].
    #[must_use]
    pub fn new(
        finished_at: DateTime<Utc>,
        snapshot: Option<&SnapshotName>,
        kind: Option<&str>,
    ) -> Self {
        Self {
            finished_at: rfc3339(finished_at),
            snapshot: snapshot.map(ToString::to_string),
            kind: kind.map(str::to_owned),
        }
    }
}

/// Records a successful backup in `<basedir>/`[`LAST_BACKUP_FILE`]
/// (mode 0600), atomically: a temporary file in `basedir` is written and
/// fsynced, renamed over the old record, and the directory is fsynced. A
/// crash leaves either the old record or the new one, never a torn file.
/// `basedir` is created (0700) if missing.
///
/// # Errors
///
/// I/O errors creating, writing, syncing or renaming the file.
pub fn record_last_backup(basedir: &Path, record: &LastBackup) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(basedir)?;
    let mut json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    json.push(b'\n');
    let mut tmp = tempfile::Builder::new()
        .prefix(".last_backup.")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(basedir)?;
    tmp.write_all(&json)?;
    tmp.as_file().sync_all()?;
    tmp.persist(basedir.join(LAST_BACKUP_FILE))
        .map_err(|e| e.error)?;
    File::open(basedir)?.sync_all()
}

/// Reads `<basedir>/`[`LAST_BACKUP_FILE`].
///
/// # Errors
///
/// I/O errors other than a missing file (which is `Ok(None)`: no backup
/// has succeeded yet), and [`io::ErrorKind::InvalidData`] if the file is
/// not a valid record.
pub fn read_last_backup(basedir: &Path) -> io::Result<Option<LastBackup>> {
    let bytes = match std::fs::read(basedir.join(LAST_BACKUP_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Errors collecting the status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Listing the dataset's snapshots failed.
    #[error("cannot list the snapshots of the dataset")]
    Zfs(#[from] ZfsError),
    /// Listing or reading the remote failed.
    #[error("cannot list the backups on the remote")]
    Remote(#[from] CatalogError),
    /// Reading local state (exports, lock file, last-backup record) failed.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Everything `status` reports; its serialization is the `status --json`
/// format, described field by field in `docs/status.md`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// [`STATUS_FORMAT`].
    pub format: u32,
    /// The configured dataset.
    pub dataset: String,
    /// Intermediate or file mode.
    pub mode: Mode,
    /// The configured rclone remote.
    pub remote: String,
    /// The configured `intermediate_basedir`.
    pub intermediate_basedir: String,
    /// When the report was made (RFC 3339, UTC).
    pub generated_at: String,
    /// zfs2cloud's own snapshots, oldest first.
    pub snapshots: Vec<SnapshotStatus>,
    /// How many snapshots of the dataset are not zfs2cloud's (sanoid,
    /// manual, ...). They are never listed, exported or pruned.
    pub foreign_snapshots: usize,
    /// The newest own snapshot exported as a full (the base of the current
    /// chain), part after `@`.
    pub full_base: Option<String>,
    /// The snapshots a future incremental will be based on under the
    /// configured strategy (what zfs2cloud holds), oldest first.
    pub future_bases: Vec<String>,
    /// Complete exports under `intermediate_basedir`, oldest first.
    pub local_exports: Vec<LocalExportStatus>,
    /// Names of interrupted exports (`*.partial` directories) under
    /// `intermediate_basedir`.
    pub partial_exports: Vec<String>,
    /// The run lock.
    pub lock: LockStatus,
    /// The last successful `backup` run, if recorded.
    pub last_backup: Option<LastBackup>,
    /// The backups on the remote; `None` unless the remote was asked for,
    /// and always in file mode.
    pub remote_backups: Option<RemoteStatus>,
}

/// One of zfs2cloud's snapshots.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SnapshotStatus {
    /// The part after `@` (`YYYYMMDDHHMMSS`).
    pub name: String,
    /// The time in the name, as an instant (RFC 3339, UTC).
    pub created: String,
    /// Days from `created` to the report's time, to one decimal.
    pub age_days: f64,
    /// Whether it carries any user hold (`userrefs > 0`).
    pub held: bool,
    /// What it was exported as; `None` if never exported.
    pub kind: Option<ExportKind>,
    /// The base of an incremental export.
    pub base: Option<String>,
    /// The level of its export (0: a full); `None` if never exported.
    pub level: Option<u32>,
    /// Whether its export is confirmed uploaded to the configured remote.
    pub uploaded: bool,
}

/// A complete export on local disk.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LocalExportStatus {
    /// The directory name (`<snap>` or `<snap>-full`), the same as on the
    /// remote.
    pub dir: String,
    /// The snapshot, part after `@`.
    pub snapshot: String,
    /// Full or incremental, from the manifest.
    pub kind: ExportKind,
    /// Number of chunk files.
    pub chunks: usize,
    /// Total size of the chunks in bytes.
    pub bytes: u64,
    /// Whether this export's upload to the configured remote is confirmed.
    pub uploaded: bool,
}

/// The run lock.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LockStatus {
    /// Whether a run holds it now.
    pub held: bool,
    /// What the holder wrote (`pid=… started=…`); `None` when free, or
    /// when the holder has not written it yet.
    pub holder: Option<String>,
}

/// The backups on the remote.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RemoteStatus {
    /// Every backup directory, oldest first.
    pub backups: Vec<RemoteBackupStatus>,
    /// Each full with the incrementals that depend on it (based on it, or
    /// on an incremental that is).
    pub chains: Vec<ChainStatus>,
    /// Incrementals whose chain is broken (a backup they need is not on
    /// the remote or has no manifest, or they have none): they cannot be
    /// restored from the remote alone.
    pub orphans: Vec<String>,
}

/// What a listing check says about a remote backup.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthState {
    /// Every chunk is there with its size (and SHA-256 where listed).
    Ok,
    /// A chunk differs from the manifest.
    Damaged,
    /// Something is missing (the manifest or a chunk).
    Incomplete,
}

impl HealthState {
    /// `OK`, `DAMAGED` or `INCOMPLETE`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Damaged => "DAMAGED",
            Self::Incomplete => "INCOMPLETE",
        }
    }
}

/// One backup directory on the remote.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RemoteBackupStatus {
    /// `<snap>` or `<snap>-full`.
    pub dir: String,
    /// The snapshot, part after `@`.
    pub snapshot: String,
    /// Full or incremental, from the directory name.
    pub kind: ExportKind,
    /// Whether its `manifest.json` is there (and readable).
    pub complete: bool,
    /// The listing check ([`check_listing`]).
    pub health: HealthState,
    /// Why it is not `OK`; `None` when it is.
    pub reason: Option<String>,
    /// The base of an incremental, from the manifest.
    pub base: Option<String>,
    /// The directory a restore of this incremental receives just before
    /// it: the backup of `base` with the shortest chain; `None` for a full,
    /// or when the chain is broken (an orphan).
    pub based_on: Option<String>,
    /// The level from the manifest (0: a full); `None` without one, or in
    /// a manifest from before levels.
    pub level: Option<u32>,
    /// Number of chunks: the manifest's, or without a manifest the
    /// `.zfs.gpg.NNNN` files present.
    pub chunks: usize,
    /// Bytes: the manifest's total, or without a manifest the sum of the
    /// chunk files present.
    pub bytes: u64,
}

/// A full and the incrementals that depend on it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ChainStatus {
    /// The full's directory.
    pub full: String,
    /// The directories of the incrementals whose restore starts from the
    /// full, oldest first.
    pub incrementals: Vec<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StatusError + '_ {
    move |source| StatusError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether a run holds the lock in `basedir`, and who.
///
/// The lock file is opened read-only, never created; a missing file (or
/// base directory) means free. If the lock can be taken it is released at
/// once. While it is taken (microseconds) a starting `backup` would find
/// it held and exit 75.
///
/// # Errors
///
/// [`StatusError::Io`] if the lock file exists but cannot be opened or
/// locked.
pub fn probe_lock(basedir: &Path) -> Result<LockStatus, StatusError> {
    use std::os::unix::fs::MetadataExt;
    let path = basedir.join(LOCK_FILE);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(LockStatus {
                held: false,
                holder: None,
            })
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    // Look, do not touch: taking the lock even for a moment could make a
    // backup starting at that instant exit 75. The kernel lists every flock
    // in /proc/locks with the locked file's inode.
    let locks = std::fs::read_to_string("/proc/locks").map_err(io_err(Path::new("/proc/locks")))?;
    let holder_pid = locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, dev_inode) = (f.get(1)?, f.get(4)?, f.get(5)?);
        let inode: u64 = dev_inode.rsplit(':').next()?.parse().ok()?;
        (*kind == "FLOCK" && inode == meta.ino()).then(|| (*pid).to_owned())
    });
    let Some(pid) = holder_pid else {
        return Ok(LockStatus {
            held: false,
            holder: None,
        });
    };
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let holder = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(LockStatus {
        held: true,
        holder: Some(if holder.is_empty() {
            format!("pid={pid}")
        } else {
            holder
        }),
    })
}

/// Collects the status of `config`'s dataset at `now`. With `remote`, the
/// remote's backups are listed and checked too (their manifests are read;
/// no chunk is downloaded); in file mode the remote holds plain files, so
/// it is never listed.
///
/// # Errors
///
/// [`StatusError::Zfs`] if the snapshots cannot be listed,
/// [`StatusError::Io`] if local state cannot be read,
/// [`StatusError::Remote`] if the remote cannot be listed.
pub fn collect_status(
    snapshotter: &dyn Snapshotter,
    config: &Config,
    now: DateTime<Utc>,
    remote: Option<&dyn Uploader>,
) -> Result<StatusReport, StatusError> {
    let basedir = config.intermediate_basedir.as_path();
    let all = snapshotter.list(&config.dataset)?;

    let mut own: Vec<(SnapTime, &SnapshotInfo)> = all
        .iter()
        .filter_map(|s| s.own_time().map(|t| (t, s)))
        .collect();
    own.sort_by_key(|(t, _)| *t);
    let foreign_snapshots = all.len() - own.len();
    let snapshots = own
        .iter()
        .map(|(t, s)| snapshot_status(*t, s, config, now))
        .collect();
    let full_base = own
        .iter()
        .rev()
        .find(|(_, s)| s.kind == Some(ExportKind::Full))
        .map(|(_, s)| s.name.snap().to_owned());
    let future_bases = future_bases(&Strategy::from_config(config), &all)
        .iter()
        .map(|n| n.snap().to_owned())
        .collect();

    let layout = ExportLayout::new(config.intermediate_basedir.clone());
    let local_exports = layout
        .complete_exports(&config.dataset)
        .map_err(io_err(basedir))?
        .iter()
        .map(|e| LocalExportStatus {
            dir: e.dir_name.clone(),
            snapshot: e.snapshot.snap().to_owned(),
            kind: e.manifest.kind,
            chunks: e.manifest.chunks.len(),
            bytes: e.manifest.total_size,
            uploaded: export_confirmed(&all, e, &config.remote),
        })
        .collect();
    let partial_exports = stale_partials(&layout)
        .map_err(io_err(basedir))?
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();

    let lock = probe_lock(basedir)?;
    let last_backup = read_last_backup(basedir).map_err(io_err(&basedir.join(LAST_BACKUP_FILE)))?;
    let remote_backups = match (remote, config.mode) {
        (Some(uploader), Mode::Intermediate) => Some(remote_status(uploader, &config.remote)?),
        _ => None,
    };

    Ok(StatusReport {
        format: STATUS_FORMAT,
        dataset: config.dataset.to_string(),
        mode: config.mode,
        remote: config.remote.clone(),
        intermediate_basedir: basedir.display().to_string(),
        generated_at: rfc3339(now),
        snapshots,
        foreign_snapshots,
        full_base,
        future_bases,
        local_exports,
        partial_exports,
        lock,
        last_backup,
        remote_backups,
    })
}

fn snapshot_status(
    time: SnapTime,
    s: &SnapshotInfo,
    config: &Config,
    now: DateTime<Utc>,
) -> SnapshotStatus {
    let created = time.to_utc(config.snapshot_time_zone);
    #[allow(clippy::cast_precision_loss)] // seconds of an age: far below 2^52
    let days = (now - created).num_seconds() as f64 / 86_400.0;
    SnapshotStatus {
        name: s.name.snap().to_owned(),
        created: rfc3339(created),
        age_days: (days * 10.0).round() / 10.0,
        held: s.userrefs > 0,
        kind: s.kind,
        base: s.base.clone(),
        level: s.level(),
        uploaded: s.uploaded_to(&config.remote),
    }
}

fn remote_status(uploader: &dyn Uploader, remote: &str) -> Result<RemoteStatus, StatusError> {
    let listed = list_remote_backups(uploader, remote, Listing::Hashes)?;
    let deps = Dependencies::new(&listed, &linkable);
    let backups = listed
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let (health, reason) = match check_listing(b) {
                Health::Ok => (HealthState::Ok, None),
                Health::Damaged(r) => (HealthState::Damaged, Some(r)),
                Health::Incomplete(r) => (HealthState::Incomplete, Some(r)),
            };
            let chunk_names = b.chunk_names();
            let bytes = match &b.manifest {
                Some(m) => m.total_size,
                None => b
                    .files
                    .iter()
                    .filter(|f| chunk_names.contains(&f.name))
                    .map(|f| f.size)
                    .sum(),
            };
            RemoteBackupStatus {
                dir: b.dir_name.clone(),
                snapshot: b.snapshot.clone(),
                kind: b.kind,
                complete: b.has_manifest(),
                health,
                reason,
                base: b.base().map(str::to_owned),
                based_on: deps.base_of(i).map(|j| listed[j].dir_name.clone()),
                level: b.manifest.as_ref().and_then(|m| m.level),
                chunks: chunk_names.len(),
                bytes,
            }
        })
        .collect();
    let (chains, orphans) = chains_of(&listed, &deps);
    Ok(RemoteStatus {
        backups,
        chains: chains
            .iter()
            .map(|c| ChainStatus {
                full: c.full.dir_name.clone(),
                incrementals: c.incrementals.iter().map(|b| b.dir_name.clone()).collect(),
            })
            .collect(),
        orphans: orphans.iter().map(|b| b.dir_name.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::{Path, PathBuf};

    use chrono::TimeZone;

    use super::*;
    use crate::model::testing::{test_manifest, write_local_export};
    use crate::model::upload_record;
    use crate::model::RemoteFile;
    use crate::model::{ChunkEntry, Manifest, MANIFEST_FILE};
    use crate::ops::lock::RunLock;
    use crate::process::{CommandLine, Runner};
    use crate::stages::{MockSnapshotter, MockUploader, ProcessStage};

    const CONFIG: &str = r#"
dataset = "tank/data"
intermediate_basedir = "BASEDIR"
remote = "REMOTE"
passphrase_file = "/etc/zfs2cloud/pass"
"#;

    fn config(basedir: &Path, remote: &str) -> Config {
        let text = CONFIG
            .replace("BASEDIR", &basedir.display().to_string())
            .replace("REMOTE", remote);
        Config::parse(&text, Path::new("/etc/zfs2cloud/data.toml")).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 3, 12, 0, 0).unwrap()
    }

    fn info(
        snap: &str,
        userrefs: u64,
        kind: Option<ExportKind>,
        base: Option<&str>,
        uploaded: Option<String>,
    ) -> SnapshotInfo {
        SnapshotInfo {
            level: None,
            name: SnapshotName::parse(&format!("tank/data@{snap}")).unwrap(),
            userrefs,
            kind,
            base: base.map(Into::into),
            uploaded,
        }
    }

    fn manifest(snap: &str, kind: ExportKind, base: Option<&str>, chunks: &[u64]) -> Manifest {
        let chunks = chunks
            .iter()
            .enumerate()
            .map(|(i, size)| ChunkEntry {
                name: format!("tank-data@{snap}.zfs.gpg.{i:04}"),
                size: *size,
                sha256: "00".into(),
            })
            .collect();
        test_manifest(snap, kind, base, chunks)
    }

    /// Writes an export directory (chunks of the manifest's sizes, and the
    /// manifest unless `with_manifest` is false).
    fn write_export(parent: &Path, dir: &str, m: &Manifest, with_manifest: bool) {
        let dir = parent.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for c in &m.chunks {
            std::fs::write(
                dir.join(&c.name),
                vec![0u8; usize::try_from(c.size).unwrap()],
            )
            .unwrap();
        }
        if with_manifest {
            std::fs::write(dir.join(MANIFEST_FILE), serde_json::to_vec(m).unwrap()).unwrap();
        }
    }

    fn read_dir_names(dir: &str, dirs: bool) -> Vec<String> {
        match std::fs::read_dir(dir) {
            Err(_) => Vec::new(),
            Ok(entries) => entries
                .map(|e| e.unwrap())
                .filter(|e| e.file_type().unwrap().is_dir() == dirs)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
        }
    }

    /// A mock uploader that answers from a local directory standing in for
    /// the remote.
    fn local_remote() -> MockUploader {
        let mut up = MockUploader::new();
        up.expect_list_dirs()
            .returning(|dir| Ok(read_dir_names(dir, true)));
        up.expect_list().returning(|dir| {
            Ok(read_dir_names(dir, false)
                .into_iter()
                .map(|name| RemoteFile {
                    size: std::fs::metadata(Path::new(dir).join(&name)).unwrap().len(),
                    name,
                    sha256: None,
                })
                .collect())
        });
        up.expect_cat().returning(|path| {
            ProcessStage::start(
                &Runner::new(),
                &CommandLine::new("cat").arg(path),
                None,
                Vec::new(),
            )
        });
        up
    }

    /// What `zfs list` shows in the realistic state: a held, uploaded full;
    /// an incremental on it exported but not uploaded; the newest snapshot
    /// not exported yet; two foreign snapshots.
    fn realistic_snapshots(remote: &str) -> Vec<SnapshotInfo> {
        vec![
            info("autosnap_2024-01-01_00:00:00_daily", 0, None, None, None),
            info(
                "20240102000000",
                0,
                Some(ExportKind::Incremental),
                Some("20240101000000"),
                None,
            ),
            info(
                "20240101000000",
                1,
                Some(ExportKind::Full),
                None,
                Some(upload_record(
                    "2024-01-01T00:10:00Z",
                    "20240101000000-full",
                    remote,
                )),
            ),
            info("20240103000000", 0, None, None, None),
            info("manual", 0, None, None, None),
        ]
    }

    /// The local exports of the realistic state: the full and the
    /// incremental, a partial export, and a directory that is no export.
    fn write_local_exports(basedir: &Path, full: &Manifest, incr: &Manifest) {
        write_export(basedir, "20240101000000-full", full, true);
        write_export(basedir, "20240102000000", incr, true);
        std::fs::create_dir_all(basedir.join("20240103000000.partial")).unwrap();
        std::fs::create_dir_all(basedir.join("unrelated")).unwrap();
    }

    /// The remote: the full complete, the incremental interrupted, an
    /// orphan with a damaged chunk, and a directory that is no backup.
    fn write_remote_exports(remote_dir: &Path, full: &Manifest, incr: &Manifest) {
        write_export(remote_dir, "20240101000000-full", full, true);
        write_export(remote_dir, "20240102000000", incr, false);
        let orphan = manifest(
            "20231215000000",
            ExportKind::Incremental,
            Some("20231201000000"),
            &[5],
        );
        write_export(remote_dir, "20231215000000", &orphan, true);
        std::fs::write(
            remote_dir
                .join("20231215000000")
                .join("tank-data@20231215000000.zfs.gpg.0000"),
            b"abc",
        )
        .unwrap();
        std::fs::create_dir_all(remote_dir.join("photos")).unwrap();
    }

    /// The realistic state, written to a temp dir (kept alive here).
    struct Realistic {
        _tmp: tempfile::TempDir,
        basedir: PathBuf,
        config: Config,
        zfs: MockSnapshotter,
        /// When the last backup finished; the lock is taken at that time.
        finished: DateTime<Utc>,
        last: LastBackup,
    }

    fn realistic_state() -> Realistic {
        let tmp = tempfile::tempdir().unwrap();
        let basedir = tmp.path().join("intermediate");
        let remote_dir = tmp.path().join("remote");
        let remote = remote_dir.display().to_string();
        let config = config(&basedir, &remote);

        let snaps = realistic_snapshots(&remote);
        let mut zfs = MockSnapshotter::new();
        zfs.expect_list().returning(move |_| Ok(snaps.clone()));

        let full = manifest("20240101000000", ExportKind::Full, None, &[1024, 10]);
        let incr = manifest(
            "20240102000000",
            ExportKind::Incremental,
            Some("20240101000000"),
            &[7],
        );
        write_local_exports(&basedir, &full, &incr);
        write_remote_exports(&remote_dir, &full, &incr);

        let finished = Utc.with_ymd_and_hms(2024, 1, 3, 0, 0, 5).unwrap();
        let snapshot = SnapshotName::parse("tank/data@20240102000000").unwrap();
        let last = LastBackup::new(finished, Some(&snapshot), Some("incremental"));
        record_last_backup(&basedir, &last).unwrap();
        Realistic {
            _tmp: tmp,
            basedir,
            config,
            zfs,
            finished,
            last,
        }
    }

    /// The report's header and the snapshots (the foreign ones only
    /// counted).
    fn assert_realistic_snapshots(report: &StatusReport) {
        assert_eq!(report.format, 1);
        assert_eq!(report.dataset, "tank/data");
        assert_eq!(report.mode, Mode::Intermediate);
        assert_eq!(report.generated_at, "2024-01-03T12:00:00Z");
        assert_eq!(report.foreign_snapshots, 2);
        let names: Vec<&str> = report.snapshots.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["20240101000000", "20240102000000", "20240103000000"]
        );
        let first = &report.snapshots[0];
        assert_eq!(first.created, "2024-01-01T00:00:00Z");
        assert!((first.age_days - 2.5).abs() < 1e-9, "{}", first.age_days);
        assert!(first.held && first.uploaded);
        assert_eq!(first.kind, Some(ExportKind::Full));
        let second = &report.snapshots[1];
        assert!(!second.held && !second.uploaded);
        assert_eq!(second.base.as_deref(), Some("20240101000000"));
        assert_eq!(report.snapshots[2].kind, None);
        assert_eq!(report.full_base.as_deref(), Some("20240101000000"));
    }

    fn assert_realistic_local_exports(report: &StatusReport) {
        assert_eq!(
            report.local_exports,
            [
                LocalExportStatus {
                    dir: "20240101000000-full".into(),
                    snapshot: "20240101000000".into(),
                    kind: ExportKind::Full,
                    chunks: 2,
                    bytes: 1034,
                    uploaded: true,
                },
                LocalExportStatus {
                    dir: "20240102000000".into(),
                    snapshot: "20240102000000".into(),
                    kind: ExportKind::Incremental,
                    chunks: 1,
                    bytes: 7,
                    uploaded: false,
                },
            ]
        );
        assert_eq!(report.partial_exports, ["20240103000000.partial"]);
    }

    /// The lock is held, by this process.
    fn assert_lock_held_by_us(report: &StatusReport) {
        assert!(report.lock.held);
        let holder = report.lock.holder.as_deref().unwrap();
        assert!(
            holder.contains(&format!("pid={}", std::process::id())),
            "{holder}"
        );
    }

    fn assert_realistic_remote(report: &StatusReport) {
        let remote = report.remote_backups.as_ref().unwrap();
        let dirs: Vec<&str> = remote.backups.iter().map(|b| b.dir.as_str()).collect();
        assert_eq!(
            dirs,
            ["20231215000000", "20240101000000-full", "20240102000000"]
        );
        let [orphan, full_b, interrupted] = &remote.backups[..] else {
            panic!("three backups")
        };
        assert_eq!(orphan.health, HealthState::Damaged);
        assert!(orphan.reason.as_deref().unwrap().contains("0000"));
        assert_eq!(full_b.health, HealthState::Ok);
        assert_eq!(full_b.reason, None);
        assert!(full_b.complete);
        assert_eq!((full_b.chunks, full_b.bytes), (2, 1034));
        assert_eq!(interrupted.health, HealthState::Incomplete);
        assert!(!interrupted.complete);
        assert_eq!(interrupted.base, None, "no manifest, no base");
        assert_eq!((interrupted.chunks, interrupted.bytes), (1, 7));
        assert_eq!(
            remote.chains,
            [ChainStatus {
                full: "20240101000000-full".into(),
                incrementals: vec![],
            }]
        );
        assert_eq!(remote.orphans, ["20231215000000", "20240102000000"]);
    }

    /// With the lock released and no uploader: the lock is free again, no
    /// remote is listed, and the JSON says so and reads back the same.
    fn assert_released_report(state: &Realistic) {
        let report = collect_status(&state.zfs, &state.config, now(), None).unwrap();
        assert_eq!(
            report.lock,
            LockStatus {
                held: false,
                holder: None
            }
        );
        assert!(report.remote_backups.is_none());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["lock"]["held"], false);
        assert!(json["remote_backups"].is_null());
        assert_eq!(json["snapshots"][0]["kind"], "full");
        assert!(json["snapshots"][2]["kind"].is_null());
        // Round trip.
        let back: StatusReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    /// A realistic state: a held, uploaded full; an incremental on it
    /// exported but not uploaded; the newest snapshot not exported yet; two
    /// foreign snapshots; a partial export; the lock held.
    #[test]
    fn reports_a_realistic_state() {
        let state = realistic_state();
        let lock = RunLock::acquire(&state.basedir, state.finished).unwrap();
        let uploader = local_remote();
        let report = collect_status(&state.zfs, &state.config, now(), Some(&uploader)).unwrap();

        assert_realistic_snapshots(&report);
        assert_realistic_local_exports(&report);
        assert_lock_held_by_us(&report);
        assert_eq!(report.last_backup.as_ref(), Some(&state.last));
        assert_realistic_remote(&report);

        drop(lock);
        assert_released_report(&state);
    }

    #[test]
    fn a_fresh_setup_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let basedir = tmp.path().join("never-created");
        let config = config(&basedir, "b2:bucket/data");
        let mut zfs = MockSnapshotter::new();
        zfs.expect_list()
            .returning(|_| Ok(vec![info("manual", 0, None, None, None)]));
        let report = collect_status(&zfs, &config, now(), None).unwrap();
        assert!(
            !basedir.exists(),
            "status must not create the base directory"
        );
        assert!(report.snapshots.is_empty());
        assert_eq!(report.foreign_snapshots, 1);
        assert_eq!(report.full_base, None);
        assert!(report.local_exports.is_empty() && report.partial_exports.is_empty());
        assert!(!report.lock.held);
        assert_eq!(report.last_backup, None);
    }

    #[test]
    fn a_zfs_failure_is_a_status_error() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config(tmp.path(), "r:");
        let mut zfs = MockSnapshotter::new();
        zfs.expect_list().returning(|_| {
            Err(ZfsError::Parse {
                command: "zfs list".into(),
                line: "x".into(),
                reason: "garbage".into(),
            })
        });
        let err = collect_status(&zfs, &config, now(), None).unwrap_err();
        assert!(matches!(err, StatusError::Zfs(_)), "{err}");
    }

    #[test]
    fn last_backup_is_written_atomically_and_privately() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("b");
        assert_eq!(read_last_backup(&base).unwrap(), None);
        let first = LastBackup::new(now(), None, Some(LAST_BACKUP_KIND_FILE));
        record_last_backup(&base, &first).unwrap();
        let second = LastBackup {
            finished_at: "2024-01-04T00:00:00Z".into(),
            snapshot: Some("tank/data@20240104000000".into()),
            kind: Some("full".into()),
        };
        record_last_backup(&base, &second).unwrap();
        assert_eq!(read_last_backup(&base).unwrap(), Some(second));
        let meta = std::fs::metadata(base.join(LAST_BACKUP_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let names = read_dir_names(&base.display().to_string(), false);
        assert_eq!(names, [LAST_BACKUP_FILE], "no temporary file is left");

        std::fs::write(base.join(LAST_BACKUP_FILE), b"{not json").unwrap();
        let err = read_last_backup(&base).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let config = config(&base, "r:");
        let mut zfs = MockSnapshotter::new();
        zfs.expect_list().returning(|_| Ok(vec![]));
        let err = collect_status(&zfs, &config, now(), None).unwrap_err();
        assert!(
            matches!(&err, StatusError::Io { path, .. } if path.ends_with(LAST_BACKUP_FILE)),
            "{err}"
        );
    }

    #[test]
    fn an_incremental_on_an_intact_incremental_is_in_its_chain_not_an_orphan() {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path();
        write_local_export(remote, "20240101000000", None, &[b"f"]);
        write_local_export(remote, "20240102000000", Some("20240101000000"), &[b"a"]);
        write_local_export(remote, "20240103000000", Some("20240102000000"), &[b"b"]);
        write_local_export(remote, "20240105000000", Some("20240104000000"), &[b"c"]);
        let status = remote_status(&local_remote(), remote.to_str().unwrap()).unwrap();
        assert_eq!(
            status.chains,
            [ChainStatus {
                full: "20240101000000-full".into(),
                incrementals: vec!["20240102000000".into(), "20240103000000".into()],
            }]
        );
        assert_eq!(status.orphans, ["20240105000000"]);
    }

    #[test]
    fn file_mode_never_lists_the_remote() {
        let tmp = tempfile::tempdir().unwrap();
        let text = format!(
            "dataset = \"tank/data\"\nmode = \"file\"\nintermediate_basedir = \"{}\"\nremote = \"r:photos\"\n",
            tmp.path().display()
        );
        let config = Config::parse(&text, Path::new("/etc/zfs2cloud/f.toml")).unwrap();
        let mut zfs = MockSnapshotter::new();
        zfs.expect_list().returning(|_| Ok(vec![]));
        // No expectations: any call on it would panic.
        let uploader = MockUploader::new();
        let report = collect_status(&zfs, &config, now(), Some(&uploader)).unwrap();
        assert_eq!(report.mode, Mode::File);
        assert!(report.remote_backups.is_none());
    }
}
