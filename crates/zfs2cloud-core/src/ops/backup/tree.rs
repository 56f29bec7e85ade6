//! A recursive job: one `zfs snapshot -r` for the whole tree, then every
//! other step for each member on its own, as if it were a job of its own
//! (its own chain, directories and holds). A member that fails is left out
//! of the later steps; the others go on, and the run fails at the end,
//! naming every member that failed.

use std::fmt;

use crate::config::Config;
use crate::model::{SnapshotName, Step};
use crate::policy::{member_config, plan_tree, TreePlan};
use crate::stages::ZfsError;
use crate::util::error_chain;

use super::{Backup, RunState, StepError, StepReport};

/// A member of a tree that failed a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFailure {
    /// The member.
    pub dataset: String,
    /// The step it failed (`tree` for a dataset that cannot be a member).
    pub step: String,
    /// Why, with its causes.
    pub error: String,
}

/// The members of a tree that failed, for [`StepError::Members`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFailures {
    /// Each failure, in tree order.
    pub failures: Vec<MemberFailure>,
    /// How many datasets the tree had.
    pub members: usize,
}

impl fmt::Display for MemberFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} datasets of the tree failed: ",
            self.failures.len(),
            self.members
        )?;
        for (i, m) in self.failures.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}{} ({}: {})", m.dataset, m.step, m.error)?;
        }
        Ok(())
    }
}

/// Steps a recursive job runs once for the whole tree; every other step
/// runs for each member.
pub(super) fn runs_once(step: &Step) -> bool {
    matches!(
        step,
        Step::Lock | Step::Unlock | Step::Snapshot | Step::Script(_)
    )
}

impl Backup<'_> {
    /// The tree of a recursive job as it is now: members and exclusions.
    ///
    /// # Errors
    ///
    /// [`ZfsError`] if the tree cannot be listed.
    pub fn tree(&self) -> Result<TreePlan, ZfsError> {
        let entries = self.snapshotter.list_tree(&self.config.dataset)?;
        Ok(plan_tree(
            &self.config.dataset,
            &entries,
            &self.config.exclude,
        ))
    }

    /// The same stages, run, clock and progress for another configuration
    /// (a member of the tree).
    #[must_use]
    pub fn with_config<'c>(&'c self, config: &'c Config) -> Backup<'c> {
        Backup { config, ..*self }
    }

    /// The snapshot step of a tree: the tree is listed first (so a dry run
    /// shows it too), then `zfs snapshot -r` takes it all at one instant,
    /// and the snapshots of excluded datasets are destroyed again at once,
    /// so that nothing pins their space.
    pub(super) fn snapshot_tree(&self, state: &mut RunState) -> Result<String, StepError> {
        let tree = self.tree()?;
        let name = self.snapshot(state.lock.is_some())?;
        for excluded in &tree.excluded {
            let Ok(snap) = SnapshotName::new(excluded.dataset.clone(), name.snap()) else {
                continue;
            };
            if let Err(e) = self.snapshotter.destroy(&snap) {
                log::warn!(
                    "could not destroy {snap} of excluded {} (prune it by hand): {}",
                    excluded.dataset,
                    error_chain(&e)
                );
            }
        }
        let verb = if self.runner.is_dry_run() {
            "dry run: would create"
        } else {
            "created"
        };
        let summary = format!(
            "{verb} {name} recursively: {} dataset(s) to back up, {} excluded",
            tree.members.len(),
            tree.excluded.len()
        );
        state.snapshot = Some(name);
        state.tree = Some(tree);
        Ok(summary)
    }

    /// Runs `step` for each member of the tree that has not failed yet,
    /// and gives a report per member that did it. A member's failure is
    /// kept in `state` and the step goes on with the next member.
    pub(super) fn run_tree_step(
        &self,
        step: &Step,
        state: &mut RunState,
    ) -> Result<(String, Vec<StepReport>), StepError> {
        if state.tree.is_none() {
            // A sequence without a snapshot step: the tree as it is now.
            state.tree = Some(self.tree()?);
            self.fail_unusable_members(state);
        }
        let tree = state.tree.clone().unwrap_or_default();
        let mut reports = Vec::new();
        let mut failed = 0;
        for member in &tree.members {
            let dataset = member.dataset.to_string();
            if state.failed.iter().any(|f| f.dataset == dataset) {
                continue;
            }
            let config = member_config(self.config, member);
            let backup = self.with_config(&config);
            let mut member_state = RunState {
                snapshot: state
                    .snapshot
                    .as_ref()
                    .and_then(|s| SnapshotName::new(member.dataset.clone(), s.snap()).ok()),
                ..RunState::default()
            };
            let started = std::time::Instant::now();
            match backup.run_step_limited(step, &mut member_state) {
                Ok(summary) => {
                    if member.relative.is_empty() && member_state.kind.is_some() {
                        state.kind = member_state.kind;
                    }
                    reports.push(StepReport {
                        step: step.to_string(),
                        duration: started.elapsed(),
                        summary: format!("{dataset}: {summary}"),
                        bytes: member_state.step_bytes,
                        uploaded: member_state.step_uploaded,
                        kind: member_state.kind.filter(|_| *step == Step::Export),
                    });
                }
                Err(error) => {
                    failed += 1;
                    log::error!("step {step} of {dataset} failed: {}", error_chain(&error));
                    state.failed.push(MemberFailure {
                        dataset,
                        step: step.to_string(),
                        error: error_chain(&error),
                    });
                }
            }
        }
        let summary = format!("{} dataset(s) done, {failed} failed", reports.len());
        Ok((summary, reports))
    }

    /// Records the datasets the tree cannot hold (not left out by choice)
    /// as failures, so that the run says so.
    pub(super) fn fail_unusable_members(&self, state: &mut RunState) {
        let Some(tree) = &state.tree else { return };
        for e in tree.excluded.iter().filter(|e| !e.chosen) {
            state.failed.push(MemberFailure {
                dataset: e.dataset.to_string(),
                step: "tree".into(),
                error: e.reason.clone(),
            });
        }
    }

    /// The run's failure for the members that failed, if any.
    pub(super) fn member_failures(&self, state: &RunState) -> Option<StepError> {
        if state.failed.is_empty() {
            return None;
        }
        let members = state.tree.as_ref().map_or(0, |t| {
            t.members.len() + t.excluded.iter().filter(|e| !e.chosen).count()
        });
        Some(StepError::Members(MemberFailures {
            failures: state.failed.clone(),
            members,
        }))
    }
}
