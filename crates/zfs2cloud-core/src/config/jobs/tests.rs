#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;

const PATH: &str = "/etc/zfs2cloud/jobs.toml";

fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
    ConfigFile::parse(text, Path::new(PATH))
}

fn refused(text: &str) -> String {
    parse(text).expect_err("should be refused").to_string()
}

const DEFAULTS: &str = r#"
[defaults]
passphrase_file = "pass"
split_size = "64M"
[defaults.hooks]
pre_snapshot = "/bin/true"
on_failure = "/bin/false"
"#;

fn job(name: &str, dataset: &str, dir: &str) -> String {
    format!(
        "[[job]]\nname = {name:?}\ndataset = {dataset:?}\nremote = \"r:bucket/{dir}\"\n\
         intermediate_basedir = \"/var/tmp/z2c/{dir}\"\n"
    )
}

#[test]
fn the_single_dataset_form_is_one_unnamed_job() {
    let file = parse(
        "dataset = \"tank/a\"\nremote = \"r:b\"\nintermediate_basedir = \"/x\"\n\
         passphrase_file = \"p\"\n",
    )
    .unwrap();
    assert_eq!(file.jobs.len(), 1);
    assert!(!file.has_named_jobs());
    assert_eq!(file.jobs[0].job, None);
    assert_eq!(file.select(&[]).unwrap().len(), 1);
    let err = file.select(&["a".into()]).unwrap_err().to_string();
    assert!(err.contains("no [[job]] tables"), "{err}");
}

#[test]
fn jobs_take_the_defaults_and_override_them_key_by_key() {
    let text = format!(
        "{DEFAULTS}{}{}split_size = \"1M\"\n[job.hooks]\non_failure = \"/bin/echo\"\n",
        job("home", "tank/home", "home"),
        job("media", "tank/media", "media"),
    );
    let file = parse(&text).unwrap();
    let [home, media] = file.jobs.as_slice() else {
        panic!("two jobs expected")
    };
    assert_eq!(home.job.as_deref(), Some("home"));
    assert_eq!(home.split_size.0, 64 << 20);
    assert_eq!(media.split_size.0, 1 << 20);
    assert_eq!(
        home.passphrase_file.as_deref(),
        Some(Path::new("/etc/zfs2cloud/pass"))
    );
    // hooks merge: media keeps the default pre_snapshot, replaces on_failure.
    assert_eq!(media.hooks.pre_snapshot, home.hooks.pre_snapshot);
    assert!(media.hooks.pre_snapshot.is_some());
    assert_ne!(media.hooks.on_failure, home.hooks.on_failure);
    let picked = file.select(&["media".into()]).unwrap();
    assert_eq!(picked.len(), 1);
    assert_eq!(picked[0].dataset.as_str(), "tank/media");
    let err = file.select(&["medja".into()]).unwrap_err().to_string();
    assert!(err.contains("the jobs are: home, media"), "{err}");
}

#[test]
fn a_job_error_names_the_job_and_the_key() {
    let text = format!(
        "{DEFAULTS}{}split_size = \"tiny\"\n",
        job("home", "tank/home", "home")
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key(), Some("job.home.split_size"), "{err}");
    let text = format!("{DEFAULTS}{}colour = 1\n", job("home", "tank/home", "home"));
    let err = refused(&text);
    assert!(err.contains(":13: job.home.colour: unknown field"), "{err}");
}

#[test]
fn names_must_be_present_unique_and_plain() {
    let missing = format!("{DEFAULTS}[[job]]\ndataset = \"tank/a\"\n");
    assert!(refused(&missing).contains("needs a name"));
    let twice = format!(
        "{DEFAULTS}{}{}",
        job("a", "tank/a", "a"),
        job("a", "tank/b", "b")
    );
    assert!(refused(&twice).contains("unique"));
    let odd = format!("{DEFAULTS}{}", job("a b", "tank/a", "a"));
    assert!(refused(&odd).contains("not a job name"));
}

#[test]
fn keys_outside_defaults_and_jobs_are_refused_with_the_way_out() {
    let text = format!("remote = \"r:b\"\n{DEFAULTS}{}", job("a", "tank/a", "a"));
    let err = refused(&text);
    assert!(
        err.contains("move `remote`") && err.contains("[defaults]"),
        "{err}"
    );
}

#[test]
fn jobs_sharing_or_nesting_a_remote_directory_are_refused() {
    let same = format!(
        "{DEFAULTS}{}{}",
        job("a", "tank/a", "x"),
        job("b", "tank/b", "x").replace("/var/tmp/z2c/x", "/var/tmp/z2c/y")
    );
    let err = refused(&same);
    assert!(
        err.contains("\"a\" and \"b\" overlap on the remote"),
        "{err}"
    );
    let nested = format!(
        "{DEFAULTS}{}{}",
        job("a", "tank/a", "x"),
        job("b", "tank/b", "x/sub").replace("/var/tmp/z2c/x/sub", "/var/tmp/z2c/y")
    );
    assert!(refused(&nested).contains("overlap on the remote"));
    // Siblings with a common prefix do not overlap; nor do other remotes.
    let siblings = format!(
        "{DEFAULTS}{}{}",
        job("a", "tank/a", "home"),
        job("b", "tank/b", "home2")
    );
    parse(&siblings).unwrap();
    let other_remote = format!(
        "{DEFAULTS}{}{}",
        job("a", "tank/a", "x"),
        job("b", "tank/b", "y").replace("r:bucket/y", "s:bucket/x")
    );
    parse(&other_remote).unwrap();
}

#[test]
fn jobs_sharing_an_intermediate_directory_are_refused() {
    let text = format!(
        "{DEFAULTS}{}{}",
        job("a", "tank/a", "a"),
        job("b", "tank/b", "b").replace("/var/tmp/z2c/b", "/var/tmp/z2c/a/./b")
    );
    let err = refused(&text);
    assert!(err.contains("overlap in intermediate_basedir"), "{err}");
}

#[test]
fn jobs_sharing_a_metrics_file_are_refused() {
    let metrics = "metrics_file = \"/var/lib/prom/z.prom\"\n";
    let text = format!(
        "{DEFAULTS}{}{metrics}{}{metrics}",
        job("a", "tank/a", "a"),
        job("b", "tank/b", "b")
    );
    let err = refused(&text);
    assert!(err.contains("share metrics_file"), "{err}");
}

#[test]
fn a_dataset_in_two_jobs_or_inside_a_recursive_tree_is_refused_unless_excluded() {
    let same = format!(
        "{DEFAULTS}{}{}",
        job("a", "tank/a", "a"),
        job("b", "tank/a", "b")
    );
    assert!(refused(&same).contains("both back up tank/a"));
    let tree = format!(
        "{DEFAULTS}{}recursive = true\n{}",
        job("tree", "tank/home", "home"),
        job("alice", "tank/home/alice/docs", "alice")
    );
    let err = refused(&tree);
    assert!(err.contains("in the recursive tree of tank/home"), "{err}");
    let excluded = format!(
        "{DEFAULTS}{}recursive = true\nexclude = [\"alice\"]\n{}",
        job("tree", "tank/home", "home"),
        job("alice", "tank/home/alice/docs", "alice")
    );
    parse(&excluded).unwrap();
}

#[test]
fn the_effective_configuration_lists_every_job_by_name() {
    let text = format!(
        "{DEFAULTS}{}{}",
        job("home", "tank/home", "home"),
        job("media", "tank/media", "media")
    );
    let shown = parse(&text).unwrap().to_effective_toml().unwrap();
    assert_eq!(shown.matches("[[job]]").count(), 2, "{shown}");
    assert!(shown.contains("name = \"media\""), "{shown}");
}

#[test]
fn config_parse_points_a_file_of_jobs_to_config_file() {
    let text = format!("{DEFAULTS}{}", job("a", "tank/a", "a"));
    let err = Config::parse(&text, Path::new(PATH)).unwrap_err();
    assert_eq!(err.key(), Some("job"), "{err}");
    assert!(err.to_string().contains("ConfigFile"), "{err}");
}

#[test]
fn a_jobs_local_retention_merges_key_by_key_and_replaces_either_form() {
    // Without [defaults.hooks], which would take the keys that follow.
    const PLAIN: &str = "[defaults]\npassphrase_file = \"pass\"\n";
    let defaults = format!(
        "{PLAIN}oldest_snapshot_days = 60\n[defaults.retention.local]\nkeep_daily = 7\n\
         keep_weekly = 4\n"
    );
    // Both rules in [defaults], and a job that sets neither: refused, the
    // job and the key named.
    let err = parse(&format!("{defaults}{}", job("a", "tank/a", "a"))).unwrap_err();
    assert_eq!(err.key(), Some("job.a.oldest_snapshot_days"), "{err}");

    let text = format!(
        "{PLAIN}[defaults.retention.local]\nkeep_daily = 7\nkeep_weekly = 4\n{}{}\
         [job.retention.local]\nkeep_daily = 14\n{}oldest_snapshot_days = 90\n",
        job("inherits", "tank/a", "a"),
        job("own-table", "tank/b", "b"),
        job("own-days", "tank/c", "c"),
    );
    let file = parse(&text).unwrap();
    let [inherits, own_table, own_days] = file.jobs.as_slice() else {
        panic!("three jobs expected")
    };
    let local = |c: &Config| c.retention.local.map(|l| (l.daily, l.weekly));
    assert_eq!(local(inherits), Some((7, 4)));
    assert_eq!(inherits.oldest_snapshot_days, None);
    // The job's table is merged key by key, as every table: its daily
    // over the default's, the default's weekly inherited.
    assert_eq!(local(own_table), Some((14, 4)));
    // oldest_snapshot_days in a job replaces the default's table.
    assert_eq!(local(own_days), None);
    assert_eq!(own_days.oldest_snapshot_days, Some(90));

    // And the other way round: the default's days, a job's calendar.
    let text = format!(
        "{PLAIN}oldest_snapshot_days = 60\n{}{}[job.retention.local]\nkeep_daily = 3\n",
        job("days", "tank/a", "a"),
        job("calendar", "tank/b", "b"),
    );
    let file = parse(&text).unwrap();
    assert_eq!(file.jobs[0].oldest_snapshot_days, Some(60));
    assert_eq!(file.jobs[1].oldest_snapshot_days, None);
    assert_eq!(local(&file.jobs[1]), Some((3, 0)));

    // Both in one job's own table stay refused.
    let both = format!(
        "{PLAIN}{}oldest_snapshot_days = 60\n[job.retention.local]\nkeep_daily = 3\n",
        job("both", "tank/a", "a"),
    );
    let err = parse(&both).unwrap_err();
    assert_eq!(err.key(), Some("job.both.oldest_snapshot_days"), "{err}");
}
