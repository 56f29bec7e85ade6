//! One module per subcommand: each parses nothing, calls core and renders
//! the result on stdout.

pub mod backup;
pub mod check_config;
pub mod completions;
pub mod export;
pub mod filemode;
pub mod init;
pub mod jobs;
pub mod man;
pub mod prune;
pub mod restore;
pub mod snapshot;
pub mod status;
pub mod upload;
pub mod verify;
