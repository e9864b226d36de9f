//! Keeps ARCHITECTURE.md true, in the spirit of rust-analyzer's tidy tests:
//! the code map must list every top-level module, each module may use only
//! the `crate::` modules its row names, and the pure core does no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One row of a code-map table.
#[derive(Debug)]
struct Row {
    deps: BTreeSet<String>,
    any: bool,
    pure: bool,
}

/// Reads the code map: every table row `| `module` | job | deps |` under
/// "Pure core" or "Edges". Dependencies are the backticked names of the
/// third column, cut to their first path segment (`api::types` → `api`);
/// "everything" allows any.
fn code_map(text: &str) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    let mut pure = None;
    for line in text.lines() {
        if line.starts_with("Pure core") {
            pure = Some(true);
        } else if line.starts_with("Edges") {
            pure = Some(false);
        } else if line.starts_with("## ") && pure.is_some() && !line.contains("Code map") {
            pure = None;
        }
        let Some(is_pure) = pure else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        let deps_cell = cells[3];
        let deps = backticked(deps_cell)
            .into_iter()
            .map(|d| d.split("::").next().unwrap_or_default().to_string())
            .collect();
        rows.insert(
            name,
            Row {
                deps,
                any: deps_cell.contains("everything"),
                pure: is_pure,
            },
        );
    }
    rows
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The source files of top-level module `name`, test code excluded.
fn module_sources(src: &Path, name: &str) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let file = src.join(format!("{name}.rs"));
    if file.is_file() {
        files.push(file);
    }
    let dir = src.join(name);
    if dir.is_dir() {
        collect_rs(&dir, &mut files);
    }
    files
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            (f, without_tests(&text))
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The text before the first `#[cfg(test)]` (unit tests sit at the end of
/// a file by this project's convention), with comments removed.
fn without_tests(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("//")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level modules a source text names through `crate::`, including
/// grouped imports (`use crate::{a, b::c}`).
fn crate_uses(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                let first = item.trim().split("::").next().unwrap_or_default().trim();
                if !first.is_empty() && first != "self" {
                    out.insert(first.to_string());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// What a pure-core module must not touch: files, the environment,
/// processes, the clock, the terminal, the network, the async runtime.
const IMPURE: &[&str] = &[
    "std::fs",
    "std::env",
    "std::process",
    "std::net",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
    "IsTerminal",
    "SystemTime",
    "Instant::now",
    "tokio",
    "reqwest",
    "println!",
    "eprintln!",
    "print!",
    "eprint!",
    "rpassword",
    "indicatif",
];

fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

#[test]
fn code_map_matches_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = code_map(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap());
    let src = root.join("src");
    let modules = top_level_modules(&src);
    let mut problems = Vec::new();
    for m in &modules {
        if !map.contains_key(m) {
            problems.push(format!(
                "module `{m}` has no row in ARCHITECTURE.md's code map"
            ));
        }
    }
    for (name, row) in &map {
        if !modules.contains(name) {
            problems.push(format!(
                "ARCHITECTURE.md lists `{name}`, which src/lib.rs does not declare"
            ));
            continue;
        }
        for (file, code) in module_sources(&src, name) {
            let file = file
                .strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string();
            if !row.any {
                for dep in crate_uses(&code) {
                    if dep != *name && !row.deps.contains(&dep) {
                        problems.push(format!(
                            "{file} uses crate::{dep}, which the `{name}` row's \"may depend on\" does not list"
                        ));
                    }
                }
            }
            if row.pure {
                for bad in IMPURE {
                    if code.contains(bad) {
                        problems.push(format!(
                            "{file} is in the pure core but uses {bad}: move the I/O to an edge"
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn the_checker_finds_what_it_must() {
    let uses = crate_uses(
        "use crate::{api::types::Vm, names, secret::{Secret}};\nlet x = crate::plan::diff();",
    );
    assert_eq!(
        uses.into_iter().collect::<Vec<_>>(),
        ["api", "names", "plan", "secret"]
    );
    let map = code_map(
        "Pure core (no I/O):\n\n| module | job | may depend on |\n|---|---|---|\n| `fleet` | x | `names`, `api::types` |\n\nEdges (I/O):\n\n| `cli` | y | everything |\n",
    );
    assert!(map["fleet"].pure && !map["cli"].pure && map["cli"].any);
    assert_eq!(
        map["fleet"].deps.iter().cloned().collect::<Vec<_>>(),
        ["api", "names"]
    );
    assert_eq!(
        without_tests("a\n// crate::x\n#[cfg(test)]\nmod tests { crate::y }"),
        "a"
    );
}
