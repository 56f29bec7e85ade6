//! `verify`: prove the backups on the remote.
//!
//! The default check reads only the remote listing: every chunk must be
//! there with the manifest's size, and its SHA-256 where the backend reports
//! one (local, sftp; not S3). `--deep` downloads everything, checks every
//! chunk's SHA-256 as it streams, decrypts, and receives the stream into a
//! temporary dataset, which proves it is a whole, valid ZFS send stream;
//! the dataset is destroyed afterwards. An incremental is received on its
//! own base, which may be another incremental (see
//! [`Dependencies`]).

use serde::Serialize;

use crate::model::{DatasetName, ExportKind, RemoteBackup, SnapshotName};
use crate::ops::restore::{cleanup_runner, restore_chain, RestoreError, RestoreSettings};
use crate::policy::{check_listing, linkable, Dependencies, Health};
use crate::process::Runner;
use crate::stages::{GpgEncryptor, GpgError, Uploader, ZfsCli};
use crate::util::Progress;

/// One backup's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupCheck {
    /// The backup directory on the remote.
    pub backup: String,
    /// OK, DAMAGED or INCOMPLETE, with the reason.
    #[serde(flatten)]
    pub health: Health,
}

/// Checks the listing of each backup (or only those named in `only`,
/// matched by snapshot or directory name). An incremental whose own
/// listing is whole but whose chain is broken (a backup its restore needs
/// is not on the remote as a complete backup) is INCOMPLETE.
#[must_use]
pub fn verify_listing(backups: &[RemoteBackup], only: Option<&[String]>) -> Vec<BackupCheck> {
    let deps = Dependencies::new(backups, &linkable);
    backups
        .iter()
        .enumerate()
        .filter(|(_, b)| selected(b, only))
        .map(|(i, b)| check(b, listing_health(b, &deps, i)))
        .collect()
}

/// The listing's verdict on backup `b` (number `i` of `deps`): its own
/// files, then its chain.
fn listing_health(b: &RemoteBackup, deps: &Dependencies<'_>, i: usize) -> Health {
    match (check_listing(b), deps.chain(i)) {
        (Health::Ok, Err(link)) => broken_chain(&link),
        (health, _) => health,
    }
}

/// Whether `only` (snapshot or directory names; `None`: all) names `b`.
fn selected(b: &RemoteBackup, only: Option<&[String]>) -> bool {
    only.is_none_or(|o| o.iter().any(|n| *n == b.snapshot || *n == b.dir_name))
}

/// The verdict on a backup whose chain breaks at snapshot `link`.
fn broken_chain(link: &str) -> Health {
    Health::Incomplete(format!(
        "its restore needs {link}, which is not on the remote as a complete backup"
    ))
}

/// Errors that stop `verify --deep` as a whole, rather than being a verdict
/// on one backup.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A local `zfs` command (scratch dataset, rollback) failed.
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    /// A problem of this run, not of the backups: interrupted, a wrong
    /// passphrase or secret key, a local ZFS failure.
    #[error("verify --deep stopped")]
    Aborted(#[source] RestoreError),
}

/// Whether a restore error says something about this run rather than the
/// backup: those must not mark good backups DAMAGED.
fn is_run_problem(e: &RestoreError) -> bool {
    match e {
        RestoreError::Interrupted
        | RestoreError::TimedOut(_)
        | RestoreError::Mount { .. }
        | RestoreError::NoPassphrase { .. }
        | RestoreError::NoSecretKey { .. } => true,
        // A wrong secret says nothing about the backup.
        RestoreError::Decrypt {
            source: GpgError::NoSecretKey { .. },
            ..
        } => true,
        RestoreError::Decrypt { .. } => {
            let text = crate::util::error_chain(e).to_ascii_lowercase();
            text.contains("session key") || text.contains("passphrase")
        }
        // A receive error not tied to a backup is a local `zfs` failure.
        RestoreError::Receive { backup, .. } => backup.is_empty(),
        _ => false,
    }
}

fn verdict_from(
    backup: &RemoteBackup,
    result: Result<(), RestoreError>,
) -> Result<BackupCheck, RestoreError> {
    let health = match result {
        Ok(()) => Health::Ok,
        Err(e) if is_run_problem(&e) => return Err(e),
        Err(e @ RestoreError::DamagedChunk { .. }) => Health::Damaged(e.to_string()),
        Err(e @ (RestoreError::Decrypt { .. } | RestoreError::Receive { .. })) => {
            Health::Damaged(crate::util::error_chain(&e))
        }
        Err(e) => Health::Incomplete(crate::util::error_chain(&e)),
    };
    Ok(BackupCheck {
        backup: backup.dir_name.clone(),
        health,
    })
}

/// Deep verification: each chain's full is received into `scratch`, then
/// every backup that depends on it, each on its own base (the scratch
/// dataset is rolled back to that base first); `scratch` is destroyed after
/// each chain, also when the run stops early. Backups whose listing is
/// already not OK, and those that depend on them, are reported as such
/// without download.
///
/// # Errors
///
/// Never for a bad backup (that is a verdict). [`VerifyError`] for
/// problems of the run itself: interrupted, a wrong passphrase, local ZFS
/// failures, or a scratch dataset that cannot be cleaned up.
pub fn verify_deep(
    store: &dyn Uploader,
    gpg: Option<&GpgEncryptor>,
    runner: &Runner,
    backups: &[RemoteBackup],
    only: Option<&[String]>,
    settings: &RestoreSettings,
    progress: &dyn Progress,
) -> Result<Vec<BackupCheck>, VerifyError> {
    let deps = Dependencies::new(backups, &linkable);
    let deep = DeepCheck {
        store,
        gpg,
        runner,
        settings,
        progress,
        backups,
        children: children(backups, &deps),
        only,
    };
    let mut verdicts = Vec::new();
    for (i, b) in backups.iter().enumerate() {
        if b.kind == ExportKind::Incremental && selected(b, only) && deps.chain(i).is_err() {
            verdicts.push(check(b, listing_health(b, &deps, i)));
        }
    }
    for full in (0..backups.len()).filter(|&i| backups[i].kind == ExportKind::Full) {
        if !deep.wanted_below(full) {
            continue;
        }
        let listing = check_listing(&backups[full]);
        if listing != Health::Ok {
            verdicts.push(check(&backups[full], listing));
            deep.fail_below(full, &mut verdicts);
            continue;
        }
        destroy_scratch(runner, settings, &settings.target)?;
        let checked = deep.check_chain(full, &mut verdicts);
        // Clean up whatever happened, then report the first problem.
        let cleaned = destroy_scratch(runner, settings, &settings.target);
        checked?;
        cleaned?;
    }
    Ok(verdicts)
}

/// The backups based directly on each backup, oldest first.
fn children(backups: &[RemoteBackup], deps: &Dependencies<'_>) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); backups.len()];
    for i in 0..backups.len() {
        if let Some(base) = deps.base_of(i) {
            out[base].push(i);
        }
    }
    out
}

fn check(b: &RemoteBackup, health: Health) -> BackupCheck {
    BackupCheck {
        backup: b.dir_name.clone(),
        health,
    }
}

/// What deep verification of one chain needs.
struct DeepCheck<'a> {
    store: &'a dyn Uploader,
    gpg: Option<&'a GpgEncryptor>,
    runner: &'a Runner,
    settings: &'a RestoreSettings,
    progress: &'a dyn Progress,
    backups: &'a [RemoteBackup],
    /// The backups based directly on each backup.
    children: Vec<Vec<usize>>,
    only: Option<&'a [String]>,
}

impl DeepCheck<'_> {
    /// Whether backup `i`, or one that depends on it, was asked for.
    fn wanted_below(&self, i: usize) -> bool {
        selected(&self.backups[i], self.only)
            || self.children[i].iter().any(|&c| self.wanted_below(c))
    }

    /// The verdicts of what was asked for among the backups that depend
    /// on backup `i`, which is not OK.
    fn fail_below(&self, i: usize, verdicts: &mut Vec<BackupCheck>) {
        let base = &self.backups[i];
        let what = match base.kind {
            ExportKind::Full => "full",
            ExportKind::Incremental => "base",
        };
        let mut below = self.children[i].clone();
        while let Some(c) = below.pop() {
            below.extend(&self.children[c]);
            if selected(&self.backups[c], self.only) {
                let why = format!("its {what} {} is not OK", base.dir_name);
                verdicts.push(check(&self.backups[c], Health::Incomplete(why)));
            }
        }
    }

    /// Receives full `full` into the scratch dataset, then what depends on
    /// it.
    fn check_chain(&self, full: usize, verdicts: &mut Vec<BackupCheck>) -> Result<(), VerifyError> {
        let b = &self.backups[full];
        let result = restore_chain(
            self.store,
            self.gpg,
            self.runner,
            &[b],
            self.settings,
            self.progress,
        );
        self.record(full, result, verdicts)
    }

    /// Records the verdict on backup `i` from its receive (a base that
    /// failed is reported even if it was not asked for: it says why what
    /// depends on it fails), then goes on with what depends on it.
    fn record(
        &self,
        i: usize,
        result: Result<(), RestoreError>,
        verdicts: &mut Vec<BackupCheck>,
    ) -> Result<(), VerifyError> {
        let ok = result.is_ok();
        let verdict = verdict_from(&self.backups[i], result).map_err(VerifyError::Aborted)?;
        if !ok || selected(&self.backups[i], self.only) {
            verdicts.push(verdict);
        }
        if !ok {
            self.fail_below(i, verdicts);
            return Ok(());
        }
        for &c in &self.children[i] {
            if self.wanted_below(c) {
                self.check_incremental(i, c, verdicts)?;
            }
        }
        Ok(())
    }

    /// Rolls the scratch dataset back to `base` and receives incremental
    /// `i` on it.
    fn check_incremental(
        &self,
        base: usize,
        i: usize,
        verdicts: &mut Vec<BackupCheck>,
    ) -> Result<(), VerifyError> {
        let b = &self.backups[i];
        let listing = check_listing(b);
        if listing != Health::Ok {
            verdicts.push(check(b, listing));
            self.fail_below(i, verdicts);
            return Ok(());
        }
        let scratch = &self.settings.target;
        if let Ok(snapshot) = SnapshotName::new(scratch.clone(), &self.backups[base].snapshot) {
            ZfsCli::new(self.runner.clone(), self.settings.zfs.clone()).rollback_own(&snapshot)?;
        }
        let mut settings = self.settings.clone();
        settings.force = true;
        let result = restore_chain(
            self.store,
            self.gpg,
            self.runner,
            &[b],
            &settings,
            self.progress,
        );
        self.record(i, result, verdicts)
    }
}

/// Destroys the scratch dataset if it exists. Only names of the form
/// `<pool>/zfs2cloud-verify-<pid>` are ever passed here.
fn destroy_scratch(
    runner: &Runner,
    settings: &RestoreSettings,
    scratch: &DatasetName,
) -> Result<(), crate::process::ProcessError> {
    if !scratch.as_str().contains("/zfs2cloud-verify-") {
        return Ok(());
    }
    let zfs = ZfsCli::new(cleanup_runner(runner), settings.zfs.clone());
    if zfs.exists(scratch)? {
        zfs.destroy_own(scratch.as_str(), true)?;
    }
    Ok(())
}

/// The scratch dataset for deep verification in `pool`.
#[must_use]
pub fn scratch_dataset(pool: &str) -> Option<DatasetName> {
    DatasetName::parse(&format!("{pool}/zfs2cloud-verify-{}", std::process::id())).ok()
}

#[cfg(test)]
mod tests;
