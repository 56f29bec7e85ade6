//! The live display on a terminal: one bar for the running transfer
//! (bytes, total, rate, ETA and the current chunk; a spinner where the
//! total is unknown) and, while a pipelined export uploads, a line per
//! upload worker. Log lines and step lines are printed above it.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use zfs2cloud_core::{Progress, WorkerState};

use super::console;
use super::plain::finished_line;
use crate::render::summary::human_bytes;

const WITH_TOTAL: &str = "{spinner} {prefix}: {binary_bytes}/{binary_total_bytes} ({percent}%) \
                          {binary_bytes_per_sec}, ETA {eta} {wide_msg}";
const WITHOUT_TOTAL: &str = "{spinner} {prefix}: {binary_bytes}, {binary_bytes_per_sec}, \
                             {elapsed} {wide_msg}";

/// Bars drawn on stderr.
#[derive(Debug)]
pub struct Bars {
    multi: MultiProgress,
    shown: Mutex<Shown>,
}

#[derive(Debug, Default)]
struct Shown {
    main: Option<(ProgressBar, Instant)>,
    workers: Vec<ProgressBar>,
}

impl Bars {
    pub fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        console::set_bars(Some(multi.clone()));
        Self {
            multi,
            shown: Mutex::new(Shown::default()),
        }
    }

    fn shown(&self) -> MutexGuard<'_, Shown> {
        self.shown.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn worker_bar(&self, shown: &mut Shown, index: usize) -> ProgressBar {
        while shown.workers.len() <= index {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(style("  {msg}"));
            shown.workers.push(bar);
        }
        shown.workers[index].clone()
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        console::set_bars(None);
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// What a worker's line says.
pub fn worker_text(index: usize, state: WorkerState<'_>) -> String {
    let n = index + 1;
    match state {
        WorkerState::Idle => format!("worker {n}: idle"),
        WorkerState::Uploading { chunk, size } => {
            format!("worker {n}: uploading {chunk} ({})", human_bytes(size))
        }
        WorkerState::Retrying { chunk, attempt } => {
            format!("worker {n}: retrying {chunk} (attempt {attempt})")
        }
        WorkerState::Done => format!("worker {n}: done"),
    }
}

impl Progress for Bars {
    fn begin(&self, label: &str, total: Option<u64>) {
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(style(WITH_TOTAL)),
            None => ProgressBar::new_spinner().with_style(style(WITHOUT_TOTAL)),
        };
        bar.set_prefix(label.to_owned());
        let bar = self.multi.insert(0, bar);
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Some((old, _)) = self.shown().main.replace((bar, Instant::now())) {
            old.finish_and_clear();
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some((bar, _)) = &self.shown().main {
            bar.inc(bytes);
        }
    }

    fn chunk(&self, name: &str) {
        if let Some((bar, _)) = &self.shown().main {
            bar.set_message(name.to_owned());
        }
    }

    fn worker(&self, index: usize, state: WorkerState<'_>) {
        let mut shown = self.shown();
        let bar = self.worker_bar(&mut shown, index);
        bar.set_message(worker_text(index, state));
    }

    fn end(&self) {
        let (main, workers) = {
            let mut shown = self.shown();
            (shown.main.take(), std::mem::take(&mut shown.workers))
        };
        for bar in workers {
            bar.finish_and_clear();
        }
        if let Some((bar, started)) = main {
            let label = bar.prefix();
            let done = bar.position();
            bar.finish_and_clear();
            console::line(&finished_line(&label, done, started.elapsed()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_lines() {
        let up = WorkerState::Uploading {
            chunk: "data.zfs.gpg.0007",
            size: 128 << 20,
        };
        assert_eq!(
            worker_text(1, up),
            "worker 2: uploading data.zfs.gpg.0007 (128.0 MiB)"
        );
        assert_eq!(worker_text(0, WorkerState::Idle), "worker 1: idle");
        let retry = WorkerState::Retrying {
            chunk: "x.0001",
            attempt: 2,
        };
        assert_eq!(
            worker_text(2, retry),
            "worker 3: retrying x.0001 (attempt 2)"
        );
    }
}
