//! Operations: the steps of a backup (snapshot, export, upload, prune, remote
//! prune, file mode, verify), restore and status, built from the stage traits, the
//! policy and the config. `backup` runs a sequence of them.

pub mod backup;
pub mod catalog;
pub mod check_online;
pub mod export;
pub mod filemode;
pub mod lock;
pub mod prune;
pub mod prune_remote;
pub mod remote_tree;
pub mod report;
pub mod restore;
pub mod snapshot;
pub mod status;
pub mod upload;
pub mod verify;
