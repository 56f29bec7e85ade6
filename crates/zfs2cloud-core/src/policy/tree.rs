//! Which datasets of a recursive job's tree are backed up, and where each
//! one's exports and backups live. Pure: it takes what `zfs list -r` said.
//!
//! Every member is its own chain in its own directory: the member at path
//! `alice/docs` below the job's dataset uses `<remote>/alice/docs` and
//! `<intermediate_basedir>/alice/docs`. The root uses the job's own
//! directories; the backup directories there are named by time, so they
//! never collide with a child's directory (a child named like a backup
//! directory is refused).

use crate::config::Config;
use crate::model::{
    backup_like_component, excluded_by, relative_to, remote_join, DatasetName, DatasetType,
    ExcludePattern, TreeEntry, SKIP_PROPERTY,
};

/// A dataset of the tree that is backed up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeMember {
    /// Its name.
    pub dataset: DatasetName,
    /// Its path below the job's dataset (`""` for the root).
    pub relative: String,
    /// File system or volume.
    pub kind: DatasetType,
}

/// A dataset of the tree that is not backed up, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeExclusion {
    /// Its name.
    pub dataset: DatasetName,
    /// Why, for the log and `status`.
    pub reason: String,
    /// Whether this is the user's choice (`exclude`, the skip property)
    /// rather than a dataset zfs2cloud cannot back up, which fails the job.
    pub chosen: bool,
}

/// The tree split into members (parents first) and exclusions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreePlan {
    /// Backed up, parents first.
    pub members: Vec<TreeMember>,
    /// Left out.
    pub excluded: Vec<TreeExclusion>,
}

/// Splits `entries` (the tree of `root`, parents first) by `patterns` and
/// the skip property. A dataset a pattern matches is left out with all its
/// descendants; the skip property is ZFS's to inherit. A dataset whose
/// path has a component named like a backup directory cannot get a
/// directory of its own and is left out as not chosen.
#[must_use]
pub fn plan_tree(
    root: &DatasetName,
    entries: &[TreeEntry],
    patterns: &[ExcludePattern],
) -> TreePlan {
    let mut plan = TreePlan::default();
    for entry in entries {
        let Some(relative) = relative_to(root, &entry.dataset) else {
            continue;
        };
        let exclude = |reason: String, chosen| TreeExclusion {
            dataset: entry.dataset.clone(),
            reason,
            chosen,
        };
        if let Some((pattern, at)) = excluded_by(patterns, root, &entry.dataset) {
            let reason = if at == entry.dataset {
                format!("matches exclude pattern {:?}", pattern.to_string())
            } else {
                format!("below excluded {at}")
            };
            plan.excluded.push(exclude(reason, true));
        } else if entry.skip {
            plan.excluded
                .push(exclude(format!("{SKIP_PROPERTY}=on"), true));
        } else if let Some(c) = backup_like_component(relative) {
            plan.excluded.push(exclude(
                format!(
                    "its name component {c:?} looks like a backup directory, so it cannot get \
                     a remote directory of its own; rename it or exclude it"
                ),
                false,
            ));
        } else {
            plan.members.push(TreeMember {
                dataset: entry.dataset.clone(),
                relative: relative.to_owned(),
                kind: entry.kind,
            });
        }
    }
    plan
}

/// The configuration of one member: the job's, with the member's dataset
/// and directories, and without the tree (it is one dataset).
#[must_use]
pub fn member_config(job: &Config, member: &TreeMember) -> Config {
    let mut config = job.clone();
    if !member.relative.is_empty() {
        config.remote = remote_join(&job.remote, &member.relative);
        config.intermediate_basedir = job.intermediate_basedir.join(&member.relative);
    }
    config.dataset = member.dataset.clone();
    config.recursive = false;
    config.exclude.clear();
    config
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(name: &str, skip: bool) -> TreeEntry {
        TreeEntry {
            dataset: DatasetName::parse(name).unwrap(),
            kind: DatasetType::Filesystem,
            skip,
        }
    }

    fn names(plan: &TreePlan) -> Vec<&str> {
        plan.members.iter().map(|m| m.dataset.as_str()).collect()
    }

    #[test]
    fn patterns_leave_out_a_dataset_and_its_descendants() {
        let root = DatasetName::parse("tank/home").unwrap();
        let entries = [
            entry("tank/home", false),
            entry("tank/home/alice", false),
            entry("tank/home/alice/cache", false),
            entry("tank/home/bob", false),
            entry("tank/home/tmp", false),
            entry("tank/home/tmp/x", false),
        ];
        let patterns = [
            ExcludePattern::parse("tmp").unwrap(),
            ExcludePattern::parse("*/cache").unwrap(),
        ];
        let plan = plan_tree(&root, &entries, &patterns);
        assert_eq!(
            names(&plan),
            ["tank/home", "tank/home/alice", "tank/home/bob"]
        );
        let reasons: Vec<(&str, &str)> = plan
            .excluded
            .iter()
            .map(|e| (e.dataset.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "tank/home/alice/cache",
                    "matches exclude pattern \"*/cache\""
                ),
                ("tank/home/tmp", "matches exclude pattern \"tmp\""),
                ("tank/home/tmp/x", "below excluded tank/home/tmp"),
            ]
        );
        assert_eq!(plan.members[1].relative, "alice");
    }

    #[test]
    fn the_skip_property_is_followed_as_zfs_reports_it() {
        let root = DatasetName::parse("tank").unwrap();
        // skip=on inherited by scratch/a, overridden to off on scratch/b.
        let entries = [
            entry("tank", false),
            entry("tank/scratch", true),
            entry("tank/scratch/a", true),
            entry("tank/scratch/b", false),
        ];
        let plan = plan_tree(&root, &entries, &[]);
        assert_eq!(names(&plan), ["tank", "tank/scratch/b"]);
        assert!(plan.excluded.iter().all(|e| e.chosen));
    }

    #[test]
    fn a_child_named_like_a_backup_directory_is_left_out_as_a_failure() {
        let root = DatasetName::parse("tank").unwrap();
        let entries = [entry("tank", false), entry("tank/20240101000000", false)];
        let plan = plan_tree(&root, &entries, &[]);
        assert_eq!(names(&plan), ["tank"]);
        assert!(!plan.excluded[0].chosen);
        assert!(plan.excluded[0]
            .reason
            .contains("looks like a backup directory"));
    }

    #[test]
    fn members_get_directories_below_the_jobs() {
        let text = "dataset = \"tank/home\"\nremote = \"r:b/home\"\n\
                    intermediate_basedir = \"/var/tmp/z\"\npassphrase_file = \"/p\"\n\
                    recursive = true\nexclude = [\"tmp\"]\n";
        let job = Config::parse(text, std::path::Path::new("/etc/z.toml")).unwrap();
        let child = TreeMember {
            dataset: DatasetName::parse("tank/home/alice/docs").unwrap(),
            relative: "alice/docs".into(),
            kind: DatasetType::Filesystem,
        };
        let config = member_config(&job, &child);
        assert_eq!(config.remote, "r:b/home/alice/docs");
        assert_eq!(
            config.intermediate_basedir,
            std::path::Path::new("/var/tmp/z/alice/docs")
        );
        assert!(!config.recursive && config.exclude.is_empty());
        let root = TreeMember {
            dataset: job.dataset.clone(),
            relative: String::new(),
            kind: DatasetType::Filesystem,
        };
        assert_eq!(member_config(&job, &root).remote, "r:b/home");
    }
}
