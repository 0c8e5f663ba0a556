//! The shape ARCHITECTURE.md promises, checked on the source tree itself: the modules'
//! imports form a tree (no circles), no file holds over 800 lines of code (tests apart), the
//! crate exports no module, and no `unreachable!` stands in for a type.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Files that hold only tests.
fn test_only(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    matches!(name, "tests.rs" | "differential.rs" | "golden.rs" | "fuzz_config.rs")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's text without its inline test modules (from the first top-level `#[cfg(test)]`).
fn code_of(text: &str) -> &str {
    text.find("\n#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// The top-level module a file belongs to (`keys` for `src/keys/pool/mod.rs`).
fn top_module(path: &Path) -> String {
    let rel = path.strip_prefix(SRC).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// Which top-level modules each top-level module names through `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files.iter().filter(|p| !test_only(p)) {
        let from = top_module(path);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let code = code_of(&text);
        assert!(!code.contains("use crate::{"), "{}: name each module in its own `use`", path.display());
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != from {
                graph.entry(from.clone()).or_default().insert(name);
            }
        }
    }
    graph
}

/// A path of imports that comes back to where it started, if any.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_imports_form_a_tree() {
    let graph = imports();
    assert!(graph.len() > 10, "the scan found the modules: {graph:?}");
    assert!(graph["api"].contains("relay") && graph["relay"].contains("keys"), "the scan reads imports: {graph:?}");
    if let Some(circle) = find_circle(&graph) {
        panic!("an import circle: {}", circle.join(" -> "));
    }
}

#[test]
fn a_circle_is_found_when_there_is_one() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_circle(&graph), None);
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_circle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}

#[test]
fn no_file_has_over_800_lines_of_code() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut over = Vec::new();
    for path in files.iter().filter(|p| !test_only(p)) {
        let text = std::fs::read_to_string(path).unwrap();
        let lines =
            code_of(&text).lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//")).count();
        if lines > 800 {
            over.push(format!("{} ({lines})", path.display()));
        }
    }
    assert!(files.len() > 50, "the scan found the files");
    assert!(over.is_empty(), "over 800 lines of code: {over:?}");
}

#[test]
fn the_crate_exports_no_module_and_nothing_is_unreachable() {
    let lib = std::fs::read_to_string(format!("{SRC}/lib.rs")).unwrap();
    assert!(!lib.lines().any(|l| l.starts_with("pub mod ")), "every module is private to the crate");
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let found: Vec<String> = files
        .iter()
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("unreachable!("))
        .map(|p| p.display().to_string())
        .collect();
    assert!(found.is_empty(), "unreachable! in {found:?}");
}
