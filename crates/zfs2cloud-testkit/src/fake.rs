//! Stateful, recording, fault-injecting stand-ins for `zfs` and `rclone`.
//!
//! The `fake-zfs` and `fake-rclone` binaries of this crate keep their state
//! in a directory named by an environment variable (`FAKE_ZFS_STATE` /
//! `FAKE_RCLONE_STATE`).  [`FakeZfs`] and [`FakeRclone`] create such a
//! directory, seed it, inject faults and read back what happened (the
//! helpers they share are those of [`FakeDir`], which both deref to); their
//! `env()` gives the variables to hand to the code under test
//! (`ZFS2CLOUD_ZFS` / `ZFS2CLOUD_RCLONE` point at the fake binaries).
//!
//! Layout of a state directory:
//!
//! * `invocations.jsonl`: one [`Invocation`] per line, appended by every run
//!   of a fake before it does anything else (so a hanging call is recorded).
//! * `faults.json`: a JSON array of [`FaultRule`]s, consumed by the fakes.
//! * `zfs.json` (fake-zfs only): the [`ZfsState`].
//! * `received/<target>.bin` (fake-zfs only): bytes fed to `zfs receive`.
//!   A fake send stream starts with a [`StreamHeader`], which `receive`
//!   checks as zfs checks a real stream's.
//! * `remotes/<name>/...` (fake-rclone only): the contents of remote `name:`.
//!
//! ```no_run
//! use zfs2cloud_testkit::fake::{FakeZfs, FaultAction};
//!
//! let zfs = FakeZfs::new();
//! zfs.add_dataset("tank/data");
//! zfs.add_snapshot("tank/data@20240101000000", &[("zfs2cloud:kind", "full")]);
//! zfs.inject("send", FaultAction::DieAfter { bytes: 1000 }, Some(1));
//! let out = zfs.command().args(["send", "tank/data@20240101000000"]).output().unwrap();
//! assert_eq!(out.stdout.len(), 1000);
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::{ControlFlow, Deref};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Environment variable naming the state directory of `fake-zfs`.
pub const ZFS_STATE_ENV: &str = "FAKE_ZFS_STATE";
/// Environment variable naming the state directory of `fake-rclone`.
pub const RCLONE_STATE_ENV: &str = "FAKE_RCLONE_STATE";
/// Environment variable through which zfs2cloud finds its `zfs` binary.
pub const ZFS_BIN_ENV: &str = "ZFS2CLOUD_ZFS";
/// Environment variable through which zfs2cloud finds its `rclone` binary.
pub const RCLONE_BIN_ENV: &str = "ZFS2CLOUD_RCLONE";
/// If set (unix seconds), `fake-zfs snapshot` uses it as the creation time.
pub const ZFS_NOW_ENV: &str = "FAKE_ZFS_NOW";
/// If set (bytes), `fake-zfs snapshot` uses it as the new snapshot's stream size.
pub const ZFS_STREAM_SIZE_ENV: &str = "FAKE_ZFS_STREAM_SIZE";
/// When set (to the real `zfs`), `fake-zfs` is a fault-injecting wrapper:
/// it records the invocation and applies a matching fault, and otherwise
/// runs the real binary with the same arguments ([`run_real`]).
pub const ZFS_REAL_ENV: &str = "FAKE_ZFS_REAL";
/// [`ZFS_REAL_ENV`] for `fake-rclone` (the real `rclone`).
pub const RCLONE_REAL_ENV: &str = "FAKE_RCLONE_REAL";
/// If set, [`fake_bin`] takes the fake binaries from this directory and
/// does not run cargo.
pub const FAKE_BIN_DIR_ENV: &str = "ZFS2CLOUD_FAKE_BIN_DIR";
/// Size of a full send stream of a snapshot created without an explicit size.
pub const DEFAULT_STREAM_SIZE: u64 = 300_000;
/// Name of the invocation log inside a state directory.
pub const INVOCATIONS_FILE: &str = "invocations.jsonl";
/// Name of the fault rule file inside a state directory.
pub const FAULTS_FILE: &str = "faults.json";
/// Name of the fake-zfs state file inside a state directory.
pub const ZFS_STATE_FILE: &str = "zfs.json";
/// Name of the lock file guarding `faults.json` and `zfs.json`.
pub const LOCK_FILE: &str = "state.lock";
/// File in the fake zfs's state directory holding how many bytes the
/// current (or last) `zfs send` has written to its stdout, in decimal;
/// updated every [`SEND_PROGRESS_STEP`] bytes and at the end. It shows how
/// far the consumer has read: a send blocked on a full pipe stops there.
pub const SEND_PROGRESS_FILE: &str = "send-progress";
/// How often `zfs send` updates [`SEND_PROGRESS_FILE`].
pub const SEND_PROGRESS_STEP: u64 = 256 * 1024;
/// Bytes the `garbage` fault prints on stdout.
pub const GARBAGE: &[u8] = b"\x00\x01garbage\tno-tabs-here\n???";
/// Timestamp `fake-zfs holds` prints for every hold.
pub const HOLD_TIMESTAMP: &str = "Thu Jan  1 00:00 2024";

/// What a fake does instead of (or while) running a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Print `stderr` (a newline is added if missing), exit with `code`, do
    /// nothing else.
    Exit {
        /// Exit status.
        code: i32,
        /// Message for stderr.
        #[serde(default)]
        stderr: String,
    },
    /// Run the command, but stop its stdout after exactly `bytes` bytes,
    /// print `fake: killed mid-stream` and exit 1 (also when the output was
    /// shorter).  Applies to `zfs send` and `rclone cat`; `zfs receive` and
    /// `rclone rcat` instead consume at most `bytes` bytes of stdin (storing
    /// the partial input for `receive`, nothing for `rcat`) and then die.
    /// Other commands exit 1 without doing anything.
    DieAfter {
        /// Bytes to let through.
        bytes: u64,
    },
    /// Sleep forever without output.
    Hang,
    /// Print [`GARBAGE`] on stdout and exit 0.
    Garbage,
}

/// One entry of `faults.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Subcommand it applies to (`send`, `list`, `copy`, ...), or `*` for any.
    pub command: String,
    /// What to do.
    pub action: FaultAction,
    /// How many more times the rule applies; `None` is unlimited.
    #[serde(default)]
    pub times: Option<u32>,
    /// If set, the rule applies only when some argument contains this string
    /// (e.g. a snapshot or chunk name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_contains: Option<String>,
    /// How many matching invocations it lets pass before it applies: with
    /// `after: n` and `times: Some(1)` the (n+1)-th one fails.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub after: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl FaultRule {
    /// A rule for `command` without an argument filter.
    pub fn new(command: &str, action: FaultAction, times: Option<u32>) -> Self {
        Self {
            command: command.to_owned(),
            action,
            times,
            arg_contains: None,
            after: 0,
        }
    }

    /// The same rule, applying only after `after` matching invocations
    /// have passed.
    #[must_use]
    pub fn after(mut self, after: u32) -> Self {
        self.after = after;
        self
    }

    /// Whether the rule is live and matches this subcommand and argv.
    pub fn matches(&self, command: &str, args: &[String]) -> bool {
        if self.times == Some(0) {
            return false;
        }
        let command_ok = self.command == "*"
            || self.command == command
            || (is_recv(&self.command) && is_recv(command));
        let args_ok = match &self.arg_contains {
            Some(needle) => args.iter().any(|a| a.contains(needle.as_str())),
            None => true,
        };
        command_ok && args_ok
    }
}

fn is_recv(command: &str) -> bool {
    command == "recv" || command == "receive"
}

/// One recorded run of a fake binary (a line of `invocations.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    /// `zfs` or `rclone`.
    pub tool: String,
    /// Every argument after argv\[0\].
    pub args: Vec<String>,
    /// Process id of the fake.
    pub pid: u32,
}

impl Invocation {
    /// The subcommand (`send`, `copy`, ...), found as the fake finds it.
    pub fn subcommand(&self) -> Option<String> {
        if self.tool == "rclone" {
            parse_rclone_args(&self.args)
                .ok()
                .and_then(|a| a.positionals.into_iter().next())
        } else {
            zfs_subcommand(&self.args).map(str::to_owned)
        }
    }
}

/// A fake dataset (a file system, or a volume if it has `volsize`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetState {
    /// Properties set on it (user properties like `zfs2cloud:x` and any
    /// native ones given to `create -o` / `set`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Its mountpoint: a path, `legacy` or `none`.
    #[serde(default)]
    pub mountpoint: String,
    /// The snapshot it was cloned from (`zfs clone`), if it is a clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Whether it is mounted (`zfs mount`, `zfs umount`, `recv -u`).
    #[serde(default)]
    pub mounted: bool,
    /// Whether it was written to since its newest snapshot (see
    /// [`FakeZfs::modify`]): an incremental receive without `-F` refuses
    /// it, as zfs does.
    #[serde(default)]
    pub modified: bool,
}

impl DatasetState {
    /// Whether it is a volume (`zfs create -V`).
    pub fn is_volume(&self) -> bool {
        self.properties.contains_key("volsize")
    }

    /// Whether `zfs mount` would mount it: a file system with a path as
    /// mountpoint and `canmount=on`.
    pub fn mountable(&self) -> bool {
        !self.is_volume()
            && self.mountpoint.starts_with('/')
            && self.properties.get("canmount").is_none_or(|c| c == "on")
    }
}

/// A fake snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotState {
    /// User properties (like `zfs2cloud:kind`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Hold tags, in the order they were placed.
    #[serde(default)]
    pub holds: Vec<String>,
    /// Creation time, unix seconds.
    #[serde(default)]
    pub creation: u64,
    /// Size of a full send stream of it, in bytes.
    #[serde(default)]
    pub stream_size: u64,
    /// Creation order (orders snapshots created in the same second).
    #[serde(default)]
    pub createtxg: u64,
    /// The guid it was received with (a received snapshot keeps the
    /// sender's); `None`: one derived from its name ([`name_guid`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<u64>,
}

/// Everything fake-zfs knows (`zfs.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZfsState {
    /// Datasets by name (`tank/data`).
    #[serde(default)]
    pub datasets: BTreeMap<String, DatasetState>,
    /// Snapshots by full name (`tank/data@snap`).
    #[serde(default)]
    pub snapshots: BTreeMap<String, SnapshotState>,
    /// Last `createtxg` handed out.
    #[serde(default)]
    pub next_txg: u64,
}

impl ZfsState {
    /// Adds a file system unless it exists, and likewise its missing
    /// ancestors (so `tank` exists once `tank/a` does). A pool's mountpoint
    /// is `/<pool>`; a child inherits its parent's (`<parent's>/<leaf>`,
    /// or `legacy` / `none` as it is), and each is mounted if it can be.
    pub fn ensure_dataset(&mut self, name: &str) {
        let mut parent: Option<String> = None;
        for comp in name.split('/') {
            let prefix = match &parent {
                Some(p) => format!("{p}/{comp}"),
                None => comp.to_owned(),
            };
            if !self.datasets.contains_key(&prefix) {
                let mountpoint = self.inherited_mountpoint(&prefix);
                // Encryption is decided when a dataset is created: a child
                // of an encrypted one is encrypted too.
                let mut properties = BTreeMap::new();
                if let Some(enc) = parent
                    .as_ref()
                    .and_then(|p| self.datasets.get(p))
                    .and_then(|p| p.properties.get("encryption"))
                    .filter(|e| *e != "off")
                {
                    properties.insert("encryption".to_owned(), enc.clone());
                }
                let mut d = DatasetState {
                    properties,
                    mountpoint,
                    ..DatasetState::default()
                };
                d.mounted = d.mountable();
                self.datasets.insert(prefix.clone(), d);
            }
            parent = Some(prefix);
        }
    }

    /// The mountpoint dataset `name` inherits: its parent's with its last
    /// component appended (the parent's `legacy` or `none` as it is), and
    /// `/<name>` for a pool.
    pub fn inherited_mountpoint(&self, name: &str) -> String {
        let parent = name
            .rsplit_once('/')
            .and_then(|(p, leaf)| Some((self.datasets.get(p)?, leaf)));
        match parent {
            Some((p, leaf)) if p.mountpoint.starts_with('/') => {
                format!("{}/{leaf}", p.mountpoint.trim_end_matches('/'))
            }
            Some((p, _)) => p.mountpoint.clone(),
            None => format!("/{name}"),
        }
    }

    /// Adds pool `name` (a dataset without a parent) mounted at
    /// `mountpoint`, as `zpool create -m <mountpoint>` does; no-op if it
    /// exists.
    pub fn ensure_pool(&mut self, name: &str, mountpoint: &str) {
        self.datasets
            .entry(name.to_owned())
            .or_insert_with(|| DatasetState {
                mountpoint: mountpoint.to_owned(),
                mounted: mountpoint.starts_with('/'),
                ..DatasetState::default()
            });
    }

    /// The guid of snapshot `name`: the one it was received with, else
    /// [`name_guid`].
    pub fn guid(&self, name: &str) -> u64 {
        self.snapshots
            .get(name)
            .and_then(|s| s.guid)
            .unwrap_or_else(|| name_guid(name))
    }

    /// The header of the stream of `zfs send [-i base] snapshot` (full
    /// names, both existing), `len` bytes long in all.
    pub fn stream_header(&self, snapshot: &str, base: Option<&str>, len: u64) -> StreamHeader {
        let dataset = snapshot.split_once('@').map_or(snapshot, |(d, _)| d);
        StreamHeader {
            snapshot: snapshot.to_owned(),
            guid: self.guid(snapshot),
            base_guid: base.map(|b| self.guid(b)),
            len,
            volsize: self
                .datasets
                .get(dataset)
                .and_then(|d| d.properties.get("volsize").cloned()),
        }
    }

    /// The datasets cloned from `snapshot`.
    pub fn clones_of(&self, snapshot: &str) -> Vec<String> {
        self.datasets
            .iter()
            .filter(|(_, d)| d.origin.as_deref() == Some(snapshot))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Returns a fresh `createtxg`.
    pub fn bump_txg(&mut self) -> u64 {
        self.next_txg += 1;
        self.next_txg
    }

    /// Full names of the snapshots of `dataset`, by (creation, createtxg, name).
    pub fn snapshots_of(&self, dataset: &str) -> Vec<String> {
        let mut names: Vec<&String> = self
            .snapshots
            .keys()
            .filter(|n| n.split_once('@').map(|(d, _)| d) == Some(dataset))
            .collect();
        names.sort_by(|a, b| {
            let (sa, sb) = (&self.snapshots[*a], &self.snapshots[*b]);
            (sa.creation, sa.createtxg, *a).cmp(&(sb.creation, sb.createtxg, *b))
        });
        names.into_iter().cloned().collect()
    }
}

/// A snapshot as seen by a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSnapshot {
    /// Full name, `dataset@snap`.
    pub name: String,
    /// User properties.
    pub properties: BTreeMap<String, String>,
    /// Hold tags.
    pub holds: Vec<String>,
    /// Creation time, unix seconds.
    pub creation: u64,
    /// Size of a full send stream, bytes.
    pub stream_size: u64,
}

impl FakeSnapshot {
    /// The part after `@`.
    pub fn short_name(&self) -> &str {
        self.name.split_once('@').map_or("", |(_, s)| s)
    }
}

// ---------------------------------------------------------------------------
// State directory plumbing, shared by the binaries and the helpers.

/// Appends `{"tool":..,"args":..,"pid":..}` to `<dir>/invocations.jsonl` in a
/// single `O_APPEND` write.
pub fn record_invocation(dir: &Path, tool: &str, args: &[String]) -> io::Result<()> {
    let inv = Invocation {
        tool: tool.to_owned(),
        args: args.to_vec(),
        pid: std::process::id(),
    };
    let mut line = serde_json::to_vec(&inv).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(INVOCATIONS_FILE))?;
    file.write_all(&line)
}

/// Parses `<dir>/invocations.jsonl` (missing file: no invocations).
pub fn read_invocations(dir: &Path) -> io::Result<Vec<Invocation>> {
    let text = match fs::read_to_string(dir.join(INVOCATIONS_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(io::Error::other))
        .collect()
}

/// Exclusive lock on a state directory: `<dir>/state.lock`, created with
/// `create_new` and removed on drop.  A lock older than 30 s is considered
/// stale (its holder was killed) and broken.
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
}

impl StateLock {
    /// Waits (up to a minute) for the lock of `dir`.
    pub fn acquire(dir: &Path) -> io::Result<Self> {
        let path = dir.join(LOCK_FILE);
        let started = SystemTime::now();
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    // Best effort: who holds it, for debugging.
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(30));
                    if stale {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if started.elapsed().unwrap_or_default() > Duration::from_secs(60) {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("timed out waiting for lock {}", path.display()),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

fn read_json_or_default<T: Default + for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    match fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads `<dir>/faults.json` (missing file: no rules).  Take the
/// [`StateLock`] around read-modify-write cycles.
pub fn read_faults(dir: &Path) -> io::Result<Vec<FaultRule>> {
    read_json_or_default(&dir.join(FAULTS_FILE))
}

/// Replaces `<dir>/faults.json`.
pub fn write_faults(dir: &Path, rules: &[FaultRule]) -> io::Result<()> {
    write_json(&dir.join(FAULTS_FILE), &rules)
}

/// Finds the first live rule matching `command`/`args`, decrements its
/// `after` (letting the invocation pass) or else its `times` in the file,
/// and returns its action.
pub fn take_fault(dir: &Path, command: &str, args: &[String]) -> io::Result<Option<FaultAction>> {
    if !dir.join(FAULTS_FILE).exists() {
        return Ok(None);
    }
    let _lock = StateLock::acquire(dir)?;
    let mut rules = read_faults(dir)?;
    let Some(rule) = rules.iter_mut().find(|r| r.matches(command, args)) else {
        return Ok(None);
    };
    if rule.after > 0 {
        rule.after -= 1;
        write_faults(dir, &rules)?;
        return Ok(None);
    }
    let action = rule.action.clone();
    if let Some(n) = rule.times.as_mut() {
        *n = n.saturating_sub(1);
        write_faults(dir, &rules)?;
    }
    Ok(Some(action))
}

/// Appends a rule to `<dir>/faults.json` (under the lock).
pub fn add_fault(dir: &Path, rule: FaultRule) -> io::Result<()> {
    let _lock = StateLock::acquire(dir)?;
    let mut rules = read_faults(dir)?;
    rules.push(rule);
    write_faults(dir, &rules)
}

/// Removes every rule from `<dir>/faults.json` (under the lock).
pub fn clear_faults(dir: &Path) -> io::Result<()> {
    let _lock = StateLock::acquire(dir)?;
    write_faults(dir, &[])
}

/// Reads `<dir>/zfs.json` (missing file: empty state).
pub fn load_zfs_state(dir: &Path) -> io::Result<ZfsState> {
    read_json_or_default(&dir.join(ZFS_STATE_FILE))
}

/// Replaces `<dir>/zfs.json` atomically.
pub fn save_zfs_state(dir: &Path, state: &ZfsState) -> io::Result<()> {
    write_json(&dir.join(ZFS_STATE_FILE), state)
}

/// Read-modify-write of `<dir>/zfs.json` under the [`StateLock`].  The state
/// is saved only if `f` returns `Ok` and changed it.
pub fn with_zfs_state<R, E: From<io::Error>>(
    dir: &Path,
    f: impl FnOnce(&mut ZfsState) -> Result<R, E>,
) -> Result<R, E> {
    let _lock = StateLock::acquire(dir)?;
    let mut state = load_zfs_state(dir)?;
    let before = state.clone();
    let result = f(&mut state)?;
    if state != before {
        save_zfs_state(dir, &state)?;
    }
    Ok(result)
}

/// Where `zfs receive TARGET` stores its input: `<dir>/received/<TARGET with
/// '/' and '@' replaced by '_'>.bin`.
pub fn received_path(dir: &Path, target: &str) -> PathBuf {
    let name: String = target
        .chars()
        .map(|c| if c == '/' || c == '@' { '_' } else { c })
        .collect();
    dir.join("received").join(format!("{name}.bin"))
}

/// The zfs subcommand: the first argument not starting with `-`.
pub fn zfs_subcommand(args: &[String]) -> Option<&str> {
    args.iter()
        .map(String::as_str)
        .find(|a| !a.starts_with('-'))
}

// ---------------------------------------------------------------------------
// What both fake binaries do before their subcommand.

/// The start of `fake-<tool>` (`tool`: `zfs` or `rclone`): collects argv
/// after argv\[0\] (lossily), takes the state directory from the environment
/// variable `state_env` and records the invocation there
/// ([`record_invocation`]).  Returns (state directory, arguments); if the
/// variable is unset or empty, or recording fails, prints why on stderr and
/// returns `Err(2)`, the exit status.
#[allow(clippy::print_stderr)]
pub fn start_fake(tool: &str, state_env: &str) -> Result<(PathBuf, Vec<String>), i32> {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let dir = match std::env::var_os(state_env) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            eprintln!("fake-{tool}: {state_env} is not set");
            return Err(2);
        }
    };
    if let Err(e) = record_invocation(&dir, tool, &args) {
        eprintln!(
            "fake-{tool}: cannot record invocation in {}: {e}",
            dir.display()
        );
        return Err(2);
    }
    Ok((dir, args))
}

/// Takes the fault rule for subcommand `sub` of `fake-<tool>` ([`take_fault`])
/// and carries out the part of it that comes before the command:
///
/// * none: `Ok(None)`, run the command normally;
/// * `Exit`: prints its message ([`eprint_message`]), `Err(code)`;
/// * `Hang`: never returns;
/// * `Garbage`: prints [`GARBAGE`] on stdout, `Err(0)`;
/// * `DieAfter`: if `sub` is one of `streaming`, `Ok(Some(bytes))` (the
///   command has to stop after them), else prints `fake: killed mid-stream`
///   and `Err(1)`;
/// * unreadable faults: a message on stderr and `Err(2)`.
///
/// `Err(code)` is the exit status.
#[allow(clippy::print_stderr)]
pub fn apply_fault(
    dir: &Path,
    tool: &str,
    sub: &str,
    args: &[String],
    streaming: &[&str],
) -> Result<Option<u64>, i32> {
    match take_fault(dir, sub, args) {
        Ok(None) => Ok(None),
        Ok(Some(FaultAction::Exit { code, stderr })) => {
            eprint_message(&stderr);
            Err(code)
        }
        Ok(Some(FaultAction::Hang)) => hang(),
        Ok(Some(FaultAction::Garbage)) => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(GARBAGE);
            let _ = out.flush();
            Err(0)
        }
        Ok(Some(FaultAction::DieAfter { bytes })) => {
            if streaming.contains(&sub) {
                Ok(Some(bytes))
            } else {
                eprintln!("fake: killed mid-stream");
                Err(1)
            }
        }
        Err(e) => {
            eprintln!("fake-{tool}: cannot read faults: {e}");
            Err(2)
        }
    }
}

/// Sleeps "forever": until killed, or until the process that started it
/// is gone (then exits 1), so that a test that SIGKILLs zfs2cloud leaves no
/// hanging fake behind.
pub fn hang() -> ! {
    let parent = std::os::unix::process::parent_id();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(1);
        }
    }
}

/// How a wrapper ([`run_real`]) cuts a command off mid-stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MidStream {
    /// Pass the real command's stdout through, but only `bytes` of it
    /// (`zfs send`, `rclone cat`).
    Stdout,
    /// Instead of the command, run this replacement (built by the caller
    /// from the bytes allowed), then fail.
    Replace,
    /// The command has no stream: fail without running it.
    None,
}

/// What a wrapper does to die mid-stream after some bytes: how, and for
/// [`MidStream::Replace`] the replacement argv and its stdin.
pub type MidStreamPlan = (MidStream, Option<(Vec<String>, Option<Vec<u8>>)>);

/// The fault-injecting wrapper mode of the fakes ([`ZFS_REAL_ENV`]): takes
/// the fault rule for `sub` and
///
/// * none: runs `real` with `args` in place of this process (exec);
/// * `Exit`, `Garbage`: as [`apply_fault`], without running `real`;
/// * `Hang`: [`hang`], without running `real`;
/// * `DieAfter { bytes }`: per `mid_stream(bytes)`: with
///   [`MidStream::Stdout`], runs `real` and passes only `bytes` of its
///   stdout; with [`MidStream::Replace`], runs the returned replacement
///   argv (e.g. an `rclone rcat` of a prefix of the file); then prints
///   `fake: killed mid-stream` and exits 1.
///
/// Returns the exit status (it returns only if `real` is not exec'd).
#[allow(clippy::print_stderr)]
pub fn run_real(
    dir: &Path,
    sub: &str,
    args: &[String],
    real: &Path,
    mid_stream: &dyn Fn(u64) -> MidStreamPlan,
) -> i32 {
    use std::os::unix::process::CommandExt;
    let fault = match take_fault(dir, sub, args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake: cannot read faults: {e}");
            return 2;
        }
    };
    let bytes = match fault {
        None => {
            let e = Command::new(real).args(args).exec();
            eprintln!("fake: cannot run {}: {e}", real.display());
            return 127;
        }
        Some(FaultAction::Exit { code, stderr }) => {
            eprint_message(&stderr);
            return code;
        }
        Some(FaultAction::Hang) => hang(),
        Some(FaultAction::Garbage) => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(GARBAGE);
            let _ = out.flush();
            return 0;
        }
        Some(FaultAction::DieAfter { bytes }) => bytes,
    };
    match mid_stream(bytes) {
        (MidStream::Stdout, _) => {
            if let Ok(mut child) = Command::new(real)
                .args(args)
                .stdout(std::process::Stdio::piped())
                .spawn()
            {
                if let Some(out) = child.stdout.take() {
                    let _ = io::copy(&mut out.take(bytes), &mut io::stdout().lock());
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        (MidStream::Replace, Some((argv, stdin))) => {
            let mut cmd = Command::new(real);
            cmd.args(&argv);
            if stdin.is_some() {
                cmd.stdin(std::process::Stdio::piped());
            }
            if let Ok(mut child) = cmd.spawn() {
                if let (Some(mut pipe), Some(data)) = (child.stdin.take(), stdin) {
                    let _ = pipe.write_all(&data);
                }
                let _ = child.wait();
            }
        }
        _ => {}
    }
    eprintln!("fake: killed mid-stream");
    1
}

/// Prints `msg` on stderr, adding a newline if it lacks one; prints nothing
/// if it is empty.
#[allow(clippy::print_stderr)]
pub fn eprint_message(msg: &str) {
    if msg.is_empty() {
        return;
    }
    if msg.ends_with('\n') {
        eprint!("{msg}");
    } else {
        eprintln!("{msg}");
    }
}

// ---------------------------------------------------------------------------
// Send streams.

/// Deterministic pseudo-random bytes (xorshift64 seeded by FNV-1a of a text).
#[derive(Debug, Clone)]
pub struct StreamGen {
    state: u64,
}

impl StreamGen {
    /// A generator seeded from `seed`.
    pub fn new(seed: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            state: if h == 0 { 0x9e37_79b9_7f4a_7c15 } else { h },
        }
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.state = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Seed text of the send stream of `snapshot` (full names), incremental
/// from `base` if given.
pub fn send_seed(snapshot: &str, base: Option<&str>) -> String {
    match base {
        Some(b) => format!("incremental:{b}:{snapshot}"),
        None => format!("full:{snapshot}"),
    }
}

/// Length of an incremental stream of a snapshot whose full stream is
/// `stream_size` bytes.
pub fn incremental_size(stream_size: u64) -> u64 {
    (stream_size / 4).max(1)
}

/// A guid for snapshot `name` (full name) derived from the name, so that
/// the same snapshot always has the same one.
pub fn name_guid(name: &str) -> u64 {
    let mut g = StreamGen::new(&format!("guid:{name}"));
    let mut b = [0u8; 8];
    g.fill(&mut b);
    u64::from_le_bytes(b) >> 1
}

/// How every fake send stream starts.
pub const STREAM_MAGIC: &[u8] = b"FAKE-ZFS-STREAM\t";

/// What a fake send stream says about itself in its first line, as a real
/// one does in its BEGIN record, so that `fake-zfs receive` can apply zfs's
/// rules: whether it is full or incremental, from which base (by guid),
/// which snapshot it creates, and how long it is (a shorter stream is
/// incomplete). The line is `STREAM_MAGIC` and four tab-separated fields:
/// snapshot, guid, base guid (`-` for a full stream), length. The stream
/// is that line followed by pseudo-random bytes ([`StreamGen`]), `len`
/// bytes in all; a stream shorter than its header is the header cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// The snapshot sent, full name (its part after `@` names the snapshot
    /// `receive` creates when given a dataset).
    pub snapshot: String,
    /// Its guid; the received snapshot keeps it.
    pub guid: u64,
    /// The incremental base's guid; `None` for a full stream.
    pub base_guid: Option<u64>,
    /// Length of the whole stream, header included, in bytes.
    pub len: u64,
    /// The volume size of a volume's stream (a fifth field); `None` for a
    /// file system's, whose header has four fields as before.
    pub volsize: Option<String>,
}

/// The start of a stream given to `fake-zfs receive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStart {
    /// A complete header, and its length in bytes.
    Header(StreamHeader, usize),
    /// The stream ends inside the header.
    Short,
    /// Not a fake send stream.
    BadMagic,
}

impl StreamHeader {
    /// The header line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let base = self
            .base_guid
            .map_or_else(|| "-".to_owned(), |g| g.to_string());
        let volume = self
            .volsize
            .as_ref()
            .map(|v| format!("\t{v}"))
            .unwrap_or_default();
        let mut line = STREAM_MAGIC.to_vec();
        line.extend_from_slice(
            format!(
                "{}\t{}\t{base}\t{}{volume}\n",
                self.snapshot, self.guid, self.len
            )
            .as_bytes(),
        );
        line
    }

    /// Reads the header at the start of `stream`.
    pub fn parse(stream: &[u8]) -> StreamStart {
        let magic = &STREAM_MAGIC[..stream.len().min(STREAM_MAGIC.len())];
        if !stream.starts_with(magic) {
            return StreamStart::BadMagic;
        }
        let Some(end) = stream.iter().position(|b| *b == b'\n') else {
            return StreamStart::Short;
        };
        let line = String::from_utf8_lossy(&stream[STREAM_MAGIC.len().min(end)..end]).into_owned();
        match Self::from_fields(&line) {
            Some(h) => StreamStart::Header(h, end + 1),
            None => StreamStart::BadMagic,
        }
    }

    /// The header from its line's fields (after the magic).
    fn from_fields(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.split('\t').collect();
        let (snapshot, guid, base, len, volsize) = match fields[..] {
            [snapshot, guid, base, len] => (snapshot, guid, base, len, None),
            [snapshot, guid, base, len, volsize] => {
                (snapshot, guid, base, len, Some(volsize.to_owned()))
            }
            _ => return None,
        };
        Some(Self {
            snapshot: snapshot.to_owned(),
            guid: guid.parse().ok()?,
            base_guid: match base {
                "-" => None,
                g => Some(g.parse().ok()?),
            },
            len: len.parse().ok()?,
            volsize,
        })
    }
}

/// Hands the stream of `header` (sent incrementally from `base`, full
/// name, if given) to `piece` in order: the header, then the payload in
/// pieces of at most 64 KiB, until `piece` says to stop.
pub fn for_each_stream_piece(
    header: &StreamHeader,
    base: Option<&str>,
    mut piece: impl FnMut(&[u8]) -> ControlFlow<()>,
) {
    let line = header.to_bytes();
    let len = usize::try_from(header.len).unwrap_or(usize::MAX);
    let head = &line[..line.len().min(len)];
    if piece(head).is_break() {
        return;
    }
    let mut remaining = len - head.len();
    let mut gen = StreamGen::new(&send_seed(&header.snapshot, base));
    // 8-byte aligned pieces, so piece boundaries do not change the bytes.
    let mut buf = vec![0u8; 64 * 1024];
    while remaining > 0 {
        let n = remaining.min(buf.len());
        gen.fill(&mut buf[..n]);
        if piece(&buf[..n]).is_break() {
            return;
        }
        remaining -= n;
    }
}

/// The exact bytes `fake-zfs send [-i base] snapshot` writes for the
/// stream `header` describes (see [`ZfsState::stream_header`] and
/// [`incremental_size`]).
pub fn send_stream(header: &StreamHeader, base: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    for_each_stream_piece(header, base, |p| {
        out.extend_from_slice(p);
        ControlFlow::Continue(())
    });
    out
}

// ---------------------------------------------------------------------------
// Time helpers.

/// Unix seconds of a `YYYYMMDDHHMMSS` run of exactly 14 digits in a snapshot
/// name (the part after `@`, or a full name), read as UTC.
pub fn parse_snapshot_time(name: &str) -> Option<u64> {
    let short = name.rsplit_once('@').map_or(name, |(_, s)| s);
    let bytes = short.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i - start == 14 {
            return stamp_to_unix(&short[start..i]);
        }
    }
    None
}

fn stamp_to_unix(digits: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| digits.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(8..10)?, num(10..12)?, num(12..14)?);
    if !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // From the first of the month (which checks the month), so a day past
    // the month's end or second 60 carries over: `20240230…` is 1 March.
    let month = NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo, 1)?;
    let offset = (d - 1) * 86_400 + h * 3600 + mi * 60 + s;
    let secs = month.and_time(NaiveTime::MIN).and_utc().timestamp() + i64::from(offset);
    u64::try_from(secs).ok()
}

/// Formats unix seconds like `zfs list` does without `-p`
/// (`Mon Jan  1 00:00 2024`, UTC; the epoch if out of chrono's range).
pub fn format_ctime(secs: u64) -> String {
    utc(i64::try_from(secs).unwrap_or(i64::MAX))
        .format("%a %b %e %H:%M %Y")
        .to_string()
}

/// Formats unix seconds as RFC 3339 UTC (`2024-01-01T00:00:00Z`; the epoch
/// if out of chrono's range).
pub fn format_rfc3339(secs: i64) -> String {
    utc(secs).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn utc(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// Current unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------
// SHA-256 (for `rclone lsjson --hash` / `hashsum sha256`).

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Lowercase hex SHA-256 of everything `reader` yields, read piecewise.
///
/// # Errors
///
/// The first read error of `reader`.
pub fn sha256_hex_reader(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut reader, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

// ---------------------------------------------------------------------------
// rclone argument parsing.

/// rclone flags that take a value when written as `--flag value`.
pub const RCLONE_VALUE_FLAGS: &[&str] = &[
    "config",
    "bwlimit",
    "retries",
    "retries-sleep",
    "low-level-retries",
    "transfers",
    "checkers",
    "contimeout",
    "timeout",
    "exclude",
    "include",
    "filter",
    "filter-from",
    "exclude-from",
    "include-from",
    "files-from",
    "max-age",
    "min-age",
    "max-size",
    "min-size",
    "max-depth",
    "hash-type",
    "log-file",
    "log-level",
    "stats",
    "stats-log-level",
    "tpslimit",
    "user-agent",
    "backup-dir",
    "suffix",
    "cache-dir",
    "temp-dir",
    "order-by",
    "buffer-size",
    "multi-thread-streams",
    "multi-thread-cutoff",
    "max-transfer",
    "cutoff-mode",
    "format",
    "separator",
    "offset",
    "count",
    "head",
    "tail",
    "header",
    "header-upload",
    "header-download",
    "s3-upload-cutoff",
    "s3-chunk-size",
    "b2-chunk-size",
    "drive-chunk-size",
];

/// A parsed rclone command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcloneArgs {
    /// Long flags in order as (name, value); booleans get `"true"`.  Short
    /// flags are mapped: `-v` verbose, `-q` quiet, `-R` recursive,
    /// `-n` dry-run, `-P` progress, `-i` interactive (others: their letter).
    pub flags: Vec<(String, String)>,
    /// Non-flag arguments: the subcommand first.
    pub positionals: Vec<String>,
}

impl RcloneArgs {
    /// Whether boolean flag `name` is set (and not `=false`).
    pub fn has(&self, name: &str) -> bool {
        self.flags
            .iter()
            .any(|(n, v)| n == name && v != "false" && v != "0")
    }

    /// The last value of flag `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of flag `name`, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Parses rclone's argv (without argv\[0\]); flags may appear anywhere.
pub fn parse_rclone_args(args: &[String]) -> Result<RcloneArgs, String> {
    let mut out = RcloneArgs::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            out.positionals.extend(it.by_ref().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            if let Some((name, value)) = long.split_once('=') {
                out.flags.push((name.to_owned(), value.to_owned()));
            } else if RCLONE_VALUE_FLAGS.contains(&long) {
                let value = it
                    .next()
                    .ok_or_else(|| format!("flag needs an argument: --{long}"))?;
                out.flags.push((long.to_owned(), value.clone()));
            } else {
                out.flags.push((long.to_owned(), "true".to_owned()));
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            for c in arg.chars().skip(1) {
                let name = match c {
                    'v' => "verbose".to_owned(),
                    'q' => "quiet".to_owned(),
                    'R' => "recursive".to_owned(),
                    'n' => "dry-run".to_owned(),
                    'P' => "progress".to_owned(),
                    'i' => "interactive".to_owned(),
                    other => other.to_string(),
                };
                out.flags.push((name, "true".to_owned()));
            }
        } else {
            out.positionals.push(arg.clone());
        }
    }
    Ok(out)
}

/// Maps an rclone path to a local path: `name:path/inside` becomes
/// `<dir>/remotes/<name>/path/inside`; anything else (no `:`, or a `/`
/// before the first `:`) is a local path and returned as is.
pub fn rclone_path(dir: &Path, spec: &str) -> PathBuf {
    match split_remote(spec) {
        Some((name, inside)) => {
            let mut p = dir.join("remotes").join(name);
            for comp in inside.split('/').filter(|c| !c.is_empty() && *c != ".") {
                p.push(comp);
            }
            p
        }
        None => PathBuf::from(spec),
    }
}

/// Splits `name:path` into (`name`, `path`) if `spec` names a remote.
pub fn split_remote(spec: &str) -> Option<(&str, &str)> {
    let (name, inside) = spec.split_once(':')?;
    let name = name.trim_start_matches(':');
    if name.is_empty() || name.contains('/') || name.contains('\\') {
        return None;
    }
    Some((name, inside))
}

// ---------------------------------------------------------------------------
// Locating (and building) the fake binaries.

/// Path of the compiled fake binary `name` (`fake-zfs` or `fake-rclone`).
///
/// The first call in a process runs `$CARGO build -p zfs2cloud-testkit
/// --bins` (cargo does nothing if they are up to date) for the profile and
/// target directory of the running test executable (found from
/// `current_exe()`, normally `target/<profile>/deps/<test>`); panics with
/// cargo's full output if that fails.  If `ZFS2CLOUD_FAKE_BIN_DIR` is set,
/// the binaries are taken from there and nothing is built.
pub fn fake_bin(name: &str) -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(build_fake_bins) {
        Ok(dir) => dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)),
        Err(msg) => panic!("{msg}"),
    }
}

fn build_fake_bins() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(FAKE_BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(|e| format!("fake_bin: current_exe: {e}"))?;
    let mut profile_dir = exe
        .parent()
        .ok_or_else(|| format!("fake_bin: {} has no parent", exe.display()))?;
    if matches!(
        profile_dir.file_name().and_then(|n| n.to_str()),
        Some("deps" | "examples")
    ) {
        profile_dir = profile_dir.parent().unwrap_or(profile_dir);
    }
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-p",
        "zfs2cloud-testkit",
        "--bins",
        "--manifest-path",
    ])
    .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(parent) = profile_dir.parent() {
        if parent.join("CACHEDIR.TAG").exists() {
            cmd.arg("--target-dir").arg(parent);
        } else if let (Some(root), Some(triple)) = (parent.parent(), parent.file_name()) {
            if root.join("CACHEDIR.TAG").exists() {
                cmd.arg("--target-dir")
                    .arg(root)
                    .arg("--target")
                    .arg(triple);
            }
        }
    }
    let output = cmd
        .output()
        .map_err(|e| format!("fake_bin: cannot run {cmd:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "fake_bin: building the fake binaries failed ({}): {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    for bin in ["fake-zfs", "fake-rclone"] {
        let path = profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
        if !path.exists() {
            return Err(format!(
                "fake_bin: {cmd:?} succeeded but {} does not exist",
                path.display()
            ));
        }
    }
    Ok(profile_dir.to_path_buf())
}

// ---------------------------------------------------------------------------
// Test-facing handles.

fn must<T>(result: io::Result<T>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("fake: {what}: {e}"),
    }
}

fn new_state_dir(prefix: &str) -> tempfile::TempDir {
    must(
        tempfile::Builder::new().prefix(prefix).tempdir(),
        "creating a temporary state directory",
    )
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// What [`FakeZfs`] and [`FakeRclone`] have in common: the temporary state
/// directory of one fake binary (deleted on drop), with helpers to inject
/// faults, read back invocations and run the fake.  Both handles deref to
/// it, so these are methods of theirs too.
#[derive(Debug)]
pub struct FakeDir {
    dir: tempfile::TempDir,
    /// `fake-zfs` or `fake-rclone`.
    bin: &'static str,
    /// Variable through which zfs2cloud finds the binary.
    bin_env: &'static str,
    /// Variable naming the state directory for the binary.
    state_env: &'static str,
}

impl FakeDir {
    fn new(bin: &'static str, bin_env: &'static str, state_env: &'static str) -> Self {
        Self {
            dir: new_state_dir(&format!("{bin}-")),
            bin,
            bin_env,
            state_env,
        }
    }

    /// The state directory (`FAKE_ZFS_STATE` / `FAKE_RCLONE_STATE`).
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a fault rule for subcommand `command` (`"*"`: any).
    pub fn inject(&self, command: &str, action: FaultAction, times: Option<u32>) {
        self.inject_rule(FaultRule::new(command, action, times));
    }

    /// Adds a fault rule (e.g. one with `arg_contains`).
    pub fn inject_rule(&self, rule: FaultRule) {
        must(add_fault(self.state_dir(), rule), "writing faults.json");
    }

    /// The current fault rules (with their remaining `times`).
    pub fn faults(&self) -> Vec<FaultRule> {
        must(read_faults(self.state_dir()), "reading faults.json")
    }

    /// Removes all fault rules.
    pub fn clear_faults(&self) {
        must(clear_faults(self.state_dir()), "writing faults.json");
    }

    /// Every recorded invocation, oldest first.
    pub fn invocations(&self) -> Vec<Invocation> {
        must(
            read_invocations(self.state_dir()),
            "reading invocations.jsonl",
        )
    }

    /// Recorded invocations of subcommand `command`.
    pub fn invocations_of(&self, command: &str) -> Vec<Invocation> {
        self.invocations()
            .into_iter()
            .filter(|i| i.subcommand().as_deref() == Some(command))
            .collect()
    }

    /// The variables to hand to the code under test:
    /// `[("ZFS2CLOUD_ZFS", <fake-zfs>), ("FAKE_ZFS_STATE", <state dir>)]`,
    /// likewise `ZFS2CLOUD_RCLONE` and `FAKE_RCLONE_STATE` for rclone.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (self.bin_env.to_owned(), path_string(&fake_bin(self.bin))),
            (self.state_env.to_owned(), path_string(self.state_dir())),
        ]
    }

    /// A `Command` running the fake with this state directory.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(fake_bin(self.bin));
        cmd.env(self.state_env, self.state_dir());
        cmd
    }
}

/// A fake `zfs`: a temporary state directory plus helpers to seed and
/// inspect it (and those of [`FakeDir`]).  The directory is deleted on drop.
#[derive(Debug)]
pub struct FakeZfs {
    dir: FakeDir,
}

impl Default for FakeZfs {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for FakeZfs {
    type Target = FakeDir;

    fn deref(&self) -> &FakeDir {
        &self.dir
    }
}

impl FakeZfs {
    /// A fresh, empty state directory (no datasets).
    pub fn new() -> Self {
        let dir = FakeDir::new("fake-zfs", ZFS_BIN_ENV, ZFS_STATE_ENV);
        must(
            save_zfs_state(dir.state_dir(), &ZfsState::default()),
            "writing zfs.json",
        );
        Self { dir }
    }

    /// A snapshot of the whole state.
    pub fn state(&self) -> ZfsState {
        must(load_zfs_state(self.state_dir()), "reading zfs.json")
    }

    /// Read-modify-write of the state under the lock.
    pub fn update_state<R>(&self, f: impl FnOnce(&mut ZfsState) -> R) -> R {
        must(
            with_zfs_state(self.state_dir(), |s| Ok::<R, io::Error>(f(s))),
            "updating zfs.json",
        )
    }

    /// Adds dataset `name` with mountpoint `/<name>`, and its missing
    /// ancestors (no-op if it exists).
    pub fn add_dataset(&self, name: &str) {
        self.update_state(|s| s.ensure_dataset(name));
    }

    /// Adds pool `name` mounted at `mountpoint` (`zpool create -m`), so
    /// that its datasets' mountpoints are found below it.
    pub fn add_pool(&self, name: &str, mountpoint: &str) {
        self.update_state(|s| s.ensure_pool(name, mountpoint));
    }

    /// Marks dataset `name` as written to since its newest snapshot (as a
    /// file written into it would): `zfs receive` of an incremental then
    /// needs `-F`. Panics if it does not exist.
    pub fn modify(&self, name: &str) {
        let found = self.update_state(|s| {
            s.datasets
                .get_mut(name)
                .map(|d| d.modified = true)
                .is_some()
        });
        assert!(found, "fake: dataset {name} does not exist");
    }

    /// Adds (or replaces) snapshot `full_name` (`ds@snap`) with user
    /// properties `props`, creating its dataset if needed.  Its creation
    /// time is parsed from a 14-digit `YYYYMMDDHHMMSS` run in the snapshot
    /// name (UTC), else now; its stream size is [`DEFAULT_STREAM_SIZE`].
    pub fn add_snapshot(&self, full_name: &str, props: &[(&str, &str)]) {
        let Some((ds, snap)) = full_name.split_once('@') else {
            panic!("fake: add_snapshot: {full_name:?} has no '@'");
        };
        let creation = parse_snapshot_time(snap).unwrap_or_else(unix_now);
        self.update_state(|s| {
            s.ensure_dataset(ds);
            let createtxg = s.bump_txg();
            s.snapshots.insert(
                full_name.to_owned(),
                SnapshotState {
                    properties: props
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    holds: Vec::new(),
                    creation,
                    stream_size: DEFAULT_STREAM_SIZE,
                    createtxg,
                    guid: None,
                },
            );
        });
    }

    /// Bytes the current (or last) `zfs send` has written so far
    /// ([`SEND_PROGRESS_FILE`]); 0 before any send.
    pub fn send_progress(&self) -> u64 {
        fs::read_to_string(self.state_dir().join(SEND_PROGRESS_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sets the full-stream size of an existing snapshot (panics if missing).
    pub fn set_stream_size(&self, full_name: &str, bytes: u64) {
        self.update_snapshot(full_name, |s| s.stream_size = bytes);
    }

    /// Sets the creation time of an existing snapshot (panics if missing).
    pub fn set_creation(&self, full_name: &str, unix_secs: u64) {
        self.update_snapshot(full_name, |s| s.creation = unix_secs);
    }

    /// Places hold `tag` on an existing snapshot (panics if missing).
    pub fn add_hold(&self, full_name: &str, tag: &str) {
        self.update_snapshot(full_name, |s| {
            if !s.holds.iter().any(|t| t == tag) {
                s.holds.push(tag.to_owned());
            }
        });
    }

    fn update_snapshot(&self, full_name: &str, f: impl FnOnce(&mut SnapshotState)) {
        let found = self.update_state(|s| s.snapshots.get_mut(full_name).map(f).is_some());
        assert!(found, "fake: snapshot {full_name} does not exist");
    }

    /// Snapshots of `dataset` (not of its children), oldest first.
    pub fn snapshots(&self, dataset: &str) -> Vec<FakeSnapshot> {
        let state = self.state();
        state
            .snapshots_of(dataset)
            .into_iter()
            .filter_map(|name| {
                let s = state.snapshots.get(&name)?;
                Some(FakeSnapshot {
                    name,
                    properties: s.properties.clone(),
                    holds: s.holds.clone(),
                    creation: s.creation,
                    stream_size: s.stream_size,
                })
            })
            .collect()
    }

    /// Whether dataset `name` exists.
    pub fn has_dataset(&self, name: &str) -> bool {
        self.state().datasets.contains_key(name)
    }

    /// The bytes `fake-zfs send` writes for `snapshot` (incremental from
    /// `base` if given; both full names).  Panics if a snapshot is missing.
    pub fn expected_stream(&self, snapshot: &str, base: Option<&str>) -> Vec<u8> {
        let state = self.state();
        let Some(snap) = state.snapshots.get(snapshot) else {
            panic!("fake: snapshot {snapshot} does not exist");
        };
        let len = match base {
            Some(_) => incremental_size(snap.stream_size),
            None => snap.stream_size,
        };
        send_stream(&state.stream_header(snapshot, base, len), base)
    }

    /// Everything `zfs receive TARGET` has read so far (`None` if nothing).
    pub fn received(&self, target: &str) -> Option<Vec<u8>> {
        fs::read(received_path(self.state_dir(), target)).ok()
    }

    /// `fake_bin("fake-zfs")`.
    pub fn bin_path() -> PathBuf {
        fake_bin("fake-zfs")
    }
}

/// A fake `rclone`: a temporary state directory whose `remotes/<name>/`
/// directories hold the contents of remote `name:` (plus the helpers of
/// [`FakeDir`]).  Deleted on drop.
#[derive(Debug)]
pub struct FakeRclone {
    dir: FakeDir,
}

impl Default for FakeRclone {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for FakeRclone {
    type Target = FakeDir;

    fn deref(&self) -> &FakeDir {
        &self.dir
    }
}

impl FakeRclone {
    /// A fresh state directory with an empty `remotes/`.
    pub fn new() -> Self {
        let dir = FakeDir::new("fake-rclone", RCLONE_BIN_ENV, RCLONE_STATE_ENV);
        must(
            fs::create_dir_all(dir.state_dir().join("remotes")),
            "creating remotes/",
        );
        Self { dir }
    }

    /// Local directory holding remote `name:` (`<state>/remotes/<name>`;
    /// not created).
    pub fn remote_dir(&self, name: &str) -> PathBuf {
        self.state_dir().join("remotes").join(name)
    }

    /// Local path of an rclone path like `remote:dir/file`.
    pub fn path(&self, spec: &str) -> PathBuf {
        rclone_path(self.state_dir(), spec)
    }

    /// Relative paths of all files under `spec` (e.g. `remote:dir`), sorted;
    /// empty if it does not exist.
    pub fn files(&self, spec: &str) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(base, &path, out);
                } else if let Ok(rel) = path.strip_prefix(base) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let root = self.path(spec);
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.sort();
        out
    }

    /// `fake_bin("fake-rclone")`.
    pub fn bin_path() -> PathBuf {
        fake_bin("fake-rclone")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_lowercase_hex() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), abc);
        assert_eq!(sha256_hex_reader(&b"abc"[..]).unwrap(), abc);
    }

    #[test]
    fn time_formats() {
        assert_eq!(parse_snapshot_time("20240101000000"), Some(1_704_067_200));
        assert_eq!(
            parse_snapshot_time("tank/x@zfs2cloud-20240229123456-full"),
            Some(1_709_210_096)
        );
        assert_eq!(parse_snapshot_time("2024010100000"), None);
        assert_eq!(parse_snapshot_time("202401010000001"), None);
        assert_eq!(parse_snapshot_time("20241301000000"), None);
        assert_eq!(parse_snapshot_time("19691231235959"), None);
        // Overlong days and second 60 carry over.
        assert_eq!(parse_snapshot_time("20240230000000"), Some(1_709_251_200));
        assert_eq!(parse_snapshot_time("20231231235960"), Some(1_704_067_200));
        assert_eq!(format_ctime(1_704_067_200), "Mon Jan  1 00:00 2024");
        assert_eq!(format_ctime(1_709_210_096), "Thu Feb 29 12:34 2024");
        assert_eq!(format_rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn rclone_parsing() {
        let args: Vec<String> = [
            "--config",
            "/x.conf",
            "-vv",
            "lsjson",
            "--hash",
            "-R",
            "r:a/b",
            "--max-depth=2",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let p = parse_rclone_args(&args).unwrap();
        assert_eq!(p.positionals, ["lsjson", "r:a/b"]);
        assert_eq!(p.value("config"), Some("/x.conf"));
        assert!(p.has("recursive") && p.has("hash") && p.has("verbose"));
        assert_eq!(p.value("max-depth"), Some("2"));
        let dir = Path::new("/s");
        assert_eq!(rclone_path(dir, "r:a//b/"), Path::new("/s/remotes/r/a/b"));
        assert_eq!(rclone_path(dir, "r:"), Path::new("/s/remotes/r"));
        assert_eq!(rclone_path(dir, "/tmp/a:b"), Path::new("/tmp/a:b"));
    }

    #[test]
    fn a_stream_is_its_header_and_then_piecewise_stable_bytes() {
        let header = StreamHeader {
            volsize: None,
            snapshot: "t@a".into(),
            guid: 7,
            base_guid: None,
            len: 100_003,
        };
        let a = send_stream(&header, None);
        assert_eq!(a.len(), 100_003);
        let line = b"FAKE-ZFS-STREAM\tt@a\t7\t-\t100003\n";
        assert_eq!(a[..line.len()], line[..]);
        let mut b = vec![0u8; 100_003 - line.len()];
        let mut g = StreamGen::new(&send_seed("t@a", None));
        for piece in b.chunks_mut(64 * 1024) {
            g.fill(piece);
        }
        assert_eq!(a[line.len()..], b[..]);
        assert_eq!(
            StreamHeader::parse(&a),
            StreamStart::Header(header.clone(), line.len())
        );

        let incremental = StreamHeader {
            base_guid: Some(3),
            ..header.clone()
        };
        let bytes = send_stream(&incremental, Some("t@base"));
        assert_eq!(
            StreamHeader::parse(&bytes),
            StreamStart::Header(incremental, line.len())
        );
        // A volume's stream says its size in a fifth field.
        let volume = StreamHeader {
            volsize: Some("64M".into()),
            ..header.clone()
        };
        let bytes = send_stream(&volume, None);
        assert!(bytes.starts_with(b"FAKE-ZFS-STREAM\tt@a\t7\t-\t100003\t64M\n"));
        assert!(matches!(
            StreamHeader::parse(&bytes),
            StreamStart::Header(h, _) if h == volume
        ));
        assert_eq!(StreamHeader::parse(&a[..20]), StreamStart::Short);
        assert_eq!(StreamHeader::parse(b"FAKE"), StreamStart::Short);
        assert_eq!(StreamHeader::parse(b"not a stream"), StreamStart::BadMagic);
        // Shorter than its header: the header cut short.
        let tiny = send_stream(&StreamHeader { len: 10, ..header }, None);
        assert_eq!(tiny, line[..10]);
    }
}
