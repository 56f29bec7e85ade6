//! `zfs2cloud init`: a commented config file for one dataset and, in
//! intermediate mode, a new random passphrase file. Never overwrites.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use zfs2cloud_core::{remote_form, ConfigFile, DatasetName, RemoteForm};

use crate::app::{out, UsageError};
use crate::args::{InitArgs, InitMode};

/// Where `init` puts a config when no `-c` is given: the directory the
/// systemd units read `<instance>.toml` from.
const CONFIG_DIR: &str = "/etc/zfs2cloud";
/// The parent of the default `intermediate_basedir`s.
const STATE_DIR: &str = "/var/lib/zfs2cloud";
/// Random bytes in a new passphrase (written as hex: 256 bits).
const PASSPHRASE_BYTES: usize = 32;

/// What `init` writes, every path absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub dataset: DatasetName,
    pub mode: InitMode,
    pub remote: String,
    pub config: PathBuf,
    pub intermediate_basedir: PathBuf,
    /// Intermediate mode only: file mode does not encrypt with gpg.
    pub passphrase_file: Option<PathBuf>,
    pub rclone_config: Option<PathBuf>,
}

/// Writes the config (and passphrase file) and tells what to do next.
///
/// # Errors
///
/// [`UsageError`] for a bad dataset or remote, a file that exists, or a
/// missing rclone config; I/O errors naming the file otherwise.
pub fn run(config: Option<&Path>, args: &InitArgs, dry_run: bool) -> anyhow::Result<()> {
    let plan = plan(config, args)?;
    let text = render(&plan);
    // What init writes must load: a bug here must not leave a file behind.
    ConfigFile::parse(&text, &plan.config).map_err(|e| UsageError(e.to_string()))?;
    for path in std::iter::once(&plan.config).chain(&plan.passphrase_file) {
        refuse_existing(path)?;
    }
    if dry_run {
        out(&format!("# would write {}:\n{text}", plan.config.display()));
        if let Some(file) = &plan.passphrase_file {
            out(&format!(
                "# would write {}: a new random passphrase (0600)",
                file.display()
            ));
        }
        return Ok(());
    }
    if let Some(file) = &plan.passphrase_file {
        write_new(file, new_passphrase()?.as_bytes(), 0o600)?;
    }
    if let Err(e) = write_new(&plan.config, text.as_bytes(), 0o644) {
        // Leave nothing half done: the passphrase was made a moment ago,
        // by this run, and encrypts nothing yet.
        if let Some(file) = &plan.passphrase_file {
            let _ = std::fs::remove_file(file);
        }
        return Err(e);
    }
    report(&plan);
    Ok(())
}

/// Checks the arguments and fills in the default paths.
///
/// # Errors
///
/// [`UsageError`] naming the argument.
pub fn plan(config: Option<&Path>, args: &InitArgs) -> anyhow::Result<Plan> {
    let dataset = DatasetName::parse(&args.dataset).map_err(|e| UsageError(e.to_string()))?;
    check_remote(&args.remote)?;
    let config = absolute(match config {
        Some(path) => path.to_owned(),
        None => Path::new(CONFIG_DIR).join(format!("{}.toml", dataset.dashed())),
    })?;
    let passphrase_file = match (args.mode, &args.passphrase_file) {
        (InitMode::File, Some(_)) => bail!(UsageError(
            "--passphrase-file: file mode does not encrypt with gpg (use an rclone crypt remote)"
                .into()
        )),
        (InitMode::File, None) => None,
        (InitMode::Intermediate, Some(path)) => Some(absolute(path.clone())?),
        (InitMode::Intermediate, None) => Some(config.with_extension("passphrase")),
    };
    if passphrase_file.as_ref() == Some(&config) {
        bail!(UsageError(
            "--passphrase-file: the config file and the passphrase file must differ".into()
        ));
    }
    let rclone_config = args.rclone_config.clone().map(absolute).transpose()?;
    if let Some(file) = rclone_config.as_ref().filter(|f| !f.is_file()) {
        bail!(UsageError(format!(
            "--rclone-config: {} does not exist or is not a file",
            file.display()
        )));
    }
    let intermediate_basedir = absolute(
        args.intermediate_basedir
            .clone()
            .unwrap_or_else(|| Path::new(STATE_DIR).join(dataset.dashed())),
    )?;
    Ok(Plan {
        dataset,
        mode: args.mode,
        remote: args.remote.clone(),
        config,
        intermediate_basedir,
        passphrase_file,
        rclone_config,
    })
}

/// A remote without `name:` is a local directory to rclone; a relative one
/// would depend on the directory zfs2cloud happens to run in.
/// The rule is check-config's (`remote_form`): rclone reads a `:` after a
/// `/` as part of a path.
fn check_remote(remote: &str) -> anyhow::Result<()> {
    if remote_form(remote) != (RemoteForm::Local { absolute: false }) {
        return Ok(());
    }
    bail!(UsageError(format!(
        "--remote {remote:?} has no ':' before any '/', so rclone would take it as a directory relative to \
         wherever zfs2cloud runs: give name:path (name a remote in rclone.conf) or an \
         absolute directory"
    )))
}

/// `path` made absolute against the current directory: the config's
/// relative paths would be read against the config's directory instead.
fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    std::path::absolute(&path).with_context(|| format!("cannot make {} absolute", path.display()))
}

fn refuse_existing(path: &Path) -> anyhow::Result<()> {
    if path.symlink_metadata().is_ok() {
        bail!(UsageError(format!(
            "{} already exists: init never overwrites a file; remove it or choose another \
             path (-c FILE, --passphrase-file FILE)",
            path.display()
        )));
    }
    Ok(())
}

/// Creates `path` (and its directory) with `mode` from the start, failing
/// if it exists: a passphrase must never be readable by others, not even
/// for a moment before a chmod.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::Error::new(UsageError(format!(
                "{} already exists: init never overwrites a file",
                path.display()
            ))),
            _ => anyhow::Error::new(e).context(format!("cannot create {}", path.display())),
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A new passphrase: 256 random bits from the kernel, as one line of hex
/// (no character that a shell, a password manager or gpg could mangle).
fn new_passphrase() -> anyhow::Result<String> {
    let mut bytes = [0u8; PASSPHRASE_BYTES];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read random bytes from /dev/urandom")?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{hex}\n"))
}

/// `text` as a TOML string (quoted and escaped).
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn quoted_path(path: &Path) -> String {
    quoted(&path.to_string_lossy())
}

/// The config text: the keys the plan sets, each explained, and the
/// important defaults as comments.
pub fn render(plan: &Plan) -> String {
    let mut text = header(plan);
    text.push_str(&common_keys(plan));
    match plan.mode {
        InitMode::Intermediate => text.push_str(&intermediate_keys(plan)),
        InitMode::File => text.push_str(FILE_KEYS),
    }
    text.push_str(match plan.mode {
        InitMode::Intermediate => SCHEDULE_KEYS,
        // File mode takes no fulls or incrementals: each sync is whole.
        InitMode::File => FILE_SCHEDULE_KEYS,
    });
    text.push_str(MONITORING);
    text.push_str(HOOKS);
    text
}

fn header(plan: &Plan) -> String {
    let what = match plan.mode {
        InitMode::Intermediate => {
            "# Intermediate mode: every night zfs2cloud snapshots the dataset, exports\n\
             # it as `zfs send | gpg | split` chunks under intermediate_basedir,\n\
             # uploads them with rclone (chunks, SHA256SUMS, manifest.json last),\n\
             # and prunes old exports and snapshots. Restore: `zfs2cloud restore`,\n\
             # or by hand with stock tools (cat, gpg, zfs recv).\n"
        }
        InitMode::File => {
            "# File mode: every night zfs2cloud snapshots the dataset, mounts the\n\
             # snapshot read-only and `rclone sync`s its files to the remote as\n\
             # plain files, readable without ZFS.\n"
        }
    };
    format!(
        "# zfs2cloud configuration for {dataset}, written by `zfs2cloud init`.\n\
         # Check it:   zfs2cloud -c {config} check-config\n\
         # Every key:  `man zfs2cloud`, docs/config.md (unknown keys are errors).\n\
         #\n\
         {what}\n",
        dataset = plan.dataset,
        config = plan.config.display(),
    )
}

fn common_keys(plan: &Plan) -> String {
    let mode = match plan.mode {
        InitMode::Intermediate => "intermediate",
        InitMode::File => "file",
    };
    let rclone_config = plan.rclone_config.as_ref().map_or_else(
        || {
            "# rclone's config file; default: rclone's own (~/.config/rclone/rclone.conf\n\
             # of the user running zfs2cloud, root for the systemd units).\n\
             # rclone_config = \"/etc/zfs2cloud/rclone.conf\"\n"
                .to_owned()
        },
        |file| {
            format!(
                "# rclone's config file, where the remote's name is defined.\n\
                 rclone_config = {}\n",
                quoted_path(file)
            )
        },
    );
    format!(
        "# The ZFS file system to back up. zfs2cloud only ever touches the\n\
         # snapshots it made (named YYYYMMDDHHMMSS, UTC).\n\
         dataset = {dataset}\n\
         mode = \"{mode}\"\n\
         \n\
         # Local working directory (created 0700): exports, or in file mode the\n\
         # mounted snapshot, and the run lock.\n\
         intermediate_basedir = {basedir}\n\
         \n\
         # Any rclone destination, name:path. Give every dataset a directory of\n\
         # its own: zfs2cloud refuses one that holds another dataset's backups.\n\
         remote = {remote}\n\
         \n\
         {rclone_config}\
         \n\
         # Upload bandwidth limit, rclone syntax (\"8M\", \"08:00,512k 19:00,off\");\n\
         # default: none.\n\
         # bwlimit = \"8M\"\n\
         \n",
        dataset = quoted(plan.dataset.as_str()),
        basedir = quoted_path(&plan.intermediate_basedir),
        remote = quoted(&plan.remote),
    )
}

fn intermediate_keys(plan: &Plan) -> String {
    let passphrase = plan
        .passphrase_file
        .as_deref()
        .map(quoted_path)
        .unwrap_or_default();
    format!(
        "# The first line of this file is the gpg passphrase (`zfs2cloud init`\n\
         # made a random one; the file must stay chmod 600). WITHOUT IT THE\n\
         # BACKUPS CANNOT BE DECRYPTED: keep a copy away from this machine.\n\
         passphrase_file = {passphrase}\n\
         \n\
         # Chunk size of an export, like split(1): 1G, 512M, 1GB, 1GiB.\n\
         split_size = \"1G\"\n\
         \n\
         # \"zstd\" compresses the stream before gpg (restore undoes it);\n\
         # default: \"none\", the original zfs2cloud's format.\n\
         # compression = \"zstd\"\n\
         \n"
    )
}

const FILE_KEYS: &str = "\
# How the snapshot is exposed read-only: \"auto\" tries `mount -t zfs`, a
# bind mount of .zfs/snapshot, then a temporary read-only clone.
mount_strategy = \"auto\"

# File mode does not encrypt: point remote at an rclone `crypt` remote to
# keep file names and contents encrypted on the remote. `rclone sync`
# deletes remote files that are not in the snapshot.

";

const SCHEDULE_KEYS: &str = "\
# A new full backup once the last full is this many days old; the others
# are incrementals against it.
full_every_x_days = 30
# zfs2cloud's own snapshots older than this are pruned. Must be greater
# than full_every_x_days, or the base of live incrementals would go.
oldest_snapshot_days = 45

";

const FILE_SCHEDULE_KEYS: &str = "\
# zfs2cloud's own snapshots older than this many days are pruned.
oldest_snapshot_days = 45

";

const MONITORING: &str = "\
# Monitoring (docs/monitoring.md): pings in the healthchecks.io convention
# (/start, success, /fail with the error), and Prometheus textfile metrics
# for node_exporter's textfile collector.
# ping_url = \"https://hc-ping.com/<your-check-uuid>\"
# metrics_file = \"/var/lib/prometheus/node-exporter/zfs2cloud.prom\"

";

const HOOKS: &str = "\
# Commands around the snapshot (no shell: a program or [program, args...]),
# e.g. to stop an application for a consistent snapshot. post_snapshot runs
# whenever pre_snapshot has started; on_failure gets the error on stdin.
# [hooks]
# pre_snapshot = [\"systemctl\", \"stop\", \"app.service\"]
# post_snapshot = [\"systemctl\", \"start\", \"app.service\"]
# on_failure = \"/etc/zfs2cloud/notify-failure.sh\"
";

/// What was written and what to do next.
fn report(plan: &Plan) {
    let config = plan.config.display();
    out(&format!(
        "Wrote {config}: the configuration (edit it as you like)."
    ));
    if let Some(file) = &plan.passphrase_file {
        out(&format!(
            "Wrote {}: a new random passphrase (mode 0600).\n\n\
             IMPORTANT: store a copy of this passphrase somewhere other than this machine\n\
             (a password manager, a printout). Without it the backups cannot be decrypted:\n\
             losing it, or this machine with it, means losing every backup.",
            file.display()
        ));
    }
    out(&format!(
        "\nNext:\n  \
         zfs2cloud -c {config} check-config   # validate, show the effective config\n  \
         zfs2cloud -c {config} backup         # the first (full) backup\n  \
         zfs2cloud -c {config} status --remote"
    ));
    match systemd_instance(&plan.config) {
        Some(name) => out(&format!(
            "  systemctl enable --now zfs2cloud@{name}.timer   # every night at 03:00"
        )),
        None => out(&format!(
            "  (the systemd units read {CONFIG_DIR}/<name>.toml; put the config there to use them)"
        )),
    }
}

/// The instance name of the systemd units for a config at
/// `/etc/zfs2cloud/<name>.toml`, the only place they look.
fn systemd_instance(config: &Path) -> Option<String> {
    if config.parent() != Some(Path::new(CONFIG_DIR)) || config.extension()? != "toml" {
        return None;
    }
    Some(config.file_stem()?.to_string_lossy().into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(mode: InitMode) -> InitArgs {
        InitArgs {
            dataset: "tank/home/alice".into(),
            remote: "b2:bucket/alice".into(),
            mode,
            passphrase_file: None,
            rclone_config: None,
            intermediate_basedir: None,
        }
    }

    #[test]
    fn default_paths_are_the_ones_the_systemd_units_read() {
        let plan = plan(None, &args(InitMode::Intermediate)).unwrap();
        assert_eq!(
            plan.config,
            Path::new("/etc/zfs2cloud/tank-home-alice.toml")
        );
        assert_eq!(
            plan.passphrase_file.as_deref(),
            Some(Path::new("/etc/zfs2cloud/tank-home-alice.passphrase"))
        );
        assert_eq!(
            plan.intermediate_basedir,
            Path::new("/var/lib/zfs2cloud/tank-home-alice")
        );
        assert_eq!(
            systemd_instance(&plan.config).as_deref(),
            Some("tank-home-alice")
        );
        assert_eq!(systemd_instance(Path::new("/root/x.toml")), None);
    }

    #[test]
    fn the_template_loads_as_it_says_in_both_modes() {
        for mode in [InitMode::Intermediate, InitMode::File] {
            let plan = plan(None, &args(mode)).unwrap();
            let text = render(&plan);
            let file = ConfigFile::parse(&text, &plan.config)
                .unwrap_or_else(|e| panic!("{mode:?}: {e}\n{text}"));
            let config = &file.jobs[0];
            assert_eq!(config.dataset.as_str(), "tank/home/alice");
            assert_eq!(config.remote, "b2:bucket/alice");
            assert_eq!(config.passphrase_file, plan.passphrase_file, "{mode:?}");
        }
    }

    #[test]
    fn hostile_values_stay_inside_their_toml_strings() {
        let mut a = args(InitMode::Intermediate);
        a.remote = "b2:x\"\nmode = \"file".into();
        let plan = plan(Some(Path::new("/tmp/a\"b.toml")), &a).unwrap();
        let file = ConfigFile::parse(&render(&plan), &plan.config).unwrap();
        assert_eq!(file.jobs[0].remote, a.remote);
        assert_eq!(file.jobs[0].mode, zfs2cloud_core::Mode::Intermediate);
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        let mut a = args(InitMode::Intermediate);
        a.dataset = "tank/../x".into();
        assert!(plan(None, &a).unwrap_err().is::<UsageError>());
        let mut a = args(InitMode::Intermediate);
        a.remote = "backups".into();
        let err = plan(None, &a).unwrap_err();
        assert!(err.to_string().contains("has no ':'"), "{err}");
        // A ':' after a '/' is part of a local path to rclone, as check-config reads it.
        let mut a = args(InitMode::Intermediate);
        a.remote = "backups/at:noon".into();
        assert!(plan(None, &a).unwrap_err().is::<UsageError>());
        let mut a = args(InitMode::File);
        a.passphrase_file = Some("/tmp/p".into());
        assert!(plan(None, &a).unwrap_err().is::<UsageError>());
        let mut a = args(InitMode::Intermediate);
        a.passphrase_file = Some("/tmp/same".into());
        let err = plan(Some(Path::new("/tmp/same")), &a).unwrap_err();
        assert!(err.to_string().contains("must differ"), "{err}");
    }

    #[test]
    fn a_passphrase_is_256_random_bits_in_hex_on_one_line() {
        let (a, b) = (new_passphrase().unwrap(), new_passphrase().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 2 * PASSPHRASE_BYTES + 1);
        assert!(a.trim_end().chars().all(|c| c.is_ascii_hexdigit()));
    }
}
