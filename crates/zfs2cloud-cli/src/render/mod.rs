//! Human-readable renderings of what core returns.

pub mod status;
pub mod summary;
pub mod tree;
