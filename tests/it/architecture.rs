//! Keeps ARCHITECTURE.md true, in the spirit of rust-analyzer's tidy tests:
//! every code-map table (the top-level ones and the world's) must list each
//! module it covers, each module may use only the modules its row names,
//! the pure core does no I/O, and no two modules import each other, even
//! through others (a circle between file modules).
//!
//! The import graph is built at the level of file modules (every `.rs`
//! file's module path, `src/world/k3s/cluster.rs` → `world::k3s::cluster`),
//! test code excluded. A path is resolved by the file's module path:
//! `crate::`, `super::` (inline modules included), `self::`, and a bare
//! child module (`model::Model` in `world/mod.rs`) all count, and a path
//! resolves to the deepest file module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One row of a code-map table.
#[derive(Debug)]
struct Row {
    /// The module the row covers, from the crate root (`world::k3s`).
    module: String,
    /// The table's root: `""` for the top-level tables, `world` for the
    /// world's. A row's names are relative to it.
    root: String,
    /// What the row may use, each cut to its first segment below the
    /// table's root (`world::kube`) or, for modules outside the root
    /// (`crate x`), below the crate (`release`).
    deps: BTreeSet<String>,
    /// "everything": any module.
    any: bool,
    /// "everything in `root`": any module inside the table's root.
    any_inside: bool,
    /// Pure core: no I/O.
    pure: bool,
}

/// Reads every table whose header is `| module | one job | may depend on |`.
/// A table whose rows name `root::x` has root `root`; its dependency names
/// are relative to that root, except those written "crate `x`". Rows under
/// "Pure core" are pure; in other tables, rows whose job starts with "pure".
fn code_map(text: &str, groups: &BTreeSet<String>) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut pure_core = false;
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut table_pure_core = false;
    let mut in_table = false;
    for line in text.lines().chain(std::iter::once("")) {
        if line.starts_with('|') {
            let cells: Vec<String> = line.split('|').map(|c| c.trim().to_string()).collect();
            if !in_table {
                in_table = cells.len() >= 5 && cells[1] == "module" && cells[3] == "may depend on";
                table.clear();
                table_pure_core = pure_core;
                continue;
            }
            if cells.len() >= 5 && cells[1].starts_with('`') {
                table.push(cells);
            }
            continue;
        }
        if in_table {
            rows.extend(table_rows(&table, table_pure_core, groups));
            in_table = false;
        }
        if line.starts_with("Pure core") {
            pure_core = true;
        } else if line.starts_with("Edges") || line.starts_with("## ") {
            pure_core = false;
        }
    }
    rows
}

fn table_rows(table: &[Vec<String>], pure_core: bool, groups: &BTreeSet<String>) -> Vec<Row> {
    let names: Vec<String> = table
        .iter()
        .map(|c| c[1].trim_matches('`').to_string())
        .collect();
    // A table is a module's own (the world's) when it has a row for that
    // module and every other row is inside it; rows named in a group
    // (`core::plan`) are top-level ones.
    let root = names
        .iter()
        .find(|r| names.iter().all(|n| within(n, r)) && names.len() > 1)
        .cloned()
        .unwrap_or_default();
    table
        .iter()
        .zip(names)
        .map(|(cells, module)| {
            let (job, cell) = (&cells[2], &cells[3]);
            let any_inside = !root.is_empty() && cell.contains(&format!("everything in `{root}`"));
            let cell = cell.replace(&format!("everything in `{root}`"), "");
            let mut deps = BTreeSet::new();
            for (before, name) in backticked(&cell) {
                let first = name.split("::").next().unwrap_or_default();
                if name == root {
                    deps.insert(root.clone());
                } else if before.ends_with("crate ") || root.is_empty() {
                    deps.insert(cut(&name, "", groups));
                } else {
                    deps.insert(format!("{root}::{first}"));
                }
            }
            Row {
                any: !any_inside && cell.contains("everything"),
                any_inside,
                pure: pure_core || (!root.is_empty() && job.starts_with("pure")),
                module,
                root: root.clone(),
                deps,
            }
        })
        .collect()
}

/// Each backticked name with the text before it.
fn backticked(s: &str) -> Vec<(String, String)> {
    let parts: Vec<&str> = s.split('`').collect();
    parts
        .iter()
        .enumerate()
        .skip(1)
        .step_by(2)
        .map(|(i, name)| (parts[i - 1].to_string(), name.to_string()))
        .collect()
}

/// One source file of the library: its module path and its code with
/// comments, string contents and test items blanked out.
struct Source {
    module: String,
    file: PathBuf,
    code: String,
}

/// Every file module of the library (`src/main.rs` is the binary; files of
/// modules declared under `#[cfg(test)]` are test code).
fn sources(src: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    let mut all = Vec::new();
    let mut test_only = BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        if rel == Path::new("main.rs") || rel == Path::new("lib.rs") {
            continue;
        }
        let mut segs: Vec<String> = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if segs.last().is_some_and(|s| s == "mod") {
            segs.pop();
        }
        let module = segs.join("::");
        let text = std::fs::read_to_string(&file).unwrap();
        let (code, test_mods) = without_tests(&blank(&text));
        for m in test_mods {
            test_only.insert(format!("{module}::{m}"));
        }
        all.push(Source { module, file, code });
    }
    all.retain(|s| {
        !test_only
            .iter()
            .any(|t| s.module == *t || s.module.starts_with(&format!("{t}::")))
    });
    all
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

/// The code with comments and the contents of string and char literals
/// replaced by spaces (line breaks kept), so text in them is not code.
fn blank(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let keep = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    while i < c.len() {
        let at = |k: usize| c.get(i + k).copied().unwrap_or('\0');
        if at(0) == '/' && at(1) == '/' {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if at(0) == '/' && at(1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(keep(c[i]));
                    i += 1;
                }
            }
        } else if at(0) == 'r' && (at(1) == '"' || at(1) == '#') && (i == 0 || !is_ident(c[i - 1]))
        {
            let hashes = (1..).take_while(|&k| at(k) == '#').count();
            if at(1 + hashes) != '"' {
                out.push(c[i]);
                i += 1;
                continue;
            }
            out.push_str(&" ".repeat(2 + hashes));
            i += 2 + hashes;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    out.push_str(&" ".repeat(1 + hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(keep(c[i]));
                i += 1;
            }
        } else if at(0) == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() {
                if c[i] == '\\' {
                    out.push(' ');
                    if let Some(&n) = c.get(i + 1) {
                        out.push(keep(n));
                    }
                    i += 2;
                } else if c[i] == '"' {
                    out.push(' ');
                    i += 1;
                    break;
                } else {
                    out.push(keep(c[i]));
                    i += 1;
                }
            }
        } else if at(0) == '\'' && (at(2) == '\'' || at(1) == '\\') {
            // A char literal ('x', '\n', '\u{7f}'); a lifetime has no
            // closing quote.
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '\'' {
                out.push(' ');
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The code without `#[cfg(test)]` items (a `mod tests;` declaration, an
/// inline test module, a test-only function or import; their line breaks
/// kept), and the names of the child modules declared under `#[cfg(test)]`.
fn without_tests(code: &str) -> (String, Vec<String>) {
    const ATTR: &str = "#[cfg(test)]";
    let mut out = String::new();
    let mut test_mods = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(ATTR) {
        out.push_str(&rest[..at]);
        let item = &rest[at + ATTR.len()..];
        let semi = item.find(';').unwrap_or(item.len());
        let brace = item.find('{').unwrap_or(item.len());
        let end = if semi < brace {
            let decl = item[..semi].trim();
            if let Some(name) = decl.rsplit_once("mod ").map(|(_, n)| n.trim()) {
                test_mods.push(name.to_string());
            }
            semi + 1
        } else {
            brace + 1 + matching_brace(&item[brace + 1..]) + 1
        };
        // The item's line breaks stay, so line numbers stay true.
        let removed = &rest[at..at + ATTR.len() + end.min(item.len())];
        out.extend(removed.chars().filter(|&c| c == '\n'));
        rest = item.get(end..).unwrap_or_default();
    }
    out.push_str(rest);
    (out, test_mods)
}

/// The index of the `}` closing a block whose `{` came just before `s`.
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

/// The paths written at the start of `s` (`a::b::{c, d::e}` gives `a::b::c`
/// and `a::b::d::e`; `self` in a group names the prefix), each as segments,
/// and how many bytes they span.
fn paths_at(s: &str) -> (Vec<Vec<String>>, usize) {
    let mut segs = Vec::new();
    let mut i = 0;
    loop {
        let ident: String = s[i..].chars().take_while(|&c| is_ident(c)).collect();
        if ident.is_empty() {
            break;
        }
        i += ident.len();
        segs.push(ident);
        let after = &s[i..];
        let trimmed = after.trim_start();
        if !trimmed.starts_with("::") {
            break;
        }
        let next = trimmed[2..].trim_start();
        let skipped = s.len() - next.len();
        if next.starts_with('*') {
            segs.push("*".to_string());
            return (vec![segs], skipped + 1);
        }
        if let Some(group) = next.strip_prefix('{') {
            let end = matching_brace(group);
            let mut out = Vec::new();
            for item in split_top_level(&group[..end]) {
                let item = item.trim();
                let (inner, _) = paths_at(item);
                for p in inner {
                    let mut full = segs.clone();
                    full.extend(p.into_iter().filter(|seg| seg != "self"));
                    out.push(full);
                }
            }
            return (out, skipped + 1 + end + 1);
        }
        i = skipped;
    }
    (vec![segs], i)
}

/// The inline modules (`mod name { ... }`) of a file's code, as byte ranges.
fn inline_modules(code: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("mod ") {
        if at > 0 && is_ident(code[..at].chars().next_back().unwrap_or(' ')) {
            continue;
        }
        let rest = &code[at + 4..];
        let name_len = rest.chars().take_while(|&c| is_ident(c)).count();
        let after = rest[name_len..].trim_start();
        if name_len > 0 && after.starts_with('{') {
            let open = code.len() - after.len();
            out.push((open, open + 1 + matching_brace(&after[1..])));
        }
    }
    out
}

/// The crate's file modules and what their `pub use`s re-export, so that
/// `crate::api::Command` resolves to `api::command`, where it is defined.
struct Index {
    modules: BTreeSet<String>,
    /// (module, name) → the module the re-exported item comes from.
    reexports: BTreeMap<(String, String), String>,
    /// module → the modules it re-exports whole (`pub use model::*`).
    globs: BTreeMap<String, Vec<String>>,
    /// module → its code, to find where a glob's item is defined.
    code: BTreeMap<String, String>,
}

impl Index {
    fn new(sources: &[Source]) -> Index {
        let mut index = Index {
            modules: sources.iter().map(|s| s.module.clone()).collect(),
            reexports: BTreeMap::new(),
            globs: BTreeMap::new(),
            code: sources
                .iter()
                .map(|s| (s.module.clone(), s.code.clone()))
                .collect(),
        };
        for s in sources {
            let here: Vec<&str> = s.module.split("::").collect();
            for (at, _) in s.code.match_indices("use ") {
                let before = s.code[..at].trim_end();
                if !(before.ends_with("pub") || before.ends_with(')')) {
                    continue;
                }
                let (paths, _) = paths_at(s.code[at + 4..].trim_start());
                for path in paths {
                    let Some(target) = index.resolve(&here, 0, &path) else {
                        continue;
                    };
                    let name = path.last().cloned().unwrap_or_default();
                    if path.last().is_some_and(|l| l == "*") {
                        index
                            .globs
                            .entry(s.module.clone())
                            .or_default()
                            .push(target);
                    } else if target != s.module {
                        index.reexports.insert((s.module.clone(), name), target);
                    }
                }
            }
        }
        index
    }

    /// Whether module `m` defines an item called `name`.
    fn defines(&self, m: &str, name: &str) -> bool {
        let Some(code) = self.code.get(m) else {
            return false;
        };
        [
            "struct", "enum", "fn", "type", "const", "static", "trait", "union",
        ]
        .iter()
        .any(|kind| {
            code.match_indices(&format!("{kind} {name}"))
                .any(|(at, m)| {
                    !code[at + m.len()..].starts_with(is_ident)
                        && (at == 0 || !code[..at].ends_with(is_ident))
                })
        })
    }

    /// The deepest file module a path names from module `here` (inside
    /// `depth` inline modules), following re-exports, or None when it names
    /// none (`std::`, a local item).
    fn resolve(&self, here: &[&str], depth: usize, path: &[String]) -> Option<String> {
        let mut base: Vec<String> = here.iter().map(|s| s.to_string()).collect();
        let mut rest = path;
        match path.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &path[1..];
            }
            Some("self") => rest = &path[1..],
            Some("super") => {
                let supers = path.iter().take_while(|s| *s == "super").count();
                for _ in 0..supers.saturating_sub(depth) {
                    base.pop();
                }
                rest = &path[supers..];
            }
            Some(first) => {
                let child = format!("{}::{first}", base.join("::"));
                if depth > 0 || path.len() < 2 || !self.modules.contains(&child) {
                    return None;
                }
            }
            None => return None,
        }
        let mut hops = 0;
        for seg in rest {
            let mut next = base.clone();
            next.push(seg.clone());
            let joined = base.join("::");
            if self.modules.contains(&next.join("::")) {
                base = next;
                continue;
            }
            let via = self
                .reexports
                .get(&(joined.clone(), seg.clone()))
                .cloned()
                .or_else(|| {
                    self.globs
                        .get(&joined)?
                        .iter()
                        .find(|g| self.defines(g, seg))
                        .cloned()
                });
            match via {
                Some(target) if hops < 8 => {
                    hops += 1;
                    base = target.split("::").map(str::to_string).collect();
                }
                _ => break,
            }
        }
        (!base.is_empty()).then(|| base.join("::"))
    }

    /// The file modules a source's code names, resolved by its module path.
    fn uses(&self, source: &Source) -> BTreeSet<String> {
        let code = &source.code;
        let here: Vec<&str> = source.module.split("::").collect();
        let inline = inline_modules(code);
        let mut out = BTreeSet::new();
        let bytes = code.as_bytes();
        let mut i = 0;
        while i < code.len() {
            let c = bytes[i] as char;
            let starts = is_ident(c)
                && !c.is_ascii_digit()
                && (i == 0 || {
                    let p = bytes[i - 1] as char;
                    !is_ident(p) && p != ':' && p != '$'
                });
            if !starts {
                i += 1;
                continue;
            }
            let (paths, len) = paths_at(&code[i..]);
            let depth = inline.iter().filter(|(a, b)| *a < i && i < *b).count();
            // A lone `super` or `crate` is a visibility (`pub(super)`).
            for path in paths.into_iter().filter(|p| p.len() > 1) {
                if let Some(target) = self.resolve(&here, depth, &path)
                    && target != source.module
                {
                    out.insert(target);
                }
            }
            i += len.max(1);
        }
        out
    }
}

/// What a pure module must not touch: files, the environment,
/// processes, the clock, the terminal, the network, the async runtime.
const IMPURE: &[&str] = &[
    "std::fs",
    "std::env",
    "std::process",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "ToSocketAddrs",
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

/// Whether module `m` is `outer` or inside it.
fn within(m: &str, outer: &str) -> bool {
    outer.is_empty() || m == outer || m.starts_with(&format!("{outer}::"))
}

/// `m` cut to its first segment below `root` (`m` itself when it is the
/// root), or below the crate when `m` is outside `root`: a top-level
/// module, which in a group is two segments (`core::plan`).
fn cut(m: &str, root: &str, groups: &BTreeSet<String>) -> String {
    if within(m, root) && !root.is_empty() {
        let below = m[root.len()..].trim_start_matches("::");
        match below.split("::").next() {
            Some(first) if !first.is_empty() => format!("{root}::{first}"),
            _ => root.to_string(),
        }
    } else {
        let mut segs = m.split("::");
        let first = segs.next().unwrap_or_default();
        match segs.next() {
            Some(second) if groups.contains(first) => format!("{first}::{second}"),
            _ => first.to_string(),
        }
    }
}

/// The groups of the top level (`src/base/`, `src/core/`, ...): top-level
/// modules that only declare their children (`pub mod names;`). A group is
/// a directory, not a layer of its own: its children get the rows.
fn groups(sources: &[Source]) -> BTreeSet<String> {
    sources
        .iter()
        .filter(|s| !s.module.contains("::"))
        .filter(|s| {
            s.code.split(';').all(|item| {
                let words: Vec<&str> = item.split_whitespace().collect();
                matches!(words.as_slice(), [] | ["mod", _] | ["pub", "mod", _])
            })
        })
        .map(|s| s.module.clone())
        .collect()
}

/// Everything the code map says that the code does not hold.
fn map_problems(rows: &[Row], sources: &[Source], root_dir: &Path) -> Vec<String> {
    let index = Index::new(sources);
    let groups = groups(sources);
    let modules = &index.modules;
    let mut problems = Vec::new();
    let roots: BTreeSet<&str> = rows.iter().map(|r| r.root.as_str()).collect();
    for root in &roots {
        let table: Vec<&Row> = rows.iter().filter(|r| r.root == *root).collect();
        let children: BTreeSet<String> = modules
            .iter()
            .filter(|m| within(m, root) && *m != root && !groups.contains(*m))
            .map(|m| cut(m, root, &groups))
            .collect();
        for child in &children {
            if !table.iter().any(|r| r.module == *child) {
                problems.push(format!(
                    "module `{child}` has no row in ARCHITECTURE.md's code map"
                ));
            }
        }
        for row in &table {
            if !modules.iter().any(|m| within(m, &row.module)) {
                problems.push(format!(
                    "ARCHITECTURE.md lists `{}`, which is not a module of src/",
                    row.module
                ));
            }
        }
        let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for source in sources.iter().filter(|s| within(&s.module, root)) {
            let Some(row) = table
                .iter()
                .filter(|r| within(&source.module, &r.module))
                .max_by_key(|r| r.module.len())
            else {
                continue;
            };
            let used_by_row = used.entry(row.module.clone()).or_default();
            let file = source
                .file
                .strip_prefix(root_dir)
                .unwrap_or(&source.file)
                .display()
                .to_string();
            for used in index.uses(source) {
                // A module may use what an enclosing module defines
                // (`super::Timings`): see `import_graph`.
                if row.any || within(&used, &row.module) || within(&source.module, &used) {
                    continue;
                }
                if row.any_inside && within(&used, root) {
                    continue;
                }
                let dep = cut(&used, root, &groups);
                used_by_row.insert(dep.clone());
                if !row.deps.contains(&dep) {
                    let written = match dep.strip_prefix(&format!("{root}::")) {
                        Some(inner) if !root.is_empty() => format!("`{inner}`"),
                        _ if dep == *root => format!("`{dep}`"),
                        _ if !root.is_empty() => format!("crate `{dep}`"),
                        _ => format!("`{dep}`"),
                    };
                    problems.push(format!(
                        "{file} uses {used}, which the `{}` row's \"may depend on\" does not list (as {written})",
                        row.module
                    ));
                }
            }
            if row.pure {
                for bad in IMPURE {
                    if source.code.contains(bad) {
                        problems.push(format!(
                            "{file} is pure (`{}`) but uses {bad}: move the I/O to an edge",
                            row.module
                        ));
                    }
                }
            }
        }
        for row in &table {
            let none = BTreeSet::new();
            let used = used.get(&row.module).unwrap_or(&none);
            for dep in row.deps.difference(used) {
                problems.push(format!(
                    "the `{}` row's \"may depend on\" lists `{dep}`, which it does not use",
                    row.module
                ));
            }
        }
    }
    problems
}

/// The import circles between file modules: every strongly connected
/// component of more than one module (Tarjan), members sorted.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// Who uses whom among the file modules, leaving out the uses between a
/// module and the modules it encloses in one direction: `up` leaves out a
/// module's uses of what an enclosing module defines (`super::Timings`),
/// otherwise a parent's uses of its own children are left out. A parent
/// declares its children and shares its items with them: that is Rust's
/// module tree, not a layering choice, so a circle made only of a parent
/// and its child is none.
fn import_graph(sources: &[Source], up: bool) -> BTreeMap<String, BTreeSet<String>> {
    let index = Index::new(sources);
    sources
        .iter()
        .map(|s| {
            let uses = index.uses(s).into_iter();
            let uses = uses
                .filter(|u| {
                    if up {
                        !within(&s.module, u)
                    } else {
                        !within(u, &s.module)
                    }
                })
                .collect();
            (s.module.clone(), uses)
        })
        .collect()
}

/// The circles of both graphs of `import_graph`, those sharing a module
/// merged: any circle that does not need both a child-to-parent and a
/// parent-to-child use.
fn import_circles(sources: &[Source]) -> Vec<Vec<String>> {
    let mut merged: Vec<BTreeSet<String>> = Vec::new();
    for circle in [true, false]
        .into_iter()
        .flat_map(|up| circles(&import_graph(sources, up)))
    {
        let mut set: BTreeSet<String> = circle.into_iter().collect();
        merged.retain(|other| {
            if other.is_disjoint(&set) {
                true
            } else {
                set.extend(other.iter().cloned());
                false
            }
        });
        merged.push(set);
    }
    let mut out: Vec<Vec<String>> = merged
        .into_iter()
        .map(|s| s.into_iter().collect())
        .collect();
    out.sort();
    out
}

#[test]
fn code_map_matches_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = sources(&root.join("src"));
    let rows = code_map(
        &std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap(),
        &groups(&sources),
    );
    let problems = map_problems(&rows, &sources, root);
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn no_import_circles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = import_circles(&sources(&root.join("src")));
    let text: Vec<String> = found
        .iter()
        .map(|c| format!("import circle: {}", c.join(" ⇄ ")))
        .collect();
    assert!(
        found.is_empty(),
        "\n{}\nmove what they share to a module each can see\n",
        text.join("\n")
    );
}

#[test]
fn the_checker_finds_what_it_must() {
    let (paths, _) = paths_at("crate::{api::types::Vm, names, secret::{self, Secret}, m::*};");
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        [
            "crate::api::types::Vm",
            "crate::names",
            "crate::secret",
            "crate::secret::Secret",
            "crate::m::*"
        ]
    );
    let none = BTreeSet::new();
    let map = code_map(
        "Pure core (no I/O):\n\n| module | one job | may depend on |\n|---|---|---|\n| `fleet` | x | `names`, `api::types` |\n\nEdges (I/O):\n\n| module | one job | may depend on |\n|---|---|---|\n| `cli` | y | everything |\n\n## World\n\n| module | one job | may depend on |\n|---|---|---|\n| `world` | e | everything in `world`; crate `names` |\n| `world::model` | pure state | `k3s`, crate `release` |\n",
        &none,
    );
    let by: BTreeMap<&str, &Row> = map.iter().map(|r| (r.module.as_str(), r)).collect();
    assert!(by["fleet"].pure && !by["cli"].pure && by["cli"].any);
    assert_eq!(
        by["fleet"].deps.iter().cloned().collect::<Vec<_>>(),
        ["api", "names"]
    );
    assert!(by["world"].any_inside && !by["world"].any && !by["world"].pure);
    assert!(by["world::model"].pure && by["world::model"].root == "world");
    assert_eq!(
        by["world::model"].deps.iter().cloned().collect::<Vec<_>>(),
        ["release", "world::k3s"]
    );

    let (code, test_mods) = without_tests(&blank(
        "a // crate::x\n\"crate::s\"\n#[cfg(test)]\nmod tests;\n#[cfg(test)]\nmod t { crate::y }\nb",
    ));
    assert!(!code.contains("crate::"), "{code}");
    assert!(code.contains('a') && code.contains('b'));
    assert_eq!(test_mods, ["tests"]);

    let bare = |m: &str, code: &str| Source {
        module: m.into(),
        file: PathBuf::from(format!("{m}.rs")),
        code: code.into(),
    };
    let index = Index::new(&[
        bare("world", "pub use model::Model; pub(crate) fn f() {}"),
        bare("world::k3s", ""),
        bare("world::k3s::cluster", ""),
        bare("world::model", ""),
        bare("release", ""),
    ]);
    let source = bare(
        "world::k3s::cluster",
        "use super::super::model::Vm; use crate::release::R; mod m { use super::Local; }\npub(super) fn g() {}",
    );
    assert_eq!(
        index.uses(&source).into_iter().collect::<Vec<_>>(),
        ["release", "world::model"]
    );
    let parent = bare("world", "use model::Model; fn f() { k3s::cluster::join() }");
    assert_eq!(
        index.uses(&parent).into_iter().collect::<Vec<_>>(),
        ["world::k3s::cluster", "world::model"]
    );
    let through_parent = bare("world::k3s", "use crate::world::Model; use super::Timings;");
    assert_eq!(
        index.uses(&through_parent).into_iter().collect::<Vec<_>>(),
        ["world", "world::model"]
    );
    let rows = code_map(
        "| module | one job | may depend on |\n|---|---|---|\n| `world` | e | everything in `world` |\n| `world::k3s` | k | `model` |\n| `world::model` | pure m | nothing |\n",
        &none,
    );
    let sources = vec![
        bare("world::k3s", "use crate::release::R; use super::model::M;"),
        bare("world::model", "use super::k3s::State; std::fs::read()"),
        bare("world", "use k3s::Unit; use model::Model;"),
        bare("release", ""),
    ];
    let problems = map_problems(&rows, &sources, Path::new(""));
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("uses release") && problems[0].contains("crate `release`"));
    assert!(problems[1].contains("uses world::k3s") && problems[1].contains("(as `k3s`)"));
    assert!(problems[2].contains("is pure"));
    assert_eq!(import_circles(&sources), [["world::k3s", "world::model"]]);
    // Only through a parent's own code: `up` alone finds it, `down` alone
    // does not.
    let through_parent = vec![
        bare("world::k3s", "use super::model::M;"),
        bare("world::k3s::state", "use super::Unit;"),
        bare("world::model", "use super::k3s::state::S;"),
    ];
    assert!(circles(&import_graph(&through_parent, true)).is_empty());
    assert_eq!(
        import_circles(&through_parent),
        [["world::k3s", "world::k3s::state", "world::model"]]
    );
}

/// The longest a function in src/ may be, in lines from its `fn` to its
/// closing brace (issue 19): past that, a function holds several jobs.
const MAX_FN_LINES: usize = 120;

/// The longest a file may be where people live most (issue 19): the
/// apply, diff and status modules, split by job.
const MAX_FILE_LINES: usize = 600;
const FILE_LIMITED: &[&str] = &["src/apply", "src/core/plan/diff", "src/core/status"];

/// Every function with a body in `code` (comments, strings and test items
/// already blanked): its name, the 1-based line of its `fn` and its length
/// in lines, `fn` line to closing brace. A nested function counts on its
/// own and inside its parent.
fn fn_lengths(code: &str) -> Vec<(String, usize, usize)> {
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (at, _) in code.match_indices("fn ") {
        if at > 0 && is_ident(code[..at].chars().next_back().unwrap_or(' ')) {
            continue;
        }
        let rest = &code[at + 3..];
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|&c| is_ident(c))
            .collect();
        if name.is_empty() {
            continue; // `fn(u8) -> u8`, a function pointer type
        }
        // The body opens at the first `{` outside the signature's brackets
        // (`[u8; 4]`); a `;` there first means no body (a trait's method).
        let mut depth = 0i32;
        let mut open = None;
        for (i, c) in rest.char_indices() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                ';' if depth == 0 => break,
                '{' if depth == 0 => {
                    open = Some(at + 3 + i);
                    break;
                }
                _ => {}
            }
        }
        let Some(open) = open else { continue };
        let close = open + 1 + matching_brace(&code[open + 1..]);
        out.push((name, line_of(at), line_of(close) - line_of(at) + 1));
    }
    out
}

/// Every function of src/ (tests aside) over `MAX_FN_LINES`, as
/// `file:line fn name (length)`, longest first.
fn long_functions(root: &Path) -> Vec<(usize, String)> {
    let src = root.join("src");
    let mut files: Vec<(PathBuf, String)> = sources(&src)
        .into_iter()
        .map(|s| (s.file, s.code))
        .collect();
    for binary_or_root in ["main.rs", "lib.rs"] {
        let file = src.join(binary_or_root);
        let text = std::fs::read_to_string(&file).unwrap();
        files.push((file, without_tests(&blank(&text)).0));
    }
    let mut long = Vec::new();
    for (file, code) in files {
        let file = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for (name, line, len) in fn_lengths(&code) {
            if len > MAX_FN_LINES {
                long.push((len, format!("{file}:{line} fn {name} ({len} lines)")));
            }
        }
    }
    long.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    long
}

#[test]
fn no_function_over_120_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let long: Vec<String> = long_functions(root).into_iter().map(|(_, s)| s).collect();
    assert!(
        long.is_empty(),
        "\n{}\nsplit each by job: a function of at most {MAX_FN_LINES} lines\n",
        long.join("\n")
    );
}

#[test]
fn no_file_over_600_lines_in_apply_diff_status() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut long = Vec::new();
    for dir in FILE_LIMITED {
        let mut files = Vec::new();
        collect_rs(&root.join(dir), &mut files);
        assert!(
            !files.is_empty(),
            "{dir} holds no .rs file: update FILE_LIMITED"
        );
        for file in files {
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            if lines > MAX_FILE_LINES {
                let file = file.strip_prefix(root).unwrap_or(&file).display();
                long.push(format!("{file}: {lines} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "\n{}\nsplit each by job: at most {MAX_FILE_LINES} lines\n",
        long.join("\n")
    );
}

#[test]
fn function_lengths_are_counted_from_fn_to_closing_brace() {
    let code = blank(
        "trait T { fn decl(&self); }\nfn f(x: [u8; 4])\n    -> u8\n{\n    let s = \"}\";\n    fn inner() {}\n    x[0]\n}\n",
    );
    assert_eq!(
        fn_lengths(&code),
        [("f".to_string(), 2, 7), ("inner".to_string(), 6, 1)]
    );
    let (without, _) = without_tests("fn a() {}\n#[cfg(test)]\nmod t {\n}\nfn b() {\n}\n");
    assert_eq!(
        fn_lengths(&without),
        [("a".to_string(), 1, 1), ("b".to_string(), 5, 2)]
    );
}

#[test]
fn grouped_modules_are_top_level_rows() {
    let bare = |m: &str, code: &str| Source {
        module: m.into(),
        file: PathBuf::from(format!("{m}.rs")),
        code: code.into(),
    };
    let sources = vec![
        bare("base", "pub mod names;\npub mod text;\n"),
        bare("base::names", ""),
        bare("base::text", ""),
        bare("core", "pub mod plan;"),
        bare("core::plan", "use crate::base::names::X;"),
        bare("core::plan::spec", "use crate::base::text::Y;"),
        bare("cli", "pub mod x; fn f() {}"),
    ];
    let groups = groups(&sources);
    assert_eq!(groups.iter().cloned().collect::<Vec<_>>(), ["base", "core"]);
    assert_eq!(cut("core::plan::spec", "", &groups), "core::plan");
    assert_eq!(cut("cli", "", &groups), "cli");
    let rows = code_map(
        "Pure core (no I/O):\n\n| module | one job | may depend on |\n|---|---|---|\n| `base::names` | n | nothing |\n| `base::text` | t | nothing |\n| `core::plan` | p | `base::names` |\n",
        &groups,
    );
    assert!(rows.iter().all(|r| r.root.is_empty() && r.pure));
    let problems = map_problems(&rows, &sources, Path::new(""));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].contains("module `cli` has no row"),
        "{problems:#?}"
    );
    assert!(
        problems[1].contains("uses base::text") && problems[1].contains("(as `base::text`)"),
        "{problems:#?}"
    );
}
