//! Helpers for end-to-end tests against the real `zfs`, `gpg` and `rclone`.
//!
//! * [`require_tools`]: under `CI=true` a missing tool fails the test; on a
//!   developer machine the test is skipped with a message.
//! * [`ZfsSession`]: the machine-wide lock every real-ZFS test holds, and
//!   the only way to make a [`Pool`]: a file-backed pool with a unique name,
//!   destroyed on drop (before the lock is released).
//! * [`run_ok`] / [`run_fail`]: run a command and, if it does not end as
//!   expected, panic with the command, cwd, status, stdout and stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::fake::sha256_hex_reader;

/// Whether this is a CI run (`CI=true`), where missing tools are failures.
#[must_use]
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn tool_works(tool: &str) -> bool {
    let probe = match tool {
        // zpool also needs the zfs-fuse daemon (or the kernel module).
        "zpool" => Command::new("zpool").arg("list").output(),
        "zfs" => Command::new("zfs")
            .args(["list", "-H", "-o", "name"])
            .output(),
        "gpg" => Command::new("gpg").arg("--version").output(),
        "rclone" => Command::new("rclone").arg("version").output(),
        other => Command::new(other).arg("--version").output(),
    };
    probe.is_ok_and(|o| o.status.success())
}

/// Checks that each tool is installed and working.
///
/// Returns `true` if all are. If one is missing, under `CI=true` this
/// panics (a CI run must never pass by skipping); otherwise it prints why
/// the test is skipped and returns `false`.
///
/// # Panics
///
/// Under `CI=true`, when a tool is missing.
#[must_use]
pub fn require_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !tool_works(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "required tools missing or not working: {} (install zfs-fuse, gnupg, rclone and start \
         `zfs-fuse`; see .ci/run)",
        missing.join(", ")
    );
    assert!(!is_ci(), "CI=true: {msg}");
    #[allow(clippy::print_stderr)]
    {
        eprintln!("SKIPPED: {msg}");
    }
    false
}

/// Renders a command for failure messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let _ = write!(s, " {}", a.to_string_lossy());
    }
    s
}

fn report(cmd: &Command, out: &Output, expectation: &str) -> String {
    let cwd = cmd
        .get_current_dir()
        .map(Path::to_path_buf)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    let envs: Vec<String> = cmd
        .get_envs()
        .map(|(k, v)| {
            format!(
                "{}={}",
                k.to_string_lossy(),
                v.map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )
        })
        .collect();
    format!(
        "\n\ncommand {expectation}\n\ncommand: {}\ncwd: {}\nenv: {}\nstatus: {}\n\nstdout:\n{}\n\nstderr:\n{}\n",
        describe(cmd),
        cwd.display(),
        envs.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` and returns its output; panics with everything if it fails.
///
/// # Panics
///
/// If the command cannot start or exits unsuccessfully.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(cmd)));
    assert!(
        out.status.success(),
        "{}",
        report(cmd, &out, "should have succeeded")
    );
    out
}

/// Runs `cmd`, expecting it to fail; panics with everything if it succeeds.
///
/// # Panics
///
/// If the command cannot start or exits with status 0.
pub fn run_fail(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(cmd)));
    assert!(
        !out.status.success(),
        "{}",
        report(cmd, &out, "should have failed")
    );
    out
}

/// Runs a shell pipeline with `bash -euo pipefail`, for the stock-tools
/// restore recipes the README promises (the tests prove them).
///
/// # Panics
///
/// If any part of the pipeline fails.
pub fn run_pipeline(script: &str) -> Output {
    run_ok(
        Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail; {script}")),
    )
}

static POOL_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Where the machine-wide real-ZFS test lock lives.
const ZFS_LOCK_PATH: &str = "/tmp/zfs2cloud-zfs-tests.lock";

/// Exclusive use of the ZFS daemon for one test.
///
/// zfs-fuse deadlocks when pools are created and mounted concurrently (seen
/// here: two `zpool create` + `zfs create` at once wedge every FUSE
/// mount). So every test that touches real ZFS holds this lock: an `flock`
/// on a fixed file, which serializes threads of one test binary and
/// separate test processes alike.
#[derive(Debug)]
pub struct ZfsSession {
    _lock: std::fs::File,
}

impl ZfsSession {
    /// Checks the tools with [`require_tools`] (`zpool` and `zfs` are always
    /// required), then waits for the lock. `None` means skip the test
    /// (never under `CI=true`, where a missing tool panics).
    ///
    /// # Panics
    ///
    /// Under `CI=true` when a tool is missing, or if the lock file cannot be
    /// opened or locked.
    #[must_use]
    pub fn start(extra_tools: &[&str]) -> Option<Self> {
        let mut tools = vec!["zpool", "zfs"];
        tools.extend_from_slice(extra_tools);
        if !require_tools(&tools) {
            return None;
        }
        Some(Self::lock())
    }

    /// Waits for the machine-wide lock.
    fn lock() -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(ZFS_LOCK_PATH)
            .unwrap_or_else(|e| panic!("open {ZFS_LOCK_PATH}: {e}"));
        file.lock()
            .unwrap_or_else(|e| panic!("lock {ZFS_LOCK_PATH}: {e}"));
        Self { _lock: file }
    }

    /// Creates a pool that lives no longer than this session.
    #[must_use]
    pub fn pool(&self, tag: &str) -> Pool<'_> {
        Pool::create_with(tag, 512 << 20, &[])
    }

    /// Creates a pool like [`ZfsSession::pool`], on a sparse image of
    /// `bytes` bytes (the benchmark's multi-GiB datasets need more than
    /// the default 512 MiB).
    #[must_use]
    pub fn pool_sized(&self, tag: &str, bytes: u64) -> Pool<'_> {
        Pool::create_with(tag, bytes, &[])
    }

    /// Creates a pool like [`ZfsSession::pool`], with `options` added to
    /// `zpool create` (e.g. `-R <altroot>`, `-O encryption=on`).
    #[must_use]
    pub fn pool_with(&self, tag: &str, options: &[&str]) -> Pool<'_> {
        Pool::create_with(tag, 512 << 20, options)
    }
}

/// Which ZFS implementation answers `zfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZfsFlavor {
    /// OpenZFS, with the first line of `zfs version` (`zfs-2.3.2-…`).
    OpenZfs(String),
    /// zfs-fuse, which has no `zfs version`.
    ZfsFuse,
}

/// Asks `zfs version`, which OpenZFS has and zfs-fuse does not.
#[must_use]
pub fn zfs_flavor() -> ZfsFlavor {
    match Command::new("zfs").arg("version").output() {
        Ok(out) if out.status.success() => ZfsFlavor::OpenZfs(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        _ => ZfsFlavor::ZfsFuse,
    }
}

/// For the tests that only OpenZFS can run (they are `#[ignore]`d, and
/// `scripts/openzfs-vm/test` runs them in its guest): starts a
/// [`ZfsSession`] and checks that `zfs` is OpenZFS.
///
/// # Panics
///
/// When a tool is missing or `zfs` is not OpenZFS: such a test was asked
/// for explicitly, so it must not pass by skipping.
#[must_use]
pub fn openzfs_session(extra_tools: &[&str]) -> ZfsSession {
    let mut tools = vec!["zpool", "zfs"];
    tools.extend_from_slice(extra_tools);
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !tool_works(t)).collect();
    assert!(missing.is_empty(), "required tools missing: {missing:?}");
    let flavor = zfs_flavor();
    assert!(
        matches!(flavor, ZfsFlavor::OpenZfs(_)),
        "this test needs OpenZFS (run scripts/openzfs-vm/test); `zfs` here is {flavor:?}"
    );
    ZfsSession::lock()
}

/// A file-backed ZFS pool with a unique name, mounted under a temp dir.
/// Dropping it destroys the pool and deletes its image. It borrows the
/// [`ZfsSession`] so it is always destroyed while the lock is held.
#[derive(Debug)]
pub struct Pool<'session> {
    name: String,
    dir: tempfile::TempDir,
    _session: std::marker::PhantomData<&'session ZfsSession>,
}

impl Pool<'_> {
    /// Creates a pool named `z2c<pid>x<n><tag>` on a sparse image of
    /// `bytes` bytes, with `options` for `zpool create`.
    fn create_with(tag: &str, bytes: u64, options: &[&str]) -> Self {
        let n = POOL_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("z2c{}x{n}{tag}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("zfs2cloud-pool-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let image = dir.path().join("pool.img");
        let f = std::fs::File::create(&image).unwrap_or_else(|e| panic!("create image: {e}"));
        f.set_len(bytes)
            .unwrap_or_else(|e| panic!("size image: {e}"));
        let mnt = dir.path().join("mnt");
        run_ok(
            Command::new("zpool")
                .arg("create")
                .args(options)
                .arg("-m")
                .arg(&mnt)
                .arg(&name)
                .arg(&image),
        );
        Self {
            name,
            dir,
            _session: std::marker::PhantomData,
        }
    }

    /// The pool's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<pool>/<rel>`.
    #[must_use]
    pub fn dataset(&self, rel: &str) -> String {
        format!("{}/{rel}", self.name)
    }

    /// Creates `<pool>/<rel>` and returns its mountpoint.
    ///
    /// # Panics
    ///
    /// If `zfs create` fails.
    #[must_use]
    pub fn create_dataset(&self, rel: &str) -> PathBuf {
        run_ok(Command::new("zfs").arg("create").arg(self.dataset(rel)));
        self.mountpoint(&self.dataset(rel))
    }

    /// The mountpoint of `dataset`.
    ///
    /// # Panics
    ///
    /// If `zfs get` fails.
    #[must_use]
    pub fn mountpoint(&self, dataset: &str) -> PathBuf {
        let out =
            run_ok(Command::new("zfs").args(["get", "-H", "-o", "value", "mountpoint", dataset]));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }

    /// A directory next to the pool image, removed with the pool.
    #[must_use]
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        // zfs-fuse sometimes reports a pool busy for a moment after a
        // receive; retry briefly. Never panic in drop: report instead, so a
        // leaked pool is visible.
        let mut last = String::new();
        for _ in 0..10 {
            match Command::new("zpool")
                .args(["destroy", "-f", &self.name])
                .output()
            {
                Ok(o) if o.status.success() => return,
                Ok(o) => last = String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        #[allow(clippy::print_stderr)]
        {
            eprintln!("warning: zpool destroy {} failed: {last}", self.name);
        }
    }
}

/// A user property of a dataset or snapshot via `zfs get -H -o value`
/// (`-` when unset).
///
/// # Panics
///
/// If `zfs get` fails.
#[must_use]
pub fn zfs_get(property: &str, target: &str) -> String {
    let out = run_ok(Command::new("zfs").args(["get", "-H", "-o", "value", property, target]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Content hashes of every regular file under `root`, keyed by relative
/// path; symlinks map to `-> target`, directories to `dir`. Two trees are
/// equal when their maps are equal.
///
/// # Panics
///
/// If the tree cannot be read.
#[must_use]
pub fn tree_digest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("dir entry: {e}")))
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap_or_default();
            out.insert(rel, format!("-> {}", target.display()));
        } else if meta.is_dir() {
            out.insert(rel, "dir".into());
            walk(root, &path, out);
        } else {
            out.insert(
                rel,
                format!("{} bytes, sha256 {}", meta.len(), file_hash(&path)),
            );
        }
    }
}

/// SHA-256 of a file, hex.
fn file_hash(path: &Path) -> String {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    sha256_hex_reader(f).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Writes `len` bytes of deterministic pseudo-random (incompressible) data.
///
/// # Panics
///
/// If the file cannot be written.
pub fn write_random_file(path: &Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
