//! What is on a local-directory remote: its backup directories, read from
//! their manifests, and the restore chain of each. Read from the files
//! themselves, not from zfs2cloud's output, so the benchmark checks what
//! zfs2cloud did rather than what it says.

use std::path::Path;

use anyhow::{bail, Context as _};
use serde::Deserialize;

use crate::sampler::tree_bytes;

/// The fields of `manifest.json` the benchmark needs (the format is
/// zfs2cloud-core's `Manifest`; the benchmark does not link the core, so
/// that it can measure any built binary).
#[derive(Debug, Deserialize)]
struct Manifest {
    snapshot: String,
    kind: String,
    base: Option<String>,
    level: Option<u32>,
}

/// One backup directory on the remote.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The directory's name (`20250101030000-full`, `20250102030000`).
    pub dir: String,
    /// The snapshot (part after `@`).
    pub snapshot: String,
    pub full: bool,
    /// The base snapshot of an incremental.
    pub base: Option<String>,
    pub level: Option<u32>,
    /// All its files: chunks, `SHA256SUMS`, `manifest.json`.
    pub bytes: u64,
}

/// Every backup directory under `remote`. A directory without a manifest
/// is an unfinished upload, which a finished nightly run never leaves, so
/// it is an error; so is anything unreadable.
pub fn list(remote: &Path) -> anyhow::Result<Vec<Backup>> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(remote).with_context(|| format!("read_dir {}", remote.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("read_dir {}", remote.display()))?;
        if entry.file_type().context("file type")?.is_dir() {
            out.push(read(&entry.path())?);
        }
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(out)
}

fn read(dir: &Path) -> anyhow::Result<Backup> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} has no readable manifest.json: an incomplete backup",
            dir.display()
        )
    })?;
    let m: Manifest =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    Ok(Backup {
        dir: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        snapshot: m.snapshot,
        full: m.kind == "full",
        base: m.base,
        level: m.level,
        bytes: tree_bytes(dir),
    })
}

/// The sum of the backups' bytes.
pub fn bytes(backups: &[Backup]) -> u64 {
    backups.iter().map(|b| b.bytes).sum()
}

/// How many backups a restore of `of` replays: 1 for a full, and one more
/// for each base below an incremental. Where a base snapshot has several
/// backups (a full and an incremental of it), the shortest way counts, as
/// zfs2cloud's restore takes it. A base that is not on the remote is an
/// error: that backup could not be restored.
pub fn chain_len(backups: &[Backup], of: &Backup) -> anyhow::Result<usize> {
    chain_len_within(backups, of, backups.len())
}

fn chain_len_within(backups: &[Backup], of: &Backup, depth: usize) -> anyhow::Result<usize> {
    if of.full {
        return Ok(1);
    }
    let Some(base) = &of.base else {
        bail!("{}: an incremental without a base in its manifest", of.dir);
    };
    if depth == 0 {
        bail!("{}: the bases form a loop", of.dir);
    }
    // A broken way through one backup of the base does not matter if
    // another backup of it (its full) restores.
    let ways: Vec<anyhow::Result<usize>> = backups
        .iter()
        .filter(|b| &b.snapshot == base)
        .map(|b| chain_len_within(backups, b, depth - 1))
        .collect();
    if let Some(n) = ways.iter().filter_map(|w| w.as_ref().ok()).min() {
        return Ok(n + 1);
    }
    match ways.into_iter().next() {
        Some(err) => err.with_context(|| format!("the base of {}", of.dir)),
        None => bail!(
            "{}: its base {base} is not on the remote; it cannot be restored",
            of.dir
        ),
    }
}
