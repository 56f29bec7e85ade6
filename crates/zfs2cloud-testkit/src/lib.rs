//! Test support for zfs2cloud.
//!
//! * [`fake`]: stateful, recording, fault-injecting stand-ins for `zfs` and
//!   `rclone` (the `fake-zfs` and `fake-rclone` binaries of this crate).
//! * [`remote`]: real rclone remotes for tests: a local path, crypt, and
//!   real protocol servers on loopback (sftp and S3 served by the current
//!   rclone, S3 by moto), with Debian's and the current rclone as clients.
//! * [`harness`]: helpers for end-to-end tests against the real tools:
//!   unique file-backed zfs-fuse pools, "required tool" checks that fail
//!   under `CI=true`, and a command runner whose failures show everything.

pub mod fake;
pub mod harness;

pub mod remote;
