//! What every command that reads a config needs: the config, the runner
//! (dry run, cancellation), the process-backed stages and the run's clock.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::bail;
use chrono::{DateTime, Utc};

use zfs2cloud_core::{
    now, Backup, CancelToken, Config, ConfigFile, Mode, ProcessStages, RunLock, Runner,
};

use crate::args::Cli;

/// A failure that is the user's input rather than the run: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Prints one line of results on stdout. Control characters are escaped
/// (names come from files, zfs and the remote); JSON stays valid JSON.
pub fn out(line: &str) {
    crate::progress::console::above_bars(|| {
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) must not turn success into a panic.
        let _ = writeln!(stdout, "{}", zfs2cloud_core::escape_controls(line));
    });
}

/// Prints one line for people on stderr: where `--json` sends what would
/// otherwise go to stdout, which then holds the JSON alone.
pub fn note(line: &str) {
    crate::progress::console::above_bars(|| {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{}", zfs2cloud_core::escape_controls(line));
    });
}

/// The runner for this invocation: a dry run prints what it would change
/// (on stderr with `--json`).
pub fn runner(cli: &Cli, cancel: &CancelToken) -> Runner {
    if cli.dry_run {
        let print: fn(&str) = if cli.command.json() { note } else { out };
        Runner::dry_run(Arc::new(move |action: &str| {
            print(&format!("[dry-run] {action}"));
        }))
    } else {
        Runner::new()
    }
    .with_cancel(cancel.clone())
}

/// Everything a command needs, built from one job's config.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub runner: Runner,
    pub stages: ProcessStages,
    pub now: DateTime<Utc>,
    /// The job's lock is held by the caller (a member of a recursive
    /// job's tree runs under the job's lock): commands take none.
    pub under_job_lock: bool,
}

/// The config file named on the command line, every job validated.
pub fn load_config_file(cli: &Cli) -> anyhow::Result<ConfigFile> {
    let Some(path) = &cli.config else {
        bail!(UsageError(
            "no config file given: pass -c FILE or set ZFS2CLOUD_CONFIG".into()
        ));
    };
    Ok(ConfigFile::load(path)?)
}

impl App {
    /// The stages for `config`, on the run's clock.
    pub fn new(cli: &Cli, cancel: &CancelToken, config: Config) -> anyhow::Result<Self> {
        let now = now().map_err(|e| UsageError(e.to_string()))?;
        let runner = runner(cli, cancel);
        let stages = ProcessStages::new(&config, &runner)?;
        Ok(Self {
            config,
            runner,
            stages,
            now,
            under_job_lock: false,
        })
    }

    /// The same runner and clock for a member of this job's tree.
    pub fn member(&self, config: Config) -> anyhow::Result<Self> {
        let stages = ProcessStages::new(&config, &self.runner)?;
        Ok(Self {
            config,
            runner: self.runner.clone(),
            stages,
            now: self.now,
            under_job_lock: true,
        })
    }

    /// The steps of this config, as `backup` runs them.
    pub fn backup(&self) -> Backup<'_> {
        self.stages.backup(
            &self.config,
            &self.runner,
            self.now,
            crate::progress::shown(),
        )
    }

    /// The run lock for a standalone command (a dry run takes none).
    pub fn lock(&self) -> anyhow::Result<Option<RunLock>> {
        if self.runner.is_dry_run() || self.under_job_lock {
            return Ok(None);
        }
        Ok(Some(RunLock::acquire(
            &self.config.intermediate_basedir,
            self.now,
        )?))
    }

    /// Refuses `command` unless the config is in intermediate mode.
    pub fn require_intermediate(&self, command: &str) -> anyhow::Result<()> {
        if self.config.mode != Mode::Intermediate {
            bail!(UsageError(format!(
                "{}: {command} is for intermediate mode, but mode = \"file\"",
                self.config.path.display()
            )));
        }
        Ok(())
    }
}
