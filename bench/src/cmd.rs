//! Running external commands: every failure reports the command, its
//! status, stdout and stderr. Timed runs go in their own process group, so
//! an interrupted benchmark can stop a whole pipeline (`bash -c 'a | b | c'`)
//! and still clean up its pool.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::sampler::{DiskPeak, DiskSampler, RssSampler};

/// Set by SIGINT/SIGTERM; checked while waiting and between runs.
#[derive(Debug, Clone)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Registers the flag for SIGINT, SIGTERM and SIGHUP.
    pub fn install() -> anyhow::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ] {
            signal_hook::flag::register(sig, Arc::clone(&flag))
                .with_context(|| format!("register signal {sig}"))?;
        }
        Ok(Self(flag))
    }

    /// Fails once a signal has arrived.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.0.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }
}

/// `program arg arg ...` with `VAR=value` prefixes for set variables.
pub fn describe(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let _ = write!(s, "{}={} ", k.to_string_lossy(), v.to_string_lossy());
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        let _ = write!(s, " {}", a.to_string_lossy());
    }
    s
}

fn failure(cmd: &Command, status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> anyhow::Error {
    anyhow::anyhow!(
        "command failed\ncommand: {}\nstatus: {status}\nstdout:\n{}\nstderr:\n{}",
        describe(cmd),
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    )
}

/// Runs `cmd` to completion; a non-zero exit is an error with everything.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !out.status.success() {
        return Err(failure(cmd, out.status, &out.stdout, &out.stderr));
    }
    Ok(out)
}

/// `bash -c 'set -euo pipefail; <script>'`.
pub fn bash(script: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(format!("set -euo pipefail; {script}"));
    cmd
}

/// What to watch during a timed run.
#[derive(Debug, Default)]
pub struct Watch<'a> {
    /// Sample the peak RSS (`VmHWM`) of the spawned process itself.
    pub rss: bool,
    /// Sample the bytes of all files under this directory.
    pub disk: Option<&'a Path>,
}

/// The result of a timed run.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub secs: f64,
    /// Peak `VmHWM` of the process, bytes (if watched).
    pub rss: Option<u64>,
    /// Peak bytes under the watched directory (if watched).
    pub disk: Option<DiskPeak>,
}

/// Runs `cmd` in its own process group, timing it from spawn to exit and
/// sampling what `watch` asks for. Its stdout and stderr go to files under
/// `logs` (named `name.out`/`name.err`), shown if it fails.
pub fn timed(
    cmd: &mut Command,
    name: &str,
    logs: &Path,
    watch: &Watch<'_>,
    interrupt: &Interrupt,
) -> anyhow::Result<Timed> {
    use std::os::unix::process::CommandExt as _;
    interrupt.check()?;
    std::fs::create_dir_all(logs).with_context(|| format!("mkdir {}", logs.display()))?;
    let out_path: PathBuf = logs.join(format!("{name}.out"));
    let err_path: PathBuf = logs.join(format!("{name}.err"));
    let out = std::fs::File::create(&out_path)
        .with_context(|| format!("create {}", out_path.display()))?;
    let err = std::fs::File::create(&err_path)
        .with_context(|| format!("create {}", err_path.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let disk = watch.disk.map(DiskSampler::start);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    let rss = watch.rss.then(|| RssSampler::start(child.id()));
    let pgid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    let mut interrupted = false;
    let status = loop {
        if let Some(status) = child.try_wait().context("wait")? {
            break status;
        }
        if !interrupted && interrupt.check().is_err() {
            interrupted = true;
            let _ = killpg(pgid, Signal::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = start.elapsed().as_secs_f64();
    let rss = rss.map(RssSampler::finish);
    let disk = disk.map(DiskSampler::finish);
    interrupt.check()?;
    if !status.success() {
        let stdout = std::fs::read(&out_path).unwrap_or_default();
        let stderr = std::fs::read(&err_path).unwrap_or_default();
        return Err(failure(cmd, status, &stdout, &stderr));
    }
    Ok(Timed { secs, rss, disk })
}
