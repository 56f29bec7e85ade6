//! Which backups a restore replays: the full and at most one incremental
//! (the original tool's since-last-full chains).

use crate::model::{ExportKind, RemoteBackup};

/// Why no restore chain could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestorePlanError {
    /// No backup matches `--at`.
    #[error("no backup {0} on the remote")]
    NoSuchBackup(String),
    /// There are no (complete) backups at all.
    #[error("the remote holds no backup")]
    NoBackups,
    /// The full an incremental is based on is not on the remote.
    #[error("{snapshot} is based on the full {base}, which is not on the remote")]
    MissingBase {
        /// The incremental.
        snapshot: String,
        /// Its base.
        base: String,
    },
}

/// Which backup to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestorePoint {
    /// The newest complete backup.
    Latest,
    /// The backup of this snapshot (part after `@`).
    Snapshot(String),
}

/// The backups to receive, full first. Backups with a manifest are
/// preferred; backups without one (the original tool's) are used only when
/// named explicitly or when the remote has no manifest at all. An
/// incremental without manifest is based on the newest full before it (the
/// original tool's `since_last_full`).
///
/// # Errors
///
/// [`RestorePlanError`] if the point or its base is not on the remote.
pub fn plan_restore<'a>(
    backups: &'a [RemoteBackup],
    at: &RestorePoint,
) -> Result<Vec<&'a RemoteBackup>, RestorePlanError> {
    let usable = |b: &&RemoteBackup| !b.chunk_names().is_empty();
    let target = match at {
        RestorePoint::Snapshot(name) => backups
            .iter()
            .filter(usable)
            .find(|b| &b.snapshot == name || &b.dir_name == name)
            .ok_or_else(|| RestorePlanError::NoSuchBackup(name.clone()))?,
        RestorePoint::Latest => {
            let any_manifest = backups.iter().any(RemoteBackup::has_manifest);
            backups
                .iter()
                .filter(usable)
                .filter(|b| b.has_manifest() || !any_manifest)
                .max_by(|a, b| a.snapshot.cmp(&b.snapshot))
                .ok_or(RestorePlanError::NoBackups)?
        }
    };
    if target.kind == ExportKind::Full {
        return Ok(vec![target]);
    }
    let base = match target.base() {
        Some(base) => backups
            .iter()
            .find(|b| b.kind == ExportKind::Full && b.snapshot == base),
        None => backups
            .iter()
            .filter(|b| b.kind == ExportKind::Full && b.snapshot < target.snapshot)
            .max_by(|a, b| a.snapshot.cmp(&b.snapshot)),
    };
    match base.filter(usable) {
        Some(full) => Ok(vec![full, target]),
        None => Err(RestorePlanError::MissingBase {
            snapshot: target.snapshot.clone(),
            base: target.base().unwrap_or("(the full before it)").to_owned(),
        }),
    }
}

/// The snapshot a restore of a whole tree restores every member at: `at`
/// itself, or for `"latest"` the root's newest complete backup (the tree
/// was snapshotted at one instant, so the same name is every member's).
///
/// # Errors
///
/// [`RestorePlanError::NoBackups`] if the root has no complete backup.
pub fn tree_restore_point(root: &[RemoteBackup], at: &str) -> Result<String, RestorePlanError> {
    if at != "latest" {
        return Ok(at.to_owned());
    }
    root.iter()
        .filter(|b| b.has_manifest())
        .map(|b| b.snapshot.clone())
        .max()
        .ok_or(RestorePlanError::NoBackups)
}

/// What one member of a tree restores for the tree's point `at`: its
/// backup of `at`, else its newest complete one before `at` (a member that
/// failed that night); `None` if it has none that old (added later).
#[must_use]
pub fn member_restore_point(backups: &[RemoteBackup], at: &str) -> Option<RestorePoint> {
    backups
        .iter()
        .filter(|b| b.has_manifest() && b.snapshot.as_str() <= at)
        .map(|b| b.snapshot.clone())
        .max()
        .map(RestorePoint::Snapshot)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::testing::remote_backup;

    /// A listed backup of one chunk.
    fn backup(dir: &str, base: Option<&str>, manifest: bool) -> RemoteBackup {
        let snapshot = dir.trim_end_matches("-full");
        let chunk = format!("x@{snapshot}.zfs.gpg.0000");
        remote_backup(
            dir,
            base,
            &[(&chunk, 1, "")],
            &[(&chunk, 1, None)],
            manifest,
        )
    }

    fn dirs(chain: &[&RemoteBackup]) -> Vec<String> {
        chain.iter().map(|b| b.dir_name.clone()).collect()
    }

    #[test]
    fn the_chain_is_the_full_plus_at_most_one_incremental() {
        let b = vec![
            backup("20240101000000-full", None, true),
            backup("20240102000000", Some("20240101000000"), true),
            backup("20240103000000", Some("20240101000000"), true),
        ];
        let at = RestorePoint::Snapshot("20240103000000".into());
        assert_eq!(
            dirs(&plan_restore(&b, &at).unwrap()),
            ["20240101000000-full", "20240103000000"]
        );
        assert_eq!(
            dirs(&plan_restore(&b, &RestorePoint::Latest).unwrap()),
            ["20240101000000-full", "20240103000000"]
        );
        let at = RestorePoint::Snapshot("20240101000000".into());
        assert_eq!(
            dirs(&plan_restore(&b, &at).unwrap()),
            ["20240101000000-full"]
        );
    }

    #[test]
    fn latest_skips_incomplete_backups_and_a_missing_base_is_an_error() {
        let b = vec![
            backup("20240101000000-full", None, true),
            backup("20240102000000", Some("20240101000000"), true),
            backup("20240103000000", None, false), // interrupted upload
        ];
        assert_eq!(
            dirs(&plan_restore(&b, &RestorePoint::Latest).unwrap()),
            ["20240101000000-full", "20240102000000"]
        );
        let orphan = vec![backup("20240102000000", Some("20240101000000"), true)];
        assert!(matches!(
            plan_restore(&orphan, &RestorePoint::Latest),
            Err(RestorePlanError::MissingBase { .. })
        ));
    }

    #[test]
    fn original_tool_backups_chain_to_the_last_full_before_them() {
        let b = vec![
            backup("20231201000000-full", None, false),
            backup("20240101000000-full", None, false),
            backup("20240103000000", None, false),
        ];
        assert_eq!(
            dirs(&plan_restore(&b, &RestorePoint::Latest).unwrap()),
            ["20240101000000-full", "20240103000000"]
        );
    }

    #[test]
    fn a_tree_restores_every_member_at_the_roots_point_or_just_before() {
        let b = |snap: &str| {
            crate::model::testing::remote_backup(&format!("{snap}-full"), None, &[], &[], true)
        };
        let root = [b("20240101000000"), b("20240102000000")];
        assert_eq!(
            tree_restore_point(&root, "latest").unwrap(),
            "20240102000000"
        );
        assert_eq!(
            tree_restore_point(&root, "20240101000000").unwrap(),
            "20240101000000"
        );
        assert_eq!(
            tree_restore_point(&[], "latest"),
            Err(RestorePlanError::NoBackups)
        );
        // A member that failed on the 2nd restores the 1st; one added on
        // the 3rd has nothing to restore.
        assert_eq!(
            member_restore_point(&[b("20240101000000")], "20240102000000"),
            Some(RestorePoint::Snapshot("20240101000000".into()))
        );
        assert_eq!(
            member_restore_point(&[b("20240103000000")], "20240102000000"),
            None
        );
    }
}
