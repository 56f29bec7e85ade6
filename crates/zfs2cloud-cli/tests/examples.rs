//! Every shipped example config parses, and every config in
//! `examples/invalid/` is refused by `zfs2cloud check-config` with a message
//! that names the file and the key (the `# expect:` lines of each file).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use zfs2cloud_core::ConfigFile;
use zfs2cloud_testkit::harness::{run_fail, run_ok};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn tomls(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

fn zfs2cloud() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zfs2cloud"));
    cmd.env_remove("ZFS2CLOUD_CONFIG");
    cmd
}

#[test]
fn every_example_parses() {
    let examples = tomls(&examples_dir());
    assert!(examples.len() >= 4, "{examples:?}");
    for path in examples {
        let text = std::fs::read_to_string(&path).unwrap();
        // The examples point at /etc/zfs2cloud/..., which does not exist
        // here; parse checks everything but those files.
        ConfigFile::parse(&text, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn every_invalid_example_fails_naming_file_and_key() {
    // Work on a copy: git does not keep file modes, and the permission case
    // needs a group-readable passphrase file.
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(examples_dir().join("invalid")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    std::fs::set_permissions(
        tmp.path().join("passphrase-readable-by-group.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();

    let invalid = tomls(tmp.path());
    assert!(invalid.len() >= 8, "{invalid:?}");
    for path in invalid {
        let text = std::fs::read_to_string(&path).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            path.display()
        );
        let out = run_fail(zfs2cloud().arg("-c").arg(&path).arg("check-config"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(
            stderr.contains(&path.display().to_string()),
            "{}: the message must name the file: {stderr}",
            path.display()
        );
        for expect in expects {
            assert!(
                stderr.contains(expect),
                "{}: expected {expect:?} in: {stderr}",
                path.display()
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn check_config_prints_the_effective_config_without_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "s3cr3t-passphrase\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = tmp.path().join("c.toml");
    std::fs::write(
        &config,
        "dataset = \"tank/data\"\nintermediate_basedir = \"out\"\nremote = \"r:x\"\n\
         passphrase_file = \"pass\"\nrclone_global_flags = [\"--s3-secret-access-key=AKIAXYZ\"]\n\
         backup_sequences = [\"snapshot\", \"export-intermediate\", \"upload-intermediate-to-remote\"]\n",
    )
    .unwrap();
    let out = run_ok(
        zfs2cloud()
            .arg("check-config")
            .env("ZFS2CLOUD_CONFIG", &config),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(stdout.contains("split_size = \"1G\""), "{stdout}");
    assert!(
        stdout.contains("\"export\""),
        "aliases resolve to canonical steps: {stdout}"
    );
    assert!(stdout.contains("intermediate_basedir = \""), "{stdout}");
    assert!(!stdout.contains("s3cr3t"), "{stdout}");
    assert!(!stdout.contains("AKIAXYZ"), "{stdout}");
    assert!(stdout.contains("--s3-secret-access-key=***"), "{stdout}");

    // Missing -c and no env: a usage error, exit 2.
    let out = run_fail(zfs2cloud().arg("check-config"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ZFS2CLOUD_CONFIG"));
}

/// What `check-config` prints is a config file: loaded back, it prints the
/// same (secrets stay masked, so the masked text is what must round-trip).
#[test]
fn the_printed_config_of_every_example_loads_back_the_same() {
    for path in tomls(&examples_dir()) {
        let path = path.canonicalize().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let shown = ConfigFile::parse(&text, &path)
            .unwrap()
            .to_effective_toml()
            .unwrap();
        let again = ConfigFile::parse(&shown, &path)
            .unwrap_or_else(|e| panic!("{}: the printed config: {e}\n{shown}", path.display()));
        assert_eq!(
            again.to_effective_toml().unwrap(),
            shown,
            "{}",
            path.display()
        );
    }
}
