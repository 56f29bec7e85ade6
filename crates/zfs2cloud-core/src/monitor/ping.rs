//! Pings in the healthchecks.io convention: `<url>/start` when a backup
//! starts, `<url>` when it succeeds, `<url>/fail` with the error text when
//! it fails. healthchecks.io, Uptime Kuma push monitors and ntfy all take
//! them. A ping is a courtesy to the monitor: one that fails is logged as
//! a warning and never fails the backup, and it gives up quickly.

use std::time::Duration;

use crate::config::mask_url;

/// How long one attempt may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per ping; a timeout ends them at once.
const ATTEMPTS: u32 = 2;
/// The wait between attempts.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest body sent: the error text is cut there (healthchecks.io
/// keeps 100 KB, ntfy 4 KB of a message).
pub const MAX_PING_BODY: usize = 10_000;

/// Which ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingKind {
    /// The backup started.
    Start,
    /// It succeeded.
    Success,
    /// It failed (or was interrupted).
    Fail,
}

impl PingKind {
    /// The suffix appended to the URL's path.
    fn suffix(self) -> &'static str {
        match self {
            Self::Start => "/start",
            Self::Success => "",
            Self::Fail => "/fail",
        }
    }
}

/// Sends the pings of one run to one URL.
#[derive(Debug)]
pub struct Pinger {
    url: String,
    agent: ureq::Agent,
}

impl Pinger {
    /// A pinger for `url` (an `http://` or `https://` URL, as the config
    /// checked).
    #[must_use]
    pub fn new(url: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(true)
            .user_agent(concat!("zfs2cloud/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            url: url.to_owned(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Sends the `kind` ping with `body` (cut to [`MAX_PING_BODY`]) as a
    /// POST. A failure is logged as a warning, with the URL masked, and
    /// otherwise ignored; gives whether the ping arrived.
    pub fn ping(&self, kind: PingKind, body: &str) -> bool {
        let url = ping_url(&self.url, kind);
        let body = truncate(body, MAX_PING_BODY);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                std::thread::sleep(RETRY_DELAY);
            }
            match self.agent.post(&url).send(body) {
                Ok(_) => {
                    log::info!("pinged {}{}", mask_url(&self.url), kind.suffix());
                    return true;
                }
                Err(e) => {
                    let timed_out = matches!(e, ureq::Error::Timeout(_));
                    last = self.redact(&e.to_string());
                    if timed_out {
                        break;
                    }
                }
            }
        }
        log::warn!(
            "could not ping {} ({kind:?}; the backup goes on): {last}",
            mask_url(&self.url)
        );
        false
    }

    /// `text` without the URL's secret parts.
    fn redact(&self, text: &str) -> String {
        let path = self
            .url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("");
        let masked = text.replace(&self.url, &mask_url(&self.url));
        if path.len() > 1 {
            masked.replace(path, "/***")
        } else {
            masked
        }
    }
}

/// `url` with `kind`'s suffix on its path, before any query.
#[must_use]
pub fn ping_url(url: &str, kind: PingKind) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = if kind == PingKind::Success {
        base
    } else {
        base.trim_end_matches('/')
    };
    let mut out = format!("{base}{}", kind.suffix());
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suffix_goes_on_the_path_before_the_query() {
        let u = "https://hc-ping.com/uuid";
        assert_eq!(
            ping_url(u, PingKind::Start),
            "https://hc-ping.com/uuid/start"
        );
        assert_eq!(ping_url(u, PingKind::Success), u);
        assert_eq!(
            ping_url("https://k/api/push/tok?status=up&msg=OK", PingKind::Fail),
            "https://k/api/push/tok/fail?status=up&msg=OK"
        );
        assert_eq!(
            ping_url("https://h/uuid/", PingKind::Fail),
            "https://h/uuid/fail"
        );
    }

    #[test]
    fn a_long_body_is_cut_at_a_character() {
        let text = "é".repeat(MAX_PING_BODY);
        let cut = truncate(&text, MAX_PING_BODY);
        assert!(cut.len() <= MAX_PING_BODY && cut.len() >= MAX_PING_BODY - 1);
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn an_error_text_loses_the_token() {
        let p = Pinger::new("https://hc-ping.com/5f1c-secret");
        let text = p.redact("http://hc-ping.com/5f1c-secret/start: refused");
        assert!(!text.contains("secret"), "{text}");
    }
}
