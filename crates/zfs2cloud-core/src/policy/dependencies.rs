//! What each remote backup needs in order to be restored: its base, its
//! base's base, down to a full. Restore replays the shortest such chain;
//! remote pruning keeps every backup a kept backup needs.
//!
//! An incremental names its base *snapshot* in its manifest. More than one
//! backup may hold that snapshot (a full and an incremental of the same
//! snapshot, after `export --full` of an exported one): any of them serves,
//! and the one with the shortest chain is taken.

use crate::model::{ExportKind, RemoteBackup};

/// How a backup links to the backups it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    /// A full: it needs nothing.
    Full,
    /// An incremental whose base is the backup at this index.
    On(usize),
    /// An incremental whose base snapshot has no usable backup with an
    /// intact chain (or which does not count as usable itself).
    Broken(String),
}

/// The dependencies among the backups of one dataset's remote directory.
#[derive(Debug)]
pub struct Dependencies<'a> {
    backups: &'a [RemoteBackup],
    links: Vec<Link>,
    depths: Vec<Option<usize>>,
}

impl<'a> Dependencies<'a> {
    /// Links every backup to its base. Only backups that `usable` accepts
    /// may be a base or be restored (restore takes those with chunks;
    /// pruning those that are complete).
    #[must_use]
    pub fn new(backups: &'a [RemoteBackup], usable: &dyn Fn(&RemoteBackup) -> bool) -> Self {
        let mut order: Vec<usize> = (0..backups.len()).collect();
        // Bases are always older than what is based on them, so walking
        // from the oldest, every base is settled before it is needed.
        order.sort_by(|a, b| {
            let (a, b) = (&backups[*a], &backups[*b]);
            a.snapshot
                .cmp(&b.snapshot)
                .then(a.dir_name.cmp(&b.dir_name))
        });
        let mut links = vec![Link::Full; backups.len()];
        let mut depths = vec![None; backups.len()];
        for i in order {
            let b = &backups[i];
            let (link, depth) = if !usable(b) {
                (Link::Broken(b.snapshot.clone()), None)
            } else if b.kind == ExportKind::Full {
                (Link::Full, Some(1))
            } else {
                Self::link_incremental(backups, &links, &depths, usable, b)
            };
            links[i] = link;
            depths[i] = depth;
        }
        Self {
            backups,
            links,
            depths,
        }
    }

    /// The base of incremental `b`: the backup of its base snapshot with
    /// the shortest intact chain. A backup without manifest (the original
    /// tool's) names no base: its base is the newest full before it.
    fn link_incremental(
        backups: &[RemoteBackup],
        links: &[Link],
        depths: &[Option<usize>],
        usable: &dyn Fn(&RemoteBackup) -> bool,
        b: &RemoteBackup,
    ) -> (Link, Option<usize>) {
        let named = b.base();
        let legacy_base = || {
            backups
                .iter()
                .filter(|c| c.kind == ExportKind::Full && c.snapshot < b.snapshot && usable(c))
                .map(|c| c.snapshot.as_str())
                .max()
        };
        let Some(base) = named.or_else(legacy_base) else {
            return (Link::Broken("(the full before it)".to_owned()), None);
        };
        let candidates: Vec<usize> = (0..backups.len())
            .filter(|&j| backups[j].snapshot == base && backups[j].snapshot < b.snapshot)
            .collect();
        let best = candidates
            .iter()
            .filter_map(|&j| depths[j].map(|d| (d, j)))
            .min();
        match best {
            Some((depth, j)) => (Link::On(j), Some(depth + 1)),
            // The base is there but its own chain is broken: name the
            // deepest missing link, the one to repair.
            None => match candidates.first().map(|&j| &links[j]) {
                Some(Link::Broken(deeper)) => (Link::Broken(deeper.clone()), None),
                _ => (Link::Broken(base.to_owned()), None),
            },
        }
    }

    /// The index of the backup in directory `dir_name`.
    #[must_use]
    pub fn index_of(&self, dir_name: &str) -> Option<usize> {
        self.backups.iter().position(|b| b.dir_name == dir_name)
    }

    /// The chain that restores backup `i`: a full first, `i` last.
    ///
    /// # Errors
    ///
    /// The snapshot of the first missing link: a base that has no usable
    /// backup whose own chain is intact.
    pub fn chain(&self, i: usize) -> Result<Vec<&'a RemoteBackup>, String> {
        let mut chain = vec![&self.backups[i]];
        let mut at = i;
        loop {
            match &self.links[at] {
                Link::Full => break,
                Link::On(j) => {
                    chain.push(&self.backups[*j]);
                    at = *j;
                }
                Link::Broken(base) => return Err(base.clone()),
            }
        }
        chain.reverse();
        Ok(chain)
    }

    /// How many backups restoring backup `i` replays; `None` if its chain
    /// is broken.
    #[must_use]
    pub fn depth(&self, i: usize) -> Option<usize> {
        self.depths[i]
    }

    /// The backup `i` is directly based on, if it is an intact incremental.
    #[must_use]
    pub fn base_of(&self, i: usize) -> Option<usize> {
        match self.links[i] {
            Link::On(j) => Some(j),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::testing::remote_backup;

    fn backup(dir: &str, base: Option<&str>) -> RemoteBackup {
        let snapshot = dir.trim_end_matches("-full");
        let chunk = format!("x@{snapshot}.zfs.gpg.0000");
        remote_backup(dir, base, &[(&chunk, 1, "")], &[(&chunk, 1, None)], true)
    }

    fn dirs(chain: &[&RemoteBackup]) -> Vec<String> {
        chain.iter().map(|b| b.dir_name.clone()).collect()
    }

    #[test]
    fn the_shortest_chain_through_a_snapshot_backed_up_twice_is_taken() {
        // 01 full; 02 on 01; 03 on 02 (a chain); 02 re-exported as a full;
        // 04 on 02: either backup of 02 serves, the full is shorter.
        let b = vec![
            backup("20240101000000-full", None),
            backup("20240102000000", Some("20240101000000")),
            backup("20240103000000", Some("20240102000000")),
            backup("20240102000000-full", None),
            backup("20240104000000", Some("20240102000000")),
        ];
        let deps = Dependencies::new(&b, &|_| true);
        assert_eq!(
            dirs(&deps.chain(2).unwrap()),
            ["20240102000000-full", "20240103000000"]
        );
        assert_eq!(deps.depth(4), Some(2));
        assert_eq!(deps.depth(1), Some(2));
        assert_eq!(deps.base_of(4), Some(3));
    }

    #[test]
    fn a_chain_breaks_at_the_first_missing_or_unusable_link() {
        let b = vec![
            backup("20240101000000-full", None),
            backup("20240102000000", Some("20240101000000")),
            backup("20240103000000", Some("20240102000000")),
            backup("20240104000000", Some("20240103000000")),
            backup("20240106000000", Some("20240105000000")),
        ];
        let deps = Dependencies::new(&b, &|x| x.snapshot != "20240102000000");
        assert_eq!(deps.chain(3).unwrap_err(), "20240102000000");
        assert_eq!(deps.depth(3), None);
        assert_eq!(deps.chain(4).unwrap_err(), "20240105000000");
        assert_eq!(dirs(&deps.chain(0).unwrap()), ["20240101000000-full"]);
    }

    #[test]
    fn a_base_is_never_newer_than_what_is_based_on_it() {
        // A manifest naming a newer snapshot as base (a damaged or foreign
        // manifest) must not make a cycle.
        let b = vec![
            backup("20240102000000-full", None),
            backup("20240101000000", Some("20240102000000")),
        ];
        let deps = Dependencies::new(&b, &|_| true);
        assert!(deps.chain(1).is_err());
    }
}
