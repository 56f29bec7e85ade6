//! The restore benchmark (issue 15): `zfs2cloud restore` against the
//! stock pipeline `rclone cat <chunk>… | gpg -d | zfs recv`, and
//! `zfs2cloud verify --deep` against `rclone cat <chunk>… | gpg -d >
//! /dev/null`, side by side in one run, on a local-directory remote and on
//! `rclone serve s3` on loopback. Run it with `sudo bench/run restore`;
//! see `bench/README.md`.
//!
//! One dataset gets a full backup and one incremental with zfs2cloud
//! itself; both remotes hold the same files. Each repetition runs every
//! variant once, in reversed order on odd repetitions; every restore is
//! checked byte-identical against the source before it is destroyed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::cmd::{self, bash, timed, Interrupt, Watch};
use crate::report::header;
use crate::setup::{make_dataset, ConfigSpec, Content, Dataset, Rng, Setup, World};
use crate::variants::{load1, Samples};
use crate::{human_bytes, lock_zfs, make_pool, parse_bytes, progress};
use zfs2cloud_testkit::harness::{tree_digest, Pool};
use zfs2cloud_testkit::remote::{RcloneS3Server, S3Endpoint};

/// zfs2cloud's restore and deep verify against the stock pipelines.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A smoke test: 64M + 8M, split 16M, 1 repetition (explicit options
    /// win).
    #[arg(long)]
    quick: bool,
    /// Random data in the full backup [default: 1G].
    #[arg(long, value_name = "BYTES")]
    size: Option<String>,
    /// Random data added before the incremental [default: 64M].
    #[arg(long, value_name = "BYTES")]
    incremental_size: Option<String>,
    /// zfs2cloud's split_size [default: 128M].
    #[arg(long, value_name = "SIZE")]
    split_size: Option<String>,
    /// Repetitions of each variant [default: 3].
    #[arg(long)]
    reps: Option<usize>,
    /// The remotes to measure on.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "local,s3")]
    remotes: Vec<RemoteKind>,
    /// Keep every run's stdout and stderr (zfs2cloud -v: each external
    /// command with its duration) in this directory.
    #[arg(long, value_name = "DIR")]
    logs: Option<PathBuf>,
}

/// Where the backups are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum RemoteKind {
    /// A local directory (rclone's local backend).
    Local,
    /// `rclone serve s3` on 127.0.0.1, serving a copy of the directory.
    S3,
}

impl RemoteKind {
    fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::S3 => "s3",
        }
    }
}

/// The resolved options.
#[derive(Debug)]
struct Params {
    size: u64,
    incremental: u64,
    split: String,
    reps: usize,
    remotes: Vec<RemoteKind>,
    logs: Option<PathBuf>,
}

impl Params {
    fn from_args(a: RestoreArgs) -> anyhow::Result<Self> {
        let pick = |given: Option<String>, quick: &str, normal: &str| {
            given.unwrap_or_else(|| if a.quick { quick } else { normal }.to_owned())
        };
        let split = pick(a.split_size, "16M", "128M");
        parse_bytes(&split)?;
        let params = Self {
            size: parse_bytes(&pick(a.size, "64M", "1G"))?,
            incremental: parse_bytes(&pick(a.incremental_size, "8M", "64M"))?,
            split,
            reps: a.reps.unwrap_or(if a.quick { 1 } else { 3 }),
            remotes: a.remotes,
            logs: a.logs,
        };
        if params.size < (1 << 20) || params.incremental < (1 << 20) {
            bail!("--size and --incremental-size must be at least 1M");
        }
        if params.reps == 0 || params.remotes.is_empty() {
            bail!("--reps must be at least 1, and --remotes name at least one");
        }
        Ok(params)
    }
}

/// The two backups, as the stock pipelines read them.
struct Backups {
    /// The directory names, full first.
    dirs: [String; 2],
    /// Each directory's chunks, in stream order.
    chunks: [Vec<String>; 2],
    /// The source's files after the incremental.
    digest: BTreeMap<String, String>,
}

/// One remote: where the backup directories are, as rclone addresses
/// them, and a config whose `remote` is there (for `verify --deep`).
struct Remote {
    kind: RemoteKind,
    spec: String,
    config: PathBuf,
}

/// The restore benchmark, from the lock to the printed report.
pub fn run(args: RestoreArgs, command: &str) -> anyhow::Result<()> {
    let params = Params::from_args(args)?;
    let interrupt = Interrupt::install()?;
    let bin = crate::resolve_bin()?;
    let session = lock_zfs(&["gpg", "rclone"])?;
    // The source and two restored copies at most at once; sparse.
    let pool_bytes = (params.size + params.incremental) * 4 + (1 << 30);
    let pool = make_pool(&session, "rst", pool_bytes);
    let world = World::new(bin, pool.scratch(), params.logs.as_deref())?;
    let result = measure(&pool, &world, &params, &interrupt);
    crate::setup::release_holds(pool.name());
    world.stop_gpg_agent();
    progress(&format!("destroying pool {}", pool.name()));
    drop(pool);
    drop(session);
    let samples = result?;
    println!("{}", render(&world, &params, &samples, command));
    Ok(())
}

fn measure(
    pool: &Pool<'_>,
    world: &World,
    params: &Params,
    interrupt: &Interrupt,
) -> anyhow::Result<Samples> {
    let (setup, backups) = make_backups(pool, world, params)?;
    let mut servers = Vec::new();
    let mut remotes = Vec::new();
    for &kind in &params.remotes {
        let (remote, server) = remote(world, &setup, kind)?;
        remotes.push(remote);
        servers.extend(server);
    }
    let mut samples = Samples::default();
    samples.notes.push(format!(
        "load average (1 min) before measuring: {}",
        load1().map_or_else(|| "?".to_owned(), |l| format!("{l:.2}"))
    ));
    for rep in 0..params.reps {
        let mut order: Vec<(usize, Variant)> = (0..remotes.len())
            .flat_map(|r| Variant::ALL.map(|v| (r, v)))
            .collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for (r, variant) in order {
            let bench = Run {
                pool,
                world,
                remote: &remotes[r],
                backups: &backups,
                interrupt,
                rep,
            };
            let secs = bench.variant(variant)?;
            samples.push(&key(remotes[r].kind, variant), secs);
            progress(&format!(
                "rep {rep}: {} {}: {secs:.2} s",
                remotes[r].kind.name(),
                variant.name()
            ));
        }
    }
    drop(servers);
    Ok(samples)
}

/// What is measured on each remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    StockRestore,
    Restore,
    StockVerify,
    DeepVerify,
}

impl Variant {
    const ALL: [Self; 4] = [
        Self::StockRestore,
        Self::Restore,
        Self::StockVerify,
        Self::DeepVerify,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::StockRestore => "stock restore",
            Self::Restore => "zfs2cloud restore",
            Self::StockVerify => "stock verify",
            Self::DeepVerify => "zfs2cloud verify --deep",
        }
    }
}

fn key(kind: RemoteKind, variant: Variant) -> String {
    format!("{} {}", kind.name(), variant.name())
}

/// A full of `params.size`, then `params.incremental` more and an
/// incremental, both backed up by zfs2cloud to a local directory.
fn make_backups(
    pool: &Pool<'_>,
    world: &World,
    params: &Params,
) -> anyhow::Result<(Setup, Backups)> {
    progress(&format!(
        "writing {} of random data",
        human_bytes(params.size)
    ));
    let src = make_dataset(pool, "src", params.size, Content::Random, 15)?;
    let spec = ConfigSpec {
        split_size: params.split.clone(),
        ..ConfigSpec::default()
    };
    let setup = Setup::write(world, "restore", &src, &spec)?;
    backup(world, &setup, "2025-01-01T03:00:00Z")?;
    progress(&format!(
        "adding {} for the incremental",
        human_bytes(params.incremental)
    ));
    add_random_file(pool, &src, params.incremental)?;
    backup(world, &setup, "2025-01-02T03:00:00Z")?;
    let mut dirs: Vec<String> = std::fs::read_dir(&setup.remote)
        .context("read the remote")?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let [full, incremental]: [String; 2] = dirs
        .try_into()
        .map_err(|d| anyhow::anyhow!("expected a full and an incremental, found {d:?}"))?;
    if !full.ends_with("-full") || incremental.ends_with("-full") {
        bail!("expected a full and an incremental, found {full} and {incremental}");
    }
    let chunks = [
        chunks(&setup.remote.join(&full))?,
        chunks(&setup.remote.join(&incremental))?,
    ];
    let digest = tree_digest(&pool.mountpoint(&src.name));
    Ok((
        setup,
        Backups {
            dirs: [full, incremental],
            chunks,
            digest,
        },
    ))
}

fn backup(world: &World, setup: &Setup, now: &str) -> anyhow::Result<()> {
    progress(&format!("zfs2cloud backup at {now}"));
    let mut cmd = world.zfs2cloud(&setup.config, &["backup"]);
    cmd.env("ZFS2CLOUD_NOW", now);
    cmd::run(&mut cmd)?;
    Ok(())
}

fn add_random_file(pool: &Pool<'_>, src: &Dataset, bytes: u64) -> anyhow::Result<()> {
    let path = pool.mountpoint(&src.name).join("incremental.bin");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?,
    );
    let mut rng = Rng::new(16);
    let mut buf = Vec::new();
    let mut left = bytes;
    while left > 0 {
        buf.clear();
        rng.fill(&mut buf, 1 << 20);
        let take = usize::try_from(left.min(1 << 20)).context("size")?;
        file.write_all(&buf[..take]).context("write")?;
        left -= take as u64;
    }
    file.flush().context("write")
}

/// The chunk files of backup directory `dir`, in stream order.
fn chunks(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("read_dir {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".zfs.gpg."))
        .collect();
    out.sort();
    Ok(out)
}

/// The remote of `kind`: the local directory itself, or a copy of it
/// served by `rclone serve s3` (kept running by the returned server).
fn remote(
    world: &World,
    setup: &Setup,
    kind: RemoteKind,
) -> anyhow::Result<(Remote, Option<RcloneS3Server>)> {
    let (spec, server) = match kind {
        RemoteKind::Local => (setup.remote.display().to_string(), None),
        RemoteKind::S3 => {
            let server = RcloneS3Server::start()
                .context("rclone serve s3 needs the current rclone (scripts/install-test-deps)")?;
            let bucket = server.root().join("bench");
            std::fs::create_dir_all(&bucket).context("create the bucket")?;
            cmd::run(
                Command::new("cp")
                    .arg("-a")
                    .arg(&setup.remote)
                    .arg(bucket.join("data")),
            )?;
            add_s3_section(world, &server)?;
            ("benchs3:bench/data".to_owned(), Some(server))
        }
    };
    let text = std::fs::read_to_string(&setup.config).context("read the config")?;
    let remote_line = format!("remote = {:?}\n", setup.remote.display().to_string());
    if !text.contains(&remote_line) {
        bail!("the config has no {remote_line:?}");
    }
    let config = world.scratch.join(format!("verify-{}.toml", kind.name()));
    std::fs::write(
        &config,
        text.replace(&remote_line, &format!("remote = {spec:?}\n")),
    )
    .context("write the verify config")?;
    Ok((Remote { kind, spec, config }, server))
}

/// Adds remote `benchs3:` for `server` to the world's rclone config.
fn add_s3_section(world: &World, server: &RcloneS3Server) -> anyhow::Result<()> {
    let (key, secret) = server.s3_credentials();
    let section = format!(
        "\n[benchs3]\ntype = s3\nprovider = Other\nendpoint = {}\naccess_key_id = {key}\n\
         secret_access_key = {secret}\nregion = us-east-1\nforce_path_style = true\n",
        server.endpoint()
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&world.rclone_conf)
        .context("open rclone.conf")?;
    f.write_all(section.as_bytes()).context("write rclone.conf")
}

/// One measured run.
struct Run<'a> {
    pool: &'a Pool<'a>,
    world: &'a World,
    remote: &'a Remote,
    backups: &'a Backups,
    interrupt: &'a Interrupt,
    rep: usize,
}

impl Run<'_> {
    /// Runs `variant` once, checks what it made, and returns its time.
    fn variant(&self, variant: Variant) -> anyhow::Result<f64> {
        let target = self.pool.dataset(&format!("r{}", self.rep));
        let mut cmd = match variant {
            Variant::StockRestore => bash(&self.stock_restore(&target)),
            Variant::Restore => self.restore(&target),
            Variant::StockVerify => bash(&self.stock_verify()),
            Variant::DeepVerify => self
                .world
                .zfs2cloud(&self.remote.config, &["verify", "--deep"]),
        };
        self.world.env(&mut cmd);
        let name = format!(
            "{}-{}-rep{}",
            self.remote.kind.name(),
            variant.name().replace([' ', '-'], "_"),
            self.rep
        );
        let t = timed(
            &mut cmd,
            &name,
            &self.world.logs,
            &Watch::default(),
            self.interrupt,
        )?;
        if matches!(variant, Variant::StockRestore | Variant::Restore) {
            let restored = tree_digest(&self.pool.mountpoint(&target));
            let same = restored == self.backups.digest;
            destroy(&target)?;
            if !same {
                bail!(
                    "{}: the restored files differ from the source",
                    variant.name()
                );
            }
        }
        Ok(t.secs)
    }

    /// `rclone cat` of each chunk of backup `i`, in turn, to stdout.
    fn cat_loop(&self, i: usize) -> String {
        let dir = format!("{}/{}", self.remote.spec, self.backups.dirs[i]);
        let chunks: Vec<String> = self.backups.chunks[i]
            .iter()
            .map(|c| shell_word(&format!("{dir}/{c}")))
            .collect();
        format!(
            "for c in {}; do rclone --config {} cat \"$c\"; done",
            chunks.join(" "),
            shell_word(&self.world.rclone_conf.display().to_string())
        )
    }

    /// gpg's decryption as zfs2cloud runs it, with the passphrase file.
    fn gpg_decrypt(&self) -> String {
        format!(
            "gpg --batch --no-tty --quiet --pinentry-mode loopback --no-symkey-cache \
             --passphrase-file {} --decrypt --output -",
            shell_word(&self.world.passphrase.display().to_string())
        )
    }

    /// The stock restore: each backup `cat | gpg -d | zfs recv` (`-u`, and
    /// `-F` for the incremental, as zfs2cloud), then `zfs mount`.
    fn stock_restore(&self, target: &str) -> String {
        let t = shell_word(target);
        format!(
            "{} | {} | zfs recv -u {t}; {} | {} | zfs recv -u -F {t}; zfs mount {t}",
            self.cat_loop(0),
            self.gpg_decrypt(),
            self.cat_loop(1),
            self.gpg_decrypt()
        )
    }

    /// The stock check: each backup `cat | gpg -d > /dev/null`.
    fn stock_verify(&self) -> String {
        format!(
            "{} | {} > /dev/null; {} | {} > /dev/null",
            self.cat_loop(0),
            self.gpg_decrypt(),
            self.cat_loop(1),
            self.gpg_decrypt()
        )
    }

    /// `zfs2cloud restore` of the latest backup, without a config file.
    fn restore(&self, target: &str) -> Command {
        let mut cmd = Command::new(&self.world.bin);
        cmd.args(["-v", "restore", "--to", target, "--from", &self.remote.spec])
            .arg("--passphrase-file")
            .arg(&self.world.passphrase)
            .arg("--rclone-config")
            .arg(&self.world.rclone_conf);
        cmd
    }
}

/// `zfs destroy -r dataset`, again while zfs-fuse says it is busy (it
/// does for a moment after a dataset's files were read).
fn destroy(dataset: &str) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match cmd::run(Command::new("zfs").args(["destroy", "-r", dataset])) {
            Err(e) if attempt < 40 && e.to_string().contains("dataset is busy") => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            result => return result.map(drop),
        }
    }
}

/// `word` in single quotes for bash.
fn shell_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The issue's bound on each ratio.
const TARGET: f64 = 1.05;

fn render(world: &World, params: &Params, samples: &Samples, command: &str) -> String {
    let mut out = header(&world.bin, command);
    let _ = writeln!(
        out,
        "A full of {} of random data and one incremental of {} more, backed up by zfs2cloud \
         (gpg, split_size {}); {} repetition(s), variants alternated (order reversed on odd \
         repetitions); medians. The stock restore is `for c in <chunks>; do rclone cat $c; \
         done | gpg -d | zfs recv -u` for each backup, then `zfs mount`; the stock verify is \
         the same into `/dev/null`. Every restore was compared byte for byte with the \
         source.\n",
        human_bytes(params.size),
        human_bytes(params.incremental),
        params.split,
        params.reps
    );
    let _ = writeln!(
        out,
        "| remote | measurement | median | runs | target | result |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for &kind in &params.remotes {
        for variant in Variant::ALL {
            let k = key(kind, variant);
            let runs: Vec<String> = samples
                .all(&k)
                .iter()
                .map(|s| format!("{s:.2} s"))
                .collect();
            let median = samples
                .median(&k)
                .map_or_else(String::new, |m| format!("{m:.2} s"));
            let _ = writeln!(
                out,
                "| {} | {} | {median} | {} |  |  |",
                kind.name(),
                variant.name(),
                runs.join(", ")
            );
        }
        for (ours, stock) in [
            (Variant::Restore, Variant::StockRestore),
            (Variant::DeepVerify, Variant::StockVerify),
        ] {
            let (Some(a), Some(b)) = (
                samples.median(&key(kind, ours)),
                samples.median(&key(kind, stock)),
            ) else {
                continue;
            };
            let ratio = a / b;
            let result = if ratio <= TARGET { "MET" } else { "**MISSED**" };
            let _ = writeln!(
                out,
                "| {} | {} / {} | {ratio:.3} |  | ≤ {TARGET} | {result} |",
                kind.name(),
                ours.name(),
                stock.name()
            );
        }
    }
    let _ = writeln!(out);
    for note in &samples.notes {
        let _ = writeln!(out, "- {note}");
    }
    out
}
