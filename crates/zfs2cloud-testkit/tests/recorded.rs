#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! fake-zfs against what OpenZFS 2.3.2 was recorded doing
//! (`crates/zfs2cloud-core/tests/fixtures/openzfs-2.3.2`, made by
//! `fixtures/capture.sh` in the `scripts/openzfs-vm` guest).
//!
//! The test walks the capture script's steps in its order: what the script
//! set up is set up in the fake (through the fake's own commands where it
//! has them, through `FakeZfs` where zfs2cloud's commands cannot: the pool,
//! a file written into a dataset), and each recorded case is run with its
//! recorded argv, same pool and paths, against the fake, whose exit status,
//! stdout and stderr must equal the recording's. What is normalized, and
//! why, is at `normalize`. Every recorded case must be compared, except
//! the ones in `NOT_ZFS`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use zfs2cloud_testkit::fake::FakeZfs;

/// Recorded cases that are not zfs commands, so not the fake's.
const NOT_ZFS: &[&str] = &["mount-snapshot", "mount-clone"];

/// What `capture.sh` feeds `zfs recv` for its "garbage" case.
fn garbage() -> Vec<u8> {
    "this is not a zfs send stream\n".repeat(64).into_bytes()
}

struct Scene {
    z: FakeZfs,
    fixtures: PathBuf,
    pool: String,
    /// The capture's temporary directory (its mount root's parent).
    work: String,
    compared: BTreeSet<String>,
    mismatches: Vec<String>,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Scene {
    fn new() -> Self {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../zfs2cloud-core/tests/fixtures/openzfs-2.3.2");
        let names = read(&fixtures.join("names"));
        let name = |key: &str| {
            names
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("names has no {key}="))
                .to_owned()
        };
        let (pool, mountroot) = (name("pool"), name("mountroot"));
        let z = FakeZfs::new();
        // zpool create -m <mountroot>: not a command of fake-zfs.
        z.add_pool(&pool, &mountroot);
        Self {
            z,
            fixtures,
            pool,
            work: mountroot
                .strip_suffix("/mnt")
                .expect("the mount root is <work>/mnt")
                .to_owned(),
            compared: BTreeSet::new(),
            mismatches: Vec::new(),
        }
    }

    /// `{P}` and `{W}` in `arg` replaced by the pool and the work directory.
    fn expand(&self, arg: &str) -> String {
        arg.replace("{P}", &self.pool).replace("{W}", &self.work)
    }

    fn run(&self, args: &[String], stdin: Option<&[u8]>) -> Output {
        let mut cmd = self.z.command();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().unwrap();
        if let Some(bytes) = stdin {
            // A refused receive may exit before reading it all.
            let _ = child.stdin.take().unwrap().write_all(bytes);
        }
        child.wait_with_output().unwrap()
    }

    /// A setup step of the script, through the fake; it must succeed.
    fn setup(&self, args: &[&str]) {
        self.setup_with(args, None);
    }

    fn setup_with(&self, args: &[&str], stdin: Option<&[u8]>) {
        let args: Vec<String> = args.iter().map(|a| self.expand(a)).collect();
        let o = self.run(&args, stdin);
        assert!(
            o.status.success(),
            "setup `zfs {}` failed: {}",
            args.join(" "),
            text(&o.stderr)
        );
    }

    /// The stream `capture.sh` fed a receive, as its `.stdin` describes
    /// it, made by the fake from the same snapshots.
    fn stream(&self, described: &str) -> Vec<u8> {
        match described {
            "empty" => Vec::new(),
            "garbage" => garbage(),
            _ => {
                let (send, half) = match described.strip_suffix(" | first half") {
                    Some(send) => (send, true),
                    None => (described, false),
                };
                let args: Vec<String> = send.split(' ').map(str::to_owned).collect();
                assert_eq!(args[0], "send", "{described}");
                let o = self.run(&args, None);
                assert!(o.status.success(), "{described}: {}", text(&o.stderr));
                let mut bytes = o.stdout;
                if half {
                    bytes.truncate(bytes.len() / 2);
                }
                bytes
            }
        }
    }

    /// Runs recorded case `name` against the fake and compares.
    fn case(&mut self, name: &str) {
        let file = |ext: &str| self.fixtures.join(format!("{name}.{ext}"));
        let argv: Vec<String> = read(&file("argv")).lines().map(str::to_owned).collect();
        assert_eq!(argv[0], "zfs", "{name}");
        let stdin = file("stdin")
            .exists()
            .then(|| self.stream(read(&file("stdin")).trim_end()));
        let o = self.run(&argv[1..], stdin.as_deref());
        let status: i32 = read(&file("status")).trim().parse().unwrap();
        let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
        let mut problems = Vec::new();
        if o.status.code() != Some(status) {
            problems.push(format!("status {:?}, recorded {status}", o.status.code()));
        }
        if stderr != read(&file("stderr")) {
            problems.push(format!(
                "stderr {stderr:?}, recorded {:?}",
                read(&file("stderr"))
            ));
        }
        if file("stdout-bytes").exists() {
            // A send stream: zfs's bytes and the fake's are different
            // things; both must be there.
            let recorded: u64 = read(&file("stdout-bytes")).trim().parse().unwrap();
            if (recorded > 0) == o.stdout.is_empty() {
                problems.push(format!(
                    "{} bytes of stream, recorded {recorded}",
                    o.stdout.len()
                ));
            }
        } else {
            let recorded = read(&file("stdout"));
            if normalize(name, &stdout) != normalize(name, &recorded) {
                problems.push(format!("stdout {stdout:?}, recorded {recorded:?}"));
            }
        }
        if !problems.is_empty() {
            self.mismatches.push(format!(
                "{name}: `{}`: {}",
                argv.join(" "),
                problems.join("; ")
            ));
        }
        self.compared.insert(name.to_owned());
    }

    fn cases(&mut self, names: &[&str]) {
        for name in names {
            self.case(name);
        }
    }
}

/// The only differences allowed between the fake's stdout and OpenZFS's:
///
/// * `version`: the version numbers (the fake says it is a fake);
/// * `holds`: the TIMESTAMP column, the wall clock when the hold was
///   placed in the guest (the fake prints a fixed time).
fn normalize(case: &str, stdout: &str) -> String {
    match case {
        "version" => stdout
            .lines()
            .map(|l| match l.strip_prefix("zfs-kmod-") {
                Some(_) => "zfs-kmod-<version>\n".to_owned(),
                None if l.starts_with("zfs-") => "zfs-<version>\n".to_owned(),
                None => format!("{l}\n"),
            })
            .collect(),
        "holds" => {
            let at = stdout.find("TIMESTAMP").unwrap_or(stdout.len());
            stdout
                .lines()
                .map(|l| format!("{}<time>\n", l.get(..at).unwrap_or(l)))
                .collect()
        }
        _ => stdout.to_owned(),
    }
}

/// capture.sh's steps, in its order.
#[test]
fn fake_zfs_does_what_openzfs_was_recorded_doing() {
    let mut s = Scene::new();
    let (s1, s2, s3) = ("20240101000000", "20240102000000", "20240103000000");
    let ds = |snap: &str| format!("{{P}}/ds@{snap}");

    s.case("version");
    s.setup(&["create", "-V", "8M", "{P}/vol"]);

    s.setup(&["create", "{P}/ds"]);
    s.cases(&[
        "snapshot-new",
        "snapshot-exists",
        "snapshot-missing-dataset",
        "set-property",
        "set-property-missing",
    ]);
    s.setup(&["set", "zfs2cloud:uploaded=2024-01-01T00:10:00Z", &ds(s1)]);
    s.setup(&["snapshot", &ds(s2)]);
    s.setup(&["set", "zfs2cloud:kind=incremental", &ds(s2)]);
    s.setup(&["set", &format!("zfs2cloud:base={s1}"), &ds(s2)]);
    s.setup(&["set", "zfs2cloud:level=2", &ds(s2)]);
    s.setup(&["snapshot", &ds(s3)]);
    s.setup(&["snapshot", &ds("manual")]);
    s.setup(&[
        "set",
        "zfs2cloud:uploaded=2024-01-03T00:10:00Z",
        &ds("manual"),
    ]);
    s.cases(&["inherit-property", "inherit-property-missing"]);
    s.setup(&["create", "{P}/ds/child"]);
    s.setup(&["snapshot", &format!("{{P}}/ds/child@{s1}")]);

    s.cases(&[
        "hold",
        "hold-twice",
        "hold-missing",
        "holds",
        "list-snapshots",
    ]);
    s.setup(&["create", "{P}/empty"]);
    s.cases(&[
        "list-snapshots-none",
        "list-missing",
        "exists-yes",
        "exists-no",
        "destroy-held",
        "release",
        "release-missing",
        "release-missing-snapshot",
    ]);
    s.setup(&["snapshot", &ds("doomed")]);
    s.cases(&["destroy-snapshot", "destroy-snapshot-missing"]);

    s.cases(&[
        "send-full",
        "send-incremental",
        "send-missing",
        "send-incremental-missing-base",
        "send-incremental-not-earlier",
    ]);
    let full = s.stream(&format!("send {}/ds@{s1}", s.pool));
    let incr12 = s.stream(&format!("send -i {0}/ds@{s1} {0}/ds@{s2}", s.pool));

    s.cases(&[
        "recv-new",
        "get-mounted-no",
        "get-mounted-yes",
        "recv-incremental",
        "list-received",
        "recv-incremental-twice",
        "recv-incremental-not-newest",
        "recv-incremental-not-newest-force",
        "list-after-not-newest-force",
    ]);
    s.setup(&["create", "{P}/bare"]);
    s.cases(&[
        "recv-incremental-no-base",
        "recv-incremental-missing-target",
        "recv-incremental-missing-target-force",
    ]);
    // Received mounted, then a file written into it.
    s.setup_with(&["recv", "{P}/mod"], Some(&full));
    s.z.modify(&s.expand("{P}/mod"));
    s.cases(&[
        "recv-incremental-modified",
        "recv-incremental-modified-force",
    ]);

    s.setup(&["create", "{P}/plain"]);
    s.cases(&[
        "facts-plain-snapshots",
        "facts-plain-origin",
        "facts-plain-encryption",
        "recv-existing-no-force",
        "recv-force-over-empty",
    ]);
    s.setup(&["create", "{P}/target"]);
    s.setup(&["snapshot", "{P}/target@other"]);
    s.cases(&[
        "facts-target-snapshots",
        "facts-target-origin",
        "facts-target-encryption",
        "recv-force-over-snapshots",
    ]);
    s.setup(&["clone", &ds(s1), "{P}/clone"]);
    s.cases(&[
        "facts-clone-snapshots",
        "facts-clone-origin",
        "facts-clone-encryption",
        "recv-force-over-clone",
    ]);
    s.setup(&[
        "create",
        "-o",
        "encryption=on",
        "-o",
        "keyformat=passphrase",
        "-o",
        "keylocation=file://{W}/key",
        "-o",
        "pbkdf2iters=100000",
        "{P}/enc",
    ]);
    s.setup(&["create", "{P}/enc/target"]);
    s.cases(&[
        "facts-enc-snapshots",
        "facts-enc-origin",
        "facts-enc-encryption",
        "recv-force-over-encrypted",
        "recv-new-under-encrypted",
    ]);

    s.cases(&["recv-truncated", "exists-after-truncated"]);
    s.setup_with(&["recv", "-u", "{P}/trunci"], Some(&full));
    s.cases(&[
        "recv-truncated-incremental",
        "list-after-truncated-incremental",
        "recv-empty",
        "recv-garbage",
    ]);

    s.cases(&["get-missing", "get-mount-props"]);
    s.setup(&["create", "-o", "mountpoint=legacy", "{P}/legacy"]);
    s.cases(&["get-mount-props-legacy", "mount-legacy"]);
    s.setup(&["create", "-o", "mountpoint=none", "{P}/none"]);
    s.cases(&["get-mount-props-none", "mount-none"]);
    s.setup(&["create", "-o", "canmount=off", "{P}/off"]);
    s.cases(&[
        "get-mount-props-canmount-off",
        "mount-canmount-off",
        "get-mount-props-volume",
        "mount-volume",
        "mount-mounted",
        "mount-missing",
        "mount",
        "umount",
        "umount-not-mounted",
    ]);

    s.setup_with(&["recv", "-u", "{P}/rb"], Some(&full));
    s.setup_with(&["recv", "-u", "{P}/rb"], Some(&incr12));
    s.cases(&[
        "rollback-not-newest",
        "rollback-r",
        "list-after-rollback",
        "rollback-missing",
        "get-mountpoint",
    ]);

    // mount-clone (mount(8)) came between find-clone-missing and
    // get-clone-props; OpenZFS needed no set-clone-mountpoint fallback.
    s.cases(&[
        "clone",
        "clone-exists",
        "clone-missing-snapshot",
        "find-clone-missing",
        "get-clone-props",
        "find-clone",
        "list-clones",
        "snapshot-clone",
        "destroy-clone-with-snapshot",
        "destroy-clone",
        "destroy-cloned",
        "destroy-origin-recursive",
    ]);
    s.setup_with(&["recv", "-u", "{P}/tree"], Some(&full));
    s.setup(&["create", "{P}/tree/child"]);
    s.cases(&[
        "destroy-with-children",
        "destroy-recursive",
        "destroy-dataset-missing",
    ]);

    let recorded: BTreeSet<String> = std::fs::read_dir(&s.fixtures)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".argv").map(str::to_owned)
        })
        .filter(|case| !NOT_ZFS.contains(&case.as_str()))
        .collect();
    let missed: Vec<&String> = recorded.difference(&s.compared).collect();
    assert!(missed.is_empty(), "recorded but not compared: {missed:?}");
    assert!(
        s.mismatches.is_empty(),
        "fake-zfs differs from OpenZFS in {} of {} cases:\n{}",
        s.mismatches.len(),
        s.compared.len(),
        s.mismatches.join("\n")
    );
}
