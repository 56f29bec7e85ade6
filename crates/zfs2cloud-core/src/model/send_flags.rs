//! The `zfs send` flags a config chooses (`send_flags`), how a backup is
//! encrypted (`encryption`), and what the manifest and the pool record of
//! both.
//!
//! An incremental stream must be received onto a snapshot that came from a
//! stream of the same kind: a raw incremental (`-w`) only applies onto a
//! raw-received full, and a full sent without `-L` cannot take an
//! incremental sent with it without splitting its large blocks. So an
//! incremental is only ever based on a full sent with exactly the same set
//! of flags ([`SendFlags::compatible_with`]).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One `zfs send` flag zfs2cloud can pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendFlag {
    /// `-w`: the blocks as stored, still encrypted (native encryption) and
    /// compressed; the received dataset needs its key loaded.
    Raw,
    /// `-c`: compressed blocks as stored, not decompressed for the stream.
    Compressed,
    /// `-L`: blocks larger than 128 KiB stay large.
    LargeBlocks,
    /// `-e`: embedded (tiny, compressed-into-the-pointer) blocks stay
    /// embedded.
    Embedded,
    /// `-p`: the dataset's properties go with the stream.
    Properties,
}

impl SendFlag {
    /// Every flag, in the order of their `zfs send` options in
    /// [`SendFlags::args`].
    pub const ALL: [Self; 5] = [
        Self::Raw,
        Self::Compressed,
        Self::LargeBlocks,
        Self::Embedded,
        Self::Properties,
    ];

    /// The config and manifest name (`large_blocks`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Compressed => "compressed",
            Self::LargeBlocks => "large_blocks",
            Self::Embedded => "embedded",
            Self::Properties => "properties",
        }
    }

    /// The `zfs send` option letter (`w` for `-w`).
    #[must_use]
    pub fn letter(self) -> char {
        match self {
            Self::Raw => 'w',
            Self::Compressed => 'c',
            Self::LargeBlocks => 'L',
            Self::Embedded => 'e',
            Self::Properties => 'p',
        }
    }

    /// The flag called `name` in the config or a manifest.
    ///
    /// # Errors
    ///
    /// The message for an unknown name, listing the known ones.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown send flag {name:?}; known flags are {}",
                    known.join(", ")
                )
            })
    }
}

impl fmt::Display for SendFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`SendFlag`]s. Its textual form ([`fmt::Display`],
/// [`SendFlags::to_property`]) is stable: the `zfs send` options in the
/// order of [`SendFlag::ALL`] (`-w -c`), or `none` for the empty set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SendFlags(BTreeSet<SendFlag>);

/// The [`SendFlags::to_property`] text of the empty set.
const NO_FLAGS: &str = "none";

impl SendFlags {
    /// The set of `flags`.
    #[must_use]
    pub fn new(flags: impl IntoIterator<Item = SendFlag>) -> Self {
        Self(flags.into_iter().collect())
    }

    /// Parses config or manifest names (`["raw", "compressed"]`).
    ///
    /// # Errors
    ///
    /// The message for the first unknown name.
    pub fn parse_names<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        names
            .iter()
            .map(|n| SendFlag::parse(n.as_ref()))
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Self)
    }

    /// Whether there is no flag.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `flag` is in the set.
    #[must_use]
    pub fn contains(&self, flag: SendFlag) -> bool {
        self.0.contains(&flag)
    }

    /// Whether `-w` (raw) is in the set.
    #[must_use]
    pub fn is_raw(&self) -> bool {
        self.contains(SendFlag::Raw)
    }

    /// The flags, in [`SendFlag::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = SendFlag> + '_ {
        SendFlag::ALL.into_iter().filter(|f| self.0.contains(f))
    }

    /// The `zfs send` arguments, one per flag (`["-w", "-c"]`).
    #[must_use]
    pub fn args(&self) -> Vec<String> {
        self.iter().map(|f| format!("-{}", f.letter())).collect()
    }

    /// Whether an incremental sent with `self` may be based on a full
    /// sent with `base`: only if the sets are equal. Some unequal pairs
    /// would receive (`-p` alone changes no block), but a rule with
    /// exceptions is one more thing to get wrong at restore time; a flag
    /// change costs one extra full.
    #[must_use]
    pub fn compatible_with(&self, base: &Self) -> bool {
        self == base
    }

    /// The value of the `zfs2cloud:send_flags` user property: the
    /// [`fmt::Display`] form, `none` for the empty set.
    #[must_use]
    pub fn to_property(&self) -> String {
        self.to_string()
    }

    /// Reads [`SendFlags::to_property`]'s text back.
    ///
    /// # Errors
    ///
    /// The message for text that is not such a value.
    pub fn from_property(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == NO_FLAGS || text.is_empty() {
            return Ok(Self::default());
        }
        text.split_whitespace()
            .map(|arg| {
                let letter = arg.strip_prefix('-').and_then(|l| {
                    let mut chars = l.chars();
                    chars.next().filter(|_| chars.next().is_none())
                });
                SendFlag::ALL
                    .into_iter()
                    .find(|f| Some(f.letter()) == letter)
                    .ok_or_else(|| format!("{arg:?} is not a send flag zfs2cloud knows"))
            })
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Self)
    }
}

impl fmt::Display for SendFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str(NO_FLAGS);
        }
        f.write_str(&self.args().join(" "))
    }
}

/// User property recording the send flags of a snapshot's export, in
/// [`SendFlags::to_property`]'s form. Absent on exports made before send
/// flags existed, which were sent without any: absent reads as none.
pub const PROP_SEND_FLAGS: &str = "zfs2cloud:send_flags";

/// How an export's stream is encrypted (`encryption` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encryption {
    /// Symmetric gpg (AES256) with the passphrase of `passphrase_file`:
    /// the original tool's format.
    #[default]
    Gpg,
    /// No encryption by zfs2cloud: the chunks are the `zfs send` stream
    /// (compressed if configured). Meant for raw sends of natively
    /// encrypted datasets, whose stream is already encrypted.
    None,
    /// gpg public-key encryption to `recipient_files` and `recipients`:
    /// the backup host needs no secret, only the public keys; a restore
    /// needs one of the secret keys.
    #[serde(rename = "gpg-recipients", alias = "gpg_recipients")]
    GpgRecipients,
}

/// The manifest's `encryption` for [`Encryption::Gpg`].
pub const MANIFEST_GPG: &str = "gpg-symmetric-aes256";

/// The manifest's `encryption` for [`Encryption::GpgRecipients`]; the
/// manifest's `recipients` lists the keys.
pub const MANIFEST_GPG_RECIPIENTS: &str = "gpg-recipients";

impl Encryption {
    /// The config name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gpg => "gpg",
            Self::None => "none",
            Self::GpgRecipients => "gpg-recipients",
        }
    }

    /// The manifest's `encryption` field.
    #[must_use]
    pub fn manifest_name(self) -> &'static str {
        match self {
            Self::Gpg => MANIFEST_GPG,
            Self::None => "none",
            Self::GpgRecipients => MANIFEST_GPG_RECIPIENTS,
        }
    }

    /// Reads a manifest's `encryption` field. A backup without a manifest
    /// (the original tool's) or with an empty field is gpg's.
    ///
    /// # Errors
    ///
    /// The unknown name, for a manifest written by a newer version.
    pub fn from_manifest(name: &str) -> Result<Self, String> {
        match name {
            "" | MANIFEST_GPG => Ok(Self::Gpg),
            "none" => Ok(Self::None),
            MANIFEST_GPG_RECIPIENTS => Ok(Self::GpgRecipients),
            other => Err(other.to_owned()),
        }
    }
}

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_parse_and_print_in_a_stable_order() {
        let flags = SendFlags::parse_names(&["properties", "raw", "compressed", "raw"]).unwrap();
        assert_eq!(flags.args(), ["-w", "-c", "-p"]);
        assert_eq!(flags.to_string(), "-w -c -p");
        assert!(flags.is_raw());
        assert_eq!(SendFlags::default().to_string(), "none");
        let err = SendFlags::parse_names(&["raw", "dedup"]).unwrap_err();
        assert!(
            err.contains("\"dedup\"") && err.contains("large_blocks"),
            "{err}"
        );
    }

    #[test]
    fn the_property_form_reads_back() {
        for names in [
            &[][..],
            &["raw"][..],
            &["large_blocks", "embedded", "compressed"][..],
            &[
                "raw",
                "compressed",
                "large_blocks",
                "embedded",
                "properties",
            ][..],
        ] {
            let flags = SendFlags::parse_names(names).unwrap();
            assert_eq!(
                SendFlags::from_property(&flags.to_property()).unwrap(),
                flags
            );
        }
        assert_eq!(SendFlags::from_property("").unwrap(), SendFlags::default());
        for bad in ["-x", "w", "-wc", "raw"] {
            assert!(SendFlags::from_property(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_equal_sets_are_compatible() {
        let raw = SendFlags::new([SendFlag::Raw]);
        let none = SendFlags::default();
        assert!(raw.compatible_with(&raw.clone()));
        assert!(none.compatible_with(&SendFlags::default()));
        assert!(!raw.compatible_with(&none));
        assert!(!none.compatible_with(&raw));
        let rc = SendFlags::new([SendFlag::Raw, SendFlag::Compressed]);
        assert!(!rc.compatible_with(&raw));
    }

    #[test]
    fn serde_is_the_list_of_names() {
        let flags = SendFlags::new([SendFlag::LargeBlocks, SendFlag::Raw]);
        let json = serde_json::to_string(&flags).unwrap();
        assert_eq!(json, r#"["raw","large_blocks"]"#);
        assert_eq!(serde_json::from_str::<SendFlags>(&json).unwrap(), flags);
    }

    #[test]
    fn manifest_encryption_names() {
        assert_eq!(Encryption::from_manifest("").unwrap(), Encryption::Gpg);
        assert_eq!(
            Encryption::from_manifest(MANIFEST_GPG).unwrap(),
            Encryption::Gpg
        );
        assert_eq!(Encryption::from_manifest("none").unwrap(), Encryption::None);
        assert!(Encryption::from_manifest("age").is_err());
        for e in [Encryption::Gpg, Encryption::None, Encryption::GpgRecipients] {
            assert_eq!(Encryption::from_manifest(e.manifest_name()).unwrap(), e);
        }
    }
}
