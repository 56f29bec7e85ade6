//! Incremental strategies and remote retention on real zfs-fuse, gpg and
//! rclone with a local remote (issue 14): 70 nights of `backup` under each
//! strategy, a dataset that changes a fixed share a night, then
//! `prune-remote -y`. What remains matches the policy (the expected sets
//! are written out here), an unrelated object is untouched, and every
//! remaining backup restores byte-identical. A prune killed after any of
//! its deletions leaves every remaining complete backup's chain whole, and
//! the next prune finishes the job.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{Duration, NaiveDate};
use common::{text, which, Setup};
use zfs2cloud_testkit::harness::{run_ok, tree_digest, write_random_file, Pool, ZfsSession};
use zfs2cloud_testkit::remote::RcloneConfig;

/// Files in the dataset; one is rewritten a night, so 1/FILES of the data
/// changes a night.
const FILES: u64 = 50;
/// Nights of backups: 2025-01-01 to 2025-03-11, fulls on 01-01, 01-31
/// and 03-02.
const NIGHTS: i64 = 70;

/// The remote policy of every strategy. On 03-11 (a Tuesday): daily keeps
/// 03-07 to 03-11, weekly the newest of ISO weeks 11 and 10 (03-11,
/// 03-09), monthly the newest of March and February (03-11, 02-28), and
/// the newest chain is the full of 03-02 with all that depends on it.
const POLICY: &str = "[retention.remote]\nkeep_daily = 5\nkeep_weekly = 2\nkeep_monthly = 2\n\
                      keep_chains = 1\n";

/// A dataset backed up night after night, and what it held each night.
struct Nights<'p> {
    pool: &'p Pool<'p>,
    setup: Setup,
    _rclone: RcloneConfig,
    remote_dir: PathBuf,
    /// Snapshot name → the dataset's digest when it was taken.
    digests: BTreeMap<String, BTreeMap<String, String>>,
}

/// The night `n` (from 0) at 03:00 UTC, for `ZFS2CLOUD_NOW`, and its
/// snapshot name.
fn night(n: i64) -> (String, String) {
    let t = NaiveDate::from_ymd_opt(2025, 1, 1)
        .unwrap()
        .and_hms_opt(3, 0, 0)
        .unwrap()
        + Duration::days(n);
    (
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        t.format("%Y%m%d%H%M%S").to_string(),
    )
}

/// Backup directories of the nights `from..=to` (`MMDD`) of 2025.
fn dirs(from: &str, to: &str, full: &[&str]) -> Vec<String> {
    (0..NIGHTS)
        .map(|n| night(n).1)
        .filter(|s| &s[4..8] >= from && &s[4..8] <= to)
        .map(|s| {
            if full.contains(&&s[4..8]) {
                format!("{s}-full")
            } else {
                s
            }
        })
        .collect()
}

impl<'p> Nights<'p> {
    /// Backs up a fresh dataset `NIGHTS` times under `strategy` (TOML),
    /// rewriting one file before each night.
    fn run(pool: &'p Pool<'p>, strategy: &str) -> Self {
        let data = pool.create_dataset("data");
        for i in 0..FILES {
            write_random_file(&data.join(format!("f{i:02}.bin")), 16_384, i);
        }
        let rclone = RcloneConfig::new();
        let remote_dir = rclone.add_local("cloud").join("data");
        let setup = Setup::with_split(
            &pool.dataset("data"),
            &format!("cloud:{}", remote_dir.display()),
            "256K",
            &format!(
                "rclone_config = {:?}\n{strategy}\n{POLICY}",
                rclone.path().display().to_string()
            ),
        );
        let mut nights = Self {
            pool,
            setup,
            _rclone: rclone,
            remote_dir,
            digests: BTreeMap::new(),
        };
        for n in 0..NIGHTS {
            let file = data.join(format!("f{:02}.bin", n as u64 % FILES));
            write_random_file(&file, 16_384, 1000 + n as u64);
            let (now, snap) = night(n);
            run_ok(nights.setup.cmd(&now).arg("backup"));
            nights.digests.insert(snap, tree_digest(&data));
        }
        nights
    }

    /// The snapshots (`MMDD`) that carry a hold: zfs2cloud's, the only
    /// one placed here (zfs-fuse has no `zfs holds`, only `userrefs`).
    fn held(&self) -> Vec<String> {
        let dataset = self.pool.dataset("data");
        let out = run_ok(Command::new("zfs").args([
            "list",
            "-H",
            "-t",
            "snapshot",
            "-o",
            "name,userrefs",
            "-d",
            "1",
            &dataset,
        ]));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .filter(|(_, userrefs)| *userrefs != "0")
            .map(|(name, _)| name[name.len() - 10..name.len() - 6].to_owned())
            .collect()
    }

    /// `zfs2cloud` at the morning after the last night.
    fn cmd(&self) -> Command {
        self.setup.cmd(&night(NIGHTS).0)
    }

    /// The backup directories on the remote, oldest first.
    fn backups(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.remote_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("2025"))
            .collect();
        out.sort();
        out
    }

    /// A backup's manifest.
    fn manifest(&self, dir: &str) -> serde_json::Value {
        common::manifest(&self.remote_dir.join(dir))
    }

    /// The backups restoring `dir` replays, full first, by the manifests.
    fn chain(&self, dir: &str) -> Vec<String> {
        let m = self.manifest(dir);
        let mut chain = match m["base"].as_str() {
            None => Vec::new(),
            Some(base) => {
                let full = format!("{base}-full");
                let base_dir = if self.remote_dir.join(&full).is_dir() {
                    full
                } else {
                    base.to_owned()
                };
                self.chain(&base_dir)
            }
        };
        chain.push(dir.to_owned());
        chain
    }

    /// Puts things under the remote path that are not backups of this
    /// dataset; prune must leave them alone.
    fn add_unrelated(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let other = self.remote_dir.join("other-tool");
        std::fs::create_dir_all(&other).unwrap();
        let files = vec![
            (self.remote_dir.join("notes.txt"), b"keep me\n".to_vec()),
            (other.join("20250101030000.bin"), vec![7u8; 100]),
        ];
        for (path, bytes) in &files {
            std::fs::write(path, bytes).unwrap();
        }
        files
    }

    /// Restores the newest backup of every chain left on the remote (one
    /// `zfs2cloud restore` receives its whole chain) and compares the
    /// snapshot of every backup received on the way, through a clone,
    /// with the dataset as it was that night: each remaining backup is
    /// checked once, in the stream order any restore of it replays.
    fn every_backup_restores_byte_identical(&self) {
        let backups = self.backups();
        let mut checked = BTreeSet::new();
        for leaf in backups.iter().rev() {
            if checked.contains(leaf) {
                continue;
            }
            let chain = self.chain(leaf);
            let target = self.pool.dataset(&format!("r{}", &leaf[..14]));
            let out = run_ok(self.cmd().args(["restore", "--to", &target, "--at", leaf]));
            let unchecked: Vec<&String> = chain.iter().filter(|d| !checked.contains(*d)).collect();
            for dir in unchecked {
                let snap = &dir[..14];
                let clone = self.pool.dataset(&format!("c{snap}"));
                run_ok(Command::new("zfs").args(["clone", &format!("{target}@{snap}"), &clone]));
                assert_eq!(
                    tree_digest(&self.pool.mountpoint(&clone)),
                    self.digests[snap],
                    "{dir}, restored on the way to {leaf}: {}",
                    text(&out)
                );
                checked.insert(dir.clone());
            }
        }
        assert_eq!(checked, backups.into_iter().collect());
    }
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

/// The backups in `files` (paths under the remote directory) that are
/// complete (manifest and every chunk it names) but whose chain is not:
/// what an interrupted prune must never leave.
fn broken_complete_backups(files: &BTreeSet<String>, manifests: &Manifests) -> Vec<String> {
    let complete = |dir: &str| {
        manifests.get(dir).is_some_and(|m| {
            files.contains(&format!("{dir}/manifest.json"))
                && m["chunks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| files.contains(&format!("{dir}/{}", c["name"].as_str().unwrap())))
        })
    };
    let chain_whole = |dir: &str| {
        let mut at = dir.to_owned();
        loop {
            if !complete(&at) {
                return false;
            }
            match manifests[&at]["base"].as_str() {
                None => return true,
                Some(base) => {
                    let full = format!("{base}-full");
                    at = if complete(&full) {
                        full
                    } else {
                        base.to_owned()
                    };
                }
            }
        }
    };
    manifests
        .keys()
        .filter(|d| complete(d) && !chain_whole(d))
        .cloned()
        .collect()
}

type Manifests = BTreeMap<String, serde_json::Value>;

/// An rclone that logs every invocation to `log` and, when `kill_at` is
/// set, kills zfs2cloud (its parent) at the `kill_at`-th deletion instead
/// of running it.
fn rclone_wrapper(dir: &Path, log: &Path, kill_at: Option<usize>) -> PathBuf {
    let real = which("rclone");
    let kill = kill_at.map_or(String::new(), |k| {
        format!(
            "case \" $* \" in *' deletefile '*|*' rmdir '*)\n\
               n=$(grep -cE ' (deletefile|rmdir) ' {log:?})\n\
               if [ $((n + 1)) -ge {k} ]; then kill -9 $PPID; exit 1; fi;;\n\
             esac\n"
        )
    });
    let script = format!(
        "#!/bin/sh\n{kill}echo \"$*\" >> {log:?}\nexec {real:?} \"$@\"\n",
        log = log.display().to_string(),
        real = real.display().to_string()
    );
    let path = dir.join("rclone-wrapper");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The deletions (`deletefile`/`rmdir` paths relative to the remote
/// directory) logged by the wrapper, in order.
fn deletions(log: &Path, remote_dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let prefix = format!("cloud:{}/", remote_dir.display());
    text.lines()
        .filter(|l| l.contains(" deletefile ") || l.contains(" rmdir "))
        .filter_map(|l| l.split(' ').find_map(|w| w.strip_prefix(&prefix)))
        .map(str::to_owned)
        .collect()
}

/// Copies a directory tree (the remote before a prune, to start again).
fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// Prunes, and checks that every prefix of its deletions (the state a
/// prune killed there leaves) keeps every remaining complete backup's
/// chain whole. With `kills`, also kills a prune for real at its first
/// deletion, one in the middle and the last, checks the same on what it
/// left, and that a rerun ends where the uninterrupted prune did. Returns
/// the files left.
fn prune_survives_being_killed(n: &Nights<'_>, kills: bool) -> BTreeSet<String> {
    let work = n.setup.dir.path().join("prune");
    std::fs::create_dir_all(&work).unwrap();
    let pristine = work.join("pristine");
    copy_tree(&n.remote_dir, &pristine);
    let manifests: Manifests = n
        .backups()
        .into_iter()
        .map(|d| {
            let m = n.manifest(&d);
            (d, m)
        })
        .collect();

    // The uninterrupted prune, logged: its deletions, one prefix at a time.
    let log = work.join("full.log");
    let wrapper = rclone_wrapper(&work, &log, None);
    let out = run_ok(
        n.cmd()
            .env("ZFS2CLOUD_RCLONE", &wrapper)
            .args(["prune-remote", "-y"]),
    );
    let done = files_under(&n.remote_dir);
    let steps = deletions(&log, &n.remote_dir);
    assert!(!steps.is_empty(), "nothing deleted: {}", text(&out));
    let mut state = files_under(&pristine);
    for (k, path) in steps.iter().enumerate() {
        state.retain(|f| f != path);
        let broken = broken_complete_backups(&state, &manifests);
        assert!(broken.is_empty(), "after deletion {k} ({path}): {broken:?}");
    }

    // Killed for real at the first deletion, one in the middle and the
    // last; the next prune ends where the uninterrupted one did.
    let kill_points = if kills {
        vec![1, steps.len() / 2, steps.len()]
    } else {
        Vec::new()
    };
    for kill_at in kill_points {
        copy_tree(&pristine, &n.remote_dir);
        let log = work.join(format!("kill{kill_at}.log"));
        let wrapper = rclone_wrapper(&work, &log, Some(kill_at));
        let killed = n
            .cmd()
            .env("ZFS2CLOUD_RCLONE", &wrapper)
            .args(["prune-remote", "-y"])
            .output()
            .unwrap();
        assert!(
            !killed.status.success(),
            "kill at {kill_at}: {}",
            text(&killed)
        );
        let left = files_under(&n.remote_dir);
        let broken = broken_complete_backups(&left, &manifests);
        assert!(broken.is_empty(), "killed at {kill_at}: {broken:?}");
        run_ok(n.cmd().args(["prune-remote", "-y"]));
        assert_eq!(
            files_under(&n.remote_dir),
            done,
            "rerun after kill at {kill_at}"
        );
    }
    done
}

/// The whole scenario for one strategy: 70 nights, the longest chain,
/// the prune (killed and finished), what remains, the unrelated objects,
/// and a byte-identical restore of everything that remains.
fn seventy_nights_then_prune(pool: &Pool<'_>, strategy: &Strategy) {
    let n = Nights::run(pool, strategy.toml);
    let backups = n.backups();
    assert_eq!(backups.len(), NIGHTS as usize, "{backups:?}");
    let fulls: Vec<&String> = backups.iter().filter(|d| d.ends_with("-full")).collect();
    assert_eq!(
        fulls,
        [
            "20250101030000-full",
            "20250131030000-full",
            "20250302030000-full"
        ]
    );
    assert_eq!(
        backups.iter().map(|d| n.chain(d).len()).max(),
        Some(strategy.longest),
        "{}",
        strategy.toml
    );
    assert_eq!(n.held(), strategy.held, "{}", strategy.toml);
    let unrelated = n.add_unrelated();
    let plan = run_ok(n.cmd().arg("prune-remote"));
    assert!(text(&plan).contains("notes.txt"), "{}", text(&plan));
    assert_eq!(n.backups().len(), NIGHTS as usize, "the plan alone deleted");
    prune_survives_being_killed(&n, strategy.kills);
    assert_eq!(n.backups(), strategy.kept, "{}", strategy.toml);
    for (path, bytes) in &unrelated {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{}", path.display());
    }
    n.every_backup_restores_byte_identical();
}

/// One strategy's scenario and what it must come to.
struct Strategy {
    /// The config lines that choose it.
    toml: &'static str,
    /// The longest restore chain among the 70 backups.
    longest: usize,
    /// What `prune-remote -y` leaves of them.
    kept: Vec<String>,
    /// The snapshots zfs2cloud holds after the last night: the future
    /// bases (`MMDD`).
    held: &'static [&'static str],
    /// Whether to kill prunes for real (one strategy is enough: the fakes
    /// kill one at every deletion, and every strategy replays the
    /// prefixes).
    kills: bool,
}

/// What every strategy keeps of the newest chain: the full of 03-02 and
/// every night after it.
fn newest_chain() -> Vec<String> {
    dirs("0302", "0311", &["0302"])
}

/// The three strategies side by side, each on its own pool and remote,
/// in threads: 210 nights of zfs-fuse, gpg and rclone take minutes, and
/// much of each night is waiting on processes.
#[test]
fn seventy_nights_of_each_strategy_then_prune_remote() {
    let Some(session) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    // The monthly keep of February is 02-28: under since_last_full and
    // levels (its weekly, 28 days after the full) it needs only the full
    // of 01-31; under chain, every night from that full on.
    let monthly_on_its_full = || {
        let mut kept = vec![
            "20250131030000-full".to_owned(),
            "20250228030000".to_owned(),
        ];
        kept.extend(newest_chain());
        kept
    };
    let mut chain_kept = dirs("0131", "0228", &["0131"]);
    chain_kept.extend(newest_chain());
    let strategies = [
        Strategy {
            toml: "",
            longest: 2,
            kept: monthly_on_its_full(),
            held: &["0302"],
            kills: false,
        },
        Strategy {
            toml: "incremental_strategy = \"chain\"",
            longest: 30,
            kept: chain_kept,
            held: &["0311"],
            kills: false,
        },
        Strategy {
            toml: "incremental_strategy = \"levels\"",
            longest: 3,
            kept: monthly_on_its_full(),
            held: &["0302", "0309"],
            kills: true,
        },
    ];
    let pools: Vec<Pool<'_>> = ["slf", "chn", "lvl"]
        .iter()
        .map(|t| session.pool(t))
        .collect();
    std::thread::scope(|scope| {
        for (pool, strategy) in pools.iter().zip(&strategies) {
            scope.spawn(move || seventy_nights_then_prune(pool, strategy));
        }
    });
}
