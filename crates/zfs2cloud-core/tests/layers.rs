//! The core's layers import only downward.
//!
//! Every module under `src/` belongs to the layer named by its top folder.
//! A module may use its own layer and the layers below it, never a layer
//! above, nor a sibling of the same rank (`stages` and `policy` are built
//! side by side from what is below them). Inside `ops`, the operations may
//! use each other, but never in a cycle.
//!
//! This reads the source as text: every `crate::…` path and every
//! `super::…` path (resolved against the file's own module path) outside
//! comments.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layer table: name and rank, bottom first.
const LAYERS: &[(&str, u8)] = &[
    ("model", 0),
    ("util", 0),
    ("process", 1),
    ("config", 2),
    ("stages", 3),
    ("policy", 3),
    ("ops", 4),
    // Metrics and pings around a backup run (issue 16).
    ("monitor", 5),
];

fn rank(layer: &str) -> Option<u8> {
    LAYERS.iter().find(|(l, _)| *l == layer).map(|(_, r)| *r)
}

/// One `use` of another module: from the file's module path to the
/// module path it names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edge {
    file: String,
    line: usize,
    from: Vec<String>,
    to: Vec<String>,
}

/// The module path of a source file: `ops/backup/steps.rs` is
/// `ops::backup::steps`, `ops/backup/mod.rs` is `ops::backup`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && stem != "lib" {
            parts.push(stem.to_owned());
        }
    }
    parts
}

/// The code of a line, without its `//` comment (doc comments included).
fn code_of(line: &str) -> &str {
    line.split_once("//").map_or(line, |(code, _)| code)
}

/// The paths a `use` tree names, each as its leading identifiers:
/// `ops::backup::Backup` gives `[ops, backup, Backup]`, and a group
/// `{model::A, ops::{B, C}}` gives `[model, A]` and `[ops]`.
fn tree_paths(tree: &str) -> Vec<Vec<String>> {
    if let Some(group) = tree.strip_prefix('{') {
        return split_group(group)
            .into_iter()
            .flat_map(|item| tree_paths(item.trim_start()))
            .filter(|path| !path.is_empty())
            .collect();
    }
    let mut path = Vec::new();
    for segment in tree.split("::") {
        let id: String = segment
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if id.is_empty() {
            break;
        }
        let whole = id.len() == segment.len();
        path.push(id);
        if !whole {
            break;
        }
    }
    vec![path]
}

/// The top-level items of a `{…}` group (the text after its `{`).
fn split_group(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0_usize, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

/// The module paths named in `code` (comments removed), with the byte
/// offset of each: `crate::…` and `super::…`, the latter resolved against
/// `own`, the module the code is in.
fn named_paths(code: &str, own: &[String]) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        // Not the end of a longer identifier such as `zfs2cloud_crate::`.
        if code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        for path in tree_paths(&code[i + "crate::".len()..]) {
            out.push((i, path));
        }
    }
    for (i, _) in code.match_indices("super::") {
        if code[..i].ends_with("super::") {
            continue; // counted from the first `super` of a chain
        }
        let mut base = own.to_vec();
        let mut rest = &code[i..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        for path in tree_paths(rest) {
            out.push((i, base.iter().cloned().chain(path).collect()));
        }
    }
    out
}

/// Every edge of the crate's source tree under `src`.
fn edges(src: &Path) -> Vec<Edge> {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        let own = module_path(rel);
        let text = fs::read_to_string(&file).unwrap_or_default();
        let code: String = text.lines().map(|l| format!("{}\n", code_of(l))).collect();
        for (offset, to) in named_paths(&code, &own) {
            out.push(Edge {
                file: rel.display().to_string(),
                line: code[..offset].matches('\n').count() + 1,
                from: own.clone(),
                to,
            });
        }
    }
    out
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// What is wrong with one edge, if anything.
fn violation(edge: &Edge) -> Option<String> {
    let from = edge.from.first()?; // the crate root may use anything
    let to = edge.to.first()?;
    if from == to {
        return None;
    }
    let where_ = format!("{}:{}", edge.file, edge.line);
    match (rank(from), rank(to)) {
        (None, _) => Some(format!("{where_}: `{from}` is not in the layer table")),
        (_, None) => Some(format!(
            "{where_}: `{from}` uses `{to}`, which is not a layer (the crate root?)"
        )),
        (Some(f), Some(t)) if t > f => Some(format!(
            "{where_}: `{from}` (rank {f}) uses `{to}` (rank {t}), a layer above it"
        )),
        (Some(f), Some(t)) if t == f => Some(format!(
            "{where_}: `{from}` uses its sibling layer `{to}` (both rank {f})"
        )),
        _ => None,
    }
}

/// A cycle among the modules of `ops`, if there is one.
fn ops_cycle(edges: &[Edge]) -> Option<Vec<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in edges {
        let (Some(from), Some(to)) = (ops_module(&e.from), ops_module(&e.to)) else {
            continue;
        };
        if from != to {
            graph.entry(from).or_default().insert(to);
        }
    }
    let nodes: Vec<String> = graph.keys().cloned().collect();
    nodes.iter().find_map(|start| find_cycle(&graph, start))
}

/// `ops::export::pipeline` → `export`: the operation a module belongs to.
fn ops_module(path: &[String]) -> Option<String> {
    match path {
        [layer, op, ..] if layer == "ops" => Some(op.clone()),
        _ => None,
    }
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_owned());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_layer_imports_only_downward() {
    let edges = edges(&src_dir());
    assert!(
        edges.len() > 100,
        "only {} paths found: is the source where this test looks ({})?",
        edges.len(),
        src_dir().display()
    );
    let found: Vec<String> = edges.iter().filter_map(violation).collect();
    assert!(
        found.is_empty(),
        "imports against the layer table {LAYERS:?}:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_module_is_in_a_layer() {
    let mut files = Vec::new();
    collect_rs(&src_dir(), &mut files);
    let loose: Vec<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix(src_dir()).ok())
        .filter(|rel| rel != &Path::new("lib.rs"))
        .filter(|rel| module_path(rel).first().and_then(|l| rank(l)).is_none())
        .map(|rel| rel.display().to_string())
        .collect();
    assert!(loose.is_empty(), "modules outside every layer: {loose:?}");
}

#[test]
fn operations_do_not_use_each_other_in_a_cycle() {
    let edges = edges(&src_dir());
    assert_eq!(ops_cycle(&edges), None);
}

/// The checker itself finds what it must: without this, a checker that
/// reads nothing would pass the tests above.
#[test]
fn the_checker_catches_upward_sibling_and_cyclic_uses() {
    let edge = |file: &str, from: &str, code: &str| {
        let own: Vec<String> = from.split("::").map(str::to_owned).collect();
        named_paths(code_of(code), &own)
            .into_iter()
            .map(|(_, to)| Edge {
                file: file.to_owned(),
                line: 1,
                from: own.clone(),
                to,
            })
            .collect::<Vec<_>>()
    };
    let upward = edge("model/x.rs", "model::x", "use crate::ops::backup::Backup;");
    assert!(violation(&upward[0]).is_some_and(|v| v.contains("a layer above")));
    let sibling = edge(
        "stages/x.rs",
        "stages::x",
        "    crate::policy::plan_export(a)",
    );
    assert!(violation(&sibling[0]).is_some_and(|v| v.contains("sibling")));
    let escape = edge("model/x.rs", "model::x", "use super::super::ops::Thing;");
    assert!(violation(&escape[0]).is_some());
    let downward = edge("ops/x.rs", "ops::x", "use crate::model::{A, B};");
    assert_eq!(violation(&downward[0]), None);
    let inside = edge(
        "ops/backup/steps.rs",
        "ops::backup::steps",
        "use super::Backup;",
    );
    assert_eq!(inside[0].to, ["ops", "backup", "Backup"]);
    assert_eq!(violation(&inside[0]), None);
    let in_comment = edge("model/x.rs", "model::x", "/// see [`crate::ops::backup`]");
    assert!(in_comment.is_empty());
    let grouped = edge(
        "policy/x.rs",
        "policy::x",
        "use crate::{\n    model::{A, B},\n    ops::upload::{\n        C,\n    },\n};",
    );
    let heads: Vec<&str> = grouped.iter().map(|e| e.to[0].as_str()).collect();
    assert_eq!(heads, ["model", "ops"]);
    assert!(violation(&grouped[1]).is_some_and(|v| v.contains("a layer above")));

    let mut cyclic = edge("ops/a.rs", "ops::a", "use crate::ops::b::X;");
    cyclic.extend(edge("ops/b.rs", "ops::b", "use crate::ops::a::Y;"));
    assert_eq!(
        ops_cycle(&cyclic),
        Some(vec!["a".to_owned(), "b".to_owned(), "a".to_owned()])
    );
}
