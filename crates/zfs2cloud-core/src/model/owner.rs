//! The owner marker: the object in a remote directory of intermediate-mode
//! backups that says whose backups they are.
//!
//! ```text
//! <remote>/zfs2cloud-owner.json      # this marker
//! <remote>/<snap>-full/…             # backups, each with its manifest
//! <remote>/<snap>/…
//! ```
//!
//! Backup directories are named `YYYYMMDDHHMMSS[-full]`, and the original
//! tool put nothing else there, so the marker's name cannot collide with
//! either. It is written once, by the first upload that finds none, and
//! never rewritten: two datasets never share a directory.

use serde::{Deserialize, Serialize};

use super::names::DatasetName;

/// The marker's object name, directly inside the remote directory.
pub const OWNER_FILE: &str = "zfs2cloud-owner.json";

/// The marker format this version writes.
pub const OWNER_FORMAT: u32 = 1;

/// `zfs2cloud-owner.json`: which dataset a remote directory's backups are
/// of. Documented in `docs/owner.schema.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerMarker {
    /// The marker format, [`OWNER_FORMAT`].
    pub format: u32,
    /// `zfs2cloud`.
    pub tool: String,
    /// The dataset whose backups the directory holds, e.g. `tank/data`.
    pub dataset: String,
    /// The dataset's GUID (decimal, as `zfs get -Hp guid` prints it), if
    /// the writer's zfs gave one. It tells a namesake (another machine's
    /// `tank/data`, or the dataset re-created) from the dataset itself.
    pub guid: Option<String>,
    /// When it was written (RFC 3339, UTC).
    pub written_at: String,
    /// The version of zfs2cloud that wrote it.
    pub tool_version: String,
}

/// Why a marker cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerMarkerError {
    /// Not the JSON of a marker.
    #[error("not an owner marker: {0}")]
    Json(String),
    /// It names no valid dataset.
    #[error("its dataset {0:?} is not a valid dataset name")]
    Dataset(String),
    /// Its GUID is not a decimal number.
    #[error("its guid {0:?} is not a decimal number")]
    Guid(String),
}

impl OwnerMarker {
    /// A marker of this version for `dataset` (GUID `guid`, where zfs has
    /// one), written at `written_at` (RFC 3339).
    #[must_use]
    pub fn new(dataset: &DatasetName, guid: Option<&str>, written_at: &str) -> Self {
        Self {
            format: OWNER_FORMAT,
            tool: "zfs2cloud".into(),
            dataset: dataset.to_string(),
            guid: guid.map(str::to_owned),
            written_at: written_at.to_owned(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// The marker as written to the remote: pretty JSON and a newline.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing strings and numbers cannot fail.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Reads a marker. Fields a later format adds are ignored; the ones
    /// read here must be there and valid.
    ///
    /// # Errors
    ///
    /// [`OwnerMarkerError`] if `bytes` is not a marker, or its dataset or
    /// GUID is malformed.
    pub fn parse(bytes: &[u8]) -> Result<Self, OwnerMarkerError> {
        let marker: Self =
            serde_json::from_slice(bytes).map_err(|e| OwnerMarkerError::Json(e.to_string()))?;
        if DatasetName::parse(&marker.dataset).is_err() {
            return Err(OwnerMarkerError::Dataset(marker.dataset));
        }
        if let Some(guid) = &marker.guid {
            if parse_guid(guid).is_none() {
                return Err(OwnerMarkerError::Guid(guid.clone()));
            }
        }
        Ok(marker)
    }
}

/// A dataset GUID from `zfs get -Hp -o value guid`: the decimal number, or
/// `None` for anything else (`-` where zfs has no GUID; without `-p`,
/// zfs-fuse prints it abbreviated, as `11.4E`, which identifies nothing).
#[must_use]
pub fn parse_guid(text: &str) -> Option<String> {
    let guid = text.trim();
    (!guid.is_empty() && guid.len() <= 20 && guid.bytes().all(|b| b.is_ascii_digit()))
        .then(|| guid.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn marker() -> OwnerMarker {
        OwnerMarker::new(
            &DatasetName::parse("tank/data").unwrap(),
            Some("5673547753606268478"),
            "2024-01-01T00:00:00Z",
        )
    }

    #[test]
    fn a_marker_reads_back_as_written() {
        let m = marker();
        assert_eq!(OwnerMarker::parse(&m.to_json()).unwrap(), m);
        let text = String::from_utf8(m.to_json()).unwrap();
        assert!(text.ends_with("}\n"), "{text}");
        assert!(text.contains(r#""guid": "5673547753606268478""#), "{text}");
        let none = OwnerMarker::new(
            &DatasetName::parse("tank/data").unwrap(),
            None,
            "2024-01-01T00:00:00Z",
        );
        assert!(String::from_utf8(none.to_json())
            .unwrap()
            .contains(r#""guid": null"#));
        assert_eq!(OwnerMarker::parse(&none.to_json()).unwrap(), none);
    }

    #[test]
    fn a_later_format_is_read_for_what_this_version_knows() {
        let later = br#"{"format": 2, "tool": "zfs2cloud", "dataset": "tank/a",
            "guid": "1", "written_at": "x", "tool_version": "9", "hosts": ["h"]}"#;
        let m = OwnerMarker::parse(later).unwrap();
        assert_eq!((m.format, m.dataset.as_str()), (2, "tank/a"));
    }

    #[test]
    fn anything_else_is_not_a_marker() {
        let cases: [(&[u8], &str); 5] = [
            (b"", "not an owner marker"),
            (b"garbage", "not an owner marker"),
            (br#"{"format": 1, "tool": "zfs2cloud"}"#, "missing field"),
            (
                br#"{"format": 1, "tool": "zfs2cloud", "dataset": "/x", "guid": null,
                    "written_at": "x", "tool_version": "1"}"#,
                "not a valid dataset name",
            ),
            (
                br#"{"format": 1, "tool": "zfs2cloud", "dataset": "t/x", "guid": "11.4E",
                    "written_at": "x", "tool_version": "1"}"#,
                "not a decimal number",
            ),
        ];
        for (bytes, why) in cases {
            let e = OwnerMarker::parse(bytes).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn only_a_whole_decimal_guid_is_one() {
        // zfs-fuse 0.7.0: `zfs get -Hp -o value guid` and, without -p, the
        // abbreviation that two datasets can share.
        assert_eq!(
            parse_guid("5673547753606268478\n").as_deref(),
            Some("5673547753606268478")
        );
        for not in ["11.4E\n", "-\n", "", "12a", "123456789012345678901"] {
            assert_eq!(parse_guid(not), None, "{not}");
        }
    }
}
