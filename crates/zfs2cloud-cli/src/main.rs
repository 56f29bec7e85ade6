//! `zfs2cloud`: back up ZFS datasets to any rclone remote through snapshots.
//!
//! This binary is thin: it parses arguments, loads the config, wires the
//! process-backed stages from `zfs2cloud-core` and prints results. Results
//! go to stdout; diagnostics (`-v`) and errors go to stderr.
//!
//! Exit codes: 0 success; 1 a step failed; 2 invalid config or usage;
//! 75 another run holds the lock; 128 + n interrupted by signal n (SIGHUP,
//! SIGINT, SIGQUIT, SIGTERM).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::{ArgAction, Parser, Subcommand};

use zfs2cloud_core::{list_remote_backups, Health};
use zfs2cloud_core::{Backup, StepError};

use zfs2cloud_core::DatasetName;
use zfs2cloud_core::ExportKind;
use zfs2cloud_core::Mounter;
use zfs2cloud_core::NoProgress;
use zfs2cloud_core::SnapTime;
use zfs2cloud_core::Snapshotter as _;
use zfs2cloud_core::StreamUpload;
use zfs2cloud_core::ZfsCli;
use zfs2cloud_core::{export_confirmed, upload_step, UploadSettings};
use zfs2cloud_core::{export_step, ExportLayout, ExportRequest, ExportSettings, ExportStepOutcome};
use zfs2cloud_core::{plan_restore, restore_chain, RestorePoint, RestoreSettings};
use zfs2cloud_core::{prune_exports, prune_snapshots, Verdict};
use zfs2cloud_core::{take_snapshot, SNAPSHOT_WINDOW_FILE};
use zfs2cloud_core::{verify_deep, verify_listing};
use zfs2cloud_core::{CancelToken, Runner};
use zfs2cloud_core::{Config, ConfigError};
use zfs2cloud_core::{GpgEncryptor, Passphrase};
use zfs2cloud_core::{LockError, RunLock};
use zfs2cloud_core::{Mode, Step};
use zfs2cloud_core::{RcloneOptions, RcloneUploader};

mod logger;
mod signals;

/// Exit code: a step failed.
const EXIT_FAILURE: u8 = 1;
/// Exit code: invalid configuration or usage (clap uses 2 as well).
const EXIT_CONFIG: u8 = 2;
/// Exit code: another run holds the lock (EX_TEMPFAIL).
const EXIT_LOCKED: u8 = 75;
/// A panic: a bug in zfs2cloud (`EX_SOFTWARE`).
const EXIT_INTERNAL: u8 = 70;

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
    /// Read-only queries (zfs list, rclone lsjson) still run.
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
    /// Run the whole configured sequence (default: lock, snapshot, export,
    /// upload, prune-intermediates, prune-snapshots, unlock).
    #[command(alias = "perform")]
    Backup,

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

    /// Upload every local export whose upload is not confirmed yet (or only
    /// one), chunks first and manifest.json last, and verify it.
    #[command(alias = "upload-intermediate-to-remote")]
    Upload {
        /// The snapshot whose export to upload (the part after '@').
        #[arg(short, long, value_name = "NAME")]
        snapshot: Option<String>,
    },

    /// Delete local exports except the newest, and only uploaded ones.
    /// Without -y, only shows what it would delete.
    #[command(alias = "prune-intermediate")]
    PruneIntermediates {
        /// Really delete.
        #[arg(short, long)]
        yes: bool,
    },

    /// Restore a backup from the remote into a dataset: the full and at most
    /// one incremental, streamed (nothing staged locally), every chunk
    /// checked against its manifest. Works without a config file, from
    /// --from and a passphrase alone.
    Restore {
        /// The dataset to create (e.g. pool2/data).
        #[arg(long, value_name = "DATASET")]
        to: String,
        /// The backup to restore: a snapshot name (YYYYMMDDHHMMSS) or
        /// "latest".
        #[arg(long, value_name = "SNAPSHOT", default_value = "latest")]
        at: String,
        /// Where the backups are (an rclone remote or a directory); default:
        /// the config's remote.
        #[arg(long, value_name = "REMOTE")]
        from: Option<String>,
        /// File whose first line is the passphrase; default: the config's,
        /// else a prompt on the terminal.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// rclone's config file; default: the config's.
        #[arg(long, value_name = "FILE")]
        rclone_config: Option<PathBuf>,
        /// Overwrite the target if it exists (zfs recv -F).
        #[arg(long)]
        force: bool,
    },

    /// Check the backups on the remote: OK, DAMAGED or INCOMPLETE, with the
    /// reason. Exits non-zero unless everything checked is OK.
    Verify {
        /// Only this backup (snapshot name); default: all.
        #[arg(short, long, value_name = "NAME")]
        snapshot: Option<String>,
        /// All backups (the default).
        #[arg(long, conflicts_with = "snapshot")]
        all: bool,
        /// Download everything, check every sha256, decrypt, and receive the
        /// stream into a temporary dataset (destroyed afterwards).
        #[arg(long)]
        deep: bool,
    },

    /// Show zfs2cloud's snapshots, the full base, local exports, the lock
    /// and the last successful backup (and with --remote, the backups on
    /// the remote and their chains).
    Status {
        /// Machine-readable output (schema: docs/status.schema.json).
        #[arg(long)]
        json: bool,
        /// Also list the remote's backups (complete or not) and chains.
        #[arg(long)]
        remote: bool,
    },

    /// File mode: expose the newest zfs2cloud snapshot read-only at
    /// <intermediate_basedir>/<snap>-full/ (cleaning up leftovers first).
    MountSnapshot,

    /// File mode: rclone sync the mounted snapshot to the remote and write
    /// the heartbeat object.
    #[command(alias = "upload-snapshot-files-to-remote")]
    UploadSnapshotFiles,

    /// File mode: unmount the snapshot (destroying a temporary clone) and
    /// remove its directory.
    #[command(alias = "unmount-snapshot")]
    UmountSnapshot,

    /// Destroy zfs2cloud's own snapshots older than oldest_snapshot_days.
    /// Without -y, only shows what it would destroy.
    PruneSnapshots {
        /// Really destroy.
        #[arg(short, long)]
        yes: bool,
    },
}

/// A failure that is the user's input rather than the run: exit code 2.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init(cli.verbose);
    let cancel = CancelToken::new();
    let signals = match signals::install(&cancel) {
        Ok(s) => s,
        Err(e) => {
            report_error(&anyhow::Error::new(e).context("cannot install signal handlers"));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = match guarded(|| run(&cli, &cancel)) {
        Ok(result) => result,
        Err(()) => return ExitCode::from(EXIT_INTERNAL),
    };
    if let Some(code) = signals.exit_code() {
        if let Err(err) = &result {
            report_error(err);
        }
        return ExitCode::from(code);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report_error(&err);
            ExitCode::from(exit_code(&err))
        }
    }
}

/// Runs `f`, turning a panic into `Err(())` after reporting it as an
/// internal error. Unwinding has by then dropped what `f` held: the run
/// lock is released and running children were stopped by their guards.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, ()> {
    std::panic::set_hook(Box::new(|info| {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(
            stderr,
            "zfs2cloud: internal error (a bug in zfs2cloud; please report it): {info}"
        );
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| ());
    // Later panics (none are expected) get the default report again.
    let _ = std::panic::take_hook();
    result
}

fn exit_code(err: &anyhow::Error) -> u8 {
    let chain = || err.chain();
    if chain().any(|e| e.is::<UsageError>() || e.is::<ConfigError>()) {
        EXIT_CONFIG
    } else if chain().any(|e| {
        e.downcast_ref::<StepError>()
            .is_some_and(StepError::is_lock_held)
            || matches!(e.downcast_ref::<LockError>(), Some(LockError::Held { .. }))
    }) {
        EXIT_LOCKED
    } else {
        EXIT_FAILURE
    }
}

fn report_error(err: &anyhow::Error) {
    // `{:#}` prints the whole cause chain on one line.
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "zfs2cloud: error: {err:#}");
}

fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) must not turn success into a panic.
    let _ = writeln!(stdout, "{line}");
}

/// Everything a command needs, built from the config.
struct App {
    config: Config,
    runner: Runner,
    zfs: ZfsCli,
    now: chrono::DateTime<chrono::Utc>,
}

impl App {
    fn new(cli: &Cli, cancel: &CancelToken) -> anyhow::Result<Self> {
        let Some(path) = &cli.config else {
            bail!(UsageError(
                "no config file given: pass -c FILE or set ZFS2CLOUD_CONFIG".into()
            ));
        };
        let config = Config::load(path)?;
        let now = zfs2cloud_core::now().map_err(|e| UsageError(e.to_string()))?;
        let runner = if cli.dry_run {
            Runner::dry_run(Arc::new(|action: &str| out(&format!("[dry-run] {action}"))))
        } else {
            Runner::new()
        }
        .with_cancel(cancel.clone());
        let zfs = ZfsCli::new(runner.clone(), config.tools.zfs.clone());
        Ok(Self {
            config,
            runner,
            zfs,
            now,
        })
    }

    fn layout(&self) -> ExportLayout {
        ExportLayout::new(self.config.intermediate_basedir.clone())
    }

    /// The run lock for a standalone command (a dry run takes none).
    fn lock(&self) -> anyhow::Result<Option<RunLock>> {
        if self.runner.is_dry_run() {
            return Ok(None);
        }
        Ok(Some(RunLock::acquire(
            &self.config.intermediate_basedir,
            self.now,
        )?))
    }

    fn require_intermediate(&self, command: &str) -> anyhow::Result<()> {
        if self.config.mode != Mode::Intermediate {
            bail!(UsageError(format!(
                "{}: {command} is for intermediate mode, but mode = \"file\"",
                self.config.path.display()
            )));
        }
        Ok(())
    }

    fn encryptor(&self) -> anyhow::Result<Option<GpgEncryptor>> {
        let Some(file) = &self.config.passphrase_file else {
            return Ok(None);
        };
        let passphrase = Passphrase::from_file(file)?;
        Ok(Some(GpgEncryptor::new(
            self.runner.clone(),
            self.config.tools.gpg.clone(),
            passphrase,
        )))
    }

    fn uploader(&self) -> RcloneUploader {
        RcloneUploader::new(
            self.runner.clone(),
            self.config.tools.rclone.clone(),
            RcloneOptions {
                config: self.config.rclone_config.clone(),
                global_flags: self.config.rclone_global_flags.clone(),
                args: self.config.rclone_args.clone(),
                bwlimit: self.config.bwlimit.clone(),
            },
        )
    }

    /// The uploader of a pipelined export: `bwlimit` is shared among its
    /// `upload_concurrency` parallel uploads, so that together they keep
    /// to it as one upload does.
    fn stream_uploader(&self) -> RcloneUploader {
        self.uploader()
            .sharing_bwlimit(self.config.upload_concurrency)
    }

    /// Runs a step command under the step's `[step_timeouts]` limit, as
    /// `backup` does.
    fn limited<T>(&self, step: &Step, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        let (result, timed_out) = self
            .runner
            .cancel_token()
            .run_limited(self.config.step_limit(step), f);
        match (result, timed_out) {
            (Err(e), Some(limit)) => Err(e.context(format!(
                "timed out after {}s (step_timeouts.{step})",
                limit.as_secs()
            ))),
            (result, _) => result,
        }
    }

    fn upload_settings(&self) -> UploadSettings {
        UploadSettings {
            remote: self.config.remote.clone(),
            retry: zfs2cloud_core::RetryPolicy::from(&self.config),
            cancel: self.runner.cancel_token().clone(),
            now: self.now,
            dry_run: self.runner.is_dry_run(),
        }
    }
}

fn run(cli: &Cli, cancel: &CancelToken) -> anyhow::Result<()> {
    if let Command::Restore {
        to,
        at,
        from,
        passphrase_file,
        rclone_config,
        force,
    } = &cli.command
    {
        return restore(
            cli,
            cancel,
            &RestoreArgs {
                to,
                at,
                from: from.as_deref(),
                passphrase_file: passphrase_file.as_deref(),
                rclone_config: rclone_config.as_deref(),
                force: *force,
            },
        );
    }
    let app = App::new(cli, cancel)?;
    match &cli.command {
        Command::Backup => backup(&app),
        Command::CheckConfig => check_config(&app),
        Command::Snapshot => app.limited(&Step::Snapshot, || snapshot(&app)),
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
            app.limited(&Step::Export, || export(&app, force, snapshot.clone()))
        }
        Command::Upload { snapshot } => {
            app.limited(&Step::Upload, || upload(&app, snapshot.as_deref()))
        }
        Command::PruneIntermediates { yes } => app.limited(&Step::PruneIntermediates, || {
            prune_intermediates(&app, *yes)
        }),
        Command::PruneSnapshots { yes } => {
            app.limited(&Step::PruneSnapshots, || prune_snapshots_cmd(&app, *yes))
        }
        Command::Restore { .. } => Ok(()),
        Command::Status { json, remote } => status(&app, *json, *remote),
        Command::Verify { snapshot, deep, .. } => verify(&app, snapshot.as_deref(), *deep),
        Command::MountSnapshot => single_step(&app, &Step::MountSnapshot),
        Command::UploadSnapshotFiles => single_step(&app, &Step::UploadSnapshotFiles),
        Command::UmountSnapshot => single_step(&app, &Step::UmountSnapshot),
    }
}

/// The stages a [`Backup`] runs with, owned.
struct Stages {
    encryptor: Option<GpgEncryptor>,
    uploader: RcloneUploader,
    stream_uploader: RcloneUploader,
    mounter: Mounter,
}

impl App {
    fn stages(&self) -> anyhow::Result<Stages> {
        Ok(Stages {
            encryptor: match self.config.mode {
                Mode::Intermediate => self.encryptor()?,
                Mode::File => None,
            },
            uploader: self.uploader(),
            stream_uploader: self.stream_uploader(),
            mounter: Mounter::new(self.runner.clone(), self.config.tools.zfs.clone()),
        })
    }

    fn backup<'a>(&'a self, stages: &'a Stages) -> Backup<'a> {
        Backup {
            config: &self.config,
            runner: &self.runner,
            snapshotter: &self.zfs,
            pruner: &self.zfs,
            exporter: &self.zfs,
            encryptor: stages
                .encryptor
                .as_ref()
                .map(|e| e as &dyn zfs2cloud_core::Encryptor),
            uploader: &stages.uploader,
            stream_uploader: &stages.stream_uploader,
            mounter: &stages.mounter,
            now: self.now,
            progress: &NoProgress,
        }
    }
}

fn single_step(app: &App, step: &Step) -> anyhow::Result<()> {
    let _lock = app.lock()?;
    let stages = app.stages()?;
    let summary = app.backup(&stages).run_single(step)?;
    out(&format!("{step}: {summary}"));
    Ok(())
}

fn backup(app: &App) -> anyhow::Result<()> {
    let stages = app.stages()?;
    let backup = app.backup(&stages);
    let started = std::time::Instant::now();
    backup.run(&mut |step| {
        out(&format!(
            "{:<20} {:>7.1}s  {}",
            step.step,
            step.duration.as_secs_f64(),
            step.summary
        ));
    })?;
    out(&format!(
        "backup of {} finished in {:.1}s",
        app.config.dataset,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn check_config(app: &App) -> anyhow::Result<()> {
    let config = &app.config;
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

fn snapshot(app: &App) -> anyhow::Result<()> {
    let _lock = app.lock()?;
    let at = SnapTime::from_instant(app.now, app.config.snapshot_time_zone);
    let name = take_snapshot(
        &app.zfs,
        &app.runner,
        &app.config.hooks,
        &app.config.dataset,
        at,
        app.config.hook_timeout(),
        Some(&app.config.intermediate_basedir.join(SNAPSHOT_WINDOW_FILE)),
    )
    .context("step snapshot")?;
    if !app.runner.is_dry_run() {
        out(&format!("created snapshot {name}"));
    }
    Ok(())
}

fn export(app: &App, force: Option<ExportKind>, target: Option<String>) -> anyhow::Result<()> {
    app.require_intermediate("export")?;
    let Some(gpg) = app.encryptor()? else {
        bail!(UsageError("intermediate mode needs passphrase_file".into()));
    };
    let _lock = app.lock()?;
    let request = ExportRequest {
        target,
        force,
        full_every_x_days: app.config.full_every_x_days,
        remote: app.config.remote.clone(),
        settings: ExportSettings {
            split_size: app.config.split_size.0,
            created_at: app.now,
            cancel: app.runner.cancel_token().clone(),
            compression: app.config.compression_settings(),
        },
    };
    let uploader = app.stream_uploader();
    let stream = StreamUpload::from_config(&app.config, &uploader, app.now);
    let outcome = export_step(
        &app.zfs,
        &app.zfs,
        &gpg,
        &app.runner,
        &app.layout(),
        &app.config.dataset,
        &request,
        stream.as_ref(),
        &NoProgress,
    )
    .context("step export")?;
    match outcome {
        ExportStepOutcome::Exported { plan, outcome } => {
            let m = &outcome.manifest;
            let place = match &outcome.streamed {
                None => outcome.dir.display().to_string(),
                Some(report) => format!(
                    "{} and uploaded it while exporting (at most {} chunk(s) on local disk at once)",
                    if app.config.keep_local_export {
                        outcome.dir.display().to_string()
                    } else {
                        "local disk".to_owned()
                    },
                    report.peak_chunks_on_disk
                ),
            };
            out(&format!(
                "exported {} ({}{}) to {place}: {} chunk(s), {} bytes",
                plan.snapshot,
                plan.kind,
                plan.base
                    .map(|b| format!(" from {}", b.snap()))
                    .unwrap_or_default(),
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

fn upload(app: &App, only: Option<&str>) -> anyhow::Result<()> {
    app.require_intermediate("upload")?;
    let _lock = app.lock()?;
    let done = upload_step(
        &app.zfs,
        &app.uploader(),
        &app.layout(),
        &app.config.dataset,
        only,
        &app.upload_settings(),
    )
    .context("step upload")?;
    if done.is_empty() {
        out("nothing to upload: every local export is confirmed uploaded");
    }
    for (snapshot, report) in done {
        out(&format!(
            "uploaded {snapshot}: {} file(s) sent, {} already complete on the remote",
            report.sent.len(),
            report.skipped.len()
        ));
    }
    Ok(())
}

struct RestoreArgs<'a> {
    to: &'a str,
    at: &'a str,
    from: Option<&'a str>,
    passphrase_file: Option<&'a std::path::Path>,
    rclone_config: Option<&'a std::path::Path>,
    force: bool,
}

/// `restore`, with or without a config file: disaster recovery needs only
/// the remote and the passphrase.
fn restore(cli: &Cli, cancel: &CancelToken, args: &RestoreArgs<'_>) -> anyhow::Result<()> {
    let config = cli.config.as_deref().map(Config::load).transpose()?;
    let remote = match (args.from, &config) {
        // The config's `remote` is checked when it is loaded; --from gets
        // the same rule, or rclone would read it as a flag.
        (Some(from), _) if from.trim().is_empty() || from.starts_with('-') => {
            bail!(UsageError(format!(
                "--from {from:?}: a remote must not be empty or start with '-' (it would be read \
                 as a flag); give an rclone destination such as \"b2:bucket/path\""
            )))
        }
        (Some(from), _) => from.to_owned(),
        (None, Some(c)) => c.remote.clone(),
        (None, None) => bail!(UsageError(
            "restore needs --from <remote> or a config file (-c) naming the remote".into()
        )),
    };
    let target = DatasetName::parse(args.to).map_err(|e| UsageError(e.to_string()))?;
    let tools = config
        .as_ref()
        .map_or_else(zfs2cloud_core::ToolPaths::from_env, |c| c.tools.clone());
    let runner = if cli.dry_run {
        Runner::dry_run(Arc::new(|action: &str| out(&format!("[dry-run] {action}"))))
    } else {
        Runner::new()
    }
    .with_cancel(cancel.clone());
    let passphrase = match (
        args.passphrase_file,
        config.as_ref().and_then(|c| c.passphrase_file.as_deref()),
    ) {
        (Some(file), _) | (None, Some(file)) => Passphrase::from_file(file)?,
        (None, None) => Passphrase::prompt("zfs2cloud: passphrase of the backups: ")
            .context("no --passphrase-file and no terminal to ask on")?,
    };
    let store = RcloneUploader::new(
        runner.clone(),
        tools.rclone.clone(),
        RcloneOptions {
            config: args
                .rclone_config
                .map(PathBuf::from)
                .or_else(|| config.as_ref().and_then(|c| c.rclone_config.clone())),
            global_flags: config
                .as_ref()
                .map(|c| c.rclone_global_flags.clone())
                .unwrap_or_default(),
            ..RcloneOptions::default()
        },
    );
    let gpg = GpgEncryptor::new(runner.clone(), tools.gpg.clone(), passphrase);
    let backups = list_remote_backups(&store, &remote).context("cannot list the remote")?;
    let point = if args.at == "latest" {
        RestorePoint::Latest
    } else {
        RestorePoint::Snapshot(args.at.to_owned())
    };
    let chain = plan_restore(&backups, &point)?;
    out(&format!(
        "restoring {} into {target} from {remote}: {}",
        args.at,
        chain
            .iter()
            .map(|b| b.dir_name.as_str())
            .collect::<Vec<_>>()
            .join(" + ")
    ));
    let settings = RestoreSettings {
        target: target.clone(),
        force: args.force,
        mount: true,
        zfs: tools.zfs.clone(),
        remote: remote.clone(),
        cancel: cancel.clone(),
    };
    restore_chain(&store, &gpg, &runner, &chain, &settings).context("restore")?;
    if !runner.is_dry_run() {
        out(&format!("restored {target}"));
    }
    Ok(())
}

fn status(app: &App, json: bool, with_remote: bool) -> anyhow::Result<()> {
    let store = app.uploader();
    let remote: Option<&dyn zfs2cloud_core::Uploader> =
        if with_remote { Some(&store) } else { None };
    let report = zfs2cloud_core::collect_status(&app.zfs, &app.config, app.now, remote)?;
    if json {
        out(&serde_json::to_string_pretty(&report)?);
    } else {
        out(zfs2cloud_core::render_table(&report).trim_end());
    }
    Ok(())
}

fn verify(app: &App, only: Option<&str>, deep: bool) -> anyhow::Result<()> {
    let store = app.uploader();
    let backups =
        list_remote_backups(&store, &app.config.remote).context("cannot list the remote")?;
    let only: Option<Vec<String>> = only.map(|o| vec![o.to_owned()]);
    if deep && app.runner.is_dry_run() {
        // A dry run receives nothing, so it could prove nothing; saying OK
        // would be a lie.
        bail!(UsageError(
            "verify --deep cannot be a dry run: it must download and receive to prove anything"
                .into()
        ));
    }
    let verdicts = if deep {
        let Some(gpg) = app.encryptor()? else {
            bail!(UsageError("verify --deep needs passphrase_file".into()));
        };
        let pool = app
            .config
            .dataset
            .as_str()
            .split('/')
            .next()
            .unwrap_or_default();
        let scratch = zfs2cloud_core::scratch_dataset(pool)
            .ok_or_else(|| anyhow::anyhow!("no valid scratch dataset name in pool {pool}"))?;
        let settings = RestoreSettings {
            target: scratch,
            force: false,
            mount: false,
            zfs: app.config.tools.zfs.clone(),
            remote: app.config.remote.clone(),
            cancel: app.runner.cancel_token().clone(),
        };
        verify_deep(
            &store,
            &gpg,
            &app.runner,
            &backups,
            only.as_deref(),
            &settings,
        )?
    } else {
        verify_listing(&backups, only.as_deref())
    };
    if verdicts.is_empty() {
        bail!("no backup to verify on {}", app.config.remote);
    }
    let mut bad = 0;
    for v in &verdicts {
        match &v.health {
            Health::Ok => out(&format!("OK          {}", v.backup)),
            Health::Damaged(why) => {
                bad += 1;
                out(&format!("DAMAGED     {}: {why}", v.backup));
            }
            Health::Incomplete(why) => {
                bad += 1;
                out(&format!("INCOMPLETE  {}: {why}", v.backup));
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} backup(s) are not OK", verdicts.len());
    }
    Ok(())
}

fn show_verdict(what: &str, verdict: &Verdict, act: bool) {
    match verdict {
        Verdict::Remove if act => out(&format!("removed  {what}")),
        Verdict::Remove => out(&format!("would remove  {what}")),
        Verdict::Keep(why) => out(&format!("keep     {what}  ({why})")),
    }
}

fn prune_intermediates(app: &App, yes: bool) -> anyhow::Result<()> {
    app.require_intermediate("prune-intermediates")?;
    let act = yes && !app.runner.is_dry_run();
    let _lock = if act { app.lock()? } else { None };
    let layout = app.layout();
    let snapshots = app.zfs.list(&app.config.dataset)?;
    let exports = layout
        .complete_exports(&app.config.dataset)
        .with_context(|| format!("cannot read {}", layout.basedir().display()))?;
    let uploaded =
        |e: &zfs2cloud_core::LocalExport| export_confirmed(&snapshots, e, &app.config.remote);
    let decisions =
        prune_exports(&layout, &exports, &uploaded, act).context("step prune-intermediates")?;
    for d in &decisions {
        show_verdict(&d.dir.display().to_string(), &d.verdict, act);
    }
    if !act {
        out("(dry run: nothing was deleted; pass -y to delete)");
    }
    Ok(())
}

fn prune_snapshots_cmd(app: &App, yes: bool) -> anyhow::Result<()> {
    let act = yes && !app.runner.is_dry_run();
    let _lock = if act { app.lock()? } else { None };
    let snapshots = app.zfs.list(&app.config.dataset)?;
    let decisions = prune_snapshots(
        &app.zfs,
        &app.config.dataset,
        &snapshots,
        &zfs2cloud_core::SnapshotRetention::from_config(&app.config, app.now),
        act,
    )
    .context("step prune-snapshots")?;
    for d in &decisions {
        show_verdict(&d.name.to_string(), &d.verdict, act);
    }
    if !act {
        out("(dry run: nothing was destroyed; pass -y to destroy)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::guarded;

    #[test]
    fn a_panic_becomes_an_internal_error_not_an_abort() {
        assert_eq!(guarded(|| 7), Ok(7));
        let caught = guarded(|| -> u8 { panic!("simulated bug") });
        assert_eq!(caught, Err(()));
        // A thread's panic does not escape through it either.
        let caught = guarded(|| std::thread::spawn(|| panic!("in a worker")).join().is_err());
        assert_eq!(caught, Ok(true));
    }
}
