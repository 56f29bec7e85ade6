//! The export step end to end with mock stages that run in this process:
//! no process is started. The "encryptor" XORs each byte, so the chunks
//! can be checked against the send stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{self, Read, Write};
use std::time::Duration;

use mockall::predicate::{always, eq};
use sha2::{Digest, Sha256};

use super::*;
use crate::model::testing::noise;
use crate::model::{hex, sha256sums_text, Compression, MANIFEST_FILE, SHA256SUMS_FILE};
use crate::process::ProcessError;
use crate::stages::{
    zstd_decompress, ByteStream, MockEncryptor, MockExporter, MockSnapshotter, Started, ThreadStage,
};
use crate::util::NoProgress;

/// The seed of the test streams (any will do; fixed, so runs repeat).
const SEED: u64 = 0x2545_f491_4f6c_dd1d;

const SNAP: &str = "20240101000000";
const SPLIT: u64 = 4096;
const KEY: u8 = 0x5a;

fn snapshot() -> SnapshotName {
    SnapshotName::parse(&format!("tank/data@{SNAP}")).unwrap()
}

fn xor(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| b ^ KEY).collect()
}

/// The snapshotter of a dataset with one unexported snapshot. With
/// `recorded`, the export must be recorded on it (a full: kind and hold);
/// without, nothing may be recorded.
fn snapshotter(recorded: bool) -> MockSnapshotter {
    let mut mock = MockSnapshotter::new();
    mock.expect_list().returning(|_| {
        Ok(vec![SnapshotInfo {
            level: None,
            name: snapshot(),
            userrefs: 0,
            kind: None,
            base: None,
            uploaded: None,
        }])
    });
    let times = usize::from(recorded);
    mock.expect_set_property()
        .with(eq(snapshot()), eq(PROP_KIND), eq("full"))
        .times(times)
        .returning(|_, _, _| Ok(()));
    mock.expect_hold()
        .with(eq(snapshot()), eq(HOLD_TAG))
        .times(times)
        .returning(|_, _| Ok(()));
    mock
}

fn send_error(source: io::Error) -> ZfsError {
    ZfsError::Process(ProcessError::Io {
        command: "zfs send".into(),
        source,
    })
}

/// An exporter whose send stream is `data` in memory, read in place by
/// the stage after it.
fn exporter(data: Vec<u8>) -> MockExporter {
    let mut mock = MockExporter::new();
    mock.expect_describe().returning(|_, _| "zfs send".into());
    mock.expect_estimate().returning(|_, _| None);
    mock.expect_send()
        .times(1)
        .returning(move |_, _| Ok(Started::reading("zfs send", io::Cursor::new(data.clone()))));
    mock
}

/// An exporter that writes `data` from its own thread into a pipe, as a
/// process would, and then fails if `dies`.
fn writing_exporter(data: Vec<u8>, dies: bool) -> MockExporter {
    let mut mock = MockExporter::new();
    mock.expect_describe().returning(|_, _| "zfs send".into());
    mock.expect_estimate().returning(|_, _| None);
    mock.expect_send().times(1).returning(move |_, _| {
        let data = data.clone();
        let stage = ThreadStage::start(
            "zfs send",
            ByteStream::reader(io::empty()),
            move |_, mut out, _| {
                out.write_all(&data)?;
                if dies {
                    return Err(io::Error::other("killed mid-stream"));
                }
                Ok(())
            },
        );
        Ok(stage.unwrap().map_err(send_error))
    });
    mock
}

/// An exporter that sends nothing until it is stopped, like a `zfs send`
/// that hangs.
fn hanging_exporter() -> MockExporter {
    let mut mock = MockExporter::new();
    mock.expect_describe().returning(|_, _| "zfs send".into());
    mock.expect_estimate().returning(|_, _| None);
    mock.expect_send().times(1).returning(|_, _| {
        let stage = ThreadStage::start(
            "zfs send",
            ByteStream::reader(io::empty()),
            |_, _out, stopped| {
                while !stopped() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(io::Error::other("stopped"))
            },
        );
        Ok(stage.unwrap().map_err(send_error))
    });
    mock
}

/// An "encryptor" in this process: XOR with [`KEY`]. With `fail_after`,
/// it fails once it has read more than that many bytes, like gpg refusing
/// its input.
fn encryptor(fail_after: Option<usize>) -> MockEncryptor {
    let mut mock = MockEncryptor::new();
    mock.expect_describe().return_const("xor".to_owned());
    mock.expect_encrypt().times(1).returning(move |input| {
        let stage = ThreadStage::start("xor", input, move |mut input, mut out, stopped| {
            let mut buf = vec![0u8; 8192];
            let mut seen = 0;
            loop {
                if stopped() {
                    return Err(io::Error::other("stopped"));
                }
                let n = input.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                seen += n;
                if fail_after.is_some_and(|limit| seen > limit) {
                    return Err(io::Error::other("bad passphrase"));
                }
                out.write_all(&xor(&buf[..n]))?;
            }
        });
        Ok(stage.unwrap().map_err(GpgError::Pipe))
    });
    mock
}

fn request(compression: Compression, cancel: CancelToken) -> ExportRequest {
    ExportRequest {
        target: None,
        force: None,
        strategy: crate::policy::Strategy::SinceLastFull {
            full_every_days: 30,
        },
        remote: "r:b".into(),
        settings: ExportSettings {
            split_size: SPLIT,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            cancel,
            compression: CompressionSettings {
                compression,
                level: 3,
            },
            send_flags: SendFlags::default(),
            encryption: Encryption::Gpg,
            recipients: Vec::new(),
        },
    }
}

fn export(
    snapshotter: &MockSnapshotter,
    exporter: &MockExporter,
    encryptor: &MockEncryptor,
    basedir: &Path,
    request: &ExportRequest,
) -> Result<ExportStepOutcome, ExportError> {
    export_step(
        snapshotter,
        exporter,
        encryptor,
        &Runner::new(),
        &ExportLayout::new(basedir.to_owned()),
        &DatasetName::parse("tank/data").unwrap(),
        request,
        None,
        &NoProgress,
    )
}

/// The export's directory and manifest; checks that each chunk on disk is
/// what the manifest says, and returns the chunks joined.
fn exported(outcome: ExportStepOutcome) -> (PathBuf, Manifest, Vec<u8>) {
    let ExportStepOutcome::Exported { outcome, .. } = outcome else {
        panic!("not exported: {outcome:?}");
    };
    let mut joined = Vec::new();
    for chunk in &outcome.manifest.chunks {
        let bytes = fs::read(outcome.dir.join(&chunk.name)).unwrap();
        assert_eq!(bytes.len() as u64, chunk.size, "{}", chunk.name);
        assert_eq!(hex(&Sha256::digest(&bytes)), chunk.sha256, "{}", chunk.name);
        joined.extend(bytes);
    }
    (outcome.dir, outcome.manifest, joined)
}

/// What is left in the export base directory.
fn left_in(basedir: &Path) -> Vec<String> {
    fs::read_dir(basedir)
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_chunks_are_the_encrypted_send_stream_and_the_manifest_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let data = noise(3 * SPLIT as usize + 1000, SEED);
    let outcome = export(
        &snapshotter(true),
        &exporter(data.clone()),
        &encryptor(None),
        tmp.path(),
        &request(Compression::None, CancelToken::new()),
    )
    .unwrap();
    let (dir, manifest, joined) = exported(outcome);
    assert_eq!(dir, tmp.path().join(format!("{SNAP}-full")));
    assert_eq!(joined, xor(&data));
    let sizes: Vec<u64> = manifest.chunks.iter().map(|c| c.size).collect();
    assert_eq!(sizes, [SPLIT, SPLIT, SPLIT, 1000]);
    assert_eq!(manifest.total_size, data.len() as u64);
    assert_eq!(manifest.compression, "none");
    assert_eq!(manifest.kind, ExportKind::Full);
    assert_eq!(
        fs::read_to_string(dir.join(SHA256SUMS_FILE)).unwrap(),
        sha256sums_text(&manifest.chunks)
    );
    let on_disk: Manifest =
        serde_json::from_slice(&fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(on_disk, manifest);
    assert_eq!(left_in(tmp.path()), [format!("{SNAP}-full")]);
}

#[test]
fn a_compressed_export_decrypts_and_decompresses_to_the_send_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = b"a very compressible line of a send stream\n"
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    let outcome = export(
        &snapshotter(true),
        &writing_exporter(data.clone(), false),
        &encryptor(None),
        tmp.path(),
        &request(Compression::Zstd, CancelToken::new()),
    )
    .unwrap();
    let (_, manifest, joined) = exported(outcome);
    assert_eq!(manifest.compression, "zstd");
    assert!(joined.len() < data.len() / 10, "{} bytes", joined.len());
    let mut plain = Vec::new();
    zstd_decompress(xor(&joined).as_slice(), &mut plain).unwrap();
    assert_eq!(plain, data);
}

#[test]
fn a_send_that_dies_mid_stream_fails_the_export_and_leaves_nothing() {
    for compression in [Compression::None, Compression::Zstd] {
        let tmp = tempfile::tempdir().unwrap();
        // The stages after it see a clean end of their input and succeed:
        // only the send's own failure tells.
        let err = export(
            &snapshotter(false),
            &writing_exporter(noise(100_000, SEED), true),
            &encryptor(None),
            tmp.path(),
            &request(compression, CancelToken::new()),
        )
        .unwrap_err();
        assert!(
            matches!(err, ExportError::Send(_)),
            "{compression}: {err:?}"
        );
        let shown = crate::util::error_chain(&err);
        assert!(shown.contains("killed mid-stream"), "{shown}");
        assert!(left_in(tmp.path()).is_empty(), "{:?}", left_in(tmp.path()));
    }
}

#[test]
fn a_failing_encryptor_is_the_cause_not_the_send_it_broke() {
    for compression in [Compression::None, Compression::Zstd] {
        let tmp = tempfile::tempdir().unwrap();
        // Far more than the pipes hold: once the encryptor gives up, the
        // send (and zstd) fail with a broken pipe.
        let err = export(
            &snapshotter(false),
            &writing_exporter(noise(4 << 20, SEED), false),
            &encryptor(Some(64 * 1024)),
            tmp.path(),
            &request(compression, CancelToken::new()),
        )
        .unwrap_err();
        assert!(
            matches!(err, ExportError::Encrypt(_)),
            "{compression}: {err:?}"
        );
        let shown = crate::util::error_chain(&err);
        assert!(shown.contains("bad passphrase"), "{shown}");
        assert!(left_in(tmp.path()).is_empty(), "{:?}", left_in(tmp.path()));
    }
}

#[test]
fn a_send_that_cannot_start_starts_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let mut exporter = MockExporter::new();
    exporter
        .expect_describe()
        .returning(|_, _| "zfs send".into());
    exporter.expect_estimate().returning(|_, _| None);
    exporter
        .expect_send()
        .times(1)
        .returning(|_, _| Err(send_error(io::Error::other("no such pool"))));
    let mut encryptor = MockEncryptor::new();
    encryptor.expect_describe().return_const("xor".to_owned());
    encryptor.expect_encrypt().times(0);
    let err = export(
        &snapshotter(false),
        &exporter,
        &encryptor,
        tmp.path(),
        &request(Compression::None, CancelToken::new()),
    )
    .unwrap_err();
    assert!(matches!(err, ExportError::Send(_)), "{err:?}");
    assert!(left_in(tmp.path()).is_empty(), "{:?}", left_in(tmp.path()));
}

#[test]
fn an_interruption_stops_every_stage_while_the_read_is_blocked() {
    for compression in [Compression::None, Compression::Zstd] {
        let tmp = tempfile::tempdir().unwrap();
        let cancel = CancelToken::new();
        let request = request(compression, cancel.clone());
        let exporter = hanging_exporter();
        let encryptor = encryptor(None);
        let snapshotter = snapshotter(false);
        let result = std::thread::scope(|s| {
            let export =
                s.spawn(|| export(&snapshotter, &exporter, &encryptor, tmp.path(), &request));
            // Nothing flows, so the export is blocked reading the
            // encryptor's output when the interruption comes.
            std::thread::sleep(Duration::from_millis(200));
            cancel.cancel();
            export.join().unwrap()
        });
        assert!(
            matches!(result, Err(ExportError::Interrupted)),
            "{compression}: {result:?}"
        );
        assert!(left_in(tmp.path()).is_empty(), "{:?}", left_in(tmp.path()));
    }
}

#[test]
fn a_pipelined_export_into_another_datasets_directory_never_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = crate::model::OwnerMarker::new(
        &DatasetName::parse("tank/other").unwrap(),
        Some("7"),
        "2024-01-01T00:00:00Z",
    );
    // The remote holds only the other dataset's marker; the mock has no
    // expectation for a write, so any write would fail the test.
    let mut uploader = crate::stages::MockUploader::new();
    uploader
        .expect_stat()
        .with(eq(format!("r:b/{}", crate::model::OWNER_FILE)))
        .returning(|path| {
            Ok(Some(crate::model::RemoteFile {
                name: path.into(),
                size: 1,
                sha256: None,
            }))
        });
    uploader.expect_cat().returning(move |path| {
        Ok(Started::reading(
            format!("cat {path}"),
            io::Cursor::new(marker.to_json()),
        ))
    });
    let mut snapshotter = snapshotter(false);
    snapshotter
        .expect_guid()
        .returning(|_| Ok(Some("8".into())));
    let mut exporter = MockExporter::new();
    exporter
        .expect_describe()
        .returning(|_, _| "zfs send".into());
    exporter.expect_estimate().returning(|_, _| None);
    exporter.expect_send().times(0);
    let mut encryptor = MockEncryptor::new();
    encryptor.expect_describe().return_const("xor".to_owned());
    encryptor.expect_encrypt().times(0);
    let stream = StreamUpload {
        uploader: &uploader,
        remote: "r:b",
        retry: crate::ops::upload::RetryPolicy {
            retries: 0,
            delay: Duration::ZERO,
        },
        concurrency: 2,
        keep_local: false,
        now: DateTime::<Utc>::UNIX_EPOCH,
    };
    let err = export_step(
        &snapshotter,
        &exporter,
        &encryptor,
        &Runner::new(),
        &ExportLayout::new(tmp.path().to_owned()),
        &DatasetName::parse("tank/data").unwrap(),
        &request(Compression::None, CancelToken::new()),
        Some(&stream),
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            ExportError::Remote(UploadStepError::NotOwner { conflict, .. })
                if conflict.to_string().contains("belongs to tank/other")
        ),
        "{err:?}"
    );
    assert!(left_in(tmp.path()).is_empty(), "{:?}", left_in(tmp.path()));
}

/// `20240101000000` exported as a full and confirmed on `r:b` (the
/// request's remote), and `20240102000000` to export.
fn uploaded_full_then_new() -> Vec<SnapshotInfo> {
    let full = SnapshotInfo {
        level: None,
        name: SnapshotName::parse("tank/data@20240101000000").unwrap(),
        userrefs: 1,
        kind: Some(ExportKind::Full),
        base: None,
        uploaded: Some("2024-01-01T00:10:00Z 20240101000000-full r:b".into()),
    };
    let new = SnapshotInfo {
        level: None,
        name: SnapshotName::parse("tank/data@20240102000000").unwrap(),
        userrefs: 0,
        kind: None,
        base: None,
        uploaded: None,
    };
    vec![full, new]
}

/// The plan for `uploaded_full_then_new` with `flags` configured, the
/// full's `zfs2cloud:send_flags` answered by `recorded`.
fn plan_with_record(
    flags: &[&str],
    recorded: Result<Option<String>, ZfsError>,
) -> Result<ExportPlan, ExportError> {
    let dir = tempfile::tempdir().unwrap();
    let layout = ExportLayout::new(dir.path().to_owned());
    let mut snapshotter = MockSnapshotter::new();
    let mut recorded = Some(recorded);
    snapshotter
        .expect_property()
        .with(
            eq(SnapshotName::parse("tank/data@20240101000000").unwrap()),
            eq(PROP_SEND_FLAGS),
        )
        .times(1)
        .returning(move |_, _| recorded.take().unwrap());
    snapshotter
        .expect_property()
        .with(always(), eq(PROP_RECIPIENTS))
        .returning(|_, _| Ok(None));
    let mut req = request(Compression::None, CancelToken::new());
    req.settings.send_flags = SendFlags::parse_names(flags).unwrap();
    plan_step(&snapshotter, &layout, &uploaded_full_then_new(), &req)
}

#[test]
fn the_flags_recorded_on_the_full_decide_whether_it_is_a_base() {
    let plan = plan_with_record(&["raw"], Ok(Some("-w".into()))).unwrap();
    assert_eq!(plan.kind, ExportKind::Incremental);
    let plan = plan_with_record(&["raw"], Ok(None)).unwrap();
    assert_eq!(plan.kind, ExportKind::Full, "no record means no flags");
    assert!(plan.reason.contains("flags none"), "{}", plan.reason);
    let plan = plan_with_record(&[], Ok(Some("-w".into()))).unwrap();
    assert_eq!(plan.kind, ExportKind::Full);
    // A record this version cannot read matches nothing.
    let plan = plan_with_record(&[], Ok(Some("-Z".into()))).unwrap();
    assert_eq!(plan.kind, ExportKind::Full);
}

#[test]
fn a_flags_record_that_cannot_be_read_stops_the_export() {
    let err = plan_with_record(
        &[],
        Err(ZfsError::Parse {
            command: "zfs get".into(),
            line: String::new(),
            reason: "garbage".into(),
        }),
    )
    .unwrap_err();
    assert!(matches!(err, ExportError::SendFlags { .. }), "{err}");
    assert!(
        err.to_string().contains("tank/data@20240101000000"),
        "{err}"
    );
}

#[test]
fn without_a_record_the_local_manifest_of_the_full_tells() {
    let dir = tempfile::tempdir().unwrap();
    let layout = ExportLayout::new(dir.path().to_owned());
    let full_dir = dir.path().join("20240101000000-full");
    fs::create_dir(&full_dir).unwrap();
    let mut m =
        crate::model::testing::test_manifest("20240101000000", ExportKind::Full, None, Vec::new());
    m.send_flags = SendFlags::parse_names(&["compressed"]).unwrap();
    fs::write(
        full_dir.join(MANIFEST_FILE),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
    fs::write(full_dir.join(SHA256SUMS_FILE), b"").unwrap();
    let mut snapshotter = MockSnapshotter::new();
    snapshotter.expect_property().returning(|_, _| Ok(None));
    let mut req = request(Compression::None, CancelToken::new());
    req.settings.send_flags = SendFlags::parse_names(&["compressed"]).unwrap();
    let plan = plan_step(&snapshotter, &layout, &uploaded_full_then_new(), &req).unwrap();
    assert_eq!(plan.kind, ExportKind::Incremental, "{}", plan.reason);
    req.settings.send_flags = SendFlags::default();
    let plan = plan_step(&snapshotter, &layout, &uploaded_full_then_new(), &req).unwrap();
    assert_eq!(plan.kind, ExportKind::Full, "{}", plan.reason);
}
