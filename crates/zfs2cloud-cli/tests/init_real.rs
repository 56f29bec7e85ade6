//! `zfs2cloud init`: what it writes works as written, from check-config to
//! a restore on real zfs-fuse, gpg and rclone, and it never overwrites.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::text;
use zfs2cloud_testkit::harness::{run_fail, run_ok, tree_digest, write_random_file, ZfsSession};
use zfs2cloud_testkit::remote::{sanitize_env, RcloneConfig};

const DAY1: &str = "2024-01-01T00:00:00Z";

/// A temp dir with a private GNUPGHOME, for running `zfs2cloud` as a new
/// user would: no config but the one init writes.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("zfs2cloud-init-")
            .tempdir()
            .unwrap();
        let gnupg = dir.path().join("gnupg");
        std::fs::create_dir(&gnupg).unwrap();
        std::fs::set_permissions(&gnupg, std::fs::Permissions::from_mode(0o700)).unwrap();
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `zfs2cloud` with `args`, the clock at DAY1, run from the temp dir.
    fn zfs2cloud(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zfs2cloud"));
        cmd.args(args)
            .env("ZFS2CLOUD_NOW", DAY1)
            .env("GNUPGHOME", self.path("gnupg"))
            .env_remove("ZFS2CLOUD_CONFIG")
            .env_remove("ZFS2CLOUD_ZFS")
            .env_remove("ZFS2CLOUD_GPG")
            .env_remove("ZFS2CLOUD_RCLONE")
            .current_dir(self.dir.path());
        sanitize_env(&mut cmd);
        cmd
    }

    /// `zfs2cloud -c <config> <args>`.
    fn with_config(&self, config: &Path, args: &[&str]) -> Command {
        let mut cmd = self.zfs2cloud(&["-c", &config.display().to_string()]);
        cmd.args(args);
        cmd
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // gpg starts an agent per GNUPGHOME; stop it with the home.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.path("gnupg"))
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_then_check_config_backup_and_restore_with_the_config_as_written() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let src = zfs.pool("is");
    let dst = zfs.pool("id");
    let data = src.create_dataset("data");
    write_random_file(&data.join("photo.bin"), 300_000, 7);
    std::fs::write(data.join("notes.txt"), "written before init\n").unwrap();
    let home = Home::new();
    let rclone = RcloneConfig::new();
    let remote = format!("cloud:{}", rclone.add_local("cloud").join("data").display());
    let config = home.path("etc/data.toml");

    let out = run_ok(
        &mut home.with_config(
            &config,
            &[
                "init",
                "--dataset",
                &src.dataset("data"),
                "--remote",
                &remote,
            ]
            .into_iter()
            .chain(["--rclone-config", &rclone.path().display().to_string()])
            .chain(["--intermediate-basedir", "work"])
            .collect::<Vec<_>>(),
        ),
    );
    let passphrase_file = home.path("etc/data.passphrase");
    let shown = text(&out);
    assert!(
        shown.contains(&passphrase_file.display().to_string()),
        "{shown}"
    );
    assert!(
        shown.contains("somewhere other than this machine"),
        "{shown}"
    );
    assert_eq!(mode_of(&passphrase_file), 0o600);
    let written = std::fs::read(&config).unwrap();

    let checked = run_ok(&mut home.with_config(&config, &["check-config"]));
    assert!(!text(&checked).contains("warning"), "{}", text(&checked));
    run_ok(&mut home.with_config(&config, &["backup"]));
    let target = dst.dataset("back");
    run_ok(&mut home.with_config(&config, &["restore", "--to", &target]));
    assert_eq!(
        tree_digest(&dst.mountpoint(&target)),
        tree_digest(&data),
        "the restore is byte-identical"
    );
    assert_eq!(
        std::fs::read(&config).unwrap(),
        written,
        "nothing edited it"
    );
    // Relative --intermediate-basedir is taken from where init ran.
    assert!(home.path("work").is_dir());
    let _ = Command::new("zfs")
        .args(["release", "zfs2cloud"])
        .arg(format!("{}@20240101000000", src.dataset("data")))
        .output();
}

#[test]
fn init_never_overwrites_the_config_or_the_passphrase() {
    let home = Home::new();
    let config = home.path("a.toml");
    let init = |config: &Path, extra: &[&str]| {
        let mut cmd = home.with_config(
            config,
            &["init", "--dataset", "tank/a", "--remote", "b2:bucket/a"],
        );
        cmd.args(extra);
        cmd
    };
    let out = run_ok(&mut init(&config, &["--dry-run"]));
    assert!(
        text(&out).contains("dataset = \"tank/a\""),
        "{}",
        text(&out)
    );
    assert!(!config.exists(), "--dry-run writes nothing");
    run_ok(&mut init(&config, &[]));
    let passphrase_file = home.path("a.passphrase");
    let (config_text, passphrase) = (
        std::fs::read(&config).unwrap(),
        std::fs::read(&passphrase_file).unwrap(),
    );
    assert_eq!(mode_of(&passphrase_file), 0o600);
    run_ok(&mut home.with_config(&config, &["check-config"]));

    let out = run_fail(&mut init(&config, &[]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(&format!("{} already exists", config.display())));

    // A new config whose passphrase file exists: refused before writing
    // anything, so no config without its passphrase is left.
    let other = home.path("b.toml");
    let pf = passphrase_file.display().to_string();
    let out = run_fail(&mut init(&other, &["--passphrase-file", &pf]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{pf} already exists")),
        "{}",
        text(&out)
    );
    assert!(!other.exists());

    assert_eq!(std::fs::read(&config).unwrap(), config_text);
    assert_eq!(std::fs::read(&passphrase_file).unwrap(), passphrase);
}

#[test]
fn init_in_file_mode_writes_no_passphrase_and_passes_check_config() {
    let home = Home::new();
    let rclone = RcloneConfig::new();
    let remote = format!(
        "cloud:{}",
        rclone.add_local("cloud").join("photos").display()
    );
    let config = home.path("photos.toml");
    let out = run_ok(&mut home.with_config(
        &config,
        &[
            "init",
            "--mode",
            "file",
            "--dataset",
            "tank/photos",
            "--remote",
            &remote,
            "--rclone-config",
            &rclone.path().display().to_string(),
        ],
    ));
    assert!(!home.path("photos.passphrase").exists(), "{}", text(&out));
    let out = run_ok(&mut home.with_config(&config, &["check-config"]));
    assert!(text(&out).contains("mode = \"file\""), "{}", text(&out));
    // Nothing the mode ignores: every key init writes is one file mode reads.
    assert!(!text(&out).contains("warning"), "{}", text(&out));

    let out = run_fail(&mut home.zfs2cloud(&[
        "init",
        "--mode",
        "file",
        "--dataset",
        "tank/x",
        "--remote",
        "backups",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("has no ':'"), "{}", text(&out));
}
