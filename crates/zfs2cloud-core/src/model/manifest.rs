//! The on-disk and remote format of one backup: `manifest.json` and the
//! `sha256sum -c` list `SHA256SUMS`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::send_flags::SendFlags;
use super::snapshot::ExportKind;

/// File name of the manifest inside an export directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// File name of the `sha256sum -c` checksum list inside an export directory.
pub const SHA256SUMS_FILE: &str = "SHA256SUMS";

/// The manifest format this version writes.
pub const MANIFEST_FORMAT: u32 = 1;

/// One chunk in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// File name inside the export directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

/// `manifest.json`: what an export is, and how to check it. On the remote, a
/// present manifest means a complete backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format, [`MANIFEST_FORMAT`].
    pub format: u32,
    /// `zfs2cloud`.
    pub tool: String,
    /// The version of zfs2cloud that wrote it.
    pub tool_version: String,
    /// The dataset, e.g. `tank/data`.
    pub dataset: String,
    /// The snapshot (part after `@`).
    pub snapshot: String,
    /// Full or incremental.
    pub kind: ExportKind,
    /// The base snapshot (part after `@`) of an incremental.
    pub base: Option<String>,
    /// When the export was made (RFC 3339, UTC).
    pub created_at: String,
    /// How the stream is encrypted: `gpg-symmetric-aes256`,
    /// `gpg-recipients` (to the public keys of `recipients`), or `none`
    /// (`encryption = "none"`: the chunks are the send stream itself).
    pub encryption: String,
    /// How the stream is compressed before encryption: `none`.
    pub compression: String,
    /// The configured chunk size in bytes.
    pub split_size: u64,
    /// Total size of the encrypted stream: the sum of the chunk sizes.
    pub total_size: u64,
    /// The chunks, in stream order.
    pub chunks: Vec<ChunkEntry>,
    /// The `zfs send` flags the stream was made with (`["raw",
    /// "compressed"]`). Absent in manifests written before send flags
    /// existed, which were all sent without any.
    #[serde(default)]
    pub send_flags: SendFlags,
    /// The export's level (0: a full; see `incremental_strategy`). Absent
    /// in manifests from before levels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
    /// With `gpg-recipients`: the fingerprints of the primary keys the
    /// stream is encrypted to; any one of their secret keys decrypts it.
    /// Absent otherwise, and in manifests from before recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
}

impl Manifest {
    /// The bytes of the chunks named in `names` (other names are ignored).
    #[must_use]
    pub fn chunk_bytes_among(&self, names: &[String]) -> u64 {
        self.chunks
            .iter()
            .filter(|c| names.contains(&c.name))
            .map(|c| c.size)
            .sum()
    }
}

/// Lower-case hex of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The `sha256sum -c` format: `<hex>  <name>` per line.
#[must_use]
pub fn sha256sums_text(chunks: &[ChunkEntry]) -> String {
    chunks
        .iter()
        .map(|c| format!("{}  {}\n", c.sha256, c.name))
        .collect()
}

/// Reads and checks a local export's manifest.
pub(crate) fn read_manifest(dir: &Path) -> std::io::Result<Manifest> {
    let bytes = std::fs::read(dir.join(MANIFEST_FILE))?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A manifest as versions before send flags wrote it: no `send_flags`.
    const BEFORE_SEND_FLAGS: &str = r#"{
  "format": 1, "tool": "zfs2cloud", "tool_version": "0.1.0",
  "dataset": "tank/data", "snapshot": "20240101000000", "kind": "full",
  "base": null, "created_at": "2024-01-01T00:00:00Z",
  "encryption": "gpg-symmetric-aes256", "compression": "none",
  "split_size": 1024, "total_size": 3,
  "chunks": [{"name": "tank-data@20240101000000.zfs.gpg.0000", "size": 3, "sha256": "00"}]
}"#;

    #[test]
    fn a_manifest_without_send_flags_loads_as_sent_without_any() {
        let m: Manifest = serde_json::from_str(BEFORE_SEND_FLAGS).unwrap();
        assert!(m.send_flags.is_empty());
        assert_eq!(m.chunks.len(), 1);
        // Written back, the flags are a list of names.
        let mut m = m;
        m.send_flags = SendFlags::parse_names(&["raw"]).unwrap();
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["send_flags"], serde_json::json!(["raw"]));
        // No recipients: the field is left out, as before it existed.
        assert!(m.recipients.is_empty());
        assert!(json.get("recipients").is_none());
        m.recipients = vec!["634AF28DB8567DDC2A359B486EB4C2A854F1F4DB".into()];
        let back: Manifest = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
