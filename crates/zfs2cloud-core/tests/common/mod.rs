//! Shared by the core crate's integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use zfs2cloud_core::{CommandLine, ProcessStage, Runner, Started};
use zfs2cloud_core::{RemoteFile, UploadError, Uploader};

/// A read-only "remote" that is a local directory (remote paths are local
/// paths).
pub struct LocalDirRemote;

fn entries(dir: &str, dirs: bool) -> Vec<(String, u64)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.map(Result::unwrap)
        .filter(|e| e.file_type().unwrap().is_dir() == dirs)
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

impl Uploader for LocalDirRemote {
    fn list(&self, remote_dir: &str) -> Result<Vec<RemoteFile>, UploadError> {
        Ok(entries(remote_dir, false)
            .into_iter()
            .map(|(name, size)| RemoteFile {
                name,
                size,
                sha256: None,
            })
            .collect())
    }
    fn list_dirs(&self, remote_dir: &str) -> Result<Vec<String>, UploadError> {
        Ok(entries(remote_dir, true)
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }
    fn cat(&self, remote_path: &str) -> Result<Started<UploadError>, UploadError> {
        ProcessStage::start(
            &Runner::new(),
            &CommandLine::new("cat").arg(remote_path),
            None,
            Vec::new(),
        )
    }
    fn put(&self, _: &Path, _: &str) -> Result<(), UploadError> {
        panic!("a read-only remote: nothing may upload")
    }
    fn stat(&self, _: &str) -> Result<Option<RemoteFile>, UploadError> {
        panic!("listings only: nothing may stat a file")
    }
    fn sync_dir(&self, _: &Path, _: &str, _: &[&str]) -> Result<(), UploadError> {
        panic!("a read-only remote: nothing may upload")
    }
    fn put_bytes(&self, _: &[u8], _: &str) -> Result<(), UploadError> {
        panic!("a read-only remote: nothing may upload")
    }
    fn delete_file(&self, _: &str) -> Result<(), UploadError> {
        panic!("a read-only remote: nothing may delete")
    }
    fn remove_dir(&self, _: &str) -> Result<(), UploadError> {
        panic!("a read-only remote: nothing may delete")
    }
}
