#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]
//! `fake-rclone`: a stateful, recording, fault-injecting stand-in for
//! `rclone`.  Remote `name:path` lives in `$FAKE_RCLONE_STATE/remotes/name/path`
//! (see `zfs2cloud_testkit::fake`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::Serialize;
use zfs2cloud_testkit::fake::{
    apply_fault, format_rfc3339, parse_rclone_args, rclone_path, run_real, sha256_hex, start_fake,
    MidStream, MidStreamPlan, RcloneArgs, RCLONE_REAL_ENV, RCLONE_STATE_ENV,
};

/// rclone exit status for a usage error.
const EXIT_USAGE: i32 = 1;
/// rclone exit status for "directory not found".
const EXIT_DIR_NOT_FOUND: i32 = 3;
/// rclone exit status for "file not found".
const EXIT_FILE_NOT_FOUND: i32 = 4;

fn main() {
    let code = run();
    std::process::exit(code);
}

#[derive(Debug)]
struct Fail {
    code: i32,
    msg: String,
}

fn fail(code: i32, msg: impl Into<String>) -> Fail {
    Fail {
        code,
        msg: msg.into(),
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        fail(1, format!("ERROR : fake-rclone: {e}"))
    }
}

type Res = Result<(), Fail>;

/// rclone's error for a missing directory (the Fs root is named "").
fn dir_not_found(spec: &str) -> Fail {
    fail(
        EXIT_DIR_NOT_FOUND,
        format!("ERROR : : error listing: directory not found\nFailed to list {spec:?}: directory not found"),
    )
}

struct Ctx {
    state: PathBuf,
    args: RcloneArgs,
    die_after: Option<u64>,
    dry_run: bool,
    verbose: bool,
    filters: Vec<(bool, String)>,
}

impl Ctx {
    fn path(&self, spec: &str) -> PathBuf {
        rclone_path(&self.state, spec)
    }

    fn info(&self, msg: &str) {
        if self.verbose {
            eprintln!("INFO  : {msg}");
        }
    }

    fn skip_dry(&self, what: &str) -> bool {
        if self.dry_run {
            eprintln!("NOTICE: {what}: Skipped as --dry-run is set");
        }
        self.dry_run
    }

    /// Whether relative path `rel` passes the --include/--exclude/--filter rules.
    fn included(&self, rel: &str) -> bool {
        for (include, pattern) in &self.filters {
            if filter_match(pattern, rel) {
                return *include;
            }
        }
        !self.filters.iter().any(|(inc, _)| *inc)
    }
}

fn run() -> i32 {
    let (state, raw) = match start_fake("rclone", RCLONE_STATE_ENV) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let args = match parse_rclone_args(&raw) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("Error: {msg}");
            return EXIT_USAGE;
        }
    };
    let sub = args.positionals.first().cloned().unwrap_or_default();
    if let Some(real) = std::env::var_os(RCLONE_REAL_ENV).filter(|r| !r.is_empty()) {
        let mid = |bytes: u64| wrapper_mid_stream(&sub, &args, &raw, bytes);
        return run_real(&state, &sub, &raw, Path::new(&real), &mid);
    }
    let die_after = match apply_fault(&state, "rclone", &sub, &raw, &["cat", "rcat"]) {
        Ok(die_after) => die_after,
        Err(code) => return code,
    };
    let filters = match build_filters(&args) {
        Ok(f) => f,
        Err(f) => {
            eprintln!("{}", f.msg);
            return f.code;
        }
    };
    let ctx = Ctx {
        state,
        dry_run: args.has("dry-run"),
        verbose: args.has("verbose"),
        args,
        die_after,
        filters,
    };
    let pos: Vec<String> = ctx.args.positionals.iter().skip(1).cloned().collect();
    let result = dispatch(&ctx, &sub, &pos);
    let _ = io::stdout().flush();
    match result {
        Ok(()) => 0,
        Err(f) => {
            if !f.msg.is_empty() {
                eprintln!("{}", f.msg);
            }
            f.code
        }
    }
}

/// How the wrapper around the real rclone dies mid-stream: `cat` passes a
/// prefix of the file; `copyto` leaves a prefix of the file on the remote
/// (an `rcat` of it, as a backend without atomic uploads would); `sync`
/// stops after that many bytes (`--max-transfer … --cutoff-mode hard`).
fn wrapper_mid_stream(sub: &str, args: &RcloneArgs, raw: &[String], bytes: u64) -> MidStreamPlan {
    match sub {
        "cat" => (MidStream::Stdout, None),
        "copyto" if args.positionals.len() == 3 => {
            let src = &args.positionals[1];
            let mut data = Vec::new();
            if let Ok(f) = fs::File::open(src) {
                let _ = io::Read::read_to_end(&mut io::Read::take(f, bytes), &mut data);
            }
            let mut argv: Vec<String> = Vec::with_capacity(raw.len());
            let (mut sub_seen, mut src_dropped) = (false, false);
            for a in raw {
                if !sub_seen && a == "copyto" {
                    argv.push("rcat".to_owned());
                    sub_seen = true;
                } else if sub_seen && !src_dropped && a == src {
                    src_dropped = true;
                } else {
                    argv.push(a.clone());
                }
            }
            (MidStream::Replace, Some((argv, Some(data))))
        }
        "sync" => {
            let mut argv = raw.to_vec();
            argv.extend([
                "--max-transfer".to_owned(),
                format!("{bytes}B"),
                "--cutoff-mode".to_owned(),
                "hard".to_owned(),
            ]);
            (MidStream::Replace, Some((argv, None)))
        }
        _ => (MidStream::None, None),
    }
}

fn nargs(cmd: &str, pos: &[String], min: usize, max: usize) -> Res {
    if pos.len() < min {
        return Err(fail(
            EXIT_USAGE,
            format!(
                "Command {cmd} needs {min} arguments minimum: you provided {} non flag arguments: {pos:?}",
                pos.len()
            ),
        ));
    }
    if pos.len() > max {
        return Err(fail(
            EXIT_USAGE,
            format!(
                "Command {cmd} needs {max} arguments maximum: you provided {} non flag arguments: {pos:?}",
                pos.len()
            ),
        ));
    }
    Ok(())
}

/// How many arguments (min, max) subcommand `sub` takes after its name,
/// for those whose count is checked.
fn arity(sub: &str) -> Option<(usize, usize)> {
    match sub {
        "copy" | "sync" | "move" | "copyto" | "moveto" | "hashsum" => Some((2, 2)),
        "lsjson" | "lsf" | "ls" | "lsd" | "cat" | "rcat" | "deletefile" | "delete" | "purge"
        | "mkdir" | "rmdir" | "rmdirs" | "size" | "touch" | "sha256sum" => Some((1, 1)),
        _ => None,
    }
}

fn dispatch(ctx: &Ctx, sub: &str, pos: &[String]) -> Res {
    if let Some((min, max)) = arity(sub) {
        nargs(sub, pos, min, max)?;
    }
    match sub {
        "version" => {
            println!("rclone v1.60.1-fake");
            Ok(())
        }
        "copy" | "sync" | "move" => cmd_copy(ctx, &pos[0], &pos[1], sub == "sync", sub == "move"),
        "copyto" | "moveto" => cmd_copyto(ctx, &pos[0], &pos[1], sub == "moveto"),
        "lsjson" => cmd_lsjson(ctx, &pos[0]),
        "lsf" | "ls" | "lsd" => cmd_ls(ctx, sub, &pos[0]),
        "cat" => cmd_cat(ctx, &pos[0]),
        "rcat" => cmd_rcat(ctx, &pos[0]),
        "deletefile" => cmd_deletefile(ctx, &pos[0]),
        "delete" => cmd_delete(ctx, &pos[0]),
        "purge" => cmd_purge(ctx, &pos[0]),
        "mkdir" => {
            if ctx.skip_dry(&pos[0]) {
                return Ok(());
            }
            fs::create_dir_all(ctx.path(&pos[0]))?;
            Ok(())
        }
        "rmdir" => cmd_rmdir(ctx, &pos[0]),
        "rmdirs" => {
            let root = existing_dir(ctx, &pos[0])?;
            if !ctx.skip_dry(&pos[0]) {
                remove_empty_dirs(&root, !ctx.args.has("leave-root"))?;
            }
            Ok(())
        }
        "size" => cmd_size(ctx, &pos[0]),
        "touch" => {
            let path = ctx.path(&pos[0]);
            if ctx.skip_dry(&pos[0]) {
                return Ok(());
            }
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            let f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            f.set_modified(std::time::SystemTime::now())?;
            Ok(())
        }
        "hashsum" => cmd_hashsum(ctx, &pos[0], &pos[1]),
        "sha256sum" => cmd_hashsum(ctx, "sha256", &pos[0]),
        "listremotes" => {
            let mut names: Vec<String> = fs::read_dir(ctx.state.join("remotes"))
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            for n in names {
                println!("{n}:");
            }
            Ok(())
        }
        "" => Err(fail(
            EXIT_USAGE,
            "Usage:\n  rclone [flags]\n  rclone [command]\n\nUse \"rclone [command] --help\" for more information about a command.",
        )),
        other => Err(fail(EXIT_USAGE, format!("Command {other} not found"))),
    }
}

// ---------------------------------------------------------------------------
// Filters.

fn build_filters(args: &RcloneArgs) -> Result<Vec<(bool, String)>, Fail> {
    let mut rules = Vec::new();
    let read_lines = |path: &str| -> Result<Vec<String>, Fail> {
        let f = fs::File::open(path)
            .map_err(|e| fail(EXIT_USAGE, format!("Failed to load filters: {path}: {e}")))?;
        Ok(io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
            .collect())
    };
    let parse_filter = |rule: &str| -> Result<(bool, String), Fail> {
        if let Some(p) = rule.strip_prefix("+ ") {
            Ok((true, p.to_owned()))
        } else if let Some(p) = rule.strip_prefix("- ") {
            Ok((false, p.to_owned()))
        } else {
            Err(fail(
                EXIT_USAGE,
                format!("malformed rule {rule:?}: rule should start with + or -"),
            ))
        }
    };
    for (name, value) in &args.flags {
        match name.as_str() {
            "include" => rules.push((true, value.clone())),
            "exclude" => rules.push((false, value.clone())),
            "filter" => rules.push(parse_filter(value)?),
            "include-from" => rules.extend(read_lines(value)?.into_iter().map(|l| (true, l))),
            "exclude-from" => rules.extend(read_lines(value)?.into_iter().map(|l| (false, l))),
            "filter-from" => {
                for l in read_lines(value)? {
                    rules.push(parse_filter(&l)?);
                }
            }
            _ => {}
        }
    }
    Ok(rules)
}

/// rclone-style match: a leading `/` anchors at the root, otherwise the
/// pattern may match any trailing run of path components.
fn filter_match(pattern: &str, rel: &str) -> bool {
    if let Some(anchored) = pattern.strip_prefix('/') {
        return glob(anchored.as_bytes(), rel.as_bytes());
    }
    if glob(pattern.as_bytes(), rel.as_bytes()) {
        return true;
    }
    rel.match_indices('/')
        .any(|(i, _)| glob(pattern.as_bytes(), &rel.as_bytes()[i + 1..]))
}

/// `*` (not across `/`), `**` (anything), `?` (one non-`/` byte).
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) if rest.first() == Some(&b'*') => {
            let rest = &rest[1..];
            (0..=s.len()).any(|i| glob(rest, &s[i..]))
        }
        Some((b'*', rest)) => {
            let mut i = 0;
            loop {
                if glob(rest, &s[i..]) {
                    return true;
                }
                if i == s.len() || s[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        Some((b'?', rest)) => s.first().is_some_and(|c| *c != b'/') && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

// ---------------------------------------------------------------------------
// File system helpers.

/// Files under `root`, as sorted relative paths with `/`.
fn walk_files(root: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    walk(root, root, &mut out, &mut Vec::new(), None)?;
    Ok(out)
}

/// Collects files (into `files`) and directories (into `dirs`) below
/// `dir`, as relative paths, down to `max_depth` levels (1 = direct children).
fn walk(
    base: &Path,
    dir: &Path,
    files: &mut Vec<String>,
    dirs: &mut Vec<String>,
    max_depth: Option<usize>,
) -> io::Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    entries.sort();
    for path in entries {
        let rel = rel_path(base, &path);
        if path.is_dir() {
            dirs.push(rel.clone());
            let level = rel.matches('/').count() + 1;
            if max_depth.is_none_or(|m| level < m) {
                walk(base, &path, files, dirs, max_depth)?;
            }
        } else {
            files.push(rel);
        }
    }
    Ok(())
}

fn rel_path(base: &Path, path: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

fn existing_dir(ctx: &Ctx, spec: &str) -> Result<PathBuf, Fail> {
    let p = ctx.path(spec);
    if p.is_dir() {
        Ok(p)
    } else {
        Err(dir_not_found(spec))
    }
}

fn copy_file(src: &Path, dst: &Path) -> io::Result<()> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    // Copy through a temporary name like rclone's local backend.
    let mut tmp = dst.as_os_str().to_owned();
    tmp.push(format!(".{}.partial", std::process::id()));
    let tmp = PathBuf::from(tmp);
    fs::copy(src, &tmp)?;
    if let Ok(mtime) = fs::metadata(src).and_then(|m| m.modified()) {
        if let Ok(f) = fs::OpenOptions::new().write(true).open(&tmp) {
            let _ = f.set_modified(mtime);
        }
    }
    fs::rename(&tmp, dst)
}

fn remove_empty_dirs(dir: &Path, include_root: bool) -> io::Result<bool> {
    let mut empty = true;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if !remove_empty_dirs(&path, true)? {
                empty = false;
            }
        } else {
            empty = false;
        }
    }
    if empty && include_root {
        fs::remove_dir(dir)?;
    }
    Ok(empty)
}

// ---------------------------------------------------------------------------
// Commands.

fn cmd_copy(ctx: &Ctx, src: &str, dst: &str, sync: bool, mv: bool) -> Res {
    let src_path = ctx.path(src);
    let dst_path = ctx.path(dst);
    if src_path.is_file() {
        let name = src_path.file_name().map(PathBuf::from).unwrap_or_default();
        let rel = name.to_string_lossy().into_owned();
        if !ctx.included(&rel) || ctx.skip_dry(&rel) {
            return Ok(());
        }
        copy_file(&src_path, &dst_path.join(&name))?;
        ctx.info(&format!("{rel}: Copied (new)"));
        if mv {
            fs::remove_file(&src_path)?;
        }
        return Ok(());
    }
    if !src_path.is_dir() {
        return Err(fail(
            EXIT_DIR_NOT_FOUND,
            format!("ERROR : {src}: error reading source root directory: directory not found\nFailed to {}: directory not found", if sync { "sync" } else { "copy" }),
        ));
    }
    let files: Vec<String> = walk_files(&src_path)?
        .into_iter()
        .filter(|f| ctx.included(f))
        .collect();
    if ctx.dry_run {
        for f in &files {
            ctx.skip_dry(f);
        }
        return Ok(());
    }
    fs::create_dir_all(&dst_path)?;
    for f in &files {
        copy_file(&src_path.join(f), &dst_path.join(f))?;
        ctx.info(&format!("{f}: Copied (new)"));
    }
    if sync {
        let keep: std::collections::BTreeSet<&String> = files.iter().collect();
        for f in walk_files(&dst_path)? {
            if !keep.contains(&f) && ctx.included(&f) {
                fs::remove_file(dst_path.join(&f))?;
                ctx.info(&format!("{f}: Deleted"));
            }
        }
        let mut src_dirs = Vec::new();
        walk(&src_path, &src_path, &mut Vec::new(), &mut src_dirs, None)?;
        let mut dst_dirs = Vec::new();
        walk(&dst_path, &dst_path, &mut Vec::new(), &mut dst_dirs, None)?;
        for d in dst_dirs.iter().rev() {
            if !src_dirs.contains(d) {
                let p = dst_path.join(d);
                if fs::read_dir(&p).is_ok_and(|mut rd| rd.next().is_none()) {
                    fs::remove_dir(&p)?;
                }
            }
        }
    }
    if mv {
        for f in &files {
            fs::remove_file(src_path.join(f))?;
        }
        if ctx.args.has("delete-empty-src-dirs") {
            remove_empty_dirs(&src_path, false)?;
        }
    }
    Ok(())
}

fn cmd_copyto(ctx: &Ctx, src: &str, dst: &str, mv: bool) -> Res {
    let src_path = ctx.path(src);
    if src_path.is_dir() {
        return cmd_copy(ctx, src, dst, false, mv);
    }
    if !src_path.is_file() {
        return Err(fail(
            EXIT_DIR_NOT_FOUND,
            format!("ERROR : {src}: error reading source root directory: directory not found\nFailed to copyto: directory not found"),
        ));
    }
    if ctx.skip_dry(src) {
        return Ok(());
    }
    copy_file(&src_path, &ctx.path(dst))?;
    ctx.info(&format!("{dst}: Copied (new)"));
    if mv {
        fs::remove_file(&src_path)?;
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonItem {
    path: String,
    name: String,
    size: i64,
    mime_type: String,
    mod_time: String,
    is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    hashes: Option<BTreeMap<String, String>>,
}

fn mime_type(name: &str) -> &'static str {
    match name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("json") => "application/json",
        Some("txt") | Some("log") => "text/plain; charset=utf-8",
        Some("toml") => "application/toml",
        Some("gz") => "application/gzip",
        Some("gpg") | Some("pgp") => "application/pgp-encrypted",
        _ => "application/octet-stream",
    }
}

fn mod_time(path: &Path) -> String {
    let secs = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    format_rfc3339(secs)
}

fn item(ctx: &Ctx, base: &Path, rel: &str, is_dir: bool) -> io::Result<JsonItem> {
    let path = if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = if is_dir {
        -1
    } else {
        i64::try_from(fs::metadata(&path)?.len()).unwrap_or(i64::MAX)
    };
    let want_hash = ctx.args.has("hash") && !is_dir;
    let types = ctx.args.values("hash-type");
    let hashes = if want_hash
        && (types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case("sha256")))
    {
        let mut m = BTreeMap::new();
        m.insert("sha256".to_owned(), sha256_hex(&fs::read(&path)?));
        Some(m)
    } else if want_hash {
        Some(BTreeMap::new())
    } else {
        None
    };
    Ok(JsonItem {
        path: if rel.is_empty() {
            name.clone()
        } else {
            rel.to_owned()
        },
        mime_type: if is_dir {
            "inode/directory".to_owned()
        } else {
            mime_type(&name).to_owned()
        },
        name,
        size,
        mod_time: mod_time(&path),
        is_dir,
        hashes,
    })
}

/// Entries under `spec`: (base dir, [(relative path, is_dir)]).
fn listing(
    ctx: &Ctx,
    spec: &str,
    recursive_default: bool,
) -> Result<(PathBuf, Vec<(String, bool)>), Fail> {
    let path = ctx.path(spec);
    if path.is_file() {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok((base, vec![(name, false)]));
    }
    if !path.is_dir() {
        return Err(dir_not_found(spec));
    }
    let max_depth = match ctx.args.value("max-depth") {
        Some(d) => d
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .map(|d| d as usize),
        None if ctx.args.has("recursive") || recursive_default => None,
        None => Some(1),
    };
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(&path, &path, &mut files, &mut dirs, max_depth)?;
    let mut entries: Vec<(String, bool)> = Vec::new();
    if !ctx.args.has("files-only") {
        entries.extend(dirs.into_iter().map(|d| (d, true)));
    }
    if !ctx.args.has("dirs-only") {
        entries.extend(
            files
                .into_iter()
                .filter(|f| ctx.included(f))
                .map(|f| (f, false)),
        );
    }
    entries.sort();
    Ok((path, entries))
}

fn cmd_lsjson(ctx: &Ctx, spec: &str) -> Res {
    if ctx.args.has("stat") {
        let path = ctx.path(spec);
        if !path.exists() {
            return Err(fail(
                EXIT_FILE_NOT_FOUND,
                format!("ERROR : {spec}: error in ListJSON: object not found"),
            ));
        }
        let it = item(ctx, &path, "", path.is_dir())?;
        println!("{}", serde_json::to_string(&it).map_err(io::Error::other)?);
        return Ok(());
    }
    let (base, entries) = listing(ctx, spec, false)?;
    let mut out = String::from("[\n");
    for (i, (rel, is_dir)) in entries.iter().enumerate() {
        let it = item(ctx, &base, rel, *is_dir)?;
        out.push_str(&serde_json::to_string(&it).map_err(io::Error::other)?);
        out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
    }
    out.push_str("]\n");
    let mut stdout = io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    Ok(())
}

fn cmd_ls(ctx: &Ctx, sub: &str, spec: &str) -> Res {
    let (base, entries) = listing(ctx, spec, sub == "ls")?;
    let mut out = String::new();
    for (rel, is_dir) in entries {
        match sub {
            "lsf" => {
                out.push_str(&rel);
                if is_dir {
                    out.push('/');
                }
                out.push('\n');
            }
            "ls" if !is_dir => {
                let size = fs::metadata(base.join(&rel))?.len();
                out.push_str(&format!("{size:>9} {rel}\n"));
            }
            "lsd" if is_dir => {
                let t = mod_time(&base.join(&rel))
                    .replace('T', " ")
                    .replace('Z', "");
                out.push_str(&format!("{:>12} {t} {:>8} {rel}\n", -1, -1));
            }
            _ => {}
        }
    }
    io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}

fn cmd_cat(ctx: &Ctx, spec: &str) -> Res {
    let path = ctx.path(spec);
    let files: Vec<PathBuf> = if path.is_file() {
        vec![path]
    } else if path.is_dir() {
        walk_files(&path)?
            .into_iter()
            .filter(|f| ctx.included(f))
            .map(|f| path.join(f))
            .collect()
    } else {
        return Err(dir_not_found(spec));
    };
    let mut out = io::stdout().lock();
    let mut written: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for f in files {
        let mut file = fs::File::open(&f)?;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let allowed = match ctx.die_after {
                Some(limit) => n.min(usize::try_from(limit.saturating_sub(written)).unwrap_or(n)),
                None => n,
            };
            write_out(&mut out, &buf[..allowed])?;
            written += allowed as u64;
            if allowed < n {
                return Err(killed(&mut out));
            }
        }
    }
    out.flush().map_err(write_fail)?;
    if ctx.die_after.is_some() {
        return Err(killed(&mut out));
    }
    Ok(())
}

fn write_out(out: &mut impl Write, bytes: &[u8]) -> Res {
    out.write_all(bytes).map_err(write_fail)
}

fn write_fail(e: io::Error) -> Fail {
    if e.kind() == io::ErrorKind::BrokenPipe {
        fail(1, "ERROR : fake-rclone: broken pipe")
    } else {
        fail(1, format!("ERROR : fake-rclone: write error: {e}"))
    }
}

fn killed(out: &mut impl Write) -> Fail {
    let _ = out.flush();
    fail(1, "fake: killed mid-stream")
}

fn cmd_rcat(ctx: &Ctx, spec: &str) -> Res {
    let dst = ctx.path(spec);
    let mut data = Vec::new();
    let mut stdin = io::stdin().lock();
    match ctx.die_after {
        Some(limit) => {
            (&mut stdin).take(limit).read_to_end(&mut data)?;
            return Err(fail(1, "fake: killed mid-stream"));
        }
        None => {
            stdin.read_to_end(&mut data)?;
        }
    }
    if ctx.skip_dry(spec) {
        return Ok(());
    }
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut tmp = dst.as_os_str().to_owned();
    tmp.push(format!(".{}.partial", std::process::id()));
    fs::write(&tmp, &data)?;
    fs::rename(&tmp, &dst)?;
    Ok(())
}

fn cmd_deletefile(ctx: &Ctx, spec: &str) -> Res {
    let path = ctx.path(spec);
    if !path.is_file() {
        return Err(fail(
            EXIT_FILE_NOT_FOUND,
            format!("ERROR : {spec}: Failed to deletefile: object not found"),
        ));
    }
    if !ctx.skip_dry(spec) {
        fs::remove_file(&path)?;
        ctx.info(&format!("{spec}: Deleted"));
    }
    Ok(())
}

/// For `delete` and `purge`: if `spec` is a file, removes it (unless
/// --dry-run) and returns `None`; else returns the existing directory.
fn remove_file_or_dir(ctx: &Ctx, spec: &str) -> Result<Option<PathBuf>, Fail> {
    let path = ctx.path(spec);
    if path.is_file() {
        if !ctx.skip_dry(spec) {
            fs::remove_file(&path)?;
        }
        return Ok(None);
    }
    existing_dir(ctx, spec).map(Some)
}

fn cmd_delete(ctx: &Ctx, spec: &str) -> Res {
    let Some(root) = remove_file_or_dir(ctx, spec)? else {
        return Ok(());
    };
    for f in walk_files(&root)? {
        if ctx.included(&f) && !ctx.skip_dry(&f) {
            fs::remove_file(root.join(&f))?;
            ctx.info(&format!("{f}: Deleted"));
        }
    }
    if ctx.args.has("rmdirs") && !ctx.dry_run {
        remove_empty_dirs(&root, false)?;
    }
    Ok(())
}

fn cmd_purge(ctx: &Ctx, spec: &str) -> Res {
    let Some(root) = remove_file_or_dir(ctx, spec)? else {
        return Ok(());
    };
    if !ctx.skip_dry(spec) {
        fs::remove_dir_all(&root)?;
    }
    Ok(())
}

fn cmd_rmdir(ctx: &Ctx, spec: &str) -> Res {
    let root = existing_dir(ctx, spec)?;
    if fs::read_dir(&root)?.next().is_some() {
        return Err(fail(
            1,
            format!("ERROR : {spec}: Failed to rmdir: directory not empty"),
        ));
    }
    if !ctx.skip_dry(spec) {
        fs::remove_dir(&root)?;
    }
    Ok(())
}

fn cmd_size(ctx: &Ctx, spec: &str) -> Res {
    let path = ctx.path(spec);
    let (count, bytes) = if path.is_file() {
        (1u64, fs::metadata(&path)?.len())
    } else {
        let root = existing_dir(ctx, spec)?;
        let mut count = 0u64;
        let mut bytes = 0u64;
        for f in walk_files(&root)?.into_iter().filter(|f| ctx.included(f)) {
            count += 1;
            bytes += fs::metadata(root.join(f))?.len();
        }
        (count, bytes)
    };
    if ctx.args.has("json") {
        println!("{{\"count\":{count},\"bytes\":{bytes}}}");
    } else {
        println!("Total objects: {count}\nTotal size: {bytes} B ({bytes} Byte)");
    }
    Ok(())
}

fn cmd_hashsum(ctx: &Ctx, hash: &str, spec: &str) -> Res {
    if !hash.eq_ignore_ascii_case("sha256") {
        return Err(fail(
            EXIT_USAGE,
            format!(
                "Failed to hashsum: unsupported hash type {hash:?} (fake-rclone knows only sha256)"
            ),
        ));
    }
    let path = ctx.path(spec);
    let (base, files) = if path.is_file() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
            vec![name],
        )
    } else {
        let root = existing_dir(ctx, spec)?;
        let files = walk_files(&root)?
            .into_iter()
            .filter(|f| ctx.included(f))
            .collect();
        (root, files)
    };
    let mut out = String::new();
    for f in files {
        let digest = sha256_hex(&fs::read(base.join(&f))?);
        out.push_str(&format!("{digest}  {f}\n"));
    }
    io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}
