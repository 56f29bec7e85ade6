//! The owner marker against its published schema, `docs/owner.schema.json`.
//!
//! The schema lists every field as required and allows no others, so
//! adding, removing or renaming a field of [`OwnerMarker`] without updating
//! the schema fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::Value;
use zfs2cloud_core::{DatasetName, OwnerMarker};

fn validator() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/owner.schema.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap())
        .expect("the schema itself is valid")
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn written(guid: Option<&str>) -> Value {
    let marker = OwnerMarker::new(
        &DatasetName::parse("tank/home/alice").unwrap(),
        guid,
        "2024-01-01T00:00:00Z",
    );
    serde_json::from_slice(&marker.to_json()).unwrap()
}

#[test]
fn the_marker_this_version_writes_matches_the_schema() {
    let validator = validator();
    for guid in [Some("5673547753606268478"), None] {
        let marker = written(guid);
        let errors = errors(&validator, &marker);
        assert!(errors.is_empty(), "{errors:?}\nin\n{marker:#}");
    }
}

#[test]
fn the_schema_holds_the_format_to_what_it_documents() {
    let validator = validator();
    let mut extra = written(None);
    extra["hosts"] = "h".into();
    let mut missing = written(None);
    missing.as_object_mut().unwrap().remove("guid");
    let mut abbreviated = written(None);
    abbreviated["guid"] = "11.4E".into();
    for (what, marker) in [
        ("an extra field", extra),
        ("a missing field", missing),
        ("a GUID as zfs-fuse abbreviates it", abbreviated),
    ] {
        assert!(!errors(&validator, &marker).is_empty(), "{what} passed");
    }
}
