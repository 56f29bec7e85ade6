//! Whole pools on real zfs-fuse, gpg and rclone with a local remote
//! (issue 13): one config file with three jobs (intermediate, file mode,
//! and a recursive tree with an excluded child), each dataset its own
//! chain in its own directory, a child added between runs getting a full,
//! the tree restored byte-identical with `restore --recursive`, a child
//! destroyed since keeping its backups, and a job whose dataset is missing
//! failing on its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{text, Setup};
use zfs2cloud_testkit::harness::{
    run_fail, run_ok, tree_digest, write_random_file, Pool, ZfsSession,
};
use zfs2cloud_testkit::remote::RcloneConfig;

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";
const DAY3: &str = "2024-01-03T00:00:00Z";
const SNAP1: &str = "20240101000000";
const SNAP2: &str = "20240102000000";

/// A config file of jobs in a [`Setup`]'s directory, backing up to a
/// local rclone remote `cloud:`.
struct Jobs<'p> {
    pool: &'p Pool<'p>,
    setup: Setup,
    rclone: RcloneConfig,
    root: PathBuf,
}

impl<'p> Jobs<'p> {
    fn new(pool: &'p Pool<'p>) -> Self {
        let rclone = RcloneConfig::new();
        let root = rclone.add_local("cloud");
        let setup = Setup::new(&pool.dataset("unused"), "");
        Self {
            pool,
            setup,
            rclone,
            root,
        }
    }

    /// Writes the file: shared defaults and one `[[job]]` per entry of
    /// `jobs` (name, dataset below the pool, extra TOML).
    fn write(&self, jobs: &[(&str, &str, &str)]) {
        let mut text = format!(
            "[defaults]\npassphrase_file = \"passphrase\"\nsplit_size = \"64K\"\n\
             upload_retry_delay_seconds = 0\nrclone_config = {:?}\n",
            self.rclone.path().display().to_string()
        );
        for (name, dataset, extra) in jobs {
            text.push_str(&format!(
                "\n[[job]]\nname = {name:?}\ndataset = {:?}\nremote = {:?}\n\
                 intermediate_basedir = \"intermediate/{name}\"\n{extra}\n",
                self.pool.dataset(dataset),
                self.remote(name)
            ));
        }
        std::fs::write(&self.setup.config, text).unwrap();
    }

    fn remote(&self, dir: &str) -> String {
        format!("cloud:{}", self.root.join(dir).display())
    }

    /// The backup directories (`<snap>[-full]`) in the remote directory.
    fn backups(&self, dir: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join(dir)) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("2024"))
            .collect();
        out.sort();
        out
    }

    /// Creates `<pool>/<name>` with data of its own.
    fn dataset(&self, name: &str, seed: u64) -> PathBuf {
        let dir = self.pool.create_dataset(name);
        write_random_file(&dir.join("data.bin"), 120_000, seed);
        std::fs::write(dir.join("name.txt"), format!("{name}\n")).unwrap();
        dir
    }
}

/// The zfs2cloud snapshots of `dataset`.
fn snapshots(dataset: &str) -> Vec<String> {
    let out = run_ok(Command::new("zfs").args([
        "list", "-H", "-t", "snapshot", "-o", "name", "-r", "-d", "1", dataset,
    ]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{dataset}@")))
        .map(str::to_owned)
        .collect()
}

/// The summary table's line of `job`.
fn summary_line<'t>(out: &'t str, job: &str) -> &'t str {
    out.lines()
        .rev()
        .find(|l| l.split_whitespace().next() == Some(job))
        .unwrap_or_else(|| panic!("no summary line for {job}:\n{out}"))
}

#[test]
fn three_jobs_in_one_file_each_dataset_its_own_chain_and_the_tree_restored() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let pool = zfs.pool("jb");
    let j = Jobs::new(&pool);
    j.dataset("plain", 1);
    j.dataset("files", 2);
    j.dataset("tree", 3);
    j.dataset("tree/a", 4);
    j.dataset("tree/b", 5);
    j.dataset("tree/tmp", 6);
    let tree_job = "recursive = true\nexclude = [\"tmp\"]";
    let three = [
        ("plain", "plain", ""),
        ("files", "files", "mode = \"file\""),
        ("tree", "tree", tree_job),
    ];
    j.write(&three);

    let out = run_ok(j.setup.cmd(DAY1).arg("backup"));
    let t = text(&out);
    for job in ["plain", "files", "tree"] {
        assert!(summary_line(&t, job).contains(" ok "), "{t}");
    }
    assert_eq!(j.backups("plain"), [format!("{SNAP1}-full")], "{t}");
    assert!(j.root.join("files/name.txt").is_file(), "{t}");
    assert_eq!(j.backups("tree"), [format!("{SNAP1}-full")], "{t}");
    assert_eq!(j.backups("tree/a"), [format!("{SNAP1}-full")], "{t}");
    assert_eq!(j.backups("tree/b"), [format!("{SNAP1}-full")], "{t}");
    // The excluded child: no directory, and its snapshot destroyed again.
    assert!(!j.root.join("tree/tmp").exists(), "{t}");
    assert!(snapshots(&pool.dataset("tree/tmp")).is_empty(), "{t}");
    assert_eq!(
        snapshots(&pool.dataset("tree/a")),
        [format!("{}@{SNAP1}", pool.dataset("tree/a"))]
    );
    // Each member's directory names its own dataset.
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(j.root.join("tree/a/zfs2cloud-owner.json")).unwrap())
            .unwrap();
    assert_eq!(marker["dataset"], pool.dataset("tree/a").as_str());

    // A child added since: a full, while the others go on incrementally.
    let c = j.dataset("tree/c", 7);
    write_random_file(
        &pool.mountpoint(&pool.dataset("tree/a")).join("new.bin"),
        50_000,
        8,
    );
    let out = run_ok(j.setup.cmd(DAY2).arg("backup").arg("--job").arg("tree"));
    let t = text(&out);
    assert!(!t.contains("plain"), "--job tree ran only the tree:\n{t}");
    assert_eq!(j.backups("tree/c"), [format!("{SNAP2}-full")], "{t}");
    assert_eq!(
        j.backups("tree/a"),
        [format!("{SNAP1}-full"), SNAP2.to_owned()],
        "{t}"
    );
    assert!(c.join("data.bin").is_file());

    // The tree back, parents first, byte-identical.
    let restored = pool.dataset("restored");
    let out = run_ok(
        j.setup
            .cmd(DAY3)
            .args(["--job", "tree", "restore", "--recursive", "--to"])
            .arg(&restored),
    );
    let t = text(&out);
    for child in ["", "/a", "/b", "/c"] {
        let original = pool.mountpoint(&format!("{}{child}", pool.dataset("tree")));
        let copy = pool.mountpoint(&format!("{restored}{child}"));
        assert_eq!(
            without_children(tree_digest(&original)),
            without_children(tree_digest(&copy)),
            "{child}: {t}"
        );
    }
    let listed = run_ok(
        Command::new("zfs")
            .args(["list", "-H", "-o", "name", "-r"])
            .arg(&restored),
    );
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let children: Vec<&str> = listed.lines().collect();
    assert_eq!(
        children,
        ["", "/a", "/b", "/c"].map(|c| format!("{restored}{c}")),
        "the excluded child is not in the restored tree:\n{t}"
    );

    // A child destroyed since keeps its backups on the remote.
    let b_before = tree_digest(&j.root.join("tree/b"));
    let b = pool.dataset("tree/b");
    for snap in [SNAP1, SNAP2] {
        // zfs2cloud holds its bases; whoever destroys the dataset lets go.
        let _ = Command::new("zfs")
            .args(["release", "zfs2cloud", &format!("{b}@{snap}")])
            .output();
    }
    destroy_tree(&b);

    // A job whose dataset is gone fails alone; the exit code says so.
    let mut four = three.to_vec();
    four.push(("gone", "missing", ""));
    j.write(&four);
    let out = run_fail(j.setup.cmd(DAY3).arg("backup"));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(summary_line(&t, "gone").contains("FAILED"), "{t}");
    for job in ["plain", "files", "tree"] {
        assert!(summary_line(&t, job).contains(" ok "), "{t}");
    }
    assert!(t.contains("1 of 4 jobs failed"), "{t}");
    assert_eq!(tree_digest(&j.root.join("tree/b")), b_before, "{t}");
    assert_eq!(j.backups("tree/c").len(), 2, "the tree still ran: {t}");
}

/// `zfs destroy -r`, retried: zfs-fuse reports a dataset busy for a
/// moment after it was sent from or mounted.
fn destroy_tree(dataset: &str) {
    let mut last = String::new();
    for _ in 0..40 {
        let out = Command::new("zfs")
            .args(["destroy", "-r", dataset])
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let holds = Command::new("zfs")
        .args(["holds", "-r", dataset])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    panic!("zfs destroy -r {dataset}: {last}\nholds: {holds:?}");
}

/// A digest of one dataset's own files: entries of child datasets'
/// mountpoints (the directories `a`, `b`, … and what is in them) left out.
fn without_children(
    digest: std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    digest
        .into_iter()
        .filter(|(path, _)| {
            !["a", "b", "c", "tmp"]
                .iter()
                .any(|c| path == c || path.starts_with(&format!("{c}/")))
        })
        .collect()
}

#[test]
fn check_config_refuses_jobs_that_share_a_remote_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jobs.toml");
    std::fs::write(dir.path().join("passphrase"), "secret\n").unwrap();
    std::fs::write(
        &config,
        "[defaults]\npassphrase_file = \"passphrase\"\nremote = \"cloud:backups\"\n\
         [[job]]\nname = \"a\"\ndataset = \"tank/a\"\nintermediate_basedir = \"/var/tmp/a\"\n\
         [[job]]\nname = \"b\"\ndataset = \"tank/b\"\nintermediate_basedir = \"/var/tmp/b\"\n",
    )
    .unwrap();
    let out = run_fail(
        Command::new(env!("CARGO_BIN_EXE_zfs2cloud"))
            .arg("-c")
            .arg(&config)
            .arg("check-config"),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("jobs \"a\" and \"b\" overlap on the remote (cloud:backups and cloud:backups)"),
        "{t}"
    );
}
