//! How a send stream is compressed before encryption: the choice recorded in
//! the config and the manifest. The compressor itself is a stage
//! ([`crate::stages::zstd_compress`]).

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

/// zstd's default level: a good ratio at a speed well above a home uplink.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Accepted levels. 20–22 ("ultra") need windows of up to 128 MiB per
/// worker, which would break the constant-memory promise.
pub const ZSTD_LEVELS: RangeInclusive<i32> = 1..=19;

/// How the send stream is compressed before encryption; recorded in the
/// manifest as `compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// The stream is encrypted as `zfs send` wrote it (the original tool's
    /// format).
    #[default]
    None,
    /// zstd frames with a content checksum.
    Zstd,
}

impl Compression {
    /// The name used in the config and the manifest.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Zstd => "zstd",
        }
    }

    /// Reads a manifest's `compression` field. An empty field (manifests
    /// of the first format, which always meant none) is `None`.
    ///
    /// # Errors
    ///
    /// The unknown name, for a manifest written by a newer version.
    pub fn from_manifest(name: &str) -> Result<Self, String> {
        match name {
            "" | "none" => Ok(Self::None),
            "zstd" => Ok(Self::Zstd),
            other => Err(other.to_owned()),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compression settings of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionSettings {
    /// The algorithm.
    pub compression: Compression,
    /// zstd level, within [`ZSTD_LEVELS`].
    pub level: i32,
}

impl Default for CompressionSettings {
    fn default() -> Self {
        Self {
            compression: Compression::None,
            level: DEFAULT_ZSTD_LEVEL,
        }
    }
}
