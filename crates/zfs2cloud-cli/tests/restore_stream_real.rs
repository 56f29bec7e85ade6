//! Restore and `verify --deep` as streams, on real zfs-fuse, gpg and
//! rclone: each chunk is read from the remote exactly once (no listing
//! reads it to hash it first), and a restore stalled on a hanging `rclone
//! cat` ends on Ctrl-C or at its time limit, leaving no dataset.
//!
//! The rclone the restore runs is the testkit's `fake-rclone` in wrapper
//! mode: it records every invocation and then runs the real rclone (or,
//! for an injected fault, hangs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{sorted_chunks, text, which, Setup};
use zfs2cloud_testkit::fake::{FakeRclone, FaultAction, FaultRule, Invocation, RCLONE_REAL_ENV};
use zfs2cloud_testkit::harness::{
    run_fail, run_ok, tree_digest, write_random_file, Pool, ZfsSession,
};
use zfs2cloud_testkit::remote::RcloneConfig;

const DAYS: [&str; 2] = ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"];
const FULL: &str = "20240101000000-full";
const INCREMENTAL: &str = "20240102000000";

/// How long a stopped restore may take to end: far more than it needs
/// (a SIGTERM, then SIGKILL after 5 s at worst), far less than "forever".
const STOP_BOUND: Duration = Duration::from_secs(20);

struct Backed {
    setup: Setup,
    _rclone: RcloneConfig,
    remote_dir: PathBuf,
    at_day2: BTreeMap<String, String>,
}

/// A full of about 600 KB and an incremental of about 200 KB, in 64K
/// chunks, on a local rclone remote.
fn two_backups(src: &Pool<'_>) -> Backed {
    let data = src.create_dataset("data");
    let rclone = RcloneConfig::new();
    let remote_dir = rclone.add_local("cloud").join("data");
    let setup = Setup::with_remote(
        &src.dataset("data"),
        &format!("cloud:{}", remote_dir.display()),
        &format!(
            "rclone_config = {:?}\n",
            rclone.path().display().to_string()
        ),
    );
    write_random_file(&data.join("base.bin"), 600_000, 1);
    run_ok(setup.cmd(DAYS[0]).arg("backup"));
    write_random_file(&data.join("day2.bin"), 200_000, 2);
    run_ok(setup.cmd(DAYS[1]).arg("backup"));
    Backed {
        at_day2: tree_digest(&data),
        setup,
        _rclone: rclone,
        remote_dir,
    }
}

/// `zfs2cloud -c … <args>` whose rclone is the recording wrapper around
/// the real one.
fn wrapped(b: &Backed, rclone: &FakeRclone, args: &[&str]) -> Command {
    let mut cmd = b.setup.cmd(DAYS[1]);
    cmd.envs(rclone.env())
        .env(RCLONE_REAL_ENV, which("rclone"))
        .args(args);
    cmd
}

fn exists(dataset: &str) -> bool {
    Command::new("zfs")
        .args(["list", "-H", "-o", "name", dataset])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The remote paths of the chunks of backup directory `dir`.
fn chunk_paths(b: &Backed, dir: &str) -> Vec<String> {
    sorted_chunks(&b.remote_dir.join(dir))
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

/// How often each remote path was read with `rclone cat`.
fn cats(invocations: &[Invocation]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for inv in invocations {
        if inv.subcommand().as_deref() == Some("cat") {
            let path = inv.args.last().unwrap();
            // `cloud:/abs/path` → `/abs/path`, as the chunks are listed.
            let path = path.strip_prefix("cloud:").unwrap_or(path);
            *out.entry(path.to_owned()).or_default() += 1;
        }
    }
    out
}

/// Asserts that every chunk of `dirs` was read exactly once, and that no
/// rclone call read chunks in any other way (a hashing listing, a hash
/// sum, a check, a copy).
fn each_chunk_read_once(b: &Backed, rclone: &FakeRclone, dirs: &[&str], what: &str) {
    let invocations = rclone.invocations();
    let read = cats(&invocations);
    let chunks: Vec<String> = dirs.iter().flat_map(|d| chunk_paths(b, d)).collect();
    assert!(
        chunks.len() >= 10,
        "too few chunks to show anything: {chunks:?}"
    );
    for chunk in &chunks {
        assert_eq!(read.get(chunk), Some(&1), "{what}: {chunk} read {read:?}");
    }
    let other_reads: Vec<&Invocation> = invocations
        .iter()
        .filter(|inv| {
            inv.args.iter().any(|a| a == "--hash")
                || matches!(
                    inv.subcommand().as_deref(),
                    Some("hashsum" | "sha256sum" | "md5sum" | "check" | "copy" | "copyto" | "sync")
                )
        })
        .collect();
    assert!(other_reads.is_empty(), "{what}: {other_reads:?}");
}

fn restore_reads_each_chunk_once_and_is_byte_identical(b: &Backed, dst: &Pool<'_>) {
    let rclone = FakeRclone::new();
    let target = dst.dataset("once");
    run_ok(&mut wrapped(b, &rclone, &["restore", "--to", &target]));
    assert_eq!(tree_digest(&dst.mountpoint(&target)), b.at_day2);
    each_chunk_read_once(b, &rclone, &[FULL, INCREMENTAL], "restore");
}

fn deep_verify_reads_each_chunk_once(b: &Backed) {
    let rclone = FakeRclone::new();
    let out = run_ok(&mut wrapped(b, &rclone, &["verify", "--deep"]));
    let shown = text(&out);
    assert!(shown.contains(&format!("OK          {FULL}")), "{shown}");
    assert!(
        shown.contains(&format!("OK          {INCREMENTAL}")),
        "{shown}"
    );
    each_chunk_read_once(b, &rclone, &[FULL, INCREMENTAL], "verify --deep");
}

/// A wrapper whose `cat` of the third chunk of the full hangs.
fn hanging_on_third_chunk(b: &Backed) -> (FakeRclone, String) {
    let rclone = FakeRclone::new();
    let third = chunk_paths(b, FULL)[2].clone();
    let name = Path::new(&third)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    rclone.inject_rule(FaultRule {
        arg_contains: Some(name),
        ..FaultRule::new("cat", FaultAction::Hang, None)
    });
    (rclone, third)
}

/// Waits until the wrapper has been asked for `path` (the hanging `cat`).
fn wait_for_cat(rclone: &FakeRclone, path: &str) {
    let started = Instant::now();
    while !cats(&rclone.invocations()).contains_key(path) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{path} never read"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ctrl_c_ends_a_stalled_restore_with_130_and_no_dataset(b: &Backed, dst: &Pool<'_>) {
    let (rclone, third) = hanging_on_third_chunk(b);
    let target = dst.dataset("stalled");
    let mut child = wrapped(b, &rclone, &["restore", "--to", &target])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_cat(&rclone, &third);
    // Stalled: give it a moment to be blocked reading, then Ctrl-C (a
    // terminal sends SIGINT to zfs2cloud; its children lead their own
    // process groups).
    std::thread::sleep(Duration::from_millis(500));
    let interrupted = Instant::now();
    run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let out = wait_bounded(&mut child, STOP_BOUND);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(130), "{shown}");
    assert!(
        interrupted.elapsed() < STOP_BOUND,
        "took {:?}",
        interrupted.elapsed()
    );
    assert!(shown.contains("interrupted"), "{shown}");
    assert!(!exists(&target), "a partly received {target} was left");
    no_hanging_rclone(&rclone);
}

fn a_time_limit_ends_a_stalled_restore_and_deep_verify(b: &Backed, dst: &Pool<'_>, src: &Pool<'_>) {
    let (rclone, _) = hanging_on_third_chunk(b);
    let target = dst.dataset("limited");
    let started = Instant::now();
    let out = run_fail(&mut wrapped(
        b,
        &rclone,
        &["restore", "--to", &target, "--time-limit", "5"],
    ));
    let shown = text(&out);
    assert!(
        shown.contains("restore stopped: its time limit of 5s ran out"),
        "{shown}"
    );
    assert!(started.elapsed() < Duration::from_secs(5) + STOP_BOUND);
    assert!(!exists(&target), "a partly received {target} was left");

    let (rclone, _) = hanging_on_third_chunk(b);
    let out = run_fail(&mut wrapped(
        b,
        &rclone,
        &["verify", "--deep", "--time-limit", "5"],
    ));
    let shown = text(&out);
    assert!(
        shown.contains("verify --deep stopped: its time limit of 5s ran out"),
        "{shown}"
    );
    let left = run_ok(Command::new("zfs").args(["list", "-H", "-o", "name", "-r", src.name()]));
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains("zfs2cloud-verify"),
        "the scratch dataset was left"
    );
    no_hanging_rclone(&rclone);
}

/// Waits for `child`, killing it (and failing) after `bound`; its output
/// is read on threads meanwhile, so a full pipe cannot hold it up.
fn wait_bounded(child: &mut std::process::Child, bound: Duration) -> std::process::Output {
    use std::io::Read;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            panic!("still running {bound:?} after the stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// No recorded rclone of this wrapper is still running.
fn no_hanging_rclone(rclone: &FakeRclone) {
    std::thread::sleep(Duration::from_millis(300));
    for inv in rclone.invocations() {
        let alive = Path::new(&format!("/proc/{}", inv.pid)).exists()
            && std::fs::read_to_string(format!("/proc/{}/cmdline", inv.pid))
                .is_ok_and(|c| c.contains("rclone"));
        assert!(
            !alive,
            "rclone {:?} (pid {}) is still running",
            inv.args, inv.pid
        );
    }
}

#[test]
fn restore_streams_each_chunk_once_and_stops_when_stalled() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let src = zfs.pool("ss");
    let dst = zfs.pool("sd");
    let b = two_backups(&src);
    restore_reads_each_chunk_once_and_is_byte_identical(&b, &dst);
    deep_verify_reads_each_chunk_once(&b);
    ctrl_c_ends_a_stalled_restore_with_130_and_no_dataset(&b, &dst);
    a_time_limit_ends_a_stalled_restore_and_deep_verify(&b, &dst, &src);
}
