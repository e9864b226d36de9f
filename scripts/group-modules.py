#!/usr/bin/env python3
"""Groups src/'s top-level modules so that `ls src` shows the architecture
(issue 19): `base/` the pure leaves, `core/` the pure core, `edges/` the
I/O; `engine`, `apply`, `ui`, `cli`, `emulator` and `world` stay where they
are (see ARCHITECTURE.md, "Why this grouping").

Re-runnable: run it from the repository root on a tree where some modules
are grouped already and some code (a branch merged since) still uses the
old paths; it moves what is not moved yet and rewrites only the old paths
left:

  * `git mv src/x.rs src/g/x.rs` (or the directory `src/x/`), `pub mod x;`
    moved from src/lib.rs into src/g/mod.rs;
  * `crate::x`, `$crate::x`, `exedev_k8s::x` and the items of
    `crate::{x, ...}` in src/, tests/ and benches/ → `crate::g::x`; a
    top-level module's own `super::y` → `crate::g::y`;
  * `include_str!`/`include_bytes!` paths that leave src/, one `../` more;
  * insta snapshots (`exedev_k8s__x__*.snap` → `exedev_k8s__g__x__*.snap`)
    and proptest regression files follow their module;
  * `src/x/`, `src/x.rs` in the docs, tests and benches; the code map's
    module names in ARCHITECTURE.md's tables (`x` → `g::x`).

A top-level module it does not know stops it before any change, named:
add it to GROUPS or STAY below, then run it again. So does a module found
both at its old and its new place.

  python3 scripts/group-modules.py          # apply
  python3 scripts/group-modules.py --check  # only say what it would move
"""

import os
import re
import subprocess
import sys

# Where each top-level module goes. One place: the architecture test reads
# the groups from the code, ARCHITECTURE.md says why.
GROUPS = {
    "base": [
        # Pure leaves: each depends on nothing or on other leaves.
        "hint", "k3s_flags", "limits", "names", "node_labels", "release",
        "secret", "shellwords", "sizes", "text", "yaml_guard",
    ],
    "core": [
        # The pure core: the fleet, the plan, the scripts, the status join.
        "api", "bootstrap", "check", "fleet", "plan", "restore", "rollout",
        "status", "tailnet_check", "token",
    ],
    "edges": [
        # I/O: exe.dev, SSH, the Kubernetes API, the filesystem.
        "channel", "client", "cluster", "cluster_secrets", "credentials",
        "kubeaccess", "lease", "observe", "probe", "remote", "snapshot",
        "ssh", "upgrade", "workspace",
    ],
}
# Modules that stay at the top level: the layers that use the groups.
STAY = ["apply", "cli", "emulator", "engine", "ui", "world"]

GROUP_DOCS = {
    "base": "Pure leaves: rules and formats that depend on nothing or on other\n"
    "//! leaves (names, sizes, releases, k3s's flags, shell words, text).",
    "core": "The pure core: the fleet, the API's catalogue, the plan, the\n"
    "//! bootstrap scripts, the status join. No I/O.",
    "edges": "The edges: every way out of the process (exe.dev's `/exec`, SSH,\n"
    "//! the Kubernetes API, channel servers, the filesystem).",
}

CRATE = "exedev_k8s"
CHECK = "--check" in sys.argv[1:]
MOVES = {m: g for g, ms in GROUPS.items() for m in ms}


def die(msg):
    print(f"group-modules: {msg}", file=sys.stderr)
    sys.exit(1)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def git(*args):
    subprocess.run(["git", *args], check=True)


def lib_modules(lib):
    """The top-level modules src/lib.rs declares."""
    return re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", lib, re.M)


def place(m):
    """Where module `m` lives: ('old', path), ('new', path), both, or none."""
    found = []
    for base, tag in ((f"src/{m}", "old"), (f"src/{MOVES[m]}/{m}", "new")):
        for p in (base + ".rs", base):
            if os.path.exists(p):
                found.append((tag, p))
    return found


def plan_moves():
    lib = read("src/lib.rs")
    declared = lib_modules(lib)
    unknown = [m for m in declared if m not in MOVES and m not in STAY and m not in GROUPS]
    if unknown:
        die(
            "top-level modules this script does not place: "
            + ", ".join(unknown)
            + "\n  add each to GROUPS (base: pure leaf, core: pure core, edges: I/O) or STAY"
            " in scripts/group-modules.py, then run it again; nothing was changed"
        )
    # A group's own children not yet in the table (new files under
    # src/core/, say) are fine: they are grouped already.
    moves = []
    for m, g in sorted(MOVES.items()):
        found = place(m)
        tags = {t for t, _ in found}
        if tags == {"old", "new"}:
            adopt_strays(m, g)
            continue
        if tags == {"old"}:
            moves.append((m, g, [p for _, p in found]))
    return moves


# Files adopt_strays moved: like a moved module's, their include paths
# climb one level more.
ADOPTED = set()


def adopt_strays(m, g):
    """A module already moved whose old directory holds files again (a
    branch merged since added them there): each goes to its place in the
    new directory, unless a file is there already."""
    old, new = f"src/{m}", f"src/{g}/{m}"
    if not (os.path.isdir(old) and os.path.isdir(new)):
        die(f"module {m} is both at src/{m} and at src/{g}/{m}: merge them by hand first")
    for d, _, fs in os.walk(old):
        for f in fs:
            src = os.path.join(d, f)
            dst = os.path.join(new, os.path.relpath(src, old))
            if os.path.exists(dst):
                die(f"{src} and {dst} both exist: merge them by hand first")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            print(f"move {src} → {dst}")
            if CHECK:
                continue
            if dst.endswith(".rs"):
                ADOPTED.add(dst)
            if subprocess.run(["git", "mv", src, dst], capture_output=True).returncode != 0:
                os.rename(src, dst)  # not tracked yet
    if not CHECK:
        for d, _, _ in sorted(os.walk(old), reverse=True):
            os.rmdir(d)


def do_moves(moves):
    lib = read("src/lib.rs")
    for m, g, paths in moves:
        os.makedirs(f"src/{g}", exist_ok=True)
        for p in paths:
            git("mv", p, f"src/{g}/" + os.path.basename(p))
        lib = re.sub(rf"^[ \t]*(?:pub(?:\([^)]*\))?[ \t]+)?mod[ \t]+{m}[ \t]*;\n", "", lib, flags=re.M)
    for g, members in GROUPS.items():
        present = [m for m in members if os.path.exists(f"src/{g}/{m}.rs") or os.path.exists(f"src/{g}/{m}")]
        if not present:
            continue
        mod_rs = f"src/{g}/mod.rs"
        have = lib_modules(read(mod_rs)) if os.path.exists(mod_rs) else []
        # Children found in the directory (a new file a branch added there)
        # stay declared too.
        names = sorted(set(have) | set(present))
        write(mod_rs, f"//! {GROUP_DOCS[g]}\n\n" + "".join(f"pub mod {n};\n" for n in names))
        git("add", mod_rs)
        if not re.search(rf"^\s*pub\s+mod\s+{g}\s*;", lib, re.M):
            lib = add_mod(lib, g)
    write("src/lib.rs", lib)


def add_mod(lib, g):
    """`pub mod g;` among lib.rs's declarations, in order."""
    lines = lib.split("\n")
    decl = [i for i, l in enumerate(lines) if re.match(r"pub mod \w+;", l)]
    at = next((i for i in decl if lines[i][8:-1] > g), (decl[-1] + 1) if decl else len(lines))
    lines.insert(at, f"pub mod {g};")
    return "\n".join(lines)


def rust_files(*roots):
    for root in roots:
        for d, _, fs in os.walk(root):
            for f in fs:
                if f.endswith(".rs"):
                    yield os.path.join(d, f)


NAMES = "|".join(sorted(MOVES, key=len, reverse=True))
# `crate::x` / `$crate::x` / `exedev_k8s::x`, not `crate::xy` nor `crate::g::x`.
PATH = re.compile(rf"\b(crate|{CRATE})::({NAMES})\b(?!\s*!)")
BRACED = re.compile(rf"\b(crate|{CRATE})::\{{")


def rewrite_paths(text):
    text = PATH.sub(lambda m: f"{m.group(1)}::{MOVES[m.group(2)]}::{m.group(2)}", text)
    # `crate::{x, y::Z, g::w}`: each first-level item.
    out, at = [], 0
    for m in BRACED.finditer(text):
        start = m.end()
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        inner = text[start : i - 1]
        parts, d, last = [], 0, 0
        for j, c in enumerate(inner):
            d += {"{": 1, "}": -1}.get(c, 0)
            if c == "," and d == 0:
                parts.append(inner[last:j])
                last = j + 1
        parts.append(inner[last:])
        fixed = []
        for p in parts:
            lead = p[: len(p) - len(p.lstrip())]
            word = re.match(r"\w+", p.lstrip())
            if word and word.group(0) in MOVES and not p.lstrip()[len(word.group(0)) :].startswith("!"):
                p = lead + MOVES[word.group(0)] + "::" + p.lstrip()
            fixed.append(p)
        out.append(text[at:start] + ",".join(fixed) + "}")
        at = i
    out.append(text[at:])
    return "".join(out)


def top_level_root_file(path):
    """The module a moved top-level module's own file is (src/g/x.rs,
    src/g/x/mod.rs), else None."""
    parts = path.split(os.sep)
    if len(parts) == 3 and parts[1] in GROUPS and parts[2].endswith(".rs") and parts[2] != "mod.rs":
        return parts[2][:-3]
    if len(parts) == 4 and parts[1] in GROUPS and parts[3] == "mod.rs":
        return parts[2]
    return None


def fix_super(path, text):
    """In a top-level module's own file, `super::y` named the crate root;
    now it names the group: point it at y's place."""
    if top_level_root_file(path) is None:
        return text
    return re.sub(
        rf"\bsuper::({NAMES}|{'|'.join(STAY)})\b",
        lambda m: "crate::" + (f"{MOVES[m.group(1)]}::" if m.group(1) in MOVES else "") + m.group(1),
        text,
    )


def fix_includes(path, text, moved_now):
    """An include path that leaves src/ needs one `../` more once its file
    moved one level down (only for files moved in this run)."""
    if path not in moved_now:
        return text
    depth = len(path.split(os.sep)) - 2  # directories below src/, before the move... after it
    def one(m):
        rel = m.group(2)
        ups = len(re.match(r"(\.\./)*", rel).group(0)) // 3
        # After the move the file is `depth` directories below src/; before
        # it, depth - 1. A path that climbed out of src/ then climbs one more.
        if ups >= depth:
            rel = "../" + rel
        return f'{m.group(1)}"{rel}"'
    return re.sub(r'(include_(?:str|bytes)!\(\s*)"([^"]+)"', one, text)


def fix_doc_paths(text):
    """`src/x/...`, `src/x.rs`, `src/x` → `src/g/x/...`, `src/g/x.rs`,
    `src/g/x`."""
    return re.sub(
        rf"\bsrc/({NAMES})(/|\.rs\b|(?![\w.-]))",
        lambda m: f"src/{MOVES[m.group(1)]}/{m.group(1)}{m.group(2)}",
        text,
    )


def fix_code_map(text):
    """ARCHITECTURE.md's code-map rows: the module cell and the "may depend
    on" cell name modules by their path from the crate (`core::plan`)."""
    def name(m):
        before, word, rest = m.group(1), m.group(2), m.group(3)
        return f"{before}`{MOVES[word]}::{word}{rest}`" if word in MOVES else m.group(0)

    def row(line):
        cells = line.split("|")
        if len(cells) < 5 or not cells[1].strip().startswith("`"):
            return line
        pattern = re.compile(r"(^|[^\w:`])`(\w+)((?:::\w+)*)`")
        cells[1] = pattern.sub(name, cells[1])
        cells[3] = pattern.sub(name, cells[3])
        return "|".join(cells)

    out, in_map = [], False
    for line in text.split("\n"):
        if line.startswith("| module | one job | may depend on |"):
            in_map = True
        elif not line.startswith("|"):
            in_map = False
        out.append(row(line) if in_map and line.startswith("| `") else line)
    return "\n".join(out)


def move_snapshots_and_regressions(moves):
    for m, g, _ in moves:
        # A one-file module's snapshots live in src/snapshots/: they move
        # to the group's own snapshots/ directory, beside the file.
        if os.path.isdir("src/snapshots"):
            for f in sorted(os.listdir("src/snapshots")):
                if f.startswith(f"{CRATE}__{m}__"):
                    os.makedirs(f"src/{g}/snapshots", exist_ok=True)
                    new = f"{CRATE}__{g}__{m}__" + f[len(f"{CRATE}__{m}__"):]
                    git("mv", f"src/snapshots/{f}", f"src/{g}/snapshots/{new}")
        for d, _, fs in os.walk(f"src/{g}/{m}"):
            if os.path.basename(d) != "snapshots":
                continue
            for f in fs:
                if f.startswith(f"{CRATE}__{m}__"):
                    new = f"{CRATE}__{g}__{m}__" + f[len(f"{CRATE}__{m}__"):]
                    git("mv", os.path.join(d, f), os.path.join(d, new))
        for p in (f"proptest-regressions/{m}.txt", f"proptest-regressions/{m}"):
            if os.path.exists(p):
                os.makedirs(f"proptest-regressions/{g}", exist_ok=True)
                git("mv", p, f"proptest-regressions/{g}/" + os.path.basename(p))


def main():
    if not os.path.exists("src/lib.rs"):
        die("run it from the repository root")
    moves = plan_moves()
    for m, g, paths in moves:
        print(f"move {', '.join(paths)} → src/{g}/")
    if CHECK:
        return
    moved_now = set(ADOPTED)
    for m, g, paths in moves:
        for p in paths:
            if p.endswith(".rs"):
                moved_now.add(os.path.join("src", g, os.path.basename(p)))
            else:
                for f in rust_files(p):
                    moved_now.add(os.path.join("src", g, os.path.relpath(f, "src")))
    do_moves(moves)
    move_snapshots_and_regressions(moves)
    # The architecture test's own fixtures are code in strings about
    # made-up modules: only its file paths follow.
    fixtures = os.path.join("tests", "it", "architecture.rs")
    changed = 0
    for path in rust_files("src", "tests", "benches"):
        text = read(path)
        new = text
        if path != fixtures:
            new = rewrite_paths(new)
            new = fix_super(path, new)
            new = fix_includes(path, new, moved_now)
        new = fix_doc_paths(new)
        if new != text:
            write(path, new)
            changed += 1
    for path in ("ARCHITECTURE.md", "README.md"):
        if os.path.exists(path):
            text = read(path)
            new = fix_doc_paths(text)
            if path == "ARCHITECTURE.md":
                new = fix_code_map(new)
            if new != text:
                write(path, new)
                changed += 1
    for d, _, fs in os.walk("src"):
        if os.path.basename(d) == "snapshots":
            for f in fs:
                p = os.path.join(d, f)
                text = read(p)
                new = re.sub(r"^(source: )(.*)$", lambda m: m.group(1) + fix_doc_paths(m.group(2)), text, count=1, flags=re.M)
                if new != text:
                    write(p, new)
                    changed += 1
    print(f"group-modules: {len(moves)} modules moved, {changed} files rewritten")
    # Rewritten imports are sorted again (rustfmt's own order).
    if changed and subprocess.run(["cargo", "fmt"]).returncode != 0:
        die("cargo fmt failed: run it by hand")


if __name__ == "__main__":
    main()
