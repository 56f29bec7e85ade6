//! The bottom layer: names, step names, snapshot metadata, and the formats
//! on local disk and on the remote (manifest, layout, `SHA256SUMS`, the
//! owner marker). Pure data with its validation; it imports nothing else
//! from the crate.

mod bwlimit;
mod compression;
mod escape;
mod filemode;
mod layout;
mod manifest;
mod names;
mod owner;
mod recipients;
mod remote;
mod secret;
mod send_flags;
mod snapshot;
mod steps;
#[cfg(test)]
pub(crate) mod testing;
mod tree;

pub use bwlimit::*;
pub use compression::*;
pub use escape::*;
pub use filemode::*;
pub use layout::*;
pub use manifest::*;
pub use names::*;
pub use owner::*;
pub use recipients::*;
pub use remote::*;
pub use secret::*;
pub use send_flags::*;
pub use snapshot::*;
pub use steps::*;
pub use tree::*;
