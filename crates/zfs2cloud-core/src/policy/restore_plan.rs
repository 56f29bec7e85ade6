//! Which backups a restore replays: the full and at most one incremental
//! (the original tool's since-last-full chains).

use super::Dependencies;
use crate::model::RemoteBackup;

/// Why no restore chain could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestorePlanError {
    /// No backup matches `--at`.
    #[error("no backup {0} on the remote")]
    NoSuchBackup(String),
    /// There are no (complete) backups at all.
    #[error("the remote holds no backup")]
    NoBackups,
    /// A backup in the chain of the one asked for is not on the remote.
    #[error("{snapshot} is based on {base}, which is not on the remote (or not whole)")]
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
/// original tool's `since_last_full`). Of the possible chains, the shortest
/// is taken ([`Dependencies`]).
///
/// # Errors
///
/// [`RestorePlanError`] if the point or its base is not on the remote.
pub fn plan_restore<'a>(
    backups: &'a [RemoteBackup],
    at: &RestorePoint,
) -> Result<Vec<&'a RemoteBackup>, RestorePlanError> {
    let usable = |b: &RemoteBackup| !b.chunk_names().is_empty();
    let deps = Dependencies::new(backups, &usable);
    let candidates: Vec<usize> = match at {
        RestorePoint::Snapshot(name) => (0..backups.len())
            .filter(|&i| usable(&backups[i]))
            .filter(|&i| &backups[i].snapshot == name || &backups[i].dir_name == name)
            .collect(),
        RestorePoint::Latest => {
            let any_manifest = backups.iter().any(RemoteBackup::has_manifest);
            let eligible = |b: &RemoteBackup| usable(b) && (b.has_manifest() || !any_manifest);
            let newest = backups
                .iter()
                .filter(|b| eligible(b))
                .map(|b| &b.snapshot)
                .max();
            (0..backups.len())
                .filter(|&i| eligible(&backups[i]) && Some(&backups[i].snapshot) == newest)
                .collect()
        }
    };
    // A snapshot backed up twice (a full and an incremental): the one with
    // the shortest intact chain, else the first, to name its missing base.
    let best = candidates
        .iter()
        .filter_map(|&i| deps.depth(i).map(|d| (d, i)))
        .min()
        .map(|(_, i)| i)
        .or_else(|| candidates.first().copied());
    let Some(index) = best else {
        return Err(match at {
            RestorePoint::Snapshot(name) => RestorePlanError::NoSuchBackup(name.clone()),
            RestorePoint::Latest => RestorePlanError::NoBackups,
        });
    };
    deps.chain(index)
        .map_err(|base| RestorePlanError::MissingBase {
            snapshot: backups[index].snapshot.clone(),
            base,
        })
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
