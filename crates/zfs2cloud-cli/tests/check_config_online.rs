//! `check-config` catches tonight's failure (issue 16): each of the four
//! configs that used to pass and fail at 3 a.m. is refused with a message
//! naming the problem, a good config passes `--online` with exit 0 and
//! leaves no marker on the remote, keys the mode ignores are warned about,
//! and hostile bytes never reach the terminal raw.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{text, Setup};
use zfs2cloud_testkit::harness::{require_tools, run_fail, run_ok, ZfsSession};
use zfs2cloud_testkit::remote::RcloneConfig;

const NOW: &str = "2024-01-01T00:00:00Z";

fn check(setup: &Setup, online: bool) -> std::process::Command {
    let mut cmd = setup.cmd(NOW);
    cmd.arg("check-config");
    if online {
        cmd.arg("--online");
    }
    cmd
}

/// The `FAIL` line of the checklist for `check`.
fn fail_line(stdout: &str, check: &str) -> String {
    let prefix = format!("FAIL  {check}: ");
    stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{stdout}"))
        .to_owned()
}

#[test]
fn bwlimit_in_words_is_refused_without_going_online() {
    let setup = Setup::new("tank/data", "bwlimit = \"eight megs\"\n");
    for online in [false, true] {
        let out = run_fail(&mut check(&setup, online));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(": bwlimit: \"eight\" is not an rclone bandwidth"),
            "{stderr}"
        );
    }
}

#[test]
fn a_remote_without_a_name_prefix_is_a_warning_offline_and_a_failure_online() {
    if !require_tools(&["rclone"]) {
        return;
    }
    let setup = Setup::with_remote("tank/data", "backups", "");
    let out = run_ok(&mut check(&setup, false));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = "remote \"backups\" has no \"name:\" prefix, so rclone would write to the local \
                directory ./backups";
    assert!(stderr.contains(said), "{stderr}");

    let out = run_fail(&mut check(&setup, true));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(fail_line(&stdout, "remote").contains(said), "{stdout}");
    assert!(
        !setup.dir.path().join("backups").exists(),
        "nothing written"
    );
}

#[test]
fn a_remote_missing_from_rclone_conf_fails_online() {
    if !require_tools(&["rclone"]) {
        return;
    }
    let rclone = RcloneConfig::new();
    let _ = rclone.add_local("present");
    let extra = format!("rclone_config = {:?}\n", rclone.path());
    let setup = Setup::with_remote("tank/data", "absent:backups/data", &extra);
    let out = run_fail(&mut check(&setup, true));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = fail_line(&stdout, "remote");
    assert!(line.contains("the remote \"absent\" is not in"), "{line}");
    assert!(line.contains("it has: present"), "{line}");
}

#[test]
fn missing_tools_fail_online_naming_each() {
    let extra = "zfs_path = \"/nonexistent/zfs\"\ngpg_path = \"/nonexistent/gpg\"\n\
                 rclone_path = \"/nonexistent/rclone\"\n";
    let setup = Setup::with_remote("tank/data", "r:data", extra);
    let out = run_fail(&mut check(&setup, true));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for tool in ["zfs", "gpg", "rclone"] {
        let line = fail_line(&stdout, tool);
        assert!(
            line.contains(&format!("/nonexistent/{tool} cannot be run")),
            "{line}"
        );
    }
}

#[test]
fn a_good_config_passes_online_and_leaves_no_marker() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let pool = zfs.pool("chk");
    let _ = pool.create_dataset("data");
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("store");
    let extra = format!(
        "rclone_config = {:?}\nbwlimit = \"08:00,512k 23:00,off\"\n",
        rclone.path()
    );
    let remote = format!("store:{}/host/data", root.display());
    let setup = Setup::with_remote(&pool.dataset("data"), &remote, &extra);
    let out = run_ok(&mut check(&setup, true));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for check in [
        "zfs",
        "dataset",
        "gpg",
        "passphrase_file",
        "rclone",
        "bwlimit",
        "remote",
        "remote writable",
        "free space",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok    {check}: "))),
            "no ok line for {check}:\n{stdout}"
        );
    }
    assert!(!stdout.contains(&setup.passphrase), "{stdout}");
    assert_eq!(leftovers(&root), Vec::<String>::new());
}

/// Everything under `dir`, as paths relative to it.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                todo.push(path);
            }
        }
    }
    found
}

#[test]
fn a_file_mode_passphrase_is_warned_about_not_shown_as_used() {
    let setup = Setup::new("tank/data", "mode = \"file\"\n");
    let out = run_ok(&mut check(&setup, false));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("# passphrase"), "{stdout}");
    assert!(
        stderr.contains(":4: passphrase_file: is ignored in file mode"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":5: split_size: is ignored in file mode"),
        "{stderr}"
    );
}

#[test]
fn hostile_bytes_in_names_are_escaped_on_the_terminal() {
    let setup = Setup::new("tank/data", "");
    let base = "intermediate_basedir = \"i\"\npassphrase_file = \"passphrase\"\n";
    // A TOML escape puts ESC and BEL in the name; the raw bytes in the
    // file make the parser quote the line.
    for dataset in [
        r#"dataset = "tank/\u001b[2J\u001b]0;pwned\u0007""#,
        "dataset = \"tank/\x1b[2J\x1b]0;pwned\x07\"",
    ] {
        std::fs::write(
            &setup.config,
            format!("{dataset}\nremote = \"r:x\"\n{base}"),
        )
        .unwrap();
        let out = run_fail(&mut check(&setup, false));
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(!out.stderr.contains(&0x1b), "{:?}", text(&out));
        assert!(!out.stderr.contains(&0x07), "{:?}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("\\u001b[2J") || stderr.contains("\\u{1b}[2J"),
            "{stderr}"
        );
    }
    // A C1 control (CSI) in a name that is valid: the printed config and
    // the warning about the remote escape it.
    let remote = "remote = \"\u{9b}31mremote\"\n";
    std::fs::write(
        &setup.config,
        format!("dataset = \"tank/data\"\n{remote}{base}"),
    )
    .unwrap();
    let out = run_ok(&mut check(&setup, false));
    let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    let all = String::from_utf8_lossy(&all);
    assert!(!all.contains('\u{9b}'), "{all}");
    assert!(all.contains("\\u009b31mremote"), "{all}");
}
