//! The keys that choose what `zfs send` sends and whether zfs2cloud
//! encrypts it: `send_flags`, `encryption` and `allow_unencrypted`.

use crate::model::{Encryption, Mode, SendFlags};

use super::KeyError;

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
