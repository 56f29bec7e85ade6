//! File mode's mount stage: exposes a snapshot read-only as a directory
//! (with `mount -t zfs`, a `.zfs/snapshot` bind mount or a temporary
//! clone), finds and takes down such exposures.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use crate::model::{
    clone_name, mount_dir, DatasetName, MountStrategy, SnapTime, SnapshotName, PROP_CLONE_OF,
};
use crate::process::{CommandLine, ProcessError, Runner};

use super::ZfsCli;

/// How a snapshot was exposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// A mount at the directory (strategies `mount` and `bind`).
    Mounted,
    /// A temporary clone, mounted at the directory.
    Clone(DatasetName),
}

/// A snapshot exposed read-only at `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMount {
    /// The snapshot.
    pub snapshot: SnapshotName,
    /// Where its files are.
    pub dir: PathBuf,
    /// How.
    pub exposure: Exposure,
}

/// Errors of mounting and unmounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// No strategy could expose the snapshot.
    #[error("cannot expose {snapshot} read-only: {}", attempts.join("; "))]
    NoStrategy {
        /// The snapshot.
        snapshot: String,
        /// What each strategy said.
        attempts: Vec<String>,
    },
    /// A command failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A directory could not be created or removed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A strategy claimed success but the directory is writable.
    #[error("{} was mounted but is not read-only; it was unmounted again", dir.display())]
    NotReadOnly {
        /// The directory.
        dir: PathBuf,
    },
    /// `zfs` printed something unparseable.
    #[error("unexpected output from `{command}`: {line:?}")]
    Parse {
        /// The command.
        command: String,
        /// The line that is not `name<TAB>value`.
        line: String,
    },
    /// The dataset is a volume: it has blocks, not files.
    #[error(
        "{dataset} is a volume; file mode copies files and needs a file system — use \
         mode = \"intermediate\""
    )]
    Volume {
        /// The dataset.
        dataset: String,
    },
}

/// Mount points in `/proc/mounts` text, unescaped (`\040` is a space).
#[must_use]
pub fn parse_mount_points(proc_mounts: &str) -> Vec<PathBuf> {
    proc_mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|p| {
            PathBuf::from(
                p.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .collect()
}

fn read_proc_mounts() -> String {
    std::fs::read_to_string("/proc/mounts").unwrap_or_default()
}

/// `mount` or `umount`, in the C locale: their messages are matched, and
/// a translated one would not be.
fn system_cmd(program: &str) -> CommandLine {
    CommandLine::new(program).env("LC_ALL", "C")
}

/// Exposes and hides snapshots; see the module documentation.
#[derive(Debug, Clone)]
pub struct Mounter {
    runner: Runner,
    zfs: ZfsCli,
}

impl Mounter {
    /// Uses `zfs` for clones and properties, `mount`/`umount` from `PATH`.
    #[must_use]
    pub fn new(runner: Runner, zfs: PathBuf) -> Self {
        let zfs = ZfsCli::new(runner.clone(), zfs);
        Self { runner, zfs }
    }

    fn zfs(&self) -> CommandLine {
        self.zfs.cmd()
    }

    /// Refuses a volume, whose snapshots have no files to expose. Runs
    /// even in a dry run (it changes nothing).
    ///
    /// # Errors
    ///
    /// [`MountError::Volume`] for a volume; [`MountError::Process`] if
    /// `zfs get` fails.
    pub fn require_file_system(&self, dataset: &DatasetName) -> Result<(), MountError> {
        let props = self.zfs.mount_properties(dataset)?;
        if props.kind == "volume" {
            return Err(MountError::Volume {
                dataset: dataset.to_string(),
            });
        }
        Ok(())
    }

    /// Exposes `snapshot` read-only at `<basedir>/<snap>-full/`, with
    /// `strategy`.
    ///
    /// # Errors
    ///
    /// [`MountError`] if the directory cannot be created or no strategy
    /// works; the directory is removed again then.
    pub fn mount(
        &self,
        snapshot: &SnapshotName,
        basedir: &Path,
        strategy: MountStrategy,
    ) -> Result<SnapshotMount, MountError> {
        let dir = mount_dir(basedir, snapshot);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| MountError::Io { path, source }
        };
        if !self
            .runner
            .skip_in_dry_run(&format!("mkdir -m 700 {}", dir.display()))
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io(&dir))?;
        }
        let order: &[MountStrategy] = match strategy {
            MountStrategy::Auto => &[
                MountStrategy::Mount,
                MountStrategy::Bind,
                MountStrategy::Clone,
            ],
            MountStrategy::Mount => &[MountStrategy::Mount],
            MountStrategy::Bind => &[MountStrategy::Bind],
            MountStrategy::Clone => &[MountStrategy::Clone],
        };
        let mut attempts = Vec::new();
        for s in order {
            match self.try_mount(*s, snapshot, &dir) {
                Ok(exposure) => {
                    let m = SnapshotMount {
                        snapshot: snapshot.clone(),
                        dir: dir.clone(),
                        exposure,
                    };
                    if !self.runner.is_dry_run() && !Self::is_read_only(&m) {
                        self.unmount(&m)?;
                        return Err(MountError::NotReadOnly { dir });
                    }
                    log::info!(
                        "exposed {snapshot} at {} with strategy {s:?}",
                        dir.display()
                    );
                    return Ok(m);
                }
                Err(e) => {
                    log::info!(
                        "strategy {s:?} did not work: {}",
                        crate::util::error_chain(&e)
                    );
                    attempts.push(format!("{s:?}: {}", crate::util::error_chain(&e)));
                }
            }
        }
        if !self.runner.is_dry_run() {
            let _ = std::fs::remove_dir(&dir);
        }
        Err(MountError::NoStrategy {
            snapshot: snapshot.to_string(),
            attempts,
        })
    }

    fn try_mount(
        &self,
        strategy: MountStrategy,
        snapshot: &SnapshotName,
        dir: &Path,
    ) -> Result<Exposure, MountError> {
        match strategy {
            MountStrategy::Mount => {
                let cmd = system_cmd("mount")
                    .args(["-t", "zfs", "-o", "ro"])
                    .arg(snapshot.to_string())
                    .arg(dir);
                self.runner.mutate(&cmd)?;
                Ok(Exposure::Mounted)
            }
            MountStrategy::Bind => {
                let out = self.runner.query(
                    &self
                        .zfs()
                        .args(["get", "-H", "-o", "value", "mountpoint"])
                        .arg(snapshot.dataset().as_str()),
                )?;
                let mountpoint = out.stdout_lossy().trim().to_owned();
                let source = Path::new(&mountpoint)
                    .join(".zfs/snapshot")
                    .join(snapshot.snap());
                if !mountpoint.starts_with('/') || !source.is_dir() {
                    return Err(MountError::Io {
                        path: source,
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "no .zfs/snapshot directory",
                        ),
                    });
                }
                // util-linux >= 2.27 turns `--bind -o ro` into bind + remount ro.
                let cmd = system_cmd("mount")
                    .args(["--bind", "-o", "ro"])
                    .arg(&source)
                    .arg(dir);
                self.runner.mutate(&cmd)?;
                Ok(Exposure::Mounted)
            }
            MountStrategy::Clone | MountStrategy::Auto => self.mount_clone(snapshot, dir),
        }
    }

    /// Exposes `snapshot` through a temporary clone mounted at `dir`. A
    /// clone that was made but could not be mounted is destroyed again.
    fn mount_clone(&self, snapshot: &SnapshotName, dir: &Path) -> Result<Exposure, MountError> {
        let Some(clone) = clone_name(snapshot) else {
            return Err(MountError::NoStrategy {
                snapshot: snapshot.to_string(),
                attempts: vec!["no valid clone name".into()],
            });
        };
        let made = self
            .create_clone(snapshot, &clone)
            .and_then(|()| self.mount_legacy_clone(&clone, dir));
        if let Err(e) = made {
            self.discard_failed_clone(snapshot, &clone);
            return Err(e);
        }
        Ok(Exposure::Clone(clone))
    }

    /// `zfs clone` with `mountpoint=legacy`, so that zfs mounts nothing by
    /// itself: a pool imported with an alternate root would put the clone
    /// under `<altroot>/<dir>`, not at `dir`. It is not shared (inherited
    /// `sharenfs`/`sharesmb` would export it) and asks snapshot tools
    /// (zfs-auto-snapshot, sanoid's convention) to leave it alone.
    fn create_clone(&self, snapshot: &SnapshotName, clone: &DatasetName) -> Result<(), MountError> {
        let mut cmd = self.zfs().arg("clone");
        for property in [
            "readonly=on".to_owned(),
            format!("{PROP_CLONE_OF}={snapshot}"),
            "mountpoint=legacy".to_owned(),
            "sharenfs=off".to_owned(),
            "sharesmb=off".to_owned(),
            "com.sun:auto-snapshot=false".to_owned(),
        ] {
            cmd = cmd.arg("-o").arg(property);
        }
        let cmd = cmd.arg(snapshot.to_string()).arg(clone.as_str());
        self.runner.mutate(&cmd)?;
        Ok(())
    }

    /// Mounts the legacy clone at `dir` with `mount -t zfs`; where that
    /// does not exist (zfs-fuse has no `mount.zfs`), zfs mounts it itself
    /// once its mountpoint is `dir`.
    fn mount_legacy_clone(&self, clone: &DatasetName, dir: &Path) -> Result<(), MountError> {
        let mount = system_cmd("mount")
            .args(["-t", "zfs", "-o", "ro"])
            .arg(clone.as_str())
            .arg(dir);
        let Err(e) = self.runner.mutate(&mount) else {
            return Ok(());
        };
        log::info!(
            "`{mount}` did not work ({}); setting the clone's mountpoint instead",
            e.stderr().trim()
        );
        let set = self
            .zfs()
            .arg("set")
            .arg(format!("mountpoint={}", dir.display()))
            .arg(clone.as_str());
        self.runner.mutate(&set)?;
        Ok(())
    }

    /// Destroys `clone` after a failed attempt, if it exists and is this
    /// snapshot's temporary clone (`zfs clone` can fail after creating it,
    /// e.g. "created, but not mounted"). Failures are only logged: the
    /// next run's leftover cleanup tries again.
    fn discard_failed_clone(&self, snapshot: &SnapshotName, clone: &DatasetName) {
        if self.clone_origin(clone).as_deref() != Some(&snapshot.to_string()) {
            return;
        }
        log::warn!("destroying the temporary clone {clone}, which could not be mounted");
        if let Err(e) = self.destroy_clone(clone.as_str()) {
            log::warn!(
                "could not destroy {clone}: {}; the next run will try again",
                crate::util::error_chain(&e)
            );
        }
    }

    /// The snapshot `clone` was made from, per its `zfs2cloud:clone-of`
    /// property; `None` if it does not exist or cannot be asked.
    fn clone_origin(&self, clone: &DatasetName) -> Option<String> {
        let cmd = self
            .zfs()
            .args(["list", "-H", "-o"])
            .arg(PROP_CLONE_OF)
            .arg(clone.as_str());
        let must = crate::process::RunOptions::cleanup(&self.runner);
        let out = self.runner.query_with(&cmd, &must).ok()?;
        Some(out.stdout_lossy().trim().to_owned())
    }

    /// Whether the exposure is really read-only: creating a file in it
    /// must fail with EROFS. (A property or a mount flag is not proof:
    /// zfs-fuse reports `readonly=off` and `rw` for a clone it enforces as
    /// read-only.)
    fn is_read_only(m: &SnapshotMount) -> bool {
        let probe = m.dir.join(".zfs2cloud-read-only-probe");
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                false
            }
            Err(e) => e.raw_os_error() == Some(nix::libc::EROFS),
        }
    }

    /// `zfs destroy -r` of a temporary clone (retrying zfs-fuse's "busy").
    /// Recursive, because a snapshot tool run with `-r` over the pool may
    /// have snapshotted the clone; nothing below it is anyone's data.
    fn destroy_clone(&self, clone: &str) -> Result<(), MountError> {
        Ok(self.zfs.destroy_own(clone, true)?)
    }

    /// Takes the exposure down: unmounts, or destroys the temporary clone
    /// (which unmounts it), then removes the directory. Runs even when the
    /// run is interrupted.
    ///
    /// # Errors
    ///
    /// [`MountError`] if the unmount or the destroy fails.
    pub fn unmount(&self, m: &SnapshotMount) -> Result<(), MountError> {
        let must = crate::process::RunOptions::cleanup(&self.runner);
        match &m.exposure {
            Exposure::Mounted => {
                self.runner
                    .mutate_with(&system_cmd("umount").arg(&m.dir), &must)?;
            }
            // This run created it; destroying it also unmounts it.
            Exposure::Clone(clone) => self.destroy_clone(clone.as_str())?,
        }
        self.remove_dir(&m.dir)
    }

    fn remove_dir(&self, dir: &Path) -> Result<(), MountError> {
        if self
            .runner
            .skip_in_dry_run(&format!("rmdir {}", dir.display()))
        {
            return Ok(());
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(MountError::Io {
                path: dir.to_owned(),
                source,
            }),
        }
    }

    /// The current exposure of `snapshot` made by an earlier
    /// `mount-snapshot`, if there is one.
    ///
    /// # Errors
    ///
    /// [`MountError`] if `zfs` cannot be asked.
    pub fn find(
        &self,
        snapshot: &SnapshotName,
        basedir: &Path,
    ) -> Result<Option<SnapshotMount>, MountError> {
        let dir = mount_dir(basedir, snapshot);
        if let Some(clone) = clone_name(snapshot) {
            if self.clone_origin(&clone) == Some(snapshot.to_string()) {
                return Ok(Some(SnapshotMount {
                    snapshot: snapshot.clone(),
                    dir,
                    exposure: Exposure::Clone(clone),
                }));
            }
        }
        if parse_mount_points(&read_proc_mounts()).contains(&dir) {
            return Ok(Some(SnapshotMount {
                snapshot: snapshot.clone(),
                dir,
                exposure: Exposure::Mounted,
            }));
        }
        Ok(None)
    }

    /// Finds and takes down what a killed run left: mounts under `basedir`
    /// named `<snap>-full`, temporary clones of `dataset`'s snapshots, and
    /// their empty directories. Returns what was cleaned.
    ///
    /// # Errors
    ///
    /// [`MountError`] if something found cannot be taken down.
    pub fn clean_leftovers(
        &self,
        dataset: &DatasetName,
        basedir: &Path,
    ) -> Result<Vec<String>, MountError> {
        let mut cleaned = Vec::new();
        let is_ours = |p: &Path| {
            p.parent() == Some(basedir)
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix("-full"))
                    .is_some_and(|s| SnapTime::parse(s).is_some())
        };
        // Clones first: destroying one also unmounts it.
        let pool = dataset.as_str().split('/').next().unwrap_or_default();
        let list = self
            .zfs()
            .args(["list", "-H", "-t", "filesystem", "-o"])
            .arg(format!("name,{PROP_CLONE_OF}"))
            .args(["-r", pool]);
        let out = self.runner.query(&list)?;
        for line in out.stdout_lossy().lines() {
            // Two columns, always: anything else means this is not the
            // listing asked for, and leftovers could go unseen.
            let Some((name, origin)) = line.split_once('\t').filter(|(_, o)| !o.contains('\t'))
            else {
                return Err(MountError::Parse {
                    command: list.to_string(),
                    line: line.to_owned(),
                });
            };
            let Ok(origin) = SnapshotName::parse(origin) else {
                continue;
            };
            if origin.dataset() != dataset || clone_name(&origin).is_none_or(|c| c.as_str() != name)
            {
                continue;
            }
            log::warn!("destroying the temporary clone {name} left by an earlier run");
            self.destroy_clone(name)?;
            cleaned.push(name.to_owned());
        }
        for point in parse_mount_points(&read_proc_mounts()) {
            if is_ours(&point) {
                log::warn!("unmounting {} left by an earlier run", point.display());
                self.runner.mutate(&system_cmd("umount").arg(&point))?;
                cleaned.push(point.display().to_string());
            }
        }
        if let Ok(entries) = std::fs::read_dir(basedir) {
            for entry in entries.flatten() {
                let p = entry.path();
                if is_ours(&p)
                    && p.is_dir()
                    && std::fs::read_dir(&p).is_ok_and(|mut d| d.next().is_none())
                {
                    self.remove_dir(&p)?;
                }
            }
        }
        Ok(cleaned)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn clone_names_are_siblings_with_a_recognisable_infix() {
        let s = SnapshotName::parse("tank/photos@20240101000000").unwrap();
        assert_eq!(
            clone_name(&s).unwrap().as_str(),
            "tank/photos.zfs2cloud-20240101000000"
        );
        let s = SnapshotName::parse("tank@20240101000000").unwrap();
        assert_eq!(
            clone_name(&s).unwrap().as_str(),
            "tank/tank.zfs2cloud-20240101000000"
        );
    }

    #[test]
    fn proc_mounts_parsing_unescapes() {
        let text = "z1/p.zfs2cloud-20240101000000 /var/lib/z\\040b/20240101000000-full fuse.zfs ro,relatime 0 0\n\
                    tank /tank zfs rw,xattr 0 0\n";
        let points = parse_mount_points(text);
        assert_eq!(points[0], PathBuf::from("/var/lib/z b/20240101000000-full"));
        assert_eq!(points[1], PathBuf::from("/tank"));
    }

    #[test]
    fn mount_and_umount_run_in_the_c_locale() {
        for program in ["mount", "umount"] {
            let cmd = system_cmd(program);
            assert_eq!(
                cmd.env_value("LC_ALL"),
                Some(std::ffi::OsStr::new("C")),
                "{cmd}"
            );
        }
    }
}
