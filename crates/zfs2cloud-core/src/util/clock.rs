//! The current time, with an override for tests.

use chrono::{DateTime, Utc};

/// Environment variable that overrides the clock (RFC 3339, e.g.
/// `2024-01-01T00:00:00Z`). A testing aid: it makes snapshot names and
/// full/incremental decisions reproducible.
pub const ENV_NOW: &str = "ZFS2CLOUD_NOW";

/// `ZFS2CLOUD_NOW` is set but not RFC 3339.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{ENV_NOW}={value:?} is not an RFC 3339 time such as 2024-01-01T00:00:00Z: {reason}")]
pub struct ClockError {
    value: String,
    reason: String,
}

/// Now, or the time in `ZFS2CLOUD_NOW` if it is set.
///
/// # Errors
///
/// [`ClockError`] if `ZFS2CLOUD_NOW` is set but not RFC 3339.
pub fn now() -> Result<DateTime<Utc>, ClockError> {
    match std::env::var(ENV_NOW) {
        Ok(value) if !value.is_empty() => parse_now(&value),
        _ => Ok(Utc::now()),
    }
}

fn parse_now(value: &str) -> Result<DateTime<Utc>, ClockError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ClockError {
            value: value.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_rfc3339_with_offsets() {
        assert_eq!(
            parse_now("2024-01-01T01:00:00+01:00").unwrap(),
            parse_now("2024-01-01T00:00:00Z").unwrap()
        );
        assert!(parse_now("2024-01-01").is_err());
        assert!(parse_now("yesterday").is_err());
    }
}
