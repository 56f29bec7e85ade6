//! Every command but `backup`, `check-config` and `restore`, for each job
//! asked for, and for each member of a recursive job's tree. With one job
//! in the single-dataset form it runs exactly as before; with several, a
//! header names each, a failure is reported and the next one runs, and
//! the exit code says whether any failed.

use zfs2cloud_core::{member_config, CancelToken, Config, TreePlan};

use crate::app::{out, App};
use crate::args::{Cli, Command};
use crate::cmd::backup::{report_failure, JobsFailed};

/// Runs `command` for each of `jobs`.
pub fn run_each(
    cli: &Cli,
    cancel: &CancelToken,
    jobs: &[&Config],
    command: &Command,
) -> anyhow::Result<()> {
    let quiet = command.json();
    if let [job] = jobs {
        if !job.recursive {
            return crate::dispatch(&App::new(cli, cancel, (*job).clone())?, command);
        }
    }
    let mut outcome = Outcome::default();
    for job in jobs {
        let name = job.name();
        if !quiet && jobs.len() > 1 {
            out(&format!("== job {name} =="));
        }
        let result = App::new(cli, cancel, (*job).clone()).and_then(|app| {
            if job.recursive && per_member(command) {
                run_tree(&app, command, quiet)
            } else {
                crate::dispatch(&app, command)
            }
        });
        outcome.record(result, &format!("job {name}"));
    }
    outcome.finish()
}

/// Commands that work on one dataset's chain: a recursive job runs them
/// for each member. The others (`snapshot`) work on the tree at once.
fn per_member(command: &Command) -> bool {
    matches!(
        command,
        Command::Export { .. }
            | Command::Upload { .. }
            | Command::PruneIntermediates { .. }
            | Command::PruneSnapshots { .. }
            | Command::PruneRemote { .. }
            | Command::Verify { .. }
            | Command::Status { .. }
    )
}

/// Commands that change the job's directories take its lock once for the
/// whole tree.
fn locks(command: &Command) -> bool {
    match command {
        Command::Export { .. } | Command::Upload { .. } => true,
        Command::PruneIntermediates { yes, .. }
        | Command::PruneSnapshots { yes, .. }
        | Command::PruneRemote { yes, .. } => *yes,
        _ => false,
    }
}

/// `command` for each member of the job's tree, parents first.
fn run_tree(app: &App, command: &Command, quiet: bool) -> anyhow::Result<()> {
    if matches!(command, Command::PruneRemote { .. }) {
        // Once for the tree, not once for each member.
        crate::cmd::prune::require_remote_retention(app)?;
    }
    let _lock = if locks(command) { app.lock()? } else { None };
    let tree: TreePlan = app.backup().tree()?;
    let mut outcome = Outcome::default();
    for e in tree.excluded.iter().filter(|e| !e.chosen) {
        outcome.record(Err(anyhow::anyhow!("{}", e.reason)), e.dataset.as_str());
    }
    for member in &tree.members {
        if !quiet {
            out(&format!("-- {} --", member.dataset));
        }
        let result = app
            .member(member_config(&app.config, member))
            .and_then(|m| crate::dispatch(&m, command));
        outcome.record(result, member.dataset.as_str());
    }
    outcome.finish()
}

/// Failures so far, each reported when it happened.
#[derive(Default)]
struct Outcome {
    total: usize,
    failed: usize,
    locked: usize,
}

impl Outcome {
    fn record(&mut self, result: anyhow::Result<()>, what: &str) {
        self.total += 1;
        if let Err(e) = result {
            self.failed += 1;
            if report_failure(e, what) {
                self.locked += 1;
            }
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        JobsFailed::check(self.total, self.failed, self.locked)
    }
}
