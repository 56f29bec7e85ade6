//! End-to-end tests of `snapshot` and `export` against real ZFS (zfs-fuse in
//! CI) and real gpg. Under `CI=true` they fail if a tool is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{manifest, marker_hooks, text, Setup};
use zfs2cloud_testkit::harness::{
    run_fail, run_ok, run_pipeline, tree_digest, write_random_file, zfs_get, ZfsSession,
};

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";
const DAY3: &str = "2024-01-03T00:00:00Z";
const DAY36: &str = "2024-02-05T00:00:00Z";

fn snapshot_and_export(setup: &Setup, now: &str) -> String {
    run_ok(setup.cmd(now).arg("snapshot"));
    let out = run_ok(setup.cmd(now).arg("export"));
    text(&out)
}

/// `cat <chunks in order> | gpg --decrypt | zfs recv <target>`: the
/// stock-tools restore the README promises.
fn restore_with_stock_tools(setup: &Setup, export_dir: &Path, target: &str) {
    let m = manifest(export_dir);
    let chunks: Vec<String> = m["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "'{}'",
                export_dir.join(c["name"].as_str().unwrap()).display()
            )
        })
        .collect();
    // The glob order the README uses must equal the manifest's order.
    let mut globbed: Vec<String> = std::fs::read_dir(export_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".zfs.gpg."))
        .collect();
    globbed.sort();
    let in_manifest: Vec<&str> = m["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(globbed, in_manifest);
    run_pipeline(&format!(
        "cat {} | GNUPGHOME='{}' gpg --batch --passphrase-file '{}' --decrypt | zfs recv {target}",
        chunks.join(" "),
        setup.gnupghome.display(),
        setup.passphrase_file.display()
    ));
}

/// Days 1 to 3 of `data`, each snapshotted and exported; returns the
/// source's digest at day 3.
fn export_days_one_to_three(setup: &Setup, data: &Path) -> BTreeMap<String, String> {
    // Day 1: a full.
    std::fs::create_dir(data.join("docs")).unwrap();
    write_random_file(&data.join("big.bin"), 400_000, 1);
    std::fs::write(data.join("docs/a.txt"), "day one\n").unwrap();
    let out = snapshot_and_export(setup, DAY1);
    assert!(out.contains("(full)"), "{out}");

    // Day 2: an incremental from day 1.
    std::fs::write(data.join("docs/a.txt"), "day two\n").unwrap();
    write_random_file(&data.join("day2.bin"), 100_000, 2);
    snapshot_and_export(setup, DAY2);

    // Day 3: an incremental from day 1 again, not from day 2.
    std::fs::write(data.join("docs/a.txt"), "day three\n").unwrap();
    std::fs::remove_file(data.join("day2.bin")).unwrap();
    write_random_file(&data.join("day3.bin"), 150_000, 3);
    snapshot_and_export(setup, DAY3);
    tree_digest(data)
}

/// The manifests and the pool's properties say: one full, and both
/// incrementals based on it.
fn check_the_chain_of_days_one_to_three(setup: &Setup, ds: &str) {
    assert_eq!(
        setup.complete_exports(),
        ["20240101000000-full", "20240102000000", "20240103000000"]
    );
    let full = manifest(&setup.export_dir("20240101000000-full"));
    assert_eq!(full["kind"], "full");
    assert_eq!(full["base"], serde_json::Value::Null);
    assert_eq!(full["dataset"], ds);
    assert!(
        full["chunks"].as_array().unwrap().len() > 1,
        "64K chunks of a 400K stream"
    );
    for (dir, base) in [
        ("20240102000000", "20240101000000"),
        ("20240103000000", "20240101000000"),
    ] {
        let m = manifest(&setup.export_dir(dir));
        assert_eq!(m["kind"], "incremental", "{dir}");
        assert_eq!(m["base"], base, "{dir} must be based on the last full");
    }
    // The state lives in the pool.
    assert_eq!(
        zfs_get("zfs2cloud:kind", &format!("{ds}@20240101000000")),
        "full"
    );
    assert_eq!(
        zfs_get("zfs2cloud:base", &format!("{ds}@20240103000000")),
        "20240101000000"
    );
    assert_eq!(zfs_get("userrefs", &format!("{ds}@20240101000000")), "1");
}

/// SHA256SUMS is in `sha256sum -c` format and matches; dirs are 0700 and
/// files 0600.
fn check_sums_and_permissions(setup: &Setup) {
    run_ok(
        Command::new("sha256sum")
            .args(["-c", "--quiet", "SHA256SUMS"])
            .current_dir(setup.export_dir("20240101000000-full")),
    );
    for entry in setup.all_entries() {
        let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
        let want = if entry.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{}", entry.display());
    }
    assert_eq!(
        std::fs::metadata(&setup.basedir)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
}

/// Day 36: the last full is 35 days old (> full_every_x_days = 30), so
/// this is a full, and the hold moves to it.
fn day_36_is_a_full_that_takes_the_hold(setup: &Setup, data: &Path, ds: &str) {
    write_random_file(&data.join("day36.bin"), 50_000, 36);
    let out = snapshot_and_export(setup, DAY36);
    assert!(out.contains("(full)"), "{out}");
    assert!(setup
        .export_dir("20240205000000-full")
        .join("manifest.json")
        .is_file());
    assert_eq!(zfs_get("userrefs", &format!("{ds}@20240205000000")), "1");
    assert_eq!(zfs_get("userrefs", &format!("{ds}@20240101000000")), "0");
    assert_eq!(
        zfs_get("zfs2cloud:kind", &format!("{ds}@20240205000000")),
        "full"
    );
}

#[test]
fn since_last_full_chain_restores_byte_identical_with_stock_tools() {
    let Some(zfs) = ZfsSession::start(&["gpg"]) else {
        return;
    };
    let src = zfs.pool("src");
    let dst = zfs.pool("dst");
    let data = src.create_dataset("data");
    let ds = src.dataset("data");
    let setup = Setup::new(&ds, "");

    let source_at_day3 = export_days_one_to_three(&setup, &data);
    check_the_chain_of_days_one_to_three(&setup, &ds);
    check_sums_and_permissions(&setup);

    // Restore full + day-3 incremental, skipping day 2, with stock tools.
    let target = dst.dataset("restored");
    restore_with_stock_tools(&setup, &setup.export_dir("20240101000000-full"), &target);
    restore_with_stock_tools(&setup, &setup.export_dir("20240103000000"), &target);
    let restored = tree_digest(&dst.mountpoint(&target));
    assert_eq!(restored, source_at_day3);
    assert!(restored.contains_key("day3.bin") && !restored.contains_key("day2.bin"));

    day_36_is_a_full_that_takes_the_hold(&setup, &data, &ds);
    // The new full restores on its own too.
    let target2 = dst.dataset("restored2");
    restore_with_stock_tools(&setup, &setup.export_dir("20240205000000-full"), &target2);
    assert_eq!(tree_digest(&dst.mountpoint(&target2)), tree_digest(&data));

    // Release our holds so the pool can be destroyed.
    run_ok(Command::new("zfs").args(["release", "zfs2cloud", &format!("{ds}@20240205000000")]));
}

#[test]
fn the_held_full_base_survives_a_manual_destroy() {
    let Some(zfs) = ZfsSession::start(&["gpg"]) else {
        return;
    };
    let src = zfs.pool("hold");
    let data = src.create_dataset("data");
    let ds = src.dataset("data");
    let setup = Setup::new(&ds, "");
    write_random_file(&data.join("f"), 10_000, 7);
    snapshot_and_export(&setup, DAY1);
    let out = run_fail(Command::new("zfs").args(["destroy", &format!("{ds}@20240101000000")]));
    // zfs-fuse says "dataset is busy", OpenZFS "it's being held".
    let said = text(&out);
    assert!(
        said.contains("busy") || said.contains("being held"),
        "{said}"
    );
    assert_eq!(zfs_get("userrefs", &format!("{ds}@20240101000000")), "1");
    run_ok(Command::new("zfs").args(["release", "zfs2cloud", &format!("{ds}@20240101000000")]));
}

/// Every `/proc/<pid>/cmdline` and `environ` we may read.
fn proc_texts() -> Vec<(u32, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        out.push((pid, cmdline, environ));
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn passphrase_is_in_no_process_cmdline_or_environment_during_an_export() {
    let Some(zfs) = ZfsSession::start(&["gpg"]) else {
        return;
    };
    let src = zfs.pool("proc");
    let data = src.create_dataset("data");
    let ds = src.dataset("data");
    let setup = Setup::new(&ds, "");
    write_random_file(&data.join("f"), 2_000_000, 9);
    run_ok(setup.cmd(DAY1).arg("snapshot"));

    // Real zfs, but `zfs send` keeps its stdout open 2 s after the stream
    // ends, so the real gpg is certainly alive while /proc is scanned.
    let wrapper = setup.dir.path().join("zfs-slow-send");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nif [ \"$1\" = send ]; then zfs \"$@\"; rc=$?; sleep 2; exit $rc; fi\nexec zfs \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut child = setup
        .cmd(DAY1)
        .arg("-v")
        .arg("export")
        .env("ZFS2CLOUD_ZFS", &wrapper)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let secret = setup.passphrase.as_bytes();
    let mut gpg_seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "export did not finish");
        for (pid, cmdline, environ) in proc_texts() {
            assert!(
                !contains(&cmdline, secret),
                "passphrase in /proc/{pid}/cmdline"
            );
            assert!(
                !contains(&environ, secret),
                "passphrase in /proc/{pid}/environ"
            );
            if contains(&cmdline, b"--passphrase-fd") {
                gpg_seen.insert(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !gpg_seen.is_empty(),
        "the scan never saw gpg running; it proved nothing"
    );
    assert!(
        !contains(text(&out).as_bytes(), secret),
        "passphrase in output"
    );
    let m = manifest(&setup.export_dir("20240101000000-full"));
    assert!(!contains(m.to_string().as_bytes(), secret));
    run_ok(Command::new("zfs").args(["release", "zfs2cloud", &format!("{ds}@20240101000000")]));
}

#[test]
fn dry_run_prints_every_command_changes_nothing_and_shows_no_secret() {
    let Some(zfs) = ZfsSession::start(&["gpg"]) else {
        return;
    };
    let src = zfs.pool("dry");
    let data = src.create_dataset("data");
    let ds = src.dataset("data");
    let setup = Setup::new(&ds, "");
    write_random_file(&data.join("f"), 10_000, 1);

    let out = run_ok(setup.cmd(DAY1).args(["--dry-run", "snapshot"]));
    let shown = text(&out);
    assert!(
        shown.contains(&format!("[dry-run] zfs snapshot {ds}@20240101000000")),
        "{shown}"
    );
    let list = run_ok(
        Command::new("zfs").args(["list", "-H", "-t", "snapshot", "-o", "name", "-d", "1", &ds]),
    );
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).trim(),
        "",
        "dry-run took a snapshot"
    );

    run_ok(setup.cmd(DAY1).arg("snapshot"));
    let out = run_ok(setup.cmd(DAY1).args(["--dry-run", "-v", "export"]));
    let shown = text(&out);
    assert!(
        shown.contains(&format!("[dry-run] zfs send {ds}@20240101000000 | gpg ")),
        "{shown}"
    );
    assert!(shown.contains("--passphrase-fd 3"), "{shown}");
    assert!(
        shown.contains(&format!("[dry-run] zfs hold zfs2cloud {ds}@20240101000000")),
        "{shown}"
    );
    assert!(!shown.contains(&setup.passphrase), "{shown}");
    // Only the lock file of the real `snapshot` run is there: no export,
    // not even a partial one.
    let entries: Vec<_> = setup.all_entries();
    assert_eq!(
        entries,
        [setup.basedir.join("lock")],
        "dry-run wrote {entries:?}"
    );
    assert_eq!(
        zfs_get("zfs2cloud:kind", &format!("{ds}@20240101000000")),
        "-"
    );
    assert_eq!(zfs_get("userrefs", &format!("{ds}@20240101000000")), "0");
}

#[test]
fn an_existing_snapshot_name_is_refused_and_nothing_changes() {
    let Some(zfs) = ZfsSession::start(&[]) else {
        return;
    };
    let src = zfs.pool("dup");
    let _ = src.create_dataset("data");
    let ds = src.dataset("data");
    let hook_log = tempfile::NamedTempFile::new().unwrap();
    let setup = Setup::new(&ds, &marker_hooks(hook_log.path(), "true"));
    run_ok(setup.cmd(DAY1).arg("snapshot"));
    assert_eq!(
        std::fs::read_to_string(hook_log.path()).unwrap(),
        "pre\npost\n"
    );
    let out = run_fail(setup.cmd(DAY1).arg("snapshot"));
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    assert_eq!(out.status.code(), Some(1));
    // No hook ran for the refused snapshot: no downtime for nothing.
    assert_eq!(
        std::fs::read_to_string(hook_log.path()).unwrap(),
        "pre\npost\n"
    );
}

#[test]
fn snapshots_zfs2cloud_did_not_make_are_never_exported() {
    let Some(zfs) = ZfsSession::start(&["gpg"]) else {
        return;
    };
    let src = zfs.pool("foreign");
    let data = src.create_dataset("data");
    let ds = src.dataset("data");
    let setup = Setup::new(&ds, "");
    write_random_file(&data.join("f"), 10_000, 1);
    run_ok(setup.cmd(DAY1).arg("snapshot"));
    // Newer snapshots by someone else: sanoid-style and manual.
    run_ok(Command::new("zfs").args([
        "snapshot",
        &format!("{ds}@autosnap_2024-01-02_00:00:00_daily"),
    ]));
    run_ok(Command::new("zfs").args(["snapshot", &format!("{ds}@99999999999999")]));
    run_ok(Command::new("zfs").args(["snapshot", &format!("{ds}@manual")]));
    let out = run_ok(setup.cmd(DAY2).arg("export"));
    assert!(
        text(&out).contains(&format!("{ds}@20240101000000")),
        "{}",
        text(&out)
    );
    assert_eq!(setup.complete_exports(), ["20240101000000-full"]);
    let out = run_fail(setup.cmd(DAY2).args(["export", "--snapshot", "manual"]));
    assert!(
        text(&out).contains("not made by zfs2cloud"),
        "{}",
        text(&out)
    );
    assert_eq!(zfs_get("zfs2cloud:kind", &format!("{ds}@manual")), "-");
    run_ok(Command::new("zfs").args(["release", "zfs2cloud", &format!("{ds}@20240101000000")]));
}
