//! Property-based fuzzing of everything that parses untrusted text: the
//! config loader, size strings, ZFS names, `zfs list` output, `rclone
//! lsjson` output, manifests, and the catalog functions that work on remote
//! listings. Nothing may panic on any input; where a generator of valid
//! input is easy, what is printed is parsed back unchanged.
//!
//! Bounded so the whole file runs in well under a minute in a debug build.
//! For a longer run (the case count applies to each property):
//!
//! ```sh
//! PROPTEST_CASES=100000 cargo test -p zfs2cloud-core --test fuzz --release
//! ```
//!
//! A failing case is shrunk and printed; its seed is kept under the target
//! directory (`target/tmp/proptest-regressions/`), never in the source tree.
//! Turn a real finding into a unit test next to the code it fixes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use zfs2cloud_core::ExportKind;
use zfs2cloud_core::RemoteFile;
use zfs2cloud_core::{chains, check_listing, list_remote_backups, Health, Listing, RemoteBackup};
use zfs2cloud_core::{parse_lsjson, parse_lsjson_stat};
use zfs2cloud_core::{parse_snapshot_list, ZfsError};
use zfs2cloud_core::{plan_restore, RestorePoint};
use zfs2cloud_core::{ByteSize, Config, ConfigError};
use zfs2cloud_core::{ChunkEntry, Manifest, MANIFEST_FILE};
use zfs2cloud_core::{DatasetName, SnapTime, SnapshotName};

use common::LocalDirRemote;

// ---------------------------------------------------------------------------
// Harness

/// `cases` per property unless `PROPTEST_CASES` says otherwise; failure seeds
/// go to the target directory.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(concat!(
        env!("CARGO_TARGET_TMPDIR"),
        "/proptest-regressions/fuzz.txt"
    ))));
    c
}

const CONFIG_PATH: &str = "/etc/zfs2cloud/fuzz.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    let result = Config::parse(text, Path::new(CONFIG_PATH));
    // The pass that finds every error of a refused file meets the same
    // texts: it must not panic, and the lines it gives are the text's.
    // One text in eight (by length), to keep the suite's time.
    if result.is_err() && text.len().is_multiple_of(8) {
        let diagnostics = zfs2cloud_core::diagnose(text, Path::new(CONFIG_PATH));
        let lines = text.split('\n').count();
        assert!(
            diagnostics
                .iter()
                .all(|d| d.line.is_none_or(|l| (1..=lines).contains(&l))),
            "{diagnostics:?}"
        );
    }
    result
}

const EXAMPLES: [(&str, &str); 5] = [
    (
        "intermediate.toml",
        include_str!("../../../examples/intermediate.toml"),
    ),
    (
        "pipelined.toml",
        include_str!("../../../examples/pipelined.toml"),
    ),
    (
        "file-mode.toml",
        include_str!("../../../examples/file-mode.toml"),
    ),
    (
        "minimal.toml",
        include_str!("../../../examples/minimal.toml"),
    ),
    (
        "migrated-from-python.toml",
        include_str!("../../../examples/migrated-from-python.toml"),
    ),
];

/// Every key the config accepts, with its aliases, top level and `[hooks]`.
const TOP_KEYS: &[&str] = &[
    "dataset",
    "zfs_fs",
    "mode",
    "intermediate_basedir",
    "remote",
    "rclone_config",
    "rclone_conf",
    "rclone_global_flags",
    "rclone_args",
    "bwlimit",
    "upload_retries",
    "upload_retry_delay_seconds",
    "upload_stall_timeout_seconds",
    "hook_timeout_seconds",
    "split_size",
    "full_every_x_days",
    "oldest_snapshot_days",
    "passphrase_file",
    "encryption_passphrase",
    "steps",
    "backup_sequences",
    "hooks",
    "snapshot_time_zone",
    "mount_strategy",
    "incremental_strategy",
    "upload_while_exporting",
    "upload_concurrency",
    "keep_local_export",
    "compression",
    "compression_level",
    "zfs_path",
    "gpg_path",
    "rclone_path",
];
const HOOK_KEYS: &[&str] = &["pre_snapshot", "post_snapshot", "on_failure", "on_success"];

fn is_known_key(key: &str) -> bool {
    let key = key.strip_prefix("hooks.").unwrap_or(key);
    TOP_KEYS.contains(&key) || HOOK_KEYS.contains(&key)
}

/// The line number a TOML parse error points at, if it names one.
fn error_line(message: &str) -> Option<usize> {
    let rest = &message[message.find("TOML parse error at line ")? + 25..];
    rest[..rest.find(',')?].parse().ok()
}

/// What every config error must look like: it names the file; a bad value
/// names a real key; a parse error says where (`line N, column M`, with N a
/// line of the text).
fn assert_well_formed(err: &ConfigError, text: &str) {
    let shown = err.to_string();
    assert!(shown.contains(CONFIG_PATH), "no file name in: {shown}");
    match err {
        ConfigError::Invalid { key, message, .. } => {
            assert!(is_known_key(key), "unknown key {key:?} in: {shown}");
            assert!(!message.trim().is_empty(), "empty message: {shown}");
        }
        ConfigError::Parse { message, .. } => {
            let line = error_line(message)
                .unwrap_or_else(|| panic!("a parse error without a line: {shown}"));
            let lines = text.split('\n').count();
            assert!(
                (1..=lines).contains(&line),
                "line {line} of a {lines}-line text: {shown}"
            );
        }
        ConfigError::Read { .. } => panic!("parse never reads a file: {shown}"),
        ConfigError::Many { .. } => panic!("Config::parse stops at the first error: {shown}"),
    }
}

/// What every accepted config must satisfy: the rules `Config::parse`
/// promises, and a printable effective configuration.
fn assert_valid_config(c: &Config) {
    assert!(c.split_size.0 >= 1024, "{:?}", c.split_size);
    assert!(c.full_every_x_days >= 1);
    // Unset exactly when [retention.local] replaces it.
    assert_eq!(
        c.oldest_snapshot_days.is_none(),
        c.retention.local.is_some()
    );
    assert!(c
        .oldest_snapshot_days
        .is_none_or(|d| d > c.full_every_x_days));
    assert!(c.upload_retries <= 100);
    assert!(c.upload_stall_timeout_seconds <= 24 * 3600);
    assert!((1..=16).contains(&c.upload_concurrency));
    assert!((1..=19).contains(&c.compression_level));
    assert!(c.keep_local_export || c.upload_while_exporting);
    assert!(!c.steps.is_empty());
    assert!(!c.remote.trim().is_empty() && !c.remote.starts_with('-'));
    assert!(DatasetName::parse(c.dataset.as_str()).is_ok());
    let shown = c
        .to_effective_toml()
        .unwrap_or_else(|e| panic!("an accepted config cannot be shown: {e}\n{c:#?}"));
    assert!(shown.contains("dataset = "), "{shown}");
}

fn check_config_text(text: &str) -> Result<Config, ConfigError> {
    let result = parse(text);
    match &result {
        Ok(c) => assert_valid_config(c),
        Err(e) => assert_well_formed(e, text),
    }
    result
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

// ---------------------------------------------------------------------------
// Config: random values and their types

/// The TOML type of a generated value, to know when a key must refuse it.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Int(i128),
    Float,
    Bool,
    Str,
    Datetime,
    /// An array; `true` if every element is a string.
    Array(bool),
    Table,
    /// An integer beyond TOML's i64: a parse error on its own line.
    HugeInt,
    /// Text that is not a TOML value at all; the parser may report it on a
    /// later line (an unterminated string or array swallows what follows).
    Junk,
}

/// An integer: any i64, small ones, and the edges of u32, i32, u64 and
/// TOML's i64.
fn int_value() -> impl Strategy<Value = (Kind, String)> {
    prop_oneof![
        any::<i64>().prop_map(i128::from),
        (-3i128..=40),
        Just(i128::from(u32::MAX)),
        Just(i128::from(u32::MAX) + 1),
        Just(i128::from(i32::MAX) + 1),
        Just(i128::from(u64::MAX)),
        Just(i128::from(u64::MAX) + 1),
        Just(99_999_999_999_999_999_999_999),
    ]
    .prop_map(|n| {
        // TOML integers are i64; anything larger is a parse error.
        let kind = if i64::try_from(n).is_ok() {
            Kind::Int(n)
        } else {
            Kind::HugeInt
        };
        (kind, n.to_string())
    })
}

/// A float, the special values among them.
fn float_value() -> impl Strategy<Value = (Kind, String)> {
    prop_oneof![
        Just("1.5".to_owned()),
        Just("-0.0".to_owned()),
        Just("inf".to_owned()),
        Just("-inf".to_owned()),
        Just("nan".to_owned()),
        Just("1e10".to_owned()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
    ]
    .prop_map(|s| (Kind::Float, s))
}

/// A string: some a key may accept, some near misses, anything.
fn string_value() -> impl Strategy<Value = (Kind, String)> {
    prop_oneof![
        Just(String::new()),
        Just("1G".to_owned()),
        Just("99999999999T".to_owned()),
        Just("-1G".to_owned()),
        Just("0".to_owned()),
        Just("systemctl stop app".to_owned()),
        Just("tank/data".to_owned()),
        Just("file".to_owned()),
        Just("zstd".to_owned()),
        Just("--flag".to_owned()),
        "[ -~]{0,16}",
        any::<String>(),
    ]
    .prop_map(|s| (Kind::Str, toml_string(&s)))
}

/// Text that is no TOML value.
fn junk_value() -> impl Strategy<Value = (Kind, String)> {
    prop_oneof![
        Just("1e400".to_owned()),
        Just("-1e400".to_owned()),
        Just("0x".to_owned()),
        Just("\"unterminated".to_owned()),
        Just("[1, 2".to_owned()),
        Just("99999999999T".to_owned()),
        Just("'''".to_owned()),
        Just("{ a = 1".to_owned()),
    ]
    .prop_map(|s| (Kind::Junk, s))
}

/// An array of `items`: junk if an item is.
fn array_value(items: &[(Kind, String)]) -> (Kind, String) {
    let junk = items
        .iter()
        .any(|(k, _)| matches!(k, Kind::Junk | Kind::HugeInt));
    let all_strings = items.iter().all(|(k, _)| *k == Kind::Str);
    let text = format!(
        "[{}]",
        items
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    (
        if junk {
            Kind::Junk
        } else {
            Kind::Array(all_strings)
        },
        text,
    )
}

/// An inline table of `kvs`: junk if a value is, or a key repeats.
fn inline_table_value(kvs: &[(String, (Kind, String))]) -> (Kind, String) {
    let junk = kvs
        .iter()
        .any(|(_, (k, _))| matches!(k, Kind::Junk | Kind::HugeInt))
        || kvs
            .iter()
            .enumerate()
            .any(|(i, (key, _))| kvs[..i].iter().any(|(k, _)| k == key));
    let text = format!(
        "{{ {} }}",
        kvs.iter()
            .map(|(k, (_, v))| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    (if junk { Kind::Junk } else { Kind::Table }, text)
}

/// A TOML value and its kind: a leaf, or arrays and inline tables of
/// them, nested up to two deep.
fn toml_value() -> impl Strategy<Value = (Kind, String)> {
    let leaf = prop_oneof![
        4 => int_value(),
        2 => float_value(),
        1 => any::<bool>().prop_map(|b| (Kind::Bool, b.to_string())),
        4 => string_value(),
        1 => Just((Kind::Datetime, "1979-05-27T07:32:00Z".to_owned())),
        1 => junk_value(),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|items| array_value(&items)),
            vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|kvs| inline_table_value(&kvs)),
        ]
    })
}

/// Whether `key` must refuse a value of `kind` whatever its content (a
/// wrong type, a negative or too large number), with an error on the
/// key's line. `false` where it may be fine, and for junk that the parser
/// may report on another line.
fn must_refuse(key: &str, kind: &Kind) -> bool {
    if *kind == Kind::Junk {
        return false;
    }
    let uint = |max: i128| !matches!(kind, Kind::Int(n) if (0..=max).contains(n));
    match key {
        "dataset"
        | "zfs_fs"
        | "intermediate_basedir"
        | "remote"
        | "rclone_config"
        | "rclone_conf"
        | "bwlimit"
        | "passphrase_file"
        | "zfs_path"
        | "gpg_path"
        | "rclone_path" => *kind != Kind::Str,
        // Enums: a string, or (serde's other spelling) a table.
        "mode"
        | "snapshot_time_zone"
        | "mount_strategy"
        | "incremental_strategy"
        | "compression" => !matches!(kind, Kind::Str | Kind::Table),
        "rclone_global_flags" | "rclone_args" | "steps" | "backup_sequences" => {
            *kind != Kind::Array(true)
        }
        "upload_retries" | "full_every_x_days" | "oldest_snapshot_days" | "upload_concurrency" => {
            uint(i128::from(u32::MAX))
        }
        "upload_retry_delay_seconds" | "upload_stall_timeout_seconds" | "hook_timeout_seconds" => {
            uint(i128::from(u64::MAX))
        }
        "compression_level" => !matches!(kind, Kind::Int(n) if i32::try_from(*n).is_ok()),
        "split_size" => !matches!(kind, Kind::Str) && uint(i128::from(u64::MAX)),
        "upload_while_exporting" | "keep_local_export" => *kind != Kind::Bool,
        "pre_snapshot" | "post_snapshot" | "on_failure" | "on_success" => {
            !matches!(kind, Kind::Str | Kind::Array(true))
        }
        "hooks" => *kind != Kind::Table,
        // Refused with a migration hint whatever it holds.
        "encryption_passphrase" => true,
        _ => true,
    }
}

/// One-line `key = value` lines of a config text: (line index, key). The
/// first line of a multi-line array is left out.
fn key_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (k, v) = l.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()
                && !l.trim_start().starts_with('#')
                && !k.contains(' ')
                && !v.trim_end().ends_with('['))
            .then(|| (i, k.to_owned()))
        })
        .collect()
}

/// A valid example config, and a mutation of it.
#[derive(Debug, Clone)]
enum Mutation {
    DropLine(usize),
    DuplicateLine(usize),
    ReplaceValue(usize, (Kind, String)),
    InsertKey(usize, String, (Kind, String)),
}

fn example_and_mutation() -> impl Strategy<Value = (usize, Mutation)> {
    let key = prop_oneof![
        proptest::sample::select(TOP_KEYS).prop_map(str::to_owned),
        proptest::sample::select(HOOK_KEYS).prop_map(str::to_owned),
        "[a-z][a-z_]{0,20}",
        "[a-z]{1,5}\\.[a-z]{1,5}",
    ];
    (
        0..EXAMPLES.len(),
        any::<prop::sample::Index>(),
        prop_oneof![
            1 => Just(0u8),
            1 => Just(1u8),
            3 => Just(2u8),
            3 => Just(3u8),
        ],
        toml_value(),
        key,
    )
        .prop_map(|(example, index, what, value, key)| {
            let text = EXAMPLES[example].1;
            let lines = text.lines().count();
            let mutation = match what {
                0 => Mutation::DropLine(index.index(lines)),
                1 => Mutation::DuplicateLine(index.index(lines)),
                2 => {
                    let keyed = key_lines(text);
                    Mutation::ReplaceValue(index.get(&keyed).0, value)
                }
                _ => Mutation::InsertKey(index.index(lines + 1), key, value),
            };
            (example, mutation)
        })
}

/// The section (`""` or `"hooks"`) that line `index` of `lines` is in.
fn section_at(lines: &[&str], index: usize) -> String {
    lines[..index]
        .iter()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            (l.starts_with('[') && l.ends_with(']') && !l.contains('='))
                .then(|| l.trim_matches(['[', ']']).trim().to_owned())
        })
        .unwrap_or_default()
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    match mutation {
        Mutation::DropLine(i) => {
            lines.remove(*i);
        }
        Mutation::DuplicateLine(i) => {
            let l = lines[*i].clone();
            lines.insert(*i, l);
        }
        Mutation::ReplaceValue(i, (_, value)) => {
            let (k, _) = lines[*i].split_once('=').unwrap();
            lines[*i] = format!("{k}= {value}");
        }
        Mutation::InsertKey(i, key, (_, value)) => lines.insert(*i, format!("{key} = {value}")),
    }
    lines.join("\n") + "\n"
}

proptest! {
    #![proptest_config(config(1200))]

    #[test]
    fn config_parse_never_panics_on_strings(text in any::<String>()) {
        let _ = check_config_text(&text);
    }

    #[test]
    fn config_parse_never_panics_on_toml_like_text(
        text in "([a-z_]{1,12}( ?= ?)?|\\[hooks\\]|[\\[\\]{},.=\"'#\n -]|[0-9]{1,25}|\n){0,40}"
    ) {
        let _ = check_config_text(&text);
    }

    #[test]
    fn config_parse_never_panics_on_bytes(bytes in vec(any::<u8>(), 0..512)) {
        let _ = check_config_text(&String::from_utf8_lossy(&bytes));
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Structured mutations of the shipped examples: a dropped or doubled
    /// line, a value replaced by a random TOML value, a random key inserted.
    #[test]
    fn config_mutations_fail_clearly((example, mutation) in example_and_mutation()) {
        let original = EXAMPLES[example].1;
        let text = apply(original, &mutation);
        let result = check_config_text(&text);
        let lines: Vec<&str> = original.lines().collect();
        match &mutation {
            Mutation::DropLine(_) => {}
            Mutation::DuplicateLine(i) => {
                let line = lines[*i].trim();
                let keyed = key_lines(original).into_iter().find(|(j, _)| j == i);
                let name = match keyed {
                    Some((_, key)) => Some(key),
                    None if line.starts_with('[') && line.ends_with(']') => {
                        Some(line.trim_matches(['[', ']']).trim().to_owned())
                    }
                    None => None,
                };
                if line.is_empty() || line.starts_with('#') {
                    prop_assert!(result.is_ok(), "{:?}", result.err());
                } else if let Some(name) = name {
                    // A doubled key or table header.
                    let err = result.as_ref().expect_err("a doubled line must be refused").to_string();
                    prop_assert!(err.contains(&name), "{name} not named in: {err}");
                }
            }
            Mutation::ReplaceValue(i, (kind, _)) => {
                let key = lines[*i].split_once('=').unwrap().0.trim();
                if must_refuse(key, kind) {
                    let err = result.as_ref().expect_err("a wrong type must be refused").to_string();
                    prop_assert!(err.contains(key), "{key} not named in: {err}");
                }
            }
            Mutation::InsertKey(i, key, (kind, _)) => {
                let section = section_at(&lines, *i);
                let known = if section.is_empty() {
                    TOP_KEYS.contains(&key.as_str())
                } else {
                    HOOK_KEYS.contains(&key.as_str())
                };
                let already = key_lines(original).iter().any(|(j, k)| {
                    k == key && section_at(&lines, *j) == section
                });
                if (!known || already || must_refuse(key, kind)) && *kind != Kind::Junk {
                    let err = result.as_ref().expect_err("must be refused").to_string();
                    // A dotted key is reported by its first part.
                    let first = key.split('.').next().unwrap();
                    prop_assert!(err.contains(first), "{first} not named in: {err}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Sizes

const UNITS: [(&str, u64); 13] = [
    ("", 1),
    ("B", 1),
    ("K", 1 << 10),
    ("KiB", 1 << 10),
    ("M", 1 << 20),
    ("MiB", 1 << 20),
    ("G", 1 << 30),
    ("g", 1 << 30),
    ("GiB", 1 << 30),
    ("T", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
];

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn byte_size_parse_never_panics(s in prop_oneof![any::<String>(), "[0-9 ]{0,25}[KMGTBkmgtib ]{0,4}"]) {
        if let Ok(size) = ByteSize::parse(&s) {
            prop_assert!(size.0 > 0);
            prop_assert_eq!(ByteSize::parse(&size.to_string()), Ok(size));
        }
    }

    #[test]
    fn byte_size_display_round_trips(n in prop_oneof![1..=u64::MAX, (1u64..=1 << 24).prop_map(|n| n << 30), 1u64..5000]) {
        prop_assert_eq!(ByteSize::parse(&ByteSize(n).to_string()), Ok(ByteSize(n)));
    }

    /// `<number><unit>` is the number times the unit, or refused if that is
    /// zero or does not fit in 64 bits.
    #[test]
    fn byte_size_arithmetic(n in prop_oneof![any::<u64>(), 0u64..100_000], unit in proptest::sample::select(&UNITS[..])) {
        let parsed = ByteSize::parse(&format!("{n}{}", unit.0));
        match n.checked_mul(unit.1).filter(|b| *b > 0) {
            Some(bytes) => prop_assert_eq!(parsed, Ok(ByteSize(bytes))),
            None => prop_assert!(parsed.is_err()),
        }
    }
}

// ---------------------------------------------------------------------------
// ZFS names

/// ZFS's rules for a dataset name, as documented in `names.rs` (from
/// `zfs_namecheck.c`), written independently of the implementation.
fn dataset_name_ok(name: &str) -> bool {
    let chars_ok = |c: &str| {
        c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.: ".contains(ch))
    };
    !name.is_empty()
        && name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && chars_ok(c))
}

/// The same for `dataset@snap`: one `@`, and a snapshot part that is a
/// valid component (ZFS refuses `.` and `..` there too).
fn snapshot_name_ok(full: &str) -> bool {
    let Some((ds, snap)) = full.split_once('@') else {
        return false;
    };
    dataset_name_ok(ds)
        && full.len() <= 255
        && !snap.is_empty()
        && snap != "."
        && snap != ".."
        && snap
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.: ".contains(ch))
}

fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9./@#:_ %$;-]{0,24}",
        "[a-z][a-z0-9]{0,3}(/[a-z.]{1,3}){0,3}(@[a-z0-9.]{0,3}){0,2}",
        // Around the 255-byte limit.
        (200usize..300).prop_map(|n| format!("t/{}", "a".repeat(n))),
        (200usize..300).prop_map(|n| format!("tank@{}", "1".repeat(n))),
    ]
}

proptest! {
    #![proptest_config(config(2500))]

    #[test]
    fn dataset_names_follow_the_documented_rules(name in name_like()) {
        let parsed = DatasetName::parse(&name);
        prop_assert_eq!(parsed.is_ok(), dataset_name_ok(&name), "{:?}: {:?}", name, parsed);
        if let Ok(d) = parsed {
            prop_assert_eq!(d.as_str(), name.as_str());
            prop_assert_eq!(d.to_string(), name);
        }
    }

    #[test]
    fn snapshot_names_follow_the_documented_rules(name in name_like()) {
        let parsed = SnapshotName::parse(&name);
        prop_assert_eq!(parsed.is_ok(), snapshot_name_ok(&name), "{:?}: {:?}", name, parsed);
        if let Ok(s) = parsed {
            prop_assert_eq!(s.to_string(), name.clone());
            prop_assert_eq!(format!("{}@{}", s.dataset(), s.snap()), name);
        }
    }

    #[test]
    fn snap_time_accepts_exactly_valid_timestamps(s in prop_oneof![any::<String>(), "[0-9]{12,16}", "20[0-9]{2}[01][0-9][0-3][0-9][0-2][0-9][0-5][0-9][0-6][0-9]"]) {
        if let Some(t) = SnapTime::parse(&s) {
            prop_assert_eq!(t.to_string(), s);
        }
    }
}

// ---------------------------------------------------------------------------
// `zfs list -H -o name,userrefs,zfs2cloud:kind,zfs2cloud:base,zfs2cloud:uploaded`

fn prop_value() -> impl Strategy<Value = Option<String>> {
    // A property value as `zfs list -H` prints it: no tab or newline; `-`
    // means unset.
    prop::option::of("[!-~][ -~]{0,30}".prop_filter("not '-'", |v| v != "-"))
}

#[derive(Debug, Clone)]
struct Row {
    ours: bool,
    snap: String,
    userrefs: u64,
    kind: Option<ExportKind>,
    base: Option<String>,
    uploaded: Option<String>,
}

fn row() -> impl Strategy<Value = Row> {
    (
        prop::bool::weighted(0.8),
        "[a-zA-Z0-9_.:-][a-zA-Z0-9_.: -]{0,20}"
            .prop_filter("not . or ..", |s| s != "." && s != ".."),
        any::<u64>(),
        prop::option::of(prop_oneof![
            Just(ExportKind::Full),
            Just(ExportKind::Incremental)
        ]),
        prop_value(),
        prop_value(),
    )
        .prop_map(|(ours, snap, userrefs, kind, base, uploaded)| Row {
            ours,
            snap,
            userrefs,
            kind,
            base,
            uploaded,
        })
}

fn zfs_list_line(r: &Row) -> String {
    let ds = if r.ours { "zt1/data" } else { "zt1/data/child" };
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    format!(
        "{ds}@{}\t{}\t{}\t{}\t{}\n",
        r.snap,
        r.userrefs,
        r.kind.map_or("-", ExportKind::as_str),
        dash(&r.base),
        dash(&r.uploaded)
    )
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn zfs_list_parser_never_panics(text in prop_oneof![
        any::<String>(),
        "([a-z/@0-9]{0,12}\t?){0,7}(\n([a-z/@0-9-]{0,12}\t?){0,7}){0,4}",
    ]) {
        let ds = DatasetName::parse("zt1/data").unwrap();
        match parse_snapshot_list(&ds, "zfs list", &text) {
            Ok(snaps) => {
                for s in snaps {
                    prop_assert_eq!(s.name.dataset(), &ds);
                }
            }
            Err(e) => prop_assert!(matches!(e, ZfsError::Parse { .. }), "{e}"),
        }
    }

    #[test]
    fn zfs_list_round_trips(rows in vec(row(), 0..8), crlf in any::<bool>()) {
        let ds = DatasetName::parse("zt1/data").unwrap();
        let mut text: String = rows.iter().map(zfs_list_line).collect();
        if crlf {
            text = text.replace('\n', "\r\n");
        }
        let snaps = parse_snapshot_list(&ds, "zfs list", &text).unwrap();
        let ours: Vec<&Row> = rows.iter().filter(|r| r.ours).collect();
        prop_assert_eq!(snaps.len(), ours.len());
        for (s, r) in snaps.iter().zip(ours) {
            prop_assert_eq!(s.name.to_string(), format!("zt1/data@{}", r.snap));
            prop_assert_eq!(s.userrefs, r.userrefs);
            prop_assert_eq!(s.kind, r.kind);
            prop_assert_eq!(&s.base, &r.base);
            prop_assert_eq!(&s.uploaded, &r.uploaded);
        }
    }
}

// ---------------------------------------------------------------------------
// `rclone lsjson`

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[a-f0-9]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        let key = prop_oneof![
            Just("Name".to_owned()),
            Just("Size".to_owned()),
            Just("IsDir".to_owned()),
            Just("Hashes".to_owned()),
            Just("sha256".to_owned()),
            "[A-Za-z]{0,6}",
        ];
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    size: i64,
    is_dir: bool,
    hashes: BTreeMap<String, String>,
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        any::<String>(),
        prop_oneof![0i64..1 << 40, any::<i64>()],
        any::<bool>(),
        prop::collection::btree_map(
            prop_oneof![
                Just("sha256".to_owned()),
                Just("md5".to_owned()),
                "[a-z0-9]{1,6}"
            ],
            prop_oneof![Just(String::new()), "[a-fA-F0-9]{64}"],
            0..3,
        ),
    )
        .prop_map(|(name, size, is_dir, hashes)| Entry {
            name,
            size,
            is_dir,
            hashes,
        })
}

fn entry_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "Path": e.name, "Name": e.name, "Size": e.size, "MimeType": "application/octet-stream",
        "ModTime": "2024-01-01T00:00:00.000000000Z", "IsDir": e.is_dir, "Hashes": e.hashes,
    })
}

fn expected_file(e: &Entry) -> Option<RemoteFile> {
    Some(RemoteFile {
        name: e.name.clone(),
        size: u64::try_from(e.size).ok()?,
        sha256: e
            .hashes
            .get("sha256")
            .filter(|h| !h.is_empty())
            .map(|h| h.to_ascii_lowercase()),
    })
}

proptest! {
    #![proptest_config(config(1200))]

    #[test]
    fn lsjson_parsers_never_panic(text in prop_oneof![
        any::<String>(),
        json_value().prop_map(|v| v.to_string()),
        vec(json_value(), 0..4).prop_map(|v| serde_json::Value::Array(v).to_string()),
    ]) {
        let _ = parse_lsjson(&text);
        let _ = parse_lsjson_stat(&text);
    }

    #[test]
    fn lsjson_round_trips(entries in vec(entry(), 0..6)) {
        let text = serde_json::Value::Array(entries.iter().map(entry_json).collect()).to_string();
        let files: Vec<&Entry> = entries.iter().filter(|e| !e.is_dir).collect();
        let expected: Option<Vec<RemoteFile>> = files.iter().map(|e| expected_file(e)).collect();
        match (parse_lsjson(&text), expected) {
            (Ok(got), Some(want)) => prop_assert_eq!(got, want),
            (Err(msg), None) => {
                // A negative size is refused, naming the file.
                let bad = files.iter().find(|e| e.size < 0).unwrap();
                prop_assert!(msg.contains(&bad.name) && msg.contains(&bad.size.to_string()), "{msg}");
            }
            (got, want) => prop_assert!(false, "got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn lsjson_stat_round_trips(e in entry()) {
        let got = parse_lsjson_stat(&entry_json(&e).to_string());
        if e.is_dir {
            prop_assert!(got.is_err());
        } else {
            match expected_file(&e) {
                Some(want) => prop_assert_eq!(got, Ok(want)),
                None => prop_assert!(got.is_err()),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Manifests and the catalog of remote backups

fn snap_time() -> impl Strategy<Value = String> {
    (
        2000u32..2100,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
    )
        .prop_map(|(y, mo, d, h, mi, s)| format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}"))
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        any::<u32>(),
        any::<String>(),
        prop_oneof![snap_time(), any::<String>()],
        any::<bool>(),
        prop::option::of(prop_oneof![snap_time(), any::<String>()]),
        any::<(u64, u64)>(),
        vec(
            (
                prop_oneof!["c\\.000[0-3]", any::<String>()],
                prop_oneof![0u64..8, any::<u64>()],
                prop_oneof!["[ab]", "[0-9a-f]{64}"],
            ),
            0..5,
        ),
    )
        .prop_map(
            |(format, text, snapshot, full, base, (split, total), chunks)| Manifest {
                format,
                tool: "zfs2cloud".into(),
                tool_version: text.clone(),
                dataset: text.clone(),
                snapshot,
                kind: if full {
                    ExportKind::Full
                } else {
                    ExportKind::Incremental
                },
                base,
                created_at: text.clone(),
                encryption: text.clone(),
                compression: text,
                split_size: split,
                total_size: total,
                chunks: chunks
                    .into_iter()
                    .map(|(name, size, sha256)| ChunkEntry { name, size, sha256 })
                    .collect(),
                send_flags: zfs2cloud_core::SendFlags::default(),
                level: split.checked_rem(4).and_then(|l| u32::try_from(l).ok()),
                recipients: Vec::new(),
            },
        )
}

/// A remote backup as the catalog would build it, with a random listing
/// that partly matches its manifest.
fn remote_backup() -> impl Strategy<Value = RemoteBackup> {
    (
        snap_time(),
        any::<bool>(),
        prop::option::of(manifest()),
        prop::option::of(any::<String>()),
        vec(
            (
                prop_oneof![
                    "c\\.000[0-3]",
                    "d@s\\.zfs\\.gpg\\.[0-9]{1,5}",
                    any::<String>()
                ],
                0u64..8,
                prop::option::of(prop_oneof!["[ab]", "[0-9a-f]{64}"]),
            ),
            0..6,
        ),
    )
        .prop_map(|(snapshot, full, manifest, manifest_error, files)| {
            let kind = if full {
                ExportKind::Full
            } else {
                ExportKind::Incremental
            };
            let dir_name = if full {
                format!("{snapshot}-full")
            } else {
                snapshot.clone()
            };
            RemoteBackup {
                dir_name,
                snapshot,
                kind,
                manifest,
                manifest_error,
                files: files
                    .into_iter()
                    .map(|(name, size, sha256)| RemoteFile { name, size, sha256 })
                    .collect(),
            }
        })
}

proptest! {
    #![proptest_config(config(1200))]

    #[test]
    fn manifest_deserialization_never_panics(text in prop_oneof![
        any::<String>(),
        json_value().prop_map(|v| v.to_string()),
        manifest().prop_map(|m| {
            // A valid manifest with one field broken or removed.
            let mut v = serde_json::to_value(m).unwrap();
            if let Some(o) = v.as_object_mut() {
                let k = o.keys().next().cloned().unwrap();
                o.insert(k, serde_json::json!(-1));
            }
            v.to_string()
        }),
    ]) {
        let _ = serde_json::from_str::<Manifest>(&text);
        let _ = serde_json::from_slice::<Manifest>(text.as_bytes());
    }

    #[test]
    fn manifest_round_trips(m in manifest()) {
        let text = serde_json::to_string_pretty(&m).unwrap();
        prop_assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
    }

    /// OK means every manifest chunk is listed with its size, and with its
    /// SHA-256 where the listing has one; a manifest that could not be read
    /// is never OK and never restored as manifest-less.
    #[test]
    fn check_listing_is_sound(b in remote_backup()) {
        let health = check_listing(&b);
        let names = b.chunk_names();
        if b.manifest_error.is_some() {
            prop_assert!(matches!(health, Health::Damaged(_)), "{health:?}");
            prop_assert!(names.is_empty());
            return Ok(());
        }
        let Some(m) = &b.manifest else {
            prop_assert!(matches!(health, Health::Incomplete(_)), "{health:?}");
            // The original tool's chunks, in numeric order.
            let suffix = |n: &String| n.rsplit_once(".zfs.gpg.").unwrap().1.parse::<u64>().unwrap();
            prop_assert!(names.windows(2).all(|w| suffix(&w[0]) <= suffix(&w[1])), "{names:?}");
            return Ok(());
        };
        prop_assert_eq!(names, m.chunks.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
        let whole = m.chunks.iter().all(|c| {
            // Listings have unique names; the last one wins in the check.
            b.files.iter().rev().find(|f| f.name == c.name).is_some_and(|f| {
                f.size == c.size && f.sha256.as_ref().is_none_or(|h| *h == c.sha256)
            })
        });
        prop_assert_eq!(health == Health::Ok, whole, "{:?}", health);
    }

    /// Every full heads exactly one chain; every incremental is in the chain
    /// its restore starts from (based on the full, or on an incremental in
    /// the same chain), or an orphan; a restore plan is the full first,
    /// then at most the one incremental.
    #[test]
    fn chains_and_restore_plans_are_consistent(backups in vec(remote_backup(), 0..6), pick in any::<prop::sample::Index>()) {
        let (chains, orphans) = chains(&backups);
        let fulls = backups.iter().filter(|b| b.kind == ExportKind::Full).count();
        prop_assert_eq!(chains.len(), fulls);
        let incrementals = backups.len() - fulls;
        prop_assert_eq!(
            chains.iter().map(|c| c.incrementals.len()).sum::<usize>() + orphans.len(),
            incrementals
        );
        for c in &chains {
            prop_assert_eq!(c.full.kind, ExportKind::Full);
            for i in &c.incrementals {
                // A manifest that names no base: the full before it, as
                // for the original tool's backups.
                let base = i.base();
                let in_chain = base.is_none_or(|base| {
                    base == c.full.snapshot
                        || c.incrementals.iter().any(|j| j.snapshot == base)
                });
                prop_assert!(in_chain, "{} is based on {:?}", i.dir_name, base);
            }
        }
        let mut points = vec![RestorePoint::Latest];
        if !backups.is_empty() {
            points.push(RestorePoint::Snapshot(pick.get(&backups).snapshot.clone()));
        }
        for at in points {
            if let Ok(plan) = plan_restore(&backups, &at) {
                prop_assert!(!plan.is_empty() && plan.len() <= 2, "{}", plan.len());
                prop_assert_eq!(plan[0].kind, ExportKind::Full);
                for b in &plan {
                    prop_assert!(!b.chunk_names().is_empty());
                }
                if let [full, incremental] = plan[..] {
                    prop_assert_eq!(incremental.kind, ExportKind::Incremental);
                    if let Some(base) = incremental.base() {
                        prop_assert_eq!(base, full.snapshot.as_str());
                    }
                }
                if let RestorePoint::Snapshot(s) = &at {
                    prop_assert!(plan.last().is_some_and(|b| &b.snapshot == s || &b.dir_name == s));
                }
            }
        }
    }
}

proptest! {
    // Each case starts a `cat` per manifest: fewer cases.
    #![proptest_config(config(48))]

    /// Reading a remote whose directories and manifests are garbage: only
    /// directories named like a backup are taken; a present but unreadable
    /// manifest makes the backup DAMAGED, never manifest-less.
    #[test]
    fn remote_catalog_survives_garbage(
        dirs in vec((
            prop_oneof![
                snap_time(),
                snap_time().prop_map(|s| format!("{s}-full")),
                "[a-z0-9.-]{1,16}".prop_filter("a name in the directory", |n| n != "." && n != ".."),
            ],
            prop::option::of(prop_oneof![
                vec(any::<u8>(), 0..64),
                json_value().prop_map(|v| v.to_string().into_bytes()),
                manifest().prop_map(|m| serde_json::to_vec(&m).unwrap()),
            ]),
        ), 0..4)
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().to_str().unwrap();
        for (name, manifest) in &dirs {
            let dir = tmp.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("c.0000"), b"abc").unwrap();
            if let Some(bytes) = manifest {
                std::fs::write(dir.join(MANIFEST_FILE), bytes).unwrap();
            }
        }
        let backups = list_remote_backups(&LocalDirRemote, remote, Listing::Hashes).unwrap();
        let named_like_backup = |n: &str| SnapTime::parse(n.strip_suffix("-full").unwrap_or(n)).is_some();
        let mut expected: Vec<&String> = dirs.iter().map(|(n, _)| n).filter(|n| named_like_backup(n)).collect();
        expected.sort();
        expected.dedup();
        prop_assert_eq!(backups.len(), expected.len());
        for b in &backups {
            prop_assert!(named_like_backup(&b.dir_name));
            // A later entry of the same name without a manifest leaves the
            // earlier one's file in place.
            let written = dirs.iter().rev().filter(|(n, _)| *n == b.dir_name).find_map(|(_, m)| m.as_ref());
            match written {
                None => prop_assert!(b.manifest.is_none() && b.manifest_error.is_none()),
                Some(bytes) => {
                    let parsed = serde_json::from_slice::<Manifest>(bytes).ok();
                    prop_assert_eq!(&b.manifest, &parsed);
                    prop_assert_eq!(b.manifest_error.is_some(), parsed.is_none());
                    if parsed.is_none() {
                        prop_assert!(matches!(check_listing(b), Health::Damaged(_)));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Remote pruning

/// A backup of one of the first 12 days of 2024 (so that bases name
/// backups that are there): full or not; with a manifest naming a base
/// among those days, an unreadable one, or none; its chunk there, missing
/// or of another size; with `SHA256SUMS` or not.
fn linked_backup() -> impl Strategy<Value = RemoteBackup> {
    (
        1u32..=12,
        any::<bool>(),
        0u8..3,
        1u32..=12,
        0u8..3,
        any::<bool>(),
    )
        .prop_map(|(day, full, manifest, base_day, chunk, sums)| {
            let snapshot = format!("202401{day:02}000000");
            let kind = if full {
                ExportKind::Full
            } else {
                ExportKind::Incremental
            };
            let chunk_name = format!("tank-data@{snapshot}.zfs.gpg.0000");
            let mut files = Vec::new();
            if chunk > 0 {
                let size = if chunk == 1 { 3 } else { 2 };
                files.push(RemoteFile {
                    name: chunk_name.clone(),
                    size,
                    sha256: None,
                });
            }
            if sums {
                files.push(RemoteFile {
                    name: "SHA256SUMS".into(),
                    size: 1,
                    sha256: None,
                });
            }
            let manifest = (manifest == 1).then(|| Manifest {
                format: 1,
                tool: "zfs2cloud".into(),
                tool_version: "0".into(),
                dataset: "tank/data".into(),
                snapshot: snapshot.clone(),
                kind,
                base: (!full).then(|| format!("202401{base_day:02}000000")),
                created_at: String::new(),
                encryption: "none".into(),
                compression: "none".into(),
                split_size: 3,
                total_size: 3,
                chunks: vec![ChunkEntry {
                    name: chunk_name,
                    size: 3,
                    sha256: "aa".into(),
                }],
                send_flags: zfs2cloud_core::SendFlags::default(),
                level: None,
                recipients: Vec::new(),
            });
            if manifest.is_some() {
                files.push(RemoteFile {
                    name: MANIFEST_FILE.into(),
                    size: 1,
                    sha256: None,
                });
            }
            RemoteBackup {
                dir_name: if full {
                    format!("{snapshot}-full")
                } else {
                    snapshot.clone()
                },
                snapshot,
                kind,
                manifest,
                manifest_error: (manifest_error_wanted(&files, full, day)).then(|| "EOF".into()),
                files,
            }
        })
}

/// An unreadable manifest now and then (never beside a readable one).
fn manifest_error_wanted(files: &[RemoteFile], full: bool, day: u32) -> bool {
    !files.iter().any(|f| f.name == MANIFEST_FILE) && full && day.is_multiple_of(5)
}

/// One listing: unique directory names, oldest first, as the catalog
/// gives them.
fn linked_listing() -> impl Strategy<Value = Vec<RemoteBackup>> {
    vec(linked_backup(), 0..14).prop_map(|mut backups| {
        backups.sort_by(|a, b| a.dir_name.cmp(&b.dir_name));
        backups.dedup_by(|a, b| a.dir_name == b.dir_name);
        backups.sort_by(|a, b| a.snapshot.cmp(&b.snapshot));
        backups
    })
}

fn prune_policy() -> impl Strategy<Value = zfs2cloud_core::RemotePrunePolicy> {
    (vec(0u32..3, 6), 1i64..200, prop::option::of(1u32..=12)).prop_map(|(n, grace, claim)| {
        zfs2cloud_core::RemotePrunePolicy {
            keeps: zfs2cloud_core::CalendarKeeps {
                hourly: n[0],
                daily: n[1],
                weekly: n[2],
                monthly: n[3],
                yearly: n[4],
            },
            keep_chains: n[5],
            incomplete_grace: chrono::TimeDelta::hours(grace),
            zone: zfs2cloud_core::SnapshotTimeZone::Utc,
            claimed_at: claim.map(|d| {
                chrono::DateTime::parse_from_rfc3339(&format!("2024-01-{d:02}T12:00:00Z"))
                    .unwrap()
                    .to_utc()
            }),
        }
    })
}

proptest! {
    #![proptest_config(config(1500))]

    /// Whatever the listing: nothing a kept backup's restore replays is
    /// deleted, nothing damaged is deleted, the newest whole backup with an
    /// intact chain stays, and every dependent goes before its base.
    #[test]
    fn remote_pruning_never_deletes_what_a_kept_backup_needs(
        backups in linked_listing(),
        policy in prune_policy(),
        hours in 0i64..400,
    ) {
        use zfs2cloud_core::{plan_remote_prune, Dependencies, RemoteAction};
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").unwrap().to_utc()
            + chrono::TimeDelta::hours(hours);
        let plan = plan_remote_prune(&backups, &policy, now);
        prop_assert_eq!(plan.decisions.len(), backups.len());
        let kept = |i: usize| plan.decisions[i].action == RemoteAction::Keep;
        let linkable = |b: &RemoteBackup| b.manifest.is_some() || b.manifest_error.is_some();
        let deps = Dependencies::new(&backups, &linkable);
        for (i, b) in backups.iter().enumerate() {
            let health = check_listing(b);
            if matches!(health, Health::Damaged(_)) || (b.manifest.is_some() && health != Health::Ok) {
                prop_assert!(kept(i), "{} is damaged", b.dir_name);
            }
            if !kept(i) {
                continue;
            }
            if let Ok(chain) = deps.chain(i) {
                for base in chain {
                    let j = deps.index_of(&base.dir_name).unwrap();
                    prop_assert!(kept(j), "{} needs {}", b.dir_name, base.dir_name);
                }
            }
        }
        let intact_whole: Vec<usize> = (0..backups.len())
            .filter(|&i| check_listing(&backups[i]) == Health::Ok && deps.depth(i).is_some())
            .collect();
        if let Some(newest) = intact_whole.iter().map(|&i| &backups[i].snapshot).max() {
            prop_assert!(intact_whole.iter().any(|&i| backups[i].snapshot == *newest && kept(i)));
        }
        let position = |dir: &str| plan.deletion_order.iter().position(|d| d == dir);
        for (i, b) in backups.iter().enumerate() {
            prop_assert_eq!(position(&b.dir_name).is_some(), !kept(i));
            if let (Some(at), Some(base)) = (position(&b.dir_name), deps.base_of(i)) {
                if let Some(base_at) = position(&backups[base].dir_name) {
                    prop_assert!(at < base_at, "{} after its base", b.dir_name);
                }
            }
        }
    }
}
