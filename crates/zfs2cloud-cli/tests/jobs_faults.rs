//! Jobs of one config file, driven by the testkit's fake `zfs` and fake
//! `rclone` (real gpg): `--parallel` runs jobs at the same time, and each
//! job has its own lock, so one held lock fails only its job.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{text, with_fakes, Setup};
use zfs2cloud_testkit::fake::{FakeRclone, FakeZfs};
use zfs2cloud_testkit::harness::{require_tools, run_fail, run_ok};

const DAY1: &str = "2024-01-01T00:00:00Z";

/// Two jobs, `a` and `b`, of `tank/a` and `tank/b`, with `extra` TOML in
/// each (`{job}` and `{other}` replaced by the job's and the other's name).
fn two_jobs(extra: &str) -> (Setup, FakeZfs, FakeRclone) {
    let zfs = FakeZfs::new();
    zfs.add_dataset("tank/a");
    zfs.add_dataset("tank/b");
    let setup = Setup::new("tank/unused", "");
    let mut text = "[defaults]\npassphrase_file = \"passphrase\"\n\
                    upload_retry_delay_seconds = 0\n"
        .to_owned();
    for (job, other) in [("a", "b"), ("b", "a")] {
        text.push_str(&format!(
            "[[job]]\nname = \"{job}\"\ndataset = \"tank/{job}\"\n\
             remote = \"cloud:backups/{job}\"\nintermediate_basedir = \"intermediate/{job}\"\n{}\n",
            extra.replace("{job}", job).replace("{other}", other)
        ));
    }
    std::fs::write(&setup.config, text).unwrap();
    (setup, zfs, FakeRclone::new())
}

fn backup(setup: &Setup, zfs: &FakeZfs, rclone: &FakeRclone, args: &[&str]) -> Command {
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("backup").args(args);
    with_fakes(&mut cmd, zfs, rclone);
    cmd
}

#[test]
fn parallel_jobs_run_at_the_same_time() {
    if !require_tools(&["gpg"]) {
        return;
    }
    // Each job's pre_snapshot hook marks itself and waits for the other's
    // mark: run one after another, the first would wait in vain and fail.
    let marks = tempfile::tempdir().unwrap();
    let hook = format!(
        "[job.hooks]\npre_snapshot = [\"/bin/sh\", \"-c\", \"touch '{m}/{{job}}'; i=0; \
         while [ ! -e '{m}/{{other}}' ]; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.1; \
         done\"]",
        m = marks.path().display()
    );
    let (setup, zfs, rclone) = two_jobs(&hook);
    let out = run_fail(&mut backup(&setup, &zfs, &rclone, &[]));
    assert!(
        text(&out).contains("pre_snapshot"),
        "one after another, the first job's hook waits in vain:\n{}",
        text(&out)
    );
    std::fs::remove_file(marks.path().join("a")).ok();
    std::fs::remove_file(marks.path().join("b")).ok();
    let (setup, zfs, rclone) = two_jobs(&hook);
    let out = run_ok(&mut backup(&setup, &zfs, &rclone, &["--parallel", "2"]));
    let t = text(&out);
    for job in ["a", "b"] {
        let line = t
            .lines()
            .rev()
            .find(|l| l.starts_with(&format!("{job} ")))
            .unwrap_or_else(|| panic!("no summary line for {job}:\n{t}"));
        assert!(line.contains(" ok "), "{t}");
        let files = rclone.files(&format!("cloud:backups/{job}/20240101000000-full"));
        assert!(
            files.contains(&"manifest.json".to_owned()),
            "{job}: {files:?}"
        );
    }
}

/// Holds `<basedir>/lock` with flock(1) until dropped.
struct HeldLock(Child);

impl HeldLock {
    fn hold(basedir: &Path) -> Self {
        std::fs::create_dir_all(basedir).unwrap();
        let lock = basedir.join("lock");
        let ready = basedir.join("held");
        let child = Command::new("flock")
            .arg(&lock)
            .args(["-c", &format!("touch '{}'; sleep 60", ready.display())])
            .stdout(Stdio::null())
            .spawn()
            .expect("flock(1) from util-linux");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "flock did not take the lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child)
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_held_lock_fails_only_its_own_job() {
    if !require_tools(&["gpg", "flock"]) {
        return;
    }
    let (setup, zfs, rclone) = two_jobs("");
    let _held = HeldLock::hold(&setup.dir.path().join("intermediate/b"));
    let out = run_fail(&mut backup(&setup, &zfs, &rclone, &[]));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.lines().any(|l| l.starts_with("a ") && l.contains(" ok ")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("b ") && l.contains("LOCKED")),
        "{t}"
    );
    assert!(rclone.files("cloud:backups/b").is_empty(), "{t}");
    // Only the locked job: nothing was done, which exit code 75 says.
    let out = run_fail(&mut backup(&setup, &zfs, &rclone, &["--job", "b"]));
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
}
