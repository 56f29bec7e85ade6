//! The markdown report: machine facts, the command, and the table of
//! medians, ratios and the issue's targets with MET/MISSED.

use std::fmt::Write as _;
use std::process::Command;

use crate::variants::{Bench, Samples};
use crate::{human_bytes, Opts};

const MIB: f64 = 1024.0 * 1024.0;

/// Facts about the machine and the tools, as `(name, value)`.
pub fn machine(bin: &std::path::Path) -> Vec<(String, String)> {
    let first_line = |prog: &str, args: &[&str]| -> String {
        Command::new(prog)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(|l| l.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into())
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".into(), |s| s.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or_else(|| "unknown".into(), |kb| human_bytes(kb * 1024));
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let rev = first_line("git", &["-C", workspace, "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args([
            "-C",
            workspace,
            "status",
            "--porcelain",
            "--untracked-files=no",
        ])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    vec![
        ("CPU".into(), cpu),
        ("cores".into(), cores.to_string()),
        ("memory".into(), mem),
        ("kernel".into(), first_line("uname", &["-sr"])),
        (
            "load average at the end (1, 5, 15 min)".into(),
            std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|_| "unknown".into()),
        ),
        (
            "zfs-fuse".into(),
            first_line("dpkg-query", &["-W", "-f", "${Version}\n", "zfs-fuse"]),
        ),
        ("gpg".into(), first_line("gpg", &["--version"])),
        ("rclone".into(), first_line("rclone", &["version"])),
        (
            "zfs2cloud".into(),
            format!(
                "{} ({}), workspace at {rev}{}",
                first_line(&bin.display().to_string(), &["--version"]),
                bin.display(),
                if dirty { " + uncommitted changes" } else { "" }
            ),
        ),
    ]
}

/// The report's head, for both modes: the machine facts and the command.
pub fn header(bin: &std::path::Path, command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Machine\n");
    for (k, v) in machine(bin) {
        let _ = writeln!(out, "- {k}: {v}");
    }
    let _ = writeln!(out, "\n### Command\n\n```sh\n{command}\n```\n");
    out
}

/// One table row.
struct Row {
    id: &'static str,
    what: String,
    median: String,
    runs: String,
    target: String,
    result: String,
}

fn secs(v: f64) -> String {
    format!("{v:.2} s")
}

fn mib(v: f64) -> String {
    format!("{:.1} MiB", v / MIB)
}

/// MiB, and the exact byte count (a bound is exact).
fn mib_exact(v: f64) -> String {
    format!("{:.1} MiB ({v:.0} B)", v / MIB)
}

fn verdict(met: bool) -> String {
    if met { "MET" } else { "**MISSED**" }.into()
}

/// `zstd`'s default window log for a level on a large input (the
/// `ZSTD_defaultCParameters` table, source size unknown).
fn zstd_window_log(level: i32) -> u32 {
    match level {
        ..=1 => 19,
        2 => 20,
        3..=7 => 21,
        8..=16 => 22,
        _ => 23,
    }
}

struct Table<'s> {
    s: &'s Samples,
    rows: Vec<Row>,
}

impl Table<'_> {
    /// A measured row: the median and every run, formatted with `fmt`.
    fn measured(&mut self, id: &'static str, what: &str, key: &str, fmt: fn(f64) -> String) {
        let Some(m) = self.s.median(key) else {
            return;
        };
        let runs: Vec<String> = self.s.all(key).iter().map(|&v| fmt(v)).collect();
        self.rows.push(Row {
            id,
            what: what.into(),
            median: fmt(m),
            runs: runs.join(", "),
            target: String::new(),
            result: String::new(),
        });
    }

    fn derived(
        &mut self,
        id: &'static str,
        what: String,
        value: String,
        target: String,
        result: String,
    ) {
        self.rows.push(Row {
            id,
            what,
            median: value,
            runs: String::new(),
            target,
            result,
        });
    }

    fn not_run(&mut self, id: &'static str, what: &str, why: &str) {
        self.rows.push(Row {
            id,
            what: what.into(),
            median: "not measured".into(),
            runs: String::new(),
            target: String::new(),
            result: why.into(),
        });
    }
}

/// The whole report, markdown.
#[allow(clippy::too_many_lines)]
pub fn render(bench: &Bench<'_>, opts: &Opts, command: &str) -> String {
    let s = &bench.samples;
    let mut t = Table {
        s,
        rows: Vec::new(),
    };
    let small = human_bytes(opts.size);
    let large = human_bytes(opts.large_size);
    let text = human_bytes(opts.text_size);
    let c = opts.concurrency;

    // 1 and 2.
    t.measured(
        "1",
        &format!("baseline export zfs send \\| gpg -c \\| split, {small}"),
        "baseline.secs",
        secs,
    );
    t.measured(
        "2",
        &format!("zfs2cloud export, {small}"),
        "export.secs",
        secs,
    );
    if let (Some(b), Some(z)) = (s.median("baseline.secs"), s.median("export.secs")) {
        let r = z / b;
        t.derived(
            "2/1",
            "zfs2cloud export / baseline".into(),
            format!("{r:.3}"),
            "≤ 1.05".into(),
            verdict(r <= 1.05),
        );
    }

    // 3.
    t.measured(
        "3",
        &format!("sequential: export part (no limit), {small}"),
        "seq.export.secs",
        secs,
    );
    t.measured(
        "3",
        &format!("sequential: upload part (bwlimit {})", bench.bwlimit),
        "seq.upload.secs",
        secs,
    );
    t.measured("3", "sequential: total", "seq.total.secs", secs);
    let export_alone = s.median("export.secs");
    let upload_alone = s.median("seq.upload.secs");
    let alone = match (export_alone, upload_alone) {
        (Some(e), Some(u)) => Some(e.max(u)),
        _ => None,
    };
    if let (Some(e), Some(u)) = (export_alone, upload_alone) {
        t.derived(
            "3",
            "calibration: upload alone / export alone".into(),
            format!("{:.2}", u / e),
            "≈ 1 (bwlimit chosen so)".into(),
            "reference".into(),
        );
    }
    if let (Some(a), Some(q)) = (alone, s.median("seq.total.secs")) {
        t.derived(
            "3",
            "sequential total / max(export alone, upload alone)".into(),
            format!("{:.2}", q / a),
            "≈ 2".into(),
            "reference".into(),
        );
    }

    // 4.
    if bench.pipelined {
        let pipelined = |t: &mut Table<'_>, key: &str, label: String, short: &str| {
            t.measured("4", &label, key, secs);
            if let (Some(a), Some(p)) = (alone, s.median(key)) {
                let r = p / a;
                t.derived(
                    "4",
                    format!("{short} / max(export alone, upload alone)"),
                    format!("{r:.2}"),
                    "≤ 1.15".into(),
                    verdict(r <= 1.15),
                );
            }
            if let (Some(q), Some(p)) = (s.median("seq.total.secs"), s.median(key)) {
                t.derived(
                    "4",
                    format!("{short} / sequential total"),
                    format!("{:.2}", p / q),
                    "≈ 0.5".into(),
                    "reference".into(),
                );
            }
        };
        pipelined(
            &mut t,
            "pipe.secs",
            format!(
                "pipelined export+upload, c={c}, bwlimit {} per rclone process (the same \
                 config value as 3; up to {c} × that in total), {small}",
                bench.bwlimit
            ),
            "pipelined",
        );
        if c > 1 {
            pipelined(
                &mut t,
                "pipe.fair.secs",
                format!(
                    "pipelined export+upload, c={c}, bwlimit {} per rclone process ({c} × that \
                     = the link of 3), {small}",
                    bench.fair_bwlimit
                ),
                "pipelined, same total link",
            );
        }
    } else {
        t.not_run(
            "4",
            "pipelined export+upload",
            "binary lacks upload_while_exporting",
        );
    }

    // 5.
    let rss_limit = 64.0 * MIB;
    let rss_pair = |t: &mut Table<'_>, label: &str, k1: &str, k2: &str| {
        let (m1, m2) = (s.median(k1), s.median(k2));
        t.measured(
            "5",
            &format!("peak RSS of zfs2cloud, {label}, {small}"),
            k1,
            mib,
        );
        t.measured(
            "5",
            &format!("peak RSS of zfs2cloud, {label}, {large}"),
            k2,
            mib,
        );
        let worst = [s.max(k1), s.max(k2)]
            .into_iter()
            .flatten()
            .reduce(f64::max);
        if let Some(w) = worst {
            t.derived(
                "5",
                format!("largest peak RSS, {label} (any run)"),
                mib(w),
                "≤ 64 MiB".into(),
                verdict(w <= rss_limit),
            );
        }
        if let (Some(a), Some(b)) = (m1, m2) {
            let r = b / a;
            t.derived(
                "5",
                format!("peak RSS {large} / {small}, {label}"),
                format!("{r:.3}"),
                "0.90 – 1.10".into(),
                verdict((0.9..=1.1).contains(&r)),
            );
        }
    };
    if bench.pipelined {
        rss_pair(&mut t, "pipelined", "pipe.rss", "large.pipe.rss");
    }
    rss_pair(&mut t, "plain export", "export.rss", "large.export.rss");
    if bench.large.is_none() {
        t.not_run(
            "5",
            &format!("peak RSS at {large}"),
            "large dataset skipped (--large-size 0)",
        );
    }

    // 6.
    if bench.pipelined {
        let bound = f64::from(c + 1) * opts.split_bytes as f64;
        t.measured(
            "6",
            &format!("peak bytes of chunks in intermediate_basedir during 4, {small}"),
            "pipe.disk.chunks",
            mib_exact,
        );
        t.measured(
            "6",
            &format!("peak bytes of all files in intermediate_basedir during 4, {small}"),
            "pipe.disk",
            mib_exact,
        );
        t.measured(
            "6",
            &format!("peak bytes of chunks, pipelined, {large}"),
            "large.pipe.disk.chunks",
            mib_exact,
        );
        let worst = [
            s.max("pipe.disk.chunks"),
            s.max("pipe.fair.disk.chunks"),
            s.max("large.pipe.disk.chunks"),
        ]
        .into_iter()
        .flatten()
        .reduce(f64::max);
        if let Some(w) = worst {
            t.derived(
                "6",
                "largest peak of chunk bytes on local disk (any run)".into(),
                mib_exact(w),
                format!("≤ (c+1) × split = {}", mib_exact(bound)),
                verdict(w <= bound),
            );
        }
    } else {
        t.not_run(
            "6",
            "peak bytes in intermediate_basedir",
            "binary lacks keep_local_export",
        );
    }

    // 7.
    if bench.pipelined && bench.text.is_some() {
        t.measured(
            "7",
            &format!("text {text}, none: export alone (no upload)"),
            "text.none.export.secs",
            secs,
        );
        t.measured(
            "7",
            &format!(
                "text {text}, zstd-{}: export alone (no upload)",
                opts.zstd_level
            ),
            "text.zstd.export.secs",
            secs,
        );
        t.measured(
            "7",
            &format!("text {text}, none: bytes uploaded"),
            "text.none.pipe.bytes",
            mib,
        );
        t.measured(
            "7",
            &format!("text {text}, zstd-{}: bytes uploaded", opts.zstd_level),
            "text.zstd.pipe.bytes",
            mib,
        );
        t.measured(
            "7",
            &format!(
                "text {text}, none: pipelined end-to-end (bwlimit {})",
                bench.bwlimit
            ),
            "text.none.pipe.secs",
            secs,
        );
        t.measured(
            "7",
            &format!(
                "text {text}, zstd-{}: pipelined end-to-end",
                opts.zstd_level
            ),
            "text.zstd.pipe.secs",
            secs,
        );
        if let (Some(bn), Some(bz), Some(tn), Some(tz), Some(ez)) = (
            s.median("text.none.pipe.bytes"),
            s.median("text.zstd.pipe.bytes"),
            s.median("text.none.pipe.secs"),
            s.median("text.zstd.pipe.secs"),
            s.median("text.zstd.export.secs"),
        ) {
            let br = bz / bn;
            let tr = tz / tn;
            t.derived(
                "7",
                "bytes zstd / none".into(),
                format!("{br:.3}"),
                String::new(),
                String::new(),
            );
            t.derived(
                "7",
                "time zstd / none".into(),
                format!("{tr:.3}"),
                "≈ bytes ratio, if upload-bound".into(),
                "reference".into(),
            );
            let floor = ez / tn;
            let allowed = 1.15 * br.max(floor);
            t.derived(
                "7",
                format!(
                    "time ratio against max(bytes ratio {br:.3}, zstd export alone / none \
                     end-to-end {floor:.3})"
                ),
                format!("{:.2}", tr / br.max(floor)),
                "≤ 1.15".into(),
                verdict(tr <= allowed),
            );
        }
        let (kn, kz) = ("text.none.pipe.rss", "text.zstd.pipe.rss");
        t.measured("7", "peak RSS, text, pipelined, none", kn, mib);
        t.measured(
            "7",
            &format!("peak RSS, text, pipelined, zstd-{}", opts.zstd_level),
            kz,
            mib,
        );
        if let Some(w) = s.max(kz) {
            let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            let window = f64::from(1u32 << zstd_window_log(opts.zstd_level));
            #[allow(clippy::cast_precision_loss)]
            let allowed = rss_limit + threads as f64 * window;
            t.derived(
                "7",
                "largest peak RSS with zstd (any run)".into(),
                mib(w),
                format!("≤ 64 MiB + {threads} threads × {} window", mib(window)),
                verdict(w <= allowed),
            );
        }
    } else if bench.text.is_none() {
        t.not_run(
            "7",
            "compression on text",
            "text dataset skipped (--text-size 0)",
        );
    } else {
        t.not_run(
            "7",
            "compression on text",
            "binary lacks compression / upload_while_exporting",
        );
    }

    let mut out = header(&bench.world.bin, command);
    let _ =
        writeln!(
        out,
        "Datasets: {small} random (incompressible){}{}; split_size {}; {} repetition(s), variants \
         alternated (order reversed on odd repetitions); medians. bwlimit {} ({}/s){}; \
         upload_concurrency {c}.\n",
        if bench.large.is_some() { format!(", {large} random") } else { String::new() },
        if bench.text.is_some() { format!(", {text} generated log text") } else { String::new() },
        opts.split,
        opts.reps,
        bench.bwlimit,
        human_bytes(bench.bw_rate as u64),
        if opts.bwlimit.is_some() { " as given" } else { ", calibrated from a plain export" },
    );
    let _ = writeln!(out, "| # | measurement | median | runs | target | result |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for r in &t.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.id, r.what, r.median, r.runs, r.target, r.result
        );
    }
    if let (Some(lo), Some(hi)) = (
        s.all("load1").iter().copied().reduce(f64::min),
        s.max("load1"),
    ) {
        let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
        let _ = writeln!(
            out,
            "\n1-minute load average before each run: {lo:.2} to {hi:.2}, on {cores} cores \
             (it includes the benchmark's own previous run)."
        );
    }
    if !s.notes.is_empty() {
        let _ = writeln!(out, "\nNotes:\n");
        for n in &s.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}
