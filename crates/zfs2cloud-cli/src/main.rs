//! `zfs2cloud`: back up ZFS datasets to any rclone remote through snapshots.
//!
//! This binary is thin: it parses arguments, loads the config, wires the
//! process-backed stages from `zfs2cloud-core` and prints results. Results
//! go to stdout; diagnostics (`-v`) and errors go to stderr.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::{ArgAction, Parser, Subcommand};

use zfs2cloud_core::clock;
use zfs2cloud_core::config::Config;
use zfs2cloud_core::export::{
    export_step, ExportLayout, ExportRequest, ExportSettings, ExportStepOutcome,
};
use zfs2cloud_core::gpg::{GpgEncryptor, Passphrase};
use zfs2cloud_core::names::SnapTime;
use zfs2cloud_core::plan::ExportKind;
use zfs2cloud_core::process::Runner;
use zfs2cloud_core::progress::NoProgress;
use zfs2cloud_core::snapshot::take_snapshot;
use zfs2cloud_core::steps::Mode;
use zfs2cloud_core::zfs::ZfsCli;

mod logger;

/// Back up ZFS datasets to any rclone remote through snapshots.
#[derive(Debug, Parser)]
#[command(name = "zfs2cloud", version, about, propagate_version = true)]
struct Cli {
    /// The config file (TOML).
    #[arg(
        short,
        long,
        env = "ZFS2CLOUD_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    /// Print every command that would change state instead of running it.
    /// Read-only queries (zfs list) still run.
    #[arg(long, global = true)]
    dry_run: bool,

    /// More output on stderr: -v logs every external command with its
    /// duration, -vv also debug details.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the config file and print the effective configuration, with
    /// secrets masked.
    #[command(alias = "show-config")]
    CheckConfig,

    /// Take a snapshot: pre_snapshot hook, zfs snapshot
    /// <dataset>@YYYYMMDDHHMMSS, post_snapshot hook.
    Snapshot,

    /// Export a snapshot (default: the newest of zfs2cloud's) as encrypted
    /// chunks: zfs send | gpg | split.
    #[command(alias = "export-intermediate")]
    Export {
        /// Force a full export.
        #[arg(short, long, conflicts_with = "incremental")]
        full: bool,
        /// Force an incremental export against the last full.
        #[arg(short, long)]
        incremental: bool,
        /// The snapshot to export (the part after '@').
        #[arg(short, long, value_name = "NAME")]
        snapshot: Option<String>,
    },
}

/// Failures that are the user's input rather than the run: exit code 2,
/// like clap's usage errors.
#[derive(Debug)]
struct UsageError;

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid configuration")
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init(cli.verbose);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = if err.downcast_ref::<UsageError>().is_some()
                || err
                    .chain()
                    .any(|e| e.is::<zfs2cloud_core::config::ConfigError>())
            {
                2
            } else {
                1
            };
            // `{:#}` prints the whole cause chain on one line.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("zfs2cloud: error: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}

fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) must not turn success into a panic.
    let _ = writeln!(stdout, "{line}");
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let Some(path) = &cli.config else {
        bail!(anyhow::Error::new(UsageError)
            .context("no config file given: pass -c FILE or set ZFS2CLOUD_CONFIG"));
    };
    Ok(Config::load(path)?)
}

fn runner(cli: &Cli) -> Runner {
    if cli.dry_run {
        Runner::dry_run(Arc::new(|action: &str| out(&format!("[dry-run] {action}"))))
    } else {
        Runner::new()
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::CheckConfig => check_config(cli),
        Command::Snapshot => snapshot(cli),
        Command::Export {
            full,
            incremental,
            snapshot,
        } => {
            let force = match (full, incremental) {
                (true, _) => Some(ExportKind::Full),
                (_, true) => Some(ExportKind::Incremental),
                _ => None,
            };
            export(cli, force, snapshot.clone())
        }
    }
}

fn check_config(cli: &Cli) -> anyhow::Result<()> {
    let config = load_config(cli)?;
    out(&format!(
        "# {} is valid. Effective configuration:",
        config.path.display()
    ));
    if let Some(p) = &config.passphrase_file {
        out(&format!(
            "# passphrase: ******** (first line of {})",
            p.display()
        ));
    }
    out(config.to_effective_toml()?.trim_end());
    Ok(())
}

fn snapshot(cli: &Cli) -> anyhow::Result<()> {
    let config = load_config(cli)?;
    let now = clock::now()?;
    let runner = runner(cli);
    let zfs = ZfsCli::new(runner.clone(), config.tools.zfs.clone());
    let at = SnapTime::from_instant(now, config.snapshot_time_zone);
    let name = take_snapshot(&zfs, &runner, &config.hooks, &config.dataset, at)
        .context("step snapshot")?;
    if !runner.is_dry_run() {
        out(&format!("created snapshot {name}"));
    }
    Ok(())
}

fn export(cli: &Cli, force: Option<ExportKind>, target: Option<String>) -> anyhow::Result<()> {
    let config = load_config(cli)?;
    if config.mode != Mode::Intermediate {
        bail!(anyhow::Error::new(UsageError).context(format!(
            "{}: export is for intermediate mode, but mode = \"file\"",
            config.path.display()
        )));
    }
    let Some(pass_file) = &config.passphrase_file else {
        bail!("intermediate mode needs passphrase_file");
    };
    let passphrase = Passphrase::from_file(pass_file)?;
    let now = clock::now()?;
    let runner = runner(cli);
    let zfs = ZfsCli::new(runner.clone(), config.tools.zfs.clone());
    let gpg = GpgEncryptor::new(runner.clone(), config.tools.gpg.clone(), passphrase);
    let layout = ExportLayout::new(config.intermediate_basedir.clone());
    let request = ExportRequest {
        target,
        force,
        full_every_x_days: config.full_every_x_days,
        settings: ExportSettings {
            split_size: config.split_size.0,
            created_at: now,
        },
    };
    let outcome = export_step(
        &zfs,
        &zfs,
        &gpg,
        &runner,
        &layout,
        &config.dataset,
        &request,
        &NoProgress,
    )
    .context("step export")?;
    match outcome {
        ExportStepOutcome::Exported { plan, outcome } => {
            let m = &outcome.manifest;
            out(&format!(
                "exported {} ({}{}) to {}: {} chunk(s), {} bytes",
                plan.snapshot,
                plan.kind,
                plan.base
                    .map(|b| format!(" from {}", b.snap()))
                    .unwrap_or_default(),
                outcome.dir.display(),
                m.chunks.len(),
                m.total_size
            ));
        }
        ExportStepOutcome::AlreadyExported { snapshot, dir } => {
            out(&format!(
                "{snapshot} is already exported at {}; nothing to do (remove that directory to export it again)",
                dir.display()
            ));
        }
        ExportStepOutcome::DryRun { plan, dir } => {
            out(&format!(
                "[dry-run] would export {} as {} ({}) to {}",
                plan.snapshot,
                plan.kind,
                plan.reason,
                dir.display()
            ));
        }
    }
    Ok(())
}
