//! One strategy's run: a fresh dataset and remote, one `zfs2cloud backup`
//! a night with the clock set to that night, then the remote retention,
//! then a restore of the last night checked file by file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use zfs2cloud_testkit::harness::{tree_digest, Pool};

use super::data::Files;
use super::remote::{self, Backup};
use super::{Params, Strategy};
use crate::cmd::{timed, Interrupt, Timed, Watch};
use crate::setup::{ConfigSpec, Dataset, Setup, World};
use crate::{human_bytes, progress};

/// What one night did.
#[derive(Debug, Clone)]
pub struct Night {
    pub secs: f64,
    /// The night's new backup.
    pub backup: Backup,
}

/// The remote after `prune-remote -y`.
#[derive(Debug, Clone, Copy)]
pub struct Pruned {
    pub bytes: u64,
    pub backups: usize,
    pub secs: f64,
}

/// Everything measured for one strategy.
#[derive(Debug)]
pub struct Outcome {
    pub strategy: Strategy,
    pub nights: Vec<Night>,
    /// The remote after the last night, before any pruning.
    pub stored_before: u64,
    /// `None` when the binary has no `prune-remote`.
    pub pruned: Option<Pruned>,
    /// The longest restore chain among the backups left on the remote.
    pub longest_chain: usize,
    /// The restore chain of the newest backup.
    pub latest_chain: usize,
    pub restore_secs: f64,
    /// Files compared after the restore (all identical, or the run failed).
    pub restored_files: usize,
}

impl Outcome {
    /// Bytes uploaded over all nights.
    pub fn uploaded(&self) -> u64 {
        self.nights.iter().map(|n| n.backup.bytes).sum()
    }

    /// Wall time of all nightly backups.
    pub fn backup_secs(&self) -> f64 {
        self.nights.iter().map(|n| n.secs).sum()
    }

    /// What is stored at the end: after pruning, if it ran.
    pub fn stored_after(&self) -> u64 {
        self.pruned.map_or(self.stored_before, |p| p.bytes)
    }
}

/// The first night, 03:00 UTC: a nightly run's time. Every strategy
/// starts here, so all have the same calendar (2025-01-01 is a
/// Wednesday; ISO weeks and months fall the same way for all).
fn start() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2025, 1, 1)
        .and_then(|d| d.and_hms_opt(3, 0, 0))
        .unwrap_or_default()
}

/// Night `day`'s time: the value of `ZFS2CLOUD_NOW` and, in zfs2cloud's
/// format, the name of the snapshot that night's backup takes.
fn night(day: u32) -> (String, String) {
    let t = start() + TimeDelta::days(i64::from(day));
    (
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        t.format("%Y%m%d%H%M%S").to_string(),
    )
}

/// The shared tools and settings of every strategy's run.
#[derive(Debug)]
pub struct Sim<'a> {
    pub pool: &'a Pool<'a>,
    pub world: &'a World,
    pub params: &'a Params,
    pub interrupt: &'a Interrupt,
    /// The binary has `prune-remote`.
    pub prune: bool,
}

impl Sim<'_> {
    /// Runs `strategy` from a fresh dataset and remote to the checked
    /// restore.
    pub fn run(&self, strategy: Strategy) -> anyhow::Result<Outcome> {
        let p = self.params;
        let name = strategy.name();
        progress(&format!(
            "{name}: writing {} in {} files",
            human_bytes(p.size),
            p.files
        ));
        let mnt = self.pool.create_dataset(name);
        let mut files = Files::create(&mnt, p.files, p.file_bytes, p.share, p.changes, p.seed)?;
        let dataset = Dataset {
            name: self.pool.dataset(name),
        };
        let setup = Setup::write(self.world, name, &dataset, &self.spec(strategy))?;
        setup.clean()?;
        let mut nights = Vec::new();
        for day in 0..p.days {
            self.interrupt.check()?;
            if day > 0 {
                files.change(day)?;
            }
            let n = self.night(&setup, strategy, day)?;
            nights.push(n);
        }
        let stored_before = remote::bytes(&remote::list(&setup.remote)?);
        let pruned = if self.prune {
            Some(self.prune_remote(&setup, strategy)?)
        } else {
            None
        };
        let left = remote::list(&setup.remote)?;
        let (longest_chain, latest_chain) = chains(&left)?;
        let (restore_secs, restored_files) = self.restore(&setup, strategy, &mnt)?;
        Ok(Outcome {
            strategy,
            nights,
            stored_before,
            pruned,
            longest_chain,
            latest_chain,
            restore_secs,
            restored_files,
        })
    }

    /// The config: the strategy, fulls every `levels[0]` days for all
    /// three (so only the bases differ), and the remote retention table
    /// when the binary knows it.
    fn spec(&self, strategy: Strategy) -> ConfigSpec {
        let p = self.params;
        let full_every = p.levels.first().copied().unwrap_or(30);
        let mut extra = format!(
            "incremental_strategy = {:?}\nfull_every_x_days = {full_every}\n\
             oldest_snapshot_days = {}\n",
            strategy.name(),
            // Must exceed the full period; zfs2cloud's default (45) for
            // the default period of 30.
            full_every + 15,
        );
        if strategy == Strategy::Levels {
            let levels: Vec<String> = p.levels.iter().map(u32::to_string).collect();
            extra.push_str(&format!("levels = [{}]\n", levels.join(", ")));
        }
        if !p.encrypt {
            extra.push_str("encryption = \"none\"\n");
        }
        if self.prune {
            extra.push_str(&p.keep.toml());
        }
        ConfigSpec {
            split_size: p.split.clone(),
            extra,
            ..ConfigSpec::default()
        }
    }

    /// `zfs2cloud <args>` with the clock set to night `day`, timed; its
    /// output goes to the log `<log>.out`/`.err`.
    fn zfs2cloud(
        &self,
        setup: &Setup,
        args: &[&str],
        day: u32,
        log: &str,
    ) -> anyhow::Result<Timed> {
        let mut cmd = self.world.zfs2cloud(&setup.config, args);
        cmd.env("ZFS2CLOUD_NOW", night(day).0);
        timed(
            &mut cmd,
            log,
            &self.world.logs,
            &Watch::default(),
            self.interrupt,
        )
    }

    /// One night's `zfs2cloud backup`, and the one new backup it must
    /// leave on the remote: complete, of that night's snapshot.
    fn night(&self, setup: &Setup, strategy: Strategy, day: u32) -> anyhow::Result<Night> {
        let name = strategy.name();
        let before = remote::list(&setup.remote)?;
        let t = self.zfs2cloud(setup, &["backup"], day, &format!("{name}-night{day:03}"))?;
        let new: Vec<Backup> = remote::list(&setup.remote)?
            .into_iter()
            .filter(|b| !before.iter().any(|o| o.dir == b.dir))
            .collect();
        let snap = night(day).1;
        let [backup] = new.as_slice() else {
            bail!(
                "{name}, night {day}: expected one new backup of {snap} on the remote, found {:?}",
                new.iter().map(|b| &b.dir).collect::<Vec<_>>()
            );
        };
        if backup.snapshot != snap {
            bail!(
                "{name}, night {day}: the new backup {} is of {}, not of {snap}",
                backup.dir,
                backup.snapshot
            );
        }
        progress(&format!(
            "{name}: night {}/{}: {} ({}), {:.1} s",
            day + 1,
            self.params.days,
            describe(backup),
            human_bytes(backup.bytes),
            t.secs
        ));
        Ok(Night {
            secs: t.secs,
            backup: backup.clone(),
        })
    }

    /// `zfs2cloud prune-remote -y` at the last night's time, and what it
    /// leaves.
    fn prune_remote(&self, setup: &Setup, strategy: Strategy) -> anyhow::Result<Pruned> {
        let name = strategy.name();
        let last = self.params.days.saturating_sub(1);
        let t = self.zfs2cloud(
            setup,
            &["prune-remote", "-y"],
            last,
            &format!("{name}-prune-remote"),
        )?;
        let left = remote::list(&setup.remote)?;
        progress(&format!(
            "{name}: prune-remote -y kept {} backups, {}, in {:.1} s",
            left.len(),
            human_bytes(remote::bytes(&left)),
            t.secs
        ));
        Ok(Pruned {
            bytes: remote::bytes(&left),
            backups: left.len(),
            secs: t.secs,
        })
    }

    /// `zfs2cloud restore --at latest` into a new dataset, timed, then
    /// every file compared with the dataset (unchanged since the last
    /// night's snapshot). A difference fails the benchmark. The restored
    /// dataset stays until the pool goes: zfs-fuse reports a freshly
    /// received dataset busy for a while, and the pool has room.
    fn restore(
        &self,
        setup: &Setup,
        strategy: Strategy,
        live: &Path,
    ) -> anyhow::Result<(f64, usize)> {
        let name = strategy.name();
        let target = self.pool.dataset(&format!("restored-{name}"));
        let last = self.params.days.saturating_sub(1);
        let t = self.zfs2cloud(
            setup,
            &["restore", "--at", "latest", "--to", &target],
            last,
            &format!("{name}-restore"),
        )?;
        let restored: PathBuf = self.pool.mountpoint(&target);
        let (want, got) = (tree_digest(live), tree_digest(&restored));
        if want != got {
            let differ = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).count();
            bail!(
                "{name}: the restore of the last night into {target} differs from the dataset: \
                 {differ} of {} entries differ or are missing, {} entries restored",
                want.len(),
                got.len()
            );
        }
        progress(&format!(
            "{name}: restore --at latest took {:.1} s; {} files identical",
            t.secs,
            want.len()
        ));
        Ok((t.secs, want.len()))
    }
}

/// The longest restore chain among `backups`, and that of the newest.
fn chains(backups: &[Backup]) -> anyhow::Result<(usize, usize)> {
    let mut longest = 0;
    for b in backups {
        longest = longest.max(remote::chain_len(backups, b)?);
    }
    let newest = backups
        .iter()
        .max_by(|a, b| a.snapshot.cmp(&b.snapshot))
        .context("no backup left on the remote")?;
    Ok((longest, remote::chain_len(backups, newest)?))
}

/// `full`, `incremental level 2 on 20250108030000`.
fn describe(b: &Backup) -> String {
    let level = b.level.map_or_else(String::new, |l| format!(" level {l}"));
    match (&b.base, b.full) {
        (_, true) => "full".into(),
        (Some(base), false) => format!("incremental{level} on {base}"),
        (None, false) => format!("incremental{level}"),
    }
}
