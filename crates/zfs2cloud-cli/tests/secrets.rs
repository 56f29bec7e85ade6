//! The passphrase never leaks, and everything zfs2cloud writes locally is
//! private.
//!
//! Real zfs-fuse, gpg and a local rclone remote. Every run of `zfs2cloud`
//! is watched by a sampler thread that reads, every millisecond or so,
//! `/proc/<pid>/cmdline` and `/proc/<pid>/environ` of the zfs2cloud process
//! and all its descendants (found through the parent pid in
//! `/proc/*/stat`), and checks the modes of everything under
//! `intermediate_basedir` while the run is going on. Afterwards the
//! passphrase is searched for in everything seen: the runs' stdout and
//! stderr, every file under `intermediate_basedir`, every file on the
//! remote, a hook's environment, the private GNUPGHOME and every sampled
//! command line and environment.
//!
//! zfs2cloud runs under `umask 000` here, so a file or directory that gets
//! its mode from the umask instead of an explicit 0600/0700 shows up as
//! world-writable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{text, Setup};
use zfs2cloud_testkit::harness::{tree_digest, write_random_file, Pool, ZfsSession};
use zfs2cloud_testkit::remote::RcloneConfig;

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";
const DAY3: &str = "2024-01-03T00:00:00Z";

/// What the sampler saw during one run.
#[derive(Default)]
struct Seen {
    /// (pid, cmdline) → environ, for every process of the run's tree.
    procs: BTreeMap<(u32, Vec<u8>), Vec<u8>>,
    /// Entries under the basedir with a mode other than 0600 / 0700,
    /// found while the run was going on.
    bad_modes: BTreeSet<String>,
    /// Whether an export in progress (`*.partial`) was seen.
    saw_partial: bool,
    /// How many times the process tree was sampled.
    samples: usize,
}

impl Seen {
    /// argv of every sampled process.
    fn argvs(&self) -> Vec<Vec<String>> {
        self.procs
            .keys()
            .map(|(_, cmdline)| {
                cmdline
                    .split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .collect()
    }

    /// Sampled processes whose argv\[0\] is `program` (by file name).
    fn runs_of(&self, program: &str) -> Vec<Vec<String>> {
        self.argvs()
            .into_iter()
            .filter(|argv| {
                argv.first()
                    .is_some_and(|a0| Path::new(a0).file_name().is_some_and(|f| f == program))
            })
            .collect()
    }
}

/// Parent pid of every process, from `/proc/*/stat`. Processes that end
/// while being read are skipped.
fn parents() -> Vec<(u32, u32)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`; comm may hold spaces and ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let ppid = rest.split(' ').nth(1)?.parse().ok()?;
        Some((pid, ppid))
    })
    .collect()
}

/// `root` and all its descendants alive right now.
fn process_tree(root: u32) -> Vec<u32> {
    let links = parents();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            links
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    tree
}

fn sample_once(root: u32, basedir: &Path, seen: &mut Seen) {
    for pid in process_tree(root) {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline.is_empty() {
            continue; // a zombie
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let slot = seen.procs.entry((pid, cmdline)).or_default();
        if environ.len() > slot.len() {
            *slot = environ;
        }
    }
    for entry in walk(basedir) {
        if entry.to_string_lossy().ends_with(".partial") {
            seen.saw_partial = true;
        }
        if let Some(problem) = mode_problem(&entry) {
            seen.bad_modes.insert(problem);
        }
    }
    seen.samples += 1;
}

/// Runs `cmd` to completion while sampling its process tree.
fn watched(cmd: &mut Command, basedir: &Path) -> (Output, Seen) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let root = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        let basedir = basedir.to_owned();
        std::thread::spawn(move || {
            let mut seen = Seen::default();
            while !stop.load(Ordering::SeqCst) {
                sample_once(root, &basedir, &mut seen);
                std::thread::sleep(Duration::from_millis(1));
            }
            seen
        })
    };
    let out = child.wait_with_output().unwrap();
    stop.store(true, Ordering::SeqCst);
    (out, sampler.join().unwrap())
}

/// `cmd`, run by `/bin/sh` under `umask 000` (the same pid: sh execs it).
fn under_umask_000(cmd: &Command) -> Command {
    let mut wrapped = Command::new("/bin/sh");
    wrapped
        .arg("-c")
        .arg("umask 000 && exec \"$@\"")
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// Every entry under `dir`, recursively (vanishing entries are skipped).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// Why `path` is not private: a directory must be 0700, anything else
/// 0600. `None` if fine or gone.
fn mode_problem(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o7777;
    let want = if meta.is_dir() {
        0o700
    } else if meta.is_file() {
        0o600
    } else {
        return Some(format!("{}: not a file or directory", path.display()));
    };
    (mode != want).then(|| format!("{}: mode {mode:04o}, want {want:04o}", path.display()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The forms of the passphrase to search for: itself, and an ASCII token
/// inside it (which also catches escaped forms such as JSON's `\u00e4`).
struct Needles(Vec<Vec<u8>>);

impl Needles {
    fn find_in(&self, what: &str, bytes: &[u8], leaks: &mut Vec<String>) {
        for n in &self.0 {
            if let Some(at) = find(bytes, n) {
                let context = &bytes[at.saturating_sub(120)..(at + n.len() + 40).min(bytes.len())];
                leaks.push(format!(
                    "{what} contains {:?}: ...{:?}...",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(context)
                ));
            }
        }
    }

    fn find_in_files(&self, dir: &Path, leaks: &mut Vec<String>) -> usize {
        let mut files = 0;
        for p in walk(dir) {
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                self.find_in(&p.display().to_string(), &std::fs::read(&p).unwrap(), leaks);
                files += 1;
            }
        }
        files
    }
}

/// A `zfs` that keeps `zfs send`'s output open for a second after the
/// stream (so gpg, reading it, is certainly alive for a second), delays
/// `zfs recv` by a second (so `gpg --decrypt`, blocked on the full pipe,
/// is too), and with `SLOW_ZFS_LIST` set delays `zfs list` (so a dry run
/// has a child that lives long enough to be sampled).
fn slow_zfs(dir: &Path) -> PathBuf {
    let wrapper = dir.join("zfs-slow");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\n\
         if [ \"$1\" = send ]; then zfs \"$@\"; rc=$?; sleep 1; exit $rc; fi\n\
         if [ \"$1\" = recv ]; then sleep 1; fi\n\
         if [ \"$1\" = list ] && [ -n \"$SLOW_ZFS_LIST\" ]; then sleep 0.3; fi\n\
         exec zfs \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// Everything the runs share. Fields drop in declaration order: the set-up
/// (and with it its gpg-agent) first, the pools last, `dst` before `src`,
/// as when these were locals of the test.
struct Scene<'s> {
    setup: Setup,
    /// Where the hooks append their environment.
    hook_env: tempfile::NamedTempFile,
    /// Must outlive the runs: the config names its file.
    _rclone: RcloneConfig,
    dst: Pool<'s>,
    _src: Pool<'s>,
    /// Mountpoint of the dataset that is backed up.
    data: PathBuf,
    ds: String,
    remote_dir: PathBuf,
    needles: Needles,
    /// The slow `zfs` of [`slow_zfs`], used for every run.
    wrapper: PathBuf,
}

/// Leaks of the passphrase and non-private modes, collected over every
/// run and reported together at the end.
#[derive(Default)]
struct Findings {
    leaks: Vec<String>,
    bad_modes: BTreeSet<String>,
}

impl<'s> Scene<'s> {
    /// Two pools, a dataset, a local rclone remote, a config whose hooks
    /// record their environment, and a distinctive passphrase.
    fn new(zfs: &'s ZfsSession) -> Self {
        let src = zfs.pool("sec");
        let dst = zfs.pool("secr");
        let data = src.create_dataset("data");
        let ds = src.dataset("data");
        let rclone = RcloneConfig::new();
        let root = rclone.add_local("cloud");
        let remote_dir = root.join("data");
        let hook_env = tempfile::NamedTempFile::new().unwrap();
        let env_file = hook_env.path().display().to_string();
        let setup = Setup::with_remote(
            &ds,
            &format!("cloud:{}", remote_dir.display()),
            &format!(
                "rclone_config = {:?}\n\
                 [hooks]\n\
                 pre_snapshot = [\"/bin/sh\", \"-c\", \"env >> '{env_file}'\"]\n\
                 on_success = [\"/bin/sh\", \"-c\", \"env >> '{env_file}'\"]\n",
                rclone.path().display().to_string(),
            ),
        );
        let needles = distinctive_passphrase(&setup.passphrase_file);
        let wrapper = slow_zfs(setup.dir.path());
        Self {
            setup,
            hook_env,
            _rclone: rclone,
            dst,
            _src: src,
            data,
            ds,
            remote_dir,
            needles,
            wrapper,
        }
    }

    /// `zfs2cloud -v <args>` at `now` with the slow `zfs`, under umask 000
    /// and watched; it must succeed.
    fn run(&self, now: &str, args: &[&str], extra_env: &[(&str, &str)]) -> (Output, Seen) {
        let mut cmd = self.setup.cmd(now);
        cmd.arg("-v").args(args).env("ZFS2CLOUD_ZFS", &self.wrapper);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let (out, seen) = watched(&mut under_umask_000(&cmd), &self.setup.basedir);
        assert!(
            out.status.success(),
            "zfs2cloud -v {args:?} failed: {}\n{}",
            out.status,
            text(&out)
        );
        (out, seen)
    }

    /// Searches one run's output and sampled processes for the passphrase,
    /// and notes the modes seen during it and left after it.
    fn check_run(&self, name: &str, out: &Output, seen: &Seen, found: &mut Findings) {
        let needles = &self.needles;
        let leaks = &mut found.leaks;
        needles.find_in(&format!("{name}: stdout"), &out.stdout, leaks);
        needles.find_in(&format!("{name}: stderr"), &out.stderr, leaks);
        for ((pid, cmdline), environ) in &seen.procs {
            needles.find_in(&format!("{name}: /proc/{pid}/cmdline"), cmdline, leaks);
            needles.find_in(&format!("{name}: /proc/{pid}/environ"), environ, leaks);
        }
        found.bad_modes.extend(
            seen.bad_modes
                .iter()
                .map(|m| format!("{name}, mid-run: {m}")),
        );
        found.bad_modes.extend(
            walk(&self.setup.basedir)
                .iter()
                .filter_map(|p| mode_problem(p))
                .map(|m| format!("{name}, after: {m}")),
        );
        eprintln!(
            "{name}: {} samples, {} processes seen",
            seen.samples,
            seen.procs.len()
        );
    }

    /// Files: the local exports, manifests and state; the remote (ciphertext
    /// chunks, SHA256SUMS, manifests); what the hooks saw; gpg's home.
    fn search_files(&self, found: &mut Findings) {
        let leaks = &mut found.leaks;
        let local = self.needles.find_in_files(&self.setup.basedir, leaks);
        let remote = self.needles.find_in_files(&self.remote_dir, leaks);
        self.needles.find_in(
            "hook environment",
            &std::fs::read(self.hook_env.path()).unwrap(),
            leaks,
        );
        self.needles.find_in_files(&self.setup.gnupghome, leaks);
        assert!(local >= 4, "too few local files to prove anything: {local}");
        assert!(remote >= 8, "too few remote files: {remote}");
        let hook_seen = std::fs::read_to_string(self.hook_env.path()).unwrap();
        assert!(
            hook_seen.contains("ZFS2CLOUD_DATASET"),
            "the hooks did not run: {hook_seen}"
        );
    }
}

/// Writes a distinctive passphrase to `file`: spaces (also trailing),
/// non-ASCII, shell metacharacters, and an ASCII token unique to this test
/// process. Returns the forms to search for, once the search is shown to
/// find both in the file itself.
fn distinctive_passphrase(file: &Path) -> Needles {
    let token = format!("Zq7tok{}kW", std::process::id());
    let passphrase = format!("s3crét {token} ✓ äöü $HOME; `id` 'q' \"d\"  ");
    std::fs::write(file, format!("{passphrase}\n")).unwrap();
    let needles = Needles(vec![passphrase.clone().into_bytes(), token.into_bytes()]);
    // The search itself works: it finds the passphrase in its file.
    let mut control = Vec::new();
    needles.find_in(
        "passphrase file",
        &std::fs::read(file).unwrap(),
        &mut control,
    );
    assert_eq!(control.len(), 2, "{control:?}");
    needles
}

/// Phase 1, a full backup: gpg is seen, and gets the passphrase on a file
/// descriptor; the mode check ran during the export.
fn full_backup(scene: &Scene<'_>, found: &mut Findings) {
    write_random_file(&scene.data.join("a.bin"), 400_000, 1);
    std::fs::write(scene.data.join("note.txt"), "day 1\n").unwrap();
    let (out, seen) = scene.run(DAY1, &["backup"], &[]);
    scene.check_run("backup", &out, &seen, found);
    let gpgs = seen.runs_of("gpg");
    assert!(
        gpgs.iter()
            .any(|argv| argv.iter().any(|a| a == "--symmetric")),
        "the sampler never saw `gpg --symmetric`, so it proves nothing; it saw {:?}",
        seen.argvs()
    );
    for argv in &gpgs {
        assert!(
            argv.iter().any(|a| a == "--passphrase-fd"),
            "gpg got its passphrase some other way: {argv:?}"
        );
    }
    assert!(
        seen.saw_partial,
        "the mode check never ran during the export ({} samples)",
        seen.samples
    );
    assert!(
        text(&out).contains("--passphrase-fd 3"),
        "-v logs the gpg command: {}",
        text(&out)
    );
}

/// Phase 2, a dry run of the next day: it prints the commands it would run,
/// gpg's among them.
fn dry_run(scene: &Scene<'_>, found: &mut Findings) {
    std::fs::write(scene.data.join("note.txt"), "day 2\n").unwrap();
    write_random_file(&scene.data.join("b.bin"), 100_000, 2);
    let (out, seen) = scene.run(DAY2, &["--dry-run", "backup"], &[("SLOW_ZFS_LIST", "1")]);
    scene.check_run("backup --dry-run", &out, &seen, found);
    assert!(
        text(&out).contains("| gpg"),
        "the dry run shows the export pipeline: {}",
        text(&out)
    );
    assert!(
        seen.procs.len() > 1,
        "the sampler saw no child of the dry run: {:?}",
        seen.argvs()
    );
}

/// Phase 3, a real incremental, uploaded while exporting and compressed: the
/// other export path.
fn pipelined_zstd_incremental(scene: &Scene<'_>, found: &mut Findings) {
    let path = &scene.setup.config;
    let config = std::fs::read_to_string(path).unwrap().replace(
        "[hooks]",
        "upload_while_exporting = true\nkeep_local_export = false\ncompression = \"zstd\"\n[hooks]",
    );
    std::fs::write(path, config).unwrap();
    let (out, seen) = scene.run(DAY3, &["backup"], &[]);
    scene.check_run("backup (pipelined, zstd)", &out, &seen, found);
    assert!(!seen.runs_of("gpg").is_empty(), "{:?}", seen.argvs());
}

/// Phase 4, restore and a deep verify, which decrypt.
fn restore_and_deep_verify(scene: &Scene<'_>, found: &mut Findings) {
    let target = scene.dst.dataset("restored");
    let (out, seen) = scene.run(DAY3, &["restore", "--to", &target], &[]);
    scene.check_run("restore", &out, &seen, found);
    assert!(
        seen.runs_of("gpg")
            .iter()
            .any(|argv| argv.iter().any(|a| a == "--decrypt")),
        "the sampler never saw `gpg --decrypt`: {:?}",
        seen.argvs()
    );
    assert_eq!(
        tree_digest(&scene.dst.mountpoint(&target)),
        tree_digest(&scene.data)
    );
    let (out, seen) = scene.run(DAY3, &["verify", "--deep"], &[]);
    scene.check_run("verify --deep", &out, &seen, found);
    assert_eq!(text(&out).matches("OK ").count(), 2, "{}", text(&out));
}

/// Phase 5, read-only commands that print the configuration and state.
fn read_only_commands(scene: &Scene<'_>, found: &mut Findings) {
    for args in [&["check-config"][..], &["status", "--json", "--remote"][..]] {
        let (out, seen) = scene.run(DAY3, args, &[]);
        scene.check_run(&args.join(" "), &out, &seen, found);
    }
}

#[test]
fn the_passphrase_is_nowhere_and_every_local_file_is_private() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let started = std::time::Instant::now();
    let scene = Scene::new(&zfs);
    let mut found = Findings::default();
    // In order: each phase runs on the state the one before left (the
    // backups build one chain, which restore and verify read).
    full_backup(&scene, &mut found);
    dry_run(&scene, &mut found);
    pipelined_zstd_incremental(&scene, &mut found);
    restore_and_deep_verify(&scene, &mut found);
    read_only_commands(&scene, &mut found);
    scene.search_files(&mut found);

    assert!(
        found.leaks.is_empty() && found.bad_modes.is_empty(),
        "the passphrase leaked:\n{}\n\nnot private (0600 files, 0700 directories):\n{}",
        found.leaks.join("\n"),
        found.bad_modes.into_iter().collect::<Vec<_>>().join("\n")
    );
    let _ = Command::new("zfs")
        .args([
            "release",
            "zfs2cloud",
            &format!("{}@20240101000000", scene.ds),
        ])
        .output();
    eprintln!("holding the ZFS lock for {:?}", started.elapsed());
}
