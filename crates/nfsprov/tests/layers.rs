//! The import rules of ARCHITECTURE.md ("Import rules"), checked on the source: every
//! `crate::x` path (and each name of a `use crate::{x, y}` group) in `src/<module>/**` or
//! `src/<module>.rs` is an edge `module -> x`. The test fails, naming the edge and its file,
//! when an edge is not in the module's row of the table, when a module has no row, or when the
//! edges form a cycle. Fast tier: it reads files only.
//!
//! Not seen: paths through `super::` (inside this crate they stay within one module) and
//! fully qualified `::nfsprov::` paths (the library does not name itself).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges the table does not allow that are still there, each with the change that removes it.
/// Cycles through them are not reported.
const TEMPORARY: &[(&str, &str, &str)] = &[];

type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The source with comments, string and char literals blanked out (so a path in a doc comment
/// or a message is not an import), line breaks kept.
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            // Raw string r"..." / r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                blank(&mut out, b[j]);
                j += 1;
            }
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a), kept.
            if next == Some('\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules a source file names through `crate::`.
fn imports(src: &str) -> BTreeSet<String> {
    let code = code_only(src);
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| is_ident(c) || c == '$') {
            continue;
        }
        let rest_trim = rest.trim_start();
        if let Some(group) = rest_trim.strip_prefix('{') {
            // `use crate::{a::X, b, c::{..}}`: the first name of each top-level item.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.extend(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.extend(first_ident(&item));
        } else {
            found.extend(first_ident(rest_trim));
        }
    }
    found
}

fn first_ident(s: &str) -> Option<String> {
    let id: String = s
        .trim_start()
        .chars()
        .take_while(|c| is_ident(*c))
        .collect();
    (!id.is_empty()).then_some(id)
}

/// `module -> (imported module -> a file that imports it)` for the crate under `src`.
fn graph(src: &Path) -> Graph {
    let mut g = Graph::new();
    let mut files = Vec::new();
    collect(src, &mut files);
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        // Crate roots: `crate::` in main.rs is the binary, lib.rs only declares modules.
        if module == "main" || module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let edges = g.entry(module.clone()).or_default();
        for to in imports(&text) {
            if to != module {
                edges.entry(to).or_insert_with(|| rel.display().to_string());
            }
        }
    }
    g
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The "Import rules" table of ARCHITECTURE.md: rows "| `module` | `a`, `b` |" (or "—").
fn allowed(architecture: &str) -> BTreeMap<String, BTreeSet<String>> {
    let text = format!("\n{architecture}");
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Import rules"))
        .expect("ARCHITECTURE.md has an \"## Import rules\" section");
    let mut rules = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        let uses = cells[2]
            .split(',')
            .map(|u| u.trim().trim_matches('`').to_string())
            .filter(|u| !u.is_empty() && u != "—")
            .collect();
        rules.insert(name, uses);
    }
    assert!(!rules.is_empty(), "the Import rules table has no rows");
    rules
}

/// Every import the rules do not allow, every module without a rule, and every cycle (edges
/// in `temporary` are allowed and left out of the cycle search).
fn problems(
    g: &Graph,
    rules: &BTreeMap<String, BTreeSet<String>>,
    temporary: &[(&str, &str, &str)],
) -> Vec<String> {
    let mut out = Vec::new();
    let is_temporary = |a: &str, b: &str| temporary.iter().any(|(x, y, _)| *x == a && *y == b);
    for (module, edges) in g {
        let Some(may) = rules.get(module) else {
            out.push(format!(
                "module `{module}` has no row in ARCHITECTURE.md's Import rules: add one"
            ));
            continue;
        };
        for (to, file) in edges {
            if !g.contains_key(to) {
                out.push(format!("{file}: `crate::{to}` is not a module"));
            } else if !may.contains(to) && !is_temporary(module, to) {
                out.push(format!(
                    "{file}: `{module}` may not use `{to}` (ARCHITECTURE.md, Import rules: {module} may use {may:?})"
                ));
            }
        }
    }
    for (a, b, why) in temporary {
        if !g.get(*a).is_some_and(|e| e.contains_key(*b)) {
            out.push(format!(
                "the temporary edge {a} -> {b} ({why}) is gone: remove it from TEMPORARY"
            ));
        }
    }
    // Cycles: depth-first search over the remaining edges; a back edge closes one.
    fn visit(
        g: &Graph,
        n: &str,
        skip: &dyn Fn(&str, &str) -> bool,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if done.contains(n) {
            return;
        }
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_string());
            out.push(format!("import cycle: {}", cycle.join(" -> ")));
            return;
        }
        path.push(n.to_string());
        for to in g.get(n).into_iter().flat_map(|e| e.keys()) {
            if !skip(n, to) {
                visit(g, to, skip, path, done, out);
            }
        }
        path.pop();
        done.insert(n.to_string());
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        visit(g, n, &is_temporary, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

#[test]
fn imports_follow_the_rules_in_architecture_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("../../ARCHITECTURE.md")).unwrap();
    let g = graph(&root.join("src"));
    assert!(g.len() > 10, "modules found: {:?}", g.keys());
    let found = problems(&g, &allowed(&architecture), TEMPORARY);
    assert!(found.is_empty(), "\n{}", found.join("\n"));
}

#[test]
fn a_forbidden_import_and_a_cycle_are_named() {
    let rules = allowed(
        "## Import rules\n\n| module | may use |\n|---|---|\n| `model` | — |\n| `datastore` | `model` |\n\
         | `a` | `b` |\n| `b` | `a` |\n",
    );
    let mut g = Graph::new();
    let source = r##"
        //! Mentions crate::backend in a comment, and in a string: "crate::api".
        use crate::{model::{Volume, VolumeId}, backend::Kind};
        const S: &str = r#"crate::api"#;
        fn f<'a>(c: char) -> bool { c == '"' && crate::model::x() }
    "##;
    let edges = imports(source);
    assert_eq!(
        edges,
        BTreeSet::from(["backend".to_string(), "model".to_string()])
    );
    for (module, to) in [
        ("datastore", "backend"),
        ("datastore", "model"),
        ("model", "datastore"),
        ("backend", "model"),
        ("a", "b"),
        ("b", "a"),
    ] {
        g.entry(module.into())
            .or_default()
            .insert(to.into(), format!("{module}.rs"));
    }
    let found = problems(&g, &rules, &[]);
    let has = |s: &str| found.iter().any(|p| p.contains(s));
    assert!(
        has("datastore.rs: `datastore` may not use `backend`"),
        "{found:#?}"
    );
    assert!(
        has("model.rs: `model` may not use `datastore`"),
        "{found:#?}"
    );
    assert!(has("module `backend` has no row"), "{found:#?}");
    assert!(has("import cycle: a -> b -> a"), "{found:#?}");
    assert!(
        has("import cycle: model -> datastore -> model"),
        "{found:#?}"
    );
    assert!(!has("`datastore` may not use `model`"), "{found:#?}");
}
