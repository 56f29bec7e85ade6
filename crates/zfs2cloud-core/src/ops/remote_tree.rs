//! The backups of a recursive job's tree on the remote, found by walking
//! the directories below the job's remote directory: each member has a
//! directory of its own at its path below the root (see
//! [`plan_tree`](crate::policy::plan_tree)), with its owner marker.

use crate::model::{backup_like_component, remote_join, DatasetName, RemoteBackup};
use crate::ops::catalog::{backups_among, keep_backups_of, CatalogError, Listing};
use crate::ops::upload::read_owner;
use crate::stages::Uploader;
use crate::util::error_chain;

/// How deep a tree is walked: far beyond any real pool's nesting, and a
/// bound on a remote that is not a tree at all.
const MAX_DEPTH: usize = 32;

/// One dataset of a tree on the remote.
#[derive(Debug, Clone)]
pub struct RemoteTreeMember {
    /// Its directory.
    pub dir: String,
    /// Its path below the tree's directory (`""` for the root).
    pub relative: String,
    /// The dataset its owner marker names, if it has a readable one.
    pub dataset: Option<DatasetName>,
    /// Its backups (of that dataset only, where the marker names one),
    /// oldest first.
    pub backups: Vec<RemoteBackup>,
}

/// Every directory at or below `remote` that holds backups, parents first
/// (each directory before the ones inside it).
///
/// # Errors
///
/// [`CatalogError`] if a directory cannot be listed.
pub fn find_tree(
    store: &dyn Uploader,
    remote: &str,
) -> Result<Vec<RemoteTreeMember>, CatalogError> {
    let mut out = Vec::new();
    walk(store, remote, "", 0, &mut out)?;
    Ok(out)
}

fn walk(
    store: &dyn Uploader,
    dir: &str,
    relative: &str,
    depth: usize,
    out: &mut Vec<RemoteTreeMember>,
) -> Result<(), CatalogError> {
    let marker = read_owner(store, dir).unwrap_or_else(|e| {
        log::warn!("{}", error_chain(&e));
        None
    });
    let dataset = marker.and_then(|m| DatasetName::parse(&m.dataset).ok());
    // One listing serves both: the backups here, and the children's
    // directories (every other name).
    let mut children = store.list_dirs(dir)?;
    let all = backups_among(store, dir, children.clone(), Listing::Sizes)?;
    let backups = match &dataset {
        Some(d) => keep_backups_of(dir, all, d),
        None => all,
    };
    if dataset.is_some() || !backups.is_empty() {
        out.push(RemoteTreeMember {
            dir: dir.to_owned(),
            relative: relative.to_owned(),
            dataset,
            backups,
        });
    }
    if depth >= MAX_DEPTH {
        log::warn!("not looking below {dir}: deeper than {MAX_DEPTH} levels");
        return Ok(());
    }
    children.sort();
    for child in children {
        if backup_like_component(&child).is_some() {
            continue;
        }
        let rel = if relative.is_empty() {
            child.clone()
        } else {
            format!("{relative}/{child}")
        };
        walk(store, &remote_join(dir, &child), &rel, depth + 1, out)?;
    }
    Ok(())
}
