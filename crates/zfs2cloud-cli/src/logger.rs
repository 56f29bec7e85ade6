//! A minimal stderr logger for the `log` facade: the core library logs every
//! external command with its duration at `info`, shown with `-v`.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    level: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Only zfs2cloud's own records: a library's debug output (the HTTP
        // client's request lines) could show a ping URL's secret token.
        metadata.level() <= self.level && metadata.target().starts_with("zfs2cloud")
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        // Above the progress bars, if any are shown; control characters in
        // names (from files, zfs and the remote) are escaped there.
        crate::progress::console::line(&format!("{level}: {}", record.args()));
    }

    fn flush(&self) {}
}

/// Installs the logger: warnings by default, `-v` info, `-vv` debug.
pub fn init(verbosity: u8) {
    let level = match verbosity {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}
