//! The fault matrix: every step of both modes × every fault, on the real
//! path (zfs-fuse, gpg, rclone), with the faults injected by the testkit's
//! fakes in wrapper mode (`FAKE_ZFS_REAL` / `FAKE_RCLONE_REAL`): each
//! command is recorded and either faulted or run for real.
//!
//! A fault is armed by a script step placed just before the step under
//! test, so that it hits that step and no earlier one. After each case the
//! invariants of `docs/reliability.md` are checked; then the fault is
//! removed, the next run must succeed, and its result must restore
//! byte-identical. The matrix is printed as a table (and kept in
//! `$CARGO_TARGET_TMPDIR/fault-matrix-<mode>.txt`); one failing cell fails
//! the test with the whole table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{text, which, Setup};
use sha2::{Digest, Sha256};
use zfs2cloud_testkit::fake::{
    read_invocations, write_faults, FakeRclone, FakeZfs, FaultAction, FaultRule, RCLONE_REAL_ENV,
    ZFS_REAL_ENV,
};
use zfs2cloud_testkit::harness::{
    run_ok, tree_digest, write_random_file, zfs_get, Pool, ZfsSession,
};

/// Baseline run: makes the full that everything later is based on.
const DAY_BASE: &str = "2024-01-01T00:00:00Z";
/// The faulted run: 60 days later, so it exports a new full and
/// prune-snapshots has the old full (no longer a base) to destroy.
const DAY_FAULT: &str = "2024-03-01T00:00:00Z";
/// The run after the fault is removed.
const DAY_AFTER: &str = "2024-03-02T00:00:00Z";
/// The limit given to the step under test in the faulted run: a hang must
/// end by it.
const STEP_LIMIT_SECONDS: u64 = 3;
/// Its limit in the other runs: generous, so that a loaded machine cannot
/// make a healthy run time out.
const RELAXED_LIMIT_SECONDS: u64 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Exit,
    DieMidStream,
    Hang,
    Garbage,
    Sigterm,
    Sigkill,
    DiskFull,
}

const FAULTS: [Fault; 7] = [
    Fault::Exit,
    Fault::DieMidStream,
    Fault::Hang,
    Fault::Garbage,
    Fault::Sigterm,
    Fault::Sigkill,
    Fault::DiskFull,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::Exit => "exit≠0",
            Self::DieMidStream => "dies mid-stream",
            Self::Hang => "hangs",
            Self::Garbage => "garbage output",
            Self::Sigterm => "SIGTERM",
            Self::Sigkill => "SIGKILL+rerun",
            Self::DiskFull => "disk full",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Zfs,
    Rclone,
}

/// What a fault hits in a step: which tool and subcommand, or why the
/// fault does not apply.
#[derive(Debug, Clone, Copy)]
enum Target {
    Command(Tool, &'static str),
    /// The intermediate dir runs out of space.
    Disk,
    NotApplicable(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Intermediate,
    File,
}

/// The step under test, as named in `steps`, and what each fault hits.
fn target(mode: Mode, step: &str, fault: Fault) -> Target {
    use Target::{Command as C, Disk, NotApplicable as Na};
    use Tool::{Rclone, Zfs};
    // The command whose failure, hang or interruption the step must handle.
    let main = match (mode, step) {
        (_, "snapshot") => C(Zfs, "snapshot"),
        (_, "export") => C(Zfs, "send"),
        (_, "upload") => C(Rclone, "copyto"),
        (_, "prune-intermediates") => C(Zfs, "list"),
        (_, "prune-snapshots") => C(Zfs, "destroy"),
        (_, "verify") => C(Rclone, "lsjson"),
        (_, "mount-snapshot") => C(Zfs, "clone"),
        (_, "upload-snapshot-files") => C(Rclone, "sync"),
        (_, "umount-snapshot") => C(Zfs, "destroy"),
        _ => unreachable!("{step}"),
    };
    match fault {
        Fault::Exit | Fault::Hang | Fault::Sigterm | Fault::Sigkill => main,
        Fault::DieMidStream => match step {
            "export" | "upload" | "upload-snapshot-files" => main,
            _ => Na("no stream"),
        },
        // Output zfs2cloud parses: the listings each step reads.
        Fault::Garbage => match step {
            "snapshot" | "export" | "prune-intermediates" | "prune-snapshots" => C(Zfs, "list"),
            "upload" | "verify" => C(Rclone, "lsjson"),
            // Its search for leftovers of killed runs.
            "mount-snapshot" => C(Zfs, "list"),
            _ => Na("output not parsed"),
        },
        Fault::DiskFull => match (mode, step) {
            (Mode::Intermediate, "export") => Disk,
            _ => Na("writes nothing local"),
        },
    }
}

fn steps_of(mode: Mode) -> &'static [&'static str] {
    match mode {
        Mode::Intermediate => &[
            "snapshot",
            "export",
            "upload",
            "prune-intermediates",
            "prune-snapshots",
            "verify",
        ],
        Mode::File => &[
            "snapshot",
            "mount-snapshot",
            "upload-snapshot-files",
            "umount-snapshot",
            "prune-snapshots",
        ],
    }
}

fn sequence(mode: Mode) -> Vec<&'static str> {
    match mode {
        Mode::Intermediate => vec![
            "lock",
            "snapshot",
            "export",
            "upload",
            "prune-intermediates",
            "prune-snapshots",
            "verify",
            "unlock",
        ],
        Mode::File => vec![
            "lock",
            "snapshot",
            "mount-snapshot",
            "upload-snapshot-files",
            "umount-snapshot",
            "prune-snapshots",
            "unlock",
        ],
    }
}

/// The case's source: dataset `c<n>` with a few files, and a snapshot
/// zfs2cloud did not make (`@manual`, never to be touched). Returns the
/// dataset and its mountpoint.
fn source_dataset(pool: &Pool<'_>, n: usize) -> (String, PathBuf) {
    let dataset = pool.dataset(&format!("c{n}"));
    let data = pool.create_dataset(&format!("c{n}"));
    write_random_file(&data.join("a.bin"), 150_000, n as u64);
    std::fs::create_dir(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/notes.txt"), "base\n").unwrap();
    run_ok(
        Command::new("zfs")
            .arg("snapshot")
            .arg(format!("{dataset}@manual")),
    );
    (dataset, data)
}

/// The case's remote directory and, beside it, a remote object zfs2cloud
/// did not make. File mode mirrors the snapshot into the remote, so there
/// the object lives next to it rather than in it. Returns both paths.
fn remote_with_a_foreign_object(pool: &Pool<'_>, mode: Mode, n: usize) -> (PathBuf, PathBuf) {
    let remote_root = pool.scratch().join(format!("remote{n}"));
    std::fs::create_dir_all(&remote_root).unwrap();
    let remote = remote_root.join("backup");
    let foreign_remote = match mode {
        Mode::Intermediate => remote.join("foreign.txt"),
        Mode::File => remote_root.join("foreign.txt"),
    };
    std::fs::create_dir_all(foreign_remote.parent().unwrap()).unwrap();
    std::fs::write(&foreign_remote, "not zfs2cloud's\n").unwrap();
    (remote, foreign_remote)
}

/// The config keys of a case: its mode, no retries, the step sequence
/// with `./arm.sh` just before `step`, `step`'s relaxed limit, and hooks
/// that log to the case's directory.
fn case_config(mode: Mode, step: &str) -> String {
    let mut steps: Vec<String> = Vec::new();
    for s in sequence(mode) {
        if s == step {
            steps.push("./arm.sh".into());
        }
        steps.push(s.into());
    }
    let steps = steps
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mode_keys = match mode {
        Mode::Intermediate => String::new(),
        Mode::File => "mode = \"file\"\nmount_strategy = \"clone\"\n".into(),
    };
    format!(
        "{mode_keys}upload_retries = 0\nsteps = [{steps}]\n\
         [step_timeouts]\n{step} = {RELAXED_LIMIT_SECONDS}\n\
         [hooks]\n\
         pre_snapshot = [\"/bin/sh\", \"-c\", \"echo pre >> hooks.log\"]\n\
         post_snapshot = [\"/bin/sh\", \"-c\", \"echo post >> hooks.log\"]\n\
         on_failure = [\"/bin/sh\", \"-c\", \"cat > on_failure.txt\"]\n"
    )
}

/// Writes `dir/arm.sh`, which moves the rules staged under `staged` into
/// the wrappers' state dirs.
fn write_arming_script(dir: &Path, zfs: &FakeZfs, rclone: &FakeRclone, staged: &Path) {
    let arm = dir.join("arm.sh");
    std::fs::write(
        &arm,
        format!(
            "#!/bin/sh\n# Moves staged faults into place: they hit the next step only.\n\
             for t in zfs:{} rclone:{}; do\n\
               src=\"{}/${{t%%:*}}/faults.json\"; dst=\"${{t#*:}}/faults.json\"\n\
               if [ -f \"$src\" ]; then mv \"$src\" \"$dst\"; fi\n\
             done\n",
            zfs.state_dir().display(),
            rclone.state_dir().display(),
            staged.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&arm, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Mounts a small file system of its own (4 MiB) at `basedir`, the
/// intermediate_basedir, so that it can be filled.
fn mount_small_tmpfs(basedir: &Path) -> PathBuf {
    std::fs::create_dir_all(basedir).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"])
            .arg(basedir),
    );
    basedir.to_path_buf()
}

/// One case's world: a dataset, a remote, the wrappers' state, hooks and
/// an arming script.
struct Case {
    setup: Setup,
    mode: Mode,
    dataset: String,
    data: PathBuf,
    remote: PathBuf,
    foreign_remote: PathBuf,
    zfs: FakeZfs,
    rclone: FakeRclone,
    staged: PathBuf,
    tmpfs: Option<PathBuf>,
}

impl Case {
    fn new(pool: &Pool<'_>, mode: Mode, n: usize, step: &str, disk: bool) -> Self {
        let (dataset, data) = source_dataset(pool, n);
        let (remote, foreign_remote) = remote_with_a_foreign_object(pool, mode, n);
        let zfs = FakeZfs::new();
        let rclone = FakeRclone::new();
        let setup =
            Setup::with_remote(&dataset, remote.to_str().unwrap(), &case_config(mode, step));
        let staged = setup.dir.path().join("staged");
        std::fs::create_dir_all(staged.join("zfs")).unwrap();
        std::fs::create_dir_all(staged.join("rclone")).unwrap();
        write_arming_script(setup.dir.path(), &zfs, &rclone, &staged);
        let tmpfs = disk.then(|| mount_small_tmpfs(&setup.basedir));
        Self {
            setup,
            mode,
            dataset,
            data,
            remote,
            foreign_remote,
            zfs,
            rclone,
            staged,
            tmpfs,
        }
    }

    /// Sets the limit of the step under test.
    fn set_limit(&self, step: &str, seconds: u64) {
        let text = std::fs::read_to_string(&self.setup.config).unwrap();
        let line = |s: u64| format!("\n{step} = {s}\n");
        let [from, to] = [STEP_LIMIT_SECONDS, RELAXED_LIMIT_SECONDS].map(line);
        let (from, to) = if seconds == STEP_LIMIT_SECONDS {
            (to, from)
        } else {
            (from, to)
        };
        assert!(text.contains(&from), "{text}");
        std::fs::write(&self.setup.config, text.replace(&from, &to)).unwrap();
    }

    fn cmd(&self, day: &str) -> Command {
        let mut cmd = self.setup.cmd(day);
        for (k, v) in self.zfs.env().into_iter().chain(self.rclone.env()) {
            cmd.env(k, v);
        }
        cmd.env(ZFS_REAL_ENV, which("zfs"))
            .env(RCLONE_REAL_ENV, which("rclone"))
            .arg("backup");
        cmd
    }

    /// The staged rule file of `tool`, until the arming script moves it.
    fn staged(&self, tool: Tool) -> PathBuf {
        let dir = match tool {
            Tool::Zfs => "zfs",
            Tool::Rclone => "rclone",
        };
        self.staged.join(dir).join("faults.json")
    }

    fn stage(&self, tool: Tool, action: FaultAction, sub: &str) {
        let file = self.staged(tool);
        write_faults(file.parent().unwrap(), &[FaultRule::new(sub, action, None)]).unwrap();
    }

    /// Removes the faults, armed or still staged (a run stopped before the
    /// step under test never armed them).
    fn clear_faults(&self) {
        self.zfs.clear_faults();
        self.rclone.clear_faults();
        for tool in [Tool::Zfs, Tool::Rclone] {
            let _ = std::fs::remove_file(self.staged(tool));
        }
    }

    fn invocations(&self, tool: Tool, sub: &str) -> usize {
        let dir = match tool {
            Tool::Zfs => self.zfs.state_dir(),
            Tool::Rclone => self.rclone.state_dir(),
        };
        read_invocations(dir)
            .unwrap_or_default()
            .iter()
            .filter(|i| i.subcommand().as_deref() == Some(sub))
            .count()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.setup.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if let Some(dir) = &self.tmpfs {
            let _ = Command::new("umount").arg("-l").arg(dir).status();
        }
    }
}

fn sha256_file(path: &Path) -> Option<String> {
    let mut hasher = Sha256::new();
    let mut f = std::fs::File::open(path).ok()?;
    std::io::copy(&mut f, &mut hasher).ok()?;
    Some(
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Every directory under `root` holding a manifest also holds each chunk it
/// lists, with its size and SHA-256.
fn manifests_are_true(root: &Path) -> Result<usize, String> {
    let mut checked = 0;
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(0);
    };
    for e in entries.flatten() {
        let dir = e.path();
        let Ok(bytes) = std::fs::read(dir.join("manifest.json")) else {
            continue;
        };
        let m: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|err| format!("{}: unreadable manifest: {err}", dir.display()))?;
        for c in m["chunks"].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or_default();
            let path = dir.join(name);
            let size = std::fs::metadata(&path).map(|m| m.len()).ok();
            if size != c["size"].as_u64() || sha256_file(&path).as_deref() != c["sha256"].as_str() {
                return Err(format!(
                    "{} has a manifest but chunk {name} is missing or wrong",
                    dir.display()
                ));
            }
        }
        checked += 1;
    }
    Ok(checked)
}

fn zfs_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("zfs").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The invariants that hold after any run, faulted or not (without 7 when
/// `torn_down` is false).
fn check_state(case: &Case, torn_down: bool, problems: &mut Vec<String>) {
    // 4 and 5: nothing looks complete unless it is.
    if case.mode == Mode::Intermediate {
        for (what, root) in [("remote", &case.remote), ("local", &case.setup.basedir)] {
            if let Err(e) = manifests_are_true(root) {
                problems.push(format!("inv 4/5 ({what}): {e}"));
            }
        }
    }
    // A failed export removes its partial directory; one left by SIGKILL
    // is removed by the next run.
    let partials: Vec<String> = std::fs::read_dir(&case.setup.basedir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    if !partials.is_empty() {
        problems.push(format!("inv 5: partial exports left: {partials:?}"));
    }
    // 6: foreign things untouched; a held full base remains.
    let snaps = zfs_lines(&[
        "list",
        "-H",
        "-t",
        "snapshot",
        "-o",
        "name",
        "-r",
        &case.dataset,
    ]);
    if !snaps.iter().any(|s| s.ends_with("@manual")) {
        problems.push("inv 6: the foreign snapshot @manual is gone".into());
    }
    if std::fs::read_to_string(&case.foreign_remote)
        .ok()
        .as_deref()
        != Some("not zfs2cloud's\n")
    {
        problems.push("inv 6: the foreign remote object was touched".into());
    }
    if case.mode == Mode::Intermediate {
        // (zfs-fuse's `zfs holds` is broken; userrefs counts the holds.)
        if !snaps.iter().any(|s| zfs_get("userrefs", s) != "0") {
            problems.push(format!("inv 6: no held full base among {snaps:?}"));
        }
    }
    if !torn_down {
        return;
    }
    // 7: no temporary clone, no mount left behind.
    let pool = case.dataset.split('/').next().unwrap();
    let clone_prefix = format!("{}{}", case.dataset, zfs2cloud_core::CLONE_INFIX);
    let left: Vec<String> = zfs_lines(&["list", "-H", "-o", "name", "-r", pool])
        .into_iter()
        .filter(|d| d.starts_with(&clone_prefix) || d.starts_with(&format!("{}/", case.dataset)))
        .collect();
    if !left.is_empty() {
        problems.push(format!("inv 7: datasets left behind: {left:?}"));
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let base = case.setup.basedir.display().to_string();
    if mounts.lines().any(|l| {
        l.split(' ')
            .nth(1)
            .is_some_and(|m| m.starts_with(&format!("{base}/")))
    }) {
        problems.push("inv 7: a mount under intermediate_basedir is left".into());
    }
}

/// Checks after the faulted run.
fn check_failure(case: &Case, step: &str, fault: Fault, out: &Output, problems: &mut Vec<String>) {
    // When taking the clone down is what failed, it is still there; the
    // next run must take it down (checked after that run).
    let teardown_failed = step == "umount-snapshot";
    let shown = text(out);
    if shown.contains("panicked")
        || shown.contains("internal error")
        || out.status.code() == Some(70)
    {
        problems.push(format!("panic: {shown}"));
    }
    // 1: non-zero, naming the step and the cause.
    match fault {
        Fault::Sigkill => {
            if out.status.code().is_some() {
                problems.push(format!("inv 1: not killed: {:?}", out.status));
            }
        }
        Fault::Sigterm => {
            if out.status.code() != Some(143) {
                problems.push(format!("inv 1: exit {:?}, expected 143", out.status.code()));
            }
        }
        _ => {
            if out.status.success() || out.status.code() == Some(143) {
                problems.push(format!("inv 1: exit {:?}", out.status.code()));
            }
        }
    }
    if fault != Fault::Sigkill {
        let cause = match fault {
            Fault::Exit => "injected failure",
            Fault::DieMidStream => "killed mid-stream",
            Fault::Hang => "timed out after",
            Fault::Garbage => "unexpected output",
            Fault::Sigterm => "interrupted",
            Fault::DiskFull => "No space left on device",
            Fault::Sigkill => unreachable!(),
        };
        let named = format!("step {step} failed");
        if !shown.contains(&named) || !shown.contains(cause) {
            problems.push(format!(
                "inv 1: expected {named:?} and {cause:?} in: {shown}"
            ));
        }
        // 3: on_failure ran with the error on stdin.
        let reported = case.read("on_failure.txt");
        if !reported.contains(&named) {
            problems.push(format!("inv 3: on_failure got {reported:?}"));
        }
    } // 2: post_snapshot ran if pre_snapshot did. Nothing runs after a
      // SIGKILL: there the next run owes it (checked after that run).
    if fault != Fault::Sigkill {
        check_hooks(case, problems);
        check_state(case, !teardown_failed, problems);
    }
}

/// Invariant 2: as many post_snapshot runs as pre_snapshot runs.
fn check_hooks(case: &Case, problems: &mut Vec<String>) {
    let hooks = case.read("hooks.log");
    let (pre, post) = (
        hooks.lines().filter(|l| *l == "pre").count(),
        hooks.lines().filter(|l| *l == "post").count(),
    );
    if pre != post {
        problems.push(format!(
            "inv 2: pre_snapshot ran {pre}×, post_snapshot {post}×"
        ));
    }
}

/// Runs the faulted backup, signalling it once the target command runs.
fn faulted_run(case: &Case, tool: Tool, sub: &str, fault: Fault) -> Output {
    let mut cmd = case.cmd(DAY_FAULT);
    let signal = match fault {
        Fault::Sigterm => Some("TERM"),
        Fault::Sigkill => Some("KILL"),
        _ => None,
    };
    let Some(signal) = signal else {
        return cmd.output().unwrap();
    };
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let waiting = || started.elapsed() < Duration::from_secs(60);
    // Earlier steps may run the same command: wait for the arming script
    // (it moves the staged rule into place), then for the next call.
    while case.staged(tool).exists() && waiting() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let armed = case.invocations(tool, sub);
    while case.invocations(tool, sub) == armed && waiting() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Inside the (hanging) command now.
    std::thread::sleep(Duration::from_millis(200));
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status();
    child.wait_with_output().unwrap()
}

/// The restore of the run after the fault is removed must equal the data.
fn check_restore(pool: &Pool<'_>, case: &Case, n: usize, problems: &mut Vec<String>) {
    let expected = tree_digest(&case.data);
    match case.mode {
        Mode::Intermediate => {
            let target = pool.dataset(&format!("r{n}"));
            let out = case
                .setup
                .cmd(DAY_AFTER)
                .args(["restore", "--to", &target])
                .output()
                .unwrap();
            if !out.status.success() {
                problems.push(format!("inv 9: restore failed: {}", text(&out)));
                return;
            }
            if tree_digest(&pool.mountpoint(&target)) != expected {
                problems.push("inv 9: the restore differs from the data".into());
            } // Best effort (zfs-fuse may call it busy); the pool goes anyway.
            let _ = Command::new("zfs")
                .args(["destroy", "-r", &target])
                .output();
        }
        Mode::File => {
            let mut got = tree_digest(&case.remote);
            got.remove("__zfs2cloud_last_updated__");
            if got != expected {
                problems.push(format!("inv 9: the remote differs from the data: {got:?}"));
            }
        }
    }
}

/// One cell: baseline, faulted run, invariants, recovery run, restore.
fn run_cell(pool: &Pool<'_>, mode: Mode, n: usize, step: &str, fault: Fault) -> Result<(), String> {
    let target = target(mode, step, fault);
    let case = Case::new(pool, mode, n, step, matches!(target, Target::Disk));
    let mut problems = Vec::new();
    let base = case.cmd(DAY_BASE).output().unwrap();
    if !base.status.success() {
        return Err(format!("baseline failed: {}", text(&base)));
    }
    std::fs::write(case.data.join("sub/notes.txt"), "changed after the base\n").unwrap();

    let (tool, sub) = match target {
        Target::Command(tool, sub) => (tool, sub),
        // Fill the small file system, leaving less than one chunk free.
        Target::Disk => {
            let filler = case.setup.basedir.join("filler");
            let _ = Command::new("dd")
                .args(["if=/dev/zero", "bs=64k"])
                .arg(format!("of={}", filler.display()))
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("truncate")
                .args(["-s", "-16K"])
                .arg(&filler)
                .status();
            (Tool::Zfs, "send")
        }
        Target::NotApplicable(_) => unreachable!(),
    };
    let action = match fault {
        Fault::Exit => Some(FaultAction::Exit {
            code: 1,
            stderr: "injected failure".into(),
        }),
        Fault::DieMidStream => Some(FaultAction::DieAfter { bytes: 40_000 }),
        Fault::Hang | Fault::Sigterm | Fault::Sigkill => Some(FaultAction::Hang),
        Fault::Garbage => Some(FaultAction::Garbage),
        Fault::DiskFull => None,
    };
    if let Some(action) = action {
        case.stage(tool, action, sub);
    }
    case.set_limit(step, STEP_LIMIT_SECONDS);
    let out = faulted_run(&case, tool, sub, fault);
    case.set_limit(step, RELAXED_LIMIT_SECONDS);
    check_failure(&case, step, fault, &out, &mut problems);

    case.clear_faults();
    let _ = std::fs::remove_file(case.setup.basedir.join("filler"));
    // The arming script has nothing staged any more: a plain run.
    std::fs::write(case.data.join("sub/after.txt"), "after the fault\n").unwrap();
    let after = case.cmd(DAY_AFTER).output().unwrap();
    if !after.status.success() {
        // 8: after SIGKILL, the lock must be free for the next run.
        problems.push(format!(
            "inv 8/9: the run after the fault failed ({:?}): {}",
            after.status.code(),
            text(&after)
        ));
    } else {
        check_hooks(&case, &mut problems);
        check_state(&case, true, &mut problems);
        check_restore(pool, &case, n, &mut problems);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n    "))
    }
}

fn matrix(mode: Mode, tag: &str) {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let pool = zfs.pool(tag);
    let mut results: BTreeMap<(usize, Fault), String> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut n = 0;
    for (si, step) in steps_of(mode).iter().enumerate() {
        for fault in FAULTS {
            // FAULT_MATRIX_ONLY="export:hangs" runs one cell (for debugging).
            let only = std::env::var("FAULT_MATRIX_ONLY").ok();
            if only.is_some_and(|o| o != format!("{step}:{}", fault.name())) {
                continue;
            }
            let cell = match target(mode, step, fault) {
                Target::NotApplicable(why) => format!("n/a ({why})"),
                _ => {
                    n += 1;
                    let started = Instant::now();
                    let cell = match run_cell(&pool, mode, n, step, fault) {
                        Ok(()) => format!("pass {:.0}s", started.elapsed().as_secs_f64()),
                        Err(e) => {
                            let failure = format!("{step} × {}:\n    {e}", fault.name());
                            eprintln!("{failure}");
                            failures.push(failure);
                            "FAIL".to_owned()
                        }
                    };
                    eprintln!("{tag}: {step} × {}: {cell}", fault.name());
                    cell
                }
            };
            results.insert((si, fault), cell);
        }
    }
    let mut table = format!("fault matrix, {tag} mode (step × fault)\n\n| step |");
    for f in FAULTS {
        let _ = write!(table, " {} |", f.name());
    }
    table.push_str("\n|---|");
    table.push_str(&"---|".repeat(FAULTS.len()));
    table.push('\n');
    for (si, step) in steps_of(mode).iter().enumerate() {
        let _ = write!(table, "| {step} |");
        for f in FAULTS {
            let cell = results.get(&(si, f)).map_or("skipped", String::as_str);
            let _ = write!(table, " {cell} |");
        }
        table.push('\n');
    }
    eprintln!("{table}");
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fault-matrix-{tag}.txt")),
        &table,
    );
    if std::env::var_os("FAULT_MATRIX_ONLY").is_none() {
        assert!(n >= 20, "too few cells ran: {n}");
    }
    assert!(
        failures.is_empty(),
        "{table}\n{} cell(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fault_matrix_intermediate_mode() {
    matrix(Mode::Intermediate, "intermediate");
}

#[test]
fn fault_matrix_file_mode() {
    matrix(Mode::File, "file");
}
