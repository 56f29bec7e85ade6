//! A tree of datasets backed up by one recursive job: what `zfs list -r`
//! says about each dataset, the `exclude` patterns, and where each member's
//! exports and backups live (its path below the root, under the root's
//! directories).

use std::fmt;

use serde::Serialize;

use super::names::DatasetName;
use super::names::SnapTime;

/// The user property that leaves a dataset (and, by ZFS inheritance, its
/// descendants) out of a recursive job.
pub const SKIP_PROPERTY: &str = "zfs2cloud:skip";

/// File system or volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetType {
    /// A file system.
    Filesystem,
    /// A zvol: a block device, never mounted.
    Volume,
}

impl DatasetType {
    /// From zfs's `type` column.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "filesystem" => Some(Self::Filesystem),
            "volume" => Some(Self::Volume),
            _ => None,
        }
    }
}

/// One dataset of a tree, as `zfs list -r` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Its name.
    pub dataset: DatasetName,
    /// File system or volume.
    pub kind: DatasetType,
    /// Its [`SKIP_PROPERTY`] is `on` (set here or inherited).
    pub skip: bool,
}

/// An `exclude` pattern: a dataset name, either in full (`tank/home/tmp`)
/// or below the job's dataset (`tmp`, `*/cache`), where `*` stands for any
/// run of characters within one path component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ExcludePattern(String);

/// Why a pattern is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a dataset pattern: {1}")]
pub struct PatternError(String, &'static str);

impl ExcludePattern {
    /// Checks `text`: not empty, no `@` (snapshots are not excluded, datasets
    /// are), no empty path component.
    ///
    /// # Errors
    ///
    /// [`PatternError`] saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let bad = |why| Err(PatternError(text.to_owned(), why));
        if text.is_empty() {
            return bad("it is empty");
        }
        if text.contains('@') || text.contains('#') {
            return bad("it names a snapshot or bookmark; exclude datasets");
        }
        if text.split('/').any(str::is_empty) {
            return bad("it has an empty path component (a leading, trailing or double '/')");
        }
        Ok(Self(text.to_owned()))
    }

    /// Whether the pattern names `dataset`, a dataset `relative` below the
    /// job's root (`""` for the root itself).
    #[must_use]
    pub fn matches(&self, dataset: &DatasetName, relative: &str) -> bool {
        glob(self.0.as_bytes(), dataset.as_str().as_bytes())
            || (!relative.is_empty() && glob(self.0.as_bytes(), relative.as_bytes()))
    }
}

impl fmt::Display for ExcludePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*` matches any run of bytes but `/`; everything else matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len())
            .take_while(|&i| i == 0 || text[i - 1] != b'/')
            .any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// The path of `dataset` below `root`: `""` for the root, `alice/docs` for
/// `root/alice/docs`; `None` if it is not in the tree.
#[must_use]
pub fn relative_to<'a>(root: &DatasetName, dataset: &'a DatasetName) -> Option<&'a str> {
    let rest = dataset.as_str().strip_prefix(root.as_str())?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix('/')
}

/// The first of `patterns` that leaves `dataset` out of `root`'s tree,
/// with the dataset it matched: `dataset` itself or, since excluding a
/// dataset excludes everything below it, its outermost matching ancestor
/// in the tree. `None` if no pattern does, or `dataset` is not in the tree.
#[must_use]
pub fn excluded_by<'p>(
    patterns: &'p [ExcludePattern],
    root: &DatasetName,
    dataset: &DatasetName,
) -> Option<(&'p ExcludePattern, DatasetName)> {
    let relative = relative_to(root, dataset)?;
    let mut prefixes = vec![""];
    prefixes.extend(
        relative
            .match_indices('/')
            .map(|(i, _)| &relative[..i])
            .chain((!relative.is_empty()).then_some(relative)),
    );
    prefixes.into_iter().find_map(|rel| {
        let name = if rel.is_empty() {
            root.clone()
        } else {
            DatasetName::parse(&format!("{root}/{rel}")).ok()?
        };
        let pattern = patterns.iter().find(|p| p.matches(&name, rel))?;
        Some((pattern, name))
    })
}

/// A component of `relative` that the remote layout would take for a
/// backup directory (`20240101000000`, `20240101000000-full`): such a
/// dataset cannot get a directory of its own under its parent's.
#[must_use]
pub fn backup_like_component(relative: &str) -> Option<&str> {
    relative.split('/').find(|c| {
        let snap = c.strip_suffix("-full").unwrap_or(c);
        SnapTime::parse(snap).is_some() || c.ends_with(super::layout::PARTIAL_SUFFIX)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ds(name: &str) -> DatasetName {
        DatasetName::parse(name).unwrap()
    }

    #[test]
    fn a_pattern_matches_the_full_name_or_the_path_below_the_root() {
        let p = ExcludePattern::parse("tmp").unwrap();
        assert!(p.matches(&ds("tank/home/tmp"), "tmp"));
        assert!(!p.matches(&ds("tank/home/alice/tmp"), "alice/tmp"));
        let full = ExcludePattern::parse("tank/home/tmp").unwrap();
        assert!(full.matches(&ds("tank/home/tmp"), "tmp"));
        let star = ExcludePattern::parse("*/cache").unwrap();
        assert!(star.matches(&ds("tank/home/alice/cache"), "alice/cache"));
        assert!(!star.matches(&ds("tank/home/alice/x/cache"), "alice/x/cache"));
        assert!(!star.matches(&ds("tank/home"), ""));
        let prefix = ExcludePattern::parse("scratch*").unwrap();
        assert!(prefix.matches(&ds("tank/home/scratch-1"), "scratch-1"));
        assert!(!prefix.matches(&ds("tank/home/scratch/x"), "scratch/x"));
    }

    #[test]
    fn a_pattern_on_an_ancestor_excludes_the_descendants() {
        let root = ds("tank/home");
        let patterns = [
            ExcludePattern::parse("alice").unwrap(),
            ExcludePattern::parse("*/cache").unwrap(),
        ];
        let by = |name: &str| {
            excluded_by(&patterns, &root, &ds(name)).map(|(p, at)| (p.to_string(), at.to_string()))
        };
        assert_eq!(
            by("tank/home/alice/docs/x"),
            Some(("alice".into(), "tank/home/alice".into()))
        );
        assert_eq!(
            by("tank/home/bob/cache/y"),
            Some(("*/cache".into(), "tank/home/bob/cache".into()))
        );
        assert_eq!(by("tank/home/bob"), None);
        assert_eq!(by("tank/other"), None);
        let everything = [ExcludePattern::parse("tank/home").unwrap()];
        assert!(excluded_by(&everything, &root, &ds("tank/home/bob")).is_some());
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for bad in ["", "tank@snap", "a//b", "/tank", "tank/"] {
            assert!(ExcludePattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relative_paths_stay_inside_the_tree() {
        let root = ds("tank/home");
        assert_eq!(relative_to(&root, &ds("tank/home")), Some(""));
        assert_eq!(relative_to(&root, &ds("tank/home/a/b")), Some("a/b"));
        assert_eq!(relative_to(&root, &ds("tank/homeless")), None);
        assert_eq!(relative_to(&root, &ds("tank")), None);
    }

    #[test]
    fn names_that_look_like_backup_directories_are_found() {
        assert_eq!(backup_like_component("alice/docs"), None);
        assert_eq!(
            backup_like_component("alice/20240101000000"),
            Some("20240101000000")
        );
        assert!(backup_like_component("20240101000000-full").is_some());
        assert!(backup_like_component("x.partial").is_some());
    }
}
