//! Progress as plain lines, for a log or a pipe (and `-q`): one when a
//! transfer or a step ends, and one every interval (a minute) while a
//! transfer runs. No escape codes, ever.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use zfs2cloud_core::Progress;

use super::console;
use crate::render::summary::human_bytes;

/// How often a running transfer prints a line.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// `ZFS2CLOUD_PROGRESS_INTERVAL`: seconds between the plain lines of a
/// running transfer (a testing aid; default 60).
pub const INTERVAL_ENV: &str = "ZFS2CLOUD_PROGRESS_INTERVAL";

/// The interval from `ZFS2CLOUD_PROGRESS_INTERVAL`, or the default.
pub fn interval_from_env() -> Duration {
    std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_INTERVAL, Duration::from_secs_f64)
}

/// A running transfer, as far as the lines need it.
#[derive(Debug, Clone)]
pub struct Phase {
    pub label: String,
    pub total: Option<u64>,
    pub done: u64,
    pub started: Instant,
    /// When the last line was printed (or the phase began).
    pub last_line: Instant,
}

impl Phase {
    pub fn new(label: &str, total: Option<u64>, now: Instant) -> Self {
        Self {
            label: label.to_owned(),
            total,
            done: 0,
            started: now,
            last_line: now,
        }
    }

    /// Whether a line is due at `now`: `interval` after the last one. Takes
    /// note of the line if so.
    pub fn line_due(&mut self, now: Instant, interval: Duration) -> bool {
        if now.duration_since(self.last_line) < interval {
            return false;
        }
        self.last_line = now;
        true
    }
}

/// Bytes per second over `elapsed`; `None` before anything can be said.
fn rate(done: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    (secs >= 0.5 && done > 0).then(|| done as f64 / secs)
}

/// `1.2 GiB of 40.0 GiB (3%), 45.0 MiB/s, ETA 14m` (parts that are not
/// known are left out): a running transfer.
pub fn running_line(label: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let mut line = format!("{label}: {}", human_bytes(done));
    let rate = rate(done, elapsed);
    if let Some(total) = total.filter(|t| *t > 0) {
        #[allow(clippy::cast_precision_loss)]
        let percent = (done as f64 / total as f64 * 100.0).floor();
        line.push_str(&format!(" of {} ({percent:.0}%)", human_bytes(total)));
    }
    if let Some(rate) = rate {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        line.push_str(&format!(", {}/s", human_bytes(rate as u64)));
        if let Some(total) = total.filter(|t| *t > done) {
            #[allow(clippy::cast_precision_loss)]
            let left = (total - done) as f64 / rate;
            line.push_str(&format!(
                ", ETA {}",
                human_duration(Duration::from_secs_f64(left))
            ));
        }
    }
    line
}

/// `64.0 MiB in 3.2s (20.0 MiB/s)`: a finished transfer; `done in 2.1s`
/// for a phase that counts no bytes (a listing).
pub fn finished_line(label: &str, done: u64, elapsed: Duration) -> String {
    if done == 0 {
        return format!("{label}: done in {:.1}s", elapsed.as_secs_f64());
    }
    let mut line = format!(
        "{label}: {} in {:.1}s",
        human_bytes(done),
        elapsed.as_secs_f64()
    );
    if let Some(rate) = rate(done, elapsed) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        line.push_str(&format!(" ({}/s)", human_bytes(rate as u64)));
    }
    line
}

/// `45s`, `14m`, `2h05m`, `3d04h`: an ETA, as precise as it is useful.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s.div_ceil(60)),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Plain lines on stderr.
#[derive(Debug)]
pub struct PlainProgress {
    interval: Duration,
    phase: Mutex<Option<Phase>>,
}

impl PlainProgress {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            phase: Mutex::new(None),
        }
    }

    fn with_phase(&self, f: impl FnOnce(&mut Option<Phase>)) {
        f(&mut self.phase.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

impl Progress for PlainProgress {
    fn begin(&self, label: &str, total: Option<u64>) {
        self.with_phase(|p| *p = Some(Phase::new(label, total, Instant::now())));
    }

    fn advance(&self, bytes: u64) {
        let interval = self.interval;
        self.with_phase(|p| {
            let Some(phase) = p.as_mut() else { return };
            phase.done += bytes;
            let now = Instant::now();
            if phase.line_due(now, interval) {
                let elapsed = now.duration_since(phase.started);
                console::line(&running_line(
                    &phase.label,
                    phase.done,
                    phase.total,
                    elapsed,
                ));
            }
        });
    }

    fn end(&self) {
        self.with_phase(|p| {
            if let Some(phase) = p.take() {
                console::line(&finished_line(
                    &phase.label,
                    phase.done,
                    phase.started.elapsed(),
                ));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn a_running_line_has_bytes_total_rate_and_eta() {
        let line = running_line(
            "export tank/data@20240101000000",
            1229 * MIB,
            Some(40 * GIB),
            Duration::from_secs(27),
        );
        assert_eq!(
            line,
            "export tank/data@20240101000000: 1.2 GiB of 40.0 GiB (3%), 45.5 MiB/s, ETA 15m"
        );
    }

    #[test]
    fn without_a_total_or_time_the_line_says_what_it_knows() {
        assert_eq!(
            running_line("export x", 5 * MIB, None, Duration::from_secs(5)),
            "export x: 5.0 MiB, 1.0 MiB/s"
        );
        assert_eq!(
            running_line("export x", 0, Some(GIB), Duration::ZERO),
            "export x: 0 B of 1.0 GiB (0%)"
        );
        // Past an estimate that was short: no ETA, no negative time.
        assert_eq!(
            running_line("export x", 2 * MIB, Some(MIB), Duration::from_secs(2)),
            "export x: 2.0 MiB of 1.0 MiB (200%), 1.0 MiB/s"
        );
    }

    #[test]
    fn a_finished_line_has_bytes_time_and_rate() {
        assert_eq!(
            finished_line(
                "upload 20240101000000-full",
                64 * MIB,
                Duration::from_millis(3200)
            ),
            "upload 20240101000000-full: 64.0 MiB in 3.2s (20.0 MiB/s)"
        );
        assert_eq!(
            finished_line("verify: listing r:x", 0, Duration::from_millis(2100)),
            "verify: listing r:x: done in 2.1s"
        );
    }

    #[test]
    fn durations_round_to_what_is_useful() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(60 * 13 + 1)), "14m");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d04h"
        );
    }

    #[test]
    fn a_line_is_due_once_per_interval_on_a_fake_clock() {
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let mut phase = Phase::new("export x", None, start);
        assert!(!phase.line_due(start, minute));
        assert!(!phase.line_due(start + Duration::from_secs(59), minute));
        assert!(phase.line_due(start + minute, minute));
        // The next one a minute after that line, not after the start.
        assert!(!phase.line_due(start + Duration::from_secs(119), minute));
        assert!(phase.line_due(start + Duration::from_secs(121), minute));
    }
}
