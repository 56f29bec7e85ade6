//! What the config's unit tests share: a config of the required keys and
//! the ways to parse it with more.

use std::path::Path;

use super::{Config, ConfigError};

/// The required keys, without `passphrase_file` (which some modes do not
/// need).
pub(super) const REQUIRED: &str = r#"
dataset = "tank/data"
intermediate_basedir = "/var/lib/zfs2cloud"
remote = "b2:bucket/data"
"#;

/// The `passphrase_file` line that intermediate mode with gpg needs.
pub(super) const PASSPHRASE: &str = "passphrase_file = \"/etc/zfs2cloud/passphrase\"\n";

/// [`REQUIRED`] and `extra`, parsed as `/etc/zfs2cloud/data.toml`.
pub(super) fn parse_with(extra: &str) -> Result<Config, ConfigError> {
    Config::parse(
        &format!("{REQUIRED}{extra}"),
        Path::new("/etc/zfs2cloud/data.toml"),
    )
}

/// The key and message of the [`ConfigError::Invalid`] that
/// [`parse_with`] gives for `extra`; panics on anything else.
pub(super) fn invalid(extra: &str) -> (String, String) {
    match parse_with(extra) {
        Err(ConfigError::Invalid { key, message, .. }) => (key, message),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}
