#!/usr/bin/env python3
"""Structure rule (issue: one crate per program): no import circle between the top-level
modules of a crate. A module is a file `src/NAME.rs` with its folder `src/NAME/`; it depends on
another when its non-test code names `crate::OTHER`. Prints each circle; exits 1 if any."""
import os
import re
import sys

ROOTS = ["domain", "application", "adapters", "bin"]
REF = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def crates():
    for root in ROOTS:
        for dp, dn, fns in os.walk(root):
            dn[:] = [d for d in dn if d not in ("target", "node_modules", "tests")]
            if os.path.basename(dp) == "src" and ("lib.rs" in fns or "main.rs" in fns):
                yield dp


def is_test(path):
    parts = path.split(os.sep)
    return "tests" in parts or parts[-1] in ("tests.rs",) or parts[-1].endswith("_tests.rs")


def code_of(path):
    text = open(path, encoding="utf-8").read()
    # Inline test modules do not count: cut at `#[cfg(test)]` followed by `mod`.
    m = re.search(r"^\s*#\[cfg\(test\)\]\s*\n\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text, re.M)
    text = text[: m.start()] if m else text
    return re.sub(r"//[^\n]*", "", text)


def graph(src):
    modules = {}
    for entry in os.listdir(src):
        name = entry[:-3] if entry.endswith(".rs") else entry
        if name in ("lib", "main", "tests") or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            continue
        files = []
        if os.path.isfile(os.path.join(src, name + ".rs")):
            files.append(os.path.join(src, name + ".rs"))
        folder = os.path.join(src, name)
        if os.path.isdir(folder):
            for dp, dn, fns in os.walk(folder):
                files += [os.path.join(dp, f) for f in fns if f.endswith(".rs")]
        modules[name] = [f for f in files if not is_test(f)]
    edges = {m: set() for m in modules}
    for m, files in modules.items():
        for f in files:
            for other in REF.findall(code_of(f)):
                if other in modules and other != m:
                    edges[m].add(other)
    return edges


def circles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


bad = 0
checked = 0
for src in sorted(crates()):
    checked += 1
    edges = graph(src)
    for comp in circles(edges):
        bad += 1
        links = ", ".join(f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp)
        print(f"check-modules: {src}: import circle between {', '.join(comp)} ({links})")
print(f"check-modules: {checked} crates, {bad} circle(s)")
sys.exit(1 if bad else 0)
