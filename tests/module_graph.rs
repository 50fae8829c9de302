//! The crate's file-level import graph has no cycles: every `use crate::…`, `use
//! super::…` and `crate::…`/`super::…` path in a file of `src/` is an edge to the file
//! that defines the module it names, and the graph of those edges must be acyclic
//! (tests excluded, as in `../shared/tools/rust_shape.py`). A cycle is reported with the
//! files on it, so the fix (move the shared item down) is plain.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`["dns", "tcp"]`) → the file's code without comments, strings and tests.
type Modules = BTreeMap<Vec<String>, String>;

fn read_modules(src: &Path) -> Modules {
    let mut modules = Modules::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let mut parts: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read a source file");
            modules.insert(parts, drop_tests(&strip(&text)));
        }
    }
    modules
}

/// Blank out comments, strings and char literals (keeping newlines).
fn strip(code: &str) -> String {
    let bytes = code.as_bytes();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let end = if rest.starts_with("//") {
            i + rest.find('\n').unwrap_or(rest.len())
        } else if rest.starts_with("/*") {
            i + rest.find("*/").map_or(rest.len(), |e| e + 2)
        } else if let Some(raw) = rest.strip_prefix("r#\"") {
            i + raw.find("\"#").map_or(rest.len(), |e| e + 5)
        } else if rest.starts_with('"') {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if let Some(len) = char_literal(rest) {
            i + len
        } else {
            out.push(bytes[i] as char);
            i += 1;
            continue;
        };
        let end = end.min(bytes.len());
        out.extend(
            code[i..end]
                .chars()
                .map(|c| if c == '\n' { '\n' } else { ' ' }),
        );
        i = end;
    }
    out
}

/// The length of a char literal at the start of `text` (`'a'`, `'\n'`), not a lifetime.
fn char_literal(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    if b.first() != Some(&b'\'') {
        return None;
    }
    if b.get(1) == Some(&b'\\') {
        return text[2..].find('\'').map(|e| e + 3);
    }
    let c = text[1..].chars().next()?;
    (text[1 + c.len_utf8()..].starts_with('\'')).then_some(2 + c.len_utf8())
}

/// Blank out `#[cfg(test)] mod … { … }` blocks.
fn drop_tests(code: &str) -> String {
    let mut code = code.to_string();
    while let Some(start) = code.find("#[cfg(test)]") {
        let Some(open) = code[start..].find('{').map(|o| start + o) else {
            break;
        };
        let header = &code[start..open];
        if !header.contains("mod ") {
            code.replace_range(start..start + "#[cfg(test)]".len(), &" ".repeat(12));
            continue;
        }
        let mut depth = 0;
        let mut end = code.len();
        for (k, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        let blank: String = code[start..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        code.replace_range(start..end, &blank);
    }
    code
}

/// The module a path like `crate::dns::tcp::Thing` or `super::wire` names, seen from
/// `from`: the longest prefix that is a file.
fn resolve(from: &[String], path: &str, modules: &Modules) -> Option<Vec<String>> {
    let parts: Vec<&str> = path.split("::").collect();
    let (mut base, rest): (Vec<String>, &[&str]) = match parts[0] {
        "crate" => (Vec::new(), &parts[1..]),
        "super" | "self" => (from.to_vec(), &parts[..]),
        _ => return None,
    };
    let mut rest = rest;
    while let Some(&first) = rest.first() {
        match first {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    let mut best = None;
    for k in 0..=rest.len() {
        let mut candidate = base.clone();
        candidate.extend(rest[..k].iter().map(|s| s.to_string()));
        if modules.contains_key(&candidate) {
            best = Some(candidate);
        }
    }
    best
}

/// Every path in a `use` item, with one level of braces expanded per round.
fn use_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for item in code.split("use ").skip(1) {
        let Some(end) = item.find(';') else { continue };
        let body = without_renames(&item[..end]);
        let mut stack = vec![body];
        while let Some(b) = stack.pop() {
            let Some(open) = b.find("::{") else {
                paths.push(b);
                continue;
            };
            let (prefix, inner) = (&b[..open], &b[open + 3..b.len().saturating_sub(1)]);
            let mut depth = 0;
            let mut current = String::new();
            for c in inner.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        stack.push(format!("{prefix}::{current}"));
                        current.clear();
                        continue;
                    }
                    _ => {}
                }
                current.push(c);
            }
            if !current.is_empty() {
                stack.push(format!("{prefix}::{current}"));
            }
            paths.push(prefix.to_string());
        }
    }
    paths
}

/// A `use` item's text without whitespace and without its `as name` renames.
fn without_renames(item: &str) -> String {
    let mut out = String::new();
    let mut tokens = item.split_whitespace();
    while let Some(token) = tokens.next() {
        if token == "as" {
            // Keep only what closes the renamed item (`,`, `}`).
            let next = tokens.next().unwrap_or("");
            out.extend(next.chars().filter(|c| matches!(c, ',' | '}')));
        } else {
            out.push_str(token);
        }
    }
    out
}

/// `crate::a::b` and `super::c` paths written anywhere in the code.
fn inline_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(start) {
            let at = from + found;
            let before = code[..at].chars().next_back();
            from = at + start.len();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let len = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(code.len() - at);
            paths.push(code[at..at + len].trim_end_matches(':').to_string());
        }
    }
    paths
}

fn edges(modules: &Modules) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut edges = BTreeMap::new();
    for (module, code) in modules {
        let targets: BTreeSet<Vec<String>> = use_paths(code)
            .iter()
            .chain(&inline_paths(code))
            .filter_map(|p| resolve(module, p, modules))
            .filter(|t| t != module)
            .collect();
        edges.insert(module.clone(), targets);
    }
    edges
}

/// The strongly connected components with more than one file (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.edges[v] {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(if w.is_empty() {
                    "lib".to_string()
                } else {
                    w.join("/")
                });
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn modules_from(files: &[(&str, &str)]) -> Modules {
    files
        .iter()
        .map(|(path, code)| {
            let parts = path.split('/').map(str::to_string).collect();
            (parts, drop_tests(&strip(code)))
        })
        .collect()
}

#[test]
fn src_has_no_import_cycles() {
    let modules = read_modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(modules.len() > 20, "read {} modules", modules.len());
    let found = cycles(&edges(&modules));
    assert!(
        found.is_empty(),
        "import cycles in src/ (move what the files share into a module below them):\n{}",
        found
            .iter()
            .map(|c| format!("  {}", c.join(" <-> ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_check_finds_cycles_of_every_spelling() {
    // `use super::` from a child to its parent, and the parent naming the child inline.
    let through_super = modules_from(&[
        (
            "dns",
            "use super::config::X; fn f() { crate::dns::wire::g() }",
        ),
        ("dns/wire", "use super::Handler;"),
        ("config", ""),
    ]);
    assert_eq!(
        cycles(&edges(&through_super)),
        vec![vec!["dns", "dns/wire"]]
    );
    // A braced `use crate::{a::b, c}` closing a three-file loop.
    let braced = modules_from(&[
        ("a", "use crate::{b::{self, X}, c};"),
        ("b", "pub fn f() { crate::c::g(); }"),
        ("c", "use crate::a as top;"),
    ]);
    assert_eq!(cycles(&edges(&braced)), vec![vec!["a", "b", "c"]]);
    // Comments, strings and test modules are not imports.
    let quiet = modules_from(&[
        ("a", "// use crate::b;\nconst S: &str = \"crate::b::x\";\n#[cfg(test)]\nmod tests { use crate::b; }"),
        ("b", "use crate::a;"),
    ]);
    assert!(cycles(&edges(&quiet)).is_empty());
}
