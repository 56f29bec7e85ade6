//! `encryption = "gpg-recipients"`: the public keys a backup is encrypted
//! to, as gpg lists them, and the rules a key file must pass.
//!
//! gpg describes keys in its colon format (`--with-colons`); this module
//! reads that listing ([`parse_key_listing`]) and judges it
//! ([`check_recipient_keys`]) as pure functions, tested on listings
//! captured from gpg 2.2 (`tests/fixtures/gpg-keys`).

use std::collections::BTreeSet;

/// User property recording, on a full encrypted to public keys, their
/// fingerprints ([`recipients_property`]). Absent on every other full.
pub const PROP_RECIPIENTS: &str = "zfs2cloud:recipients";

/// Days before a key's expiry from which `check-config` warns.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// One key (a primary key with its subkeys) of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    /// The primary key's fingerprint (upper-case hex).
    pub fingerprint: String,
    /// The first user ID, for messages (may be empty).
    pub user_id: String,
    /// A `sec` record: the listing holds the secret key.
    pub secret: bool,
    /// The primary key and each subkey.
    pub parts: Vec<KeyPart>,
}

/// A primary key or a subkey of a [`ListedKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPart {
    /// Field 2: `e` expired, `r` revoked, `i` invalid, `d` disabled, …
    pub validity: char,
    /// Field 7: when it expires (seconds since the epoch), if it does.
    pub expires: Option<i64>,
    /// Field 12 has `e`: it can encrypt.
    pub encrypts: bool,
}

impl KeyPart {
    /// Usable at `now`: not expired, revoked, invalid or disabled.
    fn alive(&self, now: i64) -> bool {
        !matches!(self.validity, 'e' | 'r' | 'i' | 'd') && self.expires.is_none_or(|t| t > now)
    }
}

/// Reads gpg's `--with-colons` key listing: the `pub`/`sec` records, each
/// with its `fpr`, first `uid` and `sub`/`ssb` records. Other records are
/// ignored.
#[must_use]
pub fn parse_key_listing(text: &str) -> Vec<ListedKey> {
    let mut keys: Vec<ListedKey> = Vec::new();
    // Whether the last key or subkey record seen is a primary key: its
    // `fpr` is the key's fingerprint; a subkey's is not.
    let mut primary_fpr_due = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or_default();
        match field(0) {
            record @ ("pub" | "sec") => {
                keys.push(ListedKey {
                    fingerprint: String::new(),
                    user_id: String::new(),
                    secret: record == "sec",
                    parts: vec![key_part(&fields)],
                });
                primary_fpr_due = true;
            }
            "sub" | "ssb" => {
                if let Some(key) = keys.last_mut() {
                    key.parts.push(key_part(&fields));
                }
                primary_fpr_due = false;
            }
            "fpr" if primary_fpr_due => {
                if let Some(key) = keys.last_mut() {
                    key.fingerprint = field(9).to_ascii_uppercase();
                }
                primary_fpr_due = false;
            }
            "uid" => {
                if let Some(key) = keys.last_mut().filter(|k| k.user_id.is_empty()) {
                    key.user_id = unescape_colons(field(9));
                }
            }
            _ => {}
        }
    }
    keys
}

fn key_part(fields: &[&str]) -> KeyPart {
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    KeyPart {
        validity: field(1).chars().next().unwrap_or('-'),
        expires: field(6).parse().ok(),
        encrypts: field(11).contains('e'),
    }
}

/// gpg escapes `:` and other bytes in user IDs as `\x3a`.
fn unescape_colons(text: &str) -> String {
    text.replace("\\x3a", ":").replace("\\x5c", "\\")
}

/// A recipient key file that passed [`check_recipient_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientKeys {
    /// The primary keys' fingerprints, in the file's order.
    pub fingerprints: Vec<String>,
    /// Keys whose encryption expires within [`EXPIRY_WARNING_DAYS`]: the
    /// fingerprint and the days left.
    pub expiring: Vec<(String, i64)>,
}

/// Judges the keys of one recipient file at `now` (seconds since the
/// epoch): every key must be a public key that can encrypt now.
///
/// # Errors
///
/// What is wrong, for the first key that fails: no key at all, a secret
/// key, or no encryption (sub)key that is neither expired nor revoked.
pub fn check_recipient_keys(keys: &[ListedKey], now: i64) -> Result<RecipientKeys, String> {
    if keys.is_empty() {
        return Err("holds no OpenPGP key (export one with `gpg --armor --export FPR`)".into());
    }
    let mut out = RecipientKeys {
        fingerprints: Vec::new(),
        expiring: Vec::new(),
    };
    for key in keys {
        let expires = encryption_expiry(key, now)?;
        if let Some(days) = expires.map(|t| (t - now) / 86_400) {
            if days < EXPIRY_WARNING_DAYS {
                out.expiring.push((key.fingerprint.clone(), days));
            }
        }
        out.fingerprints.push(key.fingerprint.clone());
    }
    Ok(out)
}

/// When `key` stops being able to encrypt (`None`: never), if it can now.
fn encryption_expiry(key: &ListedKey, now: i64) -> Result<Option<i64>, String> {
    let name = describe(key);
    if key.secret {
        return Err(format!(
            "holds the secret key {name}; the backup host must only have the public key \
             (`gpg --armor --export FPR`), keep the secret key off it"
        ));
    }
    let Some(primary) = key.parts.first() else {
        return Err(format!("{name} has no key record"));
    };
    if !primary.alive(now) {
        let why = if primary.validity == 'r' {
            "revoked"
        } else {
            "expired"
        };
        return Err(format!("the key {name} is {why}"));
    }
    // The latest-expiring usable encryption (sub)key is the one that lasts;
    // the primary key's expiry ends them all.
    let last = key
        .parts
        .iter()
        .filter(|p| p.encrypts && p.alive(now))
        .map(|p| p.expires.unwrap_or(i64::MAX))
        .max()
        .ok_or_else(|| {
            format!("the key {name} has no usable encryption key (none, or all expired or revoked)")
        })?;
    let end = primary.expires.unwrap_or(i64::MAX).min(last);
    Ok((end != i64::MAX).then_some(end))
}

fn describe(key: &ListedKey) -> String {
    if key.user_id.is_empty() {
        key.fingerprint.clone()
    } else {
        format!("{} ({})", key.fingerprint, key.user_id)
    }
}

/// Whether `text` is a whole key fingerprint (40 hex digits for OpenPGP
/// v4, 64 for v5): short key IDs are refused, anyone can make a key with
/// the same one.
#[must_use]
pub fn is_fingerprint(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// The [`PROP_RECIPIENTS`] value: the fingerprints, sorted, comma-separated.
#[must_use]
pub fn recipients_property(fingerprints: &[String]) -> String {
    recipient_set(fingerprints)
        .into_iter()
        .collect::<Vec<_>>()
        .join(",")
}

/// The recipients as a set: upper-case, so that two spellings of one key
/// compare equal.
#[must_use]
pub fn recipient_set(fingerprints: &[String]) -> BTreeSet<String> {
    fingerprints
        .iter()
        .map(|f| f.trim().to_ascii_uppercase())
        .filter(|f| !f.is_empty())
        .collect()
}

/// Whether an incremental encrypted to `recipients` may be based on a full
/// encrypted to `base` (both empty: not encrypted to public keys): only
/// for the same keys. A chain must be decryptable by one secret: a full to
/// the passphrase under an incremental to a key (or to other keys) would
/// need both at restore, and the old secret would still open the new data.
#[must_use]
pub fn recipients_compatible(recipients: &[String], base: &[String]) -> bool {
    recipient_set(recipients) == recipient_set(base)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn fixture(name: &str) -> Vec<ListedKey> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gpg-keys")
            .join(name);
        parse_key_listing(&std::fs::read_to_string(path).unwrap())
    }

    /// When the fixtures were made (2026-12-02).
    const MADE: i64 = 1_796_183_771;
    const DAY: i64 = 86_400;

    #[test]
    fn a_public_key_with_an_encryption_subkey_passes() {
        let keys = fixture("encrypt.colons");
        assert_eq!(keys.len(), 1);
        assert_eq!(
            keys[0].fingerprint,
            "634AF28DB8567DDC2A359B486EB4C2A854F1F4DB"
        );
        assert_eq!(keys[0].user_id, "Test <t@example>");
        assert_eq!(keys[0].parts.len(), 2);
        let ok = check_recipient_keys(&keys, MADE).unwrap();
        assert_eq!(ok.fingerprints, [keys[0].fingerprint.clone()]);
        assert!(ok.expiring.is_empty());
    }

    #[test]
    fn every_key_of_a_file_is_a_recipient() {
        let ok = check_recipient_keys(&fixture("two-keys.colons"), MADE).unwrap();
        assert_eq!(
            ok.fingerprints,
            [
                "634AF28DB8567DDC2A359B486EB4C2A854F1F4DB",
                "FA341A40D7F133C96EF905B2C0EC28198A95D41B"
            ]
        );
    }

    #[test]
    fn unusable_files_are_refused_saying_why() {
        for (name, why) in [
            ("secret.colons", "holds the secret key"),
            ("sign-only.colons", "has no usable encryption key"),
            ("expired.colons", "is expired"),
            ("revoked.colons", "is revoked"),
        ] {
            let err = check_recipient_keys(&fixture(name), MADE).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
        let err = check_recipient_keys(&parse_key_listing(""), MADE).unwrap_err();
        assert!(err.contains("no OpenPGP key"), "{err}");
    }

    #[test]
    fn a_key_expiring_within_30_days_is_named_with_the_days_left() {
        let keys = fixture("expires-soon.colons");
        let ok = check_recipient_keys(&keys, MADE).unwrap();
        assert_eq!(ok.expiring, [(keys[0].fingerprint.clone(), 10)]);
        // 25 days earlier it had 35 days left: no warning.
        assert!(check_recipient_keys(&keys, MADE - 25 * DAY)
            .unwrap()
            .expiring
            .is_empty());
        // Once expired, it is refused.
        let err = check_recipient_keys(&keys, MADE + 11 * DAY).unwrap_err();
        assert!(err.contains("expired"), "{err}");
    }

    #[test]
    fn fingerprints_are_whole() {
        assert!(is_fingerprint("634AF28DB8567DDC2A359B486EB4C2A854F1F4DB"));
        assert!(is_fingerprint(&"ab".repeat(32)));
        for bad in [
            "6EB4C2A854F1F4DB",
            "0x634AF28DB8567DDC2A359B486EB4C2A854F1F4DB",
            "",
        ] {
            assert!(!is_fingerprint(bad), "{bad}");
        }
    }

    #[test]
    fn a_chain_keeps_one_set_of_recipients() {
        let a = "634AF28DB8567DDC2A359B486EB4C2A854F1F4DB".to_owned();
        let b = "FA341A40D7F133C96EF905B2C0EC28198A95D41B".to_owned();
        let one = [a.clone()];
        let both = [a.clone(), b.clone()];
        assert!(recipients_compatible(&[], &[]));
        assert!(recipients_compatible(
            &both,
            &[b.clone(), a.to_ascii_lowercase()]
        ));
        assert!(!recipients_compatible(&one, &[]), "passphrase → keys");
        assert!(!recipients_compatible(&[], &one), "keys → passphrase");
        assert!(!recipients_compatible(&one, &both));
        assert_eq!(
            recipients_property(&[b.clone(), a.clone()]),
            format!("{a},{b}")
        );
    }
}
