//! Orchestration tests against the stage mocks: backup's step sequence,
//! failure handling, hooks and the lock.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::TimeZone;
use sha2::{Digest, Sha256};

use super::*;
use crate::model::testing::write_local_export;
use crate::model::{
    hex, RemoteFile, SnapshotInfo, MANIFEST_FILE, OWNER_FILE, PROP_UPLOADED, SHA256SUMS_FILE,
};
use crate::ops::status::LAST_BACKUP_FILE;
use crate::ops::upload::UploadStepError;
use crate::process::ProcessError;
use crate::stages::Started;
use crate::stages::{MockExporter, MockSnapshotter, MockUploader, UploadError};
use crate::util::NoProgress;

/// Every state-changing stage call, in order.
type Log = Arc<Mutex<Vec<String>>>;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 3, 12, 0, 0).unwrap()
}

/// The snapshot the snapshot step takes at [`now`].
const NEW: &str = "tank/data@20240103120000";

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn chunk(snap: &str) -> String {
    format!("tank-data@{snap}.zfs.gpg.0000")
}

/// Writes a complete one-chunk full export of `snap` under `parent`.
fn write_full(parent: &Path, snap: &str, bytes: &[u8]) {
    write_local_export(parent, snap, None, &[bytes]);
}

fn info(snap: &str, kind: Option<ExportKind>, uploaded: Option<String>) -> SnapshotInfo {
    SnapshotInfo {
        level: None,
        name: SnapshotName::parse(&format!("tank/data@{snap}")).unwrap(),
        userrefs: 0,
        kind,
        base: None,
        uploaded,
    }
}

/// A pruner that records what it destroys, and whether the run lock was
/// held at the time.
struct RecordingPruner {
    log: Log,
    base: PathBuf,
}

impl Pruner for RecordingPruner {
    fn prune_snapshot(&self, snapshot: &SnapshotName) -> Result<(), PruneError> {
        let held = RunLock::acquire(&self.base, now()).is_err();
        let event = format!("destroy {snapshot} (lock held: {held})");
        self.log.lock().unwrap().push(event);
        Ok(())
    }
}

/// A temp directory with the base directory, the remote, and the state
/// the mocks share.
struct World {
    tmp: tempfile::TempDir,
    base: PathBuf,
    remote: PathBuf,
    log: Log,
    snaps: Arc<Mutex<Vec<SnapshotInfo>>>,
}

impl World {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (base, remote) = (tmp.path().join("base"), tmp.path().join("remote"));
        std::fs::create_dir_all(&remote).unwrap();
        Self {
            tmp,
            base,
            remote,
            log: Log::default(),
            snaps: Arc::default(),
        }
    }

    fn remote_name(&self) -> String {
        self.remote.display().to_string()
    }

    /// A config running `steps`, with `extra` (e.g. a `[hooks]` table).
    fn config(&self, steps: &[&str], extra: &str) -> Config {
        let steps: Vec<String> = steps.iter().map(|s| format!("{s:?}")).collect();
        let text = format!(
            "dataset = \"tank/data\"\nintermediate_basedir = {:?}\nremote = {:?}\n\
             passphrase_file = \"/etc/zfs2cloud/pass\"\nupload_retries = 0\n\
             steps = [{}]\n{extra}",
            self.base.display().to_string(),
            self.remote_name(),
            steps.join(", ")
        );
        Config::parse(&text, Path::new("/etc/zfs2cloud/data.toml")).unwrap()
    }

    /// A hook script that writes its name, failed step and snapshot, then
    /// its stdin, to `<tmp>/<name>.out`, and exits with `code`; returns the
    /// hook as a TOML value. It is run as `/bin/sh <script>`: exec'ing a
    /// file just written fails now and then with ETXTBSY while other tests
    /// fork (the child briefly inherits the write descriptor).
    fn hook(&self, name: &str, code: i32) -> String {
        let out = self.tmp.path().join(format!("{name}.out"));
        let path = self.tmp.path().join(format!("{name}.sh"));
        let body = format!(
            "#!/bin/sh\n{{ echo \"$ZFS2CLOUD_HOOK step=$ZFS2CLOUD_FAILED_STEP \
             snapshot=$ZFS2CLOUD_SNAPSHOT\"; cat; }} > '{}'\nexit {code}\n",
            out.display()
        );
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        format!("[\"/bin/sh\", {:?}]", path.display().to_string())
    }

    fn hook_output(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.tmp.path().join(format!("{name}.out"))).ok()
    }

    fn events(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// A snapshotter over the shared snapshot list: `create` adds one,
    /// `set_property` records an upload.
    fn zfs(&self) -> MockSnapshotter {
        let mut zfs = MockSnapshotter::new();
        let snaps = Arc::clone(&self.snaps);
        zfs.expect_list()
            .returning(move |_| Ok(snaps.lock().unwrap().clone()));
        zfs.expect_guid().returning(|_| Ok(Some("1".into())));
        let (snaps, log) = (Arc::clone(&self.snaps), Arc::clone(&self.log));
        zfs.expect_create().returning(move |name| {
            log.lock().unwrap().push(format!("create {name}"));
            snaps.lock().unwrap().push(info(name.snap(), None, None));
            Ok(())
        });
        let (snaps, log) = (Arc::clone(&self.snaps), Arc::clone(&self.log));
        zfs.expect_set_property()
            .returning(move |name, prop, value| {
                log.lock().unwrap().push(format!("set {name} {prop}"));
                let mut snaps = snaps.lock().unwrap();
                let s = snaps.iter_mut().find(|s| &s.name == name).unwrap();
                if prop == PROP_UPLOADED {
                    s.uploaded = Some(value.to_owned());
                }
                Ok(())
            });
        zfs
    }

    /// An uploader over the remote directory; with `fail_puts`, every put
    /// of a file fails.
    fn uploader(&self, fail_puts: bool) -> MockUploader {
        let mut up = MockUploader::new();
        up.expect_stat().returning(|path| {
            Ok(std::fs::metadata(path).ok().map(|m| RemoteFile {
                name: Path::new(path)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into(),
                size: m.len(),
                sha256: None,
            }))
        });
        let (log, prefix) = (Arc::clone(&self.log), format!("{}/", self.remote_name()));
        up.expect_put_bytes().returning(move |bytes, target| {
            std::fs::write(target, bytes).unwrap();
            let rel = target.strip_prefix(&prefix).unwrap();
            log.lock().unwrap().push(format!("write {rel}"));
            Ok(())
        });
        up.expect_list_dirs().returning(|dir| {
            Ok(std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect())
        });
        up.expect_list().returning(|dir| {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return Ok(Vec::new());
            };
            Ok(entries
                .map(|e| {
                    let e = e.unwrap();
                    let bytes = std::fs::read(e.path()).unwrap();
                    RemoteFile {
                        name: e.file_name().to_string_lossy().into_owned(),
                        size: bytes.len() as u64,
                        sha256: Some(sha(&bytes)),
                    }
                })
                .collect())
        });
        up.expect_cat().returning(|path| {
            let file = std::fs::File::open(path).unwrap();
            Ok(Started::reading(format!("cat {path}"), file))
        });
        let (log, prefix) = (Arc::clone(&self.log), format!("{}/", self.remote_name()));
        up.expect_put().returning(move |local, target| {
            let rel = target.strip_prefix(&prefix).unwrap();
            if fail_puts {
                log.lock().unwrap().push(format!("put {rel} FAILED"));
                return Err(UploadError::Process(ProcessError::Spawn {
                    program: "rclone".into(),
                    command: format!("rclone copyto {rel}"),
                    source: std::io::ErrorKind::NotFound.into(),
                }));
            }
            std::fs::create_dir_all(Path::new(target).parent().unwrap()).unwrap();
            std::fs::copy(local, target).unwrap();
            log.lock().unwrap().push(format!("put {rel}"));
            Ok(())
        });
        up
    }

    /// Runs `config`'s sequence; returns the result and the steps
    /// `on_step` saw.
    fn run(
        &self,
        config: &Config,
        runner: &Runner,
        zfs: &MockSnapshotter,
        uploader: &MockUploader,
    ) -> (Result<Vec<StepReport>, BackupFailure>, Vec<String>) {
        let pruner = RecordingPruner {
            log: Arc::clone(&self.log),
            base: self.base.clone(),
        };
        let backup = Backup {
            config,
            runner,
            snapshotter: zfs,
            pruner: &pruner,
            exporter: &MockExporter::new(),
            encryptor: None,
            uploader,
            stream_uploader: &MockUploader::new(),
            mounter: &Mounter::new(Runner::new(), "zfs".into()),
            now: now(),
            progress: &NoProgress,
        };
        let mut seen = Vec::new();
        let result = backup.run(&mut |r| seen.push(r.step.clone()));
        (result, seen)
    }

    /// Whether a new run could take the lock now.
    fn lock_is_free(&self) -> bool {
        RunLock::acquire(&self.base, now()).is_ok()
    }
}

const SEQUENCE: &[&str] = &[
    "lock",
    "snapshot",
    "upload",
    "prune-intermediates",
    "prune-snapshots",
    "unlock",
];

/// An old snapshot retention lets go; an uploaded full; a newer full
/// exported but not uploaded.
fn realistic(w: &World) {
    write_full(&w.base, "20240101000000", b"old");
    write_full(&w.base, "20240102000000", b"new");
    let record = upload_record_of("20240101000000-full", &w.remote_name());
    *w.snaps.lock().unwrap() = vec![
        info("20231101000000", None, None),
        info("20240101000000", Some(ExportKind::Full), Some(record)),
        info("20240102000000", Some(ExportKind::Full), None),
    ];
}

fn upload_record_of(dir: &str, remote: &str) -> String {
    crate::model::upload_record("2024-01-01T01:00:00Z", dir, remote)
}

#[test]
fn runs_the_steps_in_order_and_reports_each() {
    let w = World::new();
    realistic(&w);
    let config = w.config(SEQUENCE, "");
    let (result, seen) = w.run(&config, &Runner::new(), &w.zfs(), &w.uploader(false));
    let reports = result.unwrap();

    let steps: Vec<&str> = reports.iter().map(|r| r.step.as_str()).collect();
    assert_eq!(steps, SEQUENCE);
    assert_eq!(seen, SEQUENCE);
    let dir = "20240102000000-full";
    let uploaded = format!("put {dir}/{}", chunk("20240102000000"));
    assert_eq!(
        w.events(),
        [
            format!("create {NEW}"),
            format!("write {OWNER_FILE}"),
            uploaded,
            format!("put {dir}/{SHA256SUMS_FILE}"),
            format!("put {dir}/{MANIFEST_FILE}"),
            format!("set tank/data@20240102000000 {PROP_UPLOADED}"),
            "destroy tank/data@20231101000000 (lock held: true)".into(),
        ]
    );
    let summaries: Vec<&str> = reports[1..].iter().map(|r| r.summary.as_str()).collect();
    assert_eq!(
        summaries,
        [
            &format!("created {NEW}"),
            "tank/data@20240102000000 (3 sent, 3 bytes of chunks, 0 already there)",
            "1 removed",
            "1 destroyed",
            "released",
        ]
    );
    assert!(!w.base.join("20240101000000-full").exists());
    assert!(w.base.join("20240102000000-full").exists());
    assert!(w.base.join(LAST_BACKUP_FILE).is_file());
    assert!(w.lock_is_free());
}

#[test]
fn the_first_failing_step_stops_the_run_runs_on_failure_and_releases_the_lock() {
    let w = World::new();
    realistic(&w);
    let hook = w.hook("on_failure", 0);
    let config = w.config(SEQUENCE, &format!("[hooks]\non_failure = {hook}\n"));
    let (result, seen) = w.run(&config, &Runner::new(), &w.zfs(), &w.uploader(true));
    let failure = result.unwrap_err();

    assert_eq!(failure.step, "upload");
    assert!(
        matches!(
            failure.error,
            StepError::Upload(UploadStepError::Transfer { .. })
        ),
        "{failure:?}"
    );
    assert_eq!(seen, ["lock", "snapshot"]);
    // Nothing after the upload's one failed transfer: no record, no prune.
    let put = format!("put 20240102000000-full/{} FAILED", chunk("20240102000000"));
    assert_eq!(
        w.events(),
        [format!("create {NEW}"), format!("write {OWNER_FILE}"), put]
    );
    assert!(w.base.join("20240101000000-full").exists());
    assert!(!w.base.join(LAST_BACKUP_FILE).exists());
    assert!(w.lock_is_free());

    let out = w.hook_output("on_failure").unwrap();
    let (env, stdin) = out.split_once('\n').unwrap();
    assert_eq!(env, format!("on_failure step=upload snapshot={NEW}"));
    assert!(
        stdin.starts_with("step upload failed: uploading tank/data@20240102000000 failed: "),
        "{stdin}"
    );
    assert!(w.hook_output("on_success").is_none());
}

/// `[hooks]` with both `on_success` (exiting `success_code`) and
/// `on_failure`.
fn both_hooks(w: &World, success_code: i32) -> String {
    format!(
        "[hooks]\non_success = {}\non_failure = {}\n",
        w.hook("on_success", success_code),
        w.hook("on_failure", 0)
    )
}

#[test]
fn on_success_runs_after_the_last_step_and_on_failure_does_not() {
    let w = World::new();
    let config = w.config(&["lock", "unlock"], &both_hooks(&w, 0));
    let (result, _) = w.run(
        &config,
        &Runner::new(),
        &MockSnapshotter::new(),
        &MockUploader::new(),
    );
    assert_eq!(result.unwrap().len(), 2);
    assert_eq!(
        w.hook_output("on_success").unwrap(),
        "on_success step= snapshot=\n"
    );
    assert!(w.hook_output("on_failure").is_none());
}

#[test]
fn a_failing_on_success_fails_the_run_and_is_reported_to_on_failure() {
    let w = World::new();
    let config = w.config(&["lock", "unlock"], &both_hooks(&w, 3));
    let (result, seen) = w.run(
        &config,
        &Runner::new(),
        &MockSnapshotter::new(),
        &MockUploader::new(),
    );
    let failure = result.unwrap_err();
    assert_eq!(failure.step, "on_success");
    assert!(matches!(failure.error, StepError::Hook(_)), "{failure:?}");
    assert_eq!(seen, ["lock", "unlock"]);
    let out = w.hook_output("on_failure").unwrap();
    assert!(
        out.starts_with("on_failure step=on_success snapshot=\nstep on_success failed: the on_success hook failed"),
        "{out}"
    );
}

#[test]
fn a_lock_held_by_another_run_fails_the_lock_step_without_on_failure() {
    let w = World::new();
    let other = RunLock::acquire(&w.base, now()).unwrap();
    let config = w.config(SEQUENCE, &both_hooks(&w, 0));
    // Stage mocks without expectations: any call fails the test.
    let (result, seen) = w.run(
        &config,
        &Runner::new(),
        &MockSnapshotter::new(),
        &MockUploader::new(),
    );
    let failure = result.unwrap_err();
    assert_eq!(failure.step, "lock");
    assert!(failure.error.is_lock_held(), "{failure:?}");
    assert!(seen.is_empty());
    assert!(w.events().is_empty());
    assert!(w.hook_output("on_failure").is_none());
    assert!(w.hook_output("on_success").is_none());
    drop(other);
}

#[test]
fn a_cancelled_run_fails_its_first_step_as_interrupted_without_touching_the_stages() {
    let w = World::new();
    let config = w.config(SEQUENCE, &both_hooks(&w, 0));
    let runner = Runner::new();
    runner.cancel_token().cancel();
    let (result, seen) = w.run(
        &config,
        &runner,
        &MockSnapshotter::new(),
        &MockUploader::new(),
    );
    let failure = result.unwrap_err();
    assert_eq!(failure.step, "lock");
    assert!(
        matches!(failure.error, StepError::Interrupted),
        "{failure:?}"
    );
    assert!(seen.is_empty());
    assert!(w.events().is_empty());
    assert!(!w.base.join(crate::ops::lock::LOCK_FILE).exists());
    // on_failure must run, and report, even when interrupted.
    let out = w.hook_output("on_failure").unwrap();
    assert_eq!(
        out,
        "on_failure step=lock snapshot=\nstep lock failed: interrupted\n"
    );
}

#[test]
fn verify_as_a_step_passes_whole_backups_and_fails_on_a_damaged_one() {
    let w = World::new();
    write_full(&w.remote, "20240101000000", b"chunk");
    let config = w.config(&["verify"], "");
    let (result, _) = w.run(
        &config,
        &Runner::new(),
        &MockSnapshotter::new(),
        &w.uploader(false),
    );
    assert_eq!(result.unwrap()[0].summary, "1 backup(s) OK");

    let on_remote = w
        .remote
        .join("20240101000000-full")
        .join(chunk("20240101000000"));
    std::fs::write(on_remote, b"chu").unwrap();
    let (result, _) = w.run(
        &config,
        &Runner::new(),
        &MockSnapshotter::new(),
        &w.uploader(false),
    );
    let failure = result.unwrap_err();
    assert_eq!(failure.step, "verify");
    let StepError::Verify(message) = &failure.error else {
        panic!("{failure:?}");
    };
    let expected = format!(
        "chunk {} has 3 bytes, the manifest says 5",
        chunk("20240101000000")
    );
    assert_eq!(
        message,
        &format!("20240101000000-full Damaged({expected:?})")
    );
    assert!(w.events().is_empty());
}

#[test]
fn export_without_an_encryptor_is_unsupported_and_stops_the_run() {
    let w = World::new();
    let config = w.config(&["lock", "export", "upload", "unlock"], "");
    // Stage mocks without expectations: any call fails the test.
    let (result, seen) = w.run(
        &config,
        &Runner::new(),
        &MockSnapshotter::new(),
        &MockUploader::new(),
    );
    let failure = result.unwrap_err();
    assert_eq!(failure.step, "export");
    assert!(
        matches!(failure.error, StepError::Unsupported(_)),
        "{failure:?}"
    );
    assert_eq!(seen, ["lock"]);
    assert!(w.events().is_empty());
    assert!(w.lock_is_free());
}

#[test]
fn the_prune_step_keeps_by_calendar_and_keeps_the_base_of_future_incrementals() {
    let w = World::new();
    let uploaded = |snap: &str, kind: ExportKind| {
        let dir = crate::model::ExportLayout::dir_name(
            &SnapshotName::parse(&format!("tank/data@{snap}")).unwrap(),
            kind,
        );
        info(
            snap,
            Some(kind),
            Some(upload_record_of(&dir, &w.remote_name())),
        )
    };
    *w.snaps.lock().unwrap() = vec![
        uploaded("20231201000000", ExportKind::Full),
        // The newest full: what the next incrementals are based on.
        uploaded("20231215000000", ExportKind::Full),
        uploaded("20231220000000", ExportKind::Incremental),
        uploaded("20240102000000", ExportKind::Incremental),
    ];
    let steps = ["lock", "snapshot", "prune-snapshots", "unlock"];
    let config = w.config(&steps, "[retention.local]\nkeep_daily = 2\n");
    let (result, _) = w.run(&config, &Runner::new(), &w.zfs(), &w.uploader(false));
    assert_eq!(result.unwrap()[2].summary, "2 destroyed");
    assert_eq!(
        w.events(),
        [
            format!("create {NEW}"),
            "destroy tank/data@20231201000000 (lock held: true)".into(),
            "destroy tank/data@20231220000000 (lock held: true)".into(),
        ]
    );
}
