//! Bad config files through the binary (issue 7): `zfs2cloud -c FILE
//! check-config` exits 2 (invalid configuration) with `zfs2cloud: error:`,
//! the file, the key and, where the TOML parser gives one, the line; it
//! never panics (exit 101). The core's `tests/bad_config.rs` covers every
//! key and type in process; this proves the same reaches the user.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INTERMEDIATE: &str = include_str!("../../../examples/intermediate.toml");
const PIPELINED: &str = include_str!("../../../examples/pipelined.toml");

const BASE: &str = "dataset = \"tank/data\"\nintermediate_basedir = \"/var/lib/zfs2cloud\"\n\
                    remote = \"b2:bucket/data\"\npassphrase_file = \"/etc/zfs2cloud/pass\"\n";

fn check_config(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zfs2cloud"))
        .env_remove("ZFS2CLOUD_CONFIG")
        .arg("-c")
        .arg(path)
        .arg("check-config")
        .output()
        .unwrap()
}

/// Exit 2 with one `zfs2cloud: error:` line naming the file, no panic;
/// returns stderr.
fn assert_config_error(path: &Path, what: &str) -> String {
    let out = check_config(path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(101), "{what}: a panic: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
    assert!(
        stderr.starts_with(&format!("zfs2cloud: error: {}", path.display()))
            || stderr.starts_with(&format!(
                "zfs2cloud: error: cannot read config file {}",
                path.display()
            )),
        "{what}: {stderr}"
    );
    assert_eq!(stderr.matches("zfs2cloud: error:").count(), 1, "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A bad config file: its name, its bytes, and what stderr must contain.
type Case = (&'static str, Vec<u8>, &'static [&'static str]);

/// The base config with `extra` appended: line 5 is the first of `extra`.
fn with(extra: &str) -> Vec<u8> {
    format!("{BASE}{extra}").into_bytes()
}

/// Files that are not TOML, or not UTF-8: the parser's error, with a line.
fn unparsable_cases() -> Vec<Case> {
    vec![
        (
            "empty",
            Vec::new(),
            &["dataset: is missing", "remote: is missing", "4 errors"],
        ),
        (
            "truncated",
            b"dataset = \"tank/da".to_vec(),
            &["line 1, column", "dataset = \"tank/da"],
        ),
        (
            "binary",
            b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x00".to_vec(),
            &["TOML parse error at line 1, column"],
        ),
        (
            "latin1",
            b"dataset = \"tank\"\nremote = \"r\xe9sum\xe9\"\n".to_vec(),
            &["line 2, column 12", "byte 0xe9 is not UTF-8"],
        ),
        (
            "nul",
            b"dataset = \"a\x00b\"\n".to_vec(),
            &["line 1, column 13"],
        ),
    ]
}

/// Values of the wrong type or sign: the key and its line.
fn wrong_type_cases() -> Vec<Case> {
    vec![
        (
            "wrong-type",
            with("full_every_x_days = \"thirty\"\n"),
            &[
                ".toml:5: full_every_x_days: ",
                "invalid type: string \"thirty\"",
            ],
        ),
        (
            "wrong-type-in-a-list",
            with("steps = [\n  \"snapshot\",\n  3,\n]\n"),
            &[".toml:7: steps[1]: ", "integer `3`"],
        ),
        (
            "wrong-type-hook",
            with("[hooks]\npre_snapshot = 3\n"),
            &[".toml:6: hooks.pre_snapshot: "],
        ),
        (
            "negative",
            with("upload_retries = -1\n"),
            &[".toml:5: upload_retries: ", "integer `-1`"],
        ),
        (
            "negative-size",
            with("split_size = -1\n"),
            &[".toml:5: split_size: ", "expected a size"],
        ),
    ]
}

/// Numbers too large for TOML or for the key's type.
fn too_large_cases() -> Vec<Case> {
    vec![
        (
            "huge",
            with("hook_timeout_seconds = 18446744073709551616\n"),
            &["line 5", "hook_timeout_seconds = 18446744073709551616"],
        ),
        (
            "huge-float",
            with("full_every_x_days = 1e400\n"),
            &["line 5", "full_every_x_days = 1e400"],
        ),
        (
            "huge-for-u32",
            with("upload_concurrency = 4294967296\n"),
            &[".toml:5: upload_concurrency: "],
        ),
        (
            "huge-size",
            with("split_size = \"99999999999T\"\n"),
            &[".toml:5: split_size: ", "the size is too large"],
        ),
    ]
}

/// Keys that do not exist, or one given under both of its names.
fn bad_key_cases() -> Vec<Case> {
    vec![
        (
            "unknown-key",
            with("fulle_every_x_days = 3\n"),
            &[
                ".toml:5: fulle_every_x_days: unknown field",
                "did you mean `full_every_x_days`?",
            ],
        ),
        (
            "unknown-hook",
            with("[hooks]\npre_snap = \"/bin/true\"\n"),
            &[".toml:6: hooks.pre_snap: unknown field `pre_snap`; did you mean `pre_snapshot`?"],
        ),
        (
            "both-names",
            with("zfs_fs = \"tank/other\"\n"),
            &["`dataset`", "`zfs_fs`"],
        ),
    ]
}

#[test]
fn bad_files_exit_2_naming_file_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        unparsable_cases(),
        wrong_type_cases(),
        too_large_cases(),
        bad_key_cases(),
    ];
    for (name, bytes, expects) in cases.into_iter().flatten() {
        let path = write(tmp.path(), &format!("{name}.toml"), &bytes);
        let stderr = assert_config_error(&path, name);
        for expect in expects {
            assert!(
                stderr.contains(expect),
                "{name}: {expect:?} not in: {stderr}"
            );
        }
    }
}

/// Not a readable file: the cause, once.
#[test]
fn unreadable_files_exit_2_naming_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.toml");
    let stderr = assert_config_error(&missing, "missing");
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
    let stderr = assert_config_error(tmp.path(), "a directory");
    assert!(stderr.contains("directory"), "{stderr}");
}

/// Prefixes of a shipped example are refused cleanly: by the parser with
/// a line, or for a missing or bad key by its name. (Even the whole file is
/// refused here: its passphrase file does not exist.) The core's test does
/// every byte-prefix in process; a process per prefix is sampled here: the
/// end, the middle and one byte short of each line, and inside each
/// multi-byte character.
fn prefixes(example: &str, name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = example.as_bytes();
    let mut ends = vec![0, bytes.len()];
    let mut start = 0;
    for line in example.split_inclusive('\n') {
        let len = line.len();
        ends.extend([start + len / 2, start + len.saturating_sub(2), start + len]);
        start += len;
    }
    ends.extend((1..bytes.len()).filter(|i| !example.is_char_boundary(*i)));
    ends.sort_unstable();
    ends.dedup();
    for end in ends {
        let path = write(tmp.path(), name, &bytes[..end]);
        let stderr = assert_config_error(&path, &format!("{name}[..{end}]"));
        assert!(
            stderr.contains("TOML parse error at line ")
                || stderr.contains("`: ")
                || names_a_key(&stderr, &path),
            "{name}[..{end}]: neither a line nor a key: {stderr}"
        );
    }
}

/// Whether a line of `stderr` is one of the file's errors: `<file>:<line>:
/// <key>: ...`, or `<file>: <key>: ...` for a key that is not written.
fn names_a_key(stderr: &str, path: &Path) -> bool {
    let file = path.display().to_string();
    stderr.lines().any(|l| {
        let l = l.strip_prefix("zfs2cloud: error: ").unwrap_or(l);
        let Some(rest) = l.strip_prefix(&file) else {
            return false;
        };
        let rest = match rest.strip_prefix(':') {
            Some(r) if r.starts_with(|c: char| c.is_ascii_digit()) => {
                r.trim_start_matches(|c: char| c.is_ascii_digit())
            }
            _ => rest,
        };
        rest.strip_prefix(": ")
            .and_then(|r| r.split_once(": "))
            .is_some_and(|(key, _)| !key.is_empty() && !key.contains(' '))
    })
}

#[test]
fn prefixes_of_the_intermediate_example_exit_2() {
    prefixes(INTERMEDIATE, "intermediate.toml");
}

#[test]
fn prefixes_of_the_pipelined_example_exit_2() {
    prefixes(PIPELINED, "pipelined.toml");
}
