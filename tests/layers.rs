//! The crate's layers stay as `src/lib.rs` documents them: every `use` (and every path through
//! `crate::` or `super::`) of a source file names only modules of its own layer or of a layer
//! below it, and no two source files import each other, directly or through others (no circle).
//!
//! The order is read from `src/lib.rs`'s module table (the first column, top row first: the
//! bottom of the crate is the top row). A new module must be added to the table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Every source file (relative to `src/`) and its text without tests, comments and strings.
fn sources() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::from(SRC)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(SRC)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            // Unit tests may reach anywhere.
            if rel.ends_with("tests.rs") || rel.contains("/tests/") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            out.insert(rel, strip(code));
        }
    }
    out
}

/// `code` without line comments and string literals.
fn strip(code: &str) -> String {
    let mut out = String::new();
    for line in code.lines() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let mut in_string = false;
        let mut escaped = false;
        for c in line.chars() {
            match (in_string, escaped, c) {
                (true, false, '\\') => escaped = true,
                (true, true, _) => escaped = false,
                (true, false, '"') => in_string = false,
                (true, false, _) => {}
                (false, _, '"') => {
                    in_string = true;
                    out.push_str("\"\"");
                }
                (false, _, c) => out.push(c),
            }
        }
        out.push('\n');
    }
    out
}

/// The module path of a source file: `controller/reconcile/mod.rs` → `controller::reconcile`.
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The files each file refers to through `crate::`, `super::` or `self::` paths. (A path that
/// starts with the name of a child module, `observe::observe` in `reconcile/mod.rs`, is how a
/// parent uses what it declares, and is not counted.)
fn edges(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeMap<Vec<String>, String> = files
        .keys()
        .map(|rel| (module_of(rel), rel.clone()))
        .collect();
    let resolve = |path: &[String]| -> Option<String> {
        (1..=path.len())
            .rev()
            .find_map(|n| modules.get(&path[..n]).cloned())
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = BTreeMap::new();
    for (rel, code) in files {
        let me = module_of(rel);
        let mut deps = BTreeSet::new();
        for head in ["crate::", "super::", "self::"] {
            for (at, _) in code.match_indices(head) {
                if code[..at].chars().last().is_some_and(ident) {
                    continue;
                }
                let rest = &code[at + head.len()..];
                let mut base: Vec<String> = match head {
                    "crate::" => Vec::new(),
                    "super::" => me[..me.len().saturating_sub(1)].to_vec(),
                    _ => me.clone(),
                };
                // The path's segments, then a `{...}` group of names.
                let mut segments = Vec::new();
                let mut tail = rest;
                loop {
                    let n = tail.find(|c: char| !ident(c)).unwrap_or(tail.len());
                    let segment = &tail[..n];
                    if segment == "super" {
                        base.pop();
                    } else if !segment.is_empty() {
                        segments.push(segment.to_owned());
                    }
                    tail = &tail[n..];
                    if let Some(next) = tail.strip_prefix("::") {
                        tail = next;
                        if tail.starts_with('{') {
                            break;
                        }
                    } else {
                        break;
                    }
                }
                let mut paths = vec![[base.clone(), segments.clone()].concat()];
                if let Some(group) = tail.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    for item in group.split(',') {
                        let first = item.trim().split("::").next().unwrap_or_default();
                        let first: String = first.chars().take_while(|c| ident(*c)).collect();
                        if !first.is_empty() && first != "self" {
                            paths.push([base.clone(), segments.clone(), vec![first]].concat());
                        }
                    }
                }
                for path in paths {
                    if let Some(target) = resolve(&path).filter(|t| t != rel) {
                        deps.insert(target);
                    }
                }
            }
        }
        out.insert(rel.clone(), deps);
    }
    out
}

/// The layers, bottom first, from `src/lib.rs`'s table (`| [`name`] | ...`).
fn layers() -> Vec<String> {
    let lib = std::fs::read_to_string(Path::new(SRC).join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! | [`"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_import_follows_the_documented_layer_order() {
    let files = sources();
    let layers = layers();
    assert!(layers.len() >= 8, "the table in src/lib.rs: {layers:?}");
    let layer = |rel: &str| -> Option<usize> {
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
        layers.iter().position(|l| l == top)
    };
    let mut unknown = BTreeSet::new();
    let mut against = Vec::new();
    for (from, deps) in edges(&files) {
        if matches!(from.as_str(), "lib.rs" | "main.rs") {
            continue;
        }
        let Some(a) = layer(&from) else {
            unknown.insert(from.split('/').next().unwrap().to_owned());
            continue;
        };
        for to in deps {
            if let Some(b) = layer(&to)
                && b > a
            {
                against.push(format!(
                    "{from} -> {to} ({} imports {})",
                    layers[a], layers[b]
                ));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules missing from src/lib.rs's table: {unknown:?}"
    );
    assert!(
        against.is_empty(),
        "imports against the layer order {layers:?}:\n{}",
        against.join("\n")
    );
}

#[test]
fn no_two_source_files_import_each_other() {
    let graph = edges(&sources());
    // Tarjan's strongly connected components.
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        circles: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut circle = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on.remove(w);
                circle.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if circle.len() > 1 {
                circle.sort();
                s.circles.push(circle);
            }
        }
    }
    let mut state = State {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        circles: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    assert!(
        state.circles.is_empty(),
        "files that import each other:\n{}",
        state
            .circles
            .iter()
            .map(|c| c.join(" <-> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The files `docs/development.md`'s source layout names (folders `src/x/` and the files under
/// them, indented), as paths relative to `src/`.
fn documented_layout() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/development.md"))
        .unwrap();
    let block = text
        .split("```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```text block in docs/development.md");
    let mut folder = String::new();
    let mut files = BTreeSet::new();
    for line in block.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if let Some(path) = first.strip_prefix("src/") {
            if path.ends_with('/') {
                folder = path.to_owned();
            } else {
                files.insert(path.to_owned());
            }
        } else if line.starts_with("  ") && !line.starts_with("   ") && first.ends_with(".rs") {
            files.insert(format!("{folder}{first}"));
        }
    }
    files
}

#[test]
fn the_documented_source_layout_names_every_file_and_only_those() {
    let mut stack = vec![PathBuf::from(SRC)];
    let mut actual = BTreeSet::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(SRC)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                actual.insert(rel);
            }
        }
    }
    for layer in layers() {
        assert!(
            actual.contains(&format!("{layer}/mod.rs")),
            "src/lib.rs's table names {layer}, which is not a folder of src/"
        );
    }
    let documented = documented_layout();
    let missing: Vec<_> = actual.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&actual).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/development.md's layout: missing {missing:?}, naming files that do not exist {extra:?}"
    );
}
