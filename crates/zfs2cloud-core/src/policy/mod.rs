//! Pure decisions: what to export and on which base, which snapshots and
//! exports retention keeps, which remote backups pruning keeps, which
//! backups a restore replays, whether a listed backup is whole, and whose a
//! remote directory is. Nothing here runs a command or touches a file, so
//! every rule is unit-tested on plain data.

mod calendar;
mod chains;
mod dependencies;
mod export_plan;
mod ownership;
mod remote_prune;
mod restore_plan;
mod retention;
mod tree;

pub use calendar::*;
pub use chains::*;
pub use dependencies::*;
pub use export_plan::*;
pub use ownership::*;
pub use remote_prune::*;
pub use restore_plan::*;
pub use retention::*;
pub use tree::*;
