//! zfs2cloud's library: back up ZFS datasets to any rclone remote through
//! snapshots.
//!
//! Placeholder crate docs; rewritten below.

mod config;
mod model;
mod ops;
mod policy;
mod process;
mod stages;
mod util;

pub use config::*;
pub use model::*;
pub use ops::backup::*;
pub use ops::catalog::*;
pub use ops::export::*;
pub use ops::filemode::*;
pub use ops::lock::*;
pub use ops::prune::*;
pub use ops::restore::*;
pub use ops::snapshot::*;
pub use ops::status::*;
pub use ops::upload::*;
pub use ops::verify::*;
pub use policy::*;
pub use process::*;
pub use stages::*;
pub use util::*;
