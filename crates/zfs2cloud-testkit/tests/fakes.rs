#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]
//! Tests of the fake `zfs` and `rclone` binaries and their helpers.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use zfs2cloud_testkit::fake::{
    fake_bin, sha256_hex, FakeDir, FakeRclone, FakeZfs, FaultAction, FaultRule, GARBAGE,
};

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("running a fake")
}

/// Runs the fake of `fake` (a [`FakeZfs`] or [`FakeRclone`]) with `args`.
fn call(fake: &FakeDir, args: &[&str]) -> Output {
    let mut cmd = fake.command();
    cmd.args(args);
    run(cmd)
}

/// A fake zfs with dataset `tank/data`.
fn zfs_with_dataset() -> FakeZfs {
    let z = FakeZfs::new();
    z.add_dataset("tank/data");
    z
}

/// A fake zfs with snapshot `full_name` (and its dataset).
fn zfs_with_snapshot(full_name: &str) -> FakeZfs {
    let z = FakeZfs::new();
    z.add_snapshot(full_name, &[]);
    z
}

/// A temporary directory holding `files` (name, contents).
fn source_dir(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    dir
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

/// Asserts that `o` exited with `status` and printed exactly `err` on stderr.
#[track_caller]
fn assert_fails(o: &Output, status: i32, err: &str) {
    assert_eq!(code(o), status, "stderr: {}", stderr(o));
    assert_eq!(stderr(o), err);
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

#[test]
fn env_points_at_the_binaries() {
    let z = FakeZfs::new();
    let env = z.env();
    assert_eq!(env[0].0, "ZFS2CLOUD_ZFS");
    assert_eq!(env[0].1, fake_bin("fake-zfs").to_string_lossy());
    assert!(fake_bin("fake-zfs").is_file());
    assert_eq!(
        env[1],
        (
            "FAKE_ZFS_STATE".to_owned(),
            z.state_dir().to_string_lossy().into_owned()
        )
    );
    let r = FakeRclone::new();
    let env = r.env();
    assert_eq!(env[0].0, "ZFS2CLOUD_RCLONE");
    assert!(std::path::Path::new(&env[0].1).is_file());
    assert_eq!(env[1].0, "FAKE_RCLONE_STATE");
}

#[test]
fn missing_state_env_exits_2() {
    for bin in ["fake-zfs", "fake-rclone"] {
        let mut cmd = Command::new(fake_bin(bin));
        cmd.arg("version")
            .env_remove("FAKE_ZFS_STATE")
            .env_remove("FAKE_RCLONE_STATE");
        let o = run(cmd);
        assert_eq!(code(&o), 2, "{bin}");
        assert!(stderr(&o).contains("is not set"), "{bin}: {}", stderr(&o));
    }
}

#[test]
fn version() {
    let z = FakeZfs::new();
    let o = call(&z, &["version"]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "zfs-2.2.2-fake\nzfs-kmod-2.2.2-fake\n");
    let r = FakeRclone::new();
    let o = call(&r, &["version"]);
    assert_ok(&o);
    assert!(stdout(&o).starts_with("rclone v1.60.1-fake"));
}

#[test]
fn snapshot_and_list_round_trip() {
    let z = zfs_with_dataset();
    z.add_snapshot(
        "tank/data@zfs2cloud-20240101000000",
        &[("zfs2cloud:kind", "full")],
    );
    let mut cmd = z.command();
    cmd.args([
        "snapshot",
        "-o",
        "zfs2cloud:kind=incr",
        "-o",
        "zfs2cloud:base=zfs2cloud-20240101000000",
        "tank/data@zfs2cloud-20240102000000",
    ])
    .env("FAKE_ZFS_NOW", "1704153600");
    assert_ok(&run(cmd));
    // A child dataset's snapshot must not show up with -d 1.
    z.add_snapshot("tank/data/child@20240101000000", &[]);

    let o = call(
        &z,
        &[
            "list",
            "-H",
            "-p",
            "-t",
            "snapshot",
            "-o",
            "name,userrefs,creation,zfs2cloud:kind,zfs2cloud:base",
            "-s",
            "creation",
            "-d",
            "1",
            "tank/data",
        ],
    );
    assert_ok(&o);
    assert_eq!(
        stdout(&o),
        "tank/data@zfs2cloud-20240101000000\t0\t1704067200\tfull\t-\n\
         tank/data@zfs2cloud-20240102000000\t0\t1704153600\tincr\tzfs2cloud-20240101000000\n"
    );

    // Flags bundled and in another order; -r includes the child.
    let o = call(
        &z,
        &["list", "-Hpr", "-o", "name", "-t", "snapshot", "tank/data"],
    );
    assert_ok(&o);
    assert_eq!(
        stdout(&o),
        "tank/data@zfs2cloud-20240101000000\ntank/data@zfs2cloud-20240102000000\n\
         tank/data/child@20240101000000\n"
    );

    // Without -p, creation is human readable.
    let o = call(
        &z,
        &[
            "list",
            "-H",
            "-t",
            "snapshot",
            "-o",
            "name,creation",
            "-d",
            "1",
            "tank/data",
        ],
    );
    assert_eq!(
        stdout(&o).lines().next(),
        Some("tank/data@zfs2cloud-20240101000000\tMon Jan  1 00:00 2024")
    );

    // Filesystem listing and get.
    let o = call(&z, &["list", "-H", "-o", "name", "tank/data"]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "tank/data\n");
    let o = call(
        &z,
        &[
            "get",
            "-H",
            "-o",
            "value",
            "zfs2cloud:kind",
            "tank/data@zfs2cloud-20240102000000",
        ],
    );
    assert_ok(&o);
    assert_eq!(stdout(&o), "incr\n");
    let o = call(
        &z,
        &[
            "get",
            "-Hp",
            "-o",
            "name,property,value",
            "zfs2cloud:nope",
            "tank/data",
        ],
    );
    assert_eq!(stdout(&o), "tank/data\tzfs2cloud:nope\t-\n");

    // The library sees what the binary did.
    let snaps = z.snapshots("tank/data");
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1].short_name(), "zfs2cloud-20240102000000");
    assert_eq!(snaps[1].properties["zfs2cloud:kind"], "incr");
    assert_eq!(snaps[1].creation, 1_704_153_600);
    assert_eq!(snaps[1].stream_size, 300_000);

    // set / inherit.
    assert_ok(&call(
        &z,
        &[
            "set",
            "zfs2cloud:kind=full",
            "tank/data@zfs2cloud-20240102000000",
        ],
    ));
    assert_ok(&call(
        &z,
        &[
            "inherit",
            "zfs2cloud:base",
            "tank/data@zfs2cloud-20240102000000",
        ],
    ));
    let s = &z.snapshots("tank/data")[1];
    assert_eq!(
        s.properties.get("zfs2cloud:kind").map(String::as_str),
        Some("full")
    );
    assert!(!s.properties.contains_key("zfs2cloud:base"));
}

#[test]
fn list_errors() {
    let z = zfs_with_dataset();
    let o = call(
        &z,
        &[
            "list",
            "-H",
            "-p",
            "-t",
            "snapshot",
            "-o",
            "name",
            "-d",
            "1",
            "tank/nope",
        ],
    );
    assert_fails(&o, 1, "cannot open 'tank/nope': dataset does not exist\n");
    assert_eq!(stdout(&o), "");
    let o = call(&z, &["list", "-H", "-o", "name", "tank/nope"]);
    assert_eq!(code(&o), 1);
    let o = call(
        &z,
        &["get", "-H", "-o", "value", "zfs2cloud:x", "tank/data@nope"],
    );
    assert_fails(
        &o,
        1,
        "cannot open 'tank/data@nope': dataset does not exist\n",
    );
    // A dataset without snapshots lists nothing, successfully.
    let o = call(
        &z,
        &[
            "list",
            "-H",
            "-t",
            "snapshot",
            "-o",
            "name",
            "-d",
            "1",
            "tank/data",
        ],
    );
    assert_ok(&o);
    assert_eq!(stdout(&o), "");
    let o = call(&z, &["frobnicate"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).starts_with("unrecognized command 'frobnicate'"));
}

#[test]
fn snapshot_errors() {
    let z = zfs_with_dataset();
    assert_ok(&call(&z, &["snapshot", "tank/data@a"]));
    let o = call(&z, &["snapshot", "tank/data@a"]);
    assert_fails(
        &o,
        1,
        "cannot create snapshot 'tank/data@a': dataset already exists\n",
    );
    // OpenZFS adds the usage here, and exits 2.
    let o = call(&z, &["snapshot", "tank/nope@a"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).starts_with("cannot open 'tank/nope': dataset does not exist\nusage:\n"),
        "{}",
        stderr(&o)
    );
    assert_eq!(z.snapshots("tank/data").len(), 1);
}

#[test]
fn hold_destroy_release() {
    let z = zfs_with_snapshot("tank/data@s1");
    assert_ok(&call(&z, &["hold", "zfs2cloud", "tank/data@s1"]));
    let o = call(&z, &["hold", "zfs2cloud", "tank/data@s1"]);
    assert_fails(
        &o,
        1,
        "cannot hold snapshot 'tank/data@s1': tag already exists on this dataset\n",
    );
    let o = call(&z, &["holds", "-H", "tank/data@s1"]);
    assert_ok(&o);
    assert_eq!(
        stdout(&o),
        "tank/data@s1\tzfs2cloud\tThu Jan  1 00:00 2024\n"
    );
    let o = call(&z, &["list", "-H", "-o", "name,userrefs", "tank/data@s1"]);
    assert_eq!(stdout(&o), "tank/data@s1\t1\n");

    let o = call(&z, &["destroy", "tank/data@s1"]);
    assert_fails(
        &o,
        1,
        "cannot destroy snapshot tank/data@s1: it's being held. \
         Run 'zfs holds -r tank/data@s1' to see holders.\n",
    );
    assert_eq!(z.snapshots("tank/data")[0].holds, ["zfs2cloud"]);

    assert_ok(&call(&z, &["release", "zfs2cloud", "tank/data@s1"]));
    let o = call(&z, &["release", "zfs2cloud", "tank/data@s1"]);
    assert_fails(
        &o,
        1,
        "cannot release hold from snapshot 'tank/data@s1': no such tag on this dataset\n",
    );
    assert_ok(&call(&z, &["destroy", "tank/data@s1"]));
    assert!(z.snapshots("tank/data").is_empty());
    let o = call(&z, &["destroy", "tank/data@s1"]);
    assert_fails(
        &o,
        1,
        "could not find any snapshots to destroy; check snapshot names.\n",
    );
}

#[test]
fn send_is_deterministic() {
    let z = zfs_with_snapshot("tank/data@a");
    z.add_snapshot("tank/data@b", &[]);
    z.set_stream_size("tank/data@a", 200_001);
    z.set_stream_size("tank/data@b", 100_000);

    let first = call(&z, &["send", "tank/data@a"]);
    assert_ok(&first);
    assert_eq!(first.stdout.len(), 200_001);
    let second = call(&z, &["send", "-w", "tank/data@a"]);
    assert_eq!(first.stdout, second.stdout);
    assert_eq!(first.stdout, z.expected_stream("tank/data@a", None));

    let other = call(&z, &["send", "tank/data@b"]);
    assert_eq!(other.stdout.len(), 100_000);
    assert_ne!(other.stdout[..1000], first.stdout[..1000]);

    for base in ["tank/data@a", "@a", "a"] {
        let o = call(&z, &["send", "-i", base, "tank/data@b"]);
        assert_ok(&o);
        assert_eq!(o.stdout.len(), 25_000, "base {base}");
        assert_eq!(
            o.stdout,
            z.expected_stream("tank/data@b", Some("tank/data@a"))
        );
    }
    let o = call(&z, &["send", "-I", "@a", "tank/data@b"]);
    assert_eq!(o.stdout.len(), 25_000);

    let o = call(&z, &["send", "tank/data@nope"]);
    assert_fails(
        &o,
        1,
        "cannot open 'tank/data@nope': dataset does not exist\n",
    );
    let o = call(&z, &["send", "-i", "@nope", "tank/data@b"]);
    assert_fails(
        &o,
        1,
        "cannot open 'tank/data@nope': dataset does not exist\n",
    );
    assert!(o.stdout.is_empty());
    let o = call(&z, &["send", "-i", "@b", "tank/data@a"]);
    assert_fails(
        &o,
        1,
        "warning: cannot send 'tank/data@a': not an earlier snapshot from the same fs\n",
    );
}

#[test]
fn send_receive_pipe() {
    let z = zfs_with_snapshot("tank/data@a");
    let mut send = z.command();
    send.args(["send", "tank/data@a"]).stdout(Stdio::piped());
    let mut send = send.spawn().unwrap();
    let mut recv = z.command();
    recv.args(["receive", "-F", "backup/data@a"])
        .stdin(send.stdout.take().unwrap());
    let o = recv.output().unwrap();
    assert_ok(&o);
    assert!(send.wait().unwrap().success());
    assert_eq!(
        z.received("backup/data@a").unwrap(),
        z.expected_stream("tank/data@a", None)
    );
    assert!(z.has_dataset("backup/data"));
    assert_eq!(z.snapshots("backup/data")[0].stream_size, 300_000);
}

#[test]
fn die_after_cuts_the_stream() {
    let z = zfs_with_snapshot("tank/data@a");
    z.inject("send", FaultAction::DieAfter { bytes: 70_000 }, None);
    let o = call(&z, &["send", "tank/data@a"]);
    assert_eq!(code(&o), 1);
    assert_eq!(o.stdout.len(), 70_000);
    assert_eq!(
        o.stdout[..],
        z.expected_stream("tank/data@a", None)[..70_000]
    );
    assert!(stderr(&o).contains("fake: killed mid-stream"));

    // Commands without a stream just fail.
    z.inject("list", FaultAction::DieAfter { bytes: 5 }, None);
    let o = call(&z, &["list", "-H", "-o", "name"]);
    assert_eq!(code(&o), 1);
    assert!(o.stdout.is_empty());
}

#[test]
fn exit_fault() {
    let z = zfs_with_dataset();
    z.inject(
        "snapshot",
        FaultAction::Exit {
            code: 42,
            stderr: "cannot create snapshot: out of space".to_owned(),
        },
        None,
    );
    let o = call(&z, &["snapshot", "tank/data@a"]);
    assert_fails(&o, 42, "cannot create snapshot: out of space\n");
    assert!(o.stdout.is_empty());
    assert!(
        z.snapshots("tank/data").is_empty(),
        "exit fault did the work"
    );
    // Other subcommands are unaffected.
    assert_ok(&call(&z, &["list", "-H", "tank/data"]));
}

#[test]
fn times_limited_fault_is_used_up() {
    let z = zfs_with_dataset();
    z.inject(
        "list",
        FaultAction::Exit {
            code: 1,
            stderr: "transient".to_owned(),
        },
        Some(1),
    );
    let o = call(&z, &["list", "-H", "-o", "name", "tank/data"]);
    assert_fails(&o, 1, "transient\n");
    assert_eq!(z.faults()[0].times, Some(0));
    let o = call(&z, &["list", "-H", "-o", "name", "tank/data"]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "tank/data\n");

    z.clear_faults();
    assert!(z.faults().is_empty());
}

#[test]
fn arg_filtered_fault() {
    let r = FakeRclone::new();
    let src = source_dir(&[("c1", b"one")]);
    r.inject_rule(FaultRule {
        arg_contains: Some("chunk-2".to_owned()),
        ..FaultRule::new(
            "copyto",
            FaultAction::Exit {
                code: 5,
                stderr: "ERROR : temporary upload failure".to_owned(),
            },
            Some(1),
        )
    });
    let file = src.path().join("c1");
    let file = file.to_str().unwrap();
    assert_ok(&call(&r, &["copyto", file, "r:b/chunk-1"]));
    assert_eq!(code(&call(&r, &["copyto", file, "r:b/chunk-2"])), 5);
    assert_ok(&call(&r, &["copyto", file, "r:b/chunk-2"]));
    assert_eq!(r.files("r:b"), ["chunk-1", "chunk-2"]);
}

#[test]
fn a_fault_after_n_fails_the_next_delete_only() {
    let r = FakeRclone::new();
    let dir = r.path("r:b");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["a", "b", "c"] {
        std::fs::write(dir.join(name), name).unwrap();
    }
    let exit = FaultAction::Exit {
        code: 1,
        stderr: "ERROR : delete failed".to_owned(),
    };
    r.inject_rule(FaultRule::new("deletefile", exit, Some(1)).after(1));
    assert_ok(&call(&r, &["deletefile", "r:b/a"]));
    assert_fails(
        &call(&r, &["deletefile", "r:b/b"]),
        1,
        "ERROR : delete failed\n",
    );
    assert_ok(&call(&r, &["deletefile", "r:b/b"]));
    assert_eq!(r.files("r:b"), ["c"]);
    // A file already gone: rclone's "object not found".
    assert_eq!(code(&call(&r, &["deletefile", "r:b/a"])), 4);
}

#[test]
fn hang_fault_hangs() {
    let z = FakeZfs::new();
    z.inject("list", FaultAction::Hang, Some(1));
    let mut cmd = z.command();
    cmd.args(["list", "-H"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "hang fault exited");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.stdout.is_empty());
    // It was recorded before hanging.
    let inv = z.invocations();
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].pid, pid);
    assert_eq!(inv[0].args, ["list", "-H"]);
}

#[test]
fn garbage_fault() {
    let z = zfs_with_snapshot("tank/data@a");
    z.inject("list", FaultAction::Garbage, None);
    let o = call(
        &z,
        &["list", "-H", "-t", "snapshot", "-o", "name", "tank/data"],
    );
    assert_ok(&o);
    assert_eq!(o.stdout, GARBAGE);

    let r = FakeRclone::new();
    r.inject("lsjson", FaultAction::Garbage, None);
    let o = call(&r, &["lsjson", "r:x"]);
    assert_ok(&o);
    assert_eq!(o.stdout, GARBAGE);
    assert!(serde_json::from_slice::<serde_json::Value>(&o.stdout).is_err());
}

#[test]
fn invocations_are_recorded() {
    let z = zfs_with_dataset();
    let mut child = z.command();
    child.args(["snapshot", "tank/data@x"]).stdin(Stdio::null());
    let child = child.spawn().unwrap();
    let pid = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    call(&z, &["-?"]);
    call(&z, &["list", "-H", "-o", "name", "tank/data"]);
    let inv = z.invocations();
    assert_eq!(inv.len(), 3);
    assert_eq!(inv[0].tool, "zfs");
    assert_eq!(inv[0].args, ["snapshot", "tank/data@x"]);
    assert_eq!(inv[0].pid, pid);
    assert_eq!(inv[0].subcommand().as_deref(), Some("snapshot"));
    assert_eq!(inv[1].args, ["-?"]);
    assert_eq!(z.invocations_of("list").len(), 1);

    let r = FakeRclone::new();
    call(&r, &["--config", "/dev/null", "-v", "lsf", "r:"]);
    let inv = r.invocations();
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].tool, "rclone");
    assert_eq!(inv[0].args, ["--config", "/dev/null", "-v", "lsf", "r:"]);
    assert_eq!(inv[0].subcommand().as_deref(), Some("lsf"));
}

#[test]
fn rclone_copy_lsjson_cat_round_trip() {
    let r = FakeRclone::new();
    let chunk = (0..100_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>();
    let src = source_dir(&[("chunk-0000", &chunk), ("manifest.json", b"{}")]);
    let src_str = src.path().to_str().unwrap();

    let o = call(
        &r,
        &[
            "--config",
            "/nonexistent/rclone.conf",
            "copy",
            "--bwlimit",
            "10M",
            "--checksum",
            "--retries=1",
            src_str,
            "remote:backups/tank/data",
        ],
    );
    assert_ok(&o);
    assert_eq!(
        std::fs::read(r.remote_dir("remote").join("backups/tank/data/chunk-0000")).unwrap(),
        chunk
    );

    let o = call(&r, &["lsjson", "--hash", "-R", "remote:backups/tank"]);
    assert_ok(&o);
    let items: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let paths: Vec<&str> = items.iter().map(|i| i["Path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["data", "data/chunk-0000", "data/manifest.json"]);
    assert_eq!(items[0]["IsDir"], true);
    assert_eq!(items[1]["Name"], "chunk-0000");
    assert_eq!(items[1]["Size"], 100_000);
    assert_eq!(items[1]["IsDir"], false);
    assert_eq!(items[1]["Hashes"]["sha256"], sha256_hex(&chunk));
    assert!(items[1]["ModTime"].as_str().unwrap().ends_with('Z'));

    let o = call(&r, &["lsf", "remote:backups/tank"]);
    assert_eq!(stdout(&o), "data/\n");

    let o = call(&r, &["cat", "remote:backups/tank/data/chunk-0000"]);
    assert_ok(&o);
    assert_eq!(o.stdout, chunk);

    let o = call(&r, &["size", "--json", "remote:backups"]);
    assert_eq!(stdout(&o).trim(), "{\"count\":2,\"bytes\":100002}");

    let o = call(&r, &["lsjson", "remote:nope"]);
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("ERROR : : error listing: directory not found"));

    r.inject("cat", FaultAction::DieAfter { bytes: 1234 }, Some(1));
    let o = call(&r, &["cat", "remote:backups/tank/data/chunk-0000"]);
    assert_eq!(code(&o), 1);
    assert_eq!(o.stdout, chunk[..1234]);

    assert_ok(&call(
        &r,
        &["deletefile", "remote:backups/tank/data/chunk-0000"],
    ));
    let o = call(&r, &["deletefile", "remote:backups/tank/data/chunk-0000"]);
    assert_eq!(code(&o), 4);
    assert_ok(&call(&r, &["purge", "remote:backups"]));
    assert!(r.files("remote:").is_empty());
    assert_eq!(code(&call(&r, &["frob"])), 1);
}

#[test]
fn rclone_rcat_and_sync() {
    let r = FakeRclone::new();
    let mut cmd = r.command();
    cmd.args(["rcat", "r:dir/file"]).stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"payload").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read(r.path("r:dir/file")).unwrap(), b"payload");

    let src = source_dir(&[("new", b"n")]);
    let o = call(&r, &["sync", src.path().to_str().unwrap(), "r:dir"]);
    assert_ok(&o);
    assert_eq!(r.files("r:dir"), ["new"]);
}
