//! `zfs2cloud restore`: with or without a config file, since disaster
//! recovery needs only the remote and the passphrase (or, for backups
//! encrypted to public keys, the secret key).

use std::cell::{OnceCell, RefCell};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use zfs2cloud_core::{
    chain_is_raw, chain_needs_gpg, chain_needs_passphrase, error_chain, plan_restore,
    read_owner_in, restore_chain, CancelToken, Config, ConfigFile, DatasetName, GpgEncryptor,
    OwnerMarker, Passphrase, RcloneOptions, RcloneUploader, RemoteBackup, RemoteListing,
    RestorePoint, RestoreSettings, Runner, SecretKeyring, ToolPaths, OWNER_FILE,
};
use zfs2cloud_core::{find_tree, member_restore_point, tree_restore_point};

use crate::app::{note, out, runner, UsageError};
use crate::args::{Cli, StreamArgs};
use crate::render::json;

/// The `restore` subcommand's arguments.
#[derive(Debug)]
pub struct RestoreArgs<'a> {
    pub to: &'a str,
    pub at: &'a str,
    pub from: Option<&'a str>,
    pub passphrase_file: Option<&'a Path>,
    pub secret_key_file: Option<&'a Path>,
    pub rclone_config: Option<&'a Path>,
    pub force: bool,
    pub recursive: bool,
    pub stream: &'a StreamArgs,
    /// Print the plan (dry run) or the result as JSON on stdout.
    pub json: bool,
}

/// What every dataset's restore of one invocation shares.
struct Restorer<'a> {
    args: &'a RestoreArgs<'a>,
    config: Option<Config>,
    store: RcloneUploader,
    /// gpg with the secrets, once a backup encrypted with gpg needs them:
    /// backups sent with `encryption = "none"` need none, and backups to
    /// public keys no passphrase, so none is asked for.
    gpg: OnceCell<GpgEncryptor>,
    /// The same with the passphrase, once a chain needs it: a tree's
    /// members may differ (some still on a passphrase chain, some on
    /// public keys), and the first one decides nothing for the others.
    gpg_with_passphrase: OnceCell<GpgEncryptor>,
    runner: Runner,
    tools: ToolPaths,
    cancel: CancelToken,
    /// Each dataset's entry of the `--json` document, as it is done.
    done: RefCell<Vec<serde_json::Value>>,
}

/// Restores `args.at` from the remote into `args.to` (with `--recursive`,
/// every dataset of the tree below the remote directory), the whole of it
/// under `--time-limit`.
pub fn run(cli: &Cli, cancel: &CancelToken, args: &RestoreArgs<'_>) -> anyhow::Result<()> {
    let (restored, timed_out) =
        cancel.run_limited(args.stream.limit(), || restore(cli, cancel, args));
    match (restored, timed_out) {
        // Whatever the deadline cut short (a listing, a receive), the
        // deadline is the cause.
        (Err(e), Some(limit)) => Err(e.context(format!(
            "restore stopped: its time limit of {}s ran out",
            limit.as_secs()
        ))),
        (result, _) => result,
    }
}

fn restore(cli: &Cli, cancel: &CancelToken, args: &RestoreArgs<'_>) -> anyhow::Result<()> {
    let config = job_config(cli)?;
    let remote = remote(args.from, config.as_ref())?;
    let target = DatasetName::parse(args.to).map_err(|e| UsageError(e.to_string()))?;
    let tools = config
        .as_ref()
        .map_or_else(ToolPaths::from_env, |c| c.tools.clone());
    let runner = runner(cli, cancel);
    let store = RcloneUploader::new(
        runner.clone(),
        tools.rclone.clone(),
        rclone_options(args.rclone_config, config.as_ref()),
    );
    let restorer = Restorer {
        args,
        config,
        store,
        gpg: OnceCell::new(),
        gpg_with_passphrase: OnceCell::new(),
        runner,
        tools,
        cancel: cancel.clone(),
        done: RefCell::new(Vec::new()),
    };
    if args.recursive {
        restorer.tree(&remote, &target)?;
        return restorer.print_json();
    }
    // One listing serves the owner marker and the backups: what is read
    // here delays the first byte of the stream.
    let listing =
        RemoteListing::read(&restorer.store, &remote).context("cannot list the remote")?;
    let dataset = restore_dataset(
        &restorer.store,
        &remote,
        args.from,
        restorer.config.as_ref(),
        listing.has_file(OWNER_FILE),
    );
    let backups = listing
        .backups_of(&restorer.store, dataset.as_ref())
        .context("cannot list the remote")?;
    restorer.one(
        &remote,
        &backups,
        dataset.as_ref(),
        &target,
        &point(args.at),
    )?;
    restorer.print_json()
}

/// The job whose backups to restore: the only one of the file, or the one
/// `--job` names. None without a config file.
fn job_config(cli: &Cli) -> anyhow::Result<Option<Config>> {
    let Some(path) = &cli.config else {
        return Ok(None);
    };
    let file = ConfigFile::load(path)?;
    match file.select(&cli.jobs)?.as_slice() {
        [job] => Ok(Some((*job).clone())),
        jobs => bail!(UsageError(format!(
            "restore works on one job, and {} has {}: pass --job NAME",
            path.display(),
            jobs.len()
        ))),
    }
}

fn point(at: &str) -> RestorePoint {
    if at == "latest" {
        RestorePoint::Latest
    } else {
        RestorePoint::Snapshot(at.to_owned())
    }
}

impl Restorer<'_> {
    /// A line for people: on stdout, or with `--json` on stderr.
    fn say(&self, line: &str) {
        if self.args.json {
            note(line);
        } else {
            out(line);
        }
    }

    /// With `--json`: the document of what was restored (or, in a dry
    /// run, would be).
    fn print_json(&self) -> anyhow::Result<()> {
        if self.args.json {
            let datasets = self.done.take();
            let doc = json::restore(self.runner.is_dry_run(), self.args.at, datasets);
            out(&serde_json::to_string_pretty(&doc)?);
        }
        Ok(())
    }

    /// Restores `point` of `backups` (those of `dataset`, or all there
    /// without one), listed in `remote`, into `target`.
    fn one(
        &self,
        remote: &str,
        backups: &[RemoteBackup],
        dataset: Option<&DatasetName>,
        target: &DatasetName,
        point: &RestorePoint,
    ) -> anyhow::Result<()> {
        let of = dataset.map(|d| format!(" of {d}")).unwrap_or_default();
        let chain = plan_restore(backups, point).with_context(|| format!("restore{of}"))?;
        let dirs: Vec<&str> = chain.iter().map(|b| b.dir_name.as_str()).collect();
        let at = match point {
            RestorePoint::Latest => "latest",
            RestorePoint::Snapshot(s) => s,
        };
        self.say(&format!(
            "restoring {at}{of} into {target} from {remote}: {}",
            dirs.join(" + ")
        ));
        let settings = RestoreSettings {
            target: target.clone(),
            force: self.args.force,
            mount: true,
            zfs: self.tools.zfs.clone(),
            remote: remote.to_owned(),
            cancel: self.cancel.clone(),
            prefetch_bytes: self.args.stream.prefetch,
        };
        let gpg = if chain_needs_gpg(&chain) {
            Some(self.gpg(&chain)?)
        } else {
            None
        };
        restore_chain(
            &self.store,
            gpg,
            &self.runner,
            &chain,
            &settings,
            crate::progress::shown(),
        )
        .context("restore")?;
        let dry_run = self.runner.is_dry_run();
        if !dry_run {
            self.say(&format!("restored {target}"));
            if chain_is_raw(&chain) {
                self.say(&raw_restore_hint(target));
            }
        }
        self.done.borrow_mut().push(json::restore_entry(
            dataset.map(DatasetName::as_str),
            remote,
            target.as_str(),
            &chain,
            chain_is_raw(&chain),
            !dry_run,
        ));
        Ok(())
    }

    /// gpg with the secrets `chain` needs, made the first time only: the
    /// passphrase (asked for, or read) if a backup is encrypted with one,
    /// and the imported `--secret-key-file`.
    fn gpg(&self, chain: &[&RemoteBackup]) -> anyhow::Result<&GpgEncryptor> {
        let needs_passphrase = chain_needs_passphrase(chain);
        // One made with the passphrase decrypts every chain.
        if let Some(gpg) = self.gpg_with_passphrase.get() {
            return Ok(gpg);
        }
        let cell = if needs_passphrase {
            &self.gpg_with_passphrase
        } else {
            &self.gpg
        };
        if let Some(gpg) = cell.get() {
            return Ok(gpg);
        }
        let passphrase = if needs_passphrase {
            Some(passphrase(self.args.passphrase_file, self.config.as_ref())?)
        } else {
            // Only to unlock a protected secret key.
            self.args
                .passphrase_file
                .map(Passphrase::from_file)
                .transpose()?
        };
        let gpg = decryptor(
            &self.runner,
            &self.tools.gpg,
            passphrase,
            self.args.secret_key_file,
        )?;
        Ok(cell.get_or_init(|| gpg))
    }

    /// `--recursive`: every dataset whose directory lies below `remote`,
    /// parents first, each into the same place below `target`, all at the
    /// root's snapshot (the tree was snapshotted at one instant).
    fn tree(&self, remote: &str, target: &DatasetName) -> anyhow::Result<()> {
        let members = find_tree(&self.store, remote).context("cannot list the remote")?;
        let Some(root) = members.first().filter(|m| m.relative.is_empty()) else {
            bail!(
                "{remote} holds no backups of its own, so it is not the top of a tree backed up \
                 with recursive = true"
            );
        };
        let at = tree_restore_point(&root.backups, self.args.at)
            .with_context(|| format!("restore of the tree in {remote}"))?;
        self.say(&format!(
            "restoring the tree of {} at {at} ({} dataset(s)) into {target}",
            root.dataset
                .as_ref()
                .map_or("?".to_owned(), ToString::to_string),
            members.len()
        ));
        for member in &members {
            let Some(point) = member_restore_point(&member.backups, &at) else {
                log::warn!(
                    "skipping {}: it has no complete backup at or before {at} (it was added to \
                     the tree later)",
                    member.dir
                );
                continue;
            };
            if point != RestorePoint::Snapshot(at.clone()) {
                log::warn!(
                    "{} has no complete backup of {at} (its backup failed that night?): \
                     restoring its newest before it",
                    member.dir
                );
            }
            let member_target = if member.relative.is_empty() {
                target.clone()
            } else {
                DatasetName::parse(&format!("{target}/{}", member.relative))?
            };
            self.one(
                &member.dir,
                &member.backups,
                member.dataset.as_ref(),
                &member_target,
                &point,
            )?;
        }
        Ok(())
    }
}

/// What to do after restoring a raw send: the dataset is encrypted with
/// its original key, which is not loaded, so restore did not mount it.
fn raw_restore_hint(target: &DatasetName) -> String {
    format!(
        "{target} was sent raw: it is encrypted with its original key, which is not loaded, so \
         it was not mounted. Load the key with `zfs load-key {target}` (for a key file: \
         `zfs load-key -L file:///path/to/key {target}`), then `zfs mount {target}` (a file \
         system; a volume appears under /dev/zvol once its key is loaded)"
    )
}

/// The dataset whose backups this restore considers: the config's, when
/// restoring from the config's remote; else the one the remote's owner
/// marker names; else none (every backup there, as before the marker).
fn restore_dataset(
    store: &RcloneUploader,
    remote: &str,
    from: Option<&str>,
    config: Option<&Config>,
    marker_listed: bool,
) -> Option<DatasetName> {
    let marker = owner(store, remote, marker_listed);
    let marked = marker.and_then(|m| DatasetName::parse(&m.dataset).ok());
    match config.filter(|c| from.is_none_or(|f| f == c.remote)) {
        Some(c) => {
            if let Some(other) = marked.filter(|m| *m != c.dataset) {
                log::warn!(
                    "the {OWNER_FILE} of {remote} says it holds backups of {other}, but the \
                     config's dataset is {}: only its backups are considered",
                    c.dataset
                );
            }
            Some(c.dataset.clone())
        }
        None => {
            if let Some(d) = &marked {
                log::info!("the {OWNER_FILE} of {remote} says it holds backups of {d}");
            }
            marked
        }
    }
}

/// The remote's owner marker; one that cannot be read is only a warning
/// here: a disaster restore must not fail for it.
fn owner(store: &RcloneUploader, remote: &str, listed: bool) -> Option<OwnerMarker> {
    read_owner_in(store, remote, Some(listed)).unwrap_or_else(|e| {
        log::warn!(
            "{}; restoring without knowing whose backups {remote} holds",
            error_chain(&e)
        );
        None
    })
}

/// `--from`, else the config's remote.
fn remote(from: Option<&str>, config: Option<&Config>) -> anyhow::Result<String> {
    match (from, config) {
        // The config's `remote` is checked when it is loaded; --from gets
        // the same rule, or rclone would read it as a flag.
        (Some(from), _) if from.trim().is_empty() || from.starts_with('-') => {
            bail!(UsageError(format!(
                "--from {from:?}: a remote must not be empty or start with '-' (it would be read \
                 as a flag); give an rclone destination such as \"b2:bucket/path\""
            )))
        }
        (Some(from), _) => Ok(from.to_owned()),
        (None, Some(c)) => Ok(c.remote.clone()),
        (None, None) => bail!(UsageError(
            "restore needs --from <remote> or a config file (-c) naming the remote".into()
        )),
    }
}

/// rclone's config file and global flags; restore needs no transfer flags.
fn rclone_options(rclone_config: Option<&Path>, config: Option<&Config>) -> RcloneOptions {
    RcloneOptions {
        config: rclone_config
            .map(PathBuf::from)
            .or_else(|| config.and_then(|c| c.rclone_config.clone())),
        global_flags: config
            .map(|c| c.rclone_global_flags.clone())
            .unwrap_or_default(),
        ..RcloneOptions::default()
    }
}

/// gpg decrypting with `passphrase` and, from `secret_key_file`, secret
/// keys imported into a temporary GNUPGHOME (without one: the user's
/// keyring and agent).
///
/// # Errors
///
/// If the secret key file cannot be imported or holds no secret key.
pub fn decryptor(
    runner: &Runner,
    gpg: &Path,
    passphrase: Option<Passphrase>,
    secret_key_file: Option<&Path>,
) -> anyhow::Result<GpgEncryptor> {
    let keyring = secret_key_file
        .map(|file| {
            SecretKeyring::import(runner, gpg, file)
                .with_context(|| format!("--secret-key-file {}", file.display()))
        })
        .transpose()?;
    Ok(GpgEncryptor::for_restore(
        runner.clone(),
        gpg.to_owned(),
        passphrase,
        keyring,
    ))
}

/// `--passphrase-file`, else the config's, else a prompt on the terminal.
fn passphrase(file: Option<&Path>, config: Option<&Config>) -> anyhow::Result<Passphrase> {
    match file.or_else(|| config.and_then(|c| c.passphrase_file.as_deref())) {
        Some(file) => Ok(Passphrase::from_file(file)?),
        None => Passphrase::prompt("zfs2cloud: passphrase of the backups: ")
            .context("no --passphrase-file and no terminal to ask on"),
    }
}
