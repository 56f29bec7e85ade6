//! The benchmark's world: one zfs-fuse pool with its datasets (random and
//! text data, each with one snapshot), a private GNUPGHOME, a passphrase
//! file, an empty rclone config, and zfs2cloud config files.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use zfs2cloud_testkit::harness::Pool;

use crate::cmd::{self, describe};

/// The snapshot every dataset gets (zfs2cloud's name format).
pub const SNAPSHOT: &str = "20240101000000";

/// Data files are written in pieces of this size.
const FILE_BYTES: u64 = 256 << 20;

/// What a dataset holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Pseudo-random bytes (xorshift64): incompressible.
    Random,
    /// Generated log lines: compressible, like a real `/var/log`.
    Text,
}

/// A dataset with data and the snapshot [`SNAPSHOT`].
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `pool/name`.
    pub name: String,
}

impl Dataset {
    /// `pool/name@SNAPSHOT`.
    pub fn snapshot(&self) -> String {
        format!("{}@{SNAPSHOT}", self.name)
    }
}

/// Files and tools shared by all runs.
#[derive(Debug)]
pub struct World {
    /// The zfs2cloud binary under test.
    pub bin: PathBuf,
    /// Everything else lives below this directory (next to the pool image,
    /// removed with the pool).
    pub scratch: PathBuf,
    pub gnupg: PathBuf,
    pub passphrase: PathBuf,
    pub rclone_conf: PathBuf,
    /// stdout/stderr of every timed run.
    pub logs: PathBuf,
}

impl World {
    /// Creates the GNUPGHOME (0700), the passphrase file (0600) and an
    /// empty rclone config under `scratch`. Logs go to `logs`, or under
    /// `scratch` (removed with the pool).
    pub fn new(bin: PathBuf, scratch: &Path, logs: Option<&Path>) -> anyhow::Result<Self> {
        let gnupg = scratch.join("gnupg");
        std::fs::create_dir_all(&gnupg).with_context(|| format!("mkdir {}", gnupg.display()))?;
        std::fs::set_permissions(&gnupg, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", gnupg.display()))?;
        let passphrase = scratch.join("passphrase");
        write_private(&passphrase, b"zfs2cloud benchmark passphrase\n")?;
        let rclone_conf = scratch.join("rclone.conf");
        write_private(&rclone_conf, b"")?;
        let logs = logs.map_or_else(|| scratch.join("logs"), Path::to_path_buf);
        std::fs::create_dir_all(&logs).with_context(|| format!("mkdir {}", logs.display()))?;
        Ok(Self {
            bin,
            scratch: scratch.to_path_buf(),
            gnupg,
            passphrase,
            rclone_conf,
            logs,
        })
    }

    /// `zfs2cloud -v -c <config> <args>` with GNUPGHOME set and the
    /// environment cleaned for rclone. `-v` logs every external command
    /// with its duration, to the run's log file.
    pub fn zfs2cloud(&self, config: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-v").arg("-c").arg(config).args(args);
        self.env(&mut cmd);
        cmd
    }

    /// GNUPGHOME, and no variables that change what zfs2cloud or rclone do.
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("GNUPGHOME", &self.gnupg);
        zfs2cloud_testkit::remote::sanitize_env(cmd);
        for var in [
            "ZFS2CLOUD_CONFIG",
            "ZFS2CLOUD_ZFS",
            "ZFS2CLOUD_GPG",
            "ZFS2CLOUD_RCLONE",
            "ZFS2CLOUD_NOW",
            "RCLONE_CONFIG",
            "RCLONE_BWLIMIT",
        ] {
            cmd.env_remove(var);
        }
    }

    /// Stops the gpg-agent the baseline's gpg may have started.
    pub fn stop_gpg_agent(&self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", &self.gnupg)
            .output();
    }
}

fn write_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(content)
        .with_context(|| format!("write {}", path.display()))
}

/// Releases zfs2cloud's holds (`zfs hold zfs2cloud`: the bases of future
/// incrementals) on every snapshot of `pool`, before the pool is
/// destroyed. Best effort: a failure only leaves a pool that `zpool
/// destroy -f` reports.
pub fn release_holds(pool: &str) {
    let Ok(out) = Command::new("zfs")
        .args(["list", "-H", "-t", "snapshot", "-o", "name", "-r", pool])
        .output()
    else {
        return;
    };
    for snap in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = Command::new("zfs")
            .args(["release", "zfs2cloud", snap])
            .output();
    }
}

/// Creates `<pool>/<rel>`, fills it with `bytes` bytes of `content` and
/// takes the snapshot [`SNAPSHOT`].
pub fn make_dataset(
    pool: &Pool<'_>,
    rel: &str,
    bytes: u64,
    content: Content,
    seed: u64,
) -> anyhow::Result<Dataset> {
    let mnt = pool.create_dataset(rel);
    let mut rng = Rng::new(seed);
    let mut log = LogGen::default();
    let mut written = 0;
    let mut n = 0;
    while written < bytes {
        let len = FILE_BYTES.min(bytes - written);
        let path = mnt.join(match content {
            Content::Random => format!("data-{n:04}.bin"),
            Content::Text => format!("app-{n:04}.log"),
        });
        let file =
            std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        let mut w = std::io::BufWriter::with_capacity(4 << 20, file);
        let mut left = len;
        let mut buf = Vec::with_capacity(1 << 20);
        while left > 0 {
            buf.clear();
            match content {
                Content::Random => rng.fill(&mut buf, 1 << 20),
                Content::Text => log.fill(&mut rng, &mut buf, 1 << 20),
            }
            let take = usize::try_from(left.min(buf.len() as u64)).context("size")?;
            w.write_all(&buf[..take])
                .with_context(|| format!("write {}", path.display()))?;
            left -= take as u64;
        }
        w.flush()
            .with_context(|| format!("write {}", path.display()))?;
        written += len;
        n += 1;
    }
    let ds = Dataset {
        name: pool.dataset(rel),
    };
    cmd::run(Command::new("zfs").arg("snapshot").arg(ds.snapshot()))?;
    Ok(ds)
}

/// xorshift64: the same seed gives the same bytes, so runs that start
/// from one seed see the same data and the same changes.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value; xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[usize::try_from(self.below(items.len() as u64)).unwrap_or(0)]
    }

    /// Appends `len` random bytes.
    pub fn fill(&mut self, buf: &mut Vec<u8>, len: usize) {
        while buf.len() < len {
            buf.extend_from_slice(&self.next().to_le_bytes());
        }
        buf.truncate(len);
    }
}

/// Deterministic syslog-like lines from a few services.
#[derive(Debug, Default)]
struct LogGen {
    /// Milliseconds since the first line.
    ms: u64,
}

impl LogGen {
    /// Appends at least `len` bytes of whole lines.
    fn fill(&mut self, rng: &mut Rng, buf: &mut Vec<u8>, len: usize) {
        let mut line = String::with_capacity(256);
        while buf.len() < len {
            line.clear();
            self.line(rng, &mut line);
            buf.extend_from_slice(line.as_bytes());
        }
    }

    fn line(&mut self, rng: &mut Rng, s: &mut String) {
        self.ms += rng.below(120);
        let secs = self.ms / 1000;
        let (day, rest) = (secs / 86_400, secs % 86_400);
        let _ = write!(
            s,
            "2024-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {} ",
            1 + (day / 28) % 12,
            1 + day % 28,
            rest / 3600,
            rest / 60 % 60,
            rest % 60,
            self.ms % 1000,
            rng.pick(&["web-01", "web-02", "web-03", "db-01", "nas"]),
        );
        let ip = format!("10.0.{}.{}", rng.below(16), rng.below(250) + 2);
        let _ = match rng.below(10) {
            0..=5 => writeln!(
                s,
                "nginx[{}]: {ip} - - \"{} /{}/{} HTTP/1.1\" {} {} {:.3} \"{}\"",
                2200 + rng.below(8),
                rng.pick(&["GET", "GET", "GET", "POST", "PUT"]),
                rng.pick(&[
                    "api/v1/items",
                    "api/v1/orders",
                    "static/img",
                    "photos/album",
                    "api/v2/users"
                ]),
                rng.below(500_000),
                rng.pick(&["200", "200", "200", "304", "404", "500"]),
                rng.below(60_000),
                rng.below(2000) as f64 / 1000.0,
                rng.pick(&[
                    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
                    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
                    "curl/7.88.1",
                    "Prometheus/2.45.0"
                ]),
            ),
            6 | 7 => writeln!(
                s,
                "postgres[{}]: LOG:  duration: {}.{:03} ms  statement: SELECT id, name, price FROM {} WHERE id = {}",
                1400 + rng.below(30),
                rng.below(200),
                rng.below(1000),
                rng.pick(&["items", "orders", "users", "sessions"]),
                rng.below(1_000_000),
            ),
            8 => writeln!(
                s,
                "sshd[{}]: Accepted publickey for {} from {ip} port {} ssh2: ED25519 SHA256:{:016x}",
                800 + rng.below(9000),
                rng.pick(&["backup", "admin", "git"]),
                30_000 + rng.below(30_000),
                rng.next(),
            ),
            _ => writeln!(
                s,
                "systemd[1]: {}.service: {}",
                rng.pick(&["zfs2cloud@data", "nginx", "postgresql", "cron"]),
                rng.pick(&[
                    "Deactivated successfully.",
                    "Consumed 1.234s CPU time.",
                    "Started.",
                    "Scheduled restart job, restart counter is at 1."
                ]),
            ),
        };
    }
}

/// The keys of one zfs2cloud config file. `None` keys are left out (so a
/// binary without the pipelined upload still accepts a plain config).
#[derive(Debug, Clone, Default)]
pub struct ConfigSpec {
    pub split_size: String,
    pub bwlimit: Option<String>,
    /// `upload_while_exporting = true` with this `upload_concurrency` and
    /// `keep_local_export`.
    pub pipelined: Option<(u32, bool)>,
    /// `compression` and `compression_level`.
    pub compression: Option<(&'static str, i32)>,
    /// More TOML, appended as it is (keys, then tables).
    pub extra: String,
}

/// One config's directories: its intermediate_basedir and its remote (a
/// plain local directory, which rclone takes as a local remote).
#[derive(Debug)]
pub struct Setup {
    pub config: PathBuf,
    pub basedir: PathBuf,
    pub remote: PathBuf,
}

impl Setup {
    /// Writes `<scratch>/<name>.toml` for `dataset` with `spec`.
    pub fn write(
        world: &World,
        name: &str,
        dataset: &Dataset,
        spec: &ConfigSpec,
    ) -> anyhow::Result<Self> {
        let basedir = world.scratch.join(name).join("intermediate");
        let remote = world.scratch.join(name).join("remote");
        let config = world.scratch.join(format!("{name}.toml"));
        let mut toml = String::new();
        let q = |p: &Path| format!("{:?}", p.display().to_string());
        let _ = writeln!(toml, "dataset = {:?}", dataset.name);
        let _ = writeln!(toml, "intermediate_basedir = {}", q(&basedir));
        let _ = writeln!(toml, "remote = {}", q(&remote));
        let _ = writeln!(toml, "rclone_config = {}", q(&world.rclone_conf));
        let _ = writeln!(toml, "passphrase_file = {}", q(&world.passphrase));
        let _ = writeln!(toml, "split_size = {:?}", spec.split_size);
        let _ = writeln!(toml, "upload_retries = 0");
        if let Some(limit) = &spec.bwlimit {
            let _ = writeln!(toml, "bwlimit = {limit:?}");
        }
        if let Some((concurrency, keep)) = spec.pipelined {
            let _ = writeln!(toml, "upload_while_exporting = true");
            let _ = writeln!(toml, "upload_concurrency = {concurrency}");
            let _ = writeln!(toml, "keep_local_export = {keep}");
        }
        if let Some((algo, level)) = spec.compression {
            let _ = writeln!(toml, "compression = {algo:?}");
            let _ = writeln!(toml, "compression_level = {level}");
        }
        toml.push_str(&spec.extra);
        write_private(&config, toml.as_bytes())?;
        Ok(Self {
            config,
            basedir,
            remote,
        })
    }

    /// Removes the local exports and the remote's content, for the next
    /// repetition (zfs2cloud refuses to re-export a complete export).
    pub fn clean(&self) -> anyhow::Result<()> {
        for dir in [&self.basedir, &self.remote] {
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .with_context(|| format!("rm -rf {}", dir.display()))?;
            }
        }
        std::fs::create_dir_all(&self.remote)
            .with_context(|| format!("mkdir {}", self.remote.display()))
    }
}

/// Whether the binary accepts the pipelined-upload and compression keys:
/// `check-config` of a config that sets them. An "unknown field" error
/// means an older binary (only the plain-export variants run); any other
/// failure is an error.
pub fn supports_pipelined(world: &World, dataset: &Dataset) -> anyhow::Result<bool> {
    let setup = Setup::write(
        world,
        "probe",
        dataset,
        &ConfigSpec {
            split_size: "1M".into(),
            bwlimit: None,
            pipelined: Some((2, false)),
            compression: Some(("zstd", 3)),
            extra: String::new(),
        },
    )?;
    let mut cmd = world.zfs2cloud(&setup.config, &["check-config"]);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", describe(&cmd)))?;
    if out.status.success() {
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("unknown field") || stderr.contains("unknown key") {
        return Ok(false);
    }
    anyhow::bail!(
        "command failed\ncommand: {}\nstatus: {}\nstdout:\n{}\nstderr:\n{stderr}",
        describe(&cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout)
    )
}
