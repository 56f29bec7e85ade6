//! Every error of a config file at once, each with its line and key.
//!
//! Loading stays strict: [`RawConfig`] (serde, unknown keys refused) and
//! [`Config::from_raw`] are the only judges, and stop at the first error.
//! When they refuse a file, this pass finds the rest by asking them about
//! one key at a time: each key's value is deserialized alone (next to
//! placeholders for the required keys), so one wrong type does not hide
//! the next; then the values are validated together, and each key that
//! fails is reported and dropped (its default applies) until the rest
//! passes. The lines come from `toml_edit`'s spans. Unknown keys get a
//! "did you mean", from the keys serde itself lists for the table, so a
//! key added to [`RawConfig`] is known here without a second list.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use toml_edit::{ImDocument, Item, Table as EditTable, TableLike, Value as EditValue};

use super::{alias_conflict, base_dir, Config, ConfigError, RawConfig, ALIASES};

/// One problem in a config file: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The 1-based line of the key, where known.
    pub line: Option<usize>,
    /// The key, e.g. `split_size`, `hooks.pre_snapshot` or
    /// `job.media.remote`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// `<file>:<line>: <key>: <message>` (without the line where unknown).
    #[must_use]
    pub fn render(&self, path: &Path) -> String {
        match self.line {
            Some(line) => format!("{}:{line}: {self}", path.display()),
            None => format!("{}: {self}", path.display()),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The message of [`ConfigError::Many`]: one line per problem.
pub(super) fn render_all(path: &Path, diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(|d| d.render(path)).collect();
    match lines.as_slice() {
        [one] => one.clone(),
        _ => format!(
            "{}: {} errors:\n{}",
            path.display(),
            lines.len(),
            lines.join("\n")
        ),
    }
}

/// `error`, the strict loader's first error, replaced by every error of the
/// file where this pass finds any (else `error` as it is: bad syntax, the
/// layout of `[[job]]` tables, overlaps between jobs).
pub(super) fn explain(error: ConfigError, text: &str, path: &Path) -> ConfigError {
    if !matches!(
        error,
        ConfigError::Parse { .. } | ConfigError::Invalid { .. }
    ) {
        return error;
    }
    let diagnostics = diagnose(text, path);
    if diagnostics.is_empty() {
        return error;
    }
    ConfigError::Many {
        path: path.to_owned(),
        diagnostics,
    }
}

/// Every error of the file (none for bad TOML syntax: the parser's own
/// error says where).
#[must_use]
pub fn diagnose(text: &str, path: &Path) -> Vec<Diagnostic> {
    per_job(text, |job| job.errors(path))
}

/// Keys the file sets that its mode never reads, as warnings: a
/// `passphrase_file` in file mode looks used and is not.
#[must_use]
pub fn mode_warnings(text: &str) -> Vec<Diagnostic> {
    per_job(text, |job| job.ignored_keys())
}

/// Keys only intermediate mode reads (exports: chunks, fulls and
/// incrementals, compression, `zfs send` flags, gpg; uploads while
/// exporting; remote retention). File mode syncs the mounted snapshot's
/// files with `rclone sync`, encrypting only through an rclone crypt remote.
const INTERMEDIATE_ONLY: &[&str] = &[
    "split_size",
    "full_every_x_days",
    "incremental_strategy",
    "levels",
    "compression",
    "compression_level",
    "upload_while_exporting",
    "upload_concurrency",
    "keep_local_export",
    "send_flags",
    "encryption",
    "passphrase_file",
    "recipient_files",
    "recipients",
    "gpg_homedir",
    "allow_unencrypted",
    "recursive",
    "exclude",
];

/// Keys only file mode reads.
const FILE_ONLY: &[&str] = &["mount_strategy"];

/// Runs `check` on each job of the file (one in the single-dataset form),
/// with duplicates (a bad `[defaults]` key, met by every job) dropped,
/// sorted by line.
fn per_job(text: &str, check: impl Fn(&Job<'_>) -> Vec<Diagnostic>) -> Vec<Diagnostic> {
    let (Ok(doc), Ok(table)) = (
        ImDocument::parse(text.to_owned()),
        toml::from_str::<toml::Table>(text),
    ) else {
        return Vec::new();
    };
    let spans = Spans { text, doc: &doc };
    let Some(jobs) = Job::all(table, &spans) else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    let mut out: Vec<Diagnostic> = jobs
        .iter()
        .flat_map(check)
        .filter(|d| seen.insert((d.line, d.key.clone(), d.message.clone())))
        .collect();
    // In the order of the file, as the reader fixes them.
    out.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
    out
}

/// One step of a key's path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `hooks.pre_snapshot[1]` (serde_path_to_error's and [`KeyError`]'s
/// spelling) as its steps.
///
/// [`KeyError`]: super::KeyError
fn segs(key: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(name) = pieces.next().filter(|n| !n.is_empty()) {
            out.push(Seg::Key(name.to_owned()));
        }
        for index in pieces {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

fn keys(path: &[Seg]) -> Vec<&str> {
    path.iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .collect()
}

/// The text's spans: the line where a key is written.
struct Spans<'a> {
    text: &'a str,
    doc: &'a ImDocument<String>,
}

/// A place in the `toml_edit` tree.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a EditTable),
    Value(&'a EditValue),
}

impl<'a> Node<'a> {
    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Self::Item(i) => i.as_table_like(),
            Self::Table(t) => Some(t),
            Self::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    fn index(self, i: usize) -> Option<(Self, Option<std::ops::Range<usize>>)> {
        match self {
            Self::Item(Item::ArrayOfTables(a)) => a.get(i).map(|t| (Self::Table(t), t.span())),
            Self::Item(Item::Value(v)) | Self::Value(v) => {
                let v = v.as_array()?.get(i)?;
                Some((Self::Value(v), v.span()))
            }
            _ => None,
        }
    }
}

impl Spans<'_> {
    /// The line of the deepest part of `path` that is written in the file.
    fn line(&self, path: &[Seg]) -> Option<usize> {
        let mut node = Node::Table(self.doc.as_table());
        let mut start = None;
        for seg in path {
            let (next, span) = match seg {
                Seg::Key(k) => {
                    let Some((key, item)) = node.table_like().and_then(|t| t.get_key_value(k))
                    else {
                        break;
                    };
                    (Node::Item(item), key.span().or_else(|| item.span()))
                }
                Seg::Index(i) => match node.index(*i) {
                    Some(found) => found,
                    None => break,
                },
            };
            start = span.map(|s| s.start).or(start);
            node = next;
        }
        let start = start?;
        Some(self.text.get(..start)?.matches('\n').count() + 1)
    }
}

/// One job's keys as loading sees them, and where each is written.
struct Job<'a> {
    /// The keys, `[defaults]` merged in.
    table: toml::Table,
    /// Its index and name in a file of `[[job]]` tables.
    named: Option<(usize, String)>,
    /// The keys of `[defaults]`.
    defaults: BTreeSet<String>,
    /// The keys of the job's own table.
    own: BTreeSet<String>,
    spans: &'a Spans<'a>,
}

impl<'a> Job<'a> {
    /// The jobs of the file; `None` where the layout of `[[job]]` tables
    /// itself is wrong (the strict loader says how).
    fn all(mut table: toml::Table, spans: &'a Spans<'a>) -> Option<Vec<Self>> {
        if !table.contains_key("job") {
            let own = table.keys().cloned().collect();
            return Some(vec![Self {
                table,
                named: None,
                defaults: BTreeSet::new(),
                own,
                spans,
            }]);
        }
        let defaults = match table.remove("defaults") {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(_) => return None,
        };
        let Some(toml::Value::Array(jobs)) = table.remove("job") else {
            return None;
        };
        if !table.is_empty() || defaults.contains_key("name") {
            return None;
        }
        jobs.into_iter()
            .enumerate()
            .map(|(i, job)| {
                let toml::Value::Table(mut job) = job else {
                    return None;
                };
                let Some(toml::Value::String(name)) = job.remove("name") else {
                    return None;
                };
                Some(Self {
                    own: job.keys().cloned().collect(),
                    defaults: defaults.keys().cloned().collect(),
                    table: super::jobs::merge(&defaults, job),
                    named: Some((i, name)),
                    spans,
                })
            })
            .collect()
    }

    /// `message` about `key` (a path in the merged table), at the line of
    /// the table that sets it: the job's own, else `[defaults]` (which the
    /// message then says).
    fn diagnostic(&self, key: &str, message: String) -> Diagnostic {
        let path = segs(key);
        let Some((i, name)) = &self.named else {
            return Diagnostic {
                line: self.spans.line(&path),
                key: key.to_owned(),
                message,
            };
        };
        let first = keys(&path).first().map(|k| (*k).to_owned());
        let from_defaults = first
            .as_ref()
            .is_some_and(|k| !self.own.contains(k) && self.defaults.contains(k));
        let (table, message) = if from_defaults {
            (
                vec![Seg::Key("defaults".into())],
                format!("{message} (set in [defaults])"),
            )
        } else {
            (vec![Seg::Key("job".into()), Seg::Index(*i)], message)
        };
        let full: Vec<Seg> = table.into_iter().chain(path).collect();
        Diagnostic {
            line: self.spans.line(&full),
            key: format!("job.{name}.{key}"),
            message,
        }
    }

    /// Every error of this job: aliases set twice, each key's type, the
    /// required keys, then the values.
    fn errors(&self, path: &Path) -> Vec<Diagnostic> {
        let mut table = self.table.clone();
        let mut out = Vec::new();
        for (key, alias) in ALIASES {
            if table.contains_key(key) && table.contains_key(alias) {
                if let Some((_, message)) = alias_conflict(&format!("duplicate field `{key}`")) {
                    out.push(self.diagnostic(alias, message));
                }
                table.remove(alias);
            }
        }
        let typed = table.clone();
        for (key, value) in &typed {
            for (probed, at, message) in probe(std::slice::from_ref(key), value) {
                out.push(self.diagnostic(&at, message));
                remove(&mut table, &probed);
            }
        }
        let dropped = !out.is_empty();
        for key in stand_in(&mut table) {
            if !typed.contains_key(key) {
                out.push(self.diagnostic(key, "is missing: every config sets it".into()));
            }
        }
        out.extend(self.value_errors(table, path, dropped));
        out
    }

    /// The rules of [`Config::from_raw`], one failing key after another,
    /// each dropped in turn. An error about a key the file does not set
    /// is reported only while nothing has been dropped: after a drop it may
    /// be the drop's doing.
    fn value_errors(&self, mut table: toml::Table, path: &Path, dropped: bool) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut dropped = dropped;
        let mut seen = BTreeSet::new();
        for _ in 0..=table.len() {
            let raw: RawConfig = match deserialize(&table) {
                Ok(raw) => raw,
                Err((at, message)) => {
                    out.push(self.diagnostic(&at, message));
                    break;
                }
            };
            let Err(e) = Config::from_raw(raw, path, base_dir(path)) else {
                break;
            };
            let at = segs(&e.key);
            let set = get(&table, &at).is_some();
            if (!set && dropped) || !seen.insert(e.key.clone()) {
                break;
            }
            out.push(self.diagnostic(&e.key, e.message));
            if !set || !remove(&mut table, &at) {
                break;
            }
            stand_in(&mut table);
            dropped = true;
        }
        out
    }

    /// The keys this job sets that its mode does not read.
    fn ignored_keys(&self) -> Vec<Diagnostic> {
        let file_mode = self.table.get("mode").and_then(toml::Value::as_str) == Some("file");
        let (ignored, mode, why) = if file_mode {
            (
                INTERMEDIATE_ONLY,
                "file",
                "file mode syncs the snapshot's files with rclone sync (encrypt them with an \
                 rclone crypt remote)",
            )
        } else {
            (FILE_ONLY, "intermediate", "only file mode mounts snapshots")
        };
        let mut out: Vec<Diagnostic> = ignored
            .iter()
            .filter(|k| self.table.contains_key(**k))
            .map(|k| self.diagnostic(k, format!("is ignored in {mode} mode: {why}")))
            .collect();
        if file_mode {
            if let Some(toml::Value::Table(retention)) = self.table.get("retention") {
                if retention.contains_key("remote") {
                    out.push(self.diagnostic(
                        "retention.remote",
                        "is ignored in file mode: prune-remote prunes intermediate-mode backups"
                            .into(),
                    ));
                }
            }
        }
        out
    }
}

/// The keys loading cannot do without, their original names, and a value
/// of the right type that stands in for a missing one so the rest can be
/// checked.
const REQUIRED: [(&str, Option<&str>, &str); 3] = [
    ("dataset", Some("zfs_fs"), "placeholder/dataset"),
    ("intermediate_basedir", None, "/placeholder"),
    ("remote", None, "placeholder:"),
];

/// Puts a stand-in for each required key `table` lacks, so that the other
/// keys can be checked; the keys it stood in for.
fn stand_in(table: &mut toml::Table) -> Vec<&'static str> {
    let mut missing = Vec::new();
    for (key, alias, placeholder) in REQUIRED {
        if !table.contains_key(key) && !alias.is_some_and(|a| table.contains_key(a)) {
            table.insert(key.into(), placeholder.into());
            missing.push(key);
        }
    }
    missing
}

/// `table` as [`RawConfig`]; on failure the key (serde's path) and the
/// message.
fn deserialize(table: &toml::Table) -> Result<RawConfig, (String, String)> {
    serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(
        |e: serde_path_to_error::Error<toml::de::Error>| {
            let at = e.path().to_string();
            let message = e.into_inner().message().trim_end().to_owned();
            (at, unknown_key_hint(&message).unwrap_or(message))
        },
    )
}

/// The type errors of the value at `path`, alone next to the required
/// keys: (what to drop, the key serde names, the message). A table that
/// fails is asked about key by key, so that each of its bad keys is named.
fn probe(path: &[String], value: &toml::Value) -> Vec<(Vec<Seg>, String, String)> {
    let mut alone = toml::Table::new();
    for (key, alias, placeholder) in REQUIRED {
        let is_it = path
            .first()
            .is_some_and(|p| p == key || Some(p.as_str()) == alias);
        if !is_it {
            alone.insert(key.into(), placeholder.into());
        }
    }
    insert(&mut alone, path, value.clone());
    let Err((at, message)) = deserialize(&alone) else {
        return Vec::new();
    };
    if let toml::Value::Table(inner) = value {
        let found: Vec<_> = inner
            .iter()
            .flat_map(|(k, v)| probe(&[path, std::slice::from_ref(k)].concat(), v))
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    let drop = path.iter().map(|k| Seg::Key(k.clone())).collect();
    vec![(drop, if at == "." { path.join(".") } else { at }, message)]
}

/// Sets `value` at the table path `path`, creating tables on the way.
fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut table = table;
    for key in parents {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(inner) = entry else {
            return;
        };
        table = inner;
    }
    table.insert(last.clone(), value);
}

fn get<'t>(table: &'t toml::Table, path: &[Seg]) -> Option<&'t toml::Value> {
    let (first, rest) = path.split_first()?;
    let Seg::Key(k) = first else { return None };
    let mut value = table.get(k)?;
    for seg in rest {
        value = match seg {
            Seg::Key(k) => value.as_table()?.get(k)?,
            Seg::Index(i) => value.as_array()?.get(*i)?,
        };
    }
    Some(value)
}

/// Drops the key at `path` (a list element drops the whole list); whether
/// anything was dropped.
fn remove(table: &mut toml::Table, path: &[Seg]) -> bool {
    let keys = keys(path);
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut table = table;
    for key in parents {
        match table.get_mut(*key) {
            Some(toml::Value::Table(inner)) => table = inner,
            _ => return false,
        }
    }
    table.remove(*last).is_some()
}

/// serde's "unknown field `x`, expected one of `a`, `b`, ..." as "unknown
/// field `x`; did you mean `y`?" with the nearest known key (the list of
/// every key, which the reader must search, is left out).
fn unknown_key_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, expected) = rest.split_once('`')?;
    let known: Vec<&str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .chain(ALIASES.iter().map(|(_, alias)| *alias))
        .collect();
    Some(match did_you_mean(unknown, &known) {
        Some(near) => format!("unknown field `{unknown}`; did you mean `{near}`?"),
        None => format!("unknown field `{unknown}` (the keys are in docs/config.md)"),
    })
}

/// The known key nearest to `unknown`, if near enough to be a typo: at
/// most a third of the longer one's letters (at least 2) changed, swapped,
/// added or dropped, `-` and `_` and case alike.
fn did_you_mean<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let unknown = norm(unknown);
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&unknown, &norm(k)), *k))
        .filter(|(d, k)| *d <= (unknown.chars().count().max(k.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests;
