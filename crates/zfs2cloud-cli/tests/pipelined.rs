//! Uploading while exporting (`upload_while_exporting`), bounded local disk
//! (`keep_local_export = false`) and zstd compression.
//!
//! The properties are shown against real zfs-fuse, gpg and rclone; the
//! backpressure and a failing upload mid-stream against the fake `zfs` and
//! a blocking or failing fake `rclone` (real gpg in between).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{manifest, text, with_fakes, Setup};
use sha2::{Digest, Sha256};
use zfs2cloud_testkit::fake::{FakeRclone, FakeZfs, FaultAction};
use zfs2cloud_testkit::harness::{
    require_tools, run_fail, run_ok, run_pipeline, tree_digest, write_random_file, zfs_get,
    ZfsSession,
};

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";
const MIB: u64 = 1 << 20;

/// Chunk files (`….zfs.gpg.NNNN`) under `dir`, recursively: how many, and
/// their total size.
fn chunk_usage(dir: &Path) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // A chunk may be deleted between listing and stat: skip it.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            let (f, b) = chunk_usage(&path);
            files += f;
            bytes += b;
        } else if entry.file_name().to_string_lossy().contains(".zfs.gpg.") {
            files += 1;
            bytes += meta.len();
        }
    }
    (files, bytes)
}

/// Samples [`chunk_usage`] of a directory every 2 ms until stopped; the
/// most files and bytes seen at one moment.
struct DiskSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(usize, u64, u64)>,
}

impl DiskSampler {
    fn start(dir: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let (mut max_files, mut max_bytes, mut samples) = (0, 0, 0);
            while !flag.load(Ordering::SeqCst) {
                let (f, b) = chunk_usage(&dir);
                max_files = max_files.max(f);
                max_bytes = max_bytes.max(b);
                samples += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            (max_files, max_bytes, samples)
        });
        Self { stop, handle }
    }

    /// (most chunk files, most bytes, number of samples).
    fn finish(self) -> (usize, u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

fn sha256_file(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    std::io::copy(&mut f, &mut hasher).unwrap();
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every chunk of the manifest in `remote_dir` is there with its size and
/// SHA-256, and nothing else but the two metadata files.
fn assert_remote_complete(remote_dir: &Path) -> serde_json::Value {
    let m = manifest(remote_dir);
    let chunks = m["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty());
    let mut expected: Vec<String> = vec!["SHA256SUMS".into(), "manifest.json".into()];
    for c in chunks {
        let name = c["name"].as_str().unwrap();
        let path = remote_dir.join(name);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            c["size"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(sha256_file(&path), c["sha256"].as_str().unwrap(), "{name}");
        expected.push(name.to_owned());
    }
    expected.sort();
    let mut found: Vec<String> = std::fs::read_dir(remote_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, expected);
    m
}

/// The "at most N chunk(s) on local disk" the tool reports.
fn reported_peak(out: &str) -> usize {
    let at = out
        .find("at most ")
        .unwrap_or_else(|| panic!("no peak reported: {out}"));
    out[at + "at most ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn pipelined_backups_keep_local_disk_bounded_and_restore_byte_identical() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let pool = zfs.pool("pipe");
    let data = pool.create_dataset("data");
    write_random_file(&data.join("big.bin"), 64 << 20, 61);
    std::fs::write(data.join("notes.txt"), "day one\n").unwrap();
    let remote_root = tempfile::tempdir().unwrap();
    let remote = remote_root.path().join("backups");
    let concurrency = 2u64;
    let split = 4 * MIB;
    // The bandwidth limit makes the upload the slower side, so the export
    // really has to wait for room on disk.
    let setup = Setup::with_split(
        &pool.dataset("data"),
        remote.to_str().unwrap(),
        "4M",
        &format!(
            "upload_while_exporting = true\n\
             upload_concurrency = {concurrency}\n\
             keep_local_export = false\n\
             bwlimit = \"24M\"\n"
        ),
    );

    let sampler = DiskSampler::start(setup.basedir.clone());
    let out = run_ok(setup.cmd(DAY1).arg("backup"));
    let (max_files, max_bytes, samples) = sampler.finish();
    let shown = text(&out);
    let bound = usize::try_from(concurrency).unwrap() + 1;
    eprintln!(
        "day 1: at most {max_files} chunk files / {max_bytes} bytes seen in {samples} samples"
    );
    assert!(
        max_files >= 1 && samples > 100,
        "the sampler never saw a chunk ({samples} samples): it proves nothing"
    );
    assert!(
        max_files <= bound,
        "{max_files} chunk files on disk at once"
    );
    assert!(
        max_bytes <= bound as u64 * split,
        "{max_bytes} bytes of chunks on disk at once"
    );
    let peak = reported_peak(&shown);
    assert!((1..=bound).contains(&peak), "{shown}");

    let full = remote.join("20240101000000-full");
    let m = assert_remote_complete(&full);
    assert!(m["chunks"].as_array().unwrap().len() >= 16, "{m}");
    assert_eq!(m["compression"], "none");
    // Nothing of the export stays behind locally, and the upload is
    // recorded on the snapshot, so the next export can be incremental.
    assert_eq!(chunk_usage(&setup.basedir).0, 0);
    assert_eq!(setup.complete_exports(), Vec::<String>::new());
    assert!(setup.partials().is_empty(), "{:?}", setup.partials());
    let snap = format!("{}@20240101000000", pool.dataset("data"));
    assert!(zfs_get("zfs2cloud:uploaded", &snap).contains("20240101000000-full"));

    // Day 2: an incremental, also uploaded while exporting.
    std::fs::write(data.join("notes.txt"), "day two\n").unwrap();
    write_random_file(&data.join("day2.bin"), 3 << 20, 62);
    let out = run_ok(setup.cmd(DAY2).arg("backup"));
    assert!(
        text(&out).contains("uploaded while exporting"),
        "{}",
        text(&out)
    );
    let inc = assert_remote_complete(&remote.join("20240102000000"));
    assert_eq!(inc["kind"], "incremental");
    assert_eq!(inc["base"], "20240101000000");
    let expected = tree_digest(&data);

    let target = pool.dataset("restored");
    run_ok(setup.cmd(DAY2).args(["restore", "--to", &target]));
    assert_eq!(tree_digest(&pool.mountpoint(&target)), expected);
}

#[test]
fn zstd_backups_shrink_text_and_restore_with_zfs2cloud_and_stock_tools() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone", "zstd"]) else {
        return;
    };
    let pool = zfs.pool("zstd");
    let data = pool.create_dataset("data");
    let mut log = String::new();
    for i in 0..120_000u32 {
        log.push_str(&format!(
            "2024-01-01T00:{:02}:{:02}Z host app[{}]: request {i} served in {} ms\n",
            i / 60 % 60,
            i % 60,
            1000 + i % 7,
            i % 13
        ));
    }
    std::fs::write(data.join("app.log"), &log).unwrap();
    write_random_file(&data.join("random.bin"), 200_000, 71);
    let remote_root = tempfile::tempdir().unwrap();
    let remote = remote_root.path().join("backups");
    let setup = Setup::with_remote(
        &pool.dataset("data"),
        remote.to_str().unwrap(),
        "compression = \"zstd\"\ncompression_level = 6\nupload_while_exporting = true\n",
    );
    run_ok(setup.cmd(DAY1).arg("backup"));
    let dir = remote.join("20240101000000-full");
    let m = assert_remote_complete(&dir);
    assert_eq!(m["compression"], "zstd");
    let total = m["total_size"].as_u64().unwrap();
    assert!(
        total < (log.len() as u64) / 4,
        "{total} bytes for {} bytes of text",
        log.len()
    );
    // keep_local_export defaults to true: the export stays, complete.
    assert_eq!(setup.complete_exports(), ["20240101000000-full"]);
    let expected = tree_digest(&data);

    let target = pool.dataset("restored");
    run_ok(setup.cmd(DAY1).args(["restore", "--to", &target]));
    assert_eq!(tree_digest(&pool.mountpoint(&target)), expected);

    // The README's stock-tools recipe.
    let chunks: Vec<String> = m["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("'{}'", dir.join(c["name"].as_str().unwrap()).display()))
        .collect();
    let stock = pool.dataset("stock");
    run_pipeline(&format!(
        "cat {} | GNUPGHOME='{}' gpg --batch --passphrase-file '{}' --decrypt | zstd -d | zfs recv {stock}",
        chunks.join(" "),
        setup.gnupghome.display(),
        setup.passphrase_file.display()
    ));
    assert_eq!(tree_digest(&pool.mountpoint(&stock)), expected);
}

fn fakes(stream_size: u64) -> (FakeZfs, FakeRclone) {
    let zfs = FakeZfs::new();
    zfs.add_dataset("tank/data");
    zfs.add_snapshot("tank/data@20240101000000", &[]);
    zfs.set_stream_size("tank/data@20240101000000", stream_size);
    (zfs, FakeRclone::new())
}

/// `VmRSS` of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .to_owned();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_blocked_upload_stops_the_export_from_reading_zfs_send() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let stream = 64 * MIB;
    let (zfs, rclone) = fakes(stream);
    // Every chunk upload hangs: nothing is ever confirmed or deleted.
    rclone.inject("copyto", FaultAction::Hang, None);
    let setup = Setup::with_split(
        "tank/data",
        "cloud:backups/data",
        "1M",
        "upload_while_exporting = true\nupload_concurrency = 2\nkeep_local_export = false\n",
    );
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("export")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    with_fakes(&mut cmd, &zfs, &rclone);
    let mut guard = StopOnDrop(Some(cmd.spawn().unwrap()));
    let pid = guard.0.as_ref().unwrap().id();

    // Wait until zfs send has started and then not advanced for 2 s.
    let started = Instant::now();
    let mut last = (zfs.send_progress(), Instant::now());
    while last.0 == 0 || last.1.elapsed() < Duration::from_secs(2) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "zfs send never started, or never stopped: {} bytes",
            zfs.send_progress()
        );
        std::thread::sleep(Duration::from_millis(100));
        let now = zfs.send_progress();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let read = last.0;
    // What may be in flight: the upload_concurrency + 1 chunk files, one
    // read buffer (1 MiB), and the pipes and gpg's own buffers in between.
    assert!(read > 0, "zfs send never started");
    assert!(
        read <= 3 * MIB + 2 * MIB,
        "zfs send wrote {read} bytes of {stream} while no upload could finish"
    );
    let (files, bytes) = chunk_usage(&setup.basedir);
    assert_eq!(files, 3, "chunk files on disk ({bytes} bytes)");
    // Memory does not grow while it waits.
    let rss1 = rss(pid);
    std::thread::sleep(Duration::from_secs(1));
    let rss2 = rss(pid);
    assert!(rss1 <= 64 * MIB && rss2 <= 64 * MIB, "{rss1} / {rss2}");
    assert!(rss2 <= rss1 + MIB / 4, "RSS grew from {rss1} to {rss2}");

    // SIGTERM ends it: the hanging uploads are killed, the partial export
    // removed, and no manifest reaches the remote.
    nix_kill(pid, "TERM");
    let out = guard.0.take().unwrap().wait_with_output().unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(143), "{shown}");
    assert!(shown.contains("interrupted"), "{shown}");
    assert!(
        !shown.contains("uploading while exporting failed"),
        "{shown}"
    );
    assert_eq!(chunk_usage(&setup.basedir).0, 0, "{shown}");
    assert!(setup.partials().is_empty(), "{:?}", setup.partials());
    assert!(
        !rclone
            .files("cloud:backups/data")
            .iter()
            .any(|f| f.ends_with("manifest.json")),
        "{:?}",
        rclone.files("cloud:backups/data")
    );
}

/// Stops a zfs2cloud that a failing test leaves running: SIGTERM first, so
/// that it stops its own children (a hanging fake rclone would outlive a
/// SIGKILL), then SIGKILL after 10 s.
struct StopOnDrop(Option<std::process::Child>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        for _ in 0..100 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn nix_kill(pid: u32, signal: &str) {
    run_ok(
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string()),
    );
}

#[test]
fn an_upload_that_fails_for_good_mid_stream_aborts_the_export_and_the_next_run_starts_afresh() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let (zfs, rclone) = fakes(8 * MIB);
    let setup = Setup::with_split(
        "tank/data",
        "cloud:backups/data",
        "1M",
        "upload_while_exporting = true\nupload_concurrency = 2\nkeep_local_export = false\n\
         upload_retries = 1\n",
    );
    // Every copy fails, retries included.
    let export = |zfs: &FakeZfs, rclone: &FakeRclone| {
        let mut cmd = setup.cmd(DAY1);
        cmd.arg("export");
        with_fakes(&mut cmd, zfs, rclone);
        cmd
    };
    rclone.inject(
        "copyto",
        FaultAction::Exit {
            code: 5,
            stderr: "Failed to copy: quota exceeded".into(),
        },
        None,
    );
    let out = run_fail(&mut export(&zfs, &rclone));
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("uploading while exporting failed"),
        "{shown}"
    );
    assert!(shown.contains("quota exceeded"), "{shown}");
    // It stopped reading early rather than exporting everything.
    assert!(zfs.send_progress() < 8 * MIB, "{}", zfs.send_progress());
    assert_eq!(chunk_usage(&setup.basedir).0, 0);
    assert!(setup.partials().is_empty());
    assert_eq!(setup.complete_exports(), Vec::<String>::new());
    let remote = rclone.files("cloud:backups/data");
    assert!(
        !remote.iter().any(|f| f.ends_with("manifest.json")),
        "{remote:?}"
    );
    // Nothing was recorded: the snapshot is no base for anything.
    let snap = &zfs.snapshots("tank/data")[0];
    assert!(!snap.properties.contains_key("zfs2cloud:kind"), "{snap:?}");
    assert!(
        !snap.properties.contains_key("zfs2cloud:uploaded"),
        "{snap:?}"
    );

    rclone.clear_faults();
    let out = run_ok(&mut export(&zfs, &rclone));
    assert!(
        text(&out).contains("uploaded it while exporting"),
        "{}",
        text(&out)
    );
    let remote = rclone.files("cloud:backups/data");
    assert!(
        remote.contains(&"20240101000000-full/manifest.json".to_owned()),
        "{remote:?}"
    );
    let m = assert_remote_complete(&rclone.path("cloud:backups/data/20240101000000-full"));
    // 8 MiB of stream plus gpg's framing.
    assert!(m["chunks"].as_array().unwrap().len() > 8, "{m}");
    let snap = &zfs.snapshots("tank/data")[0];
    assert_eq!(
        snap.properties.get("zfs2cloud:kind").map(String::as_str),
        Some("full")
    );
    assert!(
        snap.properties.contains_key("zfs2cloud:uploaded"),
        "{snap:?}"
    );
}
