//! The monitoring keys: `metrics_file` and `ping_url`. A ping URL may hold
//! a secret (a healthchecks.io UUID, an ntfy topic, an Uptime Kuma push
//! token), so it is only ever shown masked.

/// A `ping_url`: shown (`Debug`, `check-config`) only masked after the
/// host; [`PingUrl::expose`] gives it whole, for the request alone.
#[derive(Clone, PartialEq, Eq)]
pub struct PingUrl(String);

impl PingUrl {
    /// The whole URL, token included: for the HTTP request, never a message.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL masked after the host, for messages.
    #[must_use]
    pub fn masked(&self) -> String {
        mask_url(&self.0)
    }

    /// Checks `url` (see [`check_ping_url`]).
    pub(super) fn new(url: String) -> Result<Self, String> {
        check_ping_url(&url)?;
        Ok(Self(url))
    }
}

impl std::fmt::Debug for PingUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PingUrl({})", self.masked())
    }
}

impl serde::Serialize for PingUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

/// The longest `ping_url` accepted.
const MAX_PING_URL: usize = 2048;

/// Checks a `ping_url`: `http://` or `https://` with a host, and nothing
/// that would break a request line.
///
/// # Errors
///
/// A message saying what is wrong (without repeating the URL).
fn check_ping_url(url: &str) -> Result<(), String> {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Err("must start with http:// or https://".into());
    };
    if url.len() > MAX_PING_URL {
        return Err(format!("is longer than {MAX_PING_URL} characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    if authority(rest).is_empty() {
        return Err("has no host".into());
    }
    Ok(())
}

/// The part of a URL after the scheme up to the path, without any
/// `user:password@`.
fn authority(rest: &str) -> &str {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// `url` with everything after the host masked: `https://hc-ping.com/***`.
/// The path and query are where ping services keep their tokens, and a
/// `user:password@` is left out.
#[must_use]
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let host = authority(rest);
    if host.len() == rest.len() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/***")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError};

    const MINIMAL: &str = "dataset = \"tank/data\"\nintermediate_basedir = \"/var/lib/z\"\n\
                           remote = \"b2:bucket/data\"\npassphrase_file = \"/etc/z/pass\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{MINIMAL}{extra}"), Path::new("/etc/z/data.toml"))
    }

    #[test]
    fn the_keys_load_resolve_and_show_the_url_masked_in_a_config_that_loads_back() {
        let c = parse(
            "metrics_file = \"metrics/data.prom\"\n\
             ping_url = \"https://hc-ping.com/5f1c7a4e-secret\"\n",
        )
        .unwrap();
        assert_eq!(
            c.metrics_file.as_deref(),
            Some(Path::new("/etc/z/metrics/data.prom"))
        );
        let url = c.ping_url.clone().unwrap();
        assert_eq!(url.expose(), "https://hc-ping.com/5f1c7a4e-secret");
        assert!(!format!("{c:?}").contains("secret"));
        let shown = c.to_effective_toml().unwrap();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("ping_url = \"https://hc-ping.com/***\""),
            "{shown}"
        );
        // `[tools]` does not load back yet (issue 16, another change).
        let loadable = shown.split("[tools]").next().unwrap();
        let again = Config::parse(loadable, Path::new("/etc/z/data.toml")).unwrap();
        assert_eq!(again.ping_url.unwrap().expose(), "https://hc-ping.com/***");
        assert_eq!(again.metrics_file, c.metrics_file);
        let none = parse("").unwrap().to_effective_toml().unwrap();
        assert!(
            !none.contains("ping_url") && !none.contains("metrics_file"),
            "{none}"
        );
    }

    #[test]
    fn a_bad_ping_url_names_the_key_and_not_the_url() {
        let err = parse("ping_url = \"hc-ping.com/5f1c7a4e-secret\"\n").unwrap_err();
        assert_eq!(err.key(), Some("ping_url"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn a_ping_url_is_masked_after_the_host() {
        assert_eq!(
            mask_url("https://hc-ping.com/5f1c7a4e-0000-4000-8000-123456789abc"),
            "https://hc-ping.com/***"
        );
        assert_eq!(
            mask_url("http://user:pw@kuma.lan:3001/api/push/tok?status=up"),
            "http://kuma.lan:3001/***"
        );
        assert_eq!(mask_url("https://ntfy.sh"), "https://ntfy.sh");
        assert_eq!(mask_url("not a url"), "***");
    }

    #[test]
    fn a_ping_url_needs_http_and_a_host() {
        assert!(check_ping_url("https://hc-ping.com/uuid").is_ok());
        assert!(check_ping_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_ping_url("ftp://host/x").is_err());
        assert!(check_ping_url("https:///path").is_err());
        assert!(check_ping_url("https://host/a b").is_err());
    }
}
