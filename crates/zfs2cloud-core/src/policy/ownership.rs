//! One owner per remote directory: whether an upload or a file-mode sync
//! may write into a directory, and which of the backups listed there a
//! restore or verify of a dataset considers. Decided from what the remote
//! holds (the owner marker, the manifests, the heartbeat), as plain data.

use crate::model::{
    DatasetName, OwnerMarker, RemoteBackup, SnapshotName, HEARTBEAT_FILE, OWNER_FILE,
};

/// How many backup directories an error names before "…".
const DIRS_SHOWN: usize = 3;

/// A directory an upload of the dataset may write into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// The marker names the dataset (with its GUID, or one side has none).
    Owned,
    /// The marker names the dataset with another GUID: the dataset was
    /// re-created or restored since, or it is a namesake on another
    /// machine. Not refused (the name is the owner); worth a warning.
    OwnedWithOtherGuid {
        /// The marker's GUID.
        marker: String,
        /// The dataset's GUID now.
        dataset: String,
    },
    /// No marker, and no manifest names another dataset: the upload
    /// writes the marker, then its backup.
    Unclaimed,
}

/// Why the dataset must not write into a directory. The text completes
/// `refusing to upload/sync <dataset> to <remote>: that directory …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerConflict {
    /// The marker names another dataset.
    #[error("belongs to {owner} (its {OWNER_FILE} says so){}", renamed_note(*.same_guid))]
    Marker {
        /// The dataset the marker names.
        owner: String,
        /// Whether the marker has the GUID of the dataset being uploaded:
        /// it is the same dataset under a new name.
        same_guid: bool,
    },
    /// No marker, and manifests there name other datasets.
    #[error(
        "has no {OWNER_FILE} and holds backups of {} ({})",
        datasets.join(", "),
        shown(dirs)
    )]
    Manifests {
        /// The other datasets, sorted.
        datasets: Vec<String>,
        /// Their backup directories.
        dirs: Vec<String>,
    },
    /// File mode: the heartbeat names a snapshot of another dataset, whose
    /// files `rclone sync` would delete.
    #[error(
        "holds the files of another dataset (its {HEARTBEAT_FILE} names {snapshot}), which \
         rclone sync would delete"
    )]
    Heartbeat {
        /// The snapshot the heartbeat names.
        snapshot: String,
    },
    /// File mode: the directory holds intermediate-mode backups, which
    /// `rclone sync` would delete.
    #[error(
        "holds intermediate-mode backups of {owner} (its {OWNER_FILE} says so), which rclone \
         sync would delete"
    )]
    Backups {
        /// The dataset the marker names.
        owner: String,
    },
}

fn renamed_note(same_guid: bool) -> &'static str {
    if same_guid {
        " and has this dataset's GUID: a renamed dataset starts a new directory, zfs2cloud \
         does not follow renames"
    } else {
        ""
    }
}

fn shown(dirs: &[String]) -> String {
    let mut text = dirs
        .iter()
        .take(DIRS_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if dirs.len() > DIRS_SHOWN {
        text.push_str(", …");
    }
    text
}

/// Whether `dataset` (GUID `guid`, where zfs has one) may upload into a
/// directory that holds `marker` and, when there is no marker, `backups`.
///
/// The marker decides when there is one: its dataset is the owner. A
/// directory without one belongs to nobody yet, unless its manifests name
/// other datasets (backups of an older version, which wrote no marker).
/// Backups without a manifest say nothing and are no obstacle.
///
/// # Errors
///
/// [`OwnerConflict`] naming the other owner.
pub fn decide_ownership(
    marker: Option<&OwnerMarker>,
    backups: &[RemoteBackup],
    dataset: &DatasetName,
    guid: Option<&str>,
) -> Result<Ownership, OwnerConflict> {
    if let Some(marker) = marker {
        let same_guid = marker.guid.is_some() && marker.guid.as_deref() == guid;
        if marker.dataset != dataset.as_str() {
            return Err(OwnerConflict::Marker {
                owner: marker.dataset.clone(),
                same_guid,
            });
        }
        return Ok(match (&marker.guid, guid) {
            (Some(theirs), Some(ours)) if theirs != ours => Ownership::OwnedWithOtherGuid {
                marker: theirs.clone(),
                dataset: ours.to_owned(),
            },
            _ => Ownership::Owned,
        });
    }
    let foreign: Vec<(&str, &str)> = backups
        .iter()
        .filter_map(|b| Some((b.dir_name.as_str(), b.manifest.as_ref()?.dataset.as_str())))
        .filter(|(_, ds)| *ds != dataset.as_str())
        .collect();
    if foreign.is_empty() {
        return Ok(Ownership::Unclaimed);
    }
    let mut datasets: Vec<String> = foreign.iter().map(|(_, ds)| (*ds).to_owned()).collect();
    datasets.sort();
    datasets.dedup();
    Err(OwnerConflict::Manifests {
        datasets,
        dirs: foreign.iter().map(|(dir, _)| (*dir).to_owned()).collect(),
    })
}

/// Whether file mode may `rclone sync` `dataset` into a directory whose
/// heartbeat names `heartbeat_snapshot` and which holds `marker`. A sync
/// deletes whatever is not in the snapshot, so it may not go where another
/// dataset's files are, nor where intermediate-mode backups are (of any
/// dataset). An unparseable heartbeat snapshot names no dataset, and is
/// refused too: zfs2cloud cannot tell whose files those are.
///
/// # Errors
///
/// [`OwnerConflict::Backups`] or [`OwnerConflict::Heartbeat`].
pub fn check_sync_target(
    heartbeat_snapshot: Option<&str>,
    marker: Option<&OwnerMarker>,
    dataset: &DatasetName,
) -> Result<(), OwnerConflict> {
    if let Some(marker) = marker {
        return Err(OwnerConflict::Backups {
            owner: marker.dataset.clone(),
        });
    }
    match heartbeat_snapshot {
        Some(snapshot)
            if SnapshotName::parse(snapshot).map_or(true, |s| s.dataset() != dataset) =>
        {
            Err(OwnerConflict::Heartbeat {
                snapshot: snapshot.to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// A listed backup that a restore or verify of one dataset leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedBackup {
    /// Its directory on the remote.
    pub dir_name: String,
    /// The dataset it belongs to, as far as the remote says.
    pub dataset: String,
}

/// The backups of `dataset` among `backups`, and those left out. A backup
/// with a manifest is the dataset's if the manifest names it. One without
/// (the original tool's, an interrupted upload, an unreadable manifest) is
/// kept unless its chunk files are named for another dataset: the chunk
/// names start with the dataset's name, `/` written as `-`, which is
/// ambiguous (`tank/a-b`, `tank/a/b`), so they can only rule one out.
#[must_use]
pub fn backups_of(
    backups: Vec<RemoteBackup>,
    dataset: &DatasetName,
) -> (Vec<RemoteBackup>, Vec<SkippedBackup>) {
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    for backup in backups {
        match other_dataset(&backup, dataset) {
            Some(other) => skipped.push(SkippedBackup {
                dir_name: backup.dir_name,
                dataset: other,
            }),
            None => kept.push(backup),
        }
    }
    (kept, skipped)
}

/// The dataset `backup` belongs to, if it is certainly not `dataset`.
fn other_dataset(backup: &RemoteBackup, dataset: &DatasetName) -> Option<String> {
    if let Some(manifest) = &backup.manifest {
        return (manifest.dataset != dataset.as_str()).then(|| manifest.dataset.clone());
    }
    let ours = dataset.dashed();
    let prefixes: Vec<&str> = backup
        .files
        .iter()
        .filter(|f| f.name.contains(".zfs.gpg."))
        .filter_map(|f| f.name.split_once('@').map(|(prefix, _)| prefix))
        .collect();
    let theirs = prefixes.first()?;
    (!prefixes.contains(&ours.as_str())).then(|| format!("{theirs} (from its chunk names)"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::testing::remote_backup;

    fn ds(name: &str) -> DatasetName {
        DatasetName::parse(name).unwrap()
    }

    fn marker(dataset: &str, guid: Option<&str>) -> OwnerMarker {
        OwnerMarker::new(&ds(dataset), guid, "2024-01-01T00:00:00Z")
    }

    /// A backup of `dataset` in `dir`, with or without its manifest.
    fn backup_of(dataset: &str, dir: &str, manifest: bool) -> RemoteBackup {
        let snap = dir.trim_end_matches("-full");
        let chunk = format!("{}@{snap}.zfs.gpg.0000", ds(dataset).dashed());
        let mut b = remote_backup(
            dir,
            None,
            &[(&chunk, 1, "")],
            &[(&chunk, 1, None)],
            manifest,
        );
        if let Some(m) = &mut b.manifest {
            m.dataset = dataset.to_owned();
        }
        b
    }

    #[test]
    fn the_marker_names_the_owner() {
        let ours = ds("tank/a");
        let m = marker("tank/a", Some("11"));
        assert_eq!(
            decide_ownership(Some(&m), &[], &ours, Some("11")),
            Ok(Ownership::Owned)
        );
        // One side without a GUID (zfs had none, or an older marker).
        assert_eq!(
            decide_ownership(Some(&m), &[], &ours, None),
            Ok(Ownership::Owned)
        );
        assert_eq!(
            decide_ownership(Some(&marker("tank/a", None)), &[], &ours, Some("11")),
            Ok(Ownership::Owned)
        );
        assert_eq!(
            decide_ownership(Some(&m), &[], &ours, Some("12")),
            Ok(Ownership::OwnedWithOtherGuid {
                marker: "11".into(),
                dataset: "12".into()
            })
        );
    }

    #[test]
    fn a_marker_naming_another_dataset_refuses_whatever_the_manifests_say() {
        let ours = ds("tank/a");
        let backups = [backup_of("tank/a", "20240101000000-full", true)];
        let refused = decide_ownership(
            Some(&marker("tank/b", Some("2"))),
            &backups,
            &ours,
            Some("1"),
        );
        assert_eq!(
            refused,
            Err(OwnerConflict::Marker {
                owner: "tank/b".into(),
                same_guid: false
            })
        );
        let text = refused.unwrap_err().to_string();
        assert_eq!(text, "belongs to tank/b (its zfs2cloud-owner.json says so)");
        // The same GUID under another name: renamed, and still refused.
        let renamed = decide_ownership(Some(&marker("tank/old", Some("1"))), &[], &ours, Some("1"));
        assert!(renamed
            .unwrap_err()
            .to_string()
            .contains("does not follow renames"),);
    }

    #[test]
    fn without_a_marker_the_manifests_decide() {
        let ours = ds("tank/a");
        assert_eq!(
            decide_ownership(None, &[], &ours, Some("1")),
            Ok(Ownership::Unclaimed)
        );
        let own = [
            backup_of("tank/a", "20240101000000-full", true),
            // No manifest: the original tool's, or interrupted; says nothing.
            backup_of("tank/b", "20240102000000", false),
        ];
        assert_eq!(
            decide_ownership(None, &own, &ours, Some("1")),
            Ok(Ownership::Unclaimed)
        );
        let mixed = [
            backup_of("tank/a", "20240101000000-full", true),
            backup_of("tank/c", "20240102000000-full", true),
            backup_of("tank/b", "20240103000000-full", true),
            backup_of("tank/b", "20240104000000", true),
            backup_of("tank/b", "20240105000000", true),
        ];
        let refused = decide_ownership(None, &mixed, &ours, Some("1")).unwrap_err();
        assert_eq!(
            refused,
            OwnerConflict::Manifests {
                datasets: vec!["tank/b".into(), "tank/c".into()],
                dirs: vec![
                    "20240102000000-full".into(),
                    "20240103000000-full".into(),
                    "20240104000000".into(),
                    "20240105000000".into()
                ],
            }
        );
        assert_eq!(
            refused.to_string(),
            "has no zfs2cloud-owner.json and holds backups of tank/b, tank/c \
             (20240102000000-full, 20240103000000-full, 20240104000000, …)"
        );
    }

    #[test]
    fn file_mode_syncs_only_over_its_own_files() {
        let ours = ds("tank/c");
        assert_eq!(check_sync_target(None, None, &ours), Ok(()));
        assert_eq!(
            check_sync_target(Some("tank/c@20240101000000"), None, &ours),
            Ok(())
        );
        for other in [
            "tank/d@20240101000000",
            "tank/c/x@20240101000000",
            "garbage",
        ] {
            assert_eq!(
                check_sync_target(Some(other), None, &ours),
                Err(OwnerConflict::Heartbeat {
                    snapshot: other.into()
                }),
                "{other}"
            );
        }
        // Intermediate-mode backups, even of this dataset, would be deleted.
        for owner in ["tank/c", "tank/a"] {
            let refused = check_sync_target(None, Some(&marker(owner, None)), &ours).unwrap_err();
            assert!(
                refused.to_string().contains("rclone sync would delete"),
                "{refused}"
            );
        }
    }

    #[test]
    fn latest_of_one_dataset_is_never_a_newer_backup_of_another() {
        use crate::policy::{plan_restore, RestorePoint};
        // tank/b's backups went into tank/a's directory (an older version
        // wrote no marker); its full is the newest there.
        let backups = vec![
            backup_of("tank/a", "20240101000000-full", true),
            backup_of("tank/b", "20240102000000-full", true),
        ];
        let (kept, _) = backups_of(backups, &ds("tank/a"));
        let chain = plan_restore(&kept, &RestorePoint::Latest).unwrap();
        assert_eq!(chain[0].dir_name, "20240101000000-full");
        let at = RestorePoint::Snapshot("20240102000000".into());
        assert!(plan_restore(&kept, &at).is_err());
    }

    #[test]
    fn a_restore_of_one_dataset_leaves_the_others_out() {
        let backups = vec![
            backup_of("tank/a", "20240101000000-full", true),
            backup_of("tank/b", "20240101000000-full", true),
            backup_of("tank/a", "20240102000000", true),
            // The original tool's: its chunk names tell.
            backup_of("tank/a", "20231201000000-full", false),
            backup_of("tank/b", "20231202000000-full", false),
            // Nothing tells: kept, as before.
            remote_backup("20231203000000", None, &[], &[], false),
        ];
        let (kept, skipped) = backups_of(backups, &ds("tank/a"));
        let kept: Vec<&str> = kept.iter().map(|b| b.dir_name.as_str()).collect();
        assert_eq!(
            kept,
            [
                "20240101000000-full",
                "20240102000000",
                "20231201000000-full",
                "20231203000000"
            ]
        );
        assert_eq!(
            skipped,
            [
                SkippedBackup {
                    dir_name: "20240101000000-full".into(),
                    dataset: "tank/b".into()
                },
                SkippedBackup {
                    dir_name: "20231202000000-full".into(),
                    dataset: "tank-b (from its chunk names)".into()
                },
            ]
        );
    }
}
