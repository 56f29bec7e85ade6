//! `check-config --online`: what a valid config still needs from the
//! machine and the remote before the nightly run can succeed, one check
//! result per line. The checks change nothing but a marker object written
//! to the remote and removed again.
//!
//! [`check_offline`] holds what can be told from the config alone (a
//! remote without a `name:` prefix); [`check_online`] runs everything.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use crate::config::{ByteSize, Config};
use crate::model::{check_bwlimit, remote_join, Encryption, Mode, Passphrase};
use crate::ops::upload::read_object;
use crate::process::{CommandLine, ProcessError, Runner};
use crate::stages::{
    RcloneOptions, RcloneUploader, RecipientEncryptor, Uploader, ZfsCli, EXIT_DIR_NOT_FOUND,
    EXIT_FILE_NOT_FOUND,
};
use crate::util::{error_chain, human_bytes};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// Fine.
    Ok,
    /// Works, but probably not as meant.
    Warn,
    /// The backup would fail.
    Fail,
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// What was checked, e.g. `rclone` or `remote writable`.
    pub check: String,
    /// How it came out.
    pub status: CheckStatus,
    /// What was found, or what is wrong and how to fix it.
    pub message: String,
}

impl CheckResult {
    fn new(check: &str, status: CheckStatus, message: impl Into<String>) -> Self {
        Self {
            check: check.to_owned(),
            status,
            message: message.into(),
        }
    }
}

/// How rclone reads a `remote` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteForm {
    /// `name:path`, or the connection string `name,opt=value:path`: `name`
    /// must be in rclone's config.
    Named(String),
    /// `:backend:path` or `:backend,opt=value:path`, configured in place.
    OnTheFly(String),
    /// No `name:` prefix: a directory on this machine; whether the path is
    /// absolute.
    Local {
        /// Whether the path starts with `/`.
        absolute: bool,
    },
}

/// The form of `remote`, as rclone parses it: a `:` ends a remote name
/// unless a `/` comes first.
#[must_use]
pub fn remote_form(remote: &str) -> RemoteForm {
    let (name, on_the_fly) = match remote.strip_prefix(':') {
        Some(rest) => (rest, true),
        None => (remote, false),
    };
    match name.split_once(':') {
        Some((name, _)) if !name.contains('/') => {
            let name = name.split(',').next().unwrap_or(name).to_owned();
            if on_the_fly {
                RemoteForm::OnTheFly(name)
            } else {
                RemoteForm::Named(name)
            }
        }
        _ => RemoteForm::Local {
            absolute: remote.starts_with('/'),
        },
    }
}

/// What can be told without running anything: a relative `remote` without
/// a `name:` prefix is a directory below wherever zfs2cloud runs, which is
/// almost never meant (an absolute path is: a mounted disk or NAS).
#[must_use]
pub fn check_offline(config: &Config) -> Vec<CheckResult> {
    let mut out = Vec::new();
    if remote_form(&config.remote) == (RemoteForm::Local { absolute: false }) {
        out.push(CheckResult::new(
            "remote",
            CheckStatus::Warn,
            local_remote_message(&config.remote),
        ));
    }
    out
}

fn local_remote_message(remote: &str) -> String {
    let shown = remote.strip_prefix("./").unwrap_or(remote);
    format!(
        "remote {remote:?} has no \"name:\" prefix, so rclone would write to the local \
         directory ./{shown} (relative to where zfs2cloud runs); write \"name:{shown}\" for \
         the remote `name` in rclone.conf, or an absolute path for a local directory"
    )
}

/// Runs every check of `config` against this machine and its remote.
/// Commands go through `runner`; the passphrase is read but never shown.
#[must_use]
pub fn check_online(config: &Config, runner: &Runner, now: DateTime<Utc>) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let zfs_ok = check_zfs(config, runner, &mut out);
    if zfs_ok {
        out.push(check_dataset(config, runner));
    }
    if needs_gpg(config) {
        out.push(tool_version(
            runner,
            "gpg",
            &config.tools.gpg,
            &["--version"],
        ));
    }
    out.extend(check_secrets(config, runner, now));
    let rclone = tool_version(runner, "rclone", &config.tools.rclone, &["version"]);
    let rclone_ok = rclone.status == CheckStatus::Ok;
    out.push(rclone);
    if let Some(bwlimit) = &config.bwlimit {
        out.push(check_rclone_bwlimit(config, runner, bwlimit, rclone_ok));
    }
    if rclone_ok {
        check_remote(config, runner, &mut out);
    }
    out.push(check_free_space(config));
    out
}

fn needs_gpg(config: &Config) -> bool {
    config.mode == Mode::Intermediate && config.encryption != Encryption::None
}

/// `<check>: the first line of <program> <args>`, or why it cannot run.
fn tool_version(runner: &Runner, check: &str, program: &Path, args: &[&str]) -> CheckResult {
    let cmd = CommandLine::new(program).env("LC_ALL", "C").args(args);
    match runner.query(&cmd) {
        Ok(out) => {
            let text = out.stdout_lossy();
            let first = text.lines().next().unwrap_or("").trim();
            CheckResult::new(
                check,
                CheckStatus::Ok,
                format!("{} ({first})", program.display()),
            )
        }
        Err(e) => CheckResult::new(check, CheckStatus::Fail, cannot_run(program, &e)),
    }
}

fn cannot_run(program: &Path, e: &ProcessError) -> String {
    match e {
        ProcessError::Spawn { source, .. } => format!(
            "{} cannot be run: {source}; install it or set its path ([tools] keys \
             zfs_path, gpg_path, rclone_path)",
            program.display()
        ),
        e => error_chain(e),
    }
}

/// zfs: its version (OpenZFS has `zfs version`; zfs-fuse has none, but
/// answering at all proves it is there), and the send flags the config
/// uses. Whether zfs can run.
fn check_zfs(config: &Config, runner: &Runner, out: &mut Vec<CheckResult>) -> bool {
    let zfs = &config.tools.zfs;
    let version = tool_version(runner, "zfs", zfs, &["version"]);
    let present = match &version.status {
        CheckStatus::Ok => {
            out.push(version);
            true
        }
        _ => {
            let cmd = CommandLine::new(zfs).env("LC_ALL", "C").arg("version");
            let ran = matches!(runner.query(&cmd), Err(e) if e.status().is_some());
            out.push(if ran {
                CheckResult::new(
                    "zfs",
                    CheckStatus::Ok,
                    format!(
                        "{} (no `zfs version`: zfs-fuse or an old ZFS)",
                        zfs.display()
                    ),
                )
            } else {
                version
            });
            ran
        }
    };
    if present && config.mode == Mode::Intermediate && !config.send_flags.is_empty() {
        out.push(check_send_flags(config, runner));
    }
    present
}

fn check_send_flags(config: &Config, runner: &Runner) -> CheckResult {
    let cli = ZfsCli::new(runner.clone(), config.tools.zfs.clone());
    match cli.send_usage() {
        Ok(usage) => {
            let lacking: Vec<String> = usage
                .lacking(&config.send_flags)
                .into_iter()
                .map(|f| format!("{f} (-{})", f.letter()))
                .collect();
            if lacking.is_empty() {
                CheckResult::new("send_flags", CheckStatus::Ok, "zfs send takes them all")
            } else {
                CheckResult::new(
                    "send_flags",
                    CheckStatus::Fail,
                    format!(
                        "the zfs here ({}) does not support {}",
                        config.tools.zfs.display(),
                        lacking.join(", ")
                    ),
                )
            }
        }
        Err(e) => CheckResult::new(
            "send_flags",
            CheckStatus::Fail,
            format!("cannot tell which send flags zfs supports: {e}"),
        ),
    }
}

/// The dataset (for a recursive job, the root of its tree).
fn check_dataset(config: &Config, runner: &Runner) -> CheckResult {
    let cli = ZfsCli::new(runner.clone(), config.tools.zfs.clone());
    match cli.exists(&config.dataset) {
        Ok(true) => CheckResult::new("dataset", CheckStatus::Ok, config.dataset.to_string()),
        Ok(false) => CheckResult::new(
            "dataset",
            CheckStatus::Fail,
            format!("{} does not exist (zfs list)", config.dataset),
        ),
        Err(e) => CheckResult::new("dataset", CheckStatus::Fail, error_chain(&e)),
    }
}

/// The passphrase file (readable, first line not empty, private), or the
/// recipients' keys; nothing in file mode, which does not encrypt.
fn check_secrets(config: &Config, runner: &Runner, now: DateTime<Utc>) -> Option<CheckResult> {
    if config.mode != Mode::Intermediate {
        return None;
    }
    match config.encryption {
        Encryption::None => None,
        Encryption::Gpg => {
            let file = config.passphrase_file.as_deref()?;
            Some(match Passphrase::from_file(file) {
                Ok(_) => CheckResult::new(
                    "passphrase_file",
                    CheckStatus::Ok,
                    format!("{}: readable, first line not empty", file.display()),
                ),
                Err(e) => CheckResult::new("passphrase_file", CheckStatus::Fail, e.to_string()),
            })
        }
        Encryption::GpgRecipients => {
            let keys = RecipientEncryptor::from_config(config, runner).check_keys(now);
            Some(match keys {
                Ok(keys) => CheckResult::new(
                    "recipients",
                    CheckStatus::Ok,
                    format!("encrypted to {}", keys.fingerprints.join(", ")),
                ),
                Err(e) => CheckResult::new("recipients", CheckStatus::Fail, error_chain(&e)),
            })
        }
    }
}

/// `bwlimit` as this zfs2cloud and the installed rclone read it: rclone
/// checks `--bwlimit` before it runs any subcommand, so `rclone --bwlimit
/// <value> version` fails exactly when the uploads would.
fn check_rclone_bwlimit(
    config: &Config,
    runner: &Runner,
    bwlimit: &str,
    rclone_ok: bool,
) -> CheckResult {
    if let Err(e) = check_bwlimit(bwlimit) {
        return CheckResult::new("bwlimit", CheckStatus::Fail, e.to_string());
    }
    if !rclone_ok {
        return CheckResult::new("bwlimit", CheckStatus::Ok, format!("{bwlimit:?} parses"));
    }
    let cmd = CommandLine::new(&config.tools.rclone)
        .arg("--bwlimit")
        .arg(bwlimit)
        .arg("version");
    match runner.query(&cmd) {
        Ok(_) => CheckResult::new(
            "bwlimit",
            CheckStatus::Ok,
            format!("{bwlimit:?} (rclone takes it)"),
        ),
        Err(e) => {
            let first = e.stderr().lines().next().unwrap_or("").trim().to_owned();
            CheckResult::new(
                "bwlimit",
                CheckStatus::Fail,
                format!("rclone refuses {bwlimit:?}: {first}"),
            )
        }
    }
}

/// The remote: its form, its name in rclone's config, and a marker
/// written, read back and removed.
fn check_remote(config: &Config, runner: &Runner, out: &mut Vec<CheckResult>) {
    let uploader = RcloneUploader::new(
        runner.clone(),
        config.tools.rclone.clone(),
        RcloneOptions::from(config),
    );
    let form = match remote_form(&config.remote) {
        RemoteForm::Local { absolute: false } => {
            out.push(CheckResult::new(
                "remote",
                CheckStatus::Fail,
                local_remote_message(&config.remote),
            ));
            return;
        }
        form => form,
    };
    let named = check_remote_name(&uploader, runner, config, &form);
    let known = named.status == CheckStatus::Ok;
    out.push(named);
    if known {
        out.push(check_writable(&uploader, runner, &config.remote));
    }
}

fn check_remote_name(
    uploader: &RcloneUploader,
    runner: &Runner,
    config: &Config,
    form: &RemoteForm,
) -> CheckResult {
    let name = match form {
        RemoteForm::Named(name) => name,
        RemoteForm::OnTheFly(backend) => {
            return CheckResult::new(
                "remote",
                CheckStatus::Ok,
                format!("{:?}: the on-the-fly backend :{backend}:", config.remote),
            )
        }
        RemoteForm::Local { .. } => {
            return CheckResult::new(
                "remote",
                CheckStatus::Ok,
                format!("{:?}: a local directory", config.remote),
            )
        }
    };
    let where_ = config
        .rclone_config
        .as_ref()
        .map_or("rclone's default config".to_owned(), |p| {
            p.display().to_string()
        });
    match runner.query(&uploader.command("listremotes")) {
        Ok(listed) => {
            let listed = listed.stdout_lossy();
            let names: Vec<&str> = listed
                .lines()
                .map(|l| l.trim().trim_end_matches(':'))
                .collect();
            if names.contains(&name.as_str()) {
                CheckResult::new(
                    "remote",
                    CheckStatus::Ok,
                    format!("{:?}: {name} is in {where_}", config.remote),
                )
            } else {
                CheckResult::new(
                    "remote",
                    CheckStatus::Fail,
                    format!(
                        "the remote {name:?} is not in {where_} (it has: {}); add it with \
                         `rclone config`, or set rclone_config",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                )
            }
        }
        Err(e) => CheckResult::new("remote", CheckStatus::Fail, error_chain(&e)),
    }
}

/// Writes a marker object, reads it back and deletes it (also when reading
/// fails), and removes again the directories the write created.
fn check_writable(uploader: &RcloneUploader, runner: &Runner, remote: &str) -> CheckResult {
    let created = match missing_dirs(uploader, runner, remote) {
        Ok(missing) => missing,
        Err(e) => {
            return CheckResult::new(
                "remote writable",
                CheckStatus::Fail,
                format!("cannot list {remote}: {}", error_chain(&e)),
            )
        }
    };
    let marker = remote_join(remote, &marker_name());
    let body = format!("zfs2cloud check-config --online {marker}\n").into_bytes();
    let result = write_and_read(uploader, &marker, &body);
    let cleanup = uploader
        .delete_file(&marker)
        .map_err(|e| format!("cannot delete the marker {marker}: {}", error_chain(&e)));
    // Deepest first; rmdir never removes a directory that holds anything.
    for dir in &created {
        if let Err(e) = uploader.remove_dir(dir) {
            log::debug!("the check's directory {dir} stays: {e}");
        }
    }
    match result.and(cleanup) {
        Ok(()) => CheckResult::new(
            "remote writable",
            CheckStatus::Ok,
            if created.is_empty() {
                format!("{remote}: a marker was written, read back and removed")
            } else {
                format!(
                    "{remote}: does not exist yet (the first upload creates it); a marker \
                     was written, read back and removed"
                )
            },
        ),
        Err(message) => CheckResult::new("remote writable", CheckStatus::Fail, message),
    }
}

fn write_and_read(uploader: &RcloneUploader, marker: &str, body: &[u8]) -> Result<(), String> {
    uploader
        .put_bytes(body, marker)
        .map_err(|e| format!("cannot write {marker}: {}", error_chain(&e)))?;
    let read = read_object(uploader, marker)
        .map_err(|e| format!("cannot read {marker} back: {}", error_chain(&e)))?;
    match read {
        Some(bytes) if bytes == body => Ok(()),
        Some(_) => Err(format!("{marker} reads back different bytes")),
        None => Err(format!("{marker} is not there after writing it")),
    }
}

/// `remote` and those of its parents that do not exist (deepest first):
/// what writing into it creates.
fn missing_dirs(
    uploader: &RcloneUploader,
    runner: &Runner,
    remote: &str,
) -> Result<Vec<String>, ProcessError> {
    let mut missing = Vec::new();
    let mut dir = Some(remote.trim_end_matches('/').to_owned());
    while let Some(d) = dir {
        if exists(uploader, runner, &d)? {
            break;
        }
        dir = remote_parent(&d);
        missing.push(d);
    }
    Ok(missing)
}

/// Whether `path` (a file or a directory) exists on the remote
/// ([`RcloneUploader`]'s `stat` sees only files).
fn exists(uploader: &RcloneUploader, runner: &Runner, path: &str) -> Result<bool, ProcessError> {
    match runner.query(&uploader.command("lsjson").arg("--stat").arg(path)) {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.status().and_then(|s| s.code()),
                Some(EXIT_DIR_NOT_FOUND | EXIT_FILE_NOT_FOUND)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The directory above `remote` (`name:a/b` → `name:a`); `None` at the
/// remote's root.
fn remote_parent(remote: &str) -> Option<String> {
    let start = match remote_form(remote) {
        RemoteForm::Local { .. } => 0,
        // After `name:`, or after `:backend:`.
        RemoteForm::Named(_) | RemoteForm::OnTheFly(_) => {
            let skip = usize::from(remote.starts_with(':'));
            remote[skip..].find(':').map_or(0, |i| i + skip + 1)
        }
    };
    let path = &remote[start..];
    let cut = path.trim_end_matches('/').rfind('/')?;
    let parent = path[..cut].trim_end_matches('/');
    let parent = if parent.is_empty() && path.starts_with('/') {
        "/"
    } else {
        parent
    };
    (!parent.is_empty() && parent != "/").then(|| format!("{}{parent}", &remote[..start]))
}

/// `.zfs2cloud-check-<pid>-<nanoseconds>`: unique enough that two checks
/// never share one, and named so that no listing takes it for a backup.
fn marker_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(".zfs2cloud-check-{}-{nanos:09}", std::process::id())
}

/// The local disk an export needs at once: with `upload_while_exporting`
/// and `keep_local_export = false`, at most `upload_concurrency + 1`
/// chunks; otherwise the whole export stays, so at least one chunk (the
/// whole stream's size is not known before the send).
#[must_use]
pub fn local_space_needed(config: &Config) -> u64 {
    let chunks = if config.upload_while_exporting && !config.keep_local_export {
        u64::from(config.upload_concurrency) + 1
    } else {
        1
    };
    config.split_size.0.saturating_mul(chunks)
}

/// Free space where exports go, against [`local_space_needed`]: less fails,
/// less than twice warns.
fn check_free_space(config: &Config) -> CheckResult {
    let check = "free space";
    if config.mode == Mode::File {
        return CheckResult::new(
            check,
            CheckStatus::Ok,
            "file mode writes no export (only a mount point) to intermediate_basedir",
        );
    }
    let dir = &config.intermediate_basedir;
    let Some(existing) = dir.ancestors().find(|p| p.is_dir()) else {
        return CheckResult::new(
            check,
            CheckStatus::Fail,
            format!("no part of {} exists", dir.display()),
        );
    };
    // The field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::useless_conversion)]
    let free = match nix::sys::statvfs::statvfs(existing) {
        Ok(s) => u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())),
        Err(e) => {
            return CheckResult::new(
                check,
                CheckStatus::Fail,
                format!("cannot tell the free space of {}: {e}", existing.display()),
            )
        }
    };
    let needed = local_space_needed(config);
    let how = if config.upload_while_exporting && !config.keep_local_export {
        format!(
            "(upload_concurrency + 1) × split_size = {} × {}",
            config.upload_concurrency + 1,
            ByteSize(config.split_size.0)
        )
    } else {
        format!(
            "a chunk of {}; the whole export stays here until uploaded, so a full needs about \
             the dataset's size",
            config.split_size
        )
    };
    let message = format!(
        "{} free in {}; needs {} at once: {how}",
        human_bytes(free),
        existing.display(),
        human_bytes(needed)
    );
    let status = if free < needed {
        CheckStatus::Fail
    } else if free < needed.saturating_mul(2) {
        CheckStatus::Warn
    } else {
        CheckStatus::Ok
    };
    CheckResult::new(check, status, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_are_read_as_rclone_reads_them() {
        let named = |n: &str| RemoteForm::Named(n.to_owned());
        assert_eq!(remote_form("b2:bucket/data"), named("b2"));
        assert_eq!(remote_form("backups:"), named("backups"));
        assert_eq!(remote_form("s3,provider=AWS:bucket"), named("s3"));
        assert_eq!(
            remote_form(":local:/srv/backups"),
            RemoteForm::OnTheFly("local".into())
        );
        assert_eq!(
            remote_form(":sftp,host=example.com:dir"),
            RemoteForm::OnTheFly("sftp".into())
        );
        assert_eq!(
            remote_form("backups"),
            RemoteForm::Local { absolute: false }
        );
        assert_eq!(
            remote_form("./dir/with:colon"),
            RemoteForm::Local { absolute: false }
        );
        assert_eq!(
            remote_form("/mnt/nas/backups"),
            RemoteForm::Local { absolute: true }
        );
    }

    #[test]
    fn parents_stop_at_the_remote_root() {
        let parent = |r: &str| remote_parent(r);
        assert_eq!(
            parent("store:/tmp/a/host/data").as_deref(),
            Some("store:/tmp/a/host")
        );
        assert_eq!(parent("b2:bucket/host/").as_deref(), Some("b2:bucket"));
        assert_eq!(parent("b2:bucket"), None);
        assert_eq!(parent("store:/tmp"), None);
        assert_eq!(parent(":local:/srv/x/y").as_deref(), Some(":local:/srv/x"));
        assert_eq!(parent("/mnt/nas/backups").as_deref(), Some("/mnt/nas"));
        assert_eq!(parent("/mnt"), None);
    }
}
