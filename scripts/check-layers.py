#!/usr/bin/env python3
"""Checks natter's import layering; `make lint` runs it.

It reads every `crate::`, `super::`, `self::` and child-module path in src/ and
loadtest/src/ (comments and strings stripped) and builds the graph of which file
imports which. It fails when:

1. a top-level module of src/ imports one that docs/ARCHITECTURE.md's layering puts
   above it (LAYERS below is that layering; keep the two in step);
2. files import each other in a circle, unless the circle is a folder's module file
   (`mod.rs`, or `x.rs` beside `x/`) with its own direct children, and no two of those
   children import each other in a circle without it;
3. a file under src/ is missing from docs/ARCHITECTURE.md's module map.

`scripts/check-layers.py --graph` prints the edges and every import circle left.
"""

import os
import re
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# src/'s top-level modules, highest layer first: a module may import modules on lower
# layers only, and modules on one layer never import each other. `lib.rs` (which wires
# everything up) and `main.rs` (a binary crate of its own) sit above every layer.
# docs/ARCHITECTURE.md's "Layers" section says the same in words: keep them in step.
LAYERS = [
    ["cli"],  # flags -> Config
    ["transport", "api"],  # clients' bytes and the server API in, answers out
    ["dispatcher"],  # the one owner of chat state
    ["delivery", "store", "heap"],  # writing committed batches; what outlives memory
    ["config", "metrics"],  # every limit; the counters
    ["auth"],  # tokens -> identities
    ["access"],  # rights from a token
    # Leaves: they import nothing of natter but secret_file.
    ["protocol", "webhooks", "tls", "proxy", "ratelimit", "shutdown", "limits", "hangup", "logging", "bans"],
    ["secret_file"],  # reading secret files; imports nothing
]


def strip(text):
    """Blanks comments, string and char literals, keeping offsets and newlines."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        return re.sub(r"[^\n]", " ", s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(text, i)) and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            end = text.find('"' + m.group(1), m.end())
            j = n if end < 0 else end + 1 + len(m.group(1))
            out.append(blank(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(blank(text[i : j + 1]))
            i = j + 1
        elif c == "'" and (m := re.compile(r"'(\\[^']{1,10}|[^\\'])'").match(text, i)):
            out.append(blank(m.group(0)))
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Crate:
    """The file modules of one crate: module path (tuple) -> file."""

    def __init__(self, name, src, root_file):
        self.name = name
        self.src = src
        self.root = os.path.join(src, root_file)
        self.modules = {}
        self.files = {}
        self._walk((), self.root)

    def _walk(self, path, file):
        self.modules[path] = file
        self.files[file] = path
        text = strip(open(file, encoding="utf-8").read())
        base = os.path.basename(file)
        if path == () or base == "mod.rs":
            folder = os.path.dirname(file)
        else:
            folder = os.path.join(os.path.dirname(file), base[:-3])
        for m in re.finditer(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text):
            child = m.group(1)
            for cand in (os.path.join(folder, child + ".rs"), os.path.join(folder, child, "mod.rs")):
                if os.path.exists(cand):
                    self._walk(path + (child,), cand)
                    break

    def children(self, path):
        return {p[-1] for p in self.modules if len(p) == len(path) + 1 and p[: len(path)] == path}

    def resolve(self, segs):
        """The file holding the longest module prefix of an absolute path."""
        for k in range(len(segs), -1, -1):
            if tuple(segs[:k]) in self.modules:
                return self.modules[tuple(segs[:k])]
        return None


def use_paths(tree, prefix=()):
    """Expands a `use` tree (`a::{b, c::{d, e as f}}`) into (full path, alias) pairs."""
    tree = tree.strip()
    if not tree:
        return []
    depth, parts, cur = 0, [], ""
    for ch in tree:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    if len(parts) > 1:
        return [p for part in parts for p in use_paths(part, prefix)]
    if not parts[0].strip():
        return []
    tree = parts[0].strip()
    brace = tree.find("{")
    if brace >= 0:
        head = [s for s in tree[:brace].split("::") if s.strip()]
        inner = tree[brace + 1 : tree.rfind("}")]
        return use_paths(inner, prefix + tuple(s.strip() for s in head))
    alias = re.search(r"\s+as\s+(\w+)$", tree)
    tree = tree[: alias.start()] if alias else tree
    segs = [s.strip() for s in tree.split("::") if s.strip()]
    return [(prefix + tuple(segs), alias.group(1) if alias else None)]


def inline_mod_depth(text):
    """For each offset, how many inline `mod x { … }` blocks enclose it."""
    depth_at = [0] * (len(text) + 1)
    stack, depth, inline = [], 0, 0
    pending = [m.end() - 1 for m in re.finditer(r"\bmod\s+\w+\s*\{", text)]
    pending_set = set(pending)
    for i, ch in enumerate(text):
        if ch == "{":
            is_mod = i in pending_set
            stack.append(is_mod)
            inline += is_mod
        elif ch == "}" and stack:
            inline -= stack.pop()
        depth_at[i] = inline
    return depth_at


def edges_of(crate, file):
    """(target file, line) for every module path `file` names."""
    path = crate.files[file]
    raw = open(file, encoding="utf-8").read()
    text = strip(raw)
    text = re.sub(r"pub\s*\(\s*in\s+[^)]*\)", lambda m: " " * len(m.group(0)), text)
    depth = inline_mod_depth(text)
    children = crate.children(path)
    found = []
    # Names a `use` brings in: a path starting with one of them is not a child module.
    bound = set()

    def resolve(segs, at):
        segs = list(segs)
        if not segs:
            return None
        head = segs[0]
        if head == "crate":
            return crate.resolve(segs[1:])
        if head in ("super", "self"):
            base = list(path)
            inline = depth[at]
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    if inline:
                        inline -= 1
                    else:
                        base = base[:-1]
                segs = segs[1:]
            if inline:
                return None  # names something inside this file
            return crate.resolve(base + segs)
        if head in children and head not in bound and depth[at] == 0:
            return crate.resolve(list(path) + segs)
        if head == crate.name and crate.name == "natter" and crate.lib:
            return crate.lib.resolve(segs[1:])
        return None

    spans = []
    for m in re.finditer(r"\buse\s+([^;]*);", text):
        spans.append((m.start(), m.end()))
        for segs, alias in use_paths(m.group(1)):
            found.append((resolve(segs, m.start()), m.start()))
            name = segs[-2] if segs[-1] == "self" and len(segs) > 1 else segs[-1]
            bound.add(alias or name)
    in_use = lambda pos: any(a <= pos < b for a, b in spans)
    for m in re.finditer(r"(?<![\w:.])(\w+(?:\s*::\s*\w+)+)", text):
        if in_use(m.start()):
            continue
        segs = [s.strip() for s in m.group(1).split("::")]
        found.append((resolve(segs, m.start()), m.start()))
    out = []
    for target, at in found:
        if target and target != file:
            out.append((target, text.count("\n", 0, at) + 1))
    return out


def graph(crate):
    g = defaultdict(dict)
    for file in crate.files:
        for target, line in edges_of(crate, file):
            g[file].setdefault(target, line)
    return g


def sccs(nodes, g):
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def rel(f):
    return os.path.relpath(f, ROOT)


def check_circles(crate, g):
    """Circles other than a module file with its own direct children."""
    errors, circles = [], []
    for comp in sccs(crate.files, g):
        if len(comp) < 2:
            continue
        circles.append(comp)
        paths = [crate.files[f] for f in comp]
        shortest = min(paths, key=len)
        if not all(p == shortest or (len(p) == len(shortest) + 1 and p[:-1] == shortest) for p in paths):
            same_parent = len({p[:-1] for p in paths}) == 1 and all(len(p) == len(shortest) for p in paths)
            what = "files beside each other import each other" if same_parent else "an import circle across folders"
            errors.append(f"{what}: " + " ".join(rel(f) for f in comp) + "\n  " + describe(comp, g))
            continue
        parent = crate.modules[shortest]
        rest = [f for f in comp if f != parent]
        sub = {f: {t: l for t, l in g[f].items() if t in rest} for f in rest}
        for inner in sccs(rest, sub):
            if len(inner) > 1:
                errors.append(
                    f"files beside each other import each other (a circle without {rel(parent)}): "
                    + " ".join(rel(f) for f in inner)
                    + "\n  "
                    + describe(inner, sub)
                )
    return errors, circles


def describe(comp, g):
    """The edges inside a circle, with the line of each import."""
    parts = []
    for f in comp:
        for t, line in sorted(g[f].items()):
            if t in comp:
                parts.append(f"{rel(f)}:{line} -> {rel(t)}")
    return "\n  ".join(parts)


def top(crate, file):
    p = crate.files[file]
    return p[0] if p else None


def check_layers(crate, g):
    layer = {}
    for i, names in enumerate(LAYERS):
        for name in names:
            layer[name] = i
    errors = []
    for name in sorted({top(crate, f) for f in crate.files} - {None}):
        if name not in layer:
            errors.append(f"src/{name}: a top-level module with no place in scripts/check-layers.py's LAYERS")
    for f, targets in sorted(g.items()):
        a = top(crate, f)
        for t, line in sorted(targets.items()):
            b = top(crate, t)
            if a is None or b is None or a == b or a not in layer or b not in layer:
                continue
            if layer[b] <= layer[a]:
                how = "beside" if layer[a] == layer[b] else "above"
                errors.append(f"{rel(f)}:{line} imports {rel(t)}: `{b}` sits {how} `{a}` in the layering")
    return errors


def check_map(files):
    """Every file under src/ on a line of ARCHITECTURE.md's "Module map" section."""
    doc = os.path.join(ROOT, "docs", "ARCHITECTURE.md")
    text = open(doc, encoding="utf-8").read()
    m = re.search(r"(?ms)^## Module map\s*$(.*?)(?=^## |\Z)", text)
    if not m:
        return ["docs/ARCHITECTURE.md has no \"## Module map\" section"]
    named = set(re.findall(r"`(src/[\w/.-]+\.rs)`", m.group(1)))
    errors = []
    for f in sorted(rel(f) for f in files):
        if f not in named:
            errors.append(f"{f} is missing from docs/ARCHITECTURE.md's module map")
    for f in sorted(named):
        if not os.path.exists(os.path.join(ROOT, f)):
            errors.append(f"docs/ARCHITECTURE.md's module map names {f}, which does not exist")
    return errors


def main():
    show = "--graph" in sys.argv
    natter = Crate("natter", os.path.join(ROOT, "src"), "lib.rs")
    natter.lib = None
    crates = [natter]
    load = os.path.join(ROOT, "loadtest", "src")
    if os.path.exists(os.path.join(load, "main.rs")):
        lt = Crate("natter_loadtest", load, "main.rs")
        lt.lib = None
        crates.append(lt)
    errors = []
    for crate in crates:
        g = graph(crate)
        circle_errors, circles = check_circles(crate, g)
        errors += circle_errors
        if crate is natter:
            errors += check_layers(crate, g)
            errors += check_map(list(crate.files) + [os.path.join(ROOT, "src", "main.rs")])
        if show:
            print(f"# {crate.name}: edges")
            for f in sorted(g):
                for t in sorted(g[f]):
                    print(f"{rel(f)} -> {rel(t)}")
            if crate is natter:
                print("# natter: top-level modules and what they import")
                tops = defaultdict(set)
                for f, targets in g.items():
                    for t in targets:
                        a, b = top(crate, f), top(crate, t)
                        if a and b and a != b:
                            tops[a].add(b)
                for a in sorted(tops):
                    print(f"{a} -> {' '.join(sorted(tops[a]))}")
            print(f"# {crate.name}: import circles")
            for comp in circles:
                print("  " + " ".join(rel(f) for f in comp))
    unparsed = sorted(
        rel(os.path.join(d, f))
        for d, _, fs in os.walk(os.path.join(ROOT, "src"))
        for f in fs
        if f.endswith(".rs") and os.path.join(d, f) not in natter.files and f != "main.rs"
    )
    for f in unparsed:
        errors.append(f"{f} is not reached from src/lib.rs by `mod` declarations")
    for e in errors:
        print("check-layers: " + e, file=sys.stderr)
    if errors:
        print(f"check-layers: {len(errors)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print("check-layers: the layering holds; the only import circles are module files with their own children")


if __name__ == "__main__":
    main()
