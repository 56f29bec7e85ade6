//! The keys that choose what `zfs send` sends and whether zfs2cloud
//! encrypts it: `send_flags`, `encryption` and `allow_unencrypted`, and the
//! public keys of `encryption = "gpg-recipients"`: `recipient_files`,
//! `recipients` and `gpg_homedir`.

use crate::model::{is_fingerprint, Encryption, Mode, SendFlags};

use super::{KeyError, RawConfig};

/// `send_flags` (names), checked.
pub(super) fn send_flags(names: &[String]) -> Result<SendFlags, KeyError> {
    SendFlags::parse_names(names).map_err(|m| KeyError::new("send_flags", m))
}

/// `encryption = "none"` sends the stream as it is. That is only safe
/// unasked with a raw send (the blocks stay encrypted by ZFS native
/// encryption); anything else needs `allow_unencrypted = true`.
pub(super) fn check_encryption(
    encryption: Encryption,
    flags: &SendFlags,
    allow_unencrypted: bool,
) -> Result<(), KeyError> {
    if encryption == Encryption::None && !flags.is_raw() && !allow_unencrypted {
        return Err(KeyError::new(
            "encryption",
            "= \"none\" would upload the dataset's data unencrypted. Either send it raw \
             (send_flags = [\"raw\"]) from a dataset with ZFS native encryption, whose blocks \
             stay encrypted, or, if unencrypted backups are what you want, also set \
             allow_unencrypted = true",
        ));
    }
    Ok(())
}

/// The keys of `encryption = "gpg-recipients"`: there, at least one
/// public key (whole fingerprints only) and no passphrase on the host;
/// elsewhere, none of them.
pub(super) fn check_recipients(raw: &RawConfig) -> Result<(), KeyError> {
    if raw.encryption != Encryption::GpgRecipients {
        return only_with_recipients(raw);
    }
    if raw.recipient_files.is_empty() && raw.recipients.is_empty() {
        return Err(KeyError::new(
            "recipient_files",
            "is missing: encryption = \"gpg-recipients\" encrypts to public keys; give \
             recipient_files (ASCII-armored public key files) or recipients (fingerprints \
             of keys in gpg_homedir's keyring)",
        ));
    }
    if let Some(bad) = raw.recipients.iter().find(|f| !is_fingerprint(f)) {
        return Err(KeyError::new(
            "recipients",
            format!(
                "{bad:?} is not a whole key fingerprint (40 hex digits, as `gpg --with-colons \
                 --fingerprint` prints it); short key IDs are refused"
            ),
        ));
    }
    if raw.gpg_homedir.is_some() && raw.recipients.is_empty() {
        return Err(KeyError::new(
            "gpg_homedir",
            "only applies with recipients (the keyring they are looked up in); recipient_files \
             need no keyring",
        ));
    }
    if raw.passphrase_file.is_some() {
        return Err(KeyError::new(
            "passphrase_file",
            "must not be set with encryption = \"gpg-recipients\": the point is that the \
             backup host holds no secret that decrypts the backups. Move the passphrase off \
             this host, keep it with the secret key, and give it to restore with \
             --passphrase-file for the older backups encrypted with it",
        ));
    }
    Ok(())
}

/// `recipient_files`, `recipients` and `gpg_homedir` without
/// `gpg-recipients`: refused rather than ignored.
fn only_with_recipients(raw: &RawConfig) -> Result<(), KeyError> {
    let set = [
        ("recipient_files", !raw.recipient_files.is_empty()),
        ("recipients", !raw.recipients.is_empty()),
        ("gpg_homedir", raw.gpg_homedir.is_some()),
    ];
    match set.into_iter().find(|(_, present)| *present) {
        Some((key, _)) => Err(KeyError::new(
            key,
            format!(
                "only applies with encryption = \"gpg-recipients\" (this config has \"{}\")",
                raw.encryption
            ),
        )),
        None => Ok(()),
    }
}

/// Whether the mode and encryption need `passphrase_file`.
pub(super) fn needs_passphrase(mode: Mode, encryption: Encryption) -> bool {
    mode == Mode::Intermediate && encryption == Encryption::Gpg
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use crate::config::testing::{invalid, parse_with as parse, PASSPHRASE};
    use crate::model::{Encryption, SendFlag, SendFlags};

    #[test]
    fn the_defaults_are_todays_behaviour() {
        let c = parse(PASSPHRASE).unwrap();
        assert!(c.send_flags.is_empty());
        assert_eq!(c.encryption, Encryption::Gpg);
        assert!(!c.allow_unencrypted);
    }

    #[test]
    fn send_flags_take_every_known_name() {
        let c = parse(&format!(
            "{PASSPHRASE}send_flags = [\"raw\", \"compressed\", \"large_blocks\", \"embedded\", \"properties\"]\n"
        ))
        .unwrap();
        assert_eq!(c.send_flags, SendFlags::new(SendFlag::ALL));
        assert_eq!(c.send_flags.args(), ["-w", "-c", "-L", "-e", "-p"]);
    }

    #[test]
    fn an_unknown_flag_names_the_key_and_the_known_flags() {
        let (key, message) = invalid(&format!("{PASSPHRASE}send_flags = [\"raw\", \"dedup\"]\n"));
        assert_eq!(key, "send_flags");
        assert!(
            message.contains("\"dedup\"") && message.contains("large_blocks"),
            "{message}"
        );
        // A wrong type is a parse error that names the key too.
        let err = parse(&format!("{PASSPHRASE}send_flags = \"raw\"\n")).unwrap_err();
        assert!(err.to_string().contains("send_flags"), "{err}");
    }

    #[test]
    fn encryption_none_needs_raw_or_an_explicit_allow() {
        let (key, message) = invalid("encryption = \"none\"\n");
        assert_eq!(key, "encryption");
        assert!(
            message.contains("send_flags = [\"raw\"]")
                && message.contains("allow_unencrypted = true"),
            "both ways out are named: {message}"
        );
        // Raw: the stream is ZFS-encrypted already; no passphrase needed.
        let c = parse("encryption = \"none\"\nsend_flags = [\"raw\"]\n").unwrap();
        assert_eq!(c.encryption, Encryption::None);
        assert!(c.passphrase_file.is_none());
        // Explicitly unencrypted.
        let c = parse("encryption = \"none\"\nallow_unencrypted = true\n").unwrap();
        assert!(c.allow_unencrypted && c.send_flags.is_empty());
        // Unknown encryption names are parse errors naming the key.
        let err = parse("encryption = \"age\"\n").unwrap_err();
        assert!(err.to_string().contains("encryption"), "{err}");
    }

    #[test]
    fn gpg_still_needs_the_passphrase_file() {
        assert_eq!(invalid("send_flags = [\"raw\"]\n").0, "passphrase_file");
        assert_eq!(invalid("encryption = \"gpg\"\n").0, "passphrase_file");
    }

    const FPR: &str = "634AF28DB8567DDC2A359B486EB4C2A854F1F4DB";

    #[test]
    fn recipients_need_a_key_and_no_passphrase() {
        let c = parse("encryption = \"gpg-recipients\"\nrecipient_files = [\"backup-key.asc\"]\n")
            .unwrap();
        assert_eq!(c.encryption, Encryption::GpgRecipients);
        assert_eq!(
            c.recipient_files,
            [std::path::Path::new("/etc/zfs2cloud/backup-key.asc")]
        );
        assert!(c.passphrase_file.is_none());
        let c = parse(&format!(
            "encryption = \"gpg-recipients\"\nrecipients = [\"{}\"]\ngpg_homedir = \"gnupg\"\n",
            FPR.to_ascii_lowercase()
        ))
        .unwrap();
        assert_eq!(c.recipients, [FPR]);
        assert_eq!(
            c.gpg_homedir.as_deref(),
            Some(std::path::Path::new("/etc/zfs2cloud/gnupg"))
        );
        let shown = c.to_effective_toml().unwrap();
        assert!(shown.contains("encryption = \"gpg-recipients\""), "{shown}");
        assert!(shown.contains(FPR), "{shown}");
    }

    #[test]
    fn recipient_mistakes_name_their_key() {
        let with = |extra: &str| format!("encryption = \"gpg-recipients\"\n{extra}");
        let (key, message) = invalid(&with(""));
        assert_eq!(key, "recipient_files");
        assert!(message.contains("recipients"), "{message}");
        let (key, message) = invalid(&with("recipients = [\"6EB4C2A854F1F4DB\"]\n"));
        assert_eq!(key, "recipients");
        assert!(message.contains("short key IDs"), "{message}");
        let (key, message) = invalid(&with(&format!(
            "recipient_files = [\"k.asc\"]\n{PASSPHRASE}"
        )));
        assert_eq!(key, "passphrase_file");
        assert!(message.contains("--passphrase-file"), "{message}");
        let (key, _) = invalid(&with(
            "recipient_files = [\"k.asc\"]\ngpg_homedir = \"g\"\n",
        ));
        assert_eq!(key, "gpg_homedir");
        // Without gpg-recipients, the keys are refused, not ignored.
        for extra in [
            "recipient_files = [\"k.asc\"]\n".to_owned(),
            format!("recipients = [\"{FPR}\"]\n"),
            "gpg_homedir = \"g\"\n".to_owned(),
        ] {
            let (key, message) = invalid(&format!("{PASSPHRASE}{extra}"));
            assert!(extra.starts_with(&key), "{extra}: {key}");
            assert!(message.contains("only applies with"), "{message}");
        }
    }

    #[test]
    fn check_config_shows_the_new_keys() {
        let c = parse("encryption = \"none\"\nsend_flags = [\"compressed\", \"raw\"]\n").unwrap();
        let shown = c.to_effective_toml().unwrap();
        assert!(
            shown.contains("send_flags = [\n    \"raw\",\n    \"compressed\",\n]")
                || shown.contains("send_flags = [\"raw\", \"compressed\"]"),
            "{shown}"
        );
        assert!(shown.contains("encryption = \"none\""), "{shown}");
    }
}
