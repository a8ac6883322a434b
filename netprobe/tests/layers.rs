//! The shape of the house, checked from the source: every module of
//! netprobe imports only from its own layer or the layers below (model,
//! probe, recording, analyze, render, session, then the CLI), no import
//! cycle exists between modules, and only the probe layer touches aya.
//! `cargo test -p netprobe --test layers` runs it; a failure names the
//! import that breaks the rule.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// The layers, lowest first.
const LAYERS: [&str; 6] = ["model", "probe", "recording", "analyze", "render", "session"];

/// Every module (a file; `dir/mod.rs` is `dir`) and its code without its
/// unit tests, by path (`render::html`); `main.rs` is `cli`.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).unwrap().with_extension("");
                let mut name = rel.to_string_lossy().replace('/', "::");
                if let Some(parent) = name.strip_suffix("::mod") {
                    name = parent.to_owned();
                }
                match name.as_str() {
                    "lib" => continue,
                    "main" => name = "cli".to_owned(),
                    _ => {}
                }
                let text = std::fs::read_to_string(&p).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
                out.insert(name, code);
            }
        }
    }
    let mut out = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    walk(&root, &root, &mut out);
    out
}

/// The paths a module names through `crate::` (and `netprobe::` from the
/// CLI), braces expanded: `use crate::{a::X, b::{c, d}}` gives `a::X`,
/// `b::c`, `b::d`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = paths_after(code, "crate::", "");
    out.extend(paths_after(code, "netprobe::", ""));
    out
}

/// The paths that follow `root` in `code`, braces expanded, each put
/// under `prefix`.
fn paths_after(code: &str, root: &str, prefix: &str) -> Vec<String> {
    fn expand(prefix: &str, s: &str, out: &mut Vec<String>) {
        // s starts right after `prefix::`: an identifier path, or a group.
        let s = s.trim_start();
        if let Some(group) = s.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        expand(prefix, &group[start..i], out);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(prefix, &group[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(s.len());
        let path = s[..end].trim_end_matches(':');
        if path.is_empty() || path == "self" {
            return;
        }
        let full = if prefix.is_empty() { path.to_owned() } else { format!("{prefix}::{path}") };
        if s[end..].trim_start().starts_with('{') && s[..end].ends_with("::") {
            expand(&full, &s[end..], out);
        } else {
            out.push(full);
        }
    }
    let mut out = Vec::new();
    for (i, _) in code.match_indices(root) {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        expand(prefix, &code[i + root.len()..], &mut out);
    }
    out
}

/// The module a path lands in: its longest prefix that is a module.
fn resolve(path: &str, mods: &BTreeMap<String, String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len()).rev().map(|k| parts[..k].join("::")).find(|c| mods.contains_key(c))
}

fn layer(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or_default();
    LAYERS.iter().position(|l| *l == top).unwrap_or(LAYERS.len())
}

/// Imports between modules (`super::x` in `a::b` is `a::x`, or `a`).
fn imports(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, code) in mods {
        let mut to: BTreeSet<String> = crate_paths(code).iter().filter_map(|p| resolve(p, mods)).collect();
        let parent = m.rsplit_once("::").map_or("", |(p, _)| p);
        for sibling in paths_after(code, "super::", parent) {
            if let Some(t) = resolve(&sibling, mods).or_else(|| mods.contains_key(parent).then(|| parent.to_owned())) {
                to.insert(t);
            }
        }
        // A parent calling into its child (`hlog::write` in render).
        for c in mods.keys() {
            if let Some(child) = c.strip_prefix(&format!("{m}::")) {
                if !child.contains("::") && code.contains(&format!("{child}::")) {
                    to.insert(c.clone());
                }
            }
        }
        to.remove(m);
        edges.insert(m.clone(), to);
    }
    edges
}

#[test]
fn every_import_goes_to_the_same_layer_or_below() {
    let mods = modules();
    assert!(mods.contains_key("analyze") && mods.contains_key("render::html"), "{:?}", mods.keys());
    let mut wrong = Vec::new();
    for (m, to) in imports(&mods) {
        for t in to {
            if layer(&t) > layer(&m) {
                wrong.push(format!("{m} (layer {}) imports {t} (layer {})", layer(&m), layer(&t)));
            }
        }
    }
    assert!(wrong.is_empty(), "imports up the layers:\n{}", wrong.join("\n"));
}

#[test]
fn no_import_cycle_between_modules() {
    let edges = imports(&modules());
    // Tarjan's strongly connected components.
    struct S<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        idx: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        cycles: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(s: &mut S<'a>, v: &'a str) {
        let n = s.idx.len();
        s.idx.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.idx.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.stack.contains(&w) {
                let iw = s.idx[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.idx[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.cycles.push(comp);
            }
        }
    }
    let mut s = S { edges: &edges, idx: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), cycles: Vec::new() };
    for v in edges.keys() {
        if !s.idx.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    assert!(s.cycles.is_empty(), "import cycles: {:?}", s.cycles);
}

#[test]
fn only_the_probe_layer_touches_aya() {
    let outside: Vec<String> = modules()
        .into_iter()
        .filter(|(m, code)| !m.starts_with("probe") && (code.contains("aya::") || code.contains("use aya")))
        .map(|(m, _)| m)
        .collect();
    assert!(outside.is_empty(), "aya used outside probe: {outside:?}");
}

#[test]
fn the_checker_sees_imports_in_groups() {
    let paths = crate_paths("use crate::{a::X, b::{c, d::E}};\nlet x = crate::f::g(1);");
    assert_eq!(paths, ["a::X", "b::c", "b::d::E", "f::g"]);
}
