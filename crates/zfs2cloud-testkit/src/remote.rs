//! Real rclone remotes for tests.
//!
//! * [`RcloneConfig`]: a private, temporary `rclone.conf` with helpers to
//!   add `local`, `s3` and `crypt` remotes, and [`RcloneConfig::rclone`] to
//!   run the real `rclone` against it.
//! * [`MotoServer`]: moto's S3-compatible server (`moto_server`) on a free
//!   loopback port, killed on drop. [`MotoServer::start`] returns `None`
//!   (skip the test) when moto is not installed, except under `CI=true`,
//!   where that is a failure. `scripts/install-test-deps` installs it into
//!   `/opt/zfs2cloud-test-venv`.
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
/// remotes, all removed on drop.
///
/// Sections are appended by the `add_*` methods; remote names must be
/// unique within one config (rclone silently merges duplicate sections).
#[derive(Debug)]
pub struct RcloneConfig {
    dir: tempfile::TempDir,
    path: PathBuf,
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
        Self { dir, path }
    }

    /// The config file, for `rclone --config <path>` (or `RCLONE_CONFIG`).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
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

    /// Adds an `s3` remote called `name` that talks to `server` (path-style
    /// addressing, dummy credentials `test`/`test`, region `us-east-1`).
    /// Create buckets with [`create_bucket`]; address objects as
    /// `name:bucket/path`.
    ///
    /// # Panics
    ///
    /// If the name is invalid or the config cannot be written.
    pub fn add_s3(&self, name: &str, server: &MotoServer) {
        let endpoint = server.endpoint();
        self.append_section(
            name,
            &[
                ("type", "s3"),
                ("provider", "Other"),
                ("endpoint", &endpoint),
                ("access_key_id", "test"),
                ("secret_access_key", "test"),
                ("region", "us-east-1"),
                ("force_path_style", "true"),
            ],
        );
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
        let out = run_ok(self.rclone().args(["obscure", "--", password]));
        let obscured = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            !obscured.is_empty(),
            "RcloneConfig: `rclone obscure` printed nothing for remote {name}"
        );
        self.append_section(
            name,
            &[
                ("type", "crypt"),
                ("remote", wrapped_remote),
                ("password", &obscured),
            ],
        );
    }

    /// `rclone --config <this config>`, with the environment cleaned by
    /// [`sanitize_env`]. Add the subcommand and arguments.
    #[must_use]
    pub fn rclone(&self) -> Command {
        let mut cmd = Command::new("rclone");
        cmd.arg("--config").arg(&self.path);
        sanitize_env(&mut cmd);
        cmd
    }
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

/// What an attempt to start moto came to.
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
            match wait_ready(&mut child, port, &program, &log_path) {
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

/// Polls until the server on `port` answers an S3 `ListBuckets`, or exits.
/// On timeout, kills and reaps `child`, then panics with the log.
fn wait_ready(child: &mut Child, port: u16, program: &Path, log_path: &Path) -> Startup {
    let deadline = Instant::now() + MOTO_STARTUP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let log = read_log(log_path);
                if log.contains("Address already in use") {
                    return Startup::PortTaken;
                }
                panic!(
                    "MotoServer: {} -H 127.0.0.1 -p {port} exited with {status} before \
                     answering; log:\n{log}",
                    program.display()
                );
            }
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("MotoServer: cannot poll {}: {e}", program.display());
            }
        }
        if answers(port) {
            return Startup::Ready;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "MotoServer: {} -H 127.0.0.1 -p {port} did not answer within {:?}; log:\n{}",
                program.display(),
                MOTO_STARTUP_TIMEOUT,
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
        .unwrap_or_else(|e| panic!("MotoServer: cannot bind 127.0.0.1:0: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("MotoServer: local_addr of 127.0.0.1:0 listener: {e}"))
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
