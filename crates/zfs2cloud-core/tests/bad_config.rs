//! Bad config files (issue 7): empty, truncated, binary, wrong types,
//! negative and huge numbers, unknown keys. Each must be refused with an
//! error that names the file and the key, and the line wherever the TOML
//! parser knows it; none may panic. `crates/zfs2cloud-cli/tests/bad_config.rs`
//! checks the same through `zfs2cloud check-config`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use zfs2cloud_core::{Config, ConfigError};

const INTERMEDIATE: &str = include_str!("../../../examples/intermediate.toml");
const PIPELINED: &str = include_str!("../../../examples/pipelined.toml");

/// The required keys, one per line (lines 1 to 4).
const REQUIRED: [(&str, &str); 4] = [
    ("dataset", "\"tank/data\""),
    ("intermediate_basedir", "\"/var/lib/zfs2cloud\""),
    ("remote", "\"b2:bucket/data\""),
    ("passphrase_file", "\"/etc/zfs2cloud/pass\""),
];

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/zfs2cloud/bad.toml"))
}

/// The line a TOML parse error points at.
fn error_line(message: &str) -> Option<usize> {
    let rest = &message[message.find("TOML parse error at line ")? + 25..];
    rest[..rest.find(',')?].parse().ok()
}

/// A config of the required keys (without `key`'s canonical name) with
/// `key = value` added, in `[hooks]` for `hooks.*`; and that line's number.
fn config_with(key: &str, value: &str) -> (String, usize) {
    let canonical = match key {
        "zfs_fs" => "dataset",
        k => k,
    };
    let mut lines: Vec<String> = REQUIRED
        .iter()
        .filter(|(k, _)| *k != canonical)
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    // `hooks.pre_snapshot`, `retention.remote.keep_daily`: in their table.
    let bare = match key.rsplit_once('.') {
        Some((table, bare)) => {
            lines.push(format!("[{table}]"));
            bare
        }
        None => key,
    };
    lines.push(format!("{bare} = {value}"));
    let line = lines.len();
    (lines.join("\n") + "\n", line)
}

/// Refused, naming the file and `key` (as the message's leading key, or
/// as an invalid value's key), and line `line` if the parser gave one.
fn assert_refused_naming(text: &str, key: &str, line: usize) -> String {
    let err = parse(text).expect_err(text);
    let msg = err.to_string();
    assert!(msg.contains("/etc/zfs2cloud/bad.toml"), "no file in: {msg}");
    assert!(!msg.contains("Raw"), "an internal type name in: {msg}");
    match &err {
        ConfigError::Parse { message, .. } => {
            assert!(
                message.starts_with(&format!("`{key}")),
                "the key `{key}` does not lead: {msg}\n--- in:\n{text}"
            );
            assert_eq!(error_line(message), Some(line), "{msg}\n--- in:\n{text}");
        }
        ConfigError::Invalid { key: k, .. } => {
            assert_eq!(k, key.split('[').next().unwrap(), "{msg}");
        }
        ConfigError::Read { .. } | ConfigError::Many { .. } => unreachable!(),
    }
    msg
}

// The TOML texts of values of each type.
const INT: &str = "1";
const NEG: &str = "-1";
const FLOAT: &str = "1.5";
const BOOL: &str = "true";
const STR: &str = "\"x\"";
const STR_LIST: &str = "[\"a\"]";
const INT_LIST: &str = "[1]";
const MIXED_LIST: &str = "[\"a\", 2]";
const TABLE: &str = "{ a = 1 }";
const DATETIME: &str = "1979-05-27T07:32:00Z";
const ALL: [&str; 10] = [
    INT, NEG, FLOAT, BOOL, STR, STR_LIST, INT_LIST, MIXED_LIST, TABLE, DATETIME,
];

/// Every key and the values of a type it accepts.
const KEYS: &[(&str, &[&str])] = &[
    ("dataset", &[STR]),
    ("zfs_fs", &[STR]),
    ("intermediate_basedir", &[STR]),
    ("remote", &[STR]),
    ("rclone_config", &[STR]),
    ("rclone_conf", &[STR]),
    ("bwlimit", &[STR]),
    ("passphrase_file", &[STR]),
    ("zfs_path", &[STR]),
    ("gpg_path", &[STR]),
    ("rclone_path", &[STR]),
    // Enums: serde also takes `{ variant = ... }`.
    ("mode", &[STR, TABLE]),
    ("snapshot_time_zone", &[STR, TABLE]),
    ("mount_strategy", &[STR, TABLE]),
    ("incremental_strategy", &[STR, TABLE]),
    ("compression", &[STR, TABLE]),
    ("rclone_global_flags", &[STR_LIST]),
    ("rclone_args", &[STR_LIST]),
    ("steps", &[STR_LIST]),
    ("backup_sequences", &[STR_LIST]),
    ("upload_retries", &[INT]),
    ("upload_retry_delay_seconds", &[INT]),
    ("upload_stall_timeout_seconds", &[INT]),
    ("hook_timeout_seconds", &[INT]),
    ("full_every_x_days", &[INT]),
    ("oldest_snapshot_days", &[INT]),
    ("upload_concurrency", &[INT]),
    ("compression_level", &[INT, NEG]),
    ("split_size", &[INT, STR]),
    ("upload_while_exporting", &[BOOL]),
    ("keep_local_export", &[BOOL]),
    ("recursive", &[BOOL]),
    ("exclude", &[STR_LIST]),
    ("send_flags", &[STR_LIST]),
    ("encryption", &[STR, TABLE]),
    ("allow_unencrypted", &[BOOL]),
    ("hooks", &[TABLE]),
    ("step_timeouts", &[TABLE]),
    ("retention", &[TABLE]),
    // Refused with a migration hint, whatever it holds.
    ("encryption_passphrase", &[]),
    ("hooks.pre_snapshot", &[STR, STR_LIST]),
    ("hooks.post_snapshot", &[STR, STR_LIST]),
    ("hooks.on_failure", &[STR, STR_LIST]),
    ("hooks.on_success", &[STR, STR_LIST]),
    ("retention", &[TABLE]),
    ("retention.remote", &[TABLE]),
    ("retention.remote.keep_hourly", &[INT]),
    ("retention.remote.keep_daily", &[INT]),
    ("retention.remote.keep_weekly", &[INT]),
    ("retention.remote.keep_monthly", &[INT]),
    ("retention.remote.keep_yearly", &[INT]),
    ("retention.remote.keep_chains", &[INT]),
    ("retention.remote.incomplete_grace_hours", &[INT]),
];

#[test]
fn the_key_table_is_complete() {
    // Every key that `check-config` prints (the effective config) is here,
    // so a new key cannot skip the wrong-type checks.
    let text: String = REQUIRED
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    let shown = parse(&text).unwrap().to_effective_toml().unwrap();
    let shown: toml::Table = toml::from_str(&shown).unwrap();
    for key in shown.keys().filter(|k| *k != "tools" && *k != "hooks") {
        assert!(KEYS.iter().any(|(k, _)| k == key), "{key} is not tested");
    }
}

#[test]
fn wrong_types_name_the_key_and_the_line() {
    let mut checked = 0;
    for (key, accepted) in KEYS {
        for value in ALL.iter().filter(|v| !accepted.contains(v)) {
            let (text, line) = config_with(key, value);
            let msg = assert_refused_naming(&text, key, line);
            // The offending value is quoted or pointed at (the passphrase,
            // of course, is not repeated).
            assert!(
                msg.contains('^') || msg.contains(value) || *key == "encryption_passphrase",
                "{msg}"
            );
            checked += 1;
        }
    }
    assert!(checked > 250, "{checked}");
}

#[test]
fn negative_numbers_name_the_key_and_the_line() {
    for key in [
        "upload_retries",
        "upload_retry_delay_seconds",
        "upload_stall_timeout_seconds",
        "hook_timeout_seconds",
        "full_every_x_days",
        "oldest_snapshot_days",
        "upload_concurrency",
        "compression_level",
        "split_size",
    ] {
        for value in ["-1", "-9223372036854775808", "-1.0", "-inf"] {
            let (text, line) = config_with(key, value);
            let msg = assert_refused_naming(&text, key, line);
            if key == "compression_level" && value == "-1" {
                assert!(msg.contains("out of range"), "{msg}");
            }
        }
    }
    // A negative size written as text.
    let (text, _) = config_with("split_size", "\"-1G\"");
    let msg = assert_refused_naming(&text, "split_size", 0);
    assert!(msg.contains("invalid size \"-1G\""), "{msg}");
}

#[test]
fn huge_numbers_name_the_key_and_the_line() {
    let numeric = [
        "upload_retries",
        "upload_retry_delay_seconds",
        "upload_stall_timeout_seconds",
        "hook_timeout_seconds",
        "full_every_x_days",
        "oldest_snapshot_days",
        "upload_concurrency",
        "compression_level",
        "split_size",
    ];
    for key in numeric {
        // Beyond TOML's integers and floats: the parser itself refuses
        // them, on the key's line, before any key is known; the key shows
        // in the quoted line.
        for value in [
            "9223372036854775808",
            "18446744073709551616",
            "99999999999999999999999999",
            "1e400",
            "-1e400",
        ] {
            let (text, line) = config_with(key, value);
            let err = parse(&text).expect_err(&text);
            let msg = err.to_string();
            let ConfigError::Parse { message, .. } = &err else {
                panic!("{msg}");
            };
            assert_eq!(error_line(message), Some(line), "{msg}");
            assert!(msg.contains(&format!("{key} = {value}")), "{msg}");
        }
    }
    // Beyond the key's type (u32, i32) or its allowed range. A u64 of
    // seconds or bytes takes any TOML integer >= 0.
    for key in numeric {
        for value in ["4294967296", "9223372036854775807"] {
            if key == "hook_timeout_seconds" || key == "split_size" {
                continue;
            }
            let (text, line) = config_with(key, value);
            assert_refused_naming(&text, key, line);
        }
    }
    let (text, line) = config_with("hook_timeout_seconds", "9223372036854775807");
    let c = parse(&text).unwrap_or_else(|e| panic!("line {line}: {e}"));
    assert!(c.hook_timeout().is_some());
    // A size whose bytes overflow u64, and one below the minimum.
    for value in ["\"99999999999T\"", "\"17179869184G\"", "\"1e400\""] {
        let (text, _) = config_with("split_size", value);
        let msg = assert_refused_naming(&text, "split_size", 0);
        assert!(msg.contains("invalid size"), "{msg}");
    }
    let (text, _) = config_with("split_size", "\"16777216T\"");
    assert!(assert_refused_naming(&text, "split_size", 0).contains("too large"));
}

#[test]
fn unknown_keys_name_the_key_and_the_line() {
    let base: String = REQUIRED
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    for (extra, key, line) in [
        ("fulle_every_x_days = 3\n", "fulle_every_x_days", 5),
        ("DATASET = \"x\"\n", "DATASET", 5),
        ("\"quoted key\" = 1\n", "quoted key", 5),
        ("a.b = 1\n", "a", 5),
        ("[hooks]\npre_snap = \"/bin/true\"\n", "hooks.pre_snap", 6),
        (
            "[hooks]\non_failure = \"/bin/true\"\nextra.key = 1\n",
            "hooks.extra",
            7,
        ),
        ("[hook]\npre_snapshot = \"/bin/true\"\n", "hook", 5),
        // An array of tables where a table belongs.
        ("[[hooks]]\n", "hooks[0]", 5),
        (
            "hooks = { pre_snapshot = \"x\", nope = 1 }\n",
            "hooks.nope",
            5,
        ),
    ] {
        let text = format!("{base}{extra}");
        let msg = assert_refused_naming(&text, key, line);
        let last = key.rsplit('.').next().unwrap();
        assert!(
            msg.contains(&format!("unknown field `{last}`")) || key == "hooks[0]",
            "{msg}"
        );
    }
}

#[test]
fn empty_and_blank_files_say_what_is_missing() {
    for text in ["", "\n\n", "   \t\n", "# only a comment\n", "[hooks]\n"] {
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.contains("missing field `dataset`"), "{text:?}: {msg}");
        assert!(msg.contains("line 1"), "{text:?}: {msg}");
    }
}

/// Whether the last line of `prefix` is cut inside something that cannot
/// end there: a key without `=`, a string, an array, a table header.
fn cut_mid_construct(prefix: &str) -> bool {
    let last = prefix.rsplit('\n').next().unwrap().trim();
    if last.is_empty() || last.starts_with('#') {
        return false;
    }
    match last.split_once('=') {
        None => !(last.starts_with('[') && last.ends_with(']')),
        Some((_, value)) => {
            let value = value.trim();
            value.is_empty()
                || value.matches('"').count() % 2 == 1
                || value.matches('[').count() > value.matches(']').count()
        }
    }
}

/// Every byte-prefix of a valid example: refused with a well-formed error
/// or accepted; cut inside a construct, refused at the cut's line.
fn check_every_prefix(example: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prefix.toml");
    let mut at_cut = 0;
    for end in 0..=example.len() {
        let bytes = &example.as_bytes()[..end];
        std::fs::write(&path, bytes).unwrap();
        // load: the whole path a file takes, the UTF-8 check included.
        let result = Config::load(&path);
        let Ok(prefix) = std::str::from_utf8(bytes) else {
            // Cut inside a multi-byte character.
            let msg = result.unwrap_err().to_string();
            let line = bytes.iter().filter(|b| **b == b'\n').count() + 1;
            assert!(
                msg.contains(&format!("TOML parse error at line {line}, column")),
                "{msg}"
            );
            assert!(msg.contains("is not UTF-8"), "{msg}");
            continue;
        };
        let Err(err) = result else {
            continue;
        };
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        match &err {
            ConfigError::Parse { message, .. } => {
                let line = error_line(message).unwrap_or_else(|| panic!("no line: {msg}"));
                let lines = prefix.split('\n').count();
                assert!((1..=lines).contains(&line), "{msg}");
                if cut_mid_construct(prefix) {
                    assert_eq!(line, lines, "cut at byte {end}: {msg}");
                    at_cut += 1;
                }
            }
            ConfigError::Many { .. } => unreachable!("Config stops at the first error"),
            ConfigError::Invalid { key, .. } => {
                assert!(!key.is_empty(), "{msg}");
                // Ending inside a construct is never a valid document.
                assert!(!cut_mid_construct(prefix), "cut at byte {end}: {msg}");
            }
            ConfigError::Read { .. } => panic!("{msg}"),
        }
    }
    // Not vacuous: many prefixes end inside a construct.
    assert!(
        at_cut > example.len() / 5,
        "{at_cut} of {} prefixes",
        example.len()
    );
}

#[test]
fn every_prefix_of_the_intermediate_example() {
    check_every_prefix(INTERMEDIATE);
}

#[test]
fn every_prefix_of_the_pipelined_example() {
    assert!(!PIPELINED.is_ascii(), "has a multi-byte character to cut");
    check_every_prefix(PIPELINED);
}

#[test]
fn binary_files_are_refused_with_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("binary.toml");
    // A deterministic stream of pseudo-random bytes (xorshift).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut noise = Vec::new();
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push(x.to_le_bytes()[3]);
    }
    let elf: &[u8] = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (noise.clone(), "line "),
        (elf.to_vec(), "line 1, column"),
        (b"\xff\xfe".to_vec(), "line 1, column 1\n"),
        (
            b"dataset = \"tank\"\nremote = \"r\xe9sum\xe9\"\n".to_vec(),
            "line 2, column 12",
        ),
        (b"dataset = \"a\x00b\"\n".to_vec(), "line 1, column 13"),
        (b"\x00\x00\x00\x00".to_vec(), "line 1, column 1"),
        (b"dataset = \"tank\"\x1b[2J\n".to_vec(), "line 1, column 17"),
    ];
    for (bytes, position) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let msg = Config::load(&path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("TOML parse error at {position}")),
            "{bytes:?}: {msg}"
        );
    }
    // Pieces of the noise, wherever they start.
    for start in (0..noise.len()).step_by(97) {
        std::fs::write(&path, &noise[start..]).unwrap();
        let msg = Config::load(&path).unwrap_err().to_string();
        assert!(msg.contains("TOML parse error at line "), "{msg}");
    }
}
