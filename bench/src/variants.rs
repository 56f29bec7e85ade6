//! The measured variants, run alternately within each repetition.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _};

use crate::cmd::{self, timed, Interrupt, Timed, Watch};
use crate::sampler::{tree_bytes, tree_usage};
use crate::setup::{ConfigSpec, Dataset, Setup, World, SNAPSHOT};
use crate::Opts;

/// Every measured value, by metric key, one entry per repetition.
#[derive(Debug, Default)]
pub struct Samples {
    values: BTreeMap<String, Vec<f64>>,
    /// Observations worth reporting that are not numbers.
    pub notes: Vec<String>,
}

impl Samples {
    /// Records one value of `key`.
    pub fn push(&mut self, key: &str, value: f64) {
        self.values.entry(key.to_owned()).or_default().push(value);
    }

    /// All values of `key`, in the order measured.
    pub fn all(&self, key: &str) -> &[f64] {
        self.values.get(key).map_or(&[], Vec::as_slice)
    }

    /// The median of `key`, if measured.
    pub fn median(&self, key: &str) -> Option<f64> {
        let mut v = self.all(key).to_vec();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            f64::midpoint(v[n / 2 - 1], v[n / 2])
        })
    }

    /// The largest value of `key`, if measured.
    pub fn max(&self, key: &str) -> Option<f64> {
        self.all(key).iter().copied().reduce(f64::max)
    }
}

/// The variants of one repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// 1: `zfs send | gpg | split`.
    Baseline,
    /// 2: `zfs2cloud export`, no upload.
    Export,
    /// 3: `zfs2cloud export`, then `zfs2cloud upload` under the bwlimit.
    Sequential,
    /// 4 (and 5, 6): `upload_while_exporting`, `keep_local_export = false`.
    Pipelined,
    /// 4, with the bwlimit divided among the `upload_concurrency` rclone
    /// processes, so their total is the link of variant 3.
    PipelinedFair,
    /// 5: plain export of the large dataset (RSS).
    LargeExport,
    /// 5: pipelined export of the large dataset (RSS).
    LargePipelined,
    /// 7: the text dataset, export alone, with the given compression.
    TextExport(&'static str),
    /// 7: the text dataset, pipelined under the bwlimit.
    TextPipelined(&'static str),
}

/// The prepared benchmark: datasets, configs, the calibrated bwlimit.
#[derive(Debug)]
pub struct Bench<'a> {
    pub world: &'a World,
    pub opts: &'a Opts,
    pub interrupt: &'a Interrupt,
    pub small: Dataset,
    pub large: Option<Dataset>,
    pub text: Option<Dataset>,
    /// The binary supports `upload_while_exporting` and `compression`.
    pub pipelined: bool,
    /// The `bwlimit` value (rclone syntax) and its rate in bytes/s.
    pub bwlimit: String,
    pub bw_rate: f64,
    /// `bwlimit / upload_concurrency`: each pipelined worker runs its own
    /// rclone, and rclone's limit is per process.
    pub fair_bwlimit: String,
    pub samples: Samples,
}

/// Bytes of the chunk files (`*.zfs.gpg.NNNN`) in `dir`.
fn chunk_bytes(dir: &Path) -> u64 {
    tree_usage(dir).chunks
}

/// `<S>-full`, the directory of the full export of [`SNAPSHOT`].
fn export_dir(root: &Path) -> std::path::PathBuf {
    root.join(format!("{SNAPSHOT}-full"))
}

/// Fails unless `dir` holds a complete export (manifest and chunks).
fn require_complete(dir: &Path, what: &str) -> anyhow::Result<u64> {
    if !dir.join("manifest.json").is_file() {
        bail!("{what}: no manifest.json in {}", dir.display());
    }
    let bytes = chunk_bytes(dir);
    if bytes == 0 {
        bail!("{what}: no chunks in {}", dir.display());
    }
    Ok(bytes)
}

#[allow(clippy::cast_precision_loss)]
fn f(bytes: u64) -> f64 {
    bytes as f64
}

impl Bench<'_> {
    fn spec(&self, bwlimit: bool) -> ConfigSpec {
        ConfigSpec {
            split_size: self.opts.split.clone(),
            bwlimit: bwlimit.then(|| self.bwlimit.clone()),
            pipelined: None,
            compression: None,
            extra: String::new(),
        }
    }

    fn pipelined_spec(&self) -> ConfigSpec {
        ConfigSpec {
            pipelined: Some((self.opts.concurrency, false)),
            ..self.spec(true)
        }
    }

    fn fair_spec(&self) -> ConfigSpec {
        ConfigSpec {
            bwlimit: Some(self.fair_bwlimit.clone()),
            ..self.pipelined_spec()
        }
    }

    /// Whether the fair variant differs from the plain pipelined one.
    fn has_fair(&self) -> bool {
        self.pipelined && self.opts.concurrency > 1
    }

    fn compression(&self, algo: &'static str) -> Option<(&'static str, i32)> {
        Some((algo, self.opts.zstd_level))
    }

    /// `zfs2cloud export --full --snapshot S` with `setup`'s config.
    fn export(&self, setup: &Setup, name: &str, watch: &Watch<'_>) -> anyhow::Result<Timed> {
        timed(
            &mut self
                .world
                .zfs2cloud(&setup.config, &["export", "--full", "--snapshot", SNAPSHOT]),
            name,
            &self.world.logs,
            watch,
            self.interrupt,
        )
    }

    /// Sets the bwlimit so that `zfs2cloud upload` of the small dataset's
    /// stream takes about as long as a plain `zfs2cloud export` of it
    /// (unless `--bwlimit` was given): a warm-up export (also warms the
    /// caches), a timed export, then an upload at the export's rate, whose
    /// excess over the pure transfer time is the upload step's fixed cost
    /// (rclone start-ups, listings), subtracted from the transfer budget.
    pub fn calibrate(&mut self) -> anyhow::Result<()> {
        let setup = Setup::write(self.world, "calibrate", &self.small, &self.spec(false))?;
        setup.clean()?;
        self.export(&setup, "calibrate-warmup", &Watch::default())?;
        setup.clean()?;
        let t = self.export(&setup, "calibrate-export", &Watch::default())?;
        let bytes = f(require_complete(
            &export_dir(&setup.basedir),
            "calibration export",
        )?);
        if let Some(limit) = &self.opts.bwlimit {
            self.bwlimit.clone_from(limit);
            self.bw_rate = parse_rate(limit)?;
            self.fair_bwlimit = kib_limit(self.bw_rate / f64::from(self.opts.concurrency)).0;
            setup.clean()?;
            return Ok(());
        }
        let (limit0, rate0) = kib_limit(bytes / t.secs);
        let setup = Setup::write(
            self.world,
            "calibrate",
            &self.small,
            &ConfigSpec {
                bwlimit: Some(limit0.clone()),
                ..self.spec(false)
            },
        )?;
        let u = timed(
            &mut self
                .world
                .zfs2cloud(&setup.config, &["upload", "--snapshot", SNAPSHOT]),
            "calibrate-upload",
            &self.world.logs,
            &Watch::default(),
            self.interrupt,
        )?;
        setup.clean()?;
        let overhead = (u.secs - bytes / rate0).max(0.0);
        // Compensate only a moderate fixed cost: a large one (the local
        // remote's checksumming) would need an absurd bwlimit, and then the
        // upload would no longer be bound by the link at all.
        let compensate = overhead < t.secs / 2.0;
        let budget = if compensate {
            t.secs - overhead
        } else {
            t.secs
        };
        (self.bwlimit, self.bw_rate) = kib_limit(bytes / budget);
        self.fair_bwlimit = kib_limit(self.bw_rate / f64::from(self.opts.concurrency)).0;
        self.samples.notes.push(format!(
            "calibration: plain export {:.2} s for {}; `zfs2cloud upload` at bwlimit {limit0} \
             took {:.2} s, {overhead:.2} s more than the transfer at that rate (rclone start-ups, \
             listings, checksums); {}; bwlimit {} for the runs",
            t.secs,
            crate::human_bytes(bytes as u64),
            u.secs,
            if compensate {
                "bwlimit raised to absorb it"
            } else {
                "too large to absorb (more than half the export time), so the bwlimit makes \
                 the pure transfer as long as the export, and the upload alone takes longer"
            },
            self.bwlimit
        ));
        Ok(())
    }

    /// Runs every variant once, in the given order (reversed on odd
    /// repetitions, so that no variant always follows the same one).
    pub fn repetition(&mut self, rep: usize) -> anyhow::Result<()> {
        let mut order = vec![Variant::Baseline, Variant::Export, Variant::Sequential];
        if self.pipelined {
            order.push(Variant::Pipelined);
        }
        if self.has_fair() {
            order.push(Variant::PipelinedFair);
        }
        if self.large.is_some() {
            order.push(Variant::LargeExport);
            if self.pipelined {
                order.push(Variant::LargePipelined);
            }
        }
        if self.text.is_some() && self.pipelined {
            for algo in ["none", "zstd"] {
                order.push(Variant::TextExport(algo));
                order.push(Variant::TextPipelined(algo));
            }
        }
        if rep % 2 == 1 {
            order.reverse();
        }
        for v in order {
            self.interrupt.check()?;
            crate::progress(&format!("rep {}/{}: {v:?}", rep + 1, self.opts.reps));
            if let Some(load) = load1() {
                self.samples.push("load1", load);
            }
            self.run(v, rep)
                .with_context(|| format!("repetition {}, {v:?}", rep + 1))?;
        }
        Ok(())
    }

    fn run(&mut self, v: Variant, rep: usize) -> anyhow::Result<()> {
        let name = |s: &str| format!("rep{}-{s}", rep + 1);
        match v {
            Variant::Baseline => {
                let out = self.world.scratch.join("baseline");
                if out.exists() {
                    std::fs::remove_dir_all(&out)
                        .with_context(|| format!("rm -rf {}", out.display()))?;
                }
                std::fs::create_dir_all(&out)
                    .with_context(|| format!("mkdir {}", out.display()))?;
                let script = format!(
                    "zfs send {} | gpg -c --batch --cipher-algo AES256 --compress-algo none \
                     --passphrase-file {} | split -b {} -a 4 -d - {}/x.",
                    self.small.snapshot(),
                    self.world.passphrase.display(),
                    self.opts.split,
                    out.display()
                );
                let mut cmd = cmd::bash(&script);
                self.world.env(&mut cmd);
                let t = timed(
                    &mut cmd,
                    &name("baseline"),
                    &self.world.logs,
                    &Watch::default(),
                    self.interrupt,
                )?;
                self.samples.push("baseline.secs", t.secs);
                self.samples.push("baseline.bytes", f(tree_bytes(&out)));
                std::fs::remove_dir_all(&out)
                    .with_context(|| format!("rm -rf {}", out.display()))?;
            }
            Variant::Export => {
                let setup = Setup::write(self.world, "export", &self.small, &self.spec(false))?;
                setup.clean()?;
                let t = self.export(
                    &setup,
                    &name("export"),
                    &Watch {
                        rss: true,
                        disk: None,
                    },
                )?;
                let bytes = require_complete(&export_dir(&setup.basedir), "export")?;
                self.samples.push("export.secs", t.secs);
                self.samples.push("export.bytes", f(bytes));
                self.push_rss("export.rss", t);
                setup.clean()?;
            }
            Variant::Sequential => {
                let setup = Setup::write(self.world, "sequential", &self.small, &self.spec(true))?;
                setup.clean()?;
                let e = self.export(&setup, &name("seq-export"), &Watch::default())?;
                let u = timed(
                    &mut self
                        .world
                        .zfs2cloud(&setup.config, &["upload", "--snapshot", SNAPSHOT]),
                    &name("seq-upload"),
                    &self.world.logs,
                    &Watch::default(),
                    self.interrupt,
                )?;
                require_complete(&export_dir(&setup.remote), "sequential upload")?;
                self.samples.push("seq.export.secs", e.secs);
                self.samples.push("seq.upload.secs", u.secs);
                self.samples.push("seq.total.secs", e.secs + u.secs);
                setup.clean()?;
            }
            Variant::PipelinedFair => {
                let setup =
                    Setup::write(self.world, "pipelined-fair", &self.small, &self.fair_spec())?;
                setup.clean()?;
                let t = self.export(
                    &setup,
                    &name("pipelined-fair"),
                    &Watch {
                        rss: false,
                        disk: Some(&setup.basedir),
                    },
                )?;
                require_complete(&export_dir(&setup.remote), "pipelined export (fair)")?;
                self.check_local_removed(&setup, "pipelined (fair)");
                self.samples.push("pipe.fair.secs", t.secs);
                if let Some(d) = t.disk {
                    self.samples.push("pipe.fair.disk.chunks", f(d.chunks));
                }
                setup.clean()?;
            }
            Variant::Pipelined => {
                let setup =
                    Setup::write(self.world, "pipelined", &self.small, &self.pipelined_spec())?;
                setup.clean()?;
                let t = self.export(
                    &setup,
                    &name("pipelined"),
                    &Watch {
                        rss: true,
                        disk: Some(&setup.basedir),
                    },
                )?;
                let bytes = require_complete(&export_dir(&setup.remote), "pipelined export")?;
                self.check_local_removed(&setup, "pipelined");
                self.samples.push("pipe.secs", t.secs);
                self.samples.push("pipe.bytes", f(bytes));
                self.push_rss("pipe.rss", t);
                if let Some(d) = t.disk {
                    self.samples.push("pipe.disk", f(d.total));
                    self.samples.push("pipe.disk.chunks", f(d.chunks));
                }
                setup.clean()?;
            }
            Variant::LargeExport | Variant::LargePipelined => {
                let large = self.large.clone().context("no large dataset")?;
                let pipelined = v == Variant::LargePipelined;
                let (tag, spec) = if pipelined {
                    ("large-pipelined", self.pipelined_spec())
                } else {
                    ("large-export", self.spec(false))
                };
                let setup = Setup::write(self.world, tag, &large, &spec)?;
                setup.clean()?;
                let t = self.export(
                    &setup,
                    &name(tag),
                    &Watch {
                        rss: true,
                        disk: pipelined.then_some(setup.basedir.as_path()),
                    },
                )?;
                if pipelined {
                    require_complete(&export_dir(&setup.remote), tag)?;
                    self.check_local_removed(&setup, tag);
                    self.samples.push("large.pipe.secs", t.secs);
                    self.push_rss("large.pipe.rss", t);
                    if let Some(d) = t.disk {
                        self.samples.push("large.pipe.disk", f(d.total));
                        self.samples.push("large.pipe.disk.chunks", f(d.chunks));
                    }
                } else {
                    require_complete(&export_dir(&setup.basedir), tag)?;
                    self.samples.push("large.export.secs", t.secs);
                    self.push_rss("large.export.rss", t);
                }
                setup.clean()?;
            }
            Variant::TextExport(algo) | Variant::TextPipelined(algo) => {
                let text = self.text.clone().context("no text dataset")?;
                let pipelined = matches!(v, Variant::TextPipelined(_));
                let spec = ConfigSpec {
                    compression: self.compression(algo),
                    ..if pipelined {
                        self.pipelined_spec()
                    } else {
                        self.spec(false)
                    }
                };
                let tag = format!(
                    "text-{}-{algo}",
                    if pipelined { "pipelined" } else { "export" }
                );
                let setup = Setup::write(self.world, &tag, &text, &spec)?;
                setup.clean()?;
                let t = self.export(
                    &setup,
                    &name(&tag),
                    &Watch {
                        rss: true,
                        disk: None,
                    },
                )?;
                let zstd = algo == "zstd";
                if pipelined {
                    require_complete(&export_dir(&setup.remote), &tag)?;
                    let uploaded = f(tree_bytes(&setup.remote));
                    let (secs, bytes, rss) = if zstd {
                        (
                            "text.zstd.pipe.secs",
                            "text.zstd.pipe.bytes",
                            "text.zstd.pipe.rss",
                        )
                    } else {
                        (
                            "text.none.pipe.secs",
                            "text.none.pipe.bytes",
                            "text.none.pipe.rss",
                        )
                    };
                    self.samples.push(secs, t.secs);
                    self.samples.push(bytes, uploaded);
                    self.push_rss(rss, t);
                } else {
                    require_complete(&export_dir(&setup.basedir), &tag)?;
                    self.samples.push(
                        if zstd {
                            "text.zstd.export.secs"
                        } else {
                            "text.none.export.secs"
                        },
                        t.secs,
                    );
                }
                setup.clean()?;
            }
        }
        Ok(())
    }

    fn push_rss(&mut self, key: &'static str, t: Timed) {
        if let Some(rss) = t.rss.filter(|&r| r > 0) {
            self.samples.push(key, f(rss));
        }
    }

    /// With `keep_local_export = false`, the local export directory must
    /// be gone once the upload is confirmed; noted (not fatal) if not.
    fn check_local_removed(&mut self, setup: &Setup, what: &str) {
        let dir = export_dir(&setup.basedir);
        if dir.exists() {
            let note = format!(
                "{what}: with keep_local_export = false the local export {} still exists \
                 after the run ({} bytes)",
                dir.display(),
                tree_bytes(&dir)
            );
            if !self.samples.notes.contains(&note) {
                self.samples.notes.push(note);
            }
        }
    }
}

/// The 1-minute load average.
pub fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A bytes/s rate as an rclone `--bwlimit` in KiB/s, and its exact rate.
fn kib_limit(rate: f64) -> (String, f64) {
    let kib = (rate / 1024.0).round().max(1.0);
    (format!("{kib:.0}k"), kib * 1024.0)
}

/// An rclone bandwidth (`20M`, `500k`, `1G`, plain bytes = KiB) in bytes/s.
pub fn parse_rate(s: &str) -> anyhow::Result<f64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num
        .parse()
        .with_context(|| format!("bwlimit {s:?}: give a rate such as 20M or 500k"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "k" => 1024.0,
        "b" => 1.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        _ => bail!("bwlimit {s:?}: unknown unit {unit:?} (use b, k, M or G)"),
    };
    Ok(n * mult)
}
