//! Pure checks over a remote listing: is a backup complete and intact, and
//! which backups hang off which full (directly, or through other
//! incrementals, as [`Dependencies`] links them).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{ExportKind, RemoteBackup, RemoteFile, MANIFEST_FILE};
use crate::policy::Dependencies;

/// The state of one backup, as `verify` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "UPPERCASE")]
pub enum Health {
    /// Every chunk is there with its size (and SHA-256 where the backend
    /// reports one).
    Ok,
    /// A chunk differs from the manifest.
    Damaged(String),
    /// Something is missing.
    Incomplete(String),
}

/// Checks a backup's remote listing against its manifest, without
/// downloading anything. Where the backend reports no SHA-256, only sizes
/// are compared (`verify --deep` reads everything).
#[must_use]
pub fn check_listing(backup: &RemoteBackup) -> Health {
    if let Some(e) = &backup.manifest_error {
        return Health::Damaged(format!("{MANIFEST_FILE} is unreadable: {e}"));
    }
    let Some(manifest) = &backup.manifest else {
        return Health::Incomplete(format!(
            "{MANIFEST_FILE} is missing (an interrupted upload, or a backup made by the original tool)"
        ));
    };
    let files: BTreeMap<&str, &RemoteFile> =
        backup.files.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut missing = Vec::new();
    for chunk in &manifest.chunks {
        match files.get(chunk.name.as_str()) {
            None => missing.push(chunk.name.clone()),
            Some(f) if f.size != chunk.size => {
                return Health::Damaged(format!(
                    "chunk {} has {} bytes, the manifest says {}",
                    chunk.name, f.size, chunk.size
                ))
            }
            Some(f) if f.sha256.as_deref().is_some_and(|h| h != chunk.sha256) => {
                return Health::Damaged(format!(
                    "chunk {} has a different sha256 than the manifest",
                    chunk.name
                ))
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Health::Incomplete(format!("missing chunk(s): {}", missing.join(", ")));
    }
    Health::Ok
}

/// A chain: a full and the incrementals that depend on it, oldest first.
#[derive(Debug, Clone)]
pub struct Chain<'a> {
    /// The full.
    pub full: &'a RemoteBackup,
    /// Incrementals whose restore starts from the full: based on it, or on
    /// an incremental that is.
    pub incrementals: Vec<&'a RemoteBackup>,
}

/// Whether a backup can be a link of a chain: its manifest is there and
/// readable, so it is complete and names its base.
#[must_use]
pub fn linkable(backup: &RemoteBackup) -> bool {
    backup.manifest.is_some()
}

/// Groups backups into chains, as [`Dependencies`] links them through
/// backups with a readable manifest. Incrementals whose chain is broken (a backup it
/// needs is not on the remote, or has no readable manifest, or it has none
/// itself) are returned separately as orphans.
#[must_use]
pub fn chains(backups: &[RemoteBackup]) -> (Vec<Chain<'_>>, Vec<&RemoteBackup>) {
    chains_of(backups, &Dependencies::new(backups, &linkable))
}

/// [`chains`] from dependencies already worked out over `backups` with
/// [`linkable`], for a caller that needs them too.
#[must_use]
pub fn chains_of<'a>(
    backups: &'a [RemoteBackup],
    deps: &Dependencies<'a>,
) -> (Vec<Chain<'a>>, Vec<&'a RemoteBackup>) {
    let mut chains: Vec<Chain<'_>> = backups
        .iter()
        .filter(|b| b.kind == ExportKind::Full)
        .map(|full| Chain {
            full,
            incrementals: Vec::new(),
        })
        .collect();
    let mut orphans = Vec::new();
    for (i, b) in backups.iter().enumerate() {
        if b.kind != ExportKind::Incremental {
            continue;
        }
        let full = deps.chain(i).ok().and_then(|c| c.first().copied());
        match full.and_then(|f| chains.iter_mut().find(|c| c.full.dir_name == f.dir_name)) {
            Some(chain) => chain.incrementals.push(b),
            None => orphans.push(b),
        }
    }
    (chains, orphans)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::testing::remote_backup;

    /// A listed backup; an incremental is based on `20240101000000`.
    fn backup(
        dir: &str,
        chunks: &[(&str, u64, &str)],
        files: &[(&str, u64, Option<&str>)],
        manifest: bool,
    ) -> RemoteBackup {
        let base = (!dir.ends_with("-full")).then_some("20240101000000");
        remote_backup(dir, base, chunks, files, manifest)
    }

    #[test]
    fn listing_checks_name_the_chunk() {
        let ok = backup(
            "20240101000000-full",
            &[("c.0000", 3, "aa")],
            &[("c.0000", 3, Some("aa"))],
            true,
        );
        assert_eq!(check_listing(&ok), Health::Ok);
        let flipped = backup(
            "20240101000000-full",
            &[("c.0000", 3, "aa")],
            &[("c.0000", 3, Some("bb"))],
            true,
        );
        assert!(matches!(check_listing(&flipped), Health::Damaged(r) if r.contains("c.0000")));
        let short = backup(
            "20240101000000-full",
            &[("c.0000", 3, "aa")],
            &[("c.0000", 2, None)],
            true,
        );
        assert!(matches!(check_listing(&short), Health::Damaged(r) if r.contains("c.0000")));
        let gone = backup("20240101000000-full", &[("c.0000", 3, "aa")], &[], true);
        assert!(matches!(check_listing(&gone), Health::Incomplete(r) if r.contains("c.0000")));
        let mut corrupt = backup("20240101000000-full", &[], &[("c.0000", 3, None)], false);
        corrupt.manifest_error = Some("EOF while parsing".into());
        assert!(matches!(check_listing(&corrupt), Health::Damaged(r) if r.contains("unreadable")));
        assert!(
            corrupt.chunk_names().is_empty(),
            "never restored as manifest-less"
        );
        let no_manifest = backup("20240101000000-full", &[], &[("c.0000", 3, None)], false);
        assert!(
            matches!(check_listing(&no_manifest), Health::Incomplete(r) if r.contains("manifest.json"))
        );
        // No hash from the backend: sizes decide.
        let s3 = backup(
            "20240101000000-full",
            &[("c.0000", 3, "aa")],
            &[("c.0000", 3, None)],
            true,
        );
        assert_eq!(check_listing(&s3), Health::Ok);
    }

    #[test]
    fn legacy_chunks_are_ordered_by_numeric_suffix() {
        let b = backup(
            "20240101000000-full",
            &[],
            &[
                ("d@s.zfs.gpg.0010", 1, None),
                ("d@s.zfs.gpg.0002", 1, None),
                ("notes.txt", 1, None),
                ("d@s.zfs.gpg.0000", 1, None),
            ],
            false,
        );
        assert_eq!(
            b.chunk_names(),
            ["d@s.zfs.gpg.0000", "d@s.zfs.gpg.0002", "d@s.zfs.gpg.0010"]
        );
    }

    #[test]
    fn chains_group_incrementals_under_their_full() {
        let backups = vec![
            backup("20240101000000-full", &[], &[], true),
            backup("20240102000000", &[], &[], true),
            backup("20240103000000", &[], &[], true),
        ];
        let (chains, orphans) = chains(&backups);
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0].incrementals.len(), 2);
        assert!(orphans.is_empty());
    }

    #[test]
    fn an_incremental_on_an_intact_incremental_is_in_the_chain_and_no_orphan() {
        let on = |dir: &str, base: &str| remote_backup(dir, Some(base), &[], &[], true);
        let backups = vec![
            backup("20240101000000-full", &[], &[], true),
            on("20240102000000", "20240101000000"),
            on("20240103000000", "20240102000000"),
            // Its base 20240104000000 is gone; so is the chain after it.
            on("20240105000000", "20240104000000"),
            on("20240106000000", "20240105000000"),
            // Its base has no manifest: an interrupted upload.
            backup("20240107000000", &[], &[], false),
            on("20240108000000", "20240107000000"),
        ];
        let (chains, orphans) = chains(&backups);
        let dirs =
            |v: &[&RemoteBackup]| -> Vec<String> { v.iter().map(|b| b.dir_name.clone()).collect() };
        assert_eq!(
            dirs(&chains[0].incrementals),
            ["20240102000000", "20240103000000"]
        );
        assert_eq!(
            dirs(&orphans),
            [
                "20240105000000",
                "20240106000000",
                "20240107000000",
                "20240108000000"
            ]
        );
    }
}
