#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;
use crate::config::ConfigFile;

const PATH: &str = "/etc/zfs2cloud/data.toml";

/// Lines 1-4.
const BASE: &str = "dataset = \"tank/data\"\nintermediate_basedir = \"/var/lib/z\"\n\
                    remote = \"b2:bucket/data\"\npassphrase_file = \"/etc/zfs2cloud/pass\"\n";

fn errors(text: &str) -> Vec<String> {
    diagnose(text, Path::new(PATH))
        .iter()
        .map(|d| d.render(Path::new(PATH)))
        .collect()
}

#[test]
fn a_valid_file_has_no_errors() {
    assert_eq!(errors(BASE), Vec::<String>::new());
}

#[test]
fn every_error_of_a_file_is_reported_with_its_line_and_key() {
    let text = format!(
        "{BASE}full_every_days = 30\nsplit_size = \"1X\"\nupload_retries = -1\n\
         bwlimit = \"eight megs\"\nsteps = [\"snapshot\", 3]\n[hooks]\npre_snap = \"/bin/true\"\n\
         on_failure = 3\n"
    );
    let got = errors(&text);
    let want = [
        "data.toml:5: full_every_days: unknown field `full_every_days`; did you mean \
         `full_every_x_days`?",
        "data.toml:6: split_size: invalid size \"1X\"",
        "data.toml:7: upload_retries: invalid value: integer `-1`",
        "data.toml:8: bwlimit: \"eight\" is not an rclone bandwidth",
        "data.toml:9: steps[1]: invalid type: integer `3`",
        "data.toml:11: hooks.pre_snap: unknown field `pre_snap`; did you mean `pre_snapshot`?",
        "data.toml:12: hooks.on_failure: invalid type: integer `3`",
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (got, want) in got.iter().zip(want) {
        assert!(got.contains(want), "{got:?} does not contain {want:?}");
    }
}

#[test]
fn the_loader_reports_them_all_at_once() {
    let text = format!("{BASE}split_size = \"1X\"\nbwlimit = \"x\"\n");
    let err = ConfigFile::parse(&text, Path::new(PATH)).unwrap_err();
    assert!(matches!(&err, ConfigError::Many { diagnostics, .. } if diagnostics.len() == 2));
    assert_eq!(err.key(), Some("split_size"));
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{PATH}: 2 errors:\n{PATH}:5: split_size: ")),
        "{msg}"
    );
    assert!(msg.contains(&format!("\n{PATH}:6: bwlimit: ")), "{msg}");
    // Bad syntax has one error, the parser's, with its line.
    let err = ConfigFile::parse("dataset = \"x", Path::new(PATH)).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
}

#[test]
fn missing_keys_and_keys_set_twice_are_named() {
    let text = "zfs_fs = \"tank/a\"\ndataset = \"tank/b\"\nsplit_size = 3\n";
    let got = errors(text);
    assert!(got[0].contains(":1: zfs_fs: is set twice"), "{got:#?}");
    assert!(
        got.iter()
            .any(|e| e.contains("intermediate_basedir: is missing")),
        "{got:#?}"
    );
    assert!(
        got.iter().any(|e| e.contains("remote: is missing")),
        "{got:#?}"
    );
    assert!(
        got.iter().any(|e| e.contains(":3: split_size:")),
        "{got:#?}"
    );
}

#[test]
fn a_rule_broken_because_another_key_was_dropped_is_not_reported() {
    // Dropping the bad `encryption` makes gpg the default, which needs a
    // passphrase file: that is not the user's error.
    let text = "dataset = \"tank/data\"\nintermediate_basedir = \"/x\"\nremote = \"r:\"\n\
                encryption = 3\n";
    let got = errors(text);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].contains(":4: encryption:"), "{got:#?}");
}

#[test]
fn errors_in_jobs_name_the_job_and_the_line_that_sets_the_key() {
    let text = "[defaults]\nbwlimit = \"x\"\nintermediate_basedir = \"/x\"\n\
                passphrase_file = \"/p\"\n\n\
                [[job]]\nname = \"a\"\ndataset = \"tank/a\"\nremote = \"r:a\"\n\
                intermediate_basedir = \"/a\"\nsplit_siz = \"1G\"\n\n\
                [[job]]\nname = \"b\"\ndataset = \"tank/b\"\nremote = \"r:b\"\n\
                intermediate_basedir = \"/b\"\nupload_concurrency = 99\n";
    let got = errors(text);
    let want = [
        "data.toml:2: job.a.bwlimit: \"x\" is not an rclone bandwidth",
        "data.toml:2: job.b.bwlimit: \"x\" is not an rclone bandwidth",
        "data.toml:11: job.a.split_siz: unknown field `split_siz`; did you mean `split_size`?",
        "data.toml:18: job.b.upload_concurrency: 99 is out of range",
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for want in want {
        assert!(
            got.iter().any(|g| g.contains(want)),
            "{want:?} not in {got:#?}"
        );
    }
}

#[test]
fn did_you_mean_finds_typos_and_nothing_else() {
    let known = ["full_every_x_days", "split_size", "remote", "rclone_config"];
    assert_eq!(
        did_you_mean("full_every_days", &known),
        Some("full_every_x_days")
    );
    assert_eq!(
        did_you_mean("Full-Every-X-Days", &known),
        Some("full_every_x_days")
    );
    assert_eq!(did_you_mean("spilt_size", &known), Some("split_size"));
    assert_eq!(did_you_mean("remtoe", &known), Some("remote"));
    assert_eq!(did_you_mean("rclone_conifg", &known), Some("rclone_config"));
    assert_eq!(did_you_mean("colour", &known), None);
    assert_eq!(did_you_mean("x", &known), None);
}

#[test]
fn the_known_keys_come_from_raw_config_itself() {
    // serde lists RawConfig's keys in its "unknown field" message: a key
    // added there is suggested without being listed anywhere else.
    let table: toml::Table = toml::from_str("zzz = 1").unwrap();
    let err = toml::Value::Table(table)
        .try_into::<RawConfig>()
        .unwrap_err();
    let message = err.message();
    for key in [
        "dataset",
        "upload_stall_timeout_seconds",
        "retention",
        "zfs_fs",
        "bwlimit",
    ] {
        let typo = format!("{key}x");
        let hint = unknown_key_hint(&message.replace("`zzz`", &format!("`{typo}`")));
        assert_eq!(
            hint,
            Some(format!("unknown field `{typo}`; did you mean `{key}`?")),
            "{message}"
        );
    }
}

#[test]
fn keys_the_mode_ignores_are_warned_about() {
    let text = "dataset = \"tank/data\"\nmode = \"file\"\nintermediate_basedir = \"/x\"\n\
                remote = \"r:\"\npassphrase_file = \"/p\"\nsplit_size = \"1G\"\n\
                mount_strategy = \"clone\"\n";
    let warnings: Vec<String> = mode_warnings(text).iter().map(|d| d.to_string()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("passphrase_file: is ignored in file mode"),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].starts_with("split_size: is ignored in file mode"),
        "{warnings:#?}"
    );
    let text = format!("{BASE}mount_strategy = \"clone\"\n");
    let warnings = mode_warnings(&text);
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].line, Some(5));
    assert!(warnings[0].message.contains("intermediate mode"));
}
