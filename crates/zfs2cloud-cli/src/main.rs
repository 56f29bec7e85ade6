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
use std::process::ExitCode;

use clap::Parser;

use zfs2cloud_core::{
    CancelToken, ConfigError, ExportKind, ExportOptions, LockError, Step, StepError,
};

use app::{App, UsageError};
use args::{Cli, Command};
use cmd::backup::JobsFailed;

mod app;
mod args;
mod cmd;
mod logger;
mod progress;
mod render;
mod signals;

/// Exit code: a step failed.
const EXIT_FAILURE: u8 = 1;
/// Exit code: invalid configuration or usage (clap uses 2 as well).
const EXIT_CONFIG: u8 = 2;
/// Exit code: another run holds the lock (EX_TEMPFAIL).
const EXIT_LOCKED: u8 = 75;
/// A panic: a bug in zfs2cloud (`EX_SOFTWARE`).
const EXIT_INTERNAL: u8 = 70;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init(cli.verbose);
    progress::init(&cli);
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
    if let Some(jobs) = err.downcast_ref::<JobsFailed>() {
        return if jobs.all_locked {
            EXIT_LOCKED
        } else {
            EXIT_FAILURE
        };
    }
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
    // `{:#}` prints the whole cause chain on one line. Names in it come
    // from files, zfs and the remote: no byte of them reaches the terminal
    // as a control sequence.
    let text = format!("{err:#}");
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stderr,
        "zfs2cloud: error: {}",
        zfs2cloud_core::escape_controls(&text)
    );
}

fn run(cli: &Cli, cancel: &CancelToken) -> anyhow::Result<()> {
    // These need no config file (init writes one).
    match &cli.command {
        Command::Completions { shell } => return cmd::completions::run(*shell),
        Command::Man => return cmd::man::run(),
        Command::Init(args) => return cmd::init::run(cli.config.as_deref(), args, cli.dry_run),
        _ => {}
    }
    if let Command::Restore {
        to,
        at,
        from,
        passphrase_file,
        secret_key_file,
        rclone_config,
        force,
        recursive,
        stream,
        json,
    } = &cli.command
    {
        let args = cmd::restore::RestoreArgs {
            to,
            at,
            from: from.as_deref(),
            passphrase_file: passphrase_file.as_deref(),
            secret_key_file: secret_key_file.as_deref(),
            rclone_config: rclone_config.as_deref(),
            force: *force,
            recursive: *recursive,
            stream,
            json: *json,
        };
        return cmd::restore::run(cli, cancel, &args);
    }
    let file = app::load_config_file(cli)?;
    let jobs = file.select(&cli.jobs)?;
    match &cli.command {
        Command::Backup { parallel, json } => {
            cmd::backup::run(cli, cancel, &jobs, *parallel, *json)
        }
        Command::CheckConfig { online } => cmd::check_config::run(&file, &jobs, *online),
        command => cmd::jobs::run_each(cli, cancel, &jobs, command),
    }
}

/// Runs one command for one job (or one member of a recursive job's tree).
fn dispatch(app: &App, command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Snapshot => cmd::snapshot::run(app),
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
            let options = ExportOptions {
                target: snapshot.clone(),
                force,
            };
            cmd::export::run(app, &options)
        }
        Command::Upload { snapshot } => cmd::upload::run(app, snapshot.as_deref()),
        Command::PruneIntermediates { yes, json } => cmd::prune::intermediates(app, *yes, *json),
        Command::PruneSnapshots { yes, json } => cmd::prune::snapshots(app, *yes, *json),
        Command::PruneRemote { yes, json } => cmd::prune::remote(app, *yes, *json),
        Command::Status { json, remote } => cmd::status::run(app, *json, *remote),
        Command::Verify {
            snapshot,
            deep,
            passphrase_file,
            secret_key_file,
            stream,
            json,
            ..
        } => cmd::verify::run(
            app,
            snapshot.as_deref(),
            deep.then_some(cmd::verify::DeepSecrets {
                passphrase_file: passphrase_file.as_deref(),
                secret_key_file: secret_key_file.as_deref(),
            }),
            stream,
            *json,
        ),
        Command::MountSnapshot => cmd::filemode::run(app, &Step::MountSnapshot),
        Command::UploadSnapshotFiles => cmd::filemode::run(app, &Step::UploadSnapshotFiles),
        Command::UmountSnapshot => cmd::filemode::run(app, &Step::UmountSnapshot),
        // Handled by `run`: they work on the whole file, or need no config.
        Command::Backup { .. }
        | Command::CheckConfig { .. }
        | Command::Restore { .. }
        | Command::Completions { .. }
        | Command::Man
        | Command::Init(_) => Ok(()),
    }
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
