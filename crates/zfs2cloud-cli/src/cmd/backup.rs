//! `zfs2cloud backup`: the whole configured sequence.

use std::time::Instant;

use crate::app::{out, App};

/// Runs the sequence, printing a line per finished step.
pub fn run(app: &App) -> anyhow::Result<()> {
    let started = Instant::now();
    app.backup().run(&mut |step| {
        out(&format!(
            "{:<20} {:>7.1}s  {}",
            step.step,
            step.duration.as_secs_f64(),
            step.summary
        ));
    })?;
    out(&format!(
        "backup of {} finished in {:.1}s",
        app.config.dataset,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
