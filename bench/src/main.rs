//! The zfs2cloud benchmark (issue 6): zfs2cloud's export against the plain
//! `zfs send | gpg | split` pipeline, sequential against pipelined
//! export+upload under a bandwidth limit, peak RSS, peak local disk, and
//! zstd against no compression on text. Run it with `sudo bench/run`; see
//! `bench/README.md`. `sudo bench/run retention` runs the other mode
//! instead: what each incremental strategy costs over simulated nights
//! (issue 14, module `retention`).
//!
//! * `setup`: the pool, datasets, GNUPGHOME, config files;
//! * `cmd`: running commands (timed, sampled, with full failure reports);
//! * `sampler`: peak RSS and peak directory size while a command runs;
//! * `variants`: the measured variants;
//! * `report`: the markdown table.

// A benchmark binary: its output is the point, and a bug in it should stop it loudly.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "byte counts and seconds as f64 for medians and ratios; far below 2^52"
)]

mod cmd;
mod report;
mod restore;
mod retention;
mod sampler;
mod setup;
mod variants;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use zfs2cloud_testkit::harness::{Pool, ZfsSession};

use crate::cmd::Interrupt;
use crate::setup::{make_dataset, supports_pipelined, Content, World};
use crate::variants::{Bench, Samples};

/// Benchmark zfs2cloud on a throwaway zfs-fuse pool (run as root).
///
/// The binary under test is $ZFS2CLOUD_BIN (default:
/// <workspace>/target/release/zfs2cloud).
#[derive(Debug, Parser)]
#[command(name = "zfs2cloud-bench", args_conflicts_with_subcommands = true)]
struct Args {
    /// Another benchmark instead of this one.
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Small sizes for development: 64M / 256M / 64M, split 16M, 1 repetition
    /// (explicit options still win).
    #[arg(long)]
    quick: bool,
    /// Incompressible dataset for variants 1-4 and 6 [default: 1G].
    #[arg(long, value_name = "BYTES")]
    size: Option<String>,
    /// Incompressible dataset for the RSS comparison; 0 skips it [default: 4G].
    #[arg(long, value_name = "BYTES")]
    large_size: Option<String>,
    /// Generated log text for zstd against none; 0 skips it [default: 512M].
    #[arg(long, value_name = "BYTES")]
    text_size: Option<String>,
    /// Repetitions of each variant [default: 3].
    #[arg(long)]
    reps: Option<usize>,
    /// Chunk size, for zfs2cloud's split_size and `split -b` [default: 256M].
    #[arg(long, value_name = "SIZE")]
    split_size: Option<String>,
    /// upload_concurrency of the pipelined runs.
    #[arg(long, default_value_t = 2)]
    upload_concurrency: u32,
    /// compression_level of the zstd runs.
    #[arg(long, default_value_t = 3)]
    zstd_level: i32,
    /// rclone bwlimit for the upload variants, instead of calibrating it so
    /// that the upload alone takes as long as the export alone.
    #[arg(long, value_name = "RATE")]
    bwlimit: Option<String>,
    /// Keep every run's stdout and stderr (zfs2cloud runs with -v, which
    /// logs each external command with its duration) in this directory;
    /// otherwise they are removed with the pool.
    #[arg(long, value_name = "DIR")]
    logs: Option<PathBuf>,
}

/// The other benchmarks.
#[derive(Debug, Subcommand)]
enum Mode {
    /// What each incremental_strategy costs: bytes uploaded and stored,
    /// restore chains and time, over simulated nightly backups (issue 14).
    Retention(retention::RetentionArgs),
    /// zfs2cloud's restore and verify --deep against the stock `rclone cat
    /// | gpg -d | zfs recv` pipelines, on a local and an S3 remote (issue
    /// 15).
    Restore(restore::RestoreArgs),
}

/// The resolved options.
#[derive(Debug)]
pub struct Opts {
    pub size: u64,
    pub large_size: u64,
    pub text_size: u64,
    pub reps: usize,
    /// `split_size` as written (`256M`), also valid for `split -b`.
    pub split: String,
    pub split_bytes: u64,
    pub concurrency: u32,
    pub zstd_level: i32,
    pub bwlimit: Option<String>,
    pub logs: Option<PathBuf>,
}

impl Opts {
    fn from_args(a: Args) -> anyhow::Result<Self> {
        let pick = |given: Option<String>, quick: &str, normal: &str| {
            given.unwrap_or_else(|| if a.quick { quick } else { normal }.to_owned())
        };
        let split = pick(a.split_size.clone(), "16M", "256M");
        let opts = Self {
            size: parse_bytes(&pick(a.size.clone(), "64M", "1G"))?,
            large_size: parse_bytes(&pick(a.large_size.clone(), "256M", "4G"))?,
            text_size: parse_bytes(&pick(a.text_size.clone(), "64M", "512M"))?,
            reps: a.reps.unwrap_or(if a.quick { 1 } else { 3 }),
            split_bytes: parse_bytes(&split)?,
            split,
            concurrency: a.upload_concurrency,
            zstd_level: a.zstd_level,
            bwlimit: a.bwlimit,
            logs: a.logs,
        };
        if opts.size < (1 << 20) {
            bail!("--size must be at least 1M");
        }
        if opts.split_bytes < 1024 || opts.reps == 0 {
            bail!("--split-size must be at least 1K and --reps at least 1");
        }
        Ok(opts)
    }
}

/// `1G`, `512M`, `64K`, `0` or a byte count (powers of 1024, as `split -b`).
pub fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?}: give a size such as 1G, 512M or 64K"))?;
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        _ => bail!("{s:?}: unknown unit {unit:?} (use K, M or G)"),
    };
    n.checked_mul(1 << shift)
        .with_context(|| format!("{s:?} is too large"))
}

/// `1.5 GiB`, `768.0 MiB`, ...
pub fn human_bytes(b: u64) -> String {
    let v = b as f64;
    if b >= 1 << 30 {
        format!("{:.2} GiB", v / f64::from(1u32 << 30))
    } else if b >= 1 << 20 {
        format!("{:.1} MiB", v / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", v / 1024.0)
    }
}

/// A progress line on stderr.
pub fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

fn zfs2cloud_bin() -> PathBuf {
    std::env::var_os("ZFS2CLOUD_BIN").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/release/zfs2cloud"
            ))
        },
        PathBuf::from,
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[bench] FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The zfs2cloud binary under test, which must exist, as an absolute path.
pub fn resolve_bin() -> anyhow::Result<PathBuf> {
    let bin = zfs2cloud_bin();
    if !bin.is_file() {
        bail!(
            "zfs2cloud binary {} not found: build it (cargo build --release -p zfs2cloud-cli) \
             or set ZFS2CLOUD_BIN",
            bin.display()
        );
    }
    let bin = bin.canonicalize().context("canonicalize ZFS2CLOUD_BIN")?;
    progress(&format!("zfs2cloud binary: {}", bin.display()));
    Ok(bin)
}

/// Waits for the machine-wide ZFS lock, which the test suite holds too:
/// zfs-fuse deadlocks when pools are created at the same time. `tools`
/// must work besides zpool and zfs.
pub fn lock_zfs(tools: &[&str]) -> anyhow::Result<ZfsSession> {
    progress("waiting for the machine-wide ZFS lock (tests hold it too)");
    ZfsSession::start(tools).context(
        "zpool/zfs/gpg/rclone missing or the zfs-fuse daemon is not running: \
         run `bash scripts/install-test-deps --no-moto`",
    )
}

/// The benchmark's pool, on a sparse image of `bytes` bytes.
pub fn make_pool<'s>(session: &'s ZfsSession, tag: &str, bytes: u64) -> Pool<'s> {
    let pool = session.pool_sized(tag, bytes);
    progress(&format!(
        "pool {} on a sparse {} image in {}",
        pool.name(),
        human_bytes(bytes),
        pool.scratch().display()
    ));
    pool
}

fn run(mut args: Args) -> anyhow::Result<()> {
    let command = std::env::var("BENCH_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    match args.mode.take() {
        Some(Mode::Retention(r)) => return retention::run(r, &command),
        Some(Mode::Restore(r)) => return restore::run(r, &command),
        None => {}
    }
    let opts = Opts::from_args(args)?;
    let interrupt = Interrupt::install()?;
    let bin = resolve_bin()?;
    let session = lock_zfs(&["gpg", "rclone", "split"])?;
    let pool_bytes = (opts.size + opts.large_size + opts.text_size) / 100 * 115 + (1 << 30);
    let pool = make_pool(&session, "bench", pool_bytes);
    let world = World::new(bin, pool.scratch(), opts.logs.as_deref())?;
    let result = measure(&pool, &world, &opts, &interrupt, &command);
    // Best effort, before the pool is destroyed: zfs2cloud holds its full
    // base (`zfs hold zfs2cloud`), and gpg may have left an agent.
    setup::release_holds(pool.name());
    world.stop_gpg_agent();
    progress(&format!("destroying pool {}", pool.name()));
    drop(pool);
    drop(session);
    let report = result?;
    println!("{report}");
    Ok(())
}

fn measure(
    pool: &Pool<'_>,
    world: &World,
    opts: &Opts,
    interrupt: &Interrupt,
    command: &str,
) -> anyhow::Result<String> {
    progress(&format!(
        "writing {} of random data",
        human_bytes(opts.size)
    ));
    let small = make_dataset(pool, "small", opts.size, Content::Random, 1)?;
    interrupt.check()?;
    let pipelined = supports_pipelined(world, &small)?;
    if !pipelined {
        progress(
            "this zfs2cloud does not accept upload_while_exporting/compression: \
             measuring the plain-export variants only (1, 2, 3, 5)",
        );
    }
    let large = if opts.large_size > 0 {
        progress(&format!(
            "writing {} of random data",
            human_bytes(opts.large_size)
        ));
        Some(make_dataset(
            pool,
            "large",
            opts.large_size,
            Content::Random,
            2,
        )?)
    } else {
        None
    };
    interrupt.check()?;
    let text = if opts.text_size > 0 {
        progress(&format!(
            "writing {} of log text",
            human_bytes(opts.text_size)
        ));
        Some(make_dataset(
            pool,
            "text",
            opts.text_size,
            Content::Text,
            3,
        )?)
    } else {
        None
    };
    let mut bench = Bench {
        world,
        opts,
        interrupt,
        small,
        large,
        text,
        pipelined,
        bwlimit: String::new(),
        bw_rate: 0.0,
        fair_bwlimit: String::new(),
        samples: Samples::default(),
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    progress(&format!(
        "load average before measuring: {}",
        load.join(" ")
    ));
    bench.samples.notes.push(format!(
        "load average (1, 5, 15 min) before measuring: {}; anything else using the CPU \
         distorts the timings",
        load.join(" ")
    ));
    progress("calibrating the bwlimit: warm-up export, export, upload");
    bench.calibrate()?;
    progress(&format!(
        "bwlimit {} ({} per rclone process for the fair pipelined variant)",
        bench.bwlimit, bench.fair_bwlimit
    ));
    for rep in 0..opts.reps {
        bench.repetition(rep)?;
    }
    Ok(report::render(&bench, opts, command))
}
