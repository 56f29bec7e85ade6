//! `status --json` against its published schema, `docs/status.schema.json`.
//!
//! Only the public API is used: a report is collected with small test
//! doubles (a fixed snapshot list, and an uploader that answers from a
//! local directory standing in for the remote), serialized, and validated.
//! The schema lists every field as required and allows no others, so adding,
//! removing or renaming a field without updating the schema (and with it
//! `docs/status.md`) fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use zfs2cloud_core::Config;
use zfs2cloud_core::ExportKind;
use zfs2cloud_core::RunLock;
use zfs2cloud_core::Snapshotter;
use zfs2cloud_core::{collect_status, record_last_backup, LastBackup, StatusReport};
use zfs2cloud_core::{upload_record, SnapshotInfo, ZfsError};
use zfs2cloud_core::{ChunkEntry, Manifest, MANIFEST_FILE};
use zfs2cloud_core::{DatasetName, SnapshotName};

use common::LocalDirRemote;

/// A dataset whose snapshots never change.
struct FixedSnapshots(Vec<SnapshotInfo>);

impl Snapshotter for FixedSnapshots {
    fn list(&self, _dataset: &DatasetName) -> Result<Vec<SnapshotInfo>, ZfsError> {
        Ok(self.0.clone())
    }
    fn create(&self, _: &SnapshotName) -> Result<(), ZfsError> {
        panic!("status must not create snapshots")
    }
    fn create_recursive(&self, _: &SnapshotName) -> Result<(), ZfsError> {
        panic!("status must not create snapshots")
    }
    fn list_tree(&self, _: &DatasetName) -> Result<Vec<zfs2cloud_core::TreeEntry>, ZfsError> {
        panic!("status of one dataset lists no tree")
    }
    fn destroy(&self, _: &SnapshotName) -> Result<(), ZfsError> {
        panic!("status must not destroy snapshots")
    }
    fn hold(&self, _: &SnapshotName, _: &str) -> Result<(), ZfsError> {
        panic!("status must not hold snapshots")
    }
    fn release(&self, _: &SnapshotName, _: &str) -> Result<(), ZfsError> {
        panic!("status must not release snapshots")
    }
    fn clear_property(&self, _: &SnapshotName, _: &str) -> Result<(), ZfsError> {
        panic!("status must not change properties")
    }
    fn set_property(&self, _: &SnapshotName, _: &str, _: &str) -> Result<(), ZfsError> {
        panic!("status must not change properties")
    }
}

fn schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/status.schema.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("the schema itself is valid")
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "schema violations:\n{}\nin\n{:#}",
        errors.join("\n"),
        instance
    );
}

fn config(basedir: &Path, remote: &str) -> Config {
    let text = format!(
        "dataset = \"tank/data\"\nintermediate_basedir = {:?}\nremote = {:?}\n\
         passphrase_file = \"/etc/zfs2cloud/pass\"\n",
        basedir.display().to_string(),
        remote
    );
    Config::parse(&text, Path::new("/etc/zfs2cloud/data.toml")).unwrap()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 3, 12, 0, 0).unwrap()
}

fn snap(
    name: &str,
    userrefs: u64,
    kind: Option<ExportKind>,
    uploaded: Option<String>,
) -> SnapshotInfo {
    SnapshotInfo {
        level: None,
        name: SnapshotName::parse(&format!("tank/data@{name}")).unwrap(),
        userrefs,
        kind,
        base: (kind == Some(ExportKind::Incremental)).then(|| "20240101000000".to_owned()),
        uploaded,
    }
}

fn manifest(name: &str, kind: ExportKind, sizes: &[u64]) -> Manifest {
    Manifest {
        format: 1,
        tool: "zfs2cloud".into(),
        tool_version: "0".into(),
        dataset: "tank/data".into(),
        snapshot: name.into(),
        kind,
        base: (kind == ExportKind::Incremental).then(|| "20240101000000".to_owned()),
        created_at: "2024-01-01T00:00:00Z".into(),
        encryption: "gpg-symmetric-aes256".into(),
        compression: "none".into(),
        split_size: 1024,
        total_size: sizes.iter().sum(),
        chunks: sizes
            .iter()
            .enumerate()
            .map(|(i, size)| ChunkEntry {
                name: format!("tank-data@{name}.zfs.gpg.{i:04}"),
                size: *size,
                sha256: "00".into(),
            })
            .collect(),
        send_flags: zfs2cloud_core::SendFlags::default(),
        level: None,
        recipients: Vec::new(),
    }
}

fn write_export(parent: &Path, dir: &str, m: &Manifest, with_manifest: bool) {
    let dir = parent.join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for c in &m.chunks {
        std::fs::write(
            dir.join(&c.name),
            vec![1u8; usize::try_from(c.size).unwrap()],
        )
        .unwrap();
    }
    if with_manifest {
        std::fs::write(dir.join(MANIFEST_FILE), serde_json::to_vec(m).unwrap()).unwrap();
    }
}

/// Every kind of value the report can hold: own and foreign snapshots, both
/// kinds, held and not, uploaded and not, local and partial exports, a held
/// lock, a last backup, remote backups that are OK, incomplete and damaged,
/// a chain and orphans.
fn full_report(tmp: &Path) -> (StatusReport, RunLock) {
    let basedir = tmp.join("intermediate");
    let remote_dir = tmp.join("remote");
    let remote = remote_dir.display().to_string();
    let zfs = FixedSnapshots(vec![
        snap(
            "20240101000000",
            1,
            Some(ExportKind::Full),
            Some(upload_record(
                "2024-01-01T00:10:00Z",
                "20240101000000-full",
                &remote,
            )),
        ),
        snap(
            "20240102000000",
            0,
            Some(ExportKind::Incremental),
            Some(upload_record(
                "2024-01-02T00:10:00Z",
                "20240102000000",
                &remote,
            )),
        ),
        snap("20240103000000", 0, Some(ExportKind::Incremental), None),
        snap("autosnap_2024-01-01_00:00:00_daily", 0, None, None),
    ]);
    let full = manifest("20240101000000", ExportKind::Full, &[1024, 3]);
    let second = manifest("20240102000000", ExportKind::Incremental, &[9]);
    let third = manifest("20240103000000", ExportKind::Incremental, &[4]);
    write_export(&basedir, "20240102000000", &second, true);
    write_export(&basedir, "20240103000000", &third, true);
    std::fs::create_dir_all(basedir.join("20240104000000-full.partial")).unwrap();

    write_export(&remote_dir, "20240101000000-full", &full, true);
    write_export(&remote_dir, "20240102000000", &second, true);
    write_export(&remote_dir, "20240103000000", &third, false);
    let mut damaged = manifest("20231215000000", ExportKind::Incremental, &[5]);
    damaged.base = Some("20231201000000".into());
    write_export(&remote_dir, "20231215000000", &damaged, true);
    std::fs::write(
        remote_dir.join("20231215000000/tank-data@20231215000000.zfs.gpg.0000"),
        b"xy",
    )
    .unwrap();

    let finished = Utc.with_ymd_and_hms(2024, 1, 3, 0, 0, 5).unwrap();
    let name = SnapshotName::parse("tank/data@20240103000000").unwrap();
    record_last_backup(
        &basedir,
        &LastBackup::new(finished, Some(&name), Some("incremental")),
    )
    .unwrap();
    let lock = RunLock::acquire(&basedir, finished).unwrap();

    let config = config(&basedir, &remote);
    let report = collect_status(&zfs, &config, now(), Some(&LocalDirRemote)).unwrap();
    (report, lock)
}

#[test]
fn a_report_with_everything_matches_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let (report, _lock) = full_report(tmp.path());
    let json = serde_json::to_value(&report).unwrap();

    // The fixture really exercises every branch of the schema.
    assert_eq!(json["format"], 1);
    assert_eq!(json["lock"]["held"], true);
    assert!(json["lock"]["holder"].as_str().unwrap().contains("pid="));
    assert_eq!(json["foreign_snapshots"], 1);
    assert_eq!(json["full_base"], "20240101000000");
    assert_eq!(json["last_backup"]["kind"], "incremental");
    assert_eq!(
        json["partial_exports"],
        json!(["20240104000000-full.partial"])
    );
    assert_eq!(json["local_exports"].as_array().unwrap().len(), 2);
    let remote = &json["remote_backups"];
    let health: Vec<&str> = remote["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["health"].as_str().unwrap())
        .collect();
    assert_eq!(health, ["DAMAGED", "OK", "OK", "INCOMPLETE"]);
    assert_eq!(
        remote["chains"],
        json!([{ "full": "20240101000000-full", "incrementals": ["20240102000000"] }])
    );
    assert_eq!(
        remote["orphans"],
        json!(["20231215000000", "20240103000000"])
    );

    assert_valid(&validator(), &json);
}

#[test]
fn a_report_without_remote_or_history_matches_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let basedir = tmp.path().join("not-yet-created");
    let zfs = FixedSnapshots(vec![snap("manual", 0, None, None)]);
    let report = collect_status(&zfs, &config(&basedir, "b2:bucket/data"), now(), None).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["remote_backups"].is_null());
    assert!(json["last_backup"].is_null());
    assert!(json["full_base"].is_null());
    assert!(json["lock"]["holder"].is_null());
    assert!(!basedir.exists(), "status created the base directory");
    assert_valid(&validator(), &json);
}

/// The schema catches drift: an unknown field anywhere, or a missing one,
/// fails validation.
#[test]
fn the_schema_rejects_unknown_and_missing_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let (report, _lock) = full_report(tmp.path());
    let good = serde_json::to_value(&report).unwrap();
    let validator = validator();
    assert!(validator.is_valid(&good));

    let pointers = [
        "",
        "/snapshots/0",
        "/local_exports/0",
        "/lock",
        "/last_backup",
        "/remote_backups",
        "/remote_backups/backups/0",
        "/remote_backups/chains/0",
    ];
    for pointer in pointers {
        let mut extra = good.clone();
        extra
            .pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("{pointer} is an object"))
            .insert("unexpected".into(), json!(1));
        assert!(
            !validator.is_valid(&extra),
            "an unknown field at {pointer:?} passed validation"
        );

        let object = good.pointer(pointer).unwrap().as_object().unwrap();
        for key in object.keys() {
            let mut missing = good.clone();
            missing
                .pointer_mut(pointer)
                .and_then(Value::as_object_mut)
                .unwrap()
                .remove(key);
            assert!(
                !validator.is_valid(&missing),
                "{pointer}/{key} missing passed validation"
            );
        }
    }

    let mut wrong = good.clone();
    wrong["format"] = json!(2);
    assert!(!validator.is_valid(&wrong), "format 2 passed");
    let mut wrong = good;
    wrong["remote_backups"]["backups"][1]["health"] = json!("FINE");
    assert!(!validator.is_valid(&wrong), "an unknown health passed");
}

/// The example in `docs/status.md` is a valid report, too.
#[test]
fn the_documented_example_matches_the_schema() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/status.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (_, rest) = doc
        .split_once("```json\n")
        .expect("docs/status.md has a JSON example");
    let (example, _) = rest.split_once("```").unwrap();
    let example: Value = serde_json::from_str(example).unwrap();
    assert_valid(&validator(), &example);
    let report: StatusReport = serde_json::from_value(example).unwrap();
    assert_eq!(report.format, 1);
}
