//! A config file with several jobs: a `[defaults]` table of shared keys and
//! one `[[job]]` table per job, each with a `name` and its own keys. A file
//! without `[[job]]` tables is the single-dataset form: one unnamed job.
//!
//! ```toml
//! [defaults]
//! remote = "b2:bucket/host"
//! passphrase_file = "/etc/zfs2cloud/passphrase"
//!
//! [[job]]
//! name = "home"
//! dataset = "tank/home"
//! remote = "b2:bucket/host/home"
//! intermediate_basedir = "/var/tmp/zfs2cloud/home"
//! ```
//!
//! A job's key replaces the default's; the tables (`hooks`,
//! `step_timeouts`, `retention`) are merged key by key, at every depth, and
//! a job's rule for local snapshots replaces the default's in either form. Jobs must not share a remote
//! directory, an intermediate directory or a dataset: loading refuses
//! overlaps, so nothing can write one job's backups into another's.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::{deserialize, deserialize_from, read_text, Config, ConfigError};
use crate::model::{excluded_by, relative_to};

/// The longest job name: it appears in tables and lock messages.
const MAX_JOB_NAME: usize = 64;

/// Every job of a config file, validated, in file order.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// The file they were loaded from.
    pub path: PathBuf,
    /// The jobs; one unnamed job in the single-dataset form.
    pub jobs: Vec<Config>,
}

impl ConfigFile {
    /// Reads and validates a config file of either form, including the
    /// files every job points to.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file, the job and the key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = Self::parse(&read_text(path)?, path)?;
        for job in &file.jobs {
            job.check_files()
                .map_err(|e| in_job(e, job.job.as_deref()))?;
        }
        Ok(file)
    }

    /// Parses config text of either form and checks every rule that needs
    /// only the text, overlaps between jobs included.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Many`] with every error of the file, each naming its
    /// line, job and key; other [`ConfigError`]s where only one can be
    /// told (bad TOML syntax, the layout of `[[job]]` tables, overlaps).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::parse_strict(text, path).map_err(|e| super::diagnose::explain(e, text, path))
    }

    /// [`ConfigFile::parse`] up to the first error.
    fn parse_strict(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        let table: toml::Table =
            toml::from_str(text).map_err(|e| parse_error(e.to_string().trim_end().to_owned()))?;
        if !table.contains_key("job") {
            // From the text again, not the table: its errors give the line.
            let config = Config::build(deserialize(text, path)?, path)?;
            return Ok(Self {
                path: path.to_owned(),
                jobs: vec![config],
            });
        }
        let jobs = job_tables(table, path)?
            .into_iter()
            .map(|(name, merged)| job_config(&name, merged, path))
            .collect::<Result<Vec<_>, _>>()?;
        check_overlaps(&jobs).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            key: "job".into(),
            message,
        })?;
        Ok(Self {
            path: path.to_owned(),
            jobs,
        })
    }

    /// Whether the file has `[[job]]` tables.
    #[must_use]
    pub fn has_named_jobs(&self) -> bool {
        self.jobs.iter().any(|j| j.job.is_some())
    }

    /// The jobs named in `names` (in file order), or every job if `names`
    /// is empty.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for a name that is no job of this file.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Config>, ConfigError> {
        if let Some(unknown) = names.iter().find(|n| {
            !self
                .jobs
                .iter()
                .any(|j| j.job.as_deref() == Some(n.as_str()))
        }) {
            let known: Vec<&str> = self.jobs.iter().filter_map(|j| j.job.as_deref()).collect();
            let message = if known.is_empty() {
                format!("there is no job {unknown:?}: this file has no [[job]] tables")
            } else {
                format!(
                    "there is no job {unknown:?}; the jobs are: {}",
                    known.join(", ")
                )
            };
            return Err(ConfigError::Invalid {
                path: self.path.clone(),
                key: "job".into(),
                message,
            });
        }
        Ok(self
            .jobs
            .iter()
            .filter(|j| names.is_empty() || names.iter().any(|n| j.job.as_deref() == Some(n)))
            .collect())
    }

    /// The effective configuration of every job as TOML (secrets masked):
    /// the single form as [`Config::to_effective_toml`], else `[[job]]`
    /// tables with every key spelled out.
    ///
    /// # Errors
    ///
    /// Only if TOML serialization fails, which would be a bug.
    pub fn to_effective_toml(&self) -> Result<String, toml::ser::Error> {
        #[derive(Serialize)]
        struct Jobs<'a> {
            job: &'a [Config],
        }
        match self.jobs.as_slice() {
            [single] if single.job.is_none() => single.to_effective_toml(),
            jobs => toml::to_string_pretty(&Jobs { job: jobs }),
        }
    }
}

/// The `[[job]]` tables with `[defaults]` merged in, by name.
fn job_tables(
    mut table: toml::Table,
    path: &Path,
) -> Result<Vec<(String, toml::Table)>, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: key.to_owned(),
        message,
    };
    let defaults = match table.remove("defaults") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(invalid("defaults", "must be a table: [defaults]".into())),
    };
    if defaults.contains_key("name") {
        return Err(invalid(
            "defaults.name",
            "a name belongs to one job: put it in each [[job]] table".into(),
        ));
    }
    let Some(toml::Value::Array(jobs)) = table.remove("job") else {
        return Err(invalid("job", "must be [[job]] tables".into()));
    };
    if let Some(key) = table.keys().next() {
        return Err(invalid(
            key,
            format!(
                "a file with [[job]] tables takes shared keys in [defaults] and the others in \
                 each [[job]]; move `{key}` into one of them"
            ),
        ));
    }
    let mut out: Vec<(String, toml::Table)> = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let toml::Value::Table(mut job) = job else {
            return Err(invalid(&format!("job[{i}]"), "must be a table".into()));
        };
        let name = match job.remove("name") {
            Some(toml::Value::String(n)) => n,
            _ => {
                return Err(invalid(
                    &format!("job[{i}].name"),
                    "is missing: every [[job]] needs a name = \"...\"".into(),
                ))
            }
        };
        check_job_name(&name).map_err(|m| invalid(&format!("job[{i}].name"), m))?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(invalid(
                &format!("job[{i}].name"),
                format!("two jobs are named {name:?}; names must be unique"),
            ));
        }
        out.push((name, merge(&defaults, job)));
    }
    if out.is_empty() {
        return Err(invalid("job", "there are no jobs".into()));
    }
    Ok(out)
}

/// Letters, digits, `_`, `.` and `-`: a name that is safe in a file name,
/// a metric label and a command line.
fn check_job_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_JOB_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a job name: use letters, digits, '_', '.' and '-' (at most \
             {MAX_JOB_NAME}), starting with a letter or digit"
        ))
    }
}

/// `job` over `defaults`; tables (`hooks`, `step_timeouts`, `retention`)
/// key by key, at every depth; a job's rule for local snapshots replaces
/// the default's in either form.
pub(super) fn merge(defaults: &toml::Table, job: toml::Table) -> toml::Table {
    let mut merged = defaults.clone();
    drop_replaced_local_rule(&mut merged, &job);
    merge_into(&mut merged, job);
    merged
}

/// `over` into `base`, tables key by key at every depth: a job's
/// `[job.retention.remote] keep_daily` replaces only that key of
/// `[defaults.retention.remote]`.
fn merge_into(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(over)) => merge_into(base, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// A job's own rule for local snapshots replaces the default's, whichever
/// form each is written in (`oldest_snapshot_days` or `[retention.local]`):
/// otherwise a job could not move to calendar retention while the
/// defaults set `oldest_snapshot_days`, since the two are refused together.
fn drop_replaced_local_rule(defaults: &mut toml::Table, job: &toml::Table) {
    let job_local = job
        .get("retention")
        .and_then(toml::Value::as_table)
        .is_some_and(|r| r.contains_key("local"));
    if job_local {
        defaults.remove("oldest_snapshot_days");
    }
    if job.contains_key("oldest_snapshot_days") {
        if let Some(toml::Value::Table(retention)) = defaults.get_mut("retention") {
            retention.remove("local");
        }
    }
}

/// One job's configuration from its merged table.
fn job_config(name: &str, table: toml::Table, path: &Path) -> Result<Config, ConfigError> {
    let raw =
        deserialize_from(toml::Value::Table(table), path).map_err(|e| in_job(e, Some(name)))?;
    let mut config = Config::build(raw, path).map_err(|e| in_job(e, Some(name)))?;
    config.job = Some(name.to_owned());
    Ok(config)
}

/// `error` with the job named: keys become `job.<name>.<key>`.
fn in_job(error: ConfigError, job: Option<&str>) -> ConfigError {
    let Some(job) = job else { return error };
    match error {
        ConfigError::Invalid { path, key, message } => ConfigError::Invalid {
            path,
            key: format!("job.{job}.{key}"),
            message,
        },
        ConfigError::Parse { path, message } => ConfigError::Parse {
            path,
            message: format!("job {job:?}: {message}"),
        },
        other => other,
    }
}

/// Refuses two jobs that would write into each other's remote directory
/// or intermediate directory, or back up the same dataset.
fn check_overlaps(jobs: &[Config]) -> Result<(), String> {
    for (i, a) in jobs.iter().enumerate() {
        for b in &jobs[i + 1..] {
            let (an, bn) = (
                a.job.as_deref().unwrap_or(""),
                b.job.as_deref().unwrap_or(""),
            );
            if remotes_overlap(&a.remote, &b.remote) {
                return Err(format!(
                    "jobs {an:?} and {bn:?} overlap on the remote ({} and {}): one job's \
                     backups would land in the other's directory; give each job a directory \
                     of its own, neither inside the other",
                    a.remote, b.remote
                ));
            }
            if paths_overlap(&a.intermediate_basedir, &b.intermediate_basedir) {
                return Err(format!(
                    "jobs {an:?} and {bn:?} overlap in intermediate_basedir ({} and {}): \
                     their exports, locks and status would mix; give each job a directory of \
                     its own, neither inside the other",
                    a.intermediate_basedir.display(),
                    b.intermediate_basedir.display()
                ));
            }
            if a.metrics_file.is_some() && a.metrics_file == b.metrics_file {
                // Each run rewrites its job's file whole (node_exporter reads
                // files whole): a shared one would hold only the last job.
                return Err(format!(
                    "jobs {an:?} and {bn:?} share metrics_file: each job needs a file of its \
                     own (e.g. zfs2cloud-<job>.prom in the collector's directory)"
                ));
            }
            if let Some(why) = datasets_overlap(a, b).or_else(|| datasets_overlap(b, a)) {
                return Err(format!("jobs {an:?} and {bn:?} {why}"));
            }
        }
    }
    Ok(())
}

/// Whether `a` backs up `b`'s dataset too: the same dataset, or one in
/// `a`'s tree that no `exclude` pattern leaves out.
fn datasets_overlap(a: &Config, b: &Config) -> Option<String> {
    if a.dataset == b.dataset {
        return Some(format!(
            "both back up {}: their snapshots and pruning would collide",
            a.dataset
        ));
    }
    if !a.recursive {
        return None;
    }
    relative_to(&a.dataset, &b.dataset)?;
    let excluded = excluded_by(&a.exclude, &a.dataset, &b.dataset).is_some();
    (!excluded).then(|| {
        format!(
            "overlap: {} is in the recursive tree of {} (exclude it there, or drop the second \
             job)",
            b.dataset, a.dataset
        )
    })
}

/// rclone destinations by remote name and path components.
fn remotes_overlap(a: &str, b: &str) -> bool {
    let (an, ap) = split_remote(a);
    let (bn, bp) = split_remote(b);
    an == bn && is_prefix(&ap, &bp)
}

/// `name:path` as (`Some(name)`, components), a local path as (`None`, …).
/// rclone reads a `:` as the end of a remote name unless a `/` comes first.
fn split_remote(remote: &str) -> (Option<&str>, Vec<&str>) {
    let (name, path) = match remote.split_once(':') {
        Some((name, path)) if !name.contains('/') => (Some(name), path),
        _ => (None, remote),
    };
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if absolute {
        parts.insert(0, "/");
    }
    (name, parts)
}

fn paths_overlap(a: &Path, b: &Path) -> bool {
    let parts = |p: &Path| -> Vec<String> {
        p.components()
            .filter(|c| !matches!(c, Component::CurDir))
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect()
    };
    let (a, b) = (parts(a), parts(b));
    is_prefix(&a, &b)
}

/// Whether one list is a prefix of the other (equal included).
fn is_prefix<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

#[cfg(test)]
mod tests;
