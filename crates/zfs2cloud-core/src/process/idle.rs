//! Telling a child that makes no progress from one that is slow: its I/O
//! counters (`rchar` + `wchar` in `/proc/<pid>/io`) stand still.
//!
//! The counters are the kernel's, so this works for any program whatever it
//! prints. What the child writes to its stderr does not count: rclone with
//! `-v` prints its stats every minute even when no byte moves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the counters are read: often enough that a stall is seen
/// soon after the limit, rarely enough to cost nothing.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// The pure decision: given samples of a child's activity over time, has it
/// done nothing for `limit`?
#[derive(Debug, Clone)]
pub(super) struct IdleWatch {
    limit: Duration,
    /// The highest activity seen. A high-water mark, not the last value,
    /// so that a sample that runs ahead of the stderr count and then falls
    /// back is not taken for progress twice.
    high_water: u64,
    since: Instant,
}

impl IdleWatch {
    /// A watch that starts at `activity`, seen at `now`.
    pub(super) fn new(limit: Duration, activity: u64, now: Instant) -> Self {
        Self {
            limit,
            high_water: activity,
            since: now,
        }
    }

    /// Records `activity` seen at `now`; whether it has not grown for the
    /// limit.
    pub(super) fn stalled(&mut self, activity: u64, now: Instant) -> bool {
        if activity > self.high_water {
            self.high_water = activity;
            self.since = now;
            return false;
        }
        now.saturating_duration_since(self.since) >= self.limit
    }
}

/// `rchar` + `wchar` from the text of `/proc/<pid>/io`; `None` if either
/// is missing.
fn parse_io(text: &str) -> Option<u64> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some(field("rchar:")?.saturating_add(field("wchar:")?))
}

fn read_io(pid: u32) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    parse_io(&text).ok_or_else(|| std::io::Error::other("no rchar/wchar in it"))
}

/// The process group in the text of `/proc/<pid>/stat` (the fifth field;
/// the command name before it may hold spaces and parentheses, so the
/// fields are counted after the last `)`).
fn parse_pgrp(stat: &str) -> Option<u32> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(2)?.parse().ok()
}

/// [`read_io`] summed over the process group `leader` leads: the child
/// and what it started. A wrapper script that runs rclone without `exec`
/// does no I/O of its own while rclone works; its rclone is in its group
/// (every child of zfs2cloud leads a group of its own).
fn read_group_io(leader: u32) -> std::io::Result<u64> {
    let mut total = read_io(leader)?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let in_group = pid != leader
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_pgrp(&stat))
                == Some(leader);
        if in_group {
            // One that exits meanwhile simply no longer counts.
            total = total.saturating_add(read_io(pid).unwrap_or(0));
        }
    }
    Ok(total)
}

/// Watches one running child for a stall.
#[derive(Debug)]
pub(super) struct IdleMonitor {
    pid: u32,
    /// Bytes read from the child's stderr so far.
    stderr_bytes: Arc<AtomicU64>,
    watch: IdleWatch,
    next_sample: Instant,
}

impl IdleMonitor {
    /// Starts watching `pid`; `None` (with a debug log) where its counters
    /// cannot be read (not Linux, no permission), which leaves it unwatched.
    pub(super) fn start(
        pid: u32,
        limit: Duration,
        stderr_bytes: Arc<AtomicU64>,
        command: &str,
    ) -> Option<Self> {
        let now = Instant::now();
        let activity = match read_group_io(pid) {
            Ok(total) => total.saturating_sub(stderr_bytes.load(Ordering::Relaxed)),
            Err(e) => {
                log::debug!(
                    "cannot read /proc/{pid}/io ({e}); `{command}` is not watched for stalls"
                );
                return None;
            }
        };
        Some(Self {
            pid,
            stderr_bytes,
            watch: IdleWatch::new(limit, activity, now),
            next_sample: now + SAMPLE_INTERVAL,
        })
    }

    /// Whether the child has made no progress for the limit. A sample that
    /// cannot be read (the child is exiting) decides nothing.
    pub(super) fn stalled(&mut self, now: Instant) -> bool {
        if now < self.next_sample {
            return false;
        }
        self.next_sample = now + SAMPLE_INTERVAL;
        // stderr's count first, then the counters: so it never subtracts
        // more than the child had written to stderr by then.
        let stderr = self.stderr_bytes.load(Ordering::Relaxed);
        read_group_io(self.pid)
            .is_ok_and(|total| self.watch.stalled(total.saturating_sub(stderr), now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    /// A watch started now at activity 100.
    fn watch_from_100() -> (Instant, IdleWatch) {
        let start = Instant::now();
        (start, IdleWatch::new(LIMIT, 100, start))
    }

    #[test]
    fn steady_progress_never_stalls() {
        let (start, mut watch) = watch_from_100();
        for (i, secs) in (1..100).step_by(9).enumerate() {
            assert!(!watch.stalled(200 + i as u64, at(start, secs)), "{secs}s");
        }
    }

    #[test]
    fn no_change_for_the_limit_is_a_stall() {
        let (start, mut watch) = watch_from_100();
        assert!(!watch.stalled(100, at(start, 5)));
        assert!(!watch.stalled(100, at(start, 9)));
        assert!(watch.stalled(100, at(start, 10)));
    }

    #[test]
    fn progress_restarts_the_clock() {
        let (start, mut watch) = watch_from_100();
        assert!(!watch.stalled(150, at(start, 8)));
        assert!(!watch.stalled(150, at(start, 17)), "only 9s since 150");
        assert!(watch.stalled(150, at(start, 18)));
    }

    #[test]
    fn activity_that_falls_back_is_not_progress() {
        // A sample taken while stderr output was not yet counted runs
        // ahead by a line, then falls back: the line is no progress after
        // its first sighting.
        let (start, mut watch) = watch_from_100();
        assert!(!watch.stalled(180, at(start, 1)));
        assert!(!watch.stalled(100, at(start, 5)));
        assert!(!watch.stalled(180, at(start, 9)));
        assert!(watch.stalled(100, at(start, 11)));
    }

    #[test]
    fn reads_rchar_and_wchar() {
        // Captured from Linux 6.1.
        let text = "rchar: 4096\nwchar: 512\nsyscr: 9\nsyscw: 2\nread_bytes: 0\n\
                    write_bytes: 0\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(text), Some(4608));
        assert_eq!(parse_io("rchar: 1\n"), None);
        assert_eq!(parse_io(""), None);
    }

    #[test]
    fn reads_the_process_group_after_the_command_name() {
        // Captured from Linux 6.1 (`/proc/<pid>/stat` of a process named
        // "a) b (c", whose group is 4242), cut after the group.
        assert_eq!(parse_pgrp("4300 (a) b (c) S 17 4242 4242 0 -1"), Some(4242));
        assert_eq!(parse_pgrp("4300 (rclone) S 1 4300 4300 0 -1"), Some(4300));
        assert_eq!(parse_pgrp("garbage"), None);
    }

    #[test]
    fn this_process_can_be_watched_where_proc_has_io() {
        if read_io(std::process::id()).is_err() {
            return;
        }
        let monitor = IdleMonitor::start(
            std::process::id(),
            LIMIT,
            Arc::new(AtomicU64::new(0)),
            "test",
        );
        assert!(monitor.is_some());
    }
}
