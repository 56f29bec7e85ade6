//! Human-readable renderings of what core returns.

pub mod json;
pub mod prune_remote;
pub mod status;
pub mod summary;
pub mod tree;
