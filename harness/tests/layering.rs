//! The harness's dependency rule (README, "Architecture"), checked on its source: a module may use
//! another only in a lower layer or in its own folder, and no two modules use each other, directly
//! or through others.
//!
//! Layers, low to high: `sys`, `test_support` | `input/` | `run/` | `record` | `sweep/`, `report/`
//! (siblings: neither uses the other) | `main`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layer of a module path such as `input::grid`, `record` or `main`.
fn layer(module: &str) -> usize {
    match module.split("::").next().unwrap_or_default() {
        "sys" | "test_support" => 0,
        "input" => 1,
        "run" => 2,
        "record" => 3,
        "sweep" | "report" => 4,
        "main" => 5,
        other => panic!("module `{other}` has no layer: add it to the rule and to README"),
    }
}

fn folder(module: &str) -> &str {
    module.split("::").next().unwrap_or_default()
}

/// Every module of `harness/src` (`input::grid` for input/grid.rs, `input` for input/mod.rs) and
/// the modules its code names as `crate::...`.
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![src.clone()];
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
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let module = rel
                .to_string_lossy()
                .trim_end_matches("/mod")
                .replace('/', "::");
            let text = std::fs::read_to_string(&path).unwrap();
            // Only the module's own code: its unit tests may reach anywhere.
            let code = text.split("\n#[cfg(test)]\nmod tests").next().unwrap();
            let mut used = BTreeSet::new();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let segs: Vec<&str> = rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap()
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .collect();
                // crate::input::grid::load → input::grid; crate::record::X → record.
                let depth = if matches!(segs.first(), Some(&("input" | "run" | "sweep" | "report")))
                {
                    2
                } else {
                    1
                };
                let target = segs[..segs.len().min(depth)].join("::");
                if !target.is_empty() && target != module {
                    used.insert(target);
                }
            }
            out.insert(module, used);
        }
    }
    out
}

#[test]
fn modules_use_only_lower_layers_or_their_own_folder() {
    let mut broken = vec![];
    for (module, used) in &uses() {
        for target in used {
            let same_folder = folder(module) == folder(target) && module.contains("::");
            if !(layer(target) < layer(module) || same_folder) {
                broken.push(format!("{module} uses {target}"));
            }
        }
    }
    assert!(broken.is_empty(), "dependency rule broken: {broken:?}");
}

#[test]
fn no_module_cycle() {
    let graph = uses();
    // Depth-first search with colours: 1 = on the stack, 2 = done.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        colour: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match colour.get(m) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == m).unwrap();
                return Some([&path[start..], &[m.to_string()]].concat());
            }
            _ => {}
        }
        colour.insert(m.to_string(), 1);
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, colour, path) {
                return Some(cycle);
            }
        }
        path.pop();
        colour.insert(m.to_string(), 2);
        None
    }
    let mut colour = BTreeMap::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut colour, &mut vec![]) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
    assert!(graph.len() >= 20, "read only {} modules", graph.len());
}
