//! End to end on real OpenZFS only: what zfs-fuse cannot show (its old
//! pool version has no `mount -t zfs`, no `.zfs/snapshot`, no native
//! encryption, no udev-less volumes worth testing).
//!
//! Every test here is `#[ignore]`d, so the host's `cargo test` lists them
//! as ignored; `scripts/openzfs-vm/test` runs them with `--include-ignored`
//! inside its QEMU guest, where a missing tool or a zfs that is not OpenZFS
//! fails them ([`openzfs_session`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{text, Setup};
use zfs2cloud_testkit::fake::sha256_hex_reader;
use zfs2cloud_testkit::harness::{
    openzfs_session, run_fail, run_ok, tree_digest, write_random_file, zfs_get, Pool,
};
use zfs2cloud_testkit::remote::RcloneConfig;

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";
const HEARTBEAT: &str = "__zfs2cloud_last_updated__";

/// A local rclone remote `cloud:` and its root.
fn local_remote() -> (RcloneConfig, PathBuf) {
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("cloud");
    (rclone, root)
}

/// A file-mode config of `ds` syncing to `<root>/<name>` with `strategy`.
fn file_mode(ds: &str, rclone: &RcloneConfig, root: &Path, strategy: &str) -> Setup {
    Setup::with_remote(
        ds,
        &format!("cloud:{}", root.display()),
        &format!(
            "mode = \"file\"\nrclone_config = {:?}\nmount_strategy = {strategy:?}\n",
            rclone.path().display().to_string()
        ),
    )
}

/// An intermediate-mode config of `ds` uploading to `<root>/<name>`, in
/// 1 MiB chunks: under emulation each rclone process costs about a
/// second, and the default 64 KiB chunks of the other tests mean dozens.
fn intermediate(ds: &str, rclone: &RcloneConfig, root: &Path) -> Setup {
    intermediate_with(ds, rclone, root, "")
}

/// [`intermediate`] with `extra` TOML appended.
fn intermediate_with(ds: &str, rclone: &RcloneConfig, root: &Path, extra: &str) -> Setup {
    Setup::with_split(
        ds,
        &format!("cloud:{}", root.display()),
        "1M",
        &format!(
            "rclone_config = {:?}\n{extra}",
            rclone.path().display().to_string()
        ),
    )
}

/// The remote tree of a file-mode backup, without the heartbeat object.
fn synced_tree(root: &Path) -> BTreeMap<String, String> {
    let mut tree = tree_digest(root);
    tree.remove(HEARTBEAT);
    tree
}

/// What zfs2cloud may have left exposed: its mounts under `basedir` and
/// its temporary clones in `pool`.
fn exposed(pool: &str, basedir: &Path) -> Vec<String> {
    let base = basedir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let mut left: Vec<String> = mounts
        .lines()
        .filter(|l| l.contains(&base))
        .map(str::to_owned)
        .collect();
    let out =
        run_ok(Command::new("zfs").args(["list", "-H", "-o", "name", "-r", "-t", "all", pool]));
    left.extend(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|n| n.contains(".zfs2cloud-"))
            .map(str::to_owned),
    );
    left
}

/// A dataset with a few files, including a name with spaces and a symlink.
fn dataset_with_files(pool: &Pool<'_>, rel: &str) -> (String, PathBuf) {
    let dir = pool.create_dataset(rel);
    std::fs::create_dir_all(dir.join("2024/jan")).unwrap();
    std::fs::write(dir.join("2024/jan/beach day.jpg"), b"sunny").unwrap();
    std::fs::write(dir.join("notes.txt"), b"notes\n").unwrap();
    std::os::unix::fs::symlink("2024/jan", dir.join("latest")).unwrap();
    write_random_file(&dir.join("video.bin"), 1 << 20, 5);
    (pool.dataset(rel), dir)
}

#[test]
#[ignore = "needs real OpenZFS: scripts/openzfs-vm/test runs it"]
fn every_file_mode_strategy_syncs_the_snapshot_exactly_and_leaves_nothing() {
    let zfs = openzfs_session(&["rclone"]);
    let pool = zfs.pool("strat");
    let (ds, dir) = dataset_with_files(&pool, "photos");
    let expected = tree_digest(&dir);
    let (rclone, root) = local_remote();
    // `auto` tries mount, bind and clone in that order: on OpenZFS the
    // first works.
    for (strategy, used) in [
        ("mount", "Mount"),
        ("bind", "Bind"),
        ("clone", "Clone"),
        ("auto", "Mount"),
    ] {
        let remote = root.join(strategy);
        let setup = file_mode(&ds, &rclone, &remote, strategy);
        // Each run takes its own snapshot: a day apart.
        let day = match strategy {
            "mount" => "2024-01-01T00:00:00Z",
            "bind" => "2024-01-02T00:00:00Z",
            "clone" => "2024-01-03T00:00:00Z",
            _ => "2024-01-04T00:00:00Z",
        };
        let out = run_ok(setup.cmd(day).args(["-v", "backup"]));
        assert!(
            text(&out).contains(&format!("with strategy {used}")),
            "{strategy}: {}",
            text(&out)
        );
        assert_eq!(synced_tree(&remote), expected, "{strategy}");
        assert_eq!(exposed(pool.name(), &setup.basedir), Vec::<String>::new());
    }
}

#[test]
#[ignore = "needs real OpenZFS: scripts/openzfs-vm/test runs it"]
fn the_clone_strategy_works_on_a_pool_imported_with_an_altroot() {
    let zfs = openzfs_session(&["rclone"]);
    let altroot = tempfile::tempdir().unwrap();
    // TrueNAS SCALE imports its pools like this, under /mnt.
    let pool = zfs.pool_with("alt", &["-R", &altroot.path().display().to_string()]);
    let (ds, dir) = dataset_with_files(&pool, "data");
    assert!(dir.starts_with(altroot.path()), "{}", dir.display());
    let (rclone, root) = local_remote();
    let setup = file_mode(&ds, &rclone, &root, "clone");
    run_ok(setup.cmd(DAY1).arg("backup"));
    assert_eq!(synced_tree(&root), tree_digest(&dir));
    assert_eq!(exposed(pool.name(), &setup.basedir), Vec::<String>::new());
}

/// An rclone that, when asked to sync, first records the sharing and
/// auto-snapshot properties of every dataset in `pool`.
fn property_recording_rclone(dir: &Path, pool: &str) -> (PathBuf, PathBuf) {
    let record = dir.join("properties.txt");
    let wrapper = dir.join("rclone-recording");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" sync \"*) zfs get -H -r -t filesystem -o name,property,value \
             sharenfs,sharesmb,com.sun:auto-snapshot {pool} > '{}';; esac\nexec rclone \"$@\"\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, record)
}

#[test]
#[ignore = "needs real OpenZFS: scripts/openzfs-vm/test runs it"]
fn the_temporary_clone_is_not_shared_and_not_auto_snapshotted() {
    let zfs = openzfs_session(&["rclone"]);
    let pool = zfs.pool("share");
    let (ds, _dir) = dataset_with_files(&pool, "data");
    // Inherited by every child, a clone included, unless it says otherwise.
    // The guest has no NFS or SMB server, so sharing itself may fail; only
    // the properties matter.
    let _ = Command::new("zfs")
        .args([
            "set",
            "sharenfs=on",
            "sharesmb=on",
            "com.sun:auto-snapshot=true",
        ])
        .arg(pool.name())
        .output();
    assert_eq!(zfs_get("sharenfs", &ds), "on");
    assert_eq!(zfs_get("com.sun:auto-snapshot", &ds), "true");
    let (rclone, root) = local_remote();
    let setup = file_mode(&ds, &rclone, &root, "clone");
    let (wrapper, record) = property_recording_rclone(setup.dir.path(), pool.name());
    run_ok(
        setup
            .cmd(DAY1)
            .arg("backup")
            .env("ZFS2CLOUD_RCLONE", &wrapper),
    );
    let seen = std::fs::read_to_string(&record).unwrap();
    let clone = format!("{ds}.zfs2cloud-20240101000000");
    let of_clone: Vec<&str> = seen.lines().filter(|l| l.starts_with(&clone)).collect();
    let mut expected = vec![
        format!("{clone}\tsharenfs\toff"),
        format!("{clone}\tsharesmb\toff"),
        format!("{clone}\tcom.sun:auto-snapshot\tfalse"),
    ];
    expected.sort();
    let mut got: Vec<String> = of_clone.iter().map(|l| (*l).to_owned()).collect();
    got.sort();
    assert_eq!(got, expected, "{seen}");
    assert_eq!(exposed(pool.name(), &setup.basedir), Vec::<String>::new());
}

/// The block device of volume `name`. There is no udev in the guest, so
/// no `/dev/zvol/...` links: ask `zvol_id` (what udev would ask) about
/// each `/dev/zdN`, waiting for zfs to create the device.
fn zvol_device(name: &str) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for entry in std::fs::read_dir("/dev").unwrap().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let is_whole_disk =
                file.starts_with("zd") && file[2..].bytes().all(|b| b.is_ascii_digit());
            if !is_whole_disk {
                continue;
            }
            let out = Command::new(zvol_id()).arg(entry.path()).output().unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == name {
                return entry.path();
            }
        }
        assert!(Instant::now() < deadline, "no /dev/zd* device for {name}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn zvol_id() -> &'static str {
    ["/usr/lib/udev/zvol_id", "/lib/udev/zvol_id"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("zvol_id (zfsutils-linux) is installed")
}

fn device_sha256(device: &Path) -> String {
    sha256_hex_reader(std::fs::File::open(device).unwrap()).unwrap()
}

/// Writes `len` pseudo-random bytes at `offset` of the device.
fn write_device(device: &Path, offset: u64, len: usize, seed: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let scratch = tempfile::NamedTempFile::new().unwrap();
    write_random_file(scratch.path(), len, seed);
    let mut dev = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .unwrap();
    dev.seek(SeekFrom::Start(offset)).unwrap();
    dev.write_all(&std::fs::read(scratch.path()).unwrap())
        .unwrap();
    dev.sync_all().unwrap();
}

#[test]
#[ignore = "needs real OpenZFS: scripts/openzfs-vm/test runs it"]
fn a_volume_is_backed_up_with_send_flags_and_restored_byte_identical_without_a_mount() {
    let zfs = openzfs_session(&["gpg", "rclone"]);
    let pool = zfs.pool("vol");
    let vol = pool.dataset("disk-101");
    run_ok(Command::new("zfs").args(["create", "-V", "16M", &vol]));
    let device = zvol_device(&vol);
    write_device(&device, 0, 4 << 20, 1);
    let (rclone, root) = local_remote();
    // File mode refuses a volume, before it takes a snapshot.
    let files = file_mode(&vol, &rclone, &root.join("files"), "auto");
    let out = run_fail(files.cmd(DAY1).arg("backup"));
    assert!(
        text(&out).contains("is a volume; file mode copies files and needs a file system"),
        "{}",
        text(&out)
    );
    let snapshots = run_ok(Command::new("zfs").args(["list", "-H", "-t", "snapshot", "-r", &vol]));
    assert!(snapshots.stdout.is_empty(), "file mode took a snapshot");
    let setup = intermediate_with(
        &vol,
        &rclone,
        &root.join("disk-101"),
        "send_flags = [\"compressed\", \"large_blocks\", \"embedded\"]\n",
    );
    run_ok(setup.cmd(DAY1).arg("backup"));
    let full = root.join("disk-101/20240101000000-full");
    assert_eq!(
        common::manifest(&full)["send_flags"],
        serde_json::json!(["compressed", "large_blocks", "embedded"])
    );
    assert_eq!(
        zfs_get("zfs2cloud:send_flags", &format!("{vol}@20240101000000")),
        "-c -L -e"
    );
    write_device(&device, 8 << 20, 1 << 20, 2);
    run_ok(setup.cmd(DAY2).arg("backup"));
    let expected = device_sha256(&device);

    let target = pool.dataset("restored");
    let out = run_ok(setup.cmd(DAY2).args(["restore", "--to", &target]));
    assert!(
        text(&out).contains("20240101000000-full + 20240102000000"),
        "{}",
        text(&out)
    );
    assert_eq!(zfs_get("type", &target), "volume");
    assert_eq!(device_sha256(&zvol_device(&target)), expected);
    for snap in ["20240101000000", "20240102000000"] {
        let _ = Command::new("zfs")
            .args(["release", "zfs2cloud", &format!("{vol}@{snap}")])
            .output();
    }
}

/// A pool whose root dataset is natively encrypted (every child inherits
/// it), with a passphrase key from a file. `pbkdf2iters` is lowered from
/// the default: key derivation under emulation takes seconds otherwise.
fn encrypted_pool<'s>(zfs: &'s zfs2cloud_testkit::harness::ZfsSession, key: &Path) -> Pool<'s> {
    std::fs::write(key, "zfs native key 1234\n").unwrap();
    let keylocation = format!("keylocation=file://{}", key.display());
    zfs.pool_with(
        "enc",
        &[
            "-O",
            "encryption=on",
            "-O",
            "keyformat=passphrase",
            "-O",
            &keylocation,
            "-O",
            "pbkdf2iters=100000",
        ],
    )
}

#[test]
#[ignore = "needs real OpenZFS: scripts/openzfs-vm/test runs it"]
fn a_natively_encrypted_dataset_restores_and_force_over_an_encrypted_target_is_refused() {
    let zfs = openzfs_session(&["gpg", "rclone"]);
    let keys = tempfile::tempdir().unwrap();
    let pool = encrypted_pool(&zfs, &keys.path().join("key"));
    let (ds, dir) = dataset_with_files(&pool, "secret");
    assert_eq!(zfs_get("encryption", &ds), "aes-256-gcm");
    let (rclone, root) = local_remote();
    let setup = intermediate(&ds, &rclone, &root.join("secret"));
    run_ok(setup.cmd(DAY1).arg("backup"));
    std::fs::write(dir.join("notes.txt"), b"changed\n").unwrap();
    run_ok(setup.cmd(DAY2).arg("backup"));
    let expected = tree_digest(&dir);

    // Into the encrypted pool: the new dataset inherits its encryption.
    let target = pool.dataset("restored");
    run_ok(setup.cmd(DAY2).args(["restore", "--to", &target]));
    assert_eq!(tree_digest(&pool.mountpoint(&target)), expected);
    assert_eq!(zfs_get("encryptionroot", &target), pool.name());

    // `zfs recv -F` of a full stream refuses an encrypted target: restore
    // says so before downloading anything, and the target is untouched.
    let existing = pool.create_dataset("existing");
    std::fs::write(existing.join("keep.txt"), b"mine\n").unwrap();
    let out =
        run_fail(
            setup
                .cmd(DAY2)
                .args(["restore", "--force", "--to", &pool.dataset("existing")]),
        );
    assert!(
        text(&out).contains("--force cannot overwrite"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("encrypted"), "{}", text(&out));
    assert_eq!(std::fs::read(existing.join("keep.txt")).unwrap(), b"mine\n");
    for snap in ["20240101000000", "20240102000000"] {
        let _ = Command::new("zfs")
            .args(["release", "zfs2cloud", &format!("{ds}@{snap}")])
            .output();
    }
}

/// Releases zfs2cloud's holds on `ds`'s snapshots of day 1 and day 2, so
/// the pool can be destroyed.
fn release_days(ds: &str) {
    for snap in ["20240101000000", "20240102000000"] {
        let _ = Command::new("zfs")
            .args(["release", "zfs2cloud", &format!("{ds}@{snap}")])
            .output();
    }
}

#[test]
#[ignore = "needs real OpenZFS: scripts/openzfs-vm/test runs it"]
fn a_raw_backup_restores_encrypted_with_its_key_unloaded_until_load_key() {
    let zfs = openzfs_session(&["rclone"]);
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("key");
    let pool = encrypted_pool(&zfs, &key);
    let (ds, dir) = dataset_with_files(&pool, "secret");
    let (rclone, root) = local_remote();
    let setup = intermediate_with(
        &ds,
        &rclone,
        &root.join("secret"),
        "send_flags = [\"raw\"]\nencryption = \"none\"\n",
    );
    // OpenZFS lists every send flag: check-config warns about none.
    let all = intermediate_with(
        &ds,
        &rclone,
        &root.join("unused"),
        "send_flags = [\"raw\", \"compressed\", \"large_blocks\", \"embedded\", \"properties\"]\n",
    );
    let out = run_ok(all.cmd(DAY1).arg("check-config"));
    assert!(!text(&out).contains("warning"), "{}", text(&out));
    // gpg is never run: the stream is encrypted by ZFS.
    run_ok(
        setup
            .cmd(DAY1)
            .env("ZFS2CLOUD_GPG", "/nonexistent/gpg")
            .arg("backup"),
    );
    std::fs::write(dir.join("notes.txt"), b"changed\n").unwrap();
    run_ok(
        setup
            .cmd(DAY2)
            .env("ZFS2CLOUD_GPG", "/nonexistent/gpg")
            .arg("backup"),
    );
    let expected = tree_digest(&dir);
    let full = root.join("secret/20240101000000-full");
    assert_eq!(common::manifest(&full)["encryption"], "none");
    assert_eq!(
        common::manifest(&full)["send_flags"],
        serde_json::json!(["raw"])
    );
    // The chunks hold no plaintext: the file's text is not in them.
    let stream: Vec<u8> = common::sorted_chunks(&full)
        .into_iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(
        !stream.windows(5).any(|w| w == b"sunny"),
        "plaintext in a raw stream"
    );

    let target = pool.dataset("restored");
    let out = run_ok(
        setup
            .cmd(DAY2)
            .env("ZFS2CLOUD_GPG", "/nonexistent/gpg")
            .args(["restore", "--to", &target]),
    );
    assert!(
        text(&out).contains(&format!("zfs load-key {target}")),
        "{}",
        text(&out)
    );
    assert_eq!(zfs_get("encryption", &target), "aes-256-gcm");
    assert_eq!(zfs_get("keystatus", &target), "unavailable");
    assert_eq!(zfs_get("mounted", &target), "no");
    run_ok(Command::new("zfs").args([
        "load-key",
        "-L",
        &format!("file://{}", key.display()),
        &target,
    ]));
    run_ok(Command::new("zfs").args(["mount", &target]));
    assert_eq!(tree_digest(&pool.mountpoint(&target)), expected);
    release_days(&ds);
}

/// Loads the key of `dataset` from `key` where it is an encryption root
/// whose key is not loaded yet (a child received on its own is one).
fn load_key_if_needed(dataset: &str, key: &Path) {
    if zfs_get("keystatus", dataset) == "available" {
        return;
    }
    run_ok(Command::new("zfs").args([
        "load-key",
        "-L",
        &format!("file://{}", key.display()),
        dataset,
    ]));
}

#[test]
#[ignore = "needs OpenZFS: runs in the OpenZFS guest stage (scripts/openzfs-vm/test)"]
fn a_raw_recursive_backup_of_an_encrypted_tree_restores_byte_identical_once_keys_are_loaded() {
    let zfs = openzfs_session(&["rclone"]);
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("key");
    let pool = encrypted_pool(&zfs, &key);
    let (tree, tree_dir) = dataset_with_files(&pool, "tree");
    let (child, child_dir) = dataset_with_files(&pool, "tree/a");
    let vol = pool.dataset("tree/vol");
    run_ok(Command::new("zfs").args(["create", "-V", "8M", &vol]));
    write_device(&zvol_device(&vol), 0, 1 << 20, 11);
    let (skipped, _) = dataset_with_files(&pool, "tree/scratch");
    run_ok(Command::new("zfs").args(["set", "zfs2cloud:skip=on", &skipped]));
    let (rclone, root) = local_remote();
    let setup = intermediate_with(
        &tree,
        &rclone,
        &root.join("tree"),
        "recursive = true\nsend_flags = [\"raw\"]\nencryption = \"none\"\n",
    );
    let backup = |day: &str| {
        run_ok(
            setup
                .cmd(day)
                .env("ZFS2CLOUD_GPG", "/nonexistent/gpg")
                .arg("backup"),
        )
    };
    backup(DAY1);
    std::fs::write(child_dir.join("notes.txt"), b"changed\n").unwrap();
    write_device(&zvol_device(&vol), 1 << 20, 4096, 12);
    backup(DAY2);
    for (dir, kind) in [("tree", "20240102000000"), ("tree/a", "20240102000000")] {
        assert!(
            root.join(dir).join(kind).join("manifest.json").is_file(),
            "{dir}"
        );
    }
    assert!(!root.join("tree/scratch").exists());
    let expected_vol = device_sha256(&zvol_device(&vol));

    let target = pool.dataset("restored");
    let out = run_ok(
        setup
            .cmd(DAY2)
            .env("ZFS2CLOUD_GPG", "/nonexistent/gpg")
            .args(["restore", "--recursive", "--to", &target]),
    );
    let t = text(&out);
    let members = [
        target.clone(),
        format!("{target}/a"),
        format!("{target}/vol"),
    ];
    for ds in &members {
        assert!(t.contains(&format!("zfs load-key {ds}")), "{t}");
        assert_eq!(zfs_get("encryption", ds), "aes-256-gcm", "{ds}");
        assert_eq!(zfs_get("keystatus", ds), "unavailable", "{ds}");
    }
    assert!(
        Command::new("zfs")
            .args(["list", &format!("{target}/scratch")])
            .output()
            .is_ok_and(|o| !o.status.success()),
        "the skipped child is not restored: {t}"
    );
    for ds in &members {
        load_key_if_needed(ds, &key);
    }
    for ds in &members[..2] {
        run_ok(Command::new("zfs").args(["mount", ds]));
    }
    let own = |digest: BTreeMap<String, String>| -> BTreeMap<String, String> {
        digest
            .into_iter()
            .filter(|(p, _)| {
                !["a", "scratch"]
                    .iter()
                    .any(|c| p == c || p.starts_with(&format!("{c}/")))
            })
            .collect()
    };
    assert_eq!(
        own(tree_digest(&pool.mountpoint(&target))),
        own(tree_digest(&tree_dir))
    );
    assert_eq!(
        tree_digest(&pool.mountpoint(&members[1])),
        tree_digest(&child_dir)
    );
    assert_eq!(device_sha256(&zvol_device(&members[2])), expected_vol);
    for ds in [&tree, &child, &vol] {
        release_days(ds);
    }
}

/// The `size` line of `zfs send -nP`.
fn send_estimate(snapshot: &str) -> u64 {
    let out = run_ok(Command::new("zfs").args(["send", "-nP", snapshot]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("size\t"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no size line in `zfs send -nP {snapshot}`: {text}"))
}

#[test]
#[ignore = "needs real OpenZFS: scripts/openzfs-vm/test runs it"]
fn the_expected_size_of_an_export_is_what_zfs_send_n_p_says() {
    let zfs = openzfs_session(&["gpg", "rclone"]);
    let pool = zfs.pool("est");
    let data = pool.create_dataset("data");
    let ds = pool.dataset("data");
    // Random, so that the stream is about the data's size.
    write_random_file(&data.join("big.bin"), 8 << 20, 3);
    let (rclone, root) = local_remote();
    let setup = intermediate(&ds, &rclone, &root.join("data"));
    run_ok(setup.cmd(DAY1).arg("snapshot"));
    let snapshot = format!("{ds}@20240101000000");
    let estimate = send_estimate(&snapshot);

    let out = run_ok(setup.cmd(DAY1).args(["-v", "export"]));
    let shown = text(&out);
    assert!(
        shown.contains(&format!(
            "{snapshot}: zfs send is expected to write {estimate} bytes (`"
        )) && shown.contains("send -nP"),
        "{shown}"
    );
    // What was written (gpg's output: the stream and a little overhead)
    // is within a few percent of the estimate.
    let dir = setup.basedir.join("20240101000000-full");
    let written = common::manifest(&dir)["total_size"].as_u64().unwrap();
    let ratio = written as f64 / estimate as f64;
    assert!(
        (0.95..1.05).contains(&ratio),
        "estimate {estimate}, written {written}"
    );
    let _ = Command::new("zfs")
        .args(["release", "zfs2cloud", &snapshot])
        .output();
}
