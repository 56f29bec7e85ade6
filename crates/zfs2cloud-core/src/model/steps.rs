//! Step names of a backup sequence, including the original tool's names.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Which kind of backup a configuration makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `zfs send | gpg | split` files uploaded with rclone.
    #[default]
    Intermediate,
    /// The snapshot's files, synced with rclone.
    File,
}

/// One step of a backup sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Take the run lock.
    Lock,
    /// Release the run lock.
    Unlock,
    /// `pre_snapshot` hook, `zfs snapshot`, `post_snapshot` hook.
    Snapshot,
    /// Export the newest snapshot (intermediate mode).
    Export,
    /// Upload an export (intermediate mode).
    Upload,
    /// Delete old local exports.
    PruneIntermediates,
    /// Destroy zfs2cloud's own old snapshots.
    PruneSnapshots,
    /// Delete the backups on the remote that `[retention.remote]` lets go
    /// (never in a default sequence: remote pruning is opt-in).
    PruneRemote,
    /// Mount the newest snapshot read-only (file mode).
    MountSnapshot,
    /// `rclone sync` the mounted snapshot (file mode).
    UploadSnapshotFiles,
    /// Unmount the snapshot (file mode).
    UmountSnapshot,
    /// Check the uploaded backups.
    Verify,
    /// Run a user script (a path; `./x` is relative to the config file).
    Script(PathBuf),
}

/// Every built-in step with its canonical name and the aliases it accepts
/// (the original Python tool's command names among them). Parsing and
/// display both read this one table.
const BUILTIN_STEPS: &[(Step, &str, &[&str])] = &[
    (Step::Lock, "lock", &[]),
    (Step::Unlock, "unlock", &[]),
    (Step::Snapshot, "snapshot", &[]),
    (Step::Export, "export", &["export-intermediate"]),
    (Step::Upload, "upload", &["upload-intermediate-to-remote"]),
    (
        Step::PruneIntermediates,
        "prune-intermediates",
        &["prune-intermediate"],
    ),
    (Step::PruneSnapshots, "prune-snapshots", &[]),
    (Step::PruneRemote, "prune-remote", &[]),
    (Step::MountSnapshot, "mount-snapshot", &[]),
    (
        Step::UploadSnapshotFiles,
        "upload-snapshot-files",
        &["upload-snapshot-files-to-remote"],
    ),
    (
        Step::UmountSnapshot,
        "umount-snapshot",
        &["unmount-snapshot"],
    ),
    (Step::Verify, "verify", &["verify-checksums"]),
];

/// An unknown step name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown step {name:?}; valid steps are {}, or a path to a script (containing '/')",
    valid_step_list()
)]
pub struct UnknownStep {
    /// The name that was given.
    pub name: String,
}

fn valid_step_list() -> String {
    BUILTIN_STEPS
        .iter()
        .map(|(_, n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Step {
    /// Parses a step name or alias. A value containing `/` is a script path,
    /// resolved against `base_dir` when relative.
    ///
    /// # Errors
    ///
    /// [`UnknownStep`] for anything else.
    pub fn parse(name: &str, base_dir: &Path) -> Result<Self, UnknownStep> {
        if name.contains('/') {
            return Ok(Self::Script(base_dir.join(name)));
        }
        BUILTIN_STEPS
            .iter()
            .find(|(_, n, aliases)| *n == name || aliases.contains(&name))
            .map(|(step, _, _)| step.clone())
            .ok_or_else(|| UnknownStep {
                name: name.to_owned(),
            })
    }

    /// The default sequence of a mode.
    #[must_use]
    pub fn default_sequence(mode: Mode) -> Vec<Self> {
        match mode {
            Mode::Intermediate => vec![
                Self::Lock,
                Self::Snapshot,
                Self::Export,
                Self::Upload,
                Self::PruneIntermediates,
                Self::PruneSnapshots,
                Self::Unlock,
            ],
            Mode::File => vec![
                Self::Lock,
                Self::Snapshot,
                Self::MountSnapshot,
                Self::UploadSnapshotFiles,
                Self::UmountSnapshot,
                Self::PruneSnapshots,
                Self::Unlock,
            ],
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Self::Script(p) = self {
            return write!(f, "{}", p.display());
        }
        let name = BUILTIN_STEPS
            .iter()
            .find(|(step, _, _)| step == self)
            .map_or("?", |(_, n, _)| n);
        f.write_str(name)
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn original_names_are_aliases() {
        let base = Path::new("/etc/zfs2cloud");
        assert_eq!(
            Step::parse("export-intermediate", base).unwrap(),
            Step::Export
        );
        assert_eq!(
            Step::parse("upload-intermediate-to-remote", base).unwrap(),
            Step::Upload
        );
        assert_eq!(
            Step::parse("upload-snapshot-files-to-remote", base).unwrap(),
            Step::UploadSnapshotFiles
        );
        assert_eq!(
            Step::parse("prune-intermediates", base).unwrap(),
            Step::PruneIntermediates
        );
    }

    #[test]
    fn every_canonical_name_round_trips() {
        for (_, name, _) in BUILTIN_STEPS {
            let step = Step::parse(name, Path::new("/")).unwrap();
            assert_eq!(step.to_string(), *name);
        }
    }

    #[test]
    fn scripts_are_relative_to_the_config_dir() {
        assert_eq!(
            Step::parse("./notify.sh", Path::new("/etc/z")).unwrap(),
            Step::Script(PathBuf::from("/etc/z/./notify.sh"))
        );
        assert_eq!(
            Step::parse("/usr/local/bin/x", Path::new("/etc/z")).unwrap(),
            Step::Script(PathBuf::from("/usr/local/bin/x"))
        );
    }

    #[test]
    fn unknown_steps_list_the_valid_ones() {
        let err = Step::parse("exprot", Path::new("/")).unwrap_err();
        assert!(
            err.to_string().contains("export-intermediate") || err.to_string().contains("export")
        );
        assert!(err.to_string().contains("\"exprot\""));
    }
}
