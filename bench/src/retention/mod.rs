//! The retention cost benchmark (issue 14): what each
//! `incremental_strategy` costs in bytes uploaded, bytes stored after the
//! remote retention, restore chain length and restore time, over a run of
//! simulated nights on real zfs-fuse. Run it with
//! `sudo bench/run retention`; see `bench/README.md`.
//!
//! * `data`: the files and their daily changes;
//! * `remote`: the backups on the remote, read from their manifests;
//! * `simulate`: one strategy's nights, prune and restore;
//! * `report`: the markdown tables and the target.

mod data;
mod remote;
mod report;
mod simulate;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};

use crate::cmd::Interrupt;
use crate::setup::World;
use crate::{lock_zfs, make_pool, parse_bytes, progress};

/// What each incremental strategy costs over a run of nightly backups.
///
/// Each strategy gets a fresh dataset (the same random files, the same
/// daily changes) and a fresh local-directory remote.
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// A smoke test: 8M, 16 nights, levels 8,4,1 (explicit options win).
    #[arg(long)]
    quick: bool,
    /// Random data in the dataset [default: 64M].
    #[arg(long, value_name = "BYTES")]
    size: Option<String>,
    /// The size of each file; a day's change rewrites whole files.
    #[arg(long, value_name = "BYTES", default_value = "64K")]
    file_size: String,
    /// Percent of the files rewritten with new random data each day.
    #[arg(long, value_name = "PERCENT", default_value_t = 1.0)]
    change: f64,
    /// Which files a day rewrites: `fresh` (files not rewritten before,
    /// in turn: each day adds that share of new changes, the model of
    /// issue 14's arithmetic) or `random` (picked at random: hot files
    /// change again, so changes since a full overlap).
    #[arg(long, value_enum, default_value = "fresh")]
    changes: Changes,
    /// Nights, one backup each [default: 90].
    #[arg(long)]
    days: Option<u32>,
    /// `levels` of the levels strategy [default: 30,7,1]. Its first entry
    /// is also `full_every_x_days` of the other strategies.
    #[arg(long, value_delimiter = ',', value_name = "DAYS")]
    levels: Option<Vec<u32>>,
    /// The strategies to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "since_last_full,chain,levels"
    )]
    strategies: Vec<Strategy>,
    /// `[retention.remote]` keep_daily, the same for every strategy.
    #[arg(long, default_value_t = 7)]
    keep_daily: u32,
    /// `[retention.remote]` keep_weekly.
    #[arg(long, default_value_t = 4)]
    keep_weekly: u32,
    /// `[retention.remote]` keep_monthly.
    #[arg(long, default_value_t = 3)]
    keep_monthly: u32,
    /// `encryption = "none"` instead of gpg with a passphrase file.
    #[arg(long)]
    no_encryption: bool,
    /// zfs2cloud's split_size (1G is also its own default).
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    split_size: String,
    /// Seed of the random data and of the choice of files each day.
    #[arg(long, default_value_t = 14)]
    seed: u64,
    /// Keep every run's stdout and stderr (zfs2cloud -v: each external
    /// command with its duration) in this directory.
    #[arg(long, value_name = "DIR")]
    logs: Option<PathBuf>,
}

/// An `incremental_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    // Spelt as in the config, not in clap's kebab case.
    #[value(name = "since_last_full")]
    SinceLastFull,
    Chain,
    Levels,
}

impl Strategy {
    /// The config value, also the dataset's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::SinceLastFull => "since_last_full",
            Self::Chain => "chain",
            Self::Levels => "levels",
        }
    }
}

/// The `[retention.remote]` keeps, the same for every strategy.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

impl Keep {
    /// The config table.
    fn toml(self) -> String {
        format!(
            "\n[retention.remote]\nkeep_daily = {}\nkeep_weekly = {}\nkeep_monthly = {}\n",
            self.daily, self.weekly, self.monthly
        )
    }

    /// `keep_daily = 7, keep_weekly = 4, keep_monthly = 3`.
    pub fn describe(self) -> String {
        format!(
            "keep_daily = {}, keep_weekly = {}, keep_monthly = {}",
            self.daily, self.weekly, self.monthly
        )
    }
}

pub use data::Changes;

/// The resolved options.
#[derive(Debug)]
pub struct Params {
    pub size: u64,
    pub file_bytes: u64,
    pub files: u64,
    /// Share of the files rewritten a day (0.01 for 1 %).
    pub share: f64,
    /// Which files a day rewrites.
    pub changes: Changes,
    pub days: u32,
    pub levels: Vec<u32>,
    pub strategies: Vec<Strategy>,
    pub keep: Keep,
    pub encrypt: bool,
    pub split: String,
    pub seed: u64,
    pub logs: Option<PathBuf>,
}

impl Params {
    fn from_args(a: RetentionArgs) -> anyhow::Result<Self> {
        let size = parse_bytes(
            a.size
                .as_deref()
                .unwrap_or(if a.quick { "8M" } else { "64M" }),
        )?;
        let file_bytes = parse_bytes(&a.file_size)?;
        if file_bytes < 1024 || file_bytes > size {
            bail!("--file-size must be at least 1K and at most --size");
        }
        if !(a.change > 0.0 && a.change <= 100.0) {
            bail!("--change is a percentage above 0 and at most 100");
        }
        let levels = a.levels.unwrap_or_else(|| {
            if a.quick {
                vec![8, 4, 1]
            } else {
                vec![30, 7, 1]
            }
        });
        if levels.len() < 2 || levels.windows(2).any(|w| w[1] >= w[0]) || levels.contains(&0) {
            bail!("--levels: at least two day counts above 0, each shorter than the one before");
        }
        let days = a.days.unwrap_or(if a.quick { 16 } else { 90 });
        if days < 2 || a.strategies.is_empty() {
            bail!("--days must be at least 2, and --strategies name at least one");
        }
        parse_bytes(&a.split_size)?;
        Ok(Self {
            size,
            file_bytes,
            files: size / file_bytes,
            share: a.change / 100.0,
            changes: a.changes,
            days,
            levels,
            strategies: a.strategies,
            keep: Keep {
                daily: a.keep_daily,
                weekly: a.keep_weekly,
                monthly: a.keep_monthly,
            },
            encrypt: !a.no_encryption,
            split: a.split_size,
            seed: a.seed,
            logs: a.logs,
        })
    }
}

/// Whether the binary has `prune-remote` (branch `remote-prune`). Without
/// it, every figure but the pruned ones is still measured, and the report
/// says so.
fn has_prune_remote(world: &World) -> bool {
    let mut cmd = Command::new(&world.bin);
    cmd.args(["prune-remote", "--help"]);
    world.env(&mut cmd);
    cmd.output().is_ok_and(|o| o.status.success())
}

/// The retention benchmark, from the lock to the printed report.
pub fn run(args: RetentionArgs, command: &str) -> anyhow::Result<()> {
    let params = Params::from_args(args)?;
    let interrupt = Interrupt::install()?;
    let bin = crate::resolve_bin()?;
    let session = lock_zfs(&["gpg", "rclone"])?;
    // The run's time starts with the lock: waiting for the tests is no
    // part of it.
    let started = Instant::now();
    // Each strategy's dataset with its snapshots, and its restored copy:
    // a few times the data; the image is sparse.
    let pool_bytes = params.size * 4 * params.strategies.len() as u64 + (1 << 30);
    let pool = make_pool(&session, "ret", pool_bytes);
    let world = World::new(bin, pool.scratch(), params.logs.as_deref())?;
    let prune = has_prune_remote(&world);
    if !prune {
        progress("this zfs2cloud has no prune-remote: the remote retention is not measured");
    }
    let sim = simulate::Sim {
        pool: &pool,
        world: &world,
        params: &params,
        interrupt: &interrupt,
        prune,
    };
    let outcomes: anyhow::Result<Vec<_>> = params
        .strategies
        .iter()
        .map(|&s| sim.run(s).with_context(|| s.name()))
        .collect();
    crate::setup::release_holds(pool.name());
    world.stop_gpg_agent();
    progress(&format!("destroying pool {}", pool.name()));
    drop(pool);
    drop(session);
    let outcomes = outcomes?;
    let report = report::render(
        &world,
        &params,
        &outcomes,
        prune,
        command,
        started.elapsed(),
    );
    // A missed target is a finding, printed in the report, not a failure
    // of the benchmark (as in the other mode); a wrong restore fails above.
    println!("{report}");
    Ok(())
}
