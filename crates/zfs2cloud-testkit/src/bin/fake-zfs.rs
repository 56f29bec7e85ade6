#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]
//! `fake-zfs`: a stateful, recording, fault-injecting stand-in for the
//! OpenZFS 2.x `zfs` command.  State lives in `$FAKE_ZFS_STATE` (see
//! `zfs2cloud_testkit::fake`).
//!
//! Where it implements a command, it follows what OpenZFS 2.3.2 was
//! recorded doing (`crates/zfs2cloud-core/tests/fixtures/openzfs-2.3.2`,
//! compared by `tests/recorded.rs`): the exit status and the wording of
//! stderr, and `receive`'s rules (see [`cmd_recv`]).

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use zfs2cloud_testkit::fake::{
    apply_fault, eprint_message, for_each_stream_piece, format_ctime, incremental_size,
    load_zfs_state, name_guid, received_path, run_real, start_fake, unix_now, with_zfs_state,
    write_atomic, zfs_subcommand, DatasetState, MidStream, SnapshotState, StreamHeader,
    StreamStart, ZfsState, DEFAULT_STREAM_SIZE, HOLD_TIMESTAMP, SEND_PROGRESS_FILE,
    SEND_PROGRESS_STEP, ZFS_NOW_ENV, ZFS_REAL_ENV, ZFS_STATE_ENV, ZFS_STREAM_SIZE_ENV,
};

fn main() {
    let code = run();
    std::process::exit(code);
}

/// A failed command: what to print on stderr and the exit status.
#[derive(Debug)]
struct Fail {
    code: i32,
    msg: String,
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        fail(1, format!("fake-zfs: {e}"))
    }
}

fn fail(code: i32, msg: impl Into<String>) -> Fail {
    Fail {
        code,
        msg: msg.into(),
    }
}

fn no_such(name: &str) -> Fail {
    fail(1, format!("cannot open '{name}': dataset does not exist"))
}

/// Buffered output of a non-streaming command.
#[derive(Debug, Default)]
struct Out {
    stdout: String,
    stderr: String,
    code: i32,
}

impl Out {
    fn line(&mut self, s: impl AsRef<str>) {
        self.stdout.push_str(s.as_ref());
        self.stdout.push('\n');
    }

    fn error(&mut self, code: i32, s: impl AsRef<str>) {
        self.stderr.push_str(s.as_ref());
        self.stderr.push('\n');
        if self.code == 0 {
            self.code = code;
        }
    }
}

struct Ctx {
    dir: PathBuf,
    /// `die_after` fault in effect.
    die_after: Option<u64>,
}

fn run() -> i32 {
    let (dir, args) = match start_fake("zfs", ZFS_STATE_ENV) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let sub_index = args.iter().position(|a| !a.starts_with('-'));
    let sub = zfs_subcommand(&args).unwrap_or("").to_owned();
    if let Some(real) = std::env::var_os(ZFS_REAL_ENV).filter(|r| !r.is_empty()) {
        let streams = sub == "send";
        return run_real(&dir, &sub, &args, Path::new(&real), &|_| {
            if streams {
                (MidStream::Stdout, None)
            } else {
                (MidStream::None, None)
            }
        });
    }
    let die_after = match apply_fault(&dir, "zfs", &sub, &args, &["send", "recv", "receive"]) {
        Ok(die_after) => die_after,
        Err(code) => return code,
    };
    let ctx = Ctx { dir, die_after };
    let rest: &[String] = match sub_index {
        Some(i) => &args[i + 1..],
        None => &[],
    };

    let mut out = Out::default();
    let result = match sub.as_str() {
        "" => Err(fail(2, format!("missing command\n{}", usage_all()))),
        "list" => cmd_list(&ctx, rest, &mut out),
        "get" => cmd_get(&ctx, rest, &mut out),
        "snapshot" | "snap" => cmd_snapshot(&ctx, rest),
        "set" => cmd_set(&ctx, rest),
        "inherit" => cmd_inherit(&ctx, rest),
        "hold" => cmd_hold(&ctx, rest, true),
        "release" => cmd_hold(&ctx, rest, false),
        "holds" => cmd_holds(&ctx, rest, &mut out),
        "destroy" => cmd_destroy(&ctx, rest, &mut out),
        "create" => cmd_create(&ctx, rest),
        "clone" => cmd_clone(&ctx, rest),
        "rollback" => cmd_rollback(&ctx, rest),
        "mount" => cmd_mount(&ctx, rest),
        "umount" | "unmount" => cmd_umount(&ctx, rest),
        "send" => return cmd_send(&ctx, rest),
        "recv" | "receive" => return cmd_recv(&ctx, rest),
        "version" => {
            out.line("zfs-2.2.2-fake");
            out.line("zfs-kmod-2.2.2-fake");
            Ok(())
        }
        other => Err(fail(
            2,
            format!("unrecognized command '{other}'\n{}", usage_all()),
        )),
    };
    if let Err(f) = result {
        out.error(f.code, f.msg);
    }
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    let _ = io::stdout().flush();
    out.code
}

/// What OpenZFS prints after a `zfs snapshot` of a dataset that does not
/// exist.
const SNAPSHOT_USAGE: &str = "usage:\n\
     \tsnapshot [-r] [-o property=value] ... <filesystem|volume>@<snap> ...\n\
     \n\
     For the property list, run: zfs set|get\n\
     \n\
     For the delegated permission list, run: zfs allow|unallow\n\
     \n\
     For further help on a command or topic, run: zfs help [<topic>]";

fn usage_all() -> &'static str {
    "usage: zfs command args ...\nwhere 'command' is one of the following:\n\n\
     \tversion\n\tcreate [-p] [-o property=value] ... <filesystem>\n\
     \tdestroy [-fnpRrv] <filesystem|volume>\n\
     \tdestroy [-dnpRrv] <filesystem|volume>@<snap>[%<snap>][,...]\n\
     \tsnapshot [-r] [-o property=value] ... <filesystem|volume>@<snap> ...\n\
     \trollback [-rRf] <snapshot>\n\
     \tclone [-p] [-o property=value] ... <snapshot> <filesystem|volume>\n\
     \tlist [-Hp] [-r|-d max] [-o property[,...]] [-s property]...\n\
     \t    [-S property]... [-t type[,...]] [filesystem|volume|snapshot] ...\n\
     \tset <property=value> ... <filesystem|volume|snapshot> ...\n\
     \tget [-rHp] [-d max] [-o \"all\" | field[,...]]\n\
     \t    [-t type[,...]] [-s source[,...]]\n\
     \t    <\"all\" | property[,...]> [filesystem|volume|snapshot|bookmark] ...\n\
     \tinherit [-rS] <property> <filesystem|volume|snapshot> ...\n\
     \tsend [-DLPbcehnpsvw] [-i|-I snapshot] <snapshot>\n\
     \treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ...\n\
     \t    <filesystem|volume|snapshot>\n\
     \thold [-r] <tag> <snapshot> ...\n\
     \tholds [-rHp] <snapshot> ...\n\
     \trelease [-r] <tag> <snapshot> ...\n\
     \tmount [-flvO] [-o opts] <-a|-R filesystem|filesystem>\n\
     \tunmount [-fu] <-a | filesystem|mountpoint>"
}

// ---------------------------------------------------------------------------
// Option parsing (getopt with GNU permutation).

#[derive(Debug, Default)]
struct Opts {
    flags: Vec<(char, String)>,
    pos: Vec<String>,
}

impl Opts {
    fn has(&self, c: char) -> bool {
        self.flags.iter().any(|(f, _)| *f == c)
    }

    fn val(&self, c: char) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(f, _)| *f == c)
            .map(|(_, v)| v.as_str())
    }

    fn vals(&self, c: char) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(f, _)| *f == c)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn getopt(args: &[String], spec: &str) -> Result<Opts, Fail> {
    let mut opts = Opts::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            opts.pos.extend(it.by_ref().cloned());
            break;
        }
        if arg.len() < 2 || !arg.starts_with('-') {
            opts.pos.push(arg.clone());
            continue;
        }
        let chars: Vec<char> = arg.chars().skip(1).collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let Some(at) = spec.find(c).filter(|_| c != ':') else {
                return Err(fail(2, format!("invalid option '{c}'\n{}", usage_all())));
            };
            if spec[at + c.len_utf8()..].starts_with(':') {
                let rest: String = chars[i + 1..].iter().collect();
                let value = if rest.is_empty() {
                    it.next().cloned().ok_or_else(|| {
                        fail(
                            2,
                            format!("missing argument for '{c}' option\n{}", usage_all()),
                        )
                    })?
                } else {
                    rest
                };
                opts.flags.push((c, value));
                break;
            }
            opts.flags.push((c, String::new()));
            i += 1;
        }
    }
    Ok(opts)
}

fn parse_assignment(s: &str) -> Result<(String, String), Fail> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(fail(
            2,
            format!("missing '=' for property=value argument '{s}'"),
        )),
    }
}

// ---------------------------------------------------------------------------
// Objects and properties.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Obj {
    Ds(String),
    Snap(String),
}

impl Obj {
    fn name(&self) -> &str {
        match self {
            Obj::Ds(n) | Obj::Snap(n) => n,
        }
    }
}

fn parent_of(name: &str) -> Option<&str> {
    name.rsplit_once('/').map(|(p, _)| p)
}

fn depth(name: &str) -> usize {
    name.matches('/').count()
}

fn is_descendant(name: &str, of: &str) -> bool {
    name == of
        || name
            .strip_prefix(of)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn descendants(state: &ZfsState, of: &str) -> Vec<String> {
    state
        .datasets
        .keys()
        .filter(|n| is_descendant(n, of))
        .cloned()
        .collect()
}

const READONLY_PROPS: &[&str] = &[
    "name",
    "type",
    "creation",
    "createtxg",
    "used",
    "referenced",
    "refer",
    "available",
    "avail",
    "written",
    "guid",
    "userrefs",
    "logicalreferenced",
    "lrefer",
    "logicalused",
    "lused",
    "compressratio",
    "ratio",
    "refcompressratio",
    "mounted",
    "origin",
    "clones",
    "defer_destroy",
    "receive_resume_token",
    "encryptionroot",
    "keystatus",
    "usedbysnapshots",
    "usedbydataset",
    "usedbychildren",
    "usedbyrefreservation",
    "objsetid",
];

/// Native properties that are settable, with their defaults.
const DEFAULT_PROPS: &[(&str, &str)] = &[
    ("compression", "off"),
    ("encryption", "off"),
    ("keyformat", "none"),
    ("keylocation", "none"),
    ("recordsize", "131072"),
    ("readonly", "off"),
    ("canmount", "on"),
    ("atime", "on"),
    ("relatime", "on"),
    ("checksum", "on"),
    ("dedup", "off"),
    ("sync", "standard"),
    ("snapdir", "hidden"),
    ("quota", "0"),
    ("refquota", "0"),
    ("reservation", "0"),
    ("refreservation", "0"),
    ("copies", "1"),
    ("xattr", "sa"),
    ("acltype", "off"),
    ("primarycache", "all"),
    ("secondarycache", "all"),
    ("volsize", "-"),
    ("mountpoint", "-"),
    ("sharenfs", "off"),
    ("sharesmb", "off"),
    ("devices", "on"),
    ("exec", "on"),
    ("setuid", "on"),
    ("snapshot_limit", "none"),
    ("filesystem_limit", "none"),
];

fn is_user_prop(p: &str) -> bool {
    p.contains(':')
}

fn valid_prop(p: &str) -> bool {
    is_user_prop(p) || READONLY_PROPS.contains(&p) || DEFAULT_PROPS.iter().any(|(k, _)| *k == p)
}

/// Looks `prop` up on dataset `ds` and its ancestors: (value, source).
fn lookup_inherited(state: &ZfsState, ds: &str, prop: &str) -> Option<(String, String)> {
    let mut cur = Some(ds);
    while let Some(name) = cur {
        if let Some(v) = state
            .datasets
            .get(name)
            .and_then(|d| d.properties.get(prop))
        {
            let source = if name == ds {
                "local".to_owned()
            } else {
                format!("inherited from {name}")
            };
            return Some((v.clone(), source));
        }
        cur = parent_of(name);
    }
    None
}

/// Value and source of `prop` of `obj`; `None` if `prop` is not a property.
fn prop_value(state: &ZfsState, obj: &Obj, prop: &str, parsable: bool) -> Option<(String, String)> {
    let dash = || ("-".to_owned(), "-".to_owned());
    let computed = |v: String| (v, "-".to_owned());
    let prop = match prop {
        "refer" => "referenced",
        "avail" => "available",
        "lrefer" => "logicalreferenced",
        "lused" => "logicalused",
        "ratio" => "compressratio",
        other => other,
    };
    match obj {
        Obj::Snap(name) => {
            let s = state.snapshots.get(name)?;
            let ds = name.split_once('@').map_or("", |(d, _)| d);
            Some(match prop {
                "name" => computed(name.clone()),
                "type" => computed("snapshot".to_owned()),
                "creation" if parsable => computed(s.creation.to_string()),
                "creation" => computed(format_ctime(s.creation)),
                "createtxg" => computed(s.createtxg.to_string()),
                "used" => computed((s.stream_size / 8).to_string()),
                "referenced" | "logicalreferenced" => computed(s.stream_size.to_string()),
                "written" => computed(incremental_size(s.stream_size).to_string()),
                "userrefs" => computed(s.holds.len().to_string()),
                "guid" => computed(state.guid(name).to_string()),
                "defer_destroy" => computed("off".to_owned()),
                "compressratio" | "refcompressratio" => computed("1.00x".to_owned()),
                "mountpoint" | "available" | "mounted" | "volsize" => dash(),
                p => {
                    if let Some(v) = s.properties.get(p) {
                        (v.clone(), "local".to_owned())
                    } else if let Some(found) = lookup_inherited(state, ds, p) {
                        found
                    } else if is_user_prop(p) {
                        dash()
                    } else if let Some((_, d)) = DEFAULT_PROPS.iter().find(|(k, _)| *k == p) {
                        ((*d).to_owned(), "default".to_owned())
                    } else if READONLY_PROPS.contains(&p) {
                        dash()
                    } else {
                        return None;
                    }
                }
            })
        }
        Obj::Ds(name) => {
            let d = state.datasets.get(name)?;
            let snap_used: u64 = state
                .snapshots
                .iter()
                .filter(|(n, _)| n.split_once('@').map(|(x, _)| x) == Some(name.as_str()))
                .map(|(_, s)| s.stream_size / 8)
                .sum();
            let referenced: u64 = 98_304;
            Some(match prop {
                "name" => computed(name.clone()),
                "type" => computed(
                    if d.is_volume() {
                        "volume"
                    } else {
                        "filesystem"
                    }
                    .to_owned(),
                ),
                // What applies to file systems only.
                "mountpoint" | "canmount" | "mounted" if d.is_volume() => dash(),
                "creation" if parsable => computed("1704067200".to_owned()),
                "creation" => computed(format_ctime(1_704_067_200)),
                "createtxg" => computed("1".to_owned()),
                "used" | "logicalused" => computed((referenced + snap_used).to_string()),
                "usedbysnapshots" => computed(snap_used.to_string()),
                "referenced" | "logicalreferenced" | "usedbydataset" => {
                    computed(referenced.to_string())
                }
                "available" => computed("10737418240".to_owned()),
                "written" => computed("0".to_owned()),
                "guid" => computed(name_guid(name).to_string()),
                "mounted" => computed(if d.mounted { "yes" } else { "no" }.to_owned()),
                "origin" => d.origin.clone().map_or_else(dash, computed),
                "compressratio" | "refcompressratio" => computed("1.00x".to_owned()),
                "mountpoint" => (
                    d.mountpoint.clone(),
                    if d.mountpoint == format!("/{name}") {
                        "default".to_owned()
                    } else {
                        "local".to_owned()
                    },
                ),
                "userrefs" | "defer_destroy" | "clones" => dash(),
                p => {
                    if let Some(found) = lookup_inherited(state, name, p) {
                        found
                    } else if is_user_prop(p) {
                        dash()
                    } else if let Some((_, v)) = DEFAULT_PROPS.iter().find(|(k, _)| *k == p) {
                        ((*v).to_owned(), "default".to_owned())
                    } else if READONLY_PROPS.contains(&p) {
                        dash()
                    } else {
                        return None;
                    }
                }
            })
        }
    }
}

fn check_props(props: &[String]) -> Result<(), Fail> {
    for p in props {
        if !valid_prop(p) {
            return Err(fail(
                2,
                format!("bad property list: invalid property '{p}'\n{}", usage_all()),
            ));
        }
    }
    Ok(())
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Prints rows tab-separated (`-H`) or aligned below a header.
fn emit_table(out: &mut Out, header: &[String], rows: &[Vec<String>], scripted: bool) {
    if scripted {
        for row in rows {
            out.line(row.join("\t"));
        }
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let fmt_row = |cells: &[String]| {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        line
    };
    let upper: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    out.line(fmt_row(&upper));
    for row in rows {
        out.line(fmt_row(row));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Types {
    fs: bool,
    vol: bool,
    snap: bool,
}

impl Types {
    /// File systems and volumes.
    const DATASETS: Self = Self {
        fs: true,
        vol: true,
        snap: false,
    };
    const ALL: Self = Self {
        fs: true,
        vol: true,
        snap: true,
    };

    /// Whether dataset `name` is of a type asked for.
    fn wants(self, state: &ZfsState, name: &str) -> bool {
        match state.datasets.get(name) {
            Some(d) if d.is_volume() => self.vol,
            Some(_) => self.fs,
            None => false,
        }
    }
}

fn parse_types(spec: Option<&str>, default: Types) -> Result<Types, Fail> {
    let Some(spec) = spec else {
        return Ok(default);
    };
    let mut t = Types {
        fs: false,
        vol: false,
        snap: false,
    };
    for ty in spec.split(',') {
        match ty {
            "filesystem" | "fs" => t.fs = true,
            "volume" | "vol" => t.vol = true,
            "snapshot" | "snap" => t.snap = true,
            "bookmark" => {}
            "all" => t = Types::ALL,
            other => return Err(fail(2, format!("invalid type '{other}'\n{}", usage_all()))),
        }
    }
    Ok(t)
}

/// Objects named by `targets` (all datasets if empty), expanded by
/// recursion (`limit`: `None` = not recursive, `Some(None)` = unlimited).
fn collect_objects(
    state: &ZfsState,
    targets: &[String],
    types: Types,
    limit: Option<Option<usize>>,
    out: &mut Out,
) -> Vec<Obj> {
    let mut objs = Vec::new();
    let push_tree = |root: &str, limit: Option<usize>, objs: &mut Vec<Obj>| {
        let base = depth(root);
        for ds in descendants(state, root) {
            let rel = depth(&ds) - base;
            if limit.is_some_and(|l| rel > l) {
                continue;
            }
            if types.wants(state, &ds) {
                objs.push(Obj::Ds(ds.clone()));
            }
            if types.snap && limit.is_none_or(|l| rel < l) {
                objs.extend(state.snapshots_of(&ds).into_iter().map(Obj::Snap));
            }
        }
    };
    if targets.is_empty() {
        let roots: Vec<&String> = state
            .datasets
            .keys()
            .filter(|n| parent_of(n).is_none_or(|p| !state.datasets.contains_key(p)))
            .collect();
        for root in roots {
            push_tree(root, limit.flatten(), &mut objs);
        }
        return objs;
    }
    for target in targets {
        if target.contains('@') {
            if state.snapshots.contains_key(target) {
                objs.push(Obj::Snap(target.clone()));
            } else {
                out.error(1, no_such(target).msg);
            }
        } else if !state.datasets.contains_key(target) {
            out.error(1, no_such(target).msg);
        } else {
            match limit {
                Some(l) => push_tree(target, l, &mut objs),
                None => {
                    if types.wants(state, target) {
                        objs.push(Obj::Ds(target.clone()));
                    }
                }
            }
        }
    }
    objs
}

fn recursion_limit(opts: &Opts) -> Result<Option<Option<usize>>, Fail> {
    if let Some(d) = opts.val('d') {
        let n = d
            .parse::<usize>()
            .map_err(|_| fail(2, format!("invalid depth '{d}'\n{}", usage_all())))?;
        return Ok(Some(Some(n)));
    }
    Ok(if opts.has('r') { Some(None) } else { None })
}

// ---------------------------------------------------------------------------
// Commands.

fn cmd_list(ctx: &Ctx, args: &[String], out: &mut Out) -> Result<(), Fail> {
    let opts = getopt(args, "Hprd:o:s:S:t:")?;
    let parsable = opts.has('p');
    let columns = split_list(
        opts.val('o')
            .unwrap_or("name,used,available,referenced,mountpoint"),
    );
    check_props(&columns)?;
    let sort_keys: Vec<(String, bool)> = opts
        .flags
        .iter()
        .filter(|(f, _)| *f == 's' || *f == 'S')
        .map(|(f, v)| (v.clone(), *f == 'S'))
        .collect();
    check_props(&sort_keys.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>())?;
    let types = parse_types(opts.val('t'), Types::DATASETS)?;
    let mut limit = recursion_limit(&opts)?;
    if limit.is_none() && !opts.pos.is_empty() && types.snap && !types.fs && !types.vol {
        limit = Some(Some(1));
    }
    let state = load_zfs_state(&ctx.dir)?;
    let mut objs = collect_objects(&state, &opts.pos, types, limit, out);
    if !sort_keys.is_empty() {
        let key = |o: &Obj, k: &str| prop_value(&state, o, k, true).map(|(v, _)| v);
        objs.sort_by(|a, b| {
            for (k, desc) in &sort_keys {
                let (va, vb) = (key(a, k), key(b, k));
                let ord = match (
                    va.as_deref().and_then(|v| v.parse::<u64>().ok()),
                    vb.as_deref().and_then(|v| v.parse::<u64>().ok()),
                ) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    _ => va.cmp(&vb),
                };
                let ord = if *desc { ord.reverse() } else { ord };
                if ord.is_ne() {
                    return ord;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    let rows: Vec<Vec<String>> = objs
        .iter()
        .map(|o| {
            columns
                .iter()
                .map(|c| prop_value(&state, o, c, parsable).map_or_else(|| "-".to_owned(), |v| v.0))
                .collect()
        })
        .collect();
    if rows.is_empty() && out.code == 0 {
        if opts.pos.is_empty() {
            out.stderr.push_str("no datasets available\n");
        }
        return Ok(());
    }
    emit_table(out, &columns, &rows, opts.has('H'));
    Ok(())
}

fn cmd_get(ctx: &Ctx, args: &[String], out: &mut Out) -> Result<(), Fail> {
    let opts = getopt(args, "Hprd:o:s:t:")?;
    let parsable = opts.has('p');
    let fields = split_list(opts.val('o').unwrap_or("name,property,value,source"));
    for f in &fields {
        if !matches!(
            f.as_str(),
            "name" | "property" | "value" | "source" | "received"
        ) {
            return Err(fail(2, format!("invalid field '{f}'\n{}", usage_all())));
        }
    }
    let Some((props_arg, targets)) = opts.pos.split_first() else {
        return Err(fail(
            2,
            format!("missing property argument\n{}", usage_all()),
        ));
    };
    let all = props_arg == "all";
    let props = split_list(props_arg);
    if !all {
        check_props(&props)?;
    }
    let types = parse_types(opts.val('t'), Types::ALL)?;
    let state = load_zfs_state(&ctx.dir)?;
    let limit = recursion_limit(&opts)?;
    let mut objs = collect_objects(&state, targets, types, limit, out);
    if targets.is_empty() && !types.snap {
        objs.retain(|o| matches!(o, Obj::Ds(_)));
    }
    let mut rows = Vec::new();
    for obj in &objs {
        let names: Vec<String> = if all {
            let mut names: Vec<String> = [
                "type",
                "creation",
                "used",
                "available",
                "referenced",
                "compressratio",
                "mountpoint",
                "guid",
                "createtxg",
                "userrefs",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            let mut user: BTreeSet<String> = BTreeSet::new();
            let (own, ds) = match obj {
                Obj::Snap(n) => (
                    state.snapshots.get(n).map(|s| s.properties.clone()),
                    n.split_once('@').map_or("", |(d, _)| d).to_owned(),
                ),
                Obj::Ds(n) => (None, n.clone()),
            };
            user.extend(own.into_iter().flat_map(|p| p.into_keys()));
            let mut cur = Some(ds.as_str());
            while let Some(d) = cur {
                if let Some(dd) = state.datasets.get(d) {
                    user.extend(dd.properties.keys().cloned());
                }
                cur = parent_of(d);
            }
            names.extend(user);
            names
        } else {
            props.clone()
        };
        for p in names {
            let Some((value, source)) = prop_value(&state, obj, &p, parsable) else {
                continue;
            };
            let row: Vec<String> = fields
                .iter()
                .map(|f| match f.as_str() {
                    "name" => obj.name().to_owned(),
                    "property" => p.clone(),
                    "value" => value.clone(),
                    "source" => source.clone(),
                    _ => "-".to_owned(),
                })
                .collect();
            rows.push(row);
        }
    }
    emit_table(out, &fields, &rows, opts.has('H'));
    Ok(())
}

fn now_and_size() -> (u64, u64) {
    let env_u64 = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    (
        env_u64(ZFS_NOW_ENV).unwrap_or_else(unix_now),
        env_u64(ZFS_STREAM_SIZE_ENV).unwrap_or(DEFAULT_STREAM_SIZE),
    )
}

fn cmd_snapshot(ctx: &Ctx, args: &[String]) -> Result<(), Fail> {
    let opts = getopt(args, "ro:")?;
    let props = opts
        .vals('o')
        .into_iter()
        .map(parse_assignment)
        .collect::<Result<Vec<_>, _>>()?;
    if opts.pos.is_empty() {
        return Err(fail(
            2,
            format!("missing snapshot argument\n{}", usage_all()),
        ));
    }
    let (now, size) = now_and_size();
    with_zfs_state(&ctx.dir, |state| {
        let mut names = Vec::new();
        for full in &opts.pos {
            let Some((ds, snap)) = full.split_once('@') else {
                return Err(fail(
                    1,
                    format!(
                        "cannot create snapshot '{full}': missing '@' delimiter in snapshot name"
                    ),
                ));
            };
            if ds.is_empty() || snap.is_empty() || snap.contains('@') || snap.contains('/') {
                return Err(fail(
                    1,
                    format!("cannot create snapshot '{full}': invalid character in name"),
                ));
            }
            if !state.datasets.contains_key(ds) {
                // OpenZFS adds the command's usage and exits 2 here.
                return Err(fail(2, format!("{}\n{SNAPSHOT_USAGE}", no_such(ds).msg)));
            }
            if opts.has('r') {
                names.extend(
                    descendants(state, ds)
                        .into_iter()
                        .map(|d| format!("{d}@{snap}")),
                );
            } else {
                names.push(full.clone());
            }
        }
        if let Some(dup) = names.iter().find(|n| state.snapshots.contains_key(*n)) {
            return Err(fail(
                1,
                format!("cannot create snapshot '{dup}': dataset already exists"),
            ));
        }
        let txg = state.bump_txg();
        for name in names {
            if let Some(d) = name
                .split_once('@')
                .and_then(|(ds, _)| state.datasets.get_mut(ds))
            {
                d.modified = false;
            }
            state.snapshots.insert(
                name,
                SnapshotState {
                    properties: props.iter().cloned().collect(),
                    holds: Vec::new(),
                    creation: now,
                    stream_size: size,
                    createtxg: txg,
                    guid: None,
                },
            );
        }
        Ok(())
    })
}

fn cmd_set(ctx: &Ctx, args: &[String]) -> Result<(), Fail> {
    let opts = getopt(args, "u")?;
    let split = opts
        .pos
        .iter()
        .position(|a| !a.contains('='))
        .unwrap_or(opts.pos.len());
    let (assignments, targets) = opts.pos.split_at(split);
    if assignments.is_empty() {
        return Err(fail(
            2,
            format!("missing property=value argument(s)\n{}", usage_all()),
        ));
    }
    if targets.is_empty() {
        return Err(fail(2, format!("missing dataset name(s)\n{}", usage_all())));
    }
    let assignments = assignments
        .iter()
        .map(|a| parse_assignment(a))
        .collect::<Result<Vec<_>, _>>()?;
    with_zfs_state(&ctx.dir, |state| {
        for target in targets {
            for (k, v) in &assignments {
                if READONLY_PROPS.contains(&k.as_str()) {
                    return Err(fail(
                        1,
                        format!("cannot set property for '{target}': '{k}' is readonly"),
                    ));
                }
                if !valid_prop(k) {
                    return Err(fail(
                        1,
                        format!("cannot set property for '{target}': invalid property '{k}'"),
                    ));
                }
                if let Some(s) = state.snapshots.get_mut(target) {
                    if !is_user_prop(k) {
                        return Err(fail(
                            1,
                            format!("cannot set property for '{target}': this property can not be modified for snapshots"),
                        ));
                    }
                    s.properties.insert(k.clone(), v.clone());
                } else if let Some(d) = state.datasets.get_mut(target) {
                    if k == "mountpoint" {
                        d.mountpoint.clone_from(v);
                    } else {
                        d.properties.insert(k.clone(), v.clone());
                    }
                } else {
                    return Err(no_such(target));
                }
            }
        }
        Ok(())
    })
}

fn cmd_inherit(ctx: &Ctx, args: &[String]) -> Result<(), Fail> {
    let opts = getopt(args, "rS")?;
    let Some((prop, targets)) = opts.pos.split_first() else {
        return Err(fail(
            2,
            format!("missing property argument\n{}", usage_all()),
        ));
    };
    if targets.is_empty() {
        return Err(fail(
            2,
            format!("missing dataset argument\n{}", usage_all()),
        ));
    }
    if READONLY_PROPS.contains(&prop.as_str()) || !valid_prop(prop) {
        return Err(fail(1, format!("'{prop}' property cannot be inherited")));
    }
    with_zfs_state(&ctx.dir, |state| {
        for target in targets {
            if let Some(s) = state.snapshots.get_mut(target) {
                s.properties.remove(prop);
                continue;
            }
            if !state.datasets.contains_key(target) {
                return Err(no_such(target));
            }
            let affected = if opts.has('r') {
                descendants(state, target)
            } else {
                vec![target.clone()]
            };
            for ds in &affected {
                let inherited = state.inherited_mountpoint(ds);
                if let Some(d) = state.datasets.get_mut(ds) {
                    if prop == "mountpoint" {
                        d.mountpoint = inherited;
                    }
                    d.properties.remove(prop);
                }
                if opts.has('r') {
                    for (name, s) in state.snapshots.iter_mut() {
                        if name.split_once('@').map(|(x, _)| x) == Some(ds.as_str()) {
                            s.properties.remove(prop);
                        }
                    }
                }
            }
        }
        Ok(())
    })
}

/// Snapshot names a hold/release/holds target expands to with `-r`.
fn expand_snapshot(state: &ZfsState, target: &str, recursive: bool) -> Result<Vec<String>, Fail> {
    let Some((ds, snap)) = target.split_once('@') else {
        return Err(fail(1, format!("'{target}' is not a snapshot")));
    };
    if !state.snapshots.contains_key(target) {
        return Err(no_such(target));
    }
    if !recursive {
        return Ok(vec![target.to_owned()]);
    }
    Ok(descendants(state, ds)
        .into_iter()
        .map(|d| format!("{d}@{snap}"))
        .filter(|n| state.snapshots.contains_key(n))
        .collect())
}

fn cmd_hold(ctx: &Ctx, args: &[String], hold: bool) -> Result<(), Fail> {
    let opts = getopt(args, "r")?;
    let Some((tag, targets)) = opts.pos.split_first() else {
        return Err(fail(2, format!("missing tag argument\n{}", usage_all())));
    };
    if targets.is_empty() {
        return Err(fail(
            2,
            format!("missing snapshot argument\n{}", usage_all()),
        ));
    }
    let missing = |t: &String| {
        let what = if hold {
            "hold snapshot"
        } else {
            "release hold from snapshot"
        };
        fail(1, format!("cannot {what} '{t}': dataset does not exist"))
    };
    with_zfs_state(&ctx.dir, |state| {
        let mut names = Vec::new();
        for t in targets {
            if t.contains('@') && !state.snapshots.contains_key(t) {
                return Err(missing(t));
            }
            names.extend(expand_snapshot(state, t, opts.has('r'))?);
        }
        for name in &names {
            let has = state.snapshots[name].holds.iter().any(|h| h == tag);
            if hold && has {
                return Err(fail(
                    1,
                    format!("cannot hold snapshot '{name}': tag already exists on this dataset"),
                ));
            }
            if !hold && !has {
                return Err(fail(
                    1,
                    format!(
                        "cannot release hold from snapshot '{name}': no such tag on this dataset"
                    ),
                ));
            }
        }
        for name in &names {
            if let Some(s) = state.snapshots.get_mut(name) {
                if hold {
                    s.holds.push(tag.clone());
                } else {
                    s.holds.retain(|h| h != tag);
                }
            }
        }
        Ok(())
    })
}

fn cmd_holds(ctx: &Ctx, args: &[String], out: &mut Out) -> Result<(), Fail> {
    let opts = getopt(args, "rHp")?;
    if opts.pos.is_empty() {
        return Err(fail(
            2,
            format!("missing snapshot argument\n{}", usage_all()),
        ));
    }
    let state = load_zfs_state(&ctx.dir)?;
    let mut rows = Vec::new();
    for t in &opts.pos {
        match expand_snapshot(&state, t, opts.has('r')) {
            Ok(names) => {
                for name in names {
                    for tag in &state.snapshots[&name].holds {
                        let ts = if opts.has('p') {
                            "1704067200".to_owned()
                        } else {
                            HOLD_TIMESTAMP.to_owned()
                        };
                        rows.push(vec![name.clone(), tag.clone(), ts]);
                    }
                }
            }
            Err(f) => out.error(f.code, f.msg),
        }
    }
    let header = ["name", "tag", "timestamp"].map(str::to_owned);
    if !rows.is_empty() || opts.has('H') {
        emit_table(out, &header, &rows, opts.has('H'));
    }
    Ok(())
}

fn cmd_destroy(ctx: &Ctx, args: &[String], out: &mut Out) -> Result<(), Fail> {
    let opts = getopt(args, "fnpRrv")?;
    let [target] = opts.pos.as_slice() else {
        return Err(fail(
            2,
            format!(
                "{} argument\n{}",
                if opts.pos.is_empty() {
                    "missing dataset"
                } else {
                    "too many"
                },
                usage_all()
            ),
        ));
    };
    let recursive = opts.has('r') || opts.has('R');
    let dry = opts.has('n');
    let report = |out: &mut Out, name: &str| {
        if opts.has('p') {
            out.line(format!("destroy\t{name}"));
        } else if opts.has('v') {
            out.line(format!(
                "{} destroy {name}",
                if dry { "would" } else { "will" }
            ));
        }
    };
    with_zfs_state(&ctx.dir, |state| {
        let doomed_snaps: Vec<String>;
        let mut doomed_ds: Vec<String> = Vec::new();
        if let Some((ds, spec)) = target.split_once('@') {
            if !state.datasets.contains_key(ds) {
                return Err(no_such(ds));
            }
            let dss = if recursive {
                descendants(state, ds)
            } else {
                vec![ds.to_owned()]
            };
            let mut names = Vec::new();
            for d in &dss {
                let ordered = state.snapshots_of(d);
                let short = |n: &String| {
                    n.split_once('@')
                        .map_or(String::new(), |(_, s)| s.to_owned())
                };
                for part in spec.split(',') {
                    if let Some((from, to)) = part.split_once('%') {
                        let start = if from.is_empty() {
                            Some(0)
                        } else {
                            ordered.iter().position(|n| short(n) == from)
                        };
                        let end = if to.is_empty() {
                            ordered.len().checked_sub(1)
                        } else {
                            ordered.iter().position(|n| short(n) == to)
                        };
                        if let (Some(s), Some(e)) = (start, end) {
                            if s <= e {
                                names.extend(ordered[s..=e].iter().cloned());
                            }
                        }
                    } else {
                        let full = format!("{d}@{part}");
                        if state.snapshots.contains_key(&full) {
                            names.push(full);
                        }
                    }
                }
            }
            names.dedup();
            if names.is_empty() {
                return Err(fail(
                    1,
                    "could not find any snapshots to destroy; check snapshot names.",
                ));
            }
            doomed_snaps = names;
        } else {
            if !state.datasets.contains_key(target.as_str()) {
                return Err(no_such(target));
            }
            let tree = descendants(state, target);
            let snaps: Vec<String> = tree.iter().flat_map(|d| state.snapshots_of(d)).collect();
            if !recursive && (tree.len() > 1 || !snaps.is_empty()) {
                let children: Vec<&String> = tree[1..].iter().chain(snaps.iter()).collect();
                let list: Vec<String> = children.iter().map(|c| (*c).clone()).collect();
                return Err(fail(
                    1,
                    format!(
                        "cannot destroy '{target}': filesystem has children\nuse '-r' to destroy the following datasets:\n{}",
                        list.join("\n")
                    ),
                ));
            }
            let clones: Vec<String> = snaps
                .iter()
                .flat_map(|n| state.clones_of(n))
                .filter(|c| !tree.contains(c))
                .collect();
            if !clones.is_empty() {
                return Err(fail(
                    1,
                    format!(
                        "cannot destroy '{target}': filesystem has dependent clones\nuse '-R' to destroy the following datasets:\n{}",
                        clones.join("\n")
                    ),
                ));
            }
            doomed_snaps = snaps;
            doomed_ds = tree;
        }
        if target.contains('@') {
            for n in &doomed_snaps {
                let clones = state.clones_of(n);
                if !clones.is_empty() {
                    return Err(fail(
                        1,
                        format!(
                            "cannot destroy '{n}': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\n{}",
                            clones.join("\n")
                        ),
                    ));
                }
            }
        }
        let busy: Vec<&String> = doomed_snaps
            .iter()
            .filter(|n| !state.snapshots[*n].holds.is_empty())
            .collect();
        if !busy.is_empty() {
            let msg: Vec<String> = busy
                .iter()
                .map(|n| {
                    format!(
                        "cannot destroy snapshot {n}: it's being held. Run 'zfs holds -r {n}' to see holders."
                    )
                })
                .collect();
            return Err(fail(1, msg.join("\n")));
        }
        for n in doomed_snaps.iter().chain(doomed_ds.iter().rev()) {
            report(out, n);
        }
        if !dry {
            for n in &doomed_snaps {
                state.snapshots.remove(n);
            }
            for d in &doomed_ds {
                state.datasets.remove(d);
            }
        }
        Ok(())
    })
}

fn cmd_create(ctx: &Ctx, args: &[String]) -> Result<(), Fail> {
    let opts = getopt(args, "pPnuvo:b:sV:")?;
    let [name] = opts.pos.as_slice() else {
        return Err(fail(
            2,
            format!("missing filesystem argument\n{}", usage_all()),
        ));
    };
    let mut props = opts
        .vals('o')
        .into_iter()
        .map(parse_assignment)
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(v) = opts.val('V') {
        props.push(("volsize".to_owned(), v.to_owned()));
    }
    if name.contains('@') {
        return Err(fail(
            1,
            format!("cannot create '{name}': snapshot delimiter '@' is not expected here"),
        ));
    }
    let Some(parent) = parent_of(name) else {
        return Err(fail(
            1,
            format!("cannot create '{name}': missing dataset name"),
        ));
    };
    with_zfs_state(&ctx.dir, |state| {
        if state.datasets.contains_key(name.as_str()) {
            return Err(fail(
                1,
                format!("cannot create '{name}': dataset already exists"),
            ));
        }
        let pool = name.split('/').next().unwrap_or_default();
        if !state.datasets.contains_key(pool) {
            return Err(fail(
                1,
                format!("cannot create '{name}': no such pool '{pool}'"),
            ));
        }
        let mut missing = Vec::new();
        let mut cur = Some(parent);
        while let Some(p) = cur {
            if state.datasets.contains_key(p) {
                break;
            }
            missing.push(p.to_owned());
            cur = parent_of(p);
        }
        if !missing.is_empty() && !opts.has('p') {
            return Err(fail(
                1,
                format!("cannot create '{name}': parent does not exist"),
            ));
        }
        if opts.has('n') {
            return Ok(());
        }
        state.ensure_dataset(name);
        if let Some(d) = state.datasets.get_mut(name.as_str()) {
            apply_create_props(d, props);
        }
        Ok(())
    })
}

/// `zfs clone [-p] [-o property=value]... <snapshot> <dataset>`: a new
/// dataset whose origin is the snapshot, with the properties given.
fn cmd_clone(ctx: &Ctx, args: &[String]) -> Result<(), Fail> {
    let opts = getopt(args, "po:")?;
    let [snapshot, name] = opts.pos.as_slice() else {
        return Err(fail(
            2,
            format!("missing source or target dataset\n{}", usage_all()),
        ));
    };
    let props = opts
        .vals('o')
        .into_iter()
        .map(parse_assignment)
        .collect::<Result<Vec<_>, _>>()?;
    with_zfs_state(&ctx.dir, |state| {
        if !state.snapshots.contains_key(snapshot) {
            return Err(no_such(snapshot));
        }
        if state.datasets.contains_key(name) {
            return Err(fail(
                1,
                format!("cannot create '{name}': dataset already exists"),
            ));
        }
        if parent_of(name).is_some_and(|p| !state.datasets.contains_key(p)) && !opts.has('p') {
            return Err(fail(
                1,
                format!("cannot create '{name}': parent does not exist"),
            ));
        }
        state.ensure_dataset(name);
        if let Some(d) = state.datasets.get_mut(name.as_str()) {
            d.origin = Some(snapshot.clone());
            apply_create_props(d, props);
        }
        Ok(())
    })
}

/// `zfs rollback [-rRf] <snapshot>`: with `-r`, destroys the newer
/// snapshots; without, refuses if there are any.
fn cmd_rollback(ctx: &Ctx, args: &[String]) -> Result<(), Fail> {
    let opts = getopt(args, "rRf")?;
    let [snapshot] = opts.pos.as_slice() else {
        return Err(fail(
            2,
            format!("wrong number of arguments\n{}", usage_all()),
        ));
    };
    with_zfs_state(&ctx.dir, |state| {
        let Some((ds, _)) = snapshot.split_once('@') else {
            return Err(fail(
                1,
                format!(
                    "cannot open '{snapshot}': operation not applicable to datasets of this type"
                ),
            ));
        };
        if !state.snapshots.contains_key(snapshot) {
            return Err(no_such(snapshot));
        }
        let all = state.snapshots_of(ds);
        let newer = all
            .iter()
            .skip_while(|s| *s != snapshot)
            .skip(1)
            .cloned()
            .collect::<Vec<_>>();
        if !newer.is_empty() && !opts.has('r') && !opts.has('R') {
            return Err(fail(
                1,
                format!(
                    "cannot rollback to '{snapshot}': more recent snapshots or bookmarks exist\n\
                     use '-r' to force deletion of the following snapshots and bookmarks:\n{}",
                    newer.join("\n")
                ),
            ));
        }
        destroy_after(state, snapshot);
        Ok(())
    })
}

/// `zfs mount <filesystem>`, with OpenZFS's checks in its order: a volume,
/// a legacy or no mountpoint, canmount=off, already mounted.
fn cmd_mount(ctx: &Ctx, args: &[String]) -> Result<(), Fail> {
    let opts = getopt(args, "flvOo:")?;
    let [name] = opts.pos.as_slice() else {
        return Err(fail(
            2,
            format!("missing filesystem argument\n{}", usage_all()),
        ));
    };
    with_zfs_state(&ctx.dir, |state| {
        let Some(d) = state.datasets.get_mut(name.as_str()) else {
            return Err(no_such(name));
        };
        let cannot = |why: &str| Err(fail(1, format!("cannot mount '{name}': {why}")));
        if d.is_volume() {
            return Err(fail(
                1,
                format!("cannot open '{name}': operation not applicable to datasets of this type"),
            ));
        }
        match d.mountpoint.as_str() {
            "legacy" => return cannot("legacy mountpoint\nuse mount(8) to mount this filesystem"),
            "none" => return cannot("no mountpoint set"),
            _ => {}
        }
        if d.properties.get("canmount").is_some_and(|c| c == "off") {
            return cannot("'canmount' property is set to 'off'");
        }
        if d.mounted {
            return cannot("filesystem already mounted");
        }
        d.mounted = true;
        Ok(())
    })
}

/// `zfs umount <filesystem>`.
fn cmd_umount(ctx: &Ctx, args: &[String]) -> Result<(), Fail> {
    let opts = getopt(args, "fu")?;
    let [name] = opts.pos.as_slice() else {
        return Err(fail(
            2,
            format!("missing filesystem argument\n{}", usage_all()),
        ));
    };
    with_zfs_state(&ctx.dir, |state| {
        let Some(d) = state.datasets.get_mut(name.as_str()) else {
            return Err(no_such(name));
        };
        if !d.mounted {
            return Err(fail(
                1,
                format!("cannot unmount '{name}': not currently mounted"),
            ));
        }
        d.mounted = false;
        Ok(())
    })
}

/// Sets the `-o` properties of `zfs create` or `zfs clone` on the new
/// dataset `d`, and whether it is mounted after them.
fn apply_create_props(d: &mut DatasetState, props: Vec<(String, String)>) {
    for (k, v) in props {
        match (k.as_str(), v.as_str()) {
            ("mountpoint", _) => d.mountpoint = v,
            // What OpenZFS reports for encryption=on.
            ("encryption", "on") => {
                d.properties.insert(k, "aes-256-gcm".to_owned());
            }
            _ => {
                d.properties.insert(k, v);
            }
        }
    }
    d.mounted = d.mountable();
}

/// Prints a failure and returns its status (for the streaming commands).
fn report(f: Fail) -> i32 {
    eprint_message(&f.msg);
    f.code
}

fn die_mid_stream(out: &mut impl Write) -> i32 {
    let _ = out.flush();
    eprintln!("fake: killed mid-stream");
    1
}

fn cmd_send(ctx: &Ctx, args: &[String]) -> i32 {
    let opts = match getopt(args, "DLPRSVbcehnpvwi:I:t:X:") {
        Ok(o) => o,
        Err(f) => return report(f),
    };
    if let Some(token) = opts.val('t') {
        return report(fail(
            1,
            format!("cannot resume send: '{token}' is not a valid token"),
        ));
    }
    let [snap] = opts.pos.as_slice() else {
        return report(fail(
            2,
            format!("missing snapshot argument\n{}", usage_all()),
        ));
    };
    let state = match load_zfs_state(&ctx.dir) {
        Ok(s) => s,
        Err(e) => return report(e.into()),
    };
    let Some((ds, _)) = snap.split_once('@') else {
        if state.datasets.contains_key(snap.as_str()) {
            return report(fail(
                1,
                format!("cannot send '{snap}': operation not applicable to datasets of this type"),
            ));
        }
        return report(no_such(snap));
    };
    let Some(target) = state.snapshots.get(snap) else {
        return report(no_such(snap));
    };
    let base = opts.val('I').or(opts.val('i')).map(|b| {
        if b.contains('@') {
            if let Some(short) = b.strip_prefix('@') {
                format!("{ds}@{short}")
            } else {
                b.to_owned()
            }
        } else {
            format!("{ds}@{b}")
        }
    });
    let len = if let Some(base) = &base {
        let Some(b) = state.snapshots.get(base) else {
            return report(no_such(base));
        };
        if base.split_once('@').map(|(d, _)| d) != Some(ds) {
            return report(fail(
                1,
                format!("cannot send '{snap}': incremental source must be in same filesystem"),
            ));
        }
        if base == snap || (b.creation, b.createtxg) > (target.creation, target.createtxg) {
            return report(fail(
                1,
                format!("warning: cannot send '{snap}': not an earlier snapshot from the same fs"),
            ));
        }
        incremental_size(target.stream_size)
    } else {
        target.stream_size
    };

    let estimate = match &base {
        Some(b) => format!("incremental\t{b}\t{snap}\t{len}\nsize\t{len}\n"),
        None => format!("full\t{snap}\t{len}\nsize\t{len}\n"),
    };
    if opts.has('n') {
        if opts.has('P') || opts.has('v') {
            print!("{estimate}");
            let _ = io::stdout().flush();
        }
        return 0;
    }
    if opts.has('P') || opts.has('v') {
        eprint!("{estimate}");
    }

    let header = state.stream_header(snap, base.as_deref(), len);
    let mut out = io::stdout().lock();
    let mut written: u64 = 0;
    let mut next_progress: u64 = 0;
    let mut failed: Option<i32> = None;
    let progress = |written: u64| {
        let _ = write_atomic(
            &ctx.dir.join(SEND_PROGRESS_FILE),
            written.to_string().as_bytes(),
        );
    };
    for_each_stream_piece(&header, base.as_deref(), |piece| {
        if written >= next_progress {
            progress(written);
            next_progress += SEND_PROGRESS_STEP;
        }
        let allowed = match ctx.die_after {
            Some(limit) => piece
                .len()
                .min(usize::try_from(limit.saturating_sub(written)).unwrap_or(piece.len())),
            None => piece.len(),
        };
        if let Err(e) = out.write_all(&piece[..allowed]) {
            failed = Some(write_error(&e));
            return ControlFlow::Break(());
        }
        written += allowed as u64;
        if allowed < piece.len() {
            failed = Some(die_mid_stream(&mut out));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if let Some(code) = failed {
        return code;
    }
    if let Err(e) = out.flush() {
        return write_error(&e);
    }
    progress(written);
    if ctx.die_after.is_some() {
        return die_mid_stream(&mut out);
    }
    0
}

fn write_error(e: &io::Error) -> i32 {
    if e.kind() == io::ErrorKind::BrokenPipe {
        eprintln!("fake-zfs: broken pipe");
    } else {
        eprintln!("fake-zfs: write error: {e}");
    }
    1
}

/// `zfs receive [-uFn] <target>`: reads the stream (storing it, see
/// [`received_path`]), then applies OpenZFS's rules in its order and
/// wording, all exit status 1:
///
/// * no bytes: "failed to read from stream"; not a fake stream: "invalid
///   stream (bad magic number)"; cut inside its header: "failed to read";
/// * a full stream into an existing target: only with `-F`, and then not
///   over snapshots, a clone, or an encrypted target;
/// * an incremental: the target must exist and hold the base (by guid);
///   if the base is not its newest snapshot or the target was modified
///   since, only `-F` goes on, rolling back to the base first;
/// * a stream shorter than its header says: "incomplete stream", and
///   nothing changes.
///
/// The received snapshot is named after the target's `@snap`, else after
/// the stream's; it keeps the stream's guid. A new dataset is mounted
/// unless `-u`. (A missing parent is created, not refused: tests receive
/// into pools the fake never had.)
fn cmd_recv(ctx: &Ctx, args: &[String]) -> i32 {
    let opts = match getopt(args, "FnsuvhMeAdx:o:") {
        Ok(o) => o,
        Err(f) => return report(f),
    };
    let [target] = opts.pos.as_slice() else {
        return report(fail(
            2,
            format!("missing snapshot argument\n{}", usage_all()),
        ));
    };
    let path = received_path(&ctx.dir, target);
    let (total, died, head) = match read_stream(&path, ctx.die_after, opts.has('n')) {
        Ok(read) => read,
        Err(e) => return report(fail(1, format!("cannot receive: {e}"))),
    };
    if died {
        return die_mid_stream(&mut io::stdout());
    }
    let header = match StreamHeader::parse(&head) {
        _ if total == 0 => return report(fail(1, "cannot receive: failed to read from stream")),
        StreamStart::Header(header, _) => header,
        StreamStart::Short => return report(fail(1, "cannot receive: failed to read from stream")),
        StreamStart::BadMagic => {
            return report(fail(1, "cannot receive: invalid stream (bad magic number)"))
        }
    };
    let (ds, snap) = match target.split_once('@') {
        Some((ds, snap)) => (ds, snap),
        None => (
            target.as_str(),
            header.snapshot.split_once('@').map_or("", |(_, s)| s),
        ),
    };
    let (now, _) = now_and_size();
    let result = with_zfs_state(&ctx.dir, |state| {
        let rollback_to = match header.base_guid {
            None => {
                check_full_recv(state, ds, opts.has('F'))?;
                None
            }
            Some(base_guid) => check_incremental_recv(state, ds, base_guid, opts.has('F'))?,
        };
        if total < header.len {
            let kind = match header.base_guid {
                None => "new filesystem",
                Some(_) => "incremental",
            };
            return Err(fail(
                1,
                format!("cannot receive {kind} stream: incomplete stream"),
            ));
        }
        if opts.has('n') {
            return Ok(());
        }
        if let Some(base) = rollback_to {
            destroy_after(state, &base);
        }
        if !state.datasets.contains_key(ds) {
            state.ensure_dataset(ds);
            if let Some(d) = state.datasets.get_mut(ds) {
                // A volume's stream makes a volume, as zfs recv does.
                if let Some(volsize) = &header.volsize {
                    d.properties.insert("volsize".to_owned(), volsize.clone());
                }
                d.mounted = !opts.has('u') && d.mountable();
            }
        }
        if let Some(d) = state.datasets.get_mut(ds) {
            d.modified = false;
        }
        let createtxg = state.bump_txg();
        state.snapshots.insert(
            format!("{ds}@{snap}"),
            SnapshotState {
                creation: now,
                stream_size: total,
                createtxg,
                guid: Some(header.guid),
                ..SnapshotState::default()
            },
        );
        Ok(())
    });
    match result {
        Ok(()) => 0,
        Err(f) => report(f),
    }
}

/// Whether a full stream may be received into `ds`.
fn check_full_recv(state: &ZfsState, ds: &str, force: bool) -> Result<(), Fail> {
    let Some(d) = state.datasets.get(ds) else {
        return Ok(());
    };
    let refuse = |why: String| {
        Err(fail(
            1,
            format!("cannot receive new filesystem stream: {why}"),
        ))
    };
    if !force {
        return refuse(format!(
            "destination '{ds}' exists\nmust specify -F to overwrite it"
        ));
    }
    if let Some(first) = state.snapshots_of(ds).first() {
        return refuse(format!(
            "destination has snapshots (eg. {first})\nmust destroy them to overwrite it"
        ));
    }
    if d.origin.is_some() {
        return refuse(format!(
            "destination '{ds}' is a clone\nmust destroy it to overwrite it"
        ));
    }
    if d.properties.get("encryption").is_some_and(|e| e != "off") {
        return refuse(
            "zfs receive -F cannot be used to destroy an encrypted filesystem or overwrite an \
             unencrypted one with an encrypted one"
                .to_owned(),
        );
    }
    Ok(())
}

/// Whether an incremental stream from the snapshot with `base_guid` may
/// be received into `ds`; with `-F`, the snapshot to roll back to first.
fn check_incremental_recv(
    state: &ZfsState,
    ds: &str,
    base_guid: u64,
    force: bool,
) -> Result<Option<String>, Fail> {
    let refuse = |why: String| Err(fail(1, format!("cannot receive incremental stream: {why}")));
    let Some(d) = state.datasets.get(ds) else {
        return refuse(format!("destination '{ds}' does not exist"));
    };
    let snapshots = state.snapshots_of(ds);
    let Some(base) = snapshots.iter().find(|s| state.guid(s) == base_guid) else {
        return refuse(format!(
            "most recent snapshot of {ds} does not\nmatch incremental source"
        ));
    };
    let newest = snapshots.last() == Some(base);
    if !force && (!newest || d.modified) {
        // OpenZFS says "modified" also when the base is an older snapshot.
        return refuse(format!(
            "destination {ds} has been modified\nsince most recent snapshot"
        ));
    }
    Ok(force.then(|| base.clone()))
}

/// Rolls the dataset of `snapshot` back to it: destroys its newer
/// snapshots and forgets any modification.
fn destroy_after(state: &mut ZfsState, snapshot: &str) {
    let Some((ds, _)) = snapshot.split_once('@') else {
        return;
    };
    let all = state.snapshots_of(ds);
    if let Some(i) = all.iter().position(|s| s == snapshot) {
        for newer in &all[i + 1..] {
            state.snapshots.remove(newer);
        }
    }
    if let Some(d) = state.datasets.get_mut(ds) {
        d.modified = false;
    }
}

/// How much of a received stream's start is kept to read its header.
const HEAD_BYTES: usize = 4096;

/// Copies stdin to `path` (appending), at most `limit` bytes.  Returns the
/// byte count, whether the limit cut it short, and its first bytes (up to
/// [`HEAD_BYTES`]).
fn read_stream(path: &Path, limit: Option<u64>, dry: bool) -> io::Result<(u64, bool, Vec<u8>)> {
    let mut file = if dry {
        None
    } else {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        Some(OpenOptions::new().create(true).append(true).open(path)?)
    };
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut total: u64 = 0;
    loop {
        let want = match limit {
            Some(l) if l <= total => return Ok((total, true, head)),
            Some(l) => buf
                .len()
                .min(usize::try_from(l - total).unwrap_or(buf.len())),
            None => buf.len(),
        };
        let n = match stdin.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(f) = file.as_mut() {
            f.write_all(&buf[..n])?;
        }
        let keep = n.min(HEAD_BYTES.saturating_sub(head.len()));
        head.extend_from_slice(&buf[..keep]);
        total += n as u64;
    }
    Ok((total, limit.is_some(), head))
}
