//! The `snapshot` step: `pre_snapshot` hook, `zfs snapshot`, `post_snapshot`
//! hook.
//!
//! Downtime is the time between the two hooks, so nothing else happens in
//! between. Once `pre_snapshot` has started, `post_snapshot` always runs,
//! whether `pre_snapshot` itself, or `zfs snapshot`, fails: a half-stopped
//! application is better restarted than left down until someone notices.

use crate::config::{HookCommand, Hooks};
use crate::model::{DatasetName, NameError, SnapTime, SnapshotName};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use crate::model::ExportKind;
use crate::process::{CommandLine, ProcessError, RunOptions, Runner};
use crate::stages::Snapshotter;
use crate::stages::ZfsError;

/// A hook that failed.
#[derive(Debug, thiserror::Error)]
#[error("the {name} hook failed")]
pub struct HookError {
    /// Which hook (`pre_snapshot`, …).
    pub name: String,
    /// How it failed.
    #[source]
    pub source: ProcessError,
}

/// Errors of the snapshot step.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot name is taken. Nothing was changed and no hook ran.
    #[error("snapshot {0} already exists; nothing was changed (is another run at the same second, or is ZFS2CLOUD_NOW fixed?)")]
    Exists(String),
    /// The clock is behind the newest zfs2cloud snapshot. Nothing was changed.
    #[error("the new snapshot name {new} is not after the newest zfs2cloud snapshot {newest}; the clock went backwards (or snapshot_time_zone changed). Nothing was changed")]
    ClockBehind {
        /// The name that would have been used.
        new: String,
        /// The newest existing one.
        newest: String,
    },
    /// The name could not be built.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Listing the existing snapshots failed. Nothing was changed.
    #[error("cannot list the snapshots of the dataset")]
    List(#[source] ZfsError),
    /// `pre_snapshot` failed; no snapshot was taken. `post_snapshot` ran.
    #[error("no snapshot was taken{}", post_note(.post.as_ref()))]
    PreSnapshot {
        /// The pre_snapshot failure.
        #[source]
        source: HookError,
        /// A post_snapshot failure as well, if any.
        post: Option<HookError>,
    },
    /// `zfs snapshot` failed. `post_snapshot` ran.
    #[error("zfs snapshot failed{}", post_note(.post.as_ref()))]
    Zfs {
        /// The zfs failure.
        #[source]
        source: ZfsError,
        /// A post_snapshot failure as well, if any.
        post: Option<HookError>,
    },
    /// The snapshot was taken but `post_snapshot` failed: the application
    /// may still be down.
    #[error("snapshot {snapshot} was taken, but post_snapshot failed: the application may still be stopped")]
    PostSnapshot {
        /// The snapshot that exists now.
        snapshot: String,
        /// The failure.
        #[source]
        source: HookError,
    },
}

fn post_note(post: Option<&HookError>) -> String {
    match post {
        None => String::new(),
        Some(e) => format!(
            "; post_snapshot failed as well, the application may still be stopped: {}",
            crate::util::error_chain(e)
        ),
    }
}

/// What a hook is told about the run, through its environment.
#[derive(Debug, Clone, Copy)]
pub struct HookEnv<'a> {
    /// `ZFS2CLOUD_DATASET`.
    pub dataset: &'a DatasetName,
    /// `ZFS2CLOUD_SNAPSHOT`: the run's snapshot, once it is known.
    pub snapshot: Option<&'a SnapshotName>,
    /// `ZFS2CLOUD_KIND`: `full` or `incremental`, once exported.
    pub kind: Option<ExportKind>,
    /// `ZFS2CLOUD_FAILED_STEP`, for `on_failure`.
    pub failed_step: Option<&'a str>,
}

/// How a hook runs.
#[derive(Debug, Clone, Default)]
pub struct HookOptions {
    /// Text on its stdin (`on_failure` gets the error).
    pub stdin: Option<String>,
    /// Stop it after this long.
    pub timeout: Option<Duration>,
    /// Run it even when the run is interrupted: `post_snapshot` restarts
    /// the application whatever happens.
    pub must_run: bool,
}

/// Runs one hook with the run's context in its environment
/// (`ZFS2CLOUD_HOOK`, `ZFS2CLOUD_DATASET`, `ZFS2CLOUD_SNAPSHOT`,
/// `ZFS2CLOUD_KIND`, `ZFS2CLOUD_FAILED_STEP`). Its stdout is logged. In
/// dry-run mode it is reported, not run.
///
/// # Errors
///
/// [`HookError`] if it cannot start, exits unsuccessfully, or times out.
pub fn run_hook(
    runner: &Runner,
    name: &str,
    hook: &HookCommand,
    env: &HookEnv<'_>,
    options: &HookOptions,
) -> Result<(), HookError> {
    let Some((program, args)) = hook.argv.split_first() else {
        return Ok(());
    };
    let mut cmd = CommandLine::new(program)
        .args(args)
        .env("ZFS2CLOUD_HOOK", name)
        .env("ZFS2CLOUD_DATASET", env.dataset.as_str());
    if let Some(s) = env.snapshot {
        cmd = cmd.env("ZFS2CLOUD_SNAPSHOT", s.to_string());
    }
    if let Some(k) = env.kind {
        cmd = cmd.env("ZFS2CLOUD_KIND", k.as_str());
    }
    if let Some(step) = env.failed_step {
        cmd = cmd.env("ZFS2CLOUD_FAILED_STEP", step);
    }
    log::info!("running {name} hook: {cmd}");
    let run_options = RunOptions {
        stdin_data: options.stdin.clone().map(String::into_bytes),
        timeout: options.timeout,
        ignore_cancel: options.must_run,
        ..RunOptions::default()
    };
    let out = runner
        .mutate_with(&cmd, &run_options)
        .map_err(|source| HookError {
            name: name.to_owned(),
            source,
        })?;
    if let Some(out) = out {
        for line in out.stdout_lossy().lines() {
            log::info!("{name}: {line}");
        }
    }
    Ok(())
}

/// File in `intermediate_basedir` that exists while the application is
/// stopped: written before `pre_snapshot`, removed once `post_snapshot`
/// has run. A run killed in between (SIGKILL, power loss) cannot run
/// `post_snapshot`; the next run finds the file and runs it first.
pub const SNAPSHOT_WINDOW_FILE: &str = "snapshot-window";

/// Runs `post_snapshot` for a run that died between the hooks (see
/// [`SNAPSHOT_WINDOW_FILE`]), then removes the marker. Call it holding the
/// run lock, so that the marker cannot be a live run's.
fn recover_window(marker: &Path, post: &dyn Fn() -> Option<HookError>) {
    let Ok(left) = std::fs::read_to_string(marker) else {
        return;
    };
    log::warn!(
        "an earlier run was stopped between pre_snapshot and post_snapshot ({}); running \
         post_snapshot now so that the application is not left stopped",
        left.trim()
    );
    if let Some(e) = post() {
        log::error!("{}", crate::util::error_chain(&e));
    }
    if let Err(e) = std::fs::remove_file(marker) {
        log::warn!("could not remove {}: {e}", marker.display());
    }
}

/// How [`take_snapshot`] runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotOptions<'a> {
    /// The limit of each hook.
    pub hook_timeout: Option<Duration>,
    /// The marker of the downtime window, under the run lock.
    pub window: Option<&'a Path>,
    /// `zfs snapshot -r`: the dataset's whole tree at one instant.
    pub recursive: bool,
}

/// Takes the snapshot `dataset@<at>` between the two hooks.
///
/// Before anything runs, the name is checked against the existing
/// snapshots: if it exists, or is not after the newest zfs2cloud snapshot,
/// the step fails and changes nothing. With `window` (the marker path,
/// [`SNAPSHOT_WINDOW_FILE`] in `intermediate_basedir`; the caller holds the
/// run lock), a `post_snapshot` owed by a killed run is run first, and the
/// marker brackets this run's own window.
///
/// # Errors
///
/// [`SnapshotError`] describing what failed and whether a snapshot exists.
pub fn take_snapshot(
    snapshotter: &dyn Snapshotter,
    runner: &Runner,
    hooks: &Hooks,
    dataset: &DatasetName,
    at: SnapTime,
    options: &SnapshotOptions<'_>,
) -> Result<SnapshotName, SnapshotError> {
    let hook_timeout = options.hook_timeout;
    let window = options
        .window
        .filter(|_| !runner.is_dry_run() && hooks.post_snapshot.is_some());
    let post_options = HookOptions {
        timeout: hook_timeout,
        must_run: true,
        ..HookOptions::default()
    };
    if let Some(marker) = window {
        let env = HookEnv {
            dataset,
            snapshot: None,
            kind: None,
            failed_step: None,
        };
        recover_window(marker, &|| {
            hooks
                .post_snapshot
                .as_ref()
                .and_then(|h| run_hook(runner, "post_snapshot", h, &env, &post_options).err())
        });
    }
    let name = SnapshotName::new(dataset.clone(), &at.to_string())?;
    check_new_name(snapshotter, &name, at)?;
    let env = HookEnv {
        dataset,
        snapshot: Some(&name),
        kind: None,
        failed_step: None,
    };
    let post = || {
        let result = hooks
            .post_snapshot
            .as_ref()
            .map(|h| run_hook(runner, "post_snapshot", h, &env, &post_options))
            .transpose()
            .err();
        if let Some(marker) = window {
            let _ = std::fs::remove_file(marker);
        }
        result
    };
    if let (Some(marker), Some(_)) = (window, &hooks.pre_snapshot) {
        open_window(marker, &name);
    }
    if let Some(pre) = &hooks.pre_snapshot {
        let options = HookOptions {
            timeout: hook_timeout,
            ..HookOptions::default()
        };
        if let Err(source) = run_hook(runner, "pre_snapshot", pre, &env, &options) {
            return Err(SnapshotError::PreSnapshot {
                source,
                post: post(),
            });
        }
    }
    // Downtime: only `zfs snapshot` runs here.
    let created = if options.recursive {
        snapshotter.create_recursive(&name)
    } else {
        snapshotter.create(&name)
    };
    let post_result = post();
    match (created, post_result) {
        (Err(source), post) => Err(SnapshotError::Zfs { source, post }),
        (Ok(()), Some(source)) => Err(SnapshotError::PostSnapshot {
            snapshot: name.to_string(),
            source,
        }),
        (Ok(()), None) => Ok(name),
    }
}

/// Refuses `name` if it exists, or if it is not after the newest of
/// zfs2cloud's snapshots (a clock that went back), before anything runs.
fn check_new_name(
    snapshotter: &dyn Snapshotter,
    name: &SnapshotName,
    at: SnapTime,
) -> Result<(), SnapshotError> {
    let existing = snapshotter
        .list(name.dataset())
        .map_err(SnapshotError::List)?;
    if existing.iter().any(|s| &s.name == name) {
        return Err(SnapshotError::Exists(name.to_string()));
    }
    if let Some(newest) = existing
        .iter()
        .filter_map(|s| s.own_time().map(|t| (t, s)))
        .max_by_key(|(t, _)| *t)
        .filter(|(t, _)| *t >= at)
    {
        return Err(SnapshotError::ClockBehind {
            new: name.to_string(),
            newest: newest.1.name.to_string(),
        });
    }
    Ok(())
}

/// Writes the window marker naming `name` (best effort: without it only
/// the recovery after a SIGKILL between the hooks is lost).
fn open_window(marker: &Path, name: &SnapshotName) {
    let written = marker
        .parent()
        .map_or(Ok(()), |dir| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
        })
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(marker)
        })
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{name}\n").as_bytes()));
    if let Err(e) = written {
        log::warn!("could not write {}: {e}", marker.display());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::model::SnapshotInfo;
    use crate::stages::MockSnapshotter;
    use std::ffi::OsString;
    use std::path::Path;

    fn ds() -> DatasetName {
        DatasetName::parse("tank/data").unwrap()
    }

    fn at(s: &str) -> SnapTime {
        SnapTime::parse(s).unwrap()
    }

    fn existing(names: &[&str]) -> Vec<SnapshotInfo> {
        names
            .iter()
            .map(|n| SnapshotInfo {
                level: None,
                name: SnapshotName::parse(&format!("tank/data@{n}")).unwrap(),
                userrefs: 0,
                kind: None,
                base: None,
                uploaded: None,
            })
            .collect()
    }

    /// A hook that appends its name to `log` and exits with `code`.
    fn hook(log: &Path, name: &str, code: i32) -> HookCommand {
        HookCommand {
            argv: vec![
                OsString::from("/bin/sh"),
                "-c".into(),
                format!("echo {name} >> '{}'; exit {code}", log.display()).into(),
            ],
        }
    }

    fn read_log(log: &Path) -> String {
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// pre_snapshot exiting with `pre_code`, post_snapshot succeeding; both
    /// log to `log`.
    fn pre_post(log: &Path, pre_code: i32) -> Hooks {
        Hooks {
            pre_snapshot: Some(hook(log, "pre", pre_code)),
            post_snapshot: Some(hook(log, "post", 0)),
            ..Hooks::default()
        }
    }

    #[test]
    fn a_post_snapshot_owed_by_a_killed_run_runs_first_and_the_window_is_marked() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let marker = d.path().join("base").join(SNAPSHOT_WINDOW_FILE);
        std::fs::create_dir(d.path().join("base")).unwrap();
        // Left by a run killed after pre_snapshot.
        std::fs::write(&marker, "tank/data@20240101000000\n").unwrap();
        let mut hooks = pre_post(&log, 0);
        // pre_snapshot sees the marker of its own window.
        hooks.pre_snapshot = Some(HookCommand {
            argv: vec![
                OsString::from("/bin/sh"),
                "-c".into(),
                format!(
                    "test -f '{}' && echo pre-marked >> '{}'",
                    marker.display(),
                    log.display()
                )
                .into(),
            ],
        });
        let mut mock = MockSnapshotter::new();
        mock.expect_list()
            .returning(|_| Ok(existing(&["20240101000000"])));
        mock.expect_create().times(1).returning(|_| Ok(()));
        let runner = Runner::new();
        take_snapshot(
            &mock,
            &runner,
            &hooks,
            &ds(),
            at("20240102000000"),
            &SnapshotOptions {
                window: Some(&marker),
                ..SnapshotOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "post\npre-marked\npost\n"
        );
        assert!(!marker.exists(), "the window is closed");
    }

    #[test]
    fn hooks_surround_the_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let hooks = pre_post(&log, 0);
        let mut mock = MockSnapshotter::new();
        mock.expect_list()
            .returning(|_| Ok(existing(&["20240101000000"])));
        let log2 = log.clone();
        mock.expect_create().times(1).returning(move |s| {
            std::fs::write(&log2, format!("{}create {s}\n", read_log(&log2))).unwrap();
            Ok(())
        });
        let name = take_snapshot(
            &mock,
            &Runner::new(),
            &hooks,
            &ds(),
            at("20240102000000"),
            &SnapshotOptions::default(),
        )
        .unwrap();
        assert_eq!(name.to_string(), "tank/data@20240102000000");
        assert_eq!(
            read_log(&log),
            "pre\ncreate tank/data@20240102000000\npost\n"
        );
    }

    #[test]
    fn post_runs_when_pre_fails_and_no_snapshot_is_taken() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let hooks = pre_post(&log, 1);
        let mut mock = MockSnapshotter::new();
        mock.expect_list().returning(|_| Ok(vec![]));
        mock.expect_create().times(0);
        let err = take_snapshot(
            &mock,
            &Runner::new(),
            &hooks,
            &ds(),
            at("20240102000000"),
            &SnapshotOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, SnapshotError::PreSnapshot { post: None, .. }),
            "{err}"
        );
        assert_eq!(read_log(&log), "pre\npost\n");
    }

    #[test]
    fn post_runs_when_zfs_snapshot_fails() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let hooks = pre_post(&log, 0);
        let mut mock = MockSnapshotter::new();
        mock.expect_list().returning(|_| Ok(vec![]));
        mock.expect_create().returning(|_| {
            Err(ZfsError::Process(ProcessError::Io {
                command: "zfs snapshot".into(),
                source: std::io::Error::other("pool suspended"),
            }))
        });
        let err = take_snapshot(
            &mock,
            &Runner::new(),
            &hooks,
            &ds(),
            at("20240102000000"),
            &SnapshotOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, SnapshotError::Zfs { post: None, .. }),
            "{err}"
        );
        assert_eq!(read_log(&log), "pre\npost\n");
    }

    #[test]
    fn an_interruption_during_pre_snapshot_still_runs_post() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let hooks = Hooks {
            // pre_snapshot is stopped by the interruption...
            pre_snapshot: Some(HookCommand {
                argv: vec![
                    OsString::from("/bin/sh"),
                    "-c".into(),
                    format!("echo pre >> '{}'; sleep 30", log.display()).into(),
                ],
            }),
            // ...and post_snapshot runs all the same.
            post_snapshot: Some(hook(&log, "post", 0)),
            ..Hooks::default()
        };
        let cancel = crate::process::CancelToken::new();
        let runner = Runner::new().with_cancel(cancel.clone());
        let mut mock = MockSnapshotter::new();
        mock.expect_list().returning(|_| Ok(vec![]));
        mock.expect_create().times(0);
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            cancel.cancel();
        });
        let err = take_snapshot(
            &mock,
            &runner,
            &hooks,
            &ds(),
            at("20240102000000"),
            &SnapshotOptions::default(),
        )
        .unwrap_err();
        t.join().unwrap();
        assert!(
            matches!(err, SnapshotError::PreSnapshot { post: None, .. }),
            "{err}"
        );
        assert_eq!(read_log(&log), "pre\npost\n");
    }

    #[test]
    fn an_existing_name_changes_nothing_and_runs_no_hook() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let hooks = pre_post(&log, 0);
        let mut mock = MockSnapshotter::new();
        mock.expect_list()
            .returning(|_| Ok(existing(&["20240102000000"])));
        mock.expect_create().times(0);
        let err = take_snapshot(
            &mock,
            &Runner::new(),
            &hooks,
            &ds(),
            at("20240102000000"),
            &SnapshotOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, SnapshotError::Exists(_)), "{err}");
        let err = take_snapshot(
            &mock,
            &Runner::new(),
            &hooks,
            &ds(),
            at("20240101000000"),
            &SnapshotOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, SnapshotError::ClockBehind { .. }), "{err}");
        assert_eq!(read_log(&log), "");
    }

    #[test]
    fn foreign_snapshots_do_not_count_for_clock_checks() {
        let mut mock = MockSnapshotter::new();
        mock.expect_list()
            .returning(|_| Ok(existing(&["zzzz-manual", "autosnap_2099"])));
        mock.expect_create().times(1).returning(|_| Ok(()));
        take_snapshot(
            &mock,
            &Runner::new(),
            &Hooks::default(),
            &ds(),
            at("20240102000000"),
            &SnapshotOptions::default(),
        )
        .unwrap();
    }
}
